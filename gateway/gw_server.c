/*  gw_server.c - the lws context and its callbacks: the WebSocket side of
    /acp (handshake checks, fragments, writes, pongs), the bus sockets'
    raw files, the timers, and the graceful stop.

    Handshake policy (LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION): a WebSocket
    upgrade anywhere but /acp is refused outright.  Everything else that is
    wrong about a connection - an Origin not on the allowlist, too many
    connections from one address or in all, a server that is stopping - is
    accepted and then closed at once with a close code and a reason the
    client can read (a refused upgrade only shows as a failed handshake).

    Stop: SIGTERM/SIGINT (cm_stop) are checked on the 100 ms tick; every
    WebSocket gets close 1001, HTTP transactions finish, and the loop ends
    when no connection remains or after 5 s.
*/
#include <arpa/inet.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>
#include <ev.h>
#include <zmq.h>

#include "cm_log.h"
#include "cm_stop.h"
#include "cm_time.h"
#include "cm_zmq.h"
#include "gw.h"
#include "gw_auth.h"
#include "gw_http.h"
#include "gw_render.h"

#define TICK_US    (100 * LWS_US_PER_MS)
#define STOP_GRACE 5000 //  ms to let connections close

static gw_server_t *server_of (struct lws *wsi)
{
    return lws_context_user (lws_get_context (wsi));
}

static gw_conn_t *conn_of (struct lws *wsi)
{
    //  The bus's raw files carry the server itself (gw_bus.c), and lws
    //  sends their WSI_DESTROY here too: that is not a connection.
    void *p = lws_get_opaque_user_data (wsi);
    return p == (void *)server_of (wsi) ? NULL : p;
}

static void drop_conn (gw_server_t *self, struct lws *wsi)
{
    gw_conn_t *conn = conn_of (wsi);
    if (!conn) return;
    lws_set_opaque_user_data (wsi, NULL);
    gw_conn_free (self, conn);
}

/* ---- handshake --------------------------------------------------------- */

static bool origin_allowed (gw_server_t *self, struct lws *wsi)
{
    if (!self->norigins) return true;
    char origin[256];
    int n = lws_hdr_copy (wsi, origin, sizeof origin, WSI_TOKEN_ORIGIN);
    if (n <= 0) return true; //  not a browser: Origin is a browser's claim
    for (size_t i = 0; i < self->norigins; i++)
        if (strcmp (origin, self->origins[i]) == 0) return true;
    return false;
}

//  Copy a header into buf; NULL when absent.  A header longer than buf is
//  reported as too long rather than cut (gw_auth refuses it).
static const char *header (struct lws *wsi, enum lws_token_indexes tok, char *buf,
                           size_t size, bool *too_long)
{
    int len = lws_hdr_total_length (wsi, tok);
    if (len <= 0) return NULL;
    if ((size_t)len >= size) {
        *too_long = true;
        return NULL;
    }
    return lws_hdr_copy (wsi, buf, (int)size, tok) < 0 ? NULL : buf;
}

static const char *custom_header (struct lws *wsi, const char *name, char *buf,
                                  size_t size, bool *too_long)
{
    int nlen = (int)strlen (name);
    int len = lws_hdr_custom_length (wsi, name, nlen);
    if (len <= 0) return NULL;
    if ((size_t)len >= size) {
        *too_long = true;
        return NULL;
    }
    return lws_hdr_custom_copy (wsi, buf, (int)size, name, nlen) < 0 ? NULL : buf;
}

