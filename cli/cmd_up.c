/*  cmd_up.c - `corral up`: the whole local stack in the foreground.

    Starts corral-store, (an API key), corral-session, corral-monitor,
    the scripted model server when no provider is configured,
    corral-worker and corral-gateway, each after the one before is up, and
    prints where the web page is and which key to use once the gateway's
    /v1/health/ready answers 200.  Every line a service writes is printed
    with its name in front ("[store] ...").  A service that exits is
    started again with backoff (0.5 s doubling to 30 s; back to 0.5 s
    after it ran 30 s).  SIGINT, SIGTERM or SIGHUP stop the services in
    reverse order (SIGTERM, then SIGKILL after --stop-timeout), then any
    process they left behind; a second signal kills at once.

    No process outlives `corral up`: every service runs in its own process
    group (a Ctrl-C in the terminal reaches corral up only, which then
    stops them in order) with PR_SET_PDEATHSIG = SIGTERM, so it is told
    to stop even when corral up is killed with SIGKILL; corral up is a
    child subreaper (PR_SET_CHILD_SUBREAPER), so what a service leaves
    behind becomes corral up's child, is reaped while running and is
    killed at the end.

    One event loop, no threads: curl_multi_poll waits on the signalfd,
    every service's output pipe and the readiness probe (libcurl), with
    the next timer as its timeout.

    Binaries: next to this one (an installed layout: corral, corral-store
    ... in one folder), else in the CMake build tree this binary is in
    (<build>/cli/corral -> <build>/services/store/corral-store ...).
*/
#include <ctype.h>
#include <curl/curl.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "cli_bin.h"
#include "cli_render.h"
#include "cli_target.h"
#include "cm_config.h"

extern char **environ;

#define LINE_MAX_BYTES  16384 //  a longer service line is cut and continued
#define BACKOFF_MIN_MS  500   //  first restart delay
#define BACKOFF_MAX_MS  30000 //  longest restart delay
#define STABLE_MS       30000 //  running this long resets the backoff
#define START_TRIES     3     //  exits of one service while starting before giving up
#define ORPHAN_GRACE_MS 2000  //  leftovers get this long after SIGTERM
#define PROBE_EVERY_MS  100   //  readiness checks while starting
#define PROGRESS_MS     5000  //  "still waiting" this often
#define MAX_ARGS        16
#define READS_PER_TURN  64 //  reads of one service's pipe per loop turn
#define MODEL_SCRIPTED  "the built-in scripted model"

typedef enum { R_NONE, R_ENDPOINT, R_LINE, R_HTTP, R_EXIT } ready_t;
typedef enum { C_IDLE, C_RUNNING, C_BACKOFF, C_DONE } cstate_t;

typedef struct {
    const char *name; //  "store": the line prefix
    const char *bin;  //  "corral-store"
    const char *tree; //  its path in a build tree
    ready_t ready;
    bool optional; //  skipped with a note when the binary is missing
    //  run time
    bool enabled;
    char path[PATH_MAX];
    const char *endpoint; //  R_ENDPOINT: what must accept connections
    cstate_t state;
    pid_t pid;
    int fd; //  its stdout+stderr, or -1
    char buf[LINE_MAX_BYTES];
    size_t len;
    int64_t started_ms, restart_at_ms, kill_at_ms;
    int64_t backoff_ms;
    int restarts, start_exits;
    int exit_status; //  last wait status
    bool is_up;      //  readiness seen (while starting)
    bool signalled;  //  TERM sent while stopping
} child_t;

enum { K_STORE, K_KEYS, K_SESSION, K_MONITOR, K_MODEL, K_WORKER, K_GATEWAY, K_N };

typedef struct {
    char *data_dir, *listen, *workspace_roots, *log_level, *log_format, *provider;
    char *store_ep, *session_ep, *worker_ep, *events_ep, *monitor_in_ep, *monitor_ep;
    int64_t stop_ms, ready_ms;
} up_config_t;

typedef enum { U_STARTING, U_RUNNING, U_STOPPING, U_DONE } ustate_t;

typedef struct {
    up_config_t cfg;
    child_t c[K_N];
    ustate_t state;
    int stage;     //  the child being started (U_STARTING)
    int stop_idx;  //  the child being stopped (U_STOPPING)
    int exit_code; //  of corral up
    int sfd;       //  signalfd
    int lock_fd;
    int64_t t0, stage_ms, next_progress_ms, orphan_deadline_ms;
    bool orphans_signalled, kill_all;
    //  readiness probe (libcurl multi)
    CURLM *multi;
    CURL *probe;
    long probe_code;
    char probe_body[512];
    size_t probe_len;
    int64_t next_probe_ms;
    char last_reason[256];
    //  what the banner shows
    char http[CLI_URL_MAX], ws[CLI_URL_MAX];
    char keyfile[PATH_MAX];
    char key[CLI_KEY_MAX];
    bool key_from_env, key_from_file, key_retry;
    char model_url[256]; //  the scripted model's base URL (learned)
    char model_listen[64];
    const char *provider; //  "fake", "openai", "anthropic"
    char bin_dir[PATH_MAX - 256];
    bool human, color;
    int name_width;
} up_t;

#define OPT(name, type, field, def, help, min, max, choices)                           \
    {                                                                                  \
        name, type, offsetof (up_config_t, field), def, help, min, max, choices, false \
    }

static const cm_cfg_opt_t s_opts[] = {
    OPT ("data-dir", CM_CFG_PATH, data_dir, "./data", "where the stack keeps its state",
         0, 0, NULL),
    OPT ("listen", CM_CFG_STR, listen, "127.0.0.1:8080",
         "the gateway's HTTP and WebSocket address (host:port)", 0, 0, NULL),
    OPT ("workspace-roots", CM_CFG_STR, workspace_roots, NULL,
         "colon-separated folders sessions may work in (default <data-dir>/workspaces)",
         0, 0, NULL),
    OPT ("provider", CM_CFG_ENUM, provider, "auto",
         "model provider: auto (from OPENAI_*/ANTHROPIC_* variables, else the scripted "
         "model), fake, openai, anthropic",
         0, 0, "auto|fake|openai|anthropic"),
    OPT ("store-endpoint", CM_CFG_ENDPOINT, store_ep, "tcp://127.0.0.1:7701",
         "corral-store requests", 0, 0, NULL),
    OPT ("session-endpoint", CM_CFG_ENDPOINT, session_ep, "tcp://127.0.0.1:7702",
         "corral-session's client API", 0, 0, NULL),
    OPT ("worker-endpoint", CM_CFG_ENDPOINT, worker_ep, "tcp://127.0.0.1:7703",
         "corral-session's worker API", 0, 0, NULL),
    OPT ("events-endpoint", CM_CFG_ENDPOINT, events_ep, "tcp://127.0.0.1:7704",
         "corral-session's event PUB", 0, 0, NULL),
    OPT ("monitor-in-endpoint", CM_CFG_ENDPOINT, monitor_in_ep, "tcp://127.0.0.1:7705",
         "corral-monitor's heartbeat SUB", 0, 0, NULL),
    OPT ("monitor-endpoint", CM_CFG_ENDPOINT, monitor_ep, "tcp://127.0.0.1:7706",
         "corral-monitor's API", 0, 0, NULL),
    OPT ("stop-timeout", CM_CFG_MS, stop_ms, "10s",
         "a service that has not stopped this long after SIGTERM is killed", 100, 600000,
         NULL),
    OPT ("ready-timeout", CM_CFG_MS, ready_ms, "60s",
         "give up when the stack is not ready after this long", 1000, 3600000, NULL),
    OPT ("log-format", CM_CFG_ENUM, log_format, "auto",
         "services' log lines: human, json (as written), auto (human on a terminal)", 0,
         0, "auto|human|json"),
    OPT ("log-level", CM_CFG_ENUM, log_level, "info",
         "least severe level the services log (passed on as CORRAL_LOG_LEVEL)", 0, 0,
         "debug|info|warn|error"),
    CM_CFG_END};

