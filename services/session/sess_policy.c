/*  sess_policy.c - policy actions from corral-monitor (DESIGN §8: the
    monitor decides, the session service carries out), and the census the
    monitor's policy engine reads at its start.

    Who may ask: monitor.action and monitor.census are the MONITOR family
    and arrive on the client ROUTER, like the gateways' requests.  The bus
    is the trust boundary (a peer of that socket already names any tenant
    it likes); what keeps clients out is that the gateway builds every bus
    request from a fixed type per JSON-RPC method or REST route and never
    forwards a client's message, so no client can make it send a MONITOR
    message.

    Actions (each answers ok, or an error a person can act on; each is
    idempotent, so the monitor may resend one it got no answer to):
      warn       a policy event (EV_POLICY) clients see; the same warning
                 (policy, message, turn) again within SESS_POLICY_WARN_DEDUP
                 is answered ok without a second event.  closed: conflict.
      cancel     EV_POLICY, then the running turn (the one named, when the
                 action names one) is cancelled as by
                 session.cancel; its turn_ended says stop_reason cancelled
                 with the policy's message.  Already cancelling, or the named
                 turn is over: ok, nothing new.  No turn running (none
                 named), or another turn than the named one: conflict.
      hibernate  EV_POLICY, state hibernated.  The worker keeps nothing of
                 a session between turns (a turn carries the whole
                 conversation), so there is nothing to free there; here the
                 in-memory session is dropped once it is quiet (every event
                 acknowledged, the record stored, SESS_POLICY_EVICT_MS after
                 its last store write), and the next request loads it from
                 the store.  A prompt (or session.resume) resumes it: state
                 ready "resumed", then the turn runs on the stored history.
                 A turn running: busy.  Hibernated already: ok.
      close      EV_POLICY, then state closed with end_reason = the policy
                 ("max_duration").  A running turn first gets
                 --close-grace to finish; past it, it is cancelled, and the
                 session closes when the turn has ended.  Meanwhile new
                 prompts are refused (conflict).  Closed already, or closing:
                 ok.
    Unknown session: not_found.  A bad action or policy name: invalid.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cm_log.h"
#include "cm_time.h"
#include "sess.h"

#define SESS_POLICY_WARN_DEDUP 60000 //  ms an identical warning is not repeated
#define SESS_POLICY_EVICT_MS   5000  //  a quiet hibernated session leaves memory
#define SESS_POLICY_SWEEP_MS   1000  //  how often hibernated sessions are swept
#define SESS_POLICY_MSG_MAX    1024  //  bytes of an action's message
#define SESS_CENSUS_PAGE       1000  //  sessions per census page at most

static const char *const s_actions[] = {"warn", "cancel", "hibernate", "close", NULL};
static const char *const s_policies[] = {"max_duration", "idle",   "memory",
                                         "stuck",        "budget", NULL};

//  What a session remembers of policies, kept apart from sess_session_t
//  (by id: the session may leave memory while this lives on).
typedef struct {
    cm_uuid_t id;
    uint64_t warn_hash; //  the last warning: hash of policy, message
    cm_uuid_t warn_turn;
    int64_t warn_ms; //  monotonic
    bool closing;    //  a close waits for the running turn
    bool grace_over; //  ... and the turn was cancelled at the deadline
    int64_t close_deadline_ms;
    char *close_policy, *close_message;
} pol_t;

//  A running turn past its grace is cancelled with this reason.
static void cancel_graceless (sess_server_t *self, sess_session_t *s, pol_t *p)
{
    char why[256];
    snprintf (why, sizeof why,
              "cancelled: the session is being closed by the %s policy and the turn did "
              "not end within the grace period (%lld s)",
              p->close_policy, (long long)(self->cfg->close_grace_ms / 1000));
    p->grace_over = true;
    sess_turn_cancel_why (self, s, why);
}

struct sess_policy {
    cm_map_t *map; //  id -> pol_t
    int64_t last_sweep_ms;
};

static bool one_of (const char *value, const char *const *words)
{
    for (; *words; words++)
        if (strcmp (value, *words) == 0) return true;
    return false;
}

static struct sess_policy *state (sess_server_t *self)
{
    if (!self->policy) {
        self->policy = calloc (1, sizeof *self->policy);
        if (self->policy && !(self->policy->map = cm_map_new (16))) {
            free (self->policy);
            self->policy = NULL;
        }
    }
    return self->policy;
}

static pol_t *pol_get (sess_server_t *self, const cm_uuid_t *id, bool create)
{
    struct sess_policy *st = state (self);
    if (!st) return NULL;
    pol_t *p = cm_map_get (st->map, id->b);
    if (p || !create) return p;
    p = calloc (1, sizeof *p);
    if (!p) return NULL;
    p->id = *id;
    if (cm_map_put (st->map, id->b, p)) {
        free (p);
        return NULL;
    }
    return p;
}

static void pol_free (pol_t *p)
{
    if (!p) return;
    free (p->close_policy);
    free (p->close_message);
    free (p);
}

static void pol_drop (sess_server_t *self, pol_t *p)
{
    cm_map_remove (self->policy->map, p->id.b);
    pol_free (p);
}

static uint64_t hash2 (const char *a, const char *b)
{
    uint64_t h = 1469598103934665603ull; //  FNV-1a
    for (const char *s = a; *s; s++) h = (h ^ (uint8_t)*s) * 1099511628211ull;
    h = (h ^ 0xff) * 1099511628211ull;
    for (const char *s = b; *s; s++) h = (h ^ (uint8_t)*s) * 1099511628211ull;
    return h;
}

static bool turn_live (const sess_session_t *s)
{
    return s->turn.state != TURN_NONE && s->turn.state != TURN_ENDING;
}

static void emit_policy (sess_server_t *self, sess_session_t *s, const char *policy,
                         const char *action, const char *message, uint64_t remaining_ms)
{
    proto_ev_policy_t ev = {.policy = policy,
                            .action = action,
                            .message = message,
                            .remaining_ms = remaining_ms};
    if (turn_live (s)) ev.turn = s->turn.id;
    sess_emit (self, s, PROTO_EV_POLICY, &ev);
}

static void close_now (sess_server_t *self, sess_session_t *s, pol_t *p)
{
    sess_session_close (self, s, p->close_policy, p->close_message);
    cm_info ("session closed by the %s policy", p->close_policy);
    pol_drop (self, p);
}

/* ---------------------------------------------------------------- */
/*  monitor.action                                                   */

