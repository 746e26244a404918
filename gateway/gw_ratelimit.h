/*  gw_ratelimit.h - the gateway's admission limits (DESIGN §6):

      - a token bucket per API key: `rate` tokens per second flow in, at
        most `burst` are kept, a request takes one;
      - a per-IP connection counter: at most `cap` open connections from
        one address, in a table of at most `max_ips` addresses;
      - a token bucket per IP for probes: requests that make the gateway
        ask the store or the session service before any key is accepted
        (a key not in its cache, /v1/health/ready).

    Time is passed in (monotonic milliseconds, cm_mono_ms in the server),
    so tests drive the clock without sleeping.  Neither is thread-safe:
    one per event loop, like everything else in the gateway.
*/
#ifndef GW_RATELIMIT_H
#define GW_RATELIMIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* ---------------------------------------------------------------- */
/*  Token bucket                                                     */

#define GW_RATELIMIT_RATE_MAX  1000000 //  tokens per second at most
#define GW_RATELIMIT_BURST_MAX 1000000 //  tokens kept at most

//  Plain value type: embed it, no destroy.  Tokens are kept in
//  thousandths, so with `rate` tokens per second exactly `rate`
//  thousandths arrive per millisecond and nothing is lost to rounding.
typedef struct {
    uint32_t rate;   //  tokens per second
    uint32_t burst;  //  bucket size in tokens
    int64_t milli;   //  tokens held, in thousandths
    int64_t last_ms; //  time of the last refill
} gw_bucket_t;

//  Start a full bucket (burst tokens available now).  Returns 0 or
//  CM_E_INVALID: rate and burst must be 1..their _MAX.
int gw_ratelimit_init (gw_bucket_t *bucket, uint32_t rate, uint32_t burst,
                       int64_t now_ms);

//  Take one token.  Returns 0, or CM_E_RATE_LIMITED with *retry_ms (may
//  be NULL) set to the milliseconds until one token will be there (>= 1).
//  A clock that goes backwards adds nothing and is not remembered.
int gw_ratelimit_take (gw_bucket_t *bucket, int64_t now_ms, int64_t *retry_ms);

//  Whole tokens available at now_ms (refills first).
uint32_t gw_ratelimit_available (gw_bucket_t *bucket, int64_t now_ms);

/* ---------------------------------------------------------------- */
/*  Connections per IP                                               */

//  Addresses are 16-byte keys: an IPv6 address as is, an IPv4 address as
//  its IPv4-mapped IPv6 form (::ffff:a.b.c.d), so "10.0.0.1" and
//  "::ffff:10.0.0.1" count as the same peer.
#define GW_IP_KEY_LEN 16
typedef struct {
    uint8_t b[GW_IP_KEY_LEN];
} gw_ip_key_t;

//  Key of an AF_INET / AF_INET6 socket address.  Returns 0 or CM_E_INVALID
//  (another family, or len too short).
int gw_ip_key_from_sockaddr (const struct sockaddr *sa, socklen_t len, gw_ip_key_t *key);
//  Key of a textual address ("10.0.0.1", "2001:db8::1").  Returns 0 or
//  CM_E_INVALID.
int gw_ip_key_from_text (const char *ip, gw_ip_key_t *key);

typedef struct gw_iplimit gw_iplimit_t;

//  A table allowing cap (>= 1) connections per address and tracking at
//  most max_ips (>= 1) addresses at once.  NULL on a bad argument or out of
//  memory.
gw_iplimit_t *gw_iplimit_new (uint32_t cap, size_t max_ips);
//  Free the table; sets *self_p to NULL.  Idempotent.
void gw_iplimit_destroy (gw_iplimit_t **self_p);

//  Count one more connection from key.  Returns 0, or CM_E_CAPACITY when
//  that address already has cap connections or the table already tracks
//  max_ips other addresses (nothing is counted then), or CM_E_NOMEM.
int gw_iplimit_acquire (gw_iplimit_t *self, const gw_ip_key_t *key);
//  Count one connection from key fewer (after a successful acquire);
//  the address is forgotten at zero.  Returns 0, or CM_E_NOT_FOUND when
//  key holds no connection (a release without acquire: a caller's bug).
int gw_iplimit_release (gw_iplimit_t *self, const gw_ip_key_t *key);
//  Connections counted for key.
uint32_t gw_iplimit_count (const gw_iplimit_t *self, const gw_ip_key_t *key);
//  Addresses with at least one connection.
size_t gw_iplimit_size (const gw_iplimit_t *self);

/* ---------------------------------------------------------------- */
/*  A token bucket per IP                                            */

typedef struct gw_ipbuckets gw_ipbuckets_t;

//  Buckets of rate / burst (as gw_ratelimit_init) for at most max_ips (>= 1)
//  addresses.  An address is tracked from its first take until its bucket
//  is full again (gw_ipbuckets_sweep), so idle addresses cost nothing.
//  NULL on a bad argument or out of memory.
gw_ipbuckets_t *gw_ipbuckets_new (uint32_t rate, uint32_t burst, size_t max_ips);
//  Free the table; sets *self_p to NULL.  Idempotent.
void gw_ipbuckets_destroy (gw_ipbuckets_t **self_p);

//  Take one token of key's bucket.  Returns 0, or CM_E_RATE_LIMITED with
//  *retry_ms (may be NULL) set to the milliseconds until one will be there.
//  A new address when max_ips others are tracked (after a sweep, done at
//  most every 100 ms for this) is let through untracked: the limit is per address, and whoever holds that
//  many addresses gets past per-address limits anyway; refusing would
//  lock out everyone else instead.  Returns 0 then too.
int gw_ipbuckets_take (gw_ipbuckets_t *self, const gw_ip_key_t *key, int64_t now_ms,
                       int64_t *retry_ms);
//  Forget every address whose bucket is full again at now_ms.  Returns
//  the addresses still tracked.
size_t gw_ipbuckets_sweep (gw_ipbuckets_t *self, int64_t now_ms);

#endif
