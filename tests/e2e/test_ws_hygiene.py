#!/usr/bin/python3
"""End-to-end: WebSocket hygiene of corral-gateway (DESIGN §6, §10), driven
by Debian's python3-websockets (asyncio API) and, for frames that library
refuses to send (bad UTF-8 in a text frame, a client that never answers
pings), a raw RFC 6455 client written here.

    test_ws_hygiene.py BUILD_DIR

1. The bad-input table: every bad input gets the error code or WebSocket
   close code docs/protocol.md documents, with a message a person
   can read and no library text, and the connection (or, after a close,
   the gateway) keeps serving.  Meanwhile one healthy client streams real
   prompts on the same gateway; its stream must be complete and gap-free
   (by _meta.seq) and every prompt answered.
2. Tenant isolation over ACP: tenant-b cannot load, attach, resume,
   prompt, cancel, close, delete, set_mode, set_config_option or read the
   history of tenant-a's session (-32002 each), nor answer its permission
   request, and tenant-a's session is unaffected.
3. Hygiene, each setting on a gateway of its own started with small values
   (same store and session service): message size cap, depth cap, pings,
   idle timeout, Origin allowlist, per-IP connection cap, per-key rate
   limit, key revoked while connected, SIGTERM drain, TLS.

docs/protocol.md (framing, error codes) and docs/gateway.md (close
codes, connecting) are the documents checked.  Every wait is bounded; the
whole file runs in about 10 s.
"""
import asyncio
import base64
import hashlib
import json
import os
import signal
import socket
import ssl
import struct
import subprocess
import sys
import time
import traceback
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from corral_stack import Stack, free_port  # noqa: E402

import websockets  # noqa: E402  (Debian python3-websockets 10.4)

T = 10.0  # default bound on any single wait (seconds)
LIBRARY_WORDS = ("jansson", "msgpack", "lws", "libwebsockets", "zmq", "zeromq",
                 "lmdb", "errno", "json_error", "assert", "segfault")

FAILURES = []
TABLE = []  # rows for the summary: (input, expected, observed)


def check(cond, what):
    if cond:
        print("ok:", what, flush=True)
    else:
        print("FAIL:", what, flush=True)
        FAILURES.append(what)
    return cond


def clean_text(text):
    """A message for people: non-empty and free of library names."""
    low = (text or "").lower()
    return bool(text and text.strip()) and not any(w in low for w in LIBRARY_WORDS)


# ---------------------------------------------------------------------------
#  The scripted model: a long stream for the healthy client, a tool call
#  that needs permission for the isolation test.

STREAM_TEXT = "".join("w%03d " % i for i in range(120))
SCRIPT = {
    "rules": [
        {"name": "stream", "match": "stream", "chunk_delay_ms": 15,
         "responses": [[{"text": STREAM_TEXT, "chunks": 120}]]},
        {"name": "write", "match": "write", "chunk_delay_ms": 5,
         "responses": [
             [{"text": "I will create hello.txt.", "chunks": 2},
              {"tool_call": {"name": "write_file",
                             "arguments": {"path": "hello.txt", "content": "hi\n"}},
               "fragments": 2}],
             [{"text": "Done.", "chunks": 1}]]},
        {"name": "quick", "match": "quick", "chunk_delay_ms": 1,
         "responses": [[{"text": "ok", "chunks": 1}]]},
    ]
}


# ---------------------------------------------------------------------------
#  A JSON-RPC client over python3-websockets

class Client:
    """One WebSocket connection: requests matched to answers by id,
    notifications kept in order, the gateway's own requests queued, and
    the close code and reason once it closes."""

    def __init__(self, ws, name):
        self.ws, self.name = ws, name
        self.next_id = 0
        self.waiting = {}
        self.null_replies = asyncio.Queue()  # error responses with id null
        self.notes = []
        self.requests = asyncio.Queue()  # session/request_permission ...
        self.unmatched = []
        self.binary = []
        self.closed = asyncio.get_running_loop().create_future()
        self.reader = asyncio.ensure_future(self._read())

    @classmethod
    async def connect(cls, url, key=None, headers=None, name="client", **kw):
        h = dict(headers or {})
        if key:
            h["Authorization"] = "Bearer " + key
        kw.setdefault("open_timeout", T)
        ws = await websockets.connect(url, extra_headers=h, max_size=None,
                                      ping_interval=None, close_timeout=2, **kw)
        return cls(ws, name)

    async def _read(self):
        try:
            async for text in self.ws:
                if isinstance(text, bytes):
                    self.binary.append(text)
                    continue
                m = json.loads(text)
                if "method" in m and "id" in m:
                    self.requests.put_nowait(m)
                elif "method" in m:
                    self.notes.append(m)
                elif m.get("id") is None:
                    self.null_replies.put_nowait(m)
                elif m["id"] in self.waiting:
                    self.waiting.pop(m["id"]).set_result(m)
                else:
                    self.unmatched.append(m)
        except websockets.ConnectionClosed:
            pass
        except Exception as e:  # a frame we could not read is a failure
            check(False, "%s: unreadable frame from the gateway: %r" % (self.name, e))
        finally:
            if not self.closed.done():
                self.closed.set_result((self.ws.close_code, self.ws.close_reason))
            for f in self.waiting.values():
                if not f.done():
                    f.set_result(None)
            self.waiting.clear()

    def new_id(self):
        self.next_id += 1
        return self.next_id

    async def send(self, text):
        """Send a frame; a closed connection is noticed by the caller's checks."""
        try:
            await self.ws.send(text)
        except websockets.ConnectionClosed:
            pass

    async def request(self, method, params=None, id=None, timeout=T, extra=None):
        """Send a request; the whole response (None if the connection closed)."""
        id = self.new_id() if id is None else id
        msg = {"jsonrpc": "2.0", "id": id, "method": method}
        if params is not None:
            msg["params"] = params
        if extra:
            msg.update(extra)
        return await self.send_expect(json.dumps(msg), id, timeout)

    async def send_expect(self, text, id, timeout=T):
        fut = asyncio.get_running_loop().create_future()
        self.waiting[id] = fut
        try:
            await self.ws.send(text)
        except websockets.ConnectionClosed:
            pass
        if self.closed.done() and not fut.done():
            self.waiting.pop(id, None)
            return None
        try:
            return await asyncio.wait_for(fut, timeout)
        except asyncio.TimeoutError:
            self.waiting.pop(id, None)
            raise AssertionError("%s: no answer to %s within %.0fs" % (self.name, text[:80], timeout))

    async def null_reply(self, timeout=T):
        try:
            return await asyncio.wait_for(self.null_replies.get(), timeout)
        except asyncio.TimeoutError:
            return None

    async def result(self, method, params=None, timeout=T):
        r = await self.request(method, params, timeout=timeout)
        if not r or "result" not in r:
            raise AssertionError("%s: %s failed: %r" % (self.name, method, r))
        return r["result"]

    async def initialize(self):
        return await self.result("initialize", {
            "protocolVersion": 1,
            "clientCapabilities": {"fs": {"readTextFile": False, "writeTextFile": False},
                                   "terminal": False}})

    async def wait_closed(self, timeout=T):
        """(code, reason) once closed, or None if still open after timeout."""
        try:
            return await asyncio.wait_for(asyncio.shield(self.closed), timeout)
        except asyncio.TimeoutError:
            return None

    async def wait_note(self, pred, timeout=T):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for n in self.notes:
                if pred(n):
                    return n
            if self.closed.done():
                return None
            await asyncio.sleep(0.02)
        return None

    async def close(self):
        try:
            await asyncio.wait_for(self.ws.close(), 3)
        except Exception:
            pass
        self.reader.cancel()

    @property
    def open(self):
        return not self.closed.done()


