/*  sess_server.c - corral-session's loop: three inbound sockets, one PUB,
    timers at 100 ms (store resends, dispatch, permission deadlines) and
    1 s (heartbeats, spine retries).
*/
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "cm_log.h"
#include "cm_stop.h"
#include "cm_time.h"
#include "cm_zmq.h"
#include "proto_beat.h"
#include "sess.h"

#define DRAIN_MAX 1024 //  messages read from one socket per pass

void sess_reply (sess_server_t *self, const sess_peer_t *peer, proto_type_t type,
                 const void *body)
{
    proto_buf_reset (&self->buf);
    int rc = proto_encode (&self->buf, type, peer->corr, body);
    if (rc) {
        cm_error ("cannot encode reply %s: %s", proto_type_name (type), cm_strerror (rc));
        proto_buf_reset (&self->buf);
        proto_encode_error (&self->buf, peer->corr, CM_E_INTERNAL, NULL);
    }
    cm_frame_t frames[2] = {{peer->id, peer->id_len}, {self->buf.data, self->buf.size}};
    if (cm_zmq_sendv (self->client, frames, 2, ZMQ_DONTWAIT))
        cm_debug ("reply dropped: the gateway is gone");
}

void sess_reply_error (sess_server_t *self, const sess_peer_t *peer, int code,
                       const char *message)
{
    proto_error_t err = {.code = code,
                         .message = message ? message : cm_strerror (code),
                         .retryable = code == CM_E_UNAVAILABLE || code == CM_E_CAPACITY ||
                                      code == CM_E_BUSY};
    sess_reply (self, peer, PROTO_ERROR, &err);
}

int sess_send_worker (sess_server_t *self, sess_worker_t *w, proto_type_t type,
                      const void *body)
{
    if (!w) return CM_E_UNAVAILABLE;
    proto_buf_reset (&self->buf);
    int rc = proto_encode (&self->buf, type, 0, body);
    if (rc) {
        cm_error ("cannot encode %s: %s", proto_type_name (type), cm_strerror (rc));
        return rc;
    }
    cm_frame_t frames[2] = {{w->id, w->id_len}, {self->buf.data, self->buf.size}};
    return cm_zmq_sendv (self->worker, frames, 2, ZMQ_DONTWAIT);
}

//  Read one [identity][body] message from a ROUTER.  Returns 1, 0 (none).
static int recv_routed (void *sock, zmq_msg_t *id, zmq_msg_t *body)
{
    zmq_msg_init (id);
    zmq_msg_init (body);
    if (zmq_msg_recv (id, sock, ZMQ_DONTWAIT) < 0) return 0;
    int frames = 1;
    while (zmq_msg_more (frames == 1 ? id : body)) {
        zmq_msg_close (body);
        zmq_msg_init (body);
        if (zmq_msg_recv (body, sock, 0) < 0) break;
        frames++;
    }
    return frames >= 2 ? 1 : -1; //  the last frame is the body
}

static void on_client (sess_server_t *self)
{
    for (int i = 0; i < DRAIN_MAX; i++) {
        zmq_msg_t id, body;
        int got = recv_routed (self->client, &id, &body);
        if (got == 0) {
            zmq_msg_close (&id);
            zmq_msg_close (&body);
            return;
        }
        sess_peer_t peer = {.set = true};
        if (got > 0 && zmq_msg_size (&id) <= SESS_ID_MAX) {
            peer.id_len = zmq_msg_size (&id);
            memcpy (peer.id, zmq_msg_data (&id), peer.id_len);
            int rc =
                proto_decode (&self->msg, zmq_msg_data (&body), zmq_msg_size (&body));
            peer.corr = self->msg.corr_valid ? self->msg.corr : 0;
            if (rc)
                sess_reply_error (self, &peer, rc, proto_msg_error (&self->msg));
            else if (self->msg.desc->family == PROTO_FAMILY_MONITOR)
                sess_policy_on_monitor (self, &peer, &self->msg); //  see sess_policy.c
            else if (self->msg.desc->family != PROTO_FAMILY_CLIENT)
                sess_reply_error (self, &peer, CM_E_UNKNOWN_TYPE, "not a client request");
            else
                sess_on_client (self, &peer, &self->msg);
        }
        zmq_msg_close (&id);
        zmq_msg_close (&body);
    }
}

static void on_worker (sess_server_t *self)
{
    for (int i = 0; i < DRAIN_MAX; i++) {
        zmq_msg_t id, body;
        int got = recv_routed (self->worker, &id, &body);
        if (got == 0) {
            zmq_msg_close (&id);
            zmq_msg_close (&body);
            return;
        }
        if (got > 0) {
            int rc =
                proto_decode (&self->msg, zmq_msg_data (&body), zmq_msg_size (&body));
            if (rc)
                cm_warn ("undecodable message from a worker: %s",
                         proto_msg_error (&self->msg));
            else if (self->msg.desc->family == PROTO_FAMILY_WORKER)
                sess_worker_on_message (self, zmq_msg_data (&id), zmq_msg_size (&id),
                                        &self->msg);
        }
        zmq_msg_close (&id);
        zmq_msg_close (&body);
    }
}

