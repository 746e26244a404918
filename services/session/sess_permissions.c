/*  sess_permissions.c - a tool waits for a person.

    The worker pauses the tool and asks; the request becomes an event every
    attached client sees and the session's pending state, with the event's
    seq: load, attach and resume answer it (session.reply perm_seq), so a
    gateway whose client starts watching past that event still asks it.  The first answer wins - this process
    handles one message at a time, so the check-and-clear below is the
    compare-and-set; later answers get `conflict`.  No answer before the
    deadline counts as a refusal.  An allow-always answer is remembered as
    "tool:target" in the session record and answers the same request from
    then on without asking.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cm_log.h"
#include "cm_time.h"
#include "sess.h"

static void clear_pending (sess_turn_t *t)
{
    free (t->perm_id);
    free (t->perm_tool);
    for (size_t i = 0; i < t->perm_options.count; i++) {
        free ((char *)t->perm_options.items[i].option_id);
        free ((char *)t->perm_options.items[i].name);
        free ((char *)t->perm_options.items[i].kind);
    }
    free (t->perm_options.items);
    t->perm_id = NULL;
    t->perm_tool = NULL;
    t->perm_options.items = NULL;
    t->perm_options.count = 0;
    t->perm_seq = 0;
}

static const proto_perm_option_t *option_of_kind (const proto_perm_option_list_t *opts,
                                                  const char *kind)
{
    for (size_t i = 0; i < opts->count; i++)
        if (strcmp (opts->items[i].kind, kind) == 0) return &opts->items[i];
    return NULL;
}

static void answer_worker (sess_server_t *self, sess_session_t *s, const char *request_id,
                           const proto_perm_option_t *opt)
{
    proto_w_perm_answer_t ans = {.turn = s->turn.id,
                                 .request_id = request_id,
                                 .option_id = opt ? opt->option_id : NULL,
                                 .kind = opt ? opt->kind : NULL};
    sess_send_worker (self, s->turn.worker, PROTO_W_PERMISSION_ANSWER, &ans);
}

static bool allowed_always (const sess_session_t *s, const char *key)
{
    for (size_t i = 0; i < s->rec.allow_always.count; i++)
        if (strcmp (s->rec.allow_always.items[i], key) == 0) return true;
    return false;
}

void sess_perm_request (sess_server_t *self, sess_session_t *s,
                        const proto_w_perm_request_t *req)
{
    sess_turn_t *t = &s->turn;
    char key[1024];
    snprintf (key, sizeof key, "%s:%s", req->tool ? req->tool : "",
              req->target ? req->target : "");
    if (t->perm_id || t->cancel) {
        //  One question at a time; and none once a cancel is under way.
        answer_worker (self, s, req->request_id, NULL);
        return;
    }
    if (req->tool && allowed_always (s, key)) {
        const proto_perm_option_t *opt = option_of_kind (&req->options, "allow_always");
        if (!opt) opt = option_of_kind (&req->options, "allow_once");
        if (opt) {
            answer_worker (self, s, req->request_id, opt);
            return;
        }
    }
    t->perm_id = strdup (req->request_id);
    t->perm_tool = strdup (key);
    t->perm_options.items = calloc (req->options.count ? req->options.count : 1,
                                    sizeof (proto_perm_option_t));
    if (!t->perm_id || !t->perm_tool || !t->perm_options.items) {
        clear_pending (t);
        answer_worker (self, s, req->request_id, NULL);
        return;
    }
    for (size_t i = 0; i < req->options.count; i++) {
        proto_perm_option_t *o = &t->perm_options.items[i];
        o->option_id = strdup (req->options.items[i].option_id);
        o->name = strdup (req->options.items[i].name);
        o->kind = strdup (req->options.items[i].kind);
        t->perm_options.count++;
    }
    t->perm_deadline_ms = cm_mono_ms () + self->cfg->permission_timeout_ms;
    t->perm_deadline_wall = cm_time_ms () + self->cfg->permission_timeout_ms;
    proto_ev_perm_request_t ev = {.turn = t->id,
                                  .request_id = req->request_id,
                                  .tool_call_id = req->tool_call_id,
                                  .title = req->title,
                                  .options = t->perm_options,
                                  .deadline_ms = t->perm_deadline_wall};
    t->perm_seq = sess_emit (self, s, PROTO_EV_PERMISSION_REQUEST, &ev);
    sess_set_state (self, s, "awaiting_permission", NULL);
}

static void resolved (sess_server_t *self, sess_session_t *s, const char *option_id,
                      const char *outcome, const char *conn)
{
    proto_ev_perm_resolved_t ev = {.turn = s->turn.id,
                                   .request_id = s->turn.perm_id,
                                   .option_id = option_id,
                                   .outcome = outcome,
                                   .conn = conn};
    sess_emit (self, s, PROTO_EV_PERMISSION_RESOLVED, &ev);
}

void sess_perm_answer (sess_server_t *self, sess_session_t *s, const sess_peer_t *peer,
                       const proto_perm_answer_t *req)
{
    sess_turn_t *t = &s->turn;
    if (!t->perm_id || strcmp (t->perm_id, req->request_id) != 0) {
        sess_reply_error (self, peer, CM_E_CONFLICT,
                          "this permission request was already answered or has expired");
        return;
    }
    const proto_perm_option_t *opt = NULL;
    if (req->option_id) {
        for (size_t i = 0; i < t->perm_options.count && !opt; i++)
            if (strcmp (t->perm_options.items[i].option_id, req->option_id) == 0)
                opt = &t->perm_options.items[i];
        if (!opt) {
            sess_reply_error (self, peer, CM_E_INVALID, "no such option in this request");
            return;
        }
    }
    answer_worker (self, s, t->perm_id, opt);
    resolved (self, s, opt ? opt->option_id : NULL, opt ? "selected" : "cancelled",
              req->conn);
    if (opt && strcmp (opt->kind, "allow_always") == 0 &&
        !allowed_always (s, t->perm_tool)) {
        proto_str_list_t *l = &s->rec.allow_always;
        const char **items = realloc (l->items, (l->count + 1) * sizeof *items);
        if (items) {
            l->items = items;
            l->items[l->count++] = strdup (t->perm_tool);
        }
    }
    clear_pending (t);
    sess_set_state (self, s, "running", NULL);
    sess_mark_dirty (self, s);
    sess_reply (self, peer, PROTO_OK, NULL);
}

void sess_perm_tick (sess_server_t *self, sess_session_t *s, int64_t now)
{
    sess_turn_t *t = &s->turn;
    if (!t->perm_id || now < t->perm_deadline_ms) return;
    //  Nobody answered: refuse, as a person would have to allow it.
    const proto_perm_option_t *opt = option_of_kind (&t->perm_options, "reject_once");
    answer_worker (self, s, t->perm_id, opt);
    resolved (self, s, opt ? opt->option_id : NULL, "timed_out", NULL);
    clear_pending (t);
    sess_set_state (self, s, "running", "permission timed out");
}

void sess_perm_cancel (sess_server_t *self, sess_session_t *s, const char *outcome)
{
    if (!s->turn.perm_id) return;
    resolved (self, s, NULL, outcome, NULL);
    clear_pending (&s->turn);
}

uint64_t sess_perm_pending_seq (const sess_session_t *s)
{
    return s->turn.perm_id ? s->turn.perm_seq : 0;
}
