/*  gw_ratelimit.c - token bucket, per-IP connection counter, per-IP
    token buckets (see gw_ratelimit.h).  */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

#include "cm_error.h"
#include "cm_map.h"
#include "gw_ratelimit.h"

/* ---------------------------------------------------------------- */
/*  Token bucket                                                     */

#define MILLI 1000 //  thousandths per token

static void s_refill (gw_bucket_t *b, int64_t now_ms)
{
    if (now_ms <= b->last_ms) return; //  no time passed, or the clock stepped back
    int64_t cap = (int64_t)b->burst * MILLI;
    int64_t elapsed = now_ms - b->last_ms;
    b->last_ms = now_ms;
    //  rate tokens/s is rate thousandths/ms.  Compare before multiplying:
    //  a long idle time must not overflow.
    if (elapsed >= (cap - b->milli) / b->rate + 1)
        b->milli = cap;
    else
        b->milli += elapsed * b->rate;
    if (b->milli > cap) b->milli = cap;
}

int gw_ratelimit_init (gw_bucket_t *bucket, uint32_t rate, uint32_t burst, int64_t now_ms)
{
    if (rate < 1 || rate > GW_RATELIMIT_RATE_MAX || burst < 1 ||
        burst > GW_RATELIMIT_BURST_MAX)
        return CM_E_INVALID;
    *bucket = (gw_bucket_t){
        .rate = rate, .burst = burst, .milli = (int64_t)burst * MILLI, .last_ms = now_ms};
    return 0;
}

int gw_ratelimit_take (gw_bucket_t *bucket, int64_t now_ms, int64_t *retry_ms)
{
    s_refill (bucket, now_ms);
    if (bucket->milli >= MILLI) {
        bucket->milli -= MILLI;
        if (retry_ms) *retry_ms = 0;
        return 0;
    }
    if (retry_ms) {
        int64_t missing = MILLI - bucket->milli;
        *retry_ms = (missing + bucket->rate - 1) / bucket->rate;
    }
    return CM_E_RATE_LIMITED;
}

uint32_t gw_ratelimit_available (gw_bucket_t *bucket, int64_t now_ms)
{
    s_refill (bucket, now_ms);
    return (uint32_t)(bucket->milli / MILLI);
}

/* ---------------------------------------------------------------- */
/*  Connections per IP                                               */

struct gw_iplimit {
    cm_map_t *counts; //  gw_ip_key_t -> count, stored as the pointer value
    uint32_t cap;
    size_t max_ips;
};

static void s_mapped_v4 (const void *v4, gw_ip_key_t *key)
{
    memset (key->b, 0, 10);
    key->b[10] = 0xff;
    key->b[11] = 0xff;
    memcpy (key->b + 12, v4, 4);
}

int gw_ip_key_from_sockaddr (const struct sockaddr *sa, socklen_t len, gw_ip_key_t *key)
{
    if (!sa) return CM_E_INVALID;
    if (sa->sa_family == AF_INET && len >= (socklen_t)sizeof (struct sockaddr_in)) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        s_mapped_v4 (&in->sin_addr, key);
        return 0;
    }
    if (sa->sa_family == AF_INET6 && len >= (socklen_t)sizeof (struct sockaddr_in6)) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        memcpy (key->b, &in6->sin6_addr, GW_IP_KEY_LEN);
        return 0;
    }
    return CM_E_INVALID;
}

int gw_ip_key_from_text (const char *ip, gw_ip_key_t *key)
{
    struct in_addr v4;
    if (!ip) return CM_E_INVALID;
    if (inet_pton (AF_INET, ip, &v4) == 1) {
        s_mapped_v4 (&v4, key);
        return 0;
    }
    if (inet_pton (AF_INET6, ip, key->b) == 1) return 0;
    return CM_E_INVALID;
}

gw_iplimit_t *gw_iplimit_new (uint32_t cap, size_t max_ips)
{
    if (cap < 1 || max_ips < 1) return NULL;
    gw_iplimit_t *self = calloc (1, sizeof *self);
    if (!self) return NULL;
    self->counts = cm_map_new (GW_IP_KEY_LEN);
    if (!self->counts) {
        free (self);
        return NULL;
    }
    self->cap = cap;
    self->max_ips = max_ips;
    return self;
}

void gw_iplimit_destroy (gw_iplimit_t **self_p)
{
    gw_iplimit_t *self = *self_p;
    if (!self) return;
    cm_map_destroy (&self->counts);
    free (self);
    *self_p = NULL;
}

