/*  test_cm_stop.c - signals become a flag and a readable fd. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cm_stop.h"
#include "cm_zmq.h"

static bool s_fd_readable (int fd, int timeout_ms)
{
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    return poll (&pfd, 1, timeout_ms) == 1 && (pfd.revents & POLLIN);
}

//  Runs first: nothing has happened yet.
static void test_initial_state (void **state)
{
    assert_false (cm_stop_requested ());
    assert_int_equal (cm_stop_signal (), 0);
    assert_int_equal (cm_stop_fd (), -1);
}

static void test_init (void **state)
{
    assert_int_equal (cm_stop_init (), 0);
    int fd = cm_stop_fd ();
    assert_true (fd >= 0);
    assert_true (fcntl (fd, F_GETFL) & O_NONBLOCK);
    assert_true (fcntl (fd, F_GETFD) & FD_CLOEXEC);
    assert_false (s_fd_readable (fd, 0));
    //  Calling it again keeps the same pipe.
    assert_int_equal (cm_stop_init (), 0);
    assert_int_equal (cm_stop_fd (), fd);

    struct sigaction sa;
    assert_int_equal (sigaction (SIGPIPE, NULL, &sa), 0);
    assert_true (sa.sa_handler == SIG_IGN);
    //  SIGPIPE ignored: raising it does not kill the process.
    raise (SIGPIPE);
}

static void test_sigterm (void **state)
{
    //  Creating the zmq context (which brings czmq) must not take the
    //  handlers over.
    assert_non_null (cm_zmq_ctx ());
    assert_false (cm_stop_requested ());
    assert_false (s_fd_readable (cm_stop_fd (), 0));
    assert_int_equal (raise (SIGTERM), 0);
    assert_true (cm_stop_requested ());
    assert_int_equal (cm_stop_signal (), SIGTERM);
    assert_true (s_fd_readable (cm_stop_fd (), 1000));
    cm_zmq_term ();
}

//  Run body in a child process; returns its exit code.
static int s_in_child (int (*body) (void))
{
    pid_t pid = fork ();
    assert_true (pid >= 0);
    if (pid == 0) _exit (body ());
    int status = 0;
    assert_int_equal (waitpid (pid, &status, 0), pid);
    assert_true (WIFEXITED (status));
    return WEXITSTATUS (status);
}

static int s_child_sigint (void)
{
    if (cm_stop_init ()) return 1;
    if (cm_stop_requested ()) return 2;
    if (kill (getpid (), SIGINT)) return 3;
    if (!cm_stop_requested () || cm_stop_signal () != SIGINT) return 4;
    if (!s_fd_readable (cm_stop_fd (), 1000)) return 5;
    return 0;
}

static int s_child_request (void)
{
    if (cm_stop_init ()) return 1;
    cm_stop_request ();
    if (!cm_stop_requested ()) return 2;
    if (cm_stop_signal () != 0) return 3; //  not caused by a signal
    if (!s_fd_readable (cm_stop_fd (), 1000)) return 4;
    return 0;
}

static int s_child_many_signals (void)
{
    //  Far more signals than the pipe holds bytes for: the handler must
    //  never block on the full pipe.
    if (cm_stop_init ()) return 1;
    for (int i = 0; i < 100000; i++)
        if (raise (SIGTERM)) return 2;
    char buf[256];
    if (read (cm_stop_fd (), buf, sizeof (buf)) <= 0) return 3;
    return 0;
}

static void test_in_children (void **state)
{
    assert_int_equal (s_in_child (s_child_sigint), 0);
    assert_int_equal (s_in_child (s_child_request), 0);
    assert_int_equal (s_in_child (s_child_many_signals), 0);
}

int main (void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test (test_initial_state),
        //  Before this process installs anything, so each child starts
        //  clean and makes its own pipe.
        cmocka_unit_test (test_in_children),
        cmocka_unit_test (test_init),
        cmocka_unit_test (test_sigterm),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
