/*  fake_anthropic.c - POST /v1/messages, as Anthropic answers it.

    Stream framing (text/event-stream): every event is "event: <name>",
    "data: <json>" whose "type" repeats the name, and a blank line.

      message_start        {type, message: {id, type: "message", role:
                           "assistant", model, content: [], stop_reason: null,
                           stop_sequence: null, usage: {input_tokens,
                           cache_creation_input_tokens, cache_read_input_tokens,
                           output_tokens: 1}}}
      content_block_start  {type, index, content_block}: {type: "text", text: ""},
                           {type: "thinking", thinking: "", signature: ""} or
                           {type: "tool_use", id, name, input: {}}
      ping                 once, after the first content_block_start
      content_block_delta  {type, index, delta}: text_delta {text},
                           thinking_delta {thinking}, signature_delta
                           {signature} (ends a thinking block),
                           input_json_delta {partial_json} (an empty one
                           first, then one per fragment)
      content_block_stop   {type, index}
      message_delta        {type, delta: {stop_reason, stop_sequence: null},
                           usage: {input_tokens, cache_creation_input_tokens,
                           cache_read_input_tokens, output_tokens}} (cumulative)
      message_stop         {type}
      error                {type: "error", error: {type, message}}; the
                           stream ends there

    Consecutive text steps continue one text block; every thinking or tool
    call step is a block of its own.

    Conversation checks (400 invalid_request_error): every tool_use block of
    an assistant message must be answered by a tool_result block with the
    same id in the very next message, which must be a user message, and a
    tool_result must answer a tool_use of the message before it.  max_tokens
    is required, and so is the anthropic-version header.
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
    const char *key = req->header[FAKE_H_X_API_KEY];
    if (api_key && (!key || strcmp (key, api_key) != 0)) {
        *type = "authentication_error";
        snprintf (msg, msglen, "%s",
                  key ? "invalid x-api-key" : "x-api-key header is required");
        return 401;
    }
    if (!req->header[FAKE_H_ANTHROPIC_VERSION]) {
        *type = "invalid_request_error";
        snprintf (msg, msglen, "anthropic-version: header is required");
        return 400;
    }
    return 0;
}

#define S_IDS_MAX 256

typedef struct {
    const char *ids[S_IDS_MAX];
    bool answered[S_IDS_MAX];
    size_t count;
    size_t at; //  the assistant message holding them
} s_uses_t;

static int s_unanswered (const s_uses_t *u, char *msg, size_t msglen, const char *where)
{
    int n = snprintf (
        msg, msglen,
        "messages.%zu: tool_use ids without a tool_result block in %s: ", u->at, where);
    size_t pos = n > 0 ? (size_t)n : 0;
    bool first = true;
    for (size_t i = 0; i < u->count && pos < msglen; i++) {
        if (u->answered[i]) continue;
        n = snprintf (msg + pos, msglen - pos, "%s%s", first ? "" : ", ", u->ids[i]);
        if (n > 0) pos += (size_t)n;
        first = false;
    }
    if (pos < msglen)
        snprintf (msg + pos, msglen - pos,
                  ". Every tool_use block needs a tool_result block with its id in the "
                  "next message.");
    return -1;
}

//  The tool_use blocks of an assistant message.
static int s_uses (const json_t *content, size_t m, s_uses_t *u, char *msg, size_t msglen)
{
    u->count = 0;
    u->at = m;
    if (!json_is_array (content)) return 0;
    size_t b;
    const json_t *block;
    json_array_foreach (content, b, block)
    {
        const char *type = json_string_value (json_object_get (block, "type"));
        if (!type || strcmp (type, "tool_use") != 0) continue;
        const char *id = json_string_value (json_object_get (block, "id"));
        if (!id || !json_is_string (json_object_get (block, "name")) ||
            !json_is_object (json_object_get (block, "input"))) {
            snprintf (msg, msglen,
                      "messages.%zu.content.%zu: a tool_use block needs id, name and an "
                      "input object",
                      m, b);
            return -1;
        }
        if (u->count == S_IDS_MAX) {
            snprintf (msg, msglen, "messages.%zu: too many tool_use blocks", m);
            return -1;
        }
        u->ids[u->count] = id;
        u->answered[u->count++] = false;
    }
    return 0;
}

//  Check a user message against the tool_use blocks before it; *results
//  tells whether it held any tool_result.
static int s_results (const json_t *content, size_t m, s_uses_t *u, bool *results,
                      char *msg, size_t msglen)
{
    *results = false;
    if (json_is_array (content)) {
        size_t b;
        const json_t *block;
        json_array_foreach (content, b, block)
        {
            const char *type = json_string_value (json_object_get (block, "type"));
            if (!type || strcmp (type, "tool_result") != 0) continue;
            *results = true;
            const char *id = json_string_value (json_object_get (block, "tool_use_id"));
            if (!id) {
                snprintf (msg, msglen,
                          "messages.%zu.content.%zu.tool_use_id: a string is required", m,
                          b);
                return -1;
            }
            size_t k = 0;
            while (k < u->count && strcmp (u->ids[k], id) != 0) k++;
            if (k == u->count) {
                snprintf (msg, msglen,
                          "messages.%zu.content.%zu: tool_result block for tool_use_id "
                          "%s, which no tool_use block of the message before has. Every "
                          "tool_result block must answer a tool_use block of the "
                          "previous message.",
                          m, b, id);
                return -1;
            }
            u->answered[k] = true;
        }
    }
    for (size_t k = 0; k < u->count; k++)
        if (!u->answered[k]) {
            char where[96];
            snprintf (where, sizeof where, "the next message (messages.%zu)", m);
            return s_unanswered (u, msg, msglen, where);
        }
    u->count = 0;
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
        snprintf (msg, msglen, "model: Field required (a string)");
        return -1;
    }
    const json_t *max_tokens = json_object_get (body, "max_tokens");
    if (!json_is_integer (max_tokens) || json_integer_value (max_tokens) < 1) {
        snprintf (msg, msglen, "max_tokens: Field required (an integer of at least 1)");
        return -1;
    }
    const json_t *stream = json_object_get (body, "stream");
    if (stream && !json_is_boolean (stream)) {
        snprintf (msg, msglen, "stream: Input should be a valid boolean");
        return -1;
    }
    call->stream = json_is_true (stream);
    call->include_usage = true;
    const json_t *messages = json_object_get (body, "messages");
    if (!json_is_array (messages) || json_array_size (messages) == 0) {
        snprintf (msg, msglen, "messages: a non-empty array is required");
        return -1;
    }
    s_uses_t uses = {.count = 0};
    size_t last_user = SIZE_MAX;
    size_t m;
    const json_t *message;
    json_array_foreach (messages, m, message)
    {
        const char *role = json_string_value (json_object_get (message, "role"));
        const json_t *content = json_object_get (message, "content");
        if (!role || (strcmp (role, "user") != 0 && strcmp (role, "assistant") != 0)) {
            snprintf (msg, msglen,
                      "messages.%zu.role: Input should be 'user' or 'assistant'", m);
            return -1;
        }
        if (!json_is_string (content) && !json_is_array (content)) {
            snprintf (msg, msglen,
                      "messages.%zu.content: a string or an array of blocks is required",
                      m);
            return -1;
        }
        if (strcmp (role, "assistant") == 0) {
            if (uses.count) {
                char where[96];
                snprintf (where, sizeof where,
                          "the next message (messages.%zu is not a user message)", m);
                return s_unanswered (&uses, msg, msglen, where);
            }
            if (s_uses (content, m, &uses, msg, msglen)) return -1;
            continue;
        }
        bool results = false;
        if (s_results (content, m, &uses, &results, msg, msglen)) return -1;
        char *text = results ? NULL : fake_content_text (content);
        if (text) {
            free (call->user_text);
            call->user_text = text;
            last_user = m;
        }
    }
    if (uses.count) return s_unanswered (&uses, msg, msglen, "a next message");
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
    switch (status) {
    case 401:
        return "authentication_error";
    case 403:
        return "permission_error";
    case 404:
        return "not_found_error";
    case 413:
        return "request_too_large";
    case 429:
        return "rate_limit_error";
    case 529:
        return "overloaded_error";
    default:
        return status >= 500 ? "api_error" : "invalid_request_error";
    }
}

static int s_error_body (fake_buf_t *out, int status, const char *type,
                         const char *message, uint64_t seq)
{
    char request_id[64];
    fake_id (request_id, sizeof request_id, "req_fake_", seq, -1);
    json_t *body = json_pack ("{s:s,s:{s:s,s:s},s:s}", "type", "error", "error", "type",
                              type, "message", message, "request_id", request_id);
    int rc = body ? fake_buf_json (out, body) : CM_E_NOMEM;
    json_decref (body);
    return rc;
}

static int s_error_status (const char *type)
{
    static const struct {
        const char *type;
        int status;
    } map[] = {{"invalid_request_error", 400},
               {"authentication_error", 401},
               {"permission_error", 403},
               {"not_found_error", 404},
               {"request_too_large", 413},
               {"rate_limit_error", 429},
               {"api_error", 500},
               {"overloaded_error", 529}};
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
        if (strcmp (type, map[i].type) == 0) return map[i].status;
    return 500;
}

static const char *s_error_message (const fake_step_t *step)
{
    if (step->message) return step->message;
    if (strcmp (step->text, "overloaded_error") == 0) return "Overloaded";
    return "scripted error_event from corral-fake-model";
}

//  The script's input counts the whole prompt; Anthropic's input_tokens is
//  the part not read from the cache.
static json_t *s_usage (const fake_totals_t *t, int64_t output)
{
    int64_t uncached = t->input > t->cache ? t->input - t->cache : 0;
    return json_pack ("{s:I,s:i,s:I,s:I}", "input_tokens", (json_int_t)uncached,
                      "cache_creation_input_tokens", 0, "cache_read_input_tokens",
                      (json_int_t)t->cache, "output_tokens", (json_int_t)output);
}

static void s_signature (char *out, size_t outlen, const fake_step_t *step,
                         const fake_call_t *call, int block)
{
    if (step->signature)
        snprintf (out, outlen, "%s", step->signature);
    else
        fake_id (out, outlen, "ZmFrZS1zaWduYXR1cmU=.", call->seq, block);
}

static void s_tool_id (char *out, size_t outlen, const fake_step_t *step,
                       const fake_call_t *call, int index)
{
    if (step->id)
        snprintf (out, outlen, "%s", step->id);
    else
        fake_id (out, outlen, "toolu_fake_", call->seq, index);
}

// ---------------------------------------------------------------------------
//  Streaming

typedef enum { S_NONE, S_TEXT } s_open_t;

typedef struct {
    fake_plan_t *plan;
    const fake_call_t *call;
    int block;     //  index of the last block started, -1 before the first
    s_open_t open; //  a text block is open (others close at once)
    bool pinged;
    int rc;
} s_stream_t;

//  Append "event: <type>" + "data: <json>"; steals json.
static void s_event (s_stream_t *s, json_t *json)
{
    fake_buf_t buf = {0};
    const char *type = json_string_value (json_object_get (json, "type"));
    if (!type || fake_buf_printf (&buf, "event: %s\ndata: ", type) ||
        fake_buf_json (&buf, json) || fake_buf_append (&buf, "\n\n", 2) ||
        fake_plan_data (s->plan, buf.data, buf.len))
        s->rc = CM_E_NOMEM;
    json_decref (json);
    fake_buf_free (&buf);
}

static void s_close (s_stream_t *s)
{
    if (s->open == S_NONE) return;
    s_event (s, json_pack ("{s:s,s:i}", "type", "content_block_stop", "index", s->block));
    s->open = S_NONE;
}

//  Start block number ++block with content_block (stolen).
static void s_start (s_stream_t *s, json_t *content_block)
{
    s_close (s);
    s->block++;
    s_event (s, json_pack ("{s:s,s:i,s:o}", "type", "content_block_start", "index",
                           s->block, "content_block", content_block));
    if (!s->pinged) {
        s->pinged = true;
        s_event (s, json_pack ("{s:s}", "type", "ping"));
    }
}

static void s_delta (s_stream_t *s, json_t *delta)
{
    s_event (s, json_pack ("{s:s,s:i,s:o}", "type", "content_block_delta", "index",
                           s->block, "delta", delta));
}

static void s_pieces (s_stream_t *s, const fake_step_t *step, const char *type,
                      const char *field)
{
    int i = 0;
    size_t pos = 0, len;
    const char *piece;
    while (fake_piece (step->text, step->len, fake_pieces (step), &i, &pos, &piece, &len))
        s_delta (s, json_pack ("{s:s,s:s%}", "type", type, field, piece, len));
}

static void s_stream_step (s_stream_t *s, const fake_step_t *step, int *tools)
{
    char id[96];
    switch (step->kind) {
    case FAKE_STEP_TEXT:
        if (s->open != S_TEXT) {
            s_start (s, json_pack ("{s:s,s:s}", "type", "text", "text", ""));
            s->open = S_TEXT;
        }
        s_pieces (s, step, "text_delta", "text");
        break;
    case FAKE_STEP_THINKING:
        s_start (s, json_pack ("{s:s,s:s,s:s}", "type", "thinking", "thinking", "",
                               "signature", ""));
        s_pieces (s, step, "thinking_delta", "thinking");
        s_signature (id, sizeof id, step, s->call, s->block);
        s_delta (s, json_pack ("{s:s,s:s}", "type", "signature_delta", "signature", id));
        s_event (
            s, json_pack ("{s:s,s:i}", "type", "content_block_stop", "index", s->block));
        break;
    case FAKE_STEP_TOOL_CALL:
        s_tool_id (id, sizeof id, step, s->call, (*tools)++);
        s_start (s, json_pack ("{s:s,s:s,s:s,s:{}}", "type", "tool_use", "id", id, "name",
                               step->name, "input"));
        s_delta (s,
                 json_pack ("{s:s,s:s}", "type", "input_json_delta", "partial_json", ""));
        s_pieces (s, step, "input_json_delta", "partial_json");
        s_event (
            s, json_pack ("{s:s,s:i}", "type", "content_block_stop", "index", s->block));
        break;
    case FAKE_STEP_PAUSE:
        fake_plan_pause (s->plan, step->ms);
        break;
    case FAKE_STEP_RAW:
        if (fake_plan_data (s->plan, step->text, step->len)) s->rc = CM_E_NOMEM;
        break;
    default:
        break;
    }
}

static int s_render_stream (const fake_response_t *resp, size_t first,
                            const fake_call_t *call, fake_plan_t *plan)
{
    s_stream_t s = {.plan = plan, .call = call, .block = -1, .open = S_NONE};
    fake_totals_t totals;
    fake_totals (resp, first, call, &totals);
    char id[64];
    fake_id (id, sizeof id, "msg_fake_", call->seq, -1);
    s_event (&s,
             json_pack ("{s:s,s:{s:s,s:s,s:s,s:s,s:[],s:n,s:n,s:o}}", "type",
                        "message_start", "message", "id", id, "type", "message", "role",
                        "assistant", "model", call->model, "content", "stop_reason",
                        "stop_sequence", "usage", s_usage (&totals, 1)));
    int tools = 0;
    for (size_t i = first; i < resp->count && s.rc == 0; i++) {
        const fake_step_t *step = &resp->steps[i];
        if (!fake_step_on (call, i)) continue;
        switch (step->kind) {
        case FAKE_STEP_ERROR_EVENT:
            s_event (&s, json_pack ("{s:s,s:{s:s,s:s}}", "type", "error", "error", "type",
                                    step->text, "message", s_error_message (step)));
            return s.rc;
        case FAKE_STEP_STALL:
            return s.rc ? s.rc : fake_plan_end (plan, FAKE_ITEM_STALL);
        case FAKE_STEP_CUT:
            return s.rc ? s.rc : fake_plan_end (plan, FAKE_ITEM_CUT);
        default:
            s_stream_step (&s, step, &tools);
        }
    }
    s_close (&s);
    json_t *usage = s_usage (&totals, totals.output);
    s_event (&s, json_pack ("{s:s,s:{s:s,s:n},s:o}", "type", "message_delta", "delta",
                            "stop_reason", totals.stop, "stop_sequence", "usage", usage));
    s_event (&s, json_pack ("{s:s}", "type", "message_stop"));
    return s.rc;
}

// ---------------------------------------------------------------------------
//  One JSON answer (no "stream": true)

static int s_render_json (const fake_response_t *resp, size_t first,
                          const fake_call_t *call, fake_plan_t *plan)
{
    fake_totals_t totals;
    fake_totals (resp, first, call, &totals);
    fake_buf_t raw = {0}, out = {0};
    json_t *content = json_array ();
    json_t *text = NULL; //  the open text block, borrowed from content
    int rc = content ? 0 : CM_E_NOMEM;
    bool any_raw = false;
    int tools = 0;
    char id[96];
    for (size_t i = first; i < resp->count && rc == 0; i++) {
        const fake_step_t *step = &resp->steps[i];
        if (!fake_step_on (call, i)) continue;
        json_t *block = NULL;
        switch (step->kind) {
        case FAKE_STEP_TEXT:
            if (text) {
                fake_buf_t joined = {0};
                const json_t *before = json_object_get (text, "text");
                rc = fake_buf_append (&joined, json_string_value (before),
                                      json_string_length (before));
                if (rc == 0) rc = fake_buf_append (&joined, step->text, step->len);
                if (rc == 0 && json_object_set_new (
                                   text, "text", json_stringn (joined.data, joined.len)))
                    rc = CM_E_NOMEM;
                fake_buf_free (&joined);
                continue;
            }
            block =
                json_pack ("{s:s,s:s%}", "type", "text", "text", step->text, step->len);
            if (json_array_append_new (content, block)) rc = CM_E_NOMEM;
            text = block;
            continue;
        case FAKE_STEP_THINKING:
            s_signature (id, sizeof id, step, call, (int)json_array_size (content));
            block = json_pack ("{s:s,s:s%,s:s}", "type", "thinking", "thinking",
                               step->text, step->len, "signature", id);
            break;
        case FAKE_STEP_TOOL_CALL: {
            s_tool_id (id, sizeof id, step, call, tools++);
            json_t *input = json_loadb (step->text, step->len, 0, NULL);
            if (!input)
                input = json_stringn (step->text, step->len); //  malformed on purpose
            block = json_pack ("{s:s,s:s,s:s,s:o}", "type", "tool_use", "id", id, "name",
                               step->name, "input", input);
            break;
        }
        case FAKE_STEP_PAUSE:
            fake_plan_pause (plan, step->ms);
            continue;
        case FAKE_STEP_RAW:
            rc = fake_buf_append (&raw, step->text, step->len);
            any_raw = true;
            continue;
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
            continue;
        }
        text = NULL;
        if (json_array_append_new (content, block)) rc = CM_E_NOMEM;
    }
    if (rc) goto done;
    if (any_raw) {
        rc = fake_plan_data (plan, raw.data ? raw.data : "", raw.len);
        goto done;
    }
    fake_id (id, sizeof id, "msg_fake_", call->seq, -1);
    json_t *body = json_pack ("{s:s,s:s,s:s,s:s,s:O,s:s,s:n,s:o}", "id", id, "type",
                              "message", "role", "assistant", "model", call->model,
                              "content", content, "stop_reason", totals.stop,
                              "stop_sequence", "usage", s_usage (&totals, totals.output));
    rc = body ? fake_buf_json (&out, body) : CM_E_NOMEM;
    json_decref (body);
    if (rc == 0) rc = fake_plan_data (plan, out.data, out.len);
done:
    json_decref (content);
    fake_buf_free (&raw);
    fake_buf_free (&out);
    return rc;
}

const fake_provider_t fake_anthropic = {
    .name = "anthropic",
    .check_headers = s_check_headers,
    .analyse = s_analyse,
    .error_type = s_error_type,
    .error_body = s_error_body,
    .error_status = s_error_status,
    .render_stream = s_render_stream,
    .render_json = s_render_json,
    .request_id_header = "request-id",
};
