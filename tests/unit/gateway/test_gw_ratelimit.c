/*  test_gw_ratelimit.c - the per-key token bucket and the per-IP
    connection counter, on a clock the test drives. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <arpa/inet.h>
#include <cmocka.h>
#include <netinet/in.h>

#include "cm_error.h"
#include "gw_ratelimit.h"

#define T0 1000000 //  an arbitrary monotonic start

/* ---------------------------------------------------------------- */
/*  Token bucket                                                     */

static void test_bucket_burst_then_limit (void **state)
{
    gw_bucket_t b;
    assert_int_equal (gw_ratelimit_init (&b, 10, 5, T0), 0);
    int64_t retry = -1;
    //  The whole burst at once: exactly 5 pass, the 6th is refused.
    for (int i = 0; i < 5; i++) assert_int_equal (gw_ratelimit_take (&b, T0, &retry), 0);
    assert_int_equal (retry, 0);
    assert_int_equal (gw_ratelimit_take (&b, T0, &retry), CM_E_RATE_LIMITED);
    //  10 per second: one token every 100 ms.
    assert_int_equal (retry, 100);
    assert_int_equal (gw_ratelimit_available (&b, T0), 0);
}

static void test_bucket_refill (void **state)
{
    gw_bucket_t b;
    assert_int_equal (gw_ratelimit_init (&b, 10, 5, T0), 0);
    for (int i = 0; i < 5; i++) assert_int_equal (gw_ratelimit_take (&b, T0, NULL), 0);
    int64_t retry;
    //  Just before the token is due: refused, 1 ms to go.
    assert_int_equal (gw_ratelimit_take (&b, T0 + 99, &retry), CM_E_RATE_LIMITED);
    assert_int_equal (retry, 1);
    //  At the limit: exactly one passes, the next waits a full interval.
    assert_int_equal (gw_ratelimit_take (&b, T0 + 100, &retry), 0);
    assert_int_equal (gw_ratelimit_take (&b, T0 + 100, &retry), CM_E_RATE_LIMITED);
    assert_int_equal (retry, 100);
    //  Partial progress is kept: 250 ms later 2.5 tokens are there.
    assert_int_equal (gw_ratelimit_available (&b, T0 + 350), 2);
    assert_int_equal (gw_ratelimit_take (&b, T0 + 350, NULL), 0);
    assert_int_equal (gw_ratelimit_take (&b, T0 + 350, NULL), 0);
    assert_int_equal (gw_ratelimit_take (&b, T0 + 350, &retry), CM_E_RATE_LIMITED);
    assert_int_equal (retry, 50);
    //  A long idle time fills the bucket to burst, never beyond.
    assert_int_equal (gw_ratelimit_available (&b, T0 + 3600 * 1000), 5);
    assert_int_equal (gw_ratelimit_available (&b, INT64_MAX / 2), 5);
}

static void test_bucket_sustained_rate (void **state)
{
    //  Taking as fast as allowed for 10 s at 7/s with burst 3 gives
    //  exactly burst + 10 * rate.
    gw_bucket_t b;
    assert_int_equal (gw_ratelimit_init (&b, 7, 3, T0), 0);
    int passed = 0;
    for (int64_t t = T0; t <= T0 + 10000; t++)
        while (gw_ratelimit_take (&b, t, NULL) == 0) passed++;
    assert_int_equal (passed, 3 + 70);
}

