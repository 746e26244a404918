/*  test_keys_cli.c - corral-keys against the real corral-store.

    Usage: test_keys_cli <path to corral-store> <path to corral-keys>

    Creates keys with the CLI, then checks in the store (store.key.get by
    the SHA-256 of the printed key) that the record is what was asked for;
    that list shows ids and labels but never a key or a hash, filters by
    tenant, and shows a revoke; that revoke marks the record; that usage
    errors and an unreachable store give the documented exit codes; and
    that no key ever reaches the store's log or the CLI's stderr.
*/
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>

#include "cm_id.h"
#include "gw_auth.h"
#include "it_store.h"

#define CALL_MS 5000
#define OUT_MAX 65536

typedef struct {
    it_store_t *store;
    const char *keys_bin;
    char err_path[IT_PATH_MAX]; //  the CLI's stderr of the last run
    char out[OUT_MAX];          //  its stdout
    char err[OUT_MAX];
} test_t;

static void read_file (const char *path, char *buf, size_t cap)
{
    buf[0] = '\0';
    FILE *f = fopen (path, "r");
    if (!f) return;
    size_t n = fread (buf, 1, cap - 1, f);
    buf[n] = '\0';
    fclose (f);
}

//  Run "[env] corral-keys args" and return its exit status; stdout goes
//  to t->out, stderr to t->err.  args and env are simple words (no
//  quoting needed: they come from this test).
static int run_keys (test_t *t, const char *env, const char *args)
{
    char cmd[1024];
    snprintf (cmd, sizeof cmd, "%s %s %s 2>%s", env ? env : "", t->keys_bin, args,
              t->err_path);
    FILE *p = popen (cmd, "r");
    IT_CHECK (p, "popen: %s", strerror (errno));
    size_t n = fread (t->out, 1, sizeof t->out - 1, p);
    t->out[n] = '\0';
    int status = pclose (p);
    read_file (t->err_path, t->err, sizeof t->err);
    IT_CHECK (WIFEXITED (status), "corral-keys %s did not exit normally", args);
    return WEXITSTATUS (status);
}

//  The value after "<label>: " on its own line of text, into out.
static void field (const char *text, const char *label, char *out, size_t cap)
{
    char pat[32];
    snprintf (pat, sizeof pat, "%s: ", label);
    const char *p = strstr (text, pat);
    IT_CHECK (p, "no '%s' line in:\n%s", label, text);
    p += strlen (pat);
    size_t n = strcspn (p, "\n");
    IT_CHECK (n < cap, "'%s' value too long", label);
    memcpy (out, p, n);
    out[n] = '\0';
}

//  The list line of key id (NULL if absent), copied into line.
static const char *list_line (const char *list, const char *id, char *line, size_t cap)
{
    const char *p = strstr (list, id);
    if (!p) return NULL;
    size_t n = strcspn (p, "\n");
    IT_CHECK (n < cap, "list line too long");
    memcpy (line, p, n);
    line[n] = '\0';
    return line;
}

static void hex (const uint8_t *b, size_t n, char *out, bool upper)
{
    for (size_t i = 0; i < n; i++) sprintf (out + 2 * i, upper ? "%02X" : "%02x", b[i]);
}

//  Neither the key nor its hash (hex either case) appears in text.
static void check_no_secret (const char *text, const char *what, const char *key)
{
    uint8_t h[GW_AUTH_HASH_LEN];
    char hx[2 * GW_AUTH_HASH_LEN + 1];
    IT_OK (gw_auth_key_hash (key, h));
    IT_CHECK (!strstr (text, key), "%s shows a key", what);
    //  The random part alone, too (a prefix-stripped leak is still a leak).
    IT_CHECK (!strstr (text, key + GW_AUTH_PREFIX_LEN), "%s shows a key body", what);
    hex (h, sizeof h, hx, false);
    IT_CHECK (!strstr (text, hx), "%s shows a key hash", what);
    hex (h, sizeof h, hx, true);
    IT_CHECK (!strstr (text, hx), "%s shows a key hash", what);
}

