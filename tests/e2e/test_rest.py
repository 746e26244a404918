#!/usr/bin/python3
"""End to end: the gateway's HTTP side, driven with curl against a whole
stack (store, session, the scripted model, a worker, the gateway).

Every REST endpoint of docs/openapi.yaml, happy path and main errors
(no key, wrong key, another tenant's session, bad JSON, too large,
unknown route, HEAD, a pipelined request, a body that never comes, the
per-address connection limit), the event stream as JSON lines (gap-free after a real
prompt) and as SSE with Last-Event-ID, follow mode, ?wait=false, busy and
cancel, a permission request answered over REST, the per-address probe
limit (ever-new keys, readiness checks), login cookie, keep-alive reuse, readiness with the session service
down, the static files (content types, cache headers, path escapes,
symlinks), /metrics through promtool, the key rate limit and the message
size limit.

usage: test_rest.py BUILD_DIR
"""
import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from corral_stack import Stack  # noqa: E402

SCRIPT = {"rules": [
    {"name": "hello", "match": "hello",
     "responses": [[{"thinking": "A greeting.", "chunks": 2},
                    {"text": "Hello from the scripted model, over REST!", "chunks": 6}]]},
    {"name": "long", "match": "long wait", "chunk_delay_ms": 1000,
     "responses": [[{"text": "one two three four five six seven eight nine ten eleven twelve "
                             "thirteen fourteen fifteen sixteen seventeen eighteen nineteen "
                             "twenty twentyone twentytwo", "chunks": 22}]]},
    {"name": "perm", "match": "write the file",
     "responses": [[{"text": "Writing."},
                    {"tool_call": {"name": "write_file",
                                   "arguments": {"path": "rest-perm.txt", "content": "hi\n"}}}],
                   [{"text": "Done."}]]},
    {"name": "cancel", "match": "cancel me", "chunk_delay_ms": 300,
     "responses": [[{"text": "x " * 80, "chunks": 80}]]},
    {"name": "default", "match": "*", "responses": [[{"text": "ok", "chunks": 1}]]},
]}

PASSED = []


def check(cond, what):
    if not cond:
        raise AssertionError(what)


class Resp:
    def __init__(self, status, headers, body, rc):
        self.status, self.headers, self.body, self.rc = status, headers, body, rc

    def h(self, name, default=None):
        return self.headers.get(name.lower(), default)

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return "HTTP %s %s %r" % (self.status, self.headers, self.body[:400])


def curl(url, method=None, data=None, key=None, headers=(), args=(), timeout=30):
    """One request with curl; data (str/bytes/dict) goes as the body."""
    with tempfile.TemporaryDirectory() as d:
        hfile, bfile = os.path.join(d, "h"), os.path.join(d, "b")
        argv = ["curl", "-sS", "--path-as-is", "-D", hfile, "-o", bfile,
                "--max-time", str(timeout), "-H", "Expect:"]
        if method:
            argv += ["-X", method]
        if key:
            argv += ["-H", "Authorization: Bearer " + key]
        for hd in headers:
            argv += ["-H", hd]
        if data is not None:
            if isinstance(data, dict):
                data = json.dumps(data)
            if isinstance(data, str):
                data = data.encode()
            dfile = os.path.join(d, "data")
            with open(dfile, "wb") as f:
                f.write(data)
            argv += ["--data-binary", "@" + dfile]
        argv += list(args) + [url]
        p = subprocess.run(argv, capture_output=True, timeout=timeout + 10)
        status, hdrs = 0, {}
        if os.path.exists(hfile):
            with open(hfile, "rb") as f:
                for line in f.read().decode(errors="replace").split("\r\n"):
                    if line.startswith("HTTP/"):
                        status, hdrs = int(line.split()[1]), {}
                    elif ":" in line:
                        k, v = line.split(":", 1)
                        hdrs[k.strip().lower()] = v.strip()
        body = b""
        if os.path.exists(bfile):
            with open(bfile, "rb") as f:
                body = f.read()
        return Resp(status, hdrs, body.decode(errors="replace"), p.returncode)


