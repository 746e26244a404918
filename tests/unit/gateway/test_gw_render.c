/*  test_gw_render.c - bus events and session records as clients see them:
    every event type to /acp frames and a REST object, the prompt rules
    (blocks, folding, text that is not an array), JSON-text fields, UTF-8,
    _meta on every frame, session records, and bytes that are not an event
    (errors, never a crash).

    Set CORRAL_ACP_SAMPLES=<file> to append every ACP value the test
    renders, one {"def": <schema definition>, "value": ...} per line, for
    checking against the official schema (tests/e2e/node_modules/
    @agentclientprotocol/sdk/schema/v1/schema.json; "#" is the whole
    message schema).
*/
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cm_error.h"
#include "gw_render.h"

#define S_SESSION "01890a5d-ac96-774b-bcce-b302099a8057"
#define S_TURN    "01890a5d-ac97-7000-8000-000000000042"
#define S_EPOCH   "ep-7f3a"
#define S_TS      1735787045678LL //  2025-01-02T03:04:05.678Z

static gw_render_t *s_render_obj;
static bool s_generic; //  the second run: every event through jansson
static cm_uuid_t s_session, s_turn;

static int s_setup (void **state)
{
    s_render_obj = gw_render_new ();
    assert_int_equal (cm_uuid_parse (S_SESSION, &s_session), 0);
    assert_int_equal (cm_uuid_parse (S_TURN, &s_turn), 0);
    return s_render_obj ? 0 : -1;
}

static int s_setup_generic (void **state)
{
    s_generic = true;
    int rc = s_setup (state);
    if (s_render_obj) gw_render_set_generic (s_render_obj, true);
    return rc;
}

static int s_teardown (void **state)
{
    gw_render_destroy (&s_render_obj);
    assert_null (s_render_obj);
    gw_render_destroy (&s_render_obj); //  idempotent
    return 0;
}

// ---------------------------------------------------------------------------
//  Helpers

//  Append {"def": def, "value": value} to $CORRAL_ACP_SAMPLES, if set.
static void s_sample (const char *def, json_t *value)
{
    const char *path = getenv ("CORRAL_ACP_SAMPLES");
    if (!path || !*path) return;
    FILE *f = fopen (path, "a");
    assert_non_null (f);
    json_t *line = json_pack ("{s:s,s:O}", "def", def, "value", value);
    assert_non_null (line);
    char *text = json_dumps (line, JSON_COMPACT);
    fprintf (f, "%s\n", text);
    free (text);
    json_decref (line);
    fclose (f);
}

//  Value at a dotted path ("params.update.content.0.text"; a number indexes
//  an array), or NULL.  Borrowed.
static json_t *s_get (json_t *root, const char *path)
{
    char buf[256];
    snprintf (buf, sizeof buf, "%s", path);
    json_t *node = root;
    for (char *save = NULL, *seg = strtok_r (buf, ".", &save); node && seg;
         seg = strtok_r (NULL, ".", &save)) {
        if (json_is_array (node))
            node = json_array_get (node, (size_t)strtoul (seg, NULL, 10));
        else
            node = json_object_get (node, seg);
    }
    return node;
}

static const char *s_gets (json_t *root, const char *path)
{
    return json_string_value (s_get (root, path));
}

static json_int_t s_geti (json_t *root, const char *path)
{
    json_t *v = s_get (root, path);
    assert_true (json_is_integer (v));
    return json_integer_value (v);
}

//  Encode an event body of type into a fresh buffer.
static void s_encode (proto_buf_t *buf, proto_type_t type, const void *body)
{
    proto_buf_init (buf);
    assert_int_equal (proto_encode (buf, type, 0, body), 0);
}

//  Encode and render; the event must render.
static void s_render_ok (proto_type_t type, const void *body, gw_rendered_t *out)
{
    proto_buf_t buf;
    s_encode (&buf, type, body);
    int rc = gw_render_event (s_render_obj, buf.data, buf.size, S_EPOCH, out);
    proto_buf_fini (&buf);
    assert_int_equal (rc, 0);
    assert_int_equal (out->type, type);
    assert_string_equal (out->kind, proto_type_name (type));
    assert_true (out->nframes >= 1 && out->nframes <= GW_RENDER_MAX_FRAMES);
    assert_non_null (out->rest);
    //  Streamed text is written without jansson and has no meta object.
    bool text = type == PROTO_EV_AGENT_MESSAGE || type == PROTO_EV_AGENT_THOUGHT;
    assert_true (out->meta || (text && !s_generic));
}

//  params._meta of frame 0, which every frame of an event carries (the
//  caller decrefs).
static json_t *s_meta_of (const gw_rendered_t *out)
{
    json_t *root = json_loads (out->frames[0], 0, NULL);
    assert_non_null (root);
    json_t *meta = json_incref (s_get (root, "params._meta"));
    json_decref (root);
    assert_non_null (meta);
    return meta;
}

//  Frame i parsed and checked as a JSON-RPC notification of method, whose
//  params carry sessionId and _meta {seq, epoch, ts[, turnId]}; returns
//  the params (caller decrefs).  Collects the frame (and a session/update's
//  params) as schema samples.
static json_t *s_frame (const gw_rendered_t *out, size_t i, const char *method)
{
    assert_true (i < out->nframes);
    json_error_t err;
    json_t *root = json_loads (out->frames[i], 0, &err);
    assert_non_null (root);
    assert_string_equal (s_gets (root, "jsonrpc"), "2.0");
    assert_null (json_object_get (root, "id"));
    assert_string_equal (s_gets (root, "method"), method);
    json_t *params = json_incref (json_object_get (root, "params"));
    assert_true (json_is_object (params));
    assert_string_equal (s_gets (params, "sessionId"), S_SESSION);
    assert_int_equal (s_geti (params, "_meta.seq"), (json_int_t)out->seq);
    assert_int_equal (s_geti (params, "_meta.ts"), out->ts);
    assert_string_equal (s_gets (params, "_meta.epoch"), S_EPOCH);
    if (out->has_turn)
        assert_string_equal (s_gets (params, "_meta.turnId"), S_TURN);
    else
        assert_null (s_get (params, "_meta.turnId"));
    assert_true (!out->meta || json_equal (json_object_get (params, "_meta"), out->meta));
    s_sample ("#", root);
    if (strcmp (method, GW_RENDER_METHOD_UPDATE) == 0)
        s_sample ("SessionNotification", params);
    json_decref (root);
    return params;
}

//  A session/update frame's update object, of the given kind (caller
//  decrefs the returned params; *update is borrowed from it).
static json_t *s_update (const gw_rendered_t *out, size_t i, const char *kind,
                         json_t **update)
{
    json_t *params = s_frame (out, i, GW_RENDER_METHOD_UPDATE);
    *update = json_object_get (params, "update");
    assert_string_equal (s_gets (*update, "sessionUpdate"), kind);
    return params;
}

//  The REST object, checked for the head; caller decrefs.
static json_t *s_rest (const gw_rendered_t *out)
{
    json_error_t err;
    json_t *r = json_loads (out->rest, 0, &err);
    assert_non_null (r);
    assert_int_equal (s_geti (r, "seq"), (json_int_t)out->seq);
    assert_int_equal (s_geti (r, "ts"), out->ts);
    assert_string_equal (s_gets (r, "epoch"), S_EPOCH);
    assert_string_equal (s_gets (r, "sessionId"), S_SESSION);
    assert_string_equal (s_gets (r, "kind"), out->kind);
    if (out->has_turn)
        assert_string_equal (s_gets (r, "turnId"), S_TURN);
    else
        assert_null (json_object_get (r, "turnId"));
    //  The head is not repeated under its bus names.
    assert_null (json_object_get (r, "session"));
    assert_null (json_object_get (r, "turn"));
    return r;
}

