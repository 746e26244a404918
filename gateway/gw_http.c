/*  gw_http.c - the HTTP side on the WebSocket port (see gw_http.h and
    gw_rest.h): the lws callbacks, the route table, the gates a request
    passes (body complete, key checked, key accepted, rate), the error
    shape, and writing responses from the connection's queue.

    Routes, Redis-style: one row per method and path with its handler and
    flags; "*" matches one path segment (a session id).  A path that
    matches no row is 404; one that matches with another method is 405
    with Allow.  docs/openapi.yaml describes every route.

    Responses: a one-shot answer is one frame with a Content-Length; a
    stream (events) is a series of frames, each one chunk of
    "Transfer-Encoding: chunked" on HTTP/1.1 (lws 4.1 frames HTTP/2 data
    itself, and adds chunking only for its own file "interpreting"), so a
    stream ends cleanly and the connection can be reused.  lws's rule of
    one lws_write per WRITEABLE holds: headers are one write, each frame
    another.

    Bodies are read up to cfg max_frame (the WebSocket message cap); a
    larger declared or received body is answered 413 at once and the
    connection is closed, since the rest of the body would otherwise be
    read as the next request.  A body must be complete within
    GW_HTTP_BODY_MS.  HEAD is GET without the body.  A request in flight
    counts against max_conns and max_conns_per_ip like a WebSocket (503
    past them).  A pipelined request is refused by closing the connection
    (lws 4.1 cannot hold it until the open transaction ends).
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "cm_log.h"
#include "cm_time.h"
#include "gw_rest.h"
#include "gw_rpc.h"

#define F_AUTH    0x01 //  needs an accepted key
#define F_BODY    0x02 //  reads a JSON object body
#define F_METRICS 0x04 //  needs an admin key when cfg metrics_auth

static const struct {
    int method;
    const char *pattern;
    gw_route_t route;
    gw_http_route_fn *fn;
    unsigned flags;
} s_routes[] = {
    {LWSHUMETH_GET, "/v1/health/live", GW_R_LIVE, gw_health_live, 0},
    {LWSHUMETH_GET, "/v1/health/ready", GW_R_READY, gw_health_ready, 0},
    {LWSHUMETH_GET, "/metrics", GW_R_METRICS, gw_metrics_serve, F_METRICS},
    {LWSHUMETH_POST, "/v1/login", GW_R_LOGIN, gw_rest_login, F_BODY},
    {LWSHUMETH_POST, "/v1/logout", GW_R_LOGOUT, gw_rest_logout, 0},
    {LWSHUMETH_GET, "/v1/sessions", GW_R_LIST, gw_rest_list, F_AUTH},
    {LWSHUMETH_POST, "/v1/sessions", GW_R_CREATE, gw_rest_create, F_AUTH | F_BODY},
    {LWSHUMETH_GET, "/v1/sessions/*", GW_R_GET, gw_rest_get, F_AUTH},
    {LWSHUMETH_DELETE, "/v1/sessions/*", GW_R_DELETE, gw_rest_delete, F_AUTH},
    {LWSHUMETH_POST, "/v1/sessions/*/prompt", GW_R_PROMPT, gw_rest_prompt,
     F_AUTH | F_BODY},
    {LWSHUMETH_POST, "/v1/sessions/*/cancel", GW_R_CANCEL, gw_rest_cancel, F_AUTH},
    {LWSHUMETH_POST, "/v1/sessions/*/close", GW_R_CLOSE, gw_rest_close, F_AUTH},
    {LWSHUMETH_GET, "/v1/sessions/*/events", GW_R_EVENTS, gw_rest_events, F_AUTH},
    {LWSHUMETH_POST, "/v1/sessions/*/permission", GW_R_PERMISSION, gw_rest_permission,
     F_AUTH | F_BODY},
};
#define S_ROUTES (sizeof s_routes / sizeof s_routes[0])

static const char *const s_method_names[] = {
    "GET", "POST", "OPTIONS", "PUT", "PATCH", "DELETE", "CONNECT", "HEAD", ":path"};

static void tick (lws_sorted_usec_list_t *sul);

/* ---- mounts --------------------------------------------------------------- */

const struct lws_http_mount *gw_http_mounts (gw_server_t *self)
{
    gw_http_srv_t *hs = calloc (1, sizeof *hs);
    if (!hs) return NULL; //  no mounts: every path reaches our callback
    self->http = hs;
    //  lws picks the longest matching mountpoint: /v1 and /metrics are
    //  ours, everything else is the file mount at /.
    hs->api = (struct lws_http_mount){.mountpoint = "/v1",
                                      .mountpoint_len = 3,
                                      .origin = "corral",
                                      .origin_protocol = LWSMPRO_CALLBACK,
                                      .mount_next = &hs->metrics};
    hs->metrics = (struct lws_http_mount){.mountpoint = "/metrics",
                                          .mountpoint_len = 8,
                                          .origin = "corral",
                                          .origin_protocol = LWSMPRO_CALLBACK};
    gw_static_setup (self, hs);
    if (hs->rootlen) hs->metrics.mount_next = &hs->files;
    return &hs->api;
}

