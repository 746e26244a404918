/*  test_wrk_sse.c - the SSE parser: line endings, fields, limits, and the
    same events whatever way the body is cut into pieces. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cm_error.h"
#include "wrk_sse.h"

//  Every event appended as "[event]data|" so a whole run compares as one
//  string; data_len is checked against strlen to catch a missing NUL.
typedef struct {
    char log[8192];
    size_t len;
    int stop_after; //  return CM_E_CANCELLED at this event (1-based), 0 never
    int events;
} s_rec_t;

static int s_on_event (void *arg, const char *event, const char *data, size_t data_len)
{
    s_rec_t *rec = (s_rec_t *)arg;
    assert_non_null (event);
    assert_non_null (data);
    assert_int_equal (strlen (data), data_len);
    int n = snprintf (rec->log + rec->len, sizeof rec->log - rec->len, "[%s]%s|", event,
                      data);
    assert_true (n > 0 && (size_t)n < sizeof rec->log - rec->len);
    rec->len += (size_t)n;
    rec->events++;
    return rec->stop_after && rec->events == rec->stop_after ? CM_E_CANCELLED : 0;
}

//  Parse `input` fed in the pieces [0, split) and [split, len), or one
//  byte at a time when split is SIZE_MAX.  Returns the first non-zero rc.
static int s_run (const char *input, size_t len, size_t max, size_t split, s_rec_t *rec)
{
    memset (rec, 0, sizeof *rec);
    wrk_sse_t sse;
    wrk_sse_init (&sse, max);
    int rc = 0;
    if (split == SIZE_MAX) {
        for (size_t i = 0; i < len && rc == 0; i++)
            rc = wrk_sse_feed (&sse, input + i, 1, s_on_event, rec);
    } else {
        rc = wrk_sse_feed (&sse, input, split, s_on_event, rec);
        if (rc == 0)
            rc = wrk_sse_feed (&sse, input + split, len - split, s_on_event, rec);
    }
    wrk_sse_fini (&sse);
    return rc;
}

//  The input gives `expect` (and `expect_rc`) fed whole, split at every
//  byte boundary, and one byte at a time.
static void s_check (const char *input, size_t max, int expect_rc, const char *expect)
{
    size_t len = strlen (input);
    s_rec_t rec;
    assert_int_equal (s_run (input, len, max, len, &rec), expect_rc);
    assert_string_equal (rec.log, expect);
    for (size_t split = 0; split <= len; split++) {
        assert_int_equal (s_run (input, len, max, split, &rec), expect_rc);
        assert_string_equal (rec.log, expect);
    }
    assert_int_equal (s_run (input, len, max, SIZE_MAX, &rec), expect_rc);
    assert_string_equal (rec.log, expect);
}

static void test_line_endings (void **state)
{
    s_check ("data: lf\n\n", 1024, 0, "[]lf|");
    s_check ("data: crlf\r\n\r\n", 1024, 0, "[]crlf|");
    s_check ("data: cr\r\r", 1024, 0, "[]cr|");
    //  Mixed, including a CR that ends one line followed by LF that ends
    //  the next (blank) one only when they are not a pair.
    s_check ("data: a\r\n\ndata: b\n\r\ndata: c\r\r\n", 1024, 0, "[]a|[]b|[]c|");
    //  CR CR is two line ends, CR LF one.
    s_check ("data: x\r\rdata: y\r\n\r\n", 1024, 0, "[]x|[]y|");
}

static void test_comments_and_fields (void **state)
{
    s_check (": keep-alive\n\n:another\ndata: a\n\n", 1024, 0, "[]a|");
    //  id:, retry: and unknown fields are ignored; the event still fires.
    s_check ("id: 7\nretry: 100\nfoo: bar\ndata: a\n\n", 1024, 0, "[]a|");
    //  Only one space after the colon is dropped; none needed.
    s_check ("data:x\n\ndata:  two\n\n", 1024, 0, "[]x|[] two|");
    //  A field with no colon has an empty value: "data" alone is data "".
    s_check ("data\n\n", 1024, 0, "[]|");
    s_check ("data:\n\n", 1024, 0, "[]|");
    //  A colon inside the value stays.
    s_check ("data: {\"a\":1}\n\n", 1024, 0, "[]{\"a\":1}|");
}

static void test_multi_line_data (void **state)
{
    s_check ("data: a\ndata:\ndata: b\n\n", 1024, 0, "[]a\n\nb|");
    s_check ("data: one\r\ndata: two\r\n\r\n", 1024, 0, "[]one\ntwo|");
}

static void test_event_names (void **state)
{
    s_check ("event: message_start\ndata: {}\n\nevent: ping\ndata: {}\n\ndata: plain\n\n",
             1024, 0, "[message_start]{}|[ping]{}|[]plain|");
    //  The last event: line wins.
    s_check ("event: a\nevent: b\ndata: x\n\n", 1024, 0, "[b]x|");
    //  A name longer than the buffer is cut, not overflowed.
    char input[256], expect[256];
    char name[101];
    memset (name, 'n', 100);
    name[100] = '\0';
    snprintf (input, sizeof input, "event: %s\ndata: d\n\n", name);
    snprintf (expect, sizeof expect, "[%.63s]d|", name);
    s_check (input, 1024, 0, expect);
}

static void test_events_without_data (void **state)
{
    //  Not dispatched, and their name does not leak into the next event.
    s_check ("event: nodata\n\ndata: b\n\n", 1024, 0, "[]b|");
    s_check ("\n\n\r\n: only comments\n\n", 1024, 0, "");
    //  An event not closed by a blank line never fires.
    s_check ("data: complete\n\ndata: cut", 1024, 0, "[]complete|");
    s_check ("data: cut\n", 1024, 0, "");
}

static void test_limits (void **state)
{
    //  A line of exactly max bytes is fine, one more is too large.
    s_check ("data:0123456789a\n\n", 16, 0, "[]0123456789a|");
    s_check ("data:0123456789ab\n\n", 16, CM_E_TOO_LARGE, "");
    //  Joined data of exactly max bytes is fine, one more is too large,
    //  even though each line is short.
    s_check ("data:aaaaaaaa\ndata:bbbbbbb\n\n", 16, 0, "[]aaaaaaaa\nbbbbbbb|");
    s_check ("data:aaaaaaaa\ndata:bbbbbbbb\n\n", 16, CM_E_TOO_LARGE, "");
    //  Events before the oversized one were delivered.
    s_check ("data: ok\n\ndata:0123456789abcdef\n\n", 16, CM_E_TOO_LARGE, "[]ok|");
    //  A comment line counts too: memory is bounded whatever the line is.
    s_check (":0123456789abcdefgh\n", 16, CM_E_TOO_LARGE, "");
}

static void test_reset_after_error (void **state)
{
    wrk_sse_t sse;
    wrk_sse_init (&sse, 8);
    s_rec_t rec;
    memset (&rec, 0, sizeof rec);
    const char *big = "data: far too long\n\n";
    assert_int_equal (wrk_sse_feed (&sse, big, strlen (big), s_on_event, &rec),
                      CM_E_TOO_LARGE);
    wrk_sse_reset (&sse);
    const char *ok = "data: ok\n\n";
    assert_int_equal (wrk_sse_feed (&sse, ok, strlen (ok), s_on_event, &rec), 0);
    assert_string_equal (rec.log, "[]ok|");
    wrk_sse_fini (&sse);
    wrk_sse_fini (&sse); //  twice is harmless
}

static void test_callback_stops (void **state)
{
    const char *input = "data: 1\n\ndata: 2\n\ndata: 3\n\n";
    s_rec_t rec;
    memset (&rec, 0, sizeof rec);
    rec.stop_after = 2;
    wrk_sse_t sse;
    wrk_sse_init (&sse, 1024);
    assert_int_equal (wrk_sse_feed (&sse, input, strlen (input), s_on_event, &rec),
                      CM_E_CANCELLED);
    assert_string_equal (rec.log, "[]1|[]2|");
    wrk_sse_fini (&sse);
}

typedef struct {
    size_t len;
    char bytes[8];
} s_raw_t;

static int s_on_raw (void *arg, const char *event, const char *data, size_t len)
{
    s_raw_t *got = (s_raw_t *)arg;
    assert_true (len < sizeof got->bytes);
    assert_int_equal (data[len], '\0');
    memcpy (got->bytes, data, len);
    got->len = len;
    return 0;
}

static void test_binary_data (void **state)
{
    //  A NUL inside a line is data like any other byte; data_len tells.
    static const char input[] = "data: a\0b\n\n";
    wrk_sse_t sse;
    wrk_sse_init (&sse, 1024);
    s_raw_t got = {0};
    assert_int_equal (wrk_sse_feed (&sse, input, sizeof input - 1, s_on_raw, &got), 0);
    assert_int_equal (got.len, 3);
    assert_memory_equal (got.bytes, "a\0b", 3);
    wrk_sse_fini (&sse);
}

int main (void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test (test_line_endings),
        cmocka_unit_test (test_comments_and_fields),
        cmocka_unit_test (test_multi_line_data),
        cmocka_unit_test (test_event_names),
        cmocka_unit_test (test_events_without_data),
        cmocka_unit_test (test_limits),
        cmocka_unit_test (test_reset_after_error),
        cmocka_unit_test (test_callback_stops),
        cmocka_unit_test (test_binary_data),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
