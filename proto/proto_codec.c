/*  proto_codec.c - encode and decode any catalogue message by walking its
    descriptor table.  One generic path instead of a hand-written pair per
    message keeps every message's wire form consistent with the catalogue
    and the docs.

    Encoding packs straight into a proto_buf_t through msgpack-c's packer.
    Decoding: proto_validate (bounds) -> msgpack_unpack into the message's
    zone -> field-by-field type checks into the body struct.
*/
#include <msgpack.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto.h"

#define ZONE_CHUNK 8192

/* ---------------------------------------------------------------- */
/*  Buffer                                                           */

void proto_buf_init (proto_buf_t *buf)
{
    buf->data = NULL;
    buf->size = 0;
    buf->alloc = 0;
}

void proto_buf_reset (proto_buf_t *buf)
{
    buf->size = 0;
}

void proto_buf_fini (proto_buf_t *buf)
{
    free (buf->data);
    proto_buf_init (buf);
}

static int buf_write (void *data, const char *src, size_t len)
{
    proto_buf_t *buf = data;
    if (buf->alloc - buf->size < len) {
        size_t want = buf->alloc ? buf->alloc : 256;
        while (want - buf->size < len) {
            if (want > SIZE_MAX / 2) return -1;
            want *= 2;
        }
        char *grown = realloc (buf->data, want);
        if (!grown) return -1;
        buf->data = grown;
        buf->alloc = want;
    }
    memcpy (buf->data + buf->size, src, len);
    buf->size += len;
    return 0;
}

/* ---------------------------------------------------------------- */
/*  Encoding                                                         */

typedef struct {
    const char *field;
    const proto_bin_t *items;
    size_t count;
} raw_override_t;

static int encode_record (msgpack_packer *pk, const proto_rec_desc_t *rec,
                          const void *obj, const raw_override_t *raw);

//  Whether a field goes on the wire.  Optional fields at their zero value
//  are left out: the decoder yields the same zero, and messages stay small.
static int field_present (const proto_field_desc_t *f, const void *slot, bool *present)
{
    bool set = true;
    switch (f->type) {
    case PROTO_T_U64:
        set = *(const uint64_t *)slot != 0;
        break;
    case PROTO_T_I64:
        set = *(const int64_t *)slot != 0;
        break;
    case PROTO_T_F64:
        set = *(const double *)slot != 0;
        break;
    case PROTO_T_BOOL:
        set = *(const bool *)slot;
        break;
    case PROTO_T_STR:
        set = *(const char *const *)slot != NULL;
        break;
    case PROTO_T_UUID:
        set = !cm_uuid_is_nil (slot);
        break;
    case PROTO_T_REC:
        set = *(const void *const *)slot != NULL;
        break;
    case PROTO_T_BIN: {
        const proto_bin_t *b = slot;
        if (!b->data && b->size) return CM_E_INVALID;
        set = b->data != NULL;
        break;
    }
    case PROTO_T_STR_LIST:
    case PROTO_T_BIN_LIST:
    case PROTO_T_REC_LIST: {
        //  All list types share the {items, count} layout.
        const proto_str_list_t *l = slot;
        if (!l->items && l->count) return CM_E_INVALID;
        set = l->count > 0;
        break;
    }
    }
    if (f->required) {
        //  Scalars, UUIDs and lists are always sent when required (an empty
        //  list or a zero is a value); a missing pointer is a caller bug.
        if (!set &&
            (f->type == PROTO_T_STR || f->type == PROTO_T_REC || f->type == PROTO_T_BIN))
            return CM_E_MISSING;
        set = true;
    }
    *present = set;
    return 0;
}

static int pack_str (msgpack_packer *pk, const char *s)
{
    size_t n = strlen (s);
    if (n > UINT32_MAX) return CM_E_TOO_LARGE;
    if (msgpack_pack_str (pk, n) || msgpack_pack_str_body (pk, s, n)) return CM_E_NOMEM;
    return 0;
}

static int pack_bin (msgpack_packer *pk, const void *data, size_t n)
{
    if (n > UINT32_MAX) return CM_E_TOO_LARGE;
    if (msgpack_pack_bin (pk, n) || (n && msgpack_pack_bin_body (pk, data, n)))
        return CM_E_NOMEM;
    return 0;
}