/* ---- helpers ------------------------------------------------------------------ */

gw_conn_t *gw_http_find (gw_server_t *self, uint64_t conn_id)
{
    gw_conn_t *conn = gw_conn_find (self, conn_id);
    if (!conn || conn->kind != GW_CONN_HTTP || !conn->http || conn->closing ||
        conn->http->ready)
        return NULL;
    return conn;
}

uint64_t *gw_http_box (gw_conn_t *conn)
{
    uint64_t *box = malloc (sizeof *box);
    if (box) *box = conn->id;
    return box;
}

void gw_http_header (gw_conn_t *conn, const char *name, const char *fmt, ...)
{
    gw_http_t *h = conn->http;
    if (!h || h->ready || h->nhdr == GW_HTTP_HDRS) return;
    char *value = h->hdr[h->nhdr].value;
    va_list ap;
    va_start (ap, fmt);
    vsnprintf (value, sizeof h->hdr[h->nhdr].value, fmt, ap);
    va_end (ap);
    //  Values may carry what other services stored (an epoch, a session
    //  id): a CR or LF would start a header of its own.  Left out.
    for (const char *p = value; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f) {
            cm_warn ("left out a response header %s with a control character", name);
            return;
        }
    h->hdr[h->nhdr++].name = name;
}

static void timer_start (gw_server_t *self, gw_http_t *h)
{
    if (h->sul_on || !self->ctx) return;
    h->sul_on = true;
    lws_sul_schedule (self->ctx, 0, &h->sul, tick, GW_HTTP_TICK_MS * LWS_US_PER_MS);
}

//  The response is decided: let the headers go.
static void decide (gw_server_t *self, gw_conn_t *conn, int status, const char *ctype)
{
    (void)self;
    gw_http_t *h = conn->http;
    h->status = status;
    h->ctype = ctype;
    h->ready = true;
    lws_callback_on_writable (conn->wsi);
}

void gw_http_reply_text (gw_server_t *self, gw_conn_t *conn, int status,
                         const char *ctype, char *text)
{
    gw_http_t *h = conn->http;
    if (!h || h->ready) {
        free (text);
        return;
    }
    if (!text) { //  out of memory building the body
        text = strdup ("{\"error\":{\"code\":-32603,\"reason\":\"nomem\","
                       "\"message\":\"out of memory\"}}");
        status = 500;
        ctype = "application/json";
    }
    if (text && *text)
        gw_conn_send_text (self, conn, text);
    else
        free (text);
    h->done = true;
    decide (self, conn, status, ctype);
}

void gw_http_reply (gw_server_t *self, gw_conn_t *conn, int status, json_t *body)
{
    if (!conn->http || conn->http->ready) return;
    if (!body) {
        conn->http->done = true;
        decide (self, conn, status, NULL);
        return;
    }
    gw_http_reply_text (self, conn, status, "application/json",
                        json_dumps (body, JSON_COMPACT));
}

static int status_of (int cm_code)
{
    switch (cm_code) {
    case CM_E_INVALID:
    case CM_E_TYPE:
    case CM_E_MISSING:
    case CM_E_DEPTH:
        return 400;
    case CM_E_UNAUTHORIZED:
        return 401;
    case CM_E_FORBIDDEN:
        return 403;
    case CM_E_NOT_FOUND:
        return 404;
    case CM_E_BUSY:
    case CM_E_CONFLICT:
        return 409;
    case CM_E_EXPIRED:
        return 410;
    case CM_E_TOO_LARGE:
        return 413;
    case CM_E_RATE_LIMITED:
        return 429;
    case CM_E_BUDGET: //  spent until someone raises it: not 429 (retry later)
        return 402;
    case CM_E_UNAVAILABLE:
    case CM_E_CAPACITY:
    case CM_E_TIMEOUT:
    case CM_E_FULL:
        return 503;
    default:
        return 500;
    }
}

