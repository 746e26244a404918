#!/usr/bin/python3
"""corral-gateway stops cleanly with bus calls in flight.

corral-store, corral-session and corral-monitor are SIGSTOPped, then the
gateway gets requests of every kind that wait on them: ACP session/new,
session/load and session/list (a continuation per call), REST session
load and event stream, a key the gateway has not cached yet (a store
key.get), readiness and /metrics.  Then SIGTERM: the gateway must exit 0
within 10 s, and its log must hold no sanitizer report - in an ASan build
LeakSanitizer reports (and fails the exit) any in-flight call whose
argument was not freed at stop.

usage: test_gw_stop.py BUILD_DIR
"""
import asyncio
import json
import os
import signal
import sys
import threading
import time
import urllib.request

import websockets

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from corral_stack import Stack  # noqa: E402


def check(cond, what):
    if not cond:
        print("FAIL:", what, flush=True)
        raise SystemExit(1)
    print("ok:", what, flush=True)


def http(stack, path, key, data=None):
    r = urllib.request.Request(stack.http_url + path,
                               data=json.dumps(data).encode() if data is not None else None,
                               headers={"Authorization": "Bearer " + key,
                                        "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(r, timeout=30) as resp:
            return resp.status, resp.read()
    except Exception as e:  # the gateway stops under it: any outcome will do
        return None, str(e)


async def acp_in_flight(stack, key, sid):
    ws = await websockets.connect(stack.ws_url,
                                  extra_headers={"Authorization": "Bearer " + key})
    await ws.send(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize",
                              "params": {"protocolVersion": 1}}))
    await asyncio.wait_for(ws.recv(), 10)
    return ws


def main():
    stack = Stack(sys.argv[1])
    ok = False
    try:
        stack.start()
        key, fresh = stack.key("t-stop"), stack.key("t-stop")
        status, body = http(stack, "/v1/sessions", key, {"cwd": stack.workspace})
        check(status == 201, "a session: %r" % status)
        sid = json.loads(body)["sessionId"]

        loop = asyncio.new_event_loop()
        ws = loop.run_until_complete(acp_in_flight(stack, key, sid))
        for name in ("store", "session", "monitor"):
            stack.svc.procs[name].send_signal(signal.SIGSTOP)
        try:
            for rid, method, params in (
                    (2, "session/new", {"cwd": stack.workspace, "mcpServers": []}),
                    (3, "session/load", {"sessionId": sid, "cwd": stack.workspace,
                                         "mcpServers": []}),
                    (4, "session/list", {})):
                loop.run_until_complete(ws.send(json.dumps(
                    {"jsonrpc": "2.0", "id": rid, "method": method, "params": params})))
            for path, k in (("/v1/sessions/" + sid, key),
                            ("/v1/sessions/%s/events?after=0" % sid, key),
                            ("/v1/sessions", fresh), ("/v1/health/ready", key),
                            ("/metrics", key)):
                threading.Thread(target=http, args=(stack, path, k), daemon=True).start()
            time.sleep(1.0)
            gw = stack.svc.procs["gateway"]
            gw.send_signal(signal.SIGTERM)
            rc = gw.wait(10)
        finally:
            for name in ("store", "session", "monitor"):
                stack.svc.procs[name].send_signal(signal.SIGCONT)
        log = stack.log("gateway")
        check(rc == 0, "the gateway exits 0 on SIGTERM with calls in flight (%r)" % rc)
        check("Sanitizer" not in log, "no sanitizer report at stop")
        ok = True
        print("PASS")
    finally:
        if not ok:
            stack.svc.dump_logs()
        stack.stop()


if __name__ == "__main__":
    main()
