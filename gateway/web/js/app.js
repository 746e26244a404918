// app.js - the Corral web page: sign-in, the sessions sidebar, the open
// session's conversation, the composer and its queue, and the connection.
//
// How it talks to the gateway (docs/web.md has the whole story):
//  - POST /v1/login checks the key (and sets the corral_key cookie); the key
//    is kept in localStorage and sent as ?token= on the WebSocket and as a
//    Bearer header on REST calls.
//  - The sidebar comes from GET /v1/sessions (it carries usage and cost,
//    which ACP's session/list does not).
//  - Everything else is ACP over one WebSocket (/acp): session/new,
//    _corral/session/attach {sessionId, afterSeq, epoch} to open a session
//    or resume after a drop, session/prompt, session/cancel, permission
//    answers, session/set_mode, session/close, session/resume, session/delete.
//  - Every event carries _meta.seq; the page applies seq lastSeq+1 only, so
//    a resumed stream can neither repeat nor skip a line.
import { AcpConnection, E } from "./acp.js";
import { Conversation } from "./conversation.js";
import { h, clear, ago, money, localTime } from "./dom.js";

const $ = (id) => document.getElementById(id);
const LS = {
    key: "corral.key", theme: "corral.theme", lastOpen: "corral.lastOpen",
    lastCwd: "corral.lastCwd", queue: "corral.queue", answers: "corral.answers", root: "corral.root",
};
const RUNNING = new Set(["running", "awaiting_permission", "creating"]);
const SIDEBAR_REFRESH_MS = 15_000;
const RETRY_UNAVAILABLE_MS = 1000;

const S = {
    key: null,
    conn: null,
    sessions: [],          // REST session objects, newest first
    open: null,            // the open session (see newOpen)
    queue: [],             // prompts not yet answered: {key, sessionId, text, state, note, turnId}
    refreshTimer: null,
    conv: null,
};

function newOpen(id) {
    return {
        id, epoch: null, lastSeq: 0, state: "", attached: false, attaching: false,
        resyncing: false, seqLog: [], dups: 0, gaps: 0, lastUserTurn: null, info: null,
    };
}

// What the tests (and a curious person in the console) can read.
window.corral = {
    get connection() { return S.conn?.state || "none"; },
    get open() {
        const o = S.open;
        return o && { id: o.id, epoch: o.epoch, lastSeq: o.lastSeq, state: o.state, seqLog: [...o.seqLog], dups: o.dups, gaps: o.gaps };
    },
    get queue() { return S.queue.map((q) => ({ text: q.text, state: q.state, note: q.note })); },
    busyRefusals: 0, // prompts the server refused as busy (they stay queued)
    answerText() { return S.conv ? S.conv.answerText() : ""; },
};

// ---- theme ----------------------------------------------------------------------------

const THEMES = ["auto", "light", "dark"];
function applyTheme(t) {
    if (t === "light" || t === "dark") document.documentElement.dataset.theme = t;
    else delete document.documentElement.dataset.theme;
    const btn = $("theme");
    btn.setAttribute("aria-label", `Theme: ${t === "auto" ? "automatic" : t}`);
    btn.title = `Theme: ${t === "auto" ? "automatic (follows the system)" : t} — click to change`;
    btn.textContent = t === "dark" ? "☾" : t === "light" ? "☀" : "◐";
}
function cycleTheme() {
    const cur = localStorage.getItem(LS.theme) || "auto";
    const next = THEMES[(THEMES.indexOf(cur) + 1) % THEMES.length];
    localStorage.setItem(LS.theme, next);
    applyTheme(next);
}

// ---- sign-in ------------------------------------------------------------------------------

function showSignin(message) {
    $("app").hidden = true;
    $("signin").hidden = false;
    const err = $("signin-error");
    err.hidden = !message;
    err.textContent = message || "";
    $("signin-key").focus();
}

async function errorMessage(res) {
    try {
        const body = await res.json();
        if (body?.error?.message) return body.error.message;
    } catch { /* not JSON */ }
    return `the gateway answered ${res.status} ${res.statusText}`;
}