static void reply_error_as (gw_server_t *self, gw_conn_t *conn, int status, int cm_code,
                            const char *message, json_t *detail)
{
    if (!conn->http || conn->http->ready) return;
    if (cm_code > 0) cm_code = -cm_code;
    //  The JSON-RPC error from the one table, reshaped: code, reason, our
    //  message, and the allowlisted detail fields beside them.
    char *text = gw_rpc_error_from_cm (NULL, cm_code, detail);
    json_t *rpc = text ? json_loads (text, 0, NULL) : NULL;
    free (text);
    json_t *err = json_object_get (rpc, "error");
    json_t *data = json_object_get (err, "data");
    json_t *out = json_object ();
    json_object_set_new (
        out, "code",
        json_integer (gw_rpc_code_from_cm (cm_code ? cm_code : CM_E_INTERNAL)));
    const char *reason = json_string_value (json_object_get (data, "reason"));
    json_object_set_new (out, "reason", json_string (reason ? reason : "internal"));
    const char *msg =
        message ? message : json_string_value (json_object_get (err, "message"));
    json_object_set_new (out, "message", json_string (msg ? msg : "internal error"));
    const char *k;
    json_t *v;
    json_object_foreach (data, k, v)
    {
        if (strcmp (k, "reason") != 0) json_object_set (out, k, v);
    }
    if (!status) status = status_of (cm_code);
    if (status == 401)
        gw_http_header (conn, "www-authenticate:", "Bearer realm=\"corral\"");
    if (status == 429) {
        json_int_t ms = json_integer_value (json_object_get (out, "retryAfterMs"));
        gw_http_header (conn, "retry-after:", "%lld",
                        (long long)(ms > 0 ? (ms + 999) / 1000 : 1));
    }
    if (status == 503) gw_http_header (conn, "retry-after:", "1");
    json_t *body = json_pack ("{s:o}", "error", out);
    json_decref (rpc);
    gw_http_reply (self, conn, status, body);
    json_decref (body);
}

void gw_http_reply_error (gw_server_t *self, gw_conn_t *conn, int cm_code,
                          const char *message, json_t *detail)
{
    if (conn->http && !conn->http->ready) self->stats.errors++;
    reply_error_as (self, conn, 0, cm_code, message, detail);
}

void gw_http_reply_no_key (gw_server_t *self, gw_conn_t *conn)
{
    bool transient = strcmp (conn->close_reason, "transient") == 0;
    bool limited = strcmp (conn->close_reason, "limited") == 0;
    conn->close_reason[0] = 0;
    if (limited)
        gw_http_reply_limited (self, conn, conn->retry_ms,
                               "too many API keys this gateway does not know came from "
                               "your address; retry in a moment");
    else if (transient)
        gw_http_reply_error (self, conn, CM_E_UNAVAILABLE,
                             "API keys cannot be checked right now; retry in a moment",
                             NULL);
    else
        gw_http_reply_error (
            self, conn, CM_E_UNAUTHORIZED,
            conn->auth == GW_AUTH_BAD
                ? "the API key was not accepted; check it or ask for a new one"
                : "an API key is required: send Authorization: Bearer <key>, "
                  "X-API-Key, ?token= or the corral_key cookie (POST /v1/login)",
            NULL);
}

void gw_http_stream_begin (gw_server_t *self, gw_conn_t *conn, int status,
                           const char *ctype)
{
    gw_http_t *h = conn->http;
    if (!h || h->ready) return;
    h->streaming = true;
    //  An HTTP/2 stream is not its own network connection; lws frames it.
    h->chunked = lws_get_network_wsi (conn->wsi) == conn->wsi;
    h->last_tx_ms = cm_mono_ms ();
    decide (self, conn, status, ctype);
    timer_start (self, h);
}

bool gw_http_stream_put (gw_server_t *self, gw_conn_t *conn, const char *text, size_t len)
{
    gw_http_t *h = conn->http;
    if (!h || !h->streaming || h->done || !len) return true;
    gw_frame_t *f;
    if (h->chunked) {
        char head[24];
        int n = snprintf (head, sizeof head, "%zx\r\n", len);
        char *buf = malloc ((size_t)n + len + 2);
        if (!buf) {
            gw_conn_close (self, conn, 1011, "server out of memory");
            return false;
        }
        memcpy (buf, head, (size_t)n);
        memcpy (buf + n, text, len);
        memcpy (buf + n + len, "\r\n", 2);
        f = gw_frame_new (buf, (size_t)n + len + 2);
        free (buf);
    } else
        f = gw_frame_new (text, len);
    if (!f) {
        gw_conn_close (self, conn, 1011, "server out of memory");
        return false;
    }
    h->last_tx_ms = cm_mono_ms ();
    bool room = gw_conn_push (self, conn, f);
    gw_frame_unref (&f);
    return room;
}

void gw_http_stream_end (gw_server_t *self, gw_conn_t *conn)
{
    gw_http_t *h = conn->http;
    if (!h || !h->streaming || h->done) return;
    //  HTTP/1.1: the last chunk; HTTP/2: an empty frame written as FINAL.
    gw_frame_t *f = h->chunked ? gw_frame_new ("0\r\n\r\n", 5) : gw_frame_new ("", 0);
    if (!f) {
        gw_conn_close (self, conn, 1011, "server out of memory");
        return;
    }
    gw_conn_push (self, conn, f);
    gw_frame_unref (&f);
    h->done = true;
    lws_callback_on_writable (conn->wsi);
}

