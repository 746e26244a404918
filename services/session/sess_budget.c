/*  sess_budget.c - token and cost budgets, per session and per API key.

    Where the limits come from:
      session  one default for every session: corral-session
               --session-budget-tokens / --session-budget-usd (0 = none);
      key      the key record's budget_tokens / budget_micros (corral-keys
               create --budget-tokens N --budget-usd X), which the gateway
               reads when it authenticates the key and sends with every
               prompt, with the key's id (session.prompt key, key_budget_*).

    What is counted: tokens = input + output tokens (the input counts the
    whole prompt, cached part included, as providers bill it); cost =
    cost_micros, the worker's price-table cost (wrk_cost.h).  A session's
    usage is its record's totals (stored with the record).  A key's usage is
    the sum over every turn prompted with it, over its whole life, kept by
    the store in the usage database as the pseudo-tenant "key:<key id>" on
    day 0 (real tenants' rows have a YYYYMMDD day, so they never collide),
    read once per key into memory and added to after every turn - so it
    survives restarts of every service.

    When it is checked:
      before a turn  sess_budget_before_prompt: a spent budget refuses the
                     prompt with CM_E_BUDGET and a message that names the
                     budget and the usage ("budget exceeded: this session
                     used 10 512 of its 10 000 tokens; ...").  A key's usage
                     not yet in memory is read first; the prompt waits for
                     it and is then dispatched again;
      during a turn  sess_budget_on_usage, on every usage_update event of the
                     worker (one per model call, the turn's usage so far):
                     usage before the turn + the turn's so far over a budget
                     emits an EV_POLICY event (policy "budget", action
                     "cancel") and cancels the turn; it ends failed with
                     CM_E_BUDGET and the message (the worker's conversation
                     is kept, so the session stays consistent).
    A turn can overshoot a budget by the model call that crossed it, and a
    key's concurrent turns each by their own usage: the check runs on what
    has been spent, and a model call's cost is known when it ends.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cm_log.h"
#include "cm_usd.h"
#include "sess.h"

#define KEY_PENDING_MAX 64 //  prompts waiting for one key's usage

typedef struct pending {
    sess_peer_t peer;
    struct pending *next;
    size_t size;
    uint8_t data[]; //  the encoded session.prompt
} pending_t;

typedef struct {
    cm_uuid_t id;
    proto_usage_t used; //  lifetime totals (store + turns ended since)
    bool loaded, loading;
    pending_t *pending, *pending_tail; //  in arrival order
    size_t npending;
} key_entry_t;

struct sess_budget {
    cm_map_t *keys; //  key id (16 bytes) -> key_entry_t
};

/* ---------------------------------------------------------------- */
/*  Arithmetic (pure; test_sess_budget.c)                            */

int sess_budget_parse_usd (const char *text, int64_t *micros)
{
    return cm_usd_parse (text, micros);
}

//  10512 -> "10 512" (thin groups, readable in a message).
static void fmt_count (char *out, size_t outlen, uint64_t n)
{
    char digits[32];
    int len = snprintf (digits, sizeof digits, "%llu", (unsigned long long)n);
    size_t o = 0;
    for (int i = 0; i < len && o + 2 < outlen; i++) {
        if (i > 0 && (len - i) % 3 == 0) out[o++] = ' ';
        out[o++] = digits[i];
    }
    out[o] = '\0';
}

uint64_t sess_budget_tokens (const proto_usage_t *u)
{
    return u ? u->input_tokens + u->output_tokens : 0;
}

