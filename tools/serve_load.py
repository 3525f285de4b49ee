#!/usr/bin/env python3
"""serve_load.py - well-behaved and hostile clients against `moe serve`, standard library only.

    python3 tools/serve_load.py --moe build/moe -m build/models/default.moe --clients 32 --seconds 60
    python3 tools/serve_load.py ... --hostile all        # the same while attackers run
    python3 tools/serve_load.py --port 8080 ...          # against a server already running
    python3 tools/serve_load.py --moe A/moe,B/moe -m BIG.moe --streams 1,2,4,8 --max-tokens 64 \
        --serve-args "--parallel 8 -t 2"                  # aggregate decode rate of N streams

Each well-behaved client sends greedy requests in turn (chat, completion, streamed and not) for
--seconds and checks every reply: status 200, well-formed JSON or server-sent events ending in
[DONE], the same text as the first reply to the same request (greedy decoding is deterministic),
usage counts. It prints the requests, failures, p50/p99 latency, completion tokens/s and the
server's resident memory before and after.

Hostile clients (--hostile KIND,KIND... or all), each a loop for the whole run:
  slowloris   sends a request's headers one byte per second
  slowbody    sends the headers, then the body one byte per second (slower than --timeout)
  disconnect  starts a long streamed reply and hangs up after the first event
  noread      starts a long streamed reply and never reads it (the server's socket buffer fills)
  garbage     pipelines binary garbage and malformed requests
  flood       holds 70 idle connections open (more than the server's 64 connection threads)
  oversized   sends 20 KB of headers, and a body declared larger than the server's 8 MB limit
"""
import argparse
import http.client
import json
import os
import random
import re
import socket
import statistics
import subprocess
import sys
import threading
import time

