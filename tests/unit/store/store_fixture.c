/*  store_fixture.c - see store_fixture.h. */
#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "store_fixture.h"

static void fx_open (fx_t *fx)
{
    char err[512];
    fx->store = store_open (&fx->opts, err, sizeof err);
    if (!fx->store) fail_msg ("store_open: %s", err);
}

fx_t *fx_new (uint64_t map_size, uint64_t map_max)
{
    fx_t *fx = calloc (1, sizeof *fx);
    assert_non_null (fx);
    strcpy (fx->dir, "/tmp/corral-store-test-XXXXXX");
    assert_non_null (mkdtemp (fx->dir));
    fx->opts = (store_opts_t){
        .data_dir = fx->dir,
        .sync = STORE_SYNC_OS, //  durability is not what these tests measure
        .map_size = map_size ? map_size : 16u << 20,
        .map_max = map_max ? map_max : 256u << 20,
    };
    proto_buf_init (&fx->reqs);
    proto_buf_init (&fx->replies);
    proto_msg_init (&fx->msg);
    fx->next_corr = 1000;
    fx_open (fx);
    return fx;
}

void fx_destroy (fx_t **fx_p)
{
    fx_t *fx = *fx_p;
    if (!fx) return;
    store_close (&fx->store);
    fx_rm_rf (fx->dir);
    proto_buf_fini (&fx->reqs);
    proto_buf_fini (&fx->replies);
    proto_msg_fini (&fx->msg);
    free (fx);
    *fx_p = NULL;
}

void fx_reopen (fx_t *fx)
{
    store_close (&fx->store);
    assert_null (fx->store);
    fx_open (fx);
}

static void fx_begin_if_done (fx_t *fx)
{
    //  The first request after a run starts a new batch.
    if (fx->ran) {
        fx->count = 0;
        fx->ran = false;
    }
    if (fx->count == 0) proto_buf_reset (&fx->reqs);
    assert_true (fx->count < FX_MAX_BATCH);
}

uint64_t fx_add (fx_t *fx, proto_type_t type, const void *body)
{
    fx_begin_if_done (fx);
    uint64_t corr = fx->next_corr++;
    fx->offs[fx->count] = fx->reqs.size;
    assert_int_equal (proto_encode (&fx->reqs, type, corr, body), 0);
    fx->corrs[fx->count] = corr;
    fx->batch[fx->count].size = fx->reqs.size - fx->offs[fx->count];
    fx->count++;
    return corr;
}

void fx_add_raw (fx_t *fx, const void *data, size_t size)
{
    fx_begin_if_done (fx);
    size_t off = fx->reqs.size;
    if (fx->reqs.alloc < off + size) {
        size_t alloc = (off + size) * 2;
        char *p = realloc (fx->reqs.data, alloc);
        assert_non_null (p);
        fx->reqs.data = p;
        fx->reqs.alloc = alloc;
    }
    memcpy (fx->reqs.data + off, data, size);
    fx->reqs.size += size;
    fx->offs[fx->count] = off;
    fx->corrs[fx->count] = 0; //  unknown: not checked
    fx->batch[fx->count].size = size;
    fx->count++;
}

void fx_run (fx_t *fx)
{
    //  Pointers are fixed up only now: the buffer may have moved.
    for (size_t i = 0; i < fx->count; i++) {
        fx->batch[i].data = fx->reqs.data + fx->offs[i];
        fx->batch[i].reply_off = 0;
        fx->batch[i].reply_len = 0;
    }
    assert_int_equal (store_batch (fx->store, fx->batch, fx->count, &fx->replies), 0);
    for (size_t i = 0; i < fx->count; i++) {
        assert_true (fx->batch[i].reply_len > 0);
        assert_true (fx->batch[i].reply_off + fx->batch[i].reply_len <= fx->replies.size);
    }
    fx->ran = true;
}