//  A _corral/session/event frame's event object, of the given kind.
static json_t *s_event (const gw_rendered_t *out, size_t i, json_t **event)
{
    json_t *params = s_frame (out, i, GW_RENDER_METHOD_EVENT);
    *event = json_object_get (params, "event");
    assert_string_equal (s_gets (*event, "kind"), out->kind);
    return params;
}

#define S_HEAD(n) .session = s_session, .seq = (n), .ts = S_TS, .turn = s_turn

// ---------------------------------------------------------------------------
//  Events

static void test_session_created (void **state)
{
    proto_ev_session_created_t ev = {.session = s_session,
                                     .seq = 1,
                                     .ts = S_TS,
                                     .tenant = "acme",
                                     .cwd = "/work/acme",
                                     .backend = "openai",
                                     .model = "gpt-x",
                                     .mode = "ask"};
    gw_rendered_t out;
    s_render_ok (PROTO_EV_SESSION_CREATED, &ev, &out);
    assert_false (out.has_turn);
    assert_int_equal (out.nframes, 1);
    assert_memory_equal (&out.session, &s_session, sizeof s_session);
    json_t *event, *params = s_event (&out, 0, &event);
    assert_string_equal (s_gets (event, "tenant"), "acme");
    assert_string_equal (s_gets (event, "cwd"), "/work/acme");
    assert_string_equal (s_gets (event, "mode"), "ask");
    assert_null (json_object_get (event, "title")); //  absent: left out
    assert_null (json_object_get (event, "seq"));   //  the head is in _meta
    json_decref (params);
    json_t *r = s_rest (&out);
    assert_string_equal (s_gets (r, "backend"), "openai");
    assert_string_equal (s_gets (r, "model"), "gpt-x");
    json_decref (r);
    gw_rendered_fini (&out);
    assert_int_equal (out.nframes, 0);
    gw_rendered_fini (&out); //  idempotent
}

static void test_state (void **state)
{
    proto_ev_state_t ev = {S_HEAD (2), .state = "awaiting_permission",
                           .reason = "tool wants to write"};
    gw_rendered_t out;
    s_render_ok (PROTO_EV_STATE, &ev, &out);
    assert_string_equal (out.state, "awaiting_permission");
    assert_null (out.request_id);
    assert_null (out.perm_params);
    json_t *params = s_frame (&out, 0, GW_RENDER_METHOD_STATE);
    assert_string_equal (s_gets (params, "state"), "awaiting_permission");
    assert_string_equal (s_gets (params, "reason"), "tool wants to write");
    json_decref (params);
    json_t *r = s_rest (&out);
    assert_string_equal (s_gets (r, "state"), "awaiting_permission");
    json_decref (r);
    gw_rendered_fini (&out);

    proto_ev_state_t idle = {S_HEAD (3), .state = "idle"};
    s_render_ok (PROTO_EV_STATE, &idle, &out);
    params = s_frame (&out, 0, GW_RENDER_METHOD_STATE);
    assert_null (json_object_get (params, "reason"));
    json_decref (params);
    gw_rendered_fini (&out);
}

static void test_user_message_blocks (void **state)
{
    const char *prompt =
        "[{\"type\":\"text\",\"text\":\"Fix the bug in\"},"
        "{\"type\":\"resource_link\",\"name\":\"main.c\",\"uri\":\"file:///w/main.c\"},"
        "{\"type\":\"resource\",\"resource\":{\"uri\":\"file:///w/a.h\",\"text\":\"int "
        "a;\","
        "\"mimeType\":\"text/x-c\"}}]";
    proto_ev_user_message_t ev = {S_HEAD (4), .prompt = prompt, .idem = "k1"};
    gw_rendered_t out;
    s_render_ok (PROTO_EV_USER_MESSAGE, &ev, &out);
    assert_true (out.has_turn);
    assert_int_equal (out.nframes, 3);
    const char *types[] = {"text", "resource_link", "resource"};
    for (size_t i = 0; i < 3; i++) {
        json_t *u, *params = s_update (&out, i, "user_message_chunk", &u);
        assert_string_equal (s_gets (u, "content.type"), types[i]);
        json_decref (params);
    }
    json_t *u, *params = s_update (&out, 0, "user_message_chunk", &u);
    assert_string_equal (s_gets (u, "content.text"), "Fix the bug in");
    json_decref (params);
    params = s_update (&out, 2, "user_message_chunk", &u);
    assert_string_equal (s_gets (u, "content.resource.text"), "int a;");
    json_decref (params);
    //  REST: the prompt as the array it is.
    json_t *r = s_rest (&out);
    assert_true (json_is_array (json_object_get (r, "prompt")));
    assert_int_equal (json_array_size (json_object_get (r, "prompt")), 3);
    assert_string_equal (s_gets (r, "prompt.1.uri"), "file:///w/main.c");
    assert_string_equal (s_gets (r, "idem"), "k1");
    json_decref (r);
    gw_rendered_fini (&out);
}

static void test_user_message_not_array (void **state)
{
    //  Plain text, a JSON object, a JSON string: one text block, raw.
    const char *prompts[] = {"just fix it [please", "{\"text\":\"hi\"}", "\"quoted\""};
    for (size_t i = 0; i < 3; i++) {
        proto_ev_user_message_t ev = {S_HEAD (5), .prompt = prompts[i]};
        gw_rendered_t out;
        s_render_ok (PROTO_EV_USER_MESSAGE, &ev, &out);
        assert_int_equal (out.nframes, 1);
        json_t *u, *params = s_update (&out, 0, "user_message_chunk", &u);
        assert_string_equal (s_gets (u, "content.type"), "text");
        assert_string_equal (s_gets (u, "content.text"), prompts[i]);
        json_decref (params);
        json_t *r = s_rest (&out);
        if (i == 0) assert_string_equal (s_gets (r, "prompt"), prompts[i]);
        if (i == 1) assert_string_equal (s_gets (r, "prompt.text"), "hi");
        json_decref (r);
        gw_rendered_fini (&out);
    }
    //  An empty array still reaches the client: one empty text.
    proto_ev_user_message_t ev = {S_HEAD (6), .prompt = "[]"};
    gw_rendered_t out;
    s_render_ok (PROTO_EV_USER_MESSAGE, &ev, &out);
    assert_int_equal (out.nframes, 1);
    json_t *u, *params = s_update (&out, 0, "user_message_chunk", &u);
    assert_string_equal (s_gets (u, "content.text"), "");
    json_decref (params);
    gw_rendered_fini (&out);
}

