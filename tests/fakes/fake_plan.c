/*  fake_plan.c - buffers, plans, UTF-8 safe splitting, default usage.  */
#include "fake_model.h"
#include "cm_error.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// ---------------------------------------------------------------------------
//  Buffers

static int s_buf_reserve (fake_buf_t *self, size_t extra)
{
    if (self->len + extra + 1 <= self->cap) return 0;
    size_t cap = self->cap ? self->cap : 256;
    while (cap < self->len + extra + 1) cap *= 2;
    char *data = realloc (self->data, cap);
    if (!data) return CM_E_NOMEM;
    self->data = data;
    self->cap = cap;
    return 0;
}

int fake_buf_append (fake_buf_t *self, const void *bytes, size_t len)
{
    if (s_buf_reserve (self, len)) return CM_E_NOMEM;
    if (len) memcpy (self->data + self->len, bytes, len);
    self->len += len;
    self->data[self->len] = '\0';
    return 0;
}

int fake_buf_printf (fake_buf_t *self, const char *fmt, ...)
{
    va_list args;
    va_start (args, fmt);
    int n = vsnprintf (NULL, 0, fmt, args);
    va_end (args);
    if (n < 0 || s_buf_reserve (self, (size_t)n)) return CM_E_NOMEM;
    va_start (args, fmt);
    vsnprintf (self->data + self->len, (size_t)n + 1, fmt, args);
    va_end (args);
    self->len += (size_t)n;
    return 0;
}

static int s_dump_cb (const char *buffer, size_t size, void *data)
{
    return fake_buf_append (data, buffer, size) ? -1 : 0;
}

int fake_buf_json (fake_buf_t *self, const json_t *json)
{
    return json_dump_callback (json, s_dump_cb, self, JSON_COMPACT | JSON_ENCODE_ANY)
               ? CM_E_NOMEM
               : 0;
}

void fake_buf_free (fake_buf_t *self)
{
    free (self->data);
    memset (self, 0, sizeof *self);
}

// ---------------------------------------------------------------------------
//  Plans

fake_plan_t *fake_plan_new (int status, const char *content_type, bool chunked,
                            int64_t chunk_delay_ms)
{
    fake_plan_t *self = calloc (1, sizeof *self);
    if (!self) return NULL;
    self->status = status;
    self->content_type = content_type;
    self->chunked = chunked;
    self->chunk_delay_ms = chunk_delay_ms;
    return self;
}

void fake_plan_destroy (fake_plan_t **self_p)
{
    if (!self_p || !*self_p) return;
    fake_plan_t *self = *self_p;
    for (size_t i = 0; i < self->count; i++) free (self->items[i].bytes);
    free (self->items);
    fake_buf_free (&self->headers);
    free (self);
    *self_p = NULL;
}

static fake_item_t *s_plan_item (fake_plan_t *self, fake_item_kind_t kind)
{
    if (self->count == self->cap) {
        size_t cap = self->cap ? self->cap * 2 : 16;
        fake_item_t *items = realloc (self->items, cap * sizeof *items);
        if (!items) return NULL;
        self->items = items;
        self->cap = cap;
    }
    fake_item_t *item = &self->items[self->count];
    memset (item, 0, sizeof *item);
    item->kind = kind;
    item->delay_ms = self->pending_ms;
    return item;
}

int fake_plan_data (fake_plan_t *self, const char *bytes, size_t len)
{
    if (self->data_items > 0) self->pending_ms += self->chunk_delay_ms;
    fake_item_t *item = s_plan_item (self, FAKE_ITEM_DATA);
    if (!item) return CM_E_NOMEM;
    item->bytes = malloc (len ? len : 1);
    if (!item->bytes) return CM_E_NOMEM;
    if (len) memcpy (item->bytes, bytes, len);
    item->len = len;
    self->count++;
    self->data_items++;
    self->pending_ms = 0;
    return 0;
}

void fake_plan_pause (fake_plan_t *self, int64_t ms)
{
    self->pending_ms += ms;
}

