/*  wrk_http.c - model calls over libcurl's multi socket interface (see
    wrk_http.h).

    Shape.  One CURLM per wrk_http_t.  curl tells us which sockets to watch
    (s_on_socket: one s_sock_t per socket, first member a WRK_TAG_HTTP tag,
    registered level-triggered in the loop's epoll fd) and when it wants a
    timeout (s_on_timer: a deadline in monotonic ms).  Each call owns one
    easy handle, kept across retries: between attempts it is out of the
    multi and sits in a wait list sorted by due time; wrk_http_on_timeout
    puts due calls back in.

    Re-entrancy.  libcurl forbids curl_multi_add_handle/remove_handle from
    inside its callbacks, and on_delta runs inside the write callback.  So
    while we are inside curl (self->in_curl) a cancel only marks the call
    and queues it on the zombie list, swept as soon as curl returns; a start
    goes on the wait list due now.  Outside curl both act at once.  A call
    whose own outcome we are processing (s_finish) is marked busy: a cancel
    from its callbacks only marks it, and s_finish frees it.  on_done always
    runs from s_finish, reached only from wrk_http_on_event / on_timeout.

    Sockets.  curl may drop a socket (CURL_POLL_REMOVE) while the loop still
    holds later events for it from the same epoll_wait batch, so a removed
    s_sock_t is not freed at once: it is marked dead (events on it are
    ignored) and freed at the next wrk_http_next_timeout, which the loop
    calls before every epoll_wait.

    Stalls.  Every received byte (head or body) pushes the call's
    rx_deadline to now + stall_ms (before the first, connect time counts
    too); a sweep every S_SWEEP_MS cuts calls past it with CM_E_TIMEOUT.
    curl's low-speed limit (1 B/s for stall_ms) is set as well, but it
    averages over several seconds, so alone it would notice a 1 s stall
    only after 6-7 s.

    Loop contract (beyond the header): call wrk_http_next_timeout before
    every epoll_wait and wrk_http_on_timeout after it (it does nothing when
    nothing is due).  wrk_http_destroy must not be called from a callback.

    Bounds.  Error bodies are kept up to S_ERRBODY_MAX; messages for people
    are at most S_MSG_MAX bytes, printable, with the API key redacted.  A
    call holds its request body, its easy handle and about 1 KiB besides.
*/
#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>

#include <curl/curl.h>
#include <jansson.h>

#include "cm_error.h"
#include "cm_time.h"
#include "wrk_http.h"
#include "wrk_loop.h"

#define S_ERRBODY_MAX        (64 * 1024)         //  non-2xx body kept for its message
#define S_MSG_MAX            300                 //  message for a person, bytes
#define S_BODY_MAX           (64u * 1024 * 1024) //  request body
#define S_URL_MAX            2048
#define S_KEY_MAX            4096
#define S_ATTEMPTS_DEFAULT   4
#define S_ATTEMPTS_MAX       16
#define S_CONNECT_DEFAULT_MS 10000
#define S_STALL_DEFAULT_MS   60000
#define S_BACKOFF_FIRST_MS   500
#define S_BACKOFF_MAX_MS     20000
#define S_RETRY_AFTER_MAX_MS 60000 //  a longer Retry-After is clipped to this
#define S_SWEEP_MS           250   //  how often running calls are checked for stalls

typedef struct s_sock s_sock_t;
struct s_sock {
    wrk_tag_t tag; //  first: the loop reads it through epoll_data.ptr
    wrk_http_t *http;
    curl_socket_t fd;
    bool dead;
    s_sock_t *prev, *next; //  live list, or dead list (next only)
};

struct wrk_call {
    wrk_http_t *http;
    CURL *easy;
    struct curl_slist *headers;
    char *body;
    char *key; //  for redaction; wiped on free
    wrk_api_t api;
    wrk_delta_fn on_delta;
    wrk_call_done_fn on_done;
    void *arg;
    int max_attempts;
    int attempt; //  attempts started
    int64_t connect_ms, stall_ms;
    int64_t rx_deadline; //  running: cut as stalled if nothing arrives by then
    //  Per attempt
    wrk_stream_t *stream; //  made at the first 2xx body byte
    bool status_known;
    bool ok; //  2xx
    long status;
    int64_t retry_after_ms; //  -1: none given
    char *errbody;
    size_t errlen, errcap;
    //  Per call
    bool delivered; //  some delta reached on_delta: never retried again
    bool finished;  //  FINISH delivered
    bool got_error; //  ERROR delivered
    bool error_retryable;
    int user_rc;   //  on_delta's non-zero return
    int decode_rc; //  the decoder's error
    bool cancelled;
    bool busy;     //  s_finish is handling it
    bool in_done;  //  on_done is running
    bool in_multi; //  added to the multi handle
    bool waiting;  //  in the wait list
    int64_t due;   //  waiting: when to (re)start
    char curl_err[CURL_ERROR_SIZE];
    char msg[S_MSG_MAX + 1];
    wrk_call_t *prev, *next;   //  every call
    wrk_call_t *wprev, *wnext; //  wait list, by due
    wrk_call_t *znext;         //  zombies; stalled calls during a sweep
};

