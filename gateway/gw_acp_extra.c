/*  gw_acp_extra.c - _corral/session/history (stored events as REST objects),
    _corral/session/permission (answer a permission request one was not
    asked) and _corral/usage (a tenant's daily counters).  See gw_acp.h.
*/
#include <stdlib.h>
#include <string.h>

#include "cm_log.h"
#include "cm_time.h"
#include "gw_acp.h"
#include "gw_http.h"
#include "gw_render.h"
#include "gw_rpc.h"

/* ---- _corral/session/history ----------------------------------------------------------- */

static void on_history (gw_server_t *self, void *arg, int rc, proto_msg_t *reply)
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
    json_t *events = json_array ();
    for (size_t i = 0; i < r->events.count; i++) {
        gw_ev_t *ev = gw_ev_new (self, r->events.items[i].data, r->events.items[i].size);
        json_t *obj = ev && ev->rest ? json_loads (ev->rest, 0, NULL) : NULL;
        if (obj) json_array_append_new (events, obj);
        gw_ev_unref (&ev);
    }
    uint64_t last = r->events.count ? r->first_seq + r->events.count - 1 : c->after;
    json_t *result = json_pack ("{s:o, s:I, s:s, s:b}", "events", events, "lastSeq",
                                (json_int_t)r->last_seq, "epoch", r->epoch, "more",
                                last < r->last_seq);
    gw_send_result (self, conn, c->id, result);
    json_decref (result);
    gw_acp_ctx_free (c);
}

static void on_history_allowed (gw_server_t *self, void *arg, int rc, proto_msg_t *reply)
{
    ctx_t *c = arg;
    gw_conn_t *conn;
    if (!gw_acp_ctx_session (self, c, rc, reply, &conn)) return;
    proto_events_range_t req = {
        .session = c->session, .after_seq = c->after, .limit = (uint64_t)c->kind};
    if (gw_call_store (self, PROTO_STORE_EVENTS_RANGE, &req, on_history, c,
                       gw_acp_ctx_drop)) {
        gw_send_error (self, conn, c->id, CM_E_INTERNAL, NULL);
        gw_acp_ctx_free (c);
    }
}

void gw_acp_history (gw_server_t *self, gw_conn_t *conn, gw_rpc_msg_t *msg)
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
    json_t *after = json_object_get (msg->params, "afterSeq");
    json_t *limit = json_object_get (msg->params, "limit");
    if ((after && (!json_is_integer (after) || json_integer_value (after) < 0)) ||
        (limit && (!json_is_integer (limit) || json_integer_value (limit) < 1 ||
                   json_integer_value (limit) > GW_PAGE))) {
        gw_send_error (self, conn, msg->id, CM_E_INVALID,
                       "params.afterSeq must be >= 0 and params.limit 1 to 1000");
        gw_acp_ctx_free (c);
        return;
    }
    c->after = after ? (uint64_t)json_integer_value (after) : 0;
    c->kind = limit ? (int)json_integer_value (limit) : 100;
    proto_tenant_id_req_t req = {.tenant = gw_acp_tenant (conn), .id = c->session};
    if (gw_call_session (self, PROTO_SESSION_LOAD, &req, GW_CALL_TIMEOUT_MS,
                         on_history_allowed, c, gw_acp_ctx_drop)) {
        gw_acp_ctx_free (c);
        gw_send_error (self, conn, msg->id, CM_E_INTERNAL, NULL);
    }
}

/* ---- _corral/session/permission --------------------------------------------------- */

/*  The answer to a pending permission request from a client that holds no
    session/request_permission for it: a REST client (POST
    /v1/sessions/{id}/permission), or an ACP client that saw the
    permission_request event (its `requestId`) without being asked.  The
    session service compares and sets, so it counts exactly like an answer
    to session/request_permission: the first answer wins, a later one is a
    conflict, and the resolution event withdraws the request from every
    connection that was asked. */

static void on_permission (gw_server_t *self, void *arg, int rc, proto_msg_t *reply)
{
    ctx_t *c = arg;
    gw_conn_t *conn = gw_acp_ctx_conn (self, c);
    if (!conn) return;
    if (rc)
        gw_acp_bus_error (self, conn, c->id, rc, reply);
    else {
        json_t *r = json_object ();
        gw_send_result (self, conn, c->id, r);
        json_decref (r);
    }
    gw_acp_ctx_free (c);
}

