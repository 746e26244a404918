/*  cli_target.h - where the gateway is and which API key to use, for
    every corral command that talks to a gateway.

    URL, first that is set:
      1. --url URL             (http://, https://, ws:// or wss://)
      2. CORRAL_URL
      3. CORRAL_LISTEN as http://<listen> (https when CORRAL_TLS_CERT is
         set); a wildcard host (0.0.0.0, ::, empty) becomes the loopback
      4. http://127.0.0.1:8080
    From any of them both forms are derived: the HTTP base (no trailing
    slash, REST lives under <http>/v1/...) and the WebSocket URL of ACP
    (<ws base>/acp).  ws://h:p/acp gives http://h:p; http://h:p/prefix
    gives ws://h:p/prefix/acp (a gateway behind a path prefix).

    Key, first that is set:
      1. --key KEY
      2. CORRAL_API_KEY
      3. the file $CORRAL_DATA_DIR/local-api-key (data dir default
         ./data): the admin key `corral up` made for the local stack
    No key is not an error here (corral tap needs none); a command that
    needs one checks key[0] and prints cli_target_no_key().

    Usage, in a command's cm_config table (config_t has char *url, *key):
        CLI_TARGET_OPTS (config_t, url, key),
    then after cm_config_load:
        cli_target_t t;
        if (cli_target_resolve (&t, cfg.url, cfg.key, err, sizeof err)) {
            fprintf (stderr, "corral tap: %s\n", err);
            return CLI_USAGE;
        }
    or, for a command that needs a key, cli_target_with_key().
*/
#ifndef CLI_TARGET_H
#define CLI_TARGET_H

#include <stddef.h>

#include "cm_config.h"

#define CLI_URL_MAX 1024 //  bytes of a URL, NUL included
#define CLI_KEY_MAX 256  //  bytes of an API key, NUL included

typedef struct {
    char http[CLI_URL_MAX];     //  "http://127.0.0.1:8080" (no trailing '/')
    char ws[CLI_URL_MAX];       //  "ws://127.0.0.1:8080/acp"
    char key[CLI_KEY_MAX];      //  "" when none was found
    char key_from[CLI_URL_MAX]; //  "--key", "CORRAL_API_KEY", the file's path, or ""
} cli_target_t;

//  The two cm_config rows every client command has: --url and --key.
//  cm_config reads the URL row from CORRAL_URL and the key row from
//  CORRAL_KEY; cli_target_resolve adds CORRAL_API_KEY (the name corral up
//  and the docs use) and the key file.
#define CLI_TARGET_OPTS(type, url_field, key_field)                         \
    {"url",                                                                 \
     CM_CFG_STR,                                                            \
     offsetof (type, url_field),                                            \
     NULL,                                                                  \
     "gateway URL, http(s):// or ws(s):// (env CORRAL_URL; default "        \
     "http://$CORRAL_LISTEN "                                               \
     "or http://127.0.0.1:8080)",                                           \
     0,                                                                     \
     0,                                                                     \
     NULL,                                                                  \
     false},                                                                \
    {                                                                       \
        "key", CM_CFG_STR, offsetof (type, key_field), NULL,                \
            "API key (env CORRAL_API_KEY or CORRAL_KEY; default: the file " \
            "$CORRAL_DATA_DIR/local-api-key that `corral up` writes)",      \
            0, 0, NULL, true                                                \
    }

//  Fill t from the flags (NULL = not given), the environment and the key
//  file.  Returns 0, or CLI_USAGE (2) with a message in err when the URL
//  is malformed or the key has characters a key cannot have.
int cli_target_resolve (cli_target_t *t, const char *url_flag, const char *key_flag,
                        char *err, size_t errlen);

//  "http://host:port" (https when CORRAL_TLS_CERT is set) for a listen
//  address "host:port", a wildcard host made the loopback.  Returns 0, or
//  -1 when listen is not host:port.
int cli_target_from_listen (const char *listen, char *out, size_t outlen);

//  Does something accept connections at a ZeroMQ endpoint?  1 yes, 0 no,
//  -1 cannot tell (not tcp:// or ipc://, or unparsable).  A wildcard tcp
//  host (*, 0.0.0.0, ::) is tried on the loopback; waits 200 ms at most.
int cli_endpoint_open (const char *endpoint);

//  A one-line hint for a command that needs a key and found none.
const char *cli_target_no_key (void);

//  For a command that needs a key: cli_target_resolve, then the key must
//  be there.  Returns 0, or CLI_USAGE after printing "<prog>: <why>" on
//  stderr (a malformed URL or key, or cli_target_no_key()).
int cli_target_with_key (cli_target_t *t, const char *prog, const char *url_flag,
                         const char *key_flag);

//  The data directory corral uses: $CORRAL_DATA_DIR or "./data".
const char *cli_data_dir (void);

#endif
