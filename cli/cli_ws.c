/*  cli_ws.c - the WebSocket/ACP client of corral tail, chat and acp
    (cli_ws.h says what it does).

    lws runs its own poll loop (Debian's 4.1.6 has no external poll); the
    input fd and a signalfd are adopted into it as raw files, timers are
    lws_sul.  One protocol callback serves the WebSocket and both raw
    files; the wsi tells which.  A reconnect is always scheduled on a
    timer, never started from inside a close callback.
*/
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <time.h>
#include <unistd.h>

#include <libwebsockets.h>

#include "cli.h"
#include "cli_render.h"
#include "cli_ws.h"

#define BACKOFF_FIRST_MS  250
#define BACKOFF_MAX_MS    5000
#define RETRY_STARTING_MS 500   //  after -32011 "starting"
#define FLUSH_MAX_MS      10000 //  cli_ws_stop waits this long for the queue
#define PING_SECS         30    //  default of CORRAL_WS_PING
#define ERR_STARTING      -32011
#define ERR_EXPIRED       -32008
#define AUTH_MAX          (16 + 256) //  "Bearer " and a key (cli_target.h)

typedef struct frame {
    struct frame *next;
    size_t len;
    unsigned char buf[]; //  LWS_PRE bytes, then the text
} frame_t;

typedef struct {
    int64_t id;
    cli_ws_reply_fn *cb;
    void *arg;
    char method[40];
} pending_t;

struct cli_ws {
    cli_ws_opts_t opts; //  strings below are our copies
    char *url, *key, *ca_file, *client_name;
    char *url_parse; //  lws_parse_uri cuts this one up
    const char *host, *path_tail;
    char path[1024];
    int port;
    bool tls;

    struct lws_context *ctx;
    struct lws_vhost *vh;
    struct lws *wsi; //  the WebSocket (connecting or open), else NULL
    bool attempt;    //  a connection attempt is live (wsi may still be NULL)
    bool open;       //  established
    bool inited;     //  ACP: initialize answered
    bool ready;      //  ACP: initialize (and attach) answered
    bool raw;        //  opts.on.on_text set
    int close_code;  //  what the gateway's close frame said
    char close_why[160];
    int backoff_ms;

    struct lws *in_wsi; //  the adopted input fd
    int in_fd;
    bool in_closing;
    struct lws *sig_wsi;
    int sig_fd;

    frame_t *q_head, *q_tail;
    size_t q_bytes;
    bool q_was_high;

    unsigned char *rx;
    size_t rx_len, rx_cap;
    bool rx_binary;
    bool rx_toobig;

    int64_t next_id;
    pending_t pending[CLI_WS_PENDING_MAX];
    size_t n_pending;

    char *sid; //  the watched session, NULL when none
    int64_t last_seq;
    char epoch[160];

    bool stopping, done, destroying;
    bool serving; //  in an event that may have called a handler: on_after due
    int rc;

    lws_retry_bo_t idle_policy; //  ping after silence, hang up after more
    lws_sorted_usec_list_t sul_connect, sul_hs, sul_flush, sul_user;
    void (*user_fn) (cli_ws_t *ws, void *arg);
};

static void s_connect (cli_ws_t *self);
static void s_send_initialize (cli_ws_t *self);
static void s_send_attach (cli_ws_t *self);

// ---------------------------------------------------------------------------
//  Small helpers

const char *cli_ws_error_text (const json_t *error, char *buf, size_t size)
{
    const char *msg = json_string_value (json_object_get (error, "message"));
    snprintf (buf, size, "%s (%d)", msg ? msg : "error", cli_ws_error_code (error));
    return cli_render_clean_line (buf); //  the gateway's words, for a terminal
}

int cli_ws_error_code (const json_t *error)
{
    return (int)json_integer_value (json_object_get (error, "code"));
}

void cli_ws_stop_refused (cli_ws_t *self, const char *prog, const char *method,
                          const json_t *error)
{
    char buf[512];
    fprintf (stderr, "%s: %s failed: %s\n", prog, method,
             cli_ws_error_text (error, buf, sizeof buf));
    cli_ws_stop (self, cli_render_exit_code (error));
}

static char *s_dup (const char *s)
{
    return s ? strdup (s) : NULL;
}

static void s_queue_free (cli_ws_t *self)
{
    while (self->q_head) {
        frame_t *f = self->q_head;
        self->q_head = f->next;
        free (f);
    }
    self->q_tail = NULL;
    self->q_bytes = 0;
}

