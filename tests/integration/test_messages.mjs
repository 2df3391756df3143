// test_messages.mjs - Anthropic's Messages API (POST /v1/messages, /v1/messages/count_tokens)
// through the real @anthropic-ai/sdk against `tandem serve` on the embedded model
// (models/default, scripts/default-model.sh), with API keys configured:
//   - messages.create non-streamed, and streamed through the SDK's stream helper
//     (.finalMessage() reassembles the events): same greedy text, stop_reason, usage;
//   - a system prompt; stop_sequences -> stop_reason "stop_sequence"; max_tokens ->
//     "max_tokens"; count_tokens equals the prompt tokens a request reports;
//   - a tool round trip: tool_choice {type:"tool"} forces a tool_use block with an `input`
//     object, streamed or not; a tool_result sent back gets a text answer;
//   - the R1 template: thinking blocks before the text;
//   - errors as the SDK's own exceptions: BadRequestError (no max_tokens, an image block),
//     AuthenticationError (a wrong x-api-key), NotFoundError (an unknown model); x-api-key and
//     Authorization: Bearer are both accepted.
// Exits 77 when the @anthropic-ai/sdk package is missing.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { defaultModelEnv, startDaemon, tmpDir } from './daemon.mjs';

let Anthropic;
try {
  Anthropic = (await import('@anthropic-ai/sdk')).default;
} catch (e) {
  console.error(`SKIP: the @anthropic-ai/sdk npm package is not installed (cd tests && npm ci): ${e}`);
  process.exit(77);
}
const { BIN, MODEL_DIR } = defaultModelEnv();
const KEY = 'sk-messages-test';
const MODEL = 'claude-local';

const weatherTool = {
  name: 'get_weather',
  description: 'The current weather of a city',
  input_schema: {
    type: 'object',
    properties: { city: { type: 'string', maxLength: 16 } },
    required: ['city'],
    additionalProperties: false,
  },
};
const user = (content) => [{ role: 'user', content }];
const textOf = (m) => m.content.filter((b) => b.type === 'text').map((b) => b.text).join('');

function checkUsage(m, maxTokens) {
  assert.ok(Number.isInteger(m.usage.input_tokens) && m.usage.input_tokens >= 0);
  assert.ok(m.usage.output_tokens >= 1 && m.usage.output_tokens <= maxTokens);
  if (m.stop_reason === 'max_tokens') assert.equal(m.usage.output_tokens, maxTokens);
}
// prompt tokens of a request: uncached + read from the prefix cache
const promptTokens = (m) => m.usage.input_tokens + (m.usage.cache_read_input_tokens ?? 0);

async function startWithKey(extra = []) {
  const keys = path.join(tmpDir(), 'keys');
  fs.writeFileSync(keys, `${KEY}\n`, { mode: 0o600 });
  return startDaemon({ bin: BIN, model: MODEL_DIR, timeoutMs: 120000,
    args: ['--log.level=warn', `--model.served_names=${MODEL}`, `--server.api_key_file=${keys}`,
      ...extra] });
}

