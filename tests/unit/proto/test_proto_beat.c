/*  test_proto_beat.c - the heartbeat publisher: label text, histograms, the
    common process statistics, and a beat on a real PUB socket.
*/
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <zmq.h>

#include "cm_time.h"
#include "cm_zmq.h"
#include "proto_beat.h"

static void test_labels (void **state)
{
    (void)state;
    char out[64];
    assert_int_equal (proto_labels_fmt (out, sizeof out, NULL), 0);
    assert_string_equal (out, "");
    assert_true (proto_labels_fmt (out, sizeof out, "model", "a\"b\\c\nd", "kind", "in",
                                   NULL) > 0);
    assert_string_equal (out, "model=\"a\\\"b\\\\c\\nd\",kind=\"in\"");
    //  Too long for out: refused whole.
    assert_int_equal (proto_labels_fmt (out, 10, "model", "abcdefghijkl", NULL), -1);
    assert_string_equal (out, "");
    //  A value longer than PROTO_BEAT_VALUE_MAX is cut, never inside a
    //  UTF-8 sequence.
    char big[PROTO_BEAT_VALUE_MAX + 8], lab[PROTO_BEAT_LABELS_MAX];
    memset (big, 'x', sizeof big);
    big[PROTO_BEAT_VALUE_MAX - 1] = '\xc3'; //  é straddles the cut
    big[PROTO_BEAT_VALUE_MAX] = '\xa9';
    big[sizeof big - 1] = 0;
    int n = proto_labels_fmt (lab, sizeof lab, "m", big, NULL);
    assert_int_equal (n, 2 + 1 + (PROTO_BEAT_VALUE_MAX - 1) + 1);
    assert_int_equal (lab[n - 2], 'x');
}

static void test_histogram (void **state)
{
    (void)state;
    static const double bounds[] = {0.1, 1};
    proto_hist_t h;
    proto_hist_init (&h, bounds, 2);
    proto_hist_observe (&h, 0.1); //  le is inclusive
    proto_hist_observe (&h, 0.5);
    proto_hist_observe (&h, 7);
    assert_int_equal (h.counts[0], 1);
    assert_int_equal (h.counts[1], 1);
    assert_int_equal (h.counts[2], 1);
    assert_int_equal (h.count, 3);
    assert_true (h.sum > 7.59 && h.sum < 7.61);
    proto_hist_init (&h, proto_hist_latency, 1000); //  capped
    assert_int_equal (h.nbounds, PROTO_HIST_MAX_BUCKETS);
}

static void fill (proto_beat_t *b, void *arg)
{
    static const double bounds[] = {0.1, 1};
    proto_hist_t h;
    proto_hist_init (&h, bounds, 2);
    proto_hist_observe (&h, 0.5);
    proto_beat_hist (b, "corral_x_seconds", &h, "tool", "read", NULL);
    proto_beat_addv (b, "corral_y_total", 5, "kind", "a", NULL);
    proto_beat_add (b, "corral_z", NULL, *(double *)arg);
}

