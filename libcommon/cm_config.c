/*  cm_config.c - options from defaults, CORRAL_* variables and --flags.

    Precedence is default < environment < flag; the first bad value stops
    loading with a message that names where the value came from (the
    variable or the flag), the value and what would have been accepted.
    Values of secret options are masked in every message and, once loaded,
    registered with cm_log_secret so a mistaken log line cannot leak them.

    An environment variable that is set but empty counts as unset: compose
    files write `CORRAL_X: ${X:-}` to pass a value through only if present.
*/
#include "cm_config.h"
#include "cm_error.h"
#include "cm_log.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define S_VALUE_MAX 4096 /* longest value accepted from outside */
#define S_NAME_MAX  128  /* longest option name, flag or variable */

static void s_fail (char *err, size_t errlen, const char *fmt, ...)
    __attribute__ ((format (printf, 3, 4)));

static void s_fail (char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || errlen == 0) return;
    va_list args;
    va_start (args, fmt);
    vsnprintf (err, errlen, fmt, args);
    va_end (args);
}

static void *s_slot (const cm_cfg_opt_t *opt, void *cfg)
{
    return (char *)cfg + opt->offset;
}

static const void *s_cslot (const cm_cfg_opt_t *opt, const void *cfg)
{
    return (const char *)cfg + opt->offset;
}

static bool s_is_string (cm_cfg_type_t type)
{
    return type == CM_CFG_STR || type == CM_CFG_PATH || type == CM_CFG_ENDPOINT ||
           type == CM_CFG_ENUM;
}

char *cm_config_envname (const char *name, char *out, size_t outlen)
{
    if (!out || outlen == 0) return out;
    size_t o = 0;
    const char *prefix = "CORRAL_";
    for (const char *p = prefix; *p && o + 1 < outlen; p++) out[o++] = *p;
    for (const char *p = name ? name : ""; *p && o + 1 < outlen; p++) {
        char c = *p;
        if (c == '-') c = '_';
        if (c >= 'a' && c <= 'z') c = (char)(c - 'a' + 'A');
        out[o++] = c;
    }
    out[o] = '\0';
    return out;
}

//  Leading decimal digits of text into *value; returns the text after them,
//  or NULL when text does not start with a digit.  *overflow is set when
//  the number does not fit an int64_t.
static const char *s_digits (const char *text, int64_t *value, bool *overflow)
{
    if (*text < '0' || *text > '9') return NULL;
    int64_t v = 0;
    *overflow = false;
    for (; *text >= '0' && *text <= '9'; text++) {
        int d = *text - '0';
        if (v > (INT64_MAX - d) / 10) *overflow = true;
        if (!*overflow) v = v * 10 + d;
    }
    *value = v;
    return text;
}

typedef enum { S_OK, S_BAD, S_BIG } s_parse_t;

static s_parse_t s_parse_int (const char *text, int64_t *out)
{
    bool neg = *text == '-';
    if (*text == '-' || *text == '+') text++;
    int64_t v;
    bool overflow;
    const char *rest = s_digits (text, &v, &overflow);
    if (!rest || *rest) return S_BAD;
    if (overflow) return S_BIG;
    *out = neg ? -v : v;
    return S_OK;
}

//  "number" + optional suffix from a table, scaled by the suffix's factor.
typedef struct {
    const char *suffix;
    int64_t factor;
} s_unit_t;

static const s_unit_t s_size_units[] = {
    {"", 1},          {"k", 1LL << 10}, {"m", 1LL << 20},
    {"g", 1LL << 30}, {"t", 1LL << 40}, {NULL, 0},
};

static const s_unit_t s_ms_units[] = {
    {"", 1}, {"ms", 1}, {"s", 1000}, {"m", 60 * 1000}, {"h", 3600 * 1000}, {NULL, 0},
};

static s_parse_t s_parse_scaled (const char *text, const s_unit_t *units, int64_t *out)
{
    int64_t v;
    bool overflow;
    const char *rest = s_digits (text, &v, &overflow);
    if (!rest) return S_BAD;
    for (const s_unit_t *u = units; u->suffix; u++) {
        if (strcasecmp (rest, u->suffix) != 0) continue;
        if (overflow || v > INT64_MAX / u->factor) return S_BIG;
        *out = v * u->factor;
        return S_OK;
    }
    return S_BAD;
}

static bool s_parse_bool (const char *text, bool *out)
{
    static const char *yes[] = {"true", "1", "yes", "on"};
    static const char *no[] = {"false", "0", "no", "off"};
    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp (text, yes[i]) == 0) {
            *out = true;
            return true;
        }
        if (strcasecmp (text, no[i]) == 0) {
            *out = false;
            return true;
        }
    }
    return false;
}

