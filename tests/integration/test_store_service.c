/*  test_store_service.c - the real corral-store, over ZeroMQ only.

    Usage: test_store_service <path to corral-store>

    Starts the binary on a fresh data dir and an ipc endpoint, then checks
    the store API as a peer sees it: session put/get, pipelined appends to
    several sessions matched by correlation id, range reads (whole and
    paged), idempotent resends, gaps, hostile frames, a non-store message,
    a hot backup that is itself a working store, a clean SIGTERM, a restart
    that keeps data and epoch, and a damaged data file that is refused at
    start with a message that says so.
*/
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zmq.h>

#include "cm_id.h"
#include "cm_time.h"
#include "cm_zmq.h"
#include "it_store.h"

#define SESSIONS       5  //  sessions written in the pipelining step
#define REQS_PER       10 //  append requests per session
#define EVENTS_PER_REQ 3
#define CALL_MS        5000 //  bound on any one request

typedef struct {
    it_store_t *store;
    proto_rpc_t *rpc;
    proto_msg_t reply;
    proto_msg_t scratch;
    char epoch[CM_UUID_STR_LEN];
    cm_uuid_t session;        //  the session record of step 1
    cm_uuid_t sids[SESSIONS]; //  sessions with events
    uint64_t last[SESSIONS];  //  their last seq
    cm_uuid_t turn;           //  the usage.add id of test_usage_once
} test_t;

/* ---------------------------------------------------------------- */
/*  Helpers                                                          */

//  Encode events [first, first + count) of sid into bufs and point
//  list at them.  items must hold count entries.
static void make_events (proto_buf_t *buf, proto_bin_t *items, const cm_uuid_t *sid,
                         uint64_t first, size_t count)
{
    size_t offs[64];
    IT_CHECK (count <= 64, "batch too large for the helper");
    proto_buf_reset (buf);
    for (size_t i = 0; i < count; i++) {
        offs[i] = buf->size;
        it_event (buf, sid, first + i);
    }
    for (size_t i = 0; i < count; i++) {
        size_t end = i + 1 < count ? offs[i + 1] : buf->size;
        items[i] = (proto_bin_t){(const uint8_t *)buf->data + offs[i], end - offs[i]};
    }
}

//  events.append as one call; returns the call's code, *last gets
//  appended.last_seq on success.
static int append (test_t *t, const cm_uuid_t *sid, uint64_t first, size_t count,
                   uint64_t *last)
{
    proto_buf_t buf = {0};
    proto_bin_t items[64];
    make_events (&buf, items, sid, first, count);
    proto_events_append_t req = {
        .session = *sid, .first_seq = first, .events = {items, count}};
    int rc = proto_rpc_call (t->rpc, PROTO_STORE_EVENTS_APPEND, &req, &t->reply, CALL_MS);
    proto_buf_fini (&buf);
    if (rc == 0) {
        IT_CHECK (t->reply.type == PROTO_APPENDED, "append answered with %s",
                  proto_type_name (t->reply.type));
        const proto_appended_t *ack = proto_body (&t->reply, appended);
        IT_CHECK (memcmp (ack->session.b, sid->b, 16) == 0, "ack names another session");
        if (last) *last = ack->last_seq;
    }
    return rc;
}

//  Read all events of sid with pages of `limit` (0: the default) and check
//  there are exactly `expect`, each the event sent for its seq.
static void check_range (test_t *t, const cm_uuid_t *sid, uint64_t expect, uint64_t limit)
{
    uint64_t after = 0;
    char id[CM_UUID_STR_LEN];
    cm_uuid_fmt (sid, id);
    while (true) {
        proto_events_range_t req = {.session = *sid, .after_seq = after, .limit = limit};
        IT_OK (
            proto_rpc_call (t->rpc, PROTO_STORE_EVENTS_RANGE, &req, &t->reply, CALL_MS));
        IT_CHECK (t->reply.type == PROTO_EVENTS, "range answered with %s",
                  proto_type_name (t->reply.type));
        const proto_events_reply_t *ev = proto_body (&t->reply, events_reply);
        IT_CHECK (memcmp (ev->session.b, sid->b, 16) == 0, "range names another session");
        IT_CHECK (ev->last_seq == expect, "%s: last_seq %llu, expected %llu", id,
                  (unsigned long long)ev->last_seq, (unsigned long long)expect);
        IT_CHECK (strcmp (ev->epoch, t->epoch) == 0, "range epoch %s, stats epoch %s",
                  ev->epoch, t->epoch);
        if (after >= expect) {
            IT_CHECK (ev->events.count == 0, "%s: %zu events after the last one", id,
                      ev->events.count);
            return;
        }
        uint64_t want = expect - after;
        if (limit && want > limit) want = limit;
        IT_CHECK (ev->first_seq == after + 1, "%s: first_seq %llu after %llu", id,
                  (unsigned long long)ev->first_seq, (unsigned long long)after);
        IT_CHECK (ev->events.count == want, "%s: %zu events after %llu, expected %llu",
                  id, ev->events.count, (unsigned long long)after,
                  (unsigned long long)want);
        for (size_t i = 0; i < ev->events.count; i++) {
            uint64_t seq = after + 1 + i;
            const char *why = it_event_check (&t->scratch, ev->events.items[i].data,
                                              ev->events.items[i].size, sid, seq);
            IT_CHECK (!why, "%s seq %llu: %s", id, (unsigned long long)seq, why);
        }
        after += ev->events.count;
    }
}

