/*  fake_http.c - the epoll loop: connections, HTTP/1.1, timers, plans.

    Single-threaded and level-triggered.  A connection is in one state:

      READ        reading a request (head, then Content-Length body bytes)
      PLAN        walking a response plan; each item may wait on a timer
      STALL       a stalled stream: nothing more is written; closed when the
                  peer closes
      DRAIN_CLOSE an answer that ends the connection is being written
      LINGER      after such an answer: our side is shut, the peer's bytes
                  are read and dropped until it closes (or FAKE_LINGER_MS),
                  so the answer is not lost to a reset
      CUT         a scripted cut: close as soon as what was written is sent

    Requests: HTTP/1.0 and 1.1, keep-alive, pipelining, Content-Length
    bodies (no Content-Length means no body), Expect: 100-continue.  Bounds:
    the head is at most FAKE_HEAD_MAX bytes (else 431), a body at most the
    configured body_max (else 413), a chunked request body is refused (501).
    A malformed head is answered 400 and the connection closed.

    Timers are a binary min-heap of connections keyed by wake time; each
    connection is in it at most once (heap_pos).
*/
#include "fake_model.h"
#include "cm_error.h"
#include "cm_log.h"
#include "cm_stop.h"
#include "cm_time.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#define S_EVENTS_MAX 512
#define S_IN_MIN     4096

const char *const fake_header_names[FAKE_H_COUNT] = {
    [FAKE_H_AUTHORIZATION] = "authorization",
    [FAKE_H_X_API_KEY] = "x-api-key",
    [FAKE_H_ANTHROPIC_VERSION] = "anthropic-version",
    [FAKE_H_ANTHROPIC_BETA] = "anthropic-beta",
    [FAKE_H_CONTENT_TYPE] = "content-type",
    [FAKE_H_ACCEPT] = "accept",
    [FAKE_H_USER_AGENT] = "user-agent",
};

typedef enum {
    C_READ,
    C_PLAN,
    C_STALL,
    C_DRAIN_CLOSE,
    C_LINGER,
    C_CUT,
} s_state_t;

struct fake_conn {
    fake_server_t *srv;
    fake_conn_t *prev, *next;
    int fd;
    uint64_t id;
    s_state_t state;
    bool dead;       //  destroy once the current event is handled
    bool keep_alive; //  of the request being answered
    bool http10;     //  the request was HTTP/1.0: no chunked responses
    bool epollout;   //  EPOLLOUT is registered
    //  Input: the request being read, perhaps followed by pipelined ones.
    char *in;
    size_t in_len, in_cap;
    size_t scan;     //  where the search for the end of the head resumes
    size_t head_len; //  0 until the head is parsed
    size_t body_len;
    bool expect_continue, continue_sent;
    size_t method_off, method_len, path_off, path_len;
    size_t hdr_off[FAKE_H_COUNT], hdr_len[FAKE_H_COUNT];
    bool hdr_has[FAKE_H_COUNT];
    //  Output not yet accepted by the kernel.
    char *out;
    size_t out_off, out_len, out_cap;
    //  The response being written.
    fake_plan_t *plan;
    size_t plan_pos;
    bool delay_done; //  the current item's delay has passed
    int64_t wake_ms;
    size_t heap_pos; //  SIZE_MAX when no timer is set
};

struct fake_server {
    fake_opts_t opts;
    char *api_key; //  owned copy
    fake_script_t *script;
    fake_routes_t *routes;
    int epfd, lfd, reserve_fd;
    char url[128];
    fake_conn_t *conns;
    size_t nconns;
    uint64_t next_id;
    fake_conn_t **heap;
    size_t heap_len, heap_cap;
};

//  epoll tags for the two fds that are not connections.
static const char s_tag_listen = 'l';
static const char s_tag_stop = 's';

static void s_flush (fake_conn_t *c);

// ---------------------------------------------------------------------------
//  Timers

static void s_heap_swap (fake_server_t *srv, size_t a, size_t b)
{
    fake_conn_t *t = srv->heap[a];
    srv->heap[a] = srv->heap[b];
    srv->heap[b] = t;
    srv->heap[a]->heap_pos = a;
    srv->heap[b]->heap_pos = b;
}

