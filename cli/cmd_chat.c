/*  cmd_chat.c - `corral chat`: an interactive chat with an agent session
    over the gateway, in a terminal.

    A new session (in --cwd, or a workspace root this machine knows of:
    s_default_cwd) or the one named by --session (its history is replayed
    first).  Each line read is
    a prompt; the answer streams as it arrives: text as is, thinking
    dimmed, tool calls with their status and the start of their result,
    plans.  A permission request is asked on the terminal and answered
    y (allow once), n (reject once) or a (always allow), mapped to the
    option kinds the request offers.

    Keys: Ctrl-C while a turn runs sends session/cancel; a second Ctrl-C,
    Ctrl-C at the prompt, Ctrl-D or /quit leaves.  Lines starting with '/'
    are commands (/help).

    A dropped connection is retried with back-off and the session attached
    again from the last seq shown (no gap, no duplicate); a prompt whose
    answer was lost is sent again with the same idempotency key, which
    joins the running turn or returns its stored outcome, so a turn is
    never run twice.

    One loop (cli_ws.c): stdin is adopted into it as a raw fd and read
    only while a line can be used (at the prompt or a permission
    question), so lines typed during a turn wait and become the next
    prompt.  Colours only on a terminal and without NO_COLOR; control
    characters in remote text are neutralised (cli_render_clean).
*/
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "cli.h"
#include "cli_render.h"
#include "cli_target.h"
#include "cli_ws.h"
#include "cm_config.h"
#include "cm_id.h"

#define LINE_MAX_BYTES  (256u << 10) //  one prompt typed or piped
#define RESULT_LINES    8            //  lines of a tool's result shown
#define RESULT_LINE_MAX 160          //  characters of one of those lines

typedef struct {
    char *url, *key, *ca_file, *session, *cwd, *mode, *title;
} chat_config_t;

static const cm_cfg_opt_t s_opts[] = {
    CLI_TARGET_OPTS (chat_config_t, url, key),
    {"session", CM_CFG_STR, offsetof (chat_config_t, session), NULL,
     "continue this session (its history is shown first) instead of starting one", 0, 0,
     NULL, false},
    {"cwd", CM_CFG_STR, offsetof (chat_config_t, cwd), NULL,
     "working directory of a new session, inside the gateway's workspace roots (default: "
     "the current directory if it is in CORRAL_WORKSPACE_ROOTS or "
     "$CORRAL_DATA_DIR/workspaces, else the first of those that exists, else the current "
     "directory)",
     0, 0, NULL, false},
    {"mode", CM_CFG_ENUM, offsetof (chat_config_t, mode), NULL,
     "permission mode: ask (before each change), edit, auto, read_only", 0, 0,
     "ask|edit|auto|read_only", false},
    {"title", CM_CFG_STR, offsetof (chat_config_t, title), NULL, "title of a new session",
     0, 0, NULL, false},
    {"ca-file", CM_CFG_STR, offsetof (chat_config_t, ca_file), NULL,
     "PEM file of certificate authorities to trust for wss:// (default: the system's)", 0,
     0, NULL, false},
    CM_CFG_END,
};

typedef enum { C_PLAIN, C_DIM, C_BOLD, C_CYAN, C_GREEN, C_RED, C_YELLOW } color_t;

typedef struct {
    chat_config_t *cfg;
    cli_ws_t *ws;
    bool color;
    bool tty_in;
    char *sid;
    bool ever_ready;
    bool ready;    //  connected and attached now
    bool creating; //  session/new sent
    bool at_bol;   //  the cursor is at the start of a line
    bool prompt_shown;
    int in_text;    //  0 none, 1 answer text, 2 thinking: what is streaming
    bool eof;       //  stdin ended: leave when idle
    bool input_on;  //  stdin is being read
    char state[32]; //  the session's state, from _corral/session/state

    //  Our prompt, until its answer.
    bool turn;     //  a prompt of ours is running
    bool turn_req; //  its request is pending on this connection
    bool cancel_sent;
    bool cancel_pending;    //  Ctrl-C while disconnected: cancel on reconnecting
    bool turn_failed_shown; //  turn_ended told of the failure already
    bool failed;            //  a turn of ours failed or its prompt was refused
    char perm_outcome[32], perm_option[64]; //  the latest permission_resolved
    char *turn_text;
    char idem[40];
    json_int_t tokens_in, tokens_out;

    //  A permission request being asked.
    json_t *perm_id;                                 //  the gateway's request id
    char perm_yes[64], perm_no[64], perm_always[64]; //  option ids ("" = not offered)

    struct {
        char id[64], title[160];
    } tools[16]; //  the titles of the latest tool calls, for their results
    unsigned n_tools;
    char *line; //  input read so far
    size_t line_len, line_cap;
    bool line_toolong;
    bool in_end; //  stdin reached its end (lines may still be held)
} chat_t;

