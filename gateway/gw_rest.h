/*  gw_rest.h - what the HTTP files share (not a public interface): the
    state of one HTTP request, the server-wide HTTP state, the response
    helpers and the route handlers.

      gw_http.c     the lws callbacks, the route table, the auth and body
                    gates, responses (one-shot and chunked streams), errors
      gw_rest.c     /v1/sessions...: REST over the ACP handlers, the event
                    stream (JSON lines or SSE), /v1/login and /v1/logout
      gw_metrics.c  /metrics, /v1/health/live, /v1/health/ready
      gw_static.c   the file mount at /: folder, content types, symlink guard

    A request's life: LWS_CALLBACK_HTTP parses the method, path, query and
    the headers we need into gw_http_t (lws may drop its header table
    later), picks the route and starts the key check.  The route runs once
    the body is complete and the key is checked (gw_http.c, maybe_run).
    Its answer is queued on the connection like a WebSocket frame and
    written on WRITEABLE: headers, then frames; the last write completes
    the transaction, frees the connection and lets lws reuse the socket
    (keep-alive).
*/
#ifndef GW_REST_H
#define GW_REST_H

#include <limits.h>
#include <stdarg.h>

#include "gw.h"
#include "gw_acp.h"
#include "gw_auth.h"
#include "gw_http.h"

#define GW_HTTP_PATH_MAX     512   //  longest request path routed
#define GW_HTTP_ARG_MAX      1024  //  longest query argument value kept
#define GW_HTTP_HDRS         4     //  extra response headers at most
#define GW_HTTP_HDR_MAX      160   //  bytes of one extra header value
#define GW_HTTP_TICK_MS      1000  //  per-request timer period
#define GW_HTTP_KEEPALIVE_MS 15000 //  SSE comment after this much silence
#define GW_HTTP_READY_MS     1000  //  readiness probes must answer within this
#define GW_HTTP_BODY_MS      30000 //  a request body must arrive within this

typedef enum {
    GW_R_NONE,
    GW_R_LIVE,
    GW_R_READY,
    GW_R_METRICS,
    GW_R_LOGIN,
    GW_R_LOGOUT,
    GW_R_LIST,
    GW_R_CREATE,
    GW_R_GET,
    GW_R_DELETE,
    GW_R_PROMPT,
    GW_R_CANCEL,
    GW_R_EVENTS,
    GW_R_CLOSE,
    GW_R_PERMISSION,
} gw_route_t;

//  One HTTP request (conn->http), from LWS_CALLBACK_HTTP to the end of
//  its response.
typedef struct gw_http {
    gw_server_t *self;
    gw_conn_t *conn;
    //  the request
    int method; //  LWSHUMETH_*
    char path[GW_HTTP_PATH_MAX];
    gw_route_t route;
    int route_err; //  404 or 405 when no route matched
    char allow[32];
    bool has_session; //  routes under /v1/sessions/{id}
    cm_uuid_t session;
    char session_text[64];
    bool session_bad; //  the {id} is not a session id
    cm_strbuf_t body;
    json_t *json;      //  the body as an object (routes with a body)
    bool body_pending; //  LWS_CALLBACK_HTTP_BODY_COMPLETION still to come
    bool started;      //  the route ran
    bool tls;
    //  query arguments and headers, copied at request time
    char arg_after[24], arg_follow[8], arg_wait[8], arg_limit[16], arg_cursor[48];
    char arg_cwd[GW_HTTP_ARG_MAX];
    bool has_cwd;
    const char *bad_arg; //  an argument was too long
    char last_event_id[24];
    bool has_last_event_id, accept_sse;
    //  the response
    int status;
    const char *ctype;
    struct {
        const char *name; //  "www-authenticate:" (lower case, with the colon)
        char value[GW_HTTP_HDR_MAX];
    } hdr[GW_HTTP_HDRS];
    int nhdr;
    bool ready; //  the response is decided: headers may go
    bool headers_sent;
    bool streaming;   //  a body of many frames (events)
    bool chunked;     //  HTTP/1.1 chunk framing (HTTP/2 frames itself)
    bool done;        //  the last frame is queued
    bool close_after; //  close instead of keep-alive (a body left unread)
    //  the per-request timer (deadlines, keep-alive comments, shutdown)
    lws_sorted_usec_list_t sul;
    bool sul_on;
    int64_t start_ms, last_tx_ms;
    //  events
    bool sse, follow;
    uint64_t after, until; //  a stream without follow ends after seq until
    //  prompt
    bool nowait;
    char idem[IDEM_MAX + 1];
    //  a session attached for this request: detached when it ends
    bool attached;
    char tenant[GW_TENANT_MAX];
    //  login: the key until the check answers (wiped after)
    char login_key[GW_AUTH_KEY_BUF];
    //  readiness probes
    int probes_ok, probes_failed;
    unsigned probes_pending; //  GW_PROBE_* bits not answered yet (gw_metrics.c)
    char why[320];
} gw_http_t;

#define GW_STATIC_MIMES 12