describe('Messages API, default model', () => {
  let d, client;
  before(async () => {
    d = await startWithKey();
    client = new Anthropic({ baseURL: d.base, apiKey: KEY, maxRetries: 0, timeout: 120000 });
  });
  after(async () => { if (d) assert.equal((await d.stop()).code, 0, d.log()); });

  test('non-streamed and streamed agree (greedy); system prompt; usage; count_tokens', async () => {
    const req = { model: MODEL, max_tokens: 24, temperature: 0, system: 'You are terse.',
      messages: user('Tell me about foxes.') };
    const a = await client.messages.create(req);
    assert.match(a.id, /^msg_/);
    assert.equal(a.type, 'message');
    assert.equal(a.role, 'assistant');
    assert.equal(typeof a.model, 'string');
    assert.ok(['end_turn', 'max_tokens'].includes(a.stop_reason), a.stop_reason);
    assert.equal(a.stop_sequence, null);
    assert.equal(a.content.length, 1);
    assert.equal(a.content[0].type, 'text');
    checkUsage(a, 24);

    const events = [];
    const stream = client.messages.stream(req);
    stream.on('streamEvent', (e) => events.push(e.type));
    const s = await stream.finalMessage();
    assert.equal(events[0], 'message_start');
    assert.equal(events.at(-1), 'message_stop');
    assert.ok(events.includes('content_block_start') && events.includes('content_block_stop'));
    assert.ok(events.includes('message_delta'));
    assert.match(s.id, /^msg_/);
    assert.equal(textOf(s), textOf(a));
    assert.equal(s.stop_reason, a.stop_reason);
    assert.equal(s.usage.output_tokens, a.usage.output_tokens);
    assert.equal(promptTokens(s), promptTokens(a));

    const n = await client.messages.countTokens({ model: MODEL, system: req.system,
      messages: req.messages });
    assert.equal(n.input_tokens, promptTokens(a));
    // the system prompt is part of the prompt
    const without = await client.messages.countTokens({ model: MODEL, messages: req.messages });
    assert.ok(without.input_tokens < n.input_tokens);
    // text blocks count the same as a string
    const blocks = await client.messages.countTokens({ model: MODEL,
      system: [{ type: 'text', text: req.system }],
      messages: user([{ type: 'text', text: 'Tell me about foxes.' }]) });
    assert.equal(blocks.input_tokens, n.input_tokens);
  });

  test('max_tokens -> stop_reason max_tokens', async () => {
    const m = await client.messages.create({ model: MODEL, max_tokens: 1,
      messages: user('Write a long story about the sea.') });
    assert.equal(m.stop_reason, 'max_tokens');
    assert.equal(m.usage.output_tokens, 1);
  });

  test('stop_sequences -> stop_reason stop_sequence, text cut before it', async () => {
    const req = { model: MODEL, max_tokens: 30, temperature: 0,
      messages: user('Describe a forest in three sentences.') };
    const full = textOf(await client.messages.create(req));
    const words = full.split(/\s+/).filter((w) => /^[A-Za-z]{3,}$/.test(w));
    if (words.length < 2) {
      console.error(`# no word to stop at in ${JSON.stringify(full)}`);
      return;
    }
    const stop = words[1];
    const cut = full.slice(0, full.indexOf(stop));
    for (const streamed of [false, true]) {
      const m = streamed
        ? await client.messages.stream({ ...req, stop_sequences: [stop] }).finalMessage()
        : await client.messages.create({ ...req, stop_sequences: [stop] });
      assert.equal(m.stop_reason, 'stop_sequence', `streamed ${streamed}`);
      assert.equal(m.stop_sequence, stop);
      assert.equal(textOf(m), cut);
    }
  });

  test('tool round trip: forced tool_use with an input object, then a text answer', async () => {
    const q = user('What is the weather in Paris?');
    const req = { model: MODEL, max_tokens: 120, tools: [weatherTool],
      tool_choice: { type: 'tool', name: 'get_weather' }, messages: q };
    for (const streamed of [false, true]) {
      const m = streamed ? await client.messages.stream(req).finalMessage()
        : await client.messages.create(req);
      assert.equal(m.stop_reason, 'tool_use', JSON.stringify(m));
      const uses = m.content.filter((b) => b.type === 'tool_use');
      assert.equal(uses.length, 1);
      assert.equal(uses[0].name, 'get_weather');
      assert.ok(typeof uses[0].id === 'string' && uses[0].id.length > 0);
      assert.equal(typeof uses[0].input, 'object');
      assert.equal(typeof uses[0].input.city, 'string');
      assert.ok([...uses[0].input.city].length <= 16, JSON.stringify(uses[0].input)); // characters, not UTF-16 units
      if (streamed) continue;
      const answer = await client.messages.create({ model: MODEL, max_tokens: 16,
        tools: [weatherTool], messages: [...q, { role: 'assistant', content: m.content },
          { role: 'user', content: [{ type: 'tool_result', tool_use_id: uses[0].id,
            content: 'Sunny, 21 degrees' }] }] });
      assert.ok(['end_turn', 'max_tokens', 'tool_use'].includes(answer.stop_reason));
      if (answer.stop_reason !== 'tool_use') {
        assert.ok(answer.content.length >= 1);
        assert.equal(answer.content[0].type, 'text');
      }
      // the tool result is part of the prompt
      const n = await client.messages.countTokens({ model: MODEL, tools: [weatherTool],
        messages: [...q, { role: 'assistant', content: m.content },
          { role: 'user', content: [{ type: 'tool_result', tool_use_id: uses[0].id,
            content: 'Sunny, 21 degrees' }] }] });
      assert.equal(n.input_tokens, promptTokens(answer));
    }
  });

  test('errors are the SDK exception types', async () => {
    await assert.rejects(client.messages.create({ model: MODEL, messages: user('hi') }),
      (e) => e instanceof Anthropic.BadRequestError && e.status === 400 &&
        e.error?.type === 'error' && e.error?.error?.type === 'invalid_request_error' &&
        /max_tokens/.test(e.message));
    await assert.rejects(client.messages.create({ model: MODEL, max_tokens: 5,
      messages: user([{ type: 'image', source: { type: 'base64', media_type: 'image/png',
        data: 'AA==' } }]) }),
    (e) => e instanceof Anthropic.BadRequestError && /image/.test(e.message));
    await assert.rejects(client.messages.create({ model: 'no-such-model', max_tokens: 5,
      messages: user('hi') }),
    (e) => e instanceof Anthropic.NotFoundError && e.error?.error?.type === 'not_found_error');
    await assert.rejects(client.messages.countTokens({ model: 'no-such-model',
      messages: user('hi') }), (e) => e instanceof Anthropic.NotFoundError);
    const wrong = new Anthropic({ baseURL: d.base, apiKey: 'sk-wrong', maxRetries: 0 });
    await assert.rejects(wrong.messages.create({ model: MODEL, max_tokens: 5, messages: user('hi') }),
      (e) => e instanceof Anthropic.AuthenticationError && e.status === 401 &&
        e.error?.error?.type === 'authentication_error');
    // Authorization: Bearer works too (the SDK's authToken)
    const bearer = new Anthropic({ baseURL: d.base, apiKey: null, authToken: KEY, maxRetries: 0 });
    const m = await bearer.messages.create({ model: MODEL, max_tokens: 2, messages: user('hi') });
    assert.equal(m.type, 'message');
    // and x-api-key on the OpenAI routes
    const r = await fetch(d.base + '/v1/models', { headers: { 'x-api-key': KEY } });
    assert.equal(r.status, 200);
  });

  test('a streaming request refused before it starts gets a plain error body', async () => {
    const r = await fetch(d.base + '/v1/messages', { method: 'POST',
      headers: { 'content-type': 'application/json', 'x-api-key': KEY,
        'anthropic-version': '2023-06-01' },
      body: JSON.stringify({ model: MODEL, max_tokens: 1 << 20, stream: true,
        messages: user('hi') }) });
    // refused before streaming starts: a plain Anthropic error body
    assert.equal(r.status, 400);
    const body = await r.json();
    assert.equal(body.type, 'error');
    assert.equal(body.error.type, 'invalid_request_error');
  });
});

