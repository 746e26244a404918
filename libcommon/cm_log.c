/*  cm_log.c - one JSON object per line, scrubbed of registered secrets.

    A line is built in full, then written with one write(2) (or one fwrite
    for streams without a descriptor), so lines from several processes
    sharing stderr or an O_APPEND file do not interleave.  Pipes only
    guarantee that for writes up to PIPE_BUF (4096) bytes; longer lines can
    interleave there.

    Secrets are scrubbed twice:
      1. from the formatted message and every context value before JSON
         escaping, which catches any secret, whatever bytes it contains;
      2. from the finished line, for secrets made of plain printable ASCII,
         which catches a secret that only appears once escaping has added
         text (a 0x01 byte followed by "abcdefgh" becomes "\u0001abcdefgh",
         which contains the secret "u0001abcdefgh").
    The logger's state is process-wide by nature; a mutex guards it so any
    thread may log.
*/
#include "cm_log.h"
#include "cm_error.h"
#include "cm_time.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define S_SERVICE_MAX   64  /* bytes of service name kept */
#define S_CTX_VALUE_MAX 256 /* escaped bytes per context id (ids are 36) */
#define S_TAIL_MAX      (2 + 4 * (16 + S_CTX_VALUE_MAX) + 4)
#define S_REDACTED      "[redacted]"
#define S_REDACTED_LEN  (sizeof (S_REDACTED) - 1)
//  The line pass replaces at least 8 bytes (the shortest secret) with
//  S_REDACTED_LEN bytes, so a line can grow by at most a quarter.
#define S_OUT_MAX (CM_LOG_LINE_MAX + CM_LOG_LINE_MAX / 4 + 16)

typedef struct {
    char *text;
    size_t len;
    bool line_safe; //  plain printable ASCII: also searched in the final line
} s_secret_t;

static struct {
    pthread_mutex_t lock;
    char service[S_SERVICE_MAX];
    cm_log_level_t level;
    FILE *stream; //  NULL means stderr
    s_secret_t secrets[CM_LOG_MAX_SECRETS];
    size_t nsecrets;
    //  Scratch space, used only with the lock held; static so that logging
    //  from a thread with a small stack is safe.
    char raw[CM_LOG_LINE_MAX];
    char clean[CM_LOG_LINE_MAX + CM_LOG_LINE_MAX / 4 + 16];
    char line[CM_LOG_LINE_MAX];
    char out[S_OUT_MAX];
} s_log = {
    .lock = PTHREAD_MUTEX_INITIALIZER,
    .service = "corral",
    .level = CM_LOG_INFO,
};

static const char *s_level_names[] = {"debug", "info", "warn", "error"};

void cm_log_init (const char *service, cm_log_level_t level)
{
    pthread_mutex_lock (&s_log.lock);
    snprintf (s_log.service, sizeof (s_log.service), "%s", service ? service : "corral");
    s_log.level = level;
    pthread_mutex_unlock (&s_log.lock);
}

int cm_log_level_parse (const char *text, cm_log_level_t *level)
{
    if (!text || !level) return CM_E_INVALID;
    for (int i = CM_LOG_DEBUG; i <= CM_LOG_ERROR; i++)
        if (strcasecmp (text, s_level_names[i]) == 0) {
            *level = (cm_log_level_t)i;
            return 0;
        }
    return CM_E_INVALID;
}

void cm_log_set_stream (FILE *stream)
{
    pthread_mutex_lock (&s_log.lock);
    s_log.stream = stream;
    pthread_mutex_unlock (&s_log.lock);
}

static bool s_is_line_safe (const char *text)
{
    for (const unsigned char *s = (const unsigned char *)text; *s; s++)
        if (*s < 0x20 || *s > 0x7e || *s == '"' || *s == '\\') return false;
    return true;
}

