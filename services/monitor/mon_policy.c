/*  mon_policy.c - the policy engine on the bus (mon_policy.h), inside
    corral-monitor's loop.

      events  SUB    connect  the session service's PUB, every session
                              ("s/"); each event is decoded (validated) and
                              fed to the engine
      session DEALER connect  the session service's client API:
                              monitor.census pages, monitor.action

    The SUB's handshakes are watched (like the gateway's): each one means
    the session service (re)started or we reconnected, and what happened
    while we did not listen is only known from a census, so one starts.
    A census also runs every census interval, to repair events lost to a
    full queue.

    Replies are matched by correlation id: a census page has one in
    flight at a time; actions remember (session, token) by corr for up to
    a minute, so a late answer to a resent action still counts once.
*/
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "cm_log.h"
#include "cm_map.h"
#include "cm_time.h"
#include "cm_zmq.h"
#include "mon_policy.h"
#include "proto_beat.h"

#define DRAIN_MAX                 4096  //  messages read from one socket per pass
#define SENT_KEEP_MS              60000 //  an action's corr is remembered this long
#define ACTIONS_MAX               256   //  actions sent per tick at most
#define SUB_HWM                   100000 //  events queued before drops (repaired by census)
#define CENSUS_SETTLE             500    //  ms after a handshake before the census asks
#define MON_POLICY_STOP_LINGER_MS 200    //  the DEALER's last sends, at most, on stop

typedef struct {
    cm_uuid_t session;
    uint64_t token;
    int64_t sent_ms;
} sent_t;

struct mon_policy {
    mon_policy_config_t cfg;
    mon_policy_engine_t *engine;
    void *sub, *dealer, *sub_monitor;
    proto_msg_t msg;
    proto_buf_t buf;
    uint64_t corr;
    cm_map_t *sent; //  corr -> sent_t
    //  census
    bool census_due;
    int64_t census_at;      //  start it at (monotonic); 0 = not scheduled
    uint64_t census_corr;   //  the page in flight, 0 = none
    cm_uuid_t census_after; //  ... and where it starts (nil: the first)
    int64_t census_deadline;
    int64_t next_census; //  the periodic one
    int64_t next_tick;
    mon_policy_action_t actions[ACTIONS_MAX];
};

#define SUB_MONITOR "inproc://corral-monitor-policy-sub" //  one plug-in per process

mon_policy_t *mon_policy_new (const mon_policy_config_t *cfg)
{
    mon_policy_t *self = calloc (1, sizeof *self);
    if (!self) return NULL;
    self->cfg = *cfg;
    proto_msg_init (&self->msg);
    proto_buf_init (&self->buf);
    self->engine = mon_policy_engine_new (cfg);
    self->sent = cm_map_new (8);
    self->sub = cm_zmq_socket (ZMQ_SUB, SUB_HWM);
    self->dealer = cm_zmq_socket (ZMQ_DEALER, 0);
    if (!self->engine || !self->sent || !self->sub || !self->dealer) goto fail;
    self->sub_monitor = cm_zmq_watch_handshakes (self->sub, SUB_MONITOR);
    if (!self->sub_monitor)
        cm_warn ("policies: cannot watch the events socket's connections; the census "
                 "runs on its interval only");
    if (zmq_setsockopt (self->sub, ZMQ_SUBSCRIBE, "s/", 2) ||
        cm_zmq_connect (self->sub, cfg->events_endpoint) ||
        cm_zmq_connect (self->dealer, cfg->session_endpoint))
        goto fail;
    int64_t now = cm_mono_ms ();
    self->next_tick = now;
    self->next_census = cfg->census_ms > 0 ? now + cfg->census_ms : 0;
    //  Without a handshake watch, ask at once (retried until answered).
    if (!self->sub_monitor) self->census_at = now;
    char d[3][32];
    cm_info (
        "policies: events %s, session %s; max duration %s, idle timeout %s, stuck "
        "after %lld repeats or %s of silence",
        cfg->events_endpoint, cfg->session_endpoint,
        cfg->max_duration_ms ? mon_policy_fmt_ms (cfg->max_duration_ms, d[0], 32) : "off",
        cfg->idle_timeout_ms ? mon_policy_fmt_ms (cfg->idle_timeout_ms, d[1], 32) : "off",
        (long long)cfg->stuck_repeat,
        cfg->stuck_silence_ms ? mon_policy_fmt_ms (cfg->stuck_silence_ms, d[2], 32)
                              : "off");
    return self;
fail:
    cm_error ("policies: cannot open the policy engine's sockets");
    mon_policy_destroy (&self);
    return NULL;
}

