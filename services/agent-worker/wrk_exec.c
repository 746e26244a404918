/*  wrk_exec.c - run_command's child process (see wrk_exec.h).

    Start: everything that allocates happens before fork (environment,
    argv, descriptors); the child only makes async-signal-safe calls, and
    reports a failed setup step through a close-on-exec pipe, so the parent
    knows the exec happened when that pipe reads end-of-file.

    Exit is noticed with waitid(WNOWAIT): the shell stays a zombie, so its
    pid - the group id - cannot be reused while we may still signal the
    group.  It is reaped last, in s_finish.
*/
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/pidfd.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cm_error.h"
#include "cm_time.h"
#include "wrk_exec.h"

extern char **environ;

struct wrk_exec_s {
    pid_t pid;  //  the shell; also the group id
    int out_fd; //  read end of the output pipe, -1 after EOF
    int pidfd;  //  -1 after finishing
    int64_t started_ms, finished_ms;
    int64_t deadline_ms, kill_at_ms, grace_ms;
    bool exited;   //  the shell is a zombie (not yet reaped)
    bool finished; //  reaped; everything final
    bool term_sent, kill_sent, timed_out, cancelled;
    int status;       //  from waitpid; valid when finished
    bool status_lost; //  someone else reaped the shell

    //  Output: head, then a ring holding the last tail_max bytes.
    char *head, *ring;
    size_t head_max, tail_max, head_len, ring_len, ring_pos, total;
    char *joined; //  wrk_exec_output's buffer
};

//  --------------------------------------------------------------------------
//  Environment

static bool s_has_ci (const char *hay, const char *needle)
{
    return strcasestr (hay, needle) != NULL;
}

bool wrk_exec_env_denied (const char *name)
{
    static const char *const contains[] = {"API_KEY", "TOKEN",      "SECRET",  "PASSWORD",
                                           "PASSWD",  "CREDENTIAL", "PRIVATE", NULL};
    static const char *const prefixes[] = {"CORRAL_", "AWS_",    "AZURE_",     "GOOGLE_",
                                           "GCP_",    "OPENAI_", "ANTHROPIC_", "GITHUB_",
                                           "GH_",     "GITLAB_", "HF_",        NULL};
    size_t len = strlen (name);
    if (len >= 4 && strcasecmp (name + len - 4, "_KEY") == 0) return true;
    for (size_t i = 0; contains[i]; i++)
        if (s_has_ci (name, contains[i])) return true;
    for (size_t i = 0; prefixes[i]; i++)
        if (strncasecmp (name, prefixes[i], strlen (prefixes[i])) == 0) return true;
    return false;
}

void wrk_exec_env_destroy (char ***env)
{
    if (!env || !*env) return;
    for (char **p = *env; *p; p++) free (*p);
    free (*env);
    *env = NULL;
}

static bool s_name_is (const char *entry, const char *name)
{
    size_t n = strlen (name);
    return strncmp (entry, name, n) == 0 && entry[n] == '=';
}

//  Set NAME=value in list (replacing one of the same name).
static int s_env_set (char **list, size_t *count, const char *entry)
{
    size_t nlen = strcspn (entry, "=");
    char *copy = strdup (entry);
    if (!copy) return CM_E_NOMEM;
    for (size_t i = 0; i < *count; i++)
        if (strncmp (list[i], entry, nlen + 1) == 0) {
            free (list[i]);
            list[i] = copy;
            return 0;
        }
    list[(*count)++] = copy;
    list[*count] = NULL;
    return 0;
}

