/*  gw_http.h - the gateway's HTTP side on the WebSocket port: REST
    (the ACP handlers behind URLs), the event stream as JSON lines or SSE,
    health, metrics, login, and static files (DESIGN §6, docs/openapi.yaml).

    An HTTP request is a gw_conn_t of kind GW_CONN_HTTP for the length of
    one transaction: its answer goes out through the connection's queue
    like a WebSocket frame, so a streaming response (events) obeys the same
    bounded queue and slow-client rules.
*/
#ifndef GW_HTTP_H
#define GW_HTTP_H

#include "gw.h"

struct gw_http;

//  The mounts to hand lws (static files at /, callbacks for the API).
//  Valid for the server's lifetime.
const struct lws_http_mount *gw_http_mounts (gw_server_t *self);

//  HTTP callback reasons of the "corral" protocol land here.
int gw_http_callback (gw_server_t *self, struct lws *wsi,
                      enum lws_callback_reasons reason, void *user, void *in, size_t len);

//  WRITEABLE for an HTTP connection: headers first, then queued frames.
//  Returns -1 to close, else 0.  When the response is complete the
//  connection is freed here (and the wsi's opaque pointer cleared) before
//  lws is told the transaction ended, so lws may reuse the socket.
int gw_http_write (gw_server_t *self, gw_conn_t *conn);

//  The key check of an HTTP request finished (conn->auth says how).
void gw_http_on_auth (gw_server_t *self, gw_conn_t *conn);

//  A handler's answer for a REST request: result (borrowed) or a cm error
//  code with an optional message of our own.
void gw_http_respond (gw_server_t *self, gw_conn_t *conn, json_t *result, int cm_code,
                      const char *message);
//  The same for an error with a detail object (borrowed; filtered by
//  gw_rpc's allowlist: retryAfterMs, lastSeq ... reach REST clients too).
void gw_http_respond_error (gw_server_t *self, gw_conn_t *conn, int cm_code,
                            const char *message, json_t *detail);

//  An event for a streaming request (events?after=N): one JSON line or
//  one SSE record.  Non-streaming requests ignore events.
void gw_http_on_event (gw_server_t *self, gw_conn_t *conn, gw_ev_t *ev);

void gw_http_free (gw_server_t *self, gw_conn_t *conn);

//  Pop the head frame of the queue after writing it (gw_conn.c).
void gw_conn_pop (gw_server_t *self, gw_conn_t *conn);

#endif
