/*  test_store_ops.c - the store API through store_batch(), exactly as
    store_server.c drives it: encoded requests in, encoded replies out.

    Covers every handler of store_ops.c: events (append idempotency, gaps,
    limits, interleaved sessions, ranges), group commit of mixed batches,
    sessions, messages, tasks and their state index, templates, keys,
    usage, stats, and malformed requests inside a batch.
*/
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <msgpack.h>

#include "cm_log.h"
#include "cm_time.h"
#include "store_fixture.h"

/* ---------------------------------------------------------------- */
/*  Helpers                                                          */

//  A run of events with deterministic content (see fx_event).
typedef struct {
    proto_bin_t *items;
    size_t count;
} evs_t;

static evs_t evs_make (char tag, uint64_t first_seq, size_t count, size_t size)
{
    evs_t e = {calloc (count ? count : 1, sizeof (proto_bin_t)), count};
    assert_non_null (e.items);
    for (size_t i = 0; i < count; i++) {
        uint8_t *b = malloc (size);
        assert_non_null (b);
        fx_event (b, size, tag, first_seq + i);
        e.items[i] = (proto_bin_t){b, size};
    }
    return e;
}

static void evs_free (evs_t *e)
{
    for (size_t i = 0; i < e->count; i++) free ((void *)e->items[i].data);
    free (e->items);
    e->items = NULL;
    e->count = 0;
}

static uint64_t append (fx_t *fx, const cm_uuid_t *s, char tag, uint64_t first_seq,
                        size_t count, size_t size)
{
    evs_t e = evs_make (tag, first_seq, count, size);
    uint64_t last = fx_append (fx, s, first_seq, e.items, e.count);
    evs_free (&e);
    return last;
}

//  Check that events[i] of a range reply is exactly fx_event (tag, seq).
static void assert_event (const proto_bin_t *ev, char tag, uint64_t seq, size_t size)
{
    uint8_t *want = malloc (size);
    assert_non_null (want);
    fx_event (want, size, tag, seq);
    assert_int_equal (ev->size, size);
    assert_memory_equal (ev->data, want, size);
    free (want);
}

static int append_err (fx_t *fx, const cm_uuid_t *s, uint64_t first_seq,
                       const proto_bin_t *events, size_t count, const char **message)
{
    proto_events_append_t req = {
        .session = *s, .first_seq = first_seq, .events = {(proto_bin_t *)events, count}};
    return fx_call_err (fx, PROTO_STORE_EVENTS_APPEND, &req, message);
}

static void session_rec (proto_session_rec_t *rec, const cm_uuid_t *id,
                         const char *tenant, const char *state)
{
    *rec = (proto_session_rec_t){
        .id = *id,
        .tenant = tenant,
        .cwd = "/work/demo",
        .state = state,
        .created_ms = 1700000000000,
        .title = "a title",
        .model = "gpt-test",
        .last_seq = 7,
    };
}

static void put_session (fx_t *fx, const cm_uuid_t *id, const char *tenant)
{
    proto_session_rec_t rec;
    session_rec (&rec, id, tenant, "ready");
    proto_session_put_t req = {.session = &rec};
    fx_call (fx, PROTO_STORE_SESSION_PUT, &req, PROTO_OK);
}

static void put_messages (fx_t *fx, const cm_uuid_t *s, uint64_t from, const char **msgs,
                          size_t count)
{
    proto_messages_put_t req = {.session = *s, .from = from, .messages = {msgs, count}};
    fx_call (fx, PROTO_STORE_MESSAGES_PUT, &req, PROTO_OK);
}

static proto_messages_reply_t *get_messages (fx_t *fx, const cm_uuid_t *s)
{
    proto_messages_get_t req = {.session = *s};
    proto_messages_reply_t *rep =
        fx_call (fx, PROTO_STORE_MESSAGES_GET, &req, PROTO_MESSAGES);
    assert_memory_equal (rep->session.b, s->b, 16);
    return rep;
}

static void assert_messages (fx_t *fx, const cm_uuid_t *s, const char **want,
                             size_t count)
{
    proto_messages_reply_t *rep = get_messages (fx, s);
    assert_int_equal (rep->messages.count, count);
    for (size_t i = 0; i < count; i++)
        assert_string_equal (rep->messages.items[i], want[i]);
}

static int setup (void **state)
{
    *state = fx_new (0, 0);
    return 0;
}

static int teardown (void **state)
{
    fx_t *fx = *state;
    fx_destroy (&fx);
    return 0;
}

/* ---------------------------------------------------------------- */
/*  events.append                                                    */

static void test_append_acks_last_seq (void **state)
{
    fx_t *fx = *state;
    cm_uuid_t s;
    cm_uuid7 (&s);
    assert_int_equal (append (fx, &s, 'A', 1, 3, 40), 3);
    assert_int_equal (append (fx, &s, 'A', 4, 2, 40), 5);

    proto_events_reply_t *rep = fx_range (fx, &s, 0, 0);
    assert_int_equal (rep->first_seq, 1);
    assert_int_equal (rep->last_seq, 5);
    assert_int_equal (rep->events.count, 5);
    for (uint64_t seq = 1; seq <= 5; seq++)
        assert_event (&rep->events.items[seq - 1], 'A', seq, 40);
    assert_int_equal (fx_db_entries (fx, STORE_DB_EVENTS), 5);
}

static void test_append_resend_is_idempotent (void **state)
{
    fx_t *fx = *state;
    cm_uuid_t s;
    cm_uuid7 (&s);
    assert_int_equal (append (fx, &s, 'A', 1, 5, 32), 5);

    //  The same range again, with different bytes: acknowledged, not rewritten.
    assert_int_equal (append (fx, &s, 'X', 1, 5, 32), 5);
    //  A run inside what is stored: the ack still names the highest seq.
    assert_int_equal (append (fx, &s, 'X', 2, 2, 32), 5);
    //  Overlapping the end: only 6 and 7 are new.
    assert_int_equal (append (fx, &s, 'X', 4, 4, 32), 7);
    //  An empty append acknowledges what is there.
    assert_int_equal (fx_append (fx, &s, 8, NULL, 0), 7);

    proto_events_reply_t *rep = fx_range (fx, &s, 0, 0);
    assert_int_equal (rep->events.count, 7);
    assert_int_equal (rep->last_seq, 7);
    for (uint64_t seq = 1; seq <= 5; seq++)
        assert_event (&rep->events.items[seq - 1], 'A', seq, 32);
    assert_event (&rep->events.items[5], 'X', 6, 32);
    assert_event (&rep->events.items[6], 'X', 7, 32);
    assert_int_equal (fx_db_entries (fx, STORE_DB_EVENTS), 7);
}

static void test_append_gap_refused (void **state)
{
    fx_t *fx = *state;
    cm_uuid_t s, empty;
    cm_uuid7 (&s);
    cm_uuid7 (&empty);
    assert_int_equal (append (fx, &s, 'A', 1, 3, 16), 3);

    evs_t e = evs_make ('A', 5, 2, 16);
    const char *msg;
    assert_int_equal (append_err (fx, &s, 5, e.items, e.count, &msg), CM_E_GAP);
    assert_non_null (strstr (msg, "resend from seq 4"));
    evs_free (&e);
    //  Nothing was written: the session still ends at 3.
    proto_events_reply_t *rep = fx_range (fx, &s, 0, 0);
    assert_int_equal (rep->last_seq, 3);
    assert_int_equal (rep->events.count, 3);

    //  A session with nothing stored must start at 1.
    e = evs_make ('B', 2, 1, 16);
    assert_int_equal (append_err (fx, &empty, 2, e.items, e.count, &msg), CM_E_GAP);
    assert_non_null (strstr (msg, "resend from seq 1"));
    evs_free (&e);
    assert_int_equal (fx_range (fx, &empty, 0, 0)->last_seq, 0);
}

