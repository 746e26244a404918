#!/usr/bin/python3
"""End to end: event streams over the gateway's WebSocket (DESIGN §5, §6).

A whole stack (tests/e2e/corral_stack.py) and clients on Debian's
python3-websockets 10.4 (plus one hand-made raw WebSocket that never reads):

  fan-out    a permission request reaches every attached client; the first
             answer wins; the others get $/cancel_request naming their own
             request id; a client attaching while it is pending gets it after
             its replay, one attaching after it was resolved does not;
  pending    a client that starts watching past the pending request's event
             (attach with afterSeq at the head, session/resume) is still
             asked, with the same params; its answer wins and the others get
             $/cancel_request; attaching again on the same connection (past
             the request, or from just before it) does not ask twice; one
             that detaches gets $/cancel_request for its copy;
  slow       a client that stops reading does not delay the others (their
             per-event latency is measured against a turn with no staller);
             one that pauses catches up from the store, gap-free; one that
             never reads is closed 1008 with a reason after --slow-timeout
             (readable when it reads again), and dropped after a grace if it
             never does;
  order      session/prompt is answered only after this client got every
             event of the turn (checked on every prompt of this file);
  reconnect  _corral/session/attach {afterSeq, epoch} gives exactly the
             missing events then live ones: after a plain disconnect, across
             a SIGKILLed and restarted gateway, across a SIGKILLed and
             restarted corral-session (the turn ends interrupted, the next
             prompt works); attaching again on the same connection keeps
             its running prompt's answer; a wrong epoch or an afterSeq past
             the end gets -32008 (expired, "reload");
  thousand   1 000 clients attached to one session receive identical,
             ordered, gap-free streams of one long turn.

usage: test_ws_streams.py BUILD_DIR [phase ...]
       (phases: fanout pending slow reconnect thousand; default all)
"""
import asyncio
import base64
import hashlib
import json
import os
import resource
import socket
import struct
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from corral_stack import Stack  # noqa: E402

import websockets  # noqa: E402

SESSION_ARGS = ["--permission-timeout", "30s"]
#  Small queues and a short slow timeout make the slow-client cases quick;
#  a high rate limit and per-address cap let one test make many clients.
GW_COMMON = ["--max-connections-per-ip", "5000", "--rate", "100000", "--burst", "100000"]
GW_SMALL = GW_COMMON + ["--queue-frames", "16", "--queue-bytes", "65536",
                        "--slow-timeout", "3s"]
GW_BIG = GW_COMMON  # default queues (4096 frames, 4 MiB), slow timeout 30 s
SLOW_TIMEOUT_MS = 3000
EXPIRED = -32008
UNAVAILABLE = -32011
FANOUT_CLIENTS = 1000


def pieces(n, width):
    """n pieces of exactly width bytes, each naming its index."""
    return "".join(("%06d" % i) + "." * (width - 7) + " " for i in range(n))


SCRIPT = {"rules": [
    {"name": "perm", "match": "write the file",
     "responses": [[{"text": "Writing."},
                    {"tool_call": {"name": "write_file",
                                   "arguments": {"path": "perm.txt", "content": "hi\n"}}}],
                   [{"text": "Done."}]]},
    #  ~1 500 events of ~4 KB frames (6 MB) over ~3.5 s: more than the
    #  kernel's socket buffers (up to 4 MB) hold for a client that stops
    #  reading, so the gateway's own queue fills.  (The worker takes at most
    #  4 MB of text and 8 MB in one message, hence thinking + text.)
    {"name": "big", "match": "big stream", "chunk_delay_ms": 2,
     "responses": [[{"thinking": pieces(750, 4000), "chunks": 750},
                    {"text": pieces(750, 4000), "chunks": 750}]]},
    #  ~400 events for the 1 000 clients.
    {"name": "fan", "match": "fan stream", "chunk_delay_ms": 2,
     "responses": [[{"text": pieces(400, 100), "chunks": 400}]]},
    #  ~160 events over ~4 s: time to disconnect, kill and restart mid-turn.
    {"name": "slow", "match": "slow stream", "chunk_delay_ms": 25,
     "responses": [[{"text": pieces(160, 40), "chunks": 160}]]},
    #  ~40 events over ~1 s.
    {"name": "brief", "match": "brief stream", "chunk_delay_ms": 25,
     "responses": [[{"text": pieces(40, 40), "chunks": 40}]]},
    {"name": "default", "match": "*", "responses": [[{"text": "ok"}]]},
]}


class Fail(Exception):
    pass


def check(cond, what):
    if not cond:
        print("FAIL:", what, flush=True)
        raise Fail(what)
    print("ok:", what, flush=True)


def now_ms():
    return time.time() * 1000.0


def pct(values, p):
    if not values:
        return 0.0
    v = sorted(values)
    return v[min(len(v) - 1, int(len(v) * p / 100.0))]


def contiguous(seqs, first=None):
    """seqs strictly +1 each step (and starting at first when given)."""
    if not seqs:
        return first is None
    if first is not None and seqs[0] != first:
        return False
    return all(b == a + 1 for a, b in zip(seqs, seqs[1:]))


def event_kind(m):
    method = m.get("method")
    p = m.get("params") or {}
    if method == "session/update":
        return p.get("update", {}).get("sessionUpdate")
    if method == "_corral/session/event":
        return p.get("event", {}).get("kind")
    if method == "_corral/session/state":
        return "state:" + str(p.get("state"))
    return method


# ---- a client ---------------------------------------------------------------------


