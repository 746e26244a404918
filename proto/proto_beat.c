/*  proto_beat.c - the heartbeat publisher every service runs (see proto_beat.h). */
#include "proto_beat.h"

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>
#include <zmq.h>

#include "cm_log.h"
#include "cm_strbuf.h"
#include "cm_time.h"
#include "cm_zmq.h"

#define BEAT_HWM 4 //  beats queued for a slow monitor at most

typedef struct {
    size_t name, labels; //  offsets into text; labels SIZE_MAX = none
    double value;
} entry_t;

struct proto_beat {
    void *pub; //  NULL: collect only
    char service[32];
    char instance[160];
    char host[128];
    char topic[40];
    int64_t started_ms; //  monotonic
    int64_t next_ms;    //  next beat due (monotonic)
    entry_t *entries;
    size_t count, cap;
    bool overflow_logged;
    cm_strbuf_t text;
    proto_stat_t *stats; //  built at collect, pointing into text
    size_t stats_cap;
    proto_mon_heartbeat_t hb;
    proto_buf_t buf;
};

const double proto_hist_latency[] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
                                     0.01,   0.025,   0.05,   0.1,   0.25,   0.5,
                                     1,      2.5,     5,      10,    30,     60};
const size_t proto_hist_latency_n = sizeof proto_hist_latency / sizeof (double);

proto_beat_t *proto_beat_new (const char *endpoint, const char *service,
                              const char *instance)
{
    proto_beat_t *self = calloc (1, sizeof *self);
    if (!self) return NULL;
    gethostname (self->host, sizeof self->host - 1);
    snprintf (self->service, sizeof self->service, "%s", service ? service : "unknown");
    if (instance && *instance)
        snprintf (self->instance, sizeof self->instance, "%s", instance);
    else
        snprintf (self->instance, sizeof self->instance, "%s-%d", self->host,
                  (int)getpid ());
    snprintf (self->topic, sizeof self->topic, "hb/%s/", self->service);
    self->started_ms = cm_mono_ms ();
    self->next_ms = self->started_ms; //  the first beat goes at once
    if (endpoint && *endpoint) {
        self->pub = cm_zmq_socket (ZMQ_PUB, BEAT_HWM);
        if (!self->pub) {
            free (self);
            return NULL;
        }
        //  No linger (a stale beat is worthless), and a missing monitor is
        //  retried with backoff up to once a second, not ten times.
        int linger = 0, ivl_max = 1000;
        zmq_setsockopt (self->pub, ZMQ_LINGER, &linger, sizeof linger);
        zmq_setsockopt (self->pub, ZMQ_RECONNECT_IVL_MAX, &ivl_max, sizeof ivl_max);
        if (cm_zmq_connect (self->pub, endpoint)) {
            cm_warn ("heartbeats to %s are off: the endpoint cannot be used", endpoint);
            cm_zmq_close (&self->pub);
        }
    }
    return self;
}

void proto_beat_destroy (proto_beat_t **self_p)
{
    proto_beat_t *self = self_p ? *self_p : NULL;
    if (!self) return;
    cm_zmq_close (&self->pub);
    free (self->entries);
    free (self->stats);
    cm_strbuf_free (&self->text);
    proto_buf_fini (&self->buf);
    free (self);
    *self_p = NULL;
}

const char *proto_beat_instance (const proto_beat_t *self)
{
    return self->instance;
}

int64_t proto_beat_due_ms (const proto_beat_t *self, int64_t now_ms)
{
    return self->next_ms > now_ms ? self->next_ms - now_ms : 0;
}

/* ---- adding ---------------------------------------------------------------- */

static void add_entry (proto_beat_t *self, const char *name, const char *labels,
                       double value)
{
    if (!name || !*name || strlen (name) > PROTO_BEAT_NAME_MAX) return;
    if (self->count == PROTO_BEAT_MAX_STATS) {
        if (!self->overflow_logged)
            cm_warn ("a heartbeat holds %d statistics at most; the rest are left out",
                     PROTO_BEAT_MAX_STATS);
        self->overflow_logged = true;
        return;
    }
    if (self->count == self->cap) {
        size_t cap = self->cap ? self->cap * 2 : 64;
        entry_t *e = realloc (self->entries, cap * sizeof *e);
        if (!e) return;
        self->entries = e;
        self->cap = cap;
    }
    entry_t *e = &self->entries[self->count];
    e->name = self->text.len;
    cm_strbuf_put (&self->text, name, strlen (name) + 1);
    e->labels = SIZE_MAX;
    if (labels && *labels) {
        e->labels = self->text.len;
        cm_strbuf_put (&self->text, labels, strlen (labels) + 1);
    }
    e->value = value;
    if (!self->text.oom) self->count++;
}

