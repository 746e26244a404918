/*  wrk_conv.h - the provider-neutral conversation: its format, checks,
    the user message from an ACP prompt, the assistant message from a model
    stream, repair after a stopped turn, and the request bodies for OpenAI
    and Anthropic.

    A conversation is a JSON array of messages, oldest first.  The store
    keeps each message as one JSON text (messages.put/get).  A message is

        {"role": "user" | "assistant" | "tool", "content": [block, ...]}

    and a block is one of

        {"type": "text",        "text": "..."}
        {"type": "thinking",    "thinking": "...", "signature": "..."}
        {"type": "tool_use",    "id": "...", "name": "...", "input": {...}}
        {"type": "tool_result", "tool_use_id": "...", "content": "...",
                                "is_error": false}

    Which role holds which blocks:
        user       text (at least one block)
        assistant  text, thinking, tool_use (may be empty; repair drops it)
        tool       tool_result only (at least one) - the answers to the
                   tool_use blocks of the assistant message before it

    signature is optional (only Anthropic signs thinking; servers that
    stream reasoning_content do not).  tool_use ids are unique within their
    message, and so are tool_result ids.  Unknown keys in a message or a
    block are ignored and dropped when a request is built.

    Pairing: every tool_use of an assistant message is answered by exactly
    one tool_result in the tool message(s) directly after it.  Both
    providers refuse a conversation that breaks this, so after a cancel or
    a lost worker wrk_conv_repair restores it before the conversation is
    stored (DESIGN §5).

    Errors are cm codes (cm_error.h) with a message for a person in err
    (err may be NULL; a message longer than errlen is cut).  A message that
    breaks the format is CM_E_MISSING (a required key is absent), CM_E_TYPE
    (a key has the wrong JSON type), CM_E_TOO_LARGE (a limit below), or
    CM_E_INVALID (anything else: an unknown role or block type, a block in
    the wrong role, an empty id, a duplicate id).  Messages name the place:
    "message 3: content[1]: tool_use: missing \"id\"".

    All functions are pure (no I/O, no globals) and not thread-safe on the
    same objects.
*/
#ifndef WRK_CONV_H
#define WRK_CONV_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "wrk_cost.h"
#include "wrk_stream.h"

#define WRK_CONV_MAX_MESSAGE  (1u << 23)        //  bytes of one message's JSON text
#define WRK_CONV_MAX_TEXT     (1u << 22)        //  bytes of one text, thinking, result
#define WRK_CONV_MAX_BLOCKS   1024              //  blocks in one message
#define WRK_CONV_MAX_ID       WRK_STREAM_MAX_ID //  bytes of an id or tool name
#define WRK_CONV_MAX_MESSAGES 65536             //  messages in one conversation
#define WRK_CONV_MAX_TOOLS    128               //  tools offered in one request

//  The reason repair gives a tool call that never ran, by default.
#define WRK_CONV_CANCELLED "cancelled: the turn was stopped before this tool ran"

// ---------------------------------------------------------------------------
//  Checks

//  Check one message against the format above.  Returns 0 or an error
//  (see the top of this file).
int wrk_conv_check_message (const json_t *msg, char *err, size_t errlen);

//  Check a conversation: an array of at most WRK_CONV_MAX_MESSAGES valid
//  messages (pairing is not checked: that is repair's job).  Errors as for
//  one message, prefixed "message <i>: ".
int wrk_conv_check (const json_t *conv, char *err, size_t errlen);

//  Parse one stored message (JSON text of len bytes) and check it.  On
//  success *msg_out is a new reference (json_decref).  Errors: CM_E_TOO_LARGE
//  for text over WRK_CONV_MAX_MESSAGE, CM_E_INVALID for text that is not
//  JSON, else as wrk_conv_check_message.
int wrk_conv_parse_message (const char *text, size_t len, json_t **msg_out, char *err,
                            size_t errlen);

// ---------------------------------------------------------------------------
//  The user message from an ACP prompt

