/*  test_store_crash.c - acknowledged events survive kill -9 (DESIGN §4).

    Usage: test_store_crash <path to corral-store> [seed]
    (the seed may also come from CORRAL_TEST_SEED; it is printed first so a
    failing run can be repeated with the same choices).

    A writer appends events for SESSIONS sessions to the real corral-store
    (default sync: full), pipelining up to WINDOW events.append requests of
    1..MAX_BATCH events each.  Every event is it_event (session, seq): its
    bytes identify the session and seq and are the same on every resend.
    The writer tracks, per session, the highest seq the store acknowledged
    and the highest it ever sent.

    KILLS times: after a random 20..300 ms of load the store gets SIGKILL
    (requests in flight are lost), is restarted on the same data dir, and a
    fresh client checks every session with events.range in pages:
      - every acknowledged seq is there;
      - seqs run from 1 with no hole and no duplicate: the event at
        position n decodes to seq n of that session, byte for byte what was
        sent for n (checked in full the first time an event is seen; on
        later passes its bytes must still hash to the same digest);
      - nothing beyond the highest seq ever sent exists;
      - the store epoch did not change.
    Then the writer resends from the last acknowledged seq + 1 (the store
    acknowledges what it already holds) and the load goes on.  A CM_E_GAP
    answer would mean the store lost something it acknowledged or the
    writer skipped ahead; the writer asks for last_seq, fails if that is
    below an ack, and otherwise resends from there.

    Mixed into the load, usage.add requests with an idempotency id (one
    token and one turn each): a new id, or a resend of an id already sent
    (acknowledged or not).  After every restart the day's row must hold at
    least every acknowledged id and at most every id sent, once each; at
    the end every id not acknowledged is resent and the row must hold
    exactly one token per id.
*/
#include <inttypes.h>
#include <signal.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>

#include "cm_id.h"
#include "cm_zmq.h"
#include "it_store.h"

#define SESSIONS    50
#define KILLS       25
#define WINDOW      8     //  append requests in flight at most
#define MAX_BATCH   20    //  events per request at most
#define LOAD_MIN_MS 20    //  load before a kill, at least
#define LOAD_MAX_MS 300   //  and at most
#define STALL_MS    10000 //  no reply this long with requests in flight: fail
#define CALL_MS     10000 //  bound on one verification request
#define PAGE        2000  //  events per range page when verifying
#define USAGE_MAX   4096  //  distinct usage.add ids at most
#define USAGE_DAY   20260101

typedef struct {
    uint64_t corr;
    int s;
    uint64_t first, last;
    bool probe; //  an events.range asking for last_seq after a gap
    bool usage; //  a usage.add of id u
    uint32_t u;
} flight_t;

//  FNV-1a digests of the events of one session already checked in full,
//  by seq - 1: later passes compare digests instead of re-encoding.
typedef struct {
    uint64_t *sums;
    uint64_t count, alloc;
} digests_t;

typedef struct {
    it_store_t *store;
    proto_rpc_t *rpc;
    proto_msg_t reply, scratch;
    proto_buf_t buf;
    uint64_t rng;
    char epoch[CM_UUID_STR_LEN];
    cm_uuid_t sid[SESSIONS];
    uint64_t acked[SESSIONS];    //  highest seq the store acknowledged
    uint64_t next[SESSIONS];     //  next seq to send
    uint64_t sent_max[SESSIONS]; //  highest seq ever sent
    bool resync[SESSIONS];       //  a probe is out; send nothing meanwhile
    digests_t digests[SESSIONS];
    flight_t flight[WINDOW];
    size_t nflight;
    cm_uuid_t uid[USAGE_MAX]; //  usage.add ids sent, uid[0..nu)
    bool uacked[USAGE_MAX];
    uint32_t nu, nuacked;
    uint64_t uresent;
    //  totals for the summary
    uint64_t requests, resent, gaps, verified, kills;
} crash_t;

static uint64_t rand_range (crash_t *c, uint64_t lo, uint64_t hi)
{
    return lo + it_rand (&c->rng) % (hi - lo + 1);
}

/* ---------------------------------------------------------------- */
/*  Writer                                                           */

static void add_flight (crash_t *c, flight_t f)
{
    IT_CHECK (c->nflight < WINDOW, "window overflow");
    c->flight[c->nflight++] = f;
}