static bool s_choice_ok (const char *choices, const char *text)
{
    size_t len = strlen (text);
    const char *p = choices ? choices : "";
    while (*p) {
        const char *bar = strchr (p, '|');
        size_t n = bar ? (size_t)(bar - p) : strlen (p);
        if (n == len && len > 0 && memcmp (p, text, n) == 0) return true;
        if (!bar) break;
        p = bar + 1;
    }
    return false;
}

//  tcp://host:port (port 1-65535 or * for an ephemeral bind; host may be
//  *, a name, an address or [ipv6]), ipc://path, inproc://name.
static bool s_endpoint_ok (const char *text)
{
    if (strncmp (text, "ipc://", 6) == 0) return text[6] != '\0';
    if (strncmp (text, "inproc://", 9) == 0) return text[9] != '\0';
    if (strncmp (text, "tcp://", 6) != 0) return false;
    const char *host = text + 6;
    const char *colon = strrchr (host, ':');
    if (!colon || colon == host) return false;
    for (const char *p = host; p < colon; p++)
        if (*p <= ' ' || *p == '/') return false;
    if (*host == '[' && colon[-1] != ']') return false;
    if (strcmp (colon + 1, "*") == 0) return true;
    int64_t port;
    bool overflow;
    const char *rest = s_digits (colon + 1, &port, &overflow);
    return rest && !*rest && !overflow && port >= 1 && port <= 65535;
}

static int s_set (const cm_cfg_opt_t *opt, void *cfg, const char *value,
                  const char *label, char *err, size_t errlen)
{
    //  A secret's value never appears in a message, even a rejected one.
    char masked[64];
    const char *shown = value;
    if (opt->secret) {
        cm_redact (value, masked, sizeof (masked));
        shown = masked;
    }
    if (strlen (value) > S_VALUE_MAX) {
        s_fail (err, errlen, "%s: value is longer than %d bytes", label, S_VALUE_MAX);
        return CM_E_INVALID;
    }

    if (s_is_string (opt->type)) {
        if (opt->type == CM_CFG_PATH && !*value) {
            s_fail (err, errlen, "%s: the path is empty", label);
            return CM_E_INVALID;
        }
        if (opt->type == CM_CFG_ENDPOINT && !s_endpoint_ok (value)) {
            s_fail (err, errlen,
                    "%s: '%s' is not an endpoint (examples: tcp://127.0.0.1:5555, "
                    "ipc:///run/corral/store.sock, inproc://store)",
                    label, shown);
            return CM_E_INVALID;
        }
        if (opt->type == CM_CFG_ENUM && !s_choice_ok (opt->choices, value)) {
            s_fail (err, errlen, "%s: invalid value '%s': expected one of %s", label,
                    shown, opt->choices ? opt->choices : "");
            return CM_E_INVALID;
        }
        char *copy = strdup (value);
        if (!copy) {
            s_fail (err, errlen, "%s: out of memory", label);
            return CM_E_NOMEM;
        }
        char **slot = s_slot (opt, cfg);
        free (*slot);
        *slot = copy;
        return 0;
    }

    if (opt->type == CM_CFG_BOOL) {
        bool b;
        if (!s_parse_bool (value, &b)) {
            s_fail (err, errlen,
                    "%s: '%s' is not a boolean (true|false|1|0|yes|no|on|off)", label,
                    shown);
            return CM_E_INVALID;
        }
        *(bool *)s_slot (opt, cfg) = b;
        return 0;
    }

    int64_t v = 0;
    s_parse_t parsed;
    const char *what;
    const char *unit = "";
    if (opt->type == CM_CFG_SIZE) {
        parsed = s_parse_scaled (value, s_size_units, &v);
        what = "is not a size (examples: 1048576, 512M, 4G)";
        unit = " bytes";
    } else if (opt->type == CM_CFG_MS) {
        parsed = s_parse_scaled (value, s_ms_units, &v);
        what = "is not a duration (examples: 250, 250ms, 30s, 5m, 1h)";
        unit = " ms";
    } else {
        parsed = s_parse_int (value, &v);
        what = "is not an integer";
    }
    if (parsed == S_BAD) {
        s_fail (err, errlen, "%s: '%s' %s", label, shown, what);
        return CM_E_INVALID;
    }
    if (parsed == S_BIG) {
        s_fail (err, errlen, "%s: '%s' is too large", label, shown);
        return CM_E_INVALID;
    }
    if ((opt->min || opt->max) && (v < opt->min || v > opt->max)) {
        s_fail (err, errlen,
                "%s: '%s' is out of range (min %" PRId64 "%s, max %" PRId64 "%s)", label,
                shown, opt->min, unit, opt->max, unit);
        return CM_E_INVALID;
    }
    *(int64_t *)s_slot (opt, cfg) = v;
    return 0;
}

