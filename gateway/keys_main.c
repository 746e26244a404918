/*  corral-keys: create, list and revoke API keys, straight in corral-store.

    A new key is printed once on stdout and never again: the store keeps
    only its SHA-256 (gw_auth.h).  list shows ids and labels, never keys or
    hashes.  Revoking marks the record (revoked = true), so the id stays
    listed and the gateway refuses the key.
*/
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cm_config.h"
#include "cm_id.h"
#include "cm_log.h"
#include "cm_time.h"
#include "cm_usd.h"
#include "cm_zmq.h"
#include "gw_auth.h"
#include "proto_rpc.h"

#define EXIT_OK      0
#define EXIT_FAIL    1
#define EXIT_USAGE   2
#define TENANT_MAX   128  //  bytes in a tenant name
#define NAME_MAX_LEN 128  //  bytes in a key's label
#define LIST_LIMIT   1000 //  the store's page limit for key.list

typedef struct {
    char *endpoint, *tenant, *name, *log_level;
    int64_t timeout;
    bool admin;
    bool from_env;         //  create: install $CORRAL_API_KEY instead of a new key
    int64_t budget_tokens; //  create: the key's budgets (docs/limits.md)
    char *budget_usd;
    int64_t budget_micros; //  budget_usd parsed
} config_t;

#define OPT(name, type, field, def, help, min, max, choices)                        \
    {                                                                               \
        name, type, offsetof (config_t, field), def, help, min, max, choices, false \
    }
#define OPT_ENDPOINT                                                          \
    OPT ("store-endpoint", CM_CFG_ENDPOINT, endpoint, "tcp://127.0.0.1:7701", \
         "corral-store's address", 0, 0, NULL)
#define OPT_TIMEOUT                                                                      \
    OPT ("timeout", CM_CFG_MS, timeout, "5s", "give up on the store after this long", 1, \
         600000, NULL)
#define OPT_LOG_LEVEL                                                                    \
    OPT ("log-level", CM_CFG_ENUM, log_level, "warn", "least severe level logged", 0, 0, \
         "debug|info|warn|error")

static const cm_cfg_opt_t s_create_opts[] = {
    OPT ("tenant", CM_CFG_STR, tenant, NULL, "tenant the key acts for (required)", 0, 0,
         NULL),
    OPT ("name", CM_CFG_STR, name, NULL, "a label for people", 0, 0, NULL),
    OPT ("admin", CM_CFG_BOOL, admin, "false", "may manage keys and see all tenants", 0,
         0, NULL),
    OPT ("budget-tokens", CM_CFG_INT, budget_tokens, "0",
         "tokens (input + output) all turns this key prompts may use; 0 = no limit", 0,
         INT64_MAX, NULL),
    OPT ("budget-usd", CM_CFG_STR, budget_usd, NULL,
         "cost in US dollars all turns this key prompts may reach, e.g. 5.00", 0, 0,
         NULL),
    OPT ("from-env", CM_CFG_BOOL, from_env, "false",
         "install the key in $CORRAL_API_KEY instead of making one (corral up)", 0, 0,
         NULL),
    OPT_ENDPOINT,
    OPT_TIMEOUT,
    OPT_LOG_LEVEL,
    CM_CFG_END};

static const cm_cfg_opt_t s_list_opts[] = {
    OPT ("tenant", CM_CFG_STR, tenant, NULL, "only this tenant's keys", 0, 0, NULL),
    OPT_ENDPOINT, OPT_TIMEOUT, OPT_LOG_LEVEL, CM_CFG_END};

static const cm_cfg_opt_t s_revoke_opts[] = {OPT_ENDPOINT, OPT_TIMEOUT, OPT_LOG_LEVEL,
                                             CM_CFG_END};

static const cm_cfg_opt_t s_budget_opts[] = {
    OPT ("budget-tokens", CM_CFG_INT, budget_tokens, "0",
         "tokens (input + output) all turns this key prompts may use; 0 = no limit", 0,
         INT64_MAX, NULL),
    OPT ("budget-usd", CM_CFG_STR, budget_usd, NULL,
         "cost in US dollars all turns this key prompts may reach; unset = no limit", 0,
         0, NULL),
    OPT_ENDPOINT,
    OPT_TIMEOUT,
    OPT_LOG_LEVEL,
    CM_CFG_END};

#define EXIT_CODES_TEXT                                                     \
    "Exit status: 0 done; 1 failed (store unreachable or refused, no such " \
    "key); 2 usage error."

