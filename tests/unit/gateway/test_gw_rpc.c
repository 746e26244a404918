/*  test_gw_rpc.c - JSON-RPC framing: what parses, every rejection class
    (each limit at the limit and one past it), the builders' texts and the
    cm code -> JSON-RPC code table.
*/
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cm_error.h"
#include "gw_rpc.h"

// ---------------------------------------------------------------------------
//  Helpers

static gw_rpc_msg_t *s_parse_ok_n (const char *text, size_t len,
                                   const gw_rpc_limits_t *limits)
{
    gw_rpc_msg_t *msg = NULL;
    char *reply = NULL;
    int rc = gw_rpc_parse (text, len, limits, &msg, &reply);
    if (rc != 0) fprintf (stderr, "unexpected rejection: %s\n", reply ? reply : "?");
    assert_int_equal (rc, 0);
    assert_null (reply);
    assert_non_null (msg);
    return msg;
}

static gw_rpc_msg_t *s_parse_ok (const char *text)
{
    return s_parse_ok_n (text, strlen (text), NULL);
}

//  Parse a frame that must be rejected; check the reply is one JSON-RPC
//  error response with the expected code, id (JSON text, "null" for null)
//  and a message containing `says`.  Returns the reply's error object
//  (caller decrefs).
static json_t *s_reject_n (const char *text, size_t len, const gw_rpc_limits_t *limits,
                           int rc_expected, int code, const char *id_json,
                           const char *says)
{
    gw_rpc_msg_t *msg = NULL;
    char *reply = NULL;
    int rc = gw_rpc_parse (text, len, limits, &msg, &reply);
    assert_int_equal (rc, rc_expected);
    assert_null (msg);
    assert_non_null (reply);

    json_error_t jerr;
    json_t *root = json_loads (reply, 0, &jerr);
    assert_non_null (root);
    assert_string_equal (json_string_value (json_object_get (root, "jsonrpc")), "2.0");
    json_t *want_id = json_loads (id_json, JSON_DECODE_ANY, &jerr);
    assert_non_null (want_id);
    json_t *id = json_object_get (root, "id");
    assert_non_null (id);
    assert_true (json_equal (id, want_id));
    json_decref (want_id);
    assert_null (json_object_get (root, "result"));

    json_t *error = json_incref (json_object_get (root, "error"));
    assert_true (json_is_object (error));
    assert_int_equal (json_integer_value (json_object_get (error, "code")), code);
    const char *message = json_string_value (json_object_get (error, "message"));
    assert_non_null (message);
    if (!strstr (message, says)) fprintf (stderr, "message: %s\n", message);
    assert_non_null (strstr (message, says));
    //  Our words only: jansson's texts quote tokens ("'[' or '{' expected
    //  near ...") or name its internals.
    assert_null (strstr (message, "near"));
    assert_null (strstr (message, "'"));
    assert_true (strlen (message) < 400);
    json_decref (root);
    free (reply);
    return error;
}

static void s_reject (const char *text, int rc_expected, int code, const char *id_json,
                      const char *says)
{
    json_decref (
        s_reject_n (text, strlen (text), NULL, rc_expected, code, id_json, says));
}

//  A request whose params nest `depth` arrays (the whole frame nests
//  depth + 1, counting the envelope object).
static char *s_nested (int depth)
{
    size_t cap = 64 + 2 * (size_t)depth;
    char *text = (char *)malloc (cap);
    assert_non_null (text);
    int n = sprintf (text, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"m\",\"params\":");
    for (int i = 0; i < depth; i++) text[n++] = '[';
    for (int i = 0; i < depth; i++) text[n++] = ']';
    text[n++] = '}';
    text[n] = 0;
    return text;
}

// ---------------------------------------------------------------------------
//  What parses

static void test_request (void **state)
{
    gw_rpc_msg_t *msg =
        s_parse_ok ("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"session/"
                    "new\",\"params\":{\"cwd\":\"/w\",\"mcpServers\":[]}}");
    assert_int_equal (msg->kind, GW_RPC_REQUEST);
    assert_true (json_is_integer (msg->id));
    assert_int_equal (json_integer_value (msg->id), 1);
    assert_string_equal (msg->method, "session/new");
    assert_true (json_is_object (msg->params));
    assert_string_equal (json_string_value (json_object_get (msg->params, "cwd")), "/w");
    gw_rpc_msg_destroy (&msg);
    assert_null (msg);
    gw_rpc_msg_destroy (&msg); //  idempotent
    gw_rpc_msg_destroy (NULL);

    //  String id, array params, unknown members ignored, any member order.
    msg = s_parse_ok ("{\"params\":[1,2],\"method\":\"_corral/usage\",\"id\":\"req-7\","
                      "\"jsonrpc\":\"2.0\",\"_meta\":{}}");
    assert_int_equal (msg->kind, GW_RPC_REQUEST);
    assert_string_equal (json_string_value (msg->id), "req-7");
    assert_string_equal (msg->method, "_corral/usage");
    assert_true (json_is_array (msg->params));
    gw_rpc_msg_destroy (&msg);

    //  No params; negative and 64-bit ids are echoed as they came.
    msg = s_parse_ok ("{\"jsonrpc\":\"2.0\",\"id\":-5,\"method\":\"session/list\"}");
    assert_null (msg->params);
    assert_int_equal (json_integer_value (msg->id), -5);
    gw_rpc_msg_destroy (&msg);
    msg = s_parse_ok (
        "{\"jsonrpc\":\"2.0\",\"id\":9223372036854775807,\"method\":\"initialize\"}");
    assert_true (json_integer_value (msg->id) == 9223372036854775807LL);
    gw_rpc_msg_destroy (&msg);
}

