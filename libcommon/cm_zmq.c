/*  cm_zmq.c - the process's one ZeroMQ context and sockets with the
    settings cm_zmq.h lists.

    Options are set right after zmq_socket, before bind or connect, since
    some (HWMs, IMMEDIATE) only apply to connections made afterwards.
*/
#include "cm_zmq.h"
#include "cm_error.h"
#include "cm_log.h"

#include <czmq.h>
#include <errno.h>
#include <stdlib.h>
#include <zmq.h>

static void *s_ctx = NULL;

void *cm_zmq_ctx (void)
{
    if (s_ctx) return s_ctx;
    //  czmq installs SIGINT/SIGTERM handlers on its first use unless told
    //  not to; the services own those signals (cm_stop).  Both switches:
    //  the variable covers czmq code paths that consult it, the call
    //  disables czmq's handling outright without touching ours.
    setenv ("ZSYS_SIGHANDLER", "false", 0);
    zsys_handler_set (NULL);
    s_ctx = zmq_ctx_new ();
    return s_ctx;
}

void cm_zmq_term (void)
{
    if (!s_ctx) return;
    //  zmq_ctx_term blocks until every socket is closed and its linger has
    //  run out; a signal (SIGTERM during shutdown) interrupts it with EINTR.
    while (zmq_ctx_term (s_ctx) == -1 && errno == EINTR) {
    }
    s_ctx = NULL;
}

static int s_setint (void *sock, int option, int value)
{
    return zmq_setsockopt (sock, option, &value, sizeof (value));
}

void *cm_zmq_socket (int type, int hwm)
{
    if (hwm < 0) {
        errno = EINVAL;
        return NULL;
    }
    if (hwm == 0) hwm = CM_ZMQ_HWM;
    void *ctx = cm_zmq_ctx ();
    if (!ctx) return NULL;
    void *sock = zmq_socket (ctx, type);
    if (!sock) return NULL;

    int rc = 0;
    if (rc == 0) rc = s_setint (sock, ZMQ_LINGER, CM_ZMQ_LINGER_MS);
    if (rc == 0) rc = s_setint (sock, ZMQ_SNDHWM, hwm);
    if (rc == 0) rc = s_setint (sock, ZMQ_RCVHWM, hwm);
    if (rc == 0) rc = s_setint (sock, ZMQ_TCP_KEEPALIVE, 1);
    //  An unroutable reply must fail loudly instead of vanishing.
    if (rc == 0 && type == ZMQ_ROUTER) rc = s_setint (sock, ZMQ_ROUTER_MANDATORY, 1);
    //  Without IMMEDIATE a DEALER queues messages for peers that have not
    //  connected (yet, or ever), hiding a dead service behind a full queue.
    if (rc == 0 && type == ZMQ_DEALER) rc = s_setint (sock, ZMQ_IMMEDIATE, 1);
    if (rc != 0) {
        int saved = errno;
        zmq_close (sock);
        errno = saved;
        return NULL;
    }
    return sock;
}

int cm_zmq_bind (void *sock, const char *endpoint)
{
    if (zmq_bind (sock, endpoint) == 0) return 0;
    cm_error ("cannot bind %s: %s", endpoint ? endpoint : "(null)", zmq_strerror (errno));
    return CM_E_IO;
}

int cm_zmq_connect (void *sock, const char *endpoint)
{
    if (zmq_connect (sock, endpoint) == 0) return 0;
    cm_error ("cannot connect to %s: %s", endpoint ? endpoint : "(null)",
              zmq_strerror (errno));
    return CM_E_IO;
}

void cm_zmq_close (void **sock)
{
    if (!sock || !*sock) return;
    zmq_close (*sock); //  ZMQ_LINGER was set when the socket was made
    *sock = NULL;
}

void cm_zmq_close_linger (void **sock, int linger_ms)
{
    if (!sock || !*sock) return;
    if (linger_ms < 0) linger_ms = 0;
    zmq_setsockopt (*sock, ZMQ_LINGER, &linger_ms, sizeof linger_ms);
    cm_zmq_close (sock);
}

int cm_zmq_recv_request (void *router, cm_zmq_request_t *req, int *frames)
{
    zmq_msg_t f[3];
    int count = 0, more = 1;
    while (more) {
        zmq_msg_t part;
        zmq_msg_init (&part);
        //  EAGAIN only on the first frame: the rest of a message has come.
        if (zmq_msg_recv (&part, router, count == 0 ? ZMQ_DONTWAIT : 0) < 0) {
            zmq_msg_close (&part);
            for (int i = 0; i < count && i < 3; i++) zmq_msg_close (&f[i]);
            return 0;
        }
        more = zmq_msg_more (&part);
        if (count < 3)
            f[count] = part;
        else
            zmq_msg_close (&part);
        count++;
    }
    if (frames) *frames = count;
    if (count == 2 || (count == 3 && zmq_msg_size (&f[1]) == 0)) {
        req->id = f[0];
        req->body = f[count - 1];
        req->req_style = count == 3;
        if (count == 3) zmq_msg_close (&f[1]);
        return 1;
    }
    for (int i = 0; i < count && i < 3; i++) zmq_msg_close (&f[i]);
    return -1;
}