static void s_usage (FILE *out)
{
    fprintf (out,
             "Usage: corral-keys COMMAND [OPTIONS]\n"
             "Manage Corral API keys directly in corral-store.\n"
             "\n"
             "Commands:\n"
             "  create --tenant T [--name N] [--admin] [--budget-tokens N] "
             "[--budget-usd X]\n"
             "        Make a key; print it ONCE on stdout ('key: ...', 'id: ...').\n"
             "        Only its SHA-256 is stored: a lost key cannot be shown again.\n"
             "        --from-env: install $CORRAL_API_KEY instead (prints 'id: ...';\n"
             "        a key already stored is left as it is).\n"
             "  list [--tenant T]\n"
             "        Print id, tenant, name, admin, created, revoked (never keys).\n"
             "  revoke ID\n"
             "        Mark the key with this id revoked; the gateway refuses it.\n"
             "  budget ID [--budget-tokens N] [--budget-usd X]\n"
             "        Set the key's budgets (both; an omitted one is no limit). The\n"
             "        gateway uses them within its --key-cache time (docs/limits.md).\n"
             "\n"
             "Every command takes --store-endpoint (env CORRAL_STORE_ENDPOINT),\n"
             "--timeout and --log-level; 'corral-keys COMMAND --help' lists them.\n"
             "\n" EXIT_CODES_TEXT "\n");
}

static const cm_cfg_opt_t *s_find_opt (const cm_cfg_opt_t *opts, const char *arg)
{
    if (strncmp (arg, "--", 2) != 0) return NULL;
    const char *name = arg + 2;
    size_t len = strcspn (name, "=");
    for (const cm_cfg_opt_t *o = opts; o->name; o++)
        if (strlen (o->name) == len && strncmp (o->name, name, len) == 0) return o;
    return NULL;
}

//  Remove the first positional argument from argv (an argument that is
//  neither a flag nor a flag's separate value) into *pos.  argv keeps its
//  order; *argc shrinks by one.
static void s_take_positional (const cm_cfg_opt_t *opts, int *argc, char **argv,
                               const char **pos)
{
    *pos = NULL;
    for (int i = 1; i < *argc; i++) {
        const char *a = argv[i];
        if (strcmp (a, "--") == 0) {
            if (i + 1 < *argc) {
                *pos = argv[i + 1];
                memmove (&argv[i + 1], &argv[i + 2],
                         (size_t)(*argc - i - 2) * sizeof *argv);
                (*argc)--;
            }
            return;
        }
        if (a[0] == '-') {
            const cm_cfg_opt_t *o = s_find_opt (opts, a);
            if (o && o->type != CM_CFG_BOOL && !strchr (a, '=')) i++; //  its value
            continue;
        }
        *pos = a;
        memmove (&argv[i], &argv[i + 1], (size_t)(*argc - i - 1) * sizeof *argv);
        (*argc)--;
        return;
    }
}

//  A tenant or label: bounded, printable, no control characters (they
//  would garble list output and logs).
static bool s_label_ok (const char *s, size_t max)
{
    size_t n = strnlen (s, max + 1);
    if (n == 0 || n > max) return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f) return false;
    return true;
}

//  Print a stored string, control characters as '?' (a record written by
//  another tool may hold anything).
static void s_print_field (const char *s)
{
    if (!s || !*s) {
        fputs ("-", stdout);
        return;
    }
    for (; *s; s++) putchar ((unsigned char)*s < 0x20 || *s == 0x7f ? '?' : *s);
}

static int s_store_failed (const char *what, int rc, const proto_msg_t *reply,
                           const config_t *cfg)
{
    if (rc == CM_E_UNAVAILABLE || rc == CM_E_TIMEOUT)
        fprintf (stderr, "corral-keys: corral-store at %s did not answer %s (%s)\n",
                 cfg->endpoint, what, cm_strerror (rc));
    else {
        const proto_error_t *e = reply ? proto_body (reply, error) : NULL;
        fprintf (stderr, "corral-keys: %s failed: %s%s%s\n", what, cm_strerror (rc),
                 e && e->message ? ": " : "", e && e->message ? e->message : "");
    }
    return EXIT_FAIL;
}

/* ---------------------------------------------------------------- */
/*  Commands                                                         */

