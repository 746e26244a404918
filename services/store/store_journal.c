/*  store_journal.c - new events in arrival order, folded into `events` later.

    Why: `events` is keyed session ‖ seq, so a commit that carries a few
    events of each of N sessions writes N scattered leaf pages of it.  With
    a thousand streaming sessions that was ~27 pages per commit when
    commits were small and ~100 when they grew (a slow fsync makes the next
    batch bigger, and a bigger batch touches more sessions: the cost grew
    with the backlog instead of shrinking per event).  The journal takes
    new events in arrival order instead, so a commit writes the journal's
    tail pages - adjacent, filled, about one per 20 events - whatever the
    number of sessions.

        journal   jid (8, big-endian, increasing) -> session (16) ‖ seq (8) ‖ event

    Big appends go straight to `events`: an append of STORE_JOURNAL_DIRECT
    bytes or more fills a good part of a page there by itself, so the
    journal would only write it twice.  The session's journaled events are
    folded first, so `events` stays below the journal for every session.

    Folding: once more than `keep` events wait in the journal, the session
    whose event is oldest has ALL its journaled events moved into `events`
    in one go, so its page there is written once per ~keep/sessions events
    instead of once per commit.  Each commit that wrote anything folds at
    least as many events as it appended (plus FOLD_EXTRA), so the journal
    does not grow under steady load.  Folded entries are then deleted from
    the journal's head in key order (its pages are freed whole).  keep = 0
    folds at every commit as much as it appended (plus FOLD_EXTRA): in
    steady use, everything.  session.delete removes the session's entries
    from the whole journal, folded ones too (an entry below the last seq
    in `events` is only "folded" while `events` still holds that seq).

    The index: session -> the jids of its events still in the journal
    (seqs first .. first + count - 1, contiguous).  It lives in memory and
    is rebuilt at open by scanning the journal; an entry whose seq is at or
    below the last seq in `events` was folded but not yet trimmed.

    Transactions: the store's write transaction can abort (map full, I/O),
    so every change to the index inside one is undoable.  An entry's
    {first, off, count} is saved in an undo log the first time a
    transaction touches it; jids are only appended past the saved count
    and `off` only moves forward, and the array is never moved while a
    transaction is open (it grows by realloc, which keeps positions), so
    restoring the three fields restores the entry.  Compaction and freeing
    of empty entries happen after the commit.

    Everything here runs on the store's one thread, inside its write
    transaction.
*/
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cm_log.h"
#include "cm_map.h"
#include "store.h"

#define JOURNAL_HDR 24 //  session (16) ‖ seq (8) before the event bytes
#define FOLD_EXTRA  64 //  events folded per commit beyond those appended
#define TRIM_EXTRA  256

struct store_jsess {
    cm_uuid_t session;
    uint64_t first; //  seq of jids[off]
    uint64_t *jids; //  jids[off .. off + count - 1]
    uint32_t off, count, cap;
    uint64_t stamp; //  transaction that last touched it (undo saved)
};

typedef struct undo {
    store_jsess_t *e;
    uint64_t first;
    uint32_t off, count;
    bool created;
} undo_t;

//  The index entry of session, or NULL (also before the journal is
//  loaded: a read-only store has none).
static store_jsess_t *find (store_t *self, const cm_uuid_t *session)
{
    return self->journal.sessions ? cm_map_get (self->journal.sessions, session->b)
                                  : NULL;
}

//  Room for one more jid after jids[off + count - 1].  realloc keeps
//  positions, so an open transaction's undo record stays valid.
static int jids_reserve (store_jsess_t *e)
{
    if (e->off + e->count < e->cap) return 0;
    uint32_t cap = e->cap ? e->cap * 2 : 8;
    uint64_t *jids = realloc (e->jids, (size_t)cap * sizeof *jids);
    if (!jids) return ENOMEM;
    e->jids = jids;
    e->cap = cap;
    return 0;
}

static void jsess_free (store_jsess_t *e)
{
    if (e) free (e->jids);
    free (e);
}

