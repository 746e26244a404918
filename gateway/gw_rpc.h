/*  gw_rpc.h - JSON-RPC 2.0 framing for the ACP endpoint (DESIGN §6).

    One WebSocket text frame carries exactly one JSON-RPC message; batches
    (a JSON array at the top level) are refused.  This module turns one
    incoming frame into a gw_rpc_msg_t or into a ready-to-send error
    response, and builds every text the gateway sends: responses, error
    responses, notifications and its own requests to the client
    (session/request_permission).  docs/protocol.md is the
    client-facing description of the same rules and of the Corral error
    codes below.

    Parsing is bounded before any JSON library sees the bytes: the frame
    length is checked against max_frame, and one pass over the raw bytes
    checks UTF-8 and counts the nesting of [ and { outside strings against
    max_depth.  Only then does jansson parse.  A rejected frame never
    produces jansson's own text: every error message comes from this file
    and says what was wrong and what to do; a JSON syntax error adds only
    line, column and byte offset.

    Error responses built from a cm error code (gw_rpc_error_from_cm) take
    their code and message from one table; the optional detail a caller
    passes is filtered through an allowlist of keys and types, so no raw
    library, bus or provider text can reach a client through it.
*/
#ifndef GW_RPC_H
#define GW_RPC_H

#include <stddef.h>
#include <jansson.h>

//  Default limits (DESIGN §6: 1 MiB message cap, a JSON depth cap).
#define GW_RPC_MAX_FRAME_DEFAULT (1024 * 1024)
#define GW_RPC_MAX_DEPTH_DEFAULT 64
//  Largest depth cap a caller may configure: below jansson's own parser
//  limit (2048), so the pre-scan is always the check that fires.
#define GW_RPC_MAX_DEPTH_LIMIT 1024
//  Longest "method" and string "id" accepted, in bytes.
#define GW_RPC_MAX_METHOD 128
#define GW_RPC_MAX_ID     256
//  Longest string value kept in an error's detail (gw_rpc_error_from_cm).
#define GW_RPC_MAX_DETAIL 128

//  JSON-RPC 2.0 codes, and the two ACP v1 adds.
#define GW_RPC_PARSE_ERROR      -32700
#define GW_RPC_INVALID_REQUEST  -32600
#define GW_RPC_METHOD_NOT_FOUND -32601
#define GW_RPC_INVALID_PARAMS   -32602
#define GW_RPC_INTERNAL_ERROR   -32603
#define GW_RPC_AUTH_REQUIRED    -32000 //  ACP: authenticate first
#define GW_RPC_NOT_FOUND        -32002 //  ACP: resource not found
#define GW_RPC_CANCELLED        -32800 //  ACP: request cancelled ($/cancel_request)

//  The Corral block (-32001 .. -32013, around ACP's -32002).  Part of the
//  client contract: never renumber, only append.
#define GW_RPC_BUSY         -32001
#define GW_RPC_CAPACITY     -32003
#define GW_RPC_RATE_LIMITED -32004
#define GW_RPC_FORBIDDEN    -32005
#define GW_RPC_TOO_LARGE    -32006
#define GW_RPC_CONFLICT     -32007
#define GW_RPC_EXPIRED      -32008
#define GW_RPC_WORKER_LOST  -32009
#define GW_RPC_UPSTREAM     -32010
#define GW_RPC_UNAVAILABLE  -32011
#define GW_RPC_BUDGET       -32012
#define GW_RPC_MEMORY_LIMIT -32013

typedef enum {
    GW_RPC_REQUEST = 1,  //  method + id: must be answered
    GW_RPC_NOTIFICATION, //  method, no id: never answered
    GW_RPC_RESULT,       //  a client's success response to our request
    GW_RPC_ERROR,        //  a client's error response to our request
} gw_rpc_kind_t;

typedef struct {
    size_t max_frame; //  bytes; a frame of exactly max_frame is accepted
    int max_depth;    //  open [ / { at once; exactly max_depth is accepted
} gw_rpc_limits_t;