static bool take_flight (crash_t *c, uint64_t corr, flight_t *out)
{
    for (size_t i = 0; i < c->nflight; i++) {
        if (c->flight[i].corr != corr) continue;
        *out = c->flight[i];
        c->flight[i] = c->flight[--c->nflight];
        return true;
    }
    return false;
}

static void send_append (crash_t *c)
{
    int s = (int)rand_range (c, 0, SESSIONS - 1);
    for (int tries = 0; c->resync[s] && tries < SESSIONS; tries++) s = (s + 1) % SESSIONS;
    if (c->resync[s]) return;
    size_t n = (size_t)rand_range (c, 1, MAX_BATCH);
    uint64_t first = c->next[s];
    size_t offs[MAX_BATCH + 1];
    proto_bin_t items[MAX_BATCH];
    proto_buf_reset (&c->buf);
    for (size_t i = 0; i < n; i++) {
        offs[i] = c->buf.size;
        it_event (&c->buf, &c->sid[s], first + i);
    }
    offs[n] = c->buf.size;
    for (size_t i = 0; i < n; i++)
        items[i] =
            (proto_bin_t){(const uint8_t *)c->buf.data + offs[i], offs[i + 1] - offs[i]};
    proto_events_append_t req = {
        .session = c->sid[s], .first_seq = first, .events = {items, n}};
    flight_t f = {.s = s, .first = first, .last = first + n - 1};
    IT_OK (proto_rpc_send (c->rpc, PROTO_STORE_EVENTS_APPEND, &req, CALL_MS, &f.corr));
    add_flight (c, f);
    c->requests++;
    if (first <= c->sent_max[s])
        c->resent += (f.last < c->sent_max[s] ? f.last : c->sent_max[s]) - first + 1;
    if (f.last > c->sent_max[s]) c->sent_max[s] = f.last;
    c->next[s] = f.last + 1;
}

static void send_usage_of (crash_t *c, uint32_t u)
{
    proto_usage_t one = {.input_tokens = 1};
    proto_usage_add_t req = {
        .tenant = "crash", .day = USAGE_DAY, .usage = &one, .turns = 1, .id = c->uid[u]};
    flight_t f = {.usage = true, .u = u};
    IT_OK (proto_rpc_send (c->rpc, PROTO_STORE_USAGE_ADD, &req, CALL_MS, &f.corr));
    add_flight (c, f);
}

//  A new usage id, or a resend of one already sent.
static void send_usage (crash_t *c)
{
    uint32_t u;
    if (c->nu < USAGE_MAX && (c->nu == 0 || it_rand (&c->rng) % 2)) {
        u = c->nu++;
        cm_uuid7 (&c->uid[u]);
    } else {
        u = (uint32_t)rand_range (c, 0, c->nu - 1);
        c->uresent++;
    }
    send_usage_of (c, u);
}

//  Ask for a session's last_seq after a gap (events.range past the end).
static void send_probe (crash_t *c, int s)
{
    proto_events_range_t req = {
        .session = c->sid[s], .after_seq = c->sent_max[s], .limit = 1};
    flight_t f = {.s = s, .probe = true};
    IT_OK (proto_rpc_send (c->rpc, PROTO_STORE_EVENTS_RANGE, &req, CALL_MS, &f.corr));
    add_flight (c, f);
    c->resync[s] = true;
}

