/*  wrk_diff.c - unified diff (see wrk_diff.h).

    Steps: split both texts into lines (each keeps its '\n'), cut the
    common prefix and suffix, run Myers' greedy forward search on the
    middle keeping each round's V window for the backtrack, turn the path
    into an edit script (one op per line: equal, delete, insert), then cut
    the script into hunks with WRK_DIFF_CONTEXT lines around each change.
*/
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cm_strbuf.h"
#include "wrk_diff.h"

typedef struct {
    const char *p;
    size_t len; //  with the '\n', if there is one
    uint64_t hash;
} s_line_t;

typedef enum { S_EQ = 0, S_DEL, S_INS } s_op_t;

//  Lines of text; *count gets their number.  NULL with *count 0 for "".
static s_line_t *s_split (const char *text, size_t len, size_t *count, bool *oom)
{
    size_t n = 0;
    for (size_t i = 0; i < len; i++)
        if (text[i] == '\n') n++;
    if (len > 0 && text[len - 1] != '\n') n++;
    *count = n;
    if (n == 0) return NULL;
    s_line_t *lines = calloc (n, sizeof *lines);
    if (!lines) {
        *oom = true;
        return NULL;
    }
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
        const char *nl = memchr (text + at, '\n', len - at);
        size_t l = nl ? (size_t)(nl - (text + at)) + 1 : len - at;
        uint64_t h = 1469598103934665603ull;
        for (size_t k = 0; k < l; k++)
            h = (h ^ (unsigned char)text[at + k]) * 1099511628211ull;
        lines[i] = (s_line_t){.p = text + at, .len = l, .hash = h};
        at += l;
    }
    return lines;
}

static bool s_eq (const s_line_t *a, const s_line_t *b)
{
    return a->hash == b->hash && a->len == b->len && memcmp (a->p, b->p, a->len) == 0;
}

//  Myers on a[0..n) and b[0..m): writes the script into ops (room for n+m)
//  and returns its length, or 0 with *gave_up when the distance is past
//  WRK_DIFF_MAX_EDITS or memory ran out (the caller falls back).
static size_t s_myers (const s_line_t *a, int n, const s_line_t *b, int m, s_op_t *ops,
                       bool *gave_up)
{
    int max = n + m;
    int dmax = max < WRK_DIFF_MAX_EDITS ? max : WRK_DIFF_MAX_EDITS;
    int off = dmax + 1;
    int *v = calloc ((size_t)(2 * dmax + 3), sizeof *v);
    //  trace holds, for each round d, V[-d..d] after that round.
    int *trace = malloc ((size_t)(dmax + 1) * (size_t)(dmax + 1) * sizeof *trace);
    size_t len = 0;
    int found = -1;
    if (!v || !trace) goto done;
    v[off + 1] = 0;
    for (int d = 0; d <= dmax && found < 0; d++) {
        for (int k = -d; k <= d; k += 2) {
            int x;
            if (k == -d || (k != d && v[off + k - 1] < v[off + k + 1]))
                x = v[off + k + 1];
            else
                x = v[off + k - 1] + 1;
            int y = x - k;
            while (x < n && y < m && s_eq (&a[x], &b[y])) x++, y++;
            v[off + k] = x;
            if (x >= n && y >= m) {
                found = d;
                break;
            }
        }
        memcpy (trace + (size_t)d * (size_t)d, v + off - d,
                (size_t)(2 * d + 1) * sizeof *v);
    }
    if (found < 0) goto done;

    //  Backtrack from (n, m), writing the script from the end.
    len = (size_t)(n + m + found) / 2; //  (n + m - found) / 2 equal + found edits
    size_t at = len;
    int x = n, y = m;
    for (int d = found; d > 0; d--) {
        const int *vp =
            trace + (size_t)(d - 1) * (size_t)(d - 1) + (d - 1); //  index 0 = k 0
        int k = x - y;
        int pk = (k == -d || (k != d && vp[k - 1] < vp[k + 1])) ? k + 1 : k - 1;
        int px = vp[pk], py = px - pk;
        while (x > px && y > py) ops[--at] = S_EQ, x--, y--;
        if (x == px)
            ops[--at] = S_INS, y--;
        else
            ops[--at] = S_DEL, x--;
    }
    while (x > 0 && y > 0) ops[--at] = S_EQ, x--, y--;
done:
    free (v);
    free (trace);
    if (found < 0) *gave_up = true;
    return len;
}

static void s_emit_line (cm_strbuf_t *b, char mark, const s_line_t *l)
{
    cm_strbuf_put (b, &mark, 1);
    cm_strbuf_put (b, l->p, l->len);
    if (l->len == 0 || l->p[l->len - 1] != '\n')
        cm_strbuf_put (b, "\n\\ No newline at end of file\n", 29);
}