static void step (const char *what)
{
    printf ("ok - %s\n", what);
    fflush (stdout);
}

/* ---------------------------------------------------------------- */
/*  Steps                                                            */

static void test_session_round_trip (test_t *t)
{
    cm_uuid7 (&t->session);
    int64_t now = cm_time_ms ();
    proto_usage_t usage = {.input_tokens = 12, .output_tokens = 34};
    proto_session_rec_t rec = {.id = t->session,
                               .tenant = "acme",
                               .cwd = "/srv/work/acme",
                               .title = "integration test",
                               .model = "gpt-test",
                               .state = "ready",
                               .created_ms = now,
                               .turns = 3,
                               .usage = &usage};
    proto_session_put_t put = {.session = &rec};
    IT_OK (proto_rpc_call (t->rpc, PROTO_STORE_SESSION_PUT, &put, &t->reply, CALL_MS));
    IT_CHECK (t->reply.type == PROTO_OK, "put answered with %s",
              proto_type_name (t->reply.type));

    proto_id_req_t get = {.id = t->session};
    IT_OK (proto_rpc_call (t->rpc, PROTO_STORE_SESSION_GET, &get, &t->reply, CALL_MS));
    IT_CHECK (t->reply.type == PROTO_SESSION, "get answered with %s",
              proto_type_name (t->reply.type));
    const proto_session_rec_t *got = proto_body (&t->reply, session_reply)->session;
    IT_CHECK (memcmp (got->id.b, t->session.b, 16) == 0, "get: another id");
    IT_CHECK (strcmp (got->tenant, "acme") == 0, "get: tenant '%s'", got->tenant);
    IT_CHECK (strcmp (got->cwd, "/srv/work/acme") == 0, "get: cwd '%s'", got->cwd);
    IT_CHECK (got->title && strcmp (got->title, "integration test") == 0, "get: title");
    IT_CHECK (got->model && strcmp (got->model, "gpt-test") == 0, "get: model");
    IT_CHECK (strcmp (got->state, "ready") == 0, "get: state '%s'", got->state);
    IT_CHECK (got->created_ms == now && got->turns == 3, "get: created_ms/turns");
    IT_CHECK (got->usage && got->usage->input_tokens == 12 &&
                  got->usage->output_tokens == 34,
              "get: usage");

    cm_uuid_t other;
    cm_uuid7 (&other);
    get.id = other;
    int rc = proto_rpc_call (t->rpc, PROTO_STORE_SESSION_GET, &get, &t->reply, CALL_MS);
    IT_CHECK (rc == CM_E_NOT_FOUND, "get of an unknown session: %s", cm_errname (rc));
    step ("session.put + session.get round trip; unknown id is not_found");
}

