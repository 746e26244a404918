// acp_sdk.test.mjs - the official ACP TypeScript SDK (@agentclientprotocol/sdk,
// its client app and its WebSocket stream transport over the `ws` package)
// against a whole Corral stack:
//
//   initialize -> authenticate -> session/new -> session/prompt with streamed
//   updates and a permission request answered (the file appears) -> a second
//   prompt (thought, plan, edit with a diff, another permission) -> a third
//   prompt cancelled with session/cancel -> session/set_mode -> session/load
//   on a new connection replays the whole session -> session/list ->
//   tenant-b is refused -> session/close, and a prompt afterwards fails.
//
// Every frame the gateway sends is recorded raw (a ws.WebSocket subclass
// handed to the SDK's transport) and validated against the SDK's ACP v1
// schema (acp_schema.mjs: strict JSON Schema on schema/v1/schema.json, and
// the SDK's own zod schemas): session/update params as SessionNotification,
// session/request_permission params as RequestPermissionRequest,
// $/cancel_request as CancelRequestNotification, each response as the
// *Response of the request it answers, errors as Error.  Corral's own
// notifications (_corral/session/state, _corral/session/event) are outside
// ACP's schema: their shape is checked instead.  What this client sends is
// validated too, so the test itself speaks ACP.
//
// Run: python3 corral_stack.py BUILD --script acp_sdk_script.json -- node acp_sdk.test.mjs
// (env CORRAL_URL, CORRAL_KEY, CORRAL_KEY_B, CORRAL_WORKSPACE).  Exit 0 = pass.
import fs from "node:fs";
import path from "node:path";
import { isDeepStrictEqual } from "node:util";
import WebSocket from "ws";
import * as acp from "@agentclientprotocol/sdk";
import { createWebSocketStream } from "@agentclientprotocol/sdk/experimental/ws-client";
import { AcpSchema } from "./acp_schema.mjs";

const URL_ = process.env.CORRAL_URL;
const KEY_A = process.env.CORRAL_KEY;
const KEY_B = process.env.CORRAL_KEY_B;
const WORKSPACE = process.env.CORRAL_WORKSPACE;
const VERBOSE = process.env.CORRAL_TEST_VERBOSE === "1";
for (const [k, v] of Object.entries({ CORRAL_URL: URL_, CORRAL_KEY: KEY_A, CORRAL_KEY_B: KEY_B, CORRAL_WORKSPACE: WORKSPACE }))
    if (!v) { console.error(`${k} is not set; run under corral_stack.py`); process.exit(2); }

const T0 = Date.now();
const schema = await AcpSchema.load();

// The validator itself: what must pass passes, what must fail fails (both the
// strict check and the SDK's lenient zod parse, which recovers a bad tool kind
// by dropping it and a bad plan entry by skipping it).
{
    const good = { sessionId: "s", update: { sessionUpdate: "tool_call", toolCallId: "t", title: "x", kind: "edit", status: "pending" }, _meta: { seq: 1 } };
    const badKind = structuredClone(good); badKind.update.kind = "bogus";
    const badPlan = { sessionId: "s", update: { sessionUpdate: "plan", entries: [{ content: "a", priority: "high", status: "done" }] } };
    const noSession = { update: good.update };
    const r = [good, badKind, badPlan, noSession].map((v) => schema.check("SessionNotification", v).errors);
    const extra = schema.check("SessionNotification", { ...good, surprise: 1 }).extras;
    const env = schema.checkMessage("Agent", { jsonrpc: "2.0", method: "session/update", params: good });
    const envBad = schema.checkMessage("Agent", { jsonrpc: "1.0", method: "session/update", params: good });
    if (r[0].length || !r[1].some((e) => e.startsWith("/")) || !r[1].some((e) => e.startsWith("sdk"))
        || !r[2].some((e) => e.startsWith("/")) || !r[2].some((e) => e.startsWith("sdk")) || !r[3].length
        || extra.join() !== "/surprise" || env.length || !envBad.length) {
        console.error("FAIL the schema validator does not work:", JSON.stringify({ r, extra, env, envBad }));
        process.exit(1);
    }
}

// ---- bookkeeping ------------------------------------------------------------

const problems = []; // schema or protocol violations found while recording
const checks = [];   // [name, ok] of the explicit assertions, for the summary
const timings = [];
const stats = { in: 0, out: 0, byType: {}, extras: new Set() };

