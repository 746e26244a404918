#!/usr/bin/python3
"""Policies as a client sees them, through corral-gateway (docs/policies.md):
a whole stack, corral-monitor restarted with tiny limits, an ACP client on
a WebSocket (Debian python3-websockets) and REST.

  - --session-idle-timeout 2s: after a turn the client gets a policy event
    (kind policy, idle/hibernate) and _corral/session/state hibernated; the
    next session/prompt resumes it (state ready "resumed by a prompt") and
    ends end_turn;
  - --stuck-silence 2s: a stalled model stream gets a stuck warning, then a
    stuck cancel (with _meta.turnId), and session/prompt answers
    stopReason "cancelled";
  - --session-max-duration 10s: a warning with remainingMs, the close, state
    closed; a prompt then fails -32007 (conflict); REST lists the policy
    events of the session.

usage: test_policies_ws.py BUILD_DIR
"""
import asyncio
import json
import os
import sys
import time
import urllib.request

import websockets

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from corral_stack import Stack  # noqa: E402

SCRIPT = {"rules": [
    {"name": "stall", "match": "stall", "responses": [[{"text": "a"}, {"stall": True}]]},
    {"name": "default", "match": "*", "responses": [[{"text": "hello there", "chunks": 2}]]},
]}


def check(cond, what):
    if not cond:
        print("FAIL:", what, flush=True)
        raise SystemExit(1)
    print("ok:", what, flush=True)


class Client:
    def __init__(self, url, key):
        self.url, self.key, self.next_id, self.notes = url, key, 0, []

    async def open(self):
        self.ws = await websockets.connect(self.url, extra_headers={
            "Authorization": "Bearer " + self.key}, max_size=None, ping_interval=None)
        await self.call("initialize", {"protocolVersion": 1})

    async def call(self, method, params, timeout=30):
        """The response (result or error object); notifications are kept."""
        self.next_id += 1
        rid = self.next_id
        await self.ws.send(json.dumps({"jsonrpc": "2.0", "id": rid, "method": method,
                                       "params": params}))
        deadline = time.time() + timeout
        while True:
            msg = json.loads(await asyncio.wait_for(self.ws.recv(), deadline - time.time()))
            if msg.get("id") == rid and "method" not in msg:
                return msg
            if "method" in msg:
                self.notes.append(msg)

    async def wait_note(self, what, pred, timeout=15):
        deadline = time.time() + timeout
        while True:
            for n in self.notes:
                if pred(n):
                    return n
            try:
                msg = json.loads(await asyncio.wait_for(self.ws.recv(), deadline - time.time()))
            except asyncio.TimeoutError:
                raise SystemExit("FAIL: no %s within %ds; got %s" % (
                    what, timeout, [n["method"] for n in self.notes][-20:]))
            if "method" in msg:
                self.notes.append(msg)


def policy(sid, pol, action):
    def pred(n):
        p = n.get("params", {})
        ev = p.get("event", {})
        return (n["method"] == "_corral/session/event" and p.get("sessionId") == sid and
                ev.get("kind") == "policy" and ev.get("policy") == pol and
                ev.get("action") == action)
    return pred


def state(sid, st, reason=None):
    def pred(n):
        p = n.get("params", {})
        return (n["method"] == "_corral/session/state" and p.get("sessionId") == sid and
                p.get("state") == st and (reason is None or p.get("reason") == reason))
    return pred


def text(t):
    return [{"type": "text", "text": t}]


