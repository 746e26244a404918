"""A whole Corral stack for end-to-end tests: corral-store, corral-session,
the scripted model server, one or more corral-worker and corral-gateway on
an ephemeral loopback port, in one scratch directory, plus API keys made
with corral-keys.

    stack = Stack(build_dir)            # binaries from a CMake build dir
    stack.start(script=None)            # default scripted model
    key = stack.key("tenant-a")         # a fresh key for a tenant
    url = stack.ws_url                  # ws://127.0.0.1:<port>/acp
    ...
    stack.stop()

Used by the Python tests here and by the Node SDK test (run as
`python3 corral_stack.py BUILD_DIR -- node test.mjs`, which exports
CORRAL_URL, CORRAL_KEY, CORRAL_KEY_B, CORRAL_HTTP, CORRAL_WORKSPACE and
CORRAL_CONTROL, a URL to kill and restart the gateway: serve_control()).
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
from corral_bus import Services  # noqa: E402

MODEL_KEY = "sk-corral-e2e-0123456789"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Stack:
    def __init__(self, build, tmp=None):
        self.build = os.path.abspath(build)
        self.tmp = tmp or tempfile.mkdtemp(prefix="corral-e2e-")
        b = self.build
        self.svc = Services(self.tmp, {
            "store": b + "/services/store/corral-store",
            "session": b + "/services/session/corral-session",
            "worker": b + "/services/agent-worker/corral-worker",
            "monitor": b + "/services/monitor/corral-monitor",
        })
        self.gateway_bin = b + "/gateway/corral-gateway"
        self.keys_bin = b + "/gateway/corral-keys"
        self.fake_bin = b + "/tests/fakes/corral-fake-model"
        self.fake = None
        self.port = None
        self.workspace = os.path.join(self.tmp, "ws")
        os.makedirs(self.workspace, exist_ok=True)
        self.gateway_args = []

    # ---- processes -------------------------------------------------------

    def start_model(self, script=None, delay="5ms"):
        argv = [self.fake_bin, "--fake-listen", "127.0.0.1:0", "--fake-api-key", MODEL_KEY,
                "--fake-chunk-delay", delay]
        if script is not None:
            path = os.path.join(self.tmp, "script.json")
            with open(path, "w") as f:
                json.dump(script, f)
            argv += ["--fake-script", path]
        self.fake = subprocess.Popen(argv, stdout=subprocess.PIPE,
                                     stderr=open(os.path.join(self.tmp, "fake.log"), "ab"))
        line = self.fake.stdout.readline().decode()
        if not line.startswith("listening on http://"):
            raise RuntimeError("the scripted model server did not start: %r" % line)
        self.model_url = line.split()[-1]

    def start_gateway(self, extra=()):
        if self.port is None:
            self.port = free_port()
        ep = self.svc.ep
        argv = [self.gateway_bin, "--listen", "127.0.0.1:%d" % self.port,
                "--session-endpoint", ep["client"], "--store-endpoint", ep["store"],
                "--events-endpoint", ep["events"], "--monitor-endpoint", ep["monitor"],
                "--monitor-in-endpoint", ep["monitor_in"]] + self.gateway_args + list(extra)
        self.svc.logs["gateway"] = open(os.path.join(self.tmp, "gateway.log"), "ab")
        self.svc.procs["gateway"] = subprocess.Popen(argv, stderr=self.svc.logs["gateway"],
                                                     env=self.svc.env)
        self.wait_port()

    def wait_port(self, timeout=10):
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("the gateway did not start listening")

    def start(self, script=None, workers=1, session_args=(), worker_args=(), gateway_args=()):
        self.start_model(script)
        self.svc.start("monitor")
        self.svc.start("store")
        self.svc.start("session", list(session_args))
        for i in range(workers):
            self.svc.start("worker%d" % (i + 1),
                           ["--openai-base-url", self.model_url + "/v1",
                            "--openai-api-key", MODEL_KEY] + list(worker_args))
        self.gateway_args = list(gateway_args)
        self.start_gateway()
        self.wait_ready()

    def wait_ready(self, timeout=30):
        """Until /v1/health/ready says 200: the store told its epoch, the
        session service finished its startup scan (before that it answers
        -32011 'starting', which a client would retry), and corral-monitor
        says a store, a session service and a connected worker are alive."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(self.http_url + "/v1/health/ready", timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.05)
        raise RuntimeError("the stack did not become ready in %d s" % timeout)

    def restart(self, name, extra=()):
        self.svc.kill(name, signal.SIGKILL)
        if name == "gateway":
            self.start_gateway(extra)
        else:
            self.svc.start(name, list(extra))

    def serve_control(self):
        """A loopback HTTP endpoint through which a command run by main()
        kills and restarts the gateway mid-test: POST /gateway/kill (SIGKILL),
        /gateway/start (same port), /gateway/restart.  Answers 204, or 404/500
        with the reason.  Returns its base URL (exported as CORRAL_CONTROL)."""
        import http.server
        import threading
        stack = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                actions = {"/gateway/kill": lambda: stack.svc.kill("gateway", signal.SIGKILL),
                           "/gateway/start": stack.start_gateway,
                           "/gateway/restart": lambda: stack.restart("gateway")}
                act = actions.get(self.path)
                try:
                    if act is None:
                        raise KeyError("unknown action %s" % self.path)
                    act()
                    self.send_response(204)
                    self.end_headers()
                except Exception as e:  # noqa: BLE001 - reported to the caller
                    body = str(e).encode()
                    self.send_response(404 if isinstance(e, KeyError) else 500)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)

            def log_message(self, *args):
                pass

        srv = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        return "http://127.0.0.1:%d" % srv.server_address[1]

    def stop(self, keep=None):
        self.svc.stop_all()
        if self.fake and self.fake.poll() is None:
            self.fake.terminate()
            self.fake.wait(5)
        if keep is None:
            keep = os.environ.get("CORRAL_TEST_KEEP") == "1"
        if not keep:
            shutil.rmtree(self.tmp, ignore_errors=True)

    # ---- keys and addresses -------------------------------------------------

    def key(self, tenant, admin=False):
        argv = [self.keys_bin, "create", "--tenant", tenant, "--store-endpoint",
                self.svc.ep["store"]]
        if admin:
            argv.append("--admin")
        out = subprocess.run(argv, capture_output=True, text=True, timeout=20)
        for line in out.stdout.splitlines():
            if line.startswith("key: "):
                return line[5:].strip()
        raise RuntimeError("corral-keys failed: " + out.stderr)

    @property
    def ws_url(self):
        return "ws://127.0.0.1:%d/acp" % self.port

    @property
    def http_url(self):
        return "http://127.0.0.1:%d" % self.port

    def log(self, name):
        with open(os.path.join(self.tmp, name + ".log"), "rb") as f:
            return f.read().decode(errors="replace")