int cm_log_secret (const char *secret)
{
    //  Short strings would scrub ordinary words; the header documents that
    //  they are ignored, so this is success, not an error.
    if (!secret || strlen (secret) < 8) return 0;

    int rc = 0;
    pthread_mutex_lock (&s_log.lock);
    for (size_t i = 0; i < s_log.nsecrets; i++)
        if (strcmp (s_log.secrets[i].text, secret) == 0) goto cleanup;
    if (s_log.nsecrets == CM_LOG_MAX_SECRETS) {
        rc = CM_E_CAPACITY;
        goto cleanup;
    }
    char *copy = strdup (secret);
    if (!copy) {
        rc = CM_E_NOMEM;
        goto cleanup;
    }
    s_log.secrets[s_log.nsecrets++] = (s_secret_t){
        .text = copy, .len = strlen (copy), .line_safe = s_is_line_safe (copy)};
cleanup:
    pthread_mutex_unlock (&s_log.lock);
    return rc;
}

//  Length of the longest secret that starts at text[i], or 0.  With
//  line_only, only secrets safe for the line pass count.
static size_t s_match (const char *text, size_t len, size_t i, bool line_only)
{
    size_t best = 0;
    for (size_t k = 0; k < s_log.nsecrets; k++) {
        const s_secret_t *sec = &s_log.secrets[k];
        if (line_only && !sec->line_safe) continue;
        if (sec->len > len - i || sec->len <= best) continue;
        if (text[i] == sec->text[0] && memcmp (text + i, sec->text, sec->len) == 0)
            best = sec->len;
    }
    return best;
}

//  Copy src into dst (at most dstlen-1 bytes, NUL-terminated) with every
//  registered secret replaced by S_REDACTED.  The longest secret matching
//  at a position wins, so overlapping secrets leave no fragment behind.
static void s_scrub (const char *src, char *dst, size_t dstlen)
{
    size_t len = strlen (src);
    size_t o = 0;
    size_t i = 0;
    while (i < len) {
        size_t hit = s_match (src, len, i, false);
        if (hit) {
            if (o + S_REDACTED_LEN > dstlen - 1) break;
            memcpy (dst + o, S_REDACTED, S_REDACTED_LEN);
            o += S_REDACTED_LEN;
            i += hit;
        } else {
            if (o + 1 > dstlen - 1) break;
            dst[o++] = src[i++];
        }
    }
    dst[o] = '\0';
}

//  When vsnprintf cut the message, its end may be the first bytes of a
//  secret that the cut split; the scrub cannot recognise a fragment, so
//  drop any tail that is a proper prefix of a secret.
static void s_cut_secret_prefix (char *text)
{
    size_t len = strlen (text);
    bool cut = true;
    while (cut) {
        cut = false;
        for (size_t k = 0; k < s_log.nsecrets && !cut; k++) {
            const s_secret_t *sec = &s_log.secrets[k];
            size_t n = sec->len - 1 < len ? sec->len - 1 : len;
            for (; n > 0; n--)
                if (memcmp (text + len - n, sec->text, n) == 0) {
                    len -= n;
                    text[len] = '\0';
                    cut = true;
                    break;
                }
        }
    }
}

//  Offset where the escaped character holding line[pos] starts.  In an
//  escaped line a backslash only ever starts an escape sequence, so
//  scanning from the start finds the boundaries.
static size_t s_char_start (const char *line, size_t pos)
{
    size_t i = 0;
    size_t start = 0;
    while (i <= pos) {
        start = i;
        if (line[i] == '\\')
            i += line[i + 1] == 'u' ? 6 : 2;
        else
            i++;
    }
    return start;
}

//  The line pass (see top of file).  A line-safe secret holds no quote, so
//  a match lies inside one JSON string; when it begins inside an escape
//  sequence the whole sequence is replaced, keeping the JSON valid.
//  Returns the length of the scrubbed line in out, or 0 if nothing matched.
static size_t s_scrub_line (const char *line, size_t len, char *out, size_t outlen)
{
    bool any = false;
    size_t o = 0;
    size_t i = 0;
    while (i < len) {
        size_t hit = s_match (line, len, i, true);
        if (hit) {
            size_t start = s_char_start (line, i);
            o -= i - start; //  those bytes were copied already
            if (o + S_REDACTED_LEN > outlen - 1) break;
            memcpy (out + o, S_REDACTED, S_REDACTED_LEN);
            o += S_REDACTED_LEN;
            i += hit;
            any = true;
        } else {
            if (o + 1 > outlen - 1) break;
            out[o++] = line[i++];
        }
    }
    out[o] = '\0';
    return any ? o : 0;
}