void proto_beat_add (proto_beat_t *self, const char *name, const char *labels,
                     double value)
{
    if (labels && strlen (labels) > PROTO_BEAT_LABELS_MAX) return;
    add_entry (self, name, labels, value);
}

int proto_labels_vfmt (char *out, size_t outlen, va_list pairs)
{
    size_t len = 0;
    if (outlen) out[0] = 0;
    for (;;) {
        const char *name = va_arg (pairs, const char *);
        if (!name) break;
        const char *value = va_arg (pairs, const char *);
        if (!value) value = "";
        char esc[2 * PROTO_BEAT_VALUE_MAX + 1];
        size_t n = 0, used = 0;
        for (const char *p = value; *p && used < PROTO_BEAT_VALUE_MAX; p++, used++) {
            if (*p == '\\' || *p == '"') {
                esc[n++] = '\\';
                esc[n++] = *p;
            } else if (*p == '\n') {
                esc[n++] = '\\';
                esc[n++] = 'n';
            } else
                esc[n++] = *p;
        }
        //  A cut must not split a UTF-8 sequence: when the next byte
        //  continues one, drop its start from the copy.
        if (((unsigned char)value[used] & 0xC0) == 0x80) {
            while (n && ((unsigned char)esc[n - 1] & 0xC0) == 0x80) n--;
            if (n && ((unsigned char)esc[n - 1] & 0xC0) == 0xC0) n--;
        }
        esc[n] = 0;
        int w = snprintf (out + len, outlen > len ? outlen - len : 0, "%s%s=\"%s\"",
                          len ? "," : "", name, esc);
        if (w < 0 || len + (size_t)w >= outlen) {
            if (outlen) out[0] = 0;
            return -1;
        }
        len += (size_t)w;
    }
    return (int)len;
}

int proto_labels_fmt (char *out, size_t outlen, ...)
{
    va_list ap;
    va_start (ap, outlen);
    int rc = proto_labels_vfmt (out, outlen, ap);
    va_end (ap);
    return rc;
}

void proto_beat_addv (proto_beat_t *self, const char *name, double value, ...)
{
    char labels[PROTO_BEAT_LABELS_MAX + 1];
    va_list ap;
    va_start (ap, value);
    int rc = proto_labels_vfmt (labels, sizeof labels, ap);
    va_end (ap);
    if (rc >= 0) add_entry (self, name, labels, value);
}

/* ---- histograms -------------------------------------------------------------- */

void proto_hist_init (proto_hist_t *h, const double *bounds, size_t nbounds)
{
    memset (h, 0, sizeof *h);
    h->bounds = bounds;
    h->nbounds = nbounds > PROTO_HIST_MAX_BUCKETS ? PROTO_HIST_MAX_BUCKETS : nbounds;
}

void proto_hist_observe (proto_hist_t *h, double value)
{
    if (isnan (value)) return;
    size_t i = 0;
    while (i < h->nbounds && value > h->bounds[i]) i++;
    h->counts[i]++;
    h->count++;
    h->sum += value;
}

void proto_beat_vhist (proto_beat_t *self, const char *name, const proto_hist_t *h,
                       va_list pairs)
{
    char labels[PROTO_BEAT_LABELS_MAX + 1], sample[PROTO_BEAT_NAME_MAX + 16];
    char withle[PROTO_BEAT_LABELS_MAX + 40];
    if (strlen (name) > PROTO_BEAT_NAME_MAX - 7) return;
    if (proto_labels_vfmt (labels, sizeof labels, pairs) < 0) return;
    uint64_t cum = 0;
    snprintf (sample, sizeof sample, "%s_bucket", name);
    for (size_t i = 0; i <= h->nbounds; i++) {
        cum += h->counts[i];
        char le[32];
        if (i < h->nbounds)
            snprintf (le, sizeof le, "%.6g", h->bounds[i]);
        else
            snprintf (le, sizeof le, "+Inf");
        snprintf (withle, sizeof withle, "%s%sle=\"%s\"", labels, *labels ? "," : "", le);
        add_entry (self, sample, withle, (double)cum);
    }
    snprintf (sample, sizeof sample, "%s_sum", name);
    add_entry (self, sample, labels, h->sum);
    snprintf (sample, sizeof sample, "%s_count", name);
    add_entry (self, sample, labels, (double)h->count);
}

