/*  gw_watch.c - a connection watching a session, gap-free (DESIGN §5).

    Each watch has `next`, the next seq its client needs, and a mode:

      CATCHUP  events come from the subscription's ring of recent events
               or, when the ring does not reach back to `next`, from the
               store (one events.range in flight per watch);
      LIVE     events come from the subscription as they are published.

    The subscription is made before anything is read (gw_sub_get), and an
    event is published only after the store acknowledged it, so every seq
    is in the store, in the ring, or still to come: nothing can fall
    between.  A live event whose seq is past `next` (a PUB drop, a
    subscription still settling) sends the watch back to CATCHUP; one
    below `next` is a duplicate and is skipped.  A watch whose connection
    has no queue room stops taking events (CATCHUP) and resumes from the
    ring or the store when the queue drains (gw_conn_on_drained).

    A new subscription takes a moment to reach the publisher; a watch that
    goes LIVE within GW_WARM_MS of it reads the store once more afterwards,
    so an event published in that window is not left unseen until the next
    one.  A prompt's answer gives the turn's last seq; a watch still short
    of it reads the store at once.

    Waits hang on the stream: session/prompt is answered after the turn's
    turn_ended event was queued for this connection, session/load and
    _corral/session/attach after the replay reached the head seen when
    they were asked.

    Permission requests: a watch remembers the pending request of its
    session from the events it passed.  When LIVE, it sends the client a
    session/request_permission request; when the stream passes the
    resolution (or the turn's end) before the client answered, the client
    gets $/cancel_request.  A client attaching later gets the still-pending
    request the same way, after its replay.  One that starts past the
    request's event (afterSeq at the head, session/resume) would never pass
    it: the session service names the pending request's seq in its answer
    to load/attach/resume, and gw_watch_pending_perm reads that event from
    the ring or the store and learns it as if passed.  Any permission or
    turn_ended event the watch passes meanwhile is later than it and
    settles it, so a read answering after that is ignored.  Attaching
    again on the same connection hands the request already asked to the
    new watch (gw_watch_take_perm): the client keeps its JSON-RPC id and is
    not asked twice; if the session no longer names it, it is withdrawn.
*/
#include <stdlib.h>
#include <string.h>

#include "cm_log.h"
#include "cm_time.h"
#include "gw.h"
#include "gw_http.h"
#include "gw_rpc.h"

static void fetch (gw_server_t *self, gw_watch_t *w);
static void perm_lookup (gw_server_t *self, gw_watch_t *w);

/* ---- lookup and lifetime ------------------------------------------------ */

gw_watch_t *gw_watch_find (gw_conn_t *conn, const cm_uuid_t *id)
{
    for (gw_watch_t *w = conn->watches; w; w = w->conn_next)
        if (memcmp (w->sub->id.b, id->b, 16) == 0) return w;
    return NULL;
}

gw_watch_t *gw_watch_new (gw_server_t *self, gw_conn_t *conn, const cm_uuid_t *id,
                          uint64_t after_seq)
{
    gw_sub_t *sub = gw_sub_get (self, id);
    if (!sub) return NULL;
    gw_watch_t *w = calloc (1, sizeof *w);
    if (!w) {
        gw_sub_release (self, sub);
        return NULL;
    }
    w->conn = conn;
    w->sub = sub;
    w->mode = GW_W_CATCHUP;
    w->next = after_seq + 1;
    w->conn_next = conn->watches;
    conn->watches = w;
    w->sub_next = sub->watches;
    sub->watches = w;
    sub->nwatches++;
    return w;
}

void gw_wait_free (gw_wait_t *wait)
{
    if (!wait) return;
    json_decref (wait->id);
    json_decref (wait->result);
    free (wait->idem);
    free (wait->err_msg);
    free (wait);
}

static void clear_perm (gw_watch_t *w)
{
    free (w->perm_request);
    free (w->perm_params);
    json_decref (w->perm_rpc_id);
    w->perm_request = w->perm_params = NULL;
    w->perm_rpc_id = NULL;
    w->perm_seq = 0;
}

