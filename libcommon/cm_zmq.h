/*  cm_zmq.h - ZeroMQ sockets with the settings DESIGN §2 requires.

    Every socket made here gets:
      ROUTER: ZMQ_ROUTER_MANDATORY (unroutable sends fail with EHOSTUNREACH)
      DEALER: ZMQ_IMMEDIATE (queue only to completed connections)
      all:    a real ZMQ_LINGER (CM_ZMQ_LINGER_MS, not czmq's 0), explicit
              send/receive HWMs, TCP keepalive.
    The process uses libzmq directly with one context; czmq is linked only
    for CURVE later, and its signal handler is switched off by cm_zmq_ctx()
    so each service owns SIGTERM/SIGINT.  Sockets are never shared between
    threads.
*/
#ifndef CM_ZMQ_H
#define CM_ZMQ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <zmq.h>

#define CM_ZMQ_LINGER_MS 2000
#define CM_ZMQ_HWM       100000

//  The process-wide context (created on first use).  Also turns off czmq's
//  signal handler.
void *cm_zmq_ctx (void);
//  Close all sockets first, then terminate the context.
void cm_zmq_term (void);

//  New socket of a zmq type (ZMQ_ROUTER, ZMQ_DEALER, ZMQ_PUB, ZMQ_SUB ...)
//  with the settings above and `hwm` for both directions (0 = CM_ZMQ_HWM).
//  Returns NULL on failure (errno set).
void *cm_zmq_socket (int type, int hwm);

//  Bind or connect; on failure logs the endpoint and zmq's reason and
//  returns CM_E_IO.
int cm_zmq_bind (void *sock, const char *endpoint);
int cm_zmq_connect (void *sock, const char *endpoint);

//  Close with the configured linger.  Sets *sock to NULL.  Idempotent.
void cm_zmq_close (void **sock);
//  Close with another linger (ms, 0 = drop what is unsent): for a socket
//  whose unsent messages do not matter at exit, or are bounded by the
//  caller's own retry, so a stop never waits on an absent peer.
void cm_zmq_close_linger (void **sock, int linger_ms);

//  A message frame: a pointer and length; not owned.
typedef struct {
    const void *data;
    size_t size;
} cm_frame_t;

//  Send frames as one multipart message.  Returns 0, or CM_E_UNAVAILABLE
//  (EHOSTUNREACH: the peer is gone), CM_E_CAPACITY (EAGAIN with
//  ZMQ_DONTWAIT: HWM reached), or CM_E_IO.
int cm_zmq_sendv (void *sock, const cm_frame_t *frames, size_t count, int flags);

//  A request read from a ROUTER: a DEALER peer's arrives as
//  [identity][body], a REQ peer's as [identity][empty][body]; the reply
//  goes back in the same shape.  The frames belong to the request until
//  cm_zmq_request_close.
typedef struct {
    zmq_msg_t id;
    zmq_msg_t body;
    bool req_style; //  had the empty delimiter frame (REQ)
} cm_zmq_request_t;

//  Receive one request without blocking.  Returns 1 with req filled, 0
//  when nothing is queued, -1 when a message of another shape was read and
//  dropped (it cannot be answered; *frames, if not NULL, says how many it
//  had).
int cm_zmq_recv_request (void *router, cm_zmq_request_t *req, int *frames);
//  Send data back to the request's peer, in its shape, without blocking.
//  Returns cm_zmq_sendv's code (CM_E_UNAVAILABLE: the peer is gone).
int cm_zmq_send_reply (void *router, cm_zmq_request_t *req, const void *data,
                       size_t size);
//  Free the request's frames.
void cm_zmq_request_close (cm_zmq_request_t *req);

//  Receive one [topic][body] message from a SUB without blocking; a
//  message of another shape is read whole and its frames past the second
//  dropped.  Returns the number of frames it had (2 is the right shape),
//  or 0 when nothing is queued.  topic and body are always initialised:
//  close both.
int cm_zmq_recv_topic (void *sub, zmq_msg_t *topic, zmq_msg_t *body);

//  Watch a socket's completed ZMTP handshakes (a peer connected, or
//  connected again after a restart).  endpoint is an inproc name unique
//  in the process.  Returns the watch (a PAIR), or NULL (logged): then the
//  caller has no handshake signal.  Close it with cm_zmq_unwatch.
void *cm_zmq_watch_handshakes (void *sock, const char *endpoint);
//  Read every event queued on the watch; true when there was at least one
//  (a handshake happened since the last call).  NULL watch: false.
bool cm_zmq_handshakes (void *watch);
//  Stop watching sock and close *watch (nulled).  Idempotent.
void cm_zmq_unwatch (void *sock, void **watch);

//  Whether the socket is readable now (ZMQ_EVENTS has ZMQ_POLLIN).
bool cm_zmq_readable (void *sock);

#endif
