/* query_sentences.h — the sentences of WORKER.GET's and INSTANCE.GET's
 * refusals, in one place: berthd answers them (query.c) and `berth whatif`
 * prints them for a scenario's queries (cli_whatif.c), and a what-if must
 * read like the server. Each is a printf format taking the name as
 * ("%.*s": its length, then its bytes). */
#ifndef BERTH_QUERY_SENTENCES_H
#define BERTH_QUERY_SENTENCES_H

#define QUERY_NOWORKER_FMT "no worker named %.*s is registered"
#define QUERY_NOINSTANCE_FMT "no instance named %.*s is deployed"

#endif
