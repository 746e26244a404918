/*  gw_render.c - Corral events and session records as the JSON clients see.

    Every event becomes, in order:
        event (wire name)    /acp frames (method: what)
        session_created      _corral/session/event
        state                _corral/session/state {sessionId, state, reason?}
        user_message         session/update: user_message_chunk, one per block
        turn_started         _corral/session/event
        agent_message_chunk  session/update: agent_message_chunk (text block)
        agent_thought_chunk  session/update: agent_thought_chunk (text block)
        tool_call            session/update: tool_call
        tool_call_update     session/update: tool_call_update (text, diff)
        plan                 session/update: plan
        usage_update         _corral/session/event (ACP's usage_update needs the
                             context window's used/size, which we do not know)
        permission_request   _corral/session/event, and perm_params for the
                             session/request_permission request
        permission_resolved  _corral/session/event
        turn_ended           _corral/session/event
        setting_changed      mode: current_mode_update; title:
                             session_info_update; others: _corral/session/event
        policy               _corral/session/event
        session_info         session/update: session_info_update
    _corral/session/event params are {sessionId, event: {kind, <fields>},
    _meta}, the fields being the same camelCase walk as the REST object.

    One handler per event type, from a table indexed by the type id; an
    event type without a handler gets the generic _corral/session/event.
    Every builder treats a NULL from jansson as out of memory; helpers that
    take a json_t * consume it (also on failure) and accept NULL, so calls
    nest without leaks.
*/
#include <assert.h>
#include <ctype.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cm_error.h"
#include "cm_strbuf.h"
#include "gw_render.h"
#include "gw_rpc.h"

struct gw_render {
    proto_msg_t msg; //  reused by every decode
    bool generic;    //  no fast path (gw_render_set_generic)
};

// ---------------------------------------------------------------------------
//  Values

//  Length of the valid UTF-8 sequence at p (1..4), or 0 if the bytes there
//  are not one (RFC 3629: no overlong forms, surrogates or code points
//  above U+10FFFF; the same rules jansson applies).
static size_t s_utf8_len (const unsigned char *p, size_t avail)
{
    unsigned char c = p[0];
    if (c < 0x80) return 1;
    size_t n;
    unsigned char lo = 0x80, hi = 0xBF; //  range of the second byte
    if (c >= 0xC2 && c <= 0xDF)
        n = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        n = 3;
        if (c == 0xE0) lo = 0xA0;
        if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 4;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;
    } else
        return 0;
    if (avail < n || p[1] < lo || p[1] > hi) return 0;
    for (size_t i = 2; i < n; i++)
        if (p[i] < 0x80 || p[i] > 0xBF) return 0;
    return n;
}

//  A JSON string of s; bytes that are not UTF-8 become U+FFFD (strings
//  from the bus are not checked by the codec).  NULL on OOM.
static json_t *s_str (const char *s)
{
    size_t len = strlen (s);
    json_t *v = json_stringn (s, len);
    if (v || len > (SIZE_MAX - 1) / 3) return v;
    //  Invalid UTF-8 (or OOM): copy with replacements; a bad byte becomes
    //  three, so 3 * len bytes are enough.
    char *buf = malloc (3 * len + 1);
    if (!buf) return NULL;
    size_t o = 0;
    for (size_t i = 0; i < len;) {
        size_t n = s_utf8_len ((const unsigned char *)s + i, len - i);
        if (n) {
            memcpy (buf + o, s + i, n);
            i += n;
        } else {
            n = 3;
            memcpy (buf + o, "\xEF\xBF\xBD", n);
            i++;
        }
        o += n;
    }
    v = json_stringn (buf, o);
    free (buf);
    return v;
}

static json_t *s_u64 (uint64_t v)
{
    return json_integer (v > INT64_MAX ? INT64_MAX : (json_int_t)v);
}

static json_t *s_uuid (const cm_uuid_t *id)
{
    char text[CM_UUID_STR_LEN];
    return json_string (cm_uuid_fmt (id, text));
}

static json_t *s_iso (int64_t ms)
{
    char text[32];
    return gw_render_iso8601 (ms, text, sizeof text) ? json_string (text) : json_null ();
}

