/*  test_fake_load - 1 000 concurrent streams against corral-fake-model.

    Starts the server with a script whose one rule streams 20 text chunks
    around a long pause, opens S_STREAMS streaming requests at once with
    libcurl multi (half OpenAI, half Anthropic), and checks:
      - while every stream sits in its pause, /health counts them all open
        (so they really are concurrent, not queued);
      - every stream completes with status 200, its terminator ([DONE] or
        message_stop) and exactly the scripted text;
      - the whole run takes less than S_BUDGET_MS.

    usage: test_fake_load <path to corral-fake-model>
*/
#include <curl/curl.h>
#include <jansson.h>
#include <signal.h>
#include <spawn.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cm_time.h"

#define S_STREAMS   1000
#define S_BUDGET_MS 30000
#define S_BODY_MAX  (256 * 1024)

#define S_PART1 "The quick brown fox jumps over the lazy dog; "
#define S_PART2 "pack my box with five dozen liquor jugs — ünïcode ✓."

static const char s_script[] =
    "{\"rules\": [{\"name\": \"load\", \"match\": \"*\", \"chunk_delay_ms\": 5,\n"
    "  \"responses\": [[\n"
    "    {\"text\": \"" S_PART1 "\", \"chunks\": 10},\n"
    "    {\"pause_ms\": 1500},\n"
    "    {\"text\": \"" S_PART2 "\", \"chunks\": 10},\n"
    "    {\"usage\": {\"input\": 5, \"output\": 20}}\n"
    "  ]]}]}\n";

typedef struct {
    CURL *easy;
    int index;
    bool anthropic;
    char *body;
    size_t len;
    bool started; //  the first body bytes arrived
    bool done;
    CURLcode result;
} transfer_t;

static int s_started;
static struct curl_slist *s_headers;

static size_t s_write (char *data, size_t size, size_t n, void *arg)
{
    transfer_t *t = arg;
    size_t len = size * n;
    if (t->len + len > S_BODY_MAX) return 0; //  fails the transfer
    memcpy (t->body + t->len, data, len);
    t->len += len;
    if (!t->started && len > 0) {
        t->started = true;
        s_started++;
    }
    return len;
}

//  Reassemble the streamed text; returns true if the stream ended properly.
static bool s_decode (const transfer_t *t, char *text, size_t textlen)
{
    bool ended = false;
    size_t pos = 0;
    text[0] = '\0';
    char *body = strndup (t->body, t->len);
    char *save = NULL;
    for (char *line = strtok_r (body, "\n", &save); line;
         line = strtok_r (NULL, "\n", &save)) {
        if (strncmp (line, "data: ", 6) != 0) continue;
        if (strcmp (line + 6, "[DONE]") == 0) {
            ended = true;
            continue;
        }
        json_t *doc = json_loads (line + 6, 0, NULL);
        if (!doc) {
            fprintf (stderr, "stream %d: bad JSON in %s\n", t->index, line);
            break;
        }
        const char *piece = NULL;
        if (t->anthropic) {
            const char *type = json_string_value (json_object_get (doc, "type"));
            if (type && strcmp (type, "message_stop") == 0) ended = true;
            json_t *delta = json_object_get (doc, "delta");
            if (type && strcmp (type, "content_block_delta") == 0)
                piece = json_string_value (json_object_get (delta, "text"));
        } else {
            json_t *choice = json_array_get (json_object_get (doc, "choices"), 0);
            piece = json_string_value (
                json_object_get (json_object_get (choice, "delta"), "content"));
        }
        if (piece) {
            int n = snprintf (text + pos, textlen - pos, "%s", piece);
            if (n > 0) pos += (size_t)n;
            if (pos >= textlen) pos = textlen - 1;
        }
        json_decref (doc);
    }
    free (body);
    return ended;
}

