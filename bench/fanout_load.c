/*  fanout_load.c - the fan-out load generator in C (corral-fanout-load): the
    same options, the same runs and the same table row as fanout_load.mjs,
    with a client that costs less than the thing it measures.

    Why a second one: the Node generator used ~27% of one of this machine's
    two cores at 20 000 frames/s and its event loop lagged ~2 ms at p99;
    both fall on the figures it reports (its lag is added to the latency it
    measures, its CPU is taken from the servers it measures).  This one is
    one epoll loop: a receive time is read from CLOCK_REALTIME right after
    each read(), the clock corral-fanout-emit stamps with, so no clock
    calibration is needed.  Both generators stay; bench/fanout.sh picks this
    one unless LOADGEN=node.

    Per client: a non-blocking TCP connect, the HTTP/1.1 upgrade (with
    `Authorization: Bearer KEY` for corral), then for corral `initialize`
    (id 1) and `_corral/session/attach {sessionId, afterSeq: 0}` (id 2; or
    `session/load` with --attach load): live when id 2 is answered.  For the
    baseline (bench/ws_baseline.mjs) URL/sub?topic=<session>, live once
    open, and this process publishes the events itself through URL/pub on a
    1 ms tick, each tick's frames in one write.

    Per frame: `"seq":` is read for gaps and duplicates, `"t=` for the emit
    time; frames without `"t=` are control answers.  Server frames are not
    fragmented for events this small (neither server does); a ping gets a
    pong, a close ends the client.  Latency counts frames whose emit time
    lies in [warmup, warmup + duration) after the source started;
    delivered frames/s counts frames arriving in that window.  The "loop
    p99" column is how late a 1 ms timer fires in this loop, as the Node
    one reports its event-loop delay.

    FANOUT_TRACE=FILE writes a time series of the window to FILE: per 10 ms
    of emit time: ms since the window's start, the frames, those over
    5 ms, and the worst latency (µs), to tell a tail spread evenly from one
    made by stalls.  Its first line gives the window's start in µs of
    CLOCK_REALTIME, to line it up with other logs.

    Output: one Markdown table row on stdout (--header: the header first;
    --print-header: the header alone), details on stderr.  Exit status 0
    when nothing was missing, no gap and no duplicate.  A benchmark, not a
    test: never registered with ctest.
*/
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/evp.h>
#include <arpa/inet.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench_proc.h"

#define HIST_US     1000000 //  1 µs buckets up to 1 s; the last one holds the rest
#define MAX_PIDS    8
#define TAG_TIMER   ((uint64_t)1 << 62)
#define TAG_EMITTER ((uint64_t)1 << 61)
#define TAG_PUB     ((uint64_t)1 << 60)

enum { C_CONNECTING, C_HANDSHAKE, C_INIT, C_ATTACH, C_LIVE, C_DEAD };

typedef struct {
    int fd;
    int state;
    size_t session; //  index into sessions
    uint64_t next;  //  next seq expected (0: none seen yet)
    uint8_t *in;
    size_t in_len, in_cap;
    char *out; //  bytes not yet written
    size_t out_len, out_cap;
    bool want_out;
    bool was_live; //  attached (counts for what should arrive)
} client_t;

typedef struct {
    //  options
    const char *target, *url, *key, *attach, *label, *format;
    long sessions, clients, rate, bytes, concurrency;
    double duration, warmup;
    bool header;
    pid_t pids[MAX_PIDS];
    int npids;
    char **emit_argv;
    int emit_argc;
    //  url parts
    char host[64], path[256];
    int port;
    struct sockaddr_in addr;
    //  run
    int ep;
    char **sess;
    size_t nsess, sess_cap;
    client_t *cl;
    size_t ncl, started, settled, live;
    client_t pub;  //  baseline publisher
    int64_t t0_us; //  the source started (CLOCK_REALTIME)
    bool source_started, source_done, arriving;
    int64_t win_start, win_end;
    //  emitter
    pid_t emit_pid;
    int emit_in, emit_out;
    char emit_buf[65536];
    size_t emit_len;
    bool emit_ready, emit_exited;
    char *emit_lines;
    size_t emit_lines_len, emit_lines_cap;
    uint64_t emitted, not_sent;
    int64_t commit_p99_us; //  from the emitter's `store:` line; -1: none
    //  measurement
    uint32_t *hist, *lag;
    struct slot {
        uint32_t n, over, max;
    } * trace; //  FANOUT_TRACE, per 10 ms
    size_t trace_n;
    uint64_t measured, lat_max, arrived, event_frames, other_frames, gaps, dups;
    uint64_t lag_n, closed_early, failures;
    uint64_t ticks; //  timer ticks seen
    int64_t tick0;  //  monotonic µs of the timer's start
    int timer;
} run_t;

