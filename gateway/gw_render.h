/*  gw_render.h - Corral events and session records as the JSON clients see
    (DESIGN §5, §6).

    A pure module: no sockets, no globals.  The gateway hands it one event
    exactly as it came off the bus (the event frame of a PUB message, or one
    item of a store events.range reply) and gets back everything it sends
    for that event:

      - frames: complete JSON-RPC notification texts for /acp clients, in
        order.  Every event yields at least one, and every frame of an event
        carries the same _meta {seq, epoch, ts, turnId} on its params, so a
        client checks a gap-free stream by _meta.seq.  ACP v1 session/update
        notifications where ACP has a matching update, Corral extension
        notifications (_corral/session/state, _corral/session/event)
        otherwise.  The table of which event becomes what heads
        gw_render.c.
      - rest: one JSON object text for REST JSON lines and SSE:
        {seq, ts, epoch, sessionId, turnId, kind, <body fields in camelCase>};
        kind is the event's wire name, so tool_call's own kind field goes
        out as toolKind.
      - for a permission_request, the params of the session/request_permission
        request to send to each attached client; the request id for both
        permission events; the new state for a state event.

    Every frame validates against the official ACP v1 schema
    (@agentclientprotocol/sdk schema/v1/schema.json): values ACP restricts
    to an enum are checked and mapped (an unknown tool kind becomes
    "other", an unknown tool status is left out, a plan entry without a
    valid priority gets "medium", a permission option with an unknown kind
    is left out), prompt content blocks that do not have ACP's shape become
    text blocks, and every string is valid UTF-8 (invalid bytes from the
    bus become U+FFFD).  Fields holding JSON text (prompt, raw_input,
    raw_output, and task params/result, error data in gw_render_record) are
    embedded as parsed JSON when they parse and nest at most
    GW_RENDER_MAX_JSON_DEPTH deep, else as strings.

    Memory comes from malloc (jansson's default allocator); char * results
    are freed with free(), json_t * results with json_decref().
*/
#ifndef GW_RENDER_H
#define GW_RENDER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

#include "cm_id.h"
#include "proto.h"

//  Frames one event can produce.  A user_message with more content blocks
//  than GW_RENDER_MAX_PROMPT_BLOCKS sends the first
//  GW_RENDER_MAX_PROMPT_BLOCKS - 1 as they are and folds the rest into one
//  last text block (see gw_render_event).
#define GW_RENDER_MAX_FRAMES        8
#define GW_RENDER_MAX_PROMPT_BLOCKS (GW_RENDER_MAX_FRAMES - 1)
//  Embedded JSON text nesting deeper than this is sent as a string.
#define GW_RENDER_MAX_JSON_DEPTH 64

//  ACP notification methods the frames use.
#define GW_RENDER_METHOD_UPDATE "session/update"
#define GW_RENDER_METHOD_STATE  "_corral/session/state"
#define GW_RENDER_METHOD_EVENT  "_corral/session/event"
#define GW_RENDER_METHOD_PERM   "session/request_permission"

typedef struct gw_render gw_render_t;

//  One rendered event, filled by gw_render_event and released with
//  gw_rendered_fini.  Everything it points to is owned by the struct; a
//  caller may take a pointer (a frame, rest) and set the member to NULL so
//  gw_rendered_fini skips it.
typedef struct {
    proto_type_t type; //  PROTO_EV_*
    const char *kind;  //  wire name ("tool_call"), static storage
    uint64_t seq;      //  the event head
    int64_t ts;        //  Unix ms
    cm_uuid_t session;
    bool has_turn; //  turn is set (the event belongs to a turn)
    cm_uuid_t turn;
    //  JSON-RPC notification texts for /acp, in order; 1..MAX_FRAMES.
    char *frames[GW_RENDER_MAX_FRAMES];
    size_t nframes;
    //  One JSON object text for REST JSON lines / SSE data.
    char *rest;
    //  The _meta object every frame carries ({seq, epoch, ts, turnId}),
    //  for frames the gateway adds for the same event.  NULL for
    //  agent_message_chunk and agent_thought_chunk, which are written
    //  without jansson (see gw_render_set_generic).
    json_t *meta;
    //  EV_PERMISSION_REQUEST only: params of a session/request_permission
    //  request (an ACP RequestPermissionRequest), else NULL.  Its _meta adds
    //  requestId and, when the event has one, deadlineMs.
    json_t *perm_params;
    //  EV_PERMISSION_REQUEST, EV_PERMISSION_RESOLVED: the request id; else
    //  NULL.
    char *request_id;
    //  EV_STATE: the new state ("running"); else NULL.
    char *state;
} gw_rendered_t;

//  A renderer: holds one reusable decode buffer.  Returns NULL when out of
//  memory.  Not thread-safe; use one per thread.
gw_render_t *gw_render_new (void);

