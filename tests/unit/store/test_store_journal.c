/*  test_store_journal.c - the event journal (store_journal.c): events wait
    in arrival order, are folded into `events` a session at a time, and
    reads, restarts, deletes and aborted transactions see exactly what was
    acknowledged wherever it lives.

    The other store tests run with journal_keep = 0 (every commit folds
    everything); these set it above zero so events stay in the journal.
*/
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>

#include "cm_id.h"
#include "cm_log.h"
#include "store_fixture.h"

#define MiB (1024u * 1024)

static void put_be64 (uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8) p[i] = (uint8_t)v;
}

//  Event buffers that outlive a batch's fx_run.
typedef struct {
    uint8_t *bufs[4096];
    proto_bin_t bins[4096];
    size_t n;
} pool_t;

static proto_bin_t *pool_events (pool_t *p, char tag, uint64_t first, size_t count,
                                 size_t size)
{
    assert_true (p->n + count <= 4096);
    proto_bin_t *out = &p->bins[p->n];
    for (size_t i = 0; i < count; i++) {
        uint8_t *b = malloc (size);
        assert_non_null (b);
        fx_event (b, size, tag, first + i);
        p->bufs[p->n] = b;
        p->bins[p->n++] = (proto_bin_t){b, size};
    }
    return out;
}

static void pool_free (pool_t *p)
{
    for (size_t i = 0; i < p->n; i++) free (p->bufs[i]);
    p->n = 0;
}

static uint64_t append (fx_t *fx, const cm_uuid_t *s, char tag, uint64_t first,
                        size_t count, size_t size)
{
    pool_t *p = calloc (1, sizeof *p);
    assert_non_null (p);
    uint64_t last =
        fx_append (fx, s, first, pool_events (p, tag, first, count, size), count);
    pool_free (p);
    free (p);
    return last;
}

//  One batch: counts[i] events of `size` bytes for session i (tag 'a' + i)
//  after last[i]; every ack must name the new last seq, which *last gets.
static void append_round (fx_t *fx, const cm_uuid_t *s, uint64_t *last, int sessions,
                          const size_t *counts, size_t size)
{
    pool_t *p = calloc (1, sizeof *p);
    assert_non_null (p);
    proto_events_append_t *ap = calloc ((size_t)sessions, sizeof *ap);
    assert_non_null (ap);
    for (int i = 0; i < sessions; i++) {
        ap[i] = (proto_events_append_t){
            .session = s[i],
            .first_seq = last[i] + 1,
            .events = {pool_events (p, (char)('a' + i), last[i] + 1, counts[i], size),
                       counts[i]}};
        fx_add (fx, PROTO_STORE_EVENTS_APPEND, &ap[i]);
    }
    fx_run (fx);
    for (int i = 0; i < sessions; i++) {
        last[i] += counts[i];
        proto_appended_t *ack = proto_body (fx_reply (fx, (size_t)i), appended);
        assert_non_null (ack);
        assert_int_equal (ack->last_seq, last[i]);
    }
    free (ap);
    pool_free (p);
    free (p);
}

//  Every event 1..last of s is there, in order, each exactly (tag, seq);
//  read in pages of `page` to cross the journal / `events` boundary.
static void assert_all (fx_t *fx, const cm_uuid_t *s, char tag, uint64_t last,
                        size_t size, uint64_t page)
{
    uint64_t after = 0;
    uint8_t *want = malloc (size);
    assert_non_null (want);
    while (after < last) {
        proto_events_reply_t *rep = fx_range (fx, s, after, page);
        assert_int_equal (rep->last_seq, last);
        assert_int_equal (rep->first_seq, after + 1);
        assert_true (rep->events.count > 0);
        for (size_t i = 0; i < rep->events.count; i++) {
            fx_event (want, size, tag, after + 1 + i);
            assert_int_equal (rep->events.items[i].size, size);
            assert_memory_equal (rep->events.items[i].data, want, size);
        }
        after += rep->events.count;
    }
    assert_int_equal (after, last);
    assert_int_equal (fx_range (fx, s, last, 0)->events.count, 0);
    free (want);
}

