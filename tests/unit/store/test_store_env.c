/*  test_store_env.c - the LMDB environment under the store API: hot
    backup, map growth, a full map, persistence and the epoch, the schema
    check and damaged files.
*/
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "cm_log.h"
#include "store_fixture.h"

#define MiB (1024u * 1024u)

/* ---------------------------------------------------------------- */
/*  Helpers                                                          */

//  Append `count` events of `size` bytes from first_seq as ONE request;
//  returns the reply: 0 with *last set, or the error code.
static int try_append (fx_t *fx, const cm_uuid_t *s, uint64_t first_seq, size_t count,
                       size_t size, uint64_t *last, const char **message)
{
    proto_bin_t *items = calloc (count, sizeof *items);
    uint8_t *data = malloc (count * size);
    assert_non_null (items);
    assert_non_null (data);
    for (size_t i = 0; i < count; i++) {
        fx_event (data + i * size, size, 'E', first_seq + i);
        items[i] = (proto_bin_t){data + i * size, size};
    }
    proto_events_append_t req = {
        .session = *s, .first_seq = first_seq, .events = {items, count}};
    fx_add (fx, PROTO_STORE_EVENTS_APPEND, &req);
    fx_run (fx);
    free (items);
    free (data);
    proto_msg_t *msg = fx_reply (fx, 0);
    if (msg->type == PROTO_ERROR) return fx_reply_err (fx, 0, message);
    proto_appended_t *ack = proto_body (msg, appended);
    assert_non_null (ack);
    *last = ack->last_seq;
    return 0;
}

static uint64_t append (fx_t *fx, const cm_uuid_t *s, uint64_t first_seq, size_t count,
                        size_t size)
{
    uint64_t last = 0;
    const char *msg = NULL;
    int rc = try_append (fx, s, first_seq, count, size, &last, &msg);
    if (rc) fail_msg ("append failed: %s", msg);
    return last;
}

static void assert_events (fx_t *fx, const cm_uuid_t *s, uint64_t count, size_t size)
{
    uint8_t *want = malloc (size);
    assert_non_null (want);
    uint64_t after = 0;
    while (after < count) {
        proto_events_reply_t *rep = fx_range (fx, s, after, 0);
        assert_int_equal (rep->last_seq, count);
        assert_true (rep->events.count > 0);
        for (size_t i = 0; i < rep->events.count; i++) {
            fx_event (want, size, 'E', after + 1 + i);
            assert_int_equal (rep->events.items[i].size, size);
            assert_memory_equal (rep->events.items[i].data, want, size);
        }
        after += rep->events.count;
    }
    free (want);
}

