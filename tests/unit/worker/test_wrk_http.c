/*  test_wrk_http.c - model calls through libcurl multi against the scripted
    model server (tests/fakes), for both APIs: streamed deltas, retries on
    429 with Retry-After and on 5xx, a provider's 400 message, errors inside
    the stream, malformed SSE, a stalled and a cut stream, a wrong API key,
    cancel mid-stream, and 200 calls at once.

    The test drives wrk_http the way the worker's loop does: one epoll fd,
    epoll_wait with wrk_http_next_timeout, wrk_http_on_event for tagged fds,
    wrk_http_on_timeout after every wait.

    usage: test_wrk_http <path to corral-fake-model>
*/
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <curl/curl.h>
#include <jansson.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cm_error.h"
#include "cm_time.h"
#include "wrk_http.h"
#include "wrk_loop.h"

#define S_KEY       "sk-test-0123456789abcdef-secret"
#define S_WRONG_KEY "sk-wrong-key-zyxwvutsrq-9876"
#define S_MANY      200
#define S_FILLER                                                             \
    "0123456789012345678901234567890123456789012345678901234567890123456789" \
    "0123456789012345678901234567890123456789012345678901234567890123456789" \
    "0123456789012345678901234567890123456789012345678901234567890123456789" \
    "0123456789012345678901234567890123456789012345678901234567890123456789" \
    "0123456789012345678901234567890123456789012345678901234567890123456789"

static const char *s_fake_bin;
static char s_dir[64];
static char s_script_path[128];
static pid_t s_pid = -1;
static int s_port;
static char s_openai_url[64];
static char s_anthropic_url[64];

static const char s_script[] =
    "{\"rules\": [\n"
    " {\"name\": \"full\", \"match\": \"full\", \"responses\": [[\n"
    "   {\"thinking\": \"Let me look.\", \"chunks\": 2},\n"
    "   {\"text\": \"I will read it.\", \"chunks\": 3},\n"
    "   {\"tool_call\": {\"name\": \"read_file\", \"arguments\": {\"path\": \"a.txt\"}},"
    "    \"fragments\": 3},\n"
    "   {\"usage\": {\"input\": 100, \"output\": 20}}]]},\n"
    " {\"name\": \"busy\", \"match\": \"busy\", \"responses\": [[\n"
    "   {\"http_error\": 429, \"retry_after\": 1, \"times\": 2},\n"
    "   {\"text\": \"Third time lucky.\"}]]},\n"
    " {\"name\": \"broken\", \"match\": \"broken\", \"responses\": [[\n"
    "   {\"http_error\": 500, \"times\": 100, \"message\": \"server on fire\"},\n"
    "   {\"text\": \"never\"}]]},\n"
    " {\"name\": \"midfail\", \"match\": \"midfail\", \"responses\": [[\n"
    "   {\"text\": \"partial \", \"chunks\": 2},\n"
    "   {\"error_event\": \"overloaded_error\", \"message\": \"Overloaded\"}]]},\n"
    " {\"name\": \"junk\", \"match\": \"junk\", \"responses\": [[\n"
    "   {\"raw\": \"data: {not json\\n\\n\"}]]},\n"
    " {\"name\": \"stall\", \"match\": \"stall\", \"responses\": [[\n"
    "   {\"text\": \"Thinking\"}, {\"stall\": true}]]},\n"
    " {\"name\": \"cut\", \"match\": \"cut\", \"responses\": [[\n"
    "   {\"text\": \"Half a sen\", \"chunks\": 2}, {\"cut\": true}]]},\n"
    " {\"name\": \"slow\", \"match\": \"slow\", \"chunk_delay_ms\": 50, \"responses\": "
    "[[\n"
    "   {\"text\": \"one two three four five six seven eight nine ten\", "
    "\"chunks\": 40}]]},\n"
    " {\"name\": \"many\", \"match\": \"many\", \"chunk_delay_ms\": 5, \"responses\": "
    "[[\n"
    "   {\"text\": \"The quick brown fox jumps over the lazy dog.\", \"chunks\": 8}]]},\n"
    " {\"name\": \"leak\", \"match\": \"leak\", \"responses\": [[\n"
    "   {\"http_error\": 400, \"message\": \"your key " S_KEY
    " is\\u0007 refused; " S_FILLER "\"}]]},\n"
    " {\"name\": \"default\", \"match\": \"*\", \"responses\": [[{\"text\": \"hi\"}]]}\n"
    "]}\n";

//  --------------------------------------------------------------------------
//  The fake server

