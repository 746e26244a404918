/*  test_wrk_cost.c - price tables: loading and its refusals, lookup by
    exact name, prefix and "*", cost rounding, and counters that saturate
    instead of wrapping. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cm_error.h"
#include "wrk_cost.h"

static wrk_prices_t *s_load (const char *text)
{
    wrk_prices_t *prices = NULL;
    char err[256] = "";
    int rc = wrk_prices_load (text, strlen (text), &prices, err, sizeof err);
    if (rc) fprintf (stderr, "load failed: %s\n", err);
    assert_int_equal (rc, 0);
    assert_non_null (prices);
    return prices;
}

static void s_refused (const char *text, int code, const char *needle)
{
    wrk_prices_t *prices = (wrk_prices_t *)1;
    char err[256] = "";
    assert_int_equal (wrk_prices_load (text, strlen (text), &prices, err, sizeof err),
                      code);
    assert_null (prices);
    if (!strstr (err, needle)) fprintf (stderr, "message: %s\n", err);
    assert_non_null (strstr (err, needle));
}

static uint64_t s_cost (const wrk_prices_t *prices, const char *model, uint64_t in,
                        uint64_t cache, uint64_t out)
{
    wrk_usage_t usage = {.input_tokens = in, .cache_tokens = cache, .output_tokens = out};
    return wrk_prices_charge (prices, model, &usage);
}

static void test_default_table (void **state)
{
    wrk_prices_t *prices = wrk_prices_new_default ();
    assert_non_null (prices);
    assert_true (wrk_prices_size (prices) >= 10);
    //  Dated versions fall to their family by prefix ...
    assert_string_equal (wrk_prices_find (prices, "gpt-4o-2024-08-06")->name, "gpt-4o");
    //  ... and the longest prefix wins over a shorter one.
    assert_string_equal (wrk_prices_find (prices, "gpt-4o-mini-2024-07-18")->name,
                         "gpt-4o-mini");
    assert_string_equal (wrk_prices_find (prices, "claude-opus-4-1-20250805")->name,
                         "claude-opus-4");
    assert_string_equal (wrk_prices_find (prices, "claude-opus-4-5-20251101")->name,
                         "claude-opus-4-5");
    assert_string_equal (wrk_prices_find (prices, "claude-sonnet-4-5")->name,
                         "claude-sonnet-4");
    //  Unknown models are free, not guessed.
    const wrk_price_t *other = wrk_prices_find (prices, "llama3.1:8b");
    assert_string_equal (other->name, "*");
    assert_int_equal (s_cost (prices, "llama3.1:8b", 1000000, 0, 1000000), 0);
    //  gpt-4o: 1M fresh input 2.5 $, 1M cached 1.25 $, 1M output 10 $.
    assert_int_equal (s_cost (prices, "gpt-4o", 2000000, 1000000, 1000000), 13750000);
    wrk_prices_destroy (&prices);
    assert_null (prices);
    wrk_prices_destroy (&prices);
}

static void test_lookup_order (void **state)
{
    wrk_prices_t *prices = s_load ("{\"m\":{\"input\":1,\"output\":1},"
                                   "\"m-large\":{\"input\":2,\"output\":2},"
                                   "\"m-large-v2\":{\"input\":3,\"output\":3},"
                                   "\"*\":{\"input\":9,\"output\":9}}");
    assert_int_equal (wrk_prices_size (prices), 4);
    assert_string_equal (wrk_prices_find (prices, "m")->name, "m");
    assert_string_equal (wrk_prices_find (prices, "m-large")->name, "m-large");
    assert_string_equal (wrk_prices_find (prices, "m-large-v2")->name, "m-large-v2");
    assert_string_equal (wrk_prices_find (prices, "m-large-v3")->name, "m-large");
    assert_string_equal (wrk_prices_find (prices, "m-small")->name, "m");
    assert_string_equal (wrk_prices_find (prices, "M")->name, "*"); //  case matters
    assert_string_equal (wrk_prices_find (prices, "")->name, "*");
    assert_int_equal (wrk_prices_find (prices, "other")->input, 9000000);
    wrk_prices_destroy (&prices);

    //  No "*": nothing matches means free.
    prices = s_load ("{\"m\":{\"input\":1,\"output\":1}}");
    const wrk_price_t *none = wrk_prices_find (prices, "x");
    assert_string_equal (none->name, "*");
    assert_int_equal (none->input + none->output + none->cache, 0);
    wrk_prices_destroy (&prices);
}

static void test_load_values (void **state)
{
    //  cache defaults to the input price; integers and reals both work;
    //  prices keep six decimals.
    wrk_prices_t *prices =
        s_load ("{\"a\":{\"input\":0.075,\"output\":3},\"b\":{\"input\":1,\"output\":"
                "2,\"cache\":0.000001},\"c\":{\"input\":100000,\"output\":0}}");
    const wrk_price_t *a = wrk_prices_find (prices, "a");
    assert_int_equal (a->input, 75000);
    assert_int_equal (a->cache, 75000);
    assert_int_equal (a->output, 3000000);
    assert_int_equal (wrk_prices_find (prices, "b")->cache, 1);
    assert_int_equal (wrk_prices_find (prices, "c")->input, 100000000000ull);
    wrk_prices_destroy (&prices);
    prices = s_load ("{}");
    assert_int_equal (wrk_prices_size (prices), 0);
    wrk_prices_destroy (&prices);
}

static void test_load_refusals (void **state)
{
    s_refused ("{\"a\":", CM_E_INVALID, "not JSON");
    s_refused ("[]", CM_E_INVALID, "must be an object");
    s_refused ("{\"a\":5}", CM_E_INVALID, "\"a\" must be an object");
    s_refused ("{\"a\":{\"input\":1}}", CM_E_INVALID, "\"output\" is missing");
    s_refused ("{\"a\":{\"input\":1,\"ouput\":1}}", CM_E_INVALID,
               "unknown key \"ouput\"");
    s_refused ("{\"a\":{\"input\":-1,\"output\":1}}", CM_E_INVALID, "from 0 to");
    s_refused ("{\"a\":{\"input\":100000.01,\"output\":1}}", CM_E_INVALID, "from 0 to");
    s_refused ("{\"a\":{\"input\":\"2.5\",\"output\":1}}", CM_E_INVALID,
               "\"input\" must be a number");
    s_refused ("{\"a\":{\"input\":1,\"output\":1,\"cache\":null}}", CM_E_INVALID,
               "\"cache\" must be a number");
    s_refused ("{\"\":{\"input\":1,\"output\":1}}", CM_E_INVALID, "empty model name");
    s_refused ("{\"a\":{\"input\":1,\"output\":1},\"a\":{\"input\":1,\"output\":1}}",
               CM_E_INVALID, "not JSON");

    //  A name at the limit loads; one byte more does not.
    char text[512], name[WRK_PRICE_MAX_NAME + 2];
    memset (name, 'n', sizeof name - 1);
    name[WRK_PRICE_MAX_NAME] = '\0';
    snprintf (text, sizeof text, "{\"%s\":{\"input\":1,\"output\":1}}", name);
    wrk_prices_t *prices = s_load (text);
    assert_string_equal (wrk_prices_find (prices, name)->name, name);
    wrk_prices_destroy (&prices);
    name[WRK_PRICE_MAX_NAME] = 'n';
    name[WRK_PRICE_MAX_NAME + 1] = '\0';
    snprintf (text, sizeof text, "{\"%s\":{\"input\":1,\"output\":1}}", name);
    s_refused (text, CM_E_TOO_LARGE, "longer than");

    //  WRK_PRICE_MAX_ENTRIES models load; one more does not.
    size_t cap = 64 * (WRK_PRICE_MAX_ENTRIES + 2), len = 0;
    char *big = malloc (cap);
    assert_non_null (big);
    for (int n = WRK_PRICE_MAX_ENTRIES; n <= WRK_PRICE_MAX_ENTRIES + 1; n++) {
        len = (size_t)snprintf (big, cap, "{");
        for (int i = 0; i < n; i++)
            len += (size_t)snprintf (big + len, cap - len,
                                     "%s\"m%d\":{\"input\":1,\"output\":1}", i ? "," : "",
                                     i);
        snprintf (big + len, cap - len, "}");
        if (n == WRK_PRICE_MAX_ENTRIES) {
            prices = s_load (big);
            assert_int_equal (wrk_prices_size (prices), WRK_PRICE_MAX_ENTRIES);
            wrk_prices_destroy (&prices);
        } else
            s_refused (big, CM_E_TOO_LARGE, "more than");
    }
    free (big);
    prices = (wrk_prices_t *)1;
    assert_int_equal (wrk_prices_load ("{}", WRK_PRICE_MAX_TEXT + 1, &prices, NULL, 0),
                      CM_E_TOO_LARGE);
    assert_null (prices);
}

static void test_rounding (void **state)
{
    wrk_prices_t *prices =
        s_load ("{\"half\":{\"input\":2.5,\"output\":0.5,\"cache\":0.5},"
                "\"small\":{\"input\":0.4,\"output\":0.4}}");
    //  2.5 micro-dollars rounds half up to 3; 0.4 rounds down to 0.
    assert_int_equal (s_cost (prices, "half", 1, 0, 0), 3);
    assert_int_equal (s_cost (prices, "small", 1, 0, 0), 0);
    //  One rounding per call: 0.5 (cached input) + 0.5 (output) = 1, where
    //  rounding each term first would give 2.
    assert_int_equal (s_cost (prices, "half", 1, 1, 1), 1);
    assert_int_equal (s_cost (prices, "small", 1, 0, 1), 1); //  0.8 -> 1
    //  Cache is part of input, and is clamped to it.
    assert_int_equal (s_cost (prices, "half", 1000, 400, 0), 1700); //  600*2.5 + 400*0.5
    assert_int_equal (s_cost (prices, "half", 10, 99, 0), 5);       //  all 10 cached
    wrk_prices_destroy (&prices);

    wrk_price_t p = {.name = "x", .input = 3000000, .cache = 300000, .output = 15000000};
    wrk_usage_t u = {.input_tokens = 1000, .cache_tokens = 400, .output_tokens = 100};
    assert_int_equal (wrk_price_cost (&p, &u), 1800 + 120 + 1500);
}

static void test_big_numbers (void **state)
{
    //  10^13 tokens at 15 $/M: the naive product (1.5 * 10^20) would
    //  overflow; the split gives the exact 1.5 * 10^14 micro-dollars.
    wrk_price_t p = {.input = 15000000, .output = 75000000, .cache = 1500000};
    wrk_usage_t u = {.input_tokens = 10000000000000ull};
    assert_int_equal (wrk_price_cost (&p, &u), 150000000000000ull);
    u.output_tokens = 10000000000000ull;
    assert_int_equal (wrk_price_cost (&p, &u), 900000000000000ull);

    //  1 $/M is one micro-dollar per token: exact up to UINT64_MAX.
    wrk_price_t one = {.input = 1000000, .output = 1000000, .cache = 1000000};
    wrk_usage_t all = {.input_tokens = UINT64_MAX};
    assert_true (wrk_price_cost (&one, &all) == UINT64_MAX);
    //  0.5 $/M: (2^64 - 1) / 2 = ...807.5 rounds up.
    wrk_price_t half = {.input = 500000};
    assert_true (wrk_price_cost (&half, &all) == 9223372036854775808ull);
    //  The largest price times the most tokens saturates.
    wrk_price_t max = {.input = 100000000000ull, .output = 100000000000ull};
    all.output_tokens = UINT64_MAX;
    assert_true (wrk_price_cost (&max, &all) == UINT64_MAX);
    wrk_usage_t few = {.output_tokens = 999999};
    assert_true (wrk_price_cost (&max, &few) == 99999900000ull);
}

static void test_usage_add (void **state)
{
    wrk_prices_t *prices = s_load ("{\"m\":{\"input\":1,\"output\":2}}");
    wrk_usage_t turn = {0}, session = {0};
    for (int i = 0; i < 3; i++) {
        wrk_usage_t call = {.input_tokens = 1000,
                            .output_tokens = 500,
                            .cache_tokens = 10,
                            .model_calls = 1};
        assert_int_equal (wrk_prices_charge (prices, "m", &call), 2000);
        assert_int_equal (call.cost_micros, 2000);
        wrk_usage_add (&turn, &call);
    }
    assert_int_equal (turn.input_tokens, 3000);
    assert_int_equal (turn.output_tokens, 1500);
    assert_int_equal (turn.cache_tokens, 30);
    assert_int_equal (turn.cost_micros, 6000);
    assert_int_equal (turn.model_calls, 3);
    wrk_usage_add (&session, &turn);
    wrk_usage_add (&session, &turn);
    assert_int_equal (session.cost_micros, 12000);
    assert_int_equal (session.model_calls, 6);

    wrk_usage_t near = {UINT64_MAX - 1, UINT64_MAX, 5, UINT64_MAX - 10, 1};
    wrk_usage_add (&near, &turn);
    assert_true (near.input_tokens == UINT64_MAX);
    assert_true (near.output_tokens == UINT64_MAX);
    assert_int_equal (near.cache_tokens, 35);
    assert_true (near.cost_micros == UINT64_MAX);
    assert_int_equal (near.model_calls, 4);
    wrk_prices_destroy (&prices);
}

int main (void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test (test_default_table), cmocka_unit_test (test_lookup_order),
        cmocka_unit_test (test_load_values),   cmocka_unit_test (test_load_refusals),
        cmocka_unit_test (test_rounding),      cmocka_unit_test (test_big_numbers),
        cmocka_unit_test (test_usage_add),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
