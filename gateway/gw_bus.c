/*  gw_bus.c - the ZeroMQ side of the gateway, inside the lws loop.

    Debian's libwebsockets 4.1.6 has no external-poll hooks, so each
    socket's ZMQ_FD is dup()ed and adopted as a raw file (lws closes what
    it adopts, hence the dup).  That fd only says "look at ZMQ_EVENTS": it
    is edge-like, so every wake-up drains while ZMQ_EVENTS has POLLIN, and
    a zmq_send on a socket may consume the signal of a message that
    arrived meanwhile, so every send schedules another drain (gw_bus_kick,
    an lws timer at 0 us).  A drain reads until EAGAIN rather than asking
    ZMQ_EVENTS before each message: a non-blocking recv that finds nothing
    processes the socket's pending commands just as ZMQ_EVENTS does (so
    the fd is armed again), and one that finds a message costs no system
    call, where every ZMQ_EVENTS query polls the socket's mailbox (that
    was 8 % of the gateway's CPU at 20 000 events/s).  A drain that hits GW_DRAIN_MAX messages on one
    socket kicks again instead of starving the WebSocket side.

    Requests are pipelined with correlation ids; each keeps its encoded
    bytes and a continuation.  Store requests are idempotent reads and are
    resent every 2 s until GW_CALL_TIMEOUT_MS; session requests are sent
    once and fail with CM_E_UNAVAILABLE after their timeout (a prompt has
    none: its answer may take as long as the turn; the event stream also
    ends it, see gw_watch.c).  Monitor requests (readiness, /metrics) are
    like session requests.  The gateway's own heartbeat goes out from
    gw_bus_tick.
*/
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#include "cm_log.h"
#include "cm_time.h"
#include "cm_zmq.h"
#include "gw.h"
#include "proto_beat.h"

#define STORE_RESEND_MS 2000

typedef enum { TO_SESSION, TO_STORE, TO_MONITOR } target_t;

typedef struct {
    uint64_t corr;
    bool to_store;
    target_t to;
    proto_type_t type;
    gw_call_cb cb;
    void *arg;
    gw_call_drop_fn drop; //  frees arg if cb never runs
    int64_t deadline;     //  give up (0 = never)
    int64_t resend_at;    //  store calls: send again
    size_t size;
    char data[];
} call_t;

static struct lws *adopt (gw_server_t *self, void *sock)
{
    int fd = -1;
    size_t sz = sizeof fd;
    if (zmq_getsockopt (sock, ZMQ_FD, &fd, &sz)) return NULL;
    lws_sock_file_fd_type u;
    u.filefd = dup (fd);
    if (u.filefd < 0) return NULL;
    struct lws *wsi = lws_adopt_descriptor_vhost (self->vhost, LWS_ADOPT_RAW_FILE_DESC, u,
                                                  "corral-bus", NULL);
    if (wsi) lws_set_opaque_user_data (wsi, self);
    return wsi;
}

/*  The SUB's (re)connections.  After the SUB connects again to a publisher
    (corral-session restarted), its subscriptions take a moment to reach
    it, and what is published before that never arrives here.  A lost
    event followed by another shows as a gap and is repaired, but the last
    ones - a restart's "interrupted" turn_ended - would stay unseen, with
    prompts waiting on them.  So on every ZMTP handshake of the SUB, every
    watch reads the store once the subscriptions have settled
    (gw_watch_tick, after warm_until).  One gateway per process: static. */
#define SUB_MONITOR "inproc://corral-gateway-sub-monitor"
static void *s_sub_monitor;

static void sub_monitor_open (gw_server_t *self)
{
    s_sub_monitor = cm_zmq_watch_handshakes (self->sub, SUB_MONITOR);
}

static void sub_monitor_check (gw_server_t *self, int64_t now)
{
    bool connected = cm_zmq_handshakes (s_sub_monitor);
    if (!connected) return;
    size_t pos = 0;
    void *value;
    while (cm_map_next (self->subs, &pos, NULL, &value)) {
        gw_sub_t *sub = value;
        sub->warm_until = now + GW_WARM_MS;
        for (gw_watch_t *w = sub->watches; w; w = w->sub_next) w->recheck = true;
    }
}