static void test_notification (void **state)
{
    gw_rpc_msg_t *msg =
        s_parse_ok ("{\"jsonrpc\":\"2.0\",\"method\":\"$/cancel_request\","
                    "\"params\":{\"requestId\":3}}");
    assert_int_equal (msg->kind, GW_RPC_NOTIFICATION);
    assert_null (msg->id);
    assert_string_equal (msg->method, "$/cancel_request");
    assert_int_equal (json_integer_value (json_object_get (msg->params, "requestId")), 3);
    gw_rpc_msg_destroy (&msg);

    msg = s_parse_ok (" \n{\"jsonrpc\":\"2.0\",\"method\":\"session/cancel\","
                      "\"params\":{\"sessionId\":\"s1\"}}\r\n");
    assert_int_equal (msg->kind, GW_RPC_NOTIFICATION);
    gw_rpc_msg_destroy (&msg);
}

static void test_responses (void **state)
{
    //  The answer to our session/request_permission.
    gw_rpc_msg_t *msg = s_parse_ok (
        "{\"jsonrpc\":\"2.0\",\"id\":\"perm-1\",\"result\":{\"outcome\":{\"outcome\":"
        "\"selected\",\"optionId\":\"allow_once\"}}}");
    assert_int_equal (msg->kind, GW_RPC_RESULT);
    assert_string_equal (json_string_value (msg->id), "perm-1");
    assert_true (json_is_object (msg->result));
    assert_null (msg->method);
    gw_rpc_msg_destroy (&msg);

    msg = s_parse_ok ("{\"jsonrpc\":\"2.0\",\"id\":4,\"result\":null}");
    assert_int_equal (msg->kind, GW_RPC_RESULT);
    assert_true (json_is_null (msg->result));
    gw_rpc_msg_destroy (&msg);

    msg = s_parse_ok ("{\"jsonrpc\":\"2.0\",\"id\":4,\"error\":{\"code\":-32800,"
                      "\"message\":\"cancelled\",\"data\":{\"x\":1}}}");
    assert_int_equal (msg->kind, GW_RPC_ERROR);
    assert_int_equal (msg->error_code, -32800);
    assert_string_equal (msg->error_message, "cancelled");
    assert_true (json_is_object (msg->error_data));
    gw_rpc_msg_destroy (&msg);

    //  A client that could not read our message answers with id null.
    msg = s_parse_ok ("{\"jsonrpc\":\"2.0\",\"id\":null,\"error\":{\"code\":-32700,"
                      "\"message\":\"parse error\"}}");
    assert_int_equal (msg->kind, GW_RPC_ERROR);
    assert_true (json_is_null (msg->id));
    assert_null (msg->error_data);
    gw_rpc_msg_destroy (&msg);
}

static void test_utf8_accepted (void **state)
{
    //  2-, 3- and 4-byte sequences, the highest code point, and escapes.
    const char *text =
        "{\"jsonrpc\":\"2.0\",\"id\":\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80"
        "\xf4\x8f\xbf\xbf\",\"method\":\"m\",\"params\":{\"t\":"
        "\"\\u00e9\\ud83d\\ude00\"}}";
    gw_rpc_msg_t *msg = s_parse_ok (text);
    assert_string_equal (json_string_value (msg->id),
                         "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\xf4\x8f\xbf\xbf");
    assert_string_equal (json_string_value (json_object_get (msg->params, "t")),
                         "\xc3\xa9\xf0\x9f\x98\x80");
    gw_rpc_msg_destroy (&msg);
}

// ---------------------------------------------------------------------------
//  Limits, each at the limit and one past

