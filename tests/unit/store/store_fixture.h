/*  store_fixture.h - drive the store the way store_server.c does: encode
    requests with proto_encode, hand them to store_batch() as one batch,
    decode each reply from replies.data + reply_off / reply_len.

    A fixture owns a fresh data directory (mkdtemp under /tmp, removed by
    fx_destroy) and the store opened on it.  Typical use:

        fx_t *fx = fx_new (0, 0);
        proto_appended_t *ack = fx_call (fx, PROTO_STORE_EVENTS_APPEND, &req,
                                         PROTO_APPENDED);
        const char *msg;
        assert_int_equal (fx_call_err (fx, PROTO_STORE_EVENTS_APPEND, &gap, &msg),
                          CM_E_GAP);
        fx_destroy (&fx);

    Lifetimes: a decoded reply (and any BIN it holds) stays valid until the
    next fx_run / fx_call / fx_reply on the same fixture.
*/
#ifndef STORE_FIXTURE_H
#define STORE_FIXTURE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto.h"
#include "store.h"

#define FX_MAX_BATCH 256

typedef struct {
    char dir[64]; //  the data directory
    store_opts_t opts;
    store_t *store;
    //  the batch being built
    proto_buf_t reqs;
    size_t offs[FX_MAX_BATCH];
    uint64_t corrs[FX_MAX_BATCH];
    store_req_t batch[FX_MAX_BATCH];
    size_t count;
    bool ran; //  the batch was run: the next fx_add starts a new one
    uint64_t next_corr;
    //  replies of the last batch, and the last decoded one
    proto_buf_t replies;
    proto_msg_t msg;
} fx_t;

//  New data directory and store.  map_size / map_max 0 mean 16 / 256 MiB.
fx_t *fx_new (uint64_t map_size, uint64_t map_max);
//  Close the store, remove the directory, free; nulls *fx_p.
void fx_destroy (fx_t **fx_p);
//  Close and open the store again on the same directory.
void fx_reopen (fx_t *fx);

//  Queue one request of the next batch; returns its correlation id.
uint64_t fx_add (fx_t *fx, proto_type_t type, const void *body);
//  Queue raw bytes as a request (malformed input).
void fx_add_raw (fx_t *fx, const void *data, size_t size);
//  Run the queued requests as one store_batch; every one must get a reply.
void fx_run (fx_t *fx);
//  Decode reply i of the last batch into fx->msg; checks its corr when the
//  request was queued with fx_add.
proto_msg_t *fx_reply (fx_t *fx, size_t i);
//  Error code of reply i (asserts it is an error); *message if not NULL.
int fx_reply_err (fx_t *fx, size_t i, const char **message);

//  One request as its own batch: the decoded reply body, asserting its type.
void *fx_call (fx_t *fx, proto_type_t type, const void *body, proto_type_t expect);
//  One request that must be refused: the error code, *message if not NULL.
int fx_call_err (fx_t *fx, proto_type_t type, const void *body, const char **message);

//  Shorthands.
uint64_t fx_append (fx_t *fx, const cm_uuid_t *session, uint64_t first_seq,
                    const proto_bin_t *events, size_t count); //  returns last_seq
proto_events_reply_t *fx_range (fx_t *fx, const cm_uuid_t *session, uint64_t after,
                                uint64_t limit);
proto_store_stats_t *fx_stats (fx_t *fx);
uint64_t fx_db_entries (fx_t *fx, store_db_t db);

//  Deterministic event bytes for (tag, seq), `size` long, in buf.
void fx_event (uint8_t *buf, size_t size, char tag, uint64_t seq);
//  Remove a directory tree (nftw); missing is fine.
void fx_rm_rf (const char *path);

#endif