//  store.key.get by the hash of key; the record stays in *reply.
static const proto_key_rec_t *get_key (proto_rpc_t *rpc, proto_msg_t *reply,
                                       const char *key)
{
    uint8_t h[GW_AUTH_HASH_LEN];
    IT_OK (gw_auth_key_hash (key, h));
    proto_key_get_t req = {.hash = {h, sizeof h}};
    IT_OK (proto_rpc_call (rpc, PROTO_STORE_KEY_GET, &req, reply, CALL_MS));
    const proto_key_reply_t *r = proto_body (reply, key_reply);
    IT_CHECK (r && r->key, "key.get answered with %s", proto_type_name (reply->type));
    IT_CHECK (r->key->hash.size == sizeof h && gw_auth_hash_equal (r->key->hash.data, h),
              "the stored hash is not the SHA-256 of the printed key");
    return r->key;
}

int main (int argc, char **argv)
{
    IT_CHECK (argc == 3, "usage: %s <corral-store> <corral-keys>", argv[0]);
    static test_t t;
    t.keys_bin = argv[2];
    t.store = it_store_new (argv[1]);
    snprintf (t.err_path, sizeof t.err_path, "%s/keys.err", t.store->dir);
    it_store_start (t.store, NULL);
    proto_rpc_t *rpc = it_store_connect (t.store, 10000, NULL);
    proto_msg_t reply;
    proto_msg_init (&reply);

    char ep_flag[IT_PATH_MAX + 32], ep_env[IT_PATH_MAX + 32], args[512];
    snprintf (ep_flag, sizeof ep_flag, "--store-endpoint %s", t.store->endpoint);
    snprintf (ep_env, sizeof ep_env, "CORRAL_STORE_ENDPOINT=%s", t.store->endpoint);

    //  1. create: the key once on stdout, its hash in the store.
    char key1[GW_AUTH_KEY_BUF + 8], id1[CM_UUID_STR_LEN + 8];
    snprintf (args, sizeof args, "create --tenant acme --name ci-bot %s", ep_flag);
    IT_CHECK (run_keys (&t, NULL, args) == 0, "create failed: %s", t.err);
    field (t.out, "key", key1, sizeof key1);
    field (t.out, "id", id1, sizeof id1);
    IT_OK (gw_auth_key_check (key1, NULL, 0));
    IT_CHECK (strstr (strstr (t.out, key1) + 1, key1) == NULL,
              "the key is printed twice");
    check_no_secret (t.err, "create's stderr", key1);
    cm_uuid_t id;
    IT_OK (cm_uuid_parse (id1, &id));
    const proto_key_rec_t *rec = get_key (rpc, &reply, key1);
    IT_CHECK (memcmp (rec->id.b, id.b, 16) == 0,
              "stored id differs from the printed one");
    IT_CHECK (strcmp (rec->tenant, "acme") == 0, "tenant %s", rec->tenant);
    IT_CHECK (rec->name && strcmp (rec->name, "ci-bot") == 0, "name");
    IT_CHECK (!rec->admin && !rec->revoked, "flags of a plain new key");
    IT_CHECK (rec->created_ms > 0, "created_ms");

    //  2. an admin key for another tenant, the endpoint from the environment.
    char key2[GW_AUTH_KEY_BUF + 8], id2[CM_UUID_STR_LEN + 8];
    IT_CHECK (run_keys (&t, ep_env, "create --tenant globex --admin") == 0,
              "create --admin failed: %s", t.err);
    field (t.out, "key", key2, sizeof key2);
    field (t.out, "id", id2, sizeof id2);
    IT_CHECK (strcmp (key1, key2) != 0 && strcmp (id1, id2) != 0, "two keys alike");
    rec = get_key (rpc, &reply, key2);
    IT_CHECK (rec->admin && strcmp (rec->tenant, "globex") == 0, "admin key record");

    //  3. list: both, with labels, never a key or a hash.
    char line[512];
    snprintf (args, sizeof args, "list %s", ep_flag);
    IT_CHECK (run_keys (&t, NULL, args) == 0, "list failed: %s", t.err);
    check_no_secret (t.out, "list", key1);
    check_no_secret (t.out, "list", key2);
    IT_CHECK (list_line (t.out, id1, line, sizeof line), "list lacks key 1:\n%s", t.out);
    IT_CHECK (strstr (line, "\tacme\tci-bot\tno\t") && strstr (line, "\tno"),
              "key 1 line: %s", line);
    IT_CHECK (list_line (t.out, id2, line, sizeof line), "list lacks key 2");
    IT_CHECK (strstr (line, "\tglobex\t-\tyes\t"), "key 2 line: %s", line);

    //  4. the tenant filter.
    snprintf (args, sizeof args, "list --tenant globex %s", ep_flag);
    IT_CHECK (run_keys (&t, NULL, args) == 0, "list --tenant failed: %s", t.err);
    IT_CHECK (strstr (t.out, id2) && !strstr (t.out, id1), "tenant filter:\n%s", t.out);
    snprintf (args, sizeof args, "list --tenant nobody %s", ep_flag);
    IT_CHECK (run_keys (&t, NULL, args) == 0, "list of an empty tenant failed");
    IT_CHECK (!strstr (t.out, id1) && !strstr (t.out, id2), "empty tenant lists keys");

    //  5. revoke: the record is marked, list shows it, the other is untouched;
    //  a second revoke is harmless.
    snprintf (args, sizeof args, "revoke %s %s", id1, ep_flag);
    IT_CHECK (run_keys (&t, NULL, args) == 0, "revoke failed: %s", t.err);
    rec = get_key (rpc, &reply, key1);
    IT_CHECK (rec->revoked, "key 1 not marked revoked");
    IT_CHECK (strcmp (rec->tenant, "acme") == 0 && rec->name &&
                  strcmp (rec->name, "ci-bot") == 0 && memcmp (rec->id.b, id.b, 16) == 0,
              "revoke changed more than the flag");
    rec = get_key (rpc, &reply, key2);
    IT_CHECK (!rec->revoked, "key 2 revoked too");
    snprintf (args, sizeof args, "revoke %s %s", ep_flag, id1); //  id after a flag
    IT_CHECK (run_keys (&t, NULL, args) == 0, "second revoke failed: %s", t.err);
    snprintf (args, sizeof args, "list %s", ep_flag);
    IT_CHECK (run_keys (&t, NULL, args) == 0, "list failed");
    IT_CHECK (list_line (t.out, id1, line, sizeof line), "revoked key not listed");
    IT_CHECK (strlen (line) > 4 && strcmp (line + strlen (line) - 4, "\tyes") == 0,
              "revoked column of key 1: %s", line);

    //  6. failures and exit codes: 1 failed, 2 usage.
    char other[CM_UUID_STR_LEN];
    cm_uuid7 (&id);
    snprintf (args, sizeof args, "revoke %s %s", cm_uuid_fmt (&id, other), ep_flag);
    IT_CHECK (run_keys (&t, NULL, args) == 1, "revoke of an unknown id");
    snprintf (args, sizeof args, "revoke not-a-uuid %s", ep_flag);
    IT_CHECK (run_keys (&t, NULL, args) == 2, "revoke of a malformed id");
    snprintf (args, sizeof args, "revoke %s", ep_flag);
    IT_CHECK (run_keys (&t, NULL, args) == 2, "revoke without an id");
    snprintf (args, sizeof args, "create %s", ep_flag);
    IT_CHECK (run_keys (&t, NULL, args) == 2, "create without --tenant");
    snprintf (args, sizeof args, "list --admin %s", ep_flag);
    IT_CHECK (run_keys (&t, NULL, args) == 2, "list with a create-only flag");
    IT_CHECK (run_keys (&t, NULL, "frobnicate") == 2, "unknown command");
    IT_CHECK (run_keys (&t, NULL, "") == 2, "no command");
    IT_CHECK (run_keys (&t, NULL, "--help") == 0 && strstr (t.out, "Exit status"),
              "--help documents the exit codes");
    IT_CHECK (run_keys (&t, NULL, "create --help") == 0 && strstr (t.out, "--tenant"),
              "create --help lists its options");
    char none[IT_PATH_MAX + 64];
    snprintf (none, sizeof none,
              "list --store-endpoint ipc://%s/none.sock --timeout 300ms", t.store->dir);
    IT_CHECK (run_keys (&t, NULL, none) == 1, "an unreachable store is a failure");
    IT_CHECK (strstr (t.err, "did not answer"), "unreachable store message: %s", t.err);

    //  7. the store never logged a key.
    static char log[1 << 20];
    read_file (t.store->log_path, log, sizeof log);
    IT_CHECK (strlen (log) > 0, "the store's log is empty (wrong path?)");
    check_no_secret (log, "the store's log", key1);
    check_no_secret (log, "the store's log", key2);

    proto_msg_fini (&reply);
    proto_rpc_destroy (&rpc);
    printf ("keys_cli: ok\n");
    return 0;
}