//  Find the presented key, hash it and start its lookup.  Shared with
//  HTTP requests.  Returns 0 (conn->auth set: NONE, PENDING, OK, BAD).
int gw_server_auth (gw_server_t *self, gw_conn_t *conn, struct lws *wsi)
{
    char authz[GW_AUTH_INPUT_MAX + 1], xkey[GW_AUTH_INPUT_MAX + 1],
        query[GW_AUTH_INPUT_MAX + 1], cookie[GW_AUTH_INPUT_MAX + 1];
    bool too_long = false;
    gw_auth_request_t req = {
        .authorization =
            header (wsi, WSI_TOKEN_HTTP_AUTHORIZATION, authz, sizeof authz, &too_long),
        .x_api_key = custom_header (wsi, "x-api-key:", xkey, sizeof xkey, &too_long),
        .query = header (wsi, WSI_TOKEN_HTTP_URI_ARGS, query, sizeof query, &too_long),
        .cookie = header (wsi, WSI_TOKEN_HTTP_COOKIE, cookie, sizeof cookie, &too_long)};
    conn->auth = GW_AUTH_NONE;
    if (too_long) {
        conn->auth = GW_AUTH_BAD;
        return 0;
    }
    char key[GW_AUTH_KEY_BUF];
    int rc = gw_auth_extract (&req, key, NULL, NULL, 0);
    if (rc == CM_E_UNAUTHORIZED) return 0;
    uint8_t hash[GW_AUTH_HASH_LEN];
    if (rc || gw_auth_key_hash (key, hash)) {
        conn->auth = GW_AUTH_BAD;
        memset (key, 0, sizeof key);
        return 0;
    }
    memset (key, 0, sizeof key);
    if (!gw_keys_acquire (self, conn, hash)) conn->auth = GW_AUTH_BAD;
    return 0;
}

static int on_filter (gw_server_t *self, struct lws *wsi)
{
    char uri[64];
    if (lws_hdr_copy (wsi, uri, sizeof uri, WSI_TOKEN_GET_URI) <= 0 ||
        strcmp (uri, "/acp") != 0)
        return 1;          //  WebSocket only at /acp
    drop_conn (self, wsi); //  an HTTP keep-alive connection upgrading
    gw_conn_t *conn = gw_conn_new (self, wsi, GW_CONN_WS);
    if (!conn) return 1;
    lws_set_opaque_user_data (wsi, conn);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (getpeername (lws_get_socket_fd (wsi), (struct sockaddr *)&ss, &sl) == 0) {
        gw_ip_key_from_sockaddr ((struct sockaddr *)&ss, sl, &conn->ip);
        lws_get_peer_simple (wsi, conn->peer, sizeof conn->peer);
    }
    const char *why = NULL;
    int code = 1008;
    if (self->stopping) {
        why = "the server is shutting down; reconnect to another gateway";
        code = 1001;
    } else if (!origin_allowed (self, wsi))
        why = "this Origin is not allowed to connect";
    else if (self->nconns > (size_t)self->cfg->max_conns) {
        why = "the gateway is at its connection limit; retry later";
        code = 1013;
        self->stats.conns_refused++;
    } else if (gw_iplimit_acquire (self->iplimit, &conn->ip)) {
        why = "too many connections from your address; close some and retry";
        code = 1013;
        self->stats.conns_refused++;
    } else
        conn->ip_counted = true;
    if (why) {
        conn->refuse = true;
        conn->close_code = code;
        snprintf (conn->close_reason, sizeof conn->close_reason, "%s", why);
        return 0;
    }
    gw_server_auth (self, conn, wsi);
    return 0;
}

/* ---- WebSocket ---------------------------------------------------------- */

static int on_receive (gw_server_t *self, gw_conn_t *conn, struct lws *wsi,
                       const char *in, size_t len)
{
    conn->last_rx_ms = cm_mono_ms ();
    if (conn->closing) return 0;
    bool first = lws_is_first_fragment (wsi);
    bool final = lws_is_final_fragment (wsi);
    if (first) {
        cm_strbuf_free (&conn->rx);
        conn->rx_binary = lws_frame_is_binary (wsi);
        conn->rx.oom = false;
    }
    //  Over the cap: keep nothing more, answer once at the end.
    if (conn->rx.len + len > (size_t)self->cfg->max_frame) {
        cm_strbuf_free (&conn->rx);
        conn->rx.oom = true; //  marks "too large" for this message
    } else if (!conn->rx.oom)
        cm_strbuf_put (&conn->rx, in, len);
    if (!final) return 0;
    if (conn->rx.oom) {
        cm_strbuf_free (&conn->rx);
        //  docs/protocol.md: -32006 with data.limit, the cap in force.
        char text[160];
        snprintf (text, sizeof text,
                  "too large: the message is over the limit of %lld bytes; split the "
                  "content or send a file reference",
                  (long long)self->cfg->max_frame);
        json_t *detail = json_pack ("{s:I}", "limit", (json_int_t)self->cfg->max_frame);
        gw_send_error_detail (self, conn, json_null (), CM_E_TOO_LARGE, text, detail);
        json_decref (detail);
        return 0;
    }
    if (conn->rx_binary) {
        cm_strbuf_free (&conn->rx);
        gw_conn_send_text (
            self, conn,
            gw_rpc_error (json_null (), GW_RPC_INVALID_REQUEST,
                          "binary frames are not accepted; send each JSON-RPC message as "
                          "one text frame",
                          NULL));
        return 0;
    }
    gw_acp_on_frame (self, conn, conn->rx.p ? conn->rx.p : "", conn->rx.len);
    cm_strbuf_free (&conn->rx);
    return 0;
}

