/*  wrk_worker.h - corral-worker: runs agent turns for the session service.

    One process, one epoll loop (wrk_server.c), many turns at once:
      - the session socket (a DEALER; its ZMQ_FD, dup'ed, is edge-triggered,
        so every wake-up drains while ZMQ_EVENTS says POLLIN),
      - libcurl's sockets for model calls (wrk_http),
      - command pipes and pidfds (wrk_exec),
      - timers: curl's, command deadlines, the 1 s heartbeat.

    A turn (wrk_turn.c) is the built-in agent loop: call the model with the
    conversation and the tools; stream its text and thinking as events;
    when it asks for tools, run them one by one - asking the session for
    permission where the mode says so - and send the results back; repeat
    until the model stops, a limit is hit, the turn is cancelled or fails.
    Whatever happens, the turn ends with exactly one TURN_DONE or
    TURN_FAILED that carries the new conversation messages, repaired so
    that every tool call has a result (the next model call is valid).

    Worker protocol (DESIGN §3): READY on connect, HEARTBEAT every second
    both ways; a session silent for 3 s is presumed gone and the socket is
    rebuilt; DISCONNECT from the session means "announce yourself again".
*/
#ifndef WRK_WORKER_H
#define WRK_WORKER_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "cm_id.h"
#include "proto.h"
#include "wrk_conv.h"
#include "wrk_cost.h"
#include "wrk_exec.h"
#include "wrk_http.h"
#include "wrk_loop.h"
#include "wrk_path.h"
#include "wrk_procs.h"
#include "wrk_tools.h"

#define WRK_HEARTBEAT_MS   1000
#define WRK_HEARTBEAT_DEAD 3
#define WRK_MAX_TURNS      100000

typedef struct {
    char *endpoint;
    char *worker_id;
    int64_t capacity;
    char *openai_base_url, *openai_api_key;
    char *anthropic_base_url, *anthropic_api_key;
    char *prices;
    int64_t max_model_calls;
    int64_t max_tokens;
    int64_t max_turn_tokens; //  input + output over a whole turn; 0 = no limit
    int64_t thinking_budget;
    int64_t stall_ms;
    int64_t max_attempts;
    int64_t turn_memory_limit; //  bytes of a command tree's RSS; 0 = off (wrk_memlimit.c)
    int64_t turn_memory_poll_ms; //  how often the trees are measured
    int64_t orphan_sweep_ms;     //  how often leftovers of dead workers are looked for
    char *log_level;
    char *monitor_in; //  corral-monitor's heartbeat input (PUB, connect)
} wrk_config_t;

#define WRK_OUTBOX_MAX (256u << 20) //  bytes waiting for the session socket

typedef struct wrk_server wrk_server_t;

//  A message waiting for room on the session socket.
typedef struct wrk_out {
    struct wrk_out *next;
    size_t size;
    char data[];
} wrk_out_t;
typedef struct wrk_turn wrk_turn_t;

typedef enum {
    TURN_CALLING,   //  a model call is streaming
    TURN_TOOLS,     //  between tools (transient)
    TURN_WAIT_PERM, //  a tool waits for a person's answer
    TURN_EXEC,      //  run_command is running
    TURN_FINISHED,  //  the final message went out
} wrk_turn_state_t;

//  epoll tag for a turn's command fds.
typedef struct {
    wrk_tag_t tag;
    wrk_turn_t *turn;
} wrk_exec_tag_t;

struct wrk_turn {
    wrk_server_t *server;
    cm_uuid_t id, session;
    char *backend, *model, *mode, *cwd;
    char *roots[WRK_PATH_MAX_ROOTS];
    wrk_scope_t scope;
    json_t *conv; //  whole conversation; new messages start at `from`
    size_t from;
    json_t *results; //  tool results of the current round (array of blocks)
    json_t *allow;   //  "tool:target" strings allowed always
    wrk_turn_state_t state;
    int64_t max_calls, calls;
    wrk_call_t *call;
    wrk_reply_t *reply;
    size_t tool_index; //  next tool of the current reply
    char perm_id[32];
    unsigned perm_seq;
    wrk_exec_t *exec;
    wrk_exec_tag_t exec_tag;
    int exec_fds[2];
    char exec_call_id[WRK_CONV_MAX_ID + 1];
    wrk_usage_t usage;
    bool cancelled;
    uint64_t budget_tokens, budget_micros; //  left for the turn (W_TURN); 0 = none
    uint64_t mem_peak; //  largest RSS measured of the running command's tree
    char *mem_msg;     //  set when the memory limit killed the command
    //  statistics (wrk_stats.c): the model call and the tool running now
    uint64_t call_start_ns, tool_start_ns; //  0: none
    bool first_output;                     //  the call streamed something
    char tool_name[32];
    wrk_turn_t *next;
};

