/*  wrk_server.c - corral-worker's loop and its side of the worker protocol.

    ZeroMQ in an epoll loop: the socket's ZMQ_FD signals edges, not levels,
    and a zmq_send can consume the signal.  So the loop drains the socket
    while ZMQ_EVENTS has POLLIN at the end of every pass - after all the
    sends of that pass - and never sleeps while a message is waiting.
*/
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>
#include <zmq.h>

#include "cm_log.h"
#include "cm_stop.h"
#include "cm_time.h"
#include "cm_zmq.h"
#include "proto_beat.h"
#include "wrk_worker.h"

extern char **environ;

//  Send what waits in the outbox, in order, until the socket is full.
static void flush_outbox (wrk_server_t *self)
{
    while (self->outbox && self->sock) {
        wrk_out_t *o = self->outbox;
        if (zmq_send (self->sock, o->data, o->size, ZMQ_DONTWAIT) < 0) return;
        self->outbox = o->next;
        if (!self->outbox) self->outbox_tail = NULL;
        self->outbox_bytes -= o->size;
        free (o);
    }
}

int wrk_send (wrk_server_t *self, proto_type_t type, const void *body)
{
    proto_buf_reset (&self->buf);
    int rc = proto_encode (&self->buf, type, 0, body);
    if (rc) {
        cm_error ("cannot encode %s: %s", proto_type_name (type), cm_strerror (rc));
        return rc;
    }
    //  Never drop a turn's message because the socket is full (HWM) or not
    //  connected yet: it waits, in order, in the outbox.  Heartbeats are
    //  the exception: a stale one is worthless.
    flush_outbox (self);
    if (!self->outbox && self->sock &&
        zmq_send (self->sock, self->buf.data, self->buf.size, ZMQ_DONTWAIT) >= 0)
        return 0;
    if (type == PROTO_W_HEARTBEAT) return CM_E_UNAVAILABLE;
    if (self->outbox_bytes + self->buf.size > WRK_OUTBOX_MAX) {
        cm_error ("%s dropped: %zu bytes wait for the session service already",
                  proto_type_name (type), self->outbox_bytes);
        return CM_E_CAPACITY;
    }
    wrk_out_t *o = malloc (sizeof *o + self->buf.size);
    if (!o) return CM_E_NOMEM;
    o->next = NULL;
    o->size = self->buf.size;
    memcpy (o->data, self->buf.data, self->buf.size);
    if (self->outbox_tail)
        self->outbox_tail->next = o;
    else
        self->outbox = o;
    self->outbox_tail = o;
    self->outbox_bytes += o->size;
    return 0;
}

int wrk_send_event (wrk_server_t *self, wrk_turn_t *t, proto_type_t type, void *body)
{
    //  Head fields (session, seq, ts, turn) lead every event record; the
    //  session service sets seq and ts, we name the session and turn.
    const proto_rec_desc_t *r = proto_msg_desc (type)->body;
    memcpy ((char *)body + r->fields[0].offset, &t->session, sizeof t->session);
    memcpy ((char *)body + r->fields[3].offset, &t->id, sizeof t->id);
    proto_buf_t ev = {0};
    int rc = proto_encode (&ev, type, 0, body);
    if (rc == 0) {
        proto_w_event_t msg = {.turn = t->id,
                               .event = {(const uint8_t *)ev.data, ev.size}};
        rc = wrk_send (self, PROTO_W_EVENT, &msg);
    } else
        cm_error ("cannot encode event %s: %s", proto_type_name (type), cm_strerror (rc));
    proto_buf_fini (&ev);
    return rc;
}

static void send_ready (wrk_server_t *self)
{
    char host[256] = "";
    gethostname (host, sizeof host - 1);
    const char *backends[] = {"openai", "anthropic"};
    proto_w_ready_t ready = {.worker_id = self->cfg->worker_id,
                             .host = host,
                             .capacity = (uint64_t)self->cfg->capacity,
                             .backends = {backends, 2},
                             .version = "0.1.0"};
    wrk_send (self, PROTO_W_READY, &ready);
}

static void disconnect (wrk_server_t *self)
{
    if (self->zfd >= 0) {
        epoll_ctl (self->epfd, EPOLL_CTL_DEL, self->zfd, NULL);
        close (self->zfd);
        self->zfd = -1;
    }
    cm_zmq_close (&self->sock);
}