static void act (sess_server_t *self, sess_session_t *s, const sess_peer_t *peer,
                 const proto_mon_action_t *a)
{
    bool closed = strcmp (s->rec.state, "closed") == 0;
    pol_t *p = pol_get (self, &s->rec.id, false);
    if (strcmp (a->action, "warn") == 0) {
        if (closed) {
            sess_reply_error (self, peer, CM_E_CONFLICT, "the session is closed");
            return;
        }
        uint64_t h = hash2 (a->policy, a->message);
        cm_uuid_t turn = turn_live (s) ? s->turn.id : (cm_uuid_t){0};
        int64_t now = cm_mono_ms ();
        if (!(p = pol_get (self, &s->rec.id, true))) {
            sess_reply_error (self, peer, CM_E_NOMEM, NULL);
            return;
        }
        if (p->warn_ms && p->warn_hash == h &&
            memcmp (&p->warn_turn, &turn, sizeof turn) == 0 &&
            now - p->warn_ms < SESS_POLICY_WARN_DEDUP) {
            sess_reply (self, peer, PROTO_OK, NULL); //  a resend
            return;
        }
        p->warn_hash = h;
        p->warn_turn = turn;
        p->warn_ms = now;
        emit_policy (self, s, a->policy, "warn", a->message, a->remaining_ms);
        sess_reply (self, peer, PROTO_OK, NULL);
        return;
    }
    if (strcmp (a->action, "cancel") == 0) {
        bool named = !cm_uuid_is_nil (&a->turn);
        if (named && !turn_live (s) &&
            memcmp (&a->turn, &s->rec.last_turn, sizeof a->turn) == 0) {
            sess_reply (self, peer, PROTO_OK, NULL); //  that turn is over already
            return;
        }
        bool other = named && memcmp (&a->turn, &s->turn.id, sizeof a->turn) != 0;
        if (closed || !turn_live (s) || other) {
            sess_reply_error (self, peer, CM_E_CONFLICT,
                              closed  ? "the session is closed"
                              : other ? "that turn is over; another one runs"
                                      : "no turn is running");
            return;
        }
        if (s->turn.cancel) {
            sess_reply (self, peer, PROTO_OK, NULL); //  cancelling already
            return;
        }
        char why[SESS_POLICY_MSG_MAX + 64];
        snprintf (why, sizeof why, "cancelled by the %s policy: %s", a->policy,
                  a->message);
        emit_policy (self, s, a->policy, "cancel", a->message, 0);
        sess_turn_cancel_why (self, s, why);
        cm_info ("turn cancelled by the %s policy", a->policy);
        sess_reply (self, peer, PROTO_OK, NULL);
        return;
    }
    if (strcmp (a->action, "hibernate") == 0) {
        if (strcmp (s->rec.state, "hibernated") == 0) {
            sess_reply (self, peer, PROTO_OK, NULL);
            return;
        }
        if (closed || (p && p->closing)) {
            sess_reply_error (self, peer, CM_E_CONFLICT,
                              closed ? "the session is closed"
                                     : "the session is closing");
            return;
        }
        if (s->turn.state != TURN_NONE) {
            sess_reply_error (self, peer, CM_E_BUSY,
                              "a turn is running; a session hibernates only when idle");
            return;
        }
        emit_policy (self, s, a->policy, "hibernate", a->message, 0);
        sess_set_state (self, s, "hibernated", a->message);
        cm_info ("session hibernated by the %s policy", a->policy);
        sess_reply (self, peer, PROTO_OK, NULL);
        return;
    }
    //  close
    if (closed || (p && p->closing)) {
        sess_reply (self, peer, PROTO_OK, NULL);
        return;
    }
    if (!(p = pol_get (self, &s->rec.id, true))) {
        sess_reply_error (self, peer, CM_E_NOMEM, NULL);
        return;
    }
    free (p->close_policy);
    free (p->close_message);
    p->close_policy = strdup (a->policy);
    p->close_message = strdup (a->message);
    if (!p->close_policy || !p->close_message) {
        pol_drop (self, p);
        sess_reply_error (self, peer, CM_E_NOMEM, NULL);
        return;
    }
    emit_policy (self, s, a->policy, "close", a->message, 0);
    if (s->turn.state == TURN_NONE)
        close_now (self, s, p);
    else {
        p->closing = true;
        p->close_deadline_ms = cm_mono_ms () + self->cfg->close_grace_ms;
        if (self->cfg->close_grace_ms == 0) cancel_graceless (self, s, p);
    }
    sess_reply (self, peer, PROTO_OK, NULL);
}