static int64_t real_us (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int64_t mono_us (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void die (const char *msg)
{
    fprintf (stderr, "fanout-load: %s\n", msg);
    exit (2);
}

static void *xrealloc (void *p, size_t n)
{
    void *q = realloc (p, n ? n : 1);
    if (!q) die ("out of memory");
    return q;
}

static void append (char **buf, size_t *len, size_t *cap, const void *src, size_t n)
{
    if (*len + n > *cap) {
        *cap = (*len + n) * 2;
        *buf = xrealloc (*buf, *cap);
    }
    memcpy (*buf + *len, src, n);
    *len += n;
}

/* ---------------------------------------------------------------- */
/*  Options                                                          */

static const char *s_header =
    "| target | sessions × clients | offered ev/s | emitted ev/s | delivered frames/s | "
    "p50 / p95 / p99 / max ms | missing | gaps | dups | server CPU | server RSS MiB | "
    "loadgen CPU | loadgen loop p99 ms | store commit p99 ms |\n"
    "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|";

static void parse_opts (run_t *r, int argc, char **argv)
{
    r->target = "baseline";
    r->url = "";
    r->key = getenv ("CORRAL_BENCH_KEY") ? getenv ("CORRAL_BENCH_KEY") : "";
    r->attach = "attach";
    r->label = "";
    r->format = "row";
    r->sessions = 100;
    r->clients = 10;
    r->rate = 20000;
    r->commit_p99_us = -1;
    r->duration = 10;
    r->warmup = 2;
    r->bytes = 64;
    r->concurrency = 200;
    static const struct option longs[] = {{"target", 1, 0, 't'},
                                          {"url", 1, 0, 'u'},
                                          {"key", 1, 0, 'k'},
                                          {"attach", 1, 0, 'a'},
                                          {"sessions", 1, 0, 's'},
                                          {"clients", 1, 0, 'c'},
                                          {"rate", 1, 0, 'r'},
                                          {"duration", 1, 0, 'd'},
                                          {"warmup", 1, 0, 'w'},
                                          {"bytes", 1, 0, 'b'},
                                          {"server-pid", 1, 0, 'p'},
                                          {"label", 1, 0, 'l'},
                                          {"connect-concurrency", 1, 0, 'C'},
                                          {"header", 0, 0, 'H'},
                                          {"print-header", 0, 0, 'P'},
                                          {"format", 1, 0, 'f'},
                                          {"parser", 1, 0, 'X'},
                                          {0, 0, 0, 0}};
    int opt;
    while ((opt = getopt_long (argc, argv, "+", longs, NULL)) != -1) {
        switch (opt) {
        case 't':
            r->target = optarg;
            break;
        case 'u':
            r->url = optarg;
            break;
        case 'k':
            r->key = optarg;
            break;
        case 'a':
            r->attach = optarg;
            break;
        case 's':
            r->sessions = atol (optarg);
            break;
        case 'c':
            r->clients = atol (optarg);
            break;
        case 'r':
            r->rate = atol (optarg);
            break;
        case 'd':
            r->duration = atof (optarg);
            break;
        case 'w':
            r->warmup = atof (optarg);
            break;
        case 'b':
            r->bytes = atol (optarg);
            break;
        case 'l':
            r->label = optarg;
            break;
        case 'C':
            r->concurrency = atol (optarg);
            break;
        case 'H':
            r->header = true;
            break;
        case 'f':
            r->format = optarg;
            break;
        case 'X':
            break; //  the Node generator's choice of frame reader
        case 'P':
            puts (s_header);
            exit (0);
        case 'p':
            for (char *tok = strtok (optarg, ","); tok && r->npids < MAX_PIDS;
                 tok = strtok (NULL, ","))
                r->pids[r->npids++] = (pid_t)atol (tok);
            break;
        default:
            die ("bad arguments (see the header of bench/fanout_load.c)");
        }
    }
    r->emit_argv = argv + optind;
    r->emit_argc = argc - optind;
    bool corral = strcmp (r->target, "corral") == 0;
    if ((!corral && strcmp (r->target, "baseline") != 0) || r->sessions < 1 ||
        r->clients < 1 || r->rate <= 0 || r->duration <= 0 || r->warmup < 0 ||
        r->bytes < 0 || r->bytes > 65536 || r->concurrency < 1 ||
        strcmp (r->format, "row") != 0 || (corral && r->emit_argc == 0))
        die ("bad arguments (corral mode needs the emitter command after --)");
    if (!*r->url) r->url = corral ? "ws://127.0.0.1:8080/acp" : "ws://127.0.0.1:8091";
    const char *p = r->url;
    if (strncmp (p, "ws://", 5) != 0) die ("--url must be ws://HOST:PORT/PATH");
    p += 5;
    const char *colon = strchr (p, ':'), *slash = strchr (p, '/');
    if (!colon || (slash && slash < colon) || (size_t)(colon - p) >= sizeof r->host)
        die ("--url needs a numeric host and a port");
    memcpy (r->host, p, (size_t)(colon - p));
    r->port = atoi (colon + 1);
    snprintf (r->path, sizeof r->path, "%s", slash ? slash : "/");
    r->addr.sin_family = AF_INET;
    r->addr.sin_port = htons ((uint16_t)r->port);
    if (inet_pton (AF_INET, r->host, &r->addr.sin_addr) != 1)
        die ("--url host must be an IPv4 address");
}

/* ---------------------------------------------------------------- */
/*  WebSocket client bits                                            */

static void ep_mod (run_t *r, client_t *c, uint64_t tag, uint32_t events)
{
    struct epoll_event ev = {.events = events, .data.u64 = tag};
    epoll_ctl (r->ep, EPOLL_CTL_MOD, c->fd, &ev);
}

//  Write what is queued; keep the rest for EPOLLOUT.
static void flush_out (run_t *r, client_t *c, uint64_t tag)
{
    size_t done = 0;
    while (done < c->out_len) {
        ssize_t n = write (c->fd, c->out + done, c->out_len - done);
        if (n > 0) {
            done += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        break;
    }
    memmove (c->out, c->out + done, c->out_len - done);
    c->out_len -= done;
    bool want = c->out_len > 0;
    if (want != c->want_out) {
        c->want_out = want;
        ep_mod (r, c, tag, EPOLLIN | (want ? EPOLLOUT : 0));
    }
}

//  Queue one masked frame (RFC 6455 requires a client to mask).
static void queue_frame (client_t *c, uint8_t opcode, const void *data, size_t n)
{
    uint8_t h[14];
    size_t hl = 2;
    h[0] = (uint8_t)(0x80 | opcode);
    if (n < 126)
        h[1] = (uint8_t)(0x80 | n);
    else if (n < 65536) {
        h[1] = 0x80 | 126;
        h[2] = (uint8_t)(n >> 8);
        h[3] = (uint8_t)n;
        hl = 4;
    } else {
        h[1] = 0x80 | 127;
        for (int i = 0; i < 8; i++) h[2 + i] = (uint8_t)((uint64_t)n >> (56 - 8 * i));
        hl = 10;
    }
    static uint32_t x = 2463534242u; //  xorshift: masks need not be secret here
    x ^= x << 13, x ^= x >> 17, x ^= x << 5;
    memcpy (h + hl, &x, 4);
    const uint8_t *m = h + hl;
    hl += 4;
    append (&c->out, &c->out_len, &c->out_cap, h, hl);
    append (&c->out, &c->out_len, &c->out_cap, data, n);
    uint8_t *p = (uint8_t *)c->out + c->out_len - n;
    for (size_t i = 0; i < n; i++) p[i] ^= m[i & 3];
}

static void queue_request (run_t *r, client_t *c, const char *path, bool auth)
{
    uint8_t raw[16];
    if (getrandom (raw, sizeof raw, 0) != sizeof raw) memset (raw, 7, sizeof raw);
    char key[25]; //  base64 of 16 bytes, as the library writes it
    EVP_EncodeBlock ((unsigned char *)key, raw, sizeof raw);
    char req[1024];
    int n = snprintf (req, sizeof req,
                      "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\n"
                      "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                      "Sec-WebSocket-Version: 13\r\n%s%s%s\r\n",
                      path, r->host, r->port, key, auth ? "Authorization: Bearer " : "",
                      auth ? r->key : "", auth ? "\r\n" : "");
    append (&c->out, &c->out_len, &c->out_cap, req, (size_t)n);
}

static int open_socket (run_t *r, client_t *c, uint64_t tag)
{
    c->fd = socket (AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) return -1;
    int one = 1;
    setsockopt (c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect (c->fd, (struct sockaddr *)&r->addr, sizeof r->addr) < 0 &&
        errno != EINPROGRESS) {
        close (c->fd);
        c->fd = -1;
        return -1;
    }
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.u64 = tag};
    c->want_out = true;
    epoll_ctl (r->ep, EPOLL_CTL_ADD, c->fd, &ev);
    return 0;
}

static uint64_t read_uint (const uint8_t *p, const uint8_t *end, bool *ok)
{
    while (p < end && *p == ' ') p++;
    uint64_t v = 0;
    *ok = false;
    for (; p < end && *p >= '0' && *p <= '9'; p++) {
        v = v * 10 + (uint64_t)(*p - '0');
        *ok = true;
    }
    return v;
}

static void settle (run_t *r, client_t *c, bool ok, const char *why)
{
    r->settled++;
    if (ok) {
        r->live++;
        c->was_live = true;
    } else {
        if (r->failures++ < 5)
            fprintf (stderr, "fanout-load: client of %s: %s\n", r->sess[c->session], why);
        if (c->fd >= 0) close (c->fd);
        c->fd = -1;
        c->state = C_DEAD;
    }
}

//  A control answer (no `"t=`) while attaching.
static void control (run_t *r, client_t *c, const uint8_t *d, size_t n)
{
    if (memmem (d, n, "\"method\"", 8)) return; //  a notification or request
    if (memmem (d, n, "\"error\"", 7)) {
        char why[200];
        snprintf (why, sizeof why, "%s: %.*s",
                  c->state == C_INIT ? "initialize" : r->attach, (int)(n < 150 ? n : 150),
                  (const char *)d);
        settle (r, c, false, why);
        return;
    }
    if (c->state == C_INIT && memmem (d, n, "\"id\":1", 6)) {
        char req[512];
        int len =
            strcmp (r->attach, "load") == 0
                ? snprintf (req, sizeof req,
                            "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"session/load\","
                            "\"params\":{\"sessionId\":\"%s\",\"cwd\":\"/\","
                            "\"mcpServers\":[]}}",
                            r->sess[c->session])
                : snprintf (req, sizeof req,
                            "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":"
                            "\"_corral/session/attach\",\"params\":{\"sessionId\":"
                            "\"%s\",\"afterSeq\":0}}",
                            r->sess[c->session]);
        queue_frame (c, 1, req, (size_t)len);
        c->state = C_ATTACH;
    } else if (c->state == C_ATTACH && memmem (d, n, "\"id\":2", 6)) {
        c->state = C_LIVE;
        settle (r, c, true, NULL);
    }
}

//  The hot path: every frame every client receives.
static void on_frame (run_t *r, client_t *c, const uint8_t *d, size_t n, int64_t now)
{
    const uint8_t *end = d + n;
    const uint8_t *s = memmem (d, n, "\"seq\":", 6);
    bool ok;
    if (s) {
        uint64_t seq = read_uint (s + 6, end, &ok);
        if (ok) {
            if (c->next == 0 || seq == c->next)
                c->next = seq + 1;
            else if (seq > c->next) {
                r->gaps += seq - c->next;
                c->next = seq + 1;
            } else
                r->dups++;
        }
    }
    const uint8_t *t = memmem (d, n, "\"t=", 3);
    if (!t) {
        r->other_frames++;
        if (c->state == C_INIT || c->state == C_ATTACH) control (r, c, d, n);
        return;
    }
    r->event_frames++;
    if (r->arriving) r->arrived++;
    int64_t emit = (int64_t)read_uint (t + 3, end, &ok);
    if (!ok || emit < r->win_start || emit >= r->win_end) return;
    int64_t lat = now - emit;
    if (lat < 0) lat = 0;
    r->hist[lat < HIST_US ? lat : HIST_US]++;
    if ((uint64_t)lat > r->lat_max) r->lat_max = (uint64_t)lat;
    if (r->trace) {
        struct slot *sl = &r->trace[(size_t)(emit - r->win_start) / 10000 % r->trace_n];
        sl->n++;
        sl->over += lat > 5000;
        if ((uint32_t)lat > sl->max) sl->max = (uint32_t)lat;
    }
    r->measured++;
}

//  Frames in c->in; consumed ones are dropped.
static void parse_frames (run_t *r, client_t *c, uint64_t tag, int64_t now)
{
    size_t i = 0, n = c->in_len;
    const uint8_t *b = c->in;
    while (n - i >= 2 && c->state != C_DEAD) {
        uint64_t len = b[i + 1] & 0x7f;
        size_t h = 2;
        if (len == 126) {
            if (n - i < 4) break;
            len = (uint64_t)b[i + 2] << 8 | b[i + 3];
            h = 4;
        } else if (len == 127) {
            if (n - i < 10) break;
            len = 0;
            for (int k = 0; k < 8; k++) len = len << 8 | b[i + 2 + k];
            h = 10;
        }
        if (n - i < h + len) break;
        int op = b[i] & 0x0f;
        if (op <= 2)
            on_frame (r, c, b + i + h, (size_t)len, now);
        else if (op == 9) {
            queue_frame (c, 10, b + i + h, (size_t)len);
            flush_out (r, c, tag);
        } else if (op == 8) {
            if (c->state == C_LIVE && !r->source_done) r->closed_early++;
            if (c->state != C_LIVE)
                settle (r, c, false, "closed by the server");
            else {
                close (c->fd);
                c->fd = -1;
                c->state = C_DEAD;
            }
            return;
        }
        i += h + (size_t)len;
    }
    memmove (c->in, c->in + i, n - i);
    c->in_len = n - i;
}

static void on_readable (run_t *r, client_t *c, uint64_t tag)
{
    for (;;) {
        if (c->in_cap - c->in_len < 16384) {
            c->in_cap = c->in_cap ? c->in_cap * 2 : 65536;
            c->in = xrealloc (c->in, c->in_cap);
        }
        size_t room = c->in_cap - c->in_len;
        ssize_t got = read (c->fd, c->in + c->in_len, room);
        if (got < 0 && errno == EINTR) continue;
        if (got < 0 && errno == EAGAIN) return;
        if (got <= 0) {
            if (c->state == C_LIVE) {
                if (!r->source_done) r->closed_early++;
                close (c->fd);
                c->fd = -1;
                c->state = C_DEAD;
            } else if (c != &r->pub)
                settle (r, c, false, got == 0 ? "connection closed" : strerror (errno));
            else
                die ("the publisher connection failed");
            return;
        }
        int64_t now = real_us ();
        c->in_len += (size_t)got;
        if (c->state == C_HANDSHAKE) {
            uint8_t *eoh = memmem (c->in, c->in_len, "\r\n\r\n", 4);
            if (!eoh) continue;
            if (c->in_len < 12 || memcmp (c->in + 9, "101", 3) != 0) {
                char why[128];
                snprintf (why, sizeof why, "HTTP %.3s", (const char *)c->in + 9);
                if (c == &r->pub) die ("the publisher's upgrade was refused");
                settle (r, c, false, why);
                return;
            }
            size_t hdr = (size_t)(eoh + 4 - c->in);
            memmove (c->in, c->in + hdr, c->in_len - hdr);
            c->in_len -= hdr;
            if (c == &r->pub || strcmp (r->target, "baseline") == 0) {
                c->state = C_LIVE;
                if (c != &r->pub) settle (r, c, true, NULL);
            } else {
                static const char init[] =
                    "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"initialize\",\"params\":"
                    "{\"protocolVersion\":1,\"clientCapabilities\":{\"fs\":{"
                    "\"readTextFile\":false,\"writeTextFile\":false},\"terminal\":false}}"
                    "}";
                queue_frame (c, 1, init, sizeof init - 1);
                c->state = C_INIT;
            }
            flush_out (r, c, tag);
        }
        parse_frames (r, c, tag, now);
        if (c->state == C_DEAD) return;
        if (c->out_len) flush_out (r, c, tag);
        //  A short read drained the socket (epoll is level-triggered: more
        //  bytes wake us again), which spares a read that says EAGAIN.
        if ((size_t)got < room) return;
    }
}

/* ---------------------------------------------------------------- */
/*  Clients                                                          */

static void start_next (run_t *r)
{
    while (r->started < r->ncl && r->started - r->settled < (size_t)r->concurrency) {
        size_t i = r->started++;
        client_t *c = &r->cl[i];
        c->session = i / (size_t)r->clients;
        c->state = C_CONNECTING;
        char path[512];
        if (strcmp (r->target, "baseline") == 0)
            snprintf (path, sizeof path, "%s/sub?topic=%s",
                      strcmp (r->path, "/") == 0 ? "" : r->path, r->sess[c->session]);
        else
            snprintf (path, sizeof path, "%s", r->path);
        queue_request (r, c, path, strcmp (r->target, "corral") == 0 && *r->key);
        if (open_socket (r, c, i) < 0) settle (r, c, false, strerror (errno));
    }
}

static void on_client (run_t *r, client_t *c, uint64_t tag, uint32_t events)
{
    if (c->state == C_DEAD) return;
    if (c->state == C_CONNECTING) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt (c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err) {
            if (c == &r->pub) die ("cannot connect the publisher");
            settle (r, c, false, strerror (err));
            return;
        }
        c->state = C_HANDSHAKE;
    }
    if (events & EPOLLOUT) flush_out (r, c, tag);
    if (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) on_readable (r, c, tag);
}

/* ---------------------------------------------------------------- */
/*  Sources                                                          */

static void emitter_start (run_t *r)
{
    int in[2], out[2];
    if (pipe2 (in, O_CLOEXEC) || pipe2 (out, O_CLOEXEC)) die ("pipe failed");
    char **argv = xrealloc (NULL, (size_t)(r->emit_argc + 16) * sizeof *argv);
    int n = 0;
    for (int i = 0; i < r->emit_argc; i++) argv[n++] = r->emit_argv[i];
    static char s[32], rate[32], dur[32], warm[32], bytes[32];
    snprintf (s, sizeof s, "%ld", r->sessions);
    snprintf (rate, sizeof rate, "%ld", r->rate);
    snprintf (dur, sizeof dur, "%g", r->warmup + r->duration);
    snprintf (warm, sizeof warm, "%g", r->warmup);
    snprintf (bytes, sizeof bytes, "%ld", r->bytes);
    char *extra[] = {"--sessions", s,   "--warmup", warm,  "--rate",  rate,
                     "--duration", dur, "--bytes",  bytes, "--start", "go",
                     NULL};
    for (int i = 0; extra[i]; i++) argv[n++] = extra[i];
    argv[n] = NULL;
    pid_t pid = fork ();
    if (pid < 0) die ("fork failed");
    if (pid == 0) {
        dup2 (in[0], 0);
        dup2 (out[1], 1);
        execvp (argv[0], argv);
        fprintf (stderr, "fanout-load: cannot start the emitter %s: %s\n", argv[0],
                 strerror (errno));
        _exit (127);
    }
    free (argv);
    close (in[0]);
    close (out[1]);
    r->emit_pid = pid;
    r->emit_in = in[1];
    r->emit_out = out[0];
    fcntl (r->emit_out, F_SETFL, O_NONBLOCK);
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = TAG_EMITTER};
    epoll_ctl (r->ep, EPOLL_CTL_ADD, r->emit_out, &ev);
}

