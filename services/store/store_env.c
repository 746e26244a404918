/*  store_env.c - the LMDB environment: open, schema, epoch, growth, backup,
    statistics.

    Layout: <data_dir>/store/{data.mdb,lock.mdb}, named databases as in
    DESIGN §4.  The `meta` database holds:
        "schema"   decimal schema version (STORE_SCHEMA_VERSION)
        "epoch"    UUIDv7 text, written once when the environment is created
        "created"  Unix ms of creation
    A data directory from a newer build is refused (CM_E_SCHEMA) rather than
    misread; an older one is brought forward by s_migrations, one step at a
    time, in the same transaction that records the new version.
*/
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cm_log.h"
#include "cm_time.h"
#include "store.h"

const char *const store_db_names[STORE_DB_COUNT] = {
    [STORE_DB_SESSIONS] = "sessions",
    [STORE_DB_EVENTS] = "events",
    [STORE_DB_MESSAGES] = "messages",
    [STORE_DB_TASKS] = "tasks",
    [STORE_DB_TASKS_BY_STATE] = "tasks_by_state",
    [STORE_DB_TEMPLATES] = "templates",
    [STORE_DB_KEYS] = "keys",
    [STORE_DB_USAGE] = "usage",
    [STORE_DB_USAGE_APPLIED] = "usage_applied",
    [STORE_DB_META] = "meta",
    [STORE_DB_JOURNAL] = "journal",
};

/*  Schema 1 -> 2: the `usage_applied` database (usage.add idempotency ids)
    is new.  store_open has already created it empty (MDB_CREATE), and an
    empty set is right for old data: no add made before carried an id.  */
static int migrate_1_usage_applied (store_t *self, MDB_txn *txn)
{
    MDB_stat st;
    return store_mdb_err (mdb_stat (txn, self->dbi[STORE_DB_USAGE_APPLIED], &st));
}

/*  Schema 2 -> 3: the `journal` database (store_journal.c) is new.  It is
    created empty, and empty is right: every older event is in `events`.
    An older build must not open a schema 3 store, because it would not
    see the events still in the journal.  */
static int migrate_2_journal (store_t *self, MDB_txn *txn)
{
    MDB_stat st;
    return store_mdb_err (mdb_stat (txn, self->dbi[STORE_DB_JOURNAL], &st));
}

/*  Migration hook: entry i brings schema `from` to `from + 1`; a layout
    change adds a function here and bumps STORE_SCHEMA_VERSION.  */
typedef int (*store_migrate_fn) (store_t *self, MDB_txn *txn);
static const struct {
    unsigned from;
    store_migrate_fn fn;
    const char *what;
} s_migrations[] = {
    {1, migrate_1_usage_applied, "add the usage_applied database"},
    {2, migrate_2_journal, "add the journal database"},
    {0, NULL, NULL}, //  sentinel
};

int store_mdb_err (int rc)
{
    switch (rc) {
    case 0:
        return 0;
    case MDB_NOTFOUND:
        return CM_E_NOT_FOUND;
    case MDB_MAP_FULL:
    case MDB_TXN_FULL:
    case MDB_CURSOR_FULL:
    case MDB_PAGE_FULL:
        return CM_E_FULL;
    case MDB_KEYEXIST:
        return CM_E_CONFLICT;
    case MDB_CORRUPTED:
    case MDB_PAGE_NOTFOUND:
    case MDB_INVALID:
        return CM_E_CORRUPT;
    case MDB_VERSION_MISMATCH:
        return CM_E_SCHEMA;
    case ENOMEM:
        return CM_E_NOMEM;
    default:
        return CM_E_IO;
    }
}

static int mkdir_p (const char *path)
{
    char buf[4096];
    if (strlen (path) >= sizeof buf) return -ENAMETOOLONG;
    strcpy (buf, path);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir (buf, 0700) && errno != EEXIST) return -errno;
        *p = '/';
    }
    if (mkdir (buf, 0700) && errno != EEXIST) return -errno;
    return 0;
}

static int meta_get (store_t *self, MDB_txn *txn, const char *key, char *out,
                     size_t outlen)
{
    MDB_val k = {strlen (key), (void *)key}, v;
    int rc = mdb_get (txn, self->dbi[STORE_DB_META], &k, &v);
    if (rc) return rc;
    if (v.mv_size >= outlen) return MDB_CORRUPTED;
    memcpy (out, v.mv_data, v.mv_size);
    out[v.mv_size] = '\0';
    return 0;
}

