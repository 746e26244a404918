/*  gw_auth.c - API keys: generate, check, hash, compare, extract
    (see gw_auth.h for the format and the rules).  */
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <string.h>
#include <strings.h>

#include "cm_error.h"
#include "cm_id.h"
#include "gw_auth.h"

static const char s_b64[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

//  Value of a base64url character, or -1.
static int s_b64_val (unsigned char c)
{
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '-') return 62;
    if (c == '_') return 63;
    return -1;
}

//  Encode n bytes as unpadded base64url into out (room for
//  ceil(n * 4 / 3) + 1); returns the length written.
static size_t s_b64_encode (const uint8_t *in, size_t n, char *out)
{
    size_t o = 0;
    size_t i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[o++] = s_b64[v >> 18 & 63];
        out[o++] = s_b64[v >> 12 & 63];
        out[o++] = s_b64[v >> 6 & 63];
        out[o++] = s_b64[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)in[i] << 16;
        out[o++] = s_b64[v >> 18 & 63];
        out[o++] = s_b64[v >> 12 & 63];
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
        out[o++] = s_b64[v >> 18 & 63];
        out[o++] = s_b64[v >> 12 & 63];
        out[o++] = s_b64[v >> 6 & 63];
    }
    out[o] = '\0';
    return o;
}

/* ---------------------------------------------------------------- */
/*  Keys and hashes                                                  */

int gw_auth_key_generate (char key[GW_AUTH_KEY_BUF])
{
    uint8_t raw[GW_AUTH_RAW_LEN];
    key[0] = '\0';
    if (cm_random (raw, sizeof raw)) return CM_E_IO;
    memcpy (key, GW_AUTH_PREFIX, GW_AUTH_PREFIX_LEN);
    s_b64_encode (raw, sizeof raw, key + GW_AUTH_PREFIX_LEN);
    OPENSSL_cleanse (raw, sizeof raw);
    return 0;
}

int gw_auth_key_check (const char *key, char *err, size_t errlen)
{
    if (!key || !*key)
        return cm_err_set (err, errlen, CM_E_INVALID, "the API key is empty");
    size_t len = strnlen (key, GW_AUTH_KEY_LEN + 1);
    if (strncmp (key, GW_AUTH_PREFIX, GW_AUTH_PREFIX_LEN) != 0)
        return cm_err_set (err, errlen, CM_E_INVALID,
                           "the API key does not start with '%s'; it is not a Corral key",
                           GW_AUTH_PREFIX);
    if (len != GW_AUTH_KEY_LEN)
        return cm_err_set (err, errlen, CM_E_INVALID,
                           "the API key is too %s: a Corral key has %d characters",
                           len > GW_AUTH_KEY_LEN ? "long" : "short", GW_AUTH_KEY_LEN);
    for (size_t i = GW_AUTH_PREFIX_LEN; i < GW_AUTH_KEY_LEN; i++)
        if (s_b64_val ((unsigned char)key[i]) < 0)
            return cm_err_set (err, errlen, CM_E_INVALID,
                               "the API key has a character outside A-Z a-z 0-9 - _ "
                               "at position %zu",
                               i + 1);
    //  43 characters hold 258 bits for 256: the last one's low 2 bits
    //  are padding and must be zero.
    if (s_b64_val ((unsigned char)key[GW_AUTH_KEY_LEN - 1]) & 3)
        return cm_err_set (err, errlen, CM_E_INVALID,
                           "the API key's last character is not canonical base64url");
    return 0;
}

int gw_auth_key_decode (const char *key, uint8_t raw[GW_AUTH_RAW_LEN])
{
    if (gw_auth_key_check (key, NULL, 0)) return CM_E_INVALID;
    const char *b = key + GW_AUTH_PREFIX_LEN;
    uint32_t acc = 0;
    int bits = 0;
    size_t o = 0;
    for (size_t i = 0; i < GW_AUTH_B64_LEN; i++) {
        acc = acc << 6 | (uint32_t)s_b64_val ((unsigned char)b[i]);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (o < GW_AUTH_RAW_LEN) raw[o++] = (uint8_t)(acc >> bits);
        }
        acc &= (1u << bits) - 1;
    }
    return o == GW_AUTH_RAW_LEN ? 0 : CM_E_INVALID;
}

int gw_auth_sha256 (const void *data, size_t len, uint8_t out[GW_AUTH_HASH_LEN])
{
    unsigned int outlen = 0;
    if (EVP_Digest (data, len, out, &outlen, EVP_sha256 (), NULL) != 1 ||
        outlen != GW_AUTH_HASH_LEN)
        return CM_E_INTERNAL;
    return 0;
}