int sess_budget_over (const proto_usage_t *used, uint64_t budget_tokens,
                      uint64_t budget_micros, const char *whose, bool during, char *msg,
                      size_t msglen)
{
    uint64_t tokens = sess_budget_tokens (used);
    uint64_t micros = used ? used->cost_micros : 0;
    char a[40], b[40];
    const char *what;
    if (budget_tokens && tokens >= budget_tokens) {
        fmt_count (a, sizeof a, tokens);
        fmt_count (b, sizeof b, budget_tokens);
        what = "tokens";
    } else if (budget_micros && micros >= budget_micros) {
        cm_usd_fmt (micros, a, sizeof a);
        cm_usd_fmt (budget_micros, b, sizeof b);
        what = NULL;
    } else
        return 0;
    bool key = strcmp (whose, "key") == 0;
    const char *subject = key ? "this API key" : "this session";
    const char *advice = key ? "raise the key's budget or use another key"
                             : "raise the budget or start a new session";
    if (what)
        snprintf (msg, msglen, "budget exceeded%s: %s used %s of its %s %s; %s%s",
                  during ? " during the turn" : "", subject, a, b, what,
                  during ? "the turn was stopped; " : "", advice);
    else
        snprintf (msg, msglen, "budget exceeded%s: %s cost %s of its %s budget; %s%s",
                  during ? " during the turn" : "", subject, a, b,
                  during ? "the turn was stopped; " : "", advice);
    return 1;
}

static void usage_sum (proto_usage_t *out, const proto_usage_t *a, const proto_usage_t *b)
{
    memset (out, 0, sizeof *out);
    const proto_usage_t *parts[] = {a, b};
    for (int i = 0; i < 2; i++) {
        if (!parts[i]) continue;
        out->input_tokens += parts[i]->input_tokens;
        out->output_tokens += parts[i]->output_tokens;
        out->cache_tokens += parts[i]->cache_tokens;
        out->cost_micros += parts[i]->cost_micros;
        out->model_calls += parts[i]->model_calls;
    }
}

/* ---------------------------------------------------------------- */
/*  Key usage: read once from the store, added to after every turn   */

static void key_tenant (const cm_uuid_t *id, char *out, size_t outlen)
{
    char text[CM_UUID_STR_LEN];
    snprintf (out, outlen, "key:%s", cm_uuid_fmt (id, text));
}

static struct sess_budget *state (sess_server_t *self)
{
    if (!self->budget) {
        self->budget = calloc (1, sizeof *self->budget);
        if (self->budget && !(self->budget->keys = cm_map_new (8))) {
            free (self->budget);
            self->budget = NULL;
        }
    }
    return self->budget;
}

static key_entry_t *key_entry (sess_server_t *self, const cm_uuid_t *id)
{
    struct sess_budget *b = state (self);
    if (!b) return NULL;
    key_entry_t *k = cm_map_get (b->keys, id->b);
    if (k) return k;
    k = calloc (1, sizeof *k);
    if (!k) return NULL;
    k->id = *id;
    if (cm_map_put (b->keys, k->id.b, k)) {
        free (k);
        return NULL;
    }
    return k;
}

static void on_key_usage (sess_server_t *self, void *arg, int rc, proto_msg_t *reply)
{
    cm_uuid_t *id = arg;
    key_entry_t *k = self->budget ? cm_map_get (self->budget->keys, id->b) : NULL;
    free (id);
    if (!k) return;
    k->loading = false;
    proto_usage_reply_t *r = rc == 0 && reply ? proto_body (reply, usage_reply) : NULL;
    if (r) {
        memset (&k->used, 0, sizeof k->used);
        for (size_t i = 0; i < r->rows.count; i++)
            if (r->rows.items[i].day == 0 && r->rows.items[i].usage) {
                proto_usage_t sum;
                usage_sum (&sum, &k->used, r->rows.items[i].usage);
                k->used = sum;
            }
        k->loaded = true;
    }
    //  Dispatch the waiting prompts again (or refuse them: no usage).
    pending_t *p = k->pending;
    k->pending = k->pending_tail = NULL;
    k->npending = 0;
    while (p) {
        pending_t *next = p->next;
        if (!k->loaded)
            sess_reply_error (self, &p->peer, CM_E_UNAVAILABLE,
                              "the API key's usage could not be read from the store; "
                              "retry");
        else {
            proto_msg_t msg;
            proto_msg_init (&msg);
            if (proto_decode (&msg, p->data, p->size) == 0)
                sess_on_client (self, &p->peer, &msg);
            proto_msg_fini (&msg);
        }
        free (p);
        p = next;
    }
}

