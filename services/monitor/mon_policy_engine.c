/*  mon_policy_engine.c - the policy engine's decisions (mon_policy.h).

    One track_t per live session in a map by id.  Events and census
    entries update it; the tick walks every track and decides at most one
    action per session (none while one is in flight).  Each decision has a
    "done" flag that is set when its action is answered, and cleared by
    what makes the decision new again: any activity clears the idle flag,
    a new turn clears the stuck flags, output clears the silence warning,
    a reopening clears the duration flags.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cm_error.h"
#include "cm_log.h"
#include "cm_map.h"
#include "mon_policy.h"

typedef struct {
    uint64_t hash;
    uint32_t count;
} sig_t;

typedef struct {
    sig_t sig[MON_POLICY_SIGS];
    size_t nsig;
    uint32_t top;                             //  the highest count
    char top_title[MON_POLICY_TITLE_MAX + 1]; //  its title
} sigs_t;

typedef struct {
    cm_uuid_t id;
    char state[24];
    int64_t opened_ms; //  Unix ms
    int64_t active_ms; //  last activity
    bool opened_known; //  from session_created, a reopening or a census
    //  the running turn
    bool turn_live;
    cm_uuid_t turn;
    int64_t output_ms; //  last output of the turn (or end of a permission wait)
    sigs_t *sigs;      //  tool calls of the turn, NULL until the first
    //  decisions answered
    bool done[MON_ACT_KINDS];
    //  the action in flight
    mon_policy_action_t *pending;
    int64_t pending_sent;
    int64_t retry_after; //  a failed action is decided again from here
    //  census bookkeeping
    uint32_t census_gen; //  the last census that listed it
    uint32_t event_gen;  //  the census running when it last had an event
} track_t;

struct mon_policy_engine {
    mon_policy_config_t cfg;
    cm_map_t *tracks; //  id -> track_t
    uint64_t next_token;
    uint32_t census_gen; //  of the census running (or the last one)
    bool census_running;
    bool full_logged;
    uint64_t done[MON_ACT_KINDS];
};

static const struct {
    const char *action, *policy;
    bool turn_scoped; //  about one turn: dropped when the turn ends
} s_kinds[MON_ACT_KINDS] = {
    [MON_ACT_DURATION_WARN] = {"warn", "max_duration", false},
    [MON_ACT_DURATION_CLOSE] = {"close", "max_duration", false},
    [MON_ACT_IDLE_HIBERNATE] = {"hibernate", "idle", false},
    [MON_ACT_REPEAT_WARN] = {"warn", "stuck", true},
    [MON_ACT_REPEAT_CANCEL] = {"cancel", "stuck", true},
    [MON_ACT_SILENCE_WARN] = {"warn", "stuck", true},
    [MON_ACT_SILENCE_CANCEL] = {"cancel", "stuck", true},
};

char *mon_policy_fmt_ms (int64_t ms, char *out, size_t outlen)
{
    if (ms < 0) ms = 0;
    int64_t s = ms / 1000, m = s / 60, h = m / 60;
    if (ms < 1000)
        snprintf (out, outlen, "%lldms", (long long)ms);
    else if (s < 60 && ms % 1000 >= 100 && s < 10)
        snprintf (out, outlen, "%lld.%llds", (long long)s, (long long)(ms % 1000 / 100));
    else if (s < 60)
        snprintf (out, outlen, "%llds", (long long)s);
    else if (m < 60)
        snprintf (out, outlen, s % 60 ? "%lldm%llds" : "%lldm", (long long)m,
                  (long long)(s % 60));
    else
        snprintf (out, outlen, m % 60 ? "%lldh%lldm" : "%lldh", (long long)h,
                  (long long)(m % 60));
    return out;
}

mon_policy_engine_t *mon_policy_engine_new (const mon_policy_config_t *cfg)
{
    mon_policy_engine_t *self = calloc (1, sizeof *self);
    if (!self) return NULL;
    self->cfg = *cfg;
    self->cfg.events_endpoint = self->cfg.session_endpoint = NULL; //  not ours
    self->next_token = 1;
    if (!(self->tracks = cm_map_new (16))) {
        free (self);
        return NULL;
    }
    return self;
}

static void track_free (track_t *t)
{
    if (!t) return;
    free (t->sigs);
    free (t->pending);
    free (t);
}

void mon_policy_engine_destroy (mon_policy_engine_t **self_p)
{
    mon_policy_engine_t *self = self_p ? *self_p : NULL;
    if (!self) return;
    size_t pos = 0;
    void *value;
    while (cm_map_next (self->tracks, &pos, NULL, &value)) track_free (value);
    cm_map_destroy (&self->tracks);
    free (self);
    *self_p = NULL;
}

size_t mon_policy_engine_sessions (const mon_policy_engine_t *self)
{
    return cm_map_size (self->tracks);
}

uint64_t mon_policy_engine_done (const mon_policy_engine_t *self, mon_act_kind_t kind)
{
    return kind < MON_ACT_KINDS ? self->done[kind] : 0;
}

/* ---------------------------------------------------------------- */
/*  Tracks                                                           */

