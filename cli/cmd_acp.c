/*  cmd_acp.c - `corral acp`: a stdio <-> WebSocket bridge, so an editor
    that runs ACP agents as subprocesses (newline-delimited JSON-RPC on
    stdin/stdout) can use a remote Corral gateway as its agent.

    stdin: one JSON-RPC message per line -> one text frame on /acp.
    /acp: one text frame -> one line on stdout.  Nothing else is written
    to stdout; messages for a person go to stderr.

    Backpressure: stdin is read only while less than CLI_WS_QUEUE_HIGH
    bytes wait for the socket; a line may be at most LINE_MAX bytes (a
    longer one is dropped with a message on stderr).  stdout is written
    with blocking writes, so a slow reader slows the socket's reading
    (and the gateway switches a slow client to catch-up or closes it).

    Ends: stdin at its end -> the queue is flushed, the WebSocket closed
    with 1000, exit 0.  The gateway closes or the connection breaks ->
    a message on stderr, exit 4 (3 when it refused us: 1008).  No
    reconnect: the editor holds the session state and starts us again.
*/
#include <errno.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "cli_target.h"
#include "cli_ws.h"
#include "cm_config.h"

#define LINE_MAX_BYTES (16u << 20) //  one JSON-RPC message from stdin
#define READ_CHUNK     65536

typedef struct {
    char *url, *key, *ca_file;
    bool verbose;
} acp_config_t;

static const cm_cfg_opt_t s_opts[] = {
    CLI_TARGET_OPTS (acp_config_t, url, key),
    {"ca-file", CM_CFG_STR, offsetof (acp_config_t, ca_file), NULL,
     "PEM file of certificate authorities to trust for wss:// (default: the system's)", 0,
     0, NULL, false},
    {"verbose", CM_CFG_BOOL, offsetof (acp_config_t, verbose), "false",
     "log connection events on stderr", 0, 0, NULL, false},
    CM_CFG_END,
};

typedef struct {
    cli_ws_t *ws;
    bool verbose;
    bool input_on; //  stdin adopted into the loop
    bool paused;   //  stdin reading paused by backpressure
    bool eof;
    bool discarding; //  inside a line that was too long
    char *line;      //  the partial line read so far
    size_t line_len, line_cap;
    size_t lines_in, lines_out;
} bridge_t;

static void s_log (bridge_t *b, const char *what, const char *detail)
{
    if (b->verbose) fprintf (stderr, "corral acp: %s%s\n", what, detail ? detail : "");
}

