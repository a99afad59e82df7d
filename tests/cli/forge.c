/* forge.c — test helper: write a hash-chained journal whose records berthd
 * would never write, to test what `berth journal verify`, dump and the
 * engine's open make of another writer's records (review hV6's forge).
 *
 * Each record goes through berth_journal_append, so the chain and hashes
 * are good and only the record's content is foreign. Its outcome is what
 * berth_state_apply decides for the stored text as given (so verify's
 * outcome compare passes and its other checks are the ones tested); a text
 * that does not parse is stored with code OK and an empty sentence.
 *
 * usage: forge DIR FILE, FILE's lines:
 *   R <reqid|-> <command text>   append a record; \xNN in the text is byte NN
 *   S <sentence>                 the next record's sentence instead (\xNN too)
 * Exit 0, or 2 with a reason on stderr. */
#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "command.h"
#include "journal.h"
#include "state.h"

#define FORGE_LINE_LEN_MAX 8192

/* \xNN to byte NN, in place; returns the new length. */
static size_t unescape(char *s) {
    size_t o = 0;
    for (size_t i = 0; s[i] != '\0'; i++) {
        unsigned v;
        if (s[i] == '\\' && s[i + 1] == 'x' && sscanf(s + i + 2, "%2x", &v) == 1) {
            s[o++] = (char)v;
            i += 3;
        } else {
            s[o++] = s[i];
        }
    }
    return o;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: forge DIR FILE\n");
        return 2;
    }
    char err[512];
    berth_journal_options jo;
    memset(&jo, 0, sizeof jo);
    berth_journal *j = NULL;
    if (berth_journal_open_lmdb(&j, argv[1], &jo, err, sizeof err) != BERTH_J_OK) {
        fprintf(stderr, "forge: open: %s\n", err);
        return 2;
    }
    FILE *f = fopen(argv[2], "r");
    berth_state *s = berth_state_new(NULL);
    if (f == NULL || s == NULL) {
        fprintf(stderr, "forge: cannot read %s\n", argv[2]);
        return 2;
    }
    static char line[FORGE_LINE_LEN_MAX], sentence[FORGE_LINE_LEN_MAX];
    static berth_outcome out;
    size_t sentence_len = 0;
    bool sentence_set = false;
    uint64_t seq = 0;
    int rc = 0;
    while (rc == 0 && fgets(line, sizeof line, f) != NULL) {
        line[strcspn(line, "\n")] = '\0';
        if (line[0] == 'S' && line[1] == ' ') {
            strcpy(sentence, line + 2);
            sentence_len = unescape(sentence);
            sentence_set = true;
            continue;
        }
        char *reqid = line + 2, *text = strchr(reqid, ' ');
        if (line[0] != 'R' || line[1] != ' ' || text == NULL) {
            fprintf(stderr, "forge: bad line '%s'\n", line);
            rc = 2;
            break;
        }
        *text++ = '\0';
        size_t text_len = unescape(text);
        berth_str words[BERTH_ARGS_MAX];
        berth_cmd cmd;
        char perr[256];
        seq++;
        berth_record r;
        memset(&r, 0, sizeof r);
        r.seq = seq;
        r.time_ms = 1700000000000ull + seq;
        r.actor = berth_str_make("forge", 5);
        r.reqid = strcmp(reqid, "-") != 0 ? berth_str_make(reqid, strlen(reqid)) : berth_str_make("", 0);
        r.command = berth_str_make(text, text_len);
        if (berth_cmd_parse_text(&cmd, text, text_len, words, BERTH_ARGS_MAX, perr, sizeof perr) == 0) {
            cmd.reqid = r.reqid;   /* as replay re-attaches it */
            if (berth_state_apply(s, &cmd, r.command, seq, &out) != 0) {
                fprintf(stderr, "forge: apply failed at seq %llu\n", (unsigned long long)seq);
                rc = 2;
                break;
            }
            r.code = out.code;
            r.sentence = berth_str_make(out.sentence, out.sentence_len);
        } else {
            berth_state_set_last_seq(s, seq);   /* the records after it still apply */
            r.code = BERTH_OK;
            r.sentence = berth_str_make("", 0);
        }
        if (sentence_set) r.sentence = berth_str_make(sentence, sentence_len);
        sentence_set = false;
        berth_jerr e = berth_journal_append(j, &r, NULL, 1);
        if (e != BERTH_J_OK) {
            fprintf(stderr, "forge: append at seq %llu: %s\n", (unsigned long long)seq, berth_jerr_name(e));
            rc = 2;
        }
    }
    fclose(f);
    berth_state_free(s);
    berth_journal_close(j);
    return rc;
}