static void s_append (char *dst, size_t dstlen, size_t *pos, const char *src)
{
    size_t n = strlen (src);
    if (*pos + n > dstlen - 1) n = dstlen - 1 - *pos;
    memcpy (dst + *pos, src, n);
    *pos += n;
    dst[*pos] = '\0';
}

//  One write for the whole line.  A stream with a descriptor is flushed
//  first, then written with write(2) so the line is one system call; a
//  memory stream (tests) gets one fwrite.
static void s_write (FILE *stream, const char *buf, size_t len)
{
    int fd = fileno (stream);
    if (fd < 0) {
        fwrite (buf, 1, len, stream);
        fflush (stream);
        return;
    }
    fflush (stream);
    while (len > 0) {
        ssize_t n = write (fd, buf, len);
        if (n < 0) {
            if (errno == EINTR) continue;
            return; //  nowhere left to report a failing log
        }
        buf += n;
        len -= (size_t)n;
    }
}

//  The header leaves this off so that callers' own va_list wrappers need
//  not carry it; here it tells the compiler that fmt is a printf format.
void cm_logv (cm_log_level_t level, const cm_log_ctx_t *ctx, const char *fmt,
              va_list args) __attribute__ ((format (printf, 3, 0)));

void cm_logv (cm_log_level_t level, const cm_log_ctx_t *ctx, const char *fmt,
              va_list args)
{
    if (level < CM_LOG_DEBUG) level = CM_LOG_DEBUG;
    if (level > CM_LOG_ERROR) level = CM_LOG_ERROR;
    //  Callers often log and then inspect errno.
    int saved_errno = errno;
    pthread_mutex_lock (&s_log.lock);
    if (level < s_log.level) goto cleanup;

    int n = fmt ? vsnprintf (s_log.raw, sizeof (s_log.raw), fmt, args) : -1;
    if (n < 0) s_log.raw[0] = '\0';
    if (n >= (int)sizeof (s_log.raw)) s_cut_secret_prefix (s_log.raw);

    char ts[CM_TIME_ISO_LEN];
    cm_time_iso (cm_time_ms (), ts);

    //  The tail (context ids and the closing brace) is built first so that
    //  the message can take exactly the room that is left.
    char tail[S_TAIL_MAX];
    size_t tpos = 0;
    s_append (tail, sizeof (tail), &tpos, "\"");
    if (ctx) {
        const char *keys[] = {"session", "turn", "conn", "worker"};
        const char *values[] = {ctx->session, ctx->turn, ctx->conn, ctx->worker};
        for (size_t i = 0; i < 4; i++) {
            if (!values[i]) continue;
            s_append (tail, sizeof (tail), &tpos, ",\"");
            s_append (tail, sizeof (tail), &tpos, keys[i]);
            s_append (tail, sizeof (tail), &tpos, "\":\"");
            s_scrub (values[i], s_log.clean, sizeof (s_log.clean));
            size_t vpos = 0;
            char value[S_CTX_VALUE_MAX];
            cm_json_escape (value, sizeof (value), &vpos, s_log.clean);
            s_append (tail, sizeof (tail), &tpos, value);
            s_append (tail, sizeof (tail), &tpos, "\"");
        }
    }
    s_append (tail, sizeof (tail), &tpos, "}\n");

    char *line = s_log.line;
    size_t pos = 0;
    line[0] = '\0';
    s_append (line, CM_LOG_LINE_MAX, &pos, "{\"ts\":\"");
    s_append (line, CM_LOG_LINE_MAX, &pos, ts);
    s_append (line, CM_LOG_LINE_MAX, &pos, "\",\"level\":\"");
    s_append (line, CM_LOG_LINE_MAX, &pos, s_level_names[level]);
    s_append (line, CM_LOG_LINE_MAX, &pos, "\",\"service\":\"");
    s_scrub (s_log.service, s_log.clean, sizeof (s_log.clean));
    cm_json_escape (line, CM_LOG_LINE_MAX, &pos, s_log.clean);
    s_append (line, CM_LOG_LINE_MAX, &pos, "\",\"msg\":\"");
    s_scrub (s_log.raw, s_log.clean, sizeof (s_log.clean));
    cm_json_escape (line, CM_LOG_LINE_MAX - tpos, &pos, s_log.clean);
    s_append (line, CM_LOG_LINE_MAX, &pos, tail);

    size_t outlen = s_scrub_line (line, pos, s_log.out, sizeof (s_log.out));
    if (outlen)
        s_write (s_log.stream ? s_log.stream : stderr, s_log.out, outlen);
    else
        s_write (s_log.stream ? s_log.stream : stderr, line, pos);
cleanup:
    pthread_mutex_unlock (&s_log.lock);
    errno = saved_errno;
}

