#!/usr/bin/python3
"""Integration test of corral-session with the real corral-store.

A scripted worker (a DEALER speaking the worker API) and a client (a DEALER
speaking the client API) drive the real processes over ipc://; a SUB socket
watches the events.  Checks: session.new and the workspace roots; a turn
whose events reach the subscriber in seq order, identical to the store;
idempotent prompts; busy; permissions (first answer wins); cancel; a worker
that dies mid-turn (worker_lost, then the next turn runs on another worker
with a valid conversation); corral-session killed with SIGKILL mid-turn and
restarted (the turn is marked interrupted, the next prompt works).

usage: test_session.py <corral-store> <corral-session>
"""
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid

from corral_bus import *  # noqa: F401,F403 (message ids and helpers)


def main():
    store_bin, session_bin = sys.argv[1], sys.argv[2]
    tmp = tempfile.mkdtemp(prefix="corral-it-sess-")
    procs = {}
    ep = {k: "ipc://%s/%s.sock" % (tmp, k) for k in ("store", "client", "worker", "events")}
    env = {k: v for k, v in os.environ.items() if not k.startswith("CORRAL_")}
    logs = {}

    def start(name):
        logs[name] = open(os.path.join(tmp, name + ".log"), "ab")
        if name == "store":
            argv = [store_bin, "--data-dir", tmp + "/data", "--store-endpoint", ep["store"]]
        else:
            argv = [session_bin, "--data-dir", tmp + "/data", "--store-endpoint", ep["store"],
                    "--session-endpoint", ep["client"], "--worker-endpoint", ep["worker"],
                    "--events-endpoint", ep["events"], "--workspace-roots", tmp + "/ws",
                    "--permission-timeout", "3s",
                    "--max-sessions-per-tenant", "3"]
        procs[name] = subprocess.Popen(argv, stderr=logs[name], env=env)

    try:
        start("store")
        start("session")
        client = Client(ep["client"])
        store = Client(ep["store"])
        sub = subscribe_events(ep["events"])

        # The session service answers "starting" until its scan is done.
        r = session_new_when_ready(client, {"tenant": "t1", "cwd": "proj/a"})
        check(r[1] == SESSION, "session.new answers a session")
        rec = r[3]["session"]
        sid = rec["id"]
        check(rec["state"] == "ready" and rec["cwd"] == os.path.realpath(tmp + "/ws/proj/a"),
              "the cwd is created inside the workspace root")
        check(os.path.isdir(tmp + "/ws/proj/a"), "the working directory exists")
        r = client.call(SESSION_NEW, {"tenant": "t1", "cwd": "/etc"})
        check(r[1] == ERROR and r[3]["code"] == E_FORBIDDEN, "a cwd outside the roots is refused")
        r = client.call(SESSION_NEW, {"tenant": "t1", "cwd": "../../escape"})
        check(r[1] == ERROR and r[3]["code"] == E_FORBIDDEN, "a cwd escaping with .. is refused")
        r = client.call(SESSION_LOAD, {"tenant": "t2", "id": sid})
        check(r[1] == ERROR and r[3]["code"] == E_NOT_FOUND, "another tenant cannot load it")

        # -- per-tenant limit (the session service runs with 3 per tenant)
        made = [client.call(SESSION_NEW, {"tenant": "t9", "cwd": "t9-%d" % i}) for i in range(3)]
        r = client.call(SESSION_NEW, {"tenant": "t9", "cwd": "t9-x"})
        check(all(m[1] == SESSION for m in made) and r[1] == ERROR and r[3]["code"] == -4,
              "past the per-tenant limit session.new answers capacity")
        check(r[3].get("retryable") is True and "close one" in r[3]["message"],
              "with a message saying what to do")

        w1 = Worker(ep["worker"], "w1")
        time.sleep(0.3)
        w1.pump()

        # -- a turn: events in seq order on PUB, identical to the store
        c = client.send(SESSION_PROMPT, {"tenant": "t1", "id": sid, "idem": "k1",
                                         "prompt": prompt("hello")})
        turn_msg = w1.expect(W_TURN)
        t = turn_msg[3]
        check(t["session"] == sid and t.get("messages", []) == [] and t["mode"] == "ask"
              and t["cwd"] == rec["cwd"] and json.loads(t["prompt"])[0]["text"] == "hello",
              "the worker receives the turn with the prompt and an empty conversation")
        turn = t["turn"]
        for word in ("Hel", "lo", "!"):
            w1.event(turn, word)
        w1.send(W_TURN_DONE, {"turn": turn, "stop_reason": "end_turn", "from": 0,
                              "messages": [user("hello"), assistant("Hello!")],
                              "usage": {"input_tokens": 5, "output_tokens": 2, "model_calls": 1}})
        r = client.recv(c, pump=w1.pump)
        check(r[1] == PROMPT_REPLY and r[3]["stop_reason"] == "end_turn" and r[3]["turn"] == turn,
              "the prompt is answered end_turn when the turn ends")
        last_seq = r[3]["last_seq"]
        published = []
        mine = b"s/%s/" % str(uuid.UUID(bytes=sid)).encode()
        while sub.poll(200):
            topic, data = sub.recv_multipart()
            if topic == mine:
                published.append(data)
            else:  # other sessions' events carry their own id
                check(unpack(data)[3]["session"] != sid, "a topic names its session")
        seqs = [unpack(d)[3]["seq"] for d in published]
        check(seqs == list(range(1, last_seq + 1)), "PUB delivered seqs 1..%d in order (got %s)" % (last_seq, seqs))
        stored = store.call(STORE_EVENTS_RANGE, {"session": sid, "after_seq": 0})[3]["events"]
        check(stored == published, "published events are byte-identical to the stored ones")
        kinds = [unpack(d)[1] for d in published]
        texts = [unpack(d)[3].get("text") for d in published if unpack(d)[1] == EV_AGENT_MESSAGE]
        check(texts == ["Hel", "lo", "!"] and kinds[-1] == EV_TURN_ENDED,
              "the worker's text events and turn_ended are there")
        conv = store.call(STORE_MESSAGES_GET, {"session": sid})[3]["messages"]
        check(conv == [user("hello"), assistant("Hello!")], "the conversation is stored")

        # -- idempotent prompt
        r = client.call(SESSION_PROMPT, {"tenant": "t1", "id": sid, "idem": "k1",
                                         "prompt": prompt("hello")}, pump=w1.pump)
        check(r[1] == PROMPT_REPLY and r[3]["turn"] == turn, "a resent prompt returns the same turn")
        time.sleep(0.2)
        w1.pump()
        check(not any(m[1] == W_TURN for m in w1.inbox), "and does not run again")

        # -- busy, permission (first answer wins), cancel
        c2 = client.send(SESSION_PROMPT, {"tenant": "t1", "id": sid, "idem": "k2",
                                          "prompt": prompt("write a file")})
        t2 = w1.expect(W_TURN)[3]
        check(t2.get("messages", []) == conv, "the second turn gets the stored conversation")
        r = client.call(SESSION_PROMPT, {"tenant": "t1", "id": sid, "idem": "k3",
                                         "prompt": prompt("again")}, pump=w1.pump)
        check(r[1] == ERROR and r[3]["code"] == E_BUSY, "a second prompt while running is busy")
        opts = [{"option_id": "allow", "name": "Allow", "kind": "allow_once"},
                {"option_id": "always", "name": "Always", "kind": "allow_always"},
                {"option_id": "deny", "name": "Deny", "kind": "reject_once"}]
        w1.send(W_PERM_REQ, {"turn": t2["turn"], "request_id": "p1", "tool_call_id": "c1",
                             "title": "Write hello.txt", "target": "hello.txt",
                             "tool": "write_file", "options": opts})
        deadline = time.time() + 5
        perm = None
        while perm is None and time.time() < deadline:
            w1.pump()
            if sub.poll(50):
                m = unpack(sub.recv_multipart()[1])
                if m[1] == EV_PERM_REQUEST:
                    perm = m[3]
        check(perm and perm["request_id"] == "p1" and len(perm["options"]) == 3,
              "the permission request is published")
        r = client.call(PERMISSION_ANSWER, {"tenant": "t1", "id": sid, "request_id": "p1",
                                            "option_id": "always", "conn": "c-a"}, pump=w1.pump)
        check(r[1] == OK, "the first answer wins")
        r = client.call(PERMISSION_ANSWER, {"tenant": "t1", "id": sid, "request_id": "p1",
                                            "option_id": "deny", "conn": "c-b"}, pump=w1.pump)
        check(r[1] == ERROR and r[3]["code"] == E_CONFLICT, "a later answer gets conflict")
        a = w1.expect(W_PERM_ANSWER)[3]
        check(a["option_id"] == "always" and a["kind"] == "allow_always",
              "the worker receives the winning answer")
        # allow-always: the same tool and target is answered without asking
        w1.send(W_PERM_REQ, {"turn": t2["turn"], "request_id": "p2", "tool_call_id": "c2",
                             "title": "Write hello.txt", "target": "hello.txt",
                             "tool": "write_file", "options": opts})
        a = w1.expect(W_PERM_ANSWER)[3]
        check(a["request_id"] == "p2" and a["kind"] == "allow_always",
              "allow-always answers the same tool and target at once")
        # no answer before the deadline (3 s here): refused
        w1.send(W_PERM_REQ, {"turn": t2["turn"], "request_id": "p3", "tool_call_id": "c3",
                             "title": "Run rm", "target": "rm -rf x", "tool": "run_command",
                             "options": opts})
        t0 = time.time()
        a = w1.expect(W_PERM_ANSWER, timeout=8)[3]
        check(a["request_id"] == "p3" and a["kind"] == "reject_once" and 2.5 < time.time() - t0 < 5,
              "an unanswered request is refused at its deadline (%.1fs)" % (time.time() - t0))
        resolved = [unpack(d)[3] for d in store.call(STORE_EVENTS_RANGE, {"session": sid, "after_seq": 0})[3]["events"]
                    if unpack(d)[1] == 211]
        check(resolved[-1]["outcome"] == "timed_out", "and a timed_out resolution is recorded")
        r = client.call(SESSION_CANCEL, {"tenant": "t1", "id": sid}, pump=w1.pump)
        check(r[1] == OK, "cancel is accepted")
        w1.expect(W_CANCEL)
        w1.send(W_TURN_DONE, {"turn": t2["turn"], "stop_reason": "cancelled", "from": 2,
                              "messages": [user("write a file"), assistant("(cancelled)")]})
        r = client.recv(c2, pump=w1.pump)
        check(r[1] == PROMPT_REPLY and r[3]["stop_reason"] == "cancelled", "the turn ends cancelled")

        # -- a worker dies mid-turn
        c4 = client.send(SESSION_PROMPT, {"tenant": "t1", "id": sid, "idem": "k4",
                                          "prompt": prompt("long job")})
        t4 = w1.expect(W_TURN)[3]
        w1.event(t4["turn"], "working")
        w1.close()  # no more heartbeats
        t0 = time.time()
        r = client.recv(c4, timeout=8)
        check(r[1] == PROMPT_REPLY and r[3]["stop_reason"] == "failed"
              and r[3]["code"] == E_WORKER_LOST, "the turn ends worker_lost")
        check(time.time() - t0 < 5, "within a few seconds (%.1fs)" % (time.time() - t0))
        w2 = Worker(ep["worker"], "w2")
        c5 = client.send(SESSION_PROMPT, {"tenant": "t1", "id": sid, "idem": "k5",
                                          "prompt": prompt("again")})
        t5 = w2.expect(W_TURN)[3]
        conv = store.call(STORE_MESSAGES_GET, {"session": sid})[3]["messages"]
        check(t5.get("messages", []) == conv and len(conv) == 4,
              "the next turn runs on another worker with the stored, valid conversation")
        w2.send(W_TURN_DONE, {"turn": t5["turn"], "stop_reason": "end_turn", "from": 4,
                              "messages": [user("again"), assistant("done")]})
        r = client.recv(c5, pump=w2.pump)
        check(r[3]["stop_reason"] == "end_turn", "and ends normally")

        # -- corral-session killed mid-turn
        client.send(SESSION_PROMPT, {"tenant": "t1", "id": sid, "idem": "k6",
                                     "prompt": prompt("interrupt me")})
        t6 = w2.expect(W_TURN)[3]
        w2.event(t6["turn"], "partial")
        time.sleep(0.3)
        procs["session"].send_signal(signal.SIGKILL)
        procs["session"].wait()
        start("session")
        client = Client(ep["client"])
        deadline = time.time() + 10
        while True:
            w2.pump()
            r = client.call(SESSION_LOAD, {"tenant": "t1", "id": sid}, pump=w2.pump)
            if r[1] == SESSION or time.time() > deadline:
                break
            time.sleep(0.1)
        check(r[1] == SESSION and r[3]["session"]["state"] == "idle"
              and r[3]["session"]["last_stop"] == "interrupted",
              "after a SIGKILL restart the session is idle and its turn marked interrupted")
        evs = store.call(STORE_EVENTS_RANGE, {"session": sid, "after_seq": 0})[3]["events"]
        ended = [unpack(d)[3] for d in evs if unpack(d)[1] == EV_TURN_ENDED]
        check(ended[-1]["stop_reason"] == "interrupted" and ended[-1]["turn"] == t6["turn"],
              "an interrupted turn_ended event is stored for that turn")
        seqs = [unpack(d)[3]["seq"] for d in evs]
        check(seqs == list(range(1, len(seqs) + 1)), "the stored seqs stay contiguous")
        c7 = client.send(SESSION_PROMPT, {"tenant": "t1", "id": sid, "idem": "k7",
                                          "prompt": prompt("after restart")})
        t7 = w2.expect(W_TURN, timeout=8)[3]
        w2.send(W_TURN_DONE, {"turn": t7["turn"], "stop_reason": "end_turn", "from": 6,
                              "messages": [user("after restart"), assistant("ok")]})
        r = client.recv(c7, pump=w2.pump)
        check(r[1] == PROMPT_REPLY and r[3]["stop_reason"] == "end_turn",
              "the next prompt after the restart works")
        r = client.call(SESSION_LIST, {"tenant": "t1"})
        check(r[1] == SESSIONS and [s["id"] for s in r[3]["sessions"]] == [sid],
              "session.list shows the tenant's session")
        r = client.call(SESSION_LIST, {"tenant": "t2"})
        check(r[1] == SESSIONS and r[3].get("sessions", []) == [], "and not to another tenant")
        # -- deleting a session while its turn runs
        r = client.call(SESSION_NEW, {"tenant": "t1", "cwd": "to-delete"})
        did = r[3]["session"]["id"]
        cd = client.send(SESSION_PROMPT, {"tenant": "t1", "id": did, "idem": "d1",
                                          "prompt": prompt("long")})
        td = w2.expect(W_TURN)[3]
        r = client.call(65, {"tenant": "t1", "id": did}, pump=w2.pump)  # session.delete
        check(r[1] == OK, "a session can be deleted while its turn runs")
        r = client.recv(cd, pump=w2.pump)
        check(r[1] == ERROR and r[3]["code"] == E_NOT_FOUND, "the waiting prompt is told")
        w2.expect(W_CANCEL)
        w2.send(W_TURN_DONE, {"turn": td["turn"], "stop_reason": "cancelled", "from": 0,
                              "messages": [user("long")]})
        w2.event(td["turn"], "late")
        r = client.call(SESSION_LIST, {"tenant": "t1"}, pump=w2.pump)
        check(r[1] == SESSIONS and did not in [x["id"] for x in r[3]["sessions"]],
              "late messages for the deleted turn are ignored and the service keeps serving")
        print("session integration: all checks passed", flush=True)
    except (AssertionError, SystemExit) as e:
        if not isinstance(e, SystemExit):
            print("FAIL:", e, flush=True)
        for name in logs:
            logs[name].flush()
            print("---- %s log (tail) ----" % name)
            with open(os.path.join(tmp, name + ".log"), "rb") as f:
                print(f.read()[-3000:].decode(errors="replace"))
        return 1
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(5)
                except subprocess.TimeoutExpired:
                    p.kill()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
