// test_agent_ready.mjs - what agent clients rely on, through the openai npm client against
// `tandem serve` on the embedded model (models/default, scripts/default-model.sh):
//   - json_schema through chat.completions.parse with a zod schema: compact JSON with bounded
//     strings fits in max_tokens, so it always finishes and the parsed object validates;
//   - json_object output has no whitespace between JSON tokens (structured.whitespace=compact);
//   - tool_choice "required" / named with bounded argument schemas: a tool call with JSON
//     arguments that validate; a forced call cut by max_tokens:
//     finish_reason "length" with no model markers anywhere, streamed or not;
//   - logit_bias pushing every special token up: no marker text in content (chat) or text
//     (completions);
//   - logprobs describe every token, markers included (api.md): a forced call's first token is
//     <｜tool▁calls▁begin｜>;
//   - R1 template: no marker in content or reasoning_content, json_schema closes <think> first;
//   - an unknown `model` is the SDK's NotFoundError with code model_not_found; served names
//     (model.served_names) are listed by /v1/models and accepted; an absent `model` is accepted.
// Random seeds are printed. Exits 77 when the openai or zod package is missing.
import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { defaultModelEnv, postJSON, startDaemon } from './daemon.mjs';

let OpenAI, zodResponseFormat, z;
try {
  OpenAI = (await import('openai')).default;
  ({ zodResponseFormat } = await import('openai/helpers/zod'));
  ({ z } = await import('zod'));
} catch (e) {
  console.error(`SKIP: the openai / zod npm packages are not installed (cd tests && npm ci): ${e}`);
  process.exit(77);
}
const { BIN, MODEL_DIR } = defaultModelEnv();

let seed = (Date.now() ^ (process.pid << 8)) >>> 0;
console.error(`# seed ${seed}`);
const nextSeed = () => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0);

// Text of the model's markers: DeepSeek's <｜...｜> tokens and the think tags.
const MARKER = /<｜|｜>|<\/?think>|▁/;
const noMarkers = (s, what) => assert.ok(!MARKER.test(s ?? ''), `${what} leaks a marker: ${s}`);

// JSON whitespace outside strings
function wsOutsideStrings(s) {
  let inStr = false, esc = false, n = 0;
  for (const ch of s) {
    if (inStr) {
      if (esc) esc = false;
      else if (ch === '\\') esc = true;
      else if (ch === '"') inStr = false;
    } else if (ch === '"') inStr = true;
    else if (' \n\r\t'.includes(ch)) n++;
  }
  return n;
}

const weatherTool = {
  type: 'function',
  function: {
    name: 'get_weather', description: 'Weather for a city',
    parameters: {
      type: 'object', properties: { city: { type: 'string', maxLength: 12 } },
      required: ['city'], additionalProperties: false,
    },
  },
};
// bounded arguments: a forced call always fits max_tokens (an open `{type: 'object'}` may not)
const timeTool = {
  type: 'function',
  function: {
    name: 'get_time',
    parameters: {
      type: 'object', properties: { tz: { type: 'string', maxLength: 8 } },
      additionalProperties: false,
    },
  },
};