async function signIn(ev) {
    ev.preventDefault();
    const key = $("signin-key").value.trim();
    const btn = $("signin-submit");
    if (!key) return;
    btn.disabled = true;
    $("signin-error").hidden = true;
    try {
        const res = await fetch("/v1/login", {
            method: "POST", headers: { "Content-Type": "application/json" },
            body: JSON.stringify({ key }), credentials: "same-origin",
        });
        if (res.status === 204 || res.ok) {
            localStorage.setItem(LS.key, key);
            $("signin-key").value = "";
            startApp(key);
        } else if (res.status === 401) {
            showSignin(`Wrong key: ${await errorMessage(res)}`);
        } else {
            showSignin(`Cannot sign in now: ${await errorMessage(res)}`);
        }
    } catch {
        showSignin("Cannot reach the gateway. Check the address and that the server runs.");
    } finally {
        btn.disabled = false;
    }
}

function signOut(message) {
    localStorage.removeItem(LS.key);
    fetch("/v1/logout", { method: "POST", credentials: "same-origin" }).catch(() => {});
    stopApp();
    showSignin(message);
}

function stopApp() {
    if (S.conn) S.conn.stop();
    S.conn = null;
    clearInterval(S.refreshTimer);
    S.open = null;
    S.key = null;
    if (S.conv) S.conv.reset();
}

// ---- the app -------------------------------------------------------------------------------------

function startApp(key) {
    S.key = key;
    $("signin").hidden = true;
    $("app").hidden = false;
    loadQueue();
    const conn = new AcpConnection("/acp", key);
    S.conn = conn;
    conn.addEventListener("status", (e) => showConn(e.detail));
    conn.addEventListener("open", () => onConnected());
    conn.addEventListener("notification", (e) => onNotification(e.detail.method, e.detail.params));
    conn.addEventListener("request", (e) => onRequest(e.detail));
    conn.addEventListener("auth", (e) => signOut(`Your key was refused: ${e.detail.message}`));
    conn.start();
    refreshSessions();
    clearInterval(S.refreshTimer);
    S.refreshTimer = setInterval(() => { if (!document.hidden) refreshSessions(); }, SIDEBAR_REFRESH_MS);
}

let connTimer = null;
function showConn(st) {
    const el = $("conn");
    if (el.dataset.state !== st.state) // announced once per change, not per countdown tick
        $("conn-announce").textContent = { connected: "Connected", reconnecting: "Connection lost, reconnecting", offline: "Offline", connecting: "Connecting", signed_out: "Signed out" }[st.state] || st.state;
    el.dataset.state = st.state;
    const text = $("conn-text");
    clearInterval(connTimer);
    const retry = $("conn-retry");
    retry.hidden = !(st.state === "reconnecting" && st.delayMs > 0) && st.state !== "offline";
    const draw = () => {
        if (st.state === "connected") text.textContent = "Connected";
        else if (st.state === "connecting") text.textContent = "Connecting…";
        else if (st.state === "offline") text.textContent = "Offline — waiting for the network";
        else if (st.state === "reconnecting") {
            const left = st.at ? Math.max(0, Math.ceil((st.at - Date.now()) / 1000)) : 0;
            text.textContent = left > 0 ? `Reconnecting in ${left} s…` : "Reconnecting…";
        } else text.textContent = "Signed out";
    };
    draw();
    if (st.state === "reconnecting") connTimer = setInterval(draw, 500);
    if (st.state !== "connected" && S.conv) S.conv.dropRequests();
    const banner = $("s-banner");
    if (st.state === "connected") {
        banner.hidden = true;
    } else if (S.open && st.state !== "connecting") {
        banner.hidden = false;
        banner.textContent = st.state === "offline"
            ? "You are offline. The conversation continues on the server and appears here when you are back."
            : "Connection lost. Reconnecting; the conversation resumes where it stopped.";
    }
    updateComposer();
}

function onConnected() {
    refreshSessions();
    if (S.open) {
        S.open.attached = false;
        attachOpen();
    } else {
        const fromHash = sessionFromHash();
        const id = fromHash || localStorage.getItem(LS.lastOpen);
        if (id) openSession(id, { quietMissing: !fromHash });
    }
}

function sessionFromHash() {
    const m = /^#s=([0-9a-fA-F-]{36})$/.exec(location.hash);
    return m ? m[1].toLowerCase() : null;
}

// ---- sessions sidebar ---------------------------------------------------------------------------

async function api(path, opts = {}) {
    const res = await fetch(path, {
        ...opts, headers: { Authorization: `Bearer ${S.key}`, ...(opts.headers || {}) }, credentials: "same-origin",
    });
    if (res.status === 401) {
        signOut(`Your key was refused: ${await errorMessage(res)}`);
        throw new Error("unauthorized");
    }
    if (!res.ok) throw new Error(await errorMessage(res));
    return res.status === 204 ? null : res.json();
}