// ---------------------------------------------------------------------------
//  Output

static void s_color (chat_t *c, color_t col)
{
    if (!c->color) return;
    static const char *codes[] = {"\033[0m",  "\033[2m",  "\033[1m", "\033[36m",
                                  "\033[32m", "\033[31m", "\033[33m"};
    fputs (codes[col], stdout);
}

static void s_out (chat_t *c, const char *text)
{
    if (!*text) return;
    fputs (text, stdout);
    c->at_bol = text[strlen (text) - 1] == '\n';
    c->prompt_shown = false;
}

//  End a line that is open (streamed text), and any colour.
static void s_newline (chat_t *c)
{
    if (c->in_text) s_color (c, C_PLAIN);
    c->in_text = 0;
    if (!c->at_bol) s_out (c, "\n");
}

//  A line of our own (notices): on its own line, dimmed or coloured.
static void s_note (chat_t *c, color_t col, const char *fmt, ...)
    __attribute__ ((format (printf, 3, 4)));
static void s_note (chat_t *c, color_t col, const char *fmt, ...)
{
    s_newline (c);
    s_color (c, col);
    va_list ap;
    va_start (ap, fmt);
    vprintf (fmt, ap);
    va_end (ap);
    s_color (c, C_PLAIN);
    fputc ('\n', stdout);
    c->at_bol = true;
    c->prompt_shown = false;
    fflush (stdout);
}

static bool s_busy (const chat_t *c)
{
    return c->turn || !strcmp (c->state, "running") ||
           !strcmp (c->state, "awaiting_permission");
}

static void s_line (chat_t *c, char *line);

//  Leave at the input's end or /quit: with piped input (a script), exit 1
//  when a turn of ours failed, so the script can tell.
static void s_leave (chat_t *c)
{
    cli_ws_stop (c->ws, c->failed && !c->tty_in ? CLI_FAIL : CLI_OK);
}

static bool s_want_line (const chat_t *c)
{
    return c->ready && !c->eof && (c->perm_id || !s_busy (c));
}

//  Take the complete lines held while one can be used; at the input's
//  end, the last unterminated one too, then leave (or wait for the turn).
static void s_take_lines (chat_t *c)
{
    while (s_want_line (c) && c->line_len) {
        char *nl = memchr (c->line, '\n', c->line_len);
        if (!nl && !c->in_end) break;
        size_t n = nl ? (size_t)(nl - c->line) : c->line_len;
        c->line[n] = '\0';
        bool skip = c->line_toolong;
        c->line_toolong = false;
        char *text = strdup (c->line);
        size_t rest = nl ? c->line_len - n - 1 : 0;
        memmove (c->line, c->line + c->line_len - rest, rest);
        c->line_len = rest;
        if (text && !skip) s_line (c, text);
        free (text);
    }
    if (c->in_end && !c->line_len && !c->eof) {
        c->eof = true;
        if (c->perm_id) {
            s_note (c, C_DIM,
                    "(input ended at a permission question: leaving; the turn waits for "
                    "another client's answer or the timeout)");
            s_leave (c);
        } else if (s_busy (c))
            s_note (c, C_DIM,
                    "(input ended: leaving when the turn ends; Ctrl-C cancels it)");
        else
            s_leave (c);
    }
}

//  Read stdin only when a line can be used: connected, and at the prompt
//  or at a permission question.  Lines typed meanwhile wait in the
//  terminal (or pipe) and become the next prompt.
static void s_update_input (chat_t *c)
{
    s_take_lines (c);
    //  Read while the held text has no complete line and one could be used.
    bool want = s_want_line (c) && !c->in_end &&
                !memchr (c->line ? c->line : "", '\n', c->line_len);
    if (want != c->input_on) {
        c->input_on = want;
        cli_ws_input_enable (c->ws, want);
    }
}

//  After every event (cli_ws on_after): whatever the handlers changed,
//  take the lines that can be used now and read stdin only if one can.
static void on_after (cli_ws_t *ws, void *arg)
{
    (void)ws;
    s_update_input (arg);
}

static void s_show_prompt (chat_t *c)
{
    if (c->prompt_shown || !c->ready || s_busy (c) || c->perm_id || c->eof) return;
    s_newline (c);
    s_color (c, C_BOLD);
    fputs ("> ", stdout);
    s_color (c, C_PLAIN);
    fflush (stdout);
    c->at_bol = true; //  what the user types ends the line
    c->prompt_shown = true;
}