int fake_plan_end (fake_plan_t *self, fake_item_kind_t kind)
{
    fake_item_t *item = s_plan_item (self, kind);
    if (!item) return CM_E_NOMEM;
    self->count++;
    self->pending_ms = 0;
    return 0;
}

// ---------------------------------------------------------------------------
//  Splitting

bool fake_piece (const char *s, size_t len, int n, int *i, size_t *pos,
                 const char **piece, size_t *piece_len)
{
    if (n < 1) n = 1;
    while (*i < n && *pos < len) {
        (*i)++;
        size_t end = *i == n ? len : (size_t)((uint64_t)len * (uint64_t)*i / (uint64_t)n);
        //  Never end inside a UTF-8 sequence: move past continuation bytes.
        while (end < len && ((unsigned char)s[end] & 0xC0) == 0x80) end++;
        if (end <= *pos) continue; //  empty piece: skip
        *piece = s + *pos;
        *piece_len = end - *pos;
        *pos = end;
        return true;
    }
    return false;
}

int fake_pieces (const fake_step_t *step)
{
    if (step->pieces > 0) return step->pieces;
    size_t n = (step->len + FAKE_PIECE_BYTES - 1) / FAKE_PIECE_BYTES;
    if (n < 1) n = 1;
    if (n > FAKE_PIECES_MAX) n = FAKE_PIECES_MAX;
    return (int)n;
}

// ---------------------------------------------------------------------------
//  Totals and ids

void fake_totals (const fake_response_t *resp, size_t first, const fake_call_t *call,
                  fake_totals_t *out)
{
    memset (out, 0, sizeof *out);
    out->input = out->output = out->cache = -1;
    size_t produced = 0;
    for (size_t i = first; i < resp->count; i++) {
        const fake_step_t *step = &resp->steps[i];
        switch (step->kind) {
        case FAKE_STEP_TEXT:
        case FAKE_STEP_THINKING:
            produced += step->len;
            break;
        case FAKE_STEP_TOOL_CALL:
            produced += step->len + strlen (step->name);
            out->tool_calls++;
            break;
        case FAKE_STEP_USAGE:
            if (step->input >= 0) out->input = step->input;
            if (step->output >= 0) out->output = step->output;
            if (step->cache >= 0) out->cache = step->cache;
            break;
        case FAKE_STEP_STOP:
            out->stop = step->text;
            break;
        default:
            break;
        }
    }
    //  About four bytes a token, like the providers' rule of thumb.
    if (out->input < 0) out->input = (int64_t)((call->body_len + 3) / 4);
    if (out->output < 0) out->output = (int64_t)((produced + 3) / 4);
    if (out->output < 1) out->output = 1;
    if (out->cache < 0) out->cache = 0;
    if (!out->stop) out->stop = out->tool_calls ? "tool_use" : "end_turn";
}

void fake_id (char *out, size_t outlen, const char *prefix, uint64_t seq, int index)
{
    if (index < 0)
        snprintf (out, outlen, "%s%06" PRIu64, prefix, seq);
    else
        snprintf (out, outlen, "%s%06" PRIu64 "_%d", prefix, seq, index);
}

// ---------------------------------------------------------------------------
//  Content text

char *fake_content_text (const json_t *content)
{
    if (json_is_string (content)) return strdup (json_string_value (content));
    if (!json_is_array (content)) return NULL;
    fake_buf_t buf = {0};
    bool any = false;
    size_t i;
    const json_t *part;
    json_array_foreach (content, i, part)
    {
        const char *type = json_string_value (json_object_get (part, "type"));
        const json_t *text = json_object_get (part, "text");
        if (!type || strcmp (type, "text") != 0 || !json_is_string (text)) continue;
        if (any && fake_buf_append (&buf, "\n", 1)) goto nomem;
        if (fake_buf_append (&buf, json_string_value (text), json_string_length (text)))
            goto nomem;
        any = true;
    }
    if (!any) return NULL;
    if (!buf.data) return strdup ("");
    return buf.data;
nomem:
    fake_buf_free (&buf);
    return NULL;
}