static void s_heap_fix (fake_server_t *srv, size_t i)
{
    while (i > 0 && srv->heap[(i - 1) / 2]->wake_ms > srv->heap[i]->wake_ms) {
        s_heap_swap (srv, i, (i - 1) / 2);
        i = (i - 1) / 2;
    }
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < srv->heap_len && srv->heap[l]->wake_ms < srv->heap[m]->wake_ms) m = l;
        if (r < srv->heap_len && srv->heap[r]->wake_ms < srv->heap[m]->wake_ms) m = r;
        if (m == i) return;
        s_heap_swap (srv, i, m);
        i = m;
    }
}

static void s_timer_clear (fake_conn_t *c)
{
    fake_server_t *srv = c->srv;
    if (c->heap_pos == SIZE_MAX) return;
    size_t i = c->heap_pos;
    c->heap_pos = SIZE_MAX;
    srv->heap_len--;
    if (i == srv->heap_len) return;
    srv->heap[i] = srv->heap[srv->heap_len];
    srv->heap[i]->heap_pos = i;
    s_heap_fix (srv, i);
}

static void s_timer_set (fake_conn_t *c, int64_t wake_ms)
{
    fake_server_t *srv = c->srv;
    s_timer_clear (c);
    if (srv->heap_len == srv->heap_cap) {
        size_t cap = srv->heap_cap ? srv->heap_cap * 2 : 256;
        fake_conn_t **heap = realloc (srv->heap, cap * sizeof *heap);
        if (!heap) {
            c->dead = true; //  cannot keep the promise of a timer
            return;
        }
        srv->heap = heap;
        srv->heap_cap = cap;
    }
    c->wake_ms = wake_ms;
    c->heap_pos = srv->heap_len;
    srv->heap[srv->heap_len++] = c;
    s_heap_fix (srv, c->heap_pos);
}

// ---------------------------------------------------------------------------
//  Output

static void s_events (fake_conn_t *c, bool out)
{
    if (c->epollout == out) return;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP | (out ? EPOLLOUT : 0),
                             .data.ptr = c};
    if (epoll_ctl (c->srv->epfd, EPOLL_CTL_MOD, c->fd, &ev) != 0)
        c->dead = true;
    else
        c->epollout = out;
}

static void s_send (fake_conn_t *c, const char *bytes, size_t len)
{
    if (c->dead || len == 0) return;
    if (c->out_off > 0 && c->out_off == c->out_len) c->out_off = c->out_len = 0;
    if (c->out_len + len > c->out_cap) {
        if (c->out_off > 0) { //  reclaim the sent prefix first
            memmove (c->out, c->out + c->out_off, c->out_len - c->out_off);
            c->out_len -= c->out_off;
            c->out_off = 0;
        }
        size_t cap = c->out_cap ? c->out_cap : 4096;
        while (cap < c->out_len + len) cap *= 2;
        if (cap != c->out_cap) {
            char *out = realloc (c->out, cap);
            if (!out) {
                c->dead = true;
                return;
            }
            c->out = out;
            c->out_cap = cap;
        }
    }
    memcpy (c->out + c->out_len, bytes, len);
    c->out_len += len;
}

