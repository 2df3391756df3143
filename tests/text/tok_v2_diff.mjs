// tok_v2_diff.mjs - differential test: tandem's tokenizer vs the JavaScript reference
// (@lenml/tokenizers, a port of Hugging Face tokenizers) on DeepSeek-V2's tokenizer pipeline.
//
// usage: node tok_v2_diff.mjs TOK_BATCH_BINARY [N_STRINGS]
// DeepSeek-V2 / V2-Lite / V2.5 (and DeepSeek-LLM, whose tokenizer they share: llama.cpp names
// its pre-tokenizer "deepseek-llm") is a byte-level BPE whose tokenizer.json differs from V3's in
// the pre-tokenizer: a Sequence of five Split regexes (newlines; an optional space and a run of
// cased letters; an optional space and a run of ASCII/full-width punctuation; trailing
// whitespace; CJK/Hangul runs), then Digits with individual_digits, then ByteLevel without its
// regex. PRE_V2 below is that configuration (regexes as llama.cpp's llama-vocab.cpp copies them
// from the tokenizer.json, with the Greek range ends U+1F7D, U+1FD3, U+1FDB and the letters
// U+1FBE, U+2126, U+212A as code points: an NFC-normalized copy would break those ranges), with
// V2's empty normalizer Sequence and ByteLevel decoder. Two vocabularies:
//   1. generated here: byte-level BPE trained on random text cut into chunks at arbitrary byte
//      positions, so merges cross every place where the pre-tokenizer splits (a wrong split
//      changes ids); the 13 bytes that never occur in UTF-8 are, as in V2's vocabulary, not
//      base tokens but non-special added tokens (V2's "ø", "ö", ... quirk);
//   2. when ../shared testdata is present, DeepSeek-LLM's real vocabulary and merges (the
//      llama.cpp vocab GGUF ggml-vocab-deepseek-llm.gguf: 100000 tokens, 99757 merges, the
//      added tokens of V2's layout) as a tokenizer.json with PRE_V2.
// On a fresh random corpus (seed printed; TANDEM_TEST_SEED replays) every string must give
// identical ids from the reference, from tandem's tokenizer.json path, and from tandem's GGUF
// path with tokenizer.ggml.pre "deepseek-llm" (tok_create_vocab on the same vocabulary; for the
// real vocabulary the GGUF file itself, loaded as tandem serves it).
// The reference's Digits pre-tokenizer is corrected to HF's: the JS port matches \d (ASCII
// digits), HF's Rust matches char::is_numeric (general category N: "٣", "½", "①").
// Exit 77 when node_modules is absent.
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
if (!fs.existsSync(path.join(here, "..", "node_modules", "@lenml", "tokenizers"))) {
  console.error("SKIP: tests/node_modules absent (run npm ci in tests/)");
  process.exit(77);
}
const { TokenizerLoader } = await import("@lenml/tokenizers");
const { makeRng, makeCorpus, seedFromEnv, newerThanPcre2 } = await import("./corpus.mjs");
const { readGgufMeta } = await import("./gguf_meta.mjs");

const batch = process.argv[2];
const nStrings = Number(process.argv[3] || 3000);
const seed = seedFromEnv();
console.error(`TANDEM_TEST_SEED=${seed}`);