void proto_beat_hist (proto_beat_t *self, const char *name, const proto_hist_t *h, ...)
{
    va_list ap;
    va_start (ap, h);
    proto_beat_vhist (self, name, h, ap);
    va_end (ap);
}

/* ---- the process's own statistics ---------------------------------------------- */

void proto_proc_stats (proto_proc_stats_t *out)
{
    out->rss_bytes = out->cpu_seconds = out->open_fds = -1;
    FILE *f = fopen ("/proc/self/statm", "r");
    if (f) {
        unsigned long size = 0, resident = 0;
        if (fscanf (f, "%lu %lu", &size, &resident) == 2)
            out->rss_bytes = (double)resident * (double)sysconf (_SC_PAGESIZE);
        fclose (f);
    }
    struct rusage ru;
    if (getrusage (RUSAGE_SELF, &ru) == 0)
        out->cpu_seconds = (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
                           (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
    DIR *d = opendir ("/proc/self/fd");
    if (d) {
        long n = 0;
        struct dirent *e;
        while ((e = readdir (d)))
            if (e->d_name[0] != '.') n++;
        closedir (d);
        out->open_fds = (double)(n - 1); //  not the one opendir holds
    }
}

/* ---- collect and send ------------------------------------------------------------ */

const proto_mon_heartbeat_t *proto_beat_collect (proto_beat_t *self,
                                                 proto_beat_fill_fn fill, void *arg)
{
    self->count = 0;
    cm_strbuf_free (&self->text);
    int64_t up = cm_mono_ms () - self->started_ms;
    proto_proc_stats_t ps;
    proto_proc_stats (&ps);
    if (ps.rss_bytes >= 0)
        proto_beat_add (self, "corral_process_resident_memory_bytes", NULL, ps.rss_bytes);
    if (ps.cpu_seconds >= 0)
        proto_beat_add (self, "corral_process_cpu_seconds_total", NULL, ps.cpu_seconds);
    if (ps.open_fds >= 0)
        proto_beat_add (self, "corral_process_open_fds", NULL, ps.open_fds);
    proto_beat_add (self, "corral_process_uptime_seconds", NULL, (double)up / 1000.0);
    if (fill) fill (self, arg);

    if (self->stats_cap < self->count) {
        proto_stat_t *s = realloc (self->stats, self->count * sizeof *s);
        if (s) {
            self->stats = s;
            self->stats_cap = self->count;
        }
    }
    size_t n = self->count <= self->stats_cap ? self->count : 0;
    for (size_t i = 0; i < n; i++) {
        const entry_t *e = &self->entries[i];
        self->stats[i] = (proto_stat_t){
            .name = self->text.p + e->name,
            .value = e->value,
            .labels = e->labels == SIZE_MAX ? NULL : self->text.p + e->labels};
    }
    self->hb = (proto_mon_heartbeat_t){.service = self->service,
                                       .instance = self->instance,
                                       .pid = (uint64_t)getpid (),
                                       .host = self->host,
                                       .uptime_ms = up > 0 ? (uint64_t)up : 0,
                                       .stats = {self->stats, n}};
    return &self->hb;
}

int proto_beat_tick (proto_beat_t *self, int64_t now_ms, proto_beat_fill_fn fill,
                     void *arg)
{
    if (now_ms < self->next_ms) return 0;
    //  Keep the cadence, but never try to catch up on missed beats.
    self->next_ms += PROTO_BEAT_MS;
    if (self->next_ms <= now_ms) self->next_ms = now_ms + PROTO_BEAT_MS;
    if (!self->pub) return 0;
    const proto_mon_heartbeat_t *hb = proto_beat_collect (self, fill, arg);
    proto_buf_reset (&self->buf);
    int rc = proto_encode (&self->buf, PROTO_MON_HEARTBEAT, 0, hb);
    if (rc) {
        cm_error ("cannot encode a heartbeat: %s", cm_strerror (rc));
        return rc;
    }
    cm_frame_t frames[2] = {{self->topic, strlen (self->topic)},
                            {self->buf.data, self->buf.size}};
    rc = cm_zmq_sendv (self->pub, frames, 2, ZMQ_DONTWAIT);
    return rc ? rc : 1;
}