//  Save e's fields before the open transaction changes them (once).
static int touch (store_journal_t *j, store_jsess_t *e, bool created)
{
    if (e->stamp == j->stamp) return 0;
    if (j->undo_n == j->undo_cap) {
        size_t cap = j->undo_cap ? j->undo_cap * 2 : 64;
        undo_t *u = realloc (j->undo, cap * sizeof *u);
        if (!u) return ENOMEM;
        j->undo = u;
        j->undo_cap = cap;
    }
    j->undo[j->undo_n++] = (undo_t){e, e->first, e->off, e->count, created};
    e->stamp = j->stamp;
    return 0;
}

//  Highest seq of session in `events` (0 if none).
static int events_last (store_t *self, MDB_txn *txn, const cm_uuid_t *session,
                        uint64_t *out)
{
    uint8_t key[24];
    memcpy (key, session->b, 16);
    store_put_be64 (key + 16, UINT64_MAX);
    MDB_cursor *cur;
    int rc = mdb_cursor_open (txn, self->dbi[STORE_DB_EVENTS], &cur);
    if (rc) return rc;
    MDB_val k = {sizeof key, key}, v;
    rc = mdb_cursor_get (cur, &k, &v, MDB_SET_RANGE);
    if (rc == 0)
        rc = mdb_cursor_get (cur, &k, &v, MDB_PREV);
    else if (rc == MDB_NOTFOUND) //  nothing after: the last key may be ours
        rc = mdb_cursor_get (cur, &k, &v, MDB_LAST);
    *out = 0;
    if (rc == 0 && k.mv_size == 24 && memcmp (k.mv_data, session->b, 16) == 0)
        *out = store_get_be64 ((const uint8_t *)k.mv_data + 16);
    mdb_cursor_close (cur);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

int store_last_seq (store_t *self, MDB_txn *txn, const cm_uuid_t *session, uint64_t *out)
{
    store_jsess_t *e = find (self, session);
    if (e && e->count) {
        *out = e->first + e->count - 1;
        return 0;
    }
    return events_last (self, txn, session, out);
}

bool store_journal_span (store_t *self, const cm_uuid_t *session, uint64_t *first,
                         uint64_t *last)
{
    store_jsess_t *e = find (self, session);
    if (!e || e->count == 0) return false;
    *first = e->first;
    *last = e->first + e->count - 1;
    return true;
}

//  The stored entry for jid, checked against what the index says it is.
static int entry_get (store_t *self, MDB_txn *txn, uint64_t jid, const cm_uuid_t *session,
                      uint64_t seq, MDB_val *v)
{
    uint8_t key[8];
    store_put_be64 (key, jid);
    MDB_val k = {sizeof key, key};
    int rc = mdb_get (txn, self->dbi[STORE_DB_JOURNAL], &k, v);
    if (rc) return rc == MDB_NOTFOUND ? MDB_CORRUPTED : rc;
    const uint8_t *d = v->mv_data;
    if (v->mv_size <= JOURNAL_HDR || memcmp (d, session->b, 16) != 0 ||
        store_get_be64 (d + 16) != seq)
        return MDB_CORRUPTED;
    return 0;
}

int store_journal_event (store_t *self, MDB_txn *txn, const cm_uuid_t *session,
                         uint64_t seq, MDB_val *out)
{
    store_jsess_t *e = find (self, session);
    if (!e || seq < e->first || seq - e->first >= e->count) return MDB_NOTFOUND;
    MDB_val v;
    int rc = entry_get (self, txn, e->jids[e->off + (seq - e->first)], session, seq, &v);
    if (rc) return rc;
    out->mv_data = (uint8_t *)v.mv_data + JOURNAL_HDR;
    out->mv_size = v.mv_size - JOURNAL_HDR;
    return 0;
}

int store_journal_append (store_t *self, MDB_txn *txn, const cm_uuid_t *session,
                          uint64_t seq, const void *data, size_t size)
{
    store_journal_t *j = &self->journal;
    store_jsess_t *e = cm_map_get (j->sessions, session->b);
    bool created = false;
    if (!e) {
        if (!(e = calloc (1, sizeof *e))) return ENOMEM;
        e->session = *session;
        e->first = seq;
        if (cm_map_put (j->sessions, session->b, e)) {
            free (e);
            return ENOMEM;
        }
        created = true;
    }
    if (touch (j, e, created)) {
        if (created) {
            cm_map_remove (j->sessions, session->b);
            free (e);
        }
        return ENOMEM;
    }
    if (e->count == 0) e->first = seq;
    if (seq != e->first + e->count) return MDB_CORRUPTED; //  the caller checked
    if (jids_reserve (e)) return ENOMEM;
    if (!j->cur) {
        int rc = mdb_cursor_open (txn, self->dbi[STORE_DB_JOURNAL], &j->cur);
        if (rc) return rc;
    }
    uint8_t key[8];
    store_put_be64 (key, j->next_jid);
    MDB_val k = {sizeof key, key}, v = {JOURNAL_HDR + size, NULL};
    int rc = mdb_cursor_put (j->cur, &k, &v, MDB_APPEND | MDB_RESERVE);
    if (rc) return rc;
    uint8_t *d = v.mv_data;
    memcpy (d, session->b, 16);
    store_put_be64 (d + 16, seq);
    memcpy (d + JOURNAL_HDR, data, size);
    e->jids[e->off + e->count++] = j->next_jid++;
    j->unfolded++;
    j->appended++;
    return 0;
}

int store_journal_drop (store_t *self, MDB_txn *txn, const cm_uuid_t *session)
{
    //  Every entry of the session goes, folded ones too: an entry folded
    //  but not yet trimmed, left behind once `events` is emptied, would
    //  look unfolded at the next open and bring the session back.  The
    //  journal is short (about keep entries), and deletes are rare: scan
    //  it, gather the keys, then delete them.
    store_journal_t *j = &self->journal;
    MDB_cursor *cur;
    int rc = mdb_cursor_open (txn, self->dbi[STORE_DB_JOURNAL], &cur);
    if (rc) return rc;
    uint64_t *keys = NULL;
    size_t n = 0, cap = 0;
    MDB_val k, v;
    for (rc = mdb_cursor_get (cur, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get (cur, &k, &v, MDB_NEXT)) {
        if (k.mv_size != 8 || v.mv_size < 16 || memcmp (v.mv_data, session->b, 16) != 0)
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 64;
            uint64_t *more = realloc (keys, cap * sizeof *keys);
            if (!more) {
                rc = ENOMEM;
                break;
            }
            keys = more;
        }
        keys[n++] = store_get_be64 (k.mv_data);
    }
    mdb_cursor_close (cur);
    if (rc != MDB_NOTFOUND) {
        free (keys);
        return rc ? rc : MDB_CORRUPTED;
    }
    rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        uint8_t key[8];
        store_put_be64 (key, keys[i]);
        MDB_val dk = {sizeof key, key};
        rc = mdb_del (txn, self->dbi[STORE_DB_JOURNAL], &dk, NULL);
    }
    free (keys);
    if (rc) return rc;
    store_jsess_t *e = cm_map_get (j->sessions, session->b);
    if (!e || e->count == 0) return 0;
    if (touch (j, e, false)) return ENOMEM;
    j->unfolded -= e->count;
    e->off += e->count;
    e->count = 0;
    return 0;
}