//  (Re)build the session socket.  Majordomo: a new socket, then READY.
static int connect_session (wrk_server_t *self)
{
    disconnect (self);
    self->sock = cm_zmq_socket (ZMQ_DEALER, 0);
    if (!self->sock || cm_zmq_connect (self->sock, self->cfg->endpoint)) return CM_E_IO;
    int fd;
    size_t len = sizeof fd;
    if (zmq_getsockopt (self->sock, ZMQ_FD, &fd, &len)) return CM_E_IO;
    //  lws-style trap avoided here too: register a dup, so closing the
    //  socket never leaves a stale fd number in epoll.
    self->zfd = dup (fd);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &self->zmq_tag};
    if (self->zfd < 0 || epoll_ctl (self->epfd, EPOLL_CTL_ADD, self->zfd, &ev))
        return CM_E_IO;
    self->last_heard_ms = cm_mono_ms ();
    send_ready (self);
    return 0;
}

static void on_message (wrk_server_t *self, const void *data, size_t size)
{
    if (proto_decode (&self->msg, data, size)) {
        cm_warn ("undecodable message from the session service: %s",
                 proto_msg_error (&self->msg));
        return;
    }
    self->last_heard_ms = cm_mono_ms ();
    switch (self->msg.type) {
    case PROTO_W_TURN:
        wrk_turn_start (self, self->msg.body);
        break;
    case PROTO_W_CANCEL:
        wrk_turn_cancel (self, &((proto_w_turn_ref_t *)self->msg.body)->turn);
        break;
    case PROTO_W_PERMISSION_ANSWER:
        wrk_turn_permission (self, self->msg.body);
        break;
    case PROTO_W_DISCONNECT:
        send_ready (self);
        break;
    case PROTO_W_HEARTBEAT:
        break;
    default:
        cm_warn ("unexpected %s from the session service",
                 proto_type_name (self->msg.type));
    }
}

