/*  mon_families.c - the metric families services may report in heartbeats.

    One row per family: the monitor renders HELP and TYPE from here, once,
    and drops a sample whose name is not listed (counted as "unknown"), so
    the output stays valid whatever a service sends.  A service that
    reports a new statistic adds its row here (and to docs/monitor.md).
    Names follow Prometheus conventions: base units (seconds, bytes),
    counters end in _total.  The gateway's own corral_gateway_* metrics
    are not here: the gateway serves them itself, next to this output.
*/
#include <string.h>

#include "mon.h"

const mon_family_t mon_families[] = {
    /* every service (proto_beat.c) */
    {"corral_process_resident_memory_bytes", MON_GAUGE,
     "Resident set size of the process in bytes."},
    {"corral_process_cpu_seconds_total", MON_COUNTER,
     "CPU time (user and system) the process used, in seconds."},
    {"corral_process_open_fds", MON_GAUGE, "File descriptors the process holds open."},
    {"corral_process_uptime_seconds", MON_GAUGE, "Seconds since the process started."},
    {"corral_queue_depth", MON_GAUGE,
     "Items waiting in a service's internal queue, by queue (docs/monitor.md lists "
     "them)."},
    /* gateway */
    {"corral_connections", MON_GAUGE, "Open client connections of a gateway, by kind."},
    {"corral_client_requests_total", MON_COUNTER,
     "Client requests (ACP and REST) a gateway received."},
    /* monitor: the policy engine (mon_policy.c, docs/policies.md) */
    {"corral_policy_actions_total", MON_COUNTER,
     "Policy actions the session service carried out, by policy and action."},
    {"corral_policy_sessions_tracked", MON_GAUGE,
     "Live sessions the policy engine tracks."},
    /* session */
    {"corral_sessions", MON_GAUGE,
     "Sessions held by the session service, by state (those loaded since it started)."},
    {"corral_sessions_open", MON_GAUGE, "Sessions not closed, stored or loaded."},
    {"corral_turns_started_total", MON_COUNTER, "Turns accepted from a prompt."},
    {"corral_turns_finished_total", MON_COUNTER, "Turns that ended, by stop reason."},
    {"corral_turns_running", MON_GAUGE, "Turns waiting for a worker or running."},
    {"corral_events_total", MON_COUNTER,
     "Session events acknowledged by the store and published; rate() gives events/s."},
    {"corral_session_workers_connected", MON_GAUGE,
     "Workers registered with the session service and heartbeating."},
    /* store */
    {"corral_store_commit_seconds", MON_HISTOGRAM,
     "Latency of one group commit (write transaction and fsync), in seconds."},
    {"corral_store_commits_total", MON_COUNTER, "Group commits since the store started."},
    {"corral_store_requests_total", MON_COUNTER,
     "Requests the store served since it started."},
    {"corral_store_map_size_bytes", MON_GAUGE, "Current LMDB map size in bytes."},
    {"corral_store_map_used_bytes", MON_GAUGE, "Bytes of the LMDB map in use."},
    {"corral_store_entries", MON_GAUGE, "Entries in each LMDB database."},
    /* worker */
    {"corral_worker_capacity", MON_GAUGE, "Turns a worker can run at once."},
    {"corral_worker_turns_running", MON_GAUGE,
     "Turns a worker is running (capacity in use)."},
    {"corral_worker_orphans_reaped_total", MON_COUNTER,
     "Orphaned processes a worker found and reaped."},
    {"corral_worker_orphans_killed_total", MON_COUNTER,
     "Processes left by dead workers that a worker's sweep killed (docs/limits.md)."},
    {"corral_worker_memory_kills_total", MON_COUNTER,
     "Commands killed because their process tree exceeded the turn memory limit."},
    {"corral_model_call_seconds", MON_HISTOGRAM,
     "Duration of a model call, from the request to the end of its stream, by model."},
    {"corral_model_first_token_seconds", MON_HISTOGRAM,
     "Time from a model request to its first streamed output, by model."},
    {"corral_model_calls_total", MON_COUNTER, "Model calls by model and outcome."},
    {"corral_model_tokens_total", MON_COUNTER,
     "Tokens by model and kind (input, output, cache)."},
    {"corral_tool_seconds", MON_HISTOGRAM, "Duration of a tool call, by tool."},
};
const size_t mon_nfamilies = sizeof mon_families / sizeof mon_families[0];

const char *mon_type_name (mon_type_t type)
{
    return type == MON_COUNTER ? "counter" : type == MON_GAUGE ? "gauge" : "histogram";
}

int mon_family_of (const char *sample, int *suffix)
{
    static const char *const sfx[] = {"_bucket", "_sum", "_count"};
    size_t len = strlen (sample);
    for (size_t i = 0; i < mon_nfamilies; i++) {
        const mon_family_t *f = &mon_families[i];
        size_t fl = strlen (f->name);
        if (f->type != MON_HISTOGRAM) {
            if (len == fl && memcmp (sample, f->name, fl) == 0) {
                *suffix = 0;
                return (int)i;
            }
            continue;
        }
        if (len <= fl || memcmp (sample, f->name, fl) != 0) continue;
        for (int k = 0; k < 3; k++)
            if (strcmp (sample + fl, sfx[k]) == 0) {
                *suffix = k + 1;
                return (int)i;
            }
    }
    return -1;
}
