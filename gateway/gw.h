/*  gw.h - corral-gateway: the client front door (DESIGN §2, §5, §6).

    One process, one libwebsockets loop, no threads.  Clients speak ACP
    (JSON-RPC 2.0) over WebSocket at /acp, or REST/SSE over HTTP on the
    same port.  Behind it, three ZeroMQ sockets, serviced inside the lws
    loop by adopting a dup() of each socket's ZMQ_FD as a raw file:

      session  DEALER conn  corral-session's client API (requests)
      store    DEALER conn  corral-store (history reads, key lookups)
      events   SUB    conn  corral-session's PUB, topic "s/<session-id>/"

    The gateway holds no state that matters: every event a client sees was
    stored before it was published, so any gateway can serve any client
    from any position.  Several gateways may share one port.

    Files, one concern each:
      gw_main.c     configuration, start, wait, stop
      gw_server.c   the lws context, protocols, WebSocket callbacks, timers
      gw_bus.c      the ZeroMQ sockets in the lws loop, calls with
                    continuations, subscriptions, incoming events
      gw_conn.c     connections: shared frames, the bounded outbound
                    queue, writes, pings, idle and slow-client policing
      gw_watch.c    a connection watching a session: live events, store
                    catch-up, gap repair, waiters (prompt replies, loads),
                    permission requests fanned out to watchers
      gw_acp.c      the ACP method table and its handlers
      gw_keys.c     API keys: lookup by hash in the store, a short cache,
                    per-key rate limits
      gw_render.c   events and session records as the JSON clients see
      gw_rpc.c      JSON-RPC framing and the error-code table
      gw_auth.c     key format, hashing, extraction from a request

    Ownership in one sentence: the server owns connections, subscriptions
    and keys; a connection owns its watches and queued frame references;
    a subscription owns its ring of recent events; frames and events are
    reference counted because one event goes to many connections.
*/
#ifndef GW_H
#define GW_H

#include <libwebsockets.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "cm_id.h"
#include "cm_map.h"
#include "cm_strbuf.h"
#include "gw_ratelimit.h"
#include "gw_rpc.h"
#include "proto.h"

#define GW_DRAIN_MAX       512   //  bus messages read from one socket per pass
#define GW_RING            512   //  recent events kept per subscribed session
#define GW_HELD_MAX        32    //  requests held while a key is being checked
#define GW_TENANT_MAX      128   //  bytes of a tenant name
#define GW_CALL_TIMEOUT_MS 10000 //  a bus request not answered by then fails
//  A prompt's answer comes with its turn's end, normally from the event
//  stream; the session's own answer may never come (a restart), so its
//  call is dropped after this long rather than kept forever.
#define GW_PROMPT_TIMEOUT_MS (6LL * 3600 * 1000)
#define GW_PAGE              1000 //  events asked of the store at once
#define GW_WARM_MS           250  //  a new subscription's settling time

typedef struct gw_server gw_server_t;
typedef struct gw_conn gw_conn_t;
typedef struct gw_sub gw_sub_t;
typedef struct gw_watch gw_watch_t;
typedef struct gw_key gw_key_t;

/* ---- configuration (gw_main.c fills it) -------------------------- */

typedef struct {
    char *listen; //  host:port
    char *session_endpoint, *store_endpoint, *events_endpoint;
    char *monitor_endpoint; //  corral-monitor's API (DEALER): readiness, /metrics
    char *monitor_in;       //  corral-monitor's heartbeat input (PUB)
    char *static_dir;
    char *origins; //  comma-separated allowed Origin values; empty = any
    char *tls_cert, *tls_key;
    int64_t max_frame, max_depth;
    int64_t ping_ms, idle_ms, slow_ms;
    int64_t max_conns, max_conns_per_ip;
    int64_t rate, burst;
    int64_t probe_rate, probe_burst; //  per address: unknown keys, readiness
    int64_t queue_frames, queue_bytes;
    int64_t key_cache_ms;
    bool listen_share;
    bool metrics_auth; //  /metrics needs an admin key
    char *log_level;
} gw_config_t;

/* ---- frames: one text, many connections -------------------------- */

//  A frame's bytes start LWS_PRE into buf, as lws_write wants them.
typedef struct {
    uint32_t refs;
    uint32_t len;
    unsigned char buf[];
} gw_frame_t;

