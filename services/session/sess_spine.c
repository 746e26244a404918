/*  sess_spine.c - the event spine (see sess.h): seq, append, publish on ack.

    Per session at most one append is in flight; events emitted meanwhile
    wait in the session's queue and go together in the next one, so a busy
    session's appends grow with the store's round trip (the batching the
    store benchmark measures).  The session record is written after the
    events it describes are acknowledged, so a record never claims a seq
    the store does not hold.

    Across sessions, appends travel together: a session with events ready
    joins the ready list, and at the end of each loop pass
    (sess_spine_send) every ready session's events go to the store in one
    store.events.append_batch, while at most SESS_APPEND_BATCHES batches
    are in flight.  With 1 000 sessions streaming, one request per commit
    replaces one per session per commit: 20 000 events/s were 20 000
    requests and replies through both processes' ZeroMQ threads, and are
    now as many as the store makes commits (bench/fanout.sh; the figures
    are in docs/benchmarks.md).  Every event still waits for at most the
    commit in progress and its own.  A store that does not know the batch
    request (an older build) gets one events.append per session from then
    on.
*/
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "cm_log.h"
#include "cm_time.h"
#include "sess.h"

//  Offsets of the head fields every event record starts with.
typedef struct {
    size_t session, seq, ts, turn;
} head_t;

static int event_head (const proto_msg_desc_t *d, head_t *h)
{
    const proto_rec_desc_t *r = d->body;
    if (d->family != PROTO_FAMILY_EVENT || r->field_count < 4) return CM_E_INVALID;
    //  PROTO_EVENT_HEAD puts them first, in this order (checked once here).
    if (strcmp (r->fields[0].name, "session") || strcmp (r->fields[1].name, "seq") ||
        strcmp (r->fields[2].name, "ts") || strcmp (r->fields[3].name, "turn"))
        return CM_E_INVALID;
    *h = (head_t){r->fields[0].offset, r->fields[1].offset, r->fields[2].offset,
                  r->fields[3].offset};
    return 0;
}

//  Give an encoded event (e->data, e->size; head already stamped with
//  s->next_seq) its place at the end of the queue.  Takes e.
static uint64_t push (sess_server_t *self, sess_session_t *s, sess_event_t *e)
{
    e->seq = s->next_seq++;
    e->next = NULL;
    if (s->queue_tail)
        s->queue_tail->next = e;
    else
        s->queue = e;
    s->queue_tail = e;
    s->queued++;
    sess_spine_flush (self, s);
    return e->seq;
}

static uint64_t enqueue (sess_server_t *self, sess_session_t *s, proto_type_t type,
                         void *body)
{
    head_t h;
    if (event_head (proto_msg_desc (type), &h)) {
        cm_error ("not an event type: %s", proto_type_name (type));
        return 0;
    }
    if (s->queued >= SESS_QUEUE_MAX) {
        cm_error ("session event queue full (%d): the store is not keeping up",
                  SESS_QUEUE_MAX);
        return 0;
    }
    uint64_t seq = s->next_seq;
    char *b = body;
    memcpy (b + h.session, &s->rec.id, sizeof (cm_uuid_t));
    memcpy (b + h.seq, &seq, sizeof seq);
    int64_t ts = cm_time_ms ();
    memcpy (b + h.ts, &ts, sizeof ts);

    proto_buf_reset (&self->buf);
    int rc = proto_encode (&self->buf, type, 0, body);
    if (rc) {
        cm_error ("cannot encode event %s: %s", proto_type_name (type), cm_strerror (rc));
        return 0;
    }
    sess_event_t *e = malloc (sizeof *e + self->buf.size);
    if (!e) return 0;
    memcpy (e->data, self->buf.data, self->buf.size);
    e->size = self->buf.size;
    return push (self, s, e);
}

uint64_t sess_emit (sess_server_t *self, sess_session_t *s, proto_type_t type, void *body)
{
    return enqueue (self, s, type, body);
}

