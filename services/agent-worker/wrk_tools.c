/*  wrk_tools.c - the built-in tools (see wrk_tools.h).

    Layout: the table; small helpers (text buffer, results, argument
    checks); one handler per tool; the recursive walk glob and grep share;
    describe; the dispatcher.  A handler returns 0 with *out filled (maybe
    is_error) or CM_E_NOMEM; everything the model got wrong is a result.
*/
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <limits.h>
#include <regex.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cm_strbuf.h"
#include "cm_error.h"
#include "wrk_diff.h"
#include "wrk_tools.h"

//  --------------------------------------------------------------------------
//  The table

typedef enum {
    S_READ_FILE,
    S_WRITE_FILE,
    S_EDIT_FILE,
    S_LIST_DIR,
    S_GLOB,
    S_GREP,
    S_UPDATE_PLAN,
    S_RUN_COMMAND,
    S_TOOL_COUNT
} s_tool_id_t;

static const wrk_tool_def_t s_tools[S_TOOL_COUNT] = {
    [S_READ_FILE] =
        {
            .name = "read_file",
            .kind = WRK_KIND_READ,
            .flags = 0,
            .description =
                "Read a text file in the workspace. Paths are relative to the working "
                "directory (or absolute inside the workspace). Returns the text as is, "
                "up "
                "to 256 KiB; use offset_line (1-based) and limit_lines to read a part of "
                "a "
                "long file. Binary files are refused.",
            .input_schema =
                "{\"type\":\"object\",\"properties\":{"
                "\"path\":{\"type\":\"string\",\"description\":\"file to read\"},"
                "\"offset_line\":{\"type\":\"integer\",\"minimum\":1,"
                "\"description\":\"first line to return (1-based, default 1)\"},"
                "\"limit_lines\":{\"type\":\"integer\",\"minimum\":1,"
                "\"description\":\"at most this many lines\"}},"
                "\"required\":[\"path\"],\"additionalProperties\":false}",
        },
    [S_WRITE_FILE] =
        {
            .name = "write_file",
            .kind = WRK_KIND_EDIT,
            .flags = WRK_TOOL_WRITES,
            .description =
                "Create a file, or replace a file's whole content. Missing parent "
                "directories are created. Returns a unified diff of the change. Prefer "
                "edit_file to change part of an existing file.",
            .input_schema =
                "{\"type\":\"object\",\"properties\":{"
                "\"path\":{\"type\":\"string\",\"description\":\"file to write\"},"
                "\"content\":{\"type\":\"string\",\"description\":\"the complete new "
                "content\"}},"
                "\"required\":[\"path\",\"content\"],\"additionalProperties\":false}",
        },
    [S_EDIT_FILE] =
        {
            .name = "edit_file",
            .kind = WRK_KIND_EDIT,
            .flags = WRK_TOOL_WRITES,
            .description =
                "Replace exact text in an existing file. old_text must match the file "
                "byte for byte (including whitespace and indentation) and occur exactly "
                "once, unless replace_all is true. Include enough surrounding lines to "
                "make it unique. Returns a unified diff of the change.",
            .input_schema =
                "{\"type\":\"object\",\"properties\":{"
                "\"path\":{\"type\":\"string\",\"description\":\"file to edit\"},"
                "\"old_text\":{\"type\":\"string\",\"description\":\"exact text to "
                "replace\"},"
                "\"new_text\":{\"type\":\"string\",\"description\":\"replacement text\"},"
                "\"replace_all\":{\"type\":\"boolean\",\"description\":\"replace every "
                "occurrence (default false)\"}},"
                "\"required\":[\"path\",\"old_text\",\"new_text\"],"
                "\"additionalProperties\":false}",
        },
    [S_LIST_DIR] =
        {
            .name = "list_dir",
            .kind = WRK_KIND_READ,
            .flags = 0,
            .description = "List a directory, sorted by name. Directories end in '/', "
                           "symbolic links "
                           "in '@'. Default: the working directory.",
            .input_schema =
                "{\"type\":\"object\",\"properties\":{"
                "\"path\":{\"type\":\"string\",\"description\":\"directory to list "
                "(default .)\"}},"
                "\"additionalProperties\":false}",
        },
    [S_GLOB] =
        {
            .name = "glob",
            .kind = WRK_KIND_SEARCH,
            .flags = 0,
            .description =
                "Find files whose path matches a glob pattern, relative to path "
                "(default: "
                "the working directory). '*', '?' and '[...]' match within one path "
                "component; '**' matches any number of directories, so '**/*.c' finds C "
                "files at any depth and '*.c' only at the top. .git is skipped.",
            .input_schema =
                "{\"type\":\"object\",\"properties\":{"
                "\"pattern\":{\"type\":\"string\",\"description\":\"glob pattern, e.g. "
                "src/**/*.h\"},"
                "\"path\":{\"type\":\"string\",\"description\":\"directory to search "
                "(default .)\"}},"
                "\"required\":[\"pattern\"],\"additionalProperties\":false}",
        },
    [S_GREP] =
        {
            .name = "grep",
            .kind = WRK_KIND_SEARCH,
            .flags = 0,
            .description =
                "Search file contents with a POSIX extended regular expression. Searches "
                "path (a file, or a directory recursively; default: the working "
                "directory), optionally only files whose name matches glob. Prints "
                "file:line:text for each matching line. Binary files and .git are "
                "skipped.",
            .input_schema =
                "{\"type\":\"object\",\"properties\":{"
                "\"pattern\":{\"type\":\"string\",\"description\":\"POSIX extended "
                "regular "
                "expression\"},"
                "\"path\":{\"type\":\"string\",\"description\":\"file or directory "
                "(default .)\"},"
                "\"glob\":{\"type\":\"string\",\"description\":\"only files whose name "
                "matches, e.g. *.c\"},"
                "\"ignore_case\":{\"type\":\"boolean\",\"description\":\"match case "
                "insensitively (default false)\"}},"
                "\"required\":[\"pattern\"],\"additionalProperties\":false}",
        },
    [S_UPDATE_PLAN] =
        {
            .name = "update_plan",
            .kind = WRK_KIND_THINK,
            .flags = 0,
            .description =
                "Replace your plan for this task: the full list of steps, each with a "
                "status. Keep it current as you work; mark a step in_progress when you "
                "start it and completed when it is done.",
            .input_schema = "{\"type\":\"object\",\"properties\":{"
                            "\"entries\":{\"type\":\"array\",\"maxItems\":100,\"items\":{"
                            "\"type\":\"object\",\"properties\":{"
                            "\"content\":{\"type\":\"string\",\"description\":\"what the "
                            "step does\"},"
                            "\"status\":{\"type\":\"string\","
                            "\"enum\":[\"pending\",\"in_progress\",\"completed\"]},"
                            "\"priority\":{\"type\":\"string\",\"enum\":[\"high\","
                            "\"medium\",\"low\"]}"
                            "},\"required\":[\"content\",\"status\"],"
                            "\"additionalProperties\":false}}},"
                            "\"required\":[\"entries\"],\"additionalProperties\":false}",
        },
    [S_RUN_COMMAND] =
        {
            .name = "run_command",
            .kind = WRK_KIND_EXECUTE,
            .flags = WRK_TOOL_EXECUTES | WRK_TOOL_ASYNC,
            .description =
                "Run a shell command (/bin/sh -c) in the working directory, with no "
                "input "
                "and a clean environment. Returns the exit status and the combined "
                "stdout and stderr (long output keeps its start and end). Background "
                "jobs "
                "are killed when the command ends. Default timeout 120 s.",
            .input_schema =
                "{\"type\":\"object\",\"properties\":{"
                "\"command\":{\"type\":\"string\",\"description\":\"shell command "
                "line\"},"
                "\"timeout_seconds\":{\"type\":\"integer\",\"minimum\":1,\"maximum\":600,"
                "\"description\":\"kill the command after this long (default 120)\"}},"
                "\"required\":[\"command\"],\"additionalProperties\":false}",
        },
};

const wrk_tool_def_t *wrk_tool_find (const char *name)
{
    if (!name) return NULL;
    for (size_t i = 0; i < S_TOOL_COUNT; i++)
        if (strcmp (s_tools[i].name, name) == 0) return &s_tools[i];
    return NULL;
}

const wrk_tool_def_t *wrk_tools_table (size_t *count)
{
    *count = S_TOOL_COUNT;
    return s_tools;
}

