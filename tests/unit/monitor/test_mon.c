/*  test_mon.c - corral-monitor's liveness table, readiness rules, metrics
    renderer and request answers, driven with heartbeats built here.
*/
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "mon.h"
#include "proto_beat.h"

static proto_mon_heartbeat_t beat (const char *service, const char *instance,
                                   proto_stat_t *stats, size_t n)
{
    return (proto_mon_heartbeat_t){.service = service,
                                   .instance = instance,
                                   .pid = 42,
                                   .host = "h",
                                   .uptime_ms = 1000,
                                   .stats = {stats, n}};
}

static void feed (mon_table_t *t, const char *service, const char *instance,
                  double workers, int64_t now)
{
    proto_stat_t st[] = {{.name = "corral_session_workers_connected", .value = workers}};
    proto_mon_heartbeat_t hb = beat (service, instance, st, 1);
    assert_int_equal (mon_table_ingest (t, &hb, now), 0);
}

static size_t count_of (const char *hay, const char *needle)
{
    size_t n = 0;
    for (const char *p = hay; (p = strstr (p, needle)); p += strlen (needle)) n++;
    return n;
}

/* ---- liveness and readiness -------------------------------------------- */

static void test_ready_rules (void **state)
{
    (void)state;
    mon_table_t t;
    mon_table_init (&t);
    const char *why;
    //  Never heard of: the reason says where to look.
    assert_false (mon_ready (&t, 0, &why));
    assert_string_equal (why,
                         "store unreachable (no heartbeat from corral-store has "
                         "reached corral-monitor; check CORRAL_MONITOR_IN_ENDPOINT)");
    feed (&t, "store", "s1", 0, 1000);
    assert_false (mon_ready (&t, 1000, &why));
    assert_non_null (strstr (why, "session service unreachable (no heartbeat from "
                                  "corral-session"));
    feed (&t, "session", "x1", 0, 1000);
    assert_false (mon_ready (&t, 1000, &why));
    assert_string_equal (why, "no worker connected");
    feed (&t, "session", "x1", 2, 1500);
    assert_true (mon_ready (&t, 1500, &why));
    assert_null (why);
    //  Alive means a heartbeat within 3 s: at 4000 the store (1000) is
    //  exactly 3 s old and still alive; at 4001 it is gone.
    assert_true (mon_ready (&t, 4000, &why));
    assert_false (mon_ready (&t, 4001, &why));
    assert_string_equal (why, "store unreachable");
    //  It comes back.
    feed (&t, "store", "s1", 0, 4200);
    assert_true (mon_ready (&t, 4200, &why));
    //  The session service goes, the store stays.
    feed (&t, "store", "s1", 0, 6000);
    assert_false (mon_ready (&t, 6000, &why));
    assert_string_equal (why, "session service unreachable");
    //  Workers counted by the session service, not by worker heartbeats.
    feed (&t, "worker", "w1", 0, 6000);
    feed (&t, "session", "x1", 0, 6000);
    assert_false (mon_ready (&t, 6000, &why));
    assert_string_equal (why, "no worker connected");
    mon_table_fini (&t);
}

static void test_table_keys_and_sweep (void **state)
{
    (void)state;
    mon_table_t t;
    mon_table_init (&t);
    feed (&t, "worker", "b", 0, 0);
    feed (&t, "worker", "a", 0, 0);
    feed (&t, "store", "z", 0, 10);
    feed (&t, "worker", "a", 0, 20); //  the same instance again: one entry
    assert_int_equal (t.count, 3);
    assert_string_equal (t.insts[0]->service, "store");
    assert_string_equal (t.insts[1]->instance, "a");
    assert_int_equal (t.insts[1]->beats, 2);
    assert_int_equal (t.insts[1]->last_ms, 20);
    assert_int_equal (t.beats, 4);
    proto_mon_health_t h;
    proto_service_status_t st[8];
    mon_health (&t, 3010, &h, st, 8);
    assert_false (h.ready);
    assert_int_equal (h.services.count, 3);
    assert_true (st[0].alive);  //  store at 10: 3000 ms old
    assert_false (st[2].alive); //  worker b at 0: 3010 ms old
    assert_int_equal (st[2].age_ms, 3010);
    mon_table_sweep (&t, MON_FORGET_MS + 15);
    assert_int_equal (t.count, 1); //  worker a (20); b (0) and z (10) are forgotten
    assert_string_equal (t.insts[0]->instance, "a");
    mon_table_fini (&t);
}