static void test_append_refuses_bad_events (void **state)
{
    fx_t *fx = *state;
    cm_uuid_t s;
    cm_uuid7 (&s);
    const char *msg;

    evs_t e = evs_make ('A', 0, 1, 16);
    assert_int_equal (append_err (fx, &s, 0, e.items, e.count, &msg), CM_E_INVALID);
    assert_non_null (strstr (msg, "first_seq"));
    evs_free (&e);

    //  An empty event anywhere refuses the whole request: nothing is written.
    proto_bin_t two[2] = {{(const uint8_t *)"ok", 2}, {(const uint8_t *)"", 0}};
    assert_int_equal (append_err (fx, &s, 1, two, 2, &msg), CM_E_INVALID);
    assert_int_equal (fx_range (fx, &s, 0, 0)->last_seq, 0);

    //  At the limit: stored.  Just past it: too large.
    uint8_t *big = malloc (STORE_MAX_EVENT + 1);
    assert_non_null (big);
    fx_event (big, STORE_MAX_EVENT + 1, 'L', 1);
    proto_bin_t over = {big, STORE_MAX_EVENT + 1};
    assert_int_equal (append_err (fx, &s, 1, &over, 1, &msg), CM_E_TOO_LARGE);
    assert_non_null (strstr (msg, "1048577 bytes"));
    assert_int_equal (fx_range (fx, &s, 0, 0)->last_seq, 0);

    proto_bin_t at = {big, STORE_MAX_EVENT};
    assert_int_equal (fx_append (fx, &s, 1, &at, 1), 1);
    proto_events_reply_t *rep = fx_range (fx, &s, 0, 0);
    assert_int_equal (rep->events.count, 1);
    assert_int_equal (rep->events.items[0].size, STORE_MAX_EVENT);
    assert_memory_equal (rep->events.items[0].data, big, STORE_MAX_EVENT);
    free (big);
}

//  store.events.append_batch: many sessions' appends in one request, each
//  answered as events.append would answer it, in order, one refusal
//  touching only its own session.
static void test_append_batch (void **state)
{
    fx_t *fx = *state;
    cm_uuid_t a, b, c;
    cm_uuid7 (&a);
    cm_uuid7 (&b);
    cm_uuid7 (&c);
    assert_int_equal (append (fx, &b, 'B', 1, 2, 24), 2);

    evs_t a1 = evs_make ('A', 1, 3, 24), b3 = evs_make ('B', 3, 2, 24);
    evs_t c4 = evs_make ('C', 4, 1, 24), a4 = evs_make ('A', 4, 1, 24);
    evs_t b1 = evs_make ('X', 1, 2, 24);
    evs_t big = evs_make ('A', 9, 1, STORE_MAX_EVENT + 1); //  one byte too many
    proto_events_append_t apps[] = {
        {.session = a, .first_seq = 1, .events = {a1.items, a1.count}},
        {.session = b, .first_seq = 3, .events = {b3.items, b3.count}},
        {.session = c, .first_seq = 4, .events = {c4.items, c4.count}}, //  gap
        {.session = a, .first_seq = 4, .events = {a4.items, a4.count}}, //  after [0]
        {.session = b, .first_seq = 1, .events = {b1.items, b1.count}}, //  a resend
        {.session = a, .first_seq = 9, .events = {big.items, big.count}},
    };
    proto_append_batch_t req = {.appends = {apps, 6}};
    proto_appended_batch_t *rep =
        fx_call (fx, PROTO_STORE_EVENTS_APPEND_BATCH, &req, PROTO_APPENDED_BATCH);
    assert_int_equal (rep->results.count, 6);
    const proto_append_result_t *r = rep->results.items;
    assert_memory_equal (r[0].session.b, a.b, 16);
    assert_int_equal (r[0].code, 0);
    assert_int_equal (r[0].last_seq, 3);
    assert_int_equal (r[1].code, 0);
    assert_int_equal (r[1].last_seq, 4);
    assert_memory_equal (r[2].session.b, c.b, 16);
    assert_int_equal (r[2].code, CM_E_GAP);
    assert_non_null (strstr (r[2].message, "resend from seq 1"));
    assert_int_equal (r[3].code, 0);
    assert_int_equal (r[3].last_seq, 4);
    assert_int_equal (r[4].code, 0); //  already stored: acknowledged, not rewritten
    assert_int_equal (r[4].last_seq, 4);
    assert_int_equal (r[5].code, CM_E_TOO_LARGE);
    assert_int_equal (r[5].last_seq, 0);

    proto_events_reply_t *range = fx_range (fx, &a, 0, 0);
    assert_int_equal (range->events.count, 4);
    for (uint64_t seq = 1; seq <= 4; seq++)
        assert_event (&range->events.items[seq - 1], 'A', seq, 24);
    range = fx_range (fx, &b, 0, 0);
    assert_int_equal (range->events.count, 4);
    for (uint64_t seq = 1; seq <= 4; seq++)
        assert_event (&range->events.items[seq - 1], 'B', seq, 24);
    assert_int_equal (fx_range (fx, &c, 0, 0)->events.count, 0);
    assert_int_equal (fx_db_entries (fx, STORE_DB_EVENTS), 8);

    //  An empty batch is answered with no results.
    proto_append_batch_t none = {0};
    rep = fx_call (fx, PROTO_STORE_EVENTS_APPEND_BATCH, &none, PROTO_APPENDED_BATCH);
    assert_int_equal (rep->results.count, 0);
    evs_free (&a1), evs_free (&b3), evs_free (&c4), evs_free (&a4), evs_free (&b1);
    evs_free (&big);
}

static void test_sessions_interleaved (void **state)
{
    fx_t *fx = *state;
    //  UUIDv7 ids sort by creation: c < a < b in the events database.
    cm_uuid_t c, a, b;
    cm_uuid7 (&c);
    cm_uuid7 (&a);
    cm_uuid7 (&b);

    //  One batch with the sessions interleaved.
    evs_t a1 = evs_make ('a', 1, 2, 24), b1 = evs_make ('b', 1, 3, 24);
    evs_t a2 = evs_make ('a', 3, 2, 24), b2 = evs_make ('b', 4, 1, 24);
    proto_events_append_t reqs[4] = {
        {.session = a, .first_seq = 1, .events = {a1.items, a1.count}},
        {.session = b, .first_seq = 1, .events = {b1.items, b1.count}},
        {.session = a, .first_seq = 3, .events = {a2.items, a2.count}},
        {.session = b, .first_seq = 4, .events = {b2.items, b2.count}},
    };
    for (int i = 0; i < 4; i++) fx_add (fx, PROTO_STORE_EVENTS_APPEND, &reqs[i]);
    fx_run (fx);
    const uint64_t want_last[4] = {2, 3, 4, 4};
    for (size_t i = 0; i < 4; i++) {
        proto_appended_t *ack = proto_body (fx_reply (fx, i), appended);
        assert_non_null (ack);
        assert_memory_equal (ack->session.b, reqs[i].session.b, 16);
        assert_int_equal (ack->last_seq, want_last[i]);
    }
    evs_free (&a1);
    evs_free (&b1);
    evs_free (&a2);
    evs_free (&b2);
    assert_int_equal (append (fx, &a, 'a', 5, 1, 24), 5);

    //  c has nothing although its neighbour a does: it must start at 1.
    evs_t e = evs_make ('c', 2, 1, 24);
    assert_int_equal (append_err (fx, &c, 2, e.items, 1, NULL), CM_E_GAP);
    evs_free (&e);
    assert_int_equal (append (fx, &c, 'c', 1, 2, 24), 2);

    proto_events_reply_t *rep = fx_range (fx, &a, 0, 0);
    assert_int_equal (rep->last_seq, 5);
    assert_int_equal (rep->events.count, 5);
    for (uint64_t seq = 1; seq <= 5; seq++)
        assert_event (&rep->events.items[seq - 1], 'a', seq, 24);
    rep = fx_range (fx, &b, 0, 0);
    assert_int_equal (rep->last_seq, 4);
    assert_int_equal (rep->events.count, 4);
    for (uint64_t seq = 1; seq <= 4; seq++)
        assert_event (&rep->events.items[seq - 1], 'b', seq, 24);
    rep = fx_range (fx, &c, 0, 0);
    assert_int_equal (rep->last_seq, 2);
    assert_int_equal (rep->events.count, 2);
    assert_event (&rep->events.items[1], 'c', 2, 24);
}

/* ---------------------------------------------------------------- */
/*  events.range                                                     */

static void test_range_after_and_limit (void **state)
{
    fx_t *fx = *state;
    cm_uuid_t s;
    cm_uuid7 (&s);
    assert_int_equal (append (fx, &s, 'R', 1, 1500, 16), 1500);
    char epoch[CM_UUID_STR_LEN];
    snprintf (epoch, sizeof epoch, "%s", fx_stats (fx)->epoch);
    assert_int_equal (strlen (epoch), 36);

    //  No limit: the default page.
    proto_events_reply_t *rep = fx_range (fx, &s, 0, 0);
    assert_int_equal (rep->events.count, STORE_RANGE_DEFAULT);
    assert_int_equal (rep->first_seq, 1);
    assert_int_equal (rep->last_seq, 1500);
    assert_string_equal (rep->epoch, epoch);
    assert_event (&rep->events.items[999], 'R', 1000, 16);

    //  The rest, after a seq.
    rep = fx_range (fx, &s, 1000, 0);
    assert_int_equal (rep->events.count, 500);
    assert_int_equal (rep->first_seq, 1001);
    assert_event (&rep->events.items[0], 'R', 1001, 16);
    assert_event (&rep->events.items[499], 'R', 1500, 16);

    //  A small limit in the middle.
    rep = fx_range (fx, &s, 10, 7);
    assert_int_equal (rep->events.count, 7);
    assert_int_equal (rep->first_seq, 11);
    for (uint64_t i = 0; i < 7; i++)
        assert_event (&rep->events.items[i], 'R', 11 + i, 16);

    //  At and past the end: nothing, but last_seq tells where the end is.
    rep = fx_range (fx, &s, 1500, 0);
    assert_int_equal (rep->events.count, 0);
    assert_int_equal (rep->last_seq, 1500);
    rep = fx_range (fx, &s, 99999, 0);
    assert_int_equal (rep->events.count, 0);
    assert_int_equal (rep->last_seq, 1500);
    rep = fx_range (fx, &s, UINT64_MAX, 0);
    assert_int_equal (rep->events.count, 0);
}

