"""Without ../shared a test that needs it is skipped with one line saying why (exit 77, which
ctest reports as skipped), never passed and never failed obscurely."""

import os
import subprocess
import sys
import unittest

import moetest

HERE = os.path.dirname(os.path.abspath(__file__))


def without_shared(args):
    env = dict(os.environ, MOE_SHARED=os.path.join(moetest.WORK, "no-such-shared"))
    return subprocess.run(args, cwd=HERE, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=600,
                          text=True)


class WithoutSharedTest(unittest.TestCase):
    def test_python_module_is_skipped(self):
        p = without_shared([sys.executable, "-m", "unittest", "test_golden"])
        self.assertEqual(p.returncode, moetest.SKIP, p.stderr)
        self.assertEqual(len(p.stderr.strip().splitlines()), 1, p.stderr)
        self.assertIn("SKIPPED: the shared ground truth is not at", p.stderr)

    def test_c_tests_are_skipped(self):
        build = os.path.dirname(moetest.BIN)
        for name in ("test_tokenizer", "test_gguf"):
            p = without_shared([os.path.join(build, name)])
            self.assertEqual(p.returncode, moetest.SKIP, "%s: %s" % (name, p.stderr[-500:]))
            self.assertIn("SKIPPED", p.stderr)


if __name__ == "__main__":
    unittest.main()
