"""Runs openai_test.mjs (the official `openai` npm package) against moe serve on the default model.
Exits 77 (ctest SKIP, never a pass) when node or the package is missing: .ci/run installs it with
`npm install` in this folder."""

import json
import os
import re
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "py"))

import moetest  # noqa: E402
from test_serve import MODEL, TEMPLATE, Server  # noqa: E402

SKIP = 77


def main():
    node = shutil.which("node")
    if not node:
        print("SKIP: node is not installed")
        return SKIP
    if not os.path.exists(os.path.join(HERE, "node_modules", "openai", "package.json")):
        print("SKIP: the openai package is not installed (cd tests/node && npm install)")
        return SKIP
    if not os.path.exists(MODEL):
        print("SKIP: the default model is not built")
        return SKIP
    with open(os.path.join(HERE, "node_modules", "openai", "package.json")) as f:
        print("openai %s, node %s" % (json.load(f)["version"], subprocess.run([node, "--version"], stdout=subprocess.PIPE,
                                                                              text=True).stdout.strip()), flush=True)
    work = moetest.workdir("serve_node")
    tmpl = os.path.join(work, "chatml.jinja")
    with open(tmpl, "w") as f:
        f.write(TEMPLATE)
    n = 24
    q = moetest.moe("run", "-m", MODEL, "--chat", "-p", "Tell me a story about a dog.", "--system", "Be brief.",
                    "--template", tmpl, "--temp", "0", "-n", n, "-t", "1")
    expect = {"text": q.stdout[:-1], "n": int(re.search(r"decode: (\d+) tokens", q.stderr).group(1)), "max_tokens": n}
    srv = Server("--template", tmpl, "--api-key", "test-key")
    try:
        env = dict(os.environ, MOE_BASE_URL="http://127.0.0.1:%d/v1" % srv.port, MOE_API_KEY="test-key",
                   MOE_EXPECT=json.dumps(expect))
        p = subprocess.run([node, os.path.join(HERE, "openai_test.mjs")], env=env, cwd=HERE, timeout=300)
        return p.returncode
    finally:
        srv.stop()
        sys.stderr.write("".join(srv.lines))


if __name__ == "__main__":
    sys.exit(main())
