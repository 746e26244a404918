/*  proto.h - the one bus codec.  Nothing outside proto/ touches msgpack.

    Wire form of every message (DESIGN §3):
        [version, type id, correlation id, {field: value, ...}]
    a msgpack array of four; the body map's keys are the field names of the
    message's body record in proto_catalogue.def.

    Encoding:  proto_encode (&buf, PROTO_STORE_EVENTS_APPEND, corr, &body)
    appends the message to a proto_buf_t.  Required fields must be set;
    optional ones are left out when NULL / empty / nil (scalars always go).

    Decoding:  proto_decode (&msg, data, len) first walks the bytes
    (proto_validate) and refuses anything whose declared lengths do not fit
    in what remains, nests deeper than PROTO_MAX_DEPTH, holds more than
    PROTO_MAX_ELEMENTS values, or is longer than PROTO_MAX_MSG; only then
    does msgpack-c unpack it.  Then every field is type-checked against the
    catalogue: a wrong type, a missing required field, an unknown type id or
    another version is an error code, never a crash.  Unknown fields are
    ignored (so peers can add optional fields).

    Ownership and lifetime after proto_decode:
      - STR fields are NUL-terminated copies in msg's zone;
      - BIN / UUID-less byte fields (proto_bin_t) point INTO `data`, so
        `data` must stay valid and unchanged while the body is used;
      - lists and nested records live in msg's zone.
    Everything is released by the next proto_decode on the same msg or by
    proto_msg_fini.
*/
#ifndef PROTO_H
#define PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cm_error.h"
#include "cm_id.h"

#define PROTO_VERSION      1
#define PROTO_MAX_MSG      (64u * 1024 * 1024)  //  bytes in one message
#define PROTO_MAX_DEPTH    16                   //  nested arrays/maps
#define PROTO_MAX_ELEMENTS (1u << 20)           //  values in one message
#define PROTO_MAX_ALLOC    (128u * 1024 * 1024) //  decoded structs in one message
#define PROTO_MAX_TYPE     256                  //  type ids are below this

/* ---------------------------------------------------------------- */
/*  Field value types                                                */

typedef struct {
    const uint8_t *data;
    size_t size;
} proto_bin_t;

typedef struct {
    const char **items;
    size_t count;
} proto_str_list_t;

typedef struct {
    proto_bin_t *items;
    size_t count;
} proto_bin_list_t;

typedef enum {
    PROTO_T_U64,
    PROTO_T_I64,
    PROTO_T_F64,
    PROTO_T_BOOL,
    PROTO_T_STR,
    PROTO_T_BIN,
    PROTO_T_UUID,
    PROTO_T_STR_LIST,
    PROTO_T_BIN_LIST,
    PROTO_T_REC,
    PROTO_T_REC_LIST,
} proto_ftype_t;

//  U64F / I64F: the same values, always encoded in 9 bytes, so a field's
//  bytes can be patched in place (the event head's seq and ts: the session
//  service stamps them into an event a worker encoded, without re-encoding).
#define PROTO_T_U64F         PROTO_T_U64
#define PROTO_T_I64F         PROTO_T_I64
#define PROTO_CTYPE_U64F     uint64_t
#define PROTO_CTYPE_I64F     int64_t
#define PROTO_FIXED_U64F     true
#define PROTO_FIXED_I64F     true
#define PROTO_FIXED_U64      false
#define PROTO_FIXED_I64      false
#define PROTO_FIXED_F64      false
#define PROTO_FIXED_BOOL     false
#define PROTO_FIXED_STR      false
#define PROTO_FIXED_BIN      false
#define PROTO_FIXED_UUID     false
#define PROTO_FIXED_STR_LIST false
#define PROTO_FIXED_BIN_LIST false
#define PROTO_CTYPE_U64      uint64_t
#define PROTO_CTYPE_I64      int64_t
#define PROTO_CTYPE_F64      double
#define PROTO_CTYPE_BOOL     bool
#define PROTO_CTYPE_STR      const char *
#define PROTO_CTYPE_BIN      proto_bin_t
#define PROTO_CTYPE_UUID     cm_uuid_t
#define PROTO_CTYPE_STR_LIST proto_str_list_t
#define PROTO_CTYPE_BIN_LIST proto_bin_list_t

#include "proto_catalogue.def"

/* ---------------------------------------------------------------- */
/*  Records as C structs: proto_<record>_t, and proto_<record>_list_t */

#define PROTO_GEN_FWD(name, doc)                  \
    typedef struct proto_##name proto_##name##_t; \
    typedef struct {                              \
        proto_##name##_t *items;                  \
        size_t count;                             \
    } proto_##name##_list_t;
