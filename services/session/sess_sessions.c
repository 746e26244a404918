/*  sess_sessions.c - the session table and the client API.

    Sessions live in the store; this process keeps the ones in use in a
    table keyed by id and loads others on demand (session.get, then an
    events.range probe for the highest stored seq, which is where the next
    seq continues - the record may lag the events by one write).

    A request for a session not in memory is kept as raw bytes while the
    session loads, then decoded again and handled as if it had just arrived;
    so every handler below runs with the session present.

    Tenancy: every client request names its tenant (the gateway derives it
    from the API key).  A session of another tenant answers not_found, so a
    tenant cannot even learn that an id exists.
*/
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cm_log.h"
#include "cm_time.h"
#include "sess.h"

static const char *const s_modes[] = {"ask", "edit", "auto", "read_only", NULL};
static const char *const s_backends[] = {"openai", "anthropic", "acp", NULL};

static bool one_of (const char *value, const char *const *words)
{
    for (; *words; words++)
        if (strcmp (value, *words) == 0) return true;
    return false;
}

void sess_dup_str (const char **slot, const char *value)
{
    char *copy = value ? strdup (value) : NULL;
    free ((char *)*slot);
    *slot = copy;
}

/* ---------------------------------------------------------------- */
/*  Records: deep copies, owned by the session                       */

static void rec_free (proto_session_rec_t *r)
{
    const char **strs[] = {&r->tenant,  &r->project,    &r->title,     &r->cwd,
                           &r->backend, &r->model,      &r->mode,      &r->state,
                           &r->worker,  &r->end_reason, &r->last_idem, &r->last_stop};
    for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++)
        sess_dup_str (strs[i], NULL);
    for (size_t i = 0; i < r->allow_always.count; i++)
        free ((char *)r->allow_always.items[i]);
    free (r->allow_always.items);
    free (r->usage);
    memset (r, 0, sizeof *r);
}

static int rec_copy (proto_session_rec_t *dst, const proto_session_rec_t *src)
{
    *dst = *src;
    const char **strs[] = {&dst->tenant,     &dst->project,   &dst->title,
                           &dst->cwd,        &dst->backend,   &dst->model,
                           &dst->mode,       &dst->state,     &dst->worker,
                           &dst->end_reason, &dst->last_idem, &dst->last_stop};
    for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++) {
        const char *v = *strs[i];
        *strs[i] = NULL;
        sess_dup_str (strs[i], v);
    }
    dst->usage = calloc (1, sizeof *dst->usage);
    if (dst->usage && src->usage) *dst->usage = *src->usage;
    dst->allow_always.items = NULL;
    dst->allow_always.count = 0;
    if (src->allow_always.count) {
        dst->allow_always.items = calloc (src->allow_always.count, sizeof (char *));
        if (!dst->allow_always.items) return CM_E_NOMEM;
        for (size_t i = 0; i < src->allow_always.count; i++)
            dst->allow_always.items[i] = strdup (src->allow_always.items[i]);
        dst->allow_always.count = src->allow_always.count;
    }
    return dst->usage ? 0 : CM_E_NOMEM;
}

void sess_session_free (sess_session_t *s)
{
    if (!s) return;
    while (s->queue) {
        sess_event_t *e = s->queue;
        s->queue = e->next;
        free (e);
    }
    sess_turn_clear (&s->turn);
    rec_free (&s->rec);
    free (s);
}

sess_session_t *sess_lookup (sess_server_t *self, const cm_uuid_t *id)
{
    return cm_map_get (self->sessions, id->b);
}

/* ---------------------------------------------------------------- */
/*  Workspace roots                                                  */

static int mkdirs (const char *path)
{
    char buf[PATH_MAX];
    if (strlen (path) >= sizeof buf) return -ENAMETOOLONG;
    strcpy (buf, path);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir (buf, 0755) && errno != EEXIST) return -errno;
        *p = '/';
    }
    if (mkdir (buf, 0755) && errno != EEXIST) return -errno;
    return 0;
}

