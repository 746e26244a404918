/*  test_cm_zmq.c - socket options, ROUTER/DEALER round trips, error codes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#include "cm_error.h"
#include "cm_log.h"
#include "cm_time.h"
#include "cm_zmq.h"

#define S_RCVTIMEO 5000 /* a broken test fails instead of hanging */

typedef struct {
    void *router;
    void *dealer;
    char dir[64];
} pair_t;

static int s_getint (void *sock, int option)
{
    int value = -1;
    size_t len = sizeof (value);
    assert_int_equal (zmq_getsockopt (sock, option, &value, &len), 0);
    return value;
}

static void s_timeouts (void *sock)
{
    int ms = S_RCVTIMEO;
    assert_int_equal (zmq_setsockopt (sock, ZMQ_RCVTIMEO, &ms, sizeof (ms)), 0);
}

static int s_setup (void **state)
{
    pair_t *pair = calloc (1, sizeof (pair_t));
    if (!pair) return -1;
    cm_log_init ("test", CM_LOG_INFO);
    *state = pair;
    return 0;
}

static int s_teardown (void **state)
{
    pair_t *pair = *state;
    cm_zmq_close (&pair->router);
    cm_zmq_close (&pair->dealer);
    cm_zmq_term ();
    if (pair->dir[0]) {
        char path[128];
        snprintf (path, sizeof (path), "%s/router.sock", pair->dir);
        unlink (path);
        rmdir (pair->dir);
    }
    free (pair);
    return 0;
}

static void test_context_is_shared (void **state)
{
    void *ctx = cm_zmq_ctx ();
    assert_non_null (ctx);
    assert_ptr_equal (cm_zmq_ctx (), ctx);
    //  czmq was told to leave the signals alone.
    assert_string_equal (getenv ("ZSYS_SIGHANDLER"), "false");
}

static void test_options (void **state)
{
    pair_t *pair = *state;
    pair->router = cm_zmq_socket (ZMQ_ROUTER, 0);
    pair->dealer = cm_zmq_socket (ZMQ_DEALER, 500);
    assert_non_null (pair->router);
    assert_non_null (pair->dealer);
    assert_int_equal (s_getint (pair->router, ZMQ_LINGER), CM_ZMQ_LINGER_MS);
    assert_int_equal (s_getint (pair->dealer, ZMQ_LINGER), CM_ZMQ_LINGER_MS);
    assert_int_equal (s_getint (pair->router, ZMQ_SNDHWM), CM_ZMQ_HWM);
    assert_int_equal (s_getint (pair->router, ZMQ_RCVHWM), CM_ZMQ_HWM);
    assert_int_equal (s_getint (pair->dealer, ZMQ_SNDHWM), 500);
    assert_int_equal (s_getint (pair->dealer, ZMQ_RCVHWM), 500);
    assert_int_equal (s_getint (pair->router, ZMQ_TCP_KEEPALIVE), 1);
    assert_int_equal (s_getint (pair->dealer, ZMQ_IMMEDIATE), 1);
    assert_int_equal (s_getint (pair->router, ZMQ_IMMEDIATE), 0);

    errno = 0;
    assert_null (cm_zmq_socket (ZMQ_DEALER, -1));
    assert_int_equal (errno, EINVAL);
    assert_null (cm_zmq_socket (12345, 0));
}