static void test_frame_size_limit (void **state)
{
    gw_rpc_limits_t lim = {.max_frame = 100, .max_depth = GW_RPC_MAX_DEPTH_DEFAULT};
    const char *base = "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"m\"}";
    char text[128];
    memset (text, ' ', sizeof text);
    memcpy (text, base, strlen (base));

    gw_rpc_msg_t *msg = s_parse_ok_n (text, 100, &lim);
    assert_int_equal (msg->kind, GW_RPC_REQUEST);
    gw_rpc_msg_destroy (&msg);

    json_t *error = s_reject_n (text, 101, &lim, CM_E_TOO_LARGE, GW_RPC_TOO_LARGE, "null",
                                "limit is 100");
    json_t *data = json_object_get (error, "data");
    assert_int_equal (json_integer_value (json_object_get (data, "limit")), 100);
    assert_string_equal (json_string_value (json_object_get (data, "reason")),
                         "too_large");
    json_decref (error);

    //  The default cap is 1 MiB.
    size_t big = GW_RPC_MAX_FRAME_DEFAULT + 1;
    char *huge = (char *)malloc (big);
    assert_non_null (huge);
    memset (huge, ' ', big);
    memcpy (huge, base, strlen (base));
    msg = s_parse_ok_n (huge, big - 1, NULL);
    gw_rpc_msg_destroy (&msg);
    json_decref (s_reject_n (huge, big, NULL, CM_E_TOO_LARGE, GW_RPC_TOO_LARGE, "null",
                             "too large"));
    free (huge);
}

static void test_depth_limit (void **state)
{
    gw_rpc_limits_t lim = {.max_frame = GW_RPC_MAX_FRAME_DEFAULT, .max_depth = 8};
    //  The envelope is depth 1, so 7 nested arrays reach exactly 8.
    char *text = s_nested (7);
    gw_rpc_msg_t *msg = s_parse_ok_n (text, strlen (text), &lim);
    gw_rpc_msg_destroy (&msg);
    free (text);

    text = s_nested (8);
    json_t *error = s_reject_n (text, strlen (text), &lim, CM_E_DEPTH, GW_RPC_TOO_LARGE,
                                "null", "more than 8 deep");
    assert_int_equal (
        json_integer_value (json_object_get (json_object_get (error, "data"), "limit")),
        8);
    json_decref (error);
    free (text);

    //  The default cap: 64 at the limit, 65 rejected.
    text = s_nested (GW_RPC_MAX_DEPTH_DEFAULT - 1);
    msg = s_parse_ok (text);
    gw_rpc_msg_destroy (&msg);
    free (text);
    text = s_nested (GW_RPC_MAX_DEPTH_DEFAULT);
    s_reject (text, CM_E_DEPTH, GW_RPC_TOO_LARGE, "null", "deep");
    free (text);

    //  Far deeper than jansson's own limit: still our check, our words.
    text = s_nested (100000);
    s_reject (text, CM_E_DEPTH, GW_RPC_TOO_LARGE, "null", "more than 64 deep");
    free (text);

    //  Brackets inside strings do not count, escaped quotes included.
    lim.max_depth = 2;
    const char *quoted =
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"m\",\"params\":{\"s\":"
        "\"[[[{{{\\\"[[[{{{\\\\\",\"t\":\"]]]}}}\"}}";
    msg = s_parse_ok_n (quoted, strlen (quoted), &lim);
    assert_string_equal (json_string_value (json_object_get (msg->params, "s")),
                         "[[[{{{\"[[[{{{\\");
    gw_rpc_msg_destroy (&msg);
    //  ...and closing brackets inside strings do not lower the count.
    lim.max_depth = 3;
    const char *sneaky =
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"m\",\"params\":{\"a\":"
        "[\"]]]]\",[[1]]]}}";
    json_decref (s_reject_n (sneaky, strlen (sneaky), &lim, CM_E_DEPTH, GW_RPC_TOO_LARGE,
                             "null", "more than 3 deep"));
}

// ---------------------------------------------------------------------------
//  Rejections

static void test_invalid_utf8 (void **state)
{
    static const char *bad[] = {
        "\xff",             //  never valid
        "\xc0\xaf",         //  overlong '/'
        "\xe0\x80\xaf",     //  overlong, 3 bytes
        "\xed\xa0\x80",     //  a UTF-16 surrogate
        "\xf4\x90\x80\x80", //  above U+10FFFF
        "\xe2\x82",         //  truncated at the end of the string
        "\x80",             //  a lone continuation byte
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char text[128];
        snprintf (text, sizeof text, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"m%s\"}",
                  bad[i]);
        s_reject (text, CM_E_INVALID, GW_RPC_PARSE_ERROR, "null", "not valid UTF-8");
    }
    //  Truncated at the very end of the frame, outside any string.
    s_reject ("{}\xf0\x9f\x98", CM_E_INVALID, GW_RPC_PARSE_ERROR, "null", "UTF-8");
}

