/*  fake_model.h - corral-fake-model internals: a scripted model server.

    One process, one epoll loop, all state in one fake_server_t.  The files
    split by concern:

      fake_model.c      main: configuration, start, wait, stop
      fake_http.c       the loop, connections, HTTP/1.1 parsing, timers, and
                        the plan driver that writes a response over time
      fake_routes.c     the route table, /health, the /_fake endpoints, the log,
                        and the flow shared by both model endpoints
      fake_script.c     loading and validating the JSON script; rule matching
      fake_plan.c       growable buffers, plans, UTF-8 safe splitting, usage
      fake_openai.c     /v1/chat/completions: validation and framing
      fake_anthropic.c  /v1/messages: validation and framing

    A response is rendered up front into a plan: a list of byte strings,
    each with the delay to wait before writing it, plus the terminal
    actions stall and cut.  The HTTP layer then only walks the plan.  So a
    provider file never touches a socket and the loop never knows a wire
    format.
*/
#ifndef FAKE_MODEL_H
#define FAKE_MODEL_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

//  Limits on everything that comes from outside (requests, the script).
#define FAKE_HEAD_MAX      (64 * 1024)        //  request line + headers
#define FAKE_HEADER_MAX    4096               //  one header value we keep
#define FAKE_LOG_MAX       1000               //  requests kept by /_fake/requests
#define FAKE_LOG_BODY_MAX  (1024 * 1024)      //  bigger bodies are logged as a size
#define FAKE_LOG_BYTES_MAX (64 * 1024 * 1024) //  bodies kept by the log in all
#define FAKE_SCRIPT_MAX    (16 * 1024 * 1024) //  script file size
#define FAKE_RULES_MAX     10000              //  rules in a script
#define FAKE_RESPONSES_MAX 1000               //  responses in a rule
#define FAKE_STEPS_MAX     10000              //  steps in a response
#define FAKE_PIECES_MAX    100000             //  chunks / fragments of one step
#define FAKE_PAUSE_MAX     3600000            //  ms; pause_ms and chunk_delay_ms
#define FAKE_TIMES_MAX     1000000            //  "times" of a failure step
#define FAKE_PIECE_BYTES   16                 //  default piece size when no count given
#define FAKE_OUT_HIGH      (256 * 1024)       //  unsent bytes before a stream waits
#define FAKE_LINGER_MS     2000               //  reading after an error reply, at most

// ---------------------------------------------------------------------------
//  Growable byte buffer.  data is NUL-terminated whenever len > 0.

typedef struct {
    char *data;
    size_t len, cap;
} fake_buf_t;

//  Each returns 0 or CM_E_NOMEM (the buffer keeps what it had).
int fake_buf_append (fake_buf_t *self, const void *bytes, size_t len);
int fake_buf_printf (fake_buf_t *self, const char *fmt, ...)
    __attribute__ ((format (printf, 2, 3)));
//  Append json as compact JSON text (object key order kept).
int fake_buf_json (fake_buf_t *self, const json_t *json);
void fake_buf_free (fake_buf_t *self);

// ---------------------------------------------------------------------------
//  The script (fake_script.c).  Every string is owned by the script.

typedef enum {
    FAKE_STEP_TEXT,
    FAKE_STEP_THINKING,
    FAKE_STEP_TOOL_CALL,
    FAKE_STEP_PAUSE,
    FAKE_STEP_USAGE,
    FAKE_STEP_STOP,
    FAKE_STEP_HTTP_ERROR,
    FAKE_STEP_ERROR_EVENT,
    FAKE_STEP_RAW,
    FAKE_STEP_STALL,
    FAKE_STEP_CUT,
} fake_step_kind_t;

typedef struct {
    fake_step_kind_t kind;
    //  TEXT, THINKING, RAW: the bytes.  TOOL_CALL: the arguments text.
    //  STOP: the reason (Anthropic's word).  ERROR_EVENT: the error type.
    char *text;
    size_t len;
    char *id;        //  TOOL_CALL: NULL = derived from the request number
    char *name;      //  TOOL_CALL
    char *signature; //  THINKING: NULL = derived
    char *message;   //  HTTP_ERROR, ERROR_EVENT: NULL = the provider's usual
    int pieces;      //  TEXT/THINKING chunks, TOOL_CALL fragments
    int64_t ms;      //  PAUSE
    int status;      //  HTTP_ERROR
    int retry_after; //  HTTP_ERROR: seconds, -1 = no Retry-After header
    //  HTTP_ERROR, ERROR_EVENT, STALL, CUT: how many requests reaching the
    //  step take it (later ones skip it); 0 = every request (not HTTP_ERROR).
    int64_t times;
    int64_t used;                 //  requests that took it since start/reset
    int64_t input, output, cache; //  USAGE (input includes cache); -1 = computed
} fake_step_t;

