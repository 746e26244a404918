/*  wrk_turn.c - the built-in agent loop (see wrk_worker.h).

    calling ──(reply with tool calls)──► tools ──► [permission] ──► run
       ▲                                                             │
       └────────────── next model call with the results ◄────────────┘
    (reply without tool calls, a limit, cancel or a failure) ──► finished

    Events a turn sends: agent_message_chunk and agent_thought_chunk as the
    model streams; tool_call when a call is complete (title, kind, input);
    tool_call_update when it runs and when it ends (content, diff); plan
    for update_plan; usage_update after every model call.  Permission
    requests go as PERMISSION_REQUEST; the session makes them events.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>

#include "cm_log.h"
#include "cm_time.h"
#include "wrk_worker.h"

#define SYSTEM_PROMPT                                                                    \
    "You are a coding agent working in a software project. Use the tools to read, "      \
    "search and change files and to run commands in the project; paths are relative to " \
    "the working directory. Work in small steps, check your results, and keep answers "  \
    "short."
#define EVENT_TEXT_MAX (16u * 1024) //  bytes of tool output put in one event

static void model_call (wrk_turn_t *t);
static void next_tool (wrk_turn_t *t);

/* ---------------------------------------------------------------- */
/*  Lifetime                                                         */

static void turn_free (wrk_turn_t *t)
{
    if (t->call) wrk_call_cancel (t->server->http, t->call);
    if (t->exec) {
        wrk_exec_cancel (t->exec);
        wrk_exec_destroy (&t->exec); //  kills the group and reaps
    }
    wrk_reply_destroy (&t->reply);
    json_decref (t->conv);
    json_decref (t->results);
    json_decref (t->allow);
    free (t->backend);
    free (t->model);
    free (t->mode);
    free (t->cwd);
    free (t->mem_msg);
    for (size_t i = 0; i < t->scope.count; i++) free (t->roots[i]);
    free (t);
}

static void unlink_turn (wrk_server_t *self, wrk_turn_t *t)
{
    for (wrk_turn_t **p = &self->turns; *p; p = &(*p)->next)
        if (*p == t) {
            *p = t->next;
            self->nturns--;
            return;
        }
}

static wrk_turn_t *find (wrk_server_t *self, const cm_uuid_t *id)
{
    for (wrk_turn_t *t = self->turns; t; t = t->next)
        if (memcmp (t->id.b, id->b, 16) == 0) return t;
    return NULL;
}

//  The new messages of the turn, as JSON texts, for TURN_DONE/FAILED.
static int new_messages (wrk_turn_t *t, proto_str_list_t *out)
{
    size_t n = json_array_size (t->conv) - t->from;
    out->items = n ? calloc (n, sizeof (char *)) : NULL;
    out->count = 0;
    if (n && !out->items) return CM_E_NOMEM;
    for (size_t i = 0; i < n; i++) {
        char *text = json_dumps (json_array_get (t->conv, t->from + i), JSON_COMPACT);
        if (!text) return CM_E_NOMEM;
        out->items[out->count++] = text;
    }
    return 0;
}

static void free_messages (proto_str_list_t *l)
{
    for (size_t i = 0; i < l->count; i++) free ((char *)l->items[i]);
    free (l->items);
}

//  Close the current round: the tool results gathered so far go in as a
//  tool message; every call left without one gets `reason` (repair).
static void close_round (wrk_turn_t *t, const char *reason)
{
    if (json_array_size (t->results)) {
        //  The message takes the array; the next round starts a new one.
        json_t *msg = json_pack ("{s:s, s:o}", "role", "tool", "content", t->results);
        t->results = json_array ();
        if (msg) json_array_append_new (t->conv, msg);
    }
    char err[256];
    wrk_conv_repair (t->conv, reason, err, sizeof err);
}

