/*  store_ops.c - the store API: one handler per message, a dispatch table
    indexed by type id, and store_batch(), the group commit.

    Handler contract: a handler either writes its reply (with the request's
    correlation id) into ctx->out and returns 0, or returns a cm error code
    (with an optional message in ctx->err) and the dispatcher writes the
    error reply.  A handler checks everything before its first write, so a
    refused request has written nothing.  If an LMDB write itself fails the
    handler sets ctx->poisoned: the transaction is unusable and the batch
    is redone (see store_batch).

    Keys (DESIGN §4), all big-endian so LMDB's byte order is numeric order:
        sessions, tasks, templates   id (16)
        events                       session id (16) ‖ seq (8)
        journal                      jid (8) -> session ‖ seq ‖ event
                                     (new events, store_journal.c)
        messages                     session id (16) ‖ index (8)
        tasks_by_state               state ‖ 0 ‖ task id (16)      -> empty
        keys                         sha256 (32)
        usage                        tenant ‖ 0 ‖ day (4)
        usage_applied                id (16) ‖ tenant ‖ 0 ‖ day (4) -> empty
    Values are proto records (proto_record_encode), except events, which
    are stored exactly as the session service encoded them (in `events`,
    or after the 24-byte head of a journal entry).
*/
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cm_log.h"
#include "cm_time.h"
#include "store.h"

typedef struct {
    store_t *self;
    MDB_txn *txn;
    const proto_msg_t *req;
    proto_buf_t *out;
    bool poisoned;
    char err[256];
} op_ctx_t;

typedef int (*op_fn) (op_ctx_t *ctx);

//  Storage for a reply body filled through its descriptor (generic
//  collection replies); big and aligned enough for any of them.
typedef union {
    char bytes[256];
    max_align_t align;
} reply_body_t;
_Static_assert(sizeof (proto_sessions_reply_t) <= sizeof (reply_body_t), "reply body");
_Static_assert(sizeof (proto_templates_reply_t) <= sizeof (reply_body_t), "reply body");
//  Event bytes plus a bin header (at most 5 bytes) per event, plus the rest.
_Static_assert(STORE_MAX_EVENT <= STORE_RANGE_MAX_BYTES &&
                   STORE_RANGE_MAX_BYTES + 8ull * STORE_RANGE_MAX + 1024 <= PROTO_MAX_MSG,
               "an events.range reply must fit in one message");

/* ---------------------------------------------------------------- */
/*  Helpers                                                          */

static int reply (op_ctx_t *ctx, proto_type_t type, const void *body)
{
    return proto_encode (ctx->out, type, ctx->req->corr, body);
}

//  An LMDB write failed: the transaction can no longer commit.
static int poison (op_ctx_t *ctx, int mdb_rc)
{
    ctx->poisoned = true;
    snprintf (ctx->err, sizeof ctx->err, "store write failed: %s", mdb_strerror (mdb_rc));
    return store_mdb_err (mdb_rc);
}

static int put (op_ctx_t *ctx, store_db_t db, MDB_val *k, MDB_val *v)
{
    int rc = mdb_put (ctx->txn, ctx->self->dbi[db], k, v, 0);
    return rc ? poison (ctx, rc) : 0;
}

static int del (op_ctx_t *ctx, store_db_t db, MDB_val *k)
{
    int rc = mdb_del (ctx->txn, ctx->self->dbi[db], k, NULL);
    if (rc == MDB_NOTFOUND) return CM_E_NOT_FOUND;
    return rc ? poison (ctx, rc) : 0;
}

//  Delete every key starting with prefix.
static int del_prefix (op_ctx_t *ctx, store_db_t db, const void *prefix, size_t plen)
{
    MDB_cursor *cur;
    int rc = mdb_cursor_open (ctx->txn, ctx->self->dbi[db], &cur);
    if (rc) return poison (ctx, rc);
    //  Seek afresh after each delete: simple, and O(log n) each.
    while (true) {
        MDB_val k = {plen, (void *)prefix}, v;
        rc = mdb_cursor_get (cur, &k, &v, MDB_SET_RANGE);
        if (rc || k.mv_size < plen || memcmp (k.mv_data, prefix, plen) != 0) break;
        if ((rc = mdb_cursor_del (cur, 0))) break;
    }
    mdb_cursor_close (cur);
    if (rc && rc != MDB_NOTFOUND) return poison (ctx, rc);
    return 0;
}

//  Encode a record into the store's scratch buffer for use as a value.
static int encode_value (op_ctx_t *ctx, const proto_rec_desc_t *rec, const void *obj,
                         MDB_val *v)
{
    proto_buf_reset (&ctx->self->scratch);
    int rc = proto_record_encode (&ctx->self->scratch, rec, obj);
    if (rc) return rc;
    v->mv_size = ctx->self->scratch.size;
    v->mv_data = ctx->self->scratch.data;
    return 0;
}

//  Decode a stored value; records stay valid until the request ends.
static int decode_value (op_ctx_t *ctx, const proto_rec_desc_t *rec, const MDB_val *v,
                         void **out)
{
    int rc = proto_record_decode (&ctx->self->rec_msg, rec, v->mv_data, v->mv_size, out);
    if (rc)
        snprintf (ctx->err, sizeof ctx->err, "a stored %s record is damaged (%s)",
                  rec->name, proto_msg_error (&ctx->self->rec_msg));
    return rc ? CM_E_CORRUPT : 0;
}

static const proto_field_desc_t *field_named (const proto_rec_desc_t *rec,
                                              const char *name)
{
    for (size_t i = 0; i < rec->field_count; i++)
        if (strcmp (rec->fields[i].name, name) == 0) return &rec->fields[i];
    return NULL;
}

//  Highest seq stored for a session (0 if none), journal or `events`.
static int last_seq (op_ctx_t *ctx, const cm_uuid_t *session, uint64_t *out)
{
    int rc = store_last_seq (ctx->self, ctx->txn, session, out);
    return rc ? store_mdb_err (rc) : 0;
}

