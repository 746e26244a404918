/*  sess.h - corral-session: session state machines, the event spine, turn
    dispatch to workers, permissions.

    Sockets (DESIGN §2):
      client  ROUTER bind  gateways' requests (client API)
      worker  ROUTER bind  workers (Majordomo-like worker API)
      pub     PUB    bind  events, topic "s/<session-id>/"
      store   DEALER conn  corral-store, pipelined, with resend on timeout

    Files, one concern each:
      sess_server.c       the loop, socket reading, the dispatch tables
      sess_store.c        asynchronous store calls: continuation per corr id,
                          resend after a timeout (store requests are idempotent)
      sess_spine.c        events: next seq, batched append, publish on ack
      sess_sessions.c     the session table, lazy load, create, list, close,
                          delete, workspace roots, the startup scan
      sess_turns.c        prompts, idempotency, dispatch, done/failed,
                          cancel, worker_lost, interrupted
      sess_workers.c      worker registry, heartbeats, capacity
      sess_permissions.c  pending requests, first answer wins, timeouts
      sess_policy.c       policy actions from corral-monitor (warn, cancel,
                          hibernate, close), the census it reads

    The spine, the one rule everything else leans on: an event gets the
    session's next seq when it is emitted, is appended to the store in seq
    order (one append in flight per session; everything emitted meanwhile
    goes in the next one), and is published only after the store
    acknowledged it.  So subscribers see every seq in order, and anything
    they saw can be replayed from the store.  Work that must follow an event
    (the reply to a prompt after its turn_ended event) hangs on the seq and
    runs when that seq is acknowledged.
*/
#ifndef SESS_H
#define SESS_H

#include <stdbool.h>
#include <stdint.h>

#include "cm_id.h"
#include "cm_map.h"
#include "proto.h"

#define SESS_MAX_ROOTS         16
#define SESS_APPEND_MAX        1024        //  events of one session in one append
#define SESS_APPEND_BYTES      (4u << 20)  //  bytes of one session's append (>= 1 event)
#define SESS_BATCH_SESSIONS    1024        //  sessions in one append batch
#define SESS_BATCH_EVENTS      8192        //  events in one append batch
#define SESS_BATCH_BYTES       (16u << 20) //  bytes in one append batch
#define SESS_APPEND_BATCHES    1           //  append batches in flight
#define SESS_QUEUE_MAX         65536       //  events buffered per session before refusing
#define SESS_STORE_TIMEOUT     2000        //  ms before a store call is resent
#define SESS_HEARTBEAT_MS      1000
#define SESS_HEARTBEAT_DEAD_MS 2500 //  silence after which a worker is dead
//  Why 2.5 s and not 3 x 1 s: a turn of a killed worker must end within
//  3 s (the sessions issue); with beats every second and any message
//  counting as one, 2.5 s of silence is two and a half missed beats.
#define SESS_DISPATCH_WAIT 30000 //  ms a prompt waits for a free worker
#define SESS_CANCEL_GRACE  5000  //  ms a worker has to confirm a cancel
#define SESS_ID_MAX        256   //  bytes of a routing id we keep
#define SESS_SCAN_PAGE     1000  //  records per page of the startup scan

typedef struct sess_server sess_server_t;
typedef struct sess_session sess_session_t;

/* ---- configuration (main.c fills it) ---------------------------- */

typedef struct {
    char *data_dir;
    char *roots; //  colon-separated
    char *client_endpoint, *worker_endpoint, *events_endpoint, *store_endpoint;
    char *monitor_in; //  corral-monitor's heartbeat input (PUB, connect)
    char *default_backend, *default_model, *default_mode;
    int64_t max_sessions, max_sessions_per_tenant, max_turns;
    int64_t permission_timeout_ms;
    int64_t budget_tokens;  //  per session, 0 = none (sess_budget.c)
    char *budget_usd;       //  per session, dollars as text ("0.50"), parsed into:
    int64_t budget_micros;  //  0 = none
    int64_t close_grace_ms; //  a policy close waits this long for a running turn
    char *log_level;
} sess_config_t;