//  End the turn: TURN_DONE (rc 0) or TURN_FAILED, then free it.
static void finish (wrk_turn_t *t, const char *stop_reason, int code, const char *message,
                    bool retryable)
{
    wrk_server_t *self = t->server;
    if (t->state == TURN_FINISHED) return;
    t->state = TURN_FINISHED;
    close_round (t, code ? "failed: the turn stopped before this tool ran" : NULL);
    proto_str_list_t msgs = {0};
    new_messages (t, &msgs);
    proto_usage_t usage = {.input_tokens = t->usage.input_tokens,
                           .output_tokens = t->usage.output_tokens,
                           .cache_tokens = t->usage.cache_tokens,
                           .cost_micros = t->usage.cost_micros,
                           .model_calls = t->usage.model_calls};
    if (code == 0) {
        proto_w_turn_done_t done = {.turn = t->id,
                                    .stop_reason = stop_reason,
                                    .from = t->from,
                                    .messages = msgs,
                                    .usage = &usage};
        wrk_send (self, PROTO_W_TURN_DONE, &done);
    } else {
        proto_w_turn_failed_t failed = {.turn = t->id,
                                        .code = code,
                                        .message = message ? message : cm_strerror (code),
                                        .retryable = retryable,
                                        .from = t->from,
                                        .messages = msgs,
                                        .usage = &usage};
        wrk_send (self, PROTO_W_TURN_FAILED, &failed);
    }
    free_messages (&msgs);
    char id[CM_UUID_STR_LEN];
    cm_logc (CM_LOG_INFO, &(cm_log_ctx_t){.turn = cm_uuid_fmt (&t->id, id)},
             "turn ended: %s",
             code ? (message ? message : cm_strerror (code)) : stop_reason);
    //  Freed after the current batch of events: one later in the batch may
    //  still point at this turn's command tag.
    if (t->call) wrk_call_cancel (self->http, t->call);
    t->call = NULL;
    if (t->exec) {
        wrk_exec_cancel (t->exec);
        wrk_exec_destroy (&t->exec);
    }
    unlink_turn (self, t);
    t->next = self->dead;
    self->dead = t;
}

void wrk_turns_reap (wrk_server_t *self)
{
    while (self->dead) {
        wrk_turn_t *t = self->dead;
        self->dead = t->next;
        turn_free (t);
    }
}

/* ---------------------------------------------------------------- */
/*  Start                                                            */

static int setup (wrk_turn_t *t, const proto_w_turn_t *req, char *err, size_t errlen)
{
    t->id = req->turn;
    t->session = req->session;
    t->backend = strdup (req->backend);
    t->model = strdup (req->model ? req->model : "");
    t->mode = strdup (req->mode);
    t->cwd = strdup (req->cwd);
    t->conv = json_array ();
    t->results = json_array ();
    t->allow = json_array ();
    t->exec_fds[0] = t->exec_fds[1] = -1;
    if (!t->backend || !t->model || !t->mode || !t->cwd || !t->conv || !t->results ||
        !t->allow)
        return CM_E_NOMEM;
    if (strcmp (t->backend, "openai") != 0 && strcmp (t->backend, "anthropic") != 0) {
        snprintf (err, errlen,
                  "backend %s is not served by this worker (openai, anthropic)",
                  t->backend);
        return CM_E_INVALID;
    }
    for (size_t i = 0; i < req->roots.count && i < WRK_PATH_MAX_ROOTS; i++) {
        t->roots[i] = strdup (req->roots.items[i]);
        t->scope.roots[i] = t->roots[i];
        t->scope.count++;
    }
    t->scope.cwd = t->cwd;
    for (size_t i = 0; i < req->allow_always.count; i++)
        json_array_append_new (t->allow, json_string (req->allow_always.items[i]));
    //  The stored conversation, then the new prompt.
    for (size_t i = 0; i < req->messages.count; i++) {
        json_t *msg;
        int rc = wrk_conv_parse_message (
            req->messages.items[i], strlen (req->messages.items[i]), &msg, err, errlen);
        if (rc) return rc;
        json_array_append_new (t->conv, msg);
    }
    //  Repair what was stored (it should already be valid).
    wrk_conv_repair (t->conv, NULL, err, errlen);
    t->from = json_array_size (t->conv);
    json_t *user;
    int rc =
        wrk_conv_user_from_acp (req->prompt, strlen (req->prompt), &user, err, errlen);
    if (rc) return rc;
    json_array_append_new (t->conv, user);
    t->max_calls = req->max_model_calls ? (int64_t)req->max_model_calls
                                        : t->server->cfg->max_model_calls;
    t->budget_tokens = req->budget_tokens;
    t->budget_micros = req->budget_micros;
    return 0;
}

