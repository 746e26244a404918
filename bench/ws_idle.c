/*  ws_idle.c - hold many idle WebSocket connections open against one server
    and measure what each one costs the server (DESIGN §14: one gateway holds
    >= 50 000 idle connections at <= 10 KiB RSS each).

    It opens -n connections to --url: plain TCP, then the HTTP/1.1 upgrade
    with a random Sec-WebSocket-Key, and checks the 101 answer and its
    Sec-WebSocket-Accept.  Sockets are non-blocking on one epoll per process,
    with at most --inflight handshakes under way at once.  Connection j
    leaves from source address j mod --sources (127.0.0.1, 127.0.0.2, ...:
    the whole 127/8 is loopback on Linux), bound before connect with
    IP_BIND_ADDRESS_NO_PORT, so the kernel picks the port per 4-tuple and
    each source address gets the whole ephemeral range (~28 000 ports;
    keep under ~25 000 connections per source).

    Once every connection is settled (open or failed) it holds them idle for
    --hold seconds.  Pings from the server are answered with pongs (masked,
    as RFC 6455 requires of a client), a close frame is answered and
    counted, other frames are counted and dropped.  With --pid it reads the
    server's VmRSS (bench_proc.h) before the first connection, after all
    are open (plus a settle second) and at the end of the hold, and prints
    KiB per open connection.  RSS is user memory only: the kernel's socket
    buffers are not in it (the "kernel TCP" line shows them system-wide).

    Descriptors: it raises its own RLIMIT_NOFILE soft limit to the hard
    limit, and when one process cannot hold -n sockets under that limit it
    forks enough children to share them (--procs forces a number).  The
    server needs the same: run it from a shell with `ulimit -n` above the
    connection count (for 50 000: `ulimit -n 65536`, which needs a hard
    limit that high; raising the hard limit needs root / CAP_SYS_RESOURCE).

    Extra request headers: --header 'Name: value' (repeatable), and
    --key KEY or $CORRAL_BENCH_KEY adds `Authorization: Bearer KEY`.

    A benchmark, not a test: it is not registered with ctest.
*/
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/evp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench_proc.h"

#define MAX_CONNS   1000000
#define MAX_SOURCES 64
#define MAX_PROCS   64
#define MAX_HEADERS 16
#define HEADER_MAX  1024 //  bytes of one extra header line
#define REQ_MAX     8192 //  bytes of the upgrade request
#define RESP_MAX    4096 //  bytes of the 101 answer we accept
#define STASH_MAX   256  //  a partial frame head or control frame
#define READ_BUF    65536
#define EVENTS_MAX  1024
#define HS_HIST_MS  10000 //  handshake time histogram, 1 ms buckets
#define FD_RESERVE  64    //  descriptors a child keeps for itself
#define WS_GUID     "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

//  What went wrong with a connection, while opening or while held.
enum {
    F_SOCKET,       //  socket() failed (EMFILE, ENFILE, ENOBUFS)
    F_BIND,         //  bind() to the source address failed
    F_CONNECT,      //  connect() failed; by errno in connect_errno
    F_CLOSED_EARLY, //  EOF or reset before a complete answer
    F_TIMEOUT,      //  no complete answer within --timeout
    F_STATUS,       //  an answer other than 101; by code in status
    F_ACCEPT,       //  101 with a wrong or missing Sec-WebSocket-Accept
    F_BAD_RESPONSE, //  not HTTP, or headers beyond RESP_MAX
    H_CLOSE_FRAME,  //  held: the server sent a close frame
    H_EOF,          //  held: the server closed without a close frame
    H_RESET,        //  held: read error (ECONNRESET, ...)
    H_PROTOCOL,     //  held: a masked or malformed frame from the server
    F_KINDS
};
static const char *s_kind_names[F_KINDS] = {
    [F_SOCKET] = "socket() failed",
    [F_BIND] = "bind() failed",
    [F_CONNECT] = "connect() failed",
    [F_CLOSED_EARLY] = "closed before 101",
    [F_TIMEOUT] = "handshake timeout",
    [F_STATUS] = "HTTP status not 101",
    [F_ACCEPT] = "bad Sec-WebSocket-Accept",
    [F_BAD_RESPONSE] = "malformed HTTP answer",
    [H_CLOSE_FRAME] = "held: server close frame",
    [H_EOF] = "held: server EOF",
    [H_RESET] = "held: read error",
    [H_PROTOCOL] = "held: protocol error",
};

enum { C_NEW, C_CONNECTING, C_HANDSHAKE, C_OPEN, C_DONE };

//  One connection, kept small: at 50 000 the client's own memory matters
//  on a shared 2-core box.  Buffers exist only while needed.
typedef struct {
    int fd;
    uint8_t state;
    uint8_t nstash;
    uint16_t nresp;
    char *resp;        //  the answer so far (C_HANDSHAKE only)
    uint8_t *stash;    //  a partial frame (C_OPEN, rarely)
    uint64_t skip;     //  payload bytes of a data frame still to drop
    uint64_t start_ms; //  connect() time, for the handshake timeout
    char key[25];      //  Sec-WebSocket-Key, base64 of 16 random bytes
} conn_t;

