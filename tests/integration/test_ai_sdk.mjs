// test_ai_sdk.mjs - the Vercel AI SDK (`ai` + `@ai-sdk/openai-compatible`) against `tandem serve`
// on the embedded model (models/default, scripts/default-model.sh), with an API key configured:
//   - generateText: text, finishReason, usage; the same seed gives the same text as a plain
//     HTTP request with the fields the SDK sent (max_tokens, seed, temperature);
//   - streamText with includeUsage: stream_options.include_usage is sent, the streamed text
//     equals the non-streamed one for the same seed, usage arrives and equals it;
//   - generateObject with a bounded zod schema (response_format json_schema, an .int()
//     field): always finishes, and the object validates against the schema;
//   - a tool round trip through the SDK's step loop: step 1 forced (toolChoice 'required'),
//     the SDK runs `execute` on the parsed input, step 2 sends the call and its result back
//     (the assistant tool_calls message and the tool message with the same id) and the model
//     answers in text;
//   - streamed tool calls (streamText, toolChoice 'required'): the SDK reassembles the
//     tool-input deltas into one tool-call whose input validates, and it equals the
//     non-streamed call for the same seed;
//   - errors as the SDK's APICallError: 400 (temperature out of range, param in the body), 401
//     (a wrong key), 404 (an unknown model: model_not_found), not retryable; a streamed 404
//     arrives as an error part.
// The model is tiny: structure and validity are asserted, not content quality. Random seeds are
// printed. Exits 77 when the ai / @ai-sdk/openai-compatible / zod packages are missing.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { defaultModelEnv, postJSON, startDaemon, tmpDir } from './daemon.mjs';

let ai, createOpenAICompatible, z;
try {
  ai = await import('ai');
  ({ createOpenAICompatible } = await import('@ai-sdk/openai-compatible'));
  ({ z } = await import('zod'));
} catch (e) {
  console.error(`SKIP: the ai / @ai-sdk/openai-compatible / zod npm packages are not installed (cd tests && npm ci): ${e}`);
  process.exit(77);
}
const { APICallError, generateObject, generateText, stepCountIs, streamText, tool } = ai;
const { BIN, MODEL_DIR } = defaultModelEnv();
const KEY = 'sk-ai-sdk-test';
const MODEL = 'local-model';

let seed = (Date.now() ^ (process.pid << 8)) >>> 0;
console.error(`# seed ${seed}`);
const nextSeed = () => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) % 1000000007;

const MARKER = /<｜|｜>|<\/?think>|▁/;
const noMarkers = (s, what) => assert.ok(!MARKER.test(s ?? ''), `${what} leaks a marker: ${s}`);

// bounded: strings with maxLength, enums, maxItems, no free keys; so the answer always fits
const Weather = z.object({
  city: z.string().max(12),
  sky: z.enum(['sun', 'rain', 'snow']),
  temp: z.number().int(), // zod writes minimum/maximum +-(2^53-1): accepted (implied bounds)
  rain_mm: z.number(),
  windy: z.boolean(),
  alerts: z.array(z.enum(['heat', 'storm', 'flood'])).max(2),
});
const CityArg = z.object({ city: z.string().max(12) });