int cm_config_set (const cm_cfg_opt_t *opt, void *cfg, const char *value, char *err,
                   size_t errlen)
{
    if (!opt || !opt->name || !cfg || !value) {
        s_fail (err, errlen, "no option or value given");
        return CM_E_INVALID;
    }
    char label[S_NAME_MAX];
    snprintf (label, sizeof (label), "--%s", opt->name);
    return s_set (opt, cfg, value, label, err, errlen);
}

static const cm_cfg_opt_t *s_find (const cm_cfg_opt_t *opts, const char *name, size_t len)
{
    for (const cm_cfg_opt_t *opt = opts; opt->name; opt++)
        if (strlen (opt->name) == len && memcmp (opt->name, name, len) == 0) return opt;
    return NULL;
}

static const char *s_metavar (const cm_cfg_opt_t *opt)
{
    switch (opt->type) {
    case CM_CFG_STR:
        return " TEXT";
    case CM_CFG_PATH:
        return " PATH";
    case CM_CFG_ENDPOINT:
        return " ENDPOINT";
    case CM_CFG_INT:
        return " N";
    case CM_CFG_SIZE:
        return " SIZE";
    case CM_CFG_MS:
        return " DURATION";
    case CM_CFG_BOOL:
        return "[=BOOL]";
    case CM_CFG_ENUM:
        break;
    }
    return " ";
}

static void s_usage (const cm_cfg_opt_t *opts, const char *prog, const char *summary)
{
    printf ("Usage: %s [OPTIONS]\n", prog ? prog : "corral");
    if (summary) printf ("%s\n", summary);
    printf ("\nOptions (each also read from its environment variable; the flag wins):\n");
    for (const cm_cfg_opt_t *opt = opts; opt->name; opt++) {
        char env[S_NAME_MAX];
        cm_config_envname (opt->name, env, sizeof (env));
        char def[64];
        if (!opt->def)
            snprintf (def, sizeof (def), "none");
        else if (opt->secret)
            cm_redact (opt->def, def, sizeof (def));
        else
            snprintf (def, sizeof (def), "%s", opt->def);
        printf ("  --%s%s%s\n", opt->name, s_metavar (opt),
                opt->type == CM_CFG_ENUM && opt->choices ? opt->choices : "");
        printf ("        %s\n", opt->help ? opt->help : "");
        printf ("        env %s, default %s", env, def);
        if (opt->min || opt->max)
            printf (", range %" PRId64 "..%" PRId64, opt->min, opt->max);
        printf ("\n");
    }
    printf ("  -h, --help\n        Print this help and exit.\n");
    fflush (stdout);
}

//  Zero every slot without freeing: the struct may hold garbage on entry.
static void s_clear (const cm_cfg_opt_t *opts, void *cfg)
{
    for (const cm_cfg_opt_t *opt = opts; opt->name; opt++) {
        if (s_is_string (opt->type))
            *(char **)s_slot (opt, cfg) = NULL;
        else if (opt->type == CM_CFG_BOOL)
            *(bool *)s_slot (opt, cfg) = false;
        else
            *(int64_t *)s_slot (opt, cfg) = 0;
    }
}