class Conn:
    """One ACP client.  Every frame received is recorded in order in log:
    ("ev", seq, kind, turnId, text) for notifications carrying _meta.seq,
    ("resp", id, msg), ("perm", id, msg) for session/request_permission,
    ("cancel", requestId).  light=True keeps only seqs and a digest of
    (seq, text) (for the 1 000 clients)."""

    def __init__(self, stack, key, name, light=False):
        self.stack, self.key, self.name, self.light = stack, key, name, light
        self.log = []
        self.seqs = []  # one per event (frames of one event share a seq)
        self.digest = hashlib.blake2b()
        self.lat = []  # ms from the event's ts to its arrival here
        self.perms, self.cancels = [], []
        self.responses = {}
        self.closed = None  # (code, reason) once the connection is gone
        self.next_id = 0
        self.changed = asyncio.Event()
        self.go = asyncio.Event()
        self.go.set()
        self.ws = None
        self.task = None
        self.last_seq_frame = None

    async def open(self, rcvbuf=None, **kw):
        sock = None
        if rcvbuf:
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            sock.setblocking(False)
            await asyncio.get_event_loop().sock_connect(sock, ("127.0.0.1", self.stack.port))
        self.ws = await websockets.connect(
            self.stack.ws_url, extra_headers={"Authorization": "Bearer " + self.key},
            max_size=None, compression=None, ping_interval=None, open_timeout=60,
            close_timeout=2, sock=sock, **kw)
        self.task = asyncio.ensure_future(self._reader())
        return self

    async def _reader(self):
        try:
            while True:
                if not self.go.is_set():
                    await self.go.wait()
                text = await self.ws.recv()
                self._on(text, now_ms())
        except websockets.ConnectionClosed as e:
            self.closed = (e.code, e.reason)
        except asyncio.CancelledError:
            pass
        finally:
            self.changed.set()

    def _on(self, text, t):
        m = json.loads(text)
        method = m.get("method")
        if method is None:
            self.responses[m.get("id")] = m
            self.log.append(("resp", m.get("id"), m))
        elif "id" in m:
            if method == "session/request_permission":
                self.perms.append(m)
            self.log.append(("perm", m["id"], m))
        else:
            meta = (m.get("params") or {}).get("_meta") or {}
            if "seq" in meta:
                seq = meta["seq"]
                if self.last_seq_frame != seq:
                    self.seqs.append(seq)
                    self.last_seq_frame = seq
                self.digest.update(b"%d\n" % seq + text.encode() + b"\n")
                self.lat.append(t - meta.get("ts", t))
                if self.light:
                    kind = "turn_ended" if '"turn_ended"' in text else ""
                    self.log.append(("ev", seq, kind, None, None))
                else:
                    self.log.append(("ev", seq, event_kind(m), meta.get("turnId"), text))
            elif method == "$/cancel_request":
                rid = (m.get("params") or {}).get("requestId")
                self.cancels.append(rid)
                self.log.append(("cancel", rid))
            else:
                self.log.append(("note", method, m))
        self.changed.set()

    # -- requests

    def send_req(self, method, params):
        self.next_id += 1
        rid = self.next_id
        asyncio.ensure_future(self.ws.send(json.dumps(
            {"jsonrpc": "2.0", "id": rid, "method": method, "params": params})))
        return rid

    async def call(self, method, params, timeout=20):
        rid = self.send_req(method, params)
        return await self.response(rid, timeout, method)

    async def response(self, rid, timeout=20, what="a response"):
        await self.until(lambda: rid in self.responses, timeout,
                         "%s: %s (id %s)" % (self.name, what, rid))
        return self.responses[rid]

    async def send_raw(self, obj):
        await self.ws.send(json.dumps(obj))

    async def until(self, pred, timeout, what):
        loop = asyncio.get_event_loop()
        deadline = loop.time() + timeout
        while not pred():
            if self.closed is not None and not pred():
                raise Fail("%s: connection closed %s while waiting for %s"
                           % (self.name, self.closed, what))
            left = deadline - loop.time()
            if left <= 0:
                raise Fail("%s: timed out waiting for %s" % (self.name, what))
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), min(left, 1.0))
            except asyncio.TimeoutError:
                pass

    async def close(self):
        if self.ws:
            await self.ws.close()
        if self.task:
            try:
                await asyncio.wait_for(self.task, 5)
            except asyncio.TimeoutError:
                self.task.cancel()

    # -- what it saw

    def events(self):
        return [e for e in self.log if e[0] == "ev"]

    def event_texts(self):
        return [(e[1], e[4]) for e in self.log if e[0] == "ev"]

    def turn_of(self, prompt_text):
        for e in self.events():
            if e[2] == "user_message_chunk" and prompt_text in (e[4] or ""):
                return e[3]
        return None

    def ended(self, turn):
        for e in self.events():
            if e[2] == "turn_ended" and e[3] == turn:
                return e
        return None

    def index(self, pred):
        for i, e in enumerate(self.log):
            if pred(e):
                return i
        return -1

    # -- conveniences

    async def init(self):
        r = await self.call("initialize", {"protocolVersion": 1,
                                           "clientCapabilities": {}})
        assert "result" in r, r
        return self

    async def new_session(self, mode=None):
        params = {"cwd": self.stack.workspace, "mcpServers": []}
        if mode:
            params["_meta"] = {"mode": mode}
        deadline = time.time() + 15
        while True:  # the session service may still be starting
            r = await self.call("session/new", params)
            if "result" in r or r["error"]["code"] != UNAVAILABLE or time.time() > deadline:
                break
            await asyncio.sleep(0.2)
        assert "result" in r, r
        return r["result"]["sessionId"], r["result"]["_meta"]["epoch"]

    async def attach(self, sid, after=0, epoch=None, timeout=30):
        params = {"sessionId": sid, "afterSeq": after}
        if epoch:
            params["epoch"] = epoch
        deadline = time.time() + timeout
        while True:  # a gateway just started may not know the store's epoch yet
            r = await self.call("_corral/session/attach", params, timeout)
            if r.get("error", {}).get("code") != UNAVAILABLE or time.time() > deadline:
                return r
            await asyncio.sleep(0.2)


async def client(stack, key, name, sid=None, after=0, **kw):
    c = await Conn(stack, key, name).open(**kw)
    await c.init()
    if sid:
        r = await c.attach(sid, after)
        assert "result" in r, r
    return c


async def settle(*clients, quiet_s=0.3, timeout=10):
    """Wait until the clients have seen the same last seq, and nothing more
    for quiet_s; return it.  (An attach answer may come before events the
    session service published just before it.)"""
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        ends = {c.seqs[-1] if c.seqs else 0 for c in clients}
        if len(ends) == 1 and ends != {0}:
            if last == ends:
                return ends.pop()
            last = ends
        else:
            last = None
        await asyncio.sleep(quiet_s)
    raise Fail("the clients' streams did not settle: %s"
               % [(c.name, c.seqs[-1:]) for c in clients])


async def prompt(c, sid, text, timeout=60, idem=None):
    """Prompt and check the answer came after this client got every event of
    the turn.  Returns (response, turn id, seq of turn_ended)."""
    params = {"sessionId": sid, "prompt": [{"type": "text", "text": text}]}
    if idem:
        params["_meta"] = {"idempotencyKey": idem}
    rid = c.send_req("session/prompt", params)
    r = await c.response(rid, timeout, "session/prompt %r" % text)
    return r, check_prompt_order(c, rid, text)


def check_prompt_order(c, rid, text, quiet=False):
    at = c.index(lambda e: e[0] == "resp" and e[1] == rid)
    before = [e for e in c.log[:at] if e[0] == "ev"]
    turn = None
    for e in before:
        if e[2] == "user_message_chunk" and text in (e[4] or ""):
            turn = e[3]
    ended = [e for e in before if e[2] == "turn_ended" and e[3] == turn]
    seqs = []
    for e in before:
        if not seqs or seqs[-1] != e[1]:
            seqs.append(e[1])
    ok = turn is not None and len(ended) == 1 and contiguous(seqs)
    msg = "%s: the answer to %r came after its turn's turn_ended (seq %s) and every " \
          "event before it" % (c.name, text, ended[0][1] if ended else None)
    if quiet:
        if not ok:
            check(False, msg)
    else:
        check(ok, msg)
    return turn, ended[0][1]