static void test_user_message_fold (void **state)
{
    //  At the limit: every block its own frame.
    char prompt[2048] = "[";
    for (int i = 0; i < GW_RENDER_MAX_PROMPT_BLOCKS; i++)
        snprintf (prompt + strlen (prompt), sizeof prompt - strlen (prompt),
                  "%s{\"type\":\"text\",\"text\":\"b%d\"}", i ? "," : "", i);
    strcat (prompt, "]");
    proto_ev_user_message_t ev = {S_HEAD (7), .prompt = prompt};
    gw_rendered_t out;
    s_render_ok (PROTO_EV_USER_MESSAGE, &ev, &out);
    assert_int_equal (out.nframes, GW_RENDER_MAX_PROMPT_BLOCKS);
    json_t *u, *params = s_update (&out, GW_RENDER_MAX_PROMPT_BLOCKS - 1,
                                   "user_message_chunk", &u);
    assert_string_equal (s_gets (u, "content.text"), "b6");
    assert_null (s_get (u, "content._meta"));
    json_decref (params);
    gw_rendered_fini (&out);

    //  Past it: blocks 7.. are folded into the last frame, in order, with
    //  a resource link as its URI and an image as a placeholder.
    strcpy (prompt + strlen (prompt) - 1,
            ",{\"type\":\"resource_link\",\"name\":\"n\",\"uri\":\"file:///x\"},"
            "{\"type\":\"image\",\"data\":\"AAAA\",\"mimeType\":\"image/png\"},"
            "{\"type\":\"text\",\"text\":\"last\"}]");
    ev.prompt = prompt;
    s_render_ok (PROTO_EV_USER_MESSAGE, &ev, &out);
    assert_int_equal (out.nframes, GW_RENDER_MAX_PROMPT_BLOCKS);
    for (size_t i = 0; i < out.nframes; i++) {
        params = s_update (&out, i, "user_message_chunk", &u);
        json_decref (params);
    }
    params = s_update (&out, GW_RENDER_MAX_PROMPT_BLOCKS - 1, "user_message_chunk", &u);
    assert_string_equal (s_gets (u, "content.text"),
                         "b6\n\nfile:///x\n\n[image: image/png]\n\nlast");
    assert_int_equal (s_geti (u, "content._meta.foldedBlocks"), 4);
    json_decref (params);
    json_t *r = s_rest (&out); //  REST keeps every block
    assert_int_equal (json_array_size (json_object_get (r, "prompt")),
                      GW_RENDER_MAX_PROMPT_BLOCKS + 3);
    json_decref (r);
    gw_rendered_fini (&out);
}

static void test_user_message_bad_blocks (void **state)
{
    //  Elements without ACP's shape become text blocks holding their JSON.
    const char *prompt =
        "[42,{\"type\":\"image\",\"mimeType\":\"image/png\"},"
        "{\"type\":\"text\",\"text\":\"t\",\"annotations\":{\"audience\":"
        "[\"robot\"]}},{\"type\":\"video\"},"
        "{\"type\":\"text\",\"text\":\"ok\",\"annotations\":{\"audience\":"
        "[\"user\"],\"priority\":0.5}}]";
    proto_ev_user_message_t ev = {S_HEAD (8), .prompt = prompt};
    gw_rendered_t out;
    s_render_ok (PROTO_EV_USER_MESSAGE, &ev, &out);
    assert_int_equal (out.nframes, 5);
    const char *want[] = {
        "42", "{\"type\":\"image\",\"mimeType\":\"image/png\"}",
        "{\"type\":\"text\",\"text\":\"t\",\"annotations\":{\"audience\":"
        "[\"robot\"]}}",
        "{\"type\":\"video\"}", "ok"};
    for (size_t i = 0; i < 5; i++) {
        json_t *u, *params = s_update (&out, i, "user_message_chunk", &u);
        assert_string_equal (s_gets (u, "content.type"), "text");
        assert_string_equal (s_gets (u, "content.text"), want[i]);
        json_decref (params);
    }
    gw_rendered_fini (&out);
}

static void test_agent_chunks_utf8 (void **state)
{
    //  UTF-8 passes through; bytes that are not UTF-8 become U+FFFD.
    proto_ev_text_t msg = {S_HEAD (9), .text =
                                           "h\xc3\xa9llo \xf0\x9f\x90\x84 \xe2\x80\x94 "
                                           "\xe6\x97\xa5\xe6\x9c\xac"};
    gw_rendered_t out;
    s_render_ok (PROTO_EV_AGENT_MESSAGE, &msg, &out);
    json_t *u, *params = s_update (&out, 0, "agent_message_chunk", &u);
    assert_string_equal (s_gets (u, "content.type"), "text");
    assert_string_equal (s_gets (u, "content.text"), msg.text);
    json_decref (params);
    gw_rendered_fini (&out);

    proto_ev_text_t bad = {S_HEAD (10), .text = "a\xff"
                                                "b\xc3(\xed\xa0\x80z\xf0\x9f"};
    s_render_ok (PROTO_EV_AGENT_THOUGHT, &bad, &out);
    params = s_update (&out, 0, "agent_thought_chunk", &u);
    assert_string_equal (s_gets (u, "content.text"),
                         "a\xef\xbf\xbd"
                         "b\xef\xbf\xbd(\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbdz"
                         "\xef\xbf\xbd\xef\xbf\xbd");
    json_decref (params);
    json_t *r = s_rest (&out);
    assert_non_null (s_gets (r, "text"));
    json_decref (r);
    gw_rendered_fini (&out);

    //  An epoch that is not UTF-8 cannot break a frame either.
    proto_buf_t buf;
    s_encode (&buf, PROTO_EV_AGENT_MESSAGE, &msg);
    assert_int_equal (gw_render_event (s_render_obj, buf.data, buf.size, "e\xff", &out),
                      0);
    json_t *meta = s_meta_of (&out);
    assert_string_equal (json_string_value (json_object_get (meta, "epoch")),
                         "e\xef\xbf\xbd");
    json_decref (meta);
    gw_rendered_fini (&out);
    proto_buf_fini (&buf);
}

//  Render one text event both ways; the bytes must be the same.
static void s_fast_vs_generic (proto_type_t type, const proto_ev_text_t *ev,
                               const char *epoch)
{
    proto_buf_t buf;
    s_encode (&buf, type, ev);
    gw_rendered_t fast, slow;
    gw_render_set_generic (s_render_obj, false);
    assert_int_equal (gw_render_event (s_render_obj, buf.data, buf.size, epoch, &fast),
                      0);
    gw_render_set_generic (s_render_obj, true);
    assert_int_equal (gw_render_event (s_render_obj, buf.data, buf.size, epoch, &slow),
                      0);
    gw_render_set_generic (s_render_obj, s_generic);
    proto_buf_fini (&buf);
    assert_int_equal (fast.nframes, 1);
    assert_int_equal (slow.nframes, 1);
    assert_string_equal (fast.frames[0], slow.frames[0]);
    assert_string_equal (fast.rest, slow.rest);
    assert_null (fast.meta);
    assert_int_equal (fast.seq, slow.seq);
    gw_rendered_fini (&fast);
    gw_rendered_fini (&slow);
}

static void test_text_fast_path (void **state)
{
    //  Streamed text skips jansson: every byte, escapes, invalid UTF-8,
    //  heads with and without a turn or epoch give jansson's exact text.
    char one[2] = {0};
    for (int c = 1; c < 256; c++) {
        one[0] = (char)c;
        proto_ev_text_t ev = {S_HEAD ((uint64_t)c), .text = one};
        s_fast_vs_generic (PROTO_EV_AGENT_MESSAGE, &ev, S_EPOCH);
    }
    static const char *const texts[] = {
        "",
        "plain words, and some more",
        "quote \" backslash \\ slash / tab \t nl \n cr \r bs \b ff \f del \x7f",
        "\x01\x02\x1f\x1e",
        "h\xc3\xa9llo \xf0\x9f\x90\x84 \xe2\x80\x94 \xe2\x80\xa8 \xe2\x80\xa9 "
        "\xef\xbb\xbf",
        "a\xff"
        "b\xc3(\xed\xa0\x80z\xf0\x9f",
        "\xc0\x80 \xe0\x80\xaf \xf4\x90\x80\x80 \xf8\x88\x80\x80\x80 \xc3",
        "<script>alert(1)</script> \\u0000",
    };
    for (size_t i = 0; i < sizeof texts / sizeof *texts; i++) {
        proto_ev_text_t ev = {S_HEAD (100 + i), .text = texts[i]};
        s_fast_vs_generic (PROTO_EV_AGENT_MESSAGE, &ev, S_EPOCH);
        s_fast_vs_generic (PROTO_EV_AGENT_THOUGHT, &ev, NULL);
        s_fast_vs_generic (PROTO_EV_AGENT_THOUGHT, &ev, "e\xff\"");
        proto_ev_text_t no_turn = {
            .session = s_session, .seq = UINT64_MAX, .ts = -5, .text = texts[i]};
        s_fast_vs_generic (PROTO_EV_AGENT_MESSAGE, &no_turn, S_EPOCH);
    }
    //  Random bytes, mostly ASCII with high bytes and controls mixed in.
    uint32_t x = 2463534242u;
    char text[200];
    for (int round = 0; round < 2000; round++) {
        x ^= x << 13, x ^= x >> 17, x ^= x << 5;
        size_t n = x % (sizeof text - 1);
        for (size_t i = 0; i < n; i++) {
            x ^= x << 13, x ^= x >> 17, x ^= x << 5;
            char c = (char)(x & 0xff);
            text[i] = c ? c : 'z';
        }
        text[n] = 0;
        proto_ev_text_t ev = {.session = s_session,
                              .seq = (uint64_t)round,
                              .ts = (int64_t)x - 7,
                              .turn = s_turn,
                              .text = text};
        s_fast_vs_generic (round & 1 ? PROTO_EV_AGENT_THOUGHT : PROTO_EV_AGENT_MESSAGE,
                           &ev, round & 2 ? S_EPOCH : NULL);
    }
}