static void test_invalid_json (void **state)
{
    s_reject ("{\"jsonrpc\":", CM_E_INVALID, GW_RPC_PARSE_ERROR, "null", "ends before");
    s_reject ("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"m\"} {}", CM_E_INVALID,
              GW_RPC_PARSE_ERROR, "null", "more text after");
    s_reject ("{\"jsonrpc\" \"2.0\"}", CM_E_INVALID, GW_RPC_PARSE_ERROR, "null",
              "line 1, column");
    s_reject ("{'jsonrpc':'2.0'}", CM_E_INVALID, GW_RPC_PARSE_ERROR, "null",
              "not valid JSON");
    s_reject ("", CM_E_INVALID, GW_RPC_PARSE_ERROR, "null", "empty");
    s_reject (" \r\n\t", CM_E_INVALID, GW_RPC_PARSE_ERROR, "null", "empty");
    s_reject ("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"m\\u0000\"}", CM_E_INVALID,
              GW_RPC_PARSE_ERROR, "null", "NUL");
    //  A raw NUL byte inside the frame (frames carry a length, not a NUL).
    const char raw[] = "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"a\0b\"}";
    json_decref (s_reject_n (raw, sizeof raw - 1, NULL, CM_E_INVALID, GW_RPC_PARSE_ERROR,
                             "null", "not valid JSON"));
    //  Huge numbers do not fit: a parse error, not a silent rounding.
    s_reject ("{\"jsonrpc\":\"2.0\",\"id\":99999999999999999999,\"method\":\"m\"}",
              CM_E_INVALID, GW_RPC_PARSE_ERROR, "null", "number is too large");
    s_reject ("{\"jsonrpc\":\"2.0\",\"id\":1e400,\"method\":\"m\"}", CM_E_INVALID,
              GW_RPC_PARSE_ERROR, "null", "number is too large");
}

static void test_not_one_object (void **state)
{
    s_reject ("[{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"initialize\"}]", CM_E_INVALID,
              GW_RPC_INVALID_REQUEST, "null", "batches are not supported");
    s_reject ("[]", CM_E_INVALID, GW_RPC_INVALID_REQUEST, "null", "batches");
    s_reject ("42", CM_E_INVALID, GW_RPC_INVALID_REQUEST, "null", "not a JSON object");
    s_reject ("\"hello\"", CM_E_INVALID, GW_RPC_INVALID_REQUEST, "null", "not a JSON");
    s_reject ("null", CM_E_INVALID, GW_RPC_INVALID_REQUEST, "null", "not a JSON object");
    s_reject ("true", CM_E_INVALID, GW_RPC_INVALID_REQUEST, "null", "not a JSON object");
}

static void test_jsonrpc_member (void **state)
{
    //  The id is readable, so the reply echoes it.
    s_reject ("{\"id\":7,\"method\":\"m\"}", CM_E_INVALID, GW_RPC_INVALID_REQUEST, "7",
              "\"jsonrpc\": \"2.0\"");
    s_reject ("{\"jsonrpc\":\"1.0\",\"id\":\"a\",\"method\":\"m\"}", CM_E_INVALID,
              GW_RPC_INVALID_REQUEST, "\"a\"", "JSON-RPC 2.0 only");
    s_reject ("{\"jsonrpc\":2.0,\"id\":7,\"method\":\"m\"}", CM_E_INVALID,
              GW_RPC_INVALID_REQUEST, "7", "jsonrpc");
    s_reject ("{\"jsonrpc\":\"2.0 \",\"method\":\"m\"}", CM_E_INVALID,
              GW_RPC_INVALID_REQUEST, "null", "jsonrpc");
}

static void test_id_types (void **state)
{
    s_reject ("{\"jsonrpc\":\"2.0\",\"id\":1.5,\"method\":\"m\"}", CM_E_INVALID,
              GW_RPC_INVALID_REQUEST, "null", "not a fraction");
    s_reject ("{\"jsonrpc\":\"2.0\",\"id\":1.0,\"method\":\"m\"}", CM_E_INVALID,
              GW_RPC_INVALID_REQUEST, "null", "not a fraction");
    s_reject ("{\"jsonrpc\":\"2.0\",\"id\":{\"a\":1},\"method\":\"m\"}", CM_E_INVALID,
              GW_RPC_INVALID_REQUEST, "null", "not an object");
    s_reject ("{\"jsonrpc\":\"2.0\",\"id\":[1],\"method\":\"m\"}", CM_E_INVALID,
              GW_RPC_INVALID_REQUEST, "null", "not an array");
    s_reject ("{\"jsonrpc\":\"2.0\",\"id\":true,\"method\":\"m\"}", CM_E_INVALID,
              GW_RPC_INVALID_REQUEST, "null", "not a boolean");
    s_reject ("{\"jsonrpc\":\"2.0\",\"id\":null,\"method\":\"m\"}", CM_E_INVALID,
              GW_RPC_INVALID_REQUEST, "null", "must not be null");

    //  String id length: at the limit and one past.
    char text[GW_RPC_MAX_ID + 128];
    char id[GW_RPC_MAX_ID + 2];
    memset (id, 'x', sizeof id);
    id[GW_RPC_MAX_ID] = 0;
    snprintf (text, sizeof text, "{\"jsonrpc\":\"2.0\",\"id\":\"%s\",\"method\":\"m\"}",
              id);
    gw_rpc_msg_t *msg = s_parse_ok (text);
    assert_int_equal (json_string_length (msg->id), GW_RPC_MAX_ID);
    gw_rpc_msg_destroy (&msg);
    id[GW_RPC_MAX_ID] = 'x';
    id[GW_RPC_MAX_ID + 1] = 0;
    snprintf (text, sizeof text, "{\"jsonrpc\":\"2.0\",\"id\":\"%s\",\"method\":\"m\"}",
              id);
    s_reject (text, CM_E_INVALID, GW_RPC_INVALID_REQUEST, "null", "at most 256 bytes");
}

