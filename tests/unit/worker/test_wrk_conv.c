/*  test_wrk_conv.c - the provider-neutral conversation: the user message
    from an ACP prompt, the assistant message from stream deltas, repair
    after a stopped turn, the OpenAI and Anthropic request bodies, and the
    checks that refuse malformed messages. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cm_error.h"
#include "wrk_conv.h"

//  The literals below are JSON with ' for " so they stay readable.
static json_t *s_json (const char *text)
{
    char *copy = strdup (text);
    assert_non_null (copy);
    for (char *c = copy; *c; c++)
        if (*c == '\'') *c = '"';
    json_error_t jerr;
    json_t *json = json_loads (copy, 0, &jerr);
    if (!json) fprintf (stderr, "bad test literal: %s\n%s\n", jerr.text, copy);
    assert_non_null (json);
    free (copy);
    return json;
}

static void s_assert_json (const json_t *actual, const char *expected_text)
{
    json_t *expected = s_json (expected_text);
    if (!json_equal ((json_t *)actual, expected)) {
        char *a = json_dumps (actual, JSON_INDENT (1) | JSON_SORT_KEYS);
        char *e = json_dumps (expected, JSON_INDENT (1) | JSON_SORT_KEYS);
        fprintf (stderr, "actual:\n%s\nexpected:\n%s\n", a, e);
        free (a);
        free (e);
    }
    assert_true (json_equal ((json_t *)actual, expected));
    json_decref (expected);
}

static void s_assert_text (const char *actual, const char *expected_text)
{
    json_t *parsed = json_loads (actual, 0, NULL);
    assert_non_null (parsed);
    s_assert_json (parsed, expected_text);
    json_decref (parsed);
}

static void s_assert_err (const char *err, const char *needle)
{
    if (!strstr (err, needle)) fprintf (stderr, "message: %s\nwanted: %s\n", err, needle);
    assert_non_null (strstr (err, needle));
}

// ---------------------------------------------------------------------------
//  ACP prompt -> user message

static int s_acp (const char *text, json_t **msg, char *err)
{
    json_t *blocks = s_json (text);
    char *raw = json_dumps (blocks, JSON_COMPACT | JSON_ENCODE_ANY);
    json_decref (blocks);
    int rc = wrk_conv_user_from_acp (raw, strlen (raw), msg, err, 256);
    free (raw);
    return rc;
}

static void test_acp_prompt (void **state)
{
    json_t *msg = NULL;
    char err[256] = "";
    int rc =
        s_acp ("[{'type':'text','text':'Fix the bug','annotations':{'priority':1}},"
               " {'type':'resource_link','uri':'file:///ws/a.c','name':'a.c',"
               "  'mimeType':'text/x-c'},"
               " {'type':'resource','resource':{'uri':'file:///ws/b.c',"
               "  'text':'int b;','mimeType':'text/x-c'}},"
               " {'type':'resource','resource':{'uri':'file:///ws/c.png','blob':'iVBO'}},"
               " {'type':'image','mimeType':'image/png','data':'iVBO'},"
               " {'type':'audio','mimeType':'audio/wav','data':'UklG'},"
               " {'type':'text','text':''}]",
               &msg, err);
    assert_int_equal (rc, 0);
    s_assert_json (msg,
                   "{'role':'user','content':["
                   " {'type':'text','text':'Fix the bug'},"
                   " {'type':'text','text':'Referenced resource: a.c file:///ws/a.c'},"
                   " {'type':'text','text':'<resource uri=\\'file:///ws/b.c\\'>\\nint "
                   "b;\\n</resource>'},"
                   " {'type':'text','text':'[resource file:///ws/c.png omitted: binary "
                   "content]'},"
                   " {'type':'text','text':'[image omitted]'},"
                   " {'type':'text','text':'[audio omitted]'}]}");
    assert_int_equal (wrk_conv_check_message (msg, err, sizeof err), 0);
    json_decref (msg);
}

static void test_acp_prompt_refused (void **state)
{
    static const struct {
        const char *prompt;
        int code;
        const char *needle;
    } cases[] = {
        {"{'type':'text','text':'hi'}", CM_E_INVALID, "must be an array"},
        {"[]", CM_E_INVALID, "is empty"},
        {"[1]", CM_E_TYPE, "prompt[0]: a content block must be an object"},
        {"[{'text':'hi'}]", CM_E_MISSING, "prompt[0]: missing \"type\""},
        {"[{'type':7}]", CM_E_TYPE, "\"type\" must be a string"},
        {"[{'type':'text','text':'a'},{'type':'video','uri':'x'}]", CM_E_INVALID,
         "prompt[1]: unknown content block type \"video\""},
        {"[{'type':'text'}]", CM_E_MISSING, "prompt[0]: text: missing \"text\""},
        {"[{'type':'text','text':['a']}]", CM_E_TYPE, "\"text\" must be a string"},
        {"[{'type':'resource_link','name':'a'}]", CM_E_MISSING, "missing \"uri\""},
        {"[{'type':'resource_link','uri':'file:///a'}]", CM_E_MISSING,
         "missing \"name\""},
        {"[{'type':'resource'}]", CM_E_MISSING, "missing \"resource\""},
        {"[{'type':'resource','resource':'file:///a'}]", CM_E_TYPE,
         "\"resource\" must be an object"},
        {"[{'type':'resource','resource':{'text':'x'}}]", CM_E_MISSING,
         "missing \"uri\""},
        {"[{'type':'resource','resource':{'uri':'file:///a'}}]", CM_E_INVALID,
         "needs \"text\" or \"blob\""},
        {"[{'type':'text','text':''}]", CM_E_INVALID, "has no text"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        json_t *msg = (json_t *)1;
        char err[256] = "";
        assert_int_equal (s_acp (cases[i].prompt, &msg, err), cases[i].code);
        assert_null (msg);
        s_assert_err (err, cases[i].needle);
    }
    json_t *msg = NULL;
    char err[256] = "";
    assert_int_equal (wrk_conv_user_from_acp ("[{", 2, &msg, err, sizeof err),
                      CM_E_INVALID);
    s_assert_err (err, "not JSON");
    assert_int_equal (
        wrk_conv_user_from_acp ("[]", WRK_CONV_MAX_MESSAGE + 1, &msg, err, sizeof err),
        CM_E_TOO_LARGE);
}

static void test_acp_prompt_limits (void **state)
{
    //  WRK_CONV_MAX_BLOCKS blocks are fine, one more is not.
    size_t cap = 32 * (WRK_CONV_MAX_BLOCKS + 2);
    char *text = malloc (cap);
    assert_non_null (text);
    for (int n = WRK_CONV_MAX_BLOCKS; n <= WRK_CONV_MAX_BLOCKS + 1; n++) {
        size_t len = (size_t)snprintf (text, cap, "[");
        for (int i = 0; i < n; i++)
            len += (size_t)snprintf (text + len, cap - len, "%s{\"type\":\"image\"}",
                                     i ? "," : "");
        len += (size_t)snprintf (text + len, cap - len, "]");
        json_t *msg = NULL;
        int rc = wrk_conv_user_from_acp (text, len, &msg, NULL, 0);
        if (n == WRK_CONV_MAX_BLOCKS) {
            assert_int_equal (rc, 0);
            assert_int_equal (json_array_size (json_object_get (msg, "content")), n);
            json_decref (msg);
        } else
            assert_int_equal (rc, CM_E_TOO_LARGE);
    }
    free (text);

    //  A text of WRK_CONV_MAX_TEXT bytes is fine; an embedded resource whose
    //  wrapping takes it past the limit is not.
    char *big = malloc (WRK_CONV_MAX_TEXT + 1);
    assert_non_null (big);
    memset (big, 'x', WRK_CONV_MAX_TEXT);
    big[WRK_CONV_MAX_TEXT] = '\0';
    json_t *blocks = json_pack ("[{s:s, s:s}]", "type", "text", "text", big);
    char *raw = json_dumps (blocks, JSON_COMPACT);
    json_t *msg = NULL;
    assert_int_equal (wrk_conv_user_from_acp (raw, strlen (raw), &msg, NULL, 0), 0);
    json_decref (msg);
    free (raw);
    json_decref (blocks);
    blocks = json_pack ("[{s:s, s:{s:s, s:s}}]", "type", "resource", "resource", "uri",
                        "file:///big", "text", big);
    raw = json_dumps (blocks, JSON_COMPACT);
    char err[256] = "";
    assert_int_equal (wrk_conv_user_from_acp (raw, strlen (raw), &msg, err, sizeof err),
                      CM_E_TOO_LARGE);
    s_assert_err (err, "prompt[0]: resource");
    free (raw);
    json_decref (blocks);
    free (big);
}

// ---------------------------------------------------------------------------
//  Stream deltas -> assistant message

static void s_feed (wrk_reply_t *reply, wrk_delta_kind_t kind, const char *text, int rc)
{
    wrk_delta_t d = {.kind = kind,
                     .text = text,
                     .text_len = strlen (text),
                     .id = "",
                     .name = "",
                     .stop_reason = "",
                     .error_type = ""};
    assert_int_equal (wrk_reply_feed (reply, &d), rc);
}

static void s_tool (wrk_reply_t *reply, wrk_delta_kind_t kind, int index, const char *id,
                    const char *name, const char *args, int rc)
{
    wrk_delta_t d = {.kind = kind,
                     .index = index,
                     .text = args,
                     .text_len = strlen (args),
                     .id = id,
                     .name = name,
                     .stop_reason = "",
                     .error_type = ""};
    assert_int_equal (wrk_reply_feed (reply, &d), rc);
}

static void s_usage (wrk_reply_t *reply, uint64_t in, uint64_t out, uint64_t cache)
{
    wrk_delta_t d = {.kind = WRK_DELTA_USAGE,
                     .text = "",
                     .id = "",
                     .name = "",
                     .input_tokens = in,
                     .output_tokens = out,
                     .cache_tokens = cache,
                     .stop_reason = "",
                     .error_type = ""};
    assert_int_equal (wrk_reply_feed (reply, &d), 0);
}

static void s_finish (wrk_reply_t *reply, const char *reason, int rc)
{
    wrk_delta_t d = {.kind = WRK_DELTA_FINISH,
                     .text = "",
                     .id = "",
                     .name = "",
                     .stop_reason = reason,
                     .error_type = ""};
    assert_int_equal (wrk_reply_feed (reply, &d), rc);
}

static void s_assert_reply (const wrk_reply_t *reply, const char *expected)
{
    json_t *msg = NULL;
    assert_int_equal (wrk_reply_message (reply, &msg), 0);
    s_assert_json (msg, expected);
    char err[256] = "";
    int rc = wrk_conv_check_message (msg, err, sizeof err);
    if (rc) fprintf (stderr, "%s\n", err);
    assert_int_equal (rc, 0);
    json_decref (msg);
}

static void test_reply_builder (void **state)
{
    wrk_reply_t *reply = wrk_reply_new ();
    assert_non_null (reply);
    assert_false (wrk_reply_finished (reply));
    assert_string_equal (wrk_reply_stop_reason (reply), "");
    s_assert_reply (reply, "{'role':'assistant','content':[]}");

    s_usage (reply, 1200, 1, 1000);
    s_feed (reply, WRK_DELTA_THINKING, "The bug is ", 0);
    s_feed (reply, WRK_DELTA_THINKING, "in a.c", 0);
    s_feed (reply, WRK_DELTA_SIGNATURE, "EqQB", 0);
    s_feed (reply, WRK_DELTA_SIGNATURE, "xyz=", 0);
    s_feed (reply, WRK_DELTA_TEXT, "Let me ", 0);
    s_feed (reply, WRK_DELTA_TEXT, "", 0);
    s_feed (reply, WRK_DELTA_TEXT, "look.", 0);
    s_tool (reply, WRK_DELTA_TOOL_START, 0, "toolu_1", "read_file", "", 0);
    s_tool (reply, WRK_DELTA_TOOL_START, 1, "toolu_2", "grep", "", 0);
    //  Nothing completed yet: the calls are not offered.
    assert_int_equal (wrk_reply_tool_count (reply), 0);
    s_tool (reply, WRK_DELTA_TOOL_END, 0, "toolu_1", "read_file", "{\"path\":\"a.c\"}",
            0);
    s_tool (reply, WRK_DELTA_TOOL_END, 1, "toolu_2", "grep", "{}", 0);
    s_usage (reply, 1200, 57, 1000);
    s_usage (reply, 0, 40, 0); //  counts never go down
    s_finish (reply, "tool_use", 0);

    s_assert_reply (
        reply,
        "{'role':'assistant','content':["
        " {'type':'thinking','thinking':'The bug is in a.c','signature':'EqQBxyz='},"
        " {'type':'text','text':'Let me look.'},"
        " {'type':'tool_use','id':'toolu_1','name':'read_file','input':{'path':'a.c'}},"
        " {'type':'tool_use','id':'toolu_2','name':'grep','input':{}}]}");
    assert_true (wrk_reply_finished (reply));
    assert_string_equal (wrk_reply_stop_reason (reply), "tool_use");
    assert_int_equal (wrk_reply_tool_count (reply), 2);
    const wrk_tool_call_t *call = wrk_reply_tool (reply, 0);
    assert_int_equal (call->index, 0);
    assert_string_equal (call->id, "toolu_1");
    assert_string_equal (call->name, "read_file");
    s_assert_json (call->input, "{'path':'a.c'}");
    call = wrk_reply_tool (reply, 1);
    assert_string_equal (call->id, "toolu_2");
    assert_string_equal (call->name, "grep");
    s_assert_json (call->input, "{}");
    assert_null (wrk_reply_tool (reply, 2));
    wrk_usage_t usage = wrk_reply_usage (reply);
    assert_int_equal (usage.input_tokens, 1200);
    assert_int_equal (usage.output_tokens, 57);
    assert_int_equal (usage.cache_tokens, 1000);
    assert_int_equal (usage.model_calls, 1);
    assert_int_equal (usage.cost_micros, 0);
    //  Nothing is accepted after FINISH.
    s_feed (reply, WRK_DELTA_TEXT, "late", CM_E_INVALID);
    wrk_reply_destroy (&reply);
    assert_null (reply);
    wrk_reply_destroy (&reply);
}

static void test_reply_block_boundaries (void **state)
{
    wrk_reply_t *reply = wrk_reply_new ();
    //  A signature closes a thinking block; text after a tool call starts a
    //  new text block; unsigned thinking (compatible servers) is kept; an
    //  OpenAI call whose arguments are "" gets {} from the decoder.
    s_feed (reply, WRK_DELTA_THINKING, "first", 0);
    s_feed (reply, WRK_DELTA_SIGNATURE, "s1", 0);
    s_feed (reply, WRK_DELTA_THINKING, "second", 0);
    s_feed (reply, WRK_DELTA_SIGNATURE, "s2", 0);
    s_feed (reply, WRK_DELTA_TEXT, "a", 0);
    s_tool (reply, WRK_DELTA_TOOL_START, 3, "call_3", "list_dir", "", 0);
    s_feed (reply, WRK_DELTA_TEXT, "b", 0);
    s_feed (reply, WRK_DELTA_THINKING, "unsigned", 0);
    s_tool (reply, WRK_DELTA_TOOL_END, 3, "call_3", "list_dir", "", 0);
    //  A call that never started is completed in place, at the end.
    s_tool (reply, WRK_DELTA_TOOL_END, 4, "call_4", "glob", "{\"p\":[1,2]}", 0);
    s_assert_reply (
        reply, "{'role':'assistant','content':["
               " {'type':'thinking','thinking':'first','signature':'s1'},"
               " {'type':'thinking','thinking':'second','signature':'s2'},"
               " {'type':'text','text':'a'},"
               " {'type':'tool_use','id':'call_3','name':'list_dir','input':{}},"
               " {'type':'text','text':'b'},"
               " {'type':'thinking','thinking':'unsigned'},"
               " {'type':'tool_use','id':'call_4','name':'glob','input':{'p':[1,2]}}]}");
    assert_int_equal (wrk_reply_tool_count (reply), 2);
    assert_int_equal (wrk_reply_tool (reply, 1)->index, 4);
    wrk_reply_destroy (&reply);
}

static void test_reply_refused (void **state)
{
    wrk_reply_t *reply = wrk_reply_new ();
    //  A signature with no thinking block before it.
    s_feed (reply, WRK_DELTA_SIGNATURE, "sig", CM_E_UPSTREAM);
    s_feed (reply, WRK_DELTA_TEXT, "x", 0);
    s_feed (reply, WRK_DELTA_SIGNATURE, "sig", CM_E_UPSTREAM);
    //  Arguments that are not a JSON object, or not JSON.
    s_tool (reply, WRK_DELTA_TOOL_START, 0, "t0", "read_file", "", 0);
    s_tool (reply, WRK_DELTA_TOOL_START, 0, "t0", "read_file", "", CM_E_UPSTREAM);
    s_tool (reply, WRK_DELTA_TOOL_END, 0, "t0", "read_file", "[1]", CM_E_UPSTREAM);
    s_tool (reply, WRK_DELTA_TOOL_END, 0, "t0", "read_file", "{\"a\":", CM_E_UPSTREAM);
    s_tool (reply, WRK_DELTA_TOOL_END, 0, "t0", "read_file", "{\"a\":1}", 0);
    s_tool (reply, WRK_DELTA_TOOL_END, 0, "t0", "read_file", "{}", CM_E_UPSTREAM);
    //  An id used twice, a call with no name.
    s_tool (reply, WRK_DELTA_TOOL_END, 1, "t0", "grep", "{}", CM_E_UPSTREAM);
    s_tool (reply, WRK_DELTA_TOOL_END, 2, "t2", "", "{}", CM_E_UPSTREAM);
    //  A call cut off before its end never ran: it is left out.
    s_tool (reply, WRK_DELTA_TOOL_START, 5, "t5", "run_command", "", 0);
    wrk_delta_t error = {.kind = WRK_DELTA_ERROR,
                         .text = "overloaded",
                         .text_len = 10,
                         .id = "",
                         .name = "",
                         .stop_reason = "",
                         .error_type = "overloaded_error",
                         .retryable = true};
    assert_int_equal (wrk_reply_feed (reply, &error), 0);
    s_assert_reply (
        reply, "{'role':'assistant','content':[{'type':'text','text':'x'},"
               " {'type':'tool_use','id':'t0','name':'read_file','input':{'a':1}}]}");
    assert_int_equal (wrk_reply_tool_count (reply), 1);
    assert_false (wrk_reply_finished (reply));
    wrk_reply_destroy (&reply);

    //  Text past WRK_CONV_MAX_TEXT.
    reply = wrk_reply_new ();
    char *big = malloc (WRK_CONV_MAX_TEXT + 1);
    assert_non_null (big);
    memset (big, 'y', WRK_CONV_MAX_TEXT);
    big[WRK_CONV_MAX_TEXT] = '\0';
    s_feed (reply, WRK_DELTA_TEXT, big, 0);
    s_feed (reply, WRK_DELTA_TEXT, "y", CM_E_TOO_LARGE);
    free (big);
    wrk_reply_destroy (&reply);
}

// ---------------------------------------------------------------------------
//  Repair

static int s_repair (json_t *conv, const char *reason)
{
    char err[256] = "";
    int rc = wrk_conv_repair (conv, reason, err, sizeof err);
    if (rc < 0) fprintf (stderr, "repair: %s\n", err);
    return rc;
}

static void test_repair_adds_missing (void **state)
{
    json_t *conv = s_json (
        "[{'role':'user','content':[{'type':'text','text':'go'}]},"
        " {'role':'assistant','content':["
        "  {'type':'text','text':'Three things.'},"
        "  {'type':'tool_use','id':'a','name':'read_file','input':{'path':'x'}},"
        "  {'type':'tool_use','id':'b','name':'grep','input':{}},"
        "  {'type':'tool_use','id':'c','name':'run_command','input':{'cmd':'make'}}]},"
        " {'role':'tool','content':["
        "  {'type':'tool_result','tool_use_id':'a','content':'x!','is_error':false}]}]");
    json_t *answered = json_array_get (conv, 2);
    json_incref (answered);
    assert_int_equal (s_repair (conv, NULL), 2);
    s_assert_json (
        conv,
        "[{'role':'user','content':[{'type':'text','text':'go'}]},"
        " {'role':'assistant','content':["
        "  {'type':'text','text':'Three things.'},"
        "  {'type':'tool_use','id':'a','name':'read_file','input':{'path':'x'}},"
        "  {'type':'tool_use','id':'b','name':'grep','input':{}},"
        "  {'type':'tool_use','id':'c','name':'run_command','input':{'cmd':'make'}}]},"
        " {'role':'tool','content':["
        "  {'type':'tool_result','tool_use_id':'a','content':'x!','is_error':false},"
        "  {'type':'tool_result','tool_use_id':'b','is_error':true,"
        "   'content':'cancelled: the turn was stopped before this tool ran'},"
        "  {'type':'tool_result','tool_use_id':'c','is_error':true,"
        "   'content':'cancelled: the turn was stopped before this tool ran'}]}]");
    //  The caller's reference to the old tool message is untouched.
    assert_int_equal (json_array_size (json_object_get (answered, "content")), 1);
    json_decref (answered);
    //  Idempotent.
    assert_int_equal (s_repair (conv, NULL), 0);
    assert_int_equal (json_array_size (conv), 3);
    assert_int_equal (
        json_array_size (json_object_get (json_array_get (conv, 2), "content")), 3);
    json_decref (conv);
}

static void test_repair_new_tool_message (void **state)
{
    //  The turn was stopped while the model's calls waited for permission:
    //  the conversation ends with unanswered calls, and earlier, a worker
    //  died between two turns' tool calls.
    json_t *conv =
        s_json ("[{'role':'user','content':[{'type':'text','text':'go'}]},"
                " {'role':'assistant','content':["
                "  {'type':'tool_use','id':'a','name':'read_file','input':{}}]},"
                " {'role':'user','content':[{'type':'text','text':'hello?'}]},"
                " {'role':'assistant','content':[]},"
                " {'role':'assistant','content':["
                "  {'type':'thinking','thinking':'t','signature':'s'},"
                "  {'type':'tool_use','id':'b','name':'edit_file','input':{}}]}]");
    assert_int_equal (s_repair (conv, "worker_lost: the tool may or may not have run"),
                      2);
    s_assert_json (conv,
                   "[{'role':'user','content':[{'type':'text','text':'go'}]},"
                   " {'role':'assistant','content':["
                   "  {'type':'tool_use','id':'a','name':'read_file','input':{}}]},"
                   " {'role':'tool','content':[{'type':'tool_result','tool_use_id':'a',"
                   "  'content':'worker_lost: the tool may or may not have run',"
                   "  'is_error':true}]},"
                   " {'role':'user','content':[{'type':'text','text':'hello?'}]},"
                   " {'role':'assistant','content':["
                   "  {'type':'thinking','thinking':'t','signature':'s'},"
                   "  {'type':'tool_use','id':'b','name':'edit_file','input':{}}]},"
                   " {'role':'tool','content':[{'type':'tool_result','tool_use_id':'b',"
                   "  'content':'worker_lost: the tool may or may not have run',"
                   "  'is_error':true}]}]");
    assert_int_equal (s_repair (conv, NULL), 0);
    json_decref (conv);
}

static void test_repair_drops_strays (void **state)
{
    //  Results for unknown ids, second answers and tool messages that follow
    //  no call are dropped; answers split over two tool messages are kept.
    json_t *conv = s_json (
        "[{'role':'tool','content':[{'type':'tool_result','tool_use_id':'z','content':''}"
        "]},"
        " {'role':'user','content':[{'type':'text','text':'go'}]},"
        " {'role':'assistant','content':["
        "  {'type':'tool_use','id':'a','name':'read_file','input':{}},"
        "  {'type':'tool_use','id':'b','name':'grep','input':{}}]},"
        " {'role':'tool','content':["
        "  {'type':'tool_result','tool_use_id':'a','content':'1'},"
        "  {'type':'tool_result','tool_use_id':'q','content':'?'}]},"
        " {'role':'tool','content':["
        "  {'type':'tool_result','tool_use_id':'a','content':'again'}]},"
        " {'role':'tool','content':["
        "  {'type':'tool_result','tool_use_id':'b','content':'2','is_error':true}]},"
        " {'role':'assistant','content':[{'type':'text','text':'Done.'}]},"
        " {'role':'tool','content':[{'type':'tool_result','tool_use_id':'a','content':''}"
        "]}]");
    assert_int_equal (s_repair (conv, NULL), 0);
    s_assert_json (
        conv,
        "[{'role':'user','content':[{'type':'text','text':'go'}]},"
        " {'role':'assistant','content':["
        "  {'type':'tool_use','id':'a','name':'read_file','input':{}},"
        "  {'type':'tool_use','id':'b','name':'grep','input':{}}]},"
        " {'role':'tool','content':[{'type':'tool_result','tool_use_id':'a','content':'1'"
        "}]},"
        " {'role':'tool','content':["
        "  {'type':'tool_result','tool_use_id':'b','content':'2','is_error':true}]},"
        " {'role':'assistant','content':[{'type':'text','text':'Done.'}]}]");
    assert_int_equal (s_repair (conv, NULL), 0);
    assert_int_equal (json_array_size (conv), 5);
    json_decref (conv);

    //  A valid conversation comes back as it was; an empty one too.
    conv = s_json ("[]");
    assert_int_equal (s_repair (conv, NULL), 0);
    assert_int_equal (json_array_size (conv), 0);
    json_decref (conv);

    //  A malformed one is refused and left alone.
    conv = s_json ("[{'role':'assistant','content':[]},{'role':'user','content':[{}]}]");
    char err[256] = "";
    assert_int_equal (wrk_conv_repair (conv, NULL, err, sizeof err), CM_E_MISSING);
    s_assert_err (err, "message 1: content[0]: missing \"type\"");
    assert_int_equal (json_array_size (conv), 2);
    json_decref (conv);
}

// ---------------------------------------------------------------------------
//  Request bodies

//  A conversation with every kind of block: a prompt with an embedded file,
//  thinking, two calls (one failed), unsigned thinking, a final answer and
//  a follow-up.
static const char *s_conv_text =
    "[{'role':'user','content':["
    "  {'type':'text','text':'Fix the bug'},"
    "  {'type':'text','text':'<resource uri=\\'file:///ws/a.c\\'>\\nint "
    "x\\n</resource>'}]},"
    " {'role':'assistant','content':["
    "  {'type':'thinking','thinking':'Missing semicolon.','signature':'EqQB'},"
    "  {'type':'text','text':'Let me look.'},"
    "  {'type':'tool_use','id':'toolu_1','name':'read_file','input':{'path':'a.c'}},"
    "  "
    "{'type':'tool_use','id':'toolu_2','name':'grep','input':{'pattern':'x','n':[1,2]}}]}"
    ","
    " {'role':'tool','content':["
    "  {'type':'tool_result','tool_use_id':'toolu_1','content':'int x','is_error':false},"
    "  {'type':'tool_result','tool_use_id':'toolu_2','content':'no "
    "match','is_error':true}]},"
    " {'role':'assistant','content':["
    "  {'type':'thinking','thinking':'Easy.'},"
    "  {'type':'text','text':'Fixed.'},"
    "  {'type':'text','text':'Anything else?'}]},"
    " {'role':'user','content':[{'type':'text','text':'thanks'}]}]";

static const char *s_tools_text =
    "[{'name':'read_file','description':'Read a file',"
    "  'input_schema':{'type':'object','properties':{'path':{'type':'string'}}}},"
    " {'name':'grep','input_schema':{'type':'object'}}]";

static void test_openai_request (void **state)
{
    json_t *conv = s_json (s_conv_text);
    json_t *tools = s_json (s_tools_text);
    wrk_request_opts_t opts = {.model = "gpt-4o",
                               .system = "You are Corral.",
                               .tools = tools,
                               .max_tokens = 4096,
                               .thinking_budget = 2048};
    char *body = NULL, err[256] = "";
    size_t len = 0;
    assert_int_equal (wrk_conv_openai_request (conv, &opts, &body, &len, err, sizeof err),
                      0);
    assert_int_equal (len, strlen (body));
    assert_null (strchr (body, '\n')); //  compact
    s_assert_text (
        body,
        "{'model':'gpt-4o','messages':["
        " {'role':'system','content':'You are Corral.'},"
        " {'role':'user','content':'Fix the bug\\n\\n<resource uri=\\'file:///ws/a.c\\'>"
        "\\nint x\\n</resource>'},"
        " {'role':'assistant','content':'Let me look.','tool_calls':["
        "  {'id':'toolu_1','type':'function',"
        "   'function':{'name':'read_file','arguments':'{\\'path\\':\\'a.c\\'}'}},"
        "  {'id':'toolu_2','type':'function',"
        "   "
        "'function':{'name':'grep','arguments':'{\\'pattern\\':\\'x\\',\\'n\\':[1,2]}'}}]"
        "},"
        " {'role':'tool','tool_call_id':'toolu_1','content':'int x'},"
        " {'role':'tool','tool_call_id':'toolu_2','content':'no match'},"
        " {'role':'assistant','content':'Fixed.\\n\\nAnything else?'},"
        " {'role':'user','content':'thanks'}],"
        "'tools':["
        " {'type':'function','function':{'name':'read_file','description':'Read a file',"
        "  'parameters':{'type':'object','properties':{'path':{'type':'string'}}}}},"
        " {'type':'function','function':{'name':'grep','parameters':{'type':'object'}}}],"
        "'max_tokens':4096,'stream':true,'stream_options':{'include_usage':true}}");
    free (body);

    //  OpenAI's own API: max_completion_tokens.  No system prompt, no
    //  tools; an assistant message with only calls has content null and a
    //  thinking-only one is skipped.
    json_t *conv2 = s_json (
        "[{'role':'user','content':[{'type':'text','text':'go'}]},"
        " {'role':'assistant','content':[{'type':'thinking','thinking':'hm'},"
        "  {'type':'tool_use','id':'c1','name':'glob','input':{}}]},"
        " {'role':'tool','content':[{'type':'tool_result','tool_use_id':'c1','content':''"
        "}]},"
        " {'role':'assistant','content':[{'type':'thinking','thinking':'only'}]}]");
    wrk_request_opts_t plain = {.model = "o4-mini",
                                .system = "",
                                .max_tokens = 1000,
                                .max_completion_tokens = true};
    assert_int_equal (
        wrk_conv_openai_request (conv2, &plain, &body, NULL, err, sizeof err), 0);
    s_assert_text (body,
                   "{'model':'o4-mini','messages':["
                   " {'role':'user','content':'go'},"
                   " {'role':'assistant','content':null,'tool_calls':[{'id':'c1',"
                   "  'type':'function','function':{'name':'glob','arguments':'{}'}}]},"
                   " {'role':'tool','tool_call_id':'c1','content':''}],"
                   "'max_completion_tokens':1000,'stream':true,"
                   "'stream_options':{'include_usage':true}}");
    free (body);
    plain.max_tokens = 0;
    assert_int_equal (
        wrk_conv_openai_request (conv2, &plain, &body, NULL, err, sizeof err), 0);
    json_t *parsed = json_loads (body, 0, NULL);
    assert_null (json_object_get (parsed, "max_tokens"));
    assert_null (json_object_get (parsed, "max_completion_tokens"));
    json_decref (parsed);
    free (body);
    json_decref (conv2);

    //  The conversation was not changed.
    json_t *again = s_json (s_conv_text);
    assert_true (json_equal (conv, again));
    json_decref (again);
    json_decref (tools);
    json_decref (conv);
}

static void test_anthropic_request (void **state)
{
    json_t *conv = s_json (s_conv_text);
    json_t *tools = s_json (s_tools_text);
    wrk_request_opts_t opts = {.model = "claude-sonnet-4-5",
                               .system = "You are Corral.",
                               .tools = tools,
                               .max_tokens = 8192,
                               .thinking_budget = 2048};
    char *body = NULL, err[256] = "";
    size_t len = 0;
    int rc = wrk_conv_anthropic_request (conv, &opts, &body, &len, err, sizeof err);
    if (rc) fprintf (stderr, "%s\n", err);
    assert_int_equal (rc, 0);
    assert_int_equal (len, strlen (body));
    //  Signed thinking goes back unchanged; unsigned thinking is dropped;
    //  tool results travel as a user message.
    s_assert_text (
        body,
        "{'model':'claude-sonnet-4-5','max_tokens':8192,'system':'You are Corral.',"
        "'messages':["
        " {'role':'user','content':["
        "  {'type':'text','text':'Fix the bug'},"
        "  {'type':'text','text':'<resource uri=\\'file:///ws/a.c\\'>\\nint "
        "x\\n</resource>'}]},"
        " {'role':'assistant','content':["
        "  {'type':'thinking','thinking':'Missing semicolon.','signature':'EqQB'},"
        "  {'type':'text','text':'Let me look.'},"
        "  {'type':'tool_use','id':'toolu_1','name':'read_file','input':{'path':'a.c'}},"
        "  "
        "{'type':'tool_use','id':'toolu_2','name':'grep','input':{'pattern':'x','n':[1,2]"
        "}}]},"
        " {'role':'user','content':["
        "  {'type':'tool_result','tool_use_id':'toolu_1','content':'int "
        "x','is_error':false},"
        "  {'type':'tool_result','tool_use_id':'toolu_2','content':'no match',"
        "   'is_error':true}]},"
        " {'role':'assistant','content':["
        "  {'type':'text','text':'Fixed.'},{'type':'text','text':'Anything else?'}]},"
        " {'role':'user','content':[{'type':'text','text':'thanks'}]}],"
        "'tools':["
        " {'name':'read_file','description':'Read a file',"
        "  'input_schema':{'type':'object','properties':{'path':{'type':'string'}}}},"
        " {'name':'grep','input_schema':{'type':'object'}}],"
        "'thinking':{'type':'enabled','budget_tokens':2048},'stream':true}");
    free (body);

    //  Thinking off: no thinking blocks at all, no thinking key.
    opts.thinking_budget = 0;
    opts.system = NULL;
    opts.tools = NULL;
    assert_int_equal (
        wrk_conv_anthropic_request (conv, &opts, &body, NULL, err, sizeof err), 0);
    json_t *parsed = json_loads (body, 0, NULL);
    assert_null (json_object_get (parsed, "thinking"));
    assert_null (json_object_get (parsed, "system"));
    assert_null (json_object_get (parsed, "tools"));
    assert_null (json_object_get (parsed, "stream_options"));
    s_assert_json (json_array_get (json_object_get (parsed, "messages"), 1),
                   "{'role':'assistant','content':["
                   " {'type':'text','text':'Let me look.'},"
                   " {'type':'tool_use','id':'toolu_1','name':'read_file',"
                   "  'input':{'path':'a.c'}},"
                   " {'type':'tool_use','id':'toolu_2','name':'grep',"
                   "  'input':{'pattern':'x','n':[1,2]}}]}");
    json_decref (parsed);
    free (body);
    json_decref (tools);
    json_decref (conv);
}

static void test_anthropic_merges_roles (void **state)
{
    //  A cancelled turn's tool results followed by the next prompt become
    //  one user message, results first; a message left empty (unsigned
    //  thinking only) is skipped and its neighbours merge.
    json_t *conv = s_json (
        "[{'role':'user','content':[{'type':'text','text':'go'}]},"
        " {'role':'assistant','content':[{'type':'tool_use','id':'a','name':'glob',"
        "  'input':{}}]},"
        " {'role':'tool','content':[{'type':'tool_result','tool_use_id':'a',"
        "  'content':'cancelled','is_error':true}]},"
        " {'role':'user','content':[{'type':'text','text':'try again'},"
        "  {'type':'text','text':''}]},"
        " {'role':'assistant','content':[{'type':'thinking','thinking':'x'}]},"
        " {'role':'user','content':[{'type':'text','text':'hello?'}]}]");
    wrk_request_opts_t opts = {.model = "claude-haiku-4-5", .max_tokens = 100};
    char *body = NULL, err[256] = "";
    assert_int_equal (
        wrk_conv_anthropic_request (conv, &opts, &body, NULL, err, sizeof err), 0);
    s_assert_text (body,
                   "{'model':'claude-haiku-4-5','max_tokens':100,'messages':["
                   " {'role':'user','content':[{'type':'text','text':'go'}]},"
                   " {'role':'assistant','content':[{'type':'tool_use','id':'a',"
                   "  'name':'glob','input':{}}]},"
                   " {'role':'user','content':["
                   "  {'type':'tool_result','tool_use_id':'a','content':'cancelled',"
                   "   'is_error':true},"
                   "  {'type':'text','text':'try again'},"
                   "  {'type':'text','text':'hello?'}]}],"
                   "'stream':true}");
    free (body);
    json_decref (conv);

    //  Results after the text of a merged user message move to the front.
    conv = s_json ("[{'role':'user','content':[{'type':'text','text':'a'}]},"
                   " {'role':'tool','content':[{'type':'tool_result','tool_use_id':'x',"
                   "  'content':'r'}]}]");
    assert_int_equal (
        wrk_conv_anthropic_request (conv, &opts, &body, NULL, err, sizeof err), 0);
    s_assert_text (body, "{'model':'claude-haiku-4-5','max_tokens':100,'messages':["
                         " {'role':'user','content':["
                         "  {'type':'tool_result','tool_use_id':'x','content':'r',"
                         "   'is_error':false},"
                         "  {'type':'text','text':'a'}]}],'stream':true}");
    free (body);
    json_decref (conv);
}

static void test_request_refused (void **state)
{
    json_t *conv = s_json ("[{'role':'user','content':[{'type':'text','text':'go'}]}]");
    char *body = (char *)1, err[256] = "";
    wrk_request_opts_t opts = {.model = "m", .max_tokens = 2000};

    opts.model = "";
    assert_int_equal (wrk_conv_openai_request (conv, &opts, &body, NULL, err, sizeof err),
                      CM_E_INVALID);
    assert_null (body);
    s_assert_err (err, "no model");
    assert_int_equal (
        wrk_conv_anthropic_request (conv, &opts, &body, NULL, err, sizeof err),
        CM_E_INVALID);
    opts.model = "m";

    opts.max_tokens = 0;
    assert_int_equal (
        wrk_conv_anthropic_request (conv, &opts, &body, NULL, err, sizeof err),
        CM_E_INVALID);
    s_assert_err (err, "max_tokens");
    opts.max_tokens = 2000;
    opts.thinking_budget = 1023;
    assert_int_equal (
        wrk_conv_anthropic_request (conv, &opts, &body, NULL, err, sizeof err),
        CM_E_INVALID);
    s_assert_err (err, "thinking budget");
    opts.thinking_budget = 2000;
    assert_int_equal (
        wrk_conv_anthropic_request (conv, &opts, &body, NULL, err, sizeof err),
        CM_E_INVALID);
    opts.thinking_budget = 1024;
    assert_int_equal (
        wrk_conv_anthropic_request (conv, &opts, &body, NULL, err, sizeof err), 0);
    free (body);
    opts.thinking_budget = 0;

    static const struct {
        const char *tools;
        const char *needle;
    } bad_tools[] = {
        {"{}", "tools: must be an array"},
        {"[1]", "tools[0]: must be an object"},
        {"[{'name':'read file','input_schema':{}}]", "tools[0]: \"name\""},
        {"[{'name':'','input_schema':{}}]", "tools[0]: \"name\""},
        {"[{'name':'ok','input_schema':{}},{'name':'x'}]", "tools[1]: \"input_schema\""},
        {"[{'name':'ok','description':5,'input_schema':{}}]", "\"description\""},
    };
    for (size_t i = 0; i < sizeof bad_tools / sizeof bad_tools[0]; i++) {
        json_t *tools = s_json (bad_tools[i].tools);
        opts.tools = tools;
        assert_int_equal (
            wrk_conv_openai_request (conv, &opts, &body, NULL, err, sizeof err),
            CM_E_INVALID);
        s_assert_err (err, bad_tools[i].needle);
        assert_int_equal (
            wrk_conv_anthropic_request (conv, &opts, &body, NULL, err, sizeof err),
            CM_E_INVALID);
        s_assert_err (err, bad_tools[i].needle);
        json_decref (tools);
    }
    //  A name of 64 characters is fine.
    json_t *tools =
        json_pack ("[{s:s, s:{}}]", "name",
                   "a234567890123456789012345678901234567890123456789012345678901234",
                   "input_schema");
    opts.tools = tools;
    assert_int_equal (wrk_conv_openai_request (conv, &opts, &body, NULL, err, sizeof err),
                      0);
    free (body);
    json_decref (tools);
    opts.tools = NULL;
    json_decref (conv);

    //  A malformed message is named; an empty conversation has nothing to
    //  send.
    conv = s_json ("[{'role':'user','content':[{'type':'text','text':'go'}]},"
                   " {'role':'system','content':[]}]");
    assert_int_equal (wrk_conv_openai_request (conv, &opts, &body, NULL, err, sizeof err),
                      CM_E_INVALID);
    s_assert_err (err, "message 1: unknown role \"system\"");
    json_decref (conv);
    conv =
        s_json ("[{'role':'assistant','content':[{'type':'thinking','thinking':'x'}]}]");
    assert_int_equal (wrk_conv_openai_request (conv, &opts, &body, NULL, err, sizeof err),
                      CM_E_INVALID);
    s_assert_err (err, "empty");
    assert_int_equal (
        wrk_conv_anthropic_request (conv, &opts, &body, NULL, err, sizeof err),
        CM_E_INVALID);
    s_assert_err (err, "empty");
    json_decref (conv);
}

// ---------------------------------------------------------------------------
//  Checks

static void test_check_message (void **state)
{
    static const struct {
        const char *msg;
        int code;
        const char *needle;
    } cases[] = {
        {"[]", CM_E_TYPE, "must be an object"},
        {"{'content':[]}", CM_E_MISSING, "missing \"role\""},
        {"{'role':1,'content':[]}", CM_E_TYPE, "\"role\" must be a string"},
        {"{'role':'bot','content':[]}", CM_E_INVALID, "unknown role \"bot\""},
        {"{'role':'user'}", CM_E_MISSING, "missing \"content\""},
        {"{'role':'user','content':'hi'}", CM_E_TYPE, "\"content\" must be an array"},
        {"{'role':'user','content':[]}", CM_E_INVALID, "needs at least one block"},
        {"{'role':'tool','content':[]}", CM_E_INVALID, "needs at least one block"},
        {"{'role':'user','content':['hi']}", CM_E_TYPE, "content[0]: a block must be"},
        {"{'role':'user','content':[{'type':'image'}]}", CM_E_INVALID,
         "content[0]: image: unknown block type"},
        {"{'role':'user','content':[{'type':'text','text':null}]}", CM_E_TYPE,
         "content[0]: text: \"text\" must be a string"},
        {"{'role':'user','content':[{'type':'thinking','thinking':'x'}]}", CM_E_INVALID,
         "not allowed in a user message"},
        {"{'role':'user','content':[{'type':'tool_use','id':'a','name':'b','input':{}}]}",
         CM_E_INVALID, "not allowed in a user message"},
        {"{'role':'user','content':[{'type':'tool_result','tool_use_id':'a','content':''}"
         "]}",
         CM_E_INVALID, "only in role tool"},
        {"{'role':'tool','content':[{'type':'text','text':'x'}]}", CM_E_INVALID,
         "not allowed in a tool message"},
        {"{'role':'assistant','content':[{'type':'thinking'}]}", CM_E_MISSING,
         "missing \"thinking\""},
        {"{'role':'assistant','content':[{'type':'thinking','thinking':'x','signature':1}"
         "]}",
         CM_E_TYPE, "\"signature\" must be a string"},
        {"{'role':'assistant','content':[{'type':'tool_use','name':'b','input':{}}]}",
         CM_E_MISSING, "content[0]: tool_use: missing \"id\""},
        {"{'role':'assistant','content':[{'type':'tool_use','id':'','name':'b','input':{}"
         "}]}",
         CM_E_INVALID, "\"id\" is empty"},
        {"{'role':'assistant','content':[{'type':'tool_use','id':'a','name':'','input':{}"
         "}]}",
         CM_E_INVALID, "\"name\" is empty"},
        {"{'role':'assistant','content':[{'type':'tool_use','id':'a','name':'b'}]}",
         CM_E_MISSING, "missing \"input\""},
        {"{'role':'assistant','content':[{'type':'tool_use','id':'a','name':'b','input':'"
         "{}'}]}",
         CM_E_TYPE, "\"input\" must be an object"},
        {"{'role':'assistant','content':[{'type':'tool_use','id':'a','name':'b','input':{"
         "}},"
         "{'type':'tool_use','id':'a','name':'c','input':{}}]}",
         CM_E_INVALID, "content[1]: tool_use: id \"a\" used twice"},
        {"{'role':'tool','content':[{'type':'tool_result','content':'x'}]}", CM_E_MISSING,
         "missing \"tool_use_id\""},
        {"{'role':'tool','content':[{'type':'tool_result','tool_use_id':'a'}]}",
         CM_E_MISSING, "missing \"content\""},
        {"{'role':'tool','content':[{'type':'tool_result','tool_use_id':'a','content':[]}"
         "]}",
         CM_E_TYPE, "\"content\" must be a string"},
        {"{'role':'tool','content':[{'type':'tool_result','tool_use_id':'a','content':'',"
         "'is_error':'yes'}]}",
         CM_E_TYPE, "\"is_error\" must be a boolean"},
        {"{'role':'tool','content':[{'type':'tool_result','tool_use_id':'a','content':''}"
         ","
         "{'type':'tool_result','tool_use_id':'a','content':''}]}",
         CM_E_INVALID, "answered twice"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        json_t *msg = s_json (cases[i].msg);
        char err[256] = "";
        int rc = wrk_conv_check_message (msg, err, sizeof err);
        if (rc != cases[i].code) fprintf (stderr, "case %zu: %d %s\n", i, rc, err);
        assert_int_equal (rc, cases[i].code);
        s_assert_err (err, cases[i].needle);
        json_decref (msg);
    }

    //  Every valid shape passes, unknown keys included.
    static const char *const good[] = {
        "{'role':'user','content':[{'type':'text','text':''}],'ts':5}",
        "{'role':'assistant','content':[]}",
        "{'role':'assistant','content':[{'type':'thinking','thinking':'','signature':'s'}"
        ","
        " {'type':'text','text':'x','cache':true},"
        " {'type':'tool_use','id':'a','name':'b','input':{'k':[1]}},"
        " {'type':'tool_use','id':'b','name':'b','input':{}}]}",
        "{'role':'tool','content':[{'type':'tool_result','tool_use_id':'a','content':'',"
        " 'is_error':true},{'type':'tool_result','tool_use_id':'b','content':'ok'}]}",
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        json_t *msg = s_json (good[i]);
        char err[256] = "";
        int rc = wrk_conv_check_message (msg, err, sizeof err);
        if (rc) fprintf (stderr, "good %zu: %s\n", i, err);
        assert_int_equal (rc, 0);
        json_decref (msg);
    }
}

static void test_check_limits (void **state)
{
    //  Blocks: WRK_CONV_MAX_BLOCKS pass, one more does not.
    json_t *msg = json_pack ("{s:s, s:[]}", "role", "user", "content");
    json_t *content = json_object_get (msg, "content");
    for (int i = 0; i < WRK_CONV_MAX_BLOCKS; i++)
        json_array_append_new (content,
                               json_pack ("{s:s, s:s}", "type", "text", "text", "x"));
    assert_int_equal (wrk_conv_check_message (msg, NULL, 0), 0);
    json_array_append_new (content,
                           json_pack ("{s:s, s:s}", "type", "text", "text", "x"));
    assert_int_equal (wrk_conv_check_message (msg, NULL, 0), CM_E_TOO_LARGE);
    json_decref (msg);

    //  Ids: WRK_CONV_MAX_ID bytes pass, one more does not.
    char id[WRK_CONV_MAX_ID + 2];
    memset (id, 'i', sizeof id - 1);
    id[WRK_CONV_MAX_ID] = '\0';
    msg = json_pack ("{s:s, s:[{s:s, s:s, s:s, s:{}}]}", "role", "assistant", "content",
                     "type", "tool_use", "id", id, "name", "n", "input");
    assert_int_equal (wrk_conv_check_message (msg, NULL, 0), 0);
    json_decref (msg);
    id[WRK_CONV_MAX_ID] = 'i';
    id[WRK_CONV_MAX_ID + 1] = '\0';
    msg = json_pack ("{s:s, s:[{s:s, s:s, s:s, s:{}}]}", "role", "assistant", "content",
                     "type", "tool_use", "id", id, "name", "n", "input");
    char err[256] = "";
    assert_int_equal (wrk_conv_check_message (msg, err, sizeof err), CM_E_TOO_LARGE);
    s_assert_err (err, "\"id\" is longer than 256 bytes");
    json_decref (msg);

    //  Text: WRK_CONV_MAX_TEXT bytes pass, one more does not.
    char *big = malloc (WRK_CONV_MAX_TEXT + 2);
    assert_non_null (big);
    memset (big, 't', WRK_CONV_MAX_TEXT + 1);
    big[WRK_CONV_MAX_TEXT] = '\0';
    msg = json_pack ("{s:s, s:[{s:s, s:s}]}", "role", "user", "content", "type", "text",
                     "text", big);
    assert_int_equal (wrk_conv_check_message (msg, NULL, 0), 0);
    json_decref (msg);
    big[WRK_CONV_MAX_TEXT] = 't';
    big[WRK_CONV_MAX_TEXT + 1] = '\0';
    msg = json_pack ("{s:s, s:[{s:s, s:s}]}", "role", "user", "content", "type", "text",
                     "text", big);
    assert_int_equal (wrk_conv_check_message (msg, NULL, 0), CM_E_TOO_LARGE);
    json_decref (msg);
    free (big);

    //  Conversations: an array, of valid messages.
    json_t *conv = s_json ("{}");
    assert_int_equal (wrk_conv_check (conv, err, sizeof err), CM_E_TYPE);
    json_decref (conv);
}

static void test_parse_message (void **state)
{
    json_t *msg = NULL;
    char err[256] = "";
    const char *text =
        "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"hi\"}]}";
    assert_int_equal (wrk_conv_parse_message (text, strlen (text), &msg, err, sizeof err),
                      0);
    s_assert_json (msg, "{'role':'user','content':[{'type':'text','text':'hi'}]}");
    json_decref (msg);

    msg = (json_t *)1;
    assert_int_equal (wrk_conv_parse_message ("{\"role\":", 8, &msg, err, sizeof err),
                      CM_E_INVALID);
    assert_null (msg);
    s_assert_err (err, "not JSON");
    const char *dup = "{\"role\":\"user\",\"role\":\"tool\",\"content\":[]}";
    assert_int_equal (wrk_conv_parse_message (dup, strlen (dup), &msg, err, sizeof err),
                      CM_E_INVALID);
    const char *bad = "{\"role\":\"user\",\"content\":[]}";
    assert_int_equal (wrk_conv_parse_message (bad, strlen (bad), &msg, err, sizeof err),
                      CM_E_INVALID);
    assert_null (msg);
    assert_int_equal (
        wrk_conv_parse_message (text, WRK_CONV_MAX_MESSAGE + 1, &msg, err, sizeof err),
        CM_E_TOO_LARGE);
}

//  The pieces together: a prompt, a streamed reply with a call, a cancel
//  before the call ran, repair, and the next request.
static void test_turn_round_trip (void **state)
{
    const char *prompt = "[{\"type\":\"text\",\"text\":\"list files\"}]";
    json_t *conv = json_array (), *msg = NULL;
    assert_int_equal (wrk_conv_user_from_acp (prompt, strlen (prompt), &msg, NULL, 0), 0);
    json_array_append_new (conv, msg);
    wrk_reply_t *reply = wrk_reply_new ();
    s_feed (reply, WRK_DELTA_TEXT, "Listing.", 0);
    s_tool (reply, WRK_DELTA_TOOL_START, 0, "call_0", "list_dir", "", 0);
    s_tool (reply, WRK_DELTA_TOOL_END, 0, "call_0", "list_dir", "{\"path\":\".\"}", 0);
    s_finish (reply, "tool_use", 0);
    assert_int_equal (wrk_reply_message (reply, &msg), 0);
    json_array_append_new (conv, msg);
    wrk_reply_destroy (&reply);

    //  Every message survives the store's text form.
    for (size_t i = 0; i < json_array_size (conv); i++) {
        char *text = json_dumps (json_array_get (conv, i), JSON_COMPACT);
        json_t *back = NULL;
        assert_int_equal (wrk_conv_parse_message (text, strlen (text), &back, NULL, 0),
                          0);
        assert_true (json_equal (back, json_array_get (conv, i)));
        json_decref (back);
        free (text);
    }
    assert_int_equal (wrk_conv_repair (conv, NULL, NULL, 0), 1);
    wrk_request_opts_t opts = {.model = "gpt-4o"};
    char *body = NULL;
    assert_int_equal (wrk_conv_openai_request (conv, &opts, &body, NULL, NULL, 0), 0);
    s_assert_text (body,
                   "{'model':'gpt-4o','messages':["
                   " {'role':'user','content':'list files'},"
                   " {'role':'assistant','content':'Listing.','tool_calls':[{"
                   "  'id':'call_0','type':'function','function':{'name':'list_dir',"
                   "  'arguments':'{\\'path\\':\\'.\\'}'}}]},"
                   " {'role':'tool','tool_call_id':'call_0',"
                   "  'content':'cancelled: the turn was stopped before this tool ran'}],"
                   "'stream':true,'stream_options':{'include_usage':true}}");
    free (body);
    json_decref (conv);
}

int main (void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test (test_acp_prompt),
        cmocka_unit_test (test_acp_prompt_refused),
        cmocka_unit_test (test_acp_prompt_limits),
        cmocka_unit_test (test_reply_builder),
        cmocka_unit_test (test_reply_block_boundaries),
        cmocka_unit_test (test_reply_refused),
        cmocka_unit_test (test_repair_adds_missing),
        cmocka_unit_test (test_repair_new_tool_message),
        cmocka_unit_test (test_repair_drops_strays),
        cmocka_unit_test (test_openai_request),
        cmocka_unit_test (test_anthropic_request),
        cmocka_unit_test (test_anthropic_merges_roles),
        cmocka_unit_test (test_request_refused),
        cmocka_unit_test (test_check_message),
        cmocka_unit_test (test_check_limits),
        cmocka_unit_test (test_parse_message),
        cmocka_unit_test (test_turn_round_trip),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