//  Write what the kernel takes; then act on a drained buffer.
static void s_flush (fake_conn_t *c)
{
    while (!c->dead && c->out_off < c->out_len) {
        ssize_t n =
            send (c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
        if (n > 0) {
            c->out_off += (size_t)n;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            s_events (c, true);
            return;
        } else {
            c->dead = true; //  the peer went away
            return;
        }
    }
    if (c->dead) return;
    c->out_off = c->out_len = 0;
    s_events (c, false);
    if (c->state == C_CUT) {
        c->dead = true;
    } else if (c->state == C_DRAIN_CLOSE) {
        shutdown (c->fd, SHUT_WR);
        c->state = C_LINGER;
        s_timer_set (c, cm_mono_ms () + FAKE_LINGER_MS);
    }
}

static const struct {
    int status;
    const char *reason;
} s_reasons[] = {
    {200, "OK"},
    {400, "Bad Request"},
    {401, "Unauthorized"},
    {403, "Forbidden"},
    {404, "Not Found"},
    {405, "Method Not Allowed"},
    {413, "Payload Too Large"},
    {414, "URI Too Long"},
    {417, "Expectation Failed"},
    {429, "Too Many Requests"},
    {431, "Request Header Fields Too Large"},
    {500, "Internal Server Error"},
    {501, "Not Implemented"},
    {502, "Bad Gateway"},
    {503, "Service Unavailable"},
    {504, "Gateway Timeout"},
    {505, "HTTP Version Not Supported"},
    {529, "Site Overloaded"},
};

static const char *s_reason (int status)
{
    for (size_t i = 0; i < sizeof s_reasons / sizeof s_reasons[0]; i++)
        if (s_reasons[i].status == status) return s_reasons[i].reason;
    return status >= 500 ? "Server Error" : "Client Error";
}

//  Status line and headers.  length < 0: a chunked stream.
static void s_head (fake_conn_t *c, int status, const char *content_type,
                    const char *extra, int64_t length)
{
    char head[1024];
    int n;
    if (length < 0) //  HTTP/1.0 has no chunks: the body ends when we close
        n = snprintf (head, sizeof head,
                      "HTTP/1.1 %d %s\r\nServer: corral-fake-model\r\nContent-Type: "
                      "%s\r\nCache-Control: no-cache\r\n%sConnection: %s\r\n",
                      status, s_reason (status), content_type,
                      c->http10 ? "" : "Transfer-Encoding: chunked\r\n",
                      c->keep_alive ? "keep-alive" : "close");
    else
        n = snprintf (head, sizeof head,
                      "HTTP/1.1 %d %s\r\nServer: corral-fake-model\r\nContent-Type: "
                      "%s\r\nContent-Length: %lld\r\nConnection: %s\r\n",
                      status, s_reason (status), content_type, (long long)length,
                      c->keep_alive ? "keep-alive" : "close");
    if (n < 0 || (size_t)n >= sizeof head) {
        c->dead = true;
        return;
    }
    s_send (c, head, (size_t)n);
    if (extra) s_send (c, extra, strlen (extra));
    s_send (c, "\r\n", 2);
}

void fake_conn_reply (fake_conn_t *c, int status, const char *content_type,
                      const char *extra_headers, const char *body, size_t len)
{
    s_head (c, status, content_type, extra_headers, (int64_t)len);
    s_send (c, body, len);
    if (!c->keep_alive) c->state = C_DRAIN_CLOSE;
    s_flush (c);
}

//  Answer a request the HTTP layer refuses, and close.
static void s_refuse (fake_conn_t *c, int status, const char *type, const char *message)
{
    char body[512];
    c->keep_alive = false;
    int n =
        snprintf (body, sizeof body,
                  "{\"type\":\"error\",\"error\":{\"type\":\"%s\",\"message\":\"%s\"}}",
                  type, message);
    cm_info ("conn %llu: %d %s", (unsigned long long)c->id, status, message);
    fake_conn_reply (c, status, "application/json", NULL, body,
                     n > 0 && (size_t)n < sizeof body ? (size_t)n : 0);
}

void fake_conn_start (fake_conn_t *c, fake_plan_t **plan_p)
{
    c->plan = *plan_p;
    *plan_p = NULL;
    c->plan_pos = 0;
    c->delay_done = false;
    c->state = C_PLAN;
    //  A stream's head goes out at once; the model then "thinks".
    if (c->plan->chunked && c->http10) c->keep_alive = false;
    if (c->plan->chunked)
        s_head (c, c->plan->status, c->plan->content_type, c->plan->headers.data, -1);
    s_flush (c);
}

//  Walk the plan as far as timers and the peer allow.  Returns true when
//  the plan finished and the connection reads the next request.
static bool s_plan_step (fake_conn_t *c)
{
    while (c->state == C_PLAN && !c->dead) {
        fake_plan_t *p = c->plan;
        if (c->out_len - c->out_off > FAKE_OUT_HIGH) return false; //  EPOLLOUT resumes
        if (c->plan_pos == p->count) {
            if (p->chunked && !c->http10) s_send (c, "0\r\n\r\n", 5);
            fake_plan_destroy (&c->plan);
            c->state = c->keep_alive ? C_READ : C_DRAIN_CLOSE;
            s_flush (c);
            return c->state == C_READ && !c->dead;
        }
        fake_item_t *item = &p->items[c->plan_pos];
        if (item->delay_ms > 0 && !c->delay_done) {
            s_timer_set (c, cm_mono_ms () + item->delay_ms);
            return false;
        }
        c->delay_done = false;
        c->plan_pos++;
        if (item->kind == FAKE_ITEM_DATA && p->chunked && c->http10) {
            s_send (c, item->bytes, item->len);
        } else if (item->kind == FAKE_ITEM_DATA && p->chunked) {
            char size[32];
            int n = snprintf (size, sizeof size, "%zx\r\n", item->len);
            if (item->len == 0) continue; //  an empty chunk would end the body
            s_send (c, size, (size_t)n);
            s_send (c, item->bytes, item->len);
            s_send (c, "\r\n", 2);
        } else if (item->kind == FAKE_ITEM_DATA) {
            s_head (c, p->status, p->content_type, p->headers.data, (int64_t)item->len);
            s_send (c, item->bytes, item->len);
        } else {
            c->state = item->kind == FAKE_ITEM_STALL ? C_STALL : C_CUT;
            fake_plan_destroy (&c->plan);
        }
        s_flush (c);
    }
    return false;
}

// ---------------------------------------------------------------------------
//  Input

static bool s_token_char (char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
           (ch >= '0' && ch <= '9') ||
           (ch != '\0' && strchr ("!#$%&'*+-.^_`|~", ch) != NULL);
}

//  Parse the head in in[0..head_len).  Returns 0, or an HTTP status with
//  a message in *why.
static int s_parse_head (fake_conn_t *c, const char **why)
{
    const char *in = c->in;
    size_t end = c->head_len - 2; //  the last "\r\n" ends the head
    const char *eol = memchr (in, '\n', end);
    if (!eol || eol == in || eol[-1] != '\r') return *why = "malformed request line", 400;
    size_t line = (size_t)(eol - in) - 1;
    //  METHOD SP target SP HTTP/1.x
    size_t i = 0;
    while (i < line && s_token_char (in[i])) i++;
    if (i == 0 || i > 15 || i >= line || in[i] != ' ')
        return *why = "malformed request line", 400;
    c->method_off = 0;
    c->method_len = i++;
    c->path_off = i;
    while (i < line && in[i] != ' ' && in[i] != '?') i++;
    c->path_len = i - c->path_off;
    while (i < line && in[i] != ' ') i++;
    if (c->path_len == 0 || in[c->path_off] != '/' || i >= line)
        return *why = "malformed request line", 400;
    if (i - c->path_off > 8192) return *why = "request target too long", 414;
    i++;
    if (line - i != 8 || strncmp (in + i, "HTTP/1.", 7) != 0 ||
        (in[i + 7] != '0' && in[i + 7] != '1'))
        return *why = "only HTTP/1.0 and HTTP/1.1 are spoken here", 505;
    c->keep_alive = in[i + 7] == '1';
    c->http10 = in[i + 7] == '0';

    bool have_length = false;
    c->body_len = 0;
    c->expect_continue = c->continue_sent = false;
    memset (c->hdr_has, 0, sizeof c->hdr_has);
    size_t pos = line + 2;
    while (pos < end) {
        const char *nl = memchr (in + pos, '\n', end + 2 - pos);
        if (!nl || nl == in + pos || nl[-1] != '\r')
            return *why = "malformed header", 400;
        size_t stop = (size_t)(nl - in) - 1; //  the '\r'
        if (in[pos] == ' ' || in[pos] == '\t')
            return *why = "folded headers refused", 400;
        size_t colon = pos;
        while (colon < stop && s_token_char (in[colon])) colon++;
        if (colon == pos || colon >= stop || in[colon] != ':')
            return *why = "malformed header", 400;
        size_t name_len = colon - pos;
        size_t v = colon + 1, ve = stop;
        while (v < ve && (in[v] == ' ' || in[v] == '\t')) v++;
        while (ve > v && (in[ve - 1] == ' ' || in[ve - 1] == '\t')) ve--;
        const char *name = in + pos;
        const char *value = in + v;
        size_t value_len = ve - v;
#define S_IS(lit) (name_len == sizeof lit - 1 && strncasecmp (name, lit, name_len) == 0)
        if (S_IS ("content-length")) {
            uint64_t n = 0;
            if (value_len == 0 || value_len > 18) return *why = "bad Content-Length", 400;
            for (size_t k = 0; k < value_len; k++) {
                if (value[k] < '0' || value[k] > '9')
                    return *why = "bad Content-Length", 400;
                n = n * 10 + (uint64_t)(value[k] - '0');
            }
            if (have_length && n != c->body_len)
                return *why = "conflicting Content-Length headers", 400;
            have_length = true;
            c->body_len = (size_t)n;
        } else if (S_IS ("transfer-encoding")) {
            return *why = "chunked request bodies are not supported; send Content-Length",
                   501;
        } else if (S_IS ("connection")) {
            if (value_len >= 5 && strncasecmp (value, "close", 5) == 0)
                c->keep_alive = false;
            if (value_len >= 10 && strncasecmp (value, "keep-alive", 10) == 0)
                c->keep_alive = true;
        } else if (S_IS ("expect")) {
            if (value_len != 12 || strncasecmp (value, "100-continue", 12) != 0)
                return *why = "only Expect: 100-continue is understood", 417;
            c->expect_continue = true;
        } else {
            for (int h = 0; h < FAKE_H_COUNT; h++) {
                if (strlen (fake_header_names[h]) != name_len ||
                    strncasecmp (name, fake_header_names[h], name_len) != 0)
                    continue;
                if (value_len > FAKE_HEADER_MAX)
                    return *why = "header value too long", 431;
                c->hdr_has[h] = true;
                c->hdr_off[h] = v;
                c->hdr_len[h] = value_len;
            }
        }
#undef S_IS
        pos = stop + 2;
    }
    if ((int64_t)c->body_len > c->srv->opts.body_max)
        return *why = "request body too large", 413;
    return 0;
}

//  Parse and answer one request if it is complete.  Returns true if one was.
static bool s_request (fake_conn_t *c)
{
    if (c->head_len == 0) {
        size_t from = c->scan > 3 ? c->scan - 3 : 0;
        size_t upto = c->in_len < FAKE_HEAD_MAX ? c->in_len : FAKE_HEAD_MAX;
        const char *end =
            upto > from ? memmem (c->in + from, upto - from, "\r\n\r\n", 4) : NULL;
        if (!end) {
            c->scan = upto;
            if (c->in_len >= FAKE_HEAD_MAX)
                s_refuse (c, 431, "invalid_request_error", "request head too large");
            return false;
        }
        c->head_len = (size_t)(end - c->in) + 4;
        const char *why = "";
        int status = s_parse_head (c, &why);
        if (status) {
            s_refuse (c, status,
                      status == 413 ? "request_too_large" : "invalid_request_error", why);
            return false;
        }
    }
    if (c->in_len < c->head_len + c->body_len) {
        if (c->expect_continue && !c->continue_sent) {
            c->continue_sent = true;
            s_send (c, "HTTP/1.1 100 Continue\r\n\r\n", 25);
            s_flush (c);
        }
        return false;
    }
    //  Complete: terminate the strings in place (the head is consumed below).
    fake_req_t req = {.body = c->in + c->head_len, .body_len = c->body_len};
    c->in[c->method_off + c->method_len] = '\0';
    c->in[c->path_off + c->path_len] = '\0';
    req.method = c->in + c->method_off;
    req.path = c->in + c->path_off;
    for (int h = 0; h < FAKE_H_COUNT; h++) {
        if (!c->hdr_has[h]) continue;
        c->in[c->hdr_off[h] + c->hdr_len[h]] = '\0';
        req.header[h] = c->in + c->hdr_off[h];
    }
    fake_routes_dispatch (c->srv->routes, c->srv, c, &req);
    size_t used = c->head_len + c->body_len;
    memmove (c->in, c->in + used, c->in_len - used);
    c->in_len -= used;
    c->head_len = c->body_len = c->scan = 0;
    return true;
}

//  Most bytes the input buffer may hold in the current state.
static size_t s_in_limit (const fake_conn_t *c)
{
    if (c->state == C_READ && c->head_len)
        return c->head_len + c->body_len + FAKE_HEAD_MAX;
    return FAKE_HEAD_MAX + 4;
}

static void s_read (fake_conn_t *c)
{
    for (;;) {
        size_t limit = s_in_limit (c);
        if (c->state == C_LINGER) c->in_len = 0; //  dropped unread
        if (c->in_len >= limit) {
            //  Reading stops here; a request being read is answered from the
            //  buffer.  Anything else is a peer flooding us mid-response.
            if (c->state != C_READ) c->dead = true;
            return;
        }
        if (c->in_len == c->in_cap) {
            size_t cap = c->in_cap ? c->in_cap * 2 : S_IN_MIN;
            if (cap > limit) cap = limit;
            char *in = realloc (c->in, cap + 1);
            if (!in) {
                c->dead = true;
                return;
            }
            c->in = in;
            c->in_cap = cap;
        }
        size_t room = (c->in_cap < limit ? c->in_cap : limit) - c->in_len;
        ssize_t n = read (c->fd, c->in + c->in_len, room);
        if (n > 0) {
            c->in_len += (size_t)n;
            if (c->state == C_READ && c->head_len == 0 && c->in_len >= FAKE_HEAD_MAX)
                return;
        } else if (n == 0) {
            c->dead = true; //  the peer closed: nothing is left to answer
            return;
        } else if (errno == EINTR) {
            continue;
        } else {
            if (errno != EAGAIN && errno != EWOULDBLOCK) c->dead = true;
            return;
        }
    }
}

// ---------------------------------------------------------------------------
//  Connections

static void s_conn_run (fake_conn_t *c)
{
    while (!c->dead) {
        if (c->state == C_READ) {
            if (!s_request (c)) return;
        } else if (c->state == C_PLAN) {
            if (!s_plan_step (c)) return;
        } else {
            return;
        }
    }
}

static void s_conn_destroy (fake_conn_t *c)
{
    fake_server_t *srv = c->srv;
    s_timer_clear (c);
    close (c->fd);
    if (c->prev)
        c->prev->next = c->next;
    else
        srv->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    srv->nconns--;
    fake_plan_destroy (&c->plan);
    free (c->in);
    free (c->out);
    free (c);
}

static void s_conn_event (fake_conn_t *c, uint32_t events)
{
    if (events & EPOLLERR) c->dead = true;
    if (!c->dead && (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP))) s_read (c);
    if (!c->dead && (events & EPOLLOUT)) s_flush (c);
    s_conn_run (c);
    if (c->dead) s_conn_destroy (c);
}