//  Fail every pending request: its connection is gone.
static void s_fail_pending (cli_ws_t *self)
{
    json_t *err = json_pack ("{s:i,s:s}", "code", CLI_WS_DROPPED, "message",
                             "the connection to the gateway was lost");
    while (self->n_pending) {
        pending_t p = self->pending[--self->n_pending];
        if (p.cb && err) p.cb (self, NULL, err, p.arg);
    }
    json_decref (err);
}

static void s_sul_cancel (cli_ws_t *self, lws_sorted_usec_list_t *sul)
{
    lws_sul_schedule (self->ctx, 0, sul, NULL, LWS_SET_TIMER_USEC_CANCEL);
}

static void s_finish (cli_ws_t *self)
{
    self->done = true;
    lws_cancel_service (self->ctx);
}

// ---------------------------------------------------------------------------
//  Connection lifecycle

//  After an event whose handlers ran: on_after, once.
static void s_after (cli_ws_t *self)
{
    if (!self->serving) return;
    self->serving = false;
    if (!self->destroying && self->opts.on.on_after)
        self->opts.on.on_after (self, self->opts.arg);
}

static void s_connect_cb (lws_sorted_usec_list_t *sul)
{
    cli_ws_t *self = lws_container_of (sul, cli_ws_t, sul_connect);
    self->serving = true; //  a failed attempt calls on_drop
    s_connect (self);
    s_after (self);
}

//  The connection (or the attempt) ended: tell on_drop, maybe reconnect.
static void s_gone (cli_ws_t *self, const char *why)
{
    if (!self->attempt) return;
    self->attempt = false;
    bool was_open = self->open;
    //  Closed 1008 before the handshake ended: the key was refused (a
    //  slow client is closed 1008 too, but only once it was ready).
    bool refused = !self->ready && self->close_code == 1008;
    self->wsi = NULL;
    self->open = self->ready = self->inited = false;
    s_queue_free (self);
    self->rx_len = 0;
    s_sul_cancel (self, &self->sul_hs);
    s_fail_pending (self);
    if (self->stopping) {
        s_finish (self);
        return;
    }
    int retry = self->backoff_ms;
    bool again =
        self->opts.on.on_drop && self->opts.on.on_drop (self, self->close_code, why,
                                                        was_open, retry, self->opts.arg);
    if (self->stopping || self->done) {
        s_finish (self);
        return;
    }
    if (!again || refused) {
        self->rc = refused ? CLI_REFUSED : CLI_UNREACHABLE;
        s_finish (self);
        return;
    }
    self->backoff_ms =
        self->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : self->backoff_ms * 2;
    lws_sul_schedule (self->ctx, 0, &self->sul_connect, s_connect_cb,
                      (lws_usec_t)retry * LWS_US_PER_MS);
}

static void s_connect (cli_ws_t *self)
{
    if (self->stopping || self->attempt) return;
    struct lws_client_connect_info i;
    memset (&i, 0, sizeof i);
    i.context = self->ctx;
    i.vhost = self->vh;
    i.address = self->host;
    i.port = self->port;
    i.path = self->path;
    i.host = self->host;
    i.origin = NULL; //  not a browser: no Origin header
    i.ssl_connection = self->tls ? LCCSCF_USE_SSL : 0;
    i.local_protocol_name = "corral";
    i.ietf_version_or_minus_one = -1;
    i.pwsi = &self->wsi;
    i.retry_and_idle_policy = &self->idle_policy;
    self->attempt = true;
    self->close_code = 0;
    self->close_why[0] = '\0';
    if (!lws_client_connect_via_info (&i) && self->attempt)
        s_gone (self, "could not start a connection");
}

static void s_ready (cli_ws_t *self, const json_t *attach)
{
    self->ready = true;
    self->backoff_ms = BACKOFF_FIRST_MS;
    if (self->opts.on.on_ready) self->opts.on.on_ready (self, attach, self->opts.arg);
}

// ---------------------------------------------------------------------------
//  The handshake: initialize, then attach

static void s_hs_retry_cb (lws_sorted_usec_list_t *sul)
{
    cli_ws_t *self = lws_container_of (sul, cli_ws_t, sul_hs);
    if (!self->open) return;
    if (self->inited)
        s_send_attach (self);
    else
        s_send_initialize (self);
}