//  Move up to n of e's journaled events into `events`.
static int fold_session (store_t *self, MDB_txn *txn, store_jsess_t *e, uint32_t n)
{
    store_journal_t *j = &self->journal;
    if (touch (j, e, false)) return ENOMEM;
    MDB_cursor *cur;
    int rc = mdb_cursor_open (txn, self->dbi[STORE_DB_EVENTS], &cur);
    if (rc) return rc;
    uint8_t key[24];
    memcpy (key, e->session.b, 16);
    for (uint32_t i = 0; i < n && rc == 0; i++) {
        uint64_t seq = e->first + i;
        MDB_val v;
        if ((rc = entry_get (self, txn, e->jids[e->off + i], &e->session, seq, &v)))
            break;
        //  A value is only valid until the next write: copy it out first.
        size_t size = v.mv_size - JOURNAL_HDR;
        if (size > j->copy_cap) {
            char *copy = realloc (j->copy, size);
            if (!copy) {
                rc = ENOMEM;
                break;
            }
            j->copy = copy;
            j->copy_cap = size;
        }
        memcpy (j->copy, (uint8_t *)v.mv_data + JOURNAL_HDR, size);
        store_put_be64 (key + 16, seq);
        MDB_val k = {sizeof key, key}, ev = {size, j->copy};
        rc = mdb_cursor_put (cur, &k, &ev, 0);
    }
    mdb_cursor_close (cur);
    if (rc) return rc;
    e->first += n;
    e->off += n;
    e->count -= n;
    j->unfolded -= n;
    j->folded += n;
    return 0;
}

