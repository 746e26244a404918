/*  test_cm_log.c - JSON lines, level filter, escaping, secret scrubbing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cm_error.h"
#include "cm_log.h"

#define S_SECRET "sk-test-0123456789abcdefXYZ"

//  Output captured in memory for one test.
typedef struct {
    FILE *stream;
    char *buf;
    size_t len;
} capture_t;

static int s_setup (void **state)
{
    capture_t *cap = calloc (1, sizeof (capture_t));
    if (!cap) return -1;
    cap->stream = open_memstream (&cap->buf, &cap->len);
    if (!cap->stream) return -1;
    cm_log_init ("store", CM_LOG_DEBUG);
    cm_log_set_stream (cap->stream);
    *state = cap;
    return 0;
}

static int s_teardown (void **state)
{
    capture_t *cap = *state;
    cm_log_set_stream (NULL);
    fclose (cap->stream);
    free (cap->buf);
    free (cap);
    return 0;
}

//  Everything written so far, NUL-terminated.
static const char *s_output (capture_t *cap)
{
    fflush (cap->stream);
    return cap->buf ? cap->buf : "";
}

static size_t s_count_lines (const char *text)
{
    size_t n = 0;
    for (; *text; text++) n += *text == '\n';
    return n;
}

//  The only line in the output, parsed; fails the test unless the output
//  is exactly one line of valid JSON.
static json_t *s_one_line (capture_t *cap)
{
    const char *out = s_output (cap);
    assert_int_equal (s_count_lines (out), 1);
    assert_int_equal (out[strlen (out) - 1], '\n');
    json_error_t error;
    json_t *obj = json_loads (out, 0, &error);
    if (!obj) fail_msg ("not JSON (%s): %s", error.text, out);
    assert_true (json_is_object (obj));
    return obj;
}

static const char *s_field (json_t *obj, const char *key)
{
    return json_string_value (json_object_get (obj, key));
}

static void test_line_fields (void **state)
{
    capture_t *cap = *state;
    cm_info ("listening on %s port %d", "tcp", 5555);
    json_t *obj = s_one_line (cap);
    assert_string_equal (s_field (obj, "level"), "info");
    assert_string_equal (s_field (obj, "service"), "store");
    assert_string_equal (s_field (obj, "msg"), "listening on tcp port 5555");
    const char *ts = s_field (obj, "ts");
    assert_non_null (ts);
    assert_int_equal (strlen (ts), 24); //  2026-11-21T10:00:00.123Z
    assert_int_equal (ts[10], 'T');
    assert_int_equal (ts[23], 'Z');
    assert_null (json_object_get (obj, "session"));
    assert_int_equal (json_object_size (obj), 4);
    //  Field order is part of the format people read.
    assert_true (strncmp (s_output (cap), "{\"ts\":\"", 7) == 0);
    json_decref (obj);
}

static void test_context_ids (void **state)
{
    capture_t *cap = *state;
    cm_log_ctx_t ctx = {.session = "s-1", .turn = "t-2", .conn = NULL, .worker = "w-4"};
    cm_logc (CM_LOG_WARN, &ctx, "turn started");
    json_t *obj = s_one_line (cap);
    assert_string_equal (s_field (obj, "level"), "warn");
    assert_string_equal (s_field (obj, "session"), "s-1");
    assert_string_equal (s_field (obj, "turn"), "t-2");
    assert_string_equal (s_field (obj, "worker"), "w-4");
    assert_null (json_object_get (obj, "conn"));
    json_decref (obj);
}

static void test_level_filter (void **state)
{
    capture_t *cap = *state;
    cm_log_init ("store", CM_LOG_WARN);
    cm_debug ("dropped debug");
    cm_info ("dropped info");
    cm_warn ("kept warn");
    cm_error ("kept error");
    const char *out = s_output (cap);
    assert_int_equal (s_count_lines (out), 2);
    assert_null (strstr (out, "dropped"));
    assert_non_null (
        strstr (out, "\"level\":\"warn\",\"service\":\"store\",\"msg\":\"kept warn\""));
    assert_non_null (strstr (out, "\"level\":\"error\""));
}

static void test_level_parse (void **state)
{
    cm_log_level_t level = CM_LOG_ERROR;
    assert_int_equal (cm_log_level_parse ("debug", &level), 0);
    assert_int_equal (level, CM_LOG_DEBUG);
    assert_int_equal (cm_log_level_parse ("WARN", &level), 0);
    assert_int_equal (level, CM_LOG_WARN);
    assert_int_equal (cm_log_level_parse ("error", &level), 0);
    assert_int_equal (level, CM_LOG_ERROR);
    assert_int_equal (cm_log_level_parse ("verbose", &level), CM_E_INVALID);
    assert_int_equal (cm_log_level_parse ("", &level), CM_E_INVALID);
    assert_int_equal (cm_log_level_parse (NULL, &level), CM_E_INVALID);
    assert_int_equal (level, CM_LOG_ERROR);
}

static void test_escaping (void **state)
{
    capture_t *cap = *state;
    //  0xff is not UTF-8; it must not make the line unreadable.
    cm_info ("say \"hi\"\nback\\slash\ttab\x01 \x1f caf\xc3\xa9 bad\xff end");
    const char *out = s_output (cap);
    assert_non_null (strstr (out, "\\u0001"));
    assert_non_null (strstr (out, "\\u001f"));
    json_t *obj = s_one_line (cap);
    assert_string_equal (s_field (obj, "msg"),
                         "say \"hi\"\nback\\slash\ttab\x01 \x1f caf\xc3\xa9 "
                         "bad\xef\xbf\xbd end");
    json_decref (obj);
}

static void test_escaping_context_and_service (void **state)
{
    capture_t *cap = *state;
    cm_log_init ("odd\"svc\n", CM_LOG_DEBUG);
    cm_log_ctx_t ctx = {.session = "a\"b", .conn = "c\nd"};
    cm_logc (CM_LOG_INFO, &ctx, "x");
    json_t *obj = s_one_line (cap);
    assert_string_equal (s_field (obj, "service"), "odd\"svc\n");
    assert_string_equal (s_field (obj, "session"), "a\"b");
    assert_string_equal (s_field (obj, "conn"), "c\nd");
    json_decref (obj);
}

static void test_long_line_is_cut (void **state)
{
    capture_t *cap = *state;
    size_t len = 3 * CM_LOG_LINE_MAX;
    char *big = malloc (len + 1);
    assert_non_null (big);
    //  Quotes double in size when escaped: the cut must still fall between
    //  escape sequences.
    for (size_t i = 0; i < len; i++) big[i] = i % 3 ? 'x' : '"';
    big[len] = '\0';
    cm_log_ctx_t ctx = {.session = "keep-me"};
    cm_logc (CM_LOG_INFO, &ctx, "%s", big);
    const char *out = s_output (cap);
    assert_true (strlen (out) < CM_LOG_LINE_MAX);
    json_t *obj = s_one_line (cap);
    assert_string_equal (s_field (obj, "session"), "keep-me");
    assert_true (strlen (s_field (obj, "msg")) > CM_LOG_LINE_MAX / 2);
    json_decref (obj);
    free (big);
}

static void test_secret_scrubbed (void **state)
{
    capture_t *cap = *state;
    assert_int_equal (cm_log_secret (S_SECRET), 0);
    //  Registering twice is harmless.
    assert_int_equal (cm_log_secret (S_SECRET), 0);

    cm_info ("provider key %s", S_SECRET);
    cm_info ("glued:" S_SECRET S_SECRET "and more");
    cm_log_ctx_t ctx = {.session = S_SECRET, .turn = "x" S_SECRET "y"};
    cm_logc (CM_LOG_ERROR, &ctx, "in context");
    const char *out = s_output (cap);
    assert_int_equal (s_count_lines (out), 3);
    assert_null (strstr (out, S_SECRET));
    //  Not even a recognisable piece of it.
    assert_null (strstr (out, "0123456789abcdef"));
    assert_non_null (strstr (out, "provider key [redacted]"));
    assert_non_null (strstr (out, "glued:[redacted][redacted]and more"));
    assert_non_null (strstr (out, "\"session\":\"[redacted]\""));
    assert_non_null (strstr (out, "\"turn\":\"x[redacted]y\""));
}

static void test_secret_with_special_chars (void **state)
{
    capture_t *cap = *state;
    const char *secret = "pa\"ss\\wo\nrd-42";
    assert_int_equal (cm_log_secret (secret), 0);
    cm_info ("password=%s;", secret);
    json_t *obj = s_one_line (cap);
    assert_string_equal (s_field (obj, "msg"), "password=[redacted];");
    assert_null (strstr (s_output (cap), "wo\\nrd"));
    json_decref (obj);
}

static void test_secret_made_by_escaping (void **state)
{
    capture_t *cap = *state;
    //  The message never holds this secret, but its escaped form would:
    //  0x01 followed by "abcdefgh" is written \u0001abcdefgh.
    assert_int_equal (cm_log_secret ("u0001abcdefgh"), 0);
    cm_info ("odd \x01"
             "abcdefgh tail");
    const char *out = s_output (cap);
    assert_null (strstr (out, "u0001abcdefgh"));
    json_t *obj = s_one_line (cap);
    assert_string_equal (s_field (obj, "msg"), "odd [redacted] tail");
    json_decref (obj);
}

static void test_secret_split_by_cut (void **state)
{
    capture_t *cap = *state;
    //  A long secret that the length limit cuts in two: the part before
    //  the cut must not survive.
    char secret[301];
    for (size_t i = 0; i < 300; i++) secret[i] = (char)('A' + i % 26);
    secret[300] = '\0';
    assert_int_equal (cm_log_secret (secret), 0);
    size_t pad = CM_LOG_LINE_MAX - 200;
    char *msg = malloc (pad + 1);
    assert_non_null (msg);
    memset (msg, '.', pad);
    msg[pad] = '\0';
    cm_info ("%s%s", msg, secret);
    const char *out = s_output (cap);
    assert_null (strstr (out, "ABCDEFGHIJ"));
    json_t *obj = s_one_line (cap);
    json_decref (obj);
    free (msg);
}

static void test_short_secret_ignored (void **state)
{
    capture_t *cap = *state;
    assert_int_equal (cm_log_secret ("seven77"), 0);
    assert_int_equal (cm_log_secret (""), 0);
    assert_int_equal (cm_log_secret (NULL), 0);
    cm_info ("word seven77 stays");
    assert_non_null (strstr (s_output (cap), "word seven77 stays"));
}

static void test_redact (void **state)
{
    char out[64];
    cm_redact (NULL, out, sizeof (out));
    assert_string_equal (out, "");
    cm_redact ("", out, sizeof (out));
    assert_string_equal (out, "");
    cm_redact ("short", out, sizeof (out));
    assert_string_equal (out, "****");
    cm_redact ("twelve-bytes", out, sizeof (out));
    assert_string_equal (out, "****");
    cm_redact ("thirteen-byte", out, sizeof (out));
    assert_string_equal (out, "thir\xe2\x80\xa6(13)");
    cm_redact ("sk-abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKL", out, sizeof (out));
    assert_string_equal (out, "sk-a\xe2\x80\xa6(51)");
    //  Small buffers are cut but always terminated.
    cm_redact ("sk-abcdefghijklmnopqrstuvwxyz", out, 3);
    assert_string_equal (out, "sk");
    out[0] = 'z';
    cm_redact ("sk-abcdefghijklmnopqrstuvwxyz", out, 0);
    assert_int_equal (out[0], 'z');
}

static void test_json_escape_bounds (void **state)
{
    char dst[8];
    size_t pos = 0;
    //  Room for 7 bytes: three escaped quotes need 6, a fourth would not fit.
    cm_json_escape (dst, sizeof (dst), &pos, "\"\"\"\"");
    assert_string_equal (dst, "\\\"\\\"\\\"");
    assert_int_equal (pos, 6);

    //  A \u escape is never split.
    pos = 0;
    cm_json_escape (dst, 6, &pos, "\x02");
    assert_string_equal (dst, "");
    assert_int_equal (pos, 0);

    //  Nor a UTF-8 sequence.
    pos = 3;
    memcpy (dst, "abc", 3);
    cm_json_escape (dst, 5, &pos, "\xe2\x80\xa6");
    assert_string_equal (dst, "abc");

    //  Appends at pos.
    char big[64] = "{\"k\":\"";
    pos = strlen (big);
    cm_json_escape (big, sizeof (big), &pos, "a/b\r");
    assert_string_equal (big, "{\"k\":\"a/b\\r");
    cm_json_escape (big, sizeof (big), &pos, NULL);
    assert_string_equal (big, "{\"k\":\"a/b\\r");

    //  Overlong and surrogate encodings are not UTF-8.
    pos = 0;
    cm_json_escape (big, sizeof (big), &pos, "\xc0\xaf|\xed\xa0\x80");
    assert_string_equal (big, "\\ufffd\\ufffd|\\ufffd\\ufffd\\ufffd");
}

static void test_errno_preserved (void **state)
{
    errno = ENOENT;
    cm_info ("keeps errno");
    assert_int_equal (errno, ENOENT);
}

//  A stream with a descriptor goes through write(2).
static void test_fd_stream (void **state)
{
    FILE *file = tmpfile ();
    assert_non_null (file);
    cm_log_set_stream (file);
    cm_info ("to a file");
    cm_info ("second");
    cm_log_set_stream (NULL);
    char buf[1024] = {0};
    assert_int_equal (fseek (file, 0, SEEK_SET), 0);
    size_t n = fread (buf, 1, sizeof (buf) - 1, file);
    assert_true (n > 0);
    assert_int_equal (s_count_lines (buf), 2);
    assert_non_null (strstr (buf, "\"msg\":\"to a file\"}\n"));
    fclose (file);
}

//  Several processes appending to one file: every line must stay whole.
static void test_no_interleave_across_processes (void **state)
{
    char path[] = "/tmp/test_cm_log_XXXXXX";
    int fd = mkstemp (path);
    assert_true (fd >= 0);
    int afd = open (path, O_WRONLY | O_APPEND);
    assert_true (afd >= 0);
    FILE *file = fdopen (afd, "a");
    assert_non_null (file);
    cm_log_set_stream (file);

    enum { PROCS = 4, LINES = 300 };
    char filler[1500];
    memset (filler, 'f', sizeof (filler) - 1);
    filler[sizeof (filler) - 1] = '\0';
    for (int p = 0; p < PROCS; p++) {
        pid_t pid = fork ();
        assert_true (pid >= 0);
        if (pid == 0) {
            for (int i = 0; i < LINES; i++) cm_info ("proc %d line %d %s", p, i, filler);
            _exit (0);
        }
    }
    for (int p = 0; p < PROCS; p++) {
        int status = 0;
        assert_true (wait (&status) > 0);
        assert_true (WIFEXITED (status) && WEXITSTATUS (status) == 0);
    }
    cm_log_set_stream (NULL);
    fclose (file);

    FILE *in = fdopen (fd, "r");
    assert_non_null (in);
    char line[4096];
    int count = 0;
    while (fgets (line, sizeof (line), in)) {
        json_error_t error;
        json_t *obj = json_loads (line, 0, &error);
        if (!obj) fail_msg ("line %d is not JSON: %.80s", count, line);
        json_decref (obj);
        count++;
    }
    assert_int_equal (count, PROCS * LINES);
    fclose (in);
    unlink (path);
}

//  Last: it fills the secret table.
static void test_secret_capacity (void **state)
{
    int rc = 0;
    int added = 0;
    char secret[32];
    while (rc == 0 && added <= CM_LOG_MAX_SECRETS) {
        snprintf (secret, sizeof (secret), "capacity-secret-%03d", added);
        rc = cm_log_secret (secret);
        if (rc == 0) added++;
    }
    assert_int_equal (rc, CM_E_CAPACITY);
    assert_true (added < CM_LOG_MAX_SECRETS);
    //  An already registered secret is still accepted when full.
    assert_int_equal (cm_log_secret (S_SECRET), 0);
}

int main (void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown (test_line_fields, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_context_ids, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_level_filter, s_setup, s_teardown),
        cmocka_unit_test (test_level_parse),
        cmocka_unit_test_setup_teardown (test_escaping, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_escaping_context_and_service, s_setup,
                                         s_teardown),
        cmocka_unit_test_setup_teardown (test_long_line_is_cut, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_secret_scrubbed, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_secret_with_special_chars, s_setup,
                                         s_teardown),
        cmocka_unit_test_setup_teardown (test_secret_made_by_escaping, s_setup,
                                         s_teardown),
        cmocka_unit_test_setup_teardown (test_secret_split_by_cut, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_short_secret_ignored, s_setup, s_teardown),
        cmocka_unit_test (test_redact),
        cmocka_unit_test (test_json_escape_bounds),
        cmocka_unit_test_setup_teardown (test_errno_preserved, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_fd_stream, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_no_interleave_across_processes, s_setup,
                                         s_teardown),
        cmocka_unit_test (test_secret_capacity),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