function problem(text) {
    problems.push(text);
    console.error("PROBLEM " + text);
}
function check(ok, name, detail) {
    checks.push([name, !!ok]);
    if (!ok) {
        console.error(`FAIL ${name}${detail !== undefined ? ": " + (typeof detail === "string" ? detail : JSON.stringify(detail)) : ""}`);
        throw new Error("check failed: " + name);
    }
    if (VERBOSE) console.log(`ok   ${name}`);
}
async function step(name, fn) {
    const t = Date.now();
    try {
        return await fn();
    } finally {
        timings.push([name, Date.now() - t]);
    }
}
function withTimeout(promise, ms, what) {
    let timer;
    return Promise.race([
        promise,
        new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms); }),
    ]).finally(() => clearTimeout(timer));
}
const watchdog = setTimeout(() => {
    console.error("FAIL the whole test took more than 240 s");
    process.exit(1);
}, 240_000);

// Documented JSON-RPC error codes (docs/protocol.md).
const CODES = new Set([-32700, -32600, -32601, -32602, -32603, -32000, -32002, -32800,
    -32001, -32003, -32004, -32005, -32006, -32007, -32008, -32009, -32010, -32011]);

// Response type for each method we call, request type for what we send.
const RESPONSE_TYPE = {
    "initialize": "InitializeResponse",
    "authenticate": "AuthenticateResponse",
    "session/new": "NewSessionResponse",
    "session/load": "LoadSessionResponse",
    "session/list": "ListSessionsResponse",
    "session/close": "CloseSessionResponse",
    "session/prompt": "PromptResponse",
    "session/set_mode": "SetSessionModeResponse",
};
const REQUEST_TYPE = {
    "initialize": "InitializeRequest",
    "authenticate": "AuthenticateRequest",
    "session/new": "NewSessionRequest",
    "session/load": "LoadSessionRequest",
    "session/list": "ListSessionsRequest",
    "session/close": "CloseSessionRequest",
    "session/prompt": "PromptRequest",
    "session/set_mode": "SetSessionModeRequest",
    "session/cancel": "CancelNotification",
};
const STATES = ["creating", "ready", "running", "awaiting_permission", "idle", "hibernated", "closed"];

function validate(where, typeName, value) {
    const { errors, extras } = schema.check(typeName, value);
    stats.byType[typeName] = (stats.byType[typeName] || 0) + 1;
    for (const e of errors) problem(`${where}: not a valid ${typeName}: ${e}`);
    for (const x of extras) stats.extras.add(`${typeName} ${x}`);
    return errors.length === 0;
}

// ---- one connection: the SDK client over a recording WebSocket ----------------

class Wire {
    constructor(name, key) {
        this.name = name;
        this.key = key;
        this.frames = [];    // every frame both ways: {dir, idx, t, text, msg}
        this.sent = new Map(); // our request id -> {method, params, idx}
        this.pending = new Map(); // gateway's request id -> {method, idx}
        this.waiters = [];
        this.lastSeq = 0;    // of the seq-carrying notifications, in order
        this.epoch = null;
        this.sdkUpdates = []; // session/update as the SDK's handler saw them
        this.sdkPerms = [];
        this.sdkStates = [];
        this.sdkEvents = [];
        this.closedInfo = null;
    }

    // The WebSocket constructor the SDK's transport uses: ws, recording.
    socketClass() {
        const wire = this;
        return class RecordingWebSocket extends WebSocket {
            constructor(url, protocols, options) {
                super(url, protocols, options);
                this.on("message", (data, isBinary) => wire.onFrame(data, isBinary));
                this.on("close", (code, reason) => { wire.closedInfo = { code, reason: reason.toString() }; });
            }
            send(data, ...rest) {
                wire.onSend(data);
                return super.send(data, ...rest);
            }
        };
    }

    connect() {
        const stream = createWebSocketStream(URL_, {
            WebSocket: this.socketClass(),
            headers: { Authorization: `Bearer ${this.key}` },
        });
        const wire = this;
        const app = acp.client({ name: `corral-e2e-${this.name}` })
            .onNotification(acp.methods.client.session.update, ({ params }) => { wire.sdkUpdates.push(params); })
            .onRequest(acp.methods.client.session.requestPermission, ({ params }) => {
                wire.sdkPerms.push(params);
                const allow = params.options.find((o) => o.kind === "allow_once");
                return { outcome: { outcome: "selected", optionId: allow.optionId } };
            })
            .onNotification("_corral/session/state", (p) => p, ({ params }) => { wire.sdkStates.push(params); })
            .onNotification("_corral/session/event", (p) => p, ({ params }) => { wire.sdkEvents.push(params); });
        this.conn = app.connect(stream);
        this.agent = this.conn.agent;
        return this;
    }

