/*  test_wrk_exec.c - run_command's child processes: output, exit status,
    environment, timeout, cancel of the whole group, orphans.

    The test process makes itself a child subreaper first, as the worker
    does, so group members orphaned by a kill come back to it and
    wrk_exec_reap_orphans can be checked.
*/
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cm_error.h"
#include "cm_time.h"
#include "wrk_exec.h"

static char s_base[256];
static char s_sub[300];
static wrk_scope_t s_scope;

static int s_rm (const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove (path);
}

static int s_group_setup (void **state)
{
    assert_int_equal (wrk_exec_subreaper (), 0);
    char tmpl[] = "/tmp/wrk-exec-XXXXXX";
    assert_non_null (mkdtemp (tmpl));
    assert_non_null (realpath (tmpl, s_base));
    snprintf (s_sub, sizeof s_sub, "%s/sub", s_base);
    assert_int_equal (mkdir (s_sub, 0755), 0);
    s_scope.roots[0] = s_base;
    s_scope.count = 1;
    s_scope.cwd = s_base;
    return 0;
}

static int s_group_teardown (void **state)
{
    nftw (s_base, s_rm, 16, FTW_DEPTH | FTW_PHYS);
    return 0;
}

//  Drive a command the way the worker's loop does, until it finishes or
//  max_ms passes.  Returns the elapsed milliseconds, or -1 on max_ms.
static int64_t s_loop (wrk_exec_t *x, int64_t max_ms)
{
    int64_t start = cm_mono_ms ();
    while (!wrk_exec_service (x, cm_mono_ms ())) {
        if (cm_mono_ms () - start > max_ms) return -1;
        int fds[2];
        struct pollfd p[2];
        nfds_t n = 0;
        wrk_exec_fds (x, fds);
        for (int i = 0; i < 2; i++)
            if (fds[i] >= 0) p[n++] = (struct pollfd){.fd = fds[i], .events = POLLIN};
        int64_t wait = wrk_exec_deadline (x) - cm_mono_ms ();
        if (wait > 50) wait = 50;
        if (wait < 0) wait = 0;
        poll (p, n, (int)wait);
    }
    return cm_mono_ms () - start;
}

static wrk_exec_t *s_start (const char *command, int64_t timeout_ms)
{
    wrk_exec_opts_t opts = {
        .scope = &s_scope, .command = command, .timeout_ms = timeout_ms};
    wrk_exec_t *x = NULL;
    char err[256];
    int rc = wrk_exec_start (&opts, &x, err, sizeof err);
    if (rc) fail_msg ("start %s: %d %s", command, rc, err);
    return x;
}

//  Run to the end and return the output (owned by x).
static const char *s_run (wrk_exec_t *x, size_t *len)
{
    assert_true (s_loop (x, 10000) >= 0);
    assert_true (wrk_exec_finished (x));
    const char *out = wrk_exec_output (x, len);
    assert_non_null (out);
    return out;
}

//  Wait until no process of group pgid is left (reaping orphans that come
//  back to us); true if that happened within max_ms.
static bool s_group_gone (pid_t pgid, int64_t max_ms, int *reaped)
{
    int64_t start = cm_mono_ms ();
    *reaped = 0;
    for (;;) {
        int n = wrk_exec_reap_orphans (NULL, 0);
        assert_true (n >= 0);
        *reaped += n;
        if (kill (-pgid, 0) < 0 && errno == ESRCH) return true;
        if (cm_mono_ms () - start > max_ms) return false;
        usleep (10000);
    }
}

//  Block until the shell has exited, without reaping it.
static void s_wait_exited (const wrk_exec_t *x)
{
    siginfo_t si;
    assert_int_equal (waitid (P_PID, (id_t)wrk_exec_pid (x), &si, WEXITED | WNOWAIT), 0);
}

