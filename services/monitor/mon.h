/*  mon.h - corral-monitor: liveness, readiness and the system's metrics
    (DESIGN §8).

    Sockets (DESIGN §2):
      in   SUB    bind  every service's monitor.heartbeat, once a second
                        (CORRAL_MONITOR_IN_ENDPOINT, tcp://127.0.0.1:7705)
      api  ROUTER bind  monitor.health -> monitor.health.reply,
                        monitor.metrics -> monitor.text (Prometheus 0.0.4),
                        monitor.status -> monitor.text (JSON)
                        (CORRAL_MONITOR_ENDPOINT, tcp://127.0.0.1:7706)
    The policy engine (mon_policy.c, not in this file set) adds its own
    sockets - an event SUB on the session service's PUB and a DEALER to the
    session service's client API for monitor.action - to the same loop; see
    the "policies" marks in mon_server.c.

    Files, one concern each:
      mon_families.c  the table of metric families services may report:
                      name, type, help (one row per family)
      mon_table.c     the liveness table: one entry per (service, instance)
                      holding its last heartbeat, validated; alive means a
                      heartbeat within MON_ALIVE_MS; readiness
      mon_render.c    Prometheus text and the status JSON from the table
      mon_server.c    the loop: SUB, ROUTER, the monitor's own beat, stop

    Readiness (monitor.health): ready when a store is alive, a session
    service is alive, and the session service counts at least one worker
    connected (its corral_session_workers_connected statistic: a worker is
    connected when the session service has its READY and heartbeats, which
    is what a turn needs - a worker's own heartbeat to the monitor proves
    only that the process runs).  Reasons, first failing rule wins:
    "store unreachable", "session service unreachable", "no worker
    connected".

    Everything that arrives is untrusted: a heartbeat is decoded by the
    codec (validated before unpacking), then each field is checked (names,
    label text, sizes); what does not pass is dropped and counted
    (corral_monitor_dropped_total{reason}), never trusted into the output.
*/
#ifndef MON_H
#define MON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mon_policy.h"
#include "proto.h"

#define MON_ALIVE_MS      3000   //  alive: a heartbeat within this
#define MON_FORGET_MS     300000 //  an instance silent this long is forgotten
#define MON_MAX_INSTANCES 1024   //  (service, instance) pairs known at most
#define MON_MAX_SAMPLES   4096   //  samples kept from one heartbeat
#define MON_SERVICE_MAX   31     //  bytes of a service name ([a-z0-9_-])
#define MON_INSTANCE_MAX  159    //  bytes of an instance id or host name
#define MON_NAME_MAX      128    //  bytes of a metric name
#define MON_LABELS_MAX    512    //  bytes of a sample's label text

/* ---- metric families (mon_families.c) ------------------------------ */

typedef enum { MON_COUNTER, MON_GAUGE, MON_HISTOGRAM } mon_type_t;

typedef struct {
    const char *name; //  family name; a histogram's samples add _bucket/_sum/_count
    mon_type_t type;
    const char *help;
} mon_family_t;

extern const mon_family_t mon_families[];
extern const size_t mon_nfamilies;
const char *mon_type_name (mon_type_t type);

//  The family a sample name belongs to (its index), or -1.  *suffix gets
//  0 for a plain sample, 1 for _bucket, 2 for _sum, 3 for _count.
int mon_family_of (const char *sample, int *suffix);

/* ---- the liveness table (mon_table.c) ------------------------------ */

typedef enum {
    MON_DROP_UNDECODABLE, //  not a valid catalogue message
    MON_DROP_FRAMES,      //  not [topic][message]
    MON_DROP_TYPE,        //  not a monitor.heartbeat
    MON_DROP_IDENTITY,    //  bad service / instance / host
    MON_DROP_FULL,        //  MON_MAX_INSTANCES reached
    MON_DROP_UNKNOWN,     //  a sample of no known family
    MON_DROP_LABELS,      //  a sample with bad label text
    MON_DROP_REQUEST,     //  a bad request on the API socket
    MON_DROP_DUPLICATE,   //  a series sent twice in one heartbeat (the first is kept)
    MON_DROP_COUNT
} mon_drop_t;
extern const char *const mon_drop_names[MON_DROP_COUNT];

typedef struct {
    uint16_t family;
    uint8_t suffix; //  as mon_family_of
    const char *name;
    const char *labels; //  validated label text, "" for none
    double value;
} mon_sample_t;