async function refreshSessions() {
    if (!S.key) return;
    try {
        const all = [];
        let cursor = "";
        for (let page = 0; page < 10; page++) {
            const body = await api(`/v1/sessions?limit=1000${cursor ? "&cursor=" + encodeURIComponent(cursor) : ""}`);
            all.push(...(body.sessions || []));
            if (!body.nextCursor) break;
            cursor = body.nextCursor;
        }
        all.sort((a, b) => (b.createdMs || 0) - (a.createdMs || 0) || String(b.id).localeCompare(String(a.id)));
        S.sessions = all;
        $("sessions-error").hidden = true;
        drawSessions();
        if (S.open) drawHeader();
    } catch (e) {
        if (e.message === "unauthorized") return;
        $("sessions-error").hidden = false;
        $("sessions-error").textContent = `Cannot load the sessions: ${e.message}`;
        clearTimeout(refreshTimer);
        refreshTimer = setTimeout(refreshSessions, 3000); // e.g. 503 while the stack starts
    }
}

function sessionById(id) {
    return S.sessions.find((s) => s.id === id);
}

function drawSessions() {
    const ul = $("sessions");
    // the list is rebuilt: keep the keyboard focus on the same session
    const focused = ul.contains(document.activeElement) ? document.activeElement.dataset.sessionId : null;
    clear(ul);
    $("sessions-empty").hidden = S.sessions.length > 0;
    for (const s of S.sessions) {
        const state = S.open?.id === s.id && S.open.state ? S.open.state : s.state;
        const activity = s.updatedMs || s.createdMs;
        const btn = h("button.session-item", {
            type: "button", "aria-current": S.open?.id === s.id ? "true" : null,
            onclick: () => { openSession(s.id); closeDrawer(); },
            dataset: { sessionId: s.id },
        },
        h("span.s-title", { text: s.title || `Untitled ${s.id.slice(-6)}` }),
        h("span.s-line",
            h(`span.badge.state.state-${state}`, { text: state.replace("_", " ") }),
            h("span.s-when", { text: ago(activity), title: `last activity ${localTime(activity)}` }),
            h("span.s-cost", { text: money(s.usage?.costMicros), title: "cost so far" })));
        ul.append(h("li", btn));
        if (focused === s.id) btn.focus();
    }
    // suggestions for the new-session dialog
    const root = localStorage.getItem(LS.root);
    const cwds = [...new Set([...S.sessions.map((s) => s.cwd), root && `${root}/`].filter(Boolean))];
    $("cwd-list").replaceChildren(...cwds.map((c) => h("option", { value: c })));
    const models = [...new Set(S.sessions.map((s) => s.model).filter(Boolean))];
    $("model-list").replaceChildren(...models.map((m) => h("option", { value: m })));
}

setInterval(() => { if (S.key && !document.hidden) drawSessions(); }, 30_000); // "2 min ago" moves on

// ---- opening a session ---------------------------------------------------------------------------

async function openSession(id, { fresh = null, quietMissing = false } = {}) {
    const prev = S.open;
    if (prev && prev.id !== id && S.conn?.state === "connected")
        S.conn.request("_corral/session/detach", { sessionId: prev.id }).catch(() => {});
    S.open = newOpen(id);
    S.conv.reset();
    if (location.hash !== `#s=${id}`) history.replaceState(null, "", `#s=${id}`);
    localStorage.setItem(LS.lastOpen, id);
    $("empty").hidden = true;
    $("session").hidden = false;
    drawHeader();
    drawSessions();
    drawQueue();
    if (fresh) {
        // session/new already watches it from seq 1 on this connection
        S.open.epoch = fresh.epoch;
        S.open.attached = true;
        S.conv.live = true;
        S.open.state = "ready";
        drawHeader();
        $("input").focus();
        return;
    }
    if (S.conn?.state === "connected") await attachOpen({ quietMissing });
}

function closeView(message) {
    S.open = null;
    S.conv.reset();
    history.replaceState(null, "", location.pathname + location.search);
    localStorage.removeItem(LS.lastOpen);
    $("session").hidden = true;
    $("empty").hidden = false;
    if (message) {
        $("empty").replaceChildren(h("h2", { text: "No session open" }), h("p", { text: message }));
    } else {
        $("empty").replaceChildren(h("h2", { text: "No session open" }), h("p", { text: "Pick a session on the left, or start a new one." }));
    }
    drawSessions();
    updateComposer();
}

