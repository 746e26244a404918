/*  it_store.c - run the real corral-store for integration tests
    (see it_store.h). */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cm_error.h"
#include "cm_time.h"
#include "it_store.h"

extern char **environ;

#define IT_MAX_DIRS 8
#define IT_MAX_ARGS 32
#define IT_MAX_ENV  512

//  The registry the exit handler walks (see it_store.h for why it exists).
static struct {
    it_store_t stores[IT_MAX_STORES];
    size_t nstores;
    char dirs[IT_MAX_DIRS][IT_DIR_MAX];
    size_t ndirs;
    pid_t capture_pid; //  a child of it_run_capture still running
    bool failed;
    bool hooked;
} s_reg;

/* ---------------------------------------------------------------- */

int64_t it_now_ms (void)
{
    return cm_mono_ms ();
}

uint64_t it_rand (uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static void sleep_ms (int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep (&ts, &ts) == -1 && errno == EINTR) {
    }
}

static void print_log_tail (const char *path)
{
    FILE *f = fopen (path, "r");
    if (!f) return;
    char buf[4096];
    fseek (f, 0, SEEK_END);
    long size = ftell (f);
    long from = size > (long)sizeof buf - 1 ? size - (long)sizeof buf + 1 : 0;
    fseek (f, from, SEEK_SET);
    size_t n = fread (buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    fclose (f);
    fprintf (stderr, "---- last %zu bytes of %s ----\n%s---- end of log ----\n", n, path,
             buf);
}

static int rm_entry (const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    if (remove (path) != 0)
        fprintf (stderr, "cannot remove %s: %s\n", path, strerror (errno));
    return 0;
}

static void reap (pid_t pid)
{
    kill (pid, SIGKILL);
    //  SIGKILL cannot be caught; the wait is bounded by the kernel, but
    //  stay bounded here too.
    for (int i = 0; i < 500; i++) {
        pid_t got = waitpid (pid, NULL, WNOHANG);
        if (got == pid || (got < 0 && errno == ECHILD)) return;
        sleep_ms (10);
    }
    fprintf (stderr, "child %d did not die after SIGKILL\n", (int)pid);
}

static void at_exit (void)
{
    for (size_t i = 0; i < s_reg.nstores; i++) {
        it_store_t *st = &s_reg.stores[i];
        if (st->pid > 0) {
            reap (st->pid);
            st->pid = 0;
        }
        if (s_reg.failed && st->starts > 0) print_log_tail (st->log_path);
    }
    if (s_reg.capture_pid > 0) reap (s_reg.capture_pid);
    for (size_t i = 0; i < s_reg.ndirs; i++)
        nftw (s_reg.dirs[i], rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    s_reg.ndirs = 0;
}

static void hook (void)
{
    if (s_reg.hooked) return;
    s_reg.hooked = true;
    atexit (at_exit);
}

void it_fail (const char *file, int line, const char *fmt, ...)
{
    va_list args;
    va_start (args, fmt);
    fprintf (stderr, "FAIL %s:%d: ", file, line);
    vfprintf (stderr, fmt, args);
    fprintf (stderr, "\n");
    va_end (args);
    s_reg.failed = true;
    exit (1);
}

void it_tmpdir (char *out, size_t outlen)
{
    hook ();
    IT_CHECK (s_reg.ndirs < IT_MAX_DIRS, "too many scratch dirs");
    //  ipc:// paths must fit in sockaddr_un, so a long TMPDIR is not used.
    const char *base = getenv ("TMPDIR");
    if (!base || !*base || strlen (base) > 48) base = "/tmp";
    char *dir = s_reg.dirs[s_reg.ndirs];
    snprintf (dir, IT_DIR_MAX, "%s/corral-it-XXXXXX", base);
    IT_CHECK (mkdtemp (dir), "mkdtemp %s: %s", dir, strerror (errno));
    s_reg.ndirs++;
    IT_CHECK (strlen (dir) < outlen, "scratch path too long");
    strcpy (out, dir);
}

it_store_t *it_store_new (const char *binary)
{
    hook ();
    IT_CHECK (s_reg.nstores < IT_MAX_STORES, "too many stores");
    IT_CHECK (binary && access (binary, X_OK) == 0,
              "corral-store binary '%s' not runnable", binary ? binary : "(null)");
    it_store_t *self = &s_reg.stores[s_reg.nstores++];
    memset (self, 0, sizeof *self);
    self->binary = binary;
    char dir[IT_DIR_MAX];
    it_tmpdir (dir, sizeof dir);
    memcpy (self->dir, dir, sizeof dir);
    snprintf (self->data_dir, sizeof self->data_dir, "%s/data", dir);
    snprintf (self->sock_path, sizeof self->sock_path, "%s/store.sock", dir);
    snprintf (self->endpoint, sizeof self->endpoint, "ipc://%s/store.sock", dir);
    snprintf (self->log_path, sizeof self->log_path, "%s/store.log", dir);
    return self;
}

//  The environment without CORRAL_* (so only our flags configure the
//  child).  Built before fork: only async-signal-safe calls may follow it.
static void child_env (const char **envp, size_t cap)
{
    size_t n = 0;
    for (char **e = environ; *e && n + 1 < cap; e++)
        if (strncmp (*e, "CORRAL_", 7) != 0) envp[n++] = *e;
    envp[n] = NULL;
}

//  fork + exec with stderr (and stdout) going to err_fd.  The child dies
//  with us (PDEATHSIG).
static pid_t spawn (const char *const *argv, int err_fd)
{
    static const char *envp[IT_MAX_ENV];
    child_env (envp, IT_MAX_ENV);
    pid_t parent = getpid ();
    fflush (NULL);
    pid_t pid = fork ();
    IT_CHECK (pid >= 0, "fork: %s", strerror (errno));
    if (pid == 0) {
        prctl (PR_SET_PDEATHSIG, SIGKILL);
        if (getppid () != parent) _exit (127);
        int null_fd = open ("/dev/null", O_RDWR);
        if (null_fd >= 0) dup2 (null_fd, 0);
        dup2 (err_fd, 1);
        dup2 (err_fd, 2);
        execve (argv[0], (char *const *)argv, (char *const *)envp);
        static const char msg[] = "it_store: execve failed\n";
        ssize_t ignored = write (2, msg, sizeof msg - 1);
        (void)ignored;
        _exit (127);
    }
    return pid;
}

void it_store_start (it_store_t *self, const char *const *extra_args)
{
    IT_CHECK (self->pid == 0, "store already running (pid %d)", (int)self->pid);
    //  A SIGKILLed store leaves its socket file; binding would replace it,
    //  but removing it lets it_store_connect wait for the new one.
    unlink (self->sock_path);
    const char *argv[IT_MAX_ARGS] = {self->binary, "--data-dir", self->data_dir,
                                     "--store-endpoint", self->endpoint};
    size_t n = 5;
    for (size_t i = 0; extra_args && extra_args[i]; i++) {
        IT_CHECK (n + 1 < IT_MAX_ARGS, "too many arguments");
        argv[n++] = extra_args[i];
    }
    argv[n] = NULL;
    int fd = open (self->log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    IT_CHECK (fd >= 0, "open %s: %s", self->log_path, strerror (errno));
    self->pid = spawn (argv, fd);
    self->starts++;
    close (fd);
}

static void check_alive (it_store_t *self)
{
    int status;
    pid_t got = waitpid (self->pid, &status, WNOHANG);
    if (got == self->pid) {
        self->pid = 0;
        IT_FAIL ("corral-store exited early (%s %d)",
                 WIFEXITED (status) ? "status" : "signal",
                 WIFEXITED (status) ? WEXITSTATUS (status) : WTERMSIG (status));
    }
}

proto_rpc_t *it_store_connect (it_store_t *self, int timeout_ms, char *epoch)
{
    int64_t deadline = it_now_ms () + timeout_ms;
    proto_msg_t reply;
    proto_msg_init (&reply);
    int last_rc = CM_E_TIMEOUT;
    while (it_now_ms () < deadline) {
        check_alive (self);
        if (access (self->sock_path, F_OK) != 0) { //  not bound yet
            sleep_ms (5);
            continue;
        }
        proto_rpc_t *rpc = proto_rpc_new (self->endpoint);
        IT_CHECK (rpc, "cannot make a client for %s", self->endpoint);
        int64_t left = deadline - it_now_ms ();
        last_rc = proto_rpc_call (rpc, PROTO_STORE_STATS, NULL, &reply,
                                  (int)(left < 1000 ? (left > 0 ? left : 1) : 1000));
        if (last_rc == 0) {
            IT_CHECK (reply.type == PROTO_STATS_REPLY, "stats answered with %s",
                      proto_type_name (reply.type));
            if (epoch) {
                const proto_store_stats_t *st = proto_body (&reply, store_stats);
                snprintf (epoch, CM_UUID_STR_LEN, "%s", st->epoch);
            }
            proto_msg_fini (&reply);
            return rpc;
        }
        proto_rpc_destroy (&rpc);
    }
    proto_msg_fini (&reply);
    IT_FAIL ("corral-store did not answer store.stats on %s within %d ms (last: %s)",
             self->endpoint, timeout_ms, cm_errname (last_rc));
}

void it_store_signal (it_store_t *self, int sig)
{
    IT_CHECK (self->pid > 0, "store not running");
    IT_CHECK (kill (self->pid, sig) == 0, "kill: %s", strerror (errno));
}

bool it_store_wait_exit (it_store_t *self, int timeout_ms, int *status)
{
    IT_CHECK (self->pid > 0, "store not running");
    int64_t deadline = it_now_ms () + timeout_ms;
    while (true) {
        pid_t got = waitpid (self->pid, status, WNOHANG);
        IT_CHECK (got >= 0, "waitpid: %s", strerror (errno));
        if (got == self->pid) {
            self->pid = 0;
            return true;
        }
        if (it_now_ms () >= deadline) return false;
        sleep_ms (2);
    }
}

void it_store_kill (it_store_t *self)
{
    it_store_signal (self, SIGKILL);
    int status;
    IT_CHECK (it_store_wait_exit (self, 5000, &status), "store survived SIGKILL");
    IT_CHECK (WIFSIGNALED (status) && WTERMSIG (status) == SIGKILL,
              "store ended otherwise than by SIGKILL (status 0x%x)", status);
}

int it_run_capture (const char *const *argv, int timeout_ms, char *err, size_t errcap)
{
    hook ();
    int fds[2];
    IT_CHECK (pipe2 (fds, O_CLOEXEC) == 0, "pipe: %s", strerror (errno));
    pid_t pid = spawn (argv, fds[1]);
    s_reg.capture_pid = pid;
    close (fds[1]);
    size_t len = 0;
    int64_t deadline = it_now_ms () + timeout_ms;
    while (true) {
        int64_t left = deadline - it_now_ms ();
        IT_CHECK (left > 0, "%s did not finish within %d ms", argv[0], timeout_ms);
        struct pollfd pfd = {fds[0], POLLIN, 0};
        int rc = poll (&pfd, 1, (int)left);
        if (rc < 0 && errno == EINTR) continue;
        IT_CHECK (rc >= 0, "poll: %s", strerror (errno));
        if (rc == 0) continue;
        char chunk[1024];
        ssize_t got = read (fds[0], chunk, sizeof chunk);
        if (got < 0 && errno == EINTR) continue;
        if (got <= 0) break; //  EOF: the child closed stderr (exited)
        size_t take = (size_t)got;
        if (len + take >= errcap) take = errcap - 1 - len;
        memcpy (err + len, chunk, take);
        len += take;
    }
    close (fds[0]);
    err[len] = '\0';
    int status = 0;
    while (true) {
        pid_t got = waitpid (pid, &status, WNOHANG);
        if (got == pid) break;
        IT_CHECK (got == 0, "waitpid: %s", strerror (errno));
        IT_CHECK (it_now_ms () < deadline, "%s did not exit within %d ms", argv[0],
                  timeout_ms);
        sleep_ms (2);
    }
    s_reg.capture_pid = 0;
    return status;
}

/* ---------------------------------------------------------------- */
/*  Self-identifying events                                          */

#define IT_EVENT_TS0 1700000000000LL

static void event_text (const cm_uuid_t *sid, uint64_t seq, char *text, size_t cap)
{
    char id[CM_UUID_STR_LEN];
    int n =
        snprintf (text, cap, "%s #%llu ", cm_uuid_fmt (sid, id), (unsigned long long)seq);
    uint64_t state = seq;
    for (int i = 0; i < 16; i++) state = state * 31 + sid->b[i];
    //  filler: letters derived from (sid, seq), to about 100 bytes in all
    for (size_t i = (size_t)n; i + 1 < cap && i < 64; i++)
        text[i] = (char)('a' + it_rand (&state) % 26);
    text[cap - 1 < 64 ? cap - 1 : 64] = '\0';
}

void it_event (proto_buf_t *buf, const cm_uuid_t *sid, uint64_t seq)
{
    char text[80];
    event_text (sid, seq, text, sizeof text);
    proto_ev_text_t ev = {
        .session = *sid, .seq = seq, .ts = IT_EVENT_TS0 + (int64_t)seq, .text = text};
    IT_OK (proto_encode (buf, PROTO_EV_AGENT_MESSAGE, seq, &ev));
}

const char *it_event_check (proto_msg_t *scratch, const void *data, size_t size,
                            const cm_uuid_t *sid, uint64_t seq)
{
    static char why[160];
    proto_buf_t want = {0};
    it_event (&want, sid, seq);
    bool same = want.size == size && memcmp (want.data, data, size) == 0;
    proto_buf_fini (&want);
    int rc = proto_decode (scratch, data, size);
    if (rc) {
        snprintf (why, sizeof why, "stored event does not decode: %s (%s)",
                  cm_errname (rc), proto_msg_error (scratch));
        return why;
    }
    const proto_ev_text_t *ev = proto_body (scratch, ev_text);
    if (scratch->type != PROTO_EV_AGENT_MESSAGE || !ev) {
        snprintf (why, sizeof why, "stored event is a %s",
                  proto_type_name (scratch->type));
        return why;
    }
    if (memcmp (ev->session.b, sid->b, 16) != 0) return "event of another session";
    if (ev->seq != seq) {
        snprintf (why, sizeof why, "event at position %llu carries seq %llu",
                  (unsigned long long)seq, (unsigned long long)ev->seq);
        return why;
    }
    if (!same) return "event bytes differ from what was sent for that seq";
    return NULL;
}
