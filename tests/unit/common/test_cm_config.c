/*  test_cm_config.c - defaults, environment, flags, types, bounds, help. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cm_config.h"
#include "cm_error.h"
#include "cm_log.h"

#define S_KEY "sk-provider-0123456789abcdefghij"

typedef struct {
    char *data_dir;
    char *endpoint;
    char *sync;
    char *api_key;
    char *label;
    int64_t workers;
    int64_t map_size;
    int64_t timeout;
    int64_t offset;
    bool verbose;
} test_cfg_t;

static const cm_cfg_opt_t s_opts[] = {
    {"data-dir", CM_CFG_PATH, offsetof (test_cfg_t, data_dir), "/var/lib/corral",
     "directory of the LMDB environment", 0, 0, NULL, false},
    {"store-endpoint", CM_CFG_ENDPOINT, offsetof (test_cfg_t, endpoint),
     "tcp://127.0.0.1:5555", "where the store listens", 0, 0, NULL, false},
    {"store-sync", CM_CFG_ENUM, offsetof (test_cfg_t, sync), "full", "fsync policy", 0, 0,
     "full|os", false},
    {"api-key", CM_CFG_STR, offsetof (test_cfg_t, api_key), NULL, "provider key", 0, 0,
     NULL, true},
    {"label", CM_CFG_STR, offsetof (test_cfg_t, label), NULL, "free text", 0, 0, NULL,
     false},
    {"workers", CM_CFG_INT, offsetof (test_cfg_t, workers), "4", "worker count", 1, 64,
     NULL, false},
    {"map-size", CM_CFG_SIZE, offsetof (test_cfg_t, map_size), "1G", "LMDB map size",
     1048576, 1LL << 40, NULL, false},
    {"timeout", CM_CFG_MS, offsetof (test_cfg_t, timeout), "30s", "request timeout", 10,
     3600000, NULL, false},
    {"offset", CM_CFG_INT, offsetof (test_cfg_t, offset), NULL, "unbounded", 0, 0, NULL,
     false},
    {"verbose", CM_CFG_BOOL, offsetof (test_cfg_t, verbose), "false", "more logging", 0,
     0, NULL, false},
    CM_CFG_END,
};

static const char *s_envs[] = {
    "CORRAL_DATA_DIR", "CORRAL_STORE_ENDPOINT", "CORRAL_STORE_SYNC", "CORRAL_API_KEY",
    "CORRAL_LABEL",    "CORRAL_WORKERS",        "CORRAL_MAP_SIZE",   "CORRAL_TIMEOUT",
    "CORRAL_OFFSET",   "CORRAL_VERBOSE",
};

static int s_clean_env (void **state)
{
    for (size_t i = 0; i < sizeof (s_envs) / sizeof (s_envs[0]); i++)
        unsetenv (s_envs[i]);
    return 0;
}

//  Load with argv given as a NULL-terminated list after the program name.
static int s_load (test_cfg_t *cfg, char *err, size_t errlen, ...)
{
    char *argv[32] = {"prog"};
    int argc = 1;
    va_list args;
    va_start (args, errlen);
    for (char *arg = va_arg (args, char *); arg && argc < 31; arg = va_arg (args, char *))
        argv[argc++] = arg;
    va_end (args);
    return cm_config_load (s_opts, cfg, argc, argv, "prog", "A test program.", err,
                           errlen);
}

static const cm_cfg_opt_t *s_opt (const char *name)
{
    for (const cm_cfg_opt_t *opt = s_opts; opt->name; opt++)
        if (strcmp (opt->name, name) == 0) return opt;
    fail_msg ("no option %s", name);
    return NULL;
}

static void test_envname (void **state)
{
    char out[64];
    assert_string_equal (cm_config_envname ("store-endpoint", out, sizeof (out)),
                         "CORRAL_STORE_ENDPOINT");
    assert_string_equal (cm_config_envname ("map-size", out, sizeof (out)),
                         "CORRAL_MAP_SIZE");
    assert_string_equal (cm_config_envname ("store-endpoint", out, 10), "CORRAL_ST");
}

static void test_defaults (void **state)
{
    test_cfg_t cfg;
    memset (&cfg, 0xa5, sizeof (cfg)); //  garbage on entry is fine
    char err[256];
    assert_int_equal (s_load (&cfg, err, sizeof (err), NULL), 0);
    assert_string_equal (cfg.data_dir, "/var/lib/corral");
    assert_string_equal (cfg.endpoint, "tcp://127.0.0.1:5555");
    assert_string_equal (cfg.sync, "full");
    assert_null (cfg.api_key);
    assert_null (cfg.label);
    assert_int_equal (cfg.workers, 4);
    assert_int_equal (cfg.map_size, 1LL << 30);
    assert_int_equal (cfg.timeout, 30000);
    assert_int_equal (cfg.offset, 0);
    assert_false (cfg.verbose);
    cm_config_free (s_opts, &cfg);
    assert_null (cfg.data_dir);
    assert_null (cfg.sync);
    cm_config_free (s_opts, &cfg); //  idempotent
}

static void test_env_overrides_default (void **state)
{
    setenv ("CORRAL_DATA_DIR", "/srv/corral", 1);
    setenv ("CORRAL_MAP_SIZE", "512M", 1);
    setenv ("CORRAL_VERBOSE", "yes", 1);
    setenv ("CORRAL_STORE_SYNC", "os", 1);
    setenv ("CORRAL_LABEL", "", 1); //  empty counts as unset
    test_cfg_t cfg = {0};
    char err[256];
    assert_int_equal (s_load (&cfg, err, sizeof (err), NULL), 0);
    assert_string_equal (cfg.data_dir, "/srv/corral");
    assert_int_equal (cfg.map_size, 512LL << 20);
    assert_true (cfg.verbose);
    assert_string_equal (cfg.sync, "os");
    assert_null (cfg.label);
    cm_config_free (s_opts, &cfg);
}

static void test_flag_overrides_env (void **state)
{
    setenv ("CORRAL_DATA_DIR", "/srv/corral", 1);
    setenv ("CORRAL_WORKERS", "8", 1);
    setenv ("CORRAL_VERBOSE", "true", 1);
    test_cfg_t cfg = {0};
    char err[256];
    assert_int_equal (s_load (&cfg, err, sizeof (err), "--data-dir", "/tmp/a",
                              "--workers=16", "--verbose=off", "--label", "x y", NULL),
                      0);
    assert_string_equal (cfg.data_dir, "/tmp/a");
    assert_int_equal (cfg.workers, 16);
    assert_false (cfg.verbose);
    assert_string_equal (cfg.label, "x y");
    cm_config_free (s_opts, &cfg);

    //  The last of repeated flags wins, and the earlier value is freed.
    assert_int_equal (
        s_load (&cfg, err, sizeof (err), "--label=a", "--label=b", "--label", "c", NULL),
        0);
    assert_string_equal (cfg.label, "c");
    cm_config_free (s_opts, &cfg);
}

static void test_bool_forms (void **state)
{
    test_cfg_t cfg = {0};
    char err[256];
    //  Bare flag.
    assert_int_equal (s_load (&cfg, err, sizeof (err), "--verbose", NULL), 0);
    assert_true (cfg.verbose);
    cm_config_free (s_opts, &cfg);
    //  Bare flag followed by another flag.
    assert_int_equal (
        s_load (&cfg, err, sizeof (err), "--verbose", "--workers", "2", NULL), 0);
    assert_true (cfg.verbose);
    assert_int_equal (cfg.workers, 2);
    cm_config_free (s_opts, &cfg);
    //  Separate value.
    assert_int_equal (s_load (&cfg, err, sizeof (err), "--verbose", "no", NULL), 0);
    assert_false (cfg.verbose);
    cm_config_free (s_opts, &cfg);

    const cm_cfg_opt_t *opt = s_opt ("verbose");
    const char *yes[] = {"true", "1", "yes", "on", "TRUE", "On"};
    const char *no[] = {"false", "0", "no", "off", "False"};
    for (size_t i = 0; i < sizeof (yes) / sizeof (yes[0]); i++) {
        cfg.verbose = false;
        assert_int_equal (cm_config_set (opt, &cfg, yes[i], err, sizeof (err)), 0);
        assert_true (cfg.verbose);
    }
    for (size_t i = 0; i < sizeof (no) / sizeof (no[0]); i++) {
        cfg.verbose = true;
        assert_int_equal (cm_config_set (opt, &cfg, no[i], err, sizeof (err)), 0);
        assert_false (cfg.verbose);
    }
    assert_int_equal (cm_config_set (opt, &cfg, "maybe", err, sizeof (err)),
                      CM_E_INVALID);
    assert_string_equal (
        err, "--verbose: 'maybe' is not a boolean (true|false|1|0|yes|no|on|off)");
    assert_int_equal (cm_config_set (opt, &cfg, "", err, sizeof (err)), CM_E_INVALID);
}

static void test_int (void **state)
{
    test_cfg_t cfg = {0};
    char err[256];
    const cm_cfg_opt_t *offset = s_opt ("offset");
    assert_int_equal (cm_config_set (offset, &cfg, "-42", err, sizeof (err)), 0);
    assert_int_equal (cfg.offset, -42);
    assert_int_equal (cm_config_set (offset, &cfg, "+7", err, sizeof (err)), 0);
    assert_int_equal (cfg.offset, 7);
    assert_int_equal (
        cm_config_set (offset, &cfg, "9223372036854775807", err, sizeof (err)), 0);
    assert_int_equal (cfg.offset, INT64_MAX);
    assert_int_equal (
        cm_config_set (offset, &cfg, "9223372036854775808", err, sizeof (err)),
        CM_E_INVALID);
    assert_string_equal (err, "--offset: '9223372036854775808' is too large");
    const char *bad[] = {"", "abc", "5x", " 5", "5 ", "-", "0x10", "1.5"};
    for (size_t i = 0; i < sizeof (bad) / sizeof (bad[0]); i++)
        assert_int_equal (cm_config_set (offset, &cfg, bad[i], err, sizeof (err)),
                          CM_E_INVALID);
    assert_string_equal (err, "--offset: '1.5' is not an integer");
    assert_int_equal (cfg.offset, INT64_MAX); //  untouched by the failures
}

static void test_int_bounds (void **state)
{
    test_cfg_t cfg = {0};
    char err[256];
    const cm_cfg_opt_t *workers = s_opt ("workers");
    assert_int_equal (cm_config_set (workers, &cfg, "1", err, sizeof (err)), 0);
    assert_int_equal (cfg.workers, 1);
    assert_int_equal (cm_config_set (workers, &cfg, "64", err, sizeof (err)), 0);
    assert_int_equal (cfg.workers, 64);
    assert_int_equal (cm_config_set (workers, &cfg, "65", err, sizeof (err)),
                      CM_E_INVALID);
    assert_string_equal (err, "--workers: '65' is out of range (min 1, max 64)");
    assert_int_equal (cm_config_set (workers, &cfg, "0", err, sizeof (err)),
                      CM_E_INVALID);
    assert_int_equal (cfg.workers, 64);

    //  From the environment the message names the variable.
    setenv ("CORRAL_WORKERS", "65", 1);
    assert_int_equal (s_load (&cfg, err, sizeof (err), NULL), CM_E_INVALID);
    assert_string_equal (err, "CORRAL_WORKERS: '65' is out of range (min 1, max 64)");
    assert_null (cfg.data_dir); //  nothing left allocated on failure
}

static void test_size (void **state)
{
    test_cfg_t cfg = {0};
    char err[256];
    const cm_cfg_opt_t *opt = s_opt ("map-size");
    struct {
        const char *text;
        int64_t value;
    } good[] = {
        {"1048576", 1048576},  {"1024K", 1048576}, {"1024k", 1048576},
        {"512M", 512LL << 20}, {"4G", 4LL << 30},  {"1T", 1LL << 40},
        {"1m", 1LL << 20},
    };
    for (size_t i = 0; i < sizeof (good) / sizeof (good[0]); i++) {
        assert_int_equal (cm_config_set (opt, &cfg, good[i].text, err, sizeof (err)), 0);
        assert_int_equal (cfg.map_size, good[i].value);
    }
    const char *bad[] = {"12Q", "", "M", "-1M", "1.5G", "4 G", "4GB", "1MM"};
    for (size_t i = 0; i < sizeof (bad) / sizeof (bad[0]); i++)
        assert_int_equal (cm_config_set (opt, &cfg, bad[i], err, sizeof (err)),
                          CM_E_INVALID);
    assert_int_equal (cm_config_set (opt, &cfg, "12Q", err, sizeof (err)), CM_E_INVALID);
    assert_string_equal (err,
                         "--map-size: '12Q' is not a size (examples: 1048576, 512M, 4G)");
    //  Bounds: at min, just below it, just past max.
    assert_int_equal (cm_config_set (opt, &cfg, "1M", err, sizeof (err)), 0);
    assert_int_equal (cm_config_set (opt, &cfg, "1048575", err, sizeof (err)),
                      CM_E_INVALID);
    assert_int_equal (cm_config_set (opt, &cfg, "1099511627777", err, sizeof (err)),
                      CM_E_INVALID);
    assert_string_equal (err, "--map-size: '1099511627777' is out of range "
                              "(min 1048576 bytes, max 1099511627776 bytes)");
    //  Overflow while scaling.
    assert_int_equal (cm_config_set (opt, &cfg, "9999999999T", err, sizeof (err)),
                      CM_E_INVALID);
    assert_string_equal (err, "--map-size: '9999999999T' is too large");
    assert_int_equal (cfg.map_size, 1LL << 20);
}

static void test_duration (void **state)
{
    test_cfg_t cfg = {0};
    char err[256];
    const cm_cfg_opt_t *opt = s_opt ("timeout");
    struct {
        const char *text;
        int64_t value;
    } good[] = {
        {"500", 500},   {"250ms", 250},  {"30s", 30000},
        {"5m", 300000}, {"1h", 3600000}, {"10", 10},
    };
    for (size_t i = 0; i < sizeof (good) / sizeof (good[0]); i++) {
        assert_int_equal (cm_config_set (opt, &cfg, good[i].text, err, sizeof (err)), 0);
        assert_int_equal (cfg.timeout, good[i].value);
    }
    const char *bad[] = {"", "s", "5d", "-5s", "1.5s", "5 s", "5sec"};
    for (size_t i = 0; i < sizeof (bad) / sizeof (bad[0]); i++)
        assert_int_equal (cm_config_set (opt, &cfg, bad[i], err, sizeof (err)),
                          CM_E_INVALID);
    assert_string_equal (err, "--timeout: '5sec' is not a duration "
                              "(examples: 250, 250ms, 30s, 5m, 1h)");
    assert_int_equal (cm_config_set (opt, &cfg, "9", err, sizeof (err)), CM_E_INVALID);
    assert_int_equal (cm_config_set (opt, &cfg, "61m", err, sizeof (err)), CM_E_INVALID);
    assert_string_equal (err,
                         "--timeout: '61m' is out of range (min 10 ms, max 3600000 ms)");
}

static void test_enum (void **state)
{
    char err[256];
    setenv ("CORRAL_STORE_SYNC", "fast", 1);
    test_cfg_t cfg = {0};
    assert_int_equal (s_load (&cfg, err, sizeof (err), NULL), CM_E_INVALID);
    assert_string_equal (
        err, "CORRAL_STORE_SYNC: invalid value 'fast': expected one of full|os");

    const cm_cfg_opt_t *opt = s_opt ("store-sync");
    assert_int_equal (cm_config_set (opt, &cfg, "os", err, sizeof (err)), 0);
    assert_string_equal (cfg.sync, "os");
    assert_int_equal (cm_config_set (opt, &cfg, "full", err, sizeof (err)), 0);
    assert_string_equal (cfg.sync, "full");
    const char *bad[] = {"", "ful", "fullx", "OS", "full|os", "|"};
    for (size_t i = 0; i < sizeof (bad) / sizeof (bad[0]); i++)
        assert_int_equal (cm_config_set (opt, &cfg, bad[i], err, sizeof (err)),
                          CM_E_INVALID);
    assert_string_equal (cfg.sync, "full");
    cm_config_free (s_opts, &cfg);
}

static void test_endpoint_and_path (void **state)
{
    test_cfg_t cfg = {0};
    char err[256];
    const cm_cfg_opt_t *opt = s_opt ("store-endpoint");
    const char *good[] = {"tcp://127.0.0.1:5555", "tcp://*:5555",    "tcp://store:1",
                          "tcp://[::1]:65535",    "tcp://0.0.0.0:*", "ipc:///run/x.sock",
                          "inproc://store"};
    for (size_t i = 0; i < sizeof (good) / sizeof (good[0]); i++) {
        assert_int_equal (cm_config_set (opt, &cfg, good[i], err, sizeof (err)), 0);
        assert_string_equal (cfg.endpoint, good[i]);
    }
    const char *bad[] = {
        "",          "127.0.0.1:5555", "tcp://127.0.0.1", "tcp://:5555",
        "tcp://h:0", "tcp://h:65536",  "tcp://h:55x",     "udp://h:1",
        "ipc://",    "inproc://",      "tcp://a b:1",     "tcp://[::1:5"};
    for (size_t i = 0; i < sizeof (bad) / sizeof (bad[0]); i++)
        assert_int_equal (cm_config_set (opt, &cfg, bad[i], err, sizeof (err)),
                          CM_E_INVALID);
    assert_non_null (strstr (err, "--store-endpoint: 'tcp://[::1:5' is not an endpoint"));

    opt = s_opt ("data-dir");
    assert_int_equal (cm_config_set (opt, &cfg, "", err, sizeof (err)), CM_E_INVALID);
    assert_string_equal (err, "--data-dir: the path is empty");
    assert_int_equal (cm_config_set (opt, &cfg, "relative/dir", err, sizeof (err)), 0);
    cm_config_free (s_opts, &cfg);
}

static void test_value_length_limit (void **state)
{
    test_cfg_t cfg = {0};
    char err[256];
    size_t len = 4096;
    char *text = malloc (len + 2);
    assert_non_null (text);
    memset (text, 'v', len + 1);
    text[len] = '\0';
    assert_int_equal (cm_config_set (s_opt ("label"), &cfg, text, err, sizeof (err)), 0);
    text[len] = 'v';
    text[len + 1] = '\0';
    assert_int_equal (cm_config_set (s_opt ("label"), &cfg, text, err, sizeof (err)),
                      CM_E_INVALID);
    assert_string_equal (err, "--label: value is longer than 4096 bytes");
    free (text);
    cm_config_free (s_opts, &cfg);
}

static void test_bad_arguments (void **state)
{
    test_cfg_t cfg = {0};
    char err[256];
    assert_int_equal (s_load (&cfg, err, sizeof (err), "--foo", NULL), CM_E_INVALID);
    assert_string_equal (err, "unknown option --foo (see --help)");
    //  The value part of an unknown --name=value is not echoed: it could
    //  be a mistyped secret.
    assert_int_equal (s_load (&cfg, err, sizeof (err), "--api-kye=" S_KEY, NULL),
                      CM_E_INVALID);
    assert_string_equal (err, "unknown option --api-kye (see --help)");
    assert_int_equal (s_load (&cfg, err, sizeof (err), "-x", NULL), CM_E_INVALID);
    assert_string_equal (err, "unknown option -x (see --help)");
    assert_int_equal (s_load (&cfg, err, sizeof (err), "extra", NULL), CM_E_INVALID);
    assert_string_equal (err, "unexpected argument 'extra' (see --help)");
    assert_int_equal (s_load (&cfg, err, sizeof (err), "--", "extra", NULL),
                      CM_E_INVALID);
    assert_string_equal (err, "unexpected argument 'extra' (see --help)");
    assert_int_equal (s_load (&cfg, err, sizeof (err), "--data-dir", NULL), CM_E_INVALID);
    assert_string_equal (err, "--data-dir needs a value");
    assert_int_equal (s_load (&cfg, err, sizeof (err), "--data-dir", "--verbose", NULL),
                      CM_E_INVALID);
    assert_string_equal (err, "--data-dir needs a value");
    assert_int_equal (s_load (&cfg, err, sizeof (err), "--map-size", "12Q", NULL),
                      CM_E_INVALID);
    assert_string_equal (err,
                         "--map-size: '12Q' is not a size (examples: 1048576, 512M, 4G)");
    assert_null (cfg.data_dir);
    //  "--" alone just ends the options.
    assert_int_equal (s_load (&cfg, err, sizeof (err), "--", NULL), 0);
    cm_config_free (s_opts, &cfg);
}

//  Run a load with stdout sent to a temporary file; returns what it printed.
static char *s_load_capturing_stdout (int *rc, ...)
{
    char path[] = "/tmp/test_cm_config_XXXXXX";
    int fd = mkstemp (path);
    assert_true (fd >= 0);
    unlink (path);
    fflush (stdout);
    int saved = dup (STDOUT_FILENO);
    dup2 (fd, STDOUT_FILENO);

    char *argv[8] = {"prog"};
    int argc = 1;
    va_list args;
    va_start (args, rc);
    for (char *arg = va_arg (args, char *); arg && argc < 7; arg = va_arg (args, char *))
        argv[argc++] = arg;
    va_end (args);
    test_cfg_t cfg;
    char err[256];
    *rc = cm_config_load (s_opts, &cfg, argc, argv, "corral-test", "Tests config.", err,
                          sizeof (err));
    cm_config_free (s_opts, &cfg);

    fflush (stdout);
    dup2 (saved, STDOUT_FILENO);
    close (saved);
    off_t size = lseek (fd, 0, SEEK_END);
    char *text = calloc (1, (size_t)size + 1);
    assert_non_null (text);
    assert_int_equal (pread (fd, text, (size_t)size, 0), size);
    close (fd);
    return text;
}

static void test_help (void **state)
{
    //  Help works even with a bad value in the environment.
    setenv ("CORRAL_WORKERS", "lots", 1);
    int rc = 0;
    char *text = s_load_capturing_stdout (&rc, "--workers", "2", "--help", NULL);
    assert_int_equal (rc, CM_CONFIG_HELP);
    assert_non_null (strstr (text, "Usage: corral-test [OPTIONS]\nTests config.\n"));
    assert_non_null (strstr (text, "--store-endpoint ENDPOINT"));
    assert_non_null (
        strstr (text, "env CORRAL_STORE_ENDPOINT, default tcp://127.0.0.1:5555"));
    assert_non_null (strstr (text, "--store-sync full|os"));
    assert_non_null (strstr (text, "fsync policy"));
    assert_non_null (strstr (text, "env CORRAL_WORKERS, default 4, range 1..64"));
    assert_non_null (strstr (text, "env CORRAL_API_KEY, default none"));
    assert_non_null (strstr (text, "--verbose[=BOOL]"));
    assert_non_null (strstr (text, "-h, --help"));
    free (text);

    text = s_load_capturing_stdout (&rc, "-h", NULL);
    assert_int_equal (rc, CM_CONFIG_HELP);
    assert_non_null (strstr (text, "Usage:"));
    free (text);

    //  After "--" it is an argument, not a request for help.
    text = s_load_capturing_stdout (&rc, "--", "--help", NULL);
    assert_int_equal (rc, CM_E_INVALID);
    assert_string_equal (text, "");
    free (text);
}

static void test_secret_masked (void **state)
{
    setenv ("CORRAL_API_KEY", S_KEY, 1);
    test_cfg_t cfg = {0};
    char err[256];
    assert_int_equal (s_load (&cfg, err, sizeof (err), "--workers", "3", NULL), 0);
    assert_string_equal (cfg.api_key, S_KEY);

    char *buf = NULL;
    size_t len = 0;
    FILE *stream = open_memstream (&buf, &len);
    assert_non_null (stream);
    cm_log_init ("test", CM_LOG_INFO);
    cm_log_set_stream (stream);
    cm_config_log (s_opts, &cfg);
    //  Logged by mistake: load registered the key with the logger.
    cm_info ("oops %s", cfg.api_key);
    cm_log_set_stream (NULL);
    fclose (stream);

    assert_null (strstr (buf, S_KEY));
    assert_null (strstr (buf, "0123456789"));
    assert_non_null (strstr (buf, "config api-key=sk-p\xe2\x80\xa6(32)"));
    assert_non_null (strstr (buf, "config workers=3\""));
    assert_non_null (strstr (buf, "config map-size=1073741824\""));
    assert_non_null (strstr (buf, "config timeout=30000ms\""));
    assert_non_null (strstr (buf, "config verbose=false\""));
    assert_non_null (strstr (buf, "config label=(unset)\""));
    assert_non_null (strstr (buf, "config data-dir=/var/lib/corral\""));
    assert_non_null (strstr (buf, "oops [redacted]"));
    free (buf);

    //  A rejected secret value is not echoed in the message either.
    const cm_cfg_opt_t secret_enum[] = {
        {"api-key", CM_CFG_ENUM, offsetof (test_cfg_t, api_key), NULL, "", 0, 0, "a|b",
         true},
        CM_CFG_END,
    };
    assert_int_equal (cm_config_set (&secret_enum[0], &cfg, S_KEY, err, sizeof (err)),
                      CM_E_INVALID);
    assert_null (strstr (err, S_KEY));
    assert_non_null (strstr (err, "'sk-p\xe2\x80\xa6(32)'"));
    cm_config_free (s_opts, &cfg);
}

static void test_bad_default (void **state)
{
    //  A table error shows up as an error naming the default.
    const cm_cfg_opt_t opts[] = {
        {"workers", CM_CFG_INT, offsetof (test_cfg_t, workers), "many", "", 0, 0, NULL,
         false},
        CM_CFG_END,
    };
    test_cfg_t cfg;
    char err[256];
    char *argv[] = {"prog", NULL};
    assert_int_equal (cm_config_load (opts, &cfg, 1, argv, "p", "s", err, sizeof (err)),
                      CM_E_INVALID);
    assert_string_equal (err, "default of --workers: 'many' is not an integer");
}

#define T(fn) cmocka_unit_test_setup_teardown (fn, s_clean_env, s_clean_env)

int main (void)
{
    const struct CMUnitTest tests[] = {
        T (test_envname),
        T (test_defaults),
        T (test_env_overrides_default),
        T (test_flag_overrides_env),
        T (test_bool_forms),
        T (test_int),
        T (test_int_bounds),
        T (test_size),
        T (test_duration),
        T (test_enum),
        T (test_endpoint_and_path),
        T (test_value_length_limit),
        T (test_bad_arguments),
        T (test_help),
        T (test_secret_masked),
        T (test_bad_default),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
