#!/usr/bin/env bash
# tls.sh — berthd reaches etcd over TLS with a client certificate: etcd
# serves https only and requires client certificates signed by a test CA
# made here with openssl; --etcd-cacert, --etcd-cert and --etcd-key are
# handed to libcurl. A replica without the client certificate cannot join.
REPLICAS=2
. "$(dirname "$0")/lib.sh"
command -v openssl >/dev/null || { echo "$test_name: openssl missing"; exit 1; }

pki="$TMP/pki"
mkdir -p "$pki"
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj "/CN=berth-test-ca" \
    -keyout "$pki/ca.key" -out "$pki/ca.pem" >/dev/null 2>&1 || fail "CA"
cat >"$pki/san.cnf" <<'CNF'
subjectAltName = IP:127.0.0.1
extendedKeyUsage = serverAuth, clientAuth
CNF
for who in server client; do
    openssl req -newkey rsa:2048 -nodes -subj "/CN=berth-$who" -keyout "$pki/$who.key" \
        -out "$pki/$who.csr" >/dev/null 2>&1 || fail "$who key"
    openssl x509 -req -in "$pki/$who.csr" -CA "$pki/ca.pem" -CAkey "$pki/ca.key" -CAcreateserial \
        -days 1 -extfile "$pki/san.cnf" -out "$pki/$who.pem" >/dev/null 2>&1 || fail "$who cert"
done

MEMBERS=1
ETCD_CPORT[1]=$(pick_port)
ETCD_PPORT[1]=$(pick_port)
"$ETCD" --name e1 --data-dir "$TMP/etcd1" \
    --listen-client-urls "https://127.0.0.1:${ETCD_CPORT[1]}" \
    --advertise-client-urls "https://127.0.0.1:${ETCD_CPORT[1]}" \
    --listen-peer-urls "http://127.0.0.1:${ETCD_PPORT[1]}" \
    --initial-advertise-peer-urls "http://127.0.0.1:${ETCD_PPORT[1]}" \
    --initial-cluster "e1=http://127.0.0.1:${ETCD_PPORT[1]}" \
    --cert-file "$pki/server.pem" --key-file "$pki/server.key" \
    --trusted-ca-file "$pki/ca.pem" --client-cert-auth >>"$TMP/etcd1.log" 2>&1 &
ETCD_PID[1]=$!
url="https://127.0.0.1:${ETCD_CPORT[1]}"
tls=(--cacert "$pki/ca.pem" --cert "$pki/client.pem" --key "$pki/client.key")
for ((t = 0; t < WAIT_TRIES_MAX; t++)); do
    curl -s -m 1 "${tls[@]}" "$url/health" 2>/dev/null | grep -q '"health":"true"' && break
    sleep 0.025
done
curl -s -m 1 "${tls[@]}" "$url/health" | grep -q '"health":"true"' || fail "etcd over TLS did not become healthy"

flags=(--etcd-cacert "$pki/ca.pem" --etcd-cert "$pki/client.pem" --etcd-key "$pki/client.key")
for ((i = 1; i <= REPLICAS; i++)); do
    BPORT[$i]=$(pick_port)
    "$BERTHD" --journal etcd --etcd-endpoints "$url" --cluster "$CLUSTER" --etcd-lease-ttl "$LEASE_TTL_S" \
        --data "$TMP/b$i" --bind 127.0.0.1 --port "${BPORT[$i]}" "${flags[@]}" >>"$TMP/berthd$i.log" 2>&1 &
    BPID[$i]=$!
done
for ((i = 1; i <= REPLICAS; i++)); do
    for ((t = 0; t < WAIT_TRIES_MAX; t++)); do
        [ -n "$("$REDIS_CLI" -p "${BPORT[$i]}" PING 2>/dev/null)" ] && break
        sleep 0.025
    done
done
L=$(wait_leader)
for w in 1 2 3; do [[ "$(rr "$L" WORKER.ADD "w$w" GPUS 8 VRAM 81920)" =~ ^[0-9]+$ ]] || fail "write $w over TLS"; done
wait_applied 3
expect_same DIGEST
[ "$(info_field "$L" etcd_endpoint)" = "$url" ] || fail "INFO etcd_endpoint: $(info_field "$L" etcd_endpoint)"

# Without a client certificate etcd refuses the connection: that replica
# never learns anything and says so in INFO.
nocert_port=$(pick_port)
"$BERTHD" --journal etcd --etcd-endpoints "$url" --cluster "$CLUSTER" --etcd-cacert "$pki/ca.pem" \
    --data "$TMP/nocert" --bind 127.0.0.1 --port "$nocert_port" >"$TMP/nocert.log" 2>&1 &
nocert=$!
bg_pids+=($nocert)
deadline=$(( $(now_ms) + 10000 ))
until [ "$("$REDIS_CLI" -p "$nocert_port" INFO replication 2>/dev/null | tr -d '\r' | sed -n 's/^etcd_request_errors://p')" -gt 0 ] 2>/dev/null; do
    [ "$(now_ms)" -lt "$deadline" ] || fail "the replica without a client certificate reported no etcd errors"
    sleep 0.05
done
[ "$("$REDIS_CLI" -p "$nocert_port" JOURNAL.HEAD | awk 'w { print; exit } $0 == "seq" { w = 1 }')" = 0 ] ||
    fail "the replica without a client certificate read the journal"
note "ok: two replicas over TLS with client certificates agree at seq 3; one without a certificate is refused"