static bool s_retry_starting (cli_ws_t *self, const json_t *error)
{
    if (cli_ws_error_code (error) != ERR_STARTING) return false;
    lws_sul_schedule (self->ctx, 0, &self->sul_hs, s_hs_retry_cb,
                      (lws_usec_t)RETRY_STARTING_MS * LWS_US_PER_MS);
    return true;
}

static void s_refused (cli_ws_t *self, const char *method, const json_t *error)
{
    if (self->opts.on.on_refused)
        self->opts.on.on_refused (self, method, error, self->opts.arg);
    else
        cli_ws_stop (self, CLI_REFUSED);
}

static void s_on_attached (cli_ws_t *self, const json_t *result, const json_t *error,
                           void *arg)
{
    (void)arg;
    if (error) {
        int code = cli_ws_error_code (error);
        if (code == CLI_WS_DROPPED || s_retry_starting (self, error)) return;
        if (code == ERR_EXPIRED) {
            int64_t after = self->opts.on.on_expired
                                ? self->opts.on.on_expired (self, error, self->opts.arg)
                                : -1;
            if (after < 0) {
                cli_ws_stop (self, CLI_FAIL);
                return;
            }
            self->last_seq = after;
            self->epoch[0] = '\0';
            s_send_attach (self);
            return;
        }
        s_refused (self, "_corral/session/attach", error);
        return;
    }
    const char *epoch = json_string_value (json_object_get (result, "epoch"));
    if (epoch) snprintf (self->epoch, sizeof self->epoch, "%s", epoch);
    if (!self->ready)
        s_ready (self, result);
    else if (self->opts.on.on_ready)
        self->opts.on.on_ready (self, result, self->opts.arg);
}

