#!/usr/bin/python3
"""corral-session's append batches against the real corral-store, and
against an older store that does not know them.

The session service sends every ready session's events to the store in one
store.events.append_batch per loop pass (services/session/sess_spine.c).
Here it runs behind a proxy that counts the requests crossing it:

  1. a real store: three sessions stream at once; every event reaches PUB
     in seq order and byte-identical to the store, and the appends cross
     as batches (none as single events.append);
  2. the proxy now answers append_batch as a store that predates it would
     (error unknown_type): the session service says so in its log, falls
     back to one events.append per session, and nothing is lost or
     duplicated.

usage: test_append_batches.py <corral-store> <corral-session>
"""
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid

from corral_bus import *  # noqa: F401,F403

STORE_EVENTS_APPEND, STORE_EVENTS_APPEND_BATCH = 14, 34
E_UNKNOWN_TYPE = -27


class Proxy:
    """ROUTER for the session service, DEALER to the real store; counts the
    requests by type and can refuse batches as an older store does."""

    def __init__(self, front, back):
        self.front, self.back = front, back
        self.counts = {}
        self.refuse_batches = False
        self.stop = False
        self.lock = threading.Lock()
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def count(self, t):
        with self.lock:
            return self.counts.get(t, 0)

    def run(self):
        f = ctx.socket(zmq.ROUTER)
        f.linger = 0
        f.bind(self.front)
        b = ctx.socket(zmq.DEALER)
        b.linger = 0
        b.connect(self.back)
        poller = zmq.Poller()
        poller.register(f, zmq.POLLIN)
        poller.register(b, zmq.POLLIN)
        peers = {}
        while not self.stop:
            for sock, _ in poller.poll(50):
                if sock is f:
                    ident, body = f.recv_multipart()
                    m = unpack(body)
                    with self.lock:
                        self.counts[m[1]] = self.counts.get(m[1], 0) + 1
                        refuse = self.refuse_batches and m[1] == STORE_EVENTS_APPEND_BATCH
                    if refuse:
                        f.send_multipart([ident, pack(ERROR, m[2], {
                            "code": E_UNKNOWN_TYPE,
                            "message": "unknown message type %d" % m[1]})])
                        continue
                    peers[m[2]] = ident
                    b.send(body)
                else:
                    body = b.recv()
                    ident = peers.pop(unpack(body)[2], None)
                    if ident is not None:
                        f.send_multipart([ident, body])
        f.close(0)
        b.close(0)