void mon_policy_destroy (mon_policy_t **self_p)
{
    mon_policy_t *self = self_p ? *self_p : NULL;
    if (!self) return;
    if (self->sent) {
        size_t pos = 0;
        void *value;
        while (cm_map_next (self->sent, &pos, NULL, &value)) free (value);
        cm_map_destroy (&self->sent);
    }
    //  Stopping never waits on the session service (a stop must be prompt
    //  when it is down): the SUB's only outgoing traffic is its
    //  subscription, and the DEALER's is a census page or an action, both
    //  re-derived by the next monitor from a census (docs/policies.md).  A
    //  short linger still lets an action already queued to a connected
    //  session service go out.
    cm_zmq_unwatch (self->sub, &self->sub_monitor);
    cm_zmq_close_linger (&self->sub, 0);
    cm_zmq_close_linger (&self->dealer, MON_POLICY_STOP_LINGER_MS);
    mon_policy_engine_destroy (&self->engine);
    proto_msg_fini (&self->msg);
    proto_buf_fini (&self->buf);
    free (self);
    *self_p = NULL;
}

int mon_policy_pollitems (mon_policy_t *self, void *items)
{
    zmq_pollitem_t *it = items;
    it[0] = (zmq_pollitem_t){self->sub, 0, ZMQ_POLLIN, 0};
    it[1] = (zmq_pollitem_t){self->dealer, 0, ZMQ_POLLIN, 0};
    return 2;
}

const mon_policy_engine_t *mon_policy_engine (const mon_policy_t *self)
{
    return self->engine;
}

void mon_policy_beat_fill (struct proto_beat *beat, void *arg)
{
    const mon_policy_t *self = arg;
    if (!self) return;
    //  One series per (policy, action): the two stuck signs add up.
    static const struct {
        const char *policy, *action;
        mon_act_kind_t kinds[2];
        int n;
    } rows[] = {
        {"max_duration", "warn", {MON_ACT_DURATION_WARN}, 1},
        {"max_duration", "close", {MON_ACT_DURATION_CLOSE}, 1},
        {"idle", "hibernate", {MON_ACT_IDLE_HIBERNATE}, 1},
        {"stuck", "warn", {MON_ACT_REPEAT_WARN, MON_ACT_SILENCE_WARN}, 2},
        {"stuck", "cancel", {MON_ACT_REPEAT_CANCEL, MON_ACT_SILENCE_CANCEL}, 2},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        uint64_t n = 0;
        for (int k = 0; k < rows[i].n; k++)
            n += mon_policy_engine_done (self->engine, rows[i].kinds[k]);
        proto_beat_addv (beat, "corral_policy_actions_total", (double)n, "policy",
                         rows[i].policy, "action", rows[i].action, NULL);
    }
    proto_beat_add (beat, "corral_policy_sessions_tracked", NULL,
                    (double)mon_policy_engine_sessions (self->engine));
}

int64_t mon_policy_timeout (const mon_policy_t *self, int64_t now)
{
    int64_t next = self->next_tick;
    if (self->census_at && self->census_at < next) next = self->census_at;
    return next > now ? next - now : 0;
}

/* ---------------------------------------------------------------- */
/*  Sending                                                          */

static int send_msg (mon_policy_t *self, proto_type_t type, const void *body,
                     uint64_t *corr)
{
    proto_buf_reset (&self->buf);
    *corr = ++self->corr;
    int rc = proto_encode (&self->buf, type, *corr, body);
    if (rc) return rc;
    cm_frame_t frame = {self->buf.data, self->buf.size};
    return cm_zmq_sendv (self->dealer, &frame, 1, ZMQ_DONTWAIT);
}