static void s_conn_timer (fake_conn_t *c)
{
    if (c->state == C_LINGER) {
        c->dead = true;
    } else if (c->state == C_PLAN) {
        c->delay_done = true;
        s_conn_run (c);
    }
    if (c->dead) s_conn_destroy (c);
}

static void s_accept (fake_server_t *srv)
{
    for (;;) {
        int fd = accept4 (srv->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) continue;
            if ((errno == EMFILE || errno == ENFILE) && srv->reserve_fd >= 0) {
                //  Out of descriptors: use the reserve to take one connection
                //  off the queue and close it, so the loop does not spin.
                close (srv->reserve_fd);
                fd = accept (srv->lfd, NULL, NULL);
                if (fd >= 0) close (fd);
                srv->reserve_fd = open ("/dev/null", O_RDONLY | O_CLOEXEC);
                cm_warn ("out of file descriptors: refused a connection");
                continue;
            }
            if (errno != EAGAIN && errno != EWOULDBLOCK) cm_warn ("accept: %m");
            return;
        }
        if ((int64_t)srv->nconns >= srv->opts.max_conns) {
            cm_warn ("connection limit %lld reached: refused a connection",
                     (long long)srv->opts.max_conns);
            close (fd);
            continue;
        }
        int one = 1;
        setsockopt (fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        fake_conn_t *c = calloc (1, sizeof *c);
        if (!c) {
            close (fd);
            continue;
        }
        c->srv = srv;
        c->fd = fd;
        c->id = ++srv->next_id;
        c->state = C_READ;
        c->heap_pos = SIZE_MAX;
        struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.ptr = c};
        if (epoll_ctl (srv->epfd, EPOLL_CTL_ADD, fd, &ev) != 0) {
            close (fd);
            free (c);
            continue;
        }
        c->next = srv->conns;
        if (srv->conns) srv->conns->prev = c;
        srv->conns = c;
        srv->nconns++;
    }
}

