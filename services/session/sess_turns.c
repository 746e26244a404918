/*  sess_turns.c - one turn at a time per session, from prompt to reply.

    WAITING   the prompt is recorded (user_message event); no worker yet
    LOADING   a worker is chosen; the conversation is read from the store
    RUNNING   the worker has the turn; its events flow through the spine
    SAVING    the worker finished; the new conversation messages are stored
    ENDING    turn_ended is emitted; the prompt's reply waits for its ack

    A turn is never sent to a second worker (it has side effects): when its
    worker dies the turn ends failed/worker_lost.  The stored conversation is
    only ever replaced by a worker's finished turn, which the worker repairs
    (every tool call answered) before sending it, so whatever happens to a
    turn, the next model request is a valid conversation.

    Idempotency: a prompt carries a key.  The same key while its turn runs
    joins that turn's reply; after it ended, the stored outcome is answered
    again.  The key of the latest turn is kept in the session record, so a
    resend after a restart is recognised too.
*/
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cm_log.h"
#include "cm_time.h"
#include "sess.h"

void sess_turn_clear (sess_turn_t *t)
{
    free (t->idem);
    free (t->prompt);
    free (t->perm_id);
    free (t->perm_tool);
    for (size_t i = 0; i < t->perm_options.count; i++) {
        free ((char *)t->perm_options.items[i].option_id);
        free ((char *)t->perm_options.items[i].name);
        free ((char *)t->perm_options.items[i].kind);
    }
    free (t->perm_options.items);
    free (t->stop_reason);
    free (t->message);
    free (t->cancel_why);
    free (t->budget.stop);
    memset (t, 0, sizeof *t);
}

static void reply_requesters (sess_server_t *self, sess_session_t *s)
{
    sess_turn_t *t = &s->turn;
    proto_prompt_reply_t out = {.turn = t->id,
                                .stop_reason = t->stop_reason,
                                .last_seq = t->end_seq,
                                .code = t->code,
                                .message = t->message};
    for (size_t i = 0; i < t->nrequesters; i++)
        sess_reply (self, &t->requesters[i], PROTO_PROMPT_REPLY, &out);
}

void sess_turn_on_acked (sess_server_t *self, sess_session_t *s)
{
    sess_turn_t *t = &s->turn;
    if (t->state != TURN_ENDING || s->acked_seq < t->end_seq) return;
    //  Every event of the turn is durable and published: answer now.
    reply_requesters (self, s);
    sess_turn_clear (t);
}

void sess_turn_end (sess_server_t *self, sess_session_t *s, const char *stop_reason,
                    int64_t code, const char *message, bool retryable)
{
    sess_turn_t *t = &s->turn;
    if (t->state == TURN_NONE || t->state == TURN_ENDING) return;
    sess_budget_outcome (s, &stop_reason, &code, &message, &retryable);
    if (t->worker) {
        if (t->worker->active) t->worker->active--;
        t->worker = NULL;
    }
    if (self->turns_running) self->turns_running--;
    sess_stats_turn_finished (self, stop_reason);
    sess_perm_cancel (self, s, "cancelled");
    cm_map_remove (self->turns, t->id.b);

    //  The state change first, so turn_ended is the turn's last event: the
    //  prompt's reply names its seq, and a client that has it has it all.
    //  A session closed while its turn ran stays closed.
    if (strcmp (s->rec.state, "closed") != 0) sess_set_state (self, s, "idle", NULL);
    proto_ev_turn_ended_t ev = {.turn = t->id,
                                .stop_reason = stop_reason,
                                .code = code,
                                .message = message,
                                .retryable = retryable};
    uint64_t seq = sess_emit (self, s, PROTO_EV_TURN_ENDED, &ev);
    t->stop_reason = strdup (stop_reason);
    t->code = code;
    t->message = message ? strdup (message) : NULL;
    t->end_seq = seq;
    t->state = TURN_ENDING;
    sess_dup_str (&s->rec.last_stop, stop_reason);
    s->rec.last_turn_seq = seq;
    sess_mark_dirty (self, s);
    if (s->acked_seq >= seq) sess_turn_on_acked (self, s);
    sess_turn_dispatch_waiting (self);
}

