/*  fake_script.c - load, validate and match the script of rules.

    The whole file is checked at start: a typo in a key, a value of the
    wrong type or out of bounds, or a step that could never run stops the
    server with a message that names the file, the rule (index and name),
    the response and the step.  Keys starting with "_" are comments.
*/
#include "fake_model.h"
#include "cm_error.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

static const char *const s_stops[] = {"end_turn",      "max_tokens", "tool_use",
                                      "stop_sequence", "pause_turn", "refusal"};

//  Where the checker is, for messages.
typedef struct {
    const char *origin;
    size_t rule, resp, step;
    const char *rule_name;
    int depth; //  0 top, 1 rule, 2 response, 3 step
    char *err;
    size_t errlen;
} s_where_t;

static void s_fail (s_where_t *w, const char *fmt, ...)
    __attribute__ ((format (printf, 2, 3)));

static void s_fail (s_where_t *w, const char *fmt, ...)
{
    int n = 0;
    if (w->depth == 0)
        n = snprintf (w->err, w->errlen, "%s: ", w->origin);
    else if (w->depth == 1)
        n = snprintf (w->err, w->errlen, "%s: rules[%zu] (\"%s\"): ", w->origin, w->rule,
                      w->rule_name ? w->rule_name : "?");
    else if (w->depth == 2)
        n = snprintf (w->err, w->errlen,
                      "%s: rules[%zu] (\"%s\"): responses[%zu]: ", w->origin, w->rule,
                      w->rule_name ? w->rule_name : "?", w->resp);
    else
        n = snprintf (w->err, w->errlen,
                      "%s: rules[%zu] (\"%s\"): responses[%zu][%zu]: ", w->origin,
                      w->rule, w->rule_name ? w->rule_name : "?", w->resp, w->step);
    if (n < 0 || (size_t)n >= w->errlen) return;
    va_list args;
    va_start (args, fmt);
    vsnprintf (w->err + n, w->errlen - (size_t)n, fmt, args);
    va_end (args);
}

//  Reads an integer member in [min, max]; absent leaves *out.  Returns 0/-1.
static int s_int (s_where_t *w, const json_t *obj, const char *key, int64_t min,
                  int64_t max, int64_t *out)
{
    const json_t *v = json_object_get (obj, key);
    if (!v) return 0;
    if (!json_is_integer (v) || json_integer_value (v) < min ||
        json_integer_value (v) > max) {
        s_fail (w, "\"%s\" must be an integer from %lld to %lld", key, (long long)min,
                (long long)max);
        return -1;
    }
    *out = json_integer_value (v);
    return 0;
}

//  Reads an optional string member into an owned copy.  Returns 0/-1.
static int s_str (s_where_t *w, const json_t *obj, const char *key, bool required,
                  char **out, size_t *len)
{
    const json_t *v = json_object_get (obj, key);
    if (!v) {
        if (!required) return 0;
        s_fail (w, "\"%s\" is required", key);
        return -1;
    }
    if (!json_is_string (v)) {
        s_fail (w, "\"%s\" must be a string", key);
        return -1;
    }
    size_t n = json_string_length (v);
    *out = malloc (n + 1);
    if (!*out) {
        s_fail (w, "out of memory");
        return -1;
    }
    memcpy (*out, json_string_value (v), n + 1);
    if (len) *len = n;
    return 0;
}

//  Every key of obj must be in allowed (NULL-terminated) or start with '_'.
static int s_keys (s_where_t *w, const json_t *obj, const char *what,
                   const char *const *allowed)
{
    const char *key;
    const json_t *v;
    json_object_foreach ((json_t *)obj, key, v)
    {
        if (key[0] == '_') continue;
        bool ok = false;
        for (const char *const *a = allowed; *a; a++)
            if (strcmp (key, *a) == 0) ok = true;
        if (ok) continue;
        char list[512] = "";
        size_t pos = 0;
        for (const char *const *a = allowed; *a && pos < sizeof list; a++) {
            int n = snprintf (list + pos, sizeof list - pos, "%s%s",
                              a == allowed ? "" : ", ", *a);
            if (n > 0) pos += (size_t)n;
        }
        s_fail (w, "unknown key \"%s\" in %s (expected %s)", key, what, list);
        return -1;
    }
    return 0;
}