/* ---- a routing id plus correlation id: who to answer ------------ */

typedef struct {
    uint8_t id[SESS_ID_MAX];
    size_t id_len;
    uint64_t corr;
    bool set;
} sess_peer_t;

/* ---- workers ---------------------------------------------------- */

typedef struct sess_worker {
    uint8_t id[SESS_ID_MAX]; //  routing id on the worker socket
    size_t id_len;
    char name[128]; //  worker_id it announced
    uint64_t capacity;
    uint64_t active; //  turns we gave it that have not ended
    int64_t last_seen_ms;
    struct sess_worker *next;
} sess_worker_t;

/* ---- turns ------------------------------------------------------ */

typedef enum {
    TURN_NONE,
    TURN_WAITING, //  no free worker yet
    TURN_LOADING, //  reading the conversation from the store
    TURN_RUNNING, //  on a worker
    TURN_SAVING,  //  the worker finished; storing the new conversation
    TURN_ENDING,  //  final event emitted, waiting for its ack
} sess_turn_state_t;

//  A turn's budgets and what a budget did to it (sess_budget.c).
typedef struct {
    cm_uuid_t key; //  the API key that prompted it, when has_key
    bool has_key;
    uint64_t key_tokens, key_micros; //  that key's budgets; 0 = none
    char *stop;                      //  set when a budget stopped the turn: why
} sess_turn_budget_t;

typedef struct {
    sess_turn_state_t state;
    cm_uuid_t id;
    char *idem;
    char *prompt;          //  ACP content blocks (JSON text)
    sess_worker_t *worker; //  while RUNNING
    int64_t started_ms;
    int64_t wait_deadline_ms;   //  while WAITING
    bool cancel;                //  cancel asked
    int64_t cancel_deadline_ms; //  end it ourselves if the worker does not
    char *cancel_why;           //  a policy's reason, for turn_ended's message
    sess_peer_t requesters[4];  //  prompt replies owed (first + resends)
    size_t nrequesters;
    //  pending permission request (one at a time per turn)
    char *perm_id;
    char *perm_tool;                       //  tool:target for allow-always
    proto_perm_option_list_t perm_options; //  owned copies
    int64_t perm_deadline_ms;              //  monotonic
    int64_t perm_deadline_wall;            //  the same, as Unix ms for the event
    uint64_t perm_seq;                     //  its permission_request event (when perm_id)
    //  outcome, kept until the turn_ended event is acknowledged
    char *stop_reason;
    int64_t code;
    char *message;
    uint64_t end_seq;
    sess_turn_budget_t budget;
} sess_turn_t;

/* ---- sessions --------------------------------------------------- */

typedef struct sess_event {
    uint64_t seq;
    size_t size;
    struct sess_event *next;
    uint8_t data[]; //  the encoded event message
} sess_event_t;

struct sess_session {
    proto_session_rec_t rec; //  strings owned (see sess_session_set_*)
    //  spine
    uint64_t next_seq;   //  seq the next emitted event gets
    uint64_t acked_seq;  //  highest seq the store acknowledged
    sess_event_t *queue; //  emitted, not yet acknowledged (seq order)
    sess_event_t *queue_tail;
    size_t queued;
    uint64_t inflight_last; //  last seq of the append in flight, 0 if none
    bool ready;             //  on the server's ready list (sess_spine_send)
    bool dirty;             //  the record changed: put it after the next ack
    bool put_inflight;
    //  turn
    sess_turn_t turn;
    //  watchers (gateway connections attached), for accounting
    uint32_t watchers;
    char topic[2 + CM_UUID_STR_LEN + 1]; //  "s/<id>/" for PUB
    uint8_t topic_len;
};

/* ---- statistics for the heartbeat (sess_stats.c) ----------------- */

#define SESS_STATS_REASONS 16 //  stop reasons counted apart; the rest are "other"

typedef struct {
    uint64_t turns_started; //  prompts accepted as turns
    uint64_t events;        //  events acknowledged by the store and published
    char reasons[SESS_STATS_REASONS][32];
    uint64_t finished[SESS_STATS_REASONS + 1]; //  by reason; the last is "other"
} sess_stats_t;

