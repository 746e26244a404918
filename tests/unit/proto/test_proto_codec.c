/*  test_proto_codec.c - round trips of every catalogue message, and hostile
    inputs: truncation at every byte, wrong types, lengths that claim
    gigabytes, deep nesting, wrong version, unknown types and fields.
*/
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <msgpack.h>

#include "proto.h"

/* ---------------------------------------------------------------- */
/*  A tiny arena so filled bodies can be freed in one go             */

typedef struct {
    void *ptrs[4096];
    size_t count;
} arena_t;

static void *arena_alloc (arena_t *a, size_t size)
{
    assert_true (a->count < 4096);
    void *p = calloc (1, size ? size : 1);
    assert_non_null (p);
    a->ptrs[a->count++] = p;
    return p;
}

static void arena_free (arena_t *a)
{
    for (size_t i = 0; i < a->count; i++) free (a->ptrs[i]);
    a->count = 0;
}

/*  Fill every field of a record with a value derived from `seed`, so
    that a field swapped with another would not compare equal.  */
static void fill_record (arena_t *a, const proto_rec_desc_t *rec, void *obj, int seed,
                         int depth);

static void fill_field (arena_t *a, const proto_field_desc_t *f, void *slot, int seed,
                        int depth)
{
    char text[64];
    switch (f->type) {
    case PROTO_T_U64:
        *(uint64_t *)slot = 1000u + (uint64_t)seed * 0x100000001ull;
        break;
    case PROTO_T_I64:
        *(int64_t *)slot = -(int64_t)seed * 1234567;
        break;
    case PROTO_T_F64:
        *(double *)slot = seed + 0.25;
        break;
    case PROTO_T_BOOL:
        *(bool *)slot = true;
        break;
    case PROTO_T_STR: {
        snprintf (text, sizeof text, "%s-%d-\"é\"", f->name, seed);
        char *s = arena_alloc (a, strlen (text) + 1);
        strcpy (s, text);
        *(const char **)slot = s;
        break;
    }
    case PROTO_T_BIN: {
        uint8_t *b = arena_alloc (a, 5);
        for (int i = 0; i < 5; i++) b[i] = (uint8_t)(seed + i);
        ((proto_bin_t *)slot)->data = b;
        ((proto_bin_t *)slot)->size = 5;
        break;
    }
    case PROTO_T_UUID:
        for (int i = 0; i < 16; i++) ((cm_uuid_t *)slot)->b[i] = (uint8_t)(seed * 7 + i);
        break;
    case PROTO_T_STR_LIST: {
        proto_str_list_t *l = slot;
        l->count = 3;
        l->items = arena_alloc (a, 3 * sizeof (char *));
        for (int i = 0; i < 3; i++) {
            snprintf (text, sizeof text, "item-%d-%d", seed, i);
            char *s = arena_alloc (a, strlen (text) + 1);
            strcpy (s, text);
            l->items[i] = s;
        }
        break;
    }
    case PROTO_T_BIN_LIST: {
        proto_bin_list_t *l = slot;
        l->count = 2;
        l->items = arena_alloc (a, 2 * sizeof (proto_bin_t));
        for (int i = 0; i < 2; i++) {
            uint8_t *b = arena_alloc (a, 3);
            b[0] = (uint8_t)seed, b[1] = (uint8_t)i, b[2] = 0xff;
            l->items[i].data = b;
            l->items[i].size = 3;
        }
        break;
    }
    case PROTO_T_REC: {
        void *sub = arena_alloc (a, f->rec->size);
        fill_record (a, f->rec, sub, seed + 1, depth + 1);
        *(void **)slot = sub;
        break;
    }
    case PROTO_T_REC_LIST: {
        proto_str_list_t *l = slot; //  {items, count}
        char *items = arena_alloc (a, 2 * f->rec->size);
        for (int i = 0; i < 2; i++)
            fill_record (a, f->rec, items + i * f->rec->size, seed + 10 * (i + 1),
                         depth + 1);
        l->items = (const char **)(void *)items;
        l->count = 2;
        break;
    }
    }
}

