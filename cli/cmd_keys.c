/*  cmd_keys.c - `corral keys create|list|revoke`: runs corral-keys.

    The key logic lives in one place, corral-keys (gateway/keys_main.c),
    which talks to corral-store directly; `corral keys ARGS` replaces
    itself with `corral-keys ARGS` (execv), found beside this binary or in
    its build tree (cli_bin.h).  So flags, output and exit codes are
    corral-keys' own: 0 done, 1 failed (the store did not answer or
    refused, no such key), 2 usage.  Like corral-keys it needs the store's
    address (CORRAL_STORE_ENDPOINT, --store-endpoint), not the gateway's:
    run it where the store runs.
*/
#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "cli_bin.h"

#define KEYS_ARGS_MAX 64

static void s_usage (FILE *out)
{
    fprintf (
        out,
        "Usage: corral keys COMMAND [OPTIONS]\n"
        "Manage API keys in corral-store (runs corral-keys).\n"
        "\n"
        "Commands:\n"
        "  create --tenant T [--name N] [--admin]\n"
        "        Make a key and print it once ('key: crl_...', 'id: ...'); only\n"
        "        its SHA-256 is stored.\n"
        "  list [--tenant T]\n"
        "        Print id, tenant, name, admin, created, revoked (never keys).\n"
        "  revoke ID\n"
        "        Revoke the key with this id; the gateway refuses it within its\n"
        "        --key-cache time (5 s) and closes its connections.\n"
        "\n"
        "Every command takes --store-endpoint (env CORRAL_STORE_ENDPOINT, default\n"
        "tcp://127.0.0.1:7701), --timeout and --log-level; 'corral keys COMMAND\n"
        "--help' lists them.\n"
        "\n"
        "Exit status: 0 done; 1 failed (store unreachable or refused, no such key);\n"
        "2 usage error.\n");
}

int cli_keys (int argc, char **argv)
{
    if (argc < 2 || !strcmp (argv[1], "--help") || !strcmp (argv[1], "-h") ||
        !strcmp (argv[1], "help")) {
        bool help = argc >= 2;
        s_usage (help ? stdout : stderr);
        return help ? CLI_OK : CLI_USAGE;
    }
    if (strcmp (argv[1], "create") && strcmp (argv[1], "list") &&
        strcmp (argv[1], "revoke")) {
        fprintf (stderr, "corral keys: unknown command '%.80s' (create, list, revoke)\n",
                 argv[1]);
        return CLI_USAGE;
    }
    if (argc >= KEYS_ARGS_MAX) {
        fprintf (stderr, "corral keys: too many arguments\n");
        return CLI_USAGE;
    }
    char path[PATH_MAX];
    if (cli_bin_find ("corral-keys", "gateway/corral-keys", path, sizeof path)) {
        fprintf (
            stderr,
            "corral keys: cannot find corral-keys beside this binary or in its build "
            "tree; build it (cmake --build ... --target corral-keys)\n");
        return CLI_FAIL;
    }
    char *args[KEYS_ARGS_MAX + 1];
    args[0] = "corral-keys";
    for (int i = 1; i < argc; i++) args[i] = argv[i];
    args[argc] = NULL;
    fflush (stdout);
    execv (path, args);
    fprintf (stderr, "corral keys: cannot run %s: %s\n", path, strerror (errno));
    return CLI_FAIL;
}