PROTO_RECORDS (PROTO_GEN_FWD)
#undef PROTO_GEN_FWD

#define PROTO_GEN_F(S, name, type, req, doc)      PROTO_CTYPE_##type name;
#define PROTO_GEN_R_REC(rec)                      proto_##rec##_t *
#define PROTO_GEN_R_REC_LIST(rec)                 proto_##rec##_list_t
#define PROTO_GEN_R(S, name, type, req, rec, doc) PROTO_GEN_R_##type (rec) name;
#define PROTO_GEN_STRUCT(name, doc)                                      \
    struct proto_##name {                                                \
        char _empty_guard; /* C forbids empty structs */                 \
        PROTO_FIELDS_##name (PROTO_GEN_F, PROTO_GEN_R, proto_##name##_t) \
    };
PROTO_RECORDS (PROTO_GEN_STRUCT)
#undef PROTO_GEN_STRUCT
#undef PROTO_GEN_F
#undef PROTO_GEN_R

/* ---------------------------------------------------------------- */
/*  Message type ids                                                 */

typedef enum {
    PROTO_NONE = 0,
#define PROTO_GEN_ENUM(sym, id, wire, fam, body, dir, doc) PROTO_##sym = id,
    PROTO_MESSAGES (PROTO_GEN_ENUM)
#undef PROTO_GEN_ENUM
} proto_type_t;

typedef enum {
    PROTO_FAMILY_REPLY,
    PROTO_FAMILY_STORE,
    PROTO_FAMILY_CLIENT,
    PROTO_FAMILY_WORKER,
    PROTO_FAMILY_MONITOR,
    PROTO_FAMILY_EVENT,
} proto_family_t;

/* ---------------------------------------------------------------- */
/*  Descriptors (read-only tables built from the catalogue)          */

typedef struct proto_rec_desc proto_rec_desc_t;

typedef struct {
    const char *name;
    uint8_t name_len;
    proto_ftype_t type;
    bool required;
    uint16_t offset;
    const proto_rec_desc_t *rec; //  REC / REC_LIST only
    const char *doc;
    bool fixed; //  U64F / I64F: always 9 bytes on the wire
} proto_field_desc_t;

struct proto_rec_desc {
    const char *name;
    size_t size; //  sizeof the C struct
    const proto_field_desc_t *fields;
    size_t field_count;
    const char *doc;
};

typedef struct {
    proto_type_t type;
    const char *name;   //  wire name, "events.append"
    const char *symbol; //  "STORE_EVENTS_APPEND"
    proto_family_t family;
    const proto_rec_desc_t *body;
    const char *direction;
    const char *doc;
} proto_msg_desc_t;

//  Descriptor of a type id, or NULL if the id is not in the catalogue.
const proto_msg_desc_t *proto_msg_desc (uint32_t type);
//  All message descriptors in catalogue order; *count gets their number.
const proto_msg_desc_t *const *proto_msg_descs (size_t *count);
//  All record descriptors in catalogue order.
const proto_rec_desc_t *const *proto_rec_descs (size_t *count);
//  Wire name of a type ("events.append"), or "unknown".
const char *proto_type_name (uint32_t type);
//  Type id for a wire name, or PROTO_NONE.
proto_type_t proto_type_by_name (const char *name);
//  Family name: "reply", "store", "client", "worker", "monitor", "event".
const char *proto_family_name (proto_family_t family);

/* ---------------------------------------------------------------- */
/*  Encoding                                                         */

//  A growable byte buffer.  Zero-initialise or proto_buf_init; reuse with
//  proto_buf_reset (keeps the allocation); free with proto_buf_fini.
typedef struct {
    char *data;
    size_t size;
    size_t alloc;
} proto_buf_t;

void proto_buf_init (proto_buf_t *buf);
void proto_buf_reset (proto_buf_t *buf);
void proto_buf_fini (proto_buf_t *buf);

//  Append one message to buf.  body points to the type's body struct
//  (proto_<body>_t), or may be NULL for an empty body.  Returns 0,
//  CM_E_UNKNOWN_TYPE, CM_E_MISSING (a required field is NULL/empty:
//  a programming error, reported rather than asserted so tests can see
//  it), CM_E_INVALID (a STR with an embedded NUL cannot happen; a list
//  with NULL items and a count), or CM_E_NOMEM.  On error buf keeps its
//  previous size.
int proto_encode (proto_buf_t *buf, proto_type_t type, uint64_t corr, const void *body);