static int meta_put (store_t *self, MDB_txn *txn, const char *key, const char *value)
{
    MDB_val k = {strlen (key), (void *)key}, v = {strlen (value), (void *)value};
    return mdb_put (txn, self->dbi[STORE_DB_META], &k, &v, 0);
}

//  Create the meta entries of a new environment, or check and migrate an
//  existing one.  Runs inside the opening write transaction.
static int check_schema (store_t *self, MDB_txn *txn, char *err, size_t errlen)
{
    char text[64];
    int rc = meta_get (self, txn, "schema", text, sizeof text);
    if (rc == MDB_NOTFOUND) {
        MDB_stat st;
        for (int db = 0; db < STORE_DB_COUNT; db++) {
            if (mdb_stat (txn, self->dbi[db], &st) == 0 && st.ms_entries > 0) {
                snprintf (err, errlen,
                          "%s holds data but no schema version: not a Corral "
                          "store, or damaged; restore from a backup",
                          self->path);
                return CM_E_CORRUPT;
            }
        }
        cm_uuid_t id;
        cm_uuid7 (&id);
        cm_uuid_fmt (&id, self->epoch);
        snprintf (text, sizeof text, "%lld", (long long)cm_time_ms ());
        snprintf (err, errlen, "cannot initialise %s", self->path);
        char ver[16];
        snprintf (ver, sizeof ver, "%d", STORE_SCHEMA_VERSION);
        if ((rc = meta_put (self, txn, "schema", ver)) ||
            (rc = meta_put (self, txn, "epoch", self->epoch)) ||
            (rc = meta_put (self, txn, "created", text)))
            return store_mdb_err (rc);
        cm_info ("created a new store at %s (epoch %s)", self->path, self->epoch);
        err[0] = '\0';
        return 0;
    }
    if (rc) {
        snprintf (err, errlen, "cannot read the schema version of %s: %s", self->path,
                  mdb_strerror (rc));
        return store_mdb_err (rc);
    }
    char *end;
    unsigned long schema = strtoul (text, &end, 10);
    if (*end || end == text) {
        snprintf (err, errlen, "%s: schema version '%s' is not a number; damaged store",
                  self->path, text);
        return CM_E_CORRUPT;
    }
    if (schema > STORE_SCHEMA_VERSION) {
        snprintf (
            err, errlen,
            "%s was written by a newer Corral (schema %lu; this build knows up to %d); "
            "run a newer corral-store or restore a backup",
            self->path, schema, STORE_SCHEMA_VERSION);
        return CM_E_SCHEMA;
    }
    while (schema < STORE_SCHEMA_VERSION) {
        size_t i = 0;
        while (s_migrations[i].fn && s_migrations[i].from != schema) i++;
        if (!s_migrations[i].fn) {
            snprintf (err, errlen, "%s: no migration from schema %lu to %d", self->path,
                      schema, STORE_SCHEMA_VERSION);
            return CM_E_SCHEMA;
        }
        cm_info ("migrating store schema %lu -> %lu: %s", schema, schema + 1,
                 s_migrations[i].what);
        if ((rc = s_migrations[i].fn (self, txn))) {
            snprintf (err, errlen, "migration from schema %lu failed: %s", schema,
                      cm_strerror (rc));
            return rc;
        }
        schema++;
        snprintf (text, sizeof text, "%lu", schema);
        if ((rc = meta_put (self, txn, "schema", text))) return store_mdb_err (rc);
    }
    if ((rc = meta_get (self, txn, "epoch", self->epoch, sizeof self->epoch))) {
        snprintf (err, errlen, "%s has no store epoch; damaged store", self->path);
        return CM_E_CORRUPT;
    }
    return 0;
}