static void test_tool_call (void **state)
{
    const char *locs[] = {"src/main.c", ""};
    proto_ev_tool_call_t ev = {S_HEAD (11),
                               .tool_call_id = "call_1",
                               .title = "Edit src/main.c",
                               .kind = "edit",
                               .status = "pending",
                               .raw_input = "{\"path\":\"src/main.c\",\"n\":[1,2]}",
                               .locations = {locs, 2}};
    gw_rendered_t out;
    s_render_ok (PROTO_EV_TOOL_CALL, &ev, &out);
    assert_int_equal (out.nframes, 1);
    json_t *u, *params = s_update (&out, 0, "tool_call", &u);
    assert_string_equal (s_gets (u, "toolCallId"), "call_1");
    assert_string_equal (s_gets (u, "title"), "Edit src/main.c");
    assert_string_equal (s_gets (u, "kind"), "edit");
    assert_string_equal (s_gets (u, "status"), "pending");
    assert_string_equal (s_gets (u, "rawInput.path"), "src/main.c");
    assert_int_equal (s_geti (u, "rawInput.n.1"), 2);
    assert_int_equal (json_array_size (json_object_get (u, "locations")),
                      1); //  "" skipped
    assert_string_equal (s_gets (u, "locations.0.path"), "src/main.c");
    json_decref (params);
    json_t *r = s_rest (&out);
    assert_string_equal (s_gets (r, "toolCallId"), "call_1");
    assert_string_equal (s_gets (r, "rawInput.path"), "src/main.c");
    assert_string_equal (s_gets (r, "toolKind"), "edit"); //  "kind" is the event's
    assert_int_equal (json_array_size (json_object_get (r, "locations")), 2);
    json_decref (r);
    gw_rendered_fini (&out);

    //  Invalid JSON in raw_input: a string; values outside ACP's enums are
    //  mapped (kind) or left out (status); no locations, no key.
    proto_ev_tool_call_t odd = {S_HEAD (12),       .tool_call_id = "call_2",
                                .title = "Frob",   .kind = "frobnicate",
                                .status = "stuck", .raw_input = "{\"path\": oops"};
    s_render_ok (PROTO_EV_TOOL_CALL, &odd, &out);
    params = s_update (&out, 0, "tool_call", &u);
    assert_string_equal (s_gets (u, "kind"), "other");
    assert_null (json_object_get (u, "status"));
    assert_string_equal (s_gets (u, "rawInput"), "{\"path\": oops");
    assert_null (json_object_get (u, "locations"));
    json_decref (params);
    r = s_rest (&out);
    assert_string_equal (s_gets (r, "rawInput"), "{\"path\": oops");
    assert_string_equal (s_gets (r, "toolKind"), "frobnicate"); //  REST: as it is
    json_decref (r);
    gw_rendered_fini (&out);
}

static void test_tool_call_update (void **state)
{
    //  An edit: text and a diff, the path as a location, raw output parsed.
    proto_ev_tool_update_t ev = {S_HEAD (13),
                                 .tool_call_id = "call_1",
                                 .status = "completed",
                                 .content = "replaced 1 line",
                                 .path = "src/main.c",
                                 .old_text = "int x;\n",
                                 .new_text = "int y;\n",
                                 .diff = "@@ -1 +1 @@\n-int x;\n+int y;",
                                 .raw_output = "{\"ok\":true}"};
    gw_rendered_t out;
    s_render_ok (PROTO_EV_TOOL_CALL_UPDATE, &ev, &out);
    json_t *u, *params = s_update (&out, 0, "tool_call_update", &u);
    assert_string_equal (s_gets (u, "toolCallId"), "call_1");
    assert_string_equal (s_gets (u, "status"), "completed");
    assert_int_equal (json_array_size (json_object_get (u, "content")), 2);
    assert_string_equal (s_gets (u, "content.0.type"), "content");
    assert_string_equal (s_gets (u, "content.0.content.type"), "text");
    assert_string_equal (s_gets (u, "content.0.content.text"), "replaced 1 line");
    assert_string_equal (s_gets (u, "content.1.type"), "diff");
    assert_string_equal (s_gets (u, "content.1.path"), "src/main.c");
    assert_string_equal (s_gets (u, "content.1.oldText"), "int x;\n");
    assert_string_equal (s_gets (u, "content.1.newText"), "int y;\n");
    assert_string_equal (s_gets (u, "locations.0.path"), "src/main.c");
    assert_true (json_is_true (s_get (u, "rawOutput.ok")));
    json_decref (params);
    json_t *r = s_rest (&out);
    assert_string_equal (s_gets (r, "diff"), ev.diff);
    assert_string_equal (s_gets (r, "oldText"), "int x;\n");
    assert_true (json_is_true (s_get (r, "rawOutput.ok")));
    json_decref (r);
    gw_rendered_fini (&out);

    //  A new file: no oldText.  Only a unified diff: Markdown text.
    proto_ev_tool_update_t created = {S_HEAD (14), .tool_call_id = "c", .path = "n.txt",
                                      .new_text = "hi\n"};
    s_render_ok (PROTO_EV_TOOL_CALL_UPDATE, &created, &out);
    params = s_update (&out, 0, "tool_call_update", &u);
    assert_string_equal (s_gets (u, "content.0.type"), "diff");
    assert_null (s_get (u, "content.0.oldText"));
    json_decref (params);
    gw_rendered_fini (&out);
    proto_ev_tool_update_t diff_only = {S_HEAD (15), .tool_call_id = "c",
                                        .diff = "-a\n+b", .raw_output = "not json"};
    s_render_ok (PROTO_EV_TOOL_CALL_UPDATE, &diff_only, &out);
    params = s_update (&out, 0, "tool_call_update", &u);
    assert_string_equal (s_gets (u, "content.0.content.text"), "```diff\n-a\n+b\n```");
    assert_string_equal (s_gets (u, "rawOutput"), "not json");
    json_decref (params);
    gw_rendered_fini (&out);

    //  Status only: no content, no locations (they would replace the
    //  client's).
    proto_ev_tool_update_t running = {S_HEAD (16), .tool_call_id = "c",
                                      .status = "in_progress"};
    s_render_ok (PROTO_EV_TOOL_CALL_UPDATE, &running, &out);
    params = s_update (&out, 0, "tool_call_update", &u);
    assert_string_equal (s_gets (u, "status"), "in_progress");
    assert_null (json_object_get (u, "content"));
    assert_null (json_object_get (u, "locations"));
    json_decref (params);
    gw_rendered_fini (&out);
}

