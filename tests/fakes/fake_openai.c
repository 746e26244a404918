/*  fake_openai.c - POST /v1/chat/completions, as OpenAI answers it.

    Stream framing (text/event-stream): every event is one line
    "data: <chunk>" and a blank line; the stream ends "data: [DONE]".  A
    chunk is {id, object: "chat.completion.chunk", created, model,
    system_fingerprint, choices: [{index: 0, delta, logprobs: null,
    finish_reason}]}, and with stream_options.include_usage every chunk
    carries "usage": null and one last chunk has empty choices and the usage.

      first chunk      delta {role: "assistant", content: "", refusal: null}
                       (for a reply that starts with a tool call, the role
                       rides on the first tool call chunk, content null)
      text             delta {content: "<piece>"}
      thinking         delta {reasoning_content: "<piece>"} (the field
                       OpenAI-compatible servers such as vLLM and DeepSeek use)
      tool call        delta {tool_calls: [{index, id, type: "function",
                       function: {name, arguments: ""}}]} and then one
                       delta {tool_calls: [{index, function: {arguments:
                       "<fragment>"}}]} per fragment
      finish           delta {} with finish_reason stop | length |
                       tool_calls | content_filter
      error_event      data: {"error": {message, type, param, code}}; the
                       stream ends there, without [DONE]

    Conversation checks (400 invalid_request_error, like the service): an
    assistant message with tool_calls must be followed by one tool message
    per tool_call_id before any other message, and a tool message must
    answer a call of the assistant message before it.
*/
#include "fake_model.h"
#include "cm_error.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// ---------------------------------------------------------------------------
//  Requests

static int s_check_headers (const char *api_key, const fake_req_t *req, const char **type,
                            char *msg, size_t msglen)
{
    if (!api_key) return 0;
    const char *auth = req->header[FAKE_H_AUTHORIZATION];
    if (auth && strncmp (auth, "Bearer ", 7) == 0 && strcmp (auth + 7, api_key) == 0)
        return 0;
    *type = "invalid_request_error";
    snprintf (msg, msglen, "%s",
              auth ? "Incorrect API key provided. Send the key as 'Authorization: "
                     "Bearer <key>'."
                   : "No API key provided. Send it as 'Authorization: Bearer <key>'.");
    return 401;
}

//  Tool call ids of the assistant message at `at`, waiting for tool messages.
typedef struct {
    const json_t *ids[256];
    bool answered[256];
    size_t count;
    size_t at;
} s_pending_t;

static int s_unanswered (const s_pending_t *p, size_t here, char *msg, size_t msglen)
{
    char where[64] = "the end of messages";
    if (here != SIZE_MAX) snprintf (where, sizeof where, "messages[%zu]", here);
    int n =
        snprintf (msg, msglen,
                  "the assistant message at messages[%zu] has tool_calls that no tool "
                  "message answered before %s: ",
                  p->at, where);
    size_t pos = n > 0 ? (size_t)n : 0;
    bool first = true;
    for (size_t i = 0; i < p->count && pos < msglen; i++) {
        if (p->answered[i]) continue;
        n = snprintf (msg + pos, msglen - pos, "%s%s", first ? "" : ", ",
                      json_string_value (p->ids[i]));
        if (n > 0) pos += (size_t)n;
        first = false;
    }
    return -1;
}

static bool s_all_answered (const s_pending_t *p)
{
    for (size_t i = 0; i < p->count; i++)
        if (!p->answered[i]) return false;
    return true;
}

static int s_tool_calls (const json_t *calls, size_t m, s_pending_t *p, char *msg,
                         size_t msglen)
{
    if (!json_is_array (calls)) {
        snprintf (msg, msglen, "messages[%zu].tool_calls: expected an array", m);
        return -1;
    }
    if (json_array_size (calls) > sizeof p->ids / sizeof p->ids[0]) {
        snprintf (msg, msglen, "messages[%zu].tool_calls: too many calls", m);
        return -1;
    }
    p->count = 0;
    p->at = m;
    size_t i;
    const json_t *call;
    json_array_foreach (calls, i, call)
    {
        const json_t *id = json_object_get (call, "id");
        const json_t *fn = json_object_get (call, "function");
        const char *type = json_string_value (json_object_get (call, "type"));
        if (!json_is_string (id) || !type || strcmp (type, "function") != 0 ||
            !json_is_string (json_object_get (fn, "name")) ||
            !json_is_string (json_object_get (fn, "arguments"))) {
            snprintf (msg, msglen,
                      "messages[%zu].tool_calls[%zu]: expected {id, type: \"function\", "
                      "function: {name, arguments (a string)}}",
                      m, i);
            return -1;
        }
        p->ids[p->count] = id;
        p->answered[p->count++] = false;
    }
    return 0;
}

