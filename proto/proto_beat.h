/*  proto_beat.h - a service's heartbeat to corral-monitor (DESIGN §2, §3, §8).

    Every service owns one proto_beat_t.  Once a second (proto_beat_tick
    from its loop) the beat collects the process's common statistics
    (resident memory, CPU seconds, open descriptors, uptime), asks the
    service for its own through a fill callback, and publishes one
    monitor.heartbeat on a PUB socket connected to the monitor's SUB
    (CORRAL_MONITOR_IN_ENDPOINT).  Frames: [topic "hb/<service>/"][message].

    A missing monitor costs nothing: a connecting PUB never blocks, a PUB
    with no subscriber drops, the socket's HWM is tiny and its linger is 0
    (a stale beat is worthless), so a stop never waits for the monitor.

    Statistics are {name, value, labels} (proto_stat_t): names are
    Prometheus metric names ("corral_turns_started_total"); labels are the
    label set's text without braces (model="x",kind="input").  The monitor
    knows each family's type and help (services/monitor/mon_families.c) and
    adds the service and instance labels.  A histogram goes out as its
    samples: <name>_bucket{le=...} (cumulative), <name>_sum, <name>_count.

    Not thread-safe; one beat per process.
*/
#ifndef PROTO_BEAT_H
#define PROTO_BEAT_H

#include <stdarg.h>
#include <stdint.h>

#include "proto.h"

#define PROTO_BEAT_MS          1000 //  one beat a second
#define PROTO_BEAT_MAX_STATS   4096 //  stats in one beat; more are dropped (logged once)
#define PROTO_BEAT_NAME_MAX    128  //  bytes of a metric name
#define PROTO_BEAT_LABELS_MAX  512  //  bytes of a label set's text
#define PROTO_BEAT_VALUE_MAX   128  //  bytes of one label value (longer is cut)
#define PROTO_HIST_MAX_BUCKETS 20   //  finite upper bounds of a histogram

typedef struct proto_beat proto_beat_t;

//  Called once per beat to add the service's own statistics.
typedef void (*proto_beat_fill_fn) (proto_beat_t *beat, void *arg);

//  A beat for service ("store", "session", "worker", "gateway", "monitor")
//  and instance (NULL: "<host>-<pid>").  endpoint NULL or "" makes a beat
//  that only collects (the monitor's own, tests): nothing is sent.
//  Returns NULL when out of memory or when the socket cannot be made
//  (logged); a bad endpoint is logged and the beat stays silent.
proto_beat_t *proto_beat_new (const char *endpoint, const char *service,
                              const char *instance);
void proto_beat_destroy (proto_beat_t **self_p);

const char *proto_beat_instance (const proto_beat_t *self);

//  Milliseconds until the next beat is due (0: now), for a poll timeout.
int64_t proto_beat_due_ms (const proto_beat_t *self, int64_t now_ms);

//  When a beat is due at now_ms (monotonic), collect and send it.
//  Returns 1 when one was sent, 0 when none was due, or a negative code
//  (the beat is then skipped; the next one comes a second later).
int proto_beat_tick (proto_beat_t *self, int64_t now_ms, proto_beat_fill_fn fill,
                     void *arg);

//  Collect a beat without sending it: the common statistics, then fill.
//  The record and everything it points to stay valid until the next
//  collect/tick/destroy on this beat.
const proto_mon_heartbeat_t *proto_beat_collect (proto_beat_t *self,
                                                 proto_beat_fill_fn fill, void *arg);

/* ---- adding statistics (from a fill callback) ------------------------ */

//  One sample.  labels is label-set text (NULL or "" for none), copied.
void proto_beat_add (proto_beat_t *self, const char *name, const char *labels,
                     double value);
//  One sample with labels given as NULL-terminated name, value pairs; the
//  values are escaped (\\, \", \n) and cut at PROTO_BEAT_VALUE_MAX bytes:
//      proto_beat_addv (b, "corral_model_tokens_total", n, "model", m,
//                       "kind", "input", NULL);
void proto_beat_addv (proto_beat_t *self, const char *name, double value, ...);

/* ---- histograms ------------------------------------------------------- */

typedef struct {
    const double *bounds; //  finite upper bounds, ascending (static storage)
    size_t nbounds;       //  at most PROTO_HIST_MAX_BUCKETS
    uint64_t counts[PROTO_HIST_MAX_BUCKETS + 1]; //  per bucket; [nbounds] = +Inf
    uint64_t count;
    double sum;
} proto_hist_t;

//  Bounds in seconds for latencies from 100 us to 60 s, and their number.
extern const double proto_hist_latency[];
extern const size_t proto_hist_latency_n;

void proto_hist_init (proto_hist_t *h, const double *bounds, size_t nbounds);
void proto_hist_observe (proto_hist_t *h, double value);
//  The histogram's samples: name_bucket (cumulative, with le, +Inf last),
//  name_sum, name_count; labels as in proto_beat_addv (NULL-terminated).
void proto_beat_hist (proto_beat_t *self, const char *name, const proto_hist_t *h, ...);
void proto_beat_vhist (proto_beat_t *self, const char *name, const proto_hist_t *h,
                       va_list pairs);

/* ---- helpers ---------------------------------------------------------- */

//  Format name="value" pairs (va_list of const char *, NULL-terminated)
//  into out as label-set text, escaping values.  Returns the length, or
//  -1 when it does not fit outlen (out is then "").
int proto_labels_vfmt (char *out, size_t outlen, va_list pairs);
int proto_labels_fmt (char *out, size_t outlen, ...);

//  The process's common statistics, read now: resident set in bytes
//  (/proc/self/statm), CPU seconds (user + system), open descriptors
//  (/proc/self/fd).  A value that cannot be read is -1.
typedef struct {
    double rss_bytes, cpu_seconds, open_fds;
} proto_proc_stats_t;
void proto_proc_stats (proto_proc_stats_t *out);

#endif