//  The session goes away (deleted) with a turn in any state: stop it at
//  the worker, forget it, answer whoever waits for it.  Emits nothing.
void sess_turn_abandon (sess_server_t *self, sess_session_t *s)
{
    sess_turn_t *t = &s->turn;
    if (t->state == TURN_NONE) return;
    if (t->state != TURN_ENDING) {
        if (t->worker) {
            proto_w_turn_ref_t ref = {.turn = t->id, .reason = "session deleted"};
            sess_send_worker (self, t->worker, PROTO_W_CANCEL, &ref);
            if (t->worker->active) t->worker->active--;
        }
        if (self->turns_running) self->turns_running--;
        cm_map_remove (self->turns, t->id.b);
    }
    for (size_t i = 0; i < t->nrequesters; i++)
        sess_reply_error (self, &t->requesters[i], CM_E_NOT_FOUND,
                          "the session was deleted while this turn ran");
    sess_turn_clear (t);
}

void sess_turn_interrupted (sess_server_t *self, sess_session_t *s)
{
    //  Loaded at start in a running state: the turn died with the previous
    //  process.  Its conversation was never replaced, so it is valid.
    proto_ev_turn_ended_t ev = {
        .turn = s->rec.last_turn,
        .stop_reason = "interrupted",
        .message =
            "the session service restarted while this turn ran; prompt again to continue",
        .retryable = true};
    sess_set_state (self, s, "idle", "interrupted by a restart");
    uint64_t seq = sess_emit (self, s, PROTO_EV_TURN_ENDED, &ev);
    sess_dup_str (&s->rec.last_stop, "interrupted");
    s->rec.last_turn_seq = seq;
    sess_mark_dirty (self, s);
    cm_info ("a turn was interrupted by the restart and is marked so");
}

/* ---------------------------------------------------------------- */
/*  Dispatch                                                         */

static void on_messages (sess_server_t *self, void *arg, int rc, proto_msg_t *reply);

static void dispatch (sess_server_t *self, sess_session_t *s)
{
    sess_turn_t *t = &s->turn;
    if (t->state != TURN_WAITING) return;
    sess_worker_t *w = sess_worker_pick (self, s->rec.worker);
    if (!w) return; //  the tick tries again until the wait deadline
    cm_uuid_t *turn = malloc (sizeof *turn);
    proto_messages_get_t req = {.session = s->rec.id};
    if (!turn) return;
    *turn = t->id;
    if (sess_store_call (self, PROTO_STORE_MESSAGES_GET, &req, on_messages, turn)) {
        free (turn);
        return;
    }
    t->worker = w;
    w->active++;
    t->state = TURN_LOADING;
}

static void on_messages (sess_server_t *self, void *arg, int rc, proto_msg_t *reply)
{
    cm_uuid_t *turn = arg;
    sess_session_t *s = cm_map_get (self->turns, turn->b);
    free (turn);
    if (!s || s->turn.state != TURN_LOADING) return; //  cancelled meanwhile
    sess_turn_t *t = &s->turn;
    proto_messages_reply_t *conv = rc == 0 ? proto_body (reply, messages_reply) : NULL;
    if (!conv) {
        sess_turn_end (self, s, "failed", CM_E_UNAVAILABLE,
                       "the conversation could not be read from the store; retry", true);
        return;
    }
    proto_w_turn_t out = {.turn = t->id,
                          .session = s->rec.id,
                          .tenant = s->rec.tenant,
                          .cwd = s->rec.cwd,
                          .roots = {(const char **)self->roots, self->nroots},
                          .backend = s->rec.backend,
                          .model = s->rec.model,
                          .mode = s->rec.mode,
                          .prompt = t->prompt,
                          .messages = conv->messages,
                          .allow_always = s->rec.allow_always};
    sess_budget_turn_limits (self, s, &out.budget_tokens, &out.budget_micros);
    if (sess_send_worker (self, t->worker, PROTO_W_TURN, &out)) {
        //  The worker vanished between pick and send: wait for another.
        if (t->worker->active) t->worker->active--;
        t->worker = NULL;
        t->state = TURN_WAITING;
        return;
    }
    t->state = TURN_RUNNING;
    sess_dup_str (&s->rec.worker, t->worker->name);
    s->rec.msg_count = conv->messages.count;
    proto_ev_turn_started_t ev = {.turn = t->id, .worker = t->worker->name};
    sess_emit (self, s, PROTO_EV_TURN_STARTED, &ev);
}