static void fill_record (arena_t *a, const proto_rec_desc_t *rec, void *obj, int seed,
                         int depth)
{
    assert_true (depth < 8);
    for (size_t i = 0; i < rec->field_count; i++)
        fill_field (a, &rec->fields[i], (char *)obj + rec->fields[i].offset,
                    seed + (int)i, depth);
}

static void assert_record_equal (const proto_rec_desc_t *rec, const void *x,
                                 const void *y);

static void assert_field_equal (const proto_field_desc_t *f, const void *x, const void *y)
{
    switch (f->type) {
    case PROTO_T_U64:
        assert_int_equal (*(const uint64_t *)x, *(const uint64_t *)y);
        break;
    case PROTO_T_I64:
        assert_int_equal (*(const int64_t *)x, *(const int64_t *)y);
        break;
    case PROTO_T_F64:
        assert_true (*(const double *)x == *(const double *)y);
        break;
    case PROTO_T_BOOL:
        assert_int_equal (*(const bool *)x, *(const bool *)y);
        break;
    case PROTO_T_STR:
        assert_string_equal (*(const char *const *)x, *(const char *const *)y);
        break;
    case PROTO_T_UUID:
        assert_memory_equal (x, y, 16);
        break;
    case PROTO_T_BIN: {
        const proto_bin_t *a = x, *b = y;
        assert_int_equal (a->size, b->size);
        assert_memory_equal (a->data, b->data, a->size);
        break;
    }
    case PROTO_T_STR_LIST: {
        const proto_str_list_t *a = x, *b = y;
        assert_int_equal (a->count, b->count);
        for (size_t i = 0; i < a->count; i++)
            assert_string_equal (a->items[i], b->items[i]);
        break;
    }
    case PROTO_T_BIN_LIST: {
        const proto_bin_list_t *a = x, *b = y;
        assert_int_equal (a->count, b->count);
        for (size_t i = 0; i < a->count; i++) {
            assert_int_equal (a->items[i].size, b->items[i].size);
            assert_memory_equal (a->items[i].data, b->items[i].data, a->items[i].size);
        }
        break;
    }
    case PROTO_T_REC:
        assert_record_equal (f->rec, *(const void *const *)x, *(const void *const *)y);
        break;
    case PROTO_T_REC_LIST: {
        const proto_str_list_t *a = x, *b = y;
        assert_int_equal (a->count, b->count);
        for (size_t i = 0; i < a->count; i++)
            assert_record_equal (f->rec, (const char *)a->items + i * f->rec->size,
                                 (const char *)b->items + i * f->rec->size);
        break;
    }
    }
}

static void assert_record_equal (const proto_rec_desc_t *rec, const void *x,
                                 const void *y)
{
    assert_non_null (x);
    assert_non_null (y);
    for (size_t i = 0; i < rec->field_count; i++)
        assert_field_equal (&rec->fields[i], (const char *)x + rec->fields[i].offset,
                            (const char *)y + rec->fields[i].offset);
}

/*  Encode a fully filled body of `type` into buf.  */
static void encode_filled (arena_t *a, proto_buf_t *buf, const proto_msg_desc_t *d,
                           void **body_out)
{
    void *body = arena_alloc (a, d->body->size);
    fill_record (a, d->body, body, (int)d->type, 0);
    proto_buf_reset (buf);
    assert_int_equal (proto_encode (buf, d->type, 0xfeedbeefcafeull + d->type, body), 0);
    *body_out = body;
}

/* ---------------------------------------------------------------- */

