/*  gw_acp_session.c - session/new, load, _corral/session/attach, resume,
    detach, list, close, delete, cancel, set_mode, set_config_option.
    See gw_acp.h.
*/
#include <stdlib.h>
#include <string.h>

#include "cm_log.h"
#include "cm_time.h"
#include "gw_acp.h"
#include "gw_http.h"
#include "gw_render.h"
#include "gw_rpc.h"

/* ---- session/new -------------------------------------------------------------------- */

static void on_new (gw_server_t *self, void *arg, int rc, proto_msg_t *reply)
{
    ctx_t *c = arg;
    gw_conn_t *conn;
    proto_session_rec_t *rec = gw_acp_ctx_session (self, c, rc, reply, &conn);
    if (!rec) return;
    json_t *result = gw_acp_session_setup (rec);
    char text[37];
    json_object_set_new (result, "sessionId", json_string (cm_uuid_fmt (&rec->id, text)));
    json_object_set_new (result, "_meta", json_pack ("{s:s}", "epoch", self->epoch));
    gw_send_result (self, conn, c->id, result);
    json_decref (result);
    //  Watch from the start: the client sees session_created and on.
    if (conn->kind == GW_CONN_WS) {
        gw_watch_t *w = gw_watch_new (self, conn, &rec->id, 0);
        if (w) gw_watch_pump (self, w);
    }
    gw_acp_ctx_free (c);
}

void gw_acp_new (gw_server_t *self, gw_conn_t *conn, gw_rpc_msg_t *msg)
{
    json_t *p = msg->params;
    const char *cwd = gw_acp_param_str (p, "cwd");
    if (!cwd || *cwd != '/') {
        gw_send_error (
            self, conn, msg->id, CM_E_INVALID,
            "params.cwd is required: an absolute path inside a workspace root");
        return;
    }
    json_t *mcp = json_object_get (p, "mcpServers");
    if (mcp && json_array_size (mcp)) {
        gw_send_error (
            self, conn, msg->id, CM_E_INVALID,
            "MCP servers are not supported by this server yet; pass mcpServers: []");
        return;
    }
    json_t *meta = json_object_get (p, "_meta");
    proto_session_new_t req = {.tenant = gw_acp_tenant (conn),
                               .cwd = cwd,
                               .title = gw_acp_param_str (meta, "title"),
                               .project = gw_acp_param_str (meta, "project"),
                               .backend = gw_acp_param_str (meta, "backend"),
                               .model = gw_acp_param_str (meta, "model"),
                               .mode = gw_acp_param_str (meta, "mode")};
    ctx_t *c = gw_acp_ctx_new (conn, msg->id);
    if (!c || gw_call_session (self, PROTO_SESSION_NEW, &req, GW_CALL_TIMEOUT_MS, on_new,
                               c, gw_acp_ctx_drop)) {
        gw_acp_ctx_free (c);
        gw_send_error (self, conn, msg->id, CM_E_INTERNAL, NULL);
    }
}

/* ---- session/load, _corral/session/attach, session/resume ------------------------- */

enum { K_LOAD = 1, K_ATTACH, K_RESUME };