gw_frame_t *gw_frame_new (const char *text, size_t len);
//  Takes ownership of a malloc'd NUL-terminated text (freed here).
gw_frame_t *gw_frame_take (char *text);
gw_frame_t *gw_frame_ref (gw_frame_t *f);
void gw_frame_unref (gw_frame_t **f_p);

/* ---- an event as the gateway keeps it ----------------------------- */

#define GW_EV_FRAMES 8
typedef struct {
    uint32_t refs;
    uint64_t seq;
    int64_t ts;
    proto_type_t type;
    bool has_turn;
    cm_uuid_t turn;
    gw_frame_t *acp[GW_EV_FRAMES]; //  ACP notifications, in order
    size_t nacp;
    char *rest;        //  JSON object (REST / SSE body)
    char *perm_params; //  PERMISSION_REQUEST: request params, JSON text
    char *request_id;  //  PERMISSION_REQUEST / _RESOLVED
    char *idem;        //  USER_MESSAGE: the prompt's idempotency key
    char *stop_reason; //  TURN_ENDED
    int64_t code;      //  TURN_ENDED: cm code when failed
    char *message;     //  TURN_ENDED: failure message
} gw_ev_t;

//  Render encoded event bytes.  NULL when they are not an event (logged).
gw_ev_t *gw_ev_new (gw_server_t *self, const void *data, size_t len);
gw_ev_t *gw_ev_ref (gw_ev_t *ev);
void gw_ev_unref (gw_ev_t **ev_p);

/* ---- subscriptions: the sessions this gateway listens to ---------- */

struct gw_sub {
    cm_uuid_t id;
    gw_watch_t *watches; //  list through gw_watch_t.sub_next
    size_t nwatches;
    //  Recent events: a contiguous run of seqs [lo, lo + count).
    gw_ev_t *ring[GW_RING];
    uint64_t lo;
    size_t count;
    int64_t warm_until; //  monotonic ms: subscription may still be settling
};

/* ---- a connection watching a session ------------------------------ */

typedef enum {
    GW_W_CATCHUP, //  reading from the ring or the store
    GW_W_LIVE,    //  following the subscription
} gw_wmode_t;

typedef enum {
    GW_WAIT_PROMPT = 1, //  answer session/prompt after its turn's events
    GW_WAIT_LOAD,       //  answer session/load or attach after the replay
} gw_wait_kind_t;

typedef struct gw_wait {
    gw_wait_kind_t kind;
    json_t *id;    //  JSON-RPC id to answer
    char *idem;    //  PROMPT: idempotency key sent with it
    bool has_turn; //  PROMPT: turn id learnt from user_message
    cm_uuid_t turn;
    uint64_t until; //  answer when next > until (0 = not known yet)
    bool known;     //  until is set
    json_t *result; //  prompt: stopReason; load: the response
    int err;        //  cm code to answer with instead, 0 if none
    char *err_msg;
    struct gw_wait *next;
} gw_wait_t;

struct gw_watch {
    gw_conn_t *conn;
    gw_sub_t *sub;
    gw_wmode_t mode;
    uint64_t next; //  next seq this connection needs
    bool fetching; //  a store read is in flight
    bool recheck;  //  read the store once more after it settles
    gw_wait_t *waits;
    //  The permission request this connection was asked, if any.
    char *perm_request;  //  request id of the pending request seen
    char *perm_params;   //  its params (JSON text)
    uint64_t perm_seq;   //  its permission_request event
    json_t *perm_rpc_id; //  our JSON-RPC id when sent to the client
    //  A pending request behind the watch's start, being read (see
    //  gw_watch_pending_perm): its seq while wanted, 0 once learnt or
    //  settled by an event the watch passed.
    uint64_t perm_want;
    bool perm_fetching; //  its store read is in flight
    gw_watch_t *conn_next, *sub_next;
};

/* ---- connections --------------------------------------------------- */

typedef enum {
    GW_CONN_WS = 1,
    GW_CONN_HTTP,
} gw_conn_kind_t;

typedef enum {
    GW_AUTH_NONE,    //  no key presented
    GW_AUTH_PENDING, //  being looked up
    GW_AUTH_OK,
    GW_AUTH_BAD,
} gw_auth_state_t;

