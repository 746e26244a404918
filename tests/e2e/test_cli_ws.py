#!/usr/bin/python3
"""End to end: the corral CLI's WebSocket commands (cli/cli_ws.c) against a
whole stack (corral_stack.py), each as a real process:

  tail    `corral tail SID --after N` (JSON lines and the text format)
          prints exactly the stored events after N, then live ones; across
          a SIGKILLed and restarted gateway mid-turn it reconnects and
          resumes: no gap, no duplicate (checked against the REST history
          and a fresh --no-follow replay); --after past the end, an unknown
          session, no key, an unreachable gateway: clear errors and exit
          codes 1, 3, 2, 4; a peer that goes silent (no pong) is dropped
          after CORRAL_WS_PING.
  bridge  `corral acp` edges: 300 pipelined requests all answered once; a
          line that is not JSON gets the gateway's -32700; 64
          messages of 512 KB pass through the bounded queue (stdin paused
          and resumed); the gateway dying ends it with exit 4 and a
          message on stderr, stdout holding only JSON lines.
  tls     wss:// to a second gateway with a self-signed certificate:
          trusted with --ca-file (tail, the bridge), refused without.
  chat    `corral chat` in tmux (send-keys, capture-pane): a prompt
          streams, the permission prompt is answered with y and the file
          appears; Ctrl-C during a long command (sleep 30) cancels the
          turn; a gateway restart mid-answer is survived: reconnected,
          resumed, every piece of the answer shown exactly once; Ctrl-C
          while the gateway is down cancels the turn once reconnected;
          Ctrl-C at the prompt leaves with exit 0.

usage: test_cli_ws.py BUILD_DIR [tail|bridge|tls|chat ...]   (default: all)
"""
import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from corral_stack import Stack  # noqa: E402

import websockets  # noqa: E402

SLOW_PIECES = 120
SCRIPT = {"rules": [
    {"name": "write", "match": "write hello", "chunk_delay_ms": 10,
     "responses": [[{"text": "I will create hello.txt in the workspace.", "chunks": 4},
                    {"tool_call": {"name": "write_file",
                                   "arguments": {"path": "hello.txt", "content": "Hello from corral chat!\n"}}}],
                   [{"text": "hello.txt is written.", "chunks": 3},
                    {"usage": {"input": 420, "output": 17}}]]},
    {"name": "sleepy", "match": "sleep a while",
     "responses": [[{"text": "Running a long command."},
                    {"tool_call": {"name": "run_command", "arguments": {"command": "sleep 30"}}}],
                   [{"text": "It finished."}]]},
    #  120 pieces "p000 " ... "p119 ", one per chunk, 30 ms apart (~3.6 s).
    {"name": "slow", "match": "slow stream", "chunk_delay_ms": 30,
     "responses": [[{"text": "".join("p%03d " % i for i in range(SLOW_PIECES)), "chunks": SLOW_PIECES}]]},
    #  100 pieces "c000 " ... 300 ms apart (30 s): cancelled midway, with
    #  room for a gateway restart and a reconnect on a busy machine.
    {"name": "crawl", "match": "crawl", "chunk_delay_ms": 300,
     "responses": [[{"text": "".join("c%03d " % i for i in range(100)), "chunks": 100}]]},
    {"name": "brief", "match": "brief", "chunk_delay_ms": 5,
     "responses": [[{"text": "A brief answer in ten chunks!!", "chunks": 10}]]},
    {"name": "default", "match": "*", "responses": [[{"text": "ok"}]]},
]}


#  Accepts one WebSocket upgrade, then never says anything (no pong either).
SILENT_SERVER = r"""
import base64, hashlib, socket, time
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen(1)
print(s.getsockname()[1], flush=True)
c, _ = s.accept()
req = b""
while b"\r\n\r\n" not in req:
    req += c.recv(4096)
key = [l.split(b":", 1)[1].strip() for l in req.split(b"\r\n") if l.lower().startswith(b"sec-websocket-key")][0]
acc = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
c.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
          b"Sec-WebSocket-Accept: " + acc + b"\r\n\r\n")
time.sleep(60)
"""


class Fail(Exception):
    pass


