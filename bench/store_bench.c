/*  store_bench.c - how fast corral-store acknowledges appends and serves
    range reads, next to what raw LMDB does with the same records on the
    same disk.

    What it measures (DESIGN §14: >= 200 000 acknowledged events/s with
    sync=full on a 2-core machine, and >= 0.5 of raw LMDB):

      append   the real corral-store binary is started on ipc:// in a
               fresh directory with --store-sync full|os; one DEALER
               pipelines store.events.append requests, each carrying
               --batch events of --event-size bytes for one of --sessions
               sessions (round robin), keeping --window requests in
               flight.  Only ACKNOWLEDGED events count (an `appended`
               reply whose last_seq is the one expected), over --duration
               seconds after a --warmup.  store.stats before and after
               gives the commits and requests in the window (so events per
               group commit) and the commit latency p50/p99.
      range    on the store just filled (the sync=full one when both
               run), store.events.range with limit --range-limit, cycling
               over sessions and pages, --range-window requests in flight:
               events/s and MB/s of event payload received and decoded.
      raw      in this process, a new LMDB environment in the same --dir
               (so the same filesystem), the same keys (session id ‖ seq
               big-endian) and values, written the way the store writes
               them (one cursor per request, in key order) and committed
               in groups of the events-per-commit the store achieved in the
               matching append run: default flags (fsync at commit) next
               to sync=full, MDB_NOSYNC (plus mdb_env_sync once a second,
               as the store does) next to sync=os.
      fsync    pwrite + fdatasync of 4 KiB in --dir: the floor under any
               durable commit on this disk.

    A benchmark, not a test: it is not registered with ctest.  It needs
    nothing but the corral-store binary, found next to it in the build tree
    (../services/store/corral-store) unless --store says where.
*/
#include <errno.h>
#include <ftw.h>
#include <getopt.h>
#include <inttypes.h>
#include <lmdb.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/statfs.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "bench_proc.h"
#include "cm_error.h"
#include "cm_id.h"
#include "cm_log.h"
#include "cm_time.h"
#include "cm_zmq.h"
#include "proto.h"
#include "proto_rpc.h"
#include "store.h" //  STORE_LATENCY_RING

#define MAX_RESULTS   16
#define SEND_RING     (1u << 16) //  send times of requests in flight (> any window)
#define REPLY_TIMEOUT 10000      //  ms without any reply before giving up
#define MAP_SIZE      "4G"       //  big enough that the map never grows mid-run
#define MAP_BYTES     (4ull << 30)

typedef struct {
    const char *store_path; //  corral-store binary
    const char *dir;        //  temporary environments are made here
    const char *sync;       //  full | os | both
    long sessions, batch, window, event_size;
    long range_limit, range_window;
    double warmup, duration, range_duration;
    double events_per_commit; //  raw runs: override what the store achieved
    bool no_raw, no_range, no_probe, keep;
    bool raw_writemap; //  also run raw LMDB with MDB_WRITEMAP
    bool tsv;          //  machine-readable rows instead of the table
} opts_t;

typedef struct {
    char name[64];
    double events_s, mb_s;
    double ev_per_commit;                      //  0 when not applicable
    double commit_p50, commit_p99, commit_max; //  microseconds; < 0 when n/a
    double lat_p50, lat_p99;       //  request round trip, microseconds; < 0 when n/a
    double server_cpu, client_cpu; //  % of one core; < 0 when n/a
    double bytes_per_event;        //  write(2)/pwrite(2) bytes per event; < 0 n/a
    double ratio;                  //  store ÷ raw; < 0 when n/a
} result_t;

typedef struct {
    uint64_t commits, requests;
    uint64_t p50, p99, max;
    bool ok;
} stats_t;

typedef struct {
    opts_t o;
    cm_uuid_t *ids;     //  session ids
    uint8_t *payload;   //  batch distinct events, event_size bytes each
    proto_bin_t *items; //  batch entries pointing into payload
    result_t results[MAX_RESULTS];
    size_t nresults;
    result_t range; //  printed last, after the write rows
    bool have_range;
    double store_epc[2]; //  events per commit achieved: [0] full, [1] os
    uint64_t errors;
} bench_t;

typedef struct {
    pid_t pid;
    char dir[4096];
    char endpoint[4200];
} store_proc_t;

/* ---------------------------------------------------------------- */
/*  Small helpers                                                    */

static double now_s (void)
{
    return (double)cm_mono_ns () / 1e9;
}

static void put_be64 (uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8) p[i] = (uint8_t)v;
}

//  Growable array of latency samples (microseconds).
typedef struct {
    uint32_t *v;
    size_t n, cap;
} samples_t;

static void samples_add (samples_t *s, uint64_t us)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 4096;
        uint32_t *grown = realloc (s->v, cap * sizeof *grown);
        if (!grown) return; //  fewer samples, not a failure
        s->v = grown;
        s->cap = cap;
    }
    s->v[s->n++] = us > UINT32_MAX ? UINT32_MAX : (uint32_t)us;
}