/* ---------------------------------------------------------------- */
/*  Collections of records: sessions, tasks, templates, keys          */

typedef struct {
    store_db_t db;
    const proto_rec_desc_t *rec;
    const char *key_field; //  "id" (UUID) or "hash" (BIN)
    proto_type_t one;      //  reply with one record:  {<rec>: record}
    proto_type_t many;     //  reply with a page:      {<list>: [...], more}
} collection_t;

static const collection_t s_sessions = {STORE_DB_SESSIONS, &proto_rec_session_rec, "id",
                                        PROTO_SESSION, PROTO_SESSIONS};
static const collection_t s_tasks = {STORE_DB_TASKS, &proto_rec_task_rec, "id",
                                     PROTO_TASK, PROTO_TASKS};
static const collection_t s_templates = {STORE_DB_TEMPLATES, &proto_rec_template_rec,
                                         "id", PROTO_TEMPLATE, PROTO_TEMPLATES};
static const collection_t s_keys = {STORE_DB_KEYS, &proto_rec_key_rec, "hash", PROTO_KEY,
                                    PROTO_KEYS};

static int record_key (const collection_t *c, const void *obj, MDB_val *k)
{
    const proto_field_desc_t *f = field_named (c->rec, c->key_field);
    const char *slot = (const char *)obj + f->offset;
    if (f->type == PROTO_T_UUID) {
        k->mv_size = 16;
        k->mv_data = (void *)slot;
        return 0;
    }
    const proto_bin_t *b = (const proto_bin_t *)slot;
    if (b->size != 32) return CM_E_INVALID; //  sha256
    k->mv_size = b->size;
    k->mv_data = (void *)b->data;
    return 0;
}

//  The request body's first field is the record (put) or the key (get).
static const void *body_field (op_ctx_t *ctx, size_t i)
{
    return (const char *)ctx->req->body + ctx->req->desc->body->fields[i].offset;
}

static int coll_put (op_ctx_t *ctx, const collection_t *c)
{
    const void *obj = *(const void *const *)body_field (ctx, 0);
    MDB_val k, v;
    int rc = record_key (c, obj, &k);
    if (rc) {
        snprintf (ctx->err, sizeof ctx->err, "%s.%s must be 32 bytes (SHA-256)",
                  c->rec->name, c->key_field);
        return rc;
    }
    //  Store the record exactly as it came, fields this build does not
    //  know included, so a newer peer's data survives an older store.
    proto_buf_reset (&ctx->self->scratch);
    if ((rc = proto_field_raw (ctx->req, ctx->req->desc->body->fields[0].name,
                               &ctx->self->scratch)))
        return rc;
    v.mv_size = ctx->self->scratch.size;
    v.mv_data = ctx->self->scratch.data;
    if ((rc = put (ctx, c->db, &k, &v))) return rc;
    return reply (ctx, PROTO_OK, NULL);
}

//  The stored value (*raw, valid until the transaction ends) and its
//  decoded record (*obj, checked: a damaged value is never sent out).
static int coll_lookup (op_ctx_t *ctx, const collection_t *c, MDB_val *k, void **obj,
                        MDB_val *raw)
{
    int rc = mdb_get (ctx->txn, ctx->self->dbi[c->db], k, raw);
    if (rc == MDB_NOTFOUND) {
        snprintf (ctx->err, sizeof ctx->err, "no such %s", c->rec->name);
        return CM_E_NOT_FOUND;
    }
    if (rc) return store_mdb_err (rc);
    return decode_value (ctx, c->rec, raw, obj);
}

//  Key of a get/delete request: id_req{id} or key_get{hash}.
static int request_key (op_ctx_t *ctx, MDB_val *k)
{
    const proto_field_desc_t *f = &ctx->req->desc->body->fields[0];
    const void *slot = body_field (ctx, 0);
    if (f->type == PROTO_T_UUID) {
        k->mv_size = 16;
        k->mv_data = (void *)slot;
        return 0;
    }
    const proto_bin_t *b = slot;
    if (b->size != 32) {
        snprintf (ctx->err, sizeof ctx->err, "hash must be 32 bytes (SHA-256)");
        return CM_E_INVALID;
    }
    k->mv_size = 32;
    k->mv_data = (void *)b->data;
    return 0;
}

static int coll_get (op_ctx_t *ctx, const collection_t *c)
{
    MDB_val k, raw;
    void *obj;
    int rc = request_key (ctx, &k);
    if (rc == 0) rc = coll_lookup (ctx, c, &k, &obj, &raw);
    if (rc) return rc;
    //  Reply bodies with one record have exactly that one REC field; it
    //  goes out as stored.
    const proto_rec_desc_t *body = proto_msg_desc (c->one)->body;
    reply_body_t reply_body = {{0}};
    *(void **)(reply_body.bytes + body->fields[0].offset) = obj;
    proto_bin_t item = {raw.mv_data, raw.mv_size};
    return proto_encode_raw (ctx->out, c->one, ctx->req->corr, &reply_body,
                             body->fields[0].name, &item, 1);
}

