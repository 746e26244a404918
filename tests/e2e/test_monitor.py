#!/usr/bin/python3
"""End to end: corral-monitor through the gateway.  A whole stack (monitor,
store, session, the scripted model, a worker, the gateway), then:

  - /v1/health/ready is 200; kill -9 corral-store -> 503 "store
    unreachable" within a few seconds, restart it -> 200; the same for
    corral-session ("session service unreachable"), the last worker ("no
    worker connected") and corral-monitor itself ("monitor unreachable",
    while /metrics still answers with the gateway's own part);
  - after prompts that stream text and run a tool, /metrics holds every
    family docs/monitor.md promises, with real values (turns by stop
    reason, tokens and call latency by model, tool durations, commit
    latency, RSS of every process...), no family twice, and passes
    `promtool check metrics`;
  - hostile bytes on the monitor's two sockets are counted and ignored.

usage: test_monitor.py BUILD_DIR
"""
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from corral_stack import MODEL_KEY, Stack  # noqa: E402

import zmq  # noqa: E402  (python3-zmq, as the integration tests use)

SCRIPT = {"rules": [
    {"name": "read", "match": "read",
     "responses": [[{"text": "Reading.", "chunks": 2},
                    {"tool_call": {"name": "read_file", "arguments": {"path": "notes.txt"}},
                     "fragments": 2}],
                   [{"text": "Read it.", "chunks": 2}]]},
    {"name": "default", "match": "*", "responses": [[{"text": "hello there", "chunks": 3}]]},
]}


def check(cond, what):
    if not cond:
        print("FAIL:", what, flush=True)
        raise AssertionError(what)
    print("ok:", what, flush=True)


def http(url, method="GET", body=None, key=None, timeout=30):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    if key:
        req.add_header("Authorization", "Bearer " + key)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def ready(stack):
    status, body = http(stack.http_url + "/v1/health/ready", timeout=10)
    return status, json.loads(body)


def wait_status(stack, want, reason=None, within=10.0):
    """Poll readiness until it is `want` (and the reason contains `reason`);
    returns the seconds it took."""
    t0 = time.time()
    last = None
    while time.time() - t0 < within:
        status, body = ready(stack)
        last = (status, body)
        if status == want and (reason is None or reason in body.get("reason", "")):
            return time.time() - t0
        time.sleep(0.1)
    raise AssertionError("readiness did not become %d (%s) within %.0f s; last %r"
                         % (want, reason, within, last))


def metrics(stack):
    status, text = http(stack.http_url + "/metrics")
    check(status == 200, "/metrics answers 200")
    return text


