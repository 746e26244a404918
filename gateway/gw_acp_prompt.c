/*  gw_acp_prompt.c - session/prompt (answered from the event stream, after
    this connection was sent every event of the turn) and $/cancel_request.
    See gw_acp.h and gw_watch.c.
*/
#include <stdlib.h>
#include <string.h>

#include "cm_log.h"
#include "cm_time.h"
#include "gw_acp.h"
#include "gw_http.h"
#include "gw_render.h"
#include "gw_rpc.h"

/* ---- session/prompt --------------------------------------------------------------------- */

static gw_wait_t *find_prompt_wait (gw_conn_t *conn, const cm_uuid_t *session,
                                    const char *idem, gw_watch_t **w_p)
{
    gw_watch_t *w = gw_watch_find (conn, session);
    if (!w) return NULL;
    for (gw_wait_t *wait = w->waits; wait; wait = wait->next)
        if (wait->kind == GW_WAIT_PROMPT && wait->idem &&
            strcmp (wait->idem, idem) == 0) {
            *w_p = w;
            return wait;
        }
    return NULL;
}

static void on_prompted (gw_server_t *self, void *arg, int rc, proto_msg_t *reply)
{
    ctx_t *c = arg;
    gw_conn_t *conn = gw_acp_ctx_conn (self, c);
    if (!conn) return;
    gw_watch_t *w = NULL;
    gw_wait_t *wait = find_prompt_wait (conn, &c->session, c->idem, &w);
    if (!wait) { //  answered already (from the stream), or detached
        gw_acp_ctx_free (c);
        return;
    }
    proto_prompt_reply_t *r = rc == 0 && reply ? proto_body (reply, prompt_reply) : NULL;
    if (!r) {
        //  Refused before the turn began (busy, closed, capacity ...).
        for (gw_wait_t **p = &w->waits; *p; p = &(*p)->next)
            if (*p == wait) {
                *p = wait->next;
                break;
            }
        gw_acp_bus_error (self, conn, c->id, rc ? rc : CM_E_INTERNAL, reply);
        gw_wait_free (wait);
        gw_acp_ctx_free (c);
        return;
    }
    if (!wait->result && !wait->err) {
        if (strcmp (r->stop_reason, "failed") == 0) {
            wait->err = r->code < 0 ? (int)r->code : CM_E_INTERNAL;
            if ((wait->err == CM_E_MEMORY_LIMIT || wait->err == CM_E_BUDGET) &&
                r->message)
                wait->err_msg = strdup (r->message);
        } else if (strcmp (r->stop_reason, "interrupted") == 0) {
            wait->err = CM_E_UNAVAILABLE;
            wait->err_msg =
                strdup ("the turn was interrupted by a restart of the session "
                        "service; send the prompt again");
        } else
            wait->result = json_pack ("{s:s}", "stopReason", r->stop_reason);
    }
    wait->has_turn = true;
    wait->turn = r->turn;
    if (!wait->known || wait->until < r->last_seq) wait->until = r->last_seq;
    wait->known = true;
    //  Re-queue the wait: answers now if the stream is past the turn's end,
    //  else reads the store for the tail.
    for (gw_wait_t **p = &w->waits; *p; p = &(*p)->next)
        if (*p == wait) {
            *p = wait->next;
            break;
        }
    gw_watch_add_wait (self, w, wait);
    gw_acp_ctx_free (c);
}

static void send_prompt (gw_server_t *self, gw_conn_t *conn, ctx_t *c)
{
    gw_watch_t *w = gw_watch_find (conn, &c->session);
    gw_wait_t *wait = w ? calloc (1, sizeof *wait) : NULL;
    if (!wait) {
        gw_send_error (self, conn, c->id, CM_E_NOMEM, NULL);
        gw_acp_ctx_free (c);
        return;
    }
    wait->kind = GW_WAIT_PROMPT;
    wait->id = c->id ? json_incref (c->id) : NULL;
    wait->idem = strdup (c->idem);
    gw_watch_add_wait (self, w, wait);
    char conn_text[32];
    snprintf (conn_text, sizeof conn_text, "%llu", (unsigned long long)conn->id);
    proto_session_prompt_t req = {.tenant = gw_acp_tenant (conn),
                                  .id = c->session,
                                  .idem = c->idem,
                                  .prompt = c->text,
                                  .conn = conn_text};
    if (conn->key) { //  the key's usage and budgets (sess_budget.c)
        req.key = conn->key->id;
        req.key_budget_tokens = conn->key->budget_tokens;
        req.key_budget_micros = conn->key->budget_micros;
    }
    if (gw_call_session (self, PROTO_SESSION_PROMPT, &req, GW_PROMPT_TIMEOUT_MS,
                         on_prompted, c, gw_acp_ctx_drop)) {
        gw_acp_ctx_free (c);
        gw_send_error (self, conn, wait->id, CM_E_INTERNAL, NULL);
    }
}