static int encode_field (msgpack_packer *pk, const proto_field_desc_t *f,
                         const void *slot)
{
    int rc = 0;
    switch (f->type) {
    case PROTO_T_U64:
        if (f->fixed)
            return msgpack_pack_fix_uint64 (pk, *(const uint64_t *)slot) ? CM_E_NOMEM : 0;
        return msgpack_pack_uint64 (pk, *(const uint64_t *)slot) ? CM_E_NOMEM : 0;
    case PROTO_T_I64:
        if (f->fixed)
            return msgpack_pack_fix_int64 (pk, *(const int64_t *)slot) ? CM_E_NOMEM : 0;
        return msgpack_pack_int64 (pk, *(const int64_t *)slot) ? CM_E_NOMEM : 0;
    case PROTO_T_F64:
        return msgpack_pack_double (pk, *(const double *)slot) ? CM_E_NOMEM : 0;
    case PROTO_T_BOOL:
        return (*(const bool *)slot ? msgpack_pack_true (pk) : msgpack_pack_false (pk))
                   ? CM_E_NOMEM
                   : 0;
    case PROTO_T_STR:
        return pack_str (pk, *(const char *const *)slot);
    case PROTO_T_UUID:
        return pack_bin (pk, ((const cm_uuid_t *)slot)->b, 16);
    case PROTO_T_BIN: {
        const proto_bin_t *b = slot;
        return pack_bin (pk, b->data, b->size);
    }
    case PROTO_T_STR_LIST: {
        const proto_str_list_t *l = slot;
        if (msgpack_pack_array (pk, l->count)) return CM_E_NOMEM;
        for (size_t i = 0; i < l->count && !rc; i++)
            rc = l->items[i] ? pack_str (pk, l->items[i]) : CM_E_INVALID;
        return rc;
    }
    case PROTO_T_BIN_LIST: {
        const proto_bin_list_t *l = slot;
        if (msgpack_pack_array (pk, l->count)) return CM_E_NOMEM;
        for (size_t i = 0; i < l->count && !rc; i++)
            rc = pack_bin (pk, l->items[i].data, l->items[i].size);
        return rc;
    }
    case PROTO_T_REC:
        return encode_record (pk, f->rec, *(const void *const *)slot, NULL);
    case PROTO_T_REC_LIST: {
        const proto_str_list_t *l = slot; //  {items, count}
        const char *items = (const char *)l->items;
        if (msgpack_pack_array (pk, l->count)) return CM_E_NOMEM;
        for (size_t i = 0; i < l->count && !rc; i++)
            rc = encode_record (pk, f->rec, items + i * f->rec->size, NULL);
        return rc;
    }
    }
    return CM_E_INVALID;
}

//  Write pre-encoded records for a field (see proto_encode_raw).
static int encode_raw (msgpack_packer *pk, const proto_field_desc_t *f,
                       const raw_override_t *raw)
{
    if (f->type == PROTO_T_REC_LIST && msgpack_pack_array (pk, raw->count))
        return CM_E_NOMEM;
    if (f->type == PROTO_T_REC && raw->count != 1) return CM_E_INVALID;
    for (size_t i = 0; i < raw->count; i++)
        if (pk->callback (pk->data, (const char *)raw->items[i].data, raw->items[i].size))
            return CM_E_NOMEM;
    return 0;
}

static int encode_record (msgpack_packer *pk, const proto_rec_desc_t *rec,
                          const void *obj, const raw_override_t *raw)
{
    bool present[64];
    size_t count = 0;
    int rc;

    if (rec->field_count > 64) return CM_E_INVALID;
    for (size_t i = 0; i < rec->field_count; i++) {
        const proto_field_desc_t *f = &rec->fields[i];
        if (!obj) {
            if (f->required) return CM_E_MISSING;
            present[i] = false;
            continue;
        }
        if (raw && strcmp (f->name, raw->field) == 0) {
            present[i] = f->required || raw->count > 0;
            count += present[i];
            continue;
        }
        rc = field_present (f, (const char *)obj + f->offset, &present[i]);
        if (rc) return rc;
        count += present[i];
    }
    if (msgpack_pack_map (pk, count)) return CM_E_NOMEM;
    for (size_t i = 0; i < rec->field_count; i++) {
        if (!present[i]) continue;
        const proto_field_desc_t *f = &rec->fields[i];
        if (msgpack_pack_str (pk, f->name_len) ||
            msgpack_pack_str_body (pk, f->name, f->name_len))
            return CM_E_NOMEM;
        if (raw && strcmp (f->name, raw->field) == 0)
            rc = encode_raw (pk, f, raw);
        else
            rc = encode_field (pk, f, (const char *)obj + f->offset);
        if (rc) return rc;
    }
    return 0;
}