def main():
    store_bin, session_bin = sys.argv[1], sys.argv[2]
    tmp = tempfile.mkdtemp(prefix="corral-it-batch-")
    ep = {k: "ipc://%s/%s.sock" % (tmp, k)
          for k in ("store", "proxy", "client", "worker", "events")}
    env = {k: v for k, v in os.environ.items() if not k.startswith("CORRAL_")}
    procs, logs = {}, {}

    def start(name, argv):
        logs[name] = open(os.path.join(tmp, name + ".log"), "ab")
        procs[name] = subprocess.Popen(argv, stderr=logs[name], env=env)

    proxy = None
    ok = False
    try:
        start("store", [store_bin, "--data-dir", tmp + "/data", "--store-endpoint", ep["store"],
                        "--monitor-in-endpoint", "ipc://%s/mon.sock" % tmp])
        proxy = Proxy(ep["proxy"], ep["store"])
        start("session", [session_bin, "--data-dir", tmp + "/data",
                          "--store-endpoint", ep["proxy"], "--session-endpoint", ep["client"],
                          "--worker-endpoint", ep["worker"], "--events-endpoint", ep["events"],
                          "--workspace-roots", tmp + "/ws",
                          "--monitor-in-endpoint", "ipc://%s/mon.sock" % tmp])
        client = Client(ep["client"])
        store = Client(ep["store"])
        sub = subscribe_events(ep["events"])
        time.sleep(0.5)  # the subscription reaches the PUB before anything is published

        r = session_new_when_ready(client, {"tenant": "t1", "cwd": "a"})
        check(r[1] == SESSION, "session.new through the proxy")
        sids = [r[3]["session"]["id"]]
        for cwd in ("b", "c"):
            sids.append(client.call(SESSION_NEW, {"tenant": "t1", "cwd": cwd})[3]["session"]["id"])
        w = Worker(ep["worker"], "w1")
        time.sleep(0.3)
        w.pump()

        published = {sid: [] for sid in sids}
        topics = {b"s/%s/" % str(uuid.UUID(bytes=sid)).encode(): sid for sid in sids}

        def collect():
            while sub.poll(0):
                topic, data = sub.recv_multipart()
                if topic in topics:
                    published[topics[topic]].append(data)

        def round_(tag, n, first_message):
            """One turn on every session, n events each, interleaved."""
            corrs, turns = [], []
            for sid in sids:
                corrs.append(client.send(SESSION_PROMPT, {"tenant": "t1", "id": sid,
                                                          "idem": tag + sid.hex(),
                                                          "prompt": prompt(tag)}))
            for _ in sids:
                t = w.expect(W_TURN)[3]
                turns.append(t["turn"])
            for i in range(n):
                for turn in turns:
                    w.event(turn, "%s-%d" % (tag, i))
                if i % 10 == 0:
                    w.pump()
                    collect()
            for turn in turns:
                w.send(W_TURN_DONE, {"turn": turn, "stop_reason": "end_turn",
                                     "from": first_message,
                                     "messages": [user(tag), assistant(tag)]})
            lasts = {}
            for sid, c in zip(sids, corrs):
                r = client.recv(c, timeout=10, pump=lambda: (w.pump(), collect()))
                check(r[1] == PROMPT_REPLY and r[3]["stop_reason"] == "end_turn",
                      "round %s: the turn on %s ended" % (tag, sid.hex()[:8]))
                lasts[sid] = r[3]["last_seq"]
            end = time.time() + 5
            while time.time() < end and any(
                    len(published[s]) < lasts[s] for s in sids):
                collect()
                time.sleep(0.02)
            for sid in sids:
                seqs = [unpack(d)[3]["seq"] for d in published[sid]]
                if seqs != list(range(1, lasts[sid] + 1)):
                    print("got", len(seqs), seqs[:5], seqs[-5:])
                check(seqs == list(range(1, lasts[sid] + 1)),
                      "round %s: PUB has seqs 1..%d of %s, in order, once each"
                      % (tag, lasts[sid], sid.hex()[:8]))
                stored = store.call(STORE_EVENTS_RANGE, {"session": sid, "after_seq": 0,
                                                          "limit": 1000})[3]["events"]
                check(stored == published[sid], "round %s: PUB is byte-identical to the store"
                      % tag)

        # 1. the real store: batches, and no single appends
        round_("one", 200, 0)
        batches, singles = proxy.count(STORE_EVENTS_APPEND_BATCH), proxy.count(STORE_EVENTS_APPEND)
        check(batches > 0 and singles == 0,
              "events went as append batches (%d batches, %d single appends)" % (batches, singles))
        check(batches < 600,
              "fewer batches than the 600+ events they carried (%d)" % batches)

        # 2. an older store: refused batches, single appends from then on
        proxy.refuse_batches = True
        round_("two", 100, 2)
        check(proxy.count(STORE_EVENTS_APPEND) > 0,
              "after unknown_type the session service appends session by session (%d)"
              % proxy.count(STORE_EVENTS_APPEND))
        logs["session"].flush()
        with open(os.path.join(tmp, "session.log"), "rb") as f:
            log = f.read().decode(errors="replace")
        check("does not take append batches" in log, "and says so in its log")
        ok = True
    finally:
        if proxy:
            proxy.stop = True
            proxy.t.join(2)
        for p in procs.values():
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(5)
                except subprocess.TimeoutExpired:
                    p.kill()
        if not ok:
            for name in logs:
                logs[name].flush()
                with open(os.path.join(tmp, name + ".log"), "rb") as f:
                    print("---- %s log ----\n%s" % (name, f.read()[-3000:].decode(errors="replace")))
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