static void test_output_and_exit_code (void **state)
{
    wrk_exec_t *x = s_start ("echo hello; echo oops >&2; exit 3", 0);
    assert_true (wrk_exec_pid (x) > 0);
    int fds[2];
    assert_true (wrk_exec_fds (x, fds) >= 1);
    assert_true (fds[0] >= 0);
    if (fds[1] >= 0) //  without a pidfd (valgrind) the loop polls instead
        assert_true (wrk_exec_deadline (x) > cm_mono_ms () + 100000);
    else
        assert_true (wrk_exec_deadline (x) <= cm_mono_ms () + WRK_EXEC_POLL_MS);
    size_t len;
    const char *out = s_run (x, &len);
    assert_string_equal (out, "hello\noops\n");
    assert_int_equal (len, 11);
    assert_int_equal (wrk_exec_exit_code (x), 3);
    assert_int_equal (wrk_exec_signal (x), 0);
    assert_false (wrk_exec_timed_out (x));
    assert_false (wrk_exec_truncated (x));
    assert_int_equal (wrk_exec_fds (x, fds), 0);
    assert_int_equal (fds[0], -1);
    assert_int_equal (wrk_exec_deadline (x), INT64_MAX);
    wrk_tool_result_t r;
    assert_int_equal (wrk_exec_result (x, &r), 0);
    assert_true (r.is_error);
    assert_string_equal (r.content, "hello\noops\n[exit code 3]");
    wrk_tool_result_free (&r);
    wrk_exec_destroy (&x);
    assert_null (x);
    wrk_exec_destroy (&x);

    x = s_start ("printf 'no newline'", 0);
    s_run (x, NULL);
    assert_int_equal (wrk_exec_result (x, &r), 0);
    assert_false (r.is_error);
    assert_string_equal (r.content, "no newline\n[exit code 0]");
    wrk_tool_result_free (&r);
    wrk_exec_destroy (&x);

    //  stdin is /dev/null: cat ends at once.
    x = s_start ("cat", 0);
    s_run (x, &len);
    assert_int_equal (len, 0);
    assert_int_equal (wrk_exec_result (x, &r), 0);
    assert_string_equal (r.content, "(no output)\n[exit code 0]");
    wrk_tool_result_free (&r);
    wrk_exec_destroy (&x);

    x = s_start ("kill -9 $$", 0);
    s_run (x, NULL);
    assert_int_equal (wrk_exec_exit_code (x), -1);
    assert_int_equal (wrk_exec_signal (x), SIGKILL);
    assert_int_equal (wrk_exec_result (x, &r), 0);
    assert_true (r.is_error);
    assert_string_equal (r.content, "(no output)\n[killed by signal SIGKILL]");
    wrk_tool_result_free (&r);
    wrk_exec_destroy (&x);
}

static void test_cwd_is_scope_cwd (void **state)
{
    s_scope.cwd = s_sub;
    wrk_exec_t *x = s_start ("pwd", 0);
    s_scope.cwd = s_base;
    const char *out = s_run (x, NULL);
    char expect[PATH_MAX + 2];
    snprintf (expect, sizeof expect, "%s\n", s_sub);
    assert_string_equal (out, expect);
    wrk_exec_destroy (&x);

    //  A cwd outside the roots is refused before anything runs.
    wrk_scope_t bad = s_scope;
    bad.cwd = "/";
    wrk_exec_opts_t opts = {.scope = &bad, .command = "pwd"};
    char err[256];
    assert_int_equal (wrk_exec_start (&opts, &x, err, sizeof err), CM_E_FORBIDDEN);
    assert_null (x);
}

