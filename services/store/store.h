/*  store.h - corral-store: the only writer of the LMDB environment.

    Layers, each usable without the one above (tests use the lower two):
      store_env.c     open the environment and its named databases, schema
                      version and migrations, the store epoch, map growth,
                      hot backup, statistics;
      store_ops.c     one handler per store-API message, run inside a write
                      transaction; store_batch() runs a group of requests
                      in ONE transaction and commits it (group commit);
      store_server.c  the ROUTER socket loop: collect what arrived in one
                      pass (bounded by count and time), store_batch(), then
                      send every reply - only after the commit.

    Durability contract: store_batch() returns only after the transaction
    holding every write of the batch committed (with fsync when sync=full),
    so a reply a peer receives describes durable state.  If a write fails at
    the LMDB level (map full, transaction too large, I/O), the batch is
    aborted as a whole and redone one request per transaction after growing
    the map, so one request's failure never costs another request its write.
*/
#ifndef STORE_H
#define STORE_H

#include <lmdb.h>
#include <stdbool.h>
#include <stdint.h>

#include "proto.h"
#include "proto_beat.h"

#define STORE_SCHEMA_VERSION 2
#define STORE_MAX_EVENT      (1u << 20) //  bytes in one stored event
#define STORE_RANGE_DEFAULT  1000
#define STORE_RANGE_MAX      10000
//  Event bytes in one events.range reply, so it stays well inside what a
//  peer decodes (PROTO_MAX_MSG); a shorter page than asked means "ask again
//  from first_seq + count".  At least one event always goes.
#define STORE_RANGE_MAX_BYTES (16u * 1024 * 1024)
#define STORE_LIST_DEFAULT    100
#define STORE_LIST_MAX        1000
#define STORE_LATENCY_RING    4096
//  usage.add ids are remembered this long after the time in the id (a
//  UUIDv7), far beyond any resend; each add prunes at most this many.
#define STORE_USAGE_ID_KEEP_MS (7ull * 24 * 3600 * 1000)
#define STORE_USAGE_ID_PRUNE   8

typedef enum {
    STORE_SYNC_FULL, //  fsync at every commit
    STORE_SYNC_OS,   //  no fsync at commit; the OS writes back (and a 1 s sync)
} store_sync_t;

typedef struct {
    const char *data_dir; //  the environment lives in <data_dir>/store
    store_sync_t sync;
    uint64_t map_size; //  initial map size, bytes
    uint64_t map_max;  //  growth stops here: writes then fail CM_E_FULL
    bool read_only;    //  open for reading (backup tool)
} store_opts_t;

typedef enum {
    STORE_DB_SESSIONS,
    STORE_DB_EVENTS,
    STORE_DB_MESSAGES,
    STORE_DB_TASKS,
    STORE_DB_TASKS_BY_STATE,
    STORE_DB_TEMPLATES,
    STORE_DB_KEYS,
    STORE_DB_USAGE,
    STORE_DB_USAGE_APPLIED, //  usage.add ids applied (schema 2)
    STORE_DB_META,
    STORE_DB_COUNT
} store_db_t;

typedef struct store {
    MDB_env *env;
    MDB_dbi dbi[STORE_DB_COUNT];
    store_opts_t opts;
    char *path; //  <data_dir>/store
    char epoch[CM_UUID_STR_LEN];
    bool no_applied;   //  read-only schema 1 store: no usage_applied database
    uint64_t map_size; //  current
    //  statistics
    uint64_t commits;
    uint64_t requests;
    uint64_t grows;
    uint32_t latency_us[STORE_LATENCY_RING]; //  recent commit latencies
    uint64_t latency_n;
    uint64_t latency_max_us;
    proto_hist_t commit_hist; //  commit latency in seconds, for the heartbeat
    //  scratch reused across requests (no allocation per request)
    proto_msg_t rec_msg;
    proto_buf_t scratch;
} store_t;

/* ---- store_env.c ------------------------------------------------ */

//  Names of the databases, in store_db_t order.
extern const char *const store_db_names[STORE_DB_COUNT];

//  Open (creating when absent) the environment under opts->data_dir.
//  Checks the schema version (a newer one is CM_E_SCHEMA, a damaged file
//  CM_E_CORRUPT), runs migrations, creates the epoch once.  On error
//  returns NULL with a message for a person in err.
store_t *store_open (const store_opts_t *opts, char *err, size_t errlen);

//  Close the environment; sets *self_p to NULL.  Idempotent.
void store_close (store_t **self_p);

//  Double the map size (up to opts.map_max).  Returns 0, or CM_E_FULL when
//  already at the maximum.  No transaction may be open.
int store_grow (store_t *self);

//  Compacting hot copy to a new file at path (must not exist).  Returns 0
//  with *bytes set, or CM_E_CONFLICT (exists) / CM_E_IO with err filled.
//  No write transaction of this thread may be open.
int store_backup (store_t *self, const char *path, uint64_t *bytes, char *err,
                  size_t errlen);

//  Fill a stats record (entries and bytes per database, map use, commit
//  latency percentiles).  dbs must hold STORE_DB_COUNT entries.
int store_stats (store_t *self, MDB_txn *txn, proto_store_stats_t *out,
                 proto_db_stat_t *dbs);

//  Record one commit's latency.
void store_note_commit (store_t *self, uint64_t us);

//  Sync to disk now (sync=os calls this once a second).
void store_sync (store_t *self);

//  Map an LMDB return code to a cm error code.
int store_mdb_err (int mdb_rc);

/* ---- store_ops.c ------------------------------------------------ */

//  One request of a batch: the encoded request, and where its encoded
//  reply landed in the batch's reply buffer.
typedef struct {
    const void *data;
    size_t size;
    size_t reply_off;
    size_t reply_len;
} store_req_t;

//  Run requests in one write transaction and commit it, then encode every
//  reply into `replies` (reset first) at reqs[i].reply_off.  A request that
//  fails to decode or is refused gets an error reply; the others are not
//  affected.  Returns 0, or a negative code if the environment itself
//  failed (every reply then says so).
int store_batch (store_t *self, store_req_t *reqs, size_t count, proto_buf_t *replies);

#endif