static int coll_list (op_ctx_t *ctx, const collection_t *c)
{
    const proto_list_req_t *req = ctx->req->body;
    uint64_t limit = req->limit ? req->limit : STORE_LIST_DEFAULT;
    if (limit > STORE_LIST_MAX) limit = STORE_LIST_MAX;
    const proto_field_desc_t *tenant_f = field_named (c->rec, "tenant");

    //  Reply bodies for pages are {REC_LIST, more}.
    const proto_rec_desc_t *body = proto_msg_desc (c->many)->body;
    reply_body_t reply_body = {{0}};
    proto_str_list_t *list =
        (proto_str_list_t *)(reply_body.bytes + body->fields[0].offset);
    bool *more = (bool *)(reply_body.bytes + body->fields[1].offset);
    //  Records go out as stored (values point into the map, valid until
    //  the transaction ends; the reply is encoded before that).
    proto_bin_t *items = calloc (limit, sizeof *items);
    if (!items) return CM_E_NOMEM;

    MDB_cursor *cur;
    int rc = mdb_cursor_open (ctx->txn, ctx->self->dbi[c->db], &cur);
    if (rc) {
        free (items);
        return store_mdb_err (rc);
    }
    MDB_val k = {16, (void *)req->after.b}, v;
    bool from_start = cm_uuid_is_nil (&req->after);
    rc = from_start ? mdb_cursor_get (cur, &k, &v, MDB_FIRST)
                    : mdb_cursor_get (cur, &k, &v, MDB_SET_RANGE);
    if (rc == 0 && !from_start && k.mv_size == 16 &&
        memcmp (k.mv_data, req->after.b, 16) == 0)
        rc = mdb_cursor_get (cur, &k, &v, MDB_NEXT);
    size_t n = 0;
    while (rc == 0) {
        void *obj;
        if ((rc = decode_value (ctx, c->rec, &v, &obj))) break;
        const char *tenant = *(const char *const *)((const char *)obj + tenant_f->offset);
        if (!req->tenant || strcmp (req->tenant, tenant) == 0) {
            if (n == limit) {
                *more = true;
                break;
            }
            items[n].data = v.mv_data;
            items[n].size = v.mv_size;
            n++;
        }
        rc = mdb_cursor_get (cur, &k, &v, MDB_NEXT);
    }
    mdb_cursor_close (cur);
    if (rc == MDB_NOTFOUND) rc = 0;
    if (rc == 0) {
        list->count = 0; //  the raw items below replace the list
        rc = proto_encode_raw (ctx->out, c->many, ctx->req->corr, &reply_body,
                               body->fields[0].name, items, n);
    }
    free (items);
    return rc;
}

static int coll_delete (op_ctx_t *ctx, const collection_t *c)
{
    MDB_val k;
    int rc = request_key (ctx, &k);
    if (rc) return rc;
    rc = del (ctx, c->db, &k);
    if (rc == CM_E_NOT_FOUND)
        snprintf (ctx->err, sizeof ctx->err, "no such %s", c->rec->name);
    if (rc) return rc;
    return reply (ctx, PROTO_OK, NULL);
}

/* ---------------------------------------------------------------- */
/*  Handlers                                                         */

static int op_session_put (op_ctx_t *ctx)
{
    return coll_put (ctx, &s_sessions);
}

static int op_session_get (op_ctx_t *ctx)
{
    return coll_get (ctx, &s_sessions);
}

static int op_session_list (op_ctx_t *ctx)
{
    return coll_list (ctx, &s_sessions);
}

static int op_session_delete (op_ctx_t *ctx)
{
    //  Idempotent: deleting what is already gone succeeds, so a retry
    //  after a lost reply does not fail.
    const proto_id_req_t *req = ctx->req->body;
    MDB_val k = {16, (void *)req->id.b};
    int rc = del (ctx, STORE_DB_SESSIONS, &k);
    if (rc && rc != CM_E_NOT_FOUND) return rc;
    if ((rc = del_prefix (ctx, STORE_DB_EVENTS, req->id.b, 16))) return rc;
    if ((rc = store_journal_drop (ctx->self, ctx->txn, &req->id)))
        return poison (ctx, rc);
    if ((rc = del_prefix (ctx, STORE_DB_MESSAGES, req->id.b, 16))) return rc;
    return reply (ctx, PROTO_OK, NULL);
}

//  Store one session's events (see op_events_append); *last is the
//  highest seq stored for it afterwards.  A refusal writes nothing.
static int append_one (op_ctx_t *ctx, const proto_events_append_t *req, uint64_t *last)
{
    char sid[CM_UUID_STR_LEN];
    if (req->first_seq == 0) {
        snprintf (ctx->err, sizeof ctx->err, "first_seq must be 1 or more");
        return CM_E_INVALID;
    }
    if (req->events.count > UINT64_MAX - req->first_seq) return CM_E_INVALID;
    for (size_t i = 0; i < req->events.count; i++) {
        if (req->events.items[i].size == 0 ||
            req->events.items[i].size > STORE_MAX_EVENT) {
            snprintf (ctx->err, sizeof ctx->err,
                      "event %zu is %zu bytes; events must be "
                      "1 to %u bytes",
                      i, req->events.items[i].size, STORE_MAX_EVENT);
            return req->events.items[i].size ? CM_E_TOO_LARGE : CM_E_INVALID;
        }
    }
    int rc = last_seq (ctx, &req->session, last);
    if (rc) return rc;
    if (req->first_seq > *last + 1) {
        snprintf (ctx->err, sizeof ctx->err,
                  "session %s: append at seq %llu, but the last stored seq is %llu; "
                  "resend from seq %llu",
                  cm_uuid_fmt (&req->session, sid), (unsigned long long)req->first_seq,
                  (unsigned long long)*last, (unsigned long long)*last + 1);
        return CM_E_GAP;
    }
    //  Events at or below `last` are already stored: acknowledged, not
    //  rewritten.  The rest go to the journal (store_journal.c), or when
    //  they are many bytes straight to `events`, in key order through one
    //  cursor.
    uint64_t skip = *last + 1 - req->first_seq;
    size_t bytes = 0;
    for (uint64_t i = skip; i < req->events.count; i++)
        bytes += req->events.items[i].size;
    if (bytes >= STORE_JOURNAL_DIRECT) {
        if ((rc = store_journal_fold_session (ctx->self, ctx->txn, &req->session)))
            return poison (ctx, rc);
        MDB_cursor *cur;
        if ((rc = mdb_cursor_open (ctx->txn, ctx->self->dbi[STORE_DB_EVENTS], &cur)))
            return poison (ctx, rc);
        uint8_t key[24];
        memcpy (key, req->session.b, 16);
        for (uint64_t i = skip; i < req->events.count; i++) {
            store_put_be64 (key + 16, req->first_seq + i);
            MDB_val k = {sizeof key, key};
            MDB_val v = {req->events.items[i].size, (void *)req->events.items[i].data};
            if ((rc = mdb_cursor_put (cur, &k, &v, 0))) break;
        }
        mdb_cursor_close (cur);
        if (rc) return poison (ctx, rc);
        *last = req->first_seq + req->events.count - 1;
        return 0;
    }
    for (uint64_t i = skip; i < req->events.count; i++) {
        rc = store_journal_append (ctx->self, ctx->txn, &req->session, req->first_seq + i,
                                   req->events.items[i].data, req->events.items[i].size);
        if (rc) return poison (ctx, rc);
        *last = req->first_seq + i;
    }
    return 0;
}

