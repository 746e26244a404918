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
    comes (in index order) just before FINISH.

    Malformed input (bad JSON in a data line, a fragment for a tool call
    that never started, arguments that are not a JSON object, too many
    calls, a stream that ends before [DONE]/message_stop) is an error code
    with a message for a person (wrk_stream_error), never a crash.
*/
#ifndef WRK_STREAM_H
#define WRK_STREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define WRK_STREAM_MAX_EVENT (1u << 20) //  one SSE event
#define WRK_STREAM_MAX_ARGS  (1u << 20) //  one tool call's arguments
#define WRK_STREAM_MAX_CALLS 64         //  tool calls in one response

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
//  delivered, or an ERROR was), CM_E_UPSTREAM if it was cut short.
int wrk_stream_end (wrk_stream_t *self);

//  Message for the last error, "" if none.
const char *wrk_stream_error (const wrk_stream_t *self);

#endif
