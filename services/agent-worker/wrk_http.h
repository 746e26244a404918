/*  wrk_http.h - model calls over libcurl's multi interface, driven by the
    worker's epoll loop (wrk_loop.h).

    One wrk_http_t per worker holds the curl multi handle.  It registers
    curl's sockets in the loop's epoll fd (CURLMOPT_SOCKETFUNCTION) with
    epoll_data.ptr pointing to a tag of kind WRK_TAG_HTTP that it owns, and
    tells the loop when it needs a timeout (CURLMOPT_TIMERFUNCTION plus its
    own retry timers).  Many calls run at once (target: 1 000+).

    A call POSTs a request body to the provider and feeds the streamed
    response into a wrk_stream decoder, handing every delta to the caller as
    it arrives.  The HTTP status is checked before anything is parsed:
      2xx            stream it
      429, 500-599, 529 (overloaded), connection failures and timeouts
                     retried with backoff (Retry-After honoured, else
                     exponential from 500 ms, capped at 20 s) while no delta
                     has been delivered yet and attempts remain; then done
                     with rc CM_E_UPSTREAM and retryable = true
      other 4xx      done with CM_E_UPSTREAM, retryable = false, and the
                     provider's error message (from its JSON error body,
                     bounded and sanitised; never the API key)
    A stream that delivers less than 1 byte/s for stall_ms is cut
    (CURLOPT_LOW_SPEED_LIMIT/TIME): CM_E_TIMEOUT, retryable.
    A stream whose decoder fails (malformed) ends CM_E_UPSTREAM.
    An ERROR delta from the stream is passed to on_delta like any other;
    the call then ends with rc CM_E_UPSTREAM and that delta's retryable.
    Once a delta has been delivered a call is never retried (the caller
    has shown it to people); it reports and the caller decides.

    Provider keys are sent in headers only (Authorization: Bearer for
    OpenAI, x-api-key + anthropic-version: 2023-06-01 for Anthropic), never
    logged (the worker registers them with cm_log_secret).
*/
#ifndef WRK_HTTP_H
#define WRK_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "wrk_stream.h"

typedef struct wrk_http wrk_http_t;
typedef struct wrk_call wrk_call_t;

typedef struct {
    wrk_api_t api;
    const char *base_url; //  OpenAI: ".../v1" (+ "/chat/completions");
                          //  Anthropic: "https://api.anthropic.com" (+ "/v1/messages")
    const char *api_key;  //  may be NULL for local servers
    const char *body;     //  request JSON; copied
    size_t body_len;
    int max_attempts;           //  including the first; 0 = 4
    int64_t connect_timeout_ms; //  0 = 10 s
    int64_t stall_ms;           //  0 = 60 s
} wrk_call_opts_t;

//  The call ended (exactly once per started call, unless cancelled).
//  rc 0: the stream finished (FINISH was delivered).  message is for a
//  person and valid only during the call.
typedef void (*wrk_call_done_fn) (void *arg, int rc, int http_status, bool retryable,
                                  const char *message);

//  The words a client gets for a failed call (DESIGN §6: no provider or
//  library text reaches a client; the provider's own message, which
//  on_done's `message` carries, belongs in the worker's log).  From the
//  call's outcome only: rc, the HTTP status (0 = none) and retryable.
//  Writes at most len bytes into out and returns out.
const char *wrk_call_client_message (int rc, int http_status, bool retryable, char *out,
                                     size_t len);

//  New client registering sockets in epfd.  NULL on failure.
wrk_http_t *wrk_http_new (int epfd);
//  Cancels every call (no callbacks), frees; nulls *self_p.
void wrk_http_destroy (wrk_http_t **self_p);

//  Start a call.  on_delta gets every delta (return non-zero to stop the
//  call: it then ends with that code); on_done gets the outcome.  *out
//  (may be NULL) identifies it for wrk_call_cancel.  Returns 0 or
//  CM_E_NOMEM / CM_E_INVALID (bad options).
int wrk_call_start (wrk_http_t *self, const wrk_call_opts_t *opts, wrk_delta_fn on_delta,
                    wrk_call_done_fn on_done, void *arg, wrk_call_t **out);

//  Stop a call now; neither callback runs afterwards.  The handle is freed.
void wrk_call_cancel (wrk_http_t *self, wrk_call_t *call);

//  The loop got events on a fd registered by this module (tag kind
//  WRK_TAG_HTTP); tag is epoll_data.ptr.
void wrk_http_on_event (wrk_http_t *self, void *tag, uint32_t epoll_events);
//  Milliseconds until wrk_http_on_timeout must run (-1: nothing pending).
int64_t wrk_http_next_timeout (wrk_http_t *self);
//  Run timeouts and retries that are due.
void wrk_http_on_timeout (wrk_http_t *self);
//  Calls in progress (including ones waiting to retry).
size_t wrk_http_active (const wrk_http_t *self);

#endif
