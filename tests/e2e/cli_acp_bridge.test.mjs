// cli_acp_bridge.test.mjs - the official ACP TypeScript SDK
// (@agentclientprotocol/sdk) as an editor would use an agent: it spawns
// `corral acp --url ... --key ...` and speaks newline-delimited JSON-RPC
// over the child's stdin/stdout (the SDK's ndJsonStream), and the bridge
// carries it to the gateway's /acp:
//
//   initialize -> session/new -> session/prompt "Please write hello.txt",
//   streamed updates, a permission request answered allow_once through the
//   bridge -> end_turn, and the file is in the workspace -> a second
//   session/prompt that is cancelled with session/cancel -> stdin closed:
//   the bridge exits 0 and wrote nothing but JSON-RPC lines on stdout.
//
// Run: python3 corral_stack.py BUILD --script acp_sdk_script.json --
//          node cli_acp_bridge.test.mjs BUILD/cli/corral
// (env CORRAL_URL, CORRAL_KEY, CORRAL_WORKSPACE).  Exit 0 = pass.
import { spawn } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { Readable, Writable, PassThrough } from "node:stream";
import * as acp from "@agentclientprotocol/sdk";

const CORRAL = process.argv[2];
const URL_ = process.env.CORRAL_URL;
const KEY = process.env.CORRAL_KEY;
const WORKSPACE = process.env.CORRAL_WORKSPACE;
for (const [k, v] of Object.entries({ "argv[2] (the corral binary)": CORRAL, CORRAL_URL: URL_, CORRAL_KEY: KEY, CORRAL_WORKSPACE: WORKSPACE }))
    if (!v) { console.error(`${k} is not set; run under corral_stack.py`); process.exit(2); }

function check(ok, name, detail) {
    if (!ok) {
        console.error(`FAIL ${name}${detail !== undefined ? ": " + JSON.stringify(detail) : ""}`);
        process.exit(1);
    }
    console.log(`ok   ${name}`);
}
function withTimeout(promise, ms, what) {
    let timer;
    return Promise.race([
        promise,
        new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms); }),
    ]).finally(() => clearTimeout(timer));
}
setTimeout(() => { console.error("FAIL the whole test took more than 120 s"); process.exit(1); }, 120_000).unref();

// ---- the bridge as the editor's agent subprocess --------------------------------
// The key goes in the environment, as an editor's agent configuration would.
const child = spawn(CORRAL, ["acp", "--url", URL_], {
    env: { ...process.env, CORRAL_API_KEY: KEY, CORRAL_KEY: "" },
    stdio: ["pipe", "pipe", "pipe"],
});
let stderr = "";
child.stderr.on("data", (d) => { stderr += d; });
const exited = new Promise((resolve) => child.on("exit", (code, signal) => resolve({ code, signal })));

// Everything the bridge writes on stdout is kept, to check it is only JSON-RPC lines.
let stdoutText = "";
const tee = new PassThrough();
child.stdout.on("data", (d) => { stdoutText += d; });
child.stdout.pipe(tee);

const stream = acp.ndJsonStream(Writable.toWeb(child.stdin), Readable.toWeb(tee));
const updates = [];
const perms = [];
const states = [];
const app = acp.client({ name: "corral-bridge-e2e" })
    .onNotification(acp.methods.client.session.update, ({ params }) => { updates.push(params); })
    .onRequest(acp.methods.client.session.requestPermission, ({ params }) => {
        perms.push(params);
        const allow = params.options.find((o) => o.kind === "allow_once");
        return { outcome: { outcome: "selected", optionId: allow.optionId } };
    })
    .onNotification("_corral/session/state", (p) => p, ({ params }) => { states.push(params.state); })
    .onNotification("_corral/session/event", (p) => p, () => {});
const conn = app.connect(stream);
const agent = conn.agent;

try {
    const init = await withTimeout(agent.request(acp.methods.agent.initialize, {
        protocolVersion: acp.PROTOCOL_VERSION,
        clientCapabilities: { fs: { readTextFile: false, writeTextFile: false }, terminal: false },
        clientInfo: { name: "corral-bridge-e2e", version: "1.0.0" },
    }), 15_000, "initialize through the bridge");
    check(init.protocolVersion === 1, "initialize through the bridge: protocol version 1");
    check(init.agentCapabilities?.loadSession === true, "initialize: the gateway's capabilities come back");

    const created = await withTimeout(agent.request(acp.methods.agent.session.new, { cwd: WORKSPACE, mcpServers: [] }), 15_000, "session/new");
    const sessionId = created.sessionId;
    check(typeof sessionId === "string" && sessionId.length > 0, "session/new: a sessionId");

    const t0 = updates.length;
    const res = await withTimeout(agent.request(acp.methods.agent.session.prompt, {
        sessionId, prompt: [{ type: "text", text: "Please write hello.txt" }],
    }), 30_000, "the prompt with a permission request");
    check(res.stopReason === "end_turn", "the prompt ends end_turn", res);
    const ups = updates.slice(t0).map((u) => u.update);
    const chunks = ups.filter((u) => u.sessionUpdate === "agent_message_chunk");
    check(chunks.length >= 4, "the answer streamed in chunks through the bridge", chunks.length);
    check(ups.some((u) => u.sessionUpdate === "tool_call" && u.kind === "edit"), "a tool_call of kind edit");
    check(perms.length === 1 && perms[0].toolCall?.toolCallId, "one session/request_permission reached the SDK", perms.length);
    check(ups.some((u) => u.sessionUpdate === "tool_call_update" && u.status === "completed"),
        "the tool call completed after the answer went back through the bridge");
    const file = path.join(WORKSPACE, "hello.txt");
    check(fs.existsSync(file) && fs.readFileSync(file, "utf8") === "Hello from the ACP SDK test!\n",
        "hello.txt exists in the workspace with the scripted content");
    check(states.includes("awaiting_permission") && states.includes("idle"), "state notifications pass too", states);

    // A long turn, cancelled with a notification through the bridge.
    // Cancelled once it streams (the turn runs), however long that takes.
    const t1 = updates.length;
    const pending = agent.request(acp.methods.agent.session.prompt, { sessionId, prompt: [{ type: "text", text: "Please dawdle" }] });
    await withTimeout((async () => {
        while (!updates.slice(t1).some((u) => u.update?.sessionUpdate === "agent_message_chunk"))
            await new Promise((r) => setTimeout(r, 50));
    })(), 15_000, "the long turn streaming");
    await agent.notify(acp.methods.agent.session.cancel, { sessionId });
    const cancelled = await withTimeout(pending, 15_000, "the cancelled prompt");
    check(cancelled.stopReason === "cancelled", "session/cancel through the bridge ends the turn cancelled", cancelled);

    // The editor goes away: stdin closes, the bridge flushes and exits 0.
    child.stdin.end();
    const ex = await withTimeout(exited, 15_000, "the bridge exiting after stdin closed");
    check(ex.code === 0, "the bridge exits 0 when stdin closes", { ...ex, stderr });
    const lines = stdoutText.split("\n");
    check(lines.pop() === "", "stdout ends with a newline");
    const bad = lines.filter((l) => { try { return JSON.parse(l).jsonrpc !== "2.0"; } catch { return true; } });
    check(bad.length === 0, `stdout is only JSON-RPC lines (${lines.length})`, bad.slice(0, 3));
    console.log("PASS cli_acp_bridge");
    process.exit(0);
} catch (e) {
    console.error("FAIL " + (e?.stack ?? e));
    console.error("bridge stderr:\n" + stderr);
    child.kill("SIGKILL");
    process.exit(1);
}