void gw_watch_free (gw_server_t *self, gw_watch_t *w)
{
    gw_conn_t *conn = w->conn;
    for (gw_watch_t **p = &conn->watches; *p; p = &(*p)->conn_next)
        if (*p == w) {
            *p = w->conn_next;
            break;
        }
    gw_sub_t *sub = w->sub;
    for (gw_watch_t **p = &sub->watches; *p; p = &(*p)->sub_next)
        if (*p == w) {
            *p = w->sub_next;
            break;
        }
    sub->nwatches--;
    while (w->waits) {
        gw_wait_t *next = w->waits->next;
        gw_wait_free (w->waits);
        w->waits = next;
    }
    clear_perm (w);
    //  A fetch in flight finds the watch gone by its key (conn id, session).
    free (w);
    gw_sub_release (self, sub);
}

/* ---- waits -------------------------------------------------------------- */

static void answer (gw_server_t *self, gw_watch_t *w, gw_wait_t *wait)
{
    if (wait->err)
        gw_send_error (self, w->conn, wait->id, wait->err, wait->err_msg);
    else
        gw_send_result (self, w->conn, wait->id, wait->result);
}

//  Answer every wait whose position the stream has passed.
static void check_waits (gw_server_t *self, gw_watch_t *w)
{
    gw_wait_t **p = &w->waits;
    while (*p) {
        gw_wait_t *wait = *p;
        bool ready = wait->known && w->next > wait->until &&
                     (wait->kind != GW_WAIT_PROMPT || wait->result || wait->err);
        if (!ready) {
            p = &wait->next;
            continue;
        }
        *p = wait->next;
        answer (self, w, wait);
        gw_wait_free (wait);
    }
}

void gw_watch_add_wait (gw_server_t *self, gw_watch_t *w, gw_wait_t *wait)
{
    wait->next = NULL;
    gw_wait_t **p = &w->waits;
    while (*p) p = &(*p)->next;
    *p = wait;
    check_waits (self, w);
    //  Short of a known position while LIVE: the tail may be unseen.
    if (w->waits && wait->known && w->next <= wait->until && w->mode == GW_W_LIVE)
        fetch (self, w);
}

gw_wait_t *gw_watch_find_wait (gw_conn_t *conn, json_t *id, gw_watch_t **w_p)
{
    for (gw_watch_t *w = conn->watches; w; w = w->conn_next)
        for (gw_wait_t *wait = w->waits; wait; wait = wait->next)
            if (json_equal (wait->id, id)) {
                if (w_p) *w_p = w;
                return wait;
            }
    return NULL;
}

//  A prompt's outcome from its turn_ended event.
static void turn_outcome (gw_wait_t *wait, const gw_ev_t *ev)
{
    const char *stop = ev->stop_reason ? ev->stop_reason : "end_turn";
    if (strcmp (stop, "failed") == 0) {
        wait->err = ev->code < 0 ? (int)ev->code : CM_E_INTERNAL;
        //  Limits explain themselves (docs/limits.md): pass their words on.
        if ((wait->err == CM_E_MEMORY_LIMIT || wait->err == CM_E_BUDGET) && ev->message)
            wait->err_msg = strdup (ev->message);
    } else if (strcmp (stop, "interrupted") == 0) {
        wait->err = CM_E_UNAVAILABLE;
        wait->err_msg = strdup ("the turn was interrupted by a restart of the session "
                                "service; send the prompt again");
    } else {
        wait->result = json_pack ("{s:s}", "stopReason", stop);
    }
    wait->until = ev->seq;
    wait->known = true;
}

static void waits_on_event (gw_watch_t *w, const gw_ev_t *ev)
{
    for (gw_wait_t *wait = w->waits; wait; wait = wait->next) {
        if (wait->kind != GW_WAIT_PROMPT) continue;
        if (ev->type == PROTO_EV_USER_MESSAGE && ev->idem && wait->idem &&
            strcmp (ev->idem, wait->idem) == 0 && ev->has_turn) {
            wait->has_turn = true;
            wait->turn = ev->turn;
        } else if (ev->type == PROTO_EV_TURN_ENDED && wait->has_turn && ev->has_turn &&
                   memcmp (wait->turn.b, ev->turn.b, 16) == 0 && !wait->result &&
                   !wait->err)
            turn_outcome (wait, ev);
    }
}

/* ---- permissions ---------------------------------------------------------- */

