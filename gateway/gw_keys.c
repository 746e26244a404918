/*  gw_keys.c - API keys as the gateway sees them (DESIGN §10).

    A presented key is hashed (gw_auth.c) and looked up by its SHA-256 in
    corral-store (store.key.get); the stored hash is compared again in
    constant time.  Answers are cached per hash for cfg key_cache_ms, so a
    reconnect storm costs one store read per key, and a revoked key stops
    working within that time: a refresh that finds the key revoked or gone
    closes every connection using it.  Unknown keys are cached too, so a
    client guessing keys costs the store one read per guess per period.

    A key not in the cache (or a refused one whose answer is stale) costs
    a store read, so it first takes a token of its address's probe limit
    (cfg probe_rate, probe_burst; IPv6 per /64): a client presenting
    ever-new keys is refused (429, WebSocket close 1013) once its address
    runs out, before the store is asked.

    Each entry holds the key's token bucket (cfg rate per second, cfg
    burst), shared by every connection and request using the key.

    The map is keyed by the first 16 bytes of the hash (cm_map's widest
    key); the full 32 bytes are compared on every lookup.
*/
#include <stdlib.h>
#include <string.h>

#include "cm_log.h"
#include "cm_time.h"
#include "gw.h"
#include "gw_auth.h"
#include "gw_http.h"

#define KEYS_MAX 100000 //  entries cached at most

static void on_auth (gw_server_t *self, gw_conn_t *conn)
{
    if (conn->kind == GW_CONN_WS)
        gw_acp_on_auth (self, conn);
    else
        gw_http_on_auth (self, conn);
}

static void on_key (gw_server_t *self, void *arg, int rc, proto_msg_t *reply);

static void lookup (gw_server_t *self, gw_key_t *key)
{
    uint8_t *hash = malloc (32);
    if (!hash) return;
    memcpy (hash, key->hash, 32);
    proto_key_get_t req = {.hash = {hash, 32}};
    if (gw_call_store (self, PROTO_STORE_KEY_GET, &req, on_key, hash, free))
        free (hash);
    else
        key->refreshing = true;
}

static gw_key_t *find (gw_server_t *self, const uint8_t hash[32])
{
    gw_key_t *key = cm_map_get (self->keys, hash);
    return key && gw_auth_hash_equal (key->hash, hash) ? key : NULL;
}

static void on_key (gw_server_t *self, void *arg, int rc, proto_msg_t *reply)
{
    uint8_t *hash = arg;
    gw_key_t *key = find (self, hash);
    free (hash);
    if (!key) return;
    key->refreshing = false;
    proto_key_reply_t *r = rc == 0 && reply ? proto_body (reply, key_reply) : NULL;
    bool transient = rc && rc != CM_E_NOT_FOUND;
    gw_auth_state_t was = key->state;
    if (transient) {
        //  The store could not answer: keep a known key working, refuse
        //  a new one for now (the client may retry).
        if (was == GW_AUTH_OK) return;
        key->state = GW_AUTH_BAD;
        key->checked_ms = 0; //  ask again next time
    } else if (r && r->key->hash.size == 32 &&
               gw_auth_hash_equal (r->key->hash.data, key->hash) && !r->key->revoked &&
               strlen (r->key->tenant) < GW_TENANT_MAX) {
        key->state = GW_AUTH_OK;
        snprintf (key->tenant, sizeof key->tenant, "%s", r->key->tenant);
        key->admin = r->key->admin;
        key->id = r->key->id;
        key->budget_tokens = r->key->budget_tokens;
        key->budget_micros = r->key->budget_micros;
        key->checked_ms = cm_mono_ms ();
    } else {
        key->state = GW_AUTH_BAD;
        key->checked_ms = cm_mono_ms ();
    }
    for (gw_conn_t *conn = self->all; conn; conn = conn->all_next) {
        if (conn->key != key) continue;
        if (conn->auth == GW_AUTH_PENDING) {
            conn->auth = key->state;
            if (transient)
                snprintf (conn->close_reason, sizeof conn->close_reason, "transient");
            on_auth (self, conn);
        } else if (was == GW_AUTH_OK && key->state == GW_AUTH_BAD) {
            conn->auth = GW_AUTH_BAD;
            gw_conn_close (self, conn, 1008, "the API key was revoked");
        }
    }
}

