/*  store_server.c - the ROUTER loop.

    One pass: wait until a request (or a stop) arrives, then take every
    request already queued - up to batch_max, and for at most
    batch_window_ms - and hand them to store_batch(), which runs them in
    one transaction and commits.  Only then are the replies sent.  While a
    commit (fsync) runs, new requests queue in ZeroMQ and form the next
    batch, so the batch size grows with the load: that is the group commit.

    Envelopes: a DEALER peer's request arrives as [identity][body]; a REQ
    peer's as [identity][empty][body].  Replies go back in the same shape.
    Anything else is dropped with a warning (it cannot be answered).
    Replies are sent with ZMQ_DONTWAIT: a peer that vanished or stopped
    reading loses its reply (ROUTER_MANDATORY reports it), never stalls the
    store.  Requests are idempotent where it matters (events.append), so a
    peer that times out can resend.
*/
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "cm_log.h"
#include "cm_stop.h"
#include "cm_time.h"
#include "cm_zmq.h"
#include "proto_beat.h"
#include "store_server.h"

static void send_reply (void *sock, cm_zmq_request_t *req, const void *data, size_t size)
{
    int rc = cm_zmq_send_reply (sock, req, data, size);
    if (rc == CM_E_UNAVAILABLE)
        cm_debug ("reply dropped: the requester disconnected");
    else if (rc)
        cm_warn ("reply dropped: %s", cm_strerror (rc));
}

int store_server_run (store_t *store, const store_server_opts_t *opts)
{
    void *sock = cm_zmq_socket (ZMQ_ROUTER, 0);
    if (!sock) return CM_E_IO;
    if (cm_zmq_bind (sock, opts->endpoint)) {
        cm_zmq_close (&sock);
        return CM_E_IO;
    }
    cm_zmq_request_t *envs = calloc (opts->batch_max, sizeof *envs);
    store_req_t *reqs = calloc (opts->batch_max, sizeof *reqs);
    proto_buf_t replies = {0};
    if (!envs || !reqs) {
        free (envs);
        free (reqs);
        cm_zmq_close (&sock);
        return CM_E_NOMEM;
    }
    cm_info ("corral-store listening on %s (data %s, epoch %s)", opts->endpoint,
             store->path, store->epoch);
    proto_beat_t *beat = proto_beat_new (opts->monitor_in, "store", NULL);

    int64_t last_sync = cm_mono_ms ();
    while (!cm_stop_requested ()) {
        zmq_pollitem_t items[] = {{sock, 0, ZMQ_POLLIN, 0},
                                  {NULL, cm_stop_fd (), ZMQ_POLLIN, 0}};
        long timeout = beat ? (long)proto_beat_due_ms (beat, cm_mono_ms ()) : -1;
        if (store->opts.sync == STORE_SYNC_OS && (timeout < 0 || timeout > 1000))
            timeout = 1000;
        if (zmq_poll (items, 2, timeout) < 0 && errno != EINTR) {
            cm_error ("poll failed: %s", zmq_strerror (errno));
            break;
        }
        if (store->opts.sync == STORE_SYNC_OS && cm_mono_ms () - last_sync >= 1000) {
            store_sync (store);
            last_sync = cm_mono_ms ();
        }
        if (cm_stop_requested ()) break;
        if (beat) proto_beat_tick (beat, cm_mono_ms (), store_beat_fill, store);

        size_t n = 0;
        int64_t deadline = cm_mono_ms () + opts->batch_window_ms;
        while (n < opts->batch_max) {
            int frames = 0;
            int got = cm_zmq_recv_request (sock, &envs[n], &frames);
            if (got == 0) break;
            if (got < 0) {
                cm_warn ("dropped a request with %d frames; expected [identity][body]",
                         frames);
                continue;
            }
            reqs[n].data = zmq_msg_data (&envs[n].body);
            reqs[n].size = zmq_msg_size (&envs[n].body);
            n++;
            if (cm_mono_ms () > deadline) break;
        }
        if (n == 0) continue;
        store_batch (store, reqs, n, &replies);
        for (size_t i = 0; i < n; i++) {
            send_reply (sock, &envs[i], replies.data + reqs[i].reply_off,
                        reqs[i].reply_len);
            cm_zmq_request_close (&envs[i]);
        }
    }
    cm_info ("corral-store stopping (%s)", cm_stop_signal () ? "signal" : "request");
    proto_beat_destroy (&beat);
    proto_buf_fini (&replies);
    free (envs);
    free (reqs);
    cm_zmq_close (&sock);
    return 0;
}
