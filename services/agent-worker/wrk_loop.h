/*  wrk_loop.h - what the worker's epoll loop puts in epoll_data.ptr.

    Every fd the loop watches is registered with a pointer to a struct whose
    first member is a wrk_tag_t, so one epoll_wait serves ZeroMQ, libcurl's
    sockets, command pipes and pidfds, and the stop pipe alike.
*/
#ifndef WRK_LOOP_H
#define WRK_LOOP_H

typedef enum {
    WRK_TAG_STOP, //  cm_stop_fd
    WRK_TAG_ZMQ,  //  a dup of the session socket's ZMQ_FD
    WRK_TAG_HTTP, //  a libcurl socket (owned by wrk_http)
    WRK_TAG_EXEC, //  a command's output pipe or pidfd (owned by a turn)
} wrk_tag_kind_t;

typedef struct {
    wrk_tag_kind_t kind;
} wrk_tag_t;

#endif
