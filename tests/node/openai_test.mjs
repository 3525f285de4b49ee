// openai_test.mjs - moe serve through the official `openai` package: models, chat (whole and
// streamed, with usage; with logprobs), completions, and the errors the SDK raises for 400 and 401.
// Run by run_openai_test.py, which starts the server and passes MOE_BASE_URL, MOE_API_KEY and
// MOE_EXPECT (the greedy reply `moe run --chat` gives) in the environment.
import assert from 'node:assert/strict';
import OpenAI from 'openai';

const baseURL = process.env.MOE_BASE_URL, apiKey = process.env.MOE_API_KEY;
const expect = JSON.parse(process.env.MOE_EXPECT);
const client = new OpenAI({ baseURL, apiKey, maxRetries: 0, timeout: 120000 });
let checks = 0;
const check = (what, fn) => fn().then(() => { checks++; console.log('ok', what); });

await check('models.list', async () => {
  const models = await client.models.list();
  const ids = [];
  for await (const m of models) ids.push(m.id);
  assert.deepEqual(ids, ['default.moe']);
});

const request = {
  model: 'default.moe',
  messages: [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'Tell me a story about a dog.' }],
  temperature: 0,
  max_tokens: expect.max_tokens,
};

await check('chat.completions.create', async () => {
  const r = await client.chat.completions.create(request);
  assert.equal(r.object, 'chat.completion');
  assert.equal(r.choices[0].message.role, 'assistant');
  assert.equal(r.choices[0].message.content, expect.text);
  assert.equal(r.usage.completion_tokens, expect.n);
  assert.equal(r.usage.total_tokens, r.usage.prompt_tokens + r.usage.completion_tokens);
});

await check('chat.completions.create stream', async () => {
  const stream = await client.chat.completions.create({ ...request, stream: true, stream_options: { include_usage: true } });
  let text = '', finish = null, usage = null, chunks = 0;
  for await (const chunk of stream) {
    chunks++;
    assert.equal(chunk.object, 'chat.completion.chunk');
    if (chunk.usage) usage = chunk.usage;
    for (const c of chunk.choices) {
      text += c.delta.content ?? '';
      if (c.finish_reason) finish = c.finish_reason;
    }
  }
  assert.ok(chunks > 3, `${chunks} chunks`);
  assert.equal(text, expect.text);
  assert.equal(finish, expect.n === expect.max_tokens ? 'length' : 'stop');
  assert.equal(usage.completion_tokens, expect.n);
});

await check('chat.completions.create with logprobs', async () => {
  const r = await client.chat.completions.create({ ...request, logprobs: true, top_logprobs: 2 });
  const content = r.choices[0].logprobs.content;
  assert.equal(content.length, expect.n);
  assert.equal(content.map((e) => Buffer.from(e.bytes).toString()).join(''), expect.text);
  for (const e of content) {
    assert.ok(e.logprob <= 0, `${e.logprob}`);
    assert.equal(e.top_logprobs.length, 2);
    assert.equal(e.top_logprobs[0].logprob, e.logprob); // greedy: the chosen token is the likeliest
    assert.ok(e.top_logprobs[1].logprob <= e.logprob);
  }
});

await check('completions.create with stop', async () => {
  const r = await client.completions.create({ model: 'default.moe', prompt: 'Once upon a time', max_tokens: 16,
                                              temperature: 0, stop: ['.'] });
  assert.equal(r.object, 'text_completion');
  assert.ok(!r.choices[0].text.includes('.'));
});

await check('400 names the field', async () => {
  await assert.rejects(client.chat.completions.create({ ...request, n: 2 }), (e) => {
    assert.ok(e instanceof OpenAI.BadRequestError, e.constructor.name);
    assert.equal(e.status, 400);
    assert.equal(e.param, 'n');
    return true;
  });
});

await check('401 with a wrong key', async () => {
  const wrong = new OpenAI({ baseURL, apiKey: apiKey + 'x', maxRetries: 0 });
  await assert.rejects(wrong.chat.completions.create(request), (e) => {
    assert.ok(e instanceof OpenAI.AuthenticationError, e.constructor.name);
    assert.equal(e.status, 401);
    return true;
  });
});

console.log(`all ${checks} checks passed`);