static int encode_message (proto_buf_t *buf, proto_type_t type, uint64_t corr,
                           const void *body, const raw_override_t *raw)
{
    const proto_msg_desc_t *desc = proto_msg_desc (type);
    if (!desc) return CM_E_UNKNOWN_TYPE;

    size_t mark = buf->size;
    msgpack_packer pk;
    msgpack_packer_init (&pk, buf, buf_write);
    int rc = 0;
    if (msgpack_pack_array (&pk, 4) || msgpack_pack_uint32 (&pk, PROTO_VERSION) ||
        msgpack_pack_uint32 (&pk, (uint32_t)type) || msgpack_pack_uint64 (&pk, corr))
        rc = CM_E_NOMEM;
    if (!rc) rc = encode_record (&pk, desc->body, body, raw);
    if (rc) buf->size = mark;
    return rc;
}

int proto_encode (proto_buf_t *buf, proto_type_t type, uint64_t corr, const void *body)
{
    return encode_message (buf, type, corr, body, NULL);
}

int proto_encode_raw (proto_buf_t *buf, proto_type_t type, uint64_t corr,
                      const void *body, const char *raw_field, const proto_bin_t *raw,
                      size_t nraw)
{
    const proto_msg_desc_t *desc = proto_msg_desc (type);
    if (!desc) return CM_E_UNKNOWN_TYPE;
    const proto_rec_desc_t *r = desc->body;
    size_t i;
    for (i = 0; i < r->field_count && strcmp (r->fields[i].name, raw_field) != 0; i++)
        ;
    if (i == r->field_count ||
        (r->fields[i].type != PROTO_T_REC && r->fields[i].type != PROTO_T_REC_LIST))
        return CM_E_INVALID;
    raw_override_t ov = {raw_field, raw, nraw};
    return encode_message (buf, type, corr, body, &ov);
}

int proto_record_encode (proto_buf_t *buf, const proto_rec_desc_t *rec, const void *obj)
{
    size_t mark = buf->size;
    msgpack_packer pk;
    msgpack_packer_init (&pk, buf, buf_write);
    int rc = encode_record (&pk, rec, obj, NULL);
    if (rc) buf->size = mark;
    return rc;
}

int proto_encode_error (proto_buf_t *buf, uint64_t corr, int code, const char *message)
{
    proto_error_t err = {.code = code < 0 ? code : -code,
                         .message = message ? message : cm_strerror (code)};
    return proto_encode (buf, PROTO_ERROR, corr, &err);
}

int proto_encode_ok (proto_buf_t *buf, uint64_t corr)
{
    return proto_encode (buf, PROTO_OK, corr, NULL);
}

/* ---------------------------------------------------------------- */
/*  Decoding                                                         */

typedef struct {
    proto_msg_t *msg;
    msgpack_zone *zone;
    size_t allocated; //  bytes of structs and copies made for this message
} decode_ctx_t;

static int __attribute__ ((format (printf, 3, 4)))
fail (decode_ctx_t *ctx, int code, const char *fmt, ...)
{
    va_list args;
    va_start (args, fmt);
    vsnprintf (ctx->msg->_err, sizeof ctx->msg->_err, fmt, args);
    va_end (args);
    return code;
}

static void *zalloc (decode_ctx_t *ctx, size_t size)
{
    if (size > PROTO_MAX_ALLOC - ctx->allocated) return NULL;
    ctx->allocated += size;
    void *p = msgpack_zone_malloc (ctx->zone, size ? size : 1);
    if (p) memset (p, 0, size);
    return p;
}