typedef struct {
    fake_step_t *steps;
    size_t count;
} fake_response_t;

typedef struct {
    char *name;
    char *match; //  NULL = "*" (matches every message)
    fake_response_t *responses;
    size_t count;
    int64_t chunk_delay_ms; //  -1 = the server's default
} fake_rule_t;

typedef struct {
    fake_rule_t *rules;
    size_t count;
} fake_script_t;

//  Load and validate a script file.  Returns the script, or NULL with a
//  message naming the file, the rule and the step in err.
fake_script_t *fake_script_load (const char *path, char *err, size_t errlen);
//  Same, from JSON text; origin names it in messages.
fake_script_t *fake_script_parse (const char *text, size_t len, const char *origin,
                                  char *err, size_t errlen);
void fake_script_destroy (fake_script_t **self_p);
//  First rule whose match is a substring of text (ASCII case-insensitive),
//  or NULL.
const fake_rule_t *fake_script_match (const fake_script_t *self, const char *text);
//  Zero every http_error counter.
void fake_script_reset (fake_script_t *self);

// ---------------------------------------------------------------------------
//  One model request, as the shared route code and a provider see it.

typedef struct {
    uint64_t seq;           //  model requests since start/reset, from 1
    const char *model;      //  the request's "model" (borrowed from the body)
    char *user_text;        //  text of the last user text message (owned)
    size_t assistant_after; //  assistant messages after that message
    bool stream;            //  "stream": true
    bool include_usage;     //  OpenAI stream_options.include_usage
    size_t body_len;        //  request body bytes, for default usage
    int64_t chunk_delay_ms; //  between two events of a stream
    int64_t created;        //  Unix seconds, for OpenAI "created"
    const bool *skip;       //  per step of the response: spent failures; NULL = none
} fake_call_t;

//  True if step i of the response is rendered for this call.
static inline bool fake_step_on (const fake_call_t *call, size_t i)
{
    return !call->skip || !call->skip[i];
}

// ---------------------------------------------------------------------------
//  A response rendered ahead of time (fake_plan.c builds, fake_http.c walks).

typedef enum {
    FAKE_ITEM_DATA,  //  bytes: an HTTP chunk if the plan is chunked, else the body
    FAKE_ITEM_STALL, //  write nothing more; keep the connection until the peer closes
    FAKE_ITEM_CUT,   //  close the connection once the bytes so far are sent
} fake_item_kind_t;

typedef struct {
    fake_item_kind_t kind;
    int64_t delay_ms; //  wait this long before the item
    char *bytes;      //  owned
    size_t len;
} fake_item_t;

typedef struct {
    int status; //  HTTP status of the response
    const char *content_type;
    fake_buf_t headers; //  extra header lines, each ending "\r\n"
    bool chunked;       //  a stream: head at once, DATA items as chunks
    fake_item_t *items;
    size_t count, cap;
    int64_t chunk_delay_ms; //  added before every DATA item but the first
    int64_t pending_ms;     //  pauses waiting for the next item
    size_t data_items;
} fake_plan_t;

//  New plan for a response; content_type must be static storage.
fake_plan_t *fake_plan_new (int status, const char *content_type, bool chunked,
                            int64_t chunk_delay_ms);
void fake_plan_destroy (fake_plan_t **self_p);
//  Append a DATA item (bytes copied).  Returns 0 or CM_E_NOMEM.
int fake_plan_data (fake_plan_t *self, const char *bytes, size_t len);
//  The next item waits ms longer.
void fake_plan_pause (fake_plan_t *self, int64_t ms);
//  Append STALL or CUT.  Returns 0 or CM_E_NOMEM.
int fake_plan_end (fake_plan_t *self, fake_item_kind_t kind);

//  Split len bytes of s into at most n pieces of about equal size, never
//  inside a UTF-8 sequence; empty pieces are skipped.  Call with *pos = 0
//  and *i = 0; each call gives the next piece and returns false after the last.
bool fake_piece (const char *s, size_t len, int n, int *i, size_t *pos,
                 const char **piece, size_t *piece_len);
//  Pieces for a step: its count, or one per FAKE_PIECE_BYTES bytes.
int fake_pieces (const fake_step_t *step);

//  What a response adds up to, from its steps (first = first step used).
typedef struct {
    int64_t input, output, cache; //  tokens
    const char *stop;             //  Anthropic's word
    size_t tool_calls;
} fake_totals_t;
void fake_totals (const fake_response_t *resp, size_t first, const fake_call_t *call,
                  fake_totals_t *out);
//  Deterministic ids: "<prefix><seq>" and "<prefix><seq>_<index>".
void fake_id (char *out, size_t outlen, const char *prefix, uint64_t seq, int index);

