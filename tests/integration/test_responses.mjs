// test_responses.mjs - POST /v1/responses (docs/api.md "Responses") through the openai npm
// client against `tandem serve` on the embedded model (models/default):
//   - responses.create: output_text non-empty, usage adds up, echoed fields;
//   - streaming (responses.stream and create({stream:true})): the documented event order with
//     increasing sequence_numbers, finalResponse() equal in text to the deltas;
//   - instructions, max_output_tokens -> status incomplete (streamed: response.incomplete);
//   - a function tool round trip: tool_choice required / named -> a function_call item with
//     JSON arguments; its function_call_output sent back in `input` -> a text answer;
//   - text.format json_schema through responses.parse with zod: the parsed object validates;
//   - R1 template: a reasoning item with reasoning_text, streamed as reasoning_text events;
//   - refused: previous_response_id (400), non-function tools (400), unknown model (404).
// `seed` is a tandem extension the SDK passes through. Random seeds are printed. Exits 77 when
// the openai or zod package is missing.
import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { defaultModelEnv, postJSON, startDaemon } from './daemon.mjs';

let OpenAI, zodTextFormat, z;
try {
  OpenAI = (await import('openai')).default;
  ({ zodTextFormat } = await import('openai/helpers/zod'));
  ({ z } = await import('zod'));
} catch (e) {
  console.error(`SKIP: the openai / zod npm packages are not installed (cd tests && npm ci): ${e}`);
  process.exit(77);
}
const { BIN, MODEL_DIR } = defaultModelEnv();

let seed = (Date.now() ^ (process.pid << 8)) >>> 0;
console.error(`# seed ${seed}`);
const nextSeed = () => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0);

const MARKER = /<｜|｜>|<\/?think>|▁/;
const noMarkers = (s, what) => assert.ok(!MARKER.test(s ?? ''), `${what} leaks a marker: ${s}`);

const weatherTool = {
  type: 'function', name: 'get_weather', description: 'Weather for a city', strict: true,
  parameters: {
    type: 'object', properties: { city: { type: 'string', maxLength: 12 } },
    required: ['city'], additionalProperties: false,
  },
};
const timeTool = { type: 'function', name: 'get_time', // bounded: a forced call cannot run past max_output_tokens
  parameters: { type: 'object', properties: { tz: { type: 'string', maxLength: 8 } }, additionalProperties: false } };

// The events of one streamed message response, in the documented order.
function checkMessageEvents(events) {
  const types = events.map((e) => e.type);
  events.forEach((e, i) => assert.equal(e.sequence_number, i, `${e.type} sequence_number`));
  assert.deepEqual(types.slice(0, 5), ['response.created', 'response.in_progress',
    'response.output_item.added', 'response.content_part.added', 'response.output_text.delta']);
  const end = types.indexOf('response.output_text.done');
  assert.ok(end > 4, types.join(' '));
  assert.ok(types.slice(4, end).every((t) => t === 'response.output_text.delta'), types.join(' '));
  assert.deepEqual(types.slice(end + 1), ['response.content_part.done', 'response.output_item.done',
    events.at(-1).response.status === 'incomplete' ? 'response.incomplete' : 'response.completed']);
  const text = events.filter((e) => e.type === 'response.output_text.delta').map((e) => e.delta).join('');
  assert.equal(events[end].text, text);
  return text;
}

