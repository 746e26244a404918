"""Shared helpers for the Python integration tests: the bus codec's wire
shape (msgpack [version, type, corr, body]), message ids from
proto/proto_catalogue.def, a client and a scripted worker over ZeroMQ, and
process management for the services under test."""
import json
import os
import signal
import subprocess
import time

import msgpack
import zmq

V = 1
# message type ids (proto/proto_catalogue.def)
OK, ERROR, SESSION, PROMPT_REPLY = 1, 2, 40, 55
STORE_EVENTS_RANGE, STORE_MESSAGES_GET, EVENTS, MESSAGES = 15, 17, 43, 44
SESSION_NEW, SESSION_LOAD, SESSION_LIST, SESSION_PROMPT, SESSION_CANCEL = 60, 61, 62, 66, 67
PERMISSION_ANSWER, SESSIONS = 70, 41
W_READY, W_HEARTBEAT, W_EVENT, W_PERM_REQ, W_TURN_DONE, W_TURN_FAILED = 100, 101, 102, 103, 104, 105
W_DISCONNECT, W_TURN, W_CANCEL, W_PERM_ANSWER = 106, 110, 111, 112
EV_AGENT_MESSAGE, EV_TURN_ENDED, EV_PERM_REQUEST, EV_STATE = 204, 212, 210, 201
E_FORBIDDEN, E_BUSY, E_CONFLICT, E_WORKER_LOST, E_NOT_FOUND = -6, -3, -8, -10, -2

ctx = zmq.Context()


def check(cond, what):
    if not cond:
        print("FAIL:", what, flush=True)
        raise SystemExit(1)
    print("ok:", what, flush=True)


def pack(t, corr, body):
    return msgpack.packb([V, t, corr, body], use_bin_type=True)


def unpack(data):
    return msgpack.unpackb(data, raw=False)


class Client:
    def __init__(self, ep):
        self.s = ctx.socket(zmq.DEALER)
        self.s.linger = 0
        self.s.connect(ep)
        self.corr = 0
        self.kept = {}

    def send(self, t, body):
        self.corr += 1
        self.s.send(pack(t, self.corr, body))
        return self.corr

    def recv(self, corr, timeout=5.0, pump=None):
        """The reply to corr; replies to other requests are kept for later."""
        if corr in self.kept:
            return self.kept.pop(corr)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if pump:
                pump()
            if self.s.poll(50):
                m = unpack(self.s.recv())
                if m[2] == corr:
                    return m
                self.kept[m[2]] = m
        raise AssertionError("no reply to corr %d within %.1fs" % (corr, timeout))

    def call(self, t, body, timeout=5.0, pump=None):
        return self.recv(self.send(t, body), timeout, pump)


class Worker:
    """A scripted worker: answers heartbeats; the test drives turns."""

    def __init__(self, ep, name):
        self.ep, self.name = ep, name
        self.connect()

    def connect(self):
        self.s = ctx.socket(zmq.DEALER)
        self.s.linger = 0
        self.s.connect(self.ep)
        self.ready()
        self.last_beat = time.time()
        self.inbox = []

    def ready(self):
        self.s.send(pack(W_READY, 0, {"worker_id": self.name, "capacity": 4, "host": "test"}))

    def pump(self):
        while self.s.poll(0):
            m = unpack(self.s.recv())
            if m[1] == W_HEARTBEAT:
                continue
            if m[1] == W_DISCONNECT:  # the session service forgot us
                self.ready()
                continue
            self.inbox.append(m)
        if time.time() - self.last_beat > 0.5:
            self.s.send(pack(W_HEARTBEAT, 0, {}))
            self.last_beat = time.time()

    def expect(self, t, timeout=5.0, others=()):
        deadline = time.time() + timeout
        while time.time() < deadline:
            self.pump()
            for other in others:
                other()
            for i, m in enumerate(self.inbox):
                if m[1] == t:
                    return self.inbox.pop(i)
            time.sleep(0.01)
        raise AssertionError("worker %s got no message %d" % (self.name, t))

    def send(self, t, body):
        self.s.send(pack(t, 0, body))

    def event(self, turn, text):
        ev = pack(EV_AGENT_MESSAGE, 0, {"session": b"\0" * 16, "seq": 0, "ts": 0, "text": text})
        self.send(W_EVENT, {"turn": turn, "event": ev})

    def close(self):
        self.s.close(0)


def subscribe_events(ep):
    """A SUB on the session service's event PUB, every session's topic."""
    sub = ctx.socket(zmq.SUB)
    sub.linger = 0
    sub.connect(ep)
    sub.setsockopt(zmq.SUBSCRIBE, b"s/")
    return sub


def session_new_when_ready(client, body, timeout=10.0):
    """session.new, retried while the session service answers an error: it
    answers "starting" until its startup scan ends.  Returns the last reply."""
    deadline = time.time() + timeout
    while True:
        r = client.call(SESSION_NEW, body)
        if r[1] != ERROR or time.time() > deadline:
            return r
        time.sleep(0.1)


def user(text):
    return json.dumps({"role": "user", "content": [{"type": "text", "text": text}]})


def assistant(text):
    return json.dumps({"role": "assistant", "content": [{"type": "text", "text": text}]})


def prompt(text):
    return json.dumps([{"type": "text", "text": text}])


class Services:
    """Start, kill and restart the services of a test in one scratch dir."""

    def __init__(self, tmp, binaries):
        self.tmp, self.bin, self.procs, self.logs = tmp, binaries, {}, {}
        self.ep = {k: "ipc://%s/%s.sock" % (tmp, k)
                   for k in ("store", "client", "worker", "events", "monitor", "monitor_in")}
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("CORRAL_")}

    def argv(self, name, extra):
        d, ep = self.tmp + "/data", self.ep
        # Every service beats to this scratch dir's monitor (started or not),
        # never to a real one on the default tcp://127.0.0.1:7705.
        beat = ["--monitor-in-endpoint", ep["monitor_in"]]
        if name == "store":
            return [self.bin["store"], "--data-dir", d, "--store-endpoint", ep["store"]] + beat + extra
        if name == "session":
            return [self.bin["session"], "--data-dir", d, "--store-endpoint", ep["store"],
                    "--session-endpoint", ep["client"], "--worker-endpoint", ep["worker"],
                    "--events-endpoint", ep["events"], "--workspace-roots",
                    self.tmp + "/ws"] + beat + extra
        if name.startswith("worker"):
            return [self.bin["worker"], "--worker-endpoint", ep["worker"],
                    "--worker-id", name] + beat + extra
        if name == "monitor":
            # Its policy engine watches this scratch dir's session service.
            return [self.bin["monitor"], "--monitor-in-endpoint", ep["monitor_in"],
                    "--monitor-endpoint", ep["monitor"], "--session-endpoint", ep["client"],
                    "--events-endpoint", ep["events"]] + extra
        raise ValueError(name)

    def start(self, name, extra=()):
        self.logs[name] = open(os.path.join(self.tmp, name + ".log"), "ab")
        self.procs[name] = subprocess.Popen(self.argv(name, list(extra)), stderr=self.logs[name],
                                            env=self.env)
        return self.procs[name]

    def kill(self, name, sig=signal.SIGKILL):
        p = self.procs[name]
        p.send_signal(sig)
        p.wait(10)

    def dump_logs(self):
        for name in self.logs:
            self.logs[name].flush()
            print("---- %s log (tail) ----" % name)
            with open(os.path.join(self.tmp, name + ".log"), "rb") as f:
                print(f.read()[-4000:].decode(errors="replace"))

    def stop_all(self):
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(5)
                except subprocess.TimeoutExpired:
                    p.kill()