describe('Vercel AI SDK (@ai-sdk/openai-compatible) on the embedded model', () => {
  let d, provider, model;
  const bodies = []; // the JSON bodies the SDK sent, in order
  const recordingFetch = async (url, init) => {
    if (typeof init?.body === 'string') bodies.push(JSON.parse(init.body));
    return fetch(url, init);
  };
  const lastBody = () => bodies[bodies.length - 1];
  const makeProvider = (apiKey) => createOpenAICompatible({
    name: 'tandem', baseURL: d.base + '/v1', apiKey, includeUsage: true,
    supportsStructuredOutputs: true, fetch: recordingFetch,
  });

  before(async () => {
    const keys = path.join(tmpDir(), 'keys');
    fs.writeFileSync(keys, `${KEY}\n`, { mode: 0o600 });
    d = await startDaemon({ bin: BIN, model: MODEL_DIR, timeoutMs: 120000,
      args: ['--log.level=warn', `--model.served_names=${MODEL}`, `--server.api_key_file=${keys}`] });
    provider = makeProvider(KEY);
    model = provider.chatModel(MODEL);
  });
  after(async () => { if (d) assert.equal((await d.stop()).code, 0, d.log()); });

  test('generateText: text, usage, and the request it sends', async () => {
    const s = nextSeed();
    const r = await generateText({ model, seed: s, temperature: 0.8, maxOutputTokens: 16,
      maxRetries: 0, prompt: 'Tell me about foxes.' });
    const body = lastBody();
    assert.equal(body.model, MODEL);
    assert.equal(body.max_tokens, 16);
    assert.equal(body.seed, s);
    assert.equal(typeof r.text, 'string');
    noMarkers(r.text, 'text');
    assert.ok(['stop', 'length'].includes(r.finishReason), `seed ${s}: ${r.finishReason}`);
    assert.ok(r.usage.inputTokens > 0, JSON.stringify(r.usage));
    assert.ok(r.usage.outputTokens >= 1 && r.usage.outputTokens <= 16, JSON.stringify(r.usage));
    assert.equal(r.usage.totalTokens, r.usage.inputTokens + r.usage.outputTokens);
    if (r.finishReason === 'length') assert.equal(r.usage.outputTokens, 16);
    assert.equal(r.response.modelId, path.basename(MODEL_DIR)); // responses name model.name
    // the same request without the SDK: same text (seeded sampling is reproducible)
    const raw = await postJSON(d.base, '/v1/chat/completions', body,
      { Authorization: `Bearer ${KEY}` });
    assert.equal(raw.status, 200, raw.text);
    assert.equal(raw.json.choices[0].message.content ?? '', r.text, `seed ${s}`);
  });

  test('streamText with usage: same text as generateText, usage arrives', async () => {
    const s = nextSeed();
    const req = { model, seed: s, temperature: 1, maxOutputTokens: 24, maxRetries: 0,
      system: 'You are terse.', prompt: 'Write a line about the sea.' };
    const once = await generateText(req);
    const st = streamText(req);
    let text = '', chunks = 0;
    for await (const t of st.textStream) { text += t; chunks++; }
    const body = lastBody();
    assert.equal(body.stream, true);
    assert.deepEqual(body.stream_options, { include_usage: true });
    assert.equal(body.messages[0].role, 'system');
    assert.equal(text, once.text, `seed ${s}`);
    if (text.length > 0) assert.ok(chunks >= 1);
    noMarkers(text, 'streamed text');
    const usage = await st.usage;
    assert.equal(usage.inputTokens, once.usage.inputTokens, `seed ${s}`);
    assert.equal(usage.outputTokens, once.usage.outputTokens, `seed ${s}`);
    assert.equal(await st.finishReason, once.finishReason);
  });

  test('generateObject with a zod schema: finishes, validates', async () => {
    for (let i = 0; i < 3; i++) {
      const s = nextSeed();
      const r = await generateObject({ model, seed: s, temperature: 1, maxOutputTokens: 300,
        maxRetries: 0, schema: Weather, schemaName: 'weather',
        prompt: 'What is the weather in Oslo? Answer in JSON.' });
      const body = lastBody();
      assert.equal(body.response_format.type, 'json_schema');
      assert.equal(r.finishReason, 'stop', `seed ${s}`);
      Weather.parse(r.object);
      assert.ok([...r.object.city].length <= 12);
      assert.ok(r.usage.outputTokens > 0);
    }
  });

  test('tool round trip: forced call, the SDK runs the tool, the model answers from the result',
    async () => {
      const s = nextSeed();
      const ran = [];
      const tools = {
        get_weather: tool({
          description: 'The current weather of a city',
          inputSchema: CityArg,
          execute: async ({ city }) => { ran.push(city); return { city, temp_c: 21, sky: 'sun' }; },
        }),
      };
      const first = bodies.length;
      const r = await generateText({ model, seed: s, maxOutputTokens: 200, maxRetries: 0, tools,
        // the first step must call; the second answers from the result in text
        prepareStep: ({ stepNumber }) => ({ toolChoice: stepNumber === 0 ? 'required' : 'none' }),
        stopWhen: stepCountIs(2), prompt: 'What is the weather in Paris?' });
      assert.equal(r.steps.length, 2, `seed ${s}`);
      const [s1, s2] = r.steps;
      assert.equal(s1.finishReason, 'tool-calls', `seed ${s}`);
      assert.equal(s1.toolCalls.length, 1);
      const call = s1.toolCalls[0];
      assert.equal(call.toolName, 'get_weather');
      CityArg.parse(call.input);
      assert.deepEqual(ran, [call.input.city]);
      assert.equal(s1.toolResults.length, 1);
      assert.equal(s1.toolResults[0].toolCallId, call.toolCallId);
      assert.deepEqual(s1.toolResults[0].output, { city: call.input.city, temp_c: 21, sky: 'sun' });
      // what the second request carried: the call and its result, linked by id
      assert.equal(bodies.length, first + 2);
      assert.equal(bodies[first].tool_choice, 'required');
      const b2 = bodies[first + 1];
      assert.equal(b2.tool_choice, 'none');
      const asst = b2.messages.find((m) => m.role === 'assistant');
      assert.ok(asst?.tool_calls?.length === 1, JSON.stringify(b2.messages));
      assert.equal(asst.tool_calls[0].id, call.toolCallId);
      assert.equal(asst.tool_calls[0].function.name, 'get_weather');
      assert.deepEqual(JSON.parse(asst.tool_calls[0].function.arguments), call.input);
      const toolMsg = b2.messages.find((m) => m.role === 'tool');
      assert.equal(toolMsg.tool_call_id, call.toolCallId);
      assert.deepEqual(JSON.parse(toolMsg.content), s1.toolResults[0].output);
      // the answer: text, no further calls
      assert.ok(['stop', 'length'].includes(s2.finishReason), `seed ${s}: ${s2.finishReason}`);
      assert.equal(s2.toolCalls.length, 0);
      assert.equal(r.text, s2.text);
      noMarkers(r.text, 'answer');
      assert.equal(r.totalUsage.outputTokens, s1.usage.outputTokens + s2.usage.outputTokens);
    });

  test('streamed tool calls: the SDK reassembles one call that equals the non-streamed one',
    async () => {
      for (let i = 0; i < 2; i++) {
        const s = nextSeed();
        const req = { model, seed: s, maxOutputTokens: 200, maxRetries: 0, toolChoice: 'required',
          tools: {
            get_weather: tool({ description: 'Weather for a city', inputSchema: CityArg }),
            get_time: tool({ description: 'Time in a zone',
              inputSchema: z.object({ tz: z.enum(['UTC', 'CET', 'PST']) }) }),
          },
          prompt: 'Weather in Rome?' };
        const once = await generateText(req);
        assert.equal(once.finishReason, 'tool-calls', `seed ${s}`);
        assert.equal(once.toolCalls.length, 1);
        const st = streamText(req);
        const parts = [];
        for await (const p of st.fullStream) parts.push(p);
        assert.equal(lastBody().stream, true);
        assert.ok(!parts.some((p) => p.type === 'error'), JSON.stringify(parts));
        const calls = parts.filter((p) => p.type === 'tool-call');
        assert.equal(calls.length, 1, `seed ${s}: ${JSON.stringify(parts)}`);
        const c = calls[0];
        assert.equal(c.toolName, once.toolCalls[0].toolName, `seed ${s}`);
        assert.deepEqual(c.input, once.toolCalls[0].input, `seed ${s}`);
        (c.toolName === 'get_weather' ? CityArg : z.object({ tz: z.enum(['UTC', 'CET', 'PST']) }))
          .parse(c.input);
        // the input came as deltas of the call's id, and they add up to the arguments
        const deltas = parts.filter((p) => p.type === 'tool-input-delta' && p.id === c.toolCallId);
        assert.ok(deltas.length >= 1, JSON.stringify(parts));
        assert.deepEqual(JSON.parse(deltas.map((p) => p.delta).join('')), c.input);
        assert.equal(await st.finishReason, 'tool-calls');
        assert.equal(parts.filter((p) => p.type === 'text-delta').map((p) => p.text).join(''), '');
      }
    });

  test('errors are APICallError: 400, 401, 404 (streamed too)', async () => {
    // 400: out of range; the server's message and param come through
    await assert.rejects(
      generateText({ model, temperature: 2.5, maxRetries: 0, prompt: 'x' }),
      (e) => APICallError.isInstance(e) && e.statusCode === 400 && !e.isRetryable &&
        /temperature/.test(e.message) && JSON.parse(e.responseBody).error.param === 'temperature');
    // 401: a wrong key
    const wrong = makeProvider('sk-wrong').chatModel(MODEL);
    await assert.rejects(generateText({ model: wrong, maxRetries: 0, prompt: 'x' }),
      (e) => APICallError.isInstance(e) && e.statusCode === 401 && !e.isRetryable &&
        JSON.parse(e.responseBody).error.code === 'invalid_api_key');
    // 404: a model the server does not serve
    const unknown = provider.chatModel('gpt-4o');
    await assert.rejects(generateText({ model: unknown, maxRetries: 0, prompt: 'x' }),
      (e) => APICallError.isInstance(e) && e.statusCode === 404 && !e.isRetryable &&
        JSON.parse(e.responseBody).error.code === 'model_not_found');
    await assert.rejects(generateObject({ model: unknown, maxRetries: 0, schema: Weather, prompt: 'x' }),
      (e) => APICallError.isInstance(e) && e.statusCode === 404);
    // streamed: the error is a part of the stream
    const errors = [];
    const st = streamText({ model: unknown, maxRetries: 0, prompt: 'x',
      onError: ({ error }) => errors.push(error) });
    const parts = [];
    for await (const p of st.fullStream) parts.push(p);
    const err = parts.find((p) => p.type === 'error');
    assert.ok(err && APICallError.isInstance(err.error) && err.error.statusCode === 404,
      JSON.stringify(parts));
    assert.equal(errors.length, 1);
  });
});
