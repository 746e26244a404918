#!/usr/bin/python3
"""corral-monitor's policy engine against a session service that misbehaves
or is not there (docs/policies.md, "Stopping" and "Knowing the sessions").
This script plays corral-session: a ROUTER on the client endpoint and a PUB
on the events endpoint.

  census   a census page that does not advance (more, with the same `last`
           again) is not asked for again and again: the census is dropped
           with a warning and the monitor keeps running
  stop     with no session service at all, SIGTERM stops the monitor at once
           (its SUB's queued subscription used to hold it for the 2 s linger)

usage: test_monitor_peers.py <corral-monitor>
"""
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from corral_bus import *  # noqa: F401,F403

MON_CENSUS, MON_CENSUS_REPLY = 140, 141


def start_monitor(monitor_bin, tmp, ep, log):
    return subprocess.Popen(
        [monitor_bin, "--monitor-in-endpoint", ep("monitor_in"), "--monitor-endpoint",
         ep("monitor"), "--session-endpoint", ep("client"), "--events-endpoint",
         ep("events"), "--session-idle-timeout", "1m", "--policy-census", "0",
         "--log-level", "debug"],
        stderr=open(os.path.join(tmp, log), "ab"),
        env={k: v for k, v in os.environ.items() if not k.startswith("CORRAL_")})


def main():
    monitor_bin = sys.argv[1]
    tmp = tempfile.mkdtemp(prefix="corral-it-monitor-peers-")
    ep = lambda name: "ipc://%s/%s.sock" % (tmp, name)  # noqa: E731
    mon, passed = None, False
    try:
        print("-- census pages that do not advance", flush=True)
        router = ctx.socket(zmq.ROUTER)
        router.linger = 0
        router.bind(ep("client"))
        pub = ctx.socket(zmq.PUB)
        pub.linger = 0
        pub.bind(ep("events"))
        mon = start_monitor(monitor_bin, tmp, ep, "monitor.log")
        sid = b"\x01\x93\x00\x00\x00\x00\x70\x00\x80" + b"\x00" * 6 + b"\x01"
        asked = []
        deadline = time.time() + 20
        while time.time() < deadline and len(asked) < 10:
            if not router.poll(300):
                if len(asked) >= 2:
                    break  # it stopped asking
                continue
            ident, data = router.recv_multipart()
            msg = unpack(data)
            if msg[1] != MON_CENSUS:
                continue
            asked.append(msg[3])
            page = {"sessions": [{"id": sid, "state": "idle", "opened_ms": int(time.time() * 1000)}],
                    "more": True, "last": sid}
            router.send_multipart([ident, pack(MON_CENSUS_REPLY, msg[2], page)])
        check(len(asked) >= 2, "the census asked for a first and a second page (%d)" % len(asked))
        check(asked[1].get("after") == sid, "the second page starts after the first's last id")
        time.sleep(1.0)
        while router.poll(0):
            asked.append(unpack(router.recv_multipart()[1])[3])
        check(len(asked) == 2, "a page that does not advance is not asked for again (%d asks)"
              % len(asked))
        with open(os.path.join(tmp, "monitor.log")) as f:
            check("the census did not advance" in f.read(), "and the monitor says so in its log")
        check(mon.poll() is None, "the monitor still runs")
        mon.send_signal(signal.SIGTERM)
        mon.wait(10)
        router.close()
        pub.close()

        print("-- stop without a session service", flush=True)
        mon = start_monitor(monitor_bin, tmp, ep, "monitor2.log")
        time.sleep(1.5)  # it tries to connect meanwhile
        t0 = time.time()
        mon.send_signal(signal.SIGTERM)
        rc = mon.wait(10)
        took = time.time() - t0
        check(rc == 0 and took < 1.0, "SIGTERM stops it at once (%.2f s, exit %d)" % (took, rc))
        print("PASS", flush=True)
        passed = True
    finally:
        if mon and mon.poll() is None:
            mon.kill()
            mon.wait(5)
        if not passed:
            for log in ("monitor.log", "monitor2.log"):
                path = os.path.join(tmp, log)
                if os.path.exists(path):
                    print("---- %s (tail) ----" % log)
                    print(open(path, errors="replace").read()[-3000:])
        if passed and os.environ.get("CORRAL_TEST_KEEP") != "1":
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