def same_stream(a, b, upto=None):
    ea = [x for x in a.event_texts() if upto is None or x[0] <= upto]
    eb = [x for x in b.event_texts() if upto is None or x[0] <= upto]
    return ea == eb


# ---- a raw WebSocket that never reads -----------------------------------------------


class RawWS:
    """A hand-made WebSocket client over a blocking socket with a tiny receive
    buffer: it sends what it is told and reads nothing until read_all()."""

    def __init__(self, port, key, rcvbuf=4096):
        self.s = socket.socket()
        self.s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.s.settimeout(10)
        self.s.connect(("127.0.0.1", port))
        nonce = base64.b64encode(os.urandom(16)).decode()
        self.s.sendall(("GET /acp HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
                        "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                        "Sec-WebSocket-Version: 13\r\nAuthorization: Bearer %s\r\n\r\n"
                        % (port, nonce, key)).encode())
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = self.s.recv(4096)
            if not chunk:
                raise Fail("raw client: handshake cut")
            buf += chunk
        head, self.buf = buf.split(b"\r\n\r\n", 1)
        if b" 101 " not in head.split(b"\r\n")[0]:
            raise Fail("raw client: handshake refused: %r" % head[:200])
        self.port = self.s.getsockname()[1]
        self.next_id = 0

    def send(self, method, params):
        self.next_id += 1
        data = json.dumps({"jsonrpc": "2.0", "id": self.next_id, "method": method,
                           "params": params}).encode()
        mask = os.urandom(4)
        n = len(data)
        if n < 126:
            head = struct.pack("!BB", 0x81, 0x80 | n)
        elif n < 65536:
            head = struct.pack("!BBH", 0x81, 0x80 | 126, n)
        else:
            head = struct.pack("!BBQ", 0x81, 0x80 | 127, n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
        self.s.sendall(head + mask + masked)

    def read_all(self, timeout=20):
        """Read until the close frame or EOF: (texts, close code, reason)."""
        self.s.settimeout(timeout)
        buf = self.buf
        texts, code, reason = [], None, None
        eof = False
        while True:
            #  parse what we have
            while len(buf) >= 2:
                b0, b1 = buf[0], buf[1]
                n, off = b1 & 0x7F, 2
                if n == 126:
                    if len(buf) < 4:
                        break
                    n, off = struct.unpack("!H", buf[2:4])[0], 4
                elif n == 127:
                    if len(buf) < 10:
                        break
                    n, off = struct.unpack("!Q", buf[2:10])[0], 10
                if len(buf) < off + n:
                    break
                payload, buf = buf[off:off + n], buf[off + n:]
                op = b0 & 0x0F
                if op == 1:
                    texts.append(payload.decode())
                elif op == 8:
                    if len(payload) >= 2:
                        code = struct.unpack("!H", payload[:2])[0]
                        reason = payload[2:].decode(errors="replace")
                    return texts, code, reason
            if eof:
                return texts, code, reason
            try:
                chunk = self.s.recv(65536)
            except (socket.timeout, ConnectionError):
                chunk = b""
            if not chunk:
                eof = True
            buf += chunk

    def close(self):
        self.s.close()


def proc_cpu(pid):
    """CPU seconds (user + system) a process has used."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tx_queue(server_port, client_port):
    """Bytes in the kernel's send queue of the server's socket to a client."""
    local, peer = ":%04X" % server_port, ":%04X" % client_port
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                cols = line.split()
                if cols[1].endswith(local) and cols[2].endswith(peer):
                    return int(cols[4].split(":")[0], 16)
    return 0


def server_holds(stack, client_port):
    """True when the gateway process still owns the socket of this client."""
    pid = stack.svc.procs["gateway"].pid
    inodes = set()
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            link = os.readlink("/proc/%d/fd/%s" % (pid, fd))
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    want = ":%04X" % client_port  # the peer's port (IPv4 or v4-mapped IPv6)
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                cols = line.split()
                if cols[2].endswith(want) and cols[9] in inodes:
                    return True
    return False


# ---- phases -------------------------------------------------------------------------


async def phase_fanout(st, key):
    print("== permission fan-out", flush=True)
    a = await Conn(st, key, "A").open()
    await a.init()
    sid, epoch = await a.new_session(mode="ask")
    b = await client(st, key, "B", sid)
    c = await client(st, key, "C", sid)
    text = "please write the file now"
    rid = a.send_req("session/prompt", {"sessionId": sid,
                                        "prompt": [{"type": "text", "text": text}]})
    for x in (a, b, c):
        await x.until(lambda: len(x.perms) == 1, 20, "a permission request")
    tool = {x.name: x.perms[0]["params"]["toolCall"]["toolCallId"] for x in (a, b, c)}
    check(len(set(tool.values())) == 1 and all(x.perms[0]["params"]["sessionId"] == sid
                                                for x in (a, b, c)),
          "the permission request reached all 3 attached clients as "
          "session/request_permission")
    check(len({x.perms[0]["id"] for x in (a, b, c)}) >= 1 and
          all(x.index(lambda e: e[0] == "ev" and e[2] == "permission_request") <
              x.index(lambda e: e[0] == "perm") for x in (a, b, c)),
          "each got it after the permission_request event of its stream")

    #  A 4th client attaching while it is pending.
    d = await Conn(st, key, "D").open()
    await d.init()
    att = d.send_req("_corral/session/attach", {"sessionId": sid, "afterSeq": 0})
    await d.until(lambda: len(d.perms) == 1, 20, "the pending request after the replay")
    i_resp = d.index(lambda e: e[0] == "resp" and e[1] == att)
    i_perm = d.index(lambda e: e[0] == "perm")
    i_req_ev = d.index(lambda e: e[0] == "ev" and e[2] == "permission_request")
    check(0 <= i_req_ev < i_perm and 0 <= i_resp < i_perm and
          contiguous([e[1] for e in d.events()], 1),
          "a client attaching while it is pending gets it after its replay (replay 1..%d, "
          "attach answer, then session/request_permission)" % d.events()[-1][1])

    #  B answers first.
    allow = [o["optionId"] for o in b.perms[0]["params"]["options"]
             if o["kind"] == "allow_once"][0]
    await b.send_raw({"jsonrpc": "2.0", "id": b.perms[0]["id"],
                      "result": {"outcome": {"outcome": "selected", "optionId": allow}}})
    for x in (a, c, d):
        await x.until(lambda: len(x.cancels) == 1, 20, "$/cancel_request")
    check(all(x.cancels == [x.perms[0]["id"]] for x in (a, c, d)),
          "the other clients got $/cancel_request naming their own request id (%s)"
          % ", ".join("%s:%s" % (x.name, x.cancels[0]) for x in (a, c, d)))
    #  A late answer from C (to its withdrawn request) changes nothing.
    reject = [o["optionId"] for o in c.perms[0]["params"]["options"]
              if o["kind"] == "reject_once"][0]
    await c.send_raw({"jsonrpc": "2.0", "id": c.perms[0]["id"],
                      "result": {"outcome": {"outcome": "selected", "optionId": reject}}})
    r = await a.response(rid, 30, "the prompt")
    check(r.get("result", {}).get("stopReason") == "end_turn", "the turn ended end_turn")
    turn, end_seq = check_prompt_order(a, rid, text)
    for x in (b, c, d):
        await x.until(lambda: x.ended(turn), 20, "turn_ended")
    check(b.cancels == [], "the client that answered got no $/cancel_request")
    resolved = [e for e in a.events() if e[2] == "permission_resolved"]
    check(len(resolved) == 1 and json.loads(resolved[0][4])["params"]["event"]
          .get("optionId") == allow, "one resolution: the first answer (%s) won" % allow)
    check(os.path.exists(os.path.join(st.workspace, "perm.txt")),
          "and the approved write happened")
    check(all(same_stream(a, x, end_seq) for x in (b, c, d)),
          "A, B, C and D saw identical streams 1..%d" % end_seq)

    #  A client attaching after it was resolved does not get it.
    e = await client(st, key, "E", sid)
    await asyncio.sleep(0.5)
    check(e.perms == [] and same_stream(a, e, end_seq) and e.seqs[-1] >= end_seq,
          "a client attaching after the resolution replays it and gets no request")

    #  Two answers at the same moment (B rejects, C allows): one wins.
    os.unlink(os.path.join(st.workspace, "perm.txt"))
    text2 = "write the file again"
    rid2 = a.send_req("session/prompt", {"sessionId": sid,
                                         "prompt": [{"type": "text", "text": text2}]})
    for x in (a, b, c, d, e):
        await x.until(lambda: len(x.perms) == (2 if x is not e else 1), 20,
                      "the second permission request")
    breject = [o["optionId"] for o in b.perms[1]["params"]["options"]
               if o["kind"] == "reject_once"][0]
    callow = [o["optionId"] for o in c.perms[1]["params"]["options"]
              if o["kind"] == "allow_once"][0]
    await asyncio.gather(
        b.send_raw({"jsonrpc": "2.0", "id": b.perms[1]["id"],
                    "result": {"outcome": {"outcome": "selected", "optionId": breject}}}),
        c.send_raw({"jsonrpc": "2.0", "id": c.perms[1]["id"],
                    "result": {"outcome": {"outcome": "selected", "optionId": callow}}}))
    r2 = await a.response(rid2, 30, "the second prompt")
    check("result" in r2, "the second turn ended (%s)" % r2.get("result"))
    turn2, end2 = check_prompt_order(a, rid2, text2)
    for x in (b, c, d, e):
        await x.until(lambda: x.ended(turn2), 20, "turn_ended")
    res2 = [ev for ev in a.events() if ev[2] == "permission_resolved"]
    won = json.loads(res2[-1][4])["params"]["event"].get("optionId") if res2 else None
    written = os.path.exists(os.path.join(st.workspace, "perm.txt"))
    check(len(res2) == 2 and won in (breject, callow) and written == (won == callow),
          "two answers sent at once: one resolution (%s), and the write %s accordingly"
          % (won, "happened" if written else "did not happen"))
    winner, loser = (b, c) if won == breject else (c, b)
    check(a.cancels[1:] == [a.perms[1]["id"]] and d.cancels[1:] == [d.perms[1]["id"]] and
          e.cancels == [e.perms[0]["id"]] and winner.perms[1]["id"] not in winner.cancels
          and len(loser.cancels) <= 2,
          "those who did not answer got $/cancel_request, the winner did not (%s)"
          % "; ".join("%s: asked %s, withdrawn %s" % (x.name, [m["id"] for m in x.perms],
                                                       x.cancels) for x in (a, b, c, d, e)))
    check(all(same_stream(a, x, end2) for x in (b, c, d, e)) and
          all(contiguous(x.seqs, 1) for x in (a, b, c, d, e)),
          "all five streams identical and gap-free 1..%d" % end2)
    for x in (a, b, c, d, e):
        await x.close()


async def phase_pending(st, key):
    print("== a pending permission request, watched from past its event", flush=True)
    path = os.path.join(st.workspace, "perm.txt")
    if os.path.exists(path):
        os.unlink(path)
    a = await Conn(st, key, "A").open()
    await a.init()
    sid, epoch = await a.new_session(mode="ask")
    c = await client(st, key, "C", sid)
    text = "please write the file now"
    rid = a.send_req("session/prompt", {"sessionId": sid,
                                        "prompt": [{"type": "text", "text": text}]})
    for x in (a, c):
        await x.until(lambda: len(x.perms) == 1, 20, "a permission request")
    req_seq = [e[1] for e in a.events() if e[2] == "permission_request"][0]
    head = await settle(a, c)
    check(head >= req_seq, "the request's event is seq %d, the head %d" % (req_seq, head))

    #  B attaches at the head: nothing to replay, the request is behind it.
    b = await Conn(st, key, "B").open()
    await b.init()
    att = b.send_req("_corral/session/attach",
                     {"sessionId": sid, "afterSeq": head, "epoch": epoch})
    await b.until(lambda: len(b.perms) == 1, 20,
                  "the pending request, though attached past its event")
    r = await b.response(att, 20, "the attach answer")
    check(r.get("result", {}).get("lastSeq", -1) >= head and
          all(e[1] > head for e in b.events()) and
          not any(e[2] == "permission_request" for e in b.events()),
          "B attached with afterSeq %d (past the request's event, seq %d) and replayed "
          "nothing of it" % (head, req_seq))
    check(b.perms[0]["params"] == a.perms[0]["params"],
          "B was asked with the same params as A (options %s)"
          % [o["optionId"] for o in b.perms[0]["params"]["options"]])

    #  D resumes the session (watching from now on, no replay): asked too.
    d = await Conn(st, key, "D").open()
    await d.init()
    r = await d.call("session/resume", {"sessionId": sid, "cwd": st.workspace})
    check("result" in r, "session/resume of the waiting session answered (%s)"
          % r.get("error", "ok"))
    await d.until(lambda: len(d.perms) == 1, 20, "the pending request after session/resume")
    check(d.perms[0]["params"] == a.perms[0]["params"], "D (session/resume) was asked too")
    #  ... and detaches: no answer from it would count now, so it is withdrawn.
    r = await d.call("_corral/session/detach", {"sessionId": sid})
    await d.until(lambda: len(d.cancels) == 1, 20, "$/cancel_request after detaching")
    check("result" in r and d.cancels == [d.perms[0]["id"]],
          "D detached and got $/cancel_request for the request it was asked")

    #  C attaches again on the same connection, past the request and then
    #  from just before it (the web page's way): not asked again.
    first_id = c.perms[0]["id"]
    for after in (head, req_seq - 1):
        c_from = len(c.log)  # what the last attach replays starts here
        r = await c.attach(sid, after, epoch)
        check("result" in r, "C attached again with afterSeq %d (%s)"
              % (after, r.get("error", "ok")))
    await settle(a, c)
    await asyncio.sleep(0.5)
    check(len(c.perms) == 1 and c.cancels == [],
          "C, attaching twice more on the same connection, was asked once (%s) and "
          "nothing was withdrawn (%s)" % ([m["id"] for m in c.perms], c.cancels))

    #  B answers: its answer wins, everyone else's copy is withdrawn.
    allow = [o["optionId"] for o in b.perms[0]["params"]["options"]
             if o["kind"] == "allow_once"][0]
    await b.send_raw({"jsonrpc": "2.0", "id": b.perms[0]["id"],
                      "result": {"outcome": {"outcome": "selected", "optionId": allow}}})
    for x in (a, c):
        await x.until(lambda: len(x.cancels) >= 1, 20, "$/cancel_request")
    r = await a.response(rid, 30, "the prompt")
    check(r.get("result", {}).get("stopReason") == "end_turn", "the turn ended end_turn")
    turn, end_seq = check_prompt_order(a, rid, text)
    for x in (b, c):
        await x.until(lambda: x.ended(turn), 20, "turn_ended")
    check(a.cancels == [a.perms[0]["id"]] and c.cancels == [first_id] and
          b.cancels == [] and len(d.cancels) == 1,
          "A and C got $/cancel_request naming their own request id, C its first "
          "one; B (who answered) got none, D (detached) nothing more")
    resolved = [e for e in a.events() if e[2] == "permission_resolved"]
    check(len(resolved) == 1 and json.loads(resolved[0][4])["params"]["event"]
          .get("optionId") == allow, "one resolution: B's answer (%s)" % allow)
    check(os.path.exists(path), "and the approved write happened")
    def frames(x, lo, since=0):
        return [(e[1], e[4]) for e in x.log[since:]
                if e[0] == "ev" and lo <= e[1] <= end_seq]
    check(contiguous(a.seqs, 1) and frames(b, head + 1) == frames(a, head + 1) and
          frames(c, req_seq, c_from) == frames(a, req_seq),
          "B saw exactly A's events %d..%d, C (after attaching from %d) A's events "
          "%d..%d" % (head + 1, end_seq, req_seq - 1, req_seq, end_seq))

    #  Once more: C attaches again past the new request, then answers the id
    #  it was first asked under; that answer counts.
    os.unlink(path)
    text2 = "write the file again"
    rid2 = a.send_req("session/prompt", {"sessionId": sid,
                                         "prompt": [{"type": "text", "text": text2}]})
    for x in (a, b, c):
        await x.until(lambda: len(x.perms) == 2, 20, "the second permission request")
    head2 = await settle(a, b, c)
    r = await c.attach(sid, head2, epoch)
    check("result" in r, "C attached again with afterSeq %d" % head2)
    await asyncio.sleep(0.5)
    allow = [o["optionId"] for o in c.perms[1]["params"]["options"]
             if o["kind"] == "allow_once"][0]
    await c.send_raw({"jsonrpc": "2.0", "id": c.perms[1]["id"],
                      "result": {"outcome": {"outcome": "selected", "optionId": allow}}})
    r = await a.response(rid2, 30, "the second prompt")
    check(r.get("result", {}).get("stopReason") == "end_turn" and len(c.perms) == 2 and
          os.path.exists(path) and len(c.cancels) == 1 and len(a.cancels) == 2 and
          len(b.cancels) == 1,
          "C, asked once and attached again on the same connection, answered under its "
          "first id: that answer won (the write happened), A and B got $/cancel_request")
    for x in (a, b, c, d):
        await x.close()


# ---- the healthy clients of the slow-client phase, in their own process --------------
#
#  Their latency must not include the time this process spends reading the
#  slow clients' backlog (one asyncio loop, one core), so they run apart:
#  test_ws_streams.py --probe URL KEY SESSION AFTER MARK N attaches N clients
#  after seq AFTER, prints "ready", and once each has the turn_ended of the
#  turn whose prompt contains MARK prints one JSON line about what they got.


class Remote:
    def __init__(self, url):
        self.ws_url = url
        self.port = int(url.rsplit(":", 1)[1].split("/")[0])


def digest_after(pairs, after):
    d = hashlib.blake2b()
    for seq, text in pairs:
        if seq > after:
            d.update(b"%d\n" % seq + text.encode() + b"\n")
    return d.hexdigest()


async def probe_main(url, key, sid, after, mark, n):
    target = Remote(url)
    cs = []
    for i in range(n):
        c = await Conn(target, key, "probe%d" % i).open()
        await c.init()
        r = await c.attach(sid, after)
        assert "result" in r, r
        cs.append(c)
    print("ready", flush=True)
    done = {}
    for c in cs:
        await c.until(lambda: c.turn_of(mark) and c.ended(c.turn_of(mark)), 120, "turn_ended")
        done[c.name] = time.time()
    out = []
    for c in cs:
        turn = c.turn_of(mark)
        lat = [v for e, v in zip(c.events(), c.lat) if e[3] == turn]
        out.append({"name": c.name, "lat": lat, "seqs": [c.seqs[0], c.seqs[-1]],
                    "contiguous": contiguous(c.seqs, after + 1),
                    "digest": digest_after(c.event_texts(), after),
                    "done": done[c.name], "closed": c.closed})
    print(json.dumps(out), flush=True)
    for c in cs:
        await c.close()


async def start_probe(st, key, sid, after, mark, n=2):
    proc = await asyncio.create_subprocess_exec(
        sys.executable, os.path.abspath(__file__), "--probe", st.ws_url, key, sid,
        str(after), mark, str(n), stdout=asyncio.subprocess.PIPE)
    line = await asyncio.wait_for(proc.stdout.readline(), 60)
    if line.strip() != b"ready":
        raise Fail("the probe process did not start: %r" % line)
    return proc


async def probe_result(proc):
    line = await asyncio.wait_for(proc.stdout.readline(), 180)
    await proc.wait()
    if not line:
        raise Fail("the probe process ended without a result")
    return json.loads(line)


async def phase_slow(st, key):
    print("== slow clients", flush=True)
    #  Baseline: a turn with two healthy clients (in the probe) and nobody
    #  stalled.  (One big turn per session: the worker caps a conversation
    #  message at 8 MB.)
    b1 = await Conn(st, key, "B1").open()
    await b1.init()
    bsid, _ = await b1.new_session(mode="auto")
    bafter = await settle(b1)
    probe = await start_probe(st, key, bsid, bafter, "big stream one")
    t0 = time.time()
    r, (bturn, bend) = await prompt(b1, bsid, "big stream one", timeout=60)
    check(r.get("result", {}).get("stopReason") == "end_turn",
          "a 6 MB turn streams whole (%s)" % r.get("result", r.get("error")))
    res = await probe_result(probe)
    base_s = max(x["done"] for x in res) - t0
    base = [v for x in res for v in x["lat"]]
    print("   baseline turn: %d events, healthy clients done in %.2f s; latency p50 %.1f "
          "p99 %.1f max %.1f ms" % (bend - bafter, base_s, pct(base, 50), pct(base, 99),
                                    max(base)), flush=True)
    await b1.close()

    #  The same with stallers.
    h1 = await Conn(st, key, "H1").open()
    await h1.init()
    sid, epoch = await h1.new_session(mode="auto")
    end1 = await settle(h1)
    text = "big stream two"
    probe = await start_probe(st, key, sid, end1, text)

    #  R1 and R1b never read.  R2 prompts, then stops reading until it is
    #  provably behind more than the kernel's buffers and the gateway's
    #  queue hold (so the gateway must take it off the live stream and catch
    #  it up from the ring or the store), then reads again, well before
    #  --slow-timeout.
    r1, r1b = RawWS(st.port, key), RawWS(st.port, key)
    for r in (r1, r1b):
        r.send("initialize", {"protocolVersion": 1})
        r.send("_corral/session/attach", {"sessionId": sid, "afterSeq": end1})
    r2 = await Conn(st, key, "R2").open(rcvbuf=4096, max_queue=1, read_limit=4096)
    await r2.init()
    await r2.attach(sid, end1)
    t0 = time.time()
    rid = r2.send_req("session/prompt", {"sessionId": sid,
                                         "prompt": [{"type": "text", "text": text}]})
    await r2.until(lambda: len(r2.events()) >= 20, 20, "the turn to start")
    r2.go.clear()
    pause_at = time.time()
    r2_port = r2.ws.transport.get_extra_info("sockname")[1]

    def overflowed():
        """What the gateway produced for R2 beyond what R2 took exceeds the
        kernel's send queue plus twice the gateway's queue limit: R2's
        watch had to leave the live stream.  One snapshot: the kernel's
        queue keeps growing while the gateway flushes into it, so both
        figures must be read together."""
        seen = r2.seqs[-1]
        ahead = sum(len(e[4]) for e in h1.events() if e[1] > seen)
        kernel = tx_queue(st.port, r2_port)
        return ahead > kernel + 2 * 65536 + 16384, ahead, kernel

    snap = overflowed()
    while not snap[0] and time.time() - pause_at < 30:
        await asyncio.sleep(0.05)
        snap = overflowed()
    _, lag_bytes, kernel_bytes = snap
    r2.go.set()
    paused_s = time.time() - pause_at
    check(lag_bytes > kernel_bytes + 2 * 65536,
          "R2 stopped reading until it was %d bytes behind: more than the kernel held for "
          "it (%d) plus the gateway's queue" % (lag_bytes, kernel_bytes))
    res = await probe_result(probe)
    healthy_s = max(x["done"] for x in res) - t0
    lat = [v for x in res for v in x["lat"]]
    turn2 = h1.turn_of(text)
    await h1.until(lambda: h1.ended(turn2), 30, "turn_ended")
    end2 = h1.ended(turn2)[1]
    print("   turn with stallers: %d events, healthy clients done in %.2f s; latency p50 "
          "%.1f p99 %.1f max %.1f ms" % (end2 - end1, healthy_s, pct(lat, 50), pct(lat, 99),
                                         max(lat)), flush=True)
    #  Generous bounds, as the machine may be busy with other work: a stall
    #  that leaked onto the others would hold them up until the staller is
    #  closed, --slow-timeout (3 s) or more.
    check(pct(lat, 99) < max(1000.0, 5 * pct(base, 99)) and max(lat) < 0.6 * SLOW_TIMEOUT_MS,
          "a client that stops reading does not delay the others (p99 %.1f ms vs %.1f ms "
          "with nobody stalled)" % (pct(lat, 99), pct(base, 99)))
    check(healthy_s < base_s * 2 + 2.0,
          "and they finish on time (%.2f s vs %.2f s)" % (healthy_s, base_s))
    want = digest_after(h1.event_texts(), end1)
    check(all(x["contiguous"] and x["seqs"] == [end1 + 1, end2] and x["digest"] == want and
              x["closed"] is None for x in res),
          "the healthy streams are gap-free (%d..%d) and identical to the prompting "
          "client's" % (end1 + 1, end2))

    r = await r2.response(rid, 60, "the prompt of the paused client")
    check(r2.closed is None and "result" in r,
          "the prompting client that stopped reading for %.1f s is still connected and was "
          "answered (%s)" % (paused_s, r.get("error")))
    check_prompt_order(r2, rid, text)
    check(contiguous(r2.seqs, end1 + 1) and r2.seqs[-1] == end2 and
          r2.event_texts() == [x for x in h1.event_texts() if x[0] > end1],
          "it caught up gap-free: %d..%d, identical to the others" % (end1 + 1, end2))

    def too_slow():
        return [ln for ln in st.log("gateway").splitlines()
                if "closing connection" in ln and "1008" in ln and "too slow" in ln]

    deadline = time.time() + SLOW_TIMEOUT_MS / 1000.0 + 10
    while len(too_slow()) < 2 and time.time() < deadline:
        await asyncio.sleep(0.1)
    closing = too_slow()
    t_closed = time.time()
    held_at_close = server_holds(st, r1b.port)
    check(len(closing) == 2 and r2.closed is None,
          "the gateway closed the two clients that never read for being too slow, and "
          "only them: %s" % (json.loads(closing[-1])["msg"] if closing else None))
    #  R1 reads now: what it was sent, then the close frame.
    await asyncio.sleep(0.5)
    texts, code, reason = r1.read_all()
    seqs = []
    for t in texts:
        m = json.loads(t)
        s = ((m.get("params") or {}).get("_meta") or {}).get("seq")
        if s is not None and (not seqs or seqs[-1] != s):
            seqs.append(s)
    print("   never-reading client, reading after its close: %d frames, seqs %s..%s, "
          "close %s %r" % (len(texts), seqs[0] if seqs else None,
                           seqs[-1] if seqs else None, code, reason), flush=True)
    check(contiguous(seqs, end1 + 1) and seqs[-1] < end2,
          "what it had been sent is a gap-free prefix (%d..%s)"
          % (end1 + 1, seqs[-1] if seqs else None))
    check(code == 1008 and reason and "too slow" in reason,
          "then close 1008 with a clear reason (%r)" % reason)
    r1.close()
    #  R1b never reads: the gateway must not hold its descriptor and queue
    #  forever waiting to write the close frame.
    while server_holds(st, r1b.port) and time.time() - t_closed < SLOW_TIMEOUT_MS / 1000.0 + 5:
        await asyncio.sleep(0.2)
    check(held_at_close and not server_holds(st, r1b.port),
          "a client that never reads again is dropped %.1f s after its close "
          "(--slow-timeout of grace to read the close frame)" % (time.time() - t_closed))
    r1b.close()
    #  Reconnecting with afterSeq gets the rest.
    r3 = await client(st, key, "R1-again")
    await r3.attach(sid, seqs[-1])
    await r3.until(lambda: r3.seqs and r3.seqs[-1] >= end2, 20, "the rest")
    check(contiguous(r3.seqs, seqs[-1] + 1) and r3.seqs[-1] == end2,
          "and reattaching with afterSeq=%d gives exactly %d..%d"
          % (seqs[-1], seqs[-1] + 1, end2))
    for x in (h1, r2, r3):
        await x.close()


async def phase_reconnect(st, key):
    print("== reconnect with afterSeq", flush=True)
    p = await Conn(st, key, "P").open()
    await p.init()
    sid, epoch = await p.new_session(mode="auto")
    c = await client(st, key, "C", sid)

    # -- a plain disconnect
    text = "slow stream one"
    rid = p.send_req("session/prompt", {"sessionId": sid,
                                        "prompt": [{"type": "text", "text": text}]})
    await c.until(lambda: len([e for e in c.events() if e[2] == "agent_message_chunk"]) >= 30,
                  20, "30 chunks")
    await c.close()
    k = c.seqs[-1]
    await asyncio.sleep(0.5)
    c2 = await client(st, key, "C2")
    att = await c2.attach(sid, k, epoch)
    assert "result" in att, att
    head = att["result"]["lastSeq"]
    r = await p.response(rid, 30, "the prompt")
    turn, end = check_prompt_order(p, rid, text)
    await c2.until(lambda: c2.ended(turn), 20, "turn_ended")
    i_att = c2.index(lambda x: x[0] == "resp")
    check(head > k and c2.seqs[0] == k + 1 and contiguous(c2.seqs) and
          c2.seqs[-1] == end and
          c.event_texts() + c2.event_texts() == p.event_texts(),
          "after a disconnect at seq %d, attach afterSeq=%d gave exactly %d..%d, no "
          "duplicate" % (k, k, k + 1, end))
    check(head < end and any(x[0] == "ev" for x in c2.log[i_att + 1:]) and
          all(x[1] <= head for x in c2.log[:i_att] if x[0] == "ev"),
          "the replay (to %d) came before the attach answer, then live events to %d"
          % (head, end))

    # -- the gateway SIGKILLed and restarted mid-turn
    text = "slow stream two"
    idem = "idem-gw-restart"
    rid = p.send_req("session/prompt", {"sessionId": sid, "_meta": {"idempotencyKey": idem},
                                        "prompt": [{"type": "text", "text": text}]})
    await c2.until(lambda: len([e for e in c2.events() if e[2] == "agent_message_chunk"
                                and e[3] == c2.turn_of(text)]) >= 30, 20, "30 chunks")
    st.restart("gateway")
    await c2.until(lambda: c2.closed is not None, 10, "the connection to drop")
    await p.until(lambda: p.closed is not None, 10, "the connection to drop")
    kc, kp = c2.seqs[-1], p.seqs[-1]
    c3 = await client(st, key, "C3")
    att = await c3.attach(sid, kc, epoch)
    check("result" in att, "after the gateway restart, attach with the old epoch and "
          "afterSeq=%d is accepted (%s)" % (kc, att.get("error")))
    p2 = await client(st, key, "P2")
    await p2.attach(sid, kp, epoch)
    #  The prompt sent again with its idempotency key joins the running turn.
    rid2 = p2.send_req("session/prompt", {"sessionId": sid,
                                          "_meta": {"idempotencyKey": idem},
                                          "prompt": [{"type": "text", "text": text}]})
    r = await p2.response(rid2, 30, "the resent prompt")
    turn = c2.turn_of(text)
    await c3.until(lambda: c3.ended(turn), 20, "turn_ended")
    end = c3.ended(turn)[1]
    check(r.get("result", {}).get("stopReason") == "end_turn" and
          p2.index(lambda e: e[0] == "ev" and e[2] == "turn_ended" and e[3] == turn) <
          p2.index(lambda e: e[0] == "resp" and e[1] == rid2),
          "the prompt resent with its idempotency key joined the turn and was answered "
          "after its turn_ended")
    full_c = c.event_texts() + c2.event_texts() + c3.event_texts()
    full_p = p.event_texts() + p2.event_texts()
    check(c3.seqs[0] == kc + 1 and contiguous(c3.seqs) and c3.seqs[-1] == end and
          contiguous(c.seqs + c2.seqs + c3.seqs, 1),
          "across a gateway restart: attach afterSeq=%d gave exactly %d..%d"
          % (kc, kc + 1, end))
    check(p2.seqs[0] == kp + 1 and contiguous(p.seqs + p2.seqs, 1) and
          [x for x in full_p if x[0] <= end] == [x for x in full_c if x[0] <= end],
          "and the prompting client's whole stream 1..%d is the same, no duplicate" % end)
    turns = [e for e in c3.events() + c2.events() if e[2] == "user_message_chunk"]
    check(len([e for e in turns if text in (e[4] or "")]) == 1,
          "the resent prompt did not start a second turn")

    # -- corral-session SIGKILLed and restarted mid-turn
    text = "slow stream three"
    rid = p2.send_req("session/prompt", {"sessionId": sid,
                                         "prompt": [{"type": "text", "text": text}]})
    await c3.until(lambda: len([e for e in c3.events() if e[2] == "agent_message_chunk"
                                and e[3] == c3.turn_of(text)]) >= 30, 20, "30 chunks")
    st.restart("session", SESSION_ARGS)
    turn = c3.turn_of(text)
    await c3.until(lambda: c3.ended(turn), 20, "the interrupted turn_ended")
    ev = json.loads(c3.ended(turn)[4])["params"]["event"]
    check(ev.get("stopReason") == "interrupted",
          "after corral-session was killed mid-turn, watchers see the turn end "
          "interrupted (seq %d)" % c3.ended(turn)[1])
    r = await p2.response(rid, 20, "the interrupted prompt")
    check(r.get("error", {}).get("code") == UNAVAILABLE,
          "the prompting client is answered -32011 (%s)" % r.get("error", {}).get("message"))
    check_prompt_order(p2, rid, text)
    t0 = time.time()
    while True:  # the worker re-registers with the new session service
        r, (turn4, end4) = await prompt(p2, sid, "slow stream four %d" % time.time(), 60)
        if "result" in r or time.time() - t0 > 20:
            break
        await asyncio.sleep(0.5)
    check(r.get("result", {}).get("stopReason") == "end_turn",
          "the next prompt works (%s)" % r)
    await c3.until(lambda: c3.ended(turn4), 20, "turn_ended")
    check(contiguous(c.seqs + c2.seqs + c3.seqs, 1) and
          c.event_texts() + c2.event_texts() + c3.event_texts() ==
          p.event_texts() + p2.event_texts() and contiguous(p.seqs + p2.seqs, 1),
          "the stream stayed gap-free and identical on both clients through it all "
          "(1..%d)" % c3.seqs[-1])

    # -- attaching again on the same connection while its prompt runs
    q = await Conn(st, key, "Q").open()
    await q.init()
    qsid, _ = await q.new_session(mode="auto")
    text = "brief stream please"
    rid = q.send_req("session/prompt", {"sessionId": qsid,
                                        "prompt": [{"type": "text", "text": text}]})
    await q.until(lambda: len([e for e in q.events() if e[2] == "agent_message_chunk"]) >= 10,
                  20, "10 chunks")
    await q.attach(qsid, 0)
    r = await q.response(rid, 20, "the prompt after attaching again")
    await asyncio.sleep(0.2)
    answers = [i for i, e in enumerate(q.log) if e[0] == "resp" and e[1] == rid]
    ends = [i for i, e in enumerate(q.log) if e[0] == "ev" and e[2] == "turn_ended"]
    check(r.get("result", {}).get("stopReason") == "end_turn" and len(answers) == 1 and
          ends and ends[-1] < answers[0],
          "a prompt still running when its connection attaches again (afterSeq 0) is "
          "answered once, after its turn_ended")
    await q.close()

    # -- positions that cannot be served
    bad = await c3.attach(sid, 0, "01a00000-0000-7000-8000-000000000000")
    err = bad.get("error", {})
    check(err.get("code") == EXPIRED and (err.get("data") or {}).get("reason") == "expired",
          "attach with another epoch: -32008 expired (%s)" % err.get("message"))
    bad = await c3.attach(sid, end4 + 1000, epoch)
    err = bad.get("error", {})
    check(err.get("code") == EXPIRED and (err.get("data") or {}).get("lastSeq") == end4,
          "attach with afterSeq past the end: -32008 expired with lastSeq (%s)"
          % err.get("message"))
    for x in (p2, c3):
        await x.close()


async def phase_thousand(st, key):
    print("== %d clients on one session" % FANOUT_CLIENTS, flush=True)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = FANOUT_CLIENTS * 2 + 256
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
        soft = min(want, hard)
    check(soft >= FANOUT_CLIENTS + 64, "descriptors for %d clients (limit %d)"
          % (FANOUT_CLIENTS, soft))
    x = await Conn(st, key, "X").open()
    await x.init()
    sid, epoch = await x.new_session(mode="auto")
    t0 = time.time()
    sem = asyncio.Semaphore(100)
    clients = []

    async def one(i):
        async with sem:
            c = await Conn(st, key, "F%d" % i, light=True).open()
            await c.init()
            r = await c.attach(sid, 0, timeout=60)
            assert "result" in r, r
            clients.append(c)

    await asyncio.gather(*(one(i) for i in range(FANOUT_CLIENTS)))
    t_attach = time.time() - t0
    check(len(clients) == FANOUT_CLIENTS, "%d clients attached in %.1f s"
          % (FANOUT_CLIENTS, t_attach))
    t1 = time.time()
    cpu0 = proc_cpu(st.svc.procs["gateway"].pid)
    r, (turn, end) = await prompt(x, sid, "fan stream please", timeout=120)
    t_turn = time.time() - t1

    def done(c):
        return c.seqs and c.seqs[-1] >= end

    deadline = time.time() + 60
    for c in clients:
        await c.until(lambda: done(c), max(1.0, deadline - time.time()), "seq %d" % end)
    t_all = time.time() - t1
    cpu = proc_cpu(st.svc.procs["gateway"].pid) - cpu0
    lat = [v for c in clients for v in c.lat if v is not None]
    print("   %d events x %d clients: turn answered in %.2f s, all clients done in %.2f s "
          "(gateway CPU %.2f s; this one Python process reading 1 000 sockets is the "
          "bottleneck); latency p50 %.0f p99 %.0f max %.0f ms"
          % (end, FANOUT_CLIENTS, t_turn, t_all, cpu, pct(lat, 50), pct(lat, 99), max(lat)),
          flush=True)
    want_digest = x.digest.hexdigest()
    bad = [c.name for c in clients if not contiguous(c.seqs, 1) or c.seqs[-1] != end]
    check(not bad, "every client's seqs are exactly 1..%d (bad: %s)" % (end, bad[:5]))
    diff = [c.name for c in clients if c.digest.hexdigest() != want_digest]
    check(not diff, "and every client's (seq, frame text) sequence is identical to the "
          "prompting client's (differ: %s)" % diff[:5])
    check(all(c.closed is None for c in clients), "no client was closed")
    await asyncio.gather(*(c.close() for c in clients + [x]))
    check(time.time() - t0 < 60, "the whole %d-client run took %.1f s"
          % (FANOUT_CLIENTS, time.time() - t0))


async def run(st, phases):
    key = st.key("tenant-streams")
    if "fanout" in phases:
        await phase_fanout(st, key)
    if "pending" in phases:
        await phase_pending(st, key)
    if "slow" in phases:
        await phase_slow(st, key)
    if "reconnect" in phases:
        await phase_reconnect(st, key)
    if "thousand" in phases:
        st.gateway_args = list(GW_BIG)
        st.restart("gateway")
        await phase_thousand(st, key)


def main():
    if len(sys.argv) == 8 and sys.argv[1] == "--probe":
        url, key, sid, after, mark, n = sys.argv[2:]
        asyncio.get_event_loop().run_until_complete(
            probe_main(url, key, sid, int(after), mark, int(n)))
        return 0
    if len(sys.argv) < 2:
        print(__doc__)
        return 2
    phases = sys.argv[2:] or ["fanout", "pending", "slow", "reconnect", "thousand"]
    st = Stack(sys.argv[1])
    rc = 1
    t0 = time.time()
    try:
        st.start(script=SCRIPT, session_args=SESSION_ARGS, gateway_args=GW_SMALL)
        asyncio.get_event_loop().run_until_complete(run(st, phases))
        rc = 0
        print("all passed in %.1f s" % (time.time() - t0), flush=True)
    except Fail as e:
        print("FAIL:", e, flush=True)
    except Exception:
        import traceback
        traceback.print_exc()
    finally:
        if rc:
            for name, proc in st.svc.procs.items():
                print("process %s: %s" % (name, "running" if proc.poll() is None
                                          else "exited %s" % proc.returncode))
            for name in ("gateway", "session", "worker1", "store"):
                try:
                    print("---- %s log (tail) ----" % name)
                    print(st.log(name)[-4000:])
                except OSError:
                    pass
        st.stop()
    return rc


if __name__ == "__main__":
    sys.exit(main())
