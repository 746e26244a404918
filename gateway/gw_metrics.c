/*  gw_metrics.c - what an operator's tools ask the gateway: liveness,
    readiness, and its own metrics in the Prometheus text format 0.0.4.

    GET /v1/health/live   the process serves HTTP: always 200.
    GET /v1/health/ready  the gateway can do its job: the store answered a
                          store.stats just now and its epoch is known, and
                          the session service answered a session.list for
                          a probe tenant, both within GW_HTTP_READY_MS;
                          else 503 with the reason; 503 at once while
                          the gateway stops.  Each request asks afresh
                          (two small bus requests; no key needed).
    GET /metrics          counters since start (self->stats) and gauges
                          of the moment; open unless --metrics-auth, then
                          for admin keys.

    Metric names: corral_gateway_<what>_total for counters,
    corral_gateway_<what> for gauges (docs/openapi.yaml lists them).
*/
#include <stdlib.h>
#include <string.h>

#include "cm_log.h"
#include "cm_time.h"
#include "gw_rest.h"

#define PROBE_TENANT "corral-readiness-probe" //  owns no sessions

/* ---- liveness and readiness ------------------------------------------------ */

void gw_health_live (gw_server_t *self, gw_conn_t *conn)
{
    json_t *r = json_pack ("{s:s}", "status", "ok");
    gw_http_reply (self, conn, 200, r);
    json_decref (r);
}

static void why (gw_http_t *h, const char *text)
{
    size_t len = strlen (h->why);
    snprintf (h->why + len, sizeof h->why - len, "%s%s", len ? "; " : "", text);
}

static void ready_answer (gw_server_t *self, gw_conn_t *conn)
{
    gw_http_t *h = conn->http;
    if (h->probes_ok + h->probes_failed < 2) return;
    json_t *r;
    if (!h->probes_failed && *self->epoch) {
        r = json_pack ("{s:s, s:s}", "status", "ready", "epoch", self->epoch);
        gw_http_reply (self, conn, 200, r);
    } else {
        if (!h->probes_failed) why (h, "the store's epoch is not known yet");
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
    gw_http_t *h = conn->http;
    proto_store_stats_t *s = rc == 0 && reply ? proto_body (reply, store_stats) : NULL;
    if (s) {
        h->probes_ok++;
        if (!*self->epoch) snprintf (self->epoch, sizeof self->epoch, "%s", s->epoch);
    } else {
        h->probes_failed++;
        why (h, "the store did not answer");
    }
    ready_answer (self, conn);
}

static void on_session_probe (gw_server_t *self, void *arg, int rc, proto_msg_t *reply)
{
    gw_conn_t *conn = gw_http_find (self, *(uint64_t *)arg);
    free (arg);
    if (!conn) return;
    gw_http_t *h = conn->http;
    if (rc == 0 && reply && proto_body (reply, sessions_reply))
        h->probes_ok++;
    else {
        h->probes_failed++;
        why (h, rc == CM_E_UNAVAILABLE && reply ? "the session service is starting"
                                                : "the session service did not answer");
    }
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
    uint64_t *a = gw_http_box (conn), *b = gw_http_box (conn);
    if (!a || gw_call_store (self, PROTO_STORE_STATS, NULL, on_store_probe, a)) {
        free (a);
        h->probes_failed++;
        why (h, "the store cannot be asked");
    }
    proto_list_req_t req = {.tenant = PROBE_TENANT, .limit = 1};
    if (!b || gw_call_session (self, PROTO_SESSION_LIST, &req, GW_HTTP_READY_MS,
                               on_session_probe, b)) {
        free (b);
        h->probes_failed++;
        why (h, "the session service cannot be asked");
    }
    ready_answer (self, conn);
}

void gw_health_tick (gw_server_t *self, gw_conn_t *conn, int64_t now)
{
    gw_http_t *h = conn->http;
    if (now - h->start_ms < GW_HTTP_READY_MS) return;
    //  Late answers find the request answered (gw_http_find) and stop.
    char text[64];
    snprintf (text, sizeof text, "no answer within %d ms", GW_HTTP_READY_MS);
    why (h, text);
    h->probes_failed = 2 - h->probes_ok;
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

void gw_metrics_serve (gw_server_t *self, gw_conn_t *conn)
{
    const gw_stats_t *s = &self->stats;
    cm_strbuf_t b = {0};
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
    char *text = cm_strbuf_take (&b);
    gw_http_reply_text (self, conn, 200, "text/plain; version=0.0.4; charset=utf-8",
                        text);
}