static void test_method_and_params (void **state)
{
    s_reject ("{\"jsonrpc\":\"2.0\",\"id\":1}", CM_E_INVALID, GW_RPC_INVALID_REQUEST, "1",
              "no \"method\"");
    s_reject ("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":5}", CM_E_INVALID,
              GW_RPC_INVALID_REQUEST, "1", "\"method\" must be a non-empty string");
    s_reject ("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"\"}", CM_E_INVALID,
              GW_RPC_INVALID_REQUEST, "1", "non-empty");
    s_reject ("{\"jsonrpc\":\"2.0\",\"method\":null}", CM_E_INVALID,
              GW_RPC_INVALID_REQUEST, "null", "method");

    //  Method length: at the limit and one past.
    char name[GW_RPC_MAX_METHOD + 2], text[GW_RPC_MAX_METHOD + 128];
    memset (name, 'm', sizeof name);
    name[GW_RPC_MAX_METHOD] = 0;
    snprintf (text, sizeof text, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"%s\"}",
              name);
    gw_rpc_msg_t *msg = s_parse_ok (text);
    assert_int_equal (strlen (msg->method), GW_RPC_MAX_METHOD);
    gw_rpc_msg_destroy (&msg);
    name[GW_RPC_MAX_METHOD] = 'm';
    name[GW_RPC_MAX_METHOD + 1] = 0;
    snprintf (text, sizeof text, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"%s\"}",
              name);
    s_reject (text, CM_E_INVALID, GW_RPC_INVALID_REQUEST, "1", "at most 128 bytes");

    //  params must be structured; the id is echoed.
    s_reject ("{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"m\",\"params\":\"x\"}",
              CM_E_TYPE, GW_RPC_INVALID_PARAMS, "3", "\"params\" must be an object");
    s_reject ("{\"jsonrpc\":\"2.0\",\"id\":\"q\",\"method\":\"m\",\"params\":null}",
              CM_E_TYPE, GW_RPC_INVALID_PARAMS, "\"q\"", "omit it");
    s_reject ("{\"jsonrpc\":\"2.0\",\"method\":\"m\",\"params\":42}", CM_E_TYPE,
              GW_RPC_INVALID_PARAMS, "null", "params");

    //  method together with result/error.
    s_reject ("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"m\",\"result\":{}}",
              CM_E_INVALID, GW_RPC_INVALID_REQUEST, "1", "not both");
}

static void test_bad_responses (void **state)
{
    s_reject ("{\"jsonrpc\":\"2.0\",\"result\":{}}", CM_E_INVALID, GW_RPC_INVALID_REQUEST,
              "null", "must carry the \"id\"");
    s_reject ("{\"jsonrpc\":\"2.0\",\"id\":null,\"result\":{}}", CM_E_INVALID,
              GW_RPC_INVALID_REQUEST, "null", "\"id\"");
    s_reject ("{\"jsonrpc\":\"2.0\",\"id\":2,\"result\":{},\"error\":{\"code\":1,"
              "\"message\":\"x\"}}",
              CM_E_INVALID, GW_RPC_INVALID_REQUEST, "2", "not both");
    s_reject ("{\"jsonrpc\":\"2.0\",\"id\":2,\"error\":\"boom\"}", CM_E_INVALID,
              GW_RPC_INVALID_REQUEST, "2", "integer \"code\"");
    s_reject ("{\"jsonrpc\":\"2.0\",\"id\":2,\"error\":{\"code\":1.5,\"message\":\"x\"}}",
              CM_E_INVALID, GW_RPC_INVALID_REQUEST, "2", "\"error\" must be an object");
    s_reject ("{\"jsonrpc\":\"2.0\",\"id\":2,\"error\":{\"code\":4294967296,"
              "\"message\":\"x\"}}",
              CM_E_INVALID, GW_RPC_INVALID_REQUEST, "2", "32-bit");
    s_reject ("{\"jsonrpc\":\"2.0\",\"id\":2,\"error\":{\"code\":1}}", CM_E_INVALID,
              GW_RPC_INVALID_REQUEST, "2", "string \"message\"");
}

// ---------------------------------------------------------------------------
//  Builders: every text re-parses as the message it claims to be