static json_t *s_base64 (const uint8_t *data, size_t size)
{
    static const char digits[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    if (!data) size = 0;
    if (size > (SIZE_MAX / 4 - 1) * 3) return NULL;
    char *text = malloc ((size + 2) / 3 * 4 + 1);
    if (!text) return NULL;
    size_t o = 0;
    for (size_t i = 0; i < size; i += 3) {
        uint32_t v = (uint32_t)data[i] << 16;
        if (i + 1 < size) v |= (uint32_t)data[i + 1] << 8;
        if (i + 2 < size) v |= data[i + 2];
        text[o++] = digits[(v >> 18) & 63];
        text[o++] = digits[(v >> 12) & 63];
        text[o++] = i + 1 < size ? digits[(v >> 6) & 63] : '=';
        text[o++] = i + 2 < size ? digits[v & 63] : '=';
    }
    json_t *s = json_stringn (text, o);
    free (text);
    return s;
}

//  Set key in obj to value, consuming value (also when it is NULL or the
//  set fails, as json_object_set_new does).  -1 on failure.
static int s_set (json_t *obj, const char *key, json_t *value)
{
    return json_object_set_new (obj, key, value) ? -1 : 0;
}

static int s_append (json_t *array, json_t *value)
{
    return json_array_append_new (array, value) ? -1 : 0;
}

//  {k1: v1, k2: v2}; consumes both values (also on failure).
static json_t *s_pair (const char *k1, json_t *v1, const char *k2, json_t *v2)
{
    json_t *o = json_object ();
    if (s_set (o, k1, v1)) {
        json_decref (v2);
        json_decref (o);
        return NULL;
    }
    if (s_set (o, k2, v2)) {
        json_decref (o);
        return NULL;
    }
    return o;
}

//  True when the JSON text's [ and { (outside strings) nest at most max.
static bool s_depth_ok (const char *s, int max)
{
    int depth = 0;
    bool in_str = false;
    for (; *s; s++) {
        if (in_str) {
            if (*s == '\\' && s[1])
                s++;
            else if (*s == '"')
                in_str = false;
        } else if (*s == '"')
            in_str = true;
        else if ((*s == '[' || *s == '{') && ++depth > max)
            return false;
        else if (*s == ']' || *s == '}')
            depth--;
    }
    return true;
}

//  JSON text as the value it holds (any JSON value) when it parses and
//  nests at most GW_RENDER_MAX_JSON_DEPTH deep, else as a string.
static json_t *s_json_text (const char *text)
{
    if (s_depth_ok (text, GW_RENDER_MAX_JSON_DEPTH)) {
        json_error_t err;
        json_t *v = json_loads (text, JSON_DECODE_ANY, &err);
        if (v) return v;
    }
    return s_str (text);
}

static bool s_one_of (const char *value, const char *const *set)
{
    for (; value && *set; set++)
        if (strcmp (value, *set) == 0) return true;
    return false;
}

// ---------------------------------------------------------------------------
//  Records: a generic walk over the catalogue's descriptors

//  STR fields that hold JSON text.
static const struct {
    const proto_rec_desc_t *rec;
    const char *field;
} s_json_fields[] = {
    {&proto_rec_ev_user_message, "prompt"},    {&proto_rec_ev_tool_call, "raw_input"},
    {&proto_rec_ev_tool_update, "raw_output"}, {&proto_rec_task_rec, "params"},
    {&proto_rec_task_rec, "result"},           {&proto_rec_error, "data"},
};
#define S_JSON_FIELDS (sizeof (s_json_fields) / sizeof (s_json_fields[0]))

static bool s_is_json_field (const proto_rec_desc_t *rec, const proto_field_desc_t *f)
{
    for (size_t i = 0; i < S_JSON_FIELDS; i++)
        if (s_json_fields[i].rec == rec && strcmp (s_json_fields[i].field, f->name) == 0)
            return true;
    return false;
}

//  Event fields whose name would collide with the envelope of a REST
//  object or a _corral/session/event (seq, ts, epoch, sessionId, turnId,
//  kind) go out under another name.  The envelope is set first and fields
//  never replace it, so a collision this table misses loses the field, not
//  the envelope.
static const struct {
    const proto_rec_desc_t *rec;
    const char *field, *name;
} s_renames[] = {
    {&proto_rec_ev_tool_call, "kind", "toolKind"},
};
#define S_RENAMES (sizeof (s_renames) / sizeof (s_renames[0]))

//  tool_call_id -> toolCallId
static void s_camel (const char *name, char *out, size_t size)
{
    size_t o = 0;
    bool up = false;
    for (const char *p = name; *p && o + 1 < size; p++) {
        if (*p == '_') {
            up = o > 0;
            continue;
        }
        out[o++] = up ? (char)toupper ((unsigned char)*p) : *p;
        up = false;
    }
    out[o] = '\0';
}

//  Every list type is {items, count}.
typedef struct {
    const void *items;
    size_t count;
} s_list_t;

static json_t *s_record (const proto_rec_desc_t *rec, const void *obj, size_t skip);

//  The JSON value of one field; *v stays NULL for an absent one.  -1 on OOM.
static int s_field (const proto_rec_desc_t *rec, const proto_field_desc_t *f,
                    const char *p, json_t **v)
{
    *v = NULL;
    switch (f->type) {
    case PROTO_T_U64: {
        uint64_t u;
        memcpy (&u, p, sizeof u);
        *v = s_u64 (u);
        break;
    }
    case PROTO_T_I64: {
        int64_t i;
        memcpy (&i, p, sizeof i);
        *v = json_integer (i);
        break;
    }
    case PROTO_T_F64: {
        double d;
        memcpy (&d, p, sizeof d);
        *v = isfinite (d) ? json_real (d) : json_null ();
        break;
    }
    case PROTO_T_BOOL: {
        bool b;
        memcpy (&b, p, sizeof b);
        *v = json_boolean (b);
        break;
    }
    case PROTO_T_STR: {
        const char *s;
        memcpy (&s, p, sizeof s);
        if (!s) return 0;
        *v = s_is_json_field (rec, f) ? s_json_text (s) : s_str (s);
        break;
    }
    case PROTO_T_BIN: {
        proto_bin_t b;
        memcpy (&b, p, sizeof b);
        if (!b.data) return 0;
        *v = s_base64 (b.data, b.size);
        break;
    }
    case PROTO_T_UUID: {
        cm_uuid_t id;
        memcpy (&id, p, sizeof id);
        if (cm_uuid_is_nil (&id)) return 0;
        *v = s_uuid (&id);
        break;
    }
    case PROTO_T_STR_LIST: {
        proto_str_list_t l;
        memcpy (&l, p, sizeof l);
        json_t *a = *v = json_array ();
        for (size_t i = 0; a && l.items && i < l.count; i++)
            if (l.items[i] && s_append (a, s_str (l.items[i]))) return -1;
        break;
    }
    case PROTO_T_BIN_LIST: {
        proto_bin_list_t l;
        memcpy (&l, p, sizeof l);
        json_t *a = *v = json_array ();
        for (size_t i = 0; a && l.items && i < l.count; i++)
            if (s_append (a, s_base64 (l.items[i].data, l.items[i].size))) return -1;
        break;
    }
    case PROTO_T_REC: {
        const void *sub;
        memcpy (&sub, p, sizeof sub);
        if (!sub) return 0;
        *v = s_record (f->rec, sub, 0);
        break;
    }
    case PROTO_T_REC_LIST: {
        s_list_t l;
        memcpy (&l, p, sizeof l);
        json_t *a = *v = json_array ();
        for (size_t i = 0; a && l.items && i < l.count; i++)
            if (s_append (a,
                          s_record (f->rec, (const char *)l.items + i * f->rec->size, 0)))
                return -1;
        break;
    }
    }
    return *v ? 0 : -1;
}

//  The record's fields from index skip on, as one object; NULL on OOM.
static json_t *s_record (const proto_rec_desc_t *rec, const void *obj, size_t skip)
{
    json_t *o = json_object ();
    for (size_t i = skip; o && i < rec->field_count; i++) {
        const proto_field_desc_t *f = &rec->fields[i];
        json_t *v;
        char key[256];
        if (s_field (rec, f, (const char *)obj + f->offset, &v)) {
            json_decref (v);
            json_decref (o);
            return NULL;
        }
        s_camel (f->name, key, sizeof key);
        for (size_t r = 0; r < S_RENAMES; r++)
            if (s_renames[r].rec == rec && strcmp (s_renames[r].field, f->name) == 0)
                snprintf (key, sizeof key, "%s", s_renames[r].name);
        if (v && s_set (o, key, v)) {
            json_decref (o);
            return NULL;
        }
    }
    return o;
}

json_t *gw_render_record (const proto_rec_desc_t *rec, const void *obj)
{
    assert (rec && obj);
    return s_record (rec, obj, 0);
}

// ---------------------------------------------------------------------------
//  ACP content blocks (the user's prompt, as stored)

static bool s_opt_type (json_t *o, const char *key, bool (*ok) (const json_t *))
{
    json_t *v = json_object_get (o, key);
    return !v || json_is_null (v) || ok (v);
}

static bool s_is_string (const json_t *v)
{
    return json_is_string (v);
}
static bool s_is_object (const json_t *v)
{
    return json_is_object (v);
}
static bool s_is_integer (const json_t *v)
{
    return json_is_integer (v);
}
static bool s_is_number (const json_t *v)
{
    return json_is_number (v);
}

static bool s_has_str (json_t *o, const char *key)
{
    return json_is_string (json_object_get (o, key));
}

//  The members every ACP object may have, and a content block's
//  annotations, have the schema's types (or are absent / null).
static bool s_common_ok (json_t *o)
{
    if (!s_opt_type (o, "_meta", s_is_object)) return false;
    json_t *a = json_object_get (o, "annotations");
    if (!a || json_is_null (a)) return true;
    if (!json_is_object (a) || !s_opt_type (a, "lastModified", s_is_string) ||
        !s_opt_type (a, "priority", s_is_number) || !s_opt_type (a, "_meta", s_is_object))
        return false;
    json_t *aud = json_object_get (a, "audience"), *role;
    size_t i;
    if (!aud || json_is_null (aud)) return true;
    if (!json_is_array (aud)) return false;
    json_array_foreach (aud, i, role)
    {
        const char *r = json_string_value (role);
        if (!r || (strcmp (r, "user") != 0 && strcmp (r, "assistant") != 0)) return false;
    }
    return true;
}

//  True when block has the shape of an ACP v1 ContentBlock.
static bool s_block_ok (json_t *block)
{
    const char *type = json_string_value (json_object_get (block, "type"));
    if (!type || !s_common_ok (block)) return false;
    if (strcmp (type, "text") == 0) return s_has_str (block, "text");
    if (strcmp (type, "image") == 0)
        return s_has_str (block, "data") && s_has_str (block, "mimeType") &&
               s_opt_type (block, "uri", s_is_string);
    if (strcmp (type, "audio") == 0)
        return s_has_str (block, "data") && s_has_str (block, "mimeType");
    if (strcmp (type, "resource_link") == 0)
        return s_has_str (block, "name") && s_has_str (block, "uri") &&
               s_opt_type (block, "title", s_is_string) &&
               s_opt_type (block, "description", s_is_string) &&
               s_opt_type (block, "mimeType", s_is_string) &&
               s_opt_type (block, "size", s_is_integer);
    if (strcmp (type, "resource") == 0) {
        json_t *r = json_object_get (block, "resource");
        return json_is_object (r) && s_has_str (r, "uri") &&
               (s_has_str (r, "text") || s_has_str (r, "blob")) &&
               s_opt_type (r, "mimeType", s_is_string) &&
               s_opt_type (r, "_meta", s_is_object);
    }
    return false;
}

//  {"type":"text","text":text}; consumes text.
static json_t *s_text_block (json_t *text)
{
    return s_pair ("type", json_string ("text"), "text", text);
}

//  Compact JSON text of any value; NULL on OOM.
static char *s_dumps (const json_t *v)
{
    return json_dumps (v, JSON_COMPACT | JSON_ENCODE_ANY);
}

//  A block as ACP accepts it: itself when it has ACP's shape, else a text
//  block holding its JSON text.
static json_t *s_block (json_t *block)
{
    if (s_block_ok (block)) return json_incref (block);
    char *text = s_dumps (block);
    json_t *b = text ? s_text_block (json_string (text)) : NULL;
    free (text);
    return b;
}

//  A block as folded text: a text block's text, a resource's text (else
//  its URI), a link's URI, "[image: image/png]" for image and audio, and
//  the JSON text of anything without ACP's shape.
static void s_fold_one (cm_strbuf_t *buf, json_t *b)
{
    if (!s_block_ok (b)) {
        char *text = s_dumps (b);
        if (!text) buf->oom = true;
        cm_strbuf_puts (buf, text ? text : "");
        free (text);
        return;
    }
    const char *type = json_string_value (json_object_get (b, "type"));
    json_t *r = json_object_get (b, "resource");
    if (strcmp (type, "text") == 0)
        cm_strbuf_puts (buf, json_string_value (json_object_get (b, "text")));
    else if (strcmp (type, "resource") == 0)
        cm_strbuf_puts (buf, json_string_value (json_object_get (
                                 r, s_has_str (r, "text") ? "text" : "uri")));
    else if (strcmp (type, "resource_link") == 0)
        cm_strbuf_puts (buf, json_string_value (json_object_get (b, "uri")));
    else
        cm_strbuf_putf (buf, "[%s: %s]", type,
                        json_string_value (json_object_get (b, "mimeType")));
}

//  Blocks [from, count) of an array folded into one text block, joined by
//  blank lines; its _meta.foldedBlocks says how many.
static json_t *s_fold (json_t *blocks, size_t from)
{
    cm_strbuf_t buf = {0};
    size_t count = json_array_size (blocks);
    for (size_t i = from; i < count; i++) {
        if (i > from) cm_strbuf_puts (&buf, "\n\n");
        s_fold_one (&buf, json_array_get (blocks, i));
    }
    char *text = cm_strbuf_take (&buf);
    json_t *block = text ? s_text_block (json_string (text)) : NULL;
    free (text);
    json_t *meta = json_object ();
    if (!block || !meta ||
        s_set (meta, "foldedBlocks", json_integer ((json_int_t)(count - from))) ||
        s_set (block, "_meta", json_incref (meta))) {
        json_decref (block);
        block = NULL;
    }
    json_decref (meta);
    return block;
}

// ---------------------------------------------------------------------------
//  Events

typedef struct {
    const proto_msg_t *msg;
    gw_rendered_t *out;
    json_t *fields; //  the body without its head, camelCase
    char session[CM_UUID_STR_LEN];
} s_ctx_t;

typedef int (s_handler_fn) (s_ctx_t *c);

//  Fields every event record starts with (PROTO_EVENT_HEAD).
#define S_HEAD_FIELDS 4

static int s_push (s_ctx_t *c, char *text)
{
    if (!text) return CM_E_NOMEM;
    if (c->out->nframes == GW_RENDER_MAX_FRAMES) {
        free (text);
        return CM_E_INTERNAL; //  a handler made too many: a bug here
    }
    c->out->frames[c->out->nframes++] = text;
    return 0;
}

//  Send a notification with params {sessionId, <key>: value, _meta};
//  consumes value.
static int s_notify (s_ctx_t *c, const char *method, const char *key, json_t *value)
{
    json_t *params = value ? json_object () : NULL;
    if (!params || s_set (params, "sessionId", json_string (c->session))) {
        json_decref (params);
        json_decref (value);
        return CM_E_NOMEM;
    }
    if (s_set (params, key, value) ||
        s_set (params, "_meta", json_incref (c->out->meta))) {
        json_decref (params);
        return CM_E_NOMEM;
    }
    int rc = s_push (c, gw_rpc_notification (method, params));
    json_decref (params);
    return rc;
}

//  session/update with the given update object (consumed).
static int s_update (s_ctx_t *c, json_t *update)
{
    return s_notify (c, GW_RENDER_METHOD_UPDATE, "update", update);
}

//  {"sessionUpdate": kind}
static json_t *s_update_obj (const char *kind)
{
    json_t *u = json_object ();
    if (u && s_set (u, "sessionUpdate", json_string (kind))) {
        json_decref (u);
        return NULL;
    }
    return u;
}

//  A ContentChunk update; consumes block.
static json_t *s_chunk (const char *kind, json_t *block)
{
    return s_pair ("sessionUpdate", json_string (kind), "content", block);
}

//  _corral/session/event {sessionId, event: {kind, <fields>}, _meta}
static int s_on_event (s_ctx_t *c)
{
    json_t *event = json_object ();
    if (!event || s_set (event, "kind", json_string (c->out->kind)) ||
        json_object_update_missing (event, c->fields)) {
        json_decref (event);
        return CM_E_NOMEM;
    }
    return s_notify (c, GW_RENDER_METHOD_EVENT, "event", event);
}

static int s_on_state (s_ctx_t *c)
{
    const proto_ev_state_t *b = proto_body (c->msg, ev_state);
    if (!b) return CM_E_INTERNAL;
    if (!(c->out->state = strdup (b->state))) return CM_E_NOMEM;
    json_t *params = json_object ();
    if (!params || s_set (params, "sessionId", json_string (c->session)) ||
        s_set (params, "state", s_str (b->state)) ||
        (b->reason && s_set (params, "reason", s_str (b->reason))) ||
        s_set (params, "_meta", json_incref (c->out->meta))) {
        json_decref (params);
        return CM_E_NOMEM;
    }
    int rc = s_push (c, gw_rpc_notification (GW_RENDER_METHOD_STATE, params));
    json_decref (params);
    return rc;
}

static int s_on_user_message (s_ctx_t *c)
{
    const proto_ev_user_message_t *b = proto_body (c->msg, ev_user_message);
    if (!b) return CM_E_INTERNAL;
    json_t *blocks = NULL;
    json_error_t err;
    if (s_depth_ok (b->prompt, GW_RENDER_MAX_JSON_DEPTH))
        blocks = json_loads (b->prompt, 0, &err);
    size_t count = json_array_size (blocks); //  0 when not an array
    int rc = 0;
    if (count == 0) {
        //  Not a JSON array: the raw text; an empty array: an empty text.
        bool raw = !json_is_array (blocks);
        rc = s_update (
            c, s_chunk ("user_message_chunk",
                        s_text_block (raw ? s_str (b->prompt) : json_string (""))));
    }
    for (size_t i = 0; !rc && i < count && i < GW_RENDER_MAX_PROMPT_BLOCKS; i++) {
        bool fold =
            i == GW_RENDER_MAX_PROMPT_BLOCKS - 1 && count > GW_RENDER_MAX_PROMPT_BLOCKS;
        json_t *block = fold ? s_fold (blocks, i) : s_block (json_array_get (blocks, i));
        rc = s_update (c, s_chunk ("user_message_chunk", block));
    }
    json_decref (blocks);
    return rc;
}

static int s_on_text (s_ctx_t *c)
{
    const proto_ev_text_t *b = proto_body (c->msg, ev_text);
    if (!b) return CM_E_INTERNAL;
    const char *kind = c->msg->type == PROTO_EV_AGENT_THOUGHT ? "agent_thought_chunk"
                                                              : "agent_message_chunk";
    return s_update (c, s_chunk (kind, s_text_block (s_str (b->text))));
}

static const char *const s_tool_kinds[] = {"read",        "edit",    "delete", "move",
                                           "search",      "execute", "think",  "fetch",
                                           "switch_mode", "other",   NULL};
static const char *const s_tool_statuses[] = {"pending", "in_progress", "completed",
                                              "failed", NULL};

//  Append {path} to locations; -1 on OOM.
static int s_add_location (json_t *locations, const char *path)
{
    json_t *loc = json_object ();
    if (s_set (loc, "path", s_str (path))) {
        json_decref (loc);
        return -1;
    }
    return s_append (locations, loc);
}

static int s_on_tool_call (s_ctx_t *c)
{
    const proto_ev_tool_call_t *b = proto_body (c->msg, ev_tool_call);
    if (!b) return CM_E_INTERNAL;
    json_t *u = s_update_obj ("tool_call");
    if (!u || s_set (u, "toolCallId", s_str (b->tool_call_id)) ||
        s_set (u, "title", s_str (b->title)) ||
        (b->kind &&
         s_set (u, "kind",
                json_string (s_one_of (b->kind, s_tool_kinds) ? b->kind : "other"))) ||
        (s_one_of (b->status, s_tool_statuses) &&
         s_set (u, "status", json_string (b->status))) ||
        (b->raw_input && s_set (u, "rawInput", s_json_text (b->raw_input))))
        goto fail;
    if (b->locations.count && b->locations.items) {
        json_t *locs = json_array ();
        if (!locs || s_set (u, "locations", locs)) goto fail;
        for (size_t i = 0; i < b->locations.count; i++) {
            const char *path = b->locations.items[i];
            if (path && *path && s_add_location (locs, path)) goto fail;
        }
    }
    return s_update (c, u);
fail:
    json_decref (u);
    return CM_E_NOMEM;
}

//  {"type":"content","content":<text block>}; consumes text.
static json_t *s_tool_text (json_t *text)
{
    return s_pair ("type", json_string ("content"), "content", s_text_block (text));
}

static int s_on_tool_update (s_ctx_t *c)
{
    const proto_ev_tool_update_t *b = proto_body (c->msg, ev_tool_update);
    if (!b) return CM_E_INTERNAL;
    json_t *u = s_update_obj ("tool_call_update"), *content = json_array ();
    if (!u || !content || s_set (u, "toolCallId", s_str (b->tool_call_id)) ||
        (s_one_of (b->status, s_tool_statuses) &&
         s_set (u, "status", json_string (b->status))))
        goto fail;
    if (b->content && s_append (content, s_tool_text (s_str (b->content)))) goto fail;
    if (b->path && b->new_text) {
        json_t *diff = json_object ();
        if (!diff || s_set (diff, "type", json_string ("diff")) ||
            s_set (diff, "path", s_str (b->path)) ||
            (b->old_text && s_set (diff, "oldText", s_str (b->old_text))) ||
            s_set (diff, "newText", s_str (b->new_text))) {
            json_decref (diff);
            goto fail;
        }
        if (s_append (content, diff)) goto fail;
    } else if (b->diff) {
        //  Only a unified diff: as Markdown, which clients render.
        cm_strbuf_t md = {0};
        cm_strbuf_putf (&md, "```diff\n%s\n```", b->diff);
        char *text = cm_strbuf_take (&md);
        json_t *item = text ? s_tool_text (s_str (text)) : NULL;
        free (text);
        if (s_append (content, item)) goto fail;
    }
    if (json_array_size (content) && s_set (u, "content", json_incref (content)))
        goto fail;
    if (b->path) {
        json_t *locs = json_array ();
        if (s_set (u, "locations", locs) || s_add_location (locs, b->path)) goto fail;
    }
    if (b->raw_output && s_set (u, "rawOutput", s_json_text (b->raw_output))) goto fail;
    json_decref (content);
    return s_update (c, u);
fail:
    json_decref (content);
    json_decref (u);
    return CM_E_NOMEM;
}

static int s_on_plan (s_ctx_t *c)
{
    static const char *const priorities[] = {"high", "medium", "low", NULL};
    static const char *const statuses[] = {"pending", "in_progress", "completed", NULL};
    const proto_ev_plan_t *b = proto_body (c->msg, ev_plan);
    if (!b) return CM_E_INTERNAL;
    json_t *u = s_update_obj ("plan"), *entries = json_array ();
    if (!u || !entries || s_set (u, "entries", json_incref (entries))) goto fail;
    for (size_t i = 0; b->entries.items && i < b->entries.count; i++) {
        const proto_plan_entry_t *e = &b->entries.items[i];
        const char *priority =
            s_one_of (e->priority, priorities) ? e->priority : "medium";
        const char *status = s_one_of (e->status, statuses) ? e->status : "pending";
        json_t *entry = json_object ();
        if (!entry || s_set (entry, "content", s_str (e->content ? e->content : "")) ||
            s_set (entry, "priority", json_string (priority)) ||
            s_set (entry, "status", json_string (status))) {
            json_decref (entry);
            goto fail;
        }
        if (s_append (entries, entry)) goto fail;
    }
    json_decref (entries);
    return s_update (c, u);
fail:
    json_decref (entries);
    json_decref (u);
    return CM_E_NOMEM;
}

//  session_info_update {title?, updatedAt}; title NULL leaves it out.
static int s_info_update (s_ctx_t *c, const char *title)
{
    json_t *u = s_update_obj ("session_info_update");
    if (!u || (title && s_set (u, "title", s_str (title))) ||
        s_set (u, "updatedAt", s_iso (c->out->ts))) {
        json_decref (u);
        return CM_E_NOMEM;
    }
    return s_update (c, u);
}

static int s_on_setting (s_ctx_t *c)
{
    const proto_ev_setting_t *b = proto_body (c->msg, ev_setting);
    if (!b) return CM_E_INTERNAL;
    if (strcmp (b->option, "title") == 0) return s_info_update (c, b->value);
    if (strcmp (b->option, "mode") != 0) return s_on_event (c);
    json_t *u = s_update_obj ("current_mode_update");
    if (!u || s_set (u, "currentModeId", s_str (b->value))) {
        json_decref (u);
        return CM_E_NOMEM;
    }
    return s_update (c, u);
}

static int s_on_info (s_ctx_t *c)
{
    const proto_ev_info_t *b = proto_body (c->msg, ev_info);
    if (!b) return CM_E_INTERNAL;
    return s_info_update (c, b->title);
}

static const char *const s_perm_kinds[] = {"allow_once", "allow_always", "reject_once",
                                           "reject_always", NULL};

//  ACP RequestPermissionRequest for the event.
static json_t *s_perm_params (s_ctx_t *c, const proto_ev_perm_request_t *b)
{
    json_t *params = json_object (), *tool = json_object (), *options = json_array ();
    json_t *meta = json_deep_copy (c->out->meta);
    if (!params || !tool || !options || !meta ||
        s_set (params, "sessionId", json_string (c->session)) ||
        s_set (params, "toolCall", json_incref (tool)) ||
        s_set (params, "options", json_incref (options)) ||
        s_set (params, "_meta", json_incref (meta)) ||
        s_set (tool, "toolCallId", s_str (b->tool_call_id)) ||
        s_set (tool, "title", s_str (b->title)) ||
        s_set (tool, "status", json_string ("pending")) ||
        s_set (meta, "requestId", s_str (b->request_id)) ||
        (b->deadline_ms > 0 && s_set (meta, "deadlineMs", json_integer (b->deadline_ms))))
        goto fail;
    for (size_t i = 0; b->options.items && i < b->options.count; i++) {
        const proto_perm_option_t *o = &b->options.items[i];
        if (!s_one_of (o->kind, s_perm_kinds) || !o->option_id || !o->name) continue;
        json_t *opt = json_object ();
        if (!opt || s_set (opt, "optionId", s_str (o->option_id)) ||
            s_set (opt, "name", s_str (o->name)) ||
            s_set (opt, "kind", json_string (o->kind))) {
            json_decref (opt);
            goto fail;
        }
        if (s_append (options, opt)) goto fail;
    }
    json_decref (tool);
    json_decref (options);
    json_decref (meta);
    return params;
fail:
    json_decref (tool);
    json_decref (options);
    json_decref (meta);
    json_decref (params);
    return NULL;
}

static int s_on_perm_request (s_ctx_t *c)
{
    const proto_ev_perm_request_t *b = proto_body (c->msg, ev_perm_request);
    if (!b) return CM_E_INTERNAL;
    if (!(c->out->request_id = strdup (b->request_id)) ||
        !(c->out->perm_params = s_perm_params (c, b)))
        return CM_E_NOMEM;
    return s_on_event (c);
}

static int s_on_perm_resolved (s_ctx_t *c)
{
    const proto_ev_perm_resolved_t *b = proto_body (c->msg, ev_perm_resolved);
    if (!b) return CM_E_INTERNAL;
    if (!(c->out->request_id = strdup (b->request_id))) return CM_E_NOMEM;
    return s_on_event (c);
}

//  Handlers by type id; an event type without one gets s_on_event.
static s_handler_fn *const s_handlers[PROTO_MAX_TYPE] = {
    [PROTO_EV_STATE] = s_on_state,
    [PROTO_EV_USER_MESSAGE] = s_on_user_message,
    [PROTO_EV_AGENT_MESSAGE] = s_on_text,
    [PROTO_EV_AGENT_THOUGHT] = s_on_text,
    [PROTO_EV_TOOL_CALL] = s_on_tool_call,
    [PROTO_EV_TOOL_CALL_UPDATE] = s_on_tool_update,
    [PROTO_EV_PLAN] = s_on_plan,
    [PROTO_EV_PERMISSION_REQUEST] = s_on_perm_request,
    [PROTO_EV_PERMISSION_RESOLVED] = s_on_perm_resolved,
    [PROTO_EV_SETTING] = s_on_setting,
    [PROTO_EV_INFO] = s_on_info,
};

//  Read the event head through the descriptor; CM_E_INVALID if the body
//  record does not start with it (a catalogue mistake, not bad input).
static int s_head (const proto_msg_t *msg, gw_rendered_t *out)
{
    const proto_rec_desc_t *rec = msg->desc->body;
    const proto_field_desc_t *f = rec->fields;
    if (rec->field_count < S_HEAD_FIELDS || strcmp (f[0].name, "session") != 0 ||
        f[0].type != PROTO_T_UUID || strcmp (f[1].name, "seq") != 0 ||
        f[1].type != PROTO_T_U64 || strcmp (f[2].name, "ts") != 0 ||
        f[2].type != PROTO_T_I64 || strcmp (f[3].name, "turn") != 0 ||
        f[3].type != PROTO_T_UUID)
        return CM_E_INVALID;
    const char *body = msg->body;
    memcpy (&out->session, body + f[0].offset, sizeof out->session);
    memcpy (&out->seq, body + f[1].offset, sizeof out->seq);
    memcpy (&out->ts, body + f[2].offset, sizeof out->ts);
    memcpy (&out->turn, body + f[3].offset, sizeof out->turn);
    out->has_turn = !cm_uuid_is_nil (&out->turn);
    return 0;
}

//  {seq, epoch?, ts, turnId?}
static json_t *s_meta (const gw_rendered_t *out, const char *epoch)
{
    json_t *m = json_object ();
    if (!m || s_set (m, "seq", s_u64 (out->seq)) ||
        (epoch && s_set (m, "epoch", s_str (epoch))) ||
        s_set (m, "ts", json_integer (out->ts)) ||
        (out->has_turn && s_set (m, "turnId", s_uuid (&out->turn)))) {
        json_decref (m);
        return NULL;
    }
    return m;
}

//  {seq, ts, epoch?, sessionId, turnId?, kind, <fields>} as text.
static char *s_rest (const gw_rendered_t *out, const char *epoch, json_t *fields)
{
    json_t *r = json_object ();
    char *text = NULL;
    if (r && !s_set (r, "seq", s_u64 (out->seq)) &&
        !s_set (r, "ts", json_integer (out->ts)) &&
        !(epoch && s_set (r, "epoch", s_str (epoch))) &&
        !s_set (r, "sessionId", s_uuid (&out->session)) &&
        !(out->has_turn && s_set (r, "turnId", s_uuid (&out->turn))) &&
        !s_set (r, "kind", json_string (out->kind)) &&
        !json_object_update_missing (r, fields))
        text = json_dumps (r, JSON_COMPACT);
    json_decref (r);
    return text;
}

// ---------------------------------------------------------------------------
//  Streamed text without jansson

/*  agent_message_chunk and agent_thought_chunk are nearly every event of a
    turn (one per model token batch), and building a jansson tree for each,
    twice (the ACP frame and the REST object), was the gateway's largest
    cost per event (bench/fanout.sh: jansson and its mallocs were half the
    gateway's CPU at 20 000 events/s).  Their shape is fixed, so they are
    written straight into a buffer.  The text is byte for byte what the
    generic path writes (jansson's escapes, U+FFFD for bytes that are not
    UTF-8, the same key order); test_gw_render compares the two paths. */

//  A JSON string literal of the n bytes at s, escaped as jansson's
//  json_dumps escapes (", \, \b \f \n \r \t, other controls as \u00XX),
//  invalid UTF-8 replaced by U+FFFD as s_str does.
static void s_put_json_str (cm_strbuf_t *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789ABCDEF";
    const unsigned char *p = (const unsigned char *)s;
    cm_strbuf_put (b, "\"", 1);
    size_t i = 0;
    while (i < n) {
        size_t run = i;
        while (run < n && p[run] >= 0x20 && p[run] < 0x80 && p[run] != '"' &&
               p[run] != '\\')
            run++;
        cm_strbuf_put (b, s + i, run - i);
        i = run;
        if (i == n) break;
        unsigned char c = p[i];
        if (c >= 0x80) {
            size_t u = s_utf8_len (p + i, n - i);
            if (u)
                cm_strbuf_put (b, s + i, u);
            else
                cm_strbuf_put (b, "\xEF\xBF\xBD", 3);
            i += u ? u : 1;
            continue;
        }
        char esc[7] = {'\\', 0};
        size_t elen = 2;
        switch (c) {
        case '"':
            esc[1] = '"';
            break;
        case '\\':
            esc[1] = '\\';
            break;
        case '\b':
            esc[1] = 'b';
            break;
        case '\f':
            esc[1] = 'f';
            break;
        case '\n':
            esc[1] = 'n';
            break;
        case '\r':
            esc[1] = 'r';
            break;
        case '\t':
            esc[1] = 't';
            break;
        default:
            memcpy (esc + 1, "u00", 3);
            esc[4] = hex[c >> 4];
            esc[5] = hex[c & 15];
            elen = 6;
        }
        cm_strbuf_put (b, esc, elen);
        i++;
    }
    cm_strbuf_put (b, "\"", 1);
}

//  A signed decimal, as json_integer prints it.
static void s_put_int (cm_strbuf_t *b, int64_t v)
{
    char text[24], *q = text + sizeof text;
    uint64_t u = v < 0 ? 0 - (uint64_t)v : (uint64_t)v;
    do *--q = (char)('0' + u % 10);
    while (u /= 10);
    if (v < 0) *--q = '-';
    cm_strbuf_put (b, q, (size_t)(text + sizeof text - q));
}

static void s_put_uuid (cm_strbuf_t *b, const cm_uuid_t *id)
{
    char text[CM_UUID_STR_LEN];
    cm_strbuf_put (b, "\"", 1);
    cm_strbuf_put (b, cm_uuid_fmt (id, text), CM_UUID_STR_LEN - 1);
    cm_strbuf_put (b, "\"", 1);
}

//  The ACP frame and the REST object of a streamed text event, as
//  s_on_text and s_rest write them; out holds the head already.
static int s_fast_text (const proto_msg_t *msg, const char *epoch, gw_rendered_t *out)
{
    const proto_ev_text_t *ev = proto_body (msg, ev_text);
    if (!ev || !ev->text) return CM_E_INTERNAL;
    const char *kind = msg->type == PROTO_EV_AGENT_THOUGHT ? "agent_thought_chunk"
                                                           : "agent_message_chunk";
    int64_t seq = out->seq > INT64_MAX ? INT64_MAX : (int64_t)out->seq;
    //  The text and the epoch go in both texts: escaped once each.
    cm_strbuf_t text = {0}, ep = {0}, b = {0};
    s_put_json_str (&text, ev->text, strlen (ev->text));
    if (epoch) s_put_json_str (&ep, epoch, strlen (epoch));
    int rc = CM_E_NOMEM;
    if (text.oom || ep.oom) goto done;

    cm_strbuf_puts (&b, "{\"jsonrpc\":\"2.0\",\"method\":\"" GW_RENDER_METHOD_UPDATE
                        "\",\"params\":{\"sessionId\":");
    s_put_uuid (&b, &out->session);
    cm_strbuf_puts (&b, ",\"update\":{\"sessionUpdate\":\"");
    cm_strbuf_puts (&b, kind);
    cm_strbuf_puts (&b, "\",\"content\":{\"type\":\"text\",\"text\":");
    cm_strbuf_put (&b, text.p, text.len);
    cm_strbuf_puts (&b, "}},\"_meta\":{\"seq\":");
    s_put_int (&b, seq);
    if (epoch) {
        cm_strbuf_puts (&b, ",\"epoch\":");
        cm_strbuf_put (&b, ep.p, ep.len);
    }
    cm_strbuf_puts (&b, ",\"ts\":");
    s_put_int (&b, out->ts);
    if (out->has_turn) {
        cm_strbuf_puts (&b, ",\"turnId\":");
        s_put_uuid (&b, &out->turn);
    }
    cm_strbuf_puts (&b, "}}}");
    if (!(out->frames[0] = cm_strbuf_take (&b))) goto done;
    out->nframes = 1;

    cm_strbuf_puts (&b, "{\"seq\":");
    s_put_int (&b, seq);
    cm_strbuf_puts (&b, ",\"ts\":");
    s_put_int (&b, out->ts);
    if (epoch) {
        cm_strbuf_puts (&b, ",\"epoch\":");
        cm_strbuf_put (&b, ep.p, ep.len);
    }
    cm_strbuf_puts (&b, ",\"sessionId\":");
    s_put_uuid (&b, &out->session);
    if (out->has_turn) {
        cm_strbuf_puts (&b, ",\"turnId\":");
        s_put_uuid (&b, &out->turn);
    }
    cm_strbuf_puts (&b, ",\"kind\":\"");
    cm_strbuf_puts (&b, out->kind);
    cm_strbuf_puts (&b, "\",\"text\":");
    cm_strbuf_put (&b, text.p, text.len);
    cm_strbuf_puts (&b, "}");
    if ((out->rest = cm_strbuf_take (&b))) rc = 0;
done:
    cm_strbuf_free (&text);
    cm_strbuf_free (&ep);
    return rc;
}

gw_render_t *gw_render_new (void)
{
    gw_render_t *self = calloc (1, sizeof *self);
    if (self) proto_msg_init (&self->msg);
    return self;
}

void gw_render_set_generic (gw_render_t *self, bool generic)
{
    self->generic = generic;
}

void gw_render_destroy (gw_render_t **self_p)
{
    if (!self_p || !*self_p) return;
    proto_msg_fini (&(*self_p)->msg);
    free (*self_p);
    *self_p = NULL;
}

void gw_rendered_fini (gw_rendered_t *out)
{
    if (!out) return;
    for (size_t i = 0; i < out->nframes && i < GW_RENDER_MAX_FRAMES; i++)
        free (out->frames[i]);
    free (out->rest);
    json_decref (out->meta);
    json_decref (out->perm_params);
    free (out->request_id);
    free (out->state);
    memset (out, 0, sizeof *out);
}

int gw_render_event (gw_render_t *self, const void *data, size_t len, const char *epoch,
                     gw_rendered_t *out)
{
    assert (self && out);
    memset (out, 0, sizeof *out);
    s_ctx_t c = {.msg = &self->msg, .out = out};
    int rc = proto_decode (&self->msg, data, len);
    if (rc) goto done;
    if (self->msg.desc->family != PROTO_FAMILY_EVENT || !self->msg.body) {
        rc = CM_E_INVALID;
        goto done;
    }
    if ((rc = s_head (&self->msg, out))) goto done;
    out->type = self->msg.type;
    out->kind = self->msg.desc->name;
    if (!self->generic &&
        (out->type == PROTO_EV_AGENT_MESSAGE || out->type == PROTO_EV_AGENT_THOUGHT)) {
        rc = s_fast_text (&self->msg, epoch, out);
        goto done;
    }
    cm_uuid_fmt (&out->session, c.session);
    rc = CM_E_NOMEM;
    if (!(out->meta = s_meta (out, epoch))) goto done;
    if (!(c.fields = s_record (self->msg.desc->body, self->msg.body, S_HEAD_FIELDS)))
        goto done;
    if (!(out->rest = s_rest (out, epoch, c.fields))) goto done;
    s_handler_fn *handler = s_handlers[out->type];
    rc = handler ? handler (&c) : s_on_event (&c);
done:
    json_decref (c.fields);
    proto_msg_clear (&self->msg); //  keep no event bytes or zone data around
    if (rc) gw_rendered_fini (out);
    return rc;
}

// ---------------------------------------------------------------------------
//  Session records

char *gw_render_iso8601 (int64_t ms, char *buf, size_t size)
{
    //  0000-01-01T00:00:00.000Z .. 9999-12-31T23:59:59.999Z
    if (ms < -62167219200000LL || ms > 253402300799999LL || size < 25) return NULL;
    int64_t secs = ms / 1000, milli = ms % 1000;
    if (milli < 0) {
        milli += 1000;
        secs--;
    }
    time_t t = (time_t)secs;
    struct tm tm;
    if (!gmtime_r (&t, &tm)) return NULL;
    snprintf (buf, size, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
              tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)milli);
    return buf;
}

