/*  wrk_sse.h - incremental text/event-stream (SSE) parser.

    Feed it the response body as it arrives, in pieces of any size (a piece
    may end in the middle of a line, of a CRLF, or of a UTF-8 sequence).  It
    calls back once per complete event with its `event` name ("" when the
    event had no event: line) and its data (the data: lines joined with
    '\n'), following the WHATWG rules: lines end in CRLF, LF or CR; a line
    starting with ':' is a comment; "field: value" loses one space after the
    colon; a blank line dispatches; an event without data is not dispatched;
    id: and retry: are ignored.

    Bounded: an event whose data (or a line) exceeds max_event bytes makes
    feed return CM_E_TOO_LARGE; after any error the parser must be reset.
*/
#ifndef WRK_SSE_H
#define WRK_SSE_H

#include <stdbool.h>
#include <stddef.h>

//  Called per event.  event and data are NUL-terminated and valid only
//  during the call.  A non-zero return stops feeding and is returned by
//  wrk_sse_feed.
typedef int (*wrk_sse_fn) (void *arg, const char *event, const char *data,
                           size_t data_len);

typedef struct {
    char *line; //  the current, incomplete line
    size_t line_len, line_cap;
    char *data; //  data of the current event so far
    size_t data_len, data_cap;
    char event[64]; //  event name of the current event
    bool has_data;
    bool after_cr; //  last byte was CR: a following LF is part of it
    size_t max_event;
} wrk_sse_t;

void wrk_sse_init (wrk_sse_t *self, size_t max_event);
void wrk_sse_reset (wrk_sse_t *self);
void wrk_sse_fini (wrk_sse_t *self);

//  Parse bytes; returns 0, CM_E_TOO_LARGE, CM_E_NOMEM, or the callback's
//  non-zero return.
int wrk_sse_feed (wrk_sse_t *self, const char *bytes, size_t len, wrk_sse_fn fn,
                  void *arg);

#endif