# ---------------------------------------------------------------------------
#  A raw RFC 6455 client: anything may be sent, pings may go unanswered

class RawWS:
    def __init__(self, reader, writer, answer_pings):
        self.r, self.w = reader, writer
        self.answer_pings = answer_pings
        self.pings = []  # monotonic times pings arrived
        self.messages = asyncio.Queue()
        self.close_info = None
        self.closed_at = None
        self.done = asyncio.get_running_loop().create_future()
        self.task = asyncio.ensure_future(self._read())

    @classmethod
    async def connect(cls, port, headers=None, answer_pings=True, path="/acp"):
        r, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), T)
        key = base64.b64encode(os.urandom(16)).decode()
        lines = ["GET %s HTTP/1.1" % path, "Host: 127.0.0.1:%d" % port,
                 "Upgrade: websocket", "Connection: Upgrade",
                 "Sec-WebSocket-Key: " + key, "Sec-WebSocket-Version: 13"]
        lines += ["%s: %s" % kv for kv in (headers or {}).items()]
        w.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), T)
        status = head.split(b"\r\n")[0]
        if b" 101 " not in status:
            raise AssertionError("raw handshake refused: %r" % status)
        accept = base64.b64encode(hashlib.sha1(
            (key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest())
        if accept not in head:
            raise AssertionError("raw handshake: bad Sec-WebSocket-Accept")
        return cls(r, w, answer_pings)

    def send_frame(self, opcode, payload, fin=True):
        head = bytes([(0x80 if fin else 0) | opcode])
        n = len(payload)
        if n < 126:
            head += bytes([0x80 | n])
        elif n < 65536:
            head += bytes([0x80 | 126]) + struct.pack("!H", n)
        else:
            head += bytes([0x80 | 127]) + struct.pack("!Q", n)
        mask = os.urandom(4)
        body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.w.write(head + mask + body)

    def send_text(self, data):
        self.send_frame(0x1, data if isinstance(data, bytes) else data.encode())

    async def _read(self):
        try:
            while True:
                b0, b1 = await self.r.readexactly(2)
                n = b1 & 0x7F
                if n == 126:
                    n = struct.unpack("!H", await self.r.readexactly(2))[0]
                elif n == 127:
                    n = struct.unpack("!Q", await self.r.readexactly(8))[0]
                mask = await self.r.readexactly(4) if b1 & 0x80 else None
                data = await self.r.readexactly(n)
                if mask:
                    data = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
                op = b0 & 0x0F
                if op == 0x9:
                    self.pings.append(time.monotonic())
                    if self.answer_pings:
                        self.send_frame(0xA, data)
                elif op == 0x8:
                    code = struct.unpack("!H", data[:2])[0] if len(data) >= 2 else None
                    self.close_info = (code, data[2:].decode(errors="replace"))
                    self.closed_at = time.monotonic()
                    try:
                        self.send_frame(0x8, data[:2])
                    except Exception:
                        pass
                    break
                elif op in (0x1, 0x2):
                    self.messages.put_nowait(data)
        except (asyncio.IncompleteReadError, ConnectionError):
            if self.closed_at is None:
                self.closed_at = time.monotonic()
        finally:
            if not self.done.done():
                self.done.set_result(self.close_info)
            self.w.close()

    async def message(self, timeout=T):
        try:
            return json.loads(await asyncio.wait_for(self.messages.get(), timeout))
        except asyncio.TimeoutError:
            return None

    async def wait_closed(self, timeout=T):
        try:
            return await asyncio.wait_for(asyncio.shield(self.done), timeout), True
        except asyncio.TimeoutError:
            return None, False

    def abort(self):
        self.task.cancel()
        self.w.close()


# ---------------------------------------------------------------------------
#  Extra gateways on the same store and session service, each with its
#  own settings

class Gateway:
    def __init__(self, stack, name, args, tls=False):
        self.stack, self.name, self.tls = stack, name, tls
        self.port = free_port()
        ep = stack.svc.ep
        argv = [stack.gateway_bin, "--listen", "127.0.0.1:%d" % self.port,
                "--session-endpoint", ep["client"], "--store-endpoint", ep["store"],
                "--events-endpoint", ep["events"]] + list(args)
        self.log_path = os.path.join(stack.tmp, name + ".log")
        self.logf = open(self.log_path, "ab")
        self.proc = subprocess.Popen(argv, stderr=self.logf, env=stack.svc.env)
        deadline = time.time() + T
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError("gateway %s exited at start: %s" % (name, self.log()[-2000:]))
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                break
            except OSError:
                if time.time() > deadline:
                    raise RuntimeError("gateway %s did not listen" % name)
                time.sleep(0.05)

    @property
    def ws_url(self):
        return "%s://127.0.0.1:%d/acp" % ("wss" if self.tls else "ws", self.port)

    def log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(6)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.logf.close()


def make_key(stack, tenant):
    """A new key and its id (corral-keys create prints both once)."""
    out = subprocess.run([stack.keys_bin, "create", "--tenant", tenant, "--store-endpoint",
                          stack.svc.ep["store"]], capture_output=True, text=True, timeout=20)
    kv = dict(line.split(": ", 1) for line in out.stdout.splitlines() if ": " in line)
    if "key" not in kv or "id" not in kv:
        raise RuntimeError("corral-keys create failed: " + out.stderr)
    return kv["key"].strip(), kv["id"].strip()


async def ready_session(c, cwd, timeout=20.0):
    """session/new, retried while the session service is still starting."""
    deadline = time.monotonic() + timeout
    while True:
        r = await c.request("session/new", {"cwd": cwd, "mcpServers": []})
        if r and "result" in r:
            return r["result"]["sessionId"]
        if time.monotonic() > deadline or not r or r["error"]["code"] != -32011:
            raise AssertionError("session/new failed: %r" % r)
        await asyncio.sleep(0.2)


# ---------------------------------------------------------------------------
#  The healthy client: prompts again and again on the main gateway while
#  everything else happens, and checks its stream at the end

class Healthy:
    def __init__(self, stack, key):
        self.stack, self.key = stack, key
        self.stop = asyncio.Event()
        self.answers = []  # (stopReason or error, time answered)
        self.problems = []

    async def start(self):
        self.c = await Client.connect(self.stack.ws_url, self.key, name="healthy")
        await self.c.initialize()
        self.sid = await ready_session(self.c, self.stack.workspace)
        self.task = asyncio.ensure_future(self.run())

    async def run(self):
        try:
            while not self.stop.is_set() or not self.answers:
                r = await self.c.request("session/prompt", {
                    "sessionId": self.sid,
                    "prompt": [{"type": "text", "text": "stream please"}]}, timeout=60)
                self.answers.append((r and r.get("result", {}).get("stopReason")
                                     or ("error", r), time.monotonic()))
                if not r or "result" not in r:
                    break
                # Answered only after the turn's whole stream reached us.
                ended = sum(1 for n in self.c.notes if n["method"] == "_corral/session/event"
                            and n["params"]["event"].get("kind") == "turn_ended")
                if ended != len(self.answers):
                    self.problems.append("prompt %d answered before its turn_ended event"
                                         % len(self.answers))
        except Exception as e:
            self.problems.append(repr(e))

    def turns_text(self):
        """{turnId: agent text} from this session's notifications."""
        out = {}
        for n in self.c.notes:
            p = n.get("params", {})
            u = p.get("update", {})
            if n["method"] == "session/update" and u.get("sessionUpdate") == "agent_message_chunk":
                t = p["_meta"].get("turnId")
                out[t] = out.get(t, "") + u["content"]["text"]
        return out

    async def finish(self):
        self.stop.set()
        try:
            await asyncio.wait_for(self.task, 60)
        except asyncio.TimeoutError:
            self.problems.append("the healthy prompt loop did not end within 60 s")
        check(not self.problems, "healthy client: no error (%s)" % self.problems)
        check(self.answers and all(a == "end_turn" for a, _ in self.answers),
              "healthy client: every prompt answered end_turn (%d prompts)" % len(self.answers))
        seqs = [n["params"]["_meta"]["seq"] for n in self.c.notes
                if n.get("params", {}).get("sessionId") == self.sid
                and "seq" in n.get("params", {}).get("_meta", {})]
        check(seqs == list(range(1, len(seqs) + 1)),
              "healthy client: gap-free stream, _meta.seq 1..%d in order" % len(seqs))
        texts = self.turns_text()
        check(len(texts) == len(self.answers) and all(t == STREAM_TEXT for t in texts.values()),
              "healthy client: every turn's text arrived complete (%d turns)" % len(texts))
        check(self.c.open, "healthy client: still connected at the end")
        await self.c.close()


# ---------------------------------------------------------------------------
#  1. The bad-input table

def rpc_ok(r, code, what, data=None):
    """r is an error response with this code, a clean message and data."""
    err = (r or {}).get("error") or {}
    good = err.get("code") == code and clean_text(err.get("message"))
    for k, v in (data or {}).items():
        good = good and (err.get("data") or {}).get(k) == v
    check(good, "%s -> %s (got %s %r)" % (what, code, err.get("code"), err.get("message")))
    TABLE.append((what, str(code), str(err.get("code"))))
    return good


async def still_serves(c, what, authorized=True):
    r = await c.request("session/list" if authorized else "initialize",
                        {} if authorized else {"protocolVersion": 1})
    check(r and "result" in r, "%s: the connection still serves" % what)


async def probe_gateway(url, key, what):
    c = await Client.connect(url, key, name="probe")
    await c.initialize()
    r = await c.request("session/list", {})
    check(r and "result" in r, "%s: the gateway still serves new clients" % what)
    await c.close()


async def bad_input_table(stack, key_a, key_b):
    url = stack.ws_url
    c = await Client.connect(url, key_a, name="table")
    await c.initialize()
    sid_a = await ready_session(c, stack.workspace)

    # --- envelope and JSON ---
    rows = [
        ("invalid JSON", '{"jsonrpc":"2.0","id":1,"method":', -32700),
        ("empty text frame", "", -32700),
        ("JSON array (batch)", '[{"jsonrpc":"2.0","id":2,"method":"session/list"}]', -32600),
        ("JSON scalar", "42", -32600),
        ("id null", '{"jsonrpc":"2.0","id":null,"method":"session/list"}', -32600),
        ("id an object", '{"jsonrpc":"2.0","id":{},"method":"session/list"}', -32600),
        ("integer too large", '{"jsonrpc":"2.0","id":4,"method":"session/list",'
                              '"params":{"n":1234567890123456789012345678901}}', -32700),
        ("NUL in a string", '{"jsonrpc":"2.0","id":5,"method":"session/list",'
                            '"params":{"a":"x\\u0000y"}}', -32700),
    ]
    for what, text, code in rows:
        await c.send(text)
        rpc_ok(await c.null_reply(), code, what)
    # The id is echoed when it could be read.
    r = await c.send_expect('{"jsonrpc":"1.0","id":"v1","method":"session/list"}', "v1")
    rpc_ok(r, -32600, '"jsonrpc":"1.0" (id echoed)')
    r = await c.send_expect('{"jsonrpc":"2.0","id":"both","method":"session/list","result":{}}',
                            "both")
    rpc_ok(r, -32600, "both method and result")
    await still_serves(c, "after the envelope rows")

    # --- methods and params ---
    r = await c.request("no/such/method", {})
    rpc_ok(r, -32601, "unknown method", {"method": "no/such/method"})
    await c.send(json.dumps({"jsonrpc": "2.0", "method": "no/such/notification"}))
    r = await c.request("session/list", {})
    check(r and "result" in r and not c.null_replies.qsize(),
          "unknown method as a notification: never answered")
    rpc_ok(await c.request("session/list", extra={"params": 5}), -32602,
           "params a scalar")
    rpc_ok(await c.request("session/new", {"cwd": 5, "mcpServers": []}), -32602,
           "wrong param type (session/new cwd: 5)")
    rpc_ok(await c.request("session/prompt", {"sessionId": sid_a, "prompt": "hi"}), -32602,
           "wrong param type (session/prompt prompt: string)")
    rpc_ok(await c.request("session/set_mode", {"sessionId": sid_a, "modeId": 3}), -32602,
           "wrong param type (session/set_mode modeId: 3)")
    rpc_ok(await c.request("session/prompt"), -32602, "missing params (session/prompt)")
    rpc_ok(await c.request("session/load", {}), -32602, "missing params (session/load)")
    rpc_ok(await c.request("initialize", {}), -32602, "missing params (initialize)")
    rpc_ok(await c.request("session/load", {"sessionId": str(uuid.uuid4()), "cwd": stack.workspace,
                                            "mcpServers": []}), -32002, "unknown session id")
    await still_serves(c, "after the params rows")

    # --- limits ---
    big = json.dumps({"jsonrpc": "2.0", "id": 77, "method": "session/list",
                      "params": {"_meta": {"pad": ""}}})
    pad = 1024 * 1024 + 1 - len(big)
    text = big.replace('"pad": ""', '"pad": "%s"' % ("x" * pad))
    assert len(text) == 1024 * 1024 + 1
    await c.send(text)
    rpc_ok(await c.null_reply(), -32006, "oversized frame (1 MiB + 1)", {"limit": 1024 * 1024})
    deep = '{"jsonrpc":"2.0","id":78,"method":"session/list","params":{"a":%s1%s}}' % (
        "[" * 63, "]" * 63)  # 65 deep
    await c.send(deep)
    rpc_ok(await c.null_reply(), -32006, "deep nesting (65 > 64)", {"limit": 64})
    await c.send(b'{"jsonrpc":"2.0","id":79,"method":"session/list"}')
    rpc_ok(await c.null_reply(), -32600, "binary frame")
    await still_serves(c, "after the limit rows")

    # --- bad UTF-8 (raw client: the library will not send it) ---
    raw = await RawWS.connect(stack.port, {"Authorization": "Bearer " + key_a})
    raw.send_text(b'{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":1}}')
    check((await raw.message()) is not None, "raw client: initialize answered")
    raw.send_text(b'{"jsonrpc":"2.0","id":2,"method":"session/list","params":{"a":"\xc3\x28"}}')
    info, closed = await raw.wait_closed(5)
    if closed:
        code, reason = info or (None, "")
        check(code == 1007 and clean_text(reason),
              "bad UTF-8 in a text frame -> close 1007 (got %s %r)" % (code, reason))
        TABLE.append(("bad UTF-8 in a text frame", "close 1007", "close %s" % code))
    else:
        m = await raw.message(1)
        rpc_ok(m, -32700, "bad UTF-8 in a text frame")
        raw.abort()
    await probe_gateway(url, key_a, "after bad UTF-8")

    # --- keys ---
    c2 = await Client.connect(url, None, name="nokey")
    await c2.initialize()
    rpc_ok(await c2.request("session/list", {}), -32000, "no key (session/list)")
    rpc_ok(await c2.request("authenticate", {"methodId": "corral-api-key"}), -32000,
           "no key (authenticate)")
    check(c2.open, "no key: the connection stays open (initialize is allowed)")
    await c2.close()

    wrong = "crl_" + base64.urlsafe_b64encode(os.urandom(32)).decode().rstrip("=")
    wrong = wrong[:-1] + "A"  # canonical last character
    c3 = await Client.connect(url, wrong, name="wrongkey")
    await c3.send(json.dumps({"jsonrpc": "2.0", "id": "init", "method": "initialize",
                              "params": {"protocolVersion": 1}}))
    r = await c3.request("session/list", {})
    # Held until the key is checked, then answered -32000; sent after the
    # check it may meet the closing connection instead (no answer).
    if r is not None:
        rpc_ok(r, -32000, "wrong key (session/list)")
    closed = await c3.wait_closed(5)
    code, reason = closed or (None, None)
    check(code == 1008 and clean_text(reason),
          "wrong key -> close 1008 after the answer (got %s %r)" % (code, reason))
    TABLE.append(("wrong key: the connection", "close 1008", "close %s" % code))

    c4 = await Client.connect(url, "not-a-key", name="badkey")
    await c4.send(json.dumps({"jsonrpc": "2.0", "id": "init", "method": "initialize",
                              "params": {"protocolVersion": 1}}))
    r = await c4.request("session/list", {})
    if r is not None:
        rpc_ok(r, -32000, "malformed key (session/list)")
    closed = await c4.wait_closed(5)
    code, reason = closed or (None, None)
    check(code == 1008 and clean_text(reason),
          "malformed key -> close 1008 (got %s %r)" % (code, reason))
    TABLE.append(("malformed key: the connection", "close 1008", "close %s" % code))

    # --- another tenant's session, a method before initialize ---
    c5 = await Client.connect(url, key_b, name="tenant-b")
    rpc_ok(await c5.request("session/list", {}), -32600, "a method before initialize")
    await c5.initialize()
    rpc_ok(await c5.request("session/load", {"sessionId": sid_a, "cwd": stack.workspace,
                                             "mcpServers": []}),
           -32002, "another tenant's session id (session/load)")
    await still_serves(c5, "tenant-b after the refusal")
    await c5.close()
    await c.close()
    await probe_gateway(url, key_a, "after the table")


# ---------------------------------------------------------------------------
#  2. Tenant isolation

async def tenant_isolation(stack, key_a, key_b):
    url = stack.ws_url
    a = await Client.connect(url, key_a, name="iso-a")
    await a.initialize()
    sid = await ready_session(a, stack.workspace)
    prompt = asyncio.ensure_future(a.request(
        "session/prompt", {"sessionId": sid, "prompt": [{"type": "text", "text": "write it"}]},
        timeout=30))
    try:
        perm = await asyncio.wait_for(a.requests.get(), T)
    except asyncio.TimeoutError:
        perm = None
    check(perm and perm["method"] == "session/request_permission",
          "tenant-a gets a permission request")
    if not perm:
        prompt.cancel()
        await a.close()
        return
    b = await Client.connect(url, key_b, name="iso-b")
    await b.initialize()
    ws = stack.workspace
    attempts = [
        ("session/load", {"sessionId": sid, "cwd": ws, "mcpServers": []}),
        ("_corral/session/attach", {"sessionId": sid, "afterSeq": 0}),
        ("session/resume", {"sessionId": sid, "cwd": ws}),
        ("session/prompt", {"sessionId": sid, "prompt": [{"type": "text", "text": "quick"}]}),
        ("session/cancel", {"sessionId": sid}),
        ("session/set_mode", {"sessionId": sid, "modeId": "auto"}),
        ("session/set_config_option", {"sessionId": sid, "configId": "model",
                                       "value": "corral-fake"}),
        ("_corral/session/history", {"sessionId": sid}),
        ("session/close", {"sessionId": sid}),
        ("session/delete", {"sessionId": sid}),
    ]
    for method, params in attempts:
        rpc_ok(await b.request(method, params), -32002, "tenant-b %s on tenant-a's session" % method)
    # As ACP sends them: cancel as a notification, a forged permission answer.
    await b.send(json.dumps({"jsonrpc": "2.0", "method": "session/cancel",
                             "params": {"sessionId": sid}}))
    allow = [o for o in perm["params"]["options"] if o["kind"] == "allow_once"][0]["optionId"]
    await b.send(json.dumps({"jsonrpc": "2.0", "id": perm["id"], "result": {
        "outcome": {"outcome": "selected", "optionId": allow}}}))
    r = await b.request("session/list", {})
    check(r and "result" in r and all(s["sessionId"] != sid for s in r["result"]["sessions"]),
          "tenant-b: session/list does not show tenant-a's session")
    check(b.null_replies.qsize() == 0 and not b.unmatched and b.requests.qsize() == 0,
          "tenant-b: its forged permission answer and cancel got no reply and no request")
    check(all(n["params"].get("sessionId") != sid for n in b.notes),
          "tenant-b: saw no event of tenant-a's session")
    TABLE.append(("tenant-b answers tenant-a's permission request", "ignored", "ignored"))
    await asyncio.sleep(0.3)
    check(not prompt.done(), "tenant-a's turn still waits for permission after tenant-b's tries")
    resolved = [n for n in a.notes if n["method"] == "_corral/session/event"
                and n["params"]["event"].get("kind") == "permission_resolved"]
    check(not resolved, "tenant-a's permission request is still open")
    await a.send(json.dumps({"jsonrpc": "2.0", "id": perm["id"], "result": {
        "outcome": {"outcome": "selected", "optionId": allow}}}))
    r = await prompt
    check(r and r.get("result", {}).get("stopReason") == "end_turn",
          "tenant-a answers its own permission request and the turn ends (%r)" % r)
    check(os.path.exists(os.path.join(ws, "hello.txt")), "the approved write happened")
    r = await a.request("session/load", {"sessionId": sid, "cwd": ws, "mcpServers": []})
    check(r and r.get("result", {}).get("modes", {}).get("currentModeId") == "ask",
          "tenant-a's session is still there and still in ask mode (%s)" % str(r)[:300])
    seqs = [n["params"]["_meta"]["seq"] for n in a.notes
            if n["params"].get("sessionId") == sid and "seq" in n["params"].get("_meta", {})]
    seqs = sorted(set(seqs))
    check(seqs == list(range(1, len(seqs) + 1)), "tenant-a's stream is gap-free")
    await b.close()
    await a.close()


# ---------------------------------------------------------------------------
#  3. Hygiene settings, each on a gateway of its own

async def size_and_depth(stack, key):
    gw = Gateway(stack, "gw-limits", ["--max-message", "4096", "--max-depth", "8"])
    try:
        c = await Client.connect(gw.ws_url, key, name="limits")
        await c.initialize()

        def padded(n, id):
            base = json.dumps({"jsonrpc": "2.0", "id": id, "method": "session/list",
                               "params": {"_meta": {"pad": ""}}})
            return base.replace('"pad": ""', '"pad": "%s"' % ("x" * (n - len(base))))
        at = padded(4096, 1)
        assert len(at) == 4096
        r = await c.send_expect(at, 1)
        check(r and "result" in r, "--max-message 4096: a message of exactly 4096 bytes is served")
        TABLE.append(("message of exactly --max-message bytes", "result",
                      "result" if r and "result" in r else str(r)))
        await c.send(padded(4097, 2))
        rpc_ok(await c.null_reply(), -32006, "message of --max-message + 1 bytes", {"limit": 4096})
        ok8 = '{"jsonrpc":"2.0","id":3,"method":"session/list","params":{"_meta":{"a":[[[[[1]]]]]}}}'
        r = await c.send_expect(ok8, 3)
        check(r and "result" in r, "--max-depth 8: exactly 8 deep is served")
        TABLE.append(("nesting exactly --max-depth deep", "result",
                      "result" if r and "result" in r else str(r)))
        await c.send(ok8.replace("[[[[[1]]]]]", "[[[[[[1]]]]]]").replace('"id":3', '"id":4'))
        rpc_ok(await c.null_reply(), -32006, "nesting --max-depth + 1 deep", {"limit": 8})
        await still_serves(c, "limits")
        await c.close()
    finally:
        gw.stop()


async def pings(stack, key):
    gw = Gateway(stack, "gw-ping", ["--ping-interval", "1s", "--idle-timeout", "0"])
    try:
        auth = {"Authorization": "Bearer " + key}
        t0 = time.monotonic()
        mute = await RawWS.connect(gw.port, auth, answer_pings=False)
        good = await RawWS.connect(gw.port, auth, answer_pings=True)
        lib = await Client.connect(gw.ws_url, key, name="lib-pongs")  # the library answers pings
        info, closed = await mute.wait_closed(8)
        code, reason = info or (None, "")
        elapsed = (mute.closed_at or time.monotonic()) - t0
        since_first = (mute.closed_at or 0) - (mute.pings[0] if mute.pings else 0)
        check(closed and code == 1001 and clean_text(reason),
              "a client that never answers pings is closed 1001 (got %s %r)" % (code, reason))
        check(len(mute.pings) == 2, "it was sent exactly 2 pings before the close (%d)"
              % len(mute.pings))
        # Pings and their checks run on the gateway's 1 s sweep: the first
        # ping goes 1-2 intervals after connecting, the close 2 (up to 3 when
        # a sweep lands just short of an interval) after the first ping.
        check(2.0 <= elapsed <= 5.5 and 1.5 <= since_first <= 3.6,
              "closed %.1f intervals after connecting, %.1f after the first ping"
              % (elapsed, since_first))
        TABLE.append(("client never answers pings (--ping-interval 1s)", "close 1001",
                      "close %s after %.1f s" % (code, elapsed)))
        await asyncio.sleep(max(0, 6.5 - (time.monotonic() - t0)))
        gaps = [b - a for a, b in zip(good.pings, good.pings[1:])]
        check(not good.done.done() and len(good.pings) >= 4,
              "a raw client that answers pings stays (%d pings in %.1f s)"
              % (len(good.pings), time.monotonic() - t0))
        check(gaps and all(0.5 <= g <= 2.1 for g in gaps),
              "pings come every ~1 s (gaps %s)" % ["%.2f" % g for g in gaps])
        check(lib.open, "a python3-websockets client (answers pings itself) stays")
        r = await lib.request("session/list", {})  # and it was never initialized: fine
        check(r is not None, "it still gets answers")
        good.abort()
        await lib.close()
    finally:
        gw.stop()


async def idle(stack, key):
    gw = Gateway(stack, "gw-idle", ["--idle-timeout", "2s"])
    try:
        t0 = time.monotonic()
        lazy = await Client.connect(gw.ws_url, key, name="idle")
        await lazy.initialize()
        watcher = await Client.connect(gw.ws_url, key, name="watcher")
        await watcher.initialize()
        await ready_session(watcher, stack.workspace)
        closed = await lazy.wait_closed(6)
        code, reason = closed or (None, "")
        el = time.monotonic() - t0
        check(code == 1001 and "idle" in (reason or "") and clean_text(reason),
              "--idle-timeout 2s: a client with no request and no session is closed "
              "1001 'idle' (got %s %r after %.1f s)" % (code, reason, el))
        check(2.0 <= el <= 4.5, "closed after %.1f s (2 s timeout, 1 s sweep)" % el)
        TABLE.append(("idle client (--idle-timeout 2s)", "close 1001 idle",
                      "close %s after %.1f s" % (code, el)))
        await asyncio.sleep(max(0, 4.5 - (time.monotonic() - t0)))
        check(watcher.open, "a client watching a session is not idle-closed")
        await watcher.close()
    finally:
        gw.stop()


async def origins(stack, key):
    gw = Gateway(stack, "gw-origin", ["--origins", "https://good.example, https://also.example"])
    try:
        for origin, allowed in (("https://good.example", True), ("https://also.example", True),
                                ("https://evil.example", False), (None, True)):
            h = {"Origin": origin} if origin else {}
            c = await Client.connect(gw.ws_url, key, headers=h, name="origin")
            if allowed:
                r = await c.request("initialize", {"protocolVersion": 1})
                check(r and "result" in r, "Origin %s is served" % origin)
            else:
                closed = await c.wait_closed(5)
                code, reason = closed or (None, "")
                check(code == 1008 and clean_text(reason),
                      "Origin %s is closed 1008 (got %s %r)" % (origin, code, reason))
                TABLE.append(("Origin not on --origins", "close 1008", "close %s" % code))
            await c.close()
    finally:
        gw.stop()


async def per_ip(stack, key):
    gw = Gateway(stack, "gw-ip", ["--max-connections-per-ip", "3"])
    try:
        cs = [await Client.connect(gw.ws_url, key, name="ip%d" % i) for i in range(3)]
        for c in cs:
            await c.initialize()
        extra = await Client.connect(gw.ws_url, key, name="ip4")
        closed = await extra.wait_closed(5)
        code, reason = closed or (None, "")
        check(code == 1013 and clean_text(reason),
              "--max-connections-per-ip 3: the 4th connection is closed 1013 (got %s %r)"
              % (code, reason))
        TABLE.append(("N+1th connection from one address", "close 1013", "close %s" % code))
        check(all(c.open for c in cs), "the first 3 stay connected")
        await cs[0].close()
        await asyncio.sleep(0.3)
        again = await Client.connect(gw.ws_url, key, name="ip-again")
        r = await again.request("initialize", {"protocolVersion": 1})
        check(r and "result" in r, "after one closes, a new connection is served")
        for c in cs[1:] + [again]:
            await c.close()
    finally:
        gw.stop()


async def rate(stack, key_x, key_y):
    gw = Gateway(stack, "gw-rate", ["--rate", "1", "--burst", "5"])
    try:
        x = await Client.connect(gw.ws_url, key_x, name="rate-x")
        x2 = await Client.connect(gw.ws_url, key_x, name="rate-x2")
        y = await Client.connect(gw.ws_url, key_y, name="rate-y")
        for c in (x, x2, y):
            await c.initialize()
        oks = 0
        for i in range(5):
            r = await (x if i % 2 else x2).request("session/list", {})
            oks += bool(r and "result" in r)
        check(oks == 5, "--burst 5: the first 5 requests of a key are served (%d)" % oks)
        r = await x.request("session/list", {})
        rpc_ok(r, -32004, "6th request of the key (--rate 1 --burst 5)")
        ra = ((r or {}).get("error") or {}).get("data", {}).get("retryAfterMs")
        check(isinstance(ra, int) and 0 < ra <= 1000, "data.retryAfterMs is given (%r)" % ra)
        r = await x2.request("session/list", {})
        check(r and (r.get("error") or {}).get("code") == -32004,
              "the limit is per key: the key's other connection is limited too")
        r = await y.request("session/list", {})
        check(r and "result" in r, "another key is unaffected")
        await asyncio.sleep(ra / 1000.0 + 0.1 if isinstance(ra, int) else 1.1)
        r = await x.request("session/list", {})
        check(r and "result" in r, "after retryAfterMs the key is served again")
        check(x.open and x2.open, "rate limiting does not close the connection")
        for c in (x, x2, y):
            await c.close()
    finally:
        gw.stop()


async def revoked(stack):
    key, key_id = make_key(stack, "tenant-r")
    other = stack.key("tenant-r")
    gw = Gateway(stack, "gw-revoke", ["--key-cache", "1s"])
    try:
        c = await Client.connect(gw.ws_url, key, name="revoked")
        await c.initialize()
        o = await Client.connect(gw.ws_url, other, name="not-revoked")
        await o.initialize()
        r = await c.request("session/list", {})
        check(r and "result" in r, "the key works before it is revoked")
        out = subprocess.run([stack.keys_bin, "revoke", key_id, "--store-endpoint",
                              stack.svc.ep["store"]], capture_output=True, text=True, timeout=20)
        check(out.returncode == 0, "corral-keys revoke %s" % key_id)
        t0 = time.monotonic()
        closed = await c.wait_closed(6)
        code, reason = closed or (None, "")
        check(code == 1008 and clean_text(reason),
              "--key-cache 1s: a connection whose key is revoked is closed 1008 "
              "(got %s %r after %.1f s)" % (code, reason, time.monotonic() - t0))
        TABLE.append(("key revoked while connected (--key-cache 1s)", "close 1008",
                      "close %s" % code))
        n = await Client.connect(gw.ws_url, key, name="revoked-new")
        await n.send(json.dumps({"jsonrpc": "2.0", "id": "init", "method": "initialize",
                                 "params": {"protocolVersion": 1}}))
        r = await n.request("session/list", {})
        if r is not None:
            rpc_ok(r, -32000, "a revoked key, new connection")
        closed = await n.wait_closed(5)
        check(closed and closed[0] == 1008,
              "a new connection with the revoked key is closed 1008 (%r)" % (closed,))
        r = await o.request("session/list", {})
        check(r and "result" in r, "another key of the same tenant keeps working")
        for x in (n, o):
            await x.close()
    finally:
        gw.stop()


async def sigterm(stack, key):
    gw = Gateway(stack, "gw-term", [])
    cs = []
    for i in range(3):
        c = await Client.connect(gw.ws_url, key, name="term%d" % i)
        await c.initialize()
        cs.append(c)
    await ready_session(cs[0], stack.workspace)  # one watches a session
    raw = await RawWS.connect(gw.port, {"Authorization": "Bearer " + key}, answer_pings=False)
    t0 = time.monotonic()
    gw.proc.send_signal(signal.SIGTERM)
    codes = []
    for c in cs:
        closed = await c.wait_closed(6)
        codes.append(closed[0] if closed else None)
    info, _ = await raw.wait_closed(6)
    codes.append(info[0] if info else None)
    try:
        rc = await asyncio.get_running_loop().run_in_executor(None, gw.proc.wait, 6)
    except subprocess.TimeoutExpired:
        rc = None
    el = time.monotonic() - t0
    check(all(code == 1001 for code in codes),
          "SIGTERM: every client gets close 1001 (got %s)" % codes)
    check(rc == 0 and el < 5.5, "SIGTERM: the gateway exits 0 (rc %s after %.1f s)" % (rc, el))
    TABLE.append(("SIGTERM", "close 1001, exit 0", "close %s, exit %s" % (
        sorted(set(codes)), rc)))
    gw.stop()


async def tls(stack, key):
    cert, pkey = os.path.join(stack.tmp, "cert.pem"), os.path.join(stack.tmp, "key.pem")
    out = subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                          "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1",
                          "-subj", "/CN=localhost", "-addext",
                          "subjectAltName=DNS:localhost,IP:127.0.0.1",
                          "-keyout", pkey, "-out", cert], capture_output=True, timeout=30)
    if not check(out.returncode == 0, "openssl made a self-signed certificate"):
        return
    gw = Gateway(stack, "gw-tls", ["--tls-cert", cert, "--tls-key", pkey], tls=True)
    try:
        ctx = ssl.create_default_context(cafile=cert)
        c = await Client.connect(gw.ws_url, key, name="tls", ssl=ctx)
        await c.initialize()
        r = await c.request("session/list", {})
        check(r and "result" in r, "wss:// with a certificate the client trusts is served")
        check(c.ws.transport.get_extra_info("ssl_object") is not None, "the connection is TLS")
        await c.close()
        try:
            p = await Client.connect(gw.ws_url.replace("wss:", "ws:"), key, name="plain",
                                     open_timeout=3)
            r = await p.request("initialize", {"protocolVersion": 1}, timeout=3)
            check(False, "plain ws:// to the TLS port must fail (got %r)" % r)
        except (Exception, AssertionError) as e:
            check(True, "plain ws:// to the TLS port fails (%s)" % type(e).__name__)
        try:
            u = await Client.connect(gw.ws_url, key, name="untrusted",
                                     ssl=ssl.create_default_context(), open_timeout=3)
            check(False, "an untrusted certificate must be refused by the client")
            await u.close()
        except ssl.SSLError:
            check(True, "a client that does not trust the certificate refuses it")
        TABLE.append(("TLS (--tls-cert/--tls-key), wss:// trusted", "served", "served"))
    finally:
        gw.stop()