//  Keep the prompt until the key's usage is known.  Returns 0 (it waits,
//  and is dispatched again in arrival order) or an error (it was not kept:
//  the caller answers it).
static int key_wait (sess_server_t *self, key_entry_t *k, const sess_peer_t *peer,
                     const proto_session_prompt_t *req)
{
    if (k->npending >= KEY_PENDING_MAX) return CM_E_CAPACITY;
    proto_buf_t buf = {0};
    int rc = proto_encode (&buf, PROTO_SESSION_PROMPT, peer->corr, req);
    pending_t *p = rc ? NULL : malloc (sizeof *p + buf.size);
    if (!p) {
        proto_buf_fini (&buf);
        return rc ? rc : CM_E_NOMEM;
    }
    p->peer = *peer;
    p->next = NULL;
    p->size = buf.size;
    memcpy (p->data, buf.data, buf.size);
    proto_buf_fini (&buf);
    if (!k->loading) {
        //  Ask the store first: a prompt kept without a read under way
        //  would wait for nothing (and run after its error was sent).
        char tenant[64];
        key_tenant (&k->id, tenant, sizeof tenant);
        cm_uuid_t *arg = malloc (sizeof *arg);
        proto_usage_get_t get = {.tenant = tenant, .from_day = 0, .to_day = 0};
        rc = arg ? 0 : CM_E_NOMEM;
        if (arg) {
            *arg = k->id;
            if (sess_store_call (self, PROTO_STORE_USAGE_GET, &get, on_key_usage, arg))
                rc = CM_E_INTERNAL;
        }
        if (rc) {
            free (arg); //  NULL when it could not be made
            free (p);
            return rc;
        }
        k->loading = true;
    }
    if (k->pending_tail)
        k->pending_tail->next = p;
    else
        k->pending = p;
    k->pending_tail = p;
    k->npending++;
    return 0;
}

/* ---------------------------------------------------------------- */
/*  Hooks                                                            */

bool sess_budget_before_prompt (sess_server_t *self, sess_session_t *s,
                                const sess_peer_t *peer,
                                const proto_session_prompt_t *req)
{
    char msg[400];
    const sess_config_t *c = self->cfg;
    if (sess_budget_over (s->rec.usage, (uint64_t)c->budget_tokens,
                          (uint64_t)c->budget_micros, "session", false, msg,
                          sizeof msg)) {
        sess_reply_error (self, peer, CM_E_BUDGET, msg);
        return true;
    }
    if (cm_uuid_is_nil (&req->key) ||
        (!req->key_budget_tokens && !req->key_budget_micros))
        return false;
    key_entry_t *k = key_entry (self, &req->key);
    if (!k) {
        sess_reply_error (self, peer, CM_E_NOMEM, NULL);
        return true;
    }
    if (!k->loaded) {
        int rc = key_wait (self, k, peer, req);
        if (rc)
            sess_reply_error (self, peer, rc,
                              rc == CM_E_CAPACITY
                                  ? "too many prompts wait for this key's usage; retry"
                                  : NULL);
        return true;
    }
    if (sess_budget_over (&k->used, req->key_budget_tokens, req->key_budget_micros, "key",
                          false, msg, sizeof msg)) {
        sess_reply_error (self, peer, CM_E_BUDGET, msg);
        return true;
    }
    return false;
}

void sess_budget_turn_start (sess_server_t *self, sess_session_t *s,
                             const proto_session_prompt_t *req)
{
    (void)self;
    sess_turn_budget_t *b = &s->turn.budget;
    b->key = req->key;
    b->has_key = !cm_uuid_is_nil (&req->key);
    b->key_tokens = req->key_budget_tokens;
    b->key_micros = req->key_budget_micros;
}

//  What is left of one budget (0 = none) after used; at least 1 when set,
//  so "spent" never reads as "no limit".
static uint64_t left_of (uint64_t budget, uint64_t used)
{
    if (!budget) return 0;
    return used < budget ? budget - used : 1;
}

static uint64_t min_set (uint64_t a, uint64_t b)
{
    return !a ? b : !b ? a : a < b ? a : b;
}