//  Lexical normalisation of an absolute path: "//", "." and ".." go.
static int normalise (const char *in, char *out, size_t outlen)
{
    size_t n = 0;
    const char *p = in;
    if (*p != '/') return CM_E_INVALID;
    while (*p) {
        while (*p == '/') p++;
        const char *start = p;
        while (*p && *p != '/') p++;
        size_t len = (size_t)(p - start);
        if (len == 0 || (len == 1 && start[0] == '.')) continue;
        if (len == 2 && start[0] == '.' && start[1] == '.') {
            while (n > 0 && out[n - 1] != '/') n--;
            if (n > 0) n--; //  the slash
            continue;
        }
        if (n + 1 + len + 1 > outlen) return CM_E_TOO_LARGE;
        out[n++] = '/';
        memcpy (out + n, start, len);
        n += len;
    }
    if (n == 0) out[n++] = '/';
    out[n] = '\0';
    return 0;
}

//  Whether path is root or below it, component-wise (/ws2 is not in /ws).
static bool inside (const char *path, const char *root)
{
    size_t n = strlen (root);
    if (strncmp (path, root, n) != 0) return false;
    return path[n] == '\0' || path[n] == '/' || (n == 1 && root[0] == '/');
}

int sess_roots_init (sess_server_t *self, char *err, size_t errlen)
{
    char def[PATH_MAX];
    const char *list = self->cfg->roots;
    if (!list || !*list) {
        snprintf (def, sizeof def, "%s/workspaces", self->cfg->data_dir);
        list = def;
    }
    char *copy = strdup (list), *save = NULL;
    for (char *tok = strtok_r (copy, ":", &save); tok;
         tok = strtok_r (NULL, ":", &save)) {
        if (self->nroots == SESS_MAX_ROOTS) {
            snprintf (err, errlen, "CORRAL_WORKSPACE_ROOTS: more than %d roots",
                      SESS_MAX_ROOTS);
            free (copy);
            return CM_E_INVALID;
        }
        char abs[PATH_MAX], real[PATH_MAX];
        if (tok[0] != '/') {
            char cwd[PATH_MAX / 2];
            if (!getcwd (cwd, sizeof cwd) || strlen (tok) >= PATH_MAX / 2 - 1) {
                snprintf (err, errlen, "workspace root %.200s: path too long", tok);
                free (copy);
                return CM_E_INVALID;
            }
            snprintf (abs, sizeof abs, "%s/%s", cwd, tok);
        } else
            snprintf (abs, sizeof abs, "%s", tok);
        int rc = mkdirs (abs);
        if (rc || !realpath (abs, real)) {
            snprintf (err, errlen, "workspace root %s cannot be created or resolved: %s",
                      abs, strerror (rc ? -rc : errno));
            free (copy);
            return CM_E_INVALID;
        }
        self->roots[self->nroots++] = strdup (real);
    }
    free (copy);
    if (!self->nroots) {
        snprintf (err, errlen, "CORRAL_WORKSPACE_ROOTS names no directory");
        return CM_E_INVALID;
    }
    return 0;
}

int sess_roots_check (sess_server_t *self, const char *cwd, char *out, size_t outlen,
                      char *err, size_t errlen)
{
    char joined[PATH_MAX], norm[PATH_MAX], real[PATH_MAX];
    if (!cwd || !*cwd) cwd = ".";
    if (strlen (cwd) >= PATH_MAX - 1) {
        snprintf (err, errlen, "cwd is too long");
        return CM_E_INVALID;
    }
    //  A relative cwd is taken inside the first root.
    if (cwd[0] == '/')
        snprintf (joined, sizeof joined, "%s", cwd);
    else if ((size_t)snprintf (joined, sizeof joined, "%s/%s", self->roots[0], cwd) >=
             sizeof joined) {
        snprintf (err, errlen, "cwd is too long");
        return CM_E_INVALID;
    }
    if (normalise (joined, norm, sizeof norm)) {
        snprintf (err, errlen, "cwd is too long");
        return CM_E_INVALID;
    }
    size_t i;
    for (i = 0; i < self->nroots && !inside (norm, self->roots[i]); i++)
        ;
    if (i == self->nroots) goto outside;
    int rc = mkdirs (norm);
    if (rc || !realpath (norm, real)) {
        snprintf (err, errlen, "cannot create the working directory %s: %s", norm,
                  strerror (rc ? -rc : errno));
        return CM_E_INVALID;
    }
    //  A symlink inside a root may point out of it: check the real path.
    for (i = 0; i < self->nroots && !inside (real, self->roots[i]); i++)
        ;
    if (i == self->nroots) goto outside;
    snprintf (out, outlen, "%s", real);
    return 0;
outside:
    snprintf (err, errlen,
              "cwd %s is outside the workspace roots (%s%s); choose a folder inside them "
              "or add a root to CORRAL_WORKSPACE_ROOTS",
              cwd, self->roots[0], self->nroots > 1 ? ", ..." : "");
    return CM_E_FORBIDDEN;
}

