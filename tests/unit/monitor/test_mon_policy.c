/*  test_mon_policy.c - the policy engine's decisions (mon_policy.h), fed
    synthetic events, census entries and answers, with a fake clock (every
    call takes the time).
*/
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "cm_error.h"
#include "cm_time.h"
#include "cm_zmq.h"
#include "mon_policy.h"

#define T0  1700000000000LL //  the fake clock's start, Unix ms
#define SEC 1000LL

static cm_uuid_t uid (uint8_t n)
{
    cm_uuid_t id;
    memset (&id, 0, sizeof id);
    //  A UUIDv7 made at T0: its first 48 bits are T0.
    for (int i = 0; i < 6; i++) id.b[i] = (uint8_t)((uint64_t)T0 >> (40 - 8 * i));
    id.b[6] = 0x70;
    id.b[15] = n;
    return id;
}

static cm_uuid_t s_nil;

static mon_policy_engine_t *engine (int64_t max, int64_t idle, int64_t repeat,
                                    int64_t silence)
{
    mon_policy_config_t cfg = {.max_duration_ms = max,
                               .idle_timeout_ms = idle,
                               .stuck_repeat = repeat,
                               .stuck_silence_ms = silence};
    mon_policy_engine_t *e = mon_policy_engine_new (&cfg);
    assert_non_null (e);
    return e;
}

static void ev (mon_policy_engine_t *e, proto_type_t type, cm_uuid_t session,
                cm_uuid_t turn, int64_t now)
{
    mon_policy_event_t x = {.type = type, .session = session, .turn = turn, .ts = now};
    mon_policy_engine_event (e, &x, now);
}

static void state (mon_policy_engine_t *e, cm_uuid_t session, const char *st,
                   const char *reason, int64_t now)
{
    mon_policy_event_t x = {.type = PROTO_EV_STATE,
                            .session = session,
                            .ts = now,
                            .state = st,
                            .reason = reason};
    mon_policy_engine_event (e, &x, now);
}

static void tool (mon_policy_engine_t *e, cm_uuid_t session, cm_uuid_t turn,
                  const char *title, const char *input, int64_t now)
{
    mon_policy_event_t x = {.type = PROTO_EV_TOOL_CALL,
                            .session = session,
                            .turn = turn,
                            .ts = now,
                            .tool_kind = "read",
                            .tool_title = title,
                            .tool_input = input};
    mon_policy_engine_event (e, &x, now);
}

static void created (mon_policy_engine_t *e, cm_uuid_t s, int64_t now)
{
    ev (e, PROTO_EV_SESSION_CREATED, s, s_nil, now);
    state (e, s, "ready", NULL, now);
}

static void turn_start (mon_policy_engine_t *e, cm_uuid_t s, cm_uuid_t turn, int64_t now)
{
    ev (e, PROTO_EV_USER_MESSAGE, s, turn, now);
    state (e, s, "running", NULL, now);
    ev (e, PROTO_EV_TURN_STARTED, s, turn, now);
}

static void turn_stop (mon_policy_engine_t *e, cm_uuid_t s, cm_uuid_t turn, int64_t now)
{
    state (e, s, "idle", NULL, now);
    ev (e, PROTO_EV_TURN_ENDED, s, turn, now);
}

//  Exactly one action at now, returned; none is an assertion failure.
static mon_policy_action_t one (mon_policy_engine_t *e, int64_t now)
{
    mon_policy_action_t out[4];
    size_t n = mon_policy_engine_tick (e, now, out, 4);
    assert_int_equal (n, 1);
    return out[0];
}

static void none (mon_policy_engine_t *e, int64_t now)
{
    mon_policy_action_t out[4];
    size_t n = mon_policy_engine_tick (e, now, out, 4);
    if (n)
        fprintf (stderr, "unexpected: %s/%s %s\n", out[0].policy, out[0].action,
                 out[0].message);
    assert_int_equal (n, 0);
}

