/*  gw_conn.c - connections: shared frames, the bounded outbound queue,
    writes, pings, idle and slow-client policing.

    The queue is a ring of frame references.  Events are pushed only while
    the queue is under its soft limits (cfg queue_frames / queue_bytes);
    past them a watch stops taking live events and later catches up from
    the store (gw_watch.c), so a slow client costs memory bounded by the
    limits and never slows anyone else.  Replies and our own requests are
    always queued (they are bounded by the rate limit).  A connection that
    stays over its limit without the socket taking a byte for cfg slow_ms,
    or whose queue reaches twice the byte limit, is closed with 1008 and a
    reason saying so.

    One lws_write per WRITEABLE callback (lws's rule); the callback asks
    for the next one while frames remain.
*/
#include <stdlib.h>
#include <string.h>

#include "cm_log.h"
#include "cm_time.h"
#include "gw.h"
#include "gw_http.h"

/* ---- frames ----------------------------------------------------------- */

gw_frame_t *gw_frame_new (const char *text, size_t len)
{
    if (len > UINT32_MAX - LWS_PRE - 1) return NULL;
    gw_frame_t *f = malloc (sizeof *f + LWS_PRE + len + 1);
    if (!f) return NULL;
    f->refs = 1;
    f->len = (uint32_t)len;
    memcpy (f->buf + LWS_PRE, text, len);
    f->buf[LWS_PRE + len] = 0;
    return f;
}

gw_frame_t *gw_frame_take (char *text)
{
    if (!text) return NULL;
    gw_frame_t *f = gw_frame_new (text, strlen (text));
    free (text);
    return f;
}

gw_frame_t *gw_frame_ref (gw_frame_t *f)
{
    if (f) f->refs++;
    return f;
}

void gw_frame_unref (gw_frame_t **f_p)
{
    if (!f_p || !*f_p) return;
    if (--(*f_p)->refs == 0) free (*f_p);
    *f_p = NULL;
}

/* ---- connections ------------------------------------------------------- */

gw_conn_t *gw_conn_new (gw_server_t *self, struct lws *wsi, gw_conn_kind_t kind)
{
    gw_conn_t *conn = calloc (1, sizeof *conn);
    if (!conn) return NULL;
    conn->id = ++self->next_conn_id;
    conn->wsi = wsi;
    conn->kind = kind;
    conn->last_rx_ms = conn->last_tx_ms = conn->last_ping_ms = cm_mono_ms ();
    conn->next_rpc_id = 1;
    if (cm_map_put_u64 (self->conns, conn->id, conn)) {
        free (conn);
        return NULL;
    }
    conn->all_next = self->all;
    if (self->all) self->all->all_prev = conn;
    self->all = conn;
    self->nconns++;
    self->stats.conns_opened++;
    return conn;
}

gw_conn_t *gw_conn_find (gw_server_t *self, uint64_t id)
{
    return cm_map_get_u64 (self->conns, id);
}

void gw_conn_free (gw_server_t *self, gw_conn_t *conn)
{
    if (!conn) return;
    while (conn->watches) {
        //  Tell the session service one watcher fewer (its accounting).
        if (conn->kind == GW_CONN_WS && conn->key && self->ctx) {
            char conn_text[32];
            snprintf (conn_text, sizeof conn_text, "%llu", (unsigned long long)conn->id);
            proto_attach_req_t req = {.tenant = conn->key->tenant,
                                      .id = conn->watches->sub->id,
                                      .conn = conn_text};
            gw_call_session (self, PROTO_SESSION_DETACH, &req, GW_CALL_TIMEOUT_MS, NULL,
                             NULL, NULL);
        }
        gw_watch_free (self, conn->watches);
    }
    for (uint32_t i = 0; i < conn->qlen; i++)
        gw_frame_unref (&conn->q[(conn->qhead + i) % conn->qcap]);
    free (conn->q);
    for (size_t i = 0; i < conn->nheld; i++) free (conn->held[i]);
    cm_strbuf_free (&conn->rx);
    if (conn->key) gw_keys_release (self, conn->key);
    if (conn->ip_counted) gw_iplimit_release (self->iplimit, &conn->ip);
    if (conn->http) gw_http_free (self, conn);
    cm_map_remove_u64 (self->conns, conn->id);
    if (conn->all_prev)
        conn->all_prev->all_next = conn->all_next;
    else
        self->all = conn->all_next;
    if (conn->all_next) conn->all_next->all_prev = conn->all_prev;
    self->nconns--;
    self->stats.conns_closed++;
    free (conn);
}

