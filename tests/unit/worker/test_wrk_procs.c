/*  test_wrk_procs.c - /proc snapshots, process trees and their memory,
    the orphan marker, and the memory limit's message, against real
    processes.
*/
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cm_error.h"
#include "cm_time.h"
#include "wrk_procs.h"

#define MIB (1024u * 1024u)

static void test_scan_finds_self (void **state)
{
    wrk_procs_t snap = {0};
    assert_int_equal (wrk_procs_scan (&snap, "/proc"), 0);
    assert_true (snap.count > 1);
    const wrk_proc_t *me = wrk_procs_find (&snap, getpid ());
    assert_non_null (me);
    assert_int_equal (me->ppid, getppid ());
    assert_int_equal (me->pgrp, getpgrp ());
    assert_true (me->rss_bytes > 0);
    assert_true (me->start_ticks > 0);
    assert_int_equal (wrk_procs_start_ticks ("/proc", getpid ()), me->start_ticks);
    assert_null (wrk_procs_find (&snap, -5));
    //  A second scan reuses the memory.
    assert_int_equal (wrk_procs_scan (&snap, "/proc"), 0);
    wrk_procs_fini (&snap);
    assert_int_equal (wrk_procs_scan (&snap, "/no/such/proc"), CM_E_IO);
    wrk_procs_fini (&snap);
}

//  A process group like run_command's: a leader that touches `mib` MiB,
//  and a grandchild that left the group with setsid.  Returns the leader
//  (= the group id); *stray gets the grandchild's pid.
static pid_t s_spawn_tree (unsigned mib, pid_t *stray)
{
    int p[2];
    assert_int_equal (pipe (p), 0);
    pid_t test = getpid ();
    pid_t pid = fork ();
    assert_true (pid >= 0);
    if (pid == 0) {
        //  Neither may outlive a failed test: ctest would wait on their
        //  inherited stdout until it times out.
        prctl (PR_SET_PDEATHSIG, SIGKILL);
        if (getppid () != test) _exit (1);
        setpgid (0, 0);
        pid_t leader = getpid ();
        pid_t g = fork ();
        if (g == 0) {
            prctl (PR_SET_PDEATHSIG, SIGKILL);
            if (getppid () != leader) _exit (1);
            setsid ();
            pause ();
            _exit (0);
        }
        //  Touch every page through a volatile pointer: an optimiser may
        //  drop a malloc + memset whose memory is never read.
        size_t len = (size_t)mib * MIB;
        volatile char *mem = malloc (len);
        for (size_t i = 0; mem && i < len; i += 4096) mem[i] = 1;
        if (write (p[1], &g, sizeof g) < 0) _exit (1);
        pause ();
        _exit (0);
    }
    close (p[1]);
    assert_int_equal (read (p[0], stray, sizeof *stray), (ssize_t)sizeof *stray);
    close (p[0]);
    //  The stray's setsid may lag behind the write: wait until it shows.
    for (int i = 0; i < 200; i++) {
        wrk_procs_t snap = {0};
        wrk_procs_scan (&snap, "/proc");
        const wrk_proc_t *g = wrk_procs_find (&snap, *stray);
        bool moved = g && g->pgrp == *stray;
        wrk_procs_fini (&snap);
        if (moved) break;
        usleep (5000);
    }
    return pid;
}

static void test_tree_rss_and_strays (void **state)
{
    pid_t stray = 0;
    pid_t leader = s_spawn_tree (64, &stray);
    wrk_procs_t snap = {0};
    assert_int_equal (wrk_procs_scan (&snap, "/proc"), 0);
    size_t n = 0;
    uint64_t rss = wrk_procs_tree_rss (&snap, leader, &n);
    assert_int_equal (n, 2); //  the leader and the stray that left its group
    assert_true (rss >= 64ull * MIB);
    assert_true (rss < 256ull * MIB);
    //  A group that does not exist has no tree.
    assert_int_equal (wrk_procs_tree_rss (&snap, 999999999, &n), 0);
    assert_int_equal (n, 0);
    //  The stray is killed by pid; the group is the owner's to kill.
    assert_int_equal (wrk_procs_tree_kill_strays (&snap, leader, SIGKILL), 1);
    wrk_procs_fini (&snap);
    kill (-leader, SIGKILL);
    int st;
    assert_int_equal (waitpid (leader, &st, 0), leader);
    //  The stray was the leader's child; it is init's (or a subreaper's)
    //  zombie now.  It must not be running.
    for (int i = 0; i < 200; i++) {
        wrk_procs_t again = {0};
        wrk_procs_scan (&again, "/proc");
        bool alive = wrk_procs_find (&again, stray) != NULL;
        wrk_procs_fini (&again);
        if (!alive || kill (stray, 0) != 0) break;
        char path[64], text[512] = "";
        snprintf (path, sizeof path, "/proc/%d/stat", (int)stray);
        FILE *f = fopen (path, "r");
        if (f) {
            if (!fgets (text, sizeof text, f)) text[0] = 0;
            fclose (f);
        }
        if (strstr (text, ") Z ")) break;
        usleep (5000);
    }
}