    close() {
        this.conn.close();
    }

    onSend(data) {
        const text = typeof data === "string" ? data : Buffer.from(data).toString("utf8");
        const msg = JSON.parse(text);
        const f = { dir: "out", idx: this.frames.length, t: Date.now(), text, msg };
        this.frames.push(f);
        stats.out++;
        const where = `${this.name} sent #${f.idx}`;
        for (const e of schema.checkMessage("Client", msg)) problem(`${where}: not a valid ACP client message: ${e}`);
        if (msg.method !== undefined) {
            const type = REQUEST_TYPE[msg.method];
            if (!type) problem(`${where}: the test sent an unexpected method ${msg.method}`);
            else validate(where + " " + msg.method, type, msg.params ?? {});
            if (msg.id !== undefined) this.sent.set(JSON.stringify(msg.id), { method: msg.method, params: msg.params, idx: f.idx });
        } else {
            const req = this.pending.get(JSON.stringify(msg.id));
            if (req && req.method === "session/request_permission" && "result" in msg)
                validate(where + " permission answer", "RequestPermissionResponse", msg.result);
            if (req) req.answered = f.idx;
        }
    }

    onFrame(data, isBinary) {
        const idx = this.frames.length;
        const where = `${this.name} got #${idx}`;
        stats.in++;
        if (isBinary) { problem(`${where}: a binary frame`); return; }
        let text, msg;
        try {
            text = new TextDecoder("utf-8", { fatal: true }).decode(data);
            msg = JSON.parse(text);
        } catch (e) {
            problem(`${where}: not UTF-8 JSON: ${e.message}`);
            return;
        }
        const f = { dir: "in", idx, t: Date.now(), text, msg };
        this.frames.push(f);
        if (VERBOSE) console.log(`${this.name} <- ${text.length > 300 ? text.slice(0, 300) + "..." : text}`);
        try {
            this.validateIn(f, where);
        } catch (e) {
            problem(`${where}: ${e.stack}`);
        }
        for (const w of this.waiters.slice()) if (w.pred(f)) { this.waiters.splice(this.waiters.indexOf(w), 1); w.resolve(f); }
    }

    validateIn(f, where) {
        const m = f.msg;
        if (m === null || typeof m !== "object" || Array.isArray(m)) { problem(`${where}: not a JSON object`); return; }
        for (const e of schema.checkMessage("Agent", m)) problem(`${where}: not a valid ACP agent message: ${e}`);
        stats.byType["(agent message envelope)"] = (stats.byType["(agent message envelope)"] || 0) + 1;
        if (m.jsonrpc !== "2.0") problem(`${where}: jsonrpc is ${JSON.stringify(m.jsonrpc)}`);
        if (typeof m.method === "string") {
            where += " " + m.method;
            if ("result" in m || "error" in m) problem(`${where}: both a method and a result/error`);
            if (m.id !== undefined) { // a request to us
                if (!(typeof m.id === "string" || Number.isInteger(m.id))) problem(`${where}: bad id ${JSON.stringify(m.id)}`);
                this.pending.set(JSON.stringify(m.id), { method: m.method, idx: f.idx, params: m.params });
                if (m.method === "session/request_permission") {
                    validate(where, "RequestPermissionRequest", m.params);
                    this.checkMeta(f, where, false);
                } else problem(`${where}: the gateway sent an unexpected request`);
                return;
            }
            switch (m.method) {
                case "session/update":
                    validate(where, "SessionNotification", m.params);
                    this.checkMeta(f, where, true);
                    break;
                case "$/cancel_request":
                    validate(where, "CancelRequestNotification", m.params);
                    break;
                case "_corral/session/state":
                    this.checkCorral(f, where);
                    if (!STATES.includes(m.params?.state)) problem(`${where}: state ${JSON.stringify(m.params?.state)} is not one of ${STATES}`);
                    if (m.params?.reason !== undefined && typeof m.params.reason !== "string") problem(`${where}: reason is not a string`);
                    break;
                case "_corral/session/event":
                    this.checkCorral(f, where);
                    if (typeof m.params?.event?.kind !== "string" || !m.params.event.kind) problem(`${where}: event.kind missing`);
                    break;
                default:
                    problem(`${where}: an unexpected notification`);
            }
            return;
        }
        // a response to one of ours
        if (!("result" in m) === !("error" in m)) problem(`${where}: a response needs exactly one of result and error`);
        const req = this.sent.get(JSON.stringify(m.id));
        if (!req) { problem(`${where}: a response to no request of ours (id ${JSON.stringify(m.id)})`); return; }
        if (req.answer !== undefined) problem(`${where}: a second answer to ${req.method} id ${m.id}`);
        req.answer = f.idx;
        where += ` response to ${req.method}`;
        if ("error" in m) {
            validate(where, "Error", m.error);
            if (!CODES.has(m.error?.code)) problem(`${where}: undocumented error code ${m.error?.code}`);
            if (!m.error?.message) problem(`${where}: an error without a message`);
        } else validate(where, RESPONSE_TYPE[req.method], m.result);
    }