static void write_file (const char *path, const void *data, size_t size)
{
    int fd = open (path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true (fd >= 0);
    assert_int_equal (write (fd, data, size), (ssize_t)size);
    close (fd);
}

static void copy_file (const char *from, const char *to)
{
    FILE *in = fopen (from, "rb");
    FILE *out = fopen (to, "wb");
    assert_non_null (in);
    assert_non_null (out);
    char buf[65536];
    size_t n;
    while ((n = fread (buf, 1, sizeof buf, in)) > 0)
        assert_int_equal (fwrite (buf, 1, n, out), n);
    fclose (in);
    assert_int_equal (fclose (out), 0);
}

static char *new_dir (void)
{
    char *dir = strdup ("/tmp/corral-store-test-XXXXXX");
    assert_non_null (dir);
    assert_non_null (mkdtemp (dir));
    return dir;
}

static store_t *open_at (const char *dir, bool read_only, char *err, size_t errlen)
{
    store_opts_t opts = {.data_dir = dir,
                         .sync = STORE_SYNC_FULL,
                         .map_size = 1 * MiB,
                         .map_max = 8 * MiB,
                         .read_only = read_only};
    return store_open (&opts, err, errlen);
}

/* ---------------------------------------------------------------- */
/*  Backup                                                           */

//  A read-only store is read with LMDB directly (store_batch needs a write
//  transaction): the events database holds exactly seqs 1..count of s.
static void assert_copy_events (store_t *copy, const cm_uuid_t *s, uint64_t count,
                                size_t size)
{
    MDB_txn *txn;
    assert_int_equal (mdb_txn_begin (copy->env, NULL, MDB_RDONLY, &txn), 0);
    proto_store_stats_t st = {0};
    proto_db_stat_t dbs[STORE_DB_COUNT];
    assert_int_equal (store_stats (copy, txn, &st, dbs), 0);
    assert_int_equal (dbs[STORE_DB_EVENTS].entries, count);
    assert_string_equal (st.epoch, copy->epoch);

    MDB_cursor *cur;
    assert_int_equal (mdb_cursor_open (txn, copy->dbi[STORE_DB_EVENTS], &cur), 0);
    uint8_t *want = malloc (size);
    assert_non_null (want);
    MDB_val k, v;
    uint64_t seq = 0;
    while (mdb_cursor_get (cur, &k, &v, seq ? MDB_NEXT : MDB_FIRST) == 0) {
        seq++;
        assert_int_equal (k.mv_size, 24);
        assert_memory_equal (k.mv_data, s->b, 16);
        fx_event (want, size, 'E', seq);
        assert_int_equal (v.mv_size, size);
        assert_memory_equal (v.mv_data, want, size);
    }
    assert_int_equal (seq, count);
    free (want);
    mdb_cursor_close (cur);
    mdb_txn_abort (txn);
}

static void test_backup_opens_read_only (void **state)
{
    fx_t *fx = fx_new (0, 0);
    cm_uuid_t s;
    cm_uuid7 (&s);
    assert_int_equal (append (fx, &s, 1, 50, 300), 50);
    char epoch[CM_UUID_STR_LEN];
    snprintf (epoch, sizeof epoch, "%s", fx->store->epoch);

    char *out = new_dir ();
    char path[256];
    snprintf (path, sizeof path, "%s/backup.mdb", out);
    proto_backup_req_t req = {.path = path};
    proto_backup_reply_t *rep =
        fx_call (fx, PROTO_STORE_BACKUP, &req, PROTO_BACKUP_REPLY);
    assert_string_equal (rep->path, path);
    struct stat st;
    assert_int_equal (stat (path, &st), 0);
    assert_int_equal ((uint64_t)st.st_size, rep->bytes);
    assert_true (rep->bytes > 50 * 300);
    char partial[300];
    snprintf (partial, sizeof partial, "%s.partial", path);
    assert_int_not_equal (stat (partial, &st), 0);

    //  A second backup to the same path is refused, and leaves it alone.
    const char *msg;
    assert_int_equal (fx_call_err (fx, PROTO_STORE_BACKUP, &req, &msg), CM_E_CONFLICT);
    assert_non_null (strstr (msg, "exists"));

    //  The copy is a store: open it read-only where store_open looks.
    char *restore = new_dir ();
    char sdir[256], data[300];
    snprintf (sdir, sizeof sdir, "%s/store", restore);
    assert_int_equal (mkdir (sdir, 0700), 0);
    snprintf (data, sizeof data, "%s/data.mdb", sdir);
    copy_file (path, data);
    char err[512];
    store_t *copy = open_at (restore, true, err, sizeof err);
    if (!copy) fail_msg ("open the backup: %s", err);
    assert_string_equal (copy->epoch, epoch);
    assert_copy_events (copy, &s, 50, 300);
    store_close (&copy);

    fx_rm_rf (restore);
    fx_rm_rf (out);
    free (restore);
    free (out);
    fx_destroy (&fx);
}

static void test_backup_in_a_batch_runs_after_writes (void **state)
{
    //  A backup queued behind appends of the same batch contains them.
    fx_t *fx = fx_new (0, 0);
    cm_uuid_t s;
    cm_uuid7 (&s);
    char *out = new_dir ();
    char path[256];
    snprintf (path, sizeof path, "%s/b.mdb", out);
    proto_backup_req_t req = {.path = path};
    uint8_t ev[64];
    fx_event (ev, sizeof ev, 'E', 1);
    proto_bin_t one = {ev, sizeof ev};
    proto_events_append_t ap = {.session = s, .first_seq = 1, .events = {&one, 1}};
    fx_add (fx, PROTO_STORE_BACKUP, &req);
    fx_add (fx, PROTO_STORE_EVENTS_APPEND, &ap);
    fx_run (fx);
    assert_int_equal (fx_reply (fx, 0)->type, PROTO_BACKUP_REPLY);
    assert_int_equal (fx_reply (fx, 1)->type, PROTO_APPENDED);

    char *restore = new_dir ();
    char sdir[256], data[300], err[512];
    snprintf (sdir, sizeof sdir, "%s/store", restore);
    assert_int_equal (mkdir (sdir, 0700), 0);
    snprintf (data, sizeof data, "%s/data.mdb", sdir);
    copy_file (path, data);
    store_t *copy = open_at (restore, true, err, sizeof err);
    if (!copy) fail_msg ("open the backup: %s", err);
    assert_copy_events (copy, &s, 1, 64);
    store_close (&copy);
    store_close (&copy); //  idempotent
    fx_rm_rf (restore);
    fx_rm_rf (out);
    free (restore);
    free (out);
    fx_destroy (&fx);
}

/* ---------------------------------------------------------------- */
/*  Map size                                                         */

static void test_map_grows (void **state)
{
    fx_t *fx = fx_new (1 * MiB, 64 * MiB);
    cm_uuid_t a, b;
    cm_uuid7 (&a);
    cm_uuid7 (&b);
    uint64_t before = fx_stats (fx)->map_size;
    assert_int_equal (before, 1 * MiB);

    //  ~8 MB in batches of two requests, each about 512 KiB.
    uint64_t la = 0, lb = 0;
    for (int i = 0; i < 8; i++) {
        la = append (fx, &a, la + 1, 16, 32 * 1024);
        lb = append (fx, &b, lb + 1, 16, 32 * 1024);
    }
    assert_int_equal (la, 128);
    assert_int_equal (lb, 128);
    proto_store_stats_t *st = fx_stats (fx);
    assert_true (st->map_size > 8 * MiB);
    assert_true (st->map_size <= 64 * MiB);
    assert_true (st->map_used <= st->map_size);
    assert_int_equal (st->dbs.items[STORE_DB_EVENTS].entries, 256);
    assert_events (fx, &a, 128, 32 * 1024);
    assert_events (fx, &b, 128, 32 * 1024);
    fx_destroy (&fx);
}

static void test_map_full_keeps_serving (void **state)
{
    fx_t *fx = fx_new (1 * MiB, 1 * MiB);
    cm_uuid_t s, other;
    cm_uuid7 (&s);
    cm_uuid7 (&other);
    uint64_t last = 0;
    const char *msg = NULL;
    int rc = 0;
    for (int i = 0; i < 100 && rc == 0; i++)
        rc = try_append (fx, &s, last + 1, 2, 16 * 1024, &last, &msg);
    assert_int_equal (rc, CM_E_FULL);
    assert_non_null (strstr (msg, "maximum map size"));
    assert_true (last > 0);

    //  What was acknowledged is still there, and reads are served.
    assert_events (fx, &s, last, 16 * 1024);
    proto_store_stats_t *st = fx_stats (fx);
    assert_int_equal (st->map_size, 1 * MiB);
    assert_int_equal (st->dbs.items[STORE_DB_EVENTS].entries, last);

    //  A full request does not take its batch down: the small neighbours
    //  of a refused append are still served.
    uint8_t *big = malloc (STORE_MAX_EVENT);
    assert_non_null (big);
    memset (big, 'x', STORE_MAX_EVENT);
    proto_bin_t one_big = {big, STORE_MAX_EVENT};
    uint8_t small[8] = "tiny";
    proto_bin_t one_small = {small, sizeof small};
    proto_events_append_t ap_big = {
        .session = s, .first_seq = last + 1, .events = {&one_big, 1}};
    proto_events_append_t ap_small = {
        .session = other, .first_seq = 1, .events = {&one_small, 1}};
    proto_id_req_t get = {.id = other};
    fx_add (fx, PROTO_STORE_EVENTS_APPEND, &ap_big);
    fx_add (fx, PROTO_STORE_EVENTS_APPEND, &ap_small);
    fx_add (fx, PROTO_STORE_SESSION_GET, &get);
    fx_run (fx);
    assert_int_equal (fx_reply_err (fx, 0, NULL), CM_E_FULL);
    proto_appended_t *ack = proto_body (fx_reply (fx, 1), appended);
    assert_non_null (ack);
    assert_int_equal (ack->last_seq, 1);
    assert_int_equal (fx_reply_err (fx, 2, NULL), CM_E_NOT_FOUND);
    free (big);

    proto_events_reply_t *rep = fx_range (fx, &other, 0, 0);
    assert_int_equal (rep->events.count, 1);
    assert_memory_equal (rep->events.items[0].data, small, sizeof small);
    assert_int_equal (fx_range (fx, &s, 0, 0)->last_seq, last);
    fx_destroy (&fx);
}

/* ---------------------------------------------------------------- */
/*  Persistence and the epoch                                        */

static void test_reopen_keeps_data_and_epoch (void **state)
{
    fx_t *fx = fx_new (0, 0);
    fx->opts.sync = STORE_SYNC_FULL;
    fx_reopen (fx);
    cm_uuid_t s;
    cm_uuid7 (&s);
    assert_int_equal (append (fx, &s, 1, 10, 100), 10);
    proto_session_rec_t rec = {
        .id = s, .tenant = "t", .cwd = "/w", .state = "idle", .created_ms = 1};
    proto_session_put_t put = {.session = &rec};
    fx_call (fx, PROTO_STORE_SESSION_PUT, &put, PROTO_OK);
    char epoch[CM_UUID_STR_LEN];
    snprintf (epoch, sizeof epoch, "%s", fx_stats (fx)->epoch);

    fx_reopen (fx);
    assert_string_equal (fx_stats (fx)->epoch, epoch);
    proto_events_reply_t *rep = fx_range (fx, &s, 0, 0);
    assert_string_equal (rep->epoch, epoch);
    assert_events (fx, &s, 10, 100);
    proto_id_req_t get = {.id = s};
    proto_session_reply_t *sr =
        fx_call (fx, PROTO_STORE_SESSION_GET, &get, PROTO_SESSION);
    assert_string_equal (sr->session->state, "idle");
    //  Appending continues from the stored seq.
    assert_int_equal (append (fx, &s, 11, 1, 100), 11);

    //  Another data directory is another store: another epoch.
    fx_t *fresh = fx_new (0, 0);
    assert_string_not_equal (fx_stats (fresh)->epoch, epoch);
    assert_int_equal (fx_range (fresh, &s, 0, 0)->last_seq, 0);
    fx_destroy (&fresh);
    fx_destroy (&fx);
}

/* ---------------------------------------------------------------- */
/*  Schema and damaged files                                         */

//  Write meta "schema" directly with LMDB, as another build would have.
static void set_schema (const char *dir, const char *value)
{
    char path[256];
    snprintf (path, sizeof path, "%s/store", dir);
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi meta;
    assert_int_equal (mdb_env_create (&env), 0);
    assert_int_equal (mdb_env_set_maxdbs (env, 16), 0);
    assert_int_equal (mdb_env_open (env, path, 0, 0600), 0);
    assert_int_equal (mdb_txn_begin (env, NULL, 0, &txn), 0);
    assert_int_equal (mdb_dbi_open (txn, "meta", 0, &meta), 0);
    MDB_val k = {6, "schema"}, v = {strlen (value), (void *)value};
    assert_int_equal (mdb_put (txn, meta, &k, &v, 0), 0);
    assert_int_equal (mdb_txn_commit (txn), 0);
    mdb_env_close (env);
}

static void test_newer_schema_refused (void **state)
{
    char *dir = new_dir ();
    char err[512];
    store_t *st = open_at (dir, false, err, sizeof err);
    assert_non_null (st);
    store_close (&st);

    //  Pretend a newer build wrote the directory.
    set_schema (dir, "99");
    st = open_at (dir, false, err, sizeof err);
    assert_null (st);
    assert_non_null (strstr (err, "newer"));
    assert_non_null (strstr (err, "99"));
    //  A version that is not a number is damage, not a guess.
    set_schema (dir, "1x");
    st = open_at (dir, false, err, sizeof err);
    assert_null (st);
    assert_non_null (strstr (err, "not a number"));

    //  Back to this build's version: it opens again.
    char ver[16];
    snprintf (ver, sizeof ver, "%d", STORE_SCHEMA_VERSION);
    set_schema (dir, ver);
    st = open_at (dir, false, err, sizeof err);
    if (!st) fail_msg ("reopen: %s", err);
    store_close (&st);
    fx_rm_rf (dir);
    free (dir);
}

//  A schema 1 store (no usage_applied database) opens read-only as it is
//  (a backup of it works), and read-write it is migrated to this schema.
static void test_schema1_migrated (void **state)
{
    (void)state;
    char *dir = new_dir ();
    char err[512];
    store_t *st = open_at (dir, false, err, sizeof err);
    assert_non_null (st);
    store_close (&st);
    //  Make it what a schema 1 build left behind.
    char path[256];
    snprintf (path, sizeof path, "%s/store", dir);
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    assert_int_equal (mdb_env_create (&env), 0);
    assert_int_equal (mdb_env_set_maxdbs (env, 16), 0);
    assert_int_equal (mdb_env_open (env, path, 0, 0600), 0);
    assert_int_equal (mdb_txn_begin (env, NULL, 0, &txn), 0);
    assert_int_equal (mdb_dbi_open (txn, "usage_applied", 0, &dbi), 0);
    assert_int_equal (mdb_drop (txn, dbi, 1), 0);
    assert_int_equal (mdb_txn_commit (txn), 0);
    mdb_env_close (env);
    set_schema (dir, "1");

    st = open_at (dir, true, err, sizeof err);
    if (!st) fail_msg ("read-only open of schema 1: %s", err);
    assert_int_equal (mdb_txn_begin (st->env, NULL, MDB_RDONLY, &txn), 0);
    proto_store_stats_t stats = {0};
    proto_db_stat_t dbs[STORE_DB_COUNT];
    assert_int_equal (store_stats (st, txn, &stats, dbs), 0);
    assert_int_equal (dbs[STORE_DB_USAGE_APPLIED].entries, 0);
    mdb_txn_abort (txn);
    store_close (&st);

    st = open_at (dir, false, err, sizeof err);
    if (!st) fail_msg ("migrate: %s", err);
    assert_int_equal (mdb_txn_begin (st->env, NULL, MDB_RDONLY, &txn), 0);
    char ver[16];
    MDB_val k = {6, "schema"}, v;
    assert_int_equal (mdb_get (txn, st->dbi[STORE_DB_META], &k, &v), 0);
    snprintf (ver, sizeof ver, "%.*s", (int)v.mv_size, (const char *)v.mv_data);
    assert_int_equal (atoi (ver), STORE_SCHEMA_VERSION);
    MDB_stat ms;
    assert_int_equal (mdb_stat (txn, st->dbi[STORE_DB_USAGE_APPLIED], &ms), 0);
    mdb_txn_abort (txn);
    store_close (&st);
    fx_rm_rf (dir);
    free (dir);
}

static void test_garbage_file_refused (void **state)
{
    char *dir = new_dir ();
    char path[256];
    snprintf (path, sizeof path, "%s/store", dir);
    assert_int_equal (mkdir (path, 0700), 0);
    snprintf (path, sizeof path, "%s/store/data.mdb", dir);
    uint8_t junk[16384];
    assert_int_equal (cm_random (junk, sizeof junk), 0);
    write_file (path, junk, sizeof junk);

    char err[512];
    store_t *st = open_at (dir, false, err, sizeof err);
    assert_null (st);
    assert_non_null (strstr (err, "data.mdb"));
    assert_non_null (strstr (err, "restore a backup"));

    //  A short file, too.
    write_file (path, "not lmdb", 8);
    st = open_at (dir, false, err, sizeof err);
    assert_null (st);
    assert_non_null (strstr (err, "not a readable LMDB file"));
    fx_rm_rf (dir);
    free (dir);
}

static void test_read_only_missing_store (void **state)
{
    //  The backup tool pointed at an empty directory: an error, no crash,
    //  nothing created.
    char *dir = new_dir ();
    char err[512];
    store_t *st = open_at (dir, true, err, sizeof err);
    assert_null (st);
    assert_non_null (strstr (err, "cannot open the store"));
    struct stat sb;
    char path[256];
    snprintf (path, sizeof path, "%s/store", dir);
    assert_int_not_equal (stat (path, &sb), 0);
    fx_rm_rf (dir);
    free (dir);
}

int main (void)
{
    cm_log_init ("store-test", CM_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test (test_backup_opens_read_only),
        cmocka_unit_test (test_backup_in_a_batch_runs_after_writes),
        cmocka_unit_test (test_map_grows),
        cmocka_unit_test (test_map_full_keeps_serving),
        cmocka_unit_test (test_reopen_keeps_data_and_epoch),
        cmocka_unit_test (test_newer_schema_refused),
        cmocka_unit_test (test_schema1_migrated),
        cmocka_unit_test (test_garbage_file_refused),
        cmocka_unit_test (test_read_only_missing_store),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
