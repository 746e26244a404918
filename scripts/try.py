#!/usr/bin/python3
"""Prompt the local stack from a terminal until the gateway and `corral chat`
exist: creates (or reuses) a session, sends one prompt, prints the streamed
answer, tool calls and results, and asks you about permission requests.

usage: scripts/try.py [--mode ask|edit|auto|read_only] [--session ID] "prompt"
"""
import argparse
import json
import sys
import time
import uuid

import msgpack
import zmq

V = 1
OK, ERROR, SESSION, PROMPT_REPLY = 1, 2, 40, 55
SESSION_NEW, SESSION_PROMPT, PERMISSION_ANSWER = 60, 66, 70
EV_TEXT, EV_THOUGHT, EV_TOOL, EV_TOOL_UPDATE, EV_PERM = 204, 205, 206, 207, 210


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("prompt")
    ap.add_argument("--mode", default="ask")
    ap.add_argument("--session", help="reuse this session id (printed by an earlier run)")
    ap.add_argument("--client", default="tcp://127.0.0.1:7702")
    ap.add_argument("--events", default="tcp://127.0.0.1:7704")
    a = ap.parse_args()
    ctx = zmq.Context()
    c = ctx.socket(zmq.DEALER)
    c.connect(a.client)
    sub = ctx.socket(zmq.SUB)
    sub.connect(a.events)
    corr = [0]

    def call(t, body, wait=True):
        corr[0] += 1
        c.send(msgpack.packb([V, t, corr[0], body]))
        if not wait:
            return corr[0]
        if not c.poll(10000):
            sys.exit("no answer from corral-session at %s: is the stack running (scripts/run.sh)?" % a.client)
        return msgpack.unpackb(c.recv())

    if a.session:
        sid = uuid.UUID(a.session).bytes
    else:
        r = call(SESSION_NEW, {"tenant": "local", "cwd": "demo", "mode": a.mode})
        if r[1] == ERROR:
            sys.exit("session.new: " + r[3]["message"])
        sid = r[3]["session"]["id"]
        print("session %s (mode %s, cwd %s)" % (uuid.UUID(bytes=sid), a.mode, r[3]["session"]["cwd"]))
    sub.setsockopt(zmq.SUBSCRIBE, b"s/%s/" % str(uuid.UUID(bytes=sid)).encode())
    time.sleep(0.2)  # let the subscription reach the publisher
    mine = call(SESSION_PROMPT, {"tenant": "local", "id": sid, "idem": str(uuid.uuid4()),
                                 "prompt": json.dumps([{"type": "text", "text": a.prompt}])}, wait=False)
    poller = zmq.Poller()
    poller.register(c, zmq.POLLIN)
    poller.register(sub, zmq.POLLIN)
    while True:
        ready = dict(poller.poll(60000))
        if sub in ready:
            ev = msgpack.unpackb(sub.recv_multipart()[1])
            t, b = ev[1], ev[3]
            if t == EV_TEXT:
                print(b["text"], end="", flush=True)
            elif t == EV_THOUGHT:
                print("\033[2m%s\033[0m" % b["text"], end="", flush=True)
            elif t == EV_TOOL:
                print("\n[tool] %s" % b["title"], flush=True)
            elif t == EV_TOOL_UPDATE and b.get("status") in ("completed", "failed"):
                out = b.get("diff") or b.get("content") or ""
                print("[%s] %s" % (b["status"], out[:2000]), flush=True)
            elif t == EV_PERM:
                yes = input("\n[permission] %s? [y/N/a(lways)] " % b["title"]).strip().lower()
                kind = {"y": "allow_once", "a": "allow_always"}.get(yes, "reject_once")
                opt = [o for o in b["options"] if o["kind"] == kind]
                call(PERMISSION_ANSWER, {"tenant": "local", "id": sid, "request_id": b["request_id"],
                                         "option_id": opt[0]["option_id"] if opt else None})
        if c in ready:
            r = msgpack.unpackb(c.recv())
            if r[2] != mine:
                continue
            if r[1] == ERROR:
                sys.exit("\nprompt: " + r[3]["message"])
            print("\n(turn ended: %s%s)" % (r[3]["stop_reason"],
                                           ": " + r[3]["message"] if r[3].get("message") else ""))
            print("continue with: scripts/try.py --session %s \"...\"" % uuid.UUID(bytes=sid))
            return
        if not ready:
            sys.exit("\nno events for 60 s")


if __name__ == "__main__":
    main()