    // Every seq-carrying frame: _meta {seq, epoch, ts, turnId?}; the stream of
    // notifications is gap-free (same seq only for the frames of one event).
    checkMeta(f, where, stream) {
        const p = f.msg.params ?? {};
        const meta = p._meta;
        if (typeof p.sessionId !== "string") problem(`${where}: no sessionId`);
        if (!meta || typeof meta !== "object") { problem(`${where}: no _meta`); return; }
        if (!Number.isInteger(meta.seq) || meta.seq < 1) problem(`${where}: _meta.seq ${JSON.stringify(meta.seq)}`);
        if (typeof meta.epoch !== "string" || !meta.epoch) problem(`${where}: _meta.epoch ${JSON.stringify(meta.epoch)}`);
        else if (this.epoch === null) this.epoch = meta.epoch;
        else if (meta.epoch !== this.epoch) problem(`${where}: _meta.epoch changed from ${this.epoch} to ${meta.epoch}`);
        if (!Number.isInteger(meta.ts) || meta.ts < T0 - 120_000 || meta.ts > Date.now() + 60_000) problem(`${where}: _meta.ts ${meta.ts} is not a current Unix ms time`);
        if (meta.turnId !== undefined && typeof meta.turnId !== "string") problem(`${where}: _meta.turnId is not a string`);
        if (!stream) return;
        f.seq = meta.seq;
        const prev = this.lastSeq;
        const prevFrame = this.frames.slice(0, f.idx).reverse().find((g) => g.seq !== undefined);
        if (meta.seq === prev) {
            // another frame of the same event: must follow it directly
            if (!prevFrame || prevFrame.seq !== prev) problem(`${where}: seq ${meta.seq} repeated after other frames`);
        } else if (meta.seq !== prev + 1) {
            problem(`${where}: seq ${meta.seq} after ${prev} (a gap or a step back)`);
        }
        this.lastSeq = meta.seq;
    }

    checkCorral(f, where) {
        const p = f.msg.params;
        if (!p || typeof p !== "object" || Array.isArray(p)) { problem(`${where}: params is not an object`); return; }
        this.checkMeta(f, where, true);
    }

    // The first frame (already seen or still to come) that pred accepts.
    waitFor(pred, ms, what, from = 0) {
        const seen = this.frames.slice(from).find((f) => pred(f));
        if (seen) return Promise.resolve(seen);
        return withTimeout(new Promise((resolve) => this.waiters.push({ pred: (f) => f.idx >= from && pred(f), resolve })), ms, `${this.name}: ${what}`);
    }

    ins(from = 0, to = Infinity) { return this.frames.filter((f) => f.dir === "in" && f.idx >= from && f.idx < to); }
    updates(from = 0, to = Infinity) { return this.ins(from, to).filter((f) => f.msg.method === "session/update"); }
    events(kind, from = 0, to = Infinity) { return this.ins(from, to).filter((f) => f.msg.method === "_corral/session/event" && (!kind || f.msg.params.event.kind === kind)); }
    seqFrames() { return this.frames.filter((f) => f.seq !== undefined); }
    sentReq(method, pred = () => true) {
        return [...this.sent.entries()].filter(([, r]) => r.method === method && pred(r.params)).map(([id, r]) => ({ id, ...r })).pop();
    }
    responseTo(req) { return this.frames[req.answer]; }
}

// A prompt as the SDK sends it, checked afterwards from the raw frames.
async function prompt(wire, sessionId, text) {
    const res = await wire.agent.request(acp.methods.agent.session.prompt, { sessionId, prompt: [{ type: "text", text }] });
    const req = wire.sentReq("session/prompt", (p) => p?.prompt?.[0]?.text === text);
    check(req && req.answer !== undefined, `${text}: the raw response frame is recorded`);
    const resp = wire.responseTo(req);
    check(isDeepStrictEqual(resp.msg.result, res), `${text}: the SDK returned the response as sent`, { raw: resp.msg.result, sdk: res });
    // The SDK's handler had every update of the turn when the response resolved.
    check(wire.sdkUpdates.length >= wire.updates(0, resp.idx).length,
        `${text}: the SDK handled the turn's ${wire.updates(req.idx, resp.idx).length} updates before the response resolved`);
    const um = wire.updates(req.idx, resp.idx).find((f) => f.msg.params.update.sessionUpdate === "user_message_chunk" && f.msg.params.update.content?.text === text);
    check(um, `${text}: the prompt comes back as a user_message_chunk before the response`);
    const turnId = um.msg.params._meta.turnId;
    check(typeof turnId === "string", `${text}: the turn has a turnId`);
    return { res, req, resp, turnId, text };
}