static void test_bucket_clock_backwards_and_bad_args (void **state)
{
    gw_bucket_t b;
    assert_int_equal (gw_ratelimit_init (&b, 1, 1, T0), 0);
    assert_int_equal (gw_ratelimit_take (&b, T0, NULL), 0);
    //  The clock stepping back adds nothing, and is not remembered.
    assert_int_equal (gw_ratelimit_take (&b, T0 - 5000, NULL), CM_E_RATE_LIMITED);
    int64_t retry;
    assert_int_equal (gw_ratelimit_take (&b, T0 + 999, &retry), CM_E_RATE_LIMITED);
    assert_int_equal (retry, 1);
    assert_int_equal (gw_ratelimit_take (&b, T0 + 1000, NULL), 0);

    assert_int_equal (gw_ratelimit_init (&b, 0, 1, T0), CM_E_INVALID);
    assert_int_equal (gw_ratelimit_init (&b, 1, 0, T0), CM_E_INVALID);
    assert_int_equal (gw_ratelimit_init (&b, GW_RATELIMIT_RATE_MAX + 1, 1, T0),
                      CM_E_INVALID);
    assert_int_equal (gw_ratelimit_init (&b, 1, GW_RATELIMIT_BURST_MAX + 1, T0),
                      CM_E_INVALID);
    //  The largest settings work and do not overflow.
    assert_int_equal (
        gw_ratelimit_init (&b, GW_RATELIMIT_RATE_MAX, GW_RATELIMIT_BURST_MAX, T0), 0);
    assert_int_equal (gw_ratelimit_available (&b, INT64_MAX), GW_RATELIMIT_BURST_MAX);
}

/* ---------------------------------------------------------------- */
/*  Connections per IP                                               */

static void test_ip_cap (void **state)
{
    gw_iplimit_t *lim = gw_iplimit_new (3, 100);
    assert_non_null (lim);
    gw_ip_key_t a, b;
    assert_int_equal (gw_ip_key_from_text ("192.0.2.1", &a), 0);
    assert_int_equal (gw_ip_key_from_text ("2001:db8::1", &b), 0);
    //  Up to the cap, then one past it is refused and not counted.
    for (int i = 0; i < 3; i++) assert_int_equal (gw_iplimit_acquire (lim, &a), 0);
    assert_int_equal (gw_iplimit_acquire (lim, &a), CM_E_CAPACITY);
    assert_int_equal (gw_iplimit_count (lim, &a), 3);
    //  Another address has its own allowance.
    assert_int_equal (gw_iplimit_acquire (lim, &b), 0);
    assert_int_equal (gw_iplimit_size (lim), 2);
    //  Releasing one makes room for exactly one.
    assert_int_equal (gw_iplimit_release (lim, &a), 0);
    assert_int_equal (gw_iplimit_count (lim, &a), 2);
    assert_int_equal (gw_iplimit_acquire (lim, &a), 0);
    assert_int_equal (gw_iplimit_acquire (lim, &a), CM_E_CAPACITY);
    //  Down to zero the address is forgotten; one more release is an error.
    for (int i = 0; i < 3; i++) assert_int_equal (gw_iplimit_release (lim, &a), 0);
    assert_int_equal (gw_iplimit_count (lim, &a), 0);
    assert_int_equal (gw_iplimit_size (lim), 1);
    assert_int_equal (gw_iplimit_release (lim, &a), CM_E_NOT_FOUND);
    gw_iplimit_destroy (&lim);
    assert_null (lim);
    gw_iplimit_destroy (&lim); //  idempotent
}

static void test_ip_table_bound (void **state)
{
    //  At most max_ips addresses are tracked; a new one past that is
    //  refused, a known one still counts.
    gw_iplimit_t *lim = gw_iplimit_new (2, 4);
    gw_ip_key_t k[5];
    char text[32];
    for (int i = 0; i < 5; i++) {
        snprintf (text, sizeof text, "10.0.0.%d", i + 1);
        assert_int_equal (gw_ip_key_from_text (text, &k[i]), 0);
    }
    for (int i = 0; i < 4; i++) assert_int_equal (gw_iplimit_acquire (lim, &k[i]), 0);
    assert_int_equal (gw_iplimit_acquire (lim, &k[4]), CM_E_CAPACITY);
    assert_int_equal (gw_iplimit_acquire (lim, &k[0]), 0);
    assert_int_equal (gw_iplimit_release (lim, &k[3]), 0);
    assert_int_equal (gw_iplimit_acquire (lim, &k[4]), 0);
    gw_iplimit_destroy (&lim);

    assert_null (gw_iplimit_new (0, 4));
    assert_null (gw_iplimit_new (1, 0));
}

