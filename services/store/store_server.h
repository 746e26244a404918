/*  store_server.h - the corral-store ROUTER loop (group commit on the bus). */
#ifndef STORE_SERVER_H
#define STORE_SERVER_H

#include "store.h"

typedef struct {
    const char *endpoint;    //  ROUTER bind address
    size_t batch_max;        //  requests in one group commit at most
    int64_t batch_window_ms; //  time spent collecting one batch at most
} store_server_opts_t;

//  Serve until cm_stop_requested().  Returns 0 on a clean stop, or a
//  negative code if the socket could not be set up.
int store_server_run (store_t *store, const store_server_opts_t *opts);

#endif
