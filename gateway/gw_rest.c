/*  gw_rest.c - REST over the ACP handlers (DESIGN §6, docs/openapi.yaml).

    Each route builds the params of an ACP method from the URL and the
    body and runs it through gw_acp_dispatch, so REST and ACP share the
    checks, the rate limit, the bus calls and the error messages; the
    handler's answer comes back through gw_http_respond, shaped here per
    route (gw_rest_result).  Two routes have no ACP method and make their
    own bus call: GET /v1/sessions/{id} (session.load) and the event
    stream (session.attach, then a watch).

    The event stream uses the watch machinery of WebSocket clients
    (gw_watch.c): store catch-up, then live events, gap repair, and the
    connection's bounded queue (a slow reader falls back to the store, and
    one that stops reading is closed).  Every event reaches
    gw_http_on_event and goes out as one JSON line or one SSE record.
    Without follow the stream ends after the session's last seq as seen
    when the request arrived; with follow (always for SSE) it stays open.

    POST /v1/sessions/{id}/prompt waits for the turn's end, like
    session/prompt: the answer comes after every event of the turn was
    read.  With ?wait=false it answers 202 as soon as the session service
    stored the prompt (its user_message event, found by the idempotency
    key), or the error when it refused it.

    POST /v1/sessions/{id}/permission answers a pending permission request
    (_corral/session/permission): a REST client finds the request in the
    event stream (a permission_request event: requestId and options) and
    answers it here, first answer wins, as over ACP.
*/
#include <stdlib.h>
#include <string.h>

#include "cm_log.h"
#include "cm_time.h"
#include "gw_rest.h"
#include "gw_render.h"

/* ---- argument parsing ---------------------------------------------------- */

//  A non-negative decimal integer; false when text is not one.
static bool parse_u64 (const char *text, uint64_t *out)
{
    if (!*text || strlen (text) > 19) return false;
    uint64_t v = 0;
    for (const char *p = text; *p; p++) {
        if (*p < '0' || *p > '9') return false;
        v = v * 10 + (uint64_t)(*p - '0');
    }
    *out = v;
    return true;
}

//  "", "1", "true", "0", "false" (absent: dflt); -1 for anything else.
static int parse_bool (const char *text, bool dflt)
{
    if (!*text) return dflt;
    if (strcmp (text, "1") == 0 || strcmp (text, "true") == 0) return 1;
    if (strcmp (text, "0") == 0 || strcmp (text, "false") == 0) return 0;
    return -1;
}

static json_t *session_params (gw_http_t *h)
{
    return json_pack ("{s:s}", "sessionId", h->session_text);
}

/* ---- results ------------------------------------------------------------- */

void gw_rest_result (gw_server_t *self, gw_conn_t *conn, json_t *result)
{
    gw_http_t *h = conn->http;
    if (!h || h->ready) return;
    switch (h->route) {
    case GW_R_CREATE: {
        const char *id = json_string_value (json_object_get (result, "sessionId"));
        if (id) gw_http_header (conn, "location:", "/v1/sessions/%s", id);
        gw_http_reply (self, conn, 201, result);
        return;
    }
    case GW_R_DELETE:
        gw_http_reply (self, conn, 204, NULL);
        return;
    case GW_R_PROMPT: {
        json_t *r = json_deep_copy (result);
        if (!r) r = json_object ();
        json_object_set_new (r, "sessionId", json_string (h->session_text));
        json_object_set_new (r, "idempotencyKey", json_string (h->idem));
        //  The seq of the last event read for this request: the turn's
        //  turn_ended (or later); GET .../events?after= continues from it.
        gw_watch_t *w = gw_watch_find (conn, &h->session);
        if (w && w->next > 1)
            json_object_set_new (r, "lastSeq", json_integer ((json_int_t)(w->next - 1)));
        gw_http_reply (self, conn, 200, r);
        json_decref (r);
        return;
    }
    default:
        gw_http_reply (self, conn, 200, result);
    }
}

/* ---- GET/POST /v1/sessions ---------------------------------------------------------- */

