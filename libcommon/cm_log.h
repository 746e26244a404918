/*  cm_log.h - structured logging: one JSON object per line on stderr.

    {"ts":"2026-11-21T10:00:00.123Z","level":"info","service":"store",
     "msg":"listening","session":"…","turn":"…","conn":"…"}

    Secrets: a service registers every secret it holds (API keys, provider
    keys) with cm_log_secret() once; every line is scrubbed of them before it
    is written, so a secret logged by mistake still never reaches the log.
    Use cm_redact() to show a masked form on purpose (config printout).
*/
#ifndef CM_LOG_H
#define CM_LOG_H

#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>

typedef enum {
    CM_LOG_DEBUG = 0,
    CM_LOG_INFO,
    CM_LOG_WARN,
    CM_LOG_ERROR,
} cm_log_level_t;

//  Context ids that go into a line when set (NULL fields are left out).
typedef struct {
    const char *session;
    const char *turn;
    const char *conn;
    const char *worker;
} cm_log_ctx_t;

//  Set the service name and minimum level.  Call once at start.
void cm_log_init (const char *service, cm_log_level_t level);

//  Parse "debug|info|warn|error"; returns 0 and sets *level, or CM_E_INVALID.
int cm_log_level_parse (const char *text, cm_log_level_t *level);

//  Redirect output (default stderr); used by tests.  Not owned.
void cm_log_set_stream (FILE *stream);

//  Register a secret to scrub from every line (copied; strings shorter than
//  8 bytes are ignored, they would scrub ordinary words).  At most
//  CM_LOG_MAX_SECRETS; returns 0 or CM_E_CAPACITY.
#define CM_LOG_MAX_SECRETS 64
int cm_log_secret (const char *secret);

//  Log a printf-style message.  Lines longer than CM_LOG_LINE_MAX are cut.
#define CM_LOG_LINE_MAX 8192
void cm_log (cm_log_level_t level, const char *fmt, ...)
    __attribute__ ((format (printf, 2, 3)));
void cm_logc (cm_log_level_t level, const cm_log_ctx_t *ctx, const char *fmt, ...)
    __attribute__ ((format (printf, 3, 4)));
void cm_logv (cm_log_level_t level, const cm_log_ctx_t *ctx, const char *fmt,
              va_list args);

#define cm_debug(...) cm_log (CM_LOG_DEBUG, __VA_ARGS__)
#define cm_info(...)  cm_log (CM_LOG_INFO, __VA_ARGS__)
#define cm_warn(...)  cm_log (CM_LOG_WARN, __VA_ARGS__)
#define cm_error(...) cm_log (CM_LOG_ERROR, __VA_ARGS__)

//  Write a masked form of secret into out: the first 4 characters then
//  "…" and the length, e.g. "sk-a…(51)"; secrets of 12 bytes or fewer
//  become "****".  NULL or empty gives "".  Always NUL-terminates.
void cm_redact (const char *secret, char *out, size_t outlen);

//  Append a JSON-escaped copy of src (without quotes) to dst at *pos, never
//  past dstlen-1; always NUL-terminates.  Shared by log and JSON writers.
void cm_json_escape (char *dst, size_t dstlen, size_t *pos, const char *src);

#endif