static fx_t *fx_keep (uint64_t keep, uint64_t map_size, uint64_t map_max)
{
    fx_t *fx = fx_new (map_size, map_max);
    fx->opts.journal_keep = keep;
    fx_reopen (fx);
    return fx;
}

/* ---------------------------------------------------------------- */

//  Under keep, everything stays in the journal and reads come from it.
static void test_events_wait_in_the_journal (void **state)
{
    (void)state;
    fx_t *fx = fx_keep (1000, 0, 0);
    cm_uuid_t a, b;
    cm_uuid7 (&a);
    cm_uuid7 (&b);
    for (uint64_t i = 0; i < 10; i++) {
        assert_int_equal (append (fx, &a, 'A', 1 + i * 5, 5, 40), 5 + i * 5);
        assert_int_equal (append (fx, &b, 'B', 1 + i * 3, 3, 90), 3 + i * 3);
    }
    assert_int_equal (fx_db_entries (fx, STORE_DB_JOURNAL), 80);
    assert_int_equal (fx_db_entries (fx, STORE_DB_EVENTS), 0);
    assert_all (fx, &a, 'A', 50, 40, 7);
    assert_all (fx, &b, 'B', 30, 90, 0);

    //  Resends are acknowledged, not rewritten; a gap is refused.
    assert_int_equal (append (fx, &a, 'X', 48, 3, 40), 50);
    assert_int_equal (append (fx, &a, 'A', 51, 1, 40), 51);
    pool_t *p = calloc (1, sizeof *p);
    proto_events_append_t gap = {
        .session = a, .first_seq = 53, .events = {pool_events (p, 'A', 53, 1, 40), 1}};
    const char *msg;
    assert_int_equal (fx_call_err (fx, PROTO_STORE_EVENTS_APPEND, &gap, &msg), CM_E_GAP);
    assert_non_null (strstr (msg, "resend from seq 52"));
    pool_free (p);
    free (p);
    assert_all (fx, &a, 'A', 51, 40, 0);
    fx_destroy (&fx);
}

//  Over keep, sessions are folded: everything is still read back in order,
//  across the boundary, and the journal stays near keep.
static void test_fold_keeps_the_journal_short (void **state)
{
    (void)state;
    fx_t *fx = fx_keep (64, 0, 0);
    enum { SESSIONS = 7, ROUNDS = 60 };
    cm_uuid_t s[SESSIONS];
    uint64_t last[SESSIONS] = {0};
    for (int i = 0; i < SESSIONS; i++) cm_uuid7 (&s[i]);
    for (int r = 0; r < ROUNDS; r++) {
        //  One batch per round: each session's next 1 + (r + i) % 3 events.
        size_t counts[SESSIONS];
        for (int i = 0; i < SESSIONS; i++) counts[i] = 1 + (size_t)(r + i) % 3;
        append_round (fx, s, last, SESSIONS, counts, 50);
        //  Each commit folds at least what it appended: never over keep.
        assert_true (fx->store->journal.unfolded <= 64);
        //  Reads in the middle of it all, with a page that crosses.
        if (r % 20 == 19)
            for (int i = 0; i < SESSIONS; i++)
                assert_all (fx, &s[i], (char)('a' + i), last[i], 50, 5);
    }
    uint64_t journal = fx_db_entries (fx, STORE_DB_JOURNAL);
    uint64_t events = fx_db_entries (fx, STORE_DB_EVENTS);
    assert_true (events > 0);
    assert_true (journal < SESSIONS * ROUNDS); //  folded entries were trimmed
    assert_int_equal (fx->store->journal.unfolded + events, SESSIONS * ROUNDS * 2);
    assert_true (fx->store->journal.folds > 0);

    //  After a restart the index is rebuilt from the journal.
    fx_reopen (fx);
    for (int i = 0; i < SESSIONS; i++)
        assert_all (fx, &s[i], (char)('a' + i), ROUNDS * 2, 50, 9);
    assert_int_equal (append (fx, &s[0], 'a', ROUNDS * 2 + 1, 1, 50), ROUNDS * 2 + 1);
    fx_destroy (&fx);
}

