// tiktoken_diff.mjs - tandem's tiktoken-style tokenizer (Kimi-K2 / Moonlight: tiktoken.model +
// tokenizer_config.json, engine/text/tok_tiktoken.c) vs the reference: OpenAI's tiktoken itself
// (the npm `tiktoken` package, its Rust core compiled to WASM) with Kimi's pattern.
//
// 1. The reference is checked on published examples: cl100k_base encodes "hello world" as
//    [15339, 1917] (tiktoken's README) and "tiktoken is great!" as [83, 1609, 5963, 374, 2294, 0]
//    (OpenAI's cookbook, "How to count tokens with tiktoken").
// 2. A model directory is written at test time: tiktoken.model holds cl100k_base's 100256 ranks
//    (a real large BPE vocabulary, read back from the package, never committed), and
//    tokenizer_config.json Kimi's special tokens at Kimi's offsets after the last rank.
// 3. A fresh random corpus (seed printed; TANDEM_TEST_SEED replays) plus Kimi's special tokens
//    spliced into some strings: every string gives the reference's ids with special tokens
//    matched (tiktoken's encode with allowed_special "all") and without (encode_ordinary), and
//    decodes back to itself (tok_batch checks that).
// The pattern is tokenization_kimi.py's pat_str, verbatim, as tiktoken reads it (Rust regex:
// class intersection, (?i:), Unicode White_Space for \s).
//
// usage: node tiktoken_diff.mjs TOK_BATCH_BINARY [N_STRINGS]. Exit 77 without node_modules.
import { execFileSync } from "node:child_process";
import { createRequire } from "node:module";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(import.meta.url);
const nm = path.join(here, "..", "node_modules");
if (!fs.existsSync(path.join(nm, "tiktoken", "lite", "tiktoken.cjs"))) {
  console.error("SKIP: tests/node_modules absent (run npm ci in tests/)");
  process.exit(77);
}
const { Tiktoken } = require(path.join(nm, "tiktoken", "lite", "tiktoken.cjs"));
const cl100k = require(path.join(nm, "tiktoken", "encoders", "cl100k_base.json"));
const { makeRng, makeCorpus, seedFromEnv, newerThanPcre2 } = await import("./corpus.mjs");

const batch = process.argv[2];
const nStrings = Number(process.argv[3] || 3000);
const seed = seedFromEnv();
console.error(`TANDEM_TEST_SEED=${seed}`);

// tokenization_kimi.py, TikTokenTokenizer.pat_str
const KIMI_PAT = [
  String.raw`[\p{Han}]+`,
  String.raw`[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}&&[^\p{Han}]]*[\p{Ll}\p{Lm}\p{Lo}\p{M}&&[^\p{Han}]]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?`,
  String.raw`[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}&&[^\p{Han}]]+[\p{Ll}\p{Lm}\p{Lo}\p{M}&&[^\p{Han}]]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?`,
  String.raw`\p{N}{1,3}`,
  String.raw` ?[^\s\p{L}\p{N}]+[\r\n]*`,
  String.raw`\s*[\r\n]+`,
  String.raw`\s+(?!\S)`,
  String.raw`\s+`,
].join("|");

let failures = 0;
const report = (msg) => { if (failures++ < 10) console.error(msg); };
const same = (a, b) => Array.isArray(b) && a.length === b.length && a.every((x, k) => x === b[k]);

// 1. the reference on published examples
const ref100k = new Tiktoken(cl100k.bpe_ranks, cl100k.special_tokens, cl100k.pat_str);
for (const [text, want] of [["hello world", [15339, 1917]], ["tiktoken is great!", [83, 1609, 5963, 374, 2294, 0]]]) {
  const got = Array.from(ref100k.encode(text));
  if (!same(want, got)) report(`reference: ${JSON.stringify(text)} gives ${JSON.stringify(got)}, published ${JSON.stringify(want)}`);
}

