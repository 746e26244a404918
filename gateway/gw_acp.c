/*  gw_acp.c - the ACP method table (DESIGN §6), Redis-style: one row per
    method with its handler and flags; one dispatcher checks what every
    method shares (initialize first, a key, the key's rate limit, params
    shape) before the handler runs, and every failure becomes a JSON-RPC
    error from the one table in gw_rpc.c.

    Handlers that need the session service or the store send a bus request
    with a continuation (ctx_t) naming the connection by id, never by
    pointer: a connection may close before its answer comes back.

    REST runs the same handlers: gw_http.c builds the params from the URL
    and body, and gw_send_result / gw_send_error route the answer to the
    HTTP response instead of a WebSocket frame.
*/

#include <stdlib.h>
#include <string.h>

#include "cm_log.h"
#include "cm_time.h"
#include "gw_acp.h"
#include "gw_http.h"
#include "gw_render.h"
#include "gw_rpc.h"

#define F_INIT   0x01 //  needs initialize first (WebSocket)
#define F_AUTH   0x02 //  needs an accepted key
#define F_NOTIFY 0x04 //  may come as a notification
#define F_REQ    0x08 //  may come as a request
#define F_RATE   0x10 //  counts against the key's rate limit

/* ---- answers ---------------------------------------------------------------- */

void gw_send_result (gw_server_t *self, gw_conn_t *conn, json_t *id, json_t *result)
{
    if (conn->kind == GW_CONN_HTTP) {
        gw_http_respond (self, conn, result, 0, NULL);
        return;
    }
    if (!id) return; //  a notification is never answered
    self->stats.responses++;
    gw_conn_send_text (self, conn, gw_rpc_result (id, result));
}

static char *error_text (json_t *id, int cm_code, const char *message, json_t *detail)
{
    char *text = gw_rpc_error_from_cm (id, cm_code, detail);
    if (!text || !message) return text;
    //  Our own, more specific words in place of the table's.
    json_t *obj = json_loads (text, 0, NULL);
    json_t *err = obj ? json_object_get (obj, "error") : NULL;
    if (err && json_object_set_new (err, "message", json_string (message)) == 0) {
        free (text);
        text = json_dumps (obj, JSON_COMPACT);
    }
    json_decref (obj);
    return text;
}

void gw_send_error_detail (gw_server_t *self, gw_conn_t *conn, json_t *id, int cm_code,
                           const char *message, json_t *detail)
{
    self->stats.errors++;
    if (conn->kind == GW_CONN_HTTP) {
        gw_http_respond_error (self, conn, cm_code, message, detail);
        return;
    }
    if (!id) return;
    gw_conn_send_text (self, conn, error_text (id, cm_code, message, detail));
}

void gw_send_error (gw_server_t *self, gw_conn_t *conn, json_t *id, int cm_code,
                    const char *message)
{
    gw_send_error_detail (self, conn, id, cm_code, message, NULL);
}

/* ---- contexts ------------------------------------------------------------------ */

ctx_t *gw_acp_ctx_new (gw_conn_t *conn, json_t *id)
{
    ctx_t *c = calloc (1, sizeof *c);
    if (!c) return NULL;
    c->conn_id = conn->id;
    c->id = id ? json_incref (id) : NULL;
    return c;
}

void gw_acp_ctx_free (ctx_t *c)
{
    if (!c) return;
    json_decref (c->id);
    free (c->idem);
    free (c->text);
    free (c);
}

void gw_acp_ctx_drop (void *c)
{
    gw_acp_ctx_free (c);
}

//  The connection a continuation answers, or NULL (gone: c is freed).
gw_conn_t *gw_acp_ctx_conn (gw_server_t *self, ctx_t *c)
{
    gw_conn_t *conn = gw_conn_find (self, c->conn_id);
    if (!conn || conn->closing) {
        gw_acp_ctx_free (c);
        return NULL;
    }
    return conn;
}

//  A bus error as the client sees it: our services' messages are written
//  for people, so they pass; anything unexpected becomes the table's.
void gw_acp_bus_error (gw_server_t *self, gw_conn_t *conn, json_t *id, int rc,
                       proto_msg_t *reply)
{
    const char *message = NULL;
    proto_error_t *e = reply ? proto_body (reply, error) : NULL;
    if (e && rc != CM_E_INTERNAL) message = e->message;
    if (rc == CM_E_UNAVAILABLE && !e)
        message = "the session service did not answer; retry in a moment";
    gw_send_error (self, conn, id, rc, message);
}

