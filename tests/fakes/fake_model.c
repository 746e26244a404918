/*  corral-fake-model: a scripted model server speaking OpenAI chat
    completions and Anthropic messages, for tests, benchmarks and the
    offline local stack.  See tests/fakes/README.md.  */
#include <libgen.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "cm_config.h"
#include "cm_log.h"
#include "cm_stop.h"
#include "fake_model.h"

typedef struct {
    char *listen, *script, *api_key, *log_level;
    int64_t chunk_delay, body_max, max_conns;
} config_t;

#define OPT(name, type, field, def, help, min, max, choices, secret)                 \
    {                                                                                \
        name, type, offsetof (config_t, field), def, help, min, max, choices, secret \
    }
static const cm_cfg_opt_t s_opts[] = {
    OPT ("fake-listen", CM_CFG_STR, listen, "127.0.0.1:0",
         "host:port to serve on; port 0 picks a free one (printed on stdout)", 0, 0, NULL,
         false),
    OPT ("fake-script", CM_CFG_PATH, script, NULL,
         "script of rules; default: default-script.json beside the binary", 0, 0, NULL,
         false),
    OPT ("fake-api-key", CM_CFG_STR, api_key, NULL,
         "require this key (Authorization: Bearer / x-api-key); unset = no check", 0, 0,
         NULL, true),
    OPT ("fake-chunk-delay", CM_CFG_MS, chunk_delay, "0",
         "pause between two stream events, for rules without chunk_delay_ms", 0,
         FAKE_PAUSE_MAX, NULL, false),
    OPT ("fake-body-max", CM_CFG_SIZE, body_max, "32M", "largest request body accepted",
         1024, INT32_MAX, NULL, false),
    OPT ("fake-max-conns", CM_CFG_INT, max_conns, "16384", "connections held at once", 1,
         1000000, NULL, false),
    OPT ("log-level", CM_CFG_ENUM, log_level, "info", "least severe level logged", 0, 0,
         "debug|info|warn|error", false),
    CM_CFG_END};

//  <directory of this binary>/default-script.json (CMake copies it there).
static void s_default_script (char *out, size_t outlen)
{
    char exe[PATH_MAX];
    ssize_t n = readlink ("/proc/self/exe", exe, sizeof exe - 1);
    exe[n > 0 ? n : 0] = '\0';
    snprintf (out, outlen, "%s/default-script.json", n > 0 ? dirname (exe) : ".");
}

int main (int argc, char **argv)
{
    config_t cfg = {0};
    char err[1024], path[PATH_MAX + 32];
    int rc = cm_config_load (s_opts, &cfg, argc, argv, "corral-fake-model",
                             "Scripted model server: OpenAI and Anthropic streaming.",
                             err, sizeof err);
    if (rc == CM_CONFIG_HELP) return 0;
    if (rc) {
        fprintf (stderr, "corral-fake-model: %s\n", err);
        return 2;
    }
    cm_log_level_t level = CM_LOG_INFO;
    cm_log_level_parse (cfg.log_level, &level);
    cm_log_init ("fake-model", level);
    cm_stop_init ();
    cm_config_log (s_opts, &cfg);

    if (!cfg.script) s_default_script (path, sizeof path);
    fake_script_t *script =
        fake_script_load (cfg.script ? cfg.script : path, err, sizeof err);
    fake_opts_t opts = {.listen = cfg.listen,
                        .api_key = cfg.api_key,
                        .chunk_delay_ms = cfg.chunk_delay,
                        .body_max = cfg.body_max,
                        .max_conns = cfg.max_conns};
    fake_server_t *server =
        script ? fake_server_new (&opts, &script, err, sizeof err) : NULL;
    if (!server) {
        fprintf (stderr, "corral-fake-model: %s\n", err);
        cm_error ("%s", err);
        fake_script_destroy (&script);
        cm_config_free (s_opts, &cfg);
        return 1;
    }
    printf ("listening on %s\n", fake_server_url (server));
    fflush (stdout);
    cm_info ("listening on %s", fake_server_url (server));
    rc = fake_server_run (server);
    cm_info ("stopped");
    fake_server_destroy (&server);
    cm_config_free (s_opts, &cfg);
    return rc ? 1 : 0;
}
