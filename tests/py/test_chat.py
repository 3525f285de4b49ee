"""moe chat through a real pseudo-terminal over three turns on the default model (converted at build
time), and moe run --chat. Checks that every turn's prompt is the full rendering of the conversation
(moe template), that turns 2 and 3 evaluate only the tokens after what the cache already holds, and
that each reply is exactly what a from-scratch greedy evaluation of that full prompt produces."""

import json
import os
import platform
import pty
import re
import select
import subprocess
import time
import unittest

import moetest
from moetest import moe, workdir

MODEL = os.path.join(os.path.dirname(moetest.BIN), "models", "default.moe")
# ChatML with the BOS text first: the stories model has no template of its own
TEMPLATE = ("{{ bos_token }}{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n"
            "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
STATS = re.compile(r"\[prompt (\d+) tokens?: (\d+) evaluated in [0-9.]+ s, (\d+) reused from the cache; (\d+) generated")
N_PREDICT = "12"


def read_until(fd, pattern, timeout=300):
    buf = b""
    end = time.time() + timeout
    while time.time() < end:
        r, _, _ = select.select([fd], [], [], 1)
        if not r:
            continue
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            break
        if not chunk:
            break
        buf += chunk
        if re.search(pattern, buf):
            return buf
    raise AssertionError("timed out waiting for %r; got %r" % (pattern, buf[-500:]))


def waiting_in(pid):
    """The system call a sleeping process waits in (Linux: the first field of /proc/PID/syscall),
    None while it runs, "" where the kernel does not say."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            if f.read().rsplit(")", 1)[1].split()[0] != "S":
                return None
        with open("/proc/%d/syscall" % pid) as f:
            return f.read().split()[0]
    except (OSError, IndexError):
        return ""


# write()'s system call number, as /proc/PID/syscall names it
WRITE = {"x86_64": "1", "aarch64": "64"}.get(platform.machine())


def wait_until(pid, pred, timeout=60):
    end = time.time() + timeout
    while time.time() < end:
        call = waiting_in(pid)
        if call == "":  # not told: the prompts of these tests take milliseconds
            time.sleep(3)
            return ""
        if call is not None and pred(call):
            return call
        time.sleep(0.01)
    raise AssertionError("moe never reached the expected wait")


@unittest.skipUnless(os.path.exists(MODEL), "the default model is not built")
class Chat(unittest.TestCase):
    def setUp(self):
        self.work = workdir("chat")
        self.tmpl = os.path.join(self.work, "chatml.jinja")
        with open(self.tmpl, "w") as f:
            f.write(TEMPLATE)

    def from_scratch(self, messages, n_predict=N_PREDICT, tmpl=None):
        """The full prompt of a conversation, its token ids, and the greedy reply to it."""
        req = os.path.join(self.work, "req.json")
        with open(req, "w", encoding="utf-8") as f:
            json.dump({"messages": messages}, f, ensure_ascii=False)
        prompt = moe("template", "-m", MODEL, "--template", tmpl or self.tmpl, req).stdout
        path = os.path.join(self.work, "prompt.txt")
        with open(path, "w", encoding="utf-8") as f:
            f.write(prompt)
        ids = moe("tokenize", "-m", MODEL, "-f", path).stdout.split()
        out = moe("run", "-m", MODEL, "-f", path, "--no-bos", "--temp", "0", "-n", n_predict, "-t", "1").stdout
        self.assertTrue(out.startswith(prompt))
        return prompt, ids, out[len(prompt):-1]

    def test_three_turns_in_a_terminal(self):
        saved = os.path.join(self.work, "conv.json")
        pid, fd = pty.fork()
        if pid == 0:
            os.execv(moetest.BIN, [moetest.BIN, "chat", "-m", MODEL, "--template", self.tmpl, "--temp", "0",
                                   "-n", N_PREDICT, "-t", "1", "--system", "Tell a story."])
        stats = []
        try:
            read_until(fd, rb"> ")
            for text in ("Once upon a time", "The dog ran", "Then what?"):
                os.write(fd, text.encode() + b"\n")
                out = read_until(fd, rb"generated[^\]]*\]\r?\n> ")
                m = STATS.search(out.decode("utf-8", "replace"))
                self.assertIsNotNone(m, out)
                stats.append(tuple(int(x) for x in m.groups()))
            os.write(fd, ("/save %s\n" % saved).encode())
            read_until(fd, rb"saved 7 messages[^\n]*\n> ")
            os.write(fd, b"\x04")  # Ctrl-D ends the session
            _, status = os.waitpid(pid, 0)
            self.assertEqual(os.WEXITSTATUS(status), 0)
        finally:
            os.close(fd)
        with open(saved, encoding="utf-8") as f:
            conv = json.load(f)
        self.assertEqual([m["role"] for m in conv], ["system", "user", "assistant"] * 1 + ["user", "assistant"] * 2)
        prev_ids = None
        for turn, (n, evaluated, reused, generated) in enumerate(stats):
            upto = 2 + 2 * turn  # system + the user message of this turn
            prompt, ids, reply = self.from_scratch(conv[:upto])
            self.assertEqual(n, len(ids), "turn %d: the prompt is the full rendering" % (turn + 1))
            self.assertEqual(evaluated + reused, n)
            if turn == 0:
                self.assertEqual(reused, 0)
            else:  # only the new tokens: at least the previous prompt stays cached
                common = 0
                while common < min(len(ids), len(prev_ids)) and ids[common] == prev_ids[common]:
                    common += 1
                self.assertGreater(common, 0)
                self.assertGreaterEqual(reused, common, "turn %d" % (turn + 1))
            self.assertEqual(conv[upto]["content"], reply, "turn %d: the reply of a from-scratch evaluation" % (turn + 1))
            prev_ids = ids

    def test_ctrl_c_stops_a_reply(self):
        """Ctrl-C typed in the terminal (the pty's line discipline sends SIGINT) stops the reply; the
        session goes on and the next turn is exactly a from-scratch greedy reply to the conversation,
        the stopped reply included. The terminal's output is held with Ctrl-S (XOFF) so the reply
        is certainly still running when Ctrl-C arrives: moe blocks writing its first piece."""
        saved = os.path.join(self.work, "conv_c.json")
        long_reply = "400"  # the stories model does not end a reply to this prompt within 400 tokens
        prompt, _, reply = self.from_scratch([{"role": "user", "content": "Once upon a time"}], long_reply)
        self.assertGreater(len(reply), 100)
        pid, fd = pty.fork()
        if pid == 0:
            os.execv(moetest.BIN, [moetest.BIN, "chat", "-m", MODEL, "--template", self.tmpl, "--temp", "0",
                                   "-n", long_reply, "-t", "1"])
        try:
            read_until(fd, rb"> ")
            reading = wait_until(pid, lambda call: True)  # the system call moe waits for input in
            os.write(fd, b"\x13")  # Ctrl-S: the terminal stops taking output
            os.write(fd, b"Once upon a time\n")
            # now it waits to write its first piece: blocked in write() itself, not merely asleep in some
            # other call on the way (a loaded machine showed that race)
            wait_until(pid, lambda call: call == WRITE if WRITE else call != reading)
            os.write(fd, b"\x03")  # Ctrl-C: SIGINT to moe (and the output flows again)
            out = read_until(fd, rb"generated[^\]]*\]\r?\n> ").decode("utf-8", "replace")
            m = STATS.search(out)
            self.assertIsNotNone(m, out)
            self.assertIn("; stopped]", out)
            self.assertLess(int(m.group(4)), 400)
            os.write(fd, b"The dog ran\n")
            out = read_until(fd, rb"generated[^\]]*\]\r?\n> ").decode("utf-8", "replace")
            self.assertNotIn("stopped", out)
            os.write(fd, ("/save %s\n" % saved).encode())
            read_until(fd, rb"saved 4 messages[^\n]*\n> ")
            os.write(fd, b"\x04")
            _, status = os.waitpid(pid, 0)
            self.assertEqual(os.WEXITSTATUS(status), 0)
        finally:
            os.close(fd)
        with open(saved, encoding="utf-8") as f:
            conv = json.load(f)
        self.assertTrue(reply.startswith(conv[1]["content"]), "the stopped reply is a prefix of the full one")
        self.assertLess(len(conv[1]["content"]), len(reply))
        _, _, second = self.from_scratch(conv[:3], long_reply)
        self.assertEqual(conv[3]["content"], second)

    def converse_in_pty(self, tmpl, *flags):
        """One turn through a pseudo-terminal; (what the terminal showed of the reply, the saved reply)."""
        saved = os.path.join(self.work, "conv_t.json")
        pid, fd = pty.fork()
        if pid == 0:
            os.execv(moetest.BIN, [moetest.BIN, "chat", "-m", MODEL, "--template", tmpl, "--temp", "0",
                                   "-n", N_PREDICT, "-t", "1"] + list(flags))
        try:
            read_until(fd, rb"> ")
            os.write(fd, b"Once upon a time\n")
            out = read_until(fd, rb"generated[^\]]*\]\r?\n> ")
            os.write(fd, ("/save %s\n" % saved).encode())
            read_until(fd, rb"saved 2 messages[^\n]*\n> ")
            os.write(fd, b"\x04")
            os.waitpid(pid, 0)
        finally:
            os.close(fd)
        shown = out.split(b"Once upon a time\r\n", 1)[1].split(b"[prompt", 1)[0]
        with open(saved, encoding="utf-8") as f:
            return shown.decode("utf-8").replace("\r\n", "\n"), json.load(f)[1]["content"]

    def test_reasoning_dimmed_or_hidden(self):
        """A generation prompt that opens <think> (as DeepSeek-R1's does) makes the whole reply
        reasoning: a terminal shows it dimmed (SGR 2 ... SGR 0), --hide-think shows none of it,
        a pipe gets it plain; the conversation keeps it in every case. (Where a reply closes its
        reasoning, cut at every place, is tests/unit/test_think.c.)"""
        think = os.path.join(self.work, "think.jinja")
        with open(think, "w") as f:
            f.write(TEMPLATE + "<think>\n")
        _, _, reply = self.from_scratch([{"role": "user", "content": "Once upon a time"}], tmpl=think)
        self.assertTrue(reply.strip())
        shown, kept = self.converse_in_pty(think)
        self.assertEqual(kept, reply)
        self.assertTrue(shown.startswith("\x1b[2m"), repr(shown))
        self.assertEqual(re.sub("\x1b\\[[02]m", "", shown), reply + "\n")
        shown, kept = self.converse_in_pty(think, "--hide-think")
        self.assertEqual(kept, reply)
        self.assertEqual(shown, "\n")
        # no reasoning: nothing dimmed
        shown, kept = self.converse_in_pty(self.tmpl)
        self.assertNotIn("\x1b", shown)
        self.assertEqual(shown, kept + "\n")
        out, _ = self.chat_pipe(["Once upon a time"], "-n", N_PREDICT)
        self.assertEqual(out, kept + "\n")
        # a pipe is not a terminal: the reasoning comes plain
        q = subprocess.run([moetest.BIN, "chat", "-m", MODEL, "--template", think, "--temp", "0", "-n", N_PREDICT,
                            "-t", "1"], input=b"Once upon a time\n", stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=600)
        self.assertEqual(q.stdout.decode(), reply + "\n")

    def test_without_a_terminal(self):
        q = subprocess.run([moetest.BIN, "chat", "-m", MODEL, "--template", self.tmpl, "--temp", "0", "-n", "5",
                            "-t", "1"], input=b"Hello\n/reset\nHello\n", stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=600)
        self.assertEqual(q.returncode, 0, q.stderr)
        lines = q.stdout.decode().split("\n")
        self.assertEqual(len(lines), 3)  # two replies, one line each
        self.assertEqual(lines[0], lines[1])  # after /reset the same message gets the same reply
        self.assertIn("conversation reset", q.stderr.decode())

    def chat_pipe(self, lines, *flags):
        q = subprocess.run([moetest.BIN, "chat", "-m", MODEL, "--template", self.tmpl, "--temp", "0", "-t", "1"]
                           + list(flags), input="".join(l + "\n" for l in lines).encode(), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=600)
        self.assertEqual(q.returncode, 0, q.stderr)
        return q.stdout.decode(), q.stderr.decode()

    def test_context_shift_between_turns(self):
        """--context-shift: when a turn's prompt and its -n tokens would outgrow -c, the oldest turns
        go (the system prompt stays) and the prompt is re-rendered. Replayed here: after each shift
        the conversation is the previous one without its oldest turns, and every reply is exactly
        the from-scratch greedy reply to the conversation the model saw (-n 12 always fits after the
        shift, so no reply is cut)."""
        saved = os.path.join(self.work, "conv_s.json")
        texts = ["Once upon a time", "The dog ran", "Then what?", "The cat sat", "And then?", "The end"]
        out, err = self.chat_pipe(texts + ["/save " + saved], "-n", N_PREDICT, "-c", "200", "--context-shift",
                                  "--system", "Tell a story.")
        replies = out.split("\n")[:-1]
        self.assertEqual(len(replies), len(texts))
        conv = [{"role": "system", "content": "Tell a story."}]
        events = re.findall(r"\[context shift: dropped the oldest (\d+) turns? \((\d+) messages\); the prompt is now "
                            r"(\d+) tokens?\]|" + STATS.pattern, err)
        shifts = 0
        for text, reply in zip(texts, replies):
            conv.append({"role": "user", "content": text})
            e = events.pop(0)
            if e[0]:  # a shift before this turn: the oldest turns after the system prompt are gone
                self.assertEqual(int(e[1]), 2 * int(e[0]))
                del conv[1:1 + int(e[1])]
                shifts += 1
                e = events.pop(0)
            prompt, ids, greedy = self.from_scratch(conv)
            self.assertEqual(int(e[3]), len(ids))
            self.assertLessEqual(len(ids) + int(N_PREDICT), 200, "the reply has its room")
            self.assertEqual(reply, greedy)
            conv.append({"role": "assistant", "content": reply})
        self.assertGreaterEqual(shifts, 2, err)
        self.assertEqual(events, [])
        with open(saved, encoding="utf-8") as f:
            self.assertEqual(json.load(f), conv)
        # without --context-shift the same conversation stops with one clear line instead
        out, err = self.chat_pipe(texts, "-n", N_PREDICT, "-c", "200", "--system", "Tell a story.")
        self.assertNotIn("context shift", err)
        self.assertIn("the context holds 200", err)
        self.assertIn("--context-shift", err)

    def test_context_shift_mid_reply(self):
        """A reply that fills the context: with --context-shift the oldest turn goes and the reply
        goes on after the re-rendered conversation, past the point where the context was full."""
        loaded = os.path.join(self.work, "conv_l.json")
        saved = os.path.join(self.work, "conv_m.json")
        old = [{"role": "system", "content": "Tell a story."}, {"role": "user", "content": "Hi"},
               {"role": "assistant", "content": "Hello."}]
        with open(loaded, "w") as f:
            json.dump(old, f)
        _, ids, _ = self.from_scratch(old + [{"role": "user", "content": "Once upon a time"}])
        # the prompt leaves the reply its room (half the context), so no shift before the reply
        self.assertLessEqual(len(ids), 150)
        n_full = 300 - len(ids)  # the tokens that fit before the context is full
        out, err = self.chat_pipe(["/load " + loaded, "Once upon a time", "/save " + saved], "-n", "200", "-c", "300",
                                  "--context-shift")
        self.assertRegex(err, r"\n\[context shift: dropped the oldest 1 turn \(2 messages\)")
        m = STATS.search(err)
        self.assertEqual(int(m.group(1)), len(ids))
        self.assertGreater(int(m.group(4)), n_full, "the reply went on after the shift")
        self.assertNotIn("context is full", err)
        with open(saved, encoding="utf-8") as f:
            conv = json.load(f)
        self.assertEqual([x["content"] for x in conv[:2]], ["Tell a story.", "Once upon a time"])
        self.assertEqual(conv[2]["content"], out[:-1])
        _, _, before = self.from_scratch(old + [{"role": "user", "content": "Once upon a time"}], str(n_full))
        self.assertTrue(out.startswith(before), "until the shift the reply is the greedy one")
        self.assertGreater(len(out), len(before) + 1)

    def test_run_chat(self):
        _, _, reply = self.from_scratch([{"role": "system", "content": "S"}, {"role": "user", "content": "Hi"}])
        out = moe("run", "-m", MODEL, "--chat", "--system", "S", "-p", "Hi", "--template", self.tmpl, "--temp", "0",
                  "-n", N_PREDICT, "-t", "1").stdout
        self.assertEqual(out, reply + "\n")
        p = moe("chat", "-m", MODEL, check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("--template", p.stderr)


if __name__ == "__main__":
    unittest.main()