static int s_callback (struct lws *wsi, enum lws_callback_reasons reason, void *user,
                       void *in, size_t len)
{
    gw_server_t *self = server_of (wsi);
    gw_conn_t *conn = conn_of (wsi);
    switch (reason) {
    case LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION:
        return on_filter (self, wsi);
    case LWS_CALLBACK_ESTABLISHED:
        if (!conn) return -1;
        if (conn->refuse) {
            char why[sizeof conn->close_reason];
            memcpy (why, conn->close_reason, sizeof why);
            conn->refuse = false;
            gw_conn_close (self, conn, conn->close_code, why);
        } else if (conn->auth == GW_AUTH_BAD &&
                   strcmp (conn->close_reason, "limited") == 0)
            gw_conn_close (self, conn, 1013,
                           "too many API keys this gateway does not know came from your "
                           "address; retry in a few seconds");
        else if (conn->auth == GW_AUTH_BAD)
            //  A malformed key (no lookup was made): refused like an
            //  unknown one (gw_acp_on_auth).
            gw_conn_close (self, conn, 1008, "the API key was not accepted");
        return 0;
    case LWS_CALLBACK_RECEIVE:
        return conn && conn->kind == GW_CONN_WS ? on_receive (self, conn, wsi, in, len)
                                                : 0;
    case LWS_CALLBACK_RECEIVE_PONG:
        if (conn) gw_conn_on_pong (self, conn);
        return 0;
    case LWS_CALLBACK_SERVER_WRITEABLE:
        return conn ? gw_conn_write (self, conn) : 0;
    case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
        return 0;
    case LWS_CALLBACK_CLOSED:
    case LWS_CALLBACK_CLOSED_HTTP:
    case LWS_CALLBACK_WSI_DESTROY:
        drop_conn (self, wsi);
        return 0;
    case LWS_CALLBACK_HTTP_WRITEABLE:
        if (conn && conn->kind == GW_CONN_HTTP) {
            int rc = gw_http_write (self, conn);
            if (rc == 1) { //  transaction complete; keep-alive may reuse the wsi
                drop_conn (self, wsi);
                return 0;
            }
            return rc;
        }
        return 0;
    default:
        return gw_http_callback (self, wsi, reason, user, in, len);
    }
}

/* ---- the bus's raw files ------------------------------------------------- */

static int s_bus_callback (struct lws *wsi, enum lws_callback_reasons reason, void *user,
                           void *in, size_t len)
{
    (void)user;
    (void)in;
    (void)len;
    gw_server_t *self = lws_get_opaque_user_data (wsi);
    if (reason == LWS_CALLBACK_RAW_RX_FILE && self) gw_bus_drain (self);
    if (reason == LWS_CALLBACK_RAW_CLOSE_FILE && self && !self->stopping)
        cm_error ("a bus socket's descriptor was closed by lws");
    return 0;
}

static struct lws_protocols s_protocols[] = {
    {"corral", s_callback, 0, 4096, 0, NULL, 0},
    {"corral-bus", s_bus_callback, 0, 0, 0, NULL, 0},
    {"corral-listen", gw_listen_callback, 0, 0, 0, NULL, 0},
    {NULL, NULL, 0, 0, 0, NULL, 0}};

//  lws decides its own liveness checks from this policy; ours (pings,
//  idle) run in gw_conn_sweep.  A zero hangup switches lws's off entirely:
//  with any value, every connection puts a timer in a sorted list whose
//  insertion walks the list, which halved the accept rate at 10 000
//  connections (4 700/s against 10 200/s without).
static const lws_retry_bo_t s_idle_policy = {
    .secs_since_valid_ping = 0,
    .secs_since_valid_hangup = 0,
};