static void test_builders (void **state)
{
    json_t *id = json_integer (12);
    json_t *sid = json_string ("perm-3");
    json_t *result = json_pack ("{s:s}", "stopReason", "end_turn");
    json_t *params = json_pack ("{s:s,s:{s:s}}", "sessionId", "s_1", "update",
                                "sessionUpdate", "agent_message_chunk");

    char *text = gw_rpc_result (id, result);
    gw_rpc_msg_t *msg = s_parse_ok (text);
    assert_int_equal (msg->kind, GW_RPC_RESULT);
    assert_true (json_equal (msg->id, id));
    assert_true (json_equal (msg->result, result));
    gw_rpc_msg_destroy (&msg);
    free (text);

    text = gw_rpc_result (sid, NULL);
    assert_string_equal (text, "{\"jsonrpc\":\"2.0\",\"id\":\"perm-3\",\"result\":null}");
    free (text);

    json_t *data = json_pack ("{s:b}", "retryable", 1);
    text = gw_rpc_error (id, GW_RPC_UPSTREAM, "provider failed", data);
    msg = s_parse_ok (text);
    assert_int_equal (msg->kind, GW_RPC_ERROR);
    assert_int_equal (msg->error_code, GW_RPC_UPSTREAM);
    assert_string_equal (msg->error_message, "provider failed");
    assert_true (json_equal (msg->error_data, data));
    gw_rpc_msg_destroy (&msg);
    free (text);
    json_decref (data);

    //  id null (a frame whose id could not be read), no data.
    text = gw_rpc_error (NULL, GW_RPC_PARSE_ERROR, "bad", NULL);
    assert_string_equal (
        text, "{\"jsonrpc\":\"2.0\",\"id\":null,\"error\":{\"code\":-32700,\"message\":"
              "\"bad\"}}");
    msg = s_parse_ok (text);
    assert_true (json_is_null (msg->id));
    gw_rpc_msg_destroy (&msg);
    free (text);
    //  A message that is not UTF-8 cannot be sent.
    assert_null (gw_rpc_error (id, GW_RPC_INTERNAL_ERROR, "\xff", NULL));

    text = gw_rpc_notification ("session/update", params);
    msg = s_parse_ok (text);
    assert_int_equal (msg->kind, GW_RPC_NOTIFICATION);
    assert_string_equal (msg->method, "session/update");
    assert_true (json_equal (msg->params, params));
    gw_rpc_msg_destroy (&msg);
    free (text);

    text = gw_rpc_notification ("_corral/session/state", NULL);
    assert_string_equal (text,
                         "{\"jsonrpc\":\"2.0\",\"method\":\"_corral/session/state\"}");
    free (text);

    text = gw_rpc_request (sid, "session/request_permission", params);
    msg = s_parse_ok (text);
    assert_int_equal (msg->kind, GW_RPC_REQUEST);
    assert_string_equal (json_string_value (msg->id), "perm-3");
    assert_string_equal (msg->method, "session/request_permission");
    assert_true (json_equal (msg->params, params));
    gw_rpc_msg_destroy (&msg);
    free (text);

    //  Arguments are borrowed: still ours, exactly one reference each.
    assert_int_equal (id->refcount, 1);
    assert_int_equal (params->refcount, 1);
    assert_int_equal (result->refcount, 1);
    json_decref (id);
    json_decref (sid);
    json_decref (result);
    json_decref (params);
}

// ---------------------------------------------------------------------------
//  The cm code table

//  What every cm code becomes: the client contract, spelled out.
static const struct {
    int cm, rpc;
} s_expected[] = {
    {CM_E_INVALID, GW_RPC_INVALID_PARAMS},
    {CM_E_NOT_FOUND, GW_RPC_NOT_FOUND},
    {CM_E_BUSY, GW_RPC_BUSY},
    {CM_E_CAPACITY, GW_RPC_CAPACITY},
    {CM_E_RATE_LIMITED, GW_RPC_RATE_LIMITED},
    {CM_E_FORBIDDEN, GW_RPC_FORBIDDEN},
    {CM_E_TOO_LARGE, GW_RPC_TOO_LARGE},
    {CM_E_CONFLICT, GW_RPC_CONFLICT},
    {CM_E_EXPIRED, GW_RPC_EXPIRED},
    {CM_E_WORKER_LOST, GW_RPC_WORKER_LOST},
    {CM_E_UPSTREAM, GW_RPC_UPSTREAM},
    {CM_E_INTERNAL, GW_RPC_INTERNAL_ERROR},
    {CM_E_VERSION, GW_RPC_INTERNAL_ERROR},
    {CM_E_TRUNCATED, GW_RPC_INTERNAL_ERROR},
    {CM_E_TYPE, GW_RPC_INVALID_PARAMS},
    {CM_E_MISSING, GW_RPC_INVALID_PARAMS},
    {CM_E_DEPTH, GW_RPC_TOO_LARGE},
    {CM_E_GAP, GW_RPC_INTERNAL_ERROR},
    {CM_E_FULL, GW_RPC_CAPACITY},
    {CM_E_IO, GW_RPC_INTERNAL_ERROR},
    {CM_E_NOMEM, GW_RPC_INTERNAL_ERROR},
    {CM_E_TIMEOUT, GW_RPC_UNAVAILABLE},
    {CM_E_UNAUTHORIZED, GW_RPC_AUTH_REQUIRED},
    {CM_E_UNAVAILABLE, GW_RPC_UNAVAILABLE},
    {CM_E_CORRUPT, GW_RPC_INTERNAL_ERROR},
    {CM_E_SCHEMA, GW_RPC_INTERNAL_ERROR},
    {CM_E_UNKNOWN_TYPE, GW_RPC_INTERNAL_ERROR},
    {CM_E_CANCELLED, GW_RPC_CANCELLED},
    {CM_E_MEMORY_LIMIT, GW_RPC_MEMORY_LIMIT},
    {CM_E_BUDGET, GW_RPC_BUDGET},
};
#define S_EXPECTED (sizeof s_expected / sizeof s_expected[0])