void sess_budget_turn_limits (sess_server_t *self, sess_session_t *s, uint64_t *tokens,
                              uint64_t *micros)
{
    const sess_config_t *c = self->cfg;
    const proto_usage_t *u = s->rec.usage;
    *tokens = left_of ((uint64_t)c->budget_tokens, sess_budget_tokens (u));
    *micros = left_of ((uint64_t)c->budget_micros, u ? u->cost_micros : 0);
    const sess_turn_budget_t *b = &s->turn.budget;
    key_entry_t *k =
        b->has_key && self->budget ? cm_map_get (self->budget->keys, b->key.b) : NULL;
    if (k && k->loaded) {
        *tokens =
            min_set (*tokens, left_of (b->key_tokens, sess_budget_tokens (&k->used)));
        *micros = min_set (*micros, left_of (b->key_micros, k->used.cost_micros));
    }
}

void sess_budget_on_usage (sess_server_t *self, sess_session_t *s,
                           const proto_usage_t *so_far)
{
    sess_turn_t *t = &s->turn;
    if (t->state != TURN_RUNNING || t->budget.stop || t->cancel || !so_far) return;
    const sess_config_t *c = self->cfg;
    proto_usage_t total;
    char msg[400];
    bool over = false;
    usage_sum (&total, s->rec.usage, so_far);
    over =
        sess_budget_over (&total, (uint64_t)c->budget_tokens, (uint64_t)c->budget_micros,
                          "session", true, msg, sizeof msg);
    if (!over && t->budget.has_key && (t->budget.key_tokens || t->budget.key_micros)) {
        key_entry_t *k =
            self->budget ? cm_map_get (self->budget->keys, t->budget.key.b) : NULL;
        usage_sum (&total, k ? &k->used : NULL, so_far);
        over = sess_budget_over (&total, t->budget.key_tokens, t->budget.key_micros,
                                 "key", true, msg, sizeof msg);
    }
    if (!over || !(t->budget.stop = strdup (msg))) return;
    char sid[CM_UUID_STR_LEN], tid[CM_UUID_STR_LEN];
    cm_logc (CM_LOG_INFO,
             &(cm_log_ctx_t){.session = cm_uuid_fmt (&s->rec.id, sid),
                             .turn = cm_uuid_fmt (&t->id, tid)},
             "%s", msg);
    proto_ev_policy_t ev = {
        .turn = t->id, .policy = "budget", .action = "cancel", .message = msg};
    sess_emit (self, s, PROTO_EV_POLICY, &ev);
    sess_turn_cancel (self, s);
}

void sess_budget_on_turn_usage (sess_server_t *self, sess_session_t *s,
                                const proto_usage_t *u)
{
    sess_turn_budget_t *b = &s->turn.budget;
    if (!u || !b->has_key) return;
    //  Every turn a key prompted counts, budget or not, so a budget set
    //  later finds the key's whole history.
    key_entry_t *k = self->budget ? cm_map_get (self->budget->keys, b->key.b) : NULL;
    if (k && k->loaded) {
        proto_usage_t sum;
        usage_sum (&sum, &k->used, u);
        k->used = sum;
    }
    char tenant[64];
    key_tenant (&b->key, tenant, sizeof tenant);
    proto_usage_add_t add = {
        .tenant = tenant, .day = 0, .usage = (proto_usage_t *)u, .turns = 1};
    add.id = s->turn.id; //  counted once however often it is resent
    sess_store_call (self, PROTO_STORE_USAGE_ADD, &add, NULL, NULL);
}

void sess_budget_outcome (sess_session_t *s, const char **stop_reason, int64_t *code,
                          const char **message, bool *retryable)
{
    const sess_turn_t *t = &s->turn;
    if (!t->budget.stop || strcmp (*stop_reason, "cancelled") != 0) return;
    *stop_reason = "failed";
    *code = CM_E_BUDGET;
    *message = t->budget.stop;
    *retryable = false;
}

void sess_budget_fini (sess_server_t *self)
{
    struct sess_budget *b = self->budget;
    if (!b) return;
    size_t pos = 0;
    void *value;
    while (cm_map_next (b->keys, &pos, NULL, &value)) {
        key_entry_t *k = value;
        while (k->pending) {
            pending_t *p = k->pending;
            k->pending = p->next;
            free (p);
        }
        free (k);
    }
    cm_map_destroy (&b->keys);
    free (b);
    self->budget = NULL;
}