static void send_perm (gw_server_t *self, gw_watch_t *w)
{
    gw_conn_t *conn = w->conn;
    if (!w->perm_request || w->perm_rpc_id || w->mode != GW_W_LIVE ||
        conn->kind != GW_CONN_WS || conn->closing)
        return;
    json_t *params = json_loads (w->perm_params, 0, NULL);
    if (!params) return;
    char idtext[64];
    snprintf (idtext, sizeof idtext, "corral-perm-%llu",
              (unsigned long long)conn->next_rpc_id++);
    w->perm_rpc_id = json_string (idtext);
    gw_conn_send_text (
        self, conn,
        gw_rpc_request (w->perm_rpc_id, "session/request_permission", params));
    json_decref (params);
}

//  Take back the request this client was asked (answered elsewhere, timed
//  out, superseded), and forget it.
static void withdraw_perm (gw_server_t *self, gw_watch_t *w)
{
    if (w->perm_rpc_id && w->conn->kind == GW_CONN_WS) {
        json_t *params = json_pack ("{s:O}", "requestId", w->perm_rpc_id);
        gw_conn_send_text (self, w->conn,
                           gw_rpc_notification ("$/cancel_request", params));
        json_decref (params);
    }
    clear_perm (w);
}

//  ev (a permission_request event) is the session's pending request.
static void perm_learn (gw_server_t *self, gw_watch_t *w, const gw_ev_t *ev)
{
    if (w->perm_request && strcmp (w->perm_request, ev->request_id) == 0) {
        //  Known already (a replay passing it again after gw_watch_take_perm):
        //  asked or not, nothing changes.
        w->perm_seq = ev->seq;
        return;
    }
    withdraw_perm (self, w); //  an older one is settled by a newer question
    w->perm_request = strdup (ev->request_id);
    w->perm_params = strdup (ev->perm_params);
    w->perm_seq = ev->seq;
    if (!w->perm_request || !w->perm_params) clear_perm (w);
}

static void perm_on_event (gw_server_t *self, gw_watch_t *w, const gw_ev_t *ev)
{
    bool request = ev->type == PROTO_EV_PERMISSION_REQUEST;
    //  Later than any request being looked up (gw_watch_pending_perm): a
    //  new request, a resolution or the turn's end settles that one.
    if (request || ev->type == PROTO_EV_PERMISSION_RESOLVED ||
        ev->type == PROTO_EV_TURN_ENDED)
        w->perm_want = 0;
    if (request && ev->request_id && ev->perm_params) {
        perm_learn (self, w, ev);
        return;
    }
    bool resolved = (ev->type == PROTO_EV_PERMISSION_RESOLVED && w->perm_request &&
                     ev->request_id && strcmp (ev->request_id, w->perm_request) == 0) ||
                    (ev->type == PROTO_EV_TURN_ENDED && w->perm_request);
    //  Somebody else answered (or time ran out): withdraw our request.
    if (resolved) withdraw_perm (self, w);
}

void gw_watch_withdraw_perm (gw_server_t *self, gw_watch_t *w)
{
    withdraw_perm (self, w);
}

void gw_watch_take_perm (gw_watch_t *w, gw_watch_t *old)
{
    clear_perm (w);
    w->perm_request = old->perm_request;
    w->perm_params = old->perm_params;
    w->perm_seq = old->perm_seq;
    w->perm_rpc_id = old->perm_rpc_id;
    old->perm_request = old->perm_params = NULL;
    old->perm_rpc_id = NULL;
    old->perm_seq = 0;
}

void gw_watch_pending_perm (gw_server_t *self, gw_watch_t *w, uint64_t perm_seq)
{
    //  A request taken over from the watch this one replaced, behind its
    //  start: the stream passes neither it nor (perhaps) its resolution
    //  again.  It is still pending only if the session names it.
    if (w->perm_request && w->perm_seq < w->next && w->perm_seq != perm_seq)
        withdraw_perm (self, w);
    if (!perm_seq || perm_seq >= w->next) return;           //  none, or the stream has it
    if (w->perm_request && w->perm_seq == perm_seq) return; //  asked already
    w->perm_want = perm_seq;
    perm_lookup (self, w);
}