static const char *s_type_names[] = {
    [PROTO_T_U64] = "u64",
    [PROTO_T_I64] = "i64",
    [PROTO_T_F64] = "f64",
    [PROTO_T_BOOL] = "bool",
    [PROTO_T_STR] = "str",
    [PROTO_T_BIN] = "bin",
    [PROTO_T_UUID] = "uuid (bin 16)",
    [PROTO_T_STR_LIST] = "array of str",
    [PROTO_T_BIN_LIST] = "array of bin",
    [PROTO_T_REC] = "map",
    [PROTO_T_REC_LIST] = "array of map",
};

static int decode_record (decode_ctx_t *ctx, const proto_rec_desc_t *rec,
                          const msgpack_object *obj, void *out);

static int copy_str (decode_ctx_t *ctx, const msgpack_object *o, const char **out)
{
    const char *src = o->via.str.ptr;
    uint32_t n = o->via.str.size;
    if (n && memchr (src, '\0', n)) return CM_E_INVALID;
    char *s = zalloc (ctx, (size_t)n + 1);
    if (!s) return CM_E_NOMEM;
    memcpy (s, src, n);
    s[n] = '\0';
    *out = s;
    return 0;
}

static int decode_value (decode_ctx_t *ctx, const proto_field_desc_t *f,
                         const msgpack_object *o, void *slot)
{
    int rc;
    switch (f->type) {
    case PROTO_T_U64:
        if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER) return CM_E_TYPE;
        *(uint64_t *)slot = o->via.u64;
        return 0;
    case PROTO_T_I64:
        if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
            *(int64_t *)slot = o->via.i64;
        else if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER && o->via.u64 <= INT64_MAX)
            *(int64_t *)slot = (int64_t)o->via.u64;
        else
            return CM_E_TYPE;
        return 0;
    case PROTO_T_F64:
        if (o->type == MSGPACK_OBJECT_FLOAT32 || o->type == MSGPACK_OBJECT_FLOAT64)
            *(double *)slot = o->via.f64;
        else if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
            *(double *)slot = (double)o->via.u64;
        else if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
            *(double *)slot = (double)o->via.i64;
        else
            return CM_E_TYPE;
        return 0;
    case PROTO_T_BOOL:
        if (o->type != MSGPACK_OBJECT_BOOLEAN) return CM_E_TYPE;
        *(bool *)slot = o->via.boolean;
        return 0;
    case PROTO_T_STR:
        if (o->type != MSGPACK_OBJECT_STR) return CM_E_TYPE;
        return copy_str (ctx, o, slot);
    case PROTO_T_BIN:
        if (o->type != MSGPACK_OBJECT_BIN) return CM_E_TYPE;
        ((proto_bin_t *)slot)->data = (const uint8_t *)o->via.bin.ptr;
        ((proto_bin_t *)slot)->size = o->via.bin.size;
        return 0;
    case PROTO_T_UUID:
        if (o->type != MSGPACK_OBJECT_BIN || o->via.bin.size != 16) return CM_E_TYPE;
        memcpy (((cm_uuid_t *)slot)->b, o->via.bin.ptr, 16);
        return 0;
    case PROTO_T_STR_LIST: {
        if (o->type != MSGPACK_OBJECT_ARRAY) return CM_E_TYPE;
        proto_str_list_t *l = slot;
        uint32_t n = o->via.array.size;
        l->items = zalloc (ctx, (size_t)n * sizeof (char *));
        if (!l->items) return CM_E_NOMEM;
        for (uint32_t i = 0; i < n; i++) {
            const msgpack_object *e = &o->via.array.ptr[i];
            if (e->type != MSGPACK_OBJECT_STR) return CM_E_TYPE;
            if ((rc = copy_str (ctx, e, &l->items[i]))) return rc;
        }
        l->count = n;
        return 0;
    }
    case PROTO_T_BIN_LIST: {
        if (o->type != MSGPACK_OBJECT_ARRAY) return CM_E_TYPE;
        proto_bin_list_t *l = slot;
        uint32_t n = o->via.array.size;
        l->items = zalloc (ctx, (size_t)n * sizeof (proto_bin_t));
        if (!l->items) return CM_E_NOMEM;
        for (uint32_t i = 0; i < n; i++) {
            const msgpack_object *e = &o->via.array.ptr[i];
            if (e->type != MSGPACK_OBJECT_BIN) return CM_E_TYPE;
            l->items[i].data = (const uint8_t *)e->via.bin.ptr;
            l->items[i].size = e->via.bin.size;
        }
        l->count = n;
        return 0;
    }
    case PROTO_T_REC: {
        if (o->type != MSGPACK_OBJECT_MAP) return CM_E_TYPE;
        void *sub = zalloc (ctx, f->rec->size);
        if (!sub) return CM_E_TOO_LARGE;
        if ((rc = decode_record (ctx, f->rec, o, sub))) return rc;
        *(void **)slot = sub;
        return 0;
    }
    case PROTO_T_REC_LIST: {
        if (o->type != MSGPACK_OBJECT_ARRAY) return CM_E_TYPE;
        proto_str_list_t *l = slot; //  {items, count}
        uint32_t n = o->via.array.size;
        if (n && f->rec->size > PROTO_MAX_ALLOC / n) return CM_E_TOO_LARGE;
        char *items = zalloc (ctx, (size_t)n * f->rec->size);
        if (!items) return CM_E_TOO_LARGE;
        for (uint32_t i = 0; i < n; i++) {
            const msgpack_object *e = &o->via.array.ptr[i];
            if (e->type != MSGPACK_OBJECT_MAP) return CM_E_TYPE;
            if ((rc = decode_record (ctx, f->rec, e, items + (size_t)i * f->rec->size)))
                return rc;
        }
        l->items = (const char **)(void *)items;
        l->count = n;
        return 0;
    }
    }
    return CM_E_TYPE;
}