static void test_collect (void **state)
{
    (void)state;
    proto_beat_t *b = proto_beat_new (NULL, "store", "s1");
    double z = 3;
    const proto_mon_heartbeat_t *hb = proto_beat_collect (b, fill, &z);
    assert_string_equal (hb->service, "store");
    assert_string_equal (hb->instance, "s1");
    assert_true (hb->pid > 0);
    //  4 common + 4 buckets/sum/count + 2.
    assert_int_equal (hb->stats.count, 4 + 5 + 2);
    assert_string_equal (hb->stats.items[0].name, "corral_process_resident_memory_bytes");
    assert_true (hb->stats.items[0].value > 1024 * 1024);
    assert_string_equal (hb->stats.items[2].name, "corral_process_open_fds");
    assert_true (hb->stats.items[2].value >= 3);
    assert_string_equal (hb->stats.items[4].name, "corral_x_seconds_bucket");
    assert_string_equal (hb->stats.items[4].labels, "tool=\"read\",le=\"0.1\"");
    assert_true (hb->stats.items[4].value == 0);
    assert_string_equal (hb->stats.items[6].labels, "tool=\"read\",le=\"+Inf\"");
    assert_true (hb->stats.items[6].value == 1);
    assert_string_equal (hb->stats.items[7].name, "corral_x_seconds_sum");
    assert_string_equal (hb->stats.items[8].name, "corral_x_seconds_count");
    assert_string_equal (hb->stats.items[9].labels, "kind=\"a\"");
    assert_null (hb->stats.items[10].labels);
    //  A second collect starts afresh.
    hb = proto_beat_collect (b, NULL, NULL);
    assert_int_equal (hb->stats.count, 4);
    //  The record encodes.
    proto_buf_t buf = {0};
    assert_int_equal (proto_encode (&buf, PROTO_MON_HEARTBEAT, 0, hb), 0);
    proto_buf_fini (&buf);
    proto_beat_destroy (&b);
    proto_beat_destroy (&b); //  idempotent
}

static void test_tick_publishes (void **state)
{
    (void)state;
    void *sub = cm_zmq_socket (ZMQ_SUB, 0);
    assert_non_null (sub);
    zmq_setsockopt (sub, ZMQ_SUBSCRIBE, "hb/", 3);
    assert_int_equal (cm_zmq_bind (sub, "inproc://beat-test"), 0);
    proto_beat_t *b = proto_beat_new ("inproc://beat-test", "worker", NULL);
    assert_non_null (b);
    assert_non_null (strchr (proto_beat_instance (b), '-')); //  host-pid
    int64_t now = cm_mono_ms ();
    assert_int_equal (proto_beat_due_ms (b, now), 0);
    //  Beats until one arrives (the subscription takes a moment).
    bool got = false;
    for (int i = 0; i < 50 && !got; i++) {
        now += PROTO_BEAT_MS;
        assert_int_equal (proto_beat_tick (b, now, NULL, NULL), 1);
        assert_int_equal (proto_beat_tick (b, now, NULL, NULL), 0); //  not due again
        assert_int_equal (proto_beat_due_ms (b, now), PROTO_BEAT_MS);
        zmq_pollitem_t it = {sub, 0, ZMQ_POLLIN, 0};
        if (zmq_poll (&it, 1, 20) == 1) {
            char topic[32] = "";
            int tl = zmq_recv (sub, topic, sizeof topic - 1, 0);
            assert_true (tl > 0);
            topic[tl] = 0;
            assert_string_equal (topic, "hb/worker/");
            zmq_msg_t m;
            zmq_msg_init (&m);
            assert_true (zmq_msg_recv (&m, sub, 0) > 0);
            proto_msg_t msg;
            proto_msg_init (&msg);
            assert_int_equal (proto_decode (&msg, zmq_msg_data (&m), zmq_msg_size (&m)),
                              0);
            assert_int_equal (msg.type, PROTO_MON_HEARTBEAT);
            assert_string_equal (proto_body (&msg, mon_heartbeat)->service, "worker");
            proto_msg_fini (&msg);
            zmq_msg_close (&m);
            got = true;
        }
    }
    assert_true (got);
    proto_beat_destroy (&b);
    cm_zmq_close (&sub);
    //  No monitor at all: a beat still goes out without blocking.
    b = proto_beat_new ("tcp://127.0.0.1:1", "store", "s");
    int64_t t0 = cm_mono_ms ();
    for (int i = 0; i < 20; i++) proto_beat_tick (b, t0 + i * PROTO_BEAT_MS, NULL, NULL);
    assert_true (cm_mono_ms () - t0 < 500);
    proto_beat_destroy (&b);
    cm_zmq_term ();
}

int main (void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test (test_labels),
        cmocka_unit_test (test_histogram),
        cmocka_unit_test (test_collect),
        cmocka_unit_test (test_tick_publishes),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
