/*  fake_routes.c - the route table, the admin endpoints, the request log,
    and the flow both model endpoints share.

    A model request goes: header checks (key, version) -> JSON body ->
    the provider's conversation checks -> the first rule whose match is in
    the last user text message -> the response numbered by the assistant
    messages after that message (the last one repeats) -> its leading
    http_error steps, each answering its first `times` requests -> the
    failure steps with `times` it passes are marked skipped -> the provider
    renders the remaining steps into a plan.  Every model request
    is recorded, answered or refused, in a ring of FAKE_LOG_MAX entries
    holding at most FAKE_LOG_BYTES_MAX bytes of bodies.
*/
#include "fake_model.h"
#include "cm_error.h"
#include "cm_log.h"
#include "cm_time.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct fake_routes {
    uint64_t seq;               //  model requests since start/reset
    json_t *log[FAKE_LOG_MAX];  //  ring, oldest at head
    size_t bytes[FAKE_LOG_MAX]; //  body bytes each entry holds
    size_t head, len, total;    //  total: sum of bytes[]
};

typedef void (*s_handler_fn) (fake_routes_t *self, fake_server_t *srv, fake_conn_t *conn,
                              const fake_req_t *req);

fake_routes_t *fake_routes_new (void)
{
    return calloc (1, sizeof (fake_routes_t));
}

//  A provider's answer to one call, as the request asked: streamed or one
//  JSON body.
static int s_render (const fake_provider_t *p, const fake_response_t *resp, size_t first,
                     const fake_call_t *call, fake_plan_t *plan)
{
    if (call->stream) return p->render_stream (resp, first, call, plan);
    plan->chunked = false;
    plan->content_type = "application/json";
    return p->render_json (resp, first, call, plan);
}

static void s_log_clear (fake_routes_t *self)
{
    for (size_t i = 0; i < self->len; i++)
        json_decref (self->log[(self->head + i) % FAKE_LOG_MAX]);
    self->head = self->len = self->total = 0;
}

void fake_routes_destroy (fake_routes_t **self_p)
{
    if (!self_p || !*self_p) return;
    s_log_clear (*self_p);
    free (*self_p);
    *self_p = NULL;
}

//  Append entry (taken); the oldest go when the ring or the byte budget is full.
static void s_log_push (fake_routes_t *self, json_t *entry, size_t bytes)
{
    if (!entry) return;
    while (self->len > 0 &&
           (self->len == FAKE_LOG_MAX || self->total + bytes > FAKE_LOG_BYTES_MAX)) {
        json_decref (self->log[self->head]);
        self->total -= self->bytes[self->head];
        self->head = (self->head + 1) % FAKE_LOG_MAX;
        self->len--;
    }
    size_t at = (self->head + self->len) % FAKE_LOG_MAX;
    self->log[at] = entry;
    self->bytes[at] = bytes;
    self->total += bytes;
    self->len++;
}

static void s_reply_json (fake_conn_t *conn, int status, json_t *json)
{
    fake_buf_t buf = {0};
    if (!json || fake_buf_json (&buf, json)) {
        fake_conn_reply (conn, 500, "application/json", NULL,
                         "{\"error\":{\"message\":\"out of memory\"}}", 37);
    } else {
        fake_conn_reply (conn, status, "application/json", NULL, buf.data, buf.len);
    }
    fake_buf_free (&buf);
    json_decref (json);
}

// ---------------------------------------------------------------------------
//  Admin

static void s_health (fake_routes_t *self, fake_server_t *srv, fake_conn_t *conn,
                      const fake_req_t *req)
{
    s_reply_json (conn, 200,
                  json_pack ("{s:s,s:I,s:I,s:I}", "status", "ok", "rules",
                             (json_int_t)fake_server_script (srv)->count, "connections",
                             (json_int_t)fake_server_conns (srv), "requests",
                             (json_int_t)self->seq));
}

static void s_requests (fake_routes_t *self, fake_server_t *srv, fake_conn_t *conn,
                        const fake_req_t *req)
{
    json_t *list = json_array ();
    for (size_t i = 0; list && i < self->len; i++)
        json_array_append (list, self->log[(self->head + i) % FAKE_LOG_MAX]);
    s_reply_json (conn, 200, list);
}

static void s_reset (fake_routes_t *self, fake_server_t *srv, fake_conn_t *conn,
                     const fake_req_t *req)
{
    s_log_clear (self);
    self->seq = 0;
    fake_script_reset (fake_server_script (srv));
    cm_info ("reset: request log, ids and http_error counters cleared");
    s_reply_json (conn, 200, json_pack ("{s:b}", "reset", 1));
}