//  Watch from after and answer (result, taken) once the replay reaches head.
//  perm_seq: the session's pending permission request (0: none).
static void watch_until (gw_server_t *self, gw_conn_t *conn, ctx_t *c,
                         const cm_uuid_t *id, uint64_t after, uint64_t head,
                         uint64_t perm_seq, json_t *result)
{
    //  Attaching again replaces the watch; its waits (a prompt still
    //  running) carry over, so every request is still answered once, and
    //  so does a permission request it asked, so it is not asked twice.
    gw_wait_t *kept = NULL;
    gw_watch_t *old = gw_watch_find (conn, id);
    gw_watch_t *w = gw_watch_new (self, conn, id, after);
    if (old) {
        kept = old->waits;
        old->waits = NULL;
        if (w)
            gw_watch_take_perm (w, old);
        else
            gw_watch_withdraw_perm (self, old);
        gw_watch_free (self, old);
    }
    gw_wait_t *wait = w ? calloc (1, sizeof *wait) : NULL;
    if (!wait || !result) {
        if (w) {
            gw_watch_withdraw_perm (self, w);
            gw_watch_free (self, w);
        }
        free (wait);
        json_decref (result);
        for (gw_wait_t *next; kept; kept = next) {
            next = kept->next;
            gw_send_error (self, conn, kept->id, CM_E_NOMEM, NULL);
            gw_wait_free (kept);
        }
        gw_send_error (self, conn, c->id, CM_E_NOMEM, NULL);
        gw_acp_ctx_free (c);
        return;
    }
    for (gw_wait_t *next; kept; kept = next) {
        next = kept->next;
        gw_watch_add_wait (self, w, kept);
    }
    wait->result = result;
    wait->kind = GW_WAIT_LOAD;
    wait->id = c->id ? json_incref (c->id) : NULL;
    wait->until = head;
    wait->known = true;
    gw_watch_add_wait (self, w, wait);
    gw_watch_pending_perm (self, w, perm_seq);
    gw_watch_pump (self, w);
    gw_acp_ctx_free (c);
}

static json_t *attach_result (gw_server_t *self, const cm_uuid_t *id, uint64_t head,
                              const char *state)
{
    char text[37];
    return json_pack ("{s:s, s:s, s:I, s:s}", "sessionId", cm_uuid_fmt (id, text),
                      "epoch", self->epoch, "lastSeq", (json_int_t)head, "state", state);
}

//  The store's head of a session whose record's last_seq was behind afterSeq.
static void on_store_head (gw_server_t *self, void *arg, int rc, proto_msg_t *reply)
{
    ctx_t *c = arg;
    gw_conn_t *conn = gw_acp_ctx_conn (self, c);
    if (!conn) return;
    proto_events_reply_t *r = rc == 0 && reply ? proto_body (reply, events_reply) : NULL;
    if (!r) {
        gw_send_error (self, conn, c->id, CM_E_UNAVAILABLE,
                       "the event history could not be read; retry in a moment");
        gw_acp_ctx_free (c);
        return;
    }
    if (c->after > r->last_seq) {
        json_t *detail = json_pack ("{s:I, s:s}", "lastSeq", (json_int_t)r->last_seq,
                                    "epoch", self->epoch);
        gw_send_error_detail (
            self, conn, c->id, CM_E_EXPIRED,
            "afterSeq is past the end of this session's history (another "
            "store?); load the session again",
            detail);
        json_decref (detail);
        gw_acp_ctx_free (c);
        return;
    }
    watch_until (self, conn, c, &c->session, c->after, r->last_seq, c->perm_seq,
                 attach_result (self, &c->session, r->last_seq, c->text ? c->text : ""));
}

static void on_attached (gw_server_t *self, void *arg, int rc, proto_msg_t *reply)
{
    ctx_t *c = arg;
    gw_conn_t *conn;
    proto_session_rec_t *rec = gw_acp_ctx_session (self, c, rc, reply, &conn);
    if (!rec) return;
    uint64_t head = rec->last_seq;
    uint64_t after = c->kind == K_LOAD ? 0 : c->kind == K_RESUME ? head : c->after;
    if (after > head) {
        //  The record's last_seq is written with the record, not with every
        //  event, so it lags during a turn: the store has the real head.
        free (c->text);
        c->text = strdup (rec->state);
        c->session = rec->id;
        c->perm_seq = gw_acp_reply_perm_seq (reply);
        proto_events_range_t req = {.session = rec->id, .after_seq = head, .limit = 1};
        if (gw_call_store (self, PROTO_STORE_EVENTS_RANGE, &req, on_store_head, c,
                           gw_acp_ctx_drop)) {
            gw_send_error (self, conn, c->id, CM_E_INTERNAL, NULL);
            gw_acp_ctx_free (c);
        }
        return;
    }
    json_t *result;
    if (c->kind == K_ATTACH)
        result = attach_result (self, &rec->id, head, rec->state);
    else {
        result = gw_acp_session_setup (rec);
        json_object_set_new (
            result, "_meta",
            json_pack ("{s:s, s:I}", "epoch", self->epoch, "lastSeq", (json_int_t)head));
    }
    watch_until (self, conn, c, &rec->id, after, head, gw_acp_reply_perm_seq (reply),
                 result);
}

