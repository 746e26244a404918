#!/usr/bin/python3
"""Integration tests of corral-fake-model: the exact OpenAI and Anthropic
stream framing, scripted failures, conversation checks, authentication, the
HTTP layer and script validation.  Debian python3, standard library only.

    test_fake_model.py <path to corral-fake-model>
"""
import http.client
import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest

BIN = None

TEXT = "Hello, wörld — ünïcode ✓ done"
THINKING = "Let me think about this carefully."

SCRIPT = {
    "rules": [
        {"name": "combo", "match": "combo", "responses": [
            [
                {"thinking": THINKING, "chunks": 3},
                {"text": TEXT, "chunks": 5},
                {"tool_call": {"name": "read_file", "arguments": {"path": "README.md"}},
                 "fragments": 4},
                {"tool_call": {"id": "call_fixed", "name": "run_command",
                               "arguments": {"command": "ls -la", "timeout_ms": 5000}},
                 "fragments": 3},
                {"usage": {"input": 11, "output": 22, "cache": 3}},
            ],
            [{"text": "all done", "chunks": 2}],
        ]},
        {"name": "ratelimit", "match": "ratelimit", "responses": [
            [{"http_error": 429, "retry_after": 2, "times": 2}, {"text": "finally"}]]},
        {"name": "servererror", "match": "servererror", "responses": [
            [{"http_error": 500}, {"text": "recovered"}]]},
        {"name": "overload", "match": "overload", "responses": [
            [{"text": "partial "}, {"error_event": "overloaded_error"}]]},
        {"name": "flaky", "match": "flaky", "responses": [[
            {"http_error": 529, "times": 1},
            {"text": "partial ", "chunks": 2},
            {"error_event": "overloaded_error", "times": 1},
            {"text": "and the rest.", "chunks": 3},
            {"cut": True, "times": 1},
            {"stall": True, "times": 1}]]},
        {"name": "malformed", "match": "malformed", "responses": [
            [{"text": "ok"}, {"raw": "data: {not json\n\n"}]]},
        {"name": "cut", "match": "cutme", "responses": [
            [{"text": "before the cut", "chunks": 2}, {"cut": True}]]},
        {"name": "stall", "match": "stallme", "responses": [
            [{"text": "before the stall"}, {"stall": True}]]},
        {"name": "pause", "match": "pauseme", "chunk_delay_ms": 20, "responses": [
            [{"text": "a"}, {"pause_ms": 300}, {"text": "b"}]]},
        {"name": "long", "match": "toolong", "responses": [
            [{"text": "cut short"}, {"stop": "max_tokens"}]]},
        {"name": "default", "match": "*", "responses": [[{"text": "default answer"}]]},
    ]
}


# ---------------------------------------------------------------------------
#  Process and HTTP helpers