static void test_catalogue_is_consistent (void **state)
{
    size_t n;
    const proto_msg_desc_t *const *msgs = proto_msg_descs (&n);
    assert_true (n > 50);
    for (size_t i = 0; i < n; i++) {
        assert_ptr_equal (proto_msg_desc (msgs[i]->type), msgs[i]);
        assert_int_equal (proto_type_by_name (msgs[i]->name), msgs[i]->type);
        assert_string_equal (proto_type_name (msgs[i]->type), msgs[i]->name);
        for (size_t j = i + 1; j < n; j++) {
            assert_int_not_equal (msgs[i]->type, msgs[j]->type);
            assert_string_not_equal (msgs[i]->name, msgs[j]->name);
        }
    }
    assert_null (proto_msg_desc (0));
    assert_null (proto_msg_desc (255));
    assert_null (proto_msg_desc (1u << 20));
    assert_string_equal (proto_type_name (9999), "unknown");
    assert_int_equal (proto_type_by_name ("nope"), PROTO_NONE);

    size_t nrec;
    const proto_rec_desc_t *const *recs = proto_rec_descs (&nrec);
    for (size_t i = 0; i < nrec; i++) {
        assert_true (recs[i]->field_count <= 64);
        for (size_t f = 0; f < recs[i]->field_count; f++)
            for (size_t g = f + 1; g < recs[i]->field_count; g++)
                assert_string_not_equal (recs[i]->fields[f].name,
                                         recs[i]->fields[g].name);
    }
}

static void test_round_trip_every_message (void **state)
{
    size_t n;
    const proto_msg_desc_t *const *msgs = proto_msg_descs (&n);
    arena_t *a = calloc (1, sizeof *a);
    proto_buf_t buf = {0};
    proto_msg_t msg;
    proto_msg_init (&msg);

    for (size_t i = 0; i < n; i++) {
        void *body;
        encode_filled (a, &buf, msgs[i], &body);
        int rc = proto_decode (&msg, buf.data, buf.size);
        if (rc)
            fail_msg ("%s: %s (%s)", msgs[i]->name, cm_errname (rc),
                      proto_msg_error (&msg));
        assert_int_equal (msg.version, PROTO_VERSION);
        assert_int_equal (msg.type, msgs[i]->type);
        assert_int_equal (msg.corr, 0xfeedbeefcafeull + msgs[i]->type);
        assert_ptr_equal (msg.desc, msgs[i]);
        assert_record_equal (msgs[i]->body, body, msg.body);
        arena_free (a);
    }
    proto_msg_fini (&msg);
    proto_buf_fini (&buf);
    free (a);
}

static void test_typed_events_append (void **state)
{
    //  What a caller writes: a typed body, then typed access after decode.
    uint8_t e1[100], e2[100];
    memset (e1, 'a', sizeof e1);
    memset (e2, 'b', sizeof e2);
    proto_bin_t events[2] = {{e1, sizeof e1}, {e2, sizeof e2}};
    proto_events_append_t body = {.first_seq = 41, .events = {events, 2}};
    cm_uuid7 (&body.session);

    proto_buf_t buf = {0};
    assert_int_equal (proto_encode (&buf, PROTO_STORE_EVENTS_APPEND, 7, &body), 0);
    proto_msg_t msg;
    proto_msg_init (&msg);
    assert_int_equal (proto_decode (&msg, buf.data, buf.size), 0);
    proto_events_append_t *got = proto_body (&msg, events_append);
    assert_non_null (got);
    assert_null (proto_body (&msg, appended)); //  another body type
    assert_int_equal (got->first_seq, 41);
    assert_int_equal (got->events.count, 2);
    assert_memory_equal (got->events.items[1].data, e2, 100);
    //  BIN fields point into the encoded bytes (zero copy).
    assert_true ((const char *)got->events.items[0].data >= buf.data &&
                 (const char *)got->events.items[0].data < buf.data + buf.size);
    assert_memory_equal (&got->session, &body.session, 16);
    proto_msg_fini (&msg);
    proto_buf_fini (&buf);
}

