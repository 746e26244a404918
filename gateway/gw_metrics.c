/*  gw_metrics.c - what an operator's tools ask the gateway: liveness,
    readiness, and the metrics of the whole system in the Prometheus text
    format 0.0.4.

    GET /v1/health/live   the process serves HTTP: always 200.
    GET /v1/health/ready  the system can serve prompts.  Three probes, all
                          within GW_HTTP_READY_MS: the store answers a
                          store.stats (and its epoch is known), the session
                          service answers a session.list for a probe tenant
                          (so a killed service shows at once), and
                          corral-monitor says ready - a store and a session
                          service alive and at least one worker connected
                          (docs/monitor.md).  The monitor's answer is kept
                          GW_MONITOR_CACHE_MS, so a busy probe costs two
                          small bus requests.  Else 503 with the reasons:
                          "store unreachable", "session service
                          unreachable", "no worker connected", "monitor
                          unreachable"; 503 at once while the gateway stops.
    GET /metrics          this gateway's own metrics (corral_gateway_*, no
                          service labels: the scraped process itself), then
                          the monitor's text for the whole system (corral_*
                          with service and instance labels; the monitor
                          never renders corral_gateway_* names, so no family
                          appears twice), then corral_gateway_monitor_up.
                          Open unless --metrics-auth, then for admin keys.

    The gateway's heartbeat (gw_metrics_beat, sent from gw_bus_tick)
    reports connections, client requests and queue depths to the monitor.
*/
#include <stdlib.h>
#include <string.h>

#include "cm_log.h"
#include "cm_time.h"
#include "gw_rest.h"
#include "proto_beat.h"

#define PROBE_TENANT        "corral-readiness-probe" //  owns no sessions
#define GW_MONITOR_CACHE_MS 300 //  the monitor's readiness answer is reused this long
#define GW_PROBE_STORE      1u
#define GW_PROBE_SESSION    2u
#define GW_PROBE_MONITOR    4u

/* ---- liveness and readiness ------------------------------------------------ */

void gw_health_live (gw_server_t *self, gw_conn_t *conn)
{
    json_t *r = json_pack ("{s:s}", "status", "ok");
    gw_http_reply (self, conn, 200, r);
    json_decref (r);
}

//  Add a reason, once: the store's absence is seen by two probes, one of
//  which may say more ("store unreachable (...)"); the phrase before a
//  parenthesis or a colon decides.
static void why (gw_http_t *h, const char *text)
{
    size_t key = strcspn (text, "(:");
    while (key && text[key - 1] == ' ') key--;
    char phrase[96];
    snprintf (phrase, sizeof phrase, "%.*s", (int)key, text);
    if (*phrase && strstr (h->why, phrase)) return;
    size_t len = strlen (h->why);
    snprintf (h->why + len, sizeof h->why - len, "%s%s", len ? "; " : "", text);
}

static void probe_done (gw_http_t *h, unsigned probe, bool ok, const char *reason)
{
    if (!(h->probes_pending & probe)) return;
    h->probes_pending &= ~probe;
    if (ok)
        h->probes_ok++;
    else {
        h->probes_failed++;
        why (h, reason);
    }
}

static void ready_answer (gw_server_t *self, gw_conn_t *conn)
{
    gw_http_t *h = conn->http;
    if (h->probes_pending) return;
    json_t *r;
    if (!h->probes_failed && *self->epoch) {
        r = json_pack ("{s:s, s:s}", "status", "ready", "epoch", self->epoch);
        gw_http_reply (self, conn, 200, r);
    } else {
        if (!h->probes_failed) why (h, "store unreachable: its epoch is not known yet");
        r = json_pack ("{s:s, s:s}", "status", "not_ready", "reason", h->why);
        gw_http_header (conn, "retry-after:", "1");
        gw_http_reply (self, conn, 503, r);
    }
    json_decref (r);
}