//  Up to RESULT_LINES lines of text, indented and dimmed.
static void s_show_result (chat_t *c, const char *text)
{
    int lines = 0;
    const char *p = text;
    while (*p && lines < RESULT_LINES) {
        const char *nl = strchr (p, '\n');
        size_t n = nl ? (size_t)(nl - p) : strlen (p);
        s_color (c, C_DIM);
        printf ("    %.*s%s", (int)cli_render_cut (p, n, RESULT_LINE_MAX), p,
                n > RESULT_LINE_MAX ? "..." : "");
        s_color (c, C_PLAIN);
        fputc ('\n', stdout);
        lines++;
        p = nl ? nl + 1 : p + n;
    }
    int more = 0;
    for (; *p; p++)
        if (*p == '\n' || !p[1]) more++;
    if (more) {
        s_color (c, C_DIM);
        printf ("    ... (%d more line%s)", more, more == 1 ? "" : "s");
        s_color (c, C_PLAIN);
        fputc ('\n', stdout);
    }
    c->at_bol = true;
}

static void s_stream (chat_t *c, int kind, const char *text)
{
    if (c->in_text != kind) {
        if (c->in_text) s_color (c, C_PLAIN);
        if (c->in_text || !c->at_bol) s_out (c, "\n");
        if (kind == 2) s_color (c, C_DIM);
        c->in_text = kind;
    }
    s_out (c, text);
}

static void s_render_update (chat_t *c, const json_t *u, bool live)
{
    const char *kind = cli_render_str (u, "sessionUpdate");
    const json_t *content = json_object_get (u, "content");
    if (!strcmp (kind, "agent_message_chunk"))
        s_stream (c, 1, cli_render_str (content, "text"));
    else if (!strcmp (kind, "agent_thought_chunk"))
        s_stream (c, 2, cli_render_str (content, "text"));
    else if (!strcmp (kind, "user_message_chunk")) {
        const char *text = cli_render_str (content, "text");
        //  Our own prompt is on the screen already.
        if (live && c->turn && c->turn_text && !strcmp (text, c->turn_text)) return;
        s_newline (c);
        s_color (c, C_BOLD);
        printf ("> %s", text);
        s_color (c, C_PLAIN);
        fputc ('\n', stdout);
        c->at_bol = true;
    } else if (!strcmp (kind, "tool_call")) {
        unsigned slot = c->n_tools++ % 16;
        snprintf (c->tools[slot].id, sizeof c->tools[slot].id, "%s",
                  cli_render_str (u, "toolCallId"));
        snprintf (c->tools[slot].title, sizeof c->tools[slot].title, "%s",
                  cli_render_str (u, "title"));
        s_newline (c);
        s_color (c, C_CYAN);
        printf ("* %s", cli_render_str (u, "title"));
        s_color (c, C_PLAIN);
        const char *k = cli_render_str (u, "kind");
        if (*k) {
            s_color (c, C_DIM);
            printf (" (%s)", k);
            s_color (c, C_PLAIN);
        }
        fputc ('\n', stdout);
        c->at_bol = true;
    } else if (!strcmp (kind, "tool_call_update")) {
        const char *status = cli_render_str (u, "status");
        if (strcmp (status, "completed") && strcmp (status, "failed")) return;
        s_newline (c);
        bool ok = !strcmp (status, "completed");
        s_color (c, ok ? C_GREEN : C_RED);
        const char *id = cli_render_str (u, "toolCallId"), *title = id;
        for (unsigned k = 0; k < 16; k++)
            if (!strcmp (c->tools[k].id, id)) title = c->tools[k].title;
        printf ("  %s: %s", ok ? "done" : "failed", title);
        s_color (c, C_PLAIN);
        fputc ('\n', stdout);
        c->at_bol = true;
        const char *t = cli_render_tool_text (content);
        if (t) s_show_result (c, t);
    } else if (!strcmp (kind, "plan")) {
        s_newline (c);
        s_color (c, C_CYAN);
        fputs ("plan:\n", stdout);
        s_color (c, C_PLAIN);
        size_t i;
        json_t *e;
        json_array_foreach (json_object_get (u, "entries"), i, e)
        {
            printf ("  [%s] %s\n", cli_render_plan_mark (cli_render_str (e, "status")),
                    cli_render_str (e, "content"));
        }
        c->at_bol = true;
    } else if (!strcmp (kind, "current_mode_update")) {
        s_note (c, C_DIM, "(mode: %s)", cli_render_str (u, "currentModeId"));
    }
}

