/*  mon_table.c - who is alive: the last heartbeat of every service instance.

    Entries are keyed by (service, instance) and kept sorted by that key,
    so renderings are stable.  A restarted process that keeps its instance
    id (a worker's --worker-id) takes over its entry; its counters restart,
    which Prometheus handles as a counter reset.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cm_error.h"
#include "mon.h"

const char *const mon_drop_names[MON_DROP_COUNT] = {
    "undecodable", "frames", "type",    "identity",  "full",
    "unknown",     "labels", "request", "duplicate",
};

void mon_table_init (mon_table_t *t)
{
    memset (t, 0, sizeof *t);
}

static void inst_free (mon_inst_t *inst)
{
    if (!inst) return;
    free (inst->samples);
    free (inst->text);
    free (inst);
}

void mon_table_fini (mon_table_t *t)
{
    for (size_t i = 0; i < t->count; i++) inst_free (t->insts[i]);
    free (t->insts);
    memset (t, 0, sizeof *t);
}

void mon_table_drop (mon_table_t *t, mon_drop_t why)
{
    if (why < MON_DROP_COUNT) t->dropped[why]++;
}

/* ---- checks ------------------------------------------------------------ */

//  Valid UTF-8 (no overlongs, no surrogates) of at most max bytes, without
//  control characters when printable.
static bool utf8_ok (const char *s, size_t max, bool printable)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t len = 0;
    while (*p) {
        unsigned c = *p;
        size_t n;
        unsigned cp;
        if (c < 0x80) {
            if (printable && (c < 0x20 || c == 0x7f)) return false;
            n = 1;
            cp = c;
        } else if ((c & 0xE0) == 0xC0) {
            n = 2;
            cp = c & 0x1F;
        } else if ((c & 0xF0) == 0xE0) {
            n = 3;
            cp = c & 0x0F;
        } else if ((c & 0xF8) == 0xF0) {
            n = 4;
            cp = c & 0x07;
        } else
            return false;
        for (size_t i = 1; i < n; i++) {
            if ((p[i] & 0xC0) != 0x80) return false;
            cp = (cp << 6) | (p[i] & 0x3F);
        }
        if ((n == 2 && cp < 0x80) || (n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) ||
            cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return false;
        p += n;
        len += n;
        if (len > max) return false;
    }
    return true;
}

static bool service_ok (const char *s)
{
    size_t n = s ? strlen (s) : 0;
    if (n == 0 || n > MON_SERVICE_MAX) return false;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') ||
              s[i] == '_' || s[i] == '-'))
            return false;
    return true;
}

static bool name_char (char c, bool first)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
           (!first && c >= '0' && c <= '9');
}

#define MAX_LABELS 16

int mon_labels_check (const char *labels, bool want_le)
{
    if (!labels) labels = "";
    if (strlen (labels) > MON_LABELS_MAX || !utf8_ok (labels, MON_LABELS_MAX, false))
        return CM_E_INVALID;
    const char *names[MAX_LABELS];
    size_t lens[MAX_LABELS], n = 0;
    bool has_le = false;
    const char *p = labels;
    while (*p) {
        const char *name = p;
        if (!name_char (*p, true)) return CM_E_INVALID;
        while (name_char (*p, false)) p++;
        size_t nl = (size_t)(p - name);
        if ((nl == 7 && memcmp (name, "service", 7) == 0) ||
            (nl == 8 && memcmp (name, "instance", 8) == 0) ||
            (nl >= 2 && name[0] == '_' && name[1] == '_'))
            return CM_E_INVALID;
        for (size_t i = 0; i < n; i++)
            if (lens[i] == nl && memcmp (names[i], name, nl) == 0) return CM_E_INVALID;
        if (n == MAX_LABELS) return CM_E_INVALID;
        names[n] = name;
        lens[n++] = nl;
        bool is_le = nl == 2 && memcmp (name, "le", 2) == 0;
        if (*p++ != '=' || *p++ != '"') return CM_E_INVALID;
        const char *value = p;
        while (*p && *p != '"') {
            if (*p == '\n') return CM_E_INVALID;
            if (*p == '\\') {
                p++;
                if (*p != '\\' && *p != '"' && *p != 'n') return CM_E_INVALID;
            }
            p++;
        }
        if (*p != '"') return CM_E_INVALID;
        if (is_le) {
            //  A bucket bound: a number or +Inf.
            size_t vl = (size_t)(p - value);
            char num[40];
            if (vl == 0 || vl >= sizeof num) return CM_E_INVALID;
            memcpy (num, value, vl);
            num[vl] = 0;
            char *end;
            if (strcmp (num, "+Inf") != 0) {
                strtod (num, &end);
                if (*end || !((num[0] >= '0' && num[0] <= '9') || num[0] == '-'))
                    return CM_E_INVALID;
            }
            has_le = true;
        }
        p++;
        if (*p == ',') {
            p++;
            if (!*p) return CM_E_INVALID;
        } else if (*p)
            return CM_E_INVALID;
    }
    return has_le == want_le ? 0 : CM_E_INVALID;
}

/* ---- entries ---------------------------------------------------------------- */

