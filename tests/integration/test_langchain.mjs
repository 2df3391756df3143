// test_langchain.mjs - LangChain JS (`@langchain/openai` ChatOpenAI on Chat Completions,
// `@langchain/core`) against `tandem serve` on the embedded model (models/default,
// scripts/default-model.sh), with an API key configured:
//   - invoke: an AIMessage with text, finish_reason and usage_metadata; the same seed gives the
//     same text as a plain HTTP request with the body LangChain sent;
//   - stream with streamUsage: stream_options.include_usage is sent, the concatenated chunks
//     equal the invoked message's text and usage for the same seed;
//   - withStructuredOutput with a bounded zod schema, both methods: "jsonSchema"
//     (response_format json_schema) and "functionCalling" (a named forced tool call): always
//     finishes, and the parsed object validates;
//   - a tool round trip: bindTools(..., {tool_choice: 'any'}) forces the call (sent as
//     "required"), the tool runs on the parsed args and returns a ToolMessage, the history goes
//     back (assistant tool_calls + tool message with the same id) and the model answers in text;
//   - streamed tool calls: the chunks' tool_call_chunks concatenate into one tool call whose
//     args validate and equal the invoked call for the same seed;
//   - useResponsesApi (ChatOpenAI over /v1/responses): invoke, stream with usage (the same
//     text and usage for the same seed), withStructuredOutput through text.format json_schema,
//     a forced named tool call (function_call item) streamed and not;
//   - errors as the openai SDK's exceptions that LangChain raises, with LangChain's
//     lc_error_code: 400 BadRequestError, a prompt over the context is LangChain's
//     ContextOverflowError, 401 AuthenticationError (MODEL_AUTHENTICATION), 404 NotFoundError
//     (MODEL_NOT_FOUND), streamed too.
// The model is tiny: structure and validity are asserted, not content quality. Random seeds are
// printed. Exits 77 when the @langchain/openai / @langchain/core / openai / zod packages are
// missing.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { defaultModelEnv, postJSON, startDaemon, tmpDir } from './daemon.mjs';

let ChatOpenAI, HumanMessage, SystemMessage, ToolMessage, tool, concat, ContextOverflowError,
  OpenAI, z;
try {
  ({ ChatOpenAI } = await import('@langchain/openai'));
  ({ HumanMessage, SystemMessage, ToolMessage } = await import('@langchain/core/messages'));
  ({ tool } = await import('@langchain/core/tools'));
  ({ concat } = await import('@langchain/core/utils/stream'));
  ({ ContextOverflowError } = await import('@langchain/core/errors'));
  OpenAI = (await import('openai')).default;
  ({ z } = await import('zod'));
} catch (e) {
  console.error(`SKIP: the @langchain/openai / @langchain/core / openai / zod npm packages are not installed (cd tests && npm ci): ${e}`);
  process.exit(77);
}
const { BIN, MODEL_DIR } = defaultModelEnv();
const KEY = 'sk-langchain-test';
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
const TzArg = z.object({ tz: z.enum(['UTC', 'CET', 'PST']) });