const char *gw_acp_tenant (const gw_conn_t *conn)
{
    return conn->key ? conn->key->tenant : "";
}

/* ---- params ---------------------------------------------------------------------- */

int gw_acp_param_session (gw_server_t *self, gw_conn_t *conn, gw_rpc_msg_t *msg,
                          cm_uuid_t *out)
{
    const char *text = json_string_value (json_object_get (msg->params, "sessionId"));
    if (!text) {
        gw_send_error (self, conn, msg->id, CM_E_INVALID,
                       "params.sessionId is required: the id session/new returned");
        return -1;
    }
    if (cm_uuid_parse (text, out)) {
        //  Not one of ours: no such session, as for any unknown id.
        gw_send_error (self, conn, msg->id, CM_E_NOT_FOUND,
                       "no such session; check the sessionId (session/list shows yours)");
        return -1;
    }
    return 0;
}

const char *gw_acp_param_str (json_t *params, const char *name)
{
    return json_string_value (json_object_get (params, name));
}

json_t *gw_acp_session_setup (const proto_session_rec_t *rec)
{
    json_t *r = json_object ();
    json_object_set_new (r, "modes", gw_render_modes (rec->mode));
    json_t *opts = gw_render_config_options (rec, NULL, 0);
    if (opts) json_object_set_new (r, "configOptions", opts);
    return r;
}

proto_session_rec_t *gw_acp_reply_session (int rc, proto_msg_t *reply)
{
    proto_session_reply_t *r =
        rc == 0 && reply ? proto_body (reply, session_reply) : NULL;
    return r ? r->session : NULL;
}

uint64_t gw_acp_reply_perm_seq (proto_msg_t *reply)
{
    proto_session_reply_t *r = reply ? proto_body (reply, session_reply) : NULL;
    return r ? r->perm_seq : 0;
}

proto_session_rec_t *gw_acp_ctx_session (gw_server_t *self, ctx_t *c, int rc,
                                         proto_msg_t *reply, gw_conn_t **conn_p)
{
    gw_conn_t *conn = *conn_p = gw_acp_ctx_conn (self, c);
    if (!conn) return NULL;
    proto_session_rec_t *rec = gw_acp_reply_session (rc, reply);
    if (!rec) {
        gw_acp_bus_error (self, conn, c->id, rc ? rc : CM_E_INTERNAL, reply);
        gw_acp_ctx_free (c);
    }
    return rec;
}

/* ---- initialize / authenticate ------------------------------------------------------ */

void gw_acp_initialize (gw_server_t *self, gw_conn_t *conn, gw_rpc_msg_t *msg)
{
    json_t *pv = json_object_get (msg->params, "protocolVersion");
    if (!json_is_integer (pv)) {
        gw_send_error (
            self, conn, msg->id, CM_E_INVALID,
            "params.protocolVersion is required (an integer; this server speaks 1)");
        return;
    }
    conn->initialized = true;
    json_t *result = json_pack (
        "{s:i, s:{s:b, s:{s:b, s:b, s:b}, s:{s:b, s:b}, s:{s:{}, s:{}, s:{}, s:{}}},"
        " s:[{s:s, s:s, s:s}], s:{s:s, s:s, s:s}}",
        "protocolVersion", 1, "agentCapabilities", "loadSession", 1, "promptCapabilities",
        "image", 0, "audio", 0, "embeddedContext", 1, "mcpCapabilities", "http", 0, "sse",
        0, "sessionCapabilities", "list", "resume", "close", "delete", "authMethods",
        "id", "corral-api-key", "name", "Corral API key", "description",
        "Send the key as Authorization: Bearer <key>, X-API-Key, ?token= or the "
        "corral_key cookie when connecting",
        "agentInfo", "name", "corral", "title", "Corral", "version", "0.1.0");
    gw_send_result (self, conn, msg->id, result);
    json_decref (result);
}

void gw_acp_authenticate (gw_server_t *self, gw_conn_t *conn, gw_rpc_msg_t *msg)
{
    //  The key travels with the connection (a header, ?token= or the
    //  cookie); authenticate confirms it was accepted.
    if (conn->auth == GW_AUTH_OK) {
        json_t *r = json_object ();
        gw_send_result (self, conn, msg->id, r);
        json_decref (r);
    } else
        gw_send_error (self, conn, msg->id, CM_E_UNAUTHORIZED,
                       conn->auth == GW_AUTH_BAD
                           ? "the API key was not accepted; check it or ask for a new one"
                           : "no API key: reconnect with Authorization: Bearer <key>, "
                             "X-API-Key, ?token= or the corral_key cookie");
}

