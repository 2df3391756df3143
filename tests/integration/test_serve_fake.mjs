// test_serve_fake.mjs - the HTTP daemon against the fake engine (tests/server/fake_engine.c):
// exact texts (the fake echoes what follows "ECHO:" in the prompt), SSE framing, stop strings,
// limits, every error status, concurrency, disconnects, drain, sd_notify, API keys.
// Usage: node test_serve_fake.mjs  (env TANDEM_FAKE_BIN, TANDEM_NOTIFY_LISTEN, TANDEM_SRC)
// Exits 77 (skip) when the openai npm package is not installed (tests/: npm ci).
import { spawn, spawnSync } from 'node:child_process';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { metrics, parseSSE, postJSON, sleep, startDaemon, tmpDir, waitFor, hasCurl } from './daemon.mjs';

let OpenAI;
try {
  OpenAI = (await import('openai')).default;
} catch {
  console.error('SKIP: the openai npm package is not installed (cd tests && npm ci)');
  process.exit(77);
}

const BIN = process.env.TANDEM_FAKE_BIN;
const SRC = process.env.TANDEM_SRC;
const LISTEN = process.env.TANDEM_NOTIFY_LISTEN;
assert.ok(BIN && SRC, 'TANDEM_FAKE_BIN and TANDEM_SRC must be set');

const work = tmpDir();
const model = path.join(work, 'fake-model');
{
  const r = spawnSync('node', [path.join(SRC, 'tests/server/make_tokenizer.mjs'), model]);
  assert.equal(r.status, 0, String(r.stderr));
}
// 'x', the model most requests name, is served as an alias (model.served_names)
const common = ['--model.template=deepseek-v3', '--model.name=fake-model',
  '--model.served_names=fake-model,x', '--log.level=warn'];

function isError(res, status, type, param) {
  assert.equal(res.status, status, res.text);
  assert.ok(res.json && res.json.error, `no error object: ${res.text}`);
  const e = res.json.error;
  assert.equal(typeof e.message, 'string');
  assert.ok(e.message.length > 0);
  assert.equal(e.type, type);
  assert.ok('param' in e && 'code' in e, res.text);
  if (param !== undefined) assert.equal(e.param, param, res.text);
  return e;
}

