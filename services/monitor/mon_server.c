/*  mon_server.c - corral-monitor's loop: heartbeats in, answers out.

    One pass: poll the SUB, the ROUTER and the stop pipe for at most a
    second; take in every heartbeat queued; answer every request queued;
    once a second add the monitor's own heartbeat to the table (it does not
    send itself one), every 10 s forget long-silent instances.

    policies: the policy engine (mon_policy.c) plugs in at the three places
    marked "policies" below - its sockets (an event SUB connected to the
    session service's PUB, a DEALER to the session service for
    monitor.action) go into the poll set, its readers run after ours, and
    its timers on the same tick.
*/
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "cm_log.h"
#include "cm_stop.h"
#include "cm_time.h"
#include "cm_zmq.h"
#include "mon.h"
#include "proto_beat.h"

#define DRAIN_MAX 4096 //  messages read from one socket per pass
#define SWEEP_MS  10000

/* ---- requests ------------------------------------------------------------- */

void mon_server_answer (mon_server_t *self, const void *data, size_t size, int64_t now)
{
    proto_buf_reset (&self->buf);
    int rc = proto_decode (&self->msg, data, size);
    uint64_t corr = self->msg.corr_valid ? self->msg.corr : 0;
    if (rc) {
        mon_table_drop (&self->table, MON_DROP_REQUEST);
        cm_warn ("refused a request: %s", proto_msg_error (&self->msg));
        proto_encode_error (&self->buf, corr, rc, proto_msg_error (&self->msg));
        return;
    }
    char *text = NULL;
    switch (self->msg.type) {
    case PROTO_MON_HEALTH: {
        proto_mon_health_t h;
        mon_health (&self->table, now, &h, self->statuses, MON_MAX_INSTANCES);
        rc = proto_encode (&self->buf, PROTO_MON_HEALTH_REPLY, corr, &h);
        break;
    }
    case PROTO_MON_METRICS:
    case PROTO_MON_STATUS:
        text = self->msg.type == PROTO_MON_METRICS
                   ? mon_render_metrics (&self->table, now)
                   : mon_render_status (&self->table, now);
        if (!text) {
            rc = CM_E_NOMEM;
            break;
        }
        proto_mon_text_t out = {.text = text};
        rc = proto_encode (&self->buf, PROTO_MON_TEXT, corr, &out);
        free (text);
        break;
    default:
        mon_table_drop (&self->table, MON_DROP_REQUEST);
        cm_warn ("refused a request of type %s", proto_type_name (self->msg.type));
        proto_encode_error (&self->buf, corr, CM_E_UNKNOWN_TYPE,
                            "corral-monitor answers monitor.health, monitor.metrics and "
                            "monitor.status");
        return;
    }
    if (rc) {
        cm_error ("cannot answer %s: %s", proto_type_name (self->msg.type),
                  cm_strerror (rc));
        proto_buf_reset (&self->buf);
        proto_encode_error (&self->buf, corr, rc, NULL);
    }
}

static void on_api (mon_server_t *self)
{
    for (int n = 0; n < DRAIN_MAX; n++) {
        cm_zmq_request_t req;
        int got = cm_zmq_recv_request (self->api, &req, NULL);
        if (got == 0) return;
        if (got < 0) {
            mon_table_drop (&self->table, MON_DROP_REQUEST);
            cm_warn ("dropped a request that is not [identity][body]");
            continue;
        }
        mon_server_answer (self, zmq_msg_data (&req.body), zmq_msg_size (&req.body),
                           cm_mono_ms ());
        if (cm_zmq_send_reply (self->api, &req, self->buf.data, self->buf.size))
            cm_debug ("reply dropped: the requester is gone");
        cm_zmq_request_close (&req);
    }
}

/* ---- heartbeats ------------------------------------------------------------ */

static void on_beat (mon_server_t *self)
{
    for (int n = 0; n < DRAIN_MAX; n++) {
        zmq_msg_t topic, body;
        int frames = cm_zmq_recv_topic (self->in, &topic, &body);
        if (frames == 0) {
            zmq_msg_close (&topic);
            zmq_msg_close (&body);
            return;
        }
        if (frames != 2 || zmq_msg_size (&topic) < 3 ||
            memcmp (zmq_msg_data (&topic), "hb/", 3) != 0) {
            mon_table_drop (&self->table, MON_DROP_FRAMES);
            cm_debug ("dropped a message on the heartbeat socket: %d frames", frames);
        } else {
            int rc =
                mon_table_ingest_bytes (&self->table, &self->msg, zmq_msg_data (&body),
                                        zmq_msg_size (&body), cm_mono_ms ());
            if (rc)
                cm_debug ("refused a heartbeat: %s (%s)", cm_strerror (rc),
                          proto_msg_error (&self->msg));
        }
        zmq_msg_close (&topic);
        zmq_msg_close (&body);
    }
}

