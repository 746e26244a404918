// acp.js - the page's ACP connection: one WebSocket to the gateway's /acp,
// JSON-RPC 2.0 both ways, and reconnection with back-off.
//
// Events (an EventTarget): "status" {state, attempt, delayMs, reason}
// where state is connecting | connected | reconnecting | offline | signed_out;
// "open" after each successful initialize (the app re-attaches there);
// "notification" {method, params}; "request" {id, method, params} (a
// request from the gateway: session/request_permission); "auth" {message}
// when the key is refused (no reconnecting then).
//
// Requests in flight when the socket drops are rejected with code
// "disconnected"; the caller decides what to resend (prompts carry an
// idempotency key, so resending one is safe).

export class RpcError extends Error {
    constructor(code, message, data) {
        super(message);
        this.code = code;
        this.data = data || {};
    }
}

export const E = {
    AUTH: -32000, NOT_FOUND: -32002, BUSY: -32001, RATE: -32004, EXPIRED: -32008,
    UNAVAILABLE: -32011, CANCELLED: -32800,
};

const BACKOFF_FIRST_MS = 300;
const BACKOFF_MAX_MS = 10_000;
const REQUEST_TIMEOUT_MS = 30_000;

export class AcpConnection extends EventTarget {
    constructor(url, token) {
        super();
        this.url = url;
        this.token = token;
        this.ws = null;
        this.nextId = 1;
        this.pending = new Map(); // id -> {resolve, reject, timer, method}
        this.state = "idle";
        this.attempt = 0;
        this.retryTimer = null;
        this.stopped = false;
        this.authFailed = false;
        this.onOnline = () => { if (this.state === "offline") this.connectNow(); };
        // Offline: the socket is as good as dead (it may take a minute of
        // missed pings to notice); close it and wait for the "online" event.
        this.onOffline = () => {
            if (this.stopped) return;
            const ws = this.ws;
            this.ws = null; // its close event, whenever it comes, is ignored
            if (ws) {
                ws.close(4001, "offline");
                this.failPending("disconnected", "the browser is offline");
            }
            clearTimeout(this.retryTimer);
            this.setStatus("offline");
        };
        window.addEventListener("online", this.onOnline);
        window.addEventListener("offline", this.onOffline);
    }

    emit(type, detail) {
        this.dispatchEvent(new CustomEvent(type, { detail }));
    }

    setStatus(state, extra = {}) {
        this.state = state;
        this.emit("status", { state, attempt: this.attempt, ...extra });
    }

    start() {
        this.stopped = false;
        this.connectNow();
    }

    // Stop for good (sign-out): no reconnecting.
    stop() {
        this.stopped = true;
        clearTimeout(this.retryTimer);
        window.removeEventListener("online", this.onOnline);
        window.removeEventListener("offline", this.onOffline);
        if (this.ws) this.ws.close(1000, "signed out");
        this.failPending("disconnected", "signed out");
        this.setStatus("signed_out");
    }

    // Reconnect now (the "retry now" button, or coming back online).
    connectNow() {
        if (this.stopped) return;
        clearTimeout(this.retryTimer);
        if (this.ws && this.ws.readyState <= 1) return;
        this.open();
    }