static int decode_record (decode_ctx_t *ctx, const proto_rec_desc_t *rec,
                          const msgpack_object *obj, void *out)
{
    uint64_t seen = 0;
    if (obj->type != MSGPACK_OBJECT_MAP)
        return fail (ctx, CM_E_TYPE, "%s: expected a map", rec->name);

    for (uint32_t k = 0; k < obj->via.map.size; k++) {
        const msgpack_object_kv *kv = &obj->via.map.ptr[k];
        if (kv->key.type != MSGPACK_OBJECT_STR)
            return fail (ctx, CM_E_INVALID, "%s: a field name is not a string",
                         rec->name);
        const char *name = kv->key.via.str.ptr;
        uint32_t name_len = kv->key.via.str.size;
        size_t i;
        for (i = 0; i < rec->field_count; i++)
            if (rec->fields[i].name_len == name_len &&
                memcmp (rec->fields[i].name, name, name_len) == 0)
                break;
        if (i == rec->field_count) continue; //  unknown field: a newer peer's
        const proto_field_desc_t *f = &rec->fields[i];
        if (seen & (UINT64_C (1) << i))
            return fail (ctx, CM_E_INVALID, "%s.%s: field appears twice", rec->name,
                         f->name);
        seen |= UINT64_C (1) << i;
        if (kv->val.type == MSGPACK_OBJECT_NIL) {
            seen &= ~(UINT64_C (1) << i); //  nil = absent
            continue;
        }
        int rc = decode_value (ctx, f, &kv->val, (char *)out + f->offset);
        if (rc == CM_E_TYPE)
            return fail (ctx, rc, "%s.%s: expected %s", rec->name, f->name,
                         s_type_names[f->type]);
        if (rc) {
            if (!ctx->msg->_err[0])
                fail (ctx, rc, "%s.%s: %s", rec->name, f->name, cm_strerror (rc));
            return rc;
        }
    }
    for (size_t i = 0; i < rec->field_count; i++)
        if (rec->fields[i].required && !(seen & (UINT64_C (1) << i)))
            return fail (ctx, CM_E_MISSING, "%s.%s: required field missing", rec->name,
                         rec->fields[i].name);
    return 0;
}

void proto_msg_init (proto_msg_t *msg)
{
    memset (msg, 0, sizeof *msg);
}

void proto_msg_clear (proto_msg_t *msg)
{
    if (msg->_zone) msgpack_zone_clear (msg->_zone);
    msg->body = NULL;
    msg->_top = NULL;
    msg->desc = NULL;
    msg->type = PROTO_NONE;
}