void wrk_turn_start (wrk_server_t *self, const proto_w_turn_t *req)
{
    char err[512] = "";
    if (find (self, &req->turn)) return; //  a duplicate: already running
    wrk_turn_t *t = calloc (1, sizeof *t);
    if (!t) return;
    t->server = self;
    t->next = self->turns;
    self->turns = t;
    self->nturns++;
    int rc = (int64_t)self->nturns > self->cfg->capacity
                 ? CM_E_CAPACITY
                 : setup (t, req, err, sizeof err);
    if (rc) {
        t->id = req->turn;
        if (!t->conv) t->conv = json_array ();
        if (!t->results) t->results = json_array ();
        finish (t, "failed", rc, err[0] ? err : cm_strerror (rc), rc == CM_E_CAPACITY);
        return;
    }
    model_call (t);
}

/* ---------------------------------------------------------------- */
/*  Model calls                                                      */

static int on_delta (void *arg, const wrk_delta_t *d)
{
    wrk_turn_t *t = arg;
    int rc = wrk_reply_feed (t->reply, d);
    if (rc) return rc;
    if (!t->first_output) wrk_stats_call_output (t);
    if (d->kind == WRK_DELTA_TEXT && d->text_len) {
        proto_ev_text_t ev = {.text = d->text};
        wrk_send_event (t->server, t, PROTO_EV_AGENT_MESSAGE, &ev);
    } else if (d->kind == WRK_DELTA_THINKING && d->text_len) {
        proto_ev_text_t ev = {.text = d->text};
        wrk_send_event (t->server, t, PROTO_EV_AGENT_THOUGHT, &ev);
    }
    return 0;
}