int gw_auth_key_hash (const char *key, uint8_t out[GW_AUTH_HASH_LEN])
{
    if (gw_auth_key_check (key, NULL, 0)) return CM_E_INVALID;
    return gw_auth_sha256 (key, GW_AUTH_KEY_LEN, out);
}

bool gw_auth_hash_equal (const uint8_t a[GW_AUTH_HASH_LEN],
                         const uint8_t b[GW_AUTH_HASH_LEN])
{
    return CRYPTO_memcmp (a, b, GW_AUTH_HASH_LEN) == 0;
}

/* ---------------------------------------------------------------- */
/*  Extraction                                                       */

static bool s_ows (char c)
{
    return c == ' ' || c == '\t';
}

//  True when s is NULL or only whitespace.
static bool s_blank (const char *s)
{
    if (!s) return true;
    while (s_ows (*s)) s++;
    return *s == '\0';
}

//  Copy [from, from + len) into key, after trimming whitespace if trim
//  (header values; a decoded query value is taken as is), then check the
//  format.  what names the source for messages.
static int s_take (const char *from, size_t len, bool trim, char key[GW_AUTH_KEY_BUF],
                   const char *what, char *err, size_t errlen)
{
    while (trim && len && s_ows (*from)) from++, len--;
    while (trim && len && s_ows (from[len - 1])) len--;
    if (len == 0) return cm_err_set (err, errlen, CM_E_INVALID, "%s is empty", what);
    if (len > GW_AUTH_KEY_LEN)
        return cm_err_set (err, errlen, CM_E_INVALID,
                           "%s is too long for an API key (%d characters)", what,
                           GW_AUTH_KEY_LEN);
    memcpy (key, from, len);
    key[len] = '\0';
    char why[160];
    if (gw_auth_key_check (key, why, sizeof why)) {
        key[0] = '\0';
        return cm_err_set (err, errlen, CM_E_INVALID, "%s: %s", what, why);
    }
    return 0;
}

static int s_from_bearer (const char *v, char key[GW_AUTH_KEY_BUF], char *err,
                          size_t errlen)
{
    while (s_ows (*v)) v++;
    if (strncasecmp (v, "Bearer", 6) != 0 || (v[6] != '\0' && !s_ows (v[6])))
        return cm_err_set (err, errlen, CM_E_INVALID,
                           "the Authorization header must use the Bearer scheme: "
                           "'Authorization: Bearer <key>'");
    v += 6;
    if (!s_ows (*v) && *v != '\0')
        return cm_err_set (err, errlen, CM_E_INVALID,
                           "the Authorization header must be 'Bearer <key>'");
    return s_take (v, strlen (v), true, key, "the Bearer token", err, errlen);
}

static int s_hex (char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

//  Percent-decode [v, v + len) into out (at most cap - 1 bytes, then
//  NUL).  Returns 0, or CM_E_INVALID (bad escape, NUL byte) or
//  CM_E_TOO_LARGE (the decoded value does not fit).
static int s_url_decode (const char *v, size_t len, char *out, size_t cap, size_t *outlen)
{
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        char c = v[i];
        if (c == '%') {
            if (i + 2 >= len) return CM_E_INVALID;
            int hi = s_hex (v[i + 1]);
            int lo = s_hex (v[i + 2]);
            if (hi < 0 || lo < 0) return CM_E_INVALID;
            c = (char)(hi << 4 | lo);
            if (c == '\0') return CM_E_INVALID;
            i += 2;
        } else if (c == '+')
            c = ' ';
        if (o + 1 >= cap) return CM_E_TOO_LARGE;
        out[o++] = c;
    }
    out[o] = '\0';
    *outlen = o;
    return 0;
}

//  Present (1), absent (0) or an error (< 0) for the token parameter.
static int s_from_query (const char *q, char key[GW_AUTH_KEY_BUF], char *err,
                         size_t errlen)
{
    const size_t nlen = strlen (GW_AUTH_QUERY_PARAM);
    const char *found = NULL;
    size_t found_len = 0;
    const char *p = q;
    while (*p) {
        const char *end = strchr (p, '&');
        size_t plen = end ? (size_t)(end - p) : strlen (p);
        if (plen >= nlen && strncmp (p, GW_AUTH_QUERY_PARAM, nlen) == 0 &&
            (plen == nlen || p[nlen] == '=')) {
            if (found)
                return cm_err_set (err, errlen, CM_E_INVALID,
                                   "the query has more than one '%s' parameter",
                                   GW_AUTH_QUERY_PARAM);
            found = plen == nlen ? p + plen : p + nlen + 1;
            found_len = plen == nlen ? 0 : plen - nlen - 1;
        }
        p += plen;
        if (*p == '&') p++;
    }
    if (!found) return 0;
    char buf[GW_AUTH_KEY_BUF + 1];
    size_t len = 0;
    int rc = s_url_decode (found, found_len, buf, sizeof buf, &len);
    if (rc == CM_E_TOO_LARGE)
        return cm_err_set (
            err, errlen, CM_E_INVALID,
            "the '%s' parameter is too long for an API key (%d characters)",
            GW_AUTH_QUERY_PARAM, GW_AUTH_KEY_LEN);
    if (rc)
        return cm_err_set (err, errlen, CM_E_INVALID,
                           "the '%s' parameter has a bad %%-escape", GW_AUTH_QUERY_PARAM);
    rc = s_take (buf, len, false, key, "the 'token' parameter", err, errlen);
    return rc ? rc : 1;
}