static void on_store (sess_server_t *self)
{
    for (int i = 0; i < DRAIN_MAX; i++) {
        zmq_msg_t body;
        zmq_msg_init (&body);
        if (zmq_msg_recv (&body, self->store, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close (&body);
            return;
        }
        sess_store_on_reply (self, zmq_msg_data (&body), zmq_msg_size (&body));
        zmq_msg_close (&body);
    }
}

//  Sessions whose append was refused or could not be sent: try again.
static void spine_retry (sess_server_t *self)
{
    size_t pos = 0;
    void *value;
    while (cm_map_next (self->sessions, &pos, NULL, &value)) {
        sess_session_t *s = value;
        if ((s->queue && !s->inflight_last) || (s->dirty && !s->put_inflight))
            sess_spine_flush (self, s);
    }
}

static int open_sockets (sess_server_t *self)
{
    sess_config_t *c = self->cfg;
    self->client = cm_zmq_socket (ZMQ_ROUTER, 0);
    self->worker = cm_zmq_socket (ZMQ_ROUTER, 0);
    self->pub = cm_zmq_socket (ZMQ_PUB, 0);
    self->store = cm_zmq_socket (ZMQ_DEALER, 0);
    if (!self->client || !self->worker || !self->pub || !self->store) return CM_E_IO;
    if (cm_zmq_bind (self->client, c->client_endpoint) ||
        cm_zmq_bind (self->worker, c->worker_endpoint) ||
        cm_zmq_bind (self->pub, c->events_endpoint) ||
        cm_zmq_connect (self->store, c->store_endpoint))
        return CM_E_IO;
    return 0;
}

int sess_server_run (sess_config_t *cfg)
{
    sess_server_t *self = calloc (1, sizeof *self);
    char err[512];
    int rc = CM_E_NOMEM;
    if (!self) return rc;
    self->cfg = cfg;
    proto_msg_init (&self->msg);
    proto_msg_init (&self->evmsg);
    self->sessions = cm_map_new (16);
    self->turns = cm_map_new (16);
    self->store_calls = cm_map_new (8);
    if (!self->sessions || !self->turns || !self->store_calls) goto done;
    if ((rc = sess_roots_init (self, err, sizeof err))) {
        cm_error ("%s", err);
        goto done;
    }
    if ((rc = open_sockets (self))) goto done;
    cm_info ("corral-session: clients %s, workers %s, events %s, store %s, roots %s%s",
             cfg->client_endpoint, cfg->worker_endpoint, cfg->events_endpoint,
             cfg->store_endpoint, self->roots[0], self->nroots > 1 ? " …" : "");
    sess_startup_scan (self);
    self->beat = proto_beat_new (cfg->monitor_in, "session", NULL);

    int64_t last_tick = cm_mono_ms (), last_beat = last_tick;
    while (!cm_stop_requested ()) {
        zmq_pollitem_t items[] = {{self->client, 0, ZMQ_POLLIN, 0},
                                  {self->worker, 0, ZMQ_POLLIN, 0},
                                  {self->store, 0, ZMQ_POLLIN, 0},
                                  {NULL, cm_stop_fd (), ZMQ_POLLIN, 0}};
        if (zmq_poll (items, 4, 100) < 0 && errno != EINTR) {
            cm_error ("poll failed: %s", zmq_strerror (errno));
            break;
        }
        //  Store replies first: they release published events and replies.
        if (items[2].revents & ZMQ_POLLIN) on_store (self);
        if (items[1].revents & ZMQ_POLLIN) on_worker (self);
        if (items[0].revents & ZMQ_POLLIN) on_client (self);
        int64_t now = cm_mono_ms ();
        if (self->beat) proto_beat_tick (self->beat, now, sess_stats_fill, self);
        if (now - last_tick >= 100) {
            last_tick = now;
            sess_store_tick (self, now);
            bool beat = now - last_beat >= SESS_HEARTBEAT_MS;
            if (beat) last_beat = now;
            sess_workers_tick (self, now, beat);
            sess_turns_tick (self, now);
            sess_policy_tick (self, now);
            if (beat) spine_retry (self);
        }
        //  Last: everything this pass made ready goes to the store at once.
        sess_spine_send (self);
    }
    cm_info ("corral-session stopping");
    rc = 0;
done:
    sess_policy_fini (self);
    sess_budget_fini (self);
    sess_workers_fini (self);
    if (self->sessions) {
        size_t pos = 0;
        void *value;
        while (cm_map_next (self->sessions, &pos, NULL, &value))
            sess_session_free (value);
        cm_map_destroy (&self->sessions);
    }
    cm_map_destroy (&self->turns);
    free (self->ready_ids);
    free (self->batch_items);
    free (self->batch_apps);
    sess_store_fini (self);
    cm_zmq_close (&self->client);
    cm_zmq_close (&self->worker);
    cm_zmq_close (&self->pub);
    cm_zmq_close (&self->store);
    proto_beat_destroy (&self->beat);
    for (size_t i = 0; i < self->nroots; i++) free (self->roots[i]);
    proto_msg_fini (&self->msg);
    proto_msg_fini (&self->evmsg);
    proto_buf_fini (&self->store_buf);
    proto_buf_fini (&self->buf);
    free (self);
    return rc;
}
