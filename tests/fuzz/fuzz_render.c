/*  fuzz_render.c - libFuzzer target on the gateway's event renderer
    (gw_render): bytes as they come off the bus (a PUB event, a stored
    event) become the JSON every client is sent.

    Any bytes must give either an error code or a rendering that keeps the
    contract of gw_render.h: at least one frame, every frame a JSON-RPC
    notification whose params carry _meta.seq equal to the event's seq,
    and a REST object that parses.  Never a crash or a leak.  Streamed
    text, which the renderer writes without jansson, must come out byte
    for byte as the generic (jansson) path writes it.
*/
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "gw_render.h"

static gw_render_t *s_render, *s_generic;

static void s_check_frame (const char *text, uint64_t seq)
{
    json_t *root = json_loads (text, 0, NULL);
    if (!json_is_object (root)) abort ();
    if (!json_is_string (json_object_get (root, "method"))) abort ();
    json_t *meta = json_object_get (json_object_get (root, "params"), "_meta");
    json_t *s = json_object_get (meta, "seq");
    if (!json_is_integer (s)) abort ();
    //  seq beyond INT64_MAX is clamped by the renderer
    if (seq <= INT64_MAX && (uint64_t)json_integer_value (s) != seq) abort ();
    json_decref (root);
}

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
    if (!s_render) s_render = gw_render_new ();
    if (!s_generic && (s_generic = gw_render_new ()))
        gw_render_set_generic (s_generic, true);
    if (!s_render || !s_generic) abort ();
    gw_rendered_t out;
    if (gw_render_event (s_render, data, size, "01a200d9-aaa9-7000-9434-62849d342a27",
                         &out))
        return 0;
    if (out.nframes < 1 || out.nframes > GW_RENDER_MAX_FRAMES) abort ();
    for (size_t i = 0; i < out.nframes; i++) s_check_frame (out.frames[i], out.seq);
    json_t *rest = json_loads (out.rest, 0, NULL);
    if (!json_is_object (rest)) abort ();
    json_decref (rest);
    if (out.type == PROTO_EV_AGENT_MESSAGE || out.type == PROTO_EV_AGENT_THOUGHT) {
        gw_rendered_t slow;
        if (gw_render_event (s_generic, data, size,
                             "01a200d9-aaa9-7000-9434-62849d342a27", &slow))
            abort ();
        if (slow.nframes != out.nframes || strcmp (slow.frames[0], out.frames[0]) ||
            strcmp (slow.rest, out.rest))
            abort ();
        gw_rendered_fini (&slow);
    }
    gw_rendered_fini (&out);
    return 0;
}