struct wrk_http {
    int epfd;
    CURLM *multi;
    int64_t curl_deadline; //  -1: no curl timer
    int64_t sweep_at;      //  -1: no stall sweep planned
    size_t running;        //  calls in the multi handle
    int in_curl;           //  depth of curl_multi_socket_action calls
    size_t active;
    wrk_call_t *calls;
    wrk_call_t *wait_head;
    wrk_call_t *zombies;
    s_sock_t *socks;
    s_sock_t *dead_socks;
};

static pthread_once_t s_curl_once = PTHREAD_ONCE_INIT;
static CURLcode s_curl_init_rc = CURLE_FAILED_INIT;

static void s_curl_init (void)
{
    s_curl_init_rc = curl_global_init (CURL_GLOBAL_DEFAULT);
}

//  --------------------------------------------------------------------------
//  Messages for people: the key redacted, printable, at most S_MSG_MAX bytes

//  Length of the valid UTF-8 sequence at p (at most n bytes), 0 if invalid.
static size_t s_utf8_len (const unsigned char *p, size_t n)
{
    size_t len = p[0] >= 0xF0 && p[0] <= 0xF4   ? 4
                 : p[0] >= 0xE0                 ? 3
                 : p[0] >= 0xC2 && p[0] <= 0xDF ? 2
                                                : 0;
    if (len == 0 || len > n) return 0;
    for (size_t i = 1; i < len; i++)
        if ((p[i] & 0xC0) != 0x80) return 0;
    return len;
}

//  Write text into out (S_MSG_MAX + 1 bytes): every occurrence of key
//  becomes "[redacted]", control bytes become spaces, invalid UTF-8 '?',
//  and the result is cut at a character boundary.
static void s_clean (char *out, const char *text, size_t len, const char *key)
{
    size_t keylen = key ? strlen (key) : 0;
    size_t o = 0;
    size_t i = 0;
    while (i < len) {
        const char *put = NULL;
        size_t putlen = 1, adv = 1;
        char one;
        const unsigned char *p = (const unsigned char *)text + i;
        if (keylen > 0 && len - i >= keylen && memcmp (text + i, key, keylen) == 0) {
            put = "[redacted]";
            putlen = 10;
            adv = keylen;
        } else if (*p < 0x80) {
            one = (*p < 0x20 || *p == 0x7F) ? ' ' : (char)*p;
            put = &one;
        } else {
            size_t n = s_utf8_len (p, len - i);
            if (n == 0) {
                one = '?';
                put = &one;
            } else {
                put = text + i;
                putlen = adv = n;
            }
        }
        if (o + putlen > S_MSG_MAX) break;
        memcpy (out + o, put, putlen);
        o += putlen;
        i += adv;
    }
    out[o] = '\0';
}

static void s_set_msg (wrk_call_t *call, const char *fmt, ...)
    __attribute__ ((format (printf, 2, 3)));

static void s_set_msg (wrk_call_t *call, const char *fmt, ...)
{
    char raw[1024];
    va_list args;
    va_start (args, fmt);
    int n = vsnprintf (raw, sizeof raw, fmt, args);
    va_end (args);
    if (n < 0) n = 0;
    if ((size_t)n >= sizeof raw) n = sizeof raw - 1;
    s_clean (call->msg, raw, (size_t)n, call->key);
}

//  The provider's message from a non-2xx body: error.message (OpenAI and
//  Anthropic), error as a string, or a top-level message; else the body.
static void s_http_error_msg (wrk_call_t *call, const char *prefix)
{
    const char *text = NULL;
    size_t textlen = 0;
    json_t *doc = call->errlen ? json_loadb (call->errbody, call->errlen, 0, NULL) : NULL;
    if (doc) {
        json_t *error = json_object_get (doc, "error");
        json_t *m = json_is_string (error) ? error : json_object_get (error, "message");
        if (!json_is_string (m)) m = json_object_get (doc, "message");
        if (json_is_string (m)) {
            text = json_string_value (m);
            textlen = json_string_length (m);
        }
    }
    if (!text) {
        text = call->errbody ? call->errbody : "";
        textlen = call->errlen;
    }
    //  Clean the provider's text on its own first, so a key in it is
    //  redacted before anything is cut.
    char clean[S_MSG_MAX + 1];
    s_clean (clean, text, textlen, call->key);
    s_set_msg (call, "%sHTTP %ld%s%s", prefix, call->status, clean[0] ? ": " : "", clean);
    json_decref (doc);
}

//  --------------------------------------------------------------------------
//  Lists