static void on_reply (crash_t *c)
{
    flight_t f;
    IT_CHECK (take_flight (c, c->reply.corr, &f), "reply to an unknown corr %" PRIu64,
              c->reply.corr);
    if (f.usage) {
        IT_CHECK (c->reply.type == PROTO_OK, "usage.add answered with %s",
                  proto_type_name (c->reply.type));
        if (!c->uacked[f.u]) c->nuacked++;
        c->uacked[f.u] = true;
        return;
    }
    char id[CM_UUID_STR_LEN];
    cm_uuid_fmt (&c->sid[f.s], id);
    if (f.probe) {
        IT_CHECK (c->reply.type == PROTO_EVENTS, "probe answered with %s",
                  proto_type_name (c->reply.type));
        uint64_t last = proto_body (&c->reply, events_reply)->last_seq;
        IT_CHECK (last >= c->acked[f.s],
                  "session %s: last_seq %" PRIu64 " but %" PRIu64 " was acknowledged", id,
                  last, c->acked[f.s]);
        IT_CHECK (last <= c->sent_max[f.s],
                  "session %s: last_seq %" PRIu64 " but only %" PRIu64 " were sent", id,
                  last, c->sent_max[f.s]);
        c->next[f.s] = last + 1;
        c->resync[f.s] = false;
        return;
    }
    if (c->reply.type == PROTO_ERROR) {
        const proto_error_t *err = proto_body (&c->reply, error);
        IT_CHECK (err->code == CM_E_GAP,
                  "append %s %" PRIu64 "..%" PRIu64 " failed: %s (%s)", id, f.first,
                  f.last, cm_errname ((int)err->code), err->message);
        c->gaps++;
        if (!c->resync[f.s]) send_probe (c, f.s);
        return;
    }
    IT_CHECK (c->reply.type == PROTO_APPENDED, "append answered with %s",
              proto_type_name (c->reply.type));
    const proto_appended_t *ack = proto_body (&c->reply, appended);
    IT_CHECK (memcmp (ack->session.b, c->sid[f.s].b, 16) == 0,
              "ack names another session");
    IT_CHECK (ack->last_seq >= f.last,
              "session %s: append up to %" PRIu64 " acknowledged with last_seq %" PRIu64,
              id, f.last, ack->last_seq);
    IT_CHECK (ack->last_seq <= c->sent_max[f.s],
              "session %s: ack last_seq %" PRIu64 " beyond the %" PRIu64 " sent", id,
              ack->last_seq, c->sent_max[f.s]);
    if (ack->last_seq > c->acked[f.s]) c->acked[f.s] = ack->last_seq;
}

//  Keep WINDOW requests in flight for load_ms.
static void run_load (crash_t *c, int load_ms)
{
    int64_t deadline = it_now_ms () + load_ms;
    int64_t progress = it_now_ms ();
    while (true) {
        int64_t now = it_now_ms ();
        if (now >= deadline) return;
        while (c->nflight < WINDOW) {
            size_t before = c->nflight;
            if (it_rand (&c->rng) % 8 == 0) {
                send_usage (c);
                continue;
            }
            send_append (c);
            if (c->nflight == before) break; //  every session resyncing
        }
        int64_t wait = deadline - now < 50 ? deadline - now : 50;
        int rc = proto_rpc_recv (c->rpc, &c->reply, (int)wait);
        if (rc == CM_E_TIMEOUT) {
            IT_CHECK (it_now_ms () - progress < STALL_MS,
                      "no reply for %d ms with %zu requests in flight", STALL_MS,
                      c->nflight);
            continue;
        }
        IT_CHECK (rc == 0, "bad reply: %s (%s)", cm_errname (rc),
                  proto_msg_error (&c->reply));
        progress = it_now_ms ();
        on_reply (c);
    }
}

/* ---------------------------------------------------------------- */
/*  Verification                                                     */

static uint64_t digest (const uint8_t *data, size_t size)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < size; i++) h = (h ^ data[i]) * 0x100000001b3ULL;
    return h;
}

static void digests_push (digests_t *d, uint64_t sum)
{
    if (d->count == d->alloc) {
        d->alloc = d->alloc ? d->alloc * 2 : 1024;
        d->sums = realloc (d->sums, d->alloc * sizeof *d->sums);
        IT_CHECK (d->sums, "out of memory");
    }
    d->sums[d->count++] = sum;
}