void sess_turn_dispatch_waiting (sess_server_t *self)
{
    size_t pos = 0;
    void *value;
    while (cm_map_next (self->turns, &pos, NULL, &value)) {
        sess_session_t *s = value;
        if (s->turn.state == TURN_WAITING) dispatch (self, s);
    }
}

/* ---------------------------------------------------------------- */
/*  Prompt and cancel                                                */

void sess_turn_prompt (sess_server_t *self, sess_session_t *s, const sess_peer_t *peer,
                       const proto_session_prompt_t *req)
{
    sess_turn_t *t = &s->turn;
    if (t->state != TURN_NONE) {
        if (t->idem && strcmp (t->idem, req->idem) == 0) {
            //  A resend of the running prompt joins it.
            if (t->nrequesters < sizeof t->requesters / sizeof t->requesters[0])
                t->requesters[t->nrequesters++] = *peer;
            return;
        }
        sess_reply_error (self, peer, CM_E_BUSY,
                          "a turn is already running in this session; wait for it to end "
                          "or cancel it");
        return;
    }
    if (s->rec.last_idem && s->rec.last_stop &&
        strcmp (s->rec.last_idem, req->idem) == 0) {
        proto_prompt_reply_t out = {.turn = s->rec.last_turn,
                                    .stop_reason = s->rec.last_stop,
                                    .last_seq = s->rec.last_turn_seq};
        sess_reply (self, peer, PROTO_PROMPT_REPLY, &out);
        return;
    }
    if (sess_budget_before_prompt (self, s, peer, req)) return;
    if ((int64_t)self->turns_running >= self->cfg->max_turns) {
        sess_reply_error (self, peer, CM_E_CAPACITY,
                          "the server runs its maximum number of turns; retry shortly");
        return;
    }
    if (!req->prompt[0] || strlen (req->idem) > 200) {
        sess_reply_error (
            self, peer, CM_E_INVALID,
            "a prompt needs content and an idempotency key of at most 200 bytes");
        return;
    }
    cm_uuid7 (&t->id);
    t->idem = strdup (req->idem);
    t->prompt = strdup (req->prompt);
    t->started_ms = cm_mono_ms ();
    t->wait_deadline_ms = t->started_ms + SESS_DISPATCH_WAIT;
    t->requesters[0] = *peer;
    t->nrequesters = 1;
    t->state = TURN_WAITING;
    sess_budget_turn_start (self, s, req);
    if (!t->idem || !t->prompt || cm_map_put (self->turns, t->id.b, s)) {
        sess_turn_clear (t);
        sess_reply_error (self, peer, CM_E_NOMEM, NULL);
        return;
    }
    self->turns_running++;
    sess_stats_turn_started (self);
    s->rec.last_turn = t->id;
    sess_dup_str (&s->rec.last_idem, req->idem);
    sess_dup_str (&s->rec.last_stop, NULL);
    s->rec.turns++;
    proto_ev_user_message_t ev = {
        .turn = t->id, .prompt = req->prompt, .idem = req->idem};
    sess_emit (self, s, PROTO_EV_USER_MESSAGE, &ev);
    sess_set_state (self, s, "running", NULL);
    dispatch (self, s);
}

void sess_turn_cancel (sess_server_t *self, sess_session_t *s)
{
    sess_turn_cancel_why (self, s, NULL);
}

void sess_turn_cancel_why (sess_server_t *self, sess_session_t *s, const char *why)
{
    sess_turn_t *t = &s->turn;
    switch (t->state) {
    case TURN_WAITING:
    case TURN_LOADING:
        sess_turn_end (self, s, "cancelled", 0, why, false);
        return;
    case TURN_RUNNING:
        if (t->cancel) return;
        t->cancel = true;
        if (why) t->cancel_why = strdup (why);
        t->cancel_deadline_ms = cm_mono_ms () + SESS_CANCEL_GRACE;
        sess_perm_cancel (self, s, "cancelled");
        if (s->rec.state && strcmp (s->rec.state, "awaiting_permission") == 0)
            sess_set_state (self, s, "running", "cancelling");
        proto_w_turn_ref_t ref = {.turn = t->id,
                                  .reason = why ? why : "cancelled by a client"};
        sess_send_worker (self, t->worker, PROTO_W_CANCEL, &ref);
        return;
    default:
        return;
    }
}

