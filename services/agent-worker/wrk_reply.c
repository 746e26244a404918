/*  wrk_reply.c - build the assistant message of one model call from the
    stream's deltas (contract in wrk_conv.h). */
#include "wrk_conv.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cm_error.h"

typedef enum { S_TEXT, S_THINKING, S_TOOL } s_kind_t;

typedef struct {
    char *data;
    size_t len, cap;
} s_buf_t;

typedef struct {
    s_kind_t kind;
    s_buf_t text; //  text or thinking
    s_buf_t sig;  //  thinking signature
    bool signed_; //  a SIGNATURE came: the thinking block is closed
    int index;    //  tool call index
    char *id, *name;
    json_t *input; //  set when the call completed
} s_block_t;

struct wrk_reply {
    s_block_t *blocks;
    size_t count, cap;
    wrk_tool_call_t *calls; //  completed calls in block order
    size_t ncalls;
    bool finished;
    char stop_reason[64];
    wrk_usage_t usage;
};

static int s_buf_add (s_buf_t *b, const char *s, size_t n)
{
    if (n == 0) return 0;
    if (b->len + n > WRK_CONV_MAX_TEXT) return CM_E_TOO_LARGE;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 128;
        while (cap < b->len + n + 1) cap *= 2;
        char *data = realloc (b->data, cap);
        if (!data) return CM_E_NOMEM;
        b->data = data;
        b->cap = cap;
    }
    memcpy (b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
    return 0;
}

wrk_reply_t *wrk_reply_new (void)
{
    return calloc (1, sizeof (wrk_reply_t));
}

void wrk_reply_destroy (wrk_reply_t **self_p)
{
    if (!self_p || !*self_p) return;
    wrk_reply_t *self = *self_p;
    for (size_t i = 0; i < self->count; i++) {
        s_block_t *b = &self->blocks[i];
        free (b->text.data);
        free (b->sig.data);
        free (b->id);
        free (b->name);
        json_decref (b->input);
    }
    free (self->blocks);
    free (self->calls);
    free (self);
    *self_p = NULL;
}

static s_block_t *s_last (wrk_reply_t *self)
{
    return self->count ? &self->blocks[self->count - 1] : NULL;
}

static int s_open (wrk_reply_t *self, s_kind_t kind, s_block_t **out)
{
    if (self->count == WRK_CONV_MAX_BLOCKS) return CM_E_TOO_LARGE;
    if (self->count == self->cap) {
        size_t cap = self->cap ? self->cap * 2 : 8;
        s_block_t *blocks = realloc (self->blocks, cap * sizeof *blocks);
        if (!blocks) return CM_E_NOMEM;
        self->blocks = blocks;
        self->cap = cap;
    }
    *out = &self->blocks[self->count++];
    memset (*out, 0, sizeof **out);
    (*out)->kind = kind;
    return 0;
}

static s_block_t *s_tool (wrk_reply_t *self, int index)
{
    for (size_t i = 0; i < self->count; i++)
        if (self->blocks[i].kind == S_TOOL && self->blocks[i].index == index)
            return &self->blocks[i];
    return NULL;
}

//  Rebuild the calls list after a call completed.
static int s_index_calls (wrk_reply_t *self)
{
    wrk_tool_call_t *calls = realloc (self->calls, (self->count + 1) * sizeof *calls);
    if (!calls) return CM_E_NOMEM;
    self->calls = calls;
    self->ncalls = 0;
    for (size_t i = 0; i < self->count; i++) {
        const s_block_t *b = &self->blocks[i];
        if (b->kind == S_TOOL && b->input)
            calls[self->ncalls++] = (wrk_tool_call_t){
                .index = b->index, .id = b->id, .name = b->name, .input = b->input};
    }
    return 0;
}

//  Take id and name from a TOOL_START or TOOL_END delta into block b.
static int s_tool_names (s_block_t *b, const wrk_delta_t *d)
{
    if (d->id && *d->id && !b->id && !(b->id = strdup (d->id))) return CM_E_NOMEM;
    if (d->name && *d->name && !b->name && !(b->name = strdup (d->name)))
        return CM_E_NOMEM;
    return 0;
}

static int s_tool_end (wrk_reply_t *self, const wrk_delta_t *d)
{
    s_block_t *b = s_tool (self, d->index);
    int rc = 0;
    if (!b) {
        rc = s_open (self, S_TOOL, &b);
        if (rc) return rc;
        b->index = d->index;
    }
    if (b->input) return CM_E_UPSTREAM; //  ended twice
    rc = s_tool_names (b, d);
    if (rc) return rc;
    if (!b->id || !b->name) return CM_E_UPSTREAM;
    for (size_t i = 0; i < self->ncalls; i++)
        if (!strcmp (self->calls[i].id, b->id)) return CM_E_UPSTREAM;
    json_t *input =
        d->text_len ? json_loadb (d->text, d->text_len, 0, NULL) : json_object ();
    if (!json_is_object (input)) {
        json_decref (input);
        return CM_E_UPSTREAM;
    }
    b->input = input;
    return s_index_calls (self);
}