//  The event the watch was looking for (the ring had it, or the store).
static void perm_found (gw_server_t *self, gw_watch_t *w, const gw_ev_t *ev)
{
    w->perm_want = 0;
    if (ev->type != PROTO_EV_PERMISSION_REQUEST || !ev->request_id || !ev->perm_params) {
        cm_warn ("seq %llu named as a pending permission request is a %s event",
                 (unsigned long long)ev->seq, proto_type_name (ev->type));
        return;
    }
    perm_learn (self, w, ev);
    send_perm (self, w); //  now if LIVE, else when it goes live
}

typedef struct {
    uint64_t conn_id;
    cm_uuid_t session;
    uint64_t seq; //  the request's event
} perm_arg_t;

static void on_perm_fetched (gw_server_t *self, void *arg, int rc, proto_msg_t *reply)
{
    perm_arg_t *pa = arg;
    gw_conn_t *conn = gw_conn_find (self, pa->conn_id);
    gw_watch_t *w = conn ? gw_watch_find (conn, &pa->session) : NULL;
    uint64_t seq = pa->seq;
    free (pa);
    //  Gone, settled by a later event meanwhile, or another read (of a
    //  watch this one replaced) answered first: nothing to do.
    if (!w || w->perm_want != seq) return;
    w->perm_fetching = false;
    if (conn->closing) return;
    proto_events_reply_t *r = rc == 0 && reply ? proto_body (reply, events_reply) : NULL;
    if (!r) {
        cm_warn ("reading a pending permission request failed: %s; retrying",
                 cm_strerror (rc ? rc : CM_E_INVALID));
        return; //  gw_watch_tick tries again
    }
    gw_ev_t *ev = r->events.count && r->first_seq == seq
                      ? gw_ev_new (self, r->events.items[0].data, r->events.items[0].size)
                      : NULL;
    if (!ev) {
        cm_warn ("the pending permission request at seq %llu is not in the store",
                 (unsigned long long)seq);
        w->perm_want = 0;
        return;
    }
    perm_found (self, w, ev);
    gw_ev_unref (&ev);
}

static void perm_lookup (gw_server_t *self, gw_watch_t *w)
{
    uint64_t seq = w->perm_want;
    if (!seq || w->perm_fetching) return;
    gw_sub_t *sub = w->sub;
    if (sub->count && seq >= sub->lo && seq < sub->lo + sub->count) {
        perm_found (self, w, sub->ring[seq % GW_RING]);
        return;
    }
    perm_arg_t *pa = malloc (sizeof *pa);
    if (!pa) return; //  gw_watch_tick tries again
    pa->conn_id = w->conn->id;
    pa->session = w->sub->id;
    pa->seq = seq;
    proto_events_range_t req = {.session = w->sub->id, .after_seq = seq - 1, .limit = 1};
    if (gw_call_store (self, PROTO_STORE_EVENTS_RANGE, &req, on_perm_fetched, pa, free)) {
        free (pa);
        return;
    }
    w->perm_fetching = true;
}

void gw_watch_on_client_response (gw_server_t *self, gw_conn_t *conn, json_t *id,
                                  json_t *result, bool error)
{
    for (gw_watch_t *w = conn->watches; w; w = w->conn_next) {
        if (!w->perm_rpc_id || !json_equal (w->perm_rpc_id, id)) continue;
        const char *option = NULL;
        json_t *outcome = result ? json_object_get (result, "outcome") : NULL;
        const char *kind = json_string_value (json_object_get (outcome, "outcome"));
        if (!error && kind && strcmp (kind, "selected") == 0)
            option = json_string_value (json_object_get (outcome, "optionId"));
        char conn_text[32];
        snprintf (conn_text, sizeof conn_text, "%llu", (unsigned long long)conn->id);
        proto_perm_answer_t req = {.tenant = conn->key ? conn->key->tenant : "",
                                   .id = w->sub->id,
                                   .request_id = w->perm_request,
                                   .option_id = option,
                                   .conn = conn_text};
        //  A conflict (someone answered first) needs no word to this client:
        //  the resolution event withdraws the request from everyone else.
        gw_call_session (self, PROTO_PERMISSION_ANSWER, &req, GW_CALL_TIMEOUT_MS, NULL,
                         NULL, NULL);
        json_decref (w->perm_rpc_id);
        w->perm_rpc_id = NULL;
        free (w->perm_request);
        w->perm_request = NULL; //  answered here: no $/cancel_request
        free (w->perm_params);
        w->perm_params = NULL;
        return;
    }
}

