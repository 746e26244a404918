/*  cm_time.h - clocks.  Wall time for records, monotonic for timers. */
#ifndef CM_TIME_H
#define CM_TIME_H

#include <stddef.h>
#include <stdint.h>

//  Milliseconds since the Unix epoch (CLOCK_REALTIME).
int64_t cm_time_ms (void);
//  Monotonic nanoseconds (CLOCK_MONOTONIC); only differences mean anything.
uint64_t cm_mono_ns (void);
//  Monotonic milliseconds.
int64_t cm_mono_ms (void);
//  Format epoch milliseconds as RFC 3339 UTC "2026-11-21T10:00:00.123Z" into
//  out (at least CM_TIME_ISO_LEN bytes).  Returns out.
#define CM_TIME_ISO_LEN 32
char *cm_time_iso (int64_t ms, char *out);

#endif