struct gw_conn {
    uint64_t id;
    struct lws *wsi;
    gw_conn_kind_t kind;
    gw_ip_key_t ip;
    bool ip_counted;
    char peer[48];
    //  auth
    gw_auth_state_t auth;
    gw_key_t *key;           //  when OK or PENDING
    char *held[GW_HELD_MAX]; //  frames received while PENDING
    size_t nheld;
    bool initialized;
    //  receive
    cm_strbuf_t rx;
    bool rx_binary;
    //  outbound queue (ring of frame references)
    gw_frame_t **q;
    uint32_t qhead, qlen, qcap;
    size_t qbytes;
    uint32_t qoff; //  HTTP: bytes of the head frame already written
    //  timers (monotonic ms)
    int64_t last_rx_ms, last_tx_ms, stuck_since_ms;
    int64_t last_ping_ms; //  when the last ping went out
    int64_t ping_sent_ms; //  0 none outstanding, -1 one is due, else when sent
    int missed_pongs;
    //  sessions watched
    gw_watch_t *watches;
    //  our requests to the client (permission), id counter
    uint64_t next_rpc_id;
    //  closing
    bool closing;
    bool flush_first; //  write what is queued before closing
    bool close_sent;  //  lws was told to close: it sends the close frame and
                      //  waits for the peer's; later WRITEABLEs do nothing
    bool refuse;      //  close right after the handshake (reason below)
    int close_code;
    char close_reason[124]; //  a WebSocket close reason is at most 123 bytes
    int64_t retry_ms;       //  a probe refused (gw_probe_take): when to retry
    struct gw_http *http;   //  HTTP only
    gw_conn_t *all_next, *all_prev;
};

/* ---- keys ---------------------------------------------------------- */

struct gw_key {
    uint8_t hash[32];
    gw_auth_state_t state; //  PENDING, OK or BAD
    char tenant[GW_TENANT_MAX];
    bool admin;
    cm_uuid_t id;                          //  the key record's id (safe to show)
    uint64_t budget_tokens, budget_micros; //  sent with prompts (docs/limits.md)
    int64_t checked_ms;
    bool refreshing;
    gw_bucket_t bucket;
    uint32_t users; //  connections holding it
};

/* ---- the server ---------------------------------------------------- */

typedef void (*gw_call_cb) (gw_server_t *self, void *arg, int rc, proto_msg_t *reply);
//  Frees a call's arg when the call is never answered (the gateway stops
//  with it in flight); NULL when arg owns nothing (NULL, or borrowed).
typedef void (*gw_call_drop_fn) (void *arg);

typedef struct {
    uint64_t requests, responses, errors, notifications;
    uint64_t events_in, events_out, frames_out, bytes_out;
    uint64_t store_reads, gaps, catchups, slow_closed, rate_limited, probes_limited;
    uint64_t conns_opened, conns_closed, conns_refused;
} gw_stats_t;

struct gw_server {
    gw_config_t *cfg;
    struct lws_context *ctx;
    struct lws_vhost *vhost;
    bool stopping;
    int64_t stop_deadline;
    //  bus
    void *session, *store, *sub;
    struct lws *session_wsi, *store_wsi, *sub_wsi, *stop_wsi;
    void *monitor; //  DEALER to corral-monitor (gw_metrics.c asks it)
    struct lws *monitor_wsi;
    struct proto_beat *beat; //  our heartbeat (gw_metrics.c fills it)
    struct {                 //  the monitor's last readiness answer (gw_metrics.c)
        bool known, ready;
        char reason[192];
        int64_t at_ms; //  monotonic
    } monitor_health;
    uint64_t corr;
    cm_map_t *calls; //  corr -> call
    lws_sorted_usec_list_t kick_sul, tick_sul;
    bool kick_scheduled;
    char epoch[64]; //  store epoch, once known
    //  state
    cm_map_t *conns; //  conn id -> conn
    gw_conn_t *all;  //  every connection, for sweeps
    uint64_t next_conn_id;
    size_t nconns;
    cm_map_t *subs; //  session id -> gw_sub_t
    cm_map_t *keys; //  sha-256 -> gw_key_t
    gw_iplimit_t *iplimit;
    gw_ipbuckets_t *probes; //  per-address probe limit (gw_probe_take)
    struct gw_render *render;
    struct gw_http_srv *http; //  gw_http.c: mounts, static folder, counters
    char **origins;
    size_t norigins;
    gw_stats_t stats;
    int64_t started_ms;
    int64_t last_sweep;
    //  gw_listen.c: accepting stops while out of descriptors
    struct lws *listen_wsi;
    bool accept_paused;
};

int gw_server_run (gw_config_t *cfg);

/* ---- gw_listen.c --------------------------------------------------- */