def main():
    """corral_stack.py BUILD_DIR [OPTIONS] -- COMMAND...: run COMMAND against a stack.

    Options (before the --):
      --script FILE        the scripted model's script (JSON), instead of the default
      --session-args ARGS  extra corral-session arguments (one shell-quoted string),
                           after the default --permission-timeout 20s
      --worker-args ARGS   extra corral-worker arguments (one shell-quoted string)
    """
    if "--" not in sys.argv or sys.argv.index("--") < 2:
        print(main.__doc__)
        return 2
    i = sys.argv.index("--")
    import argparse
    import shlex
    ap = argparse.ArgumentParser(prog="corral_stack.py", add_help=False)
    ap.add_argument("build")
    ap.add_argument("--script")
    ap.add_argument("--session-args", default="")
    ap.add_argument("--worker-args", default="")
    opts = ap.parse_args(sys.argv[1:i])
    script = None
    if opts.script:
        with open(opts.script) as f:
            script = json.load(f)
    stack = Stack(opts.build)
    rc = 1
    try:
        stack.start(script=script,
                    session_args=["--permission-timeout", "20s"] + shlex.split(opts.session_args),
                    worker_args=shlex.split(opts.worker_args))
        env = dict(os.environ, CORRAL_URL=stack.ws_url, CORRAL_HTTP=stack.http_url,
                   CORRAL_KEY=stack.key("tenant-a"), CORRAL_KEY_B=stack.key("tenant-b"),
                   CORRAL_WORKSPACE=stack.workspace, CORRAL_CONTROL=stack.serve_control())
        rc = subprocess.run(sys.argv[i + 1:], env=env, timeout=600).returncode
    finally:
        if rc:
            for name in ("gateway", "session", "worker1"):
                print("---- %s log (tail) ----" % name)
                try:
                    print(stack.log(name)[-3000:])
                except OSError:  # it never started; stop the rest all the same
                    print("(no log)")
        stack.stop()
    return rc


if __name__ == "__main__":
    sys.exit(main())
