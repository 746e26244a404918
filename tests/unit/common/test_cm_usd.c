/*  test_cm_usd.c - dollar amounts as people write them, in micro-dollars.  */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdint.h>

#include "cm_error.h"
#include "cm_usd.h"

static void test_parse (void **state)
{
    static const struct {
        const char *text;
        int64_t micros;
    } good[] = {
        {"0", 0},        {"3", 3000000},
        {"0.5", 500000}, {"$12.25", 12250000},
        {".75", 750000}, {"0.000001", 1},
        {"1.", 1000000}, {"1000000000", 1000000000000000},
        {"", 0},
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        int64_t m = -1;
        assert_int_equal (cm_usd_parse (good[i].text, &m), 0);
        assert_int_equal (m, good[i].micros);
    }
    int64_t m = -1;
    assert_int_equal (cm_usd_parse (NULL, &m), 0);
    assert_int_equal (m, 0);
    static const char *const bad[] = {
        "-1",         "1e3",   "1,5", " 1",   "1 ",
        "$",          ".",     "abc", "$$1",  "0.0000001",
        "1000000001", "1.2.3", "+1",  "0x10", "99999999999999999999999"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        m = -1;
        assert_int_equal (cm_usd_parse (bad[i], &m), CM_E_INVALID);
        assert_int_equal (m, 0);
    }
}

static void test_fmt (void **state)
{
    char out[32];
    assert_string_equal (cm_usd_fmt (0, out, sizeof out), "$0.00");
    assert_string_equal (cm_usd_fmt (1500, out, sizeof out), "$0.0015");
    assert_string_equal (cm_usd_fmt (2000, out, sizeof out), "$0.002");
    assert_string_equal (cm_usd_fmt (500000, out, sizeof out), "$0.50");
    assert_string_equal (cm_usd_fmt (12250000, out, sizeof out), "$12.25");
    assert_string_equal (cm_usd_fmt (1, out, sizeof out), "$0.000001");
    assert_string_equal (cm_usd_fmt (UINT64_MAX, out, sizeof out),
                         "$18446744073709.551615");
}

int main (void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test (test_parse),
        cmocka_unit_test (test_fmt),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
