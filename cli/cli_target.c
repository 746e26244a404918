/*  cli_target.c - the gateway's URL and the API key (cli_target.h). */
#include <ctype.h>
#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "cli.h"
#include "cli_target.h"

const char *cli_data_dir (void)
{
    const char *d = getenv ("CORRAL_DATA_DIR");
    return d && *d ? d : "./data";
}

const char *cli_target_no_key (void)
{
    return "no API key: pass --key KEY, set CORRAL_API_KEY, or start the local stack "
           "with `corral up` (it keeps its key in $CORRAL_DATA_DIR/local-api-key)";
}

int cli_target_with_key (cli_target_t *t, const char *prog, const char *url_flag,
                         const char *key_flag)
{
    char err[512];
    if (cli_target_resolve (t, url_flag, key_flag, err, sizeof err)) {
        fprintf (stderr, "%s: %s\n", prog, err);
        return CLI_USAGE;
    }
    if (!t->key[0]) {
        fprintf (stderr, "%s: %s\n", prog, cli_target_no_key ());
        return CLI_USAGE;
    }
    return 0;
}

//  Characters allowed in a URL we build requests from: printable ASCII,
//  no spaces (a control character would end up in an HTTP request line).
static bool s_printable (const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s <= 0x20 || (unsigned char)*s >= 0x7f) return false;
    return true;
}

int cli_target_from_listen (const char *listen, char *out, size_t outlen)
{
    const char *colon = strrchr (listen, ':');
    if (!colon || !colon[1]) return -1;
    const char *port = colon + 1;
    for (const char *p = port; *p; p++)
        if (!isdigit ((unsigned char)*p)) return -1;
    size_t hlen = (size_t)(colon - listen);
    char host[256];
    if (hlen >= sizeof host) return -1;
    memcpy (host, listen, hlen);
    host[hlen] = 0;
    const char *h = host;
    if (!*h || !strcmp (h, "0.0.0.0") || !strcmp (h, "*"))
        h = "127.0.0.1";
    else if (!strcmp (h, "::") || !strcmp (h, "[::]"))
        h = "[::1]";
    const char *tls = getenv ("CORRAL_TLS_CERT");
    int n = snprintf (out, outlen, "%s://%s:%s", tls && *tls ? "https" : "http", h, port);
    return n < 0 || (size_t)n >= outlen ? -1 : 0;
}

static int s_url (cli_target_t *t, const char *url, char *err, size_t errlen)
{
    if (strlen (url) >= CLI_URL_MAX - 16 || !s_printable (url)) {
        snprintf (err, errlen,
                  "bad gateway URL '%.200s': at most %d printable characters, no spaces",
                  url, CLI_URL_MAX - 17);
        return CLI_USAGE;
    }
    const char *http, *ws, *rest;
    if (!strncmp (url, "http://", 7))
        http = "http", ws = "ws", rest = url + 7;
    else if (!strncmp (url, "https://", 8))
        http = "https", ws = "wss", rest = url + 8;
    else if (!strncmp (url, "ws://", 5))
        http = "http", ws = "ws", rest = url + 5;
    else if (!strncmp (url, "wss://", 6))
        http = "https", ws = "wss", rest = url + 6;
    else {
        snprintf (err, errlen,
                  "bad gateway URL '%.200s': use http://, https://, ws:// or wss:// "
                  "(e.g. http://127.0.0.1:8080)",
                  url);
        return CLI_USAGE;
    }
    if (!*rest || *rest == '/' || strchr (rest, '?') || strchr (rest, '#')) {
        snprintf (err, errlen,
                  "bad gateway URL '%.200s': it needs a host, and no query or fragment",
                  url);
        return CLI_USAGE;
    }
    //  Base path: drop trailing slashes, then a final "/acp" (the
    //  WebSocket endpoint) so both forms lead to the same base.
    char base[CLI_URL_MAX - 16]; //  room for "https://" and "/acp"
    snprintf (base, sizeof base, "%s", rest);
    size_t n = strlen (base);
    while (n && base[n - 1] == '/') base[--n] = 0;
    if (n >= 4 && !strcmp (base + n - 4, "/acp")) base[n -= 4] = 0;
    while (n && base[n - 1] == '/') base[--n] = 0;
    if (!n) {
        snprintf (err, errlen, "bad gateway URL '%.200s': no host", url);
        return CLI_USAGE;
    }
    snprintf (t->http, sizeof t->http, "%s://%s", http, base);
    snprintf (t->ws, sizeof t->ws, "%s://%s/acp", ws, base);
    return 0;
}

