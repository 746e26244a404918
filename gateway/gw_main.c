/*  corral-gateway: ACP over WebSocket, REST and SSE for Corral's clients.  */
#include <stddef.h>
#include <stdio.h>

#include "cm_config.h"
#include "cm_log.h"
#include "cm_stop.h"
#include "cm_zmq.h"
#include "gw.h"

#define OPT(name, type, field, def, help, min, max, choices)                           \
    {                                                                                  \
        name, type, offsetof (gw_config_t, field), def, help, min, max, choices, false \
    }
static const cm_cfg_opt_t s_opts[] = {
    OPT ("listen", CM_CFG_STR, listen, "127.0.0.1:8080",
         "HTTP and WebSocket address (host:port)", 0, 0, NULL),
    OPT ("session-endpoint", CM_CFG_ENDPOINT, session_endpoint, "tcp://127.0.0.1:7702",
         "corral-session's client API (DEALER, connect)", 0, 0, NULL),
    OPT ("store-endpoint", CM_CFG_ENDPOINT, store_endpoint, "tcp://127.0.0.1:7701",
         "corral-store (DEALER, connect): history and keys", 0, 0, NULL),
    OPT ("events-endpoint", CM_CFG_ENDPOINT, events_endpoint, "tcp://127.0.0.1:7704",
         "corral-session's events (SUB, connect)", 0, 0, NULL),
    OPT ("monitor-endpoint", CM_CFG_ENDPOINT, monitor_endpoint, "tcp://127.0.0.1:7706",
         "corral-monitor's API (DEALER, connect): readiness and the system's /metrics", 0,
         0, NULL),
    OPT ("monitor-in-endpoint", CM_CFG_ENDPOINT, monitor_in, "tcp://127.0.0.1:7705",
         "corral-monitor's heartbeat input (PUB, connect; a missing monitor is fine)", 0,
         0, NULL),
    OPT ("static-dir", CM_CFG_PATH, static_dir, NULL,
         "folder served at / (default: the installed web page)", 0, 0, NULL),
    OPT ("origins", CM_CFG_STR, origins, NULL,
         "comma-separated Origin values browsers may connect from (empty: any)", 0, 0,
         NULL),
    OPT ("tls-cert", CM_CFG_PATH, tls_cert, NULL, "PEM certificate: serve https/wss", 0,
         0, NULL),
    OPT ("tls-key", CM_CFG_PATH, tls_key, NULL, "PEM private key of the certificate", 0,
         0, NULL),
    OPT ("max-message", CM_CFG_SIZE, max_frame, "1M", "largest client message", 64,
         64 * 1024 * 1024, NULL),
    OPT ("max-depth", CM_CFG_INT, max_depth, "64", "deepest JSON nesting in a message", 2,
         1024, NULL),
    OPT ("ping-interval", CM_CFG_MS, ping_ms, "30s",
         "WebSocket ping period (checked each second); two missed pongs close", 1000,
         3600000, NULL),
    OPT ("idle-timeout", CM_CFG_MS, idle_ms, "10m",
         "close a connection that sends nothing and watches no session (0: never)", 0,
         86400000, NULL),
    OPT ("slow-timeout", CM_CFG_MS, slow_ms, "30s",
         "close a client whose queue stays full this long", 100, 3600000, NULL),
    OPT ("max-connections", CM_CFG_INT, max_conns, "100000", "open connections at most",
         1, 10000000, NULL),
    OPT ("max-connections-per-ip", CM_CFG_INT, max_conns_per_ip, "1000",
         "open connections from one address at most", 1, 10000000, NULL),
    OPT ("rate", CM_CFG_INT, rate, "50", "requests per second per API key", 1, 1000000,
         NULL),
    OPT ("burst", CM_CFG_INT, burst, "200", "requests one key may make at once", 1,
         1000000, NULL),
    OPT ("probe-rate", CM_CFG_INT, probe_rate, "20",
         "per client address: requests per second that make the gateway check a key it "
         "does not know yet, or its readiness (then 429 / close 1013)",
         1, 1000000, NULL),
    OPT ("probe-burst", CM_CFG_INT, probe_burst, "100",
         "per client address: such requests at once", 1, 1000000, NULL),
    OPT ("queue-frames", CM_CFG_INT, queue_frames, "4096",
         "frames queued per connection before it catches up from the store", 16, 10000000,
         NULL),
    OPT ("queue-bytes", CM_CFG_SIZE, queue_bytes, "4M",
         "bytes queued per connection before it catches up from the store", 65536,
         1024LL * 1024 * 1024, NULL),
    OPT ("key-cache", CM_CFG_MS, key_cache_ms, "5s",
         "how long a key check is trusted (a revoked key stops within this)", 0, 3600000,
         NULL),
    OPT ("listen-share", CM_CFG_BOOL, listen_share, "true",
         "let several gateways listen on the same port", 0, 0, NULL),
    OPT ("metrics-auth", CM_CFG_BOOL, metrics_auth, "false",
         "GET /metrics needs an admin API key (default: open, like the health checks)", 0,
         0, NULL),
    OPT ("log-level", CM_CFG_ENUM, log_level, "info", "least severe level logged", 0, 0,
         "debug|info|warn|error"),
    CM_CFG_END};

int main (int argc, char **argv)
{
    gw_config_t cfg = {0};
    char err[512];
    int rc =
        cm_config_load (s_opts, &cfg, argc, argv, "corral-gateway",
                        "Corral's front door: ACP over WebSocket at /acp, REST and SSE "
                        "under /v1, static files at /.",
                        err, sizeof err);
    if (rc == CM_CONFIG_HELP) return 0;
    if (rc) {
        fprintf (stderr, "corral-gateway: %s\n", err);
        return 2;
    }
    cm_log_level_t level = CM_LOG_INFO;
    cm_log_level_parse (cfg.log_level, &level);
    cm_log_init ("gateway", level);
    cm_stop_init ();
    cm_config_log (s_opts, &cfg);
    rc = gw_server_run (&cfg);
    cm_zmq_term ();
    cm_config_free (s_opts, &cfg);
    return rc ? 1 : 0;
}
