/*  sess_store.c - asynchronous calls to corral-store.

    Each call keeps its encoded request and a continuation under its
    correlation id.  A call not answered within SESS_STORE_TIMEOUT is sent
    again with the same corr (every store request the session service makes
    is idempotent: appends acknowledge stored seqs, puts replace, usage
    adds carry the turn id and the store applies each id once), so a store
    restart or a lost frame costs a delay, never data.  A late answer
    to a call already answered is dropped.
*/
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "cm_log.h"
#include "cm_time.h"
#include "cm_zmq.h"
#include "sess.h"

typedef struct {
    uint64_t corr;
    proto_type_t type;
    sess_store_cb cb;
    void *arg;
    sess_store_drop_fn drop; //  frees arg if the call is never answered
    int64_t deadline;
    int attempts;
    size_t size;
    char data[];
} store_call_t;

static void send_call (sess_server_t *self, store_call_t *call)
{
    //  DONTWAIT: with no connection yet (ZMQ_IMMEDIATE) the send fails at
    //  once; try again soon rather than after a whole timeout.
    bool sent = zmq_send (self->store, call->data, call->size, ZMQ_DONTWAIT) >= 0;
    call->attempts++;
    call->deadline = cm_mono_ms () + (sent ? SESS_STORE_TIMEOUT : 100);
}

int sess_store_call (sess_server_t *self, proto_type_t type, const void *body,
                     sess_store_cb cb, void *arg)
{
    return sess_store_call_owned (self, type, body, cb, arg, free);
}

int sess_store_call_owned (sess_server_t *self, proto_type_t type, const void *body,
                           sess_store_cb cb, void *arg, sess_store_drop_fn drop)
{
    //  Encode into the reused buffer, then one exact allocation.
    proto_buf_t *buf = &self->store_buf;
    proto_buf_reset (buf);
    uint64_t corr = ++self->store_corr;
    int rc = proto_encode (buf, type, corr, body);
    if (rc) {
        cm_error ("cannot encode %s: %s", proto_type_name (type), cm_strerror (rc));
        return rc;
    }
    store_call_t *call = malloc (sizeof *call + buf->size);
    if (!call) return CM_E_NOMEM;
    *call = (store_call_t){.corr = corr,
                           .type = type,
                           .cb = cb,
                           .arg = arg,
                           .drop = drop,
                           .size = buf->size};
    memcpy (call->data, buf->data, buf->size);
    if (cm_map_put_u64 (self->store_calls, corr, call)) {
        free (call);
        return CM_E_NOMEM;
    }
    send_call (self, call);
    return 0;
}

void sess_store_on_reply (sess_server_t *self, const void *data, size_t size)
{
    proto_msg_t reply;
    proto_msg_init (&reply);
    int rc = proto_decode (&reply, data, size);
    if (!reply.corr_valid) {
        cm_warn ("store sent an unreadable reply: %s", proto_msg_error (&reply));
        proto_msg_fini (&reply);
        return;
    }
    store_call_t *call = cm_map_remove_u64 (self->store_calls, reply.corr);
    if (!call) { //  answered already (we resent it), or not ours
        proto_msg_fini (&reply);
        return;
    }
    if (rc == 0 && reply.type == PROTO_ERROR) {
        proto_error_t *e = proto_body (&reply, error);
        rc = e->code < 0 ? (int)e->code : CM_E_INTERNAL;
        cm_warn ("store refused %s: %s", proto_type_name (call->type), e->message);
    } else if (rc)
        cm_error ("store reply undecodable: %s", proto_msg_error (&reply));
    if (call->cb) call->cb (self, call->arg, rc, &reply);
    free (call);
    proto_msg_fini (&reply);
}

void sess_store_tick (sess_server_t *self, int64_t now)
{
    size_t pos = 0;
    void *value;
    while (cm_map_next (self->store_calls, &pos, NULL, &value)) {
        store_call_t *call = value;
        if (call->deadline > now) continue;
        if (call->attempts == 2 || call->attempts % 20 == 0)
            cm_warn ("store has not answered call %llu after %d attempts; resending",
                     (unsigned long long)call->corr, call->attempts);
        send_call (self, call);
    }
}

void sess_store_fini (sess_server_t *self)
{
    size_t pos = 0;
    void *value;
    if (!self->store_calls) return;
    //  Calls still in flight at exit: their continuations never run, so
    //  their arguments are freed here (the store applies or drops the
    //  request on its own; every one is idempotent and retried by whoever
    //  asked, or re-derived at the next start).
    while (cm_map_next (self->store_calls, &pos, NULL, &value)) {
        store_call_t *call = value;
        if (call->drop && call->arg) call->drop (call->arg);
        free (call);
    }
    cm_map_destroy (&self->store_calls);
}