int wrk_exec_env_new (char *const *parent, const char *const *extra, char ***out)
{
    static const char *const keep[] = {"PATH",     "HOME",        "USER", "LOGNAME",
                                       "SHELL",    "TMPDIR",      "LANG", "LC_ALL",
                                       "LC_CTYPE", "LC_MESSAGES", "TZ",   NULL};
    static const char *const fixed[] = {"TERM=dumb", "PAGER=cat", "GIT_PAGER=cat",
                                        "GIT_TERMINAL_PROMPT=0", NULL};
    *out = NULL;
    size_t nextra = 0;
    for (size_t i = 0; extra && extra[i]; i++) {
        const char *e = extra[i];
        size_t nlen = strcspn (e, "=");
        if (nlen == 0 || e[nlen] != '=' || isdigit ((unsigned char)e[0]))
            return CM_E_INVALID;
        char name[256];
        if (nlen >= sizeof name) return CM_E_INVALID;
        for (size_t k = 0; k < nlen; k++)
            if (!isalnum ((unsigned char)e[k]) && e[k] != '_') return CM_E_INVALID;
        memcpy (name, e, nlen);
        name[nlen] = '\0';
        if (wrk_exec_env_denied (name)) return CM_E_FORBIDDEN;
        nextra++;
    }
    size_t cap =
        sizeof keep / sizeof keep[0] + sizeof fixed / sizeof fixed[0] + 2 + nextra;
    char **list = calloc (cap + 1, sizeof *list);
    if (!list) return CM_E_NOMEM;
    size_t n = 0;
    int rc = 0;
    bool path = false, lang = false;
    for (size_t k = 0; keep[k] && !rc; k++) {
        for (size_t i = 0; parent && parent[i]; i++) {
            if (!s_name_is (parent[i], keep[k]) || wrk_exec_env_denied (keep[k]))
                continue;
            rc = s_env_set (list, &n, parent[i]);
            path = path || !strcmp (keep[k], "PATH");
            lang = lang || !strcmp (keep[k], "LANG") || !strcmp (keep[k], "LC_ALL");
            break;
        }
    }
    if (!rc && !path) rc = s_env_set (list, &n, "PATH=" WRK_EXEC_DEFAULT_PATH);
    if (!rc && !lang) rc = s_env_set (list, &n, "LANG=C.UTF-8");
    for (size_t i = 0; fixed[i] && !rc; i++) rc = s_env_set (list, &n, fixed[i]);
    for (size_t i = 0; extra && extra[i] && !rc; i++) rc = s_env_set (list, &n, extra[i]);
    if (rc) {
        wrk_exec_env_destroy (&list);
        return rc;
    }
    *out = list;
    return 0;
}

//  --------------------------------------------------------------------------
//  Start

//  What the child reports when a setup step fails.
typedef struct {
    int step;
    int err;
} s_child_err_t;

static const char *const s_steps[] = {
    "setpgid", "prctl(PR_SET_PDEATHSIG)", "parent died", "fchdir", "dup2", "execve"};

//  Move fd to 3 or above (so the child's dup2 onto 0-2 cannot clobber it).
static int s_fd_high (int fd)
{
    if (fd < 0 || fd > 2) return fd;
    int moved = fcntl (fd, F_DUPFD_CLOEXEC, 3);
    close (fd);
    return moved;
}

static void s_child (int report, int cwd_fd, int null_fd, int out_w, pid_t parent,
                     char *const argv[], char *const envp[], int max_fd)
    __attribute__ ((noreturn));

static void s_child (int report, int cwd_fd, int null_fd, int out_w, pid_t parent,
                     char *const argv[], char *const envp[], int max_fd)
{
    s_child_err_t e = {0, 0};
    //  Default dispositions first (ignored signals survive exec), then
    //  unblock what the parent blocked around fork.
    struct sigaction dfl = {.sa_handler = SIG_DFL};
    for (int sig = 1; sig < NSIG; sig++)
        if (sig != SIGKILL && sig != SIGSTOP) sigaction (sig, &dfl, NULL);
    sigset_t none;
    sigemptyset (&none);
    sigprocmask (SIG_SETMASK, &none, NULL);

    if (setpgid (0, 0)) goto fail;
    e.step = 1;
    if (prctl (PR_SET_PDEATHSIG, SIGKILL)) goto fail;
    e.step = 2;
    if (getppid () != parent) { //  the parent died before prctl took effect
        errno = ESRCH;
        goto fail;
    }
    e.step = 3;
    if (fchdir (cwd_fd)) goto fail;
    e.step = 4;
    if (dup2 (null_fd, 0) < 0 || dup2 (out_w, 1) < 0 || dup2 (out_w, 2) < 0) goto fail;
    //  Keep 0-2 and the report pipe (close-on-exec); close the rest.
    if (report > 3) close_range (3, (unsigned)report - 1, 0);
    if (close_range ((unsigned)report + 1, ~0u, 0))
        for (int fd = report + 1; fd < max_fd; fd++) close (fd);
    e.step = 5;
    execve ("/bin/sh", argv, envp);
fail:
    e.err = errno;
    if (write (report, &e, sizeof e) < 0) {
        //  nothing more to do: the parent sees exit status 127
    }
    _exit (127);
}