static void test_pipelined_appends (test_t *t)
{
    enum { TOTAL = SESSIONS * REQS_PER };
    struct {
        uint64_t corr;
        int s;
        uint64_t last;
        bool answered;
    } sent[TOTAL];
    proto_buf_t buf = {0};
    proto_bin_t items[EVENTS_PER_REQ];
    for (int s = 0; s < SESSIONS; s++) cm_uuid7 (&t->sids[s]);

    //  Everything goes out before any reply is read: per session in seq
    //  order, sessions interleaved.
    size_t n = 0;
    for (int r = 0; r < REQS_PER; r++) {
        for (int s = 0; s < SESSIONS; s++, n++) {
            uint64_t first = (uint64_t)r * EVENTS_PER_REQ + 1;
            make_events (&buf, items, &t->sids[s], first, EVENTS_PER_REQ);
            proto_events_append_t req = {.session = t->sids[s],
                                         .first_seq = first,
                                         .events = {items, EVENTS_PER_REQ}};
            IT_OK (proto_rpc_send (t->rpc, PROTO_STORE_EVENTS_APPEND, &req, CALL_MS,
                                   &sent[n].corr));
            sent[n].s = s;
            sent[n].last = first + EVENTS_PER_REQ - 1;
            sent[n].answered = false;
        }
    }
    proto_buf_fini (&buf);

    int64_t deadline = it_now_ms () + 10000;
    for (size_t got = 0; got < TOTAL; got++) {
        int64_t left = deadline - it_now_ms ();
        IT_CHECK (left > 0, "only %zu of %d pipelined appends answered", got, TOTAL);
        IT_OK (proto_rpc_recv (t->rpc, &t->reply, (int)left));
        size_t i = 0;
        while (i < TOTAL && sent[i].corr != t->reply.corr) i++;
        IT_CHECK (i < TOTAL, "reply with an unknown corr %llu",
                  (unsigned long long)t->reply.corr);
        IT_CHECK (!sent[i].answered, "two replies for corr %llu",
                  (unsigned long long)t->reply.corr);
        sent[i].answered = true;
        IT_CHECK (t->reply.type == PROTO_APPENDED, "append %zu answered with %s (%s)", i,
                  proto_type_name (t->reply.type),
                  t->reply.type == PROTO_ERROR ? proto_body (&t->reply, error)->message
                                               : "");
        const proto_appended_t *ack = proto_body (&t->reply, appended);
        IT_CHECK (memcmp (ack->session.b, t->sids[sent[i].s].b, 16) == 0,
                  "ack for corr %llu names another session",
                  (unsigned long long)t->reply.corr);
        IT_CHECK (ack->last_seq == sent[i].last, "ack last_seq %llu, sent up to %llu",
                  (unsigned long long)ack->last_seq, (unsigned long long)sent[i].last);
    }
    for (int s = 0; s < SESSIONS; s++) t->last[s] = REQS_PER * EVENTS_PER_REQ;
    step ("50 events.append to 5 sessions pipelined; every ack matched by corr");
}

static void test_range (test_t *t)
{
    for (int s = 0; s < SESSIONS; s++) {
        check_range (t, &t->sids[s], t->last[s], 0);
        check_range (t, &t->sids[s], t->last[s], 7); //  pages of 7
    }
    //  After the last one, and far past it: nothing, with last_seq.
    proto_events_range_t req = {.session = t->sids[0], .after_seq = 1000, .limit = 5};
    IT_OK (proto_rpc_call (t->rpc, PROTO_STORE_EVENTS_RANGE, &req, &t->reply, CALL_MS));
    const proto_events_reply_t *ev = proto_body (&t->reply, events_reply);
    IT_CHECK (ev && ev->events.count == 0 && ev->last_seq == t->last[0],
              "range after 1000");
    //  An unknown session has no events and last_seq 0.
    cm_uuid7 (&req.session);
    req.after_seq = 0;
    IT_OK (proto_rpc_call (t->rpc, PROTO_STORE_EVENTS_RANGE, &req, &t->reply, CALL_MS));
    ev = proto_body (&t->reply, events_reply);
    IT_CHECK (ev && ev->events.count == 0 && ev->last_seq == 0,
              "range of unknown session");
    step ("events.range returns exactly what was appended (whole and in pages of 7)");
}