static int s_analyse (const json_t *body, fake_call_t *call, char *msg, size_t msglen)
{
    if (!json_is_object (body)) {
        snprintf (msg, msglen, "the request body must be a JSON object");
        return -1;
    }
    call->model = json_string_value (json_object_get (body, "model"));
    if (!call->model) {
        snprintf (msg, msglen, "you must provide a model parameter (a string)");
        return -1;
    }
    const json_t *stream = json_object_get (body, "stream");
    if (stream && !json_is_boolean (stream) && !json_is_null (stream)) {
        snprintf (msg, msglen, "'stream' must be a boolean");
        return -1;
    }
    call->stream = json_is_true (stream);
    const json_t *options = json_object_get (body, "stream_options");
    if (options && !json_is_null (options)) {
        if (!call->stream) {
            snprintf (msg, msglen,
                      "'stream_options' is only allowed when 'stream' is true");
            return -1;
        }
        call->include_usage = json_is_true (json_object_get (options, "include_usage"));
    }
    const json_t *messages = json_object_get (body, "messages");
    if (!json_is_array (messages) || json_array_size (messages) == 0) {
        snprintf (msg, msglen, "'messages' must be a non-empty array");
        return -1;
    }
    s_pending_t pending = {.count = 0};
    size_t last_user = SIZE_MAX;
    size_t m;
    const json_t *message;
    json_array_foreach (messages, m, message)
    {
        const char *role = json_string_value (json_object_get (message, "role"));
        const json_t *content = json_object_get (message, "content");
        if (!role || (strcmp (role, "system") != 0 && strcmp (role, "developer") != 0 &&
                      strcmp (role, "user") != 0 && strcmp (role, "assistant") != 0 &&
                      strcmp (role, "tool") != 0)) {
            snprintf (msg, msglen,
                      "messages[%zu].role: expected system, developer, user, assistant "
                      "or tool",
                      m);
            return -1;
        }
        if (strcmp (role, "tool") == 0) {
            const json_t *id = json_object_get (message, "tool_call_id");
            if (!json_is_string (id)) {
                snprintf (msg, msglen, "messages[%zu].tool_call_id: a string is required",
                          m);
                return -1;
            }
            size_t k = 0;
            while (k < pending.count && !json_equal (pending.ids[k], id)) k++;
            if (k == pending.count || pending.answered[k]) {
                snprintf (msg, msglen,
                          "messages[%zu]: a message with role 'tool' must answer a "
                          "tool_call_id of the assistant message with tool_calls before "
                          "it; '%s' is not one waiting for an answer",
                          m, json_string_value (id));
                return -1;
            }
            pending.answered[k] = true;
            continue;
        }
        if (!s_all_answered (&pending)) return s_unanswered (&pending, m, msg, msglen);
        pending.count = 0;
        const json_t *calls = json_object_get (message, "tool_calls");
        if (strcmp (role, "assistant") == 0 && calls && !json_is_null (calls)) {
            if (s_tool_calls (calls, m, &pending, msg, msglen)) return -1;
        } else if (!content || json_is_null (content)) {
            snprintf (msg, msglen, "messages[%zu].content: required for role '%s'", m,
                      role);
            return -1;
        }
        if (content && !json_is_null (content) && !json_is_string (content) &&
            !json_is_array (content)) {
            snprintf (msg, msglen, "messages[%zu].content: expected a string or an array",
                      m);
            return -1;
        }
        if (strcmp (role, "user") == 0) {
            char *text = fake_content_text (content);
            if (text) {
                free (call->user_text);
                call->user_text = text;
                last_user = m;
            }
        }
    }
    if (!s_all_answered (&pending)) return s_unanswered (&pending, SIZE_MAX, msg, msglen);
    call->assistant_after = 0;
    json_array_foreach (messages, m, message)
    {
        const char *role = json_string_value (json_object_get (message, "role"));
        if ((last_user == SIZE_MAX || m > last_user) && strcmp (role, "assistant") == 0)
            call->assistant_after++;
    }
    return 0;
}

