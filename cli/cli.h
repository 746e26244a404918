/*  cli.h - the corral command line: one binary, one entry per command.

    corral.c holds the table of commands and dispatches argv[1] to an
    entry below; each entry parses its own flags (cm_config.h) and returns
    a process exit code (docs/cli.md lists them):

        0  success            2  usage: a bad flag or argument
        1  failure (the error was printed)
        3  the server refused (auth, forbidden, not found)
        4  could not reach the gateway, the bus or a service

    Files, one per command: cmd_up.c, cmd_tap.c, cmd_keys.c,
    cmd_sessions.c, cmd_tail.c, cmd_chat.c, cmd_acp.c; shared parts in
    cli_*.c with their own headers.
*/
#ifndef CLI_H
#define CLI_H

#define CLI_OK          0
#define CLI_FAIL        1
#define CLI_USAGE       2
#define CLI_REFUSED     3
#define CLI_UNREACHABLE 4

#include "cm_config.h"

//  Not an exit code: cli_config's "go on with the command".
#define CLI_GO_ON (-1)

//  cm_config_load for a command's flags, with what every command does
//  next: after --help (printed on stdout) CLI_OK, after a bad flag or
//  value CLI_USAGE with "<prog>: <why>" on stderr (cfg then holds nothing
//  to free), else CLI_GO_ON: cfg is filled, cm_config_free it.
int cli_config (const cm_cfg_opt_t *opts, void *cfg, int argc, char **argv,
                const char *prog, const char *summary);

typedef int (cli_cmd_fn) (int argc, char **argv);

//  Each takes argv with argv[0] = "corral <command>".
int cli_up (int argc, char **argv);
int cli_tap (int argc, char **argv);
int cli_keys (int argc, char **argv);
int cli_sessions (int argc, char **argv);
int cli_tail (int argc, char **argv);
int cli_chat (int argc, char **argv);
int cli_acp (int argc, char **argv);

#endif