static void s_http_get (const char *path, const char *method, char **out)
{
    char url[128];
    snprintf (url, sizeof url, "http://127.0.0.1:%d%s", s_port, path);
    FILE *mem = NULL;
    size_t len = 0;
    *out = NULL;
    mem = open_memstream (out, &len);
    assert_non_null (mem);
    CURL *e = curl_easy_init ();
    curl_easy_setopt (e, CURLOPT_URL, url);
    curl_easy_setopt (e, CURLOPT_WRITEDATA, mem);
    curl_easy_setopt (e, CURLOPT_TIMEOUT, 10L);
    if (strcmp (method, "POST") == 0) curl_easy_setopt (e, CURLOPT_POSTFIELDS, "");
    assert_int_equal (curl_easy_perform (e), CURLE_OK);
    curl_easy_cleanup (e);
    fclose (mem);
}

static void s_reset (void)
{
    char *body;
    s_http_get ("/_fake/reset", "POST", &body);
    free (body);
}

static size_t s_request_count (void)
{
    char *body;
    s_http_get ("/_fake/requests", "GET", &body);
    json_t *doc = json_loads (body, 0, NULL);
    free (body);
    assert_true (json_is_array (doc));
    size_t n = json_array_size (doc);
    json_decref (doc);
    return n;
}

static int s_group_setup (void **state)
{
    (void)state;
    curl_global_init (CURL_GLOBAL_DEFAULT);
    snprintf (s_dir, sizeof s_dir, "/tmp/wrk-http-XXXXXX");
    assert_non_null (mkdtemp (s_dir));
    snprintf (s_script_path, sizeof s_script_path, "%s/script.json", s_dir);
    FILE *f = fopen (s_script_path, "w");
    assert_non_null (f);
    assert_int_equal (fwrite (s_script, 1, sizeof s_script - 1, f), sizeof s_script - 1);
    fclose (f);

    int out[2];
    assert_int_equal (pipe (out), 0);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init (&fa);
    posix_spawn_file_actions_adddup2 (&fa, out[1], STDOUT_FILENO);
    posix_spawn_file_actions_addclose (&fa, out[0]);
    char *argv[] = {(char *)s_fake_bin,
                    "--fake-script",
                    s_script_path,
                    "--fake-listen",
                    "127.0.0.1:0",
                    "--fake-api-key",
                    S_KEY,
                    "--log-level",
                    "error",
                    NULL};
    extern char **environ;
    assert_int_equal (posix_spawn (&s_pid, s_fake_bin, &fa, NULL, argv, environ), 0);
    posix_spawn_file_actions_destroy (&fa);
    close (out[1]);
    FILE *in = fdopen (out[0], "r");
    char line[256] = "";
    assert_non_null (fgets (line, sizeof line, in));
    fclose (in);
    assert_int_equal (sscanf (line, "listening on http://127.0.0.1:%d", &s_port), 1);
    snprintf (s_openai_url, sizeof s_openai_url, "http://127.0.0.1:%d/v1", s_port);
    snprintf (s_anthropic_url, sizeof s_anthropic_url, "http://127.0.0.1:%d", s_port);
    return 0;
}

static int s_group_teardown (void **state)
{
    (void)state;
    if (s_pid > 0) {
        kill (s_pid, SIGTERM);
        waitpid (s_pid, NULL, 0);
    }
    unlink (s_script_path);
    rmdir (s_dir);
    curl_global_cleanup ();
    return 0;
}

//  --------------------------------------------------------------------------
//  One call's record, and the loop

typedef struct {
    char text[4096];
    char thinking[1024];
    char tool_name[64];
    char tool_id[64];
    char tool_args[256];
    int tool_starts, tool_ends;
    int errors;
    bool error_retryable;
    char stop_reason[32];
    uint64_t input_tokens;
    int deltas;
    int deltas_after_cancel;
    bool done;
    int dones;
    int rc;
    int status;
    bool retryable;
    char message[512];
    int64_t done_ms;
    //  cancel from on_delta once this many TEXT deltas arrived (0: never)
    int cancel_after;
    wrk_http_t *http;
    wrk_call_t *call;
    bool cancelled;
} s_rec_t;

static void s_append (char *buf, size_t size, const char *text)
{
    size_t len = strlen (buf);
    snprintf (buf + len, size - len, "%s", text);
}