/* ---- small helpers -------------------------------------------------------- */

static int64_t s_now (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static const char *s_color (up_t *self, const char *code)
{
    return self->color ? code : "";
}

//  "[up] ..." status lines, on stdout with the services' lines.
static void s_say (up_t *self, const char *fmt, ...)
    __attribute__ ((format (printf, 2, 3)));
static void s_say (up_t *self, const char *fmt, ...)
{
    va_list ap;
    va_start (ap, fmt);
    printf ("%s%-*s%s ", s_color (self, "\033[1m"), self->name_width + 2, "[up]",
            s_color (self, "\033[0m"));
    vprintf (fmt, ap);
    putchar ('\n');
    fflush (stdout);
    va_end (ap);
}

static void s_describe_status (int status, char *out, size_t outlen)
{
    if (WIFEXITED (status))
        snprintf (out, outlen, "exited with status %d", WEXITSTATUS (status));
    else if (WIFSIGNALED (status))
        snprintf (out, outlen, "was killed by signal %d (%s)", WTERMSIG (status),
                  strsignal (WTERMSIG (status)));
    else
        snprintf (out, outlen, "stopped (status %d)", status);
}

/* ---- printing a service's lines ------------------------------------------- */

static const char *s_level_color (const char *level)
{
    if (!strcmp (level, "error")) return "\033[31m";
    if (!strcmp (level, "warn")) return "\033[33m";
    if (!strcmp (level, "debug")) return "\033[2m";
    return "";
}

static void s_prefix (up_t *self, const child_t *c)
{
    printf ("%s[%s]%s%*s", s_color (self, "\033[36m"), c->name, s_color (self, "\033[0m"),
            (int)(self->name_width - strlen (c->name) + 1), "");
}

//  A JSON log line as "[name] HH:MM:SS.mmm level msg key=value ...".
//  Returns 0 (not a log line: nothing printed), 1 (printed, without the
//  newline) or 2 (a line left out).
static int s_print_human (up_t *self, const child_t *c, const char *line)
{
    if (line[0] != '{') return 0;
    json_t *o = json_loads (line, JSON_REJECT_DUPLICATES, NULL);
    if (!json_is_object (o)) {
        json_decref (o);
        return 0;
    }
    //  Decoded, a log field could carry a command's or a model's control
    //  characters to the terminal: shown as '?' (the JSON form escapes them).
    cli_render_clean (o);
    const char *ts = json_string_value (json_object_get (o, "ts"));
    const char *level = json_string_value (json_object_get (o, "level"));
    const char *msg = json_string_value (json_object_get (o, "msg"));
    if (!msg || !level) {
        json_decref (o);
        return 0;
    }
    //  Each service's effective configuration ("config name=value"), a
    //  screenful at every start: only with --log-format json.
    if (!strncmp (msg, "config ", 7) && !strcmp (level, "info")) {
        json_decref (o);
        return 2;
    }
    s_prefix (self, c);
    char hms[16] = "";
    if (ts && strlen (ts) >= 23) snprintf (hms, sizeof hms, "%.12s", ts + 11);
    printf ("%s%s%-5s %s", hms, *hms ? " " : "", level,
            s_color (self, s_level_color (level)));
    fputs (msg, stdout);
    printf ("%s", s_color (self, "\033[0m"));
    const char *k;
    json_t *v;
    json_object_foreach (o, k, v)
    {
        if (!strcmp (k, "ts") || !strcmp (k, "level") || !strcmp (k, "msg") ||
            !strcmp (k, "service"))
            continue;
        printf (" %s%s=", s_color (self, "\033[2m"), k);
        if (json_is_string (v))
            fputs (json_string_value (v), stdout);
        else {
            char *t = json_dumps (v, JSON_COMPACT | JSON_ENCODE_ANY);
            if (t) fputs (t, stdout);
            free (t);
        }
        printf ("%s", s_color (self, "\033[0m"));
    }
    json_decref (o);
    return 1;
}

static void s_print_line (up_t *self, child_t *c, const char *line)
{
    //  In the human form (or, a config line, not at all), else as it is.
    int done = self->human ? s_print_human (self, c, line) : 0;
    if (done) {
        if (done == 1) putchar ('\n');
        return;
    }
    s_prefix (self, c);
    fputs (line, stdout);
    putchar ('\n');
}

//  Lines the keys step writes on stdout carry the key: never printed.
static bool s_keys_line (up_t *self, const char *line)
{
    if (!strncmp (line, "key: ", 5)) {
        snprintf (self->key, sizeof self->key, "%s", line + 5);
        return true;
    }
    return !strncmp (line, "id: ", 4);
}

//  The scripted model's first line tells its address.
static void s_model_line (up_t *self, const char *line)
{
    const char *p = "listening on http://";
    if (strncmp (line, p, strlen (p)) || self->model_url[0]) return;
    snprintf (self->model_url, sizeof self->model_url, "%s",
              line + strlen ("listening on "));
    snprintf (self->model_listen, sizeof self->model_listen, "%s", line + strlen (p));
    char *slash = strchr (self->model_listen, '/');
    if (slash) *slash = 0;
}

static void s_on_line (up_t *self, child_t *c, char *line)
{
    size_t n = strlen (line);
    if (n && line[n - 1] == '\r') line[n - 1] = 0;
    if (c == &self->c[K_KEYS] && (s_keys_line (self, line) ||
                                  !strncmp (line, "corral-keys: copy the key now", 29)))
        return; //  the key goes to the banner and the key file, nowhere else
    if (c == &self->c[K_MODEL] && !strncmp (line, "listening on http://", 20)) {
        s_model_line (self, line); //  (its log line says the same)
        return;
    }
    s_print_line (self, c, line);
}

//  Read what is there (READS_PER_TURN reads at most, so that a service
//  that never stops writing cannot keep the loop from signals and the
//  others); print whole lines.  Returns false at EOF.
static bool s_read_child (up_t *self, child_t *c)
{
    for (int reads = 0; reads < READS_PER_TURN; reads++) {
        ssize_t r = read (c->fd, c->buf + c->len, sizeof c->buf - 1 - c->len);
        if (r < 0 && (errno == EAGAIN || errno == EINTR)) break;
        if (r <= 0) {
            if (c->len) {
                c->buf[c->len] = 0;
                s_on_line (self, c, c->buf);
                c->len = 0;
            }
            fflush (stdout);
            return false;
        }
        c->len += (size_t)r;
        char *start = c->buf, *nl;
        while ((nl = memchr (start, '\n', c->len - (size_t)(start - c->buf)))) {
            *nl = 0;
            s_on_line (self, c, start);
            start = nl + 1;
        }
        c->len -= (size_t)(start - c->buf);
        memmove (c->buf, start, c->len);
        if (c->len == sizeof c->buf - 1) { //  a very long line: print what we have
            c->buf[c->len] = 0;
            s_on_line (self, c, c->buf);
            c->len = 0;
        }
    }
    fflush (stdout);
    return true;
}

/* ---- starting a service --------------------------------------------------- */

//  The environment of a service: ours without the secrets and settings
//  that are corral up's own, and without the model providers' keys except
//  for the worker (the one that calls models); extra ("NAME=value") added.
static bool s_provider_secret (const char *e)
{
    static const char *const names[] = {
        "OPENAI_API_KEY=", "ANTHROPIC_API_KEY=", "CORRAL_OPENAI_API_KEY=",
        "CORRAL_ANTHROPIC_API_KEY="};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (!strncmp (e, names[i], strlen (names[i]))) return true;
    return false;
}

static char **s_child_env (const char *extra, bool worker)
{
    size_t n = 0;
    while (environ[n]) n++;
    char **env = calloc (n + 2, sizeof *env);
    if (!env) return NULL;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        const char *e = environ[i];
        if (!strncmp (e, "CORRAL_API_KEY=", 15) || !strncmp (e, "CORRAL_URL=", 11) ||
            !strncmp (e, "CORRAL_KEY=", 11) || (!worker && s_provider_secret (e)))
            continue;
        env[k++] = (char *)e;
    }
    if (extra) env[k++] = (char *)extra;
    env[k] = NULL;
    return env;
}