//  Store a new key record for hash with the options' tenant, name, admin
//  flag and budgets; *id gets its id.  Returns EXIT_OK or what
//  s_store_failed says.
static int s_put_key (proto_rpc_t *rpc, const config_t *cfg, const uint8_t *hash,
                      cm_uuid_t *id)
{
    proto_key_rec_t rec = {.hash = {hash, GW_AUTH_HASH_LEN},
                           .tenant = cfg->tenant,
                           .name = cfg->name,
                           .admin = cfg->admin,
                           .created_ms = cm_time_ms (),
                           .budget_tokens = (uint64_t)cfg->budget_tokens,
                           .budget_micros = (uint64_t)cfg->budget_micros};
    cm_uuid7 (&rec.id);
    *id = rec.id;
    proto_key_put_t put = {.key = &rec};
    proto_msg_t reply;
    proto_msg_init (&reply);
    int rc = proto_rpc_call (rpc, PROTO_STORE_KEY_PUT, &put, &reply, (int)cfg->timeout);
    int status = rc ? s_store_failed ("store.key.put", rc, &reply, cfg) : EXIT_OK;
    proto_msg_fini (&reply);
    return status;
}

//  create --from-env: install a key a person chose (corral up's
//  CORRAL_API_KEY).  Idempotent: a key already stored keeps its record
//  (and stays revoked if it was).  Never prints or logs the key.
static int s_install (proto_rpc_t *rpc, const config_t *cfg)
{
    const char *key = getenv ("CORRAL_API_KEY");
    char why[128];
    uint8_t hash[GW_AUTH_HASH_LEN];
    if (!key || !*key) {
        fprintf (stderr, "corral-keys: --from-env needs CORRAL_API_KEY set\n");
        return EXIT_USAGE;
    }
    cm_log_secret (key);
    if (gw_auth_key_check (key, why, sizeof why)) {
        fprintf (stderr,
                 "corral-keys: CORRAL_API_KEY: %s (make a key with 'corral-keys create', "
                 "or leave CORRAL_API_KEY unset)\n",
                 why);
        return EXIT_USAGE;
    }
    if (gw_auth_key_hash (key, hash)) return EXIT_FAIL;
    proto_msg_t reply;
    proto_msg_init (&reply);
    proto_key_get_t get = {.hash = {hash, sizeof hash}};
    int status = EXIT_OK;
    const proto_key_rec_t *found = NULL;
    int rc = proto_rpc_call (rpc, PROTO_STORE_KEY_GET, &get, &reply, (int)cfg->timeout);
    if (rc == 0) {
        const proto_key_reply_t *kr = proto_body (&reply, key_reply);
        found = kr ? kr->key : NULL;
    } else if (rc != CM_E_NOT_FOUND)
        status = s_store_failed ("store.key.get", rc, &reply, cfg);
    char id[CM_UUID_STR_LEN];
    if (status == EXIT_OK && found) {
        if (found->revoked) {
            fprintf (stderr,
                     "corral-keys: the key in CORRAL_API_KEY (id %s) was revoked; a "
                     "revoked key is not reinstated\n",
                     cm_uuid_fmt (&found->id, id));
            status = EXIT_FAIL;
        } else
            printf ("id: %s\n", cm_uuid_fmt (&found->id, id));
    } else if (status == EXIT_OK) {
        cm_uuid_t made;
        status = s_put_key (rpc, cfg, hash, &made);
        if (status == EXIT_OK) printf ("id: %s\n", cm_uuid_fmt (&made, id));
    }
    proto_msg_fini (&reply);
    return status;
}

static int s_create (proto_rpc_t *rpc, const config_t *cfg)
{
    if (!cfg->tenant || !s_label_ok (cfg->tenant, TENANT_MAX)) {
        fprintf (stderr,
                 "corral-keys: create needs --tenant T (1..%d bytes, no control "
                 "characters)\n",
                 TENANT_MAX);
        return EXIT_USAGE;
    }
    if (cfg->name && !s_label_ok (cfg->name, NAME_MAX_LEN)) {
        fprintf (stderr,
                 "corral-keys: --name must be 1..%d bytes, no control characters\n",
                 NAME_MAX_LEN);
        return EXIT_USAGE;
    }
    if (cfg->from_env) return s_install (rpc, cfg);
    char key[GW_AUTH_KEY_BUF];
    uint8_t hash[GW_AUTH_HASH_LEN];
    if (gw_auth_key_generate (key) || gw_auth_key_hash (key, hash)) {
        fprintf (stderr, "corral-keys: cannot make a key (no randomness or libcrypto)\n");
        return EXIT_FAIL;
    }
    cm_log_secret (key); //  from here on no log line can carry it

    cm_uuid_t made;
    int status = s_put_key (rpc, cfg, hash, &made);
    if (status == EXIT_OK) {
        char id[CM_UUID_STR_LEN];
        printf ("key: %s\nid: %s\n", key, cm_uuid_fmt (&made, id));
        fflush (stdout);
        fprintf (stderr, "corral-keys: copy the key now; it is not stored and cannot be "
                         "shown again\n");
    }
    memset (key, 0, sizeof key);
    return status;
}