//  Past the address's probe limit: refused without asking the store.
static gw_key_t *refuse_limited (gw_conn_t *conn)
{
    conn->auth = GW_AUTH_BAD;
    snprintf (conn->close_reason, sizeof conn->close_reason, "limited");
    return NULL;
}

gw_key_t *gw_keys_acquire (gw_server_t *self, gw_conn_t *conn, const uint8_t hash[32])
{
    gw_key_t *key = find (self, hash);
    if (!key) {
        if (gw_probe_take (self, conn)) return refuse_limited (conn);
        if (cm_map_size (self->keys) >= KEYS_MAX) gw_keys_tick (self, INT64_MAX);
        key = calloc (1, sizeof *key);
        if (!key) return NULL;
        memcpy (key->hash, hash, 32);
        key->state = GW_AUTH_PENDING;
        gw_ratelimit_init (&key->bucket, (uint32_t)self->cfg->rate,
                           (uint32_t)self->cfg->burst, cm_mono_ms ());
        if (cm_map_put (self->keys, hash, key)) {
            free (key);
            return NULL;
        }
        lookup (self, key);
    } else if (!key->refreshing &&
               (key->state != GW_AUTH_OK ||
                cm_mono_ms () - key->checked_ms > self->cfg->key_cache_ms)) {
        //  Stale: a known key keeps working while it is checked again; an
        //  unknown or refused one waits for the new answer.
        if (key->state != GW_AUTH_OK &&
            cm_mono_ms () - key->checked_ms > self->cfg->key_cache_ms) {
            //  Asking again about a refused key costs a store read too.
            if (gw_probe_take (self, conn)) return refuse_limited (conn);
            key->state = GW_AUTH_PENDING;
        }
        if (key->state == GW_AUTH_PENDING || key->state == GW_AUTH_OK) lookup (self, key);
    }
    key->users++;
    conn->key = key;
    conn->auth = key->state;
    return key;
}

void gw_keys_release (gw_server_t *self, gw_key_t *key)
{
    (void)self;
    if (key && key->users) key->users--;
}

int gw_keys_take (gw_server_t *self, gw_key_t *key, int64_t *retry_ms)
{
    int rc = gw_ratelimit_take (&key->bucket, cm_mono_ms (), retry_ms);
    if (rc) self->stats.rate_limited++;
    return rc;
}

int gw_probe_take (gw_server_t *self, gw_conn_t *conn)
{
    if (!self->probes) return 0;
    //  One IPv6 host commonly holds a whole /64: its probes count per /64,
    //  or each of its addresses would bring a fresh burst.
    static const uint8_t v4_mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    gw_ip_key_t ip = conn->ip;
    if (memcmp (ip.b, v4_mapped, sizeof v4_mapped) != 0) memset (ip.b + 8, 0, 8);
    int rc = gw_ipbuckets_take (self->probes, &ip, cm_mono_ms (), &conn->retry_ms);
    if (rc) self->stats.probes_limited++;
    return rc;
}

void gw_keys_tick (gw_server_t *self, int64_t now)
{
    if (self->probes && now != INT64_MAX) gw_ipbuckets_sweep (self->probes, now);
    size_t pos = 0;
    const void *k;
    void *value;
    gw_key_t *drop[256];
    size_t ndrop = 0;
    while (cm_map_next (self->keys, &pos, &k, &value) && ndrop < 256) {
        gw_key_t *key = value;
        //  A key in use is checked again once its answer is stale, so a
        //  revoked key's open connections close (on_key) without waiting
        //  for another connection to present it.
        if (key->users && key->state == GW_AUTH_OK && !key->refreshing &&
            now != INT64_MAX && now - key->checked_ms > self->cfg->key_cache_ms)
            lookup (self, key);
        if (!key->users && !key->refreshing &&
            (now == INT64_MAX || now - key->checked_ms > self->cfg->key_cache_ms))
            drop[ndrop++] = key;
    }
    for (size_t i = 0; i < ndrop; i++) {
        cm_map_remove (self->keys, drop[i]->hash);
        free (drop[i]);
    }
}

void gw_keys_free_all (gw_server_t *self)
{
    if (!self->keys) return;
    size_t pos = 0;
    void *value;
    while (cm_map_next (self->keys, &pos, NULL, &value)) free (value);
    cm_map_destroy (&self->keys);
}