// ---------------------------------------------------------------------------
//  The server

//  "host:port", "[v6]:port", optionally after "http://" or "tcp://".
static int s_bind (fake_server_t *self, const char *listen_at, char *err, size_t errlen)
{
    char host[256], port[16];
    const char *at = listen_at;
    if (strncmp (at, "http://", 7) == 0) at += 7;
    if (strncmp (at, "tcp://", 6) == 0) at += 6;
    const char *colon = strrchr (at, ':');
    if (!colon || colon == at || strlen (colon + 1) == 0 ||
        strlen (colon + 1) >= sizeof port || (size_t)(colon - at) >= sizeof host) {
        snprintf (err, errlen, "fake-listen '%s': expected host:port, e.g. 127.0.0.1:0",
                  listen_at);
        return -1;
    }
    snprintf (port, sizeof port, "%s", colon + 1);
    char *end = NULL;
    long number = strtol (port, &end, 10);
    if (*end || port[0] < '0' || port[0] > '9' || number > 65535) {
        snprintf (err, errlen, "fake-listen '%s': the port must be 0 to 65535",
                  listen_at);
        return -1;
    }
    snprintf (host, sizeof host, "%.*s", (int)(colon - at), at);
    if (host[0] == '[' && host[strlen (host) - 1] == ']') {
        memmove (host, host + 1, strlen (host));
        host[strlen (host) - 1] = '\0';
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    int rc = getaddrinfo (host, port, &hints, &res);
    if (rc) {
        snprintf (err, errlen, "fake-listen '%s': %s", listen_at, gai_strerror (rc));
        return -1;
    }
    int saved = 0;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        int fd =
            socket (ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) continue;
        int one = 1;
        setsockopt (fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind (fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen (fd, SOMAXCONN) == 0) {
            self->lfd = fd;
            break;
        }
        saved = errno;
        close (fd);
    }
    freeaddrinfo (res);
    if (self->lfd < 0) {
        snprintf (err, errlen, "fake-listen '%s': cannot listen: %s", listen_at,
                  strerror (saved ? saved : EADDRNOTAVAIL));
        return -1;
    }
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    char name[INET6_ADDRSTRLEN + 1], serv[16];
    if (getsockname (self->lfd, (struct sockaddr *)&ss, &sl) != 0 ||
        getnameinfo ((struct sockaddr *)&ss, sl, name, sizeof name, serv, sizeof serv,
                     NI_NUMERICHOST | NI_NUMERICSERV) != 0) {
        snprintf (err, errlen, "fake-listen '%s': cannot read the bound address",
                  listen_at);
        return -1;
    }
    snprintf (self->url, sizeof self->url,
              ss.ss_family == AF_INET6 ? "http://[%s]:%s" : "http://%s:%s", name, serv);
    return 0;
}

//  Room for every connection we promise to hold, plus a few.
static void s_raise_nofile (int64_t want)
{
    struct rlimit rl;
    if (getrlimit (RLIMIT_NOFILE, &rl) != 0 || (int64_t)rl.rlim_cur >= want) return;
    rlim_t target = (rlim_t)want;
    if (rl.rlim_max != RLIM_INFINITY && target > rl.rlim_max) target = rl.rlim_max;
    rl.rlim_cur = target;
    if (setrlimit (RLIMIT_NOFILE, &rl) != 0) cm_warn ("cannot raise RLIMIT_NOFILE: %m");
    if ((int64_t)target < want)
        cm_warn ("RLIMIT_NOFILE hard limit %llu is below the %lld descriptors wanted",
                 (unsigned long long)target, (long long)want);
}

fake_server_t *fake_server_new (const fake_opts_t *opts, fake_script_t **script_p,
                                char *err, size_t errlen)
{
    fake_server_t *self = calloc (1, sizeof *self);
    if (!self) {
        snprintf (err, errlen, "out of memory");
        return NULL;
    }
    self->opts = *opts;
    self->epfd = self->lfd = self->reserve_fd = -1;
    if (opts->api_key) {
        self->api_key = strdup (opts->api_key);
        self->opts.api_key = self->api_key;
    }
    self->opts.listen = NULL; //  only used here
    self->routes = fake_routes_new ();
    if (!self->routes || (opts->api_key && !self->api_key)) {
        snprintf (err, errlen, "out of memory");
        goto fail;
    }
    s_raise_nofile (opts->max_conns + 64);
    if (s_bind (self, opts->listen, err, errlen)) goto fail;
    self->epfd = epoll_create1 (EPOLL_CLOEXEC);
    self->reserve_fd = open ("/dev/null", O_RDONLY | O_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = (void *)&s_tag_listen};
    struct epoll_event sev = {.events = EPOLLIN, .data.ptr = (void *)&s_tag_stop};
    if (self->epfd < 0 || epoll_ctl (self->epfd, EPOLL_CTL_ADD, self->lfd, &ev) != 0 ||
        epoll_ctl (self->epfd, EPOLL_CTL_ADD, cm_stop_fd (), &sev) != 0) {
        snprintf (err, errlen, "epoll: %s", strerror (errno));
        goto fail;
    }
    self->script = *script_p;
    *script_p = NULL;
    return self;
fail:
    fake_server_destroy (&self);
    return NULL;
}

const char *fake_server_url (const fake_server_t *self)
{
    return self->url;
}

const fake_opts_t *fake_server_opts (const fake_server_t *self)
{
    return &self->opts;
}

fake_script_t *fake_server_script (fake_server_t *self)
{
    return self->script;
}

size_t fake_server_conns (const fake_server_t *self)
{
    return self->nconns;
}

int fake_server_run (fake_server_t *self)
{
    struct epoll_event events[S_EVENTS_MAX];
    while (!cm_stop_requested ()) {
        int timeout = -1;
        if (self->heap_len) {
            int64_t wait = self->heap[0]->wake_ms - cm_mono_ms ();
            timeout = wait < 0 ? 0 : wait > INT_MAX ? INT_MAX : (int)wait;
        }
        int n = epoll_wait (self->epfd, events, S_EVENTS_MAX, timeout);
        if (n < 0 && errno != EINTR) {
            cm_error ("epoll_wait: %m");
            return CM_E_IO;
        }
        for (int i = 0; i < n; i++) {
            void *ptr = events[i].data.ptr;
            if (ptr == &s_tag_stop) continue; //  the loop condition sees it
            if (ptr == &s_tag_listen)
                s_accept (self);
            else
                s_conn_event (ptr, events[i].events);
        }
        int64_t now = cm_mono_ms ();
        while (self->heap_len && self->heap[0]->wake_ms <= now) {
            fake_conn_t *c = self->heap[0];
            s_timer_clear (c);
            s_conn_timer (c);
        }
    }
    return 0;
}

void fake_server_destroy (fake_server_t **self_p)
{
    if (!self_p || !*self_p) return;
    fake_server_t *self = *self_p;
    while (self->conns) s_conn_destroy (self->conns);
    if (self->lfd >= 0) close (self->lfd);
    if (self->epfd >= 0) close (self->epfd);
    if (self->reserve_fd >= 0) close (self->reserve_fd);
    fake_routes_destroy (&self->routes);
    fake_script_destroy (&self->script);
    free (self->heap);
    free (self->api_key);
    free (self);
    *self_p = NULL;
}
