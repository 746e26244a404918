#!/usr/bin/python3
"""Prompt the local stack through the gateway, as an ACP client does:
connects to ws://127.0.0.1:8080/acp with the local API key, creates (or
reuses) a session, sends one prompt, prints the streamed answer, tool calls
and results, and asks you about permission requests.

usage: scripts/try.py [--mode ask|edit|auto|read_only] [--session ID] "prompt"
The key comes from --key, $CORRAL_API_KEY or ./data/local-api-key
(scripts/run.sh makes it).  Until `corral chat` exists this is the
terminal client.
"""
import argparse
import asyncio
import json
import os
import sys

import websockets


def read_key(a):
    if a.key:
        return a.key
    if os.environ.get("CORRAL_API_KEY"):
        return os.environ["CORRAL_API_KEY"]
    path = os.path.join(os.environ.get("CORRAL_DATA_DIR", "data"), "local-api-key")
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        sys.exit("try.py: no API key: start the stack with scripts/run.sh, or pass --key")


async def run(a):
    headers = {"Authorization": "Bearer " + read_key(a)}
    async with websockets.connect(a.url, extra_headers=headers, max_size=None) as ws:
        next_id = [0]
        pending = {}

        async def call(method, params):
            next_id[0] += 1
            rid = next_id[0]
            pending[rid] = asyncio.get_running_loop().create_future()
            await ws.send(json.dumps({"jsonrpc": "2.0", "id": rid, "method": method,
                                      "params": params}))
            return rid

        async def answer_permission(msg):
            p = msg["params"]
            print("\n? %s" % p["toolCall"].get("title", "a tool wants to run"))
            opts = {o["kind"]: o["optionId"] for o in p["options"]}
            reply = await asyncio.get_running_loop().run_in_executor(
                None, lambda: input("  allow? [y]es / [N]o / [a]lways: ").strip().lower())
            kind = {"y": "allow_once", "a": "allow_always"}.get(reply, "reject_once")
            choice = opts.get(kind) or opts.get("reject_once")
            await ws.send(json.dumps({"jsonrpc": "2.0", "id": msg["id"], "result": {
                "outcome": {"outcome": "selected", "optionId": choice}}}))

        def show(update):
            kind = update.get("sessionUpdate")
            if kind == "agent_message_chunk":
                print(update["content"].get("text", ""), end="", flush=True)
            elif kind == "agent_thought_chunk":
                print("\033[2m%s\033[0m" % update["content"].get("text", ""), end="", flush=True)
            elif kind == "tool_call":
                print("\n> %s" % update.get("title", "tool"))
            elif kind == "tool_call_update":
                for c in update.get("content") or []:
                    if c.get("type") == "diff":
                        print("  (edited %s)" % c.get("path"))
                    elif c.get("type") == "content":
                        print("  " + c["content"].get("text", "")[:2000].replace("\n", "\n  "))

        async def reader():
            async for raw in ws:
                msg = json.loads(raw)
                if "id" in msg and "method" not in msg and msg["id"] in pending:
                    pending.pop(msg["id"]).set_result(msg)
                elif msg.get("method") == "session/update":
                    show(msg["params"]["update"])
                elif msg.get("method") == "session/request_permission":
                    asyncio.ensure_future(answer_permission(msg))

        task = asyncio.ensure_future(reader())

        async def wait(rid):
            msg = await pending[rid]
            if "error" in msg:
                sys.exit("\ntry.py: %s (%d)" % (msg["error"]["message"], msg["error"]["code"]))
            return msg["result"]

        await wait(await call("initialize", {"protocolVersion": 1}))
        if a.session:
            sid = a.session  # prompting attaches at the current end
        else:
            cwd = os.path.abspath(os.path.join(os.environ.get("CORRAL_DATA_DIR", "data"),
                                               "workspaces", "demo"))
            os.makedirs(cwd, exist_ok=True)
            r = await wait(await call("session/new", {"cwd": cwd, "mcpServers": [],
                                                      "_meta": {"mode": a.mode}}))
            sid = r["sessionId"]
            print("session %s (in %s)" % (sid, cwd))
        r = await wait(await call("session/prompt", {
            "sessionId": sid, "prompt": [{"type": "text", "text": a.prompt}]}))
        print("\n[%s]  reuse with: --session %s" % (r["stopReason"], sid))
        task.cancel()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("prompt")
    ap.add_argument("--mode", default="ask")
    ap.add_argument("--session", help="reuse this session id (printed by an earlier run)")
    ap.add_argument("--url", default=os.environ.get("CORRAL_URL", "ws://127.0.0.1:8080/acp"))
    ap.add_argument("--key", help="API key (default: $CORRAL_API_KEY or data/local-api-key)")
    asyncio.run(run(ap.parse_args()))


if __name__ == "__main__":
    main()
