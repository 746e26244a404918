/*  proto_rpc.c - DEALER requester with correlation ids (see proto_rpc.h). */
#include <errno.h>
#include <stdlib.h>
#include <zmq.h>

#include "cm_id.h"
#include "cm_log.h"
#include "cm_time.h"
#include "cm_zmq.h"
#include "proto_rpc.h"

struct proto_rpc {
    void *sock;
    uint64_t next_corr;
    zmq_msg_t frame; //  the last reply's bytes
    proto_buf_t buf;
};

proto_rpc_t *proto_rpc_new (const char *endpoint)
{
    proto_rpc_t *self = calloc (1, sizeof *self);
    if (!self) return NULL;
    self->sock = cm_zmq_socket (ZMQ_DEALER, 0);
    if (!self->sock || cm_zmq_connect (self->sock, endpoint)) {
        cm_zmq_close (&self->sock);
        free (self);
        return NULL;
    }
    //  Start from a random corr so replies meant for an earlier client
    //  with the same identity can never match.
    cm_random (&self->next_corr, sizeof self->next_corr);
    self->next_corr >>= 1;
    zmq_msg_init (&self->frame);
    return self;
}

void proto_rpc_destroy (proto_rpc_t **self_p)
{
    proto_rpc_t *self = *self_p;
    if (!self) return;
    zmq_msg_close (&self->frame);
    cm_zmq_close (&self->sock);
    proto_buf_fini (&self->buf);
    free (self);
    *self_p = NULL;
}

void *proto_rpc_socket (proto_rpc_t *self)
{
    return self->sock;
}

int proto_rpc_send (proto_rpc_t *self, proto_type_t type, const void *body,
                    int timeout_ms, uint64_t *corr)
{
    proto_buf_reset (&self->buf);
    uint64_t id = ++self->next_corr;
    int rc = proto_encode (&self->buf, type, id, body);
    if (rc) return rc;
    //  ZMQ_IMMEDIATE: with no connected peer the send would block; wait
    //  for writability instead, bounded.
    zmq_pollitem_t item = {self->sock, 0, ZMQ_POLLOUT, 0};
    if (zmq_poll (&item, 1, timeout_ms) <= 0) return CM_E_UNAVAILABLE;
    if (zmq_send (self->sock, self->buf.data, self->buf.size, ZMQ_DONTWAIT) < 0)
        return errno == EAGAIN ? CM_E_UNAVAILABLE : CM_E_IO;
    if (corr) *corr = id;
    return 0;
}

int proto_rpc_recv (proto_rpc_t *self, proto_msg_t *reply, int timeout_ms)
{
    zmq_pollitem_t item = {self->sock, 0, ZMQ_POLLIN, 0};
    if (zmq_poll (&item, 1, timeout_ms) <= 0) return CM_E_TIMEOUT;
    zmq_msg_close (&self->frame);
    zmq_msg_init (&self->frame);
    if (zmq_msg_recv (&self->frame, self->sock, ZMQ_DONTWAIT) < 0) return CM_E_TIMEOUT;
    while (zmq_msg_more (&self->frame)) { //  not our shape: keep the last frame
        zmq_msg_close (&self->frame);
        zmq_msg_init (&self->frame);
        if (zmq_msg_recv (&self->frame, self->sock, 0) < 0) return CM_E_IO;
    }
    return proto_decode (reply, zmq_msg_data (&self->frame), zmq_msg_size (&self->frame));
}

int proto_rpc_call (proto_rpc_t *self, proto_type_t type, const void *body,
                    proto_msg_t *reply, int timeout_ms)
{
    uint64_t corr;
    int64_t deadline = cm_mono_ms () + timeout_ms;
    int rc = proto_rpc_send (self, type, body, timeout_ms, &corr);
    if (rc) return rc;
    while (true) {
        int64_t left = deadline - cm_mono_ms ();
        if (left <= 0) return CM_E_TIMEOUT;
        rc = proto_rpc_recv (self, reply, (int)left);
        if (rc == CM_E_TIMEOUT) return rc;
        if (!reply->corr_valid || reply->corr != corr) continue; //  a stale reply
        if (rc) return rc;
        if (reply->type == PROTO_ERROR) {
            int code = (int)proto_body (reply, error)->code;
            return code < 0 ? code : CM_E_INTERNAL;
        }
        return 0;
    }
}