// ---------------------------------------------------------------------------
//  Steps

typedef struct {
    const char *key;
    fake_step_kind_t kind;
    const char *const *modifiers; //  other keys allowed beside it
} s_step_def_t;

static const char *const s_mod_none[] = {NULL};
static const char *const s_mod_times[] = {"times", NULL};
static const char *const s_mod_text[] = {"chunks", NULL};
static const char *const s_mod_thinking[] = {"chunks", "signature", NULL};
static const char *const s_mod_tool[] = {"fragments", NULL};
static const char *const s_mod_http[] = {"retry_after", "times", "message", NULL};
static const char *const s_mod_error[] = {"message", "times", NULL};

static const s_step_def_t s_step_defs[] = {
    {"text", FAKE_STEP_TEXT, s_mod_text},
    {"thinking", FAKE_STEP_THINKING, s_mod_thinking},
    {"tool_call", FAKE_STEP_TOOL_CALL, s_mod_tool},
    {"pause_ms", FAKE_STEP_PAUSE, s_mod_none},
    {"usage", FAKE_STEP_USAGE, s_mod_none},
    {"stop", FAKE_STEP_STOP, s_mod_none},
    {"http_error", FAKE_STEP_HTTP_ERROR, s_mod_http},
    {"error_event", FAKE_STEP_ERROR_EVENT, s_mod_error},
    {"raw", FAKE_STEP_RAW, s_mod_none},
    {"stall", FAKE_STEP_STALL, s_mod_times},
    {"cut", FAKE_STEP_CUT, s_mod_times},
};
#define S_STEP_DEFS (sizeof s_step_defs / sizeof s_step_defs[0])

static int s_tool_call (s_where_t *w, const json_t *tc, fake_step_t *step)
{
    static const char *const keys[] = {"id", "name", "arguments", "arguments_raw", NULL};
    if (!json_is_object (tc)) {
        s_fail (w,
                "\"tool_call\" must be an object {id?, name, arguments | arguments_raw}");
        return -1;
    }
    if (s_keys (w, tc, "tool_call", keys)) return -1;
    if (s_str (w, tc, "id", false, &step->id, NULL)) return -1;
    if (s_str (w, tc, "name", true, &step->name, NULL)) return -1;
    if (!step->name[0]) {
        s_fail (w, "tool_call \"name\" must not be empty");
        return -1;
    }
    if (step->id && !step->id[0]) {
        s_fail (w, "tool_call \"id\" must not be empty (leave it out to derive one)");
        return -1;
    }
    const json_t *args = json_object_get (tc, "arguments");
    const json_t *raw = json_object_get (tc, "arguments_raw");
    if (args && raw) {
        s_fail (w, "tool_call has both \"arguments\" and \"arguments_raw\"; keep one");
        return -1;
    }
    if (raw) return s_str (w, tc, "arguments_raw", true, &step->text, &step->len);
    if (args && !json_is_object (args)) {
        s_fail (w, "tool_call \"arguments\" must be an object (use \"arguments_raw\" for "
                   "any other text)");
        return -1;
    }
    step->text = args ? json_dumps (args, JSON_COMPACT) : strdup ("{}");
    if (!step->text) {
        s_fail (w, "out of memory");
        return -1;
    }
    step->len = strlen (step->text);
    return 0;
}