static void test_optional_fields_left_out (void **state)
{
    proto_session_rec_t rec = {
        .tenant = "t1", .cwd = "/w", .state = "ready", .created_ms = 1};
    cm_uuid7 (&rec.id);
    proto_session_put_t put = {.session = &rec};
    proto_buf_t buf = {0};
    assert_int_equal (proto_encode (&buf, PROTO_STORE_SESSION_PUT, 1, &put), 0);
    proto_msg_t msg;
    proto_msg_init (&msg);
    assert_int_equal (proto_decode (&msg, buf.data, buf.size), 0);
    proto_session_put_t *got = proto_body (&msg, session_put);
    assert_null (got->session->title);
    assert_null (got->session->usage);
    assert_int_equal (got->session->last_seq, 0);
    assert_string_equal (got->session->tenant, "t1");
    proto_msg_fini (&msg);
    proto_buf_fini (&buf);
}

static void test_encode_refuses_missing_required (void **state)
{
    proto_buf_t buf = {0};
    assert_int_equal (proto_encode_ok (&buf, 1), 0);
    size_t before = buf.size;
    proto_error_t err = {.code = CM_E_BUSY}; //  message missing
    assert_int_equal (proto_encode (&buf, PROTO_ERROR, 2, &err), CM_E_MISSING);
    assert_int_equal (buf.size, before); //  nothing half-written
    assert_int_equal (proto_encode (&buf, (proto_type_t)199, 2, &err), CM_E_UNKNOWN_TYPE);
    //  A required nested record must be present.
    proto_session_put_t put = {.session = NULL};
    assert_int_equal (proto_encode (&buf, PROTO_STORE_SESSION_PUT, 3, &put),
                      CM_E_MISSING);
    //  A list with a count but no items is a caller bug, reported.
    proto_events_append_t app = {.first_seq = 1, .events = {NULL, 3}};
    assert_int_equal (proto_encode (&buf, PROTO_STORE_EVENTS_APPEND, 4, &app),
                      CM_E_INVALID);
    assert_int_equal (buf.size, before);
    proto_buf_fini (&buf);
}

static void test_truncated_at_every_byte (void **state)
{
    size_t n;
    const proto_msg_desc_t *const *msgs = proto_msg_descs (&n);
    arena_t *a = calloc (1, sizeof *a);
    proto_buf_t buf = {0};
    proto_msg_t msg;
    proto_msg_init (&msg);

    for (size_t i = 0; i < n; i++) {
        void *body;
        encode_filled (a, &buf, msgs[i], &body);
        //  Copy each prefix to its own exact-size allocation so ASan sees
        //  any read past the end.
        for (size_t cut = 0; cut < buf.size; cut++) {
            char *prefix = malloc (cut ? cut : 1);
            memcpy (prefix, buf.data, cut);
            int rc = proto_decode (&msg, prefix, cut);
            if (rc == 0) fail_msg ("%s cut at %zu decoded", msgs[i]->name, cut);
            assert_null (msg.body);
            free (prefix);
        }
        arena_free (a);
    }
    proto_msg_fini (&msg);
    proto_buf_fini (&buf);
    free (a);
}

/*  Pack [version, type, corr, body] by hand, to craft bad messages.  */
typedef void (*body_fn) (msgpack_packer *pk);

static size_t craft (char *out, size_t outlen, uint64_t version, uint64_t type,
                     uint64_t corr, body_fn fn)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init (&sb);
    msgpack_packer pk;
    msgpack_packer_init (&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_array (&pk, 4);
    msgpack_pack_uint64 (&pk, version);
    msgpack_pack_uint64 (&pk, type);
    msgpack_pack_uint64 (&pk, corr);
    fn (&pk);
    assert_true (sb.size <= outlen);
    memcpy (out, sb.data, sb.size);
    size_t size = sb.size;
    msgpack_sbuffer_destroy (&sb);
    return size;
}

static void pack_key (msgpack_packer *pk, const char *k)
{
    msgpack_pack_str (pk, strlen (k));
    msgpack_pack_str_body (pk, k, strlen (k));
}

