// test_structured.mjs - tools, R1 reasoning and structured output (issue 9) through the openai
// npm client.
//   - real engine (`tandem serve`, tiny synthetic model with random weights, deepseek-v3
//     template): json_schema outputs for random schemas from a generator always parse and
//     validate once generation stops (constrained decoding), json_object mode, a forced tool call
//     round trip (tool_calls -> tool message -> final answer) non-streaming and streaming, the
//     SDK's stream helper accumulating the streamed deltas into the non-streamed message;
//   - fake engine (`tandem-fake serve`, whose output is the text after "ECHO:" in the prompt, up
//     to "|OHCE"), deepseek-r1 template: reasoning_content split and reasoning_format "none",
//     tool-call markup parsed in auto mode (two calls), the delta shape (name first, arguments
//     after, never merged), and the round trip with tool messages.
// Exits 77 when the openai package is missing. Env: TANDEM_BIN, TANDEM_FAKE_BIN.
import { spawnSync } from 'node:child_process';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { parseSSE, postJSON, startDaemon, tmpDir } from './daemon.mjs';

let OpenAI;
try {
  OpenAI = (await import('openai')).default;
} catch {
  console.error('SKIP: the openai npm package is not installed (cd tests && npm ci)');
  process.exit(77);
}
const BIN = process.env.TANDEM_BIN;
const FAKE = process.env.TANDEM_FAKE_BIN;
assert.ok(BIN && FAKE, 'TANDEM_BIN and TANDEM_FAKE_BIN must be set');

const model = path.join(tmpDir(), 'tiny');
{
  const r = spawnSync(BIN, ['convert', 'synth', '--preset', 'tiny', '--seed', '1', '--out', model],
    { encoding: 'utf8' });
  if (r.status !== 0) {
    console.error(`SKIP: cannot build the tiny model (tandem convert synth): ${r.stderr}`);
    process.exit(77);
  }
}

// ---- a random JSON-schema generator and a validator for the subset it produces ----

let rngState = (Date.now() ^ process.pid) >>> 0;
console.error(`# schema seed ${rngState}`);
function rnd() { // mulberry32
  rngState = (rngState + 0x6D2B79F5) >>> 0;
  let t = rngState;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
}
const pick = (a) => a[Math.floor(rnd() * a.length)];
const NAMES = ['id', 'name', 'ok', 'x', 'items', 'tags', 'value', 'kind', 'a_b', 'n2'];
const ENUMS = ['red', 'green', 1, 2.5, true, null, 'a "q"', 'ü', [1, 2], { k: 'v' }];

function genSchema(depth) {
  const leafs = [
    () => ({ type: 'integer' }), () => ({ type: 'number' }), () => ({ type: 'boolean' }),
    () => ({ type: 'null' }), () => ({ type: 'string' }), () => ({ type: ['integer', 'null'] }),
    () => ({ enum: Array.from({ length: 1 + Math.floor(rnd() * 3) }, () => pick(ENUMS)) }),
    () => ({ const: pick(ENUMS) }), () => ({}),
  ];
  const r = rnd();
  if (depth >= 3 || r < 0.4) {
    const s = pick(leafs)();
    if (s.enum) s.enum = [...new Map(s.enum.map((v) => [JSON.stringify(v), v])).values()];
    if (rnd() < 0.2) s.description = 'some text';
    return s;
  }
  if (r < 0.75) return genObject(depth);
  if (r < 0.9) {
    const min = Math.floor(rnd() * 2);
    return { type: 'array', items: genSchema(depth + 1), minItems: min,
      maxItems: min + Math.floor(rnd() * 3) };
  }
  return { anyOf: [genSchema(depth + 1), genSchema(depth + 1)] };
}

function genObject(depth) {
  const n = 1 + Math.floor(rnd() * 3);
  const props = {};
  for (let i = 0; i < n; i++) props[pick(NAMES)] = genSchema(depth + 1);
  const keys = Object.keys(props);
  const s = { type: 'object', properties: props, required: keys.filter(() => rnd() < 0.6) };
  if (rnd() < 0.5) s.additionalProperties = false;
  return s;
}