static int op_events_append (op_ctx_t *ctx)
{
    const proto_events_append_t *req = ctx->req->body;
    uint64_t last;
    int rc = append_one (ctx, req, &last);
    if (rc) return rc;
    proto_appended_t out = {.session = req->session, .last_seq = last};
    return reply (ctx, PROTO_APPENDED, &out);
}

//  Many sessions' appends in one request (the session service sends all
//  it has ready while the previous batch commits): each runs as
//  events.append would and gets its own result, so one session's gap
//  refuses that session only.  An LMDB failure poisons the whole batch.
static int op_events_append_batch (op_ctx_t *ctx)
{
    const proto_append_batch_t *req = ctx->req->body;
    size_t n = req->appends.count;
    proto_append_result_t *res = calloc (n ? n : 1, sizeof *res);
    char **msgs = calloc (n ? n : 1, sizeof *msgs);
    int rc = res && msgs ? 0 : CM_E_NOMEM;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        const proto_events_append_t *a = &req->appends.items[i];
        ctx->err[0] = 0;
        uint64_t last = 0;
        int code = append_one (ctx, a, &last);
        if (ctx->poisoned) {
            rc = code;
            break;
        }
        res[i].session = a->session;
        res[i].last_seq = code ? 0 : last;
        res[i].code = code;
        if (code)
            res[i].message = msgs[i] =
                strdup (ctx->err[0] ? ctx->err : cm_strerror (code));
    }
    if (rc == 0) {
        proto_appended_batch_t out = {.results = {res, n}};
        rc = reply (ctx, PROTO_APPENDED_BATCH, &out);
    }
    for (size_t i = 0; msgs && i < n; i++) free (msgs[i]);
    free (msgs);
    free (res);
    return rc;
}

static int op_events_range (op_ctx_t *ctx)
{
    const proto_events_range_t *req = ctx->req->body;
    uint64_t limit = req->limit ? req->limit : STORE_RANGE_DEFAULT;
    if (limit > STORE_RANGE_MAX) limit = STORE_RANGE_MAX;
    uint64_t last;
    int rc = last_seq (ctx, &req->session, &last);
    if (rc) return rc;

    proto_events_reply_t out = {.session = req->session,
                                .first_seq = req->after_seq + 1,
                                .last_seq = last,
                                .epoch = ctx->self->epoch};
    uint64_t want = last > req->after_seq ? last - req->after_seq : 0;
    if (want > limit) want = limit;
    proto_bin_t *items = want ? calloc (want, sizeof *items) : NULL;
    if (want && !items) return CM_E_NOMEM;

    //  Seqs below the journal's span are in `events`; the rest in the
    //  journal.
    uint64_t jfirst = 0, jlast = 0;
    bool journaled = store_journal_span (ctx->self, &req->session, &jfirst, &jlast);
    uint64_t db_end = journaled ? jfirst : UINT64_MAX;
    size_t n = 0, bytes = 0;
    if (want && req->after_seq + 1 < db_end) {
        MDB_cursor *cur;
        if ((rc = mdb_cursor_open (ctx->txn, ctx->self->dbi[STORE_DB_EVENTS], &cur))) {
            free (items);
            return store_mdb_err (rc);
        }
        uint8_t key[24];
        memcpy (key, req->session.b, 16);
        store_put_be64 (key + 16, req->after_seq + 1);
        MDB_val k = {sizeof key, key}, v;
        rc = mdb_cursor_get (cur, &k, &v, MDB_SET_RANGE);
        while (rc == 0 && n < want && k.mv_size == 24 &&
               memcmp (k.mv_data, req->session.b, 16) == 0 &&
               store_get_be64 ((const uint8_t *)k.mv_data + 16) < db_end) {
            if (n > 0 && bytes + v.mv_size > STORE_RANGE_MAX_BYTES) break;
            bytes += v.mv_size;
            //  Values point into the map, valid until the transaction ends;
            //  the reply is encoded (copied) before that.
            items[n].data = v.mv_data;
            items[n].size = v.mv_size;
            n++;
            rc = mdb_cursor_get (cur, &k, &v, MDB_NEXT);
        }
        mdb_cursor_close (cur);
        if (rc && rc != MDB_NOTFOUND) {
            free (items);
            return store_mdb_err (rc);
        }
    }
    for (uint64_t seq = req->after_seq + 1 + n; journaled && n < want && seq <= jlast;
         seq++) {
        MDB_val v;
        if (seq < jfirst) break; //  `events` lacks seqs below the journal (see below)
        if ((rc = store_journal_event (ctx->self, ctx->txn, &req->session, seq, &v))) {
            free (items);
            snprintf (ctx->err, sizeof ctx->err, "journal entry for seq %llu is damaged",
                      (unsigned long long)seq);
            return store_mdb_err (rc);
        }
        if (n > 0 && bytes + v.mv_size > STORE_RANGE_MAX_BYTES) break;
        bytes += v.mv_size;
        items[n].data = v.mv_data;
        items[n].size = v.mv_size;
        n++;
    }
    if (want && n == 0) {
        //  Something is stored past after_seq but nothing was read: an
        //  empty page would make a reader ask again forever.
        free (items);
        snprintf (
            ctx->err, sizeof ctx->err,
            "session events after seq %llu are missing from the store; it is damaged",
            (unsigned long long)req->after_seq);
        return CM_E_CORRUPT;
    }
    out.events.items = items;
    out.events.count = n;
    rc = reply (ctx, PROTO_EVENTS, &out);
    free (items);
    return rc;
}