void sess_stats_turn_started (sess_server_t *self);
void sess_stats_turn_finished (sess_server_t *self, const char *stop_reason);
//  proto_beat fill callback (arg: the sess_server_t): docs/monitor.md.
struct proto_beat;
void sess_stats_fill (struct proto_beat *beat, void *arg);

/* ---- the server ------------------------------------------------- */

typedef void (*sess_store_cb) (sess_server_t *self, void *arg, int rc,
                               proto_msg_t *reply);

struct sess_server {
    sess_config_t *cfg;
    char *roots[SESS_MAX_ROOTS];
    size_t nroots;
    void *client, *worker, *pub, *store;
    cm_map_t *sessions;    //  id (16 bytes) -> sess_session_t
    cm_map_t *turns;       //  turn id (16 bytes) -> sess_session_t, live turns
    cm_map_t *store_calls; //  corr -> pending store call
    uint64_t store_corr;
    sess_worker_t *workers;
    uint64_t turns_running;
    uint64_t sessions_open;  //  not closed, counted at start and kept up
    sess_stats_t stats;      //  counters for the heartbeat (sess_stats.c)
    struct proto_beat *beat; //  heartbeat to corral-monitor
    proto_buf_t buf;         //  scratch for encoding
    proto_msg_t msg;         //  scratch for decoding incoming messages
    proto_msg_t evmsg;       //  scratch for decoding workers' events
    proto_buf_t store_buf;   //  scratch for encoding store requests
    int64_t last_tick_ms;
    struct sess_budget *budget; //  sess_budget.c's key usage, NULL until used
    bool ready;                 //  startup scan finished
    //  the spine's append batches (sess_spine.c)
    cm_uuid_t *ready_ids; //  sessions with events to append, oldest first
    size_t nready, ready_cap;
    uint32_t batches_inflight;
    proto_bin_t *batch_items;          //  scratch: SESS_BATCH_EVENTS items
    proto_events_append_t *batch_apps; //  scratch: SESS_BATCH_SESSIONS appends
    bool append_single;         //  the store takes no batches: one append per session
    struct sess_policy *policy; //  sess_policy.c's state, NULL until used
};

/* ---- sess_server.c ---------------------------------------------- */
int sess_server_run (sess_config_t *cfg);
//  Reply to a client request (encode body as type with the peer's corr).
void sess_reply (sess_server_t *self, const sess_peer_t *peer, proto_type_t type,
                 const void *body);
void sess_reply_error (sess_server_t *self, const sess_peer_t *peer, int code,
                       const char *message);
//  Send a message to a worker.
int sess_send_worker (sess_server_t *self, sess_worker_t *w, proto_type_t type,
                      const void *body);

/* ---- sess_store.c ----------------------------------------------- */
//  Send a store request; cb runs with the reply (rc 0), an error reply (rc
//  < 0, reply decoded), or never (resent until answered).  arg belongs to
//  the call until cb runs: cb frees it.  A call still unanswered when the
//  service stops never runs cb; sess_store_fini frees its arg with `drop`
//  instead (sess_store_call: drop is free(), so arg must be one heap block
//  or NULL).  Returns 0, or an error (arg still the caller's).
typedef void (*sess_store_drop_fn) (void *arg);
int sess_store_call (sess_server_t *self, proto_type_t type, const void *body,
                     sess_store_cb cb, void *arg);
int sess_store_call_owned (sess_server_t *self, proto_type_t type, const void *body,
                           sess_store_cb cb, void *arg, sess_store_drop_fn drop);
void sess_store_on_reply (sess_server_t *self, const void *data, size_t size);
void sess_store_tick (sess_server_t *self, int64_t now);
void sess_store_fini (sess_server_t *self);

/* ---- sess_spine.c ----------------------------------------------- */
//  Emit an event of `type`; body is the event's record with the head
//  fields (session, seq, ts) filled in here.  Returns the seq, or 0 when the
//  queue is full.
uint64_t sess_emit (sess_server_t *self, sess_session_t *s, proto_type_t type,
                    void *body);