void proto_msg_fini (proto_msg_t *msg)
{
    if (msg->_zone) msgpack_zone_free (msg->_zone);
    memset (msg, 0, sizeof *msg);
}

const char *proto_msg_error (const proto_msg_t *msg)
{
    return msg->_err;
}

void *proto_body_check (const proto_msg_t *msg, const proto_rec_desc_t *rec)
{
    return msg->desc && msg->desc->body == rec ? msg->body : NULL;
}

//  Reset msg, validate the bytes, unpack them into msg's zone (cleared
//  first unless `keep`).
static int unpack (decode_ctx_t *ctx, const void *data, size_t len, msgpack_object *top,
                   bool keep)
{
    proto_msg_t *msg = ctx->msg;
    msg->version = 0;
    msg->type = PROTO_NONE;
    msg->corr = 0;
    msg->corr_valid = false;
    msg->desc = NULL;
    msg->body = NULL;
    msg->_top = NULL;
    msg->_err[0] = '\0';

    int rc = proto_validate (data, len);
    if (rc) return fail (ctx, rc, "malformed msgpack: %s", cm_strerror (rc));

    if (!msg->_zone && !(msg->_zone = msgpack_zone_new (ZONE_CHUNK))) return CM_E_NOMEM;
    ctx->zone = msg->_zone;
    if (!keep) msgpack_zone_clear (ctx->zone);

    size_t off = 0;
    msgpack_unpack_return ur = msgpack_unpack (data, len, &off, ctx->zone, top);
    if (ur == MSGPACK_UNPACK_NOMEM_ERROR) return CM_E_NOMEM;
    if (ur != MSGPACK_UNPACK_SUCCESS || off != len)
        return fail (ctx, CM_E_INVALID, "malformed msgpack");
    return 0;
}

int proto_record_decode (proto_msg_t *msg, const proto_rec_desc_t *rec, const void *data,
                         size_t len, void **out)
{
    decode_ctx_t ctx = {.msg = msg};
    msgpack_object top;
    *out = NULL;
    int rc = unpack (&ctx, data, len, &top, true);
    if (rc) return rc;
    void *obj = zalloc (&ctx, rec->size);
    if (!obj) return CM_E_NOMEM;
    if ((rc = decode_record (&ctx, rec, &top, obj))) return rc;
    *out = obj;
    return 0;
}

int proto_decode (proto_msg_t *msg, const void *data, size_t len)
{
    decode_ctx_t ctx = {.msg = msg};
    msgpack_object top;
    int rc = unpack (&ctx, data, len, &top, false);
    if (rc) return rc;

    if (top.type != MSGPACK_OBJECT_ARRAY || top.via.array.size < 4)
        return fail (&ctx, CM_E_INVALID,
                     "not a message: expected [version, type, corr, body]");
    msgpack_object *kept = msgpack_zone_malloc (ctx.zone, sizeof *kept);
    if (!kept) return CM_E_NOMEM;
    *kept = top;
    const msgpack_object *el = top.via.array.ptr;
    if (el[2].type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
        msg->corr = el[2].via.u64;
        msg->corr_valid = true;
    }
    if (el[0].type != MSGPACK_OBJECT_POSITIVE_INTEGER)
        return fail (&ctx, CM_E_INVALID, "message version is not an integer");
    if (el[0].via.u64 != PROTO_VERSION)
        return fail (&ctx, CM_E_VERSION, "protocol version %llu, this peer speaks %d",
                     (unsigned long long)el[0].via.u64, PROTO_VERSION);
    msg->version = PROTO_VERSION;
    if (el[1].type != MSGPACK_OBJECT_POSITIVE_INTEGER)
        return fail (&ctx, CM_E_INVALID, "message type is not an integer");
    msg->desc =
        el[1].via.u64 < PROTO_MAX_TYPE ? proto_msg_desc ((uint32_t)el[1].via.u64) : NULL;
    if (!msg->desc)
        return fail (&ctx, CM_E_UNKNOWN_TYPE, "unknown message type %llu",
                     (unsigned long long)el[1].via.u64);
    if (!msg->corr_valid) {
        msg->desc = NULL;
        return fail (&ctx, CM_E_INVALID, "correlation id is not an integer");
    }
    msg->type = msg->desc->type;

    void *body = zalloc (&ctx, msg->desc->body->size);
    if (!body) return CM_E_NOMEM;
    rc = decode_record (&ctx, msg->desc->body, &el[3], body);
    if (rc) {
        msg->desc = NULL;
        msg->type = PROTO_NONE;
        return rc;
    }
    msg->body = body;
    msg->_top = kept;
    return 0;
}