int wrk_exec_start (const wrk_exec_opts_t *opts, wrk_exec_t **out, char *err,
                    size_t errlen)
{
    if (err && errlen) err[0] = '\0';
    if (!out) return cm_err_set (err, errlen, CM_E_INVALID, "no place for the result");
    *out = NULL;
    if (!opts || !opts->scope || !opts->command)
        return cm_err_set (err, errlen, CM_E_INVALID, "missing command or scope");
    size_t clen = strlen (opts->command);
    if (clen == 0 || clen > WRK_TOOL_COMMAND_MAX)
        return cm_err_set (err, errlen, CM_E_INVALID, "command is empty or over %u bytes",
                           WRK_TOOL_COMMAND_MAX);
    if (opts->timeout_ms < 0 || opts->grace_ms < 0 ||
        opts->head_max > WRK_EXEC_KEEP_MAX || opts->tail_max > WRK_EXEC_KEEP_MAX)
        return cm_err_set (err, errlen, CM_E_INVALID,
                           "timeout or output cap out of range");

    int rc = 0, cwd_fd = -1, null_fd = -1, pipe_fd[2] = {-1, -1}, rep[2] = {-1, -1};
    char **own_env = NULL;
    wrk_exec_t *x = calloc (1, sizeof *x);
    if (!x) return cm_err_set (err, errlen, CM_E_NOMEM, "out of memory");
    x->pid = -1;
    x->out_fd = x->pidfd = -1;
    x->head_max = opts->head_max ? opts->head_max : WRK_EXEC_HEAD_DEFAULT;
    x->tail_max = opts->tail_max ? opts->tail_max : WRK_EXEC_TAIL_DEFAULT;
    x->head = malloc (x->head_max);
    x->ring = malloc (x->tail_max);
    if (!x->head || !x->ring) {
        rc = cm_err_set (err, errlen, CM_E_NOMEM, "out of memory");
        goto done;
    }
    int64_t timeout = opts->timeout_ms ? opts->timeout_ms : WRK_EXEC_TIMEOUT_DEFAULT_MS;
    if (timeout > WRK_EXEC_TIMEOUT_MAX_MS) timeout = WRK_EXEC_TIMEOUT_MAX_MS;
    x->grace_ms = opts->grace_ms ? opts->grace_ms : WRK_EXEC_GRACE_DEFAULT_MS;

    char *const *envp = opts->env;
    if (!envp) {
        rc = wrk_exec_env_new (environ, NULL, &own_env);
        if (rc) {
            cm_err_set (err, errlen, rc, "building the environment failed");
            goto done;
        }
        envp = own_env;
    }
    char *argv[] = {"sh", "-c", (char *)opts->command, NULL};

    rc = wrk_path_open (opts->scope, ".", O_RDONLY | O_DIRECTORY, 0, &cwd_fd, NULL, 0,
                        err, errlen);
    if (rc) goto done;
    null_fd = open ("/dev/null", O_RDONLY | O_CLOEXEC);
    if (null_fd < 0 || pipe2 (pipe_fd, O_CLOEXEC) || pipe2 (rep, O_CLOEXEC)) {
        rc = cm_err_set (err, errlen, CM_E_IO, "pipe: %s", strerror (errno));
        goto done;
    }
    cwd_fd = s_fd_high (cwd_fd);
    null_fd = s_fd_high (null_fd);
    pipe_fd[1] = s_fd_high (pipe_fd[1]);
    rep[1] = s_fd_high (rep[1]);
    if (cwd_fd < 0 || null_fd < 0 || pipe_fd[1] < 0 || rep[1] < 0) {
        rc = cm_err_set (err, errlen, CM_E_IO, "dup: %s", strerror (errno));
        goto done;
    }
    struct rlimit rl;
    int max_fd = getrlimit (RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < 65536
                     ? (int)rl.rlim_cur
                     : 65536;

    //  Block signals across fork so no handler of ours runs in the child
    //  before it resets them.
    sigset_t all, old;
    sigfillset (&all);
    pthread_sigmask (SIG_SETMASK, &all, &old);
    pid_t parent = getpid ();
    x->started_ms = cm_mono_ms ();
    pid_t pid = fork ();
    if (pid == 0)
        s_child (rep[1], cwd_fd, null_fd, pipe_fd[1], parent, argv, envp, max_fd);
    int fork_errno = errno;
    pthread_sigmask (SIG_SETMASK, &old, NULL);
    if (pid < 0) {
        rc = cm_err_set (err, errlen, CM_E_IO, "fork: %s", strerror (fork_errno));
        goto done;
    }
    x->pid = pid;
    close (rep[1]);
    rep[1] = -1;
    s_child_err_t ce;
    ssize_t got;
    do got = read (rep[0], &ce, sizeof ce);
    while (got < 0 && errno == EINTR);
    if (got == (ssize_t)sizeof ce) {
        int st;
        while (waitpid (pid, &st, 0) < 0 && errno == EINTR) {
        }
        x->pid = -1;
        unsigned step = (unsigned)ce.step < sizeof s_steps / sizeof s_steps[0]
                            ? (unsigned)ce.step
                            : 0;
        rc = cm_err_set (err, errlen, CM_E_IO, "starting the command: %s: %s",
                         s_steps[step], strerror (ce.err));
        goto done;
    }
    //  ENOSYS: kernel before 5.3, or valgrind; wrk_exec_deadline then
    //  asks for polling instead.
    x->pidfd = (int)pidfd_open (pid, 0);
    if (x->pidfd < 0 && errno != ENOSYS) {
        rc = cm_err_set (err, errlen, CM_E_IO, "pidfd_open: %s", strerror (errno));
        goto done;
    }
    if (fcntl (pipe_fd[0], F_SETFL, O_NONBLOCK)) {
        rc = cm_err_set (err, errlen, CM_E_IO, "fcntl: %s", strerror (errno));
        goto done;
    }
    x->out_fd = pipe_fd[0];
    pipe_fd[0] = -1;
    x->deadline_ms = x->started_ms + timeout;
    x->kill_at_ms = INT64_MAX;
    *out = x;
    x = NULL;
done: //  success or not: x is NULL on success, the descriptors are the child's
    if (x && x->pid > 0) {
        kill (-x->pid, SIGKILL);
        int st;
        while (waitpid (x->pid, &st, 0) < 0 && errno == EINTR) {
        }
        x->pid = -1;
    }
    wrk_exec_destroy (&x);
    wrk_exec_env_destroy (&own_env);
    int fds[] = {cwd_fd, null_fd, pipe_fd[0], pipe_fd[1], rep[0], rep[1]};
    for (size_t i = 0; i < sizeof fds / sizeof fds[0]; i++)
        if (fds[i] >= 0) close (fds[i]);
    return rc;
}

//  --------------------------------------------------------------------------
//  Running

static void s_keep (wrk_exec_t *x, const char *p, size_t n)
{
    x->total += n;
    size_t take = x->head_max - x->head_len;
    if (take > n) take = n;
    memcpy (x->head + x->head_len, p, take);
    x->head_len += take;
    p += take;
    n -= take;
    if (n >= x->tail_max) { //  only the last tail_max bytes can stay
        p += n - x->tail_max;
        n = x->tail_max;
    }
    while (n > 0) {
        size_t room = x->tail_max - x->ring_pos;
        size_t k = n < room ? n : room;
        memcpy (x->ring + x->ring_pos, p, k);
        x->ring_pos = (x->ring_pos + k) % x->tail_max;
        x->ring_len = x->ring_len + k > x->tail_max ? x->tail_max : x->ring_len + k;
        p += k;
        n -= k;
    }
}

//  Read up to limit bytes of output.  Returns true at end of file (the
//  pipe is then closed).
static bool s_drain (wrk_exec_t *x, size_t limit)
{
    char buf[16384];
    size_t done = 0;
    while (x->out_fd >= 0 && done < limit) {
        ssize_t n = read (x->out_fd, buf, sizeof buf);
        if (n > 0) {
            s_keep (x, buf, (size_t)n);
            done += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && errno == EAGAIN) return false;
        close (x->out_fd); //  EOF, or an error we treat as EOF
        x->out_fd = -1;
    }
    return x->out_fd < 0;
}

static void s_group_kill (wrk_exec_t *x, int sig)
{
    //  Only while the shell is unreaped: its pid is still the group's id.
    if (!x->finished && x->pid > 0) kill (-x->pid, sig);
}

static void s_finish (wrk_exec_t *x)
{
    if (!s_drain (x, WRK_EXEC_READ_SLICE)) {
        //  Background jobs still hold the pipe: end them, keep what they
        //  wrote.
        s_group_kill (x, SIGKILL);
        s_drain (x, WRK_EXEC_READ_SLICE);
        if (x->out_fd >= 0) {
            close (x->out_fd);
            x->out_fd = -1;
        }
    }
    int st = 0;
    pid_t got;
    while ((got = waitpid (x->pid, &st, 0)) < 0 && errno == EINTR) {
    }
    x->status = st;
    x->status_lost = got != x->pid;
    x->finished = true;
    x->finished_ms = cm_mono_ms ();
    if (x->pidfd >= 0) close (x->pidfd);
    x->pidfd = -1;
}

int wrk_exec_service (wrk_exec_t *x, int64_t now_ms)
{
    if (x->finished) return 1;
    s_drain (x, WRK_EXEC_READ_SLICE);
    if (!x->exited) {
        siginfo_t si = {0};
        if (waitid (P_PID, (id_t)x->pid, &si, WEXITED | WNOHANG | WNOWAIT) == 0)
            x->exited = si.si_pid == x->pid;
        else if (errno == ECHILD)
            x->exited = true; //  reaped by someone else; s_finish notes it
    }
    if (x->exited) {
        s_finish (x);
        return 1;
    }
    if (!x->term_sent && now_ms >= x->deadline_ms) {
        x->timed_out = x->term_sent = true;
        x->kill_at_ms = now_ms + x->grace_ms;
        s_group_kill (x, SIGTERM);
    } else if (x->term_sent && !x->kill_sent && now_ms >= x->kill_at_ms) {
        x->kill_sent = true;
        s_group_kill (x, SIGKILL);
    }
    return 0;
}

int wrk_exec_fds (const wrk_exec_t *x, int fds[2])
{
    fds[0] = x->out_fd;
    fds[1] = x->pidfd;
    return (fds[0] >= 0) + (fds[1] >= 0);
}

int64_t wrk_exec_deadline (const wrk_exec_t *x)
{
    if (x->finished) return INT64_MAX;
    int64_t next = !x->term_sent  ? x->deadline_ms
                   : x->kill_sent ? INT64_MAX
                                  : x->kill_at_ms;
    if (x->pidfd < 0) { //  nothing tells us of the exit: look again soon
        int64_t poll_at = cm_mono_ms () + WRK_EXEC_POLL_MS;
        if (poll_at < next) next = poll_at;
    }
    return next;
}

void wrk_exec_cancel (wrk_exec_t *x)
{
    if (!x || x->finished) return;
    if (!x->timed_out) x->cancelled = true;
    x->kill_sent = true;
    s_group_kill (x, SIGKILL);
}

bool wrk_exec_finished (const wrk_exec_t *x)
{
    return x->finished;
}

pid_t wrk_exec_pid (const wrk_exec_t *x)
{
    return x->pid;
}

int wrk_exec_exit_code (const wrk_exec_t *x)
{
    if (!x->finished || x->status_lost || !WIFEXITED (x->status)) return -1;
    return WEXITSTATUS (x->status);
}

int wrk_exec_signal (const wrk_exec_t *x)
{
    if (!x->finished || x->status_lost || !WIFSIGNALED (x->status)) return 0;
    return WTERMSIG (x->status);
}

bool wrk_exec_timed_out (const wrk_exec_t *x)
{
    return x->timed_out;
}

bool wrk_exec_cancelled (const wrk_exec_t *x)
{
    return x->cancelled;
}

bool wrk_exec_truncated (const wrk_exec_t *x)
{
    return x->total > x->head_len + x->ring_len;
}

size_t wrk_exec_output_total (const wrk_exec_t *x)
{
    return x->total;
}

int64_t wrk_exec_elapsed_ms (const wrk_exec_t *x)
{
    return (x->finished ? x->finished_ms : cm_mono_ms ()) - x->started_ms;
}

const char *wrk_exec_output (wrk_exec_t *x, size_t *len)
{
    char marker[96] = "";
    if (wrk_exec_truncated (x))
        snprintf (marker, sizeof marker, "\n… [%zu bytes truncated] …\n",
                  x->total - x->head_len - x->ring_len);
    size_t mlen = strlen (marker);
    char *buf = realloc (x->joined, x->head_len + mlen + x->ring_len + 1);
    if (!buf) return NULL;
    x->joined = buf;
    size_t o = 0;
    memcpy (buf, x->head, x->head_len);
    o += x->head_len;
    memcpy (buf + o, marker, mlen);
    o += mlen;
    //  Until the ring wraps its bytes start at 0; after, at ring_pos.
    if (x->ring_len < x->tail_max) {
        memcpy (buf + o, x->ring, x->ring_len);
        o += x->ring_len;
    } else {
        memcpy (buf + o, x->ring + x->ring_pos, x->tail_max - x->ring_pos);
        o += x->tail_max - x->ring_pos;
        memcpy (buf + o, x->ring, x->ring_pos);
        o += x->ring_pos;
    }
    buf[o] = '\0';
    if (len) *len = o;
    return buf;
}

int wrk_exec_result (wrk_exec_t *x, wrk_tool_result_t *out)
{
    memset (out, 0, sizeof *out);
    if (!x->finished) return CM_E_INVALID;
    size_t len;
    const char *raw = wrk_exec_output (x, &len);
    if (!raw) return CM_E_NOMEM;
    size_t clean_len;
    char *clean = wrk_utf8_clean (raw, len, &clean_len);
    if (!clean) return CM_E_NOMEM;

    char status[160];
    int sig = wrk_exec_signal (x);
    if (x->timed_out)
        snprintf (status, sizeof status, "[timed out after %lld ms; killed]",
                  (long long)(x->deadline_ms - x->started_ms));
    else if (x->cancelled)
        snprintf (status, sizeof status, "[cancelled]");
    else if (x->status_lost)
        snprintf (status, sizeof status, "[exit status unknown]");
    else if (sig) {
        const char *abbrev = sigabbrev_np (sig);
        snprintf (status, sizeof status, "[killed by signal SIG%s]",
                  abbrev ? abbrev : "?");
    } else
        snprintf (status, sizeof status, "[exit code %d]", wrk_exec_exit_code (x));
    char trunc[160] = "";
    if (wrk_exec_truncated (x))
        snprintf (trunc, sizeof trunc,
                  "\n[output truncated: %zu bytes in all; showing the first %zu and the "
                  "last %zu]",
                  x->total, x->head_len, x->ring_len);

    const char *none = clean_len ? "" : "(no output)";
    bool nl = clean_len && clean[clean_len - 1] != '\n';
    char *text = NULL;
    int n = asprintf (&text, "%s%s%s%s%s", clean, none, nl || !clean_len ? "\n" : "",
                      status, trunc);
    free (clean);
    if (n < 0) return CM_E_NOMEM;
    out->content = text;
    out->is_error = wrk_exec_exit_code (x) != 0;
    return 0;
}

void wrk_exec_destroy (wrk_exec_t **xp)
{
    if (!xp || !*xp) return;
    wrk_exec_t *x = *xp;
    if (!x->finished && x->pid > 0) {
        s_group_kill (x, SIGKILL);
        int st;
        while (waitpid (x->pid, &st, 0) < 0 && errno == EINTR) {
        }
    }
    if (x->out_fd >= 0) close (x->out_fd);
    if (x->pidfd >= 0) close (x->pidfd);
    free (x->head);
    free (x->ring);
    free (x->joined);
    free (x);
    *xp = NULL;
}

//  --------------------------------------------------------------------------
//  Orphans

int wrk_exec_subreaper (void)
{
    return prctl (PR_SET_CHILD_SUBREAPER, 1) ? CM_E_IO : 0;
}

int wrk_exec_reap_orphans (const pid_t *keep, size_t nkeep)
{
    DIR *tasks = opendir ("/proc/self/task");
    if (!tasks) return CM_E_IO;
    int reaped = 0;
    struct dirent *de;
    while ((de = readdir (tasks))) {
        if (de->d_name[0] == '.') continue;
        char path[64];
        snprintf (path, sizeof path, "/proc/self/task/%.20s/children", de->d_name);
        FILE *f = fopen (path, "re");
        if (!f) continue; //  the thread ended
        long pid;
        while (fscanf (f, "%ld", &pid) == 1) {
            bool kept = false;
            for (size_t i = 0; i < nkeep && !kept; i++) kept = keep[i] == (pid_t)pid;
            int st;
            if (!kept && waitpid ((pid_t)pid, &st, WNOHANG) == (pid_t)pid) reaped++;
        }
        fclose (f);
    }
    closedir (tasks);
    return reaped;
}