//  Unix ms in a UUIDv7's first 48 bits.
static int64_t uuid7_ms (const cm_uuid_t *id)
{
    int64_t ms = 0;
    for (int i = 0; i < 6; i++) ms = (ms << 8) | id->b[i];
    return ms;
}

static track_t *track_get (mon_policy_engine_t *self, const cm_uuid_t *id, bool create,
                           int64_t now)
{
    track_t *t = cm_map_get (self->tracks, id->b);
    if (t || !create) return t;
    if (cm_map_size (self->tracks) >= MON_POLICY_MAX_SESSION) {
        if (!self->full_logged)
            cm_warn ("policy engine: %d sessions tracked; newer ones are not policed",
                     MON_POLICY_MAX_SESSION);
        self->full_logged = true;
        return NULL;
    }
    t = calloc (1, sizeof *t);
    if (!t) return NULL;
    t->id = *id;
    snprintf (t->state, sizeof t->state, "ready");
    t->opened_ms = uuid7_ms (id);
    t->active_ms = now;
    if (cm_map_put (self->tracks, id->b, t)) {
        free (t);
        return NULL;
    }
    return t;
}

static void track_drop (mon_policy_engine_t *self, track_t *t)
{
    cm_map_remove (self->tracks, t->id.b);
    track_free (t);
}

static void pending_clear (track_t *t)
{
    free (t->pending);
    t->pending = NULL;
}

static void turn_begin (track_t *t, const cm_uuid_t *turn, int64_t now)
{
    t->turn_live = true;
    t->turn = *turn;
    t->output_ms = now;
    free (t->sigs);
    t->sigs = NULL;
    t->done[MON_ACT_REPEAT_WARN] = t->done[MON_ACT_REPEAT_CANCEL] = false;
    t->done[MON_ACT_SILENCE_WARN] = t->done[MON_ACT_SILENCE_CANCEL] = false;
    if (t->pending && s_kinds[t->pending->kind].turn_scoped) pending_clear (t);
}

static void turn_end (track_t *t)
{
    t->turn_live = false;
    free (t->sigs);
    t->sigs = NULL;
    if (t->pending && s_kinds[t->pending->kind].turn_scoped) pending_clear (t);
}

static uint64_t fnv (uint64_t h, const char *s)
{
    for (; s && *s; s++) h = (h ^ (uint8_t)*s) * 1099511628211ull;
    return (h ^ 0xff) * 1099511628211ull; //  a separator
}

static void count_call (track_t *t, const mon_policy_event_t *ev)
{
    if (!t->sigs && !(t->sigs = calloc (1, sizeof *t->sigs))) return;
    sigs_t *g = t->sigs;
    uint64_t h = fnv (fnv (fnv (1469598103934665603ull, ev->tool_kind), ev->tool_title),
                      ev->tool_input);
    sig_t *slot = NULL;
    for (size_t i = 0; i < g->nsig && !slot; i++)
        if (g->sig[i].hash == h) slot = &g->sig[i];
    if (!slot) {
        if (g->nsig < MON_POLICY_SIGS)
            slot = &g->sig[g->nsig++];
        else { //  full: the least repeated call makes room
            slot = &g->sig[0];
            for (size_t i = 1; i < g->nsig; i++)
                if (g->sig[i].count < slot->count) slot = &g->sig[i];
        }
        slot->hash = h;
        slot->count = 0;
    }
    slot->count++;
    if (slot->count > g->top) {
        g->top = slot->count;
        snprintf (g->top_title, sizeof g->top_title, "%s",
                  ev->tool_title && *ev->tool_title ? ev->tool_title : "a tool call");
    }
}

