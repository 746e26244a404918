/*  test_cm_time.c - clocks and RFC 3339 formatting. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <time.h>

#include "cm_time.h"

static void test_iso_known_values (void **state)
{
    char buf[CM_TIME_ISO_LEN];
    assert_string_equal (cm_time_iso (0, buf), "1970-01-01T00:00:00.000Z");
    assert_string_equal (cm_time_iso (1700000000123, buf), "2023-11-14T22:13:20.123Z");
    assert_string_equal (cm_time_iso (951782400999, buf), "2000-02-29T00:00:00.999Z");
    //  Before the epoch the millisecond part stays positive.
    assert_string_equal (cm_time_iso (-1, buf), "1969-12-31T23:59:59.999Z");
    assert_string_equal (cm_time_iso (253402300799999, buf), "9999-12-31T23:59:59.999Z");
    assert_string_equal (cm_time_iso (253402300800000, buf), "invalid-time");
}

static void test_wall_clock (void **state)
{
    int64_t ms = cm_time_ms ();
    int64_t secs = (int64_t)time (NULL);
    assert_true (ms / 1000 >= secs - 1 && ms / 1000 <= secs + 1);
    assert_true (ms > 1700000000000); //  after this code was written
}

static void test_monotonic (void **state)
{
    uint64_t a = cm_mono_ns ();
    struct timespec nap = {0, 2000000};
    nanosleep (&nap, NULL);
    uint64_t b = cm_mono_ns ();
    assert_true (b - a >= 2000000);
    int64_t ms = cm_mono_ms ();
    assert_true (ms >= (int64_t)(b / 1000000));
}

int main (void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test (test_iso_known_values),
        cmocka_unit_test (test_wall_clock),
        cmocka_unit_test (test_monotonic),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
