/*  cm_stop.h - graceful stop on SIGTERM/SIGINT.

    cm_stop_init() installs handlers that set a flag and write one byte to a
    self-pipe.  A service loop polls cm_stop_fd() next to its sockets (zmq_poll
    accepts raw fds) and drains, then exits, when cm_stop_requested() is
    true.  SIGPIPE is ignored (writes to a closed socket return EPIPE).
*/
#ifndef CM_STOP_H
#define CM_STOP_H

#include <stdbool.h>

//  Install the handlers; returns 0 or CM_E_IO.  Call before creating threads
//  (including the zmq context).
int cm_stop_init (void);
//  Read end of the self-pipe (non-blocking); readable once a stop arrived.
int cm_stop_fd (void);
//  True once SIGTERM or SIGINT arrived (or cm_stop_request was called).
bool cm_stop_requested (void);
//  Ask for a stop from inside the process (tests, fatal errors).
void cm_stop_request (void);
//  Signal number that caused the stop, 0 if none.
int cm_stop_signal (void);

#endif