static void emitter_line (run_t *r, char *line)
{
    if (strncmp (line, "session ", 8) == 0) {
        if (r->nsess == r->sess_cap) {
            r->sess_cap = r->sess_cap ? r->sess_cap * 2 : 64;
            r->sess = xrealloc (r->sess, r->sess_cap * sizeof *r->sess);
        }
        r->sess[r->nsess++] = strdup (line + 8);
    } else if (strncmp (line, "ready", 5) == 0)
        r->emit_ready = true;
    else if (strncmp (line, "emitting ", 9) == 0) {
        r->t0_us = strtoll (line + 9, NULL, 10);
        r->source_started = true;
    } else if (strcmp (line, "done") == 0)
        r->source_done = true;
    else {
        const char *cp = strncmp (line, "store: ", 7) == 0 ? strstr (line, "p99 ") : NULL;
        if (cp) r->commit_p99_us = strtoll (cp + 4, NULL, 10);
        if (strncmp (line, "emitted ", 8) == 0) {
            r->emitted = strtoull (line + 8, NULL, 10);
            const char *ns = strstr (line, "not sent ");
            if (ns) r->not_sent = strtoull (ns + 9, NULL, 10);
        }
        append (&r->emit_lines, &r->emit_lines_len, &r->emit_lines_cap, "emitter: ", 9);
        append (&r->emit_lines, &r->emit_lines_len, &r->emit_lines_cap, line,
                strlen (line));
        append (&r->emit_lines, &r->emit_lines_len, &r->emit_lines_cap, "\n", 1);
    }
}