static void s_range (cm_strbuf_t *b, char sign, size_t start, size_t count)
{
    //  diff's convention: an empty range names the line before it.
    size_t first = count ? start + 1 : start;
    if (count == 1)
        cm_strbuf_putf (b, "%c%zu", sign, first);
    else
        cm_strbuf_putf (b, "%c%zu,%zu", sign, first, count);
}

static void s_hunks (cm_strbuf_t *b, const s_op_t *ops, size_t nops, const s_line_t *a,
                     const s_line_t *bl)
{
    const size_t C = WRK_DIFF_CONTEXT;
    size_t pos = 0, i = 0, j = 0; //  i, j: old and new line at pos
    while (pos < nops) {
        size_t c = pos;
        while (c < nops && ops[c] == S_EQ) c++;
        if (c == nops) break;
        size_t start = c >= pos + C ? c - C : pos;
        size_t e = c, q;
        for (;;) {
            while (e < nops && ops[e] != S_EQ) e++;
            q = e;
            while (q < nops && ops[q] == S_EQ) q++;
            if (q < nops && q - e <= 2 * C) {
                e = q;
                continue;
            }
            break;
        }
        size_t end = e + C < q ? e + C : q;
        for (; pos < start; pos++) i++, j++; //  only equal ops before start
        size_t oc = 0, nc = 0;
        for (size_t k = start; k < end; k++) {
            if (ops[k] != S_INS) oc++;
            if (ops[k] != S_DEL) nc++;
        }
        cm_strbuf_put (b, "@@ ", 3);
        s_range (b, '-', i, oc);
        cm_strbuf_put (b, " ", 1);
        s_range (b, '+', j, nc);
        cm_strbuf_put (b, " @@\n", 4);
        for (size_t k = start; k < end; k++) {
            if (ops[k] == S_EQ)
                s_emit_line (b, ' ', &a[i++]), j++;
            else if (ops[k] == S_DEL)
                s_emit_line (b, '-', &a[i++]);
            else
                s_emit_line (b, '+', &bl[j++]);
        }
        pos = end;
    }
}

char *wrk_diff_unified (const char *path, bool old_exists, const char *old_text,
                        size_t old_len, const char *new_text, size_t new_len)
{
    bool oom = false;
    size_t n = 0, m = 0;
    s_line_t *a = old_exists ? s_split (old_text, old_len, &n, &oom) : NULL;
    s_line_t *b = s_split (new_text, new_len, &m, &oom);
    s_op_t *ops = NULL;
    cm_strbuf_t out = {0};
    if (oom) goto done;
    ops = malloc ((n + m + 1) * sizeof *ops);
    if (!ops) {
        oom = true;
        goto done;
    }

    size_t pre = 0, suf = 0;
    while (pre < n && pre < m && s_eq (&a[pre], &b[pre])) pre++;
    while (suf < n - pre && suf < m - pre && s_eq (&a[n - 1 - suf], &b[m - 1 - suf]))
        suf++;
    size_t mn = n - pre - suf, mm = m - pre - suf, nops = 0;
    for (size_t k = 0; k < pre; k++) ops[nops++] = S_EQ;
    bool gave_up = n > WRK_DIFF_MAX_LINES || m > WRK_DIFF_MAX_LINES;
    if (!gave_up && mn + mm > 0)
        nops += s_myers (a + pre, (int)mn, b + pre, (int)mm, ops + nops, &gave_up);
    if (gave_up) {
        nops = pre;
        for (size_t k = 0; k < mn; k++) ops[nops++] = S_DEL;
        for (size_t k = 0; k < mm; k++) ops[nops++] = S_INS;
    }
    for (size_t k = 0; k < suf; k++) ops[nops++] = S_EQ;

    cm_strbuf_put (&out, "", 0);
    bool changed = false;
    for (size_t k = 0; k < nops && !changed; k++) changed = ops[k] != S_EQ;
    if (changed) {
        if (old_exists) {
            cm_strbuf_put (&out, "--- a/", 6);
            cm_strbuf_put (&out, path, strlen (path));
            cm_strbuf_put (&out, "\n", 1);
        } else
            cm_strbuf_put (&out, "--- /dev/null\n", 14);
        cm_strbuf_put (&out, "+++ b/", 6);
        cm_strbuf_put (&out, path, strlen (path));
        cm_strbuf_put (&out, "\n", 1);
        s_hunks (&out, ops, nops, a, b);
    }
    oom = out.oom;
done:
    free (a);
    free (b);
    free (ops);
    if (oom) {
        free (out.p);
        return NULL;
    }
    return out.p;
}
