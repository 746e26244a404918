/*  cli_target.c - the gateway's URL and the API key (cli_target.h). */
#include <ctype.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