json_t *gw_render_session_info (const proto_session_rec_t *s)
{
    assert (s);
    json_t *info = json_object (), *meta = json_object ();
    int64_t updated = s->updated_ms ? s->updated_ms : s->created_ms;
    if (!info || !meta || s_set (info, "sessionId", s_uuid (&s->id)) ||
        s_set (info, "cwd", s_str (s->cwd ? s->cwd : "")) ||
        (s->title && s_set (info, "title", s_str (s->title))) ||
        s_set (info, "updatedAt", s_iso (updated)) ||
        s_set (info, "_meta", json_incref (meta)) ||
        s_set (meta, "state", s_str (s->state ? s->state : "")) ||
        s_set (meta, "lastSeq", s_u64 (s->last_seq)) ||
        s_set (meta, "turns", s_u64 (s->turns)) ||
        s_set (meta, "createdAt", s_iso (s->created_ms)) ||
        (s->backend && s_set (meta, "backend", s_str (s->backend))) ||
        (s->model && s_set (meta, "model", s_str (s->model))) ||
        (s->mode && s_set (meta, "mode", s_str (s->mode))) ||
        (s->project && s_set (meta, "project", s_str (s->project)))) {
        json_decref (info);
        info = NULL;
    }
    json_decref (meta);
    return info;
}

