/*  test_cm_id.c - UUIDv7 layout, ordering, text form and randomness. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "cm_error.h"
#include "cm_id.h"
#include "cm_time.h"

#define S_MANY 10000

static void test_version_and_variant (void **state)
{
    for (int i = 0; i < 100; i++) {
        cm_uuid_t id;
        cm_uuid7 (&id);
        assert_int_equal (id.b[6] >> 4, 7);   //  version
        assert_int_equal (id.b[8] >> 6, 0x2); //  variant 10
        assert_false (cm_uuid_is_nil (&id));
        char text[CM_UUID_STR_LEN];
        cm_uuid_fmt (&id, text);
        assert_int_equal (text[14], '7');
        assert_non_null (strchr ("89ab", text[19]));
    }
}

static void test_timestamp (void **state)
{
    int64_t before = cm_time_ms ();
    cm_uuid_t id;
    cm_uuid7 (&id);
    int64_t after = cm_time_ms ();
    //  The counter may have pushed the id a little ahead of the clock.
    assert_true (cm_uuid7_ms (&id) >= before);
    assert_true (cm_uuid7_ms (&id) <= after + 2);
}

static void test_strictly_increasing (void **state)
{
    cm_uuid_t *ids = calloc (S_MANY, sizeof (cm_uuid_t));
    assert_non_null (ids);
    for (int i = 0; i < S_MANY; i++) cm_uuid7 (&ids[i]);
    for (int i = 1; i < S_MANY; i++) assert_true (memcmp (&ids[i - 1], &ids[i], 16) < 0);
    //  10000 ids come faster than 1 per ms, so several share a millisecond
    //  and the ordering above really exercised the counter.
    assert_true (cm_uuid7_ms (&ids[S_MANY - 1]) - cm_uuid7_ms (&ids[0]) < S_MANY);
    free (ids);
}

static void test_format_parse_round_trip (void **state)
{
    cm_uuid_t id;
    cm_uuid7 (&id);
    char text[CM_UUID_STR_LEN];
    assert_ptr_equal (cm_uuid_fmt (&id, text), text);
    assert_int_equal (strlen (text), 36);
    assert_int_equal (text[8], '-');
    assert_int_equal (text[13], '-');
    assert_int_equal (text[18], '-');
    assert_int_equal (text[23], '-');
    cm_uuid_t back;
    assert_int_equal (cm_uuid_parse (text, &back), 0);
    assert_memory_equal (&id, &back, sizeof (id));

    const char *known = "0189f7e4-1c2b-7d3e-8f40-123456789abc";
    assert_int_equal (cm_uuid_parse (known, &back), 0);
    assert_string_equal (cm_uuid_fmt (&back, text), known);
    assert_int_equal (back.b[0], 0x01);
    assert_int_equal (back.b[15], 0xbc);

    //  Upper case parses; output is always lower case.
    assert_int_equal (cm_uuid_parse ("0189F7E4-1C2B-7D3E-8F40-123456789ABC", &back), 0);
    assert_string_equal (cm_uuid_fmt (&back, text), known);
}

static void test_parse_rejects (void **state)
{
    const char *bad[] = {
        "",
        "0189f7e4-1c2b-7d3e-8f40-123456789ab",   //  35 characters
        "0189f7e4-1c2b-7d3e-8f40-123456789abcd", //  37 characters
        "0189f7e4-1c2b-7d3e-8f40-123456789abg",  //  not hex
        "0189f7e4-1c2b-7d3e-8f40-12345678 abc",  //  space
        "0189f7e41-c2b-7d3e-8f40-123456789abc",  //  dash moved
        "0189f7e4-1c2b-7d3e-8f40+123456789abc",  //  wrong separator
        "0189f7e4x1c2b-7d3e-8f40-123456789abc",
        "{189f7e4-1c2b-7d3e-8f40-123456789ab}",
        "0189f7e41c2b7d3e8f40123456789abc", //  no dashes
    };
    cm_uuid_t out;
    memset (&out, 0xee, sizeof (out));
    for (size_t i = 0; i < sizeof (bad) / sizeof (bad[0]); i++) {
        assert_int_equal (cm_uuid_parse (bad[i], &out), CM_E_INVALID);
        //  *out is untouched on error.
        for (int k = 0; k < 16; k++) assert_int_equal (out.b[k], 0xee);
    }
    assert_int_equal (cm_uuid_parse (NULL, &out), CM_E_INVALID);
}

static void test_nil (void **state)
{
    cm_uuid_t nil = {{0}};
    assert_true (cm_uuid_is_nil (&nil));
    char text[CM_UUID_STR_LEN];
    assert_string_equal (cm_uuid_fmt (&nil, text),
                         "00000000-0000-0000-0000-000000000000");
    nil.b[15] = 1;
    assert_false (cm_uuid_is_nil (&nil));
}

static void test_random (void **state)
{
    //  Large enough that getrandom may return it in pieces.
    size_t len = 1 << 20;
    unsigned char *a = calloc (1, len);
    unsigned char *b = calloc (1, len);
    assert_non_null (a);
    assert_non_null (b);
    assert_int_equal (cm_random (a, len), 0);
    assert_int_equal (cm_random (b, len), 0);
    assert_memory_not_equal (a, b, 64);
    size_t zeros = 0;
    for (size_t i = 0; i < len; i++) zeros += a[i] == 0;
    //  Expected len/256 = 4096; a stuck generator would be far off.
    assert_true (zeros > 3000 && zeros < 5200);
    assert_int_equal (cm_random (a, 0), 0);
    free (a);
    free (b);
}

int main (void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test (test_version_and_variant),
        cmocka_unit_test (test_timestamp),
        cmocka_unit_test (test_strictly_increasing),
        cmocka_unit_test (test_format_parse_round_trip),
        cmocka_unit_test (test_parse_rejects),
        cmocka_unit_test (test_nil),
        cmocka_unit_test (test_random),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