static const int s_all_cm[] = {
#define S_CODE(sym, val, name, msg) sym,
    CM_ERRORS (S_CODE)
#undef S_CODE
};

//  Build gw_rpc_error_from_cm's text and return its error object.
static json_t *s_from_cm (json_t *id, int cm, json_t *detail)
{
    char *text = gw_rpc_error_from_cm (id, cm, detail);
    assert_non_null (text);
    gw_rpc_msg_t *msg = s_parse_ok (text);
    free (text);
    assert_int_equal (msg->kind, GW_RPC_ERROR);
    json_t *error = json_incref (json_object_get (msg->root, "error"));
    gw_rpc_msg_destroy (&msg);
    return error;
}

static void test_cm_table (void **state)
{
    //  The expectations above cover every cm code there is.
    assert_int_equal (S_EXPECTED, sizeof s_all_cm / sizeof s_all_cm[0]);
    for (size_t i = 0; i < S_EXPECTED; i++) {
        assert_int_equal (gw_rpc_code_from_cm (s_expected[i].cm), s_expected[i].rpc);
        assert_int_equal (gw_rpc_code_from_cm (-s_expected[i].cm), s_expected[i].rpc);
    }
    //  Every row is a real cm code, listed once, named as cm names it,
    //  with a message, and its code is not the fallback.
    size_t count = 0;
    const gw_rpc_cm_row_t *rows = gw_rpc_cm_table (&count);
    assert_true (count > 10);
    for (size_t i = 0; i < count; i++) {
        assert_string_equal (rows[i].reason, cm_errname (rows[i].cm_code));
        assert_true (strlen (rows[i].message) > 10);
        assert_int_not_equal (rows[i].rpc_code, GW_RPC_INTERNAL_ERROR);
        for (size_t j = i + 1; j < count; j++)
            assert_int_not_equal (rows[i].cm_code, rows[j].cm_code);

        json_t *id = json_integer ((json_int_t)i);
        json_t *error = s_from_cm (id, rows[i].cm_code, NULL);
        assert_int_equal (json_integer_value (json_object_get (error, "code")),
                          rows[i].rpc_code);
        assert_string_equal (json_string_value (json_object_get (error, "message")),
                             rows[i].message);
        json_t *data = json_object_get (error, "data");
        assert_string_equal (json_string_value (json_object_get (data, "reason")),
                             rows[i].reason);
        json_decref (error);
        json_decref (id);
    }
    //  Unknown codes, and 0, are internal errors without detail.
    static const int unknown[] = {-9999, 9999, 0, -2147483647 - 1, CM_E_IO, CM_E_GAP};
    json_t *detail = json_pack ("{s:s}", "sessionId", "s_1");
    for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
        assert_int_equal (gw_rpc_code_from_cm (unknown[i]), GW_RPC_INTERNAL_ERROR);
        json_t *error = s_from_cm (NULL, unknown[i], detail);
        assert_int_equal (json_integer_value (json_object_get (error, "code")),
                          GW_RPC_INTERNAL_ERROR);
        json_t *data = json_object_get (error, "data");
        assert_string_equal (json_string_value (json_object_get (data, "reason")),
                             "internal");
        assert_int_equal (json_object_size (data), 1);
        json_decref (error);
    }
    json_decref (detail);
}

