/*  test_cli_target.c - the gateway URL and API key of the client commands
    (cli/cli_target.h): precedence, URL forms, CORRAL_LISTEN, the key file,
    bad input.
*/
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "cli_target.h"

static char s_dir[64];

static int setup (void **state)
{
    unsetenv ("CORRAL_URL");
    unsetenv ("CORRAL_LISTEN");
    unsetenv ("CORRAL_API_KEY");
    unsetenv ("CORRAL_TLS_CERT");
    snprintf (s_dir, sizeof s_dir, "/tmp/cli-target-XXXXXX");
    assert_non_null (mkdtemp (s_dir));
    setenv ("CORRAL_DATA_DIR", s_dir, 1);
    return 0;
}

static int teardown (void **state)
{
    char path[128];
    snprintf (path, sizeof path, "%s/local-api-key", s_dir);
    unlink (path);
    rmdir (s_dir);
    return 0;
}

static void resolve_ok (cli_target_t *t, const char *url, const char *key)
{
    char err[256] = "";
    int rc = cli_target_resolve (t, url, key, err, sizeof err);
    if (rc) fail_msg ("unexpected error: %s", err);
}

static void test_defaults (void **state)
{
    cli_target_t t;
    resolve_ok (&t, NULL, NULL);
    assert_string_equal (t.http, "http://127.0.0.1:8080");
    assert_string_equal (t.ws, "ws://127.0.0.1:8080/acp");
    assert_string_equal (t.key, "");
    assert_string_equal (t.key_from, "");
}