//  Dealer -> router -> dealer over the endpoint, frames intact.
static void s_round_trip (pair_t *pair, const char *endpoint)
{
    pair->router = cm_zmq_socket (ZMQ_ROUTER, 0);
    pair->dealer = cm_zmq_socket (ZMQ_DEALER, 0);
    s_timeouts (pair->router);
    s_timeouts (pair->dealer);
    assert_int_equal (cm_zmq_bind (pair->router, endpoint), 0);
    assert_int_equal (cm_zmq_connect (pair->dealer, endpoint), 0);
    assert_false (cm_zmq_readable (pair->router));

    cm_frame_t request[] = {{"hello", 5}, {"world!", 6}};
    assert_int_equal (cm_zmq_sendv (pair->dealer, request, 2, 0), 0);

    zmq_pollitem_t item = {pair->router, 0, ZMQ_POLLIN, 0};
    assert_int_equal (zmq_poll (&item, 1, S_RCVTIMEO), 1);
    assert_true (cm_zmq_readable (pair->router));

    char identity[256];
    int idlen = zmq_recv (pair->router, identity, sizeof (identity), 0);
    assert_true (idlen > 0);
    int more = s_getint (pair->router, ZMQ_RCVMORE);
    assert_int_equal (more, 1);
    char body[64];
    assert_int_equal (zmq_recv (pair->router, body, sizeof (body), 0), 5);
    assert_memory_equal (body, "hello", 5);
    assert_int_equal (zmq_recv (pair->router, body, sizeof (body), 0), 6);
    assert_memory_equal (body, "world!", 6);
    assert_int_equal (s_getint (pair->router, ZMQ_RCVMORE), 0);

    //  The reply goes back by identity; an empty frame is allowed.
    cm_frame_t reply[] = {{identity, (size_t)idlen}, {NULL, 0}, {"ok", 2}};
    assert_int_equal (cm_zmq_sendv (pair->router, reply, 3, 0), 0);
    assert_int_equal (zmq_recv (pair->dealer, body, sizeof (body), 0), 0);
    assert_int_equal (s_getint (pair->dealer, ZMQ_RCVMORE), 1);
    assert_int_equal (zmq_recv (pair->dealer, body, sizeof (body), 0), 2);
    assert_memory_equal (body, "ok", 2);
    assert_int_equal (s_getint (pair->dealer, ZMQ_RCVMORE), 0);
}

static void test_round_trip_inproc (void **state)
{
    s_round_trip (*state, "inproc://test-cm-zmq");
}

static void test_round_trip_ipc (void **state)
{
    pair_t *pair = *state;
    snprintf (pair->dir, sizeof (pair->dir), "/tmp/test_cm_zmq_XXXXXX");
    assert_non_null (mkdtemp (pair->dir));
    char endpoint[128];
    snprintf (endpoint, sizeof (endpoint), "ipc://%s/router.sock", pair->dir);
    s_round_trip (pair, endpoint);
}

static void test_router_mandatory (void **state)
{
    pair_t *pair = *state;
    pair->router = cm_zmq_socket (ZMQ_ROUTER, 0);
    assert_int_equal (cm_zmq_bind (pair->router, "inproc://test-cm-zmq-mandatory"), 0);
    cm_frame_t frames[] = {{"nobody", 6}, {"lost", 4}};
    assert_int_equal (cm_zmq_sendv (pair->router, frames, 2, 0), CM_E_UNAVAILABLE);
    assert_int_equal (cm_zmq_sendv (pair->router, frames, 2, ZMQ_DONTWAIT),
                      CM_E_UNAVAILABLE);
}

static void test_dealer_without_peer (void **state)
{
    pair_t *pair = *state;
    //  IMMEDIATE: with no completed connection nothing is queued.  (An
    //  inproc connect to an unbound name makes its pipe at once, so this
    //  uses a TCP port nobody listens on.)
    pair->dealer = cm_zmq_socket (ZMQ_DEALER, 0);
    assert_int_equal (cm_zmq_connect (pair->dealer, "tcp://127.0.0.1:1"), 0);
    cm_frame_t frame = {"x", 1};
    assert_int_equal (cm_zmq_sendv (pair->dealer, &frame, 1, ZMQ_DONTWAIT),
                      CM_E_CAPACITY);
}

static void test_bad_endpoints (void **state)
{
    pair_t *pair = *state;
    char *log = NULL;
    size_t loglen = 0;
    FILE *stream = open_memstream (&log, &loglen);
    assert_non_null (stream);
    cm_log_set_stream (stream);

    pair->router = cm_zmq_socket (ZMQ_ROUTER, 0);
    assert_int_equal (cm_zmq_bind (pair->router, "bogus://x"), CM_E_IO);
    assert_int_equal (cm_zmq_bind (pair->router, "tcp://256.1.1.1:5555"), CM_E_IO);
    assert_int_equal (cm_zmq_connect (pair->router, "nope"), CM_E_IO);
    //  Two binds to one inproc name: the second fails.
    assert_int_equal (cm_zmq_bind (pair->router, "inproc://test-cm-zmq-twice"), 0);
    pair->dealer = cm_zmq_socket (ZMQ_DEALER, 0);
    assert_int_equal (cm_zmq_bind (pair->dealer, "inproc://test-cm-zmq-twice"), CM_E_IO);

    cm_log_set_stream (NULL);
    fclose (stream);
    //  Each failure is logged with the endpoint and zmq's reason.
    assert_non_null (strstr (log, "cannot bind bogus://x: Protocol not supported"));
    assert_non_null (strstr (log, "cannot bind tcp://256.1.1.1:5555: "));
    assert_non_null (strstr (log, "cannot connect to nope: Invalid argument"));
    assert_non_null (
        strstr (log, "cannot bind inproc://test-cm-zmq-twice: Address already"));
    free (log);
}