static void s_send_attach (cli_ws_t *self)
{
    json_t *p = json_pack ("{s:s,s:I}", "sessionId", self->sid, "afterSeq",
                           (json_int_t)self->last_seq);
    if (p && self->epoch[0]) json_object_set_new (p, "epoch", json_string (self->epoch));
    if (cli_ws_request (self, "_corral/session/attach", p, s_on_attached, NULL) < 0 &&
        self->wsi)
        lws_set_timeout (self->wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
}

static void s_on_initialized (cli_ws_t *self, const json_t *result, const json_t *error,
                              void *arg)
{
    (void)arg;
    (void)result;
    if (error) {
        if (cli_ws_error_code (error) == CLI_WS_DROPPED || s_retry_starting (self, error))
            return;
        s_refused (self, "initialize", error);
        return;
    }
    self->inited = true;
    if (self->sid)
        s_send_attach (self);
    else
        s_ready (self, NULL);
}

static void s_send_initialize (cli_ws_t *self)
{
    json_t *p =
        json_pack ("{s:i,s:{s:{s:b,s:b},s:b},s:{s:s,s:s}}", "protocolVersion", 1,
                   "clientCapabilities", "fs", "readTextFile", 0, "writeTextFile", 0,
                   "terminal", 0, "clientInfo", "name",
                   self->client_name ? self->client_name : "corral", "version", "0.1.0");
    if (cli_ws_request (self, "initialize", p, s_on_initialized, NULL) < 0 && self->wsi)
        lws_set_timeout (self->wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
}

// ---------------------------------------------------------------------------
//  Messages from the gateway (ACP mode)

static void s_dispatch (cli_ws_t *self, const char *text, size_t len)
{
    json_error_t jerr;
    json_t *msg = json_loadb (text, len, 0, &jerr);
    if (!json_is_object (msg)) {
        fprintf (stderr, "corral: ignored a message from the gateway that is not a JSON "
                         "object\n");
        json_decref (msg);
        return;
    }
    const char *method = json_string_value (json_object_get (msg, "method"));
    json_t *id = json_object_get (msg, "id");
    json_t *params = json_object_get (msg, "params");
    if (!method) {
        //  A response: find its request.
        json_t *result = json_object_get (msg, "result");
        json_t *error = json_object_get (msg, "error");
        if (json_is_integer (id) && (result || json_is_object (error))) {
            int64_t n = json_integer_value (id);
            for (size_t i = 0; i < self->n_pending; i++) {
                if (self->pending[i].id != n) continue;
                pending_t p = self->pending[i];
                self->pending[i] = self->pending[--self->n_pending];
                if (p.cb) p.cb (self, error ? NULL : result, error, p.arg);
                break;
            }
        }
        json_decref (msg);
        return;
    }
    if (!id && self->sid) {
        //  A notification of the watched session: seq bookkeeping.
        json_t *meta = json_object_get (params, "_meta");
        json_t *seq = json_object_get (meta, "seq");
        const char *sid = json_string_value (json_object_get (params, "sessionId"));
        if (json_is_integer (seq) && sid && strcmp (sid, self->sid) == 0) {
            int64_t s = json_integer_value (seq);
            if (s < self->last_seq) {
                json_decref (msg);
                return; //  a duplicate
            }
            self->last_seq = s;
            const char *epoch = json_string_value (json_object_get (meta, "epoch"));
            if (epoch && !self->epoch[0])
                snprintf (self->epoch, sizeof self->epoch, "%s", epoch);
        }
    }
    if (self->opts.on.on_message)
        self->opts.on.on_message (self, method, params, id, self->opts.arg);
    json_decref (msg);
}

static int s_rx (cli_ws_t *self, struct lws *wsi, const void *in, size_t len)
{
    if (lws_is_first_fragment (wsi)) {
        self->rx_len = 0;
        self->rx_binary = lws_frame_is_binary (wsi);
        self->rx_toobig = false;
    }
    if (self->rx_len + len + 1 > CLI_WS_RX_MAX) {
        snprintf (self->close_why, sizeof self->close_why,
                  "a message from the gateway was larger than %u bytes", CLI_WS_RX_MAX);
        lws_close_reason (wsi, LWS_CLOSE_STATUS_MESSAGE_TOO_LARGE,
                          (unsigned char *)"too large", 9);
        return -1;
    }
    if (self->rx_len + len + 1 > self->rx_cap) {
        size_t cap = self->rx_cap ? self->rx_cap : 65536;
        while (cap < self->rx_len + len + 1) cap *= 2;
        unsigned char *p = realloc (self->rx, cap);
        if (!p) {
            snprintf (self->close_why, sizeof self->close_why, "out of memory");
            return -1;
        }
        self->rx = p;
        self->rx_cap = cap;
    }
    memcpy (self->rx + self->rx_len, in, len);
    self->rx_len += len;
    if (!lws_is_final_fragment (wsi) || lws_remaining_packet_payload (wsi)) return 0;
    self->rx[self->rx_len] = '\0';
    size_t n = self->rx_len;
    self->rx_len = 0;
    if (self->rx_binary) {
        fprintf (stderr, "corral: ignored a binary frame from the gateway (%zu bytes)\n",
                 n);
        return 0;
    }
    if (self->raw) {
        if (self->opts.on.on_text)
            self->opts.on.on_text (self, (const char *)self->rx, n, self->opts.arg);
    } else
        s_dispatch (self, (const char *)self->rx, n);
    return 0;
}

// ---------------------------------------------------------------------------
//  The lws callback

static int s_write_one (cli_ws_t *self, struct lws *wsi)
{
    frame_t *f = self->q_head;
    if (!f) {
        if (self->stopping) {
            lws_close_reason (wsi, LWS_CLOSE_STATUS_NORMAL, (unsigned char *)"bye", 3);
            return -1;
        }
        return 0;
    }
    int n = lws_write (wsi, f->buf + LWS_PRE, f->len, LWS_WRITE_TEXT);
    if (n < (int)f->len) {
        snprintf (self->close_why, sizeof self->close_why,
                  "writing to the gateway failed");
        return -1;
    }
    self->q_head = f->next;
    if (!self->q_head) self->q_tail = NULL;
    self->q_bytes -= f->len;
    free (f);
    if (self->q_head || self->stopping) lws_callback_on_writable (wsi);
    if (self->q_was_high && self->q_bytes < CLI_WS_QUEUE_HIGH / 2) {
        self->q_was_high = false;
        if (self->opts.on.on_drained) self->opts.on.on_drained (self, self->opts.arg);
    }
    return 0;
}

static int s_serve (cli_ws_t *self, struct lws *wsi, enum lws_callback_reasons reason,
                    void *in, size_t len)
{
    switch (reason) {
    case LWS_CALLBACK_CLIENT_APPEND_HANDSHAKE_HEADER: {
        if (!self->key || !self->key[0]) break;
        unsigned char **p = (unsigned char **)in, *end = (*p) + len;
        char value[AUTH_MAX];
        int n = snprintf (value, sizeof value, "Bearer %s", self->key);
        if (n < 0 || (size_t)n >= sizeof value ||
            lws_add_http_header_by_name (wsi, (const unsigned char *)"authorization:",
                                         (const unsigned char *)value, n, p, end))
            return -1;
        break;
    }
    case LWS_CALLBACK_CLIENT_ESTABLISHED:
        self->wsi = wsi;
        self->open = true;
        if (self->raw) {
            self->backoff_ms = BACKOFF_FIRST_MS;
            self->ready = true;
            if (self->opts.on.on_open) self->opts.on.on_open (self, self->opts.arg);
        } else
            s_send_initialize (self);
        break;
    case LWS_CALLBACK_CLIENT_RECEIVE:
        return s_rx (self, wsi, in, len);
    case LWS_CALLBACK_CLIENT_WRITEABLE:
        return s_write_one (self, wsi);
    case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
        if (len >= 2) {
            const unsigned char *b = in;
            self->close_code = (b[0] << 8) | b[1];
            size_t rl = len - 2 < sizeof self->close_why - 1 ? len - 2
                                                             : sizeof self->close_why - 1;
            memcpy (self->close_why, b + 2, rl);
            self->close_why[rl] = '\0';
            cli_render_clean_line (self->close_why); //  shown on stderr
        }
        break;
    case LWS_CALLBACK_CLIENT_CONNECTION_ERROR: {
        char why[sizeof self->close_why + 64];
        snprintf (why, sizeof why, "could not connect to %s: %s", self->url,
                  in && len ? (const char *)in : "connection failed");
        s_gone (self, why);
        break;
    }
    case LWS_CALLBACK_CLIENT_CLOSED: {
        char why[sizeof self->close_why + 64];
        if (self->close_code)
            snprintf (why, sizeof why, "the gateway closed the connection (%d%s%s)",
                      self->close_code, self->close_why[0] ? ": " : "", self->close_why);
        else if (self->close_why[0])
            snprintf (why, sizeof why, "%s", self->close_why);
        else
            snprintf (why, sizeof why, "the connection to the gateway was lost");
        s_gone (self, why);
        break;
    }
    case LWS_CALLBACK_WSI_DESTROY:
        if (wsi == self->wsi) s_gone (self, "the connection to the gateway was lost");
        break;
    case LWS_CALLBACK_RAW_RX_FILE:
        if (self->done) break; //  the loop ends after this service round
        if (wsi == self->sig_wsi) {
            struct signalfd_siginfo si;
            while (read (self->sig_fd, &si, sizeof si) == (ssize_t)sizeof si)
                if (self->opts.on.on_signal)
                    self->opts.on.on_signal (self, (int)si.ssi_signo, self->opts.arg);
            break;
        }
        if (wsi == self->in_wsi) {
            if (self->opts.on.on_input)
                self->opts.on.on_input (self, self->in_fd, self->opts.arg);
            if (self->in_closing) {
                self->in_wsi = NULL;
                return -1;
            }
        }
        break;
    case LWS_CALLBACK_RAW_CLOSE_FILE:
        if (wsi == self->in_wsi) {
            //  A hangup (the pipe's writer closed): lws closes the wsi
            //  without a read callback.  What is left in the fd can still
            //  be read, then read() says 0: let the handler see it all.
            self->in_wsi = NULL;
            for (int i = 0; i < 100000 && !self->in_closing && self->opts.on.on_input;
                 i++) {
                self->serving = true;
                self->opts.on.on_input (self, self->in_fd, self->opts.arg);
                s_after (self); //  as after any other read
            }
        }
        if (wsi == self->sig_wsi) self->sig_wsi = NULL;
        break;
    default:
        break;
    }
    return 0;
}

static int s_callback (struct lws *wsi, enum lws_callback_reasons reason, void *user,
                       void *in, size_t len)
{
    (void)user;
    struct lws_context *ctx = lws_get_context (wsi);
    cli_ws_t *self = ctx ? lws_context_user (ctx) : NULL;
    if (!self || self->destroying) return 0; //  no handler runs from the teardown
    switch (reason) {
    case LWS_CALLBACK_CLIENT_ESTABLISHED:
    case LWS_CALLBACK_CLIENT_RECEIVE:
    case LWS_CALLBACK_CLIENT_WRITEABLE:
    case LWS_CALLBACK_CLIENT_CONNECTION_ERROR:
    case LWS_CALLBACK_CLIENT_CLOSED:
    case LWS_CALLBACK_WSI_DESTROY:
    case LWS_CALLBACK_RAW_RX_FILE:
    case LWS_CALLBACK_RAW_CLOSE_FILE:
        self->serving = true; //  events that reach handlers
        break;
    default:
        break;
    }
    int rc = s_serve (self, wsi, reason, in, len);
    s_after (self);
    return rc;
}

static const struct lws_protocols s_protocols[] = {
    {"corral", s_callback, 0, 65536, 0, NULL, 0},
    {NULL, NULL, 0, 0, 0, NULL, 0},
};

// ---------------------------------------------------------------------------
//  Public

cli_ws_t *cli_ws_new (const cli_ws_opts_t *opts, char *err, size_t errlen)
{
    cli_ws_t *self = calloc (1, sizeof *self);
    if (!self) {
        snprintf (err, errlen, "out of memory");
        return NULL;
    }
    self->opts = *opts;
    self->url = s_dup (opts->url);
    self->key = s_dup (opts->key);
    self->ca_file = s_dup (opts->ca_file);
    self->client_name = s_dup (opts->client_name);
    self->url_parse = s_dup (opts->url);
    self->raw = opts->on.on_text != NULL;
    self->backoff_ms = BACKOFF_FIRST_MS;
    self->in_fd = self->sig_fd = -1;
    self->next_id = 1;
    if (!self->url || !self->url_parse) {
        snprintf (err, errlen, "no gateway URL");
        goto fail;
    }
    const char *prot = NULL, *path = NULL;
    if (lws_parse_uri (self->url_parse, &prot, &self->host, &self->port, &path) ||
        !prot || !self->host || !self->host[0]) {
        snprintf (err, errlen, "'%s' is not a ws:// or wss:// URL", self->url);
        goto fail;
    }
    if (strcmp (prot, "ws") == 0 || strcmp (prot, "http") == 0)
        self->tls = false;
    else if (strcmp (prot, "wss") == 0 || strcmp (prot, "https") == 0)
        self->tls = true;
    else {
        snprintf (err, errlen, "'%s' is not a ws:// or wss:// URL", self->url);
        goto fail;
    }
    snprintf (self->path, sizeof self->path, "/%s", path ? path : "");

    //  A peer that went away without a FIN (a crashed host, a dropped
    //  route) is noticed by pinging after PING_SECS of silence and hanging
    //  up when nothing came back for 2.5 times that.
    long ping = PING_SECS;
    const char *env = getenv ("CORRAL_WS_PING");
    if (env && *env) {
        char *end;
        ping = strtol (env, &end, 10);
        if (*end || ping < 1 || ping > 3600) {
            snprintf (err, errlen,
                      "CORRAL_WS_PING must be seconds from 1 to 3600, not '%s'", env);
            goto fail;
        }
    }
    self->idle_policy.secs_since_valid_ping = (uint16_t)ping;
    self->idle_policy.secs_since_valid_hangup = (uint16_t)(ping * 5 / 2 + 1);
    lws_set_log_level (0, NULL);
    struct lws_context_creation_info info;
    memset (&info, 0, sizeof info);
    info.port = CONTEXT_PORT_NO_LISTEN;
    info.protocols = s_protocols;
    info.gid = -1;
    info.uid = -1;
    info.user = self;
    info.fd_limit_per_thread = 64;
    info.options = self->tls ? LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT : 0;
    info.client_ssl_ca_filepath = self->ca_file;
    self->ctx = lws_create_context (&info);
    if (!self->ctx) {
        snprintf (err, errlen, "libwebsockets could not start (TLS setup failed?)");
        goto fail;
    }
    self->vh = lws_get_vhost_by_name (self->ctx, "default");
    return self;
fail:
    cli_ws_destroy (&self);
    return NULL;
}

void cli_ws_destroy (cli_ws_t **self_p)
{
    if (!self_p || !*self_p) return;
    cli_ws_t *self = *self_p;
    *self_p = NULL;
    self->stopping = true;
    self->destroying = true;
    self->attempt = false; //  no on_drop from the context's teardown
    if (self->ctx) {
        struct lws_context *ctx = self->ctx;
        lws_context_destroy (ctx);
        self->ctx = NULL;
    }
    if (self->sig_fd >= 0) {
        sigset_t mask;
        sigemptyset (&mask);
        sigaddset (&mask, SIGINT);
        sigaddset (&mask, SIGTERM);
        //  A Ctrl-C that came after the loop's last read is spent: the
        //  command is ending with its own exit code, not killed now.
        struct timespec zero = {0, 0};
        while (sigtimedwait (&mask, NULL, &zero) > 0)
            ;
        sigprocmask (SIG_UNBLOCK, &mask, NULL);
    }
    s_queue_free (self);
    free (self->rx);
    free (self->sid);
    free (self->url);
    free (self->key);
    free (self->ca_file);
    free (self->client_name);
    free (self->url_parse);
    free (self);
}

int cli_ws_run (cli_ws_t *self)
{
    lws_sul_schedule (self->ctx, 0, &self->sul_connect, s_connect_cb, 1);
    while (!self->done)
        if (lws_service (self->ctx, 0) < 0) break;
    return self->rc;
}

static void s_flush_timeout_cb (lws_sorted_usec_list_t *sul)
{
    cli_ws_t *self = lws_container_of (sul, cli_ws_t, sul_flush);
    s_finish (self);
}

void cli_ws_stop (cli_ws_t *self, int rc)
{
    if (self->stopping) return;
    self->stopping = true;
    self->rc = rc;
    s_sul_cancel (self, &self->sul_connect);
    s_sul_cancel (self, &self->sul_hs);
    s_sul_cancel (self, &self->sul_user);
    if (self->open && self->wsi) {
        lws_callback_on_writable (self->wsi);
        lws_sul_schedule (self->ctx, 0, &self->sul_flush, s_flush_timeout_cb,
                          (lws_usec_t)FLUSH_MAX_MS * LWS_US_PER_MS);
    } else
        s_finish (self);
}

int cli_ws_input (cli_ws_t *self, int fd)
{
    if (self->in_wsi) return 0;
    int dupfd = dup (fd);
    if (dupfd < 0) return -1;
    lws_sock_file_fd_type u;
    u.filefd = dupfd;
    self->in_closing = false;
    self->in_wsi =
        lws_adopt_descriptor_vhost (self->vh, LWS_ADOPT_RAW_FILE_DESC, u, "corral", NULL);
    if (!self->in_wsi) {
        close (dupfd);
        return -1;
    }
    self->in_fd = fd;
    return 0;
}

void cli_ws_input_enable (cli_ws_t *self, bool enable)
{
    if (self->in_wsi) lws_rx_flow_control (self->in_wsi, enable ? 1 : 0);
}

void cli_ws_input_close (cli_ws_t *self)
{
    self->in_closing = true;
    if (!self->in_wsi) return;
    //  Inside on_input the callback closes it on return; elsewhere, soon.
    lws_set_timeout (self->in_wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
}

int cli_ws_catch_signals (cli_ws_t *self)
{
    if (self->sig_wsi) return 0;
    sigset_t mask;
    sigemptyset (&mask);
    sigaddset (&mask, SIGINT);
    sigaddset (&mask, SIGTERM);
    if (sigprocmask (SIG_BLOCK, &mask, NULL)) return -1;
    self->sig_fd = signalfd (-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
    if (self->sig_fd < 0) {
        sigprocmask (SIG_UNBLOCK, &mask, NULL); //  Ctrl-C works as before
        return -1;
    }
    lws_sock_file_fd_type u;
    u.filefd = dup (self->sig_fd);
    if (u.filefd < 0) return -1;
    self->sig_wsi =
        lws_adopt_descriptor_vhost (self->vh, LWS_ADOPT_RAW_FILE_DESC, u, "corral", NULL);
    if (!self->sig_wsi) {
        close (u.filefd);
        return -1;
    }
    //  The dup is what lws polls and closes; reads go through either.
    close (self->sig_fd);
    self->sig_fd = u.filefd;
    return 0;
}

int cli_ws_open (cli_ws_t **ws, const char *prog, const cli_target_t *target,
                 const char *ca_file, const cli_ws_handlers_t *on, void *arg,
                 bool signals)
{
    char name[64], err[512];
    snprintf (name, sizeof name, "%s", prog);
    for (char *p = name; *p; p++)
        if (*p == ' ') *p = '-'; //  "corral chat" -> clientInfo "corral-chat"
    cli_ws_opts_t o = {.url = target->ws,
                       .key = target->key,
                       .ca_file = ca_file,
                       .client_name = name,
                       .on = *on,
                       .arg = arg};
    *ws = cli_ws_new (&o, err, sizeof err);
    if (!*ws) {
        fprintf (stderr, "%s: %s\n", prog, err);
        return CLI_USAGE;
    }
    if (signals && cli_ws_catch_signals (*ws)) {
        fprintf (stderr, "%s: cannot take SIGINT and SIGTERM: %s\n", prog,
                 strerror (errno));
        cli_ws_destroy (ws);
        return CLI_FAIL;
    }
    return 0;
}

bool cli_ws_connected (const cli_ws_t *self)
{
    return self->open && self->ready;
}

int cli_ws_send (cli_ws_t *self, const char *text, size_t len)
{
    if (!self->open || !self->wsi || self->stopping) return -1;
    frame_t *f = malloc (sizeof *f + LWS_PRE + len);
    if (!f) return -1;
    f->next = NULL;
    f->len = len;
    memcpy (f->buf + LWS_PRE, text, len);
    if (self->q_tail)
        self->q_tail->next = f;
    else
        self->q_head = f;
    self->q_tail = f;
    self->q_bytes += len;
    if (self->q_bytes >= CLI_WS_QUEUE_HIGH) self->q_was_high = true;
    lws_callback_on_writable (self->wsi);
    return 0;
}

size_t cli_ws_queued (const cli_ws_t *self)
{
    return self->q_bytes;
}

//  Send a JSON object; takes msg.
static int s_send_json (cli_ws_t *self, json_t *msg)
{
    if (!msg) return -1;
    char *text = json_dumps (msg, JSON_COMPACT);
    json_decref (msg);
    if (!text) return -1;
    int rc = cli_ws_send (self, text, strlen (text));
    free (text);
    return rc;
}

int64_t cli_ws_request (cli_ws_t *self, const char *method, json_t *params,
                        cli_ws_reply_fn *cb, void *arg)
{
    if (!self->open || self->n_pending >= CLI_WS_PENDING_MAX) {
        json_decref (params);
        return -1;
    }
    int64_t id = self->next_id++;
    json_t *msg = json_pack ("{s:s,s:I,s:s}", "jsonrpc", "2.0", "id", (json_int_t)id,
                             "method", method);
    if (msg && params) json_object_set (msg, "params", params);
    json_decref (params);
    if (s_send_json (self, msg)) return -1;
    pending_t *p = &self->pending[self->n_pending++];
    p->id = id;
    p->cb = cb;
    p->arg = arg;
    snprintf (p->method, sizeof p->method, "%s", method);
    return id;
}

int cli_ws_notify (cli_ws_t *self, const char *method, json_t *params)
{
    json_t *msg = json_pack ("{s:s,s:s}", "jsonrpc", "2.0", "method", method);
    if (msg && params) json_object_set (msg, "params", params);
    json_decref (params);
    return s_send_json (self, msg);
}

int cli_ws_respond (cli_ws_t *self, const json_t *id, json_t *result)
{
    json_t *msg = json_pack ("{s:s,s:O}", "jsonrpc", "2.0", "id", id);
    if (msg && result) json_object_set (msg, "result", result);
    json_decref (result);
    return s_send_json (self, msg);
}

int cli_ws_respond_error (cli_ws_t *self, const json_t *id, int code, const char *message)
{
    return s_send_json (self, json_pack ("{s:s,s:O,s:{s:i,s:s}}", "jsonrpc", "2.0", "id",
                                         id, "error", "code", code, "message", message));
}

void cli_ws_watch (cli_ws_t *self, const char *session_id, int64_t after_seq,
                   const char *epoch, bool attach_now)
{
    char *sid = strdup (session_id);
    if (!sid) return;
    free (self->sid);
    self->sid = sid;
    self->last_seq = after_seq;
    snprintf (self->epoch, sizeof self->epoch, "%s", epoch ? epoch : "");
    if (attach_now && self->open && self->ready) s_send_attach (self);
}

int64_t cli_ws_last_seq (const cli_ws_t *self)
{
    return self->last_seq;
}

const char *cli_ws_epoch (const cli_ws_t *self)
{
    return self->epoch;
}

static void s_user_cb (lws_sorted_usec_list_t *sul)
{
    cli_ws_t *self = lws_container_of (sul, cli_ws_t, sul_user);
    self->serving = true;
    if (self->user_fn) self->user_fn (self, self->opts.arg);
    s_after (self);
}

void cli_ws_timer (cli_ws_t *self, int ms, void (*fn) (cli_ws_t *ws, void *arg))
{
    if (ms < 0) {
        s_sul_cancel (self, &self->sul_user);
        return;
    }
    self->user_fn = fn;
    lws_sul_schedule (self->ctx, 0, &self->sul_user, s_user_cb,
                      (lws_usec_t)(ms ? ms : 1) * LWS_US_PER_MS);
}