void gw_rest_list (gw_server_t *self, gw_conn_t *conn)
{
    gw_http_t *h = conn->http;
    json_t *p = json_object ();
    if (*h->arg_cursor) json_object_set_new (p, "cursor", json_string (h->arg_cursor));
    if (h->has_cwd) json_object_set_new (p, "cwd", json_string (h->arg_cwd));
    if (*h->arg_limit) {
        uint64_t limit = 0;
        if (!parse_u64 (h->arg_limit, &limit) || limit < 1 || limit > 1000) {
            json_decref (p);
            gw_http_reply_error (self, conn, CM_E_INVALID,
                                 "limit must be an integer from 1 to 1000", NULL);
            return;
        }
        json_object_set_new (p, "_meta", json_pack ("{s:I}", "limit", (json_int_t)limit));
    }
    gw_http_dispatch (self, conn, "session/list", p);
}

void gw_rest_create (gw_server_t *self, gw_conn_t *conn)
{
    json_t *b = conn->http->json;
    static const char *const optional[] = {"title", "project", "backend", "model",
                                           "mode"};
    json_t *meta = json_object ();
    for (size_t i = 0; i < sizeof optional / sizeof optional[0]; i++) {
        json_t *v = json_object_get (b, optional[i]);
        if (!v || json_is_null (v)) continue;
        if (!json_is_string (v)) {
            char msg[96];
            snprintf (msg, sizeof msg, "%s must be a string", optional[i]);
            json_decref (meta);
            gw_http_reply_error (self, conn, CM_E_INVALID, msg, NULL);
            return;
        }
        json_object_set (meta, optional[i], v);
    }
    json_t *cwd = json_object_get (b, "cwd");
    json_t *p = json_pack ("{s:[], s:o}", "mcpServers", "_meta", meta);
    if (cwd) json_object_set (p, "cwd", cwd);
    gw_http_dispatch (self, conn, "session/new", p);
}

/* ---- GET/DELETE /v1/sessions/{id} ----------------------------------------------------- */

static void on_loaded (gw_server_t *self, void *arg, int rc, proto_msg_t *reply)
{
    gw_conn_t *conn = gw_http_find (self, *(uint64_t *)arg);
    free (arg);
    if (!conn) return;
    proto_session_rec_t *rec = gw_acp_reply_session (rc, reply);
    if (!rec) {
        gw_acp_bus_error (self, conn, NULL, rc ? rc : CM_E_INTERNAL, reply);
        return;
    }
    json_t *r = gw_render_session_rest (rec);
    gw_http_reply (self, conn, 200, r);
    json_decref (r);
}

void gw_rest_get (gw_server_t *self, gw_conn_t *conn)
{
    gw_http_t *h = conn->http;
    self->stats.requests++;
    if (!gw_http_take_rate (self, conn)) return;
    proto_tenant_id_req_t req = {.tenant = gw_acp_tenant (conn), .id = h->session};
    uint64_t *box = gw_http_box (conn);
    if (!box || gw_call_session (self, PROTO_SESSION_LOAD, &req, GW_CALL_TIMEOUT_MS,
                                 on_loaded, box, free)) {
        free (box);
        gw_http_reply_error (self, conn, CM_E_INTERNAL, NULL, NULL);
    }
}

void gw_rest_delete (gw_server_t *self, gw_conn_t *conn)
{
    gw_http_dispatch (self, conn, "session/delete", session_params (conn->http));
}

void gw_rest_cancel (gw_server_t *self, gw_conn_t *conn)
{
    gw_http_dispatch (self, conn, "session/cancel", session_params (conn->http));
}

void gw_rest_close (gw_server_t *self, gw_conn_t *conn)
{
    gw_http_dispatch (self, conn, "session/close", session_params (conn->http));
}

//  {requestId, outcome} as _corral/session/permission takes them.
void gw_rest_permission (gw_server_t *self, gw_conn_t *conn)
{
    gw_http_t *h = conn->http;
    json_t *p = json_pack ("{s:s, s:O?, s:O?}", "sessionId", h->session_text, "requestId",
                           json_object_get (h->json, "requestId"), "outcome",
                           json_object_get (h->json, "outcome"));
    gw_http_dispatch (self, conn, "_corral/session/permission", p);
}

/* ---- POST /v1/sessions/{id}/prompt ----------------------------------------------------- */

