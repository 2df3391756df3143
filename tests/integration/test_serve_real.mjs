// test_serve_real.mjs - `tandem serve` with the real engine on the tiny synthetic model
// (`tandem convert synth --preset tiny`), driven by the openai npm client and fetch.
// The model's text is random, so checks are about shape and consistency: usage counts,
// finish reasons, determinism of greedy/seeded sampling, stop strings cut exactly where a
// greedy answer contains them, cancellation leaving no running request and KV at baseline,
// SIGTERM draining a stream. Exits 77 when the openai package is missing.
// Env: TANDEM_BIN (the tandem binary), TANDEM_TEST_MODEL (optional: an existing model dir).
import { spawnSync } from 'node:child_process';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { metrics, parseSSE, postJSON, startDaemon, tmpDir, waitFor } from './daemon.mjs';

let OpenAI;
try {
  OpenAI = (await import('openai')).default;
} catch {
  console.error('SKIP: the openai npm package is not installed (cd tests && npm ci)');
  process.exit(77);
}
const BIN = process.env.TANDEM_BIN;
assert.ok(BIN, 'TANDEM_BIN must be set');

let model = process.env.TANDEM_TEST_MODEL;
if (!model) {
  model = path.join(tmpDir(), 'tiny');
  const r = spawnSync(BIN, ['convert', 'synth', '--preset', 'tiny', '--seed', '1', '--out', model],
    { encoding: 'utf8' });
  if (r.status !== 0) {
    console.error(`SKIP: cannot build the tiny model (tandem convert synth): ${r.stderr}`);
    process.exit(77);
  }
}
assert.ok(fs.existsSync(path.join(model, 'config.json')));
const common = ['--model.name=tiny', '--model.template=deepseek-v3', '--log.level=warn',
  '--engine.max_running=8'];

async function streamText(s) {
  let text = '';
  let finish = null;
  let usage = null;
  let roleFirst = null;
  for await (const ch of s) {
    if (roleFirst === null && ch.choices.length) roleFirst = ch.choices[0].delta?.role === 'assistant';
    text += ch.choices[0]?.delta?.content ?? ch.choices[0]?.text ?? '';
    finish = ch.choices[0]?.finish_reason ?? finish;
    usage = ch.usage ?? usage;
  }
  return { text, finish, usage, roleFirst };
}