static void test_idempotent (test_t *t)
{
    uint64_t last = 0;
    //  A resend of stored seqs is acknowledged with the stored last_seq.
    IT_OK (append (t, &t->sids[0], 1, 3, &last));
    IT_CHECK (last == t->last[0], "resend of 1..3: last_seq %llu",
              (unsigned long long)last);
    //  Overlapping: 29..32 stores only 31 and 32.
    IT_OK (append (t, &t->sids[0], t->last[0] - 1, 4, &last));
    IT_CHECK (last == t->last[0] + 2, "overlap: last_seq %llu", (unsigned long long)last);
    t->last[0] = last;

    //  A resend with other bytes for a stored seq is acknowledged but not
    //  stored: the first write of a seq wins.
    proto_buf_t buf = {0};
    it_event (&buf, &t->sids[1], 5); //  session 1's event 5 ...
    proto_bin_t item = {(const uint8_t *)buf.data, buf.size};
    proto_events_append_t req = {
        .session = t->sids[0], .first_seq = 1, .events = {&item, 1}};
    IT_OK (proto_rpc_call (t->rpc, PROTO_STORE_EVENTS_APPEND, &req, &t->reply, CALL_MS));
    proto_buf_fini (&buf);
    IT_CHECK (proto_body (&t->reply, appended)->last_seq == t->last[0],
              "foreign resend: last_seq");

    check_range (t, &t->sids[0], t->last[0], 0);
    check_range (t, &t->sids[1], t->last[1], 0);
    step ("idempotent resend: acked, not duplicated, not rewritten; overlap appends the "
          "tail");
}

static void test_gap (test_t *t)
{
    int rc = append (t, &t->sids[1], t->last[1] + 2, 1, NULL);
    IT_CHECK (rc == CM_E_GAP, "append past the end: %s, expected gap", cm_errname (rc));
    IT_CHECK (t->reply.type == PROTO_ERROR, "gap reply is a %s",
              proto_type_name (t->reply.type));
    char want[64];
    snprintf (want, sizeof want, "resend from seq %llu",
              (unsigned long long)t->last[1] + 1);
    const char *msg = proto_body (&t->reply, error)->message;
    IT_CHECK (strstr (msg, want), "gap message '%s' does not say '%s'", msg, want);

    rc = append (t, &t->sids[1], 0, 1, NULL);
    IT_CHECK (rc == CM_E_INVALID, "first_seq 0: %s, expected invalid", cm_errname (rc));
    check_range (t, &t->sids[1], t->last[1], 0); //  nothing was written
    step ("append past the end is CM_E_GAP with the seq to resend from; seq 0 invalid");
}

//  Send one raw frame on a bare DEALER; returns true with the decoded
//  reply if one arrives within wait_ms.
static bool raw_exchange (void *dealer, const void *data, size_t size, bool more_frame,
                          proto_msg_t *reply, zmq_msg_t *frame, int wait_ms)
{
    zmq_pollitem_t out = {dealer, 0, ZMQ_POLLOUT, 0};
    IT_CHECK (zmq_poll (&out, 1, CALL_MS) == 1, "raw dealer not connected");
    IT_CHECK (zmq_send (dealer, data, size, more_frame ? ZMQ_SNDMORE : 0) >= 0,
              "raw send: %s", zmq_strerror (errno));
    if (more_frame)
        IT_CHECK (zmq_send (dealer, "x", 1, 0) >= 0, "raw send: %s",
                  zmq_strerror (errno));
    zmq_pollitem_t in = {dealer, 0, ZMQ_POLLIN, 0};
    if (zmq_poll (&in, 1, wait_ms) != 1) return false;
    zmq_msg_close (frame);
    zmq_msg_init (frame);
    IT_CHECK (zmq_msg_recv (frame, dealer, 0) >= 0, "raw recv");
    IT_CHECK (!zmq_msg_more (frame), "reply has more than one frame");
    int rc = proto_decode (reply, zmq_msg_data (frame), zmq_msg_size (frame));
    IT_CHECK (rc == 0, "the store's reply does not decode: %s", cm_errname (rc));
    return true;
}

