/*  gw_rpc.c - JSON-RPC 2.0 framing for the ACP endpoint.

    Parsing runs in three steps, cheapest first, so a hostile frame costs
    as little as possible: the length cap, one pass over the raw bytes
    (UTF-8 and nesting depth), then jansson and the JSON-RPC shape checks.
    Every rejection becomes a ready-to-send error response whose message is
    written here; jansson's text is never passed on.
*/
#include <assert.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cm_error.h"
#include "gw_rpc.h"

// ---------------------------------------------------------------------------
//  The cm code -> JSON-RPC code table (docs/protocol.md lists it).
//  Several cm codes may share a JSON-RPC code; each row has its own
//  message.  Codes not listed here become -32603.

static const gw_rpc_cm_row_t s_cm_rows[] = {
    {CM_E_INVALID, GW_RPC_INVALID_PARAMS, "invalid",
     "invalid params: a value is malformed or out of range; check the method's "
     "parameters"},
    {CM_E_TYPE, GW_RPC_INVALID_PARAMS, "type",
     "invalid params: a field has the wrong type; check the method's parameters"},
    {CM_E_MISSING, GW_RPC_INVALID_PARAMS, "missing_field",
     "invalid params: a required field is missing; check the method's parameters"},
    {CM_E_UNAUTHORIZED, GW_RPC_AUTH_REQUIRED, "unauthorized",
     "authentication required: connect with a valid API key (Authorization: Bearer "
     "or X-API-Key)"},
    {CM_E_BUSY, GW_RPC_BUSY, "busy",
     "the session is running a turn; wait for it to end or send session/cancel"},
    {CM_E_NOT_FOUND, GW_RPC_NOT_FOUND, "not_found",
     "not found: no session or object with that id for this key; check the id"},
    {CM_E_CAPACITY, GW_RPC_CAPACITY, "capacity",
     "capacity exceeded: the server is at a limit; retry later"},
    {CM_E_FULL, GW_RPC_CAPACITY, "store_full",
     "capacity exceeded: the server's storage is full; retry later and tell its "
     "operator"},
    {CM_E_RATE_LIMITED, GW_RPC_RATE_LIMITED, "rate_limited",
     "rate limited: too many requests for this key; slow down and retry"},
    {CM_E_FORBIDDEN, GW_RPC_FORBIDDEN, "forbidden",
     "forbidden: this key may not access that object"},
    {CM_E_TOO_LARGE, GW_RPC_TOO_LARGE, "too_large",
     "too large: the message or a value exceeds a size limit; send less"},
    {CM_E_DEPTH, GW_RPC_TOO_LARGE, "depth",
     "too large: the value nests too deeply or has too many elements; flatten it"},
    {CM_E_CONFLICT, GW_RPC_CONFLICT, "conflict",
     "conflict: the object changed or already exists; reload it and retry"},
    {CM_E_EXPIRED, GW_RPC_EXPIRED, "expired",
     "expired: that position is no longer available; reload the session "
     "(session/load) and continue from there"},
    {CM_E_WORKER_LOST, GW_RPC_WORKER_LOST, "worker_lost",
     "the agent worker running the turn stopped and the turn ended; send the "
     "prompt again"},
    {CM_E_UPSTREAM, GW_RPC_UPSTREAM, "upstream",
     "the model provider returned an error; retry if data.retryable is true, "
     "otherwise change the request or the model"},
    {CM_E_UNAVAILABLE, GW_RPC_UNAVAILABLE, "unavailable",
     "a service Corral needs is not reachable right now; retry in a few seconds"},
    {CM_E_TIMEOUT, GW_RPC_UNAVAILABLE, "timeout",
     "the operation timed out inside Corral; retry in a few seconds"},
    {CM_E_CANCELLED, GW_RPC_CANCELLED, "cancelled", "the request was cancelled"},
    {CM_E_BUDGET, GW_RPC_BUDGET, "budget",
     "budget exceeded: the session's or the key's token or cost budget is spent; "
     "raise the budget or start a new session"},
    {CM_E_MEMORY_LIMIT, GW_RPC_MEMORY_LIMIT, "memory_limit",
     "a command of the turn exceeded the memory limit and was killed; the turn "
     "failed, the session is usable: prompt again with a lighter command"},
};
#define S_CM_ROWS (sizeof (s_cm_rows) / sizeof (s_cm_rows[0]))