// Watch the open session from lastSeq on (0: the whole history).
async function attachOpen({ quietMissing = false, tries = 0 } = {}) {
    const o = S.open;
    if (!o || o.attaching || !S.conn) return;
    o.attaching = true;
    // A permission request still open: replay from just before it (what we
    // already have is skipped). The gateway asks a new connection about it
    // from any afterSeq now (docs/gateway.md), so this is belt and braces.
    const permSeq = S.conv.pendingPermissionSeq();
    const from = permSeq !== null && permSeq <= o.lastSeq ? permSeq - 1 : o.lastSeq;
    o.overlapUntil = from < o.lastSeq ? o.lastSeq : 0;
    const params = { sessionId: o.id, afterSeq: from };
    S.conv.live = false; // a replay: its event times say nothing about the clocks
    if (o.epoch && o.lastSeq > 0) params.epoch = o.epoch;
    try {
        const r = await S.conn.request("_corral/session/attach", params, { timeoutMs: 120_000 });
        if (S.open !== o) return;
        o.epoch = r.epoch || o.epoch;
        o.state = r.state || o.state;
        o.attached = true;
        o.resyncing = false;
        S.conv.live = true;
        if (o.needResync) {
            o.needResync = false;
            o.attaching = false;
            attachOpen();
            return;
        }
        drawHeader();
        drawSessions();
        resendAfterReconnect();
        flushQueue();
    } catch (e) {
        if (S.open !== o) return;
        if (e.code === E.EXPIRED) {
            // history rebuilt or out of retention: start over from the beginning
            o.lastSeq = 0;
            o.epoch = null;
            o.seqLog = [];
            S.conv.reset();
            S.conv.system("The server's history changed; the conversation was reloaded.");
            o.attaching = false;
            return attachOpen();
        }
        if (e.code === E.NOT_FOUND) {
            closeView(quietMissing ? null : "That session does not exist (any more) for this key.");
            refreshSessions();
            return;
        }
        if ((e.code === E.UNAVAILABLE || e.code === "timeout" || e.code === E.RATE) && tries < 30) {
            o.attaching = false;
            setTimeout(() => { if (S.open === o && !o.attached) attachOpen({ quietMissing, tries: tries + 1 }); }, RETRY_UNAVAILABLE_MS);
            return;
        }
        if (e.code !== "disconnected") S.conv.system(`Cannot open the session: ${e.message}`, "error");
    } finally {
        o.attaching = false;
    }
}

function drawHeader() {
    const o = S.open;
    if (!o) return;
    const s = sessionById(o.id) || {};
    const info = o.info || {};
    const title = info.title || s.title || `Untitled ${o.id.slice(-6)}`;
    $("s-title").textContent = title;
    document.title = `${title} · Corral`;
    const state = o.state || s.state || "";
    const st = $("s-state");
    st.textContent = state.replace("_", " ");
    st.className = `badge state state-${state}`;
    const cwd = info.cwd || s.cwd || "";
    const model = [info.backend || s.backend, info.model || s.model].filter(Boolean).join(" / ");
    $("s-where").textContent = [cwd, model].filter(Boolean).join(" · ");
    $("s-where").title = cwd;
    const mode = info.mode || s.mode;
    if (mode) $("s-mode").value = mode;
    const cost = Math.max(S.conv.totalCostMicros(), Number(s.usage?.costMicros) || 0);
    $("s-cost").textContent = money(cost);
    const closed = state === "closed";
    $("s-reopen").hidden = !closed;
    $("s-close").hidden = closed;
    updateComposer();
}

// ---- the event stream ---------------------------------------------------------------------

function onNotification(method, params) {
    if (method === "$/cancel_request") {
        S.conv.cancelRequest(params.requestId);
        return;
    }
    const o = S.open;
    if (!o || params.sessionId !== o.id) return; // a session we no longer show
    if (!acceptSeq(o, method, params)) return;
    const meta = params._meta || {};
    if (method === "_corral/session/state") {
        o.state = params.state;
        uiSoon();
        if (!RUNNING.has(o.state)) {
            // the turn that made the server say "busy" is over
            for (const q of openQueue()) if (q.busy) q.notBefore = 0;
            flushQueue();
        }
    } else if (method === "_corral/session/event") {
        const ev = params.event || {};
        if (ev.kind === "session_created") o.info = { ...ev };
        if (ev.kind === "setting_changed" && o.info && ev.option) o.info[ev.option] = ev.value;
    } else if (method === "session/update") {
        const u = params.update || {};
        if (u.sessionUpdate === "current_mode_update" && u.currentModeId) {
            o.info = { ...(o.info || {}), mode: u.currentModeId };
            uiSoon();
        }
        if (u.sessionUpdate === "session_info_update" && u.title) {
            o.info = { ...(o.info || {}), title: u.title };
            uiSoon();
        }
        if (u.sessionUpdate === "user_message_chunk" && meta.turnId && meta.turnId !== o.lastUserTurn) {
            o.lastUserTurn = meta.turnId;
            matchQueued(meta.turnId, u.content?.text);
        }
    }
    S.conv.apply(method, params);
}