//  Encode just a record (a msgpack map), as stored in LMDB values.
int proto_record_encode (proto_buf_t *buf, const proto_rec_desc_t *rec, const void *obj);

//  Like proto_encode, but the field named raw_field (a REC or REC_LIST
//  field of the body) is written from already-encoded records: raw[0] for a
//  REC, raw[0..nraw) as the list for a REC_LIST.  The bytes go out
//  verbatim, so fields this build does not know survive (the store uses
//  this to return records exactly as they were stored).  The caller vouches
//  that each raw item is one valid msgpack map.
int proto_encode_raw (proto_buf_t *buf, proto_type_t type, uint64_t corr,
                      const void *body, const char *raw_field, const proto_bin_t *raw,
                      size_t nraw);

//  Shorthands for replies.
int proto_encode_error (proto_buf_t *buf, uint64_t corr, int code, const char *message);
int proto_encode_ok (proto_buf_t *buf, uint64_t corr);

/* ---------------------------------------------------------------- */
/*  Decoding                                                         */

typedef struct proto_msg {
    uint32_t version;
    proto_type_t type;
    uint64_t corr;
    bool corr_valid; //  corr was read (also on some errors: reply to it)
    const proto_msg_desc_t *desc;
    void *body;     //  points to the proto_<body>_t in the zone
    void *_zone;    //  msgpack zone (internal)
    void *_top;     //  the unpacked message (internal, in the zone)
    char _err[128]; //  detail of the last error (field name …)
} proto_msg_t;

void proto_msg_init (proto_msg_t *msg);
//  Release what earlier decodes allocated, keeping the zone for reuse.
void proto_msg_clear (proto_msg_t *msg);
void proto_msg_fini (proto_msg_t *msg);

//  Validate and decode one message.  Returns 0, or CM_E_TOO_LARGE,
//  CM_E_TRUNCATED, CM_E_DEPTH, CM_E_INVALID (not msgpack / trailing bytes /
//  wrong shape / duplicate field / NUL in a string), CM_E_VERSION,
//  CM_E_UNKNOWN_TYPE, CM_E_TYPE, CM_E_MISSING, CM_E_NOMEM.  On error
//  proto_msg_error() describes it; msg->corr is set when corr_valid.
int proto_decode (proto_msg_t *msg, const void *data, size_t len);

//  Validate and decode a bare record (see proto_record_encode) into a
//  struct allocated in msg's zone; *out points to it.  Same checks, errors
//  and lifetimes as proto_decode, except that records decoded earlier into
//  the same msg stay valid (so a list of them can be built): release them
//  all with proto_msg_clear.  msg->type is left PROTO_NONE.
int proto_record_decode (proto_msg_t *msg, const proto_rec_desc_t *rec, const void *data,
                         size_t len, void **out);

//  Re-encode the value of body field `name` of a decoded message exactly as
//  it arrived, unknown nested fields included, appending it to out.
//  Returns 0, CM_E_MISSING (no such field in the message), CM_E_NOMEM.
int proto_field_raw (const proto_msg_t *msg, const char *name, proto_buf_t *out);

//  Stamp an encoded event in place: its head fields session, seq, ts and
//  turn (the first four of every event record) get these values.  Works
//  when the event was encoded by this codec (head fields first, seq and ts
//  fixed-width, turn present); returns CM_E_INVALID otherwise, and the
//  caller re-encodes.  The bytes should have been validated (proto_decode).
int proto_event_stamp (void *data, size_t size, const cm_uuid_t *session, uint64_t seq,
                       int64_t ts, const cm_uuid_t *turn);

//  Detail of the last decode error ("field 'seq': expected U64"), "" if none.
const char *proto_msg_error (const proto_msg_t *msg);

//  Typed body access, checked: NULL if msg is not of that body record.
#define proto_body(msg, rec) \
    ((proto_##rec##_t *)proto_body_check ((msg), &proto_rec_##rec))
void *proto_body_check (const proto_msg_t *msg, const proto_rec_desc_t *rec);

//  Walk data and check it is exactly one well-formed msgpack value within
//  the limits above.  Returns 0 or CM_E_TRUNCATED, CM_E_DEPTH,
//  CM_E_INVALID, CM_E_TOO_LARGE.  Used by proto_decode; public for tests
//  and for checking opaque blobs.
int proto_validate (const void *data, size_t len);

//  Record descriptors, by name: proto_rec_<record>.
#define PROTO_GEN_DECL(name, doc) extern const proto_rec_desc_t proto_rec_##name;
PROTO_RECORDS (PROTO_GEN_DECL)
#undef PROTO_GEN_DECL

#endif
