/*  turns_bench.c - streaming turns through corral-session, corral-store and
    one corral-worker, against the scripted model server.

    What it measures (DESIGN §14: >= 200 000 events/s persisted and
    published through session + store on a 2-core machine, and >= 1 000
    concurrent streaming turns in one worker):

      stream   --sessions N sessions each run turns back to back: a turn is
               one model call whose answer is --chunks text pieces,
               --chunk-delay ms apart (0 = as fast as the server can
               write).  When a session's prompt.reply arrives the bench
               prompts it again at once, so N turns are always running or
               being set up.  Over --duration seconds after a --warmup it
               counts the events received on the events PUB ("s/"): the
               session publishes an event only after the store acknowledged
               it, so each one is persisted and published.  It checks each
               session's seq on the SUB is contiguous (gaps = events lost at
               a HWM) and each turn carries exactly --chunks text events (a
               shortfall = events lost between the worker and the session),
               and takes the CPU of every process (/proc/<pid>/stat) over
               the window: the worker's per 1 000 events is the figure the
               issue asks for.
      hold     --levels L1,L2,...: for each level L, L sessions are prompted
               at once with a long turn (--chunks pieces, --chunk-delay ms
               apart, half of them before and half after a --pause-ms
               pause), so all L turns are open in the one worker at the
               same time.  A level passes when every turn starts, streams
               all its pieces, ends end_turn, no turn goes silent for longer
               than the pause plus --max-gap ms, and no seq gap is seen.
               Reported: the most turns open at once (turn_started seen,
               turn_ended not yet), the time until all had started, turn
               durations, the longest silence, the worker's CPU and RSS.

    The real binaries run on ipc:// endpoints in a fresh temporary
    directory (--dir, so the store's LMDB is on that disk): corral-store
    (--store-sync), corral-session, corral-worker (pointed at the fake with
    --openai-base-url) and corral-fake-model.  They are found in the build
    tree next to this binary unless --build says where the tree is.

    A benchmark, not a test: it is not registered with ctest.
*/
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
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

#define KEY         "sk-bench-0123456789abcdef"
#define TENANT      "bench"
#define MAX_LEVELS  16
#define PIECE_BYTES 8      //  bytes of answer text per chunk
#define SUB_HWM     0      //  unlimited on our side: drops, if any, are the PUB's
#define DRAIN_MAX   100000 //  messages read from the SUB per pass
#define NEW_WINDOW  64     //  session.new requests in flight

enum { P_FAKE, P_STORE, P_SESSION, P_WORKER, NPROCS };
static const char *s_proc_names[NPROCS] = {"fake-model", "store", "session", "worker"};

typedef struct {
    char *build; //  build tree (binaries under it)
    const char *dir;
    const char *mode; //  stream | hold
    const char *sync; //  full | os
    bool synthetic;   //  the bench plays the worker (no corral-worker, no model)
    double rate;      //  synthetic: events/s offered (0 = as fast as accepted)
    long sessions, chunks, chunk_delay, pause_ms, max_gap;
    double warmup, duration;
    long levels[MAX_LEVELS];
    size_t nlevels;
    bool keep, header;
} opts_t;

//  One session as the bench sees it.
typedef struct {
    cm_uuid_t id;
    uint64_t next_seq; //  seq expected next on the SUB
    uint64_t turns;    //  prompts sent
    bool busy;         //  a prompt is outstanding
    bool in_turn;      //  turn_started seen, turn_ended not yet
    bool started;      //  hold: this level's turn started
    uint32_t chunks;   //  text events in the current turn
    uint64_t sent_ns, started_ns, last_ev_ns, max_gap_ns;
} bsess_t;

typedef struct {
    uint64_t events, gaps, dups, turns_ok, turns_failed, short_turns, chunk_events;
    double cpu[NPROCS + 1]; //  + the bench itself
    double t;
} snap_t;

typedef struct {
    opts_t o;
    char tmp[4096];
    char ep_store[4200], ep_client[4200], ep_worker[4200], ep_events[4200];
    char model_url[512];
    pid_t pids[NPROCS];
    proto_rpc_t *rpc;
    void *sub;
    proto_msg_t msg, ev;
    bsess_t *s;
    size_t ns;
    cm_map_t *by_id;   //  session id -> bsess_t
    cm_map_t *by_corr; //  prompt corr -> bsess_t
    bool reprompt;     //  stream mode: prompt again when a turn ends
    //  counters since start
    uint64_t events, gaps, dups, turns_ok, turns_failed, short_turns, chunk_events;
    uint64_t open_turns, max_open, unknown;
    uint64_t *lat_us; //  prompt -> reply of turns that ended in the window
    size_t nlat, cap_lat;
    bool measuring;
    uint64_t errors;
    //  synthetic worker
    void *wsock;
    struct syn_turn *syn;
    size_t nsyn, capsyn, syn_next;
    uint64_t syn_sent;
    double syn_t0;
    int64_t syn_beat_ms;
    proto_buf_t wbuf;
    proto_msg_t wmsg;
} bench_t;

//  A turn the synthetic worker runs: its W_EVENT message, encoded once.
typedef struct syn_turn {
    cm_uuid_t turn;
    uint64_t from; //  messages the conversation had
    long left;     //  text events still to send
    proto_buf_t event;
} syn_turn_t;

/* ---------------------------------------------------------------- */
/*  Small helpers                                                    */

static double now_s (void)
{
    return (double)cm_mono_ns () / 1e9;
}