static void test_hostile_frames (test_t *t)
{
    void *dealer = cm_zmq_socket (ZMQ_DEALER, 0);
    IT_CHECK (dealer && cm_zmq_connect (dealer, t->store->endpoint) == 0, "raw dealer");
    zmq_msg_t frame;
    zmq_msg_init (&frame);

    //  Random bytes (0xc1 first: a byte msgpack never uses, so it cannot
    //  be a valid message by chance).
    uint8_t junk[256];
    cm_random (junk, sizeof junk);
    junk[0] = 0xc1;
    IT_CHECK (raw_exchange (dealer, junk, sizeof junk, false, &t->reply, &frame, CALL_MS),
              "no reply to a garbage frame");
    IT_CHECK (t->reply.type == PROTO_ERROR, "garbage answered with %s",
              proto_type_name (t->reply.type));
    IT_CHECK (proto_body (&t->reply, error)->code < 0, "garbage: error code");

    //  Random bytes after a msgpack array header (the decoder walks them).
    junk[0] = 0x94;
    IT_CHECK (raw_exchange (dealer, junk, sizeof junk, false, &t->reply, &frame, CALL_MS),
              "no reply to a garbage array");
    IT_CHECK (t->reply.type == PROTO_ERROR, "garbage array answered with %s",
              proto_type_name (t->reply.type));

    //  An empty frame.
    IT_CHECK (raw_exchange (dealer, "", 0, false, &t->reply, &frame, CALL_MS),
              "no reply to an empty frame");
    IT_CHECK (t->reply.type == PROTO_ERROR, "empty frame answered with %s",
              proto_type_name (t->reply.type));

    //  Well-formed msgpack of another protocol version: [2, 32, 7, {}].
    static const uint8_t v2[] = {0x94, 0x02, 0x20, 0x07, 0x80};
    IT_CHECK (raw_exchange (dealer, v2, sizeof v2, false, &t->reply, &frame, CALL_MS),
              "no reply to version 2");
    IT_CHECK (t->reply.type == PROTO_ERROR &&
                  proto_body (&t->reply, error)->code == CM_E_VERSION,
              "version 2 answered with %s %lld", proto_type_name (t->reply.type),
              t->reply.type == PROTO_ERROR
                  ? (long long)proto_body (&t->reply, error)->code
                  : 0LL);

    //  Two frames: an envelope the store cannot answer; it drops it.
    bool answered = raw_exchange (dealer, junk, 16, true, &t->reply, &frame, 300);
    IT_CHECK (!answered, "a two-frame request was answered");

    zmq_msg_close (&frame);
    cm_zmq_close (&dealer);

    //  And it keeps serving.
    IT_OK (proto_rpc_call (t->rpc, PROTO_STORE_STATS, NULL, &t->reply, CALL_MS));
    check_range (t, &t->sids[2], t->last[2], 0);
    step ("garbage, empty, wrong-version frames get error replies; store keeps serving");
}

static void test_unknown_type (test_t *t)
{
    proto_session_new_t req = {.tenant = "acme", .cwd = "/srv/work/acme"};
    int rc = proto_rpc_call (t->rpc, PROTO_SESSION_NEW, &req, &t->reply, CALL_MS);
    IT_CHECK (rc == CM_E_UNKNOWN_TYPE, "session.new to the store: %s", cm_errname (rc));
    rc = proto_rpc_call (t->rpc, PROTO_OK, NULL, &t->reply, CALL_MS);
    IT_CHECK (rc == CM_E_UNKNOWN_TYPE, "ok to the store: %s", cm_errname (rc));
    step ("a non-store message type gets CM_E_UNKNOWN_TYPE");
}

#define USAGE_DAY 20260101

static void usage_add (test_t *t, const cm_uuid_t *id, uint64_t in)
{
    proto_usage_t u = {.input_tokens = in, .model_calls = 1};
    proto_usage_add_t add = {.tenant = "acme", .day = USAGE_DAY, .usage = &u, .turns = 1};
    if (id) add.id = *id;
    IT_OK (proto_rpc_call (t->rpc, PROTO_STORE_USAGE_ADD, &add, &t->reply, CALL_MS));
    IT_CHECK (t->reply.type == PROTO_OK, "usage.add answered with %s",
              proto_type_name (t->reply.type));
}

static void check_usage (test_t *t, uint64_t in, uint64_t turns, const char *what)
{
    proto_usage_get_t get = {
        .tenant = "acme", .from_day = USAGE_DAY, .to_day = USAGE_DAY};
    IT_OK (proto_rpc_call (t->rpc, PROTO_STORE_USAGE_GET, &get, &t->reply, CALL_MS));
    const proto_usage_reply_t *rep = proto_body (&t->reply, usage_reply);
    IT_CHECK (rep && rep->rows.count == 1, "%s: %zu usage rows", what,
              rep ? rep->rows.count : 0);
    IT_CHECK (rep->rows.items[0].usage->input_tokens == in &&
                  rep->rows.items[0].turns == turns,
              "%s: %llu tokens in %llu turns, expected %llu in %llu", what,
              (unsigned long long)rep->rows.items[0].usage->input_tokens,
              (unsigned long long)rep->rows.items[0].turns, (unsigned long long)in,
              (unsigned long long)turns);
}

