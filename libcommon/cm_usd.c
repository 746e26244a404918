/*  cm_usd.c - US dollar amounts (see cm_usd.h).  */
#include <ctype.h>
#include <stdio.h>

#include "cm_error.h"
#include "cm_usd.h"

int cm_usd_parse (const char *text, int64_t *micros)
{
    *micros = 0;
    if (!text || !*text) return 0;
    const char *p = text;
    if (*p == '$') p++;
    uint64_t whole = 0, frac = 0;
    int digits = 0, fdigits = 0;
    for (; isdigit ((unsigned char)*p); p++, digits++) {
        whole = whole * 10 + (uint64_t)(*p - '0');
        if (whole > CM_USD_MAX) return CM_E_INVALID;
    }
    if (*p == '.')
        for (p++; isdigit ((unsigned char)*p); p++, fdigits++) {
            if (fdigits >= 6) return CM_E_INVALID; //  finer than a micro-dollar
            frac = frac * 10 + (uint64_t)(*p - '0');
        }
    if (*p || (digits == 0 && fdigits == 0)) return CM_E_INVALID;
    for (int i = fdigits; i < 6; i++) frac *= 10;
    *micros = (int64_t)(whole * 1000000ull + frac);
    return 0;
}

char *cm_usd_fmt (uint64_t micros, char *out, size_t outlen)
{
    char frac[8];
    snprintf (frac, sizeof frac, "%06llu", (unsigned long long)(micros % 1000000));
    int keep = 6;
    while (keep > 2 && frac[keep - 1] == '0') keep--;
    snprintf (out, outlen, "$%llu.%.*s", (unsigned long long)(micros / 1000000), keep,
              frac);
    return out;
}