static void test_mark_value_and_parse (void **state)
{
    char mark[WRK_MARK_MAX];
    uint32_t scope = wrk_mark_scope ("tcp://127.0.0.1:7703");
    assert_int_not_equal (scope, wrk_mark_scope ("tcp://127.0.0.1:7713"));
    assert_int_equal (wrk_mark_scope (""), 2166136261u); //  FNV-1a's basis
    assert_int_equal (wrk_mark_value ("w 1", scope, mark, sizeof mark), 0);
    pid_t pid = 0;
    uint64_t start = 0;
    uint32_t got = 0;
    assert_int_equal (wrk_mark_parse (mark, &pid, &start, &got), 0);
    assert_int_equal (pid, getpid ());
    assert_int_equal (start, wrk_procs_start_ticks ("/proc", getpid ()));
    assert_int_equal (got, scope);
    assert_non_null (strstr (mark, ".w_1")); //  spaces in the id become '_'
    char tiny[8];
    assert_int_equal (wrk_mark_value ("worker", scope, tiny, sizeof tiny), CM_E_INVALID);
    assert_int_equal (strncmp (mark, "m1.", 3), 0);
    static const char *const bad[] = {"",
                                      "x",
                                      "m1.",
                                      "m1.12",
                                      "m1.12.x",
                                      "m1.7.5",
                                      "m1.7.5.",
                                      "m1.7.5.abc",
                                      "m1.7.5.0000000g.w",
                                      "m1.7.5.123456789.w",
                                      "m1.-3.4.0000000a.w",
                                      "m1.0.5.0000000a.w",
                                      "m1.7.0.0000000a.w",
                                      "m1.7.5x.0000000a",
                                      "7.5.0000000a.w", //  no format tag
                                      "m2.7.5.0000000a.w"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal (wrk_mark_parse (bad[i], &pid, &start, &got), CM_E_INVALID);
    assert_int_equal (wrk_mark_parse ("m1.7.5.deadBEEF", &pid, &start, &got), 0);
    assert_int_equal (pid, 7);
    assert_int_equal (start, 5);
    assert_int_equal (got, 0xdeadbeef);
    assert_int_equal (wrk_mark_parse ("m1.7.5.0000000a.any id", &pid, &start, &got), 0);
    assert_int_equal (got, 10);
}

static pid_t s_spawn_env (char *const envp[])
{
    pid_t pid = fork ();
    if (pid == 0) {
        char *argv[] = {"sleep", "30", NULL};
        execve ("/bin/sleep", argv, envp);
        _exit (127);
    }
    //  Wait for the exec (the environ of the forked copy is ours).
    char path[64], exe[256];
    snprintf (path, sizeof path, "/proc/%d/exe", (int)pid);
    for (int i = 0; i < 400; i++) {
        ssize_t n = readlink (path, exe, sizeof exe - 1);
        if (n > 0) {
            exe[n] = 0;
            if (strstr (exe, "sleep")) break;
        }
        usleep (5000);
    }
    return pid;
}

static void test_mark_read (void **state)
{
    char *marked[] = {"A=1", WRK_MARK_NAME "=123.456.0000abcd.w1", "B=2", NULL};
    char *plain[] = {"A=1", WRK_MARK_NAME "X=9", NULL};
    pid_t a = s_spawn_env (marked), b = s_spawn_env (plain);
    char out[WRK_MARK_MAX];
    assert_int_equal (wrk_mark_read ("/proc", a, out, sizeof out), 1);
    assert_string_equal (out, "123.456.0000abcd.w1");
    assert_int_equal (wrk_mark_read ("/proc", b, out, sizeof out), 0);
    assert_int_equal (wrk_mark_read ("/proc", 999999999, out, sizeof out), 0);
    kill (a, SIGKILL);
    kill (b, SIGKILL);
    int st;
    waitpid (a, &st, 0);
    waitpid (b, &st, 0);
}

static void test_mem_message (void **state)
{
    char msg[400];
    wrk_mem_message (msg, sizeof msg, 64ull * MIB, "python3 -c 'x'", 301ull * MIB + 1);
    assert_string_equal (
        msg, "memory limit 64 MiB exceeded by `python3 -c 'x'` (peak 301 MiB)");
    //  Control characters are masked; a long command is cut on a character
    //  boundary.
    wrk_mem_message (msg, sizeof msg, 1ull << 30, "a\nb", 2ull << 30);
    assert_string_equal (msg, "memory limit 1024 MiB exceeded by `a?b` (peak 2048 MiB)");
    char longcmd[400];
    memset (longcmd, 'x', sizeof longcmd);
    memcpy (longcmd + 150, "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9", 8);
    longcmd[sizeof longcmd - 1] = 0;
    wrk_mem_message (msg, sizeof msg, 64ull * MIB, longcmd, 65ull * MIB);
    assert_non_null (strstr (msg, "...` (peak 65 MiB)"));
    const char *tick = strchr (msg, '`');
    const char *dots = strstr (msg, "...`");
    assert_true (dots - tick - 1 <= 156);
    //  No broken sequence before the dots.
    assert_true (((unsigned char)dots[-1] & 0xC0) != 0xC0);
    wrk_mem_message (msg, sizeof msg, 64ull * MIB, NULL, 0);
    assert_string_equal (msg, "memory limit 64 MiB exceeded by `?` (peak 0 MiB)");
}

int main (void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test (test_scan_finds_self),
        cmocka_unit_test (test_tree_rss_and_strays),
        cmocka_unit_test (test_mark_value_and_parse),
        cmocka_unit_test (test_mark_read),
        cmocka_unit_test (test_mem_message),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