json_t *gw_render_session_rest (const proto_session_rec_t *s)
{
    assert (s);
    return s_record (&proto_rec_session_rec, s, 0);
}

//  What each mode does, as the worker enforces it (wrk_turn.c: next_tool):
//  tools that write files or run commands are checked; reading, searching
//  and planning never ask.
static const struct {
    const char *id, *name, *description;
} s_modes[] = {
    {"ask", "Ask",
     "Reads and searches freely; asks before each file change and each command. "
     "An \"always allow\" answer covers that tool and target for the rest of the "
     "session."},
    {"edit", "Edit",
     "Changes files in the workspace without asking; asks before running each "
     "command."},
    {"auto", "Auto", "Reads, changes files and runs commands without asking."},
    {"read_only", "Read only",
     "Reads and searches only: file changes and commands are refused, without "
     "asking."},
};
#define S_MODES (sizeof (s_modes) / sizeof (s_modes[0]))

json_t *gw_render_modes (const char *current_mode)
{
    json_t *state = json_object (), *modes = json_array ();
    if (!state || !modes ||
        s_set (state, "currentModeId", s_str (current_mode ? current_mode : "ask")) ||
        s_set (state, "availableModes", json_incref (modes)))
        goto fail;
    for (size_t i = 0; i < S_MODES; i++) {
        json_t *m = json_object ();
        if (!m || s_set (m, "id", json_string (s_modes[i].id)) ||
            s_set (m, "name", json_string (s_modes[i].name)) ||
            s_set (m, "description", json_string (s_modes[i].description))) {
            json_decref (m);
            goto fail;
        }
        if (s_append (modes, m)) goto fail;
    }
    json_decref (modes);
    return state;
fail:
    json_decref (modes);
    json_decref (state);
    return NULL;
}