# ---------------------------------------------------------------------------

async def run(stack):
    key_a, key_b = stack.key("tenant-a"), stack.key("tenant-b")
    healthy = Healthy(stack, stack.key("tenant-h"))
    await healthy.start()
    # Mid-stream before the first bad input goes out.
    check(await healthy.c.wait_note(lambda n: n.get("params", {}).get("update", {})
                                    .get("sessionUpdate") == "agent_message_chunk"),
          "the healthy client is streaming")
    t0 = time.monotonic()
    notes0 = len(healthy.c.notes)
    await bad_input_table(stack, key_a, key_b)
    notes1, t1 = len(healthy.c.notes), time.monotonic()
    await tenant_isolation(stack, key_a, key_b)
    t_main = time.monotonic()
    check(notes1 > notes0 and not healthy.task.done(),
          "the healthy client kept streaming during the table (%d events in %.1f s)"
          % (notes1 - notes0, t1 - t0))
    print("table and isolation: %.1f s, healthy prompts so far %d" % (
        t_main - t0, len(healthy.answers)), flush=True)
    key_x, key_y = stack.key("tenant-x"), stack.key("tenant-y")
    # The slow, timer-driven checks run side by side on their own gateways.
    results = await asyncio.gather(
        size_and_depth(stack, key_a), pings(stack, key_a), idle(stack, key_a),
        origins(stack, key_a), per_ip(stack, key_a), rate(stack, key_x, key_y),
        revoked(stack), sigterm(stack, key_a), tls(stack, key_a), return_exceptions=True)
    for r in results:
        if isinstance(r, BaseException):
            traceback.print_exception(type(r), r, r.__traceback__)
            check(False, "a hygiene check raised %r" % r)
    await probe_gateway(stack.ws_url, key_a, "main gateway at the end")
    await healthy.finish()
    check(stack.svc.procs["gateway"].poll() is None, "the main gateway is still running")


def main():
    if len(sys.argv) < 2:
        print(__doc__)
        return 2
    start = time.monotonic()
    stack = Stack(sys.argv[1])
    ok = False
    try:
        stack.start(script=SCRIPT, session_args=["--permission-timeout", "60s"])
        asyncio.run(asyncio.wait_for(run(stack), 100))
        ok = not FAILURES
    except BaseException:
        traceback.print_exc()
    finally:
        print("\n%-52s %-22s %s" % ("input", "expected", "observed"))
        for row in TABLE:
            print("%-52s %-22s %s" % row)
        if not ok:
            for name in ("gateway", "session", "worker1"):
                try:
                    print("---- %s log (tail) ----" % name)
                    print(stack.log(name)[-3000:])
                except OSError:
                    pass
        stack.stop()
    print("%s in %.1f s%s" % ("PASS" if ok else "FAIL", time.monotonic() - start,
                              "" if ok else ": " + "; ".join(FAILURES)), flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