static gw_ip_key_t ip (int i)
{
    char text[32];
    gw_ip_key_t k;
    snprintf (text, sizeof text, "10.1.%d.%d", i / 250, i % 250 + 1);
    assert_int_equal (gw_ip_key_from_text (text, &k), 0);
    return k;
}

static void test_ip_buckets (void **state)
{
    //  Each address has its own bucket: 3 now, then 2 per second.
    gw_ipbuckets_t *t = gw_ipbuckets_new (2, 3, 100);
    assert_non_null (t);
    gw_ip_key_t a = ip (1), b = ip (2);
    int64_t retry = 0;
    for (int i = 0; i < 3; i++)
        assert_int_equal (gw_ipbuckets_take (t, &a, 1000, NULL), 0);
    assert_int_equal (gw_ipbuckets_take (t, &a, 1000, &retry), CM_E_RATE_LIMITED);
    assert_int_equal (retry, 500);
    assert_int_equal (gw_ipbuckets_take (t, &b, 1000, NULL), 0); //  another address
    assert_int_equal (gw_ipbuckets_take (t, &a, 1499, NULL), CM_E_RATE_LIMITED);
    assert_int_equal (gw_ipbuckets_take (t, &a, 1500, NULL), 0);

    //  A sweep forgets addresses whose bucket is full again, and only those;
    //  a forgotten address starts over with a full bucket.
    assert_int_equal (gw_ipbuckets_sweep (t, 1499), 2); //  b has 2.998 of 3
    assert_int_equal (gw_ipbuckets_sweep (t, 1500), 1); //  b full again, a empty
    assert_int_equal (gw_ipbuckets_sweep (t, 2999), 1);
    assert_int_equal (gw_ipbuckets_sweep (t, 3000), 0);
    for (int i = 0; i < 3; i++)
        assert_int_equal (gw_ipbuckets_take (t, &a, 3000, NULL), 0);
    assert_int_equal (gw_ipbuckets_take (t, &a, 3000, NULL), CM_E_RATE_LIMITED);
    gw_ipbuckets_destroy (&t);
    assert_null (t);
    gw_ipbuckets_destroy (&t); //  idempotent

    assert_null (gw_ipbuckets_new (0, 3, 100));
    assert_null (gw_ipbuckets_new (2, 0, 100));
    assert_null (gw_ipbuckets_new (2, 3, 0));
}

static void test_ip_buckets_table_bound (void **state)
{
    //  A full table sweeps first; if every address is still limited, a new
    //  one passes untracked (never limited), and the tracked ones stay so.
    gw_ipbuckets_t *t = gw_ipbuckets_new (1, 1, 3);
    gw_ip_key_t k[5];
    for (int i = 0; i < 5; i++) k[i] = ip (i);
    for (int i = 0; i < 3; i++)
        assert_int_equal (gw_ipbuckets_take (t, &k[i], 0, NULL), 0);
    for (int n = 0; n < 5; n++)
        assert_int_equal (gw_ipbuckets_take (t, &k[3], 0, NULL), 0);
    assert_int_equal (gw_ipbuckets_take (t, &k[0], 0, NULL), CM_E_RATE_LIMITED);
    assert_int_equal (gw_ipbuckets_sweep (t, 0), 3);
    //  Once k[0]..k[2] refilled, the sweep a new address causes makes room.
    assert_int_equal (gw_ipbuckets_take (t, &k[4], 1000, NULL), 0);
    assert_int_equal (gw_ipbuckets_take (t, &k[4], 1000, NULL), CM_E_RATE_LIMITED);
    assert_int_equal (gw_ipbuckets_sweep (t, 1000), 1);
    gw_ipbuckets_destroy (&t);
}