static void on_store_probe (gw_server_t *self, void *arg, int rc, proto_msg_t *reply)
{
    gw_conn_t *conn = gw_http_find (self, *(uint64_t *)arg);
    free (arg);
    if (!conn) return;
    proto_store_stats_t *s = rc == 0 && reply ? proto_body (reply, store_stats) : NULL;
    if (s && !*self->epoch) snprintf (self->epoch, sizeof self->epoch, "%s", s->epoch);
    probe_done (conn->http, GW_PROBE_STORE, s != NULL, "store unreachable");
    ready_answer (self, conn);
}

static void on_session_probe (gw_server_t *self, void *arg, int rc, proto_msg_t *reply)
{
    gw_conn_t *conn = gw_http_find (self, *(uint64_t *)arg);
    free (arg);
    if (!conn) return;
    bool ok = rc == 0 && reply && proto_body (reply, sessions_reply);
    probe_done (conn->http, GW_PROBE_SESSION, ok,
                rc == CM_E_UNAVAILABLE && reply ? "the session service is starting"
                                                : "session service unreachable");
    ready_answer (self, conn);
}

//  Count the monitor's (cached) answer as this request's third probe.
static void monitor_verdict (gw_server_t *self, gw_http_t *h)
{
    if (!self->monitor_health.known)
        probe_done (h, GW_PROBE_MONITOR, false, "monitor unreachable");
    else
        probe_done (h, GW_PROBE_MONITOR, self->monitor_health.ready,
                    self->monitor_health.reason);
}

static void on_monitor_probe (gw_server_t *self, void *arg, int rc, proto_msg_t *reply)
{
    proto_mon_health_t *mh = rc == 0 && reply ? proto_body (reply, mon_health) : NULL;
    self->monitor_health.known = mh != NULL;
    self->monitor_health.at_ms = cm_mono_ms ();
    if (mh) {
        self->monitor_health.ready = mh->ready;
        snprintf (self->monitor_health.reason, sizeof self->monitor_health.reason, "%s",
                  mh->ready                   ? ""
                  : mh->reason && *mh->reason ? mh->reason
                                              : "the monitor says not ready");
    }
    gw_conn_t *conn = gw_http_find (self, *(uint64_t *)arg);
    free (arg);
    if (!conn) return;
    monitor_verdict (self, conn->http);
    ready_answer (self, conn);
}

void gw_health_ready (gw_server_t *self, gw_conn_t *conn)
{
    gw_http_t *h = conn->http;
    if (self->stopping) { //  a load balancer should stop sending work here
        json_t *r = json_pack ("{s:s, s:s}", "status", "not_ready", "reason",
                               "the gateway is stopping");
        gw_http_reply (self, conn, 503, r);
        json_decref (r);
        return;
    }
    if (gw_probe_take (self, conn)) {
        gw_http_reply_limited (
            self, conn, conn->retry_ms,
            "too many readiness checks from your address; retry in a moment");
        return;
    }
    h->probes_pending = GW_PROBE_STORE | GW_PROBE_SESSION | GW_PROBE_MONITOR;
    uint64_t *a = gw_http_box (conn), *b = gw_http_box (conn);
    if (!a || gw_call_store (self, PROTO_STORE_STATS, NULL, on_store_probe, a, free)) {
        free (a);
        probe_done (h, GW_PROBE_STORE, false, "store unreachable: it cannot be asked");
    }
    proto_list_req_t req = {.tenant = PROBE_TENANT, .limit = 1};
    if (!b || gw_call_session (self, PROTO_SESSION_LIST, &req, GW_HTTP_READY_MS,
                               on_session_probe, b, free)) {
        free (b);
        probe_done (h, GW_PROBE_SESSION, false,
                    "session service unreachable: it cannot be asked");
    }
    if (cm_mono_ms () - self->monitor_health.at_ms < GW_MONITOR_CACHE_MS &&
        self->monitor_health.at_ms)
        monitor_verdict (self, h);
    else {
        uint64_t *c = gw_http_box (conn);
        if (!c || gw_call_monitor (self, PROTO_MON_HEALTH, NULL, GW_HTTP_READY_MS,
                                   on_monitor_probe, c, free)) {
            free (c);
            probe_done (h, GW_PROBE_MONITOR, false, "monitor unreachable");
        }
    }
    ready_answer (self, conn);
}