//  Re-emit an event a worker encoded (head fields replaced).
uint64_t sess_emit_encoded (sess_server_t *self, sess_session_t *s, const cm_uuid_t *turn,
                            const void *data, size_t size, int *err);
//  Emit a state change and remember it in the record.
void sess_set_state (sess_server_t *self, sess_session_t *s, const char *state,
                     const char *reason);
//  Ask for the record to be stored after the next acknowledged append.
void sess_mark_dirty (sess_server_t *self, sess_session_t *s);
void sess_spine_flush (sess_server_t *self, sess_session_t *s);
//  Send the ready sessions' events (end of each loop pass).
void sess_spine_send (sess_server_t *self);

/* ---- sess_sessions.c -------------------------------------------- */
int sess_roots_init (sess_server_t *self, char *err, size_t errlen);
//  Check (and create) a cwd inside the roots; out gets the canonical path.
int sess_roots_check (sess_server_t *self, const char *cwd, char *out, size_t outlen,
                      char *err, size_t errlen);
sess_session_t *sess_lookup (sess_server_t *self, const cm_uuid_t *id);
//  Find a session in memory, else load it from the store, then run cb.
//  arg is one heap block or NULL: cb owns it, or, when the service stops
//  before the store answers, it is freed with free().
typedef void (*sess_loaded_cb) (sess_server_t *self, sess_session_t *s, int rc,
                                void *arg);
void sess_load (sess_server_t *self, const cm_uuid_t *id, sess_loaded_cb cb, void *arg);
//  Run `run` on a request once session `id` is in memory: at once, or after
//  loading it from the store (the request's bytes are kept and decoded
//  again).  A session that cannot be loaded gets the peer not_found or
//  unavailable.
typedef void (*sess_request_fn) (sess_server_t *self, sess_session_t *s,
                                 const sess_peer_t *peer, proto_msg_t *msg);
void sess_with_session (sess_server_t *self, const cm_uuid_t *id, const sess_peer_t *peer,
                        proto_msg_t *msg, sess_request_fn run);
void sess_session_free (sess_session_t *s);
void sess_startup_scan (sess_server_t *self);
void sess_on_client (sess_server_t *self, const sess_peer_t *peer, proto_msg_t *msg);
void sess_dup_str (const char **slot, const char *value);
//  Close an open session: cancel its turn, count it closed, record why
//  (end_reason, e.g. "max_duration") and emit state closed with reason.
void sess_session_close (sess_server_t *self, sess_session_t *s, const char *end_reason,
                         const char *reason);

/* ---- sess_turns.c ----------------------------------------------- */
void sess_turn_prompt (sess_server_t *self, sess_session_t *s, const sess_peer_t *peer,
                       const proto_session_prompt_t *req);
void sess_turn_cancel (sess_server_t *self, sess_session_t *s);
//  The same, with a reason that goes to the worker and into turn_ended's
//  message (why may be NULL: a client's cancel).
void sess_turn_cancel_why (sess_server_t *self, sess_session_t *s, const char *why);
void sess_turn_on_worker (sess_server_t *self, sess_worker_t *w, proto_msg_t *msg);
void sess_turn_worker_lost (sess_server_t *self, sess_worker_t *w);
void sess_turn_end (sess_server_t *self, sess_session_t *s, const char *stop_reason,
                    int64_t code, const char *message, bool retryable);
void sess_turn_interrupted (sess_server_t *self, sess_session_t *s);
void sess_turn_abandon (sess_server_t *self, sess_session_t *s);
void sess_turn_on_acked (sess_server_t *self, sess_session_t *s);
void sess_turns_tick (sess_server_t *self, int64_t now);
void sess_turn_dispatch_waiting (sess_server_t *self);
void sess_turn_clear (sess_turn_t *t);

/* ---- sess_workers.c --------------------------------------------- */
void sess_worker_on_message (sess_server_t *self, const uint8_t *id, size_t id_len,
                             proto_msg_t *msg);