// ---- DeepSeek-V2's tokenizer.json configuration (all but the vocabulary)
const LETTERS = "\\s?[A-Za-z\u{B5}\u{C0}-\u{D6}\u{D8}-\u{F6}\u{F8}-\u{1BA}\u{1BC}-\u{1BF}\u{1C4}-\u{293}" +
  "\u{295}-\u{2AF}\u{370}-\u{373}\u{376}\u{377}\u{37B}-\u{37D}\u{37F}\u{386}\u{388}-\u{38A}\u{38C}" +
  "\u{38E}-\u{3A1}\u{3A3}-\u{3F5}\u{3F7}-\u{481}\u{48A}-\u{52F}\u{531}-\u{556}\u{10A0}-\u{10C5}" +
  "\u{13A0}-\u{13F5}\u{13F8}-\u{13FD}\u{1C90}-\u{1CBA}\u{1CBD}-\u{1CBF}\u{1D00}-\u{1D2B}" +
  "\u{1D6B}-\u{1D77}\u{1D79}-\u{1D9A}\u{1E00}-\u{1F15}\u{1F18}-\u{1F1D}\u{1F20}-\u{1F45}" +
  "\u{1F48}-\u{1F4D}\u{1F50}-\u{1F57}\u{1F59}\u{1F5B}\u{1F5D}\u{1F5F}-\u{1F7D}\u{1F80}-\u{1FB4}" +
  "\u{1FB6}-\u{1FBC}\u{1FBE}\u{1FC2}-\u{1FC4}\u{1FC6}-\u{1FCC}\u{1FD0}-\u{1FD3}\u{1FD6}-\u{1FDB}" +
  "\u{1FE0}-\u{1FEC}\u{1FF2}-\u{1FF4}\u{1FF6}-\u{1FFC}\u{2102}\u{2107}\u{210A}-\u{2113}\u{2115}" +
  "\u{2119}-\u{211D}\u{2124}\u{2126}\u{2128}\u{212A}-\u{212D}\u{212F}-\u{2134}\u{2139}" +
  "\u{213C}-\u{213F}\u{2145}-\u{2149}\u{214E}\u{2183}\u{2184}\u{2C00}-\u{2C7B}\u{2C7E}-\u{2CE4}" +
  "\u{2CEB}-\u{2CEE}\u{2CF2}\u{2CF3}\u{A640}-\u{A66D}\u{A680}-\u{A69B}\u{A722}-\u{A76F}" +
  "\u{A771}-\u{A787}\u{A78B}-\u{A78E}\u{AB70}-\u{ABBF}\u{FB00}-\u{FB06}\u{FB13}-\u{FB17}" +
  "\u{FF21}-\u{FF3A}\u{FF41}-\u{FF5A}\u{10400}-\u{1044F}\u{104B0}-\u{104D3}\u{104D8}-\u{104FB}" +
  "\u{10C80}-\u{10CB2}\u{10CC0}-\u{10CF2}\u{118A0}-\u{118DF}\u{1E900}-\u{1E943}]+";