//  Events a worker produced: only the kinds a turn may emit, decoded (so
//  nothing malformed reaches the store or the clients), head replaced.
uint64_t sess_emit_encoded (sess_server_t *self, sess_session_t *s, const cm_uuid_t *turn,
                            const void *data, size_t size, int *err)
{
    //  One reused message: decoding keeps its zone, so an event costs no
    //  allocation here.
    proto_msg_t *msg = &self->evmsg;
    *err = proto_decode (msg, data, size);
    uint64_t seq = 0;
    if (*err == 0) {
        switch (msg->type) {
        case PROTO_EV_AGENT_MESSAGE:
        case PROTO_EV_AGENT_THOUGHT:
        case PROTO_EV_TOOL_CALL:
        case PROTO_EV_TOOL_CALL_UPDATE:
        case PROTO_EV_PLAN:
        case PROTO_EV_USAGE:
        case PROTO_EV_POLICY: {
            if (s->queued >= SESS_QUEUE_MAX) {
                *err = CM_E_CAPACITY;
                break;
            }
            //  Validated above; now stamp the worker's own bytes (no
            //  re-encode).  An encoding we cannot stamp is re-encoded.
            sess_event_t *e = malloc (sizeof *e + size);
            if (!e) {
                *err = CM_E_NOMEM;
                break;
            }
            memcpy (e->data, data, size);
            e->size = size;
            if (proto_event_stamp (e->data, size, &s->rec.id, s->next_seq, cm_time_ms (),
                                   turn) == 0) {
                seq = push (self, s, e);
                break;
            }
            free (e);
            head_t h;
            event_head (msg->desc, &h);
            memcpy ((char *)msg->body + h.turn, turn, sizeof *turn);
            seq = enqueue (self, s, msg->type, msg->body);
            if (!seq) *err = CM_E_CAPACITY;
            break;
        }
        default:
            *err = CM_E_FORBIDDEN;
        }
    }
    return seq;
}

static void on_appended (sess_server_t *self, void *arg, int rc, proto_msg_t *reply);
static void on_put (sess_server_t *self, void *arg, int rc, proto_msg_t *reply);

//  Continuations carry the session id, not the pointer: the session may be
//  gone (deleted) when the answer comes.
static cm_uuid_t *id_arg (const sess_session_t *s)
{
    cm_uuid_t *id = malloc (sizeof *id);
    if (id) *id = s->rec.id;
    return id;
}

static void put_record (sess_server_t *self, sess_session_t *s)
{
    if (s->put_inflight || !s->dirty) return;
    s->dirty = false;
    s->rec.last_seq = s->acked_seq;
    s->rec.updated_ms = cm_time_ms ();
    proto_session_put_t put = {.session = &s->rec};
    cm_uuid_t *id = id_arg (s);
    if (id && sess_store_call (self, PROTO_STORE_SESSION_PUT, &put, on_put, id) == 0)
        s->put_inflight = true;
    else {
        free (id);
        s->dirty = true;
    }
}

void sess_mark_dirty (sess_server_t *self, sess_session_t *s)
{
    s->dirty = true;
    //  With events waiting, the record goes after their ack; otherwise now.
    if (!s->queue) put_record (self, s);
}

//  The events of s's queue that go in its next append: at most
//  SESS_APPEND_MAX of them and SESS_APPEND_BYTES (always at least one).
static size_t take_events (const sess_session_t *s, proto_bin_t *items, size_t *bytes)
{
    size_t n = 0, size = 0;
    for (sess_event_t *e = s->queue; e && n < SESS_APPEND_MAX; e = e->next, n++) {
        if (n && size + e->size > SESS_APPEND_BYTES) break;
        size += e->size;
        items[n] = (proto_bin_t){e->data, e->size};
    }
    *bytes = size;
    return n;
}

static void send_single (sess_server_t *self, sess_session_t *s)
{
    proto_bin_t items[SESS_APPEND_MAX];
    size_t bytes;
    size_t n = take_events (s, items, &bytes);
    proto_events_append_t req = {
        .session = s->rec.id, .first_seq = s->queue->seq, .events = {items, n}};
    cm_uuid_t *id = id_arg (s);
    if (!id || sess_store_call (self, PROTO_STORE_EVENTS_APPEND, &req, on_appended, id)) {
        free (id);
        return; //  the next emit or tick tries again
    }
    s->inflight_last = s->queue->seq + n - 1;
}

