#!/usr/bin/python3
"""The corral CLI's WebSocket client (cli/cli_ws.c) against a scripted fake
gateway (python3-websockets 10.4), for what a real stack rarely does on
cue.  Each scenario is one fake gateway whose handler asserts what the
client sends and scripts what it gets:

  tail    initialize answered -32011 ("starting") is retried; a duplicate
          seq and a binary frame are dropped; after the gateway closes
          (1001) the client reconnects and attaches with afterSeq = the
          last seq and the epoch it saw; -32008 (the epoch changed) makes
          it attach again from 0 without an epoch and print a notice; the
          output is every event once.
  chat    a new session; the prompt carries an idempotency key; the
          connection breaks mid-answer; after the reconnect the client
          attaches from the last seq and sends the same prompt with the
          same key; a permission request is answered "a" = the
          allow_always option's id; an unknown request gets -32601; the
          answer text appears once, its escape sequences neutralised;
          stdin's end after the turn: exit 0.
  chat_fail  piped input whose prompt the gateway answers with an error:
          the error is shown and chat exits 1.
  refuse  attach refused -32002 -> exit 3; the gateway closing 1008 before
          anything -> the bridge exits 3; control characters in the
          gateway's words reach stderr as '?'.

usage: test_cli_ws_client.py CORRAL_BINARY [scenario ...]
"""
import asyncio
import json
import os
import signal
import sys

import websockets

E1, E2 = "epoch-one", "epoch-two"
SID = "01a2aaaa-0000-7000-8000-000000000001"


class Fail(Exception):
    pass


def check(cond, what, detail=None):
    if not cond:
        print("FAIL:", what, "" if detail is None else repr(detail)[:2000], flush=True)
        raise Fail(what)
    print("ok:", what, flush=True)


def note(seq, epoch, kind="state", **fields):
    if kind == "state":
        return {"jsonrpc": "2.0", "method": "_corral/session/state",
                "params": {"sessionId": SID, "state": fields.get("state", "idle"),
                           "_meta": {"seq": seq, "epoch": epoch, "ts": 1795319000000 + seq}}}
    if kind == "text":
        return {"jsonrpc": "2.0", "method": "session/update",
                "params": {"sessionId": SID, "update": {"sessionUpdate": "agent_message_chunk",
                                                        "content": {"type": "text", "text": fields["text"]}},
                           "_meta": {"seq": seq, "epoch": epoch, "ts": 1795319000000 + seq}}}
    return {"jsonrpc": "2.0", "method": "_corral/session/event",
            "params": {"sessionId": SID, "event": dict(kind=kind, **fields),
                       "_meta": {"seq": seq, "epoch": epoch, "ts": 1795319000000 + seq}}}


class Fake:
    """A fake gateway: conns[i] is the script for the i-th connection, an
    async function (ws, fake) -> None."""

    def __init__(self, scripts):
        self.scripts = list(scripts)
        self.n = 0
        self.errors = []
        self.done = asyncio.Event()

    async def handler(self, ws, path=None):
        i = self.n
        self.n += 1
        if i >= len(self.scripts):
            await ws.close(1013, "no more scripted connections")
            return
        try:
            await self.scripts[i](ws, self)
        except websockets.ConnectionClosed:
            pass
        except Exception as e:  # an assertion in a script
            self.errors.append("connection %d: %r" % (i, e))
            self.done.set()

    @staticmethod
    async def recv(ws, method=None, timeout=10):
        while True:
            m = json.loads(await asyncio.wait_for(ws.recv(), timeout))
            if method is None or m.get("method") == method:
                return m

    async def expect(self, ws, method, timeout=10):
        m = await self.recv(ws, timeout=timeout)
        if m.get("method") != method:
            raise AssertionError("expected %s, got %r" % (method, m))
        return m

    @staticmethod
    async def reply(ws, m, result=None, error=None):
        r = {"jsonrpc": "2.0", "id": m["id"]}
        if error:
            r["error"] = error
        else:
            r["result"] = result if result is not None else {}
        await ws.send(json.dumps(r))

    @staticmethod
    async def send(ws, m):
        await ws.send(json.dumps(m))

    @staticmethod
    async def hold(ws, timeout=15):
        """Keep the connection until the client closes it (it is done)."""
        try:
            await asyncio.wait_for(ws.wait_closed(), timeout)
        except asyncio.TimeoutError:
            pass

    async def initialize(self, ws):
        m = await self.expect(ws, "initialize")
        await self.reply(ws, m, {"protocolVersion": 1, "agentCapabilities": {}, "authMethods": []})