// ---------------------------------------------------------------------------
//  Errors

static const char *s_error_type (int status)
{
    if (status == 429) return "requests";
    if (status >= 500) return "server_error";
    return "invalid_request_error";
}

static int s_error_body (fake_buf_t *out, int status, const char *type,
                         const char *message, uint64_t seq)
{
    const char *code = status == 401   ? "invalid_api_key"
                       : status == 429 ? "rate_limit_exceeded"
                                       : NULL;
    json_t *body =
        json_pack ("{s:{s:s,s:s,s:n,s:o}}", "error", "message", message, "type", type,
                   "param", "code", code ? json_string (code) : json_null ());
    int rc = body ? fake_buf_json (out, body) : CM_E_NOMEM;
    json_decref (body);
    return rc;
}

static int s_error_status (const char *type)
{
    if (strcmp (type, "overloaded_error") == 0) return 503;
    if (strstr (type, "rate_limit") || strcmp (type, "requests") == 0 ||
        strcmp (type, "tokens") == 0)
        return 429;
    return 500;
}

static const char *s_finish (const char *stop)
{
    if (strcmp (stop, "max_tokens") == 0) return "length";
    if (strcmp (stop, "tool_use") == 0) return "tool_calls";
    if (strcmp (stop, "refusal") == 0) return "content_filter";
    return "stop";
}

static json_t *s_usage (const fake_totals_t *t, int64_t reasoning)
{
    return json_pack ("{s:I,s:I,s:I,s:{s:I},s:{s:I}}", "prompt_tokens",
                      (json_int_t)t->input, "completion_tokens", (json_int_t)t->output,
                      "total_tokens", (json_int_t)(t->input + t->output),
                      "prompt_tokens_details", "cached_tokens", (json_int_t)t->cache,
                      "completion_tokens_details", "reasoning_tokens",
                      (json_int_t)reasoning);
}

static const char *s_error_message (const fake_step_t *step)
{
    if (step->message) return step->message;
    if (strcmp (step->text, "overloaded_error") == 0) return "The server is overloaded.";
    return "scripted error_event from corral-fake-model";
}

// ---------------------------------------------------------------------------
//  Streaming

typedef struct {
    fake_plan_t *plan;
    const fake_call_t *call;
    char id[64];
    bool role_sent;
    int rc;
} s_stream_t;

//  Append one "data: <json>" event; steals delta.
static void s_event (s_stream_t *s, json_t *json)
{
    fake_buf_t buf = {0};
    if (!json || fake_buf_append (&buf, "data: ", 6) || fake_buf_json (&buf, json) ||
        fake_buf_append (&buf, "\n\n", 2) || fake_plan_data (s->plan, buf.data, buf.len))
        s->rc = CM_E_NOMEM;
    json_decref (json);
    fake_buf_free (&buf);
}

//  One chunk with a delta (stolen) and an optional finish reason.
static void s_chunk (s_stream_t *s, json_t *delta, const char *finish)
{
    json_t *chunk =
        json_pack ("{s:s,s:s,s:I,s:s,s:s,s:[{s:i,s:o,s:n,s:o}]}", "id", s->id, "object",
                   "chat.completion.chunk", "created", (json_int_t)s->call->created,
                   "model", s->call->model, "system_fingerprint", "fp_fake", "choices",
                   "index", 0, "delta", delta ? delta : json_object (), "logprobs",
                   "finish_reason", finish ? json_string (finish) : json_null ());
    if (chunk && s->call->include_usage)
        json_object_set_new (chunk, "usage", json_null ());
    s_event (s, chunk);
}

static void s_role (s_stream_t *s)
{
    if (s->role_sent) return;
    s->role_sent = true;
    s_chunk (s,
             json_pack ("{s:s,s:s,s:n}", "role", "assistant", "content", "", "refusal"),
             NULL);
}

