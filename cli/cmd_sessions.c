/*  cmd_sessions.c - `corral sessions list|show|close` over the gateway's
    REST API (docs/openapi.yaml) with libcurl.

        list              GET  /v1/sessions (pages followed up to --limit)
        show ID           GET  /v1/sessions/{id}
        close ID          POST /v1/sessions/{id}/close  (history stays)

    A table or "name: value" lines by default, the gateway's JSON with
    --json (list: one array of session objects).  The key and the URL come
    from cli_target.h.  Exit codes (cli.h): 0 done, 1 failed, 2 usage (also
    a request the gateway calls invalid), 3 refused (401, 403, 404),
    4 the gateway could not be reached or answered 503.
*/
#include <curl/curl.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "cli_render.h"
#include "cli_target.h"
#include "cm_config.h"
#include "cm_id.h"

#define BODY_MAX  (64 * 1024 * 1024) //  largest answer read
#define PAGE_MAX  1000               //  the gateway's page limit
#define LIMIT_MAX 1000000

typedef struct {
    char *url, *key, *cwd;
    bool json;
    int64_t limit, timeout_ms;
} sessions_config_t;

#define OPT(name, type, field, def, help, min, max)                                 \
    {                                                                               \
        name, type, offsetof (sessions_config_t, field), def, help, min, max, NULL, \
            false                                                                   \
    }

static const cm_cfg_opt_t s_opts[] = {
    CLI_TARGET_OPTS (sessions_config_t, url, key),
    OPT ("json", CM_CFG_BOOL, json, "false", "print the gateway's JSON", 0, 0),
    OPT ("limit", CM_CFG_INT, limit, "100", "list: sessions at most", 1, LIMIT_MAX),
    OPT ("cwd", CM_CFG_STR, cwd, NULL, "list: only sessions in this folder (exact)", 0,
         0),
    OPT ("timeout", CM_CFG_MS, timeout_ms, "30s", "give up on a request after this long",
         100, 3600000),
    CM_CFG_END};

#define SUMMARY                                                                         \
    "List, show and close sessions through the gateway's REST API.\n"                   \
    "  corral sessions list [--limit N] [--cwd DIR]\n"                                  \
    "  corral sessions show ID\n"                                                       \
    "  corral sessions close ID     (ends the session; its history stays readable)\n"   \
    "Exit: 0 done, 1 failed, 2 usage, 3 refused (key, tenant, no such session), 4 the " \
    "gateway could not be reached or a service is unavailable."

typedef struct {
    char *data;
    size_t len;
    bool too_big;
} body_t;

static size_t s_write (char *p, size_t size, size_t n, void *arg)
{
    body_t *b = arg;
    size_t len = size * n;
    if (b->len + len > BODY_MAX) {
        b->too_big = true;
        return 0;
    }
    char *d = realloc (b->data, b->len + len + 1);
    if (!d) return 0;
    memcpy (d + b->len, p, len);
    b->data = d;
    b->len += len;
    b->data[b->len] = 0;
    return len;
}