static void emitter_readable (run_t *r)
{
    for (;;) {
        ssize_t n = read (r->emit_out, r->emit_buf + r->emit_len,
                          sizeof r->emit_buf - 1 - r->emit_len);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            if (n == 0) {
                epoll_ctl (r->ep, EPOLL_CTL_DEL, r->emit_out, NULL);
                r->emit_exited = true;
                r->source_done = true;
            }
            return;
        }
        r->emit_len += (size_t)n;
        char *start = r->emit_buf, *nl;
        while ((nl = memchr (start, '\n', r->emit_len - (size_t)(start - r->emit_buf)))) {
            *nl = '\0';
            emitter_line (r, start);
            start = nl + 1;
        }
        r->emit_len -= (size_t)(start - r->emit_buf);
        memmove (r->emit_buf, start, r->emit_len);
        if (r->emit_len == sizeof r->emit_buf - 1) r->emit_len = 0; //  an endless line
    }
}

//  Baseline: this tick's share of the rate, round robin over the topics,
//  in one write; no burst to catch up after a stall.
static void publish_tick (run_t *r)
{
    int64_t now = real_us ();
    double el = (double)(now - r->t0_us) / 1e6;
    if (el >= r->warmup + r->duration) {
        r->source_done = true;
        return;
    }
    int64_t allowed =
        (int64_t)((double)r->rate * el) - (int64_t)r->emitted - (int64_t)r->not_sent;
    static size_t next;
    char msg[65536 + 256];
    for (int k = 0; allowed >= 1 && k < 4096; k++, allowed--) {
        int h0 =
            snprintf (msg, sizeof msg, "{\"topic\":\"%s\",\"data\":\"", r->sess[next]);
        int h = h0 + snprintf (msg + h0, sizeof msg - (size_t)h0,
                               "t=%" PRId64 " n=%" PRIu64 " ", real_us (), r->emitted);
        while (h - h0 < r->bytes) msg[h++] = 'x';
        msg[h++] = '"';
        msg[h++] = '}';
        queue_frame (&r->pub, 1, msg, (size_t)h);
        next = next + 1 == r->nsess ? 0 : next + 1;
        r->emitted++;
    }
    flush_out (r, &r->pub, TAG_PUB);
    if (allowed > r->rate / 100) r->not_sent += (uint64_t)allowed;
}