static void s_wait_remove (wrk_http_t *self, wrk_call_t *call)
{
    if (!call->waiting) return;
    if (call->wprev)
        call->wprev->wnext = call->wnext;
    else
        self->wait_head = call->wnext;
    if (call->wnext) call->wnext->wprev = call->wprev;
    call->wprev = call->wnext = NULL;
    call->waiting = false;
}

static void s_wait_insert (wrk_http_t *self, wrk_call_t *call, int64_t due)
{
    call->due = due;
    call->waiting = true;
    wrk_call_t *prev = NULL, *at = self->wait_head;
    while (at && at->due <= due) {
        prev = at;
        at = at->wnext;
    }
    call->wprev = prev;
    call->wnext = at;
    if (prev)
        prev->wnext = call;
    else
        self->wait_head = call;
    if (at) at->wprev = call;
}

static void s_multi_remove (wrk_http_t *self, wrk_call_t *call)
{
    if (!call->in_multi) return;
    curl_multi_remove_handle (self->multi, call->easy);
    call->in_multi = false;
    self->running--;
}

static void s_call_free (wrk_http_t *self, wrk_call_t *call)
{
    s_wait_remove (self, call);
    s_multi_remove (self, call);
    if (call->prev)
        call->prev->next = call->next;
    else if (self->calls == call)
        self->calls = call->next;
    if (call->next) call->next->prev = call->prev;
    if (call->easy) curl_easy_cleanup (call->easy);
    curl_slist_free_all (call->headers);
    wrk_stream_destroy (&call->stream);
    free (call->errbody);
    free (call->body);
    if (call->key) {
        explicit_bzero (call->key, strlen (call->key));
        free (call->key);
    }
    free (call);
}

//  Calls cancelled while curl was running: now that it has returned they
//  can leave the multi handle and be freed.
static void s_sweep_zombies (wrk_http_t *self)
{
    while (self->zombies) {
        wrk_call_t *call = self->zombies;
        self->zombies = call->znext;
        s_call_free (self, call);
    }
}

//  --------------------------------------------------------------------------
//  curl callbacks

static int s_on_socket (CURL *easy, curl_socket_t fd, int what, void *clientp,
                        void *socketp)
{
    (void)easy;
    wrk_http_t *self = clientp;
    s_sock_t *sock = socketp;
    if (what == CURL_POLL_REMOVE) {
        if (!sock) return 0;
        epoll_ctl (self->epfd, EPOLL_CTL_DEL, fd, NULL); //  may be closed already
        if (sock->prev)
            sock->prev->next = sock->next;
        else
            self->socks = sock->next;
        if (sock->next) sock->next->prev = sock->prev;
        sock->dead = true;
        sock->prev = NULL;
        sock->next = self->dead_socks;
        self->dead_socks = sock;
        return 0;
    }
    struct epoll_event ev = {0};
    if (what == CURL_POLL_IN || what == CURL_POLL_INOUT) ev.events |= EPOLLIN;
    if (what == CURL_POLL_OUT || what == CURL_POLL_INOUT) ev.events |= EPOLLOUT;
    int op = EPOLL_CTL_MOD;
    if (!sock) {
        sock = calloc (1, sizeof *sock);
        if (!sock) return -1;
        sock->tag.kind = WRK_TAG_HTTP;
        sock->http = self;
        sock->fd = fd;
        sock->next = self->socks;
        if (self->socks) self->socks->prev = sock;
        self->socks = sock;
        curl_multi_assign (self->multi, fd, sock);
        op = EPOLL_CTL_ADD;
    }
    ev.data.ptr = sock;
    int rc = epoll_ctl (self->epfd, op, fd, &ev);
    if (rc != 0 && op == EPOLL_CTL_ADD && errno == EEXIST)
        rc = epoll_ctl (self->epfd, EPOLL_CTL_MOD, fd, &ev);
    else if (rc != 0 && op == EPOLL_CTL_MOD && errno == ENOENT)
        rc = epoll_ctl (self->epfd, EPOLL_CTL_ADD, fd, &ev);
    return rc == 0 ? 0 : -1;
}

static int s_on_timer (CURLM *multi, long timeout_ms, void *clientp)
{
    (void)multi;
    wrk_http_t *self = clientp;
    self->curl_deadline = timeout_ms < 0 ? -1 : cm_mono_ms () + timeout_ms;
    return 0;
}

//  Every delta passes here on its way to the caller.
static int s_on_delta (void *arg, const wrk_delta_t *delta)
{
    wrk_call_t *call = arg;
    if (call->cancelled) return CM_E_CANCELLED;
    call->delivered = true;
    if (delta->kind == WRK_DELTA_FINISH) call->finished = true;
    if (delta->kind == WRK_DELTA_ERROR) {
        call->got_error = true;
        call->error_retryable = delta->retryable;
        char clean[S_MSG_MAX + 1];
        s_clean (clean, delta->text, delta->text_len, call->key);
        s_set_msg (call, "provider error%s%s%s: %s", delta->error_type[0] ? " (" : "",
                   delta->error_type, delta->error_type[0] ? ")" : "", clean);
    }
    int rc = call->on_delta (call->arg, delta);
    if (call->cancelled) return CM_E_CANCELLED;
    if (rc != 0) call->user_rc = rc;
    return rc;
}