PROMPTS = ["Once upon a time", "The dog ran", "Lily had a red ball", "One day, Tom went", "The sun was"]
HOSTILE = ("slowloris", "slowbody", "disconnect", "noread", "garbage", "flood", "oversized")
TEMPLATE = ("{{ bos_token }}{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n"
            "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


class Server:
    """A `moe serve` process on a free loopback port; stderr drained by a thread (kept in .lines)."""

    def __init__(self, binary, model, extra=(), env=None):
        self.proc = subprocess.Popen([binary, "serve", "-m", model, "--port", "0"] + list(extra),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        self.lines, self.port, ready = [], None, threading.Event()

        def drain():
            for raw in self.proc.stderr:
                line = raw.decode("utf-8", "replace")
                self.lines.append(line)
                m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)
                if m:
                    self.port = int(m.group(1))
                    ready.set()
            ready.set()

        self.drain = threading.Thread(target=drain, daemon=True)
        self.drain.start()
        if not ready.wait(120) or self.port is None:
            self.stop()
            raise RuntimeError("the server did not start: %s" % "".join(self.lines[-5:]))

    def alive(self):
        return self.proc.poll() is None

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(30)
        self.drain.join(30)
        self.proc.stderr.close()


def rss_kb(pid):
    """Resident memory of a process in kB (Linux /proc), or None."""
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


# ---------------------------------------------------------------- well-behaved clients

def request_body(kind, prompt, max_tokens):
    body = {"temperature": 0, "max_tokens": max_tokens}
    if kind.startswith("chat"):
        body["messages"] = [{"role": "user", "content": prompt}]
    else:
        body["prompt"] = prompt
    if kind.endswith("stream"):
        body.update(stream=True, stream_options={"include_usage": True})
    return body


def one_request(port, kind, prompt, max_tokens, timeout):
    """(text, completion tokens) of one greedy request; raises AssertionError on a bad reply."""
    path = "/v1/chat/completions" if kind.startswith("chat") else "/v1/completions"
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("POST", path, json.dumps(request_body(kind, prompt, max_tokens)),
                  {"Content-Type": "application/json"})
        r = c.getresponse()
        data = r.read()
    finally:
        c.close()
    if r.status != 200:
        raise AssertionError("status %d: %r" % (r.status, data[:200]))
    chat = kind.startswith("chat")
    if not kind.endswith("stream"):
        o = json.loads(data)
        ch = o["choices"][0]
        text = ch["message"]["content"] if chat else ch["text"]
        if ch["finish_reason"] not in ("stop", "length"):
            raise AssertionError("finish_reason %r" % ch["finish_reason"])
        return text, o["usage"]["completion_tokens"]
    events = [e for e in data.decode("utf-8").split("\n\n") if e]
    if not events or events[-1] != "data: [DONE]" or not all(e.startswith("data: ") for e in events):
        raise AssertionError("a malformed event stream: %r" % data[-200:])
    text, tokens, finish = "", None, None
    for e in events[:-1]:
        o = json.loads(e[6:])
        for ch in o.get("choices", []):
            text += (ch.get("delta", {}).get("content") or "") if chat else (ch.get("text") or "")
            finish = ch.get("finish_reason") or finish
        if o.get("usage"):
            tokens = o["usage"]["completion_tokens"]
    if tokens is None or finish not in ("stop", "length"):
        raise AssertionError("no usage or finish_reason in the stream")
    return text, tokens


class Tally:
    """What the well-behaved clients saw, shared by their threads."""

    def __init__(self):
        self.lock = threading.Lock()
        self.latencies, self.tokens, self.failures, self.first = [], 0, [], {}


def good_client(port, i, stop_at, max_tokens, tally, timeout):
    kinds = ("chat", "completion_stream", "chat_stream", "completion")
    n = 0
    while time.time() < stop_at:
        kind, prompt = kinds[(i + n) % len(kinds)], PROMPTS[(i + n) % len(PROMPTS)]
        n += 1
        t0 = time.time()
        try:
            text, tokens = one_request(port, kind, prompt, max_tokens, timeout)
            with tally.lock:  # greedy: a request always gets the text its first copy got
                want = tally.first.setdefault((kind, prompt), text)
            if text != want:
                raise AssertionError("%s %r: %r, earlier %r" % (kind, prompt, text, want))
        except Exception as e:  # noqa: BLE001 - every failure is counted and reported
            with tally.lock:
                tally.failures.append("client %d %s: %s" % (i, kind, e))
            time.sleep(0.1)  # a failing server is not hammered
            continue
        with tally.lock:
            tally.latencies.append(time.time() - t0)
            tally.tokens += tokens


# ---------------------------------------------------------------- hostile clients

def connect(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def drain_reply(s, seconds=10):
    """Bytes until the server closes (or seconds pass)."""
    s.settimeout(seconds)
    got = b""
    try:
        while True:
            k = s.recv(65536)
            if not k:
                break
            got += k
    except OSError:
        pass
    return got


def status(reply):
    m = re.match(rb"HTTP/1\.1 (\d{3}) ", reply)
    return int(m.group(1)) if m else None


def slowly(s, data, stop_at):
    """Send data one byte per second; False once the server closed or the run ended."""
    for b in data:
        if time.time() >= stop_at:
            return False
        try:
            s.sendall(bytes([b]))
        except OSError:
            return False
        time.sleep(1.0)
    return True


def hostile_slowloris(port, stop_at, seen):
    head = b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"a" * 4096 + b"\r\n\r\n"
    while time.time() < stop_at:
        with connect(port) as s:
            slowly(s, head, stop_at)
            seen.append(status(drain_reply(s, 2)))


def hostile_slowbody(port, stop_at, seen):
    body = json.dumps({"prompt": "x" * 200, "max_tokens": 1}).encode()
    while time.time() < stop_at:
        with connect(port) as s:
            s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body))
            slowly(s, body, stop_at)
            seen.append(status(drain_reply(s, 2)))


def long_stream_request():
    body = json.dumps({"prompt": "Once upon a time", "max_tokens": 100000, "stream": True}).encode()
    return b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body) + body


def hostile_disconnect(port, stop_at, seen):
    while time.time() < stop_at:
        with connect(port) as s:
            s.sendall(long_stream_request())
            s.settimeout(30)
            try:
                seen.append(status(s.recv(4096)))
            except OSError:
                seen.append(None)
        time.sleep(0.2)


def hostile_noread(port, stop_at, seen, hold=10.0):
    while time.time() < stop_at:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window fills at once
        s.settimeout(10)
        try:
            s.connect(("127.0.0.1", port))
            s.sendall(long_stream_request())
            time.sleep(max(0.0, min(hold, stop_at - time.time())))  # never read: the server must give up on us
            seen.append("held")
        except OSError as e:
            seen.append(type(e).__name__)
        finally:
            s.close()