static int s_on_delta (void *arg, const wrk_delta_t *d)
{
    s_rec_t *r = arg;
    if (r->cancelled) r->deltas_after_cancel++;
    r->deltas++;
    switch (d->kind) {
    case WRK_DELTA_TEXT:
        s_append (r->text, sizeof r->text, d->text);
        break;
    case WRK_DELTA_THINKING:
        s_append (r->thinking, sizeof r->thinking, d->text);
        break;
    case WRK_DELTA_TOOL_START:
        r->tool_starts++;
        snprintf (r->tool_name, sizeof r->tool_name, "%s", d->name);
        snprintf (r->tool_id, sizeof r->tool_id, "%s", d->id);
        break;
    case WRK_DELTA_TOOL_END:
        r->tool_ends++;
        snprintf (r->tool_args, sizeof r->tool_args, "%s", d->text);
        break;
    case WRK_DELTA_USAGE:
        r->input_tokens = d->input_tokens;
        break;
    case WRK_DELTA_FINISH:
        snprintf (r->stop_reason, sizeof r->stop_reason, "%s", d->stop_reason);
        break;
    case WRK_DELTA_ERROR:
        r->errors++;
        r->error_retryable = d->retryable;
        break;
    default:
        break;
    }
    if (r->cancel_after && d->kind == WRK_DELTA_TEXT && --r->cancel_after == 0) {
        r->cancelled = true;
        wrk_call_cancel (r->http, r->call);
    }
    return 0;
}

static void s_on_done (void *arg, int rc, int status, bool retryable, const char *message)
{
    s_rec_t *r = arg;
    r->dones++;
    r->done = true;
    r->rc = rc;
    r->status = status;
    r->retryable = retryable;
    r->done_ms = cm_mono_ms ();
    snprintf (r->message, sizeof r->message, "%s", message);
    if (getenv ("TEST_VERBOSE"))
        fprintf (stderr, "done rc=%d status=%d retryable=%d: %s\n", rc, status, retryable,
                 message);
}

//  Run the loop until every call is done (active reaches 0) or max_ms.
static void s_run (int epfd, wrk_http_t *http, int64_t max_ms)
{
    int64_t end = cm_mono_ms () + max_ms;
    while (wrk_http_active (http) > 0 && cm_mono_ms () < end) {
        int64_t wait = wrk_http_next_timeout (http);
        int64_t left = end - cm_mono_ms ();
        if (wait < 0 || wait > left) wait = left;
        if (wait > 200) wait = 200;
        struct epoll_event evs[64];
        int n = epoll_wait (epfd, evs, 64, (int)wait);
        for (int i = 0; i < n; i++) {
            wrk_tag_t *tag = evs[i].data.ptr;
            assert_int_equal (tag->kind, WRK_TAG_HTTP);
            wrk_http_on_event (http, tag, evs[i].events);
        }
        wrk_http_on_timeout (http);
    }
}

typedef struct {
    int epfd;
    wrk_http_t *http;
} s_env_t;

static int s_setup (void **state)
{
    s_env_t *env = calloc (1, sizeof *env);
    env->epfd = epoll_create1 (EPOLL_CLOEXEC);
    assert_true (env->epfd >= 0);
    env->http = wrk_http_new (env->epfd);
    assert_non_null (env->http);
    s_reset ();
    *state = env;
    return 0;
}

static int s_teardown (void **state)
{
    s_env_t *env = *state;
    wrk_http_destroy (&env->http);
    assert_null (env->http);
    close (env->epfd);
    free (env);
    return 0;
}

//  A request body for api whose last user message is text.
static void s_body (wrk_api_t api, const char *text, char *out, size_t size)
{
    if (api == WRK_API_OPENAI)
        snprintf (out, size,
                  "{\"model\":\"m\",\"stream\":true,\"stream_options\":"
                  "{\"include_usage\":true},\"messages\":[{\"role\":\"user\","
                  "\"content\":\"%s\"}]}",
                  text);
    else
        snprintf (out, size,
                  "{\"model\":\"m\",\"max_tokens\":100,\"stream\":true,\"messages\":"
                  "[{\"role\":\"user\",\"content\":\"%s\"}]}",
                  text);
}

static void s_start (s_env_t *env, wrk_api_t api, const char *body, const char *key,
                     int max_attempts, int64_t stall_ms, s_rec_t *r)
{
    wrk_call_opts_t opts = {
        .api = api,
        .base_url = api == WRK_API_OPENAI ? s_openai_url : s_anthropic_url,
        .api_key = key,
        .body = body,
        .body_len = strlen (body),
        .max_attempts = max_attempts,
        .stall_ms = stall_ms,
    };
    r->http = env->http;
    assert_int_equal (
        wrk_call_start (env->http, &opts, s_on_delta, s_on_done, r, &r->call), 0);
    assert_false (r->done); //  never from wrk_call_start
}