describe('/v1/responses on the embedded model', () => {
  let d, client, name;
  before(async () => {
    name = path.basename(MODEL_DIR);
    d = await startDaemon({ bin: BIN, model: MODEL_DIR, timeoutMs: 120000,
      args: ['--log.level=warn'] });
    client = new OpenAI({ baseURL: d.base + '/v1', apiKey: 'none', maxRetries: 0 });
  });
  after(async () => { if (d) await d.stop(); });

  test('create: output_text, usage, echoed fields', async () => {
    const s = nextSeed();
    const r = await client.responses.create({ model: name, seed: s, input: 'Say hello.',
      max_output_tokens: 40, temperature: 0.7, top_p: 0.9, metadata: { k: 'v' }, store: false });
    assert.equal(r.object, 'response');
    assert.match(r.id, /^resp_/);
    assert.ok(r.output_text.length > 0, `seed ${s}: ${JSON.stringify(r.output)}`);
    noMarkers(r.output_text, 'output_text');
    const msg = r.output.find((o) => o.type === 'message');
    assert.equal(msg.role, 'assistant');
    assert.equal(msg.content[0].type, 'output_text');
    assert.deepEqual(msg.content[0].annotations, []);
    const u = r.usage;
    assert.ok(u.input_tokens > 0 && u.output_tokens > 0);
    assert.equal(u.total_tokens, u.input_tokens + u.output_tokens);
    assert.equal(typeof u.input_tokens_details.cached_tokens, 'number');
    assert.equal(u.output_tokens_details.reasoning_tokens, 0);
    assert.equal(r.max_output_tokens, 40);
    assert.equal(r.temperature, 0.7);
    assert.equal(r.top_p, 0.9);
    assert.deepEqual(r.metadata, { k: 'v' });
    assert.equal(r.store, false);
    assert.equal(r.model, name);
    assert.ok(['completed', 'incomplete'].includes(r.status));
  });

  test('input items and instructions', async () => {
    const s = nextSeed();
    const r = await client.responses.create({ seed: s, max_output_tokens: 20,
      instructions: 'You answer briefly.',
      input: [
        { role: 'developer', content: 'Be kind.' },
        { type: 'message', role: 'user', content: [{ type: 'input_text', text: 'Hi!' }] },
        { type: 'message', role: 'assistant', content: [{ type: 'output_text', text: 'Hello.' }] },
        { type: 'reasoning', id: 'rs_1', summary: [] },
        { role: 'user', content: 'How are you?' },
      ] });
    assert.equal(r.instructions, 'You answer briefly.');
    assert.ok(r.output_text.length > 0, `seed ${s}`);
    // the instructions are part of the prompt
    const bare = await client.responses.create({ seed: s, max_output_tokens: 1, input: 'Hi!' });
    const withIns = await client.responses.create({ seed: s, max_output_tokens: 1, input: 'Hi!',
      instructions: 'You answer briefly.' });
    assert.ok(withIns.usage.input_tokens > bare.usage.input_tokens);
  });

  test('streamed: documented event order, finalResponse', async () => {
    const s = nextSeed();
    const req = { model: name, seed: s, input: 'Tell me about tandem.', max_output_tokens: 30 };
    const stream = client.responses.stream(req);
    const events = [];
    for await (const e of stream) events.push(e);
    const text = checkMessageEvents(events);
    const fin = await stream.finalResponse();
    assert.equal(fin.output_text, text);
    assert.equal(fin.usage.output_tokens, events.at(-1).response.usage.output_tokens);
    // the same request, not streamed, gives the same text (same seed)
    const r = await client.responses.create(req);
    assert.equal(r.output_text, text);
    // create({stream: true}) yields the same events
    const raw = [];
    for await (const e of await client.responses.create({ ...req, stream: true })) raw.push(e);
    assert.equal(checkMessageEvents(raw), text);
  });

  test('max_output_tokens: status incomplete, reason max_output_tokens', async () => {
    const s = nextSeed();
    const req = { seed: s, input: 'Write a long story about a cat.', max_output_tokens: 3 };
    const r = await client.responses.create(req);
    assert.equal(r.status, 'incomplete');
    assert.deepEqual(r.incomplete_details, { reason: 'max_output_tokens' });
    assert.equal(r.usage.output_tokens, 3);
    assert.equal(r.output.at(-1).status, 'incomplete');
    const events = [];
    for await (const e of await client.responses.create({ ...req, stream: true })) events.push(e);
    assert.equal(events.at(-1).type, 'response.incomplete');
    assert.equal(events.at(-1).response.incomplete_details.reason, 'max_output_tokens');
    assert.equal(events.at(-1).response.output_text ?? r.output_text, r.output_text);
  });

  test('function tool round trip: required / named call, then its output', async () => {
    for (const tool_choice of ['required', { type: 'function', name: 'get_weather' }]) {
      for (const stream of [false, true]) {
        const s = nextSeed();
        const req = { seed: s, max_output_tokens: 300, tools: [weatherTool, timeTool], tool_choice,
          input: 'Weather in Paris?' };
        let r;
        if (stream) {
          const st = client.responses.stream(req);
          const types = [];
          for await (const e of st) types.push(e.type);
          r = await st.finalResponse();
          assert.deepEqual(types.slice(2), ['response.output_item.added',
            'response.function_call_arguments.delta', 'response.function_call_arguments.done',
            'response.output_item.done', 'response.completed'], types.join(' '));
        } else {
          r = await client.responses.create(req);
        }
        assert.equal(r.status, 'completed', `seed ${s}: ${JSON.stringify(r.output)}`);
        const calls = r.output.filter((o) => o.type === 'function_call');
        assert.equal(calls.length, 1, JSON.stringify(r.output));
        const call = calls[0];
        assert.match(call.call_id, /^call_/);
        assert.match(call.id, /^fc_/);
        assert.equal(call.status, 'completed');
        if (typeof tool_choice === 'object') assert.equal(call.name, 'get_weather');
        const args = JSON.parse(call.arguments);
        assert.equal(typeof args, 'object');
        if (call.name === 'get_weather') assert.ok([...args.city].length <= 12, call.arguments); // characters
        // the call and its output go back as input items: a text answer
        const next = await client.responses.create({ seed: s, max_output_tokens: 40,
          tools: [weatherTool, timeTool],
          input: [{ role: 'user', content: 'Weather in Paris?' },
            { type: 'function_call', call_id: call.call_id, name: call.name, arguments: call.arguments },
            { type: 'function_call_output', call_id: call.call_id, output: 'sunny, 21 C' }] });
        assert.ok(next.usage.input_tokens > r.usage.input_tokens);
        const msg = next.output.find((o) => o.type === 'message');
        assert.ok(msg || next.output.some((o) => o.type === 'function_call'),
          JSON.stringify(next.output));
        noMarkers(next.output_text, 'answer');
      }
    }
  });

  test('text.format json_schema via responses.parse with zod', async () => {
    const Answer = z.object({
      answer: z.number(), unit: z.string().max(6), ok: z.boolean(),
      tags: z.array(z.enum(['a', 'b', 'c'])).max(3),
    });
    for (let i = 0; i < 2; i++) {
      const s = nextSeed();
      const r = await client.responses.parse({ seed: s, temperature: 1, max_output_tokens: 400,
        input: 'How far is the moon? Answer in JSON.', text: { format: zodTextFormat(Answer, 'answer') } });
      assert.equal(r.status, 'completed', `seed ${s}: ${r.output_text}`);
      assert.ok(r.output_parsed, `seed ${s}`);
      Answer.parse(r.output_parsed);
      assert.equal(r.text.format.type, 'json_schema');
    }
    const s = nextSeed();
    const r = await client.responses.create({ seed: s, max_output_tokens: 60,
      input: 'A JSON object please.', text: { format: { type: 'json_object' } } });
    assert.ok(r.output_text.startsWith('{'), `seed ${s}: ${r.output_text}`);
  });

  test('refused: previous_response_id, hosted tools, unknown model', async () => {
    await assert.rejects(
      client.responses.create({ input: 'x', previous_response_id: 'resp_123' }),
      (e) => e instanceof OpenAI.BadRequestError && e.param === 'previous_response_id' &&
        /not supported/.test(e.message));
    await assert.rejects(client.responses.create({ input: 'x', tools: [{ type: 'web_search' }] }),
      (e) => e instanceof OpenAI.BadRequestError && e.param === 'tools');
    await assert.rejects(client.responses.create({ model: 'no-such-model', input: 'x' }),
      (e) => e instanceof OpenAI.NotFoundError && e.code === 'model_not_found' && e.param === 'model');
    await assert.rejects(client.responses.create({ input: 'x', max_output_tokens: 1 << 30 }),
      (e) => e instanceof OpenAI.BadRequestError && e.param === 'max_output_tokens');
    for (const body of [{}, { input: [] }, { input: 5 }, { input: [{ role: 'tool', content: 'x' }] },
      { input: [{ role: 'user', content: [{ type: 'input_image', image_url: 'x' }] }] },
      { input: 'x', text: { format: { type: 'yaml' } } }, { input: 'x', tool_choice: 3 }]) {
      const r = await postJSON(d.base, '/v1/responses', body);
      assert.equal(r.status, 400, JSON.stringify(body));
    }
  });
});

