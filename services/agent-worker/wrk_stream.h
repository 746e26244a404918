/*  wrk_stream.h - decode a model provider's streaming response into one
    provider-neutral sequence of deltas.

    Backends (DESIGN §7 has the wire facts):
      WRK_API_OPENAI     /v1/chat/completions, stream: true,
                         stream_options.include_usage: true
      WRK_API_ANTHROPIC  /v1/messages, stream: true

    Feed the HTTP body (after checking the status) in pieces of any size;
    deltas come out through the callback in stream order:

      TEXT      text fragment of the answer               (text)
      THINKING  text fragment of the model's reasoning    (text)
      SIGNATURE thinking signature fragment (Anthropic)   (text)
      TOOL_START a tool call began                         (index, id, name)
      TOOL_END  a tool call is complete: its arguments as one JSON object
                text, fragments joined and parsed; "" becomes "{}"
                                                           (index, id, name, text)
      USAGE     token counts so far (cumulative for the response)
      FINISH    the response ended                        (stop_reason)
      ERROR     the provider reported an error in the stream
                                                           (text, error_type, retryable)

    stop_reason is normalised to Anthropic's words: end_turn, max_tokens,
    tool_use, stop_sequence, pause_turn, refusal (OpenAI: stop -> end_turn,
    length -> max_tokens, tool_calls -> tool_use, content_filter -> refusal).
    For OpenAI, whose stream has no per-call end, TOOL_END for every call
    comes (in index order) just before FINISH, and both are delivered at
    `data: [DONE]`: the usage chunk comes after the finish_reason chunk, so
    waiting for [DONE] is what lets USAGE reach the caller before FINISH.
    A body that ends after a finish_reason but without [DONE] is completed
    by wrk_stream_end (some servers and proxies drop the trailer).  OpenAI
    calls are numbered by their wire index; Anthropic calls 0, 1, ... in the
    order their tool_use blocks start (text and thinking blocks not counted).
    An OpenAI call with no id gets "call_<index>"; a server that says "stop"
    after making tool calls finishes with tool_use.  Reasoning text from
    compatible servers (delta.reasoning_content or delta.reasoning) is
    THINKING.

    USAGE: input_tokens is the whole prompt, cached part included (OpenAI's
    prompt_tokens; Anthropic's input_tokens + cache_read_input_tokens +
    cache_creation_input_tokens), cache_tokens the part read from the cache
    (prompt_tokens_details.cached_tokens / cache_read_input_tokens).
    Anthropic sends USAGE at message_start and at message_delta, OpenAI with
    each chunk that carries usage.

    ERROR ends the response like FINISH; nothing after either is decoded.
    retryable is set for overloaded_error, api_error, rate_limit_error,
    timeout_error, OpenAI's rate_limit_exceeded / server_error, and a
    numeric code of 429 or 5xx.  In a delta, strings that do not apply to
    its kind are "" (never NULL).  Anthropic redacted_thinking and server
    tool blocks are skipped (no delta kind carries them yet).

    Malformed input (bad JSON in a data line, a fragment for a tool call
    that never started, arguments that are not a JSON object, too many
    calls, a stream that ends before [DONE]/message_stop) is an error code
    with a message for a person (wrk_stream_error), never a crash.  Limits
    (too many calls, arguments, an id or name, or an event too long) are
    CM_E_TOO_LARGE; everything else malformed is CM_E_UPSTREAM.  After an
    error every later feed/end returns the same code.
*/
#ifndef WRK_STREAM_H
#define WRK_STREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define WRK_STREAM_MAX_EVENT (1u << 20) //  one SSE event
#define WRK_STREAM_MAX_ARGS  (1u << 20) //  one tool call's arguments
#define WRK_STREAM_MAX_CALLS 64         //  tool calls in one response
#define WRK_STREAM_MAX_ID    256        //  a tool call's id, and its name

typedef enum { WRK_API_OPENAI, WRK_API_ANTHROPIC } wrk_api_t;

typedef enum {
    WRK_DELTA_TEXT,
    WRK_DELTA_THINKING,
    WRK_DELTA_SIGNATURE,
    WRK_DELTA_TOOL_START,
    WRK_DELTA_TOOL_END,
    WRK_DELTA_USAGE,
    WRK_DELTA_FINISH,
    WRK_DELTA_ERROR,
} wrk_delta_kind_t;

typedef struct {
    wrk_delta_kind_t kind;
    int index;        //  tool call index within the response
    const char *text; //  fragment / arguments / error message (NUL-terminated)
    size_t text_len;
    const char *id;        //  tool call id
    const char *name;      //  tool name
    uint64_t input_tokens; //  USAGE
    uint64_t output_tokens;
    uint64_t cache_tokens;
    const char *stop_reason; //  FINISH
    const char *error_type;  //  ERROR: provider's type, e.g. overloaded_error
    bool retryable;          //  ERROR: rate limits, overload, server errors
} wrk_delta_t;

//  Pointers in a delta are valid only during the call.  A non-zero return
//  stops decoding and is returned by wrk_stream_feed.
typedef int (*wrk_delta_fn) (void *arg, const wrk_delta_t *delta);

typedef struct wrk_stream wrk_stream_t;

wrk_stream_t *wrk_stream_new (wrk_api_t api, wrk_delta_fn fn, void *arg);
void wrk_stream_destroy (wrk_stream_t **self_p);

//  Decode body bytes.  Returns 0, CM_E_UPSTREAM (malformed stream: see
//  wrk_stream_error), CM_E_TOO_LARGE, CM_E_NOMEM, or the callback's return.
int wrk_stream_feed (wrk_stream_t *self, const char *bytes, size_t len);

//  The body ended.  Returns 0 if the stream was complete (FINISH was
//  delivered, or an ERROR was), CM_E_UPSTREAM if it was cut short.  For an
//  OpenAI body that had a finish_reason but no [DONE] this delivers the
//  TOOL_ENDs and FINISH, so it may also return what feed can.
int wrk_stream_end (wrk_stream_t *self);

//  Message for the last error, "" if none.
const char *wrk_stream_error (const wrk_stream_t *self);

#endif