// ---------------------------------------------------------------------------
//  Model endpoints

static json_t *s_log_entry (const fake_req_t *req, uint64_t seq, const char *provider)
{
    json_t *headers = json_object ();
    for (int h = 0; headers && h < FAKE_H_COUNT; h++) {
        const char *value = req->header[h];
        if (!value) continue;
        char masked[64];
        if (h == FAKE_H_AUTHORIZATION || h == FAKE_H_X_API_KEY) {
            cm_redact (value, masked, sizeof masked);
            value = masked;
        }
        json_object_set_new (headers, fake_header_names[h], json_string (value));
    }
    return json_pack ("{s:I,s:s,s:s,s:s,s:o,s:n,s:n,s:n,s:n}", "seq", (json_int_t)seq,
                      "provider", provider, "method", req->method, "path", req->path,
                      "headers", headers ? headers : json_object (), "body", "status",
                      "rule", "response");
}

//  Answer with the provider's error body.  retry_after < 0: no header.
static void s_error (fake_conn_t *conn, const fake_provider_t *p, int status,
                     const char *type, const char *message, uint64_t seq, int retry_after)
{
    fake_buf_t body = {0}, headers = {0};
    char id[64];
    fake_id (id, sizeof id, "req_fake_", seq, -1);
    fake_buf_printf (&headers, "%s: %s\r\n", p->request_id_header, id);
    if (retry_after >= 0) fake_buf_printf (&headers, "Retry-After: %d\r\n", retry_after);
    if (p->error_body (&body, status, type ? type : p->error_type (status), message, seq))
        fake_conn_reply (conn, 500, "application/json", NULL, "{}", 2);
    else
        fake_conn_reply (conn, status, "application/json", headers.data, body.data,
                         body.len);
    fake_buf_free (&body);
    fake_buf_free (&headers);
}

static void s_model (fake_routes_t *self, fake_server_t *srv, fake_conn_t *conn,
                     const fake_req_t *req, const fake_provider_t *p)
{
    const fake_opts_t *opts = fake_server_opts (srv);
    fake_call_t call = {
        .seq = ++self->seq, .body_len = req->body_len, .created = cm_time_ms () / 1000};
    json_t *entry = s_log_entry (req, call.seq, p->name);
    json_t *body = NULL;
    const fake_rule_t *rule = NULL;
    size_t index = 0, logged = 0;
    int status = 0;
    char msg[1024];
    const char *type = NULL;
    fake_plan_t *plan = NULL;
    bool *skip = NULL;

    status = p->check_headers (opts->api_key, req, &type, msg, sizeof msg);
    if (status) {
        s_error (conn, p, status, type, msg, call.seq, -1);
        goto done;
    }
    json_error_t jerr;
    body = json_loadb (req->body, req->body_len, 0, &jerr);
    if (!body) {
        snprintf (msg, sizeof msg, "the body is not valid JSON: line %d column %d: %s",
                  jerr.line, jerr.column, jerr.text);
        status = 400;
        s_error (conn, p, status, NULL, msg, call.seq, -1);
        goto done;
    }
    if (entry && req->body_len <= FAKE_LOG_BODY_MAX) {
        json_object_set (entry, "body", body);
        logged = req->body_len;
    } else if (entry)
        json_object_set_new (entry, "body", json_sprintf ("<%zu bytes>", req->body_len));
    if (p->analyse (body, &call, msg, sizeof msg)) {
        status = 400;
        s_error (conn, p, status, NULL, msg, call.seq, -1);
        goto done;
    }
    rule = fake_script_match (fake_server_script (srv), call.user_text);
    if (!rule) {
        snprintf (
            msg, sizeof msg,
            "corral-fake-model: no rule of the script matches the last user message "
            "(add a rule with \"match\": \"*\")");
        status = 400;
        s_error (conn, p, status, NULL, msg, call.seq, -1);
        goto done;
    }
    index = call.assistant_after < rule->count ? call.assistant_after : rule->count - 1;
    const fake_response_t *resp = &rule->responses[index];
    size_t first = 0;
    for (; first < resp->count && resp->steps[first].kind == FAKE_STEP_HTTP_ERROR;
         first++) {
        fake_step_t *step = &resp->steps[first];
        if (step->used >= step->times) continue;
        step->used++;
        status = step->status;
        if (step->message)
            snprintf (msg, sizeof msg, "%s", step->message);
        else
            snprintf (
                msg, sizeof msg,
                "scripted HTTP %d from corral-fake-model (rule \"%s\", %lld of %lld)",
                status, rule->name, (long long)step->used, (long long)step->times);
        s_error (conn, p, status, NULL, msg, call.seq, step->retry_after);
        goto done;
    }
    //  The first failure step this request reaches that has uses left is
    //  taken; spent ones before it are skipped.
    for (size_t i = first; i < resp->count; i++) {
        fake_step_t *step = &resp->steps[i];
        bool failure = step->kind == FAKE_STEP_ERROR_EVENT ||
                       step->kind == FAKE_STEP_STALL || step->kind == FAKE_STEP_CUT;
        if (!failure) continue;
        if (step->times == 0) break; //  every request takes it
        if (step->used < step->times) {
            step->used++;
            break;
        }
        if (!skip && !(skip = calloc (resp->count, sizeof *skip))) {
            status = 500;
            s_error (conn, p, status, NULL, "corral-fake-model: out of memory", call.seq,
                     -1);
            goto done;
        }
        skip[i] = true;
    }
    call.skip = skip;
    call.chunk_delay_ms =
        rule->chunk_delay_ms >= 0 ? rule->chunk_delay_ms : opts->chunk_delay_ms;
    if (!call.model) call.model = "fake-model";
    plan = fake_plan_new (200, "text/event-stream; charset=utf-8", true,
                          call.chunk_delay_ms);
    char id[64];
    fake_id (id, sizeof id, "req_fake_", call.seq, -1);
    if (!plan ||
        fake_buf_printf (&plan->headers, "%s: %s\r\n", p->request_id_header, id) ||
        s_render (p, resp, first, &call, plan)) {
        status = 500;
        s_error (conn, p, status, NULL, "corral-fake-model: out of memory", call.seq, -1);
        goto done;
    }
    status = plan->status;
    fake_conn_start (conn, &plan);
done:
    if (entry) {
        json_object_set_new (entry, "status", json_integer (status));
        if (rule) {
            json_object_set_new (entry, "rule", json_string (rule->name));
            json_object_set_new (entry, "response", json_integer ((json_int_t)index));
        }
    }
    s_log_push (self, entry, logged);
    cm_info ("%s %s -> %d seq=%" PRIu64 " rule=%s response=%zu%s", req->method, req->path,
             status, call.seq, rule ? rule->name : "-", index,
             call.stream ? " stream" : "");
    fake_plan_destroy (&plan);
    free (skip);
    free (call.user_text);
    json_decref (body);
}