store_t *store_open (const store_opts_t *opts, char *err, size_t errlen)
{
    store_t *self = calloc (1, sizeof *self);
    MDB_txn *txn = NULL;
    int rc;
    err[0] = '\0';
    if (!self) {
        snprintf (err, errlen, "out of memory");
        return NULL;
    }
    self->opts = *opts;
    proto_msg_init (&self->rec_msg);
    proto_buf_init (&self->scratch);
    size_t plen = strlen (opts->data_dir) + sizeof "/store";
    self->path = malloc (plen);
    if (!self->path) goto fail;
    snprintf (self->path, plen, "%s/store", opts->data_dir);

    if (!opts->read_only && (rc = mkdir_p (self->path))) {
        snprintf (err, errlen, "cannot create %s: %s", self->path, strerror (-rc));
        goto fail;
    }
    if ((rc = mdb_env_create (&self->env))) goto fail_mdb;
    mdb_env_set_maxdbs (self->env, STORE_DB_COUNT + 4);
    mdb_env_set_mapsize (self->env, opts->map_size);
    unsigned flags = MDB_NORDAHEAD;
    if (opts->sync == STORE_SYNC_OS) flags |= MDB_NOSYNC;
    if (opts->read_only) flags |= MDB_RDONLY;
    rc = mdb_env_open (self->env, self->path, flags, 0600);
    if (rc == MDB_INVALID || rc == MDB_VERSION_MISMATCH || rc == MDB_CORRUPTED) {
        snprintf (err, errlen,
                  "%s/data.mdb is not a readable LMDB file (%s); it is damaged or was "
                  "written by an incompatible build: move it away or restore a backup",
                  self->path, mdb_strerror (rc));
        rc = store_mdb_err (rc);
        goto fail_env;
    }
    if (rc) {
        snprintf (err, errlen, "cannot open the store at %s: %s", self->path,
                  mdb_strerror (rc));
        rc = store_mdb_err (rc);
        goto fail_env;
    }
    int dead = 0;
    mdb_reader_check (self->env, &dead); //  slots of killed readers
    MDB_envinfo info;
    mdb_env_info (self->env, &info);
    self->map_size = info.me_mapsize;

    if ((rc = mdb_txn_begin (self->env, NULL, opts->read_only ? MDB_RDONLY : 0, &txn)))
        goto fail_mdb;
    for (int db = 0; db < STORE_DB_COUNT; db++) {
        rc = mdb_dbi_open (txn, store_db_names[db], opts->read_only ? 0 : MDB_CREATE,
                           &self->dbi[db]);
        if (rc == MDB_NOTFOUND && opts->read_only &&
            (db == STORE_DB_USAGE_APPLIED || db == STORE_DB_JOURNAL)) {
            //  An older store opened read-only (a backup): nothing reads
            //  these databases there; stats count them as empty.
            self->dbi[db] = self->dbi[STORE_DB_SESSIONS];
            self->missing |= 1u << db;
            continue;
        }
        if (rc == MDB_NOTFOUND) {
            snprintf (err, errlen, "%s is not a Corral store (no '%s' database)",
                      self->path, store_db_names[db]);
            goto fail_env;
        }
        if (rc) goto fail_mdb;
    }
    if (opts->read_only) {
        if ((rc = meta_get (self, txn, "epoch", self->epoch, sizeof self->epoch))) {
            snprintf (err, errlen, "%s has no store epoch", self->path);
            goto fail_env;
        }
        //  Commit, not abort: an aborted transaction closes the database
        //  handles it opened, and self->dbi must outlive it.
        rc = mdb_txn_commit (txn);
        txn = NULL;
        if (rc) goto fail_mdb;
        return self;
    }
    if ((rc = check_schema (self, txn, err, errlen))) goto fail_env;
    if ((rc = store_journal_load (self, txn, err, errlen))) goto fail_env;
    if ((rc = mdb_txn_commit (txn))) {
        txn = NULL;
        goto fail_mdb;
    }
    return self;

fail_mdb:
    snprintf (err, errlen, "cannot open the store at %s: %s", self->path,
              mdb_strerror (rc));
fail_env:
    if (txn) mdb_txn_abort (txn);
fail:
    if (!err[0]) snprintf (err, errlen, "cannot open the store");
    store_close (&self);
    return NULL;
}

void store_close (store_t **self_p)
{
    store_t *self = *self_p;
    if (!self) return;
    if (self->env) {
        if (self->opts.sync == STORE_SYNC_OS && !self->opts.read_only)
            mdb_env_sync (self->env, 1);
        mdb_env_close (self->env);
    }
    store_journal_free (self);
    proto_msg_fini (&self->rec_msg);
    proto_buf_fini (&self->scratch);
    free (self->path);
    free (self);
    *self_p = NULL;
}

