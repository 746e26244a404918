/*  cm_time.c - wall and monotonic clocks. */
#include "cm_time.h"

#include <stdio.h>
#include <time.h>

int64_t cm_time_ms (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

uint64_t cm_mono_ns (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

int64_t cm_mono_ms (void)
{
    return (int64_t)(cm_mono_ns () / 1000000u);
}

char *cm_time_iso (int64_t ms, char *out)
{
    //  Floor division so that times before 1970 keep a positive millisecond
    //  part (-1 ms is 23:59:59.999 of the previous day, not .-01).
    int64_t secs = ms / 1000;
    int64_t frac = ms % 1000;
    if (frac < 0) {
        secs -= 1;
        frac += 1000;
    }
    time_t t = (time_t)secs;
    struct tm tm;
    //  RFC 3339 has four-digit years only.
    if (!gmtime_r (&t, &tm) || tm.tm_year + 1900 < 0 || tm.tm_year + 1900 > 9999) {
        snprintf (out, CM_TIME_ISO_LEN, "invalid-time");
        return out;
    }
    //  The modulos are no-ops for a valid struct tm; they tell the compiler
    //  each field's width, so the output provably fits CM_TIME_ISO_LEN.
    snprintf (out, CM_TIME_ISO_LEN, "%04u-%02u-%02uT%02u:%02u:%02u.%03uZ",
              (unsigned)(tm.tm_year + 1900) % 10000u, (unsigned)(tm.tm_mon + 1) % 100u,
              (unsigned)tm.tm_mday % 100u, (unsigned)tm.tm_hour % 100u,
              (unsigned)tm.tm_min % 100u, (unsigned)tm.tm_sec % 100u,
              (unsigned)frac % 1000u);
    return out;
}