static void test_cm_detail_allowlist (void **state)
{
    json_t *id = json_string ("r1");
    //  Only allowlisted keys with the right type survive.
    json_t *detail =
        json_pack ("{s:s,s:s,s:s,s:I,s:I,s:s,s:s,s:b}", "sessionId", "s_01HZ", "error",
                   "openai: 401 invalid api key sk-abc", "field", "has spaces", "limit",
                   (json_int_t)-1, "retryAfterMs", (json_int_t)1500, "epoch", "e-7",
                   "turnId", "t\"<x>", "retryable", 1);
    json_t *error = s_from_cm (id, CM_E_RATE_LIMITED, detail);
    assert_int_equal (json_integer_value (json_object_get (error, "code")),
                      GW_RPC_RATE_LIMITED);
    json_t *data = json_object_get (error, "data");
    assert_string_equal (json_string_value (json_object_get (data, "sessionId")),
                         "s_01HZ");
    assert_int_equal (json_integer_value (json_object_get (data, "retryAfterMs")), 1500);
    assert_string_equal (json_string_value (json_object_get (data, "epoch")), "e-7");
    assert_true (json_is_true (json_object_get (data, "retryable")));
    assert_null (json_object_get (data, "error"));
    assert_null (json_object_get (data, "field"));
    assert_null (json_object_get (data, "limit"));
    assert_null (json_object_get (data, "turnId"));
    assert_int_equal (json_object_size (data), 5); //  + reason
    json_decref (error);

    //  A detail string at the length limit is kept, one past is dropped.
    char long_id[GW_RPC_MAX_DETAIL + 2];
    memset (long_id, 'a', sizeof long_id);
    long_id[GW_RPC_MAX_DETAIL] = 0;
    json_object_set_new (detail, "sessionId", json_string (long_id));
    error = s_from_cm (id, CM_E_NOT_FOUND, detail);
    assert_int_equal (json_string_length (
                          json_object_get (json_object_get (error, "data"), "sessionId")),
                      GW_RPC_MAX_DETAIL);
    json_decref (error);
    long_id[GW_RPC_MAX_DETAIL] = 'a';
    long_id[GW_RPC_MAX_DETAIL + 1] = 0;
    json_object_set_new (detail, "sessionId", json_string (long_id));
    error = s_from_cm (id, CM_E_NOT_FOUND, detail);
    assert_null (json_object_get (json_object_get (error, "data"), "sessionId"));
    json_decref (error);
    json_decref (detail);

    //  Upstream always says whether a retry may help.
    error = s_from_cm (id, CM_E_UPSTREAM, NULL);
    assert_int_equal (json_integer_value (json_object_get (error, "code")),
                      GW_RPC_UPSTREAM);
    assert_true (
        json_is_false (json_object_get (json_object_get (error, "data"), "retryable")));
    json_decref (error);
    detail = json_pack ("{s:b}", "retryable", 1);
    error = s_from_cm (id, -CM_E_UPSTREAM, detail); //  either sign
    assert_true (
        json_is_true (json_object_get (json_object_get (error, "data"), "retryable")));
    json_decref (error);
    json_decref (detail);

    //  A detail that is not an object is ignored.
    detail = json_string ("raw provider text");
    error = s_from_cm (id, CM_E_UPSTREAM, detail);
    assert_int_equal (json_object_size (json_object_get (error, "data")), 2);
    json_decref (error);
    json_decref (detail);
    json_decref (id);
}

//  docs/protocol.md documents every row of the table.
static void test_doc_lists_every_code (void **state)
{
    FILE *f = fopen (CORRAL_CLIENT_PROTOCOL_DOC, "r");
    assert_non_null (f);
    static char doc[256 * 1024];
    size_t n = fread (doc, 1, sizeof doc - 1, f);
    fclose (f);
    doc[n] = 0;
    size_t count = 0;
    const gw_rpc_cm_row_t *rows = gw_rpc_cm_table (&count);
    for (size_t i = 0; i < count; i++) {
        char needle[64];
        snprintf (needle, sizeof needle, "`%d`", rows[i].rpc_code);
        if (!strstr (doc, needle)) fprintf (stderr, "doc lacks %s\n", needle);
        assert_non_null (strstr (doc, needle));
        snprintf (needle, sizeof needle, "`%s`", rows[i].reason);
        if (!strstr (doc, needle)) fprintf (stderr, "doc lacks %s\n", needle);
        assert_non_null (strstr (doc, needle));
    }
}

int main (void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test (test_request),
        cmocka_unit_test (test_notification),
        cmocka_unit_test (test_responses),
        cmocka_unit_test (test_utf8_accepted),
        cmocka_unit_test (test_frame_size_limit),
        cmocka_unit_test (test_depth_limit),
        cmocka_unit_test (test_invalid_utf8),
        cmocka_unit_test (test_invalid_json),
        cmocka_unit_test (test_not_one_object),
        cmocka_unit_test (test_jsonrpc_member),
        cmocka_unit_test (test_id_types),
        cmocka_unit_test (test_method_and_params),
        cmocka_unit_test (test_bad_responses),
        cmocka_unit_test (test_builders),
        cmocka_unit_test (test_cm_table),
        cmocka_unit_test (test_cm_detail_allowlist),
        cmocka_unit_test (test_doc_lists_every_code),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