static void test_sendv_arguments (void **state)
{
    pair_t *pair = *state;
    pair->dealer = cm_zmq_socket (ZMQ_DEALER, 0);
    cm_frame_t frame = {"x", 1};
    assert_int_equal (cm_zmq_sendv (pair->dealer, &frame, 0, 0), CM_E_INVALID);
    assert_int_equal (cm_zmq_sendv (pair->dealer, NULL, 1, 0), CM_E_INVALID);
    assert_int_equal (cm_zmq_sendv (NULL, &frame, 1, 0), CM_E_INVALID);
}

static void test_close_is_idempotent (void **state)
{
    void *sock = cm_zmq_socket (ZMQ_PUB, 0);
    assert_non_null (sock);
    cm_zmq_close (&sock);
    assert_null (sock);
    cm_zmq_close (&sock);
    cm_zmq_close (NULL);
    //  term with every socket closed returns; a second term is a no-op.
    cm_zmq_term ();
    cm_zmq_term ();
}

//  A SUB subscribed while its peer is absent keeps the subscription queued
//  for a connection that never completes: closed with cm_zmq_close_linger
//  (0) the context ends at once, not after CM_ZMQ_LINGER_MS.
static void test_close_linger (void **state)
{
    (void)state;
    void *sub = cm_zmq_socket (ZMQ_SUB, 0);
    assert_non_null (sub);
    assert_int_equal (zmq_setsockopt (sub, ZMQ_SUBSCRIBE, "s/", 2), 0);
    assert_int_equal (cm_zmq_connect (sub, "tcp://127.0.0.1:1"), 0);
    usleep (100 * 1000);
    cm_zmq_close_linger (&sub, 0);
    assert_null (sub);
    cm_zmq_close_linger (&sub, 0); //  idempotent
    cm_zmq_close_linger (NULL, 0);
    int64_t t0 = cm_mono_ms ();
    cm_zmq_term ();
    assert_true (cm_mono_ms () - t0 < 1000);
}

//  [topic][body] off a SUB: the right shape, one frame, three frames.
static void test_recv_topic (void **state)
{
    (void)state;
    void *pub = cm_zmq_socket (ZMQ_PUB, 0);
    void *sub = cm_zmq_socket (ZMQ_SUB, 0);
    assert_int_equal (zmq_bind (pub, "inproc://recv-topic"), 0);
    assert_int_equal (zmq_connect (sub, "inproc://recv-topic"), 0);
    assert_int_equal (zmq_setsockopt (sub, ZMQ_SUBSCRIBE, "", 0), 0);
    usleep (100 * 1000); //  the subscription reaches the PUB
    zmq_msg_t topic, body;
    assert_int_equal (cm_zmq_recv_topic (sub, &topic, &body), 0);
    zmq_msg_close (&topic);
    zmq_msg_close (&body);
    cm_frame_t two[] = {{"t/", 2}, {"body", 4}},
               three[] = {{"t/", 2}, {"a", 1}, {"b", 1}};
    assert_int_equal (cm_zmq_sendv (pub, two, 1, 0), 0);
    assert_int_equal (cm_zmq_sendv (pub, three, 3, 0), 0);
    assert_int_equal (cm_zmq_sendv (pub, two, 2, 0), 0);
    zmq_pollitem_t it = {sub, 0, ZMQ_POLLIN, 0};
    int want[] = {1, 3, 2};
    for (int i = 0; i < 3; i++) {
        assert_int_equal (zmq_poll (&it, 1, 2000), 1);
        assert_int_equal (cm_zmq_recv_topic (sub, &topic, &body), want[i]);
        if (want[i] == 2) {
            assert_int_equal (zmq_msg_size (&body), 4);
            assert_memory_equal (zmq_msg_data (&body), "body", 4);
        }
        zmq_msg_close (&topic);
        zmq_msg_close (&body);
    }
    cm_zmq_close (&sub);
    cm_zmq_close (&pub);
}