describe('real engine, tiny model', () => {
  let d, client;
  const msg = [{ role: 'user', content: 'Tell me a story about a fox.' }];
  before(async () => {
    d = await startDaemon({ bin: BIN, model, args: common, timeoutMs: 120000 });
    client = new OpenAI({ baseURL: d.base + '/v1', apiKey: 'unused', maxRetries: 0, timeout: 120000 });
  });
  after(async () => {
    const r = await d.stop();
    assert.equal(r.code, 0, d.log());
  });

  test('chat: non-streaming and streaming agree (greedy), usage, length', async () => {
    const a = await client.chat.completions.create({ model: 'tiny', messages: msg, temperature: 0, max_tokens: 12 });
    assert.equal(a.object, 'chat.completion');
    assert.equal(a.choices[0].message.role, 'assistant');
    assert.ok(['stop', 'length'].includes(a.choices[0].finish_reason));
    assert.ok(a.usage.completion_tokens >= 1 && a.usage.completion_tokens <= 12);
    assert.equal(a.usage.total_tokens, a.usage.prompt_tokens + a.usage.completion_tokens);
    if (a.choices[0].finish_reason === 'length') assert.equal(a.usage.completion_tokens, 12);
    const s = await streamText(await client.chat.completions.create({ model: 'tiny', messages: msg,
      temperature: 0, max_tokens: 12, stream: true, stream_options: { include_usage: true } }));
    assert.equal(s.roleFirst, true);
    assert.equal(s.text, a.choices[0].message.content);
    assert.equal(s.finish, a.choices[0].finish_reason);
    assert.equal(s.usage.completion_tokens, a.usage.completion_tokens);
  });

  test('max_tokens gives "length" (ignore_eos), both modes; completions too', async () => {
    const a = await client.chat.completions.create({ model: 'tiny', messages: msg, max_tokens: 5, ignore_eos: true });
    assert.equal(a.choices[0].finish_reason, 'length');
    assert.equal(a.usage.completion_tokens, 5);
    const s = await streamText(await client.chat.completions.create({ model: 'tiny', messages: msg,
      max_tokens: 5, ignore_eos: true, stream: true, stream_options: { include_usage: true } }));
    assert.equal(s.finish, 'length');
    assert.equal(s.usage.completion_tokens, 5);
    const c = await client.completions.create({ model: 'tiny', prompt: 'Once upon a time', max_tokens: 4, ignore_eos: true });
    assert.equal(c.choices[0].finish_reason, 'length');
    assert.equal(c.usage.completion_tokens, 4);
    const cs = await streamText(await client.completions.create({ model: 'tiny', prompt: 'Once upon a time',
      max_tokens: 4, ignore_eos: true, stream: true }));
    assert.equal(cs.finish, 'length');
  });

  test('same seed -> same text; n=2', async () => {
    const req = { model: 'tiny', messages: msg, temperature: 1, seed: 1234, max_tokens: 16, ignore_eos: true };
    const a = await client.chat.completions.create(req);
    const b = await client.chat.completions.create(req);
    assert.equal(a.choices[0].message.content, b.choices[0].message.content);
    const n2 = await client.chat.completions.create({ ...req, n: 2 });
    assert.equal(n2.choices.length, 2);
    assert.deepEqual(n2.choices.map((c) => c.index), [0, 1]);
    assert.equal(n2.usage.completion_tokens, 32);
  });

  test('stop string cut exactly, across token boundaries', async () => {
    const base = await client.completions.create({ model: 'tiny', prompt: 'The', temperature: 0,
      max_tokens: 24, ignore_eos: true });
    const text = base.choices[0].text;
    // pick a stop string from the middle of the greedy text
    const lp = await client.completions.create({ model: 'tiny', prompt: 'The', temperature: 0,
      max_tokens: 24, ignore_eos: true, logprobs: 1 });
    assert.equal(lp.choices[0].text, text);
    const toks = lp.choices[0].logprobs.tokens;
    assert.equal(toks.length, 24);
    const from = text.length >= 8 ? Math.floor(text.length / 2) - 2 : 0;
    const stop = text.slice(from, from + 4);
    if (!stop.trim()) return;   // a whitespace-only window says little; the fake tests cover it
    const cut = text.indexOf(stop);
    const r = await client.completions.create({ model: 'tiny', prompt: 'The', temperature: 0,
      max_tokens: 24, ignore_eos: true, stop });
    assert.equal(r.choices[0].text, text.slice(0, cut));
    assert.equal(r.choices[0].finish_reason, 'stop');
    const s = await streamText(await client.completions.create({ model: 'tiny', prompt: 'The',
      temperature: 0, max_tokens: 24, ignore_eos: true, stop, stream: true }));
    assert.equal(s.text, text.slice(0, cut));
    assert.equal(s.finish, 'stop');
  });

  test('logprobs shape', async () => {
    const r = await client.chat.completions.create({ model: 'tiny', messages: msg, max_tokens: 4,
      ignore_eos: true, logprobs: true, top_logprobs: 3 });
    const c = r.choices[0].logprobs.content;
    assert.equal(c.length, 4);
    for (const e of c) {
      assert.ok(e.logprob <= 0);
      assert.equal(e.top_logprobs.length, 3);
      assert.ok(e.top_logprobs[0].logprob >= e.top_logprobs[2].logprob);
    }
  });

  test('context overflow names both numbers', async () => {
    const m = await client.models.list();
    const ctx = m.data[0].max_model_len;
    const r = await postJSON(d.base, '/v1/completions', { prompt: 'x', max_tokens: ctx + 10 });
    assert.equal(r.status, 400);
    assert.equal(r.json.error.code, 'context_length_exceeded');
    assert.match(r.json.error.message, new RegExp(`${ctx} tokens`));
  });

  test('64 concurrent clients get complete answers', async () => {
    const jobs = [];
    for (let i = 0; i < 64; i++) {
      const req = { model: 'tiny', messages: [{ role: 'user', content: `client ${i}` }], max_tokens: 8, ignore_eos: true };
      if (i % 2) {
        jobs.push(client.chat.completions.create(req).then((r) => {
          assert.equal(r.choices[0].finish_reason, 'length');
          assert.equal(r.usage.completion_tokens, 8);
        }));
      } else {
        jobs.push(client.chat.completions.create({ ...req, stream: true, stream_options: { include_usage: true } })
          .then(streamText).then((s) => {
            assert.equal(s.finish, 'length');
            assert.equal(s.usage.completion_tokens, 8);
          }));
      }
    }
    await Promise.all(jobs);
  });

  test('aborted stream: no running request, KV back at baseline', async () => {
    await waitFor(async () => (await metrics(d.base)).get('num_requests_running') === 0, 'idle');
    const kv0 = (await metrics(d.base)).get('kv_cache_usage_perc');
    const ac = new AbortController();
    const r = await fetch(d.base + '/v1/chat/completions', { method: 'POST', signal: ac.signal,
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ stream: true, ignore_eos: true, messages: msg }) });
    const reader = r.body.getReader();
    await reader.read();
    await reader.read();
    ac.abort();
    await waitFor(async () => (await metrics(d.base)).get('num_requests_running') === 0, 'running = 0');
    await waitFor(async () => (await metrics(d.base)).get('kv_cache_usage_perc') <= kv0, 'KV at baseline');
  });
});