//  One parsed message.  Every pointer is borrowed from the message and
//  valid until gw_rpc_msg_destroy; incref a json_t to keep it longer.
typedef struct {
    gw_rpc_kind_t kind;
    //  REQUEST, RESULT, ERROR: a JSON string or integer (ERROR: may also
    //  be JSON null, when the client could not read our id).  NULL for a
    //  NOTIFICATION.  Echo it back unchanged.
    json_t *id;
    //  REQUEST, NOTIFICATION: 1..GW_RPC_MAX_METHOD bytes of UTF-8, no NUL.
    const char *method;
    //  REQUEST, NOTIFICATION: an object or an array, or NULL when absent.
    json_t *params;
    //  RESULT: any JSON value (JSON null included).
    json_t *result;
    //  ERROR: the client's code, message and optional data (NULL if absent).
    int error_code;
    const char *error_message;
    json_t *error_data;
    json_t *root; //  private: owns everything above
} gw_rpc_msg_t;

//  Parse one text frame of len bytes (need not be NUL-terminated).
//  limits may be NULL for the defaults; max_frame >= 1 and
//  1 <= max_depth <= GW_RPC_MAX_DEPTH_LIMIT (asserted).
//
//  On success returns 0, sets *msg_p to a new message (destroy it with
//  gw_rpc_msg_destroy) and *reply_p to NULL.
//
//  On failure returns a negative cm code, sets *msg_p to NULL and *reply_p
//  to the error response to send (free() it), whose id is the message's id
//  when it could be read and is valid, else null:
//    CM_E_TOO_LARGE  frame longer than max_frame            -32006
//    CM_E_DEPTH      nesting deeper than max_depth          -32006
//    CM_E_INVALID    not UTF-8, not JSON, empty             -32700
//    CM_E_INVALID    a batch, not an object, no/wrong "jsonrpc", bad id,
//                    bad method, neither method nor result/error, both,
//                    malformed error object                 -32600
//    CM_E_TYPE       params neither object nor array        -32602
//    CM_E_NOMEM      out of memory; *reply_p may be NULL
//  The reply is sent even for a frame without an id: a malformed message
//  is not a notification.  The reply text never exceeds a few hundred
//  bytes plus the echoed id.
int gw_rpc_parse (const char *data, size_t len, const gw_rpc_limits_t *limits,
                  gw_rpc_msg_t **msg_p, char **reply_p);

//  Free a message and set *msg_p to NULL; no-op if either is NULL.
void gw_rpc_msg_destroy (gw_rpc_msg_t **msg_p);

//  Builders.  Each returns the compact JSON text of one message (free() it)
//  or NULL when out of memory or when a string is not valid UTF-8.  json_t
//  arguments are borrowed: the caller keeps its reference.  id is a JSON
//  string or integer, or NULL / JSON null for null (error responses only);
//  params / data may be NULL to omit them.  A wrong type is a programmer
//  error (asserted).

//  {"jsonrpc":"2.0","id":id,"result":result}; result NULL means JSON null.
char *gw_rpc_result (json_t *id, json_t *result);

//  {"jsonrpc":"2.0","id":id,"error":{"code","message"[,"data"]}}.
//  message must be text for a person, never a library's error text.
char *gw_rpc_error (json_t *id, int code, const char *message, json_t *data);

//  An error response for a cm error code (either sign), from the table:
//  code and message from the row, data = {"reason": <row name>} plus the
//  entries of detail (an object, or NULL) whose key and type are on the
//  allowlist (docs/protocol.md), other entries silently dropped.
//  An upstream error always carries data.retryable (false unless detail
//  says true).  Codes the table does not list, and 0, become -32603 with
//  reason "internal" and no detail.
char *gw_rpc_error_from_cm (json_t *id, int cm_code, json_t *detail);

//  {"jsonrpc":"2.0","method":method[,"params":params]}.
char *gw_rpc_notification (const char *method, json_t *params);

//  {"jsonrpc":"2.0","id":id,"method":method[,"params":params]}: a request
//  from the gateway to the client; id must not be null.
char *gw_rpc_request (json_t *id, const char *method, json_t *params);

//  The JSON-RPC code the table gives a cm code (either sign);
//  GW_RPC_INTERNAL_ERROR for a code it does not list and for 0.
int gw_rpc_code_from_cm (int cm_code);

//  One row of the table, for tests and documentation checks.
typedef struct {
    int cm_code;         //  negative cm code
    int rpc_code;        //  JSON-RPC code sent
    const char *reason;  //  data.reason (the cm short name)
    const char *message; //  error.message: what happened and what to do
} gw_rpc_cm_row_t;

//  The table's rows (static storage) and their count.
const gw_rpc_cm_row_t *gw_rpc_cm_table (size_t *count);

#endif
