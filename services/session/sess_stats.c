/*  sess_stats.c - corral-session's statistics in its heartbeat
    (docs/monitor.md): sessions by state, turns started and finished by
    stop reason, events published, workers connected, queue depths.
*/
#include <string.h>

#include "cm_map.h"
#include "proto_beat.h"
#include "sess.h"

//  States a session record can be in; anything else counts as "other".
static const char *const s_states[] = {
    "creating",   "ready", "idle", "running", "awaiting_permission",
    "hibernated", "closed"};
#define NSTATES (sizeof s_states / sizeof s_states[0])

void sess_stats_turn_started (sess_server_t *self)
{
    self->stats.turns_started++;
}

//  A stop reason as a label value: [a-z_] and short, else "other" (a
//  worker's text must not grow the label set without bound).
static bool reason_ok (const char *r)
{
    size_t n = r ? strlen (r) : 0;
    if (n == 0 || n >= sizeof ((sess_stats_t *)0)->reasons[0]) return false;
    for (size_t i = 0; i < n; i++)
        if (!((r[i] >= 'a' && r[i] <= 'z') || r[i] == '_')) return false;
    return true;
}

void sess_stats_turn_finished (sess_server_t *self, const char *stop_reason)
{
    sess_stats_t *st = &self->stats;
    size_t i = SESS_STATS_REASONS;
    if (reason_ok (stop_reason))
        for (i = 0; i < SESS_STATS_REASONS; i++) {
            if (!st->reasons[i][0]) {
                strcpy (st->reasons[i], stop_reason);
                break;
            }
            if (strcmp (st->reasons[i], stop_reason) == 0) break;
        }
    st->finished[i]++;
}

void sess_stats_fill (proto_beat_t *beat, void *arg)
{
    sess_server_t *self = arg;
    const sess_stats_t *st = &self->stats;
    uint64_t by_state[NSTATES + 1] = {0}, unacked = 0, waiting = 0;
    size_t pos = 0;
    void *value;
    while (cm_map_next (self->sessions, &pos, NULL, &value)) {
        const sess_session_t *s = value;
        size_t k = 0;
        while (k < NSTATES && !(s->rec.state && strcmp (s->rec.state, s_states[k]) == 0))
            k++;
        by_state[k]++;
        unacked += s->queued;
        if (s->turn.state == TURN_WAITING) waiting++;
    }
    for (size_t k = 0; k <= NSTATES; k++)
        proto_beat_addv (beat, "corral_sessions", (double)by_state[k], "state",
                         k < NSTATES ? s_states[k] : "other", NULL);
    proto_beat_add (beat, "corral_sessions_open", NULL, (double)self->sessions_open);
    proto_beat_add (beat, "corral_turns_started_total", NULL, (double)st->turns_started);
    for (size_t i = 0; i < SESS_STATS_REASONS && st->reasons[i][0]; i++)
        proto_beat_addv (beat, "corral_turns_finished_total", (double)st->finished[i],
                         "stop_reason", st->reasons[i], NULL);
    if (st->finished[SESS_STATS_REASONS])
        proto_beat_addv (beat, "corral_turns_finished_total",
                         (double)st->finished[SESS_STATS_REASONS], "stop_reason", "other",
                         NULL);
    proto_beat_add (beat, "corral_turns_running", NULL, (double)self->turns_running);
    proto_beat_add (beat, "corral_events_total", NULL, (double)st->events);
    size_t workers = 0;
    for (const sess_worker_t *w = self->workers; w; w = w->next) workers++;
    proto_beat_add (beat, "corral_session_workers_connected", NULL, (double)workers);
    proto_beat_addv (beat, "corral_queue_depth", (double)unacked, "queue",
                     "session_events_unacked", NULL);
    proto_beat_addv (beat, "corral_queue_depth", (double)waiting, "queue",
                     "session_turns_waiting", NULL);
    proto_beat_addv (beat, "corral_queue_depth", (double)cm_map_size (self->store_calls),
                     "queue", "session_store_calls", NULL);
}