static int op_messages_put (op_ctx_t *ctx)
{
    const proto_messages_put_t *req = ctx->req->body;
    uint8_t key[24];
    memcpy (key, req->session.b, 16);
    //  Count what is stored to refuse a gap.
    MDB_cursor *cur;
    int rc = mdb_cursor_open (ctx->txn, ctx->self->dbi[STORE_DB_MESSAGES], &cur);
    if (rc) return store_mdb_err (rc);
    store_put_be64 (key + 16, UINT64_MAX);
    MDB_val k = {sizeof key, key}, v;
    rc = mdb_cursor_get (cur, &k, &v, MDB_SET_RANGE);
    rc = rc == 0 ? mdb_cursor_get (cur, &k, &v, MDB_PREV)
                 : mdb_cursor_get (cur, &k, &v, MDB_LAST);
    uint64_t count = 0;
    if (rc == 0 && k.mv_size == 24 && memcmp (k.mv_data, req->session.b, 16) == 0)
        count = store_get_be64 ((const uint8_t *)k.mv_data + 16) + 1;
    mdb_cursor_close (cur);
    if (req->from > count) {
        snprintf (ctx->err, sizeof ctx->err,
                  "messages.put from index %llu, but only %llu messages are stored",
                  (unsigned long long)req->from, (unsigned long long)count);
        return CM_E_GAP;
    }
    //  Drop from `from` on, then write the new tail.
    store_put_be64 (key + 16, req->from);
    for (uint64_t i = req->from; i < count; i++) {
        store_put_be64 (key + 16, i);
        MDB_val dk = {sizeof key, key};
        if ((rc = del (ctx, STORE_DB_MESSAGES, &dk)) && rc != CM_E_NOT_FOUND) return rc;
    }
    for (size_t i = 0; i < req->messages.count; i++) {
        store_put_be64 (key + 16, req->from + i);
        MDB_val pk = {sizeof key, key};
        MDB_val pv = {strlen (req->messages.items[i]), (void *)req->messages.items[i]};
        if ((rc = put (ctx, STORE_DB_MESSAGES, &pk, &pv))) return rc;
    }
    return reply (ctx, PROTO_OK, NULL);
}

static int op_messages_get (op_ctx_t *ctx)
{
    const proto_messages_get_t *req = ctx->req->body;
    MDB_cursor *cur;
    int rc = mdb_cursor_open (ctx->txn, ctx->self->dbi[STORE_DB_MESSAGES], &cur);
    if (rc) return store_mdb_err (rc);
    size_t n = 0, cap = 16;
    const char **items = malloc (cap * sizeof *items);
    char *texts = NULL; //  NUL-terminated copies, packed
    size_t tlen = 0;
    size_t *offs = malloc (cap * sizeof *offs);
    bool oom = !items || !offs;
    MDB_val k = {16, (void *)req->session.b}, v;
    rc = mdb_cursor_get (cur, &k, &v, MDB_SET_RANGE);
    while (rc == 0 && !oom && k.mv_size == 24 &&
           memcmp (k.mv_data, req->session.b, 16) == 0) {
        if (n == cap) {
            cap *= 2;
            const char **ni = realloc (items, cap * sizeof *items);
            size_t *no = realloc (offs, cap * sizeof *offs);
            if (ni) items = ni;
            if (no) offs = no;
            if ((oom = !ni || !no)) break;
        }
        char *nt = realloc (texts, tlen + v.mv_size + 1);
        if ((oom = !nt)) break;
        texts = nt;
        memcpy (texts + tlen, v.mv_data, v.mv_size);
        texts[tlen + v.mv_size] = '\0';
        offs[n++] = tlen;
        tlen += v.mv_size + 1;
        rc = mdb_cursor_get (cur, &k, &v, MDB_NEXT);
    }
    mdb_cursor_close (cur);
    //  rc 0 here means the cursor reached another session's key: the end.
    if (oom)
        rc = CM_E_NOMEM;
    else if (rc == 0 || rc == MDB_NOTFOUND)
        rc = 0;
    else
        rc = store_mdb_err (rc);
    if (rc == 0) {
        for (size_t i = 0; i < n; i++) items[i] = texts + offs[i];
        proto_messages_reply_t out = {.session = req->session, .messages = {items, n}};
        rc = reply (ctx, PROTO_MESSAGES, &out);
    }
    free (items);
    free (offs);
    free (texts);
    return rc;
}

//  tasks_by_state key: state ‖ 0 ‖ id.
static size_t task_index_key (uint8_t *key, size_t cap, const char *state,
                              const cm_uuid_t *id)
{
    size_t sl = strlen (state);
    if (sl + 17 > cap) sl = cap - 17;
    memcpy (key, state, sl);
    key[sl] = 0;
    memcpy (key + sl + 1, id->b, 16);
    return sl + 17;
}

static int op_task_put (op_ctx_t *ctx)
{
    const proto_task_put_t *req = ctx->req->body;
    uint8_t ikey[128];
    MDB_val k = {16, (void *)req->task->id.b}, v;
    //  Move the state index entry from the old state to the new one.
    if (mdb_get (ctx->txn, ctx->self->dbi[STORE_DB_TASKS], &k, &v) == 0) {
        proto_task_rec_t *old;
        int rc = decode_value (ctx, &proto_rec_task_rec, &v, (void **)&old);
        if (rc == 0) {
            MDB_val ik = {task_index_key (ikey, sizeof ikey, old->state, &old->id), ikey};
            if ((rc = del (ctx, STORE_DB_TASKS_BY_STATE, &ik)) && rc != CM_E_NOT_FOUND)
                return rc;
        }
    }
    MDB_val ik = {task_index_key (ikey, sizeof ikey, req->task->state, &req->task->id),
                  ikey};
    MDB_val empty = {0, ""};
    int rc = put (ctx, STORE_DB_TASKS_BY_STATE, &ik, &empty);
    return rc ? rc : coll_put (ctx, &s_tasks);
}

static int op_task_get (op_ctx_t *ctx)
{
    return coll_get (ctx, &s_tasks);
}