static void test_url_forms (void **state)
{
    static const char *const cases[][3] = {
        {"http://h:1", "http://h:1", "ws://h:1/acp"},
        {"http://h:1/", "http://h:1", "ws://h:1/acp"},
        {"ws://h:1/acp", "http://h:1", "ws://h:1/acp"},
        {"ws://h:1", "http://h:1", "ws://h:1/acp"},
        {"wss://h/acp/", "https://h", "wss://h/acp"},
        {"https://h/corral", "https://h/corral", "wss://h/corral/acp"},
        {"wss://h/corral/acp", "https://h/corral", "wss://h/corral/acp"},
        {"http://[::1]:8080", "http://[::1]:8080", "ws://[::1]:8080/acp"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        cli_target_t t;
        resolve_ok (&t, cases[i][0], NULL);
        assert_string_equal (t.http, cases[i][1]);
        assert_string_equal (t.ws, cases[i][2]);
    }
}

static void test_bad_urls (void **state)
{
    const char *bad[] = {"ftp://h",    "h:8080",       "http://",    "http:///x",
                         "http://a b", "http://h?x=1", "http://h#f", "http://h\n"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cli_target_t t;
        char err[256] = "";
        assert_int_equal (cli_target_resolve (&t, bad[i], NULL, err, sizeof err),
                          CLI_USAGE);
        assert_true (strlen (err) > 10);
    }
    //  At the length limit and past it.
    char url[CLI_URL_MAX + 8];
    memset (url, 'a', sizeof url);
    memcpy (url, "http://", 7);
    url[CLI_URL_MAX - 17] = 0;
    cli_target_t t;
    char err[256];
    assert_int_equal (cli_target_resolve (&t, url, NULL, err, sizeof err), 0);
    url[CLI_URL_MAX - 17] = 'a';
    url[CLI_URL_MAX - 16] = 0;
    assert_int_equal (cli_target_resolve (&t, url, NULL, err, sizeof err), CLI_USAGE);
}

static void test_precedence (void **state)
{
    cli_target_t t;
    setenv ("CORRAL_LISTEN", "0.0.0.0:9000", 1);
    resolve_ok (&t, NULL, NULL);
    assert_string_equal (t.http, "http://127.0.0.1:9000");
    setenv ("CORRAL_LISTEN", "[::]:9001", 1);
    resolve_ok (&t, NULL, NULL);
    assert_string_equal (t.ws, "ws://[::1]:9001/acp");
    setenv ("CORRAL_TLS_CERT", "/x.pem", 1);
    resolve_ok (&t, NULL, NULL);
    assert_string_equal (t.http, "https://[::1]:9001");
    setenv ("CORRAL_URL", "http://env:1", 1);
    resolve_ok (&t, NULL, NULL);
    assert_string_equal (t.http, "http://env:1");
    resolve_ok (&t, "http://flag:2", NULL);
    assert_string_equal (t.http, "http://flag:2");
    unsetenv ("CORRAL_URL");
    setenv ("CORRAL_LISTEN", "nonsense", 1);
    char err[256];
    assert_int_equal (cli_target_resolve (&t, NULL, NULL, err, sizeof err), CLI_USAGE);
    assert_non_null (strstr (err, "CORRAL_LISTEN"));
    unsetenv ("CORRAL_LISTEN");
    unsetenv ("CORRAL_TLS_CERT");
}

static void test_keys (void **state)
{
    cli_target_t t;
    char path[128];
    snprintf (path, sizeof path, "%s/local-api-key", s_dir);
    FILE *f = fopen (path, "w");
    assert_non_null (f);
    fputs ("crl_fromfile\n", f);
    fclose (f);
    resolve_ok (&t, NULL, NULL);
    assert_string_equal (t.key, "crl_fromfile");
    assert_string_equal (t.key_from, path);
    setenv ("CORRAL_API_KEY", "crl_fromenv", 1);
    resolve_ok (&t, NULL, NULL);
    assert_string_equal (t.key, "crl_fromenv");
    assert_string_equal (t.key_from, "CORRAL_API_KEY");
    resolve_ok (&t, NULL, "crl_fromflag");
    assert_string_equal (t.key, "crl_fromflag");
    assert_string_equal (t.key_from, "--key");
    //  A key with a space or a control character is refused, and never
    //  quoted in the message.
    char err[256];
    assert_int_equal (cli_target_resolve (&t, NULL, "crl_a b", err, sizeof err),
                      CLI_USAGE);
    assert_null (strstr (err, "crl_a"));
    assert_string_equal (t.key, "");
    char longkey[CLI_KEY_MAX + 1];
    memset (longkey, 'k', sizeof longkey - 1);
    longkey[sizeof longkey - 1] = 0;
    assert_int_equal (cli_target_resolve (&t, NULL, longkey, err, sizeof err), CLI_USAGE);
    unsetenv ("CORRAL_API_KEY");
}

//  A command that needs a key: 0 with one, CLI_USAGE without one or with
//  a malformed URL (the message goes to stderr).
static void test_with_key (void **state)
{
    cli_target_t t;
    assert_int_equal (cli_target_with_key (&t, "test", NULL, NULL), CLI_USAGE);
    assert_int_equal (cli_target_with_key (&t, "test", "ftp://x", "k1"), CLI_USAGE);
    assert_int_equal (cli_target_with_key (&t, "test", NULL, "k1"), 0);
    assert_string_equal (t.key, "k1");
    setenv ("CORRAL_API_KEY", "k2", 1);
    assert_int_equal (cli_target_with_key (&t, "test", "ws://h:1/acp", NULL), 0);
    assert_string_equal (t.key, "k2");
    assert_string_equal (t.http, "http://h:1");
    unsetenv ("CORRAL_API_KEY");
}

int main (void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown (test_defaults, setup, teardown),
        cmocka_unit_test_setup_teardown (test_url_forms, setup, teardown),
        cmocka_unit_test_setup_teardown (test_bad_urls, setup, teardown),
        cmocka_unit_test_setup_teardown (test_precedence, setup, teardown),
        cmocka_unit_test_setup_teardown (test_keys, setup, teardown),
        cmocka_unit_test_setup_teardown (test_with_key, setup, teardown),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
