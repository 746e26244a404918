/*  fuzz_proto_decode.c - libFuzzer target on the bus codec.

    Any byte string must decode to a message or an error code, never a
    crash, a leak or an oversized allocation.  Whatever decodes must
    re-encode, and the re-encoded bytes must decode again to the same type
    and correlation id (the codec is its own inverse on valid input).
*/
#include <stdint.h>
#include <stdlib.h>

#include "proto.h"

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
    static proto_msg_t msg, again;
    static proto_buf_t buf;
    if (proto_decode (&msg, data, size) != 0) return 0;

    proto_buf_reset (&buf);
    if (proto_encode (&buf, msg.type, msg.corr, msg.body) != 0) abort ();
    if (proto_decode (&again, buf.data, buf.size) != 0) abort ();
    if (again.type != msg.type || again.corr != msg.corr) abort ();
    return 0;
}