def hostile_garbage(port, stop_at, seen):
    rng = random.Random(7)
    junk = [b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGARBAGE\r\n\r\n", b"\x00\xff" * 300 + b"\r\n\r\n",
            b"POST /v1/completions HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
            b"POST /v1/completions HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            b"POST /v1/chat/completions HTTP/1.1\r\nContent-Length: 9\r\n\r\n{\"messag" * 3,
            b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n" * 20 + b"\r\n\r\n\r\n"]
    while time.time() < stop_at:
        data = rng.choice(junk) if rng.random() < 0.7 else bytes(rng.randrange(256) for _ in range(600))
        with connect(port) as s:
            try:
                s.sendall(data)
                seen.append(status(drain_reply(s, 5)))
            except OSError as e:
                seen.append(type(e).__name__)
        time.sleep(0.05)


def hostile_flood(port, stop_at, seen):
    while time.time() < stop_at:
        socks = []
        for _ in range(70):
            try:
                socks.append(connect(port))
            except OSError as e:
                seen.append(type(e).__name__)
        while time.time() < stop_at and socks:  # hold them, idle, until the server closes them
            time.sleep(0.5)
            for s in list(socks):
                try:
                    if s.recv(4096, socket.MSG_DONTWAIT) == b"":
                        socks.remove(s)
                        s.close()
                        seen.append("closed")
                except BlockingIOError:
                    pass
                except OSError:
                    socks.remove(s)
                    s.close()
        for s in socks:
            s.close()


def hostile_oversized(port, stop_at, seen):
    while time.time() < stop_at:
        with connect(port) as s:
            try:
                s.sendall(b"GET /health HTTP/1.1\r\n" + b"X-Big: " + b"b" * 20000 + b"\r\n\r\n")
                seen.append(status(drain_reply(s, 5)))
            except OSError as e:
                seen.append(type(e).__name__)
        with connect(port) as s:
            s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 9000000\r\n\r\n" + b"{" * 1000)
            seen.append(status(drain_reply(s, 5)))
        time.sleep(0.2)


# ---------------------------------------------------------------- the run

def run(port, pid, clients, seconds, max_tokens, hostile=(), timeout=120, warmup=True):
    """Run the clients; returns a dict of results (see report())."""
    if warmup:
        one_request(port, "completion", PROMPTS[0], max_tokens, timeout)
    rss0 = rss_kb(pid) if pid else None
    stop_at = time.time() + seconds
    seen = {k: [] for k in hostile}
    attackers = [threading.Thread(target=globals()["hostile_" + k], args=(port, stop_at, seen[k]), daemon=True)
                 for k in hostile]
    for t in attackers:
        t.start()
    if hostile:
        time.sleep(min(2.0, seconds / 4))  # let the attackers take their connections first
    tally = Tally()
    rss_series = []  # (seconds into the run, kB) every 5 s: growth after warm-up would be a leak

    def sample_rss():
        while time.time() < stop_at:
            rss_series.append((round(time.time() - t0), rss_kb(pid)))
            time.sleep(min(5.0, max(0.0, stop_at - time.time())))

    t0 = time.time()
    if pid:
        threading.Thread(target=sample_rss, daemon=True).start()
    good = [threading.Thread(target=good_client, args=(port, i, stop_at, max_tokens, tally, timeout))
            for i in range(clients)]
    for t in good:
        t.start()
    for t in good:
        t.join()
    wall = time.time() - t0
    for t in attackers:
        t.join(15)
    lat = sorted(tally.latencies)
    return {
        "clients": clients, "seconds": round(wall, 1), "requests": len(lat), "failed": len(tally.failures),
        "failures": tally.failures[:10], "tokens": tally.tokens, "tokens_per_s": round(tally.tokens / wall, 1),
        "p50_s": round(statistics.median(lat), 3) if lat else None,
        "p99_s": round(lat[min(len(lat) - 1, int(0.99 * len(lat)))], 3) if lat else None,
        "max_s": round(lat[-1], 3) if lat else None,
        "rss_kb_before": rss0, "rss_kb_after": rss_kb(pid) if pid else None, "rss_kb_every_5s": rss_series,
        "hostile": {k: summarize(v) for k, v in seen.items()},
    }


# ---------------------------------------------------------------- concurrent streams

def timed_stream(port, prompt, max_tokens, out, i):
    """One streamed greedy completion: (completion tokens, seconds to the first text, seconds in all)."""
    t0 = time.time()
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    body = {"prompt": prompt, "temperature": 0, "max_tokens": max_tokens, "stream": True,
            "stream_options": {"include_usage": True}}
    c.request("POST", "/v1/completions", json.dumps(body), {"Content-Type": "application/json"})
    r = c.getresponse()
    first, n = None, 0
    for line in r:
        if not line.startswith(b"data: {"):
            continue
        d = json.loads(line[6:])
        if first is None and d.get("choices"):  # the first event with text in it
            first = time.time() - t0
        if d.get("usage"):
            n = d["usage"]["completion_tokens"]
    c.close()
    total = time.time() - t0
    out[i] = (n, total if first is None else first, total)


def concurrently(port, n, max_tokens):
    """n streamed requests at once; (their results, wall seconds)."""
    out = [None] * n
    t0 = time.time()
    ts = [threading.Thread(target=timed_stream, args=(port, PROMPTS[i % len(PROMPTS)] + " %d" % i, max_tokens, out, i))
          for i in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return out, time.time() - t0


def streams(port, n, max_tokens):
    """n concurrent streamed requests: (aggregate tokens/s over the wall time, first-token times).
    The first-token time is that of n requests of one token sent at once (their prompts' prefill
    plus one step): a model whose tokens decode to no text (make_model.py's stub tokenizer)
    sends no event before its last."""
    out, wall = concurrently(port, n, max_tokens)
    if any(o is None or o[0] != max_tokens for o in out):
        raise RuntimeError("a stream ended early: %s" % out)
    first, _ = concurrently(port, n, 1)
    return sum(o[0] for o in out) / wall, [o[2] for o in first]


def streams_main(a, binaries, counts):
    """Each binary and stream count in turn, a.repeat times (alternating: a loaded host drifts);
    prints every run and the medians."""
    res = {}
    for rep in range(a.repeat):
        for n in counts:
            for b in binaries:
                srv = Server(b, a.model, a.serve_args.split())
                try:
                    timed_stream(srv.port, PROMPTS[0], 4, [None], 0)  # warm-up: pages in the weights
                    rate, firsts = streams(srv.port, n, a.max_tokens)
                finally:
                    srv.stop()
                res.setdefault((b, n), []).append((rate, max(firsts)))
                print("run %d %s streams=%d %.1f tok/s, first token %s s" % (
                    rep, b, n, rate, " ".join("%.2f" % f for f in firsts)), flush=True)
    for (b, n), v in res.items():
        print("%s streams=%d median %.1f tok/s (runs %s), slowest first token median %.2f s" % (
            b, n, statistics.median(r for r, _ in v), " ".join("%.1f" % r for r, _ in v),
            statistics.median(f for _, f in v)))


def summarize(outcomes):
    counts = {}
    for o in outcomes:
        counts[str(o)] = counts.get(str(o), 0) + 1
    return counts


def main():
    ap = argparse.ArgumentParser(description="well-behaved and hostile clients against moe serve")
    ap.add_argument("--moe", default="build/moe", help="the moe binary (starts a server)")
    ap.add_argument("-m", "--model", default="build/models/default.moe")
    ap.add_argument("--port", type=int, help="use a server already listening on this port")
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--hostile", default="", help="comma-separated kinds, or all")
    ap.add_argument("--serve-args", default="--parallel 4 --queue 64 -t 2 --timeout 5",
                    help="extra moe serve flags (default: %(default)s)")
    ap.add_argument("--json", action="store_true", help="print the result as JSON")
    ap.add_argument("--streams", help="instead: aggregate decode tokens/s of N concurrent streamed "
                    "completions of --max-tokens each, for each N of this list (e.g. 1,2,4,8); --moe may "
                    "list several binaries (comma-separated), run alternately")
    ap.add_argument("--repeat", type=int, default=3, help="--streams: runs per binary and count")
    a = ap.parse_args()
    if a.streams:
        streams_main(a, a.moe.split(","), [int(x) for x in a.streams.split(",")])
        return 0
    hostile = HOSTILE if a.hostile == "all" else tuple(k for k in a.hostile.split(",") if k)
    for k in hostile:
        if k not in HOSTILE:
            ap.error("unknown hostile kind %r (%s)" % (k, ", ".join(HOSTILE)))
    srv = None
    if a.port:
        port, pid = a.port, None
    else:
        tmpl = os.path.join(os.environ.get("TMPDIR", "/tmp"), "serve_load_chatml.jinja")
        with open(tmpl, "w") as f:
            f.write(TEMPLATE)
        srv = Server(a.moe, a.model, a.serve_args.split() + ["--template", tmpl])
        port, pid = srv.port, srv.proc.pid
    try:
        r = run(port, pid, a.clients, a.seconds, a.max_tokens, hostile)
        if srv:
            r["server_alive"] = srv.alive()
    finally:
        if srv:
            srv.stop()
    if a.json:
        print(json.dumps(r, indent=1))
    else:
        print("%d clients x %.0f s: %d requests, %d failed, p50 %s s, p99 %s s, max %s s, %.1f completion tokens/s"
              % (r["clients"], r["seconds"], r["requests"], r["failed"], r["p50_s"], r["p99_s"], r["max_s"],
                 r["tokens_per_s"]))
        print("server RSS: %s kB before, %s kB after; every 5 s: %s" % (
            r["rss_kb_before"], r["rss_kb_after"], " ".join(str(kb) for _, kb in r["rss_kb_every_5s"])))
        for k, v in r["hostile"].items():
            print("hostile %-10s %s" % (k, v))
        for f in r["failures"]:
            print("FAILED", f)
    return 1 if r["failed"] or (srv and not r.get("server_alive")) else 0


if __name__ == "__main__":
    sys.exit(main())