static void test_ip_buckets_full_sweep_throttled (void **state)
{
    //  A full table sweeps for a new address at most every 100 ms: between
    //  two such sweeps new addresses pass untracked even when old buckets
    //  have refilled (1 token per ms here).
    gw_ipbuckets_t *t = gw_ipbuckets_new (1000, 1, 2);
    gw_ip_key_t k[4];
    for (int i = 0; i < 4; i++) k[i] = ip (i);
    assert_int_equal (gw_ipbuckets_take (t, &k[0], 0, NULL), 0);
    assert_int_equal (gw_ipbuckets_take (t, &k[1], 0, NULL), 0);
    assert_int_equal (gw_ipbuckets_take (t, &k[2], 0, NULL), 0); //  swept at 0: untracked
    for (int n = 0; n < 3; n++) //  refilled, but no sweep yet: untracked
        assert_int_equal (gw_ipbuckets_take (t, &k[3], 5, NULL), 0);
    assert_int_equal (gw_ipbuckets_take (t, &k[3], 100, NULL), 0); //  swept: tracked
    assert_int_equal (gw_ipbuckets_take (t, &k[3], 100, NULL), CM_E_RATE_LIMITED);
    gw_ipbuckets_destroy (&t);
}

static void test_ip_keys (void **state)
{
    gw_ip_key_t t4, t4m, s4, s6, t6;
    assert_int_equal (gw_ip_key_from_text ("198.51.100.7", &t4), 0);
    assert_int_equal (gw_ip_key_from_text ("::ffff:198.51.100.7", &t4m), 0);
    assert_memory_equal (t4.b, t4m.b, GW_IP_KEY_LEN); //  same peer

    struct sockaddr_in in = {.sin_family = AF_INET, .sin_port = htons (5555)};
    inet_pton (AF_INET, "198.51.100.7", &in.sin_addr);
    assert_int_equal (gw_ip_key_from_sockaddr ((struct sockaddr *)&in, sizeof in, &s4),
                      0);
    assert_memory_equal (t4.b, s4.b, GW_IP_KEY_LEN); //  the port does not matter

    struct sockaddr_in6 in6 = {.sin6_family = AF_INET6};
    inet_pton (AF_INET6, "2001:db8::42", &in6.sin6_addr);
    assert_int_equal (gw_ip_key_from_sockaddr ((struct sockaddr *)&in6, sizeof in6, &s6),
                      0);
    assert_int_equal (gw_ip_key_from_text ("2001:db8::42", &t6), 0);
    assert_memory_equal (t6.b, s6.b, GW_IP_KEY_LEN);

    gw_ip_key_t k;
    assert_int_equal (gw_ip_key_from_text ("", &k), CM_E_INVALID);
    assert_int_equal (gw_ip_key_from_text ("999.1.1.1", &k), CM_E_INVALID);
    assert_int_equal (gw_ip_key_from_text ("example.com", &k), CM_E_INVALID);
    assert_int_equal (gw_ip_key_from_text (NULL, &k), CM_E_INVALID);
    assert_int_equal (gw_ip_key_from_sockaddr ((struct sockaddr *)&in, 4, &k),
                      CM_E_INVALID);
    struct sockaddr un = {.sa_family = AF_UNIX};
    assert_int_equal (gw_ip_key_from_sockaddr (&un, sizeof un, &k), CM_E_INVALID);
}

int main (void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test (test_bucket_burst_then_limit),
        cmocka_unit_test (test_bucket_refill),
        cmocka_unit_test (test_bucket_sustained_rate),
        cmocka_unit_test (test_bucket_clock_backwards_and_bad_args),
        cmocka_unit_test (test_ip_cap),
        cmocka_unit_test (test_ip_table_bound),
        cmocka_unit_test (test_ip_buckets),
        cmocka_unit_test (test_ip_buckets_table_bound),
        cmocka_unit_test (test_ip_buckets_full_sweep_throttled),
        cmocka_unit_test (test_ip_keys),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