void sess_spine_flush (sess_server_t *self, sess_session_t *s)
{
    if (s->inflight_last) return;
    if (!s->queue) {
        put_record (self, s);
        return;
    }
    if (self->append_single) {
        send_single (self, s);
        return;
    }
    if (s->ready) return;
    if (self->nready == self->ready_cap) {
        size_t cap = self->ready_cap ? 2 * self->ready_cap : 64;
        cm_uuid_t *ids = realloc (self->ready_ids, cap * sizeof *ids);
        if (!ids) return; //  the next emit or the retry tick tries again
        self->ready_ids = ids;
        self->ready_cap = cap;
    }
    self->ready_ids[self->nready++] = s->rec.id;
    s->ready = true;
}

//  A batch's continuation: the sessions it carried, in request order.
typedef struct {
    size_t count;
    cm_uuid_t ids[];
} batch_arg_t;

static void on_batch (sess_server_t *self, void *arg, int rc, proto_msg_t *reply);

void sess_spine_send (sess_server_t *self)
{
    while (self->nready && self->batches_inflight < SESS_APPEND_BATCHES &&
           !self->append_single) {
        //  Whole sessions from the front of the ready list, up to the
        //  batch limits; the rest stay ready for the next batch.
        size_t want =
            self->nready < SESS_BATCH_SESSIONS ? self->nready : SESS_BATCH_SESSIONS;
        //  The request's arrays are scratch kept for the next batch (128
        //  KiB of items would be an mmap and munmap per batch otherwise).
        if (!self->batch_items) {
            self->batch_items = malloc (SESS_BATCH_EVENTS * sizeof *self->batch_items);
            self->batch_apps = malloc (SESS_BATCH_SESSIONS * sizeof *self->batch_apps);
        }
        proto_bin_t *items = self->batch_items;
        proto_events_append_t *apps = self->batch_apps;
        batch_arg_t *arg = malloc (sizeof *arg + want * sizeof (cm_uuid_t));
        if (!apps || !arg || !items) {
            free (arg);
            return; //  the ready list stays; the next pass tries again
        }
        size_t taken = 0, napps = 0, nitems = 0, bytes = 0;
        for (; taken < self->nready && napps < want; taken++) {
            sess_session_t *s = sess_lookup (self, &self->ready_ids[taken]);
            if (!s || !s->ready) continue; //  gone meanwhile
            if (s->inflight_last || !s->queue) {
                s->ready = false;
                continue;
            }
            if (napps && (nitems + SESS_APPEND_MAX > SESS_BATCH_EVENTS ||
                          bytes + SESS_APPEND_BYTES > SESS_BATCH_BYTES))
                break; //  this one might not fit: next batch
            size_t size;
            size_t n = take_events (s, items + nitems, &size);
            apps[napps] = (proto_events_append_t){.session = s->rec.id,
                                                  .first_seq = s->queue->seq,
                                                  .events = {items + nitems, n}};
            arg->ids[napps++] = s->rec.id;
            s->inflight_last = s->queue->seq + n - 1;
            s->ready = false;
            nitems += n;
            bytes += size;
        }
        memmove (self->ready_ids, self->ready_ids + taken,
                 (self->nready - taken) * sizeof *self->ready_ids);
        self->nready -= taken;
        arg->count = napps;
        int rc = 0;
        if (napps) {
            proto_append_batch_t req = {.appends = {apps, napps}};
            rc = sess_store_call (self, PROTO_STORE_EVENTS_APPEND_BATCH, &req, on_batch,
                                  arg);
        }
        if (!napps) {
            free (arg);
            continue;
        }
        if (rc) {
            //  Not sent (encoding failed, out of memory): the sessions may
            //  append again; their next event or the retry tick sends them.
            for (size_t i = 0; i < napps; i++) {
                sess_session_t *s = sess_lookup (self, &arg->ids[i]);
                if (s) s->inflight_last = 0;
            }
            free (arg);
            return;
        }
        self->batches_inflight++;
    }
}

static void free_event (void *data, void *hint)
{
    free (hint);
}

