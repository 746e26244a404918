/*  corral-session: session state, the event spine, turns and workers.  */
#include <stddef.h>
#include <stdio.h>

#include "cm_config.h"
#include "cm_log.h"
#include "cm_stop.h"
#include "cm_zmq.h"
#include "sess.h"

#define OPT(name, type, field, def, help, min, max, choices)                             \
    {                                                                                    \
        name, type, offsetof (sess_config_t, field), def, help, min, max, choices, false \
    }
static const cm_cfg_opt_t s_opts[] = {
    OPT ("data-dir", CM_CFG_PATH, data_dir, "./data",
         "where state lives (default roots go here)", 0, 0, NULL),
    OPT ("workspace-roots", CM_CFG_STR, roots, NULL,
         "colon-separated folders a session's cwd must lie in (default "
         "<data-dir>/workspaces)",
         0, 0, NULL),
    OPT ("session-endpoint", CM_CFG_ENDPOINT, client_endpoint, "tcp://127.0.0.1:7702",
         "client API (ROUTER, bind)", 0, 0, NULL),
    OPT ("worker-endpoint", CM_CFG_ENDPOINT, worker_endpoint, "tcp://127.0.0.1:7703",
         "worker API (ROUTER, bind)", 0, 0, NULL),
    OPT ("events-endpoint", CM_CFG_ENDPOINT, events_endpoint, "tcp://127.0.0.1:7704",
         "events (PUB, bind)", 0, 0, NULL),
    OPT ("store-endpoint", CM_CFG_ENDPOINT, store_endpoint, "tcp://127.0.0.1:7701",
         "corral-store (DEALER, connect)", 0, 0, NULL),
    OPT ("monitor-in-endpoint", CM_CFG_ENDPOINT, monitor_in, "tcp://127.0.0.1:7705",
         "corral-monitor's heartbeat input (PUB, connect; a missing monitor is fine)", 0,
         0, NULL),
    OPT ("default-backend", CM_CFG_ENUM, default_backend, "openai",
         "backend of a new session", 0, 0, "openai|anthropic|acp"),
    OPT ("default-model", CM_CFG_STR, default_model, "corral-fake",
         "model of a new session", 0, 0, NULL),
    OPT ("default-mode", CM_CFG_ENUM, default_mode, "ask",
         "permission mode of a new session", 0, 0, "ask|edit|auto|read_only"),
    OPT ("max-sessions", CM_CFG_INT, max_sessions, "100000", "open sessions at most", 1,
         100000000, NULL),
    OPT ("max-sessions-per-tenant", CM_CFG_INT, max_sessions_per_tenant, "10000",
         "open sessions per tenant at most", 1, 100000000, NULL),
    OPT ("max-turns", CM_CFG_INT, max_turns, "10000", "turns running at once at most", 1,
         10000000, NULL),
    OPT ("permission-timeout", CM_CFG_MS, permission_timeout_ms, "5m",
         "an unanswered permission request is refused after this", 100, 86400000, NULL),
    OPT ("close-grace", CM_CFG_MS, close_grace_ms, "60s",
         "a policy close (max duration) lets a running turn finish this long, then "
         "cancels it",
         0, 86400000, NULL),
    OPT ("session-budget-tokens", CM_CFG_INT, budget_tokens, "0",
         "tokens (input + output) one session may use over all its turns; 0 = no limit",
         0, INT64_MAX, NULL),
    OPT ("session-budget-usd", CM_CFG_STR, budget_usd, NULL,
         "cost in US dollars one session may reach, e.g. 0.50; unset = no limit", 0, 0,
         NULL),
    OPT ("log-level", CM_CFG_ENUM, log_level, "info", "least severe level logged", 0, 0,
         "debug|info|warn|error"),
    CM_CFG_END};

int main (int argc, char **argv)
{
    sess_config_t cfg = {0};
    char err[512];
    int rc = cm_config_load (
        s_opts, &cfg, argc, argv, "corral-session",
        "Corral's session service: sessions, events, turns, workers.", err, sizeof err);
    if (rc == CM_CONFIG_HELP) return 0;
    if (rc) {
        fprintf (stderr, "corral-session: %s\n", err);
        return 2;
    }
    if (sess_budget_parse_usd (cfg.budget_usd, &cfg.budget_micros)) {
        fprintf (stderr,
                 "corral-session: --session-budget-usd '%s' is not an amount of US "
                 "dollars (e.g. 0.50, at most 6 decimals)\n",
                 cfg.budget_usd);
        cm_config_free (s_opts, &cfg);
        return 2;
    }
    cm_log_level_t level = CM_LOG_INFO;
    cm_log_level_parse (cfg.log_level, &level);
    cm_log_init ("session", level);
    cm_stop_init ();
    cm_config_log (s_opts, &cfg);
    rc = sess_server_run (&cfg);
    cm_zmq_term ();
    cm_config_free (s_opts, &cfg);
    return rc ? 1 : 0;
}
