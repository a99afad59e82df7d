/* resp.h — berthd's RESP request reader: one pure function over a buffer.
 *
 * Owns the wire grammar of requests (RESP arrays of bulk strings, and inline
 * commands so `nc` works) and the limits that keep a hostile client from
 * making the server allocate or wait without bound. Like picohttpparser and
 * hiredis's reader it allocates nothing and keeps no state between calls:
 * the caller hands it the bytes buffered so far and gets back either
 * NEED_MORE, one complete command (argv pointing into the buffer, plus the
 * command's length in bytes), or a protocol error with a sentence. Bulk
 * payloads are skipped by length, never scanned, but re-parsing a partial
 * command from its start still reads every argument header again: a
 * 60,000-argument command trickled in 64-byte pieces cost berthd 1.6-1.9 s
 * of CPU (hV5). So the caller may keep a resp_resume per connection: the
 * parser records how far a partial command was checked and goes on from
 * there, and once the command is whole walks its headers once more to fill
 * argv (argv is shared between connections, so it cannot be kept). Each
 * byte is then read at most twice, with no allocation and no I/O here. */
#ifndef BERTH_RESP_H
#define BERTH_RESP_H

#include <stddef.h>
#include <stdint.h>

#include "names.h"

#define RESP_ERROR_LEN_MAX 160      /* protocol error sentence, bytes incl. NUL */
#define RESP_HEADER_LEN_MAX 24      /* "*<count>\r\n" or "$<len>\r\n": sign, 20 digits, CRLF */

typedef struct resp_limits {
    uint32_t args_max;              /* words in one command */
    uint32_t bulk_bytes_max;        /* one argument */
    uint32_t inline_bytes_max;      /* one inline line, without its newline */
    uint32_t command_bytes_max;     /* one command with all its framing */
} resp_limits;

typedef enum resp_status {
    RESP_NEED_MORE = 0,             /* no complete command yet; nothing consumed */
    RESP_COMMAND = 1,               /* one command: argc words, consumed bytes */
    RESP_ERROR = 2                  /* the stream cannot be parsed: error says why */
} resp_status;

typedef struct resp_result {
    resp_status status;
    size_t consumed;                /* RESP_COMMAND: bytes the command took */
    size_t argc;                    /* RESP_COMMAND: 0 for an empty line or "*0" */
    size_t headers_read;            /* argument headers this call read: its work */
    char error[RESP_ERROR_LEN_MAX]; /* RESP_ERROR: "Protocol error: ..." */
} resp_result;

/* How far the partial command at the start of the caller's buffer was
 * checked; all zero for a new command. Valid while the bytes before pos
 * stay as they were (the caller only appends, or moves the command whole). */
typedef struct resp_resume {
    size_t pos;                     /* bytes checked: after whole arguments, or of an inline line */
    size_t argc;                    /* whole arguments in them (0: inline, or none yet) */
} resp_resume;

/* Parse the first command in buf[0..len). argv must hold limits->args_max
 * entries (argv_cap >= args_max); on RESP_COMMAND argv[0..argc) point into
 * buf. Returns out->status. */
resp_status resp_parse(const char *buf, size_t len, const resp_limits *limits,
                       berth_str *argv, size_t argv_cap, resp_result *out);
/* resp_parse, going on from resume (NULL: from the start) and leaving it
 * where NEED_MORE stopped; zeroed again on COMMAND and ERROR. The result
 * is resp_parse's on the same bytes. The caller zeroes it when it drops
 * the buffered bytes. */
resp_status resp_parse_resume(const char *buf, size_t len, const resp_limits *limits,
                              berth_str *argv, size_t argv_cap, resp_resume *resume,
                              resp_result *out);

#endif