static void s_one (s_env_t *env, wrk_api_t api, const char *text, const char *key,
                   int max_attempts, int64_t stall_ms, s_rec_t *r, int64_t max_ms)
{
    char body[512];
    s_body (api, text, body, sizeof body);
    s_start (env, api, body, key, max_attempts, stall_ms, r);
    s_run (env->epfd, env->http, max_ms);
    assert_int_equal (wrk_http_active (env->http), 0);
    assert_int_equal (r->dones, 1);
}

static const wrk_api_t s_apis[] = {WRK_API_OPENAI, WRK_API_ANTHROPIC};

//  --------------------------------------------------------------------------
//  Tests

static void test_streamed_response (void **state)
{
    s_env_t *env = *state;
    for (int i = 0; i < 2; i++) {
        s_rec_t r = {0};
        s_one (env, s_apis[i], "full please", S_KEY, 0, 0, &r, 10000);
        assert_int_equal (r.rc, 0);
        assert_int_equal (r.status, 200);
        assert_string_equal (r.thinking, "Let me look.");
        assert_string_equal (r.text, "I will read it.");
        assert_int_equal (r.tool_starts, 1);
        assert_int_equal (r.tool_ends, 1);
        assert_string_equal (r.tool_name, "read_file");
        assert_true (strlen (r.tool_id) > 0);
        assert_string_equal (r.tool_args, "{\"path\":\"a.txt\"}");
        assert_string_equal (r.stop_reason, "tool_use");
        assert_int_equal (r.input_tokens, 100);
        assert_int_equal (r.errors, 0);
    }
}

static void test_retry_after_429 (void **state)
{
    s_env_t *env = *state;
    for (int i = 0; i < 2; i++) {
        s_reset ();
        s_rec_t r = {0};
        int64_t t0 = cm_mono_ms ();
        s_one (env, s_apis[i], "busy", S_KEY, 0, 0, &r, 15000);
        int64_t took = cm_mono_ms () - t0;
        assert_int_equal (r.rc, 0);
        assert_string_equal (r.text, "Third time lucky.");
        assert_int_equal (s_request_count (), 3);
        //  Retry-After: 1 twice
        assert_true (took >= 1900);
        assert_true (took < 8000);
    }
}

static void test_server_error_exhausts_attempts (void **state)
{
    s_env_t *env = *state;
    for (int i = 0; i < 2; i++) {
        s_reset ();
        s_rec_t r = {0};
        s_one (env, s_apis[i], "broken", S_KEY, 3, 0, &r, 15000);
        assert_int_equal (r.rc, CM_E_UPSTREAM);
        assert_int_equal (r.status, 500);
        assert_true (r.retryable);
        assert_non_null (strstr (r.message, "server on fire"));
        assert_int_equal (r.deltas, 0);
        assert_int_equal (s_request_count (), 3);
    }
}

static void test_bad_request_not_retried (void **state)
{
    s_env_t *env = *state;
    //  A dangling tool call: the fake refuses the conversation with 400.
    const char *bodies[] = {
        "{\"model\":\"m\",\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":"
        "\"hi\"},{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":"
        "\"call_1\",\"type\":\"function\",\"function\":{\"name\":\"read_file\","
        "\"arguments\":\"{}\"}}]},{\"role\":\"user\",\"content\":\"again\"}]}",
        "{\"model\":\"m\",\"max_tokens\":100,\"stream\":true,\"messages\":[{\"role\":"
        "\"user\",\"content\":\"hi\"},{\"role\":\"assistant\",\"content\":[{\"type\":"
        "\"tool_use\",\"id\":\"toolu_1\",\"name\":\"read_file\",\"input\":{}}]},"
        "{\"role\":\"user\",\"content\":\"again\"}]}",
    };
    for (int i = 0; i < 2; i++) {
        s_reset ();
        s_rec_t r = {0};
        s_start (env, s_apis[i], bodies[i], S_KEY, 0, 0, &r);
        s_run (env->epfd, env->http, 10000);
        assert_int_equal (r.dones, 1);
        assert_int_equal (r.rc, CM_E_UPSTREAM);
        assert_int_equal (r.status, 400);
        assert_false (r.retryable);
        //  The provider's own words, naming the dangling id.
        assert_non_null (strstr (r.message, i == 0 ? "call_1" : "toolu_1"));
        assert_true (strlen (r.message) <= 300);
        assert_int_equal (s_request_count (), 1);
        //  A client gets our words, with the status, not the provider's.
        char client[256];
        assert_string_equal (
            wrk_call_client_message (r.rc, r.status, r.retryable, client, sizeof client),
            "the model provider refused the request (HTTP 400); see the worker's log");
    }
}