void gw_http_dispatch (gw_server_t *self, gw_conn_t *conn, const char *method,
                       json_t *params)
{
    gw_rpc_msg_t msg = {.kind = GW_RPC_REQUEST,
                        .id = json_integer ((json_int_t)conn->id),
                        .method = method,
                        .params = params};
    gw_acp_dispatch (self, conn, &msg);
    json_decref (msg.id);
    json_decref (params);
}

void gw_http_reply_limited (gw_server_t *self, gw_conn_t *conn, int64_t retry_ms,
                            const char *message)
{
    json_t *detail = json_pack ("{s:I}", "retryAfterMs", (json_int_t)retry_ms);
    gw_http_reply_error (self, conn, CM_E_RATE_LIMITED, message, detail);
    json_decref (detail);
}

bool gw_http_take_rate (gw_server_t *self, gw_conn_t *conn)
{
    int64_t retry_ms = 0;
    if (!conn->key || gw_keys_take (self, conn->key, &retry_ms) == 0) return true;
    gw_http_reply_limited (self, conn, retry_ms, NULL);
    return false;
}

/* ---- answers from the ACP handlers (gw_acp.c routes them here) -------------------- */

void gw_http_respond (gw_server_t *self, gw_conn_t *conn, json_t *result, int cm_code,
                      const char *message)
{
    if (cm_code)
        gw_http_respond_error (self, conn, cm_code, message, NULL);
    else
        gw_rest_result (self, conn, result);
}

void gw_http_respond_error (gw_server_t *self, gw_conn_t *conn, int cm_code,
                            const char *message, json_t *detail)
{
    reply_error_as (self, conn, 0, cm_code, message, detail); //  counted by gw_acp.c
}

/* ---- writing ----------------------------------------------------------------------- */

static int write_headers (gw_server_t *self, gw_conn_t *conn)
{
    (void)self;
    gw_http_t *h = conn->http;
    struct lws *wsi = conn->wsi;
    unsigned char buf[LWS_PRE + 3072];
    unsigned char *start = buf + LWS_PRE, *p = start, *end = buf + sizeof buf - 1;
    if (lws_add_http_header_status (wsi, (unsigned)h->status, &p, end)) return -1;
    if (h->ctype && lws_add_http_header_by_token (wsi, WSI_TOKEN_HTTP_CONTENT_TYPE,
                                                  (const unsigned char *)h->ctype,
                                                  (int)strlen (h->ctype), &p, end))
        return -1;
    if (h->streaming) {
        if (h->chunked &&
            lws_add_http_header_by_token (wsi, WSI_TOKEN_HTTP_TRANSFER_ENCODING,
                                          (const unsigned char *)"chunked", 7, &p, end))
            return -1;
    } else if (h->status != 204 && h->status != 304) {
        lws_filepos_t len = conn->qlen ? conn->q[conn->qhead]->len : 0;
        if (lws_add_http_header_content_length (wsi, len, &p, end)) return -1;
    }
    static const char nostore[] = "no-store";
    if (lws_add_http_header_by_token (wsi, WSI_TOKEN_HTTP_CACHE_CONTROL,
                                      (const unsigned char *)nostore,
                                      (int)sizeof nostore - 1, &p, end))
        return -1;
    for (int i = 0; i < h->nhdr; i++)
        if (lws_add_http_header_by_name (wsi, (const unsigned char *)h->hdr[i].name,
                                         (const unsigned char *)h->hdr[i].value,
                                         (int)strlen (h->hdr[i].value), &p, end))
            return -1;
    if (h->close_after && lws_get_network_wsi (wsi) == wsi &&
        lws_add_http_header_by_token (wsi, WSI_TOKEN_CONNECTION,
                                      (const unsigned char *)"close", 5, &p, end))
        return -1;
    return lws_finalize_write_http_header (wsi, start, &p, end) ? -1 : 0;
}

//  The response is out: free the request and let lws read the next one
//  on this socket (or close it).
static int complete (gw_server_t *self, gw_conn_t *conn)
{
    struct lws *wsi = conn->wsi;
    gw_http_t *h = conn->http;
    bool close = h->close_after;
    if (self->http && h->status >= 100 && h->status < 600)
        self->http->by_class[h->status / 100]++;
    cm_debug ("http %s %s -> %d (%lld ms)",
              h->method >= 0 && h->method <= LWSHUMETH_COLON_PATH
                  ? s_method_names[h->method]
                  : "?",
              h->path, h->status, (long long)(cm_mono_ms () - h->start_ms));
    lws_set_opaque_user_data (wsi, NULL);
    gw_conn_free (self, conn);
    if (close) return -1;
    return lws_http_transaction_completed (wsi) ? -1 : 0;
}