//  key.list into reply (its body stays valid until the next call on rpc).
static int s_fetch (proto_rpc_t *rpc, const config_t *cfg, const char *tenant,
                    proto_msg_t *reply, const proto_keys_reply_t **keys)
{
    proto_list_req_t req = {.tenant = tenant, .limit = LIST_LIMIT};
    int rc = proto_rpc_call (rpc, PROTO_STORE_KEY_LIST, &req, reply, (int)cfg->timeout);
    if (rc) return s_store_failed ("store.key.list", rc, reply, cfg);
    *keys = proto_body (reply, keys_reply);
    if (!*keys) {
        fprintf (stderr, "corral-keys: store.key.list answered with %s\n",
                 proto_type_name (reply->type));
        return EXIT_FAIL;
    }
    //  Keys are ordered by hash in the store, so there is no paging by id;
    //  one page holds every key of any realistic deployment.
    if ((*keys)->more)
        fprintf (stderr, "corral-keys: more than %d keys; only the first %d are shown\n",
                 LIST_LIMIT, LIST_LIMIT);
    return EXIT_OK;
}

static int s_list (proto_rpc_t *rpc, const config_t *cfg)
{
    if (cfg->tenant && !s_label_ok (cfg->tenant, TENANT_MAX)) {
        fprintf (stderr, "corral-keys: --tenant must be 1..%d bytes\n", TENANT_MAX);
        return EXIT_USAGE;
    }
    proto_msg_t reply;
    proto_msg_init (&reply);
    const proto_keys_reply_t *keys = NULL;
    int status = s_fetch (rpc, cfg, cfg->tenant, &reply, &keys);
    if (status == EXIT_OK) {
        printf ("ID\tTENANT\tNAME\tADMIN\tCREATED\tREVOKED\n");
        for (size_t i = 0; i < keys->keys.count; i++) {
            const proto_key_rec_t *k = &keys->keys.items[i];
            char id[CM_UUID_STR_LEN], created[CM_TIME_ISO_LEN];
            printf ("%s\t", cm_uuid_fmt (&k->id, id));
            s_print_field (k->tenant);
            putchar ('\t');
            s_print_field (k->name);
            printf ("\t%s\t%s\t%s\n", k->admin ? "yes" : "no",
                    cm_time_iso (k->created_ms, created), k->revoked ? "yes" : "no");
        }
    }
    proto_msg_fini (&reply);
    return status;
}

//  revoke ID, or (budget) set the key's budgets from cfg.
static int s_change (proto_rpc_t *rpc, const config_t *cfg, const char *id_text,
                     bool budget)
{
    cm_uuid_t id;
    if (!id_text || cm_uuid_parse (id_text, &id)) {
        fprintf (stderr, "corral-keys: %s needs a key id (a UUID, as 'list' shows)\n",
                 budget ? "budget" : "revoke");
        return EXIT_USAGE;
    }
    proto_msg_t reply, put_reply;
    proto_msg_init (&reply);
    proto_msg_init (&put_reply);
    const proto_keys_reply_t *keys = NULL;
    int status = s_fetch (rpc, cfg, NULL, &reply, &keys);
    if (status != EXIT_OK) goto cleanup;

    const proto_key_rec_t *found = NULL;
    for (size_t i = 0; i < keys->keys.count && !found; i++)
        if (memcmp (keys->keys.items[i].id.b, id.b, sizeof id.b) == 0)
            found = &keys->keys.items[i];
    if (!found) {
        fprintf (stderr, "corral-keys: no key with id %s\n", id_text);
        status = EXIT_FAIL;
        goto cleanup;
    }
    if (found->revoked && !budget) {
        fprintf (stderr, "corral-keys: key %s was already revoked\n", id_text);
        goto cleanup;
    }
    //  The hash points into the list reply's frame; copy the record
    //  before the next call replaces that frame.
    uint8_t hash[GW_AUTH_HASH_LEN];
    if (found->hash.size != sizeof hash) {
        fprintf (stderr, "corral-keys: the stored record of %s is damaged (hash size)\n",
                 id_text);
        status = EXIT_FAIL;
        goto cleanup;
    }
    memcpy (hash, found->hash.data, sizeof hash);
    proto_key_rec_t rec = *found;
    rec.hash = (proto_bin_t){hash, sizeof hash};
    if (budget) {
        rec.budget_tokens = (uint64_t)cfg->budget_tokens;
        rec.budget_micros = (uint64_t)cfg->budget_micros;
    } else
        rec.revoked = true;
    proto_key_put_t put = {.key = &rec};
    int rc =
        proto_rpc_call (rpc, PROTO_STORE_KEY_PUT, &put, &put_reply, (int)cfg->timeout);
    if (rc) {
        status = s_store_failed ("store.key.put", rc, &put_reply, cfg);
        goto cleanup;
    }
    if (budget) {
        char tokens[40] = "no token limit", usd[40] = "no cost limit";
        if (cfg->budget_tokens)
            snprintf (tokens, sizeof tokens, "%lld tokens",
                      (long long)cfg->budget_tokens);
        if (cfg->budget_micros)
            cm_usd_fmt ((uint64_t)cfg->budget_micros, usd, sizeof usd);
        printf ("budget of %s: %s, %s\n", id_text, tokens, usd);
    } else
        printf ("revoked %s\n", id_text);
cleanup:
    proto_msg_fini (&put_reply);
    proto_msg_fini (&reply);
    return status;
}