/* ---- delivery --------------------------------------------------------------- */

//  Queue ev (whose seq is w->next) for the connection.
static void deliver (gw_server_t *self, gw_watch_t *w, gw_ev_t *ev)
{
    gw_conn_t *conn = w->conn;
    if (conn->kind == GW_CONN_WS) {
        for (size_t i = 0; i < ev->nacp; i++) gw_conn_push (self, conn, ev->acp[i]);
        self->stats.events_out++;
    } else
        gw_http_on_event (self, conn, ev);
    w->next = ev->seq + 1;
    waits_on_event (w, ev);
    perm_on_event (self, w, ev);
    check_waits (self, w);
    if (w->mode == GW_W_LIVE) send_perm (self, w);
}

static void go_live (gw_server_t *self, gw_watch_t *w)
{
    if (w->mode != GW_W_LIVE && cm_mono_ms () < w->sub->warm_until) w->recheck = true;
    w->mode = GW_W_LIVE;
    send_perm (self, w);
    //  A known target not reached yet: the store has it.
    for (gw_wait_t *wait = w->waits; wait; wait = wait->next)
        if (wait->known && w->next <= wait->until) {
            fetch (self, w);
            break;
        }
}

void gw_watch_pump (gw_server_t *self, gw_watch_t *w)
{
    gw_sub_t *sub = w->sub;
    while (!w->conn->closing) {
        if (!gw_conn_has_room (self, w->conn)) {
            w->mode = GW_W_CATCHUP;
            return;
        }
        uint64_t end = sub->lo + sub->count; //  one past the ring's newest
        if (sub->count && w->next >= sub->lo && w->next < end) {
            //  Slots are by absolute seq (gw_sub_on_event stores seq % GW_RING).
            deliver (self, w, sub->ring[w->next % GW_RING]);
            continue;
        }
        if (sub->count && w->next == end) {
            go_live (self, w);
            return;
        }
        //  Ring empty, or not reaching back to next: the store.
        w->mode = GW_W_CATCHUP;
        fetch (self, w);
        return;
    }
}

void gw_conn_on_drained (gw_server_t *self, gw_conn_t *conn)
{
    for (gw_watch_t *w = conn->watches; w; w = w->conn_next)
        if (w->mode == GW_W_CATCHUP && !w->fetching) gw_watch_pump (self, w);
}

void gw_sub_on_event (gw_server_t *self, gw_sub_t *sub, gw_ev_t *ev)
{
    uint64_t end = sub->lo + sub->count;
    if (sub->count && ev->seq < end) return; //  duplicate
    if (sub->count && ev->seq > end) {       //  a gap: restart the ring here
        self->stats.gaps++;
        for (size_t i = 0; i < sub->count; i++)
            gw_ev_unref (&sub->ring[(sub->lo + i) % GW_RING]);
        sub->count = 0;
    }
    if (!sub->count) sub->lo = ev->seq;
    if (sub->count == GW_RING) {
        gw_ev_unref (&sub->ring[sub->lo % GW_RING]);
        sub->lo++;
        sub->count--;
    }
    sub->ring[(sub->lo + sub->count) % GW_RING] = gw_ev_ref (ev);
    sub->count++;

    for (gw_watch_t *w = sub->watches; w; w = w->sub_next) {
        if (w->mode != GW_W_LIVE) continue;
        if (ev->seq < w->next) continue;
        if (ev->seq == w->next && gw_conn_has_room (self, w->conn)) {
            deliver (self, w, ev);
            continue;
        }
        //  Behind (a gap) or out of room: catch up.
        w->mode = GW_W_CATCHUP;
        if (ev->seq > w->next) {
            self->stats.catchups++;
            gw_watch_pump (self, w);
        }
    }
}

/* ---- store reads -------------------------------------------------------------- */

typedef struct {
    uint64_t conn_id;
    cm_uuid_t session;
    uint64_t from; //  the watch's next when asked (it never goes down)
} fetch_arg_t;

