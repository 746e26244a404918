/*  cm_strbuf.h - a growable, always NUL-terminated text buffer.

    Zero-initialise (cm_strbuf_t b = {0}), append, then take the text or
    free it.  An allocation failure is sticky: later appends do nothing and
    cm_strbuf_take returns NULL, so callers check once at the end.
*/
#ifndef CM_STRBUF_H
#define CM_STRBUF_H

#include <stdbool.h>
#include <stddef.h>

typedef struct {
    char *p;    //  the text ("" is NULL until something is appended)
    size_t len; //  bytes of text, without the NUL
    size_t cap;
    bool oom; //  an append failed
} cm_strbuf_t;

void cm_strbuf_put (cm_strbuf_t *b, const char *p, size_t n);
void cm_strbuf_puts (cm_strbuf_t *b, const char *s);
void cm_strbuf_putf (cm_strbuf_t *b, const char *fmt, ...)
    __attribute__ ((format (printf, 2, 3)));
//  The text (owned by the caller; "" if nothing was appended), or NULL
//  after an allocation failure.  The buffer is empty afterwards.
char *cm_strbuf_take (cm_strbuf_t *b);
//  Free the text and reset.
void cm_strbuf_free (cm_strbuf_t *b);

#endif