static void test_start_errors (void **state)
{
    wrk_exec_t *x = (wrk_exec_t *)1;
    char err[256];
    wrk_exec_opts_t opts = {.scope = &s_scope, .command = ""};
    assert_int_equal (wrk_exec_start (&opts, &x, err, sizeof err), CM_E_INVALID);
    assert_null (x);
    opts.command = NULL;
    assert_int_equal (wrk_exec_start (&opts, &x, err, sizeof err), CM_E_INVALID);
    opts.command = "true";
    opts.head_max = WRK_EXEC_KEEP_MAX + 1;
    assert_int_equal (wrk_exec_start (&opts, &x, err, sizeof err), CM_E_INVALID);
    opts.head_max = 0;
    opts.timeout_ms = -1;
    assert_int_equal (wrk_exec_start (&opts, &x, err, sizeof err), CM_E_INVALID);
    assert_int_equal (wrk_exec_start (NULL, &x, err, sizeof err), CM_E_INVALID);
    //  A timeout above the maximum is clamped.
    opts.timeout_ms = WRK_EXEC_TIMEOUT_MAX_MS * 10;
    int64_t before = cm_mono_ms ();
    assert_int_equal (wrk_exec_start (&opts, &x, err, sizeof err), 0);
    int fds[2];
    if (wrk_exec_fds (x, fds) == 2) {
        assert_true (wrk_exec_deadline (x) <= cm_mono_ms () + WRK_EXEC_TIMEOUT_MAX_MS);
        assert_true (wrk_exec_deadline (x) >= before + WRK_EXEC_TIMEOUT_MAX_MS);
    }
    s_run (x, NULL);
    wrk_exec_destroy (&x);
}

static void test_env_scrubbed (void **state)
{
    setenv ("OPENAI_API_KEY", "sk-test-should-never-leak", 1);
    setenv ("CORRAL_X", "corral-internal", 1);
    setenv ("MY_SERVICE_TOKEN", "tok-should-never-leak", 1);
    setenv ("AWS_ACCESS_KEY_ID", "AKIA-should-never-leak", 1);
    setenv ("RANDOM_SETTING", "not-on-the-allowlist", 1);
    setenv ("HOME", "/home/agent", 1);
    wrk_exec_t *x = s_start ("env", 0);
    const char *out = s_run (x, NULL);
    assert_null (strstr (out, "should-never-leak"));
    assert_null (strstr (out, "OPENAI_API_KEY"));
    assert_null (strstr (out, "CORRAL_"));
    assert_null (strstr (out, "AWS_"));
    assert_null (strstr (out, "RANDOM_SETTING"));
    assert_non_null (strstr (out, "TERM=dumb\n"));
    assert_non_null (strstr (out, "HOME=/home/agent\n"));
    assert_non_null (strstr (out, "PATH="));
    assert_non_null (strstr (out, "GIT_TERMINAL_PROMPT=0\n"));
    wrk_exec_destroy (&x);
    unsetenv ("OPENAI_API_KEY");
    unsetenv ("CORRAL_X");
    unsetenv ("MY_SERVICE_TOKEN");
    unsetenv ("AWS_ACCESS_KEY_ID");
    unsetenv ("RANDOM_SETTING");
}

static void test_env_builder (void **state)
{
    char *parent[] = {"PATH=/opt/bin:/usr/bin",
                      "HOME=/home/a",
                      "TERM=xterm-256color",
                      "ANTHROPIC_API_KEY=sk-ant-x",
                      "LC_ALL=C",
                      "GITHUB_TOKEN=ghp_x",
                      "EDITOR=vim",
                      NULL};
    const char *extra[] = {"CI=1", "PATH=/custom", NULL};
    char **env = NULL;
    assert_int_equal (wrk_exec_env_new (parent, extra, &env), 0);
    const char *expect[] = {
        "PATH=/custom",  "HOME=/home/a",          "LC_ALL=C", "TERM=dumb", "PAGER=cat",
        "GIT_PAGER=cat", "GIT_TERMINAL_PROMPT=0", "CI=1",     NULL};
    size_t n = 0;
    for (; env[n]; n++) {
        assert_non_null (expect[n]);
        assert_string_equal (env[n], expect[n]);
    }
    assert_null (expect[n]);
    wrk_exec_env_destroy (&env);
    assert_null (env);
    wrk_exec_env_destroy (&env);

    //  Defaults with an empty parent.
    assert_int_equal (wrk_exec_env_new (NULL, NULL, &env), 0);
    assert_string_equal (env[0], "PATH=" WRK_EXEC_DEFAULT_PATH);
    assert_string_equal (env[1], "LANG=C.UTF-8");
    wrk_exec_env_destroy (&env);

    const char *denied[] = {"OPENAI_API_KEY=x", NULL};
    assert_int_equal (wrk_exec_env_new (NULL, denied, &env), CM_E_FORBIDDEN);
    assert_null (env);
    const char *bad[][2] = {
        {"NOEQUALS", NULL}, {"=x", NULL}, {"1A=x", NULL}, {"A-B=x", NULL}};
    for (size_t i = 0; i < 4; i++)
        assert_int_equal (wrk_exec_env_new (NULL, bad[i], &env), CM_E_INVALID);

    const char *no[] = {"OPENAI_API_KEY",
                        "anthropic_api_key",
                        "GH_TOKEN",
                        "MY_TOKEN",
                        "DB_PASSWORD",
                        "CLIENT_SECRET",
                        "CORRAL_STORE_PATH",
                        "AWS_REGION",
                        "SSH_PRIVATE_KEY",
                        "STRIPE_KEY",
                        "GOOGLE_APPLICATION_CREDENTIALS",
                        "HF_HOME",
                        NULL};
    for (size_t i = 0; no[i]; i++)
        if (!wrk_exec_env_denied (no[i])) fail_msg ("%s should be denied", no[i]);
    const char *yes[] = {"PATH", "HOME", "LANG",     "LC_ALL",
                         "TERM", "CI",   "KEYBOARD", NULL};
    for (size_t i = 0; yes[i]; i++)
        if (wrk_exec_env_denied (yes[i])) fail_msg ("%s should be allowed", yes[i]);
}