int store_journal_fold_session (store_t *self, MDB_txn *txn, const cm_uuid_t *session)
{
    store_jsess_t *e = cm_map_get (self->journal.sessions, session->b);
    if (!e || e->count == 0) return 0;
    int rc = fold_session (self, txn, e, e->count);
    if (rc == 0) self->journal.folds++;
    return rc;
}

int store_journal_fold (store_t *self, MDB_txn *txn)
{
    store_journal_t *j = &self->journal;
    uint64_t fold = j->appended + FOLD_EXTRA;
    uint64_t trim = 2 * fold + TRIM_EXTRA;
    MDB_cursor *cur;
    int rc = mdb_cursor_open (txn, self->dbi[STORE_DB_JOURNAL], &cur);
    if (rc) return rc;
    //  Walk from the head: delete what is folded; at the oldest event
    //  still waiting, fold its session (while over keep), then go on.
    while (trim > 0) {
        MDB_val k, v;
        if ((rc = mdb_cursor_get (cur, &k, &v, MDB_FIRST))) break;
        store_jsess_t *e = NULL;
        uint64_t seq = 0;
        if (v.mv_size > JOURNAL_HDR) {
            e = cm_map_get (j->sessions, v.mv_data);
            seq = store_get_be64 ((const uint8_t *)v.mv_data + 16);
        }
        if (!e || e->count == 0 || seq < e->first) {
            //  folded (or its session deleted): the head can go
            if ((rc = mdb_cursor_del (cur, 0))) break;
            trim--;
            continue;
        }
        if (j->unfolded <= self->opts.journal_keep || fold == 0) break;
        uint32_t n = e->count < fold ? e->count : (uint32_t)fold;
        if ((rc = fold_session (self, txn, e, n))) break;
        fold -= n;
        j->folds++;
    }
    mdb_cursor_close (cur);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

void store_journal_begin (store_t *self)
{
    store_journal_t *j = &self->journal;
    j->stamp++;
    j->undo_n = 0;
    j->appended = 0;
    j->cur = NULL;
    j->txn_next_jid = j->next_jid;
    j->txn_unfolded = j->unfolded;
    j->txn_folded = j->folded;
    j->txn_folds = j->folds;
}

void store_journal_end (store_t *self, bool committed)
{
    store_journal_t *j = &self->journal;
    //  The transaction closed the append cursor (LMDB frees a write
    //  transaction's cursors when it ends).
    j->cur = NULL;
    if (!committed) {
        for (size_t i = j->undo_n; i-- > 0;) {
            undo_t *u = &j->undo[i];
            if (u->created) {
                cm_map_remove (j->sessions, u->e->session.b);
                jsess_free (u->e);
                continue;
            }
            u->e->first = u->first;
            u->e->off = u->off;
            u->e->count = u->count;
        }
        j->next_jid = j->txn_next_jid;
        j->unfolded = j->txn_unfolded;
        j->folded = j->txn_folded;
        j->folds = j->txn_folds;
    } else {
        for (size_t i = 0; i < j->undo_n; i++) {
            store_jsess_t *e = j->undo[i].e;
            if (e->count == 0) {
                cm_map_remove (j->sessions, e->session.b);
                jsess_free (e);
                continue;
            }
            if (e->off) {
                memmove (e->jids, e->jids + e->off, (size_t)e->count * sizeof *e->jids);
                e->off = 0;
            }
            if (e->cap > 64 && e->count < e->cap / 4) {
                uint64_t *jids = realloc (e->jids, (size_t)(e->cap / 2) * sizeof *jids);
                if (jids) {
                    e->jids = jids;
                    e->cap /= 2;
                }
            }
        }
    }
    j->undo_n = 0;
    j->stamp++; //  nothing is "touched" between transactions
}

int store_journal_load (store_t *self, MDB_txn *txn, char *err, size_t errlen)
{
    store_journal_t *j = &self->journal;
    if (!(j->sessions = cm_map_new (16))) {
        snprintf (err, errlen, "out of memory");
        return CM_E_NOMEM;
    }
    j->next_jid = 1;
    j->stamp = 1;
    MDB_cursor *cur;
    int rc = mdb_cursor_open (txn, self->dbi[STORE_DB_JOURNAL], &cur);
    if (rc) goto fail;
    MDB_val k, v;
    if ((rc = mdb_cursor_get (cur, &k, &v, MDB_LAST)) == 0 && k.mv_size == 8)
        j->next_jid = store_get_be64 (k.mv_data) + 1;
    for (rc = mdb_cursor_get (cur, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get (cur, &k, &v, MDB_NEXT)) {
        if (k.mv_size != 8 || v.mv_size <= JOURNAL_HDR) {
            snprintf (err, errlen,
                      "%s: a journal entry is damaged (key %zu bytes, value %zu)",
                      self->path, k.mv_size, v.mv_size);
            mdb_cursor_close (cur);
            return CM_E_CORRUPT;
        }
        cm_uuid_t sid;
        memcpy (sid.b, v.mv_data, 16);
        uint64_t seq = store_get_be64 ((const uint8_t *)v.mv_data + 16);
        store_jsess_t *e = cm_map_get (j->sessions, sid.b);
        if (!e) {
            uint64_t last;
            if ((rc = events_last (self, txn, &sid, &last))) break;
            if (!(e = calloc (1, sizeof *e)) || cm_map_put (j->sessions, sid.b, e)) {
                free (e);
                rc = ENOMEM;
                break;
            }
            e->session = sid;
            e->first = last + 1;
        }
        if (seq < e->first) continue; //  folded, not yet trimmed
        if (seq != e->first + e->count) {
            char s[CM_UUID_STR_LEN];
            snprintf (err, errlen,
                      "%s: the journal holds seq %llu of session %s where %llu was "
                      "expected; the store is damaged",
                      self->path, (unsigned long long)seq, cm_uuid_fmt (&sid, s),
                      (unsigned long long)(e->first + e->count));
            mdb_cursor_close (cur);
            return CM_E_CORRUPT;
        }
        if ((rc = jids_reserve (e))) break;
        e->jids[e->count++] = store_get_be64 (k.mv_data);
        j->unfolded++;
    }
    mdb_cursor_close (cur);
    if (rc && rc != MDB_NOTFOUND) goto fail;
    //  Sessions whose journaled events were all folded need no entry.
    size_t pos = 0;
    const void *key;
    void *val;
    while (cm_map_next (j->sessions, &pos, &key, &val)) {
        store_jsess_t *e = val;
        if (e->count == 0) {
            cm_map_remove (j->sessions, key);
            jsess_free (e);
        }
    }
    if (j->unfolded)
        cm_info ("journal: %llu events of %zu sessions not yet folded",
                 (unsigned long long)j->unfolded, cm_map_size (j->sessions));
    return 0;
fail:
    snprintf (err, errlen, "cannot read the journal of %s: %s", self->path,
              mdb_strerror (rc));
    return store_mdb_err (rc);
}

void store_journal_free (store_t *self)
{
    store_journal_t *j = &self->journal;
    if (j->sessions) {
        size_t pos = 0;
        const void *key;
        void *val;
        while (cm_map_next (j->sessions, &pos, &key, &val)) jsess_free (val);
        cm_map_destroy (&j->sessions);
    }
    free (j->undo);
    j->undo = NULL;
    j->undo_n = j->undo_cap = 0;
    free (j->copy);
    j->copy = NULL;
    j->copy_cap = 0;
}