/* ---------------------------------------------------------------- */

int main (int argc, char **argv)
{
    if (argc < 2 || argv[1][0] == '-') {
        bool help =
            argc >= 2 && (strcmp (argv[1], "--help") == 0 || strcmp (argv[1], "-h") == 0);
        s_usage (help ? stdout : stderr);
        return help ? EXIT_OK : EXIT_USAGE;
    }
    const char *cmd = argv[1];
    const cm_cfg_opt_t *opts = strcmp (cmd, "create") == 0   ? s_create_opts
                               : strcmp (cmd, "list") == 0   ? s_list_opts
                               : strcmp (cmd, "revoke") == 0 ? s_revoke_opts
                               : strcmp (cmd, "budget") == 0 ? s_budget_opts
                                                             : NULL;
    if (!opts) {
        fprintf (stderr,
                 "corral-keys: unknown command '%s' (create, list, revoke, budget)\n",
                 cmd);
        return EXIT_USAGE;
    }
    //  The command's own argv: "corral-keys <cmd>" then its arguments.
    int sub_argc = argc - 1;
    char **sub_argv = argv + 1;
    const char *id = NULL;
    if (opts == s_revoke_opts || opts == s_budget_opts)
        s_take_positional (opts, &sub_argc, sub_argv, &id);

    char prog[32];
    snprintf (prog, sizeof prog, "corral-keys %s", cmd);
    config_t cfg = {0};
    char err[512];
    int rc = cm_config_load (
        opts, &cfg, sub_argc, sub_argv, prog,
        "Manage Corral API keys (see 'corral-keys --help').\n" EXIT_CODES_TEXT, err,
        sizeof err);
    if (rc == CM_CONFIG_HELP) return EXIT_OK;
    if (rc) {
        fprintf (stderr, "corral-keys: %s\n", err);
        return EXIT_USAGE;
    }
    if (cm_usd_parse (cfg.budget_usd, &cfg.budget_micros)) {
        fprintf (stderr,
                 "corral-keys: --budget-usd '%s' is not an amount of US dollars (e.g. "
                 "5.00, at most 6 decimals)\n",
                 cfg.budget_usd);
        cm_config_free (opts, &cfg);
        return EXIT_USAGE;
    }
    cm_log_level_t level = CM_LOG_WARN;
    cm_log_level_parse (cfg.log_level, &level);
    cm_log_init ("keys", level);

    int status = EXIT_FAIL;
    proto_rpc_t *rpc = proto_rpc_new (cfg.endpoint);
    if (!rpc)
        fprintf (stderr, "corral-keys: cannot connect to %s\n", cfg.endpoint);
    else if (opts == s_create_opts)
        status = s_create (rpc, &cfg);
    else if (opts == s_list_opts)
        status = s_list (rpc, &cfg);
    else
        status = s_change (rpc, &cfg, id, opts == s_budget_opts);
    proto_rpc_destroy (&rpc);
    cm_zmq_term ();
    cm_config_free (opts, &cfg);
    return status;
}