//  Requests on a ROUTER: a DEALER's, a REQ's (answered in its shape), and
//  one of another shape (dropped, its frames counted).
static void test_recv_request (void **state)
{
    (void)state;
    void *router = cm_zmq_socket (ZMQ_ROUTER, 0);
    void *dealer = cm_zmq_socket (ZMQ_DEALER, 0);
    void *req = cm_zmq_socket (ZMQ_REQ, 0);
    assert_int_equal (zmq_bind (router, "inproc://recv-request"), 0);
    assert_int_equal (zmq_connect (dealer, "inproc://recv-request"), 0);
    assert_int_equal (zmq_connect (req, "inproc://recv-request"), 0);
    s_timeouts (dealer);
    s_timeouts (req);
    cm_zmq_request_t r;
    int frames = -1;
    assert_int_equal (cm_zmq_recv_request (router, &r, &frames), 0);
    zmq_pollitem_t it = {router, 0, ZMQ_POLLIN, 0};
    void *peers[] = {dealer, req};
    for (int i = 0; i < 2; i++) {
        assert_int_equal (zmq_send (peers[i], "ping", 4, 0), 4);
        assert_int_equal (zmq_poll (&it, 1, 2000), 1);
        assert_int_equal (cm_zmq_recv_request (router, &r, &frames), 1);
        assert_int_equal (frames, i == 0 ? 2 : 3);
        assert_int_equal (r.req_style, i == 1);
        assert_memory_equal (zmq_msg_data (&r.body), "ping", 4);
        assert_int_equal (cm_zmq_send_reply (router, &r, "pong", 4), 0);
        cm_zmq_request_close (&r);
        char buf[8];
        assert_int_equal (zmq_recv (peers[i], buf, sizeof buf, 0), 4);
        assert_memory_equal (buf, "pong", 4);
    }
    cm_frame_t odd[] = {{"x", 1}, {"y", 1}, {"z", 1}};
    assert_int_equal (cm_zmq_sendv (dealer, odd, 3, 0), 0);
    assert_int_equal (zmq_poll (&it, 1, 2000), 1);
    assert_int_equal (cm_zmq_recv_request (router, &r, &frames), -1);
    assert_int_equal (frames, 4);
    cm_zmq_close (&req);
    cm_zmq_close (&dealer);
    cm_zmq_close (&router);
}

//  A handshake watch sees a peer connect.
static void test_watch_handshakes (void **state)
{
    pair_t *pair = *state;
    char ep[160];
    snprintf (pair->dir, sizeof pair->dir, "/tmp/cm_zmq_watch_XXXXXX");
    assert_non_null (mkdtemp (pair->dir));
    snprintf (ep, sizeof ep, "ipc://%s/router.sock", pair->dir);
    void *sub = cm_zmq_socket (ZMQ_SUB, 0);
    void *watch = cm_zmq_watch_handshakes (sub, "inproc://watch-test");
    assert_non_null (watch);
    assert_false (cm_zmq_handshakes (watch));
    assert_false (cm_zmq_handshakes (NULL));
    void *pub = cm_zmq_socket (ZMQ_PUB, 0);
    assert_int_equal (zmq_bind (pub, ep), 0);
    assert_int_equal (zmq_connect (sub, ep), 0);
    bool seen = false;
    for (int i = 0; i < 100 && !seen; i++) {
        usleep (20 * 1000);
        seen = cm_zmq_handshakes (watch);
    }
    assert_true (seen);
    cm_zmq_unwatch (sub, &watch);
    assert_null (watch);
    cm_zmq_unwatch (sub, &watch); //  idempotent
    cm_zmq_close_linger (&sub, 0);
    cm_zmq_close (&pub);
}

int main (void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown (test_context_is_shared, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_options, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_round_trip_inproc, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_round_trip_ipc, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_router_mandatory, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_dealer_without_peer, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_bad_endpoints, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_sendv_arguments, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_close_is_idempotent, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_close_linger, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_recv_topic, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_recv_request, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_watch_handshakes, s_setup, s_teardown),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