bool gw_conn_has_room (const gw_server_t *self, const gw_conn_t *conn)
{
    return conn->qlen < (uint64_t)self->cfg->queue_frames &&
           conn->qbytes < (uint64_t)self->cfg->queue_bytes;
}

bool gw_conn_push (gw_server_t *self, gw_conn_t *conn, gw_frame_t *f)
{
    if (!f || conn->closing) return false;
    if (conn->qlen == conn->qcap) {
        uint32_t cap = conn->qcap ? conn->qcap * 2 : 8;
        gw_frame_t **q = malloc (cap * sizeof *q);
        if (!q) {
            gw_conn_close (self, conn, 1011, "server out of memory");
            return false;
        }
        for (uint32_t i = 0; i < conn->qlen; i++)
            q[i] = conn->q[(conn->qhead + i) % conn->qcap];
        free (conn->q);
        conn->q = q;
        conn->qcap = cap;
        conn->qhead = 0;
    }
    conn->q[(conn->qhead + conn->qlen) % conn->qcap] = gw_frame_ref (f);
    conn->qlen++;
    conn->qbytes += f->len;
    if (conn->qlen == 1) lws_callback_on_writable (conn->wsi);
    bool room = gw_conn_has_room (self, conn);
    if (!room && !conn->stuck_since_ms) conn->stuck_since_ms = cm_mono_ms ();
    if (conn->qbytes > 2 * (uint64_t)self->cfg->queue_bytes) {
        self->stats.slow_closed++;
        gw_conn_close (self, conn, 1008,
                       "client too slow: its outbound queue passed the limit; "
                       "reconnect and attach with afterSeq to resume");
    }
    return room;
}

void gw_conn_send_text (gw_server_t *self, gw_conn_t *conn, char *text)
{
    if (!text) return;
    gw_frame_t *f = gw_frame_take (text);
    if (!f) {
        gw_conn_close (self, conn, 1011, "server out of memory");
        return;
    }
    gw_conn_push (self, conn, f);
    gw_frame_unref (&f);
}

void gw_conn_close (gw_server_t *self, gw_conn_t *conn, int code, const char *reason)
{
    if (conn->closing) return;
    conn->closing = true;
    conn->close_code = code;
    snprintf (conn->close_reason, sizeof conn->close_reason, "%s", reason ? reason : "");
    cm_info ("closing connection %llu from %s: %d %s", (unsigned long long)conn->id,
             conn->peer, code, conn->close_reason);
    lws_callback_on_writable (conn->wsi);
    //  A peer that no longer reads never makes its socket writeable, so the
    //  close frame would wait forever, holding the descriptor and the queue:
    //  it gets slow_ms to read, then lws drops the connection.
    int grace = (int)((self->cfg->slow_ms + 999) / 1000);
    lws_set_timeout (conn->wsi, PENDING_TIMEOUT_CLOSE_SEND, grace > 0 ? grace : 1);
}

static void pop (gw_server_t *self, gw_conn_t *conn)
{
    gw_frame_t *f = conn->q[conn->qhead];
    conn->qbytes -= f->len;
    conn->qhead = (conn->qhead + 1) % conn->qcap;
    conn->qlen--;
    conn->qoff = 0;
    gw_frame_unref (&f);
    //  Under half the limit again: let lagging watches catch up.  Only then
    //  is the client no longer stuck: its watches stay behind (CATCHUP)
    //  until this point, so a client that took a frame or two just under
    //  the limit and then stopped reading must still time out.
    if (conn->qlen <= (uint64_t)self->cfg->queue_frames / 2 &&
        conn->qbytes <= (uint64_t)self->cfg->queue_bytes / 2) {
        conn->stuck_since_ms = 0;
        gw_conn_on_drained (self, conn);
    }
}