static void ok (mon_policy_engine_t *e, const mon_policy_action_t *a, int64_t now)
{
    mon_policy_engine_result (e, &a->session, a->token, 0, now);
}

/* ---------------------------------------------------------------- */

static void test_fmt_ms (void **state_)
{
    char b[32];
    assert_string_equal (mon_policy_fmt_ms (800, b, sizeof b), "800ms");
    assert_string_equal (mon_policy_fmt_ms (45000, b, sizeof b), "45s");
    assert_string_equal (mon_policy_fmt_ms (1500, b, sizeof b), "1.5s");
    assert_string_equal (mon_policy_fmt_ms (2049, b, sizeof b), "2s");
    assert_string_equal (mon_policy_fmt_ms (12500, b, sizeof b), "12s");
    assert_string_equal (mon_policy_fmt_ms (90000, b, sizeof b), "1m30s");
    assert_string_equal (mon_policy_fmt_ms (30 * 60000, b, sizeof b), "30m");
    assert_string_equal (mon_policy_fmt_ms (90 * 60000, b, sizeof b), "1h30m");
    assert_string_equal (mon_policy_fmt_ms (8 * 3600000, b, sizeof b), "8h");
    assert_string_equal (mon_policy_fmt_ms (-5, b, sizeof b), "0ms");
}

static void test_all_off (void **state_)
{
    mon_policy_engine_t *e = engine (0, 0, 0, 0);
    cm_uuid_t s = uid (1), t = uid (2);
    created (e, s, T0);
    turn_start (e, s, t, T0);
    for (int i = 0; i < 50; i++) tool (e, s, t, "Read a.txt", "{\"path\":\"a.txt\"}", T0);
    none (e, T0 + 86400 * SEC);
    turn_stop (e, s, t, T0 + 86400 * SEC);
    none (e, T0 + 30 * 86400 * SEC);
    assert_int_equal (mon_policy_engine_sessions (e), 1);
    mon_policy_engine_destroy (&e);
    assert_null (e);
}

static void test_duration_warn_then_close (void **state_)
{
    mon_policy_engine_t *e = engine (100 * SEC, 0, 0, 0);
    cm_uuid_t s = uid (1);
    created (e, s, T0);
    none (e, T0 + 89 * SEC);
    mon_policy_action_t a = one (e, T0 + 90 * SEC);
    assert_int_equal (a.kind, MON_ACT_DURATION_WARN);
    assert_string_equal (a.action, "warn");
    assert_string_equal (a.policy, "max_duration");
    assert_int_equal (a.remaining_ms, 10 * SEC);
    assert_non_null (strstr (a.message, "closed in 10s"));
    assert_true (cm_uuid_is_nil (&a.turn));
    none (e, T0 + 91 * SEC); //  in flight
    ok (e, &a, T0 + 91 * SEC);
    none (e, T0 + 99 * SEC); //  warned once
    a = one (e, T0 + 100 * SEC);
    assert_int_equal (a.kind, MON_ACT_DURATION_CLOSE);
    assert_string_equal (a.action, "close");
    assert_non_null (strstr (a.message, "maximum duration of 1m40s"));
    ok (e, &a, T0 + 100 * SEC);
    none (e, T0 + 200 * SEC);
    assert_int_equal (mon_policy_engine_done (e, MON_ACT_DURATION_WARN), 1);
    assert_int_equal (mon_policy_engine_done (e, MON_ACT_DURATION_CLOSE), 1);
    state (e, s, "closed", "max_duration", T0 + 201 * SEC);
    assert_int_equal (mon_policy_engine_sessions (e), 0);
    mon_policy_engine_destroy (&e);
}