class Server:
    """One corral-fake-model process; stderr goes to a file (it logs a line
    per request and must never block on a full pipe)."""

    def __init__(self, args, script=SCRIPT):
        self.dir = tempfile.TemporaryDirectory()
        argv = [BIN] + args
        if script is not None:
            path = os.path.join(self.dir.name, "script.json")
            with open(path, "w") as f:
                json.dump(script, f)
            argv += ["--fake-script", path]
        self.err = open(os.path.join(self.dir.name, "stderr"), "w+")
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=self.err,
                                     text=True)
        ready, _, _ = select.select([self.proc.stdout], [], [], 10)
        line = self.proc.stdout.readline() if ready else ""
        m = re.fullmatch(r"listening on http://127\.0\.0\.1:(\d+)\n", line)
        if not m:
            self.stop()
            raise AssertionError("no 'listening on' line, got %r; stderr: %s"
                                 % (line, self.stderr()))
        self.port = int(m.group(1))

    def stderr(self):
        self.err.seek(0)
        return self.err.read()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()
        self.err.close()
        self.dir.cleanup()
        return self.proc.returncode

    def request(self, method, path, body=None, headers=None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        data = json.dumps(body).encode() if isinstance(body, (dict, list)) else body
        conn.request(method, path, body=data, headers=headers or {})
        resp = conn.getresponse()
        payload = resp.read()
        result = (resp.status, {k.lower(): v for k, v in resp.getheaders()}, payload)
        conn.close()
        return result

    def openai(self, messages, stream=True, usage=True, headers=None, **extra):
        body = {"model": "gpt-test", "messages": messages, **extra}
        if stream:
            body["stream"] = True
            if usage:
                body["stream_options"] = {"include_usage": True}
        return self.request("POST", "/v1/chat/completions", body,
                            {"Content-Type": "application/json", **(headers or {})})

    def anthropic(self, messages, stream=True, headers=None, **extra):
        body = {"model": "claude-test", "max_tokens": 1024, "messages": messages,
                **extra}
        if stream:
            body["stream"] = True
        hdrs = {"Content-Type": "application/json", "anthropic-version": "2023-06-01"}
        hdrs.update(headers or {})
        hdrs = {k: v for k, v in hdrs.items() if v is not None}
        return self.request("POST", "/v1/messages", body, hdrs)

    def raw(self, data, timeout=5):
        s = socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
        s.sendall(data)
        return s


def sse(body):
    """Split an SSE body into [(event name or None, data text)]; asserts the
    framing: events end with a blank line, lines are 'event:' / 'data:'."""
    text = body.decode("utf-8")
    assert text.endswith("\n\n"), "stream does not end with a blank line: %r" % text[-40:]
    events = []
    for block in text[:-2].split("\n\n"):
        name, data = None, []
        for line in block.split("\n"):
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data.append(line[6:])
            else:
                raise AssertionError("unexpected SSE line %r" % line)
        events.append((name, "\n".join(data)))
    return events


def openai_post(text):
    return [{"role": "user", "content": text}]


def read_http_head(sock):
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            break
        buf += chunk
    return buf


def recv_until_closed(sock, limit=5.0):
    """All bytes until the peer closes; raises on timeout."""
    sock.settimeout(limit)
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk


# ---------------------------------------------------------------------------

class FakeModelTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.srv = Server([])

    @classmethod
    def tearDownClass(cls):
        rc = cls.srv.stop()
        assert rc == 0, "SIGTERM should stop the server with 0, got %r" % rc

    def setUp(self):
        status, _, _ = self.srv.request("POST", "/_fake/reset", b"")
        self.assertEqual(status, 200)

    # -- OpenAI ------------------------------------------------------------

    def test_openai_stream_framing(self):
        status, headers, body = self.srv.openai(openai_post("please combo"))
        self.assertEqual(status, 200)
        self.assertTrue(headers["content-type"].startswith("text/event-stream"))
        self.assertEqual(headers["transfer-encoding"], "chunked")
        self.assertEqual(headers["x-request-id"], "req_fake_000001")
        events = sse(body)
        self.assertTrue(all(name is None for name, _ in events))
        self.assertEqual(events[-1][1], "[DONE]")
        chunks = [json.loads(data) for _, data in events[:-1]]
        reasoning, content, calls, finish = "", [], {}, None
        for i, chunk in enumerate(chunks):
            self.assertEqual(chunk["id"], "chatcmpl-fake000001")
            self.assertEqual(chunk["object"], "chat.completion.chunk")
            self.assertEqual(chunk["model"], "gpt-test")
            self.assertIsInstance(chunk["created"], int)
            self.assertIn("usage", chunk)
            if i == len(chunks) - 1:  # the usage chunk
                self.assertEqual(chunk["choices"], [])
                self.assertEqual(chunk["usage"]["prompt_tokens"], 11)
                self.assertEqual(chunk["usage"]["completion_tokens"], 22)
                self.assertEqual(chunk["usage"]["total_tokens"], 33)
                self.assertEqual(chunk["usage"]["prompt_tokens_details"]["cached_tokens"],
                                 3)
                continue
            self.assertIsNone(chunk["usage"])
            self.assertEqual(len(chunk["choices"]), 1)
            choice = chunk["choices"][0]
            self.assertEqual(choice["index"], 0)
            delta = choice["delta"]
            if i == 0:
                self.assertEqual(delta, {"role": "assistant", "content": "",
                                         "refusal": None})
            else:
                self.assertNotIn("role", delta)
            if choice["finish_reason"] is not None:
                self.assertIsNone(finish, "one finish_reason only")
                self.assertEqual(delta, {})
                finish = choice["finish_reason"]
            reasoning += delta.get("reasoning_content") or ""
            if delta.get("content"):
                content.append(delta["content"])
            for tc in delta.get("tool_calls", []):
                slot = calls.setdefault(tc["index"], {"id": None, "name": None, "args": ""})
                if "id" in tc:
                    self.assertIsNone(slot["id"], "id comes in the first fragment only")
                    self.assertEqual(tc["type"], "function")
                    slot["id"], slot["name"] = tc["id"], tc["function"]["name"]
                else:
                    self.assertNotIn("name", tc["function"])
                slot["args"] += tc["function"]["arguments"]
        self.assertEqual(finish, "tool_calls")
        self.assertEqual(reasoning, THINKING)
        self.assertEqual("".join(content), TEXT)
        self.assertEqual(len(content), 5, "text split into 5 chunks")
        self.assertEqual(sorted(calls), [0, 1])
        self.assertEqual(calls[0]["id"], "call_fake_000001_0")
        self.assertEqual(calls[0]["name"], "read_file")
        self.assertEqual(json.loads(calls[0]["args"]), {"path": "README.md"})
        self.assertEqual(calls[1]["id"], "call_fixed")
        self.assertEqual(json.loads(calls[1]["args"]),
                         {"command": "ls -la", "timeout_ms": 5000})

    def test_openai_stream_without_usage_option(self):
        status, _, body = self.srv.openai(openai_post("hi"), usage=False)
        self.assertEqual(status, 200)
        events = sse(body)
        chunks = [json.loads(d) for _, d in events[:-1]]
        self.assertTrue(all("usage" not in c for c in chunks))
        self.assertEqual(chunks[-1]["choices"][0]["finish_reason"], "stop")
        self.assertEqual("".join(c["choices"][0]["delta"].get("content", "")
                                 for c in chunks), "default answer")

    def test_openai_second_call_after_tool_results(self):
        messages = [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "combo please"},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "a", "type": "function",
                 "function": {"name": "read_file", "arguments": "{}"}},
                {"id": "b", "type": "function",
                 "function": {"name": "run_command", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "b", "content": "out"},
            {"role": "tool", "tool_call_id": "a", "content": "file"},
        ]
        status, _, body = self.srv.openai(messages)
        self.assertEqual(status, 200, body)
        chunks = [json.loads(d) for _, d in sse(body)[:-1]]
        text = "".join(c["choices"][0]["delta"].get("content") or ""
                       for c in chunks if c["choices"])
        self.assertEqual(text, "all done")
        self.assertEqual(chunks[-2]["choices"][0]["finish_reason"], "stop")

    def test_openai_non_stream(self):
        status, headers, body = self.srv.openai(openai_post("combo"), stream=False)
        self.assertEqual(status, 200)
        self.assertEqual(headers["content-type"], "application/json")
        doc = json.loads(body)
        self.assertEqual(doc["object"], "chat.completion")
        msg = doc["choices"][0]["message"]
        self.assertEqual(msg["role"], "assistant")
        self.assertEqual(msg["content"], TEXT)
        self.assertEqual(msg["reasoning_content"], THINKING)
        self.assertEqual([c["function"]["name"] for c in msg["tool_calls"]],
                         ["read_file", "run_command"])
        self.assertEqual(json.loads(msg["tool_calls"][0]["function"]["arguments"]),
                         {"path": "README.md"})
        self.assertEqual(doc["choices"][0]["finish_reason"], "tool_calls")
        self.assertEqual(doc["usage"]["prompt_tokens"], 11)

    def test_openai_stop_reason_mapping(self):
        _, _, body = self.srv.openai(openai_post("toolong"))
        chunks = [json.loads(d) for _, d in sse(body)[:-1]]
        self.assertEqual(chunks[-2]["choices"][0]["finish_reason"], "length")

    # -- Anthropic ---------------------------------------------------------

    def test_anthropic_stream_framing(self):
        status, headers, body = self.srv.anthropic(
            [{"role": "user", "content": [{"type": "text", "text": "a combo"}]}],
            system="be brief")
        self.assertEqual(status, 200, body)
        self.assertTrue(headers["content-type"].startswith("text/event-stream"))
        self.assertEqual(headers["request-id"], "req_fake_000001")
        events = sse(body)
        docs = []
        for name, data in events:
            doc = json.loads(data)
            self.assertEqual(doc["type"], name, "event name repeats the data type")
            docs.append(doc)
        names = [d["type"] for d in docs]
        self.assertEqual(names[0], "message_start")
        self.assertEqual(names[-2:], ["message_delta", "message_stop"])
        self.assertEqual(names.count("ping"), 1)
        msg = docs[0]["message"]
        self.assertEqual(msg["id"], "msg_fake_000001")
        self.assertEqual((msg["type"], msg["role"], msg["model"]),
                         ("message", "assistant", "claude-test"))
        self.assertEqual(msg["content"], [])
        self.assertIsNone(msg["stop_reason"])
        self.assertEqual(msg["usage"]["input_tokens"], 8, "11 in all, 3 of them cached")
        self.assertEqual(msg["usage"]["cache_read_input_tokens"], 3)
        self.assertEqual(msg["usage"]["output_tokens"], 1)
        blocks, open_ = {}, None
        for d in docs[1:-2]:
            if d["type"] == "ping":
                continue
            if d["type"] == "content_block_start":
                self.assertIsNone(open_, "one block open at a time")
                self.assertEqual(d["index"], len(blocks), "indices count up from 0")
                open_ = d["index"]
                blocks[open_] = {"start": d["content_block"], "deltas": []}
            elif d["type"] == "content_block_delta":
                self.assertEqual(d["index"], open_)
                blocks[open_]["deltas"].append(d["delta"])
            elif d["type"] == "content_block_stop":
                self.assertEqual(d["index"], open_)
                open_ = None
            else:
                self.fail("unexpected event %r" % d)
        self.assertIsNone(open_)
        self.assertEqual([b["start"]["type"] for b in blocks.values()],
                         ["thinking", "text", "tool_use", "tool_use"])
        think = blocks[0]
        self.assertEqual(think["start"], {"type": "thinking", "thinking": "",
                                          "signature": ""})
        self.assertEqual([x["type"] for x in think["deltas"]],
                         ["thinking_delta"] * 3 + ["signature_delta"])
        self.assertEqual("".join(x.get("thinking", "") for x in think["deltas"]), THINKING)
        self.assertTrue(think["deltas"][-1]["signature"])
        text = blocks[1]
        self.assertEqual(text["start"], {"type": "text", "text": ""})
        self.assertEqual(len(text["deltas"]), 5)
        self.assertTrue(all(x["type"] == "text_delta" for x in text["deltas"]))
        self.assertEqual("".join(x["text"] for x in text["deltas"]), TEXT)
        for index, name, want_id, args in [
                (2, "read_file", "toolu_fake_000001_0", {"path": "README.md"}),
                (3, "run_command", "call_fixed", {"command": "ls -la", "timeout_ms": 5000})]:
            b = blocks[index]
            self.assertEqual(b["start"], {"type": "tool_use", "id": want_id, "name": name,
                                          "input": {}})
            self.assertTrue(all(x["type"] == "input_json_delta" for x in b["deltas"]))
            self.assertEqual(b["deltas"][0]["partial_json"], "")
            self.assertGreater(len(b["deltas"]), 2, "arguments split across deltas")
            self.assertEqual(json.loads("".join(x["partial_json"] for x in b["deltas"])),
                             args)
        delta = docs[-2]
        self.assertEqual(delta["delta"], {"stop_reason": "tool_use", "stop_sequence": None})
        self.assertEqual(delta["usage"]["output_tokens"], 22)

    def test_anthropic_second_call_after_tool_results(self):
        messages = [
            {"role": "user", "content": "combo"},
            {"role": "assistant", "content": [
                {"type": "text", "text": "sure"},
                {"type": "tool_use", "id": "t1", "name": "read_file", "input": {}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "t1", "content": "file"}]},
        ]
        status, _, body = self.srv.anthropic(messages)
        self.assertEqual(status, 200, body)
        docs = [json.loads(d) for _, d in sse(body)]
        text = "".join(d["delta"].get("text", "") for d in docs
                       if d["type"] == "content_block_delta")
        self.assertEqual(text, "all done")
        self.assertEqual(docs[-2]["delta"]["stop_reason"], "end_turn")

    def test_anthropic_non_stream(self):
        status, _, body = self.srv.anthropic([{"role": "user", "content": "combo"}],
                                             stream=False)
        self.assertEqual(status, 200)
        doc = json.loads(body)
        self.assertEqual(doc["type"], "message")
        self.assertEqual([b["type"] for b in doc["content"]],
                         ["thinking", "text", "tool_use", "tool_use"])
        self.assertEqual(doc["content"][1]["text"], TEXT)
        self.assertEqual(doc["content"][2]["input"], {"path": "README.md"})
        self.assertEqual(doc["stop_reason"], "tool_use")
        self.assertEqual(doc["usage"]["output_tokens"], 22)

    def test_anthropic_stop_reason(self):
        _, _, body = self.srv.anthropic([{"role": "user", "content": "toolong"}])
        docs = [json.loads(d) for _, d in sse(body)]
        self.assertEqual(docs[-2]["delta"]["stop_reason"], "max_tokens")

    # -- Scripted failures -------------------------------------------------

    def test_http_error_times_then_success(self):
        for provider in ("openai", "anthropic"):
            self.srv.request("POST", "/_fake/reset", b"")
            call = (lambda: self.srv.openai(openai_post("ratelimit"))) \
                if provider == "openai" else \
                (lambda: self.srv.anthropic([{"role": "user", "content": "ratelimit"}]))
            for attempt in range(2):
                status, headers, body = call()
                self.assertEqual(status, 429, provider)
                self.assertEqual(headers["retry-after"], "2")
                doc = json.loads(body)
                if provider == "openai":
                    self.assertEqual(doc["error"]["code"], "rate_limit_exceeded")
                    self.assertIn("message", doc["error"])
                else:
                    self.assertEqual(doc["type"], "error")
                    self.assertEqual(doc["error"]["type"], "rate_limit_error")
            status, _, body = call()
            self.assertEqual(status, 200, provider)
            self.assertIn("finally", body.decode())
            status, _, _ = call()
            self.assertEqual(status, 200, "the counter stays spent until a reset")
        self.srv.request("POST", "/_fake/reset", b"")
        status, _, _ = self.srv.openai(openai_post("ratelimit"))
        self.assertEqual(status, 429, "reset re-arms the counter")

    def test_http_500_once(self):
        status, headers, body = self.srv.anthropic(
            [{"role": "user", "content": "servererror"}])
        self.assertEqual(status, 500)
        self.assertNotIn("retry-after", headers)
        self.assertEqual(json.loads(body)["error"]["type"], "api_error")
        status, _, body = self.srv.anthropic([{"role": "user", "content": "servererror"}])
        self.assertEqual(status, 200)
        self.assertIn("recovered", body.decode())

    def test_error_event_mid_stream(self):
        status, _, body = self.srv.openai(openai_post("overload"))
        self.assertEqual(status, 200)
        events = sse(body)
        self.assertNotEqual(events[-1][1], "[DONE]")
        last = json.loads(events[-1][1])
        self.assertEqual(last["error"]["type"], "overloaded_error")
        self.assertIn("partial", events[1][1])

        status, _, body = self.srv.anthropic([{"role": "user", "content": "overload"}])
        self.assertEqual(status, 200)
        events = sse(body)
        self.assertEqual(events[-1][0], "error")
        doc = json.loads(events[-1][1])
        self.assertEqual(doc, {"type": "error", "error": {"type": "overloaded_error",
                                                          "message": "Overloaded"}})
        self.assertNotIn("message_stop", [name for name, _ in events])

    def test_failures_with_times_then_success(self):
        def call():
            return self.srv.anthropic([{"role": "user", "content": "flaky"}])
        status, headers, body = call()
        self.assertEqual(status, 529)
        self.assertEqual(json.loads(body)["error"]["type"], "overloaded_error")
        status, _, body = call()
        events = sse(body)
        self.assertEqual(events[-1][0], "error")
        # the third request passes the spent error_event and meets the cut
        conn = http.client.HTTPConnection("127.0.0.1", self.srv.port, timeout=5)
        conn.request("POST", "/v1/messages", body=json.dumps(
            {"model": "m", "max_tokens": 5, "stream": True,
             "messages": [{"role": "user", "content": "flaky"}]}),
            headers={"anthropic-version": "2023-06-01"})
        with self.assertRaises(http.client.IncompleteRead):
            conn.getresponse().read()
        conn.close()
        # the fourth stalls
        req = json.dumps({"model": "m", "stream": True,
                          "messages": [{"role": "user", "content": "flaky"}]}).encode()
        s = self.srv.raw(b"POST /v1/chat/completions HTTP/1.1\r\n"
                         b"Content-Length: %d\r\n\r\n" % len(req) + req)
        s.settimeout(1.0)
        data = b""
        with self.assertRaises(socket.timeout):
            while True:
                chunk = s.recv(65536)
                self.assertTrue(chunk, "stalled, not closed")
                data += chunk
        s.close()
        self.assertIn(b"\"content\":\"rest.\"", data)
        self.assertNotIn(b"[DONE]", data)
        # the fifth gets it all, in one text block
        status, _, body = call()
        self.assertEqual(status, 200)
        docs = [json.loads(d) for _, d in sse(body)]
        self.assertEqual([d["type"] for d in docs].count("content_block_start"), 1)
        self.assertEqual("".join(d["delta"]["text"] for d in docs
                                 if d["type"] == "content_block_delta"),
                         "partial and the rest.")
        self.assertEqual(docs[-1]["type"], "message_stop")
        # counters are per step and re-armed by a reset
        self.srv.request("POST", "/_fake/reset", b"")
        self.assertEqual(call()[0], 529)

    def test_error_event_without_stream_is_an_http_error(self):
        status, _, body = self.srv.anthropic([{"role": "user", "content": "overload"}],
                                             stream=False)
        self.assertEqual(status, 529)
        self.assertEqual(json.loads(body)["error"]["type"], "overloaded_error")

    def test_raw_malformed(self):
        status, _, body = self.srv.openai(openai_post("malformed"))
        self.assertEqual(status, 200)
        self.assertIn(b"data: {not json\n\n", body)

    def test_cut_closes_mid_stream(self):
        req = json.dumps({"model": "m", "stream": True,
                          "messages": [{"role": "user", "content": "cutme"}]}).encode()
        s = self.srv.raw(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                         b"Content-Length: %d\r\n\r\n" % len(req) + req)
        data = recv_until_closed(s)
        s.close()
        self.assertTrue(data.startswith(b"HTTP/1.1 200 OK\r\n"))
        self.assertIn(b"before", data)
        self.assertFalse(data.endswith(b"0\r\n\r\n"), "no last chunk: the body is cut")
        self.assertNotIn(b"[DONE]", data)
        # and http.client sees an incomplete body
        conn = http.client.HTTPConnection("127.0.0.1", self.srv.port, timeout=5)
        conn.request("POST", "/v1/messages", body=json.dumps(
            {"model": "m", "max_tokens": 5, "stream": True,
             "messages": [{"role": "user", "content": "cutme"}]}),
            headers={"anthropic-version": "2023-06-01"})
        resp = conn.getresponse()
        with self.assertRaises(http.client.IncompleteRead):
            resp.read()
        conn.close()

    def test_stall_keeps_the_connection_open(self):
        req = json.dumps({"model": "m", "max_tokens": 5, "stream": True,
                          "messages": [{"role": "user", "content": "stallme"}]}).encode()
        s = self.srv.raw(b"POST /v1/messages HTTP/1.1\r\nHost: x\r\n"
                         b"anthropic-version: 2023-06-01\r\n"
                         b"Content-Length: %d\r\n\r\n" % len(req) + req)
        data = b""
        deadline = time.time() + 5
        while b"before the stall" not in data and time.time() < deadline:
            data += s.recv(65536)
        self.assertIn(b"before the stall", data)
        s.settimeout(1.0)
        with self.assertRaises(socket.timeout):
            more = s.recv(65536)
            self.fail("expected silence, got %r" % more)
        s.close()
        # the server notices the close and forgets the connection
        for _ in range(50):
            _, _, body = self.srv.request("GET", "/health")
            if json.loads(body)["connections"] == 1:
                break
            time.sleep(0.05)
        self.assertEqual(json.loads(body)["connections"], 1)

    def test_pause_and_chunk_delay(self):
        start = time.monotonic()
        status, _, body = self.srv.openai(openai_post("pauseme"))
        elapsed = time.monotonic() - start
        self.assertEqual(status, 200)
        self.assertGreaterEqual(elapsed, 0.3)
        self.assertLess(elapsed, 3)

    # -- Conversation checks -----------------------------------------------

    def test_openai_dangling_tool_call_is_400(self):
        messages = [
            {"role": "user", "content": "combo"},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_x", "type": "function",
                 "function": {"name": "read_file", "arguments": "{}"}},
                {"id": "call_y", "type": "function",
                 "function": {"name": "read_file", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "call_x", "content": "ok"},
            {"role": "user", "content": "and now?"},
        ]
        status, _, body = self.srv.openai(messages)
        self.assertEqual(status, 400)
        err = json.loads(body)["error"]
        self.assertEqual(err["type"], "invalid_request_error")
        self.assertIn("call_y", err["message"])
        self.assertNotIn("call_x", err["message"])
        # a call left unanswered at the end is refused too
        status, _, _ = self.srv.openai(messages[:2])
        self.assertEqual(status, 400)
        # and a tool message answering nothing
        status, _, body = self.srv.openai(
            [{"role": "user", "content": "x"},
             {"role": "tool", "tool_call_id": "nope", "content": "?"}])
        self.assertEqual(status, 400)
        self.assertIn("nope", json.loads(body)["error"]["message"])
        # the repaired conversation passes
        repaired = messages[:3] + [
            {"role": "tool", "tool_call_id": "call_y", "content": "cancelled"}] + messages[3:]
        status, _, _ = self.srv.openai(repaired)
        self.assertEqual(status, 200)

    def test_anthropic_dangling_tool_use_is_400(self):
        messages = [
            {"role": "user", "content": "combo"},
            {"role": "assistant", "content": [
                {"type": "tool_use", "id": "toolu_a", "name": "read_file", "input": {}},
                {"type": "tool_use", "id": "toolu_b", "name": "read_file", "input": {}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_a", "content": "ok"},
                {"type": "text", "text": "go on"}]},
        ]
        status, _, body = self.srv.anthropic(messages)
        self.assertEqual(status, 400)
        doc = json.loads(body)
        self.assertEqual(doc["type"], "error")
        self.assertEqual(doc["error"]["type"], "invalid_request_error")
        self.assertIn("toolu_b", doc["error"]["message"])
        # a tool_result for an unknown id
        bad = messages[:2] + [{"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_a"},
            {"type": "tool_result", "tool_use_id": "toolu_b"},
            {"type": "tool_result", "tool_use_id": "toolu_zzz"}]}]
        status, _, body = self.srv.anthropic(bad)
        self.assertEqual(status, 400)
        self.assertIn("toolu_zzz", json.loads(body)["error"]["message"])
        # tool_use as the last message
        status, _, _ = self.srv.anthropic(messages[:2])
        self.assertEqual(status, 400)
        repaired = messages[:2] + [{"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_a", "content": "ok"},
            {"type": "tool_result", "tool_use_id": "toolu_b", "content": "cancelled",
             "is_error": True}]}]
        status, _, _ = self.srv.anthropic(repaired)
        self.assertEqual(status, 200)

    def test_anthropic_required_fields(self):
        status, _, body = self.srv.anthropic([{"role": "user", "content": "x"}],
                                             headers={"anthropic-version": None})
        self.assertEqual(status, 400)
        self.assertIn("anthropic-version", json.loads(body)["error"]["message"])
        status, _, body = self.srv.request(
            "POST", "/v1/messages",
            {"model": "m", "messages": [{"role": "user", "content": "x"}]},
            {"anthropic-version": "2023-06-01"})
        self.assertEqual(status, 400)
        self.assertIn("max_tokens", json.loads(body)["error"]["message"])
        status, _, _ = self.srv.request("POST", "/v1/messages", b"{not json",
                                        {"anthropic-version": "2023-06-01"})
        self.assertEqual(status, 400)

    # -- The request log ---------------------------------------------------

    def test_request_log(self):
        self.srv.openai(openai_post("first"), headers={"User-Agent": "tester/1"})
        self.srv.anthropic([{"role": "user", "content": "second combo"}])
        self.srv.openai([{"role": "tool", "tool_call_id": "x", "content": ""}])
        status, _, body = self.srv.request("GET", "/_fake/requests")
        self.assertEqual(status, 200)
        log = json.loads(body)
        self.assertEqual(len(log), 3)
        self.assertEqual([e["seq"] for e in log], [1, 2, 3], "newest last")
        a, b, c = log
        self.assertEqual((a["method"], a["path"], a["provider"]),
                         ("POST", "/v1/chat/completions", "openai"))
        self.assertEqual(a["headers"]["user-agent"], "tester/1")
        self.assertEqual(a["body"]["messages"][0]["content"], "first")
        self.assertEqual((a["status"], a["rule"], a["response"]), (200, "default", 0))
        self.assertEqual(b["path"], "/v1/messages")
        self.assertEqual(b["headers"]["anthropic-version"], "2023-06-01")
        self.assertEqual((b["status"], b["rule"]), (200, "combo"))
        self.assertEqual(c["status"], 400)
        self.srv.request("POST", "/_fake/reset", b"")
        _, _, body = self.srv.request("GET", "/_fake/requests")
        self.assertEqual(json.loads(body), [])

    # -- HTTP layer --------------------------------------------------------

    def test_health_and_unknown_paths(self):
        status, _, body = self.srv.request("GET", "/health")
        self.assertEqual(status, 200)
        self.assertEqual(json.loads(body)["status"], "ok")
        status, _, _ = self.srv.request("GET", "/nope")
        self.assertEqual(status, 404)
        status, headers, _ = self.srv.request("GET", "/v1/messages")
        self.assertEqual(status, 405)
        self.assertEqual(headers["allow"], "POST")

    def test_keep_alive_and_pipelining(self):
        conn = http.client.HTTPConnection("127.0.0.1", self.srv.port, timeout=5)
        for text in ("one", "two", "three"):
            conn.request("POST", "/v1/chat/completions", body=json.dumps(
                {"model": "m", "stream": True, "messages": [{"role": "user",
                                                             "content": text}]}))
            resp = conn.getresponse()
            self.assertEqual(resp.status, 200)
            self.assertIn(b"[DONE]", resp.read())
        conn.close()
        body = b'{"model":"m","messages":[{"role":"user","content":"x"}]}'
        one = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
               % len(body)) + body
        s = self.srv.raw(one + one + b"GET /health HTTP/1.1\r\nConnection: close\r\n\r\n")
        data = recv_until_closed(s)
        s.close()
        self.assertEqual(data.count(b"HTTP/1.1 200 OK"), 3)

    def test_expect_continue(self):
        body = json.dumps({"model": "m", "messages": [{"role": "user",
                                                       "content": "x" * 3000}]}).encode()
        s = self.srv.raw(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                         b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(body))
        self.assertEqual(read_http_head(s), b"HTTP/1.1 100 Continue\r\n\r\n")
        s.sendall(body + b"")
        head = read_http_head(s)
        self.assertTrue(head.startswith(b"HTTP/1.1 200 OK"), head)
        s.close()

    def test_http10_stream_ends_at_close(self):
        req = json.dumps({"model": "m", "stream": True,
                          "messages": [{"role": "user", "content": "x"}]}).encode()
        s = self.srv.raw(b"POST /v1/chat/completions HTTP/1.0\r\n"
                         b"Content-Length: %d\r\n\r\n" % len(req) + req)
        head, body = recv_until_closed(s).split(b"\r\n\r\n", 1)
        s.close()
        self.assertNotIn(b"Transfer-Encoding", head)
        self.assertIn(b"Connection: close", head)
        self.assertTrue(body.startswith(b"data: {"))
        self.assertTrue(body.endswith(b"data: [DONE]\n\n"))

    def test_limits(self):
        big = b"X-Filler: " + b"a" * 70000 + b"\r\n"
        s = self.srv.raw(b"GET /health HTTP/1.1\r\n" + big + b"\r\n")
        self.assertTrue(recv_until_closed(s).startswith(b"HTTP/1.1 431 "))
        s.close()
        s = self.srv.raw(b"GARBAGE\r\n\r\n")
        self.assertTrue(recv_until_closed(s).startswith(b"HTTP/1.1 400 "))
        s.close()
        s = self.srv.raw(b"POST /v1/messages HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n")
        self.assertTrue(recv_until_closed(s).startswith(b"HTTP/1.1 501 "))
        s.close()


