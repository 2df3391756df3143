// test_serve_gguf.mjs - a model directory holding only an unsloth-style gguf-split set serves
// chat completions. The model: `tandem convert synth --layout gguf --mla-layout split
// --split-count 3 --experts iq2_xxs` (llama.cpp's whole-model GGUF: split attn_k_b / attn_v_b,
// IQ2_XXS routed experts, Q4_K linears, hyperparameters, tokenizer and chat template in the first
// file's metadata; nothing else in the directory). Checked: the directory holds exactly the three
// shards; the daemon starts on it without --model.template; greedy chat answers agree between
// streaming and not; the prompt is tokenized exactly as the same synth model in the default
// layout (tokenizer.json, tokenizer_config.json) tokenizes it, for plain, system and multi-turn
// chats, so the tokenizer and template really came from the GGUF metadata.
// Tiny dimensions here (CI); DeepSeek-V3's dimensions on the GPU host: scripts/gpu-run.sh gguf.
// Env: TANDEM_BIN; TANDEM_TEST_MODEL (optional: an existing GGUF-only model directory, e.g. the
// v3-slice one; the comparison with the default layout is then skipped); TANDEM_SERVE_ARGS
// (optional: more daemon options, space-separated, e.g. --gpu.placement=gpu).
// Exits 77 when the openai package is missing.
import { spawnSync } from 'node:child_process';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { startDaemon, tmpDir } from './daemon.mjs';

let OpenAI;
try {
  OpenAI = (await import('openai')).default;
} catch {
  console.error('SKIP: the openai npm package is not installed (cd tests && npm ci)');
  process.exit(77);
}
const BIN = process.env.TANDEM_BIN;
assert.ok(BIN, 'TANDEM_BIN must be set');
const seed = String(process.env.TANDEM_TEST_SEED ?? Math.floor(Math.random() * 1e9));
console.error(`seed ${seed} (TANDEM_TEST_SEED=${seed} replays)`);

function synth(out, extra) {
  const r = spawnSync(BIN, ['convert', 'synth', '--preset', 'tiny', '--seed', seed, '--threads', '2',
    '--out', out, ...extra], { encoding: 'utf8' });
  assert.equal(r.status, 0, `tandem convert synth ${extra.join(' ')}: ${r.stderr}`);
}

const given = process.env.TANDEM_TEST_MODEL;
const root = tmpDir();
const ggufDir = given ?? path.join(root, 'gguf');
const plainDir = path.join(root, 'plain');
if (!given) {
  synth(ggufDir, ['--layout', 'gguf', '--mla-layout', 'split', '--split-count', '3',
    '--experts', 'iq2_xxs', '--linears', 'q4_K']);
  synth(plainDir, []);
}

const chats = [
  [{ role: 'user', content: 'Tell me a story about a fox.' }],
  [{ role: 'system', content: 'You are terse.' }, { role: 'user', content: 'What is 2 + 2?' }],
  [{ role: 'user', content: 'Hello!' }, { role: 'assistant', content: 'Hi, how can I help?' },
    { role: 'user', content: 'Write a function that returns the sum of two numbers.' }],
];

async function serve(model) {
  const more = (process.env.TANDEM_SERVE_ARGS ?? '').split(/\s+/).filter((a) => a);
  const d = await startDaemon({ bin: BIN, model,
    args: ['--model.name=m', '--log.level=warn', ...more], timeoutMs: 300000 });
  const client = new OpenAI({ baseURL: d.base + '/v1', apiKey: 'unused', maxRetries: 0,
    timeout: 120000 });
  return { d, client };
}

describe('GGUF-only split model (split MLA, IQ2_XXS experts)', () => {
  let g;
  before(async () => { g = await serve(ggufDir); });
  after(async () => {
    const r = await g.d.stop();
    assert.equal(r.code, 0, g.d.log());
    if (!given) fs.rmSync(root, { recursive: true, force: true });
  });

  test('the directory holds only the gguf-split set', { skip: !!given }, () => {
    assert.deepEqual(fs.readdirSync(ggufDir).sort(),
      ['model-00001-of-00003.gguf', 'model-00002-of-00003.gguf', 'model-00003-of-00003.gguf']);
  });

  test('chat completions: greedy streaming equals non-streaming', async () => {
    for (const messages of chats) {
      const a = await g.client.chat.completions.create({ model: 'm', messages, temperature: 0,
        max_tokens: 16 });
      assert.equal(a.object, 'chat.completion');
      assert.equal(a.choices[0].message.role, 'assistant');
      assert.ok(['stop', 'length'].includes(a.choices[0].finish_reason));
      assert.ok(a.usage.completion_tokens >= 1 && a.usage.completion_tokens <= 16);
      let text = '';
      const s = await g.client.chat.completions.create({ model: 'm', messages, temperature: 0,
        max_tokens: 16, stream: true });
      for await (const ch of s) text += ch.choices[0]?.delta?.content ?? '';
      assert.equal(text, a.choices[0].message.content);
    }
  });

  test('`tandem tokenize` gives the default layout\'s ids', { skip: !!given }, () => {
    const text = '<｜begin▁of▁sentence｜>You are terse.<｜User｜>The year 2024 had 366 days; '
      + 'héllo wörld 東京 😀\n  def main():\n<｜Assistant｜><think>\n</think>ok<｜end▁of▁sentence｜>';
    const ids = (dir) => {
      const r = spawnSync(BIN, ['tokenize', '--model', dir, '--special'], { input: text,
        encoding: 'utf8' });
      assert.equal(r.status, 0, r.stderr);
      return JSON.parse(r.stdout);
    };
    const a = ids(ggufDir);
    assert.ok(a.length > 20);
    assert.deepEqual(a, ids(plainDir));
  });

  test('prompt tokens equal the default layout\'s (tokenizer and template from the GGUF)',
    { skip: !!given }, async () => {
      const p = await serve(plainDir);
      try {
        for (const messages of chats) {
          const req = { model: 'm', messages, temperature: 0, max_tokens: 1 };
          const a = await g.client.chat.completions.create(req);
          const b = await p.client.chat.completions.create(req);
          assert.equal(a.usage.prompt_tokens, b.usage.prompt_tokens);
        }
      } finally {
        const r = await p.d.stop();
        assert.equal(r.code, 0, p.d.log());
      }
    });
});
