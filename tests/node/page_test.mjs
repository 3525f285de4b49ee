// page_test.mjs - the built-in chat page (GET /) in a real headless Chromium, driven by the
// official playwright-core package: load the page, give the API key, type a message, send it,
// watch the reply stream into its bubble (several growing lengths, not one final paint), and
// take a screenshot. Run by run_page_test.py, which starts the server and passes MOE_BASE_URL,
// MOE_API_KEY, MOE_CHROMIUM (the browser binary) and MOE_SCREENSHOT (where the picture goes).
import assert from 'node:assert/strict';
import { chromium } from 'playwright-core';

const browser = await chromium.launch({
  executablePath: process.env.MOE_CHROMIUM,
  headless: true,
  args: ['--no-sandbox'], // CI runs as root, where Chromium's sandbox refuses to start
});
try {
  const page = await browser.newPage({ viewport: { width: 900, height: 640 } });
  const problems = [];
  page.on('pageerror', (e) => problems.push(String(e)));
  await page.goto(process.env.MOE_BASE_URL + '/');
  assert.equal(await page.title(), 'moe');
  await page.fill('#key', process.env.MOE_API_KEY);
  await page.dispatchEvent('#key', 'change');
  await page.waitForFunction(() => document.getElementById('model').textContent === 'default.moe');
  await page.fill('#max', '200');
  // every length the reply's text takes: each append replaces the answer's text node, so the
  // added nodes tell each step even when the browser handles several events in one task
  await page.evaluate(() => {
    window.lengths = [];
    new MutationObserver((records) => {
      for (const r of records)
        if (r.target.matches && r.target.matches('.msg.assistant span'))
          for (const n of r.addedNodes) window.lengths.push(n.textContent.length);
    }).observe(document.getElementById('log'), { childList: true, subtree: true });
  });
  await page.fill('#text', 'Once upon a time');
  await page.press('#text', 'Enter');
  await page.waitForSelector('.msg.user');
  assert.equal(await page.textContent('.msg.user'), 'Once upon a time');
  // the reply is done when the send button is enabled again
  await page.waitForFunction(() => document.querySelector('.msg.assistant, .msg.error') &&
                                   !document.getElementById('send').disabled, null, { timeout: 120000 });
  assert.equal(await page.$('.msg.error'), null, 'the page shows an error: ' +
               (await page.textContent('.msg.error').catch(() => '')));
  const reply = await page.textContent('.msg.assistant span');
  const lengths = await page.evaluate(() => window.lengths);
  const distinct = [...new Set(lengths.filter((n) => n > 0))];
  console.log('reply of %d characters, painted at lengths %s', reply.length, JSON.stringify(distinct));
  assert.ok(reply.trim().length > 0, 'the reply is empty');
  assert.ok(distinct.length >= 2, 'the reply arrived in one piece, not streamed: ' + JSON.stringify(lengths));
  assert.equal(distinct[distinct.length - 1], reply.length);
  assert.deepEqual(problems, []);
  await page.screenshot({ path: process.env.MOE_SCREENSHOT });
  console.log('screenshot', process.env.MOE_SCREENSHOT);
  console.log('1 passed, 0 failed');
} finally {
  await browser.close();
}