int proto_field_raw (const proto_msg_t *msg, const char *name, proto_buf_t *out)
{
    const msgpack_object *top = msg->_top;
    if (!top || !msg->body) return CM_E_MISSING;
    const msgpack_object *body = &top->via.array.ptr[3];
    size_t n = strlen (name);
    for (uint32_t k = 0; k < body->via.map.size; k++) {
        const msgpack_object_kv *kv = &body->via.map.ptr[k];
        if (kv->key.type != MSGPACK_OBJECT_STR || kv->key.via.str.size != n ||
            memcmp (kv->key.via.str.ptr, name, n) != 0)
            continue;
        msgpack_packer pk;
        msgpack_packer_init (&pk, out, buf_write);
        return msgpack_pack_object (&pk, kv->val) ? CM_E_NOMEM : 0;
    }
    return CM_E_MISSING;
}

//  Offsets of a map key's value: checks that the bytes at *pos are the
//  fixstr key `name` and returns the position after it.
static bool key_at (const uint8_t *p, size_t size, size_t *pos, const char *name)
{
    size_t n = strlen (name);
    if (*pos + 1 + n > size || p[*pos] != (0xa0 | n) ||
        memcmp (p + *pos + 1, name, n) != 0)
        return false;
    *pos += 1 + n;
    return true;
}

int proto_event_stamp (void *data, size_t size, const cm_uuid_t *session, uint64_t seq,
                       int64_t ts, const cm_uuid_t *turn)
{
    //  [1, type, corr, {session: bin16, seq: u64 fixed, ts: i64 fixed,
    //   turn: bin16, ...}] as proto_encode writes an event.
    uint8_t *p = data;
    size_t pos = 0;
    if (size < 8 || p[pos++] != 0x94 || p[pos++] != PROTO_VERSION) return CM_E_INVALID;
    if (p[pos] == 0xcc)
        pos += 2; //  type id >= 128
    else if (p[pos] < 0x80)
        pos += 1;
    else
        return CM_E_INVALID;
    if (pos >= size) return CM_E_INVALID;
    if (p[pos] < 0x80) //  corr as a fixint; events carry 0
        pos += 1;
    else
        return CM_E_INVALID;
    if (pos >= size) return CM_E_INVALID;
    if ((p[pos] & 0xf0) == 0x80)
        pos += 1;
    else if (p[pos] == 0xde)
        pos += 3;
    else
        return CM_E_INVALID;
    size_t at_session, at_seq, at_ts, at_turn;
    if (!key_at (p, size, &pos, "session") || pos + 18 > size || p[pos] != 0xc4 ||
        p[pos + 1] != 16)
        return CM_E_INVALID;
    at_session = pos + 2;
    pos += 18;
    if (!key_at (p, size, &pos, "seq") || pos + 9 > size || p[pos] != 0xcf)
        return CM_E_INVALID;
    at_seq = pos + 1;
    pos += 9;
    if (!key_at (p, size, &pos, "ts") || pos + 9 > size || p[pos] != 0xd3)
        return CM_E_INVALID;
    at_ts = pos + 1;
    pos += 9;
    if (!key_at (p, size, &pos, "turn") || pos + 18 > size || p[pos] != 0xc4 ||
        p[pos + 1] != 16)
        return CM_E_INVALID;
    at_turn = pos + 2;
    memcpy (p + at_session, session->b, 16);
    for (int i = 0; i < 8; i++) p[at_seq + i] = (uint8_t)(seq >> (56 - 8 * i));
    for (int i = 0; i < 8; i++) p[at_ts + i] = (uint8_t)((uint64_t)ts >> (56 - 8 * i));
    memcpy (p + at_turn, turn->b, 16);
    return 0;
}