describe('agent-ready API on the embedded model', () => {
  let d, client, name;
  before(async () => {
    name = path.basename(MODEL_DIR);
    d = await startDaemon({ bin: BIN, model: MODEL_DIR, timeoutMs: 120000,
      args: ['--log.level=warn', `--model.served_names=${name}, alias-b`] });
    client = new OpenAI({ baseURL: d.base + '/v1', apiKey: 'none', maxRetries: 0 });
  });
  after(async () => { if (d) await d.stop(); });

  test('json_schema via parse() with zod: always finishes, parses and validates', async () => {
    const Answer = z.object({
      answer: z.number(),
      unit: z.string().max(6),
      ok: z.boolean(),
      tags: z.array(z.enum(['a', 'b', 'c'])).max(3),
    });
    for (let i = 0; i < 4; i++) {
      const s = nextSeed();
      const r = await client.chat.completions.parse({
        model: name, seed: s, temperature: 1, max_tokens: 400,
        messages: [{ role: 'user', content: 'How far is the moon? Answer in JSON.' }],
        response_format: zodResponseFormat(Answer, 'answer'),
      });
      const c = r.choices[0];
      assert.equal(c.finish_reason, 'stop', `seed ${s}: ${c.message.content}`);
      assert.ok(c.message.parsed, `seed ${s}`);
      Answer.parse(c.message.parsed);
      assert.equal(wsOutsideStrings(c.message.content), 0, c.message.content);
      noMarkers(c.message.content, 'content');
    }
  });

  test('json_object: compact (no whitespace between JSON tokens)', async () => {
    for (const stream of [false, true]) {
      const s = nextSeed();
      const req = { model: name, seed: s, max_tokens: 60, response_format: { type: 'json_object' },
        messages: [{ role: 'user', content: 'Give me a JSON object.' }] };
      let text = '', finish;
      if (stream) {
        for await (const ch of await client.chat.completions.create({ ...req, stream: true })) {
          text += ch.choices[0]?.delta?.content ?? '';
          finish = ch.choices[0]?.finish_reason ?? finish;
        }
      } else {
        const r = await client.chat.completions.create(req);
        text = r.choices[0].message.content;
        finish = r.choices[0].finish_reason;
      }
      assert.equal(wsOutsideStrings(text), 0, `seed ${s}: ${text}`);
      assert.ok(text.startsWith('{'), `seed ${s}: ${text}`);
      if (finish === 'stop') assert.equal(typeof JSON.parse(text), 'object');
      noMarkers(text, 'content');
    }
  });

  test('tool_choice required / named: a call with JSON arguments', async () => {
    for (const tool_choice of ['required', { type: 'function', function: { name: 'get_weather' } }]) {
      const s = nextSeed();
      const r = await client.chat.completions.create({
        model: name, seed: s, max_tokens: 300, tools: [weatherTool, timeTool], tool_choice,
        messages: [{ role: 'user', content: 'Weather in Paris?' }],
      });
      const c = r.choices[0];
      assert.equal(c.finish_reason, 'tool_calls', `seed ${s}: ${JSON.stringify(c.message)}`);
      assert.equal(c.message.tool_calls.length, 1);
      const call = c.message.tool_calls[0].function;
      if (typeof tool_choice === 'object') assert.equal(call.name, 'get_weather');
      const args = JSON.parse(call.arguments);
      assert.equal(typeof args, 'object');
      // maxLength counts characters (code points, as JSON Schema does), not UTF-16 units
      const chars = (v) => [...(v ?? '')].length;
      if (call.name === 'get_weather') assert.ok(chars(args.city) <= 12, `seed ${s}: ${call.arguments}`);
      else {
        assert.ok(Object.keys(args).every((k) => k === 'tz') && chars(args.tz) <= 8,
          `seed ${s}: ${call.arguments}`);
      }
      assert.equal(wsOutsideStrings(call.arguments), 0, call.arguments);
      noMarkers(c.message.content, 'content');
    }
  });

  test('a forced call cut by max_tokens: finish_reason length, no markers, streamed or not', async () => {
    for (let max_tokens = 1; max_tokens <= 13; max_tokens += 3) {
      const s = nextSeed();
      const req = { model: name, seed: s, max_tokens, tools: [weatherTool], tool_choice: 'required',
        messages: [{ role: 'user', content: 'Weather in Paris?' }] };
      const r = await client.chat.completions.create(req);
      const c = r.choices[0];
      assert.equal(c.finish_reason, 'length', `seed ${s} max_tokens ${max_tokens}`);
      assert.ok(!c.message.tool_calls, JSON.stringify(c.message));
      noMarkers(c.message.content, 'content');
      let text = '', finish, calls = 0;
      for await (const ch of await client.chat.completions.create({ ...req, stream: true })) {
        const delta = ch.choices[0]?.delta ?? {};
        text += delta.content ?? '';
        calls += (delta.tool_calls ?? []).length;
        finish = ch.choices[0]?.finish_reason ?? finish;
      }
      assert.equal(finish, 'length');
      assert.equal(calls, 0);
      noMarkers(text, 'streamed content');
      assert.equal(text, c.message.content ?? '');
    }
  });

  test('logprobs describe every token: a forced call starts with the marker token', async () => {
    const s = nextSeed();
    const r = await client.chat.completions.create({
      model: name, seed: s, max_tokens: 300, tools: [weatherTool], tool_choice: 'required',
      logprobs: true, messages: [{ role: 'user', content: 'Weather in Paris?' }],
    });
    const c = r.choices[0];
    assert.equal(c.finish_reason, 'tool_calls', `seed ${s}`);
    noMarkers(c.message.content, 'content');
    const toks = c.logprobs.content.map((e) => e.token);
    assert.equal(toks[0], '<｜tool▁calls▁begin｜>', `seed ${s}: ${toks.slice(0, 4)}`);
    assert.equal(toks[1], '<｜tool▁call▁begin｜>');
  });

  test('special tokens pushed by logit_bias never reach a client', async () => {
    const bias = {};
    for (let id = 2; id <= 16; id++) bias[id] = 100; // every added token but BOS/EOS
    const s = nextSeed();
    const chat = await client.chat.completions.create({
      model: name, seed: s, max_tokens: 12, logit_bias: bias, ignore_eos: true,
      messages: [{ role: 'user', content: 'hi' }],
    });
    noMarkers(chat.choices[0].message.content, 'chat content');
    let text = '';
    for await (const ch of await client.chat.completions.create({
      model: name, seed: s, max_tokens: 12, logit_bias: bias, ignore_eos: true, stream: true,
      messages: [{ role: 'user', content: 'hi' }] }))
      text += ch.choices[0]?.delta?.content ?? '';
    noMarkers(text, 'streamed chat content');
    const cmpl = await client.completions.create({
      model: name, seed: s, max_tokens: 12, logit_bias: bias, prompt: 'Once upon a time',
    });
    noMarkers(cmpl.choices[0].text, 'completion text');
  });

  test('model: unknown is NotFoundError model_not_found; served names and absent accepted', async () => {
    await assert.rejects(
      client.chat.completions.create({ model: 'no-such-model', messages: [{ role: 'user', content: 'x' }] }),
      (e) => e instanceof OpenAI.NotFoundError && e.status === 404 && e.code === 'model_not_found' &&
        e.error?.type === 'invalid_request_error' && e.param === 'model');
    await assert.rejects(client.completions.create({ model: 'gpt-4o', prompt: 'x', max_tokens: 1 }),
      (e) => e instanceof OpenAI.NotFoundError && e.code === 'model_not_found');
    const models = await client.models.list();
    assert.deepEqual(models.data.map((m) => m.id), [name, 'alias-b']);
    const r = await client.chat.completions.create({ model: 'alias-b', max_tokens: 2,
      messages: [{ role: 'user', content: 'x' }] });
    assert.equal(r.choices.length, 1);
    const bare = await postJSON(d.base, '/v1/chat/completions',
      { messages: [{ role: 'user', content: 'x' }], max_tokens: 2 });
    assert.equal(bare.status, 200);
  });
});