static void s_openai (fake_routes_t *self, fake_server_t *srv, fake_conn_t *conn,
                      const fake_req_t *req)
{
    s_model (self, srv, conn, req, &fake_openai);
}

static void s_anthropic (fake_routes_t *self, fake_server_t *srv, fake_conn_t *conn,
                         const fake_req_t *req)
{
    s_model (self, srv, conn, req, &fake_anthropic);
}

// ---------------------------------------------------------------------------
//  Dispatch

static const struct {
    const char *method;
    const char *path;
    s_handler_fn fn;
} s_routes[] = {
    {"POST", "/v1/chat/completions", s_openai},
    {"POST", "/v1/messages", s_anthropic},
    {"GET", "/health", s_health},
    {"GET", "/_fake/requests", s_requests},
    {"POST", "/_fake/reset", s_reset},
};

void fake_routes_dispatch (fake_routes_t *self, fake_server_t *srv, fake_conn_t *conn,
                           const fake_req_t *req)
{
    const char *allow = NULL;
    for (size_t i = 0; i < sizeof s_routes / sizeof s_routes[0]; i++) {
        if (strcmp (req->path, s_routes[i].path) != 0) continue;
        if (strcmp (req->method, s_routes[i].method) == 0) {
            s_routes[i].fn (self, srv, conn, req);
            return;
        }
        allow = s_routes[i].method;
    }
    char body[256], headers[64];
    if (allow) {
        snprintf (headers, sizeof headers, "Allow: %s\r\n", allow);
        int n =
            snprintf (body, sizeof body,
                      "{\"type\":\"error\",\"error\":{\"type\":\"invalid_request_error\","
                      "\"message\":\"use %s for this path\"}}",
                      allow);
        fake_conn_reply (conn, 405, "application/json", headers, body, (size_t)n);
        return;
    }
    int n = snprintf (body, sizeof body,
                      "{\"type\":\"error\",\"error\":{\"type\":\"not_found_error\","
                      "\"message\":\"no such path on corral-fake-model\"}}");
    fake_conn_reply (conn, 404, "application/json", NULL, body, (size_t)n);
}