// ---------------------------------------------------------------------------
//  HTTP requests and connections (fake_http.c).

typedef enum {
    FAKE_H_AUTHORIZATION,
    FAKE_H_X_API_KEY,
    FAKE_H_ANTHROPIC_VERSION,
    FAKE_H_ANTHROPIC_BETA,
    FAKE_H_CONTENT_TYPE,
    FAKE_H_ACCEPT,
    FAKE_H_USER_AGENT,
    FAKE_H_COUNT,
} fake_header_t;

//  Header names, lower case, indexed by fake_header_t.
extern const char *const fake_header_names[FAKE_H_COUNT];

//  A complete request.  Every pointer is valid only during the route call.
typedef struct {
    const char *method;
    const char *path; //  without the query string
    const char *body;
    size_t body_len;
    const char *header[FAKE_H_COUNT]; //  NULL when absent
} fake_req_t;

typedef struct fake_conn fake_conn_t;
typedef struct fake_server fake_server_t;

//  Answer the request now.  extra_headers: lines ending "\r\n", or NULL.
void fake_conn_reply (fake_conn_t *conn, int status, const char *content_type,
                      const char *extra_headers, const char *body, size_t len);
//  Answer the request by walking plan; takes ownership.
void fake_conn_start (fake_conn_t *conn, fake_plan_t **plan_p);

// ---------------------------------------------------------------------------
//  The server.

typedef struct {
    const char *listen;     //  "host:port"; port 0 picks a free one
    const char *api_key;    //  NULL = no authentication
    int64_t chunk_delay_ms; //  default for rules without their own
    int64_t body_max;       //  largest request body accepted
    int64_t max_conns;      //  connections held at once
} fake_opts_t;

//  Bind and prepare; the script is taken.  Returns NULL with err on failure.
fake_server_t *fake_server_new (const fake_opts_t *opts, fake_script_t **script_p,
                                char *err, size_t errlen);
//  "http://127.0.0.1:<port>", valid while the server lives.
const char *fake_server_url (const fake_server_t *self);
//  Serve until cm_stop_requested().  Returns 0 or CM_E_IO.
int fake_server_run (fake_server_t *self);
void fake_server_destroy (fake_server_t **self_p);

//  For fake_routes.c: the options, the script and the request counter.
const fake_opts_t *fake_server_opts (const fake_server_t *self);
fake_script_t *fake_server_script (fake_server_t *self);
size_t fake_server_conns (const fake_server_t *self);

// ---------------------------------------------------------------------------
//  Routes (fake_routes.c).

typedef struct fake_routes fake_routes_t;
fake_routes_t *fake_routes_new (void);
void fake_routes_destroy (fake_routes_t **self_p);
//  Answer one complete request on conn.
void fake_routes_dispatch (fake_routes_t *self, fake_server_t *srv, fake_conn_t *conn,
                           const fake_req_t *req);

// ---------------------------------------------------------------------------
//  A provider: one per model endpoint, as an operations table.

typedef struct {
    const char *name; //  "openai" | "anthropic"
    //  Header checks before the body is read (key, version).  Returns 0, or
    //  the HTTP status with the error type and a message in msg.
    int (*check_headers) (const char *api_key, const fake_req_t *req, const char **type,
                          char *msg, size_t msglen);
    //  Validate the body like the provider does and fill call (model,
    //  user_text, assistant_after, stream, include_usage).  Returns 0, or -1
    //  with a message in msg (answered 400 invalid_request_error).
    int (*analyse) (const json_t *body, fake_call_t *call, char *msg, size_t msglen);
    //  The provider's error type for an HTTP status.
    const char *(*error_type) (int status);
    //  The provider's error body.
    int (*error_body) (fake_buf_t *out, int status, const char *type, const char *message,
                       uint64_t seq);
    //  The HTTP status a non-streamed error_event becomes.
    int (*error_status) (const char *type);
    //  Render steps [first..] of resp as this provider's answer to call:
    //  its event stream, or (a request without "stream": true) one JSON
    //  body.  The caller chooses and sets the plan's framing for JSON.
    int (*render_stream) (const fake_response_t *resp, size_t first,
                          const fake_call_t *call, fake_plan_t *plan);
    int (*render_json) (const fake_response_t *resp, size_t first,
                        const fake_call_t *call, fake_plan_t *plan);
    const char *request_id_header; //  "x-request-id" | "request-id"
} fake_provider_t;

extern const fake_provider_t fake_openai;
extern const fake_provider_t fake_anthropic;

//  Text of a message's content when it is a string or an array of parts /
//  blocks of type "text" (joined).  Returns a malloc'd string, or NULL if
//  the content holds no text.  Shared by both providers.
char *fake_content_text (const json_t *content);

#endif