static int s_step (s_where_t *w, const json_t *obj, fake_step_t *step)
{
    if (!json_is_object (obj)) {
        s_fail (w, "a step must be an object such as {\"text\": \"...\"}");
        return -1;
    }
    const s_step_def_t *def = NULL;
    for (size_t i = 0; i < S_STEP_DEFS; i++) {
        if (!json_object_get (obj, s_step_defs[i].key)) continue;
        if (def) {
            s_fail (w, "a step has one kind, found both \"%s\" and \"%s\"", def->key,
                    s_step_defs[i].key);
            return -1;
        }
        def = &s_step_defs[i];
    }
    if (!def) {
        const char *key, *unknown = NULL;
        const json_t *v;
        json_object_foreach ((json_t *)obj, key, v)
        {
            if (key[0] != '_' && !unknown) unknown = key;
        }
        char what[160] = "an empty step";
        if (unknown)
            snprintf (what, sizeof what, "unknown step kind \"%.100s\"", unknown);
        s_fail (w,
                "%s (expected one of text, thinking, tool_call, pause_ms, usage, stop, "
                "http_error, error_event, raw, stall, cut)",
                what);
        return -1;
    }
    const char *allowed[8] = {def->key};
    size_t n = 1;
    for (const char *const *m = def->modifiers; *m; m++) allowed[n++] = *m;
    allowed[n] = NULL;
    char what[64];
    snprintf (what, sizeof what, "a \"%s\" step", def->key);
    if (s_keys (w, obj, what, allowed)) return -1;

    step->kind = def->kind;
    step->retry_after = -1;
    step->input = step->output = step->cache = -1;
    const json_t *v = json_object_get (obj, def->key);
    int64_t num = 0;
    switch (def->kind) {
    case FAKE_STEP_TEXT:
    case FAKE_STEP_THINKING:
    case FAKE_STEP_RAW:
        if (s_str (w, obj, def->key, true, &step->text, &step->len)) return -1;
        if (s_int (w, obj, "chunks", 1, FAKE_PIECES_MAX, &num)) return -1;
        step->pieces = (int)num;
        if (s_str (w, obj, "signature", false, &step->signature, NULL)) return -1;
        break;
    case FAKE_STEP_TOOL_CALL:
        if (s_tool_call (w, v, step)) return -1;
        if (s_int (w, obj, "fragments", 1, FAKE_PIECES_MAX, &num)) return -1;
        step->pieces = (int)num;
        break;
    case FAKE_STEP_PAUSE:
        return s_int (w, obj, "pause_ms", 0, FAKE_PAUSE_MAX, &step->ms);
    case FAKE_STEP_USAGE: {
        static const char *const keys[] = {"input", "output", "cache", NULL};
        if (!json_is_object (v)) {
            s_fail (w, "\"usage\" must be an object {input?, output?, cache?}");
            return -1;
        }
        if (s_keys (w, v, "usage", keys)) return -1;
        if (s_int (w, v, "input", 0, INT32_MAX, &step->input)) return -1;
        if (s_int (w, v, "output", 0, INT32_MAX, &step->output)) return -1;
        return s_int (w, v, "cache", 0, INT32_MAX, &step->cache);
    }
    case FAKE_STEP_STOP:
        if (s_str (w, obj, "stop", true, &step->text, &step->len)) return -1;
        for (size_t i = 0; i < sizeof s_stops / sizeof s_stops[0]; i++)
            if (strcmp (step->text, s_stops[i]) == 0) return 0;
        s_fail (w,
                "\"stop\" must be one of end_turn, max_tokens, tool_use, stop_sequence, "
                "pause_turn, refusal; got \"%s\"",
                step->text);
        return -1;
    case FAKE_STEP_HTTP_ERROR:
        if (s_int (w, obj, "http_error", 400, 599, &num)) return -1;
        step->status = (int)num;
        step->times = 1;
        if (s_int (w, obj, "times", 1, FAKE_TIMES_MAX, &step->times)) return -1;
        num = -1;
        if (s_int (w, obj, "retry_after", 0, 86400, &num)) return -1;
        step->retry_after = (int)num;
        return s_str (w, obj, "message", false, &step->message, NULL);
    case FAKE_STEP_ERROR_EVENT:
        if (s_str (w, obj, "error_event", true, &step->text, &step->len)) return -1;
        if (!step->text[0]) {
            s_fail (w, "\"error_event\" names the error type, e.g. \"overloaded_error\"");
            return -1;
        }
        if (s_int (w, obj, "times", 1, FAKE_TIMES_MAX, &step->times)) return -1;
        return s_str (w, obj, "message", false, &step->message, NULL);
    case FAKE_STEP_STALL:
    case FAKE_STEP_CUT:
        if (!json_is_true (v)) {
            s_fail (w, "\"%s\" must be true", def->key);
            return -1;
        }
        return s_int (w, obj, "times", 1, FAKE_TIMES_MAX, &step->times);
    }
    return 0;
}