describe('/v1/responses under the R1 template: reasoning items', () => {
  let d, client;
  before(async () => {
    d = await startDaemon({ bin: BIN, model: MODEL_DIR, timeoutMs: 120000,
      args: ['--log.level=warn', '--model.template=deepseek-r1'] });
    client = new OpenAI({ baseURL: d.base + '/v1', apiKey: 'none', maxRetries: 0 });
  });
  after(async () => { if (d) await d.stop(); });

  test('reasoning item with reasoning_text; streamed the same', async () => {
    const s = nextSeed();
    const req = { seed: s, input: 'What is 2+2?', max_output_tokens: 100 };
    const r = await client.responses.create(req);
    const rs = r.output.filter((o) => o.type === 'reasoning');
    if (rs.length) {
      assert.equal(r.output[0].type, 'reasoning');
      assert.deepEqual(rs[0].summary, []);
      assert.equal(rs[0].content[0].type, 'reasoning_text');
      noMarkers(rs[0].content[0].text, 'reasoning');
      assert.ok(r.usage.output_tokens_details.reasoning_tokens > 0);
    }
    noMarkers(r.output_text, 'output_text');
    const st = client.responses.stream(req);
    const events = [];
    for await (const e of st) events.push(e);
    const fin = await st.finalResponse();
    const reasoning = events.filter((e) => e.type === 'response.reasoning_text.delta')
      .map((e) => e.delta).join('');
    assert.equal(reasoning, rs.length ? rs[0].content[0].text : '');
    assert.equal(fin.output_text, r.output_text);
    assert.deepEqual(fin.output.map((o) => o.type), r.output.map((o) => o.type));
  });
});
