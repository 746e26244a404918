#!/usr/bin/python3
"""Memory per idle session in corral-session: RSS before and after creating
N sessions (DESIGN §14 target: <= 4 KiB each).  Needs build/ci.
usage: /usr/bin/python3 bench/session_memory.py   (from the repo root)"""
import os, subprocess, sys, tempfile, time, shutil
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "integration"))
from corral_bus import *
tmp = tempfile.mkdtemp(prefix="corral-mem-")
svc = Services(tmp, {"store": "build/ci/services/store/corral-store", "session": "build/ci/services/session/corral-session"})
svc.start("store", ["--store-sync", "os"]); svc.start("session", ["--log-level", "warn"])
c = Client(svc.ep["client"])
time.sleep(0.5)
while c.call(SESSION_NEW, {"tenant": "m", "cwd": "w0"})[1] != SESSION: time.sleep(0.1)
def rss(pid):
    for l in open("/proc/%d/status" % pid):
        if l.startswith("VmRSS:"): return int(l.split()[1])
pid = svc.procs["session"].pid
base = rss(pid)
N = 20000
sent = 0
while sent < N:
    for _ in range(500):
        c.send(SESSION_NEW, {"tenant": "m", "cwd": "w"})
        sent += 1
    for _ in range(500):
        if not c.s.poll(10000): raise SystemExit("timeout")
        c.s.recv()
time.sleep(1)
after = rss(pid)
print("sessions %d: RSS %d KiB -> %d KiB: %.2f KiB per idle session" % (N, base, after, (after - base) / N))
svc.stop_all(); shutil.rmtree(tmp, ignore_errors=True)
