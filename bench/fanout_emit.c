/*  fanout_emit.c - the event source of the fan-out benchmark's corral mode
    (bench/fanout_load.mjs --target corral): a synthetic agent worker that
    emits timestamped text events at a steady rate into the real
    corral-session -> corral-store path.

    What it does, in order:
      1. connects to corral-session's worker API as a worker (READY,
         heartbeats every 500 ms) and to its client API as a client;
      2. creates --sessions sessions for --tenant (session.new) and prompts
         each once (session.prompt); the session service hands every turn to
         this worker (TURN), and the worker holds them all open;
      3. prints one `session <id>` line per session and `ready <n>`, then
         waits for a line `go` on stdin (--start go, what fanout_load.mjs
         does once its clients are attached), or starts at once (--start now);
      4. for --duration seconds sends agent_message_chunk events (worker
         EVENT), round robin over the turns, --rate per second in total,
         paced every --tick-us.  Each event's text starts with
         `t=<microseconds since the Unix epoch, CLOCK_REALTIME, taken just
         before the send> n=<event number> ` and is padded to --bytes;
      5. ends every turn (TURN_DONE end_turn), waits for the prompt replies,
         prints its figures and `done`.

    With --events-endpoint it also subscribes to the session's event PUB and
    measures, for events emitted after --warmup seconds, emit -> publish:
    the share of the end-to-end latency spent in session + store (the
    event is published only after the store acknowledged it).  It checks
    each session's seq on the PUB for gaps and duplicates.  That works
    without a gateway (bench/fanout.sh corral does this when no
    corral-gateway is built).  The emitter's own figures are in the
    `pub:` line; CPU of other processes over the emission with --cpu-pids.
    With --store-endpoint it asks corral-store for its statistics when the
    emission ends and prints the commit latency of its last commits (the
    store keeps 4 096): the state of the disk during the run, which the
    end-to-end tail follows.

    Stdout is line-oriented for fanout_load.mjs: `session ID`, `ready N`,
    `emitting T0_US`, `emitted N in S s (R/s)`, `store: ...`, `pub: ...`,
    `turns: ...`,
    `done`.  Diagnostics go to stderr.

    A benchmark, not a test: it is not registered with ctest.
*/
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "bench_proc.h"
#include "cm_error.h"
#include "cm_id.h"
#include "cm_log.h"
#include "cm_map.h"
#include "cm_time.h"
#include "cm_zmq.h"
#include "proto.h"
#include "proto_rpc.h"

#define MAX_SESSIONS 100000
#define MAX_BYTES    65536   //  text bytes per event
#define NEW_WINDOW   64      //  session.new / prompt requests in flight
#define HIST_US      1000000 //  latency histogram: 1 µs buckets up to 1 s
#define BEAT_MS      500
#define SUB_DRAIN    10000 //  PUB messages read per pass
#define BURST_MAX    4096  //  events sent per pass at most

typedef struct {
    const char *worker_ep, *session_ep, *events_ep, *store_ep, *tenant, *start;
    pid_t cpu_pids[8]; //  --cpu-pids: CPU of these over the emission
    size_t ncpu_pids;
    long sessions, bytes, tick_us;
    double rate, duration, warmup;
} opts_t;

typedef struct {
    cm_uuid_t id;
    cm_uuid_t turn;
    uint64_t from; //  messages the conversation had when the turn began
    bool has_turn, done;
    uint64_t next_seq; //  on the PUB; 0 = not seen yet
} esess_t;

typedef struct {
    opts_t o;
    void *wsock, *sub;
    proto_rpc_t *rpc;
    proto_buf_t buf, ev;
    proto_msg_t msg, wmsg, pmsg;
    esess_t *s;
    size_t ns, nturns, next;
    cm_map_t *by_id; //  session id -> esess_t
    int64_t beat_ms;
    char *pad;
    //  emission
    bool emitting;
    double t0, t_end; //  monotonic seconds
    int64_t t0_us;    //  wall clock at t0
    uint64_t sent, dropped;
    //  the PUB
    uint32_t *hist;
    uint64_t pub_events, pub_measured, pub_gaps, pub_dups, pub_other, lat_max;
    int64_t window_us; //  emitted at or after this wall time: measured
    uint64_t replies_ok, replies_bad, errors;
} emit_t;