void gw_health_tick (gw_server_t *self, gw_conn_t *conn, int64_t now)
{
    gw_http_t *h = conn->http;
    if (now - h->start_ms < GW_HTTP_READY_MS) return;
    //  Late answers find the request answered (gw_http_find) and stop.
    probe_done (h, GW_PROBE_STORE, false, "store unreachable");
    probe_done (h, GW_PROBE_SESSION, false, "session service unreachable");
    probe_done (h, GW_PROBE_MONITOR, false, "monitor unreachable");
    ready_answer (self, conn);
}

/* ---- /metrics --------------------------------------------------------------------- */

static void metric (cm_strbuf_t *b, const char *name, const char *type, const char *help,
                    uint64_t value)
{
    cm_strbuf_putf (b, "# HELP corral_gateway_%s %s\n# TYPE corral_gateway_%s %s\n", name,
                    help, name, type);
    cm_strbuf_putf (b, "corral_gateway_%s %llu\n", name, (unsigned long long)value);
}

//  This gateway's own families, corral_gateway_*.
static void own_metrics (gw_server_t *self, cm_strbuf_t *bp)
{
    const gw_stats_t *s = &self->stats;
    cm_strbuf_t b = *bp;
    static const struct {
        const char *name, *help;
        size_t offset;
    } counters[] = {
#define C(field, help) {#field "_total", help, offsetof (gw_stats_t, field)}
        C (requests, "Client requests (ACP and REST) received."),
        C (responses, "ACP responses sent."),
        C (errors, "Error answers sent (ACP and REST)."),
        C (notifications, "ACP notifications received from clients."),
        C (events_in, "Session events received from the bus."),
        C (events_out, "Events delivered to clients."),
        C (frames_out, "WebSocket frames and HTTP body frames written."),
        C (bytes_out, "Bytes of frames written."),
        C (store_reads, "Event history reads from the store."),
        C (gaps, "Sequence gaps seen on the event subscription."),
        C (catchups, "Times a watcher fell back to the store."),
        C (slow_closed, "Connections closed for being too slow."),
        C (rate_limited, "Requests refused by a key's rate limit."),
        C (probes_limited,
           "Requests refused by an address's probe limit (unknown keys, readiness)."),
        C (conns_opened, "Connections opened (WebSocket and HTTP requests)."),
        C (conns_closed, "Connections closed."),
        C (conns_refused, "Connections and HTTP requests refused by a limit."),
#undef C
    };
    for (size_t i = 0; i < sizeof counters / sizeof counters[0]; i++)
        metric (&b, counters[i].name, "counter", counters[i].help,
                *(const uint64_t *)((const char *)s + counters[i].offset));

    uint64_t ws = 0, http = 0, watches = 0, qbytes = 0, qframes = 0;
    for (gw_conn_t *c = self->all; c; c = c->all_next) {
        if (c->kind == GW_CONN_WS)
            ws++;
        else
            http++;
        for (gw_watch_t *w = c->watches; w; w = w->conn_next) watches++;
        qbytes += c->qbytes;
        qframes += c->qlen;
    }
    cm_strbuf_puts (&b, "# HELP corral_gateway_connections Open connections by kind.\n"
                        "# TYPE corral_gateway_connections gauge\n");
    cm_strbuf_putf (&b, "corral_gateway_connections{kind=\"ws\"} %llu\n",
                    (unsigned long long)ws);
    cm_strbuf_putf (&b, "corral_gateway_connections{kind=\"http\"} %llu\n",
                    (unsigned long long)http);
    if (self->http) {
        cm_strbuf_puts (&b, "# HELP corral_gateway_http_responses_total HTTP API "
                            "responses written, by status class.\n"
                            "# TYPE corral_gateway_http_responses_total counter\n");
        for (int k = 1; k <= 5; k++)
            cm_strbuf_putf (&b,
                            "corral_gateway_http_responses_total{code=\"%dxx\"} %llu\n",
                            k, (unsigned long long)self->http->by_class[k]);
        metric (&b, "http_requests_total", "counter",
                "HTTP API requests received (static files not counted).",
                self->http->http_requests);
    }
    metric (&b, "subscriptions", "gauge", "Sessions this gateway is subscribed to.",
            cm_map_size (self->subs));
    metric (&b, "watches", "gauge", "Connections watching a session, summed.", watches);
    metric (&b, "keys_cached", "gauge", "API keys in the lookup cache.",
            cm_map_size (self->keys));
    metric (&b, "queued_bytes", "gauge", "Bytes waiting in outbound queues.", qbytes);
    metric (&b, "queued_frames", "gauge", "Frames waiting in outbound queues.", qframes);
    metric (&b, "bus_calls_pending", "gauge", "Bus requests waiting for an answer.",
            self->calls ? cm_map_size (self->calls) : 0);
    metric (&b, "store_epoch_known", "gauge", "1 once the store's epoch is known.",
            *self->epoch ? 1 : 0);
    metric (&b, "stopping", "gauge", "1 while the gateway drains for a stop.",
            self->stopping ? 1 : 0);
    int64_t up = cm_time_ms () - self->started_ms;
    metric (&b, "uptime_seconds", "gauge", "Seconds since the gateway started.",
            up > 0 ? (uint64_t)(up / 1000) : 0);
    *bp = b;
}