//  The first line of the key file, trimmed; "" when there is no file.
static void s_key_file (cli_target_t *t)
{
    char path[CLI_URL_MAX];
    snprintf (path, sizeof path, "%s/local-api-key", cli_data_dir ());
    FILE *f = fopen (path, "r");
    if (!f) return;
    char line[CLI_KEY_MAX];
    if (fgets (line, sizeof line, f)) {
        line[strcspn (line, "\r\n")] = 0;
        if (*line) {
            snprintf (t->key, sizeof t->key, "%s", line);
            snprintf (t->key_from, sizeof t->key_from, "%s", path);
        }
    }
    fclose (f);
}

int cli_target_resolve (cli_target_t *t, const char *url_flag, const char *key_flag,
                        char *err, size_t errlen)
{
    memset (t, 0, sizeof *t);
    const char *url = url_flag && *url_flag ? url_flag : getenv ("CORRAL_URL");
    char derived[CLI_URL_MAX];
    if (!url || !*url) {
        const char *listen = getenv ("CORRAL_LISTEN");
        url = "http://127.0.0.1:8080";
        if (listen && *listen) {
            if (cli_target_from_listen (listen, derived, sizeof derived)) {
                snprintf (err, errlen,
                          "CORRAL_LISTEN '%.200s' is not host:port; set --url instead",
                          listen);
                return CLI_USAGE;
            }
            url = derived;
        }
    }
    int rc = s_url (t, url, err, errlen);
    if (rc) return rc;

    const char *env_key = getenv ("CORRAL_API_KEY");
    if (key_flag && *key_flag) {
        snprintf (t->key, sizeof t->key, "%s", key_flag);
        snprintf (t->key_from, sizeof t->key_from, "--key");
        if (strlen (key_flag) >= sizeof t->key) t->key[0] = 0;
    } else if (env_key && *env_key) {
        snprintf (t->key, sizeof t->key, "%s", env_key);
        snprintf (t->key_from, sizeof t->key_from, "CORRAL_API_KEY");
        if (strlen (env_key) >= sizeof t->key) t->key[0] = 0;
    } else
        s_key_file (t);
    if ((t->key_from[0] && !t->key[0]) || !s_printable (t->key)) {
        snprintf (err, errlen,
                  "the API key from %s is not a key (at most %d printable characters, "
                  "no spaces)",
                  t->key_from, CLI_KEY_MAX - 1);
        memset (t->key, 0, sizeof t->key);
        return CLI_USAGE;
    }
    return 0;
}

//  Does something accept connections at a ZeroMQ tcp:// or ipc://
//  endpoint?  1 yes, 0 no, -1 cannot tell (another transport).
int cli_endpoint_open (const char *ep)
{
    int fd = -1, rc = 0;
    if (!strncmp (ep, "ipc://", 6)) {
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        if (strlen (ep + 6) >= sizeof sa.sun_path) return -1;
        strcpy (sa.sun_path, ep + 6);
        fd = socket (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0) return -1;
        rc = connect (fd, (struct sockaddr *)&sa, sizeof sa) == 0;
        close (fd);
        return rc;
    }
    if (strncmp (ep, "tcp://", 6)) return -1;
    char host[256];
    snprintf (host, sizeof host, "%s", ep + 6);
    char *colon = strrchr (host, ':');
    if (!colon) return -1;
    *colon = 0;
    const char *port = colon + 1;
    char *h = host;
    if (*h == '[') {
        h++;
        char *e = strchr (h, ']');
        if (e) *e = 0;
    }
    if (!*h || !strcmp (h, "*") || !strcmp (h, "0.0.0.0")) h = "127.0.0.1";
    if (!strcmp (h, "::")) h = "::1";
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_NUMERICHOST | AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    if (getaddrinfo (h, port, &hints, &res)) return -1;
    fd = socket (res->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd >= 0) {
        if (connect (fd, res->ai_addr, res->ai_addrlen) == 0)
            rc = 1;
        else if (errno == EINPROGRESS) {
            struct pollfd p = {.fd = fd, .events = POLLOUT};
            int err = 0;
            socklen_t len = sizeof err;
            if (poll (&p, 1, 200) == 1 &&
                !getsockopt (fd, SOL_SOCKET, SO_ERROR, &err, &len))
                rc = err == 0;
        }
        close (fd);
    }
    freeaddrinfo (res);
    return rc;
}