int cm_zmq_send_reply (void *router, cm_zmq_request_t *req, const void *data, size_t size)
{
    cm_frame_t frames[3] = {{zmq_msg_data (&req->id), zmq_msg_size (&req->id)}};
    size_t n = 1;
    if (req->req_style) frames[n++] = (cm_frame_t){"", 0};
    frames[n++] = (cm_frame_t){data, size};
    return cm_zmq_sendv (router, frames, n, ZMQ_DONTWAIT);
}

void cm_zmq_request_close (cm_zmq_request_t *req)
{
    zmq_msg_close (&req->id);
    zmq_msg_close (&req->body);
}

int cm_zmq_recv_topic (void *sub, zmq_msg_t *topic, zmq_msg_t *body)
{
    zmq_msg_init (topic);
    zmq_msg_init (body);
    if (zmq_msg_recv (topic, sub, ZMQ_DONTWAIT) < 0) return 0;
    int frames = 1;
    bool more = zmq_msg_more (topic);
    while (more) { //  the rest of a message has come: no waiting
        zmq_msg_t extra, *into = frames == 1 ? body : &extra;
        if (into == &extra) zmq_msg_init (&extra);
        bool got = zmq_msg_recv (into, sub, 0) >= 0;
        more = got && zmq_msg_more (into);
        if (into == &extra) zmq_msg_close (&extra);
        if (!got) break;
        frames++;
    }
    return frames;
}

void *cm_zmq_watch_handshakes (void *sock, const char *endpoint)
{
    if (zmq_socket_monitor (sock, endpoint, ZMQ_EVENT_HANDSHAKE_SUCCEEDED)) {
        cm_warn ("cannot watch a socket's connections: %s", zmq_strerror (errno));
        return NULL;
    }
    void *watch = cm_zmq_socket (ZMQ_PAIR, 0);
    if (watch && zmq_connect (watch, endpoint)) {
        cm_warn ("cannot watch a socket's connections: %s", zmq_strerror (errno));
        cm_zmq_close (&watch);
    }
    if (!watch) zmq_socket_monitor (sock, NULL, 0);
    return watch;
}

bool cm_zmq_handshakes (void *watch)
{
    bool seen = false;
    while (watch) {
        zmq_msg_t msg; //  [event id, value][endpoint]
        zmq_msg_init (&msg);
        if (zmq_msg_recv (&msg, watch, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close (&msg);
            break;
        }
        bool more = zmq_msg_more (&msg);
        zmq_msg_close (&msg);
        while (more) {
            zmq_msg_init (&msg);
            more = zmq_msg_recv (&msg, watch, ZMQ_DONTWAIT) >= 0 && zmq_msg_more (&msg);
            zmq_msg_close (&msg);
        }
        seen = true;
    }
    return seen;
}

void cm_zmq_unwatch (void *sock, void **watch)
{
    if (!watch || !*watch) return;
    if (sock) zmq_socket_monitor (sock, NULL, 0);
    cm_zmq_close_linger (watch, 0);
}

int cm_zmq_sendv (void *sock, const cm_frame_t *frames, size_t count, int flags)
{
    if (!sock || !frames || count == 0) return CM_E_INVALID;
    static const char empty = 0;
    for (size_t i = 0; i < count; i++) {
        int more = i + 1 < count ? ZMQ_SNDMORE : 0;
        //  zmq_send copies size bytes; never hand it NULL, even for 0.
        const void *data = frames[i].data ? frames[i].data : &empty;
        size_t size = frames[i].data ? frames[i].size : 0;
        if (zmq_send (sock, data, size, flags | more) >= 0) continue;
        //  ROUTER and DEALER only refuse on the first frame; once it is
        //  accepted libzmq takes the remaining frames of the message.
        if (errno == EHOSTUNREACH) return CM_E_UNAVAILABLE;
        if (errno == EAGAIN) return CM_E_CAPACITY;
        return CM_E_IO;
    }
    return 0;
}

bool cm_zmq_readable (void *sock)
{
    int events = 0;
    size_t len = sizeof (events);
    if (zmq_getsockopt (sock, ZMQ_EVENTS, &events, &len) != 0) return false;
    return (events & ZMQ_POLLIN) != 0;
}