//  What a child tells the parent: once when all its connections settled
//  (phase 1), once after the hold (phase 2).
typedef struct {
    uint32_t phase;
    uint64_t attempted, established, open_now, pings, pongs, data_frames, pong_drops;
    uint64_t fail[F_KINDS];
    uint32_t connect_errno[256];
    uint32_t early_errno[256]; //  F_CLOSED_EARLY by read errno; [0] = EOF
    uint32_t status[600];
    uint32_t hs_ms[HS_HIST_MS + 1]; //  last bucket: >= HS_HIST_MS
    uint64_t hs_max_ms;
    double settle_s; //  phase 1: seconds from start to settled
} report_t;

typedef struct {
    //  options
    char host[300], path[1024], port[16];
    long n, sources, procs, inflight, pid;
    double hold, timeout;
    const char *source_base;
    char *headers[MAX_HEADERS];
    size_t nheaders;
    //  derived
    struct sockaddr_in dst;
    struct in_addr src[MAX_SOURCES];
    char req_head[REQ_MAX]; //  the request up to the key header value
    size_t nreq_head;
    char req_tail[REQ_MAX]; //  the rest
    size_t nreq_tail;
} opts_t;

//  One child process: its share of the connections.
typedef struct {
    const opts_t *o;
    int index, nprocs, epfd, report_fd, control_fd;
    conn_t *c;
    size_t nc;       //  connections of this child
    size_t next;     //  next one to open
    size_t inflight; //  connecting or handshaking
    long max_inflight;
    report_t r;
    uint8_t rbuf[READ_BUF];
    uint64_t t0_ms;
} child_t;