//  Kill -9 stands for a close without anything special: events in the
//  journal are there after reopen, and so is the order of later appends.
static void test_reopen_rebuilds_the_index (void **state)
{
    (void)state;
    fx_t *fx = fx_keep (100000, 0, 0);
    cm_uuid_t a, b;
    cm_uuid7 (&a);
    cm_uuid7 (&b);
    assert_int_equal (append (fx, &a, 'A', 1, 30, 20), 30);
    assert_int_equal (append (fx, &b, 'B', 1, 2, 20), 2);
    fx_reopen (fx);
    assert_int_equal (fx->store->journal.unfolded, 32);
    assert_all (fx, &a, 'A', 30, 20, 0);
    assert_int_equal (append (fx, &a, 'A', 31, 5, 20), 35);
    assert_all (fx, &a, 'A', 35, 20, 4);

    //  Now fold everything (keep 0) and reopen with a big keep again: the
    //  events are read from `events`, and new ones go to the journal after
    //  them.
    fx->opts.journal_keep = 0;
    fx_reopen (fx);
    assert_int_equal (append (fx, &b, 'B', 3, 1, 20), 3);
    assert_int_equal (fx->store->journal.unfolded, 0);
    assert_int_equal (fx_db_entries (fx, STORE_DB_EVENTS), 38);
    fx->opts.journal_keep = 100000;
    fx_reopen (fx);
    assert_int_equal (append (fx, &a, 'A', 36, 4, 20), 39);
    assert_all (fx, &a, 'A', 39, 20, 6);
    assert_all (fx, &b, 'B', 3, 20, 0);
    fx_destroy (&fx);
}

//  A big append skips the journal; the session's journaled events are
//  folded first, so `events` stays below the journal.
static void test_big_append_goes_straight_to_events (void **state)
{
    (void)state;
    fx_t *fx = fx_keep (100000, 0, 0);
    cm_uuid_t a;
    cm_uuid7 (&a);
    assert_int_equal (append (fx, &a, 'A', 1, 3, 100), 3); //  300 bytes: journal
    assert_int_equal (fx_db_entries (fx, STORE_DB_JOURNAL), 3);
    assert_int_equal (fx_db_entries (fx, STORE_DB_EVENTS), 0);
    //  STORE_JOURNAL_DIRECT bytes in one append: folded 1-3, then 4-23 direct.
    assert_int_equal (append (fx, &a, 'A', 4, 20, STORE_JOURNAL_DIRECT / 20 + 1), 23);
    assert_int_equal (fx_db_entries (fx, STORE_DB_EVENTS), 23);
    assert_int_equal (fx->store->journal.unfolded, 0);
    //  Small again: journal, after what is in `events`.
    assert_int_equal (append (fx, &a, 'A', 24, 2, 100), 25);
    assert_int_equal (fx->store->journal.unfolded, 2);
    proto_events_reply_t *rep = fx_range (fx, &a, 0, 0);
    assert_int_equal (rep->events.count, 25);
    assert_int_equal (rep->last_seq, 25);
    for (uint64_t seq = 1; seq <= 25; seq++) {
        size_t size = seq >= 4 && seq <= 23 ? STORE_JOURNAL_DIRECT / 20 + 1 : 100;
        uint8_t want[STORE_JOURNAL_DIRECT];
        fx_event (want, size, 'A', seq);
        assert_int_equal (rep->events.items[seq - 1].size, size);
        assert_memory_equal (rep->events.items[seq - 1].data, want, size);
    }
    fx_reopen (fx);
    assert_int_equal (fx->store->journal.unfolded, 2);
    assert_int_equal (fx_range (fx, &a, 0, 0)->events.count, 25);
    fx_destroy (&fx);
}