static void drain (wrk_server_t *self)
{
    for (int i = 0; i < 10000 && self->sock && cm_zmq_readable (self->sock); i++) {
        zmq_msg_t m;
        zmq_msg_init (&m);
        if (zmq_msg_recv (&m, self->sock, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close (&m);
            return;
        }
        on_message (self, zmq_msg_data (&m), zmq_msg_size (&m));
        zmq_msg_close (&m);
    }
}

static void every_second (wrk_server_t *self, int64_t now)
{
    //  Messages already waiting are signs of life too: a long pass (many
    //  turns starting at once) must not make us give up on a session whose
    //  beats are sitting unread in the socket.
    if (now - self->last_heard_ms > WRK_HEARTBEAT_MS * WRK_HEARTBEAT_DEAD) drain (self);
    if (now - self->last_heard_ms > WRK_HEARTBEAT_MS * WRK_HEARTBEAT_DEAD) {
        cm_warn ("no word from the session service for %d s; reconnecting",
                 WRK_HEARTBEAT_DEAD);
        connect_session (self);
    }
    proto_w_heartbeat_t hb = {.active = self->nturns};
    wrk_send (self, PROTO_W_HEARTBEAT, &hb);
    //  Reap processes that escaped their group and were re-parented here,
    //  but never a command a turn still waits for.
    pid_t keep[256];
    size_t n = 0;
    for (wrk_turn_t *t = self->turns; t && n < 256; t = t->next)
        if (t->exec) keep[n++] = wrk_exec_pid (t->exec);
    int reaped = n < 256 ? wrk_exec_reap_orphans (keep, n) : 0;
    wrk_orphans_sweep (self, now);
    if (reaped > 0) {
        self->orphans_reaped += (uint64_t)reaped;
        cm_warn ("reaped %d orphaned process(es) (%llu in all)", reaped,
                 (unsigned long long)self->orphans_reaped);
    }
}

static int64_t next_timeout (wrk_server_t *self, int64_t now)
{
    //  Always asked before a wait: wrk_http frees the tags of dropped
    //  sockets here, between batches of events.
    int64_t h = wrk_http_next_timeout (self->http);
    if (self->sock && cm_zmq_readable (self->sock)) return 0;
    if (self->outbox) return 5; //  retry the outbox soon
    int64_t t = self->last_beat_ms + WRK_HEARTBEAT_MS - now;
    if (self->beat && proto_beat_due_ms (self->beat, now) < t)
        t = proto_beat_due_ms (self->beat, now);
    if (h >= 0 && h < t) t = h;
    int64_t e = wrk_turns_next_deadline (self);
    if (e != INT64_MAX && e - now < t) t = e - now;
    return t < 0 ? 0 : t;
}

int wrk_server_run (wrk_config_t *cfg)
{
    wrk_server_t *self = calloc (1, sizeof *self);
    int rc = CM_E_IO;
    if (!self) return CM_E_NOMEM;
    self->cfg = cfg;
    self->zfd = -1;
    self->zmq_tag.kind = WRK_TAG_ZMQ;
    self->stop_tag.kind = WRK_TAG_STOP;
    proto_msg_init (&self->msg);
    self->epfd = epoll_create1 (EPOLL_CLOEXEC);
    struct epoll_event sev = {.events = EPOLLIN, .data.ptr = &self->stop_tag};
    if (self->epfd < 0 || epoll_ctl (self->epfd, EPOLL_CTL_ADD, cm_stop_fd (), &sev))
        goto done;

    char err[512];
    if (cfg->prices) {
        FILE *f = fopen (cfg->prices, "r");
        char text[1 << 16];
        size_t n = f ? fread (text, 1, sizeof text, f) : 0;
        if (f) fclose (f);
        if (!f || wrk_prices_load (text, n, &self->prices, err, sizeof err)) {
            cm_error ("price table %s: %s", cfg->prices, f ? err : "cannot be read");
            rc = CM_E_INVALID;
            goto done;
        }
    } else
        self->prices = wrk_prices_new_default ();
    if (wrk_exec_env_new (environ, NULL, &self->env)) goto done;
    if (wrk_orphans_init (self))
        cm_warn ("cannot mark commands; leftovers of this worker will not be found");
    self->tools = wrk_tools_schema ();
    self->http = wrk_http_new (self->epfd);
    self->stats = wrk_stats_new ();
    if (!self->prices || !self->tools || !self->http || !self->stats) goto done;
    self->beat = proto_beat_new (cfg->monitor_in, "worker", cfg->worker_id);
    if (wrk_exec_subreaper ())
        cm_warn ("cannot become a subreaper; orphans are not reaped");
    if ((rc = connect_session (self))) goto done;
    cm_info ("corral-worker %s: session %s, capacity %lld", cfg->worker_id, cfg->endpoint,
             (long long)cfg->capacity);
    wrk_orphans_sweep (self, cm_mono_ms ()); //  what a previous incarnation left

    self->last_beat_ms = cm_mono_ms ();
    struct epoll_event events[256];
    while (!cm_stop_requested ()) {
        int64_t now = cm_mono_ms ();
        int n = epoll_wait (self->epfd, events, 256, (int)next_timeout (self, now));
        if (n < 0 && errno != EINTR) {
            cm_error ("epoll_wait: %s", strerror (errno));
            break;
        }
        for (int i = 0; i < n; i++) {
            wrk_tag_t *tag = events[i].data.ptr;
            switch (tag->kind) {
            case WRK_TAG_HTTP:
                wrk_http_on_event (self->http, tag, events[i].events);
                break;
            case WRK_TAG_EXEC:
                wrk_turn_on_exec (((wrk_exec_tag_t *)tag)->turn);
                break;
            case WRK_TAG_ZMQ: //  drained below, after this pass's sends
            case WRK_TAG_STOP:
                break;
            }
        }
        drain (self); //  before the timers: incoming work and beats first
        now = cm_mono_ms ();
        wrk_http_on_timeout (self->http); //  cheap when nothing is due
        wrk_turns_tick (self, now);
        if (self->beat) proto_beat_tick (self->beat, now, wrk_stats_fill, self);
        if (now - self->last_beat_ms >= WRK_HEARTBEAT_MS) {
            self->last_beat_ms = now;
            every_second (self, now);
        }
        flush_outbox (self);
        drain (self);
        wrk_turns_reap (self);
    }
    cm_info ("corral-worker stopping: %zu turns end cancelled", self->nturns);
    while (self->turns) wrk_turn_cancel (self, &self->turns->id);
    proto_w_disconnect_t bye = {.reason = "worker stopping"};
    wrk_send (self, PROTO_W_DISCONNECT, &bye);
    rc = 0;
done:
    wrk_turns_fini (self);
    while (self->outbox) {
        wrk_out_t *o = self->outbox;
        self->outbox = o->next;
        free (o);
    }
    wrk_http_destroy (&self->http);
    proto_beat_destroy (&self->beat);
    wrk_stats_destroy (&self->stats);
    disconnect (self);
    if (self->epfd >= 0) close (self->epfd);
    wrk_prices_destroy (&self->prices);
    wrk_exec_env_destroy (&self->env);
    wrk_procs_fini (&self->procs);
    json_decref (self->tools);
    proto_buf_fini (&self->buf);
    proto_msg_fini (&self->msg);
    free (self);
    return rc;
}