//  The action once its session is in memory (sess_with_session).
static void act_on (sess_server_t *self, sess_session_t *s, const sess_peer_t *peer,
                    proto_msg_t *msg)
{
    act (self, s, peer, proto_body (msg, mon_action));
}

static void action (sess_server_t *self, const sess_peer_t *peer, proto_msg_t *msg)
{
    const proto_mon_action_t *a = proto_body (msg, mon_action);
    if (!one_of (a->action, s_actions)) {
        sess_reply_error (self, peer, CM_E_INVALID,
                          "action must be warn, cancel, hibernate or close");
        return;
    }
    if (!one_of (a->policy, s_policies)) {
        sess_reply_error (self, peer, CM_E_INVALID,
                          "policy must be max_duration, idle, memory, stuck or budget");
        return;
    }
    if (strlen (a->message) > SESS_POLICY_MSG_MAX) {
        sess_reply_error (self, peer, CM_E_TOO_LARGE,
                          "an action's message is at most 1024 bytes");
        return;
    }
    sess_with_session (self, &a->session, peer, msg, act_on);
}

/* ---------------------------------------------------------------- */
/*  monitor.census: live sessions, a store page at a time            */

static void on_census_page (sess_server_t *self, void *arg, int rc, proto_msg_t *reply)
{
    sess_peer_t *peer = arg;
    proto_sessions_reply_t *page = rc == 0 ? proto_body (reply, sessions_reply) : NULL;
    if (!page) {
        sess_reply_error (self, peer, rc ? rc : CM_E_INTERNAL,
                          "the census could not read the sessions; retry");
        free (peer);
        return;
    }
    size_t n = page->sessions.count;
    proto_census_entry_t *items = n ? calloc (n, sizeof *items) : NULL;
    if (n && !items) {
        sess_reply_error (self, peer, CM_E_NOMEM, NULL);
        free (peer);
        return;
    }
    int64_t wall = cm_time_ms (), mono = cm_mono_ms ();
    size_t count = 0;
    for (size_t i = 0; i < n; i++) {
        //  A session in memory is newer than its stored record.
        sess_session_t *s = sess_lookup (self, &page->sessions.items[i].id);
        const proto_session_rec_t *r = s ? &s->rec : &page->sessions.items[i];
        if (!r->state || strcmp (r->state, "closed") == 0) continue;
        proto_census_entry_t *e = &items[count++];
        e->id = r->id;
        e->state = r->state;
        e->opened_ms = r->opened_ms ? r->opened_ms : r->created_ms;
        e->active_ms = r->updated_ms ? r->updated_ms : r->created_ms;
        if (s && turn_live (s)) {
            e->turn = s->turn.id;
            e->turn_ms = wall - (mono - s->turn.started_ms);
        }
    }
    proto_census_reply_t out = {.sessions = {items, count}, .more = page->more};
    if (n) out.last = page->sessions.items[n - 1].id;
    sess_reply (self, peer, PROTO_MON_CENSUS_REPLY, &out);
    free (items);
    free (peer);
}