static int op_task_list (op_ctx_t *ctx)
{
    return coll_list (ctx, &s_tasks);
}

static int op_task_delete (op_ctx_t *ctx)
{
    const proto_id_req_t *req = ctx->req->body;
    MDB_val k = {16, (void *)req->id.b};
    proto_task_rec_t *old;
    MDB_val raw;
    int rc = coll_lookup (ctx, &s_tasks, &k, (void **)&old, &raw);
    if (rc) return rc;
    uint8_t ikey[128];
    MDB_val ik = {task_index_key (ikey, sizeof ikey, old->state, &old->id), ikey};
    if ((rc = del (ctx, STORE_DB_TASKS_BY_STATE, &ik)) && rc != CM_E_NOT_FOUND) return rc;
    return coll_delete (ctx, &s_tasks);
}

static int op_template_put (op_ctx_t *ctx)
{
    return coll_put (ctx, &s_templates);
}

static int op_template_get (op_ctx_t *ctx)
{
    return coll_get (ctx, &s_templates);
}

static int op_template_list (op_ctx_t *ctx)
{
    return coll_list (ctx, &s_templates);
}

static int op_template_delete (op_ctx_t *ctx)
{
    return coll_delete (ctx, &s_templates);
}

static int op_key_put (op_ctx_t *ctx)
{
    return coll_put (ctx, &s_keys);
}

static int op_key_get (op_ctx_t *ctx)
{
    return coll_get (ctx, &s_keys);
}

static int op_key_list (op_ctx_t *ctx)
{
    //  Keys are ordered by hash, so paging by `after` (an id) does not
    //  apply; a tenant has few keys and the page limit still holds.
    return coll_list (ctx, &s_keys);
}

static int op_key_delete (op_ctx_t *ctx)
{
    return coll_delete (ctx, &s_keys);
}

//  usage key: tenant ‖ 0 ‖ day (big-endian u32).
static int usage_key (uint8_t *key, size_t cap, const char *tenant, uint64_t day,
                      size_t *len)
{
    size_t tl = strlen (tenant);
    if (tl + 5 > cap || day > UINT32_MAX) return CM_E_INVALID;
    memcpy (key, tenant, tl);
    key[tl] = 0;
    for (int i = 0; i < 4; i++) key[tl + 1 + i] = (uint8_t)(day >> (24 - 8 * i));
    *len = tl + 5;
    return 0;
}

//  Unix ms in a UUIDv7's first 48 bits.
static uint64_t uuid7_ms (const cm_uuid_t *id)
{
    uint64_t ms = 0;
    for (int i = 0; i < 6; i++) ms = ms << 8 | id->b[i];
    return ms;
}

//  Drop a few usage_applied entries whose id is older than
//  STORE_USAGE_ID_KEEP_MS.  Keys start with the id, a UUIDv7, so the oldest
//  come first and each add prunes at most STORE_USAGE_ID_PRUNE of them: the
//  database stays about one retention window's worth of adds.
static int prune_applied (op_ctx_t *ctx, uint64_t now_ms)
{
    MDB_cursor *cur;
    int rc = mdb_cursor_open (ctx->txn, ctx->self->dbi[STORE_DB_USAGE_APPLIED], &cur);
    if (rc) return store_mdb_err (rc);
    MDB_val k, v;
    int n = 0;
    rc = mdb_cursor_get (cur, &k, &v, MDB_FIRST);
    while (rc == 0 && n < STORE_USAGE_ID_PRUNE && k.mv_size >= 16 &&
           uuid7_ms (k.mv_data) + STORE_USAGE_ID_KEEP_MS < now_ms) {
        if ((rc = mdb_cursor_del (cur, 0))) break;
        n++;
        rc = mdb_cursor_get (cur, &k, &v, MDB_NEXT);
    }
    mdb_cursor_close (cur);
    if (rc == 0 || rc == MDB_NOTFOUND) return 0;
    return poison (ctx, rc);
}

/*  An add with an id is applied once per row: the id ‖ row key goes into
    usage_applied in this same transaction as the counters, and an add
    whose id ‖ row is there already is acknowledged without counting.  A
    peer that resends (the session service resends every unanswered store
    call) therefore counts once, across store restarts too.  */
static int op_usage_add (op_ctx_t *ctx)
{
    const proto_usage_add_t *req = ctx->req->body;
    uint8_t key[300];
    size_t klen;
    if (usage_key (key, sizeof key, req->tenant, req->day, &klen)) {
        snprintf (ctx->err, sizeof ctx->err, "tenant too long or day not YYYYMMDD");
        return CM_E_INVALID;
    }
    bool once = !cm_uuid_is_nil (&req->id);
    uint8_t akey[16 + sizeof key];
    MDB_val ak = {16 + klen, akey}, v;
    if (once) {
        uint64_t now = (uint64_t)cm_time_ms ();
        if ((req->id.b[6] >> 4) != 7 || uuid7_ms (&req->id) > now + 86400000ull) {
            snprintf (ctx->err, sizeof ctx->err,
                      "usage id must be a UUIDv7 not more than a day ahead of the "
                      "store's clock");
            return CM_E_INVALID;
        }
        memcpy (akey, req->id.b, 16);
        memcpy (akey + 16, key, klen);
        int rc = mdb_get (ctx->txn, ctx->self->dbi[STORE_DB_USAGE_APPLIED], &ak, &v);
        if (rc == 0) return reply (ctx, PROTO_OK, NULL); //  applied before
        if (rc != MDB_NOTFOUND) return store_mdb_err (rc);
    }
    MDB_val k = {klen, key};
    proto_usage_t sum = {0};
    proto_usage_rec_t row = {.tenant = req->tenant, .day = req->day, .usage = &sum};
    if (mdb_get (ctx->txn, ctx->self->dbi[STORE_DB_USAGE], &k, &v) == 0) {
        proto_usage_rec_t *old;
        int rc = decode_value (ctx, &proto_rec_usage_rec, &v, (void **)&old);
        if (rc) return rc;
        sum = *old->usage;
        row.turns = old->turns;
    }
    sum.input_tokens += req->usage->input_tokens;
    sum.output_tokens += req->usage->output_tokens;
    sum.cache_tokens += req->usage->cache_tokens;
    sum.cost_micros += req->usage->cost_micros;
    sum.model_calls += req->usage->model_calls;
    row.turns += req->turns;
    int rc = encode_value (ctx, &proto_rec_usage_rec, &row, &v);
    if (rc == 0) rc = put (ctx, STORE_DB_USAGE, &k, &v);
    if (rc == 0 && once) rc = put (ctx, STORE_DB_USAGE_APPLIED, &ak, &(MDB_val){0, ""});
    if (rc == 0 && once) rc = prune_applied (ctx, (uint64_t)cm_time_ms ());
    return rc ? rc : reply (ctx, PROTO_OK, NULL);
}

