/*  gw_listen.c - the gateway's own listening socket, handed to lws one
    accepted connection at a time (lws_adopt_socket_vhost).

    Why not lws's listener: Debian's lws 4.1.6 binds an IPv4 address given
    as `iface` to the IPv6 wildcard (every interface, not the loopback the
    operator asked for), and does not set SO_REUSEPORT for
    LWS_SERVER_OPTION_ALLOW_LISTEN_SHARE, so several gateways could not
    share a port.  Both are one system call each here.  Out of descriptors,
    accepting pauses until the next server tick (100 ms) instead of
    spinning on a listening socket that stays readable.  The vhost is made
    with CONTEXT_PORT_NO_LISTEN_SERVER (a server, TLS included, that adopts
    its sockets); the listening fd is adopted as a raw file and drained with
    accept4 on every wake-up.
*/
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cm_log.h"
#include "gw.h"

#define ACCEPT_MAX 256 //  connections accepted per wake-up

int gw_listen_open (gw_server_t *self, const char *host, const char *port)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    int rc = getaddrinfo (*host ? host : NULL, port, &hints, &res);
    if (rc) {
        cm_error ("cannot resolve listen address %s:%s: %s", host, port,
                  gai_strerror (rc));
        return -1;
    }
    int fd = -1;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        fd = socket (ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) continue;
        int one = 1;
        setsockopt (fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (self->cfg->listen_share)
            setsockopt (fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
        if (bind (fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen (fd, 4096) == 0) break;
        cm_error ("cannot listen on %s:%s: %s", host, port, strerror (errno));
        close (fd);
        fd = -1;
    }
    freeaddrinfo (res);
    return fd;
}

int gw_listen_adopt (gw_server_t *self, int fd)
{
    lws_sock_file_fd_type u;
    u.filefd = fd;
    struct lws *wsi = lws_adopt_descriptor_vhost (self->vhost, LWS_ADOPT_RAW_FILE_DESC, u,
                                                  "corral-listen", NULL);
    if (!wsi) return -1;
    lws_set_opaque_user_data (wsi, self);
    self->listen_wsi = wsi;
    return 0;
}

void gw_listen_tick (gw_server_t *self)
{
    if (!self->accept_paused || !self->listen_wsi) return;
    self->accept_paused = false;
    lws_rx_flow_control (self->listen_wsi, 1);
}

int gw_listen_callback (struct lws *wsi, enum lws_callback_reasons reason, void *user,
                        void *in, size_t len)
{
    (void)user;
    (void)in;
    (void)len;
    gw_server_t *self = lws_get_opaque_user_data (wsi);
    if (reason != LWS_CALLBACK_RAW_RX_FILE || !self) return 0;
    int lfd = lws_get_socket_fd (wsi);
    for (int n = 0; n < ACCEPT_MAX; n++) {
        int fd = accept4 (lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE) {
                //  The pending connection stays queued and the socket stays
                //  readable: without a pause the loop would spin (and log)
                //  until a descriptor frees.  The server tick resumes.
                cm_warn ("out of file descriptors: not accepting for a moment; raise "
                         "the open-file limit");
                self->accept_paused = true;
                lws_rx_flow_control (wsi, 0);
            }
            break;
        }
        int one = 1;
        setsockopt (fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        //  lws closes fd itself when it cannot take it.
        if (!lws_adopt_socket_vhost (self->vhost, fd))
            cm_warn ("lws could not take an accepted connection");
    }
    return 0;
}