static int s_build_argv (up_t *self, int idx, const char **argv, char *a1, size_t a1len)
{
    child_t *c = &self->c[idx];
    int n = 0;
    argv[n++] = c->path;
    switch (idx) {
    case K_KEYS:
        argv[n++] = "create";
        argv[n++] = "--tenant";
        argv[n++] = "local";
        argv[n++] = "--name";
        argv[n++] = "corral up";
        argv[n++] = "--admin";
        if (self->key_from_env || (self->key_from_file && !self->key_retry))
            argv[n++] = "--from-env";
        break;
    case K_MODEL:
        argv[n++] = "--fake-listen";
        argv[n++] = self->model_listen[0] ? self->model_listen : "127.0.0.1:0";
        argv[n++] = "--fake-chunk-delay";
        argv[n++] = "30ms";
        break;
    case K_WORKER:
        if (!strcmp (self->provider, "fake")) {
            snprintf (a1, a1len, "%s/v1", self->model_url);
            argv[n++] = "--openai-base-url";
            argv[n++] = a1;
        }
        break;
    case K_GATEWAY: {
        //  An installed layout: the web page beside the binaries.
        const char *env = getenv ("CORRAL_STATIC_DIR");
        struct stat st;
        snprintf (a1, a1len, "%s/../share/corral/web", self->bin_dir);
        if ((!env || !*env) && stat (a1, &st) == 0 && S_ISDIR (st.st_mode)) {
            argv[n++] = "--static-dir";
            argv[n++] = a1;
        }
        break;
    }
    default:
        break;
    }
    argv[n] = NULL;
    return n;
}

static int s_spawn (up_t *self, int idx)
{
    child_t *c = &self->c[idx];
    const char *argv[MAX_ARGS];
    char a1[PATH_MAX + 64];
    s_build_argv (self, idx, argv, a1, sizeof a1);

    //  The keys step gets the key to install in its environment.
    char *extra = NULL;
    if (idx == K_KEYS &&
        (self->key_from_env || (self->key_from_file && !self->key_retry))) {
        if (asprintf (&extra, "CORRAL_API_KEY=%s", self->key) < 0) extra = NULL;
    }
    char **env = s_child_env (extra, idx == K_WORKER);
    int pfd[2];
    if (!env || pipe2 (pfd, O_CLOEXEC)) {
        s_say (self, "cannot start %s: %s", c->bin, strerror (errno));
        free (env);
        free (extra);
        return -1;
    }
    pid_t parent = getpid ();
    pid_t pid = fork ();
    if (pid < 0) {
        s_say (self, "cannot start %s: fork: %s", c->bin, strerror (errno));
        close (pfd[0]);
        close (pfd[1]);
        free (env);
        free (extra);
        return -1;
    }
    if (pid == 0) {
        //  The child: its own process group, told when corral up dies,
        //  default signal handling, stdin from /dev/null, output to us.
        setpgid (0, 0);
        prctl (PR_SET_PDEATHSIG, SIGTERM);
        if (getppid () != parent) _exit (1);
        sigset_t none;
        sigemptyset (&none);
        sigprocmask (SIG_SETMASK, &none, NULL);
        signal (SIGPIPE, SIG_DFL);
        int null = open ("/dev/null", O_RDONLY);
        if (null >= 0) dup2 (null, 0);
        dup2 (pfd[1], 1);
        dup2 (pfd[1], 2);
        execve (c->path, (char *const *)argv, env);
        dprintf (2, "cannot run %s: %s\n", c->path, strerror (errno));
        _exit (127);
    }
    close (pfd[1]);
    free (env);
    if (extra) {
        memset (extra, 0, strlen (extra));
        free (extra);
    }
    setpgid (pid, pid); //  also here, against the race with kill(-pid)
    fcntl (pfd[0], F_SETFL, fcntl (pfd[0], F_GETFL) | O_NONBLOCK);
    if (c->fd >= 0) close (c->fd); //  an old instance's pipe (a leftover holds it)
    c->fd = pfd[0];
    c->len = 0;
    c->pid = pid;
    c->state = C_RUNNING;
    c->started_ms = s_now ();
    c->is_up = false;
    return 0;
}

/* ---- readiness --------------------------------------------------------------- */