async def run(stack, key):
    c = Client(stack.ws_url, key)
    await c.open()

    # 2 s of silence before a warning (4 s before a cancel): a model call
    # slow to start on a busy machine is not taken for a stuck one.
    print("-- idle and stuck (--session-idle-timeout 2s --stuck-silence 2s)", flush=True)
    stack.restart("monitor", ["--session-idle-timeout", "2s", "--stuck-silence", "2s",
                              "--stuck-repeat", "0"])
    sid = (await c.call("session/new", {"cwd": stack.workspace, "mcpServers": []}))["result"]["sessionId"]
    r = await c.call("session/prompt", {"sessionId": sid, "prompt": text("hello")})
    check(r["result"]["stopReason"] == "end_turn", "a first turn")
    n = await c.wait_note("the idle policy event", policy(sid, "idle", "hibernate"))
    ev = n["params"]["event"]
    check("idle for" in ev["message"] and "seq" in n["params"]["_meta"],
          "a policy event {kind: policy, policy: idle, action: hibernate}: %s" % ev["message"])
    await c.wait_note("state hibernated", state(sid, "hibernated"))
    check(True, "then _corral/session/state hibernated")
    r = await c.call("session/prompt", {"sessionId": sid, "prompt": text("hello again")})
    check(r["result"]["stopReason"] == "end_turn", "the next prompt runs")
    await c.wait_note("the resume", state(sid, "ready", "resumed by a prompt"), 5)
    check(True, "after _corral/session/state ready, reason 'resumed by a prompt'")

    c.notes.clear()
    r = await c.call("session/prompt", {"sessionId": sid, "prompt": text("stall now")})
    check(r.get("result", {}).get("stopReason") == "cancelled",
          "a stalled turn's prompt answers stopReason cancelled (%s)" % r)
    w = await c.wait_note("the stuck warning", policy(sid, "stuck", "warn"), 10)
    x = await c.wait_note("the stuck cancel", policy(sid, "stuck", "cancel"), 10)
    check(c.notes.index(w) < c.notes.index(x), "the warning came before the cancel")
    check("no output" in w["params"]["event"]["message"] and
          x["params"]["_meta"].get("turnId"), "after a stuck warning and a stuck cancel "
          "naming the turn: %s" % x["params"]["event"]["message"])

    # 10 s: the warning (at 90 %) comes 1 s before the close, four of the
    # monitor's ticks, so a busy machine cannot reorder them; no wall-clock
    # window is asserted, only the order and the time left it announces.
    print("-- max duration (--session-max-duration 10s)", flush=True)
    stack.restart("monitor", ["--session-max-duration", "10s", "--session-idle-timeout", "0",
                              "--stuck-silence", "0", "--stuck-repeat", "0"])
    c.notes.clear()
    sid2 = (await c.call("session/new", {"cwd": stack.workspace, "mcpServers": []}))["result"]["sessionId"]
    w = await c.wait_note("the duration warning", policy(sid2, "max_duration", "warn"), 30)
    ev = w["params"]["event"]
    check(0 < ev.get("remainingMs", 0) <= 1000 and "will be closed in" in ev["message"],
          "a warning with remainingMs %s (at most 10 %% of 10 s): %s" % (
              ev.get("remainingMs"), ev["message"]))
    x = await c.wait_note("the close", policy(sid2, "max_duration", "close"), 30)
    check(c.notes.index(w) < c.notes.index(x), "the warning came before the close")
    n = await c.wait_note("state closed", state(sid2, "closed"), 10)
    check("maximum duration" in n["params"].get("reason", ""),
          "then the close and _corral/session/state closed: %s" % n["params"].get("reason"))
    r = await c.call("session/prompt", {"sessionId": sid2, "prompt": text("hello")})
    check(r.get("error", {}).get("code") == -32007, "a prompt to it fails -32007 conflict (%s)"
          % r.get("error"))
    req = urllib.request.Request(stack.http_url + "/v1/sessions/%s/events?after=0" % sid2,
                                 headers={"Authorization": "Bearer " + key})
    with urllib.request.urlopen(req, timeout=10) as resp:
        lines = [json.loads(x) for x in resp.read().decode().splitlines() if x.strip()]
    kinds = [(x.get("kind"), x.get("action")) for x in lines if x.get("kind") == "policy"]
    check(kinds == [("policy", "warn"), ("policy", "close")],
          "REST lists the policy events too (%s)" % kinds)


def main():
    stack = Stack(sys.argv[1])
    ok = False
    try:
        stack.start(SCRIPT)
        key = stack.key("tenant-a")
        asyncio.get_event_loop().run_until_complete(run(stack, key))
        ok = True
        print("PASS", flush=True)
    finally:
        if not ok:
            for name in ("monitor", "session", "gateway"):
                print("---- %s log (tail) ----" % name)
                print(stack.log(name)[-3000:])
        stack.stop()


if __name__ == "__main__":
    main()
