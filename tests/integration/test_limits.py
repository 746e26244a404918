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
  usage    once: with corral-store stopped (SIGSTOP) as a turn ends, the
           session service resends store.usage.add; the tenant's day and
           the key's row still count the turn once.

usage: test_limits.py <corral-store> <corral-session> <corral-worker> <corral-fake-model>
"""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid

from corral_bus import *  # noqa: F401,F403

EV_TOOL_UPDATE, EV_USAGE, EV_POLICY = 207, 209, 214
E_MEMORY_LIMIT, E_BUDGET = -29, -30
STORE_USAGE_GET, USAGE = 31, 51
ALLOC = ("python3 -c \"import time; print('allocating', flush=True); "
         "a = b'x' * (300 << 20); time.sleep(60)\"")
SESSION_ARGS = ["--session-budget-tokens", "2500"]
SLEEPS = "sleep 313 & sleep 314; echo never"


def script():
    t = lambda text: {"text": text, "chunks": 2}  # noqa: E731
    call = lambda name, **args: {"tool_call": {"name": name, "arguments": args}}  # noqa: E731
    usage = lambda i, o: {"usage": {"input": i, "output": o}}  # noqa: E731
    return {"rules": [
        {"name": "alloc", "match": "allocate",
         "responses": [[call("run_command", command=ALLOC), usage(10, 5)],
                       [t("allocated"), usage(10, 5)]]},
        {"name": "sleeps", "match": "sleepers",
         "responses": [[call("run_command", command=SLEEPS), usage(10, 5)],
                       [t("slept"), usage(10, 5)]]},
        # Each model call reports 600 + 400 = 1000 tokens.
        {"name": "spend", "match": "spend",
         "responses": [[t("spent"), usage(600, 400)]]},
        # Model calls of 1000 tokens each, then a slow one that a budget
        # stop must cut short.
        {"name": "loop", "match": "loop",
         "responses": [[call("list_dir", path="."), usage(600, 400)],
                       [call("list_dir", path="."), usage(600, 400)],
                       [call("list_dir", path="."), usage(600, 400)],
                       [{"pause_ms": 30000}, {"text": "never seen"}, usage(600, 400)]]},
        # 1000 tokens after a pause, while the store is stopped.
        {"name": "slowpay", "match": "slowpay",
         "responses": [[{"pause_ms": 1000}, t("paid"), usage(600, 400)]]},
        {"name": "default", "match": "*", "responses": [[t("hello"), usage(10, 5)]]},
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
                       "--orphan-sweep", "500ms", "--prices", tmp + "/prices.json"]
        with open(tmp + "/prices.json", "w") as f:
            json.dump({"*": {"input": 1, "output": 1}}, f)  # 1000 tokens = $0.001
        svc.start("store")
        svc.start("session", SESSION_ARGS)
        svc.start("worker1", worker_args)
        client = Client(svc.ep["client"])
        store = Client(svc.ep["store"])
        sub = subscribe_events(svc.ep["events"])
        seen = []

        def pump_sub():
            while sub.poll(0):
                seen.append(unpack(sub.recv_multipart()[1]))

        def new_session(cwd, tenant="t1"):
            r = session_new_when_ready(client, {"tenant": tenant, "cwd": cwd, "mode": "auto",
                                                "backend": "openai", "model": "fake"})
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
        check(upd and upd[-1]["content"] == "allocating\n[%s; the command's processes were "
              "killed]" % msg, "the tool result keeps the output and says so: %r"
              % (upd and upd[-1]["content"]))
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
        wait_for(lambda: not procs_matching("sleep 31", True), 15, "the next worker killed the orphans")
        check(True, "the next worker killed both orphans")

        def orphan_lines():
            with open(tmp + "/worker2.log") as f:
                return [json.loads(x) for x in f if "killed orphan" in x]
        wait_for(lambda: len(orphan_lines()) >= 2, 10, "the orphans in the worker's log")
        lines = orphan_lines()
        check(len(lines) == 2 and all("left by dead worker" in x["msg"] for x in lines),
              "each orphan is recorded in the worker's log")
        check(any("2 in all" in x["msg"] for x in lines), "and counted")

        # ---------------------------------------------------------------- budgets
        E = E_BUDGET

        def refused(r, pattern, what):
            check(r[1] == ERROR and r[3]["code"] == E, "%s is refused before a turn (%s)"
                  % (what, r[3]))
            check(re.fullmatch(pattern, r[3]["message"]) is not None,
                  "with a clear message: %s" % r[3]["message"])

        def stopped(r, sid, pattern, what):
            check(r[1] == PROMPT_REPLY and r[3]["stop_reason"] == "failed"
                  and r[3].get("code") == E, "%s: the turn is stopped failed/budget (%s)"
                  % (what, r[3]))
            check(re.fullmatch(pattern, r[3].get("message", "")) is not None,
                  "with a clear message: %s" % r[3].get("message"))
            pol = [p for p in events_of(sid, EV_POLICY) if p["policy"] == "budget"]
            check(pol and pol[-1]["action"] == "cancel" and pol[-1]["message"] == r[3]["message"],
                  "a policy event (budget, cancel) says so")

        # Per session (corral-session --session-budget-tokens 2500): a turn
        # of 1000-token model calls is stopped at the third.
        a = new_session("bud-session")["id"]
        t0 = time.time()
        r = run(a, "loop through it", timeout=60)
        stopped(r, a, r"budget exceeded during the turn: this session used 3 0\d\d of its "
                r"2 500 tokens; the turn was stopped; raise the budget or start a new session",
                "session budget")
        check(time.time() - t0 < 25, "before the slow (30 s) fourth call ran out (%.1f s)"
              % (time.time() - t0))
        texts = "".join(e[3].get("text", "") for e in seen
                        if e[1] == EV_AGENT_MESSAGE and e[3]["session"] == a)
        check("never seen" not in texts, "the call after the stop streamed nothing")
        reqs = json.load(urllib.request.urlopen(base + "/_fake/requests"))
        check(len([q for q in reqs if q["rule"] == "loop"]) == 3,
              "the worker made no model call past the budget (it knows what is left)")
        r = run(a, "hello")
        refused(r, r"budget exceeded: this session used 3 0\d\d of its 2 500 tokens; raise "
                r"the budget or start a new session", "the next prompt of that session")
        r = run(new_session("bud-other")["id"], "hello")
        check(r[1] == PROMPT_REPLY and r[3]["stop_reason"] == "end_turn",
              "another session is not affected")

        # Per key, tokens: 1500 for the key's turns in every session.
        key1 = uuid.uuid4().bytes
        k1 = {"key": key1, "key_budget_tokens": 1500}
        b = new_session("bud-key")["id"]
        r = run(b, "spend some", extra=k1)
        check(r[3]["stop_reason"] == "end_turn", "a key's first turn (1000 tokens) runs")
        r = run(b, "spend more", extra=k1)
        stopped(r, b, r"budget exceeded during the turn: this API key used 2 0\d\d of its "
                r"1 500 tokens; the turn was stopped; raise the key's budget or use another "
                r"key", "key budget")
        c = new_session("bud-key-2")["id"]
        key_msg = (r"budget exceeded: this API key used 2 0\d\d of its 1 500 tokens; raise "
                   r"the key's budget or use another key")
        refused(run(c, "hello", extra=k1), key_msg, "the key's prompt in another session")
        r = run(c, "hello", extra={"key": uuid.uuid4().bytes, "key_budget_tokens": 1500})
        check(r[1] == PROMPT_REPLY and r[3]["stop_reason"] == "end_turn",
              "another key works in that session")

        # Per key, cost: $0.0015 at $1 per million tokens.
        key2 = uuid.uuid4().bytes
        k2 = {"key": key2, "key_budget_micros": 1500}
        d = new_session("bud-cost")["id"]
        check(run(d, "spend", extra=k2)[3]["stop_reason"] == "end_turn", "a $0.001 turn runs")
        stopped(run(d, "spend", extra=k2), d,
                r"budget exceeded during the turn: this API key cost \$0\.002\d* of its "
                r"\$0\.0015 budget; the turn was stopped; raise the key's budget or use "
                r"another key", "cost budget")
        cost_msg = (r"budget exceeded: this API key cost \$0\.002\d* of its \$0\.0015 "
                    r"budget; raise the key's budget or use another key")
        refused(run(d, "hello", extra=k2), cost_msg, "the cost key's next prompt")

        # Usage counts once though the session service resends it: the
        # store is stopped from before the turn ends until two resends
        # (2 s apart) are queued behind the first add.
        key3 = uuid.UUID(bytes=uuid.uuid4().bytes)
        e = new_session("usage-once", tenant="t-once")["id"]
        sp = svc.procs["store"]
        stop = threading.Timer(0.5, sp.send_signal, (signal.SIGSTOP,))
        cont = threading.Timer(6.0, sp.send_signal, (signal.SIGCONT,))
        stop.start()
        cont.start()
        try:
            r = run(e, "slowpay", tenant="t-once", extra={"key": key3.bytes})
        finally:
            stop.cancel()
            cont.cancel()
            sp.send_signal(signal.SIGCONT)
        check(r[1] == PROMPT_REPLY and r[3]["stop_reason"] == "end_turn",
              "a turn that ends while the store is stopped")

        def usage_rows(tenant, frm, to):
            r = store.call(STORE_USAGE_GET, {"tenant": tenant, "from_day": frm, "to_day": to})
            check(r[1] == USAGE, "store.usage.get %s" % tenant)
            return r[3].get("rows", [])

        today = int(time.strftime("%Y%m%d", time.gmtime()))
        rows = usage_rows("t-once", today - 1, today)  # a turn across midnight
        got = [(x.get("turns", 0), x["usage"].get("input_tokens", 0)) for x in rows]
        check(got == [(1, 600)], "the tenant's day counts the turn once: %r" % got)
        rows = usage_rows("key:%s" % key3, 0, 0)
        got = [(x.get("turns", 0), x["usage"].get("input_tokens", 0)) for x in rows]
        check(got == [(1, 600)], "the key's usage counts the turn once: %r" % got)

        # A key's usage survives a restart of corral-session (it is in the
        # store), and a session's with its record.
        svc.kill("session")
        svc.start("session", SESSION_ARGS)
        client = Client(svc.ep["client"])
        time.sleep(3.5)  # the worker notices the new session service
        deadline = time.time() + 15
        while True:
            r = run(c, "hello", extra=k1)
            if r[1] != ERROR or r[3]["code"] != -24 or time.time() > deadline:
                break
            time.sleep(0.2)
        refused(r, key_msg, "after a restart, the spent key")
        refused(run(a, "hello"), r"budget exceeded: this session used 3 0\d\d of its 2 500 "
                r"tokens; raise the budget or start a new session",
                "after a restart, the spent session")
        r = run(c, "hello")
        check(r[1] == PROMPT_REPLY and r[3]["stop_reason"] == "end_turn",
              "and a prompt without a spent budget still runs")

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
