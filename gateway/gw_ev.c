/*  gw_ev.c - an event as the gateway keeps it: rendered once (ACP frames,
    the REST object, what the watch logic needs to know), then shared by
    every connection and the subscription's ring through reference counts.
*/
#include <stdlib.h>
#include <string.h>

#include "cm_log.h"
#include "gw.h"
#include "gw_render.h"

static char *dup_or_null (const char *s)
{
    return s && *s ? strdup (s) : NULL;
}

gw_ev_t *gw_ev_new (gw_server_t *self, const void *data, size_t len)
{
    gw_rendered_t out;
    int rc = gw_render_event (self->render, data, len, self->epoch, &out);
    if (rc) {
        cm_warn ("an event could not be rendered: %s", cm_strerror (rc));
        return NULL;
    }
    gw_ev_t *ev = calloc (1, sizeof *ev);
    if (!ev) {
        gw_rendered_fini (&out);
        return NULL;
    }
    ev->refs = 1;
    ev->seq = out.seq;
    ev->ts = out.ts;
    ev->type = out.type;
    ev->has_turn = out.has_turn;
    ev->turn = out.turn;
    for (size_t i = 0; i < out.nframes && i < GW_EV_FRAMES; i++) {
        ev->acp[ev->nacp] = gw_frame_take (out.frames[i]);
        out.frames[i] = NULL;
        if (ev->acp[ev->nacp]) ev->nacp++;
    }
    ev->rest = out.rest;
    out.rest = NULL;
    if (out.perm_params) ev->perm_params = json_dumps (out.perm_params, JSON_COMPACT);
    ev->request_id = dup_or_null (out.request_id);
    //  The two facts the watch logic needs that the renderer does not
    //  split out: a prompt's idempotency key and a turn's outcome.
    if ((ev->type == PROTO_EV_USER_MESSAGE || ev->type == PROTO_EV_TURN_ENDED) &&
        ev->rest) {
        json_t *obj = json_loads (ev->rest, 0, NULL);
        if (obj) {
            ev->idem = dup_or_null (json_string_value (json_object_get (obj, "idem")));
            ev->stop_reason =
                dup_or_null (json_string_value (json_object_get (obj, "stopReason")));
            ev->code = json_integer_value (json_object_get (obj, "code"));
            ev->message =
                dup_or_null (json_string_value (json_object_get (obj, "message")));
            json_decref (obj);
        }
    }
    gw_rendered_fini (&out);
    return ev;
}

gw_ev_t *gw_ev_ref (gw_ev_t *ev)
{
    if (ev) ev->refs++;
    return ev;
}

void gw_ev_unref (gw_ev_t **ev_p)
{
    if (!ev_p || !*ev_p) return;
    gw_ev_t *ev = *ev_p;
    *ev_p = NULL;
    if (--ev->refs) return;
    for (size_t i = 0; i < ev->nacp; i++) gw_frame_unref (&ev->acp[i]);
    free (ev->rest);
    free (ev->perm_params);
    free (ev->request_id);
    free (ev->idem);
    free (ev->stop_reason);
    free (ev->message);
    free (ev);
}