def check(cond, what, detail=None):
    if not cond:
        print("FAIL:", what, "" if detail is None else repr(detail)[:2000], flush=True)
        raise Fail(what)
    print("ok:", what, flush=True)


def wait_until(pred, timeout, what, step=0.1):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(step)
    print("FAIL: timed out after %ss: %s" % (timeout, what), flush=True)
    raise Fail(what)


class T:
    def __init__(self, build):
        self.build = build
        self.corral = os.environ.get("CORRAL_CLI") or os.path.join(build, "cli", "corral")
        self.stack = Stack(build)
        self.stack.start(script=SCRIPT, session_args=["--permission-timeout", "30s"],
                         gateway_args=["--rate", "100000", "--burst", "100000"])
        self.key = self.stack.key("tenant-a")

    def env(self, **extra):
        e = dict(os.environ, CORRAL_API_KEY=self.key, CORRAL_URL=self.stack.ws_url)
        for k in ("CORRAL_KEY", "CORRAL_DATA_DIR"):
            e.pop(k, None)
        e.update(extra)
        return e

    def events(self, sid, after=0):
        req = urllib.request.Request("%s/v1/sessions/%s/events?after=%d" % (self.stack.http_url, sid, after),
                                     headers={"Authorization": "Bearer " + self.key})
        with urllib.request.urlopen(req, timeout=10) as r:
            return [json.loads(line) for line in r.read().decode().splitlines() if line.strip()]

    # ---- a plain protocol client (python3-websockets) -----------------------

    async def client(self):
        ws = await websockets.connect(self.stack.ws_url, extra_headers={"Authorization": "Bearer " + self.key},
                                      max_size=None)
        await self.call(ws, 1, "initialize", {"protocolVersion": 1, "clientCapabilities": {}})
        return ws

    async def call(self, ws, rid, method, params):
        await ws.send(json.dumps({"jsonrpc": "2.0", "id": rid, "method": method, "params": params}))
        while True:
            m = json.loads(await ws.recv())
            if m.get("id") == rid and "method" not in m:
                if "error" in m:
                    raise Fail("%s: %s" % (method, m["error"]))
                return m["result"]

    def new_session(self, prompt=None):
        async def go():
            ws = await self.client()
            r = await self.call(ws, 2, "session/new", {"cwd": self.stack.workspace, "mcpServers": []})
            if prompt:
                await self.call(ws, 3, "session/prompt", {"sessionId": r["sessionId"],
                                                          "prompt": [{"type": "text", "text": prompt}]})
            await ws.close()
            return r["sessionId"]
        return asyncio.run(go())

    def prompt_detached(self, sid, text):
        """Send a prompt and drop the connection: the turn runs on."""
        async def go():
            ws = await self.client()
            await ws.send(json.dumps({"jsonrpc": "2.0", "id": 9, "method": "session/prompt",
                                      "params": {"sessionId": sid, "prompt": [{"type": "text", "text": text}]}}))
            await asyncio.sleep(0.3)
            await ws.close()
        asyncio.run(go())

    # ---- tail ----------------------------------------------------------------

    def run_tail(self, *args, timeout=20, **env):
        return subprocess.run([self.corral, "tail"] + list(args), capture_output=True, text=True,
                              timeout=timeout, env=self.env(**env))

    def phase_tail(self):
        sid = self.new_session("brief")
        stored = self.events(sid)
        check(len(stored) > 8, "tail: the session has %d stored events" % len(stored))

        r = self.run_tail(sid, "--after", "3", "--no-follow", "--json")
        check(r.returncode == 0, "tail --no-follow exits 0", r.stderr)
        got = [json.loads(line) for line in r.stdout.splitlines()]
        seqs = [m["params"]["_meta"]["seq"] for m in got]
        check(seqs == [e["seq"] for e in stored if e["seq"] > 3],
              "tail --after 3 --json: exactly the stored events after seq 3", seqs)
        check(all(m["jsonrpc"] == "2.0" and m["method"] for m in got), "tail --json: JSON-RPC notifications")

        r = self.run_tail(sid, "--no-follow")
        lines = r.stdout.splitlines()
        check(r.returncode == 0 and [int(re.match(r"#(\d+) ", ln).group(1)) for ln in lines] == [e["seq"] for e in stored],
              "tail (text): one '#seq time what detail' line per event", lines[:5])
        check(any(" text " in ln and '"' in ln for ln in lines) and any(" state " in ln for ln in lines),
              "tail (text): text chunks and states are readable", lines)

        # Errors and exit codes.
        r = self.run_tail(sid, "--after", "100000")
        check(r.returncode == 1 and "past the session's end" in r.stderr, "tail --after past the end: exit 1, says why", r.stderr)
        r = self.run_tail("01a2ffff-0000-7000-8000-000000000000", "--no-follow")
        check(r.returncode == 3 and "no such session" in r.stderr, "tail of an unknown session: exit 3", r.stderr)
        r = self.run_tail(sid, CORRAL_API_KEY="", CORRAL_DATA_DIR="/nonexistent")
        check(r.returncode == 2 and "key" in r.stderr, "tail without a key: exit 2 with a hint", r.stderr)
        r = self.run_tail(sid, "--no-follow", CORRAL_API_KEY="crl_not_a_key_the_store_knows")
        check(r.returncode == 3 and "1008" in r.stderr and "key" in r.stderr,
              "tail with a key the gateway refuses: exit 3, its close reason shown", r.stderr)
        r = self.run_tail(sid, "--url", "ws://127.0.0.1:1/acp")
        check(r.returncode == 4 and "could not connect" in r.stderr, "tail of an unreachable gateway: exit 4", r.stderr)
        r = self.run_tail()
        check(r.returncode == 2 and "which session" in r.stderr, "tail without a session: exit 2", r.stderr)
        r = self.run_tail("--help")
        check(r.returncode == 0 and "--after" in r.stdout, "tail --help")

        # A peer that stops answering (not even pongs) is noticed.
        silent = subprocess.Popen(["/usr/bin/python3", "-c", SILENT_SERVER], stdout=subprocess.PIPE, text=True)
        try:
            port = int(silent.stdout.readline())
            t0 = time.time()
            r = self.run_tail(sid, "--url", "ws://127.0.0.1:%d/acp" % port, timeout=40, CORRAL_WS_PING="1")
            # Hung up ~3.5 s after the last pong; the default (30 s pings)
            # would take 75 s.
            check(r.returncode == 4 and time.time() - t0 < 20,
                  "tail: a gateway gone silent is dropped after the ping timeout (CORRAL_WS_PING=1: %.1f s)"
                  % (time.time() - t0), r.stderr)
        finally:
            silent.kill()
            silent.wait()

        # Live, across a gateway restart mid-turn.
        start = stored[-1]["seq"]
        # Output to files, read while the tails run: they are stopped once
        # they have printed the turn's end, however long their reconnect
        # took on a busy machine.
        outs = {}
        for name in ("json.out", "json.err", "text.out", "text.err"):
            outs[name] = open(os.path.join(self.stack.tmp, "tail-" + name), "w+")
        tj = subprocess.Popen([self.corral, "tail", sid, "--after", "3", "--json"], stdout=outs["json.out"],
                              stderr=outs["json.err"], text=True, env=self.env())
        tt = subprocess.Popen([self.corral, "tail", sid, "--after", "3"], stdout=outs["text.out"],
                              stderr=outs["text.err"], text=True, env=self.env())

        def printed(name):
            with open(os.path.join(self.stack.tmp, "tail-" + name)) as f:
                return f.read()
        # Both attached (their replay of the stored events shows) before
        # the turn, so the restart below breaks a live connection.
        wait_until(lambda: printed("json.out") and printed("text.out"), 30, "both tails attached")
        self.prompt_detached(sid, "slow stream")
        wait_until(lambda: len(self.events(sid, start)) > 30, 20, "the slow turn streams")
        self.stack.restart("gateway")
        self.stack.wait_ready()
        ended = wait_until(lambda: [e for e in self.events(sid, start) if e["kind"] == "turn_ended"], 30,
                           "the slow turn ends")
        last = ended[-1]["seq"]

        def json_seqs():
            out = []
            for line in printed("json.out").splitlines():
                try:
                    out.append(json.loads(line)["params"]["_meta"]["seq"])
                except (ValueError, KeyError, TypeError):
                    pass  # a line being written
            return out
        wait_until(lambda: last in json_seqs() and re.search(r"^#%d " % last, printed("text.out"), re.M), 30,
                   "both tails print the turn's last event (seq %d)" % last)
        for p in (tj, tt):
            p.send_signal(signal.SIGINT)
        tj.wait(10)
        tt.wait(10)
        out_j, err_j, out_t = printed("json.out"), printed("json.err"), printed("text.out")
        for f in outs.values():
            f.close()
        check(tj.returncode == 0 and tt.returncode == 0, "tail exits 0 on Ctrl-C", (tj.returncode, tt.returncode, err_j))
        stored = self.events(sid)
        want = [e["seq"] for e in stored if e["seq"] > 3]
        seqs = [json.loads(line)["params"]["_meta"]["seq"] for line in out_j.splitlines()]
        check(seqs[-1] == last, "tail --json followed the turn to its end (seq %d)" % last, seqs[-5:])
        check(seqs == want, "tail --json across a gateway restart: every event after 3 once, in order (%d)" % len(want),
              [s for s in set(want) ^ set(seqs)] or seqs)
        check("reconnecting" in err_j and "resumed after seq" in err_j,
              "tail says on stderr that it reconnected and resumed", err_j)
        replay = self.run_tail(sid, "--after", "3", "--no-follow", "--json").stdout.splitlines()
        check(replay == out_j.splitlines(), "the live output equals a fresh replay, line for line")
        tseqs = [int(re.match(r"#(\d+) ", ln).group(1)) for ln in out_t.splitlines()]
        check(tseqs == want, "tail (text) across the restart: no gap, no duplicate", tseqs)
        pieces = "".join(json.loads(ln[ln.index('"'):]) if ln.split()[2] == "text" else ""
                         for ln in out_t.splitlines() if " text " in ln)
        check("".join("p%03d " % i for i in range(SLOW_PIECES)) in pieces, "tail (text): the slow answer is whole")

    # ---- the bridge ------------------------------------------------------------

    def bridge(self, *args):
        return subprocess.Popen([self.corral, "acp"] + list(args), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=self.env())

    @staticmethod
    def read_lines(p, n, timeout):
        out = []
        deadline = time.time() + timeout
        while len(out) < n and time.time() < deadline:
            line = p.stdout.readline()
            if not line:
                break
            out.append(json.loads(line))
        return out

    def phase_bridge(self):
        # Pipelined requests.
        p = self.bridge()
        n = 300
        msgs = [{"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": 1, "clientCapabilities": {}}}]
        msgs += [{"jsonrpc": "2.0", "id": i, "method": "session/list", "params": {}} for i in range(2, n + 2)]
        p.stdin.write("".join(json.dumps(m) + "\n" for m in msgs).encode())
        p.stdin.write(b"this is not json\n")
        p.stdin.flush()
        got = self.read_lines(p, n + 2, 30)
        answers = [m for m in got if m.get("id") is not None]
        ids = sorted(m["id"] for m in answers)
        check(ids == list(range(1, n + 2)) and all("result" in m for m in answers),
              "bridge: %d pipelined requests answered once each" % (n + 1), [len(ids), ids[-5:]])
        bad = [m for m in got if m.get("id") is None]
        check(len(bad) == 1 and bad[0].get("error", {}).get("code") == -32700,
              "bridge: a line that is not JSON gets the gateway's -32700", bad)
        p.stdin.close()
        check(p.wait(10) == 0, "bridge: exit 0 after stdin closes")

        # Big messages through the bounded queue.
        p = subprocess.Popen([self.corral, "acp", "--verbose"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, env=self.env())
        pad = "x" * (512 * 1024)
        count = 64

        def writer():
            for i in range(count):
                m = {"jsonrpc": "2.0", "id": 1000 + i, "method": "session/list", "params": {"_meta": {"pad": pad}}}
                p.stdin.write((json.dumps(m) + "\n").encode())
            p.stdin.flush()
        import threading
        th = threading.Thread(target=writer)
        th.start()
        got = self.read_lines(p, count, 60)
        th.join(30)
        check(sorted(m.get("id") for m in got) == list(range(1000, 1000 + count)),
              "bridge: %d messages of 512 KB each answered (32 MB through the queue)" % count,
              [m.get("error") for m in got[:3]])
        p.stdin.close()
        rc = p.wait(20)
        err = p.stderr.read().decode()
        check(rc == 0, "bridge: exit 0 after the big messages", err)
        check("pausing stdin" in err and "resuming stdin" in err,
              "bridge: stdin was paused while the socket drained, then resumed", err)

        # The gateway dies under it.
        p = self.bridge()
        p.stdin.write((json.dumps(msgs[0]) + "\n").encode())
        p.stdin.flush()
        check(self.read_lines(p, 1, 10)[0].get("id") == 1, "bridge: connected before the gateway dies")
        self.stack.restart("gateway")
        try:
            rc = p.wait(10)
        finally:
            if p.poll() is None:
                p.kill()
        err = p.stderr.read().decode()
        rest = p.stdout.read().decode()
        check(rc == 4 and "corral acp:" in err, "bridge: the gateway dying ends it with exit 4 and a message", (rc, err))
        check(all(json.loads(line) for line in rest.splitlines()), "bridge: stdout still held only JSON lines")
        self.stack.wait_ready()

        # Usage errors.
        r = subprocess.run([self.corral, "acp"], capture_output=True, text=True, timeout=10,
                           env=self.env(CORRAL_API_KEY="", CORRAL_DATA_DIR="/nonexistent"))
        check(r.returncode == 2 and "key" in r.stderr, "bridge without a key: exit 2", r.stderr)
        p = subprocess.Popen([self.corral, "acp"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, env=self.env(CORRAL_API_KEY="crl_not_a_key_the_store_knows"))
        p.stdin.write((json.dumps(msgs[0]) + "\n").encode())
        p.stdin.flush()  # and stdin stays open: the gateway ends it
        try:
            rc = p.wait(10)
        finally:
            if p.poll() is None:
                p.kill()
        err = p.stderr.read().decode()
        check(rc == 3 and "1008" in err, "bridge with a refused key: exit 3 with the close reason", (rc, err))
        r = subprocess.run([self.corral, "acp", "--url", "ws://127.0.0.1:1/acp"], capture_output=True, text=True,
                           timeout=10, env=self.env(), input="")
        check(r.returncode == 4 and r.stdout == "", "bridge to an unreachable gateway: exit 4, nothing on stdout", r.stderr)

    # ---- wss ------------------------------------------------------------------

    def phase_tls(self):
        """A second gateway on the same services, serving wss with a
        self-signed certificate: trusted with --ca-file, refused without."""
        from corral_stack import free_port
        d = self.stack.tmp
        cert, key = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
                        "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost", "-days", "1",
                        "-keyout", key, "-out", cert], check=True, capture_output=True, timeout=60)
        argv = list(self.stack.svc.procs["gateway"].args)
        port = free_port()
        argv[argv.index("--listen") + 1] = "127.0.0.1:%d" % port
        g = subprocess.Popen(argv + ["--tls-cert", cert, "--tls-key", key], env=self.stack.svc.env,
                             stderr=open(os.path.join(d, "gateway-tls.log"), "ab"))
        try:
            import socket
            wait_until(lambda: socket.socket().connect_ex(("127.0.0.1", port)) == 0, 10, "the TLS gateway listens")
            sid = self.new_session("brief")
            plain = self.run_tail(sid, "--no-follow", "--json").stdout
            r = self.run_tail(sid, "--no-follow", "--json", "--url", "wss://127.0.0.1:%d/acp" % port, "--ca-file", cert)
            check(r.returncode == 0 and r.stdout == plain and plain, "tail over wss:// with --ca-file: the same events",
                  r.stderr)
            r = self.run_tail(sid, "--no-follow", "--url", "https://localhost:%d" % port, "--ca-file", cert)
            check(r.returncode == 0 and len(r.stdout.splitlines()) == len(plain.splitlines()),
                  "tail with an https:// URL uses wss:// at /acp", r.stderr)
            r = self.run_tail(sid, "--no-follow", "--url", "wss://127.0.0.1:%d/acp" % port)
            check(r.returncode == 4 and "could not connect" in r.stderr,
                  "an untrusted certificate is refused: exit 4", r.stderr)
            init = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
                    "params": {"protocolVersion": 1, "clientCapabilities": {}}}
            p = self.bridge("--url", "https://127.0.0.1:%d" % port, "--ca-file", cert)
            p.stdin.write((json.dumps(init) + "\n").encode())
            p.stdin.flush()
            got = self.read_lines(p, 1, 15)
            p.stdin.close()
            check(p.wait(10) == 0 and got and got[0].get("result", {}).get("protocolVersion") == 1,
                  "the bridge over wss:// (https:// URL, --ca-file): initialize answered, exit 0", got)
        finally:
            g.terminate()
            g.wait(10)

    # ---- chat in tmux ----------------------------------------------------------

    @staticmethod
    def procs_in(cwd, word):
        """pids of processes whose working directory is cwd and whose
        command line (NUL-separated) matches the regex word (read from
        /proc; nothing is signalled)."""
        found = []
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                if os.readlink("/proc/%s/cwd" % pid) != cwd:
                    continue
                with open("/proc/%s/cmdline" % pid, "rb") as f:
                    if re.search(word.encode(), f.read()):
                        found.append(int(pid))
            except OSError:
                pass
        return found

    def phase_chat(self):
        tmux = shutil.which("tmux")
        check(tmux, "tmux is installed (scripts/setup.sh)")
        sock = "corral-e2e-%d" % os.getpid()
        name = "chat"
        env = self.env()
        cmd = ("cd %s && env CORRAL_API_KEY=%s CORRAL_URL=%s TERM=xterm %s chat; echo CHAT-EXIT=$?; sleep 60"
               % (self.stack.workspace, self.key, self.stack.ws_url, self.corral))

        def t(*args):
            return subprocess.run([tmux, "-L", sock] + list(args), capture_output=True, text=True, timeout=10,
                                  env=env)

        def pane():
            #  Without the empty rows below the cursor, so offsets stay put.
            return t("capture-pane", "-p", "-J", "-S", "-", "-t", name).stdout.rstrip("\n")

        def wait_pane(pat, timeout=20, after=0):
            return wait_until(lambda: re.search(pat, pane()[after:]), timeout, "the pane shows %r:\n%s" % (pat, pane()))

        try:
            t("new-session", "-d", "-s", name, "-x", "160", "-y", "50", cmd)
            wait_pane(r"session \S+ \(mode ask\)")
            wait_pane(r"\n> ")
            check(True, "chat: a new session and a prompt")

            t("send-keys", "-t", name, "Please write hello.txt", "Enter")
            wait_pane(r"allow\? \[y\]es \[n\]o \[a\]lways")
            text = pane()
            check("I will create hello.txt in the workspace." in text, "chat: the answer streamed before the question")
            check("permission needed: Write hello.txt" in text, "chat: the permission prompt names the tool call")
            t("send-keys", "-t", name, "y", "Enter")
            wait_pane(r"hello\.txt is written\.")
            wait_pane(r"tokens in")
            text = pane()
            check("done: Write hello.txt" in text, "chat: the tool call's result is shown", text)
            path = os.path.join(self.stack.workspace, "hello.txt")
            check(os.path.exists(path) and open(path).read() == "Hello from corral chat!\n",
                  "chat: y allowed the write; hello.txt exists")

            # Ctrl-C during a long command.
            mark = len(pane())
            t("send-keys", "-t", name, "Please sleep a while", "Enter")
            wait_pane(r"allow\?", after=mark)
            t("send-keys", "-t", name, "y", "Enter")
            wait_until(lambda: self.procs_in(self.stack.workspace, r"sleep[ \0]30"), 10,
                       "sleep 30 runs in the workspace")
            check(True, "chat: y allowed the command; sleep 30 is running")
            time.sleep(0.5)
            t0 = time.time()
            t("send-keys", "-t", name, "C-c")
            wait_pane(r"cancelling the turn", 15, after=mark)
            wait_pane(r"\(turn ended: cancelled\)", 25, after=mark)
            # Well before sleep 30 would have ended the turn by itself.
            check(time.time() - t0 < 20, "chat: Ctrl-C cancelled the turn during sleep 30 (%.1f s)" % (time.time() - t0))
            wait_pane(r"\n> ?$", 15, after=mark)
            wait_until(lambda: not self.procs_in(self.stack.workspace, r"sleep[ \0]30"), 10,
                       "the cancelled command's processes end")
            check(True, "chat: the cancelled command (sleep 30) is gone")

            # A gateway restart mid-answer.
            mark = len(pane())
            t("send-keys", "-t", name, "Now a slow stream please", "Enter")
            wait_pane(r"p020 ", 20, after=mark)
            self.stack.restart("gateway")
            wait_pane(r"reconnected; resumed after seq \d+", 40, after=mark)
            wait_pane(r"p%03d " % (SLOW_PIECES - 1), 40, after=mark)
            wait_pane(r"\n> ", 20, after=mark)
            text = pane()[mark:]
            check("reconnecting in" in text, "chat: says it lost the connection and reconnects")
            joined = "".join(line for line in text.splitlines() if not line.startswith("("))
            found = re.findall(r"p(\d{3}) ", joined)
            check([int(x) for x in found] == list(range(SLOW_PIECES)),
                  "chat: every piece of the answer shown exactly once across the restart", found)

            # Ctrl-C while the gateway is down: the cancel goes once reconnected.
            mark = len(pane())
            t("send-keys", "-t", name, "Please crawl", "Enter")
            wait_pane(r"c005 ", 20, after=mark)
            self.stack.svc.kill("gateway", signal.SIGKILL)
            wait_pane(r"reconnecting in", 15, after=mark)
            t("send-keys", "-t", name, "C-c")
            wait_pane(r"cancelling the turn once reconnected", 15, after=mark)
            self.stack.start_gateway()
            wait_pane(r"\(turn ended: cancelled\)", 25, after=mark)
            wait_pane(r"\n> ?$", 15, after=mark)
            check("c099" not in pane()[mark:], "chat: Ctrl-C while disconnected cancelled the turn once reconnected")

            # Ctrl-C at the prompt leaves.
            t("send-keys", "-t", name, "C-c")
            wait_pane(r"CHAT-EXIT=0", 15)
            check(True, "chat: Ctrl-C at the prompt leaves with exit 0")
        finally:
            if os.environ.get("CORRAL_TEST_VERBOSE") == "1":
                print(pane())
            t("kill-server")

        # Ctrl-C twice during a turn: the first cancels, the second leaves
        # (stdin a pipe kept open, so only the signals can end it).
        out_path = os.path.join(self.stack.tmp, "chat-twice.out")
        with open(out_path, "w+") as out:
            p = subprocess.Popen([self.corral, "chat", "--cwd", self.stack.workspace], stdin=subprocess.PIPE,
                                 stdout=out, stderr=subprocess.STDOUT, env=self.env())
            try:
                p.stdin.write(b"Please crawl\n")
                p.stdin.flush()
                shown = lambda pat: re.search(pat, open(out_path).read())  # noqa: E731
                wait_until(lambda: shown(r"c002 "), 20, "chat (piped): the crawl streams")
                p.send_signal(signal.SIGINT)
                wait_until(lambda: shown(r"cancelling the turn \(Ctrl-C again leaves\)"), 15,
                           "chat (piped): the first Ctrl-C cancels")
                p.send_signal(signal.SIGINT)
                rc = p.wait(15)
            finally:
                if p.poll() is None:
                    p.kill()
                    p.wait()
            check(rc == 0 and "c099" not in open(out_path).read(),
                  "chat: a second Ctrl-C during the turn leaves with exit 0", (rc, open(out_path).read()[-500:]))

    def stop(self):
        self.stack.stop()


def main():
    if len(sys.argv) < 2:
        print(__doc__)
        return 2
    phases = sys.argv[2:] or ["tail", "bridge", "tls", "chat"]
    t = T(sys.argv[1])
    rc = 1
    try:
        for ph in phases:
            print("---- %s" % ph, flush=True)
            getattr(t, "phase_" + ph)()
        rc = 0
        print("PASS test_cli_ws", flush=True)
    except Fail:
        for n in ("gateway", "session", "worker1"):
            print("---- %s log (tail) ----" % n)
            try:
                print(t.stack.log(n)[-2500:])
            except OSError:
                pass
    finally:
        t.stop()
    return rc


if __name__ == "__main__":
    sys.exit(main())
