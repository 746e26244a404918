/*  cm_error.c - names and messages for the codes in cm_error.h.

    Everything is generated from the CM_ERRORS table, so adding a row there
    is the only change a new code needs.
*/
#include <stdarg.h>
#include <stdio.h>
#include "cm_error.h"

#include <stddef.h>
#include <string.h>

typedef struct {
    int value; //  positive table value
    const char *name;
    const char *msg;
} s_error_t;

static const s_error_t s_errors[] = {
#define CM_ERR_ROW(sym, val, name, msg) {val, name, msg},
    CM_ERRORS (CM_ERR_ROW)
#undef CM_ERR_ROW
};

#define S_ERROR_COUNT (sizeof (s_errors) / sizeof (s_errors[0]))

//  Table row for a code given either sign, or NULL.  The sign is folded
//  with a long so that INT_MIN cannot overflow.
static const s_error_t *s_lookup (int code)
{
    long value = code < 0 ? -(long)code : (long)code;
    for (size_t i = 0; i < S_ERROR_COUNT; i++)
        if (s_errors[i].value == value) return &s_errors[i];
    return NULL;
}

const char *cm_errname (int code)
{
    //  0 is CM_OK: not an error row, but callers print it in logs.
    if (code == 0) return "ok";
    const s_error_t *row = s_lookup (code);
    return row ? row->name : "unknown";
}

const char *cm_strerror (int code)
{
    if (code == 0) return "no error";
    const s_error_t *row = s_lookup (code);
    return row ? row->msg : "unknown error";
}

int cm_errcode (const char *name)
{
    if (!name) return 0;
    for (size_t i = 0; i < S_ERROR_COUNT; i++)
        if (strcmp (s_errors[i].name, name) == 0) return -s_errors[i].value;
    return 0;
}

int cm_err_set (char *err, size_t errlen, int code, const char *fmt, ...)
{
    if (err && errlen) {
        va_list args;
        va_start (args, fmt);
        vsnprintf (err, errlen, fmt, args);
        va_end (args);
    }
    return code;
}