static const struct {
    const char *value, *name, *description;
} s_backends[] = {
    {"openai", "OpenAI-compatible",
     "Chat completions API: OpenAI, OpenRouter, vLLM, llama.cpp, Ollama, LM Studio"},
    {"anthropic", "Anthropic", "Anthropic Messages API"},
    {"acp", "ACP agent", "An external agent that speaks ACP, run by the worker"},
};
#define S_BACKENDS (sizeof (s_backends) / sizeof (s_backends[0]))

//  {value, name[, description]} appended to options.
static int s_select_value (json_t *options, const char *value, const char *name,
                           const char *description)
{
    json_t *o = json_object ();
    if (!o || s_set (o, "value", s_str (value)) || s_set (o, "name", s_str (name)) ||
        (description && s_set (o, "description", json_string (description)))) {
        json_decref (o);
        return -1;
    }
    return s_append (options, o);
}

//  A select option {id, name, category?, type, currentValue, options};
//  consumes options.
static json_t *s_select (const char *id, const char *name, const char *category,
                         const char *current, json_t *options)
{
    json_t *o = json_object ();
    if (!o || s_set (o, "id", json_string (id)) ||
        s_set (o, "name", json_string (name)) ||
        (category && s_set (o, "category", json_string (category))) ||
        s_set (o, "type", json_string ("select")) ||
        s_set (o, "currentValue", s_str (current))) {
        json_decref (options);
        json_decref (o);
        return NULL;
    }
    if (s_set (o, "options", options)) {
        json_decref (o);
        return NULL;
    }
    return o;
}