//  Own metrics, the monitor's text (NULL: it did not answer), monitor_up.
static void metrics_reply (gw_server_t *self, gw_conn_t *conn, const char *system)
{
    cm_strbuf_t b = {0};
    own_metrics (self, &b);
    if (system) cm_strbuf_puts (&b, system);
    metric (&b, "monitor_up", "gauge",
            "1 when corral-monitor answered this scrape (the system's corral_* metrics "
            "are included), else 0.",
            system ? 1 : 0);
    char *text = cm_strbuf_take (&b);
    gw_http_reply_text (self, conn, 200, "text/plain; version=0.0.4; charset=utf-8",
                        text);
}

static void on_monitor_metrics (gw_server_t *self, void *arg, int rc, proto_msg_t *reply)
{
    gw_conn_t *conn = gw_http_find (self, *(uint64_t *)arg);
    free (arg);
    if (!conn) return;
    proto_mon_text_t *t = rc == 0 && reply ? proto_body (reply, mon_text) : NULL;
    metrics_reply (self, conn, t ? t->text : NULL);
}

void gw_metrics_serve (gw_server_t *self, gw_conn_t *conn)
{
    uint64_t *box = gw_http_box (conn);
    if (!box || gw_call_monitor (self, PROTO_MON_METRICS, NULL, GW_HTTP_READY_MS,
                                 on_monitor_metrics, box, free)) {
        free (box);
        metrics_reply (self, conn, NULL);
    }
}

/* ---- the heartbeat ------------------------------------------------------------------ */

void gw_metrics_beat (proto_beat_t *beat, void *arg)
{
    gw_server_t *self = arg;
    uint64_t ws = 0, http = 0, qframes = 0;
    for (gw_conn_t *c = self->all; c; c = c->all_next) {
        if (c->kind == GW_CONN_WS)
            ws++;
        else
            http++;
        qframes += c->qlen;
    }
    proto_beat_addv (beat, "corral_connections", (double)ws, "kind", "ws", NULL);
    proto_beat_addv (beat, "corral_connections", (double)http, "kind", "http", NULL);
    proto_beat_add (beat, "corral_client_requests_total", NULL,
                    (double)self->stats.requests);
    proto_beat_addv (beat, "corral_queue_depth", (double)qframes, "queue",
                     "gateway_client_frames", NULL);
    proto_beat_addv (beat, "corral_queue_depth",
                     (double)(self->calls ? cm_map_size (self->calls) : 0), "queue",
                     "gateway_bus_calls", NULL);
}