// Only seq lastSeq + 1 moves the stream on.  An event may come as several
// frames with one seq (a prompt of several blocks): those follow each other.
function acceptSeq(o, method, params) {
    const seq = params._meta?.seq;
    if (typeof seq !== "number") return true;
    if (seq === o.lastSeq + 1) {
        o.lastSeq = seq;
        o.seqLog.push(seq);
        o.lastMethod = method + (params.update?.sessionUpdate || "");
        return true;
    }
    if (seq === o.lastSeq && o.lastMethod === method + (params.update?.sessionUpdate || "") &&
        params.update?.sessionUpdate === "user_message_chunk")
        return true;
    if (seq <= o.lastSeq) {
        if (seq <= (o.overlapUntil || 0)) return false; // a replay we asked to overlap
        o.dups++;
        console.warn(`corral: dropped a repeated event (seq ${seq}, at ${o.lastSeq})`);
        return false;
    }
    // A hole: never draw past it.  Attaching again from lastSeq fills it.
    if (!o.resyncing) {
        o.gaps++;
        o.resyncing = true;
        console.warn(`corral: seq ${seq} after ${o.lastSeq}; resuming from ${o.lastSeq}`);
        if (o.attaching) o.needResync = true; // once the running attach answers
        else attachOpen();
    }
    return false;
}

function onRequest({ id, method, params }) {
    if (method === "session/request_permission") {
        if (S.open && params.sessionId === S.open.id) S.conv.permissionRequest(id, params);
        // a session not shown here: leave it to the clients that show it
        return;
    }
    S.conn.send({ jsonrpc: "2.0", id, error: { code: -32601, message: `the web page does not serve ${method}` } });
}

function answerPermission(rpcId, optionId) {
    S.conn.respond(rpcId, { outcome: { outcome: "selected", optionId } });
}

// This tab's permission answers (sessionStorage: per tab, kept over a
// reload), so that a reloaded page still says "answered here".
const ANSWERS_KEPT = 200;
function answers() {
    try { return JSON.parse(sessionStorage.getItem(LS.answers) || "[]"); } catch { return []; }
}
function rememberAnswer(key, optionId) {
    if (!S.open) return;
    const list = answers().filter(([k]) => k !== `${S.open.id}/${key}`);
    list.push([`${S.open.id}/${key}`, optionId]);
    try { sessionStorage.setItem(LS.answers, JSON.stringify(list.slice(-ANSWERS_KEPT))); } catch { /* full */ }
}
function rememberedAnswer(key) {
    if (!S.open) return null;
    const hit = answers().find(([k]) => k === `${S.open.id}/${key}`);
    return hit ? hit[1] : null;
}

// ---- prompts and the queue ------------------------------------------------------------------