//  Streamed text events (agent_message_chunk, agent_thought_chunk) are
//  written straight into a buffer, not through jansson: same bytes, a
//  fraction of the cost.  generic = true sends them through jansson like
//  every other event (the tests compare the two).
void gw_render_set_generic (gw_render_t *self, bool generic);

//  Free a renderer and set *self_p to NULL; no-op if either is NULL.
void gw_render_destroy (gw_render_t **self_p);

//  Decode one encoded event (len bytes at data, as published on PUB or
//  returned by the store) and render it into *out, which is overwritten
//  without being freed first (call gw_rendered_fini on a filled one).
//  epoch is the store epoch text put into every _meta and rest, or NULL
//  to leave it out.  data is only read during the call.
//
//  user_message: one user_message_chunk per content block of the prompt
//  (a JSON array text).  A prompt that is not a JSON array becomes one text
//  block holding the raw text; an empty array one empty text block.  More
//  than GW_RENDER_MAX_PROMPT_BLOCKS blocks: blocks from the
//  GW_RENDER_MAX_PROMPT_BLOCKS-th on are folded into one text block (text
//  blocks' text, a resource's text or URI, "[image: <mime type>]" ... joined
//  by blank lines; its _meta.foldedBlocks says how many); REST always has
//  the whole prompt.
//
//  Returns 0 and fills *out, or a negative cm code with *out zeroed:
//    CM_E_INVALID, CM_E_TRUNCATED, CM_E_DEPTH, CM_E_TOO_LARGE, CM_E_VERSION,
//    CM_E_UNKNOWN_TYPE, CM_E_TYPE, CM_E_MISSING  the bytes do not decode
//                                                (proto_decode)
//    CM_E_INVALID  a valid message that is not an event
//    CM_E_NOMEM    out of memory
//  Any bytes are safe to pass: errors, never a crash.
int gw_render_event (gw_render_t *self, const void *data, size_t len, const char *epoch,
                     gw_rendered_t *out);

//  Free what *out holds and zero it; no-op if out is NULL.  Idempotent.
void gw_rendered_fini (gw_rendered_t *out);

//  Any record as a JSON object: every field under its camelCase name
//  (tool_call_id -> toolCallId); numbers as numbers (a U64 above INT64_MAX
//  is clamped to it), UUIDs in canonical text, BIN as base64, lists as
//  arrays (always present, possibly empty), nested records as objects;
//  absent strings, nil UUIDs and absent nested records are left out.
//  JSON-text fields are embedded as parsed JSON when they parse (see
//  above).  obj points to the record's C struct (proto_<record>_t).
//  Returns a new object, or NULL when out of memory.
json_t *gw_render_record (const proto_rec_desc_t *rec, const void *obj);

//  ACP SessionInfo for session/list: {sessionId, cwd, title?, updatedAt
//  (ISO 8601, from updated_ms, else created_ms), _meta: {state, lastSeq,
//  turns, createdAt (ISO 8601), backend?, model?, mode?, project?}}.
//  Returns a new object, or NULL when out of memory.
json_t *gw_render_session_info (const proto_session_rec_t *s);

//  The REST form of a session: gw_render_record of the session record
//  ({id, tenant, cwd, state, createdMs, usage: {inputTokens ...} ...}).
//  Returns a new object, or NULL when out of memory.
json_t *gw_render_session_rest (const proto_session_rec_t *s);

//  ACP SessionModeState: {currentModeId, availableModes: [ask, edit, auto,
//  read_only with names and descriptions]}.  current_mode NULL means "ask".
//  Returns a new object, or NULL when out of memory.
json_t *gw_render_modes (const char *current_mode);

//  ACP configOptions (for the session/new, session/load, session/resume
//  and session/set_config_option responses): an array of SessionConfigOption
//  of type "select": "model" (category "model"; values: models[0..nmodels)
//  plus the session's model if not among them) and "backend" (values
//  openai, anthropic, acp), each with the session's value as currentValue,
//  each left out when the session has no value for it.  models may be NULL
//  when nmodels is 0; its strings are copied.
//  Returns a new array, or NULL when out of memory.
json_t *gw_render_config_options (const proto_session_rec_t *s, const char *const *models,
                                  size_t nmodels);

//  A session/update config_option_update notification text with the
//  session's whole set of config options (gw_render_config_options) and
//  meta (borrowed, may be NULL) as its params' _meta.  A setting_changed
//  event for model or backend renders as _corral/session/event, because
//  ACP's config_option_update must carry the full set, which one event does
//  not know: a gateway that has the session record can add this frame
//  after that event's frames, with the event's gw_rendered_t.meta.
//  Returns the text (free() it), or NULL when out of memory.
char *gw_render_config_update (const proto_session_rec_t *s, const char *const *models,
                               size_t nmodels, json_t *meta);

//  Unix ms as ISO 8601 UTC with milliseconds ("2025-01-02T03:04:05.678Z")
//  into buf (size >= 25 bytes).  Returns buf, or NULL for a time outside
//  years 0..9999.
char *gw_render_iso8601 (int64_t ms, char *buf, size_t size);

#endif