static void on_call_done (void *arg, int rc, int status, bool retryable,
                          const char *message)
{
    wrk_turn_t *t = arg;
    t->call = NULL;
    if (rc || !wrk_reply_finished (t->reply)) {
        wrk_stats_call_end (t, false, NULL);
        //  The provider's words (sanitised, never a key: wrk_http.c and
        //  cm_log_secret) go to the log for operators; the client gets ours.
        char sid[CM_UUID_STR_LEN], tid[CM_UUID_STR_LEN];
        cm_logc (CM_LOG_WARN,
                 &(cm_log_ctx_t){.session = cm_uuid_fmt (&t->session, sid),
                                 .turn = cm_uuid_fmt (&t->id, tid)},
                 "model call failed (%s, HTTP %d, %s): %s",
                 cm_strerror (rc ? rc : CM_E_UPSTREAM), status,
                 retryable ? "retryable" : "not retryable",
                 message && *message ? message : "no message");
        char text[256];
        wrk_call_client_message (rc, status, retryable, text, sizeof text);
        finish (t, "failed", rc ? rc : CM_E_UPSTREAM, text, retryable);
        return;
    }
    //  Count and price the call, then keep the assistant's message.
    wrk_usage_t u = wrk_reply_usage (t->reply);
    wrk_prices_charge (t->server->prices, t->model, &u);
    wrk_usage_add (&t->usage, &u);
    wrk_stats_call_end (t, true, &u);
    proto_usage_t pu = {.input_tokens = t->usage.input_tokens,
                        .output_tokens = t->usage.output_tokens,
                        .cache_tokens = t->usage.cache_tokens,
                        .cost_micros = t->usage.cost_micros,
                        .model_calls = t->usage.model_calls};
    proto_ev_usage_t ev = {.usage = &pu, .model = t->model};
    wrk_send_event (t->server, t, PROTO_EV_USAGE, &ev);

    json_t *msg = NULL;
    if (wrk_reply_message (t->reply, &msg) == 0 && msg)
        json_array_append_new (t->conv, msg);
    const char *stop = wrk_reply_stop_reason (t->reply);
    int64_t cap = t->server->cfg->max_turn_tokens;
    if (cap > 0 && t->usage.input_tokens + t->usage.output_tokens >= (uint64_t)cap) {
        //  The turn's token budget is spent: stop cleanly; a tool call the
        //  model just asked for gets a result saying why.
        close_round (t, "not run: the turn reached its token limit");
        finish (t, "max_tokens", 0, NULL, false);
        return;
    }
    if (wrk_reply_tool_count (t->reply) == 0) {
        finish (t, stop && *stop && strcmp (stop, "tool_use") ? stop : "end_turn", 0,
                NULL, false);
        return;
    }
    if (t->cancelled) {
        finish (t, "cancelled", 0, NULL, false);
        return;
    }
    if ((t->budget_tokens &&
         t->usage.input_tokens + t->usage.output_tokens >= t->budget_tokens) ||
        (t->budget_micros && t->usage.cost_micros >= t->budget_micros)) {
        //  The session's or key's budget is spent (the session service
        //  stops the turn too, on the usage event): start nothing more.
        close_round (t, "not run: the budget is spent");
        finish (t, "cancelled", 0, NULL, false);
        return;
    }
    t->tool_index = 0;
    t->state = TURN_TOOLS;
    next_tool (t);
}

static void model_call (wrk_turn_t *t)
{
    wrk_server_t *self = t->server;
    const wrk_config_t *c = self->cfg;
    if (t->calls >= t->max_calls) {
        finish (t, "max_turn_requests", 0, NULL, false);
        return;
    }
    t->calls++;
    bool anthropic = strcmp (t->backend, "anthropic") == 0;
    wrk_request_opts_t ro = {.model = t->model,
                             .system = SYSTEM_PROMPT,
                             .tools = self->tools,
                             .max_tokens = (uint32_t)c->max_tokens,
                             .thinking_budget =
                                 anthropic ? (uint32_t)c->thinking_budget : 0};
    char *body = NULL;
    size_t len = 0;
    char err[512];
    int rc = anthropic
                 ? wrk_conv_anthropic_request (t->conv, &ro, &body, &len, err, sizeof err)
                 : wrk_conv_openai_request (t->conv, &ro, &body, &len, err, sizeof err);
    if (rc) {
        finish (t, "failed", rc, err, false);
        return;
    }
    wrk_reply_destroy (&t->reply);
    t->reply = wrk_reply_new ();
    wrk_call_opts_t co = {.api = anthropic ? WRK_API_ANTHROPIC : WRK_API_OPENAI,
                          .base_url =
                              anthropic ? c->anthropic_base_url : c->openai_base_url,
                          .api_key = anthropic ? c->anthropic_api_key : c->openai_api_key,
                          .body = body,
                          .body_len = len,
                          .max_attempts = (int)c->max_attempts,
                          .stall_ms = c->stall_ms};
    t->state = TURN_CALLING;
    wrk_stats_call_start (t);
    rc = t->reply ? wrk_call_start (self->http, &co, on_delta, on_call_done, t, &t->call)
                  : CM_E_NOMEM;
    free (body);
    if (rc) finish (t, "failed", rc, "the model call could not start", true);
}

/* ---------------------------------------------------------------- */
/*  Tools                                                            */