//  Prompting a session this connection does not watch yet: attach at the
//  head first (tenant checked by the session service), then prompt.
static void on_prompt_attached (gw_server_t *self, void *arg, int rc, proto_msg_t *reply)
{
    ctx_t *c = arg;
    gw_conn_t *conn;
    proto_session_rec_t *rec = gw_acp_ctx_session (self, c, rc, reply, &conn);
    if (!rec) return;
    if (!gw_watch_find (conn, &rec->id)) {
        gw_watch_t *w = gw_watch_new (self, conn, &rec->id, rec->last_seq);
        if (w) {
            gw_watch_pending_perm (self, w, gw_acp_reply_perm_seq (reply));
            gw_watch_pump (self, w);
        }
    }
    send_prompt (self, conn, c);
}

void gw_acp_prompt (gw_server_t *self, gw_conn_t *conn, gw_rpc_msg_t *msg)
{
    ctx_t *c = gw_acp_ctx_new (conn, msg->id);
    if (!c) {
        gw_send_error (self, conn, msg->id, CM_E_NOMEM, NULL);
        return;
    }
    if (gw_acp_param_session (self, conn, msg, &c->session)) {
        gw_acp_ctx_free (c);
        return;
    }
    json_t *prompt = json_object_get (msg->params, "prompt");
    if (!json_is_array (prompt) || !json_array_size (prompt) ||
        json_array_size (prompt) > PROMPT_MAX) {
        gw_send_error (self, conn, msg->id, CM_E_INVALID,
                       "params.prompt must be an array of 1 to 64 content blocks, e.g. "
                       "[{\"type\":\"text\",\"text\":\"...\"}]");
        gw_acp_ctx_free (c);
        return;
    }
    size_t i;
    json_t *block;
    json_array_foreach (prompt, i, block)
    {
        if (!json_is_string (json_object_get (block, "type"))) {
            gw_send_error (self, conn, msg->id, CM_E_INVALID,
                           "every prompt content block needs a string \"type\"");
            gw_acp_ctx_free (c);
            return;
        }
    }
    //  A client may name its own idempotency key (safe retries); else one
    //  per request.
    const char *idem =
        gw_acp_param_str (json_object_get (msg->params, "_meta"), "idempotencyKey");
    char gen[37];
    if (idem && (!*idem || strlen (idem) > IDEM_MAX)) {
        gw_send_error (self, conn, msg->id, CM_E_INVALID,
                       "_meta.idempotencyKey must be 1 to 128 characters");
        gw_acp_ctx_free (c);
        return;
    }
    if (!idem) {
        cm_uuid_t u;
        cm_uuid7 (&u);
        idem = cm_uuid_fmt (&u, gen);
    }
    c->idem = strdup (idem);
    c->text = json_dumps (prompt, JSON_COMPACT);
    gw_watch_t *w = NULL;
    if (find_prompt_wait (conn, &c->session, c->idem, &w)) {
        gw_send_error (self, conn, msg->id, CM_E_BUSY,
                       "a prompt with this idempotency key is already running on this "
                       "connection");
        gw_acp_ctx_free (c);
        return;
    }
    if (gw_watch_find (conn, &c->session)) {
        send_prompt (self, conn, c);
        return;
    }
    char conn_text[32];
    snprintf (conn_text, sizeof conn_text, "%llu", (unsigned long long)conn->id);
    proto_attach_req_t req = {
        .tenant = gw_acp_tenant (conn), .id = c->session, .conn = conn_text};
    if (gw_call_session (self, PROTO_SESSION_ATTACH, &req, GW_CALL_TIMEOUT_MS,
                         on_prompt_attached, c, gw_acp_ctx_drop)) {
        gw_acp_ctx_free (c);
        gw_send_error (self, conn, msg->id, CM_E_INTERNAL, NULL);
    }
}

/* ---- $/cancel_request ----------------------------------------------------------------- */

void gw_acp_cancel_request (gw_server_t *self, gw_conn_t *conn, gw_rpc_msg_t *msg)
{
    json_t *rid = json_object_get (msg->params, "requestId");
    if (!json_is_string (rid) && !json_is_integer (rid)) return;
    gw_watch_t *w = NULL;
    gw_wait_t *wait = gw_watch_find_wait (conn, rid, &w);
    if (!wait) return; //  finished already: nothing to cancel
    for (gw_wait_t **p = &w->waits; *p; p = &(*p)->next)
        if (*p == wait) {
            *p = wait->next;
            break;
        }
    gw_send_error (self, conn, wait->id, CM_E_CANCELLED, NULL);
    if (wait->kind == GW_WAIT_PROMPT) {
        proto_tenant_id_req_t req = {.tenant = gw_acp_tenant (conn), .id = w->sub->id};
        gw_call_session (self, PROTO_SESSION_CANCEL, &req, GW_CALL_TIMEOUT_MS, NULL, NULL,
                         NULL);
        gw_wait_free (wait);
    } else {
        gw_wait_free (wait);
        if (!w->waits) { //  an abandoned load leaves nothing behind
            gw_watch_withdraw_perm (self, w);
            gw_watch_free (self, w);
        }
    }
}