/* ---------------------------------------------------------------- */
/*  The loop                                                         */

static void on_timer (run_t *r)
{
    uint64_t n;
    if (read (r->timer, &n, sizeof n) != sizeof n) return;
    //  How late the oldest expiry not yet seen was served.
    int64_t late = mono_us () - (r->tick0 + (int64_t)(r->ticks + 1) * 1000);
    r->ticks += n;
    if (r->arriving) {
        r->lag[late < 0 ? 0 : late < HIST_US ? late : HIST_US]++;
        r->lag_n++;
    }
    if (strcmp (r->target, "baseline") == 0 && r->source_started && !r->source_done)
        publish_tick (r);
}

static void loop_once (run_t *r, int timeout_ms)
{
    struct epoll_event evs[256];
    int n = epoll_wait (r->ep, evs, 256, timeout_ms);
    for (int i = 0; i < n; i++) {
        uint64_t tag = evs[i].data.u64;
        if (tag == TAG_TIMER)
            on_timer (r);
        else if (tag == TAG_EMITTER)
            emitter_readable (r);
        else if (tag == TAG_PUB)
            on_client (r, &r->pub, tag, evs[i].events);
        else
            on_client (r, &r->cl[tag], tag, evs[i].events);
    }
}

static double pct (const uint32_t *h, uint64_t total, double p)
{
    if (!total) return -1;
    uint64_t want = (uint64_t)((double)total * p / 100), seen = 0;
    for (size_t k = 0; k < HIST_US; k++) {
        seen += h[k];
        if (seen > want) return (double)k / 1000;
    }
    return 1e9;
}