int gw_conn_write (gw_server_t *self, gw_conn_t *conn)
{
    if (conn->kind == GW_CONN_HTTP) return gw_http_write (self, conn);
    if (conn->closing && (!conn->flush_first || !conn->qlen)) {
        //  Once only: returning -1 again while lws awaits the peer's close
        //  would drop the socket at once, and with the peer's frames unread
        //  the kernel sends RST, so the peer never reads our close frame.
        if (conn->close_sent) return 0;
        conn->close_sent = true;
        lws_close_reason (conn->wsi, (enum lws_close_status)conn->close_code,
                          (unsigned char *)conn->close_reason,
                          strlen (conn->close_reason));
        return -1;
    }
    if (conn->ping_sent_ms < 0) { //  a ping is due
        //  Never an empty payload: lws drops a zero-length PONG before
        //  LWS_CALLBACK_RECEIVE_PONG, so an empty ping's answer is never seen.
        unsigned char buf[LWS_PRE + 4] = {0};
        memcpy (buf + LWS_PRE, "ping", 4);
        conn->ping_sent_ms = conn->last_ping_ms = cm_mono_ms ();
        if (lws_write (conn->wsi, buf + LWS_PRE, 4, LWS_WRITE_PING) < 0) return -1;
        if (conn->qlen) lws_callback_on_writable (conn->wsi);
        return 0;
    }
    if (!conn->qlen) return 0;
    gw_frame_t *f = conn->q[conn->qhead];
    if (lws_write (conn->wsi, f->buf + LWS_PRE, f->len, LWS_WRITE_TEXT) < (int)f->len)
        return -1;
    self->stats.frames_out++;
    self->stats.bytes_out += f->len;
    conn->last_tx_ms = cm_mono_ms ();
    pop (self, conn);
    if (conn->qlen || conn->closing) lws_callback_on_writable (conn->wsi);
    return 0;
}

//  HTTP writers pop frames through this (gw_http.c).
void gw_conn_pop (gw_server_t *self, gw_conn_t *conn)
{
    if (conn->qlen) pop (self, conn);
}

void gw_conn_on_pong (gw_server_t *self, gw_conn_t *conn)
{
    (void)self;
    conn->missed_pongs = 0;
    conn->ping_sent_ms = 0;
}

void gw_conn_sweep (gw_server_t *self, int64_t now)
{
    const gw_config_t *cfg = self->cfg;
    for (gw_conn_t *conn = self->all; conn; conn = conn->all_next) {
        if (conn->closing) continue;
        if (conn->stuck_since_ms && now - conn->stuck_since_ms > cfg->slow_ms) {
            self->stats.slow_closed++;
            gw_conn_close (self, conn, 1008,
                           "client too slow: it did not read its events; reconnect "
                           "and attach with afterSeq to resume");
            continue;
        }
        if (conn->kind != GW_CONN_WS) continue;
        if (cfg->idle_ms && !conn->watches && now - conn->last_rx_ms > cfg->idle_ms) {
            gw_conn_close (self, conn, 1001,
                           "idle timeout: no request and no session watched");
            continue;
        }
        //  Ping every ping_ms; an unanswered ping is a missed pong; two
        //  missed pongs close the connection.
        if (conn->ping_sent_ms > 0 && now - conn->ping_sent_ms >= cfg->ping_ms) {
            if (++conn->missed_pongs >= 2) {
                gw_conn_close (self, conn, 1001, "no pong to two pings");
                continue;
            }
            conn->ping_sent_ms = -1;
            lws_callback_on_writable (conn->wsi);
        } else if (conn->ping_sent_ms == 0 && now - conn->last_ping_ms >= cfg->ping_ms) {
            conn->ping_sent_ms = -1;
            lws_callback_on_writable (conn->wsi);
        }
    }
}