static int cmp_u32 (const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

//  Percentile p (0..100) of the samples; sorts them.  -1 when empty.
static double samples_pct (samples_t *s, double p)
{
    if (s->n == 0) return -1;
    qsort (s->v, s->n, sizeof s->v[0], cmp_u32);
    size_t i = (size_t)((double)s->n * p / 100.0);
    return s->v[i < s->n ? i : s->n - 1];
}

static void samples_fini (samples_t *s)
{
    free (s->v);
    *s = (samples_t){0};
}

static void rm_tree (const bench_t *b, const char *dir)
{
    if (b->o.keep)
        printf ("# kept %s\n", dir);
    else
        bench_rmtree (dir);
}

static int make_temp_dir (const bench_t *b, const char *what, char *out, size_t len)
{
    snprintf (out, len, "%s/corral-bench-%s-XXXXXX", b->o.dir, what);
    if (!mkdtemp (out)) {
        fprintf (stderr, "store-bench: cannot create a directory in %s: %s\n", b->o.dir,
                 strerror (errno));
        return -1;
    }
    return 0;
}

static const char *fs_name (const char *dir)
{
    struct statfs sf;
    if (statfs (dir, &sf) != 0) return "unknown";
    switch ((unsigned long)sf.f_type) {
    case 0xEF53:
        return "ext2/3/4";
    case 0x58465342:
        return "xfs";
    case 0x9123683E:
        return "btrfs";
    case 0x01021994:
        return "tmpfs (RAM: fsync costs nothing here)";
    case 0x794C7630:
        return "overlayfs";
    case 0x2FC12FC1:
        return "zfs";
    default:
        return "other";
    }
}

static result_t *new_result (bench_t *b, const char *name)
{
    if (b->nresults == MAX_RESULTS) abort (); //  programmer error
    result_t *r = &b->results[b->nresults++];
    *r = (result_t){.commit_p50 = -1,
                    .commit_p99 = -1,
                    .commit_max = -1,
                    .lat_p50 = -1,
                    .lat_p99 = -1,
                    .server_cpu = -1,
                    .client_cpu = -1,
                    .bytes_per_event = -1,
                    .ratio = -1};
    snprintf (r->name, sizeof r->name, "%s", name);
    return r;
}

/* ---------------------------------------------------------------- */
/*  The store process                                                */

static int store_start (bench_t *b, const char *sync, store_proc_t *sp)
{
    if (make_temp_dir (b, "store", sp->dir, sizeof sp->dir)) return -1;
    snprintf (sp->endpoint, sizeof sp->endpoint, "ipc://%s/store.sock", sp->dir);
    if (strlen (sp->endpoint) - 6 >= 100) { //  sun_path is 108 bytes
        fprintf (stderr, "store-bench: %s is too long for an ipc:// path; use --dir\n",
                 sp->dir);
        return -1;
    }
    char log[4200];
    snprintf (log, sizeof log, "%s/store.log", sp->dir);
    fflush (NULL);
    sp->pid = fork ();
    if (sp->pid < 0) return -1;
    if (sp->pid == 0) {
        prctl (PR_SET_PDEATHSIG, SIGTERM); //  never outlive the bench
        int fd = open (log, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (fd >= 0) {
            dup2 (fd, 1);
            dup2 (fd, 2);
            close (fd);
        }
        execl (b->o.store_path, "corral-store", "--data-dir", sp->dir, "--store-endpoint",
               sp->endpoint, "--store-sync", sync, "--store-map-size", MAP_SIZE,
               "--log-level", "warn", (char *)NULL);
        fprintf (stderr, "exec %s: %s\n", b->o.store_path, strerror (errno));
        _exit (127);
    }
    return 0;
}

static void store_stop (bench_t *b, store_proc_t *sp)
{
    if (sp->pid > 0) {
        kill (sp->pid, SIGTERM);
        int status;
        waitpid (sp->pid, &status, 0);
        if (!WIFEXITED (status) || WEXITSTATUS (status) != 0) {
            fprintf (stderr,
                     "store-bench: corral-store exited abnormally (see %s/store.log)\n",
                     sp->dir);
            b->errors++;
        }
        sp->pid = 0;
    }
    rm_tree (b, sp->dir);
}

static bool stats_from (proto_msg_t *msg, stats_t *st)
{
    const proto_store_stats_t *s = proto_body (msg, store_stats);
    if (!s) return false;
    *st = (stats_t){.commits = s->commits,
                    .requests = s->requests,
                    .p50 = s->commit_p50_us,
                    .p99 = s->commit_p99_us,
                    .max = s->commit_max_us,
                    .ok = true};
    return true;
}

//  Wait until the store answers store.stats (it may still be starting).
static int store_wait_ready (store_proc_t *sp, proto_rpc_t *ctl)
{
    proto_msg_t msg;
    proto_msg_init (&msg);
    int rc = proto_rpc_call (ctl, PROTO_STORE_STATS, NULL, &msg, 10000);
    proto_msg_fini (&msg);
    if (rc) {
        int status;
        bool gone = waitpid (sp->pid, &status, WNOHANG) == sp->pid;
        if (gone) sp->pid = 0;
        fprintf (stderr, "store-bench: corral-store %s (%s); see %s/store.log\n",
                 gone ? "exited" : "does not answer", cm_strerror (rc), sp->dir);
    }
    return rc;
}

/* ---------------------------------------------------------------- */
/*  Appends                                                          */

typedef struct {
    bench_t *b;
    proto_rpc_t *rpc, *ctl;
    proto_msg_t msg, ctl_msg;
    uint64_t corr0;      //  corr of request 0; request i has corr0 + i
    uint64_t sent, done; //  requests sent, replies handled
    uint64_t send_ns[SEND_RING];
    bool measuring;
    uint64_t acked; //  events acknowledged while measuring
    samples_t lat;
    int ctl_pending; //  stats replies awaited
    stats_t st[2];   //  before and after the measured window
} appender_t;

static int send_append (appender_t *a)
{
    const opts_t *o = &a->b->o;
    uint64_t i = a->sent;
    proto_events_append_t body = {
        .session = a->b->ids[i % (uint64_t)o->sessions],
        .first_seq = (i / (uint64_t)o->sessions) * (uint64_t)o->batch + 1,
        .events = {a->b->items, (size_t)o->batch}};
    uint64_t corr;
    int rc =
        proto_rpc_send (a->rpc, PROTO_STORE_EVENTS_APPEND, &body, REPLY_TIMEOUT, &corr);
    if (rc) {
        fprintf (stderr, "store-bench: send failed: %s\n", cm_strerror (rc));
        return rc;
    }
    if (i == 0) a->corr0 = corr;
    a->send_ns[i % SEND_RING] = cm_mono_ns ();
    a->sent++;
    return 0;
}

static void handle_append_reply (appender_t *a, int rc)
{
    const opts_t *o = &a->b->o;
    proto_msg_t *m = &a->msg;
    uint64_t i = m->corr_valid ? m->corr - a->corr0 : UINT64_MAX;
    a->done++;
    if (rc || i >= a->sent) {
        if (a->b->errors++ == 0)
            fprintf (stderr, "store-bench: bad reply: %s %s\n", cm_strerror (rc),
                     proto_msg_error (m));
        return;
    }
    if (m->type == PROTO_ERROR) {
        if (a->b->errors++ == 0)
            fprintf (stderr, "store-bench: append refused: %s\n",
                     proto_body (m, error)->message);
        return;
    }
    const proto_appended_t *ap = proto_body (m, appended);
    uint64_t want = (i / (uint64_t)o->sessions + 1) * (uint64_t)o->batch;
    if (!ap || ap->last_seq != want) {
        if (a->b->errors++ == 0)
            fprintf (stderr, "store-bench: unexpected reply to request %" PRIu64 "\n", i);
        return;
    }
    if (a->measuring) {
        a->acked += (uint64_t)o->batch;
        samples_add (&a->lat, (cm_mono_ns () - a->send_ns[i % SEND_RING]) / 1000);
    }
}

static void handle_ctl_reply (appender_t *a, int rc)
{
    a->ctl_pending--;
    stats_t *slot = a->st[0].ok ? &a->st[1] : &a->st[0];
    if (rc || !stats_from (&a->ctl_msg, slot)) a->b->errors++;
}

//  Take every reply already queued on both sockets.
static void take_replies (appender_t *a, void (*on_reply) (appender_t *, int))
{
    zmq_pollitem_t items[] = {{proto_rpc_socket (a->rpc), 0, ZMQ_POLLIN, 0},
                              {proto_rpc_socket (a->ctl), 0, ZMQ_POLLIN, 0}};
    if (zmq_poll (items, 2, REPLY_TIMEOUT) <= 0) {
        fprintf (stderr, "store-bench: no reply for %d ms; giving up\n", REPLY_TIMEOUT);
        a->b->errors++;
        a->done = a->sent; //  abandon what is in flight
        a->ctl_pending = 0;
        return;
    }
    if (items[0].revents & ZMQ_POLLIN) {
        int rc;
        while ((rc = proto_rpc_recv (a->rpc, &a->msg, 0)) != CM_E_TIMEOUT)
            on_reply (a, rc);
    }
    if (items[1].revents & ZMQ_POLLIN)
        handle_ctl_reply (a, proto_rpc_recv (a->ctl, &a->ctl_msg, 0));
}

static void ask_stats (appender_t *a)
{
    if (proto_rpc_send (a->ctl, PROTO_STORE_STATS, NULL, REPLY_TIMEOUT, NULL) == 0)
        a->ctl_pending++;
    else
        a->b->errors++;
}

static int append_phase (bench_t *b, const char *sync, store_proc_t *sp, proto_rpc_t *ctl,
                         uint64_t *requests_done)
{
    appender_t *a = calloc (1, sizeof *a);
    if (!a) return CM_E_NOMEM;
    a->b = b;
    a->ctl = ctl;
    a->rpc = proto_rpc_new (sp->endpoint);
    if (!a->rpc) {
        free (a);
        return CM_E_IO;
    }
    proto_msg_init (&a->msg);
    proto_msg_init (&a->ctl_msg);
    uint64_t errors0 = b->errors;

    double t0 = now_s ();
    double warm_end = t0 + b->o.warmup, end = warm_end + b->o.duration;
    double cpu_store0 = 0, cpu_self0 = 0, t_meas = 0, wchar0 = 0;
    int rc = 0;
    while (true) {
        double t = now_s ();
        if (!a->measuring && t >= warm_end) {
            a->measuring = true;
            ask_stats (a);
            cpu_store0 = bench_proc_cpu_s (sp->pid);
            cpu_self0 = bench_self_cpu_s ();
            wchar0 = bench_proc_wchar (sp->pid);
            t_meas = t;
        }
        if (t >= end) break;
        while (a->sent - a->done < (uint64_t)b->o.window)
            if ((rc = send_append (a))) goto done;
        take_replies (a, handle_append_reply);
        if (b->errors > errors0) goto done;
    }
    //  The window is over: ask for the counters (queued behind every
    //  request in flight), then take the remaining replies uncounted.
    double t_end = now_s ();
    a->measuring = false;
    double cpu_store = bench_proc_cpu_s (sp->pid) - cpu_store0;
    double cpu_self = bench_self_cpu_s () - cpu_self0;
    double wchar = bench_proc_wchar (sp->pid) - wchar0;
    ask_stats (a);
    while ((a->sent > a->done || a->ctl_pending > 0) && b->errors == errors0)
        take_replies (a, handle_append_reply);
    *requests_done = a->done;

    if (b->errors == errors0 && a->st[0].ok && a->st[1].ok) {
        char name[64];
        snprintf (name, sizeof name, "store append, sync=%s", sync);
        result_t *r = new_result (b, name);
        double secs = t_end - t_meas;
        r->events_s = (double)a->acked / secs;
        r->mb_s = r->events_s * (double)b->o.event_size / 1e6;
        uint64_t commits = a->st[1].commits - a->st[0].commits;
        uint64_t reqs = a->st[1].requests - a->st[0].requests - 1; //  minus one stats
        r->ev_per_commit =
            commits ? (double)reqs * (double)b->o.batch / (double)commits : 0;
        r->commit_p50 = (double)a->st[1].p50;
        r->commit_p99 = (double)a->st[1].p99;
        r->commit_max = (double)a->st[1].max;
        r->lat_p50 = samples_pct (&a->lat, 50);
        r->lat_p99 = samples_pct (&a->lat, 99);
        r->server_cpu = 100 * cpu_store / secs;
        r->client_cpu = 100 * cpu_self / secs;
        if (wchar0 >= 0 && a->acked) r->bytes_per_event = wchar / (double)a->acked;
        b->store_epc[sync[0] == 'o'] = r->ev_per_commit;
    }
done:
    samples_fini (&a->lat);
    proto_msg_fini (&a->msg);
    proto_msg_fini (&a->ctl_msg);
    proto_rpc_destroy (&a->rpc);
    free (a);
    return rc ? rc : b->errors > errors0 ? CM_E_IO : 0;
}

/* ---------------------------------------------------------------- */
/*  Range reads                                                      */

//  Range request i: session i mod sessions, cycling through its pages.
//  *stored gets how many events that session holds (requests_done appends
//  went round robin).
static uint64_t range_after (const opts_t *o, uint64_t requests_done, uint64_t i,
                             uint64_t *stored)
{
    uint64_t ns = (uint64_t)o->sessions, s = i % ns, page = i / ns;
    *stored = (requests_done / ns + (s < requests_done % ns)) * (uint64_t)o->batch;
    uint64_t pages = *stored / (uint64_t)o->range_limit;
    return pages ? (page % pages) * (uint64_t)o->range_limit : 0;
}

static int range_phase (bench_t *b, store_proc_t *sp, uint64_t requests_done)
{
    const opts_t *o = &b->o;
    proto_rpc_t *rpc = proto_rpc_new (sp->endpoint);
    if (!rpc) return CM_E_IO;
    proto_msg_t msg;
    proto_msg_init (&msg);
    uint64_t ns = (uint64_t)o->sessions;
    uint64_t sent = 0, done = 0, events = 0, bytes = 0, replies = 0;
    uint64_t errors0 = b->errors;
    uint64_t *send_ns = calloc (SEND_RING, sizeof *send_ns);
    uint64_t corr0 = 0;
    samples_t lat = {0};
    double t0 = now_s (), warm_end = t0 + 0.5, end = warm_end + o->range_duration;
    double t_meas = 0, cpu_store0 = 0, cpu_self0 = 0;
    bool measuring = false;
    int rc = send_ns ? 0 : CM_E_NOMEM;
    while (rc == 0) {
        double t = now_s ();
        if (!measuring && t >= warm_end) {
            measuring = true;
            t_meas = t;
            cpu_store0 = bench_proc_cpu_s (sp->pid);
            cpu_self0 = bench_self_cpu_s ();
        }
        if (t >= end) break;
        while (sent - done < (uint64_t)o->range_window) {
            uint64_t stored, after = range_after (o, requests_done, sent, &stored);
            proto_events_range_t body = {.session = b->ids[sent % ns],
                                         .after_seq = after,
                                         .limit = (uint64_t)o->range_limit};
            uint64_t corr;
            if ((rc = proto_rpc_send (rpc, PROTO_STORE_EVENTS_RANGE, &body, REPLY_TIMEOUT,
                                      &corr)))
                break;
            if (sent == 0) corr0 = corr;
            send_ns[sent % SEND_RING] = cm_mono_ns ();
            sent++;
        }
        if (rc) break;
        int got = proto_rpc_recv (rpc, &msg, REPLY_TIMEOUT);
        if (got == CM_E_TIMEOUT) {
            rc = got;
            break;
        }
        for (; got != CM_E_TIMEOUT; got = proto_rpc_recv (rpc, &msg, 0)) {
            done++;
            const proto_events_reply_t *ev = got ? NULL : proto_body (&msg, events_reply);
            uint64_t i = msg.corr - corr0, stored = 0, after = 0;
            if (ev && i < sent) after = range_after (o, requests_done, i, &stored);
            uint64_t want = stored - after < (uint64_t)o->range_limit
                                ? stored - after
                                : (uint64_t)o->range_limit;
            if (!ev || i >= sent || ev->events.count != want ||
                (want && ev->first_seq != after + 1)) {
                if (b->errors++ == 0)
                    fprintf (stderr, "store-bench: range failed: %s %s\n",
                             ev ? "unexpected events" : cm_strerror (got),
                             ev ? "" : proto_msg_error (&msg));
                continue;
            }
            if (!measuring) continue;
            replies++;
            events += ev->events.count;
            for (size_t k = 0; k < ev->events.count; k++)
                bytes += ev->events.items[k].size;
            samples_add (&lat, (cm_mono_ns () - send_ns[i % SEND_RING]) / 1000);
        }
        if (b->errors > errors0) rc = CM_E_IO;
    }
    double secs = now_s () - t_meas;
    double cpu_store = bench_proc_cpu_s (sp->pid) - cpu_store0,
           cpu_self = bench_self_cpu_s () - cpu_self0;
    while (rc == 0 && done < sent) { //  drain, uncounted
        int got = proto_rpc_recv (rpc, &msg, REPLY_TIMEOUT);
        if (got == CM_E_TIMEOUT) rc = got;
        done++;
    }
    if (rc == 0) {
        result_t *r = &b->range;
        *r = (result_t){.commit_p50 = -1,
                        .commit_p99 = -1,
                        .commit_max = -1,
                        .bytes_per_event = -1,
                        .ratio = -1};
        snprintf (r->name, sizeof r->name, "store range read, limit %ld", o->range_limit);
        b->have_range = true;
        r->events_s = (double)events / secs;
        r->mb_s = (double)bytes / secs / 1e6;
        r->ev_per_commit = replies ? (double)events / (double)replies : 0; //  per reply
        r->lat_p50 = samples_pct (&lat, 50);
        r->lat_p99 = samples_pct (&lat, 99);
        r->server_cpu = 100 * cpu_store / secs;
        r->client_cpu = 100 * cpu_self / secs;
    } else {
        b->errors++;
        fprintf (stderr, "store-bench: range phase failed: %s\n", cm_strerror (rc));
    }
    samples_fini (&lat);
    free (send_ns);
    proto_msg_fini (&msg);
    proto_rpc_destroy (&rpc);
    return rc;
}

/* ---------------------------------------------------------------- */
/*  One store run: start, append (and range), stop                   */

static int store_run (bench_t *b, const char *sync, bool with_range)
{
    store_proc_t sp = {0};
    if (store_start (b, sync, &sp)) return CM_E_IO;
    proto_rpc_t *ctl = proto_rpc_new (sp.endpoint);
    int rc = ctl ? store_wait_ready (&sp, ctl) : CM_E_IO;
    uint64_t requests_done = 0;
    if (rc == 0) rc = append_phase (b, sync, &sp, ctl, &requests_done);
    if (rc == 0 && with_range) rc = range_phase (b, &sp, requests_done);
    proto_rpc_destroy (&ctl);
    store_stop (b, &sp);
    return rc;
}

/* ---------------------------------------------------------------- */
/*  Raw LMDB                                                         */

static int raw_run (bench_t *b, bool sync, bool writemap, double epc,
                    const result_t *store)
{
    const opts_t *o = &b->o;
    char dir[4096];
    if (make_temp_dir (b, "raw", dir, sizeof dir)) return CM_E_IO;
    MDB_env *env = NULL;
    MDB_txn *txn = NULL;
    MDB_dbi dbi;
    int rc = mdb_env_create (&env);
    if (rc == 0) rc = mdb_env_set_maxdbs (env, 2);
    if (rc == 0) rc = mdb_env_set_mapsize (env, MAP_BYTES);
    //  The store's flags: MDB_NORDAHEAD, plus MDB_NOSYNC for sync=os.
    if (rc == 0)
        rc = mdb_env_open (env, dir,
                           MDB_NORDAHEAD | (sync ? 0 : MDB_NOSYNC) |
                               (writemap ? MDB_WRITEMAP : 0),
                           0600);
    if (rc == 0) rc = mdb_txn_begin (env, NULL, 0, &txn);
    if (rc == 0) rc = mdb_dbi_open (txn, "events", MDB_CREATE, &dbi);
    if (rc == 0) rc = mdb_txn_commit (txn);
    if (rc) {
        fprintf (stderr, "store-bench: raw LMDB in %s: %s\n", dir, mdb_strerror (rc));
        if (env) mdb_env_close (env);
        rm_tree (b, dir);
        return CM_E_IO;
    }
    //  Requests per commit as the store grouped them (at least one).
    uint64_t per_commit = (uint64_t)llround (epc / (double)o->batch);
    if (per_commit < 1) per_commit = 1;
    uint64_t ns = (uint64_t)o->sessions, idx = 0, events = 0, commits = 0;
    samples_t lat = {0};
    uint8_t key[24];
    double t0 = now_s (), warm_end = t0 + o->warmup, end = warm_end + o->duration;
    double t_meas = 0, cpu0 = 0, wchar0 = 0, last_sync = t0;
    bool measuring = false;
    while (rc == 0) {
        double t = now_s ();
        if (!measuring && t >= warm_end) {
            measuring = true;
            t_meas = t;
            cpu0 = bench_self_cpu_s ();
            wchar0 = bench_proc_wchar (getpid ());
        }
        if (t >= end) break;
        if ((rc = mdb_txn_begin (env, NULL, 0, &txn))) break;
        for (uint64_t r = 0; r < per_commit && rc == 0; r++, idx++) {
            MDB_cursor *cur;
            if ((rc = mdb_cursor_open (txn, dbi, &cur))) break;
            memcpy (key, b->ids[idx % ns].b, 16);
            uint64_t first = (idx / ns) * (uint64_t)o->batch + 1;
            for (long i = 0; i < o->batch && rc == 0; i++) {
                put_be64 (key + 16, first + (uint64_t)i);
                MDB_val k = {sizeof key, key};
                MDB_val v = {b->items[i].size, (void *)b->items[i].data};
                rc = mdb_cursor_put (cur, &k, &v, 0);
            }
            mdb_cursor_close (cur);
        }
        if (rc) {
            mdb_txn_abort (txn);
            break;
        }
        uint64_t c0 = cm_mono_ns ();
        if ((rc = mdb_txn_commit (txn))) break;
        uint64_t c1 = cm_mono_ns ();
        if (!sync && (double)c1 / 1e9 - last_sync >= 1.0) { //  as the store does
            mdb_env_sync (env, 1);
            last_sync = (double)c1 / 1e9;
        }
        if (measuring) {
            events += per_commit * (uint64_t)o->batch;
            commits++;
            samples_add (&lat, (c1 - c0) / 1000);
        }
    }
    double secs = now_s () - t_meas, cpu = bench_self_cpu_s () - cpu0;
    double wchar = bench_proc_wchar (getpid ()) - wchar0;
    mdb_env_close (env);
    rm_tree (b, dir);
    if (rc) {
        fprintf (stderr, "store-bench: raw LMDB write failed: %s\n", mdb_strerror (rc));
        samples_fini (&lat);
        return CM_E_IO;
    }
    char name[64];
    snprintf (name, sizeof name, "raw LMDB group commit, %s%s",
              sync ? "fsync" : "MDB_NOSYNC", writemap ? "+WRITEMAP" : "");
    result_t *r = new_result (b, name);
    r->events_s = (double)events / secs;
    r->mb_s = r->events_s * (double)o->event_size / 1e6;
    r->ev_per_commit = commits ? (double)events / (double)commits : 0;
    r->commit_p50 = samples_pct (&lat, 50);
    r->commit_p99 = samples_pct (&lat, 99);
    r->commit_max = samples_pct (&lat, 100);
    r->client_cpu = 100 * cpu / secs;
    //  With MDB_WRITEMAP pages reach the file through the map, not write(2).
    if (wchar0 >= 0 && events && !writemap) r->bytes_per_event = wchar / (double)events;
    if (store) {
        result_t *ratio = new_result (b, "  store ÷ raw");
        ratio->ratio = store->events_s / r->events_s;
    }
    samples_fini (&lat);
    return 0;
}

/* ---------------------------------------------------------------- */
/*  fsync floor                                                      */

static int fsync_probe (bench_t *b)
{
    char path[4200];
    snprintf (path, sizeof path, "%s/corral-bench-fsync-%d", b->o.dir, (int)getpid ());
    int fd = open (path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (fd < 0) return CM_E_IO;
    char page[4096];
    memset (page, 0xA5, sizeof page);
    samples_t lat = {0};
    double t0 = now_s ();
    int n = 0;
    for (; n < 2000 && now_s () - t0 < 1.0; n++) {
        uint64_t c0 = cm_mono_ns ();
        if (pwrite (fd, page, sizeof page, (off_t)(n % 16) * 4096) != sizeof page ||
            fdatasync (fd) != 0)
            break;
        samples_add (&lat, (cm_mono_ns () - c0) / 1000);
    }
    double secs = now_s () - t0;
    close (fd);
    unlink (path);
    result_t *r = new_result (b, "disk: pwrite 4 KiB + fdatasync");
    r->events_s = n / secs; //  syncs per second
    r->commit_p50 = samples_pct (&lat, 50);
    r->commit_p99 = samples_pct (&lat, 99);
    r->commit_max = samples_pct (&lat, 100);
    samples_fini (&lat);
    return 0;
}

/* ---------------------------------------------------------------- */
/*  Report                                                           */

//  A number with `decimals` and a suffix, or "-" for not applicable (< 0).
static void cell (char *out, size_t len, double v, int decimals, const char *suffix)
{
    if (v < 0)
        snprintf (out, len, "-");
    else
        snprintf (out, len, "%.*f%s", decimals, v, suffix);
}

static void print_tsv (const bench_t *b)
{
    for (size_t i = 0; i < b->nresults; i++) {
        const result_t *r = &b->results[i];
        printf ("%s\t%.0f\t%.1f\t%.0f\t%.0f\t%.0f\t%.0f\t%.0f\t%.0f\t%.0f\t%.3f\t%.0f\n",
                r->name, r->events_s, r->mb_s, r->ev_per_commit, r->commit_p50,
                r->commit_p99, r->lat_p50, r->lat_p99, r->server_cpu, r->client_cpu,
                r->ratio, r->bytes_per_event);
    }
}

//  printf pads by bytes; a name with multi-byte UTF-8 ("÷") needs more.
static int name_width (const char *name)
{
    int extra = 0;
    for (const char *p = name; *p; p++)
        if (((unsigned char)*p & 0xC0) == 0x80) extra++;
    return 42 + extra;
}

static void print_table (const bench_t *b)
{
    printf ("\n| %-42s | %10s | %7s | %9s | %17s | %17s | %9s | %9s | %8s |\n",
            "measurement", "events/s", "MB/s", "ev/commit", "commit p50/p99 us",
            "reply p50/p99 us", "store CPU", "bench CPU", "wr B/ev");
    printf ("|%s|%s|%s|%s|%s|%s|%s|%s|%s|\n",
            "--------------------------------------------",
            "-----------:", "--------:", "----------:", "------------------:",
            "------------------:", "----------:", "----------:", "---------:");
    for (size_t i = 0; i < b->nresults; i++) {
        const result_t *r = &b->results[i];
        if (r->ratio >= 0) {
            printf ("| %-*s | %10.2f | %7s | %9s | %17s | %17s | %9s | %9s | %8s |\n",
                    name_width (r->name), r->name, r->ratio, "", "", "", "", "", "", "");
            continue;
        }
        char ev[32], mb[32], epc[32], c5[32], c9[32], l5[32], l9[32], sc[32], cc[32],
            wb[32];
        cell (ev, sizeof ev, r->events_s, 0, "");
        cell (mb, sizeof mb, r->mb_s > 0 ? r->mb_s : -1, 1, "");
        cell (epc, sizeof epc, r->ev_per_commit > 0 ? r->ev_per_commit : -1, 0, "");
        cell (c5, sizeof c5, r->commit_p50, 0, "");
        cell (c9, sizeof c9, r->commit_p99, 0, "");
        cell (l5, sizeof l5, r->lat_p50, 0, "");
        cell (l9, sizeof l9, r->lat_p99, 0, "");
        cell (sc, sizeof sc, r->server_cpu, 0, "%");
        cell (cc, sizeof cc, r->client_cpu, 0, "%");
        cell (wb, sizeof wb, r->bytes_per_event, 0, "");
        char cp[80], lp[80];
        snprintf (cp, sizeof cp, "%s / %s", c5, c9);
        snprintf (lp, sizeof lp, "%s / %s", l5, l9);
        printf ("| %-*s | %10s | %7s | %9s | %17s | %17s | %9s | %9s | %8s |\n",
                name_width (r->name), r->name, ev, mb, epc, cp, lp, sc, cc, wb);
    }
    printf (
        "\n"
        "ev/commit   events per group commit (store: store.stats requests and commits\n"
        "            in the window; range row: events per reply)\n"
        "commit      store: store.stats percentiles over its last %d commits; raw:\n"
        "            around mdb_txn_commit; disk: one pwrite + fdatasync\n"
        "reply       request sent -> reply received, at full load (so mostly queueing)\n"
        "CPU         %% of one core over the window; bench CPU includes its ZeroMQ "
        "thread\n"
        "wr B/ev     bytes passed to write(2)/pwrite(2) per event (/proc/<pid>/io\n"
        "            wchar): LMDB's page writes, i.e. the write amplification\n",
        STORE_LATENCY_RING);
}

/* ---------------------------------------------------------------- */
/*  Options                                                          */

static void usage (FILE *f)
{
    fprintf (
        f, "Usage: corral-store-bench [OPTIONS]\n"
           "Throughput of corral-store appends and range reads vs raw LMDB.\n\n"
           "  --store PATH          corral-store binary (default: next to this one in "
           "the build tree)\n"
           "  --dir DIR             where temporary environments go (default $TMPDIR "
           "or /var/tmp);\n"
           "                        must be on the disk you want to measure\n"
           "  --sync full|os|both   store sync modes to run (default both)\n"
           "  --sessions N          sessions appended to round robin (default 1000)\n"
           "  --batch N             events per events.append request (default 64)\n"
           "  --window N            append requests in flight (default 64)\n"
           "  --event-size N        bytes per event (default 100)\n"
           "  --warmup S            seconds not counted before each run (default 1)\n"
           "  --duration S          seconds measured per append / raw run (default 5)\n"
           "  --range-limit N       events.range limit (default 1000)\n"
           "  --range-window N      range requests in flight (default 8)\n"
           "  --range-duration S    seconds of range reads (default 3)\n"
           "  --events-per-commit N raw runs: group size (default: the store's)\n"
           "  --no-raw, --no-range  skip those runs\n"
           "  --no-probe            skip the fdatasync probe\n"
           "  --raw-writemap        also run raw LMDB with MDB_WRITEMAP (what that flag "
           "would buy)\n"
           "  --tsv                 print tab-separated rows (name, events/s, MB/s, "
           "ev/commit,\n"
           "                        commit p50, p99, reply p50, p99, store CPU %%, "
           "bench CPU %%,\n"
           "                        ratio; -1 = not applicable) instead of the table\n"
           "  --keep                keep the temporary directories\n");
}

static int parse_opts (int argc, char **argv, opts_t *o)
{
    static const struct option longs[] = {
        {"store", required_argument, 0, 's'},
        {"dir", required_argument, 0, 'd'},
        {"sync", required_argument, 0, 'y'},
        {"sessions", required_argument, 0, 'S'},
        {"batch", required_argument, 0, 'b'},
        {"window", required_argument, 0, 'w'},
        {"event-size", required_argument, 0, 'e'},
        {"warmup", required_argument, 0, 'W'},
        {"duration", required_argument, 0, 't'},
        {"range-limit", required_argument, 0, 'l'},
        {"range-window", required_argument, 0, 'r'},
        {"range-duration", required_argument, 0, 'R'},
        {"events-per-commit", required_argument, 0, 'E'},
        {"no-raw", no_argument, 0, 'N'},
        {"no-range", no_argument, 0, 'n'},
        {"no-probe", no_argument, 0, 'P'},
        {"tsv", no_argument, 0, 'T'},
        {"raw-writemap", no_argument, 0, 'M'},
        {"keep", no_argument, 0, 'k'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long (argc, argv, "h", longs, NULL)) != -1) {
        switch (c) {
        case 's':
            o->store_path = optarg;
            break;
        case 'd':
            o->dir = optarg;
            break;
        case 'y':
            o->sync = optarg;
            break;
        case 'S':
            o->sessions = atol (optarg);
            break;
        case 'b':
            o->batch = atol (optarg);
            break;
        case 'w':
            o->window = atol (optarg);
            break;
        case 'e':
            o->event_size = atol (optarg);
            break;
        case 'W':
            o->warmup = atof (optarg);
            break;
        case 't':
            o->duration = atof (optarg);
            break;
        case 'l':
            o->range_limit = atol (optarg);
            break;
        case 'r':
            o->range_window = atol (optarg);
            break;
        case 'R':
            o->range_duration = atof (optarg);
            break;
        case 'E':
            o->events_per_commit = atof (optarg);
            break;
        case 'N':
            o->no_raw = true;
            break;
        case 'n':
            o->no_range = true;
            break;
        case 'k':
            o->keep = true;
            break;
        case 'P':
            o->no_probe = true;
            break;
        case 'T':
            o->tsv = true;
            break;
        case 'M':
            o->raw_writemap = true;
            break;
        case 'h':
            usage (stdout);
            exit (0);
        default:
            usage (stderr);
            return -1;
        }
    }
    bool ok = optind == argc && o->sessions >= 1 && o->sessions <= 1000000 &&
              o->batch >= 1 && o->batch <= 10000 && o->window >= 1 &&
              o->window < (long)SEND_RING && o->event_size >= 1 &&
              o->event_size <= (1 << 20) && o->range_limit >= 1 &&
              o->range_limit <= 10000 && o->range_window >= 1 &&
              o->range_window < (long)SEND_RING && o->warmup >= 0 && o->duration > 0 &&
              o->range_duration > 0 && o->events_per_commit >= 0 &&
              (!strcmp (o->sync, "full") || !strcmp (o->sync, "os") ||
               !strcmp (o->sync, "both"));
    if (!ok) {
        fprintf (stderr, "store-bench: bad arguments\n");
        usage (stderr);
        return -1;
    }
    return 0;
}

//  ../services/store/corral-store relative to this executable.
static char *find_store (void)
{
    static char path[4096];
    ssize_t n = readlink ("/proc/self/exe", path, sizeof path - 64);
    if (n <= 0) return NULL;
    path[n] = '\0';
    char *slash = strrchr (path, '/');
    if (!slash) return NULL;
    strcpy (slash, "/../services/store/corral-store");
    return access (path, X_OK) == 0 ? path : NULL;
}

int main (int argc, char **argv)
{
    bench_t b = {.o = {.sync = "both",
                       .sessions = 1000,
                       .batch = 64,
                       .window = 64,
                       .event_size = 100,
                       .range_limit = 1000,
                       .range_window = 8,
                       .warmup = 1,
                       .duration = 5,
                       .range_duration = 3}};
    const char *tmp = getenv ("TMPDIR");
    b.o.dir = tmp && *tmp ? tmp : "/var/tmp";
    if (parse_opts (argc, argv, &b.o)) return 2;
    if (!b.o.store_path) b.o.store_path = find_store ();
    if (!b.o.store_path) {
        fprintf (stderr, "store-bench: corral-store not found next to this binary; "
                         "use --store PATH\n");
        return 2;
    }
    cm_log_init ("store-bench", CM_LOG_WARN);
    signal (SIGPIPE, SIG_IGN);

    //  Sessions, and `batch` distinct events of event_size bytes each.
    const opts_t *o = &b.o;
    b.ids = calloc ((size_t)o->sessions, sizeof *b.ids);
    b.payload = malloc ((size_t)(o->batch * o->event_size));
    b.items = calloc ((size_t)o->batch, sizeof *b.items);
    if (!b.ids || !b.payload || !b.items) return 1;
    for (long i = 0; i < o->sessions; i++) cm_uuid7 (&b.ids[i]);
    cm_random (b.payload, (size_t)(o->batch * o->event_size));
    for (long i = 0; i < o->batch; i++)
        b.items[i] = (proto_bin_t){b.payload + i * o->event_size, (size_t)o->event_size};

    if (!o->tsv)
        printf (
            "corral-store benchmark: %ld sessions, %ld-byte events, %ld events/request, "
            "%ld requests in flight;\n%.1f s measured after %.1f s warm-up; data in %s "
            "(%s)\nstore: %s\n",
            o->sessions, o->event_size, o->batch, o->window, o->duration, o->warmup,
            o->dir, fs_name (o->dir), o->store_path);
    fflush (stdout);

    int rc = 0;
    bool full = strcmp (o->sync, "os") != 0, os = strcmp (o->sync, "full") != 0;
    const char *modes[2] = {"full", "os"};
    bool run[2] = {full, os};
    for (int m = 0; m < 2 && rc == 0; m++) {
        if (!run[m]) continue;
        size_t at = b.nresults;
        rc = store_run (&b, modes[m], m == 0 ? !o->no_range : (!full && !o->no_range));
        if (rc || o->no_raw) continue;
        const result_t *store = &b.results[at];
        double epc = o->events_per_commit > 0 ? o->events_per_commit : b.store_epc[m];
        rc = raw_run (&b, m == 0, false, epc, store);
        if (rc == 0 && o->raw_writemap) rc = raw_run (&b, m == 0, true, epc, NULL);
    }
    if (b.have_range && b.nresults < MAX_RESULTS) b.results[b.nresults++] = b.range;
    if (rc == 0 && !o->no_probe) rc = fsync_probe (&b);
    if (o->tsv)
        print_tsv (&b);
    else
        print_table (&b);
    if (rc || b.errors)
        fprintf (stderr, "store-bench: FAILED (%" PRIu64 " errors, %s)\n", b.errors,
                 cm_strerror (rc));
    cm_zmq_term ();
    free (b.ids);
    free (b.payload);
    free (b.items);
    return rc || b.errors ? 1 : 0;
}