/* ---- the table and the dispatcher -------------------------------------------------------- */

typedef void (*handler_fn) (gw_server_t *self, gw_conn_t *conn, gw_rpc_msg_t *msg);

static const struct {
    const char *method;
    handler_fn fn;
    unsigned flags;
} s_methods[] = {
    {"initialize", gw_acp_initialize, F_REQ},
    {"authenticate", gw_acp_authenticate, F_REQ | F_INIT},
    {"session/new", gw_acp_new, F_REQ | F_INIT | F_AUTH | F_RATE},
    {"session/load", gw_acp_load, F_REQ | F_INIT | F_AUTH | F_RATE},
    {"session/list", gw_acp_list, F_REQ | F_INIT | F_AUTH | F_RATE},
    {"session/resume", gw_acp_resume, F_REQ | F_INIT | F_AUTH | F_RATE},
    {"session/close", gw_acp_close, F_REQ | F_INIT | F_AUTH | F_RATE},
    {"session/delete", gw_acp_delete, F_REQ | F_INIT | F_AUTH | F_RATE},
    {"session/prompt", gw_acp_prompt, F_REQ | F_INIT | F_AUTH | F_RATE},
    {"session/cancel", gw_acp_cancel, F_REQ | F_NOTIFY | F_INIT | F_AUTH},
    {"session/set_mode", gw_acp_set_mode, F_REQ | F_INIT | F_AUTH | F_RATE},
    {"session/set_config_option", gw_acp_set_config, F_REQ | F_INIT | F_AUTH | F_RATE},
    {"$/cancel_request", gw_acp_cancel_request, F_NOTIFY | F_INIT},
    {"_corral/session/attach", gw_acp_attach, F_REQ | F_INIT | F_AUTH | F_RATE},
    {"_corral/session/detach", gw_acp_detach, F_REQ | F_INIT | F_AUTH},
    {"_corral/session/history", gw_acp_history, F_REQ | F_INIT | F_AUTH | F_RATE},
    {"_corral/session/permission", gw_acp_permission, F_REQ | F_INIT | F_AUTH | F_RATE},
    {"_corral/usage", gw_acp_usage, F_REQ | F_INIT | F_AUTH | F_RATE},
};
#define S_METHODS (sizeof s_methods / sizeof s_methods[0])

//  A WebSocket error with one of JSON-RPC's own codes (-32600, -32601),
//  which are not rows of gw_rpc's cm table.  A notification gets none.
static void send_rpc_error (gw_server_t *self, gw_conn_t *conn, json_t *id, int code,
                            const char *message, json_t *data)
{
    self->stats.errors++;
    if (id) gw_conn_send_text (self, conn, gw_rpc_error (id, code, message, data));
}