static void test_duration_running_turn_and_late_start (void **state_)
{
    mon_policy_engine_t *e = engine (100 * SEC, 0, 0, 0);
    cm_uuid_t s = uid (1), t = uid (2);
    created (e, s, T0);
    turn_start (e, s, t, T0 + 50 * SEC);
    mon_policy_action_t a = one (e, T0 + 95 * SEC);
    assert_int_equal (a.kind, MON_ACT_DURATION_WARN);
    assert_int_equal (a.remaining_ms, 5 * SEC);
    assert_non_null (strstr (a.message, "grace"));
    ok (e, &a, T0 + 95 * SEC);
    a = one (e, T0 + 100 * SEC);
    assert_int_equal (a.kind, MON_ACT_DURATION_CLOSE);
    assert_non_null (strstr (a.message, "when the running turn ends"));
    ok (e, &a, T0 + 100 * SEC);
    //  A session already past its end when first seen is closed, not warned.
    cm_uuid_t old = uid (9);
    ev (e, PROTO_EV_AGENT_MESSAGE, old, s_nil, T0 + 500 * SEC);
    mon_policy_action_t out[4];
    size_t n = mon_policy_engine_tick (e, T0 + 500 * SEC, out, 4);
    assert_int_equal (n, 1);
    assert_int_equal (out[0].kind, MON_ACT_DURATION_CLOSE); //  opened at its UUID's time
    assert_memory_equal (&out[0].session, &old, sizeof old);
    mon_policy_engine_destroy (&e);
}

static void test_resend_and_errors (void **state_)
{
    const int64_t R = MON_POLICY_RETRY_MS;
    mon_policy_engine_t *e = engine (200 * SEC, 0, 0, 0);
    cm_uuid_t s = uid (1);
    created (e, s, T0);
    mon_policy_action_t a = one (e, T0 + 180 * SEC);
    none (e, T0 + 180 * SEC + R - 1);
    mon_policy_action_t b = one (e, T0 + 180 * SEC + R);
    assert_int_equal (b.token, a.token); //  the same action again
    //  An answer to an unknown token changes nothing.
    mon_policy_engine_result (e, &s, a.token + 100, 0, T0 + 186 * SEC);
    //  A transient failure: decided again after the retry interval.
    mon_policy_engine_result (e, &s, a.token, CM_E_UNAVAILABLE, T0 + 186 * SEC);
    none (e, T0 + 186 * SEC + R - 1);
    b = one (e, T0 + 186 * SEC + R);
    assert_int_equal (b.kind, MON_ACT_DURATION_WARN);
    assert_true (b.token != a.token);
    //  A refusal (conflict) ends that decision; not_found forgets the session.
    mon_policy_engine_result (e, &s, b.token, CM_E_CONFLICT, T0 + 192 * SEC);
    assert_int_equal (mon_policy_engine_done (e, MON_ACT_DURATION_WARN), 0);
    none (e, T0 + 199 * SEC);
    b = one (e, T0 + 200 * SEC);
    assert_int_equal (b.kind, MON_ACT_DURATION_CLOSE);
    mon_policy_engine_result (e, &s, b.token, CM_E_NOT_FOUND, T0 + 200 * SEC);
    assert_int_equal (mon_policy_engine_sessions (e), 0);
    none (e, T0 + 400 * SEC);
    mon_policy_engine_destroy (&e);
}

