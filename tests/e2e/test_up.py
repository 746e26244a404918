"""`corral up` end to end, and the CLI commands around it (docs/cli.md).

    test_up.py BUILD_DIR NODE

Every stack here lives in one scratch folder: CORRAL_DATA_DIR, ipc://
endpoints and an ephemeral gateway port, so it clashes with nothing else
on the machine.  Steps:

  1. usage: `corral up --bogus` and a malformed CORRAL_API_KEY exit 2 and
     leave nothing running; the gateway's port taken: exit 1 at once.
  2. a stack with a generated key: ready on /v1/health/ready; the key file
     is mode 600 and the banner shows it; `corral tap` prints a prompt's
     events while the official ACP SDK client (up_prompt.mjs) runs the
     prompt with a permission request; `corral sessions list/show/close`
     and `corral keys create/list/revoke` work, bad input gets exit code 2
     and a message, an unknown session 3; the worker killed with SIGKILL is
     restarted and a prompt works again; SIGTERM stops everything and no
     process of the stack is left (none of the pids it started, and no
     process whose environment names the scratch folder).
  3. the same data folder with CORRAL_API_KEY: that key works, the banner
     does not print it.
  4. `corral up` killed with SIGKILL: its services stop by themselves
     (PR_SET_PDEATHSIG).
"""
import base64
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))


def check(cond, what, detail=None):
    if not cond:
        print("FAIL:", what, "" if detail is None else detail, flush=True)
        raise SystemExit(1)
    print("ok:", what, flush=True)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def new_key():
    """A key of corral-keys' form: crl_ + 32 random bytes, base64url, no padding."""
    return "crl_" + base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")


def environ_of(pid):
    try:
        with open("/proc/%d/environ" % pid, "rb") as f:
            return f.read().split(b"\0")
    except OSError:
        return []


def stack_pids(tmp):
    """Live processes whose environment names the scratch folder."""
    mark = ("CORRAL_DATA_DIR=" + tmp).encode()
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit() and int(d) != os.getpid():
            if any(e.startswith(mark) for e in environ_of(int(d))):
                try:
                    with open("/proc/%s/stat" % d) as f:
                        if f.read().split(")")[-1].split()[0] == "Z":
                            continue  # a zombie waiting for its parent: not running
                except OSError:
                    continue
                out.append(int(d))
    return out


def children(pid):
    out = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                st = f.read()
            with open("/proc/%s/comm" % d) as f:
                comm = f.read().strip()
        except OSError:
            continue
        if int(st.split(")")[-1].split()[1]) == pid:
            out[int(d)] = comm
    return out