void gw_rest_prompt (gw_server_t *self, gw_conn_t *conn)
{
    gw_http_t *h = conn->http;
    json_t *b = h->json;
    int wait = parse_bool (h->arg_wait, true);
    if (wait < 0) {
        gw_http_reply_error (self, conn, CM_E_INVALID, "wait must be true or false",
                             NULL);
        return;
    }
    h->nowait = !wait;
    json_t *prompt = json_object_get (b, "prompt");
    json_t *blocks;
    if (json_is_string (prompt))
        blocks = json_pack ("[{s:s, s:O}]", "type", "text", "text", prompt);
    else if (json_is_array (prompt))
        blocks = json_incref (prompt);
    else {
        gw_http_reply_error (
            self, conn, CM_E_INVALID,
            "prompt is required: a text, or an array of ACP content blocks such as "
            "[{\"type\":\"text\",\"text\":\"...\"}]",
            NULL);
        return;
    }
    json_t *idem = json_object_get (b, "idempotencyKey");
    if (idem && !json_is_null (idem)) {
        const char *text = json_string_value (idem);
        if (!text || !*text || strlen (text) > IDEM_MAX) {
            json_decref (blocks);
            gw_http_reply_error (self, conn, CM_E_INVALID,
                                 "idempotencyKey must be a text of 1 to 128 characters",
                                 NULL);
            return;
        }
        snprintf (h->idem, sizeof h->idem, "%s", text);
    } else {
        //  Ours, so the answer can say which prompt it was (and ?wait=false
        //  can find its user_message).
        cm_uuid_t u;
        cm_uuid7 (&u);
        cm_uuid_fmt (&u, h->idem);
    }
    if (!gw_watch_find (conn, &h->session)) {
        //  session/prompt attaches this connection first: detach at the end.
        h->attached = true;
        snprintf (h->tenant, sizeof h->tenant, "%s", gw_acp_tenant (conn));
    }
    json_t *p = json_pack ("{s:s, s:o, s:{s:s}}", "sessionId", h->session_text, "prompt",
                           blocks, "_meta", "idempotencyKey", h->idem);
    gw_http_dispatch (self, conn, "session/prompt", p);
    if (h->ready) h->attached = false; //  refused before anything was attached
}

/* ---- GET /v1/sessions/{id}/events ------------------------------------------------------- */

//  The head is known: answer, or start the stream from after.
static void stream_from (gw_server_t *self, gw_conn_t *conn, uint64_t head)
{
    gw_http_t *h = conn->http;
    if (h->after > head) {
        json_t *detail =
            json_pack ("{s:I, s:s}", "lastSeq", (json_int_t)head, "epoch", self->epoch);
        gw_http_reply_error (self, conn, CM_E_EXPIRED,
                             "after is past the end of this session's history (another "
                             "store epoch?); start again from 0",
                             detail);
        json_decref (detail);
        return;
    }
    if (*self->epoch) gw_http_header (conn, "x-corral-epoch:", "%s", self->epoch);
    gw_http_header (conn, "x-corral-last-seq:", "%llu", (unsigned long long)head);
    const char *ctype = h->sse ? "text/event-stream" : "application/x-ndjson";
    if (!h->follow && h->after >= head) {
        gw_http_reply_text (self, conn, 200, ctype, strdup (""));
        return;
    }
    h->until = head;
    gw_watch_t *w = gw_watch_new (self, conn, &h->session, h->after);
    if (!w) {
        gw_http_reply_error (self, conn, CM_E_NOMEM, NULL, NULL);
        return;
    }
    gw_http_stream_begin (self, conn, 200, ctype);
    if (h->sse && !h->chunked) lws_http_mark_sse (conn->wsi); //  HTTP/2: immortal stream
    gw_watch_pump (self, w);
}

//  The store's head: the session record may lag its events by a write.
static void on_head (gw_server_t *self, void *arg, int rc, proto_msg_t *reply)
{
    gw_conn_t *conn = gw_http_find (self, *(uint64_t *)arg);
    free (arg);
    if (!conn) return;
    proto_events_reply_t *r = rc == 0 && reply ? proto_body (reply, events_reply) : NULL;
    if (!r) {
        gw_http_reply_error (self, conn, CM_E_UNAVAILABLE,
                             "the event history could not be read; retry in a moment",
                             NULL);
        return;
    }
    stream_from (self, conn,
                 r->last_seq > conn->http->until ? r->last_seq : conn->http->until);
}