static void test_idle_hibernate_and_resume (void **state_)
{
    mon_policy_engine_t *e = engine (0, 60 * SEC, 0, 0);
    cm_uuid_t s = uid (1), t = uid (2), t2 = uid (3);
    created (e, s, T0);
    none (e, T0 + 59 * SEC);
    mon_policy_action_t a = one (e, T0 + 60 * SEC);
    assert_int_equal (a.kind, MON_ACT_IDLE_HIBERNATE);
    assert_string_equal (a.action, "hibernate");
    assert_string_equal (a.policy, "idle");
    assert_non_null (strstr (a.message, "idle for 1m"));
    //  A prompt before the answer: the idle decision is void.
    turn_start (e, s, t, T0 + 61 * SEC);
    ok (e, &a, T0 + 61 * SEC); //  ignored: no longer in flight
    assert_int_equal (mon_policy_engine_done (e, MON_ACT_IDLE_HIBERNATE), 0);
    none (e, T0 + 500 * SEC); //  a running turn is never idle
    turn_stop (e, s, t, T0 + 500 * SEC);
    none (e, T0 + 559 * SEC);
    a = one (e, T0 + 560 * SEC);
    assert_int_equal (a.kind, MON_ACT_IDLE_HIBERNATE);
    ev (e, PROTO_EV_POLICY, s, s_nil, T0 + 560 * SEC); //  not activity
    state (e, s, "hibernated", a.message, T0 + 560 * SEC);
    ok (e, &a, T0 + 560 * SEC);
    assert_int_equal (mon_policy_engine_done (e, MON_ACT_IDLE_HIBERNATE), 1);
    none (e, T0 + 5000 * SEC); //  hibernated: nothing more
    //  A prompt resumes it; idle again later hibernates again.
    state (e, s, "ready", "resumed by a prompt", T0 + 5000 * SEC);
    turn_start (e, s, t2, T0 + 5000 * SEC);
    turn_stop (e, s, t2, T0 + 5001 * SEC);
    none (e, T0 + 5060 * SEC);
    a = one (e, T0 + 5061 * SEC);
    assert_int_equal (a.kind, MON_ACT_IDLE_HIBERNATE);
    mon_policy_engine_destroy (&e);
}

static void test_repeat_warn_then_cancel (void **state_)
{
    mon_policy_engine_t *e = engine (0, 0, 3, 0);
    cm_uuid_t s = uid (1), t = uid (2), t2 = uid (3);
    created (e, s, T0);
    turn_start (e, s, t, T0);
    const char *in = "{\"path\":\"a.txt\"}";
    tool (e, s, t, "Read a.txt", in, T0 + 1);
    tool (e, s, t, "Read b.txt", "{\"path\":\"b.txt\"}", T0 + 2);
    tool (e, s, t, "Read a.txt", in, T0 + 3);
    tool (e, s, t, "Read a.txt", "{\"path\":\"a.txt\",\"offset\":1}", T0 + 4); //  differs
    none (e, T0 + 5);
    tool (e, s, t, "Read a.txt", in, T0 + 6); //  the third
    mon_policy_action_t a = one (e, T0 + 7);
    assert_int_equal (a.kind, MON_ACT_REPEAT_WARN);
    assert_string_equal (a.action, "warn");
    assert_string_equal (a.policy, "stuck");
    assert_memory_equal (&a.turn, &t, sizeof t);
    assert_non_null (strstr (a.message, "(Read a.txt) was made 3 times"));
    assert_non_null (strstr (a.message, "if it reaches 6"));
    ok (e, &a, T0 + 8);
    tool (e, s, t, "Read a.txt", in, T0 + 9);
    tool (e, s, t, "Read a.txt", in, T0 + 10);
    none (e, T0 + 11); //  5: not yet
    tool (e, s, t, "Read a.txt", in, T0 + 12);
    a = one (e, T0 + 13);
    assert_int_equal (a.kind, MON_ACT_REPEAT_CANCEL);
    assert_string_equal (a.action, "cancel");
    assert_memory_equal (&a.turn, &t, sizeof t);
    assert_non_null (strstr (a.message, "6 times"));
    ok (e, &a, T0 + 14);
    tool (e, s, t, "Read a.txt", in, T0 + 15);
    none (e, T0 + 16); //  cancelled once
    turn_stop (e, s, t, T0 + 17);
    //  A new turn counts afresh.
    turn_start (e, s, t2, T0 + 20);
    tool (e, s, t2, "Read a.txt", in, T0 + 21);
    tool (e, s, t2, "Read a.txt", in, T0 + 22);
    none (e, T0 + 23);
    assert_int_equal (mon_policy_engine_done (e, MON_ACT_REPEAT_CANCEL), 1);
    mon_policy_engine_destroy (&e);
}