function validate(s, v, where = '#') {
  const fail = (why) => { throw new Error(`${where}: ${why} (value ${JSON.stringify(v)})`); };
  const typeOf = (x) => x === null ? 'null' : Array.isArray(x) ? 'array'
    : Number.isInteger(x) ? 'integer' : typeof x;
  if (s.anyOf) {
    const ok = s.anyOf.some((a) => { try { validate(a, v, where); return true; } catch { return false; } });
    if (!ok) fail('no anyOf alternative matches');
    return;
  }
  if ('const' in s && JSON.stringify(s.const) !== JSON.stringify(v)) fail('const');
  if (s.enum && !s.enum.some((e) => JSON.stringify(e) === JSON.stringify(v))) fail('enum');
  if (s.type) {
    const types = Array.isArray(s.type) ? s.type : [s.type];
    const t = typeOf(v);
    if (!types.some((x) => x === t || (x === 'number' && t === 'integer'))) fail(`type ${t}`);
  }
  if (typeOf(v) === 'object' && s.properties) {
    for (const k of s.required ?? []) if (!(k in v)) fail(`missing ${k}`);
    for (const [k, x] of Object.entries(v)) {
      if (k in s.properties) validate(s.properties[k], x, `${where}/${k}`);
      else if (s.additionalProperties === false) fail(`extra key ${k}`);
    }
  }
  if (Array.isArray(v) && s.items) {
    if (s.minItems !== undefined && v.length < s.minItems) fail('minItems');
    if (s.maxItems !== undefined && v.length > s.maxItems) fail('maxItems');
    v.forEach((x, i) => validate(s.items, x, `${where}/${i}`));
  }
}

// Token ids of the tiny byte-level BPE vocabulary: whitespace-only tokens (suppressed, so random
// weights do not spend the budget on the allowed padding) and tokens with '"' (favoured, so
// strings end) -- logit_bias only re-weights what the grammar allows.
function biasForJson() {
  const tj = JSON.parse(fs.readFileSync(path.join(model, 'tokenizer.json'), 'utf8'));
  const b2u = new Map();
  const bs = [];
  for (let i = 33; i <= 126; i++) bs.push(i);
  for (let i = 161; i <= 172; i++) bs.push(i);
  for (let i = 174; i <= 255; i++) bs.push(i);
  const cs = [...bs];
  let n = 0;
  for (let b = 0; b < 256; b++) if (!bs.includes(b)) { bs.push(b); cs.push(256 + n++); }
  bs.forEach((b, i) => b2u.set(String.fromCharCode(cs[i]), b));
  const bias = {};
  for (const [piece, id] of Object.entries(tj.model.vocab)) {
    const bytes = [...piece].map((c) => b2u.get(c));
    if (bytes.some((x) => x === undefined)) continue;
    const text = Buffer.from(bytes).toString('latin1');
    if (/^\s+$/.test(text)) bias[id] = -100;
    else if (text.includes('"')) bias[id] = 4;
  }
  return bias;
}

// ... plus the added tokens of the tool-call markup and </think>: the grammar allows a literal
// either as its added token or spelled out in bytes; random weights would often spell it.
function biasForTools() {
  const tj = JSON.parse(fs.readFileSync(path.join(model, 'tokenizer.json'), 'utf8'));
  const bias = biasForJson();
  for (const t of tj.added_tokens)
    if (t.content.includes('tool▁') || t.content === '</think>') bias[t.id] = 10;
  return bias;
}

async function pool(n, conc, fn) {
  const out = new Array(n);
  let next = 0;
  await Promise.all(Array.from({ length: conc }, async () => {
    while (next < n) { const i = next++; out[i] = await fn(i); }
  }));
  return out;
}

// ---- real engine: constrained decoding ----

