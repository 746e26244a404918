/*  fuzz_sse_stream.c - libFuzzer target on the model stream decoders.

    Input: one control byte, then the HTTP body.  Bit 0 of the control byte
    picks the API (OpenAI / Anthropic); the other seven bits pick where the
    body is cut into two feeds, proportionally to its length, so the
    fuzzer also explores pieces that end mid-line, mid-CRLF or mid-UTF-8.

    Any body must decode to deltas and/or an error code, never a crash, a
    leak or an unbounded allocation, and the deltas must keep the contract
    of wrk_stream.h: strings NUL-terminated at their length, each tool call
    started once before it ends, TOOL_END arguments a JSON object, nothing
    after FINISH or ERROR, and wrk_stream_end returning 0 only after one of
    them.
*/
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "wrk_stream.h"

typedef struct {
    bool started[WRK_STREAM_MAX_CALLS];
    bool ended[WRK_STREAM_MAX_CALLS];
    bool terminal;
} s_state_t;

static int s_on_delta (void *arg, const wrk_delta_t *d)
{
    s_state_t *st = (s_state_t *)arg;
    if (st->terminal) abort ();
    if (!d->text || !d->id || !d->name || !d->stop_reason || !d->error_type) abort ();
    if (strlen (d->text) != d->text_len) abort ();
    switch (d->kind) {
    case WRK_DELTA_TOOL_START:
        if (d->index < 0 || d->index >= WRK_STREAM_MAX_CALLS) abort ();
        if (st->started[d->index] || !*d->id || !*d->name) abort ();
        if (strlen (d->id) > WRK_STREAM_MAX_ID || strlen (d->name) > WRK_STREAM_MAX_ID)
            abort ();
        st->started[d->index] = true;
        break;
    case WRK_DELTA_TOOL_END: {
        if (d->index < 0 || d->index >= WRK_STREAM_MAX_CALLS) abort ();
        if (!st->started[d->index] || st->ended[d->index]) abort ();
        st->ended[d->index] = true;
        json_t *args = json_loadb (d->text, d->text_len, 0, NULL);
        if (!json_is_object (args)) abort ();
        json_decref (args);
        break;
    }
    case WRK_DELTA_FINISH:
        for (const char *p = d->stop_reason; *p; p++)
            if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_'))
                abort ();
        st->terminal = true;
        break;
    case WRK_DELTA_ERROR:
        st->terminal = true;
        break;
    default:
        break;
    }
    return 0;
}

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
    if (size == 0) return 0;
    wrk_api_t api = (data[0] & 1) ? WRK_API_ANTHROPIC : WRK_API_OPENAI;
    const char *body = (const char *)data + 1;
    size_t len = size - 1;
    size_t split = len * (size_t)(data[0] >> 1) / 127;

    s_state_t st;
    memset (&st, 0, sizeof st);
    wrk_stream_t *stream = wrk_stream_new (api, s_on_delta, &st);
    if (!stream) abort ();
    int rc = wrk_stream_feed (stream, body, split);
    if (rc == 0) rc = wrk_stream_feed (stream, body + split, len - split);
    int end_rc = wrk_stream_end (stream);
    //  A failed feed is sticky and explained; a clean end means the
    //  response really finished.
    if (rc != 0 && (end_rc != rc || !*wrk_stream_error (stream))) abort ();
    if (end_rc == 0 && !st.terminal) abort ();
    if (end_rc != 0 && !*wrk_stream_error (stream)) abort ();
    wrk_stream_destroy (&stream);
    return 0;
}
