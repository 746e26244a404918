#!/usr/bin/python3
"""Corral's ACP extensions through the gateway: _corral/session/history
(paged stored events), _corral/usage (the tenant's daily counters after a
real turn, another tenant's untouched), _corral/session/detach (no more
events for this connection, other watchers unaffected),
_corral/session/permission (a connection that was not asked answers a
permission request; the one that was asked gets $/cancel_request), and
the _corral/session/state notification.

usage: test_ws_extensions.py BUILD_DIR
"""
import asyncio
import json
import os
import sys

import websockets

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from corral_stack import Stack  # noqa: E402


SCRIPT = {"rules": [
    {"name": "perm", "match": "write the file",
     "responses": [[{"text": "Writing."},
                    {"tool_call": {"name": "write_file",
                                   "arguments": {"path": "ext-perm.txt", "content": "hi\n"}}}],
                   [{"text": "Done."}]]},
    {"name": "default", "match": "*", "responses": [[{"text": "Hello there.", "chunks": 2}]]},
]}


def check(cond, what):
    if not cond:
        print("FAIL:", what, flush=True)
        raise SystemExit(1)
    print("ok:", what, flush=True)


class Client:
    def __init__(self, url, key):
        self.url, self.key, self.notes, self.next_id = url, key, [], 0

    async def open(self):
        self.ws = await websockets.connect(self.url, extra_headers={
            "Authorization": "Bearer " + self.key}, max_size=None)
        return await self.call("initialize", {"protocolVersion": 1})

    async def call(self, method, params):
        self.next_id += 1
        rid = self.next_id
        await self.ws.send(json.dumps({"jsonrpc": "2.0", "id": rid, "method": method,
                                       "params": params}))
        while True:
            msg = json.loads(await asyncio.wait_for(self.ws.recv(), 30))
            if msg.get("id") == rid and "method" not in msg:
                return msg
            self.notes.append(msg)

    async def quiet(self, seconds):
        """Collect notifications for a while."""
        try:
            while True:
                self.notes.append(json.loads(await asyncio.wait_for(self.ws.recv(), seconds)))
        except asyncio.TimeoutError:
            pass


