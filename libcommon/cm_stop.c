/*  cm_stop.c - SIGTERM/SIGINT turn into a flag and a readable fd.

    The handler only touches a sig_atomic_t and write(2)s to a non-blocking
    pipe, both async-signal-safe; a full pipe (a storm of signals nobody
    drained) just drops the extra bytes, the fd is readable either way.
*/
#include "cm_stop.h"
#include "cm_error.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

static volatile sig_atomic_t s_stop = 0;
static volatile sig_atomic_t s_signal = 0;
//  Set before the handlers are installed and never changed afterwards.
static int s_pipe[2] = {-1, -1};

static void s_wake (void)
{
    if (s_pipe[1] >= 0) {
        ssize_t rc = write (s_pipe[1], "s", 1);
        (void)rc; //  EAGAIN: a wake-up byte is already waiting
    }
}

static void s_handler (int sig)
{
    int saved = errno;
    s_signal = sig;
    s_stop = 1;
    s_wake ();
    errno = saved;
}

int cm_stop_init (void)
{
    if (s_pipe[0] < 0 && pipe2 (s_pipe, O_NONBLOCK | O_CLOEXEC) != 0) return CM_E_IO;

    struct sigaction sa;
    memset (&sa, 0, sizeof (sa));
    sa.sa_handler = s_handler;
    //  Block the other stop signal while one is handled.  No SA_RESTART:
    //  a blocking call returns EINTR so its caller can notice the stop.
    sigemptyset (&sa.sa_mask);
    sigaddset (&sa.sa_mask, SIGTERM);
    sigaddset (&sa.sa_mask, SIGINT);
    if (sigaction (SIGTERM, &sa, NULL) != 0) return CM_E_IO;
    if (sigaction (SIGINT, &sa, NULL) != 0) return CM_E_IO;

    struct sigaction ign;
    memset (&ign, 0, sizeof (ign));
    ign.sa_handler = SIG_IGN;
    sigemptyset (&ign.sa_mask);
    if (sigaction (SIGPIPE, &ign, NULL) != 0) return CM_E_IO;
    return 0;
}

int cm_stop_fd (void)
{
    return s_pipe[0];
}

bool cm_stop_requested (void)
{
    return s_stop != 0;
}

void cm_stop_request (void)
{
    s_stop = 1;
    s_wake ();
}

int cm_stop_signal (void)
{
    return s_signal;
}
