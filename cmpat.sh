#!/bin/sh
# cmpat.sh PORTA PORTB MAXSEQ workers... -- instances...
A=$1; B=$2; M=$3; shift 3
for s in $(seq 1 $M); do
  for q in "WORKER.LIST" "INSTANCE.LIST" "POLICY.GET" "DIGEST" "WORKER.LIST FREE" $(for w in $W; do echo "WORKER.GET:$w"; done) $(for i in $I; do echo "INSTANCE.GET:$i"; done); do
    qq=$(echo "$q" | tr ':' ' ')
    a=$(redis-cli -p $A AT $s $qq | grep -v deploy_time -A0 ); b=$(redis-cli -p $B AT $s $qq)
    [ "$a" = "$b" ] || echo "DIFF seq $s $qq"
  done
done
