/*  mon_render.c - the table as Prometheus text (format 0.0.4) and as JSON.

    Prometheus rules kept here (promtool check metrics checks them): every
    family's HELP and TYPE appear once, before its samples, and all its
    samples are together; label values are escaped; histogram buckets are
    cumulative with +Inf last (the publisher sends them so; mon_table
    checks their labels).  Only alive instances' samples are shown: a dead
    instance's last values would be stale, so it appears only in corral_up
    (0) until it is forgotten.
*/
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cm_strbuf.h"
#include "mon.h"

char *mon_escape_label (const char *value, char *out, size_t outlen)
{
    size_t n = 0;
    for (const char *p = value; *p && n + 3 < outlen; p++) {
        if (*p == '\\' || *p == '"') {
            out[n++] = '\\';
            out[n++] = *p;
        } else if (*p == '\n') {
            out[n++] = '\\';
            out[n++] = 'n';
        } else
            out[n++] = *p;
    }
    if (outlen) out[n] = 0;
    return out;
}

static void put_value (cm_strbuf_t *b, double v)
{
    if (isnan (v))
        cm_strbuf_puts (b, " NaN\n");
    else if (isinf (v))
        cm_strbuf_puts (b, v > 0 ? " +Inf\n" : " -Inf\n");
    else
        cm_strbuf_putf (b, " %.15g\n", v);
}

static void header (cm_strbuf_t *b, const char *name, const char *type, const char *help)
{
    cm_strbuf_putf (b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

//  name{service="s",instance="i"[,labels]} value
static void sample (cm_strbuf_t *b, const char *name, const mon_inst_t *inst,
                    const char *labels, double v)
{
    char inst_esc[2 * MON_INSTANCE_MAX + 4];
    mon_escape_label (inst->instance, inst_esc, sizeof inst_esc);
    cm_strbuf_putf (b, "%s{service=\"%s\",instance=\"%s\"%s%s}", name, inst->service,
                    inst_esc, labels && *labels ? "," : "", labels ? labels : "");
    put_value (b, v);
}

char *mon_render_metrics (const mon_table_t *t, int64_t now)
{
    cm_strbuf_t b = {0};
    for (size_t f = 0; f < mon_nfamilies; f++) {
        const mon_family_t *fam = &mon_families[f];
        bool headed = false;
        for (size_t i = 0; i < t->count; i++) {
            const mon_inst_t *inst = t->insts[i];
            if (!mon_inst_alive (inst, now)) continue;
            for (size_t k = 0; k < inst->nsamples; k++) {
                const mon_sample_t *s = &inst->samples[k];
                if (s->family != f) continue;
                if (!headed) header (&b, fam->name, mon_type_name (fam->type), fam->help);
                headed = true;
                sample (&b, s->name, inst, s->labels, s->value);
            }
        }
    }

    //  The monitor's own families.
    if (t->count) {
        header (&b, "corral_up", "gauge",
                "1 when the instance's last heartbeat is at most 3 s old, else 0.");
        for (size_t i = 0; i < t->count; i++)
            sample (&b, "corral_up", t->insts[i], NULL,
                    mon_inst_alive (t->insts[i], now) ? 1 : 0);
        header (&b, "corral_heartbeat_age_seconds", "gauge",
                "Seconds since the instance's last heartbeat.");
        for (size_t i = 0; i < t->count; i++)
            sample (&b, "corral_heartbeat_age_seconds", t->insts[i], NULL,
                    (double)(now - t->insts[i]->last_ms) / 1000.0);
    }
    const char *reason;
    bool ready = mon_ready (t, now, &reason);
    header (&b, "corral_ready", "gauge",
            "1 when the system can serve prompts (store, session service and a worker).");
    cm_strbuf_putf (&b, "corral_ready %d\n", ready ? 1 : 0);
    header (&b, "corral_monitor_instances", "gauge",
            "Service instances the monitor knows (alive or not yet forgotten).");
    cm_strbuf_putf (&b, "corral_monitor_instances %zu\n", t->count);
    header (&b, "corral_monitor_heartbeats_total", "counter",
            "Heartbeats the monitor took in.");
    cm_strbuf_putf (&b, "corral_monitor_heartbeats_total %llu\n",
                    (unsigned long long)t->beats);
    header (&b, "corral_monitor_dropped_total", "counter",
            "Messages, heartbeats and samples the monitor refused, by reason.");
    for (int r = 0; r < MON_DROP_COUNT; r++)
        cm_strbuf_putf (&b, "corral_monitor_dropped_total{reason=\"%s\"} %llu\n",
                        mon_drop_names[r], (unsigned long long)t->dropped[r]);
    return cm_strbuf_take (&b);
}

char *mon_render_status (const mon_table_t *t, int64_t now)
{
    const char *reason;
    bool ready = mon_ready (t, now, &reason);
    json_t *doc = json_object (), *list = json_array (), *drops = json_object ();
    if (!doc || !list || !drops) goto fail;
    json_object_set_new (doc, "ready", json_boolean (ready));
    json_object_set_new (doc, "reason", reason ? json_string (reason) : json_null ());
    for (size_t i = 0; i < t->count; i++) {
        const mon_inst_t *inst = t->insts[i];
        json_t *o = json_object ();
        if (!o) goto fail;
        json_object_set_new (o, "service", json_string (inst->service));
        json_object_set_new (o, "instance", json_string (inst->instance));
        json_object_set_new (o, "host", json_string (inst->host));
        json_object_set_new (o, "pid", json_integer ((json_int_t)inst->pid));
        json_object_set_new (o, "alive", json_boolean (mon_inst_alive (inst, now)));
        json_object_set_new (o, "age_ms", json_integer (now - inst->last_ms));
        json_object_set_new (o, "uptime_ms", json_integer ((json_int_t)inst->uptime_ms));
        json_object_set_new (o, "heartbeats", json_integer ((json_int_t)inst->beats));
        double rss = mon_inst_value (inst, "corral_process_resident_memory_bytes", -1);
        if (rss >= 0)
            json_object_set_new (o, "rss_bytes", json_integer ((json_int_t)rss));
        double cpu = mon_inst_value (inst, "corral_process_cpu_seconds_total", -1);
        if (cpu >= 0) json_object_set_new (o, "cpu_seconds", json_real (cpu));
        json_array_append_new (list, o);
    }
    json_object_set_new (doc, "services", list);
    list = NULL;
    json_object_set_new (doc, "heartbeats", json_integer ((json_int_t)t->beats));
    for (int r = 0; r < MON_DROP_COUNT; r++)
        json_object_set_new (drops, mon_drop_names[r],
                             json_integer ((json_int_t)t->dropped[r]));
    json_object_set_new (doc, "dropped", drops);
    drops = NULL;
    char *text = json_dumps (doc, JSON_COMPACT);
    json_decref (doc);
    return text;
fail:
    json_decref (doc);
    json_decref (list);
    json_decref (drops);
    return NULL;
}