const char *wrk_tool_kind_name (wrk_tool_kind_t kind)
{
    switch (kind) {
    case WRK_KIND_READ:
        return "read";
    case WRK_KIND_EDIT:
        return "edit";
    case WRK_KIND_SEARCH:
        return "search";
    case WRK_KIND_EXECUTE:
        return "execute";
    case WRK_KIND_THINK:
        return "think";
    }
    return "other";
}

json_t *wrk_tools_schema (void)
{
    json_t *list = json_array ();
    if (!list) return NULL;
    for (size_t i = 0; i < S_TOOL_COUNT; i++) {
        json_t *schema = json_loads (s_tools[i].input_schema, 0, NULL);
        json_t *row =
            schema ? json_pack ("{s:s, s:s, s:o}", "name", s_tools[i].name, "description",
                                s_tools[i].description, "input_schema", schema)
                   : NULL;
        if (!row || json_array_append_new (list, row)) {
            json_decref (list);
            return NULL;
        }
    }
    return list;
}

//  --------------------------------------------------------------------------
//  Text buffer

//  --------------------------------------------------------------------------
//  Results

void wrk_tool_result_free (wrk_tool_result_t *r)
{
    if (!r) return;
    free (r->content);
    free (r->path);
    free (r->diff);
    free (r->old_text);
    free (r->new_text);
    json_decref (r->plan);
    memset (r, 0, sizeof *r);
}

int wrk_tool_result_error (wrk_tool_result_t *out, const char *message)
{
    memset (out, 0, sizeof *out);
    out->is_error = true;
    out->content = strdup (message ? message : "error");
    return out->content ? 0 : CM_E_NOMEM;
}

static int s_fail (wrk_tool_result_t *out, const char *fmt, ...)
    __attribute__ ((format (printf, 2, 3)));

static int s_fail (wrk_tool_result_t *out, const char *fmt, ...)
{
    va_list args;
    va_start (args, fmt);
    char *text = NULL;
    int n = vasprintf (&text, fmt, args);
    va_end (args);
    if (n < 0) return CM_E_NOMEM;
    free (out->content);
    out->content = text;
    out->is_error = true;
    return 0;
}

//  Hand a built text to the result as its content (made valid UTF-8).
static int s_finish (wrk_tool_result_t *out, cm_strbuf_t *b)
{
    if (b->oom) {
        free (b->p);
        b->p = NULL;
        return CM_E_NOMEM;
    }
    char *text = wrk_utf8_clean (b->p ? b->p : "", b->len, NULL);
    free (b->p);
    b->p = NULL;
    if (!text) return CM_E_NOMEM;
    out->content = text;
    return 0;
}

char *wrk_utf8_clean (const char *text, size_t len, size_t *out_len)
{
    static const char repl[] = "\xEF\xBF\xBD";
    char *out = malloc (len * 3 + 1);
    if (!out) return NULL;
    const unsigned char *s = (const unsigned char *)text;
    size_t o = 0, i = 0;
    while (i < len) {
        unsigned c = s[i];
        size_t n = 0;
        unsigned lo = 0x80, hi = 0xBF; //  range of the second byte
        if (c >= 0x01 && c < 0x80)
            n = 1;
        else if (c >= 0xC2 && c <= 0xDF)
            n = 2;
        else if (c >= 0xE0 && c <= 0xEF) {
            n = 3;
            if (c == 0xE0) lo = 0xA0;
            if (c == 0xED) hi = 0x9F; //  no surrogates
        } else if (c >= 0xF0 && c <= 0xF4) {
            n = 4;
            if (c == 0xF0) lo = 0x90;
            if (c == 0xF4) hi = 0x8F; //  nothing past U+10FFFF
        }
        bool ok = n > 0 && i + n <= len;
        for (size_t k = 1; ok && k < n; k++) {
            unsigned b = s[i + k];
            ok = k == 1 ? (b >= lo && b <= hi) : (b >= 0x80 && b <= 0xBF);
        }
        if (ok) {
            memcpy (out + o, s + i, n);
            o += n;
            i += n;
        } else {
            memcpy (out + o, repl, 3);
            o += 3;
            i++;
        }
    }
    out[o] = '\0';
    if (out_len) *out_len = o;
    return out;
}

//  --------------------------------------------------------------------------
//  Arguments

typedef struct {
    const wrk_scope_t *scope;
    const json_t *args;
    const char *tool;
    wrk_tool_result_t *out;
    char msg[512]; //  the argument error, when a check fails
} s_call_t;

static const char *s_type_name (const json_t *v)
{
    switch (json_typeof (v)) {
    case JSON_OBJECT:
        return "an object";
    case JSON_ARRAY:
        return "an array";
    case JSON_STRING:
        return "a string";
    case JSON_INTEGER:
        return "an integer";
    case JSON_REAL:
        return "a number";
    case JSON_TRUE:
    case JSON_FALSE:
        return "a boolean";
    case JSON_NULL:
        return "null";
    }
    return "something else";
}

static bool s_bad (s_call_t *c, const char *fmt, ...)
    __attribute__ ((format (printf, 2, 3)));

static bool s_bad (s_call_t *c, const char *fmt, ...)
{
    int n = snprintf (c->msg, sizeof c->msg, "%s: ", c->tool);
    va_list args;
    va_start (args, fmt);
    vsnprintf (c->msg + n, sizeof c->msg - (size_t)n, fmt, args);
    va_end (args);
    return false;
}

//  The argument error as the result.
static int s_bad_args (s_call_t *c)
{
    return s_fail (c->out, "%s", c->msg);
}

//  A string argument.  Absent (or null) and optional: *val = NULL.
//  Checks: a string, no NUL byte, at most max bytes, non-empty if nonempty.
static bool s_str (s_call_t *c, const char *key, bool required, bool nonempty, size_t max,
                   const char **val)
{
    const json_t *v = json_object_get (c->args, key);
    *val = NULL;
    if (!v || json_is_null (v)) {
        if (required)
            return s_bad (c, "missing required argument \"%s\" (a string)", key);
        return true;
    }
    if (!json_is_string (v))
        return s_bad (c, "argument \"%s\" must be a string, not %s", key,
                      s_type_name (v));
    size_t len = json_string_length (v);
    const char *s = json_string_value (v);
    if (strlen (s) != len) return s_bad (c, "argument \"%s\" contains a NUL byte", key);
    if (nonempty && len == 0) return s_bad (c, "argument \"%s\" is empty", key);
    if (len > max)
        return s_bad (c, "argument \"%s\" is %zu bytes; the limit is %zu", key, len, max);
    *val = s;
    return true;
}

//  An integer argument in [min, max]; absent: dflt.  A number with an
//  integral value is accepted.
static bool s_int (s_call_t *c, const char *key, long long min, long long max,
                   long long dflt, long long *val)
{
    const json_t *v = json_object_get (c->args, key);
    *val = dflt;
    if (!v || json_is_null (v)) return true;
    long long n;
    double d = json_is_real (v) ? json_real_value (v) : 0.5;
    if (json_is_integer (v))
        n = json_integer_value (v);
    else if (d > -9e18 && d < 9e18 && d == (double)(long long)d) //  range first: no UB
        n = (long long)d;
    else
        return s_bad (c, "argument \"%s\" must be an integer, not %s", key,
                      s_type_name (v));
    if (n < min || n > max)
        return s_bad (c, "argument \"%s\" must be from %lld to %lld, not %lld", key, min,
                      max, n);
    *val = n;
    return true;
}

static bool s_bool (s_call_t *c, const char *key, bool *val)
{
    const json_t *v = json_object_get (c->args, key);
    *val = false;
    if (!v || json_is_null (v)) return true;
    if (!json_is_boolean (v))
        return s_bad (c, "argument \"%s\" must be true or false, not %s", key,
                      s_type_name (v));
    *val = json_is_true (v);
    return true;
}

//  --------------------------------------------------------------------------
//  File helpers