static size_t s_on_write (char *data, size_t size, size_t nmemb, void *arg)
{
    wrk_call_t *call = arg;
    size_t len = size * nmemb;
    if (call->cancelled) return len ? 0 : 1; //  any mismatch aborts
    call->rx_deadline = cm_mono_ms () + call->stall_ms;
    if (!call->status_known) {
        call->status_known = true;
        curl_easy_getinfo (call->easy, CURLINFO_RESPONSE_CODE, &call->status);
        call->ok = call->status >= 200 && call->status <= 299;
    }
    if (!call->ok) {
        size_t room = S_ERRBODY_MAX - call->errlen;
        size_t take = len < room ? len : room;
        if (take > 0 && call->errlen + take > call->errcap) {
            size_t cap = call->errcap ? call->errcap : 1024;
            while (cap < call->errlen + take) cap *= 2;
            if (cap > S_ERRBODY_MAX) cap = S_ERRBODY_MAX;
            char *grown = realloc (call->errbody, cap);
            if (!grown) return len; //  only the message suffers
            call->errbody = grown;
            call->errcap = cap;
        }
        if (take > 0) {
            memcpy (call->errbody + call->errlen, data, take);
            call->errlen += take;
        }
        return len;
    }
    if (!call->stream) {
        call->stream = wrk_stream_new (call->api, s_on_delta, call);
        if (!call->stream) {
            call->decode_rc = CM_E_NOMEM;
            return len ? 0 : 1;
        }
    }
    int rc = wrk_stream_feed (call->stream, data, len);
    if (call->cancelled) return len ? 0 : 1;
    if (rc != 0) {
        if (!call->user_rc) call->decode_rc = rc;
        return len ? 0 : 1;
    }
    return len;
}

static size_t s_on_header (char *data, size_t size, size_t nmemb, void *arg)
{
    wrk_call_t *call = arg;
    size_t len = size * nmemb;
    call->rx_deadline = cm_mono_ms () + call->stall_ms;
    const char *value = NULL;
    int64_t scale = 0;
    if (len >= 5 && strncasecmp (data, "HTTP/", 5) == 0)
        call->retry_after_ms = -1;
    else if (len > 12 && strncasecmp (data, "retry-after:", 12) == 0) {
        value = data + 12;
        scale = 1000;
    } else if (len > 15 && strncasecmp (data, "retry-after-ms:", 15) == 0) {
        value = data + 15;
        scale = 1;
    }
    if (value) {
        const char *end = data + len;
        while (value < end && (*value == ' ' || *value == '\t')) value++;
        int64_t n = 0;
        int digits = 0;
        while (value < end && isdigit ((unsigned char)*value) && digits < 9) {
            n = n * 10 + (*value - '0');
            value++;
            digits++;
        }
        //  Only a plain number; an HTTP date falls back to our backoff.
        if (digits > 0 && (value == end || !isdigit ((unsigned char)*value))) {
            int64_t ms = n * scale;
            call->retry_after_ms = ms > S_RETRY_AFTER_MAX_MS ? S_RETRY_AFTER_MAX_MS : ms;
        }
    }
    return len;
}

//  --------------------------------------------------------------------------
//  Outcomes

//  Report and free.  message may point into call->msg.
static void s_done (wrk_http_t *self, wrk_call_t *call, int rc, bool retryable,
                    const char *message)
{
    self->active--;
    call->busy = true;
    call->in_done = true;
    call->on_done (call->arg, rc, (int)call->status, retryable, message);
    s_call_free (self, call);
}

static void s_reset_attempt (wrk_call_t *call)
{
    wrk_stream_destroy (&call->stream);
    call->status_known = false;
    call->ok = false;
    call->status = 0;
    call->retry_after_ms = -1;
    free (call->errbody);
    call->errbody = NULL;
    call->errlen = call->errcap = 0;
    call->curl_err[0] = '\0';
}

static int s_begin (wrk_http_t *self, wrk_call_t *call)
{
    s_reset_attempt (call);
    call->attempt++;
    if (curl_multi_add_handle (self->multi, call->easy) != CURLM_OK) return CM_E_NOMEM;
    call->in_multi = true;
    self->running++;
    //  The first byte may take the connect time as well.
    call->rx_deadline = cm_mono_ms () + call->connect_ms + call->stall_ms;
    return 0;
}