//  Order rules: http_error steps lead; nothing follows a stall, cut or
//  error_event that every request takes (it could never run); one stop at
//  most.
static int s_order (s_where_t *w, const fake_response_t *resp)
{
    bool content = false, stop = false;
    for (size_t i = 0; i < resp->count; i++) {
        w->step = i;
        const fake_step_t *step = &resp->steps[i];
        if (step->kind == FAKE_STEP_HTTP_ERROR && content) {
            s_fail (w, "http_error must come before every other step (the status line is "
                       "sent with the first byte)");
            return -1;
        }
        if (step->kind != FAKE_STEP_HTTP_ERROR) content = true;
        if (step->kind == FAKE_STEP_STOP) {
            if (stop) {
                s_fail (w, "a response has one \"stop\" at most");
                return -1;
            }
            stop = true;
        }
        bool terminal = step->kind == FAKE_STEP_STALL || step->kind == FAKE_STEP_CUT ||
                        step->kind == FAKE_STEP_ERROR_EVENT;
        if (terminal && step->times == 0 && i + 1 < resp->count) {
            s_fail (w, "steps after a stall, cut or error_event without \"times\" would "
                       "never run; "
                       "remove them or give it \"times\"");
            return -1;
        }
    }
    return 0;
}

// ---------------------------------------------------------------------------
//  Rules

static int s_rule (s_where_t *w, const json_t *obj, fake_rule_t *rule)
{
    static const char *const keys[] = {"name",           "match",       "responses",
                                       "chunk_delay_ms", "description", NULL};
    w->rule_name = NULL;
    w->depth = 1;
    if (!json_is_object (obj)) {
        s_fail (w, "a rule must be an object {name, match, responses}");
        return -1;
    }
    w->rule_name = json_string_value (json_object_get (obj, "name"));
    if (s_keys (w, obj, "a rule", keys)) return -1;
    if (s_str (w, obj, "name", true, &rule->name, NULL)) return -1;
    if (!rule->name[0]) {
        s_fail (w, "\"name\" must not be empty");
        return -1;
    }
    if (s_str (w, obj, "match", true, &rule->match, NULL)) return -1;
    if (strcmp (rule->match, "*") == 0) {
        free (rule->match);
        rule->match = NULL;
    }
    rule->chunk_delay_ms = -1;
    if (s_int (w, obj, "chunk_delay_ms", 0, FAKE_PAUSE_MAX, &rule->chunk_delay_ms))
        return -1;
    const json_t *responses = json_object_get (obj, "responses");
    if (!json_is_array (responses) || json_array_size (responses) == 0 ||
        json_array_size (responses) > FAKE_RESPONSES_MAX) {
        s_fail (w,
                "\"responses\" must be an array of 1 to %d responses, each an array "
                "of steps",
                FAKE_RESPONSES_MAX);
        return -1;
    }
    rule->count = json_array_size (responses);
    rule->responses = calloc (rule->count, sizeof *rule->responses);
    if (!rule->responses) {
        s_fail (w, "out of memory");
        return -1;
    }
    for (size_t r = 0; r < rule->count; r++) {
        w->resp = r;
        w->depth = 2;
        const json_t *steps = json_array_get (responses, r);
        if (!json_is_array (steps) || json_array_size (steps) > FAKE_STEPS_MAX) {
            s_fail (w, "a response must be an array of at most %d steps", FAKE_STEPS_MAX);
            return -1;
        }
        fake_response_t *resp = &rule->responses[r];
        resp->count = json_array_size (steps);
        resp->steps = calloc (resp->count ? resp->count : 1, sizeof *resp->steps);
        if (!resp->steps) {
            s_fail (w, "out of memory");
            return -1;
        }
        w->depth = 3;
        for (size_t s = 0; s < resp->count; s++) {
            w->step = s;
            if (s_step (w, json_array_get (steps, s), &resp->steps[s])) return -1;
        }
        if (s_order (w, resp)) return -1;
    }
    return 0;
}