static int cmp_u64 (const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static double pct (uint64_t *v, size_t n, double p)
{
    if (n == 0) return -1;
    qsort (v, n, sizeof *v, cmp_u64);
    size_t i = (size_t)((double)n * p / 100.0);
    return (double)v[i < n ? i : n - 1];
}

static void lat_add (bench_t *b, uint64_t us)
{
    if (b->nlat == b->cap_lat) {
        size_t cap = b->cap_lat ? b->cap_lat * 2 : 4096;
        uint64_t *grown = realloc (b->lat_us, cap * sizeof *grown);
        if (!grown) return;
        b->lat_us = grown;
        b->cap_lat = cap;
    }
    b->lat_us[b->nlat++] = us;
}

//  Count a problem; print the first few.
__attribute__ ((format (printf, 2, 3))) static void fail (bench_t *b, const char *fmt,
                                                          ...)
{
    if (b->errors++ >= 5) return;
    va_list ap;
    va_start (ap, fmt);
    fprintf (stderr, "turns-bench: ");
    vfprintf (stderr, fmt, ap);
    fputc ('\n', stderr);
    va_end (ap);
}

/* ---------------------------------------------------------------- */
/*  The processes                                                    */

//  fork + exec argv with stderr (and stdout unless out_fd) to log.
static pid_t spawn (bench_t *b, const char *name, char *const argv[], int *out_fd)
{
    char log[4400];
    snprintf (log, sizeof log, "%s/%s.log", b->tmp, name);
    int pipefd[2] = {-1, -1};
    if (out_fd && pipe (pipefd)) return -1;
    fflush (NULL);
    pid_t pid = fork ();
    if (pid < 0) return -1;
    if (pid == 0) {
        prctl (PR_SET_PDEATHSIG, SIGTERM); //  never outlive the bench
        int fd = open (log, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (fd >= 0) {
            dup2 (fd, 2);
            if (!out_fd) dup2 (fd, 1);
            close (fd);
        }
        if (out_fd) {
            dup2 (pipefd[1], 1);
            close (pipefd[0]);
            close (pipefd[1]);
        }
        //  Keep CORRAL_* settings of the caller's shell out of the services.
        for (char **e = __environ; e && *e;) {
            if (strncmp (*e, "CORRAL_", 7) == 0) {
                char var[256];
                size_t n = strcspn (*e, "=");
                snprintf (var, sizeof var, "%.*s", (int)n, *e);
                unsetenv (var);
            } else
                e++;
        }
        execv (argv[0], argv);
        fprintf (stderr, "exec %s: %s\n", argv[0], strerror (errno));
        _exit (127);
    }
    if (out_fd) {
        close (pipefd[1]);
        *out_fd = pipefd[0];
    }
    return pid;
}

static int bin_path (const bench_t *b, const char *rel, char *out, size_t len)
{
    snprintf (out, len, "%s/%s", b->o.build, rel);
    if (access (out, X_OK) != 0) {
        fprintf (stderr, "turns-bench: %s not found; build it or pass --build\n", out);
        return -1;
    }
    return 0;
}

static int write_script (bench_t *b, char *path, size_t len)
{
    const opts_t *o = &b->o;
    snprintf (path, len, "%s/script.json", b->tmp);
    FILE *f = fopen (path, "w");
    if (!f) return -1;
    bool hold = strcmp (o->mode, "hold") == 0;
    long parts = hold ? 2 : 1;
    fprintf (f,
             "{\"rules\": [{\"name\": \"bench\", \"match\": \"*\", "
             "\"chunk_delay_ms\": %ld, \"responses\": [[",
             o->chunk_delay);
    for (long p = 0; p < parts; p++) {
        long c = hold ? (p == 0 ? o->chunks / 2 : o->chunks - o->chunks / 2) : o->chunks;
        if (p > 0) fprintf (f, ", {\"pause_ms\": %ld}, ", o->pause_ms);
        fputs ("{\"text\": \"", f);
        //  c pieces of PIECE_BYTES ASCII bytes each: the server splits
        //  evenly, so every piece is one non-empty delta.
        for (long i = 0; i < c; i++) fprintf (f, "w%06ld ", i % 1000000);
        fprintf (f, "\", \"chunks\": %ld}", c);
    }
    fputs ("]]}]}\n", f);
    return fclose (f) ? -1 : 0;
}

static int stack_start (bench_t *b)
{
    const opts_t *o = &b->o;
    snprintf (b->tmp, sizeof b->tmp, "%s/corral-bench-turns-XXXXXX", o->dir);
    if (!mkdtemp (b->tmp)) {
        fprintf (stderr, "turns-bench: cannot create a directory in %s: %s\n", o->dir,
                 strerror (errno));
        return -1;
    }
    snprintf (b->ep_store, sizeof b->ep_store, "ipc://%s/store.sock", b->tmp);
    snprintf (b->ep_client, sizeof b->ep_client, "ipc://%s/client.sock", b->tmp);
    snprintf (b->ep_worker, sizeof b->ep_worker, "ipc://%s/worker.sock", b->tmp);
    snprintf (b->ep_events, sizeof b->ep_events, "ipc://%s/events.sock", b->tmp);
    if (strlen (b->ep_client) - 6 >= 100) {
        fprintf (stderr, "turns-bench: %s is too long for ipc:// paths; use --dir\n",
                 b->tmp);
        return -1;
    }
    char fake[4400], store[4400], session[4400], worker[4400], script[4400];
    if (bin_path (b, "tests/fakes/corral-fake-model", fake, sizeof fake) ||
        bin_path (b, "services/store/corral-store", store, sizeof store) ||
        bin_path (b, "services/session/corral-session", session, sizeof session) ||
        bin_path (b, "services/agent-worker/corral-worker", worker, sizeof worker) ||
        write_script (b, script, sizeof script))
        return -1;
    char sdata[4400], wdata[4400], roots[4400], url[600];
    snprintf (sdata, sizeof sdata, "%s/store", b->tmp);
    snprintf (wdata, sizeof wdata, "%s/session", b->tmp);
    snprintf (roots, sizeof roots, "%s/ws", b->tmp);
    mkdir (sdata, 0700);
    mkdir (wdata, 0700);
    mkdir (roots, 0700);

    //  The model server first: its stdout names its port.
    int out = -1;
    if (o->synthetic) goto services;
    char *fargv[] = {fake, "--fake-script", script, "--fake-api-key",
                     KEY,  "--log-level",   "warn", NULL};
    b->pids[P_FAKE] = spawn (b, "fake-model", fargv, &out);
    if (b->pids[P_FAKE] < 0) return -1;
    FILE *f = fdopen (out, "r");
    char line[512] = "";
    if (!f || !fgets (line, sizeof line, f) || strncmp (line, "listening on ", 13)) {
        fprintf (stderr, "turns-bench: the model server did not start (see %s)\n",
                 b->tmp);
        return -1;
    }
    fclose (f);
    line[strcspn (line, "\r\n")] = '\0';
    snprintf (b->model_url, sizeof b->model_url, "%s", line + 13);
    snprintf (url, sizeof url, "%s/v1", b->model_url);

services:;
    char *sargv[] = {store,       "--data-dir",   sdata,           "--store-endpoint",
                     b->ep_store, "--store-sync", (char *)o->sync, "--store-map-size",
                     "4G",        "--log-level",  "warn",          NULL};
    char *eargv[] = {session,      "--data-dir",
                     wdata,        "--workspace-roots",
                     roots,        "--store-endpoint",
                     b->ep_store,  "--session-endpoint",
                     b->ep_client, "--worker-endpoint",
                     b->ep_worker, "--events-endpoint",
                     b->ep_events, "--max-turns",
                     "1000000",    "--max-sessions",
                     "1000000",    "--max-sessions-per-tenant",
                     "1000000",    "--log-level",
                     "warn",       NULL};
    char *wargv[] = {worker,       "--worker-endpoint",
                     b->ep_worker, "--worker-id",
                     "bench-w1",   "--worker-capacity",
                     "100000",     "--openai-base-url",
                     url,          "--openai-api-key",
                     KEY,          "--log-level",
                     "warn",       NULL};
    b->pids[P_STORE] = spawn (b, "store", sargv, NULL);
    b->pids[P_SESSION] = spawn (b, "session", eargv, NULL);
    if (!o->synthetic) b->pids[P_WORKER] = spawn (b, "worker", wargv, NULL);
    if (b->pids[P_STORE] < 0 || b->pids[P_SESSION] < 0 || b->pids[P_WORKER] < 0)
        return -1;
    if (o->synthetic) {
        b->wsock = cm_zmq_socket (ZMQ_DEALER, 0);
        proto_w_ready_t ready = {.worker_id = "bench-synthetic", .capacity = 1000000};
        if (!b->wsock || cm_zmq_connect (b->wsock, b->ep_worker) ||
            proto_encode (&b->wbuf, PROTO_W_READY, 0, &ready))
            return -1;
        zmq_pollitem_t item = {b->wsock, 0, ZMQ_POLLOUT, 0};
        if (zmq_poll (&item, 1, 5000) <= 0 ||
            zmq_send (b->wsock, b->wbuf.data, b->wbuf.size, 0) < 0) {
            fprintf (stderr,
                     "turns-bench: the session's worker socket does not answer\n");
            return -1;
        }
        b->syn_beat_ms = cm_mono_ms ();
    }

    b->rpc = proto_rpc_new (b->ep_client);
    b->sub = cm_zmq_socket (ZMQ_SUB, 0);
    if (!b->rpc || !b->sub) {
        fprintf (stderr, "turns-bench: cannot open the client sockets\n");
        return -1;
    }
    int hwm = SUB_HWM, rcvbuf = 4 << 20;
    zmq_setsockopt (b->sub, ZMQ_RCVHWM, &hwm, sizeof hwm);
    zmq_setsockopt (b->sub, ZMQ_RCVBUF, &rcvbuf, sizeof rcvbuf);
    if (cm_zmq_connect (b->sub, b->ep_events) ||
        zmq_setsockopt (b->sub, ZMQ_SUBSCRIBE, "s/", 2))
        return -1;
    return 0;
}

static void stack_stop (bench_t *b)
{
    proto_rpc_destroy (&b->rpc);
    cm_zmq_close (&b->sub);
    cm_zmq_close (&b->wsock);
    //  Worker first (it ends its turns), then session, store, model.
    int order[NPROCS] = {P_WORKER, P_SESSION, P_STORE, P_FAKE};
    for (int i = 0; i < NPROCS; i++) {
        pid_t pid = b->pids[order[i]];
        if (pid <= 0) continue;
        kill (pid, SIGTERM);
        int status = 0;
        for (int w = 0; w < 100 && waitpid (pid, &status, WNOHANG) == 0; w++)
            usleep (50000);
        if (waitpid (pid, &status, WNOHANG) == 0) {
            kill (pid, SIGKILL);
            waitpid (pid, &status, 0);
            fail (b, "%s did not stop within 5 s after SIGTERM", s_proc_names[order[i]]);
        } else if (!WIFEXITED (status) || WEXITSTATUS (status) != 0)
            fail (b, "%s exited abnormally", s_proc_names[order[i]]);
        b->pids[order[i]] = 0;
    }
    if (!b->tmp[0]) return;
    if (b->o.keep || b->errors)
        printf ("# logs kept in %s\n", b->tmp);
    else
        bench_rmtree (b->tmp);
}

static bool stack_alive (bench_t *b)
{
    for (int i = 0; i < NPROCS; i++) {
        int status;
        if (b->pids[i] > 0 && waitpid (b->pids[i], &status, WNOHANG) == b->pids[i]) {
            b->pids[i] = 0;
            fail (b, "%s died", s_proc_names[i]);
            return false;
        }
    }
    return true;
}

/* ---------------------------------------------------------------- */
/*  Events on the SUB                                                */

//  Fast path for the head of an event message: [1, type, corr, {"session":
//  bin16, "seq": uint, ...}] as proto_encode writes it (fields in catalogue
//  order).  Returns false when the bytes are not in that shape; the caller
//  then decodes with proto_decode.
static bool rd_uint (const uint8_t **p, const uint8_t *end, uint64_t *v)
{
    if (*p >= end) return false;
    uint8_t c = *(*p)++;
    size_t n = 0;
    if (c <= 0x7f) {
        *v = c;
        return true;
    }
    if (c == 0xcc)
        n = 1;
    else if (c == 0xcd)
        n = 2;
    else if (c == 0xce)
        n = 4;
    else if (c == 0xcf)
        n = 8;
    else
        return false;
    if ((size_t)(end - *p) < n) return false;
    uint64_t x = 0;
    for (size_t i = 0; i < n; i++) x = x << 8 | (*p)[i];
    *p += n;
    *v = x;
    return true;
}

static bool rd_key (const uint8_t **p, const uint8_t *end, const char *key)
{
    size_t n = strlen (key);
    if ((size_t)(end - *p) < n + 1 || **p != (0xa0 | n) || memcmp (*p + 1, key, n))
        return false;
    *p += n + 1;
    return true;
}

static bool fast_head (const uint8_t *p, size_t size, uint32_t *type, cm_uuid_t *id,
                       uint64_t *seq)
{
    const uint8_t *end = p + size;
    uint64_t v, t;
    if (size < 8 || *p++ != 0x94 || !rd_uint (&p, end, &v) || v != PROTO_VERSION ||
        !rd_uint (&p, end, &t) || !rd_uint (&p, end, &v) || p >= end)
        return false;
    if ((*p & 0xf0) == 0x80)
        p++;
    else if (*p == 0xde && end - p > 3)
        p += 3;
    else
        return false;
    if (!rd_key (&p, end, "session") || end - p < 18 || p[0] != 0xc4 || p[1] != 16)
        return false;
    memcpy (id->b, p + 2, 16);
    p += 18;
    if (!rd_key (&p, end, "seq") || !rd_uint (&p, end, seq)) return false;
    *type = (uint32_t)t;
    return true;
}

static void on_event (bench_t *b, const uint8_t *data, size_t size)
{
    uint32_t type;
    cm_uuid_t id;
    uint64_t seq;
    if (!fast_head (data, size, &type, &id, &seq)) {
        if (proto_decode (&b->ev, data, size) || !b->ev.desc ||
            b->ev.desc->family != PROTO_FAMILY_EVENT) {
            b->unknown++;
            return;
        }
        //  Every event record starts with session, seq (PROTO_EVENT_HEAD).
        const proto_rec_desc_t *r = b->ev.desc->body;
        memcpy (&id, (char *)b->ev.body + r->fields[0].offset, sizeof id);
        memcpy (&seq, (char *)b->ev.body + r->fields[1].offset, sizeof seq);
        type = b->ev.type;
    }
    bsess_t *s = cm_map_get (b->by_id, id.b);
    if (!s) {
        b->unknown++; //  a session from before the bench's table (none expected)
        return;
    }
    b->events++;
    if (seq > s->next_seq)
        b->gaps += seq - s->next_seq;
    else if (seq < s->next_seq) {
        b->dups++;
        return;
    }
    s->next_seq = seq + 1;
    uint64_t t = cm_mono_ns ();
    switch (type) {
    case PROTO_EV_TURN_STARTED:
        s->in_turn = s->started = true;
        s->chunks = 0;
        s->started_ns = s->last_ev_ns = t;
        s->max_gap_ns = 0;
        if (++b->open_turns > b->max_open) b->max_open = b->open_turns;
        break;
    case PROTO_EV_AGENT_MESSAGE:
        b->chunk_events++;
        s->chunks++;
        if (s->in_turn && t - s->last_ev_ns > s->max_gap_ns)
            s->max_gap_ns = t - s->last_ev_ns;
        s->last_ev_ns = t;
        break;
    case PROTO_EV_TURN_ENDED:
        if (s->in_turn) {
            s->in_turn = false;
            if (b->open_turns) b->open_turns--;
        }
        if (s->chunks != (uint32_t)b->o.chunks) b->short_turns++;
        break;
    default:
        break;
    }
}

static void drain_sub (bench_t *b)
{
    for (int i = 0; i < DRAIN_MAX; i++) {
        zmq_msg_t topic, body;
        int frames = cm_zmq_recv_topic (b->sub, &topic, &body);
        if (frames == 2)
            on_event (b, zmq_msg_data (&body), zmq_msg_size (&body));
        else if (frames)
            b->unknown++;
        zmq_msg_close (&topic);
        zmq_msg_close (&body);
        if (frames == 0) return;
    }
}

/* ---------------------------------------------------------------- */
/*  The synthetic worker (--worker synthetic)                        */

//  The session gave us a turn: encode its W_EVENT once (an
//  agent_message_chunk of PIECE_BYTES; the session sets session, seq, ts).
static void syn_on_turn (bench_t *b, const proto_w_turn_t *req)
{
    if (b->nsyn == b->capsyn) {
        size_t cap = b->capsyn ? b->capsyn * 2 : 1024;
        syn_turn_t *grown = realloc (b->syn, cap * sizeof *grown);
        if (!grown) return;
        b->syn = grown;
        b->capsyn = cap;
    }
    syn_turn_t *t = &b->syn[b->nsyn++];
    *t =
        (syn_turn_t){.turn = req->turn, .from = req->messages.count, .left = b->o.chunks};
    proto_buf_t ev = {0};
    proto_ev_text_t text = {
        .session = req->session, .turn = req->turn, .text = "w000001 "};
    proto_encode (&ev, PROTO_EV_AGENT_MESSAGE, 0, &text);
    proto_w_event_t msg = {.turn = req->turn,
                           .event = {(const uint8_t *)ev.data, ev.size}};
    proto_encode (&t->event, PROTO_W_EVENT, 0, &msg);
    proto_buf_fini (&ev);
}

static void syn_send (bench_t *b, proto_type_t type, const void *body)
{
    proto_buf_reset (&b->wbuf);
    if (proto_encode (&b->wbuf, type, 0, body) == 0)
        zmq_send (b->wsock, b->wbuf.data, b->wbuf.size, 0);
}

static void syn_done (bench_t *b, size_t i)
{
    syn_turn_t *t = &b->syn[i];
    const char *msgs[2] = {"{\"role\":\"user\",\"content\":[{\"type\":\"text\","
                           "\"text\":\"go\"}]}",
                           "{\"role\":\"assistant\",\"content\":[{\"type\":\"text\","
                           "\"text\":\"done\"}]}"};
    proto_w_turn_done_t done = {.turn = t->turn,
                                .stop_reason = "end_turn",
                                .from = t->from,
                                .messages = {msgs, 2}};
    syn_send (b, PROTO_W_TURN_DONE, &done);
    proto_buf_fini (&t->event);
    b->syn[i] = b->syn[--b->nsyn];
}

//  Read what the session sent; send events round robin over the running
//  turns, as many as the rate allows and the socket takes.
static void syn_pump (bench_t *b)
{
    while (cm_zmq_readable (b->wsock)) {
        zmq_msg_t m;
        zmq_msg_init (&m);
        if (zmq_msg_recv (&m, b->wsock, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close (&m);
            break;
        }
        if (proto_decode (&b->wmsg, zmq_msg_data (&m), zmq_msg_size (&m)) == 0) {
            if (b->wmsg.type == PROTO_W_TURN)
                syn_on_turn (b, b->wmsg.body);
            else if (b->wmsg.type == PROTO_W_DISCONNECT) {
                proto_w_ready_t ready = {.worker_id = "bench-synthetic",
                                         .capacity = 1000000};
                syn_send (b, PROTO_W_READY, &ready);
            }
        }
        zmq_msg_close (&m);
    }
    int64_t now = cm_mono_ms ();
    if (now - b->syn_beat_ms >= 500) {
        b->syn_beat_ms = now;
        proto_w_heartbeat_t hb = {.active = b->nsyn};
        syn_send (b, PROTO_W_HEARTBEAT, &hb);
    }
    if (b->syn_t0 == 0) b->syn_t0 = now_s ();
    double allowed =
        b->o.rate > 0 ? b->o.rate * (now_s () - b->syn_t0) - (double)b->syn_sent : 1e9;
    for (int budget = 4096; budget > 0 && allowed >= 1 && b->nsyn; budget--, allowed--) {
        if (b->syn_next >= b->nsyn) b->syn_next = 0;
        syn_turn_t *t = &b->syn[b->syn_next];
        if (zmq_send (b->wsock, t->event.data, t->event.size, ZMQ_DONTWAIT) < 0) break;
        b->syn_sent++;
        if (--t->left == 0)
            syn_done (b, b->syn_next); //  the last turn moves into this slot
        else
            b->syn_next++;
    }
    //  Never bank unused allowance while idle (no burst after a stall).
    if (b->o.rate > 0 && allowed > b->o.rate / 10)
        b->syn_sent = (uint64_t)(b->o.rate * (now_s () - b->syn_t0) - b->o.rate / 10);
}

/* ---------------------------------------------------------------- */
/*  Prompts and replies                                              */

static int prompt (bench_t *b, bsess_t *s)
{
    char idem[64];
    snprintf (idem, sizeof idem, "bench-%" PRIu64, s->turns);
    proto_session_prompt_t req = {.tenant = TENANT,
                                  .id = s->id,
                                  .idem = idem,
                                  .prompt = "[{\"type\":\"text\",\"text\":\"go\"}]"};
    uint64_t corr;
    int rc = proto_rpc_send (b->rpc, PROTO_SESSION_PROMPT, &req, 5000, &corr);
    if (rc) {
        fail (b, "session.prompt not sent: %s", cm_strerror (rc));
        return rc;
    }
    s->turns++;
    s->busy = true;
    s->sent_ns = cm_mono_ns ();
    cm_map_put_u64 (b->by_corr, corr, s);
    return 0;
}

static void on_reply (bench_t *b)
{
    proto_msg_t *m = &b->msg;
    bsess_t *s = m->corr_valid ? cm_map_remove_u64 (b->by_corr, m->corr) : NULL;
    if (!s) {
        fail (b, "a reply nobody asked for");
        return;
    }
    s->busy = false;
    const proto_prompt_reply_t *r = proto_body (m, prompt_reply);
    if (m->type == PROTO_ERROR) {
        b->turns_failed++;
        fail (b, "session.prompt refused: %s", proto_body (m, error)->message);
    } else if (!r || strcmp (r->stop_reason, "end_turn") != 0) {
        b->turns_failed++;
        fail (b, "a turn did not end end_turn: %s",
              r ? (r->message ? r->message : r->stop_reason) : "no prompt.reply");
    } else {
        b->turns_ok++;
        if (b->measuring) lat_add (b, (cm_mono_ns () - s->sent_ns) / 1000);
    }
    if (b->reprompt) prompt (b, s);
}

static void drain_replies (bench_t *b)
{
    while (proto_rpc_recv (b->rpc, &b->msg, 0) != CM_E_TIMEOUT) on_reply (b);
}

//  Serve both sockets for up to ms milliseconds.
static void pump (bench_t *b, int ms)
{
    int64_t end = cm_mono_ms () + ms;
    do {
        zmq_pollitem_t items[] = {{b->sub, 0, ZMQ_POLLIN, 0},
                                  {proto_rpc_socket (b->rpc), 0, ZMQ_POLLIN, 0},
                                  {b->wsock, 0, ZMQ_POLLIN, 0}};
        int64_t left = end - cm_mono_ms ();
        if (b->wsock && b->nsyn) left = 0; //  events to send: do not sleep
        if (zmq_poll (items, b->wsock ? 3 : 2, left > 0 ? (long)left : 0) < 0 &&
            errno != EINTR)
            return;
        if (items[0].revents & ZMQ_POLLIN) drain_sub (b);
        if (items[1].revents & ZMQ_POLLIN) drain_replies (b);
        if (b->wsock) syn_pump (b);
    } while (cm_mono_ms () < end);
}

static int create_sessions (bench_t *b, size_t n)
{
    b->s = calloc (n, sizeof *b->s);
    if (!b->s) return CM_E_NOMEM;
    size_t sent = 0, done = 0;
    int64_t deadline = cm_mono_ms () + 60000;
    //  The session service answers `unavailable` until its startup scan is
    //  done: retry those.
    while (done < n && cm_mono_ms () < deadline) {
        while (sent < n && sent - done < NEW_WINDOW) {
            char cwd[64];
            snprintf (cwd, sizeof cwd, "s%zu", sent);
            proto_session_new_t req = {.tenant = TENANT,
                                       .cwd = cwd,
                                       .backend = "openai",
                                       .model = "fake",
                                       .mode = "auto"};
            uint64_t corr;
            if (proto_rpc_send (b->rpc, PROTO_SESSION_NEW, &req, 5000, &corr)) break;
            sent++;
        }
        int rc = proto_rpc_recv (b->rpc, &b->msg, 5000);
        if (rc == CM_E_TIMEOUT) continue;
        const proto_session_reply_t *r = proto_body (&b->msg, session_reply);
        if (b->msg.type == PROTO_ERROR) {
            const proto_error_t *e = proto_body (&b->msg, error);
            if (e && e->code == CM_E_UNAVAILABLE) {
                sent--; //  resend it
                usleep (20000);
                continue;
            }
            fail (b, "session.new refused: %s", e ? e->message : "?");
            return CM_E_INVALID;
        }
        if (!r || !r->session) {
            fail (b, "bad session.new reply");
            return CM_E_INVALID;
        }
        bsess_t *s = &b->s[done++];
        s->id = r->session->id;
        s->next_seq = 1;
        cm_map_put (b->by_id, s->id.b, s);
    }
    //  Only now read the SUB: every session's first events (seq 1 on) find
    //  their session in the table.  They wait in the SUB until then.
    b->ns = done;
    return done == n ? 0 : CM_E_TIMEOUT;
}

static void snap (bench_t *b, snap_t *sn)
{
    *sn = (snap_t){.events = b->events,
                   .gaps = b->gaps,
                   .dups = b->dups,
                   .turns_ok = b->turns_ok,
                   .turns_failed = b->turns_failed,
                   .short_turns = b->short_turns,
                   .chunk_events = b->chunk_events,
                   .t = now_s ()};
    for (int i = 0; i < NPROCS; i++) sn->cpu[i] = bench_proc_cpu_s (b->pids[i]);
    sn->cpu[NPROCS] = bench_self_cpu_s ();
}

/* ---------------------------------------------------------------- */
/*  Stream mode                                                      */

static int run_stream (bench_t *b)
{
    const opts_t *o = &b->o;
    int64_t t0 = cm_mono_ms ();
    if (create_sessions (b, (size_t)o->sessions)) return -1;
    //  The worker announces itself within a second of starting.
    while (cm_mono_ms () - t0 < 1200) pump (b, 50);
    b->reprompt = true;
    for (size_t i = 0; i < b->ns; i++)
        if (prompt (b, &b->s[i])) return -1;
    pump (b, (int)(o->warmup * 1000));
    snap_t a, z;
    snap (b, &a);
    b->measuring = true;
    int64_t end = cm_mono_ms () + (int64_t)(o->duration * 1000);
    while (cm_mono_ms () < end && stack_alive (b)) pump (b, 100);
    snap (b, &z);
    b->measuring = false;
    b->reprompt = false;
    long rss = bench_proc_status_kib (b->pids[P_WORKER], "VmRSS:");
    long srss = bench_proc_status_kib (b->pids[P_SESSION], "VmRSS:");
    //  Let running turns end, to check they all end well (bounded).
    int64_t drain_end = cm_mono_ms () + 20000;
    size_t busy = 0;
    do {
        pump (b, 100);
        busy = 0;
        for (size_t i = 0; i < b->ns; i++) busy += b->s[i].busy;
    } while (busy && cm_mono_ms () < drain_end);

    double secs = z.t - a.t;
    double ev = (double)(z.events - a.events);
    double cpu[NPROCS + 1];
    for (int i = 0; i <= NPROCS; i++) cpu[i] = 100 * (z.cpu[i] - a.cpu[i]) / secs;
    double wk_ms_per_k =
        ev > 0 ? 1000 * (z.cpu[P_WORKER] - a.cpu[P_WORKER]) / (ev / 1000) : -1;
    double turns = (double)(z.turns_ok - a.turns_ok);
    double p50 = pct (b->lat_us, b->nlat, 50) / 1000,
           p99 = pct (b->lat_us, b->nlat, 99) / 1000;
    double offered = o->synthetic ? (o->rate > 0 ? o->rate : -1)
                     : o->chunk_delay > 0
                         ? (double)o->sessions * 1000.0 / (double)o->chunk_delay
                         : -1;
    if (o->header) {
        printf (
            "| worker | sync | sessions | chunks × delay | offered ev/s | events/s | "
            "turns/s | turn p50/p99 ms | worker ms CPU / 1k ev | worker | session | "
            "store | model | bench | gaps | short turns | failed | worker RSS MiB |\n");
        printf (
            "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
            "---:|---:|---:|\n");
    }
    char off[32], c[NPROCS + 1][16], wk[32], rs[32];
    if (offered > 0)
        snprintf (off, sizeof off, "%.0f", offered);
    else
        snprintf (off, sizeof off, "max");
    for (int i = 0; i < NPROCS; i++)
        if (b->pids[i] > 0)
            snprintf (c[i], sizeof c[i], "%.0f%%", cpu[i]);
        else
            snprintf (c[i], sizeof c[i], "-");
    snprintf (c[NPROCS], sizeof c[NPROCS], "%.0f%%", cpu[NPROCS]); //  the bench
    snprintf (wk, sizeof wk, o->synthetic ? "-" : "%.2f", wk_ms_per_k);
    snprintf (rs, sizeof rs, o->synthetic ? "-" : "%.1f", rss / 1024.0);
    printf ("| %s | %s | %ld | %ld × %ld ms | %s | %.0f | %.0f | %.0f / %.0f | %s | %s | "
            "%s | %s | %s | %s | %" PRIu64 " | %" PRIu64 " | %" PRIu64 " | %s |\n",
            o->synthetic ? "synthetic" : "corral-worker", o->sync, o->sessions, o->chunks,
            o->chunk_delay, off, ev / secs, turns / secs, p50, p99, wk, c[P_WORKER],
            c[P_SESSION], c[P_STORE], c[P_FAKE], c[NPROCS], b->gaps, b->short_turns,
            b->turns_failed, rs);
    fflush (stdout);
    fprintf (stderr,
             "# window %.1f s: %.0f events (%.0f text chunks), %.0f turns; all run: gaps "
             "%" PRIu64 ", dups %" PRIu64 ", short turns %" PRIu64 ", failed %" PRIu64
             ", unknown %" PRIu64 ", still busy after drain %zu; session RSS %.1f MiB\n",
             secs, ev, (double)(z.chunk_events - a.chunk_events), turns, b->gaps, b->dups,
             b->short_turns, b->turns_failed, b->unknown, busy, srss / 1024.0);
    if (busy) fail (b, "turns still running 20 s after the window");
    if (b->gaps || b->short_turns || b->turns_failed) b->errors++;
    return 0;
}

/* ---------------------------------------------------------------- */
/*  Hold mode                                                        */

static int run_hold (bench_t *b)
{
    const opts_t *o = &b->o;
    long most = 0;
    for (size_t i = 0; i < o->nlevels; i++)
        if (o->levels[i] > most) most = o->levels[i];
    int64_t t0 = cm_mono_ms ();
    if (create_sessions (b, (size_t)most)) return -1;
    while (cm_mono_ms () - t0 < 1200) pump (b, 50);
    double scripted = (double)(o->chunks - 1) * (double)o->chunk_delay / 1000 +
                      (double)o->pause_ms / 1000;
    printf ("| turns | all started after s | most open at once | completed end_turn | "
            "turn s p50 / max (scripted %.1f) | longest silence s | gaps | short | "
            "failed | worker CPU | worker ms CPU / turn | worker RSS MiB (peak) | "
            "worker fds (peak) | pass |\n",
            scripted);
    printf ("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n");
    long best = 0;
    for (size_t li = 0; li < o->nlevels && stack_alive (b); li++) {
        size_t n = (size_t)o->levels[li];
        uint64_t ok0 = b->turns_ok, failed0 = b->turns_failed, short0 = b->short_turns,
                 gaps0 = b->gaps;
        b->max_open = b->open_turns;
        snap_t a, z;
        snap (b, &a);
        double start = now_s (), all_started = -1;
        for (size_t i = 0; i < n; i++) {
            b->s[i].started = false;
            if (prompt (b, &b->s[i])) return -1;
        }
        b->measuring = true;
        long rss_peak = 0;
        int fds = 0;
        size_t busy = n;
        double limit = scripted + 30 + (double)n / 200;
        while (busy && now_s () - start < limit && stack_alive (b)) {
            pump (b, 100);
            busy = 0;
            size_t started = 0;
            for (size_t i = 0; i < n; i++) {
                busy += b->s[i].busy;
                started += b->s[i].started;
            }
            if (all_started < 0 && started == n) all_started = now_s () - start;
            int f = bench_proc_fds (b->pids[P_WORKER]);
            if (f > fds) fds = f;
            long rss = bench_proc_status_kib (b->pids[P_WORKER], "VmRSS:");
            if (rss > rss_peak) rss_peak = rss;
        }
        snap (b, &z);
        b->measuring = false;
        uint64_t *dur = calloc (n, sizeof *dur);
        uint64_t max_gap = 0;
        for (size_t i = 0; i < n; i++) {
            if (b->s[i].max_gap_ns > max_gap) max_gap = b->s[i].max_gap_ns;
            if (dur) dur[i] = (b->s[i].last_ev_ns - b->s[i].started_ns) / 1000000;
        }
        double d50 = dur ? pct (dur, n, 50) / 1000 : -1,
               dmax = dur ? pct (dur, n, 100) / 1000 : -1;
        free (dur);
        uint64_t ok = b->turns_ok - ok0, failed = b->turns_failed - failed0,
                 shorts = b->short_turns - short0, gaps = b->gaps - gaps0;
        double secs = z.t - a.t;
        double wcpu = z.cpu[P_WORKER] - a.cpu[P_WORKER];
        bool pass = ok == n && !failed && !shorts && !gaps && !busy &&
                    (double)max_gap / 1e9 <= (double)(o->pause_ms + o->max_gap) / 1000;
        if (pass && (long)n > best) best = (long)n;
        printf ("| %zu | %.1f | %" PRIu64 " | %" PRIu64 " | %.1f / %.1f | %.2f | %" PRIu64
                " | %" PRIu64 " | %" PRIu64 " | %.0f%% | %.1f | %.1f | %d | %s |\n",
                n, all_started, b->max_open, ok, d50, dmax, (double)max_gap / 1e9, gaps,
                shorts, failed + busy, 100 * wcpu / secs, 1000 * wcpu / (double)n,
                rss_peak / 1024.0, fds, pass ? "yes" : "**no**");
        fflush (stdout);
        if (busy) {
            fail (b, "turns still open after the level's time limit");
            break;
        }
        pump (b, 500); //  let the last state events settle
    }
    printf ("\nhighest level held with every turn progressing and completing: %ld\n",
            best);
    return 0;
}

/* ---------------------------------------------------------------- */
/*  Options                                                          */

static void usage (FILE *f)
{
    fprintf (
        f,
        "Usage: corral-turns-bench [OPTIONS]\n"
        "Streaming turns through corral-session + corral-store + one corral-worker.\n\n"
        "  --build DIR         build tree holding the binaries (default: the one "
        "this binary is in)\n"
        "  --dir DIR           temporary directory parent (default $TMPDIR or "
        "/var/tmp)\n"
        "  --mode stream|hold  throughput, or concurrent long turns (default stream)\n"
        "  --sync full|os      corral-store --store-sync (default full)\n"
        "  --sessions N        stream: sessions kept busy (default 200)\n"
        "  --chunks N          text pieces per turn (default 500; hold 40)\n"
        "  --chunk-delay MS    pause between pieces (default 0; hold 150)\n"
        "  --pause-ms MS       hold: pause in the middle of each turn (default 4000)\n"
        "  --max-gap MS        hold: silence allowed beyond the pause (default 1000)\n"
        "  --levels L,L,...    hold: concurrent turns to try (default "
        "250,500,1000,1500,2000)\n"
        "  --warmup S          stream: seconds not counted (default 2)\n"
        "  --duration S        stream: seconds measured (default 8)\n"
        "  --header            stream: print the table header first\n"
        "  --keep              keep the temporary directory (logs, data)\n");
}

static int parse_levels (opts_t *o, const char *text)
{
    o->nlevels = 0;
    char *copy = strdup (text), *save = NULL;
    for (char *t = strtok_r (copy, ",", &save); t && o->nlevels < MAX_LEVELS;
         t = strtok_r (NULL, ",", &save))
        o->levels[o->nlevels++] = atol (t);
    free (copy);
    for (size_t i = 0; i < o->nlevels; i++)
        if (o->levels[i] < 1 || o->levels[i] > 100000) return -1;
    return o->nlevels ? 0 : -1;
}

static int parse_opts (int argc, char **argv, opts_t *o)
{
    static const struct option longs[] = {{"build", required_argument, 0, 'b'},
                                          {"dir", required_argument, 0, 'd'},
                                          {"mode", required_argument, 0, 'm'},
                                          {"sync", required_argument, 0, 'y'},
                                          {"worker", required_argument, 0, 'w'},
                                          {"rate", required_argument, 0, 'r'},
                                          {"sessions", required_argument, 0, 'S'},
                                          {"chunks", required_argument, 0, 'c'},
                                          {"chunk-delay", required_argument, 0, 'D'},
                                          {"pause-ms", required_argument, 0, 'p'},
                                          {"max-gap", required_argument, 0, 'g'},
                                          {"levels", required_argument, 0, 'L'},
                                          {"warmup", required_argument, 0, 'W'},
                                          {"duration", required_argument, 0, 't'},
                                          {"header", no_argument, 0, 'H'},
                                          {"keep", no_argument, 0, 'k'},
                                          {"help", no_argument, 0, 'h'},
                                          {0, 0, 0, 0}};
    int c;
    const char *levels = "250,500,1000,1500,2000";
    while ((c = getopt_long (argc, argv, "h", longs, NULL)) != -1) {
        switch (c) {
        case 'b':
            o->build = strdup (optarg);
            break;
        case 'd':
            o->dir = optarg;
            break;
        case 'm':
            o->mode = optarg;
            break;
        case 'y':
            o->sync = optarg;
            break;
        case 'w':
            if (strcmp (optarg, "synthetic") == 0)
                o->synthetic = true;
            else if (strcmp (optarg, "real") != 0)
                o->rate = -1; //  refused below
            break;
        case 'r':
            o->rate = atof (optarg);
            break;
        case 'S':
            o->sessions = atol (optarg);
            break;
        case 'c':
            o->chunks = atol (optarg);
            break;
        case 'D':
            o->chunk_delay = atol (optarg);
            break;
        case 'p':
            o->pause_ms = atol (optarg);
            break;
        case 'g':
            o->max_gap = atol (optarg);
            break;
        case 'L':
            levels = optarg;
            break;
        case 'W':
            o->warmup = atof (optarg);
            break;
        case 't':
            o->duration = atof (optarg);
            break;
        case 'H':
            o->header = true;
            break;
        case 'k':
            o->keep = true;
            break;
        case 'h':
            usage (stdout);
            exit (0);
        default:
            usage (stderr);
            return -1;
        }
    }
    bool hold = strcmp (o->mode, "hold") == 0;
    if (o->chunks < 0) o->chunks = hold ? 40 : 500;
    if (o->chunk_delay < 0) o->chunk_delay = hold ? 150 : 0;
    bool ok = optind == argc && (hold || !strcmp (o->mode, "stream")) &&
              (!strcmp (o->sync, "full") || !strcmp (o->sync, "os")) &&
              o->sessions >= 1 && o->sessions <= 100000 && o->chunks >= 2 &&
              o->chunks <= 100000 && o->chunk_delay >= 0 && o->chunk_delay <= 60000 &&
              o->pause_ms >= 0 && o->pause_ms <= 600000 && o->max_gap >= 0 &&
              o->warmup >= 0 && o->duration > 0 && o->rate >= 0 &&
              !(hold && o->synthetic) && parse_levels (o, levels) == 0;
    if (!ok) {
        fprintf (stderr, "turns-bench: bad arguments\n");
        usage (stderr);
        return -1;
    }
    return 0;
}

//  The build tree: the parent of this binary's directory (build/bench/..).
static char *find_build (void)
{
    char path[4096];
    ssize_t n = readlink ("/proc/self/exe", path, sizeof path - 1);
    if (n <= 0) return NULL;
    path[n] = '\0';
    for (int i = 0; i < 2; i++) {
        char *slash = strrchr (path, '/');
        if (!slash) return NULL;
        *slash = '\0';
    }
    return strdup (path);
}

int main (int argc, char **argv)
{
    bench_t b = {.o = {.mode = "stream",
                       .sync = "full",
                       .sessions = 200,
                       .chunks = -1,
                       .chunk_delay = -1,
                       .pause_ms = 4000,
                       .max_gap = 1000,
                       .warmup = 2,
                       .duration = 8}};
    const char *tmp = getenv ("TMPDIR");
    b.o.dir = tmp && *tmp ? tmp : "/var/tmp";
    if (parse_opts (argc, argv, &b.o)) return 2;
    if (!b.o.build) b.o.build = find_build ();
    if (!b.o.build) return 2;
    cm_log_init ("turns-bench", CM_LOG_WARN);
    signal (SIGPIPE, SIG_IGN);
    //  Thousands of sockets in the worker (curl) and the model server: the
    //  children inherit this limit.
    struct rlimit rl;
    if (getrlimit (RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit (RLIMIT_NOFILE, &rl);
    }
    proto_msg_init (&b.msg);
    proto_msg_init (&b.ev);
    proto_msg_init (&b.wmsg);
    b.by_id = cm_map_new (16);
    b.by_corr = cm_map_new (8);
    int rc = -1;
    if (b.by_id && b.by_corr && stack_start (&b) == 0)
        rc = strcmp (b.o.mode, "hold") == 0 ? run_hold (&b) : run_stream (&b);
    if (rc) b.errors++;
    stack_stop (&b);
    if (b.errors) fprintf (stderr, "turns-bench: %" PRIu64 " problem(s)\n", b.errors);
    proto_msg_fini (&b.msg);
    proto_msg_fini (&b.ev);
    proto_msg_fini (&b.wmsg);
    proto_buf_fini (&b.wbuf);
    for (size_t i = 0; i < b.nsyn; i++) proto_buf_fini (&b.syn[i].event);
    free (b.syn);
    cm_map_destroy (&b.by_id);
    cm_map_destroy (&b.by_corr);
    cm_zmq_term ();
    free (b.s);
    free (b.lat_us);
    free (b.o.build);
    return b.errors ? 1 : 0;
}