static void body_range_ok (msgpack_packer *pk)
{
    static const uint8_t id[16] = {1};
    msgpack_pack_map (pk, 3);
    pack_key (pk, "session");
    msgpack_pack_bin (pk, 16);
    msgpack_pack_bin_body (pk, id, 16);
    pack_key (pk, "after_seq");
    msgpack_pack_uint64 (pk, 9);
    pack_key (pk, "future_field"); //  unknown: ignored
    msgpack_pack_array (pk, 1);
    msgpack_pack_nil (pk);
}

static void body_range_seq_is_string (msgpack_packer *pk)
{
    static const uint8_t id[16] = {1};
    msgpack_pack_map (pk, 2);
    pack_key (pk, "session");
    msgpack_pack_bin (pk, 16);
    msgpack_pack_bin_body (pk, id, 16);
    pack_key (pk, "after_seq");
    msgpack_pack_str (pk, 1);
    msgpack_pack_str_body (pk, "9", 1);
}

static void body_range_negative_seq (msgpack_packer *pk)
{
    static const uint8_t id[16] = {1};
    msgpack_pack_map (pk, 2);
    pack_key (pk, "session");
    msgpack_pack_bin (pk, 16);
    msgpack_pack_bin_body (pk, id, 16);
    pack_key (pk, "after_seq");
    msgpack_pack_int64 (pk, -1);
}

static void body_range_short_uuid (msgpack_packer *pk)
{
    msgpack_pack_map (pk, 2);
    pack_key (pk, "session");
    msgpack_pack_bin (pk, 3);
    msgpack_pack_bin_body (pk, "abc", 3);
    pack_key (pk, "after_seq");
    msgpack_pack_uint64 (pk, 1);
}

static void body_range_missing_session (msgpack_packer *pk)
{
    msgpack_pack_map (pk, 1);
    pack_key (pk, "after_seq");
    msgpack_pack_uint64 (pk, 1);
}

static void body_range_duplicate (msgpack_packer *pk)
{
    static const uint8_t id[16] = {1};
    msgpack_pack_map (pk, 3);
    pack_key (pk, "session");
    msgpack_pack_bin (pk, 16);
    msgpack_pack_bin_body (pk, id, 16);
    pack_key (pk, "after_seq");
    msgpack_pack_uint64 (pk, 1);
    pack_key (pk, "after_seq");
    msgpack_pack_uint64 (pk, 2);
}

static void body_empty_map (msgpack_packer *pk)
{
    msgpack_pack_map (pk, 0);
}

static void body_not_a_map (msgpack_packer *pk)
{
    msgpack_pack_array (pk, 0);
}

static void body_error_nul_in_string (msgpack_packer *pk)
{
    msgpack_pack_map (pk, 2);
    pack_key (pk, "code");
    msgpack_pack_int64 (pk, -3);
    pack_key (pk, "message");
    msgpack_pack_str (pk, 3);
    msgpack_pack_str_body (pk, "a\0b", 3);
}

static void body_error_with_nil_optional (msgpack_packer *pk)
{
    msgpack_pack_map (pk, 3);
    pack_key (pk, "code");
    msgpack_pack_int64 (pk, -3);
    pack_key (pk, "message");
    msgpack_pack_str (pk, 2);
    msgpack_pack_str_body (pk, "hi", 2);
    pack_key (pk, "data");
    msgpack_pack_nil (pk);
}

static int decode_crafted (proto_msg_t *msg, uint64_t version, uint64_t type,
                           uint64_t corr, body_fn fn)
{
    char bytes[512];
    size_t n = craft (bytes, sizeof bytes, version, type, corr, fn);
    return proto_decode (msg, bytes, n);
}

