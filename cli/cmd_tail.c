/*  cmd_tail.c - `corral tail <session> [--after N] [--json]`: attach to a
    session and print its events, the stored ones after seq N first, then
    live ones until Ctrl-C.

    A dropped connection (a gateway restart, a network blip) is retried
    with back-off and resumed with _corral/session/attach from the last seq
    printed, so the output has no gap and no duplicate (cli_ws.c does the
    seq bookkeeping).  If the history's epoch changed meanwhile, the
    session is replayed from its start after a notice on stderr.

    Output: one line per notification.  Default: "#seq time what detail";
    --json: the notification as the gateway sent it (JSON lines).  Notices
    (reconnecting, resumed) go to stderr.  Permission requests are only
    shown, never answered: tail is a watcher.
*/
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "cli_render.h"
#include "cli_target.h"
#include "cli_ws.h"
#include "cm_config.h"

#define DETAIL_MAX 240 //  characters of text shown per line (default format)

typedef struct {
    char *url, *key, *ca_file, *epoch;
    int64_t after;
    bool json, no_follow, quiet;
} tail_config_t;

static const cm_cfg_opt_t s_opts[] = {
    CLI_TARGET_OPTS (tail_config_t, url, key),
    {"after", CM_CFG_INT, offsetof (tail_config_t, after), "0",
     "print the events after this seq (0 = from the start)", 0, INT64_MAX, NULL, false},
    {"epoch", CM_CFG_STR, offsetof (tail_config_t, epoch), NULL,
     "the history epoch --after belongs to (refused with a message if it changed)", 0, 0,
     NULL, false},
    {"json", CM_CFG_BOOL, offsetof (tail_config_t, json), "false",
     "print each notification as a JSON line, as the gateway sent it", 0, 0, NULL, false},
    {"no-follow", CM_CFG_BOOL, offsetof (tail_config_t, no_follow), "false",
     "print the stored events and exit instead of following live ones", 0, 0, NULL,
     false},
    {"quiet", CM_CFG_BOOL, offsetof (tail_config_t, quiet), "false",
     "no notices on stderr (reconnecting, resumed)", 0, 0, NULL, false},
    {"ca-file", CM_CFG_STR, offsetof (tail_config_t, ca_file), NULL,
     "PEM file of certificate authorities to trust for wss:// (default: the system's)", 0,
     0, NULL, false},
    CM_CFG_END,
};

typedef struct {
    tail_config_t *cfg;
    const char *sid;
    bool ever_ready;
    int64_t printed; //  notifications printed
} tail_t;

//  Take the first positional argument out of argv (it is not an option
//  and not an option's value).  Returns it or NULL; *argc shrinks.
static char *s_take_positional (const cm_cfg_opt_t *opts, int *argc, char **argv)
{
    for (int i = 1; i < *argc; i++) {
        const char *a = argv[i];
        if (strcmp (a, "--") == 0) {
            if (i + 1 >= *argc) return NULL;
            char *p = argv[i + 1];
            memmove (&argv[i], &argv[i + 2], sizeof (char *) * (size_t)(*argc - i - 2));
            *argc -= 2;
            return p;
        }
        if (a[0] == '-' && a[1]) {
            if (a[1] != '-' || strchr (a, '=')) continue;
            for (const cm_cfg_opt_t *o = opts; o->name; o++)
                if (strcmp (o->name, a + 2) == 0 && o->type != CM_CFG_BOOL) i++;
            continue;
        }
        char *p = argv[i];
        memmove (&argv[i], &argv[i + 1], sizeof (char *) * (size_t)(*argc - i - 1));
        (*argc)--;
        return p;
    }
    return NULL;
}

//  Text as a JSON string on one line; past DETAIL_MAX bytes cut (at a
//  character's start, before escaping, so no character or escape is cut
//  in two) and followed by its whole length.
static void s_put_text (FILE *out, const char *text)
{
    size_t n = text ? strlen (text) : 0;
    size_t show = cli_render_cut (text, n, DETAIL_MAX);
    json_t *s = json_stringn (text ? text : "", show);
    char *q = s ? json_dumps (s, JSON_ENCODE_ANY) : NULL;
    json_decref (s);
    if (!q) return;
    if (show < n)
        fprintf (out, "%.*s...\" (%zu bytes)", (int)strlen (q) - 1, q, n);
    else
        fputs (q, out);
    free (q);
}

//  A short field (a title, a status, a plan entry) for the one-line form:
//  line breaks and tabs become spaces, at most FIELD_MAX bytes (cut
//  between characters, "..." added).  Returns buf.
#define FIELD_MAX 160
typedef char field_t[FIELD_MAX + 4];
static const char *s_field (const json_t *o, const char *key, field_t buf)
{
    const char *v = cli_render_str (o, key);
    size_t n = strlen (v), show = cli_render_cut (v, n, FIELD_MAX);
    memcpy (buf, v, show);
    strcpy (buf + show, show < n ? "..." : "");
    for (char *p = buf; *p; p++)
        if (*p == '\n' || *p == '\r' || *p == '\t') *p = ' ';
    return buf;
}