static void attach_common (gw_server_t *self, gw_conn_t *conn, gw_rpc_msg_t *msg,
                           int kind)
{
    ctx_t *c = gw_acp_ctx_new (conn, msg->id);
    if (!c) {
        gw_send_error (self, conn, msg->id, CM_E_NOMEM, NULL);
        return;
    }
    c->kind = kind;
    if (gw_acp_param_session (self, conn, msg, &c->session)) {
        gw_acp_ctx_free (c);
        return;
    }
    if (kind == K_ATTACH) {
        json_t *after = json_object_get (msg->params, "afterSeq");
        if (after && (!json_is_integer (after) || json_integer_value (after) < 0)) {
            gw_send_error (self, conn, msg->id, CM_E_INVALID,
                           "params.afterSeq must be a non-negative integer (the last "
                           "_meta.seq you saw, 0 for everything)");
            gw_acp_ctx_free (c);
            return;
        }
        c->after = after ? (uint64_t)json_integer_value (after) : 0;
        const char *epoch = gw_acp_param_str (msg->params, "epoch");
        if (epoch && *self->epoch && strcmp (epoch, self->epoch) != 0) {
            json_t *detail = json_pack ("{s:s}", "epoch", self->epoch);
            gw_send_error_detail (
                self, conn, msg->id, CM_E_EXPIRED,
                "the event history was rebuilt (new epoch): sequence numbers "
                "from before do not apply; load the session again",
                detail);
            json_decref (detail);
            gw_acp_ctx_free (c);
            return;
        }
    }
    char conn_text[32];
    snprintf (conn_text, sizeof conn_text, "%llu", (unsigned long long)conn->id);
    proto_tenant_id_req_t req = {.tenant = gw_acp_tenant (conn), .id = c->session};
    proto_attach_req_t areq = {
        .tenant = gw_acp_tenant (conn), .id = c->session, .conn = conn_text};
    int rc = kind == K_RESUME
                 ? gw_call_session (self, PROTO_SESSION_RESUME, &req, GW_CALL_TIMEOUT_MS,
                                    on_attached, c, gw_acp_ctx_drop)
                 : gw_call_session (self, PROTO_SESSION_ATTACH, &areq, GW_CALL_TIMEOUT_MS,
                                    on_attached, c, gw_acp_ctx_drop);
    if (rc) {
        gw_acp_ctx_free (c);
        gw_send_error (self, conn, msg->id, CM_E_INTERNAL, NULL);
    }
}

void gw_acp_load (gw_server_t *self, gw_conn_t *conn, gw_rpc_msg_t *msg)
{
    attach_common (self, conn, msg, K_LOAD);
}

void gw_acp_attach (gw_server_t *self, gw_conn_t *conn, gw_rpc_msg_t *msg)
{
    attach_common (self, conn, msg, K_ATTACH);
}

void gw_acp_resume (gw_server_t *self, gw_conn_t *conn, gw_rpc_msg_t *msg)
{
    attach_common (self, conn, msg, K_RESUME);
}

void gw_acp_detach (gw_server_t *self, gw_conn_t *conn, gw_rpc_msg_t *msg)
{
    cm_uuid_t id;
    if (gw_acp_param_session (self, conn, msg, &id)) return;
    gw_watch_t *w = gw_watch_find (conn, &id);
    if (w) {
        gw_watch_withdraw_perm (self, w);
        gw_watch_free (self, w);
        char conn_text[32];
        snprintf (conn_text, sizeof conn_text, "%llu", (unsigned long long)conn->id);
        proto_attach_req_t req = {
            .tenant = gw_acp_tenant (conn), .id = id, .conn = conn_text};
        gw_call_session (self, PROTO_SESSION_DETACH, &req, GW_CALL_TIMEOUT_MS, NULL, NULL,
                         NULL);
    }
    json_t *r = json_object ();
    gw_send_result (self, conn, msg->id, r);
    json_decref (r);
}