//  session.delete removes journaled events too; they do not come back
//  after a restart.
static void test_delete_drops_journaled_events (void **state)
{
    (void)state;
    fx_t *fx = fx_keep (1000, 0, 0);
    cm_uuid_t a, b;
    cm_uuid7 (&a);
    cm_uuid7 (&b);
    assert_int_equal (append (fx, &a, 'A', 1, 10, 30), 10);
    assert_int_equal (append (fx, &b, 'B', 1, 4, 30), 4);
    proto_id_req_t del = {.id = a};
    fx_call (fx, PROTO_STORE_SESSION_DELETE, &del, PROTO_OK);
    assert_int_equal (fx_range (fx, &a, 0, 0)->last_seq, 0);
    assert_int_equal (fx_range (fx, &a, 0, 0)->events.count, 0);
    assert_int_equal (fx_db_entries (fx, STORE_DB_JOURNAL), 4);
    fx_reopen (fx);
    assert_int_equal (fx_range (fx, &a, 0, 0)->last_seq, 0);
    assert_all (fx, &b, 'B', 4, 30, 0);
    //  The id can start again from 1.
    assert_int_equal (append (fx, &a, 'C', 1, 2, 30), 2);
    assert_all (fx, &a, 'C', 2, 30, 0);
    fx_destroy (&fx);
}

//  A session whose events were folded while an older journal entry of
//  another session holds the head back: its folded entries are still in
//  the journal.  Deleting it must take them too, or the next open would
//  read them as unfolded and bring the session back.
static void test_delete_after_fold_stays_deleted (void **state)
{
    (void)state;
    fx_t *fx = fx_keep (100000, 0, 0);
    cm_uuid_t a, s;
    cm_uuid7 (&a);
    cm_uuid7 (&s);
    assert_int_equal (append (fx, &a, 'A', 1, 1, 50), 1); //  holds the head
    assert_int_equal (append (fx, &s, 'S', 1, 3, 50), 3);
    //  A big append folds S's three journaled events, then goes direct.
    assert_int_equal (append (fx, &s, 'S', 4, 1, STORE_JOURNAL_DIRECT), 4);
    assert_int_equal (fx_db_entries (fx, STORE_DB_JOURNAL), 4); //  folded, not trimmed
    proto_id_req_t del = {.id = s};
    fx_call (fx, PROTO_STORE_SESSION_DELETE, &del, PROTO_OK);
    assert_int_equal (fx_db_entries (fx, STORE_DB_JOURNAL), 1);
    assert_int_equal (fx_range (fx, &s, 0, 0)->last_seq, 0);
    fx_reopen (fx);
    assert_int_equal (fx_range (fx, &s, 0, 0)->last_seq, 0);
    //  The id starts again from 1, and a restart reads it back right.
    assert_int_equal (append (fx, &s, 'T', 1, 2, 50), 2);
    fx_reopen (fx);
    assert_all (fx, &s, 'T', 2, 50, 0);
    assert_all (fx, &a, 'A', 1, 50, 0);
    fx_destroy (&fx);
}

//  A batch that fails at the LMDB level (the map is full) is aborted and
//  redone after growing the map: the index must forget what the aborted
//  transaction appended and folded.
static void test_aborted_batch_rolls_the_index_back (void **state)
{
    (void)state;
    fx_t *fx = fx_keep (16, 1 * MiB, 64 * MiB);
    //  Small events (under STORE_JOURNAL_DIRECT per append), so what the
    //  aborted batches appended and folded went through the journal.
    enum { SESSIONS = 4, PER = 8, SIZE = 200, ROUNDS = 400 };
    cm_uuid_t s[SESSIONS];
    uint64_t last[SESSIONS] = {0};
    for (int i = 0; i < SESSIONS; i++) cm_uuid7 (&s[i]);
    uint64_t grows = 0, folds_at_grow = 0;
    for (int r = 0; r < ROUNDS; r++) {
        size_t counts[SESSIONS] = {PER, PER, PER, PER};
        append_round (fx, s, last, SESSIONS, counts, SIZE);
        if (fx->store->grows > grows && !folds_at_grow)
            folds_at_grow = fx->store->journal.folds;
        grows = fx->store->grows;
    }
    assert_true (grows > 0);         //  the map grew, so batches were aborted and redone
    assert_true (folds_at_grow > 0); //  ... while folding was under way
    assert_true (fx->store->journal.unfolded > 0);
    for (int i = 0; i < SESSIONS; i++)
        assert_all (fx, &s[i], (char)('a' + i), last[i], SIZE, 13);
    fx_reopen (fx);
    for (int i = 0; i < SESSIONS; i++)
        assert_all (fx, &s[i], (char)('a' + i), last[i], SIZE, 0);
    fx_destroy (&fx);
}