static void census_page (mon_policy_t *self, const cm_uuid_t *after, int64_t now)
{
    proto_list_req_t req = {.limit = MON_POLICY_CENSUS_PAGE};
    if (after) req.after = *after;
    self->census_after = req.after;
    uint64_t corr;
    if (send_msg (self, PROTO_MON_CENSUS, &req, &corr)) {
        //  The session service is not there yet: try again shortly.
        mon_policy_engine_census_abort (self->engine);
        self->census_corr = 0;
        self->census_at = now + 1000;
        return;
    }
    self->census_corr = corr;
    self->census_deadline = now + MON_POLICY_CALL_MS;
}

static void census_start (mon_policy_t *self, int64_t now)
{
    self->census_at = 0;
    mon_policy_engine_census_begin (self->engine);
    census_page (self, NULL, now);
}

static void send_actions (mon_policy_t *self, int64_t wall, int64_t now)
{
    size_t n = mon_policy_engine_tick (self->engine, wall, self->actions, ACTIONS_MAX);
    for (size_t i = 0; i < n; i++) {
        const mon_policy_action_t *a = &self->actions[i];
        proto_mon_action_t body = {.session = a->session,
                                   .action = a->action,
                                   .policy = a->policy,
                                   .message = a->message,
                                   .remaining_ms = a->remaining_ms,
                                   .turn = a->turn};
        uint64_t corr;
        int rc = send_msg (self, PROTO_MON_ACTION, &body, &corr);
        char id[CM_UUID_STR_LEN];
        if (rc) {
            //  Not sent: the engine resends after its retry interval.
            cm_debug ("policies: %s/%s for %s not sent: %s", a->policy, a->action,
                      cm_uuid_fmt (&a->session, id), cm_strerror (rc));
            continue;
        }
        cm_info ("policies: %s %s session %s: %s", a->policy, a->action,
                 cm_uuid_fmt (&a->session, id), a->message);
        sent_t *s = malloc (sizeof *s);
        if (!s) continue;
        *s = (sent_t){a->session, a->token, now};
        if (cm_map_put_u64 (self->sent, corr, s)) free (s);
    }
}

static void sent_sweep (mon_policy_t *self, int64_t now)
{
    size_t pos = 0;
    const void *key;
    void *value;
    while (cm_map_next (self->sent, &pos, &key, &value)) {
        sent_t *s = value;
        if (now - s->sent_ms < SENT_KEEP_MS) continue;
        cm_map_remove (self->sent, key);
        free (s);
    }
}

/* ---------------------------------------------------------------- */
/*  Receiving                                                        */

static void on_event (mon_policy_t *self, const void *data, size_t size, int64_t wall)
{
    if (proto_decode (&self->msg, data, size) ||
        self->msg.desc->family != PROTO_FAMILY_EVENT) {
        cm_debug ("policies: an undecodable event was ignored: %s",
                  proto_msg_error (&self->msg));
        return;
    }
    const proto_rec_desc_t *r = self->msg.desc->body;
    const char *b = self->msg.body;
    mon_policy_event_t ev = {.type = self->msg.type};
    //  Every event record starts with session, seq, ts, turn.
    memcpy (&ev.session, b + r->fields[0].offset, sizeof ev.session);
    memcpy (&ev.ts, b + r->fields[2].offset, sizeof ev.ts);
    memcpy (&ev.turn, b + r->fields[3].offset, sizeof ev.turn);
    if (ev.type == PROTO_EV_STATE) {
        const proto_ev_state_t *st = self->msg.body;
        ev.state = st->state;
        ev.reason = st->reason;
    } else if (ev.type == PROTO_EV_TOOL_CALL) {
        const proto_ev_tool_call_t *tc = self->msg.body;
        ev.tool_kind = tc->kind;
        ev.tool_title = tc->title;
        ev.tool_input = tc->raw_input;
    }
    mon_policy_engine_event (self->engine, &ev, wall);
}