static void s_render_event (chat_t *c, const json_t *ev, bool live)
{
    const char *kind = cli_render_str (ev, "kind");
    if (!strcmp (kind, "usage_update")) {
        const json_t *usage = json_object_get (ev, "usage");
        c->tokens_in = json_integer_value (json_object_get (usage, "inputTokens"));
        c->tokens_out = json_integer_value (json_object_get (usage, "outputTokens"));
    } else if (!strcmp (kind, "turn_ended")) {
        const char *stop = cli_render_str (ev, "stopReason");
        json_int_t code = json_integer_value (json_object_get (ev, "code"));
        const char *msg = cli_render_str (ev, "message");
        if (code) {
            if (*msg)
                s_note (c, C_RED, "(the turn failed: %s)", msg);
            else
                s_note (c, C_RED, "(the turn failed: %s%s)", *stop ? stop : "error",
                        json_is_true (json_object_get (ev, "retryable"))
                            ? "; prompt again"
                            : "");
            if (live && c->turn) c->turn_failed_shown = true;
        } else if (strcmp (stop, "end_turn"))
            s_note (c, C_YELLOW, "(turn ended: %s)", stop);
        else if (live && c->tokens_in + c->tokens_out)
            s_note (c, C_DIM, "(%lld tokens in, %lld out)", (long long)c->tokens_in,
                    (long long)c->tokens_out);
        else
            s_newline (c);
        c->tokens_in = c->tokens_out = 0;
        //  Someone else's turn (ours ends with its prompt's answer).
        if (live && !c->turn) s_show_prompt (c);
    } else if (!strcmp (kind, "permission_resolved")) {
        snprintf (c->perm_outcome, sizeof c->perm_outcome, "%s",
                  cli_render_str (ev, "outcome"));
        snprintf (c->perm_option, sizeof c->perm_option, "%s",
                  cli_render_str (ev, "optionId"));
    } else if (!strcmp (kind, "policy")) {
        const char *msg = cli_render_str (ev, "message");
        char *j = *msg ? NULL : json_dumps (ev, JSON_COMPACT);
        s_note (c, C_YELLOW, "(policy: %s)", *msg ? msg : j ? j : "");
        free (j);
    }
}

// ---------------------------------------------------------------------------
//  Turns, permissions, commands

static void s_end_turn (chat_t *c)
{
    if (c->turn_failed_shown) c->failed = true;
    c->turn = c->turn_req = c->cancel_sent = c->cancel_pending = c->turn_failed_shown =
        false;
    free (c->turn_text);
    c->turn_text = NULL;
    if (c->eof) {
        s_leave (c);
        return;
    }
    s_show_prompt (c);
}

static void s_send_prompt (chat_t *c);

static void on_prompt_reply (cli_ws_t *ws, const json_t *result, const json_t *error,
                             void *arg)
{
    (void)ws;
    (void)result;
    chat_t *c = arg;
    c->turn_req = false;
    if (!c->turn) return;
    if (error) {
        int code = cli_ws_error_code (error);
        if (code == CLI_WS_DROPPED) return; //  sent again once reconnected
        char buf[512];
        if (c->turn_failed_shown) {
            s_end_turn (c); //  turn_ended said it already
            return;
        }
        s_note (c, C_RED, "(the prompt failed: %s)",
                cli_ws_error_text (error, buf, sizeof buf));
        c->failed = true;
    }
    s_end_turn (c);
}

static void s_send_prompt (chat_t *c)
{
    json_t *p =
        json_pack ("{s:s,s:[{s:s,s:s}],s:{s:s}}", "sessionId", c->sid, "prompt", "type",
                   "text", "text", c->turn_text, "_meta", "idempotencyKey", c->idem);
    c->turn_req = cli_ws_request (c->ws, "session/prompt", p, on_prompt_reply, c) > 0;
    if (!c->turn_req)
        s_note (c, C_RED, "(could not send the prompt; it is sent on reconnecting)");
}

static void s_answer_permission (chat_t *c, const char *option_id)
{
    json_t *r = json_pack ("{s:{s:s,s:s}}", "outcome", "outcome", "selected", "optionId",
                           option_id);
    cli_ws_respond (c->ws, c->perm_id, r);
    json_decref (c->perm_id);
    c->perm_id = NULL;
}

