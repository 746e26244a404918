/*  cli_ws.h - a small ACP client over libwebsockets for corral's WebSocket
    commands (tail, chat, acp).

    One object owns one lws context, one WebSocket to the gateway's /acp
    (ws:// or wss://), and the loop: cli_ws_run() serves the socket, an
    input fd (stdin) adopted as a raw file, SIGINT/SIGTERM through a
    signalfd, and timers, all on one thread.  Every handler is called from
    inside cli_ws_run() and may call any function here.

    Two ways to use it:

    - Raw (handlers.on_text set; the `corral acp` bridge): every whole text
      message the gateway sends is handed over as received; cli_ws_send()
      queues text frames.  No JSON-RPC is spoken by this module.

    - ACP (on_text NULL; tail, chat): after every (re)connection the module
      sends `initialize` and, when a session is watched (cli_ws_watch), an
      `_corral/session/attach {sessionId, afterSeq, epoch}` from the last
      seq seen, then calls on_ready.  Both are retried while the gateway
      answers -32011 (the stack is starting).  Every notification whose
      params carry `_meta.seq` for the watched session moves the last seq
      forward; one below it is a duplicate and is dropped before
      on_message, so a stream resumed after a drop has no gap and no
      duplicate.  If the gateway answers the attach with -32008 (the
      history's epoch changed, or the position is past the end), on_expired
      chooses where to continue.  Requests get a reply callback; when the
      connection drops, every pending request's callback gets an error with
      code CLI_WS_DROPPED.

    Reconnects: when the connection drops (or cannot be made), on_drop
    decides whether to try again; the waits grow 250 ms, 500 ms, ... up to
    5 s and start over once a connection is ready.

    Bounds: a message from the gateway may be at most CLI_WS_RX_MAX bytes
    (past it the connection is closed and treated as a drop); at most
    CLI_WS_PENDING_MAX requests wait for answers at once.  The send queue
    is not capped here: a producer (the bridge) watches cli_ws_queued()
    and stops reading its input above its own high-water mark; on_drained
    says when the queue fell below half of CLI_WS_QUEUE_HIGH.
*/
#ifndef CLI_WS_H
#define CLI_WS_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cli_target.h"

#define CLI_WS_RX_MAX      (64u << 20) //  bytes of one message from the gateway
#define CLI_WS_PENDING_MAX 64          //  requests awaiting an answer
#define CLI_WS_QUEUE_HIGH  (4u << 20)  //  suggested high-water mark of the send queue

//  The error code a pending request's callback gets when the connection
//  dropped before its answer (not a JSON-RPC code; the server never sends 0).
#define CLI_WS_DROPPED 0

typedef struct cli_ws cli_ws_t;

//  The answer to a request: exactly one of result / error is non-NULL.
//  Both are borrowed for the call.
typedef void (cli_ws_reply_fn) (cli_ws_t *ws, const json_t *result, const json_t *error,
                                void *arg);

typedef struct {
    //  Raw mode: connected (every time).
    void (*on_open) (cli_ws_t *ws, void *arg);
    //  Raw mode: one whole text message; text is NUL-terminated, valid for
    //  the call.  Setting this selects raw mode.
    void (*on_text) (cli_ws_t *ws, const char *text, size_t len, void *arg);
    //  ACP mode: initialize answered and, when watching, the attach too
    //  (attach is its result, NULL when not watching).  After every
    //  (re)connection.
    void (*on_ready) (cli_ws_t *ws, const json_t *attach, void *arg);
    //  ACP mode: a notification (id NULL) or a request from the gateway;
    //  msg is the whole message, params may be NULL.  Borrowed.
    void (*on_message) (cli_ws_t *ws, const char *method, const json_t *params,
                        const json_t *id, void *arg);
    //  ACP mode: initialize or the attach failed with a JSON-RPC error
    //  other than -32011 and -32008 (e.g. -32000 no key, -32002 no such
    //  session).  The handler usually stops the loop.
    void (*on_refused) (cli_ws_t *ws, const char *method, const json_t *error, void *arg);
    //  ACP mode: the attach got -32008.  Return the seq to continue after
    //  (the watch then takes the gateway's current epoch), or -1 to stop
    //  with CLI_FAIL.  Without this handler: stop.
    int64_t (*on_expired) (cli_ws_t *ws, const json_t *error, void *arg);
    //  The connection is gone or could not be made: code is the close code
    //  the gateway sent (0 when none), why says what happened, was_open
    //  whether it had been established.  Return true to reconnect after
    //  retry_ms, false to end cli_ws_run() (with the rc of cli_ws_stop if
    //  it was called, else CLI_UNREACHABLE).  Without this handler: end.
    //  A close with 1008 before the handshake was done (the key refused)
    //  ends cli_ws_run() with CLI_REFUSED whatever this returns.
    bool (*on_drop) (cli_ws_t *ws, int code, const char *why, bool was_open, int retry_ms,
                     void *arg);
    //  The input fd (cli_ws_input) is readable, or at its end; the handler
    //  reads it itself.
    void (*on_input) (cli_ws_t *ws, int fd, void *arg);
    //  SIGINT or SIGTERM arrived (cli_ws_catch_signals).
    void (*on_signal) (cli_ws_t *ws, int signo, void *arg);
    //  The send queue fell below CLI_WS_QUEUE_HIGH / 2 bytes.
    void (*on_drained) (cli_ws_t *ws, void *arg);
    //  After each event that called handlers (a message and its reply
    //  callback, a drop and the failed requests' callbacks, a read of the
    //  input, signals, the timer): the one place to act on what they
    //  changed (chat: take the next typed line, pause or resume stdin).
    void (*on_after) (cli_ws_t *ws, void *arg);
} cli_ws_handlers_t;

