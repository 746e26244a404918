/*  corral-worker: runs agent turns for corral-session.  */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cm_config.h"
#include "cm_log.h"
#include "cm_stop.h"
#include "cm_zmq.h"
#include "wrk_worker.h"

#define OPT(name, type, field, def, help, min, max, choices, secret)                     \
    {                                                                                    \
        name, type, offsetof (wrk_config_t, field), def, help, min, max, choices, secret \
    }
static const cm_cfg_opt_t s_opts[] = {
    OPT ("worker-endpoint", CM_CFG_ENDPOINT, endpoint, "tcp://127.0.0.1:7703",
         "the session service's worker API (connect)", 0, 0, NULL, false),
    OPT ("worker-id", CM_CFG_STR, worker_id, NULL,
         "name of this worker (default: host-pid)", 0, 0, NULL, false),
    OPT ("worker-capacity", CM_CFG_INT, capacity, "1000", "turns run at once at most", 1,
         WRK_MAX_TURNS, NULL, false),
    OPT ("openai-base-url", CM_CFG_STR, openai_base_url, NULL,
         "OpenAI-compatible base URL (default $OPENAI_BASE_URL or "
         "https://api.openai.com/v1)",
         0, 0, NULL, false),
    OPT ("openai-api-key", CM_CFG_STR, openai_api_key, NULL,
         "key for the openai backend (default $OPENAI_API_KEY)", 0, 0, NULL, true),
    OPT ("anthropic-base-url", CM_CFG_STR, anthropic_base_url, NULL,
         "Anthropic base URL (default $ANTHROPIC_BASE_URL or https://api.anthropic.com)",
         0, 0, NULL, false),
    OPT ("anthropic-api-key", CM_CFG_STR, anthropic_api_key, NULL,
         "key for the anthropic backend (default $ANTHROPIC_API_KEY)", 0, 0, NULL, true),
    OPT ("prices", CM_CFG_PATH, prices, NULL,
         "price table JSON (docs/conversation.md); default: built-in", 0, 0, NULL, false),
    OPT ("max-model-calls", CM_CFG_INT, max_model_calls, "50",
         "model calls in one turn at most", 1, 10000, NULL, false),
    OPT ("max-tokens", CM_CFG_INT, max_tokens, "8192",
         "tokens one model call may generate", 256, 1000000, NULL, false),
    OPT (
        "max-turn-tokens", CM_CFG_INT, max_turn_tokens, "0",
        "tokens (input + output) one turn may use over all its model calls; 0 = no limit",
        0, INT64_MAX, NULL, false),
    OPT ("thinking-budget", CM_CFG_INT, thinking_budget, "0",
         "Anthropic extended thinking budget (0 = off)", 0, 1000000, NULL, false),
    OPT ("model-stall", CM_CFG_MS, stall_ms, "60s",
         "a model stream silent this long is cut", 1000, 3600000, NULL, false),
    OPT ("model-attempts", CM_CFG_INT, max_attempts, "4",
         "tries of a model call that fails before streaming", 1, 20, NULL, false),
    OPT ("turn-memory-limit", CM_CFG_SIZE, turn_memory_limit, "2G",
         "resident memory a turn's command tree may use (docs/limits.md); 0 = no limit",
         0, INT64_MAX, NULL, false),
    OPT ("turn-memory-poll", CM_CFG_MS, turn_memory_poll_ms, "200ms",
         "how often running commands' memory is measured", 10, 10000, NULL, false),
    OPT ("orphan-sweep", CM_CFG_MS, orphan_sweep_ms, "10s",
         "how often processes left by dead workers are looked for; 0 = only at start", 0,
         3600000, NULL, false),
    OPT ("monitor-in-endpoint", CM_CFG_ENDPOINT, monitor_in, "tcp://127.0.0.1:7705",
         "corral-monitor's heartbeat input (PUB, connect; a missing monitor is fine)", 0,
         0, NULL, false),
    OPT ("log-level", CM_CFG_ENUM, log_level, "info", "least severe level logged", 0, 0,
         "debug|info|warn|error", false),
    CM_CFG_END};

//  Fill an unset option from the provider's usual environment variable.
static void from_env (char **slot, const char *env, const char *def)
{
    if (*slot) return;
    const char *v = getenv (env);
    if (v && *v)
        *slot = strdup (v);
    else if (def)
        *slot = strdup (def);
}

int main (int argc, char **argv)
{
    wrk_config_t cfg = {0};
    char err[512];
    int rc = cm_config_load (s_opts, &cfg, argc, argv, "corral-worker",
                             "Corral's agent worker: model streams, tools and commands.",
                             err, sizeof err);
    if (rc == CM_CONFIG_HELP) return 0;
    if (rc) {
        fprintf (stderr, "corral-worker: %s\n", err);
        return 2;
    }
    from_env (&cfg.openai_base_url, "OPENAI_BASE_URL", "https://api.openai.com/v1");
    from_env (&cfg.openai_api_key, "OPENAI_API_KEY", NULL);
    from_env (&cfg.anthropic_base_url, "ANTHROPIC_BASE_URL", "https://api.anthropic.com");
    from_env (&cfg.anthropic_api_key, "ANTHROPIC_API_KEY", NULL);
    if (cfg.openai_api_key) cm_log_secret (cfg.openai_api_key);
    if (cfg.anthropic_api_key) cm_log_secret (cfg.anthropic_api_key);
    if (!cfg.worker_id) {
        char host[200] = "worker";
        gethostname (host, sizeof host - 1);
        char id[256];
        snprintf (id, sizeof id, "%s-%d", host, (int)getpid ());
        cfg.worker_id = strdup (id);
    }
    cm_log_level_t level = CM_LOG_INFO;
    cm_log_level_parse (cfg.log_level, &level);
    cm_log_init ("worker", level);
    cm_stop_init ();
    cm_config_log (s_opts, &cfg);
    rc = wrk_server_run (&cfg);
    cm_zmq_term ();
    free (cfg.openai_base_url);
    free (cfg.openai_api_key);
    free (cfg.anthropic_base_url);
    free (cfg.anthropic_api_key);
    cfg.openai_base_url = cfg.openai_api_key = cfg.anthropic_base_url =
        cfg.anthropic_api_key = NULL;
    cm_config_free (s_opts, &cfg);
    return rc ? 1 : 0;
}