static void s_pieces (s_stream_t *s, const fake_step_t *step, const char *field)
{
    s_role (s);
    int i = 0;
    size_t pos = 0, len;
    const char *piece;
    while (fake_piece (step->text, step->len, fake_pieces (step), &i, &pos, &piece, &len))
        s_chunk (s, json_pack ("{s:s%}", field, piece, len), NULL);
}

static void s_tool_call (s_stream_t *s, const fake_step_t *step, int index)
{
    char id[96];
    if (step->id)
        snprintf (id, sizeof id, "%s", step->id);
    else
        fake_id (id, sizeof id, "call_fake_", s->call->seq, index);
    json_t *delta = json_pack ("{s:[{s:i,s:s,s:s,s:{s:s,s:s}}]}", "tool_calls", "index",
                               index, "id", id, "type", "function", "function", "name",
                               step->name, "arguments", "");
    if (!s->role_sent && delta) {
        //  A reply that opens with a tool call carries the role on it.
        json_t *head = json_pack ("{s:s,s:n}", "role", "assistant", "content");
        if (head) {
            json_object_set (head, "tool_calls", json_object_get (delta, "tool_calls"));
            json_object_set_new (head, "refusal", json_null ());
        }
        json_decref (delta);
        delta = head;
        s->role_sent = true;
    }
    s_chunk (s, delta, NULL);
    int i = 0;
    size_t pos = 0, len;
    const char *piece;
    while (fake_piece (step->text, step->len, fake_pieces (step), &i, &pos, &piece, &len))
        s_chunk (s,
                 json_pack ("{s:[{s:i,s:{s:s%}}]}", "tool_calls", "index", index,
                            "function", "arguments", piece, len),
                 NULL);
}

static int s_render_stream (const fake_response_t *resp, size_t first,
                            const fake_call_t *call, fake_plan_t *plan)
{
    s_stream_t s = {.plan = plan, .call = call};
    fake_id (s.id, sizeof s.id, "chatcmpl-fake", call->seq, -1);
    fake_totals_t totals;
    fake_totals (resp, first, call, &totals);
    int tools = 0;
    for (size_t i = first; i < resp->count && s.rc == 0; i++) {
        const fake_step_t *step = &resp->steps[i];
        if (!fake_step_on (call, i)) continue;
        switch (step->kind) {
        case FAKE_STEP_TEXT:
            s_pieces (&s, step, "content");
            break;
        case FAKE_STEP_THINKING:
            s_pieces (&s, step, "reasoning_content");
            break;
        case FAKE_STEP_TOOL_CALL:
            s_tool_call (&s, step, tools++);
            break;
        case FAKE_STEP_PAUSE:
            fake_plan_pause (plan, step->ms);
            break;
        case FAKE_STEP_RAW:
            if (fake_plan_data (plan, step->text, step->len)) s.rc = CM_E_NOMEM;
            break;
        case FAKE_STEP_ERROR_EVENT:
            s_event (&s, json_pack ("{s:{s:s,s:s,s:n,s:n}}", "error", "message",
                                    s_error_message (step), "type", step->text, "param",
                                    "code"));
            return s.rc;
        case FAKE_STEP_STALL:
            return fake_plan_end (plan, FAKE_ITEM_STALL);
        case FAKE_STEP_CUT:
            return fake_plan_end (plan, FAKE_ITEM_CUT);
        default:
            break;
        }
    }
    s_role (&s);
    s_chunk (&s, NULL, s_finish (totals.stop));
    if (call->include_usage) {
        json_t *chunk =
            json_pack ("{s:s,s:s,s:I,s:s,s:s,s:[],s:o}", "id", s.id, "object",
                       "chat.completion.chunk", "created", (json_int_t)call->created,
                       "model", call->model, "system_fingerprint", "fp_fake", "choices",
                       "usage", s_usage (&totals, 0));
        s_event (&s, chunk);
    }
    if (s.rc == 0 && fake_plan_data (plan, "data: [DONE]\n\n", 14)) s.rc = CM_E_NOMEM;
    return s.rc;
}

// ---------------------------------------------------------------------------
//  One JSON answer (no "stream": true)