class ApiKeyTest(unittest.TestCase):
    KEY = "sk-fake-test-key-0123456789"

    @classmethod
    def setUpClass(cls):
        cls.srv = Server(["--fake-api-key", cls.KEY, "--fake-body-max", "4096"])

    @classmethod
    def tearDownClass(cls):
        rc = cls.srv.stop()
        assert rc == 0, "SIGTERM should stop the server with 0, got %r" % rc

    def test_openai_key(self):
        msgs = openai_post("hello")
        status, _, body = self.srv.openai(msgs)
        self.assertEqual(status, 401)
        err = json.loads(body)["error"]
        self.assertEqual(err["code"], "invalid_api_key")
        status, _, _ = self.srv.openai(msgs, headers={"Authorization": "Bearer wrong"})
        self.assertEqual(status, 401)
        status, _, _ = self.srv.openai(msgs, headers={"Authorization": "Bearer " + self.KEY})
        self.assertEqual(status, 200)

    def test_anthropic_key(self):
        msgs = [{"role": "user", "content": "hello"}]
        status, _, body = self.srv.anthropic(msgs)
        self.assertEqual(status, 401)
        doc = json.loads(body)
        self.assertEqual(doc["type"], "error")
        self.assertEqual(doc["error"]["type"], "authentication_error")
        status, _, _ = self.srv.anthropic(msgs, headers={"x-api-key": self.KEY})
        self.assertEqual(status, 200)
        # the key is never echoed in the request log
        _, _, body = self.srv.request("GET", "/_fake/requests")
        self.assertNotIn(self.KEY, body.decode())

    def test_body_limit(self):
        body = json.dumps({"model": "m", "messages": [{"role": "user",
                                                       "content": "x" * 5000}]}).encode()
        s = self.srv.raw(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                         b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(body))
        self.assertTrue(recv_until_closed(s).startswith(b"HTTP/1.1 413 "))
        s.close()
        status, _, _ = self.srv.openai(
            [{"role": "user", "content": "x" * 5000}],
            headers={"Authorization": "Bearer " + self.KEY})
        self.assertEqual(status, 413)