describe('Messages API, R1 template: thinking blocks', () => {
  let d, client;
  before(async () => {
    d = await startWithKey(['--model.template=deepseek-r1']);
    client = new Anthropic({ baseURL: d.base, apiKey: KEY, maxRetries: 0, timeout: 120000 });
  });
  after(async () => { if (d) await d.stop(); });

  test('thinking before text, streamed and not, same greedy result', async () => {
    const req = { model: MODEL, max_tokens: 48, temperature: 0,
      thinking: { type: 'enabled', budget_tokens: 1024 }, messages: user('What is 2+2?') };
    const a = await client.messages.create(req);
    const s = await client.messages.stream(req).finalMessage();
    for (const m of [a, s]) {
      const kinds = m.content.map((b) => b.type);
      const firstText = kinds.indexOf('text');
      const lastThinking = kinds.lastIndexOf('thinking');
      if (firstText >= 0 && lastThinking >= 0) assert.ok(lastThinking < firstText, kinds.join());
      for (const b of m.content) {
        if (b.type === 'thinking') {
          assert.equal(typeof b.thinking, 'string');
          assert.equal(b.signature, '');
        }
        assert.ok(!/<\/?think>/.test(b.text ?? b.thinking ?? ''), JSON.stringify(b));
      }
    }
    assert.deepEqual(s.content, a.content);
    assert.equal(s.stop_reason, a.stop_reason);
  });
});