describe('fake engine daemon', () => {
  let d, client;
  before(async () => {
    d = await startDaemon({ bin: BIN, model, args: [...common, '--model.context=256',
      '--server.max_body_bytes=4096', '--engine.max_running=8', '--engine.max_queued=256'] });
    client = new OpenAI({ baseURL: d.base + '/v1', apiKey: 'unused', maxRetries: 0 });
  });
  after(async () => {
    const r = await d.stop();
    assert.equal(r.code, 0, d.log());
  });

  test('models, health, request id', async () => {
    const models = await client.models.list();
    assert.deepEqual(models.data.map((m) => m.id), ['fake-model', 'x']);
    assert.equal(models.data[0].object, 'model');
    const h = await fetch(d.base + '/health', { headers: { 'X-Request-Id': 'abc-123<script>' } });
    assert.equal(h.status, 200);
    assert.equal(h.headers.get('x-request-id'), 'abc-123script');
    const h2 = await fetch(d.base + '/health');
    assert.match(h2.headers.get('x-request-id'), /^req-[0-9a-f]{16}$/);
  });

  test('chat, non-streaming: exact shape', async () => {
    const r = await client.chat.completions.create({ model: 'x', messages: [
      { role: 'system', content: 'be brief' },
      { role: 'user', content: [{ type: 'text', text: 'ECHO:' }, { type: 'text', text: 'Hello world!' }] }] });
    assert.match(r.id, /^chatcmpl-/);
    assert.equal(r.object, 'chat.completion');
    assert.equal(typeof r.created, 'number');
    assert.equal(r.model, 'fake-model');
    assert.match(r.system_fingerprint, /^fp_/);
    assert.equal(r.choices.length, 1);
    const c = r.choices[0];
    assert.equal(c.index, 0);
    assert.equal(c.message.role, 'assistant');
    assert.equal(c.message.content, 'Hello world!');
    assert.equal(c.finish_reason, 'stop');
    assert.equal(c.logprobs, null);
    assert.ok(r.usage.prompt_tokens > 5);
    assert.ok(r.usage.completion_tokens >= 2);
    assert.equal(r.usage.total_tokens, r.usage.prompt_tokens + r.usage.completion_tokens);
    assert.equal(typeof r.usage.prompt_tokens_details.cached_tokens, 'number');
  });

  test('chat, streaming with include_usage (SDK and raw SSE)', async () => {
    const stream = await client.chat.completions.create({ model: 'x', stream: true,
      stream_options: { include_usage: true },
      messages: [{ role: 'user', content: 'ECHO:The quick brown fox jumps.' }] });
    const chunks = [];
    for await (const ch of stream) chunks.push(ch);
    assert.equal(chunks[0].choices[0].delta.role, 'assistant');
    const text = chunks.map((c) => c.choices[0]?.delta?.content ?? '').join('');
    assert.equal(text, 'The quick brown fox jumps.');
    const fin = chunks.filter((c) => c.choices[0]?.finish_reason);
    assert.equal(fin.length, 1);
    assert.equal(fin[0].choices[0].finish_reason, 'stop');
    const last = chunks[chunks.length - 1];
    assert.deepEqual(last.choices, []);
    assert.ok(last.usage.completion_tokens > 3);
    for (const c of chunks.slice(0, -1)) {
      assert.equal(c.object, 'chat.completion.chunk');
      assert.equal(c.usage, null);
    }
    const raw = await postJSON(d.base, '/v1/chat/completions', { stream: true,
      messages: [{ role: 'user', content: 'ECHO:abc' }] });
    assert.equal(raw.status, 200);
    assert.match(raw.headers.get('content-type'), /^text\/event-stream/);
    const sse = parseSSE(raw.text);
    assert.ok(sse.done, 'ends with data: [DONE]');
    assert.ok(sse.events.every((e) => !('usage' in e)), 'no usage key without include_usage');
  });

  test('legacy completions: non-streaming, streaming, echo, token prompt', async () => {
    const r = await client.completions.create({ model: 'x', prompt: 'ECHO:one two' });
    assert.equal(r.object, 'text_completion');
    assert.equal(r.choices[0].text, 'one two');
    assert.equal(r.choices[0].finish_reason, 'stop');
    const s = await client.completions.create({ model: 'x', prompt: 'ECHO:three four', stream: true });
    let t = '';
    let fr = null;
    for await (const ch of s) { t += ch.choices[0]?.text ?? ''; fr = ch.choices[0]?.finish_reason ?? fr; }
    assert.equal(t, 'three four');
    assert.equal(fr, 'stop');
    const e = await client.completions.create({ model: 'x', prompt: 'ECHO:x', echo: true });
    assert.equal(e.choices[0].text, 'ECHO:xx');
    const tk = await postJSON(d.base, '/tokenize', { prompt: 'ECHO:tokens' });
    const r2 = await client.completions.create({ model: 'x', prompt: tk.json.tokens });
    assert.equal(r2.choices[0].text, 'tokens');
    const multi = await client.completions.create({ model: 'x', prompt: ['ECHO:a', 'ECHO:b'], n: 2,
      temperature: 0 });
    assert.deepEqual(multi.choices.map((c) => [c.index, c.text]),
      [[0, 'a'], [1, 'a'], [2, 'b'], [3, 'b']]);
  });

  test('stop strings spanning tokens, both modes', async () => {
    const tk = await postJSON(d.base, '/tokenize', { prompt: 'Stop here', add_special_tokens: false });
    assert.ok(tk.json.count >= 2, 'the stop string spans several tokens');
    const msg = [{ role: 'user', content: 'ECHO:Hello world! Stop here. More text after.' }];
    const r = await client.chat.completions.create({ model: 'x', messages: msg, stop: ['nothing', 'Stop here'] });
    assert.equal(r.choices[0].message.content, 'Hello world! ');
    assert.equal(r.choices[0].finish_reason, 'stop');
    const s = await client.chat.completions.create({ model: 'x', messages: msg, stop: 'p he', stream: true });
    let t = '';
    let fr = null;
    for await (const ch of s) { t += ch.choices[0]?.delta?.content ?? ''; fr = ch.choices[0]?.finish_reason ?? fr; }
    assert.equal(t, 'Hello world! Sto');
    assert.equal(fr, 'stop');
    const c = await client.completions.create({ model: 'x', prompt: 'ECHO:abc def ghi', stop: ' de' });
    assert.equal(c.choices[0].text, 'abc');
  });

  test('max_tokens gives "length" in both modes', async () => {
    const msg = [{ role: 'user', content: 'ECHO:The quick brown fox jumps over the lazy dog again and again.' }];
    const r = await client.chat.completions.create({ model: 'x', messages: msg, max_tokens: 3 });
    assert.equal(r.choices[0].finish_reason, 'length');
    assert.equal(r.usage.completion_tokens, 3);
    const s = await client.chat.completions.create({ model: 'x', messages: msg, max_completion_tokens: 4,
      stream: true, stream_options: { include_usage: true } });
    let fr = null;
    let usage = null;
    for await (const ch of s) { fr = ch.choices[0]?.finish_reason ?? fr; usage = ch.usage ?? usage; }
    assert.equal(fr, 'length');
    assert.equal(usage.completion_tokens, 4);
  });

  test('n=2, seeds: same seed same text, choices differ', async () => {
    const msg = [{ role: 'user', content: 'tell me something' }];
    const a = await client.chat.completions.create({ model: 'x', messages: msg, n: 2, seed: 42, temperature: 0.8 });
    assert.equal(a.choices.length, 2);
    assert.deepEqual(a.choices.map((c) => c.index), [0, 1]);
    assert.notEqual(a.choices[0].message.content, a.choices[1].message.content);
    const b = await client.chat.completions.create({ model: 'x', messages: msg, n: 2, seed: 42, temperature: 0.8 });
    assert.deepEqual(b.choices.map((c) => c.message.content), a.choices.map((c) => c.message.content));
    const s = await client.chat.completions.create({ model: 'x', messages: msg, n: 2, seed: 42,
      temperature: 0.8, stream: true });
    const texts = ['', ''];
    const roles = [0, 0];
    for await (const ch of s) for (const c of ch.choices) {
      texts[c.index] += c.delta.content ?? '';
      if (c.delta.role) roles[c.index]++;
    }
    assert.deepEqual(roles, [1, 1]);
    assert.deepEqual(texts, a.choices.map((c) => c.message.content));
  });

  test('logprobs shapes', async () => {
    const r = await client.chat.completions.create({ model: 'x', logprobs: true, top_logprobs: 2,
      messages: [{ role: 'user', content: 'ECHO:Hello world' }] });
    const lp = r.choices[0].logprobs.content;
    assert.ok(lp.length >= 2);
    for (const e of lp) {
      assert.equal(typeof e.token, 'string');
      assert.equal(typeof e.logprob, 'number');
      assert.ok(Array.isArray(e.bytes));
      assert.equal(e.top_logprobs.length, 2);
      for (const t of e.top_logprobs) assert.deepEqual(Object.keys(t).sort(), ['bytes', 'logprob', 'token']);
    }
    assert.equal(lp.map((e) => e.token).join(''), 'Hello world');
    const c = await client.completions.create({ model: 'x', prompt: 'ECHO:Hello world', logprobs: 3 });
    const l = c.choices[0].logprobs;
    assert.equal(l.tokens.length, l.token_logprobs.length);
    assert.equal(l.tokens.length, l.top_logprobs.length);
    assert.equal(l.tokens.length, l.text_offset.length);
    assert.equal(l.text_offset[0], 0);
    const s = await client.chat.completions.create({ model: 'x', logprobs: true, stream: true,
      messages: [{ role: 'user', content: 'ECHO:Hello world' }] });
    let n = 0;
    for await (const ch of s) n += ch.choices[0]?.logprobs?.content?.length ?? 0;
    assert.equal(n, lp.length);
  });

  test('tokenize / detokenize', async () => {
    const t = await postJSON(d.base, '/tokenize', { prompt: 'Hello world' });
    assert.equal(t.status, 200);
    assert.equal(t.json.count, t.json.tokens.length);
    assert.equal(t.json.max_model_len, 256);
    const dt = await postJSON(d.base, '/detokenize', { tokens: t.json.tokens });
    assert.equal(dt.json.prompt, '<｜begin▁of▁sentence｜>Hello world');
    const m = await postJSON(d.base, '/tokenize', { messages: [{ role: 'user', content: 'hi' }] });
    assert.equal(m.status, 200);
    const md = await postJSON(d.base, '/detokenize', { tokens: m.json.tokens });
    assert.equal(md.json.prompt, '<｜begin▁of▁sentence｜><｜User｜>hi<｜Assistant｜>');
    isError(await postJSON(d.base, '/detokenize', { tokens: [999999] }), 400, 'invalid_request_error', 'tokens');
  });

  test('errors: status, type and param', async () => {
    const chat = (b, h) => postJSON(d.base, '/v1/chat/completions', b, h);
    let e = isError(await chat('{"messages": ['), 400, 'invalid_request_error');
    assert.equal(e.code, 'invalid_json');
    e = isError(await chat(Buffer.from([0x7b, 0x22, 0xff, 0x22, 0x3a, 0x31, 0x7d])), 400, 'invalid_request_error');
    assert.equal(e.code, 'invalid_utf8');
    isError(await chat({ model: 'x' }), 400, 'invalid_request_error', 'messages');
    isError(await chat({ messages: [{ role: 'user', content: 'x' }], temperature: 'hot' }), 400,
      'invalid_request_error', 'temperature');
    isError(await chat({ messages: [{ role: 'user', content: 'x' }], max_tokens: -1 }), 400,
      'invalid_request_error', 'max_tokens');
    isError(await chat({ messages: [{ role: 'user', content: 'x' }], n: 0 }), 400, 'invalid_request_error', 'n');
    isError(await chat({ messages: [{ role: 'user', content: 'x' }], logit_bias: { 99999: 1 } }), 400,
      'invalid_request_error', 'logit_bias');
    // context overflow: both numbers in the message
    e = isError(await chat({ messages: [{ role: 'user', content: 'word '.repeat(300) }] }), 400,
      'invalid_request_error', 'messages');
    assert.equal(e.code, 'context_length_exceeded');
    assert.match(e.message, /256 tokens/);
    assert.match(e.message, /\d{3} tokens/);
    e = isError(await chat({ messages: [{ role: 'user', content: 'x' }], max_tokens: 1000 }), 400,
      'invalid_request_error', 'max_tokens');
    assert.match(e.message, /256/);
    isError(await postJSON(d.base, '/v1/nope', {}), 404, 'not_found_error');
    const r405 = await fetch(d.base + '/v1/chat/completions');
    assert.equal(r405.status, 405);
    assert.equal(r405.headers.get('allow'), 'POST');
    isError({ status: r405.status, json: await r405.json(), text: '' }, 405, 'invalid_request_error');
    const big = { messages: [{ role: 'user', content: 'x'.repeat(5000) }] };
    e = isError(await chat(big), 413, 'invalid_request_error');
    assert.equal(e.code, 'request_too_large');
    // the SDK surfaces errors as APIError with the status
    await assert.rejects(client.chat.completions.create({ model: 'x', messages: [] }),
      (err) => err.status === 400 && err.error?.param === 'messages');
  });

  test('curl: streaming, malformed JSON, 413 while reading a chunked body', { skip: !hasCurl() }, () => {
    const out = spawnSync('curl', ['-sN', '-H', 'Content-Type: application/json', '-d',
      '{"stream":true,"messages":[{"role":"user","content":"ECHO:curl works"}]}',
      d.base + '/v1/chat/completions'], { encoding: 'utf8' });
    assert.equal(out.status, 0);
    const sse = parseSSE(out.stdout);
    assert.ok(sse.done);
    assert.equal(sse.events.map((e) => e.choices[0]?.delta?.content ?? '').join(''), 'curl works');
    const bad = spawnSync('curl', ['-s', '-w', '\n%{http_code}', '-H', 'Content-Type: application/json',
      '-d', '{oops', d.base + '/v1/completions'], { encoding: 'utf8' });
    assert.match(bad.stdout, /"invalid_json"[\s\S]*\n400$/);
    // curl -d alone sends a form type: not JSON (415)
    const form = spawnSync('curl', ['-s', '-w', '\n%{http_code}', '-d', '{"prompt":"x"}',
      d.base + '/v1/completions'], { encoding: 'utf8' });
    assert.match(form.stdout, /"unsupported_media_type"[\s\S]*\n415$/);
    const chunked = spawnSync('curl', ['-s', '-w', '\n%{http_code}', '-H', 'Transfer-Encoding: chunked',
      '-H', 'Content-Type: application/json', '--data-binary', '@-', d.base + '/v1/completions'],
    { encoding: 'utf8', input: 'y'.repeat(20000) });
    assert.match(chunked.stdout, /request_too_large[\s\S]*\n413$/);
  });

  test('64 concurrent clients all get complete answers', async () => {
    const jobs = [];
    for (let i = 0; i < 64; i++) {
      const want = `client ${i} says hello world`;
      const msg = [{ role: 'user', content: `ECHO:${want}` }];
      if (i % 2) {
        jobs.push(client.chat.completions.create({ model: 'x', messages: msg }).then((r) => {
          assert.equal(r.choices[0].message.content, want);
          assert.equal(r.choices[0].finish_reason, 'stop');
        }));
      } else {
        jobs.push((async () => {
          const s = await client.chat.completions.create({ model: 'x', messages: msg, stream: true });
          let t = '';
          let fr = null;
          for await (const ch of s) { t += ch.choices[0]?.delta?.content ?? ''; fr = ch.choices[0]?.finish_reason ?? fr; }
          assert.equal(t, want);
          assert.equal(fr, 'stop');
        })());
      }
    }
    await Promise.all(jobs);
    const m = await metrics(d.base);
    assert.equal(m.get('num_requests_running'), 0);
  });

  test('300 mutated requests: only 200, 400 or 404 (model), always the error shape, daemon healthy', async () => {
    let seed = Number(process.env.TANDEM_TEST_SEED ?? Math.floor(Math.random() * 1e9));
    console.error(`TANDEM_TEST_SEED=${seed}`);
    const rnd = () => { seed = (seed * 1103515245 + 12345) % 2147483648; return seed / 2147483648; };
    const valid = { model: 'x', messages: [{ role: 'user', content: 'ECHO:hello world' }], max_tokens: 8,
      temperature: 0.5, top_p: 0.9, stop: ['wor'], n: 2, logprobs: true, top_logprobs: 2,
      logit_bias: { 5: 1 }, seed: 3 };
    const vals = [null, true, false, 0, -1, 1.5, 1e308, -1e308, 2 ** 53, '', 'x', 'ééé', [], [1], {},
      { a: 1 }, '\u0000', 'A'.repeat(3000), [[]], [{}]];
    const fields = [...Object.keys(valid), 'messages.0.role', 'messages.0.content', 'messages.0',
      'prompt', 'stream_options', 'max_completion_tokens', 'min_tokens', 'top_k', 'echo', 'priority'];
    for (let i = 0; i < 300; i++) {
      const o = JSON.parse(JSON.stringify(valid));
      const f = fields[Math.floor(rnd() * fields.length)].split('.');
      let t = o;
      for (const p of f.slice(0, -1)) t = t[p];
      t[f.at(-1)] = vals[Math.floor(rnd() * vals.length)];
      if (rnd() < 0.3) o.stream = true;
      let body = JSON.stringify(o);
      if (rnd() < 0.1) body = body.slice(0, Math.floor(rnd() * body.length));
      const ep = rnd() < 0.7 ? '/v1/chat/completions' : '/v1/completions';
      const r = await postJSON(d.base, ep, body);
      // a string model other than 'x' (and 'fake-model') is not served: 404 model_not_found
      const unserved = typeof o.model === 'string' && o.model !== 'x' && o.model !== 'fake-model';
      assert.ok(r.status === 200 || r.status === 400 || (r.status === 404 && unserved),
        `${r.status} for ${body.slice(0, 200)}: ${r.text.slice(0, 200)}`);
      if (r.status === 400) isError(r, 400, 'invalid_request_error');
      if (r.status === 404) assert.equal(isError(r, 404, 'invalid_request_error').code, 'model_not_found');
    }
    assert.equal((await fetch(d.base + '/health')).status, 200);
  });

  test('metrics: names, labels, histograms', async () => {
    const m = await metrics(d.base);
    for (const name of ['num_requests_running', 'num_requests_waiting', 'kv_cache_usage_perc',
      'prompt_tokens_total', 'generation_tokens_total', 'prefix_cache_queries_total',
      'prefix_cache_hits_total']) {
      assert.ok(!Number.isNaN(m.get(name)), name);
    }
    assert.match(m.text, /^tandem:request_success_total\{model_name="fake-model",finished_reason="stop"\} [1-9]/m);
    for (const h of ['time_to_first_token_seconds', 'inter_token_latency_seconds',
      'e2e_request_latency_seconds', 'request_queue_time_seconds', 'request_prompt_tokens',
      'request_generation_tokens', 'iteration_tokens_total']) {
      assert.match(m.text, new RegExp(`^# TYPE tandem:${h} histogram$`, 'm'));
      assert.match(m.text, new RegExp(`^tandem:${h}_bucket\\{model_name="fake-model",le="\\+Inf"\\} [1-9]`, 'm'));
      assert.match(m.text, new RegExp(`^tandem:${h}_count\\{model_name="fake-model"\\} [1-9]`, 'm'));
    }
    assert.match(m.text, /^tandem:http_errors_total\{model_name="fake-model",code="JSON",status="400"\} [1-9]/m);
  });
});