static void test_range_limit_clamped (void **state)
{
    fx_t *fx = *state;
    cm_uuid_t s;
    cm_uuid7 (&s);
    assert_int_equal (append (fx, &s, 'M', 1, STORE_RANGE_MAX + 5, 8),
                      STORE_RANGE_MAX + 5);
    proto_events_reply_t *rep = fx_range (fx, &s, 0, STORE_RANGE_MAX + 1);
    assert_int_equal (rep->events.count, STORE_RANGE_MAX);
    assert_int_equal (rep->last_seq, STORE_RANGE_MAX + 5);
    rep = fx_range (fx, &s, 0, UINT64_MAX);
    assert_int_equal (rep->events.count, STORE_RANGE_MAX);
    assert_event (&rep->events.items[STORE_RANGE_MAX - 1], 'M', STORE_RANGE_MAX, 8);
    rep = fx_range (fx, &s, 3, STORE_RANGE_MAX);
    assert_int_equal (rep->events.count, STORE_RANGE_MAX);
    assert_event (&rep->events.items[STORE_RANGE_MAX - 1], 'M', STORE_RANGE_MAX + 3, 8);
}

static void test_range_unknown_session (void **state)
{
    fx_t *fx = *state;
    cm_uuid_t before, unknown, after;
    cm_uuid7 (&before);
    cm_uuid7 (&unknown);
    cm_uuid7 (&after);
    append (fx, &before, 'x', 1, 3, 8);
    append (fx, &after, 'y', 1, 3, 8);
    proto_events_reply_t *rep = fx_range (fx, &unknown, 0, 0);
    assert_int_equal (rep->events.count, 0);
    assert_int_equal (rep->last_seq, 0);
    assert_int_equal (strlen (rep->epoch), 36);
}

static void test_range_exact_bytes (void **state)
{
    fx_t *fx = *state;
    cm_uuid_t s;
    cm_uuid7 (&s);
    const size_t sizes[] = {1, 2, 255, 256, 4096, 70000};
    enum { N = sizeof sizes / sizeof sizes[0] };
    proto_bin_t evs[N];
    for (size_t i = 0; i < N; i++) {
        uint8_t *b = malloc (sizes[i]);
        assert_non_null (b);
        for (size_t j = 0; j < sizes[i]; j++) b[j] = (uint8_t)(j % 3 ? 0xff : 0x00) ^ i;
        evs[i] = (proto_bin_t){b, sizes[i]};
    }
    assert_int_equal (fx_append (fx, &s, 1, evs, N), N);
    proto_events_reply_t *rep = fx_range (fx, &s, 0, 0);
    assert_int_equal (rep->events.count, N);
    for (size_t i = 0; i < N; i++) {
        assert_int_equal (rep->events.items[i].size, sizes[i]);
        assert_memory_equal (rep->events.items[i].data, evs[i].data, sizes[i]);
        free ((void *)evs[i].data);
    }
}

//  A range reply must stay within what a peer's decoder accepts
//  (PROTO_MAX_MSG), even when the events are large; the client pages on
//  from first_seq + count.
static void test_range_reply_fits_a_message (void **state)
{
    fx_t *fx = *state;
    cm_uuid_t s;
    cm_uuid7 (&s);
    const size_t total = PROTO_MAX_MSG / STORE_MAX_EVENT + 8; //  > 64 MiB of events
    for (uint64_t seq = 1; seq <= total; seq += 16) {
        size_t n = total - seq + 1 < 16 ? total - seq + 1 : 16;
        assert_int_equal (append (fx, &s, 'G', seq, n, STORE_MAX_EVENT), seq + n - 1);
    }
    uint64_t after = 0;
    int pages = 0;
    while (after < total) {
        proto_events_reply_t *rep = fx_range (fx, &s, after, 0); //  decodes: fits
        assert_true (fx->batch[0].reply_len <= PROTO_MAX_MSG);
        assert_int_equal (rep->last_seq, total);
        assert_int_equal (rep->first_seq, after + 1);
        assert_true (rep->events.count >= 1);
        for (size_t i = 0; i < rep->events.count; i++)
            assert_event (&rep->events.items[i], 'G', after + 1 + i, STORE_MAX_EVENT);
        after += rep->events.count;
        pages++;
    }
    assert_int_equal (after, total);
    assert_true (pages >= 2);
}

/* ---------------------------------------------------------------- */
/*  Group commit                                                     */

static void test_mixed_batch (void **state)
{
    fx_t *fx = *state;
    cm_uuid_t a, b, c, nobody;
    cm_uuid7 (&a);
    cm_uuid7 (&b);
    cm_uuid7 (&c);
    cm_uuid7 (&nobody);
    uint64_t commits = fx_stats (fx)->commits;

    evs_t a1 = evs_make ('a', 1, 3, 20), b1 = evs_make ('b', 1, 2, 20);
    evs_t c5 = evs_make ('c', 5, 1, 20), a4 = evs_make ('a', 4, 2, 20);
    evs_t b3 = evs_make ('b', 3, 1, 20);
    proto_events_append_t ap_a1 = {.session = a, .first_seq = 1, .events = {a1.items, 3}};
    proto_events_append_t ap_b1 = {.session = b, .first_seq = 1, .events = {b1.items, 2}};
    proto_events_append_t ap_c5 = {.session = c, .first_seq = 5, .events = {c5.items, 1}};
    proto_events_append_t ap_a4 = {.session = a, .first_seq = 4, .events = {a4.items, 2}};
    proto_events_append_t ap_b3 = {.session = b, .first_seq = 3, .events = {b3.items, 1}};
    proto_events_range_t rg_a = {.session = a, .after_seq = 0};
    proto_session_rec_t rec;
    session_rec (&rec, &a, "t1", "running");
    proto_session_put_t sp = {.session = &rec};
    proto_id_req_t get_a = {.id = a}, get_nobody = {.id = nobody};

    fx_add (fx, PROTO_STORE_EVENTS_APPEND, &ap_a1);    //  0
    fx_add (fx, PROTO_STORE_EVENTS_APPEND, &ap_b1);    //  1
    fx_add (fx, PROTO_STORE_EVENTS_RANGE, &rg_a);      //  2 sees 0
    fx_add (fx, PROTO_STORE_EVENTS_APPEND, &ap_c5);    //  3 refused: gap
    fx_add (fx, PROTO_STORE_EVENTS_APPEND, &ap_a4);    //  4
    fx_add (fx, PROTO_STORE_SESSION_PUT, &sp);         //  5
    fx_add (fx, PROTO_STORE_SESSION_GET, &get_a);      //  6 sees 5
    fx_add (fx, PROTO_STORE_STATS, NULL);              //  7
    fx_add (fx, PROTO_STORE_EVENTS_APPEND, &ap_b3);    //  8
    fx_add (fx, PROTO_STORE_SESSION_GET, &get_nobody); // 9 refused: not found
    fx_run (fx);

    proto_appended_t *ack = proto_body (fx_reply (fx, 0), appended);
    assert_non_null (ack);
    assert_int_equal (ack->last_seq, 3);
    ack = proto_body (fx_reply (fx, 1), appended);
    assert_non_null (ack);
    assert_int_equal (ack->last_seq, 2);
    proto_events_reply_t *rep = proto_body (fx_reply (fx, 2), events_reply);
    assert_non_null (rep);
    assert_int_equal (rep->events.count, 3);
    assert_event (&rep->events.items[2], 'a', 3, 20);
    const char *msg;
    assert_int_equal (fx_reply_err (fx, 3, &msg), CM_E_GAP);
    assert_non_null (strstr (msg, "resend from seq 1"));
    ack = proto_body (fx_reply (fx, 4), appended);
    assert_non_null (ack);
    assert_int_equal (ack->last_seq, 5);
    assert_int_equal (fx_reply (fx, 5)->type, PROTO_OK);
    proto_session_reply_t *sr = proto_body (fx_reply (fx, 6), session_reply);
    assert_non_null (sr);
    assert_string_equal (sr->session->state, "running");
    assert_non_null (proto_body (fx_reply (fx, 7), store_stats));
    ack = proto_body (fx_reply (fx, 8), appended);
    assert_non_null (ack);
    assert_int_equal (ack->last_seq, 3);
    assert_int_equal (fx_reply_err (fx, 9, NULL), CM_E_NOT_FOUND);
    evs_free (&a1);
    evs_free (&b1);
    evs_free (&c5);
    evs_free (&a4);
    evs_free (&b3);

    //  Everything but the refused ones is durable, in one commit.
    assert_int_equal (fx_stats (fx)->commits, commits + 1);
    assert_int_equal (fx_range (fx, &a, 0, 0)->last_seq, 5);
    assert_int_equal (fx_range (fx, &b, 0, 0)->last_seq, 3);
    assert_int_equal (fx_range (fx, &c, 0, 0)->last_seq, 0);
}

