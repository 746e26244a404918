/*  store.h - corral-store: the only writer of the LMDB environment.

    Layers, each usable without the one above (tests use the lower two):
      store_env.c     open the environment and its named databases, schema
                      version and migrations, the store epoch, map growth,
                      hot backup, statistics;
      store_journal.c new events in arrival order (the journal), folded
                      into `events` a session at a time, and the index of
                      what is still in the journal;
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

#define STORE_SCHEMA_VERSION 3
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
//  An append of this many new bytes or more skips the journal (it fills a
//  good part of a page in `events` by itself; store_journal.c).
#define STORE_JOURNAL_DIRECT 2048
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
    //  Events left in the journal before folding starts (store_journal.c);
    //  0 folds everything at every commit.
    uint64_t journal_keep;
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
    STORE_DB_JOURNAL, //  new events in arrival order (schema 3)
    STORE_DB_COUNT
} store_db_t;

typedef struct store_jsess store_jsess_t;
typedef struct cm_map cm_map_t;

//  The journal's in-memory index and the open transaction's undo log
//  (store_journal.c).
typedef struct {
    cm_map_t *sessions; //  session id -> store_jsess_t, events not yet folded
    uint64_t next_jid;
    uint64_t unfolded; //  events in the journal not yet in `events`
    uint64_t folded;   //  events folded since open
    uint64_t folds;    //  fold steps since open
    //  the open write transaction
    uint64_t stamp;
    uint64_t appended; //  events it appended
    MDB_cursor *cur;   //  its append cursor
    struct undo *undo;
    size_t undo_n, undo_cap;
    uint64_t txn_next_jid, txn_unfolded, txn_folded, txn_folds;
    char *copy; //  one event, copied out while folding
    size_t copy_cap;
} store_journal_t;

typedef struct store {
    MDB_env *env;
    MDB_dbi dbi[STORE_DB_COUNT];
    store_opts_t opts;
    char *path; //  <data_dir>/store
    char epoch[CM_UUID_STR_LEN];
    unsigned missing;  //  read-only old store: bit per database it lacks
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
    store_journal_t journal;
} store_t;

//  Keys are big-endian so LMDB's byte order is numeric order.
static inline void store_put_be64 (uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8) p[i] = (uint8_t)v;
}

static inline uint64_t store_get_be64 (const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v = v << 8 | p[i];
    return v;
}

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

/* ---- store_journal.c -------------------------------------------- */

//  Read the journal and build its index (store_open, read-write only).
//  CM_E_CORRUPT with a message in err if an entry is damaged or out of
//  order.
int store_journal_load (store_t *self, MDB_txn *txn, char *err, size_t errlen);
void store_journal_free (store_t *self);

//  Bracket every write transaction: begin after mdb_txn_begin, end after
//  its commit (committed = true) or abort (the index is rolled back).
void store_journal_begin (store_t *self);
void store_journal_end (store_t *self, bool committed);

//  Highest seq stored for a session, journal or `events` (0 if none).
//  Returns 0 or an LMDB code.
int store_last_seq (store_t *self, MDB_txn *txn, const cm_uuid_t *session, uint64_t *out);

//  The seqs of session still in the journal: true with [first, last], or
//  false if none (everything stored is in `events`).
bool store_journal_span (store_t *self, const cm_uuid_t *session, uint64_t *first,
                         uint64_t *last);

//  The event at seq, which must be in the journal span.  out points into
//  the map: valid until the next write in txn.  0 or an LMDB code
//  (MDB_CORRUPTED if the entry is not what the index says).
int store_journal_event (store_t *self, MDB_txn *txn, const cm_uuid_t *session,
                         uint64_t seq, MDB_val *out);

//  Append one event at seq = the session's last seq + 1.  0 or an LMDB
//  code / ENOMEM; on failure the transaction must be aborted.
int store_journal_append (store_t *self, MDB_txn *txn, const cm_uuid_t *session,
                          uint64_t seq, const void *data, size_t size);

//  Delete every journaled event of session (session.delete).
int store_journal_drop (store_t *self, MDB_txn *txn, const cm_uuid_t *session);

//  Fold every journaled event of session now (before a big append goes
//  straight to `events`).  0 or an LMDB code / ENOMEM.
int store_journal_fold_session (store_t *self, MDB_txn *txn, const cm_uuid_t *session);

//  Before committing a transaction that wrote: fold and trim (see the
//  file's header).  0 or an LMDB code / ENOMEM.
int store_journal_fold (store_t *self, MDB_txn *txn);

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