/* ---------------------------------------------------------------- */
/*  Tenant counts (few tenants: a list is enough)                     */

typedef struct tenant_count {
    char *tenant;
    uint64_t open;
    struct tenant_count *next;
} tenant_count_t;

static tenant_count_t *s_tenants; //  owned by the one server of the process

static tenant_count_t *tenant (const char *name)
{
    for (tenant_count_t *t = s_tenants; t; t = t->next)
        if (strcmp (t->tenant, name) == 0) return t;
    tenant_count_t *t = calloc (1, sizeof *t);
    if (!t) return NULL;
    t->tenant = strdup (name);
    t->next = s_tenants;
    s_tenants = t;
    return t;
}

static void count_open (sess_server_t *self, const char *tenant_name, int delta)
{
    tenant_count_t *t = tenant (tenant_name);
    self->sessions_open += (uint64_t)(int64_t)delta;
    if (t) t->open += (uint64_t)(int64_t)delta;
}

/* ---------------------------------------------------------------- */
/*  Loading                                                          */

typedef struct {
    cm_uuid_t id;
    sess_loaded_cb cb;
    void *arg;
    proto_session_rec_t *rec; //  between the two store calls
} load_t;

//  A load still waiting for the store when the service stops (sess_store.h):
//  the continuation's arg is one heap block or NULL (sess_load's contract).
static void load_drop (void *arg)
{
    load_t *ld = arg;
    if (ld->rec) {
        rec_free (ld->rec);
        free (ld->rec);
    }
    free (ld->arg);
    free (ld);
}

static sess_session_t *install (sess_server_t *self, const proto_session_rec_t *rec,
                                uint64_t last_seq)
{
    sess_session_t *s = calloc (1, sizeof *s);
    if (!s || rec_copy (&s->rec, rec)) {
        sess_session_free (s);
        return NULL;
    }
    s->acked_seq = last_seq;
    s->next_seq = last_seq + 1;
    char id[CM_UUID_STR_LEN];
    s->topic_len = (uint8_t)snprintf (s->topic, sizeof s->topic, "s/%s/",
                                      cm_uuid_fmt (&s->rec.id, id));
    if (cm_map_put (self->sessions, s->rec.id.b, s)) {
        sess_session_free (s);
        return NULL;
    }
    return s;
}

static void on_probe (sess_server_t *self, void *arg, int rc, proto_msg_t *reply)
{
    load_t *ld = arg;
    sess_session_t *s = sess_lookup (self, &ld->id); //  loaded meanwhile?
    if (!s && rc == 0) {
        proto_events_reply_t *ev = proto_body (reply, events_reply);
        s = install (self, ld->rec, ev ? ev->last_seq : ld->rec->last_seq);
        if (!s) rc = CM_E_NOMEM;
    }
    ld->cb (self, s, s ? 0 : rc ? rc : CM_E_INTERNAL, ld->arg);
    rec_free (ld->rec);
    free (ld->rec);
    free (ld);
}

static void on_get (sess_server_t *self, void *arg, int rc, proto_msg_t *reply)
{
    load_t *ld = arg;
    proto_session_reply_t *got = rc == 0 ? proto_body (reply, session_reply) : NULL;
    if (!got) {
        ld->cb (self, NULL, rc ? rc : CM_E_INTERNAL, ld->arg);
        free (ld);
        return;
    }
    ld->rec = calloc (1, sizeof *ld->rec);
    if (!ld->rec || rec_copy (ld->rec, got->session)) {
        ld->cb (self, NULL, CM_E_NOMEM, ld->arg);
        free (ld->rec);
        free (ld);
        return;
    }
    //  The highest stored seq may be past the record's last_seq.
    proto_events_range_t probe = {
        .session = ld->id, .after_seq = ld->rec->last_seq, .limit = 1};
    if (sess_store_call_owned (self, PROTO_STORE_EVENTS_RANGE, &probe, on_probe, ld,
                               load_drop)) {
        ld->cb (self, NULL, CM_E_INTERNAL, ld->arg);
        rec_free (ld->rec);
        free (ld->rec);
        free (ld);
    }
}