const split = (re) => ({ type: "Split", pattern: { Regex: re }, behavior: "Isolated", invert: false });
const PRE_V2 = { type: "Sequence", pretokenizers: [
  split("[\r\n]"),
  split(LETTERS),
  split("\\s?[!-/:-~\u{FF01}-\u{FF0F}\u{FF1A}-\u{FF5E}\u{2018}-\u{201F}\u{3000}-\u{3002}]+"),
  split("\\s+$"),
  split("[\u{4E00}-\u{9FA5}\u{800}-\u{4E00}\u{AC00}-\u{D7FF}]+"),
  { type: "Digits", individual_digits: true },
  { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: false },
] };
const BOS = "<｜begin▁of▁sentence｜>", EOS = "<｜end▁of▁sentence｜>";
function tokenizerJson(vocab, merges, added) {
  return {
    version: "1.0", truncation: null, padding: null,
    added_tokens: added.map(([id, content, special]) => ({ id, content, single_word: false, lstrip: false,
      rstrip: false, normalized: !special, special })),
    normalizer: { type: "Sequence", normalizers: [] },
    pre_tokenizer: PRE_V2,
    post_processor: { type: "TemplateProcessing",
      single: [{ SpecialToken: { id: BOS, type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }],
      pair: [{ SpecialToken: { id: BOS, type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } },
        { SpecialToken: { id: BOS, type_id: 1 } }, { Sequence: { id: "B", type_id: 1 } }],
      special_tokens: { [BOS]: { id: BOS, ids: [added.find((a) => a[1] === BOS)[0]], tokens: [BOS] } } },
    decoder: { type: "ByteLevel", add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: { type: "BPE", dropout: null, unk_token: null, continuing_subword_prefix: null,
      end_of_word_suffix: null, fuse_unk: false, byte_fallback: false, vocab, merges },
  };
}
const CONFIG = { add_bos_token: true, add_eos_token: false, bos_token: BOS, eos_token: EOS,
  pad_token: EOS, clean_up_tokenization_spaces: false, legacy: true, model_max_length: 16384,
  tokenizer_class: "LlamaTokenizerFast" };

// GPT-2's bytes_to_unicode
const BYTE_CHAR = [];
{
  let n = 0;
  for (let b = 0; b < 256; b++) {
    const printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174;
    BYTE_CHAR.push(String.fromCodePoint(printable ? b : 256 + n++));
  }
}
const byteLevel = (bytes) => Array.from(bytes, (b) => BYTE_CHAR[b]).join("");
// bytes that never occur in UTF-8: V2's vocabulary has them only as added tokens
const NOT_UTF8 = [0xc0, 0xc1, ...Array.from({ length: 11 }, (_, i) => 0xf5 + i)];

// ---- 1. a vocabulary learned from random text cut at arbitrary byte positions
function learnVocab(rng, nMerges) {
  const enc = new TextEncoder();
  const text = enc.encode(makeCorpus(rng, 400).join(""));
  const base = [];
  for (let b = 0; b < 256; b++) if (!NOT_UTF8.includes(b)) base.push(b);
  const idOf = new Int32Array(256).fill(-1);
  base.forEach((b, i) => { idOf[b] = i; });
  const toks = base.map((b) => [b]); // bytes of each id
  const words = [];
  for (let i = 0; i < text.length;) {
    const n = rng.range(2, 40);
    words.push(Array.from(text.subarray(i, i + n), (b) => idOf[b]));
    i += n;
  }
  const N = base.length + nMerges, cnt = new Int32Array(N * N), merges = [];
  for (let m = 0; m < nMerges; m++) {
    const touched = [];
    for (const w of words)
      for (let j = 0; j + 1 < w.length; j++) {
        const k = w[j] * N + w[j + 1];
        if (cnt[k]++ === 0) touched.push(k);
      }
    let best = -1, bk = 0;
    for (const k of touched) if (cnt[k] > best || (cnt[k] === best && k < bk)) { best = cnt[k]; bk = k; }
    for (const k of touched) cnt[k] = 0;
    if (best < 2) break;
    const a = Math.floor(bk / N), b = bk % N, id = toks.length;
    toks.push([...toks[a], ...toks[b]]);
    merges.push(`${byteLevel(toks[a])} ${byteLevel(toks[b])}`);
    for (const w of words) {
      let o = 0;
      for (let j = 0; j < w.length; j++) {
        if (j + 1 < w.length && w[j] === a && w[j + 1] === b) { w[o++] = id; j++; } else w[o++] = w[j];
      }
      w.length = o;
    }
  }
  const vocab = {};
  toks.forEach((t, id) => { vocab[byteLevel(t)] = id; });
  let id = toks.length;
  const added = [[id++, BOS, true], [id++, EOS, true]];
  for (const b of NOT_UTF8) added.push([id++, BYTE_CHAR[b], false]);
  return { json: tokenizerJson(vocab, merges, added), nMerges: merges.length };
}

// ---- 2. DeepSeek-LLM's real vocabulary from the llama.cpp vocab GGUF
function realVocab(gguf) {
  const m = readGgufMeta(gguf);
  if (m["tokenizer.ggml.pre"] !== "deepseek-llm") throw new Error(`${gguf}: pre ${m["tokenizer.ggml.pre"]}`);
  const toks = m["tokenizer.ggml.tokens"], types = m["tokenizer.ggml.token_type"];
  const vocab = {}, added = [];
  toks.forEach((t, id) => {
    if (types[id] === 1) vocab[t] = id;
    else if ((types[id] === 3 || types[id] === 4) && !/^\[PAD\d+\]$/.test(t)) added.push([id, t, types[id] === 3]);
  });
  return { json: tokenizerJson(vocab, m["tokenizer.ggml.merges"], added), nMerges: m["tokenizer.ggml.merges"].length };
}

// the reference, its Digits pre-tokenizer matching char::is_numeric as HF's Rust does
function reference(json) {
  const tok = TokenizerLoader.fromPreTrained({ tokenizerJSON: json, tokenizerConfig: CONFIG });
  const digits = tok.pre_tokenizer.tokenizers.filter((p) => p.config?.type === "Digits");
  if (digits.length !== 1) throw new Error("the reference has no Digits pre-tokenizer to correct");
  digits[0].pattern = /[^\p{N}]+|\p{N}/gu;
  return tok;
}

const newer = newerThanPcre2(batch);
let failures = 0;
const report = (msg) => { if (failures++ < 12) console.error(msg); };
const same = (a, b) => Array.isArray(b) && a.length === b.length && a.every((x, k) => x === b[k]);

function compare(name, json, n, rng, ggufFile) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "tandem-tok-v2-"));
  fs.writeFileSync(path.join(dir, "tokenizer.json"), JSON.stringify(json));
  fs.writeFileSync(path.join(dir, "tokenizer_config.json"), JSON.stringify(CONFIG));
  const corpus = makeCorpus(rng, n, { exclude: newer });
  // digits of other scripts, where the JS port and HF's Rust would differ
  for (let i = 0; i < 40; i++) corpus.push(`x${rng.pick(["٣٤", "½", "①②", "߁", "𝟙𝟚", "১২", "Ⅻ"])}${rng.int(1000)}y`);
  const run = (where, args) => JSON.parse(execFileSync(batch, [where, ...args],
    { input: JSON.stringify(corpus), maxBuffer: 1 << 28 }).toString());
  const tok = reference(json);
  const t0 = Date.now();
  const ref = corpus.map((s) => tok.encode(s, { add_special_tokens: false }));
  const tJs = Date.now() - t0;
  const got = run(dir, ["--special"]);
  const viaGguf = ggufFile ? run(ggufFile, ["--special"]) : run(dir, ["--special", "--via-vocab", "deepseek-llm"]);
  let tokens = 0;
  const before = failures;
  for (let i = 0; i < corpus.length; i++) {
    tokens += ref[i].length;
    if (!same(ref[i], got[i]))
      report(`${name}: string ${i} ${JSON.stringify(corpus[i]).slice(0, 300)}\n  ref:    ${JSON.stringify(ref[i]).slice(0, 300)}\n  tandem: ${JSON.stringify(got[i]).slice(0, 300)}`);
    else if (!same(ref[i], viaGguf[i]))
      report(`${name}: string ${i} ${JSON.stringify(corpus[i]).slice(0, 300)}: the GGUF form (pre deepseek-llm) differs\n  ref:  ${JSON.stringify(ref[i]).slice(0, 300)}\n  gguf: ${JSON.stringify(viaGguf[i]).slice(0, 300)}`);
  }
  console.error(`${name}: ${corpus.length} strings, ${tokens} tokens, ${json.model.merges.length} merges: ` +
    `${failures - before} mismatches (reference ${tJs} ms)`);
  fs.rmSync(dir, { recursive: true, force: true });
}

const rng = makeRng(seed);
const learned = learnVocab(makeRng(seed ^ 0x5eedn), 3000);
compare("generated vocabulary", learned.json, nStrings, rng, null);
const shared = process.env.TANDEM_SHARED;
const gguf = shared && path.join(shared, "testdata", "llama-vocab", "ggml-vocab-deepseek-llm.gguf");
if (gguf && fs.existsSync(gguf)) compare("DeepSeek-LLM / V2 vocabulary", realVocab(gguf).json, Math.ceil(nStrings / 2), rng, gguf);
else console.error("DeepSeek-LLM vocabulary: ../shared testdata absent, skipped");
process.exit(failures ? 1 : 0);