struct wrk_server {
    wrk_config_t *cfg;
    int epfd;
    void *sock;
    int zfd; //  dup of ZMQ_FD, registered in epfd
    wrk_tag_t zmq_tag, stop_tag;
    wrk_http_t *http;
    wrk_prices_t *prices;
    char **env;    //  scrubbed environment for commands
    json_t *tools; //  schema offered to models
    wrk_turn_t *turns;
    size_t nturns;
    wrk_turn_t *dead;                //  finished, freed after the current event batch
    wrk_out_t *outbox, *outbox_tail; //  in order, before anything new
    size_t outbox_bytes;
    int64_t last_heard_ms, last_beat_ms;
    proto_buf_t buf;
    proto_msg_t msg;
    uint64_t orphans_reaped;
    struct wrk_stats *stats; //  wrk_stats.c
    struct proto_beat *beat; //  heartbeat to corral-monitor
    //  limits (wrk_memlimit.c, wrk_orphans.c)
    wrk_procs_t procs;       //  scratch snapshot of /proc
    int64_t mem_next_ms;     //  next measurement of command trees
    uint64_t mem_kills;      //  commands killed by the memory limit
    char mark[WRK_MARK_MAX]; //  this incarnation's CORRAL_WORKER_MARK value
    int64_t sweep_next_ms;   //  next orphan sweep
    uint64_t orphans_killed; //  leftovers of dead workers killed
};

/* ---- wrk_server.c ---- */
int wrk_server_run (wrk_config_t *cfg);
//  Send a message to the session service.  When the socket is full or not
//  connected, the message waits in an ordered outbox (at most
//  WRK_OUTBOX_MAX bytes) sent before anything newer; heartbeats are not
//  kept.
int wrk_send (wrk_server_t *self, proto_type_t type, const void *body);
//  Send an event of a turn: the event's head fields are the session's.
int wrk_send_event (wrk_server_t *self, wrk_turn_t *t, proto_type_t type, void *body);

/* ---- wrk_memlimit.c ---- */
//  When the command trees must be measured next; INT64_MAX when no command
//  runs or the limit is off.
int64_t wrk_memlimit_deadline (wrk_server_t *self);
//  Measure every running command's tree when due; a tree over the limit is
//  killed, an EV_POLICY event (policy "memory", action "kill") goes out,
//  and the turn fails with CM_E_MEMORY_LIMIT once its command is reaped.
void wrk_memlimit_tick (wrk_server_t *self, int64_t now);
//  The tool result of a command the limit killed: its output so far, then
//  "[<t->mem_msg>; the command's processes were killed]" as the status.
void wrk_memlimit_result (wrk_turn_t *t, wrk_tool_result_t *r);

/* ---- wrk_orphans.c ---- */
//  Put this incarnation's marker in the commands' environment (self->env).
int wrk_orphans_init (wrk_server_t *self);
//  Kill processes that dead workers left behind (at start, then every
//  cfg->orphan_sweep_ms); each is logged and counted in orphans_killed.
void wrk_orphans_sweep (wrk_server_t *self, int64_t now);

/* ---- wrk_stats.c: statistics for the heartbeat (docs/monitor.md) ---- */
struct wrk_stats *wrk_stats_new (void);
void wrk_stats_destroy (struct wrk_stats **self_p);
//  A model call of t starts / streamed its first output / ended (ok: a
//  complete reply, whose usage u is counted; u may be NULL when failed).
void wrk_stats_call_start (wrk_turn_t *t);
void wrk_stats_call_output (wrk_turn_t *t);
void wrk_stats_call_end (wrk_turn_t *t, bool ok, const wrk_usage_t *u);
//  A tool of t starts running / has its result.
void wrk_stats_tool_start (wrk_turn_t *t, const char *tool);
void wrk_stats_tool_end (wrk_turn_t *t);
//  proto_beat fill callback; arg is the wrk_server_t.
struct proto_beat;
void wrk_stats_fill (struct proto_beat *beat, void *arg);

/* ---- wrk_turn.c ---- */
void wrk_turn_start (wrk_server_t *self, const proto_w_turn_t *req);
void wrk_turn_cancel (wrk_server_t *self, const cm_uuid_t *id);
void wrk_turn_permission (wrk_server_t *self, const proto_w_perm_answer_t *ans);
void wrk_turn_on_exec (wrk_turn_t *t);
int64_t wrk_turns_next_deadline (wrk_server_t *self);
void wrk_turns_tick (wrk_server_t *self, int64_t now);
void wrk_turns_fini (wrk_server_t *self);
//  Free turns that finished during the last batch of events.
void wrk_turns_reap (wrk_server_t *self);

#endif