static pid_t s_start (const char *bin, const char *script, int *port)
{
    int out[2];
    if (pipe (out) != 0) return -1;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init (&fa);
    posix_spawn_file_actions_adddup2 (&fa, out[1], STDOUT_FILENO);
    posix_spawn_file_actions_addclose (&fa, out[0]);
    char *argv[] = {(char *)bin,   "--fake-script", (char *)script,
                    "--log-level", "warn",          NULL};
    extern char **environ;
    pid_t pid;
    int rc = posix_spawn (&pid, bin, &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy (&fa);
    close (out[1]);
    if (rc != 0) {
        close (out[0]);
        return -1;
    }
    FILE *in = fdopen (out[0], "r");
    char line[256] = "";
    if (!in || !fgets (line, sizeof line, in) ||
        sscanf (line, "listening on http://127.0.0.1:%d", port) != 1) {
        fprintf (stderr, "no 'listening on' line: '%s'\n", line);
        kill (pid, SIGKILL);
        waitpid (pid, NULL, 0);
        pid = -1;
    }
    if (in) fclose (in);
    return pid;
}

static CURL *s_easy (transfer_t *t, int port)
{
    static const char openai[] =
        "{\"model\":\"load\",\"stream\":true,\"messages\":[{\"role\":\"user\","
        "\"content\":\"go\"}]}";
    static const char anthropic[] =
        "{\"model\":\"load\",\"max_tokens\":100,\"stream\":true,\"messages\":"
        "[{\"role\":\"user\",\"content\":\"go\"}]}";
    char url[128];
    snprintf (url, sizeof url, "http://127.0.0.1:%d%s", port,
              t->anthropic ? "/v1/messages" : "/v1/chat/completions");
    CURL *easy = curl_easy_init ();
    curl_easy_setopt (easy, CURLOPT_URL, url);
    curl_easy_setopt (easy, CURLOPT_POSTFIELDS, t->anthropic ? anthropic : openai);
    curl_easy_setopt (easy, CURLOPT_WRITEFUNCTION, s_write);
    curl_easy_setopt (easy, CURLOPT_WRITEDATA, t);
    curl_easy_setopt (easy, CURLOPT_PRIVATE, t);
    curl_easy_setopt (easy, CURLOPT_TIMEOUT_MS, (long)S_BUDGET_MS);
    if (!s_headers) {
        s_headers = curl_slist_append (s_headers, "content-type: application/json");
        s_headers = curl_slist_append (s_headers, "anthropic-version: 2023-06-01");
    }
    curl_easy_setopt (easy, CURLOPT_HTTPHEADER, s_headers);
    t->easy = easy;
    return easy;
}

int main (int argc, char **argv)
{
    if (argc < 2) {
        fprintf (stderr, "usage: test_fake_load <corral-fake-model>\n");
        return 2;
    }
    struct rlimit rl;
    if (getrlimit (RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < 4096) {
        rl.rlim_cur = rl.rlim_max < 4096 ? rl.rlim_max : 4096;
        setrlimit (RLIMIT_NOFILE, &rl);
    }
    char script[] = "/tmp/fake-load-XXXXXX";
    int fd = mkstemp (script);
    if (fd < 0 ||
        write (fd, s_script, sizeof s_script - 1) != (ssize_t)(sizeof s_script - 1)) {
        perror ("script");
        return 1;
    }
    close (fd);
    int port = 0;
    pid_t pid = s_start (argv[1], script, &port);
    if (pid < 0) {
        unlink (script);
        return 1;
    }

    curl_global_init (CURL_GLOBAL_DEFAULT);
    CURLM *multi = curl_multi_init ();
    curl_multi_setopt (multi, CURLMOPT_MAXCONNECTS, (long)S_STREAMS + 16);
    static transfer_t transfers[S_STREAMS + 1]; //  the last one asks /health
    for (int i = 0; i < S_STREAMS; i++) {
        transfer_t *t = &transfers[i];
        t->index = i;
        t->anthropic = i % 2;
        t->body = malloc (S_BODY_MAX);
        curl_multi_add_handle (multi, s_easy (t, port));
    }
    transfer_t *health = &transfers[S_STREAMS];
    health->index = S_STREAMS;
    health->body = malloc (S_BODY_MAX);
    bool health_sent = false;
    int64_t start = cm_mono_ms ();
    int running = 1, finished = 0;
    int failures = 0;
    while (finished < S_STREAMS + (health_sent ? 1 : 0) || !health_sent) {
        curl_multi_perform (multi, &running);
        int left;
        CURLMsg *msg;
        while ((msg = curl_multi_info_read (multi, &left))) {
            if (msg->msg != CURLMSG_DONE) continue;
            transfer_t *t;
            curl_easy_getinfo (msg->easy_handle, CURLINFO_PRIVATE, (char **)&t);
            t->done = true;
            t->result = msg->data.result;
            finished++;
        }
        //  Every stream has begun and is inside its 1.5 s pause: count them.
        if (!health_sent && s_started >= S_STREAMS) {
            char url[128];
            snprintf (url, sizeof url, "http://127.0.0.1:%d/health", port);
            CURL *easy = curl_easy_init ();
            curl_easy_setopt (easy, CURLOPT_URL, url);
            curl_easy_setopt (easy, CURLOPT_WRITEFUNCTION, s_write);
            curl_easy_setopt (easy, CURLOPT_WRITEDATA, health);
            curl_easy_setopt (easy, CURLOPT_PRIVATE, health);
            curl_easy_setopt (easy, CURLOPT_FRESH_CONNECT, 1L);
            health->easy = easy;
            curl_multi_add_handle (multi, easy);
            health_sent = true;
            printf ("all %d streams started after %lld ms\n", S_STREAMS,
                    (long long)(cm_mono_ms () - start));
        }
        if (cm_mono_ms () - start > S_BUDGET_MS + 5000) {
            fprintf (stderr, "FAIL: gave up after %d ms: %d of %d finished, %d started\n",
                     S_BUDGET_MS + 5000, finished, S_STREAMS, s_started);
            failures++;
            break;
        }
        curl_multi_poll (multi, NULL, 0, 100, NULL);
    }
    int64_t elapsed = cm_mono_ms () - start;

    //  Concurrency: the /health answer saw every stream open at once.
    if (health->done) {
        json_t *doc = json_loadb (health->body, health->len, 0, NULL);
        json_int_t conns = json_integer_value (json_object_get (doc, "connections"));
        printf ("server held %lld connections during the pause\n", (long long)conns);
        if (conns < S_STREAMS) {
            fprintf (stderr, "FAIL: only %lld connections open during the pause\n",
                     (long long)conns);
            failures++;
        }
        json_decref (doc);
    } else {
        fprintf (stderr, "FAIL: /health was not answered\n");
        failures++;
    }
    static const char want[] = S_PART1 S_PART2;
    for (int i = 0; i < S_STREAMS; i++) {
        transfer_t *t = &transfers[i];
        long status = 0;
        curl_easy_getinfo (t->easy, CURLINFO_RESPONSE_CODE, &status);
        char text[1024];
        bool ended = t->done && s_decode (t, text, sizeof text);
        if (!t->done || t->result != CURLE_OK || status != 200 || !ended ||
            strcmp (text, want) != 0) {
            if (failures++ < 10)
                fprintf (stderr,
                         "FAIL: stream %d (%s): done=%d curl=%s status=%ld ended=%d "
                         "text='%s'\n",
                         i, t->anthropic ? "anthropic" : "openai", t->done,
                         curl_easy_strerror (t->result), status, ended,
                         t->done ? text : "");
        }
    }
    if (elapsed > S_BUDGET_MS) {
        fprintf (stderr, "FAIL: %d streams took %lld ms (budget %d)\n", S_STREAMS,
                 (long long)elapsed, S_BUDGET_MS);
        failures++;
    }
    printf ("%d streams in %lld ms, %d failures\n", S_STREAMS, (long long)elapsed,
            failures);

    for (int i = 0; i <= S_STREAMS; i++) {
        if (transfers[i].easy) {
            curl_multi_remove_handle (multi, transfers[i].easy);
            curl_easy_cleanup (transfers[i].easy);
        }
        free (transfers[i].body);
    }
    curl_multi_cleanup (multi);
    curl_slist_free_all (s_headers);
    curl_global_cleanup ();

    kill (pid, SIGTERM);
    int wstatus = 0;
    waitpid (pid, &wstatus, 0);
    if (!WIFEXITED (wstatus) || WEXITSTATUS (wstatus) != 0) {
        fprintf (stderr, "FAIL: the server did not exit 0 on SIGTERM\n");
        failures++;
    }
    unlink (script);
    return failures ? 1 : 0;
}