static void s_ask_permission (chat_t *c)
{
    s_newline (c);
    s_color (c, C_YELLOW);
    fputs ("allow? ", stdout);
    if (c->perm_yes[0]) fputs ("[y]es ", stdout);
    if (c->perm_no[0]) fputs ("[n]o ", stdout);
    if (c->perm_always[0]) fputs ("[a]lways ", stdout);
    s_color (c, C_PLAIN);
    fflush (stdout);
    c->at_bol = true;
}

static void on_permission (chat_t *c, const json_t *id, const json_t *params)
{
    json_decref (c->perm_id);
    c->perm_id = json_deep_copy (id);
    c->perm_yes[0] = c->perm_no[0] = c->perm_always[0] = '\0';
    size_t i;
    json_t *o;
    json_array_foreach (json_object_get (params, "options"), i, o)
    {
        const char *k = cli_render_str (o, "kind"), *oid = cli_render_str (o, "optionId");
        char *slot = !strcmp (k, "allow_once")     ? c->perm_yes
                     : !strcmp (k, "reject_once")  ? c->perm_no
                     : !strcmp (k, "allow_always") ? c->perm_always
                                                   : NULL;
        if (!slot && !strcmp (k, "reject_always") && !c->perm_no[0]) slot = c->perm_no;
        if (slot) snprintf (slot, 64, "%s", oid);
    }
    const json_t *tool = json_object_get (params, "toolCall");
    s_newline (c);
    s_color (c, C_YELLOW);
    printf ("permission needed: %s", cli_render_str (tool, "title"));
    s_color (c, C_PLAIN);
    fputc ('\n', stdout);
    c->at_bol = true;
    s_ask_permission (c);
}

static void s_help (chat_t *c)
{
    s_note (
        c, C_DIM,
        "Type a prompt and press Enter.  Ctrl-C cancels a running turn; Ctrl-C at the "
        "prompt, Ctrl-D or /quit leaves.\n"
        "/mode ask|edit|auto|read_only  switch the permission mode\n"
        "/session                       show the session id (corral chat --session ID "
        "continues it)\n"
        "/quit                          leave");
}

static void on_mode_reply (cli_ws_t *ws, const json_t *result, const json_t *error,
                           void *arg)
{
    (void)ws;
    (void)result;
    chat_t *c = arg;
    char buf[512];
    if (error && cli_ws_error_code (error) != CLI_WS_DROPPED)
        s_note (c, C_RED, "(mode not changed: %s)",
                cli_ws_error_text (error, buf, sizeof buf));
    s_show_prompt (c);
}

static void s_set_mode (chat_t *c, const char *mode)
{
    json_t *p = json_pack ("{s:s,s:s}", "sessionId", c->sid, "modeId", mode);
    if (cli_ws_request (c->ws, "session/set_mode", p, on_mode_reply, c) < 0)
        s_note (c, C_RED, "(not connected)");
}

static void s_line (chat_t *c, char *line)
{
    size_t n = strlen (line);
    while (n && (line[n - 1] == '\r' || line[n - 1] == ' ' || line[n - 1] == '\t'))
        line[--n] = '\0';
    char *p = line;
    while (*p == ' ' || *p == '\t') p++;
    //  Without a terminal nothing echoed the line: show it, so that a
    //  transcript reads like the session.
    if (!c->tty_in) {
        fputs (line, stdout);
        fputc ('\n', stdout);
    }
    c->prompt_shown = false;
    c->at_bol = true;
    if (c->perm_id) {
        const char *opt = NULL;
        if (!strcasecmp (p, "y") || !strcasecmp (p, "yes"))
            opt = c->perm_yes;
        else if (!strcasecmp (p, "n") || !strcasecmp (p, "no"))
            opt = c->perm_no;
        else if (!strcasecmp (p, "a") || !strcasecmp (p, "always"))
            opt = c->perm_always;
        if (opt && *opt)
            s_answer_permission (c, opt);
        else
            s_ask_permission (c);
        return;
    }
    if (!*p) {
        s_show_prompt (c);
        return;
    }
    if (!strcmp (p, "/quit") || !strcmp (p, "/exit")) {
        s_leave (c);
        return;
    }
    if (!strcmp (p, "/help")) {
        s_help (c);
        s_show_prompt (c);
        return;
    }
    if (!strcmp (p, "/session")) {
        s_note (c, C_DIM, "session %s", c->sid ? c->sid : "(none yet)");
        s_show_prompt (c);
        return;
    }
    if (!strncmp (p, "/mode", 5) && (p[5] == ' ' || !p[5])) {
        const char *m = p + 5;
        while (*m == ' ') m++;
        if (strcmp (m, "ask") && strcmp (m, "edit") && strcmp (m, "auto") &&
            strcmp (m, "read_only")) {
            s_note (c, C_RED, "(usage: /mode ask|edit|auto|read_only)");
            s_show_prompt (c);
        } else
            s_set_mode (c, m);
        return;
    }
    if (!c->ready) {
        s_note (c, C_YELLOW, "(not connected yet; type it again in a moment)");
        return;
    }
    if (s_busy (c)) {
        s_note (c, C_YELLOW, "(a turn is running: wait for it, or Ctrl-C to cancel it)");
        return;
    }
    json_t *utf8 = json_string (p); //  NULL when p is not UTF-8
    if (!utf8) {
        s_note (c, C_RED, "(the line is not valid UTF-8: not sent)");
        s_show_prompt (c);
        return;
    }
    json_decref (utf8);
    free (c->turn_text);
    c->turn_text = strdup (p);
    if (!c->turn_text) return;
    cm_uuid_t u;
    cm_uuid7 (&u);
    cm_uuid_fmt (&u, c->idem);
    c->turn = true;
    c->cancel_sent = false;
    c->tokens_in = c->tokens_out = 0;
    s_send_prompt (c);
}

