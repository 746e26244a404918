/*  test_sess_store.c - store calls still in flight when corral-session
    stops: their continuations never run, and their arguments are freed
    (sess_store_call: with free(); sess_store_call_owned: with its drop).
    Under the asan preset LeakSanitizer checks the first; a counter the
    second.  No store is connected: with ZMQ_IMMEDIATE every send fails and
    each call stays pending, as when the store is down at shutdown.
*/
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "cm_log.h"
#include "cm_zmq.h"
#include "sess.h"

static int s_drops, s_callbacks;

static void on_reply (sess_server_t *self, void *arg, int rc, proto_msg_t *reply)
{
    (void)self;
    (void)rc;
    (void)reply;
    s_callbacks++;
    free (arg);
}

typedef struct {
    char *text;
} owned_t;

static void owned_drop (void *arg)
{
    owned_t *o = arg;
    s_drops++;
    free (o->text);
    free (o);
}

static void test_fini_frees_pending_args (void **state)
{
    (void)state;
    cm_log_init ("test", CM_LOG_ERROR);
    sess_server_t self;
    memset (&self, 0, sizeof self);
    proto_buf_init (&self.store_buf);
    self.store_calls = cm_map_new (8);
    self.store = cm_zmq_socket (ZMQ_DEALER, 0);
    assert_non_null (self.store_calls);
    assert_non_null (self.store);
    assert_int_equal (cm_zmq_connect (self.store, "inproc://no-store-here"), 0);

    //  A session put in flight (sess_spine.c): its arg is a 16-byte id.
    cm_uuid_t *id = calloc (1, sizeof *id);
    assert_non_null (id);
    proto_id_req_t req = {.id = *id};
    assert_int_equal (
        sess_store_call (&self, PROTO_STORE_SESSION_GET, &req, on_reply, id), 0);
    //  One with a nested allocation and its own drop.
    owned_t *o = calloc (1, sizeof *o);
    assert_non_null (o);
    o->text = strdup ("tenant");
    assert_int_equal (sess_store_call_owned (&self, PROTO_STORE_SESSION_GET, &req,
                                             on_reply, o, owned_drop),
                      0);
    //  And one without an argument.
    assert_int_equal (sess_store_call (&self, PROTO_STORE_SESSION_GET, &req, NULL, NULL),
                      0);
    assert_int_equal (cm_map_size (self.store_calls), 3);

    sess_store_fini (&self);
    assert_null (self.store_calls);
    assert_int_equal (s_drops, 1);
    assert_int_equal (s_callbacks, 0); //  no continuation runs at exit
    sess_store_fini (&self);           //  idempotent
    cm_zmq_close (&self.store);
    cm_zmq_term ();
    proto_buf_fini (&self.store_buf);
}

int main (void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test (test_fini_frees_pending_args),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