void gw_acp_dispatch (gw_server_t *self, gw_conn_t *conn, gw_rpc_msg_t *msg)
{
    bool request = msg->kind == GW_RPC_REQUEST;
    if (request)
        self->stats.requests++;
    else
        self->stats.notifications++;
    size_t i = 0;
    while (i < S_METHODS && strcmp (s_methods[i].method, msg->method) != 0) i++;
    if (i == S_METHODS) {
        static const char msg_text[] = "method not found: see docs/protocol.md for "
                                       "the methods this server serves";
        if (conn->kind == GW_CONN_WS) {
            //  JSON-RPC's own -32601 (the cm table has no such row): data
            //  names the method only when it looks like one.
            const char *m = msg->method;
            size_t n = strspn (m, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                  "0123456789_-.:/$");
            json_t *data = m[n] == 0 && n <= GW_RPC_MAX_METHOD
                               ? json_pack ("{s:s}", "method", m)
                               : NULL;
            send_rpc_error (self, conn, msg->id, GW_RPC_METHOD_NOT_FOUND, msg_text, data);
            json_decref (data);
            return;
        }
        gw_send_error (self, conn, msg->id, CM_E_UNKNOWN_TYPE, msg_text);
        return;
    }
    unsigned flags = s_methods[i].flags;
    if (!(flags & (request ? F_REQ : F_NOTIFY))) {
        if (!request) return; //  a notification is never answered
        gw_send_error (self, conn, msg->id, CM_E_INVALID,
                       "this method is a notification: send it without an id");
        return;
    }
    if ((flags & F_INIT) && !conn->initialized && conn->kind == GW_CONN_WS) {
        send_rpc_error (self, conn, msg->id, GW_RPC_INVALID_REQUEST,
                        "invalid request: call initialize first (ACP: initialize opens "
                        "every connection)",
                        NULL);
        return;
    }
    if ((flags & F_AUTH) && conn->auth != GW_AUTH_OK) {
        gw_send_error (self, conn, msg->id, CM_E_UNAUTHORIZED,
                       conn->auth == GW_AUTH_BAD
                           ? "the API key was not accepted; check it or ask for a new one"
                           : "an API key is required: connect with Authorization: Bearer "
                             "<key>, X-API-Key, ?token= or the corral_key cookie");
        return;
    }
    if ((flags & F_AUTH) && !*self->epoch) {
        //  Positions (_meta.epoch) are meaningless until the store told us
        //  its epoch: a moment after start, or while the store is down.
        gw_send_error (self, conn, msg->id, CM_E_UNAVAILABLE,
                       "the gateway is still connecting to the store; retry in a moment");
        return;
    }
    if ((flags & F_RATE) && conn->key) {
        int64_t retry_ms = 0;
        if (gw_keys_take (self, conn->key, &retry_ms)) {
            json_t *detail = json_pack ("{s:I}", "retryAfterMs", (json_int_t)retry_ms);
            gw_send_error_detail (self, conn, msg->id, CM_E_RATE_LIMITED, NULL, detail);
            json_decref (detail);
            return;
        }
    }
    if (msg->params && !json_is_object (msg->params)) {
        gw_send_error (self, conn, msg->id, CM_E_INVALID,
                       "params must be an object (by-name parameters)");
        return;
    }
    json_t *empty = NULL;
    if (!msg->params) msg->params = empty = json_object ();
    s_methods[i].fn (self, conn, msg);
    if (empty) {
        msg->params = NULL;
        json_decref (empty);
    }
}

static void process (gw_server_t *self, gw_conn_t *conn, const char *data, size_t len)
{
    gw_rpc_limits_t limits = {.max_frame = (size_t)self->cfg->max_frame,
                              .max_depth = (int)self->cfg->max_depth};
    gw_rpc_msg_t *msg = NULL;
    char *reply = NULL;
    if (gw_rpc_parse (data, len, &limits, &msg, &reply)) {
        self->stats.errors++;
        gw_conn_send_text (self, conn, reply);
        return;
    }
    if (msg->kind == GW_RPC_RESULT || msg->kind == GW_RPC_ERROR)
        gw_watch_on_client_response (self, conn, msg->id, msg->result,
                                     msg->kind == GW_RPC_ERROR);
    else
        gw_acp_dispatch (self, conn, msg);
    gw_rpc_msg_destroy (&msg);
}

void gw_acp_on_frame (gw_server_t *self, gw_conn_t *conn, const char *data, size_t len)
{
    if (conn->auth == GW_AUTH_PENDING || !*self->epoch || conn->nheld) {
        //  Hold it until the key is checked and the store's epoch is known
        //  (a moment after start), in order.
        if (conn->nheld == GW_HELD_MAX) {
            gw_conn_close (self, conn, 1008,
                           "too many messages before the API key was checked");
            return;
        }
        char *copy = malloc (len + 1);
        if (!copy) return;
        memcpy (copy, data, len);
        copy[len] = 0;
        conn->held[conn->nheld++] = copy;
        return;
    }
    process (self, conn, data, len);
}

void gw_acp_on_epoch (gw_server_t *self)
{
    for (gw_conn_t *conn = self->all; conn; conn = conn->all_next)
        if (conn->kind == GW_CONN_WS && conn->nheld && conn->auth != GW_AUTH_PENDING &&
            !conn->closing)
            gw_acp_on_auth (self, conn);
}

void gw_acp_on_auth (gw_server_t *self, gw_conn_t *conn)
{
    if (!*self->epoch || conn->auth == GW_AUTH_PENDING)
        return; //  gw_acp_on_epoch runs them once the store answered
    bool transient = strcmp (conn->close_reason, "transient") == 0;
    conn->close_reason[0] = 0;
    for (size_t i = 0; i < conn->nheld; i++) {
        process (self, conn, conn->held[i], strlen (conn->held[i]));
        free (conn->held[i]);
    }
    conn->nheld = 0;
    if (conn->auth == GW_AUTH_BAD) {
        conn->flush_first = true;
        if (transient)
            gw_conn_close (self, conn, 1013,
                           "API keys cannot be checked right now; retry in a moment");
        else
            gw_conn_close (self, conn, 1008, "the API key was not accepted");
    }
}