/* ---- timers and stop ------------------------------------------------------ */

static void begin_stop (gw_server_t *self)
{
    self->stopping = true;
    self->stop_deadline = cm_mono_ms () + STOP_GRACE;
    cm_info ("stopping: closing %zu connections", self->nconns);
    for (gw_conn_t *conn = self->all; conn; conn = conn->all_next)
        if (conn->kind == GW_CONN_WS)
            gw_conn_close (self, conn, 1001, "the server is shutting down; reconnect");
}

static void tick_cb (lws_sorted_usec_list_t *sul)
{
    gw_server_t *self = lws_container_of (sul, gw_server_t, tick_sul);
    int64_t now = cm_mono_ms ();
    if (cm_stop_requested () && !self->stopping) begin_stop (self);
    gw_listen_tick (self);
    gw_bus_drain (self);
    gw_bus_tick (self, now);
    gw_watch_tick (self, now);
    if (now - self->last_sweep >= 1000) {
        self->last_sweep = now;
        gw_conn_sweep (self, now);
        gw_keys_tick (self, now);
    }
    lws_sul_schedule (self->ctx, 0, &self->tick_sul, tick_cb, TICK_US);
}

static void on_stats (gw_server_t *self, void *arg, int rc, proto_msg_t *reply)
{
    (void)arg;
    proto_store_stats_t *s = rc == 0 && reply ? proto_body (reply, store_stats) : NULL;
    if (!s) {
        cm_warn ("the store did not tell its epoch yet; asking again");
        gw_call_store (self, PROTO_STORE_STATS, NULL, on_stats, NULL, NULL);
        return;
    }
    snprintf (self->epoch, sizeof self->epoch, "%s", s->epoch);
    cm_info ("store epoch %s", self->epoch);
    gw_acp_on_epoch (self);
}

static void lws_emit (int level, const char *line)
{
    char buf[512];
    snprintf (buf, sizeof buf, "%s", line);
    size_t n = strlen (buf);
    while (n && (buf[n - 1] == '\n' || buf[n - 1] == '\r')) buf[--n] = 0;
    if (level & LLL_ERR)
        cm_error ("lws: %s", buf);
    else
        cm_warn ("lws: %s", buf);
}

static int split_origins (gw_server_t *self)
{
    const char *s = self->cfg->origins;
    if (!s || !*s) return 0;
    for (const char *p = s; p; p = strchr (p, ',')) {
        p += *p == ',';
        self->norigins++;
    }
    self->origins = calloc (self->norigins, sizeof *self->origins);
    if (!self->origins) return CM_E_NOMEM;
    size_t i = 0;
    for (const char *p = s; *p && i < self->norigins;) {
        const char *e = strchr (p, ',');
        size_t n = e ? (size_t)(e - p) : strlen (p);
        while (n && (*p == ' ')) p++, n--;
        while (n && p[n - 1] == ' ') n--;
        self->origins[i++] = strndup (p, n);
        p = e ? e + 1 : p + strlen (p);
    }
    self->norigins = i;
    return 0;
}