//  Build the user message for an ACP session/prompt `prompt`: the JSON text
//  (len bytes) of an array of ACP content blocks.  Each block becomes one
//  text block:
//      text           its text
//      resource_link  "Referenced resource: <name> <uri>"
//      resource       with resource.text: "<resource uri=\"<uri>\">\n<text>\n
//                     </resource>"; with resource.blob: "[resource <uri>
//                     omitted: binary content]"
//      image, audio   "[image omitted]", "[audio omitted]"
//  annotations and _meta are ignored.  On success *msg_out is a new
//  reference to {"role":"user","content":[...]}.  Errors:
//    CM_E_INVALID    not JSON, not an array, an empty array, a block that is
//                    not an object, an unknown block type, a resource with
//                    neither text nor blob, nothing but empty text
//    CM_E_MISSING    a required field (text, uri, name, resource) is absent
//    CM_E_TYPE       a field has the wrong JSON type
//    CM_E_TOO_LARGE  text over WRK_CONV_MAX_MESSAGE, more than
//                    WRK_CONV_MAX_BLOCKS blocks, a block's text over
//                    WRK_CONV_MAX_TEXT
//    CM_E_NOMEM
int wrk_conv_user_from_acp (const char *prompt, size_t len, json_t **msg_out, char *err,
                            size_t errlen);

// ---------------------------------------------------------------------------
//  The assistant message from a model stream

//  A completed tool call of a reply.  The struct and its pointers are owned
//  by the reply and valid until the next wrk_reply_feed or destroy; do not
//  modify input (wrk_reply_message gives the message its own copy).
typedef struct {
    int index;           //  the stream's call index
    const char *id;      //  the provider's call id
    const char *name;    //  tool name
    const json_t *input; //  arguments, always a JSON object
} wrk_tool_call_t;

typedef struct wrk_reply wrk_reply_t;

//  A builder for one model call's answer.  NULL only if out of memory.
wrk_reply_t *wrk_reply_new (void);

//  Free the reply and set *self_p to NULL; NULL or *NULL is fine.
void wrk_reply_destroy (wrk_reply_t **self_p);

//  Feed one delta from wrk_stream, in stream order.  Consecutive TEXT
//  fragments make one text block; THINKING fragments make one thinking
//  block until a SIGNATURE (whose fragments are joined) ends it, so the
//  next THINKING starts a new block; TOOL_START opens a tool_use block in
//  place and TOOL_END completes it with its parsed arguments.  USAGE keeps
//  the largest count seen per field (the stream's counts are cumulative);
//  FINISH records the stop reason; ERROR is ignored (the caller decides
//  what a failed call means).  Returns 0, or:
//    CM_E_UPSTREAM   SIGNATURE outside a thinking block, a second TOOL_START
//                    or TOOL_END for an index, a tool call with an empty id
//                    or name, an id already used in this reply, arguments
//                    that are not a JSON object
//    CM_E_TOO_LARGE  a block over WRK_CONV_MAX_TEXT, more than
//                    WRK_CONV_MAX_BLOCKS blocks
//    CM_E_INVALID    a delta after FINISH
//    CM_E_NOMEM
//  After an error the reply keeps what it had; later feeds are accepted.
int wrk_reply_feed (wrk_reply_t *self, const wrk_delta_t *delta);

//  The assistant message so far, as a new reference in *msg_out:
//  {"role":"assistant","content":[...]} with blocks in stream order, empty
//  text blocks and thinking blocks with neither text nor signature left
//  out, and tool calls that started but never completed left out (they
//  were cut off and never run).  It may have no blocks.  Returns 0,
//  CM_E_UPSTREAM if a text is not valid UTF-8, or CM_E_NOMEM.
int wrk_reply_message (const wrk_reply_t *self, json_t **msg_out);

//  Completed tool calls, in the order of their blocks.
size_t wrk_reply_tool_count (const wrk_reply_t *self);
const wrk_tool_call_t *wrk_reply_tool (const wrk_reply_t *self, size_t i);

//  True once FINISH was fed.  stop_reason is the FINISH's (end_turn,
//  max_tokens, tool_use, ...), "" before.  Valid until destroy.
bool wrk_reply_finished (const wrk_reply_t *self);
const char *wrk_reply_stop_reason (const wrk_reply_t *self);

//  The call's token counts, with model_calls = 1 and cost_micros = 0
//  (price it with wrk_prices_charge).
wrk_usage_t wrk_reply_usage (const wrk_reply_t *self);

// ---------------------------------------------------------------------------
//  Repair

