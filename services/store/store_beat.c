/*  store_beat.c - corral-store's statistics in its heartbeat (docs/monitor.md):
    group commits and their latency histogram, requests, map size and use,
    entries per database.
*/
#include "proto_beat.h"
#include "store.h"
#include "store_server.h"

void store_beat_fill (proto_beat_t *beat, void *arg)
{
    store_t *store = arg;
    proto_beat_add (beat, "corral_store_commits_total", NULL, (double)store->commits);
    proto_beat_add (beat, "corral_store_requests_total", NULL, (double)store->requests);
    if (!store->commit_hist.bounds) //  no commit yet: an empty histogram
        proto_hist_init (&store->commit_hist, proto_hist_latency, proto_hist_latency_n);
    proto_beat_hist (beat, "corral_store_commit_seconds", &store->commit_hist, NULL);
    MDB_txn *txn;
    if (mdb_txn_begin (store->env, NULL, MDB_RDONLY, &txn)) return;
    proto_store_stats_t st = {0};
    proto_db_stat_t dbs[STORE_DB_COUNT];
    if (store_stats (store, txn, &st, dbs) == 0) {
        proto_beat_add (beat, "corral_store_map_size_bytes", NULL, (double)st.map_size);
        proto_beat_add (beat, "corral_store_map_used_bytes", NULL, (double)st.map_used);
        for (size_t i = 0; i < st.dbs.count; i++)
            proto_beat_addv (beat, "corral_store_entries", (double)dbs[i].entries, "db",
                             dbs[i].name, NULL);
    }
    mdb_txn_abort (txn);
}