static void test_many_appends_one_batch (void **state)
{
    fx_t *fx = *state;
    enum { SESSIONS = 20, EACH = 10 };
    cm_uuid_t ids[SESSIONS];
    for (int s = 0; s < SESSIONS; s++) cm_uuid7 (&ids[s]);
    uint64_t commits = fx_stats (fx)->commits;

    //  Round robin: every request appends one event to the next session.
    evs_t evs[SESSIONS * EACH];
    proto_events_append_t reqs[SESSIONS * EACH];
    for (int k = 0; k < EACH; k++)
        for (int s = 0; s < SESSIONS; s++) {
            int i = k * SESSIONS + s;
            evs[i] = evs_make ((char)('A' + s), (uint64_t)k + 1, 1, 12);
            reqs[i] = (proto_events_append_t){.session = ids[s],
                                              .first_seq = (uint64_t)k + 1,
                                              .events = {evs[i].items, 1}};
            fx_add (fx, PROTO_STORE_EVENTS_APPEND, &reqs[i]);
        }
    fx_run (fx);
    for (int i = 0; i < SESSIONS * EACH; i++) {
        proto_appended_t *ack = proto_body (fx_reply (fx, (size_t)i), appended);
        assert_non_null (ack);
        assert_memory_equal (ack->session.b, reqs[i].session.b, 16);
        assert_int_equal (ack->last_seq, reqs[i].first_seq);
        evs_free (&evs[i]);
    }
    assert_int_equal (fx_stats (fx)->commits, commits + 1);
    for (int s = 0; s < SESSIONS; s++) {
        proto_events_reply_t *rep = fx_range (fx, &ids[s], 0, 0);
        assert_int_equal (rep->events.count, EACH);
        for (int k = 0; k < EACH; k++)
            assert_event (&rep->events.items[k], (char)('A' + s), (uint64_t)k + 1, 12);
    }
}

/* ---------------------------------------------------------------- */
/*  Sessions                                                         */

static void test_session_put_get (void **state)
{
    fx_t *fx = *state;
    cm_uuid_t id, unknown;
    cm_uuid7 (&id);
    cm_uuid7 (&unknown);
    proto_usage_t usage = {.input_tokens = 11, .output_tokens = 22, .cost_micros = 33};
    proto_session_rec_t rec;
    session_rec (&rec, &id, "acme", "ready");
    rec.usage = &usage;
    rec.resumable = true;
    proto_session_put_t put = {.session = &rec};
    fx_call (fx, PROTO_STORE_SESSION_PUT, &put, PROTO_OK);

    proto_id_req_t get = {.id = id};
    proto_session_reply_t *rep =
        fx_call (fx, PROTO_STORE_SESSION_GET, &get, PROTO_SESSION);
    assert_memory_equal (rep->session->id.b, id.b, 16);
    assert_string_equal (rep->session->tenant, "acme");
    assert_string_equal (rep->session->cwd, "/work/demo");
    assert_string_equal (rep->session->state, "ready");
    assert_string_equal (rep->session->title, "a title");
    assert_int_equal (rep->session->created_ms, 1700000000000);
    assert_int_equal (rep->session->last_seq, 7);
    assert_true (rep->session->resumable);
    assert_non_null (rep->session->usage);
    assert_int_equal (rep->session->usage->output_tokens, 22);

    //  A put replaces the record.
    rec.state = "hibernated";
    rec.usage = NULL;
    fx_call (fx, PROTO_STORE_SESSION_PUT, &put, PROTO_OK);
    rep = fx_call (fx, PROTO_STORE_SESSION_GET, &get, PROTO_SESSION);
    assert_string_equal (rep->session->state, "hibernated");
    assert_null (rep->session->usage);
    assert_int_equal (fx_db_entries (fx, STORE_DB_SESSIONS), 1);

    get.id = unknown;
    const char *msg;
    assert_int_equal (fx_call_err (fx, PROTO_STORE_SESSION_GET, &get, &msg),
                      CM_E_NOT_FOUND);
    assert_non_null (strstr (msg, "no such"));
}

/*  A newer peer's record carries a field this build does not know: the
    store must keep it and hand it back (get and list), not drop it by
    re-encoding its own struct.  */
static bool has_bytes (const void *hay, size_t n, const char *needle)
{
    return memmem (hay, n, needle, strlen (needle)) != NULL;
}