    open() {
        const u = new URL(this.url, location.href);
        u.protocol = u.protocol === "https:" ? "wss:" : u.protocol === "http:" ? "ws:" : u.protocol;
        u.searchParams.set("token", this.token);
        this.setStatus(this.attempt ? "reconnecting" : "connecting", { delayMs: 0 });
        let ws;
        try {
            ws = new WebSocket(u.toString());
        } catch (e) {
            this.scheduleRetry(String(e.message || e));
            return;
        }
        this.ws = ws;
        let closeReason = "";
        ws.onopen = async () => {
            try {
                const init = await this.request("initialize", {
                    protocolVersion: 1,
                    clientCapabilities: { fs: { readTextFile: false, writeTextFile: false }, terminal: false },
                    clientInfo: { name: "corral-web", title: "Corral web page", version: "1" },
                });
                this.agent = init;
                this.attempt = 0;
                this.setStatus("connected");
                this.emit("open", init);
            } catch (e) {
                if (e.code === E.AUTH) this.refuseAuth(e.message);
                else if (ws.readyState === 1) ws.close(4000, "initialize failed");
            }
        };
        ws.onmessage = (ev) => { if (this.ws === ws) this.onMessage(ev.data); };
        ws.onclose = (ev) => {
            if (this.ws !== ws) return;
            this.ws = null;
            closeReason = ev.reason || "";
            this.failPending("disconnected", "the connection to the gateway was lost");
            if (this.stopped || this.authFailed) return;
            if (ev.code === 1008 && /key/i.test(closeReason)) {
                this.refuseAuth(closeReason);
                return;
            }
            this.scheduleRetry(closeReason || (ev.code === 1006 ? "connection lost" : `closed (${ev.code})`));
        };
        ws.onerror = () => { /* onclose follows with the details we have */ };
    }

    refuseAuth(message) {
        this.authFailed = true;
        this.stopped = true;
        clearTimeout(this.retryTimer);
        if (this.ws) this.ws.close(1000, "key refused");
        this.setStatus("signed_out", { reason: message });
        this.emit("auth", { message: message || "the API key was not accepted" });
    }

    scheduleRetry(reason) {
        if (this.stopped) return;
        if (!navigator.onLine) {
            this.setStatus("offline", { reason });
            return;
        }
        const base = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** Math.min(this.attempt, 10));
        const delay = Math.round(base * (0.8 + Math.random() * 0.4));
        this.attempt++;
        this.setStatus("reconnecting", { delayMs: delay, reason, at: Date.now() + delay });
        clearTimeout(this.retryTimer);
        this.retryTimer = setTimeout(() => this.open(), delay);
    }

    failPending(code, message) {
        for (const [id, p] of this.pending) {
            clearTimeout(p.timer);
            p.reject(new RpcError(code, message));
            this.pending.delete(id);
        }
    }

    send(obj) {
        if (!this.ws || this.ws.readyState !== 1) return false;
        this.ws.send(JSON.stringify(obj));
        return true;
    }

    // A request; resolves with its result, rejects with an RpcError.
    // timeoutMs 0 = none (session/prompt runs as long as the turn).
    request(method, params, { timeoutMs = REQUEST_TIMEOUT_MS } = {}) {
        return new Promise((resolve, reject) => {
            const id = this.nextId++;
            if (!this.send({ jsonrpc: "2.0", id, method, params })) {
                reject(new RpcError("disconnected", "not connected to the gateway"));
                return;
            }
            const timer = timeoutMs ? setTimeout(() => {
                this.pending.delete(id);
                reject(new RpcError("timeout", `no answer to ${method} in ${timeoutMs / 1000} s`));
            }, timeoutMs) : null;
            this.pending.set(id, { resolve, reject, timer, method });
        });
    }

    notify(method, params) {
        return this.send({ jsonrpc: "2.0", method, params });
    }

    respond(id, result) {
        return this.send({ jsonrpc: "2.0", id, result });
    }

    onMessage(data) {
        let msg;
        try {
            msg = JSON.parse(data);
        } catch {
            console.warn("corral: a frame that is not JSON", String(data).slice(0, 200));
            return;
        }
        if (!msg || typeof msg !== "object") return;
        if (msg.method && msg.id !== undefined && msg.id !== null) {
            this.emit("request", { id: msg.id, method: msg.method, params: msg.params || {} });
            return;
        }
        if (msg.method) {
            this.emit("notification", { method: msg.method, params: msg.params || {} });
            return;
        }
        const p = this.pending.get(msg.id);
        if (!p) {
            if (msg.error) console.warn("corral: error without a request", msg.error);
            return;
        }
        this.pending.delete(msg.id);
        clearTimeout(p.timer);
        if (msg.error) p.reject(new RpcError(msg.error.code, msg.error.message || "error", msg.error.data));
        else p.resolve(msg.result);
    }
}