static void test_error_event_mid_stream (void **state)
{
    s_env_t *env = *state;
    for (int i = 0; i < 2; i++) {
        s_reset ();
        s_rec_t r = {0};
        s_one (env, s_apis[i], "midfail", S_KEY, 0, 0, &r, 10000);
        assert_string_equal (r.text, "partial ");
        assert_int_equal (r.errors, 1);
        assert_true (r.error_retryable);
        assert_int_equal (r.rc, CM_E_UPSTREAM);
        assert_true (r.retryable);
        assert_non_null (strstr (r.message, "Overloaded"));
        assert_int_equal (s_request_count (), 1); //  a delta was shown: no retry
        char client[256];
        wrk_call_client_message (r.rc, r.status, r.retryable, client, sizeof client);
        assert_string_equal (client, "the model provider's response failed or could "
                                     "not be read; retry in a moment");
    }
}

//  Every outcome has our own words; none carries text from elsewhere.
static void test_client_message (void **state)
{
    (void)state;
    static const struct {
        int rc, status;
        bool retryable;
        const char *want;
    } rows[] = {
        {CM_E_TIMEOUT, 200, true,
         "the model provider's stream stalled; retry in a moment"},
        {CM_E_UPSTREAM, 401, false,
         "the model provider refused the worker's credentials (HTTP 401); check the "
         "provider key the worker was given"},
        {CM_E_UPSTREAM, 403, false,
         "the model provider refused the worker's credentials (HTTP 403); check the "
         "provider key the worker was given"},
        {CM_E_UPSTREAM, 429, true,
         "the model provider is rate-limiting requests (HTTP 429), after retries; retry "
         "in a moment"},
        {CM_E_UPSTREAM, 529, true,
         "the model provider failed (HTTP 529), after retries; retry in a moment"},
        {CM_E_UPSTREAM, 404, false,
         "the model provider refused the request (HTTP 404); see the worker's log"},
        {CM_E_UPSTREAM, 200, false,
         "the model provider's response failed or could not be read; see the worker's "
         "log"},
        {CM_E_UPSTREAM, 0, true,
         "the model provider could not be reached; retry in a moment"},
        {CM_E_NOMEM, 0, true,
         "the worker could not start the model request; retry in a moment"},
        {CM_E_CANCELLED, 200, false,
         "the model call stopped: the operation was cancelled"},
        {0, 200, false,
         "the model's response ended before it was complete; see the worker's log"},
    };
    char out[256];
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++)
        assert_string_equal (wrk_call_client_message (rows[i].rc, rows[i].status,
                                                      rows[i].retryable, out, sizeof out),
                             rows[i].want);
    //  Bounded by the buffer.
    char small[8];
    wrk_call_client_message (CM_E_UPSTREAM, 400, false, small, sizeof small);
    assert_string_equal (small, "the mod");
    assert_null (wrk_call_client_message (CM_E_UPSTREAM, 400, false, NULL, 0));
}

static void test_malformed_stream (void **state)
{
    s_env_t *env = *state;
    for (int i = 0; i < 2; i++) {
        s_reset ();
        s_rec_t r = {0};
        s_one (env, s_apis[i], "junk", S_KEY, 0, 0, &r, 10000);
        assert_int_equal (r.rc, CM_E_UPSTREAM);
        assert_int_equal (r.status, 200);
        assert_true (strlen (r.message) > 0);
    }
}

static void test_stall (void **state)
{
    s_env_t *env = *state;
    for (int i = 0; i < 2; i++) {
        s_rec_t r = {0};
        int64_t t0 = cm_mono_ms ();
        s_one (env, s_apis[i], "stall", S_KEY, 0, 1000, &r, 10000);
        int64_t took = cm_mono_ms () - t0;
        assert_int_equal (r.rc, CM_E_TIMEOUT);
        assert_true (r.retryable);
        assert_string_equal (r.text, "Thinking");
        assert_true (took < 3500);
    }
}

static void test_cut (void **state)
{
    s_env_t *env = *state;
    for (int i = 0; i < 2; i++) {
        s_rec_t r = {0};
        s_one (env, s_apis[i], "cut", S_KEY, 0, 0, &r, 10000);
        assert_int_not_equal (r.rc, 0);
        assert_int_equal (r.rc, CM_E_UPSTREAM);
        assert_true (r.retryable);
        assert_string_equal (r.text, "Half a sen");
    }
}

