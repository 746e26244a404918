/*  corral: the command line.  `corral <command> [flags]`; `corral --help`
    lists the commands, `corral <command> --help` a command's flags.
    Commands are added to s_commands as they land (cli.h).
*/
#include <stdio.h>
#include <string.h>

#include "cli.h"

typedef struct {
    const char *name;
    cli_cmd_fn *fn;
    const char *summary;
} command_t;

static const command_t s_commands[] = {
    {"acp", cli_acp,
     "stdio <-> WebSocket bridge: use the gateway as an editor's ACP agent"},
    {"chat", cli_chat,
     "chat with an agent in the terminal (new session or --session ID)"},
    {"tail", cli_tail, "print a session's events from a seq, then live ones"},
    {"up", cli_up, "run the whole local stack in the foreground"},
    {"sessions", cli_sessions, "list, show and close sessions (REST)"},
    {"keys", cli_keys, "create, list and revoke API keys (runs corral-keys)"},
    {"tap", cli_tap, "print every event on the bus as JSON lines (debugging)"},
    {NULL, NULL, NULL},
};

int cli_config (const cm_cfg_opt_t *opts, void *cfg, int argc, char **argv,
                const char *prog, const char *summary)
{
    char err[512];
    int rc = cm_config_load (opts, cfg, argc, argv, prog, summary, err, sizeof err);
    if (rc == CM_CONFIG_HELP) return CLI_OK;
    if (rc) {
        fprintf (stderr, "%s: %s\n", prog, err);
        return CLI_USAGE;
    }
    return CLI_GO_ON;
}

static void usage (FILE *out)
{
    fprintf (out, "usage: corral <command> [flags]   (corral <command> --help)\n\n"
                  "commands:\n");
    for (const command_t *c = s_commands; c->name; c++)
        fprintf (out, "  %-10s %s\n", c->name, c->summary);
    fprintf (out, "\nexit codes: 0 ok, 1 failed, 2 usage, 3 refused by the server,\n"
                  "4 could not reach it (docs/cli.md)\n");
}

int main (int argc, char **argv)
{
    if (argc < 2) {
        usage (stderr);
        return CLI_USAGE;
    }
    if (!strcmp (argv[1], "--help") || !strcmp (argv[1], "-h") ||
        !strcmp (argv[1], "help")) {
        usage (stdout);
        return CLI_OK;
    }
    for (const command_t *c = s_commands; c->name; c++) {
        if (strcmp (c->name, argv[1])) continue;
        char prog[64];
        snprintf (prog, sizeof prog, "corral %s", c->name);
        argv[1] = prog;
        return c->fn (argc - 1, argv + 1);
    }
    fprintf (stderr, "corral: unknown command '%s'\n\n", argv[1]);
    usage (stderr);
    return CLI_USAGE;
}
