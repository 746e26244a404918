#!/usr/bin/python3
"""Policies end to end (docs/policies.md): real corral-store,
corral-session, corral-worker, the scripted model server and
corral-monitor with tiny limits; a SUB on the events sees what clients see.

  actions   the session service's side alone (this script plays the
            monitor): warn (idempotent), hibernate then a prompt resumes,
            cancel without a turn, close, bad requests, the census
  stuck     --stuck-repeat 3: the same read_file over and over is warned
            at 3 and cancelled at 6; --stuck-silence 1.5s: a silent
            command and a stalled model stream are warned, then cancelled
  idle      --session-idle-timeout 2s: a session idle after its turn is
            hibernated (and sessions made before the monitor started, from
            its census); a prompt resumes it with its whole history; a turn
            interrupted by a restart of corral-session is not taken for a
            running one (the census after the reconnect)
  duration  --session-max-duration 10s (--close-grace 6s on the session
            service): a warning with the time left, then the close; a
            running turn that ends within the grace ends normally before
            the close; one that does not is cancelled, then closed

usage: test_policies.py <corral-store> <corral-session> <corral-worker>
                        <corral-fake-model> <corral-monitor>
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

from corral_bus import *  # noqa: F401,F403

MON_METRICS, MON_ACTION, MON_CENSUS, MON_CENSUS_REPLY = 123, 126, 140, 141
EV_TOOL_CALL, EV_POLICY = 206, 214
SESSION_CLOSE = 64
E_INVALID = -1
KEY = "sk-test-policies-0123456789"


def script():
    t = lambda text, n=2: {"text": text, "chunks": n}  # noqa: E731
    call = lambda name, **args: {"tool_call": {"name": name, "arguments": args}, "fragments": 2}  # noqa: E731
    return {"rules": [
        {"name": "hello", "match": "hello", "responses": [[t("Hello there, friend.")]]},
        # the same call for ever (the last response repeats), ~0.3 s a call
        {"name": "loop", "match": "loop", "chunk_delay_ms": 100,
         "responses": [[t("Again."), call("read_file", path="notes.txt")]]},
        {"name": "sleep", "match": "silent command",
         "responses": [[call("run_command", command="sleep 37; echo done")], [t("done")]]},
        {"name": "stall", "match": "stall", "responses": [[t("a"), {"stall": True}]]},
        # about 6 s of streaming
        {"name": "slow", "match": "slow", "chunk_delay_ms": 600,
         "responses": [[t("one two three four five six seven eight nine ten", 10)]]},
        {"name": "default", "match": "*", "responses": [[t("ok")]]},
    ]}


def main():
    store_bin, session_bin, worker_bin, fake_bin, monitor_bin = sys.argv[1:6]
    tmp = tempfile.mkdtemp(prefix="corral-it-policies-")
    svc = Services(tmp, {"store": store_bin, "session": session_bin,
                               "worker": worker_bin, "monitor": monitor_bin})
    fake, passed = None, False
    try:
        with open(tmp + "/script.json", "w") as f:
            json.dump(script(), f)
        fake = subprocess.Popen([fake_bin, "--fake-script", tmp + "/script.json",
                                 "--fake-api-key", KEY], stdout=subprocess.PIPE,
                                stderr=open(tmp + "/fake.log", "ab"))
        base = fake.stdout.readline().decode().split()[-1]
        svc.start("store")
        svc.start("session", ["--close-grace", "6s", "--log-level", "debug"])
        svc.start("worker1", ["--openai-base-url", base + "/v1", "--openai-api-key", KEY,
                              "--model-stall", "60s", "--max-model-calls", "200"])
        client = Client(svc.ep["client"])
        sub = subscribe_events(svc.ep["events"])
        seen = []  # (arrival time, [v, type, corr, body]) of every event

        def pump():
            while sub.poll(0):
                seen.append((time.time(), unpack(sub.recv_multipart()[1])))

        def new_session(cwd, mode="auto"):
            r = session_new_when_ready(client, {"tenant": "t1", "cwd": cwd, "mode": mode,
                                                "backend": "openai", "model": "fake"})
            check(r[1] == SESSION, "a session in %s" % cwd)
            return r[3]["session"]["id"]

        def evs(sid, kind=None):
            pump()
            return [(t, m[3]) for t, m in seen
                    if m[3]["session"] == sid and (kind is None or m[1] == kind)]

        def wait_event(sid, what, pred, timeout):
            deadline = time.time() + timeout
            while time.time() < deadline:
                for t, e in evs(sid):
                    if pred(e):
                        return t, e
                time.sleep(0.02)
            raise AssertionError("no %s within %.1fs; events: %s" % (
                what, timeout, [(m[1], m[3].get("state") or m[3].get("action") or "")
                                for _, m in seen if m[3]["session"] == sid]))

        def policy(action, pol=None):
            return lambda e: (e.get("action") == action and "policy" in e and
                              (pol is None or e["policy"] == pol))

        def state_is(st):
            return lambda e: e.get("state") == st and "action" not in e

        def prompt_send(sid, text, idem):
            return client.send(SESSION_PROMPT, {"tenant": "t1", "id": sid, "idem": idem,
                                                "prompt": prompt(text)})

        def reply(corr, timeout=20):
            return client.recv(corr, timeout, pump)

        def act(sid, action, pol="max_duration", message="m", **extra):
            body = {"session": sid, "action": action, "policy": pol, "message": message}
            body.update(extra)
            return client.call(MON_ACTION, body, 5, pump)

        def census():
            out, after = [], None
            while True:
                body = {"limit": 2}
                if after:
                    body["after"] = after
                r = client.call(MON_CENSUS, body, 5, pump)
                if r[1] != MON_CENSUS_REPLY:
                    check(False, "a census page (%s)" % r)
                out += r[3].get("sessions", [])
                if not r[3].get("more"):
                    return out
                after = r[3]["last"]

        def evictions():
            with open(tmp + "/session.log") as f:
                return sum(1 for x in f if "hibernated sessions left memory" in x)

        def wait_for_eviction(before, timeout=30):
            deadline = time.time() + timeout
            while evictions() <= before:
                if time.time() > deadline:
                    raise AssertionError("no hibernated session left memory within %ds" % timeout)
                time.sleep(0.2)

        def load(sid):
            return client.call(SESSION_LOAD, {"tenant": "t1", "id": sid}, 5, pump)[3]["session"]

        time.sleep(1.0)  # the worker announces itself

        # ---------------------------------------------------------------
        print("-- actions (this script as the monitor)", flush=True)
        a = new_session("actions")
        r = act(a, "warn", message="closing soon", remaining_ms=1234)
        check(r[1] == OK, "warn answers ok")
        _, e = wait_event(a, "the warning", policy("warn"), 5)
        check(e["policy"] == "max_duration" and e["remaining_ms"] == 1234 and
              e["message"] == "closing soon", "an EV_POLICY warning with the time left")
        check(act(a, "warn", message="closing soon", remaining_ms=1234)[1] == OK,
              "the same warning again answers ok")
        time.sleep(0.3)
        check(len(evs(a, EV_POLICY)) == 1, "and is not repeated (idempotent)")
        r = act(a, "explode")
        check(r[1] == ERROR and r[3]["code"] == E_INVALID, "an unknown action is invalid")
        r = act(a, "warn", pol="weather")
        check(r[1] == ERROR and r[3]["code"] == E_INVALID, "an unknown policy is invalid")
        r = act(b"\x01\x93" + b"\x00" * 14, "warn")
        check(r[1] == ERROR and r[3]["code"] == E_NOT_FOUND, "an unknown session: not_found")
        r = act(a, "cancel", pol="stuck")
        check(r[1] == ERROR and r[3]["code"] == E_CONFLICT, "cancel without a turn: conflict")
        ids = [c["id"] for c in census()]
        check(a in ids, "the census lists the session (paged by 2)")
        entry = [c for c in census() if c["id"] == a][0]
        check(entry["state"] == "ready" and entry["opened_ms"] > 0,
              "with its state and when it opened")

        check(act(a, "hibernate", pol="idle", message="idle a while")[1] == OK,
              "hibernate answers ok")
        wait_event(a, "state hibernated", state_is("hibernated"), 5)
        check(act(a, "hibernate", pol="idle", message="idle a while")[1] == OK,
              "hibernate again answers ok")
        time.sleep(0.3)
        check(len([e for _, e in evs(a, EV_POLICY) if e["action"] == "hibernate"]) == 1,
              "one hibernate event")
        check(load(a)["state"] == "hibernated", "the record says hibernated")
        # A quiet hibernated session leaves memory (5 s after its last store
        # write, swept every second); the next request loads it.
        wait_for_eviction(0)
        check(True, "a quiet hibernated session left memory")
        c = prompt_send(a, "hello", "a1")
        r = reply(c)
        check(r[1] == PROMPT_REPLY and r[3]["stop_reason"] == "end_turn",
              "a prompt to the hibernated session runs")
        check(any(e.get("state") == "ready" and e.get("reason") == "resumed by a prompt"
                  for _, e in evs(a, EV_STATE)), "after a state event: resumed by a prompt")

        c = prompt_send(a, "stall here", "a2")
        _, um = wait_event(a, "the prompt", lambda e: e.get("idem") == "a2", 10)
        turn = um["turn"]
        wait_event(a, "turn started", lambda e: "worker" in e and e["turn"] == turn, 10)
        r = act(a, "hibernate", pol="idle")
        check(r[1] == ERROR and r[3]["code"] == E_BUSY, "hibernate during a turn: busy")
        r = act(a, "cancel", pol="stuck", message="looks stuck", turn=b"\x01" * 16)
        check(r[1] == ERROR and r[3]["code"] == E_CONFLICT, "cancel naming another turn: conflict")
        r = act(a, "cancel", pol="stuck", message="looks stuck", turn=turn)
        check(r[1] == OK, "cancel answers ok (%s)" % (r[3],))
        check(act(a, "cancel", pol="stuck", message="looks stuck", turn=turn)[1] == OK,
              "and again (idempotent)")
        r = reply(c)
        check(act(a, "cancel", pol="stuck", message="looks stuck", turn=turn)[1] == OK,
              "and once the turn is over")
        check(r[3]["stop_reason"] == "cancelled" and "stuck policy: looks stuck" in r[3].get("message", ""),
              "the turn ends cancelled, saying which policy and why (%s)" % r[3])

        # A client's close during a turn: the turn is cancelled, and the
        # session stays closed when it ends (not idle).
        b = new_session("closed-mid-turn")
        c = prompt_send(b, "stall again", "b1")
        wait_event(b, "turn started", lambda e: "worker" in e, 10)
        check(client.call(SESSION_CLOSE, {"tenant": "t1", "id": b}, 5, pump)[1] == OK,
              "a client closes a session during its turn")
        r = reply(c)
        check(r[3]["stop_reason"] == "cancelled", "the turn ends cancelled")
        time.sleep(0.2)
        check(load(b)["state"] == "closed" and evs(b, EV_STATE)[-1][1]["state"] == "closed",
              "and the session stays closed")

        check(act(a, "close", message="time is up")[1] == OK, "close answers ok")
        wait_event(a, "state closed", state_is("closed"), 5)
        check(load(a)["end_reason"] == "max_duration", "end_reason is the policy")
        check(act(a, "close")[1] == OK, "close again answers ok")
        check(a not in [x["id"] for x in census()], "a closed session is not in the census")
        r = client.call(SESSION_PROMPT, {"tenant": "t1", "id": a, "idem": "a3",
                                         "prompt": prompt("hello")}, 5, pump)
        check(r[1] == ERROR and r[3]["code"] == E_CONFLICT, "a closed session refuses prompts")
        r = act(a, "warn")
        check(r[1] == ERROR and r[3]["code"] == E_CONFLICT, "and warnings")

        # ---------------------------------------------------------------
        print("-- stuck loops (corral-monitor --stuck-repeat 3 --stuck-silence 1.5s)", flush=True)
        svc.start("monitor", ["--stuck-repeat", "3", "--stuck-silence", "1500ms",
                              "--session-idle-timeout", "0", "--log-level", "debug"])
        time.sleep(1.0)
        loop = new_session("loop")
        with open(tmp + "/ws/loop/notes.txt", "w") as f:
            f.write("notes\n")
        c = prompt_send(loop, "loop forever", "l1")
        tw, w = wait_event(loop, "a stuck warning", policy("warn", "stuck"), 20)
        check("(Read notes.txt) was made 3 times" in w["message"] or "was made 3 times" in w["message"],
              "warned at 3 identical calls: %s" % w["message"])
        tc, x = wait_event(loop, "a stuck cancel", policy("cancel", "stuck"), 20)
        check("made 6 times" in x["message"], "cancelled at 6: %s" % x["message"])
        r = reply(c)
        check(r[3]["stop_reason"] == "cancelled" and "stuck" in r[3].get("message", ""),
              "the looping turn ends cancelled with the reason")
        calls = len(evs(loop, EV_TOOL_CALL))
        check(6 <= calls <= 20, "it stopped soon after the 6th call (%d calls)" % calls)

        quiet = new_session("quiet")
        c = prompt_send(quiet, "a silent command", "q1")
        t0, _ = wait_event(quiet, "the command's tool call", lambda e: "tool_call_id" in e, 10)
        tw, w = wait_event(quiet, "a silence warning", policy("warn", "stuck"), 10)
        check("no output from the running turn" in w["message"] and tw - t0 >= 1.3,
              "warned after 1.5 s of silence (%.1fs): %s" % (tw - t0, w["message"]))
        tc, x = wait_event(quiet, "a silence cancel", policy("cancel", "stuck"), 10)
        check(tc - t0 >= 2.8, "cancelled after twice the silence (%.1fs)" % (tc - t0))
        r = reply(c)
        check(r[3]["stop_reason"] == "cancelled", "the silent turn ends cancelled")
        deadline = time.time() + 10
        while True:
            ps = subprocess.run(["pgrep", "-f", "sleep 37"], capture_output=True, text=True).stdout
            if ps.strip() == "" or time.time() > deadline:
                break
            time.sleep(0.1)
        check(ps.strip() == "", "and its command was killed")

        stall = new_session("stall")
        c = prompt_send(stall, "stall now", "s1")
        wait_event(stall, "a silence warning", policy("warn", "stuck"), 10)
        wait_event(stall, "a silence cancel", policy("cancel", "stuck"), 10)
        r = reply(c)
        check(r[3]["stop_reason"] == "cancelled", "a stalled model stream is warned, then cancelled")

        # The monitor counts what it did, in its own heartbeat's metrics.
        mon = Client(svc.ep["monitor"])
        deadline, stuck = time.time() + 5, {}
        while time.time() < deadline:
            text = mon.call(MON_METRICS, {}, 5)[3]["text"]
            stuck = {m.group(1): float(m.group(2)) for m in re.finditer(
                r'corral_policy_actions_total\{[^}]*policy="stuck",action="(\w+)"\} (\S+)',
                text)}
            if stuck.get("cancel", 0) >= 3:
                break
            time.sleep(0.3)
        check(stuck.get("warn", 0) >= 3 and stuck.get("cancel", 0) >= 3,
              "corral_policy_actions_total counts the stuck warnings and cancels (%s)" % (
                  stuck if stuck else [x for x in text.splitlines() if "policy" in x]))

        # ---------------------------------------------------------------
        print("-- idle (corral-monitor --session-idle-timeout 2s)", flush=True)
        svc.kill("monitor", signal.SIGTERM)
        svc.start("monitor", ["--session-idle-timeout", "2s", "--stuck-repeat", "0",
                              "--stuck-silence", "0", "--log-level", "debug"])
        wait_event(loop, "a census-driven hibernation", state_is("hibernated"), 15)
        check(True, "a session idle from before the monitor started is hibernated (census)")
        idle = new_session("idle")
        c = prompt_send(idle, "hello", "i1")
        r = reply(c)
        t_end = time.time()
        th, h = wait_event(idle, "the idle hibernation", policy("hibernate", "idle"), 10)
        check(1.5 <= th - t_end <= 10, "hibernated about 2 s after its turn (%.1fs): %s" % (
            th - t_end, h["message"]))
        before = evictions()
        wait_event(idle, "state hibernated", state_is("hibernated"), 5)
        wait_for_eviction(before)  # out of memory: the prompt loads it from the store
        c = prompt_send(idle, "say something", "i2")
        r = reply(c)
        check(r[3]["stop_reason"] == "end_turn", "a prompt resumes the hibernated session")
        check(any(e.get("reason") == "resumed by a prompt" for _, e in evs(idle, EV_STATE)),
              "with a state event saying so")
        reqs = json.load(urllib.request.urlopen(base + "/_fake/requests"))
        body = json.dumps(reqs[-1]["body"]["messages"])
        check("hello" in body and "Hello there, friend." in body and "say something" in body,
              "the model got the whole history")

        # The session service is killed during a turn: its restart ends the
        # turn "interrupted" before the monitor listens again; the census the
        # monitor takes on reconnecting tells it, and the session is idle.
        rs = new_session("restart")
        prompt_send(rs, "stall there", "r1")
        wait_event(rs, "turn started", lambda e: "worker" in e, 10)
        svc.kill("session")
        svc.start("session", ["--close-grace", "6s", "--log-level", "debug"])
        t_restart = time.time()
        client = Client(svc.ep["client"])  # a fresh connection; the old one waits for nothing
        th, _ = wait_event(rs, "hibernation after the restart", state_is("hibernated"), 20)
        check(th - t_restart < 20, "after a session service restart mid-turn, the session "
              "is known idle and hibernated (%.1fs)" % (th - t_restart))

        # ---------------------------------------------------------------
        print("-- max duration (corral-monitor --session-max-duration 10s)", flush=True)
        # Timing is checked on the session service's own clock (each event's
        # ts against the session's opened_ms), with limits long enough that a
        # busy 2-core machine cannot reorder the steps: the warning comes
        # 1 s before the close (ticks are 250 ms), the slow turn is still
        # running 2 s after the close and ends 4 s before the grace does.
        limit_ms, grace_ms = 10000, 6000
        svc.kill("monitor", signal.SIGTERM)
        d1 = new_session("dur-idle")
        d2 = new_session("dur-turn")
        d3 = new_session("dur-stall")
        svc.start("monitor", ["--session-max-duration", "10s", "--session-idle-timeout", "0",
                              "--stuck-repeat", "0", "--stuck-silence", "0",
                              "--log-level", "debug"])
        c3 = prompt_send(d3, "stall please", "d3")
        # The slow turn (~6 s) starts about 6 s after its session opened, so
        # it is running at the close (10 s) and ends well within the grace.
        opened2 = load(d2)["opened_ms"]
        time.sleep(max(0.0, (opened2 + 6000) / 1000.0 - time.time()))
        c2 = prompt_send(d2, "slow please", "d2")
        opened1 = load(d1)["opened_ms"]
        _, w = wait_event(d1, "a duration warning", policy("warn", "max_duration"), 30)
        check(0 < w["remaining_ms"] <= limit_ms // 10 and "will be closed in" in w["message"],
              "warned at 90 %% with the time left (%d ms): %s" % (w["remaining_ms"], w["message"]))
        check(w["ts"] - opened1 >= limit_ms * 9 // 10,
              "not before 90 %% of the limit (%d ms after opening)" % (w["ts"] - opened1))
        _, x = wait_event(d1, "the close", policy("close", "max_duration"), 30)
        check(x["seq"] > w["seq"], "the warning came before the close")
        check(x["ts"] - opened1 >= limit_ms,
              "closed at 100 %% (%d ms after opening)" % (x["ts"] - opened1))
        wait_event(d1, "state closed", state_is("closed"), 10)
        check(load(d1)["end_reason"] == "max_duration", "the session's end reason is max_duration")
        _, x2 = wait_event(d2, "the close", policy("close", "max_duration"), 30)
        check("when the running turn ends" in x2["message"], "a running turn gets its grace: %s" % x2["message"])
        r = reply(c2, 30)
        check(r[3]["stop_reason"] == "end_turn", "the turn that ends within the grace ends normally")
        wait_event(d2, "state closed", state_is("closed"), 10)
        _, x3 = wait_event(d3, "the close", policy("close", "max_duration"), 30)
        r = reply(c3, 30)
        check(r[3]["stop_reason"] == "cancelled" and "grace period (6 s)" in r[3].get("message", ""),
              "the turn that does not is cancelled at the end of the grace (%s)" % r[3].get("message"))
        _, z = wait_event(d3, "state closed", state_is("closed"), 10)
        check(z["ts"] - x3["ts"] >= grace_ms - 50,
              "after the 6 s grace (%d ms after the close)" % (z["ts"] - x3["ts"]))
        check(svc.procs["monitor"].poll() is None and svc.procs["session"].poll() is None,
              "corral-monitor and corral-session still run")
        print("PASS", flush=True)
        passed = True
    except BaseException:
        svc.dump_logs()
        raise
    finally:
        svc.stop_all()
        if fake:
            fake.terminate()
            fake.wait(5)
        if passed and os.environ.get("CORRAL_TEST_KEEP") != "1":
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