/* ---- session/list ------------------------------------------------------------------- */

static void on_list (gw_server_t *self, void *arg, int rc, proto_msg_t *reply)
{
    ctx_t *c = arg;
    gw_conn_t *conn = gw_acp_ctx_conn (self, c);
    if (!conn) return;
    proto_sessions_reply_t *r =
        rc == 0 && reply ? proto_body (reply, sessions_reply) : NULL;
    if (!r) {
        gw_acp_bus_error (self, conn, c->id, rc ? rc : CM_E_INTERNAL, reply);
        gw_acp_ctx_free (c);
        return;
    }
    json_t *list = json_array ();
    for (size_t i = 0; i < r->sessions.count; i++) {
        const proto_session_rec_t *s = &r->sessions.items[i];
        if (c->text && strcmp (c->text, s->cwd) != 0) continue; //  cwd filter
        json_array_append_new (list, conn->kind == GW_CONN_HTTP
                                         ? gw_render_session_rest (s)
                                         : gw_render_session_info (s));
    }
    json_t *result = json_pack ("{s:o}", "sessions", list);
    if (r->more && r->sessions.count) {
        char text[37];
        cm_uuid_fmt (&r->sessions.items[r->sessions.count - 1].id, text);
        json_object_set_new (result, "nextCursor", json_string (text));
    }
    gw_send_result (self, conn, c->id, result);
    json_decref (result);
    gw_acp_ctx_free (c);
}

void gw_acp_list (gw_server_t *self, gw_conn_t *conn, gw_rpc_msg_t *msg)
{
    proto_list_req_t req = {.tenant = gw_acp_tenant (conn), .limit = 100};
    const char *cursor = gw_acp_param_str (msg->params, "cursor");
    if (cursor && cm_uuid_parse (cursor, &req.after)) {
        gw_send_error (self, conn, msg->id, CM_E_INVALID,
                       "params.cursor must be a nextCursor from an earlier session/list");
        return;
    }
    json_t *limit = json_object_get (json_object_get (msg->params, "_meta"), "limit");
    if (json_is_integer (limit) && json_integer_value (limit) > 0)
        req.limit = (uint64_t)json_integer_value (limit);
    if (req.limit > 1000) req.limit = 1000;
    ctx_t *c = gw_acp_ctx_new (conn, msg->id);
    const char *cwd = gw_acp_param_str (msg->params, "cwd");
    if (c && cwd) c->text = strdup (cwd);
    if (!c || gw_call_session (self, PROTO_SESSION_LIST, &req, GW_CALL_TIMEOUT_MS,
                               on_list, c, gw_acp_ctx_drop)) {
        gw_acp_ctx_free (c);
        gw_send_error (self, conn, msg->id, CM_E_INTERNAL, NULL);
    }
}

/* ---- simple session requests: close, delete, cancel, set_mode ----------------------- */

enum { K_CLOSE = 1, K_DELETE, K_CANCEL, K_SET_MODE, K_SET_CONFIG };

static void on_simple (gw_server_t *self, void *arg, int rc, proto_msg_t *reply);

static void simple_call (gw_server_t *self, gw_conn_t *conn, gw_rpc_msg_t *msg, int kind,
                         proto_type_t type, const char *option, const char *value)
{
    ctx_t *c = gw_acp_ctx_new (conn, msg->id);
    if (!c) {
        gw_send_error (self, conn, msg->id, CM_E_NOMEM, NULL);
        return;
    }
    c->kind = kind;
    if (gw_acp_param_session (self, conn, msg, &c->session)) {
        gw_acp_ctx_free (c);
        return;
    }
    proto_tenant_id_req_t req = {.tenant = gw_acp_tenant (conn), .id = c->session};
    proto_session_set_t set = {.tenant = gw_acp_tenant (conn),
                               .id = c->session,
                               .option = option,
                               .value = value};
    const void *body = option ? (const void *)&set : (const void *)&req;
    if (gw_call_session (self, type, body, GW_CALL_TIMEOUT_MS, on_simple, c,
                         gw_acp_ctx_drop)) {
        gw_acp_ctx_free (c);
        gw_send_error (self, conn, msg->id, CM_E_INTERNAL, NULL);
    }
}