describe('LangChain ChatOpenAI on the embedded model', () => {
  let d;
  const bodies = [], urls = []; // the JSON bodies LangChain sent and where, in order
  const recordingFetch = async (url, init) => {
    if (typeof init?.body === 'string') {
      bodies.push(JSON.parse(init.body));
      urls.push(String(url));
    }
    return fetch(url, init);
  };
  const lastBody = () => bodies[bodies.length - 1];
  const chat = (fields = {}) => new ChatOpenAI({
    model: MODEL, apiKey: KEY, maxRetries: 0, useResponsesApi: false,
    configuration: { baseURL: d.base + '/v1', fetch: recordingFetch }, ...fields,
  });
  let ran = [];
  const weatherTool = tool(async ({ city }) => {
    ran.push(city);
    return JSON.stringify({ city, temp_c: 21, sky: 'sun' });
  }, { name: 'get_weather', description: 'The current weather of a city', schema: CityArg });
  const timeTool = tool(async ({ tz }) => `12:00 ${tz}`,
    { name: 'get_time', description: 'The time in a zone', schema: TzArg });

  before(async () => {
    const keys = path.join(tmpDir(), 'keys');
    fs.writeFileSync(keys, `${KEY}\n`, { mode: 0o600 });
    d = await startDaemon({ bin: BIN, model: MODEL_DIR, timeoutMs: 120000,
      args: ['--log.level=warn', `--model.served_names=${MODEL}`, `--server.api_key_file=${keys}`] });
  });
  after(async () => { if (d) assert.equal((await d.stop()).code, 0, d.log()); });

  test('invoke: text, finish_reason, usage_metadata, and the request it sends', async () => {
    const s = nextSeed();
    const m = chat({ maxTokens: 16, temperature: 0.8, modelKwargs: { seed: s } });
    const msg = await m.invoke([new SystemMessage('You are terse.'),
      new HumanMessage('Tell me about foxes.')]);
    const body = lastBody();
    assert.equal(body.model, MODEL);
    assert.equal(body.max_tokens, 16);
    assert.equal(body.seed, s);
    assert.deepEqual(body.messages.map((x) => x.role), ['system', 'user']);
    assert.equal(typeof msg.content, 'string');
    noMarkers(msg.content, 'content');
    const fr = msg.response_metadata.finish_reason;
    assert.ok(['stop', 'length'].includes(fr), `seed ${s}: ${fr}`);
    const u = msg.usage_metadata;
    assert.ok(u.input_tokens > 0 && u.output_tokens >= 1 && u.output_tokens <= 16, JSON.stringify(u));
    assert.equal(u.total_tokens, u.input_tokens + u.output_tokens);
    if (fr === 'length') assert.equal(u.output_tokens, 16);
    const raw = await postJSON(d.base, '/v1/chat/completions', body,
      { Authorization: `Bearer ${KEY}` });
    assert.equal(raw.status, 200, raw.text);
    assert.equal(raw.json.choices[0].message.content ?? '', msg.content, `seed ${s}`);
  });

  test('stream with usage: chunks add up to the invoked message', async () => {
    const s = nextSeed();
    const m = chat({ maxTokens: 24, temperature: 1, streamUsage: true, modelKwargs: { seed: s } });
    const input = [new HumanMessage('Write a line about the sea.')];
    const once = await m.invoke(input);
    let full, n = 0;
    for await (const ch of await m.stream(input)) { full = full ? concat(full, ch) : ch; n++; }
    const body = lastBody();
    assert.equal(body.stream, true);
    assert.deepEqual(body.stream_options, { include_usage: true });
    assert.ok(n >= 2, `seed ${s}: ${n} chunks`);
    assert.equal(full.content, once.content, `seed ${s}`);
    noMarkers(full.content, 'streamed content');
    assert.deepEqual(
      [full.usage_metadata.input_tokens, full.usage_metadata.output_tokens],
      [once.usage_metadata.input_tokens, once.usage_metadata.output_tokens], `seed ${s}`);
    assert.equal(full.response_metadata.finish_reason, once.response_metadata.finish_reason);
  });

  test('withStructuredOutput (jsonSchema and functionCalling): finishes, validates', async () => {
    for (const method of ['jsonSchema', 'functionCalling']) {
      for (let i = 0; i < 2; i++) {
        const s = nextSeed();
        const m = chat({ maxTokens: 300, temperature: 1, modelKwargs: { seed: s } });
        const r = await m.withStructuredOutput(Weather, { name: 'weather', method, includeRaw: true })
          .invoke('What is the weather in Oslo? Answer in JSON.');
        const body = lastBody();
        const fr = r.raw.response_metadata.finish_reason;
        if (method === 'jsonSchema') {
          assert.equal(body.response_format.type, 'json_schema');
          assert.equal(fr, 'stop', `seed ${s}: ${r.raw.content}`);
        } else {
          assert.deepEqual(body.tool_choice, { type: 'function', function: { name: 'weather' } });
          assert.equal(fr, 'tool_calls', `seed ${s}: ${JSON.stringify(r.raw)}`);
          noMarkers(r.raw.content, 'content');
        }
        assert.ok(r.parsed, `seed ${s} ${method}: ${JSON.stringify(r.raw.content)}`);
        Weather.parse(r.parsed);
      }
    }
  });

  test('tool round trip: forced call, the tool runs, the model answers from the result', async () => {
    const s = nextSeed();
    ran = [];
    const m = chat({ maxTokens: 200, modelKwargs: { seed: s } });
    const history = [new HumanMessage('What is the weather in Paris?')];
    const first = bodies.length;
    const ai = await m.bindTools([weatherTool, timeTool], { tool_choice: 'any' }).invoke(history);
    assert.equal(bodies[first].tool_choice, 'required');
    assert.equal(ai.response_metadata.finish_reason, 'tool_calls', `seed ${s}`);
    assert.equal(ai.tool_calls.length, 1, `seed ${s}: ${JSON.stringify(ai.tool_calls)}`);
    assert.deepEqual(ai.invalid_tool_calls ?? [], []);
    const call = ai.tool_calls[0];
    assert.ok(['get_weather', 'get_time'].includes(call.name));
    noMarkers(ai.content, 'content');
    const t = call.name === 'get_weather' ? weatherTool : timeTool;
    (call.name === 'get_weather' ? CityArg : TzArg).parse(call.args);
    const result = await t.invoke(call); // a ToolMessage with the call's id
    assert.ok(result instanceof ToolMessage);
    assert.equal(result.tool_call_id, call.id);
    if (call.name === 'get_weather') assert.deepEqual(ran, [call.args.city]);
    history.push(ai, result);
    // the answer: tools still bound, none called (tool_choice none)
    const answer = await m.bindTools([weatherTool, timeTool], { tool_choice: 'none' })
      .invoke(history);
    const b2 = lastBody();
    const asst = b2.messages.find((x) => x.role === 'assistant');
    assert.equal(asst.tool_calls.length, 1);
    assert.equal(asst.tool_calls[0].id, call.id);
    assert.deepEqual(JSON.parse(asst.tool_calls[0].function.arguments), call.args);
    const toolMsg = b2.messages.find((x) => x.role === 'tool');
    assert.equal(toolMsg.tool_call_id, call.id);
    assert.equal(toolMsg.content, result.content);
    assert.ok(['stop', 'length'].includes(answer.response_metadata.finish_reason), `seed ${s}`);
    assert.deepEqual(answer.tool_calls, []);
    assert.equal(typeof answer.content, 'string');
    noMarkers(answer.content, 'answer');
  });

  test('streamed tool calls: chunks concatenate to the invoked call', async () => {
    for (let i = 0; i < 2; i++) {
      const s = nextSeed();
      const m = chat({ maxTokens: 200, modelKwargs: { seed: s } })
        .bindTools([weatherTool, timeTool], { tool_choice: 'any' });
      const input = [new HumanMessage('Weather in Rome?')];
      const once = await m.invoke(input);
      assert.equal(once.tool_calls.length, 1, `seed ${s}`);
      let full, chunksWithCalls = 0;
      for await (const ch of await m.stream(input)) {
        if (ch.tool_call_chunks?.length) chunksWithCalls++;
        full = full ? concat(full, ch) : ch;
      }
      assert.equal(lastBody().stream, true);
      assert.ok(chunksWithCalls >= 1, `seed ${s}`);
      assert.equal(full.tool_calls.length, 1, `seed ${s}: ${JSON.stringify(full.tool_call_chunks)}`);
      const c = full.tool_calls[0];
      assert.equal(c.name, once.tool_calls[0].name, `seed ${s}`);
      assert.deepEqual(c.args, once.tool_calls[0].args, `seed ${s}`);
      assert.equal(c.id, full.tool_call_chunks[0].id);
      (c.name === 'get_weather' ? CityArg : TzArg).parse(c.args);
      assert.equal(full.response_metadata.finish_reason, 'tool_calls');
      assert.equal(full.content, '');
    }
  });

  test('useResponsesApi: invoke, stream with usage, withStructuredOutput over /v1/responses',
    async () => {
      const s = nextSeed();
      const m = chat({ useResponsesApi: true, maxTokens: 20, temperature: 1, streamUsage: true,
        modelKwargs: { seed: s } });
      const msg = await m.invoke('Tell me about foxes.');
      assert.match(urls[urls.length - 1], /\/v1\/responses$/);
      assert.equal(lastBody().max_output_tokens, 20);
      assert.equal(lastBody().seed, s);
      const text = (c) => (typeof c === 'string' ? c
        : c.filter((b) => b.type === 'text').map((b) => b.text).join(''));
      noMarkers(text(msg.content), 'content');
      assert.ok(['completed', 'incomplete'].includes(msg.response_metadata.status), `seed ${s}`);
      const u = msg.usage_metadata;
      assert.ok(u.input_tokens > 0 && u.output_tokens >= 1 && u.output_tokens <= 20, JSON.stringify(u));
      let full;
      for await (const ch of await m.stream('Tell me about foxes.')) full = full ? concat(full, ch) : ch;
      assert.equal(lastBody().stream, true);
      assert.equal(text(full.content), text(msg.content), `seed ${s}`);
      assert.deepEqual([full.usage_metadata.input_tokens, full.usage_metadata.output_tokens],
        [u.input_tokens, u.output_tokens], `seed ${s}`);
      const so = await chat({ useResponsesApi: true, maxTokens: 300, modelKwargs: { seed: s } })
        .withStructuredOutput(Weather, { name: 'weather', method: 'jsonSchema' })
        .invoke('What is the weather in Oslo? Answer in JSON.');
      assert.equal(lastBody().text.format.type, 'json_schema');
      Weather.parse(so);
      // a forced call by name ({type:"function", name}); LangChain 1.5.8 drops a string
      // tool_choice such as 'any' on this path, so the named form is the one that reaches us
      const tm = chat({ useResponsesApi: true, maxTokens: 200, modelKwargs: { seed: s } })
        .bindTools([weatherTool, timeTool], { tool_choice: 'get_weather' });
      const call = await tm.invoke('What is the weather in Paris?');
      assert.deepEqual(lastBody().tool_choice, { type: 'function', name: 'get_weather' });
      assert.equal(call.tool_calls.length, 1, `seed ${s}: ${JSON.stringify(call.content)}`);
      assert.equal(call.tool_calls[0].name, 'get_weather');
      CityArg.parse(call.tool_calls[0].args);
      let fc;
      for await (const ch of await tm.stream('What is the weather in Paris?')) fc = fc ? concat(fc, ch) : ch;
      assert.equal(fc.tool_calls.length, 1, `seed ${s}`);
      assert.deepEqual(fc.tool_calls[0].args, call.tool_calls[0].args, `seed ${s}`);
    });

  test('errors: BadRequestError, ContextOverflowError, AuthenticationError, NotFoundError', async () => {
    await assert.rejects(chat({ temperature: 2.5 }).invoke('x'),
      (e) => e instanceof OpenAI.BadRequestError && e.status === 400 && e.param === 'temperature');
    await assert.rejects(chat({ maxTokens: 1 << 24 }).invoke('x'),
      (e) => e instanceof ContextOverflowError && e.cause instanceof OpenAI.BadRequestError &&
        e.cause.code === 'context_length_exceeded');
    await assert.rejects(chat({ apiKey: 'sk-wrong' }).invoke('x'),
      (e) => e instanceof OpenAI.AuthenticationError && e.status === 401 &&
        e.lc_error_code === 'MODEL_AUTHENTICATION');
    await assert.rejects(chat({ model: 'gpt-4o' }).invoke('x'),
      (e) => e instanceof OpenAI.NotFoundError && e.status === 404 &&
        e.code === 'model_not_found' && e.lc_error_code === 'MODEL_NOT_FOUND');
    await assert.rejects(async () => { for await (const _ of await chat({ model: 'gpt-4o' }).stream('x')); },
      (e) => e instanceof OpenAI.NotFoundError && e.lc_error_code === 'MODEL_NOT_FOUND');
  });
});