// ---------------------------------------------------------------------------
//  cli_ws handlers

static void on_input (cli_ws_t *ws, int fd, void *arg)
{
    chat_t *c = arg;
    if (c->line_len + 4096 > c->line_cap) {
        size_t cap = c->line_cap ? c->line_cap * 2 : 8192;
        char *q = cap <= LINE_MAX_BYTES + 8192 ? realloc (c->line, cap) : NULL;
        if (!q) {
            //  No newline in LINE_MAX_BYTES: drop what is held.
            s_note (c, C_RED, "(a line longer than %u bytes was not sent)",
                    LINE_MAX_BYTES);
            c->line_len = 0;
            c->line_toolong = true;
            return;
        }
        c->line = q;
        c->line_cap = cap;
    }
    ssize_t n = read (fd, c->line + c->line_len, c->line_cap - c->line_len - 1);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) return;
    if (n <= 0) {
        cli_ws_input_close (ws);
        c->in_end = true;
        return; //  the lines left are taken by s_update_input
    }
    c->line_len += (size_t)n;
}

static void on_message_ (cli_ws_t *ws, const char *method, const json_t *params,
                         const json_t *id, void *arg)
{
    (void)ws;
    chat_t *c = arg;
    const char *sid = json_string_value (json_object_get (params, "sessionId"));
    if (sid && c->sid && strcmp (sid, c->sid)) return;
    bool live = c->ready;
    if (id) {
        if (!strcmp (method, "session/request_permission"))
            on_permission (c, id, params);
        else //  we offered no fs or terminal capabilities
            cli_ws_respond_error (ws, id, -32601,
                                  "corral chat does not serve this method");
        fflush (stdout);
        return;
    }
    if (!strcmp (method, "session/update"))
        s_render_update (c, json_object_get (params, "update"), live);
    else if (!strcmp (method, "_corral/session/event"))
        s_render_event (c, json_object_get (params, "event"), live);
    else if (!strcmp (method, "_corral/session/state")) {
        snprintf (c->state, sizeof c->state, "%s", cli_render_str (params, "state"));
        if (!strcmp (c->state, "hibernated") && live)
            s_note (c, C_DIM, "(the session is hibernated; the next prompt resumes it)");
        else if (!strcmp (c->state, "closed") && live)
            s_note (c, C_YELLOW, "(the session was closed)");
    } else if (!strcmp (method, "$/cancel_request")) {
        const json_t *rid = json_object_get (params, "requestId");
        if (c->perm_id && json_equal (rid, c->perm_id)) {
            json_decref (c->perm_id);
            c->perm_id = NULL;
            if (!strcmp (c->perm_outcome, "selected"))
                s_note (c, C_DIM, "(the permission request was answered elsewhere: %s)",
                        c->perm_option);
            else
                s_note (c, C_DIM, "(the permission request was withdrawn: %s)",
                        c->perm_outcome[0] ? c->perm_outcome : "no longer asked");
        }
    }
    fflush (stdout);
}

static void on_message (cli_ws_t *ws, const char *method, const json_t *params,
                        const json_t *id, void *arg)
{
    //  What the model and its commands wrote reaches the terminal cleaned.
    json_t *clean = params ? json_deep_copy (params) : NULL;
    cli_render_clean (clean);
    on_message_ (ws, method, clean ? clean : params, id, arg);
    json_decref (clean);
}