//  A listening socket for host (an address, "" or 0.0.0.0 for all) and
//  port, SO_REUSEPORT when cfg listen_share.  Returns the fd or -1 (logged).
int gw_listen_open (gw_server_t *self, const char *host, const char *port);
//  Hand it to the lws loop (which owns and closes it from then on).
int gw_listen_adopt (gw_server_t *self, int fd);
int gw_listen_callback (struct lws *wsi, enum lws_callback_reasons reason, void *user,
                        void *in, size_t len);
//  Accept again after a pause for want of descriptors (the server tick).
void gw_listen_tick (gw_server_t *self);

/* ---- gw_bus.c ------------------------------------------------------ */

int gw_bus_open (gw_server_t *self);
void gw_bus_close (gw_server_t *self);
//  Read every socket until it has nothing (or the cap; then kick again).
void gw_bus_drain (gw_server_t *self);
//  Schedule a drain on the next loop pass (after any zmq_send).
void gw_bus_kick (gw_server_t *self);
//  Send a request; cb runs once with the reply, or with CM_E_TIMEOUT /
//  CM_E_UNAVAILABLE.  timeout_ms 0 = wait forever (prompts).  An error
//  reply arrives as rc = its code with the reply decoded.  drop frees arg if
//  cb never runs (calls still in flight at gw_bus_close), or is NULL.
int gw_call_session (gw_server_t *self, proto_type_t type, const void *body,
                     int64_t timeout_ms, gw_call_cb cb, void *arg, gw_call_drop_fn drop);
int gw_call_store (gw_server_t *self, proto_type_t type, const void *body, gw_call_cb cb,
                   void *arg, gw_call_drop_fn drop);
//  The same to corral-monitor: sent once (retried while no connection),
//  CM_E_UNAVAILABLE after timeout_ms.
int gw_call_monitor (gw_server_t *self, proto_type_t type, const void *body,
                     int64_t timeout_ms, gw_call_cb cb, void *arg, gw_call_drop_fn drop);
void gw_bus_tick (gw_server_t *self, int64_t now);
gw_sub_t *gw_sub_get (gw_server_t *self, const cm_uuid_t *id);
void gw_sub_release (gw_server_t *self, gw_sub_t *sub);

/* ---- gw_metrics.c (the rest is in gw_rest.h) ----------------------- */

//  proto_beat fill callback (arg: the server): the gateway's statistics
//  in its heartbeat to corral-monitor (docs/monitor.md).
void gw_metrics_beat (struct proto_beat *beat, void *arg);

/* ---- gw_conn.c ----------------------------------------------------- */

gw_conn_t *gw_conn_new (gw_server_t *self, struct lws *wsi, gw_conn_kind_t kind);
gw_conn_t *gw_conn_find (gw_server_t *self, uint64_t id);
void gw_conn_free (gw_server_t *self, gw_conn_t *conn);
//  Queue a frame (the connection takes a reference).  Replies and
//  requests always go; false means the queue is over its soft limit.
bool gw_conn_push (gw_server_t *self, gw_conn_t *conn, gw_frame_t *f);
//  Queue a text (taken: freed here).
void gw_conn_send_text (gw_server_t *self, gw_conn_t *conn, char *text);
bool gw_conn_has_room (const gw_server_t *self, const gw_conn_t *conn);
//  WRITEABLE: write one frame.  Returns -1 to close.
int gw_conn_write (gw_server_t *self, gw_conn_t *conn);
//  Close with a WebSocket close code and a reason for the client.
void gw_conn_close (gw_server_t *self, gw_conn_t *conn, int code, const char *reason);
void gw_conn_sweep (gw_server_t *self, int64_t now);
void gw_conn_on_pong (gw_server_t *self, gw_conn_t *conn);

/* ---- gw_watch.c ---------------------------------------------------- */

gw_watch_t *gw_watch_find (gw_conn_t *conn, const cm_uuid_t *id);
//  Start watching from after_seq (catch-up first).  NULL when out of memory.
gw_watch_t *gw_watch_new (gw_server_t *self, gw_conn_t *conn, const cm_uuid_t *id,
                          uint64_t after_seq);