//  Another attempt if none of the call has been shown and attempts remain.
static bool s_retry (wrk_http_t *self, wrk_call_t *call)
{
    if (call->delivered || call->attempt >= call->max_attempts) return false;
    int64_t delay = call->retry_after_ms;
    if (delay < 0) {
        int shift = call->attempt - 1 < 6 ? call->attempt - 1 : 6;
        delay = (int64_t)S_BACKOFF_FIRST_MS << shift;
        if (delay > S_BACKOFF_MAX_MS) delay = S_BACKOFF_MAX_MS;
    }
    s_reset_attempt (call);
    s_wait_insert (self, call, cm_mono_ms () + delay);
    return true;
}

static bool s_curl_retryable (CURLcode res)
{
    switch (res) {
    case CURLE_URL_MALFORMAT:
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_NOT_BUILT_IN:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_BAD_FUNCTION_ARGUMENT:
    case CURLE_OUT_OF_MEMORY:
    case CURLE_TOO_MANY_REDIRECTS:
        return false;
    default:
        return true;
    }
}

static bool s_status_retryable (long status)
{
    return status == 408 || status == 429 || (status >= 500 && status <= 599);
}

const char *wrk_call_client_message (int rc, int http_status, bool retryable, char *out,
                                     size_t len)
{
    if (!out || len == 0) return out;
    const char *next = retryable ? "retry in a moment" : "see the worker's log";
    if (rc == CM_E_TIMEOUT)
        snprintf (out, len, "the model provider's stream stalled; %s", next);
    else if (rc == CM_E_UPSTREAM && (http_status == 401 || http_status == 403))
        snprintf (out, len,
                  "the model provider refused the worker's credentials (HTTP %d); check "
                  "the provider key the worker was given",
                  http_status);
    else if (rc == CM_E_UPSTREAM && http_status == 429)
        snprintf (out, len,
                  "the model provider is rate-limiting requests (HTTP 429), after "
                  "retries; %s",
                  next);
    else if (rc == CM_E_UPSTREAM && http_status >= 500 && http_status <= 599)
        snprintf (out, len, "the model provider failed (HTTP %d), after retries; %s",
                  http_status, next);
    else if (rc == CM_E_UPSTREAM && http_status >= 400 && http_status <= 499)
        snprintf (out, len, "the model provider refused the request (HTTP %d); %s",
                  http_status, next);
    else if (rc == CM_E_UPSTREAM && http_status >= 200 && http_status <= 299)
        snprintf (out, len,
                  "the model provider's response failed or could not be read; %s", next);
    else if (rc == CM_E_UPSTREAM)
        snprintf (out, len, "the model provider could not be reached; %s", next);
    else if (rc == CM_E_NOMEM)
        snprintf (out, len, "the worker could not start the model request; %s", next);
    else if (rc)
        snprintf (out, len, "the model call stopped: %s", cm_strerror (rc));
    else
        snprintf (out, len, "the model's response ended before it was complete; %s",
                  next);
    return out;
}

//  An attempt ended (curl says res).  Decide: done, or try again.
static void s_finish (wrk_http_t *self, wrk_call_t *call, CURLcode res)
{
    s_multi_remove (self, call);
    if (call->cancelled) { //  cancelled during a stall sweep
        s_call_free (self, call);
        return;
    }
    call->busy = true;
    if (!call->status_known) {
        curl_easy_getinfo (call->easy, CURLINFO_RESPONSE_CODE, &call->status);
        call->status_known = call->status != 0;
        call->ok = call->status >= 200 && call->status <= 299;
    }
    if (res == CURLE_OK && call->ok && !call->user_rc && !call->decode_rc &&
        !call->finished && !call->got_error) {
        //  The body ended: let the decoder complete it (may deliver deltas).
        if (!call->stream) call->stream = wrk_stream_new (call->api, s_on_delta, call);
        int rc = call->stream ? wrk_stream_end (call->stream) : CM_E_NOMEM;
        if (call->cancelled) {
            s_call_free (self, call);
            return;
        }
        if (rc != 0 && !call->user_rc) call->decode_rc = rc;
        if (rc == CM_E_UPSTREAM && !call->delivered && s_retry (self, call)) {
            call->busy = false; //  an empty or cut 2xx body: try again
            return;
        }
    }
    const char *again = call->attempt > 1 ? " (after retries)" : "";
    if (call->user_rc) {
        s_done (self, call, call->user_rc, false, "stopped by the caller");
    } else if (call->got_error) {
        s_done (self, call, CM_E_UPSTREAM, call->error_retryable, call->msg);
    } else if (call->finished) {
        s_done (self, call, 0, false, "");
    } else if (call->decode_rc) {
        const char *why = call->stream ? wrk_stream_error (call->stream) : "";
        s_set_msg (call, "bad stream from the provider: %s",
                   why[0] ? why : cm_strerror (call->decode_rc));
        s_done (self, call, call->decode_rc, false, call->msg);
    } else if (call->status_known && !call->ok) {
        //  An HTTP error, even if its body did not arrive whole.
        bool retryable = s_status_retryable (call->status);
        if (retryable && s_retry (self, call)) {
            call->busy = false;
            return;
        }
        s_http_error_msg (call,
                          retryable && call->attempt > 1 ? "retries exhausted: " : "");
        s_done (self, call, CM_E_UPSTREAM, retryable, call->msg);
    } else {
        //  Transport failure: refused, reset, cut, stalled, timed out.
        bool retryable = s_curl_retryable (res);
        if (retryable && s_retry (self, call)) {
            call->busy = false;
            return;
        }
        int rc = res == CURLE_OPERATION_TIMEDOUT ? CM_E_TIMEOUT : CM_E_UPSTREAM;
        if (res == CURLE_OPERATION_TIMEDOUT && call->status_known)
            s_set_msg (call, "the model stream stalled%s: %s", again,
                       call->curl_err[0] ? call->curl_err : curl_easy_strerror (res));
        else
            s_set_msg (call, "%s%s: %s",
                       call->status_known ? "the model stream broke off"
                                          : "connection to the model provider failed",
                       again,
                       call->curl_err[0] ? call->curl_err : curl_easy_strerror (res));
        s_done (self, call, rc, retryable, call->msg);
    }
}