//  Read all of fd (a regular file of known size, at most max bytes) into a
//  new NUL-terminated buffer.  Returns 0, CM_E_NOMEM, or CM_E_IO (errno).
static int s_slurp (int fd, size_t max, char **out, size_t *len)
{
    char *buf = malloc (max + 1);
    if (!buf) return CM_E_NOMEM;
    size_t n = 0;
    for (;;) {
        ssize_t got = pread (fd, buf + n, max + 1 - n, (off_t)n);
        if (got < 0 && errno == EINTR) continue;
        if (got < 0) {
            free (buf);
            return CM_E_IO;
        }
        if (got == 0 || n + (size_t)got > max) {
            if (got > 0) n = max + 1;
            break;
        }
        n += (size_t)got;
    }
    if (n > max) {
        free (buf);
        errno = EFBIG;
        return CM_E_IO;
    }
    buf[n] = '\0';
    *out = buf;
    *len = n;
    return 0;
}

static bool s_binary (const char *data, size_t len)
{
    return memchr (data, '\0', len < WRK_TOOL_BINARY_PROBE ? len : WRK_TOOL_BINARY_PROBE);
}

static size_t s_count_lines (const char *p, size_t len)
{
    size_t n = 0;
    for (size_t i = 0; i < len; i++)
        if (p[i] == '\n') n++;
    return n + (len > 0 && p[len - 1] != '\n');
}

//  Replace fd's content with data.  Returns 0 or errno.
static int s_replace (int fd, const char *data, size_t len)
{
    if (ftruncate (fd, 0)) return errno;
    size_t done = 0;
    while (done < len) {
        ssize_t n = pwrite (fd, data + done, len - done, (off_t)done);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return n < 0 ? errno : EIO;
        done += (size_t)n;
    }
    return 0;
}

//  Open a file the model named; on failure the result says why.  Returns
//  true with *fd and rel filled.
static bool s_open (s_call_t *c, const char *path, int flags, mode_t mode, int *fd,
                    char *rel, int *code)
{
    char err[512];
    *code =
        wrk_path_open (c->scope, path, flags, mode, fd, rel, PATH_MAX, err, sizeof err);
    if (*code == 0) return true;
    snprintf (c->msg, sizeof c->msg, "%s", err);
    return false;
}

//  Check an open file is a regular file; otherwise say what it is.
static bool s_regular (s_call_t *c, int fd, const char *path, struct stat *st)
{
    if (fstat (fd, st)) {
        snprintf (c->msg, sizeof c->msg, "%.200s: %s", path, strerror (errno));
        return false;
    }
    if (S_ISDIR (st->st_mode)) {
        snprintf (c->msg, sizeof c->msg, "%.200s is a directory; use list_dir to see it",
                  path);
        return false;
    }
    if (!S_ISREG (st->st_mode)) {
        snprintf (c->msg, sizeof c->msg, "%.200s is not a regular file", path);
        return false;
    }
    return true;
}

//  --------------------------------------------------------------------------
//  read_file

static int s_read_file (s_call_t *c)
{
    const char *path;
    long long offset, limit;
    if (!s_str (c, "path", true, true, PATH_MAX, &path) ||
        !s_int (c, "offset_line", 1, LLONG_MAX, 1, &offset) ||
        !s_int (c, "limit_lines", 1, LLONG_MAX, LLONG_MAX, &limit))
        return s_bad_args (c);

    char rel[PATH_MAX];
    int fd, code;
    if (!s_open (c, path, O_RDONLY | O_NONBLOCK | O_NOCTTY, 0, &fd, rel, &code))
        return s_bad_args (c);
    struct stat st;
    int rc = 0;
    char *chunk = NULL;
    cm_strbuf_t out = {0};
    if (!s_regular (c, fd, path, &st)) {
        rc = s_bad_args (c);
        goto done;
    }
    char probe[WRK_TOOL_BINARY_PROBE];
    ssize_t got = pread (fd, probe, sizeof probe, 0);
    if (got > 0 && s_binary (probe, (size_t)got)) {
        rc = s_fail (c->out,
                     "%s is a binary file (%lld bytes); read_file shows text files only",
                     rel, (long long)st.st_size);
        goto done;
    }

    //  Stream: skip to offset, keep whole lines up to the byte bound.
    const size_t chunk_size = 64 * 1024;
    chunk = malloc (chunk_size);
    if (!chunk) {
        rc = CM_E_NOMEM;
        goto done;
    }
    long long line = 1, last = 0; //  line being scanned, last line shown whole
    long long end = limit > LLONG_MAX - offset ? LLONG_MAX : offset + limit;
    bool cut = false, more = false, mid_line = false, partial = false;
    size_t line_start = 0; //  where the current line begins in out
    for (;;) {
        ssize_t n = read (fd, chunk, chunk_size);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            rc = s_fail (c->out, "%s: %s", rel, strerror (errno));
            goto done;
        }
        if (n == 0) break;
        const char *p = chunk, *stop = chunk + n;
        while (p < stop) {
            if (line >= end) {
                more = true;
                break;
            }
            const char *nl = memchr (p, '\n', (size_t)(stop - p));
            const char *seg_end = nl ? nl + 1 : stop;
            size_t seg = (size_t)(seg_end - p);
            if (line >= offset) {
                if (out.len + seg > WRK_TOOL_READ_MAX) {
                    if (line_start > 0) {
                        out.len = line_start; //  drop the partial line
                        out.p[out.len] = '\0';
                    } else {
                        cm_strbuf_put (&out, p, WRK_TOOL_READ_MAX - out.len);
                        mid_line = true;
                    }
                    cut = true;
                    break;
                }
                cm_strbuf_put (&out, p, seg);
            }
            p = seg_end;
            partial = !nl;
            if (nl) {
                if (line >= offset) last = line;
                line++;
                line_start = out.len;
            }
        }
        if (cut || more) break;
    }
    //  A last line without '\n' counts as shown when the file ended.
    if (!cut && !more && line_start < out.len) last = line;

    if (out.len == 0 && !cut) {
        if (offset > 1 && !more) {
            long long lines = line - 1 + partial;
            rc = s_fail (c->out, "offset_line %lld is past the end of %s (%lld lines)",
                         offset, rel, lines);
            goto done;
        }
        cm_strbuf_puts (&out, "[empty file]");
    } else if (cut) {
        if (out.len > 0 && out.p[out.len - 1] != '\n') cm_strbuf_put (&out, "\n", 1);
        if (mid_line)
            cm_strbuf_putf (
                &out,
                "[truncated: line %lld is longer than %u KiB; only its start is "
                "shown]",
                offset, WRK_TOOL_READ_MAX / 1024);
        else
            cm_strbuf_putf (&out,
                            "[truncated at %u KiB: showed lines %lld-%lld; continue with "
                            "offset_line=%lld]",
                            WRK_TOOL_READ_MAX / 1024, offset, last, last + 1);
    } else if (more) {
        if (out.len > 0 && out.p[out.len - 1] != '\n') cm_strbuf_put (&out, "\n", 1);
        cm_strbuf_putf (
            &out, "[showed lines %lld-%lld; more follow, continue with offset_line=%lld]",
            offset, last, last + 1);
    }
    out.oom = out.oom || !(c->out->path = strdup (rel));
    rc = s_finish (c->out, &out);
    out.p = NULL;
done:
    free (out.p);
    free (chunk);
    close (fd);
    return rc;
}

//  --------------------------------------------------------------------------
//  write_file and edit_file

//  Shared ending: diff, result fields, and a summary for the model.
//  Takes ownership of old (may be NULL) and of new_text.
static int s_changed (s_call_t *c, const char *rel, bool existed, char *old,
                      size_t old_len, bool have_old, char *new_text, size_t new_len,
                      const char *summary)
{
    wrk_tool_result_t *out = c->out;
    out->path = strdup (rel);
    out->old_text = have_old ? old : NULL;
    if (!have_old) free (old);
    out->new_text = new_text;
    if (have_old || !existed)
        out->diff =
            wrk_diff_unified (rel, existed, old ? old : "", old_len, new_text, new_len);
    if (!out->path || ((have_old || !existed) && !out->diff)) return CM_E_NOMEM;
    cm_strbuf_t b = {0};
    cm_strbuf_puts (&b, summary);
    if (!out->diff)
        cm_strbuf_puts (&b, "\n(no diff: the old content was binary or too large)");
    else if (existed && out->diff[0]) {
        size_t dl = strlen (out->diff);
        if (dl <= WRK_TOOL_DIFF_SHOWN) {
            cm_strbuf_puts (&b, "\n\n");
            cm_strbuf_put (&b, out->diff, dl);
        } else
            cm_strbuf_putf (&b, "\n(diff of %zu bytes not shown)", dl);
    }
    return s_finish (out, &b);
}