static void test_wrong_types_and_shapes (void **state)
{
    proto_msg_t msg;
    proto_msg_init (&msg);
    const uint64_t RANGE = PROTO_STORE_EVENTS_RANGE;

    assert_int_equal (decode_crafted (&msg, 1, RANGE, 5, body_range_ok), 0);
    assert_int_equal (proto_body (&msg, events_range)->after_seq, 9);

    assert_int_equal (decode_crafted (&msg, 1, RANGE, 5, body_range_seq_is_string),
                      CM_E_TYPE);
    assert_non_null (strstr (proto_msg_error (&msg), "after_seq"));
    assert_true (msg.corr_valid); //  so the receiver can answer corr 5
    assert_int_equal (msg.corr, 5);
    assert_null (msg.body);

    assert_int_equal (decode_crafted (&msg, 1, RANGE, 5, body_range_negative_seq),
                      CM_E_TYPE);
    assert_int_equal (decode_crafted (&msg, 1, RANGE, 5, body_range_short_uuid),
                      CM_E_TYPE);
    assert_int_equal (decode_crafted (&msg, 1, RANGE, 5, body_range_missing_session),
                      CM_E_MISSING);
    assert_non_null (strstr (proto_msg_error (&msg), "session"));
    assert_int_equal (decode_crafted (&msg, 1, RANGE, 5, body_range_duplicate),
                      CM_E_INVALID);
    assert_int_equal (decode_crafted (&msg, 1, RANGE, 5, body_empty_map), CM_E_MISSING);
    assert_int_equal (decode_crafted (&msg, 1, RANGE, 5, body_not_a_map), CM_E_TYPE);
    assert_int_equal (decode_crafted (&msg, 1, PROTO_ERROR, 5, body_error_nul_in_string),
                      CM_E_INVALID);
    assert_int_equal (
        decode_crafted (&msg, 1, PROTO_ERROR, 5, body_error_with_nil_optional), 0);
    assert_null (proto_body (&msg, error)->data);
    //  Stats takes no fields, so an empty map is a whole message.
    assert_int_equal (decode_crafted (&msg, 1, PROTO_STORE_STATS, 6, body_empty_map), 0);

    proto_msg_fini (&msg);
}

static void test_version_and_unknown_type (void **state)
{
    proto_msg_t msg;
    proto_msg_init (&msg);
    assert_int_equal (decode_crafted (&msg, 2, PROTO_OK, 77, body_empty_map),
                      CM_E_VERSION);
    assert_true (msg.corr_valid);
    assert_int_equal (msg.corr, 77);
    assert_non_null (strstr (proto_msg_error (&msg), "version 2"));
    assert_int_equal (decode_crafted (&msg, 0, PROTO_OK, 77, body_empty_map),
                      CM_E_VERSION);
    assert_int_equal (decode_crafted (&msg, 1, 199, 78, body_empty_map),
                      CM_E_UNKNOWN_TYPE);
    assert_int_equal (msg.corr, 78);
    assert_int_equal (decode_crafted (&msg, 1, UINT64_MAX, 78, body_empty_map),
                      CM_E_UNKNOWN_TYPE);
    proto_msg_fini (&msg);
}