void gw_watch_free (gw_server_t *self, gw_watch_t *w);
//  Attaching again on the same connection: the new watch w takes over the
//  permission request the old one asked (same JSON-RPC id, still valid on
//  this connection), so the client is not asked twice.  Call before
//  gw_watch_pending_perm, then free old.
void gw_watch_take_perm (gw_watch_t *w, gw_watch_t *old);
//  The session service's answer to load/attach/resume (or the attach
//  before a prompt): perm_seq is the seq of the running turn's unanswered
//  permission_request event, 0 for none.  A watch starting past it (its
//  replay will not pass the event) reads that event from the ring or the
//  store and asks its client, once, like one it passed; a request taken
//  over from an earlier watch that is no longer pending is withdrawn
//  ($/cancel_request).
void gw_watch_pending_perm (gw_server_t *self, gw_watch_t *w, uint64_t perm_seq);
//  The connection stops watching (detach, close, delete, an abandoned
//  load): a permission request it was asked is withdrawn ($/cancel_request),
//  since no answer to it would count any more.  Call before gw_watch_free.
void gw_watch_withdraw_perm (gw_server_t *self, gw_watch_t *w);
//  An event arrived on the subscription.
void gw_sub_on_event (gw_server_t *self, gw_sub_t *sub, gw_ev_t *ev);
//  Move a watch forward as far as queue room allows.
void gw_watch_pump (gw_server_t *self, gw_watch_t *w);
//  A connection's queue drained: pump its watches.
void gw_conn_on_drained (gw_server_t *self, gw_conn_t *conn);
void gw_watch_add_wait (gw_server_t *self, gw_watch_t *w, gw_wait_t *wait);
//  Find a waiting prompt by JSON-RPC id (for $/cancel_request).
gw_wait_t *gw_watch_find_wait (gw_conn_t *conn, json_t *id, gw_watch_t **w_p);
void gw_wait_free (gw_wait_t *wait);
//  The client answered a permission request we sent.
void gw_watch_on_client_response (gw_server_t *self, gw_conn_t *conn, json_t *id,
                                  json_t *result, bool error);
void gw_watch_tick (gw_server_t *self, int64_t now);

/* ---- gw_acp.c ------------------------------------------------------ */

//  One complete text frame from a WebSocket client.
void gw_acp_on_frame (gw_server_t *self, gw_conn_t *conn, const char *data, size_t len);
//  The key check finished: replay held frames or refuse them.
void gw_acp_on_auth (gw_server_t *self, gw_conn_t *conn);
//  The store's epoch became known: run what connections held meanwhile.
void gw_acp_on_epoch (gw_server_t *self);
//  Run one parsed request or notification through the method table
//  (REST builds msg itself).
void gw_acp_dispatch (gw_server_t *self, gw_conn_t *conn, gw_rpc_msg_t *msg);

/* ---- gw_keys.c ----------------------------------------------------- */

//  Find or start looking up the key with this hash; the connection waits
//  (conn->auth PENDING) until gw_acp_on_auth.  Returns the key entry, or
//  NULL: out of memory, or (conn->close_reason "limited") a key not in
//  the cache from an address past its probe limit (gw_probe_take).
gw_key_t *gw_keys_acquire (gw_server_t *self, gw_conn_t *conn, const uint8_t hash[32]);
#define GW_PROBE_IPS_MAX 100000 //  addresses the probe limit tracks at once

//  Take one token of the probe limit of conn's address (IPv6: its /64): every request
//  that makes the gateway ask the store or the session service before a
//  key is accepted (a key not in the cache, /v1/health/ready) takes one.
//  0, or CM_E_RATE_LIMITED with conn->retry_ms set (and counted).
int gw_probe_take (gw_server_t *self, gw_conn_t *conn);
void gw_keys_release (gw_server_t *self, gw_key_t *key);
//  Take one token of the key's rate limit: 0 or CM_E_RATE_LIMITED.
int gw_keys_take (gw_server_t *self, gw_key_t *key, int64_t *retry_ms);
void gw_keys_tick (gw_server_t *self, int64_t now);
void gw_keys_free_all (gw_server_t *self);

/* ---- helpers -------------------------------------------------------- */

//  A JSON-RPC error for a client from a cm code, with our own message
//  (NULL: the table's).  Queued on the connection.
void gw_send_error (gw_server_t *self, gw_conn_t *conn, json_t *id, int cm_code,
                    const char *message);
//  The same with a detail object (borrowed; filtered by gw_rpc's allowlist).
void gw_send_error_detail (gw_server_t *self, gw_conn_t *conn, json_t *id, int cm_code,
                           const char *message, json_t *detail);
//  Find a request's key and start its check (WebSocket handshake, HTTP).
int gw_server_auth (gw_server_t *self, gw_conn_t *conn, struct lws *wsi);
void gw_send_result (gw_server_t *self, gw_conn_t *conn, json_t *id, json_t *result);

#endif