int gw_bus_open (gw_server_t *self)
{
    const gw_config_t *cfg = self->cfg;
    self->session = cm_zmq_socket (ZMQ_DEALER, CM_ZMQ_HWM);
    self->store = cm_zmq_socket (ZMQ_DEALER, CM_ZMQ_HWM);
    //  Events: a deep receive queue; a drop still shows as a seq gap and is
    //  repaired from the store.
    self->sub = cm_zmq_socket (ZMQ_SUB, 1000000);
    if (!self->session || !self->store || !self->sub) return CM_E_INTERNAL;
    sub_monitor_open (self);
    self->monitor = cm_zmq_socket (ZMQ_DEALER, 1000);
    if (!self->monitor) return CM_E_INTERNAL;
    if (cm_zmq_connect (self->session, cfg->session_endpoint) ||
        cm_zmq_connect (self->store, cfg->store_endpoint) ||
        cm_zmq_connect (self->sub, cfg->events_endpoint) ||
        cm_zmq_connect (self->monitor, cfg->monitor_endpoint))
        return CM_E_INVALID;
    self->beat = proto_beat_new (cfg->monitor_in, "gateway", NULL);
    self->calls = cm_map_new (8);
    if (!self->calls) return CM_E_NOMEM;
    self->session_wsi = adopt (self, self->session);
    self->store_wsi = adopt (self, self->store);
    self->sub_wsi = adopt (self, self->sub);
    self->monitor_wsi = adopt (self, self->monitor);
    if (!self->session_wsi || !self->store_wsi || !self->sub_wsi || !self->monitor_wsi) {
        cm_error ("cannot adopt the bus sockets into the lws loop");
        return CM_E_INTERNAL;
    }
    return 0;
}

static void fail_call (gw_server_t *self, call_t *call, int rc)
{
    if (call->cb) call->cb (self, call->arg, rc, NULL);
    free (call);
}

void gw_bus_close (gw_server_t *self)
{
    if (self->calls) {
        size_t pos = 0;
        void *value;
        //  Calls still in flight: their continuations never run, so their
        //  arguments are freed here, each by its own drop (NULL for an
        //  argument the call does not own).  Connections are gone by now;
        //  no drop touches one.
        while (cm_map_next (self->calls, &pos, NULL, &value)) {
            call_t *c = value;
            if (c->drop && c->arg) c->drop (c->arg);
            free (c);
        }
        cm_map_destroy (&self->calls);
    }
    cm_zmq_unwatch (self->sub, &s_sub_monitor);
    cm_zmq_close (&self->session);
    cm_zmq_close (&self->store);
    //  The SUB sends nothing that matters (its subscriptions); without a
    //  session service its queued subscription would hold the stop 2 s.
    cm_zmq_close_linger (&self->sub, 0);
    cm_zmq_close (&self->monitor);
    proto_beat_destroy (&self->beat);
}

static void *sock_of (gw_server_t *self, const call_t *call)
{
    return call->to == TO_STORE     ? self->store
           : call->to == TO_MONITOR ? self->monitor
                                    : self->session;
}

static void send_call (gw_server_t *self, call_t *call)
{
    void *sock = sock_of (self, call);
    bool sent = zmq_send (sock, call->data, call->size, ZMQ_DONTWAIT) >= 0;
    //  No peer yet (ZMQ_IMMEDIATE): store calls retry soon.
    call->resend_at = cm_mono_ms () + (sent ? STORE_RESEND_MS : 100);
    if (!sent && !call->to_store) call->resend_at = cm_mono_ms () + 100;
    gw_bus_kick (self);
}

static int call (gw_server_t *self, target_t to, proto_type_t type, const void *body,
                 int64_t timeout_ms, gw_call_cb cb, void *arg, gw_call_drop_fn drop)
{
    proto_buf_t buf;
    proto_buf_init (&buf);
    uint64_t corr = ++self->corr;
    int rc = proto_encode (&buf, type, corr, body);
    if (rc) {
        cm_error ("cannot encode %s: %s", proto_type_name (type), cm_strerror (rc));
        proto_buf_fini (&buf);
        return rc;
    }
    call_t *c = malloc (sizeof *c + buf.size);
    if (!c) {
        proto_buf_fini (&buf);
        return CM_E_NOMEM;
    }
    *c = (call_t){.corr = corr,
                  .to_store = to == TO_STORE,
                  .to = to,
                  .type = type,
                  .cb = cb,
                  .arg = arg,
                  .drop = drop,
                  .deadline = timeout_ms ? cm_mono_ms () + timeout_ms : 0,
                  .size = buf.size};
    memcpy (c->data, buf.data, buf.size);
    proto_buf_fini (&buf);
    if (cm_map_put_u64 (self->calls, corr, c)) {
        free (c);
        return CM_E_NOMEM;
    }
    send_call (self, c);
    return 0;
}

