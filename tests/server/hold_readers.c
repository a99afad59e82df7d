/* hold_readers.c — takes every free slot of an LMDB environment's reader
 * table and holds them until its stdin closes, so a test can watch what
 * berthd does when it cannot open a read transaction (watch_readers.sh).
 *
 * Usage: hold_readers DIR   (DIR: the environment's directory, opened
 * read-only). Prints "held N" once the table is full, then waits for EOF on
 * stdin and exits 0, which frees the slots. Exits 1 if it could not fill
 * the table (LMDB never said MDB_READERS_FULL). */
#include <stdio.h>
#include <stdlib.h>

#include <lmdb.h>

enum { txns_max = 4096 };   /* above any reader table berth makes (1,024) */

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: hold_readers DIR\n");
        return 2;
    }
    MDB_env *env = NULL;
    int rc = mdb_env_create(&env);
    if (rc == 0) rc = mdb_env_set_maxreaders(env, txns_max);   /* the lock file's size decides */
    if (rc == 0) rc = mdb_env_set_mapsize(env, 0);
    if (rc == 0) rc = mdb_env_open(env, argv[1], MDB_RDONLY | MDB_NOTLS, 0600);
    if (rc != 0) {
        fprintf(stderr, "hold_readers: %s: %s\n", argv[1], mdb_strerror(rc));
        return 1;
    }
    static MDB_txn *txns[txns_max];
    int held = 0;
    while (held < txns_max) {
        rc = mdb_txn_begin(env, NULL, MDB_RDONLY, &txns[held]);
        if (rc != 0) {
            break;
        }
        held++;
    }
    if (rc != MDB_READERS_FULL) {
        fprintf(stderr, "hold_readers: after %d readers: %s\n", held, mdb_strerror(rc));
        return 1;
    }
    printf("held %d\n", held);
    fflush(stdout);
    while (getchar() != EOF) {
    }
    for (int i = 0; i < held; i++) {
        mdb_txn_abort(txns[i]);
    }
    mdb_env_close(env);
    return 0;
}
