/*  corral-monitor: liveness, readiness and the system's metrics (mon.h).

    policies: the policy engine's options (the session service's event and
    client endpoints, the limits) join s_opts below, in mon_config_t.
*/
#include <stddef.h>
#include <stdio.h>

#include "cm_config.h"
#include "cm_log.h"
#include "cm_stop.h"
#include "cm_zmq.h"
#include "mon.h"

#define OPT(name, type, field, def, help, min, max, choices)                            \
    {                                                                                   \
        name, type, offsetof (mon_config_t, field), def, help, min, max, choices, false \
    }
static const cm_cfg_opt_t s_opts[] = {
    OPT ("monitor-in-endpoint", CM_CFG_ENDPOINT, in_endpoint, "tcp://127.0.0.1:7705",
         "heartbeats from every service (SUB, bind)", 0, 0, NULL),
    OPT ("monitor-endpoint", CM_CFG_ENDPOINT, api_endpoint, "tcp://127.0.0.1:7706",
         "health, metrics and status requests (ROUTER, bind)", 0, 0, NULL),
    OPT ("log-level", CM_CFG_ENUM, log_level, "info", "least severe level logged", 0, 0,
         "debug|info|warn|error"),
    CM_CFG_END};

int main (int argc, char **argv)
{
    mon_config_t cfg = {0};
    char err[512];
    int rc = cm_config_load (s_opts, &cfg, argc, argv, "corral-monitor",
                             "Corral's monitor: who is alive, readiness, metrics.", err,
                             sizeof err);
    if (rc == CM_CONFIG_HELP) return 0;
    if (rc) {
        fprintf (stderr, "corral-monitor: %s\n", err);
        return 2;
    }
    cm_log_level_t level = CM_LOG_INFO;
    cm_log_level_parse (cfg.log_level, &level);
    cm_log_init ("monitor", level);
    cm_stop_init ();
    cm_config_log (s_opts, &cfg);
    rc = mon_server_run (&cfg);
    cm_zmq_term ();
    cm_config_free (s_opts, &cfg);
    return rc ? 1 : 0;
}