//  Present (1), absent (0) or an error (< 0) for the corral_key cookie.
static int s_from_cookie (const char *c, char key[GW_AUTH_KEY_BUF], char *err,
                          size_t errlen)
{
    const size_t nlen = strlen (GW_AUTH_COOKIE_NAME);
    const char *p = c;
    while (*p) {
        while (s_ows (*p) || *p == ';') p++;
        const char *end = strchr (p, ';');
        size_t plen = end ? (size_t)(end - p) : strlen (p);
        const char *eq = memchr (p, '=', plen);
        if (eq) {
            size_t name_len = (size_t)(eq - p);
            while (name_len && s_ows (p[name_len - 1])) name_len--;
            if (name_len == nlen && strncmp (p, GW_AUTH_COOKIE_NAME, nlen) == 0) {
                const char *v = eq + 1;
                size_t vlen = plen - (size_t)(v - p);
                while (vlen && s_ows (*v)) v++, vlen--;
                while (vlen && s_ows (v[vlen - 1])) vlen--;
                if (vlen >= 2 && v[0] == '"' && v[vlen - 1] == '"') v++, vlen -= 2;
                int rc = s_take (v, vlen, false, key,
                                 "the '" GW_AUTH_COOKIE_NAME "' cookie", err, errlen);
                return rc ? rc : 1;
            }
        }
        p += plen;
    }
    return 0;
}

int gw_auth_extract (const gw_auth_request_t *req, char key[GW_AUTH_KEY_BUF],
                     gw_auth_src_t *src, char *err, size_t errlen)
{
    key[0] = '\0';
    if (src) *src = GW_AUTH_SRC_NONE;
    if (err && errlen) err[0] = '\0';
    const struct {
        const char *value, *what;
    } inputs[] = {{req->authorization, "the Authorization header"},
                  {req->x_api_key, "the X-API-Key header"},
                  {req->query, "the query string"},
                  {req->cookie, "the Cookie header"}};
    for (size_t i = 0; i < sizeof inputs / sizeof inputs[0]; i++)
        if (inputs[i].value &&
            strnlen (inputs[i].value, GW_AUTH_INPUT_MAX + 1) > GW_AUTH_INPUT_MAX)
            return cm_err_set (err, errlen, CM_E_TOO_LARGE, "%s is longer than %d bytes",
                               inputs[i].what, GW_AUTH_INPUT_MAX);

    int rc;
    gw_auth_src_t from;
    if (!s_blank (req->authorization)) {
        from = GW_AUTH_SRC_BEARER;
        rc = s_from_bearer (req->authorization, key, err, errlen);
    } else if (!s_blank (req->x_api_key)) {
        from = GW_AUTH_SRC_X_API_KEY;
        rc = s_take (req->x_api_key, strlen (req->x_api_key), true, key,
                     "the X-API-Key header", err, errlen);
    } else {
        from = GW_AUTH_SRC_QUERY;
        rc = req->query ? s_from_query (req->query, key, err, errlen) : 0;
        if (rc == 0) {
            from = GW_AUTH_SRC_COOKIE;
            rc = req->cookie ? s_from_cookie (req->cookie, key, err, errlen) : 0;
        }
        if (rc == 0)
            return cm_err_set (err, errlen, CM_E_UNAUTHORIZED,
                               "no API key: send 'Authorization: Bearer <key>' or "
                               "'X-API-Key: <key>'");
        if (rc == 1) rc = 0;
    }
    if (rc) {
        key[0] = '\0';
        return rc;
    }
    if (src) *src = from;
    return 0;
}

const char *gw_auth_src_name (gw_auth_src_t src)
{
    switch (src) {
    case GW_AUTH_SRC_BEARER:
        return "bearer";
    case GW_AUTH_SRC_X_API_KEY:
        return "x-api-key";
    case GW_AUTH_SRC_QUERY:
        return "query";
    case GW_AUTH_SRC_COOKIE:
        return "cookie";
    case GW_AUTH_SRC_NONE:
        break;
    }
    return "none";
}
