/*  corral-store: the only writer of Corral's LMDB environment.  */
#include <stddef.h>
#include <stdio.h>

#include "cm_config.h"
#include "cm_log.h"
#include "cm_stop.h"
#include "cm_zmq.h"
#include "store_server.h"

typedef struct {
    char *data_dir, *endpoint, *sync, *log_level, *backup, *monitor_in;
    int64_t map_size, map_max, batch_max, batch_window, journal_keep;
} config_t;

#define OPT(name, type, field, def, help, min, max, choices)                        \
    {                                                                               \
        name, type, offsetof (config_t, field), def, help, min, max, choices, false \
    }
static const cm_cfg_opt_t s_opts[] = {
    OPT ("data-dir", CM_CFG_PATH, data_dir, "./data", "state lives in <data-dir>/store",
         0, 0, NULL),
    OPT ("store-endpoint", CM_CFG_ENDPOINT, endpoint, "tcp://127.0.0.1:7701",
         "ROUTER address to bind", 0, 0, NULL),
    OPT ("store-sync", CM_CFG_ENUM, sync, "full",
         "full: fsync every group commit; os: leave write-back to the OS (see "
         "docs/operations.md)",
         0, 0, "full|os"),
    OPT ("store-map-size", CM_CFG_SIZE, map_size, "256M", "initial LMDB map size",
         1 << 20, INT64_MAX, NULL),
    OPT ("store-map-max", CM_CFG_SIZE, map_max, "64G",
         "the map grows (doubling) up to this; then writes fail store_full", 1 << 20,
         INT64_MAX, NULL),
    OPT ("store-batch-max", CM_CFG_INT, batch_max, "4096",
         "requests in one group commit at most", 1, 65536, NULL),
    OPT ("store-batch-window", CM_CFG_MS, batch_window, "2ms",
         "time spent collecting one group commit at most", 0, 1000, NULL),
    OPT ("store-journal-keep", CM_CFG_INT, journal_keep, "16384",
         "new events kept in the journal before they are folded into the per-session "
         "layout; 0 folds at every commit (docs/architecture.md)",
         0, 1 << 24, NULL),
    OPT ("monitor-in-endpoint", CM_CFG_ENDPOINT, monitor_in, "tcp://127.0.0.1:7705",
         "corral-monitor's heartbeat input (PUB, connect; a missing monitor is fine)", 0,
         0, NULL),
    OPT ("log-level", CM_CFG_ENUM, log_level, "info", "least severe level logged", 0, 0,
         "debug|info|warn|error"),
    OPT ("backup", CM_CFG_PATH, backup, NULL,
         "write a compacting hot copy of the store to this new file and exit", 0, 0,
         NULL),
    CM_CFG_END};

int main (int argc, char **argv)
{
    config_t cfg = {0};
    char err[512];
    int rc = cm_config_load (s_opts, &cfg, argc, argv, "corral-store",
                             "Corral's state store: LMDB behind a ZeroMQ ROUTER.", err,
                             sizeof err);
    if (rc == CM_CONFIG_HELP) return 0;
    if (rc) {
        fprintf (stderr, "corral-store: %s\n", err);
        return 2;
    }
    cm_log_level_t level = CM_LOG_INFO;
    cm_log_level_parse (cfg.log_level, &level);
    cm_log_init ("store", level);
    cm_stop_init ();
    cm_config_log (s_opts, &cfg);

    if (cfg.map_max < cfg.map_size) cfg.map_max = cfg.map_size;
    store_opts_t opts = {.data_dir = cfg.data_dir,
                         .sync = cfg.sync[0] == 'o' ? STORE_SYNC_OS : STORE_SYNC_FULL,
                         .map_size = (uint64_t)cfg.map_size,
                         .map_max = (uint64_t)cfg.map_max,
                         .read_only = cfg.backup != NULL,
                         .journal_keep = (uint64_t)cfg.journal_keep};
    store_t *store = store_open (&opts, err, sizeof err);
    if (!store) {
        cm_error ("%s", err);
        fprintf (stderr, "corral-store: %s\n", err);
        cm_config_free (s_opts, &cfg);
        return 1;
    }
    if (cfg.backup) {
        uint64_t bytes = 0;
        rc = store_backup (store, cfg.backup, &bytes, err, sizeof err);
        if (rc) fprintf (stderr, "corral-store: %s\n", err);
    } else {
        store_server_opts_t sopts = {.endpoint = cfg.endpoint,
                                     .batch_max = (size_t)cfg.batch_max,
                                     .batch_window_ms = cfg.batch_window,
                                     .monitor_in = cfg.monitor_in};
        rc = store_server_run (store, &sopts);
    }
    store_close (&store);
    cm_zmq_term ();
    cm_config_free (s_opts, &cfg);
    return rc ? 1 : 0;
}