static void add_result (wrk_turn_t *t, const char *call_id, const wrk_tool_result_t *r)
{
    json_t *block =
        json_pack ("{s:s, s:s, s:s, s:b}", "type", "tool_result", "tool_use_id", call_id,
                   "content", r->content ? r->content : "", "is_error", r->is_error);
    if (block) json_array_append_new (t->results, block);
}

//  The tool_call_update that ends a call, with its output and diff.
static void send_result_event (wrk_turn_t *t, const char *call_id,
                               const wrk_tool_result_t *r)
{
    char *content = r->content;
    char cut[EVENT_TEXT_MAX + 64];
    if (content && strlen (content) > EVENT_TEXT_MAX) {
        snprintf (cut, sizeof cut, "%.*s\n… (cut at %u bytes)", (int)EVENT_TEXT_MAX,
                  content, EVENT_TEXT_MAX);
        content = cut;
    }
    proto_ev_tool_update_t ev = {.tool_call_id = call_id,
                                 .status = r->is_error ? "failed" : "completed",
                                 .content = content,
                                 .path = r->path,
                                 .old_text = r->old_text,
                                 .new_text = r->new_text,
                                 .diff = r->diff};
    wrk_send_event (t->server, t, PROTO_EV_TOOL_CALL_UPDATE, &ev);
    if (r->plan && !r->is_error) {
        size_t n = json_array_size (r->plan);
        proto_plan_entry_t *entries = calloc (n ? n : 1, sizeof *entries);
        if (entries) {
            for (size_t i = 0; i < n; i++) {
                json_t *e = json_array_get (r->plan, i);
                entries[i].content = json_string_value (json_object_get (e, "content"));
                entries[i].status = json_string_value (json_object_get (e, "status"));
                entries[i].priority = json_string_value (json_object_get (e, "priority"));
            }
            proto_ev_plan_t pev = {.entries = {entries, n}};
            wrk_send_event (t->server, t, PROTO_EV_PLAN, &pev);
            free (entries);
        }
    }
}

static void complete_tool (wrk_turn_t *t, const char *call_id, wrk_tool_result_t *r)
{
    wrk_stats_tool_end (t);
    send_result_event (t, call_id, r);
    add_result (t, call_id, r);
    wrk_tool_result_free (r);
    t->tool_index++;
}

static bool allowed_always (const wrk_turn_t *t, const char *key)
{
    size_t i;
    json_t *v;
    json_array_foreach (t->allow, i,
                        v) if (strcmp (json_string_value (v), key) == 0) return true;
    return false;
}

//  Start run_command; returns 0 if it runs (the loop takes over).
static int start_command (wrk_turn_t *t, const wrk_tool_call_t *call,
                          wrk_tool_result_t *r)
{
    const char *command;
    int64_t timeout_ms;
    if (wrk_tool_command_args (call->input, &command, &timeout_ms, r)) return -1;
    wrk_exec_opts_t eo = {.scope = &t->scope,
                          .command = command,
                          .timeout_ms = timeout_ms,
                          .env = t->server->env};
    char err[512];
    if (wrk_exec_start (&eo, &t->exec, err, sizeof err)) {
        wrk_tool_result_error (r, err);
        return -1;
    }
    t->exec_tag.tag.kind = WRK_TAG_EXEC;
    t->exec_tag.turn = t;
    wrk_exec_fds (t->exec, t->exec_fds);
    for (int i = 0; i < 2; i++) {
        if (t->exec_fds[i] < 0) continue;
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &t->exec_tag};
        epoll_ctl (t->server->epfd, EPOLL_CTL_ADD, t->exec_fds[i], &ev);
    }
    snprintf (t->exec_call_id, sizeof t->exec_call_id, "%s", call->id);
    t->state = TURN_EXEC;
    proto_ev_tool_update_t ev = {.tool_call_id = call->id, .status = "in_progress"};
    wrk_send_event (t->server, t, PROTO_EV_TOOL_CALL_UPDATE, &ev);
    return 0;
}

