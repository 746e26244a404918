/*  fuzz_jsonrpc.c - libFuzzer target on the JSON-RPC framing (gw_rpc).

    Input: one WebSocket text frame, as raw bytes.  The first byte also
    picks a small depth cap for a second parse, so the depth check is
    explored near its limit as well as at the default.

    Any bytes must give either a message or a rejection with a reply, never
    a crash, a leak or a reply that is not one JSON-RPC error response.  A
    message must keep the contract of gw_rpc.h (kind-specific fields set,
    ids and methods within bounds), and rebuilding it with the builders and
    parsing the text again must give the same message.
*/
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "gw_rpc.h"

//  The reply to a rejected frame: one error response, id null or valid.
static void s_check_reply (const char *reply)
{
    if (!reply) abort ();
    json_t *root = json_loads (reply, 0, NULL);
    if (!json_is_object (root)) abort ();
    json_t *error = json_object_get (root, "error");
    json_t *id = json_object_get (root, "id");
    if (!json_is_integer (json_object_get (error, "code"))) abort ();
    if (!json_is_string (json_object_get (error, "message"))) abort ();
    if (!id || !(json_is_null (id) || json_is_string (id) || json_is_integer (id)))
        abort ();
    if (strlen (reply) > 1024 + GW_RPC_MAX_ID * 6) abort ();
    json_decref (root);
}

static void s_check_msg (const gw_rpc_msg_t *m)
{
    switch (m->kind) {
    case GW_RPC_REQUEST:
    case GW_RPC_NOTIFICATION:
        if ((m->kind == GW_RPC_REQUEST) != (m->id != NULL)) abort ();
        if (!m->method || !*m->method || strlen (m->method) > GW_RPC_MAX_METHOD) abort ();
        if (m->params && !json_is_object (m->params) && !json_is_array (m->params))
            abort ();
        if (m->result || m->error_message) abort ();
        break;
    case GW_RPC_RESULT:
        if (!m->result || m->method) abort ();
        break;
    case GW_RPC_ERROR:
        if (!m->error_message || m->method || m->result) abort ();
        break;
    default:
        abort ();
    }
    if (m->id && !json_is_null (m->id) && !json_is_integer (m->id) &&
        !(json_is_string (m->id) && json_string_length (m->id) <= GW_RPC_MAX_ID))
        abort ();
}

//  Rebuild m with the builders; NULL only when out of memory.
static char *s_rebuild (const gw_rpc_msg_t *m)
{
    switch (m->kind) {
    case GW_RPC_REQUEST:
        return gw_rpc_request (m->id, m->method, m->params);
    case GW_RPC_NOTIFICATION:
        return gw_rpc_notification (m->method, m->params);
    case GW_RPC_RESULT:
        return gw_rpc_result (m->id, m->result);
    case GW_RPC_ERROR:
        return gw_rpc_error (m->id, m->error_code, m->error_message, m->error_data);
    }
    return NULL;
}

static int s_equal (const json_t *a, const json_t *b)
{
    if (!a || !b) return a == b;
    return json_equal (a, b);
}

static void s_round_trip (const gw_rpc_msg_t *m, int max_depth)
{
    char *text = s_rebuild (m);
    if (!text) abort ();
    //  Re-serialising may grow the text (1e5 -> 100000.0), never the depth.
    gw_rpc_limits_t lim = {.max_frame = SIZE_MAX, .max_depth = max_depth};
    gw_rpc_msg_t *again = NULL;
    char *reply = NULL;
    if (gw_rpc_parse (text, strlen (text), &lim, &again, &reply) != 0) abort ();
    if (again->kind != m->kind) abort ();
    if (!s_equal (again->id, m->id)) abort ();
    if ((again->method == NULL) != (m->method == NULL)) abort ();
    if (m->method && strcmp (again->method, m->method) != 0) abort ();
    if (!s_equal (again->params, m->params)) abort ();
    if (!s_equal (again->result, m->result)) abort ();
    if (again->error_code != m->error_code) abort ();
    if ((again->error_message == NULL) != (m->error_message == NULL)) abort ();
    if (m->error_message && strcmp (again->error_message, m->error_message) != 0)
        abort ();
    if (!s_equal (again->error_data, m->error_data)) abort ();
    gw_rpc_msg_destroy (&again);
    free (text);
}

static void s_one (const uint8_t *data, size_t size, const gw_rpc_limits_t *lim)
{
    gw_rpc_msg_t *msg = NULL;
    char *reply = NULL;
    int rc = gw_rpc_parse ((const char *)data, size, lim, &msg, &reply);
    if (rc == 0) {
        if (!msg || reply) abort ();
        s_check_msg (msg);
        s_round_trip (msg, lim ? lim->max_depth : GW_RPC_MAX_DEPTH_DEFAULT);
        gw_rpc_msg_destroy (&msg);
    } else {
        if (rc > 0 || msg) abort ();
        s_check_reply (reply);
        free (reply);
    }
}

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
    s_one (data, size, NULL);
    if (size > 0) {
        gw_rpc_limits_t lim = {.max_frame = 4096, .max_depth = 1 + data[0] % 8};
        s_one (data + 1, size - 1, &lim);
    }
    return 0;
}