//  Handle every finished transfer curl reports.
static void s_read_done (wrk_http_t *self)
{
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read (self->multi, &left))) {
        if (msg->msg != CURLMSG_DONE) continue;
        CURL *easy = msg->easy_handle;
        CURLcode res = msg->data.result;
        char *priv = NULL;
        curl_easy_getinfo (easy, CURLINFO_PRIVATE, &priv);
        if (priv) s_finish (self, (wrk_call_t *)priv, res);
    }
}

static void s_kick (wrk_http_t *self, curl_socket_t fd, int mask)
{
    int running = 0;
    self->in_curl++;
    curl_multi_socket_action (self->multi, fd, mask, &running);
    self->in_curl--;
    s_sweep_zombies (self);
    s_read_done (self);
}

//  Start (or restart) every waiting call that is due.
static void s_start_due (wrk_http_t *self)
{
    int64_t now = cm_mono_ms ();
    while (self->wait_head && self->wait_head->due <= now) {
        wrk_call_t *call = self->wait_head;
        s_wait_remove (self, call);
        if (s_begin (self, call) != 0) {
            s_set_msg (call, "could not start the model request");
            s_done (self, call, CM_E_NOMEM, true, call->msg);
        }
    }
}

//  --------------------------------------------------------------------------
//  API

wrk_http_t *wrk_http_new (int epfd)
{
    pthread_once (&s_curl_once, s_curl_init);
    if (s_curl_init_rc != CURLE_OK || epfd < 0) return NULL;
    wrk_http_t *self = calloc (1, sizeof *self);
    if (!self) return NULL;
    self->epfd = epfd;
    self->curl_deadline = -1;
    self->sweep_at = -1;
    self->multi = curl_multi_init ();
    if (!self->multi) {
        free (self);
        return NULL;
    }
    curl_multi_setopt (self->multi, CURLMOPT_SOCKETFUNCTION, s_on_socket);
    curl_multi_setopt (self->multi, CURLMOPT_SOCKETDATA, self);
    curl_multi_setopt (self->multi, CURLMOPT_TIMERFUNCTION, s_on_timer);
    curl_multi_setopt (self->multi, CURLMOPT_TIMERDATA, self);
    return self;
}

void wrk_http_destroy (wrk_http_t **self_p)
{
    if (!self_p || !*self_p) return;
    wrk_http_t *self = *self_p;
    s_sweep_zombies (self);
    while (self->calls) s_call_free (self, self->calls);
    curl_multi_cleanup (self->multi); //  may report sockets removed
    while (self->socks) {
        s_sock_t *sock = self->socks;
        self->socks = sock->next;
        epoll_ctl (self->epfd, EPOLL_CTL_DEL, sock->fd, NULL);
        free (sock);
    }
    while (self->dead_socks) {
        s_sock_t *sock = self->dead_socks;
        self->dead_socks = sock->next;
        free (sock);
    }
    free (self);
    *self_p = NULL;
}

static bool s_header_safe (const char *value)
{
    for (const char *p = value; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7F) return false;
    return true;
}

static int s_add_header (wrk_call_t *call, const char *name, const char *value)
{
    char line[S_KEY_MAX + 64];
    snprintf (line, sizeof line, "%s: %s", name, value);
    struct curl_slist *list = curl_slist_append (call->headers, line);
    explicit_bzero (line, sizeof line);
    if (!list) return CM_E_NOMEM;
    call->headers = list;
    return 0;
}