static void census (sess_server_t *self, const sess_peer_t *peer, proto_msg_t *msg)
{
    const proto_list_req_t *req = proto_body (msg, list_req);
    proto_list_req_t fwd = {.after = req->after,
                            .limit = req->limit && req->limit < SESS_CENSUS_PAGE
                                         ? req->limit
                                         : SESS_CENSUS_PAGE};
    sess_peer_t *p = malloc (sizeof *p);
    if (!p) {
        sess_reply_error (self, peer, CM_E_NOMEM, NULL);
        return;
    }
    *p = *peer;
    if (sess_store_call (self, PROTO_STORE_SESSION_LIST, &fwd, on_census_page, p)) {
        free (p);
        sess_reply_error (self, peer, CM_E_INTERNAL, NULL);
    }
}

void sess_policy_on_monitor (sess_server_t *self, const sess_peer_t *peer,
                             proto_msg_t *msg)
{
    if (!self->ready) {
        sess_reply_error (self, peer, CM_E_UNAVAILABLE,
                          "the session service is starting; retry in a moment");
        return;
    }
    switch (msg->type) {
    case PROTO_MON_ACTION:
        action (self, peer, msg);
        return;
    case PROTO_MON_CENSUS:
        census (self, peer, msg);
        return;
    default:
        sess_reply_error (self, peer, CM_E_UNKNOWN_TYPE,
                          "this monitor request is not served by corral-session");
    }
}

/* ---------------------------------------------------------------- */
/*  Prompts, ticks                                                   */

bool sess_policy_before_prompt (sess_server_t *self, sess_session_t *s,
                                const sess_peer_t *peer)
{
    pol_t *p = pol_get (self, &s->rec.id, false);
    if (p && p->closing) {
        //  A resend of the running prompt still joins it (sess_turn_prompt).
        if (s->turn.state != TURN_NONE) return false;
        sess_reply_error (self, peer, CM_E_CONFLICT,
                          "the session is being closed by a policy; start a new session");
        return true;
    }
    if (strcmp (s->rec.state, "hibernated") == 0)
        sess_set_state (self, s, "ready", "resumed by a prompt");
    return false;
}

//  A hibernated session with nothing in flight leaves memory.  Every
//  continuation names sessions by id and looks them up, so none of them
//  can hold a pointer to it.
static bool quiet (const sess_session_t *s, int64_t wall)
{
    return s->turn.state == TURN_NONE && !s->queue && !s->inflight_last && !s->dirty &&
           !s->put_inflight && s->rec.updated_ms &&
           wall - s->rec.updated_ms >= SESS_POLICY_EVICT_MS;
}

static void sweep (sess_server_t *self)
{
    int64_t wall = cm_time_ms ();
    size_t pos = 0, evicted = 0;
    const void *key;
    void *value;
    while (cm_map_next (self->sessions, &pos, &key, &value)) {
        sess_session_t *s = value;
        if (strcmp (s->rec.state, "hibernated") != 0 || !quiet (s, wall)) continue;
        pol_t *p = self->policy ? cm_map_get (self->policy->map, key) : NULL;
        if (p && p->closing) continue;
        cm_map_remove (self->sessions, key);
        sess_session_free (s);
        evicted++;
    }
    if (evicted) cm_debug ("%zu hibernated sessions left memory", evicted);
}

void sess_policy_tick (sess_server_t *self, int64_t now)
{
    struct sess_policy *st = self->policy;
    if (st && cm_map_size (st->map)) {
        size_t pos = 0;
        void *value;
        while (cm_map_next (st->map, &pos, NULL, &value)) {
            pol_t *p = value;
            sess_session_t *s = sess_lookup (self, &p->id);
            if (!s) {
                //  Deleted (a close waits no more), or hibernated and out of
                //  memory (its last warning is still remembered a while).
                if (p->closing || now - p->warn_ms >= SESS_POLICY_WARN_DEDUP)
                    pol_drop (self, p);
                continue;
            }
            if (p->closing) {
                if (s->turn.state == TURN_NONE) {
                    p->closing = false;
                    close_now (self, s, p);
                } else if (!p->grace_over && now >= p->close_deadline_ms)
                    cancel_graceless (self, s, p);
            } else if (now - p->warn_ms >= SESS_POLICY_WARN_DEDUP)
                pol_drop (self, p); //  nothing left to remember
        }
    }
    if (!st || now - st->last_sweep_ms >= SESS_POLICY_SWEEP_MS) {
        if (state (self)) self->policy->last_sweep_ms = now;
        sweep (self);
    }
}

void sess_policy_fini (sess_server_t *self)
{
    struct sess_policy *st = self->policy;
    if (!st) return;
    size_t pos = 0;
    void *value;
    while (cm_map_next (st->map, &pos, NULL, &value)) pol_free (value);
    cm_map_destroy (&st->map);
    free (st);
    self->policy = NULL;
}