int gw_iplimit_acquire (gw_iplimit_t *self, const gw_ip_key_t *key)
{
    uintptr_t n = (uintptr_t)cm_map_get (self->counts, key->b);
    if (n >= self->cap) return CM_E_CAPACITY;
    if (n == 0 && cm_map_size (self->counts) >= self->max_ips) return CM_E_CAPACITY;
    return cm_map_put (self->counts, key->b, (void *)(n + 1));
}

int gw_iplimit_release (gw_iplimit_t *self, const gw_ip_key_t *key)
{
    uintptr_t n = (uintptr_t)cm_map_get (self->counts, key->b);
    if (n == 0) return CM_E_NOT_FOUND;
    if (n == 1) {
        cm_map_remove (self->counts, key->b);
        return 0;
    }
    //  Replacing an existing key does not allocate.
    return cm_map_put (self->counts, key->b, (void *)(n - 1));
}

uint32_t gw_iplimit_count (const gw_iplimit_t *self, const gw_ip_key_t *key)
{
    return (uint32_t)(uintptr_t)cm_map_get (self->counts, key->b);
}

size_t gw_iplimit_size (const gw_iplimit_t *self)
{
    return cm_map_size (self->counts);
}

/* ---------------------------------------------------------------- */
/*  A token bucket per IP                                            */

struct gw_ipbuckets {
    cm_map_t *buckets; //  gw_ip_key_t -> gw_bucket_t (malloc'd)
    uint32_t rate, burst;
    size_t max_ips;
    int64_t full_sweep_ms; //  last sweep a full table caused (take)
    bool full_swept;
};

//  A full table sweeps for a new address at most this often: a sweep walks
//  every address, and one per request would be work on the hot path for
//  whoever fills the table.
#define FULL_SWEEP_MS 100

gw_ipbuckets_t *gw_ipbuckets_new (uint32_t rate, uint32_t burst, size_t max_ips)
{
    gw_bucket_t probe;
    if (max_ips < 1 || gw_ratelimit_init (&probe, rate, burst, 0)) return NULL;
    gw_ipbuckets_t *self = calloc (1, sizeof *self);
    if (!self) return NULL;
    self->buckets = cm_map_new (GW_IP_KEY_LEN);
    if (!self->buckets) {
        free (self);
        return NULL;
    }
    self->rate = rate;
    self->burst = burst;
    self->max_ips = max_ips;
    return self;
}

void gw_ipbuckets_destroy (gw_ipbuckets_t **self_p)
{
    gw_ipbuckets_t *self = *self_p;
    if (!self) return;
    size_t pos = 0;
    void *value;
    while (cm_map_next (self->buckets, &pos, NULL, &value)) free (value);
    cm_map_destroy (&self->buckets);
    free (self);
    *self_p = NULL;
}

int gw_ipbuckets_take (gw_ipbuckets_t *self, const gw_ip_key_t *key, int64_t now_ms,
                       int64_t *retry_ms)
{
    gw_bucket_t *b = cm_map_get (self->buckets, key->b);
    if (!b) {
        if (cm_map_size (self->buckets) >= self->max_ips) {
            if (self->full_swept && now_ms - self->full_sweep_ms < FULL_SWEEP_MS &&
                now_ms >= self->full_sweep_ms)
                return 0;
            self->full_swept = true;
            self->full_sweep_ms = now_ms;
            if (gw_ipbuckets_sweep (self, now_ms) >= self->max_ips) return 0;
        }
        b = malloc (sizeof *b);
        if (!b) return 0; //  untracked, as when the table is full
        gw_ratelimit_init (b, self->rate, self->burst, now_ms);
        if (cm_map_put (self->buckets, key->b, b)) {
            free (b);
            return 0;
        }
    }
    return gw_ratelimit_take (b, now_ms, retry_ms);
}

size_t gw_ipbuckets_sweep (gw_ipbuckets_t *self, int64_t now_ms)
{
    size_t pos = 0;
    const void *key;
    void *value;
    while (cm_map_next (self->buckets, &pos, &key, &value)) {
        gw_bucket_t *b = value;
        if (gw_ratelimit_available (b, now_ms) < b->burst) continue;
        cm_map_remove (self->buckets, key);
        free (b);
    }
    return cm_map_size (self->buckets);
}