describe('real engine: structured output and forced tool calls', () => {
  let d, client, bias;
  before(async () => {
    d = await startDaemon({ bin: BIN, model, timeoutMs: 120000, args: ['--model.name=tiny',
      '--model.template=deepseek-v3', '--log.level=warn', '--engine.max_running=16',
      '--engine.max_queued=512'] });
    client = new OpenAI({ baseURL: d.base + '/v1', apiKey: 'unused', maxRetries: 0, timeout: 120000 });
    bias = biasForJson();
  });
  after(async () => {
    const r = await d.stop();
    assert.equal(r.code, 0, d.log());
  });

  test('json_schema: random schemas always give valid JSON when generation stops', async () => {
    const N = 300;
    const res = await pool(N, 16, async (i) => {
      const schema = i % 5 === 0 ? genSchema(0) : genObject(0);
      const stream = i % 4 === 1;
      const req = { model: 'tiny', messages: [{ role: 'user', content: `case ${i}` }],
        max_tokens: 160, temperature: 1, seed: i, logit_bias: bias,
        response_format: { type: 'json_schema', json_schema: { name: 't', schema, strict: true } } };
      let text, finish;
      if (stream) {
        text = '';
        for await (const ch of await client.chat.completions.create({ ...req, stream: true })) {
          text += ch.choices[0]?.delta?.content ?? '';
          finish = ch.choices[0]?.finish_reason ?? finish;
        }
      } else {
        const a = await client.chat.completions.create(req);
        text = a.choices[0].message.content;
        finish = a.choices[0].finish_reason;
      }
      if (finish === 'stop') {
        let v;
        try { v = JSON.parse(text); } catch (e) {
          throw new Error(`case ${i}: not JSON (${e.message}): ${text}\nschema ${JSON.stringify(schema)}`);
        }
        try { validate(schema, v); } catch (e) {
          throw new Error(`case ${i}: ${e.message}\nschema ${JSON.stringify(schema)}\ntext ${text}`);
        }
      } else {
        assert.equal(finish, 'length', `case ${i}`);
      }
      return finish;
    });
    const stops = res.filter((f) => f === 'stop').length;
    console.error(`# json_schema: ${stops}/${N} complete, the rest cut by max_tokens`);
    assert.ok(stops >= N * 0.7, `only ${stops}/${N} outputs completed within max_tokens`);
  });

  test('json_object: any object; unsupported keywords are a 400 naming them', async () => {
    const res = await pool(40, 8, async (i) => {
      const a = await client.chat.completions.create({ model: 'tiny', max_tokens: 160, seed: 1000 + i,
        logit_bias: bias, messages: [{ role: 'user', content: 'json please' }],
        response_format: { type: 'json_object' } });
      if (a.choices[0].finish_reason !== 'stop') return 0;
      const v = JSON.parse(a.choices[0].message.content);
      assert.ok(v && typeof v === 'object' && !Array.isArray(v), a.choices[0].message.content);
      return 1;
    });
    assert.ok(res.reduce((x, y) => x + y, 0) >= 20);
    const r = await postJSON(d.base, '/v1/chat/completions', { messages: [{ role: 'user', content: 'x' }],
      response_format: { type: 'json_schema', json_schema: { name: 'n', schema: { type: 'string', pattern: 'a+' } } } });
    assert.equal(r.status, 400, r.text);
    assert.equal(r.json.error.param, 'response_format');
    assert.match(r.json.error.message, /pattern/);
  });

  const tools = [{ type: 'function', function: { name: 'get_weather', description: 'Weather in a city',
    parameters: { type: 'object', properties: { city: { type: 'string', enum: ['Paris', 'Rome', 'Oslo'] },
      unit: { enum: ['c', 'f'] }, days: { type: 'integer' } }, required: ['city', 'unit'],
    additionalProperties: false } } },
  { type: 'function', function: { name: 'get_time', parameters: { type: 'object', properties: {} } } }];

  test('forced tool call round trip, non-streaming and streaming agree', async () => {
    const messages = [{ role: 'user', content: 'What is the weather in Paris?' }];
    for (const [k, choice] of [[0, { type: 'function', function: { name: 'get_weather' } }], [1, 'required']]) {
      const req = { model: 'tiny', messages, tools, tool_choice: choice, max_tokens: 400,
        temperature: 1, seed: 42 + k, logit_bias: biasForTools() };
      const a = await client.chat.completions.create(req);
      const m = a.choices[0].message;
      assert.equal(a.choices[0].finish_reason, 'tool_calls', JSON.stringify(a));
      assert.equal(m.content, null);
      assert.equal(m.tool_calls.length, 1);
      const call = m.tool_calls[0];
      assert.match(call.id, /^call_[A-Za-z0-9]{24}$/);
      assert.equal(call.type, 'function');
      const tool = tools.find((t) => t.function.name === call.function.name);
      assert.ok(tool, call.function.name);
      if (k === 0) assert.equal(call.function.name, 'get_weather');
      validate(tool.function.parameters, JSON.parse(call.function.arguments));

      // the SDK's stream helper accumulates the deltas into the same message
      const st = client.chat.completions.stream(req);
      const fin = await st.finalChatCompletion();
      assert.equal(fin.choices[0].finish_reason, 'tool_calls');
      assert.deepEqual(fin.choices[0].message.tool_calls, m.tool_calls);
      assert.ok(!fin.choices[0].message.content);

      // the round trip: the call and its result go back, the model answers in text
      const follow = [...messages, m, { role: 'tool', tool_call_id: call.id, content: '{"temp": 21}' }];
      const b = await client.chat.completions.create({ model: 'tiny', messages: follow, tools,
        max_tokens: 16, seed: 7 });
      assert.ok(['stop', 'length', 'tool_calls'].includes(b.choices[0].finish_reason));
      if (b.choices[0].finish_reason !== 'tool_calls') assert.equal(typeof b.choices[0].message.content, 'string');
      let text = '';
      for await (const ch of await client.chat.completions.create({ model: 'tiny', messages: follow,
        tools, max_tokens: 16, seed: 7, stream: true })) text += ch.choices[0]?.delta?.content ?? '';
      if (b.choices[0].finish_reason !== 'tool_calls') assert.equal(text, b.choices[0].message.content);
    }
  });
});