static int s_load_argv (const cm_cfg_opt_t *opts, void *cfg, int argc, char **argv,
                        char *err, size_t errlen)
{
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (strcmp (arg, "--") == 0) {
            if (i + 1 < argc) {
                s_fail (err, errlen, "unexpected argument '%s' (see --help)",
                        argv[i + 1]);
                return CM_E_INVALID;
            }
            break;
        }
        if (arg[0] != '-' || arg[1] == '\0') {
            s_fail (err, errlen, "unexpected argument '%s' (see --help)", arg);
            return CM_E_INVALID;
        }
        //  Only the name part is echoed: the text after '=' may be a secret.
        const char *name = arg[1] == '-' ? arg + 2 : arg + 1;
        const char *eq = strchr (name, '=');
        size_t len = eq ? (size_t)(eq - name) : strlen (name);
        const cm_cfg_opt_t *opt = arg[1] == '-' ? s_find (opts, name, len) : NULL;
        if (!opt) {
            s_fail (err, errlen, "unknown option %.*s (see --help)",
                    (int)(name - arg + (ptrdiff_t)len), arg);
            return CM_E_INVALID;
        }
        char label[S_NAME_MAX];
        snprintf (label, sizeof (label), "--%s", opt->name);

        const char *value;
        bool b;
        if (eq)
            value = eq + 1;
        else if (opt->type == CM_CFG_BOOL)
            //  A bare boolean flag means true; a following boolean word is
            //  its value (positional arguments are never valid anyway).
            value = i + 1 < argc && s_parse_bool (argv[i + 1], &b) ? argv[++i] : "true";
        else if (i + 1 < argc && strncmp (argv[i + 1], "--", 2) != 0)
            value = argv[++i];
        else {
            //  "--a --b" is a forgotten value far more often than a value
            //  that starts with "--"; such a value needs --a=--b.
            s_fail (err, errlen, "%s needs a value", label);
            return CM_E_INVALID;
        }
        int rc = s_set (opt, cfg, value, label, err, errlen);
        if (rc) return rc;
    }
    return 0;
}

int cm_config_load (const cm_cfg_opt_t *opts, void *cfg, int argc, char **argv,
                    const char *prog, const char *summary, char *err, size_t errlen)
{
    if (err && errlen) err[0] = '\0';
    s_clear (opts, cfg);

    //  --help is answered before anything is parsed, so it works even when
    //  the environment holds a bad value.
    for (int i = 1; i < argc; i++) {
        if (strcmp (argv[i], "--") == 0) break;
        if (strcmp (argv[i], "--help") == 0 || strcmp (argv[i], "-h") == 0) {
            s_usage (opts, prog ? prog : argv[0], summary);
            return CM_CONFIG_HELP;
        }
    }

    int rc = 0;
    for (const cm_cfg_opt_t *opt = opts; opt->name; opt++) {
        if (!opt->def) continue;
        char label[S_NAME_MAX];
        snprintf (label, sizeof (label), "default of --%s", opt->name);
        rc = s_set (opt, cfg, opt->def, label, err, errlen);
        if (rc) goto cleanup;
    }
    for (const cm_cfg_opt_t *opt = opts; opt->name; opt++) {
        char env[S_NAME_MAX];
        cm_config_envname (opt->name, env, sizeof (env));
        const char *value = getenv (env);
        if (!value || !*value) continue;
        rc = s_set (opt, cfg, value, env, err, errlen);
        if (rc) goto cleanup;
    }
    rc = s_load_argv (opts, cfg, argc, argv, err, errlen);
    if (rc) goto cleanup;

    for (const cm_cfg_opt_t *opt = opts; opt->name; opt++) {
        if (!opt->secret || !s_is_string (opt->type)) continue;
        const char *value = *(char **)s_slot (opt, cfg);
        rc = cm_log_secret (value);
        if (rc) {
            s_fail (err, errlen, "--%s: cannot register the secret with the logger: %s",
                    opt->name, cm_strerror (rc));
            goto cleanup;
        }
    }
cleanup:
    //  On failure the caller exits; leave nothing for it to free.
    if (rc) cm_config_free (opts, cfg);
    return rc;
}

void cm_config_log (const cm_cfg_opt_t *opts, const void *cfg)
{
    for (const cm_cfg_opt_t *opt = opts; opt->name; opt++) {
        const void *slot = s_cslot (opt, cfg);
        char value[64];
        const char *shown = value;
        if (s_is_string (opt->type)) {
            const char *s = *(char *const *)slot;
            if (!s)
                shown = "(unset)";
            else if (opt->secret)
                cm_redact (s, value, sizeof (value));
            else
                shown = s;
        } else if (opt->secret)
            shown = "****";
        else if (opt->type == CM_CFG_BOOL)
            shown = *(const bool *)slot ? "true" : "false";
        else
            //  "ms" keeps a duration readable and valid as input again.
            snprintf (value, sizeof (value), "%" PRId64 "%s", *(const int64_t *)slot,
                      opt->type == CM_CFG_MS ? "ms" : "");
        cm_info ("config %s=%s", opt->name, shown);
    }
}

void cm_config_free (const cm_cfg_opt_t *opts, void *cfg)
{
    if (!opts || !cfg) return;
    for (const cm_cfg_opt_t *opt = opts; opt->name; opt++) {
        if (!s_is_string (opt->type)) continue;
        char **slot = s_slot (opt, cfg);
        free (*slot);
        *slot = NULL;
    }
}