//  Events of a turn that are its output (policy and state events are not).
static bool is_output (proto_type_t type)
{
    switch (type) {
    case PROTO_EV_USER_MESSAGE:
    case PROTO_EV_TURN_STARTED:
    case PROTO_EV_AGENT_MESSAGE:
    case PROTO_EV_AGENT_THOUGHT:
    case PROTO_EV_TOOL_CALL:
    case PROTO_EV_TOOL_CALL_UPDATE:
    case PROTO_EV_PLAN:
    case PROTO_EV_USAGE:
    case PROTO_EV_PERMISSION_REQUEST:
    case PROTO_EV_PERMISSION_RESOLVED:
        return true;
    default:
        return false;
    }
}

void mon_policy_engine_event (mon_policy_engine_t *self, const mon_policy_event_t *ev,
                              int64_t now)
{
    if (ev->type == PROTO_EV_STATE && ev->state && strcmp (ev->state, "closed") == 0) {
        track_t *t = track_get (self, &ev->session, false, now);
        if (t) track_drop (self, t); //  nothing to police any more
        return;
    }
    track_t *t = track_get (self, &ev->session, true, now);
    if (!t) return;
    if (self->census_running) t->event_gen = self->census_gen;
    if (ev->type == PROTO_EV_POLICY) return; //  not activity
    t->active_ms = now;
    t->done[MON_ACT_IDLE_HIBERNATE] = false;
    if (t->pending && t->pending->kind == MON_ACT_IDLE_HIBERNATE &&
        ev->type != PROTO_EV_STATE)
        pending_clear (t); //  activity: the idle decision is void
    bool has_turn = !cm_uuid_is_nil (&ev->turn);
    switch (ev->type) {
    case PROTO_EV_SESSION_CREATED:
        t->opened_ms = ev->ts;
        t->opened_known = true;
        break;
    case PROTO_EV_STATE:
        if (ev->reason && strcmp (ev->reason, "resumed") == 0 && !t->opened_known) {
            //  A session we did not know, reopened (resumed after closing).
            t->opened_ms = ev->ts;
            t->opened_known = true;
        }
        //  Back from a permission wait: the silence starts again.
        if (strcmp (t->state, "awaiting_permission") == 0) t->output_ms = now;
        snprintf (t->state, sizeof t->state, "%s", ev->state ? ev->state : "");
        break;
    case PROTO_EV_TURN_ENDED:
        turn_end (t);
        break;
    default:
        break;
    }
    //  A turn starts with its user_message; an event of a turn we have not
    //  seen start (we came up during it) starts it too.  turn_ended is
    //  always a turn's last event.
    if (has_turn && ev->type != PROTO_EV_TURN_ENDED &&
        (!t->turn_live || memcmp (&ev->turn, &t->turn, sizeof t->turn) != 0))
        turn_begin (t, &ev->turn, now);
    if (t->turn_live && is_output (ev->type) &&
        (!has_turn || memcmp (&ev->turn, &t->turn, sizeof t->turn) == 0)) {
        t->output_ms = now;
        //  Output after a silence warning: a new silence may warn again.
        t->done[MON_ACT_SILENCE_WARN] = false;
        if (ev->type == PROTO_EV_TOOL_CALL) count_call (t, ev);
    }
}

/* ---------------------------------------------------------------- */
/*  Census                                                           */

void mon_policy_engine_census_begin (mon_policy_engine_t *self)
{
    self->census_gen++;
    self->census_running = true;
}