//  Run tool `call` now (permission is settled).  Returns true if it
//  finished synchronously.
static bool run_tool (wrk_turn_t *t, const wrk_tool_call_t *call)
{
    wrk_tool_result_t r = {0};
    const wrk_tool_def_t *def = wrk_tool_find (call->name);
    wrk_stats_tool_start (t, def ? call->name : "unknown");
    if (def && (def->flags & WRK_TOOL_ASYNC)) {
        if (start_command (t, call, &r) == 0) return false;
    } else if (wrk_tool_run (&t->scope, call->name, call->input, &r) != 0)
        wrk_tool_result_error (&r, "the tool could not run (out of memory)");
    complete_tool (t, call->id, &r);
    return true;
}

static void ask_permission (wrk_turn_t *t, const wrk_tool_call_t *call, const char *title,
                            const char *target)
{
    proto_perm_option_t opts[] = {
        {.option_id = "allow", .name = "Allow", .kind = "allow_once"},
        {.option_id = "allow_always", .name = "Always allow", .kind = "allow_always"},
        {.option_id = "reject", .name = "Reject", .kind = "reject_once"},
    };
    snprintf (t->perm_id, sizeof t->perm_id, "p%u", ++t->perm_seq);
    proto_w_perm_request_t req = {.turn = t->id,
                                  .request_id = t->perm_id,
                                  .tool_call_id = call->id,
                                  .title = title,
                                  .target = target,
                                  .tool = call->name,
                                  .options = {opts, 3}};
    t->state = TURN_WAIT_PERM;
    wrk_send (t->server, PROTO_W_PERMISSION_REQUEST, &req);
}

//  Work through the reply's tool calls until one has to wait (permission,
//  a command) or all are done; then the next model call.
static void next_tool (wrk_turn_t *t)
{
    while (t->tool_index < wrk_reply_tool_count (t->reply)) {
        if (t->cancelled) {
            finish (t, "cancelled", 0, NULL, false);
            return;
        }
        const wrk_tool_call_t *call = wrk_reply_tool (t->reply, t->tool_index);
        const wrk_tool_def_t *def = wrk_tool_find (call->name);
        char title[256] = "", target[1024] = "";
        if (def)
            wrk_tool_describe (&t->scope, call->name, call->input, title, sizeof title,
                               target, sizeof target);
        char *input = json_dumps (call->input, JSON_COMPACT);
        const char *loc[1] = {target};
        proto_ev_tool_call_t ev = {
            .tool_call_id = call->id,
            .title = title[0] ? title : call->name,
            .kind = def ? wrk_tool_kind_name (def->kind) : "other",
            .status = "pending",
            .raw_input = input,
            .locations = {loc, target[0] && def && !(def->flags & WRK_TOOL_EXECUTES)}};
        wrk_send_event (t->server, t, PROTO_EV_TOOL_CALL, &ev);
        free (input);

        wrk_tool_result_t r = {0};
        if (!def) {
            //  wrk_tool_run words the unknown-tool error for the model.
            if (run_tool (t, call)) continue;
            return;
        }
        bool writes = def->flags & WRK_TOOL_WRITES, runs = def->flags & WRK_TOOL_EXECUTES;
        if ((writes || runs) && strcmp (t->mode, "read_only") == 0) {
            wrk_tool_result_error (&r,
                                   "refused: this session is read-only; it may read and "
                                   "search but not change files or run commands");
            complete_tool (t, call->id, &r);
            continue;
        }
        char key[1400];
        snprintf (key, sizeof key, "%s:%s", call->name, target);
        bool ask = (strcmp (t->mode, "ask") == 0 && (writes || runs)) ||
                   (strcmp (t->mode, "edit") == 0 && runs);
        if (ask && !allowed_always (t, key)) {
            ask_permission (t, call, title[0] ? title : call->name, target);
            return;
        }
        if (!run_tool (t, call)) return; //  a command runs
    }
    close_round (t, NULL);
    model_call (t);
}

