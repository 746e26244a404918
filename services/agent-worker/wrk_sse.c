/*  wrk_sse.c - incremental text/event-stream parser (see wrk_sse.h).

    The body is split into lines as bytes arrive; only the current line and
    the current event's data are kept, each bounded by max_event, so a
    stream of any length runs in memory proportional to its largest event.
    A CR at the very end of a piece is remembered (after_cr) so that a CRLF
    split across two pieces still counts as one line end.
*/
#include <stdlib.h>
#include <string.h>

#include "cm_error.h"
#include "wrk_sse.h"

//  First allocation of either buffer; both grow by doubling up to
//  max_event (+1 for the NUL the callback sees).
#define S_MIN_CAP 256

void wrk_sse_init (wrk_sse_t *self, size_t max_event)
{
    memset (self, 0, sizeof *self);
    self->max_event = max_event;
}

void wrk_sse_reset (wrk_sse_t *self)
{
    self->line_len = 0;
    self->data_len = 0;
    self->event[0] = '\0';
    self->has_data = false;
    self->after_cr = false;
}

void wrk_sse_fini (wrk_sse_t *self)
{
    free (self->line);
    free (self->data);
    size_t max_event = self->max_event;
    wrk_sse_init (self, max_event);
}

//  Make room for `need` bytes plus a NUL in *buf.  The caller has already
//  checked need against max_event, so the capacity never exceeds
//  max_event + 1 by more than the doubling slack.
static int s_reserve (char **buf, size_t *cap, size_t need)
{
    if (need < *cap) return 0;
    size_t cap_new = *cap ? *cap : S_MIN_CAP;
    while (cap_new <= need) cap_new *= 2;
    char *grown = realloc (*buf, cap_new);
    if (!grown) return CM_E_NOMEM;
    *buf = grown;
    *cap = cap_new;
    return 0;
}

static int s_line_append (wrk_sse_t *self, const char *bytes, size_t len)
{
    if (len > self->max_event - self->line_len) return CM_E_TOO_LARGE;
    int rc = s_reserve (&self->line, &self->line_cap, self->line_len + len);
    if (rc) return rc;
    memcpy (self->line + self->line_len, bytes, len);
    self->line_len += len;
    return 0;
}

static int s_data_append (wrk_sse_t *self, const char *value, size_t len)
{
    //  Lines after the first are joined with '\n'.
    size_t sep = self->has_data ? 1 : 0;
    if (sep + len > self->max_event - self->data_len) return CM_E_TOO_LARGE;
    int rc = s_reserve (&self->data, &self->data_cap, self->data_len + sep + len);
    if (rc) return rc;
    if (sep) self->data[self->data_len++] = '\n';
    memcpy (self->data + self->data_len, value, len);
    self->data_len += len;
    self->has_data = true;
    return 0;
}

//  A blank line: hand over the event if it had data, then start afresh
//  either way (an event: line without data is dropped with its event).
static int s_dispatch (wrk_sse_t *self, wrk_sse_fn fn, void *arg)
{
    int rc = 0;
    if (self->has_data) {
        //  data may be NULL for "data:" with an empty value and nothing
        //  allocated yet; give the callback a real empty string.
        rc = s_reserve (&self->data, &self->data_cap, self->data_len);
        if (rc) return rc;
        self->data[self->data_len] = '\0';
        rc = fn (arg, self->event, self->data, self->data_len);
    }
    self->data_len = 0;
    self->has_data = false;
    self->event[0] = '\0';
    return rc;
}

//  One complete line, without its terminator, in self->line.
static int s_line (wrk_sse_t *self, wrk_sse_fn fn, void *arg)
{
    const char *line = self->line;
    size_t len = self->line_len;
    self->line_len = 0;
    if (len == 0) return s_dispatch (self, fn, arg);
    if (line[0] == ':') return 0; //  comment (servers use them as keep-alives)

    const char *colon = memchr (line, ':', len);
    size_t name_len = colon ? (size_t)(colon - line) : len;
    const char *value = colon ? colon + 1 : line + len;
    size_t value_len = colon ? len - name_len - 1 : 0;
    if (value_len > 0 && value[0] == ' ') {
        value++;
        value_len--;
    }
    if (name_len == 4 && memcmp (line, "data", 4) == 0)
        return s_data_append (self, value, value_len);
    if (name_len == 5 && memcmp (line, "event", 5) == 0) {
        //  Every name a provider sends fits; a longer one is cut, which can
        //  only make an unknown event look like another unknown event.
        size_t n =
            value_len < sizeof self->event - 1 ? value_len : sizeof self->event - 1;
        memcpy (self->event, value, n);
        self->event[n] = '\0';
        return 0;
    }
    return 0; //  id:, retry: and unknown fields are ignored
}

int wrk_sse_feed (wrk_sse_t *self, const char *bytes, size_t len, wrk_sse_fn fn,
                  void *arg)
{
    const char *end = bytes + len;
    while (bytes < end) {
        if (self->after_cr) {
            self->after_cr = false;
            if (*bytes == '\n') {
                bytes++;
                continue;
            }
        }
        //  Take the run up to the next line end in one copy.
        const char *p = bytes;
        while (p < end && *p != '\n' && *p != '\r') p++;
        int rc = s_line_append (self, bytes, (size_t)(p - bytes));
        if (rc) return rc;
        if (p == end) break;
        self->after_cr = *p == '\r';
        bytes = p + 1;
        rc = s_line (self, fn, arg);
        if (rc) return rc;
    }
    return 0;
}