static void test_repeat_fast_loop_warns_first (void **state_)
{
    //  Calls faster than the ticks: 2N before any tick still warns first.
    mon_policy_engine_t *e = engine (0, 0, 2, 0);
    cm_uuid_t s = uid (1), t = uid (2);
    created (e, s, T0);
    turn_start (e, s, t, T0);
    for (int i = 0; i < 5; i++) tool (e, s, t, "Run make", "{\"command\":\"make\"}", T0);
    mon_policy_action_t a = one (e, T0 + 1);
    assert_int_equal (a.kind, MON_ACT_REPEAT_WARN);
    ok (e, &a, T0 + 1);
    a = one (e, T0 + 2);
    assert_int_equal (a.kind, MON_ACT_REPEAT_CANCEL);
    //  The turn ends before the answer: the cancel is dropped, its answer
    //  ignored.
    turn_stop (e, s, t, T0 + 3);
    mon_policy_engine_result (e, &s, a.token, 0, T0 + 4);
    assert_int_equal (mon_policy_engine_done (e, MON_ACT_REPEAT_CANCEL), 0);
    none (e, T0 + 10 * SEC);
    mon_policy_engine_destroy (&e);
}

static void test_repeat_many_distinct_calls (void **state_)
{
    //  More distinct calls than slots: bounded, and no false alarm.
    mon_policy_engine_t *e = engine (0, 0, 3, 0);
    cm_uuid_t s = uid (1), t = uid (2);
    created (e, s, T0);
    turn_start (e, s, t, T0);
    for (int i = 0; i < 10 * MON_POLICY_SIGS; i++) {
        char title[32];
        snprintf (title, sizeof title, "Read f%d", i);
        tool (e, s, t, title, NULL, T0);
        tool (e, s, t, title, NULL, T0);
    }
    none (e, T0 + 1);
    mon_policy_engine_destroy (&e);
}

static void test_silence_warn_then_cancel (void **state_)
{
    mon_policy_engine_t *e = engine (0, 0, 0, 10 * SEC);
    cm_uuid_t s = uid (1), t = uid (2);
    created (e, s, T0);
    turn_start (e, s, t, T0);
    none (e, T0 + 9 * SEC);
    mon_policy_action_t a = one (e, T0 + 10 * SEC);
    assert_int_equal (a.kind, MON_ACT_SILENCE_WARN);
    assert_string_equal (a.policy, "stuck");
    assert_memory_equal (&a.turn, &t, sizeof t);
    assert_non_null (strstr (a.message, "no output from the running turn for 10s"));
    assert_non_null (strstr (a.message, "within 10s more"));
    ok (e, &a, T0 + 10 * SEC);
    //  The policy's own event is not output; an agent chunk is.
    ev (e, PROTO_EV_POLICY, s, t, T0 + 10 * SEC);
    ev (e, PROTO_EV_AGENT_MESSAGE, s, t, T0 + 15 * SEC);
    none (e, T0 + 24 * SEC);
    a = one (e, T0 + 25 * SEC); //  a new silence warns again
    assert_int_equal (a.kind, MON_ACT_SILENCE_WARN);
    ok (e, &a, T0 + 25 * SEC);
    none (e, T0 + 34 * SEC);
    a = one (e, T0 + 35 * SEC); //  2 x T without output
    assert_int_equal (a.kind, MON_ACT_SILENCE_CANCEL);
    assert_string_equal (a.action, "cancel");
    assert_non_null (strstr (a.message, "for 20s"));
    ok (e, &a, T0 + 35 * SEC);
    none (e, T0 + 100 * SEC);
    assert_int_equal (mon_policy_engine_done (e, MON_ACT_SILENCE_CANCEL), 1);
    mon_policy_engine_destroy (&e);
}

static void test_silence_not_while_awaiting_permission (void **state_)
{
    mon_policy_engine_t *e = engine (0, 0, 0, 10 * SEC);
    cm_uuid_t s = uid (1), t = uid (2);
    created (e, s, T0);
    turn_start (e, s, t, T0);
    ev (e, PROTO_EV_PERMISSION_REQUEST, s, t, T0 + 5 * SEC);
    state (e, s, "awaiting_permission", NULL, T0 + 5 * SEC);
    none (e, T0 + 300 * SEC); //  a person is being asked
    state (e, s, "running", NULL, T0 + 300 * SEC);
    none (e, T0 + 309 * SEC);
    mon_policy_action_t a = one (e, T0 + 310 * SEC);
    assert_int_equal (a.kind, MON_ACT_SILENCE_WARN);
    mon_policy_engine_destroy (&e);
}