void gw_acp_permission (gw_server_t *self, gw_conn_t *conn, gw_rpc_msg_t *msg)
{
    cm_uuid_t session;
    if (gw_acp_param_session (self, conn, msg, &session)) return;
    const char *request = gw_acp_param_str (msg->params, "requestId");
    json_t *outcome = json_object_get (msg->params, "outcome");
    const char *kind = json_string_value (json_object_get (outcome, "outcome"));
    const char *option = json_string_value (json_object_get (outcome, "optionId"));
    bool selected = kind && strcmp (kind, "selected") == 0 && option && *option &&
                    strlen (option) <= IDEM_MAX;
    bool cancelled = kind && strcmp (kind, "cancelled") == 0;
    if (!request || !*request || strlen (request) > IDEM_MAX ||
        !(selected || cancelled)) {
        gw_send_error (self, conn, msg->id, CM_E_INVALID,
                       "params.requestId (the permission_request event's) and "
                       "params.outcome are required: {\"outcome\":\"selected\","
                       "\"optionId\":\"...\"} with one of the event's options, or "
                       "{\"outcome\":\"cancelled\"}");
        return;
    }
    char conn_text[32];
    snprintf (conn_text, sizeof conn_text, "%llu", (unsigned long long)conn->id);
    proto_perm_answer_t req = {.tenant = gw_acp_tenant (conn),
                               .id = session,
                               .request_id = request,
                               .option_id = selected ? option : NULL,
                               .conn = conn_text};
    ctx_t *c = gw_acp_ctx_new (conn, msg->id);
    if (!c) {
        gw_send_error (self, conn, msg->id, CM_E_NOMEM, NULL);
        return;
    }
    if (gw_call_session (self, PROTO_PERMISSION_ANSWER, &req, GW_CALL_TIMEOUT_MS,
                         on_permission, c, gw_acp_ctx_drop)) {
        gw_acp_ctx_free (c);
        gw_send_error (self, conn, msg->id, CM_E_INTERNAL, NULL);
    }
}

/* ---- _corral/usage ------------------------------------------------------------------- */

static void on_usage (gw_server_t *self, void *arg, int rc, proto_msg_t *reply)
{
    ctx_t *c = arg;
    gw_conn_t *conn = gw_acp_ctx_conn (self, c);
    if (!conn) return;
    proto_usage_reply_t *r = rc == 0 && reply ? proto_body (reply, usage_reply) : NULL;
    if (!r) {
        gw_send_error (self, conn, c->id, CM_E_UNAVAILABLE,
                       "usage could not be read; retry in a moment");
        gw_acp_ctx_free (c);
        return;
    }
    json_t *days = json_array ();
    uint64_t in = 0, out = 0, cost = 0, calls = 0, turns = 0;
    for (size_t i = 0; i < r->rows.count; i++) {
        const proto_usage_rec_t *u = &r->rows.items[i];
        json_array_append_new (
            days,
            json_pack ("{s:I, s:I, s:I, s:I, s:I, s:I}", "day", (json_int_t)u->day,
                       "inputTokens", (json_int_t)u->usage->input_tokens, "outputTokens",
                       (json_int_t)u->usage->output_tokens, "costMicros",
                       (json_int_t)u->usage->cost_micros, "modelCalls",
                       (json_int_t)u->usage->model_calls, "turns", (json_int_t)u->turns));
        in += u->usage->input_tokens;
        out += u->usage->output_tokens;
        cost += u->usage->cost_micros;
        calls += u->usage->model_calls;
        turns += u->turns;
    }
    json_t *result = json_pack (
        "{s:s, s:o, s:{s:I, s:I, s:I, s:I, s:I}}", "tenant", gw_acp_tenant (conn), "days",
        days, "total", "inputTokens", (json_int_t)in, "outputTokens", (json_int_t)out,
        "costMicros", (json_int_t)cost, "modelCalls", (json_int_t)calls, "turns",
        (json_int_t)turns);
    gw_send_result (self, conn, c->id, result);
    json_decref (result);
    gw_acp_ctx_free (c);
}

static uint64_t day_of (int64_t ms)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r (&t, &tm);
    return (uint64_t)(tm.tm_year + 1900) * 10000 + (uint64_t)(tm.tm_mon + 1) * 100 +
           (uint64_t)tm.tm_mday;
}

void gw_acp_usage (gw_server_t *self, gw_conn_t *conn, gw_rpc_msg_t *msg)
{
    json_t *from = json_object_get (msg->params, "fromDay");
    json_t *to = json_object_get (msg->params, "toDay");
    int64_t now = cm_time_ms ();
    proto_usage_get_t req = {
        .tenant = gw_acp_tenant (conn),
        .from_day = json_is_integer (from) ? (uint64_t)json_integer_value (from)
                                           : day_of (now - 30LL * 86400 * 1000),
        .to_day =
            json_is_integer (to) ? (uint64_t)json_integer_value (to) : day_of (now)};
    if (req.from_day < 19700101 || req.to_day > 99991231 || req.from_day > req.to_day) {
        gw_send_error (self, conn, msg->id, CM_E_INVALID,
                       "fromDay and toDay are days as YYYYMMDD, fromDay <= toDay");
        return;
    }
    ctx_t *c = gw_acp_ctx_new (conn, msg->id);
    if (!c ||
        gw_call_store (self, PROTO_STORE_USAGE_GET, &req, on_usage, c, gw_acp_ctx_drop)) {
        gw_acp_ctx_free (c);
        gw_send_error (self, conn, msg->id, CM_E_INTERNAL, NULL);
    }
}