int gw_http_write (gw_server_t *self, gw_conn_t *conn)
{
    gw_http_t *h = conn->http;
    if (!h) return 0;
    if (conn->closing) return -1; //  too slow, key revoked, out of memory
    if (!h->ready) return 0;
    if (!h->headers_sent) {
        if (write_headers (self, conn)) return -1;
        h->headers_sent = true;
        conn->last_tx_ms = cm_mono_ms ();
        //  HEAD: the headers say what GET would send (Content-Length
        //  included); a body would be read as the next response.
        if (h->method == LWSHUMETH_HEAD || (h->done && !conn->qlen))
            return complete (self, conn);
        if (conn->qlen) lws_callback_on_writable (conn->wsi);
        return 0;
    }
    if (!conn->qlen) return 0;
    gw_frame_t *f = conn->q[conn->qhead];
    bool last = h->done && conn->qlen == 1;
    if (f->len || !h->chunked) {
        if (lws_write (conn->wsi, f->buf + LWS_PRE, f->len,
                       last ? LWS_WRITE_HTTP_FINAL : LWS_WRITE_HTTP) < (int)f->len)
            return -1;
    }
    self->stats.frames_out++;
    self->stats.bytes_out += f->len;
    conn->last_tx_ms = cm_mono_ms ();
    gw_conn_pop (self, conn); //  may pump watches: more frames queued
    if (last) return complete (self, conn);
    if (conn->qlen) lws_callback_on_writable (conn->wsi);
    return 0;
}

/* ---- the per-request timer ------------------------------------------------------------ */

