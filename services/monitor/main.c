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
    //  policies (mon_policy.h, docs/policies.md)
    OPT ("session-endpoint", CM_CFG_ENDPOINT, policy.session_endpoint,
         "tcp://127.0.0.1:7702",
         "corral-session's client API, for policy actions (DEALER)", 0, 0, NULL),
    OPT ("events-endpoint", CM_CFG_ENDPOINT, policy.events_endpoint,
         "tcp://127.0.0.1:7704", "corral-session's events, watched by the policies (SUB)",
         0, 0, NULL),
    OPT ("session-max-duration", CM_CFG_MS, policy.max_duration_ms, "0",
         "close a session this long after it opened (warning at 90 %); 0 = off", 0,
         31536000000LL, NULL),
    OPT ("session-idle-timeout", CM_CFG_MS, policy.idle_timeout_ms, "30m",
         "hibernate a session idle this long; 0 = off", 0, 31536000000LL, NULL),
    OPT ("stuck-repeat", CM_CFG_INT, policy.stuck_repeat, "5",
         "warn when one tool call repeats this often in a turn, cancel at twice; 0 = off",
         0, 100000, NULL),
    OPT ("stuck-silence", CM_CFG_MS, policy.stuck_silence_ms, "10m",
         "warn when a running turn is silent this long, cancel at twice; 0 = off", 0,
         31536000000LL, NULL),
    OPT ("policy-census", CM_CFG_MS, policy.census_ms, "5m",
         "re-read the live sessions this often (besides at every (re)connect); 0 = only "
         "then",
         0, 86400000, NULL),
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