//  The journal written by hand: an entry already folded (at or below the
//  last seq in `events`) is skipped at open; one out of order is refused
//  as damage, with a message that says so.
static void test_open_checks_the_journal (void **state)
{
    (void)state;
    fx_t *fx = fx_keep (0, 0, 0);
    cm_uuid_t a;
    cm_uuid7 (&a);
    assert_int_equal (append (fx, &a, 'A', 1, 3, 20), 3); //  folded: in `events`

    //  jid 100: seq 2 of a (folded, not trimmed); jid 102: seq 4 (new).
    store_t *st = fx->store;
    MDB_txn *txn;
    assert_int_equal (mdb_txn_begin (st->env, NULL, 0, &txn), 0);
    uint8_t key[8], val[24 + 20];
    for (uint64_t seq = 2; seq <= 4; seq += 2) {
        put_be64 (key, 98 + seq);
        memcpy (val, a.b, 16);
        put_be64 (val + 16, seq);
        fx_event (val + 24, 20, 'A', seq);
        MDB_val k = {8, key}, v = {sizeof val, val};
        assert_int_equal (mdb_put (txn, st->dbi[STORE_DB_JOURNAL], &k, &v, 0), 0);
    }
    assert_int_equal (mdb_txn_commit (txn), 0);
    fx->opts.journal_keep = 1000;
    fx_reopen (fx);
    assert_int_equal (fx->store->journal.unfolded, 1);
    assert_int_equal (fx->store->journal.next_jid, 103);
    assert_all (fx, &a, 'A', 4, 20, 0);

    //  seq 9 after seq 4: a hole.
    st = fx->store;
    assert_int_equal (mdb_txn_begin (st->env, NULL, 0, &txn), 0);
    put_be64 (key, 200);
    put_be64 (val + 16, 9);
    MDB_val k = {8, key}, v = {sizeof val, val};
    assert_int_equal (mdb_put (txn, st->dbi[STORE_DB_JOURNAL], &k, &v, 0), 0);
    assert_int_equal (mdb_txn_commit (txn), 0);
    store_close (&fx->store);
    char err[512];
    assert_null (store_open (&fx->opts, err, sizeof err));
    assert_non_null (strstr (err, "the journal holds seq 9"));
    assert_non_null (strstr (err, "damaged"));
    //  fx_destroy closes nothing more: reopen the directory fresh.
    fx_rm_rf (fx->dir);
    assert_int_equal (mkdir (fx->dir, 0700), 0);
    fx_reopen (fx);
    fx_destroy (&fx);
}

int main (void)
{
    cm_log_init ("test", CM_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test (test_events_wait_in_the_journal),
        cmocka_unit_test (test_fold_keeps_the_journal_short),
        cmocka_unit_test (test_reopen_rebuilds_the_index),
        cmocka_unit_test (test_big_append_goes_straight_to_events),
        cmocka_unit_test (test_delete_drops_journaled_events),
        cmocka_unit_test (test_delete_after_fold_stays_deleted),
        cmocka_unit_test (test_aborted_batch_rolls_the_index_back),
        cmocka_unit_test (test_open_checks_the_journal),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