static void s_print_update (FILE *out, const json_t *u)
{
    field_t f1, f2, f3, f4;
    const char *kind = cli_render_str (u, "sessionUpdate");
    const json_t *content = json_object_get (u, "content");
    if (!strcmp (kind, "user_message_chunk") || !strcmp (kind, "agent_message_chunk") ||
        !strcmp (kind, "agent_thought_chunk")) {
        const char *label = kind[0] == 'u'   ? "user"
                            : kind[6] == 'm' ? "text"
                                             : "thinking";
        fprintf (out, "%-10s ", label);
        const char *text = json_string_value (json_object_get (content, "text"));
        if (text)
            s_put_text (out, text);
        else
            fprintf (out, "[%s block]", cli_render_str (content, "type"));
    } else if (!strcmp (kind, "tool_call")) {
        fprintf (out, "%-10s %s: %s [%s] %s", "tool", s_field (u, "toolCallId", f1),
                 s_field (u, "title", f2), s_field (u, "kind", f3),
                 s_field (u, "status", f4));
    } else if (!strcmp (kind, "tool_call_update")) {
        fprintf (out, "%-10s %s: %s", "tool", s_field (u, "toolCallId", f1),
                 s_field (u, "status", f2));
        const char *t = cli_render_tool_text (content);
        if (t) {
            fputc (' ', out);
            s_put_text (out, t);
        }
    } else if (!strcmp (kind, "plan")) {
        fprintf (out, "%-10s", "plan");
        size_t i;
        json_t *e;
        json_array_foreach (json_object_get (u, "entries"), i, e)
        {
            fprintf (out, "%s[%s] %s", i ? "; " : " ",
                     cli_render_plan_mark (cli_render_str (e, "status")),
                     s_field (e, "content", f1));
        }
    } else if (!strcmp (kind, "current_mode_update")) {
        fprintf (out, "%-10s %s", "mode", s_field (u, "currentModeId", f1));
    } else if (!strcmp (kind, "session_info_update")) {
        fprintf (out, "%-10s title ", "info");
        s_put_text (out, cli_render_str (u, "title"));
    } else {
        char *j = json_dumps (u, JSON_COMPACT);
        fprintf (out, "%-10s %s", "update", j ? j : kind);
        free (j);
    }
}

static void s_print_event (FILE *out, const json_t *ev)
{
    json_t *rest = json_deep_copy (ev);
    json_object_del (rest, "kind");
    char *j = rest && json_object_size (rest) ? json_dumps (rest, JSON_COMPACT) : NULL;
    json_decref (rest);
    field_t f;
    fprintf (out, "%-10s %s", "event", s_field (ev, "kind", f));
    if (j) {
        size_t n = strlen (j);
        fprintf (out, " %.*s%s", (int)cli_render_cut (j, n, DETAIL_MAX), j,
                 n > DETAIL_MAX ? "..." : "");
    }
    free (j);
}

static void on_message (cli_ws_t *ws, const char *method, const json_t *params,
                        const json_t *id, void *arg)
{
    (void)ws;
    tail_t *t = arg;
    if (id) return; //  a permission request: tail watches, it does not answer
    const char *sid = json_string_value (json_object_get (params, "sessionId"));
    if (sid && strcmp (sid, t->sid)) return;
    if (!strcmp (method, "$/cancel_request")) return;
    t->printed++;
    if (t->cfg->json) {
        json_t *m = json_pack ("{s:s,s:s,s:O}", "jsonrpc", "2.0", "method", method,
                               "params", params ? params : json_null ());
        char *text = m ? json_dumps (m, JSON_COMPACT) : NULL;
        json_decref (m);
        if (text) puts (text);
        free (text);
        fflush (stdout);
        return;
    }
    //  Text for a terminal: no control characters from the model's text.
    json_t *clean = json_deep_copy (params);
    if (clean) {
        cli_render_clean (clean);
        params = clean;
    }
    const json_t *meta = json_object_get (params, "_meta");
    json_int_t seq = json_integer_value (json_object_get (meta, "seq"));
    json_int_t ts = json_integer_value (json_object_get (meta, "ts"));
    char when[16] = "--:--:--";
    if (ts > 0) {
        time_t secs = (time_t)(ts / 1000);
        struct tm tm;
        if (localtime_r (&secs, &tm)) strftime (when, sizeof when, "%H:%M:%S", &tm);
    }
    printf ("#%-5lld %s ", (long long)seq, when);
    if (!strcmp (method, "session/update"))
        s_print_update (stdout, json_object_get (params, "update"));
    else if (!strcmp (method, "_corral/session/state")) {
        field_t f1, f2;
        printf ("%-10s %s", "state", s_field (params, "state", f1));
        const char *reason = s_field (params, "reason", f2);
        if (*reason) printf (" (%s)", reason);
    } else if (!strcmp (method, "_corral/session/event"))
        s_print_event (stdout, json_object_get (params, "event"));
    else {
        char other[128]; //  a method this version does not know, cleaned
        snprintf (other, sizeof other, "%.*s",
                  (int)cli_render_cut (method, strlen (method), sizeof other - 1),
                  method);
        printf ("%-10s %s", "other", cli_render_clean_line (other));
    }
    putchar ('\n');
    fflush (stdout);
    json_decref (clean);
}