static void verify_session (crash_t *c, int s)
{
    char id[CM_UUID_STR_LEN];
    cm_uuid_fmt (&c->sid[s], id);
    uint64_t after = 0, last = 0;
    do {
        proto_events_range_t req = {
            .session = c->sid[s], .after_seq = after, .limit = PAGE};
        IT_OK (
            proto_rpc_call (c->rpc, PROTO_STORE_EVENTS_RANGE, &req, &c->reply, CALL_MS));
        IT_CHECK (c->reply.type == PROTO_EVENTS, "range answered with %s",
                  proto_type_name (c->reply.type));
        const proto_events_reply_t *ev = proto_body (&c->reply, events_reply);
        IT_CHECK (strcmp (ev->epoch, c->epoch) == 0, "epoch %s in range, %s at start",
                  ev->epoch, c->epoch);
        last = ev->last_seq;
        IT_CHECK (last >= c->acked[s],
                  "session %s: LOST acknowledged events: last_seq %" PRIu64
                  ", acknowledged up to %" PRIu64,
                  id, last, c->acked[s]);
        IT_CHECK (last <= c->sent_max[s],
                  "session %s: last_seq %" PRIu64 " but only %" PRIu64 " were ever sent",
                  id, last, c->sent_max[s]);
        if (after >= last) break;
        uint64_t want = last - after < PAGE ? last - after : PAGE;
        IT_CHECK (ev->first_seq == after + 1 && ev->events.count == want,
                  "session %s: range after %" PRIu64 " gave %zu events from %" PRIu64
                  ", expected %" PRIu64 " (a hole or a duplicate)",
                  id, after, ev->events.count, ev->first_seq, want);
        for (size_t i = 0; i < ev->events.count; i++) {
            uint64_t seq = after + 1 + i;
            const proto_bin_t *e = &ev->events.items[i];
            digests_t *d = &c->digests[s];
            uint64_t sum = digest (e->data, e->size);
            //  Checked in full once; afterwards its bytes must not change.
            if (seq <= d->count && d->sums[seq - 1] == sum) continue;
            const char *why =
                it_event_check (&c->scratch, e->data, e->size, &c->sid[s], seq);
            IT_CHECK (!why, "session %s seq %" PRIu64 ": %s", id, seq, why);
            IT_CHECK (seq == d->count + 1,
                      "session %s seq %" PRIu64 " changed since the last check", id, seq);
            digests_push (d, sum);
        }
        after += ev->events.count;
        c->verified += ev->events.count;
    } while (after < last);
}

//  The usage row counts every acknowledged id and no id twice.
static uint64_t verify_usage (crash_t *c)
{
    proto_usage_get_t req = {
        .tenant = "crash", .from_day = USAGE_DAY, .to_day = USAGE_DAY};
    IT_OK (proto_rpc_call (c->rpc, PROTO_STORE_USAGE_GET, &req, &c->reply, CALL_MS));
    const proto_usage_reply_t *rep = proto_body (&c->reply, usage_reply);
    uint64_t tokens = rep->rows.count ? rep->rows.items[0].usage->input_tokens : 0;
    uint64_t turns = rep->rows.count ? rep->rows.items[0].turns : 0;
    IT_CHECK (tokens == turns, "usage: %" PRIu64 " tokens but %" PRIu64 " turns", tokens,
              turns);
    IT_CHECK (tokens >= c->nuacked,
              "usage: %" PRIu64 " counted but %" PRIu32 " ids were acknowledged", tokens,
              c->nuacked);
    IT_CHECK (tokens <= c->nu,
              "usage: %" PRIu64 " counted from only %" PRIu32
              " distinct ids: a resend counted twice",
              tokens, c->nu);
    return tokens;
}

/* ---------------------------------------------------------------- */

static void restart (crash_t *c)
{
    it_store_start (c->store, NULL);
    char epoch[CM_UUID_STR_LEN];
    c->rpc = it_store_connect (c->store, 15000, epoch);
    IT_CHECK (strcmp (epoch, c->epoch) == 0, "epoch changed over a kill: %s -> %s",
              c->epoch, epoch);
}

static double cpu_s (const struct rusage *ru)
{
    return (double)(ru->ru_utime.tv_sec + ru->ru_stime.tv_sec) +
           (double)(ru->ru_utime.tv_usec + ru->ru_stime.tv_usec) / 1e6;
}

static uint64_t parse_seed (int argc, char **argv)
{
    const char *text = argc > 2 ? argv[2] : getenv ("CORRAL_TEST_SEED");
    uint64_t seed = 0;
    if (text && *text) return strtoull (text, NULL, 0);
    cm_random (&seed, sizeof seed);
    return seed;
}

