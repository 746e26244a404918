#!/usr/bin/python3
"""Two corral-gateway processes on one port (SO_REUSEPORT) share the bus:
clients spread over both, watch one session, and when one gateway is killed
with SIGKILL its clients reconnect (to the survivor) and resume with
_corral/session/attach afterSeq, ending with the same gap-free stream as
everyone else.

usage: test_ws_share.py BUILD_DIR
"""
import asyncio
import json
import os
import signal
import subprocess
import sys

import websockets

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from corral_stack import Stack  # noqa: E402

CLIENTS = 24
SCRIPT = {"rules": [{"name": "long", "match": "*", "chunk_delay_ms": 10, "responses": [[
    {"text": "".join("chunk %03d " % i for i in range(120)), "chunks": 120}]]}]}


def check(cond, what):
    if not cond:
        print("FAIL:", what, flush=True)
        raise SystemExit(1)
    print("ok:", what, flush=True)


class Client:
    def __init__(self, url, key):
        self.url, self.key, self.seqs, self.frames, self.next_id = url, key, [], {}, 0
        self.ws = None

    async def open(self):
        self.ws = await websockets.connect(self.url, extra_headers={
            "Authorization": "Bearer " + self.key}, max_size=None, ping_interval=None)
        await self.call("initialize", {"protocolVersion": 1})

    async def call(self, method, params):
        self.next_id += 1
        rid = self.next_id
        await self.ws.send(json.dumps({"jsonrpc": "2.0", "id": rid, "method": method,
                                       "params": params}))
        while True:
            msg = json.loads(await asyncio.wait_for(self.ws.recv(), 30))
            self.note(msg)
            if msg.get("id") == rid and "method" not in msg:
                if "error" in msg:
                    raise RuntimeError("%s: %s" % (method, msg["error"]))
                return msg["result"]

    def note(self, msg):
        seq = (msg.get("params") or {}).get("_meta", {}).get("seq")
        if "method" in msg and msg["method"] != "session/request_permission" and seq:
            if not self.seqs or self.seqs[-1] != seq:
                self.seqs.append(seq)
            self.frames.setdefault(seq, []).append(json.dumps(msg, sort_keys=True))

    async def read_until(self, last_seq, timeout=30):
        async def loop():
            while not self.seqs or self.seqs[-1] < last_seq:
                self.note(json.loads(await self.ws.recv()))
        await asyncio.wait_for(loop(), timeout)


def start_second_gateway(stack):
    ep = stack.svc.ep
    log = open(os.path.join(stack.tmp, "gateway2.log"), "ab")
    return subprocess.Popen([stack.gateway_bin, "--listen", "127.0.0.1:%d" % stack.port,
                             "--session-endpoint", ep["client"], "--store-endpoint", ep["store"],
                             "--events-endpoint", ep["events"]], stderr=log)


async def alive(c):
    """Read what the connection has buffered; False once it turns out closed."""
    try:
        while True:
            c.note(json.loads(await asyncio.wait_for(c.ws.recv(), 0.5)))
    except asyncio.TimeoutError:
        return True
    except websockets.ConnectionClosed:
        return False


async def run(stack, key):
    # The prompting client connects before the second gateway exists, so it
    # is on the one that survives.
    owner = Client(stack.ws_url, key)
    await owner.open()
    gw2 = start_second_gateway(stack)
    await asyncio.sleep(0.5)
    check(gw2.poll() is None, "a second gateway listens on the same port")
    sid = (await owner.call("session/new", {"cwd": stack.workspace, "mcpServers": []}))["sessionId"]
    clients = [Client(stack.ws_url, key) for _ in range(CLIENTS)]
    for c in clients:
        await c.open()
        await c.call("_corral/session/attach", {"sessionId": sid, "afterSeq": 0})
    # Which gateway did each client land on?  The kernel spreads accepts;
    # the peer port tells nothing, so ask /proc for the survivor's sockets.
    gw2_pid = gw2.pid
    out = subprocess.run(["ss", "-Htnp", "state", "established", "sport", "=", ":%d" % stack.port],
                         capture_output=True, text=True).stdout
    on2 = out.count("pid=%d," % gw2_pid)
    check(0 < on2 < CLIENTS, "connections spread over both gateways (%d of %d on the second)"
          % (on2, CLIENTS))

    prompt = asyncio.ensure_future(owner.call("session/prompt", {
        "sessionId": sid, "prompt": [{"type": "text", "text": "go"}]}))
    await asyncio.sleep(0.3)  # mid-turn
    gw2.send_signal(signal.SIGKILL)
    gw2.wait(10)
    # Everyone reads what they can; those on the dead gateway reconnect to
    # the survivor and resume after the last seq they saw.
    resumed = 0
    for c in clients:
        if not await alive(c):
            after = c.seqs[-1] if c.seqs else 0
            await c.open()
            await c.call("_corral/session/attach", {"sessionId": sid, "afterSeq": after})
            resumed += 1
    r = await prompt
    check(r.get("stopReason") == "end_turn", "the prompt ended end_turn")
    last = owner.seqs[-1]
    for c in clients:
        await c.read_until(last)
    check(resumed == on2, "the %d clients of the killed gateway reconnected and resumed" % resumed)
    want = list(range(1, last + 1))
    check(all(c.seqs[:len(want)] == want for c in clients),
          "every client saw seqs 1..%d, gap-free, no duplicate" % last)
    ref = owner.frames
    check(all(c.frames[s][-1] == ref[s][-1] for c in clients for s in want),
          "every client's frames are identical to the owner's")


def main():
    stack = Stack(sys.argv[1])
    rc = 1
    try:
        stack.start(script=SCRIPT)
        key = stack.key("tenant-a")
        asyncio.run(run(stack, key))
        rc = 0
    finally:
        if rc:
            print(stack.log("gateway")[-3000:])
        stack.stop()
    return rc


if __name__ == "__main__":
    sys.exit(main())
