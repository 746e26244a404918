/*  test_gw_auth.c - API keys: format, hashing, constant-time compare, and
    finding the key a request presents. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/evp.h>

#include "cm_error.h"
#include "gw_auth.h"

//  The key whose random part is the bytes 0..31, and the SHA-256 of its
//  text (computed independently: printf %s KEY | sha256sum).
#define KEY_0_31  "crl_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8"
#define HASH_0_31 "abe840fb9260440b86742c0b01376e47406f8942448afada20187715c477700b"

static void hex (const uint8_t *b, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++) sprintf (out + 2 * i, "%02x", b[i]);
}

/* ---------------------------------------------------------------- */
/*  Hashing                                                          */

static void test_sha256_vectors (void **state)
{
    //  FIPS 180-2 / NIST examples.
    static const struct {
        const char *in, *out;
    } v[] = {
        {"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
        {"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
        {"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
         "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"},
    };
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        uint8_t h[GW_AUTH_HASH_LEN];
        char text[2 * GW_AUTH_HASH_LEN + 1];
        assert_int_equal (gw_auth_sha256 (v[i].in, strlen (v[i].in), h), 0);
        hex (h, sizeof h, text);
        assert_string_equal (text, v[i].out);
    }
    //  One million 'a'.
    char *mil = malloc (1000000);
    memset (mil, 'a', 1000000);
    uint8_t h[GW_AUTH_HASH_LEN];
    char text[2 * GW_AUTH_HASH_LEN + 1];
    assert_int_equal (gw_auth_sha256 (mil, 1000000, h), 0);
    hex (h, sizeof h, text);
    assert_string_equal (
        text, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
    free (mil);
}

static void test_key_hash_is_sha256_of_text (void **state)
{
    uint8_t h[GW_AUTH_HASH_LEN];
    char text[2 * GW_AUTH_HASH_LEN + 1];
    assert_int_equal (gw_auth_key_hash (KEY_0_31, h), 0);
    hex (h, sizeof h, text);
    assert_string_equal (text, HASH_0_31);
    //  A malformed key is not hashed.
    assert_int_equal (gw_auth_key_hash ("crl_short", h), CM_E_INVALID);
    assert_int_equal (gw_auth_key_hash ("", h), CM_E_INVALID);
}

static void test_hash_equal (void **state)
{
    uint8_t a[GW_AUTH_HASH_LEN], b[GW_AUTH_HASH_LEN];
    assert_int_equal (gw_auth_key_hash (KEY_0_31, a), 0);
    memcpy (b, a, sizeof a);
    assert_true (gw_auth_hash_equal (a, b));
    //  Differences at the first and the last byte are both seen.
    b[0] ^= 1;
    assert_false (gw_auth_hash_equal (a, b));
    b[0] ^= 1;
    b[GW_AUTH_HASH_LEN - 1] ^= 0x80;
    assert_false (gw_auth_hash_equal (a, b));
    uint8_t zero[GW_AUTH_HASH_LEN] = {0};
    assert_false (gw_auth_hash_equal (a, zero));
    assert_true (gw_auth_hash_equal (zero, zero));
}

/* ---------------------------------------------------------------- */
/*  Generation and format                                            */

static void test_generate_format_and_encoding (void **state)
{
    for (int i = 0; i < 200; i++) {
        char key[GW_AUTH_KEY_BUF];
        assert_int_equal (gw_auth_key_generate (key), 0);
        assert_int_equal (strlen (key), GW_AUTH_KEY_LEN);
        assert_memory_equal (key, "crl_", 4);
        assert_int_equal (gw_auth_key_check (key, NULL, 0), 0);
        //  The text is exactly the unpadded base64url of 32 bytes: OpenSSL's
        //  own encoder, given the decoded bytes, writes the same characters.
        uint8_t raw[GW_AUTH_RAW_LEN];
        assert_int_equal (gw_auth_key_decode (key, raw), 0);
        unsigned char std[64];
        int n = EVP_EncodeBlock (std, raw, sizeof raw);
        assert_int_equal (n, 44);
        assert_int_equal (std[43], '=');
        for (int j = 0; j < 43; j++) {
            char c = (char)(std[j] == '+' ? '-' : std[j] == '/' ? '_' : std[j]);
            assert_int_equal (c, key[4 + j]);
        }
    }
}

static void test_generate_unique_and_256_bits (void **state)
{
    //  1000 keys: all distinct, and every one of the 256 bit positions is
    //  set in 40..60 % of them (a 6-sigma band: a stuck or missing bit,
    //  e.g. only 128 random bits, fails).
    enum { N = 1000 };
    char (*keys)[GW_AUTH_KEY_BUF] = calloc (N, sizeof *keys);
    unsigned ones[256] = {0};
    for (int i = 0; i < N; i++) {
        assert_int_equal (gw_auth_key_generate (keys[i]), 0);
        uint8_t raw[GW_AUTH_RAW_LEN];
        assert_int_equal (gw_auth_key_decode (keys[i], raw), 0);
        for (int b = 0; b < 256; b++) ones[b] += raw[b / 8] >> (b % 8) & 1;
    }
    for (int i = 0; i < N; i++)
        for (int j = i + 1; j < N; j++) assert_string_not_equal (keys[i], keys[j]);
    for (int b = 0; b < 256; b++) {
        assert_in_range (ones[b], 400, 600);
    }
    free (keys);
}

static void test_key_check (void **state)
{
    char err[200];
    assert_int_equal (gw_auth_key_check (KEY_0_31, err, sizeof err), 0);
    //  All-zero and all-one random parts are well-formed too.
    assert_int_equal (
        gw_auth_key_check ("crl_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", NULL, 0),
        0);
    assert_int_equal (
        gw_auth_key_check ("crl___________________________________________8", NULL, 0),
        0);

    static const char *const bad[] = {
        NULL,
        "",
        "crl_",
        "abc_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8",  //  prefix
        "CRL_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8",  //  prefix case
        "crl_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh",   //  one short
        "crl_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8A", //  one long
        "crl_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=", //  padding
        "crl_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwd+h8",  //  standard b64
        "crl_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwd/h8",
        "crl_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwd h8",
        "crl_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwd\xc3\xa9"
        "8",
        "crl_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh9", //  non-canonical last
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = '\0';
        assert_int_equal (gw_auth_key_check (bad[i], err, sizeof err), CM_E_INVALID);
        assert_true (strlen (err) > 0);
        //  The message never quotes the value.
        if (bad[i] && strlen (bad[i]) > 8) assert_null (strstr (err, bad[i] + 4));
    }
    uint8_t raw[GW_AUTH_RAW_LEN];
    assert_int_equal (gw_auth_key_decode ("crl_x", raw), CM_E_INVALID);
    assert_int_equal (gw_auth_key_decode (KEY_0_31, raw), 0);
    for (int i = 0; i < GW_AUTH_RAW_LEN; i++) assert_int_equal (raw[i], i);
}

/* ---------------------------------------------------------------- */
/*  Extraction                                                       */

//  Extract from req, expect rc; on success the key and its source.
static void expect (const gw_auth_request_t *req, int rc, const char *key,
                    gw_auth_src_t src)
{
    char out[GW_AUTH_KEY_BUF] = "junk";
    char err[256] = "junk";
    gw_auth_src_t got = (gw_auth_src_t)99;
    int r = gw_auth_extract (req, out, &got, err, sizeof err);
    if (r != rc)
        fail_msg ("expected %s, got %s (%s)", cm_errname (rc), cm_errname (r), err);
    if (rc == 0) {
        assert_string_equal (out, key);
        assert_int_equal (got, src);
        assert_string_equal (err, "");
    } else {
        assert_string_equal (out, "");
        assert_int_equal (got, GW_AUTH_SRC_NONE);
        assert_true (strlen (err) > 0);
        //  No error message ever carries a presented key (or its body).
        assert_null (strstr (err, "AAECAwQFBgcICQoLDA0O"));
    }
}

static void test_extract_each_place (void **state)
{
    const char *k = KEY_0_31;
    expect (&(gw_auth_request_t){.authorization = "Bearer " KEY_0_31}, 0, k,
            GW_AUTH_SRC_BEARER);
    //  Scheme in any case, extra whitespace around.
    expect (&(gw_auth_request_t){.authorization = "  bEaReR \t " KEY_0_31 "  "}, 0, k,
            GW_AUTH_SRC_BEARER);
    expect (&(gw_auth_request_t){.x_api_key = KEY_0_31}, 0, k, GW_AUTH_SRC_X_API_KEY);
    expect (&(gw_auth_request_t){.x_api_key = " " KEY_0_31 "\t"}, 0, k,
            GW_AUTH_SRC_X_API_KEY);
    expect (&(gw_auth_request_t){.query = "token=" KEY_0_31}, 0, k, GW_AUTH_SRC_QUERY);
    //  Among other parameters, including ones whose names start alike.
    expect (&(gw_auth_request_t){.query = "a=1&tokens=x&xtoken=y&token=" KEY_0_31 "&b="},
            0, k, GW_AUTH_SRC_QUERY);
    //  URL-encoded (every character escaped, both hex cases).
    expect (&(gw_auth_request_t){.query =
                                     "x=%20&token=%63%72%6C%5f" // "crl_"
                                     "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh%38"},
            0, k, GW_AUTH_SRC_QUERY);
    expect (&(gw_auth_request_t){.cookie = "corral_key=" KEY_0_31}, 0, k,
            GW_AUTH_SRC_COOKIE);
    //  Among other cookies, with optional whitespace and quotes.
    expect (&(gw_auth_request_t){.cookie =
                                     "theme=dark; x_corral_key=1;corral_key = \"" KEY_0_31
                                     "\" ; lang=en"},
            0, k, GW_AUTH_SRC_COOKIE);
    //  Several corral_key cookies: the first (most specific path) counts.
    expect (&(gw_auth_request_t){.cookie = "corral_key=" KEY_0_31 "; corral_key=old"}, 0,
            k, GW_AUTH_SRC_COOKIE);
}

static void test_extract_precedence (void **state)
{
    char other[GW_AUTH_KEY_BUF];
    assert_int_equal (gw_auth_key_generate (other), 0);
    char q[100], c[100], b[100];
    snprintf (q, sizeof q, "token=%s", other);
    snprintf (c, sizeof c, "corral_key=%s", other);
    snprintf (b, sizeof b, "Bearer %s", other);

    //  Authorization beats everything.
    expect (&(gw_auth_request_t){.authorization = "Bearer " KEY_0_31,
                                 .x_api_key = other,
                                 .query = q,
                                 .cookie = c},
            0, KEY_0_31, GW_AUTH_SRC_BEARER);
    //  X-API-Key beats the query and the cookie.
    expect (&(gw_auth_request_t){.x_api_key = KEY_0_31, .query = q, .cookie = c}, 0,
            KEY_0_31, GW_AUTH_SRC_X_API_KEY);
    //  The query beats the cookie.
    expect (&(gw_auth_request_t){.query = "token=" KEY_0_31, .cookie = c}, 0, KEY_0_31,
            GW_AUTH_SRC_QUERY);
    //  A query without token, a blank header: not present, the next one decides.
    expect (&(gw_auth_request_t){.authorization = "  ",
                                 .x_api_key = "",
                                 .query = "a=b",
                                 .cookie = "corral_key=" KEY_0_31},
            0, KEY_0_31, GW_AUTH_SRC_COOKIE);
    //  A malformed source that is present decides: no fallback.
    expect (
        &(gw_auth_request_t){.authorization = "Basic dXNlcjpwYXNz", .x_api_key = other},
        CM_E_INVALID, NULL, 0);
    expect (&(gw_auth_request_t){.x_api_key = "crl_nope", .cookie = c}, CM_E_INVALID,
            NULL, 0);
    expect (&(gw_auth_request_t){.query = "token=", .cookie = c}, CM_E_INVALID, NULL, 0);
    (void)b;
}

static void test_extract_malformed (void **state)
{
    //  Nothing at all.
    expect (&(gw_auth_request_t){0}, CM_E_UNAUTHORIZED, NULL, 0);
    expect (&(gw_auth_request_t){.query = "", .cookie = ""}, CM_E_UNAUTHORIZED, NULL, 0);
    expect (&(gw_auth_request_t){.query = "a=1&b=2", .cookie = "theme=dark"},
            CM_E_UNAUTHORIZED, NULL, 0);

    static const char *const bad_auth[] = {
        "Bearer",                                                 //  empty bearer
        "Bearer    ",                                             //  empty bearer, spaces
        "Bearer" KEY_0_31,                                        //  no space
        "Basic " KEY_0_31,                                        //  wrong scheme
        "Token " KEY_0_31,                                        //  wrong scheme
        "Bearer " KEY_0_31 " extra",                              //  two tokens
        "Bearer " KEY_0_31 "A",                                   //  too long
        "Bearer crl_AAECAwQFBgcICQoLDA0O",                        //  too short
        "Bearer crl_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwd*h8", //  bad character
        "Bearer abc_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8", //  wrong prefix
    };
    for (size_t i = 0; i < sizeof bad_auth / sizeof bad_auth[0]; i++)
        expect (&(gw_auth_request_t){.authorization = bad_auth[i]}, CM_E_INVALID, NULL,
                0);

    expect (&(gw_auth_request_t){.x_api_key = "Bearer " KEY_0_31}, CM_E_INVALID, NULL, 0);
    expect (&(gw_auth_request_t){.x_api_key = KEY_0_31 "\n"}, CM_E_INVALID, NULL, 0);

    static const char *const bad_query[] = {
        "token",                              //  no value
        "token=",                             //  empty value
        "token=" KEY_0_31 "&token=" KEY_0_31, //  duplicate
        "token=%",                            //  truncated escape
        "token=%4",                           //  truncated escape
        "token=%zz" KEY_0_31,                 //  bad escape
        "token=%00" KEY_0_31,                 //  NUL
        "token=+" KEY_0_31,                   //  '+' is a space
        "token=" KEY_0_31 "%41",              //  too long after decoding
        "token=crl_"
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    };
    for (size_t i = 0; i < sizeof bad_query / sizeof bad_query[0]; i++)
        expect (&(gw_auth_request_t){.query = bad_query[i]}, CM_E_INVALID, NULL, 0);

    static const char *const bad_cookie[] = {
        "corral_key=",
        "corral_key=\"\"",
        "a=b; corral_key=crl_bad",
        "corral_key=" KEY_0_31 "x",
    };
    for (size_t i = 0; i < sizeof bad_cookie / sizeof bad_cookie[0]; i++)
        expect (&(gw_auth_request_t){.cookie = bad_cookie[i]}, CM_E_INVALID, NULL, 0);
}

static void test_extract_bounds (void **state)
{
    //  A header value at GW_AUTH_INPUT_MAX is parsed; one byte more is
    //  refused whatever it holds, even in a source that would not decide.
    char *big = malloc (GW_AUTH_INPUT_MAX + 2);
    size_t klen = strlen ("corral_key=" KEY_0_31);
    memset (big, 'a', GW_AUTH_INPUT_MAX + 1);
    memcpy (big, "corral_key=" KEY_0_31 ";", klen + 1);
    big[GW_AUTH_INPUT_MAX] = '\0';
    expect (&(gw_auth_request_t){.cookie = big}, 0, KEY_0_31, GW_AUTH_SRC_COOKIE);
    big[GW_AUTH_INPUT_MAX] = 'a';
    big[GW_AUTH_INPUT_MAX + 1] = '\0';
    expect (&(gw_auth_request_t){.cookie = big}, CM_E_TOO_LARGE, NULL, 0);
    expect (&(gw_auth_request_t){.authorization = "Bearer " KEY_0_31, .cookie = big},
            CM_E_TOO_LARGE, NULL, 0);
    expect (&(gw_auth_request_t){.query = big}, CM_E_TOO_LARGE, NULL, 0);
    expect (&(gw_auth_request_t){.authorization = big}, CM_E_TOO_LARGE, NULL, 0);
    free (big);

    //  A NULL err buffer and a NULL src are fine.
    char out[GW_AUTH_KEY_BUF];
    assert_int_equal (
        gw_auth_extract (&(gw_auth_request_t){.x_api_key = KEY_0_31}, out, NULL, NULL, 0),
        0);
    assert_int_equal (gw_auth_extract (&(gw_auth_request_t){0}, out, NULL, NULL, 0),
                      CM_E_UNAUTHORIZED);
    assert_string_equal (gw_auth_src_name (GW_AUTH_SRC_COOKIE), "cookie");
    assert_string_equal (gw_auth_src_name (GW_AUTH_SRC_NONE), "none");
}

int main (void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test (test_sha256_vectors),
        cmocka_unit_test (test_key_hash_is_sha256_of_text),
        cmocka_unit_test (test_hash_equal),
        cmocka_unit_test (test_generate_format_and_encoding),
        cmocka_unit_test (test_generate_unique_and_256_bits),
        cmocka_unit_test (test_key_check),
        cmocka_unit_test (test_extract_each_place),
        cmocka_unit_test (test_extract_precedence),
        cmocka_unit_test (test_extract_malformed),
        cmocka_unit_test (test_extract_bounds),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