typedef struct {
    const char *url;         //  ws://host:port/path or wss://...
    const char *key;         //  API key for the Authorization header; NULL or "" = none
    const char *ca_file;     //  PEM file of CAs for wss (NULL = the system's)
    const char *client_name; //  clientInfo.name in initialize
    cli_ws_handlers_t on;
    void *arg; //  passed to every handler
} cli_ws_opts_t;

//  A client for opts->url; strings are copied.  Returns NULL with a
//  message in err (a malformed URL, lws could not start).  Nothing
//  connects before cli_ws_run().
cli_ws_t *cli_ws_new (const cli_ws_opts_t *opts, char *err, size_t errlen);

//  For a command: a client of target's ACP URL and key (client name: prog
//  with '-' for ' ') calling on with arg; with signals, SIGINT and SIGTERM
//  go to on_signal (cli_ws_catch_signals).  Returns 0 with *ws set, or,
//  after "<prog>: <why>" on stderr, CLI_USAGE (the URL) or CLI_FAIL.
int cli_ws_open (cli_ws_t **ws, const char *prog, const cli_target_t *target,
                 const char *ca_file, const cli_ws_handlers_t *on, void *arg,
                 bool signals);

//  Close everything and free; idempotent, nulls *self_p.
void cli_ws_destroy (cli_ws_t **self_p);

//  Connect and serve until cli_ws_stop() (or a drop that on_drop does not
//  want to retry).  Returns the exit code given to cli_ws_stop, or
//  CLI_UNREACHABLE after an unretried drop.
int cli_ws_run (cli_ws_t *self);

//  End cli_ws_run() with rc: the send queue is flushed first (10 s at
//  most) and the WebSocket closed with 1000.
void cli_ws_stop (cli_ws_t *self, int rc);

//  Watch an input fd (stdin): on_input is called while it is readable.
//  The fd is dup()ed; the caller keeps its own.  enable=false pauses
//  (backpressure), true resumes.  Returns 0 or -1.
int cli_ws_input (cli_ws_t *self, int fd);
void cli_ws_input_enable (cli_ws_t *self, bool enable);
//  Stop watching the input fd (at its end).  After a hangup (a pipe's
//  writer closed) on_input is called until the handler calls this.
void cli_ws_input_close (cli_ws_t *self);

//  Take SIGINT and SIGTERM through a signalfd into the loop (on_signal)
//  instead of their default action.  Returns 0 or -1.
int cli_ws_catch_signals (cli_ws_t *self);

//  Whether a connection is established (and, in ACP mode, ready).
bool cli_ws_connected (const cli_ws_t *self);

//  Queue one text frame (copied).  Returns 0, or -1 when not connected or
//  out of memory (nothing queued).
int cli_ws_send (cli_ws_t *self, const char *text, size_t len);
//  Bytes queued and not yet written.
size_t cli_ws_queued (const cli_ws_t *self);

//  ACP mode.  Send a request; params is taken (may be NULL).  cb (may be
//  NULL) gets the answer.  Returns the id (> 0), or -1 when not connected,
//  too many are pending, or out of memory (cb is not called then).
int64_t cli_ws_request (cli_ws_t *self, const char *method, json_t *params,
                        cli_ws_reply_fn *cb, void *arg);
//  Send a notification; params is taken.  Returns 0 or -1.
int cli_ws_notify (cli_ws_t *self, const char *method, json_t *params);
//  Answer a request of the gateway's; result is taken.  Returns 0 or -1.
int cli_ws_respond (cli_ws_t *self, const json_t *id, json_t *result);

//  Answer a request of the gateway's with a JSON-RPC error.  Returns 0 or -1.
int cli_ws_respond_error (cli_ws_t *self, const json_t *id, int code,
                          const char *message);

//  Watch a session: from now on, and after every reconnection, attach it
//  from the last seq seen (initially after_seq) within epoch (NULL = any;
//  the gateway's answer fills it in).  If connected and ready, attaches at
//  once.  Does not attach on the current connection when attach_now is
//  false (session/new and session/load already watch).
void cli_ws_watch (cli_ws_t *self, const char *session_id, int64_t after_seq,
                   const char *epoch, bool attach_now);
//  The watched session's last seq seen, and its epoch ("" when unknown).
int64_t cli_ws_last_seq (const cli_ws_t *self);
const char *cli_ws_epoch (const cli_ws_t *self);

//  Schedule fn once after ms (replacing a timer not yet fired); ms < 0
//  cancels it.  One timer per client, for the command's own use.
void cli_ws_timer (cli_ws_t *self, int ms, void (*fn) (cli_ws_t *ws, void *arg));

//  A short text for a JSON-RPC error object: "message (code)", in buf,
//  safe for a terminal (cli_render_clean_line).
const char *cli_ws_error_text (const json_t *error, char *buf, size_t size);
//  The error's code (0 if it has none).
int cli_ws_error_code (const json_t *error);
//  A request the command cannot go on without failed: print
//  "<prog>: <method> failed: <message> (<code>)" on stderr and stop with
//  the exit code the error stands for (cli_render_exit_code).
void cli_ws_stop_refused (cli_ws_t *self, const char *prog, const char *method,
                          const json_t *error);

#endif