//  Write all of p to stdout (blocking).  Returns 0 or -1.
static int s_write_all (const char *p, size_t n)
{
    while (n) {
        ssize_t w = write (STDOUT_FILENO, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static void on_text (cli_ws_t *ws, const char *text, size_t len, void *arg)
{
    bridge_t *b = arg;
    int rc;
    if (memchr (text, '\n', len)) {
        //  A frame with a raw newline (pretty-printed JSON) would break the
        //  framing: send it compact.
        json_t *j = json_loadb (text, len, 0, NULL);
        char *c = j ? json_dumps (j, JSON_COMPACT) : NULL;
        json_decref (j);
        if (!c) {
            fprintf (stderr,
                     "corral acp: dropped a frame from the gateway with a line break "
                     "that is not JSON\n");
            return;
        }
        rc = s_write_all (c, strlen (c));
        free (c);
    } else
        rc = s_write_all (text, len);
    if (rc || s_write_all ("\n", 1)) {
        fprintf (stderr, "corral acp: stdout is closed (%s); stopping\n",
                 strerror (errno));
        cli_ws_stop (ws, CLI_FAIL);
        return;
    }
    b->lines_out++;
}

static void s_send_line (bridge_t *b, char *p, size_t n)
{
    if (n && p[n - 1] == '\r') n--;
    size_t i = 0;
    while (i < n && (p[i] == ' ' || p[i] == '\t')) i++;
    if (i == n) return; //  blank line
    if (cli_ws_send (b->ws, p + i, n - i)) {
        fprintf (stderr, "corral acp: could not queue a message for the gateway\n");
        return;
    }
    b->lines_in++;
}

static void on_input (cli_ws_t *ws, int fd, void *arg)
{
    bridge_t *b = arg;
    char buf[READ_CHUNK];
    ssize_t n = read (fd, buf, sizeof buf);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) return;
    if (n <= 0) {
        if (n < 0) fprintf (stderr, "corral acp: reading stdin: %s\n", strerror (errno));
        if (b->line_len && !b->discarding) s_send_line (b, b->line, b->line_len);
        b->line_len = 0;
        b->eof = true;
        cli_ws_input_close (ws);
        s_log (b, "stdin ended; flushing and closing", NULL);
        cli_ws_stop (ws, n < 0 ? CLI_FAIL : CLI_OK);
        return;
    }
    const char *p = buf, *end = buf + n;
    while (p < end) {
        const char *nl = memchr (p, '\n', (size_t)(end - p));
        size_t take = (size_t)((nl ? nl : end) - p);
        if (!b->discarding) {
            if (b->line_len + take > LINE_MAX_BYTES) {
                fprintf (stderr,
                         "corral acp: dropped a line of stdin longer than %u bytes (one "
                         "JSON-RPC message per line)\n",
                         LINE_MAX_BYTES);
                b->discarding = true;
                b->line_len = 0;
            } else {
                if (b->line_len + take > b->line_cap) {
                    size_t cap = b->line_cap ? b->line_cap : 4096;
                    while (cap < b->line_len + take) cap *= 2;
                    char *q = realloc (b->line, cap);
                    if (!q) {
                        fprintf (stderr, "corral acp: out of memory\n");
                        cli_ws_stop (ws, CLI_FAIL);
                        return;
                    }
                    b->line = q;
                    b->line_cap = cap;
                }
                memcpy (b->line + b->line_len, p, take);
                b->line_len += take;
            }
        }
        if (!nl) break;
        if (!b->discarding) s_send_line (b, b->line, b->line_len);
        b->discarding = false;
        b->line_len = 0;
        p = nl + 1;
    }
    if (!b->paused && cli_ws_queued (ws) >= CLI_WS_QUEUE_HIGH) {
        b->paused = true;
        cli_ws_input_enable (ws, false);
        s_log (b, "pausing stdin until the socket drains", NULL);
    }
}

static void on_drained (cli_ws_t *ws, void *arg)
{
    bridge_t *b = arg;
    if (!b->paused || b->eof) return;
    b->paused = false;
    cli_ws_input_enable (ws, true);
    s_log (b, "resuming stdin", NULL);
}

static void on_open (cli_ws_t *ws, void *arg)
{
    bridge_t *b = arg;
    s_log (b, "connected", NULL);
    if (b->input_on) return;
    if (cli_ws_input (ws, STDIN_FILENO)) {
        fprintf (stderr, "corral acp: cannot watch stdin\n");
        cli_ws_stop (ws, CLI_FAIL);
        return;
    }
    b->input_on = true;
}

static bool on_drop (cli_ws_t *ws, int code, const char *why, bool was_open, int retry_ms,
                     void *arg)
{
    (void)retry_ms;
    (void)arg;
    fprintf (stderr, "corral acp: %s\n", why);
    cli_ws_stop (ws, was_open && code == 1008 ? CLI_REFUSED : CLI_UNREACHABLE);
    return false;
}

int cli_acp (int argc, char **argv)
{
    acp_config_t cfg;
    int rc = cli_config (
        s_opts, &cfg, argc, argv, argv[0],
        "A stdio <-> WebSocket bridge: an editor that runs ACP agents as subprocesses "
        "talks to\n"
        "a Corral gateway through this command.  Newline-delimited JSON-RPC on "
        "stdin/stdout,\n"
        "one text frame per message on the gateway's /acp; messages for people on "
        "stderr.\n"
        "Ends when stdin ends (exit 0) or the gateway closes (exit 4; 3 when refused).\n"
        "Editor configuration: command `corral`, args [\"acp\", \"--url\", URL] and the "
        "key in\n"
        "CORRAL_API_KEY.");
    if (rc != CLI_GO_ON) return rc;
    cli_target_t t;
    if (cli_target_with_key (&t, "corral acp", cfg.url, cfg.key)) {
        cm_config_free (s_opts, &cfg);
        return CLI_USAGE;
    }
    signal (SIGPIPE, SIG_IGN);
    bridge_t b = {.verbose = cfg.verbose};
    static const cli_ws_handlers_t on = {.on_open = on_open,
                                         .on_text = on_text,
                                         .on_drop = on_drop,
                                         .on_input = on_input,
                                         .on_drained = on_drained};
    rc = cli_ws_open (&b.ws, "corral acp", &t, cfg.ca_file, &on, &b, false);
    if (rc) {
        cm_config_free (s_opts, &cfg);
        return rc;
    }
    s_log (&b, "connecting to ", t.ws);
    rc = cli_ws_run (b.ws);
    cli_ws_destroy (&b.ws);
    free (b.line);
    cm_config_free (s_opts, &cfg);
    return rc;
}