void mon_policy_engine_census_entry (mon_policy_engine_t *self,
                                     const proto_census_entry_t *e, int64_t now)
{
    if (!self->census_running || !e->state || strcmp (e->state, "closed") == 0) return;
    track_t *t = track_get (self, &e->id, false, now);
    bool fresh = !t;
    if (fresh && !(t = track_get (self, &e->id, true, now))) return;
    t->census_gen = self->census_gen;
    //  When it was opened only changes by a reopening: always take it.
    if (e->opened_ms > 0) {
        if (t->opened_known && e->opened_ms != t->opened_ms)
            t->done[MON_ACT_DURATION_WARN] = t->done[MON_ACT_DURATION_CLOSE] = false;
        t->opened_ms = e->opened_ms;
        t->opened_known = true;
    }
    //  The page was made after the census began: it is newer than every
    //  event before that, but an event since may be newer than the page.
    if (t->event_gen == self->census_gen) return;
    snprintf (t->state, sizeof t->state, "%s", e->state);
    if (e->active_ms > 0 && e->active_ms <= now && (fresh || e->active_ms > t->active_ms))
        t->active_ms = e->active_ms;
    bool has_turn = !cm_uuid_is_nil (&e->turn);
    if (has_turn && (!t->turn_live || memcmp (&t->turn, &e->turn, sizeof e->turn) != 0))
        turn_begin (t, &e->turn, now); //  its silence counts from now
    else if (!has_turn && t->turn_live)
        turn_end (t); //  it ended while we did not listen (a restart)
}

void mon_policy_engine_census_end (mon_policy_engine_t *self)
{
    if (!self->census_running) return;
    self->census_running = false;
    size_t pos = 0;
    void *value;
    while (cm_map_next (self->tracks, &pos, NULL, &value)) {
        track_t *t = value;
        if (t->census_gen != self->census_gen && t->event_gen != self->census_gen)
            track_drop (self, t); //  closed or deleted while we did not listen
    }
}

void mon_policy_engine_census_abort (mon_policy_engine_t *self)
{
    self->census_running = false;
}

/* ---------------------------------------------------------------- */
/*  Decisions                                                        */

static bool decide (const mon_policy_engine_t *self, track_t *t, int64_t now,
                    mon_policy_action_t *a)
{
    const mon_policy_config_t *c = &self->cfg;
    char d1[32], d2[32];
    //  No memset: the message (512 bytes) is written only when decided.
    a->session = t->id;
    memset (&a->turn, 0, sizeof a->turn);
    a->remaining_ms = 0;
    bool hibernated = strcmp (t->state, "hibernated") == 0;
    int64_t age = now - t->opened_ms;
    //  1. the end of the session's time
    if (c->max_duration_ms > 0 && age >= c->max_duration_ms &&
        !t->done[MON_ACT_DURATION_CLOSE]) {
        a->kind = MON_ACT_DURATION_CLOSE;
        snprintf (a->message, sizeof a->message,
                  "the session reached its maximum duration of %s and is closed%s",
                  mon_policy_fmt_ms (c->max_duration_ms, d1, sizeof d1),
                  t->turn_live ? " when the running turn ends" : "");
        return true;
    }
    //  2. stuck turns that went on after their warning
    if (t->turn_live && c->stuck_repeat > 0 && t->sigs && t->done[MON_ACT_REPEAT_WARN] &&
        !t->done[MON_ACT_REPEAT_CANCEL] &&
        t->sigs->top >= 2 * (uint64_t)c->stuck_repeat) {
        a->kind = MON_ACT_REPEAT_CANCEL;
        a->turn = t->turn;
        snprintf (a->message, sizeof a->message,
                  "the same tool call (%s) was made %u times in this turn; the turn is "
                  "cancelled as stuck in a loop",
                  t->sigs->top_title, t->sigs->top);
        return true;
    }
    bool listening = t->turn_live && strcmp (t->state, "awaiting_permission") != 0;
    int64_t silent = now - t->output_ms;
    if (listening && c->stuck_silence_ms > 0 && t->done[MON_ACT_SILENCE_WARN] &&
        !t->done[MON_ACT_SILENCE_CANCEL] && silent >= 2 * c->stuck_silence_ms) {
        a->kind = MON_ACT_SILENCE_CANCEL;
        a->turn = t->turn;
        snprintf (
            a->message, sizeof a->message,
            "no output from the running turn for %s; the turn is cancelled as stuck",
            mon_policy_fmt_ms (silent, d1, sizeof d1));
        return true;
    }
    //  3. idle sessions
    if (c->idle_timeout_ms > 0 && !t->turn_live && !hibernated &&
        (strcmp (t->state, "ready") == 0 || strcmp (t->state, "idle") == 0) &&
        now - t->active_ms >= c->idle_timeout_ms && !t->done[MON_ACT_IDLE_HIBERNATE]) {
        a->kind = MON_ACT_IDLE_HIBERNATE;
        snprintf (
            a->message, sizeof a->message,
            "idle for %s: hibernated to free its resources; the next prompt resumes it "
            "with its history",
            mon_policy_fmt_ms (now - t->active_ms, d1, sizeof d1));
        return true;
    }
    //  4. warnings
    if (c->max_duration_ms > 0 && !t->done[MON_ACT_DURATION_WARN] &&
        age >= c->max_duration_ms / 100 * MON_POLICY_WARN_PCT +
                   c->max_duration_ms % 100 * MON_POLICY_WARN_PCT / 100) {
        a->kind = MON_ACT_DURATION_WARN;
        a->remaining_ms = (uint64_t)(c->max_duration_ms - age);
        snprintf (a->message, sizeof a->message,
                  "the session will be closed in %s (maximum duration %s)%s",
                  mon_policy_fmt_ms ((int64_t)a->remaining_ms, d1, sizeof d1),
                  mon_policy_fmt_ms (c->max_duration_ms, d2, sizeof d2),
                  t->turn_live ? "; a running turn gets a grace period to finish" : "");
        return true;
    }
    if (t->turn_live && c->stuck_repeat > 0 && t->sigs && !t->done[MON_ACT_REPEAT_WARN] &&
        t->sigs->top >= (uint64_t)c->stuck_repeat) {
        a->kind = MON_ACT_REPEAT_WARN;
        a->turn = t->turn;
        snprintf (a->message, sizeof a->message,
                  "the same tool call (%s) was made %u times in this turn; the turn is "
                  "cancelled if it reaches %lld",
                  t->sigs->top_title, t->sigs->top, (long long)(2 * c->stuck_repeat));
        return true;
    }
    if (listening && c->stuck_silence_ms > 0 && !t->done[MON_ACT_SILENCE_WARN] &&
        !t->done[MON_ACT_SILENCE_CANCEL] && silent >= c->stuck_silence_ms) {
        a->kind = MON_ACT_SILENCE_WARN;
        a->turn = t->turn;
        snprintf (a->message, sizeof a->message,
                  "no output from the running turn for %s; it is cancelled if nothing "
                  "comes within %s more",
                  mon_policy_fmt_ms (silent, d1, sizeof d1),
                  mon_policy_fmt_ms (2 * c->stuck_silence_ms - silent, d2, sizeof d2));
        return true;
    }
    return false;
}