def samples(text):
    """{(name, frozenset(labels)): value} from Prometheus text."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$', line)
        assert m, "bad sample line %r" % line
        labels = frozenset(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"',
                                      m.group(3) or ""))
        out[(m.group(1), labels)] = float(m.group(4))
    return out


def value(s, name, **labels):
    """Sum of the samples of name whose labels include these."""
    want = set(labels.items())
    return sum(v for (n, ls), v in s.items() if n == name and want <= set(ls))


def has(s, name, **labels):
    want = set(labels.items())
    return any(n == name and want <= set(ls) for (n, ls) in s)


def promtool(text, what):
    p = subprocess.run(["promtool", "check", "metrics"], input=text.encode(),
                       capture_output=True, timeout=30)
    check(p.returncode == 0, "promtool check metrics passes (%s): %s %s"
          % (what, p.stdout.decode()[-800:], p.stderr.decode()[-800:]))


def prompt(stack, key, sid, text):
    status, body = http(stack.http_url + "/v1/sessions/%s/prompt" % sid, "POST",
                        {"prompt": text}, key=key, timeout=60)
    check(status == 200, "prompt %r answered: %s %s" % (text, status, body[:300]))
    return json.loads(body)


SERVICES = ("store", "session", "worker", "gateway", "monitor")


def t_metrics(stack, key):
    with open(os.path.join(stack.workspace, "notes.txt"), "w") as f:
        f.write("some notes\n")
    status, body = http(stack.http_url + "/v1/sessions", "POST", {"cwd": stack.workspace},
                        key=key)
    check(status == 201, "session created: %s %s" % (status, body[:200]))
    sid = json.loads(body)["sessionId"]
    check(prompt(stack, key, sid, "hi")["stopReason"] == "end_turn", "a plain turn")
    check(prompt(stack, key, sid, "read my notes")["stopReason"] == "end_turn",
          "a turn with a tool call")
    # Every figure below comes from some service's heartbeat (once a second
    # each; a busy machine may take longer): scrape until all of them hold
    # or the deadline passes, then report each one.
    def expectations(s):
        return [
            (all(value(s, "corral_process_resident_memory_bytes", service=svc) > 1e5
                 for svc in SERVICES), "RSS of every process"),
            (all(value(s, "corral_up", service=svc) >= 1 for svc in SERVICES),
             "every service is up"),
            (all(has(s, "corral_process_cpu_seconds_total", service=svc)
                 and has(s, "corral_process_open_fds", service=svc) for svc in SERVICES),
             "process stats of every service"),
            (value(s, "corral_ready") == 1, "corral_ready 1"),
            (has(s, "corral_connections", service="gateway", kind="http")
             and has(s, "corral_connections", service="gateway", kind="ws"),
             "gateway connections by kind"),
            (value(s, "corral_client_requests_total", service="gateway") >= 3,
             "client requests"),
            (value(s, "corral_sessions", service="session", state="idle") >= 1,
             "sessions by state: idle"),
            (value(s, "corral_turns_started_total") >= 2, "turns started"),
            (value(s, "corral_turns_finished_total", stop_reason="end_turn") >= 2,
             "turns finished by stop reason"),
            (value(s, "corral_events_total") >= 10, "events persisted and published"),
            (value(s, "corral_session_workers_connected") == 1, "one worker connected"),
            (value(s, "corral_store_commit_seconds_count") >= 5
             and value(s, "corral_store_commit_seconds_bucket", le="+Inf")
             == value(s, "corral_store_commit_seconds_count"),
             "store commit latency histogram"),
            (value(s, "corral_store_commits_total") >= 5, "store commits"),
            (has(s, "corral_store_entries", db="events"), "store entries by database"),
            (has(s, "corral_queue_depth", queue="session_events_unacked")
             and has(s, "corral_queue_depth", queue="gateway_client_frames")
             and has(s, "corral_queue_depth", queue="worker_outbox"), "queue depths"),
            (value(s, "corral_model_call_seconds_count", model="corral-fake") >= 3,
             "model call latency by model"),
            (value(s, "corral_model_first_token_seconds_count", model="corral-fake") >= 3,
             "model first-output latency by model"),
            (value(s, "corral_model_calls_total", model="corral-fake", outcome="ok") >= 3,
             "model calls by outcome"),
            (value(s, "corral_model_tokens_total", model="corral-fake", kind="output") > 0
             and value(s, "corral_model_tokens_total", model="corral-fake", kind="input") > 0,
             "tokens by model"),
            (value(s, "corral_tool_seconds_count", tool="read_file") == 1, "tool duration"),
            (value(s, "corral_worker_capacity") >= 1 and has(s, "corral_worker_turns_running"),
             "worker capacity and turns running"),
            (value(s, "corral_monitor_heartbeats_total") >= 10, "heartbeats counted"),
        ]

    deadline = time.time() + 30
    while True:
        text = metrics(stack)
        s = samples(text)
        if all(ok for ok, _ in expectations(s)) or time.time() > deadline:
            break
        time.sleep(0.3)

    # Every family once: HELP and TYPE lines are not repeated.
    types = [line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")]
    check(len(types) == len(set(types)), "no family appears twice: %r"
          % sorted(t for t in types if types.count(t) > 1))
    for ok, what in expectations(s):
        check(ok, what)
    check(value(s, "corral_gateway_monitor_up") == 1, "the monitor answered the scrape")
    check(value(s, "corral_gateway_requests_total") >= 2, "the gateway's own metrics")
    promtool(text, "the whole system")


def t_hostile_input(stack):
    ctx = zmq.Context.instance()
    pub = ctx.socket(zmq.PUB)
    pub.linger = 0
    pub.connect(stack.svc.ep["monitor_in"])
    api = ctx.socket(zmq.DEALER)
    api.linger = 0
    api.connect(stack.svc.ep["monitor"])
    before = samples(metrics(stack))
    for _ in range(3):
        api.send(b"\x94\x01\x79\x07\x80\xff")  # trailing garbage
        api.send(b"not msgpack")
    replies = 0
    deadline = time.time() + 15
    while replies < 6 and time.time() < deadline:
        if api.poll(200):
            api.recv()
            replies += 1
    check(replies == 6, "every bad request got an answer (an error)")
    # A PUB drops what it sends before its connection is up (however long
    # that takes on a busy machine): send the bad heartbeats until counted.
    reasons = ("frames", "undecodable", "request")
    deadline = time.time() + 15
    while True:
        pub.send(b"one frame only")
        pub.send_multipart([b"hb/x/", b"\xdf\xff\xff\xff\xff"])  # a map claiming 4 G entries
        pub.send_multipart([b"hb/x/", b"\x94\x01\x78\x00\x80"])  # heartbeat without fields
        time.sleep(0.2)
        after = samples(metrics(stack))
        grew = [r for r in reasons
                if value(after, "corral_monitor_dropped_total", reason=r)
                > value(before, "corral_monitor_dropped_total", reason=r)]
        if len(grew) == len(reasons) or time.time() > deadline:
            break
    for reason in reasons:
        check(reason in grew, "bad input counted: %s" % reason)
    check(stack.svc.procs["monitor"].poll() is None, "the monitor is still running")
    check(ready(stack)[0] == 200, "and still says ready")
    pub.close()
    api.close()


def t_readiness_flips(stack):
    check(ready(stack)[0] == 200, "ready with the whole stack")
    worker_args = ["--openai-base-url", stack.model_url + "/v1", "--openai-api-key", MODEL_KEY]
    # Detection takes about 3 s (three missed heartbeats); the bounds leave
    # room for a busy machine and the measured times are printed.
    cases = [("store", "store unreachable", [], 20),
             ("session", "session service unreachable", [], 20),
             ("worker1", "no worker connected", worker_args, 20),
             ("monitor", "monitor unreachable", [], 20)]
    for name, reason, args, within in cases:
        stack.svc.kill(name, signal.SIGKILL)
        took = wait_status(stack, 503, reason, within)
        check(True, "kill -9 %s: 503 '%s' after %.1f s" % (name, reason, took))
        status, body = ready(stack)
        check(status == 503 and body["status"] == "not_ready", "not ready: %r" % body)
        if name == "monitor":
            text = metrics(stack)
            check("corral_gateway_monitor_up 0" in text
                  and "corral_gateway_requests_total" in text,
                  "/metrics without the monitor: the gateway's own part")
            promtool(text, "without the monitor")
        stack.svc.start(name, args)
        took = wait_status(stack, 200, None, 30)
        check(True, "%s back: 200 after %.1f s" % (name, took))


def main():
    build = sys.argv[1]
    stack = Stack(build)
    ok = False
    try:
        stack.start(script=SCRIPT)
        key = stack.key("tenant-m")
        t_metrics(stack, key)
        t_hostile_input(stack)
        t_readiness_flips(stack)
        ok = True
    finally:
        if not ok:
            stack.svc.dump_logs()
        stack.stop()
    print("all monitor checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
