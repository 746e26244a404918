/*  cm_id.c - UUIDv7 (RFC 9562, method 1: fixed-length dedicated counter).

    Layout, big-endian:
      bytes 0-5   unix_ts_ms (48 bits)
      byte  6     version 0111 + counter bits 11..8
      byte  7     counter bits 7..0          (rand_a used as a 12-bit counter)
      byte  8     variant 10 + 6 random bits
      bytes 9-15  56 random bits             (62 random bits in all)

    The counter restarts at 0 in each new millisecond and counts up within
    one; when it would pass 4095 the timestamp is advanced by 1 ms instead,
    and a clock that steps backwards is ignored until it catches up.  Either
    way every id is larger than the one before it, so ids sort by creation.
*/
#include "cm_id.h"
#include "cm_error.h"
#include "cm_log.h"
#include "cm_time.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#define S_COUNTER_MAX 0xfff

static struct {
    pthread_mutex_t lock;
    int64_t last_ms;
    uint32_t counter;
} s_id = {.lock = PTHREAD_MUTEX_INITIALIZER, .last_ms = -1, .counter = 0};

int cm_random (void *buf, size_t len)
{
    uint8_t *p = buf;
    while (len > 0) {
        //  getrandom may return fewer bytes than asked (large requests, or
        //  a signal after some bytes were copied) and EINTR before any.
        ssize_t n = getrandom (p, len, 0);
        if (n < 0) {
            if (errno == EINTR) continue;
            return CM_E_IO;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

void cm_uuid7 (cm_uuid_t *out)
{
    uint8_t rnd[8];
    //  getrandom cannot fail on a supported kernel; an id without its
    //  random bits could collide with another process's and overwrite a
    //  record, so stopping is safer than going on.
    if (cm_random (rnd, sizeof (rnd))) {
        cm_error ("getrandom failed: %s; cannot make unique ids", strerror (errno));
        abort ();
    }

    int64_t now = cm_time_ms ();
    pthread_mutex_lock (&s_id.lock);
    if (now > s_id.last_ms) {
        s_id.last_ms = now;
        s_id.counter = 0;
    } else if (s_id.counter < S_COUNTER_MAX)
        s_id.counter++;
    else {
        s_id.last_ms++;
        s_id.counter = 0;
    }
    uint64_t ms = (uint64_t)s_id.last_ms;
    uint32_t counter = s_id.counter;
    pthread_mutex_unlock (&s_id.lock);

    for (int i = 0; i < 6; i++) out->b[i] = (uint8_t)(ms >> (8 * (5 - i)));
    out->b[6] = (uint8_t)(0x70 | (counter >> 8));
    out->b[7] = (uint8_t)(counter & 0xff);
    out->b[8] = (uint8_t)(0x80 | (rnd[0] & 0x3f));
    memcpy (out->b + 9, rnd + 1, 7);
}

char *cm_uuid_fmt (const cm_uuid_t *id, char *out)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10) out[o++] = '-';
        out[o++] = hex[id->b[i] >> 4];
        out[o++] = hex[id->b[i] & 0x0f];
    }
    out[o] = '\0';
    return out;
}

static int s_hexval (char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

int cm_uuid_parse (const char *text, cm_uuid_t *out)
{
    //  strnlen: never read past the 37th byte of an unterminated input.
    if (!text || !out || strnlen (text, CM_UUID_STR_LEN) != CM_UUID_STR_LEN - 1)
        return CM_E_INVALID;
    cm_uuid_t id;
    size_t t = 0;
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10) {
            if (text[t] != '-') return CM_E_INVALID;
            t++;
        }
        int hi = s_hexval (text[t]);
        int lo = s_hexval (text[t + 1]);
        if (hi < 0 || lo < 0) return CM_E_INVALID;
        id.b[i] = (uint8_t)(hi << 4 | lo);
        t += 2;
    }
    *out = id;
    return 0;
}

bool cm_uuid_is_nil (const cm_uuid_t *id)
{
    for (int i = 0; i < 16; i++)
        if (id->b[i]) return false;
    return true;
}

int64_t cm_uuid7_ms (const cm_uuid_t *id)
{
    uint64_t ms = 0;
    for (int i = 0; i < 6; i++) ms = ms << 8 | id->b[i];
    return (int64_t)ms;
}