//  One request.  Returns a CLI_* code; on CLI_OK *out is the parsed JSON
//  answer (NULL for an empty one).  Errors are printed.
static int s_request (const cli_target_t *t, const sessions_config_t *cfg,
                      const char *method, const char *path, json_t **out)
{
    *out = NULL;
    char url[CLI_URL_MAX + 512], auth[CLI_KEY_MAX + 32];
    snprintf (url, sizeof url, "%s%s", t->http, path);
    snprintf (auth, sizeof auth, "Authorization: Bearer %s", t->key);
    CURL *curl = curl_easy_init ();
    struct curl_slist *hdrs = curl_slist_append (NULL, auth);
    if (!curl || !hdrs) {
        fprintf (stderr, "corral sessions: libcurl failed to start\n");
        curl_slist_free_all (hdrs);
        curl_easy_cleanup (curl);
        return CLI_FAIL;
    }
    body_t body = {0};
    curl_easy_setopt (curl, CURLOPT_URL, url);
    curl_easy_setopt (curl, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt (curl, CURLOPT_CUSTOMREQUEST, method);
    if (!strcmp (method, "POST")) curl_easy_setopt (curl, CURLOPT_POSTFIELDS, "");
    curl_easy_setopt (curl, CURLOPT_TIMEOUT_MS, (long)cfg->timeout_ms);
    curl_easy_setopt (curl, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
    curl_easy_setopt (curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt (curl, CURLOPT_WRITEFUNCTION, s_write);
    curl_easy_setopt (curl, CURLOPT_WRITEDATA, &body);
    CURLcode cc = curl_easy_perform (curl);
    long code = 0;
    curl_easy_getinfo (curl, CURLINFO_RESPONSE_CODE, &code);
    curl_slist_free_all (hdrs);
    memset (auth, 0, sizeof auth);
    curl_easy_cleanup (curl);
    int status = CLI_OK;
    if (cc != CURLE_OK) {
        if (body.too_big)
            fprintf (stderr, "corral sessions: the answer is larger than %d bytes\n",
                     BODY_MAX);
        else
            fprintf (stderr,
                     "corral sessions: cannot reach the gateway at %s: %s (is the stack "
                     "running? --url / CORRAL_URL)\n",
                     t->http, curl_easy_strerror (cc));
        status = body.too_big ? CLI_FAIL : CLI_UNREACHABLE;
        goto done;
    }
    json_t *j = body.len ? json_loadb (body.data, body.len, 0, NULL) : NULL;
    if (code >= 200 && code < 300) {
        if (body.len && !j) {
            fprintf (stderr, "corral sessions: the gateway's answer is not JSON\n");
            status = CLI_FAIL;
        }
        *out = j;
        goto done;
    }
    json_t *e = json_object_get (j, "error");
    const char *msg = json_string_value (json_object_get (e, "message"));
    const char *reason = json_string_value (json_object_get (e, "reason"));
    char said[512];
    snprintf (said, sizeof said, "%s (HTTP %ld%s%s)",
              msg ? msg : "the gateway refused the request", code, reason ? ", " : "",
              reason ? reason : "");
    fprintf (stderr, "corral sessions: %s\n", cli_render_clean_line (said));
    if (code == 401)
        fprintf (stderr,
                 "corral sessions: the key came from %s; give another with --key or "
                 "CORRAL_API_KEY\n",
                 t->key_from);
    status = code == 401 || code == 403 || code == 404 ? CLI_REFUSED
             : code == 400 || code == 413              ? CLI_USAGE
             : code == 503                             ? CLI_UNREACHABLE
                                                       : CLI_FAIL;
    json_decref (j);
done:
    free (body.data);
    return status;
}

static const char *s_str (json_t *o, const char *k, const char *dflt)
{
    const char *v = json_string_value (json_object_get (o, k));
    return v && *v ? v : dflt;
}

//  Unix ms as "YYYY-MM-DD HH:MM:SS" UTC.
static const char *s_time (json_int_t ms, char *buf, size_t len)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    if (ms <= 0 || !gmtime_r (&t, &tm) || !strftime (buf, len, "%Y-%m-%d %H:%M:%S", &tm))
        snprintf (buf, len, "-");
    return buf;
}

/* ---- list ---------------------------------------------------------------- */

static void s_print_row (json_t *s)
{
    char when[32];
    json_t *u = json_object_get (s, "usage");
    json_int_t tokens = json_integer_value (json_object_get (u, "inputTokens")) +
                        json_integer_value (json_object_get (u, "outputTokens"));
    json_int_t updated = json_integer_value (json_object_get (s, "updatedMs"));
    if (!updated) updated = json_integer_value (json_object_get (s, "createdMs"));
    printf ("%-36s  %-19s  %5lld  %8lld  %-19s  %s", s_str (s, "id", "?"),
            s_str (s, "state", "?"),
            (long long)json_integer_value (json_object_get (s, "turns")),
            (long long)tokens, s_time (updated, when, sizeof when),
            s_str (s, "cwd", "-"));
    const char *title = s_str (s, "title", NULL);
    if (title) printf ("  \"%s\"", title);
    putchar ('\n');
}

static int s_list (const cli_target_t *t, const sessions_config_t *cfg)
{
    json_t *all = json_array ();
    char cursor[64] = "";
    bool more = false;
    int status = CLI_OK;
    while ((json_int_t)json_array_size (all) < cfg->limit) {
        int64_t want = cfg->limit - (int64_t)json_array_size (all);
        if (want > PAGE_MAX) want = PAGE_MAX;
        char path[4096];
        int n = snprintf (path, sizeof path, "/v1/sessions?limit=%lld", (long long)want);
        if (*cursor)
            n += snprintf (path + n, sizeof path - (size_t)n, "&cursor=%s", cursor);
        if (cfg->cwd) {
            char *esc = curl_easy_escape (NULL, cfg->cwd, 0);
            if (esc && (size_t)n + strlen (esc) + 8 < sizeof path)
                snprintf (path + n, sizeof path - (size_t)n, "&cwd=%s", esc);
            curl_free (esc);
        }
        json_t *page = NULL;
        status = s_request (t, cfg, "GET", path, &page);
        if (status) break;
        json_t *items = json_object_get (page, "sessions");
        size_t i;
        json_t *s;
        json_array_foreach (items, i, s) json_array_append (all, s);
        const char *next = s_str (page, "nextCursor", NULL);
        more = next && json_array_size (items) > 0;
        if (more) snprintf (cursor, sizeof cursor, "%s", next);
        json_decref (page);
        if (!more) break;
    }
    if (status == CLI_OK) {
        if (cfg->json) {
            char *text = json_dumps (all, JSON_COMPACT);
            if (text) puts (text);
            free (text);
        } else {
            printf ("%-36s  %-19s  %5s  %8s  %-19s  %s\n", "ID", "STATE", "TURNS",
                    "TOKENS", "UPDATED (UTC)", "CWD");
            size_t i;
            json_t *s;
            cli_render_clean (all); //  titles and paths are anyone's text
            json_array_foreach (all, i, s) s_print_row (s);
            if (!json_array_size (all)) fprintf (stderr, "(no sessions)\n");
        }
        if (more)
            fprintf (stderr, "corral sessions: more than %lld; --limit shows more\n",
                     (long long)cfg->limit);
    }
    json_decref (all);
    return status;
}

/* ---- show / close ---------------------------------------------------------- */

//  "name: value" lines; nested objects as "usage.inputTokens"; *Ms times
//  also as UTC dates.
static void s_print_fields (json_t *o, const char *prefix)
{
    const char *k;
    json_t *v;
    json_object_foreach (o, k, v)
    {
        char name[256];
        snprintf (name, sizeof name, "%s%s", prefix, k);
        cli_render_clean_line (name); //  keys are not cleaned by cli_render_clean
        if (json_is_object (v)) {
            char sub[260];
            snprintf (sub, sizeof sub, "%s.", name);
            s_print_fields (v, sub);
            continue;
        }
        printf ("%-22s ", name);
        if (json_is_string (v))
            fputs (json_string_value (v), stdout);
        else {
            char *text = json_dumps (v, JSON_COMPACT | JSON_ENCODE_ANY);
            if (text) fputs (text, stdout);
            free (text);
        }
        size_t kl = strlen (k);
        if (json_is_integer (v) && kl > 2 && !strcmp (k + kl - 2, "Ms") &&
            json_integer_value (v) > 1000000000000LL) {
            char when[32];
            printf ("  (%s UTC)", s_time (json_integer_value (v), when, sizeof when));
        }
        putchar ('\n');
    }
}

static int s_one (const cli_target_t *t, const sessions_config_t *cfg, const char *cmd,
                  const char *id_text)
{
    cm_uuid_t id;
    char id_buf[CM_UUID_STR_LEN], path[128];
    if (!id_text || cm_uuid_parse (id_text, &id)) {
        fprintf (stderr,
                 "corral sessions %s: needs a session id (a UUID, as 'list' shows)\n",
                 cmd);
        return CLI_USAGE;
    }
    cm_uuid_fmt (&id, id_buf);
    bool close = !strcmp (cmd, "close");
    snprintf (path, sizeof path, "/v1/sessions/%s%s", id_buf, close ? "/close" : "");
    json_t *j = NULL;
    int status = s_request (t, cfg, close ? "POST" : "GET", path, &j);
    if (status == CLI_OK) {
        if (cfg->json) {
            char *text = j ? json_dumps (j, JSON_COMPACT) : NULL;
            puts (text ? text : "{}");
            free (text);
        } else if (close)
            printf ("closed %s\n", id_buf);
        else {
            cli_render_clean (j);
            s_print_fields (j, "");
        }
    }
    json_decref (j);
    return status;
}

/* ---- dispatch -------------------------------------------------------------- */

//  Take the first argument that is neither a flag nor a flag's value out
//  of argv into *pos (NULL when there is none).
static void s_take_positional (int *argc, char **argv, const char **pos)
{
    *pos = NULL;
    for (int i = 1; i < *argc; i++) {
        const char *a = argv[i];
        if (!strncmp (a, "--", 2) && a[2]) {
            const char *name = a + 2;
            size_t len = strcspn (name, "=");
            const cm_cfg_opt_t *o = s_opts;
            while (o->name && !(strlen (o->name) == len && !strncmp (o->name, name, len)))
                o++;
            if (o->name && o->type != CM_CFG_BOOL && !name[len]) i++; //  its value
            continue;
        }
        *pos = a;
        memmove (&argv[i], &argv[i + 1], (size_t)(*argc - i - 1) * sizeof *argv);
        (*argc)--;
        argv[*argc] = NULL;
        return;
    }
}

int cli_sessions (int argc, char **argv)
{
    if (argc < 2 || argv[1][0] == '-') {
        bool help = argc >= 2 && (!strcmp (argv[1], "--help") || !strcmp (argv[1], "-h"));
        sessions_config_t tmp = {0};
        char err[256];
        if (help) {
            //  The full flag table.
            cm_config_load (s_opts, &tmp, argc, argv, "corral sessions", SUMMARY, err,
                            sizeof err);
            cm_config_free (s_opts, &tmp);
            return CLI_OK;
        }
        fprintf (stderr,
                 "corral sessions: a command: list, show ID, close ID ('corral sessions "
                 "--help')\n");
        return CLI_USAGE;
    }
    const char *cmd = argv[1];
    if (strcmp (cmd, "list") && strcmp (cmd, "show") && strcmp (cmd, "close")) {
        fprintf (stderr, "corral sessions: unknown command '%.80s' (list, show, close)\n",
                 cmd);
        return CLI_USAGE;
    }
    //  argv of the command: "corral sessions <cmd>" then its arguments.
    char prog[64];
    snprintf (prog, sizeof prog, "corral sessions %s", cmd);
    int sub_argc = argc - 1;
    char **sub_argv = argv + 1;
    const char *id = NULL;
    if (strcmp (cmd, "list")) s_take_positional (&sub_argc, sub_argv, &id);
    sessions_config_t cfg = {0};
    int rc = cli_config (s_opts, &cfg, sub_argc, sub_argv, prog, SUMMARY);
    if (rc != CLI_GO_ON) return rc;
    int status = CLI_USAGE;
    cli_target_t t;
    if (!cli_target_with_key (&t, prog, cfg.url, cfg.key)) {
        curl_global_init (CURL_GLOBAL_DEFAULT);
        status = !strcmp (cmd, "list") ? s_list (&t, &cfg) : s_one (&t, &cfg, cmd, id);
        curl_global_cleanup ();
    }
    memset (&t, 0, sizeof t);
    cm_config_free (s_opts, &cfg);
    return status;
}
