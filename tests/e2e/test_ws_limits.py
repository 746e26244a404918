#!/usr/bin/python3
"""Limits as a WebSocket client sees them (docs/limits.md), through the
real gateway: a command over the turn memory limit fails the prompt with
-32013 and the limit's own words, a policy event arrives, and the next
prompt works; an API key made with corral-keys --budget-tokens stops a turn
that passes its budget (-32012, a policy event) and refuses the next prompt
before it starts, in any session of that key; another key is unaffected.

usage: test_ws_limits.py BUILD_DIR
"""
import asyncio
import json
import os
import re
import subprocess
import sys
import urllib.error
import urllib.request

import websockets

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from corral_stack import Stack  # noqa: E402

ALLOC = "python3 -c \"import time; a = b'x' * (300 << 20); time.sleep(60)\""


def check(cond, what):
    if not cond:
        print("FAIL:", what, flush=True)
        raise SystemExit(1)
    print("ok:", what, flush=True)


def script():
    t = lambda text: {"text": text}  # noqa: E731
    usage = lambda i, o: {"usage": {"input": i, "output": o}}  # noqa: E731
    return {"rules": [
        {"name": "alloc", "match": "allocate",
         "responses": [[{"tool_call": {"name": "run_command", "arguments": {"command": ALLOC}}},
                        usage(10, 5)], [t("allocated"), usage(10, 5)]]},
        {"name": "spend", "match": "spend", "responses": [[t("spent"), usage(600, 400)]]},
        {"name": "default", "match": "*", "responses": [[t("hello"), usage(10, 5)]]},
    ]}


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
            msg = json.loads(await asyncio.wait_for(self.ws.recv(), 60))
            if msg.get("id") == rid and "method" not in msg:
                return msg
            self.notes.append(msg)

    async def session(self, cwd):
        r = await self.call("session/new", {"cwd": cwd, "mcpServers": []})
        sid = r["result"]["sessionId"]
        r = await self.call("session/set_mode", {"sessionId": sid, "modeId": "auto"})
        check("result" in r, "session/set_mode auto (%s)" % r)
        return sid

    async def prompt(self, sid, text):
        return await self.call("session/prompt", {"sessionId": sid,
                                                  "prompt": [{"type": "text", "text": text}]})

    def policies(self, sid):
        return [n["params"]["event"] for n in self.notes
                if n.get("method") == "_corral/session/event"
                and n["params"].get("sessionId") == sid
                and n["params"]["event"].get("kind") == "policy"]


def make_key(stack, tenant, *extra, with_id=False):
    out = subprocess.run([stack.keys_bin, "create", "--tenant", tenant, "--store-endpoint",
                          stack.svc.ep["store"]] + list(extra),
                         capture_output=True, text=True, timeout=20)
    got = dict(line.split(": ", 1) for line in out.stdout.splitlines() if ": " in line)
    if "key" not in got:
        raise RuntimeError("corral-keys failed: " + out.stderr)
    return (got["key"], got["id"]) if with_id else got["key"]