void wrk_turn_permission (wrk_server_t *self, const proto_w_perm_answer_t *ans)
{
    wrk_turn_t *t = find (self, &ans->turn);
    if (!t || t->state != TURN_WAIT_PERM || strcmp (ans->request_id, t->perm_id) != 0)
        return;
    const wrk_tool_call_t *call = wrk_reply_tool (t->reply, t->tool_index);
    t->state = TURN_TOOLS;
    bool allowed = ans->kind && strncmp (ans->kind, "allow_", 6) == 0;
    if (!allowed) {
        wrk_tool_result_t r = {0};
        wrk_tool_result_error (&r, ans->option_id
                                       ? "the user refused this tool call"
                                       : "the permission request was not answered; "
                                         "the tool did not run");
        complete_tool (t, call->id, &r);
        next_tool (t);
        return;
    }
    if (strcmp (ans->kind, "allow_always") == 0) {
        char title[8], target[1024] = "";
        char key[1400];
        wrk_tool_describe (&t->scope, call->name, call->input, title, sizeof title,
                           target, sizeof target);
        snprintf (key, sizeof key, "%s:%s", call->name, target);
        json_array_append_new (t->allow, json_string (key));
    }
    if (run_tool (t, call)) next_tool (t);
}

void wrk_turn_on_exec (wrk_turn_t *t)
{
    if (t->state == TURN_FINISHED || !t->exec ||
        wrk_exec_service (t->exec, cm_mono_ms ()) == 0)
        return;
    wrk_tool_result_t r = {0};
    if (wrk_exec_result (t->exec, &r))
        wrk_tool_result_error (&r, "the command's result was lost");
    wrk_exec_destroy (&t->exec);
    t->exec_fds[0] = t->exec_fds[1] = -1; //  closed by wrk_exec; epoll forgets them
    t->state = TURN_TOOLS;
    t->mem_peak = 0;
    if (t->mem_msg) { //  the memory limit killed it (wrk_memlimit.c): the turn fails
        wrk_memlimit_result (t, &r);
        complete_tool (t, t->exec_call_id, &r);
        finish (t, "failed", CM_E_MEMORY_LIMIT, t->mem_msg, false);
        return;
    }
    complete_tool (t, t->exec_call_id, &r);
    next_tool (t);
}

/* ---------------------------------------------------------------- */
/*  Cancel, timers                                                   */

void wrk_turn_cancel (wrk_server_t *self, const cm_uuid_t *id)
{
    wrk_turn_t *t = find (self, id);
    if (!t || t->cancelled) return;
    t->cancelled = true;
    if (t->call) {
        wrk_call_cancel (self->http, t->call);
        t->call = NULL;
    }
    if (t->exec) {
        //  SIGKILL to the whole group, then reap: nothing survives.
        wrk_exec_cancel (t->exec);
        wrk_exec_destroy (&t->exec);
        t->exec_fds[0] = t->exec_fds[1] = -1;
    }
    finish (t, "cancelled", 0, NULL, false);
}

int64_t wrk_turns_next_deadline (wrk_server_t *self)
{
    int64_t next = wrk_memlimit_deadline (self);
    for (wrk_turn_t *t = self->turns; t; t = t->next)
        if (t->exec) {
            int64_t d = wrk_exec_deadline (t->exec);
            if (d < next) next = d;
        }
    return next;
}

void wrk_turns_tick (wrk_server_t *self, int64_t now)
{
    wrk_memlimit_tick (self, now);
    wrk_turn_t *t = self->turns;
    while (t) {
        wrk_turn_t *next = t->next; //  t may end here
        if (t->exec && wrk_exec_deadline (t->exec) <= now) wrk_turn_on_exec (t);
        t = next;
    }
}

void wrk_turns_fini (wrk_server_t *self)
{
    wrk_turns_reap (self);
    while (self->turns) {
        wrk_turn_t *t = self->turns;
        self->turns = t->next;
        turn_free (t);
    }
    self->nturns = 0;
}