void sess_load (sess_server_t *self, const cm_uuid_t *id, sess_loaded_cb cb, void *arg)
{
    sess_session_t *s = sess_lookup (self, id);
    if (s) {
        cb (self, s, 0, arg);
        return;
    }
    load_t *ld = calloc (1, sizeof *ld);
    if (!ld) {
        cb (self, NULL, CM_E_NOMEM, arg);
        return;
    }
    ld->id = *id;
    ld->cb = cb;
    ld->arg = arg;
    proto_id_req_t req = {.id = *id};
    if (sess_store_call_owned (self, PROTO_STORE_SESSION_GET, &req, on_get, ld,
                               load_drop)) {
        cb (self, NULL, CM_E_INTERNAL, arg);
        free (ld);
    }
}

/* ---------------------------------------------------------------- */
/*  Startup: count open sessions, end turns a crash interrupted       */

static void on_scan (sess_server_t *self, void *arg, int rc, proto_msg_t *reply);

static void scan_page (sess_server_t *self, const cm_uuid_t *after)
{
    proto_list_req_t req = {.limit = SESS_SCAN_PAGE};
    if (after) req.after = *after;
    if (sess_store_call (self, PROTO_STORE_SESSION_LIST, &req, on_scan, NULL)) {
        cm_error ("cannot scan sessions at start");
        self->ready = true;
    }
}

static void on_loaded_interrupt (sess_server_t *self, sess_session_t *s, int rc,
                                 void *arg)
{
    if (s) sess_turn_interrupted (self, s);
}

static void on_scan (sess_server_t *self, void *arg, int rc, proto_msg_t *reply)
{
    proto_sessions_reply_t *page = rc == 0 ? proto_body (reply, sessions_reply) : NULL;
    if (!page) {
        cm_error ("session scan failed (%s); continuing without it", cm_strerror (rc));
        self->ready = true;
        return;
    }
    for (size_t i = 0; i < page->sessions.count; i++) {
        proto_session_rec_t *r = &page->sessions.items[i];
        if (strcmp (r->state, "closed") != 0) count_open (self, r->tenant, +1);
        if (strcmp (r->state, "running") == 0 ||
            strcmp (r->state, "awaiting_permission") == 0)
            sess_load (self, &r->id, on_loaded_interrupt, NULL);
    }
    if (page->more && page->sessions.count) {
        cm_uuid_t after = page->sessions.items[page->sessions.count - 1].id;
        scan_page (self, &after);
        return;
    }
    self->ready = true;
    cm_info ("session service ready: %llu open sessions",
             (unsigned long long)self->sessions_open);
}

void sess_startup_scan (sess_server_t *self)
{
    scan_page (self, NULL);
}

/* ---------------------------------------------------------------- */
/*  Client API                                                       */

static void handle (sess_server_t *self, sess_session_t *s, const sess_peer_t *peer,
                    proto_msg_t *msg);

//  A request waiting for its session to load: the raw bytes, re-decoded
//  when it is there, and what runs it then.
typedef struct {
    sess_peer_t peer;
    sess_request_fn run;
    size_t size;
    char data[];
} deferred_t;

static void on_loaded_deferred (sess_server_t *self, sess_session_t *s, int rc, void *arg)
{
    deferred_t *d = arg;
    if (!s) {
        sess_reply_error (self, &d->peer, rc == CM_E_NOT_FOUND ? rc : CM_E_UNAVAILABLE,
                          rc == CM_E_NOT_FOUND
                              ? "no such session"
                              : "the session could not be loaded; retry");
        free (d);
        return;
    }
    proto_msg_t msg;
    proto_msg_init (&msg);
    if (proto_decode (&msg, d->data, d->size) == 0) d->run (self, s, &d->peer, &msg);
    proto_msg_fini (&msg);
    free (d);
}

void sess_with_session (sess_server_t *self, const cm_uuid_t *id, const sess_peer_t *peer,
                        proto_msg_t *msg, sess_request_fn run)
{
    if (!id) { //  every type routed here names its session (the catalogue)
        sess_reply_error (self, peer, CM_E_INTERNAL, NULL);
        return;
    }
    sess_session_t *s = sess_lookup (self, id);
    if (s) {
        run (self, s, peer, msg);
        return;
    }
    //  Keep the request's bytes while the session loads.
    proto_buf_reset (&self->buf);
    if (proto_encode (&self->buf, msg->type, msg->corr, msg->body)) {
        sess_reply_error (self, peer, CM_E_INTERNAL, NULL);
        return;
    }
    deferred_t *d = malloc (sizeof *d + self->buf.size);
    if (!d) {
        sess_reply_error (self, peer, CM_E_NOMEM, NULL);
        return;
    }
    d->peer = *peer;
    d->run = run;
    d->size = self->buf.size;
    memcpy (d->data, self->buf.data, self->buf.size);
    sess_load (self, id, on_loaded_deferred, d);
}