static void test_unknown_record_fields_survive (void **state)
{
    fx_t *fx = *state;
    cm_uuid_t id;
    cm_uuid7 (&id);
    //  session.put with {session: {id, tenant, cwd, state, created_ms,
    //  from_the_future: "kept"}} packed by hand.
    msgpack_sbuffer sb;
    msgpack_sbuffer_init (&sb);
    msgpack_packer pk;
    msgpack_packer_init (&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_array (&pk, 4);
    msgpack_pack_uint32 (&pk, PROTO_VERSION);
    msgpack_pack_uint32 (&pk, PROTO_STORE_SESSION_PUT);
    msgpack_pack_uint64 (&pk, 777);
    msgpack_pack_map (&pk, 1);
    msgpack_pack_str_with_body (&pk, "session", 7);
    msgpack_pack_map (&pk, 6);
    msgpack_pack_str_with_body (&pk, "id", 2);
    msgpack_pack_bin_with_body (&pk, id.b, 16);
    msgpack_pack_str_with_body (&pk, "tenant", 6);
    msgpack_pack_str_with_body (&pk, "acme", 4);
    msgpack_pack_str_with_body (&pk, "cwd", 3);
    msgpack_pack_str_with_body (&pk, "/w", 2);
    msgpack_pack_str_with_body (&pk, "state", 5);
    msgpack_pack_str_with_body (&pk, "ready", 5);
    msgpack_pack_str_with_body (&pk, "created_ms", 10);
    msgpack_pack_uint64 (&pk, 1);
    msgpack_pack_str_with_body (&pk, "from_the_future", 15);
    msgpack_pack_str_with_body (&pk, "kept", 4);
    fx_add_raw (fx, sb.data, sb.size);
    fx_run (fx);
    assert_int_equal (fx_reply (fx, 0)->type, PROTO_OK);
    msgpack_sbuffer_destroy (&sb);

    proto_id_req_t get = {.id = id};
    fx_add (fx, PROTO_STORE_SESSION_GET, &get);
    proto_list_req_t list = {.tenant = "acme"};
    fx_add (fx, PROTO_STORE_SESSION_LIST, &list);
    fx_run (fx);
    for (size_t i = 0; i < 2; i++) {
        const char *reply = fx->replies.data + fx->batch[i].reply_off;
        assert_true (has_bytes (reply, fx->batch[i].reply_len, "from_the_future"));
        assert_true (has_bytes (reply, fx->batch[i].reply_len, "kept"));
    }
    //  And the reply still decodes as this build knows it.
    proto_session_reply_t *rep = proto_body (fx_reply (fx, 0), session_reply);
    assert_non_null (rep);
    assert_string_equal (rep->session->tenant, "acme");
    proto_sessions_reply_t *page = proto_body (fx_reply (fx, 1), sessions_reply);
    assert_non_null (page);
    assert_int_equal (page->sessions.count, 1);
    assert_string_equal (page->sessions.items[0].state, "ready");
}

static void test_session_list_paging (void **state)
{
    fx_t *fx = *state;
    //  t1 owns 5, t2 owns 3, created interleaved.
    cm_uuid_t ids[8];
    const char *owner[8] = {"t1", "t2", "t1", "t1", "t2", "t1", "t2", "t1"};
    for (int i = 0; i < 8; i++) {
        cm_uuid7 (&ids[i]);
        put_session (fx, &ids[i], owner[i]);
    }
    const int t1[5] = {0, 2, 3, 5, 7};

    proto_list_req_t req = {.tenant = "t1", .limit = 2};
    size_t seen = 0;
    bool more = true;
    for (int page = 0; more; page++) {
        proto_sessions_reply_t *rep =
            fx_call (fx, PROTO_STORE_SESSION_LIST, &req, PROTO_SESSIONS);
        assert_true (page < 3);
        assert_int_equal (rep->sessions.count, page < 2 ? 2 : 1);
        assert_int_equal (rep->more, page < 2);
        for (size_t i = 0; i < rep->sessions.count; i++) {
            assert_string_equal (rep->sessions.items[i].tenant, "t1");
            assert_memory_equal (rep->sessions.items[i].id.b, ids[t1[seen]].b, 16);
            seen++;
        }
        req.after = rep->sessions.items[rep->sessions.count - 1].id;
        more = rep->more;
    }
    assert_int_equal (seen, 5);

    //  Exactly a page: no `more`.
    req = (proto_list_req_t){.tenant = "t2", .limit = 3};
    proto_sessions_reply_t *rep =
        fx_call (fx, PROTO_STORE_SESSION_LIST, &req, PROTO_SESSIONS);
    assert_int_equal (rep->sessions.count, 3);
    assert_false (rep->more);
    assert_memory_equal (rep->sessions.items[2].id.b, ids[6].b, 16);

    //  No tenant: everyone's, in id order.
    req = (proto_list_req_t){0};
    rep = fx_call (fx, PROTO_STORE_SESSION_LIST, &req, PROTO_SESSIONS);
    assert_int_equal (rep->sessions.count, 8);
    for (int i = 0; i < 8; i++)
        assert_memory_equal (rep->sessions.items[i].id.b, ids[i].b, 16);

    req = (proto_list_req_t){.tenant = "nobody"};
    rep = fx_call (fx, PROTO_STORE_SESSION_LIST, &req, PROTO_SESSIONS);
    assert_int_equal (rep->sessions.count, 0);
    assert_false (rep->more);
}

static void test_session_list_limits (void **state)
{
    fx_t *fx = *state;
    enum { N = STORE_LIST_MAX + 1 };
    static cm_uuid_t ids[N];
    static proto_session_rec_t recs[N];
    static proto_session_put_t puts[N];
    for (int i = 0; i < N; i++) {
        cm_uuid7 (&ids[i]);
        session_rec (&recs[i], &ids[i], "t", "ready");
        puts[i].session = &recs[i];
        fx_add (fx, PROTO_STORE_SESSION_PUT, &puts[i]);
        if (fx->count == FX_MAX_BATCH || i == N - 1) fx_run (fx);
    }
    proto_list_req_t req = {0};
    proto_sessions_reply_t *rep =
        fx_call (fx, PROTO_STORE_SESSION_LIST, &req, PROTO_SESSIONS);
    assert_int_equal (rep->sessions.count, STORE_LIST_DEFAULT);
    assert_true (rep->more);
    req.limit = UINT64_MAX;
    rep = fx_call (fx, PROTO_STORE_SESSION_LIST, &req, PROTO_SESSIONS);
    assert_int_equal (rep->sessions.count, STORE_LIST_MAX);
    assert_true (rep->more);
    req.after = ids[N - 3];
    rep = fx_call (fx, PROTO_STORE_SESSION_LIST, &req, PROTO_SESSIONS);
    assert_int_equal (rep->sessions.count, 2);
    assert_false (rep->more);
}

static void test_session_delete (void **state)
{
    fx_t *fx = *state;
    cm_uuid_t a, b, never;
    cm_uuid7 (&a);
    cm_uuid7 (&b);
    cm_uuid7 (&never);
    const char *msgs[2] = {"{\"role\":\"user\"}", "{\"role\":\"assistant\"}"};
    cm_uuid_t both[2] = {a, b};
    for (int i = 0; i < 2; i++) {
        put_session (fx, &both[i], "t");
        append (fx, &both[i], (char)('a' + i), 1, 3, 10);
        put_messages (fx, &both[i], 0, msgs, 2);
    }
    assert_int_equal (fx_db_entries (fx, STORE_DB_EVENTS), 6);

    proto_id_req_t del = {.id = a};
    fx_call (fx, PROTO_STORE_SESSION_DELETE, &del, PROTO_OK);
    proto_id_req_t get = {.id = a};
    assert_int_equal (fx_call_err (fx, PROTO_STORE_SESSION_GET, &get, NULL),
                      CM_E_NOT_FOUND);
    proto_events_reply_t *rep = fx_range (fx, &a, 0, 0);
    assert_int_equal (rep->events.count, 0);
    assert_int_equal (rep->last_seq, 0);
    assert_int_equal (get_messages (fx, &a)->messages.count, 0);
    assert_int_equal (fx_db_entries (fx, STORE_DB_EVENTS), 3);
    assert_int_equal (fx_db_entries (fx, STORE_DB_MESSAGES), 2);

    //  The neighbour is untouched.
    rep = fx_range (fx, &b, 0, 0);
    assert_int_equal (rep->events.count, 3);
    assert_event (&rep->events.items[2], 'b', 3, 10);
    assert_messages (fx, &b, msgs, 2);
    get.id = b;
    fx_call (fx, PROTO_STORE_SESSION_GET, &get, PROTO_SESSION);

    //  Idempotent: again, and for an id that never existed.
    fx_call (fx, PROTO_STORE_SESSION_DELETE, &del, PROTO_OK);
    del.id = never;
    fx_call (fx, PROTO_STORE_SESSION_DELETE, &del, PROTO_OK);
    assert_int_equal (fx_db_entries (fx, STORE_DB_SESSIONS), 1);
}

/* ---------------------------------------------------------------- */
/*  Messages                                                         */

static void test_messages_put_get (void **state)
{
    fx_t *fx = *state;
    cm_uuid_t s;
    cm_uuid7 (&s);
    const char *three[3] = {"{\"m\":0}", "{\"m\":1}", "{\"m\":2}"};
    put_messages (fx, &s, 0, three, 3);
    assert_messages (fx, &s, three, 3);

    //  Rewrite from index 1: the old tail goes.
    const char *x1[1] = {"{\"x\":1}"};
    put_messages (fx, &s, 1, x1, 1);
    const char *want[2] = {"{\"m\":0}", "{\"x\":1}"};
    assert_messages (fx, &s, want, 2);
    assert_int_equal (fx_db_entries (fx, STORE_DB_MESSAGES), 2);

    //  Past the end: a gap.
    proto_messages_put_t gap = {.session = s, .from = 3, .messages = {x1, 1}};
    const char *msg;
    assert_int_equal (fx_call_err (fx, PROTO_STORE_MESSAGES_PUT, &gap, &msg), CM_E_GAP);
    assert_non_null (strstr (msg, "only 2"));
    assert_messages (fx, &s, want, 2);

    //  Appending at the end and emptying.
    const char *x2[2] = {"{\"x\":2}", ""};
    put_messages (fx, &s, 2, x2, 2);
    const char *four[4] = {"{\"m\":0}", "{\"x\":1}", "{\"x\":2}", ""};
    assert_messages (fx, &s, four, 4);
    put_messages (fx, &s, 0, NULL, 0);
    assert_messages (fx, &s, NULL, 0);
    assert_int_equal (fx_db_entries (fx, STORE_DB_MESSAGES), 0);
}

static void test_messages_sessions_separate (void **state)
{
    fx_t *fx = *state;
    cm_uuid_t a, b, none;
    cm_uuid7 (&none);
    cm_uuid7 (&a);
    cm_uuid7 (&b);
    const char *ma[2] = {"a0", "a1"};
    const char *mb[3] = {"b0", "b1", "b2"};
    put_messages (fx, &a, 0, ma, 2);
    put_messages (fx, &b, 0, mb, 3);
    //  a's messages are followed by b's in the database.
    assert_messages (fx, &a, ma, 2);
    assert_messages (fx, &b, mb, 3);
    //  None stored, but b's come after: empty, not an error.
    assert_messages (fx, &none, NULL, 0);
    //  a's count is its own: from 2 is the end, from 3 a gap.
    proto_messages_put_t gap = {.session = a, .from = 3, .messages = {ma, 1}};
    assert_int_equal (fx_call_err (fx, PROTO_STORE_MESSAGES_PUT, &gap, NULL), CM_E_GAP);
    put_messages (fx, &a, 1, NULL, 0);
    assert_messages (fx, &a, ma, 1);
    assert_messages (fx, &b, mb, 3);
}

/* ---------------------------------------------------------------- */
/*  Tasks, templates, keys                                           */

static void put_task (fx_t *fx, const cm_uuid_t *id, const char *tenant,
                      const char *state)
{
    proto_task_rec_t rec = {.id = *id,
                            .tenant = tenant,
                            .state = state,
                            .prompt = "do it",
                            .attempt = 1,
                            .created_ms = 1700000000001};
    proto_task_put_t req = {.task = &rec};
    fx_call (fx, PROTO_STORE_TASK_PUT, &req, PROTO_OK);
}

static void test_task_crud_and_state_index (void **state)
{
    fx_t *fx = *state;
    cm_uuid_t t1, t2;
    cm_uuid7 (&t1);
    cm_uuid7 (&t2);
    put_task (fx, &t1, "acme", "queued");
    assert_int_equal (fx_db_entries (fx, STORE_DB_TASKS_BY_STATE), 1);
    put_task (fx, &t1, "acme", "running");
    assert_int_equal (fx_db_entries (fx, STORE_DB_TASKS_BY_STATE), 1);
    put_task (fx, &t1, "acme", "succeeded");
    put_task (fx, &t1, "acme", "succeeded");
    assert_int_equal (fx_db_entries (fx, STORE_DB_TASKS_BY_STATE), 1);

    proto_id_req_t get = {.id = t1};
    proto_task_reply_t *rep = fx_call (fx, PROTO_STORE_TASK_GET, &get, PROTO_TASK);
    assert_string_equal (rep->task->state, "succeeded");
    assert_string_equal (rep->task->prompt, "do it");
    assert_int_equal (rep->task->attempt, 1);

    put_task (fx, &t2, "other", "queued");
    assert_int_equal (fx_db_entries (fx, STORE_DB_TASKS_BY_STATE), 2);
    assert_int_equal (fx_db_entries (fx, STORE_DB_TASKS), 2);

    proto_list_req_t list = {.tenant = "acme"};
    proto_tasks_reply_t *page = fx_call (fx, PROTO_STORE_TASK_LIST, &list, PROTO_TASKS);
    assert_int_equal (page->tasks.count, 1);
    assert_memory_equal (page->tasks.items[0].id.b, t1.b, 16);
    list.tenant = NULL;
    page = fx_call (fx, PROTO_STORE_TASK_LIST, &list, PROTO_TASKS);
    assert_int_equal (page->tasks.count, 2);

    proto_id_req_t del = {.id = t1};
    fx_call (fx, PROTO_STORE_TASK_DELETE, &del, PROTO_OK);
    assert_int_equal (fx_db_entries (fx, STORE_DB_TASKS_BY_STATE), 1);
    assert_int_equal (fx_db_entries (fx, STORE_DB_TASKS), 1);
    assert_int_equal (fx_call_err (fx, PROTO_STORE_TASK_GET, &get, NULL), CM_E_NOT_FOUND);
    assert_int_equal (fx_call_err (fx, PROTO_STORE_TASK_DELETE, &del, NULL),
                      CM_E_NOT_FOUND);
    get.id = t2;
    rep = fx_call (fx, PROTO_STORE_TASK_GET, &get, PROTO_TASK);
    assert_string_equal (rep->task->state, "queued");
}

static void test_template_crud (void **state)
{
    fx_t *fx = *state;
    cm_uuid_t id, other;
    cm_uuid7 (&id);
    cm_uuid7 (&other);
    proto_param_rec_t params[2] = {
        {.name = "repo", .type = "string", .required = true},
        {.name = "depth", .type = "integer", .default_value = "3"},
    };
    proto_template_rec_t rec = {.id = id,
                                .tenant = "acme",
                                .name = "review",
                                .prompt = "review {{repo}} to {{depth}}",
                                .params = {params, 2},
                                .created_ms = 1700000000002};
    proto_template_put_t put = {.template = &rec};
    fx_call (fx, PROTO_STORE_TEMPLATE_PUT, &put, PROTO_OK);
    proto_template_rec_t rec2 = {
        .id = other, .tenant = "beta", .name = "x", .prompt = "y", .created_ms = 1};
    proto_template_put_t put2 = {.template = &rec2};
    fx_call (fx, PROTO_STORE_TEMPLATE_PUT, &put2, PROTO_OK);

    proto_id_req_t get = {.id = id};
    proto_template_reply_t *rep =
        fx_call (fx, PROTO_STORE_TEMPLATE_GET, &get, PROTO_TEMPLATE);
    assert_string_equal (rep->template->name, "review");
    assert_string_equal (rep->template->prompt, "review {{repo}} to {{depth}}");
    assert_int_equal (rep->template->params.count, 2);
    assert_string_equal (rep->template->params.items[1].name, "depth");
    assert_string_equal (rep->template->params.items[1].default_value, "3");
    assert_true (rep->template->params.items[0].required);

    proto_list_req_t list = {.tenant = "beta"};
    proto_templates_reply_t *page =
        fx_call (fx, PROTO_STORE_TEMPLATE_LIST, &list, PROTO_TEMPLATES);
    assert_int_equal (page->templates.count, 1);
    assert_string_equal (page->templates.items[0].name, "x");

    fx_call (fx, PROTO_STORE_TEMPLATE_DELETE, &get, PROTO_OK);
    assert_int_equal (fx_call_err (fx, PROTO_STORE_TEMPLATE_GET, &get, NULL),
                      CM_E_NOT_FOUND);
    assert_int_equal (fx_call_err (fx, PROTO_STORE_TEMPLATE_DELETE, &get, NULL),
                      CM_E_NOT_FOUND);
    list.tenant = NULL;
    page = fx_call (fx, PROTO_STORE_TEMPLATE_LIST, &list, PROTO_TEMPLATES);
    assert_int_equal (page->templates.count, 1);
    assert_memory_equal (page->templates.items[0].id.b, other.b, 16);
}

static void test_key_crud (void **state)
{
    fx_t *fx = *state;
    uint8_t h1[32], h2[32], short_hash[31];
    memset (h1, 0x11, sizeof h1);
    memset (h2, 0x22, sizeof h2);
    memset (short_hash, 0x11, sizeof short_hash);
    cm_uuid_t id1, id2;
    cm_uuid7 (&id1);
    cm_uuid7 (&id2);
    proto_key_rec_t k1 = {
        .hash = {h1, 32}, .id = id1, .tenant = "acme", .name = "ci", .created_ms = 5};
    proto_key_rec_t k2 = {
        .hash = {h2, 32}, .id = id2, .tenant = "root", .admin = true, .created_ms = 6};
    proto_key_put_t put = {.key = &k1};
    fx_call (fx, PROTO_STORE_KEY_PUT, &put, PROTO_OK);
    put.key = &k2;
    fx_call (fx, PROTO_STORE_KEY_PUT, &put, PROTO_OK);

    //  A hash of the wrong size is refused, on put, get and delete.
    proto_key_rec_t bad = k1;
    bad.hash = (proto_bin_t){short_hash, 31};
    put.key = &bad;
    const char *msg;
    assert_int_equal (fx_call_err (fx, PROTO_STORE_KEY_PUT, &put, &msg), CM_E_INVALID);
    assert_non_null (strstr (msg, "32 bytes"));
    proto_key_get_t get = {.hash = {short_hash, 31}};
    assert_int_equal (fx_call_err (fx, PROTO_STORE_KEY_GET, &get, &msg), CM_E_INVALID);
    assert_non_null (strstr (msg, "32 bytes"));
    assert_int_equal (fx_call_err (fx, PROTO_STORE_KEY_DELETE, &get, NULL), CM_E_INVALID);
    assert_int_equal (fx_db_entries (fx, STORE_DB_KEYS), 2);

    get.hash = (proto_bin_t){h1, 32};
    proto_key_reply_t *rep = fx_call (fx, PROTO_STORE_KEY_GET, &get, PROTO_KEY);
    assert_memory_equal (rep->key->id.b, id1.b, 16);
    assert_string_equal (rep->key->tenant, "acme");
    assert_string_equal (rep->key->name, "ci");
    assert_int_equal (rep->key->hash.size, 32);
    assert_memory_equal (rep->key->hash.data, h1, 32);
    assert_false (rep->key->admin);

    proto_list_req_t list = {.tenant = "root"};
    proto_keys_reply_t *page = fx_call (fx, PROTO_STORE_KEY_LIST, &list, PROTO_KEYS);
    assert_int_equal (page->keys.count, 1);
    assert_true (page->keys.items[0].admin);
    list.tenant = NULL;
    page = fx_call (fx, PROTO_STORE_KEY_LIST, &list, PROTO_KEYS);
    assert_int_equal (page->keys.count, 2);

    fx_call (fx, PROTO_STORE_KEY_DELETE, &get, PROTO_OK);
    assert_int_equal (fx_call_err (fx, PROTO_STORE_KEY_GET, &get, NULL), CM_E_NOT_FOUND);
    assert_int_equal (fx_call_err (fx, PROTO_STORE_KEY_DELETE, &get, NULL),
                      CM_E_NOT_FOUND);
    get.hash = (proto_bin_t){h2, 32};
    fx_call (fx, PROTO_STORE_KEY_GET, &get, PROTO_KEY);
}

/* ---------------------------------------------------------------- */
/*  Usage                                                            */

static void add_usage (fx_t *fx, const char *tenant, uint64_t day, uint64_t in,
                       uint64_t cost)
{
    proto_usage_t u = {.input_tokens = in,
                       .output_tokens = in / 2,
                       .cost_micros = cost,
                       .model_calls = 1};
    proto_usage_add_t req = {.tenant = tenant, .day = day, .usage = &u, .turns = 1};
    fx_call (fx, PROTO_STORE_USAGE_ADD, &req, PROTO_OK);
}

static proto_usage_reply_t *get_usage (fx_t *fx, const char *tenant, uint64_t from,
                                       uint64_t to)
{
    proto_usage_get_t req = {.tenant = tenant, .from_day = from, .to_day = to};
    return fx_call (fx, PROTO_STORE_USAGE_GET, &req, PROTO_USAGE);
}

static void test_usage_add_get (void **state)
{
    fx_t *fx = *state;
    add_usage (fx, "t1", 20250101, 10, 100);
    add_usage (fx, "t1", 20250101, 30, 5);
    add_usage (fx, "t1", 20250102, 1, 1);
    add_usage (fx, "t1", 20250105, 2, 2);
    add_usage (fx, "t2", 20250101, 1000, 1000);
    add_usage (fx, "t2", 20250103, 1000, 1000);
    add_usage (fx, "t10", 20250102, 7, 7); //  shares a prefix with t1
    add_usage (fx, "t", 20250102, 9, 9);

    proto_usage_reply_t *rep = get_usage (fx, "t1", 20250101, 20250101);
    assert_int_equal (rep->rows.count, 1);
    assert_string_equal (rep->rows.items[0].tenant, "t1");
    assert_int_equal (rep->rows.items[0].day, 20250101);
    assert_int_equal (rep->rows.items[0].usage->input_tokens, 40);
    assert_int_equal (rep->rows.items[0].usage->output_tokens, 20);
    assert_int_equal (rep->rows.items[0].usage->cost_micros, 105);
    assert_int_equal (rep->rows.items[0].usage->model_calls, 2);
    assert_int_equal (rep->rows.items[0].turns, 2);

    rep = get_usage (fx, "t1", 20250101, 20250103);
    assert_int_equal (rep->rows.count, 2);
    assert_int_equal (rep->rows.items[1].day, 20250102);
    assert_int_equal (rep->rows.items[1].usage->input_tokens, 1);

    rep = get_usage (fx, "t1", 20250101, 20251231);
    assert_int_equal (rep->rows.count, 3);
    for (size_t i = 0; i < rep->rows.count; i++)
        assert_string_equal (rep->rows.items[i].tenant, "t1");
    assert_int_equal (rep->rows.items[2].day, 20250105);

    rep = get_usage (fx, "t2", 20240101, 20261231);
    assert_int_equal (rep->rows.count, 2);
    assert_int_equal (rep->rows.items[1].usage->input_tokens, 1000);
    rep = get_usage (fx, "t", 20250101, 20250131);
    assert_int_equal (rep->rows.count, 1);
    assert_int_equal (rep->rows.items[0].usage->input_tokens, 9);
    rep = get_usage (fx, "nobody", 20250101, 20250131);
    assert_int_equal (rep->rows.count, 0);
    rep = get_usage (fx, "t1", 20250103, 20250104); //  days without usage
    assert_int_equal (rep->rows.count, 0);

    proto_usage_t u = {.input_tokens = 1};
    proto_usage_add_t bad = {
        .tenant = "t1", .day = (uint64_t)UINT32_MAX + 1, .usage = &u};
    assert_int_equal (fx_call_err (fx, PROTO_STORE_USAGE_ADD, &bad, NULL), CM_E_INVALID);
}

static uint64_t usage_in (fx_t *fx, const char *tenant, uint64_t day)
{
    proto_usage_reply_t *rep = get_usage (fx, tenant, day, day);
    return rep->rows.count ? rep->rows.items[0].usage->input_tokens : 0;
}

static void add_once (fx_t *fx, const char *tenant, uint64_t day, const cm_uuid_t *id,
                      uint64_t in)
{
    proto_usage_t u = {.input_tokens = in, .model_calls = 1};
    proto_usage_add_t req = {
        .tenant = tenant, .day = day, .usage = &u, .turns = 1, .id = *id};
    fx_call (fx, PROTO_STORE_USAGE_ADD, &req, PROTO_OK);
}

//  A UUIDv7 whose time is now + offset_ms.
static cm_uuid_t uuid7_at (int64_t offset_ms)
{
    cm_uuid_t id;
    cm_uuid7 (&id);
    uint64_t ms = (uint64_t)(cm_time_ms () + offset_ms);
    for (int i = 5; i >= 0; i--, ms >>= 8) id.b[i] = (uint8_t)ms;
    return id;
}

//  An add with an id counts once per row however often it is sent - in
//  separate batches, in one batch, and after the store reopens; the same
//  id feeds another row (the key's day 0) independently.
static void test_usage_add_once (void **state)
{
    fx_t *fx = *state;
    cm_uuid_t turn;
    cm_uuid7 (&turn);
    add_once (fx, "t1", 20250101, &turn, 10);
    add_once (fx, "t1", 20250101, &turn, 10); //  a resend
    assert_int_equal (usage_in (fx, "t1", 20250101), 10);
    add_once (fx, "key:k", 0, &turn, 10); //  same turn, the key's counter
    add_once (fx, "key:k", 0, &turn, 10);
    assert_int_equal (usage_in (fx, "key:k", 0), 10);
    assert_int_equal (fx_db_entries (fx, STORE_DB_USAGE_APPLIED), 2);

    //  A resend in the same batch as the first send.
    cm_uuid_t t2;
    cm_uuid7 (&t2);
    proto_usage_t u = {.input_tokens = 5};
    proto_usage_add_t req = {
        .tenant = "t1", .day = 20250101, .usage = &u, .turns = 1, .id = t2};
    fx_add (fx, PROTO_STORE_USAGE_ADD, &req);
    fx_add (fx, PROTO_STORE_USAGE_ADD, &req);
    fx_run (fx);
    assert_int_equal (fx_reply (fx, 0)->type, PROTO_OK);
    assert_int_equal (fx_reply (fx, 1)->type, PROTO_OK);
    assert_int_equal (usage_in (fx, "t1", 20250101), 15);

    //  Across a store restart.
    fx_reopen (fx);
    add_once (fx, "t1", 20250101, &turn, 10);
    add_once (fx, "t1", 20250101, &t2, 5);
    assert_int_equal (usage_in (fx, "t1", 20250101), 15);
    proto_usage_reply_t *rep = get_usage (fx, "t1", 20250101, 20250101);
    assert_int_equal (rep->rows.items[0].turns, 2);

    //  Without an id every add counts, as before.
    add_usage (fx, "t1", 20250101, 1, 0);
    add_usage (fx, "t1", 20250101, 1, 0);
    assert_int_equal (usage_in (fx, "t1", 20250101), 17);

    //  An id that is not a UUIDv7, or from the far future, is refused and
    //  counts nothing.
    cm_uuid_t v4 = turn;
    v4.b[6] = (uint8_t)(0x40 | (v4.b[6] & 0x0f));
    req.id = v4;
    const char *msg = NULL;
    assert_int_equal (fx_call_err (fx, PROTO_STORE_USAGE_ADD, &req, &msg), CM_E_INVALID);
    assert_non_null (strstr (msg, "UUIDv7"));
    req.id = uuid7_at (3 * 86400000ll);
    assert_int_equal (fx_call_err (fx, PROTO_STORE_USAGE_ADD, &req, NULL), CM_E_INVALID);
    assert_int_equal (usage_in (fx, "t1", 20250101), 17);
}

//  Ids older than the retention are pruned from the front by later adds,
//  at most STORE_USAGE_ID_PRUNE per add; recent ones stay.
static void test_usage_ids_pruned (void **state)
{
    fx_t *fx = *state;
    int64_t old = -(int64_t)STORE_USAGE_ID_KEEP_MS - 3600000;
    for (int i = 0; i < STORE_USAGE_ID_PRUNE + 2; i++) {
        cm_uuid_t id = uuid7_at (old + i);
        proto_usage_t u = {.input_tokens = 1};
        proto_usage_add_t req = {.tenant = "t", .day = 20250101, .usage = &u, .id = id};
        fx_call (fx, PROTO_STORE_USAGE_ADD, &req, PROTO_OK);
    }
    //  Each of those adds pruned the old ones before it (and itself).
    assert_int_equal (fx_db_entries (fx, STORE_DB_USAGE_APPLIED), 0);
    assert_int_equal (usage_in (fx, "t", 20250101), STORE_USAGE_ID_PRUNE + 2);

    cm_uuid_t recent;
    cm_uuid7 (&recent);
    add_once (fx, "t", 20250102, &recent, 1);
    cm_uuid_t week = uuid7_at (-(int64_t)STORE_USAGE_ID_KEEP_MS + 3600000);
    add_once (fx, "t", 20250102, &week, 1);
    assert_int_equal (fx_db_entries (fx, STORE_DB_USAGE_APPLIED), 2);
    add_once (fx, "t", 20250102, &week, 1); //  still remembered
    assert_int_equal (usage_in (fx, "t", 20250102), 2);
}

/* ---------------------------------------------------------------- */
/*  Stats                                                            */

static void test_stats_counters (void **state)
{
    fx_t *fx = *state;
    proto_store_stats_t *st = fx_stats (fx);
    assert_int_equal (st->schema, STORE_SCHEMA_VERSION);
    assert_int_equal (strlen (st->epoch), 36);
    assert_true (st->map_size >= 16u << 20);
    assert_true (st->map_used > 0 && st->map_used <= st->map_size);
    for (size_t i = 0; i < st->dbs.count; i++)
        assert_string_equal (st->dbs.items[i].name, store_db_names[i]);
    uint64_t commits = st->commits, requests = st->requests;

    cm_uuid_t s;
    cm_uuid7 (&s);
    append (fx, &s, 'S', 1, 4, 100);
    st = fx_stats (fx);
    assert_int_equal (st->commits, commits + 1);
    assert_int_equal (st->requests, requests + 2); //  the append and this stats
    assert_int_equal (st->dbs.items[STORE_DB_EVENTS].entries, 4);
    assert_true (st->dbs.items[STORE_DB_EVENTS].bytes > 0);
    assert_int_equal (st->dbs.items[STORE_DB_SESSIONS].entries, 0);
    commits = st->commits;

    //  Reads commit nothing; a refused write commits nothing either.
    fx_range (fx, &s, 0, 0);
    evs_t e = evs_make ('S', 9, 1, 10);
    assert_int_equal (append_err (fx, &s, 9, e.items, 1, NULL), CM_E_GAP);
    evs_free (&e);
    st = fx_stats (fx);
    assert_int_equal (st->commits, commits);
    assert_true (st->commit_max_us >= st->commit_p50_us);
}

/* ---------------------------------------------------------------- */
/*  Malformed requests in a batch                                    */

static void test_malformed_requests (void **state)
{
    fx_t *fx = *state;
    cm_uuid_t s;
    cm_uuid7 (&s);
    evs_t e1 = evs_make ('m', 1, 1, 10), e2 = evs_make ('m', 2, 1, 10);
    proto_events_append_t ap1 = {.session = s, .first_seq = 1, .events = {e1.items, 1}};
    proto_events_append_t ap2 = {.session = s, .first_seq = 2, .events = {e2.items, 1}};
    proto_events_range_t rg = {.session = s};

    //  Raw forms, built from valid encodings.
    proto_buf_t tmp;
    proto_buf_init (&tmp);
    assert_int_equal (proto_encode (&tmp, PROTO_STORE_EVENTS_APPEND, 71, &ap2), 0);
    size_t trunc_len = tmp.size / 2;
    size_t stats_off = tmp.size;
    assert_int_equal (proto_encode (&tmp, PROTO_STORE_STATS, 72, NULL), 0);
    assert_int_equal ((uint8_t)tmp.data[stats_off], 0x94); //  [v, type, corr, body]
    assert_int_equal ((uint8_t)tmp.data[stats_off + 1], PROTO_VERSION);
    tmp.data[stats_off + 1] = PROTO_VERSION + 1;
    const uint8_t missing[] = {0x94, PROTO_VERSION, PROTO_STORE_EVENTS_APPEND, 73, 0x80};
    const uint8_t not_msgpack[] = {0xc1};
    const uint8_t not_array[] = {0xa3, 'a', 'b', 'c'};
    proto_session_new_t sn = {.tenant = "t", .cwd = "/w"};

    fx_add (fx, PROTO_STORE_EVENTS_APPEND, &ap1);                //  0 ok
    fx_add_raw (fx, tmp.data, trunc_len);                        //  1 truncated
    fx_add_raw (fx, tmp.data + stats_off, tmp.size - stats_off); //  2 version
    uint64_t sn_corr = fx_add (fx, PROTO_SESSION_NEW, &sn);      //  3 not a store request
    fx_add_raw (fx, missing, sizeof missing);                    //  4 missing fields
    fx_add_raw (fx, not_msgpack, sizeof not_msgpack);            //  5 garbage
    fx_add_raw (fx, not_array, sizeof not_array);                //  6 not a message
    fx_add (fx, PROTO_OK, NULL);                                 //  7 a reply type
    fx_add_raw (fx, "", 0);                                      //  8 empty
    fx_add (fx, PROTO_STORE_EVENTS_APPEND, &ap2);                //  9 ok
    fx_add (fx, PROTO_STORE_EVENTS_RANGE, &rg);                  //  10 sees 0 and 9
    fx_run (fx);

    const char *msg;
    assert_int_equal (proto_body (fx_reply (fx, 0), appended)->last_seq, 1);
    assert_int_equal (fx_reply_err (fx, 1, NULL), CM_E_TRUNCATED);
    assert_int_equal (fx_reply_err (fx, 2, &msg), CM_E_VERSION);
    assert_int_equal (fx->msg.corr, 72); //  still answerable
    assert_non_null (strstr (msg, "version"));
    assert_int_equal (fx_reply_err (fx, 3, &msg), CM_E_UNKNOWN_TYPE);
    assert_int_equal (fx->msg.corr, sn_corr);
    assert_non_null (strstr (msg, "session.new is not a store request"));
    assert_int_equal (fx_reply_err (fx, 4, &msg), CM_E_MISSING);
    assert_int_equal (fx->msg.corr, 73);
    assert_int_equal (fx_reply_err (fx, 5, NULL), CM_E_INVALID);
    assert_int_equal (fx_reply_err (fx, 6, NULL), CM_E_INVALID);
    assert_int_equal (fx_reply_err (fx, 7, NULL), CM_E_UNKNOWN_TYPE);
    assert_int_equal (fx_reply_err (fx, 8, NULL), CM_E_TRUNCATED);
    assert_int_equal (proto_body (fx_reply (fx, 9), appended)->last_seq, 2);
    proto_events_reply_t *rep = proto_body (fx_reply (fx, 10), events_reply);
    assert_non_null (rep);
    assert_int_equal (rep->events.count, 2);
    assert_event (&rep->events.items[1], 'm', 2, 10);
    proto_buf_fini (&tmp);
    evs_free (&e1);
    evs_free (&e2);
}

int main (void)
{
    cm_log_init ("store-test", CM_LOG_ERROR);
#define T(name) cmocka_unit_test_setup_teardown (name, setup, teardown)
    const struct CMUnitTest tests[] = {
        T (test_append_acks_last_seq),
        T (test_unknown_record_fields_survive),
        T (test_append_resend_is_idempotent),
        T (test_append_gap_refused),
        T (test_append_refuses_bad_events),
        T (test_append_batch),
        T (test_sessions_interleaved),
        T (test_range_after_and_limit),
        T (test_range_limit_clamped),
        T (test_range_unknown_session),
        T (test_range_exact_bytes),
        T (test_range_reply_fits_a_message),
        T (test_mixed_batch),
        T (test_many_appends_one_batch),
        T (test_session_put_get),
        T (test_session_list_paging),
        T (test_session_list_limits),
        T (test_session_delete),
        T (test_messages_put_get),
        T (test_messages_sessions_separate),
        T (test_task_crud_and_state_index),
        T (test_template_crud),
        T (test_key_crud),
        T (test_usage_add_get),
        T (test_usage_add_once),
        T (test_usage_ids_pruned),
        T (test_stats_counters),
        T (test_malformed_requests),
    };
#undef T
    return cmocka_run_group_tests (tests, NULL, NULL);
}