static void on_new_session (cli_ws_t *ws, const json_t *result, const json_t *error,
                            void *arg)
{
    chat_t *c = arg;
    c->creating = false;
    if (error) {
        if (cli_ws_error_code (error) == CLI_WS_DROPPED) return; //  again on reconnecting
        cli_ws_stop_refused (ws, "corral chat", "session/new", error);
        return;
    }
    const char *sid = cli_render_str (result, "sessionId");
    c->sid = strdup (sid);
    if (!c->sid) {
        cli_ws_stop (ws, CLI_FAIL);
        return;
    }
    //  session/new watches from seq 1 on this connection already.
    cli_ws_watch (ws, sid, 0, cli_render_str (json_object_get (result, "_meta"), "epoch"),
                  false);
    const char *mode =
        cli_render_str (json_object_get (result, "modes"), "currentModeId");
    c->ready = true;
    s_note (c, C_DIM,
            "session %s (mode %s) in %s\nCtrl-C cancels a turn, Ctrl-D leaves, /help.",
            sid, mode, c->cfg->cwd);
    s_show_prompt (c);
}

static void on_ready (cli_ws_t *ws, const json_t *attach, void *arg)
{
    chat_t *c = arg;
    bool again = c->ever_ready;
    c->ever_ready = true;
    if (!c->sid) {
        //  A new session (also after a drop before session/new answered).
        if (c->creating) return;
        json_t *p =
            json_pack ("{s:s,s:[],s:{}}", "cwd", c->cfg->cwd, "mcpServers", "_meta");
        json_t *meta = json_object_get (p, "_meta");
        if (c->cfg->mode) json_object_set_new (meta, "mode", json_string (c->cfg->mode));
        if (c->cfg->title)
            json_object_set_new (meta, "title", json_string (c->cfg->title));
        c->creating = cli_ws_request (ws, "session/new", p, on_new_session, c) > 0;
        return;
    }
    c->ready = true;
    const char *state = cli_render_str (attach, "state");
    if (*state) snprintf (c->state, sizeof c->state, "%s", state);
    if (again)
        s_note (c, C_DIM, "(reconnected; resumed after seq %lld)",
                (long long)cli_ws_last_seq (ws));
    else {
        s_note (c, C_DIM, "session %s (%s). Ctrl-C cancels a turn, Ctrl-D leaves, /help.",
                c->sid, *state ? state : "attached");
        if (c->cfg->mode) s_set_mode (c, c->cfg->mode);
    }
    //  Our prompt's answer was lost with the connection: ask again with
    //  the same idempotency key (joins the turn, or gets its outcome).  A
    //  Ctrl-C pressed meanwhile cancels whatever that is: the cancel goes
    //  after the prompt, the gateway takes them in order.
    if (c->turn && !c->turn_req) s_send_prompt (c);
    if (c->cancel_pending) {
        c->cancel_pending = false;
        cli_ws_notify (ws, "session/cancel", json_pack ("{s:s}", "sessionId", c->sid));
    }
    s_show_prompt (c);
}

static void on_refused (cli_ws_t *ws, const char *method, const json_t *error, void *arg)
{
    (void)arg;
    cli_ws_stop_refused (ws, "corral chat", method, error);
}

static int64_t on_expired (cli_ws_t *ws, const json_t *error, void *arg)
{
    (void)ws;
    chat_t *c = arg;
    //  The history was rebuilt: go on from its current end.
    json_int_t last =
        json_integer_value (json_object_get (json_object_get (error, "data"), "lastSeq"));
    s_note (c, C_YELLOW, "(the session's history was rebuilt; continuing from its end)");
    return last > 0 ? last : 0;
}

static bool on_drop (cli_ws_t *ws, int code, const char *why, bool was_open, int retry_ms,
                     void *arg)
{
    (void)ws;
    (void)code;
    (void)was_open;
    chat_t *c = arg;
    c->ready = false;
    if (c->perm_id) {
        json_decref (c->perm_id); //  asked again after the reattach if still pending
        c->perm_id = NULL;
    }
    if (!c->ever_ready) {
        s_newline (c);
        fprintf (stderr, "corral chat: %s\n", why);
        return false;
    }
    s_note (c, C_YELLOW, "(%s; reconnecting in %.1f s)", why, retry_ms / 1000.0);
    return true;
}

static void on_signal (cli_ws_t *ws, int signo, void *arg)
{
    chat_t *c = arg;
    if (signo == SIGINT && s_busy (c) && !c->cancel_sent && c->sid && !c->ready) {
        c->cancel_sent = c->cancel_pending = true;
        s_note (c, C_YELLOW,
                "cancelling the turn once reconnected (Ctrl-C again leaves)");
        return;
    }
    if (signo == SIGINT && s_busy (c) && !c->cancel_sent && c->sid && c->ready) {
        c->cancel_sent = true;
        cli_ws_notify (ws, "session/cancel", json_pack ("{s:s}", "sessionId", c->sid));
        s_note (c, C_YELLOW, "cancelling the turn (Ctrl-C again leaves)");
        return;
    }
    s_newline (c);
    cli_ws_stop (ws, CLI_OK);
}