static void test_wrong_key (void **state)
{
    s_env_t *env = *state;
    for (int i = 0; i < 2; i++) {
        s_reset ();
        s_rec_t r = {0};
        s_one (env, s_apis[i], "full", S_WRONG_KEY, 0, 0, &r, 10000);
        assert_int_equal (r.rc, CM_E_UPSTREAM);
        assert_int_equal (r.status, 401);
        assert_false (r.retryable);
        assert_true (strlen (r.message) > 0);
        assert_null (strstr (r.message, S_WRONG_KEY));
        assert_null (strstr (r.message, S_KEY));
        assert_int_equal (s_request_count (), 1);
    }
}

//  A provider message that quotes the key, holds a control byte and runs
//  long: the key is redacted, the byte replaced, the whole cut to 300.
static void test_error_message_sanitised (void **state)
{
    s_env_t *env = *state;
    for (int i = 0; i < 2; i++) {
        s_reset ();
        s_rec_t r = {0};
        s_one (env, s_apis[i], "leak", S_KEY, 0, 0, &r, 10000);
        assert_int_equal (r.rc, CM_E_UPSTREAM);
        assert_int_equal (r.status, 400);
        assert_false (r.retryable);
        assert_null (strstr (r.message, S_KEY));
        assert_null (strstr (r.message, "\a"));
        assert_non_null (strstr (r.message, "your key [redacted] is  refused"));
        assert_int_equal (strlen (r.message), 300);
    }
}

static void test_cancel_mid_stream (void **state)
{
    s_env_t *env = *state;
    for (int i = 0; i < 2; i++) {
        //  Cancelled from inside on_delta, after 3 text deltas.
        s_rec_t r = {0};
        r.cancel_after = 3;
        char body[512];
        s_body (s_apis[i], "slow", body, sizeof body);
        s_start (env, s_apis[i], body, S_KEY, 0, 0, &r);
        s_run (env->epfd, env->http, 5000);
        assert_true (r.cancelled);
        assert_int_equal (r.deltas_after_cancel, 0);
        assert_int_equal (r.dones, 0);
        assert_int_equal (wrk_http_active (env->http), 0);

        //  Cancelled from outside, while streaming.
        s_rec_t r2 = {0};
        s_start (env, s_apis[i], body, S_KEY, 0, 0, &r2);
        int64_t end = cm_mono_ms () + 5000;
        while (r2.deltas < 5 && cm_mono_ms () < end) {
            struct epoll_event evs[16];
            int64_t wait = wrk_http_next_timeout (env->http);
            int n =
                epoll_wait (env->epfd, evs, 16, wait < 0 || wait > 100 ? 100 : (int)wait);
            for (int k = 0; k < n; k++)
                wrk_http_on_event (env->http, evs[k].data.ptr, evs[k].events);
            wrk_http_on_timeout (env->http);
        }
        assert_true (r2.deltas >= 5);
        wrk_call_cancel (env->http, r2.call);
        r2.cancelled = true;
        assert_int_equal (wrk_http_active (env->http), 0);
        //  Keep the loop turning a while: nothing more may arrive.
        int64_t quiet = cm_mono_ms () + 500;
        while (cm_mono_ms () < quiet) {
            struct epoll_event evs[16];
            int n = epoll_wait (env->epfd, evs, 16, 50);
            for (int k = 0; k < n; k++)
                wrk_http_on_event (env->http, evs[k].data.ptr, evs[k].events);
            wrk_http_next_timeout (env->http);
            wrk_http_on_timeout (env->http);
        }
        assert_int_equal (r2.deltas_after_cancel, 0);
        assert_int_equal (r2.dones, 0);
    }
}

//  on_delta of one call cancels another running call (inside curl's write
//  callback); on_done of a third cancels a fourth (outside curl).
typedef struct {
    s_rec_t rec; //  first: the plain callbacks take a killer as its record
    s_rec_t *victim;
} s_killer_t;

static int s_killer_delta (void *arg, const wrk_delta_t *d)
{
    s_killer_t *k = arg;
    s_on_delta (&k->rec, d);
    if (k->victim && d->kind == WRK_DELTA_TEXT) {
        k->victim->cancelled = true;
        wrk_call_cancel (k->victim->http, k->victim->call);
        k->victim = NULL;
    }
    return 0;
}

