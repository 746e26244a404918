#!/usr/bin/python3
"""Limits, end to end: real corral-store, corral-session, corral-worker and
the scripted model server.

  memory   a command that allocates 300 MB under a 64 MiB turn limit is
           killed; the tool result, the policy event and the failed turn
           say so; no process of it is left; the next prompt works and
           sees the result in its conversation.
  orphans  a worker killed with -9 while `sleep & sleep` runs leaves the
           sleeps behind; the next worker finds them by their marker and
           kills them, and says so in its log.
  budgets  per session (corral-session --session-budget-tokens) and per
           key (the prompt's key fields): a prompt is refused before its
           turn once the budget is spent, and a turn that passes the budget
           while it runs is stopped (policy event "budget", failed/budget);
           key usage survives a restart of corral-session.

usage: test_limits.py <corral-store> <corral-session> <corral-worker> <corral-fake-model>
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid

from corral_bus import *  # noqa: F401,F403

EV_TOOL_UPDATE, EV_USAGE, EV_POLICY = 207, 209, 214
E_MEMORY_LIMIT, E_BUDGET = -29, -30
ALLOC = "python3 -c \"import time; a = b'x' * (300 << 20); time.sleep(60)\""
SESSION_ARGS = []
SLEEPS = "sleep 313 & sleep 314; echo never"


def script():
    t = lambda text: {"text": text, "chunks": 2}  # noqa: E731
    call = lambda name, **args: {"tool_call": {"name": name, "arguments": args}}  # noqa: E731
    usage = lambda i, o: {"usage": {"input": i, "output": o}}  # noqa: E731
    return {"rules": [
        {"name": "alloc", "match": "allocate",
         "responses": [[call("run_command", command=ALLOC)], [t("allocated")]]},
        {"name": "sleeps", "match": "sleepers",
         "responses": [[call("run_command", command=SLEEPS)], [t("slept")]]},
        # Each model call reports 600 + 400 = 1000 tokens.
        {"name": "spend", "match": "spend",
         "responses": [[t("spent"), usage(600, 400)]]},
        # Three model calls of 1000 tokens each (two tool rounds).
        {"name": "loop", "match": "loop",
         "responses": [[call("list_dir", path="."), usage(600, 400)],
                       [call("list_dir", path="."), usage(600, 400)],
                       [t("looped"), usage(600, 400)]]},
        {"name": "default", "match": "*", "responses": [[t("hello")]]},
    ]}


def procs_matching(needle, prefix=False):
    """Running (not zombie) processes whose command line contains (or,
    with prefix, starts with) needle."""
    found = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % d, "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
            with open("/proc/%s/stat" % d) as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        hit = cmd.startswith(needle) if prefix else needle in cmd
        if hit and state != "Z" and int(d) != os.getpid():
            found.append(int(d))
    return found


def wait_for(cond, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    check(False, what)


def main():
    store_bin, session_bin, worker_bin, fake_bin = sys.argv[1:5]
    tmp = tempfile.mkdtemp(prefix="corral-it-limits-")
    svc = Services(tmp, {"store": store_bin, "session": session_bin, "worker": worker_bin})
    fake = None
    ok = False
    try:
        with open(tmp + "/script.json", "w") as f:
            json.dump(script(), f)
        fake = subprocess.Popen([fake_bin, "--fake-script", tmp + "/script.json"],
                                stdout=subprocess.PIPE, stderr=open(tmp + "/fake.log", "ab"))
        base = fake.stdout.readline().decode().split()[-1]
        worker_args = ["--openai-base-url", base + "/v1", "--openai-api-key", "k",
                       "--turn-memory-limit", "64M", "--turn-memory-poll", "100ms",
                       "--orphan-sweep", "500ms"]
        svc.start("store")
        svc.start("session", SESSION_ARGS)
        svc.start("worker1", worker_args)
        client = Client(svc.ep["client"])
        store = Client(svc.ep["store"])
        sub = ctx.socket(zmq.SUB)
        sub.linger = 0
        sub.connect(svc.ep["events"])
        sub.setsockopt(zmq.SUBSCRIBE, b"s/")
        seen = []

        def pump_sub():
            while sub.poll(0):
                seen.append(unpack(sub.recv_multipart()[1]))

        def new_session(cwd, tenant="t1"):
            deadline = time.time() + 10
            while True:
                r = client.call(SESSION_NEW, {"tenant": tenant, "cwd": cwd, "mode": "auto",
                                              "backend": "openai", "model": "fake"})
                if r[1] == SESSION or time.time() > deadline:
                    break
                time.sleep(0.1)
            check(r[1] == SESSION, "a session in %s" % cwd)
            return r[3]["session"]

        def run(sid, text, idem=None, timeout=20, on_event=None, extra=None, tenant="t1"):
            body = {"tenant": tenant, "id": sid, "idem": idem or str(uuid.uuid4()),
                    "prompt": prompt(text)}
            body.update(extra or {})
            c = client.send(SESSION_PROMPT, body)
            deadline = time.time() + timeout
            while time.time() < deadline:
                if client.s.poll(20):
                    m = unpack(client.s.recv())
                    if m[2] == c:
                        pump_sub()
                        return m
                n = len(seen)
                pump_sub()
                if on_event:
                    for ev in seen[n:]:
                        on_event(ev)
            raise AssertionError("no answer to prompt %r" % text)

        def events_of(sid, kind):
            evs = store.call(STORE_EVENTS_RANGE, {"session": sid, "after_seq": 0})[3]["events"]
            return [unpack(e)[3] for e in evs if unpack(e)[1] == kind]

        # ---------------------------------------------------------------- memory
        s = new_session("mem")
        sid = s["id"]
        time.sleep(1.0)  # the worker announces itself
        t0 = time.time()
        r = run(sid, "allocate a lot", timeout=30)
        took = time.time() - t0
        check(r[1] == PROMPT_REPLY and r[3]["stop_reason"] == "failed",
              "the allocating turn failed (%s)" % r[3])
        check(r[3].get("code") == E_MEMORY_LIMIT, "with the memory_limit code")
        msg = r[3].get("message", "")
        check(msg.startswith("memory limit 64 MiB exceeded by `python3 -c") and "(peak " in msg,
              "and a clear message: %s" % msg)
        peak = int(msg.rsplit("(peak ", 1)[1].split()[0])
        check(64 < peak <= 400, "the peak is over the limit (%d MiB)" % peak)
        check(took < 15, "well before the command's own 60 s (%.1f s)" % took)
        pol = events_of(sid, EV_POLICY)
        check(pol and pol[-1]["policy"] == "memory" and pol[-1]["action"] == "kill"
              and pol[-1]["message"] == msg, "a policy event (memory, kill) with the message")
        upd = [u for u in events_of(sid, EV_TOOL_UPDATE) if u.get("status") == "failed"]
        check(upd and msg in upd[-1]["content"], "the tool result says so too")
        ended = events_of(sid, EV_TURN_ENDED)[-1]
        check(ended["stop_reason"] == "failed" and ended["code"] == E_MEMORY_LIMIT,
              "turn_ended carries failed/memory_limit")
        wait_for(lambda: not procs_matching("a = b'x'"), 5, "no process of the command is left")
        check(True, "no process of the command is left")
        r = run(sid, "hello again")
        check(r[3]["stop_reason"] == "end_turn", "the session stays usable: the next prompt works")
        reqs = json.load(urllib.request.urlopen(base + "/_fake/requests"))
        check("memory limit 64 MiB exceeded" in json.dumps(reqs[-1]["body"]),
              "and its conversation holds the killed command's result")

        # ---------------------------------------------------------------- orphans
        o = new_session("orphans")
        state = {}

        def kill_when_running(ev):
            if (ev[1] == EV_TOOL_UPDATE and ev[3]["session"] == o["id"]
                    and ev[3].get("status") == "in_progress" and "killed" not in state):
                wait_for(lambda: len(procs_matching("sleep 31", True)) >= 2, 5, "the sleeps run")
                state["before"] = procs_matching("sleep 31", True)
                svc.kill("worker1")
                state["killed"] = True

        r = run(o["id"], "sleepers please", on_event=kill_when_running, timeout=20)
        check(r[3]["stop_reason"] == "failed" and r[3].get("code") == E_WORKER_LOST,
              "the turn of the killed worker ends worker_lost")
        left = procs_matching("sleep 31", True)
        check(len(left) == 2 and sorted(left) == sorted(state["before"]),
              "its command's sleeps outlived it (pdeathsig covers only the shell)")
        svc.start("worker2", worker_args)
        wait_for(lambda: not procs_matching("sleep 31", True), 5, "the next worker killed the orphans")
        check(True, "the next worker killed both orphans")
        time.sleep(0.3)
        with open(tmp + "/worker2.log") as f:
            lines = [json.loads(x) for x in f if "killed orphan" in x]
        check(len(lines) == 2 and all("left by dead worker" in x["msg"] for x in lines),
              "each orphan is recorded in the worker's log")
        check(any("2 in all" in x["msg"] for x in lines), "and counted")

        ok = True
        print("PASS")
    finally:
        if not ok:
            svc.dump_logs()
        svc.stop_all()
        if fake:
            fake.terminate()
            fake.wait(5)
        for p in procs_matching("sleep 31", True) + procs_matching("a = b'x'"):
            os.kill(p, signal.SIGKILL)
        if ok:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