static void test_hostile_lengths (void **state)
{
    //  Each of these claims far more than it holds; msgpack-c alone would
    //  try to allocate gigabytes for some of them.
    static const struct {
        const char *what;
        uint8_t bytes[8];
        size_t len;
        int rc;
    } cases[] = {
        {"array32 of 4G", {0xdd, 0xff, 0xff, 0xff, 0xff}, 5, CM_E_TRUNCATED},
        {"map32 of 4G", {0xdf, 0xff, 0xff, 0xff, 0xff, 0x00, 0x00}, 7, CM_E_TRUNCATED},
        {"str32 of 4G", {0xdb, 0xff, 0xff, 0xff, 0xff, 'a'}, 6, CM_E_TRUNCATED},
        {"bin32 of 4G", {0xc6, 0xff, 0xff, 0xff, 0xf0}, 5, CM_E_TRUNCATED},
        {"ext32 of 4G", {0xc9, 0x7f, 0xff, 0xff, 0xff, 0x01}, 6, CM_E_TRUNCATED},
        {"array16 of 65535", {0xdc, 0xff, 0xff, 0xc0}, 4, CM_E_TRUNCATED},
        {"fixmap of 15 with 1 value", {0x8f, 0x00}, 2, CM_E_TRUNCATED},
        {"uint64 cut short", {0xcf, 0x01, 0x02}, 3, CM_E_TRUNCATED},
        {"array32 header cut", {0xdd, 0x00}, 2, CM_E_TRUNCATED},
        //  Found by fuzz_proto_decode: 2 * 2^31 entries wrapped to 0 in
        //  32-bit arithmetic and passed as an empty map.
        {"map32 of 2^31 (count overflow)",
         {0xdf, 0x80, 0x00, 0x00, 0x00},
         5,
         CM_E_TRUNCATED},
        {"map32 of 2^31 + 1",
         {0xdf, 0x80, 0x00, 0x00, 0x01, 0xc0, 0xc0},
         7,
         CM_E_TRUNCATED},
        {"reserved byte 0xc1", {0xc1}, 1, CM_E_INVALID},
        {"trailing bytes", {0x90, 0x00}, 2, CM_E_INVALID},
        {"empty input", {0}, 0, CM_E_TRUNCATED},
    };
    proto_msg_t msg;
    proto_msg_init (&msg);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int rc = proto_validate (cases[i].bytes, cases[i].len);
        if (rc != cases[i].rc)
            fail_msg ("%s: got %s, want %s", cases[i].what, cm_errname (rc),
                      cm_errname (cases[i].rc));
        assert_int_equal (proto_decode (&msg, cases[i].bytes, cases[i].len), cases[i].rc);
    }
    //  Well-formed msgpack that is not a message is refused after validation.
    static const uint8_t not_msg[] = {0x93, 0x01, 0x01, 0x01};
    assert_int_equal (proto_decode (&msg, not_msg, sizeof not_msg), CM_E_INVALID);
    proto_msg_fini (&msg);
}

static void test_nesting_and_element_limits (void **state)
{
    uint8_t deep[64];
    //  PROTO_MAX_DEPTH nested one-element arrays around a nil: allowed.
    for (int i = 0; i < PROTO_MAX_DEPTH; i++) deep[i] = 0x91;
    deep[PROTO_MAX_DEPTH] = 0xc0;
    assert_int_equal (proto_validate (deep, PROTO_MAX_DEPTH + 1), 0);
    //  One more level: refused.
    for (int i = 0; i <= PROTO_MAX_DEPTH; i++) deep[i] = 0x91;
    deep[PROTO_MAX_DEPTH + 1] = 0xc0;
    assert_int_equal (proto_validate (deep, PROTO_MAX_DEPTH + 2), CM_E_DEPTH);

    //  An array of PROTO_MAX_ELEMENTS nils holds one value too many with
    //  its own header.
    size_t n = PROTO_MAX_ELEMENTS;
    uint8_t *wide = malloc (5 + n);
    wide[0] = 0xdd;
    wide[1] = (uint8_t)(n >> 24), wide[2] = (uint8_t)(n >> 16);
    wide[3] = (uint8_t)(n >> 8), wide[4] = (uint8_t)n;
    memset (wide + 5, 0xc0, n);
    assert_int_equal (proto_validate (wide, 5 + n), CM_E_DEPTH);
    assert_int_equal (proto_validate (wide, 5 + n - 1), CM_E_TRUNCATED);
    //  One fewer element fits.
    n -= 1;
    wide[1] = (uint8_t)(n >> 24), wide[2] = (uint8_t)(n >> 16);
    wide[3] = (uint8_t)(n >> 8), wide[4] = (uint8_t)n;
    assert_int_equal (proto_validate (wide, 5 + n), 0);
    free (wide);

    //  The whole-message size cap.
    assert_int_equal (proto_validate (deep, (size_t)PROTO_MAX_MSG + 1), CM_E_TOO_LARGE);
}