static int s_write_file (s_call_t *c)
{
    const char *path, *content;
    if (!s_str (c, "path", true, true, PATH_MAX, &path) ||
        !s_str (c, "content", true, false, WRK_TOOL_FILE_MAX, &content))
        return s_bad_args (c);
    size_t len = strlen (content);
    size_t plen = strlen (path);
    if (path[plen - 1] == '/')
        return s_fail (c->out, "%s names a directory; give a file name", path);

    //  Parent directories first (confined, one component at a time).
    const char *slash = strrchr (path, '/');
    if (slash && slash > path) {
        char parent[PATH_MAX], err[512];
        memcpy (parent, path, (size_t)(slash - path));
        parent[slash - path] = '\0';
        if (wrk_path_mkdirs (c->scope, parent, err, sizeof err))
            return s_fail (c->out, "%s", err);
    }

    char rel[PATH_MAX];
    int fd, code;
    bool existed = true;
    if (!s_open (c, path, O_RDWR | O_NONBLOCK | O_NOCTTY, 0, &fd, rel, &code)) {
        if (code != CM_E_NOT_FOUND) return s_bad_args (c);
        existed = false;
        if (!s_open (c, path, O_RDWR | O_CREAT | O_EXCL | O_NOCTTY, 0666, &fd, rel,
                     &code))
            return s_bad_args (c);
    }
    int rc = 0;
    char *old = NULL, *copy = NULL;
    size_t old_len = 0;
    bool have_old = false;
    struct stat st;
    if (!s_regular (c, fd, path, &st)) {
        rc = s_bad_args (c);
        goto done;
    }
    if (existed && (size_t)st.st_size <= WRK_TOOL_FILE_MAX) {
        rc = s_slurp (fd, WRK_TOOL_FILE_MAX, &old, &old_len);
        if (rc == CM_E_IO) {
            rc = s_fail (c->out, "%s: %s", rel, strerror (errno));
            goto done;
        }
        if (rc) goto done;
        have_old = !s_binary (old, old_len);
    }
    copy = malloc (len + 1);
    if (!copy) {
        rc = CM_E_NOMEM;
        goto done;
    }
    memcpy (copy, content, len + 1);
    int e = s_replace (fd, content, len);
    if (e) {
        rc = s_fail (c->out, "writing %s failed: %s (the file may be incomplete)", rel,
                     strerror (e));
        goto done;
    }
    char summary[PATH_MAX + 128];
    size_t lines = s_count_lines (content, len);
    if (existed && have_old && old_len == len && memcmp (old, content, len) == 0)
        snprintf (summary, sizeof summary, "No change: %s already had this content", rel);
    else
        snprintf (summary, sizeof summary, "%s %s (%zu line%s, %zu bytes)",
                  existed ? "Wrote" : "Created", rel, lines, lines == 1 ? "" : "s", len);
    rc = s_changed (c, rel, existed, old, old_len, have_old, copy, len, summary);
    old = copy = NULL;
done:
    free (old);
    free (copy);
    close (fd);
    return rc;
}

static int s_edit_file (s_call_t *c)
{
    const char *path, *old_text, *new_text;
    bool all;
    if (!s_str (c, "path", true, true, PATH_MAX, &path) ||
        !s_str (c, "old_text", true, false, WRK_TOOL_FILE_MAX, &old_text) ||
        !s_str (c, "new_text", true, false, WRK_TOOL_FILE_MAX, &new_text) ||
        !s_bool (c, "replace_all", &all))
        return s_bad_args (c);
    size_t olen = strlen (old_text), nlen = strlen (new_text);
    if (olen == 0)
        return s_fail (c->out,
                       "edit_file: old_text is empty; to create or replace a whole "
                       "file use write_file");
    if (strcmp (old_text, new_text) == 0)
        return s_fail (c->out,
                       "edit_file: old_text and new_text are the same; nothing to "
                       "change");

    char rel[PATH_MAX];
    int fd, code;
    if (!s_open (c, path, O_RDWR | O_NONBLOCK | O_NOCTTY, 0, &fd, rel, &code)) {
        if (code == CM_E_NOT_FOUND)
            return s_fail (c->out,
                           "%s; edit_file changes existing files (use write_file to "
                           "create one)",
                           c->msg);
        return s_bad_args (c);
    }
    int rc = 0;
    char *old = NULL, *upd = NULL;
    size_t old_len = 0;
    struct stat st;
    if (!s_regular (c, fd, path, &st)) {
        rc = s_bad_args (c);
        goto done;
    }
    if ((size_t)st.st_size > WRK_TOOL_FILE_MAX) {
        rc = s_fail (c->out, "%s is %lld bytes; edit_file works on files up to %u KiB",
                     rel, (long long)st.st_size, WRK_TOOL_FILE_MAX / 1024);
        goto done;
    }
    rc = s_slurp (fd, WRK_TOOL_FILE_MAX, &old, &old_len);
    if (rc == CM_E_IO) {
        rc = s_fail (c->out, "%s: %s", rel, strerror (errno));
        goto done;
    }
    if (rc) goto done;
    if (s_binary (old, old_len)) {
        rc = s_fail (c->out, "%s is a binary file; edit_file changes text files only",
                     rel);
        goto done;
    }

    size_t count = 0;
    for (const char *p = old;
         (p = memmem (p, old_len - (size_t)(p - old), old_text, olen)); p += olen)
        count++;
    if (count == 0) {
        rc = s_fail (c->out,
                     "old_text not found in %s; read the file again and copy the text "
                     "exactly, including whitespace and indentation",
                     rel);
        goto done;
    }
    if (count > 1 && !all) {
        rc = s_fail (c->out,
                     "old_text occurs %zu times in %s; include more surrounding lines to "
                     "make it unique, or set replace_all to true",
                     count, rel);
        goto done;
    }
    //  count * (nlen - olen) cannot overflow: both texts are bounded.
    size_t upd_len = old_len - count * olen + count * nlen;
    if (upd_len > WRK_TOOL_FILE_MAX) {
        rc = s_fail (c->out, "the edit would make %s larger than %u KiB", rel,
                     WRK_TOOL_FILE_MAX / 1024);
        goto done;
    }
    upd = malloc (upd_len + 1);
    if (!upd) {
        rc = CM_E_NOMEM;
        goto done;
    }
    size_t o = 0;
    const char *p = old, *hit;
    while ((hit = memmem (p, old_len - (size_t)(p - old), old_text, olen))) {
        memcpy (upd + o, p, (size_t)(hit - p));
        o += (size_t)(hit - p);
        memcpy (upd + o, new_text, nlen);
        o += nlen;
        p = hit + olen;
        if (!all) break;
    }
    memcpy (upd + o, p, old_len - (size_t)(p - old));
    o += old_len - (size_t)(p - old);
    upd[o] = '\0';

    int e = s_replace (fd, upd, upd_len);
    if (e) {
        rc = s_fail (c->out, "writing %s failed: %s (the file may be incomplete)", rel,
                     strerror (e));
        goto done;
    }
    char summary[PATH_MAX + 64];
    snprintf (summary, sizeof summary, "Edited %s: replaced %zu occurrence%s", rel, count,
              count == 1 ? "" : "s");
    rc = s_changed (c, rel, true, old, old_len, true, upd, upd_len, summary);
    old = upd = NULL;
done:
    free (old);
    free (upd);
    close (fd);
    return rc;
}

//  --------------------------------------------------------------------------
//  The walk shared by list_dir, glob and grep

typedef enum { S_T_FILE = 'f', S_T_DIR = 'd', S_T_LINK = 'l', S_T_OTHER = 'o' } s_type_t;

typedef struct {
    char *name;
    s_type_t type;
} s_entry_t;

static s_type_t s_entry_type (int dirfd, const struct dirent *de)
{
    switch (de->d_type) {
    case DT_REG:
        return S_T_FILE;
    case DT_DIR:
        return S_T_DIR;
    case DT_LNK:
        return S_T_LINK;
    case DT_UNKNOWN:
        break;
    default:
        return S_T_OTHER;
    }
    struct stat st;
    if (fstatat (dirfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW)) return S_T_OTHER;
    if (S_ISREG (st.st_mode)) return S_T_FILE;
    if (S_ISDIR (st.st_mode)) return S_T_DIR;
    if (S_ISLNK (st.st_mode)) return S_T_LINK;
    return S_T_OTHER;
}