static void tick (lws_sorted_usec_list_t *sul)
{
    gw_http_t *h = lws_container_of (sul, gw_http_t, sul);
    gw_server_t *self = h->self;
    gw_conn_t *conn = h->conn;
    h->sul_on = false;
    int64_t now = cm_mono_ms ();
    //  A socket that takes nothing never gets WRITEABLE, so a connection
    //  closed for being slow, or whose queue has not moved for
    //  cfg slow_ms, is killed from here.
    //  A body that does not arrive in time (the request's lws timeout is
    //  off: see on_request) holds a socket and up to max_frame bytes.
    bool late_body = h->body_pending && now - h->start_ms > GW_HTTP_BODY_MS;
    if (conn->closing || late_body ||
        (conn->qlen && now - conn->last_tx_ms > self->cfg->slow_ms)) {
        if (!conn->closing) self->stats.slow_closed++;
        lws_set_timeout (conn->wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
        return;
    }
    if (!h->done) {
        if (h->route == GW_R_READY)
            gw_health_tick (self, conn, now);
        else
            gw_rest_tick (self, conn, now);
    }
    //  Until the response is out (complete() frees the request).
    timer_start (self, h);
}

/* ---- requests ---------------------------------------------------------------------------- */

//  Does path match pattern ("*" = one segment)?  The segment goes to seg.
static bool match (const char *pattern, const char *path, char *seg, size_t segsize)
{
    while (*pattern && *path) {
        if (*pattern == '*') {
            size_t n = strcspn (path, "/");
            if (!n) return false;
            snprintf (seg, segsize, "%.*s", (int)n, path);
            if (n >= segsize) seg[0] = 0; //  too long to be an id
            path += n;
            pattern++;
            continue;
        }
        if (*pattern++ != *path++) return false;
    }
    return !*pattern && !*path;
}

static void find_route (gw_http_t *h)
{
    char seg[64] = "";
    //  HEAD is GET without the body (gw_http_write leaves it out).
    int method = h->method == LWSHUMETH_HEAD ? LWSHUMETH_GET : h->method;
    h->route_err = 404;
    for (size_t i = 0; i < S_ROUTES; i++) {
        if (!match (s_routes[i].pattern, h->path, seg, sizeof seg)) continue;
        if (s_routes[i].method != method) {
            //  The path exists: list its methods for Allow.
            size_t len = strlen (h->allow);
            snprintf (h->allow + len, sizeof h->allow - len, "%s%s", len ? ", " : "",
                      s_method_names[s_routes[i].method]);
            h->route_err = 405;
            continue;
        }
        h->route = s_routes[i].route;
        h->route_err = 0;
        if (strchr (s_routes[i].pattern, '*')) {
            h->has_session = true;
            snprintf (h->session_text, sizeof h->session_text, "%s", seg);
            h->session_bad = cm_uuid_parse (seg, &h->session) != 0;
        }
        return;
    }
}

static int route_index (gw_route_t route)
{
    for (size_t i = 0; i < S_ROUTES; i++)
        if (s_routes[i].route == route) return (int)i;
    return -1;
}

//  Copy query argument name into buf; false when absent.  Too long marks
//  the request bad.
static bool query_arg (struct lws *wsi, gw_http_t *h, const char *name, char *buf,
                       size_t size)
{
    char frag[4200];
    size_t nlen = strlen (name);
    for (int i = 0; i < 64; i++) {
        int n =
            lws_hdr_copy_fragment (wsi, frag, sizeof frag, WSI_TOKEN_HTTP_URI_ARGS, i);
        if (n < 0) return false;
        if (strncmp (frag, name, nlen) != 0 || frag[nlen] != '=') continue;
        if (strlen (frag + nlen + 1) >= size) {
            h->bad_arg = name;
            return false;
        }
        snprintf (buf, size, "%s", frag + nlen + 1);
        return true;
    }
    return false;
}

static void read_request (struct lws *wsi, gw_http_t *h)
{
    query_arg (wsi, h, "after", h->arg_after, sizeof h->arg_after);
    query_arg (wsi, h, "follow", h->arg_follow, sizeof h->arg_follow);
    query_arg (wsi, h, "wait", h->arg_wait, sizeof h->arg_wait);
    query_arg (wsi, h, "limit", h->arg_limit, sizeof h->arg_limit);
    query_arg (wsi, h, "cursor", h->arg_cursor, sizeof h->arg_cursor);
    h->has_cwd = query_arg (wsi, h, "cwd", h->arg_cwd, sizeof h->arg_cwd);
    int n = lws_hdr_custom_length (wsi, "last-event-id:", 14);
    if (n > 0) {
        if ((size_t)n >= sizeof h->last_event_id)
            h->bad_arg = "Last-Event-ID";
        else if (lws_hdr_custom_copy (wsi, h->last_event_id, sizeof h->last_event_id,
                                      "last-event-id:", 14) >= 0)
            h->has_last_event_id = true;
    }
    char accept[512];
    if (lws_hdr_copy (wsi, accept, sizeof accept, WSI_TOKEN_HTTP_ACCEPT) > 0)
        h->accept_sse = strstr (accept, "text/event-stream") != NULL;
    h->tls = lws_is_ssl (wsi) != 0;
}

//  Deepest nesting of [ and { outside strings in a JSON text.
static int json_depth (const char *p, size_t len)
{
    int depth = 0, max = 0;
    bool in_str = false;
    for (size_t i = 0; i < len; i++) {
        char c = p[i];
        if (in_str) {
            if (c == '\\')
                i++;
            else if (c == '"')
                in_str = false;
        } else if (c == '"')
            in_str = true;
        else if (c == '[' || c == '{') {
            if (++depth > max) max = depth;
        } else if (c == ']' || c == '}')
            depth--;
    }
    return max;
}

static int parse_body (gw_server_t *self, gw_conn_t *conn)
{
    gw_http_t *h = conn->http;
    if (h->body.oom) {
        gw_http_reply_error (self, conn, CM_E_NOMEM, NULL, NULL);
        return -1;
    }
    if (!h->body.len) {
        h->json = json_object ();
        return 0;
    }
    if (json_depth (h->body.p, h->body.len) > self->cfg->max_depth) {
        json_t *detail = json_pack ("{s:I}", "limit", (json_int_t)self->cfg->max_depth);
        gw_http_reply_error (self, conn, CM_E_DEPTH,
                             "the request body nests too deeply; flatten it", detail);
        json_decref (detail);
        return -1;
    }
    json_error_t jerr;
    h->json = json_loadb (h->body.p, h->body.len, 0, &jerr);
    if (!h->json) {
        char msg[160];
        snprintf (msg, sizeof msg,
                  "the request body is not valid JSON (line %d, column %d); send one "
                  "JSON object",
                  jerr.line, jerr.column);
        gw_http_reply_error (self, conn, CM_E_INVALID, msg, NULL);
        return -1;
    }
    if (!json_is_object (h->json)) {
        gw_http_reply_error (self, conn, CM_E_INVALID,
                             "the request body must be a JSON object", NULL);
        return -1;
    }
    return 0;
}

//  Run the route once the body is complete and the key is checked.
static void maybe_run (gw_server_t *self, gw_conn_t *conn)
{
    gw_http_t *h = conn->http;
    if (!h || h->started || h->ready || h->body_pending || conn->auth == GW_AUTH_PENDING)
        return;
    h->started = true;
    if (h->route_err == 405) {
        self->stats.errors++;
        gw_http_header (conn, "allow:", "%s", h->allow);
        json_t *body =
            json_pack ("{s:{s:i, s:s, s:s}}", "error", "code", GW_RPC_METHOD_NOT_FOUND,
                       "reason", "unknown_type", "message",
                       "this path does not take that HTTP method; see the Allow header "
                       "and docs/openapi.yaml");
        gw_http_reply (self, conn, 405, body);
        json_decref (body);
        return;
    }
    if (h->route_err) {
        gw_http_reply_error (self, conn, CM_E_NOT_FOUND,
                             "no such endpoint; docs/openapi.yaml lists them", NULL);
        return;
    }
    int i = route_index (h->route);
    unsigned flags = s_routes[i].flags;
    bool need_key = (flags & F_AUTH) || ((flags & F_METRICS) && self->cfg->metrics_auth);
    if (need_key && conn->auth != GW_AUTH_OK) {
        gw_http_reply_no_key (self, conn);
        return;
    }
    if ((flags & F_METRICS) && self->cfg->metrics_auth && !conn->key->admin) {
        gw_http_reply_error (self, conn, CM_E_FORBIDDEN,
                             "the metrics need an admin API key on this gateway", NULL);
        return;
    }
    if (h->bad_arg) {
        char msg[128];
        snprintf (msg, sizeof msg, "the %s argument is too long", h->bad_arg);
        gw_http_reply_error (self, conn, CM_E_INVALID, msg, NULL);
        return;
    }
    if (h->has_session && h->session_bad) {
        gw_http_reply_error (
            self, conn, CM_E_NOT_FOUND,
            "no such session; check the id (GET /v1/sessions lists yours)", NULL);
        return;
    }
    if ((flags & F_BODY) && parse_body (self, conn)) return;
    s_routes[i].fn (self, conn);
}

void gw_http_on_auth (gw_server_t *self, gw_conn_t *conn)
{
    gw_http_t *h = conn->http;
    if (!h) return;
    if (h->started) {
        if (h->route == GW_R_LOGIN) gw_rest_login_done (self, conn);
        return;
    }
    maybe_run (self, conn);
}

static void too_large (gw_server_t *self, gw_conn_t *conn)
{
    gw_http_t *h = conn->http;
    cm_strbuf_free (&h->body);
    h->body_pending = false;
    h->close_after = true; //  the rest of the body is never read
    h->started = true;
    json_t *detail = json_pack ("{s:I}", "limit", (json_int_t)self->cfg->max_frame);
    gw_http_reply_error (self, conn, CM_E_TOO_LARGE,
                         "the request body is larger than the limit (1 MiB by default); "
                         "send less",
                         detail);
    json_decref (detail);
}

//  The connection limits WebSocket clients have (gw_server.c, on_filter)
//  hold for requests in flight too: a waiting prompt or a followed stream
//  holds a connection as long as a WebSocket.  An error when refused.
static const char *admit (gw_server_t *self, gw_conn_t *conn, struct lws *wsi)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    int fd = lws_get_socket_fd (lws_get_network_wsi (wsi));
    if (getpeername (fd, (struct sockaddr *)&ss, &sl) == 0)
        gw_ip_key_from_sockaddr ((struct sockaddr *)&ss, sl, &conn->ip);
    if (self->nconns > (size_t)self->cfg->max_conns)
        return "the gateway is at its connection limit; retry later";
    if (gw_iplimit_acquire (self->iplimit, &conn->ip))
        return "too many open requests and connections from your address; retry later";
    conn->ip_counted = true;
    return NULL;
}