static int s_render_json (const fake_response_t *resp, size_t first,
                          const fake_call_t *call, fake_plan_t *plan)
{
    fake_totals_t totals;
    fake_totals (resp, first, call, &totals);
    fake_buf_t text = {0}, thinking = {0}, raw = {0}, out = {0};
    json_t *calls = json_array ();
    int rc = calls ? 0 : CM_E_NOMEM;
    bool any_text = false, any_raw = false;
    for (size_t i = first; i < resp->count && rc == 0; i++) {
        const fake_step_t *step = &resp->steps[i];
        if (!fake_step_on (call, i)) continue;
        char id[96];
        switch (step->kind) {
        case FAKE_STEP_TEXT:
            rc = fake_buf_append (&text, step->text, step->len);
            any_text = true;
            break;
        case FAKE_STEP_THINKING:
            rc = fake_buf_append (&thinking, step->text, step->len);
            break;
        case FAKE_STEP_TOOL_CALL:
            if (step->id)
                snprintf (id, sizeof id, "%s", step->id);
            else
                fake_id (id, sizeof id, "call_fake_", call->seq,
                         (int)json_array_size (calls));
            if (json_array_append_new (
                    calls, json_pack ("{s:s,s:s,s:{s:s,s:s%}}", "id", id, "type",
                                      "function", "function", "name", step->name,
                                      "arguments", step->text, step->len)))
                rc = CM_E_NOMEM;
            break;
        case FAKE_STEP_PAUSE:
            fake_plan_pause (plan, step->ms);
            break;
        case FAKE_STEP_RAW:
            rc = fake_buf_append (&raw, step->text, step->len);
            any_raw = true;
            break;
        case FAKE_STEP_ERROR_EVENT:
            plan->status = s_error_status (step->text);
            rc = s_error_body (&out, plan->status, step->text, s_error_message (step),
                               call->seq);
            if (rc == 0) rc = fake_plan_data (plan, out.data, out.len);
            goto done;
        case FAKE_STEP_STALL:
            rc = fake_plan_end (plan, FAKE_ITEM_STALL);
            goto done;
        case FAKE_STEP_CUT:
            rc = fake_plan_end (plan, FAKE_ITEM_CUT);
            goto done;
        default:
            break;
        }
    }
    if (rc) goto done;
    if (any_raw) {
        rc = fake_plan_data (plan, raw.data ? raw.data : "", raw.len);
        goto done;
    }
    char id[64];
    fake_id (id, sizeof id, "chatcmpl-fake", call->seq, -1);
    json_t *message = json_pack (
        "{s:s,s:o,s:n}", "role", "assistant", "content",
        any_text ? json_stringn (text.data ? text.data : "", text.len) : json_null (),
        "refusal");
    if (message && thinking.len)
        json_object_set_new (message, "reasoning_content",
                             json_stringn (thinking.data, thinking.len));
    if (message && json_array_size (calls))
        json_object_set (message, "tool_calls", calls);
    json_t *body =
        json_pack ("{s:s,s:s,s:I,s:s,s:[{s:i,s:o,s:n,s:s}],s:o,s:s}", "id", id, "object",
                   "chat.completion", "created", (json_int_t)call->created, "model",
                   call->model, "choices", "index", 0, "message", message, "logprobs",
                   "finish_reason", s_finish (totals.stop), "usage",
                   s_usage (&totals, (int64_t)(thinking.len + 3) / 4),
                   "system_fingerprint", "fp_fake");
    rc = body ? fake_buf_json (&out, body) : CM_E_NOMEM;
    json_decref (body);
    if (rc == 0) rc = fake_plan_data (plan, out.data, out.len);
done:
    json_decref (calls);
    fake_buf_free (&text);
    fake_buf_free (&thinking);
    fake_buf_free (&raw);
    fake_buf_free (&out);
    return rc;
}

const fake_provider_t fake_openai = {
    .name = "openai",
    .check_headers = s_check_headers,
    .analyse = s_analyse,
    .error_type = s_error_type,
    .error_body = s_error_body,
    .error_status = s_error_status,
    .render_stream = s_render_stream,
    .render_json = s_render_json,
    .request_id_header = "x-request-id",
};