function uuid() {
    if (crypto.randomUUID) return crypto.randomUUID();
    const b = crypto.getRandomValues(new Uint8Array(16));
    return [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
}

function saveQueue() {
    const keep = S.queue.filter((q) => q.state !== "done").map(({ key, sessionId, text, state, note, turnId }) => ({ key, sessionId, text, state, note, turnId }));
    try { sessionStorage.setItem(LS.queue, JSON.stringify(keep)); } catch { /* full: not fatal */ }
}

// A reload keeps this tab's unsent prompts (sessionStorage is per tab).
function loadQueue() {
    try {
        S.queue = JSON.parse(sessionStorage.getItem(LS.queue) || "[]").filter((q) => q && q.key && q.text);
        for (const q of S.queue) if (q.state === "sending") q.state = "resend";
    } catch {
        S.queue = [];
    }
}

function openQueue() {
    return S.open ? S.queue.filter((q) => q.sessionId === S.open.id) : [];
}

function busy() {
    const o = S.open;
    if (!o) return true;
    return RUNNING.has(o.state) || openQueue().some((q) => q.state === "sending" || q.state === "accepted" || q.state === "resend");
}

function submitPrompt(ev) {
    ev?.preventDefault();
    const input = $("input");
    const text = input.value.trim();
    if (!text || !S.open) return;
    input.value = "";
    S.queue.push({ key: uuid(), sessionId: S.open.id, text, state: "queued", note: "" });
    saveQueue();
    flushQueue();
    drawQueue();
}

function flushQueue() {
    const o = S.open;
    if (!o || !o.attached || S.conn?.state !== "connected") return drawQueue();
    if (o.state === "closed") return drawQueue();
    const q = openQueue();
    if (!busy()) {
        const next = q.find((x) => x.state === "queued"); // in order: a waiting first one holds the rest
        if (next && !(next.notBefore > Date.now())) sendPrompt(next);
    }
    drawQueue();
}

async function sendPrompt(item) {
    item.state = "sending";
    item.note = "";
    item.busy = false;
    saveQueue();
    drawQueue();
    try {
        await S.conn.request("session/prompt", {
            sessionId: item.sessionId,
            prompt: [{ type: "text", text: item.text }],
            _meta: { idempotencyKey: item.key },
        }, { timeoutMs: 0 });
        removeItem(item);
    } catch (e) {
        if (e.code === "disconnected") {
            // the turn goes on without us; after re-attaching we know whether it started
            if (item.state === "sending") item.state = "resend";
        } else if (e.code === E.BUSY || e.code === E.RATE || e.code === E.UNAVAILABLE) {
            // stays queued, with the server's reason; tried again shortly (or
            // when the running turn ends)
            item.state = "queued";
            item.note = e.message;
            // Not again at once (our view of the state may be a moment
            // behind): after the running turn ends, or after a pause.
            const delay = e.code === E.BUSY ? 3000 : Math.min(10_000, Math.max(1000, Number(e.data?.retryAfterMs) || 0));
            if (e.code === E.BUSY) window.corral.busyRefusals++;
            item.busy = e.code === E.BUSY;
            item.notBefore = Date.now() + delay;
            setTimeout(flushQueue, delay + 10);
        } else if (e.code === E.CANCELLED || (e.code === -32009 || e.code === -32010)) {
            removeItem(item); // the turn ended (cancelled / failed): its footer says so
        } else {
            item.state = item.state === "accepted" ? "done" : "error";
            item.note = e.message;
            if (item.state === "done") removeItem(item);
        }
    }
    saveQueue();
    drawQueue();
    flushQueue();
}

function removeItem(item) {
    item.state = "done";
    S.queue = S.queue.filter((q) => q !== item);
    saveQueue();
    drawQueue();
}

// The stream shows a new user message: it is the prompt we are sending (if
// its text matches), which is then in the conversation and leaves the queue.
function matchQueued(turnId, text) {
    const item = openQueue().find((q) => (q.state === "sending" || q.state === "resend") && q.text === text);
    if (item) {
        item.state = "accepted";
        item.turnId = turnId;
        saveQueue();
        drawQueue();
    }
}

function onTurnEnded(turnId) {
    const item = openQueue().find((q) => q.turnId === turnId);
    if (item) removeItem(item);
    refreshSoon();
    // The "idle" state came just before this event, while the prompt was
    // still ours; after a reconnect no prompt answer follows: send the next.
    flushQueue();
}

// A replay of a long history sends many events at once: the header, the
// sidebar and the REST list are redrawn once per burst, not per event.
let uiTimer = null, refreshTimer = null;
function uiSoon() {
    if (uiTimer) return;
    uiTimer = setTimeout(() => { uiTimer = null; drawHeader(); drawSessions(); }, 50);
}
function refreshSoon() {
    clearTimeout(refreshTimer);
    refreshTimer = setTimeout(refreshSessions, 400);
}

// After a drop: prompts whose turn never showed up are sent again (same
// idempotency key: the server joins or answers a turn it already has).
function resendAfterReconnect() {
    for (const q of openQueue()) if (q.state === "resend") sendPrompt(q);
}

function drawQueue() {
    const box = $("queue");
    const items = openQueue().filter((q) => q.state !== "accepted" && q.state !== "done");
    box.hidden = items.length === 0;
    clear(box);
    if (!items.length) return updateComposer();
    box.append(h("div.queue-head", { text: items.length === 1 ? "Waiting to be sent" : `${items.length} prompts waiting to be sent` }));
    for (const q of items) {
        const label = {
            queued: "queued — sent when the running turn ends",
            sending: "sending…", resend: "will be sent again after reconnecting", error: "not sent",
        }[q.state] || q.state;
        box.append(h(`div.queued.q-${q.state}`,
            h("span.q-text", { text: q.text }),
            h("span.q-state", { text: label }),
            q.note ? h("span.q-note", { text: q.note }) : null,
            q.state === "error" ? h("button.link-btn", { type: "button", text: "Retry", onclick: () => { q.state = "queued"; q.note = ""; flushQueue(); } }) : null,
            q.state === "queued" || q.state === "error"
                ? h("button.link-btn", { type: "button", text: "Remove", "aria-label": `Remove “${q.text.slice(0, 40)}” from the queue`, onclick: () => removeItem(q) })
                : null));
    }
    updateComposer();
}

function updateComposer() {
    const o = S.open;
    const running = !!o && RUNNING.has(o.state);
    $("cancel").hidden = !running;
    $("activity").hidden = !running;
    $("activity-text").textContent = o?.state === "awaiting_permission"
        ? "Waiting for a permission answer (above)" : "The agent is working… Esc or Stop ends the turn";
    const closed = o?.state === "closed";
    $("input").disabled = !o || closed;
    $("send").disabled = !o || closed;
    $("input").placeholder = closed ? "This session is closed. Reopen it to continue."
        : running ? "A turn is running: a new message waits in the queue (Esc stops the turn)"
            : "Message the agent (Enter sends, Shift+Enter: new line)";
}

function cancelTurn() {
    const o = S.open;
    if (!o || !RUNNING.has(o.state) || !S.conn) return;
    S.conn.notify("session/cancel", { sessionId: o.id });
    $("cancel").disabled = true;
    setTimeout(() => { $("cancel").disabled = false; }, 1500);
}

// ---- session actions ---------------------------------------------------------------------

async function action(what, fn) {
    try {
        return await fn();
    } catch (e) {
        S.conv?.system(`${what} failed: ${e.message}`, "error");
        return undefined;
    }
}

async function setMode() {
    const o = S.open;
    if (!o) return;
    const modeId = $("s-mode").value;
    await action("Changing the mode", async () => {
        await S.conn.request("session/set_mode", { sessionId: o.id, modeId });
        o.info = { ...(o.info || {}), mode: modeId };
    });
    drawHeader();
}

async function closeSession() {
    const o = S.open;
    if (!o) return;
    await action("Closing the session", async () => {
        await S.conn.request("session/close", { sessionId: o.id });
        o.state = "closed";
        drawHeader();
    });
    refreshSessions();
}

async function reopenSession() {
    const o = S.open;
    if (!o) return;
    await action("Reopening the session", async () => {
        await S.conn.request("session/resume", { sessionId: o.id, cwd: o.info?.cwd || sessionById(o.id)?.cwd, mcpServers: [] });
        o.attached = false;
        await attachOpen();
    });
    refreshSessions();
}

async function deleteSession() {
    const o = S.open;
    if (!o) return;
    const title = $("s-title").textContent;
    if (!confirm(`Delete “${title}” and its whole history? This cannot be undone.`)) return;
    const ok = await action("Deleting the session", async () => {
        await S.conn.request("session/delete", { sessionId: o.id });
        return true;
    });
    if (ok) {
        S.sessions = S.sessions.filter((s) => s.id !== o.id);
        S.queue = S.queue.filter((q) => q.sessionId !== o.id);
        saveQueue();
        closeView("The session was deleted.");
        refreshSessions();
    }
}

// ---- new session dialog ------------------------------------------------------------------

function openNewDialog() {
    const d = $("new-dialog");
    $("new-error").hidden = true;
    const cwd = $("new-cwd");
    if (!cwd.value) cwd.value = localStorage.getItem(LS.lastCwd) || S.sessions[0]?.cwd || "";
    d.showModal();
    cwd.focus();
    cwd.select();
}

async function createSession(ev) {
    ev.preventDefault();
    const cwd = $("new-cwd").value.trim();
    const meta = {};
    const title = $("new-title-input").value.trim();
    if (title) meta.title = title;
    if ($("new-backend").value) meta.backend = $("new-backend").value;
    if ($("new-model").value.trim()) meta.model = $("new-model").value.trim();
    meta.mode = $("new-mode").value;
    const btn = $("new-create");
    btn.disabled = true;
    try {
        if (!S.conn || S.conn.state !== "connected") throw new Error("not connected to the gateway; wait for “Connected”");
        let r;
        for (let tries = 0; ; tries++) {
            try {
                r = await S.conn.request("session/new", { cwd, mcpServers: [], _meta: meta });
                break;
            } catch (e) {
                if (e.code !== E.UNAVAILABLE || tries >= 10) throw e;
                $("new-error").hidden = false;
                $("new-error").textContent = `${e.message} (retrying…)`;
                await new Promise((res) => setTimeout(res, RETRY_UNAVAILABLE_MS));
            }
        }
        $("new-error").hidden = true;
        localStorage.setItem(LS.lastCwd, cwd);
        $("new-dialog").close();
        $("new-title-input").value = "";
        await openSession(r.sessionId, { fresh: { epoch: r._meta?.epoch } });
        refreshSessions();
    } catch (e) {
        $("new-error").hidden = false;
        $("new-error").textContent = e.message;
        // "cwd … is outside the workspace roots (/srv/ws, ...)": offer the root
        const root = /outside the workspace roots \(([^,)]+)/.exec(e.message || "")?.[1];
        if (root && root.startsWith("/")) {
            localStorage.setItem(LS.root, root);
            drawSessions();
        }
    } finally {
        btn.disabled = false;
    }
}

// ---- narrow screens: the sidebar is a drawer -------------------------------------------

function openDrawer() {
    document.body.classList.add("drawer-open");
    $("scrim").hidden = false;
    $("menu").setAttribute("aria-expanded", "true");
    $("new-session").focus();
}
function closeDrawer() {
    if (!document.body.classList.contains("drawer-open")) return;
    document.body.classList.remove("drawer-open");
    $("scrim").hidden = true;
    $("menu").setAttribute("aria-expanded", "false");
}

// ---- wiring --------------------------------------------------------------------------------

function boot() {
    applyTheme(localStorage.getItem(LS.theme) || "auto");
    S.conv = new Conversation($("log"), {
        answer: answerPermission,
        remember: rememberAnswer,
        remembered: rememberedAnswer,
        turnEnded: onTurnEnded,
        usage: uiSoon,
    });
    $("signin-form").addEventListener("submit", signIn);
    $("theme").addEventListener("click", cycleTheme);
    $("signout").addEventListener("click", () => signOut());
    $("refresh").addEventListener("click", refreshSessions);
    $("conn-retry").addEventListener("click", () => S.conn?.connectNow());
    $("new-session").addEventListener("click", () => { closeDrawer(); openNewDialog(); });
    $("new-form").addEventListener("submit", createSession);
    $("new-cancel").addEventListener("click", () => $("new-dialog").close());
    $("composer").addEventListener("submit", submitPrompt);
    $("cancel").addEventListener("click", cancelTurn);
    $("s-mode").addEventListener("change", setMode);
    $("s-close").addEventListener("click", closeSession);
    $("s-reopen").addEventListener("click", reopenSession);
    $("s-delete").addEventListener("click", deleteSession);
    $("menu").addEventListener("click", () => document.body.classList.contains("drawer-open") ? closeDrawer() : openDrawer());
    $("scrim").addEventListener("click", closeDrawer);
    $("input").addEventListener("keydown", (e) => {
        if (e.key === "Enter" && !e.shiftKey && !e.isComposing) submitPrompt(e);
    });
    document.addEventListener("keydown", (e) => {
        if (e.key !== "Escape" || e.defaultPrevented) return;
        if ($("new-dialog").open) return; // the dialog closes itself
        if (document.body.classList.contains("drawer-open")) { closeDrawer(); $("menu").focus(); return; }
        if (S.open && RUNNING.has(S.open.state)) { e.preventDefault(); cancelTurn(); }
    });
    window.addEventListener("hashchange", () => {
        const id = sessionFromHash();
        if (id && S.key && (!S.open || S.open.id !== id)) openSession(id);
    });
    // signing in or out in another tab does it here too
    window.addEventListener("storage", (e) => {
        if (e.key !== LS.key) return;
        if (!e.newValue && S.key) signOut("Signed out in another tab.");
        else if (e.newValue && e.newValue !== S.key) { stopApp(); startApp(e.newValue); }
    });
    document.addEventListener("visibilitychange", () => { if (!document.hidden && S.key) refreshSessions(); });

    const key = localStorage.getItem(LS.key);
    if (key) startApp(key);
    else showSignin();
}

boot();