static double now_s (void)
{
    return (double)cm_mono_ns () / 1e9;
}

static int64_t wall_us (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

__attribute__ ((format (printf, 2, 3))) static void fail (emit_t *e, const char *fmt, ...)
{
    if (e->errors++ >= 5) return;
    va_list ap;
    va_start (ap, fmt);
    fprintf (stderr, "fanout-emit: ");
    vfprintf (stderr, fmt, ap);
    fputc ('\n', stderr);
    va_end (ap);
}

/* ---------------------------------------------------------------- */
/*  The worker side                                                  */

static void wsend (emit_t *e, proto_type_t type, const void *body)
{
    proto_buf_reset (&e->buf);
    if (proto_encode (&e->buf, type, 0, body) == 0)
        zmq_send (e->wsock, e->buf.data, e->buf.size, 0);
}

static void ready (emit_t *e)
{
    proto_w_ready_t r = {.worker_id = "fanout-emit", .capacity = MAX_SESSIONS};
    wsend (e, PROTO_W_READY, &r);
}

static void on_worker_msg (emit_t *e, const void *data, size_t size)
{
    if (proto_decode (&e->wmsg, data, size)) return;
    if (e->wmsg.type == PROTO_W_TURN) {
        const proto_w_turn_t *t = e->wmsg.body;
        esess_t *s = cm_map_get (e->by_id, t->session.b);
        if (!s || s->has_turn) {
            fail (e, "a turn for a session we did not prompt");
            return;
        }
        s->turn = t->turn;
        s->from = t->messages.count;
        s->has_turn = true;
        e->nturns++;
    } else if (e->wmsg.type == PROTO_W_DISCONNECT)
        ready (e); //  the session service forgot us
    else if (e->wmsg.type == PROTO_W_CANCEL)
        fail (e, "a turn was cancelled");
}

static void worker_pump (emit_t *e)
{
    while (cm_zmq_readable (e->wsock)) {
        zmq_msg_t m;
        zmq_msg_init (&m);
        if (zmq_msg_recv (&m, e->wsock, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close (&m);
            break;
        }
        on_worker_msg (e, zmq_msg_data (&m), zmq_msg_size (&m));
        zmq_msg_close (&m);
    }
    int64_t now = cm_mono_ms ();
    if (now - e->beat_ms >= BEAT_MS) {
        e->beat_ms = now;
        proto_w_heartbeat_t hb = {.active = e->nturns};
        wsend (e, PROTO_W_HEARTBEAT, &hb);
    }
}

//  One event for session s: encoded fresh, since its text carries the time.
static int emit_one (emit_t *e, esess_t *s)
{
    char text[MAX_BYTES + 64];
    int n =
        snprintf (text, sizeof text, "t=%" PRId64 " n=%" PRIu64 " ", wall_us (), e->sent);
    if (n < e->o.bytes) {
        memcpy (text + n, e->pad, (size_t)(e->o.bytes - n));
        text[e->o.bytes] = '\0';
    }
    proto_ev_text_t ev = {.session = s->id, .turn = s->turn, .text = text};
    proto_buf_reset (&e->ev);
    proto_buf_reset (&e->buf);
    if (proto_encode (&e->ev, PROTO_EV_AGENT_MESSAGE, 0, &ev)) return -1;
    proto_w_event_t w = {.turn = s->turn,
                         .event = {(const uint8_t *)e->ev.data, e->ev.size}};
    if (proto_encode (&e->buf, PROTO_W_EVENT, 0, &w)) return -1;
    //  Never block: a full pipe to the session is reported, not hidden.
    if (zmq_send (e->wsock, e->buf.data, e->buf.size, ZMQ_DONTWAIT) < 0) return -1;
    return 0;
}

//  Send what the rate allows by now, round robin over the turns.
static void emit_pump (emit_t *e)
{
    double now = now_s ();
    if (now >= e->t_end) {
        e->emitting = false;
        return;
    }
    double allowed = e->o.rate * (now - e->t0) - (double)(e->sent + e->dropped);
    for (int k = 0; allowed >= 1 && k < BURST_MAX; k++, allowed--) {
        esess_t *s = &e->s[e->next];
        e->next = (e->next + 1) % e->ns;
        if (emit_one (e, s) == 0)
            e->sent++;
        else
            e->dropped++;
    }
    //  No catching up in a burst after a stall: that would not be a steady
    //  rate.  What was not sent then is counted as lost offered load.
    if (allowed > e->o.rate / 100) e->dropped += (uint64_t)allowed;
}

static void end_turns (emit_t *e)
{
    const char *msgs[2] = {"{\"role\":\"user\",\"content\":[{\"type\":\"text\","
                           "\"text\":\"go\"}]}",
                           "{\"role\":\"assistant\",\"content\":[{\"type\":\"text\","
                           "\"text\":\"done\"}]}"};
    for (size_t i = 0; i < e->ns; i++) {
        esess_t *s = &e->s[i];
        if (!s->has_turn || s->done) continue;
        proto_w_turn_done_t d = {.turn = s->turn,
                                 .stop_reason = "end_turn",
                                 .from = s->from,
                                 .messages = {msgs, 2}};
        wsend (e, PROTO_W_TURN_DONE, &d);
        s->done = true;
    }
}

/* ---------------------------------------------------------------- */
/*  The PUB                                                          */

static void on_pub_event (emit_t *e, const void *data, size_t size)
{
    if (proto_decode (&e->pmsg, data, size) || !e->pmsg.desc ||
        e->pmsg.desc->family != PROTO_FAMILY_EVENT) {
        e->pub_other++;
        return;
    }
    //  Every event record starts with session, seq (PROTO_EVENT_HEAD).
    const proto_rec_desc_t *r = e->pmsg.desc->body;
    cm_uuid_t id;
    uint64_t seq;
    memcpy (&id, (char *)e->pmsg.body + r->fields[0].offset, sizeof id);
    memcpy (&seq, (char *)e->pmsg.body + r->fields[1].offset, sizeof seq);
    esess_t *s = cm_map_get (e->by_id, id.b);
    if (!s) {
        e->pub_other++;
        return;
    }
    if (s->next_seq && seq > s->next_seq)
        e->pub_gaps += seq - s->next_seq;
    else if (s->next_seq && seq < s->next_seq) {
        e->pub_dups++;
        return;
    }
    s->next_seq = seq + 1;
    if (e->pmsg.type != PROTO_EV_AGENT_MESSAGE) return;
    const proto_ev_text_t *t = e->pmsg.body;
    if (!t->text || strncmp (t->text, "t=", 2) != 0) return;
    int64_t emitted = strtoll (t->text + 2, NULL, 10);
    e->pub_events++;
    if (emitted < e->window_us) return;
    int64_t lat = wall_us () - emitted;
    if (lat < 0) lat = 0;
    e->hist[lat < HIST_US ? lat : HIST_US]++;
    if ((uint64_t)lat > e->lat_max) e->lat_max = (uint64_t)lat;
    e->pub_measured++;
}

static void sub_pump (emit_t *e)
{
    if (!e->sub) return;
    for (int i = 0; i < SUB_DRAIN; i++) {
        zmq_msg_t topic, body;
        int frames = cm_zmq_recv_topic (e->sub, &topic, &body);
        if (frames == 2) on_pub_event (e, zmq_msg_data (&body), zmq_msg_size (&body));
        zmq_msg_close (&topic);
        zmq_msg_close (&body);
        if (frames == 0) return;
    }
}

static double hist_pct (const emit_t *e, double p)
{
    if (!e->pub_measured) return -1;
    uint64_t want = (uint64_t)((double)e->pub_measured * p / 100.0), seen = 0;
    for (size_t k = 0; k <= HIST_US; k++) {
        seen += e->hist[k];
        if (seen > want) return (double)k;
    }
    return HIST_US;
}

/* ---------------------------------------------------------------- */
/*  The client side: sessions and prompts                            */

static void drain_replies (emit_t *e)
{
    while (proto_rpc_recv (e->rpc, &e->msg, 0) != CM_E_TIMEOUT) {
        const proto_prompt_reply_t *r = proto_body (&e->msg, prompt_reply);
        if (r && strcmp (r->stop_reason, "end_turn") == 0)
            e->replies_ok++;
        else {
            e->replies_bad++;
            const proto_error_t *er = proto_body (&e->msg, error);
            fail (e, "a prompt ended badly: %s",
                  er  ? er->message
                  : r ? r->stop_reason
                      : "unexpected reply");
        }
    }
}

static int create_sessions (emit_t *e)
{
    size_t sent = 0, done = 0;
    int64_t deadline = cm_mono_ms () + 60000;
    //  The session service answers `unavailable` until its startup scan is
    //  done: resend those.
    while (done < e->ns && cm_mono_ms () < deadline) {
        while (sent < e->ns && sent - done < NEW_WINDOW) {
            char cwd[64];
            snprintf (cwd, sizeof cwd, "f%zu", sent);
            proto_session_new_t req = {.tenant = e->o.tenant,
                                       .cwd = cwd,
                                       .backend = "openai",
                                       .model = "fake",
                                       .mode = "auto"};
            uint64_t corr;
            if (proto_rpc_send (e->rpc, PROTO_SESSION_NEW, &req, 5000, &corr)) break;
            sent++;
        }
        worker_pump (e);
        int rc = proto_rpc_recv (e->rpc, &e->msg, 100);
        if (rc == CM_E_TIMEOUT) continue;
        if (e->msg.type == PROTO_ERROR) {
            const proto_error_t *er = proto_body (&e->msg, error);
            if (er && er->code == CM_E_UNAVAILABLE) {
                sent--;
                usleep (20000);
                continue;
            }
            fail (e, "session.new refused: %s", er ? er->message : "?");
            return -1;
        }
        const proto_session_reply_t *r = proto_body (&e->msg, session_reply);
        if (!r || !r->session) {
            fail (e, "bad session.new reply");
            return -1;
        }
        esess_t *s = &e->s[done++];
        s->id = r->session->id;
        cm_map_put (e->by_id, s->id.b, s);
    }
    return done == e->ns ? 0 : -1;
}

//  Prompt every session; each turn comes to us as TURN and stays open.
static int start_turns (emit_t *e)
{
    char idem[96];
    for (size_t i = 0; i < e->ns; i++) {
        snprintf (idem, sizeof idem, "fanout-%d-%" PRId64 "-%zu", (int)getpid (),
                  cm_time_ms (), i);
        proto_session_prompt_t req = {.tenant = e->o.tenant,
                                      .id = e->s[i].id,
                                      .idem = idem,
                                      .prompt = "[{\"type\":\"text\",\"text\":\"go\"}]"};
        uint64_t corr;
        if (proto_rpc_send (e->rpc, PROTO_SESSION_PROMPT, &req, 600000, &corr)) {
            fail (e, "session.prompt not sent");
            return -1;
        }
        if (i % NEW_WINDOW == 0) worker_pump (e);
    }
    int64_t deadline = cm_mono_ms () + 30000;
    while (e->nturns < e->ns && cm_mono_ms () < deadline) {
        zmq_pollitem_t it = {e->wsock, 0, ZMQ_POLLIN, 0};
        zmq_poll (&it, 1, 50);
        worker_pump (e);
        sub_pump (e);
        drain_replies (e); //  an early reply is an error (busy, refused)
    }
    if (e->nturns < e->ns) {
        fail (e, "only %zu of %zu turns reached the worker", e->nturns, e->ns);
        return -1;
    }
    return 0;
}

/* ---------------------------------------------------------------- */
/*  The run                                                          */

//  Wait for `go` on stdin; keep heartbeating meanwhile.  -1 if stdin ends.
static int wait_go (emit_t *e)
{
    char line[64];
    size_t n = 0;
    for (;;) {
        zmq_pollitem_t it[] = {{e->wsock, 0, ZMQ_POLLIN, 0}, {NULL, 0, ZMQ_POLLIN, 0}};
        it[1].fd = 0;
        zmq_poll (it, 2, 100);
        worker_pump (e);
        sub_pump (e);
        if (!(it[1].revents & ZMQ_POLLIN)) continue;
        ssize_t r = read (0, line + n, sizeof line - 1 - n);
        if (r <= 0) return -1;
        n += (size_t)r;
        line[n] = '\0';
        if (strstr (line, "go")) return 0;
        if (n == sizeof line - 1) n = 0;
    }
}

//  Sleep until the next tick, but wake at once when the PUB or the worker
//  socket has something: their ZMQ_FDs under ppoll (µs timeout; zmq_poll's
//  is in ms), so the PUB latency is not inflated by the pacing.  ZMQ_FD
//  only signals changes; every pass drains, so nothing waits past a tick.
static void wait_tick (emit_t *e, const struct timespec *tick)
{
    struct pollfd p[2];
    nfds_t n = 0;
    void *socks[2] = {e->sub, e->wsock};
    for (int i = 0; i < 2; i++) {
        int fd;
        size_t len = sizeof fd;
        if (socks[i] && zmq_getsockopt (socks[i], ZMQ_FD, &fd, &len) == 0)
            p[n++] = (struct pollfd){.fd = fd, .events = POLLIN};
    }
    ppoll (p, n, tick, NULL);
}

//  corral-store's commit latency over its last commits (its ring holds
//  4 096): one `store:` line.
static void store_line (emit_t *e)
{
    proto_rpc_t *rpc = proto_rpc_new (e->o.store_ep);
    const proto_store_stats_t *st = NULL;
    if (rpc && proto_rpc_call (rpc, PROTO_STORE_STATS, NULL, &e->msg, 2000) == 0)
        st = proto_body (&e->msg, store_stats);
    if (st)
        printf ("store: %" PRIu64 " commits; the last %" PRIu64 ": commit p50 %" PRIu64
                " us, p99 %" PRIu64 " us\n",
                st->commits, st->commits < 4096 ? st->commits : 4096, st->commit_p50_us,
                st->commit_p99_us);
    else
        printf ("store: no statistics (store.stats failed)\n");
    proto_rpc_destroy (&rpc);
}

static void run (emit_t *e)
{
    struct timespec tick = {0, e->o.tick_us * 1000};
    e->emitting = true;
    e->t0 = now_s ();
    e->t_end = e->t0 + e->o.duration;
    e->t0_us = wall_us ();
    e->window_us = e->t0_us + (int64_t)(e->o.warmup * 1e6);
    printf ("emitting %" PRId64 "\n", e->t0_us);
    fflush (stdout);
    double cpu0 = bench_self_cpu_s (), pcpu0[8];
    for (size_t i = 0; i < e->o.ncpu_pids; i++)
        pcpu0[i] = bench_proc_cpu_s (e->o.cpu_pids[i]);
    while (e->emitting) {
        emit_pump (e);
        worker_pump (e);
        sub_pump (e);
        drain_replies (e);
        wait_tick (e, &tick);
    }
    double secs = now_s () - e->t0, cpu = bench_self_cpu_s () - cpu0;
    printf ("emitted %" PRIu64 " in %.2f s (%.0f/s; offered %.0f/s, not sent %" PRIu64
            "); emitter CPU %.0f%%\n",
            e->sent, secs, (double)e->sent / secs, e->o.rate, e->dropped,
            100 * cpu / secs);
    if (e->o.ncpu_pids) {
        printf ("cpu:");
        for (size_t i = 0; i < e->o.ncpu_pids; i++)
            printf (" pid %d %.0f%% (RSS %.1f MiB)", (int)e->o.cpu_pids[i],
                    100 * (bench_proc_cpu_s (e->o.cpu_pids[i]) - pcpu0[i]) / secs,
                    bench_proc_status_kib (e->o.cpu_pids[i], "VmRSS:") / 1024.0);
        printf ("\n");
    }
    if (e->o.store_ep) store_line (e);
    fflush (stdout);
    //  The PUB gets what is still in the spine; then end the turns.
    double until = now_s () + 1;
    while (now_s () < until) {
        worker_pump (e);
        sub_pump (e);
        usleep (1000);
    }
    end_turns (e);
    until = now_s () + 15;
    while (e->replies_ok + e->replies_bad < e->ns && now_s () < until) {
        zmq_pollitem_t it = {proto_rpc_socket (e->rpc), 0, ZMQ_POLLIN, 0};
        zmq_poll (&it, 1, 50);
        drain_replies (e);
        worker_pump (e);
        sub_pump (e);
    }
    if (e->sub) {
        double p50 = hist_pct (e, 50), p95 = hist_pct (e, 95), p99 = hist_pct (e, 99);
        printf ("pub: %" PRIu64 " text events seen, %" PRIu64
                " measured (emitted after %.1f s); emit -> publish us p50 %.0f p95 %.0f "
                "p99 %.0f max %" PRIu64 "; gaps %" PRIu64 ", dups %" PRIu64
                ", missing %" PRId64 "\n",
                e->pub_events, e->pub_measured, e->o.warmup, p50, p95, p99, e->lat_max,
                e->pub_gaps, e->pub_dups, (int64_t)e->sent - (int64_t)e->pub_events);
    }
    printf ("turns: %" PRIu64 " of %zu ended end_turn, %" PRIu64 " otherwise\n",
            e->replies_ok, e->ns, e->replies_bad);
    fflush (stdout);
}

static void usage (FILE *f)
{
    fprintf (
        f, "Usage: corral-fanout-emit [OPTIONS]\n"
           "A synthetic worker emitting timestamped events into corral-session.\n\n"
           "  --worker-endpoint EP   session's worker API (required)\n"
           "  --session-endpoint EP  session's client API (required)\n"
           "  --events-endpoint EP   session's event PUB: measure emit -> publish\n"
           "  --store-endpoint EP    corral-store: print its commit latency at the end\n"
           "  --tenant T             owner of the sessions (default bench)\n"
           "  --sessions S           sessions, one open turn each (default 100)\n"
           "  --rate R               events/s in total (default 20000)\n"
           "  --duration D           seconds of emission (default 10)\n"
           "  --warmup W             seconds not measured on the PUB (default 2)\n"
           "  --bytes B              text bytes per event (default 64)\n"
           "  --tick-us U            pacing interval (default 200)\n"
           "  --start go|now         wait for 'go' on stdin, or start at once "
           "(default go)\n"
           "  --cpu-pids P,P,...     print these processes' CPU over the emission\n");
}

static int parse_opts (int argc, char **argv, opts_t *o)
{
    static const struct option longs[] = {{"worker-endpoint", required_argument, 0, 'w'},
                                          {"session-endpoint", required_argument, 0, 'c'},
                                          {"events-endpoint", required_argument, 0, 'e'},
                                          {"store-endpoint", required_argument, 0, 'D'},
                                          {"tenant", required_argument, 0, 'T'},
                                          {"sessions", required_argument, 0, 'S'},
                                          {"rate", required_argument, 0, 'r'},
                                          {"duration", required_argument, 0, 'd'},
                                          {"warmup", required_argument, 0, 'W'},
                                          {"bytes", required_argument, 0, 'b'},
                                          {"tick-us", required_argument, 0, 'k'},
                                          {"start", required_argument, 0, 's'},
                                          {"cpu-pids", required_argument, 0, 'p'},
                                          {"help", no_argument, 0, 'h'},
                                          {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long (argc, argv, "h", longs, NULL)) != -1) {
        switch (c) {
        case 'w':
            o->worker_ep = optarg;
            break;
        case 'c':
            o->session_ep = optarg;
            break;
        case 'e':
            o->events_ep = optarg;
            break;
        case 'D':
            o->store_ep = optarg;
            break;
        case 'T':
            o->tenant = optarg;
            break;
        case 'S':
            o->sessions = atol (optarg);
            break;
        case 'r':
            o->rate = atof (optarg);
            break;
        case 'd':
            o->duration = atof (optarg);
            break;
        case 'W':
            o->warmup = atof (optarg);
            break;
        case 'b':
            o->bytes = atol (optarg);
            break;
        case 'k':
            o->tick_us = atol (optarg);
            break;
        case 's':
            o->start = optarg;
            break;
        case 'p':
            for (char *t = optarg; *t && o->ncpu_pids < 8;) {
                o->cpu_pids[o->ncpu_pids++] = (pid_t)strtol (t, &t, 10);
                if (*t == ',')
                    t++;
                else if (*t)
                    return -1;
            }
            break;
        case 'h':
            usage (stdout);
            exit (0);
        default:
            usage (stderr);
            return -1;
        }
    }
    bool ok = optind == argc && o->worker_ep && o->session_ep && o->sessions >= 1 &&
              o->sessions <= MAX_SESSIONS && o->rate > 0 && o->duration > 0 &&
              o->warmup >= 0 && o->bytes >= 0 && o->bytes <= MAX_BYTES &&
              o->tick_us >= 10 && o->tick_us < 1000000 &&
              (!strcmp (o->start, "go") || !strcmp (o->start, "now"));
    if (!ok) {
        fprintf (stderr, "fanout-emit: bad arguments\n");
        usage (stderr);
        return -1;
    }
    return 0;
}

int main (int argc, char **argv)
{
    static emit_t e = {.o = {.tenant = "bench",
                             .start = "go",
                             .sessions = 100,
                             .bytes = 64,
                             .tick_us = 200,
                             .rate = 20000,
                             .duration = 10,
                             .warmup = 2}};
    if (parse_opts (argc, argv, &e.o)) return 2;
    cm_log_init ("fanout-emit", CM_LOG_WARN);
    signal (SIGPIPE, SIG_IGN);
    e.ns = (size_t)e.o.sessions;
    e.s = calloc (e.ns, sizeof *e.s);
    e.hist = calloc (HIST_US + 1, sizeof *e.hist);
    e.pad = malloc ((size_t)e.o.bytes + 1);
    e.by_id = cm_map_new (16);
    if (!e.s || !e.hist || !e.pad || !e.by_id) return 1;
    memset (e.pad, 'x', (size_t)e.o.bytes);
    proto_msg_init (&e.msg);
    proto_msg_init (&e.wmsg);
    proto_msg_init (&e.pmsg);
    int rc = 1;
    e.wsock = cm_zmq_socket (ZMQ_DEALER, 0);
    e.rpc = proto_rpc_new (e.o.session_ep);
    if (!e.wsock || !e.rpc || cm_zmq_connect (e.wsock, e.o.worker_ep)) {
        fprintf (stderr, "fanout-emit: cannot open the sockets\n");
        goto done;
    }
    if (e.o.events_ep) {
        int hwm = 0, rcvbuf = 4 << 20;
        e.sub = cm_zmq_socket (ZMQ_SUB, 0);
        if (!e.sub) goto done;
        zmq_setsockopt (e.sub, ZMQ_RCVHWM, &hwm, sizeof hwm);
        zmq_setsockopt (e.sub, ZMQ_RCVBUF, &rcvbuf, sizeof rcvbuf);
        if (cm_zmq_connect (e.sub, e.o.events_ep) ||
            zmq_setsockopt (e.sub, ZMQ_SUBSCRIBE, "s/", 2))
            goto done;
    }
    ready (&e);
    e.beat_ms = cm_mono_ms ();
    if (create_sessions (&e) || start_turns (&e)) goto done;
    char id[64];
    for (size_t i = 0; i < e.ns; i++)
        printf ("session %s\n", cm_uuid_fmt (&e.s[i].id, id));
    printf ("ready %zu\n", e.ns);
    fflush (stdout);
    if (!strcmp (e.o.start, "go") && wait_go (&e)) {
        fprintf (stderr, "fanout-emit: stdin closed before 'go'\n");
        end_turns (&e);
        goto done;
    }
    run (&e);
    rc = e.errors || e.replies_ok != e.ns || e.pub_gaps ? 1 : 0;
done:
    printf ("done\n");
    fflush (stdout);
    proto_rpc_destroy (&e.rpc);
    cm_zmq_close (&e.wsock);
    cm_zmq_close (&e.sub);
    cm_zmq_term ();
    proto_msg_fini (&e.msg);
    proto_msg_fini (&e.wmsg);
    proto_msg_fini (&e.pmsg);
    proto_buf_fini (&e.buf);
    proto_buf_fini (&e.ev);
    cm_map_destroy (&e.by_id);
    free (e.s);
    free (e.hist);
    free (e.pad);
    return rc;
}