static int s_entry_cmp (const void *a, const void *b)
{
    return strcmp (((const s_entry_t *)a)->name, ((const s_entry_t *)b)->name);
}

//  Read a directory's entries (without "." and ".."), sorted by name.  At
//  most room entries are kept; *total counts them all.  Returns the array
//  (caller frees names and array) or NULL with *count 0 (empty, or *oom).
static s_entry_t *s_read_dir (DIR *d, size_t room, size_t *count, size_t *total,
                              bool *oom)
{
    s_entry_t *list = NULL;
    size_t n = 0, cap = 0;
    *total = 0;
    struct dirent *de;
    while ((de = readdir (d))) {
        if (!strcmp (de->d_name, ".") || !strcmp (de->d_name, "..")) continue;
        (*total)++;
        if (n >= room) continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 64;
            s_entry_t *more = realloc (list, cap * sizeof *list);
            if (!more) {
                *oom = true;
                break;
            }
            list = more;
        }
        list[n].name = strdup (de->d_name);
        if (!list[n].name) {
            *oom = true;
            break;
        }
        list[n].type = s_entry_type (dirfd (d), de);
        n++;
    }
    if (n) qsort (list, n, sizeof *list, s_entry_cmp);
    *count = n;
    return list;
}

static void s_free_entries (s_entry_t *list, size_t n)
{
    for (size_t i = 0; i < n; i++) free (list[i].name);
    free (list);
}

typedef struct s_walk_s s_walk_t;
struct s_walk_s {
    //  Called for every entry; rel is its path below the start.  For a
    //  directory, the returned state is passed to its entries; 0 means do
    //  not descend.  Set w->stop to end the walk.
    uint64_t (*visit) (s_walk_t *w, int dirfd, const s_entry_t *e, uint64_t state);
    void *ctx;
    size_t seen;   //  entries read so far
    bool stop;     //  the visitor is done
    bool capped;   //  WRK_TOOL_WALK_MAX entries read
    bool too_deep; //  a directory below WRK_TOOL_WALK_DEPTH was not entered
    bool oom;
    size_t rel_len;
    char rel[PATH_MAX];
};