//  Make conv (an array of messages, changed in place) valid for the next
//  model call:
//    - every tool_use of an assistant message gets a tool_result in the
//      tool messages directly after it: a missing one is added as
//      {"type":"tool_result","tool_use_id":id,"content":reason,
//       "is_error":true} to the last of those tool messages, or to a new
//      tool message placed right after the assistant message;
//    - results that answer nothing (an unknown id, a second answer, a tool
//      message with no assistant tool_use before it) are removed, and a
//      tool message left empty is removed;
//    - assistant messages with no blocks are removed.
//  Answers that exist are kept as they are; messages that change are
//  replaced by new objects (others are not modified, so references the
//  caller holds stay valid).  reason (UTF-8) NULL means
//  WRK_CONV_CANCELLED.
//  Returns the number of results added (0 for a valid conversation, so a
//  second repair returns 0), or an error from wrk_conv_check (conv is then
//  unchanged), or CM_E_NOMEM (conv may be partly repaired).
int wrk_conv_repair (json_t *conv, const char *reason, char *err, size_t errlen);

// ---------------------------------------------------------------------------
//  Request bodies

typedef struct {
    const char *model;  //  required
    const char *system; //  system prompt; NULL or "" for none
    //  Tools offered: NULL or an array of at most WRK_CONV_MAX_TOOLS
    //  {"name", "description"?, "input_schema": {...}}.
    const json_t *tools;
    //  Most tokens to generate.  OpenAI: 0 leaves it out.  Anthropic:
    //  required (> 0), and it includes the thinking budget.
    uint32_t max_tokens;
    //  Anthropic only: extended thinking budget, 0 = off; otherwise at
    //  least 1024 and below max_tokens.
    uint32_t thinking_budget;
    //  OpenAI only: send max_completion_tokens (OpenAI's own API, needed by
    //  its reasoning models) instead of max_tokens (what most compatible
    //  servers read).
    bool max_completion_tokens;
} wrk_request_opts_t;

//  Body of a streaming POST /v1/chat/completions for conv (not modified;
//  repair it first).  Mapping:
//    system prompt  first message {"role":"system","content":...}
//    user           {"role":"user","content":<its texts joined by "\n\n">}
//    assistant      {"role":"assistant","content":<texts joined, or null>,
//                    "tool_calls":[{"id","type":"function","function":
//                    {"name","arguments":<input as compact JSON text>}}]}
//                   (no tool_calls key without calls; thinking is dropped;
//                   a message left with neither text nor calls is skipped)
//    tool           one {"role":"tool","tool_call_id","content"} per result
//                   (is_error has no OpenAI field and is dropped)
//  then "tools":[{"type":"function","function":{"name","description",
//  "parameters"}}] if any, max_tokens or max_completion_tokens if set,
//  "stream":true and "stream_options":{"include_usage":true}.
//  Empty user messages are skipped too.  On success *body_out is malloc'd
//  compact JSON text (free), NUL-terminated, and *len_out (if len_out is
//  not NULL) its length; on error *body_out is NULL.  Errors: as wrk_conv_check;
//  CM_E_INVALID for a missing model, bad tools, or a conversation with
//  nothing to send; CM_E_NOMEM.
int wrk_conv_openai_request (json_t *conv, const wrk_request_opts_t *opts,
                             char **body_out, size_t *len_out, char *err, size_t errlen);

//  Body of a streaming POST /v1/messages (headers x-api-key and
//  anthropic-version: 2023-06-01 are the caller's).  Mapping:
//    system prompt  top-level "system" string
//    user, assistant  same role, blocks as stored, minus: empty text blocks;
//                   thinking blocks without a signature; every thinking
//                   block when thinking is off (the API refuses them then)
//    tool           role "user" with its tool_result blocks
//                   {"type","tool_use_id","content","is_error"}
//  Consecutive messages of the same role (after that mapping, and after
//  skipping messages left empty) are merged into one, with tool_result
//  blocks first in a merged user message (the API wants them first).
//  Then "max_tokens", "tools":[{"name","description","input_schema"}] if
//  any, "thinking":{"type":"enabled","budget_tokens"} if on, and
//  "stream":true.  Result and errors as wrk_conv_openai_request, plus
//  CM_E_INVALID for max_tokens 0 or a thinking budget out of range.
int wrk_conv_anthropic_request (json_t *conv, const wrk_request_opts_t *opts,
                                char **body_out, size_t *len_out, char *err,
                                size_t errlen);

#endif