describe('real engine: SIGTERM during a stream', () => {
  test('the stream completes, the process exits 0', async () => {
    const d = await startDaemon({ bin: BIN, model, args: [...common, '--server.drain_timeout_s=60'],
      timeoutMs: 120000 });
    const r = await fetch(d.base + '/v1/chat/completions', { method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ stream: true, ignore_eos: true, max_tokens: 48,
        messages: [{ role: 'user', content: 'hello' }] }) });
    const reader = r.body.getReader();
    const dec = new TextDecoder();
    let text = dec.decode((await reader.read()).value);
    d.proc.kill('SIGTERM');
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      text += dec.decode(value);
    }
    const sse = parseSSE(text);
    assert.ok(sse.done);
    assert.equal(sse.events.at(-1).choices[0].finish_reason, 'length');
    assert.equal((await d.exited).code, 0, d.log());
  });
});

describe('real engine: the prefix cache is per API key', () => {
  // A fresh random prompt of several KV blocks, so no earlier request shares it.
  const seed = Number(process.env.TANDEM_TEST_SEED ?? Math.floor(Math.random() * 1e9));
  console.log(`prefix-cache scope seed: ${seed}`);
  let x = seed;
  const words = [];
  for (let i = 0; i < 80; i++) {
    x = (x * 1103515245 + 12345) % 2147483648;
    words.push(`w${x % 9973}`);
  }
  const keysFile = () => {
    const f = path.join(tmpDir(), 'keys');
    fs.writeFileSync(f, 'sk-alice\nsk-bob\n', { mode: 0o600 });
    return f;
  };
  async function cached(d, key, extra = {}, tag = '') {
    const r = await postJSON(d.base, '/v1/chat/completions', {
      messages: [{ role: 'user', content: `${tag}${words.join(' ')}` }], max_tokens: 1, ...extra,
    }, { Authorization: `Bearer ${key}` });
    assert.equal(r.status, 200, r.text);
    return r.json.usage.prompt_tokens_details.cached_tokens;
  }

  test('scope=key (default): other keys and other cache_salts see no cached tokens', async () => {
    const d = await startDaemon({ bin: BIN, model, timeoutMs: 120000,
      args: [...common, `--server.api_key_file=${keysFile()}`] });
    try {
      assert.equal(await cached(d, 'sk-alice'), 0);
      assert.ok(await cached(d, 'sk-alice') > 0, 'the same key hits its own prefix');
      assert.equal(await cached(d, 'sk-bob'), 0, "another key never sees alice's prefix");
      assert.equal(await cached(d, 'sk-alice', { cache_salt: 'tenant-1' }), 0);
      assert.ok(await cached(d, 'sk-alice', { cache_salt: 'tenant-1' }) > 0);
      assert.equal(await cached(d, 'sk-alice', { cache_salt: 'tenant-2' }), 0);
      // the key of x-api-key (/v1/messages) counts as the bearer one; Responses pass cache_salt
      const content = `m ${words.join(' ')}`;
      const msg = async (key) => {
        const r = await postJSON(d.base, '/v1/messages', { model: 'tiny', max_tokens: 1,
          messages: [{ role: 'user', content }] }, { 'x-api-key': key });
        assert.equal(r.status, 200, r.text);
        return r.json.usage.cache_read_input_tokens;
      };
      assert.equal(await cached(d, 'sk-alice', {}, 'm '), 0);
      assert.ok(await msg('sk-alice') > 0, "alice's x-api-key sees her bearer prefix");
      assert.equal(await msg('sk-bob'), 0, "bob's x-api-key never sees alice's prefix");
      const resp = async (salt) => {
        const r = await postJSON(d.base, '/v1/responses', { model: 'tiny', max_output_tokens: 1,
          input: content, cache_salt: salt }, { Authorization: 'Bearer sk-alice' });
        assert.equal(r.status, 200, r.text);
        return r.json.usage.input_tokens_details.cached_tokens;
      };
      assert.equal(await resp('tenant-9'), 0, 'cache_salt reaches the Responses request');
      assert.ok(await resp('tenant-9') > 0);
      const c = await postJSON(d.base, '/v1/completions', { prompt: words.join(' '), max_tokens: 1,
        cache_salt: 'x'.repeat(257) }, { Authorization: 'Bearer sk-alice' });
      assert.equal(c.status, 400);
      assert.equal(c.json.error.param, 'cache_salt');
    } finally {
      assert.equal((await d.stop()).code, 0, d.log());
    }
  });

  test('scope=global: keys share, cache_salt still separates', async () => {
    const d = await startDaemon({ bin: BIN, model, timeoutMs: 120000,
      args: [...common, `--server.api_key_file=${keysFile()}`, '--engine.prefix_cache_scope=global'] });
    try {
      assert.equal(await cached(d, 'sk-alice', {}, 'g '), 0);
      assert.ok(await cached(d, 'sk-bob', {}, 'g ') > 0, 'shared across keys');
      assert.equal(await cached(d, 'sk-bob', { cache_salt: 's' }, 'g '), 0);
    } finally {
      assert.equal((await d.stop()).code, 0, d.log());
    }
  });
});
