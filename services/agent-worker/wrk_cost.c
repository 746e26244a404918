/*  wrk_cost.c - price table and usage counters (contract in wrk_cost.h). */
#include "wrk_cost.h"

#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cm_error.h"

#define S_MILLION 1000000u

struct wrk_prices {
    wrk_price_t *rows;
    size_t count;
};

//  List prices in USD per million tokens; docs/conversation.md shows the
//  same table.  Unknown models cost nothing rather than a guess.
static const char s_default_json[] =
    "{"
    "\"gpt-4o\":{\"input\":2.5,\"output\":10,\"cache\":1.25},"
    "\"gpt-4o-mini\":{\"input\":0.15,\"output\":0.6,\"cache\":0.075},"
    "\"gpt-4.1\":{\"input\":2,\"output\":8,\"cache\":0.5},"
    "\"gpt-4.1-mini\":{\"input\":0.4,\"output\":1.6,\"cache\":0.1},"
    "\"gpt-4.1-nano\":{\"input\":0.1,\"output\":0.4,\"cache\":0.025},"
    "\"o4-mini\":{\"input\":1.1,\"output\":4.4,\"cache\":0.275},"
    "\"claude-opus-4\":{\"input\":15,\"output\":75,\"cache\":1.5},"
    "\"claude-opus-4-5\":{\"input\":5,\"output\":25,\"cache\":0.5},"
    "\"claude-opus-4-6\":{\"input\":5,\"output\":25,\"cache\":0.5},"
    "\"claude-sonnet-4\":{\"input\":3,\"output\":15,\"cache\":0.3},"
    "\"claude-haiku-4-5\":{\"input\":1,\"output\":5,\"cache\":0.1},"
    "\"claude-3-5-haiku\":{\"input\":0.8,\"output\":4,\"cache\":0.08},"
    "\"*\":{\"input\":0,\"output\":0,\"cache\":0}"
    "}";

static const wrk_price_t s_zero = {.name = "*"};

static uint64_t s_add (uint64_t a, uint64_t b)
{
    return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}

//  A price in USD per million tokens -> picodollars per token.
static int s_price (const json_t *entry, const char *model, const char *key,
                    uint64_t *out, char *err, size_t errlen)
{
    const json_t *value = json_object_get (entry, key);
    if (!json_is_number (value))
        return cm_err_set (err, errlen, CM_E_INVALID, "price table: \"%s\": \"%s\" %s",
                           model, key, value ? "must be a number" : "is missing");
    double usd = json_number_value (value);
    if (!isfinite (usd) || usd < 0 || usd > WRK_PRICE_MAX_USD)
        return cm_err_set (err, errlen, CM_E_INVALID,
                           "price table: \"%s\": \"%s\" must be from 0 to %.0f USD per "
                           "million tokens",
                           model, key, WRK_PRICE_MAX_USD);
    *out = (uint64_t)(usd * S_MILLION + 0.5); //  round half up; no libm needed
    return 0;
}

static int s_row (const char *model, const json_t *entry, wrk_price_t *row, char *err,
                  size_t errlen)
{
    if (!*model)
        return cm_err_set (err, errlen, CM_E_INVALID, "price table: empty model name");
    if (strlen (model) > WRK_PRICE_MAX_NAME)
        return cm_err_set (err, errlen, CM_E_TOO_LARGE,
                           "price table: model name longer than %d bytes",
                           WRK_PRICE_MAX_NAME);
    if (!json_is_object (entry))
        return cm_err_set (
            err, errlen, CM_E_INVALID,
            "price table: \"%s\" must be an object {input, output, cache?}", model);
    const char *key;
    const json_t *value;
    json_object_foreach ((json_t *)entry, key, value)
    {
        if (strcmp (key, "input") && strcmp (key, "output") && strcmp (key, "cache"))
            return cm_err_set (err, errlen, CM_E_INVALID,
                               "price table: \"%s\": unknown key \"%s\" (expected input, "
                               "output, cache)",
                               model, key);
    }
    int rc = s_price (entry, model, "input", &row->input, err, errlen);
    if (!rc) rc = s_price (entry, model, "output", &row->output, err, errlen);
    if (rc) return rc;
    row->cache = row->input;
    if (json_object_get (entry, "cache"))
        rc = s_price (entry, model, "cache", &row->cache, err, errlen);
    if (rc) return rc;
    row->name = strdup (model);
    return row->name ? 0 : cm_err_set (err, errlen, CM_E_NOMEM, "out of memory");
}