static void on_attached (gw_server_t *self, void *arg, int rc, proto_msg_t *reply)
{
    gw_conn_t *conn = gw_http_find (self, *(uint64_t *)arg);
    free (arg);
    if (!conn) return;
    gw_http_t *h = conn->http;
    proto_session_rec_t *rec = gw_acp_reply_session (rc, reply);
    if (!rec) {
        gw_acp_bus_error (self, conn, NULL, rc ? rc : CM_E_INTERNAL, reply);
        return;
    }
    h->attached = true;
    snprintf (h->tenant, sizeof h->tenant, "%s", gw_acp_tenant (conn));
    h->until = rec->last_seq; //  the record's view, until the store's is in
    proto_events_range_t req = {
        .session = h->session, .after_seq = rec->last_seq, .limit = 1};
    uint64_t *box = gw_http_box (conn);
    if (!box ||
        gw_call_store (self, PROTO_STORE_EVENTS_RANGE, &req, on_head, box, free)) {
        free (box);
        gw_http_reply_error (self, conn, CM_E_INTERNAL, NULL, NULL);
    }
}

void gw_rest_events (gw_server_t *self, gw_conn_t *conn)
{
    gw_http_t *h = conn->http;
    h->sse = h->accept_sse;
    int follow = parse_bool (h->arg_follow, false);
    if (follow < 0) {
        gw_http_reply_error (self, conn, CM_E_INVALID, "follow must be 1 or 0", NULL);
        return;
    }
    h->follow = follow || h->sse; //  an EventSource reconnects: it always follows
    const char *after = h->has_last_event_id ? h->last_event_id : h->arg_after;
    if (*after && !parse_u64 (after, &h->after)) {
        gw_http_reply_error (
            self, conn, CM_E_INVALID,
            h->has_last_event_id
                ? "Last-Event-ID must be an event seq (a non-negative integer)"
                : "after must be a non-negative integer: the last seq you have, 0 for "
                  "all",
            NULL);
        return;
    }
    self->stats.requests++;
    if (!*self->epoch) { //  positions mean nothing before the store's epoch is known
        gw_http_reply_error (self, conn, CM_E_UNAVAILABLE,
                             "the gateway is still connecting to the store; retry in a "
                             "moment",
                             NULL);
        return;
    }
    if (!gw_http_take_rate (self, conn)) return;
    char conn_text[32];
    snprintf (conn_text, sizeof conn_text, "%llu", (unsigned long long)conn->id);
    proto_attach_req_t req = {
        .tenant = gw_acp_tenant (conn), .id = h->session, .conn = conn_text};
    uint64_t *box = gw_http_box (conn);
    if (!box || gw_call_session (self, PROTO_SESSION_ATTACH, &req, GW_CALL_TIMEOUT_MS,
                                 on_attached, box, free)) {
        free (box);
        gw_http_reply_error (self, conn, CM_E_INTERNAL, NULL, NULL);
    }
}

void gw_http_on_event (gw_server_t *self, gw_conn_t *conn, gw_ev_t *ev)
{
    gw_http_t *h = conn->http;
    if (!h || h->done) return;
    if (h->route == GW_R_PROMPT) {
        //  ?wait=false: the prompt is stored; answer now.
        if (h->nowait && !h->ready && ev->type == PROTO_EV_USER_MESSAGE && ev->idem &&
            strcmp (ev->idem, h->idem) == 0) {
            char turn[40] = "";
            if (ev->has_turn) cm_uuid_fmt (&ev->turn, turn);
            json_t *r = json_pack ("{s:s, s:s, s:s, s:I}", "status", "accepted",
                                   "sessionId", h->session_text, "idempotencyKey",
                                   h->idem, "seq", (json_int_t)ev->seq);
            if (*turn) json_object_set_new (r, "turnId", json_string (turn));
            gw_http_reply (self, conn, 202, r);
            json_decref (r);
        }
        return;
    }
    if (h->route != GW_R_EVENTS || !h->streaming || !ev->rest) return;
    cm_strbuf_t b = {0};
    if (h->sse)
        cm_strbuf_putf (&b, "id: %llu\nevent: %s\ndata: %s\n\n",
                        (unsigned long long)ev->seq, proto_type_name (ev->type),
                        ev->rest);
    else
        cm_strbuf_putf (&b, "%s\n", ev->rest);
    if (b.oom) {
        cm_strbuf_free (&b);
        gw_conn_close (self, conn, 1011, "server out of memory");
        return;
    }
    gw_http_stream_put (self, conn, b.p, b.len);
    cm_strbuf_free (&b);
    self->stats.events_out++;
    if (!h->follow && ev->seq >= h->until) gw_http_stream_end (self, conn);
}

