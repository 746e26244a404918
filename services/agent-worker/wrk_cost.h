/*  wrk_cost.h - token usage counters and their price in micro-dollars.

    A price table maps a model name to three prices in US dollars per
    million tokens: prompt tokens read fresh ("input"), completion tokens
    ("output") and prompt tokens read from the provider's cache ("cache").
    It is loaded from JSON text:

        {"gpt-4o":      {"input": 2.5,  "output": 10, "cache": 1.25},
         "claude-sonnet-4": {"input": 3, "output": 15, "cache": 0.3},
         "*":           {"input": 0,    "output": 0}}

    "cache" is optional and defaults to the input price; any other key is
    an error (so a typo such as "ouput" is caught at start).  A price is a
    JSON number from 0 to WRK_PRICE_MAX_USD; it is kept as an integer count
    of picodollars per token (= micro-dollars per million tokens), so a
    price has six decimal places and 2.5 is held exactly.

    Lookup of a model: the entry with exactly that name, else the entry
    with the longest name that is a prefix of it ("gpt-4o" prices
    "gpt-4o-2024-08-06" - and also "gpt-4o-mini" unless that has its own
    entry), else "*", else every price is zero.  Names compare byte for
    byte, case-sensitively.

    Cost of one call, in micro-dollars (millionths of a US dollar, the unit
    of the bus's cost_micros):

        ((input - cache) * p_input + cache * p_cache + output * p_output)
        / 10^6, rounded half up, saturating at UINT64_MAX

    where input counts the whole prompt with the cached part included (as
    wrk_stream's USAGE does) and cache is clamped to input.  The sum is
    exact in 64-bit integers - each count is split into whole millions and
    a remainder below a million, so no product overflows for prices up to
    WRK_PRICE_MAX_USD - and is rounded once per call.  A turn's or a
    session's cost is the sum of its calls' rounded costs (wrk_usage_add),
    so it differs from pricing the summed tokens by at most half a
    micro-dollar per call.  Anthropic's cache writes are billed at the
    input price (the provider charges 1.25x): a small error, on the low
    side.

    The built-in table (wrk_prices_new_default) and its prices are listed in
    docs/conversation.md.  A loaded table replaces it entirely.
*/
#ifndef WRK_COST_H
#define WRK_COST_H

#include <stddef.h>
#include <stdint.h>

#define WRK_PRICE_MAX_ENTRIES 1024       //  models in one table
#define WRK_PRICE_MAX_NAME    128        //  bytes in a model name
#define WRK_PRICE_MAX_USD     100000.0   //  per million tokens
#define WRK_PRICE_MAX_TEXT    (1u << 20) //  bytes of table JSON text

//  Token and cost counters; the field names are those of the bus's usage
//  record.  Zero-initialise, then add.
typedef struct {
    uint64_t input_tokens; //  whole prompt, cached part included
    uint64_t output_tokens;
    uint64_t cache_tokens; //  part of input_tokens read from the cache
    uint64_t cost_micros;  //  millionths of a US dollar
    uint64_t model_calls;
} wrk_usage_t;

//  One row of a table; prices in picodollars per token.
typedef struct {
    const char *name; //  "*" for the default row
    uint64_t input;
    uint64_t output;
    uint64_t cache;
} wrk_price_t;

typedef struct wrk_prices wrk_prices_t;

//  Parse and validate a table from JSON text of len bytes.  On success
//  returns 0 and *self_p (owned: wrk_prices_destroy).  Errors, with a
//  message naming the model and key in err:
//    CM_E_INVALID    not JSON, not an object, an entry that is not an
//                    object, a missing input/output, an unknown key, a
//                    price that is not a number or is out of range, an
//                    empty model name
//    CM_E_TOO_LARGE  more than WRK_PRICE_MAX_ENTRIES entries, a name
//                    longer than WRK_PRICE_MAX_NAME, text longer than
//                    WRK_PRICE_MAX_TEXT
//    CM_E_NOMEM
int wrk_prices_load (const char *text, size_t len, wrk_prices_t **self_p, char *err,
                     size_t errlen);

//  The built-in table (docs/conversation.md).  NULL only if out of memory.
wrk_prices_t *wrk_prices_new_default (void);

//  Free the table and set *self_p to NULL; NULL or *NULL is fine.  Rows
//  returned by wrk_prices_find are invalid afterwards.
void wrk_prices_destroy (wrk_prices_t **self_p);

//  Number of rows.
size_t wrk_prices_size (const wrk_prices_t *self);

//  The row that prices `model` (see the lookup rule above).  Never NULL:
//  with no match and no "*" row it is a static all-zero row named "*".
//  Valid until the table is destroyed.
const wrk_price_t *wrk_prices_find (const wrk_prices_t *self, const char *model);

//  Cost of usage's tokens at price, in micro-dollars (usage->cost_micros
//  and model_calls are ignored).
uint64_t wrk_price_cost (const wrk_price_t *price, const wrk_usage_t *usage);

//  Price one call: set usage->cost_micros to the cost of its tokens at
//  the row for model, and return it.
uint64_t wrk_prices_charge (const wrk_prices_t *self, const char *model,
                            wrk_usage_t *usage);

//  total += part, every field, saturating at UINT64_MAX.  Use it to sum
//  calls into a turn and turns into a session.
void wrk_usage_add (wrk_usage_t *total, const wrk_usage_t *part);

#endif