static void test_fds_closed_in_child (void **state)
{
    //  A descriptor the worker forgot to mark close-on-exec.
    int fd = open ("/dev/null", O_RDONLY);
    assert_true (fd >= 0);
    assert_true (dup2 (fd, 42) == 42);
    close (fd);
    wrk_exec_t *x = s_start ("exec ls /proc/self/fd", 0);
    const char *out = s_run (x, NULL);
    //  0-2, and 3: the directory ls is reading.  Not 42.
    assert_string_equal (out, "0\n1\n2\n3\n");
    wrk_exec_destroy (&x);
    close (42);
}

static void test_timeout_kills (void **state)
{
    wrk_exec_t *x = s_start ("sleep 30", 300);
    int64_t took = s_loop (x, 5000);
    assert_true (took >= 0);
    assert_true (took < 1000);
    assert_true (wrk_exec_elapsed_ms (x) >= 300);
    assert_true (wrk_exec_timed_out (x));
    assert_int_equal (wrk_exec_signal (x), SIGTERM);
    wrk_tool_result_t r;
    assert_int_equal (wrk_exec_result (x, &r), 0);
    assert_true (r.is_error);
    assert_string_equal (r.content, "(no output)\n[timed out after 300 ms; killed]");
    wrk_tool_result_free (&r);
    pid_t pgid = wrk_exec_pid (x);
    wrk_exec_destroy (&x);
    int reaped;
    assert_true (s_group_gone (pgid, 1000, &reaped));

    //  A command that ignores SIGTERM gets SIGKILL after the grace period.
    wrk_exec_opts_t opts = {.scope = &s_scope,
                            .command = "trap '' TERM; echo armed; sleep 30",
                            .timeout_ms = 200,
                            .grace_ms = 200};
    char err[256];
    assert_int_equal (wrk_exec_start (&opts, &x, err, sizeof err), 0);
    took = s_loop (x, 5000);
    assert_true (took >= 0 && took < 1500);
    assert_true (wrk_exec_elapsed_ms (x) >= 400);
    assert_int_equal (wrk_exec_signal (x), SIGKILL);
    assert_true (wrk_exec_timed_out (x));
    size_t len;
    assert_string_equal (wrk_exec_output (x, &len), "armed\n");
    pgid = wrk_exec_pid (x);
    wrk_exec_destroy (&x);
    assert_true (s_group_gone (pgid, 1000, &reaped));
}