/* ---- timers and the end of a request --------------------------------------------------- */

void gw_rest_tick (gw_server_t *self, gw_conn_t *conn, int64_t now)
{
    gw_http_t *h = conn->http;
    if (self->stopping) {
        //  A stream ends cleanly (a client resumes with after= or
        //  Last-Event-ID elsewhere); a waiting request hears why.
        if (h->streaming) {
            gw_http_stream_end (self, conn);
            return;
        }
        gw_http_reply_error (self, conn, CM_E_UNAVAILABLE,
                             h->route == GW_R_PROMPT
                                 ? "the gateway is shutting down; the turn goes on: read "
                                   "its events with GET /v1/sessions/{id}/events"
                                 : "the gateway is shutting down; retry",
                             NULL);
        return;
    }
    if (!h->streaming) return;
    if (!h->follow) {
        //  An event the gateway could not render is skipped without a
        //  call here: end by position as well.
        gw_watch_t *w = gw_watch_find (conn, &h->session);
        if (w && w->next > h->until) {
            gw_http_stream_end (self, conn);
            return;
        }
    }
    if (h->sse && now - h->last_tx_ms >= GW_HTTP_KEEPALIVE_MS) {
        static const char ka[] = ": keep-alive\n\n";
        gw_http_stream_put (self, conn, ka, sizeof ka - 1);
    }
}

void gw_rest_end (gw_server_t *self, gw_conn_t *conn)
{
    gw_http_t *h = conn->http;
    if (!h || !h->attached) return;
    h->attached = false;
    if (self->stopping) return;
    char conn_text[32];
    snprintf (conn_text, sizeof conn_text, "%llu", (unsigned long long)conn->id);
    proto_attach_req_t req = {.tenant = h->tenant, .id = h->session, .conn = conn_text};
    gw_call_session (self, PROTO_SESSION_DETACH, &req, GW_CALL_TIMEOUT_MS, NULL, NULL,
                     NULL);
}

/* ---- POST /v1/login, /v1/logout ----------------------------------------------------------- */

void gw_rest_login (gw_server_t *self, gw_conn_t *conn)
{
    gw_http_t *h = conn->http;
    const char *key = json_string_value (json_object_get (h->json, "key"));
    if (!key) {
        gw_http_reply_error (self, conn, CM_E_INVALID,
                             "key is required: {\"key\": \"crl_...\"}", NULL);
        return;
    }
    uint8_t hash[GW_AUTH_HASH_LEN];
    if (strlen (key) >= sizeof h->login_key || gw_auth_key_hash (key, hash)) {
        gw_http_reply_error (
            self, conn, CM_E_UNAUTHORIZED,
            "the API key was not accepted; check it or ask for a new one", NULL);
        return;
    }
    snprintf (h->login_key, sizeof h->login_key, "%s", key);
    if (conn->key) { //  a key in the headers too: this one counts
        gw_keys_release (self, conn->key);
        conn->key = NULL;
    }
    if (!gw_keys_acquire (self, conn, hash)) {
        if (strcmp (conn->close_reason, "limited") == 0)
            gw_http_reply_no_key (self, conn);
        else
            gw_http_reply_error (self, conn, CM_E_NOMEM, NULL, NULL);
        return;
    }
    if (conn->auth != GW_AUTH_PENDING) gw_rest_login_done (self, conn);
}

void gw_rest_login_done (gw_server_t *self, gw_conn_t *conn)
{
    gw_http_t *h = conn->http;
    if (conn->auth == GW_AUTH_OK && *h->login_key) {
        gw_http_header (conn, "set-cookie:", "%s=%s; HttpOnly; SameSite=Strict; Path=/%s",
                        GW_AUTH_COOKIE_NAME, h->login_key, h->tls ? "; Secure" : "");
        gw_http_reply (self, conn, 204, NULL);
    } else
        gw_http_reply_no_key (self, conn);
    memset (h->login_key, 0, sizeof h->login_key);
}

void gw_rest_logout (gw_server_t *self, gw_conn_t *conn)
{
    gw_http_header (conn,
                    "set-cookie:", "%s=; Max-Age=0; HttpOnly; SameSite=Strict; Path=/%s",
                    GW_AUTH_COOKIE_NAME, conn->http->tls ? "; Secure" : "");
    gw_http_reply (self, conn, 204, NULL);
}