static void own_beat (mon_server_t *self, int64_t now)
{
    const proto_mon_heartbeat_t *hb = proto_beat_collect (
        self->beat, self->policy ? mon_policy_beat_fill : NULL, self->policy);
    mon_table_ingest (&self->table, hb, now);
}

/* ---- the loop ----------------------------------------------------------------- */

static int open_sockets (mon_server_t *self)
{
    self->in = cm_zmq_socket (ZMQ_SUB, 0);
    self->api = cm_zmq_socket (ZMQ_ROUTER, 0);
    if (!self->in || !self->api) return CM_E_IO;
    zmq_setsockopt (self->in, ZMQ_SUBSCRIBE, "", 0);
    if (cm_zmq_bind (self->in, self->cfg->in_endpoint) ||
        cm_zmq_bind (self->api, self->cfg->api_endpoint))
        return CM_E_IO;
    return 0;
}

int mon_server_run (mon_config_t *cfg)
{
    mon_server_t *self = calloc (1, sizeof *self);
    if (!self) return CM_E_NOMEM;
    int rc = CM_E_NOMEM;
    self->cfg = cfg;
    mon_table_init (&self->table);
    proto_msg_init (&self->msg);
    self->beat = proto_beat_new (NULL, "monitor", NULL);
    if (!self->beat) goto done;
    if ((rc = open_sockets (self))) goto done;
    //  policies: the engine on the bus (mon_policy.h); none when every policy is off.
    const mon_policy_config_t *pc = &cfg->policy;
    if ((pc->max_duration_ms || pc->idle_timeout_ms || pc->stuck_repeat ||
         pc->stuck_silence_ms) &&
        !(self->policy = mon_policy_new (pc))) {
        rc = CM_E_IO;
        goto done;
    }
    cm_info ("corral-monitor: heartbeats on %s, requests on %s", cfg->in_endpoint,
             cfg->api_endpoint);

    int64_t now = cm_mono_ms ();
    self->next_beat_ms = now;
    self->next_sweep_ms = now + SWEEP_MS;
    while (!cm_stop_requested ()) {
        zmq_pollitem_t items[8] = {{self->in, 0, ZMQ_POLLIN, 0},
                                   {self->api, 0, ZMQ_POLLIN, 0},
                                   {NULL, cm_stop_fd (), ZMQ_POLLIN, 0}};
        int nitems = 3;
        if (self->policy) nitems += mon_policy_pollitems (self->policy, &items[nitems]);
        long timeout = self->next_beat_ms - cm_mono_ms ();
        if (self->policy && mon_policy_timeout (self->policy, cm_mono_ms ()) < timeout)
            timeout = (long)mon_policy_timeout (self->policy, cm_mono_ms ());
        if (timeout < 0) timeout = 0;
        if (timeout > 1000) timeout = 1000;
        if (zmq_poll (items, nitems, timeout) < 0 && errno != EINTR) {
            cm_error ("poll failed: %s", zmq_strerror (errno));
            break;
        }
        if (items[0].revents & ZMQ_POLLIN) on_beat (self);
        if (items[1].revents & ZMQ_POLLIN) on_api (self);
        now = cm_mono_ms ();
        if (self->policy) mon_policy_service (self->policy, now); //  reads and decides
        if (now >= self->next_beat_ms) {
            self->next_beat_ms = now + PROTO_BEAT_MS;
            own_beat (self, now);
            //  policies: the policy engine's once-a-second checks go here.
        }
        if (now >= self->next_sweep_ms) {
            self->next_sweep_ms = now + SWEEP_MS;
            mon_table_sweep (&self->table, now);
        }
    }
    //  Drain: answer what was already asked before going.
    on_api (self);
    cm_info ("corral-monitor stopping");
    rc = 0;
done:
    mon_policy_destroy (&self->policy);
    cm_zmq_close (&self->in);
    cm_zmq_close (&self->api);
    proto_beat_destroy (&self->beat);
    proto_msg_fini (&self->msg);
    proto_buf_fini (&self->buf);
    mon_table_fini (&self->table);
    free (self);
    return rc;
}