//  Walk the directory open as fd (taken over and closed).
static void s_walk (s_walk_t *w, int fd, int depth, uint64_t state)
{
    DIR *d = fdopendir (fd);
    if (!d) {
        close (fd);
        return;
    }
    size_t n, total;
    size_t room = WRK_TOOL_WALK_MAX - w->seen;
    s_entry_t *list = s_read_dir (d, room, &n, &total, &w->oom);
    w->seen += n;
    if (total > n) w->capped = true;
    size_t base = w->rel_len;
    for (size_t i = 0; i < n && !w->stop && !w->oom; i++) {
        s_entry_t *e = &list[i];
        if (e->type == S_T_DIR && !strcmp (e->name, ".git")) continue;
        size_t nl = strlen (e->name);
        if (base + 1 + nl >= sizeof w->rel) continue;
        if (base) w->rel[base] = '/';
        memcpy (w->rel + base + (base > 0), e->name, nl + 1);
        w->rel_len = base + (base > 0) + nl;
        uint64_t child = w->visit (w, dirfd (d), e, state);
        if (e->type == S_T_DIR && child && !w->stop) {
            if (depth + 1 > WRK_TOOL_WALK_DEPTH)
                w->too_deep = true;
            else {
                //  One component from readdir, never a link: stays beneath.
                int cfd = openat (dirfd (d), e->name,
                                  O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                if (cfd >= 0) s_walk (w, cfd, depth + 1, child);
            }
        }
        w->rel_len = base;
        w->rel[base] = '\0';
    }
    s_free_entries (list, n);
    closedir (d);
}

//  How results name a found entry: the path argument as given joined
//  with the entry's path below it, so the model can pass it on.
static void s_display (cm_strbuf_t *b, const char *base, const char *rel)
{
    size_t bl = strlen (base);
    while (bl > 1 && base[bl - 1] == '/') bl--;
    if (!(bl == 1 && base[0] == '.')) {
        cm_strbuf_put (b, base, bl);
        if (base[bl - 1] != '/') cm_strbuf_put (b, "/", 1);
    }
    cm_strbuf_puts (b, rel);
}

//  --------------------------------------------------------------------------
//  list_dir

static int s_list_dir (s_call_t *c)
{
    const char *path;
    if (!s_str (c, "path", false, true, PATH_MAX, &path)) return s_bad_args (c);
    if (!path) path = ".";
    char rel[PATH_MAX];
    int fd, code;
    if (!s_open (c, path, O_RDONLY | O_DIRECTORY | O_NONBLOCK, 0, &fd, rel, &code))
        return s_bad_args (c);
    DIR *d = fdopendir (fd);
    if (!d) {
        close (fd);
        return s_fail (c->out, "%s: %s", path, strerror (errno));
    }
    size_t n, total;
    bool oom = false;
    s_entry_t *list = s_read_dir (d, WRK_TOOL_WALK_MAX, &n, &total, &oom);
    closedir (d);
    cm_strbuf_t b = {0};
    b.oom = oom;
    size_t shown = n < WRK_TOOL_LIST_MAX ? n : WRK_TOOL_LIST_MAX;
    for (size_t i = 0; i < shown; i++) {
        cm_strbuf_puts (&b, list[i].name);
        switch (list[i].type) {
        case S_T_DIR:
            cm_strbuf_put (&b, "/", 1);
            break;
        case S_T_LINK:
            cm_strbuf_put (&b, "@", 1);
            break;
        default:
            break;
        }
        cm_strbuf_put (&b, "\n", 1);
    }
    if (total == 0)
        cm_strbuf_puts (&b, "[empty directory]");
    else if (total > shown)
        cm_strbuf_putf (&b, "[%zu more entries not shown; %zu in all]", total - shown,
                        total);
    else if (b.len)
        b.p[--b.len] = '\0'; //  no trailing newline
    s_free_entries (list, n);
    b.oom = b.oom || !(c->out->path = strdup (rel));
    return s_finish (c->out, &b);
}

//  --------------------------------------------------------------------------
//  Glob matching: pattern components against path components, "**" for
//  any number of components.  The state of a walk position is the set of
//  pattern prefixes that match the path so far (bit i: the first i
//  components), so each entry costs one fnmatch per component.

#define S_GLOB_PARTS 63

typedef struct {
    char *parts[S_GLOB_PARTS];
    size_t n;
    char *store;
} s_glob_t;

static void s_glob_free (s_glob_t *g)
{
    free (g->store);
    memset (g, 0, sizeof *g);
}

//  Split pattern; on a bad one, return false with the reason in c->msg.
static bool s_glob_parse (s_call_t *c, const char *key, const char *pattern, s_glob_t *g)
{
    memset (g, 0, sizeof *g);
    if (pattern[0] == '/')
        return s_bad (c, "%s must be relative (put the directory in \"path\")", key);
    g->store = strdup (pattern);
    if (!g->store) return s_bad (c, "out of memory");
    for (char *save = NULL, *p = strtok_r (g->store, "/", &save); p;
         p = strtok_r (NULL, "/", &save)) {
        if (!strcmp (p, ".")) continue;
        if (!strcmp (p, ".."))
            return s_bad (c, "%s may not contain \"..\" (put the directory in \"path\")",
                          key);
        if (!strcmp (p, "**") && g->n && !strcmp (g->parts[g->n - 1], "**")) continue;
        if (g->n == S_GLOB_PARTS)
            return s_bad (c, "%s has more than %d components", key, S_GLOB_PARTS);
        g->parts[g->n++] = p;
    }
    if (g->n == 0) return s_bad (c, "%s matches nothing", key);
    return true;
}

static bool s_is_star2 (const char *part)
{
    return part[0] == '*' && part[1] == '*' && part[2] == '\0';
}

static uint64_t s_glob_start (const s_glob_t *g)
{
    uint64_t s = 1;
    for (size_t i = 1; i <= g->n && s_is_star2 (g->parts[i - 1]); i++) s |= 1ull << i;
    return s;
}

static uint64_t s_glob_step (const s_glob_t *g, uint64_t s, const char *name)
{
    uint64_t t = 0;
    for (size_t i = 1; i <= g->n; i++) {
        if (s_is_star2 (g->parts[i - 1])) {
            if ((t >> (i - 1) & 1) || (s >> i & 1)) t |= 1ull << i;
        } else if ((s >> (i - 1) & 1) && fnmatch (g->parts[i - 1], name, 0) == 0)
            t |= 1ull << i;
    }
    return t;
}

static bool s_glob_full (const s_glob_t *g, uint64_t s)
{
    return s >> g->n & 1;
}

//  May an entry below a directory in state s still match?
static bool s_glob_deeper (const s_glob_t *g, uint64_t s)
{
    uint64_t below = g->n < 64 ? s & ((1ull << g->n) - 1) : s;
    return below || (s_glob_full (g, s) && s_is_star2 (g->parts[g->n - 1]));
}

//  Does a relative path match (for grep's glob filter with a '/')?
static bool s_glob_path (const s_glob_t *g, const char *rel)
{
    uint64_t s = s_glob_start (g);
    char comp[NAME_MAX + 1];
    while (*rel && s) {
        size_t n = strcspn (rel, "/");
        if (n > NAME_MAX) return false;
        memcpy (comp, rel, n);
        comp[n] = '\0';
        s = s_glob_step (g, s, comp);
        rel += n;
        while (*rel == '/') rel++;
    }
    return s_glob_full (g, s);
}

//  --------------------------------------------------------------------------
//  glob

typedef struct {
    const s_glob_t *glob;
    char **found;
    size_t count;
    bool full; //  WRK_TOOL_GLOB_MAX results found
} s_glob_ctx_t;

static uint64_t s_glob_visit (s_walk_t *w, int dirfd, const s_entry_t *e, uint64_t state)
{
    s_glob_ctx_t *g = w->ctx;
    uint64_t s = s_glob_step (g->glob, state, e->name);
    if (s_glob_full (g->glob, s)) {
        if (g->count == WRK_TOOL_GLOB_MAX) {
            g->full = true;
            w->stop = true;
            return 0;
        }
        size_t len = w->rel_len + (e->type == S_T_DIR);
        char *hit = malloc (len + 1);
        if (!hit) {
            w->oom = true;
            return 0;
        }
        memcpy (hit, w->rel, w->rel_len);
        if (e->type == S_T_DIR) hit[len - 1] = '/';
        hit[len] = '\0';
        g->found[g->count++] = hit;
    }
    return s_glob_deeper (g->glob, s) ? s : 0;
}

static int s_strp_cmp (const void *a, const void *b)
{
    return strcmp (*(char *const *)a, *(char *const *)b);
}

static int s_glob (s_call_t *c)
{
    const char *pattern, *path;
    if (!s_str (c, "pattern", true, true, WRK_TOOL_PATTERN_MAX, &pattern) ||
        !s_str (c, "path", false, true, PATH_MAX, &path))
        return s_bad_args (c);
    if (!path) path = ".";
    s_glob_t glob;
    if (!s_glob_parse (c, "pattern", pattern, &glob)) {
        s_glob_free (&glob);
        return s_bad_args (c);
    }
    char rel[PATH_MAX];
    int fd, code, rc;
    if (!s_open (c, path, O_RDONLY | O_DIRECTORY | O_NONBLOCK, 0, &fd, rel, &code)) {
        s_glob_free (&glob);
        return s_bad_args (c);
    }
    s_glob_ctx_t g = {.glob = &glob,
                      .found = calloc (WRK_TOOL_GLOB_MAX, sizeof (char *))};
    s_walk_t *w = calloc (1, sizeof *w);
    cm_strbuf_t b = {0};
    if (!g.found || !w) {
        close (fd);
        rc = CM_E_NOMEM;
        goto done;
    }
    w->visit = s_glob_visit;
    w->ctx = &g;
    s_walk (w, fd, 0, s_glob_start (&glob));
    if (w->oom) {
        rc = CM_E_NOMEM;
        goto done;
    }
    qsort (g.found, g.count, sizeof *g.found, s_strp_cmp);
    for (size_t i = 0; i < g.count; i++) {
        s_display (&b, path, g.found[i]);
        cm_strbuf_put (&b, "\n", 1);
    }
    if (g.count == 0) cm_strbuf_putf (&b, "No files match %s in %s\n", pattern, path);
    if (g.full)
        cm_strbuf_putf (&b,
                        "[stopped after %d results; narrow the pattern or the path]\n",
                        WRK_TOOL_GLOB_MAX);
    if (w->capped)
        cm_strbuf_putf (&b, "[stopped after reading %d entries; narrow the path]\n",
                        WRK_TOOL_WALK_MAX);
    if (w->too_deep)
        cm_strbuf_putf (&b, "[directories deeper than %d levels were not searched]\n",
                        WRK_TOOL_WALK_DEPTH);
    if (b.len) b.p[--b.len] = '\0';
    rc = s_finish (c->out, &b);
    b.p = NULL;
done:
    free (b.p);
    for (size_t i = 0; g.found && i < g.count; i++) free (g.found[i]);
    free (g.found);
    free (w);
    s_glob_free (&glob);
    return rc;
}

//  --------------------------------------------------------------------------
//  grep

typedef struct {
    regex_t re;
    const s_glob_t *filter; //  NULL: every file
    bool filter_path;       //  the filter has a '/': match the whole rel path
    const char *base;       //  the path argument, for display
    cm_strbuf_t out;
    size_t matches, files, skipped_large;
    bool full;
} s_grep_ctx_t;

//  Search one open regular file; display name is base joined with rel
//  (rel NULL: base alone).  Takes over fd.
static void s_grep_fd (s_grep_ctx_t *g, int fd, const char *rel, bool *stop, bool *oom)
{
    struct stat st;
    char *data = NULL;
    size_t len = 0;
    if (fstat (fd, &st) || !S_ISREG (st.st_mode)) goto done;
    if ((size_t)st.st_size > WRK_TOOL_GREP_FILE) {
        g->skipped_large++;
        goto done;
    }
    int rc = s_slurp (fd, WRK_TOOL_GREP_FILE, &data, &len);
    if (rc == CM_E_NOMEM) *oom = true;
    if (rc || s_binary (data, len)) goto done;
    bool counted = false;
    size_t lineno = 0;
    for (char *p = data; p < data + len && !*stop;) {
        char *nl = memchr (p, '\n', (size_t)(data + len - p));
        char *end = nl ? nl : data + len;
        *end = '\0';
        lineno++;
        if (regexec (&g->re, p, 0, NULL, 0) == 0) {
            if (g->matches == WRK_TOOL_GREP_MAX) {
                g->full = true;
                *stop = true;
                break;
            }
            g->matches++;
            if (!counted) g->files++, counted = true;
            size_t l = (size_t)(end - p);
            if (l > 0 && p[l - 1] == '\r') l--;
            if (rel)
                s_display (&g->out, g->base, rel);
            else
                cm_strbuf_puts (&g->out, g->base);
            cm_strbuf_putf (&g->out, ":%zu:", lineno);
            if (l > WRK_TOOL_GREP_LINE) {
                cm_strbuf_put (&g->out, p, WRK_TOOL_GREP_LINE);
                cm_strbuf_puts (&g->out, "…");
            } else
                cm_strbuf_put (&g->out, p, l);
            cm_strbuf_put (&g->out, "\n", 1);
        }
        p = end + 1;
    }
    if (g->out.oom) *oom = true;
done:
    free (data);
    close (fd);
}

static uint64_t s_grep_visit (s_walk_t *w, int dirfd, const s_entry_t *e, uint64_t state)
{
    s_grep_ctx_t *g = w->ctx;
    if (e->type == S_T_DIR) return 1;
    if (e->type != S_T_FILE) return 0; //  links are not followed
    if (g->filter) {
        bool ok = g->filter_path ? s_glob_path (g->filter, w->rel)
                                 : fnmatch (g->filter->parts[0], e->name, 0) == 0;
        if (!ok) return 0;
    }
    int fd = openat (dirfd, e->name,
                     O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
    if (fd >= 0) s_grep_fd (g, fd, w->rel, &w->stop, &w->oom);
    return 0;
}

static int s_grep (s_call_t *c)
{
    const char *pattern, *path, *filter;
    bool icase;
    if (!s_str (c, "pattern", true, true, WRK_TOOL_PATTERN_MAX, &pattern) ||
        !s_str (c, "path", false, true, PATH_MAX, &path) ||
        !s_str (c, "glob", false, true, WRK_TOOL_PATTERN_MAX, &filter) ||
        !s_bool (c, "ignore_case", &icase))
        return s_bad_args (c);
    if (!path) path = ".";
    s_glob_t glob = {0};
    if (filter && !s_glob_parse (c, "glob", filter, &glob)) {
        s_glob_free (&glob);
        return s_bad_args (c);
    }
    s_grep_ctx_t g = {.filter = filter ? &glob : NULL,
                      .filter_path = filter && strchr (filter, '/'),
                      .base = path};
    int flags = REG_EXTENDED | REG_NOSUB | REG_NEWLINE | (icase ? REG_ICASE : 0);
    int rerr = regcomp (&g.re, pattern, flags);
    if (rerr) {
        char why[256];
        regerror (rerr, &g.re, why, sizeof why);
        s_glob_free (&glob);
        return s_fail (c->out, "grep: invalid regular expression: %s", why);
    }
    char rel[PATH_MAX];
    int fd, code, rc = 0;
    s_walk_t *w = NULL;
    if (!s_open (c, path, O_RDONLY | O_NONBLOCK | O_NOCTTY, 0, &fd, rel, &code)) {
        rc = s_bad_args (c);
        goto done;
    }
    struct stat st;
    if (fstat (fd, &st)) {
        rc = s_fail (c->out, "%s: %s", path, strerror (errno));
        close (fd);
        goto done;
    }
    w = calloc (1, sizeof *w);
    if (!w) {
        close (fd);
        rc = CM_E_NOMEM;
        goto done;
    }
    if (S_ISDIR (st.st_mode)) {
        w->visit = s_grep_visit;
        w->ctx = &g;
        s_walk (w, fd, 0, 1);
    } else if (S_ISREG (st.st_mode))
        s_grep_fd (&g, fd, NULL, &w->stop, &w->oom);
    else {
        close (fd);
        rc = s_fail (c->out, "%s is not a regular file or directory", path);
        goto done;
    }
    if (w->oom || g.out.oom) {
        rc = CM_E_NOMEM;
        goto done;
    }
    if (g.matches == 0)
        cm_strbuf_putf (&g.out, "No matches for %s in %s\n", pattern, path);
    else if (g.full)
        cm_strbuf_putf (&g.out,
                        "[stopped after %d matching lines; narrow the pattern or path]\n",
                        WRK_TOOL_GREP_MAX);
    else
        cm_strbuf_putf (&g.out, "[%zu matching line%s in %zu file%s]\n", g.matches,
                        g.matches == 1 ? "" : "s", g.files, g.files == 1 ? "" : "s");
    if (g.skipped_large)
        cm_strbuf_putf (&g.out, "[%zu file%s larger than %u MiB skipped]\n",
                        g.skipped_large, g.skipped_large == 1 ? "" : "s",
                        WRK_TOOL_GREP_FILE >> 20);
    if (w->capped)
        cm_strbuf_putf (&g.out, "[stopped after reading %d entries; narrow the path]\n",
                        WRK_TOOL_WALK_MAX);
    if (w->too_deep)
        cm_strbuf_putf (&g.out, "[directories deeper than %d levels were not searched]\n",
                        WRK_TOOL_WALK_DEPTH);
    if (g.out.len) g.out.p[--g.out.len] = '\0';
    rc = s_finish (c->out, &g.out);
    g.out.p = NULL;
done:
    free (g.out.p);
    free (w);
    regfree (&g.re);
    s_glob_free (&glob);
    return rc;
}

//  --------------------------------------------------------------------------
//  update_plan

static bool s_one_of (const char *s, const char *const *words)
{
    for (; *words; words++)
        if (!strcmp (s, *words)) return true;
    return false;
}

static int s_update_plan (s_call_t *c)
{
    static const char *const statuses[] = {"pending", "in_progress", "completed", NULL};
    static const char *const priorities[] = {"high", "medium", "low", NULL};
    const json_t *entries = json_object_get (c->args, "entries");
    if (!entries)
        return s_fail (c->out, "update_plan: missing required argument \"entries\" (an "
                               "array of {content, status, priority?})");
    if (!json_is_array (entries))
        return s_fail (c->out,
                       "update_plan: argument \"entries\" must be an array, not %s",
                       s_type_name (entries));
    size_t n = json_array_size (entries);
    if (n > WRK_TOOL_PLAN_MAX)
        return s_fail (c->out, "update_plan: %zu entries; the limit is %d", n,
                       WRK_TOOL_PLAN_MAX);
    json_t *plan = json_array ();
    cm_strbuf_t b = {0};
    if (!plan) return CM_E_NOMEM;
    size_t done = 0;
    for (size_t i = 0; i < n; i++) {
        const json_t *e = json_array_get (entries, i);
        char key[48];
        snprintf (key, sizeof key, "entries[%zu]", i);
        if (!json_is_object (e)) {
            json_decref (plan);
            free (b.p);
            return s_fail (c->out, "update_plan: %s must be an object, not %s", key,
                           s_type_name (e));
        }
        s_call_t sub = {.args = e, .tool = c->tool};
        const char *content, *status, *priority;
        bool ok = s_str (&sub, "content", true, true, WRK_TOOL_PLAN_TEXT, &content) &&
                  s_str (&sub, "status", true, true, 32, &status) &&
                  s_str (&sub, "priority", false, true, 32, &priority);
        if (ok && !s_one_of (status, statuses))
            ok = s_bad (&sub,
                        "status \"%.32s\" is not one of pending, in_progress, completed",
                        status);
        if (ok && priority && !s_one_of (priority, priorities))
            ok = s_bad (&sub, "priority \"%.32s\" is not one of high, medium, low",
                        priority);
        if (!ok) {
            json_decref (plan);
            free (b.p);
            //  sub.msg starts with "update_plan: "; name the entry after it.
            size_t skip = strlen (c->tool) + 2;
            return s_fail (c->out, "%s: %s: %s", c->tool, key, sub.msg + skip);
        }
        if (!priority) priority = "medium";
        if (!strcmp (status, "completed")) done++;
        if (json_array_append_new (plan,
                                   json_pack ("{s:s, s:s, s:s}", "content", content,
                                              "priority", priority, "status", status))) {
            json_decref (plan);
            free (b.p);
            return CM_E_NOMEM;
        }
        const char *mark = !strcmp (status, "completed")     ? "[x]"
                           : !strcmp (status, "in_progress") ? "[>]"
                                                             : "[ ]";
        cm_strbuf_putf (&b, "\n%s %s", mark, content);
    }
    cm_strbuf_t head = {0};
    cm_strbuf_putf (&head, "Plan updated (%zu of %zu completed):", done, n);
    if (b.p) cm_strbuf_put (&head, b.p, b.len);
    free (b.p);
    c->out->plan = plan;
    return s_finish (c->out, &head);
}

//  --------------------------------------------------------------------------
//  run_command arguments

int wrk_tool_command_args (const json_t *args, const char **command, int64_t *timeout_ms,
                           wrk_tool_result_t *out)
{
    memset (out, 0, sizeof *out);
    *command = NULL;
    *timeout_ms = 0;
    s_call_t c = {.args = args, .tool = "run_command", .out = out};
    if (!json_is_object (args))
        return s_fail (out, "run_command: arguments must be a JSON object")
                   ? CM_E_NOMEM
                   : CM_E_INVALID;
    long long secs;
    const char *cmd;
    if (!s_str (&c, "command", true, true, WRK_TOOL_COMMAND_MAX, &cmd) ||
        !s_int (&c, "timeout_seconds", 1, 600, 0, &secs))
        return s_bad_args (&c) ? CM_E_NOMEM : CM_E_INVALID;
    const char *p = cmd;
    while (*p && isspace ((unsigned char)*p)) p++;
    if (!*p)
        return s_fail (out, "run_command: argument \"command\" is blank") ? CM_E_NOMEM
                                                                          : CM_E_INVALID;
    *command = cmd;
    *timeout_ms = secs * 1000;
    return 0;
}

//  --------------------------------------------------------------------------
//  Describe

//  The lexical, root-relative form of a path (see wrk_tool_describe).
static int s_target_path (const wrk_scope_t *scope, const char *path, char *out,
                          size_t len)
{
    char abs[2 * PATH_MAX + 2], norm[2 * PATH_MAX + 2];
    if (!scope || (path[0] != '/' && (!scope->cwd || scope->cwd[0] != '/'))) {
        if (strlen (path) >= len) return CM_E_TOO_LARGE;
        strcpy (out, path);
        return 0;
    }
    if (path[0] == '/')
        snprintf (abs, sizeof abs, "%.*s", PATH_MAX, path);
    else
        snprintf (abs, sizeof abs, "%.*s/%.*s", PATH_MAX, scope->cwd, PATH_MAX, path);
    //  Normalise: drop "." and empty components, let ".." remove one.
    size_t n = 0;
    norm[0] = '\0';
    for (char *save = NULL, *p = strtok_r (abs, "/", &save); p;
         p = strtok_r (NULL, "/", &save)) {
        if (!strcmp (p, ".")) continue;
        if (!strcmp (p, "..")) {
            while (n > 0 && norm[n - 1] != '/') n--;
            if (n > 0) n--;
            norm[n] = '\0';
            continue;
        }
        n += (size_t)snprintf (norm + n, sizeof norm - n, "/%s", p);
    }
    if (n == 0) strcpy (norm, "/");
    //  The longest root that contains it, component-wise.
    const char *best = NULL;
    size_t best_len = 0;
    for (size_t i = 0; i < scope->count && i < WRK_PATH_MAX_ROOTS; i++) {
        const char *r = scope->roots[i];
        if (!r) continue;
        size_t rl = strlen (r);
        while (rl > 1 && r[rl - 1] == '/') rl--;
        bool inside = (rl == 1 && r[0] == '/') || (strncmp (norm, r, rl) == 0 &&
                                                   (norm[rl] == '/' || norm[rl] == '\0'));
        if (inside && (!best || rl > best_len)) best = r, best_len = rl;
    }
    const char *shown = norm;
    if (best) {
        shown = norm + (best_len == 1 ? 1 : best_len);
        while (*shown == '/') shown++;
        if (!*shown) shown = ".";
    }
    if (strlen (shown) >= len) return CM_E_TOO_LARGE;
    strcpy (out, shown);
    return 0;
}

//  Copy text into a title: control characters become spaces, and past
//  max bytes it is cut (at a UTF-8 boundary) with "…".
static void s_title_text (char *dst, size_t dlen, const char *text, size_t max)
{
    size_t n = strlen (text);
    bool cut = n > max;
    if (cut) {
        n = max;
        while (n > 0 && ((unsigned char)text[n] & 0xC0) == 0x80) n--;
    }
    size_t o = strlen (dst);
    for (size_t i = 0; i < n && o + 1 < dlen; i++)
        dst[o++] = (unsigned char)text[i] < 0x20 ? ' ' : text[i];
    dst[o] = '\0';
    if (cut && o + 4 <= dlen) strcat (dst, "…");
}

static void s_title (char *title, size_t tlen, const char *verb, const char *what,
                     size_t max)
{
    if (!tlen) return;
    snprintf (title, tlen, "%s", verb);
    s_title_text (title, tlen, what, max);
}

int wrk_tool_describe (const wrk_scope_t *scope, const char *name, const json_t *args,
                       char *title, size_t tlen, char *target, size_t glen)
{
    static const char *const generic[S_TOOL_COUNT] = {
        [S_READ_FILE] = "Read file",     [S_WRITE_FILE] = "Write file",
        [S_EDIT_FILE] = "Edit file",     [S_LIST_DIR] = "List directory",
        [S_GLOB] = "Find files",         [S_GREP] = "Search files",
        [S_UPDATE_PLAN] = "Update plan", [S_RUN_COMMAND] = "Run command",
    };
    if (glen) target[0] = '\0';
    if (tlen) title[0] = '\0';
    const wrk_tool_def_t *def = wrk_tool_find (name);
    if (!def) {
        s_title (title, tlen, "Unknown tool ", name ? name : "(none)", 60);
        return CM_E_NOT_FOUND;
    }
    s_tool_id_t id = (s_tool_id_t)(def - s_tools);
    if (tlen) snprintf (title, tlen, "%s", generic[id]);
    if (!json_is_object (args)) return CM_E_INVALID;
    s_call_t c = {.args = args, .tool = def->name};
    const char *path = NULL, *pattern = NULL, *command = NULL;
    char shown[PATH_MAX];
    int rc = 0;
    switch (id) {
    case S_READ_FILE:
    case S_WRITE_FILE:
    case S_EDIT_FILE:
        if (!s_str (&c, "path", true, true, PATH_MAX, &path)) return CM_E_INVALID;
        break;
    case S_LIST_DIR:
    case S_GLOB:
    case S_GREP:
        if (!s_str (&c, "path", false, true, PATH_MAX, &path)) return CM_E_INVALID;
        if (id != S_LIST_DIR &&
            !s_str (&c, "pattern", true, true, WRK_TOOL_PATTERN_MAX, &pattern))
            return CM_E_INVALID;
        if (!path) path = ".";
        break;
    case S_RUN_COMMAND:
        if (!s_str (&c, "command", true, true, WRK_TOOL_COMMAND_MAX, &command))
            return CM_E_INVALID;
        break;
    default:
        break;
    }
    if (path) {
        rc = s_target_path (scope, path, shown, sizeof shown);
        if (rc) return rc;
    }
    switch (id) {
    case S_READ_FILE:
        s_title (title, tlen, "Read ", shown, 200);
        break;
    case S_WRITE_FILE:
        s_title (title, tlen, "Write ", shown, 200);
        break;
    case S_EDIT_FILE:
        s_title (title, tlen, "Edit ", shown, 200);
        break;
    case S_LIST_DIR:
        s_title (title, tlen, "List ", shown, 200);
        break;
    case S_GLOB:
        s_title (title, tlen, "Find ", pattern, 100);
        if (strcmp (shown, ".") != 0) {
            s_title_text (title, tlen, " in ", 4);
            s_title_text (title, tlen, shown, 200);
        }
        break;
    case S_GREP:
        s_title (title, tlen, "Search for `", pattern, 60);
        s_title_text (title, tlen, "`", 1);
        if (strcmp (shown, ".") != 0) {
            s_title_text (title, tlen, " in ", 4);
            s_title_text (title, tlen, shown, 200);
        }
        break;
    case S_RUN_COMMAND:
        s_title (title, tlen, "Run `", command, 60);
        s_title_text (title, tlen, "`", 1);
        if (strlen (command) >= glen) return CM_E_TOO_LARGE;
        strcpy (target, command);
        return 0;
    default:
        return 0;
    }
    if (strlen (shown) >= glen) return CM_E_TOO_LARGE;
    strcpy (target, shown);
    return 0;
}

//  --------------------------------------------------------------------------
//  Dispatcher

typedef int (*s_handler_t) (s_call_t *c);

static const s_handler_t s_handlers[S_TOOL_COUNT] = {
    [S_READ_FILE] = s_read_file,
    [S_WRITE_FILE] = s_write_file,
    [S_EDIT_FILE] = s_edit_file,
    [S_LIST_DIR] = s_list_dir,
    [S_GLOB] = s_glob,
    [S_GREP] = s_grep,
    [S_UPDATE_PLAN] = s_update_plan,
    [S_RUN_COMMAND] = NULL,
};

int wrk_tool_run (const wrk_scope_t *scope, const char *name, const json_t *args,
                  wrk_tool_result_t *out)
{
    if (!scope || !out) return CM_E_INVALID;
    memset (out, 0, sizeof *out);
    const wrk_tool_def_t *def = wrk_tool_find (name);
    int rc;
    if (!def) {
        cm_strbuf_t b = {0};
        cm_strbuf_putf (&b, "unknown tool \"%.100s\"; the tools are:", name ? name : "");
        for (size_t i = 0; i < S_TOOL_COUNT; i++)
            cm_strbuf_putf (&b, "%s %s", i ? "," : "", s_tools[i].name);
        rc = s_finish (out, &b);
        out->is_error = true;
    } else if (def->flags & WRK_TOOL_ASYNC)
        return CM_E_INVALID;
    else if (!json_is_object (args))
        rc = s_fail (out, "%s: arguments must be a JSON object, not %s", def->name,
                     args ? s_type_name (args) : "nothing");
    else {
        s_call_t c = {.scope = scope, .args = args, .tool = def->name, .out = out};
        rc = s_handlers[def - s_tools](&c);
    }
    if (rc) wrk_tool_result_free (out);
    return rc;
}
