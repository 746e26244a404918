/*  test_cm_strbuf.c - the text buffer and cm_err_set. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cm_error.h"
#include "cm_strbuf.h"

static void test_append_and_take (void **state)
{
    cm_strbuf_t b = {0};
    char *empty = cm_strbuf_take (&b);
    assert_string_equal (empty, ""); //  nothing appended: "", not NULL
    free (empty);
    cm_strbuf_puts (&b, "abc");
    cm_strbuf_put (&b, "defgh", 2);
    cm_strbuf_putf (&b, "-%d-", 42);
    assert_int_equal (b.len, 9);
    assert_string_equal (b.p, "abcde-42-");
    //  Longer than the stack buffer putf formats into.
    char big[1000];
    memset (big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    cm_strbuf_putf (&b, "[%s]", big);
    assert_int_equal (b.len, 9 + 1001);
    assert_int_equal (b.p[b.len], '\0');
    char *text = cm_strbuf_take (&b);
    assert_non_null (text);
    assert_int_equal (strlen (text), 1010);
    assert_null (b.p);
    free (text);
}

static void test_oom_is_sticky (void **state)
{
    cm_strbuf_t b = {0};
    cm_strbuf_puts (&b, "x");
    b.oom = true; //  as after a failed realloc
    cm_strbuf_puts (&b, "more");
    assert_int_equal (b.len, 1);
    assert_null (cm_strbuf_take (&b));
    assert_null (b.p);
}

static void test_err_set (void **state)
{
    char err[16];
    assert_int_equal (
        cm_err_set (err, sizeof err, CM_E_INVALID, "field %s is bad", "name"),
        CM_E_INVALID);
    assert_string_equal (err, "field name is b"); //  cut, NUL-terminated
    assert_int_equal (cm_err_set (NULL, 0, CM_E_BUSY, "ignored"), CM_E_BUSY);
}

int main (void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test (test_append_and_take),
        cmocka_unit_test (test_oom_is_sticky),
        cmocka_unit_test (test_err_set),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