size_t mon_policy_engine_tick (mon_policy_engine_t *self, int64_t now,
                               mon_policy_action_t *out, size_t max)
{
    size_t n = 0, pos = 0;
    void *value;
    while (n < max && cm_map_next (self->tracks, &pos, NULL, &value)) {
        track_t *t = value;
        if (t->pending) {
            if (now - t->pending_sent >= MON_POLICY_RETRY_MS) {
                t->pending_sent = now; //  unanswered: the same again
                out[n++] = *t->pending;
            }
            continue;
        }
        if (now < t->retry_after) continue;
        mon_policy_action_t a;
        if (!decide (self, t, now, &a)) continue;
        a.token = self->next_token++;
        a.action = s_kinds[a.kind].action;
        a.policy = s_kinds[a.kind].policy;
        if (!(t->pending = malloc (sizeof *t->pending))) continue;
        *t->pending = a;
        t->pending_sent = now;
        out[n++] = a;
    }
    return n;
}

void mon_policy_engine_result (mon_policy_engine_t *self, const cm_uuid_t *session,
                               uint64_t token, int rc, int64_t now)
{
    track_t *t = track_get (self, session, false, now);
    if (!t || !t->pending || t->pending->token != token) return;
    mon_act_kind_t kind = t->pending->kind;
    pending_clear (t);
    if (rc == CM_E_NOT_FOUND) {
        track_drop (self, t); //  deleted
        return;
    }
    if (rc == CM_E_UNAVAILABLE || rc == CM_E_TIMEOUT || rc == CM_E_NOMEM ||
        rc == CM_E_INTERNAL || rc == CM_E_CAPACITY) {
        t->retry_after = now + MON_POLICY_RETRY_MS; //  decide again later
        return;
    }
    //  ok, or the session's state says no (busy, conflict): this decision
    //  is made; what makes it new again clears the flag.
    t->done[kind] = true;
    if (rc == 0)
        self->done[kind]++;
    else
        cm_debug ("policy action %s/%s refused: %s", s_kinds[kind].policy,
                  s_kinds[kind].action, cm_strerror (rc));
}
