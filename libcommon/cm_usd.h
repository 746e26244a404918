/*  cm_usd.h - amounts of US dollars as people write them, in micro-dollars
    (millionths of a dollar: the unit of the bus's cost_micros).

    Accepted: digits with an optional fraction of at most 6 digits and an
    optional leading '$': "0.5", "$12.25", "3", ".75".  Nothing else (no
    sign, exponent, separators or spaces).  At most CM_USD_MAX dollars.
*/
#ifndef CM_USD_H
#define CM_USD_H

#include <stddef.h>
#include <stdint.h>

#define CM_USD_MAX 1000000000ull //  a billion dollars

//  Parse text into *micros.  NULL or "" is 0 (no amount).  Returns 0, or
//  CM_E_INVALID (*micros is then 0).
int cm_usd_parse (const char *text, int64_t *micros);

//  Format micros as "$1.25" (at least cents, at most 6 decimals, trailing
//  zeros cut).  Returns out.
char *cm_usd_fmt (uint64_t micros, char *out, size_t outlen);

#endif