static void s_killer_done (void *arg, int rc, int status, bool retryable,
                           const char *message)
{
    s_killer_t *k = arg;
    s_on_done (&k->rec, rc, status, retryable, message);
    if (k->victim) {
        k->victim->cancelled = true;
        wrk_call_cancel (k->victim->http, k->victim->call);
        k->victim = NULL;
    }
}

static void test_cancel_other_from_callbacks (void **state)
{
    s_env_t *env = *state;
    char slow[512], quick[512];
    s_body (WRK_API_OPENAI, "slow", slow, sizeof slow);
    s_body (WRK_API_OPENAI, "full", quick, sizeof quick);
    s_rec_t victims[2];
    memset (victims, 0, sizeof victims);
    s_start (env, WRK_API_OPENAI, slow, S_KEY, 0, 0, &victims[0]);
    s_start (env, WRK_API_OPENAI, slow, S_KEY, 0, 0, &victims[1]);
    s_killer_t killers[2];
    memset (killers, 0, sizeof killers);
    killers[0].victim = &victims[0];
    killers[1].victim = &victims[1];
    wrk_call_opts_t opts = {.api = WRK_API_OPENAI,
                            .base_url = s_openai_url,
                            .api_key = S_KEY,
                            .body = slow,
                            .body_len = strlen (slow)};
    //  killers[0] kills from on_delta, killers[1] (a quick answer that
    //  ends before the first delta of a slow one could) from on_done.
    assert_int_equal (
        wrk_call_start (env->http, &opts, s_killer_delta, s_on_done, &killers[0], NULL),
        0);
    opts.body = quick;
    opts.body_len = strlen (quick);
    assert_int_equal (
        wrk_call_start (env->http, &opts, s_on_delta, s_killer_done, &killers[1], NULL),
        0);
    s_run (env->epfd, env->http, 10000);
    assert_int_equal (wrk_http_active (env->http), 0);
    for (int i = 0; i < 2; i++) {
        assert_true (victims[i].cancelled);
        assert_int_equal (victims[i].dones, 0);
        assert_int_equal (victims[i].deltas_after_cancel, 0);
        assert_int_equal (killers[i].rec.dones, 1);
        assert_int_equal (killers[i].rec.rc, 0);
    }
}

static void test_many_concurrent (void **state)
{
    s_env_t *env = *state;
    s_rec_t *recs = calloc (S_MANY, sizeof *recs);
    assert_non_null (recs);
    char body[2][512];
    s_body (WRK_API_OPENAI, "many", body[0], sizeof body[0]);
    s_body (WRK_API_ANTHROPIC, "many", body[1], sizeof body[1]);
    for (int i = 0; i < S_MANY; i++)
        s_start (env, s_apis[i % 2], body[i % 2], S_KEY, 0, 0, &recs[i]);
    assert_int_equal (wrk_http_active (env->http), S_MANY);
    s_run (env->epfd, env->http, 20000);
    assert_int_equal (wrk_http_active (env->http), 0);
    for (int i = 0; i < S_MANY; i++) {
        assert_int_equal (recs[i].dones, 1);
        assert_int_equal (recs[i].rc, 0);
        assert_string_equal (recs[i].text,
                             "The quick brown fox jumps over the lazy dog.");
    }
    free (recs);
}

//  A call started from on_done (outside curl) and one started from on_delta
//  (inside curl's write callback) both run to completion.
typedef struct {
    s_env_t *env;
    s_rec_t first, from_delta, from_done;
    bool started_delta, started_done;
    char body[512];
} s_chain_t;

static int s_chain_delta (void *arg, const wrk_delta_t *d)
{
    s_chain_t *c = arg;
    s_on_delta (&c->first, d);
    if (!c->started_delta && d->kind == WRK_DELTA_TEXT) {
        c->started_delta = true;
        s_start (c->env, WRK_API_OPENAI, c->body, S_KEY, 0, 0, &c->from_delta);
    }
    return 0;
}

static void s_chain_done (void *arg, int rc, int status, bool retryable,
                          const char *message)
{
    s_chain_t *c = arg;
    s_on_done (&c->first, rc, status, retryable, message);
    c->started_done = true;
    s_start (c->env, WRK_API_OPENAI, c->body, S_KEY, 0, 0, &c->from_done);
}

