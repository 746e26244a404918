/*  gw_http.c - the HTTP side (see gw_http.h).  A request becomes a
    GW_CONN_HTTP connection; its response (status, content type, body
    frames) is written from the connection's queue on WRITEABLE.
*/
#include <stdlib.h>
#include <string.h>

#include "cm_log.h"
#include "gw.h"
#include "gw_http.h"

typedef struct gw_http {
    int status;
    const char *ctype;
    bool headers_sent;
    bool streaming; //  more frames will follow (events)
    bool done;      //  the last frame is queued
} gw_http_t;

static const struct lws_http_mount s_api = {
    .mountpoint = "/v1",
    .mountpoint_len = 3,
    .origin = "corral",
    .origin_protocol = LWSMPRO_CALLBACK,
};

const struct lws_http_mount *gw_http_mounts (gw_server_t *self)
{
    (void)self;
    return &s_api;
}

static void respond_text (gw_server_t *self, gw_conn_t *conn, int status,
                          const char *ctype, char *body)
{
    conn->http->status = status;
    conn->http->ctype = ctype;
    conn->http->done = true;
    gw_conn_send_text (self, conn, body);
    lws_callback_on_writable (conn->wsi);
}

void gw_http_respond (gw_server_t *self, gw_conn_t *conn, json_t *result, int cm_code,
                      const char *message)
{
    (void)message;
    if (!conn->http || conn->http->done) return;
    if (cm_code) {
        char *body = json_dumps (json_pack ("{s:s}", "error", cm_strerror (cm_code)), 0);
        respond_text (self, conn, 500, "application/json", body);
        return;
    }
    respond_text (self, conn, 200, "application/json", json_dumps (result, JSON_COMPACT));
}

void gw_http_on_auth (gw_server_t *self, gw_conn_t *conn)
{
    (void)self;
    (void)conn;
}

void gw_http_on_event (gw_server_t *self, gw_conn_t *conn, gw_ev_t *ev)
{
    (void)self;
    (void)conn;
    (void)ev;
}

void gw_http_free (gw_server_t *self, gw_conn_t *conn)
{
    (void)self;
    free (conn->http);
    conn->http = NULL;
}

int gw_http_write (gw_server_t *self, gw_conn_t *conn)
{
    gw_http_t *h = conn->http;
    if (!h || !conn->qlen) return 0;
    unsigned char hdr[LWS_PRE + 1024], *start = hdr + LWS_PRE, *p = start,
                                       *end = hdr + sizeof hdr - 1;
    if (!h->headers_sent) {
        gw_frame_t *f = conn->q[conn->qhead];
        if (lws_add_http_common_headers (
                conn->wsi, (unsigned)h->status, h->ctype,
                h->streaming ? LWS_ILLEGAL_HTTP_CONTENT_LEN : f->len, &p, end) ||
            lws_finalize_write_http_header (conn->wsi, start, &p, end))
            return -1;
        h->headers_sent = true;
        lws_callback_on_writable (conn->wsi);
        return 0;
    }
    gw_frame_t *f = conn->q[conn->qhead];
    bool last = h->done && conn->qlen == 1;
    if (lws_write (conn->wsi, f->buf + LWS_PRE, f->len,
                   last ? LWS_WRITE_HTTP_FINAL : LWS_WRITE_HTTP) < (int)f->len)
        return -1;
    gw_conn_pop (self, conn);
    if (last) return lws_http_transaction_completed (conn->wsi) ? -1 : 1;
    if (conn->qlen) lws_callback_on_writable (conn->wsi);
    return 0;
}

int gw_http_callback (gw_server_t *self, struct lws *wsi,
                      enum lws_callback_reasons reason, void *user, void *in, size_t len)
{
    (void)user;
    (void)len;
    switch (reason) {
    case LWS_CALLBACK_HTTP: {
        gw_conn_t *conn = gw_conn_new (self, wsi, GW_CONN_HTTP);
        if (!conn) return -1;
        conn->http = calloc (1, sizeof *conn->http);
        if (!conn->http) return -1;
        lws_set_opaque_user_data (wsi, conn);
        const char *path = in;
        if (strcmp (path, "/health/live") == 0)
            respond_text (self, conn, 200, "application/json",
                          strdup ("{\"status\":\"ok\"}"));
        else
            respond_text (self, conn, 404, "application/json",
                          strdup ("{\"error\":\"not_found\"}"));
        return 0;
    }
    default:
        return 0;
    }
}