static const char s_internal_msg[] =
    "internal error; retry, and tell the server's operator if it persists";

//  Detail keys an error may carry to the client, with the type each must
//  have.  Anything else a caller passes is dropped.
typedef enum { S_DETAIL_ID, S_DETAIL_BOOL, S_DETAIL_COUNT } s_detail_type_t;

static const struct {
    const char *key;
    s_detail_type_t type;
} s_detail_allow[] = {
    {"sessionId", S_DETAIL_ID},       {"turnId", S_DETAIL_ID},
    {"taskId", S_DETAIL_ID},          {"templateId", S_DETAIL_ID},
    {"epoch", S_DETAIL_ID},           {"field", S_DETAIL_ID},
    {"method", S_DETAIL_ID},          {"retryable", S_DETAIL_BOOL},
    {"retryAfterMs", S_DETAIL_COUNT}, {"limit", S_DETAIL_COUNT},
    {"afterSeq", S_DETAIL_COUNT},     {"lastSeq", S_DETAIL_COUNT},
    {"oldestSeq", S_DETAIL_COUNT},
};
#define S_DETAIL_ALLOW (sizeof (s_detail_allow) / sizeof (s_detail_allow[0]))

static const gw_rpc_cm_row_t *s_cm_lookup (int cm_code)
{
    long value = cm_code < 0 ? (long)cm_code : -(long)cm_code;
    for (size_t i = 0; i < S_CM_ROWS; i++)
        if (s_cm_rows[i].cm_code == value) return &s_cm_rows[i];
    return NULL;
}

const gw_rpc_cm_row_t *gw_rpc_cm_table (size_t *count)
{
    if (count) *count = S_CM_ROWS;
    return s_cm_rows;
}

int gw_rpc_code_from_cm (int cm_code)
{
    const gw_rpc_cm_row_t *row = cm_code ? s_cm_lookup (cm_code) : NULL;
    return row ? row->rpc_code : GW_RPC_INTERNAL_ERROR;
}

// ---------------------------------------------------------------------------
//  Builders

static bool s_id_ok (const json_t *id, bool allow_null)
{
    if (!id || json_is_null (id)) return allow_null;
    return json_is_string (id) || json_is_integer (id);
}

//  Dump root (consumed) compactly; NULL if root is NULL or on OOM.
static char *s_dump (json_t *root)
{
    if (!root) return NULL;
    char *text = json_dumps (root, JSON_COMPACT);
    json_decref (root);
    return text;
}

//  {"jsonrpc":"2.0","id":id} or without id; NULL on OOM.
static json_t *s_envelope (json_t *id, bool with_id)
{
    json_t *root = json_object ();
    if (!root) return NULL;
    if (json_object_set_new (root, "jsonrpc", json_string ("2.0")) != 0) goto fail;
    if (with_id &&
        json_object_set_new (root, "id", id ? json_incref (id) : json_null ()) != 0)
        goto fail;
    return root;
fail:
    json_decref (root);
    return NULL;
}

char *gw_rpc_result (json_t *id, json_t *result)
{
    assert (s_id_ok (id, false));
    json_t *root = s_envelope (id, true);
    if (root && json_object_set_new (root, "result",
                                     result ? json_incref (result) : json_null ()) != 0) {
        json_decref (root);
        root = NULL;
    }
    return s_dump (root);
}

//  The error object; NULL on OOM or a message that is not UTF-8.
static json_t *s_error_object (int code, const char *message, json_t *data)
{
    json_t *error = json_object ();
    json_t *msg = json_string (message);
    if (!error || !msg) goto fail;
    if (json_object_set_new (error, "code", json_integer (code)) != 0) goto fail;
    if (json_object_set_new (error, "message", msg) != 0) {
        msg = NULL; //  set_new consumed it
        goto fail;
    }
    if (data && json_object_set (error, "data", data) != 0) {
        json_decref (error);
        return NULL;
    }
    return error;
fail:
    json_decref (msg);
    json_decref (error);
    return NULL;
}