static void test_cancel_kills_group (void **state)
{
    wrk_exec_t *x = s_start ("sleep 30 & sleep 30 & echo started; wait", 0);
    pid_t pgid = wrk_exec_pid (x);
    //  Wait for the jobs to exist.
    int64_t start = cm_mono_ms ();
    size_t len = 0;
    while (len == 0 && cm_mono_ms () - start < 2000) {
        wrk_exec_service (x, cm_mono_ms ());
        wrk_exec_output (x, &len);
        usleep (5000);
    }
    assert_string_equal (wrk_exec_output (x, &len), "started\n");
    wrk_exec_cancel (x);
    int64_t took = s_loop (x, 2000);
    assert_true (took >= 0 && took < 1000);
    assert_true (wrk_exec_cancelled (x));
    assert_int_equal (wrk_exec_signal (x), SIGKILL);
    wrk_tool_result_t r;
    assert_int_equal (wrk_exec_result (x, &r), 0);
    assert_string_equal (r.content, "started\n[cancelled]");
    wrk_tool_result_free (&r);
    wrk_exec_destroy (&x);
    //  Both sleeps were in the group; they die and come back to us.
    int reaped;
    assert_true (s_group_gone (pgid, 1000, &reaped));
    assert_int_equal (reaped, 2);
}

static void test_background_jobs_end_with_command (void **state)
{
    wrk_exec_t *x = s_start ("sleep 30 & echo done", 0);
    pid_t pgid = wrk_exec_pid (x);
    int64_t took = s_loop (x, 5000);
    assert_true (took >= 0 && took < 1000);
    size_t len;
    assert_string_equal (wrk_exec_output (x, &len), "done\n");
    assert_int_equal (wrk_exec_exit_code (x), 0);
    wrk_exec_destroy (&x);
    int reaped;
    assert_true (s_group_gone (pgid, 1000, &reaped));
    assert_int_equal (reaped, 1);
}

static void test_output_cap (void **state)
{
    wrk_exec_opts_t opts = {
        .scope = &s_scope, .command = "seq 1 100000", .head_max = 1024, .tail_max = 1000};
    wrk_exec_t *x = NULL;
    char err[256];
    assert_int_equal (wrk_exec_start (&opts, &x, err, sizeof err), 0);
    size_t len;
    const char *out = s_run (x, &len);
    //  seq 1 100000 writes 588895 bytes.
    assert_int_equal (wrk_exec_output_total (x), 588895);
    assert_true (wrk_exec_truncated (x));
    assert_true (strncmp (out, "1\n2\n3\n", 6) == 0);
    assert_string_equal (out + len - 13, "99999\n100000\n");
    char marker[96];
    snprintf (marker, sizeof marker, "\n… [%d bytes truncated] …\n",
              588895 - 1024 - 1000);
    assert_non_null (strstr (out, marker));
    assert_int_equal (len, 1024 + strlen (marker) + 1000);
    wrk_tool_result_t r;
    assert_int_equal (wrk_exec_result (x, &r), 0);
    assert_non_null (strstr (r.content,
                             "[exit code 0]\n[output truncated: 588895 bytes in all; "
                             "showing the first 1024 and the last 1000]"));
    wrk_tool_result_free (&r);
    wrk_exec_destroy (&x);

    //  Exactly head + tail is not truncated; more output than one read
    //  slice is all counted.
    opts.command = "head -c 2024 /dev/zero | tr '\\0' a";
    assert_int_equal (wrk_exec_start (&opts, &x, err, sizeof err), 0);
    out = s_run (x, &len);
    assert_false (wrk_exec_truncated (x));
    assert_int_equal (len, 2024);
    wrk_exec_destroy (&x);
    opts.command = "head -c 3000000 /dev/zero";
    assert_int_equal (wrk_exec_start (&opts, &x, err, sizeof err), 0);
    s_run (x, &len);
    assert_int_equal (wrk_exec_output_total (x), 3000000);
    wrk_exec_destroy (&x);

    //  Binary output becomes valid UTF-8 for the model.
    x = s_start ("printf 'a\\000b\\377'", 0);
    s_run (x, &len);
    assert_int_equal (len, 4);
    assert_int_equal (wrk_exec_result (x, &r), 0);
    assert_string_equal (r.content, "a\xEF\xBF\xBD"
                                    "b\xEF\xBF\xBD\n[exit code 0]");
    wrk_tool_result_free (&r);
    wrk_exec_destroy (&x);
}