static double cpu_self_s (void)
{
    struct rusage ru;
    getrusage (RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static void fmt_ms (char *out, size_t n, double ms)
{
    if (ms < 0)
        snprintf (out, n, "-");
    else if (ms >= 1e9)
        snprintf (out, n, ">1000");
    else
        snprintf (out, n, "%.2f", ms);
}

int main (int argc, char **argv)
{
    signal (SIGPIPE, SIG_IGN);
    static run_t run;
    run_t *r = &run;
    parse_opts (r, argc, argv);
    struct rlimit rl;
    if (getrlimit (RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit (RLIMIT_NOFILE, &rl);
    }
    r->hist = calloc (HIST_US + 1, sizeof *r->hist);
    r->lag = calloc (HIST_US + 1, sizeof *r->lag);
    if (!r->hist || !r->lag) die ("out of memory");
    r->ep = epoll_create1 (EPOLL_CLOEXEC);
    r->emit_pid = -1;
    bool corral = strcmp (r->target, "corral") == 0;

    //  The sessions: the emitter's, or names of our own.
    if (corral) {
        emitter_start (r);
        while (!r->emit_ready && !r->emit_exited) loop_once (r, 100);
        if (!r->emit_ready) die ("the emitter exited early");
    } else {
        unsigned run_id;
        if (getrandom (&run_id, sizeof run_id, 0) != sizeof run_id)
            run_id = (unsigned)getpid ();
        r->nsess = (size_t)r->sessions;
        r->sess = xrealloc (NULL, r->nsess * sizeof *r->sess);
        for (size_t i = 0; i < r->nsess; i++) {
            char name[64];
            snprintf (name, sizeof name, "bench-%06x-%zu", run_id & 0xffffff, i);
            r->sess[i] = strdup (name);
        }
    }

    //  Every client attached (or failed), at most --connect-concurrency at once.
    r->ncl = r->nsess * (size_t)r->clients;
    r->cl = calloc (r->ncl, sizeof *r->cl);
    if (!r->cl) die ("out of memory");
    int64_t t_open = mono_us ();
    start_next (r);
    while (r->settled < r->ncl) {
        loop_once (r, 100);
        start_next (r);
        if (mono_us () - t_open > 150 * 1000000LL) break;
    }
    fprintf (stderr, "fanout-load: %zu of %zu clients %s in %.1f s\n", r->live, r->ncl,
             corral ? "attached" : "connected", (double)(mono_us () - t_open) / 1e6);
    if (r->live == 0) {
        if (r->emit_pid > 0) kill (r->emit_pid, SIGTERM);
        die ("no client connected");
    }

    //  The 1 ms timer: the loop's lag, and the baseline's publishing tick.
    r->timer = timerfd_create (CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    struct itimerspec its = {.it_interval = {0, 1000000}, .it_value = {0, 1000000}};
    r->tick0 = mono_us ();
    timerfd_settime (r->timer, 0, &its, NULL);
    struct epoll_event tev = {.events = EPOLLIN, .data.u64 = TAG_TIMER};
    epoll_ctl (r->ep, EPOLL_CTL_ADD, r->timer, &tev);

    //  Start the source.
    if (corral) {
        if (write (r->emit_in, "go\n", 3) != 3) die ("cannot start the emitter");
        while (!r->source_started && !r->emit_exited) loop_once (r, 100);
        if (!r->source_started) die ("the emitter exited before emitting");
    } else {
        char path[sizeof r->path + 8];
        snprintf (path, sizeof path, "%.255s/pub",
                  strcmp (r->path, "/") == 0 ? "" : r->path);
        queue_request (r, &r->pub, path, false);
        if (open_socket (r, &r->pub, TAG_PUB) < 0) die ("cannot connect the publisher");
        r->pub.state = C_CONNECTING;
        while (r->pub.state != C_LIVE) loop_once (r, 100);
        r->t0_us = real_us ();
        r->source_started = true;
    }
    r->win_start = r->t0_us + (int64_t)(r->warmup * 1e6);
    r->win_end = r->win_start + (int64_t)(r->duration * 1e6);
    if (getenv ("FANOUT_TRACE")) {
        r->trace_n = (size_t)(r->duration * 100) + 1;
        r->trace = xrealloc (NULL, r->trace_n * sizeof *r->trace);
        memset (r->trace, 0, r->trace_n * sizeof *r->trace);
    }

    while (real_us () < r->win_start) loop_once (r, 1);
    r->arriving = true;
    double cpu0 = cpu_self_s (), pcpu0[MAX_PIDS];
    for (int i = 0; i < r->npids; i++) pcpu0[i] = bench_proc_cpu_s (r->pids[i]);
    int64_t m0 = mono_us ();
    uint64_t arrived0 = r->arrived;
    while (real_us () < r->win_end) loop_once (r, 1);
    r->arriving = false;
    double secs = (double)(mono_us () - m0) / 1e6;
    double cpu = (cpu_self_s () - cpu0) / secs * 100;
    double pcpu[MAX_PIDS], prss[MAX_PIDS];
    for (int i = 0; i < r->npids; i++) {
        pcpu[i] = (bench_proc_cpu_s (r->pids[i]) - pcpu0[i]) / secs * 100;
        prss[i] = (double)bench_proc_status_kib (r->pids[i], "VmRSS:") / 1024;
    }
    double delivered = (double)(r->arrived - arrived0) / secs;

    //  Let the last frames in (until 1 s of quiet, at most 10 s), then stop.
    while (!r->source_done) loop_once (r, 10);
    for (int k = 0; k < 10; k++) {
        uint64_t last = r->event_frames;
        int64_t until = mono_us () + 1000000;
        while (mono_us () < until) loop_once (r, 50);
        if (r->event_frames == last) break;
    }
    while (corral && !r->emit_exited) loop_once (r, 50);
    if (r->emit_pid > 0) waitpid (r->emit_pid, NULL, 0);

    //  What should have arrived: every event to each client of its session.
    uint64_t *per = calloc (r->nsess, sizeof *per);
    for (size_t i = 0; i < r->ncl; i++)
        if (r->cl[i].was_live) per[r->cl[i].session]++;
    uint64_t expected = 0;
    for (size_t i = 0; i < r->nsess; i++) {
        uint64_t ev = r->emitted / r->nsess + (i < r->emitted % r->nsess ? 1 : 0);
        expected += ev * per[i];
    }
    free (per);
    int64_t missing = (int64_t)expected - (int64_t)r->event_frames;
    double loop99 = pct (r->lag, r->lag_n, 99);

    if (r->emit_lines_len) fwrite (r->emit_lines, 1, r->emit_lines_len, stderr);
    FILE *tf = r->trace ? fopen (getenv ("FANOUT_TRACE"), "w") : NULL;
    if (tf)
        fprintf (tf, "# window start %" PRId64 " µs (CLOCK_REALTIME)\n", r->win_start);
    for (size_t i = 0; tf && i < r->trace_n; i++)
        fprintf (tf, "%zu %u %u %u\n", i * 10, r->trace[i].n, r->trace[i].over,
                 r->trace[i].max);
    if (tf) fclose (tf);
    free (r->trace);
    fprintf (stderr,
             "fanout-load: window %.1f s; %" PRIu64 " event frames in all (%" PRIu64
             " other), %" PRId64 " missing of %" PRIu64
             "; load generator (C) CPU %.0f%%, "
             "1 ms timer late p99 %.2f ms\n",
             secs, r->event_frames, r->other_frames, missing, expected, cpu, loop99);
    if (r->header) puts (s_header);
    char p50[16], p95[16], p99[16], mx[16], cpus[128] = "", rss[128] = "";
    fmt_ms (p50, sizeof p50, pct (r->hist, r->measured, 50));
    fmt_ms (p95, sizeof p95, pct (r->hist, r->measured, 95));
    fmt_ms (p99, sizeof p99, pct (r->hist, r->measured, 99));
    fmt_ms (mx, sizeof mx, r->measured ? (double)r->lat_max / 1000 : -1);
    for (int i = 0; i < r->npids; i++) {
        size_t lc = strlen (cpus), lr = strlen (rss);
        snprintf (cpus + lc, sizeof cpus - lc, "%s%.0f%%", i ? ", " : "", pcpu[i]);
        snprintf (rss + lr, sizeof rss - lr, "%s%.0f", i ? ", " : "", prss[i]);
    }
    double el = r->warmup + r->duration;
    char commit[16] = "-";
    if (r->commit_p99_us >= 0)
        snprintf (commit, sizeof commit, "%.2f", (double)r->commit_p99_us / 1000);
    printf ("| %s%s%s | %ld × %ld | %ld | %.0f | %.0f | %s / %s / %s / %s | %" PRId64
            " | %" PRIu64 " | %" PRIu64 " | %s | %s | %.0f%% | %.2f | %s |\n",
            r->target, *r->label ? " " : "", r->label, r->sessions, r->clients, r->rate,
            (double)r->emitted / el, delivered, p50, p95, p99, mx, missing, r->gaps,
            r->dups, r->npids ? cpus : "-", r->npids ? rss : "-", cpu, loop99, commit);
    fflush (stdout);
    return missing || r->gaps || r->dups ? 1 : 0;
}