async def run(corral, args, scripts, stdin_lines=None, stop_when=None, timeout=30, env=None):
    """Run `corral ARGS` against a Fake; returns (rc, stdout, stderr, fake)."""
    fake = Fake(scripts)
    async with websockets.serve(fake.handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        e = dict(os.environ, CORRAL_API_KEY="crl_fake", CORRAL_URL="ws://127.0.0.1:%d/acp" % port)
        e.pop("CORRAL_KEY", None)
        e.update(env or {})
        p = await asyncio.create_subprocess_exec(corral, *args, stdin=asyncio.subprocess.PIPE,
                                                 stdout=asyncio.subprocess.PIPE,
                                                 stderr=asyncio.subprocess.PIPE, env=e)
        feeder = None
        if stdin_lines is not None:
            async def feed():
                for item in stdin_lines:
                    if isinstance(item, (int, float)):
                        await asyncio.sleep(item)
                    elif callable(item):
                        await item(fake)
                    else:
                        p.stdin.write(item.encode())
                        await p.stdin.drain()
                p.stdin.close()
            feeder = asyncio.ensure_future(feed())
        comm = asyncio.ensure_future(p.communicate())
        if stop_when is not None:
            await asyncio.wait_for(fake.done.wait(), timeout)
            await asyncio.sleep(0.3)
            if p.returncode is None:
                p.send_signal(signal.SIGINT)
        out, err = await asyncio.wait_for(comm, timeout)
        if feeder:
            feeder.cancel()
        return p.returncode, out.decode(), err.decode(), fake


# ---- tail ---------------------------------------------------------------------

async def tail_conn1(ws, fake):
    m = await fake.expect(ws, "initialize")
    await fake.reply(ws, m, error={"code": -32011, "message": "the session service is starting; retry in a moment",
                                   "data": {"reason": "unavailable"}})
    await fake.initialize(ws)  # the retry
    fake.initializes = 2
    a = await fake.expect(ws, "_corral/session/attach")
    assert a["params"] == {"sessionId": SID, "afterSeq": 0}, a["params"]
    for s in range(1, 6):
        await fake.send(ws, note(s, E1, "text", text="t%d " % s))
    await fake.send(ws, note(3, E1, "text", text="DUPLICATE "))   # below the last seq: dropped
    await ws.send(b"\x00binary\x01")                               # not a message: dropped
    await fake.reply(ws, a, {"sessionId": SID, "epoch": E1, "lastSeq": 5, "state": "running"})
    await fake.send(ws, note(6, E1, "state", state="idle"))
    await asyncio.sleep(0.3)
    await ws.close(1001, "the server is shutting down; reconnect")


async def tail_conn2(ws, fake):
    await fake.initialize(ws)
    a = await fake.expect(ws, "_corral/session/attach")
    assert a["params"] == {"sessionId": SID, "afterSeq": 6, "epoch": E1}, a["params"]
    await fake.reply(ws, a, error={"code": -32008, "message": "the epoch changed; reload the session",
                                   "data": {"reason": "expired", "epoch": E2}})
    b = await fake.expect(ws, "_corral/session/attach")
    assert b["params"] == {"sessionId": SID, "afterSeq": 0}, b["params"]
    for s in range(1, 4):
        await fake.send(ws, note(s, E2, "text", text="n%d " % s))
    await fake.reply(ws, b, {"sessionId": SID, "epoch": E2, "lastSeq": 3, "state": "idle"})
    # A permission request: tail must not answer it.
    await fake.send(ws, {"jsonrpc": "2.0", "id": "corral-perm-1", "method": "session/request_permission",
                         "params": {"sessionId": SID, "toolCall": {"toolCallId": "c", "title": "x"},
                                    "options": [{"optionId": "allow", "name": "Allow", "kind": "allow_once"}]}})
    try:
        m = await fake.recv(ws, timeout=1.0)
        raise AssertionError("tail answered something: %r" % m)
    except asyncio.TimeoutError:
        pass
    fake.done.set()
    await fake.hold(ws)


def scenario_tail(corral):
    rc, out, err, fake = asyncio.run(run(corral, ["tail", SID, "--json"], [tail_conn1, tail_conn2], stop_when=True))
    check(not fake.errors, "tail: the client sent what the protocol wants", fake.errors)
    check(rc == 0, "tail: exit 0 on Ctrl-C", (rc, err))
    got = [(json.loads(line)["params"]["_meta"]["seq"], json.loads(line)["params"]["_meta"]["epoch"])
           for line in out.splitlines()]
    check(got == [(s, E1) for s in range(1, 7)] + [(s, E2) for s in range(1, 4)],
          "tail: every event once (the duplicate and the binary frame dropped), then the new epoch's", got)
    check("DUPLICATE" not in out, "tail: the duplicate seq is not printed")
    check("rebuilt" in err and "reconnecting" in err, "tail: notices for the reconnect and the new epoch", err)
    check(getattr(fake, "initializes", 0) == 2, "tail: initialize retried after -32011")


# ---- chat ---------------------------------------------------------------------

async def chat_conn1(ws, fake):
    await fake.initialize(ws)
    n = await fake.expect(ws, "session/new")
    assert n["params"]["cwd"] == "/tmp" and n["params"]["mcpServers"] == [], n["params"]
    await fake.reply(ws, n, {"sessionId": SID, "modes": {"currentModeId": "ask", "availableModes": []},
                             "_meta": {"epoch": E1}})
    await fake.send(ws, note(1, E1, "state", state="ready"))
    p = await fake.expect(ws, "session/prompt", timeout=15)
    key = p["params"].get("_meta", {}).get("idempotencyKey")
    assert key and p["params"]["prompt"] == [{"type": "text", "text": "hello there"}], p["params"]
    fake.key = key
    await fake.send(ws, note(2, E1, "state", state="running"))
    await fake.send(ws, note(3, E1, "text", text="Hel"))
    await asyncio.sleep(0.3)
    ws.transport.abort()  # the connection breaks mid-answer


async def chat_conn2(ws, fake):
    await fake.initialize(ws)
    a = await fake.expect(ws, "_corral/session/attach")
    assert a["params"] == {"sessionId": SID, "afterSeq": 3, "epoch": E1}, a["params"]
    await fake.reply(ws, a, {"sessionId": SID, "epoch": E1, "lastSeq": 3, "state": "running"})
    p = await fake.expect(ws, "session/prompt")
    assert p["params"]["_meta"]["idempotencyKey"] == fake.key, (p["params"], fake.key)
    # An unknown request gets method-not-found.
    await fake.send(ws, {"jsonrpc": "2.0", "id": "x-1", "method": "fs/read_text_file", "params": {"path": "/etc"}})
    r = await fake.recv(ws)
    assert r.get("id") == "x-1" and r["error"]["code"] == -32601, r
    # A permission request: the user types "a".
    await fake.send(ws, {"jsonrpc": "2.0", "id": "corral-perm-7", "method": "session/request_permission",
                         "params": {"sessionId": SID, "toolCall": {"toolCallId": "c1", "title": "Run `make`"},
                                    "options": [{"optionId": "o-yes", "name": "Allow", "kind": "allow_once"},
                                                {"optionId": "o-always", "name": "Always", "kind": "allow_always"},
                                                {"optionId": "o-no", "name": "Reject", "kind": "reject_once"}],
                                    "_meta": {"seq": 4, "epoch": E1}}})
    r = await fake.recv(ws, timeout=15)
    assert r.get("id") == "corral-perm-7" and r["result"] == {"outcome": {"outcome": "selected", "optionId": "o-always"}}, r
    #  Escape sequences from a model (clear screen, C1 CSI) must not reach the terminal.
    await fake.send(ws, note(4, E1, "text", text="lo!\x1b[2J\u009b"))
    await fake.send(ws, note(5, E1, "state", state="idle"))
    await fake.send(ws, note(6, E1, "turn_ended", stopReason="end_turn", code=0, retryable=False))
    await fake.reply(ws, p, {"stopReason": "end_turn"})
    fake.answered = True
    await fake.hold(ws)


def scenario_chat(corral):
    async def answered(fake):
        for _ in range(600):  # 30 s
            if getattr(fake, "answered", False) or fake.errors:
                return
            await asyncio.sleep(0.05)
    rc, out, err, fake = asyncio.run(run(
        corral, ["chat", "--cwd", "/tmp"], [chat_conn1, chat_conn2],
        stdin_lines=[0.5, "hello there\n", "a\n", answered, 0.3], timeout=40))
    check(not fake.errors, "chat: the client sent what the protocol wants (same idempotency key after the "
                           "reconnect, 'a' = allow_always, -32601 for an unknown request)", fake.errors)
    check(rc == 0, "chat: exit 0 when stdin ends after the turn", (rc, err, out))
    check(out.count("Hello!") == 1 or ("Hel" in out and "lo!" in out and out.count("Hel") == 1),
          "chat: the answer shown once across the break", out)
    check("reconnected; resumed after seq 3" in out, "chat: says where it resumed", out)
    check("permission needed: Run `make`" in out and "[a]lways" in out, "chat: the permission question", out)
    check("\033" not in out, "chat: no colour codes when stdout is not a terminal")
    check("lo!?[2J?" in out and "\u009b" not in out,
          "chat: control characters from the model are shown as '?', never sent to the terminal", out)


async def chat_fail_conn(ws, fake):
    await fake.initialize(ws)
    n = await fake.expect(ws, "session/new")
    await fake.reply(ws, n, {"sessionId": SID, "modes": {"currentModeId": "ask", "availableModes": []},
                             "_meta": {"epoch": E1}})
    p = await fake.expect(ws, "session/prompt", timeout=15)
    await fake.reply(ws, p, error={"code": -32010, "message": "the model provider failed: 500",
                                   "data": {"reason": "upstream", "retryable": False}})
    await fake.hold(ws)


def scenario_chat_fail(corral):
    rc, out, err, fake = asyncio.run(run(corral, ["chat", "--cwd", "/tmp"], [chat_fail_conn],
                                         stdin_lines=["hello\n"], timeout=30))
    check(not fake.errors, "chat (failing turn): the protocol", fake.errors)
    check(rc == 1 and "the prompt failed: the model provider failed: 500" in out,
          "chat: piped input whose prompt failed exits 1 after saying why", (rc, out, err))


# ---- refusals -------------------------------------------------------------------

async def refuse_attach(ws, fake):
    await fake.initialize(ws)
    a = await fake.expect(ws, "_corral/session/attach")
    await fake.reply(ws, a, error={"code": -32002, "message": "no such session; check the sessionId\x1b]0;owned\x07",
                                   "data": {"reason": "not_found"}})
    await fake.hold(ws)


async def refuse_close(ws, fake):
    await ws.close(1008, "the API key was revoked\x1b[2J")


def scenario_refuse(corral):
    rc, out, err, fake = asyncio.run(run(corral, ["tail", SID], [refuse_attach], timeout=15))
    check(rc == 3 and "no such session" in err, "tail: attach refused -32002 -> exit 3", (rc, err))
    check("\x1b" not in err and "\x07" not in err and "?]0;owned?" in err,
          "tail: control characters in the gateway's error message are shown as '?'", err)
    rc, out, err, fake = asyncio.run(run(corral, ["acp"], [refuse_close], stdin_lines=[3], timeout=15))
    check(rc == 3 and "1008" in err and "revoked" in err and out == "",
          "acp: the gateway closing 1008 -> exit 3 with its reason on stderr", (rc, err))
    check("\x1b" not in err and "revoked?[2J" in err, "acp: the close reason's control characters as '?'", err)


def main():
    if len(sys.argv) < 2:
        print(__doc__)
        return 2
    corral = sys.argv[1]
    names = sys.argv[2:] or ["tail", "chat", "chat_fail", "refuse"]
    try:
        for n in names:
            print("---- %s" % n, flush=True)
            globals()["scenario_" + n](corral)
    except Fail:
        return 1
    print("PASS test_cli_ws_client", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