//  usage.add with an id counts once however often it is resent; without
//  an id every add counts.
static void test_usage_once (test_t *t)
{
    cm_uuid7 (&t->turn);
    usage_add (t, &t->turn, 100);
    usage_add (t, &t->turn, 100);
    check_usage (t, 100, 1, "same id twice");
    usage_add (t, NULL, 1);
    usage_add (t, NULL, 1);
    check_usage (t, 102, 3, "two adds without an id");
    step ("usage.add with an id counts once; without an id, each time");
}

static void test_backup (test_t *t, const char *binary)
{
    char path[IT_PATH_MAX];
    snprintf (path, sizeof path, "%s/backup.mdb", t->store->dir);
    proto_backup_req_t req = {.path = path};
    IT_OK (proto_rpc_call (t->rpc, PROTO_STORE_BACKUP, &req, &t->reply, CALL_MS));
    IT_CHECK (t->reply.type == PROTO_BACKUP_REPLY, "backup answered with %s",
              proto_type_name (t->reply.type));
    uint64_t bytes = proto_body (&t->reply, backup_reply)->bytes;
    struct stat st;
    IT_CHECK (stat (path, &st) == 0, "backup file %s: %s", path, strerror (errno));
    IT_CHECK (bytes > 0 && (uint64_t)st.st_size == bytes,
              "backup says %llu bytes, file %lld", (unsigned long long)bytes,
              (long long)st.st_size);
    int rc = proto_rpc_call (t->rpc, PROTO_STORE_BACKUP, &req, &t->reply, CALL_MS);
    IT_CHECK (rc == CM_E_CONFLICT, "backup over an existing file: %s", cm_errname (rc));

    //  The copy is a working store: same epoch, same data.
    it_store_t *copy = it_store_new (binary);
    char dst[IT_PATH_MAX + 32];
    snprintf (dst, sizeof dst, "%s/store", copy->data_dir);
    IT_CHECK (mkdir (copy->data_dir, 0700) == 0 && mkdir (dst, 0700) == 0, "mkdir %s",
              dst);
    strcat (dst, "/data.mdb");
    IT_CHECK (rename (path, dst) == 0, "rename %s: %s", path, strerror (errno));
    it_store_start (copy, NULL);
    char epoch[CM_UUID_STR_LEN];
    proto_rpc_t *main_rpc = t->rpc;
    t->rpc = it_store_connect (copy, 10000, epoch);
    IT_CHECK (strcmp (epoch, t->epoch) == 0, "restored epoch %s, original %s", epoch,
              t->epoch);
    for (int s = 0; s < SESSIONS; s++) check_range (t, &t->sids[s], t->last[s], 0);
    proto_id_req_t get = {.id = t->session};
    IT_OK (proto_rpc_call (t->rpc, PROTO_STORE_SESSION_GET, &get, &t->reply, CALL_MS));
    proto_rpc_destroy (&t->rpc);
    t->rpc = main_rpc;
    it_store_signal (copy, SIGTERM);
    int status;
    IT_CHECK (it_store_wait_exit (copy, 5000, &status), "restored store ignored SIGTERM");
    IT_CHECK (WIFEXITED (status) && WEXITSTATUS (status) == 0,
              "restored store: exit status 0x%x", status);
    step ("store.backup writes a file that opens as the same store (epoch, data)");
}

static void test_sigterm_restart (test_t *t)
{
    proto_rpc_destroy (&t->rpc);
    int64_t t0 = it_now_ms ();
    it_store_signal (t->store, SIGTERM);
    int status;
    IT_CHECK (it_store_wait_exit (t->store, 5000, &status),
              "no exit within 5 s of SIGTERM");
    IT_CHECK (WIFEXITED (status) && WEXITSTATUS (status) == 0,
              "SIGTERM: exit status 0x%x, expected a clean exit 0", status);
    printf ("   (exited %lld ms after SIGTERM)\n", (long long)(it_now_ms () - t0));
    step ("SIGTERM: exits 0 within 5 s");

    it_store_start (t->store, NULL);
    char epoch[CM_UUID_STR_LEN];
    t->rpc = it_store_connect (t->store, 10000, epoch);
    IT_CHECK (strcmp (epoch, t->epoch) == 0, "epoch changed over a restart: %s -> %s",
              t->epoch, epoch);
    proto_id_req_t get = {.id = t->session};
    IT_OK (proto_rpc_call (t->rpc, PROTO_STORE_SESSION_GET, &get, &t->reply, CALL_MS));
    IT_CHECK (strcmp (proto_body (&t->reply, session_reply)->session->tenant, "acme") ==
                  0,
              "session after restart");
    for (int s = 0; s < SESSIONS; s++) check_range (t, &t->sids[s], t->last[s], 0);
    //  Appends continue where they stopped.
    uint64_t last;
    IT_OK (append (t, &t->sids[3], t->last[3] + 1, 2, &last));
    IT_CHECK (last == t->last[3] + 2, "append after restart: last_seq");
    t->last[3] = last;
    check_range (t, &t->sids[3], t->last[3], 0);
    usage_add (t, &t->turn, 100); //  a resend across the restart
    check_usage (t, 102, 3, "usage.add resent after a restart");
    step ("restart on the same dir: same epoch, sessions, events and usage ids intact");

    proto_rpc_destroy (&t->rpc);
    it_store_signal (t->store, SIGTERM);
    IT_CHECK (it_store_wait_exit (t->store, 5000, &status), "no exit after SIGTERM");
    IT_CHECK (WIFEXITED (status) && WEXITSTATUS (status) == 0, "second stop: 0x%x",
              status);
}