static int op_usage_get (op_ctx_t *ctx)
{
    const proto_usage_get_t *req = ctx->req->body;
    uint8_t from[300], to[300];
    size_t flen, tlen;
    if (usage_key (from, sizeof from, req->tenant, req->from_day, &flen) ||
        usage_key (to, sizeof to, req->tenant, req->to_day, &tlen)) {
        snprintf (ctx->err, sizeof ctx->err, "tenant too long or day not YYYYMMDD");
        return CM_E_INVALID;
    }
    enum { MAX_ROWS = 1000 };
    proto_usage_rec_t *rows = calloc (MAX_ROWS, sizeof *rows);
    if (!rows) return CM_E_NOMEM;
    MDB_cursor *cur;
    int rc = mdb_cursor_open (ctx->txn, ctx->self->dbi[STORE_DB_USAGE], &cur);
    if (rc) {
        free (rows);
        return store_mdb_err (rc);
    }
    MDB_val k = {flen, from}, v;
    size_t n = 0;
    rc = mdb_cursor_get (cur, &k, &v, MDB_SET_RANGE);
    while (rc == 0 && n < MAX_ROWS && k.mv_size == tlen &&
           memcmp (k.mv_data, to, tlen) <= 0) {
        proto_usage_rec_t *row;
        if ((rc = decode_value (ctx, &proto_rec_usage_rec, &v, (void **)&row))) break;
        rows[n++] = *row;
        rc = mdb_cursor_get (cur, &k, &v, MDB_NEXT);
    }
    mdb_cursor_close (cur);
    if (rc == MDB_NOTFOUND || rc == 0) {
        proto_usage_reply_t out = {.rows = {rows, n}};
        rc = reply (ctx, PROTO_USAGE, &out);
    } else if (rc != CM_E_CORRUPT)
        rc = store_mdb_err (rc);
    free (rows);
    return rc;
}

static int op_stats (op_ctx_t *ctx)
{
    proto_store_stats_t out = {0};
    proto_db_stat_t dbs[STORE_DB_COUNT];
    int rc = store_stats (ctx->self, ctx->txn, &out, dbs);
    return rc ? rc : reply (ctx, PROTO_STATS_REPLY, &out);
}

//  Runs outside any transaction, after the batch committed.
static int op_backup (op_ctx_t *ctx)
{
    const proto_backup_req_t *req = ctx->req->body;
    proto_backup_reply_t out = {.path = req->path};
    int rc = store_backup (ctx->self, req->path, &out.bytes, ctx->err, sizeof ctx->err);
    return rc ? rc : reply (ctx, PROTO_BACKUP_REPLY, &out);
}

/* ---------------------------------------------------------------- */
/*  Dispatch table, indexed by type id                               */

typedef struct {
    op_fn fn;
    bool writes; //  needs the write transaction to commit
    bool no_txn; //  runs after the commit, outside any transaction
} op_t;

static const op_t s_ops[PROTO_MAX_TYPE] = {
    [PROTO_STORE_SESSION_PUT] = {op_session_put, true, false},
    [PROTO_STORE_SESSION_GET] = {op_session_get, false, false},
    [PROTO_STORE_SESSION_LIST] = {op_session_list, false, false},
    [PROTO_STORE_SESSION_DELETE] = {op_session_delete, true, false},
    [PROTO_STORE_EVENTS_APPEND] = {op_events_append, true, false},
    [PROTO_STORE_EVENTS_APPEND_BATCH] = {op_events_append_batch, true, false},
    [PROTO_STORE_EVENTS_RANGE] = {op_events_range, false, false},
    [PROTO_STORE_MESSAGES_PUT] = {op_messages_put, true, false},
    [PROTO_STORE_MESSAGES_GET] = {op_messages_get, false, false},
    [PROTO_STORE_TASK_PUT] = {op_task_put, true, false},
    [PROTO_STORE_TASK_GET] = {op_task_get, false, false},
    [PROTO_STORE_TASK_LIST] = {op_task_list, false, false},
    [PROTO_STORE_TASK_DELETE] = {op_task_delete, true, false},
    [PROTO_STORE_TEMPLATE_PUT] = {op_template_put, true, false},
    [PROTO_STORE_TEMPLATE_GET] = {op_template_get, false, false},
    [PROTO_STORE_TEMPLATE_LIST] = {op_template_list, false, false},
    [PROTO_STORE_TEMPLATE_DELETE] = {op_template_delete, true, false},
    [PROTO_STORE_KEY_PUT] = {op_key_put, true, false},
    [PROTO_STORE_KEY_GET] = {op_key_get, false, false},
    [PROTO_STORE_KEY_LIST] = {op_key_list, false, false},
    [PROTO_STORE_KEY_DELETE] = {op_key_delete, true, false},
    [PROTO_STORE_USAGE_ADD] = {op_usage_add, true, false},
    [PROTO_STORE_USAGE_GET] = {op_usage_get, false, false},
    [PROTO_STORE_STATS] = {op_stats, false, false},
    [PROTO_STORE_BACKUP] = {op_backup, false, true},
};

/* ---------------------------------------------------------------- */
/*  Group commit                                                     */