static int s_setup (wrk_call_t *call, const wrk_call_opts_t *opts, const char *url)
{
    if (s_add_header (call, "Content-Type", "application/json") ||
        s_add_header (call, "Accept", "text/event-stream"))
        return CM_E_NOMEM;
    //  No value: curl then sends no "Expect: 100-continue" for big bodies,
    //  which would cost a round trip (or a second's wait) per call.
    struct curl_slist *list = curl_slist_append (call->headers, "Expect:");
    if (!list) return CM_E_NOMEM;
    call->headers = list;
    bool have_key = call->key && call->key[0];
    if (opts->api == WRK_API_OPENAI) {
        if (have_key) {
            char bearer[S_KEY_MAX + 16];
            snprintf (bearer, sizeof bearer, "Bearer %s", call->key);
            int rc = s_add_header (call, "Authorization", bearer);
            explicit_bzero (bearer, sizeof bearer);
            if (rc) return rc;
        }
    } else {
        if (have_key && s_add_header (call, "x-api-key", call->key)) return CM_E_NOMEM;
        if (s_add_header (call, "anthropic-version", "2023-06-01")) return CM_E_NOMEM;
    }
    int64_t connect_ms = call->connect_ms;
    int64_t stall_s = (call->stall_ms + 999) / 1000;
    if (stall_s < 1) stall_s = 1;

    CURL *e = call->easy;
    CURLcode rc = CURLE_OK;
#define S_OPT(opt, val)                                          \
    do {                                                         \
        if (rc == CURLE_OK) rc = curl_easy_setopt (e, opt, val); \
    } while (0)
    S_OPT (CURLOPT_URL, url);
    S_OPT (CURLOPT_PROTOCOLS_STR, "http,https");
    S_OPT (CURLOPT_POST, 1L);
    S_OPT (CURLOPT_POSTFIELDS, call->body);
    S_OPT (CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)opts->body_len);
    S_OPT (CURLOPT_HTTPHEADER, call->headers);
    S_OPT (CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
    S_OPT (CURLOPT_ACCEPT_ENCODING, "identity");
    S_OPT (CURLOPT_USERAGENT, "corral-worker");
    S_OPT (CURLOPT_NOSIGNAL, 1L);
    S_OPT (CURLOPT_CONNECTTIMEOUT_MS, (long)connect_ms);
    S_OPT (CURLOPT_LOW_SPEED_LIMIT, 1L);
    S_OPT (CURLOPT_LOW_SPEED_TIME, (long)stall_s);
    S_OPT (CURLOPT_TCP_KEEPALIVE, 1L);
    S_OPT (CURLOPT_WRITEFUNCTION, s_on_write);
    S_OPT (CURLOPT_WRITEDATA, call);
    S_OPT (CURLOPT_HEADERFUNCTION, s_on_header);
    S_OPT (CURLOPT_HEADERDATA, call);
    S_OPT (CURLOPT_ERRORBUFFER, call->curl_err);
    S_OPT (CURLOPT_PRIVATE, (char *)call);
#undef S_OPT
    return rc == CURLE_OK ? 0 : rc == CURLE_OUT_OF_MEMORY ? CM_E_NOMEM : CM_E_INVALID;
}

int wrk_call_start (wrk_http_t *self, const wrk_call_opts_t *opts, wrk_delta_fn on_delta,
                    wrk_call_done_fn on_done, void *arg, wrk_call_t **out)
{
    if (out) *out = NULL;
    if (!self || !opts || !on_delta || !on_done) return CM_E_INVALID;
    if (opts->api != WRK_API_OPENAI && opts->api != WRK_API_ANTHROPIC)
        return CM_E_INVALID;
    if (!opts->base_url || !opts->body || opts->body_len == 0 ||
        opts->body_len > S_BODY_MAX)
        return CM_E_INVALID;
    if (opts->max_attempts < 0 || opts->max_attempts > S_ATTEMPTS_MAX ||
        opts->connect_timeout_ms < 0 || opts->stall_ms < 0)
        return CM_E_INVALID;
    if (opts->api_key &&
        (strlen (opts->api_key) > S_KEY_MAX || !s_header_safe (opts->api_key)))
        return CM_E_INVALID;
    size_t base_len = strlen (opts->base_url);
    while (base_len > 0 && opts->base_url[base_len - 1] == '/') base_len--;
    const char *path = opts->api == WRK_API_OPENAI ? "/chat/completions" : "/v1/messages";
    char url[S_URL_MAX + 1];
    if (base_len == 0 || base_len + strlen (path) > S_URL_MAX) return CM_E_INVALID;
    snprintf (url, sizeof url, "%.*s%s", (int)base_len, opts->base_url, path);

    wrk_call_t *call = calloc (1, sizeof *call);
    if (!call) return CM_E_NOMEM;
    call->http = self;
    call->api = opts->api;
    call->on_delta = on_delta;
    call->on_done = on_done;
    call->arg = arg;
    call->max_attempts = opts->max_attempts ? opts->max_attempts : S_ATTEMPTS_DEFAULT;
    call->connect_ms =
        opts->connect_timeout_ms ? opts->connect_timeout_ms : S_CONNECT_DEFAULT_MS;
    call->stall_ms = opts->stall_ms ? opts->stall_ms : S_STALL_DEFAULT_MS;
    call->retry_after_ms = -1;
    call->body = malloc (opts->body_len + 1);
    call->key = opts->api_key ? strdup (opts->api_key) : NULL;
    call->easy = curl_easy_init ();
    int rc = CM_E_NOMEM;
    if (!call->body || (opts->api_key && !call->key) || !call->easy) goto fail;
    memcpy (call->body, opts->body, opts->body_len);
    call->body[opts->body_len] = '\0';
    rc = s_setup (call, opts, url);
    if (rc) goto fail;

    //  Linked in first, so s_call_free can unlink it on any failure below.
    call->next = self->calls;
    if (self->calls) self->calls->prev = call;
    self->calls = call;
    if (self->in_curl) {
        //  Inside a curl callback add_handle is refused: start on the next
        //  timeout, which is due now.
        s_wait_insert (self, call, cm_mono_ms ());
    } else if (s_begin (self, call) != 0) {
        s_call_free (self, call);
        return CM_E_NOMEM;
    }
    self->active++;
    if (out) *out = call;
    return 0;
fail:
    s_call_free (self, call);
    return rc;
}