//  Whether the real path p is root or below it.
static bool s_inside (const char *p, const char *root)
{
    size_t n = strlen (root);
    while (n > 1 && root[n - 1] == '/') n--;
    return !strncmp (p, root, n) && (p[n] == '\0' || p[n] == '/' || n == 1);
}

//  The working directory of a new session without --cwd: the current
//  directory when it lies in a workspace root this machine knows of
//  (CORRAL_WORKSPACE_ROOTS, else <data dir>/workspaces, the local
//  stack's default), else that root; with no root known, the current
//  directory.  Returns a malloc'd path or NULL.
static char *s_default_cwd (void)
{
    char here[PATH_MAX], real[PATH_MAX], first[PATH_MAX] = "";
    if (!getcwd (here, sizeof here)) return NULL;
    const char *roots = getenv ("CORRAL_WORKSPACE_ROOTS");
    char local[PATH_MAX];
    if (!roots || !*roots) {
        snprintf (local, sizeof local, "%s/workspaces", cli_data_dir ());
        roots = local;
    }
    char *copy = strdup (roots), *save = NULL;
    if (!copy) return NULL;
    for (char *tok = strtok_r (copy, ":", &save); tok;
         tok = strtok_r (NULL, ":", &save)) {
        if (!realpath (tok, real)) continue; //  not on this machine
        if (s_inside (here, real)) {
            free (copy);
            return strdup (here);
        }
        if (!first[0]) snprintf (first, sizeof first, "%s", real);
    }
    free (copy);
    return strdup (first[0] ? first : here);
}

int cli_chat (int argc, char **argv)
{
    chat_config_t cfg;
    int rc = cli_config (
        s_opts, &cfg, argc, argv, argv[0],
        "Chat with an agent session in the terminal: each line is a prompt, the answer "
        "streams\n"
        "(thinking dimmed, tool calls and results), permission requests are answered "
        "y/n/a.\n"
        "Ctrl-C cancels a running turn; Ctrl-C at the prompt, Ctrl-D or /quit leaves.\n"
        "A dropped connection is resumed where it stopped.");
    if (rc != CLI_GO_ON) return rc;
    rc = CLI_USAGE;
    chat_t c = {.cfg = &cfg, .at_bol = true};
    cli_target_t tg;
    if (cli_target_with_key (&tg, "corral chat", cfg.url, cfg.key)) goto done;
    if (!cfg.cwd && !cfg.session && !(cfg.cwd = s_default_cwd ())) {
        fprintf (stderr, "corral chat: cannot tell the current directory; use --cwd\n");
        goto done;
    }
    const char *nc = getenv ("NO_COLOR"), *term = getenv ("TERM");
    c.color = isatty (STDOUT_FILENO) && !(nc && *nc) && !(term && !strcmp (term, "dumb"));
    c.tty_in = isatty (STDIN_FILENO);
    signal (SIGPIPE, SIG_IGN);
    static const cli_ws_handlers_t on = {.on_ready = on_ready,
                                         .on_message = on_message,
                                         .on_refused = on_refused,
                                         .on_expired = on_expired,
                                         .on_drop = on_drop,
                                         .on_input = on_input,
                                         .on_signal = on_signal,
                                         .on_after = on_after};
    rc = cli_ws_open (&c.ws, "corral chat", &tg, cfg.ca_file, &on, &c, true);
    if (rc) goto done;
    if (cli_ws_input (c.ws, STDIN_FILENO)) {
        fprintf (stderr, "corral chat: cannot watch stdin\n");
        rc = CLI_FAIL;
        goto done;
    }
    c.input_on = true;
    s_update_input (&c);
    if (cfg.session) {
        c.sid = strdup (cfg.session);
        if (!c.sid) goto done;
        cli_ws_watch (c.ws, cfg.session, 0, NULL, false);
    }
    rc = cli_ws_run (c.ws);
    if (c.prompt_shown) c.at_bol = false;
    s_newline (&c);
    fflush (stdout);
done:
    cli_ws_destroy (&c.ws);
    json_decref (c.perm_id);
    free (c.sid);
    free (c.turn_text);
    free (c.line);
    cm_config_free (s_opts, &cfg);
    return rc;
}