typedef struct {
    sess_peer_t peer;
    cm_uuid_t id;
} created_t;

static void on_created (sess_server_t *self, void *arg, int rc, proto_msg_t *reply)
{
    created_t *c = arg;
    sess_session_t *s = sess_lookup (self, &c->id);
    if (rc || !s)
        sess_reply_error (self, &c->peer, rc ? rc : CM_E_NOT_FOUND,
                          "the session could not be stored; retry");
    else {
        proto_session_reply_t out = {.session = &s->rec};
        sess_reply (self, &c->peer, PROTO_SESSION, &out);
    }
    free (c);
}

static void session_new (sess_server_t *self, const sess_peer_t *peer,
                         const proto_session_new_t *req)
{
    char cwd[PATH_MAX], err[512];
    const char *mode = req->mode ? req->mode : self->cfg->default_mode;
    const char *backend = req->backend ? req->backend : self->cfg->default_backend;
    if (!one_of (mode, s_modes)) {
        sess_reply_error (self, peer, CM_E_INVALID,
                          "mode must be ask, edit, auto or read_only");
        return;
    }
    if (!one_of (backend, s_backends)) {
        sess_reply_error (self, peer, CM_E_INVALID,
                          "backend must be openai, anthropic or acp");
        return;
    }
    tenant_count_t *t = tenant (req->tenant);
    if ((int64_t)self->sessions_open >= self->cfg->max_sessions) {
        sess_reply_error (
            self, peer, CM_E_CAPACITY,
            "the server holds its maximum number of sessions; close one or retry later");
        return;
    }
    if (t && (int64_t)t->open >= self->cfg->max_sessions_per_tenant) {
        sess_reply_error (
            self, peer, CM_E_CAPACITY,
            "this tenant has its maximum number of open sessions; close one first");
        return;
    }
    int rc = sess_roots_check (self, req->cwd, cwd, sizeof cwd, err, sizeof err);
    if (rc) {
        sess_reply_error (self, peer, rc, err);
        return;
    }
    proto_usage_t usage = {0};
    proto_session_rec_t rec = {.tenant = req->tenant,
                               .project = req->project,
                               .title = req->title,
                               .cwd = cwd,
                               .backend = backend,
                               .model =
                                   req->model ? req->model : self->cfg->default_model,
                               .mode = mode,
                               .state = "creating",
                               .created_ms = cm_time_ms (),
                               .resumable = true,
                               .usage = &usage};
    cm_uuid7 (&rec.id);
    rec.opened_ms = rec.created_ms;
    sess_session_t *s = install (self, &rec, 0);
    if (!s) {
        sess_reply_error (self, peer, CM_E_NOMEM, NULL);
        return;
    }
    count_open (self, req->tenant, +1);
    proto_ev_session_created_t ev = {.tenant = s->rec.tenant,
                                     .cwd = s->rec.cwd,
                                     .title = s->rec.title,
                                     .backend = s->rec.backend,
                                     .model = s->rec.model,
                                     .mode = s->rec.mode};
    sess_emit (self, s, PROTO_EV_SESSION_CREATED, &ev);
    sess_set_state (self, s, "ready", NULL);
    //  Answer only once the record is durable: a client told about a
    //  session must find it after any crash.
    created_t *c = malloc (sizeof *c);
    proto_session_put_t put = {.session = &s->rec};
    if (!c) return;
    c->peer = *peer;
    c->id = s->rec.id;
    if (sess_store_call (self, PROTO_STORE_SESSION_PUT, &put, on_created, c)) {
        free (c);
        sess_reply_error (self, peer, CM_E_INTERNAL, NULL);
    }
}

typedef struct {
    sess_peer_t peer;
    char *tenant;
} list_t;