static void test_plan (void **state)
{
    proto_plan_entry_t entries[] = {
        {.content = "read the code", .priority = "high", .status = "completed"},
        {.content = "fix it", .status = "in_progress"},
        {.content = "test", .priority = "urgent", .status = "blocked"},
    };
    proto_ev_plan_t ev = {S_HEAD (17), .entries = {entries, 3}};
    gw_rendered_t out;
    s_render_ok (PROTO_EV_PLAN, &ev, &out);
    json_t *u, *params = s_update (&out, 0, "plan", &u);
    assert_int_equal (json_array_size (json_object_get (u, "entries")), 3);
    assert_string_equal (s_gets (u, "entries.0.content"), "read the code");
    assert_string_equal (s_gets (u, "entries.0.priority"), "high");
    assert_string_equal (s_gets (u, "entries.0.status"), "completed");
    //  ACP requires a priority; ours is optional.
    assert_string_equal (s_gets (u, "entries.1.priority"), "medium");
    assert_string_equal (s_gets (u, "entries.2.priority"), "medium");
    assert_string_equal (s_gets (u, "entries.2.status"), "pending");
    json_decref (params);
    json_t *r = s_rest (&out);
    assert_string_equal (s_gets (r, "entries.2.priority"), "urgent");
    assert_null (s_get (r, "entries.1.priority"));
    json_decref (r);
    gw_rendered_fini (&out);

    //  An empty plan clears the client's: entries [].
    proto_ev_plan_t empty = {S_HEAD (18)};
    s_render_ok (PROTO_EV_PLAN, &empty, &out);
    params = s_update (&out, 0, "plan", &u);
    assert_true (json_is_array (json_object_get (u, "entries")));
    assert_int_equal (json_array_size (json_object_get (u, "entries")), 0);
    json_decref (params);
    gw_rendered_fini (&out);
}

static void test_usage (void **state)
{
    proto_usage_t usage = {.input_tokens = 1200,
                           .output_tokens = 340,
                           .cache_tokens = 1000,
                           .cost_micros = 4200,
                           .model_calls = 2};
    proto_ev_usage_t ev = {S_HEAD (19), .usage = &usage, .model = "gpt-x"};
    gw_rendered_t out;
    s_render_ok (PROTO_EV_USAGE, &ev, &out);
    assert_int_equal (out.nframes, 1);
    json_t *event, *params = s_event (&out, 0, &event);
    assert_int_equal (s_geti (event, "usage.inputTokens"), 1200);
    assert_int_equal (s_geti (event, "usage.outputTokens"), 340);
    assert_int_equal (s_geti (event, "usage.cacheTokens"), 1000);
    assert_int_equal (s_geti (event, "usage.costMicros"), 4200);
    assert_int_equal (s_geti (event, "usage.modelCalls"), 2);
    assert_string_equal (s_gets (event, "model"), "gpt-x");
    json_decref (params);
    json_t *r = s_rest (&out);
    assert_int_equal (s_geti (r, "usage.inputTokens"), 1200);
    json_decref (r);
    gw_rendered_fini (&out);
}

static void test_permission_request (void **state)
{
    proto_perm_option_t opts[] = {
        {.option_id = "allow", .name = "Allow", .kind = "allow_once"},
        {.option_id = "allow_always", .name = "Always allow", .kind = "allow_always"},
        {.option_id = "maybe", .name = "Maybe", .kind = "perhaps"},
        {.option_id = "reject", .name = "Reject", .kind = "reject_once"},
    };
    proto_ev_perm_request_t ev = {S_HEAD (20),
                                  .request_id = "p1",
                                  .tool_call_id = "call_9",
                                  .title = "Run make test",
                                  .options = {opts, 4},
                                  .deadline_ms = S_TS + 60000};
    gw_rendered_t out;
    s_render_ok (PROTO_EV_PERMISSION_REQUEST, &ev, &out);
    assert_string_equal (out.request_id, "p1");
    assert_null (out.state);
    //  The seq reaches every client as an event ...
    json_t *event, *params = s_event (&out, 0, &event);
    assert_string_equal (s_gets (event, "requestId"), "p1");
    assert_string_equal (s_gets (event, "toolCallId"), "call_9");
    assert_int_equal (json_array_size (json_object_get (event, "options")), 4);
    assert_string_equal (s_gets (event, "options.0.optionId"), "allow");
    assert_int_equal (s_geti (event, "deadlineMs"), S_TS + 60000);
    json_decref (params);
    //  ... and the request's params are ready to send.
    json_t *p = out.perm_params;
    assert_non_null (p);
    s_sample ("RequestPermissionRequest", p);
    assert_string_equal (s_gets (p, "sessionId"), S_SESSION);
    assert_string_equal (s_gets (p, "toolCall.toolCallId"), "call_9");
    assert_string_equal (s_gets (p, "toolCall.title"), "Run make test");
    assert_string_equal (s_gets (p, "toolCall.status"), "pending");
    assert_int_equal (json_array_size (json_object_get (p, "options")),
                      3); //  "perhaps" dropped
    assert_string_equal (s_gets (p, "options.1.optionId"), "allow_always");
    assert_string_equal (s_gets (p, "options.1.name"), "Always allow");
    assert_string_equal (s_gets (p, "options.1.kind"), "allow_always");
    assert_string_equal (s_gets (p, "options.2.kind"), "reject_once");
    assert_int_equal (s_geti (p, "_meta.seq"), 20);
    assert_string_equal (s_gets (p, "_meta.epoch"), S_EPOCH);
    assert_string_equal (s_gets (p, "_meta.turnId"), S_TURN);
    assert_string_equal (s_gets (p, "_meta.requestId"), "p1");
    assert_int_equal (s_geti (p, "_meta.deadlineMs"), S_TS + 60000);
    assert_null (json_object_get (out.meta, "requestId")); //  frames' _meta untouched
    gw_rendered_fini (&out);
    assert_null (out.perm_params);
}

static void test_permission_resolved (void **state)
{
    proto_ev_perm_resolved_t ev = {S_HEAD (21), .request_id = "p1", .option_id = "allow",
                                   .outcome = "selected", .conn = "c-17"};
    gw_rendered_t out;
    s_render_ok (PROTO_EV_PERMISSION_RESOLVED, &ev, &out);
    assert_string_equal (out.request_id, "p1");
    assert_null (out.perm_params);
    json_t *event, *params = s_event (&out, 0, &event);
    assert_string_equal (s_gets (event, "outcome"), "selected");
    assert_string_equal (s_gets (event, "optionId"), "allow");
    assert_string_equal (s_gets (event, "conn"), "c-17");
    json_decref (params);
    gw_rendered_fini (&out);
}

static void test_turn_events (void **state)
{
    proto_ev_turn_started_t started = {S_HEAD (22), .worker = "w-1"};
    gw_rendered_t out;
    s_render_ok (PROTO_EV_TURN_STARTED, &started, &out);
    json_t *event, *params = s_event (&out, 0, &event);
    assert_string_equal (s_gets (event, "worker"), "w-1");
    json_decref (params);
    gw_rendered_fini (&out);

    proto_ev_turn_ended_t ended = {
        S_HEAD (23), .stop_reason = "failed", .code = CM_E_UPSTREAM,
        .message = "the model provider returned an error", .retryable = true};
    s_render_ok (PROTO_EV_TURN_ENDED, &ended, &out);
    params = s_event (&out, 0, &event);
    assert_string_equal (s_gets (event, "stopReason"), "failed");
    assert_int_equal (s_geti (event, "code"), CM_E_UPSTREAM);
    assert_true (json_is_true (json_object_get (event, "retryable")));
    json_decref (params);
    json_t *r = s_rest (&out);
    assert_string_equal (s_gets (r, "stopReason"), "failed");
    json_decref (r);
    gw_rendered_fini (&out);

    proto_ev_policy_t policy = {S_HEAD (24), .policy = "max_duration", .action = "warn",
                                .message = "5 minutes left", .remaining_ms = 300000};
    s_render_ok (PROTO_EV_POLICY, &policy, &out);
    params = s_event (&out, 0, &event);
    assert_string_equal (s_gets (event, "policy"), "max_duration");
    assert_int_equal (s_geti (event, "remainingMs"), 300000);
    json_decref (params);
    gw_rendered_fini (&out);
}