void wrk_call_cancel (wrk_http_t *self, wrk_call_t *call)
{
    if (!self || !call || call->cancelled || call->in_done) return;
    call->cancelled = true;
    self->active--;
    if (call->busy) return; //  s_finish is on the stack for it and frees it
    if (call->in_multi && self->in_curl) {
        s_wait_remove (self, call);
        call->znext = self->zombies;
        self->zombies = call;
        return;
    }
    s_call_free (self, call);
}

void wrk_http_on_event (wrk_http_t *self, void *tag, uint32_t epoll_events)
{
    s_sock_t *sock = tag;
    if (!self || !sock || sock->dead || sock->http != self) return;
    int mask = 0;
    if (epoll_events & (EPOLLIN | EPOLLHUP | EPOLLRDHUP)) mask |= CURL_CSELECT_IN;
    if (epoll_events & EPOLLOUT) mask |= CURL_CSELECT_OUT;
    if (epoll_events & EPOLLERR) mask |= CURL_CSELECT_ERR;
    s_kick (self, sock->fd, mask);
}

int64_t wrk_http_next_timeout (wrk_http_t *self)
{
    //  The loop is between two epoll_waits: no event can name a dead socket.
    while (self->dead_socks) {
        s_sock_t *sock = self->dead_socks;
        self->dead_socks = sock->next;
        free (sock);
    }
    if (self->running > 0 && self->sweep_at < 0)
        self->sweep_at = cm_mono_ms () + S_SWEEP_MS;
    int64_t next = self->curl_deadline;
    if (self->sweep_at >= 0 && (next < 0 || self->sweep_at < next)) next = self->sweep_at;
    if (self->wait_head && (next < 0 || self->wait_head->due < next))
        next = self->wait_head->due;
    if (next < 0) return -1;
    int64_t left = next - cm_mono_ms ();
    return left < 0 ? 0 : left;
}

//  Cut every running call that has received nothing for its stall time.
//  curl's low-speed limit stays set as a backstop, but it averages over
//  several seconds, so a stall would be seen late.  Stalled calls are
//  collected first and marked busy, so a callback that cancels one of them
//  while another is reported only marks it.
static void s_sweep_stalls (wrk_http_t *self)
{
    int64_t now = cm_mono_ms ();
    wrk_call_t *stalled = NULL;
    for (wrk_call_t *call = self->calls; call; call = call->next) {
        if (!call->in_multi || call->cancelled || call->rx_deadline > now) continue;
        call->busy = true;
        snprintf (call->curl_err, sizeof call->curl_err, "nothing received for %lld ms",
                  (long long)call->stall_ms);
        call->znext = stalled;
        stalled = call;
    }
    while (stalled) {
        wrk_call_t *call = stalled;
        stalled = call->znext;
        call->znext = NULL;
        s_finish (self, call, CURLE_OPERATION_TIMEDOUT);
    }
}

void wrk_http_on_timeout (wrk_http_t *self)
{
    s_start_due (self);
    if (self->sweep_at >= 0 && self->sweep_at <= cm_mono_ms ()) {
        self->sweep_at = -1;
        s_sweep_stalls (self);
    }
    if (self->curl_deadline >= 0 && self->curl_deadline <= cm_mono_ms ()) {
        self->curl_deadline = -1;
        s_kick (self, CURL_SOCKET_TIMEOUT, 0);
    }
}

size_t wrk_http_active (const wrk_http_t *self)
{
    return self ? self->active : 0;
}