static void on_ready (cli_ws_t *ws, const json_t *attach, void *arg)
{
    tail_t *t = arg;
    if (t->ever_ready && !t->cfg->quiet)
        fprintf (stderr, "corral tail: resumed after seq %lld\n",
                 (long long)cli_ws_last_seq (ws));
    t->ever_ready = true;
    (void)attach;
    //  The attach is answered once the replay reached the head seen when
    //  it was asked: everything stored so far has been printed.
    if (t->cfg->no_follow) cli_ws_stop (ws, CLI_OK);
}

static void on_refused (cli_ws_t *ws, const char *method, const json_t *error, void *arg)
{
    (void)arg;
    cli_ws_stop_refused (ws, "corral tail", method, error);
}

static int64_t on_expired (cli_ws_t *ws, const json_t *error, void *arg)
{
    (void)ws;
    tail_t *t = arg;
    char buf[512];
    if (!t->ever_ready) {
        fprintf (stderr,
                 "corral tail: cannot start there: %s\n"
                 "(--after is past the session's end, or --epoch is not its history's "
                 "epoch)\n",
                 cli_ws_error_text (error, buf, sizeof buf));
        return -1;
    }
    if (!t->cfg->quiet)
        fprintf (stderr,
                 "corral tail: the session's history was rebuilt (new epoch %s); "
                 "replaying it from the start\n",
                 cli_render_str (json_object_get (error, "data"), "epoch"));
    return 0;
}

static bool on_drop (cli_ws_t *ws, int code, const char *why, bool was_open, int retry_ms,
                     void *arg)
{
    (void)ws;
    (void)code;
    (void)was_open;
    tail_t *t = arg;
    if (!t->ever_ready) {
        fprintf (stderr, "corral tail: %s\n", why);
        return false;
    }
    if (!t->cfg->quiet)
        fprintf (stderr, "corral tail: %s; reconnecting in %.1f s\n", why,
                 retry_ms / 1000.0);
    return true;
}

static void on_signal (cli_ws_t *ws, int signo, void *arg)
{
    (void)signo;
    (void)arg;
    cli_ws_stop (ws, CLI_OK);
}

int cli_tail (int argc, char **argv)
{
    char *sid = s_take_positional (s_opts, &argc, argv);
    tail_config_t cfg;
    int rc = cli_config (s_opts, &cfg, argc, argv, argv[0],
                         "corral tail SESSION_ID [--after N] [--json]\n"
                         "Print a session's events: the stored ones after seq N, "
                         "then live ones until Ctrl-C.\n"
                         "A dropped connection is resumed from the last seq printed: "
                         "no gap, no duplicate.\n"
                         "Default lines: #seq time what detail.  --json: JSON lines "
                         "of the raw notifications.");
    if (rc != CLI_GO_ON) return rc;
    rc = CLI_USAGE;
    cli_target_t tg;
    cli_ws_t *ws = NULL;
    if (!sid || !sid[0]) {
        fprintf (stderr,
                 "corral tail: which session? usage: corral tail SESSION_ID [--after N] "
                 "(corral sessions lists them)\n");
        goto done;
    }
    if (cli_target_with_key (&tg, "corral tail", cfg.url, cfg.key)) goto done;
    tail_t t = {.cfg = &cfg, .sid = sid};
    static const cli_ws_handlers_t on = {.on_ready = on_ready,
                                         .on_message = on_message,
                                         .on_refused = on_refused,
                                         .on_expired = on_expired,
                                         .on_drop = on_drop,
                                         .on_signal = on_signal};
    rc = cli_ws_open (&ws, "corral tail", &tg, cfg.ca_file, &on, &t, true);
    if (rc) goto done;
    cli_ws_watch (ws, sid, cfg.after, cfg.epoch, false);
    rc = cli_ws_run (ws);
done:
    cli_ws_destroy (&ws);
    cm_config_free (s_opts, &cfg);
    return rc;
}