static void test_settings_and_info (void **state)
{
    gw_rendered_t out;
    json_t *u, *params, *event;
    proto_ev_setting_t mode = {S_HEAD (25), .option = "mode", .value = "read_only"};
    s_render_ok (PROTO_EV_SETTING, &mode, &out);
    params = s_update (&out, 0, "current_mode_update", &u);
    assert_string_equal (s_gets (u, "currentModeId"), "read_only");
    json_decref (params);
    gw_rendered_fini (&out);

    proto_ev_setting_t title = {S_HEAD (26), .option = "title", .value = "Fix the build"};
    s_render_ok (PROTO_EV_SETTING, &title, &out);
    params = s_update (&out, 0, "session_info_update", &u);
    assert_string_equal (s_gets (u, "title"), "Fix the build");
    assert_string_equal (s_gets (u, "updatedAt"), "2025-01-02T03:04:05.678Z");
    json_decref (params);
    gw_rendered_fini (&out);

    //  model / backend: ACP's config_option_update needs the whole set.
    proto_ev_setting_t model = {S_HEAD (27), .option = "model", .value = "gpt-y"};
    s_render_ok (PROTO_EV_SETTING, &model, &out);
    params = s_event (&out, 0, &event);
    assert_string_equal (s_gets (event, "option"), "model");
    assert_string_equal (s_gets (event, "value"), "gpt-y");
    json_decref (params);
    gw_rendered_fini (&out);

    proto_ev_info_t info = {S_HEAD (28), .title = "Renamed"};
    s_render_ok (PROTO_EV_INFO, &info, &out);
    params = s_update (&out, 0, "session_info_update", &u);
    assert_string_equal (s_gets (u, "title"), "Renamed");
    json_decref (params);
    gw_rendered_fini (&out);
    proto_ev_info_t bare = {S_HEAD (29)};
    s_render_ok (PROTO_EV_INFO, &bare, &out);
    params = s_update (&out, 0, "session_info_update", &u);
    assert_null (json_object_get (u, "title")); //  absent, not null (null clears)
    json_decref (params);
    gw_rendered_fini (&out);
}

//  Fill every field of a record so the encoder accepts it: required
//  strings, one item in every list, nested records.  Storage from pool.
static void s_fill (const proto_rec_desc_t *rec, void *obj, char **pool, char *end)
{
    for (size_t i = 0; i < rec->field_count; i++) {
        const proto_field_desc_t *f = &rec->fields[i];
        char *p = (char *)obj + f->offset;
        static const char *const strs[] = {"x"};
        switch (f->type) {
        case PROTO_T_STR:
            *(const char **)p = "x";
            break;
        case PROTO_T_UUID:
            memcpy (p, &s_turn, sizeof s_turn);
            break;
        case PROTO_T_STR_LIST:
            *(proto_str_list_t *)p = (proto_str_list_t){(const char **)strs, 1};
            break;
        case PROTO_T_U64:
        case PROTO_T_I64:
            memset (p, 0, 8);
            p[0] = 7;
            break;
        case PROTO_T_REC:
        case PROTO_T_REC_LIST: {
            void *sub = *pool;
            *pool += (f->rec->size + 15) / 16 * 16;
            assert_true (*pool <= end);
            memset (sub, 0, f->rec->size);
            s_fill (f->rec, sub, pool, end);
            if (f->type == PROTO_T_REC)
                *(void **)p = sub;
            else
                *(proto_str_list_t *)p = (proto_str_list_t){sub, 1};
            break;
        }
        default:
            break;
        }
    }
}

static void test_every_event_type (void **state)
{
    //  Every EVENT of the catalogue, filled generically: at least one
    //  frame, each with the event's _meta, and a REST object.  A new event
    //  type is covered (as _corral/session/event) without a change here.
    size_t n, seen = 0;
    const proto_msg_desc_t *const *descs = proto_msg_descs (&n);
    for (size_t i = 0; i < n; i++) {
        if (descs[i]->family != PROTO_FAMILY_EVENT) continue;
        _Alignas(16) char pool[4096];
        char *next = pool;
        void *body = next;
        next += (descs[i]->body->size + 15) / 16 * 16;
        memset (body, 0, descs[i]->body->size);
        s_fill (descs[i]->body, body, &next, pool + sizeof pool);
        //  The head: session, seq 100 + i, ts, turn.
        const proto_field_desc_t *f = descs[i]->body->fields;
        memcpy ((char *)body + f[0].offset, &s_session, sizeof s_session);
        uint64_t seq = 100 + i;
        int64_t ts = S_TS;
        memcpy ((char *)body + f[1].offset, &seq, sizeof seq);
        memcpy ((char *)body + f[2].offset, &ts, sizeof ts);
        gw_rendered_t out;
        s_render_ok (descs[i]->type, body, &out);
        assert_int_equal (out.seq, seq);
        assert_true (out.has_turn);
        for (size_t k = 0; k < out.nframes; k++) {
            json_error_t err;
            json_t *root = json_loads (out.frames[k], 0, &err);
            assert_non_null (root);
            char method[64];
            assert_non_null (s_gets (root, "method"));
            snprintf (method, sizeof method, "%s", s_gets (root, "method"));
            json_decref (root);
            json_decref (s_frame (&out, k, method));
        }
        json_decref (s_rest (&out));
        gw_rendered_fini (&out);
        seen++;
    }
    assert_int_equal (seen, 16);
}

static void test_meta_without_epoch (void **state)
{
    proto_ev_text_t ev = {.session = s_session, .seq = UINT64_MAX, .ts = -5, .text = "x"};
    proto_buf_t buf;
    s_encode (&buf, PROTO_EV_AGENT_MESSAGE, &ev);
    gw_rendered_t out;
    assert_int_equal (gw_render_event (s_render_obj, buf.data, buf.size, NULL, &out), 0);
    proto_buf_fini (&buf);
    assert_int_equal (out.seq, UINT64_MAX);
    json_t *meta = s_meta_of (&out);
    assert_null (json_object_get (meta, "epoch"));
    assert_null (json_object_get (meta, "turnId"));
    //  JSON integers are signed 64-bit: the largest seq is clamped.
    assert_int_equal (json_integer_value (json_object_get (meta, "seq")), INT64_MAX);
    assert_int_equal (json_integer_value (json_object_get (meta, "ts")), -5);
    json_decref (meta);
    assert_null (strstr (out.rest, "epoch"));
    assert_non_null (strstr (out.frames[0], "\"_meta\":{"));
    gw_rendered_fini (&out);
}

static void test_json_text_depth (void **state)
{
    //  Embedded JSON up to the depth cap is parsed; deeper stays a string.
    char deep[2 * (GW_RENDER_MAX_JSON_DEPTH + 1) + 1];
    for (int extra = 0; extra <= 1; extra++) {
        int d = GW_RENDER_MAX_JSON_DEPTH + extra;
        memset (deep, '[', (size_t)d);
        memset (deep + d, ']', (size_t)d);
        deep[2 * d] = '\0';
        proto_ev_tool_call_t ev = {S_HEAD (30), .tool_call_id = "c", .title = "t",
                                   .raw_input = deep};
        gw_rendered_t out;
        s_render_ok (PROTO_EV_TOOL_CALL, &ev, &out);
        json_t *u, *params = s_update (&out, 0, "tool_call", &u);
        assert_true (extra ? json_is_string (json_object_get (u, "rawInput"))
                           : json_is_array (json_object_get (u, "rawInput")));
        json_decref (params);
        gw_rendered_fini (&out);
    }
}

