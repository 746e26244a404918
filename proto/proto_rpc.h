/*  proto_rpc.h - a requester on a DEALER socket: send catalogue messages
    with fresh correlation ids, receive replies, pipelined or one at a time.

    Lifetime: a reply decoded by proto_rpc_recv/proto_rpc_call points into
    the received frame, which the client keeps until its next recv or call.
    One client per thread; not thread-safe.
*/
#ifndef PROTO_RPC_H
#define PROTO_RPC_H

#include "proto.h"

typedef struct proto_rpc proto_rpc_t;

//  Connect a DEALER to endpoint.  Returns NULL on failure (logged).
proto_rpc_t *proto_rpc_new (const char *endpoint);
void proto_rpc_destroy (proto_rpc_t **self_p);

//  The underlying socket (for zmq_poll).
void *proto_rpc_socket (proto_rpc_t *self);

//  Send a request; *corr gets its correlation id.  Waits at most
//  timeout_ms for the connection.  Returns 0, CM_E_UNAVAILABLE (no peer in
//  time), or an encode error.
int proto_rpc_send (proto_rpc_t *self, proto_type_t type, const void *body,
                    int timeout_ms, uint64_t *corr);

//  Receive the next reply, whatever its corr.  Returns 0, CM_E_TIMEOUT, or
//  a decode error (reply->corr may still be valid).
int proto_rpc_recv (proto_rpc_t *self, proto_msg_t *reply, int timeout_ms);

//  Send and wait for the reply with the same corr (others are dropped).
//  An `error` reply returns its code, with the reply decoded in *reply.
int proto_rpc_call (proto_rpc_t *self, proto_type_t type, const void *body,
                    proto_msg_t *reply, int timeout_ms);

#endif