static void test_identity_checks (void **state)
{
    (void)state;
    mon_table_t t;
    mon_table_init (&t);
    proto_mon_heartbeat_t hb = beat ("Store", "s", NULL, 0);
    assert_int_equal (mon_table_ingest (&t, &hb, 0), CM_E_INVALID);
    hb = beat ("store", "", NULL, 0);
    assert_int_equal (mon_table_ingest (&t, &hb, 0), CM_E_INVALID);
    hb = beat ("store", "a\nb", NULL, 0);
    assert_int_equal (mon_table_ingest (&t, &hb, 0), CM_E_INVALID);
    hb = beat ("store", "\xc3\x28", NULL, 0); //  invalid UTF-8
    assert_int_equal (mon_table_ingest (&t, &hb, 0), CM_E_INVALID);
    char long_service[MON_SERVICE_MAX + 2];
    memset (long_service, 'a', sizeof long_service - 1);
    long_service[sizeof long_service - 1] = 0;
    hb = beat (long_service, "s", NULL, 0);
    assert_int_equal (mon_table_ingest (&t, &hb, 0), CM_E_INVALID);
    long_service[MON_SERVICE_MAX] = 0; //  exactly at the limit
    hb = beat (long_service, "s", NULL, 0);
    assert_int_equal (mon_table_ingest (&t, &hb, 0), 0);
    hb = beat ("store", "caf\xc3\xa9 \"q\"", NULL, 0); //  UTF-8 and quotes are fine
    assert_int_equal (mon_table_ingest (&t, &hb, 0), 0);
    assert_int_equal (t.dropped[MON_DROP_IDENTITY], 5);
    char *text = mon_render_metrics (&t, 0);
    assert_non_null (strstr (
        text, "corral_up{service=\"store\",instance=\"caf\xc3\xa9 \\\"q\\\"\"} 1"));
    free (text);
    mon_table_fini (&t);
}

static void test_table_full (void **state)
{
    (void)state;
    mon_table_t t;
    mon_table_init (&t);
    char name[32];
    for (int i = 0; i < MON_MAX_INSTANCES; i++) {
        snprintf (name, sizeof name, "w%d", i);
        feed (&t, "worker", name, 0, 0);
    }
    proto_mon_heartbeat_t hb = beat ("worker", "one-too-many", NULL, 0);
    assert_int_equal (mon_table_ingest (&t, &hb, 0), CM_E_CAPACITY);
    assert_int_equal (t.dropped[MON_DROP_FULL], 1);
    feed (&t, "worker", "w7", 0, 5); //  known ones still beat
    mon_table_fini (&t);
}

/* ---- labels --------------------------------------------------------------- */

