/*  sess_workers.c - the worker side of the Majordomo-like protocol.

    A worker announces itself with READY (id, capacity) and then beats every
    second; we beat back.  Any message counts as a beat.  A worker silent for
    SESS_HEARTBEAT_DEAD_MS (2.5 s) is dead: its turns end worker_lost (never
    resent: they have side effects) and it leaves the registry.  A message
    from a worker we do not know (we restarted) gets DISCONNECT, and the
    worker announces itself again.
*/
#include <stdlib.h>
#include <string.h>

#include "cm_log.h"
#include "cm_time.h"
#include "sess.h"

static sess_worker_t *find (sess_server_t *self, const uint8_t *id, size_t id_len)
{
    for (sess_worker_t *w = self->workers; w; w = w->next)
        if (w->id_len == id_len && memcmp (w->id, id, id_len) == 0) return w;
    return NULL;
}

static void unlink_worker (sess_server_t *self, sess_worker_t *w)
{
    for (sess_worker_t **p = &self->workers; *p; p = &(*p)->next)
        if (*p == w) {
            *p = w->next;
            return;
        }
}

static void remove_worker (sess_server_t *self, sess_worker_t *w, const char *why)
{
    cm_warn ("worker %s %s; its turns end worker_lost", w->name, why);
    unlink_worker (self, w); //  first, so nothing is dispatched to it again
    sess_turn_worker_lost (self, w);
    free (w);
}

void sess_worker_on_message (sess_server_t *self, const uint8_t *id, size_t id_len,
                             proto_msg_t *msg)
{
    if (id_len > SESS_ID_MAX) return;
    sess_worker_t *w = find (self, id, id_len);
    if (msg->type == PROTO_W_READY) {
        proto_w_ready_t *r = msg->body;
        if (!w) {
            w = calloc (1, sizeof *w);
            if (!w) return;
            memcpy (w->id, id, id_len);
            w->id_len = id_len;
            w->next = self->workers;
            self->workers = w;
        }
        snprintf (w->name, sizeof w->name, "%s", r->worker_id);
        w->capacity = r->capacity;
        w->last_seen_ms = cm_mono_ms ();
        cm_info ("worker %s ready (capacity %llu, host %s)", w->name,
                 (unsigned long long)w->capacity, r->host ? r->host : "?");
        sess_turn_dispatch_waiting (self);
        return;
    }
    if (!w) {
        proto_w_disconnect_t bye = {.reason = "unknown worker: send READY"};
        sess_worker_t tmp = {.id_len = id_len};
        memcpy (tmp.id, id, id_len);
        sess_send_worker (self, &tmp, PROTO_W_DISCONNECT, &bye);
        return;
    }
    w->last_seen_ms = cm_mono_ms ();
    switch (msg->type) {
    case PROTO_W_HEARTBEAT:
        return;
    case PROTO_W_DISCONNECT:
        remove_worker (self, w, "disconnected");
        return;
    case PROTO_W_EVENT:
    case PROTO_W_PERMISSION_REQUEST:
    case PROTO_W_TURN_DONE:
    case PROTO_W_TURN_FAILED:
        sess_turn_on_worker (self, w, msg);
        return;
    default:
        cm_warn ("worker %s sent %s; ignored", w->name, proto_type_name (msg->type));
    }
}

sess_worker_t *sess_worker_pick (sess_server_t *self, const char *prefer)
{
    sess_worker_t *best = NULL;
    for (sess_worker_t *w = self->workers; w; w = w->next) {
        if (w->active >= w->capacity) continue;
        if (prefer && strcmp (w->name, prefer) == 0) return w;
        if (!best || w->capacity - w->active > best->capacity - best->active) best = w;
    }
    return best;
}

void sess_workers_tick (sess_server_t *self, int64_t now, bool beat)
{
    //  Liveness is checked on every tick (100 ms), so a dead worker's turns
    //  end within 3 s of its last sign of life; beats go out every second.
    sess_worker_t *w = self->workers;
    while (w) {
        sess_worker_t *next = w->next;
        if (now - w->last_seen_ms > SESS_HEARTBEAT_DEAD_MS)
            remove_worker (self, w, "missed its heartbeats");
        else if (beat)
            sess_send_worker (self, w, PROTO_W_HEARTBEAT, NULL);
        w = next;
    }
}

void sess_workers_fini (sess_server_t *self)
{
    while (self->workers) {
        sess_worker_t *w = self->workers;
        self->workers = w->next;
        proto_w_disconnect_t bye = {.reason = "session service stopping"};
        sess_send_worker (self, w, PROTO_W_DISCONNECT, &bye);
        free (w);
    }
}
