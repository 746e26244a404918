/*  cmd_tap.c - `corral tap`: every session event on the bus as JSON lines.

    A SUB socket on corral-session's event PUB (CORRAL_EVENTS_ENDPOINT),
    subscribed to "s/" (every session) or "s/<id>/" (--session).  Each
    event is decoded by the gateway's renderer (gw_render_event) and
    printed as its REST object, one per line on stdout:

        {"seq":3,"ts":...,"sessionId":"...","turnId":"...","kind":"agent_message",...}

    the same objects GET /v1/sessions/{id}/events gives.  A frame that does
    not decode is reported on stderr and skipped.  This is a debugging
    tool: it sees what is published from the moment it connects (a PUB
    does not replay), without an API key, so it needs access to the bus.
*/
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <zmq.h>

#include "cli.h"
#include "cli_target.h"
#include "cm_config.h"
#include "cm_error.h"
#include "cm_id.h"
#include "cm_stop.h"
#include "cm_zmq.h"
#include "gw_render.h"

#define TAP_HWM 100000 //  events queued in the SUB before the oldest are dropped

typedef struct {
    char *endpoint, *session;
    int64_t count, wait_ms;
} tap_config_t;

#define OPT(name, type, field, def, help, min, max)                                  \
    {                                                                                \
        name, type, offsetof (tap_config_t, field), def, help, min, max, NULL, false \
    }

static const cm_cfg_opt_t s_opts[] = {
    OPT ("events-endpoint", CM_CFG_ENDPOINT, endpoint, "tcp://127.0.0.1:7704",
         "corral-session's event PUB to subscribe to", 0, 0),
    OPT ("session", CM_CFG_STR, session, NULL, "only this session's events (its id)", 0,
         0),
    OPT ("count", CM_CFG_INT, count, "0",
         "exit after this many events (0: run until Ctrl-C)", 0, 1000000000),
    OPT ("wait", CM_CFG_MS, wait_ms, "0",
         "exit with status 1 when no event came for this long (0: wait forever)", 0,
         86400000),
    CM_CFG_END};

int cli_tap (int argc, char **argv)
{
    tap_config_t cfg = {0};
    int rc = cli_config (
        s_opts, &cfg, argc, argv, "corral tap",
        "Print every session event published on the bus as JSON lines (one object per "
        "line: seq, ts, sessionId, turnId, kind and the event's fields), until Ctrl-C.  "
        "Reads the bus directly (no API key; CORRAL_EVENTS_ENDPOINT).  Exit: 0 stopped, "
        "1 --wait passed without an event, 2 usage.");
    if (rc != CLI_GO_ON) return rc;
    char topic[64] = "s/";
    if (cfg.session) {
        cm_uuid_t id;
        char text[CM_UUID_STR_LEN];
        if (cm_uuid_parse (cfg.session, &id)) {
            fprintf (stderr,
                     "corral tap: --session '%.80s' is not a session id (a UUID)\n",
                     cfg.session);
            cm_config_free (s_opts, &cfg);
            return CLI_USAGE;
        }
        snprintf (topic, sizeof topic, "s/%s/", cm_uuid_fmt (&id, text));
    }
    if (!strncmp (cfg.endpoint, "inproc://", 9)) {
        fprintf (stderr, "corral tap: --events-endpoint must be tcp:// or ipc://\n");
        cm_config_free (s_opts, &cfg);
        return CLI_USAGE;
    }
    cm_stop_init ();
    if (cli_endpoint_open (cfg.endpoint) == 0)
        fprintf (stderr,
                 "corral tap: nothing publishes at %s yet (is the stack running?); "
                 "waiting\n",
                 cfg.endpoint);
    int status = CLI_OK;
    gw_render_t *render = gw_render_new ();
    void *sub = cm_zmq_socket (ZMQ_SUB, TAP_HWM);
    if (!render || !sub || cm_zmq_connect (sub, cfg.endpoint) ||
        zmq_setsockopt (sub, ZMQ_SUBSCRIBE, topic, strlen (topic))) {
        fprintf (stderr, "corral tap: cannot subscribe to %s: %s\n", cfg.endpoint,
                 zmq_strerror (zmq_errno ()));
        status = CLI_UNREACHABLE;
        goto done;
    }
    fprintf (stderr, "corral tap: events from %s%s%s (Ctrl-C stops)\n", cfg.endpoint,
             cfg.session ? ", session " : "", cfg.session ? cfg.session : "");
    int64_t seen = 0, quiet_ms = 0;
    while (!cm_stop_requested () && (!cfg.count || seen < cfg.count)) {
        zmq_pollitem_t items[] = {{sub, 0, ZMQ_POLLIN, 0},
                                  {NULL, cm_stop_fd (), ZMQ_POLLIN, 0}};
        int n = zmq_poll (items, 2, 200);
        if (n < 0 && zmq_errno () != EINTR) break;
        if (n <= 0 || !(items[0].revents & ZMQ_POLLIN)) {
            quiet_ms += 200;
            if (cfg.wait_ms && quiet_ms >= cfg.wait_ms) {
                fprintf (stderr, "corral tap: no event for %lld ms\n",
                         (long long)cfg.wait_ms);
                status = CLI_FAIL;
                break;
            }
            continue;
        }
        //  [topic][event]; anything else is skipped whole.
        zmq_msg_t parts[2];
        int got = 0;
        bool more = true;
        while (more) {
            zmq_msg_t m;
            zmq_msg_init (&m);
            if (zmq_msg_recv (&m, sub, ZMQ_DONTWAIT) < 0) {
                zmq_msg_close (&m);
                break;
            }
            more = zmq_msg_more (&m);
            if (got < 2)
                parts[got++] = m;
            else {
                zmq_msg_close (&m);
                got = 3;
            }
        }
        if (got == 2) {
            gw_rendered_t out;
            rc = gw_render_event (render, zmq_msg_data (&parts[1]),
                                  zmq_msg_size (&parts[1]), NULL, &out);
            if (rc == 0 && out.rest) {
                fputs (out.rest, stdout);
                putchar ('\n');
                fflush (stdout);
                seen++;
                quiet_ms = 0;
            } else
                fprintf (stderr, "corral tap: an event on %.*s does not decode: %s\n",
                         (int)zmq_msg_size (&parts[0]), (char *)zmq_msg_data (&parts[0]),
                         cm_strerror (rc));
            gw_rendered_fini (&out);
        }
        for (int i = 0; i < got && i < 2; i++) zmq_msg_close (&parts[i]);
    }
done:
    cm_zmq_close (&sub);
    gw_render_destroy (&render);
    cm_zmq_term ();
    cm_config_free (s_opts, &cfg);
    return status;
}