//  Bytes that are not an event: an error, *out zeroed, never a crash.
static void s_reject (const void *data, size_t len, int want)
{
    gw_rendered_t out;
    memset (&out, 0xA5, sizeof out); //  garbage in: must not be freed
    int rc = gw_render_event (s_render_obj, data, len, S_EPOCH, &out);
    if (want)
        assert_int_equal (rc, want);
    else
        assert_true (rc < 0);
    assert_int_equal (out.nframes, 0);
    assert_null (out.rest);
    assert_null (out.meta);
    assert_null (out.frames[0]);
}

static void test_bad_bytes (void **state)
{
    s_reject (NULL, 0, 0);
    s_reject ("", 0, 0);
    s_reject ("\xc1", 1, CM_E_INVALID);
    s_reject ("\xdd\xff\xff\xff\xff", 5, 0); //  huge array, 5 bytes
    s_reject ("hello, world", 12, 0);
    s_reject ("\x94\x01\xcc\xc8\x00\x80", 6, 0);                 //  type 200, empty body
    s_reject ("\x94\x02\xcc\xc8\x00\x80", 6, CM_E_VERSION);      //  version 2
    s_reject ("\x94\x01\xcc\xfe\x00\x80", 6, CM_E_UNKNOWN_TYPE); //  type 254

    //  A valid message that is not an event.
    proto_buf_t buf;
    proto_buf_init (&buf);
    assert_int_equal (proto_encode_ok (&buf, 9), 0);
    s_reject (buf.data, buf.size, CM_E_INVALID);
    proto_buf_fini (&buf);
    proto_session_new_t sn = {.tenant = "t", .cwd = "/w"};
    proto_buf_init (&buf);
    if (proto_encode (&buf, PROTO_SESSION_NEW, 1, &sn) == 0)
        s_reject (buf.data, buf.size, CM_E_INVALID);
    proto_buf_fini (&buf);

    //  Every truncation of a valid event.
    proto_perm_option_t opt = {.option_id = "a", .name = "A", .kind = "allow_once"};
    proto_ev_perm_request_t ev = {S_HEAD (31), .request_id = "p", .tool_call_id = "c",
                                  .title = "t", .options = {&opt, 1}};
    s_encode (&buf, PROTO_EV_PERMISSION_REQUEST, &ev);
    for (size_t len = 0; len < buf.size; len++) s_reject (buf.data, len, 0);

    //  Mutations of it: decode or refuse, never crash (ASan watches).
    char *copy = malloc (buf.size);
    assert_non_null (copy);
    uint32_t x = 2463534242u;
    size_t ok = 0;
    for (int round = 0; round < 20000; round++) {
        memcpy (copy, buf.data, buf.size);
        for (int k = 0; k < 1 + round % 4; k++) {
            x ^= x << 13, x ^= x >> 17, x ^= x << 5; //  xorshift32
            copy[x % buf.size] = (char)(x >> 8);
        }
        gw_rendered_t out;
        int rc = gw_render_event (s_render_obj, copy, buf.size, S_EPOCH, &out);
        assert_true (rc <= 0);
        if (rc == 0) {
            ok++;
            assert_true (out.nframes >= 1);
            for (size_t f = 0; f < out.nframes; f++) {
                json_error_t err;
                json_t *root = json_loads (out.frames[f], 0, &err);
                assert_non_null (root);
                json_decref (root);
            }
        }
        gw_rendered_fini (&out);
    }
    assert_true (ok > 0); //  some mutations still decode (string bytes)
    free (copy);
    proto_buf_fini (&buf);
}

// ---------------------------------------------------------------------------
//  Session records

static proto_session_rec_t s_session_rec (proto_usage_t *usage)
{
    static const char *const approvals[] = {"run_command:make test"};
    proto_session_rec_t s = {.id = s_session,
                             .tenant = "acme",
                             .project = "web",
                             .title = "Fix the build",
                             .cwd = "/work/acme",
                             .backend = "anthropic",
                             .model = "claude-x",
                             .mode = "edit",
                             .state = "idle",
                             .created_ms = S_TS,
                             .updated_ms = S_TS + 1000,
                             .last_seq = 42,
                             .turns = 3,
                             .resumable = true,
                             .usage = usage,
                             .allow_always = {(const char **)approvals, 1},
                             .last_turn = s_turn};
    return s;
}

static void test_session_info (void **state)
{
    proto_usage_t usage = {.input_tokens = 10};
    proto_session_rec_t s = s_session_rec (&usage);
    json_t *info = gw_render_session_info (&s);
    assert_non_null (info);
    s_sample ("SessionInfo", info);
    assert_string_equal (s_gets (info, "sessionId"), S_SESSION);
    assert_string_equal (s_gets (info, "cwd"), "/work/acme");
    assert_string_equal (s_gets (info, "title"), "Fix the build");
    assert_string_equal (s_gets (info, "updatedAt"), "2025-01-02T03:04:06.678Z");
    assert_string_equal (s_gets (info, "_meta.state"), "idle");
    assert_int_equal (s_geti (info, "_meta.lastSeq"), 42);
    assert_int_equal (s_geti (info, "_meta.turns"), 3);
    assert_string_equal (s_gets (info, "_meta.backend"), "anthropic");
    assert_string_equal (s_gets (info, "_meta.model"), "claude-x");
    assert_string_equal (s_gets (info, "_meta.mode"), "edit");
    assert_string_equal (s_gets (info, "_meta.createdAt"), "2025-01-02T03:04:05.678Z");
    json_t *list = json_pack ("{s:[O]}", "sessions", info);
    s_sample ("ListSessionsResponse", list);
    json_decref (list);
    json_decref (info);

    //  Never updated: updatedAt is the creation time; no title: left out.
    s.updated_ms = 0;
    s.title = NULL;
    info = gw_render_session_info (&s);
    assert_string_equal (s_gets (info, "updatedAt"), "2025-01-02T03:04:05.678Z");
    assert_null (json_object_get (info, "title"));
    s_sample ("SessionInfo", info);
    json_decref (info);
}

static void test_session_rest (void **state)
{
    proto_usage_t usage = {.input_tokens = 10, .output_tokens = 5, .cost_micros = 7};
    proto_session_rec_t s = s_session_rec (&usage);
    json_t *r = gw_render_session_rest (&s);
    assert_non_null (r);
    assert_string_equal (s_gets (r, "id"), S_SESSION);
    assert_string_equal (s_gets (r, "tenant"), "acme");
    assert_string_equal (s_gets (r, "project"), "web");
    assert_int_equal (s_geti (r, "createdMs"), S_TS);
    assert_int_equal (s_geti (r, "updatedMs"), S_TS + 1000);
    assert_int_equal (s_geti (r, "lastSeq"), 42);
    assert_true (json_is_true (json_object_get (r, "resumable")));
    assert_int_equal (s_geti (r, "usage.inputTokens"), 10);
    assert_int_equal (s_geti (r, "usage.costMicros"), 7);
    assert_string_equal (s_gets (r, "allowAlways.0"), "run_command:make test");
    assert_string_equal (s_gets (r, "lastTurn"), S_TURN);
    assert_null (json_object_get (r, "endReason")); //  absent string
    assert_null (json_object_get (r, "lastIdem"));
    json_decref (r);
    s.usage = NULL;
    r = gw_render_session_rest (&s);
    assert_null (json_object_get (r, "usage"));
    json_decref (r);
}