char *gw_rpc_error (json_t *id, int code, const char *message, json_t *data)
{
    assert (s_id_ok (id, true));
    assert (message);
    json_t *error = s_error_object (code, message, data);
    json_t *root = error ? s_envelope (id, true) : NULL;
    if (!root || json_object_set_new (root, "error", error) != 0) {
        json_decref (root);
        if (!root) json_decref (error);
        return NULL;
    }
    return s_dump (root);
}

//  An id-like string: bounded, and only characters that cannot carry
//  prose, markup or a secret's punctuation.
static bool s_detail_id_ok (const char *s, size_t len)
{
    if (len == 0 || len > GW_RPC_MAX_DETAIL) return false;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                  (c >= '0' && c <= '9') || c == '_' || c == '-' || c == '.' ||
                  c == ':' || c == '/' || c == '$';
        if (!ok) return false;
    }
    return true;
}

//  Copy the allowlisted entries of detail into data; -1 on OOM.
static int s_filter_detail (json_t *data, json_t *detail)
{
    if (!json_is_object (detail)) return 0;
    for (size_t i = 0; i < S_DETAIL_ALLOW; i++) {
        json_t *v = json_object_get (detail, s_detail_allow[i].key);
        bool ok = false;
        switch (s_detail_allow[i].type) {
        case S_DETAIL_ID:
            ok = json_is_string (v) &&
                 s_detail_id_ok (json_string_value (v), json_string_length (v));
            break;
        case S_DETAIL_BOOL:
            ok = json_is_boolean (v);
            break;
        case S_DETAIL_COUNT:
            ok = json_is_integer (v) && json_integer_value (v) >= 0;
            break;
        }
        if (ok && json_object_set (data, s_detail_allow[i].key, v) != 0) return -1;
    }
    return 0;
}

char *gw_rpc_error_from_cm (json_t *id, int cm_code, json_t *detail)
{
    assert (s_id_ok (id, true));
    const gw_rpc_cm_row_t *row = cm_code ? s_cm_lookup (cm_code) : NULL;
    json_t *data = json_object ();
    char *text = NULL;
    if (!data) return NULL;
    if (json_object_set_new (data, "reason",
                             json_string (row ? row->reason : "internal")) != 0)
        goto done;
    if (row) {
        if (s_filter_detail (data, detail) != 0) goto done;
        if (row->cm_code == CM_E_UPSTREAM && !json_object_get (data, "retryable") &&
            json_object_set_new (data, "retryable", json_false ()) != 0)
            goto done;
    }
    text = gw_rpc_error (id, row ? row->rpc_code : GW_RPC_INTERNAL_ERROR,
                         row ? row->message : s_internal_msg, data);
done:
    json_decref (data);
    return text;
}

static char *s_call (json_t *id, bool with_id, const char *method, json_t *params)
{
    assert (method && *method);
    assert (!params || json_is_object (params) || json_is_array (params));
    json_t *root = s_envelope (id, with_id);
    if (!root) return NULL;
    json_t *name = json_string (method);
    if (!name || json_object_set_new (root, "method", name) != 0 ||
        (params && json_object_set (root, "params", params) != 0)) {
        json_decref (root);
        return NULL;
    }
    return s_dump (root);
}

char *gw_rpc_notification (const char *method, json_t *params)
{
    return s_call (NULL, false, method, params);
}

char *gw_rpc_request (json_t *id, const char *method, json_t *params)
{
    assert (s_id_ok (id, false));
    return s_call (id, true, method, params);
}

// ---------------------------------------------------------------------------
//  Parsing

//  A rejection: the cm code returned and the response to send.
static int s_reject (char **reply_p, int rc, json_t *id, int code, json_t *data,
                     const char *fmt, ...) __attribute__ ((format (printf, 6, 7)));