async def run(stack, key_a, key_b):
    a = Client(stack.ws_url, key_a)
    await a.open()
    sid = (await a.call("session/new", {"cwd": stack.workspace, "mcpServers": []}))["result"]["sessionId"]
    r = await a.call("session/prompt", {"sessionId": sid,
                                        "prompt": [{"type": "text", "text": "hello"}]})
    check(r.get("result", {}).get("stopReason") == "end_turn", "a turn ran")
    states = [n["params"]["state"] for n in a.notes if n.get("method") == "_corral/session/state"]
    check(states[:1] == ["ready"] and "running" in states and states[-1] == "idle",
          "_corral/session/state went ready, running, ..., idle (%s)" % states)
    last = max(n["params"]["_meta"]["seq"] for n in a.notes if "_meta" in n.get("params", {}))

    # history: two pages that together are every stored event, in order
    h1 = (await a.call("_corral/session/history", {"sessionId": sid, "afterSeq": 0,
                                                    "limit": 5}))["result"]
    check([e["seq"] for e in h1["events"]] == [1, 2, 3, 4, 5] and h1["more"] is True
          and h1["lastSeq"] == last, "history page 1: seqs 1..5, more, lastSeq %d" % last)
    h2 = (await a.call("_corral/session/history", {"sessionId": sid, "afterSeq": 5,
                                                    "limit": 1000}))["result"]
    check([e["seq"] for e in h2["events"]] == list(range(6, last + 1)) and h2["more"] is False,
          "history page 2: seqs 6..%d, no more" % last)
    kinds = {e["kind"] for e in h1["events"] + h2["events"]}
    check({"session_created", "user_message", "agent_message_chunk", "turn_ended"} <= kinds,
          "history has the kinds of a turn")
    bad = await a.call("_corral/session/history", {"sessionId": sid, "limit": 0})
    check(bad.get("error", {}).get("code") == -32602, "history with limit 0 is refused (-32602)")

    # usage: the turn's tokens for tenant-a, nothing for tenant-b
    u = (await a.call("_corral/usage", {}))["result"]
    check(u["tenant"] == "tenant-a" and u["total"]["turns"] >= 1 and
          u["total"]["inputTokens"] > 0 and u["total"]["outputTokens"] > 0,
          "usage counts the turn for tenant-a (%s)" % u["total"])
    b = Client(stack.ws_url, key_b)
    await b.open()
    ub = (await b.call("_corral/usage", {}))["result"]
    check(ub["tenant"] == "tenant-b" and ub["total"]["turns"] == 0, "tenant-b has no usage")
    bad = await b.call("_corral/usage", {"fromDay": 20261231, "toDay": 20260101})
    check(bad.get("error", {}).get("code") == -32602, "usage with fromDay after toDay is refused")

    # detach: a second watcher stops getting events, the first keeps them
    w = Client(stack.ws_url, key_a)
    await w.open()
    r = await w.call("_corral/session/attach", {"sessionId": sid, "afterSeq": last})
    check(r.get("result", {}).get("lastSeq") == last, "a second connection attaches at the end")
    r = await w.call("_corral/session/detach", {"sessionId": sid})
    check(r.get("result") == {}, "detach answers {}")
    w.notes.clear()
    a.notes.clear()
    r = await a.call("session/prompt", {"sessionId": sid,
                                        "prompt": [{"type": "text", "text": "hello again"}]})
    check(r.get("result", {}).get("stopReason") == "end_turn", "another turn ran")
    await w.quiet(1.0)
    check(not any("_meta" in n.get("params", {}) for n in w.notes),
          "the detached connection got no events")
    check(any(n.get("method") == "session/update" for n in a.notes),
          "the attached one got the turn's updates")

    # permission: `a` prompts in ask mode and is asked; `o`, same tenant,
    # not watching, reads the request from the history and answers it
    r = await a.call("session/new", {"cwd": stack.workspace, "mcpServers": [],
                                      "_meta": {"mode": "ask"}})
    psid = r["result"]["sessionId"]
    a.notes.clear()
    prompt = asyncio.ensure_future(a.call("session/prompt", {
        "sessionId": psid, "prompt": [{"type": "text", "text": "please write the file"}]}))
    o = Client(stack.ws_url, key_a)
    await o.open()
    req = None
    for _ in range(100):
        h = (await o.call("_corral/session/history", {"sessionId": psid}))["result"]
        req = next((e for e in h["events"] if e["kind"] == "permission_request"), None)
        if req:
            break
        await asyncio.sleep(0.1)
    check(req is not None, "the permission_request event is in the history")
    allow = next(x["optionId"] for x in req["options"] if x["kind"] == "allow_once")
    answer = {"sessionId": psid, "requestId": req["requestId"],
              "outcome": {"outcome": "selected", "optionId": allow}}
    bad = await b.call("_corral/session/permission", answer)
    check(bad.get("error", {}).get("code") == -32002, "another tenant gets no such session")
    bad = await o.call("_corral/session/permission", dict(answer, outcome={"outcome": "x"}))
    check(bad.get("error", {}).get("code") == -32602, "a malformed outcome is refused")
    r = await o.call("_corral/session/permission", answer)
    check(r.get("result") == {}, "the answer of a connection that was not asked counts")
    r = await o.call("_corral/session/permission", answer)
    check(r.get("error", {}).get("code") == -32007, "a second answer is a conflict")
    r = await asyncio.wait_for(prompt, 30)
    check(r.get("result", {}).get("stopReason") == "end_turn", "the turn went on and ended")
    asked = [n for n in a.notes if n.get("method") == "session/request_permission"]
    check(len(asked) == 1 and asked[0]["params"]["_meta"]["requestId"] == req["requestId"],
          "the watching connection was asked once")
    withdrawn = [n for n in a.notes if n.get("method") == "$/cancel_request"]
    check([n["params"]["requestId"] for n in withdrawn] == [asked[0]["id"]],
          "and its request was withdrawn once the other answer won")
    with open(os.path.join(stack.workspace, "ext-perm.txt")) as f:
        check(f.read() == "hi\n", "the approved write happened")


def main():
    stack = Stack(sys.argv[1])
    rc = 1
    try:
        stack.start(script=SCRIPT)
        asyncio.run(run(stack, stack.key("tenant-a"), stack.key("tenant-b")))
        rc = 0
    finally:
        if rc:
            print(stack.log("gateway")[-3000:])
        stack.stop()
    return rc


if __name__ == "__main__":
    sys.exit(main())