/* ---------------------------------------------------------------- */
/*  From the worker                                                  */

typedef struct {
    cm_uuid_t turn;
    char *stop_reason;
    int64_t code;
    char *message;
    bool retryable;
    uint64_t new_count;
} saving_t;

static void saving_drop (void *arg)
{
    saving_t *sv = arg;
    free (sv->stop_reason);
    free (sv->message);
    free (sv);
}

static void finish_saved (sess_server_t *self, saving_t *sv, int rc)
{
    sess_session_t *s = cm_map_get (self->turns, sv->turn.b);
    if (s && s->turn.state == TURN_SAVING) {
        if (rc == 0)
            s->rec.msg_count = sv->new_count;
        else
            cm_error ("the turn's conversation could not be stored (%s)",
                      cm_strerror (rc));
        if (rc == 0)
            sess_turn_end (self, s, sv->stop_reason, sv->code, sv->message,
                           sv->retryable);
        else
            sess_turn_end (self, s, "failed", CM_E_UNAVAILABLE,
                           "the turn finished but its conversation could not be stored",
                           true);
    }
    saving_drop (sv);
}

static void on_saved (sess_server_t *self, void *arg, int rc, proto_msg_t *reply)
{
    finish_saved (self, arg, rc);
}

static void add_usage (sess_server_t *self, sess_session_t *s, const proto_usage_t *u)
{
    if (!u) return;
    sess_budget_on_turn_usage (self, s, u);
    proto_usage_t *tot = s->rec.usage;
    if (tot) {
        tot->input_tokens += u->input_tokens;
        tot->output_tokens += u->output_tokens;
        tot->cache_tokens += u->cache_tokens;
        tot->cost_micros += u->cost_micros;
        tot->model_calls += u->model_calls;
    }
    //  Daily usage per tenant; fire and forget (resent until stored, and
    //  counted once: the turn id is the add's idempotency id).
    int64_t now = cm_time_ms () / 1000;
    struct tm tm;
    time_t tt = (time_t)now;
    gmtime_r (&tt, &tm);
    proto_usage_add_t add = {.tenant = s->rec.tenant,
                             .day = (uint64_t)((tm.tm_year + 1900) * 10000 +
                                               (tm.tm_mon + 1) * 100 + tm.tm_mday),
                             .usage = (proto_usage_t *)u,
                             .turns = 1,
                             .id = s->turn.id};
    sess_store_call (self, PROTO_STORE_USAGE_ADD, &add, NULL, NULL);
}

static void finish (sess_server_t *self, sess_session_t *s, const char *stop_reason,
                    int64_t code, const char *message, bool retryable, uint64_t from,
                    const proto_str_list_t *messages, const proto_usage_t *usage)
{
    sess_turn_t *t = &s->turn;
    add_usage (self, s, usage);
    if (t->cancel && strcmp (stop_reason, "end_turn") == 0) stop_reason = "cancelled";
    if (t->cancel_why && !message && strcmp (stop_reason, "cancelled") == 0)
        message = t->cancel_why;
    if (!messages || messages->count == 0) {
        sess_turn_end (self, s, stop_reason, code, message, retryable);
        return;
    }
    if (from != s->rec.msg_count) {
        cm_error (
            "worker sent messages from %llu but the conversation has %llu; not saved",
            (unsigned long long)from, (unsigned long long)s->rec.msg_count);
        sess_turn_end (self, s, "failed", CM_E_INTERNAL,
                       "the worker's conversation did not line up; prompt again", true);
        return;
    }
    saving_t *sv = calloc (1, sizeof *sv);
    if (!sv) return;
    sv->turn = t->id;
    sv->stop_reason = strdup (stop_reason);
    sv->code = code;
    sv->message = message ? strdup (message) : NULL;
    sv->retryable = retryable;
    sv->new_count = from + messages->count;
    proto_messages_put_t put = {
        .session = s->rec.id, .from = from, .messages = *messages};
    t->state = TURN_SAVING;
    if (sess_store_call_owned (self, PROTO_STORE_MESSAGES_PUT, &put, on_saved, sv,
                               saving_drop))
        finish_saved (self, sv, CM_E_INTERNAL);
}

