"""examples/generate.c, a program on moe.h alone, builds and runs: its greedy continuation of a
prompt is the text `moe run --temp 0` prints after the prompt, token for token."""

import os
import unittest

import moetest


class ExampleTest(unittest.TestCase):
    def test_generate_matches_moe_run(self):
        moetest.require_bin()
        example = os.environ.get("MOE_EXAMPLE")
        self.assertTrue(example and os.path.exists(example), "MOE_EXAMPLE (the moe_example binary) is not built")
        model = moetest.convert(os.path.join(moetest.ROOT, "models", "stories-moe"),
                                os.path.join(moetest.workdir("example"), "stories.moe"))
        for prompt in ("Once upon a time", "The cat"):
            got = moetest.run([example, model, prompt, "24"]).stdout
            want = moetest.moe("run", "-m", model, "-p", prompt, "-n", "24", "--temp", "0").stdout
            self.assertTrue(len(got.strip()) > 0, "the example printed nothing")
            self.assertEqual(prompt + got, want)

    def test_usage(self):
        p = moetest.run([os.environ["MOE_EXAMPLE"]], check=False)
        self.assertEqual(p.returncode, 2)
        self.assertIn("usage: moe_example", p.stderr)


if __name__ == "__main__":
    unittest.main()
