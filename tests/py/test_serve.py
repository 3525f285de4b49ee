"""moe serve on the default model (converted at build time) with a ChatML template: the endpoints,
every refusal the server makes (raw sockets for the protocol cases), slow and vanishing clients, and
greedy output equal to `moe run` on the same prompt, streamed and not. Each test starts its own
server on a free loopback port and kills it in tearDown; every wait is bounded."""

import http.client
import json
import math
import os
import re
import shutil
import socket
import struct
import subprocess
import threading
import time
import unittest

import moetest
from moetest import moe, workdir

moetest.require_shared()

MODEL = os.path.join(os.path.dirname(moetest.BIN), "models", "default.moe")
TEMPLATE = ("{{ bos_token }}{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n"
            "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
LISTENING = re.compile(r"listening on http://127\.0\.0\.1:(\d+)")
LOG_LINE = re.compile(r"^127\.0\.0\.1 (\S+) (\S+) (\d+) prompt (\d+) \(cached (\d+)\) completion (\d+) tokens [\d.]+ s batch (\d+)$")


class Server:
    """A moe serve process; its stderr is collected by a thread so the pipe never fills."""

    def __init__(self, *extra):
        self.proc = subprocess.Popen([moetest.BIN, "serve", "-m", MODEL, "--port", "0", "-t", "1"] + list(extra),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.lines = []
        self.port = None
        self.ready = threading.Event()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        if not self.ready.wait(60) or self.port is None:
            self.stop()
            raise AssertionError("the server did not start: %s" % "".join(self.lines))

    def _read(self):
        for raw in self.proc.stderr:
            line = raw.decode("utf-8", "replace")
            self.lines.append(line)
            m = LISTENING.search(line)
            if m:
                self.port = int(m.group(1))
                self.ready.set()
        self.ready.set()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(30)
        self.reader.join(30)
        self.proc.stderr.close()

    def log(self, path, at_least=0, timeout=30):
        """The parsed request log lines for a path; waits (bounded) until there are at_least of them,
        since a line is written just after its response."""
        end = time.time() + timeout
        while len(self._log(path)) < at_least and time.time() < end:
            time.sleep(0.05)
        return self._log(path)

    def _log(self, path):
        out = []
        for line in list(self.lines):
            m = LOG_LINE.match(line)
            if m and m.group(2) == path:
                out.append({"status": int(m.group(3)), "prompt": int(m.group(4)), "cached": int(m.group(5)),
                            "completion": int(m.group(6)), "batch": int(m.group(7))})
        return out


def raw_exchange(port, data, timeout=20):
    """Send bytes on a fresh connection and read until the server closes it (or timeout)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(data)
        got = b""
        end = time.time() + timeout
        while time.time() < end:
            try:
                chunk = s.recv(65536)
            except (ConnectionResetError, socket.timeout):
                break
            if not chunk:
                break
            got += chunk
        return got
    finally:
        s.close()


def status_of(response):
    m = re.match(rb"HTTP/1\.1 (\d{3}) ", response)
    if not m:
        raise AssertionError("not an HTTP response: %r" % response[:200])
    return int(m.group(1))


def json_body(response):
    head, _, body = response.partition(b"\r\n\r\n")
    return json.loads(body)


@unittest.skipUnless(os.path.exists(MODEL), "the default model is not built")
class Serve(unittest.TestCase):
    extra = ()

    def setUp(self):
        self.work = workdir("serve")
        self.tmpl = os.path.join(self.work, "chatml.jinja")
        with open(self.tmpl, "w") as f:
            f.write(TEMPLATE)
        self.srv = Server("--template", self.tmpl, *self.extra)

    def tearDown(self):
        self.srv.stop()

    def call(self, method, path, body=None, headers=None, raw_body=None):
        c = http.client.HTTPConnection("127.0.0.1", self.srv.port, timeout=120)
        try:
            data = raw_body if raw_body is not None else (json.dumps(body) if body is not None else None)
            c.request(method, path, body=data, headers=headers or {"Content-Type": "application/json"})
            r = c.getresponse()
            text = r.read()
            return r.status, r.getheaders(), text
        finally:
            c.close()

    def post(self, path, body, headers=None):
        status, _, text = self.call("POST", path, body, headers)
        return status, json.loads(text)

    def stream(self, path, body):
        """The SSE events of a streamed request (parsed JSON, and the final [DONE])."""
        c = http.client.HTTPConnection("127.0.0.1", self.srv.port, timeout=120)
        try:
            c.request("POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"})
            r = c.getresponse()
            self.assertEqual(r.status, 200)
            self.assertEqual(r.getheader("Content-Type"), "text/event-stream")
            text = r.read().decode("utf-8")  # http.client undoes the chunked encoding
        finally:
            c.close()
        events = [e for e in text.split("\n\n") if e]
        for e in events:
            self.assertTrue(e.startswith("data: "), e)
        self.assertEqual(events[-1], "data: [DONE]")
        return [json.loads(e[6:]) for e in events[:-1]]

    def assert_error(self, status, reply, want_status, param=None, words=None):
        self.assertEqual(status, want_status, reply)
        err = reply["error"]
        self.assertEqual(err["code"], want_status)
        self.assertTrue(err["message"])
        if param is not None:
            self.assertEqual(err["param"], param, err)
        if words:
            self.assertIn(words, err["message"])


class Endpoints(Serve):
    def test_health_and_models(self):
        status, _, text = self.call("GET", "/health")
        self.assertEqual((status, json.loads(text)), (200, {"status": "ok"}))
        status, _, text = self.call("GET", "/v1/models")
        models = json.loads(text)
        self.assertEqual(status, 200)
        self.assertEqual(models["object"], "list")
        self.assertEqual([m["id"] for m in models["data"]], ["default.moe"])
        log = self.srv.log("/health", 1)
        self.assertEqual(log[0]["status"], 200)

    def test_tokenize_detokenize_apply_template(self):
        text = "Once upon a time, <|im_end|> there"
        status, r = self.post("/tokenize", {"content": text})
        self.assertEqual(status, 200)
        path = os.path.join(self.work, "text.txt")
        with open(path, "w") as f:
            f.write(text)
        want = [int(x) for x in moe("tokenize", "-m", MODEL, "-f", path).stdout.split()]
        self.assertEqual(r["tokens"], want)
        status, r2 = self.post("/tokenize", {"content": text, "add_special": True})
        bos = [int(x) for x in moe("tokenize", "-m", MODEL, "-f", path, "--bos").stdout.split()]
        self.assertEqual(r2["tokens"], bos)
        status, d = self.post("/detokenize", {"tokens": want})
        self.assertEqual((status, d["content"]), (200, text))
        msgs = [{"role": "system", "content": "S"}, {"role": "user", "content": "Hi"}]
        req = os.path.join(self.work, "req.json")
        with open(req, "w") as f:
            json.dump({"messages": msgs}, f)
        status, t = self.post("/apply-template", {"messages": msgs})
        want = moe("template", "-m", MODEL, "--template", self.tmpl, req).stdout
        self.assertEqual((status, t["prompt"]), (200, want))
        # content as a list of text parts is the same as the joined string
        status, t2 = self.post("/apply-template", {"messages": [
            {"role": "system", "content": [{"type": "text", "text": "S"}]},
            {"role": "user", "content": [{"type": "text", "text": "H"}, {"type": "text", "text": "i"}]}]})
        self.assertEqual(t2["prompt"], t["prompt"])
        self.assert_error(*self.post("/detokenize", {"tokens": [1, 10 ** 9]}), 400, "tokens")

    def test_refusals(self):
        chat = "/v1/chat/completions"
        msgs = [{"role": "user", "content": "Hi"}]
        self.assert_error(*self.post(chat, {"messages": msgs, "n": 2}), 400, "n")
        self.assert_error(*self.post(chat, {"messages": msgs, "logprobs": 1}), 400, "logprobs")
        self.assert_error(*self.post(chat, {"messages": msgs, "top_logprobs": 2}), 400, "top_logprobs")
        self.assert_error(*self.post(chat, {"messages": msgs, "logprobs": True, "top_logprobs": 21}), 400,
                          "top_logprobs")
        self.assert_error(*self.post("/v1/completions", {"prompt": "x", "logprobs": True}), 400, "logprobs")
        self.assert_error(*self.post(chat, {"messages": msgs, "tools": [{"type": "function"}]}), 400, "tools")
        self.assert_error(*self.post(chat, {"messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "data:,"}}]}]}), 400, "messages[0].content[0]")
        self.assert_error(*self.post(chat, {"messages": msgs, "modalities": ["text", "audio"]}), 400, "modalities")
        self.assert_error(*self.post(chat, {"messages": msgs, "audio": {"voice": "alloy"}}), 400, "audio")
        self.assertEqual(self.post(chat, {"messages": msgs, "modalities": ["text"], "max_tokens": 1})[0], 200)
        self.assert_error(*self.post("/v1/completions", {"prompt": "x", "n": 3}), 400, "n")
        self.assert_error(*self.post(chat, {"messages": msgs, "temperature": "hot"}), 400, "temperature")
        self.assert_error(*self.post(chat, {"messages": msgs, "max_tokens": 0}), 400, "max_tokens")
        self.assert_error(*self.post(chat, {"messages": msgs, "top_p": 1.5}), 400, "top_p")
        self.assert_error(*self.post(chat, {"messages": msgs, "stop": [1]}), 400, "stop")
        self.assert_error(*self.post(chat, {"messages": msgs, "stream_options": {"include_usage": 1}}), 400,
                          "stream_options.include_usage")
        self.assert_error(*self.post(chat, {"messages": [{"role": "robot", "content": "x"}]}), 400, "messages[0].role")
        self.assert_error(*self.post(chat, {"messages": []}), 400, "messages")
        self.assert_error(*self.post("/v1/completions", {"prompt": 5}), 400, "prompt")
        self.assert_error(*self.post("/v1/completions", {"prompt": "x " * 600}), 400, "prompt", "context holds")
        # bad JSON names the problem and where
        status, _, text = self.call("POST", chat, raw_body=b'{"messages": [}')
        self.assert_error(status, json.loads(text), 400, None, "line 1 col 15")
        status, _, text = self.call("POST", chat, raw_body=b"[1, 2]")
        self.assert_error(status, json.loads(text), 400, None, "not a JSON object")
        # 404, 405 (with Allow)
        status, _, text = self.call("GET", "/v2/nothing")
        self.assert_error(status, json.loads(text), 404)
        status, headers, text = self.call("GET", chat)
        self.assert_error(status, json.loads(text), 405)
        self.assertIn(("Allow", "POST"), headers)

    def test_protocol_errors(self):
        port = self.srv.port
        self.assertEqual(status_of(raw_exchange(port, b"GARBAGE\r\n\r\n")), 400)
        self.assertEqual(status_of(raw_exchange(port, b"GET /health HTTP/1.1\nHost: x\n\n")), 400)
        self.assertEqual(status_of(raw_exchange(port, b"GET /health HTTP/1.1\r\n\r\n")), 400)  # no Host
        self.assertEqual(status_of(raw_exchange(port, b"GET /health HTTP/3.0\r\nHost: x\r\n\r\n")), 505)
        big = b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\n"
        r = raw_exchange(port, big)
        self.assertEqual(status_of(r), 413)
        self.assertEqual(json_body(r)["error"]["code"], 413)
        chunked = (b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                   b"5\r\nhello\r\n0\r\n\r\n")
        self.assertEqual(status_of(raw_exchange(port, chunked)), 411)
        many = b"GET /health HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(200)) + b"\r\n"
        self.assertEqual(status_of(raw_exchange(port, many)), 431)
        long = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Long: " + b"a" * 20000 + b"\r\n\r\n"
        self.assertEqual(status_of(raw_exchange(port, long)), 431)
        # the server is still fine, and keeps a connection alive across requests (pipelined too)
        two = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\nGET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        r = raw_exchange(port, two)
        self.assertEqual(r.count(b"HTTP/1.1 200 OK"), 2, r)


class SlowTimeout(Serve):
    extra = ("--timeout", "2")

    def test_slow_client_times_out_others_served(self):
        slow = socket.create_connection(("127.0.0.1", self.srv.port), timeout=30)
        try:
            slow.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Le")
            t0 = time.time()
            for _ in range(3):  # others are served meanwhile
                status, _, _ = self.call("GET", "/health")
                self.assertEqual(status, 200)
            got = b""
            while True:
                chunk = slow.recv(65536)
                if not chunk:
                    break
                got += chunk
            waited = time.time() - t0
        finally:
            slow.close()
        self.assertEqual(status_of(got), 408)
        self.assertGreater(waited, 1.0)
        self.assertLess(waited, 10)
        # an idle keep-alive connection is closed silently after the timeout
        idle = socket.create_connection(("127.0.0.1", self.srv.port), timeout=30)
        try:
            self.assertEqual(idle.recv(100), b"")
        finally:
            idle.close()
        self.assertEqual(self.call("GET", "/health")[0], 200)


class ApiKey(Serve):
    extra = ("--api-key", "s3cret")

    def test_bearer(self):
        body = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
        self.assert_error(*self.post("/v1/chat/completions", body), 401)
        self.assert_error(*self.post("/v1/chat/completions", body, {"Authorization": "Bearer s3creT"}), 401)
        self.assert_error(*self.post("/v1/chat/completions", body, {"Authorization": "Bearer s3cret2"}), 401)
        status, _, _ = self.call("GET", "/v1/models", headers={"Authorization": "Bearer wrong"})
        self.assertEqual(status, 401)
        status, r = self.post("/v1/chat/completions", body, {"Authorization": "Bearer s3cret"})
        self.assertEqual(status, 200, r)
        self.assertEqual(self.call("GET", "/health")[0], 200)  # open without a key


class Greedy(Serve):
    N = 24

    def moe_run(self, *args):
        q = moe("run", "-m", MODEL, "--temp", "0", "-n", self.N, "-t", "1", *args)
        m = re.search(r"decode: (\d+) tokens", q.stderr)
        return q.stdout[:-1], int(m.group(1))  # run ends the text with a newline

    def test_chat_equals_moe_run(self):
        text, n = self.moe_run("--chat", "-p", "Tell me a story about a dog.", "--system", "Be brief.",
                               "--template", self.tmpl)
        body = {"messages": [{"role": "system", "content": "Be brief."},
                             {"role": "user", "content": "Tell me a story about a dog."}],
                "temperature": 0, "max_tokens": self.N}
        status, r = self.post("/v1/chat/completions", body)
        self.assertEqual(status, 200, r)
        self.assertEqual(r["object"], "chat.completion")
        msg = r["choices"][0]["message"]
        self.assertEqual((msg["role"], msg["content"]), ("assistant", text))
        self.assertEqual(r["usage"]["completion_tokens"], n)
        self.assertEqual(r["choices"][0]["finish_reason"], "length" if n == self.N else "stop")
        # streamed: the same text in deltas, then finish_reason, then usage
        events = self.stream("/v1/chat/completions", dict(body, stream=True, stream_options={"include_usage": True}))
        self.assertEqual(events[0]["choices"][0]["delta"]["role"], "assistant")
        deltas = "".join(e["choices"][0]["delta"].get("content", "") for e in events if e["choices"])
        self.assertEqual(deltas, text)
        self.assertGreater(len(events), 3)
        self.assertEqual(events[-2]["choices"][0]["finish_reason"], r["choices"][0]["finish_reason"])
        self.assertEqual(events[-1]["choices"], [])
        self.assertEqual(events[-1]["usage"]["completion_tokens"], n)
        self.assertTrue(all(e["object"] == "chat.completion.chunk" for e in events))
        # the second request found its prompt in the slot's cache (all but the last token)
        log = self.srv.log("/v1/chat/completions", 2)
        self.assertEqual(log[1]["cached"], log[1]["prompt"] - 1)

    def test_completion_equals_moe_run(self):
        prompt = "Once upon a time, there was"
        out, n = self.moe_run("-p", prompt)
        self.assertTrue(out.startswith(prompt))
        text = out[len(prompt):]
        status, r = self.post("/v1/completions", {"prompt": prompt, "temperature": 0, "max_tokens": self.N})
        self.assertEqual(status, 200, r)
        self.assertEqual((r["choices"][0]["text"], r["usage"]["completion_tokens"]), (text, n))
        events = self.stream("/v1/completions", {"prompt": prompt, "temperature": 0, "max_tokens": self.N,
                                                 "stream": True})
        self.assertEqual("".join(e["choices"][0]["text"] for e in events), text)

    def test_stop_strings_across_tokens(self):
        prompt = "Once upon a time, there was"
        full = self.post("/v1/completions", {"prompt": prompt, "temperature": 0, "max_tokens": self.N})[1]
        text = full["choices"][0]["text"]
        toks = self.post("/tokenize", {"content": text})[1]["tokens"]
        # a stop string that starts inside one token and ends inside a later one
        pieces = [self.post("/detokenize", {"tokens": toks[:i]})[1]["content"] for i in range(len(toks) + 1)]
        cut = next(i for i in range(2, len(pieces) - 2) if len(pieces[i + 1]) - len(pieces[i]) >= 2)
        start = len(pieces[cut]) - 1  # the last byte of token cut-1
        stop = text[start:len(pieces[cut + 1]) + 1]  # ... through the first byte after token cut
        self.assertGreater(len(stop), 2)
        first = text.find(stop)
        body = {"prompt": prompt, "temperature": 0, "max_tokens": self.N, "stop": ["never appears", stop]}
        r = self.post("/v1/completions", body)[1]
        self.assertEqual((r["choices"][0]["text"], r["choices"][0]["finish_reason"]), (text[:first], "stop"))
        events = self.stream("/v1/completions", dict(body, stream=True))
        sent = "".join(e["choices"][0]["text"] for e in events)
        self.assertEqual(sent, text[:first])
        self.assertEqual(events[-1]["choices"][0]["finish_reason"], "stop")
        r = self.post("/v1/completions", dict(body, stop=stop))[1]  # a plain string works the same
        self.assertEqual(r["choices"][0]["text"], text[:first])

    def test_follow_up_turn_reuses_the_cache(self):
        turn1 = [{"role": "user", "content": "Once upon a time"}]
        r1 = self.post("/v1/chat/completions", {"messages": turn1, "temperature": 0, "max_tokens": 8})[1]
        turn2 = turn1 + [{"role": "assistant", "content": r1["choices"][0]["message"]["content"]},
                         {"role": "user", "content": "And then?"}]
        r2 = self.post("/v1/chat/completions", {"messages": turn2, "temperature": 0, "max_tokens": 8})[1]
        p1 = r1["usage"]["prompt_tokens"]
        self.assertGreaterEqual(r2["usage"]["prompt_tokens_details"]["cached_tokens"], p1)
        # and the reply is what a from-scratch greedy run of the whole prompt gives
        prompt = self.post("/apply-template", {"messages": turn2})[1]["prompt"]
        path = os.path.join(self.work, "turn2.txt")
        with open(path, "w") as f:
            f.write(prompt)
        out = moe("run", "-m", MODEL, "-f", path, "--no-bos", "--temp", "0", "-n", 8, "-t", "1").stdout
        self.assertEqual(r2["choices"][0]["message"]["content"], out[len(prompt):-1])


def log_softmax_rows(path, rows):
    """The rows of a `moe logits` file as log-softmax lists (float64, in Python)."""
    with open(path, "rb") as f:
        data = f.read()
    vocab = len(data) // 4 // rows
    flat = struct.unpack("<%df" % (rows * vocab), data)
    out = []
    for r in range(rows):
        row = flat[r * vocab:(r + 1) * vocab]
        m = max(row)
        lse = m + math.log(sum(math.exp(x - m) for x in row))
        out.append([x - lse for x in row])
    return out


class Logprobs(Serve):
    """logprobs are the model's log-softmax over its raw logits (OpenAI's meaning), checked against
    `moe logits` on the same tokens, the log-softmax taken here in Python. The server decodes token
    by token and `moe logits` evaluates the whole sequence in one pass: the logits differ by float
    reassociation only (docs/SERVING.md, Several sequences at once), so 1e-3 bounds the difference."""
    TOL = 1e-3

    def check_entry(self, lsm, got_lp, got_top):
        """got_top: [(id or None, logprob)] best first; the ids agree with the reference where its
        gaps exceed the tolerance, the values everywhere."""
        ranked = sorted(range(len(lsm)), key=lambda i: (-lsm[i], i))
        for k, (tid, lp) in enumerate(got_top):
            self.assertAlmostEqual(lp, lsm[ranked[k]], delta=self.TOL)
            if tid is not None and abs(lsm[ranked[k]] - lsm[tid]) > self.TOL:
                self.fail("top_logprobs[%d] is id %d, the reference says %d" % (k, tid, ranked[k]))

    def test_chat_logprobs_equal_log_softmax(self):
        msgs = [{"role": "user", "content": "Tell me a story about a dog."}]
        body = {"messages": msgs, "temperature": 0, "max_tokens": 16, "logprobs": True, "top_logprobs": 3}
        status, r = self.post("/v1/chat/completions", body)
        self.assertEqual(status, 200, r)
        content = r["choices"][0]["logprobs"]["content"]
        self.assertEqual(len(content), r["usage"]["completion_tokens"])
        self.assertEqual(b"".join(bytes(e["bytes"]) for e in content).decode(),
                         r["choices"][0]["message"]["content"])
        prompt = self.post("/apply-template", {"messages": msgs})[1]["prompt"]
        ids = self.post("/tokenize", {"content": prompt})[1]["tokens"]
        gen = [e["id"] for e in content]
        out = os.path.join(self.work, "chat.f32")
        moe("logits", "-m", MODEL, "-t", "1", "--tokens", ",".join(map(str, ids + gen[:-1])), "-o", out)
        lsm = log_softmax_rows(out, len(ids) + len(gen) - 1)[len(ids) - 1:]
        for e, row in zip(content, lsm):
            self.assertEqual(e["id"], max(range(len(row)), key=lambda i: (row[i], -i)))  # greedy
            self.assertAlmostEqual(e["logprob"], row[e["id"]], delta=self.TOL)
            self.assertEqual(len(e["top_logprobs"]), 3)
            self.assertEqual(e["top_logprobs"][0]["id"], e["id"])
            self.check_entry(row, e["logprob"], [(t["id"], t["logprob"]) for t in e["top_logprobs"]])
            self.assertEqual(e["token"], bytes(e["bytes"]).decode("utf-8", "replace"))
        # streamed: the same entries, spread over the chunks that carry their text
        events = self.stream("/v1/chat/completions", dict(body, stream=True))
        streamed = [x for ev in events for x in ((ev["choices"][0].get("logprobs") or {}).get("content") or [])]
        self.assertEqual([e["id"] for e in streamed], gen)
        for a, b in zip(streamed, content):
            self.assertAlmostEqual(a["logprob"], b["logprob"], delta=self.TOL)
        # logprobs without top_logprobs: no alternatives
        r = self.post("/v1/chat/completions", dict(body, top_logprobs=None))[1]
        self.assertEqual([e["top_logprobs"] for e in r["choices"][0]["logprobs"]["content"]], [[]] * len(gen))

    def test_completion_logprobs_legacy_shape(self):
        prompt = "Once upon a time, there was"
        n = 12
        body = {"prompt": prompt, "temperature": 0, "max_tokens": n, "logprobs": 5}
        status, r = self.post("/v1/completions", body)
        self.assertEqual(status, 200, r)
        c = r["choices"][0]
        lp = c["logprobs"]
        self.assertEqual(len(lp["tokens"]), r["usage"]["completion_tokens"])
        self.assertEqual("".join(lp["tokens"]), c["text"])
        self.assertEqual(lp["text_offset"], [len("".join(lp["tokens"][:i]).encode()) for i in range(len(lp["tokens"]))])
        # the reference: greedy decoding by `moe logits` (its first step from the prompt's last row)
        ids = self.post("/tokenize", {"content": prompt, "add_special": True})[1]["tokens"]
        k = len(lp["tokens"])
        first, steps = os.path.join(self.work, "p.f32"), os.path.join(self.work, "g.f32")
        q = moe("logits", "-m", MODEL, "-t", "1", "--tokens", ",".join(map(str, ids)), "-o", first, "--greedy", k,
                "--greedy-logits", steps)
        gen = [int(x) for x in q.stdout.replace(",", " ").split()]
        detok = lambda t: self.post("/detokenize", {"tokens": t})[1]["content"]  # noqa: E731
        self.assertEqual(detok(ids + gen), detok(ids) + c["text"])
        rows = log_softmax_rows(first, len(ids))[-1:] + (log_softmax_rows(steps, k - 1) if k > 1 else [])
        for i, row in enumerate(rows):
            self.assertAlmostEqual(lp["token_logprobs"][i], row[gen[i]], delta=self.TOL)
            tops = sorted(lp["top_logprobs"][i].values(), reverse=True)
            self.assertLessEqual(len(tops), 5)  # two ids with one text would share a key
            self.check_entry(row, lp["token_logprobs"][i], [(None, v) for v in tops])
        events = self.stream("/v1/completions", dict(body, stream=True))
        self.assertEqual([t for e in events if e["choices"][0]["logprobs"] for t in e["choices"][0]["logprobs"]["tokens"]],
                         lp["tokens"])
        offsets = [o for e in events if e["choices"][0]["logprobs"] for o in e["choices"][0]["logprobs"]["text_offset"]]
        self.assertEqual(offsets, lp["text_offset"])

    def test_stop_string_cuts_the_entries(self):
        prompt = "Once upon a time, there was"
        body = {"prompt": prompt, "temperature": 0, "max_tokens": 12, "logprobs": 0}
        whole = self.post("/v1/completions", body)[1]["choices"][0]
        toks = whole["logprobs"]["tokens"]
        stop = toks[3] + toks[4]
        r = self.post("/v1/completions", dict(body, stop=stop))[1]["choices"][0]
        self.assertEqual(r["text"], "".join(toks[:3]))
        self.assertEqual(r["logprobs"]["tokens"], toks[:3])
        self.assertEqual(r["logprobs"]["top_logprobs"], [{}] * 3)


class SmallContext(Serve):
    """A 64-position context: a longer prompt is refused by name, or cut with "truncate": true (its
    first n_keep tokens and its newest, leaving room for max_tokens); max_tokens is clamped to what
    fits, ending with finish_reason "length"."""
    extra = ("-c", "64")
    PROMPT = ("Once upon a time, there was a little girl named Lily. She loved to play in the park with her "
              "friends. One day, she saw a big red ball under a tree and she ran to get it. She was very happy "
              "and she played with the ball all day long. ")

    def ids(self):
        ids = self.post("/tokenize", {"content": self.PROMPT, "add_special": True})[1]["tokens"]
        self.assertGreater(len(ids), 64)
        return ids

    def test_too_long_is_400_or_truncated(self):
        ids = self.ids()
        body = {"prompt": self.PROMPT, "temperature": 0, "max_tokens": 8}
        self.assert_error(*self.post("/v1/completions", body), 400, "prompt", "context holds 64")
        msgs = [{"role": "user", "content": self.PROMPT}]
        self.assert_error(*self.post("/v1/chat/completions", {"messages": msgs}), 400, "messages", "truncate")
        status, r = self.post("/v1/completions", dict(body, truncate=True, n_keep=4))
        self.assertEqual(status, 200, r)
        self.assertEqual((r["truncated"], r["usage"]["prompt_tokens"]), (True, 64 - 8))
        # what it generated is what the kept tokens give: the first 4 and the newest 52
        kept = ids[:4] + ids[len(ids) - 52:]
        want = self.post("/v1/completions", {"prompt": kept, "temperature": 0, "max_tokens": 8})[1]
        self.assertNotIn("truncated", want)
        self.assertEqual(r["choices"][0]["text"], want["choices"][0]["text"])
        # without max_tokens the reply gets half the context
        r = self.post("/v1/completions", {"prompt": self.PROMPT, "temperature": 0, "max_tokens": 100,
                                          "truncate": True})[1]
        self.assertEqual(r["usage"]["prompt_tokens"], 32)
        self.assert_error(*self.post("/v1/completions", dict(body, truncate=True, n_keep=56)), 400, "n_keep")
        self.assert_error(*self.post("/v1/completions", dict(body, truncate="yes")), 400, "truncate")
        status, r = self.post("/v1/chat/completions", {"messages": msgs, "truncate": True, "max_tokens": 4})
        self.assertEqual((status, r["usage"]["prompt_tokens"]), (200, 60))

    def test_max_tokens_clamped(self):
        kept = self.ids()[:50]
        r = self.post("/v1/completions", {"prompt": kept, "temperature": 0, "max_tokens": 1000})[1]
        c = r["choices"][0]
        self.assertEqual((c["finish_reason"], r["usage"]["completion_tokens"]), ("length", 64 - 50))
        events = self.stream("/v1/completions", {"prompt": kept, "temperature": 0, "max_tokens": 1000,
                                                 "stream": True})
        self.assertEqual(events[-1]["choices"][0]["finish_reason"], c["finish_reason"])
        self.assertEqual("".join(e["choices"][0]["text"] for e in events), c["text"])


GGUF_Q8 = os.path.join(moetest.SHARED, "gguf", "qwen3moe", "model-Q8_0.gguf")
GOLDEN_QWEN3 = os.path.join(moetest.SHARED, "golden", "qwen3_moe")
QWEN3_TEMPLATE = os.path.join(moetest.SHARED, "chat-templates", "qwen3.jinja")


class Gguf(unittest.TestCase):
    """moe serve on GGUF files: llama.cpp's own Q8_0 qwen3moe file (no chat template: completions
    only), and the golden qwen3_moe checkpoint written as an F32 GGUF with Qwen3's template in
    tokenizer.chat_template, which the server renders chats with. Greedy text equals `moe run`."""
    N = 16

    def serve(self, path):
        srv = Server("-m", path)
        self.addCleanup(srv.stop)
        return srv

    def post(self, srv, path, body):
        c = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=120)
        try:
            c.request("POST", path, body=json.dumps(body))
            r = c.getresponse()
            return r.status, json.loads(r.read())
        finally:
            c.close()

    @unittest.skipUnless(os.path.exists(GGUF_Q8), "no shared GGUF files")
    def test_llama_cpp_q8_0_file(self):
        srv = self.serve(GGUF_Q8)
        self.assertTrue(any("no chat template" in x for x in srv.lines), srv.lines)
        prompt = "Hello world, this is"
        q = moe("run", "-m", GGUF_Q8, "-p", prompt, "--temp", "0", "-n", self.N, "-t", "1")
        status, r = self.post(srv, "/v1/completions", {"prompt": prompt, "temperature": 0, "max_tokens": self.N})
        self.assertEqual(status, 200, r)
        self.assertEqual(prompt + r["choices"][0]["text"] + "\n", q.stdout)
        self.assertGreater(r["usage"]["completion_tokens"], 0)
        status, r = self.post(srv, "/v1/chat/completions", {"messages": [{"role": "user", "content": "Hi"}]})
        self.assertEqual((status, r["error"]["code"]), (400, 400))
        self.assertIn("no chat template", r["error"]["message"])

    @unittest.skipUnless(os.path.exists(os.path.join(GOLDEN_QWEN3, "model.safetensors")) and
                         os.path.exists(QWEN3_TEMPLATE), "no golden qwen3_moe checkpoint")
    def test_template_from_the_file(self):
        import hf_gguf
        work = workdir("serve_gguf")
        hf = os.path.join(work, "qwen3_moe_hf")  # the golden checkpoint with Qwen3's template added
        os.makedirs(hf, exist_ok=True)
        for name in ("config.json", "model.safetensors", "tokenizer.json"):
            if not os.path.exists(os.path.join(hf, name)):
                os.symlink(os.path.abspath(os.path.join(GOLDEN_QWEN3, name)), os.path.join(hf, name))
        with open(os.path.join(GOLDEN_QWEN3, "tokenizer_config.json"), encoding="utf-8") as f:
            tc = json.load(f)
        with open(QWEN3_TEMPLATE, encoding="utf-8") as f:
            tc["chat_template"] = f.read()
        with open(os.path.join(hf, "tokenizer_config.json"), "w", encoding="utf-8") as f:
            json.dump(tc, f, ensure_ascii=False)
        path = hf_gguf.write(hf, os.path.join(work, "qwen3_moe.gguf"))
        srv = self.serve(path)
        msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello there"}]
        req = os.path.join(work, "req.json")
        with open(req, "w") as f:
            json.dump({"messages": msgs}, f)
        status, t = self.post(srv, "/apply-template", {"messages": msgs})
        self.assertEqual((status, t["prompt"]), (200, moe("template", "-m", path, req).stdout))
        self.assertIn("<|im_start|>system\nBe brief.<|im_end|>", t["prompt"])
        q = moe("run", "-m", path, "--chat", "-p", "Hello there", "--system", "Be brief.", "--temp", "0",
                "-n", self.N, "-t", "1")
        body = {"messages": msgs, "temperature": 0, "max_tokens": self.N, "reasoning_format": "none"}
        status, r = self.post(srv, "/v1/chat/completions", body)
        self.assertEqual(status, 200, r)
        self.assertEqual(r["choices"][0]["message"]["content"] + "\n", q.stdout)
        self.assertEqual(r["usage"]["prompt_tokens"], len(self.post(srv, "/tokenize", {"content": t["prompt"]})[1]["tokens"]))


class Busy(Serve):
    extra = ("--parallel", "1", "--queue", "0")

    def test_disconnect_frees_the_slot_and_busy_is_503(self):
        body = {"prompt": "Once upon a time", "temperature": 0, "max_tokens": 480, "stream": True}
        data = json.dumps(body).encode()
        s = socket.create_connection(("127.0.0.1", self.srv.port), timeout=60)
        try:
            s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Content-Length: %d\r\n\r\n%s" % (len(data), data))
            got = b""
            while got.count(b"data: ") < 2:  # generation is under way
                chunk = s.recv(4096)
                self.assertTrue(chunk, got)
                got += chunk
            # the only slot is taken and no request may wait: 503
            self.assert_error(*self.post("/v1/completions", {"prompt": "x", "max_tokens": 1}), 503)
        finally:
            s.close()  # vanish mid-stream
        # the slot is free again soon: a new request gets through
        deadline = time.time() + 60
        while True:
            status, r = self.post("/v1/completions", {"prompt": "x", "max_tokens": 2, "temperature": 0})
            if status == 200 or time.time() > deadline:
                break
            time.sleep(0.1)
        self.assertEqual(status, 200, r)
        # the streamed request's log line (written once its job is cancelled): fewer tokens than asked
        self.srv.log("/v1/completions", 3)
        first = [e for e in self.srv.log("/v1/completions") if e["prompt"] >= 4]
        self.assertEqual(len(first), 1, self.srv.lines)
        self.assertEqual(first[0]["status"], 200)
        self.assertLess(first[0]["completion"], 480, "the vanished client's sequence was cancelled")


THINK_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n"
                  "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n<think>\n{% endif %}")


class Thinking(unittest.TestCase):
    """A template that opens <think> in the generation prompt: the reply (never closed by the
    default model) is all reasoning_content; "reasoning_format": "none" gives it as content."""

    def setUp(self):
        self.work = workdir("serve")
        self.tmpl = os.path.join(self.work, "think.jinja")
        with open(self.tmpl, "w") as f:
            f.write(THINK_TEMPLATE)
        self.srv = Server("--template", self.tmpl)

    def tearDown(self):
        self.srv.stop()

    @unittest.skipUnless(os.path.exists(MODEL), "the default model is not built")
    def test_reasoning_content(self):
        q = moe("run", "-m", MODEL, "--chat", "-p", "Once upon a time", "--template", self.tmpl, "--temp", "0",
                "-n", 12, "-t", "1")
        text = q.stdout[:-1]
        self.assertTrue(text.strip())
        body = {"messages": [{"role": "user", "content": "Once upon a time"}], "temperature": 0, "max_tokens": 12}
        c = http.client.HTTPConnection("127.0.0.1", self.srv.port, timeout=120)
        try:
            c.request("POST", "/v1/chat/completions", body=json.dumps(body))
            r = json.loads(c.getresponse().read())
            msg = r["choices"][0]["message"]
            self.assertEqual((msg["content"], msg["reasoning_content"]), ("", text.lstrip()))
            c.request("POST", "/v1/chat/completions", body=json.dumps(dict(body, reasoning_format="none")))
            msg = json.loads(c.getresponse().read())["choices"][0]["message"]
            self.assertEqual(msg["content"], text)
            self.assertNotIn("reasoning_content", msg)
            c.request("POST", "/v1/chat/completions", body=json.dumps(dict(body, stream=True)))
            events = [json.loads(e[6:]) for e in c.getresponse().read().decode().split("\n\n")
                      if e.startswith("data: {")]
            deltas = [e["choices"][0]["delta"] for e in events]
            self.assertEqual("".join(d.get("reasoning_content", "") for d in deltas), text.lstrip())
            self.assertEqual("".join(d.get("content", "") for d in deltas), "")
            c.request("POST", "/v1/chat/completions", body=json.dumps(dict(body, reasoning_format="weird")))
            r = c.getresponse()
            self.assertEqual((r.status, json.loads(r.read())["error"]["param"]), (400, "reasoning_format"))
        finally:
            c.close()


class Parallel(Serve):
    extra = ("--parallel", "3")

    def test_concurrent_equal_each_alone(self):
        """Running slots go through the model together, one moe_eval_batch per round (the log line's
        "batch" is the most sequences a round evaluated with the request). Greedy text is exactly
        what each prompt gives alone: batching changes the logits by float reassociation only
        (docs/SERVING.md, Several sequences at once), far below the default model's top-2 gaps here."""
        bodies = [{"prompt": p, "temperature": 0, "max_tokens": 60}
                  for p in ("Once upon a time", "The dog ran", "Lily had a red ball")]
        alone = [self.post("/v1/completions", b)[1]["choices"][0]["text"] for b in bodies]
        self.assertEqual(len(set(alone)), 3)
        self.assertEqual([e["batch"] for e in self.srv.log("/v1/completions", 3)], [1, 1, 1])
        best = 0
        for trial in range(5):  # the requests must overlap in the server; under load they might not at once
            got = [None] * 3

            def one(i):
                got[i] = self.post("/v1/completions", bodies[i])[1]

            threads = [threading.Thread(target=one, args=(i,)) for i in range(3)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(120)
            self.assertEqual([g["choices"][0]["text"] for g in got], alone)
            best = max(e["batch"] for e in self.srv.log("/v1/completions", 6 + 3 * trial)[3 + 3 * trial:])
            if best == 3:
                break
        self.assertEqual(best, 3)

    def test_head(self):
        r = raw_exchange(self.srv.port, b"HEAD /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        head, _, body = r.partition(b"\r\n\r\n")
        self.assertEqual(status_of(r), 405)
        self.assertEqual(body, b"")


class Page(Serve):
    extra = ("--api-key", "k")

    def page(self):
        status, headers, body = self.call("GET", "/")
        self.assertEqual(status, 200)
        self.assertEqual(dict(headers)["Content-Type"], "text/html; charset=utf-8")
        return body.decode("utf-8")

    def test_page_is_self_contained(self):
        html = self.page()  # open without the key: the page holds nothing, its requests carry the key
        with open(os.path.join(moetest.ROOT, "src", "cli", "serve_page.html"), encoding="utf-8") as f:
            self.assertEqual(html, f.read())
        self.assertIn("/v1/chat/completions", html)
        self.assertNotRegex(html, r"(src|href)=|https?://|@import")  # no external assets

    @unittest.skipUnless(shutil.which("node"), "node is not installed")
    def test_page_reads_the_stream(self):
        """The page's own SSE reader (readEvents, run in node's fetch) rebuilds the streamed reply
        exactly as the whole (non-streamed) reply."""
        html = self.page()
        script = re.search(r"<script>(.*)</script>", html, re.S).group(1)
        path = os.path.join(self.work, "page.js")
        with open(path, "w") as f:
            f.write(script)
        self.assertEqual(subprocess.run(["node", "--check", path]).returncode, 0, "the page's script parses")
        reader = re.search(r"async function readEvents\(.*?\n}\n", script, re.S).group(0)
        body = {"messages": [{"role": "user", "content": "Once upon a time"}], "temperature": 0, "max_tokens": 16}
        whole = self.post("/v1/chat/completions", body, {"Authorization": "Bearer k"})[1]
        prog = reader + """
const r = await fetch(process.argv[2], {method: "POST", headers: {"Authorization": "Bearer k"},
                                        body: JSON.stringify(%s)});
let text = "";
await readEvents(r, (chunk) => { for (const c of chunk.choices) text += c.delta.content || ""; });
console.log(JSON.stringify(text));
""" % json.dumps(dict(body, stream=True))
        js = os.path.join(self.work, "read_events.mjs")
        with open(js, "w") as f:
            f.write(prog)
        q = subprocess.run(["node", js, "http://127.0.0.1:%d/v1/chat/completions" % self.srv.port],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120)
        self.assertEqual(q.returncode, 0, q.stderr)
        self.assertEqual(json.loads(q.stdout), whole["choices"][0]["message"]["content"])


@unittest.skipUnless(os.path.exists(MODEL), "the default model is not built")
class Loading(unittest.TestCase):
    """The server listens before it loads, and answers 503 "Loading model" until it is ready. The
    load is held open for real, not by a test flag: the --template file is a FIFO, which the loader
    thread reads until this test writes the template and closes it."""

    def test_503_while_loading(self):
        work = workdir("serve")
        fifo = os.path.join(work, "slow.jinja")
        if os.path.exists(fifo):
            os.unlink(fifo)
        os.mkfifo(fifo)
        proc = subprocess.Popen([moetest.BIN, "serve", "-m", MODEL, "--port", "0", "-t", "1", "--template", fifo],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            line = proc.stderr.readline().decode()
            m = re.search(r"bound to http://127\.0\.0\.1:(\d+), loading ", line)
            self.assertTrue(m, line)
            port = int(m.group(1))

            def call(method, path, body=None):
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                try:
                    c.request(method, path, body=json.dumps(body) if body is not None else None)
                    r = c.getresponse()
                    return r.status, json.loads(r.read())
                finally:
                    c.close()

            status, r = call("GET", "/health")
            self.assertEqual((status, r["error"]["message"], r["error"]["code"]), (503, "Loading model", 503))
            for method, path, body in [("POST", "/v1/completions", {"prompt": "x"}), ("GET", "/v1/models", None),
                                       ("POST", "/v1/chat/completions", {"messages": []}), ("GET", "/", None)]:
                status, r = call(method, path, body)
                self.assertEqual((status, r["error"]["message"]), (503, "Loading model"), path)
            self.assertEqual(call("GET", "/nowhere")[0], 404)  # what needs no model is answered
            # let the load finish: the loader has the FIFO open for reading (else ENXIO: retry, bounded)
            deadline = time.time() + 30
            while True:
                try:
                    fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
                    break
                except OSError:
                    self.assertLess(time.time(), deadline, "the server never opened the template")
                    time.sleep(0.05)
            os.write(fd, TEMPLATE.encode())
            os.close(fd)
            lines = []  # log lines (written after their responses, in any order), then the ready line
            while not lines or not (LISTENING.search(lines[-1]) or lines[-1] == ""):
                lines.append(proc.stderr.readline().decode())  # "": the server died
            self.assertTrue(LISTENING.search(lines[-1]), lines)
            self.assertEqual(call("GET", "/health"), (200, {"status": "ok"}))
            status, r = call("POST", "/v1/chat/completions",
                             {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2})
            self.assertEqual(status, 200, r)
        finally:
            proc.kill()
            proc.wait(30)
            proc.stderr.close()


class Cli(unittest.TestCase):
    def test_usage(self):
        self.assertIn("usage: moe serve", moe("serve", "-h").stdout)
        for args, needle in [(["--definitely-not-a-flag"], "unknown flag"), (["--port", "70000"], "outside"),
                             (["--api-key", ""], "--api-key"), (["--parallel", "0"], "outside")]:
            p = moe("serve", "-m", MODEL, *args, check=False)
            self.assertEqual(p.returncode, 2, p.stderr)
            self.assertEqual(len(p.stderr.strip().splitlines()), 1, p.stderr)
            self.assertIn(needle, p.stderr)

    @unittest.skipUnless(os.path.exists(MODEL), "the default model is not built")
    def test_port_taken(self):
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", 0))
            s.listen(1)
            p = moe("serve", "-m", MODEL, "--port", s.getsockname()[1], check=False, timeout=60)
        finally:
            s.close()
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertIn("cannot listen on 127.0.0.1", p.stderr)
        self.assertEqual(len(p.stderr.strip().splitlines()), 1, p.stderr)


if __name__ == "__main__":
    unittest.main()
