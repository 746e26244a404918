/*  wrk_stream.c - OpenAI and Anthropic streaming decoders (see wrk_stream.h).

    Both sit on one wrk_sse_t; each complete SSE event is parsed with
    jansson (json_loadb with the event's length, so a NUL or a missing
    terminator in the body cannot matter) and turned into deltas.  State is
    what a stream needs between events: the tool calls in progress (their
    id, name and argument fragments), the stop reason and the usage so far,
    and whether the response already finished.

    Every value read from the wire is type-checked; a wrong type is either
    ignored (optional fields) or a CM_E_UPSTREAM with a message, never a
    crash.  Once an error has been returned the decoder is spent: every
    later call returns the same code.
*/
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "cm_error.h"
#include "wrk_sse.h"
#include "wrk_stream.h"

//  Returned by the SSE callback to stop parsing once the response has
//  finished; wrk_stream_feed turns it back into 0.  Positive, so it can
//  never be mistaken for a cm error code.
#define S_STOP 1

typedef struct {
    char *p;
    size_t len, cap;
} s_buf_t;

typedef struct {
    bool seen;        //  some fragment of this call arrived
    bool started;     //  TOOL_START delivered
    bool ended;       //  TOOL_END delivered
    bool preset;      //  args hold content_block_start's input, not fragments
    json_int_t block; //  Anthropic content block index
    char id[WRK_STREAM_MAX_ID + 1];
    char name[WRK_STREAM_MAX_ID + 1];
    s_buf_t args;
} s_call_t;

struct wrk_stream {
    wrk_api_t api;
    wrk_delta_fn fn;
    void *arg;
    wrk_sse_t sse;
    s_call_t calls[WRK_STREAM_MAX_CALLS];
    int ncalls;               //  Anthropic: calls so far; OpenAI: highest index + 1
    int last_call;            //  OpenAI: index of the latest fragment, -1 before
    json_int_t ignored_block; //  Anthropic: latest block of a type we skip, or -1
    bool done;                //  FINISH or ERROR delivered
    int failed;               //  sticky error code, 0 while healthy
    bool have_finish;         //  OpenAI: finish_reason seen
    char stop_reason[32];
    uint64_t input_tokens, output_tokens, cache_tokens;
    char err[256];
};

//  --------------------------------------------------------------------------
//  Helpers

static int s_fail (wrk_stream_t *self, int code, const char *fmt, ...)
    __attribute__ ((format (printf, 3, 4)));

static int s_fail (wrk_stream_t *self, int code, const char *fmt, ...)
{
    va_list args;
    va_start (args, fmt);
    vsnprintf (self->err, sizeof self->err, fmt, args);
    va_end (args);
    return code;
}

static int s_buf_append (s_buf_t *buf, const char *bytes, size_t len, size_t max)
{
    if (len > max - buf->len) return CM_E_TOO_LARGE;
    if (buf->len + len + 1 > buf->cap) {
        size_t cap = buf->cap ? buf->cap : 256;
        while (cap < buf->len + len + 1) cap *= 2;
        char *grown = realloc (buf->p, cap);
        if (!grown) return CM_E_NOMEM;
        buf->p = grown;
        buf->cap = cap;
    }
    memcpy (buf->p + buf->len, bytes, len);
    buf->len += len;
    buf->p[buf->len] = '\0';
    return 0;
}

static void s_buf_free (s_buf_t *buf)
{
    free (buf->p);
    memset (buf, 0, sizeof *buf);
}

//  String member or NULL when absent or not a string.
static const char *s_str (const json_t *obj, const char *key)
{
    return json_string_value (json_object_get (obj, key));
}

//  Non-negative integer member; absent, wrong type or negative count as 0
//  (token counts are informational and must not fail a response).
static uint64_t s_count (const json_t *obj, const char *key)
{
    json_t *value = json_object_get (obj, key);
    if (!json_is_integer (value) || json_integer_value (value) < 0) return 0;
    return (uint64_t)json_integer_value (value);
}

static bool s_has (const json_t *obj, const char *key)
{
    return json_is_integer (json_object_get (obj, key));
}