//  Encode an error reply for request i.
static void reply_error (proto_buf_t *out, uint64_t corr, int code, const char *detail)
{
    if (proto_encode_error (out, corr, code, detail && *detail ? detail : NULL))
        proto_encode_error (out, corr, CM_E_INTERNAL, NULL);
}

//  Run one request inside txn (NULL for no_txn ops).  Returns 1 if the
//  request wrote, 0 if not, or a negative code if the transaction is
//  poisoned.  The reply lands in out at reqs[i].reply_off.
static int run_one (store_t *self, MDB_txn *txn, proto_msg_t *msg, store_req_t *r,
                    proto_buf_t *out, bool deferred_pass)
{
    r->reply_off = out->size;
    r->reply_len = 0;
    int rc = proto_decode (msg, r->data, r->size);
    if (rc) {
        //  Without a correlation id nobody can match the reply; send it
        //  with corr 0 anyway so the peer sees something went wrong.
        reply_error (out, msg->corr_valid ? msg->corr : 0, rc, proto_msg_error (msg));
        r->reply_len = out->size - r->reply_off;
        return 0;
    }
    const op_t *op = &s_ops[msg->type];
    if (!op->fn) {
        char detail[128];
        snprintf (detail, sizeof detail, "%s is not a store request",
                  proto_type_name (msg->type));
        reply_error (out, msg->corr, CM_E_UNKNOWN_TYPE, detail);
        r->reply_len = out->size - r->reply_off;
        return 0;
    }
    if (op->no_txn != deferred_pass) return 0; //  handled in the other pass

    op_ctx_t ctx = {.self = self, .txn = txn, .req = msg, .out = out};
    proto_msg_clear (&self->rec_msg);
    size_t mark = out->size;
    rc = op->fn (&ctx);
    if (ctx.poisoned) return rc ? rc : CM_E_IO;
    if (rc) {
        out->size = mark; //  drop a half-written reply
        reply_error (out, msg->corr, rc, ctx.err);
    }
    r->reply_len = out->size - r->reply_off;
    return rc == 0 && op->writes;
}

//  Begin a write transaction (and the journal's undo log with it).
static int txn_begin (store_t *self, MDB_txn **txn)
{
    int rc = mdb_txn_begin (self->env, NULL, 0, txn);
    if (rc == 0) store_journal_begin (self);
    return rc;
}

static void txn_abort (store_t *self, MDB_txn *txn)
{
    mdb_txn_abort (txn);
    store_journal_end (self, false);
}

//  Commit what the batch wrote, after folding the journal; a batch that
//  wrote nothing is aborted (nothing to sync).  Returns 0 or an LMDB code.
static int commit (store_t *self, MDB_txn *txn, bool wrote)
{
    if (!wrote) {
        txn_abort (self, txn);
        return 0;
    }
    uint64_t t0 = cm_mono_ns ();
    int rc = store_journal_fold (self, txn);
    if (rc) {
        cm_warn ("folding the journal failed: %s", mdb_strerror (rc));
        txn_abort (self, txn);
        return rc;
    }
    rc = mdb_txn_commit (txn);
    store_journal_end (self, rc == 0);
    if (rc == 0) {
        self->commits++;
        store_note_commit (self, (cm_mono_ns () - t0) / 1000);
    }
    return rc;
}

//  All requests in one transaction.  Returns 0 or the LMDB-level failure.
static int run_grouped (store_t *self, store_req_t *reqs, size_t count, proto_buf_t *out,
                        proto_msg_t *msg)
{
    MDB_txn *txn;
    int rc = txn_begin (self, &txn);
    if (rc) return store_mdb_err (rc);
    bool wrote = false;
    for (size_t i = 0; i < count; i++) {
        rc = run_one (self, txn, msg, &reqs[i], out, false);
        if (rc < 0) {
            txn_abort (self, txn);
            return rc;
        }
        wrote |= rc == 1;
    }
    rc = commit (self, txn, wrote);
    return rc ? store_mdb_err (rc) : 0;
}

//  Fallback: one transaction per request, so a failing write costs only
//  its own request.
static void run_each (store_t *self, store_req_t *reqs, size_t count, proto_buf_t *out,
                      proto_msg_t *msg)
{
    for (size_t i = 0; i < count; i++) {
        for (int attempt = 0;; attempt++) {
            size_t mark = out->size;
            MDB_txn *txn;
            int rc = txn_begin (self, &txn);
            if (rc == 0) {
                rc = run_one (self, txn, msg, &reqs[i], out, false);
                if (rc >= 0)
                    rc = store_mdb_err (commit (self, txn, rc == 1));
                else
                    txn_abort (self, txn);
            } else
                rc = store_mdb_err (rc);
            if (rc == 0) break;
            out->size = mark;
            if (rc == CM_E_FULL && attempt == 0 && store_grow (self) == 0) continue;
            reqs[i].reply_off = out->size;
            reply_error (out, msg->corr_valid ? msg->corr : 0, rc,
                         rc == CM_E_FULL ? NULL
                                         : "the store could not write this request");
            reqs[i].reply_len = out->size - reqs[i].reply_off;
            break;
        }
    }
}

int store_batch (store_t *self, store_req_t *reqs, size_t count, proto_buf_t *replies)
{
    proto_msg_t msg;
    proto_msg_init (&msg);
    proto_buf_reset (replies);
    self->requests += count;

    int rc = run_grouped (self, reqs, count, replies, &msg);
    while (rc == CM_E_FULL && store_grow (self) == 0) {
        proto_buf_reset (replies);
        rc = run_grouped (self, reqs, count, replies, &msg);
    }
    if (rc) {
        cm_warn ("group commit of %zu requests failed (%s); retrying one by one", count,
                 cm_strerror (rc));
        proto_buf_reset (replies);
        run_each (self, reqs, count, replies, &msg);
    }
    //  Operations that must run outside a transaction (backup) go last,
    //  after everything before them is durable.
    for (size_t i = 0; i < count; i++) {
        if (reqs[i].reply_len) continue;
        run_one (self, NULL, &msg, &reqs[i], replies, true);
    }
    proto_msg_fini (&msg);
    return 0;
}