//  FNV-1a over a sample's name and label text.
static uint64_t series_hash (const char *name, const char *labels)
{
    uint64_t h = 1469598103934665603ULL;
    for (const char *p = name; *p; p++) h = (h ^ (unsigned char)*p) * 1099511628211ULL;
    h = (h ^ 0xff) * 1099511628211ULL;
    for (const char *p = labels; *p; p++) h = (h ^ (unsigned char)*p) * 1099511628211ULL;
    return h;
}

static int key_cmp (const mon_inst_t *a, const char *service, const char *instance)
{
    int c = strcmp (a->service, service);
    return c ? c : strcmp (a->instance, instance);
}

//  Index of the entry, or where it would go (*found false).
static size_t find (const mon_table_t *t, const char *service, const char *instance,
                    bool *found)
{
    size_t lo = 0, hi = t->count;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = key_cmp (t->insts[mid], service, instance);
        if (c == 0) {
            *found = true;
            return mid;
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    *found = false;
    return lo;
}

int mon_table_ingest (mon_table_t *t, const proto_mon_heartbeat_t *hb, int64_t now)
{
    if (!service_ok (hb->service) || !hb->instance || !*hb->instance ||
        !utf8_ok (hb->instance, MON_INSTANCE_MAX, true) ||
        (hb->host && !utf8_ok (hb->host, MON_INSTANCE_MAX, true))) {
        mon_table_drop (t, MON_DROP_IDENTITY);
        return CM_E_INVALID;
    }
    //  Check the samples first and size the text block they need.
    size_t n = hb->stats.count, keep = 0, bytes = 0;
    if (n > MON_MAX_SAMPLES) {
        t->dropped[MON_DROP_UNKNOWN] += n - MON_MAX_SAMPLES;
        n = MON_MAX_SAMPLES;
    }
    int16_t *fam = n ? malloc (n * sizeof *fam) : NULL;
    uint8_t *sfx = n ? malloc (n) : NULL;
    if (n && (!fam || !sfx)) {
        free (fam);
        free (sfx);
        return CM_E_NOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        const proto_stat_t *s = &hb->stats.items[i];
        int suffix = 0;
        fam[i] = -1;
        if (strlen (s->name) > MON_NAME_MAX ||
            (fam[i] = (int16_t)mon_family_of (s->name, &suffix)) < 0) {
            fam[i] = -1;
            mon_table_drop (t, MON_DROP_UNKNOWN);
            continue;
        }
        if (mon_labels_check (s->labels, suffix == 1)) {
            fam[i] = -1;
            mon_table_drop (t, MON_DROP_LABELS);
            continue;
        }
        sfx[i] = (uint8_t)suffix;
        bytes += strlen (s->name) + 1 + (s->labels ? strlen (s->labels) : 0) + 1;
        keep++;
    }

    bool found;
    size_t at = find (t, hb->service, hb->instance, &found);
    mon_inst_t *inst = found ? t->insts[at] : NULL;
    if (!inst) {
        if (t->count >= MON_MAX_INSTANCES) {
            free (fam);
            free (sfx);
            mon_table_drop (t, MON_DROP_FULL);
            return CM_E_CAPACITY;
        }
        if (t->count == t->cap) {
            size_t cap = t->cap ? t->cap * 2 : 16;
            mon_inst_t **a = realloc (t->insts, cap * sizeof *a);
            if (!a) goto nomem;
            t->insts = a;
            t->cap = cap;
        }
        inst = calloc (1, sizeof *inst);
        if (!inst) goto nomem;
        snprintf (inst->service, sizeof inst->service, "%s", hb->service);
        snprintf (inst->instance, sizeof inst->instance, "%s", hb->instance);
        inst->first_ms = now;
        memmove (&t->insts[at + 1], &t->insts[at], (t->count - at) * sizeof *t->insts);
        t->insts[at] = inst;
        t->count++;
    }
    mon_sample_t *samples = keep ? malloc (keep * sizeof *samples) : NULL;
    char *text = keep ? malloc (bytes) : NULL;
    if (keep && (!samples || !text)) {
        free (samples);
        free (text);
        goto nomem;
    }
    //  Sorted by family (counting order over the table), stable within one.
    //  A series (name and labels) sent twice is kept once: a duplicate
    //  would make the whole text invalid for Prometheus.
    size_t nslots = 16;
    while (nslots < 2 * keep) nslots *= 2;
    int32_t *slots = keep ? malloc (nslots * sizeof *slots) : NULL;
    if (keep && !slots) {
        free (samples);
        free (text);
        goto nomem;
    }
    for (size_t i = 0; keep && i < nslots; i++) slots[i] = -1;
    size_t k = 0, off = 0;
    for (size_t f = 0; f < mon_nfamilies; f++)
        for (size_t i = 0; i < n; i++) {
            if (fam[i] != (int16_t)f) continue;
            const proto_stat_t *s = &hb->stats.items[i];
            const char *labels = s->labels ? s->labels : "";
            size_t slot = series_hash (s->name, labels) & (nslots - 1);
            bool dup = false;
            for (; slots[slot] >= 0; slot = (slot + 1) & (nslots - 1)) {
                const mon_sample_t *o = &samples[slots[slot]];
                if (strcmp (o->name, s->name) == 0 && strcmp (o->labels, labels) == 0) {
                    dup = true;
                    break;
                }
            }
            if (dup) {
                mon_table_drop (t, MON_DROP_DUPLICATE);
                continue;
            }
            slots[slot] = (int32_t)k;
            mon_sample_t *m = &samples[k++];
            m->family = (uint16_t)f;
            m->suffix = sfx[i];
            m->value = s->value;
            size_t nl = strlen (s->name) + 1;
            memcpy (text + off, s->name, nl);
            m->name = text + off;
            off += nl;
            const char *l = s->labels ? s->labels : "";
            size_t ll = strlen (l) + 1;
            memcpy (text + off, l, ll);
            m->labels = text + off;
            off += ll;
        }
    free (slots);
    free (fam);
    free (sfx);
    free (inst->samples);
    free (inst->text);
    inst->samples = samples;
    inst->text = text;
    inst->nsamples = k;
    snprintf (inst->host, sizeof inst->host, "%s", hb->host ? hb->host : "");
    inst->pid = hb->pid;
    inst->uptime_ms = hb->uptime_ms;
    inst->last_ms = now;
    inst->beats++;
    t->beats++;
    return 0;
nomem:
    free (fam);
    free (sfx);
    return CM_E_NOMEM;
}

int mon_table_ingest_bytes (mon_table_t *t, proto_msg_t *scratch, const void *data,
                            size_t size, int64_t now)
{
    int rc = proto_decode (scratch, data, size);
    if (rc) {
        mon_table_drop (t, MON_DROP_UNDECODABLE);
        return rc;
    }
    proto_mon_heartbeat_t *hb = proto_body (scratch, mon_heartbeat);
    if (scratch->type != PROTO_MON_HEARTBEAT || !hb) {
        mon_table_drop (t, MON_DROP_TYPE);
        return CM_E_UNKNOWN_TYPE;
    }
    return mon_table_ingest (t, hb, now);
}

void mon_table_sweep (mon_table_t *t, int64_t now)
{
    size_t w = 0;
    for (size_t i = 0; i < t->count; i++) {
        if (now - t->insts[i]->last_ms > MON_FORGET_MS)
            inst_free (t->insts[i]);
        else
            t->insts[w++] = t->insts[i];
    }
    t->count = w;
}

bool mon_inst_alive (const mon_inst_t *inst, int64_t now)
{
    return now - inst->last_ms <= MON_ALIVE_MS;
}

double mon_inst_value (const mon_inst_t *inst, const char *name, double def)
{
    for (size_t i = 0; i < inst->nsamples; i++)
        if (!inst->samples[i].labels[0] && strcmp (inst->samples[i].name, name) == 0)
            return inst->samples[i].value;
    return def;
}

/* ---- readiness ------------------------------------------------------------------ */

bool mon_ready (const mon_table_t *t, int64_t now, const char **reason)
{
    bool store = false, session = false, store_seen = false, session_seen = false;
    double workers = 0;
    for (size_t i = 0; i < t->count; i++) {
        const mon_inst_t *inst = t->insts[i];
        bool is_store = strcmp (inst->service, "store") == 0;
        bool is_session = strcmp (inst->service, "session") == 0;
        store_seen |= is_store;
        session_seen |= is_session;
        if (!mon_inst_alive (inst, now)) continue;
        store |= is_store;
        if (is_session) {
            session = true;
            double w = mon_inst_value (inst, "corral_session_workers_connected", 0);
            if (w > workers) workers = w;
        }
    }
    //  Never heard of at all is worth saying: it is also what a heartbeat
    //  endpoint set differently in the service and here looks like.
    *reason = NULL;
    if (!store)
        *reason = store_seen
                      ? "store unreachable"
                      : "store unreachable (no heartbeat from corral-store has "
                        "reached corral-monitor; check CORRAL_MONITOR_IN_ENDPOINT)";
    else if (!session)
        *reason = session_seen ? "session service unreachable"
                               : "session service unreachable (no heartbeat from "
                                 "corral-session has reached corral-monitor; check "
                                 "CORRAL_MONITOR_IN_ENDPOINT)";
    else if (!(workers >= 1))
        *reason = "no worker connected";
    return *reason == NULL;
}

void mon_health (const mon_table_t *t, int64_t now, proto_mon_health_t *out,
                 proto_service_status_t *statuses, size_t cap)
{
    const char *reason;
    out->ready = mon_ready (t, now, &reason);
    out->reason = reason;
    size_t n = 0;
    for (size_t i = 0; i < t->count && n < cap; i++) {
        const mon_inst_t *inst = t->insts[i];
        statuses[n++] = (proto_service_status_t){
            .service = inst->service,
            .instance = inst->instance,
            .alive = mon_inst_alive (inst, now),
            .age_ms = now > inst->last_ms ? (uint64_t)(now - inst->last_ms) : 0};
    }
    out->services = (proto_service_status_list_t){statuses, n};
}