static void test_reap_orphans_keeps_live_children (void **state)
{
    //  The shell has exited (its pidfd is readable) but is not reaped yet.
    wrk_exec_t *x = s_start ("exit 3", 0);
    s_wait_exited (x);
    int fds[2];
    if (wrk_exec_fds (x, fds) == 2) {
        struct pollfd p = {.fd = fds[1], .events = POLLIN};
        assert_int_equal (poll (&p, 1, 0), 1); //  the pidfd says so too
    }
    pid_t keep = wrk_exec_pid (x);
    assert_int_equal (wrk_exec_reap_orphans (&keep, 1), 0);
    s_run (x, NULL);
    assert_int_equal (wrk_exec_exit_code (x), 3);
    wrk_exec_destroy (&x);

    //  Without keep the status is taken, and the result says so.
    x = s_start ("exit 4", 0);
    s_wait_exited (x);
    assert_int_equal (wrk_exec_reap_orphans (NULL, 0), 1);
    s_run (x, NULL);
    assert_int_equal (wrk_exec_exit_code (x), -1);
    wrk_tool_result_t r;
    assert_int_equal (wrk_exec_result (x, &r), 0);
    assert_string_equal (r.content, "(no output)\n[exit status unknown]");
    wrk_tool_result_free (&r);
    wrk_exec_destroy (&x);
}

static void test_destroy_running (void **state)
{
    wrk_exec_t *x = s_start ("exec sleep 30", 0);
    pid_t pid = wrk_exec_pid (x);
    wrk_tool_result_t r;
    assert_int_equal (wrk_exec_result (x, &r), CM_E_INVALID);
    int64_t start = cm_mono_ms ();
    wrk_exec_destroy (&x);
    assert_true (cm_mono_ms () - start < 1000);
    assert_int_equal (kill (pid, 0), -1);
    assert_int_equal (errno, ESRCH);
}

static void test_pdeathsig (void **state)
{
    //  A helper process starts a command and dies without cleaning up:
    //  PR_SET_PDEATHSIG kills the shell.
    int pfd[2];
    assert_int_equal (pipe (pfd), 0);
    pid_t helper = fork ();
    assert_true (helper >= 0);
    if (helper == 0) {
        close (pfd[0]);
        wrk_exec_opts_t opts = {.scope = &s_scope, .command = "exec sleep 30"};
        wrk_exec_t *x = NULL;
        char err[256];
        if (wrk_exec_start (&opts, &x, err, sizeof err)) _exit (1);
        pid_t pid = wrk_exec_pid (x);
        if (write (pfd[1], &pid, sizeof pid) != sizeof pid) _exit (1);
        _exit (0);
    }
    close (pfd[1]);
    pid_t pid = 0;
    assert_int_equal (read (pfd[0], &pid, sizeof pid), sizeof pid);
    close (pfd[0]);
    int st; //  its status says nothing more (under valgrind: the leak it left)
    assert_int_equal (waitpid (helper, &st, 0), helper);
    int reaped;
    assert_true (s_group_gone (pid, 1000, &reaped));
    assert_int_equal (reaped, 1);
}

int main (void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test (test_output_and_exit_code),
        cmocka_unit_test (test_cwd_is_scope_cwd),
        cmocka_unit_test (test_start_errors),
        cmocka_unit_test (test_env_scrubbed),
        cmocka_unit_test (test_env_builder),
        cmocka_unit_test (test_fds_closed_in_child),
        cmocka_unit_test (test_timeout_kills),
        cmocka_unit_test (test_cancel_kills_group),
        cmocka_unit_test (test_background_jobs_end_with_command),
        cmocka_unit_test (test_output_cap),
        cmocka_unit_test (test_reap_orphans_keeps_live_children),
        cmocka_unit_test (test_destroy_running),
        cmocka_unit_test (test_pdeathsig),
    };
    return cmocka_run_group_tests (tests, s_group_setup, s_group_teardown);
}