int wrk_reply_feed (wrk_reply_t *self, const wrk_delta_t *d)
{
    if (self->finished) return CM_E_INVALID;
    s_block_t *last = s_last (self), *b = NULL;
    int rc = 0;
    switch (d->kind) {
    case WRK_DELTA_TEXT:
        if (last && last->kind == S_TEXT)
            b = last;
        else if ((rc = s_open (self, S_TEXT, &b)))
            return rc;
        return s_buf_add (&b->text, d->text, d->text_len);
    case WRK_DELTA_THINKING:
        if (last && last->kind == S_THINKING && !last->signed_)
            b = last;
        else if ((rc = s_open (self, S_THINKING, &b)))
            return rc;
        return s_buf_add (&b->text, d->text, d->text_len);
    case WRK_DELTA_SIGNATURE:
        if (!last || last->kind != S_THINKING) return CM_E_UPSTREAM;
        last->signed_ = true;
        return s_buf_add (&last->sig, d->text, d->text_len);
    case WRK_DELTA_TOOL_START:
        if (s_tool (self, d->index)) return CM_E_UPSTREAM;
        if ((rc = s_open (self, S_TOOL, &b))) return rc;
        b->index = d->index;
        return s_tool_names (b, d);
    case WRK_DELTA_TOOL_END:
        return s_tool_end (self, d);
    case WRK_DELTA_USAGE:
        if (d->input_tokens > self->usage.input_tokens)
            self->usage.input_tokens = d->input_tokens;
        if (d->output_tokens > self->usage.output_tokens)
            self->usage.output_tokens = d->output_tokens;
        if (d->cache_tokens > self->usage.cache_tokens)
            self->usage.cache_tokens = d->cache_tokens;
        return 0;
    case WRK_DELTA_FINISH:
        self->finished = true;
        snprintf (self->stop_reason, sizeof self->stop_reason, "%s",
                  d->stop_reason ? d->stop_reason : "");
        return 0;
    case WRK_DELTA_ERROR:
        return 0;
    }
    return CM_E_INVALID;
}

static json_t *s_block_json (const s_block_t *b)
{
    switch (b->kind) {
    case S_TEXT:
        return json_pack ("{s:s, s:s%}", "type", "text", "text", b->text.data,
                          b->text.len);
    case S_THINKING: {
        json_t *out = json_pack ("{s:s, s:s%}", "type", "thinking", "thinking",
                                 b->text.len ? b->text.data : "", b->text.len);
        if (out && b->sig.len &&
            json_object_set_new (out, "signature",
                                 json_stringn (b->sig.data, b->sig.len))) {
            json_decref (out);
            out = NULL;
        }
        return out;
    }
    case S_TOOL:
        return json_pack ("{s:s, s:s, s:s, s:o}", "type", "tool_use", "id", b->id, "name",
                          b->name, "input", json_deep_copy (b->input));
    }
    return NULL;
}

int wrk_reply_message (const wrk_reply_t *self, json_t **msg_out)
{
    *msg_out = NULL;
    json_t *content = json_array ();
    if (!content) return CM_E_NOMEM;
    for (size_t i = 0; i < self->count; i++) {
        const s_block_t *b = &self->blocks[i];
        if ((b->kind == S_TEXT && !b->text.len) ||
            (b->kind == S_THINKING && !b->text.len && !b->sig.len) ||
            (b->kind == S_TOOL && !b->input))
            continue;
        //  Texts came from parsed JSON strings, so the only way to fail
        //  short of memory is a fragment that was not UTF-8.
        if (json_array_append_new (content, s_block_json (b))) {
            json_decref (content);
            return b->kind == S_TOOL ? CM_E_NOMEM : CM_E_UPSTREAM;
        }
    }
    *msg_out = json_pack ("{s:s, s:o}", "role", "assistant", "content", content);
    return *msg_out ? 0 : CM_E_NOMEM;
}

size_t wrk_reply_tool_count (const wrk_reply_t *self)
{
    return self->ncalls;
}

const wrk_tool_call_t *wrk_reply_tool (const wrk_reply_t *self, size_t i)
{
    return i < self->ncalls ? &self->calls[i] : NULL;
}

bool wrk_reply_finished (const wrk_reply_t *self)
{
    return self->finished;
}

const char *wrk_reply_stop_reason (const wrk_reply_t *self)
{
    return self->stop_reason;
}

wrk_usage_t wrk_reply_usage (const wrk_reply_t *self)
{
    wrk_usage_t usage = self->usage;
    usage.model_calls = 1;
    usage.cost_micros = 0;
    return usage;
}
