/*  proto_validate.c - walk msgpack bytes before anything unpacks them.

    msgpack-c sizes its allocations from the lengths a message declares, so
    a 7-byte input claiming a map of 2^32 entries asks for gigabytes.  This
    walker reads only headers and checks, for every value:
      - the header itself is complete;
      - a str/bin/ext payload fits in the bytes that remain;
      - an array of n (a map of n: 2n values) fits, since every value takes
        at least one byte - so no count can exceed the input size;
      - nesting stays within PROTO_MAX_DEPTH and the whole message holds at
        most PROTO_MAX_ELEMENTS values;
      - the input is exactly one value, with no trailing bytes.
    After this, unpacking allocates O(len) memory at most.
*/
#include <stdint.h>
#include <string.h>

#include "proto.h"

static uint32_t be16 (const uint8_t *p)
{
    return (uint32_t)p[0] << 8 | p[1];
}

static uint32_t be32 (const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

int proto_validate (const void *data, size_t len)
{
    const uint8_t *p = data;
    size_t pos = 0;
    size_t elements = 0;
    //  pending[d]: values still to read in the container open at depth d;
    //  depth 0 is the top level, which holds exactly one value.
    uint64_t pending[PROTO_MAX_DEPTH + 1];
    int depth = 0;

    if (len > PROTO_MAX_MSG) return CM_E_TOO_LARGE;
    if (len == 0) return CM_E_TRUNCATED;
    pending[0] = 1;

    while (true) {
        while (depth >= 0 && pending[depth] == 0) depth--;
        if (depth < 0) break;
        pending[depth]--;
        if (pos >= len) return CM_E_TRUNCATED;
        if (++elements > PROTO_MAX_ELEMENTS) return CM_E_DEPTH;

        uint8_t b = p[pos++];
        size_t left = len - pos;
        size_t skip = 0;       //  bytes of payload after the header
        uint64_t children = 0; //  values inside a container
        bool container = false;

        if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3)
            ; //  fixint, nil, bool: header only
        else if ((b & 0xf0) == 0x80) {
            children = 2 * (uint64_t)(b & 0x0f);
            container = true;
        } else if ((b & 0xf0) == 0x90) {
            children = b & 0x0f;
            container = true;
        } else if ((b & 0xe0) == 0xa0)
            skip = b & 0x1f;
        else {
            size_t hdr;
            switch (b) {
            case 0xcc:
            case 0xd0:
                skip = 1;
                break;
            case 0xcd:
            case 0xd1:
                skip = 2;
                break;
            case 0xce:
            case 0xd2:
            case 0xca:
                skip = 4;
                break;
            case 0xcf:
            case 0xd3:
            case 0xcb:
                skip = 8;
                break;
            case 0xd4:
                skip = 2;
                break; //  fixext: type byte + data
            case 0xd5:
                skip = 3;
                break;
            case 0xd6:
                skip = 5;
                break;
            case 0xd7:
                skip = 9;
                break;
            case 0xd8:
                skip = 17;
                break;
            case 0xc4:
            case 0xd9: //  bin8, str8
                if (left < 1) return CM_E_TRUNCATED;
                skip = p[pos];
                pos += 1;
                break;
            case 0xc5:
            case 0xda:
                if (left < 2) return CM_E_TRUNCATED;
                skip = be16 (p + pos);
                pos += 2;
                break;
            case 0xc6:
            case 0xdb:
                if (left < 4) return CM_E_TRUNCATED;
                skip = be32 (p + pos);
                pos += 4;
                break;
            case 0xc7:
            case 0xc8:
            case 0xc9: //  ext8/16/32: length, type, data
                hdr = b == 0xc7 ? 1 : b == 0xc8 ? 2 : 4;
                if (left < hdr + 1) return CM_E_TRUNCATED;
                skip = hdr == 1 ? p[pos] : hdr == 2 ? be16 (p + pos) : be32 (p + pos);
                pos += hdr + 1;
                break;
            case 0xdc:
            case 0xdd: //  array16/32
                hdr = b == 0xdc ? 2 : 4;
                if (left < hdr) return CM_E_TRUNCATED;
                children = hdr == 2 ? be16 (p + pos) : be32 (p + pos);
                pos += hdr;
                container = true;
                break;
            case 0xde:
            case 0xdf: //  map16/32
                hdr = b == 0xde ? 2 : 4;
                if (left < hdr) return CM_E_TRUNCATED;
                children = 2 * (uint64_t)(hdr == 2 ? be16 (p + pos) : be32 (p + pos));
                pos += hdr;
                container = true;
                break;
            default: //  0xc1 is never used
                return CM_E_INVALID;
            }
        }
        if (skip > len - pos) return CM_E_TRUNCATED;
        pos += skip;
        if (container && children > 0) {
            if (children > len - pos) return CM_E_TRUNCATED;
            if (depth + 1 > PROTO_MAX_DEPTH) return CM_E_DEPTH;
            pending[++depth] = children;
        }
    }
    return pos == len ? 0 : CM_E_INVALID;
}
