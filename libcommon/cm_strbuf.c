/*  cm_strbuf.c - see cm_strbuf.h. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cm_strbuf.h"

void cm_strbuf_put (cm_strbuf_t *b, const char *p, size_t n)
{
    if (b->oom) return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1) {
            if (cap > (size_t)-1 / 2) {
                b->oom = true;
                return;
            }
            cap *= 2;
        }
        char *q = realloc (b->p, cap);
        if (!q) {
            b->oom = true;
            return;
        }
        b->p = q;
        b->cap = cap;
    }
    if (n) memcpy (b->p + b->len, p, n);
    b->len += n;
    b->p[b->len] = '\0';
}

void cm_strbuf_puts (cm_strbuf_t *b, const char *s)
{
    cm_strbuf_put (b, s, strlen (s));
}

void cm_strbuf_putf (cm_strbuf_t *b, const char *fmt, ...)
{
    //  Short texts (most) format on the stack; longer ones are allocated.
    char tmp[256];
    va_list args;
    va_start (args, fmt);
    int n = vsnprintf (tmp, sizeof tmp, fmt, args);
    va_end (args);
    if (n < 0) {
        b->oom = true;
        return;
    }
    if ((size_t)n < sizeof tmp) {
        cm_strbuf_put (b, tmp, (size_t)n);
        return;
    }
    char *text = NULL;
    va_start (args, fmt);
    n = vasprintf (&text, fmt, args);
    va_end (args);
    if (n < 0)
        b->oom = true;
    else
        cm_strbuf_put (b, text, (size_t)n);
    free (text);
}

char *cm_strbuf_take (cm_strbuf_t *b)
{
    if (b->oom) {
        cm_strbuf_free (b);
        return NULL;
    }
    char *text = b->p ? b->p : strdup ("");
    *b = (cm_strbuf_t){0};
    return text;
}

void cm_strbuf_free (cm_strbuf_t *b)
{
    free (b->p);
    *b = (cm_strbuf_t){0};
}