// The response came after every frame of its turn, turn_ended included.
function checkTurnOrder(wire, turn) {
    const ended = wire.events("turn_ended").filter((f) => f.msg.params._meta.turnId === turn.turnId);
    check(ended.length === 1, `${turn.text}: exactly one turn_ended event`, ended.length);
    check(ended[0].idx < turn.resp.idx, `${turn.text}: turn_ended (#${ended[0].idx}) comes before the prompt response (#${turn.resp.idx})`);
    const stop = ended[0].msg.params.event.stopReason;
    if (stop !== undefined) check(stop === turn.res.stopReason, `${turn.text}: turn_ended says ${stop} like the response`);
    const late = wire.ins(turn.resp.idx).filter((f) => f.msg.params?._meta?.turnId === turn.turnId);
    check(late.length === 0, `${turn.text}: no frame of the turn after its response`, late.map((f) => f.text));
}

let sessionId;
const A = new Wire("A", KEY_A);
let newResp, turn1, turn2, turn3;

try {
    // ---- connection A: initialize, authenticate, session/new ----------------------
    await step("connect + initialize", async () => {
        A.connect();
        const init = await withTimeout(A.agent.request(acp.methods.agent.initialize, {
            protocolVersion: acp.PROTOCOL_VERSION,
            clientCapabilities: { fs: { readTextFile: false, writeTextFile: false }, terminal: false },
            clientInfo: { name: "corral-e2e", version: "1.0.0" },
        }), 10_000, "initialize");
        check(init.protocolVersion === 1, "initialize: protocol version 1");
        check(init.agentCapabilities?.loadSession === true, "initialize: loadSession");
        check(init.agentCapabilities?.sessionCapabilities?.list && init.agentCapabilities?.sessionCapabilities?.close,
            "initialize: session list and close capabilities");
        const method = init.authMethods?.[0]?.id;
        check(method, "initialize: an auth method");
        const auth = await A.agent.request(acp.methods.agent.authenticate, { methodId: method });
        check(auth && typeof auth === "object", "authenticate answers");
    });

    await step("session/new", async () => {
        newResp = await withTimeout(A.agent.request(acp.methods.agent.session.new, {
            cwd: WORKSPACE, mcpServers: [], _meta: { mode: "ask", title: "ACP SDK e2e" },
        }), 10_000, "session/new");
        sessionId = newResp.sessionId;
        check(typeof sessionId === "string" && sessionId, "session/new: a sessionId");
        check(newResp.modes?.currentModeId === "ask", "session/new: mode ask", newResp.modes);
        const ids = newResp.modes.availableModes.map((m) => m.id);
        check(["ask", "edit", "auto", "read_only"].every((m) => ids.includes(m)), "session/new: the four modes", ids);
        check(typeof newResp._meta?.epoch === "string", "session/new: _meta.epoch");
    });

    // ---- turn 1: streamed updates, a permission request answered, the file -------
    await step("turn 1: write with permission", async () => {
        turn1 = await withTimeout(prompt(A, sessionId, "Please write hello.txt"), 30_000, "turn 1");
        check(turn1.res.stopReason === "end_turn", "turn 1 ends end_turn", turn1.res);
        checkTurnOrder(A, turn1);
        const ups = A.updates(turn1.req.idx, turn1.resp.idx).map((f) => f.msg.params.update);
        const chunks = ups.filter((u) => u.sessionUpdate === "agent_message_chunk");
        check(chunks.length >= 4, "turn 1: the answer streams in chunks", chunks.length);
        const call = ups.find((u) => u.sessionUpdate === "tool_call");
        check(call && call.kind === "edit", "turn 1: a tool_call of kind edit",
            call ?? "none (is the model running acp_sdk_script.json? corral_stack.py --script tests/e2e/acp_sdk_script.json)");
        const perms = A.ins(turn1.req.idx, turn1.resp.idx).filter((f) => f.msg.method === "session/request_permission");
        check(perms.length === 1, "turn 1: one session/request_permission", perms.length);
        const pr = perms[0].msg.params;
        const kinds = pr.options.map((o) => o.kind);
        check(kinds.includes("allow_once") && kinds.includes("reject_once"), "permission: allow_once and reject_once offered", kinds);
        check(pr.sessionId === sessionId, "permission: for our session");
        check(pr.toolCall.toolCallId === call.toolCallId, "permission: names the tool call", pr.toolCall);
        const asked = A.events("permission_request", turn1.req.idx, perms[0].idx + 1).pop();
        check(asked && asked.seq === pr._meta.seq, "permission: its _meta.seq is the permission_request event's", { ev: asked?.seq, req: pr._meta });
        check(A.sdkPerms.length === 1, "permission: the SDK's handler was called");
        const answer = A.pending.get(JSON.stringify(perms[0].msg.id));
        check(answer?.answered !== undefined, "permission: the SDK answered it");
        const answerMsg = A.frames[answer.answered].msg;
        const allow = pr.options.find((o) => o.kind === "allow_once");
        check(answerMsg.result?.outcome?.optionId === allow.optionId, "permission: answered allow_once", answerMsg);
        const resolved = A.events("permission_resolved", answer.answered, turn1.resp.idx);
        check(resolved.length === 1, "permission: a permission_resolved event after the answer");
        const cancels = A.ins().filter((f) => f.msg.method === "$/cancel_request" && isDeepStrictEqual(f.msg.params?.requestId, perms[0].msg.id));
        check(cancels.length === 0, "permission: not withdrawn from the client that answered it");
        const done = ups.filter((u) => u.sessionUpdate === "tool_call_update" && u.toolCallId === call.toolCallId && u.status === "completed");
        check(done.length >= 1, "turn 1: the tool call completed", ups.filter((u) => u.toolCallId === call.toolCallId));
        const file = path.join(WORKSPACE, "hello.txt");
        check(fs.existsSync(file), "turn 1: hello.txt appeared in the workspace");
        const content = fs.readFileSync(file, "utf8");
        check(content === "Hello from the ACP SDK test!\n", "turn 1: with the content asked for",
            content === "Hello from Corral!\n" ? "that is the default script's: run corral_stack.py with --script tests/e2e/acp_sdk_script.json" : content);
    });

    // ---- turn 2: thought, plan, an edit with a diff (another permission) ----------
    await step("turn 2: thought, plan, edit", async () => {
        turn2 = await withTimeout(prompt(A, sessionId, "Give me the tour"), 30_000, "turn 2");
        check(turn2.res.stopReason === "end_turn", "turn 2 ends end_turn", turn2.res);
        checkTurnOrder(A, turn2);
        const ups = A.updates(turn2.req.idx, turn2.resp.idx).map((f) => f.msg.params.update);
        check(ups.some((u) => u.sessionUpdate === "agent_thought_chunk"), "turn 2: agent_thought_chunk");
        const plan = ups.find((u) => u.sessionUpdate === "plan");
        check(plan && plan.entries.length === 3 && plan.entries[1].status === "in_progress", "turn 2: the plan", plan);
        const diffs = ups.filter((u) => u.sessionUpdate === "tool_call_update").flatMap((u) => u.content || []).filter((c) => c.type === "diff");
        check(diffs.length >= 1 && diffs[0].path.endsWith("hello.txt"), "turn 2: a tool_call_update with a diff", diffs);
        check(fs.readFileSync(path.join(WORKSPACE, "hello.txt"), "utf8") === "Hello from the Corral gateway!\n", "turn 2: the edit is on disk");
    });

    // ---- turn 3: cancelled ---------------------------------------------------------
    await step("turn 3: cancel", async () => {
        const from = A.frames.length;
        const pending = A.agent.request(acp.methods.agent.session.prompt, { sessionId, prompt: [{ type: "text", text: "Please dawdle" }] });
        await A.waitFor((f) => f.msg.method === "session/update" && f.msg.params.update.sessionUpdate === "agent_message_chunk", 20_000, "the slow answer starts", from);
        const tc = Date.now();
        await A.agent.notify(acp.methods.agent.session.cancel, { sessionId });
        const res = await withTimeout(pending, 15_000, "the cancelled prompt's answer");
        const latency = Date.now() - tc;
        timings.push(["  cancel -> response", latency]);
        check(res.stopReason === "cancelled", "turn 3 ends cancelled", res);
        check(latency < 5000, `turn 3: answered ${latency} ms after session/cancel`);
        const req = A.sentReq("session/prompt", (p) => p?.prompt?.[0]?.text === "Please dawdle");
        const resp = A.responseTo(req);
        const um = A.updates(req.idx, resp.idx).find((f) => f.msg.params.update.sessionUpdate === "user_message_chunk");
        turn3 = { res, req, resp, turnId: um.msg.params._meta.turnId, text: "Please dawdle" };
        checkTurnOrder(A, turn3);
        const chunks = A.updates(req.idx, resp.idx).filter((f) => f.msg.params.update.sessionUpdate === "agent_message_chunk").length;
        check(chunks < 150, `turn 3: the answer stopped early (${chunks} of 150 chunks)`);
    });

    // ---- set_mode: a current_mode_update on the stream -----------------------------
    await step("session/set_mode", async () => {
        const from = A.frames.length;
        const r = await A.agent.request(acp.methods.agent.session.setMode, { sessionId, modeId: "edit" });
        check(r && typeof r === "object", "set_mode answers");
        const f = await A.waitFor((g) => g.msg.method === "session/update" && g.msg.params.update.sessionUpdate === "current_mode_update", 5000, "current_mode_update", from);
        check(f.msg.params.update.currentModeId === "edit", "current_mode_update to edit");
    });

    const liveSeqs = A.seqFrames().map((f) => f.seq);
    check(liveSeqs[0] === 1, "the live stream starts at seq 1 (session/new watches from the start)", liveSeqs[0]);

    // ---- session/load on a new connection: the whole session again ---------------
    const B = new Wire("B", KEY_A);
    let loadResp;
    await step("session/load (new connection)", async () => {
        B.connect();
        const init = await B.agent.request(acp.methods.agent.initialize, { protocolVersion: 1, clientCapabilities: {} });
        check(init.agentCapabilities.loadSession, "B: loadSession");
        loadResp = await withTimeout(B.agent.request(acp.methods.agent.session.load, { sessionId, cwd: WORKSPACE, mcpServers: [] }), 20_000, "session/load");
    });
    await step("replay comparison", async () => {
        const req = B.sentReq("session/load");
        const resp = B.responseTo(req);
        const last = loadResp._meta?.lastSeq;
        check(Number.isInteger(last) && last >= A.lastSeq, "load: _meta.lastSeq is the head", { last, live: A.lastSeq });
        check(loadResp.modes?.currentModeId === "edit", "load: the current mode", loadResp.modes);
        const replay = B.seqFrames().filter((f) => f.idx < resp.idx);
        const rs = [...new Set(replay.map((f) => f.seq))];
        check(rs.length === last && rs.every((s, i) => s === i + 1), `load: seqs 1..${last} replayed before the answer`, rs);
        const lateReplay = B.seqFrames().filter((f) => f.idx > resp.idx && f.seq <= last);
        check(lateReplay.length === 0, "load: answered only after the whole replay", lateReplay.map((f) => f.seq));
        check(B.ins(0, resp.idx).every((f) => f.msg.method !== "session/request_permission"), "load: no permission request (none pending)");
        await A.waitFor((f) => f.seq === last, 5000, `live stream reaches seq ${last}`);
        const live = A.seqFrames().filter((f) => f.seq <= last);
        const key = (f) => ({ method: f.msg.method, params: f.msg.params });
        const bySeq = (frames) => { const m = new Map(); for (const f of frames) { if (!m.has(f.seq)) m.set(f.seq, []); m.get(f.seq).push(key(f)); } return m; };
        const L = bySeq(live), R = bySeq(replay);
        let same = 0;
        for (let s = 1; s <= last; s++) {
            check(isDeepStrictEqual(L.get(s), R.get(s)), `load: seq ${s} replayed as it was streamed live`, { live: L.get(s), replay: R.get(s) });
            same++;
        }
        const lt = live.map((f) => f.text), rt = replay.map((f) => f.text);
        const sameText = lt.filter((t, i) => t === rt[i]).length;
        console.log(`replay: ${same} events (${replay.length} frames) identical to the live stream; ${sameText}/${replay.length} byte-identical frames`);
        check(B.epoch === A.epoch && A.epoch === newResp._meta.epoch, "epoch: the same in session/new, the live stream and the replay");
    });

    // ---- session/list ---------------------------------------------------------------
    await step("session/list", async () => {
        const r = await B.agent.request(acp.methods.agent.session.list, {});
        const mine = r.sessions.find((s) => s.sessionId === sessionId);
        check(mine, "list: contains the session", r.sessions.map((s) => s.sessionId));
        check(mine.cwd === WORKSPACE, "list: with its cwd", mine);
        const f = await B.agent.request(acp.methods.agent.session.list, { cwd: WORKSPACE });
        check(f.sessions.some((s) => s.sessionId === sessionId), "list: filtered by cwd contains it");
    });

    // ---- tenant-b cannot see it -----------------------------------------------------
    await step("tenant-b refused", async () => {
        const C = new Wire("C", KEY_B);
        C.connect();
        await C.agent.request(acp.methods.agent.initialize, { protocolVersion: 1, clientCapabilities: {} });
        let err = null;
        try {
            await C.agent.request(acp.methods.agent.session.load, { sessionId, cwd: WORKSPACE, mcpServers: [] });
        } catch (e) { err = e; }
        check(err && err.code === -32002, "tenant-b: session/load of tenant-a's session is -32002", err && { code: err.code, message: err.message });
        const raw = C.ins().find((f) => f.msg.error);
        check(raw.msg.error.data?.reason === "not_found", "tenant-b: reason not_found", raw.msg.error);
        check(C.ins().every((f) => f.msg.method === undefined), "tenant-b: no event of the session leaked");
        let perr = null;
        try {
            await C.agent.request(acp.methods.agent.session.prompt, { sessionId, prompt: [{ type: "text", text: "write x" }] });
        } catch (e) { perr = e; }
        check(perr && perr.code === -32002, "tenant-b: session/prompt is -32002 too", perr && { code: perr.code, message: perr.message });
        const l = await C.agent.request(acp.methods.agent.session.list, {});
        check(!l.sessions.some((s) => s.sessionId === sessionId), "tenant-b: session/list does not show it");
        C.close();
    });

    // ---- session/close, then a prompt fails -------------------------------------------
    await step("session/close + prompt", async () => {
        const bFrom = B.frames.length;
        const r = await A.agent.request(acp.methods.agent.session.close, { sessionId });
        const raw = A.responseTo(A.sentReq("session/close"));
        check(isDeepStrictEqual(raw.msg.result, {}), "close: answers {}", raw.msg);
        check(isDeepStrictEqual(r, {}), "close: the SDK returns {}");
        const st = await B.waitFor((f) => f.msg.method === "_corral/session/state" && f.msg.params.state === "closed", 5000, "B sees the session closed", bFrom);
        check(st, "close: a watcher is told the session is closed");
        let err = null;
        try {
            await A.agent.request(acp.methods.agent.session.prompt, { sessionId, prompt: [{ type: "text", text: "Please write again" }] });
        } catch (e) { err = e; }
        check(err && err.code === -32007, "close: a prompt afterwards fails with -32007", err && { code: err.code, message: err.message });
        const rawErr = A.responseTo(A.sentReq("session/prompt", (p) => p?.prompt?.[0]?.text === "Please write again"));
        check(rawErr.msg.error?.data?.reason === "conflict" && /closed/.test(rawErr.msg.error.message), "close: reason conflict, the message says closed", rawErr.msg.error);
    });

    // The SDK's handlers saw what the wire carried (the ext notifications too).
    for (const w of [A, B]) {
        const raw = (m) => w.ins().filter((f) => f.msg.method === m).length;
        check(w.sdkUpdates.length === raw("session/update"), `${w.name}: the SDK delivered every session/update`, [w.sdkUpdates.length, raw("session/update")]);
        check(w.sdkStates.length === raw("_corral/session/state"), `${w.name}: the SDK delivered every _corral/session/state`);
        check(w.sdkEvents.length === raw("_corral/session/event"), `${w.name}: the SDK delivered every _corral/session/event`);
    }
    B.close();
    A.close();
} catch (e) {
    if (!String(e.message).startsWith("check failed")) console.error("FAIL " + (e.stack || e));
    problems.push(String(e.message));
}

// Let late frames arrive (and be validated) before the verdict.
await new Promise((r) => setTimeout(r, 200));
clearTimeout(watchdog);

console.log(`\nframes: ${stats.in} received, ${stats.out} sent; validated:`);
for (const [t, n] of Object.entries(stats.byType).sort()) console.log(`  ${t.padEnd(28)} ${n}`);
if (stats.extras.size) {
    console.log("members ACP does not declare (outside _meta):");
    for (const x of [...stats.extras].sort()) console.log("  " + x);
}
console.log("timings (ms):");
for (const [n, ms] of timings) console.log(`  ${n.padEnd(34)} ${ms}`);
console.log(`total ${Date.now() - T0} ms; ${checks.filter((c) => c[1]).length} checks passed`);
if (problems.length) {
    console.error(`\nFAILED: ${problems.length} problem(s)`);
    for (const p of problems.slice(0, 50)) console.error("  " + p);
    process.exit(1);
}
console.log("PASS");
process.exit(0);
