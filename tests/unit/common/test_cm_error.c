/*  test_cm_error.c - the error table: names are unique and round-trip. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <string.h>

#include "cm_error.h"

static const int s_codes[] = {
#define CM_ERR_CODE(sym, val, name, msg) sym,
    CM_ERRORS (CM_ERR_CODE)
#undef CM_ERR_CODE
};
#define S_NCODES (sizeof (s_codes) / sizeof (s_codes[0]))

static void test_names_are_distinct (void **state)
{
    for (size_t i = 0; i < S_NCODES; i++)
        for (size_t j = i + 1; j < S_NCODES; j++) {
            assert_int_not_equal (s_codes[i], s_codes[j]);
            assert_string_not_equal (cm_errname (s_codes[i]), cm_errname (s_codes[j]));
        }
}

static void test_name_code_round_trip (void **state)
{
    for (size_t i = 0; i < S_NCODES; i++) {
        int code = s_codes[i];
        assert_true (code < 0);
        const char *name = cm_errname (code);
        assert_string_not_equal (name, "unknown");
        assert_int_equal (cm_errcode (name), code);
        //  Either sign names the same row.
        assert_string_equal (cm_errname (-code), name);
        assert_true (strlen (cm_strerror (code)) > 0);
        assert_string_equal (cm_strerror (code), cm_strerror (-code));
    }
}

static void test_known_values_are_stable (void **state)
{
    //  The numbers are part of the wire contract.
    assert_int_equal (CM_E_INVALID, -1);
    assert_int_equal (CM_E_IO, -20);
    assert_int_equal (CM_E_CANCELLED, -28);
    assert_int_equal (CM_E_MEMORY_LIMIT, -29);
    assert_int_equal (CM_E_BUDGET, -30);
    assert_string_equal (cm_errname (CM_E_BUSY), "busy");
    assert_string_equal (cm_errname (CM_E_FULL), "store_full");
    assert_int_equal (cm_errcode ("missing_field"), CM_E_MISSING);
}

static void test_unknown (void **state)
{
    assert_string_equal (cm_errname (-9999), "unknown");
    assert_string_equal (cm_errname (9999), "unknown");
    assert_string_equal (cm_errname (-2147483647 - 1), "unknown");
    assert_string_equal (cm_strerror (-9999), "unknown error");
    assert_int_equal (cm_errcode ("no_such_error"), 0);
    assert_int_equal (cm_errcode (""), 0);
    assert_int_equal (cm_errcode (NULL), 0);
    assert_string_equal (cm_errname (0), "ok");
}

int main (void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test (test_names_are_distinct),
        cmocka_unit_test (test_name_code_round_trip),
        cmocka_unit_test (test_known_values_are_stable),
        cmocka_unit_test (test_unknown),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