int gw_call_session (gw_server_t *self, proto_type_t type, const void *body,
                     int64_t timeout_ms, gw_call_cb cb, void *arg, gw_call_drop_fn drop)
{
    return call (self, TO_SESSION, type, body, timeout_ms, cb, arg, drop);
}

int gw_call_store (gw_server_t *self, proto_type_t type, const void *body, gw_call_cb cb,
                   void *arg, gw_call_drop_fn drop)
{
    return call (self, TO_STORE, type, body, GW_CALL_TIMEOUT_MS, cb, arg, drop);
}

int gw_call_monitor (gw_server_t *self, proto_type_t type, const void *body,
                     int64_t timeout_ms, gw_call_cb cb, void *arg, gw_call_drop_fn drop)
{
    return call (self, TO_MONITOR, type, body, timeout_ms, cb, arg, drop);
}

static void on_reply (gw_server_t *self, const void *data, size_t size)
{
    proto_msg_t reply;
    proto_msg_init (&reply);
    int rc = proto_decode (&reply, data, size);
    if (!reply.corr_valid) {
        cm_warn ("unreadable reply on the bus: %s", proto_msg_error (&reply));
        proto_msg_fini (&reply);
        return;
    }
    call_t *c = cm_map_remove_u64 (self->calls, reply.corr);
    if (!c) { //  answered already (resent), or timed out
        proto_msg_fini (&reply);
        return;
    }
    if (rc == 0 && reply.type == PROTO_ERROR) {
        proto_error_t *e = proto_body (&reply, error);
        rc = e->code < 0 ? (int)e->code : CM_E_INTERNAL;
    } else if (rc)
        cm_error ("undecodable reply to %s: %s", proto_type_name (c->type),
                  proto_msg_error (&reply));
    if (c->cb) c->cb (self, c->arg, rc, &reply);
    free (c);
    proto_msg_fini (&reply);
}

void gw_bus_tick (gw_server_t *self, int64_t now)
{
    sub_monitor_check (self, now);
    if (self->beat) proto_beat_tick (self->beat, now, gw_metrics_beat, self);
    size_t pos = 0;
    void *value;
    //  Collect first: callbacks may add calls (and so move the map).
    call_t *expired[64];
    size_t nexp = 0;
    while (cm_map_next (self->calls, &pos, NULL, &value) && nexp < 64) {
        call_t *c = value;
        if (c->deadline && now >= c->deadline)
            expired[nexp++] = c;
        else if (c->to_store && now >= c->resend_at)
            send_call (self, c);
        else if (!c->to_store && c->resend_at && now >= c->resend_at) {
            //  A session or monitor call that could not be sent (no peer yet).
            c->resend_at = 0;
            if (zmq_send (sock_of (self, c), c->data, c->size, ZMQ_DONTWAIT) < 0)
                c->resend_at = now + 100;
            gw_bus_kick (self);
        }
    }
    for (size_t i = 0; i < nexp; i++) {
        cm_map_remove_u64 (self->calls, expired[i]->corr);
        cm_warn ("%s got no answer in time", proto_type_name (expired[i]->type));
        fail_call (self, expired[i], CM_E_UNAVAILABLE);
    }
}

/* ---- subscriptions ---------------------------------------------------- */

static void topic_of (const cm_uuid_t *id, char topic[41])
{
    char text[37];
    cm_uuid_fmt (id, text);
    snprintf (topic, 41, "s/%s/", text);
}

gw_sub_t *gw_sub_get (gw_server_t *self, const cm_uuid_t *id)
{
    gw_sub_t *sub = cm_map_get (self->subs, id->b);
    if (sub) return sub;
    sub = calloc (1, sizeof *sub);
    if (!sub) return NULL;
    sub->id = *id;
    if (cm_map_put (self->subs, id->b, sub)) {
        free (sub);
        return NULL;
    }
    char topic[41];
    topic_of (id, topic);
    zmq_setsockopt (self->sub, ZMQ_SUBSCRIBE, topic, strlen (topic));
    sub->warm_until = cm_mono_ms () + GW_WARM_MS;
    gw_bus_kick (self);
    return sub;
}