proto_msg_t *fx_reply (fx_t *fx, size_t i)
{
    assert_true (i < fx->count);
    const store_req_t *r = &fx->batch[i];
    int rc = proto_decode (&fx->msg, fx->replies.data + r->reply_off, r->reply_len);
    if (rc) fail_msg ("reply %zu does not decode: %s", i, proto_msg_error (&fx->msg));
    if (fx->corrs[i]) assert_int_equal (fx->msg.corr, fx->corrs[i]);
    return &fx->msg;
}

int fx_reply_err (fx_t *fx, size_t i, const char **message)
{
    proto_msg_t *msg = fx_reply (fx, i);
    if (msg->type != PROTO_ERROR)
        fail_msg ("reply %zu is %s, expected an error", i, proto_type_name (msg->type));
    proto_error_t *err = proto_body (msg, error);
    assert_non_null (err);
    assert_non_null (err->message);
    assert_true (err->message[0] != '\0');
    if (message) *message = err->message;
    return (int)err->code;
}

void *fx_call (fx_t *fx, proto_type_t type, const void *body, proto_type_t expect)
{
    assert_true (fx->ran || fx->count == 0); //  not in the middle of a batch
    fx_add (fx, type, body);
    fx_run (fx);
    proto_msg_t *msg = fx_reply (fx, 0);
    if (msg->type != expect) {
        proto_error_t *err = proto_body (msg, error);
        fail_msg ("%s: reply %s, expected %s (%s)", proto_type_name (type),
                  proto_type_name (msg->type), proto_type_name (expect),
                  err ? err->message : "");
    }
    return msg->body;
}

int fx_call_err (fx_t *fx, proto_type_t type, const void *body, const char **message)
{
    assert_true (fx->ran || fx->count == 0);
    fx_add (fx, type, body);
    fx_run (fx);
    return fx_reply_err (fx, 0, message);
}

uint64_t fx_append (fx_t *fx, const cm_uuid_t *session, uint64_t first_seq,
                    const proto_bin_t *events, size_t count)
{
    proto_events_append_t req = {
        .session = *session,
        .first_seq = first_seq,
        .events = {(proto_bin_t *)events, count},
    };
    proto_appended_t *ack = fx_call (fx, PROTO_STORE_EVENTS_APPEND, &req, PROTO_APPENDED);
    assert_memory_equal (ack->session.b, session->b, 16);
    return ack->last_seq;
}

proto_events_reply_t *fx_range (fx_t *fx, const cm_uuid_t *session, uint64_t after,
                                uint64_t limit)
{
    proto_events_range_t req = {.session = *session, .after_seq = after, .limit = limit};
    proto_events_reply_t *rep =
        fx_call (fx, PROTO_STORE_EVENTS_RANGE, &req, PROTO_EVENTS);
    assert_memory_equal (rep->session.b, session->b, 16);
    return rep;
}

proto_store_stats_t *fx_stats (fx_t *fx)
{
    proto_store_stats_t *st = fx_call (fx, PROTO_STORE_STATS, NULL, PROTO_STATS_REPLY);
    assert_int_equal (st->dbs.count, STORE_DB_COUNT);
    return st;
}

uint64_t fx_db_entries (fx_t *fx, store_db_t db)
{
    proto_store_stats_t *st = fx_stats (fx);
    for (size_t i = 0; i < st->dbs.count; i++)
        if (strcmp (st->dbs.items[i].name, store_db_names[db]) == 0)
            return st->dbs.items[i].entries;
    fail_msg ("no stats for database %s", store_db_names[db]);
    return 0;
}

void fx_event (uint8_t *buf, size_t size, char tag, uint64_t seq)
{
    //  A header naming the event, then bytes that depend on both, so two
    //  events never compare equal by accident.
    char head[32];
    int n = snprintf (head, sizeof head, "%c:%llu:", tag, (unsigned long long)seq);
    for (size_t i = 0; i < size; i++)
        buf[i] = i < (size_t)n ? (uint8_t)head[i] : (uint8_t)(seq * 31 + i * 7 + tag);
}

static int rm_one (const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    remove (path);
    return 0;
}

void fx_rm_rf (const char *path)
{
    nftw (path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}