static void test_decode_reuses_msg (void **state)
{
    //  One proto_msg_t decodes message after message without growing.
    proto_buf_t buf = {0};
    proto_msg_t msg;
    proto_msg_init (&msg);
    for (int i = 0; i < 10000; i++) {
        proto_buf_reset (&buf);
        assert_int_equal (proto_encode_error (&buf, (uint64_t)i, CM_E_BUSY, NULL), 0);
        assert_int_equal (proto_decode (&msg, buf.data, buf.size), 0);
        proto_error_t *e = proto_body (&msg, error);
        assert_int_equal (e->code, CM_E_BUSY);
        assert_string_equal (e->message, cm_strerror (CM_E_BUSY));
        assert_int_equal (msg.corr, (uint64_t)i);
    }
    proto_msg_fini (&msg);
    proto_buf_fini (&buf);
}

static void test_event_stamp_in_place (void **state)
{
    //  A worker encodes an event with a placeholder head; the session
    //  stamps session, seq, ts and turn into the bytes without re-encoding.
    cm_uuid_t sess, turn, other;
    cm_uuid7 (&sess);
    cm_uuid7 (&turn);
    cm_uuid7 (&other);
    proto_ev_text_t ev = {.turn = other, .text = "hello"};
    proto_buf_t buf = {0};
    assert_int_equal (proto_encode (&buf, PROTO_EV_AGENT_MESSAGE, 0, &ev), 0);
    assert_non_null (memchr (buf.data, 0xcf, buf.size)); //  seq is fixed-width
    size_t size = buf.size;
    assert_int_equal (proto_event_stamp (buf.data, buf.size, &sess, 0x0102030405060708ull,
                                         1795000000123, &turn),
                      0);
    assert_int_equal (buf.size, size);
    proto_msg_t msg;
    proto_msg_init (&msg);
    assert_int_equal (proto_decode (&msg, buf.data, buf.size), 0);
    proto_ev_text_t *got = proto_body (&msg, ev_text);
    assert_memory_equal (got->session.b, sess.b, 16);
    assert_memory_equal (got->turn.b, turn.b, 16);
    assert_int_equal (got->seq, 0x0102030405060708ull);
    assert_int_equal (got->ts, 1795000000123);
    assert_string_equal (got->text, "hello");

    //  A layout it does not know is refused, untouched (the caller then
    //  re-encodes): here, an event whose turn is absent.
    proto_ev_text_t bare = {.text = "x"};
    proto_buf_reset (&buf);
    assert_int_equal (proto_encode (&buf, PROTO_EV_AGENT_MESSAGE, 0, &bare), 0);
    char *copy = malloc (buf.size);
    memcpy (copy, buf.data, buf.size);
    assert_int_equal (proto_event_stamp (buf.data, buf.size, &sess, 1, 2, &turn),
                      CM_E_INVALID);
    assert_memory_equal (copy, buf.data, buf.size);
    //  Not an event at all.
    proto_buf_reset (&buf);
    proto_encode_ok (&buf, 5);
    assert_int_equal (proto_event_stamp (buf.data, buf.size, &sess, 1, 2, &turn),
                      CM_E_INVALID);
    free (copy);
    proto_msg_fini (&msg);
    proto_buf_fini (&buf);
}

int main (void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test (test_catalogue_is_consistent),
        cmocka_unit_test (test_round_trip_every_message),
        cmocka_unit_test (test_typed_events_append),
        cmocka_unit_test (test_optional_fields_left_out),
        cmocka_unit_test (test_encode_refuses_missing_required),
        cmocka_unit_test (test_truncated_at_every_byte),
        cmocka_unit_test (test_wrong_types_and_shapes),
        cmocka_unit_test (test_version_and_unknown_type),
        cmocka_unit_test (test_hostile_lengths),
        cmocka_unit_test (test_nesting_and_element_limits),
        cmocka_unit_test (test_decode_reuses_msg),
        cmocka_unit_test (test_event_stamp_in_place),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
