#!/usr/bin/python3
"""End to end: real corral-store, corral-session, corral-worker and the
scripted model server (tests/fakes), a client on the client API and a SUB
on the events.  Covers the turn tests of the sessions issue: streaming,
permissions, modes, diffs, path escapes, cancel of a command, a worker or
the session service killed mid-turn, idempotency, provider failures.

usage: test_turns.py <corral-store> <corral-session> <corral-worker> <corral-fake-model>
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

from corral_bus import *  # noqa: F401,F403

EV_AGENT_THOUGHT, EV_TOOL_CALL, EV_TOOL_UPDATE, EV_PLAN, EV_USAGE = 205, 206, 207, 208, 209
E_UPSTREAM = -11
KEY = "sk-test-0123456789abcdef"


def script(outside):
    t = lambda text: {"text": text, "chunks": 3}  # noqa: E731
    call = lambda name, **args: {"tool_call": {"name": name, "arguments": args}, "fragments": 3}  # noqa: E731
    rules = [
        {"name": "stream", "match": "stream",
         "responses": [[{"thinking": "Let me think.", "chunks": 2}, t("Hello from the model!")]]},
        {"name": "write", "match": "write",
         "responses": [[t("Writing."), call("write_file", path="hello.txt", content="hi\n")],
                       [t("Written.")]]},
        {"name": "edit", "match": "edit",
         "responses": [[call("edit_file", path="hello.txt", old_text="hi", new_text="hello")],
                       [t("Edited.")]]},
        {"name": "dotdot", "match": "escape-dotdot",
         "responses": [[call("read_file", path="../../outside/secret.txt")], [t("ok")]]},
        {"name": "abs", "match": "escape-abs",
         "responses": [[call("read_file", path=outside + "/secret.txt")], [t("ok")]]},
        {"name": "link", "match": "escape-link",
         "responses": [[call("read_file", path="link/secret.txt")], [t("ok")]]},
        {"name": "proc", "match": "escape-proc",
         "responses": [[call("read_file", path="/proc/self/root" + outside + "/secret.txt")],
                       [t("ok")]]},
        {"name": "long", "match": "long command",
         "responses": [[call("run_command", command="sleep 30 & sleep 30; echo never")],
                       [t("finished")]]},
        {"name": "slow", "match": "slow",
         "chunk_delay_ms": 200, "responses": [[t("one two three four five six seven eight")]]},
        {"name": "429", "match": "rate limited",
         "responses": [[{"http_error": 429, "retry_after": 1, "times": 2}, t("recovered")]]},
        {"name": "500", "match": "server error",
         "responses": [[{"http_error": 500, "times": 100}, t("never")]]},
        {"name": "400", "match": "refused request",
         "responses": [[{"http_error": 400, "times": 100,
                         "message": "PROVIDER-WORDS: messages.1 is malformed"}, t("never")]]},
        {"name": "malformed", "match": "malformed",
         "responses": [[{"raw": "data: {not json\n\n"}]]},
        {"name": "stall", "match": "stall", "responses": [[t("a"), {"stall": True}]]},
        {"name": "default", "match": "*", "responses": [[t("ok")]]},
    ]
    return {"rules": rules}


def main():
    store_bin, session_bin, worker_bin, fake_bin = sys.argv[1:5]
    tmp = tempfile.mkdtemp(prefix="corral-it-turns-")
    svc = Services(tmp, {"store": store_bin, "session": session_bin, "worker": worker_bin})
    fake = None
    try:
        outside = tmp + "/outside"
        os.makedirs(outside)
        with open(outside + "/secret.txt", "w") as f:
            f.write("TOP SECRET\n")
        with open(tmp + "/script.json", "w") as f:
            json.dump(script(outside), f)
        fake = subprocess.Popen([fake_bin, "--fake-script", tmp + "/script.json",
                                 "--fake-api-key", KEY], stdout=subprocess.PIPE,
                                stderr=open(tmp + "/fake.log", "ab"))
        line = fake.stdout.readline().decode()
        check(line.startswith("listening on http://"), "the model server is up")
        base = line.split()[-1]
        worker_args = ["--openai-base-url", base + "/v1", "--openai-api-key", KEY,
                       "--model-stall", "2s", "--model-attempts", "3"]
        svc.start("store")
        svc.start("session", ["--permission-timeout", "10s"])
        svc.start("worker1", worker_args)
        client = Client(svc.ep["client"])
        store = Client(svc.ep["store"])
        sub = subscribe_events(svc.ep["events"])

        def new_session(mode="ask", cwd="proj"):
            deadline = time.time() + 10
            while True:
                r = client.call(SESSION_NEW, {"tenant": "t1", "cwd": cwd, "mode": mode,
                                              "backend": "openai", "model": "fake"})
                if r[1] == SESSION or time.time() > deadline:
                    break
                time.sleep(0.1)
            check(r[1] == SESSION, "a %s session" % mode)
            return r[3]["session"]

        seen = []  # every event the subscriber got, in order

        def pump_sub():
            while sub.poll(0):
                seen.append(unpack(sub.recv_multipart()[1]))

        def run(sid, text, idem, timeout=20, on_event=None):
            c = client.send(SESSION_PROMPT, {"tenant": "t1", "id": sid, "idem": idem,
                                             "prompt": prompt(text)})
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

        s = new_session("auto")
        sid = s["id"]
        time.sleep(1.0)  # the worker announces itself

        # -- streaming text and thinking; PUB order equals the store
        r = run(sid, "stream please", "k1")
        check(r[1] == PROMPT_REPLY and r[3]["stop_reason"] == "end_turn", "a streamed turn ends end_turn")
        mine = [e for e in seen if e[3]["session"] == sid]
        check([e[3]["seq"] for e in mine] == list(range(1, r[3]["last_seq"] + 1)),
              "PUB delivered every seq in order")
        stored = [unpack(e) for e in store.call(STORE_EVENTS_RANGE,
                                                {"session": sid, "after_seq": 0})[3]["events"]]
        check(stored == mine, "and exactly the stored events")
        text = "".join(e[3]["text"] for e in mine if e[1] == EV_AGENT_MESSAGE)
        thought = "".join(e[3]["text"] for e in mine if e[1] == EV_AGENT_THOUGHT)
        check(text == "Hello from the model!" and thought == "Let me think.",
              "text and thinking streamed in pieces")
        check(any(e[1] == EV_USAGE for e in mine), "a usage_update event")
        reqs = json.load(urllib.request.urlopen(base + "/_fake/requests"))
        check(reqs[-1]["status"] == 200 and KEY not in json.dumps(reqs[-1]["headers"]),
              "the model accepted the key (masked in its log)")

        # -- idempotency and busy
        r2 = run(sid, "stream please", "k1")
        check(r2[3]["turn"] == r[3]["turn"], "a resent prompt returns the same turn")
        n_before = len(json.load(urllib.request.urlopen(base + "/_fake/requests")))
        check(n_before == len(reqs), "and the model was not called again")

        # -- permissions in ask mode: approved write, denied write
        a = new_session("ask", "proj-ask")
        aid, ws = a["id"], a["cwd"]

        def answer(option):
            def on_event(ev):
                if ev[1] == EV_PERM_REQUEST and ev[3]["session"] == aid:
                    client.send(PERMISSION_ANSWER, {"tenant": "t1", "id": aid,
                                                    "request_id": ev[3]["request_id"],
                                                    "option_id": option})
            return on_event

        r = run(aid, "write the file", "w1", on_event=answer("allow"))
        check(r[3]["stop_reason"] == "end_turn", "an approved write turn ends normally (%s)" % r[3])
        check(open(ws + "/hello.txt").read() == "hi\n", "the approved write happened")
        upd = [u for u in events_of(aid, EV_TOOL_UPDATE) if u.get("status") == "completed"]
        check(upd and "+hi" in upd[-1].get("diff", ""), "the write's diff is in the event")
        os.unlink(ws + "/hello.txt")
        r = run(aid, "write the file again", "w2", on_event=answer("reject"))
        check(not os.path.exists(ws + "/hello.txt"), "a denied write did not happen")
        failed = [u for u in events_of(aid, EV_TOOL_UPDATE) if u.get("status") == "failed"]
        check(failed and "refused" in failed[-1].get("content", ""), "and the tool reports it refused")

        # -- edit with diff (auto mode)
        with open(s["cwd"] + "/hello.txt", "w") as f:
            f.write("hi\n")
        r = run(sid, "edit it", "e1")
        check(open(s["cwd"] + "/hello.txt").read() == "hello\n", "edit_file changed the file")
        upd = [u for u in events_of(sid, EV_TOOL_UPDATE) if u.get("status") == "completed"]
        check("-hi" in upd[-1]["diff"] and "+hello" in upd[-1]["diff"], "the edit's diff is in the event")

        # -- read_only refuses writes
        ro = new_session("read_only", "proj-ro")
        r = run(ro["id"], "write the file", "ro1")
        check(not os.path.exists(ro["cwd"] + "/hello.txt"), "read_only refused the write")
        failed = [u for u in events_of(ro["id"], EV_TOOL_UPDATE) if u.get("status") == "failed"]
        check(failed and "read-only" in failed[-1]["content"], "with a clear message")

        # -- path escapes
        os.symlink(outside, s["cwd"] + "/link")
        for i, what in enumerate(["escape-dotdot", "escape-abs", "escape-link", "escape-proc"]):
            r = run(sid, what, "x%d" % i)
            upd = events_of(sid, EV_TOOL_UPDATE)[-1]
            check(upd["status"] == "failed" and "TOP SECRET" not in repr(upd),
                  "%s is refused" % what)

        # -- cancel during a long command: ends within 1 s, the group is gone
        pids = {}

        def cancel_when_running(ev):
            if ev[1] == EV_TOOL_UPDATE and ev[3].get("status") == "in_progress" and "t" not in pids:
                time.sleep(0.3)
                out = subprocess.run(["pgrep", "-x", "-f", "sleep 30"], capture_output=True, text=True)
                pids["before"] = [int(p) for p in out.stdout.split()]
                pids["t"] = time.time()
                client.send(SESSION_CANCEL, {"tenant": "t1", "id": sid})

        r = run(sid, "long command", "c1", on_event=cancel_when_running)
        elapsed = time.time() - pids["t"]
        check(r[3]["stop_reason"] == "cancelled", "the turn ends cancelled")
        check(elapsed < 1.0, "within 1 s of the cancel (%.2fs)" % elapsed)
        check(len(pids["before"]) >= 2, "the command had started its processes")
        def running(pid):  # a zombie has ended; it only waits to be reaped
            try:
                with open("/proc/%d/stat" % pid) as f:
                    return f.read().rsplit(")", 1)[1].split()[0] != "Z"
            except OSError:
                return False
        alive = [p for p in pids["before"] if running(p)]
        check(not alive, "no process of the command's group survives (%s)" % alive)
        conv = store.call(STORE_MESSAGES_GET, {"session": sid})[3]["messages"]
        results = [b for m in conv for b in json.loads(m)["content"] if b["type"] == "tool_result"]
        check(results and "cancelled" in results[-1]["content"], "the cancelled call has a result")

        # -- provider failures
        r = run(sid, "rate limited", "p1", timeout=30)
        check(r[3]["stop_reason"] == "end_turn", "429 twice, then the retry succeeds")
        r = run(sid, "server error", "p2", timeout=30)
        check(r[3]["stop_reason"] == "failed" and r[3]["code"] == E_UPSTREAM,
              "a repeated 500 ends the turn with an upstream error")
        ended = events_of(sid, EV_TURN_ENDED)[-1]
        check(ended.get("retryable") is True, "marked retryable")
        check("HTTP 500" in r[3].get("message", "") and "retry" in r[3]["message"],
              "in our words, with the status: %s" % r[3].get("message"))
        # A refused request: the client gets our words and a stable code;
        # the provider's words are in the worker's log only (DESIGN §6).
        r = run(sid, "refused request", "p2b", timeout=30)
        check(r[3]["stop_reason"] == "failed" and r[3]["code"] == E_UPSTREAM
              and r[3].get("message") == "the model provider refused the request "
              "(HTTP 400); see the worker's log",
              "a 400 ends the turn with our own message: %s" % r[3].get("message"))
        ended = events_of(sid, EV_TURN_ENDED)[-1]
        check(ended.get("retryable") is not True and "PROVIDER-WORDS" not in repr(ended),
              "not retryable, and turn_ended has no provider text")
        with open(os.path.join(tmp, "worker1.log")) as f:
            logged = [x for x in f if "PROVIDER-WORDS" in x]
        check(logged and "model call failed" in logged[-1] and "HTTP 400" in logged[-1]
              and KEY not in "".join(logged),
              "the worker's log keeps the provider's words (and no key)")
        r = run(sid, "malformed", "p3")
        check(r[3]["stop_reason"] == "failed" and r[3]["code"] == E_UPSTREAM, "malformed SSE is a clear error")
        t0 = time.time()
        r = run(sid, "stall", "p4", timeout=30)
        check(r[3]["stop_reason"] == "failed" and time.time() - t0 < 15, "a stalled stream is cut")
        r = run(sid, "anything", "p5")
        check(r[3]["stop_reason"] == "end_turn", "the session works after the failures")
        reqs = json.load(urllib.request.urlopen(base + "/_fake/requests"))
        last = reqs[-1]["body"]["messages"]
        check(last[-1]["role"] == "user", "and the model request after them is a valid conversation")

        # -- a worker killed mid-turn
        svc.start("worker2", worker_args)
        time.sleep(1.0)
        state = {}

        def kill_worker_once(ev):
            if ev[1] == EV_AGENT_MESSAGE and ev[3]["session"] == sid and "t" not in state:
                w = [e for e in seen if e[1] == 203 and e[3]["session"] == sid][-1][3]["worker"]
                state["worker"] = w
                svc.kill(w)
                state["t"] = time.time()

        r = run(sid, "slow answer", "k-lost", on_event=kill_worker_once)
        check(r[3]["stop_reason"] == "failed" and r[3]["code"] == E_WORKER_LOST,
              "a killed worker's turn ends worker_lost")
        check(time.time() - state["t"] < 3.0, "within 3 s (%.1fs)" % (time.time() - state["t"]))
        r = run(sid, "after the loss", "k-next")
        check(r[3]["stop_reason"] == "end_turn", "the next prompt succeeds on another worker")
        started = [e for e in seen if e[1] == 203 and e[3]["session"] == sid][-1][3]["worker"]
        check(started != state["worker"], "it ran on the other worker (%s)" % started)

        # -- corral-session killed mid-turn and restarted
        c = client.send(SESSION_PROMPT, {"tenant": "t1", "id": sid, "idem": "k-restart",
                                         "prompt": prompt("slow please")})
        time.sleep(0.6)
        svc.kill("session")
        svc.start("session", ["--permission-timeout", "10s"])
        client = Client(svc.ep["client"])
        deadline = time.time() + 10
        while True:
            r = client.call(SESSION_LOAD, {"tenant": "t1", "id": sid})
            if r[1] == SESSION or time.time() > deadline:
                break
            time.sleep(0.2)
        check(r[1] == SESSION and r[3]["session"]["last_stop"] == "interrupted",
              "after the restart the turn is marked interrupted")
        time.sleep(2.5)  # workers notice the new session service and re-announce
        r = run(sid, "hello again", "k-after")
        check(r[3]["stop_reason"] == "end_turn", "the next prompt works after the restart")

        # -- a per-turn token limit: the worker stops the turn cleanly
        svc.kill("worker1", signal.SIGTERM)
        svc.kill("worker2", signal.SIGTERM)
        svc.start("worker3", worker_args + ["--max-turn-tokens", "1"])
        time.sleep(1.0)
        lim = new_session("auto", "proj-limit")
        r = run(lim["id"], "write the file", "lim1")
        check(r[3]["stop_reason"] == "max_tokens", "a turn over its token limit ends max_tokens")
        check(not os.path.exists(lim["cwd"] + "/hello.txt"), "and the tool it asked for did not run")
        conv = store.call(STORE_MESSAGES_GET, {"session": lim["id"]})[3]["messages"]
        res = [b for m in conv for b in json.loads(m)["content"] if b["type"] == "tool_result"]
        check(res and "token limit" in res[-1]["content"], "the call has a result saying why")
        # -- the provider key never reaches a log
        svc.stop_all()
        for name in list(svc.logs) + ["fake"]:
            with open(os.path.join(tmp, name + ".log"), "rb") as f:
                check(KEY.encode() not in f.read(), "the API key is not in the %s log" % name)
        print("turn integration: all checks passed", flush=True)
        return 0
    except (AssertionError, SystemExit, KeyError, IndexError) as e:
        if not isinstance(e, SystemExit):
            print("FAIL:", repr(e), flush=True)
        svc.dump_logs()
        print("---- fake log (tail) ----")
        with open(tmp + "/fake.log", "rb") as f:
            print(f.read()[-3000:].decode(errors="replace"))
        return 1
    finally:
        svc.stop_all()
        if fake and fake.poll() is None:
            fake.terminate()
            fake.wait(5)
        if os.environ.get("CORRAL_TEST_KEEP"):
            print("kept", tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