int store_grow (store_t *self)
{
    if (self->map_size >= self->opts.map_max) return CM_E_FULL;
    uint64_t next = self->map_size * 2;
    if (next > self->opts.map_max) next = self->opts.map_max;
    int rc = mdb_env_set_mapsize (self->env, next);
    if (rc) {
        cm_error ("cannot grow the map to %llu bytes: %s", (unsigned long long)next,
                  mdb_strerror (rc));
        return store_mdb_err (rc);
    }
    cm_info ("map grown from %llu to %llu bytes", (unsigned long long)self->map_size,
             (unsigned long long)next);
    self->map_size = next;
    self->grows++;
    return 0;
}

int store_backup (store_t *self, const char *path, uint64_t *bytes, char *err,
                  size_t errlen)
{
    //  Write to path.partial and rename, so a reader never sees half a copy.
    char tmp[4096];
    if (snprintf (tmp, sizeof tmp, "%s.partial", path) >= (int)sizeof tmp) {
        snprintf (err, errlen, "backup path too long");
        return CM_E_INVALID;
    }
    struct stat st;
    if (stat (path, &st) == 0) {
        snprintf (err, errlen, "backup target %s already exists; choose a new path",
                  path);
        return CM_E_CONFLICT;
    }
    int fd = open (tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        snprintf (err, errlen, "cannot create %s: %s", tmp, strerror (errno));
        return CM_E_IO;
    }
    int rc = mdb_env_copyfd2 (self->env, fd, MDB_CP_COMPACT);
    if (rc == 0 && fsync (fd) != 0) rc = errno;
    if (rc == 0 && fstat (fd, &st) != 0) rc = errno;
    close (fd);
    if (rc == 0 && rename (tmp, path) != 0) rc = errno;
    if (rc) {
        snprintf (err, errlen, "backup to %s failed: %s", path, mdb_strerror (rc));
        unlink (tmp);
        return CM_E_IO;
    }
    *bytes = (uint64_t)st.st_size;
    cm_info ("backup written to %s (%llu bytes)", path, (unsigned long long)*bytes);
    return 0;
}

static int cmp_u32 (const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

void store_note_commit (store_t *self, uint64_t us)
{
    self->latency_us[self->latency_n % STORE_LATENCY_RING] =
        us > UINT32_MAX ? UINT32_MAX : (uint32_t)us;
    self->latency_n++;
    if (us > self->latency_max_us) self->latency_max_us = us;
    if (!self->commit_hist.bounds)
        proto_hist_init (&self->commit_hist, proto_hist_latency, proto_hist_latency_n);
    proto_hist_observe (&self->commit_hist, (double)us / 1e6);
}

int store_stats (store_t *self, MDB_txn *txn, proto_store_stats_t *out,
                 proto_db_stat_t *dbs)
{
    MDB_envinfo info;
    MDB_stat est;
    mdb_env_info (self->env, &info);
    mdb_env_stat (self->env, &est);
    out->epoch = self->epoch;
    out->schema = STORE_SCHEMA_VERSION;
    out->map_size = info.me_mapsize;
    out->map_used = (uint64_t)(info.me_last_pgno + 1) * est.ms_psize;
    for (int db = 0; db < STORE_DB_COUNT; db++) {
        MDB_stat st = {0};
        int rc = self->missing & (1u << db) ? 0 : mdb_stat (txn, self->dbi[db], &st);
        if (rc) return store_mdb_err (rc);
        dbs[db].name = store_db_names[db];
        dbs[db].entries = st.ms_entries;
        dbs[db].bytes =
            (uint64_t)(st.ms_branch_pages + st.ms_leaf_pages + st.ms_overflow_pages) *
            st.ms_psize;
    }
    out->dbs.items = dbs;
    out->dbs.count = STORE_DB_COUNT;
    out->commits = self->commits;
    out->requests = self->requests;
    out->commit_max_us = self->latency_max_us;
    size_t n =
        self->latency_n < STORE_LATENCY_RING ? self->latency_n : STORE_LATENCY_RING;
    if (n) {
        uint32_t sorted[STORE_LATENCY_RING];
        memcpy (sorted, self->latency_us, n * sizeof sorted[0]);
        qsort (sorted, n, sizeof sorted[0], cmp_u32);
        out->commit_p50_us = sorted[n / 2];
        out->commit_p99_us = sorted[(n * 99) / 100 < n ? (n * 99) / 100 : n - 1];
    }
    return 0;
}

void store_sync (store_t *self)
{
    int rc = mdb_env_sync (self->env, 1);
    if (rc) cm_error ("store sync failed: %s", mdb_strerror (rc));
}