static int s_reject (char **reply_p, int rc, json_t *id, int code, json_t *data,
                     const char *fmt, ...)
{
    char message[320];
    va_list args;
    va_start (args, fmt);
    vsnprintf (message, sizeof message, fmt, args);
    va_end (args);
    *reply_p = gw_rpc_error (s_id_ok (id, true) ? id : NULL, code, message, data);
    json_decref (data);
    if (!*reply_p) return CM_E_NOMEM;
    return rc;
}

//  data for a limit rejection: {"reason": reason, "limit": limit}.
static json_t *s_limit_data (const char *reason, size_t limit)
{
    return json_pack ("{s:s,s:I}", "reason", reason, "limit", (json_int_t)limit);
}

//  Length of the valid UTF-8 sequence starting at p (1..4), or 0 if the
//  bytes there are not one (overlong forms, surrogates and code points
//  above U+10FFFF are invalid, as RFC 3629 says).
static size_t s_utf8_len (const unsigned char *p, size_t avail)
{
    unsigned char c = p[0];
    if (c < 0x80) return 1;
    size_t n;
    unsigned char lo = 0x80, hi = 0xBF; //  range of the second byte
    if (c >= 0xC2 && c <= 0xDF)
        n = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        n = 3;
        if (c == 0xE0) lo = 0xA0;
        if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 4;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;
    } else
        return 0;
    if (avail < n) return 0;
    if (p[1] < lo || p[1] > hi) return 0;
    for (size_t i = 2; i < n; i++)
        if (p[i] < 0x80 || p[i] > 0xBF) return 0;
    return n;
}

//  One pass over the raw bytes before any parser sees them: UTF-8
//  validity and the nesting depth of [ and { outside strings.  Returns 0,
//  or CM_E_INVALID / CM_E_DEPTH with the byte offset in *where.
static int s_prescan (const unsigned char *p, size_t len, int max_depth, size_t *where)
{
    int depth = 0;
    bool in_string = false, escaped = false;
    size_t i = 0;
    while (i < len) {
        unsigned char c = p[i];
        if (c >= 0x80) {
            size_t n = s_utf8_len (p + i, len - i);
            if (n == 0) {
                *where = i;
                return CM_E_INVALID;
            }
            escaped = false;
            i += n;
            continue;
        }
        if (in_string) {
            if (escaped)
                escaped = false;
            else if (c == '\\')
                escaped = true;
            else if (c == '"')
                in_string = false;
        } else if (c == '"')
            in_string = true;
        else if (c == '[' || c == '{') {
            if (++depth > max_depth) {
                *where = i;
                return CM_E_DEPTH;
            }
        } else if ((c == ']' || c == '}') && depth > 0)
            depth--;
        i++;
    }
    return 0;
}

//  Our own words for a jansson failure: its text is not passed on.
static const char *s_json_problem (const json_error_t *jerr)
{
    switch (json_error_code (jerr)) {
    case json_error_premature_end_of_input:
        return "the text ends before the JSON value is complete";
    case json_error_end_of_input_expected:
        return "there is more text after the JSON value";
    case json_error_numeric_overflow:
        return "a number is too large";
    case json_error_null_character:
    case json_error_null_byte_in_key:
        return "a string contains a NUL character (\\u0000)";
    case json_error_invalid_utf8:
        return "a string is not valid UTF-8";
    case json_error_stack_overflow:
        return "the value nests too deeply";
    default:
        return "unexpected or missing character";
    }
}

static const char s_one_object[] = "send one JSON-RPC 2.0 request object per text frame";