int wrk_prices_load (const char *text, size_t len, wrk_prices_t **self_p, char *err,
                     size_t errlen)
{
    *self_p = NULL;
    if (len > WRK_PRICE_MAX_TEXT)
        return cm_err_set (err, errlen, CM_E_TOO_LARGE,
                           "price table: longer than %u bytes", WRK_PRICE_MAX_TEXT);
    json_error_t jerr;
    json_t *root = json_loadb (text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return cm_err_set (err, errlen, CM_E_INVALID,
                           "price table: not JSON: %s (line %d)", jerr.text, jerr.line);
    int rc = 0;
    wrk_prices_t *self = NULL;
    if (!json_is_object (root)) {
        rc = cm_err_set (
            err, errlen, CM_E_INVALID,
            "price table: must be an object {\"model\": {input, output, cache}}");
        goto done;
    }
    if (json_object_size (root) > WRK_PRICE_MAX_ENTRIES) {
        rc = cm_err_set (err, errlen, CM_E_TOO_LARGE, "price table: more than %d models",
                         WRK_PRICE_MAX_ENTRIES);
        goto done;
    }
    self = calloc (1, sizeof *self);
    if (self) self->rows = calloc (json_object_size (root) + 1, sizeof *self->rows);
    if (!self || !self->rows) {
        rc = cm_err_set (err, errlen, CM_E_NOMEM, "out of memory");
        goto done;
    }
    const char *model;
    json_t *entry;
    json_object_foreach (root, model, entry)
    {
        rc = s_row (model, entry, &self->rows[self->count], err, errlen);
        if (rc) goto done;
        self->count++;
    }
done:
    json_decref (root);
    if (rc)
        wrk_prices_destroy (&self);
    else
        *self_p = self;
    return rc;
}

wrk_prices_t *wrk_prices_new_default (void)
{
    wrk_prices_t *self = NULL;
    wrk_prices_load (s_default_json, sizeof s_default_json - 1, &self, NULL, 0);
    return self;
}

void wrk_prices_destroy (wrk_prices_t **self_p)
{
    if (!self_p || !*self_p) return;
    wrk_prices_t *self = *self_p;
    for (size_t i = 0; i < self->count; i++) free ((char *)self->rows[i].name);
    free (self->rows);
    free (self);
    *self_p = NULL;
}

size_t wrk_prices_size (const wrk_prices_t *self)
{
    return self->count;
}

const wrk_price_t *wrk_prices_find (const wrk_prices_t *self, const char *model)
{
    const wrk_price_t *best = NULL, *star = NULL;
    size_t best_len = 0;
    for (size_t i = 0; i < self->count; i++) {
        const wrk_price_t *row = &self->rows[i];
        if (!strcmp (row->name, "*")) {
            star = row;
            continue;
        }
        size_t n = strlen (row->name);
        //  The exact name is also the longest possible prefix.
        if (n > best_len && !strncmp (model, row->name, n)) {
            best = row;
            best_len = n;
        }
    }
    return best ? best : star ? star : &s_zero;
}

//  Add tokens * price / 10^6 to whole + frac / 10^6 without overflow:
//  tokens = q * 10^6 + r, so the product is q * price (whole) plus
//  r * price / 10^6, with r * price < 10^6 * 10^11 < 2^64.
static void s_term (uint64_t tokens, uint64_t price, uint64_t *whole, uint64_t *frac)
{
    uint64_t q = tokens / S_MILLION, r = tokens % S_MILLION;
    uint64_t part = r * price;
    if (q && price > UINT64_MAX / q)
        *whole = UINT64_MAX;
    else
        *whole = s_add (*whole, q * price);
    *whole = s_add (*whole, part / S_MILLION);
    *frac += part % S_MILLION;
}

uint64_t wrk_price_cost (const wrk_price_t *price, const wrk_usage_t *usage)
{
    uint64_t cache = usage->cache_tokens < usage->input_tokens ? usage->cache_tokens
                                                               : usage->input_tokens;
    uint64_t whole = 0, frac = 0; //  frac < 3 * 10^6
    s_term (usage->input_tokens - cache, price->input, &whole, &frac);
    s_term (cache, price->cache, &whole, &frac);
    s_term (usage->output_tokens, price->output, &whole, &frac);
    return s_add (whole, (frac + S_MILLION / 2) / S_MILLION);
}

uint64_t wrk_prices_charge (const wrk_prices_t *self, const char *model,
                            wrk_usage_t *usage)
{
    usage->cost_micros = wrk_price_cost (wrk_prices_find (self, model), usage);
    return usage->cost_micros;
}

void wrk_usage_add (wrk_usage_t *total, const wrk_usage_t *part)
{
    total->input_tokens = s_add (total->input_tokens, part->input_tokens);
    total->output_tokens = s_add (total->output_tokens, part->output_tokens);
    total->cache_tokens = s_add (total->cache_tokens, part->cache_tokens);
    total->cost_micros = s_add (total->cost_micros, part->cost_micros);
    total->model_calls = s_add (total->model_calls, part->model_calls);
}
