/*  store_server.h - the corral-store ROUTER loop (group commit on the bus). */
#ifndef STORE_SERVER_H
#define STORE_SERVER_H

#include "store.h"

typedef struct {
    const char *endpoint;    //  ROUTER bind address
    size_t batch_max;        //  requests in one group commit at most
    int64_t batch_window_ms; //  time spent collecting one batch at most
    const char *monitor_in;  //  corral-monitor's heartbeat endpoint (PUB, connect)
} store_server_opts_t;

//  The store's statistics for its heartbeat (store_beat.c); arg is the
//  store_t.  Opens a read transaction: call between batches.
struct proto_beat;
void store_beat_fill (struct proto_beat *beat, void *arg);

//  Serve until cm_stop_requested().  Returns 0 on a clean stop, or a
//  negative code if the socket could not be set up.
int store_server_run (store_t *store, const store_server_opts_t *opts);

#endif