int main (int argc, char **argv)
{
    if (argc < 2 || argc > 3) {
        fprintf (stderr, "usage: %s <path to corral-store> [seed]\n", argv[0]);
        return 2;
    }
    static crash_t c; //  large; zero-initialised
    uint64_t seed = parse_seed (argc, argv);
    c.rng = seed;
    printf ("store crash test: seed %" PRIu64 " (rerun: %s %s %" PRIu64 ")\n", seed,
            argv[0], argv[1], seed);
    fflush (stdout);
    int64_t t0 = it_now_ms ();
    proto_msg_init (&c.reply);
    proto_msg_init (&c.scratch);
    for (int s = 0; s < SESSIONS; s++) {
        cm_uuid7 (&c.sid[s]);
        c.next[s] = 1;
    }
    c.store = it_store_new (argv[1]);
    it_store_start (c.store, NULL);
    c.rpc = it_store_connect (c.store, 15000, c.epoch);

    for (int k = 0; k < KILLS; k++) {
        int load_ms = (int)rand_range (&c, LOAD_MIN_MS, LOAD_MAX_MS);
        run_load (&c, load_ms);
        size_t lost = c.nflight;
        it_store_kill (c.store);
        c.kills++;
        proto_rpc_destroy (&c.rpc);
        c.nflight = 0;
        restart (&c);
        uint64_t verified = c.verified;
        int64_t v0 = it_now_ms ();
        for (int s = 0; s < SESSIONS; s++) verify_session (&c, s);
        uint64_t counted = verify_usage (&c);
        uint64_t acked = 0, sent = 0;
        for (int s = 0; s < SESSIONS; s++) {
            acked += c.acked[s];
            sent += c.sent_max[s];
            //  Resend what was not acknowledged; what the store holds
            //  already is acknowledged again, not duplicated.
            c.next[s] = c.acked[s] + 1;
            c.resync[s] = false;
        }
        printf ("kill %2d after %3d ms load: %zu requests lost in flight; acked %" PRIu64
                ", sent %" PRIu64 ", verified %" PRIu64 " in %lld ms; usage %" PRIu64
                " of %" PRIu32 " ids (%" PRIu32 " acked)\n",
                k + 1, load_ms, lost, acked, sent, c.verified - verified,
                (long long)(it_now_ms () - v0), counted, c.nu, c.nuacked);
        fflush (stdout);
    }

    //  Every usage id not acknowledged yet, once more: then each counts
    //  exactly once.
    for (uint32_t u = 0; u < c.nu; u++) {
        if (c.uacked[u]) continue;
        send_usage_of (&c, u);
        IT_OK (proto_rpc_recv (c.rpc, &c.reply, CALL_MS));
        on_reply (&c);
    }
    IT_CHECK (c.nuacked == c.nu, "usage ids unacknowledged after resending");
    uint64_t counted = verify_usage (&c);
    IT_CHECK (counted == c.nu, "usage: %" PRIu64 " counted for %" PRIu32 " ids", counted,
              c.nu);
    printf ("usage: %" PRIu32 " ids, %" PRIu64 " resends, each counted once\n", c.nu,
            c.uresent);

    //  A last clean stop.
    proto_rpc_destroy (&c.rpc);
    it_store_signal (c.store, SIGTERM);
    int status;
    IT_CHECK (it_store_wait_exit (c.store, 5000, &status), "no exit after SIGTERM");
    IT_CHECK (WIFEXITED (status) && WEXITSTATUS (status) == 0, "SIGTERM: status 0x%x",
              status);

    uint64_t acked = 0;
    for (int s = 0; s < SESSIONS; s++) acked += c.acked[s];
    struct rusage self_ru, child_ru;
    getrusage (RUSAGE_SELF, &self_ru);
    getrusage (RUSAGE_CHILDREN, &child_ru);
    printf ("store crash test passed: seed %" PRIu64 ", %" PRIu64 " kills, %" PRIu64
            " events acked, %" PRIu64 " events verified, %" PRIu64
            " append requests, %" PRIu64 " events resent, %" PRIu64
            " gaps, %lld ms (cpu: test %.1f s, stores %.1f s)\n",
            seed, c.kills, acked, c.verified, c.requests, c.resent, c.gaps,
            (long long)(it_now_ms () - t0), cpu_s (&self_ru), cpu_s (&child_ru));
    for (int s = 0; s < SESSIONS; s++) free (c.digests[s].sums);
    proto_buf_fini (&c.buf);
    proto_msg_fini (&c.reply);
    proto_msg_fini (&c.scratch);
    cm_zmq_term ();
    return 0;
}