static size_t s_probe_write (char *data, size_t size, size_t n, void *arg)
{
    up_t *self = arg;
    size_t len = size * n, room = sizeof self->probe_body - 1 - self->probe_len;
    size_t take = len < room ? len : room;
    memcpy (self->probe_body + self->probe_len, data, take);
    self->probe_len += take;
    self->probe_body[self->probe_len] = 0;
    return len;
}

static void s_probe_start (up_t *self)
{
    if (self->probe) return;
    char url[CLI_URL_MAX + 32];
    snprintf (url, sizeof url, "%s/v1/health/ready", self->http);
    self->probe = curl_easy_init ();
    if (!self->probe) return;
    self->probe_len = 0;
    self->probe_body[0] = 0;
    curl_easy_setopt (self->probe, CURLOPT_URL, url);
    curl_easy_setopt (self->probe, CURLOPT_TIMEOUT_MS, 2000L);
    curl_easy_setopt (self->probe, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt (self->probe, CURLOPT_SSL_VERIFYPEER, 0L); //  our own, on loopback
    curl_easy_setopt (self->probe, CURLOPT_SSL_VERIFYHOST, 0L);
    curl_easy_setopt (self->probe, CURLOPT_WRITEFUNCTION, s_probe_write);
    curl_easy_setopt (self->probe, CURLOPT_WRITEDATA, self);
    curl_multi_add_handle (self->multi, self->probe);
}

//  Collect a finished probe: 200 sets probe_code; anything else keeps the
//  reason for the progress line.
static void s_probe_collect (up_t *self)
{
    int running = 0, left = 0;
    curl_multi_perform (self->multi, &running);
    CURLMsg *m;
    while ((m = curl_multi_info_read (self->multi, &left))) {
        if (m->msg != CURLMSG_DONE) continue;
        long code = 0;
        curl_easy_getinfo (m->easy_handle, CURLINFO_RESPONSE_CODE, &code);
        if (m->data.result != CURLE_OK)
            snprintf (self->last_reason, sizeof self->last_reason,
                      "the gateway does not answer yet (%s)",
                      curl_easy_strerror (m->data.result));
        else if (code != 200) {
            json_t *o = json_loads (self->probe_body, 0, NULL);
            const char *why = json_string_value (json_object_get (o, "reason"));
            snprintf (self->last_reason, sizeof self->last_reason, "%ld %s", code,
                      why ? why : "not ready");
            json_decref (o);
        }
        self->probe_code = m->data.result == CURLE_OK ? code : 0;
        curl_multi_remove_handle (self->multi, m->easy_handle);
        curl_easy_cleanup (m->easy_handle);
        self->probe = NULL;
    }
}

//  Is the child being started up?  Sets last_reason when not.
static bool s_is_up (up_t *self, child_t *c)
{
    switch (c->ready) {
    case R_NONE:
        return true;
    case R_EXIT:
        return c->state == C_DONE;
    case R_LINE:
        if (!self->model_url[0])
            snprintf (self->last_reason, sizeof self->last_reason,
                      "its address line has not come yet");
        return self->model_url[0] != 0;
    case R_ENDPOINT: {
        int open = cli_endpoint_open (c->endpoint);
        if (open == 0)
            snprintf (self->last_reason, sizeof self->last_reason,
                      "nothing accepts connections at %s yet", c->endpoint);
        return open != 0 && s_now () - c->started_ms >= (open < 0 ? 500 : 0);
    }
    case R_HTTP:
        if (self->probe_code == 200) return true;
        if (!self->probe && s_now () >= self->next_probe_ms) {
            self->probe_code = 0;
            s_probe_start (self);
            self->next_probe_ms = s_now () + PROBE_EVERY_MS;
        }
        return false;
    }
    return false;
}

/* ---- the key ------------------------------------------------------------------ */

//  The key for the banner and the keys step: CORRAL_API_KEY, else the
//  saved one, else a new one (made by the keys step).
static void s_key_source (up_t *self)
{
    const char *env = getenv ("CORRAL_API_KEY");
    snprintf (self->keyfile, sizeof self->keyfile, "%s/local-api-key",
              self->cfg.data_dir);
    if (env && *env) {
        snprintf (self->key, sizeof self->key, "%s", env);
        self->key_from_env = true;
        return;
    }
    FILE *f = fopen (self->keyfile, "r");
    if (!f) return;
    char line[CLI_KEY_MAX] = "";
    if (fgets (line, sizeof line, f)) line[strcspn (line, "\r\n")] = 0;
    fclose (f);
    if (*line) {
        snprintf (self->key, sizeof self->key, "%s", line);
        self->key_from_file = true;
    }
}

static int s_save_key (up_t *self)
{
    char tmp[PATH_MAX + 8];
    snprintf (tmp, sizeof tmp, "%s.tmp", self->keyfile);
    int fd = open (tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) return -1;
    dprintf (fd, "%s\n", self->key);
    if (fsync (fd) || close (fd) || rename (tmp, self->keyfile)) return -1;
    return 0;
}

/* ---- the stages ----------------------------------------------------------------- */

static void s_stop_begin (up_t *self, int code);

static const char *s_stage_what (up_t *self, int idx)
{
    child_t *c = &self->c[idx];
    switch (c->ready) {
    case R_ENDPOINT:
        return c->endpoint;
    case R_HTTP:
        return "/v1/health/ready";
    default:
        return "";
    }
}

static void s_stage_next (up_t *self)
{
    while (++self->stage < K_N && !self->c[self->stage].enabled)
        ;
    self->stage_ms = s_now ();
    self->next_progress_ms = self->stage_ms + PROGRESS_MS;
    self->last_reason[0] = 0;
    if (self->stage == K_N) return;
    child_t *c = &self->c[self->stage];
    if (s_spawn (self, self->stage)) {
        s_stop_begin (self, CLI_FAIL);
        return;
    }
    if (self->stage == K_KEYS)
        s_say (self, "%s (pid %d)",
               self->key_from_env    ? "installing the key in CORRAL_API_KEY"
               : self->key_from_file ? "checking the saved API key"
                                     : "making an API key for this stack",
               (int)c->pid);
    else
        s_say (self, "starting %s (pid %d)%s%s", c->bin, (int)c->pid,
               *s_stage_what (self, self->stage) ? ", waiting for " : "",
               s_stage_what (self, self->stage));
}

static void s_print_banner (up_t *self);

//  While starting: is the current stage done?  Then the next.
static void s_advance (up_t *self)
{
    while (self->state == U_STARTING && self->stage < K_N) {
        child_t *c = &self->c[self->stage];
        if (c->state != C_RUNNING && c->ready != R_EXIT) return; //  restarting
        if (!s_is_up (self, c)) {
            if (s_now () >= self->next_progress_ms) {
                s_say (self, "still waiting for %s (%.0f s): %s", c->name,
                       (s_now () - self->stage_ms) / 1000.0,
                       *self->last_reason ? self->last_reason : "no sign yet");
                self->next_progress_ms = s_now () + PROGRESS_MS;
            }
            if (s_now () - self->t0 >= self->cfg.ready_ms) {
                s_say (self, "the stack is not ready after %.0f s (%s: %s); stopping",
                       self->cfg.ready_ms / 1000.0, c->name,
                       *self->last_reason ? self->last_reason : "no sign");
                s_stop_begin (self, CLI_FAIL);
            }
            return;
        }
        if (self->stage == K_KEYS) {
            int st = c->exit_status;
            if (WIFEXITED (st) && WEXITSTATUS (st) == 0) {
                if (!self->key_from_env && !self->key_from_file) {
                    if (!self->key[0] || s_save_key (self)) {
                        s_say (
                            self, "could not keep the new key in %s: %s", self->keyfile,
                            self->key[0] ? strerror (errno) : "corral-keys printed none");
                        s_stop_begin (self, CLI_FAIL);
                        return;
                    }
                }
            } else if (self->key_from_file && !self->key_retry) {
                s_say (self, "the key saved in %s is not usable; making a new one",
                       self->keyfile);
                self->key_retry = true;
                self->key_from_file = false;
                self->key[0] = 0;
                self->stage--;
                s_stage_next (self);
                continue;
            } else {
                s_say (self, "the API key step failed (see [keys] above); stopping");
                s_stop_begin (self, WIFEXITED (st) && WEXITSTATUS (st) == 2 ? CLI_USAGE
                                                                            : CLI_FAIL);
                return;
            }
        } else
            s_say (self, "%s is up (%.1f s)", c->name,
                   (s_now () - self->stage_ms) / 1000.0);
        c->is_up = true;
        s_stage_next (self);
    }
    if (self->state == U_STARTING && self->stage == K_N) {
        self->state = U_RUNNING;
        s_print_banner (self);
    }
}

/* ---- children that exit ------------------------------------------------------- */

static child_t *s_child_by_pid (up_t *self, pid_t pid)
{
    for (int i = 0; i < K_N; i++)
        if (self->c[i].pid == pid && pid > 0) return &self->c[i];
    return NULL;
}

static void s_on_exit (up_t *self, child_t *c, int status)
{
    int idx = (int)(c - self->c);
    c->pid = 0;
    c->exit_status = status;
    if (c->fd >= 0) {
        s_read_child (self, c); //  its last words
    }
    if (idx == K_KEYS) {
        c->state = C_DONE;
        return;
    }
    char how[96];
    s_describe_status (status, how, sizeof how);
    int64_t ran = s_now () - c->started_ms;
    if (self->state == U_STOPPING || self->state == U_DONE) {
        c->state = C_DONE;
        s_say (self, "%s stopped (%s)", c->name,
               WIFEXITED (status) && WEXITSTATUS (status) == 0 ? "cleanly" : how);
        return;
    }
    if (self->state == U_STARTING && !c->is_up && ++c->start_exits >= START_TRIES) {
        c->state = C_DONE;
        s_say (self, "%s %s while starting, %d times; giving up (see its lines above)",
               c->bin, how, c->start_exits);
        s_stop_begin (self, CLI_FAIL);
        return;
    }
    if (ran >= STABLE_MS) c->backoff_ms = 0;
    c->backoff_ms = c->backoff_ms ? c->backoff_ms * 2 : BACKOFF_MIN_MS;
    if (c->backoff_ms > BACKOFF_MAX_MS) c->backoff_ms = BACKOFF_MAX_MS;
    c->state = C_BACKOFF;
    c->restart_at_ms = s_now () + c->backoff_ms;
    c->restarts++;
    s_say (self, "%s %s after %.1f s; restarting it in %.1f s (restart %d)", c->bin, how,
           ran / 1000.0, c->backoff_ms / 1000.0, c->restarts);
}

//  Reap every child that exited: ours, and leftovers of theirs that were
//  handed to us as subreaper.
static void s_reap (up_t *self)
{
    int status;
    pid_t pid;
    while ((pid = waitpid (-1, &status, WNOHANG)) > 0) {
        child_t *c = s_child_by_pid (self, pid);
        if (c)
            s_on_exit (self, c, status);
        else if (self->state != U_DONE)
            s_say (self, "reaped pid %d, a process a service left behind", (int)pid);
    }
}

static void s_restart_due (up_t *self)
{
    if (self->state == U_STOPPING || self->state == U_DONE) return;
    for (int i = 0; i < K_N; i++) {
        child_t *c = &self->c[i];
        if (c->state != C_BACKOFF || s_now () < c->restart_at_ms) continue;
        if (s_spawn (self, i) == 0)
            s_say (self, "started %s again (pid %d)", c->bin, (int)c->pid);
        else {
            c->state = C_BACKOFF;
            c->restart_at_ms = s_now () + BACKOFF_MAX_MS;
        }
    }
}

/* ---- stopping ------------------------------------------------------------------- */

//  Pids whose parent is us and that are none of our services.
static int s_orphans (up_t *self, pid_t *out, int max)
{
    DIR *d = opendir ("/proc");
    if (!d) return 0;
    int n = 0;
    pid_t me = getpid ();
    struct dirent *e;
    while ((e = readdir (d)) && n < max) {
        if (!isdigit ((unsigned char)e->d_name[0])) continue;
        char path[300], buf[512];
        snprintf (path, sizeof path, "/proc/%s/stat", e->d_name);
        int fd = open (path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) continue;
        ssize_t r = read (fd, buf, sizeof buf - 1);
        close (fd);
        if (r <= 0) continue;
        buf[r] = 0;
        char *p = strrchr (buf, ')');
        char st;
        int ppid;
        if (!p || sscanf (p + 1, " %c %d", &st, &ppid) != 2) continue;
        pid_t pid = (pid_t)atoi (e->d_name);
        if (ppid == me && !s_child_by_pid (self, pid)) out[n++] = pid;
    }
    closedir (d);
    return n;
}

static void s_stop_begin (up_t *self, int code)
{
    if (self->state == U_STOPPING || self->state == U_DONE) return;
    self->exit_code = code;
    self->state = U_STOPPING;
    self->stop_idx = K_N;
    for (int i = 0; i < K_N; i++)
        if (self->c[i].state == C_BACKOFF) self->c[i].state = C_DONE;
    s_say (self, "stopping the stack (Ctrl-C again kills at once)");
}

//  One step of the ordered stop; sets U_DONE when nothing is left.
static void s_stop_step (up_t *self)
{
    if (self->state != U_STOPPING) return;
    int64_t now = s_now ();
    while (self->stop_idx > 0) {
        child_t *c = &self->c[self->stop_idx - 1];
        if (!c->pid) {
            self->stop_idx--;
            continue;
        }
        if (self->kill_all) {
            kill (-c->pid, SIGKILL);
            kill (c->pid, SIGKILL);
            return;
        }
        if (!c->signalled) {
            c->signalled = true;
            c->kill_at_ms = now + self->cfg.stop_ms;
            kill (c->pid, SIGTERM);
            return;
        }
        if (now >= c->kill_at_ms) {
            s_say (self, "%s did not stop in %.1f s; killing it", c->bin,
                   self->cfg.stop_ms / 1000.0);
            kill (-c->pid, SIGKILL);
            kill (c->pid, SIGKILL);
            c->kill_at_ms = now + 60000;
        }
        return;
    }
    //  The services are gone; now what they left behind.
    pid_t pids[256];
    int n = s_orphans (self, pids, 256);
    if (!n) {
        self->state = U_DONE;
        return;
    }
    if (!self->orphans_signalled) {
        self->orphans_signalled = true;
        self->orphan_deadline_ms = now + ORPHAN_GRACE_MS;
        s_say (self, "stopping %d process%s the services left behind", n,
               n == 1 ? "" : "es");
        for (int i = 0; i < n; i++) kill (pids[i], SIGTERM);
    } else if (now >= self->orphan_deadline_ms || self->kill_all)
        for (int i = 0; i < n; i++) kill (pids[i], SIGKILL);
}

/* ---- the banner ----------------------------------------------------------------- */

//  How a person runs this binary: "corral" when PATH finds this one.
static void s_self_name (char *out, size_t outlen)
{
    char me[PATH_MAX], cwd[PATH_MAX];
    snprintf (out, outlen, "corral");
    ssize_t n = readlink ("/proc/self/exe", me, sizeof me - 1);
    if (n <= 0) return;
    me[n] = 0;
    const char *path = getenv ("PATH");
    char *copy = path ? strdup (path) : NULL;
    if (copy) {
        char *save = NULL;
        for (char *d = strtok_r (copy, ":", &save); d; d = strtok_r (NULL, ":", &save)) {
            char cand[PATH_MAX + 16], real[PATH_MAX];
            snprintf (cand, sizeof cand, "%s/corral", d);
            if (realpath (cand, real) && !strcmp (real, me)) {
                free (copy);
                return;
            }
        }
        free (copy);
    }
    size_t cl = getcwd (cwd, sizeof cwd) ? strlen (cwd) : 0;
    if (cl && !strncmp (me, cwd, cl) && me[cl] == '/')
        snprintf (out, outlen, "%s", me + cl + 1);
    else
        snprintf (out, outlen, "%s", me);
}

static void s_print_banner (up_t *self)
{
    char corral[PATH_MAX];
    s_self_name (corral, sizeof corral);
    const char *b = s_color (self, "\033[1m"), *z = s_color (self, "\033[0m");
    printf ("\n%sCorral is up%s (%.1f s).  State in %s\n", b, z,
            (s_now () - self->t0) / 1000.0, self->cfg.data_dir);
    printf ("  web page  %s%s/%s\n", b, self->http, z);
    printf ("  ACP       %s   (WebSocket, for editors and SDKs)\n", self->ws);
    if (self->key_from_env)
        printf ("  API key   the one in CORRAL_API_KEY\n");
    else
        printf ("  API key   %s%s%s\n            (kept in %s)\n", b, self->key, z,
                self->keyfile);
    if (!strcmp (self->provider, "fake"))
        printf ("  model     " MODEL_SCRIPTED " at %s (offline)\n", self->model_url);
    else {
        bool openai = !strcmp (self->provider, "openai");
        const char *url = getenv (openai ? "OPENAI_BASE_URL" : "ANTHROPIC_BASE_URL");
        printf ("  model     %s at %s, default model %s\n",
                openai ? "OpenAI-compatible" : "Anthropic",
                url && *url ? url
                : openai    ? "https://api.openai.com/v1"
                            : "https://api.anthropic.com",
                getenv ("CORRAL_DEFAULT_MODEL"));
    }
    printf ("  bus       store %s, events %s\n", self->cfg.store_ep, self->cfg.events_ep);
    //  What the client commands need to find this stack from elsewhere.
    char here[PATH_MAX], real_here[PATH_MAX];
    snprintf (here, sizeof here, "./data");
    bool default_dir =
        realpath (here, real_here) && !strcmp (real_here, self->cfg.data_dir);
    bool default_addrs = !strcmp (self->cfg.listen, "127.0.0.1:8080") &&
                         !strcmp (self->cfg.store_ep, "tcp://127.0.0.1:7701") &&
                         !strcmp (self->cfg.events_ep, "tcp://127.0.0.1:7704");
    printf ("\nIn another terminal%s:\n",
            default_dir && default_addrs && !self->cfg.workspace_roots
                ? " (from this folder)"
                : "");
    if (!default_dir) printf ("  export CORRAL_DATA_DIR=%s\n", self->cfg.data_dir);
    if (strcmp (self->cfg.listen, "127.0.0.1:8080"))
        printf ("  export CORRAL_LISTEN=%s\n", self->cfg.listen);
    //  corral chat picks a new session's folder among them.
    if (self->cfg.workspace_roots)
        printf ("  export CORRAL_WORKSPACE_ROOTS=%s\n", self->cfg.workspace_roots);
    //  corral keys and corral tap talk to the bus.
    if (strcmp (self->cfg.store_ep, "tcp://127.0.0.1:7701"))
        printf ("  export CORRAL_STORE_ENDPOINT=%s\n", self->cfg.store_ep);
    if (strcmp (self->cfg.events_ep, "tcp://127.0.0.1:7704"))
        printf ("  export CORRAL_EVENTS_ENDPOINT=%s\n", self->cfg.events_ep);
    static const char *const cmds[][2] = {
        {"chat", "talk to an agent"},
        {"sessions list", "the sessions"},
        {"tap", "every event on the bus, as JSON lines"},
    };
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++)
        printf ("  %s %-15s %s\n", corral, cmds[i][0], cmds[i][1]);
    printf ("Ctrl-C stops everything.\n\n");
    fflush (stdout);
}