static int on_request (gw_server_t *self, struct lws *wsi)
{
    gw_conn_t *old = lws_get_opaque_user_data (wsi);
    if (old) { //  an earlier transaction lws ended without us
        lws_set_opaque_user_data (wsi, NULL);
        gw_conn_free (self, old);
    }
    gw_conn_t *conn = gw_conn_new (self, wsi, GW_CONN_HTTP);
    if (!conn) return -1;
    gw_http_t *h = calloc (1, sizeof *h);
    if (!h) {
        gw_conn_free (self, conn);
        return -1;
    }
    conn->http = h;
    h->self = self;
    h->conn = conn;
    h->start_ms = cm_mono_ms ();
    lws_set_opaque_user_data (wsi, conn);
    lws_get_peer_simple (wsi, conn->peer, sizeof conn->peer);
    //  Our own timers bound a request (prompts wait for their turn,
    //  streams follow): lws's must not cut it.
    lws_set_timeout (wsi, NO_PENDING_TIMEOUT, 0);
    if (self->http) self->http->http_requests++;
    timer_start (self, h);

    char *uri = NULL;
    int ulen = 0;
    h->method = lws_http_get_uri_and_method (wsi, &uri, &ulen);
    if (h->method < 0 || !uri || ulen <= 0 || (size_t)ulen >= sizeof h->path) {
        h->route_err = 404;
        snprintf (h->path, sizeof h->path, "%s", "(too long)");
    } else {
        memcpy (h->path, uri, (size_t)ulen);
        h->path[ulen] = 0;
        size_t n = strlen (h->path); //  a NUL inside ends it
        if (n > 1 && h->path[n - 1] == '/') h->path[n - 1] = 0;
        find_route (h);
    }
    read_request (wsi, h);
    const char *refused = admit (self, conn, wsi);
    if (refused) {
        self->stats.conns_refused++;
        h->close_after = true; //  a body, if any, is never read
        h->started = true;
        self->stats.errors++;
        reply_error_as (self, conn, 503, CM_E_CAPACITY, refused, NULL);
        return 0;
    }

    //  The body: refuse an oversized one before reading it.
    char clen[32];
    if (lws_hdr_copy (wsi, clen, sizeof clen, WSI_TOKEN_HTTP_CONTENT_LENGTH) > 0) {
        unsigned long long n = strtoull (clen, NULL, 10);
        if (n > (unsigned long long)self->cfg->max_frame) {
            too_large (self, conn);
            return 0;
        }
        h->body_pending = n > 0;
    } else if (lws_hdr_total_length (wsi, WSI_TOKEN_HTTP_TRANSFER_ENCODING) > 0) {
        //  lws 4.1 cannot read a chunked request body: say so, and close.
        h->close_after = true;
        h->started = true;
        self->stats.errors++;
        reply_error_as (self, conn, 411, CM_E_INVALID,
                        "send the body with a Content-Length; chunked request bodies "
                        "are not supported",
                        NULL);
        return 0;
    }

    //  The key: routes that need one look it up now (it may take a store
    //  read); the route runs when the answer is in (gw_http_on_auth).
    if (!h->route_err) {
        unsigned flags = s_routes[route_index (h->route)].flags;
        if ((flags & F_AUTH) || ((flags & F_METRICS) && self->cfg->metrics_auth))
            gw_server_auth (self, conn, wsi);
    }
    maybe_run (self, conn);
    return 0;
}