//  Shape checks on a parsed object: fills msg or rejects.
static int s_check (gw_rpc_msg_t *msg, char **reply_p)
{
    json_t *root = msg->root;
    //  The id first, so later complaints can echo it.
    json_t *id = json_object_get (root, "id");
    bool has_id = id != NULL;
    if (has_id && !json_is_string (id) && !json_is_integer (id) && !json_is_null (id))
        return s_reject (reply_p, CM_E_INVALID, NULL, GW_RPC_INVALID_REQUEST, NULL,
                         "invalid request: \"id\" must be a string or an integer "
                         "(not %s); use a whole number or a short string",
                         json_is_real (id)     ? "a fraction"
                         : json_is_object (id) ? "an object"
                         : json_is_array (id)  ? "an array"
                                               : "a boolean");
    if (json_is_string (id) && json_string_length (id) > GW_RPC_MAX_ID)
        return s_reject (reply_p, CM_E_INVALID, NULL, GW_RPC_INVALID_REQUEST, NULL,
                         "invalid request: a string \"id\" may be at most %d bytes; "
                         "use a shorter id",
                         GW_RPC_MAX_ID);
    json_t *echo = json_is_null (id) ? NULL : id;

    json_t *version = json_object_get (root, "jsonrpc");
    if (!json_is_string (version) || strcmp (json_string_value (version), "2.0") != 0 ||
        json_string_length (version) != 3)
        return s_reject (reply_p, CM_E_INVALID, echo, GW_RPC_INVALID_REQUEST, NULL,
                         "invalid request: the message must contain \"jsonrpc\": "
                         "\"2.0\"; Corral speaks JSON-RPC 2.0 only");

    json_t *method = json_object_get (root, "method");
    json_t *result = json_object_get (root, "result");
    json_t *error = json_object_get (root, "error");
    if (method) {
        if (result || error)
            return s_reject (reply_p, CM_E_INVALID, echo, GW_RPC_INVALID_REQUEST, NULL,
                             "invalid request: a message has either \"method\" or "
                             "\"result\"/\"error\", not both");
        if (has_id && !echo)
            return s_reject (reply_p, CM_E_INVALID, NULL, GW_RPC_INVALID_REQUEST, NULL,
                             "invalid request: \"id\" must not be null; use a "
                             "string or an integer, or omit it for a notification");
        size_t mlen = json_is_string (method) ? json_string_length (method) : 0;
        if (mlen == 0 || mlen > GW_RPC_MAX_METHOD)
            return s_reject (reply_p, CM_E_INVALID, echo, GW_RPC_INVALID_REQUEST, NULL,
                             "invalid request: \"method\" must be a non-empty string "
                             "of at most %d bytes naming an ACP method",
                             GW_RPC_MAX_METHOD);
        json_t *params = json_object_get (root, "params");
        if (params && !json_is_object (params) && !json_is_array (params))
            return s_reject (reply_p, CM_E_TYPE, echo, GW_RPC_INVALID_PARAMS, NULL,
                             "invalid params: \"params\" must be an object (or an "
                             "array); omit it when the method takes none");
        msg->kind = echo ? GW_RPC_REQUEST : GW_RPC_NOTIFICATION;
        msg->id = echo;
        msg->method = json_string_value (method);
        msg->params = params;
        return 0;
    }
    if (!result && !error)
        return s_reject (reply_p, CM_E_INVALID, echo, GW_RPC_INVALID_REQUEST, NULL,
                         "invalid request: the message has no \"method\"; %s",
                         s_one_object);
    if (result && error)
        return s_reject (reply_p, CM_E_INVALID, echo, GW_RPC_INVALID_REQUEST, NULL,
                         "invalid request: a response has either \"result\" or "
                         "\"error\", not both");
    if (!has_id || (result && !echo))
        return s_reject (reply_p, CM_E_INVALID, NULL, GW_RPC_INVALID_REQUEST, NULL,
                         "invalid request: a response must carry the \"id\" of the "
                         "request it answers");
    if (result) {
        msg->kind = GW_RPC_RESULT;
        msg->id = id;
        msg->result = result;
        return 0;
    }
    json_t *code = json_object_get (error, "code");
    json_t *text = json_object_get (error, "message");
    if (!json_is_object (error) || !json_is_integer (code) || !json_is_string (text) ||
        json_integer_value (code) < INT_MIN || json_integer_value (code) > INT_MAX)
        return s_reject (reply_p, CM_E_INVALID, echo, GW_RPC_INVALID_REQUEST, NULL,
                         "invalid request: \"error\" must be an object with an "
                         "integer \"code\" (32-bit) and a string \"message\"");
    msg->kind = GW_RPC_ERROR;
    msg->id = id;
    msg->error_code = (int)json_integer_value (code);
    msg->error_message = json_string_value (text);
    msg->error_data = json_object_get (error, "data");
    return 0;
}