describe('disconnects, limits, drain, notify, keys', () => {
  test('a client aborting mid-stream (and one waiting on a non-streamed answer) is cancelled', async () => {
    const d = await startDaemon({ bin: BIN, model, args: common, env: { TANDEM_FAKE_STEP_MS: '20' } });
    try {
      const base = (await metrics(d.base)).get('kv_cache_usage_perc');
      const ac = new AbortController();
      const r = await fetch(d.base + '/v1/chat/completions', { method: 'POST', signal: ac.signal,
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ stream: true, ignore_eos: true,
          messages: [{ role: 'user', content: 'ECHO:endless ' }] }) });
      const reader = r.body.getReader();
      await reader.read();
      await reader.read();
      assert.equal((await metrics(d.base)).get('num_requests_running'), 1);
      ac.abort();
      await waitFor(async () => (await metrics(d.base)).get('num_requests_running') === 0, 'running = 0');
      await waitFor(async () => (await metrics(d.base)).get('kv_cache_usage_perc') === base, 'KV at baseline');
      // non-streaming: the connection is suspended while the engine works; the probe notices
      const ac2 = new AbortController();
      const p = fetch(d.base + '/v1/completions', { method: 'POST', signal: ac2.signal,
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ prompt: 'ECHO:x', ignore_eos: true }) }).catch(() => null);
      await waitFor(async () => (await metrics(d.base)).get('num_requests_running') === 1, 'running = 1');
      ac2.abort();
      await p;
      await waitFor(async () => (await metrics(d.base)).get('num_requests_running') === 0, 'running = 0 again');
      const m = await metrics(d.base);
      assert.match(m.text, /finished_reason="abort"\} 2$/m);
      // the daemon still serves
      const ok = await postJSON(d.base, '/v1/completions', { prompt: 'ECHO:still here' });
      assert.equal(ok.json.choices[0].text, 'still here');
    } finally {
      assert.equal((await d.stop()).code, 0);
    }
  });

  test('queue full gives 429 with Retry-After', async () => {
    const d = await startDaemon({ bin: BIN, model, args: [...common, '--engine.max_running=1',
      '--engine.max_queued=0'], env: { TANDEM_FAKE_STEP_MS: '20' } });
    try {
      const ac = new AbortController();
      const first = fetch(d.base + '/v1/completions', { method: 'POST', signal: ac.signal,
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ prompt: 'ECHO:x', ignore_eos: true }) }).catch(() => null);
      await waitFor(async () => (await metrics(d.base)).get('num_requests_running') === 1, 'running = 1');
      const r = await postJSON(d.base, '/v1/completions', { prompt: 'ECHO:y' });
      isError(r, 429, 'rate_limit_error');
      assert.equal(r.json.error.code, 'queue_full');
      assert.equal(r.headers.get('retry-after'), '1');
      ac.abort();
      await first;
    } finally {
      assert.equal((await d.stop()).code, 0);
    }
  });

  test('503 while loading; sd_notify READY/STATUS/WATCHDOG/STOPPING; SIGTERM drains a stream', { skip: !LISTEN }, async () => {
    const dir = tmpDir();
    const sock = path.join(dir, 'notify.sock');
    const log = path.join(dir, 'notify.log');
    const listener = spawn(LISTEN, [sock, log], { stdio: 'ignore' });
    await waitFor(() => fs.existsSync(log), 'notify listener');
    const d = await startDaemon({ bin: BIN, model, args: [...common, '--server.drain_timeout_s=20'],
      env: { NOTIFY_SOCKET: sock, WATCHDOG_USEC: '200000', TANDEM_FAKE_STEP_MS: '10',
        TANDEM_FAKE_LOAD_MS: '1500' }, waitReady: false });
    try {
      const h = await fetch(d.base + '/health');
      isError({ status: h.status, json: await h.json(), text: '' }, 503, 'unavailable_error');
      isError(await postJSON(d.base, '/v1/completions', { prompt: 'x' }), 503, 'unavailable_error');
      await waitFor(async () => (await fetch(d.base + '/health')).status === 200, 'ready', 20000);
      await waitFor(() => /WATCHDOG=1/.test(fs.readFileSync(log, 'utf8')), 'WATCHDOG=1');
      // a stream of ~60 tokens at 10 ms each, then SIGTERM in the middle of it
      const want = 'the quick brown fox jumps over the lazy dog '.repeat(3).trim();
      const r = await fetch(d.base + '/v1/chat/completions', { method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ stream: true, messages: [{ role: 'user', content: `ECHO:${want}` }] }) });
      const reader = r.body.getReader();
      let text = '';
      const dec = new TextDecoder();
      const first = await reader.read();
      text += dec.decode(first.value);
      d.proc.kill('SIGTERM');
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        text += dec.decode(value);
      }
      const sse = parseSSE(text);
      assert.ok(sse.done, 'stream finished with [DONE]');
      assert.equal(sse.events.map((e) => e.choices[0]?.delta?.content ?? '').join(''), want);
      assert.equal(sse.events.at(-1).choices[0].finish_reason, 'stop');
      const ex = await d.exited;
      assert.equal(ex.code, 0, d.log());
      const msgs = fs.readFileSync(log, 'utf8');
      assert.match(msgs, /STATUS=loading/);
      assert.match(msgs, /READY=1/);
      assert.match(msgs, /STOPPING=1/);
      assert.ok(msgs.indexOf('READY=1') < msgs.indexOf('STOPPING=1'));
    } finally {
      await d.stop('SIGKILL');
      listener.kill('SIGTERM');
    }
  });

  test('drain deadline cancels what does not finish; exit 0', async () => {
    const d = await startDaemon({ bin: BIN, model, args: [...common, '--server.drain_timeout_s=1'],
      env: { TANDEM_FAKE_STEP_MS: '20' } });
    const r = await fetch(d.base + '/v1/chat/completions', { method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ stream: true, ignore_eos: true,
        messages: [{ role: 'user', content: 'ECHO:forever ' }] }) });
    const reader = r.body.getReader();
    await reader.read();
    d.proc.kill('SIGTERM');
    let text = '';
    const dec = new TextDecoder();
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      text += dec.decode(value);
    }
    const sse = parseSSE(text);
    assert.ok(sse.done);
    assert.equal(sse.events.at(-1).choices[0].finish_reason, 'length');
    assert.equal((await d.exited).code, 0);
  });

  test('replica name and drain grace: X-Tandem-Replica, /health detail, 503 while still serving', async () => {
    const bad = spawnSync(BIN, ['serve', '--model', model, ...common, '--server.replica_name=a\tb',
      '--server.port=1'], { encoding: 'utf8' });
    assert.equal(bad.status, 1);
    assert.match(bad.stderr, /server.replica_name must be printable ASCII/);
    const d = await startDaemon({ bin: BIN, model,
      args: [...common, '--server.replica_name=fake-1', '--server.drain_grace_s=2'] });
    const h = await fetch(d.base + '/health');
    assert.equal(h.headers.get('x-tandem-replica'), 'fake-1');
    const body = await h.json();
    assert.equal(body.status, 'ok');
    assert.equal(body.state, 'ready');
    assert.equal(body.replica, 'fake-1');
    for (const k of ['in_flight', 'running', 'waiting', 'kv_usage']) assert.equal(typeof body[k], 'number', k);
    const t0 = Date.now();
    d.proc.kill('SIGTERM');
    await waitFor(async () => (await fetch(d.base + '/health')).status === 503, '/health 503');
    const h2 = await fetch(d.base + '/health');
    const b2 = await h2.json();
    assert.equal(b2.state, 'draining');
    assert.equal(b2.error.type, 'unavailable_error');
    // in the grace new requests are served, streams carry the header too
    const r = await fetch(d.base + '/v1/chat/completions', { method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ stream: true, messages: [{ role: 'user', content: 'ECHO:still here' }] }) });
    assert.equal(r.status, 200);
    assert.equal(r.headers.get('x-tandem-replica'), 'fake-1');
    assert.ok(parseSSE(await r.text()).done);
    assert.equal((await d.exited).code, 0);
    assert.ok(Date.now() - t0 >= 1900, 'exits only after the grace');
  });

  test('API keys: 401, Bearer accepted, world-readable file refused, SIGHUP reload', async () => {
    const dir = tmpDir();
    const keys = path.join(dir, 'keys');
    fs.writeFileSync(keys, 'sk-first\n', { mode: 0o644 });
    fs.chmodSync(keys, 0o644);
    const bad = spawnSync(BIN, ['serve', '--model', model, ...common, `--server.api_key_file=${keys}`,
      '--server.port=1'], { encoding: 'utf8' });
    assert.notEqual(bad.status, 0);
    assert.match(bad.stderr, /world-readable/);
    fs.chmodSync(keys, 0o600);
    const d = await startDaemon({ bin: BIN, model, args: [...common, `--server.api_key_file=${keys}`] });
    try {
      const body = { messages: [{ role: 'user', content: 'ECHO:ok' }] };
      let e = isError(await postJSON(d.base, '/v1/chat/completions', body), 401, 'authentication_error');
      assert.equal(e.code, 'invalid_api_key');
      isError(await postJSON(d.base, '/v1/chat/completions', body, { Authorization: 'Bearer sk-wrong' }),
        401, 'authentication_error');
      const ok = await postJSON(d.base, '/v1/chat/completions', body, { Authorization: 'Bearer sk-first' });
      assert.equal(ok.status, 200);
      assert.equal((await fetch(d.base + '/health')).status, 200, '/health needs no key');
      const c = new OpenAI({ baseURL: d.base + '/v1', apiKey: 'sk-first', maxRetries: 0 });
      assert.equal((await c.chat.completions.create({ model: 'x', ...body })).choices[0].message.content, 'ok');
      await assert.rejects(new OpenAI({ baseURL: d.base + '/v1', apiKey: 'nope', maxRetries: 0 })
        .chat.completions.create({ model: 'x', ...body }), (err) => err.status === 401);
      fs.writeFileSync(keys, 'sk-second\n');
      d.proc.kill('SIGHUP');
      await waitFor(async () => (await fetch(d.base + '/v1/models',
        { headers: { Authorization: 'Bearer sk-second' } })).status === 200, 'new key accepted');
      isError(await postJSON(d.base, '/v1/chat/completions', body, { Authorization: 'Bearer sk-first' }),
        401, 'authentication_error');
      assert.ok(!d.log().includes('sk-first') && !d.log().includes('sk-second'), 'keys never logged');
    } finally {
      assert.equal((await d.stop()).code, 0);
    }
  });

  test('engine failure: error replies, /health 503, exit 1 (for Restart=on-failure)', async () => {
    const d = await startDaemon({ bin: BIN, model, args: common,
      env: { TANDEM_FAKE_STEP_MS: '10', TANDEM_FAKE_FAIL_AFTER: '30' } });
    const [r, st] = await Promise.all([
      postJSON(d.base, '/v1/completions', { prompt: 'ECHO:x', ignore_eos: true, max_tokens: 200 }),
      postJSON(d.base, '/v1/chat/completions', { stream: true, ignore_eos: true, max_tokens: 200,
        messages: [{ role: 'user', content: 'ECHO:y' }] })]);
    isError(r, 500, 'server_error');
    // mid-stream: an error event, then [DONE]
    const sse = parseSSE(st.text);
    assert.ok(sse.done);
    assert.equal(sse.events.at(-1).error.type, 'server_error');
    assert.equal(sse.events.at(-1).error.code, 'internal_error');
    const ex = await d.exited;
    assert.equal(ex.code, 1, d.log());
    assert.match(d.log(), /engine failed/);
  });

  test('socket activation (systemd-socket-activate)', { skip: spawnSync('which', ['systemd-socket-activate']).status !== 0 }, async () => {
    const { freePort } = await import('./daemon.mjs');
    const port = await freePort();
    const p = spawn('systemd-socket-activate', ['-l', `127.0.0.1:${port}`, BIN, 'serve', '--model', model,
      ...common, '--server.port=1'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let log = '';
    p.stderr.on('data', (x) => { log += x; });
    const exited = new Promise((res) => p.on('exit', (code) => res(code)));
    try {
      await waitFor(async () => {
        try { return (await fetch(`http://127.0.0.1:${port}/health`)).status === 200; } catch { return false; }
      }, 'the socket-activated daemon', 20000);
      const r = await postJSON(`http://127.0.0.1:${port}`, '/v1/completions', { prompt: 'ECHO:activated' });
      assert.equal(r.json.choices[0].text, 'activated');
    } finally {
      p.kill('SIGTERM');
      assert.equal(await exited, 0, log);
    }
  });

  test('idle connections time out; max_connections; CORS; HEAD', async () => {
    const net = await import('node:net');
    const d = await startDaemon({ bin: BIN, model, args: [...common, '--server.idle_timeout_s=2',
      '--server.max_connections=3', '--server.cors=true'] });
    try {
      const closedAfter = (sock) => new Promise((res) => {
        const t0 = Date.now();
        sock.on('close', () => res(Date.now() - t0));
        sock.on('error', () => {});
      });
      // a client that connects and sends half a request line is dropped after the idle timeout
      const idle = net.connect(d.port, '127.0.0.1');
      await new Promise((r) => idle.on('connect', r));
      idle.write('GET /hea');
      const ms = await closedAfter(idle);
      assert.ok(ms < 5000, `idle connection closed after ${ms} ms`);
      // three idle connections fill the limit; a fourth waits in the listen backlog, unserved,
      // until one of them goes away
      const socks = [];
      for (let i = 0; i < 3; i++) {
        const s = net.connect(d.port, '127.0.0.1');
        await new Promise((r) => s.on('connect', r));
        s.on('error', () => {});
        s.write('GET /he');
        socks.push(s);
      }
      await sleep(100);
      const extra = net.connect(d.port, '127.0.0.1');
      extra.on('error', () => {});
      let got = '';
      extra.on('data', (b) => { got += b; });
      extra.write('GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
      await sleep(500);
      assert.equal(got, '', 'not served while the limit is reached');
      for (const s of socks) s.destroy();
      await waitFor(() => got.startsWith('HTTP/1.1 200'), 'served once a slot is free', 5000);
      extra.destroy();
      // CORS (server.cors=true is any origin): preflight and the header on replies
      const origin = { Origin: 'http://app.example' };
      const pre = await fetch(d.base + '/v1/chat/completions', { method: 'OPTIONS', headers: origin });
      assert.equal(pre.status, 204);
      assert.equal(pre.headers.get('access-control-allow-origin'), '*');
      assert.match(pre.headers.get('access-control-allow-headers'), /Authorization/);
      const h = await fetch(d.base + '/health', { method: 'HEAD', headers: origin });
      assert.equal(h.status, 200);
      assert.equal(h.headers.get('access-control-allow-origin'), '*');
    } finally {
      assert.equal((await d.stop()).code, 0);
    }
  });
});
