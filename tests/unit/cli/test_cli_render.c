/*  test_cli_render.c - what tail and chat read from the gateway's ACP
    messages (cli/cli_render.h): strings that may be missing or of the
    wrong type, plan marks, a tool call's first text, the exit code of a
    JSON-RPC error.
*/
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <string.h>

#include "cli.h"
#include "cli_render.h"

static void test_str (void **state)
{
    (void)state;
    json_t *o = json_pack ("{s:s,s:i,s:n}", "title", "a title", "n", 3, "z");
    assert_string_equal (cli_render_str (o, "title"), "a title");
    assert_string_equal (cli_render_str (o, "n"), "");       //  not a string
    assert_string_equal (cli_render_str (o, "z"), "");       //  null
    assert_string_equal (cli_render_str (o, "missing"), ""); //  absent
    assert_string_equal (cli_render_str (NULL, "title"), "");
    json_t *arr = json_array ();
    assert_string_equal (cli_render_str (arr, "title"), ""); //  not an object
    json_decref (arr);
    json_decref (o);
}

static void test_plan_mark (void **state)
{
    (void)state;
    assert_string_equal (cli_render_plan_mark ("completed"), "x");
    assert_string_equal (cli_render_plan_mark ("in_progress"), ">");
    assert_string_equal (cli_render_plan_mark ("pending"), " ");
    assert_string_equal (cli_render_plan_mark (""), " ");
    assert_string_equal (cli_render_plan_mark ("Completed"), " ");
    assert_string_equal (cli_render_plan_mark (NULL), " ");
}

static void test_tool_text (void **state)
{
    (void)state;
    json_t *content =
        json_loads ("[{\"type\":\"diff\",\"path\":\"/a\"},"
                    " {\"type\":\"content\",\"content\":{\"type\":\"image\"}},"
                    " {\"type\":\"content\",\"content\":{\"type\":\"text\","
                    "  \"text\":\"first\"}},"
                    " {\"type\":\"content\",\"content\":{\"type\":\"text\","
                    "  \"text\":\"second\"}}]",
                    0, NULL);
    assert_non_null (content);
    assert_string_equal (cli_render_tool_text (content), "first");
    json_decref (content);

    json_t *none = json_loads (
        "[{\"type\":\"content\",\"content\":{\"text\":7}}, 3, null]", 0, NULL);
    assert_null (cli_render_tool_text (none));
    json_decref (none);
    json_t *obj = json_object ();
    assert_null (cli_render_tool_text (obj)); //  not a list
    json_decref (obj);
    assert_null (cli_render_tool_text (NULL));
}

static void test_clean (void **state)
{
    (void)state;
    //  ESC (C0), DEL, CSI as C1 (U+009B: c2 9b), BEL and a NUL go; newline,
    //  tab and other UTF-8 (é: c3 a9; U+00A0: c2 a0) stay.
    json_t *v = json_pack ("{s:s%,s:[s,i],s:{s:s}}", "text",
                           "a\033[2Jb\x7f\xc2\x9b"
                           "c\0d",
                           (size_t)12, "list", "line\nnext\tcol \xc3\xa9\xc2\xa0", 5,
                           "nested", "title", "\033]0;pwned\007");
    assert_non_null (v);
    json_t *list0 = json_array_get (json_object_get (v, "list"), 0);
    const char *before = json_string_value (list0);
    cli_render_clean (v);
    json_t *text = json_object_get (v, "text");
    assert_int_equal (json_string_length (text), 11);
    assert_memory_equal (json_string_value (text), "a?[2Jb??c?d", 11);
    //  A clean string is left as it was, not replaced.
    assert_ptr_equal (json_string_value (list0), before);
    assert_string_equal (before, "line\nnext\tcol \xc3\xa9\xc2\xa0");
    assert_string_equal (
        json_string_value (json_object_get (json_object_get (v, "nested"), "title")),
        "?]0;pwned?");
    json_decref (v);
    cli_render_clean (NULL);

    char line[] = "x\033[31my\xc2\x85z\r\n";
    assert_string_equal (cli_render_clean_line (line), "x?[31my?z?\n");
    char empty[] = "";
    assert_string_equal (cli_render_clean_line (empty), "");
}

static void test_cut (void **state)
{
    (void)state;
    const char *s = "ab\xc3\xa9\xe2\x82\xac!"; //  a b é € !
    size_t n = strlen (s);                     //  8
    assert_int_equal (cli_render_cut (s, n, 8), 8);
    assert_int_equal (cli_render_cut (s, n, 100), 8);
    assert_int_equal (cli_render_cut (s, n, 7), 7); //  before '!'
    assert_int_equal (cli_render_cut (s, n, 6), 4); //  not inside the euro sign
    assert_int_equal (cli_render_cut (s, n, 5), 4);
    assert_int_equal (cli_render_cut (s, n, 4), 4); //  after é
    assert_int_equal (cli_render_cut (s, n, 3), 2); //  not inside é
    assert_int_equal (cli_render_cut (s, n, 2), 2);
    assert_int_equal (cli_render_cut (s, n, 0), 0);
    //  Not UTF-8 at all: continuation bytes only; never below 0.
    assert_int_equal (cli_render_cut ("\x80\x80\x80", 3, 2), 0);
}

static int s_code (int code)
{
    json_t *e = json_pack ("{s:i,s:s}", "code", code, "message", "m");
    int rc = cli_render_exit_code (e);
    json_decref (e);
    return rc;
}

static void test_exit_code (void **state)
{
    (void)state;
    assert_int_equal (s_code (-32602), CLI_USAGE);
    assert_int_equal (s_code (-32000), CLI_REFUSED);
    assert_int_equal (s_code (-32002), CLI_REFUSED);
    assert_int_equal (s_code (-32005), CLI_REFUSED);
    assert_int_equal (s_code (-32011), CLI_UNREACHABLE);
    assert_int_equal (s_code (-32003), CLI_FAIL); //  capacity: retry later
    assert_int_equal (s_code (-32603), CLI_FAIL);
    assert_int_equal (s_code (-32012), CLI_FAIL);
    assert_int_equal (cli_render_exit_code (NULL), CLI_FAIL);
    json_t *e = json_pack ("{s:s}", "code", "-32000"); //  a string is no code
    assert_int_equal (cli_render_exit_code (e), CLI_FAIL);
    json_decref (e);
}

int main (void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test (test_str),       cmocka_unit_test (test_plan_mark),
        cmocka_unit_test (test_tool_text), cmocka_unit_test (test_clean),
        cmocka_unit_test (test_cut),       cmocka_unit_test (test_exit_code),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