static void on_list (sess_server_t *self, void *arg, int rc, proto_msg_t *reply)
{
    list_t *l = arg;
    proto_sessions_reply_t *page = rc == 0 ? proto_body (reply, sessions_reply) : NULL;
    if (!page)
        sess_reply_error (self, &l->peer, rc ? rc : CM_E_INTERNAL,
                          "listing sessions failed");
    else {
        //  Sessions in memory may be newer than their stored record.
        for (size_t i = 0; i < page->sessions.count; i++) {
            sess_session_t *s = sess_lookup (self, &page->sessions.items[i].id);
            if (s) page->sessions.items[i] = s->rec;
        }
        sess_reply (self, &l->peer, PROTO_SESSIONS, page);
    }
    free (l->tenant);
    free (l);
}

static void list_drop (void *arg)
{
    list_t *l = arg;
    free (l->tenant);
    free (l);
}

static void session_list (sess_server_t *self, const sess_peer_t *peer,
                          const proto_list_req_t *req)
{
    if (!req->tenant) {
        sess_reply_error (self, peer, CM_E_INVALID, "session.list needs a tenant");
        return;
    }
    list_t *l = calloc (1, sizeof *l);
    if (!l) return;
    l->peer = *peer;
    l->tenant = strdup (req->tenant);
    proto_list_req_t fwd = *req;
    if (sess_store_call_owned (self, PROTO_STORE_SESSION_LIST, &fwd, on_list, l,
                               list_drop)) {
        sess_reply_error (self, peer, CM_E_INTERNAL, NULL);
        free (l->tenant);
        free (l);
    }
}

static void on_deleted (sess_server_t *self, void *arg, int rc, proto_msg_t *reply)
{
    sess_peer_t *peer = arg;
    if (rc)
        sess_reply_error (self, peer, rc, "the session could not be deleted; retry");
    else
        sess_reply (self, peer, PROTO_OK, NULL);
    free (peer);
}

static void set_option (sess_server_t *self, sess_session_t *s, const sess_peer_t *peer,
                        const proto_session_set_t *req, bool mode)
{
    const char **slot = NULL;
    const char *option = mode ? "mode" : req->option;
    if (strcmp (option, "mode") == 0) {
        if (!one_of (req->value, s_modes)) {
            sess_reply_error (self, peer, CM_E_INVALID,
                              "mode must be ask, edit, auto or read_only");
            return;
        }
        slot = &s->rec.mode;
    } else if (strcmp (option, "backend") == 0) {
        if (!one_of (req->value, s_backends)) {
            sess_reply_error (self, peer, CM_E_INVALID,
                              "backend must be openai, anthropic or acp");
            return;
        }
        slot = &s->rec.backend;
    } else if (strcmp (option, "model") == 0) {
        if (!*req->value || strlen (req->value) > 200) {
            sess_reply_error (self, peer, CM_E_INVALID,
                              "model must be 1 to 200 characters");
            return;
        }
        slot = &s->rec.model;
    } else if (strcmp (option, "title") == 0) {
        slot = &s->rec.title;
    } else {
        sess_reply_error (self, peer, CM_E_INVALID,
                          "unknown option; settable: mode, model, backend, title");
        return;
    }
    sess_dup_str (slot, req->value);
    proto_ev_setting_t ev = {.option = option, .value = req->value};
    sess_emit (self, s, PROTO_EV_SETTING, &ev);
    sess_mark_dirty (self, s);
    sess_reply (self, peer, PROTO_OK, NULL);
}

void sess_session_close (sess_server_t *self, sess_session_t *s, const char *end_reason,
                         const char *reason)
{
    if (strcmp (s->rec.state, "closed") == 0) return;
    sess_turn_cancel (self, s);
    count_open (self, s->rec.tenant, -1);
    sess_dup_str (&s->rec.end_reason, end_reason);
    sess_set_state (self, s, "closed", reason);
}

