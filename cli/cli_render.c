/*  cli_render.c - shared reading of ACP messages for tail and chat
    (cli_render.h).
*/
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cli_render.h"

const char *cli_render_str (const json_t *o, const char *key)
{
    const char *s = json_string_value (json_object_get (o, key));
    return s ? s : "";
}

const char *cli_render_plan_mark (const char *status)
{
    if (!status) return " ";
    return !strcmp (status, "completed")     ? "x"
           : !strcmp (status, "in_progress") ? ">"
                                             : " ";
}

const char *cli_render_tool_text (const json_t *content)
{
    size_t i;
    json_t *c;
    json_array_foreach (content, i, c)
    {
        const char *t =
            json_string_value (json_object_get (json_object_get (c, "content"), "text"));
        if (t) return t;
    }
    return NULL;
}

//  Bytes at p (n left) that a terminal must not get: 0 (fine), 1 (a C0
//  control other than newline and tab, or DEL) or 2 (a C1 control in UTF-8).
static size_t s_control (const unsigned char *p, size_t n)
{
    if ((p[0] < 0x20 && p[0] != '\n' && p[0] != '\t') || p[0] == 0x7f) return 1;
    if (p[0] == 0xc2 && n > 1 && p[1] >= 0x80 && p[1] <= 0x9f) return 2;
    return 0;
}

//  Replace the controls in p[0..n) with '?' into q (q may be p); returns
//  the new length.
static size_t s_clean (unsigned char *q, const unsigned char *p, size_t n)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        size_t bad = s_control (p + i, n - i);
        if (bad) {
            q[k++] = '?';
            i += bad - 1;
        } else
            q[k++] = p[i];
    }
    return k;
}

void cli_render_clean (json_t *value)
{
    if (json_is_string (value)) {
        const unsigned char *p = (const unsigned char *)json_string_value (value);
        size_t n = json_string_length (value), i = 0;
        while (i < n && !s_control (p + i, n - i)) i++;
        if (i == n) return;
        unsigned char *q = malloc (n + 1);
        if (!q) return;
        json_string_setn (value, (const char *)q, s_clean (q, p, n));
        free (q);
    } else if (json_is_object (value)) {
        const char *key;
        json_t *v;
        json_object_foreach (value, key, v) cli_render_clean (v);
    } else if (json_is_array (value)) {
        size_t i;
        json_t *v;
        json_array_foreach (value, i, v) cli_render_clean (v);
    }
}

char *cli_render_clean_line (char *s)
{
    size_t k = s_clean ((unsigned char *)s, (const unsigned char *)s, strlen (s));
    s[k] = '\0';
    return s;
}

size_t cli_render_cut (const char *s, size_t n, size_t max)
{
    if (n <= max) return n;
    size_t k = max;
    //  Back over continuation bytes (10xxxxxx) to the character's start.
    while (k > 0 && ((unsigned char)s[k] & 0xc0) == 0x80) k--;
    return k;
}

int cli_render_exit_code (const json_t *error)
{
    json_int_t code = json_integer_value (json_object_get (error, "code"));
    if (code == -32602) return CLI_USAGE;
    if (code == -32000 || code == -32002 || code == -32005) return CLI_REFUSED;
    if (code == -32011) return CLI_UNREACHABLE;
    return CLI_FAIL;
}
