/*  test_sess_budget.c - the budget arithmetic and its messages: what
    counts, where the limit is (reached = spent), which budget is named,
    and the words a person reads.
*/
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <string.h>

#include "sess.h"

static void test_tokens_count_input_and_output (void **state)
{
    proto_usage_t u = {.input_tokens = 600,
                       .output_tokens = 400,
                       .cache_tokens = 300, //  part of the input: not counted twice
                       .cost_micros = 7,
                       .model_calls = 3};
    assert_int_equal (sess_budget_tokens (&u), 1000);
    assert_int_equal (sess_budget_tokens (NULL), 0);
}

static void test_tokens_at_and_past_the_limit (void **state)
{
    char msg[400] = "";
    proto_usage_t u = {.input_tokens = 9999};
    //  No budget, or one not reached: nothing.
    assert_int_equal (sess_budget_over (&u, 0, 0, "session", false, msg, sizeof msg), 0);
    assert_int_equal (sess_budget_over (&u, 10000, 0, "session", false, msg, sizeof msg),
                      0);
    assert_string_equal (msg, "");
    //  Reached exactly: spent (the next turn could only go past it).
    u.output_tokens = 1;
    assert_int_equal (sess_budget_over (&u, 10000, 0, "session", false, msg, sizeof msg),
                      1);
    assert_string_equal (msg, "budget exceeded: this session used 10 000 of its 10 000 "
                              "tokens; raise the budget or start a new session");
    u.output_tokens = 513;
    assert_int_equal (sess_budget_over (&u, 10000, 0, "session", false, msg, sizeof msg),
                      1);
    assert_string_equal (msg, "budget exceeded: this session used 10 512 of its 10 000 "
                              "tokens; raise the budget or start a new session");
    assert_int_equal (sess_budget_over (NULL, 1, 1, "session", false, msg, sizeof msg),
                      0);
}

static void test_cost_and_key_words (void **state)
{
    char msg[400];
    proto_usage_t u = {.input_tokens = 10, .cost_micros = 2000};
    assert_int_equal (sess_budget_over (&u, 0, 2001, "key", false, msg, sizeof msg), 0);
    assert_int_equal (sess_budget_over (&u, 0, 1500, "key", true, msg, sizeof msg), 1);
    assert_string_equal (msg, "budget exceeded during the turn: this API key cost $0.002 "
                              "of its $0.0015 budget; the turn was stopped; raise the "
                              "key's budget or use another key");
    //  Tokens are named first when both are spent.
    assert_int_equal (sess_budget_over (&u, 5, 1500, "key", false, msg, sizeof msg), 1);
    assert_string_equal (msg, "budget exceeded: this API key used 10 of its 5 tokens; "
                              "raise the key's budget or use another key");
    //  Big numbers group by thousands; a short buffer truncates safely.
    u.input_tokens = 1234567890123ull;
    assert_int_equal (sess_budget_over (&u, 1000000, 0, "session", true, msg, sizeof msg),
                      1);
    assert_non_null (strstr (msg, "used 1 234 567 890 123 of its 1 000 000 tokens"));
    char tiny[16];
    assert_int_equal (sess_budget_over (&u, 1, 0, "session", false, tiny, sizeof tiny),
                      1);
    assert_int_equal (strlen (tiny), sizeof tiny - 1);
}

static void test_parse_usd (void **state)
{
    int64_t m = -1;
    assert_int_equal (sess_budget_parse_usd ("0.50", &m), 0);
    assert_int_equal (m, 500000);
    assert_int_equal (sess_budget_parse_usd (NULL, &m), 0);
    assert_int_equal (m, 0);
    assert_int_equal (sess_budget_parse_usd ("half", &m), CM_E_INVALID);
}

int main (void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test (test_tokens_count_input_and_output),
        cmocka_unit_test (test_tokens_at_and_past_the_limit),
        cmocka_unit_test (test_cost_and_key_words),
        cmocka_unit_test (test_parse_usd),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