static void test_turn_seen_mid_way (void **state_)
{
    //  The monitor came up during a turn: its events start tracking it.
    mon_policy_engine_t *e = engine (0, 0, 0, 10 * SEC);
    cm_uuid_t s = uid (1), t = uid (2);
    ev (e, PROTO_EV_AGENT_MESSAGE, s, t, T0);
    mon_policy_action_t a = one (e, T0 + 10 * SEC);
    assert_int_equal (a.kind, MON_ACT_SILENCE_WARN);
    assert_memory_equal (&a.turn, &t, sizeof t);
    mon_policy_engine_destroy (&e);
}

static void test_census (void **state_)
{
    mon_policy_engine_t *e = engine (1000 * SEC, 60 * SEC, 0, 10 * SEC);
    cm_uuid_t a = uid (1), b = uid (2), c = uid (3), d = uid (4), tb = uid (20);
    //  c was known from events, then closed while we did not listen.
    created (e, c, T0);
    mon_policy_engine_census_begin (e);
    proto_census_entry_t ea = {.id = a,
                               .state = "idle",
                               .opened_ms = T0 - 950 * SEC,
                               .active_ms = T0 - 30 * SEC};
    proto_census_entry_t eb = {.id = b,
                               .state = "running",
                               .opened_ms = T0,
                               .active_ms = T0,
                               .turn = tb,
                               .turn_ms = T0};
    proto_census_entry_t ec = {.id = uid (5), .state = "closed", .opened_ms = T0};
    mon_policy_engine_census_entry (e, &ea, T0);
    created (e, d, T0); //  new while the census runs
    mon_policy_engine_census_entry (e, &eb, T0);
    mon_policy_engine_census_entry (e, &ec, T0);
    mon_policy_engine_census_end (e);
    assert_int_equal (mon_policy_engine_sessions (e),
                      3); //  a, b, d; not c nor the closed
    //  a: 95 % of its duration already: a warning with what is left.
    mon_policy_action_t out[8];
    size_t n = mon_policy_engine_tick (e, T0, out, 8);
    assert_int_equal (n, 1);
    assert_memory_equal (&out[0].session, &a, sizeof a);
    assert_int_equal (out[0].kind, MON_ACT_DURATION_WARN);
    assert_int_equal (out[0].remaining_ms, 50 * SEC);
    ok (e, &out[0], T0);
    //  a: idle since T0 - 30 s; b: its turn is silent from the census on.
    n = mon_policy_engine_tick (e, T0 + 30 * SEC, out, 8);
    assert_int_equal (n, 2);
    for (size_t i = 0; i < n; i++)
        assert_int_equal (out[i].kind, memcmp (&out[i].session, &a, sizeof a) == 0
                                           ? MON_ACT_IDLE_HIBERNATE
                                           : MON_ACT_SILENCE_WARN);
    //  A second census with a reopened a (resumed after closing): the
    //  duration counts again from then.
    ok (e, &out[0], T0 + 30 * SEC);
    ok (e, &out[1], T0 + 30 * SEC);
    mon_policy_engine_census_begin (e);
    ea.opened_ms = T0 + 40 * SEC;
    mon_policy_engine_census_entry (e, &ea, T0 + 40 * SEC);
    mon_policy_engine_census_entry (e, &eb, T0 + 40 * SEC);
    mon_policy_engine_census_abort (e); //  failed half way: nothing dropped
    assert_int_equal (mon_policy_engine_sessions (e), 3);
    n = mon_policy_engine_tick (e, T0 + 40 * SEC + 899 * SEC, out, 8);
    for (size_t i = 0; i < n; i++) assert_true (memcmp (&out[i].session, &a, sizeof a));
    mon_policy_engine_destroy (&e);
}