static void raise_fd_limit (void)
{
    struct rlimit rl;
    if (getrlimit (RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit (RLIMIT_NOFILE, &rl);
    }
}

int gw_server_run (gw_config_t *cfg)
{
    gw_server_t server = {.cfg = cfg, .started_ms = cm_time_ms ()};
    gw_server_t *self = &server;
    int rc = CM_E_INTERNAL;
    struct ev_loop *loop = NULL;
    signal (SIGPIPE, SIG_IGN);
    raise_fd_limit ();
    lws_set_log_level (LLL_ERR | LLL_WARN, lws_emit);

    char host[256];
    snprintf (host, sizeof host, "%s", cfg->listen);
    char *colon = strrchr (host, ':');
    if (!colon) {
        cm_error ("listen must be host:port, not %s", cfg->listen);
        return CM_E_INVALID;
    }
    *colon = 0;
    //  "[::1]:8080": the brackets are URL syntax, not part of the address.
    char *h = host;
    if (*h == '[' && colon > h && colon[-1] == ']') {
        h++;
        colon[-1] = 0;
    }
    int listen_fd = gw_listen_open (self, h, colon + 1);
    if (listen_fd < 0) return CM_E_INVALID;

    self->conns = cm_map_new (8);
    self->subs = cm_map_new (16);
    self->keys = cm_map_new (16);
    self->iplimit = gw_iplimit_new ((uint32_t)cfg->max_conns_per_ip, 1000000);
    self->probes = gw_ipbuckets_new ((uint32_t)cfg->probe_rate,
                                     (uint32_t)cfg->probe_burst, GW_PROBE_IPS_MAX);
    self->render = gw_render_new ();
    if (!self->conns || !self->subs || !self->keys || !self->iplimit || !self->probes ||
        !self->render || split_origins (self))
        goto done;

    struct lws_context_creation_info info;
    memset (&info, 0, sizeof info);
    info.port = CONTEXT_PORT_NO_LISTEN_SERVER; //  gw_listen.c accepts
    info.protocols = s_protocols;
    info.mounts = gw_http_mounts (self);
    info.user = self;
    info.retry_and_idle_policy = &s_idle_policy;
    info.options = LWS_SERVER_OPTION_VALIDATE_UTF8 |
                   LWS_SERVER_OPTION_HTTP_HEADERS_SECURITY_BEST_PRACTICES_ENFORCE;
    if (cfg->tls_cert && *cfg->tls_cert) {
        info.options |= LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
        info.ssl_cert_filepath = cfg->tls_cert;
        info.ssl_private_key_filepath = cfg->tls_key;
    }
    info.timeout_secs = 20;
    //  lws's own loop is poll(2) over every descriptor: with tens of
    //  thousands of connections each wake-up walks them all.  A libev loop
    //  on epoll, given to lws as a foreign loop, wakes for what is ready.
    loop = ev_loop_new (EVBACKEND_EPOLL | EVFLAG_NOSIGMASK);
    void *foreign[1] = {loop};
    if (!loop) {
        cm_error ("cannot make an epoll event loop");
        goto done;
    }
    info.options |= LWS_SERVER_OPTION_LIBEV;
    info.foreign_loops = foreign;
    self->ctx = lws_create_context (&info);
    if (!self->ctx) {
        cm_error ("cannot start the HTTP server (a bad certificate or key?)");
        close (listen_fd);
        goto done;
    }
    self->vhost = lws_get_vhost_by_name (self->ctx, "default");
    if (!self->vhost) {
        cm_error ("lws made no default vhost");
        goto done;
    }
    if (gw_listen_adopt (self, listen_fd)) {
        cm_error ("cannot adopt the listening socket into the lws loop");
        goto done;
    }
    if (gw_bus_open (self)) goto done;
    gw_call_store (self, PROTO_STORE_STATS, NULL, on_stats, NULL, NULL);
    lws_sul_schedule (self->ctx, 0, &self->tick_sul, tick_cb, TICK_US);
    cm_info ("listening on %s://%s (WebSocket /acp, REST /v1)",
             cfg->tls_cert && *cfg->tls_cert ? "https" : "http", cfg->listen);

    while (!(self->stopping && (!self->nconns || cm_mono_ms () > self->stop_deadline)))
        ev_run (loop, EVRUN_ONCE);
    rc = 0;
    cm_info ("stopped");
done:
    //  Connections are freed by lws's close callbacks during destroy.
    if (self->ctx) {
        struct lws_context *ctx = self->ctx;
        self->stopping = true;
        self->ctx = NULL; //  no timers from here on (gw_bus_kick checks)
        lws_context_destroy (ctx);
    }
    if (loop) ev_loop_destroy (loop);
    while (self->all) gw_conn_free (self, self->all);
    if (self->subs) {
        size_t pos = 0;
        void *value;
        while (cm_map_next (self->subs, &pos, NULL, &value)) {
            gw_sub_t *sub = value;
            for (size_t i = 0; i < sub->count; i++)
                gw_ev_unref (&sub->ring[(sub->lo + i) % GW_RING]);
            free (value);
        }
        cm_map_destroy (&self->subs);
    }
    gw_bus_close (self);
    gw_keys_free_all (self);
    cm_map_destroy (&self->conns);
    gw_iplimit_destroy (&self->iplimit);
    gw_ipbuckets_destroy (&self->probes);
    gw_render_destroy (&self->render);
    for (size_t i = 0; i < self->norigins; i++) free (self->origins[i]);
    free (self->origins);
    return rc;
}