//  Fail the replays waiting on this watch (load, attach).  A prompt's wait
//  stays: its turn goes on, and the stream (or the session's answer) will
//  end it once the history can be read again.
static void fail_waits (gw_server_t *self, gw_watch_t *w, int rc, const char *message)
{
    gw_wait_t **p = &w->waits;
    while (*p) {
        gw_wait_t *wait = *p;
        if (wait->kind != GW_WAIT_LOAD) {
            p = &wait->next;
            continue;
        }
        *p = wait->next;
        gw_send_error (self, w->conn, wait->id, rc, message);
        gw_wait_free (wait);
    }
}

static void on_fetched (gw_server_t *self, void *arg, int rc, proto_msg_t *reply)
{
    fetch_arg_t *fa = arg;
    gw_conn_t *conn = gw_conn_find (self, fa->conn_id);
    gw_watch_t *w = conn ? gw_watch_find (conn, &fa->session) : NULL;
    uint64_t from = fa->from;
    free (fa);
    if (!w) return; //  the connection or the watch went meanwhile
    //  Asked by an earlier watch of this connection on this session (freed
    //  by session/load or attach meanwhile): not this one's history.
    if (from > w->next) return;
    w->fetching = false;
    if (conn->closing) return;
    proto_events_reply_t *r = rc == 0 && reply ? proto_body (reply, events_reply) : NULL;
    if (!r) {
        cm_warn ("history read failed for a watcher: %s",
                 cm_strerror (rc ? rc : CM_E_INVALID));
        fail_waits (self, w, CM_E_UNAVAILABLE,
                    "the event history could not be read; retry in a moment");
        //  Try again on the next drain or tick.
        w->recheck = true;
        return;
    }
    if (strcmp (self->epoch, r->epoch) != 0) {
        if (*self->epoch) cm_warn ("the store's epoch changed to %s", r->epoch);
        snprintf (self->epoch, sizeof self->epoch, "%s", r->epoch);
    }
    if (r->events.count && r->first_seq > w->next) {
        //  Older events are gone (retention): the client must reload.
        cm_warn ("history before seq %llu is gone; a watcher must reload",
                 (unsigned long long)r->first_seq);
        fail_waits (
            self, w, CM_E_EXPIRED,
            "this position is older than the stored history; load the session again");
        w->next = r->first_seq;
    }
    for (size_t i = 0; i < r->events.count && !conn->closing; i++) {
        uint64_t seq = r->first_seq + i;
        if (seq < w->next) continue;
        if (seq > w->next) break;
        if (!gw_conn_has_room (self, conn)) break;
        gw_ev_t *ev = gw_ev_new (self, r->events.items[i].data, r->events.items[i].size);
        if (!ev) {
            //  An event this gateway cannot render: skip it rather than
            //  stall the stream (logged in gw_ev_new).
            w->next = seq + 1;
            continue;
        }
        deliver (self, w, ev);
        gw_ev_unref (&ev);
    }
    self->stats.store_reads++;
    if (!gw_conn_has_room (self, conn)) {
        w->mode = GW_W_CATCHUP; //  resumes when the queue drains
        return;
    }
    bool at_head = w->next > r->last_seq;
    gw_sub_t *sub = w->sub;
    if (at_head && (!sub->count || w->next >= sub->lo + sub->count)) {
        if (w->mode == GW_W_LIVE) {
            check_waits (self, w);
            return;
        }
        go_live (self, w);
        return;
    }
    gw_watch_pump (self, w);
}

static void fetch (gw_server_t *self, gw_watch_t *w)
{
    if (w->fetching) return;
    fetch_arg_t *fa = malloc (sizeof *fa);
    if (!fa) return;
    fa->conn_id = w->conn->id;
    fa->session = w->sub->id;
    fa->from = w->next;
    proto_events_range_t req = {
        .session = w->sub->id, .after_seq = w->next - 1, .limit = GW_PAGE};
    if (gw_call_store (self, PROTO_STORE_EVENTS_RANGE, &req, on_fetched, fa, free)) {
        free (fa);
        return;
    }
    w->fetching = true;
}

void gw_watch_tick (gw_server_t *self, int64_t now)
{
    for (gw_conn_t *conn = self->all; conn; conn = conn->all_next)
        for (gw_watch_t *w = conn->watches; w; w = w->conn_next) {
            if (w->recheck && !w->fetching && now >= w->sub->warm_until) {
                w->recheck = false;
                fetch (self, w);
            }
            if (w->perm_want && !w->perm_fetching && !conn->closing)
                perm_lookup (self, w);
        }
}