class StartupTest(unittest.TestCase):
    def run_bad(self, script_text):
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "bad.json")
            with open(path, "w") as f:
                f.write(script_text)
            p = subprocess.run([BIN, "--fake-script", path], capture_output=True,
                               text=True, timeout=10)
            return p.returncode, p.stdout, p.stderr, path

    def test_bad_scripts_exit_nonzero_naming_the_problem(self):
        bad_step = {"rules": [{"name": "greet", "match": "*",
                               "responses": [[{"text": "ok"}, {"txt": "typo"}]]}]}
        rc, out, err, path = self.run_bad(json.dumps(bad_step))
        self.assertNotEqual(rc, 0)
        self.assertEqual(out, "", "no 'listening' line")
        self.assertIn(path, err)
        self.assertIn('rules[0] ("greet"): responses[0][1]', err)
        self.assertIn('"txt"', err)

        rc, _, err, _ = self.run_bad('{"rules": [')
        self.assertNotEqual(rc, 0)
        self.assertIn("not valid JSON: line 1", err)

        after_cut = {"rules": [{"name": "c", "match": "*",
                                "responses": [[{"cut": True}, {"text": "never"}]]}]}
        rc, _, err, _ = self.run_bad(json.dumps(after_cut))
        self.assertNotEqual(rc, 0)
        self.assertIn("never run", err)

        late_error = {"rules": [{"name": "e", "match": "*",
                                 "responses": [[{"text": "x"}, {"http_error": 429}]]}]}
        rc, _, err, _ = self.run_bad(json.dumps(late_error))
        self.assertNotEqual(rc, 0)
        self.assertIn("http_error must come before", err)

        bad_chunks = {"rules": [{"name": "n", "match": "*",
                                 "responses": [[{"text": "x", "chunks": 0}]]}]}
        rc, _, err, _ = self.run_bad(json.dumps(bad_chunks))
        self.assertNotEqual(rc, 0)
        self.assertIn('"chunks" must be an integer', err)

        p = subprocess.run([BIN, "--fake-listen", "127.0.0.1:99999"],
                           capture_output=True, text=True, timeout=10)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("port must be 0 to 65535", p.stderr)

        p = subprocess.run([BIN, "--fake-script", "/nonexistent/script.json"],
                           capture_output=True, text=True, timeout=10)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("/nonexistent/script.json", p.stderr)

    def test_default_script(self):
        """The script shipped beside the binary loads and uses the worker's tools."""
        srv = Server([], script=None)
        try:
            expect = {
                "hello": None,
                "read the readme": ("read_file", {"path"}),
                "write a file": ("write_file", {"path", "content"}),
                "edit it": ("edit_file", {"path", "old_text", "new_text"}),
                "run something": ("run_command", {"command", "timeout_ms"}),
                "make a plan": ("update_plan", {"entries"}),
                "what now?": None,
            }
            for prompt, tool in expect.items():
                status, _, body = srv.anthropic([{"role": "user", "content": prompt}])
                self.assertEqual(status, 200, prompt)
                docs = [json.loads(d) for _, d in sse(body)]
                starts = [d["content_block"] for d in docs
                          if d["type"] == "content_block_start"]
                uses = [b for b in starts if b["type"] == "tool_use"]
                if tool is None:
                    self.assertEqual(uses, [], prompt)
                    self.assertIn("text", [b["type"] for b in starts])
                    continue
                self.assertEqual([u["name"] for u in uses], [tool[0]], prompt)
                args = json.loads("".join(
                    d["delta"]["partial_json"] for d in docs
                    if d["type"] == "content_block_delta"
                    and d["delta"]["type"] == "input_json_delta"))
                self.assertEqual(set(args), tool[1], prompt)
                if tool[0] == "update_plan":
                    for entry in args["entries"]:
                        self.assertIn(entry["status"],
                                      ("pending", "in_progress", "completed"))
        finally:
            self.assertEqual(srv.stop(), 0)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: test_fake_model.py <corral-fake-model>")
    BIN = os.path.abspath(sys.argv.pop(1))
    unittest.main(verbosity=2)