//  The "model" select: the listed models plus the session's own.
static json_t *s_model_option (const char *model, const char *const *models,
                               size_t nmodels)
{
    json_t *values = json_array ();
    bool listed = false;
    for (size_t i = 0; values && i < nmodels; i++) {
        if (!models[i]) continue;
        listed = listed || strcmp (models[i], model) == 0;
        if (s_select_value (values, models[i], models[i], NULL)) {
            json_decref (values);
            return NULL;
        }
    }
    if (values && !listed && s_select_value (values, model, model, NULL)) {
        json_decref (values);
        return NULL;
    }
    return s_select ("model", "Model", "model", model, values);
}

static json_t *s_backend_option (const char *backend)
{
    json_t *values = json_array ();
    for (size_t i = 0; values && i < S_BACKENDS; i++)
        if (s_select_value (values, s_backends[i].value, s_backends[i].name,
                            s_backends[i].description)) {
            json_decref (values);
            return NULL;
        }
    return s_select ("backend", "Backend", NULL, backend, values);
}

json_t *gw_render_config_options (const proto_session_rec_t *s, const char *const *models,
                                  size_t nmodels)
{
    assert (s && (models || nmodels == 0));
    json_t *list = json_array ();
    if (!list ||
        (s->model && s_append (list, s_model_option (s->model, models, nmodels))) ||
        (s->backend && s_append (list, s_backend_option (s->backend)))) {
        json_decref (list);
        return NULL;
    }
    return list;
}

char *gw_render_config_update (const proto_session_rec_t *s, const char *const *models,
                               size_t nmodels, json_t *meta)
{
    json_t *u = s_update_obj ("config_option_update"), *params = json_object ();
    char *text = NULL;
    if (u && params &&
        !s_set (u, "configOptions", gw_render_config_options (s, models, nmodels)) &&
        !s_set (params, "sessionId", s_uuid (&s->id)) &&
        !s_set (params, "update", json_incref (u)) &&
        !(meta && s_set (params, "_meta", json_incref (meta))))
        text = gw_rpc_notification (GW_RENDER_METHOD_UPDATE, params);
    json_decref (u);
    json_decref (params);
    return text;
}