//  Copy a provider's word (stop reason) keeping only [a-z0-9_] (A-Z
//  lowered): it goes into events and logs, so nothing else from the wire
//  gets through.  A word with nothing left is "end_turn".
static void s_copy_word (char *dst, size_t dstlen, const char *src)
{
    size_t n = 0;
    for (; *src && n + 1 < dstlen; src++) {
        char c = *src >= 'A' && *src <= 'Z' ? (char)(*src - 'A' + 'a') : *src;
        if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_') dst[n++] = c;
    }
    dst[n] = '\0';
    if (n == 0) snprintf (dst, dstlen, "end_turn");
}

static bool s_is_space (char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

static int s_emit (wrk_stream_t *self, wrk_delta_t *delta)
{
    //  Unused strings are "" rather than NULL so a consumer can print any
    //  field without checking the kind first.
    if (!delta->text) delta->text = "";
    if (!delta->id) delta->id = "";
    if (!delta->name) delta->name = "";
    if (!delta->stop_reason) delta->stop_reason = "";
    if (!delta->error_type) delta->error_type = "";
    return self->fn (self->arg, delta);
}

static int s_emit_text (wrk_stream_t *self, wrk_delta_kind_t kind, const json_t *value)
{
    const char *text = json_string_value (value);
    if (!text || !*text) return 0;
    wrk_delta_t delta = {
        .kind = kind, .text = text, .text_len = json_string_length (value)};
    return s_emit (self, &delta);
}

static int s_emit_usage (wrk_stream_t *self)
{
    wrk_delta_t delta = {.kind = WRK_DELTA_USAGE,
                         .input_tokens = self->input_tokens,
                         .output_tokens = self->output_tokens,
                         .cache_tokens = self->cache_tokens};
    return s_emit (self, &delta);
}

static int s_emit_finish (wrk_stream_t *self)
{
    self->done = true;
    wrk_delta_t delta = {.kind = WRK_DELTA_FINISH, .stop_reason = self->stop_reason};
    return s_emit (self, &delta);
}

static bool s_retryable (const char *word)
{
    static const char *const retryable[] = {"overloaded_error",    "api_error",
                                            "rate_limit_error",    "rate_limit_exceeded",
                                            "server_error",        "overloaded",
                                            "service_unavailable", "timeout_error",
                                            "internal_error",      "server_overloaded"};
    if (!word) return false;
    for (size_t i = 0; i < sizeof retryable / sizeof retryable[0]; i++)
        if (strcmp (word, retryable[i]) == 0) return true;
    return false;
}

//  An error reported inside the stream ends the response.  `error` is the
//  provider's error object, or a bare string some servers send instead.
static int s_emit_error (wrk_stream_t *self, const json_t *error)
{
    const char *message = json_string_value (error);
    const char *type = NULL;
    bool retryable = false;
    if (json_is_object (error)) {
        message = s_str (error, "message");
        type = s_str (error, "type");
        json_t *code = json_object_get (error, "code");
        //  OpenAI-compatible servers put the HTTP status (OpenRouter) or a
        //  word (OpenAI: rate_limit_exceeded) in code.
        if (json_is_integer (code)) {
            json_int_t status = json_integer_value (code);
            retryable = status == 429 || (status >= 500 && status <= 599);
        } else if (json_is_string (code)) {
            retryable = s_retryable (json_string_value (code));
            if (!type) type = json_string_value (code);
        }
        retryable = retryable || s_retryable (type);
    }
    self->done = true;
    wrk_delta_t delta = {
        .kind = WRK_DELTA_ERROR,
        .text = message ? message : "the model provider reported an error",
        .error_type = type ? type : "error",
        .retryable = retryable,
    };
    delta.text_len = strlen (delta.text);
    return s_emit (self, &delta);
}

static int s_set_string (wrk_stream_t *self, char *dst, const char *src, const char *what,
                         int index)
{
    size_t len = strlen (src);
    if (len > WRK_STREAM_MAX_ID)
        return s_fail (self, CM_E_TOO_LARGE,
                       "model stream: tool call %d has a %s longer than %d bytes", index,
                       what, WRK_STREAM_MAX_ID);
    memcpy (dst, src, len + 1);
    return 0;
}

static int s_start_call (wrk_stream_t *self, s_call_t *call, int index)
{
    call->started = true;
    wrk_delta_t delta = {
        .kind = WRK_DELTA_TOOL_START, .index = index, .id = call->id, .name = call->name};
    return s_emit (self, &delta);
}

//  The call's arguments are complete: parse the joined fragments, insist on
//  an object, and hand them over re-serialised compactly (so the consumer
//  gets one canonical text whatever whitespace the model produced).
static int s_end_call (wrk_stream_t *self, s_call_t *call, int index)
{
    call->ended = true;
    const char *args = call->args.p ? call->args.p : "";
    size_t len = call->args.len;
    while (len > 0 && s_is_space (args[0])) args++, len--;
    json_t *value = NULL;
    char *text = NULL;
    int rc = 0;
    if (len > 0) {
        json_error_t jerr;
        value = json_loadb (args, len, JSON_DECODE_ANY, &jerr);
        if (!value) {
            rc = s_fail (
                self, CM_E_UPSTREAM,
                "model stream: arguments of tool call %d (%s) are not valid JSON: "
                "%s",
                index, call->name, jerr.text);
            goto cleanup;
        }
        if (!json_is_object (value)) {
            rc = s_fail (self, CM_E_UPSTREAM,
                         "model stream: arguments of tool call %d (%s) are not a JSON "
                         "object",
                         index, call->name);
            goto cleanup;
        }
        text = json_dumps (value, JSON_COMPACT);
        if (!text) {
            rc = s_fail (self, CM_E_NOMEM, "out of memory");
            goto cleanup;
        }
    }
    wrk_delta_t delta = {.kind = WRK_DELTA_TOOL_END,
                         .index = index,
                         .id = call->id,
                         .name = call->name,
                         .text = text ? text : "{}",
                         .text_len = text ? strlen (text) : 2};
    rc = s_emit (self, &delta);
cleanup:
    free (text);
    json_decref (value);
    s_buf_free (&call->args); //  may be a megabyte; not needed any more
    return rc;
}

static json_t *s_parse (wrk_stream_t *self, const char *data, size_t len, int *rc)
{
    json_error_t jerr;
    json_t *root = json_loadb (data, len, JSON_DECODE_ANY, &jerr);
    if (!root)
        *rc = s_fail (self, CM_E_UPSTREAM,
                      "model stream: a data line is not valid JSON: %s (column %d)",
                      jerr.text, jerr.column);
    else if (!json_is_object (root)) {
        *rc = s_fail (self, CM_E_UPSTREAM,
                      "model stream: a data line is not a JSON object");
        json_decref (root);
        root = NULL;
    }
    return root;
}

//  --------------------------------------------------------------------------
//  OpenAI chat completions

static const char *s_openai_reason (const char *reason, bool made_calls)
{
    //  Some compatible servers say "stop" after tool calls; the calls are
    //  what the agent loop acts on, so report tool_use.
    if (strcmp (reason, "stop") == 0) return made_calls ? "tool_use" : "end_turn";
    if (strcmp (reason, "length") == 0) return "max_tokens";
    if (strcmp (reason, "tool_calls") == 0) return "tool_use";
    if (strcmp (reason, "function_call") == 0) return "tool_use";
    if (strcmp (reason, "content_filter") == 0) return "refusal";
    return reason;
}

static int s_openai_fragment (wrk_stream_t *self, const json_t *fragment)
{
    if (!json_is_object (fragment))
        return s_fail (self, CM_E_UPSTREAM,
                       "model stream: a tool call fragment is not an object");
    const char *id = s_str (fragment, "id");
    json_t *function = json_object_get (fragment, "function");
    const char *name = s_str (function, "name");
    json_t *arguments = json_object_get (function, "arguments");

    json_t *index_value = json_object_get (fragment, "index");
    json_int_t index;
    if (json_is_integer (index_value))
        index = json_integer_value (index_value);
    else if (index_value && !json_is_null (index_value))
        return s_fail (self, CM_E_UPSTREAM,
                       "model stream: a tool call index is not a number");
    else if (self->last_call < 0 ||
             (id && *id && strcmp (id, self->calls[self->last_call].id) != 0))
        //  Servers that leave out index: a new id starts the next call,
        //  anything else continues the latest one.
        index = self->ncalls;
    else
        index = self->last_call;
    if (index < 0)
        return s_fail (self, CM_E_UPSTREAM, "model stream: negative tool call index %lld",
                       (long long)index);
    if (index >= WRK_STREAM_MAX_CALLS)
        return s_fail (self, CM_E_TOO_LARGE,
                       "model stream: more than %d tool calls in one response",
                       WRK_STREAM_MAX_CALLS);

    s_call_t *call = &self->calls[index];
    int rc;
    if (call->ended)
        return s_fail (self, CM_E_UPSTREAM,
                       "model stream: tool call %d continued after it ended", (int)index);
    if (!call->seen) {
        //  Only a call's first fragment carries its id and name; a fragment
        //  with neither belongs to a call we never saw begin.
        if (!(id && *id) && !(name && *name))
            return s_fail (self, CM_E_UPSTREAM,
                           "model stream: fragment for tool call %d, which never started",
                           (int)index);
        call->seen = true;
        if (index >= self->ncalls) self->ncalls = (int)index + 1;
    }
    self->last_call = (int)index;
    if (id && *id && !call->id[0] &&
        (rc = s_set_string (self, call->id, id, "id", index)))
        return rc;
    if (name && *name && !call->name[0] &&
        (rc = s_set_string (self, call->name, name, "name", index)))
        return rc;
    if (!call->started && call->name[0]) {
        //  A server that gives no id still needs one to pair the result.
        if (!call->id[0]) snprintf (call->id, sizeof call->id, "call_%d", (int)index);
        if ((rc = s_start_call (self, call, (int)index))) return rc;
    }
    if (json_is_string (arguments)) {
        rc = s_buf_append (&call->args, json_string_value (arguments),
                           json_string_length (arguments), WRK_STREAM_MAX_ARGS);
        if (rc == CM_E_TOO_LARGE)
            return s_fail (self, rc,
                           "model stream: arguments of tool call %d exceed %u bytes",
                           (int)index, WRK_STREAM_MAX_ARGS);
        if (rc) return s_fail (self, rc, "out of memory");
    }
    return 0;
}

//  [DONE], or the body ended after finish_reason: every call is complete.
static int s_openai_finish (wrk_stream_t *self)
{
    int rc;
    for (int i = 0; i < self->ncalls; i++) {
        s_call_t *call = &self->calls[i];
        if (!call->seen) continue;
        if (!call->started)
            return s_fail (self, CM_E_UPSTREAM, "model stream: tool call %d has no name",
                           i);
        if ((rc = s_end_call (self, call, i))) return rc;
    }
    if (!self->have_finish)
        //  [DONE] without a finish_reason: the server finished, it just
        //  did not say why.
        s_copy_word (self->stop_reason, sizeof self->stop_reason,
                     self->ncalls > 0 ? "tool_use" : "end_turn");
    return s_emit_finish (self);
}

static int s_openai_event (wrk_stream_t *self, const char *data, size_t len)
{
    size_t trimmed = len;
    while (trimmed > 0 && s_is_space (data[trimmed - 1])) trimmed--;
    if (trimmed == 6 && memcmp (data, "[DONE]", 6) == 0) return s_openai_finish (self);

    int rc = 0;
    json_t *root = s_parse (self, data, len, &rc);
    if (!root) return rc;

    json_t *error = json_object_get (root, "error");
    if (error && !json_is_null (error)) {
        rc = s_emit_error (self, error);
        goto cleanup;
    }
    const char *object = s_str (root, "object");
    if (object && strcmp (object, "error") == 0) {
        //  vLLM's shape: the error fields at the top level.
        rc = s_emit_error (self, root);
        goto cleanup;
    }

    json_t *choices = json_object_get (root, "choices");
    json_t *choice = json_array_get (choices, 0);
    json_t *delta = json_object_get (choice, "delta");
    if (json_is_object (delta)) {
        //  Reasoning servers differ: DeepSeek and vLLM send
        //  reasoning_content, OpenRouter and Ollama reasoning; never both
        //  as THINKING.
        json_t *reasoning = json_object_get (delta, "reasoning_content");
        if (!json_is_string (reasoning) || json_string_length (reasoning) == 0)
            reasoning = json_object_get (delta, "reasoning");
        if ((rc = s_emit_text (self, WRK_DELTA_THINKING, reasoning))) goto cleanup;
        if ((rc = s_emit_text (self, WRK_DELTA_TEXT, json_object_get (delta, "content"))))
            goto cleanup;
        if ((rc = s_emit_text (self, WRK_DELTA_TEXT, json_object_get (delta, "refusal"))))
            goto cleanup;
        json_t *tool_calls = json_object_get (delta, "tool_calls");
        size_t i;
        json_t *fragment;
        json_array_foreach (tool_calls, i, fragment)
        {
            if ((rc = s_openai_fragment (self, fragment))) goto cleanup;
        }
    }
    const char *reason = s_str (choice, "finish_reason");
    if (reason && *reason) {
        self->have_finish = true;
        s_copy_word (self->stop_reason, sizeof self->stop_reason,
                     s_openai_reason (reason, self->ncalls > 0));
    }

    json_t *usage = json_object_get (root, "usage");
    if (json_is_object (usage)) {
        //  prompt_tokens already includes the cached part.
        self->input_tokens = s_count (usage, "prompt_tokens");
        self->output_tokens = s_count (usage, "completion_tokens");
        self->cache_tokens =
            s_count (json_object_get (usage, "prompt_tokens_details"), "cached_tokens");
        rc = s_emit_usage (self);
    }
cleanup:
    json_decref (root);
    return rc;
}

//  --------------------------------------------------------------------------
//  Anthropic messages

static s_call_t *s_anthropic_call (wrk_stream_t *self, json_int_t block, int *index)
{
    for (int i = 0; i < self->ncalls; i++)
        if (self->calls[i].block == block && !self->calls[i].ended) {
            *index = i;
            return &self->calls[i];
        }
    return NULL;
}

static void s_anthropic_usage (wrk_stream_t *self, const json_t *usage)
{
    //  Anthropic counts input_tokens without the cache; report the whole
    //  prompt, like OpenAI, with the cache-read part in cache_tokens.
    if (s_has (usage, "input_tokens") || s_has (usage, "cache_read_input_tokens") ||
        s_has (usage, "cache_creation_input_tokens")) {
        self->cache_tokens = s_count (usage, "cache_read_input_tokens");
        self->input_tokens = s_count (usage, "input_tokens") + self->cache_tokens +
                             s_count (usage, "cache_creation_input_tokens");
    }
    if (s_has (usage, "output_tokens"))
        self->output_tokens = s_count (usage, "output_tokens");
}

static int s_block_index (wrk_stream_t *self, const json_t *root, json_int_t *block)
{
    json_t *value = json_object_get (root, "index");
    if (!json_is_integer (value) || json_integer_value (value) < 0)
        return s_fail (self, CM_E_UPSTREAM,
                       "model stream: content block event without an index");
    *block = json_integer_value (value);
    return 0;
}

static int s_anthropic_block_start (wrk_stream_t *self, const json_t *root)
{
    json_int_t block = -1; //  set by s_block_index (gcc -O3 cannot tell)
    int rc = s_block_index (self, root, &block);
    if (rc) return rc;
    json_t *content = json_object_get (root, "content_block");
    const char *type = s_str (content, "type");
    if (!type)
        return s_fail (self, CM_E_UPSTREAM, "model stream: content block without a type");

    if (strcmp (type, "text") == 0)
        return s_emit_text (self, WRK_DELTA_TEXT, json_object_get (content, "text"));
    if (strcmp (type, "thinking") == 0) {
        if ((rc = s_emit_text (self, WRK_DELTA_THINKING,
                               json_object_get (content, "thinking"))))
            return rc;
        return s_emit_text (self, WRK_DELTA_SIGNATURE,
                            json_object_get (content, "signature"));
    }
    if (strcmp (type, "tool_use") != 0) {
        //  redacted_thinking, server tools, and types yet to come: their
        //  deltas are skipped too.
        self->ignored_block = block;
        return 0;
    }

    int index = self->ncalls;
    if (index >= WRK_STREAM_MAX_CALLS)
        return s_fail (self, CM_E_TOO_LARGE,
                       "model stream: more than %d tool calls in one response",
                       WRK_STREAM_MAX_CALLS);
    const char *id = s_str (content, "id");
    const char *name = s_str (content, "name");
    if (!id || !*id || !name || !*name)
        return s_fail (self, CM_E_UPSTREAM,
                       "model stream: tool_use block %lld without an id or a name",
                       (long long)block);
    s_call_t *call = &self->calls[index];
    self->ncalls++;
    call->seen = true;
    call->block = block;
    if ((rc = s_set_string (self, call->id, id, "id", index))) return rc;
    if ((rc = s_set_string (self, call->name, name, "name", index))) return rc;

    //  The API sends input: {} here and the real input as fragments; a
    //  compatible server that sends the whole input up front still works.
    json_t *input = json_object_get (content, "input");
    if (json_is_object (input) && json_object_size (input) > 0) {
        char *text = json_dumps (input, JSON_COMPACT);
        if (!text) return s_fail (self, CM_E_NOMEM, "out of memory");
        rc = s_buf_append (&call->args, text, strlen (text), WRK_STREAM_MAX_ARGS);
        free (text);
        if (rc)
            return s_fail (self, rc, "model stream: input of tool call %d too large",
                           index);
        call->preset = true;
    }
    return s_start_call (self, call, index);
}

static int s_anthropic_block_delta (wrk_stream_t *self, const json_t *root)
{
    json_int_t block = -1; //  set by s_block_index (gcc -O3 cannot tell)
    int rc = s_block_index (self, root, &block);
    if (rc) return rc;
    json_t *delta = json_object_get (root, "delta");
    const char *type = s_str (delta, "type");
    if (!type)
        return s_fail (self, CM_E_UPSTREAM, "model stream: content delta without a type");

    if (strcmp (type, "text_delta") == 0)
        return s_emit_text (self, WRK_DELTA_TEXT, json_object_get (delta, "text"));
    if (strcmp (type, "thinking_delta") == 0)
        return s_emit_text (self, WRK_DELTA_THINKING,
                            json_object_get (delta, "thinking"));
    if (strcmp (type, "signature_delta") == 0)
        return s_emit_text (self, WRK_DELTA_SIGNATURE,
                            json_object_get (delta, "signature"));
    if (strcmp (type, "input_json_delta") != 0) return 0; //  citations and the like

    int index;
    s_call_t *call = s_anthropic_call (self, block, &index);
    if (!call) {
        if (block == self->ignored_block) return 0;
        return s_fail (self, CM_E_UPSTREAM,
                       "model stream: input fragment for block %lld, which is not a tool "
                       "call in progress",
                       (long long)block);
    }
    json_t *partial = json_object_get (delta, "partial_json");
    if (!json_is_string (partial))
        return s_fail (self, CM_E_UPSTREAM,
                       "model stream: input fragment without partial_json");
    if (call->preset && json_string_length (partial) > 0) {
        call->args.len = 0; //  fragments replace the up-front input
        call->preset = false;
    }
    rc = s_buf_append (&call->args, json_string_value (partial),
                       json_string_length (partial), WRK_STREAM_MAX_ARGS);
    if (rc == CM_E_TOO_LARGE)
        return s_fail (self, rc,
                       "model stream: arguments of tool call %d exceed %u bytes", index,
                       WRK_STREAM_MAX_ARGS);
    if (rc) return s_fail (self, rc, "out of memory");
    return 0;
}

static int s_anthropic_event (wrk_stream_t *self, const char *event, const char *data,
                              size_t len)
{
    static const char *const known[] = {"message_start",
                                        "content_block_start",
                                        "content_block_delta",
                                        "content_block_stop",
                                        "message_delta",
                                        "message_stop",
                                        "error"};
    //  Decide from the SSE name first, so an unknown event (or ping) is
    //  skipped without even parsing its data.
    if (*event) {
        bool handled = false;
        for (size_t i = 0; i < sizeof known / sizeof known[0] && !handled; i++)
            handled = strcmp (event, known[i]) == 0;
        if (!handled) return 0;
    }
    int rc = 0;
    json_t *root = s_parse (self, data, len, &rc);
    if (!root) return rc;
    const char *type = *event ? event : s_str (root, "type");
    if (!type) type = "";

    if (strcmp (type, "message_start") == 0) {
        json_t *usage = json_object_get (json_object_get (root, "message"), "usage");
        if (json_is_object (usage)) {
            s_anthropic_usage (self, usage);
            rc = s_emit_usage (self);
        }
    } else if (strcmp (type, "content_block_start") == 0)
        rc = s_anthropic_block_start (self, root);
    else if (strcmp (type, "content_block_delta") == 0)
        rc = s_anthropic_block_delta (self, root);
    else if (strcmp (type, "content_block_stop") == 0) {
        json_int_t block = -1;
        int index;
        if ((rc = s_block_index (self, root, &block)) == 0) {
            s_call_t *call = s_anthropic_call (self, block, &index);
            if (call) rc = s_end_call (self, call, index);
        }
    } else if (strcmp (type, "message_delta") == 0) {
        const char *reason = s_str (json_object_get (root, "delta"), "stop_reason");
        if (reason) s_copy_word (self->stop_reason, sizeof self->stop_reason, reason);
        json_t *usage = json_object_get (root, "usage");
        if (json_is_object (usage)) {
            s_anthropic_usage (self, usage);
            rc = s_emit_usage (self);
        }
    } else if (strcmp (type, "message_stop") == 0) {
        //  Blocks are always stopped before message_stop; a server that
        //  forgets still gets its calls delivered (or their errors).
        for (int i = 0; i < self->ncalls && rc == 0; i++)
            if (!self->calls[i].ended) rc = s_end_call (self, &self->calls[i], i);
        if (rc == 0) {
            if (!self->stop_reason[0])
                s_copy_word (self->stop_reason, sizeof self->stop_reason, "end_turn");
            rc = s_emit_finish (self);
        }
    } else if (strcmp (type, "error") == 0)
        rc = s_emit_error (self, json_object_get (root, "error"));
    //  ping and unknown types without an SSE name: nothing to do.
    json_decref (root);
    return rc;
}

//  --------------------------------------------------------------------------
//  The class

static int s_on_event (void *arg, const char *event, const char *data, size_t len)
{
    wrk_stream_t *self = (wrk_stream_t *)arg;
    int rc = self->api == WRK_API_OPENAI ? s_openai_event (self, data, len)
                                         : s_anthropic_event (self, event, data, len);
    if (rc == 0 && self->done) return S_STOP; //  nothing after FINISH or ERROR counts
    return rc;
}

wrk_stream_t *wrk_stream_new (wrk_api_t api, wrk_delta_fn fn, void *arg)
{
    if (api != WRK_API_OPENAI && api != WRK_API_ANTHROPIC) return NULL;
    wrk_stream_t *self = (wrk_stream_t *)calloc (1, sizeof *self);
    if (!self) return NULL;
    self->api = api;
    self->fn = fn;
    self->arg = arg;
    self->last_call = -1;
    self->ignored_block = -1;
    wrk_sse_init (&self->sse, WRK_STREAM_MAX_EVENT);
    return self;
}

void wrk_stream_destroy (wrk_stream_t **self_p)
{
    if (!self_p || !*self_p) return;
    wrk_stream_t *self = *self_p;
    wrk_sse_fini (&self->sse);
    for (int i = 0; i < WRK_STREAM_MAX_CALLS; i++) s_buf_free (&self->calls[i].args);
    free (self);
    *self_p = NULL;
}

int wrk_stream_feed (wrk_stream_t *self, const char *bytes, size_t len)
{
    if (self->failed) return self->failed;
    if (self->done) return 0;
    int rc = wrk_sse_feed (&self->sse, bytes, len, s_on_event, self);
    if (rc == S_STOP) return 0;
    if (rc == 0) return 0;
    //  The SSE parser's own errors come without a message.
    if (!self->err[0] && rc == CM_E_TOO_LARGE)
        s_fail (self, rc, "model stream: an event is larger than %u bytes",
                WRK_STREAM_MAX_EVENT);
    else if (!self->err[0] && rc == CM_E_NOMEM)
        s_fail (self, rc, "out of memory");
    self->failed = rc;
    return rc;
}

int wrk_stream_end (wrk_stream_t *self)
{
    if (self->failed) return self->failed;
    if (self->done) return 0;
    int rc;
    if (self->api == WRK_API_OPENAI && self->have_finish)
        //  finish_reason came but [DONE] did not: the answer is whole, a
        //  server (or proxy) just closed without the trailer.
        rc = s_openai_finish (self);
    else
        rc = s_fail (self, CM_E_UPSTREAM, "model stream ended before it finished");
    if (rc) self->failed = rc;
    return rc;
}

const char *wrk_stream_error (const wrk_stream_t *self)
{
    return self->err;
}