sess_worker_t *sess_worker_pick (sess_server_t *self, const char *prefer);
void sess_workers_tick (sess_server_t *self, int64_t now, bool beat);
void sess_workers_fini (sess_server_t *self);

/* ---- sess_permissions.c ----------------------------------------- */
void sess_perm_request (sess_server_t *self, sess_session_t *s,
                        const proto_w_perm_request_t *req);
void sess_perm_answer (sess_server_t *self, sess_session_t *s, const sess_peer_t *peer,
                       const proto_perm_answer_t *req);
void sess_perm_tick (sess_server_t *self, sess_session_t *s, int64_t now);
//  Drop a pending request as cancelled (turn ended).
void sess_perm_cancel (sess_server_t *self, sess_session_t *s, const char *outcome);
//  The seq of the running turn's unanswered permission_request event, 0 when
//  none (sent with load/attach/resume: a watch starting past it still asks).
uint64_t sess_perm_pending_seq (const sess_session_t *s);

/* ---- sess_budget.c ---------------------------------------------- */
//  Dollars as text ("0.5", "$12.25", "" = none) into micro-dollars.
//  Returns 0 or CM_E_INVALID (not a number, over $1e9, finer than 1e-6).
int sess_budget_parse_usd (const char *text, int64_t *micros);
//  Tokens a usage counts against a budget: input + output.
uint64_t sess_budget_tokens (const proto_usage_t *u);
//  Whether used reaches a budget (0 = none); if so, 1 and a message for a
//  person in msg ("budget exceeded: this session used 10 512 of its 10 000
//  tokens; ...").  whose: "session" or "key"; during: a running turn.
int sess_budget_over (const proto_usage_t *used, uint64_t budget_tokens,
                      uint64_t budget_micros, const char *whose, bool during, char *msg,
                      size_t msglen);
//  Before a prompt starts a turn: a spent session or key budget refuses it
//  (CM_E_BUDGET, answered here: returns true); a key whose usage is not
//  known yet has it read, and the prompt is dispatched again then (true).
bool sess_budget_before_prompt (sess_server_t *self, sess_session_t *s,
                                const sess_peer_t *peer,
                                const proto_session_prompt_t *req);
//  A new turn takes its prompt's key and the key's budgets.
void sess_budget_turn_start (sess_server_t *self, sess_session_t *s,
                             const proto_session_prompt_t *req);
//  What the turn may still use (0 = no limit), for the worker (W_TURN):
//  the least of what its session's and its key's budgets leave.
void sess_budget_turn_limits (sess_server_t *self, sess_session_t *s, uint64_t *tokens,
                              uint64_t *micros);
//  A usage_update of the running turn (its usage so far): past a budget,
//  an EV_POLICY (budget, cancel) and the turn is cancelled.
void sess_budget_on_usage (sess_server_t *self, sess_session_t *s,
                           const proto_usage_t *so_far);
//  A turn's final usage: added to its key's lifetime usage (store + memory).
void sess_budget_on_turn_usage (sess_server_t *self, sess_session_t *s,
                                const proto_usage_t *u);
//  A turn a budget stopped ends failed/CM_E_BUDGET with its message.
void sess_budget_outcome (sess_session_t *s, const char **stop_reason, int64_t *code,
                          const char **message, bool *retryable);
void sess_budget_fini (sess_server_t *self);

/* ---- sess_policy.c ---------------------------------------------- */
//  A monitor-family request on the client socket (monitor.action,
//  monitor.census).
void sess_policy_on_monitor (sess_server_t *self, const sess_peer_t *peer,
                             proto_msg_t *msg);
//  Before a prompt runs: a hibernated session resumes; a session being
//  closed by a policy refuses (answered here; returns true).
bool sess_policy_before_prompt (sess_server_t *self, sess_session_t *s,
                                const sess_peer_t *peer);
//  Grace deadlines of policy closes, eviction of hibernated sessions.
void sess_policy_tick (sess_server_t *self, int64_t now);
void sess_policy_fini (sess_server_t *self);

#endif