static void test_modes (void **state)
{
    const char *ids[] = {"ask", "edit", "auto", "read_only"};
    json_t *m = gw_render_modes ("auto");
    assert_non_null (m);
    s_sample ("SessionModeState", m);
    assert_string_equal (s_gets (m, "currentModeId"), "auto");
    assert_int_equal (json_array_size (json_object_get (m, "availableModes")), 4);
    for (size_t i = 0; i < 4; i++) {
        json_t *mode = json_array_get (json_object_get (m, "availableModes"), i);
        assert_string_equal (s_gets (mode, "id"), ids[i]);
        assert_true (strlen (s_gets (mode, "name")) > 0);
        assert_true (strlen (s_gets (mode, "description")) > 20);
    }
    assert_non_null (strstr (s_gets (m, "availableModes.1.description"), "command"));
    json_decref (m);
    m = gw_render_modes (NULL);
    assert_string_equal (s_gets (m, "currentModeId"), "ask");
    json_decref (m);
}

static void test_config_options (void **state)
{
    proto_session_rec_t s = s_session_rec (NULL);
    const char *models[] = {"claude-a", "claude-x"};
    json_t *opts = gw_render_config_options (&s, models, 2);
    assert_non_null (opts);
    assert_int_equal (json_array_size (opts), 2);
    for (size_t i = 0; i < 2; i++)
        s_sample ("SessionConfigOption", json_array_get (opts, i));
    assert_string_equal (s_gets (opts, "0.id"), "model");
    assert_string_equal (s_gets (opts, "0.type"), "select");
    assert_string_equal (s_gets (opts, "0.category"), "model");
    assert_string_equal (s_gets (opts, "0.currentValue"), "claude-x");
    assert_int_equal (json_array_size (s_get (opts, "0.options")), 2);
    assert_string_equal (s_gets (opts, "0.options.0.value"), "claude-a");
    assert_string_equal (s_gets (opts, "1.id"), "backend");
    assert_string_equal (s_gets (opts, "1.currentValue"), "anthropic");
    assert_int_equal (json_array_size (s_get (opts, "1.options")), 3);
    assert_string_equal (s_gets (opts, "1.options.0.value"), "openai");
    assert_string_equal (s_gets (opts, "1.options.1.value"), "anthropic");
    assert_string_equal (s_gets (opts, "1.options.2.value"), "acp");

    //  Responses as the gateway will build them.
    json_t *modes = gw_render_modes (s.mode);
    json_t *resp = json_pack ("{s:s,s:O,s:O}", "sessionId", S_SESSION, "modes", modes,
                              "configOptions", opts);
    s_sample ("NewSessionResponse", resp);
    json_object_del (resp, "sessionId");
    s_sample ("LoadSessionResponse", resp);
    s_sample ("ResumeSessionResponse", resp);
    json_object_del (resp, "modes");
    s_sample ("SetSessionConfigOptionResponse", resp);
    json_decref (resp);
    json_decref (modes);
    json_decref (opts);

    //  The session's model is offered even when not listed; without a
    //  list it is the only value.
    opts = gw_render_config_options (&s, NULL, 0);
    assert_int_equal (json_array_size (s_get (opts, "0.options")), 1);
    assert_string_equal (s_gets (opts, "0.options.0.value"), "claude-x");
    json_decref (opts);
    s.model = NULL;
    s.backend = NULL;
    opts = gw_render_config_options (&s, models, 2);
    assert_int_equal (json_array_size (opts), 0);
    json_decref (opts);

    //  The config_option_update frame a gateway can add after a
    //  setting_changed event.
    s = s_session_rec (NULL);
    json_t *meta = json_pack ("{s:i,s:s}", "seq", 27, "epoch", S_EPOCH);
    char *text = gw_render_config_update (&s, models, 2, meta);
    assert_non_null (text);
    json_error_t err;
    json_t *root = json_loads (text, 0, &err);
    assert_non_null (root);
    assert_string_equal (s_gets (root, "method"), "session/update");
    assert_string_equal (s_gets (root, "params.update.sessionUpdate"),
                         "config_option_update");
    assert_int_equal (json_array_size (s_get (root, "params.update.configOptions")), 2);
    assert_int_equal (s_geti (root, "params._meta.seq"), 27);
    s_sample ("#", root);
    s_sample ("SessionNotification", json_object_get (root, "params"));
    json_decref (root);
    json_decref (meta);
    free (text);
}

static void test_records_and_time (void **state)
{
    //  Any record: JSON-text fields parsed, BIN as base64, nil UUIDs out.
    proto_task_rec_t t = {.id = s_turn,
                          .tenant = "acme",
                          .state = "queued",
                          .params = "{\"branch\":\"main\"}",
                          .result = "not json",
                          .created_ms = S_TS};
    json_t *r = gw_render_record (&proto_rec_task_rec, &t);
    assert_string_equal (s_gets (r, "params.branch"), "main");
    assert_string_equal (s_gets (r, "result"), "not json");
    assert_null (json_object_get (r, "session"));
    assert_null (json_object_get (r, "templateId"));
    json_decref (r);
    uint8_t hash[5] = {0xde, 0xad, 0xbe, 0xef, 0x01};
    proto_key_rec_t k = {
        .hash = {hash, sizeof hash}, .id = s_turn, .tenant = "acme", .created_ms = 1};
    r = gw_render_record (&proto_rec_key_rec, &k);
    assert_string_equal (s_gets (r, "hash"), "3q2+7wE=");
    json_decref (r);

    char buf[32];
    assert_string_equal (gw_render_iso8601 (0, buf, sizeof buf),
                         "1970-01-01T00:00:00.000Z");
    assert_string_equal (gw_render_iso8601 (-1, buf, sizeof buf),
                         "1969-12-31T23:59:59.999Z");
    assert_string_equal (gw_render_iso8601 (253402300799999LL, buf, sizeof buf),
                         "9999-12-31T23:59:59.999Z");
    assert_null (gw_render_iso8601 (253402300800000LL, buf, sizeof buf));
    assert_null (gw_render_iso8601 (INT64_MIN, buf, sizeof buf));
    assert_null (gw_render_iso8601 (0, buf, 24));
}

int main (void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test (test_session_created),
        cmocka_unit_test (test_state),
        cmocka_unit_test (test_user_message_blocks),
        cmocka_unit_test (test_user_message_not_array),
        cmocka_unit_test (test_user_message_fold),
        cmocka_unit_test (test_user_message_bad_blocks),
        cmocka_unit_test (test_agent_chunks_utf8),
        cmocka_unit_test (test_text_fast_path),
        cmocka_unit_test (test_tool_call),
        cmocka_unit_test (test_tool_call_update),
        cmocka_unit_test (test_plan),
        cmocka_unit_test (test_usage),
        cmocka_unit_test (test_permission_request),
        cmocka_unit_test (test_permission_resolved),
        cmocka_unit_test (test_turn_events),
        cmocka_unit_test (test_settings_and_info),
        cmocka_unit_test (test_every_event_type),
        cmocka_unit_test (test_meta_without_epoch),
        cmocka_unit_test (test_json_text_depth),
        cmocka_unit_test (test_bad_bytes),
        cmocka_unit_test (test_session_info),
        cmocka_unit_test (test_session_rest),
        cmocka_unit_test (test_modes),
        cmocka_unit_test (test_config_options),
        cmocka_unit_test (test_records_and_time),
    };
    //  Twice: with the text fast path, then every event through jansson.
    int failed = cmocka_run_group_tests_name ("fast path", tests, s_setup, s_teardown);
    return failed +
           cmocka_run_group_tests_name ("generic", tests, s_setup_generic, s_teardown);
}