class Up:
    """One `corral up` with its output collected."""

    def __init__(self, build, tmp, port, extra_env=None, args=()):
        self.corral = os.path.join(build, "cli", "corral")
        self.tmp, self.port = tmp, port
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("CORRAL_") and not k.startswith("OPENAI_")
               and not k.startswith("ANTHROPIC_")}
        env.update(CORRAL_DATA_DIR=tmp + "/data", CORRAL_LISTEN="127.0.0.1:%d" % port,
                   CORRAL_STORE_ENDPOINT="ipc://%s/store.sock" % tmp,
                   CORRAL_SESSION_ENDPOINT="ipc://%s/session.sock" % tmp,
                   CORRAL_WORKER_ENDPOINT="ipc://%s/worker.sock" % tmp,
                   CORRAL_EVENTS_ENDPOINT="ipc://%s/events.sock" % tmp,
                   CORRAL_MONITOR_IN_ENDPOINT="ipc://%s/monitor-in.sock" % tmp,
                   CORRAL_MONITOR_ENDPOINT="ipc://%s/monitor.sock" % tmp,
                   CORRAL_PERMISSION_TIMEOUT="30s")
        env.update(extra_env or {})
        self.env = env
        self.lines = []
        self.proc = subprocess.Popen([self.corral, "up", "--log-format", "json"] + list(args),
                                     env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for raw in self.proc.stdout:
            self.lines.append(raw.decode(errors="replace").rstrip("\n"))

    def text(self):
        return "\n".join(self.lines)

    def wait_ready(self, timeout=60):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                break
            # The banner's last line: all of it has been read.
            if "Ctrl-C stops everything" in self.text():
                try:
                    with urllib.request.urlopen("http://127.0.0.1:%d/v1/health/ready" % self.port,
                                                timeout=2) as r:
                        if r.status == 200:
                            return True
                except OSError:
                    pass
            time.sleep(0.1)
        print(self.text()[-6000:])
        return False

    def wait_line(self, pattern, timeout=20, start=0):
        deadline = time.time() + timeout
        while time.time() < deadline:
            for line in self.lines[start:]:
                if re.search(pattern, line):
                    return line
            time.sleep(0.05)
        return None

    def run(self, *args, key=None, timeout=30, env_extra=None):
        env = dict(self.env)
        env.pop("CORRAL_API_KEY", None)
        if key:
            env["CORRAL_API_KEY"] = key
        env.update(env_extra or {})
        return subprocess.run([self.corral] + list(args), env=env, capture_output=True,
                              text=True, timeout=timeout, cwd=self.tmp)

    def stop(self, sig=signal.SIGTERM, timeout=40):
        self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = None
        self.reader.join(5)
        return rc


def no_leftovers(tmp, pids, timeout=10):
    deadline = time.time() + timeout
    while time.time() < deadline:
        alive = [p for p in pids if os.path.exists("/proc/%d" % p) and p in stack_pids(tmp)]
        left = stack_pids(tmp)
        if not alive and not left:
            return []
        time.sleep(0.1)
    return sorted(set(alive) | set(left))


def main():
    build, node = os.path.abspath(sys.argv[1]), sys.argv[2]
    tmp = tempfile.mkdtemp(prefix="corral-up-")
    ok = False
    up = None
    try:
        corral = os.path.join(build, "cli", "corral")

        # ---- 1. usage --------------------------------------------------------
        r = subprocess.run([corral, "up", "--bogus"], capture_output=True, text=True, timeout=20)
        check(r.returncode == 2 and "bogus" in r.stderr, "corral up --bogus: exit 2 naming the flag",
              (r.returncode, r.stderr))
        port = free_port()
        up = Up(build, tmp, port, {"CORRAL_API_KEY": "not-a-key"})
        rc = up.proc.wait(60)
        up.reader.join(5)
        check(rc == 2 and "CORRAL_API_KEY" in up.text(),
              "a malformed CORRAL_API_KEY: corral up exits 2 and says why", (rc, up.text()[-2000:]))
        check(not no_leftovers(tmp, []), "... and leaves no process behind")
        busy = socket.socket()
        busy.bind(("127.0.0.1", port))
        busy.listen(1)
        up = Up(build, tmp, port)
        rc = up.proc.wait(30)
        up.reader.join(5)
        busy.close()
        check(rc == 1 and "already listens" in up.text() and "CORRAL_LISTEN" in up.text(),
              "the gateway's port taken: exit 1 naming it and CORRAL_LISTEN", (rc, up.text()))
        check(not no_leftovers(tmp, []), "... and nothing was started")
        shutil.rmtree(tmp + "/data", ignore_errors=True)

        # ---- 2. a stack with a generated key ------------------------------------
        up = Up(build, tmp, port)
        check(up.wait_ready(), "corral up: the stack is ready (/v1/health/ready 200)")
        keyfile = tmp + "/data/local-api-key"
        key = open(keyfile).read().strip()
        check(os.stat(keyfile).st_mode & 0o777 == 0o600, "the key file is mode 600")
        check(key.startswith("crl_") and key in up.text(), "the banner shows the key")
        check("http://127.0.0.1:%d/" % port in up.text(), "the banner shows the web page URL")
        check("scripted model" in up.text() and "OPENAI_API_KEY" in up.text(),
              "no provider: it says it uses the scripted model and how to configure one")
        for name in ("store", "session", "worker", "gateway", "model"):
            check(re.search(r"^\[%s\]\s+\{" % name, up.text(), re.M),
                  "[%s] prefixes that service's log lines" % name)
        if os.path.exists(os.path.join(build, "services", "monitor", "corral-monitor")):
            check(re.search(r"^\[monitor\]\s+\{", up.text(), re.M),
                  "[monitor] prefixes the monitor's log lines")
        started = dict(children(up.proc.pid))
        check({"corral-store", "corral-session", "corral-worker", "corral-gateway"}
              <= set(started.values()), "the services are corral up's children", started)

        # corral tap while the SDK client prompts
        tap_out = open(tmp + "/tap.jsonl", "w")
        env = dict(up.env)
        tap = subprocess.Popen([corral, "tap"], env=env, stdout=tap_out, stderr=subprocess.PIPE)
        ws = tmp + "/data/workspaces/sdk"
        os.makedirs(ws)
        # A PUB does not replay: make events until tap shows one, so its
        # subscription is in place before the prompt.
        hdr = {"Authorization": "Bearer " + key}
        deadline = time.time() + 20
        while time.time() < deadline and os.path.getsize(tmp + "/tap.jsonl") == 0:
            req = urllib.request.Request("http://127.0.0.1:%d/v1/sessions" % port,
                                         json.dumps({"cwd": ws}).encode(), hdr)
            urllib.request.urlopen(req, timeout=10).read()
            time.sleep(0.3)
        check(os.path.getsize(tmp + "/tap.jsonl") > 0, "corral tap receives events")
        r = subprocess.run([node, os.path.join(HERE, "up_prompt.mjs")],
                           env=dict(os.environ, CORRAL_WS="ws://127.0.0.1:%d/acp" % port,
                                    CORRAL_API_KEY=key, CORRAL_WORKSPACE=ws),
                           capture_output=True, text=True, timeout=90, cwd=HERE)
        check(r.returncode == 0, "the ACP SDK client ran a prompt with a permission request",
              r.stdout + r.stderr)
        sid = json.loads(r.stdout.strip().splitlines()[-1])["sessionId"]

        def tap_saw_end():
            with open(tmp + "/tap.jsonl") as f:
                return any('"turn_ended"' in line and sid in line for line in f)
        deadline = time.time() + 30
        while time.time() < deadline and not tap_saw_end():
            time.sleep(0.1)
        tap.send_signal(signal.SIGINT)
        check(tap.wait(10) == 0, "corral tap stops on SIGINT with exit 0")
        tap_out.close()
        events = [json.loads(line) for line in open(tmp + "/tap.jsonl") if line.strip()]
        mine = [e for e in events if e.get("sessionId") == sid]
        kinds = [e["kind"] for e in mine]
        check(mine and all(isinstance(e.get("seq"), int) for e in mine),
              "corral tap: one JSON object per line with sessionId and seq (%d events)" % len(mine))
        check([e["seq"] for e in mine] == sorted(e["seq"] for e in mine), "... in seq order")
        for k in ("session_created", "user_message", "permission_request", "tool_call",
                  "agent_message_chunk", "turn_ended"):
            check(k in kinds, "... including %s" % k, kinds)
        r = up.run("tap", "--session", "x")
        check(r.returncode == 2 and "session" in r.stderr, "corral tap --session x: exit 2",
              (r.returncode, r.stderr))

        # corral sessions
        r = up.run("sessions", "list")
        check(r.returncode == 0 and sid in r.stdout and r.stdout.startswith("ID"),
              "corral sessions list (the key from the key file): a table with the session",
              (r.returncode, r.stdout, r.stderr))
        r = up.run("sessions", "list", "--json")
        check(r.returncode == 0 and any(s["id"] == sid for s in json.loads(r.stdout)),
              "corral sessions list --json")
        r = up.run("sessions", "show", sid)
        check(r.returncode == 0 and re.search(r"^state\s+idle", r.stdout, re.M),
              "corral sessions show: the fields, state idle", r.stdout + r.stderr)
        r = up.run("sessions", "close", sid)
        check(r.returncode == 0 and "closed" in r.stdout, "corral sessions close", r.stderr)
        r = up.run("sessions", "show", sid, "--json")
        check(r.returncode == 0 and json.loads(r.stdout)["state"] == "closed",
              "... the session is closed, its record still there")
        r = up.run("sessions", "show", "not-an-id")
        check(r.returncode == 2 and "UUID" in r.stderr, "show not-an-id: exit 2 with a message",
              (r.returncode, r.stderr))
        r = up.run("sessions", "show", "01a20160-3b16-7000-9103-6c961e2f6560")
        check(r.returncode == 3 and "no such session" in r.stderr, "show an unknown id: exit 3",
              (r.returncode, r.stderr))
        r = up.run("sessions", "frob")
        check(r.returncode == 2 and "unknown command" in r.stderr, "sessions frob: exit 2")
        r = up.run("sessions", "list", "--limit", "0")
        check(r.returncode == 2 and "limit" in r.stderr, "--limit 0: exit 2")
        r = up.run("sessions", "list", key=new_key())
        check(r.returncode == 3, "an unknown key: exit 3", (r.returncode, r.stderr))
        r = up.run("sessions", "list", "--url", "http://127.0.0.1:%d" % free_port())
        check(r.returncode == 4 and "cannot reach" in r.stderr, "no gateway there: exit 4",
              (r.returncode, r.stderr))

        # corral keys
        r = up.run("keys", "create", "--tenant", "ci", "--name", "e2e")
        m = re.search(r"^key: (crl_\S+)\nid: (\S+)", r.stdout, re.M)
        check(r.returncode == 0 and m, "corral keys create prints the key once", r.stdout + r.stderr)
        ci_key, ci_id = m.group(1), m.group(2)
        r = up.run("keys", "list")
        check(r.returncode == 0 and ci_id in r.stdout and ci_key not in r.stdout,
              "corral keys list shows the id, never the key")
        r = up.run("sessions", "list", key=ci_key)
        check(r.returncode == 0 and sid not in r.stdout,
              "the new tenant key works and does not see the local tenant's session")
        r = up.run("keys", "revoke", ci_id)
        check(r.returncode == 0 and "revoked" in r.stdout, "corral keys revoke")
        r = up.run("keys", "revoke", "nope")
        check(r.returncode == 2 and "UUID" in r.stderr, "keys revoke nope: exit 2 with a message")
        r = up.run("keys", "frob")
        check(r.returncode == 2, "keys frob: exit 2")

        # a crashed worker is restarted
        worker = [p for p, c in children(up.proc.pid).items() if c == "corral-worker"]
        check(len(worker) == 1, "one worker", children(up.proc.pid))
        mark = len(up.lines)
        os.kill(worker[0], signal.SIGKILL)
        line = up.wait_line(r"\[up\].*corral-worker was killed by signal 9.*restarting", start=mark)
        check(line, "corral up says the worker was killed and restarts it")
        deadline = time.time() + 20
        again = []
        while time.time() < deadline and not again:
            again = [p for p, c in children(up.proc.pid).items() if c == "corral-worker"
                     and p != worker[0]]
            time.sleep(0.1)
        check(again, "a new worker runs")
        body = json.dumps({"cwd": ws}).encode()
        deadline = time.time() + 30
        stop = None
        while time.time() < deadline and stop != "end_turn":
            try:
                req = urllib.request.Request("http://127.0.0.1:%d/v1/sessions" % port, body, hdr)
                s2 = json.load(urllib.request.urlopen(req, timeout=10))["sessionId"]
                req = urllib.request.Request(
                    "http://127.0.0.1:%d/v1/sessions/%s/prompt" % (port, s2),
                    json.dumps({"prompt": "hello"}).encode(), hdr)
                stop = json.load(urllib.request.urlopen(req, timeout=30)).get("stopReason")
            except OSError as e:
                print("retry:", e)
                time.sleep(0.5)
        check(stop == "end_turn", "a prompt works with the restarted worker")

        # SIGTERM stops everything
        pids = list(children(up.proc.pid))
        rc = up.stop(signal.SIGTERM)
        check(rc == 0, "SIGTERM: corral up exits 0", (rc, up.text()[-3000:]))
        order = [m.group(1) for m in re.finditer(r"\[up\]\s+(\w+) stopped \(", up.text())]
        check(order[:2] == ["gateway", "worker"] and order[-1] == "store",
              "services stop in reverse order", order)
        left = no_leftovers(tmp, pids)
        check(not left, "no process of the stack is left", left)

        # ---- 3. CORRAL_API_KEY -------------------------------------------------
        given = new_key()
        up = Up(build, tmp, port, {"CORRAL_API_KEY": given})
        check(up.wait_ready(), "with CORRAL_API_KEY: ready")
        check(given not in up.text() and "CORRAL_API_KEY" in up.text(),
              "the banner names CORRAL_API_KEY and does not print the key")
        r = up.run("sessions", "list", key=given)
        check(r.returncode == 0 and sid in r.stdout, "the given key is an admin key of the local tenant",
              (r.returncode, r.stdout, r.stderr))
        r = up.run("sessions", "list")
        check(r.returncode == 0 and sid in r.stdout, "the kept key (key file) still works")
        pids = list(children(up.proc.pid))
        check(up.stop(signal.SIGINT) == 0, "SIGINT (Ctrl-C): exit 0")
        check(not no_leftovers(tmp, pids), "no process left")

        # ---- 4. corral up killed with SIGKILL --------------------------------------
        up = Up(build, tmp, port)
        check(up.wait_ready(), "again: ready")
        pids = list(children(up.proc.pid))
        up.stop(signal.SIGKILL)
        left = no_leftovers(tmp, pids, timeout=15)
        check(not left, "corral up killed with SIGKILL: its services stop by themselves", left)
        up = None
        ok = True
    finally:
        if up and up.proc.poll() is None:
            up.stop(signal.SIGKILL)
        for p in stack_pids(tmp):
            try:
                os.kill(p, signal.SIGKILL)
            except OSError:
                pass
        if not ok and up:
            print("---- corral up output (tail) ----")
            print(up.text()[-6000:])
        if ok or os.environ.get("CORRAL_TEST_KEEP") != "1":
            shutil.rmtree(tmp, ignore_errors=True)
    print("PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
