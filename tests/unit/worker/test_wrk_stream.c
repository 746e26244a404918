/*  test_wrk_stream.c - OpenAI and Anthropic stream decoding: realistic
    streams give an exact delta sequence however the body is cut, and every
    kind of malformed stream is an error code with a message. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cm_error.h"
#include "wrk_stream.h"

//  Each delta becomes one line of the log, so a run compares as a string.
typedef struct {
    char *log;
    size_t len, cap;
    int stop_at; //  return CM_E_CANCELLED from this delta (1-based), 0 never
    int count;
    bool terminal; //  FINISH or ERROR seen: nothing may follow
} s_rec_t;

static void s_log (s_rec_t *rec, const char *fmt, ...)
    __attribute__ ((format (printf, 2, 3)));

static void s_log (s_rec_t *rec, const char *fmt, ...)
{
    va_list args;
    va_start (args, fmt);
    int n = vsnprintf (NULL, 0, fmt, args);
    va_end (args);
    assert_true (n >= 0);
    if (rec->len + (size_t)n + 1 > rec->cap) {
        rec->cap = (rec->len + (size_t)n + 1) * 2;
        rec->log = realloc (rec->log, rec->cap);
        assert_non_null (rec->log);
    }
    va_start (args, fmt);
    vsnprintf (rec->log + rec->len, rec->cap - rec->len, fmt, args);
    va_end (args);
    rec->len += (size_t)n;
}

static int s_on_delta (void *arg, const wrk_delta_t *d)
{
    s_rec_t *rec = (s_rec_t *)arg;
    assert_false (rec->terminal);
    assert_non_null (d->text);
    assert_int_equal (strlen (d->text), d->text_len);
    switch (d->kind) {
    case WRK_DELTA_TEXT:
        s_log (rec, "text:%s\n", d->text);
        break;
    case WRK_DELTA_THINKING:
        s_log (rec, "think:%s\n", d->text);
        break;
    case WRK_DELTA_SIGNATURE:
        s_log (rec, "sig:%s\n", d->text);
        break;
    case WRK_DELTA_TOOL_START:
        s_log (rec, "start:%d:%s:%s\n", d->index, d->id, d->name);
        break;
    case WRK_DELTA_TOOL_END:
        s_log (rec, "end:%d:%s:%s:%s\n", d->index, d->id, d->name, d->text);
        break;
    case WRK_DELTA_USAGE:
        s_log (rec, "usage:%llu:%llu:%llu\n", (unsigned long long)d->input_tokens,
               (unsigned long long)d->output_tokens, (unsigned long long)d->cache_tokens);
        break;
    case WRK_DELTA_FINISH:
        s_log (rec, "finish:%s\n", d->stop_reason);
        rec->terminal = true;
        break;
    case WRK_DELTA_ERROR:
        s_log (rec, "error:%s:%s:%d\n", d->error_type, d->text, d->retryable);
        rec->terminal = true;
        break;
    }
    rec->count++;
    return rec->stop_at && rec->count == rec->stop_at ? CM_E_CANCELLED : 0;
}

typedef struct {
    int feed_rc; //  first non-zero feed return
    int end_rc;
    char err[256];
} s_result_t;

//  Decode `body` fed in the pieces [0, split) and [split, len) (one byte
//  at a time when split is SIZE_MAX), then end it.
static s_result_t s_run (wrk_api_t api, const char *body, size_t len, size_t split,
                         s_rec_t *rec)
{
    free (rec->log);
    memset (rec, 0, sizeof *rec);
    s_log (rec, "%s", "");
    wrk_stream_t *stream = wrk_stream_new (api, s_on_delta, rec);
    assert_non_null (stream);
    s_result_t result = {0};
    if (split == SIZE_MAX) {
        for (size_t i = 0; i < len && result.feed_rc == 0; i++)
            result.feed_rc = wrk_stream_feed (stream, body + i, 1);
    } else {
        result.feed_rc = wrk_stream_feed (stream, body, split);
        if (result.feed_rc == 0)
            result.feed_rc = wrk_stream_feed (stream, body + split, len - split);
    }
    result.end_rc = wrk_stream_end (stream);
    snprintf (result.err, sizeof result.err, "%s", wrk_stream_error (stream));
    wrk_stream_destroy (&stream);
    assert_null (stream);
    return result;
}

static s_result_t s_decode (wrk_api_t api, const char *body, s_rec_t *rec)
{
    return s_run (api, body, strlen (body), strlen (body), rec);
}

//  body decodes to `expect`, whole, split at every byte boundary, and one
//  byte at a time.
static void s_check_splits (wrk_api_t api, const char *body, const char *expect)
{
    size_t len = strlen (body);
    s_rec_t rec = {0};
    s_result_t r = s_run (api, body, len, len, &rec);
    assert_int_equal (r.feed_rc, 0);
    assert_int_equal (r.end_rc, 0);
    assert_string_equal (rec.log, expect);
    for (size_t split = 0; split <= len; split++) {
        r = s_run (api, body, len, split, &rec);
        assert_int_equal (r.feed_rc, 0);
        assert_int_equal (r.end_rc, 0);
        assert_string_equal (rec.log, expect);
    }
    r = s_run (api, body, len, SIZE_MAX, &rec);
    assert_int_equal (r.end_rc, 0);
    assert_string_equal (rec.log, expect);
    free (rec.log);
}

//  A chunk the way api.openai.com frames it, with `delta` and finish.
#define OA_CHUNK(delta, finish)                                                        \
    "data: {\"id\":\"chatcmpl-9\",\"object\":\"chat.completion.chunk\",\"created\":1," \
    "\"model\":\"gpt-x\",\"choices\":[{\"index\":0,\"delta\":" delta                   \
    ",\"logprobs\":null,\"finish_reason\":" finish "}]}\n\n"

static const char s_openai_body[] = OA_CHUNK (
    "{\"role\":\"assistant\",\"content\":\"\",\"refusal\":null}",
    "null") OA_CHUNK ("{\"reasoning_content\":\"Let me think.\"}",
                      "null") OA_CHUNK ("{\"content\":\"I'll read \"}", "null")
    OA_CHUNK ("{\"content\":\"both files \\u00e9.\"}",
              "null") ": keep-alive\n\n" OA_CHUNK ("{\"tool_calls\":[{\"index\":0,\"id\":"
                                                   "\"call_a\",\"type\":\"function\","
                                                   "\"function\":{\"name\":\"read_file\","
                                                   "\"arguments\":\"\"}}]}",
                                                   "null")
        OA_CHUNK (
            "{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"pa\"}}]}",
            "null") OA_CHUNK ("{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":"
                              "\"th\\\": "
                              "\\\"a.txt\\\"}\"}}]}",
                              "null")
            OA_CHUNK (
                "{\"tool_calls\":[{\"index\":1,\"id\":\"call_b\",\"type\":\"function\","
                "\"function\":{\"name\":\"list_dir\",\"arguments\":\"{\\\"path\\\":\"}}]"
                "}",
                "null") OA_CHUNK ("{\"tool_calls\":[{\"index\":1,\"function\":{"
                                  "\"arguments\":\"\\\"src\\\", "
                                  "\\\"depth\\\": 2}\"}}]}",
                                  "null")
                OA_CHUNK ("{}",
                          "\"tool_calls\"") "data: "
                                            "{\"id\":\"chatcmpl-9\",\"object\":\"chat."
                                            "completion.chunk\",\"created\":1,"
                                            "\"model\":\"gpt-x\",\"choices\":[],"
                                            "\"usage\":{\"prompt_tokens\":100,"
                                            "\"completion_tokens\":20,\"total_tokens\":"
                                            "120,\"prompt_tokens_details\":"
                                            "{\"cached_tokens\":64}}}\n\n"
                                            "data: [DONE]\n\n";

static const char s_openai_expect[] =
    "think:Let me think.\n"
    "text:I'll read \n"
    "text:both files \xc3\xa9.\n"
    "start:0:call_a:read_file\n"
    "start:1:call_b:list_dir\n"
    "usage:100:20:64\n"
    "end:0:call_a:read_file:{\"path\":\"a.txt\"}\n"
    "end:1:call_b:list_dir:{\"path\":\"src\",\"depth\":2}\n"
    "finish:tool_use\n";

#define AN_EVENT(name, data) "event: " name "\ndata: " data "\n\n"
#define AN_DELTA(index, delta)                                                         \
    AN_EVENT ("content_block_delta",                                                   \
              "{\"type\":\"content_block_delta\",\"index\":" index ",\"delta\":" delta \
              "}")

static const char s_anthropic_body[] = AN_EVENT (
    "message_start",
    "{\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\","
    "\"role\":\"assistant\",\"content\":[],\"model\":\"claude-x\",\"stop_reason\":"
    "null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":50,"
    "\"cache_creation_input_tokens\":10,\"cache_read_input_tokens\":40,"
    "\"output_tokens\":1}}}") AN_EVENT ("content_block_start",
                                        "{\"type\":\"content_block_start\",\"index\":0,"
                                        "\"content_block\":"
                                        "{\"type\":\"thinking\",\"thinking\":\"\","
                                        "\"signature\":\"\"}}")
    AN_EVENT ("ping", "{\"type\": \"ping\"}") AN_DELTA (
        "0", "{\"type\":\"thinking_delta\",\"thinking\":\"Need both \"}")
        AN_DELTA ("0", "{\"type\":\"thinking_delta\",\"thinking\":\"files.\"}") AN_DELTA (
            "0", "{\"type\":\"signature_delta\",\"signature\":\"EqQBCgIYAhIM\"}")
            AN_EVENT ("content_block_stop",
                      "{\"type\":\"content_block_stop\",\"index\":"
                      "0}") AN_EVENT ("content_block_start",
                                      "{\"type\":\"content_block_start\",\"index\":1,"
                                      "\"content_block\":"
                                      "{\"type\":\"text\",\"text\":\"\"}}")
                AN_DELTA ("1",
                          "{\"type\":\"text_"
                          "delta\",\"text\":"
                          "\"Reading.\"}") AN_EVENT ("content_block_stop",
                                                     "{\"type\":\"content_block_stop\","
                                                     "\"index\":1}")
                    AN_EVENT (
                        "content_block_start",
                        "{\"type\":\"content_block_start\",\"index\":2,\"content_block\":"
                        "{\"type\":\"tool_use\",\"id\":\"toolu_a\",\"name\":\"read_"
                        "file\","
                        "\"input\":{}}}") AN_DELTA ("2", "{\"type\":\"input_json_delta\","
                                                         "\"partial_json\":\"\"}")
                        AN_DELTA ("2",
                                  "{\"type\":\"input_json_delta\",\"partial_json\":\"{"
                                  "\\\"path\\\": \"}")
                            AN_DELTA ("2", "{\"type\":\"input_json_delta\",\"partial_"
                                           "json\":\"\\\"a.txt\\\"}"
                                           "\"}") AN_EVENT ("content_block_stop",
                                                            "{\"type\":\"content_block_"
                                                            "stop\",\"index\":2}")
                                AN_EVENT (
                                    "content_block_start",
                                    "{\"type\":\"content_block_start\",\"index\":3,"
                                    "\"content_block\":"
                                    "{\"type\":\"tool_use\",\"id\":\"toolu_b\",\"name\":"
                                    "\"list_dir\",\"input\":{}}}")
                                    AN_DELTA ("3",
                                              "{\"type\":\"input_json_delta\",\"partial_"
                                              "json\":\"{\\\"path\\\"\"}")
                                        AN_DELTA (
                                            "3",
                                            "{\"type\":\"input_json_delta\",\"partial_"
                                            "json\":\": \\\"src\\\",\"}")
                                            AN_DELTA ("3",
                                                      "{\"type\":\"input_json_delta\","
                                                      "\"partial_"
                                                      "json\":\" \\\"depth\\\": 2}\"}")
                                                AN_EVENT ("content_block_stop",
                                                          "{\"type\":\"content_block_"
                                                          "stop\",\"index\":3}")
                                                    AN_EVENT (
                                                        "message_delta",
                                                        "{\"type\":\"message_delta\","
                                                        "\"delta\":"
                                                        "{\"stop_reason\":\"tool_use\","
                                                        "\"stop_sequence\":null},"
                                                        "\"usage\":{"
                                                        "\"output_tokens\":42}}")
                                                        AN_EVENT ("some_future_event",
                                                                  "not even json")
                                                            AN_EVENT (
                                                                "message_stop",
                                                                "{\"type\":\"message_"
                                                                "stop\"}");

static const char s_anthropic_expect[] =
    "usage:100:1:40\n"
    "think:Need both \n"
    "think:files.\n"
    "sig:EqQBCgIYAhIM\n"
    "text:Reading.\n"
    "start:0:toolu_a:read_file\n"
    "end:0:toolu_a:read_file:{\"path\":\"a.txt\"}\n"
    "start:1:toolu_b:list_dir\n"
    "end:1:toolu_b:list_dir:{\"path\":\"src\",\"depth\":2}\n"
    "usage:100:42:40\n"
    "finish:tool_use\n";

//  The same body with CRLF line ends.
static char *s_crlf (const char *body)
{
    char *out = malloc (strlen (body) * 2 + 1);
    assert_non_null (out);
    char *p = out;
    for (; *body; body++) {
        if (*body == '\n') *p++ = '\r';
        *p++ = *body;
    }
    *p = '\0';
    return out;
}

static void test_openai_stream (void **state)
{
    s_check_splits (WRK_API_OPENAI, s_openai_body, s_openai_expect);
    char *crlf = s_crlf (s_openai_body);
    s_check_splits (WRK_API_OPENAI, crlf, s_openai_expect);
    free (crlf);
}

static void test_anthropic_stream (void **state)
{
    s_check_splits (WRK_API_ANTHROPIC, s_anthropic_body, s_anthropic_expect);
    char *crlf = s_crlf (s_anthropic_body);
    s_check_splits (WRK_API_ANTHROPIC, crlf, s_anthropic_expect);
    free (crlf);
}

static void test_openai_variants (void **state)
{
    s_rec_t rec = {0};
    s_result_t r;
    //  "reasoning" (OpenRouter, Ollama); finish_reason stop/length mapped;
    //  usage inside the finish chunk; a stray blank data line ignored.
    r = s_decode (WRK_API_OPENAI,
                  OA_CHUNK ("{\"reasoning\":\"hmm\"}", "null")
                      OA_CHUNK ("{\"content\":\"hi\"}", "\"length\"") "data: [DONE]\n\n",
                  &rec);
    assert_int_equal (r.end_rc, 0);
    assert_string_equal (rec.log, "think:hmm\ntext:hi\nfinish:max_tokens\n");

    //  A server that leaves out index and id, and says "stop" after a call.
    r = s_decode (
        WRK_API_OPENAI,
        OA_CHUNK ("{\"tool_calls\":[{\"function\":{\"name\":\"glob\","
                  "\"arguments\":\"{\\\"pattern\\\":\"}}]}",
                  "null")
            OA_CHUNK (
                "{\"tool_calls\":[{\"function\":{\"arguments\":\"\\\"*.c\\\"}\"}}]}",
                "\"stop\"") "data: [DONE]\n\n",
        &rec);
    assert_int_equal (r.feed_rc, 0);
    assert_string_equal (rec.log, "start:0:call_0:glob\n"
                                  "end:0:call_0:glob:{\"pattern\":\"*.c\"}\n"
                                  "finish:tool_use\n");

    //  finish_reason then the body ends without [DONE]: still complete.
    r = s_decode (WRK_API_OPENAI, OA_CHUNK ("{\"content\":\"x\"}", "\"stop\""), &rec);
    assert_int_equal (r.feed_rc, 0);
    assert_int_equal (r.end_rc, 0);
    assert_string_equal (rec.log, "text:x\nfinish:end_turn\n");

    //  Reasons: content_filter is a refusal; an unknown one passes through
    //  with only [a-z0-9_] kept.
    r = s_decode (WRK_API_OPENAI,
                  OA_CHUNK ("{}", "\"content_filter\"") "data: [DONE]\n\n", &rec);
    assert_string_equal (rec.log, "finish:refusal\n");
    r = s_decode (WRK_API_OPENAI,
                  OA_CHUNK ("{}", "\"Odd Reason!\\n\"") "data: [DONE]\n\n", &rec);
    assert_string_equal (rec.log, "finish:oddreason\n");

    //  Bytes after [DONE] are not decoded, even if they are garbage.
    r = s_decode (WRK_API_OPENAI, "data: [DONE]\n\ndata: {garbage\n\n", &rec);
    assert_int_equal (r.feed_rc, 0);
    assert_int_equal (r.end_rc, 0);
    assert_string_equal (rec.log, "finish:end_turn\n");
    free (rec.log);
}

static void test_empty_tool_args (void **state)
{
    s_rec_t rec = {0};
    s_result_t r = s_decode (
        WRK_API_OPENAI,
        OA_CHUNK ("{\"tool_calls\":[{\"index\":0,\"id\":\"c1\",\"function\":{\"name\":"
                  "\"update_plan\",\"arguments\":\"\"}}]}",
                  "\"tool_calls\"") "data: [DONE]\n\n",
        &rec);
    assert_int_equal (r.end_rc, 0);
    assert_string_equal (
        rec.log, "start:0:c1:update_plan\nend:0:c1:update_plan:{}\nfinish:tool_use\n");

    r = s_decode (
        WRK_API_ANTHROPIC,
        AN_EVENT ("content_block_start",
                  "{\"type\":\"content_block_start\",\"index\":0,\"content_block\":"
                  "{\"type\":\"tool_use\",\"id\":\"t1\",\"name\":\"list_dir\","
                  "\"input\":{}}}")
            AN_DELTA ("0", "{\"type\":\"input_json_delta\",\"partial_json\":\"\"}")
                AN_EVENT ("content_block_stop",
                          "{\"type\":\"content_block_stop\",\"index\":0}")
                    AN_EVENT ("message_stop", "{\"type\":\"message_stop\"}"),
        &rec);
    assert_int_equal (r.end_rc, 0);
    assert_string_equal (rec.log,
                         "start:0:t1:list_dir\nend:0:t1:list_dir:{}\nfinish:end_turn\n");
    free (rec.log);
}

static void test_anthropic_variants (void **state)
{
    s_rec_t rec = {0};
    //  Input sent whole in content_block_start, the block never stopped:
    //  message_stop still delivers the call.  No SSE event names: the
    //  data's type decides.
    s_result_t r = s_decode (
        WRK_API_ANTHROPIC,
        "data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":"
        "{\"type\":\"tool_use\",\"id\":\"t\",\"name\":\"f\",\"input\":{\"x\": 1}}}\n\n"
        "data: {\"type\":\"ping\"}\n\n"
        "data: "
        "{\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"max_tokens\"}}\n\n"
        "data: {\"type\":\"message_stop\"}\n\n",
        &rec);
    assert_int_equal (r.end_rc, 0);
    assert_string_equal (rec.log,
                         "start:0:t:f\nend:0:t:f:{\"x\":1}\nfinish:max_tokens\n");
    //  redacted_thinking is skipped; a tool_use without a name is not.
    r = s_decode (
        WRK_API_ANTHROPIC,
        AN_EVENT ("content_block_start",
                  "{\"type\":\"content_block_start\",\"index\":0,\"content_block\":"
                  "{\"type\":\"redacted_thinking\",\"data\":\"EmwKAhgB\"}}")
            AN_EVENT ("content_block_stop",
                      "{\"type\":\"content_block_stop\",\"index\":0}")
                AN_EVENT (
                    "content_block_start",
                    "{\"type\":\"content_block_start\",\"index\":1,\"content_block\":"
                    "{\"type\":\"tool_use\",\"id\":\"t\"}}"),
        &rec);
    assert_int_equal (r.feed_rc, CM_E_UPSTREAM);
    assert_non_null (strstr (r.err, "without an id or a name"));
    assert_string_equal (rec.log, "");
    free (rec.log);
}

static void test_malformed_json (void **state)
{
    s_rec_t rec = {0};
    s_result_t r = s_decode (
        WRK_API_OPENAI,
        OA_CHUNK ("{\"content\":\"ok\"}", "null") "data: {\"choices\": [\n\n" OA_CHUNK (
            "{\"content\":\"no\"}", "null"),
        &rec);
    assert_int_equal (r.feed_rc, CM_E_UPSTREAM);
    assert_int_equal (r.end_rc, CM_E_UPSTREAM); //  sticky
    assert_non_null (strstr (r.err, "not valid JSON"));
    assert_string_equal (rec.log, "text:ok\n");

    r = s_decode (WRK_API_ANTHROPIC, AN_EVENT ("message_start", "{\"type\":"), &rec);
    assert_int_equal (r.feed_rc, CM_E_UPSTREAM);
    assert_non_null (strstr (r.err, "not valid JSON"));

    //  Valid JSON that is not an object.
    r = s_decode (WRK_API_OPENAI, "data: [1,2]\n\n", &rec);
    assert_int_equal (r.feed_rc, CM_E_UPSTREAM);
    assert_non_null (strstr (r.err, "not a JSON object"));
    free (rec.log);
}

static void test_unknown_call (void **state)
{
    s_rec_t rec = {0};
    //  OpenAI: a fragment for index 1, which never had an id or a name.
    s_result_t r = s_decode (
        WRK_API_OPENAI,
        OA_CHUNK (
            "{\"tool_calls\":[{\"index\":0,\"id\":\"c\",\"function\":{\"name\":\"f\","
            "\"arguments\":\"{}\"}}]}",
            "null")
            OA_CHUNK (
                "{\"tool_calls\":[{\"index\":1,\"function\":{\"arguments\":\"{}\"}}]}",
                "null"),
        &rec);
    assert_int_equal (r.feed_rc, CM_E_UPSTREAM);
    assert_non_null (strstr (r.err, "tool call 1, which never started"));

    //  Anthropic: input for a block that is not a tool call in progress.
    r = s_decode (
        WRK_API_ANTHROPIC,
        AN_EVENT ("content_block_start",
                  "{\"type\":\"content_block_start\",\"index\":0,\"content_block\":"
                  "{\"type\":\"text\",\"text\":\"\"}}")
            AN_DELTA ("0", "{\"type\":\"input_json_delta\",\"partial_json\":\"{}\"}"),
        &rec);
    assert_int_equal (r.feed_rc, CM_E_UPSTREAM);
    assert_non_null (strstr (r.err, "not a tool call in progress"));

    //  ... but input for a block type we skip (server tools) is skipped too.
    r = s_decode (
        WRK_API_ANTHROPIC,
        AN_EVENT ("content_block_start",
                  "{\"type\":\"content_block_start\",\"index\":0,\"content_block\":"
                  "{\"type\":\"server_tool_use\",\"id\":\"s\",\"name\":\"web\"}}")
            AN_DELTA ("0", "{\"type\":\"input_json_delta\",\"partial_json\":\"{}\"}")
                AN_EVENT ("content_block_stop",
                          "{\"type\":\"content_block_stop\",\"index\":0}")
                    AN_EVENT ("message_stop", "{\"type\":\"message_stop\"}"),
        &rec);
    assert_int_equal (r.end_rc, 0);
    assert_string_equal (rec.log, "finish:end_turn\n");
    free (rec.log);
}

static void test_args_not_object (void **state)
{
    s_rec_t rec = {0};
    s_result_t r = s_decode (
        WRK_API_OPENAI,
        OA_CHUNK (
            "{\"tool_calls\":[{\"index\":0,\"id\":\"c\",\"function\":{\"name\":\"f\","
            "\"arguments\":\"[1, 2]\"}}]}",
            "\"tool_calls\"") "data: [DONE]\n\n",
        &rec);
    assert_int_equal (r.feed_rc, CM_E_UPSTREAM);
    assert_non_null (strstr (r.err, "not a JSON object"));
    assert_string_equal (rec.log, "start:0:c:f\n"); //  no END, no FINISH

    r = s_decode (
        WRK_API_ANTHROPIC,
        AN_EVENT ("content_block_start",
                  "{\"type\":\"content_block_start\",\"index\":0,\"content_block\":"
                  "{\"type\":\"tool_use\",\"id\":\"t\",\"name\":\"f\",\"input\":{}}}")
            AN_DELTA ("0",
                      "{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"a\\\":\"}")
                AN_EVENT ("content_block_stop",
                          "{\"type\":\"content_block_stop\",\"index\":0}"),
        &rec);
    assert_int_equal (r.feed_rc, CM_E_UPSTREAM);
    assert_non_null (strstr (r.err, "arguments of tool call 0 (f) are not valid JSON"));

    r = s_decode (
        WRK_API_ANTHROPIC,
        AN_EVENT ("content_block_start",
                  "{\"type\":\"content_block_start\",\"index\":0,\"content_block\":"
                  "{\"type\":\"tool_use\",\"id\":\"t\",\"name\":\"f\",\"input\":{}}}")
            AN_DELTA ("0",
                      "{\"type\":\"input_json_delta\",\"partial_json\":\"\\\"x\\\"\"}")
                AN_EVENT ("content_block_stop",
                          "{\"type\":\"content_block_stop\",\"index\":0}"),
        &rec);
    assert_int_equal (r.feed_rc, CM_E_UPSTREAM);
    assert_non_null (strstr (r.err, "not a JSON object"));
    free (rec.log);
}

//  n OpenAI tool calls, indexes 0 .. n-1, then [DONE].
static char *s_openai_calls (int n)
{
    size_t cap = (size_t)n * 300 + 64, len = 0;
    char *body = malloc (cap);
    assert_non_null (body);
    for (int i = 0; i < n; i++)
        len += (size_t)snprintf (
            body + len, cap - len,
            "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":%d,"
            "\"id\":\"c%d\",\"function\":{\"name\":\"f\",\"arguments\":"
            "\"{}\"}}]}}]}\n\n",
            i, i);
    snprintf (body + len, cap - len, "data: [DONE]\n\n");
    return body;
}

//  n Anthropic tool_use blocks, then message_stop.
static char *s_anthropic_calls (int n)
{
    size_t cap = (size_t)n * 400 + 64, len = 0;
    char *body = malloc (cap);
    assert_non_null (body);
    for (int i = 0; i < n; i++)
        len += (size_t)snprintf (
            body + len, cap - len,
            "event: content_block_start\ndata: "
            "{\"type\":\"content_block_start\",\"index\":%d,"
            "\"content_block\":{\"type\":\"tool_use\",\"id\":\"t%d\",\"name\":\"f\","
            "\"input\":{}}}\n\nevent: content_block_stop\ndata: {\"type\":"
            "\"content_block_stop\",\"index\":%d}\n\n",
            i, i, i);
    snprintf (body + len, cap - len, "event: message_stop\ndata: {}\n\n");
    return body;
}

static void test_too_many_calls (void **state)
{
    s_rec_t rec = {0};
    //  At the limit: fine.
    char *body = s_openai_calls (WRK_STREAM_MAX_CALLS);
    s_result_t r = s_decode (WRK_API_OPENAI, body, &rec);
    free (body);
    assert_int_equal (r.feed_rc, 0);
    assert_int_equal (r.end_rc, 0);
    assert_non_null (strstr (rec.log, "end:63:c63:f:{}\nfinish:tool_use\n"));
    //  One past: refused.
    body = s_openai_calls (WRK_STREAM_MAX_CALLS + 1);
    r = s_decode (WRK_API_OPENAI, body, &rec);
    free (body);
    assert_int_equal (r.feed_rc, CM_E_TOO_LARGE);
    assert_non_null (strstr (r.err, "more than 64 tool calls"));

    body = s_anthropic_calls (WRK_STREAM_MAX_CALLS);
    r = s_decode (WRK_API_ANTHROPIC, body, &rec);
    free (body);
    assert_int_equal (r.end_rc, 0);
    assert_non_null (strstr (rec.log, "end:63:t63:f:{}\nfinish:end_turn\n"));
    body = s_anthropic_calls (WRK_STREAM_MAX_CALLS + 1);
    r = s_decode (WRK_API_ANTHROPIC, body, &rec);
    free (body);
    assert_int_equal (r.feed_rc, CM_E_TOO_LARGE);

    //  A wild index is the same limit, and a negative one is malformed.
    r = s_decode (
        WRK_API_OPENAI,
        "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":99999999999,"
        "\"id\":\"c\",\"function\":{\"name\":\"f\"}}]}}]}\n\n",
        &rec);
    assert_int_equal (r.feed_rc, CM_E_TOO_LARGE);
    r = s_decode (WRK_API_OPENAI,
                  "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":-1,"
                  "\"id\":\"c\",\"function\":{\"name\":\"f\"}}]}}]}\n\n",
                  &rec);
    assert_int_equal (r.feed_rc, CM_E_UPSTREAM);
    free (rec.log);
}

//  One call whose arguments are {"a":"xxx..."} of exactly `total` bytes,
//  sent in two fragments (each event stays under the event limit).
static char *s_big_args (size_t total)
{
    size_t fill = total - 8; //  {"a":"  +  "}
    size_t cap = total + 4096;
    char *body = malloc (cap);
    assert_non_null (body);
    size_t half = fill / 2;
    size_t len = (size_t)snprintf (
        body, cap,
        "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"c\","
        "\"function\":{\"name\":\"f\",\"arguments\":\"{\\\"a\\\":\\\"");
    memset (body + len, 'x', half);
    len += half;
    len +=
        (size_t)snprintf (body + len, cap - len,
                          "\"}}]}}]}\n\ndata: {\"choices\":[{\"delta\":{\"tool_calls\":"
                          "[{\"index\":0,\"function\":{\"arguments\":\"");
    memset (body + len, 'x', fill - half);
    len += fill - half;
    snprintf (body + len, cap - len, "\\\"}\"}}]}}]}\n\ndata: [DONE]\n\n");
    return body;
}

static void test_limits (void **state)
{
    s_rec_t rec = {0};
    char *body = s_big_args (WRK_STREAM_MAX_ARGS);
    s_result_t r = s_decode (WRK_API_OPENAI, body, &rec);
    free (body);
    assert_int_equal (r.feed_rc, 0);
    assert_int_equal (r.end_rc, 0);
    assert_true (rec.len > WRK_STREAM_MAX_ARGS);

    body = s_big_args (WRK_STREAM_MAX_ARGS + 1);
    r = s_decode (WRK_API_OPENAI, body, &rec);
    free (body);
    assert_int_equal (r.feed_rc, CM_E_TOO_LARGE);
    assert_non_null (strstr (r.err, "exceed"));

    //  One event larger than the event limit.
    size_t big = WRK_STREAM_MAX_EVENT + 16;
    body = malloc (big + 16);
    assert_non_null (body);
    memcpy (body, "data: ", 6);
    memset (body + 6, 'x', big);
    memcpy (body + 6 + big, "\n\n", 3);
    r = s_decode (WRK_API_OPENAI, body, &rec);
    free (body);
    assert_int_equal (r.feed_rc, CM_E_TOO_LARGE);
    assert_non_null (strstr (r.err, "larger than"));

    //  An id longer than the limit.
    char chunk[1024], id[WRK_STREAM_MAX_ID + 2];
    memset (id, 'i', sizeof id - 1);
    id[sizeof id - 1] = '\0';
    snprintf (
        chunk, sizeof chunk,
        "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"%s\","
        "\"function\":{\"name\":\"f\"}}]}}]}\n\n",
        id);
    r = s_decode (WRK_API_OPENAI, chunk, &rec);
    assert_int_equal (r.feed_rc, CM_E_TOO_LARGE);
    id[WRK_STREAM_MAX_ID] = '\0'; //  at the limit
    snprintf (
        chunk, sizeof chunk,
        "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"%s\","
        "\"function\":{\"name\":\"f\"}}]}}]}\n\ndata: [DONE]\n\n",
        id);
    r = s_decode (WRK_API_OPENAI, chunk, &rec);
    assert_int_equal (r.feed_rc, 0);
    assert_int_equal (r.end_rc, 0);
    free (rec.log);
}

static void test_truncated (void **state)
{
    s_rec_t rec = {0};
    size_t cut = strlen (s_openai_body) - strlen ("data: [DONE]\n\n");
    //  Cut before the finish_reason chunk ends: no FINISH, end says so.
    size_t before_finish = strstr (s_openai_body, "\"tool_calls\"}") - s_openai_body;
    s_result_t r =
        s_run (WRK_API_OPENAI, s_openai_body, before_finish, before_finish, &rec);
    assert_int_equal (r.feed_rc, 0);
    assert_int_equal (r.end_rc, CM_E_UPSTREAM);
    assert_string_equal (r.err, "model stream ended before it finished");
    assert_null (strstr (rec.log, "finish:"));
    //  Cut after finish_reason and usage: complete (see wrk_stream_end).
    r = s_run (WRK_API_OPENAI, s_openai_body, cut, cut, &rec);
    assert_int_equal (r.end_rc, 0);
    assert_string_equal (rec.log, s_openai_expect);

    //  Anthropic without message_stop, at every length short of it.
    size_t full = strlen (s_anthropic_body);
    size_t stop = strstr (s_anthropic_body, "event: message_stop") - s_anthropic_body;
    for (size_t len = 0; len < full; len += (len < stop ? 97 : 1)) {
        r = s_run (WRK_API_ANTHROPIC, s_anthropic_body, len, len, &rec);
        assert_int_equal (r.feed_rc, 0);
        assert_int_equal (r.end_rc, CM_E_UPSTREAM);
        assert_string_equal (r.err, "model stream ended before it finished");
    }
    //  The last newline is what dispatches message_stop.
    r = s_run (WRK_API_ANTHROPIC, s_anthropic_body, full, full, &rec);
    assert_int_equal (r.end_rc, 0);
    free (rec.log);
}

static void test_anthropic_error (void **state)
{
    s_rec_t rec = {0};
    s_result_t r = s_decode (
        WRK_API_ANTHROPIC,
        AN_EVENT ("message_start", "{\"type\":\"message_start\",\"message\":{\"usage\":"
                                   "{\"input_tokens\":7,\"output_tokens\":1}}}")
            AN_EVENT ("content_block_start",
                      "{\"type\":\"content_block_start\",\"index\":0,"
                      "\"content_block\":{\"type\":\"text\",\"text\":\"\"}}")
                AN_DELTA ("0", "{\"type\":\"text_delta\",\"text\":\"Hel\"}") AN_EVENT (
                    "error",
                    "{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\","
                    "\"message\":\"Overloaded\"}}")
                    AN_DELTA ("0", "{\"type\":\"text_delta\",\"text\":\"ignored\"}"),
        &rec);
    assert_int_equal (r.feed_rc, 0);
    assert_int_equal (r.end_rc, 0); //  an ERROR is a complete stream
    assert_string_equal (rec.log,
                         "usage:7:1:0\ntext:Hel\nerror:overloaded_error:Overloaded:1\n");

    r = s_decode (WRK_API_ANTHROPIC,
                  AN_EVENT ("error", "{\"type\":\"error\",\"error\":{\"type\":"
                                     "\"invalid_request_error\",\"message\":\"bad\"}}"),
                  &rec);
    assert_string_equal (rec.log, "error:invalid_request_error:bad:0\n");
    r = s_decode (WRK_API_ANTHROPIC,
                  AN_EVENT ("error", "{\"type\":\"error\",\"error\":{\"type\":"
                                     "\"rate_limit_error\",\"message\":\"slow\"}}"),
                  &rec);
    assert_string_equal (rec.log, "error:rate_limit_error:slow:1\n");
    //  No error object at all: still an ERROR, with words for a person.
    r = s_decode (WRK_API_ANTHROPIC, AN_EVENT ("error", "{}"), &rec);
    assert_int_equal (r.end_rc, 0);
    assert_string_equal (rec.log, "error:error:the model provider reported an error:0\n");
    free (rec.log);
}

static void test_openai_error (void **state)
{
    s_rec_t rec = {0};
    s_result_t r = s_decode (
        WRK_API_OPENAI,
        OA_CHUNK ("{\"content\":\"par\"}",
                  "null") "data: {\"error\":{\"message\":\"Rate limit "
                          "reached\",\"type\":\"requests\","
                          "\"param\":null,\"code\":\"rate_limit_exceeded\"}}\n\n"
                          "data: [DONE]\n\n",
        &rec);
    assert_int_equal (r.feed_rc, 0);
    assert_int_equal (r.end_rc, 0);
    assert_string_equal (rec.log, "text:par\nerror:requests:Rate limit reached:1\n");

    r = s_decode (WRK_API_OPENAI,
                  "data: {\"error\":{\"message\":\"bad tools\",\"type\":"
                  "\"invalid_request_error\",\"code\":null}}\n\n",
                  &rec);
    assert_string_equal (rec.log, "error:invalid_request_error:bad tools:0\n");
    //  OpenRouter: numeric HTTP status in code.
    r = s_decode (WRK_API_OPENAI,
                  "data: {\"error\":{\"message\":\"upstream\",\"code\":502}}\n\n", &rec);
    assert_string_equal (rec.log, "error:error:upstream:1\n");
    //  vLLM: the error at the top level.
    r = s_decode (WRK_API_OPENAI,
                  "data: {\"object\":\"error\",\"message\":\"too long\",\"type\":"
                  "\"BadRequestError\",\"code\":400}\n\n",
                  &rec);
    assert_string_equal (rec.log, "error:BadRequestError:too long:0\n");
    //  A bare string.
    r = s_decode (WRK_API_OPENAI, "data: {\"error\":\"server_error\"}\n\n", &rec);
    assert_string_equal (rec.log, "error:error:server_error:0\n");
    free (rec.log);
}

static void test_callback_stops (void **state)
{
    s_rec_t rec = {0};
    free (rec.log);
    memset (&rec, 0, sizeof rec);
    rec.stop_at = 2;
    wrk_stream_t *stream = wrk_stream_new (WRK_API_ANTHROPIC, s_on_delta, &rec);
    assert_int_equal (
        wrk_stream_feed (stream, s_anthropic_body, strlen (s_anthropic_body)),
        CM_E_CANCELLED);
    assert_int_equal (rec.count, 2);
    //  Spent: later calls give the same code and no deltas.
    assert_int_equal (wrk_stream_feed (stream, "data: {}\n\n", 10), CM_E_CANCELLED);
    assert_int_equal (wrk_stream_end (stream), CM_E_CANCELLED);
    assert_int_equal (rec.count, 2);
    wrk_stream_destroy (&stream);
    wrk_stream_destroy (&stream); //  idempotent
    free (rec.log);
    assert_null (wrk_stream_new ((wrk_api_t)7, s_on_delta, NULL));
}

int main (void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test (test_openai_stream),
        cmocka_unit_test (test_anthropic_stream),
        cmocka_unit_test (test_openai_variants),
        cmocka_unit_test (test_empty_tool_args),
        cmocka_unit_test (test_anthropic_variants),
        cmocka_unit_test (test_malformed_json),
        cmocka_unit_test (test_unknown_call),
        cmocka_unit_test (test_args_not_object),
        cmocka_unit_test (test_too_many_calls),
        cmocka_unit_test (test_limits),
        cmocka_unit_test (test_truncated),
        cmocka_unit_test (test_anthropic_error),
        cmocka_unit_test (test_openai_error),
        cmocka_unit_test (test_callback_stops),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