static int on_body (gw_server_t *self, struct lws *wsi, const void *in, size_t len)
{
    gw_conn_t *conn = lws_get_opaque_user_data (wsi);
    gw_http_t *h = conn ? conn->http : NULL;
    if (!h || !h->body_pending) return 0;
    if (h->body.len + len > (size_t)self->cfg->max_frame) {
        too_large (self, conn);
        return 0;
    }
    cm_strbuf_put (&h->body, in, len);
    return 0;
}

static int on_body_done (gw_server_t *self, struct lws *wsi)
{
    gw_conn_t *conn = lws_get_opaque_user_data (wsi);
    gw_http_t *h = conn ? conn->http : NULL;
    if (!h || !h->body_pending) return 0;
    h->body_pending = false;
    maybe_run (self, conn);
    return 0;
}

int gw_http_callback (gw_server_t *self, struct lws *wsi,
                      enum lws_callback_reasons reason, void *user, void *in, size_t len)
{
    (void)user;
    switch (reason) {
    case LWS_CALLBACK_PROTOCOL_INIT:
        if (self->http) gw_static_init (self->http, lws_get_context (wsi));
        return 0;
    case LWS_CALLBACK_PROTOCOL_DESTROY:
        if (self->http) {
            gw_static_fini (self->http);
            free (self->http);
            self->http = NULL;
        }
        return 0;
    case LWS_CALLBACK_FILTER_HTTP_CONNECTION: {
        //  A request's headers while our previous transaction on this
        //  socket is still open: a pipelined request.  lws 4.1 parses it at
        //  once, drops the open transaction and never makes the socket
        //  writeable again, so the client would wait forever: close instead
        //  (a pipelining client retries without pipelining).
        gw_conn_t *conn = lws_get_opaque_user_data (wsi);
        if (conn && conn->kind == GW_CONN_HTTP) {
            cm_info ("closing connection %llu from %s: a pipelined HTTP request",
                     (unsigned long long)conn->id, conn->peer);
            return -1;
        }
        return 0;
    }
    case LWS_CALLBACK_HTTP:
        return on_request (self, wsi);
    case LWS_CALLBACK_HTTP_BODY:
        return on_body (self, wsi, in, len);
    case LWS_CALLBACK_HTTP_BODY_COMPLETION:
        return on_body_done (self, wsi);
    case LWS_CALLBACK_HTTP_FILE_COMPLETION:
        //  A static file went out.  lws 4.1 leaves ending the transaction
        //  to the protocol; without this the next request on a kept-alive
        //  socket is answered with the same file's headers again.
        return lws_http_transaction_completed (wsi) ? -1 : 0;
    case LWS_CALLBACK_HTTP_DROP_PROTOCOL: {
        //  lws moved the socket on (a file request after an API one).
        gw_conn_t *conn = lws_get_opaque_user_data (wsi);
        if (conn && conn->kind == GW_CONN_HTTP) {
            lws_set_opaque_user_data (wsi, NULL);
            gw_conn_free (self, conn);
        }
        return 0;
    }
    default:
        return 0;
    }
}

void gw_http_free (gw_server_t *self, gw_conn_t *conn)
{
    gw_http_t *h = conn->http;
    if (!h) return;
    if (h->sul_on) lws_sul_cancel (&h->sul);
    gw_rest_end (self, conn);
    cm_strbuf_free (&h->body);
    json_decref (h->json);
    memset (h->login_key, 0, sizeof h->login_key);
    free (h);
    conn->http = NULL;
}