// ---- real engine, deepseek-r1 template: the grammar first closes the open think block ----

describe('real engine, deepseek-r1 template: constrained output after </think>', () => {
  let d, client, bias;
  before(async () => {
    d = await startDaemon({ bin: BIN, model, timeoutMs: 120000, args: ['--model.name=tiny',
      '--model.template=deepseek-r1', '--log.level=warn', '--engine.max_running=8'] });
    client = new OpenAI({ baseURL: d.base + '/v1', apiKey: 'unused', maxRetries: 0, timeout: 120000 });
    bias = biasForJson();
  });
  after(async () => {
    const r = await d.stop();
    assert.equal(r.code, 0, d.log());
  });

  test('json_schema and a forced tool call: empty reasoning, valid answer', async () => {
    const schema = { type: 'object', properties: { ok: { type: 'boolean' }, n: { type: 'integer' } },
      required: ['ok', 'n'], additionalProperties: false };
    const res = await pool(16, 8, async (i) => {
      const a = await client.chat.completions.create({ model: 'tiny', max_tokens: 80, seed: i,
        logit_bias: bias, messages: [{ role: 'user', content: 'json' }],
        response_format: { type: 'json_schema', json_schema: { name: 's', schema } } });
      const m = a.choices[0].message;
      assert.equal(m.reasoning_content, '');
      if (a.choices[0].finish_reason !== 'stop') return 0;
      validate(schema, JSON.parse(m.content));
      return 1;
    });
    assert.ok(res.reduce((x, y) => x + y, 0) >= 8);
    const t = await client.chat.completions.create({ model: 'tiny', max_tokens: 400, seed: 3,
      logit_bias: biasForTools(), messages: [{ role: 'user', content: 'call it' }], tool_choice: 'required',
      tools: [{ type: 'function', function: { name: 'f', parameters: schema } }] });
    assert.equal(t.choices[0].finish_reason, 'tool_calls', JSON.stringify(t));
    assert.equal(t.choices[0].message.reasoning_content, '');
    validate(schema, JSON.parse(t.choices[0].message.tool_calls[0].function.arguments));
  });
});

// ---- fake engine: parsing of fixed outputs ----

const CB = '<｜tool▁calls▁begin｜>', CE = '<｜tool▁calls▁end｜>', B = '<｜tool▁call▁begin｜>';
const E = '<｜tool▁call▁end｜>', SEP = '<｜tool▁sep｜>';
const fence = (name, args) => `${B}function${SEP}${name}\n\`\`\`json\n${args}\n\`\`\`${E}`;