static void read_sub (mon_policy_t *self)
{
    int64_t wall = cm_time_ms ();
    for (int i = 0; i < DRAIN_MAX; i++) {
        zmq_msg_t topic, body;
        int frames = cm_zmq_recv_topic (self->sub, &topic, &body);
        if (frames == 0) {
            zmq_msg_close (&topic);
            zmq_msg_close (&body);
            return;
        }
        bool ok = frames == 2;
        if (ok) on_event (self, zmq_msg_data (&body), zmq_msg_size (&body), wall);
        zmq_msg_close (&topic);
        zmq_msg_close (&body);
    }
}

static void on_census_reply (mon_policy_t *self, int rc, int64_t now)
{
    self->census_corr = 0;
    proto_census_reply_t *page = rc == 0 ? proto_body (&self->msg, census_reply) : NULL;
    if (!page) {
        cm_debug ("policies: census refused (%s); again in a second", cm_strerror (rc));
        mon_policy_engine_census_abort (self->engine);
        self->census_at = now + 1000;
        return;
    }
    int64_t wall = cm_time_ms ();
    for (size_t i = 0; i < page->sessions.count; i++)
        mon_policy_engine_census_entry (self->engine, &page->sessions.items[i], wall);
    if (page->more && !cm_uuid_is_nil (&page->last)) {
        //  Pages go forward (ids sort): one that does not would be asked
        //  for again and again.  Leave the census unfinished (nothing is
        //  forgotten) until the next one.
        if (memcmp (&page->last, &self->census_after, sizeof page->last) <= 0) {
            cm_warn ("policies: the census did not advance past a page; it is dropped "
                     "until the next one");
            mon_policy_engine_census_abort (self->engine);
            return;
        }
        census_page (self, &page->last, now);
        return;
    }
    mon_policy_engine_census_end (self->engine);
    cm_debug ("policies: census done, %zu live sessions",
              mon_policy_engine_sessions (self->engine));
}

static void read_dealer (mon_policy_t *self, int64_t now)
{
    for (int i = 0; i < DRAIN_MAX; i++) {
        zmq_msg_t m;
        zmq_msg_init (&m);
        if (zmq_msg_recv (&m, self->dealer, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close (&m);
            return;
        }
        int rc = proto_decode (&self->msg, zmq_msg_data (&m), zmq_msg_size (&m));
        if (self->msg.corr_valid) {
            if (rc == 0 && self->msg.type == PROTO_ERROR) {
                const proto_error_t *e = self->msg.body;
                rc = (int)e->code < 0 ? (int)e->code : CM_E_INTERNAL;
            }
            uint64_t corr = self->msg.corr;
            sent_t *s = cm_map_remove_u64 (self->sent, corr);
            if (s) {
                if (rc) {
                    char id[CM_UUID_STR_LEN];
                    cm_info ("policies: session %s answered: %s",
                             cm_uuid_fmt (&s->session, id),
                             self->msg.type == PROTO_ERROR
                                 ? ((const proto_error_t *)self->msg.body)->message
                                 : cm_strerror (rc));
                }
                mon_policy_engine_result (self->engine, &s->session, s->token, rc,
                                          cm_time_ms ());
                free (s);
            } else if (corr && corr == self->census_corr)
                on_census_reply (self, rc, now);
        }
        zmq_msg_close (&m);
    }
}

void mon_policy_service (mon_policy_t *self, int64_t now)
{
    read_sub (self);
    read_dealer (self, now);
    if (cm_zmq_handshakes (self->sub_monitor)) { //  the publisher (re)appeared
        //  Let the subscription reach the publisher first, so nothing
        //  falls between the census and the events.
        self->census_at = now + CENSUS_SETTLE;
        cm_info ("policies: connected to the session service's events; census follows");
    }
    if (self->census_corr && now >= self->census_deadline) {
        mon_policy_engine_census_abort (self->engine);
        self->census_corr = 0;
        self->census_at = now;
    }
    if (!self->census_corr && self->census_at && now >= self->census_at)
        census_start (self, now);
    if (!self->census_corr && self->next_census && now >= self->next_census) {
        self->next_census = now + self->cfg.census_ms;
        census_start (self, now);
    }
    if (now >= self->next_tick) {
        self->next_tick = now + MON_POLICY_TICK_MS;
        send_actions (self, cm_time_ms (), now);
        sent_sweep (self, now);
    }
}