void cm_log (cm_log_level_t level, const char *fmt, ...)
{
    va_list args;
    va_start (args, fmt);
    cm_logv (level, NULL, fmt, args);
    va_end (args);
}

void cm_logc (cm_log_level_t level, const cm_log_ctx_t *ctx, const char *fmt, ...)
{
    va_list args;
    va_start (args, fmt);
    cm_logv (level, ctx, fmt, args);
    va_end (args);
}

void cm_redact (const char *secret, char *out, size_t outlen)
{
    if (!out || outlen == 0) return;
    size_t len = secret ? strlen (secret) : 0;
    if (len == 0)
        out[0] = '\0';
    else if (len <= 12)
        snprintf (out, outlen, "****");
    else //  "\xe2\x80\xa6" is U+2026, the ellipsis, in UTF-8
        snprintf (out, outlen, "%.4s\xe2\x80\xa6(%zu)", secret, len);
}

//  Length of the valid UTF-8 sequence starting at s (2..4), or 0 when the
//  bytes are not well-formed (overlong forms, surrogates and code points
//  past U+10FFFF included), following RFC 3629.  s is NUL-terminated and
//  NUL is never a continuation byte, so reads stop at the terminator.
static size_t s_utf8_len (const unsigned char *s)
{
    unsigned char lo = 0x80, hi = 0xbf;
    size_t n;
    if (s[0] >= 0xc2 && s[0] <= 0xdf)
        n = 2;
    else if (s[0] >= 0xe0 && s[0] <= 0xef) {
        n = 3;
        if (s[0] == 0xe0) lo = 0xa0;
        if (s[0] == 0xed) hi = 0x9f;
    } else if (s[0] >= 0xf0 && s[0] <= 0xf4) {
        n = 4;
        if (s[0] == 0xf0) lo = 0x90;
        if (s[0] == 0xf4) hi = 0x8f;
    } else
        return 0;
    if (s[1] < lo || s[1] > hi) return 0;
    for (size_t i = 2; i < n; i++)
        if (s[i] < 0x80 || s[i] > 0xbf) return 0;
    return n;
}

void cm_json_escape (char *dst, size_t dstlen, size_t *pos, const char *src)
{
    if (!dst || dstlen == 0 || !pos) return;
    size_t p = *pos < dstlen ? *pos : dstlen - 1;
    const unsigned char *s = (const unsigned char *)(src ? src : "");
    while (*s) {
        char esc[8];
        const char *unit = esc;
        size_t len = 2;
        size_t used = 1;
        switch (*s) {
        case '"':
            unit = "\\\"";
            break;
        case '\\':
            unit = "\\\\";
            break;
        case '\n':
            unit = "\\n";
            break;
        case '\r':
            unit = "\\r";
            break;
        case '\t':
            unit = "\\t";
            break;
        case '\b':
            unit = "\\b";
            break;
        case '\f':
            unit = "\\f";
            break;
        default:
            if (*s < 0x20) {
                snprintf (esc, sizeof (esc), "\\u%04x", *s);
                len = 6;
            } else if (*s < 0x80) {
                unit = (const char *)s;
                len = 1;
            } else if ((used = s_utf8_len (s)) > 0) {
                unit = (const char *)s;
                len = used;
            } else {
                //  Not UTF-8: JSON readers would reject the whole line.
                unit = "\\ufffd";
                len = 6;
                used = 1;
            }
        }
        //  Never split an escape or a UTF-8 sequence at the limit.
        if (p + len > dstlen - 1) break;
        memcpy (dst + p, unit, len);
        p += len;
        s += used;
    }
    dst[p] = '\0';
    *pos = p;
}