static void test_damaged (const char *binary)
{
    char dir[IT_DIR_MAX], path[IT_PATH_MAX], data[IT_DIR_MAX + 8], endpoint[IT_PATH_MAX];
    it_tmpdir (dir, sizeof dir);
    snprintf (data, sizeof data, "%s/data", dir);
    snprintf (path, sizeof path, "%s/store", data);
    IT_CHECK (mkdir (data, 0700) == 0 && mkdir (path, 0700) == 0, "mkdir %s", path);
    strcat (path, "/data.mdb");
    uint8_t junk[16384];
    cm_random (junk, sizeof junk);
    int fd = open (path, O_WRONLY | O_CREAT | O_EXCL, 0600);
    IT_CHECK (fd >= 0 && write (fd, junk, sizeof junk) == (ssize_t)sizeof junk,
              "write %s", path);
    close (fd);
    snprintf (endpoint, sizeof endpoint, "ipc://%s/store.sock", dir);

    const char *argv[] = {binary, "--data-dir", data, "--store-endpoint", endpoint, NULL};
    char err[8192];
    int64_t t0 = it_now_ms ();
    int status = it_run_capture (argv, 10000, err, sizeof err);
    int64_t took = it_now_ms () - t0;
    IT_CHECK (WIFEXITED (status) && WEXITSTATUS (status) != 0,
              "damaged store: status 0x%x, expected a non-zero exit; stderr:\n%s", status,
              err);
    IT_CHECK (took < 5000, "damaged store: took %lld ms to give up", (long long)took);
    //  A plain line for a person, not only the JSON log.
    IT_CHECK (strstr (err, "corral-store: "), "no plain 'corral-store:' line:\n%s", err);
    IT_CHECK (strstr (err, path), "stderr does not name %s:\n%s", path, err);
    IT_CHECK (strstr (err, "damaged") || strstr (err, "not a readable LMDB"),
              "stderr does not say the file is damaged:\n%s", err);
    printf ("   (exit %d after %lld ms)\n", WEXITSTATUS (status), (long long)took);
    step ("garbage data.mdb: exits non-zero at once, stderr names the file as damaged");
}

int main (int argc, char **argv)
{
    if (argc != 2) {
        fprintf (stderr, "usage: %s <path to corral-store>\n", argv[0]);
        return 2;
    }
    int64_t t0 = it_now_ms ();
    test_t t = {0};
    proto_msg_init (&t.reply);
    proto_msg_init (&t.scratch);
    t.store = it_store_new (argv[1]);
    it_store_start (t.store, NULL);
    t.rpc = it_store_connect (t.store, 10000, t.epoch);
    step ("corral-store answers store.stats");

    test_session_round_trip (&t);
    test_pipelined_appends (&t);
    test_range (&t);
    test_idempotent (&t);
    test_gap (&t);
    test_hostile_frames (&t);
    test_unknown_type (&t);
    test_usage_once (&t);
    test_backup (&t, argv[1]);
    test_sigterm_restart (&t);
    test_damaged (argv[1]);

    proto_msg_fini (&t.reply);
    proto_msg_fini (&t.scratch);
    cm_zmq_term ();
    printf ("store service: all checks passed in %lld ms\n",
            (long long)(it_now_ms () - t0));
    return 0;
}