// 2. the model directory
const dir = fs.mkdtempSync(path.join(os.tmpdir(), "tandem-tiktoken-"));
const lines = [];
const nBase = 100256; // cl100k_base's mergeable ranks: 0..100255
for (let r = 0; r < nBase; r++)
  lines.push(`${Buffer.from(ref100k.decode_single_token_bytes(r)).toString("base64")} ${r}`);
ref100k.free();
fs.writeFileSync(path.join(dir, "tiktoken.model"), lines.join("\n") + "\n");
// Kimi-K2's named special tokens, at their offsets from the first special id (163584 there)
const named = { 0: "[BOS]", 1: "[EOS]", 2: "<|im_end|>", 3: "<|im_user|>", 4: "<|im_assistant|>",
  6: "<|start_header_id|>", 7: "<|end_header_id|>", 9: "[EOT]", 10: "<|im_system|>",
  11: "<|tool_calls_section_begin|>", 12: "<|tool_calls_section_end|>", 13: "<|tool_call_begin|>",
  14: "<|tool_call_argument_begin|>", 15: "<|tool_call_end|>", 17: "<|im_middle|>", 254: "[UNK]", 255: "[PAD]" };
const decoder = {};
for (const [k, c] of Object.entries(named))
  decoder[String(nBase + Number(k))] = { content: c, lstrip: false, normalized: false, rstrip: false, single_word: false, special: true };
fs.writeFileSync(path.join(dir, "tokenizer_config.json"), JSON.stringify({
  added_tokens_decoder: decoder, bos_token: "[BOS]", eos_token: "[EOS]", tokenizer_class: "TikTokenTokenizer" }));
const specials = {};
for (let i = 0; i < 256; i++) specials[named[i] ?? `<|reserved_token_${nBase + i}|>`] = nBase + i;
const ref = new Tiktoken(lines.join("\n"), specials, KIMI_PAT);

// 3. the corpus, some strings with special tokens spliced in
const rng = makeRng(seed);
const newer = newerThanPcre2(batch);
const names = Object.keys(specials);
const corpus = makeCorpus(rng, nStrings, { exclude: newer }).map((s) => {
  if (!rng.chance(0.15)) return s;
  const cps = [...s], at = rng.int(cps.length + 1);
  return cps.slice(0, at).join("") + rng.pick(rng.chance(0.8) ? names.slice(0, 20) : names) + cps.slice(at).join("");
});
const run = (args) => JSON.parse(execFileSync(batch, [dir, ...args], { input: JSON.stringify(corpus), maxBuffer: 1 << 28 }).toString());
const t0 = Date.now();
const withSpecial = run(["--special"]);
const ordinary = run([]);
const tC = Date.now() - t0;
let tokens = 0;
for (let i = 0; i < corpus.length; i++) {
  const a = Array.from(ref.encode(corpus[i], "all", []));
  const b = Array.from(ref.encode_ordinary(corpus[i]));
  tokens += a.length;
  if (!same(a, withSpecial[i]))
    report(`string ${i} ${JSON.stringify(corpus[i]).slice(0, 200)} (special tokens matched)\n  ref:    ${JSON.stringify(a).slice(0, 200)}\n  tandem: ${JSON.stringify(withSpecial[i]).slice(0, 200)}`);
  if (!same(b, ordinary[i]))
    report(`string ${i} ${JSON.stringify(corpus[i]).slice(0, 200)} (plain text)\n  ref:    ${JSON.stringify(b).slice(0, 200)}\n  tandem: ${JSON.stringify(ordinary[i]).slice(0, 200)}`);
}
ref.free();
fs.rmSync(dir, { recursive: true, force: true });
console.error(`${corpus.length} strings, ${tokens} tokens, vocabulary ${nBase} + 256 specials: ` +
  `${failures} mismatches (tandem ${tC} ms for both passes, with the load)`);
process.exit(failures ? 1 : 0);
