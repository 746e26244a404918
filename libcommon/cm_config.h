/*  cm_config.h - configuration from CORRAL_* environment variables and
    matching --flags, described by one table per binary.

    An option named "store-endpoint" is read from CORRAL_STORE_ENDPOINT and
    from --store-endpoint VALUE or --store-endpoint=VALUE; the flag wins.
    Every value is validated against its type and bounds; a bad value gives
    a message naming the option, the value and what is accepted.  --help
    prints the table.  cm_config_log() prints the effective configuration
    with secrets masked.

    Storage: each option writes into the caller's struct at `offset`:
      CM_CFG_STR, CM_CFG_ENDPOINT, CM_CFG_PATH, CM_CFG_ENUM -> char *  (owned
          by the struct; freed by cm_config_free)
      CM_CFG_INT, CM_CFG_SIZE, CM_CFG_MS   -> int64_t
      CM_CFG_BOOL                          -> bool
    CM_CFG_SIZE accepts a byte count with an optional K/M/G/T suffix (binary).
    CM_CFG_MS accepts a duration with ms/s/m/h suffix (no suffix = ms).
    CM_CFG_ENDPOINT accepts tcp://host:port, ipc://path, inproc://name.
    CM_CFG_ENUM accepts one of the '|'-separated words in `choices`.
*/
#ifndef CM_CONFIG_H
#define CM_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum {
    CM_CFG_STR,
    CM_CFG_PATH,
    CM_CFG_ENDPOINT,
    CM_CFG_ENUM,
    CM_CFG_INT,
    CM_CFG_SIZE,
    CM_CFG_MS,
    CM_CFG_BOOL,
} cm_cfg_type_t;

typedef struct {
    const char *name; //  "store-endpoint"; NULL ends the table
    cm_cfg_type_t type;
    size_t offset;       //  offsetof (my_config_t, field)
    const char *def;     //  default as text; NULL = unset (NULL / 0 / false)
    const char *help;    //  one line
    int64_t min, max;    //  bounds for INT/SIZE/MS (both 0 = unbounded)
    const char *choices; //  ENUM: "full|os"
    bool secret;         //  masked in cm_config_log and --help defaults
} cm_cfg_opt_t;

#define CM_CFG_END                                \
    {                                             \
        NULL, 0, 0, NULL, NULL, 0, 0, NULL, false \
    }

//  Outcome of cm_config_load besides errors.
#define CM_CONFIG_HELP 1 /* --help was printed; exit 0 */

//  Fill cfg from defaults, then environment, then argv.  prog and summary
//  head the --help text.  Returns 0, CM_CONFIG_HELP, or CM_E_INVALID with
//  a message in err (an unknown flag, a missing value, a bad value).
int cm_config_load (const cm_cfg_opt_t *opts, void *cfg, int argc, char **argv,
                    const char *prog, const char *summary, char *err, size_t errlen);

//  Parse one value of an option's type into its slot; used by load and by
//  tests.  Returns 0 or CM_E_INVALID with a message in err.
int cm_config_set (const cm_cfg_opt_t *opt, void *cfg, const char *value, char *err,
                   size_t errlen);

//  Log every option's effective value at info level, secrets masked.
void cm_config_log (const cm_cfg_opt_t *opts, const void *cfg);

//  Free the strings cm_config_load allocated in cfg.
void cm_config_free (const cm_cfg_opt_t *opts, void *cfg);

//  Environment variable name for an option: "CORRAL_" + upper(name) with '-'
//  as '_'.  Writes into out (outlen bytes); returns out.
char *cm_config_envname (const char *name, char *out, size_t outlen);

#endif