void sess_turn_on_worker (sess_server_t *self, sess_worker_t *w, proto_msg_t *msg)
{
    //  Every turn message's body starts with the turn id.
    const cm_uuid_t *turn =
        (const cm_uuid_t *)((const char *)msg->body + msg->desc->body->fields[0].offset);
    sess_session_t *s = cm_map_get (self->turns, turn->b);
    if (!s || s->turn.state != TURN_RUNNING || s->turn.worker != w) {
        if (msg->type == PROTO_W_EVENT || msg->type == PROTO_W_PERMISSION_REQUEST) {
            //  A turn we do not know (we restarted, or it ended): stop it.
            proto_w_turn_ref_t ref = {.turn = *turn, .reason = "unknown turn"};
            sess_send_worker (self, w, PROTO_W_CANCEL, &ref);
        }
        return;
    }
    switch (msg->type) {
    case PROTO_W_EVENT: {
        proto_w_event_t *ev = msg->body;
        int err = 0;
        sess_emit_encoded (self, s, turn, ev->event.data, ev->event.size, &err);
        if (err)
            cm_warn ("dropped an event from worker %s: %s", w->name, cm_strerror (err));
        else if (self->evmsg.type == PROTO_EV_USAGE)
            sess_budget_on_usage (self, s, proto_body (&self->evmsg, ev_usage)->usage);
        return;
    }
    case PROTO_W_PERMISSION_REQUEST:
        sess_perm_request (self, s, msg->body);
        return;
    case PROTO_W_TURN_DONE: {
        proto_w_turn_done_t *d = msg->body;
        finish (self, s, d->stop_reason, 0, NULL, false, d->from, &d->messages, d->usage);
        return;
    }
    case PROTO_W_TURN_FAILED: {
        proto_w_turn_failed_t *f = msg->body;
        finish (self, s, "failed", f->code, f->message, f->retryable, f->from,
                &f->messages, f->usage);
        return;
    }
    default:
        return;
    }
}

void sess_turn_worker_lost (sess_server_t *self, sess_worker_t *w)
{
    size_t pos = 0;
    void *value;
    while (cm_map_next (self->turns, &pos, NULL, &value)) {
        sess_session_t *s = value;
        if (s->turn.worker != w) continue;
        if (s->turn.state == TURN_SAVING) {
            //  It finished before the worker died: let the save complete.
            if (w->active) w->active--;
            s->turn.worker = NULL;
            continue;
        }
        if (s->turn.state == TURN_LOADING) {
            //  Not started yet: it may still go to another worker.
            s->turn.worker = NULL;
            s->turn.state = TURN_WAITING;
            continue;
        }
        sess_turn_end (
            self, s, "failed", CM_E_WORKER_LOST,
            "the agent worker running this turn stopped; prompt again to continue "
            "on another worker",
            true);
    }
}

void sess_turns_tick (sess_server_t *self, int64_t now)
{
    size_t pos = 0;
    void *value;
    while (cm_map_next (self->turns, &pos, NULL, &value)) {
        sess_session_t *s = value;
        sess_turn_t *t = &s->turn;
        if (t->state == TURN_WAITING) {
            dispatch (self, s);
            if (t->state == TURN_WAITING && now > t->wait_deadline_ms)
                sess_turn_end (
                    self, s, "failed", CM_E_UNAVAILABLE,
                    "no agent worker is available; start corral-worker or retry", true);
        } else if (t->state == TURN_RUNNING) {
            if (t->cancel && now > t->cancel_deadline_ms)
                sess_turn_end (self, s, "cancelled", 0,
                               t->cancel_why
                                   ? t->cancel_why
                                   : "the worker did not confirm the cancel in time",
                               false);
            else
                sess_perm_tick (self, s, now);
        }
    }
}