//  Requests that name a session, with the session in memory.
static void handle (sess_server_t *self, sess_session_t *s, const sess_peer_t *peer,
                    proto_msg_t *msg)
{
    //  Every body these requests use starts with tenant, then id.
    const char *tenant =
        *(const char *const *)((char *)msg->body + msg->desc->body->fields[0].offset);
    if (strcmp (tenant, s->rec.tenant) != 0) {
        sess_reply_error (self, peer, CM_E_NOT_FOUND, "no such session");
        return;
    }
    bool closed = strcmp (s->rec.state, "closed") == 0;
    switch (msg->type) {
    case PROTO_SESSION_LOAD:
    case PROTO_SESSION_ATTACH: {
        if (msg->type == PROTO_SESSION_ATTACH) s->watchers++;
        proto_session_reply_t out = {.session = &s->rec,
                                     .perm_seq = sess_perm_pending_seq (s)};
        sess_reply (self, peer, PROTO_SESSION, &out);
        return;
    }
    case PROTO_SESSION_DETACH:
        if (s->watchers) s->watchers--;
        sess_reply (self, peer, PROTO_OK, NULL);
        return;
    case PROTO_SESSION_RESUME:
        if (closed) {
            count_open (self, s->rec.tenant, +1);
            s->rec.opened_ms = cm_time_ms (); //  a max duration starts again
        }
        if (closed || strcmp (s->rec.state, "hibernated") == 0)
            sess_set_state (self, s, "ready", "resumed");
        {
            proto_session_reply_t out = {.session = &s->rec,
                                         .perm_seq = sess_perm_pending_seq (s)};
            sess_reply (self, peer, PROTO_SESSION, &out);
        }
        return;
    case PROTO_SESSION_CLOSE:
        sess_session_close (self, s, "closed by a client", "closed by a client");
        sess_reply (self, peer, PROTO_OK, NULL);
        return;
    case PROTO_SESSION_DELETE: {
        sess_turn_abandon (self, s);
        if (!closed) count_open (self, s->rec.tenant, -1);
        proto_id_req_t req = {.id = s->rec.id};
        cm_map_remove (self->sessions, s->rec.id.b);
        sess_session_free (s);
        sess_peer_t *p = malloc (sizeof *p);
        if (p) *p = *peer;
        if (!p ||
            sess_store_call (self, PROTO_STORE_SESSION_DELETE, &req, on_deleted, p)) {
            free (p);
            sess_reply_error (self, peer, CM_E_INTERNAL, NULL);
        }
        return;
    }
    case PROTO_SESSION_PROMPT:
        if (closed) {
            sess_reply_error (self, peer, CM_E_CONFLICT,
                              "the session is closed; resume it to prompt again");
            return;
        }
        if (sess_policy_before_prompt (self, s, peer)) return;
        sess_turn_prompt (self, s, peer, msg->body);
        return;
    case PROTO_SESSION_CANCEL:
        sess_turn_cancel (self, s);
        sess_reply (self, peer, PROTO_OK, NULL);
        return;
    case PROTO_SESSION_SET_MODE:
    case PROTO_SESSION_SET_CONFIG:
        set_option (self, s, peer, msg->body, msg->type == PROTO_SESSION_SET_MODE);
        return;
    case PROTO_PERMISSION_ANSWER:
        sess_perm_answer (self, s, peer, msg->body);
        return;
    default:
        sess_reply_error (self, peer, CM_E_UNKNOWN_TYPE, "not a session request");
    }
}

//  The id of a session-addressed request (body field "id"), or NULL.
static const cm_uuid_t *request_session (const proto_msg_t *msg)
{
    const proto_rec_desc_t *r = msg->desc->body;
    for (size_t i = 0; i < r->field_count && i < 3; i++)
        if (strcmp (r->fields[i].name, "id") == 0 && r->fields[i].type == PROTO_T_UUID)
            return (const cm_uuid_t *)((const char *)msg->body + r->fields[i].offset);
    return NULL;
}

void sess_on_client (sess_server_t *self, const sess_peer_t *peer, proto_msg_t *msg)
{
    if (!self->ready) {
        sess_reply_error (self, peer, CM_E_UNAVAILABLE,
                          "the session service is starting; retry in a moment");
        return;
    }
    switch (msg->type) {
    case PROTO_SESSION_NEW:
        session_new (self, peer, msg->body);
        return;
    case PROTO_SESSION_LIST:
        session_list (self, peer, msg->body);
        return;
    case PROTO_SESSION_LOAD:
    case PROTO_SESSION_RESUME:
    case PROTO_SESSION_CLOSE:
    case PROTO_SESSION_DELETE:
    case PROTO_SESSION_PROMPT:
    case PROTO_SESSION_CANCEL:
    case PROTO_SESSION_SET_MODE:
    case PROTO_SESSION_SET_CONFIG:
    case PROTO_PERMISSION_ANSWER:
    case PROTO_SESSION_ATTACH:
    case PROTO_SESSION_DETACH:
        break;
    default:
        sess_reply_error (self, peer, CM_E_UNKNOWN_TYPE,
                          "this request is not served by this version of corral-session");
        return;
    }
    sess_with_session (self, request_session (msg), peer, msg, handle);
}
