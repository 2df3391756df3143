// test_structured.mjs - tools, R1 reasoning and structured output (issue 9) through the openai
// npm client.
//   - real engine (`tandem serve`, tiny synthetic model with random weights, deepseek-v3
//     template): json_schema outputs for random schemas from a generator always parse and
//     validate once generation stops (constrained decoding), json_object mode, a forced tool call
//     round trip (tool_calls -> tool message -> final answer) non-streaming and streaming, the
//     SDK's stream helper accumulating the streamed deltas into the non-streamed message;
//   - the property under adversarial logits (random biases over the vocabulary, whitespace and
//     every added token pushed up): random schemas and forced calls with random parameter
//     schemas give valid JSON / one valid call, or finish_reason length (no call, no content);
//     a fully bounded schema with max_tokens its longest compact output always finishes
//     (stop / tool_calls); compact, streamed equal to non-streamed, and no output holds an
//     added token's text; the same under the deepseek-r1 template (empty reasoning_content);
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
    () => { // a bounded string (minLength and/or maxLength)
      const s = { type: 'string' };
      const min = Math.floor(rnd() * 3);
      if (rnd() < 0.5) s.minLength = min;
      if (rnd() < 0.8) s.maxLength = min + Math.floor(rnd() * 6);
      return s;
    },
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
  if (typeof v === 'string') { // lengths in characters (code points)
    const n = [...v].length;
    if (s.minLength !== undefined && n < s.minLength) fail('minLength');
    if (s.maxLength !== undefined && n > s.maxLength) fail('maxLength');
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

// Adversarial logits for the tiny vocabulary: random biases over the whole vocabulary,
// whitespace-only tokens pushed up by a random amount, every added token (markers, BOS, EOS,
// think tags) at +100 (EOS left alone now and then). Uses rnd(), so the schema seed replays it.
function adversarial() {
  const tj = JSON.parse(fs.readFileSync(path.join(model, 'tokenizer.json'), 'utf8'));
  const added = tj.added_tokens.map((t) => t.content);
  const nvocab = 1 + Math.max(...Object.values(tj.model.vocab), ...tj.added_tokens.map((t) => t.id));
  const bj = biasForJson();
  const wsIds = Object.keys(bj).filter((id) => bj[id] === -100);
  const eos = tj.added_tokens.find((t) => t.content.includes('end▁of▁sentence')).id;
  return {
    bias(i) {
      const b = {};
      for (let id = 0; id < nvocab; id++) if (rnd() < 0.3) b[id] = Math.round(rnd() * 40 - 20);
      const ws = Math.round(rnd() * 100);
      for (const id of wsIds) b[id] = ws;
      for (const t of tj.added_tokens) b[t.id] = 100;
      if (i % 3 === 2) delete b[eos]; // EOS at its own logit now and then
      return b;
    },
    // no output may hold the text of an added token
    noAdded(text, what) {
      for (const a of added) assert.ok(!(text ?? '').includes(a), `${what} holds ${a}: ${text}`);
    },
  };
}

// A fully bounded object schema (docs/structured-output.md "Within max_tokens"): leaves are
// booleans, null, integers, numbers, strings with maxLength, enums; arrays have maxItems; no free
// keys. maxBytes() is the longest compact output it allows, so max_tokens of that many tokens
// (every token is at least one byte) must let the answer finish.
function genBounded() {
  const leaf = () => pick([
    () => ({ type: 'boolean' }), () => ({ type: 'null' }), () => ({ type: 'integer' }),
    () => ({ type: 'number' }), () => ({ type: ['integer', 'null'] }),
    () => ({ type: 'string', maxLength: Math.floor(rnd() * 6) }),
    () => ({ enum: [...new Map(Array.from({ length: 1 + Math.floor(rnd() * 3) },
      () => pick(ENUMS)).map((v) => [JSON.stringify(v), v])).values()] }),
  ])();
  const props = {};
  const n = 1 + Math.floor(rnd() * 3);
  for (let i = 0; i < n; i++) {
    props[pick(NAMES)] = rnd() < 0.3
      ? { type: 'array', items: leaf(), maxItems: Math.floor(rnd() * 3) } : leaf();
  }
  return { type: 'object', properties: props, required: Object.keys(props).filter(() => rnd() < 0.6),
    additionalProperties: false };
}
function maxBytes(s) {
  // JSON text of a value, with every non-ASCII character counted as a \uXXXX escape
  const text = (v) => { const j = JSON.stringify(v); return j.length + 5 * (j.match(/[^\x00-\x7f]/g) ?? []).length; };
  if (s.enum) return Math.max(...s.enum.map(text));
  if ('const' in s) return text(s.const);
  const types = Array.isArray(s.type) ? s.type : [s.type];
  return Math.max(...types.map((t) => {
    switch (t) {
      case 'boolean': return 5;
      case 'null': return 4;
      case 'integer': return 16; // sign and 15 digits
      case 'number': return 36; // sign, 15 + 15 digits, point, e, sign, 2 digits
      case 'string': return 2 + 6 * s.maxLength; // a character is at most a 6-byte escape
      case 'array': return 2 + s.maxItems * (maxBytes(s.items) + 1);
      case 'object': return 2 + Object.entries(s.properties)
        .reduce((a, [k, v]) => a + text(k) + 2 + maxBytes(v), 0);
      default: throw new Error(`unbounded type ${t}`);
    }
  }));
}

// whitespace outside JSON strings
function wsOutside(t) {
  let inStr = false, esc = false, n = 0;
  for (const ch of t) {
    if (inStr) { if (esc) esc = false; else if (ch === '\\') esc = true; else if (ch === '"') inStr = false; }
    else if (ch === '"') inStr = true;
    else if (' \n\r\t'.includes(ch)) n++;
  }
  return n;
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

  // Property: for random schemas and random adversarial logits (random biases over the whole
  // vocabulary, whitespace pushed up, every added token -- markers, EOS, BOS -- pushed to +100),
  // an answer is valid JSON for the schema (finish_reason stop) or is cut (length); it is
  // compact (no whitespace between JSON tokens); the streamed answer equals the non-streamed
  // one; and no output ever holds the text of an added token. Forced tool calls likewise: one
  // call whose arguments validate (tool_calls), or length with no call and empty content.
  test('adversarial logit_bias: valid JSON or length, compact, never a special token', async () => {
    const adv = adversarial(), advBias = (i) => adv.bias(i), noAdded = adv.noAdded;
    async function both(req) { // non-streamed and streamed answers to the same seeded request
      const a = await client.chat.completions.create(req);
      const m = a.choices[0].message;
      let content = '', finish, calls = [];
      for await (const ch of await client.chat.completions.create({ ...req, stream: true })) {
        const dl = ch.choices[0]?.delta ?? {};
        content += dl.content ?? '';
        for (const tc of dl.tool_calls ?? []) {
          calls[tc.index] ??= { name: '', arguments: '' };
          calls[tc.index].name += tc.function?.name ?? '';
          calls[tc.index].arguments += tc.function?.arguments ?? '';
        }
        finish = ch.choices[0]?.finish_reason ?? finish;
      }
      assert.equal(finish, a.choices[0].finish_reason, `seed ${req.seed}: streamed finish_reason`);
      assert.equal(content, m.content ?? '', `seed ${req.seed}: streamed content`);
      assert.deepEqual(calls, (m.tool_calls ?? []).map((t) =>
        ({ name: t.function.name, arguments: t.function.arguments })), `seed ${req.seed}: calls`);
      return a.choices[0];
    }

    const SAN = !!process.env.TANDEM_SANITIZED; // fewer cases under ASan (scripts/sanitize.sh)
    const N = SAN ? 16 : 32;
    const res = await pool(N, 16, async (i) => {
      // odd cases: fully bounded, with max_tokens its longest output: must finish
      const bounded = i % 2 === 1;
      const schema = bounded ? genBounded() : i % 4 === 0 ? genSchema(0) : genObject(0);
      const max_tokens = bounded ? maxBytes(schema) + 1 : 120; // + EOS
      const req = { model: 'tiny', messages: [{ role: 'user', content: `adversarial ${i}` }],
        max_tokens, temperature: 1, seed: 5000 + i, logit_bias: advBias(i),
        response_format: { type: 'json_schema', json_schema: { name: 't', schema, strict: true } } };
      const c = await both(req);
      const text = c.message.content ?? '';
      noAdded(text, `case ${i}`);
      assert.equal(wsOutside(text), 0, `case ${i}: whitespace in ${text}`);
      if (bounded) {
        assert.equal(c.finish_reason, 'stop',
          `case ${i}: a bounded schema within max_tokens ${max_tokens} was cut: ${text}\nschema ${JSON.stringify(schema)}`);
      }
      if (c.finish_reason !== 'stop') {
        assert.equal(c.finish_reason, 'length', `case ${i}`);
        return 0;
      }
      let v;
      try { v = JSON.parse(text); } catch (e) {
        throw new Error(`case ${i}: not JSON (${e.message}): ${text}\nschema ${JSON.stringify(schema)}`);
      }
      try { validate(schema, v); } catch (e) {
        throw new Error(`case ${i}: ${e.message}\nschema ${JSON.stringify(schema)}\ntext ${text}`);
      }
      return 1;
    });
    const stops = res.reduce((x, y) => x + y, 0);
    console.error(`# adversarial json_schema: ${stops}/${N} complete (the bounded half always), the rest cut by max_tokens`);

    const M = SAN ? 6 : 12;
    const calls = await pool(M, 16, async (i) => {
      // i % 3: 0 a budget too short (cut inside the call), 1 a bounded schema with enough
      // budget (must be made), 2 a random schema
      const params = i % 3 === 1 ? genBounded() : genObject(1);
      const toolsN = [{ type: 'function', function: { name: 'f', parameters: params } },
        { type: 'function', function: { name: 'g', parameters: { type: 'object',
          properties: { k: { enum: ['x', 'y'] } }, additionalProperties: false } } }];
      const tool_choice = i % 2 ? 'required' : { type: 'function', function: { name: 'f' } };
      // the markup (markers, "function", the name, the json fence) takes at most 48 tokens
      const max_tokens = i % 3 === 0 ? 1 + (i % 17) : i % 3 === 1 ? maxBytes(params) + 48 : 150;
      const req = { model: 'tiny', messages: [{ role: 'user', content: `call ${i}` }],
        tools: toolsN, tool_choice, max_tokens, temperature: 1, seed: 7000 + i,
        logit_bias: advBias(i) };
      const c = await both(req);
      noAdded(c.message.content, `call ${i} content`);
      if (i % 3 === 1) {
        assert.equal(c.finish_reason, 'tool_calls',
          `call ${i}: a bounded call within max_tokens ${max_tokens} was cut\nschema ${JSON.stringify(params)}`);
      }
      if (c.finish_reason !== 'tool_calls') {
        assert.equal(c.finish_reason, 'length', `call ${i}: ${JSON.stringify(c)}`);
        assert.ok(!c.message.tool_calls?.length, `call ${i}: ${JSON.stringify(c)}`);
        assert.ok(!c.message.content, `call ${i}: content ${c.message.content}`);
        return 0;
      }
      assert.equal(c.message.tool_calls.length, 1, `call ${i}`);
      const fn = c.message.tool_calls[0].function;
      noAdded(fn.arguments, `call ${i} arguments`);
      if (typeof tool_choice === 'object') assert.equal(fn.name, 'f');
      const t = toolsN.find((x) => x.function.name === fn.name);
      assert.ok(t, fn.name);
      assert.equal(wsOutside(fn.arguments), 0, fn.arguments);
      try { validate(t.function.parameters, JSON.parse(fn.arguments)); } catch (e) {
        throw new Error(`call ${i}: ${e.message}\nschema ${JSON.stringify(params)}\nargs ${fn.arguments}`);
      }
      return 1;
    });
    const made = calls.reduce((x, y) => x + y, 0);
    console.error(`# adversarial forced calls: ${made}/${M} made (the bounded third always), the rest cut by max_tokens`);

    // json_object under the same logits
    for (let i = 0; i < 4; i++) {
      const c = await both({ model: 'tiny', messages: [{ role: 'user', content: 'obj' }],
        max_tokens: 120, temperature: 1, seed: 9000 + i, logit_bias: advBias(i),
        response_format: { type: 'json_object' } });
      const text = c.message.content ?? '';
      noAdded(text, `json_object ${i}`);
      assert.equal(wsOutside(text), 0, text);
      assert.ok(text.startsWith('{'), text);
      if (c.finish_reason === 'stop') {
        const v = JSON.parse(text);
        assert.ok(v && typeof v === 'object' && !Array.isArray(v), text);
      } else assert.equal(c.finish_reason, 'length');
    }
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
  test('adversarial logit_bias under R1: no marker in reasoning or content, valid or length', async () => {
    const adv = adversarial();
    let stops = 0;
    for (let i = 0; i < 6; i++) {
      // odd cases bounded, with room for the answer and the '</think>\n\n' prefix: must finish
      const bounded = i % 2 === 1;
      const schema = bounded ? genBounded() : genObject(0);
      const max_tokens = bounded ? maxBytes(schema) + 12 : 100;
      const req = { model: 'tiny', max_tokens, temperature: 1, seed: 300 + i,
        logit_bias: adv.bias(i), messages: [{ role: 'user', content: 'json' }],
        response_format: { type: 'json_schema', json_schema: { name: 's', schema } } };
      const a = await client.chat.completions.create(req);
      const m = a.choices[0].message;
      let content = '', reasoning = '';
      for await (const ch of await client.chat.completions.create({ ...req, stream: true })) {
        content += ch.choices[0]?.delta?.content ?? '';
        reasoning += ch.choices[0]?.delta?.reasoning_content ?? '';
      }
      assert.equal(content, m.content ?? '', `seed ${req.seed}`);
      assert.equal(m.reasoning_content, '', `seed ${req.seed}`);
      assert.equal(reasoning, '');
      adv.noAdded(m.content, `seed ${req.seed} content`);
      assert.equal(wsOutside(m.content), 0, m.content);
      if (bounded) assert.equal(a.choices[0].finish_reason, 'stop', `seed ${req.seed}: ${m.content}`);
      if (a.choices[0].finish_reason === 'stop') {
        validate(schema, JSON.parse(m.content));
        stops++;
      } else assert.equal(a.choices[0].finish_reason, 'length');
    }
    console.error(`# adversarial R1: ${stops}/6 complete (the bounded half always)`);
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
