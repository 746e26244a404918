// up_prompt.mjs - one prompt through the official ACP TypeScript SDK
// (@agentclientprotocol/sdk over `ws`) against a stack `corral up` runs:
// initialize, session/new in CORRAL_WORKSPACE, session/prompt "Please write
// a file" (the scripted model writes hello.txt with write_file: the
// permission request is answered allow_once), streamed updates, stopReason
// end_turn, the file on disk.  Prints {"sessionId": ..., "updates": N} on success.
//
// Env: CORRAL_WS (ws://host:port/acp), CORRAL_API_KEY, CORRAL_WORKSPACE.
// Used by test_up.py.  Exit 0 = pass.
import fs from "node:fs";
import path from "node:path";
import WebSocket from "ws";
import * as acp from "@agentclientprotocol/sdk";
import { createWebSocketStream } from "@agentclientprotocol/sdk/experimental/ws-client";

const { CORRAL_WS: URL_, CORRAL_API_KEY: KEY, CORRAL_WORKSPACE: WORKSPACE } = process.env;
if (!URL_ || !KEY || !WORKSPACE) {
    console.error("CORRAL_WS, CORRAL_API_KEY and CORRAL_WORKSPACE must be set");
    process.exit(2);
}
const fail = (what) => { console.error("FAIL " + what); process.exit(1); };
setTimeout(() => fail("no answer within 60 s"), 60_000).unref();

const updates = [], perms = [];
const stream = createWebSocketStream(URL_, { WebSocket, headers: { Authorization: `Bearer ${KEY}` } });
const app = acp.client({ name: "corral-up-e2e" })
    .onNotification(acp.methods.client.session.update, ({ params }) => { updates.push(params); })
    .onRequest(acp.methods.client.session.requestPermission, ({ params }) => {
        perms.push(params);
        const allow = params.options.find((o) => o.kind === "allow_once");
        return { outcome: { outcome: "selected", optionId: allow.optionId } };
    })
    .onNotification("_corral/session/state", (p) => p, () => {})
    .onNotification("_corral/session/event", (p) => p, () => {});
const conn = app.connect(stream);
const agent = conn.agent;

const init = await agent.request(acp.methods.agent.initialize, {
    protocolVersion: acp.PROTOCOL_VERSION,
    clientCapabilities: { fs: { readTextFile: false, writeTextFile: false }, terminal: false },
    clientInfo: { name: "corral-up-e2e", version: "1.0.0" },
});
if (init.protocolVersion !== 1) fail("initialize: protocol version " + init.protocolVersion);
const created = await agent.request(acp.methods.agent.session.new, { cwd: WORKSPACE, mcpServers: [] });
const sessionId = created.sessionId;
if (!sessionId) fail("session/new: no sessionId");
const res = await agent.request(acp.methods.agent.session.prompt, {
    sessionId, prompt: [{ type: "text", text: "Please write a file" }],
});
if (res.stopReason !== "end_turn") fail("stopReason " + res.stopReason);
const text = updates.filter((u) => u.update.sessionUpdate === "agent_message_chunk")
    .map((u) => u.update.content?.text ?? "").join("");
if (!text.includes("write_file")) fail("no streamed answer: " + JSON.stringify(text));
if (perms.length !== 1) fail(`${perms.length} permission requests, want 1`);
if (!updates.some((u) => u.update.sessionUpdate === "tool_call")) fail("no tool_call update");
const file = path.join(WORKSPACE, "hello.txt");
if (!fs.existsSync(file)) fail("hello.txt was not written");
console.log(JSON.stringify({ sessionId, updates: updates.length }));
conn.close();
process.exit(0);
