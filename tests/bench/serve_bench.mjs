#!/usr/bin/env node
// serve_bench.mjs - serving benchmark for any OpenAI-compatible server (tandem, vLLM, llama.cpp).
//
// Sends random prompts of a fixed input length (token-id arrays through /v1/completions, so the
// length is exact on any server; or random words through /v1/chat/completions with
// --endpoint chat), streams the replies with ignore_eos and a fixed max_tokens, and reports
// vLLM's benchmark_serving metrics:
//   TTFT  time from sending the request to the first streamed token
//   TPOT  (e2e - TTFT) / (output tokens - 1): per-token time excluding the first token
//   ITL   every gap between consecutive streamed chunks (a chunk with k tokens counts as one gap
//         per vLLM: the gap is attributed to the chunk)
//   E2E   request latency
// each as mean / median (p50) / p99 (ms), plus request throughput (req/s), output token
// throughput and total (input + output) token throughput (tok/s) over the wall time of the run.
// Output token counts come from the usage chunk (stream_options.include_usage), else chunks.
//
// Load shapes: --max-concurrency 1,4,8 runs one sweep point per value (a semaphore caps the
// requests in flight); --request-rate R draws Poisson arrivals (exponential gaps, mean 1/R s;
// "inf" sends all at once). Both may be combined. --prefix-len K gives every prompt the same
// first K tokens (measures the prefix cache). --multi-turn sends each conversation twice: the
// second turn's prompt is the whole first prompt + --turn2-len (default 64) new tokens (a
// follow-up turn over a history; the reply is left out because its token ids are not portable
// across servers), and reports both turns' TTFT separately.
//
// Usage: node tests/bench/serve_bench.mjs --base-url http://127.0.0.1:8080/v1 \
//          --input-len 128 --output-len 64 --num-prompts 32 --max-concurrency 1,4,8,16 \
//          [--request-rate inf] [--model NAME] [--api-key KEY] [--vocab 1000] [--seed 1]
//          [--prefix-len 0] [--multi-turn] [--turn2-len 64] [--endpoint completions|chat]
//          [--result-file F.json]
// Results: a table on stdout and, with --result-file, JSON (one object per sweep point).
// As a module it exports the client (oneRequest, makePrompts, rng, summary) for other load tests
// (tests/fault/test_replicas.mjs); main() runs only when the file is the program.
import OpenAI from 'openai';
import { realpathSync, writeFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';

function parseArgs(argv) {
  const o = {
    baseUrl: 'http://127.0.0.1:8080/v1', model: '', apiKey: process.env.OPENAI_API_KEY || 'none',
    inputLen: 128, outputLen: 64, numPrompts: 32, maxConcurrency: [0], requestRate: Infinity,
    vocab: 1000, seed: 1, prefixLen: 0, multiTurn: false, turn2Len: 64, endpoint: 'completions',
    resultFile: '', warmup: 1, timeoutS: 600,
  };
  for (let i = 2; i < argv.length; i++) {
    const a = argv[i], v = argv[i + 1];
    const need = () => { if (v === undefined) throw new Error(`${a} needs a value`); i++; return v; };
    switch (a) {
      case '--base-url': o.baseUrl = need(); break;
      case '--model': o.model = need(); break;
      case '--api-key': o.apiKey = need(); break;
      case '--input-len': o.inputLen = +need(); break;
      case '--output-len': o.outputLen = +need(); break;
      case '--num-prompts': o.numPrompts = +need(); break;
      case '--max-concurrency': o.maxConcurrency = need().split(',').map(Number); break;
      case '--request-rate': { const r = need(); o.requestRate = r === 'inf' ? Infinity : +r; break; }
      case '--vocab': o.vocab = +need(); break;
      case '--seed': o.seed = +need(); break;
      case '--prefix-len': o.prefixLen = +need(); break;
      case '--multi-turn': o.multiTurn = true; break;
      case '--turn2-len': o.turn2Len = +need(); break;
      case '--endpoint': o.endpoint = need(); break;
      case '--result-file': o.resultFile = need(); break;
      case '--warmup': o.warmup = +need(); break;
      case '--timeout': o.timeoutS = +need(); break;
      case '--help': case '-h':
        console.log('see the header of tests/bench/serve_bench.mjs'); process.exit(0);
      default: throw new Error(`unknown option ${a}`);
    }
  }
  for (const k of ['inputLen', 'outputLen', 'numPrompts', 'vocab', 'prefixLen', 'turn2Len'])
    if (!Number.isInteger(o[k]) || o[k] < 0) throw new Error(`bad --${k}`);
  if (o.inputLen < 1 || o.outputLen < 1 || o.numPrompts < 1) throw new Error('lengths must be >= 1');
  if (o.prefixLen > o.inputLen) throw new Error('--prefix-len exceeds --input-len');
  if (!['completions', 'chat'].includes(o.endpoint)) throw new Error('bad --endpoint');
  return o;
}

// small seeded PRNG (mulberry32) so prompts are reproducible
export function rng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const WORDS = 'time person year way day thing man world life hand part child eye woman place work week case point government company number group problem fact'.split(' ');

export function makePrompts(o, rand) {
  const lo = Math.min(10, o.vocab - 1);
  const randIds = (n) => Array.from({ length: n }, () => lo + Math.floor(rand() * (o.vocab - lo)));
  const prefix = randIds(o.prefixLen);
  const out = [];
  for (let i = 0; i < o.numPrompts; i++) out.push(prefix.concat(randIds(o.inputLen - o.prefixLen)));
  return out;
}

const percentile = (sorted, p) => {
  if (!sorted.length) return 0;
  const idx = (sorted.length - 1) * p;   // linear interpolation, like numpy
  const f = Math.floor(idx), c = Math.ceil(idx);
  return sorted[f] + (sorted[c] - sorted[f]) * (idx - f);
};
export function summary(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const mean = s.length ? s.reduce((a, b) => a + b, 0) / s.length : 0;
  return { mean, median: percentile(s, 0.5), p99: percentile(s, 0.99), max: s.length ? s[s.length - 1] : 0, n: s.length };
}

// One streamed request. Returns {ok, ttft, e2e, itl[], outTokens, inTokens, usage, text, error}
// (usage: the usage chunk arrived, so the stream ran to its end). o.headers (optional) are sent
// with the request.
export async function oneRequest(client, o, prompt, wordsRand) {
  const body = {
    model: o.model, max_tokens: o.outputLen, temperature: 0, stream: true,
    stream_options: { include_usage: true }, ignore_eos: true,
  };
  let stream;
  const t0 = performance.now();
  const r = { ok: false, ttft: 0, e2e: 0, itl: [], outTokens: 0, inTokens: 0, usage: false, text: '', error: '' };
  const opts = o.headers ? { headers: o.headers } : undefined;
  try {
    if (o.endpoint === 'completions') {
      stream = await client.completions.create({ ...body, prompt }, opts);
    } else {
      const text = typeof prompt === 'string' ? prompt
        : prompt.map(() => WORDS[Math.floor(wordsRand() * WORDS.length)]).join(' ');
      stream = await client.chat.completions.create({ ...body, messages: [{ role: 'user', content: text }] }, opts);
    }
    let last = 0, chunks = 0;
    for await (const ch of stream) {
      if (ch.usage) {
        r.usage = true;
        r.outTokens = ch.usage.completion_tokens ?? r.outTokens;
        r.inTokens = ch.usage.prompt_tokens ?? r.inTokens;
      }
      const c = ch.choices && ch.choices[0];
      if (!c) continue;
      const piece = c.text ?? (c.delta && (c.delta.content ?? c.delta.reasoning_content)) ?? '';
      if (!piece && !c.logprobs) continue;
      const t = performance.now();
      if (!chunks) r.ttft = t - t0;
      else r.itl.push(t - last);
      last = t;
      chunks++;
      r.text += piece;
    }
    r.e2e = performance.now() - t0;
    if (!r.outTokens) r.outTokens = chunks;
    if (!r.inTokens && Array.isArray(prompt)) r.inTokens = prompt.length;
    r.ok = chunks > 0;
    if (!r.ok) r.error = 'no tokens streamed';
  } catch (e) {
    r.error = String(e && e.message || e);
    let c = e && e.cause;   // fetch failed <- other side closed (UND_ERR_SOCKET), ECONNRESET, ...
    while (c && !c.code && c.cause) c = c.cause;
    if (c) r.error += ` (${c.code || c.message})`;
    r.e2e = performance.now() - t0;
  }
  return r;
}

async function runPoint(client, o, prompts, concurrency, rand) {
  let inFlight = 0;
  const waiters = [];
  const acquire = async () => {
    if (!concurrency || inFlight < concurrency) { inFlight++; return; }
    await new Promise((res) => waiters.push(res));
    inFlight++;
  };
  const release = () => { inFlight--; const w = waiters.shift(); if (w) w(); };
  const results = [], second = [];
  const tStart = performance.now();
  const tasks = [];
  for (let i = 0; i < prompts.length; i++) {
    if (i > 0 && Number.isFinite(o.requestRate)) {
      const gap = -Math.log(1 - rand()) / o.requestRate;   // Poisson process
      await new Promise((res) => setTimeout(res, gap * 1000));
    }
    await acquire();
    tasks.push((async () => {
      try {
        const r = await oneRequest(client, o, prompts[i], rand);
        results.push(r);
        if (o.multiTurn && r.ok && o.endpoint === 'completions') {
          // turn 2: the whole first prompt (the history) + fresh tokens
          const lo = Math.min(10, o.vocab - 1);
          const more = Array.from({ length: o.turn2Len }, () => lo + Math.floor(rand() * (o.vocab - lo)));
          const r2 = await oneRequest(client, o, prompts[i].concat(more), rand);
          second.push(r2);
        }
      } finally {
        release();
      }
    })());
  }
  await Promise.all(tasks);
  const dur = (performance.now() - tStart) / 1000;
  const all = results.concat(second);
  const ok = all.filter((r) => r.ok);
  const outTok = ok.reduce((a, r) => a + r.outTokens, 0);
  const inTok = ok.reduce((a, r) => a + r.inTokens, 0);
  const tpot = ok.filter((r) => r.outTokens > 1).map((r) => (r.e2e - r.ttft) / (r.outTokens - 1));
  const m = {
    max_concurrency: concurrency || null, request_rate: Number.isFinite(o.requestRate) ? o.requestRate : 'inf',
    input_len: o.inputLen, output_len: o.outputLen, prefix_len: o.prefixLen,
    completed: ok.length, failed: all.length - ok.length, duration_s: dur,
    request_throughput: ok.length / dur, output_throughput: outTok / dur,
    total_token_throughput: (inTok + outTok) / dur, total_input_tokens: inTok, total_output_tokens: outTok,
    ttft_ms: summary(ok.map((r) => r.ttft)), tpot_ms: summary(tpot),
    itl_ms: summary(ok.flatMap((r) => r.itl)), e2el_ms: summary(ok.map((r) => r.e2e)),
    errors: [...new Set(all.filter((r) => !r.ok).map((r) => r.error))].slice(0, 5),
  };
  if (o.multiTurn) {
    m.turn1_ttft_ms = summary(results.filter((r) => r.ok).map((r) => r.ttft));
    m.turn2_ttft_ms = summary(second.filter((r) => r.ok).map((r) => r.ttft));
  }
  return m;
}

function fmt(m) {
  const s = (x) => `${x.mean.toFixed(1)}/${x.median.toFixed(1)}/${x.p99.toFixed(1)}`;
  return [String(m.max_concurrency ?? 'inf').padStart(5), String(m.request_rate).padStart(6),
    `${m.completed}/${m.completed + m.failed}`.padStart(7), m.request_throughput.toFixed(2).padStart(7),
    m.output_throughput.toFixed(1).padStart(9), m.total_token_throughput.toFixed(1).padStart(9),
    s(m.ttft_ms).padStart(22), s(m.tpot_ms).padStart(20), s(m.itl_ms).padStart(20), s(m.e2el_ms).padStart(24)].join(' ');
}

async function main() {
  const o = parseArgs(process.argv);
  const client = new OpenAI({ baseURL: o.baseUrl, apiKey: o.apiKey, maxRetries: 0, timeout: o.timeoutS * 1000 });
  if (!o.model) {
    const models = await client.models.list();
    o.model = models.data[0].id;
  }
  const rand = rng(o.seed);
  if (o.warmup > 0) await oneRequest(client, { ...o, outputLen: 2 }, makePrompts({ ...o, numPrompts: 1, prefixLen: 0 }, rng(o.seed + 99))[0], rand);
  console.log(`model ${o.model} at ${o.baseUrl}: ${o.numPrompts} prompts, input ${o.inputLen}` +
    ` (shared prefix ${o.prefixLen}), output ${o.outputLen}, endpoint ${o.endpoint}`);
  console.log('  conc   rate    done   req/s  out tok/s  tot tok/s   TTFT ms mean/p50/p99   TPOT ms mean/p50/p99    ITL ms mean/p50/p99     E2E ms mean/p50/p99');
  const points = [];
  for (const c of o.maxConcurrency) {
    const prompts = makePrompts(o, rng(o.seed + c));
    const m = await runPoint(client, o, prompts, c, rand);
    points.push({ model: o.model, base_url: o.baseUrl, endpoint: o.endpoint, ...m });
    console.log(fmt(m));
    if (m.errors.length) console.log(`        errors: ${m.errors.join(' | ')}`);
    if (o.multiTurn)
      console.log(`        multi-turn TTFT ms mean: turn 1 ${m.turn1_ttft_ms.mean.toFixed(1)}, turn 2 ${m.turn2_ttft_ms.mean.toFixed(1)}`);
  }
  if (o.resultFile) writeFileSync(o.resultFile, JSON.stringify(points, null, 2) + '\n');
  if (points.some((p) => p.completed === 0)) process.exit(1);
}

if (process.argv[1] && realpathSync(process.argv[1]) === fileURLToPath(import.meta.url))
  main().catch((e) => { console.error(`serve_bench: ${e.message || e}`); process.exit(2); });