def stream_start(url, key=None, headers=(), seconds=5):
    """A streaming GET in the background (curl -N); read it with stream_end."""
    argv = ["curl", "-sN", "--max-time", str(seconds)]
    if key:
        argv += ["-H", "Authorization: Bearer " + key]
    for hd in headers:
        argv += ["-H", hd]
    return subprocess.Popen(argv + [url], stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def stream_end(p):
    out, _ = p.communicate(timeout=120)
    return out.decode(errors="replace")


def sse_records(text):
    """SSE text -> list of records ({"id","event","data"} or {"comment"})."""
    recs = []
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        rec = {}
        for line in block.split("\n"):
            if line.startswith(":"):
                rec["comment"] = line[1:].strip()
            elif ": " in line:
                k, v = line.split(": ", 1)
                rec[k] = v
        recs.append(rec)
    return recs


def ndjson(text):
    return [json.loads(line) for line in text.split("\n") if line.strip()]


def error_of(r, status, reason):
    check(r.status == status, "expected %d, got %r" % (status, r))
    e = r.json().get("error", {})
    check(e.get("reason") == reason, "expected reason %s: %r" % (reason, r))
    check(isinstance(e.get("code"), int) and e.get("message"), "error shape: %r" % r)
    return e


class Env:
    pass


E = Env()


def url(path):
    return E.stack.http_url + path


def new_session(key=None, **extra):
    body = dict({"cwd": E.stack.workspace}, **extra)
    r = curl(url("/v1/sessions"), data=body, key=key or E.key)
    check(r.status == 201, "create: %r" % r)
    return r.json()["sessionId"]


def wait_ready(deadline=20):
    end = time.time() + deadline
    while time.time() < end:
        r = curl(url("/v1/health/ready"), timeout=5)
        if r.status == 200:
            return r
        time.sleep(0.2)
    raise AssertionError("the gateway did not become ready: %r" % r)


# ---- tests: phase A, the default gateway ------------------------------------------

def t_health():
    r = curl(url("/v1/health/live"))
    check(r.status == 200 and r.json() == {"status": "ok"}, "live: %r" % r)
    r = wait_ready()
    check(r.json()["status"] == "ready" and r.json().get("epoch"), "ready: %r" % r)
    r = curl(url("/v1/health/live"), method="POST")
    check(r.status == 405 and r.h("allow") == "GET", "POST live: %r" % r)


def t_auth():
    r = curl(url("/v1/sessions"))
    e = error_of(r, 401, "unauthorized")
    check(e["code"] == -32000, "401 code: %r" % r)
    check(r.h("www-authenticate", "").startswith("Bearer"), "WWW-Authenticate: %r" % r)
    # a malformed key, and a well-formed key nobody issued
    error_of(curl(url("/v1/sessions"), key="nope"), 401, "unauthorized")
    error_of(curl(url("/v1/sessions"), key="crl_" + "A" * 43), 401, "unauthorized")
    error_of(curl(url("/v1/sessions"), headers=["Authorization: Basic abc"]), 401,
             "unauthorized")
    # each way of presenting the key
    check(curl(url("/v1/sessions"), key=E.key).status == 200, "Bearer")
    check(curl(url("/v1/sessions"), headers=["X-API-Key: " + E.key]).status == 200,
          "X-API-Key")
    check(curl(url("/v1/sessions?token=" + E.key)).status == 200, "?token=")
    check(curl(url("/v1/sessions"), headers=["Cookie: corral_key=" + E.key]).status == 200,
          "cookie")


def t_sessions():
    # create: 201 + Location + the session/new result
    r = curl(url("/v1/sessions"), key=E.key,
             data={"cwd": E.stack.workspace, "title": "first", "mode": "edit"})
    check(r.status == 201, "create: %r" % r)
    sid = r.json()["sessionId"]
    check(r.h("location") == "/v1/sessions/" + sid, "Location: %r" % r)
    check(r.json()["modes"]["currentModeId"] == "edit", "mode: %r" % r)
    check(r.h("content-type") == "application/json", "content type: %r" % r)
    error_of(curl(url("/v1/sessions"), key=E.key, data={}), 400, "invalid")
    error_of(curl(url("/v1/sessions"), key=E.key, data={"cwd": "relative/dir"}), 400,
             "invalid")
    error_of(curl(url("/v1/sessions"), key=E.key,
                  data={"cwd": E.stack.workspace, "title": 5}), 400, "invalid")
    error_of(curl(url("/v1/sessions"), key=E.key,
                  data={"cwd": E.stack.workspace, "mode": "wild"}), 400, "invalid")
    # one session, as its REST object
    r = curl(url("/v1/sessions/" + sid), key=E.key)
    check(r.status == 200, "get: %r" % r)
    s = r.json()
    check(s["id"] == sid and s["cwd"] == E.stack.workspace and s["title"] == "first"
          and s["tenant"] == "tenant-a" and s["state"] and "usage" in s, "get: %r" % s)
    # another tenant's session does not exist for it; nor does a bad id
    error_of(curl(url("/v1/sessions/" + sid), key=E.key_b), 404, "not_found")
    error_of(curl(url("/v1/sessions/not-a-session"), key=E.key), 404, "not_found")
    error_of(curl(url("/v1/sessions/" + sid), key=E.key_b, method="DELETE"), 404,
             "not_found")
    # list, cwd filter, paging
    other = new_session()
    r = curl(url("/v1/sessions"), key=E.key)
    ids = [x["id"] for x in r.json()["sessions"]]
    check(sid in ids and other in ids, "list: %r" % r)
    check(all(x["tenant"] == "tenant-a" for x in r.json()["sessions"]), "list tenant")
    check(sid not in [x["id"] for x in curl(url("/v1/sessions"), key=E.key_b).json()
                      ["sessions"]], "tenant-b sees tenant-a's session")
    r = curl(url("/v1/sessions?cwd=/nowhere"), key=E.key)
    check(r.status == 200 and r.json()["sessions"] == [], "cwd filter: %r" % r)
    r = curl(url("/v1/sessions?limit=1"), key=E.key)
    page = r.json()
    check(len(page["sessions"]) == 1 and page.get("nextCursor"), "limit=1: %r" % r)
    r = curl(url("/v1/sessions?limit=1&cursor=" + page["nextCursor"]), key=E.key)
    check(r.status == 200 and r.json()["sessions"][0]["id"] != page["sessions"][0]["id"],
          "cursor: %r" % r)
    error_of(curl(url("/v1/sessions?limit=0"), key=E.key), 400, "invalid")
    error_of(curl(url("/v1/sessions?cursor=zzz"), key=E.key), 400, "invalid")
    # delete
    r = curl(url("/v1/sessions/" + other), key=E.key, method="DELETE")
    check(r.status == 204 and r.body == "", "delete: %r" % r)
    error_of(curl(url("/v1/sessions/" + other), key=E.key), 404, "not_found")


def t_prompt_and_events():
    sid = new_session()
    r = curl(url("/v1/sessions/%s/prompt" % sid), key=E.key, data={"prompt": "hello there"})
    check(r.status == 200, "prompt: %r" % r)
    ans = r.json()
    check(ans["stopReason"] == "end_turn" and ans["sessionId"] == sid
          and ans["idempotencyKey"], "prompt answer: %r" % ans)
    last = ans["lastSeq"]
    # every stored event, gap-free, as JSON lines
    r = curl(url("/v1/sessions/%s/events?after=0" % sid), key=E.key)
    check(r.status == 200 and r.h("content-type") == "application/x-ndjson", "events: %r" % r)
    check(r.h("transfer-encoding") == "chunked", "events chunked: %r" % r)
    head = int(r.h("x-corral-last-seq"))
    check(head >= last, "x-corral-last-seq %d < %d" % (head, last))
    evs = ndjson(r.body)
    check([e["seq"] for e in evs] == list(range(1, head + 1)), "gap-free 1..%d: %r" %
          (head, [e["seq"] for e in evs]))
    kinds = [e["kind"] for e in evs]
    for k in ("session_created", "state", "user_message", "turn_started",
              "agent_thought_chunk", "agent_message_chunk", "turn_ended"):
        check(k in kinds, "kind %s in %r" % (k, kinds))
    check(all(e["sessionId"] == sid and e["epoch"] for e in evs), "sessionId/epoch")
    um = [e for e in evs if e["kind"] == "user_message"][0]
    check(um["prompt"] == [{"type": "text", "text": "hello there"}], "prompt text: %r" % um)
    text = "".join(e["text"] for e in evs if e["kind"] == "agent_message_chunk")
    check(text == "Hello from the scripted model, over REST!", "answer text %r" % text)
    te = [e for e in evs if e["kind"] == "turn_ended"][0]
    check(te["stopReason"] == "end_turn" and te["seq"] <= last, "turn_ended: %r" % te)
    # a tail, the head itself (empty), past the head (410), malformed
    r = curl(url("/v1/sessions/%s/events?after=%d" % (sid, head - 3)), key=E.key)
    check([e["seq"] for e in ndjson(r.body)] == [head - 2, head - 1, head], "tail: %r" % r)
    r = curl(url("/v1/sessions/%s/events?after=%d" % (sid, head)), key=E.key)
    check(r.status == 200 and r.body == "", "at head: %r" % r)
    e = error_of(curl(url("/v1/sessions/%s/events?after=%d" % (sid, head + 100)),
                      key=E.key), 410, "expired")
    check(e["lastSeq"] == head, "410 lastSeq: %r" % e)
    error_of(curl(url("/v1/sessions/%s/events?after=abc" % sid), key=E.key), 400, "invalid")
    error_of(curl(url("/v1/sessions/%s/events?follow=maybe" % sid), key=E.key), 400,
             "invalid")
    error_of(curl(url("/v1/sessions/%s/events" % sid), key=E.key_b), 404, "not_found")
    # content blocks and a client's idempotency key
    r = curl(url("/v1/sessions/%s/prompt" % sid), key=E.key,
             data={"prompt": [{"type": "text", "text": "anything"}], "idempotencyKey": "k-1"})
    check(r.status == 200 and r.json()["idempotencyKey"] == "k-1"
          and r.json()["lastSeq"] > last, "blocks prompt: %r" % r)
    error_of(curl(url("/v1/sessions/%s/prompt" % sid), key=E.key, data={}), 400, "invalid")
    error_of(curl(url("/v1/sessions/%s/prompt" % sid), key=E.key, data={"prompt": []}), 400,
             "invalid")
    error_of(curl(url("/v1/sessions/%s/prompt" % sid), key=E.key,
                  data={"prompt": "x", "idempotencyKey": ""}), 400, "invalid")
    error_of(curl(url("/v1/sessions/%s/prompt" % sid), key=E.key_b, data={"prompt": "x"}),
             404, "not_found")
    E.sid, E.head = sid, curl(url("/v1/sessions/" + sid), key=E.key).json()["lastSeq"]


def t_sse():
    sid, head = E.sid, E.head
    # Last-Event-ID overrides after; the stream follows (curl ends it)
    p = stream_start(url("/v1/sessions/%s/events?after=1" % sid), key=E.key, seconds=3,
                     headers=["Accept: text/event-stream", "Last-Event-ID: 7"])
    recs = [x for x in sse_records(stream_end(p)) if "id" in x]
    ids = [int(x["id"]) for x in recs]
    check(ids == list(range(8, head + 1)), "SSE ids resume after 7: %r" % ids)
    for x in recs:
        d = json.loads(x["data"])
        check(d["seq"] == int(x["id"]) and d["kind"] == x["event"], "SSE record %r" % x)
    # without Last-Event-ID, after= decides
    p = stream_start(url("/v1/sessions/%s/events?after=%d" % (sid, head - 2)), key=E.key,
                     seconds=2, headers=["Accept: text/event-stream"])
    ids = [int(x["id"]) for x in sse_records(stream_end(p)) if "id" in x]
    check(ids == [head - 1, head], "SSE after=: %r" % ids)
    r = curl(url("/v1/sessions/%s/events" % sid), key=E.key, timeout=2,
             headers=["Accept: text/event-stream"])
    check(r.h("content-type") == "text/event-stream", "SSE content type: %r" % r)
    error_of(curl(url("/v1/sessions/%s/events" % sid), key=E.key,
                  headers=["Accept: text/event-stream", "Last-Event-ID: x"]), 400, "invalid")


def t_follow_live():
    sid, head = E.sid, E.head
    p = stream_start(url("/v1/sessions/%s/events?after=%d&follow=1" % (sid, head)),
                     key=E.key, seconds=8)
    q = stream_start(url("/v1/sessions/%s/events?after=%d" % (sid, head)), key=E.key,
                     seconds=8, headers=["Accept: text/event-stream"])
    time.sleep(0.5)
    r = curl(url("/v1/sessions/%s/prompt" % sid), key=E.key, data={"prompt": "hello again"})
    check(r.status == 200, "prompt: %r" % r)
    last = r.json()["lastSeq"]
    evs = ndjson(stream_end(p))
    seqs = [e["seq"] for e in evs]
    check(seqs[:last - head] == list(range(head + 1, last + 1)), "live JSON lines %r" % seqs)
    ids = [int(x["id"]) for x in sse_records(stream_end(q)) if "id" in x]
    check(ids[:last - head] == list(range(head + 1, last + 1)), "live SSE %r" % ids)
    E.head = curl(url("/v1/sessions/" + sid), key=E.key).json()["lastSeq"]


def t_nowait_busy_cancel():
    sid = new_session()
    r = curl(url("/v1/sessions/%s/prompt?wait=false" % sid), key=E.key,
             data={"prompt": "cancel me please"})
    check(r.status == 202, "wait=false: %r" % r)
    acc = r.json()
    check(acc["status"] == "accepted" and acc["turnId"] and acc["seq"] >= 3, "202: %r" % acc)
    e = error_of(curl(url("/v1/sessions/%s/prompt" % sid), key=E.key, data={"prompt": "x"}),
                 409, "busy")
    check(e["code"] == -32001, "busy code: %r" % e)
    error_of(curl(url("/v1/sessions/%s/prompt?wait=perhaps" % sid), key=E.key,
                  data={"prompt": "x"}), 400, "invalid")
    time.sleep(0.5)
    r = curl(url("/v1/sessions/%s/cancel" % sid), key=E.key, method="POST")
    check(r.status == 200 and r.json() == {}, "cancel: %r" % r)
    error_of(curl(url("/v1/sessions/%s/cancel" % sid), key=E.key_b, method="POST"), 404,
             "not_found")
    # the turn ends cancelled: follow until turn_ended
    deadline = time.time() + 20
    ended = None
    while time.time() < deadline and not ended:
        evs = ndjson(curl(url("/v1/sessions/%s/events?after=%d" % (sid, acc["seq"] - 1)),
                          key=E.key).body)
        ended = [e for e in evs if e["kind"] == "turn_ended" and e["turnId"] == acc["turnId"]]
        time.sleep(0.3)
    check(ended and ended[0]["stopReason"] == "cancelled", "cancelled turn: %r" % ended)


def t_bodies():
    e = error_of(curl(url("/v1/sessions"), key=E.key, data="{bad"), 400, "invalid")
    check("line 1" in e["message"], "parse position: %r" % e)
    error_of(curl(url("/v1/sessions"), key=E.key, data="[1,2]"), 400, "invalid")
    error_of(curl(url("/v1/sessions"), key=E.key, data="[" * 70 + "]" * 70), 400, "depth")
    big = b'{"key":"' + b"x" * (1024 * 1024) + b'"}'
    r = curl(url("/v1/sessions"), key=E.key, data=big)
    e = error_of(r, 413, "too_large")
    check(e["limit"] == 1024 * 1024 and r.h("connection") == "close", "413: %r" % r)
    r = curl(url("/v1/sessions"), key=E.key, data="{}",
             headers=["Transfer-Encoding: chunked"])
    check(r.status == 411, "chunked body: %r" % r)


def t_routes():
    error_of(curl(url("/v1/nope"), key=E.key), 404, "not_found")
    error_of(curl(url("/v1"), key=E.key), 404, "not_found")
    r = curl(url("/v1/sessions"), key=E.key, method="PUT")
    check(r.status == 405 and r.h("allow") == "GET, POST", "405: %r" % r)
    r = curl(url("/v1/sessions/%s/prompt" % E.sid), key=E.key)
    check(r.status == 405 and r.h("allow") == "POST", "405 prompt: %r" % r)


def t_login_cookie():
    with tempfile.TemporaryDirectory() as d:
        jar = os.path.join(d, "jar")
        r = curl(url("/v1/login"), data={"key": E.key}, args=["-c", jar])
        check(r.status == 204, "login: %r" % r)
        c = r.h("set-cookie", "")
        check(c.startswith("corral_key=" + E.key + ";") and "HttpOnly" in c
              and "SameSite=Strict" in c and "Path=/" in c and "Secure" not in c,
              "Set-Cookie: %r" % c)
        r = curl(url("/v1/sessions"), args=["-b", jar])
        check(r.status == 200 and "sessions" in r.json(), "cookie only: %r" % r)
        r = curl(url("/v1/logout"), method="POST", args=["-b", jar, "-c", jar])
        check(r.status == 204 and "Max-Age=0" in r.h("set-cookie", ""), "logout: %r" % r)
        error_of(curl(url("/v1/sessions"), args=["-b", jar]), 401, "unauthorized")
    error_of(curl(url("/v1/login"), data={"key": "crl_" + "B" * 43}), 401, "unauthorized")
    error_of(curl(url("/v1/login"), data={"key": "not a key"}), 401, "unauthorized")
    error_of(curl(url("/v1/login"), data={}), 400, "invalid")


def t_keepalive():
    # one connection, several transactions: API, static, API again
    p = subprocess.run(["curl", "-sv", "-H", "Authorization: Bearer " + E.key,
                        url("/v1/health/live"), url("/v1/sessions"), url("/style.css"),
                        url("/v1/sessions/%s/events?after=%d" % (E.sid, E.head - 2)),
                        url("/metrics"), "-o", "/dev/null", "-o", "/dev/null", "-o",
                        "/dev/null", "-o", "/dev/null", "-o", "/dev/null"],
                       capture_output=True, timeout=30)
    err = p.stderr.decode(errors="replace")
    check(p.returncode == 0, "curl: %s" % err[-500:])
    check(err.count("< HTTP/1.1 200") == 5, "five answers: %s" % err[-1500:])
    check(err.count("Re-using existing connection") == 4, "one connection: %s" % err[-1500:])


def raw_open(data):
    s = socket.create_connection(("127.0.0.1", E.stack.port))
    s.sendall(data)
    return s


def raw_read(s, seconds):
    """What the gateway sends within seconds, and whether it closed."""
    s.settimeout(0.2)
    out, end = b"", time.time() + seconds
    while time.time() < end:
        try:
            chunk = s.recv(65536)
        except socket.timeout:
            continue
        if not chunk:
            return out, True
        out += chunk
    return out, False


def t_head():
    # HEAD: GET's headers, no body, and the connection stays in step
    s = raw_open(b"HEAD /v1/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
    out, _ = raw_read(s, 1)
    check(out.startswith(b"HTTP/1.1 200") and b"content-length: 15\r\n" in out.lower()
          and out.endswith(b"\r\n\r\n"), "HEAD: %r" % out)
    s.sendall(b"GET /v1/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
    out, _ = raw_read(s, 1)
    check(out.startswith(b"HTTP/1.1 200") and out.endswith(b'{"status":"ok"}'),
          "GET after HEAD: %r" % out)
    s.close()
    r = curl(url("/v1/sessions"), key=E.key, args=["-I"])
    check(r.status == 200 and int(r.h("content-length")) > 0 and "sessions" not in r.body,
          "HEAD: %r" % r)  # curl -I writes the headers where the body would go


def t_pipelined():
    # lws 4.1 cannot answer a pipelined request: the connection is closed
    # at once rather than left waiting forever
    req = b"GET /v1/health/live HTTP/1.1\r\nHost: x\r\n\r\n"
    s = raw_open(req + req)
    out, closed = raw_read(s, 3)
    s.close()
    check(closed or out.count(b"HTTP/1.1 200") == 2, "pipelined: %r %s" % (out, closed))
    check(curl(url("/v1/health/live")).status == 200, "served after")


def t_body_deadline_start():
    # a body announced and never sent: checked at the end of the phase
    E.late = raw_open(b"POST /v1/login HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n")
    E.late_t0 = time.time()


def t_body_deadline_check():
    out, closed = raw_read(E.late, max(1, 36 - (time.time() - E.late_t0)))
    E.late.close()
    check(closed, "a request whose body never came still holds its connection: %r" % out)


def t_metrics():
    r = curl(url("/metrics"))
    check(r.status == 200 and r.h("content-type").startswith("text/plain; version=0.0.4"),
          "metrics: %r" % r)
    for name in ("corral_gateway_requests_total", "corral_gateway_events_out_total",
                 'corral_gateway_connections{kind="http"}', "corral_gateway_subscriptions",
                 "corral_gateway_keys_cached", "corral_gateway_queued_bytes",
                 "corral_gateway_uptime_seconds", 'corral_gateway_http_responses_total{code="2xx"}',
                 # the whole system's part, from corral-monitor (docs/monitor.md)
                 "corral_gateway_monitor_up 1", 'corral_up{service="store"',
                 'corral_process_resident_memory_bytes{service="session"',
                 "# TYPE corral_store_commit_seconds histogram", "corral_ready 1"):
        check(name in r.body, "metric %s missing" % name)
    p = subprocess.run(["promtool", "check", "metrics"], input=r.body.encode(),
                       capture_output=True, timeout=30)
    check(p.returncode == 0, "promtool: %s %s" % (p.stdout, p.stderr))


def t_static_default():
    r = curl(url("/"))
    check(r.status == 200 and r.h("content-type").startswith("text/html")
          and "<title>Corral</title>" in r.body and "js/app.js" in r.body, "index: %r" % r)
    r = curl(url("/style.css"))
    check(r.status == 200 and r.h("content-type").startswith("text/css"), "css: %r" % r)
    r = curl(url("/js/app.js"))
    check(r.status == 200 and "javascript" in r.h("content-type"), "module: %r" % r)
    check(curl(url("/nothing-here.html")).status == 404, "404")


def t_ready_down():
    E.stack.svc.kill("session")
    t0 = time.time()
    r = curl(url("/v1/health/ready"), timeout=10)
    took = time.time() - t0
    check(r.status == 503 and r.json()["status"] == "not_ready" and r.json()["reason"],
          "not ready: %r" % r)
    check(took < 2.5, "readiness took %.1f s" % took)
    E.stack.svc.start("session", ["--permission-timeout", "20s"])
    wait_ready()


def t_long_wait_and_keepalive():
    """A prompt that waits longer than lws's timeouts, and SSE keep-alive
    comments on a quiet stream, at the same time."""
    sid, quiet = new_session(), new_session()
    q = stream_start(url("/v1/sessions/%s/events" % quiet), key=E.key, seconds=17,
                     headers=["Accept: text/event-stream"])
    t0 = time.time()
    r = curl(url("/v1/sessions/%s/prompt" % sid), key=E.key, data={"prompt": "long wait"},
             timeout=90)
    check(r.status == 200 and r.json()["stopReason"] == "end_turn", "long prompt: %r" % r)
    check(time.time() - t0 > 20, "the long turn was not long")
    recs = sse_records(stream_end(q))
    check([int(x["id"]) for x in recs if "id" in x] == [1, 2], "quiet stream: %r" % recs)
    check(any(x.get("comment") == "keep-alive" for x in recs), "keep-alive: %r" % recs)


def t_openapi():
    """docs/openapi.yaml parses and describes every route served here."""
    import yaml  # python3-yaml (scripts/setup.sh)
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "docs",
                        "openapi.yaml")
    with open(path) as f:
        doc = yaml.safe_load(f)
    check(doc["openapi"].startswith("3.0"), "openapi version")
    routes = {"/v1/health/live": ["get"], "/v1/health/ready": ["get"], "/metrics": ["get"],
              "/v1/login": ["post"], "/v1/logout": ["post"], "/v1/sessions": ["get", "post"],
              "/v1/sessions/{id}": ["get", "delete"], "/v1/sessions/{id}/prompt": ["post"],
              "/v1/sessions/{id}/cancel": ["post"], "/v1/sessions/{id}/events": ["get"],
              "/v1/sessions/{id}/permission": ["post"]}
    for p, methods in routes.items():
        for m in methods:
            op = doc["paths"].get(p, {}).get(m)
            check(op and op.get("responses"), "openapi lacks %s %s" % (m.upper(), p))
    schemes = doc["components"]["securitySchemes"]
    check(schemes["bearer"]["scheme"] == "bearer" and schemes["apiKeyHeader"]["name"] ==
          "X-API-Key" and schemes["apiKeyQuery"]["name"] == "token" and
          schemes["apiKeyCookie"]["name"] == "corral_key", "security schemes")

    def refs(x):
        if isinstance(x, dict):
            for k, v in x.items():
                if k == "$ref":
                    yield v
                else:
                    yield from refs(v)
        elif isinstance(x, list):
            for v in x:
                yield from refs(v)
    for r in refs(doc):
        node = doc
        for part in r[2:].split("/"):
            check(part in node, "dangling $ref %s" % r)
            node = node[part]


def wait_events(sid, after, until, deadline=20):
    """Events of sid after `after` until one satisfies until(e)."""
    end = time.time() + deadline
    while time.time() < end:
        evs = ndjson(curl(url("/v1/sessions/%s/events?after=%d" % (sid, after)),
                          key=E.key).body)
        if any(until(e) for e in evs):
            return evs
        time.sleep(0.2)
    raise AssertionError("no such event after %d in %d s" % (after, deadline))


def t_permission():
    """A REST client answers a turn's permission request: it reads the
    request (requestId, options) from the event stream and POSTs
    .../permission; the first answer wins and the turn goes on."""
    sid = new_session(mode="ask")
    target = os.path.join(E.stack.workspace, "rest-perm.txt")
    r = curl(url("/v1/sessions/%s/prompt?wait=false" % sid), key=E.key,
             data={"prompt": "please write the file"})
    check(r.status == 202, "prompt: %r" % r)
    turn = r.json()["turnId"]
    evs = wait_events(sid, 0, lambda e: e["kind"] == "permission_request")
    req = [e for e in evs if e["kind"] == "permission_request"][0]
    rid = req["requestId"]
    allow = [o["optionId"] for o in req["options"] if o["kind"] == "allow_once"]
    check(rid and allow and req["turnId"] == turn, "permission_request: %r" % req)
    check(not os.path.exists(target), "nothing written before the answer")
    answer = url("/v1/sessions/%s/permission" % sid)
    # refused: malformed, an option the request does not offer, another tenant
    for body in ({}, {"requestId": rid}, {"requestId": rid, "outcome": "allow"},
                 {"requestId": rid, "outcome": {"outcome": "selected"}},
                 {"requestId": 7, "outcome": {"outcome": "cancelled"}}):
        error_of(curl(answer, key=E.key, data=body), 400, "invalid")
    error_of(curl(answer, key=E.key, data={"requestId": rid, "outcome": {
        "outcome": "selected", "optionId": "no-such-option"}}), 400, "invalid")
    error_of(curl(answer, key=E.key_b, data={"requestId": rid, "outcome": {
        "outcome": "selected", "optionId": allow[0]}}), 404, "not_found")
    error_of(curl(answer, key=E.key, data={"requestId": "not-" + rid, "outcome": {
        "outcome": "cancelled"}}), 409, "conflict")
    # the answer, then a second one (too late)
    ok = {"requestId": rid, "outcome": {"outcome": "selected", "optionId": allow[0]}}
    r = curl(answer, key=E.key, data=ok)
    check(r.status == 200 and r.json() == {}, "answer: %r" % r)
    error_of(curl(answer, key=E.key, data=ok), 409, "conflict")
    evs = wait_events(sid, req["seq"], lambda e: e["kind"] == "turn_ended")
    res = [e for e in evs if e["kind"] == "permission_resolved"]
    check(len(res) == 1 and res[0]["requestId"] == rid and res[0]["outcome"] == "selected"
          and res[0]["optionId"] == allow[0], "permission_resolved: %r" % res)
    ended = [e for e in evs if e["kind"] == "turn_ended"][0]
    check(ended["stopReason"] == "end_turn", "turn_ended: %r" % ended)
    with open(target) as f:
        check(f.read() == "hi\n", "the approved write happened")
    # a cancelled answer refuses the tool; the turn still ends
    os.unlink(target)
    r = curl(url("/v1/sessions/%s/prompt?wait=false" % sid), key=E.key,
             data={"prompt": "please write the file again"})
    check(r.status == 202, "second prompt: %r" % r)
    after = r.json()["seq"]
    evs = wait_events(sid, after, lambda e: e["kind"] == "permission_request")
    rid2 = [e for e in evs if e["kind"] == "permission_request"][0]["requestId"]
    r = curl(answer, key=E.key, data={"requestId": rid2, "outcome": {"outcome": "cancelled"}})
    check(r.status == 200, "cancelled answer: %r" % r)
    evs = wait_events(sid, after, lambda e: e["kind"] == "turn_ended")
    res = [e for e in evs if e["kind"] == "permission_resolved"]
    check(res and res[0]["outcome"] == "cancelled", "cancelled: %r" % res)
    check(not os.path.exists(target), "a refused write did not happen")


# ---- tests: phase B, a gateway with a static folder and tight limits -------------------

def make_static():
    d = tempfile.mkdtemp(prefix="corral-static-")
    out = tempfile.mkdtemp(prefix="corral-outside-")
    E.cleanup += [d, out]
    with open(os.path.join(out, "secret.txt"), "w") as f:
        f.write("TOPSECRET\n")
    files = {"index.html": "<!doctype html><title>t</title>", "app.js": "console.log(1)\n",
             "style.css": "body{}\n", "data.json": "{}\n", "logo.svg": "<svg/>\n",
             "mod.wasm": "\0asm", "blob.bin": "x", "sub/inner.txt": "inner\n",
             "empty/.keep": ""}
    for name, text in files.items():
        os.makedirs(os.path.dirname(os.path.join(d, name)), exist_ok=True)
        with open(os.path.join(d, name), "w") as f:
            f.write(text)
    os.symlink(os.path.join(out, "secret.txt"), os.path.join(d, "leak.txt"))
    os.symlink(out, os.path.join(d, "outdir"))
    os.symlink("sub/inner.txt", os.path.join(d, "ok.txt"))
    return d


def t_static_files():
    types = {"/": "text/html", "/index.html": "text/html", "/app.js": "text/javascript",
             "/style.css": "text/css", "/data.json": "application/json",
             "/logo.svg": "image/svg+xml", "/mod.wasm": "application/wasm",
             "/blob.bin": "application/octet-stream", "/sub/inner.txt": "text/plain",
             "/ok.txt": "text/plain"}
    for path, ctype in types.items():
        r = curl(url(path))
        check(r.status == 200 and r.h("content-type", "").startswith(ctype),
              "%s: %r" % (path, r))
        cc = r.h("cache-control", "")
        check("max-age=60" in cc and "must-revalidate" in cc and r.h("etag"),
              "%s cache headers: %r" % (path, r))
    etag = curl(url("/app.js")).h("etag")
    r = curl(url("/app.js"), headers=["If-None-Match: " + etag])
    check(r.status == 304 and r.body == "", "304: %r" % r)
    escapes = ["/../../../../etc/passwd", "/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
               "/..%2f..%2f..%2fetc%2fpasswd", "/sub/%2e%2e/%2e%2e/leak.txt",
               "/sub/..%2f..%2f" + "x", "/leak.txt", "/outdir/secret.txt",
               "/outdir/../outdir/secret.txt", "/empty/", "/sub/nothing.txt"]
    for path in escapes:
        r = curl(url(path))
        check(r.status in (400, 403, 404), "%s: %r" % (path, r))
        check("TOPSECRET" not in r.body and "root:" not in r.body, "%s leaked" % path)


def t_limit():
    # exactly the limit is read (and refused for what it says); one more is 413
    pad = 4096 - len(json.dumps({"key": "k", "pad": ""}))
    body = json.dumps({"key": "k", "pad": "x" * pad})
    check(len(body) == 4096, "body size")
    error_of(curl(url("/v1/login"), data=body), 401, "unauthorized")
    body = json.dumps({"key": "k", "pad": "x" * (pad + 1)})
    e = error_of(curl(url("/v1/login"), data=body), 413, "too_large")
    check(e["limit"] == 4096, "limit: %r" % e)


def t_metrics_auth():
    error_of(curl(url("/metrics")), 401, "unauthorized")
    error_of(curl(url("/metrics"), key=E.key), 403, "forbidden")
    r = curl(url("/metrics"), key=E.key_admin)
    check(r.status == 200 and "corral_gateway_requests_total" in r.body, "admin: %r" % r)
    check(curl(url("/v1/health/live")).status == 200, "health stays open")


def t_ip_limit():
    # --max-connections-per-ip 2: open requests count like WebSockets
    sid = new_session()
    ps = [stream_start(url("/v1/sessions/%s/events?follow=1" % sid), key=E.key, seconds=3)
          for _ in range(2)]
    time.sleep(1)
    r = curl(url("/v1/health/live"))
    e = error_of(r, 503, "capacity")
    check(r.h("connection") == "close", "refused: %r %r" % (r, e))
    for p in ps:
        check(ndjson(stream_end(p))[0]["seq"] == 1, "streams served")
    check(curl(url("/v1/health/live")).status == 200, "served again")


def t_rate_limit():
    codes, limited = [], None
    for _ in range(8):
        r = curl(url("/v1/sessions"), key=E.key_b)
        codes.append(r.status)
        if r.status == 429:
            limited = r
    check(limited is not None, "no 429 in %r" % codes)
    e = error_of(limited, 429, "rate_limited")
    check(int(limited.h("retry-after")) >= 1 and e["retryAfterMs"] >= 0, "429: %r" % limited)


# ---- tests: phase C, a gateway with a tight probe limit ---------------------------------

def random_key():
    return "crl_" + base64.urlsafe_b64encode(os.urandom(32)).decode().rstrip("=")


def ws_handshake(key):
    """A WebSocket handshake on /acp with key: (status line, close code or None)."""
    s = raw_open(("GET /acp HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                  "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                  "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                  "Authorization: Bearer %s\r\n\r\n" % key).encode())
    out, _ = raw_read(s, 1.0)
    s.close()
    head, _, rest = out.partition(b"\r\n\r\n")
    code = None
    if len(rest) >= 4 and rest[0] == 0x88:
        code = rest[2] << 8 | rest[3]
    return head.split(b"\r\n")[0].decode(), code


def refused(call, is_refused, what):
    """call() until is_refused(its result), at most 5 times: at 1 token per
    second one may come back between two quick calls, never two."""
    for _ in range(5):
        r = call()
        if is_refused(r):
            return r
    raise AssertionError("%s was never refused: %r" % (what, r))


def t_probe_limit():
    """--probe-rate 1 --probe-burst 4: keys the gateway has not cached and
    readiness checks take a token of the client's address; past them, 429
    with Retry-After (a WebSocket handshake: close 1013), while a cached
    key is not slowed."""
    time.sleep(4.5)  # wait_ready's checks spent the bucket: full again
    check(curl(url("/v1/sessions"), key=E.key).status == 200, "a valid key (1 token)")
    for _ in range(3):
        error_of(curl(url("/v1/sessions"), key=random_key()), 401, "unauthorized")
    r = refused(lambda: curl(url("/v1/sessions"), key=random_key()),
                lambda r: r.status == 429, "an unknown key")
    e = error_of(r, 429, "rate_limited")
    check(e["retryAfterMs"] > 0 and int(r.h("retry-after")) >= 1, "retry hint: %r" % r)
    check(curl(url("/v1/sessions"), key=E.key).status == 200, "a cached key is not counted")
    error_of(refused(lambda: curl(url("/v1/health/ready")), lambda r: r.status == 429,
                     "readiness"), 429, "rate_limited")
    error_of(refused(lambda: curl(url("/v1/login"), data={"key": random_key()}),
                     lambda r: r.status == 429, "login"), 429, "rate_limited")
    status, code = refused(lambda: ws_handshake(random_key()), lambda r: r[1] == 1013,
                           "a WebSocket handshake")
    check("101" in status, "WebSocket with a new key: %s, close %s" % (status, code))
    check(curl(url("/v1/health/live")).status == 200, "liveness is not a probe")
    time.sleep(1.1)  # one token back
    error_of(curl(url("/v1/sessions"), key=random_key()), 401, "unauthorized")
    m = curl(url("/metrics")).body
    n = [float(x.split()[-1]) for x in m.splitlines()
         if x.startswith("corral_gateway_probes_limited_total")]
    check(n and n[0] >= 4, "probes_limited counted: %r" % n)


def main():
    build = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "build")
    E.cleanup = []
    E.stack = Stack(build)
    phase_a = [t_body_deadline_start, t_openapi, t_health, t_head, t_pipelined, t_auth, t_static_default, t_sessions, t_prompt_and_events, t_sse,
               t_follow_live, t_nowait_busy_cancel, t_permission, t_bodies, t_routes, t_login_cookie,
               t_keepalive, t_metrics, t_long_wait_and_keepalive, t_ready_down,
               t_body_deadline_check]
    phase_b = [t_static_files, t_limit, t_metrics_auth, t_ip_limit, t_rate_limit]
    phase_c = [t_probe_limit]
    failed = []
    try:
        E.stack.start(script=SCRIPT, session_args=["--permission-timeout", "20s"])
        E.key, E.key_b = E.stack.key("tenant-a"), E.stack.key("tenant-b")
        E.key_admin = E.stack.key("ops", admin=True)
        wait_ready()
        for phase, extra in ((phase_a, None),
                             (phase_b, ["--static-dir", make_static(), "--max-message", "4096",
                                        "--metrics-auth", "--rate", "1", "--burst", "3",
                                       "--max-connections-per-ip", "2"]),
                             (phase_c, ["--probe-rate", "1", "--probe-burst", "4"])):
            if extra:
                E.stack.restart("gateway", extra)
                wait_ready()
            for t in phase:
                t0 = time.time()
                try:
                    t()
                    PASSED.append(t.__name__)
                    print("PASS %s (%.1f s)" % (t.__name__, time.time() - t0), flush=True)
                except Exception as e:  # noqa: BLE001 - report every failure
                    failed.append(t.__name__)
                    print("FAIL %s: %s" % (t.__name__, e), flush=True)
    finally:
        if failed:
            for name in ("gateway", "session"):
                print("---- %s log (tail) ----" % name)
                print(E.stack.log(name)[-4000:])
        E.stack.stop()
        for d in E.cleanup:
            shutil.rmtree(d, ignore_errors=True)
    print("%d passed, %d failed%s" % (len(PASSED), len(failed),
                                      (": " + ", ".join(failed)) if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