//  Publish an event and hand its memory to ZeroMQ (zero copy: the PUB
//  frees it once sent).  PUB never blocks: a slow subscriber drops at its
//  HWM and repairs the gap from the store by seq.
static void publish (sess_server_t *self, const sess_session_t *s, sess_event_t *e)
{
    zmq_msg_t m;
    if (zmq_send (self->pub, s->topic, s->topic_len, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0 ||
        zmq_msg_init_data (&m, e->data, e->size, free_event, e) != 0) {
        cm_debug ("publish of seq %llu dropped", (unsigned long long)e->seq);
        free (e);
        return;
    }
    if (zmq_msg_send (&m, self->pub, ZMQ_DONTWAIT) < 0) {
        cm_debug ("publish of seq %llu dropped", (unsigned long long)e->seq);
        zmq_msg_close (&m); //  frees e
    }
}

//  The store's answer to one session's append: rc 0 and the highest seq
//  it holds, or a refusal.
static void acked (sess_server_t *self, sess_session_t *s, int rc, uint64_t last)
{
    if (rc) {
        //  A refused append (gap, full store) is retried by the tick; the
        //  events stay queued and unpublished, in order.
        cm_error ("append refused (%s); will retry", cm_strerror (rc));
        s->inflight_last = 0;
        return;
    }
    while (s->queue && s->queue->seq <= last) {
        sess_event_t *e = s->queue;
        s->queue = e->next;
        if (!s->queue) s->queue_tail = NULL;
        s->queued--;
        publish (self, s, e); //  e belongs to ZeroMQ now
        self->stats.events++;
    }
    if (last > s->acked_seq)
        s->acked_seq = s->rec.last_seq = last; //  readers see the acknowledged head
    s->inflight_last = 0;
    sess_turn_on_acked (self, s);
    sess_spine_flush (self, s);
}

static void on_appended (sess_server_t *self, void *arg, int rc, proto_msg_t *reply)
{
    cm_uuid_t *id = arg;
    sess_session_t *s = sess_lookup (self, id);
    free (id);
    if (!s) return;
    proto_appended_t *ack = rc ? NULL : proto_body (reply, appended);
    acked (self, s, rc, ack ? ack->last_seq : 0);
}

static void on_batch (sess_server_t *self, void *arg, int rc, proto_msg_t *reply)
{
    batch_arg_t *b = arg;
    self->batches_inflight--;
    proto_appended_batch_t *ack = rc ? NULL : proto_body (reply, appended_batch);
    if (!rc && (!ack || ack->results.count != b->count)) {
        cm_error ("the store answered an append batch with something else; will retry");
        rc = CM_E_INVALID;
    } else if (rc == CM_E_UNKNOWN_TYPE && !self->append_single) {
        cm_warn ("the store does not take append batches (an older corral-store?): "
                 "appending session by session");
        self->append_single = true;
    } else if (rc)
        cm_error ("append batch refused (%s); will retry", cm_strerror (rc));
    for (size_t i = 0; i < b->count; i++) {
        sess_session_t *s = sess_lookup (self, &b->ids[i]);
        if (!s) continue;
        if (rc) {
            //  Not stored: the retry tick (or, session by session, at once)
            //  sends the same events again.
            s->inflight_last = 0;
            if (self->append_single) sess_spine_flush (self, s);
            continue;
        }
        const proto_append_result_t *r = &ack->results.items[i];
        int code = r->code == 0                     ? 0
                   : r->code < 0 && r->code > -1000 ? (int)r->code
                                                    : CM_E_INTERNAL;
        if (memcmp (r->session.b, s->rec.id.b, 16) != 0) code = CM_E_INVALID;
        if (code && r->message) cm_error ("store: %s", r->message);
        acked (self, s, code, r->last_seq);
    }
    free (b);
}

static void on_put (sess_server_t *self, void *arg, int rc, proto_msg_t *reply)
{
    cm_uuid_t *id = arg;
    sess_session_t *s = sess_lookup (self, id);
    free (id);
    if (!s) return;
    s->put_inflight = false;
    if (rc) s->dirty = true;
    if (s->dirty && !s->queue) put_record (self, s);
}

void sess_set_state (sess_server_t *self, sess_session_t *s, const char *state,
                     const char *reason)
{
    if (s->rec.state && strcmp (s->rec.state, state) == 0) return;
    sess_dup_str (&s->rec.state, state);
    proto_ev_state_t ev = {.state = state, .reason = reason};
    if (s->turn.state != TURN_NONE) ev.turn = s->turn.id;
    sess_emit (self, s, PROTO_EV_STATE, &ev);
    sess_mark_dirty (self, s);
}