fake_script_t *fake_script_parse (const char *text, size_t len, const char *origin,
                                  char *err, size_t errlen)
{
    s_where_t w = {.origin = origin, .err = err, .errlen = errlen};
    json_error_t jerr;
    json_t *root = json_loadb (text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        s_fail (&w, "not valid JSON: line %d column %d: %s", jerr.line, jerr.column,
                jerr.text);
        return NULL;
    }
    fake_script_t *self = calloc (1, sizeof *self);
    static const char *const keys[] = {"rules", "description", NULL};
    if (!self) {
        s_fail (&w, "out of memory");
        goto fail;
    }
    if (!json_is_object (root)) {
        s_fail (&w, "the script must be an object {\"rules\": [...]}");
        goto fail;
    }
    if (s_keys (&w, root, "the script", keys)) goto fail;
    const json_t *rules = json_object_get (root, "rules");
    if (!json_is_array (rules) || json_array_size (rules) == 0 ||
        json_array_size (rules) > FAKE_RULES_MAX) {
        s_fail (&w, "\"rules\" must be an array of 1 to %d rules", FAKE_RULES_MAX);
        goto fail;
    }
    self->count = json_array_size (rules);
    self->rules = calloc (self->count, sizeof *self->rules);
    if (!self->rules) {
        s_fail (&w, "out of memory");
        goto fail;
    }
    for (size_t i = 0; i < self->count; i++) {
        w.rule = i;
        if (s_rule (&w, json_array_get (rules, i), &self->rules[i])) goto fail;
    }
    json_decref (root);
    return self;
fail:
    json_decref (root);
    fake_script_destroy (&self);
    return NULL;
}

fake_script_t *fake_script_load (const char *path, char *err, size_t errlen)
{
    FILE *file = fopen (path, "rb");
    if (!file) {
        snprintf (err, errlen, "%s: cannot open the script: %m", path);
        return NULL;
    }
    struct stat st;
    if (fstat (fileno (file), &st) != 0 || !S_ISREG (st.st_mode) ||
        st.st_size > FAKE_SCRIPT_MAX) {
        snprintf (err, errlen, "%s: not a regular file of at most %d bytes", path,
                  FAKE_SCRIPT_MAX);
        fclose (file);
        return NULL;
    }
    size_t size = (size_t)st.st_size;
    char *text = malloc (size + 1);
    if (!text || fread (text, 1, size, file) != size) {
        snprintf (err, errlen, "%s: cannot read the script", path);
        free (text);
        fclose (file);
        return NULL;
    }
    fclose (file);
    fake_script_t *self = fake_script_parse (text, size, path, err, errlen);
    free (text);
    return self;
}

void fake_script_destroy (fake_script_t **self_p)
{
    if (!self_p || !*self_p) return;
    fake_script_t *self = *self_p;
    for (size_t i = 0; self->rules && i < self->count; i++) {
        fake_rule_t *rule = &self->rules[i];
        for (size_t r = 0; rule->responses && r < rule->count; r++) {
            fake_response_t *resp = &rule->responses[r];
            for (size_t s = 0; resp->steps && s < resp->count; s++) {
                fake_step_t *step = &resp->steps[s];
                free (step->text);
                free (step->id);
                free (step->name);
                free (step->signature);
                free (step->message);
            }
            free (resp->steps);
        }
        free (rule->responses);
        free (rule->name);
        free (rule->match);
    }
    free (self->rules);
    free (self);
    *self_p = NULL;
}

//  ASCII case-insensitive substring test.
static bool s_contains (const char *hay, const char *needle)
{
    size_t n = strlen (needle);
    for (; *hay; hay++)
        if (strncasecmp (hay, needle, n) == 0) return true;
    return n == 0;
}

const fake_rule_t *fake_script_match (const fake_script_t *self, const char *text)
{
    for (size_t i = 0; i < self->count; i++) {
        const fake_rule_t *rule = &self->rules[i];
        if (!rule->match || s_contains (text ? text : "", rule->match)) return rule;
    }
    return NULL;
}

void fake_script_reset (fake_script_t *self)
{
    for (size_t i = 0; i < self->count; i++)
        for (size_t r = 0; r < self->rules[i].count; r++)
            for (size_t s = 0; s < self->rules[i].responses[r].count; s++)
                self->rules[i].responses[r].steps[s].used = 0;
}