static void on_config_loaded (gw_server_t *self, void *arg, int rc, proto_msg_t *reply)
{
    ctx_t *c = arg;
    gw_conn_t *conn;
    proto_session_rec_t *rec = gw_acp_ctx_session (self, c, rc, reply, &conn);
    if (!rec) return;
    json_t *opts = gw_render_config_options (rec, NULL, 0);
    json_t *result = json_pack ("{s:o}", "configOptions", opts ? opts : json_array ());
    gw_send_result (self, conn, c->id, result);
    json_decref (result);
    gw_acp_ctx_free (c);
}

static void on_simple (gw_server_t *self, void *arg, int rc, proto_msg_t *reply)
{
    ctx_t *c = arg;
    gw_conn_t *conn = gw_acp_ctx_conn (self, c);
    if (!conn) return;
    if (rc) {
        gw_acp_bus_error (self, conn, c->id, rc, reply);
        gw_acp_ctx_free (c);
        return;
    }
    if (c->kind == K_CLOSE || c->kind == K_DELETE) {
        gw_watch_t *w = gw_watch_find (conn, &c->session);
        if (w) {
            gw_watch_withdraw_perm (self, w);
            gw_watch_free (self, w);
        }
    }
    if (c->kind == K_SET_CONFIG) {
        //  The answer lists every option with its current value.
        proto_tenant_id_req_t req = {.tenant = gw_acp_tenant (conn), .id = c->session};
        if (gw_call_session (self, PROTO_SESSION_LOAD, &req, GW_CALL_TIMEOUT_MS,
                             on_config_loaded, c, gw_acp_ctx_drop) == 0)
            return;
        gw_send_error (self, conn, c->id, CM_E_INTERNAL, NULL);
        gw_acp_ctx_free (c);
        return;
    }
    json_t *r = json_object ();
    gw_send_result (self, conn, c->id, r);
    json_decref (r);
    gw_acp_ctx_free (c);
}

void gw_acp_close (gw_server_t *self, gw_conn_t *conn, gw_rpc_msg_t *msg)
{
    simple_call (self, conn, msg, K_CLOSE, PROTO_SESSION_CLOSE, NULL, NULL);
}

void gw_acp_delete (gw_server_t *self, gw_conn_t *conn, gw_rpc_msg_t *msg)
{
    simple_call (self, conn, msg, K_DELETE, PROTO_SESSION_DELETE, NULL, NULL);
}

void gw_acp_cancel (gw_server_t *self, gw_conn_t *conn, gw_rpc_msg_t *msg)
{
    simple_call (self, conn, msg, K_CANCEL, PROTO_SESSION_CANCEL, NULL, NULL);
}

void gw_acp_set_mode (gw_server_t *self, gw_conn_t *conn, gw_rpc_msg_t *msg)
{
    const char *mode = gw_acp_param_str (msg->params, "modeId");
    if (!mode) {
        gw_send_error (self, conn, msg->id, CM_E_INVALID,
                       "params.modeId is required: ask, edit, auto or read_only");
        return;
    }
    simple_call (self, conn, msg, K_SET_MODE, PROTO_SESSION_SET_MODE, "mode", mode);
}

void gw_acp_set_config (gw_server_t *self, gw_conn_t *conn, gw_rpc_msg_t *msg)
{
    const char *option = gw_acp_param_str (msg->params, "configId");
    json_t *value = json_object_get (msg->params, "value");
    if (!option || !json_is_string (value)) {
        gw_send_error (self, conn, msg->id, CM_E_INVALID,
                       "params.configId and a string params.value are required "
                       "(configId: model or backend)");
        return;
    }
    simple_call (self, conn, msg, K_SET_CONFIG, PROTO_SESSION_SET_CONFIG, option,
                 json_string_value (value));
}
