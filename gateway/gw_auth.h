/*  gw_auth.h - API keys: make them, check their form, hash them, compare
    hashes, and find the one a request presents (DESIGN §6, §10).

    Key format (GW_AUTH_KEY_LEN = 47 characters):

        crl_<43 characters of base64url>

    "crl_" then the 32 random bytes (256 bits from getrandom(2) through
    cm_random) in the URL-safe base64 alphabet of RFC 4648 §5
    (A-Z a-z 0-9 - _) without '=' padding.  43 characters carry 258 bits,
    so the last character's two low bits are zero: only the canonical
    encoding is accepted (one key, one text, one hash).  The alphabet is
    safe as is in a header, a cookie and a URL.  The prefix lets people
    and secret scanners recognise a leaked key.

    What is stored: the SHA-256 of the key's 47 ASCII characters (the
    text, not the decoded bytes), never the key.  A presented key is
    looked up by that hash and the stored hash is compared with
    gw_auth_hash_equal (constant time).

    Secrets: nothing here logs, and no error message written into `err`
    ever contains a presented value: a mistyped key is still nearly a key.

    All functions are pure (no global state) and thread-safe.
*/
#ifndef GW_AUTH_H
#define GW_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define GW_AUTH_PREFIX     "crl_"
#define GW_AUTH_PREFIX_LEN 4
#define GW_AUTH_RAW_LEN    32 //  random bytes in a key
#define GW_AUTH_B64_LEN    43 //  their base64url length
#define GW_AUTH_KEY_LEN    (GW_AUTH_PREFIX_LEN + GW_AUTH_B64_LEN) //  47
#define GW_AUTH_KEY_BUF    (GW_AUTH_KEY_LEN + 1)                  //  with the NUL
#define GW_AUTH_HASH_LEN   32                                     //  SHA-256

//  Longest header value (Authorization, X-API-Key, Cookie) or query string
//  gw_auth_extract looks at; a longer one is refused, not truncated.
#define GW_AUTH_INPUT_MAX 8192

/* ---------------------------------------------------------------- */
/*  Keys and hashes                                                  */

//  Make a new key into key (GW_AUTH_KEY_BUF bytes, NUL-terminated).
//  Returns 0 or CM_E_IO (no randomness; key is then "").
int gw_auth_key_generate (char key[GW_AUTH_KEY_BUF]);

//  Check that key (NUL-terminated) has the format above: the prefix,
//  exactly GW_AUTH_KEY_LEN characters, the alphabet, a canonical last
//  character.  Returns 0 or CM_E_INVALID with a reason in err (which never
//  quotes the key).  err may be NULL.
int gw_auth_key_check (const char *key, char *err, size_t errlen);

//  Decode a well-formed key's 32 random bytes into raw.  Returns 0 or
//  CM_E_INVALID (the key fails gw_auth_key_check).
int gw_auth_key_decode (const char *key, uint8_t raw[GW_AUTH_RAW_LEN]);

//  SHA-256 of len bytes into out.  Returns 0 or CM_E_INTERNAL (libcrypto
//  failed).
int gw_auth_sha256 (const void *data, size_t len, uint8_t out[GW_AUTH_HASH_LEN]);

//  The stored form of a key: gw_auth_key_check, then the SHA-256 of its
//  text.  Returns 0, CM_E_INVALID (bad format: nothing is hashed), or
//  CM_E_INTERNAL.
int gw_auth_key_hash (const char *key, uint8_t out[GW_AUTH_HASH_LEN]);

//  Compare two hashes in time independent of their contents
//  (CRYPTO_memcmp).  True when equal.
bool gw_auth_hash_equal (const uint8_t a[GW_AUTH_HASH_LEN],
                         const uint8_t b[GW_AUTH_HASH_LEN]);

/* ---------------------------------------------------------------- */
/*  The key a request presents                                       */

//  Where a request may carry its key; each may be NULL (absent).  Header
//  values as received (without the name); query is the part after '?'
//  (without the '?', still URL-encoded).
typedef struct {
    const char *authorization; //  "Bearer <key>"
    const char *x_api_key;     //  "<key>"
    const char *query;         //  "a=1&token=<key>&b=2"
    const char *cookie;        //  "theme=dark; corral_key=<key>"
} gw_auth_request_t;

typedef enum {
    GW_AUTH_SRC_NONE = 0,
    GW_AUTH_SRC_BEARER,    //  Authorization: Bearer <key>
    GW_AUTH_SRC_X_API_KEY, //  X-API-Key: <key>
    GW_AUTH_SRC_QUERY,     //  ?token=<key>
    GW_AUTH_SRC_COOKIE,    //  Cookie: corral_key=<key>
} gw_auth_src_t;

#define GW_AUTH_QUERY_PARAM "token"
#define GW_AUTH_COOKIE_NAME "corral_key"

//  Find the key a request presents and copy it into key (GW_AUTH_KEY_BUF
//  bytes).  *src (may be NULL) names where it came from.
//
//  Precedence: Authorization, then X-API-Key, then ?token=, then the
//  cookie.  Explicit credentials a program chose to send come before the
//  browser fallback in the URL, and both before the cookie, which a browser
//  attaches to every request on its own.  The FIRST source that is present
//  decides: if it is malformed the request fails, and the sources after it
//  are not consulted (a broken header must not silently fall back to a
//  stale cookie).  Present means: a header that is non-NULL and not all
//  whitespace; a query with a `token` parameter; a Cookie header with a
//  `corral_key` cookie.
//
//  Parsing:
//    - Authorization: optional whitespace, the scheme "Bearer" (any case),
//      one or more spaces or tabs, the key, optional trailing whitespace.
//    - X-API-Key: the key, surrounded by optional whitespace.
//    - query: '&'-separated name=value pairs; the value of `token` is
//      percent-decoded ('+' is a space, so never valid in a key).  More
//      than one `token` is refused (parameter pollution).
//    - Cookie: ';'-separated name=value pairs with optional whitespace; a
//      value may be in double quotes.  With several `corral_key` cookies
//      the first counts (RFC 6265 §5.4 lists the most specific first).
//  The value found must then pass gw_auth_key_check.
//
//  Returns 0, or
//    CM_E_UNAUTHORIZED  no source presents a key;
//    CM_E_TOO_LARGE     a header or the query is longer than
//                       GW_AUTH_INPUT_MAX (checked for every source, present
//                       or not, before anything is parsed);
//    CM_E_INVALID       the deciding source is malformed: another scheme,
//                       an empty key, bad percent-encoding, a duplicate
//                       token, a value that is not a well-formed key.
//  On error key is "" and err says what is wrong without quoting any value.
int gw_auth_extract (const gw_auth_request_t *req, char key[GW_AUTH_KEY_BUF],
                     gw_auth_src_t *src, char *err, size_t errlen);

//  "bearer", "x-api-key", "query", "cookie", "none".
const char *gw_auth_src_name (gw_auth_src_t src);

#endif
