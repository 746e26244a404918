/*  wrk_stats.c - corral-worker's statistics in its heartbeat
    (docs/monitor.md): capacity in use, model call latency (whole call and
    first output), calls and tokens by model, tool durations by tool.

    Label sets stay bounded: at most WRK_STATS_MODELS models and
    WRK_STATS_TOOLS tools are counted apart; later ones count as "other".
    Tool names are the worker's own (a name the model made up is
    "unknown"), model names are the sessions' configuration.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cm_time.h"
#include "proto_beat.h"
#include "wrk_worker.h"

#define WRK_STATS_MODELS 32
#define WRK_STATS_TOOLS  32

typedef struct {
    char name[64];
    proto_hist_t call, first;
    uint64_t ok, failed;
    uint64_t input, output, cache;
} model_stats_t;

typedef struct {
    char name[32];
    proto_hist_t secs;
} tool_stats_t;

struct wrk_stats {
    model_stats_t models[WRK_STATS_MODELS + 1]; //  the last is "other"
    size_t nmodels;
    tool_stats_t tools[WRK_STATS_TOOLS + 1];
    size_t ntools;
};

struct wrk_stats *wrk_stats_new (void)
{
    struct wrk_stats *self = calloc (1, sizeof *self);
    if (!self) return NULL;
    model_stats_t *other = &self->models[WRK_STATS_MODELS];
    strcpy (other->name, "other");
    proto_hist_init (&other->call, proto_hist_latency, proto_hist_latency_n);
    proto_hist_init (&other->first, proto_hist_latency, proto_hist_latency_n);
    strcpy (self->tools[WRK_STATS_TOOLS].name, "other");
    proto_hist_init (&self->tools[WRK_STATS_TOOLS].secs, proto_hist_latency,
                     proto_hist_latency_n);
    return self;
}

void wrk_stats_destroy (struct wrk_stats **self_p)
{
    if (!self_p || !*self_p) return;
    free (*self_p);
    *self_p = NULL;
}

static model_stats_t *model (struct wrk_stats *self, const char *name)
{
    if (!name || !*name) name = "unknown";
    for (size_t i = 0; i < self->nmodels; i++)
        if (strcmp (self->models[i].name, name) == 0) return &self->models[i];
    if (self->nmodels == WRK_STATS_MODELS || strlen (name) >= sizeof self->models[0].name)
        return &self->models[WRK_STATS_MODELS];
    model_stats_t *m = &self->models[self->nmodels++];
    strcpy (m->name, name);
    proto_hist_init (&m->call, proto_hist_latency, proto_hist_latency_n);
    proto_hist_init (&m->first, proto_hist_latency, proto_hist_latency_n);
    return m;
}

static tool_stats_t *tool (struct wrk_stats *self, const char *name)
{
    for (size_t i = 0; i < self->ntools; i++)
        if (strcmp (self->tools[i].name, name) == 0) return &self->tools[i];
    if (self->ntools == WRK_STATS_TOOLS || strlen (name) >= sizeof self->tools[0].name)
        return &self->tools[WRK_STATS_TOOLS];
    tool_stats_t *ts = &self->tools[self->ntools++];
    strcpy (ts->name, name);
    proto_hist_init (&ts->secs, proto_hist_latency, proto_hist_latency_n);
    return ts;
}

static double since (uint64_t start_ns)
{
    return (double)(cm_mono_ns () - start_ns) / 1e9;
}

void wrk_stats_call_start (wrk_turn_t *t)
{
    t->call_start_ns = cm_mono_ns ();
    t->first_output = false;
}

void wrk_stats_call_output (wrk_turn_t *t)
{
    t->first_output = true;
    if (!t->call_start_ns || !t->server->stats) return;
    proto_hist_observe (&model (t->server->stats, t->model)->first,
                        since (t->call_start_ns));
}

void wrk_stats_call_end (wrk_turn_t *t, bool ok, const wrk_usage_t *u)
{
    if (!t->call_start_ns || !t->server->stats) return;
    model_stats_t *m = model (t->server->stats, t->model);
    proto_hist_observe (&m->call, since (t->call_start_ns));
    t->call_start_ns = 0;
    if (!ok) {
        m->failed++;
        return;
    }
    m->ok++;
    if (u) {
        m->input += u->input_tokens;
        m->output += u->output_tokens;
        m->cache += u->cache_tokens;
    }
}

void wrk_stats_tool_start (wrk_turn_t *t, const char *name)
{
    t->tool_start_ns = cm_mono_ns ();
    snprintf (t->tool_name, sizeof t->tool_name, "%s", name);
}

void wrk_stats_tool_end (wrk_turn_t *t)
{
    //  A call refused before it ran has no start: not a duration.
    if (!t->tool_start_ns || !t->server->stats) return;
    proto_hist_observe (&tool (t->server->stats, t->tool_name)->secs,
                        since (t->tool_start_ns));
    t->tool_start_ns = 0;
}

static void fill_model (proto_beat_t *beat, const model_stats_t *m)
{
    proto_beat_hist (beat, "corral_model_call_seconds", &m->call, "model", m->name, NULL);
    proto_beat_hist (beat, "corral_model_first_token_seconds", &m->first, "model",
                     m->name, NULL);
    proto_beat_addv (beat, "corral_model_calls_total", (double)m->ok, "model", m->name,
                     "outcome", "ok", NULL);
    proto_beat_addv (beat, "corral_model_calls_total", (double)m->failed, "model",
                     m->name, "outcome", "failed", NULL);
    proto_beat_addv (beat, "corral_model_tokens_total", (double)m->input, "model",
                     m->name, "kind", "input", NULL);
    proto_beat_addv (beat, "corral_model_tokens_total", (double)m->output, "model",
                     m->name, "kind", "output", NULL);
    proto_beat_addv (beat, "corral_model_tokens_total", (double)m->cache, "model",
                     m->name, "kind", "cache", NULL);
}

void wrk_stats_fill (proto_beat_t *beat, void *arg)
{
    wrk_server_t *self = arg;
    struct wrk_stats *st = self->stats;
    proto_beat_add (beat, "corral_worker_capacity", NULL, (double)self->cfg->capacity);
    proto_beat_add (beat, "corral_worker_turns_running", NULL, (double)self->nturns);
    proto_beat_add (beat, "corral_worker_orphans_reaped_total", NULL,
                    (double)self->orphans_reaped);
    //  docs/limits.md
    proto_beat_add (beat, "corral_worker_orphans_killed_total", NULL,
                    (double)self->orphans_killed);
    proto_beat_add (beat, "corral_worker_memory_kills_total", NULL,
                    (double)self->mem_kills);
    size_t outbox = 0;
    for (const wrk_out_t *o = self->outbox; o; o = o->next) outbox++;
    proto_beat_addv (beat, "corral_queue_depth", (double)outbox, "queue", "worker_outbox",
                     NULL);
    for (size_t i = 0; i < st->nmodels; i++) fill_model (beat, &st->models[i]);
    if (st->models[WRK_STATS_MODELS].call.count)
        fill_model (beat, &st->models[WRK_STATS_MODELS]);
    for (size_t i = 0; i < st->ntools; i++)
        proto_beat_hist (beat, "corral_tool_seconds", &st->tools[i].secs, "tool",
                         st->tools[i].name, NULL);
    if (st->tools[WRK_STATS_TOOLS].secs.count)
        proto_beat_hist (beat, "corral_tool_seconds", &st->tools[WRK_STATS_TOOLS].secs,
                         "tool", "other", NULL);
}