describe('fake engine, deepseek-r1 template: reasoning and tool-call parsing', () => {
  let d, client;
  before(async () => {
    d = await startDaemon({ bin: FAKE, model, args: ['--model.template=deepseek-r1',
      '--model.name=fake', '--log.level=warn'] });
    client = new OpenAI({ baseURL: d.base + '/v1', apiKey: 'unused', maxRetries: 0 });
  });
  after(async () => {
    const r = await d.stop();
    assert.equal(r.code, 0, d.log());
  });

  async function sse(body) {
    const r = await postJSON(d.base, '/v1/chat/completions', { ...body, stream: true });
    assert.equal(r.status, 200, r.text);
    const { events, done } = parseSSE(r.text);
    assert.ok(done);
    return events;
  }

  test('reasoning_content split; reasoning_format none keeps it inline', async () => {
    const messages = [{ role: 'user', content: 'ECHO:Let me think. 2+2.</think>\n\nThe answer is 4.|OHCE' }];
    const a = await client.chat.completions.create({ model: 'fake', messages });
    assert.equal(a.choices[0].message.reasoning_content, 'Let me think. 2+2.');
    assert.equal(a.choices[0].message.content, 'The answer is 4.');
    assert.equal(a.choices[0].finish_reason, 'stop');
    const evs = await sse({ messages });
    let r = '', c = '';
    for (const e of evs) {
      const dl = e.choices[0]?.delta ?? {};
      r += dl.reasoning_content ?? '';
      c += dl.content ?? '';
    }
    assert.equal(r, 'Let me think. 2+2.');
    assert.equal(c, 'The answer is 4.');
    const b = await postJSON(d.base, '/v1/chat/completions', { messages, reasoning_format: 'none' });
    assert.equal(b.json.choices[0].message.content, '<think>\nLet me think. 2+2.</think>\n\nThe answer is 4.');
    assert.ok(!('reasoning_content' in b.json.choices[0].message) ||
              !b.json.choices[0].message.reasoning_content);
    const bad = await postJSON(d.base, '/v1/chat/completions', { messages, reasoning_format: 'x' });
    assert.equal(bad.status, 400);
    assert.equal(bad.json.error.param, 'reasoning_format');
  });

  test('tool calls in auto mode: message, delta shape, SDK accumulation, round trip', async () => {
    const tools = [{ type: 'function', function: { name: 'get_weather', parameters: { type: 'object' } } },
      { type: 'function', function: { name: 'get_time' } }];
    const out = `Checking.</think>\n\nLooking it up.${CB}${fence('get_weather', '{"city": "Paris"}')}\n` +
      `${fence('get_time', '{}')}${CE}`;
    const messages = [{ role: 'user', content: `ECHO:${out}|OHCE` }];
    const a = await client.chat.completions.create({ model: 'fake', messages, tools, seed: 5 });
    const m = a.choices[0].message;
    assert.equal(a.choices[0].finish_reason, 'tool_calls');
    assert.equal(m.reasoning_content, 'Checking.');
    assert.equal(m.content, 'Looking it up.');
    assert.deepEqual(m.tool_calls.map((t) => [t.type, t.function.name, t.function.arguments]),
      [['function', 'get_weather', '{"city": "Paris"}'], ['function', 'get_time', '{}']]);

    // raw chunks: per call, the name first (arguments ""), then the arguments alone
    const evs = await sse({ messages, tools, seed: 5 });
    const tcs = evs.flatMap((e) => e.choices[0]?.delta?.tool_calls ?? []);
    for (const e of evs) assert.ok((e.choices[0]?.delta?.tool_calls ?? []).length <= 1);
    assert.equal(tcs.length, 4);
    for (const i of [0, 1]) {
      const [first, second] = tcs.filter((t) => t.index === i);
      assert.equal(first.function.arguments, '');
      assert.equal(first.id, m.tool_calls[i].id);
      assert.equal(first.function.name, m.tool_calls[i].function.name);
      assert.ok(!('name' in second.function) && !('id' in second));
      assert.equal(second.function.arguments, m.tool_calls[i].function.arguments);
    }
    assert.equal(evs.at(-1).choices[0].finish_reason, 'tool_calls');

    const st = client.chat.completions.stream({ model: 'fake', messages, tools, seed: 5 });
    const fin = await st.finalChatCompletion();
    assert.deepEqual(fin.choices[0].message.tool_calls, m.tool_calls);
    assert.equal(fin.choices[0].message.content, 'Looking it up.');

    // the results go back as tool messages (rendered into the prompt: the fake echoes the last)
    const follow = [...messages, { role: 'assistant', content: null, tool_calls: m.tool_calls },
      { role: 'tool', tool_call_id: m.tool_calls[0].id, content: '{"temp": 21}' },
      { role: 'tool', tool_call_id: m.tool_calls[1].id, content: 'ECHO:Sunny, 21 C.|OHCE' }];
    // (after tool outputs the DeepSeek templates add no generation prompt, so no <think>)
    const b = await client.chat.completions.create({ model: 'fake', messages: follow, tools });
    assert.equal(b.choices[0].finish_reason, 'stop');
    assert.equal(b.choices[0].message.content, 'Sunny, 21 C.');
    assert.equal(b.choices[0].message.tool_calls, undefined);

    // a malformed block is dropped (its markers never reach the client), never an error
    const bad = `x</think>\n\nbefore ${CB}${fence('nope', '{"a":')}${CE} after`;
    const c = await client.chat.completions.create({ model: 'fake', tools,
      messages: [{ role: 'user', content: `ECHO:${bad}|OHCE` }] });
    assert.equal(c.choices[0].finish_reason, 'stop');
    assert.equal(c.choices[0].message.content, 'before  after');
  });
});