static void test_census_repairs_missed_events (void **state_)
{
    //  The session service restarted during a turn: its "interrupted"
    //  turn_ended went out before we listened again.  The census says there
    //  is no turn, so the session can be idle again.
    mon_policy_engine_t *e = engine (0, 60 * SEC, 0, 0);
    cm_uuid_t s = uid (1), t = uid (2), s2 = uid (3), t2 = uid (4);
    created (e, s, T0);
    turn_start (e, s, t, T0);
    created (e, s2, T0);
    turn_start (e, s2, t2, T0);
    none (e, T0 + 100 * SEC);
    mon_policy_engine_census_begin (e);
    proto_census_entry_t es = {
        .id = s, .state = "idle", .opened_ms = T0, .active_ms = T0 + 100 * SEC};
    proto_census_entry_t es2 = {
        .id = s2, .state = "idle", .opened_ms = T0, .active_ms = T0 + 100 * SEC};
    ev (e, PROTO_EV_AGENT_MESSAGE, s2, t2, T0 + 100 * SEC); //  newer than the page
    mon_policy_engine_census_entry (e, &es, T0 + 100 * SEC);
    mon_policy_engine_census_entry (e, &es2, T0 + 100 * SEC);
    mon_policy_engine_census_end (e);
    none (e, T0 + 159 * SEC);
    mon_policy_action_t out[4];
    size_t n = mon_policy_engine_tick (e, T0 + 160 * SEC, out, 4);
    assert_int_equal (n, 1); //  s only: s2's event since the census began wins
    assert_memory_equal (&out[0].session, &s, sizeof s);
    assert_int_equal (out[0].kind, MON_ACT_IDLE_HIBERNATE);
    mon_policy_engine_destroy (&e);
}

//  The engine on the bus, with no session service anywhere: stopping must
//  not wait on it.  The SUB's subscription (queued for a connection that
//  never completes) used to hold zmq_ctx_term for the whole 2 s linger.
static void test_stop_is_prompt_without_session_service (void **state)
{
    (void)state;
    char nowhere[] = "tcp://127.0.0.1:1";
    mon_policy_config_t cfg = {.session_endpoint = nowhere,
                               .events_endpoint = nowhere,
                               .idle_timeout_ms = 60 * SEC};
    mon_policy_t *p = mon_policy_new (&cfg);
    assert_non_null (p);
    int64_t end = cm_mono_ms () + 300;
    while (cm_mono_ms () < end) {
        mon_policy_service (p, cm_mono_ms ());
        nanosleep (&(struct timespec){0, 20 * 1000 * 1000}, NULL);
    }
    int64_t t0 = cm_mono_ms ();
    mon_policy_destroy (&p);
    assert_null (p);
    cm_zmq_term ();
    int64_t took = cm_mono_ms () - t0;
    assert_true (took < 1000); //  was 2000 (CM_ZMQ_LINGER_MS)
}

int main (void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test (test_fmt_ms),
        cmocka_unit_test (test_all_off),
        cmocka_unit_test (test_stop_is_prompt_without_session_service),
        cmocka_unit_test (test_duration_warn_then_close),
        cmocka_unit_test (test_duration_running_turn_and_late_start),
        cmocka_unit_test (test_resend_and_errors),
        cmocka_unit_test (test_idle_hibernate_and_resume),
        cmocka_unit_test (test_repeat_warn_then_cancel),
        cmocka_unit_test (test_repeat_fast_loop_warns_first),
        cmocka_unit_test (test_repeat_many_distinct_calls),
        cmocka_unit_test (test_silence_warn_then_cancel),
        cmocka_unit_test (test_silence_not_while_awaiting_permission),
        cmocka_unit_test (test_turn_seen_mid_way),
        cmocka_unit_test (test_census),
        cmocka_unit_test (test_census_repairs_missed_events),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