static uint64_t mono_ms (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static double mono_s (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---------------------------------------------------------------- */
/*  Options                                                          */

static int parse_url (opts_t *o, const char *url)
{
    if (strncmp (url, "ws://", 5) != 0) {
        fprintf (stderr, "ws-idle: only ws:// URLs (no TLS): %s\n", url);
        return -1;
    }
    const char *p = url + 5, *slash = strchr (p, '/');
    size_t hostlen = slash ? (size_t)(slash - p) : strlen (p);
    char hostport[300];
    if (hostlen == 0 || hostlen >= sizeof hostport) return -1;
    memcpy (hostport, p, hostlen);
    hostport[hostlen] = '\0';
    snprintf (o->path, sizeof o->path, "%s", slash ? slash : "/");
    char *colon = strrchr (hostport, ':');
    if (colon) {
        *colon = '\0';
        snprintf (o->port, sizeof o->port, "%s", colon + 1);
    } else
        snprintf (o->port, sizeof o->port, "80");
    snprintf (o->host, sizeof o->host, "%s", hostport);
    struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *ai;
    if (getaddrinfo (o->host, o->port, &hints, &ai) != 0) {
        fprintf (stderr, "ws-idle: cannot resolve %s:%s (IPv4 only)\n", o->host, o->port);
        return -1;
    }
    memcpy (&o->dst, ai->ai_addr, sizeof o->dst);
    freeaddrinfo (ai);
    return 0;
}

//  The request is the same for every connection but for the key: keep it
//  as the part before the key and the part after.
static int build_request (opts_t *o)
{
    const char *port = strcmp (o->port, "80") ? o->port : NULL;
    int n = snprintf (o->req_head, sizeof o->req_head,
                      "GET %s HTTP/1.1\r\nHost: %s%s%s\r\nUpgrade: websocket\r\n"
                      "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                      "Sec-WebSocket-Key: ",
                      o->path, o->host, port ? ":" : "", port ? port : "");
    if (n < 0 || (size_t)n >= sizeof o->req_head) return -1;
    o->nreq_head = (size_t)n;
    size_t t = 0;
    t += (size_t)snprintf (o->req_tail, sizeof o->req_tail, "\r\n");
    for (size_t i = 0; i < o->nheaders; i++) {
        n = snprintf (o->req_tail + t, sizeof o->req_tail - t, "%s\r\n", o->headers[i]);
        if (n < 0 || (size_t)n >= sizeof o->req_tail - t) return -1;
        t += (size_t)n;
    }
    n = snprintf (o->req_tail + t, sizeof o->req_tail - t, "\r\n");
    if (n < 0 || (size_t)n >= sizeof o->req_tail - t) return -1;
    o->nreq_tail = t + (size_t)n;
    return 0;
}

static void usage (FILE *f)
{
    fprintf (f,
             "Usage: corral-ws-idle [OPTIONS]\n"
             "Open many idle WebSocket connections and measure the server's RSS per "
             "connection.\n\n"
             "  --url URL          ws://host:port/path (default "
             "ws://127.0.0.1:8080/acp)\n"
             "  -n N               connections (default 50000)\n"
             "  --sources K        loopback source addresses, from --source-base up "
             "(default 4)\n"
             "  --source-base IP   first source address (default 127.0.0.1)\n"
             "  --pid PID          the server's pid: report its RSS and descriptors\n"
             "  --hold S           seconds to hold them idle once open (default 10)\n"
             "  --inflight M       handshakes under way at once (default 256)\n"
             "  --timeout S        seconds a handshake may take (default 10)\n"
             "  --procs P          processes sharing the connections (default: as "
             "few as RLIMIT_NOFILE allows)\n"
             "  --header 'N: V'    an extra request header (repeatable, at most %d)\n"
             "  --key KEY          adds 'Authorization: Bearer KEY' (default "
             "$CORRAL_BENCH_KEY)\n\n"
             "The server needs `ulimit -n` above N too.  Exit status: 0 when every "
             "connection opened and stayed open, 1 otherwise, 2 on bad arguments.\n",
             MAX_HEADERS);
}

static int parse_opts (int argc, char **argv, opts_t *o)
{
    static const struct option longs[] = {{"url", required_argument, 0, 'u'},
                                          {"sources", required_argument, 0, 's'},
                                          {"source-base", required_argument, 0, 'B'},
                                          {"pid", required_argument, 0, 'p'},
                                          {"hold", required_argument, 0, 'H'},
                                          {"inflight", required_argument, 0, 'i'},
                                          {"timeout", required_argument, 0, 'T'},
                                          {"procs", required_argument, 0, 'P'},
                                          {"header", required_argument, 0, 'h'},
                                          {"key", required_argument, 0, 'k'},
                                          {"help", no_argument, 0, '?' + 256},
                                          {0, 0, 0, 0}};
    const char *url = "ws://127.0.0.1:8080/acp", *key = getenv ("CORRAL_BENCH_KEY");
    int c;
    while ((c = getopt_long (argc, argv, "n:", longs, NULL)) != -1) {
        switch (c) {
        case 'u':
            url = optarg;
            break;
        case 'n':
            o->n = atol (optarg);
            break;
        case 's':
            o->sources = atol (optarg);
            break;
        case 'B':
            o->source_base = optarg;
            break;
        case 'p':
            o->pid = atol (optarg);
            break;
        case 'H':
            o->hold = atof (optarg);
            break;
        case 'i':
            o->inflight = atol (optarg);
            break;
        case 'T':
            o->timeout = atof (optarg);
            break;
        case 'P':
            o->procs = atol (optarg);
            break;
        case 'h':
            if (o->nheaders == MAX_HEADERS || strlen (optarg) >= HEADER_MAX ||
                !strchr (optarg, ':') || strpbrk (optarg, "\r\n")) {
                fprintf (stderr, "ws-idle: bad or too many --header\n");
                return -1;
            }
            o->headers[o->nheaders++] = optarg;
            break;
        case 'k':
            key = optarg;
            break;
        case '?' + 256:
            usage (stdout);
            exit (0);
        default:
            usage (stderr);
            return -1;
        }
    }
    if (key && *key) {
        if (o->nheaders == MAX_HEADERS || strlen (key) > HEADER_MAX - 32 ||
            strpbrk (key, "\r\n")) {
            fprintf (stderr, "ws-idle: bad --key\n");
            return -1;
        }
        static char auth[HEADER_MAX];
        snprintf (auth, sizeof auth, "Authorization: Bearer %s", key);
        o->headers[o->nheaders++] = auth;
    }
    if (optind != argc || o->n < 1 || o->n > MAX_CONNS || o->sources < 1 ||
        o->sources > MAX_SOURCES || o->hold < 0 || o->inflight < 1 || o->timeout <= 0 ||
        o->procs < 0 || o->procs > MAX_PROCS || o->pid < 0) {
        fprintf (stderr, "ws-idle: bad arguments\n");
        usage (stderr);
        return -1;
    }
    if (parse_url (o, url) || build_request (o)) return -1;
    struct in_addr base;
    if (inet_pton (AF_INET, o->source_base, &base) != 1) {
        fprintf (stderr, "ws-idle: bad --source-base %s\n", o->source_base);
        return -1;
    }
    for (long i = 0; i < o->sources; i++)
        o->src[i].s_addr = htonl (ntohl (base.s_addr) + (uint32_t)i);
    return 0;
}

/* ---------------------------------------------------------------- */
/*  One connection                                                   */

static void b64 (const uint8_t *in, size_t n, char *out)
{
    EVP_EncodeBlock ((unsigned char *)out, in, (int)n);
}

static void expected_accept (const char *key, char out[29])
{
    char buf[64];
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    int n = snprintf (buf, sizeof buf, "%s%s", key, WS_GUID);
    EVP_Digest (buf, (size_t)n, md, &mdlen, EVP_sha1 (), NULL);
    b64 (md, mdlen, out);
}

static void conn_free_buffers (conn_t *c)
{
    free (c->resp);
    c->resp = NULL;
    free (c->stash);
    c->stash = NULL;
    c->nresp = c->nstash = 0;
}

static void conn_close (child_t *ch, conn_t *c)
{
    if (c->state == C_CONNECTING || c->state == C_HANDSHAKE) ch->inflight--;
    if (c->state == C_OPEN) ch->r.open_now--;
    if (c->fd >= 0) close (c->fd); //  also leaves the epoll set
    c->fd = -1;
    c->state = C_DONE;
    conn_free_buffers (c);
}

static void conn_fail (child_t *ch, conn_t *c, int kind)
{
    ch->r.fail[kind]++;
    conn_close (ch, c);
}

//  Open connection i of this child (global index from the child's share).
static void conn_start (child_t *ch, size_t i)
{
    const opts_t *o = ch->o;
    conn_t *c = &ch->c[i];
    size_t global = (size_t)ch->index + i * (size_t)ch->nprocs;
    ch->r.attempted++;
    c->fd = socket (AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) {
        ch->r.connect_errno[errno & 0xff]++;
        c->state = C_DONE;
        ch->r.fail[F_SOCKET]++;
        return;
    }
    c->state = C_CONNECTING;
    c->start_ms = mono_ms ();
    ch->inflight++;
    int one = 1;
    setsockopt (c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (o->sources > 1 || strcmp (o->source_base, "127.0.0.1") != 0) {
        struct sockaddr_in src = {.sin_family = AF_INET,
                                  .sin_addr = o->src[global % (size_t)o->sources]};
        setsockopt (c->fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
        if (bind (c->fd, (struct sockaddr *)&src, sizeof src) != 0) {
            ch->r.connect_errno[errno & 0xff]++;
            conn_fail (ch, c, F_BIND);
            return;
        }
    }
    if (connect (c->fd, (struct sockaddr *)&o->dst, sizeof o->dst) != 0 &&
        errno != EINPROGRESS) {
        ch->r.connect_errno[errno & 0xff]++;
        conn_fail (ch, c, F_CONNECT);
        return;
    }
    struct epoll_event ev = {.events = EPOLLOUT | EPOLLIN, .data.u64 = i};
    if (epoll_ctl (ch->epfd, EPOLL_CTL_ADD, c->fd, &ev) != 0) {
        ch->r.connect_errno[errno & 0xff]++;
        conn_fail (ch, c, F_SOCKET);
    }
}

//  The TCP connection is up: send the upgrade request.
static void conn_send_request (child_t *ch, size_t i)
{
    const opts_t *o = ch->o;
    conn_t *c = &ch->c[i];
    int err = 0;
    socklen_t len = sizeof err;
    getsockopt (c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err) {
        ch->r.connect_errno[err & 0xff]++;
        conn_fail (ch, c, F_CONNECT);
        return;
    }
    uint8_t raw[16];
    if (getrandom (raw, sizeof raw, 0) != (ssize_t)sizeof raw)
        for (size_t k = 0; k < sizeof raw; k++) raw[k] = (uint8_t)rand ();
    b64 (raw, sizeof raw, c->key);
    char req[REQ_MAX * 2 + 32];
    memcpy (req, o->req_head, o->nreq_head);
    memcpy (req + o->nreq_head, c->key, 24);
    memcpy (req + o->nreq_head + 24, o->req_tail, o->nreq_tail);
    size_t n = o->nreq_head + 24 + o->nreq_tail;
    //  A fresh socket's send buffer takes a few hundred bytes at once; a
    //  short write here would mean something is badly wrong.
    if (write (c->fd, req, n) != (ssize_t)n) {
        ch->r.connect_errno[errno & 0xff]++;
        conn_fail (ch, c, F_CLOSED_EARLY);
        return;
    }
    c->state = C_HANDSHAKE;
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = i};
    epoll_ctl (ch->epfd, EPOLL_CTL_MOD, c->fd, &ev);
}

//  A small frame from us (pong, close): masked, as a client must.
static bool send_control (conn_t *c, uint8_t opcode, const uint8_t *payload, size_t n)
{
    uint8_t frame[2 + 4 + 125], mask[4];
    if (n > 125) n = 125;
    uint32_t r = (uint32_t)rand ();
    memcpy (mask, &r, 4);
    frame[0] = 0x80 | opcode;
    frame[1] = 0x80 | (uint8_t)n;
    memcpy (frame + 2, mask, 4);
    for (size_t k = 0; k < n; k++) frame[6 + k] = payload[k] ^ mask[k & 3];
    return write (c->fd, frame, 6 + n) == (ssize_t)(6 + n);
}

//  Frames from the server, after the handshake.  Data frames are counted
//  and dropped (their payload is skipped, never buffered); control frames
//  (<= 125 bytes) are answered.  Returns false when the connection ended.
static bool conn_frames (child_t *ch, conn_t *c, const uint8_t *p, size_t n)
{
    while (n > 0) {
        if (c->skip) {
            size_t k = c->skip < n ? (size_t)c->skip : n;
            c->skip -= k;
            p += k, n -= k;
            continue;
        }
        //  A frame head (and a control frame's payload) may be split across
        //  reads: gather it in the stash.
        const uint8_t *f = p;
        size_t avail = n;
        if (c->nstash) {
            size_t room = (size_t)STASH_MAX - c->nstash, take = room < n ? room : n;
            memcpy (c->stash + c->nstash, p, take);
            f = c->stash;
            avail = c->nstash + take;
        }
        if (avail < 2) goto partial;
        uint8_t opcode = f[0] & 0x0f;
        bool masked = f[1] & 0x80;
        uint64_t plen = f[1] & 0x7f;
        size_t head = 2;
        if (masked) {
            ch->r.fail[H_PROTOCOL]++;
            conn_close (ch, c);
            return false;
        }
        if (plen == 126) {
            if (avail < 4) goto partial;
            plen = (uint64_t)f[2] << 8 | f[3];
            head = 4;
        } else if (plen == 127) {
            if (avail < 10) goto partial;
            plen = 0;
            for (int k = 0; k < 8; k++) plen = plen << 8 | f[2 + k];
            head = 10;
        }
        bool control = opcode & 0x08;
        if (control && plen > 125) {
            ch->r.fail[H_PROTOCOL]++;
            conn_close (ch, c);
            return false;
        }
        if (control && avail < head + plen) goto partial;
        //  Consumed from p: what this frame used beyond the stash.
        size_t used_total = control ? head + (size_t)plen : head;
        size_t from_p = used_total - c->nstash;
        c->nstash = 0;
        if (opcode == 0x9) { //  ping
            ch->r.pings++;
            if (send_control (c, 0xA, f + head, (size_t)plen))
                ch->r.pongs++;
            else
                ch->r.pong_drops++;
        } else if (opcode == 0x8) { //  close: answer with its status, then go
            send_control (c, 0x8, f + head, plen >= 2 ? 2 : 0);
            ch->r.fail[H_CLOSE_FRAME]++;
            conn_close (ch, c);
            return false;
        } else if (!control) {
            if (opcode != 0x0) ch->r.data_frames++;
            c->skip = plen;
        }
        p += from_p, n -= from_p;
        continue;
    partial:
        if (!c->stash && !(c->stash = malloc (STASH_MAX))) {
            conn_close (ch, c);
            return false;
        }
        if (c->nstash == 0) memcpy (c->stash, p, n);
        c->nstash = (uint8_t)avail;
        return true;
    }
    return true;
}

static void hs_record (child_t *ch, conn_t *c)
{
    uint64_t ms = mono_ms () - c->start_ms;
    ch->r.hs_ms[ms < HS_HIST_MS ? ms : HS_HIST_MS]++;
    if (ms > ch->r.hs_max_ms) ch->r.hs_max_ms = ms;
}

//  Bytes of the 101 answer; returns false when the connection ended.
static bool conn_handshake (child_t *ch, conn_t *c, const uint8_t *p, size_t n)
{
    if (!c->resp && !(c->resp = malloc (RESP_MAX + 1))) {
        conn_fail (ch, c, F_BAD_RESPONSE);
        return false;
    }
    size_t room = RESP_MAX - c->nresp, take = n < room ? n : room;
    memcpy (c->resp + c->nresp, p, take);
    c->nresp += (uint16_t)take;
    c->resp[c->nresp] = '\0';
    char *end = strstr (c->resp, "\r\n\r\n");
    if (!end) {
        if (c->nresp == RESP_MAX) {
            conn_fail (ch, c, F_BAD_RESPONSE);
            return false;
        }
        return true;
    }
    int status = 0;
    if (sscanf (c->resp, "HTTP/1.%*1d %3d", &status) != 1 || status < 100 ||
        status > 599) {
        conn_fail (ch, c, F_BAD_RESPONSE);
        return false;
    }
    if (status != 101) {
        ch->r.status[status]++;
        conn_fail (ch, c, F_STATUS);
        return false;
    }
    char want[29];
    expected_accept (c->key, want);
    bool ok = false;
    end[2] = '\0'; //  the header block, each line ending "\r\n"
    for (char *line = strstr (c->resp, "\r\n"); line && *line;
         line = strstr (line, "\r\n")) {
        line += 2;
        if (strncasecmp (line, "sec-websocket-accept:", 21) == 0) {
            char *v = line + 21;
            while (*v == ' ' || *v == '\t') v++;
            ok = strncmp (v, want, 28) == 0;
        }
    }
    if (!ok) {
        conn_fail (ch, c, F_ACCEPT);
        return false;
    }
    //  Open.  What came after the headers is already frames.
    size_t head_len = (size_t)(end + 4 - c->resp);
    size_t extra = c->nresp - head_len;
    uint8_t rest[RESP_MAX];
    memcpy (rest, c->resp + head_len, extra);
    conn_free_buffers (c);
    c->state = C_OPEN;
    ch->inflight--;
    ch->r.established++;
    ch->r.open_now++;
    hs_record (ch, c);
    //  Bytes read past RESP_MAX in this read (take < n) are frames too.
    if (extra && !conn_frames (ch, c, rest, extra)) return false;
    if (take < n) return conn_frames (ch, c, p + take, n - take);
    return true;
}

static void conn_readable (child_t *ch, conn_t *c)
{
    for (;;) {
        ssize_t n = read (c->fd, ch->rbuf, sizeof ch->rbuf);
        if (n > 0) {
            bool alive = c->state == C_HANDSHAKE
                             ? conn_handshake (ch, c, ch->rbuf, (size_t)n)
                             : conn_frames (ch, c, ch->rbuf, (size_t)n);
            if (!alive) return;
            if ((size_t)n < sizeof ch->rbuf) return;
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
        if (c->state == C_HANDSHAKE) {
            ch->r.early_errno[n == 0 ? 0 : errno & 0xff]++;
            conn_fail (ch, c, F_CLOSED_EARLY);
        } else
            conn_fail (ch, c, n == 0 ? H_EOF : H_RESET);
        return;
    }
}

/* ---------------------------------------------------------------- */
/*  A child: its share of connections on one epoll                   */

static void child_timeouts (child_t *ch)
{
    uint64_t now = mono_ms (), limit = (uint64_t)(ch->o->timeout * 1000);
    for (size_t i = 0; i < ch->next; i++) {
        conn_t *c = &ch->c[i];
        if ((c->state == C_CONNECTING || c->state == C_HANDSHAKE) &&
            now - c->start_ms > limit)
            conn_fail (ch, c, F_TIMEOUT);
    }
}

static void child_report (child_t *ch, uint32_t phase)
{
    ch->r.phase = phase;
    const char *p = (const char *)&ch->r;
    size_t left = sizeof ch->r;
    while (left) {
        ssize_t n = write (ch->report_fd, p, left);
        if (n <= 0) {
            if (n < 0 && errno == EINTR) continue;
            return;
        }
        p += n, left -= (size_t)n;
    }
}

static int child_run (child_t *ch)
{
    ch->epfd = epoll_create1 (EPOLL_CLOEXEC);
    if (ch->epfd < 0) return 1;
    struct epoll_event cev = {.events = EPOLLIN, .data.u64 = UINT64_MAX};
    epoll_ctl (ch->epfd, EPOLL_CTL_ADD, ch->control_fd, &cev);
    ch->t0_ms = mono_ms ();
    bool settled = false, stop = false;
    uint64_t last_scan = 0;
    struct epoll_event evs[EVENTS_MAX];
    while (!stop) {
        while (ch->next < ch->nc && (long)ch->inflight < ch->max_inflight)
            conn_start (ch, ch->next++);
        if (!settled && ch->next == ch->nc && ch->inflight == 0) {
            settled = true;
            ch->r.settle_s = (double)(mono_ms () - ch->t0_ms) / 1000;
            child_report (ch, 1);
        }
        int n = epoll_wait (ch->epfd, evs, EVENTS_MAX, settled ? 1000 : 50);
        for (int k = 0; k < n; k++) {
            if (evs[k].data.u64 == UINT64_MAX) { //  the parent says stop
                stop = true;
                continue;
            }
            conn_t *c = &ch->c[evs[k].data.u64];
            if (c->state == C_CONNECTING) {
                if (evs[k].events & (EPOLLOUT | EPOLLERR | EPOLLHUP))
                    conn_send_request (ch, evs[k].data.u64);
            } else if (c->state == C_HANDSHAKE || c->state == C_OPEN)
                conn_readable (ch, c);
        }
        uint64_t now = mono_ms ();
        if (!settled && now - last_scan >= 100) {
            last_scan = now;
            child_timeouts (ch);
        }
    }
    child_report (ch, 2);
    return 0;
}

/* ---------------------------------------------------------------- */
/*  The parent: fork, wait, measure, print                           */

static void merge (report_t *into, const report_t *r)
{
    into->attempted += r->attempted;
    into->established += r->established;
    into->open_now += r->open_now;
    into->pings += r->pings;
    into->pongs += r->pongs;
    into->pong_drops += r->pong_drops;
    into->data_frames += r->data_frames;
    for (int k = 0; k < F_KINDS; k++) into->fail[k] += r->fail[k];
    for (int k = 0; k < 256; k++) into->connect_errno[k] += r->connect_errno[k];
    for (int k = 0; k < 256; k++) into->early_errno[k] += r->early_errno[k];
    for (int k = 0; k < 600; k++) into->status[k] += r->status[k];
    for (int k = 0; k <= HS_HIST_MS; k++) into->hs_ms[k] += r->hs_ms[k];
    if (r->hs_max_ms > into->hs_max_ms) into->hs_max_ms = r->hs_max_ms;
    if (r->settle_s > into->settle_s) into->settle_s = r->settle_s;
}

static double hist_pct (const uint32_t *h, double p)
{
    uint64_t total = 0, seen = 0;
    for (int k = 0; k <= HS_HIST_MS; k++) total += h[k];
    if (!total) return -1;
    uint64_t want = (uint64_t)((double)total * p / 100.0);
    for (int k = 0; k <= HS_HIST_MS; k++) {
        seen += h[k];
        if (seen > want) return k;
    }
    return HS_HIST_MS;
}

//  Read one report from each child still there.
static int collect (int *fds, int nprocs, report_t *sum, uint32_t phase)
{
    memset (sum, 0, sizeof *sum);
    int got = 0;
    for (int i = 0; i < nprocs; i++) {
        if (fds[i] < 0) continue;
        report_t r;
        char *p = (char *)&r;
        size_t left = sizeof r;
        while (left) {
            ssize_t n = read (fds[i], p, left);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) break;
            p += n, left -= (size_t)n;
        }
        if (left || r.phase != phase) {
            fprintf (stderr, "ws-idle: child %d ended without its report\n", i);
            close (fds[i]);
            fds[i] = -1;
            continue;
        }
        merge (sum, &r);
        got++;
    }
    return got;
}

static void print_failures (const report_t *r, bool held)
{
    bool any = false;
    for (int k = 0; k < F_KINDS; k++) {
        if (!r->fail[k] || (k >= H_CLOSE_FRAME) != held) continue;
        any = true;
        printf ("    %-26s %" PRIu64, s_kind_names[k], r->fail[k]);
        if (k == F_STATUS) {
            for (int s = 0; s < 600; s++)
                if (r->status[s]) printf ("  [%d: %u]", s, r->status[s]);
        }
        if (k == F_CLOSED_EARLY) {
            for (int e = 0; e < 256; e++)
                if (r->early_errno[e])
                    printf ("  [%s: %u]",
                            e == 0                ? "EOF"
                            : strerrorname_np (e) ? strerrorname_np (e)
                                                  : "?",
                            r->early_errno[e]);
        }
        if (k == F_CONNECT || k == F_SOCKET || k == F_BIND) {
            for (int e = 1; e < 256; e++)
                if (r->connect_errno[e])
                    printf ("  [%s: %u]", strerrorname_np (e) ? strerrorname_np (e) : "?",
                            r->connect_errno[e]);
        }
        putchar ('\n');
    }
    if (!any) printf ("    none\n");
}

//  /proc/net/sockstat "TCP: inuse N orphan N tw N alloc N mem PAGES".
static long tcp_mem_kib (void)
{
    FILE *f = fopen ("/proc/net/sockstat", "r");
    if (!f) return -1;
    char line[256];
    long pages = -1;
    while (fgets (line, sizeof line, f))
        if (strncmp (line, "TCP:", 4) == 0) {
            char *m = strstr (line, " mem ");
            if (m) pages = atol (m + 5);
        }
    fclose (f);
    return pages < 0 ? -1 : pages * (sysconf (_SC_PAGESIZE) / 1024);
}

//  The "Max open files" soft limit of a process; -1 if unknown.
static long proc_nofile (pid_t pid)
{
    char path[64], line[256];
    snprintf (path, sizeof path, "/proc/%d/limits", (int)pid);
    FILE *f = fopen (path, "r");
    if (!f) return -1;
    long v = -1;
    while (fgets (line, sizeof line, f))
        if (strncmp (line, "Max open files", 14) == 0) v = atol (line + 14);
    fclose (f);
    return v;
}

static bool server_alive (pid_t pid)
{
    return pid <= 0 || kill (pid, 0) == 0;
}

int main (int argc, char **argv)
{
    opts_t o = {.n = 50000,
                .sources = 4,
                .source_base = "127.0.0.1",
                .hold = 10,
                .inflight = 256,
                .timeout = 10};
    if (parse_opts (argc, argv, &o)) return 2;
    signal (SIGPIPE, SIG_IGN);
    struct rlimit rl;
    getrlimit (RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;
    setrlimit (RLIMIT_NOFILE, &rl);
    getrlimit (RLIMIT_NOFILE, &rl);
    long per_proc = (long)rl.rlim_cur - FD_RESERVE;
    if (per_proc < 16) {
        fprintf (stderr, "ws-idle: RLIMIT_NOFILE %ld is too low\n", (long)rl.rlim_cur);
        return 2;
    }
    long procs = (o.n + per_proc - 1) / per_proc;
    if (o.procs > procs) procs = o.procs;
    if (procs > MAX_PROCS) {
        fprintf (stderr,
                 "ws-idle: %ld connections need %ld processes at RLIMIT_NOFILE %ld\n",
                 o.n, procs, (long)rl.rlim_cur);
        return 2;
    }
    long per_source = (o.n + o.sources - 1) / o.sources;
    char src_last[INET_ADDRSTRLEN];
    inet_ntop (AF_INET, &o.src[o.sources - 1], src_last, sizeof src_last);
    printf ("ws-idle: %s:%s%s, %ld connections from %ld source address%s (%s-%s, ~%ld "
            "each), %ld process%s (RLIMIT_NOFILE %ld), %ld handshakes in flight, "
            "%zu extra header%s\n",
            o.host, o.port, o.path, o.n, o.sources, o.sources > 1 ? "es" : "",
            o.source_base, src_last, per_source, procs, procs > 1 ? "es" : "",
            (long)rl.rlim_cur, o.inflight, o.nheaders, o.nheaders == 1 ? "" : "s");
    if (per_source > 28000)
        printf ("warning: ~%ld connections per source address is more than the "
                "ephemeral port range holds; use more --sources\n",
                per_source);
    fflush (stdout);

    pid_t server = (pid_t)o.pid;
    long rss0 = -1, rss1 = -1, rss2 = -1, rss_max = -1;
    int fds0 = -1, fds1 = -1;
    if (server > 0) {
        rss0 = bench_proc_status_kib (server, "VmRSS:");
        fds0 = bench_proc_fds (server);
        if (rss0 < 0) {
            fprintf (stderr, "ws-idle: no process %d\n", (int)server);
            return 2;
        }
        long nofile = proc_nofile (server);
        if (nofile >= 0 && nofile < o.n + fds0)
            printf (
                "warning: the server's descriptor limit is %ld and it has %d open: it "
                "cannot hold %ld more connections (raise its `ulimit -n`)\n",
                nofile, fds0, o.n);
    }
    long tcp0 = tcp_mem_kib ();

    int report_fds[MAX_PROCS], control_fds[MAX_PROCS];
    pid_t kids[MAX_PROCS];
    double t0 = mono_s ();
    for (long i = 0; i < procs; i++) {
        int rp[2], cp[2];
        if (pipe2 (rp, O_CLOEXEC) || pipe2 (cp, O_CLOEXEC)) return 1;
        fflush (NULL);
        pid_t pid = fork ();
        if (pid < 0) return 1;
        if (pid == 0) {
            close (rp[0]);
            close (cp[1]);
            for (long k = 0; k < i; k++) {
                close (report_fds[k]);
                close (control_fds[k]);
            }
            static child_t ch;
            ch.o = &o;
            ch.index = (int)i;
            ch.nprocs = (int)procs;
            ch.report_fd = rp[1];
            ch.control_fd = cp[0];
            ch.nc = (size_t)((o.n - i + procs - 1) / procs);
            ch.max_inflight = o.inflight / procs > 0 ? o.inflight / procs : 1;
            ch.c = calloc (ch.nc, sizeof *ch.c);
            srand ((unsigned)(getpid () ^ time (NULL)));
            if (!ch.c) _exit (1);
            for (size_t k = 0; k < ch.nc; k++) ch.c[k].fd = -1;
            _exit (child_run (&ch));
        }
        close (rp[1]);
        close (cp[0]);
        kids[i] = pid;
        report_fds[i] = rp[0];
        control_fds[i] = cp[1];
    }

    //  Phase 1: every child has all its connections open or failed.
    report_t r1, r2;
    collect (report_fds, (int)procs, &r1, 1);
    double settle = mono_s () - t0;
    sleep (1); //  let the server finish what it does after an accept
    if (server > 0) {
        rss1 = rss_max = bench_proc_status_kib (server, "VmRSS:");
        fds1 = bench_proc_fds (server);
    }
    long tcp1 = tcp_mem_kib ();
    printf ("established:  %" PRIu64 " of %ld in %.1f s (%.0f/s); handshake ms "
            "p50/p99/max %.0f/%.0f/%" PRIu64 "\n",
            r1.established, o.n, settle, (double)r1.established / settle,
            hist_pct (r1.hs_ms, 50), hist_pct (r1.hs_ms, 99), r1.hs_max_ms);
    printf ("failed:       %" PRIu64 "\n", r1.attempted - r1.established);
    print_failures (&r1, false);
    if (server > 0 && r1.established > 0)
        printf ("server pid %d: RSS %.1f MiB before, %.1f MiB with %" PRIu64
                " open (+%.1f MiB): %.2f KiB per connection; descriptors %d -> %d\n",
                (int)server, rss0 / 1024.0, rss1 / 1024.0, r1.open_now,
                (rss1 - rss0) / 1024.0, (double)(rss1 - rss0) / (double)r1.open_now, fds0,
                fds1);
    if (tcp0 >= 0 && tcp1 >= 0)
        printf ("kernel TCP:   %.1f MiB -> %.1f MiB of socket buffers, system-wide "
                "(both ends; not in any RSS)\n",
                tcp0 / 1024.0, tcp1 / 1024.0);
    fflush (stdout);

    //  Phase 2: hold, watching the server.
    double hold_end = mono_s () + o.hold;
    bool died = false;
    while (mono_s () < hold_end) {
        usleep (200000);
        if (!server_alive (server)) {
            died = true;
            break;
        }
        long rss = server > 0 ? bench_proc_status_kib (server, "VmRSS:") : -1;
        if (rss > rss_max) rss_max = rss;
    }
    if (server > 0) rss2 = bench_proc_status_kib (server, "VmRSS:");
    for (long i = 0; i < procs; i++) close (control_fds[i]);
    collect (report_fds, (int)procs, &r2, 2);
    for (long i = 0; i < procs; i++) {
        int status;
        waitpid (kids[i], &status, 0);
        close (report_fds[i]);
    }
    printf ("held %.0f s:   %" PRIu64
            " still open at the end; server pings answered %" PRIu64
            " (pongs not sent %" PRIu64 "), data frames %" PRIu64 "\n",
            o.hold, r2.open_now, r2.pongs, r2.pong_drops, r2.data_frames);
    printf ("lost while held:\n");
    print_failures (&r2, true);
    if (server > 0 && !died)
        printf ("server RSS:   %.1f MiB at the end of the hold (peak %.1f MiB): %.2f KiB "
                "per connection still open\n",
                rss2 / 1024.0, rss_max / 1024.0,
                r2.open_now ? (double)(rss2 - rss0) / (double)r2.open_now : 0.0);
    if (died) printf ("server pid %d died during the hold\n", (int)server);
    bool ok = !died && r1.established == (uint64_t)o.n && r2.open_now == (uint64_t)o.n;
    return ok ? 0 : 1;
}
