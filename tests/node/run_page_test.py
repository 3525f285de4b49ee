"""Runs page_test.mjs (playwright-core driving Debian's chromium, headless) against moe serve's
built-in chat page on the default model. Exits 77 (ctest SKIP, never a pass) when node, chromium or
the playwright-core package is missing: .ci/run installs chromium with apt-get and the package with
`npm install` in this folder. The screenshot is kept in the build folder (testwork/serve_page)."""

import os
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
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not node:
        print("SKIP: node is not installed")
        return SKIP
    if not chromium:
        print("SKIP: chromium is not installed (apt-get install chromium)")
        return SKIP
    if not os.path.exists(os.path.join(HERE, "node_modules", "playwright-core", "package.json")):
        print("SKIP: the playwright-core package is not installed (cd tests/node && npm install)")
        return SKIP
    if not os.path.exists(MODEL):
        print("SKIP: the default model is not built")
        return SKIP
    work = moetest.workdir("serve_page")
    tmpl = os.path.join(work, "chatml.jinja")
    with open(tmpl, "w") as f:
        f.write(TEMPLATE)
    shot = os.path.join(work, "page.png")
    if os.path.exists(shot):
        os.unlink(shot)
    srv = Server("--template", tmpl, "--api-key", "page-key")
    try:
        env = dict(os.environ, MOE_BASE_URL="http://127.0.0.1:%d" % srv.port, MOE_API_KEY="page-key",
                   MOE_CHROMIUM=chromium, MOE_SCREENSHOT=shot)
        p = subprocess.run([node, os.path.join(HERE, "page_test.mjs")], env=env, cwd=HERE, timeout=300)
    finally:
        srv.stop()
        sys.stderr.write("".join(srv.lines))
    if p.returncode == 0 and not os.path.getsize(shot):
        print("the screenshot is empty")
        return 1
    # the page's request went through the server: its log line says so
    if p.returncode == 0 and not any(" POST /v1/chat/completions 200 " in x for x in srv.lines):
        print("the server logged no chat request from the page")
        return 1
    return p.returncode


if __name__ == "__main__":
    sys.exit(main())
