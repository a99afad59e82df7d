/* berth_limits.h — every bound berth enforces, in one place.
 *
 * TIGER_STYLE: everything has a limit. These are part of the contract: a
 * journal written under one set of limits must replay identically, so the
 * ones that shape state (reqid window, GPU count) never change silently. */
#ifndef BERTH_LIMITS_H
#define BERTH_LIMITS_H

#define BERTH_NAME_LEN_MAX 128          /* worker, instance, model, backend, reqid, label key/value */
#define BERTH_GPUS_MAX 64               /* GPUs per worker: one u64 bitmask */
#define BERTH_VRAM_MIB_MAX 16777216u    /* 16 TiB per GPU: keeps sums far inside u64 */
#define BERTH_PLACEMENT_WORKERS_MAX 64  /* workers in one DEPLOY */
#define BERTH_LABELS_MAX 32             /* labels on one worker */
#define BERTH_POLICY_BACKENDS_MAX 32    /* backends in POLICY.SET EXCLUSIVE */
#define BERTH_ARGS_MAX 512              /* words in one mutating command */
#define BERTH_COMMAND_LEN_MAX 16384     /* canonical command text, bytes */
#define BERTH_SENTENCE_LEN_MAX 1024     /* outcome sentence, bytes incl. NUL */
#define BERTH_REQID_WINDOW 16384        /* remembered request ids (state: fixed forever) */
#define BERTH_ERR_LEN_MAX 256           /* syntax error message, bytes incl. NUL */

#endif