/* ---- setup ----------------------------------------------------------------------- */

static int s_mkdirs (const char *path)
{
    char tmp[PATH_MAX];
    snprintf (tmp, sizeof tmp, "%s", path);
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        if (mkdir (tmp, 0700) && errno != EEXIST) return -1;
        *p = '/';
    }
    if (mkdir (tmp, 0700) && errno != EEXIST) return -1;
    return 0;
}

static const char *s_pick_provider (const char *opt)
{
    if (strcmp (opt, "auto")) return opt;
    const char *v[] = {"OPENAI_API_KEY", "OPENAI_BASE_URL", "CORRAL_OPENAI_API_KEY",
                       "CORRAL_OPENAI_BASE_URL"};
    for (size_t i = 0; i < 4; i++)
        if (getenv (v[i]) && *getenv (v[i])) return "openai";
    if ((getenv ("ANTHROPIC_API_KEY") && *getenv ("ANTHROPIC_API_KEY")) ||
        (getenv ("CORRAL_ANTHROPIC_API_KEY") && *getenv ("CORRAL_ANTHROPIC_API_KEY")))
        return "anthropic";
    return "fake";
}

static void s_setenv_default (const char *name, const char *value)
{
    const char *v = getenv (name);
    if (!v || !*v) setenv (name, value, 1);
}

