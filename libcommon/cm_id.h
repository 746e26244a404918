/*  cm_id.h - UUIDv7 ids (RFC 9562): 48-bit Unix ms timestamp, version 7,
    12-bit sub-millisecond counter, variant, 62 random bits.  Ids made by one
    process are strictly increasing even within one millisecond, so LMDB keys
    sort by creation.  Randomness comes from getrandom(2).
*/
#ifndef CM_ID_H
#define CM_ID_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint8_t b[16];
} cm_uuid_t;

#define CM_UUID_STR_LEN 37 /* 36 characters + NUL */

//  New UUIDv7 into *out.
void cm_uuid7 (cm_uuid_t *out);
//  Canonical lower-case text form into out (CM_UUID_STR_LEN bytes); returns out.
char *cm_uuid_fmt (const cm_uuid_t *id, char *out);
//  Parse the canonical 36-character form (either case).  Returns 0 or
//  CM_E_INVALID; *out is untouched on error.
int cm_uuid_parse (const char *text, cm_uuid_t *out);
//  True when all 16 bytes are zero.
bool cm_uuid_is_nil (const cm_uuid_t *id);
//  Milliseconds timestamp carried by a v7 id.
int64_t cm_uuid7_ms (const cm_uuid_t *id);

//  Fill buf with len cryptographically random bytes; returns 0 or CM_E_IO.
int cm_random (void *buf, size_t len);

#endif