int gw_rpc_parse (const char *data, size_t len, const gw_rpc_limits_t *limits,
                  gw_rpc_msg_t **msg_p, char **reply_p)
{
    assert (msg_p && reply_p);
    assert (data || len == 0);
    gw_rpc_limits_t lim = {GW_RPC_MAX_FRAME_DEFAULT, GW_RPC_MAX_DEPTH_DEFAULT};
    if (limits) lim = *limits;
    assert (lim.max_frame >= 1);
    assert (lim.max_depth >= 1 && lim.max_depth <= GW_RPC_MAX_DEPTH_LIMIT);
    *msg_p = NULL;
    *reply_p = NULL;

    if (len > lim.max_frame)
        return s_reject (reply_p, CM_E_TOO_LARGE, NULL, GW_RPC_TOO_LARGE,
                         s_limit_data ("too_large", lim.max_frame),
                         "too large: the message is %zu bytes and the limit is %zu; "
                         "send smaller messages",
                         len, lim.max_frame);
    size_t where = 0;
    int rc = s_prescan ((const unsigned char *)data, len, lim.max_depth, &where);
    if (rc == CM_E_DEPTH)
        return s_reject (reply_p, rc, NULL, GW_RPC_TOO_LARGE,
                         s_limit_data ("depth", (size_t)lim.max_depth),
                         "too large: the message nests objects and arrays more than "
                         "%d deep (at byte %zu); flatten it",
                         lim.max_depth, where);
    if (rc != 0)
        return s_reject (reply_p, rc, NULL, GW_RPC_PARSE_ERROR, NULL,
                         "parse error: the message is not valid UTF-8 (at byte %zu); "
                         "send text frames in UTF-8",
                         where);

    json_error_t jerr;
    json_t *root = json_loadb (len ? data : "", len, JSON_DECODE_ANY, &jerr);
    if (!root) {
        if (json_error_code (&jerr) == json_error_out_of_memory) return CM_E_NOMEM;
        bool blank = true;
        for (size_t i = 0; i < len && blank; i++)
            blank =
                data[i] == ' ' || data[i] == '\t' || data[i] == '\n' || data[i] == '\r';
        if (blank)
            return s_reject (reply_p, CM_E_INVALID, NULL, GW_RPC_PARSE_ERROR, NULL,
                             "parse error: the message is empty; %s", s_one_object);
        return s_reject (reply_p, CM_E_INVALID, NULL, GW_RPC_PARSE_ERROR, NULL,
                         "parse error: the message is not valid JSON: %s at line "
                         "%d, column %d (byte %d); %s",
                         s_json_problem (&jerr), jerr.line, jerr.column, jerr.position,
                         s_one_object);
    }
    if (json_is_array (root)) {
        json_decref (root);
        return s_reject (reply_p, CM_E_INVALID, NULL, GW_RPC_INVALID_REQUEST, NULL,
                         "invalid request: batches are not supported; %s", s_one_object);
    }
    if (!json_is_object (root)) {
        json_decref (root);
        return s_reject (reply_p, CM_E_INVALID, NULL, GW_RPC_INVALID_REQUEST, NULL,
                         "invalid request: the message is not a JSON object; %s",
                         s_one_object);
    }
    gw_rpc_msg_t *msg = (gw_rpc_msg_t *)calloc (1, sizeof *msg);
    if (!msg) {
        json_decref (root);
        return CM_E_NOMEM;
    }
    msg->root = root;
    rc = s_check (msg, reply_p);
    if (rc != 0) {
        gw_rpc_msg_destroy (&msg);
        return rc;
    }
    *msg_p = msg;
    return 0;
}

void gw_rpc_msg_destroy (gw_rpc_msg_t **msg_p)
{
    if (!msg_p || !*msg_p) return;
    json_decref ((*msg_p)->root);
    free (*msg_p);
    *msg_p = NULL;
}