static void test_labels_check (void **state)
{
    (void)state;
    assert_int_equal (mon_labels_check (NULL, false), 0);
    assert_int_equal (mon_labels_check ("", false), 0);
    assert_int_equal (mon_labels_check ("model=\"gpt\"", false), 0);
    assert_int_equal (
        mon_labels_check ("model=\"a\\\"b\\\\c\\nd\",kind=\"input\"", false), 0);
    assert_int_equal (mon_labels_check ("model=\"x\",le=\"0.5\"", true), 0);
    assert_int_equal (mon_labels_check ("le=\"+Inf\"", true), 0);
    const char *bad[] = {
        "model",          "model=",         "model=\"x",       "model=x",
        "model=\"x\",",   "model=\"x\" ",   "1a=\"x\"",        "service=\"x\"",
        "instance=\"x\"", "__name__=\"x\"", "a=\"x\",a=\"y\"", "a=\"\\t\"",
        "a=\"x\ny\"",     "a=\"\xff\"",     "le=\"0.5\"", /* le without want */
        "a=\"b\"c=\"d\"",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal (mon_labels_check (bad[i], false), CM_E_INVALID);
    assert_int_equal (mon_labels_check ("model=\"x\"", true), CM_E_INVALID);
    assert_int_equal (mon_labels_check ("le=\"abc\"", true), CM_E_INVALID);
    assert_int_equal (mon_labels_check ("le=\"\"", true), CM_E_INVALID);
    //  At the length limit and just past it.
    char l[MON_LABELS_MAX + 2];
    memset (l, 'v', sizeof l);
    memcpy (l, "a=\"", 3);
    l[MON_LABELS_MAX - 1] = '"';
    l[MON_LABELS_MAX] = 0;
    assert_int_equal (mon_labels_check (l, false), 0);
    l[MON_LABELS_MAX - 1] = 'v';
    l[MON_LABELS_MAX] = '"';
    l[MON_LABELS_MAX + 1] = 0;
    assert_int_equal (mon_labels_check (l, false), CM_E_INVALID);
}

/* ---- rendering -------------------------------------------------------------- */

static void test_render_families (void **state)
{
    (void)state;
    mon_table_t t;
    mon_table_init (&t);
    proto_stat_t a[] = {
        {.name = "corral_turns_finished_total",
         .value = 3,
         .labels = "stop_reason=\"end_turn\""},
        {.name = "corral_process_resident_memory_bytes", .value = 1048576},
        {.name = "corral_turns_finished_total",
         .value = 1,
         .labels = "stop_reason=\"cancelled\""},
        {.name = "corral_session_workers_connected", .value = 1},
        {.name = "corral_not_a_family", .value = 1},
        {.name = "corral_gateway_requests_total", .value = 1}, //  the gateway's own
        {.name = "corral_sessions", .value = 1, .labels = "service=\"evil\""},
        {.name = "corral_events_total", .value = 1e15},
        {.name = "corral_turns_finished_total",
         .value = 99,
         .labels = "stop_reason=\"end_turn\""},
    };
    proto_mon_heartbeat_t hb = beat ("session", "x1", a, sizeof a / sizeof a[0]);
    assert_int_equal (mon_table_ingest (&t, &hb, 100), 0);
    assert_int_equal (t.dropped[MON_DROP_UNKNOWN], 2);
    assert_int_equal (t.dropped[MON_DROP_LABELS], 1);
    assert_int_equal (t.dropped[MON_DROP_DUPLICATE], 1); //  the second end_turn (99)
    proto_stat_t b[] = {{.name = "corral_process_resident_memory_bytes", .value = 2048}};
    hb = beat ("store", "s1", b, 1);
    assert_int_equal (mon_table_ingest (&t, &hb, 100), 0);
    //  A dead instance contributes corral_up 0 only.
    proto_stat_t c[] = {{.name = "corral_process_resident_memory_bytes", .value = 7}};
    hb = beat ("worker", "gone", c, 1);
    assert_int_equal (mon_table_ingest (&t, &hb, -5000), 0);

    char *text = mon_render_metrics (&t, 200);
    assert_non_null (text);
    //  HELP and TYPE once per family, the samples together after them.
    assert_int_equal (
        count_of (text, "# TYPE corral_process_resident_memory_bytes gauge\n"), 1);
    assert_int_equal (count_of (text, "# HELP corral_turns_finished_total "), 1);
    assert_int_equal (count_of (text, "# TYPE corral_turns_finished_total counter\n"), 1);
    assert_non_null (strstr (text, "# TYPE corral_process_resident_memory_bytes gauge\n"
                                   "corral_process_resident_memory_bytes{service="
                                   "\"session\",instance=\"x1\"} 1048576\n"
                                   "corral_process_resident_memory_bytes{service="
                                   "\"store\",instance=\"s1\"} 2048\n#"));
    assert_non_null (strstr (text,
                             "corral_turns_finished_total{service=\"session\",instance="
                             "\"x1\",stop_reason=\"end_turn\"} 3\n"
                             "corral_turns_finished_total{service=\"session\",instance="
                             "\"x1\",stop_reason=\"cancelled\"} 1\n"));
    assert_non_null (strstr (text,
                             "corral_events_total{service=\"session\",instance=\"x1\"} "
                             "1e+15\n"));
    assert_null (strstr (text, "instance=\"gone\"} 7"));
    assert_non_null (
        strstr (text, "corral_up{service=\"worker\",instance=\"gone\"} 0\n"));
    assert_non_null (strstr (text, "corral_up{service=\"store\",instance=\"s1\"} 1\n"));
    assert_non_null (strstr (text, "corral_ready 1\n"));
    assert_non_null (
        strstr (text, "corral_monitor_dropped_total{reason=\"unknown\"} 2\n"));
    assert_null (strstr (text, "corral_gateway_"));
    assert_null (strstr (text, "evil"));
    assert_null (strstr (text, "corral_not_a_family"));
    assert_null (strstr (text, "} 99\n"));
    free (text);
    mon_table_fini (&t);
}

static void fill_worker (proto_beat_t *b, void *arg)
{
    const proto_hist_t *h = arg;
    proto_beat_add (b, "corral_worker_capacity", NULL, 10);
    proto_beat_hist (b, "corral_model_call_seconds", h, "model", "m\"1", NULL);
    proto_beat_hist (b, "corral_model_call_seconds", h, "model", "m2", NULL);
}

static void test_render_histogram_from_beat (void **state)
{
    (void)state;
    //  The publisher's histogram samples pass the monitor's checks and
    //  render as one family.
    proto_beat_t *b = proto_beat_new (NULL, "worker", "w1");
    assert_non_null (b);
    proto_hist_t h;
    proto_hist_init (&h, proto_hist_latency, proto_hist_latency_n);
    proto_hist_observe (&h, 0.003);
    proto_hist_observe (&h, 0.2);
    proto_hist_observe (&h, 1000);
    const proto_mon_heartbeat_t *hb = proto_beat_collect (b, fill_worker, &h);
    mon_table_t t;
    mon_table_init (&t);
    assert_int_equal (mon_table_ingest (&t, hb, 0), 0);
    assert_int_equal (t.dropped[MON_DROP_LABELS] + t.dropped[MON_DROP_UNKNOWN], 0);
    char *text = mon_render_metrics (&t, 0);
    assert_int_equal (count_of (text, "# TYPE corral_model_call_seconds histogram\n"), 1);
    assert_non_null (strstr (text, "corral_model_call_seconds_bucket{service=\"worker\","
                                   "instance=\"w1\",model=\"m\\\"1\",le=\"0.0025\"} 0\n"
                                   "corral_model_call_seconds_bucket{service=\"worker\","
                                   "instance=\"w1\",model=\"m\\\"1\",le=\"0.005\"} 1\n"));
    assert_non_null (strstr (text, "model=\"m2\",le=\"60\"} 2\n"));
    assert_non_null (strstr (text, "model=\"m2\",le=\"+Inf\"} 3\n"));
    assert_non_null (strstr (text, "corral_model_call_seconds_sum{service=\"worker\","
                                   "instance=\"w1\",model=\"m2\"} 1000.203\n"));
    assert_non_null (strstr (text, "corral_model_call_seconds_count{service=\"worker\","
                                   "instance=\"w1\",model=\"m2\"} 3\n"));
    assert_non_null (strstr (text, "corral_process_open_fds{service=\"worker\""));
    free (text);
    mon_table_fini (&t);
    proto_beat_destroy (&b);
    assert_null (b);
}

/* ---- requests ---------------------------------------------------------------- */

static void test_answers (void **state)
{
    (void)state;
    mon_server_t *s = calloc (1, sizeof *s);
    assert_non_null (s);
    mon_table_init (&s->table);
    proto_msg_init (&s->msg);
    feed (&s->table, "store", "s1", 0, 0);
    proto_buf_t req = {0};
    proto_msg_t reply;
    proto_msg_init (&reply);

    assert_int_equal (proto_encode (&req, PROTO_MON_HEALTH, 9, NULL), 0);
    mon_server_answer (s, req.data, req.size, 10);
    assert_int_equal (proto_decode (&reply, s->buf.data, s->buf.size), 0);
    assert_int_equal (reply.type, PROTO_MON_HEALTH_REPLY);
    assert_int_equal (reply.corr, 9);
    proto_mon_health_t *h = proto_body (&reply, mon_health);
    assert_false (h->ready);
    assert_true (strncmp (h->reason, "session service unreachable", 27) == 0);
    assert_int_equal (h->services.count, 1);

    proto_buf_reset (&req);
    assert_int_equal (proto_encode (&req, PROTO_MON_STATUS, 10, NULL), 0);
    mon_server_answer (s, req.data, req.size, 10);
    assert_int_equal (proto_decode (&reply, s->buf.data, s->buf.size), 0);
    assert_int_equal (reply.type, PROTO_MON_TEXT);
    assert_non_null (strstr (proto_body (&reply, mon_text)->text,
                             "\"reason\":\"session service unreachable"));

    proto_buf_reset (&req);
    assert_int_equal (proto_encode (&req, PROTO_MON_METRICS, 11, NULL), 0);
    mon_server_answer (s, req.data, req.size, 10);
    assert_int_equal (proto_decode (&reply, s->buf.data, s->buf.size), 0);
    assert_non_null (strstr (proto_body (&reply, mon_text)->text, "corral_ready 0\n"));

    //  Another family's message, garbage, a heartbeat on the API socket.
    proto_buf_reset (&req);
    assert_int_equal (proto_encode (&req, PROTO_OK, 12, NULL), 0);
    mon_server_answer (s, req.data, req.size, 10);
    assert_int_equal (proto_decode (&reply, s->buf.data, s->buf.size), 0);
    assert_int_equal (reply.type, PROTO_ERROR);
    assert_int_equal (reply.corr, 12);
    mon_server_answer (s, "\xdf\xff\xff\xff\xff", 5, 10);
    assert_int_equal (proto_decode (&reply, s->buf.data, s->buf.size), 0);
    assert_int_equal (reply.type, PROTO_ERROR);
    assert_int_equal (s->table.dropped[MON_DROP_REQUEST], 2);

    proto_buf_fini (&req);
    proto_msg_fini (&reply);
    proto_msg_fini (&s->msg);
    proto_buf_fini (&s->buf);
    mon_table_fini (&s->table);
    free (s);
}

static void test_ingest_bytes (void **state)
{
    (void)state;
    mon_table_t t;
    mon_table_init (&t);
    proto_msg_t scratch;
    proto_msg_init (&scratch);
    //  A map that claims 4 G entries in 5 bytes, then a non-heartbeat.
    assert_int_not_equal (
        mon_table_ingest_bytes (&t, &scratch, "\xdf\xff\xff\xff\xff", 5, 0), 0);
    proto_buf_t buf = {0};
    assert_int_equal (proto_encode (&buf, PROTO_MON_HEALTH, 1, NULL), 0);
    assert_int_equal (mon_table_ingest_bytes (&t, &scratch, buf.data, buf.size, 0),
                      CM_E_UNKNOWN_TYPE);
    proto_buf_reset (&buf);
    proto_mon_heartbeat_t hb = beat ("store", "s1", NULL, 0);
    assert_int_equal (proto_encode (&buf, PROTO_MON_HEARTBEAT, 0, &hb), 0);
    assert_int_equal (mon_table_ingest_bytes (&t, &scratch, buf.data, buf.size, 0), 0);
    assert_int_equal (t.count, 1);
    assert_int_equal (t.dropped[MON_DROP_UNDECODABLE], 1);
    assert_int_equal (t.dropped[MON_DROP_TYPE], 1);
    proto_buf_fini (&buf);
    proto_msg_fini (&scratch);
    mon_table_fini (&t);
}

int main (void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test (test_ready_rules),
        cmocka_unit_test (test_table_keys_and_sweep),
        cmocka_unit_test (test_identity_checks),
        cmocka_unit_test (test_table_full),
        cmocka_unit_test (test_labels_check),
        cmocka_unit_test (test_render_families),
        cmocka_unit_test (test_render_histogram_from_beat),
        cmocka_unit_test (test_answers),
        cmocka_unit_test (test_ingest_bytes),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