static void test_start_from_callbacks (void **state)
{
    s_env_t *env = *state;
    s_chain_t *c = calloc (1, sizeof *c);
    c->env = env;
    s_body (WRK_API_OPENAI, "full", c->body, sizeof c->body);
    wrk_call_opts_t opts = {.api = WRK_API_OPENAI,
                            .base_url = s_openai_url,
                            .api_key = S_KEY,
                            .body = c->body,
                            .body_len = strlen (c->body)};
    assert_int_equal (
        wrk_call_start (env->http, &opts, s_chain_delta, s_chain_done, c, NULL), 0);
    s_run (env->epfd, env->http, 10000);
    assert_int_equal (c->first.rc, 0);
    assert_true (c->started_delta && c->started_done);
    assert_int_equal (c->from_delta.dones, 1);
    assert_int_equal (c->from_delta.rc, 0);
    assert_int_equal (c->from_done.dones, 1);
    assert_int_equal (c->from_done.rc, 0);
    free (c);
}

static void test_refused_connection_and_bad_options (void **state)
{
    s_env_t *env = *state;
    wrk_call_opts_t opts = {.api = WRK_API_OPENAI, .body = "{}", .body_len = 2};
    s_rec_t r = {0};
    //  Bad options.
    assert_int_equal (wrk_call_start (env->http, &opts, s_on_delta, s_on_done, &r, NULL),
                      CM_E_INVALID);
    opts.base_url = s_openai_url;
    opts.api_key = "bad\r\nX-Injected: 1";
    assert_int_equal (wrk_call_start (env->http, &opts, s_on_delta, s_on_done, &r, NULL),
                      CM_E_INVALID);
    opts.api_key = NULL;
    opts.max_attempts = -1;
    assert_int_equal (wrk_call_start (env->http, &opts, s_on_delta, s_on_done, &r, NULL),
                      CM_E_INVALID);
    //  Nothing listens on port 1: refused, retried, then retryable upstream.
    opts.max_attempts = 2;
    opts.base_url = "http://127.0.0.1:1/v1";
    assert_int_equal (wrk_call_start (env->http, &opts, s_on_delta, s_on_done, &r, NULL),
                      0);
    s_run (env->epfd, env->http, 5000);
    assert_int_equal (r.dones, 1);
    assert_int_equal (r.rc, CM_E_UPSTREAM);
    assert_true (r.retryable);
    assert_int_equal (r.status, 0);
    assert_true (strlen (r.message) > 0);
}

static void test_destroy_with_calls_in_flight (void **state)
{
    s_env_t *env = *state;
    s_rec_t r[4];
    memset (r, 0, sizeof r);
    char body[512];
    s_body (WRK_API_ANTHROPIC, "slow", body, sizeof body);
    for (int i = 0; i < 4; i++)
        s_start (env, WRK_API_ANTHROPIC, body, S_KEY, 0, 0, &r[i]);
    int64_t end = cm_mono_ms () + 300;
    while (cm_mono_ms () < end) {
        struct epoll_event evs[16];
        int n = epoll_wait (env->epfd, evs, 16, 20);
        for (int k = 0; k < n; k++)
            wrk_http_on_event (env->http, evs[k].data.ptr, evs[k].events);
        wrk_http_next_timeout (env->http);
        wrk_http_on_timeout (env->http);
    }
    wrk_http_destroy (&env->http); //  no callbacks, no leaks (ASan)
    for (int i = 0; i < 4; i++) assert_int_equal (r[i].dones, 0);
}

int main (int argc, char **argv)
{
    if (argc < 2) {
        fprintf (stderr, "usage: test_wrk_http <corral-fake-model>\n");
        return 2;
    }
    s_fake_bin = argv[1];
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown (test_streamed_response, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_retry_after_429, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_server_error_exhausts_attempts, s_setup,
                                         s_teardown),
        cmocka_unit_test_setup_teardown (test_bad_request_not_retried, s_setup,
                                         s_teardown),
        cmocka_unit_test_setup_teardown (test_error_event_mid_stream, s_setup,
                                         s_teardown),
        cmocka_unit_test_setup_teardown (test_malformed_stream, s_setup, s_teardown),
        cmocka_unit_test (test_client_message),
        cmocka_unit_test_setup_teardown (test_stall, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_cut, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_wrong_key, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_error_message_sanitised, s_setup,
                                         s_teardown),
        cmocka_unit_test_setup_teardown (test_cancel_mid_stream, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_cancel_other_from_callbacks, s_setup,
                                         s_teardown),
        cmocka_unit_test_setup_teardown (test_many_concurrent, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_start_from_callbacks, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_refused_connection_and_bad_options, s_setup,
                                         s_teardown),
        cmocka_unit_test_setup_teardown (test_destroy_with_calls_in_flight, s_setup,
                                         s_teardown),
    };
    return cmocka_run_group_tests (tests, s_group_setup, s_group_teardown);
}