describe('R1 template on the embedded model: reasoning_content', () => {
  let d, client;
  before(async () => {
    d = await startDaemon({ bin: BIN, model: MODEL_DIR, timeoutMs: 120000,
      args: ['--log.level=warn', '--model.template=deepseek-r1'] });
    client = new OpenAI({ baseURL: d.base + '/v1', apiKey: 'none', maxRetries: 0 });
  });
  after(async () => { if (d) await d.stop(); });

  test('special tokens pushed by logit_bias reach neither content nor reasoning_content', async () => {
    const bias = {};
    for (let id = 2; id <= 16; id++) bias[id] = 100;
    for (const tools of [undefined, [weatherTool]]) {
      const s = nextSeed();
      const req = { seed: s, max_tokens: 16, logit_bias: bias, ignore_eos: true, tools,
        messages: [{ role: 'user', content: 'hi' }] };
      const r = await client.chat.completions.create(req);
      noMarkers(r.choices[0].message.content, `seed ${s} content`);
      noMarkers(r.choices[0].message.reasoning_content, `seed ${s} reasoning_content`);
      let content = '', reasoning = '';
      for await (const ch of await client.chat.completions.create({ ...req, stream: true })) {
        content += ch.choices[0]?.delta?.content ?? '';
        reasoning += ch.choices[0]?.delta?.reasoning_content ?? '';
      }
      noMarkers(content, `seed ${s} streamed content`);
      noMarkers(reasoning, `seed ${s} streamed reasoning_content`);
    }
  });

  test('json_schema under R1: the answer closes the think block first, compact JSON', async () => {
    const s = nextSeed();
    const r = await client.chat.completions.create({
      seed: s, max_tokens: 200, messages: [{ role: 'user', content: 'JSON please' }],
      response_format: { type: 'json_schema', json_schema: { name: 'x', strict: true, schema: {
        type: 'object', properties: { a: { type: 'integer' }, b: { type: 'string', maxLength: 5 } },
        required: ['a', 'b'], additionalProperties: false } } },
    });
    const c = r.choices[0];
    assert.equal(c.finish_reason, 'stop', `seed ${s}: ${c.message.content}`);
    const v = JSON.parse(c.message.content);
    assert.ok(Number.isInteger(v.a) && typeof v.b === 'string' && [...v.b].length <= 5);
    assert.equal(wsOutsideStrings(c.message.content), 0);
    noMarkers(c.message.reasoning_content, 'reasoning_content');
  });
});