//  Server-wide HTTP state (self->http): the mounts handed to lws, the
//  static folder and its file-ops guard, response counters.
typedef struct gw_http_srv {
    struct lws_http_mount api, metrics, files;
    struct lws_protocol_vhost_options mimes[GW_STATIC_MIMES];
    struct lws_plat_file_ops fops;            //  the platform's, open guarded
    const struct lws_plat_file_ops *sys_fops; //  the platform's own
    struct lws_context *ctx;                  //  set when the guard is installed
    char root[PATH_MAX];                      //  the static folder, resolved
    size_t rootlen;                           //  0: no static folder
    uint64_t by_class[6]; //  responses written by status class (1xx .. 5xx)
    uint64_t http_requests;
} gw_http_srv_t;

/* ---- gw_http.c ---------------------------------------------------------- */

//  A pending HTTP request by connection id (continuations keep ids), or
//  NULL when it is gone, closing or already answered.
gw_conn_t *gw_http_find (gw_server_t *self, uint64_t conn_id);
//  A malloc'd copy of conn->id for a bus continuation (NULL when out of
//  memory); the callback frees it.
uint64_t *gw_http_box (gw_conn_t *conn);

//  Add a response header (before the response is decided); name is a
//  static lower-case "name:".  Values longer than GW_HTTP_HDR_MAX are cut;
//  one with a control character (CR, LF ...) is left out.
void gw_http_header (gw_conn_t *conn, const char *name, const char *fmt, ...)
    __attribute__ ((format (printf, 3, 4)));
//  One-shot responses.  body is borrowed; NULL sends no body (204).
void gw_http_reply (gw_server_t *self, gw_conn_t *conn, int status, json_t *body);
//  text is taken (freed here).
void gw_http_reply_text (gw_server_t *self, gw_conn_t *conn, int status,
                         const char *ctype, char *text);
//  The error shape {"error":{code, reason, message, <detail>}} with the
//  HTTP status for the cm code; message NULL: the table's; detail
//  borrowed, filtered by gw_rpc's allowlist.
void gw_http_reply_error (gw_server_t *self, gw_conn_t *conn, int cm_code,
                          const char *message, json_t *detail);
//  429 rate_limited with retryAfterMs (and Retry-After); message NULL:
//  the table's.
void gw_http_reply_limited (gw_server_t *self, gw_conn_t *conn, int64_t retry_ms,
                            const char *message);
//  The request's key was not accepted (401), could not be checked now
//  (503: the store did not answer), or is missing (401).
void gw_http_reply_no_key (gw_server_t *self, gw_conn_t *conn);
//  A streamed response: headers now, frames with gw_http_stream_put (a
//  chunk each on HTTP/1.1), gw_http_stream_end for the last.  put returns
//  false when the queue is over its soft limit.
void gw_http_stream_begin (gw_server_t *self, gw_conn_t *conn, int status,
                           const char *ctype);
bool gw_http_stream_put (gw_server_t *self, gw_conn_t *conn, const char *text,
                         size_t len);
void gw_http_stream_end (gw_server_t *self, gw_conn_t *conn);
//  Run an ACP method for this request; params are taken.
void gw_http_dispatch (gw_server_t *self, gw_conn_t *conn, const char *method,
                       json_t *params);
//  Take one token of the key's rate limit; answers 429 itself and
//  returns false when there is none.
bool gw_http_take_rate (gw_server_t *self, gw_conn_t *conn);

/* ---- route handlers (gw_rest.c, gw_metrics.c) ------------------------------ */

typedef void gw_http_route_fn (gw_server_t *self, gw_conn_t *conn);
gw_http_route_fn gw_rest_list, gw_rest_create, gw_rest_get, gw_rest_delete,
    gw_rest_prompt, gw_rest_cancel, gw_rest_close, gw_rest_events, gw_rest_permission,
    gw_rest_login, gw_rest_logout, gw_health_live, gw_health_ready, gw_metrics_serve;

//  A handler's result, shaped for the route (201 + Location, 204 ...).
void gw_rest_result (gw_server_t *self, gw_conn_t *conn, json_t *result);
//  The key check of a login finished.
void gw_rest_login_done (gw_server_t *self, gw_conn_t *conn);
//  The per-request timer fired for a pending request: shutdown, keep-alive
//  comments, deadlines.
void gw_rest_tick (gw_server_t *self, gw_conn_t *conn, int64_t now);
void gw_health_tick (gw_server_t *self, gw_conn_t *conn, int64_t now);
//  The request ends: detach what it attached.
void gw_rest_end (gw_server_t *self, gw_conn_t *conn);

/* ---- gw_static.c ------------------------------------------------------------ */

//  Resolve the static folder and fill hs->files (left out when the folder
//  is missing: then only the API is served).
void gw_static_setup (gw_server_t *self, gw_http_srv_t *hs);
//  Put the symlink guard in front of lws's file opening (PROTOCOL_INIT),
//  and take it away (PROTOCOL_DESTROY).
void gw_static_init (gw_http_srv_t *hs, struct lws_context *ctx);
void gw_static_fini (gw_http_srv_t *hs);

#endif