void gw_sub_release (gw_server_t *self, gw_sub_t *sub)
{
    if (!sub || sub->nwatches) return;
    char topic[41];
    topic_of (&sub->id, topic);
    zmq_setsockopt (self->sub, ZMQ_UNSUBSCRIBE, topic, strlen (topic));
    for (size_t i = 0; i < sub->count; i++)
        gw_ev_unref (&sub->ring[(sub->lo + i) % GW_RING]);
    cm_map_remove (self->subs, sub->id.b);
    free (sub);
    gw_bus_kick (self);
}

static void on_event (gw_server_t *self, const void *topic, size_t tlen, const void *data,
                      size_t size)
{
    //  "s/<36-char uuid>/"
    char text[37];
    if (tlen != 39 || memcmp (topic, "s/", 2) != 0) return;
    memcpy (text, (const char *)topic + 2, 36);
    text[36] = 0;
    cm_uuid_t id;
    if (cm_uuid_parse (text, &id)) return;
    gw_sub_t *sub = cm_map_get (self->subs, id.b);
    if (!sub) return; //  unsubscribed meanwhile
    self->stats.events_in++;
    gw_ev_t *ev = gw_ev_new (self, data, size);
    if (!ev) return;
    gw_sub_on_event (self, sub, ev);
    gw_ev_unref (&ev);
}

/* ---- the drain -------------------------------------------------------- */

//  Returns true when the cap was hit (more may be waiting).
static bool drain_dealer (gw_server_t *self, void *sock)
{
    for (int n = 0; n < GW_DRAIN_MAX; n++) {
        zmq_msg_t msg;
        zmq_msg_init (&msg);
        if (zmq_msg_recv (&msg, sock, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close (&msg);
            return false;
        }
        bool more = zmq_msg_more (&msg);
        if (!more) on_reply (self, zmq_msg_data (&msg), zmq_msg_size (&msg));
        zmq_msg_close (&msg);
        while (more) { //  not ours: skip the rest of a multipart message
            zmq_msg_init (&msg);
            if (zmq_msg_recv (&msg, sock, ZMQ_DONTWAIT) < 0)
                more = false;
            else
                more = zmq_msg_more (&msg);
            zmq_msg_close (&msg);
        }
    }
    return true;
}

static bool drain_sub (gw_server_t *self)
{
    for (int n = 0; n < GW_DRAIN_MAX; n++) {
        zmq_msg_t topic, body;
        zmq_msg_init (&topic);
        zmq_msg_init (&body);
        if (zmq_msg_recv (&topic, self->sub, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close (&topic);
            zmq_msg_close (&body);
            return false;
        }
        bool ok =
            zmq_msg_more (&topic) && zmq_msg_recv (&body, self->sub, ZMQ_DONTWAIT) >= 0;
        if (ok && !zmq_msg_more (&body))
            on_event (self, zmq_msg_data (&topic), zmq_msg_size (&topic),
                      zmq_msg_data (&body), zmq_msg_size (&body));
        while (ok && zmq_msg_more (&body)) { //  malformed: skip the rest
            zmq_msg_close (&body);
            zmq_msg_init (&body);
            ok = zmq_msg_recv (&body, self->sub, ZMQ_DONTWAIT) >= 0;
        }
        zmq_msg_close (&topic);
        zmq_msg_close (&body);
    }
    return true;
}

static void kick_cb (lws_sorted_usec_list_t *sul)
{
    gw_server_t *self = lws_container_of (sul, gw_server_t, kick_sul);
    self->kick_scheduled = false;
    gw_bus_drain (self);
}

void gw_bus_kick (gw_server_t *self)
{
    if (self->kick_scheduled || !self->ctx) return;
    self->kick_scheduled = true;
    lws_sul_schedule (self->ctx, 0, &self->kick_sul, kick_cb, 1);
}

void gw_bus_drain (gw_server_t *self)
{
    bool more = drain_dealer (self, self->session);
    more |= drain_dealer (self, self->store);
    if (self->monitor) more |= drain_dealer (self, self->monitor);
    more |= drain_sub (self);
    if (more) gw_bus_kick (self);
}