async def run(stack):
    bad = subprocess.run([stack.keys_bin, "create", "--tenant", "t", "--budget-usd", "lots",
                          "--store-endpoint", stack.svc.ep["store"]],
                         capture_output=True, text=True, timeout=20)
    check(bad.returncode == 2 and "--budget-usd 'lots'" in bad.stderr,
          "corral-keys refuses a budget that is not dollars")
    key, key_id = make_key(stack, "tenant-a", "--budget-tokens", "1500", with_id=True)
    a = Client(stack.ws_url, key)
    await a.open()

    # -- memory limit
    os.makedirs(stack.workspace + "/mem", exist_ok=True)
    sid = await a.session(stack.workspace + "/mem")
    r = await a.prompt(sid, "allocate a lot")
    err = r.get("error", {})
    check(err.get("code") == -32013 and err.get("data", {}).get("reason") == "memory_limit",
          "the prompt fails with -32013 memory_limit (%s)" % r)
    check(re.fullmatch(r"memory limit 64 MiB exceeded by `python3 -c .*` \(peak \d+ MiB\)",
                       err.get("message", "")) is not None,
          "in the limit's own words: %s" % err.get("message"))
    pol = a.policies(sid)
    check(pol and pol[-1]["policy"] == "memory" and pol[-1]["action"] == "kill",
          "a _corral/session/event of kind policy (memory, kill)")
    r = await a.prompt(sid, "hello again")
    check(r.get("result", {}).get("stopReason") == "end_turn", "the session stays usable")

    # -- the key's token budget (1500): 30 tokens so far, then 1000, then stopped
    r = await a.prompt(sid, "spend")
    check(r.get("result", {}).get("stopReason") == "end_turn", "a 1000-token turn runs")
    r = await a.prompt(sid, "spend more")
    err = r.get("error", {})
    check(err.get("code") == -32012 and err.get("data", {}).get("reason") == "budget",
          "the turn that passes the key's budget fails with -32012 budget (%s)" % r)
    check(re.fullmatch(r"budget exceeded during the turn: this API key used 2 0\d\d of its "
                       r"1 500 tokens; the turn was stopped; raise the key's budget or use "
                       r"another key", err.get("message", "")) is not None,
          "with a clear message: %s" % err.get("message"))
    pol = a.policies(sid)
    check(pol and pol[-1]["policy"] == "budget" and pol[-1]["action"] == "cancel",
          "a _corral/session/event of kind policy (budget, cancel)")
    os.makedirs(stack.workspace + "/other", exist_ok=True)
    sid2 = await a.session(stack.workspace + "/other")
    r = await a.prompt(sid2, "hello")
    err = r.get("error", {})
    check(err.get("code") == -32012 and err.get("message", "").startswith(
        "budget exceeded: this API key used 2 0"),
        "the key's next prompt, in another session, is refused before a turn (%s)" % r)
    # The same refusal over REST: 402 with reason budget.
    req = urllib.request.Request(
        stack.http_url + "/v1/sessions/%s/prompt" % sid2, method="POST",
        data=json.dumps({"prompt": "hello"}).encode(),
        headers={"Authorization": "Bearer " + key, "Content-Type": "application/json"})
    try:
        urllib.request.urlopen(req, timeout=30)
        check(False, "REST prompt with a spent key is refused")
    except urllib.error.HTTPError as e:
        body = json.loads(e.read()).get("error", {})
        check(e.code == 402 and body.get("reason") == "budget" and body.get("code") == -32012
              and body.get("message", "").startswith("budget exceeded: this API key"),
              "over REST it is 402 with reason budget (%s)" % body)
    # Raising the key's budget lets it prompt again (once the gateway has
    # read the key again: its cache time is 300 ms here).
    out = subprocess.run([stack.keys_bin, "budget", key_id, "--budget-tokens", "100000",
                          "--budget-usd", "2.5", "--store-endpoint", stack.svc.ep["store"]],
                         capture_output=True, text=True, timeout=20)
    check(out.returncode == 0 and out.stdout.strip() == "budget of %s: 100000 tokens, $2.50"
          % key_id, "corral-keys budget raises it: %r" % out.stdout)
    for _ in range(50):  # the gateway re-reads a key in use once its cache is stale
        await asyncio.sleep(0.2)
        r = await a.prompt(sid2, "hello")
        if r.get("error", {}).get("code") != -32012:
            break
    check(r.get("result", {}).get("stopReason") == "end_turn",
          "the key prompts again once its budget is raised (%s)" % r)
    b = Client(stack.ws_url, make_key(stack, "tenant-a"))
    await b.open()
    r = await b.prompt(sid2, "hello")
    check(r.get("result", {}).get("stopReason") == "end_turn",
          "a key without a budget of the same tenant prompts that session")


def main():
    stack = Stack(sys.argv[1])
    rc = 1
    try:
        stack.start(script(), worker_args=["--turn-memory-limit", "64M",
                                           "--turn-memory-poll", "100ms"],
                    gateway_args=["--key-cache", "300ms"])
        asyncio.run(run(stack))
        rc = 0
        print("PASS")
    finally:
        if rc:
            for name in ("session", "worker1", "gateway"):
                print("---- %s log (tail) ----" % name)
                print(stack.log(name)[-3000:])
        stack.stop()
    sys.exit(rc)


if __name__ == "__main__":
    main()