static int s_setup (up_t *self)
{
    up_config_t *cfg = &self->cfg;
    //  The data dir, absolute, for every service and the banner.
    if (s_mkdirs (cfg->data_dir)) {
        fprintf (stderr, "corral up: cannot make the data folder %s: %s\n", cfg->data_dir,
                 strerror (errno));
        return CLI_FAIL;
    }
    char real[PATH_MAX];
    if (!realpath (cfg->data_dir, real)) {
        fprintf (stderr, "corral up: %s: %s\n", cfg->data_dir, strerror (errno));
        return CLI_FAIL;
    }
    free (cfg->data_dir);
    cfg->data_dir = strdup (real);
    //  One corral up per data folder.
    char lock[PATH_MAX + 16];
    snprintf (lock, sizeof lock, "%s/corral-up.lock", cfg->data_dir);
    self->lock_fd = open (lock, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (self->lock_fd < 0 || flock (self->lock_fd, LOCK_EX | LOCK_NB)) {
        fprintf (stderr,
                 "corral up: another corral up is running with the data folder %s; stop "
                 "it first, or choose another folder with CORRAL_DATA_DIR\n",
                 cfg->data_dir);
        return CLI_FAIL;
    }
    if (!cfg->workspace_roots) {
        char ws[PATH_MAX + 16];
        snprintf (ws, sizeof ws, "%s/workspaces", cfg->data_dir);
        s_mkdirs (ws);
    }
    //  Everything the services read, as their own CORRAL_* variables.
    setenv ("CORRAL_DATA_DIR", cfg->data_dir, 1);
    setenv ("CORRAL_LISTEN", cfg->listen, 1);
    if (cfg->workspace_roots) setenv ("CORRAL_WORKSPACE_ROOTS", cfg->workspace_roots, 1);
    setenv ("CORRAL_STORE_ENDPOINT", cfg->store_ep, 1);
    setenv ("CORRAL_SESSION_ENDPOINT", cfg->session_ep, 1);
    setenv ("CORRAL_WORKER_ENDPOINT", cfg->worker_ep, 1);
    setenv ("CORRAL_EVENTS_ENDPOINT", cfg->events_ep, 1);
    setenv ("CORRAL_MONITOR_IN_ENDPOINT", cfg->monitor_in_ep, 1);
    setenv ("CORRAL_MONITOR_ENDPOINT", cfg->monitor_ep, 1);
    setenv ("CORRAL_LOG_LEVEL", cfg->log_level, 1);

    self->provider = s_pick_provider (cfg->provider);
    if (!strcmp (self->provider, "openai"))
        s_setenv_default ("CORRAL_DEFAULT_MODEL", "gpt-4o-mini");
    else if (!strcmp (self->provider, "anthropic")) {
        s_setenv_default ("CORRAL_DEFAULT_BACKEND", "anthropic");
        s_setenv_default ("CORRAL_DEFAULT_MODEL", "claude-sonnet-4-5");
    }

    if (cli_target_from_listen (cfg->listen, self->http, sizeof self->http)) {
        fprintf (stderr, "corral up: --listen '%s' is not host:port\n", cfg->listen);
        return CLI_USAGE;
    }
    snprintf (self->ws, sizeof self->ws, "ws%s/acp", self->http + 4); //  http.. -> ws..

    //  The binaries.
    if (cli_bin_dir (self->bin_dir, sizeof self->bin_dir)) {
        fprintf (stderr, "corral up: cannot find my own binary: %s\n", strerror (errno));
        return CLI_FAIL;
    }
    for (int i = 0; i < K_N; i++) {
        child_t *c = &self->c[i];
        c->fd = -1;
        c->enabled = !(i == K_MODEL && strcmp (self->provider, "fake"));
        if (!c->enabled) continue;
        if (cli_bin_find (c->bin, c->tree, c->path, sizeof c->path) == 0) continue;
        if (c->optional) {
            c->enabled = false;
            s_say (self,
                   "%s is not built (looked in %s and %s/../%s); going on without it",
                   c->bin, self->bin_dir, self->bin_dir, c->tree);
            continue;
        }
        fprintf (stderr,
                 "corral up: cannot find %s next to %s/corral or in its build tree "
                 "(%s/../%s); "
                 "build everything first (cmake --build)\n",
                 c->bin, self->bin_dir, self->bin_dir, c->tree);
        return CLI_FAIL;
    }
    self->c[K_STORE].endpoint = cfg->store_ep;
    self->c[K_SESSION].endpoint = cfg->session_ep;
    self->c[K_MONITOR].endpoint = cfg->monitor_ep;

    //  Another stack on the same addresses would answer our checks.
    const struct {
        const char *ep, *env;
    } eps[] = {{cfg->store_ep, "STORE"},     {cfg->session_ep, "SESSION"},
               {cfg->worker_ep, "WORKER"},   {cfg->events_ep, "EVENTS"},
               {cfg->monitor_ep, "MONITOR"}, {cfg->monitor_in_ep, "MONITOR_IN"}};
    for (size_t i = 0; i < sizeof eps / sizeof eps[0]; i++)
        if (cli_endpoint_open (eps[i].ep) == 1) {
            fprintf (stderr,
                     "corral up: something already listens on %s: another Corral stack?  "
                     "Stop it, or move this one with CORRAL_%s_ENDPOINT\n",
                     eps[i].ep, eps[i].env);
            return CLI_FAIL;
        }
    char gw_ep[300];
    snprintf (gw_ep, sizeof gw_ep, "tcp://%s", self->http + strlen ("http://"));
    if (!strncmp (self->http, "http://", 7) && cli_endpoint_open (gw_ep) == 1) {
        fprintf (stderr,
                 "corral up: something already listens on %s: another gateway?  Stop it, "
                 "or choose another address with CORRAL_LISTEN=127.0.0.1:PORT\n",
                 cfg->listen);
        return CLI_FAIL;
    }
    s_key_source (self);
    return CLI_OK;
}

static void s_announce_model (up_t *self)
{
    if (!strcmp (self->provider, "fake")) {
        s_say (self, "No model provider is configured, so the stack uses " MODEL_SCRIPTED
                     " (corral-fake-model): it works offline and answers from a script, "
                     "with streaming, tool calls and permission prompts.");
        s_say (self,
               "For a real model, start again with OPENAI_API_KEY=... (plus "
               "OPENAI_BASE_URL=... for any OpenAI-compatible server: vLLM, llama.cpp, "
               "Ollama, OpenRouter) or ANTHROPIC_API_KEY=...; CORRAL_DEFAULT_MODEL "
               "picks the model.");
    } else
        s_say (self,
               "model provider: %s, default model %s (CORRAL_DEFAULT_MODEL changes it)",
               !strcmp (self->provider, "openai") ? "OpenAI-compatible" : "Anthropic",
               getenv ("CORRAL_DEFAULT_MODEL") ? getenv ("CORRAL_DEFAULT_MODEL") : "?");
}

/* ---- the loop -------------------------------------------------------------------- */

static int64_t s_next_timer (up_t *self)
{
    int64_t now = s_now (), next = now + 1000;
    if (self->state == U_STARTING) next = now + PROBE_EVERY_MS / 2;
    if (self->state == U_STOPPING) next = now + 50;
    for (int i = 0; i < K_N; i++)
        if (self->c[i].state == C_BACKOFF && self->c[i].restart_at_ms < next)
            next = self->c[i].restart_at_ms;
    return next > now ? next - now : 0;
}

static void s_on_signal (up_t *self)
{
    struct signalfd_siginfo si;
    while (read (self->sfd, &si, sizeof si) == (ssize_t)sizeof si) {
        if (si.ssi_signo == SIGCHLD) continue; //  reaped below
        if (self->state == U_STOPPING) {
            self->kill_all = true;
            s_say (self, "%s again: killing everything now",
                   strsignal ((int)si.ssi_signo));
        } else if (self->state != U_DONE) {
            s_say (self, "%s", strsignal ((int)si.ssi_signo));
            s_stop_begin (self, self->state == U_STARTING ? CLI_FAIL : CLI_OK);
        }
    }
}

static int s_run (up_t *self)
{
    self->t0 = s_now ();
    self->state = U_STARTING;
    self->stage = -1;
    s_announce_model (self);
    s_stage_next (self);
    while (self->state != U_DONE) {
        struct curl_waitfd fds[K_N + 1];
        int nfds = 0;
        fds[nfds++] = (struct curl_waitfd){.fd = self->sfd, .events = CURL_WAIT_POLLIN};
        child_t *owner[K_N + 1] = {NULL};
        for (int i = 0; i < K_N; i++)
            if (self->c[i].fd >= 0) {
                owner[nfds] = &self->c[i];
                fds[nfds++] =
                    (struct curl_waitfd){.fd = self->c[i].fd, .events = CURL_WAIT_POLLIN};
            }
        curl_multi_poll (self->multi, fds, (unsigned)nfds, (int)s_next_timer (self),
                         NULL);
        for (int i = 1; i < nfds; i++)
            if (fds[i].revents && !s_read_child (self, owner[i])) {
                close (owner[i]->fd);
                owner[i]->fd = -1;
            }
        if (fds[0].revents) s_on_signal (self);
        s_reap (self);
        if (self->multi) s_probe_collect (self);
        s_restart_due (self);
        s_advance (self);
        s_stop_step (self);
    }
    for (int i = 0; i < K_N; i++)
        if (self->c[i].fd >= 0) {
            s_read_child (self, &self->c[i]);
            close (self->c[i].fd);
            self->c[i].fd = -1;
        }
    s_say (self, self->exit_code ? "stopped (exit %d)" : "everything stopped",
           self->exit_code);
    return self->exit_code;
}

int cli_up (int argc, char **argv)
{
    up_t self_buf = {0}, *self = &self_buf;
    static const child_t tmpl[K_N] = {
        [K_STORE] = {"store", "corral-store", "services/store/corral-store", R_ENDPOINT},
        [K_KEYS] = {"keys", "corral-keys", "gateway/corral-keys", R_EXIT},
        [K_SESSION] = {"session", "corral-session", "services/session/corral-session",
                       R_ENDPOINT},
        [K_MONITOR] = {"monitor", "corral-monitor", "services/monitor/corral-monitor",
                       R_ENDPOINT, true},
        [K_MODEL] = {"model", "corral-fake-model", "tests/fakes/corral-fake-model",
                     R_LINE},
        [K_WORKER] = {"worker", "corral-worker", "services/agent-worker/corral-worker",
                      R_NONE},
        [K_GATEWAY] = {"gateway", "corral-gateway", "gateway/corral-gateway", R_HTTP},
    };
    memcpy (self->c, tmpl, sizeof tmpl);
    int rc = cli_config (
        s_opts, &self->cfg, argc, argv, "corral up",
        "Run the whole local stack in the foreground: corral-store, corral-session, "
        "corral-monitor, corral-worker, corral-gateway (and the scripted model server "
        "when "
        "no provider is configured), in order, with their log lines prefixed; a crashed "
        "service is restarted; Ctrl-C stops everything.  CORRAL_API_KEY installs that "
        "admin key instead of making one.  Exit: 0 stopped by a signal, 1 could not "
        "start, 2 usage.");
    if (rc != CLI_GO_ON) return rc;
    setvbuf (stdout, NULL, _IOLBF, 0);
    const char *fmt = self->cfg.log_format;
    self->human = !strcmp (fmt, "human") || (!strcmp (fmt, "auto") && isatty (1));
    self->color = isatty (1) && !getenv ("NO_COLOR");
    for (int i = 0; i < K_N; i++) {
        int w = (int)strlen (self->c[i].name);
        if (w > self->name_width) self->name_width = w;
    }
    self->lock_fd = -1;
    self->sfd = -1;
    rc = s_setup (self);
    if (rc) goto done;

    //  Signals through a signalfd; we are the reaper of the services'
    //  leftovers.
    sigset_t set;
    sigemptyset (&set);
    sigaddset (&set, SIGINT);
    sigaddset (&set, SIGTERM);
    sigaddset (&set, SIGHUP);
    sigaddset (&set, SIGCHLD);
    sigprocmask (SIG_BLOCK, &set, NULL);
    signal (SIGPIPE, SIG_IGN);
    self->sfd = signalfd (-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    prctl (PR_SET_CHILD_SUBREAPER, 1);
    curl_global_init (CURL_GLOBAL_DEFAULT);
    self->multi = curl_multi_init ();
    if (self->sfd < 0 || !self->multi) {
        fprintf (stderr, "corral up: cannot set up signals or libcurl\n");
        rc = CLI_FAIL;
        goto done;
    }
    rc = s_run (self);

done:
    if (self->probe) {
        curl_multi_remove_handle (self->multi, self->probe);
        curl_easy_cleanup (self->probe);
    }
    if (self->multi) curl_multi_cleanup (self->multi);
    if (self->sfd >= 0) close (self->sfd);
    if (self->lock_fd >= 0) close (self->lock_fd);
    memset (self->key, 0, sizeof self->key);
    cm_config_free (s_opts, &self->cfg);
    return rc;
}