typedef struct {
    char service[MON_SERVICE_MAX + 1];
    char instance[MON_INSTANCE_MAX + 1];
    char host[MON_INSTANCE_MAX + 1];
    uint64_t pid, uptime_ms;
    int64_t first_ms, last_ms; //  monotonic: first and last heartbeat
    uint64_t beats;
    mon_sample_t *samples; //  the last heartbeat's, sorted by family
    size_t nsamples;
    char *text; //  one block holding the samples' names and labels
} mon_inst_t;

typedef struct {
    mon_inst_t **insts; //  ordered by (service, instance)
    size_t count, cap;
    uint64_t beats;                   //  heartbeats taken in
    uint64_t dropped[MON_DROP_COUNT]; //  by reason
} mon_table_t;

void mon_table_init (mon_table_t *t);
void mon_table_fini (mon_table_t *t);
//  Take in one decoded heartbeat at now (monotonic ms).  Returns 0, or
//  CM_E_INVALID (identity refused) / CM_E_CAPACITY (table full) /
//  CM_E_NOMEM; samples that fail their checks are dropped and counted
//  while the rest are kept.
int mon_table_ingest (mon_table_t *t, const proto_mon_heartbeat_t *hb, int64_t now);
//  Take in the raw bytes of a heartbeat message (decode included).
int mon_table_ingest_bytes (mon_table_t *t, proto_msg_t *scratch, const void *data,
                            size_t size, int64_t now);
//  Forget instances silent for MON_FORGET_MS.
void mon_table_sweep (mon_table_t *t, int64_t now);
bool mon_inst_alive (const mon_inst_t *inst, int64_t now);
//  Value of a sample without labels of an instance; def when absent.
double mon_inst_value (const mon_inst_t *inst, const char *name, double def);
//  Count a drop.
void mon_table_drop (mon_table_t *t, mon_drop_t why);

//  Readiness now.  *reason is a static string (NULL when ready).
bool mon_ready (const mon_table_t *t, int64_t now, const char **reason);
//  Fill a health reply; services points into statuses (cap entries, at
//  most MON_MAX_INSTANCES needed), whose strings point into the table.
void mon_health (const mon_table_t *t, int64_t now, proto_mon_health_t *out,
                 proto_service_status_t *statuses, size_t cap);

/* ---- rendering (mon_render.c) -------------------------------------- */

//  The system's metrics as Prometheus text format 0.0.4: each family's
//  HELP and TYPE once, then its samples from every alive instance with
//  service and instance labels added; then the monitor's own families
//  (corral_up, corral_heartbeat_age_seconds, corral_ready,
//  corral_monitor_*).  Returns malloc'd text, NULL when out of memory.
char *mon_render_metrics (const mon_table_t *t, int64_t now);
//  The status document (JSON): readiness and every known instance.
char *mon_render_status (const mon_table_t *t, int64_t now);
//  Escape a label value into out (\\, \", \n); returns out.
char *mon_escape_label (const char *value, char *out, size_t outlen);
//  Check label text as a service sent it: name="value" pairs separated by
//  commas, names [a-zA-Z_][a-zA-Z0-9_]* and not reserved (service,
//  instance, __*), values valid UTF-8 with only \\ \" \n escapes, no
//  name twice; le present exactly when want_le.  Returns 0 or CM_E_INVALID.
int mon_labels_check (const char *labels, bool want_le);

/* ---- the server (mon_server.c) ------------------------------------- */

typedef struct {
    char *in_endpoint;  //  SUB bind
    char *api_endpoint; //  ROUTER bind
    char *log_level;
    mon_policy_config_t policy; //  the policy engine's options (mon_policy.h)
} mon_config_t;

struct proto_beat;
struct mon_policy; //  mon_policy.h (the policy engine); NULL until wired in

typedef struct mon_server {
    mon_config_t *cfg;
    void *in, *api; //  SUB (heartbeats), ROUTER (requests)
    mon_table_t table;
    struct proto_beat *beat; //  the monitor's own statistics (collected, not sent)
    proto_msg_t msg;         //  scratch for decoding
    proto_buf_t buf;         //  scratch for encoding replies
    proto_service_status_t statuses[MON_MAX_INSTANCES];
    int64_t next_beat_ms, next_sweep_ms;
    struct mon_policy *policy;
} mon_server_t;

//  Run until SIGTERM/SIGINT.  Returns 0, or a negative code when the
//  sockets could not be set up.
int mon_server_run (mon_config_t *cfg);
//  Answer one request body from the API socket into self->buf (the reply
//  message).  Public for tests and the fuzz target.
void mon_server_answer (mon_server_t *self, const void *data, size_t size, int64_t now);

#endif
