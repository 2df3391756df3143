// jinja_diff.mjs - tandem's Jinja interpreter vs @huggingface/jinja, byte for byte.
//
// Templates: the official DeepSeek-V3 template, the R1 and R1-0528 references (ref_templates.mjs),
// tandem's own Jinja for the three (tmpl_batch builtin), and the fixtures in templates/ (a
// ChatML/Qwen2.5-style, a Qwen3-style (reasoning, string methods, reversed slices) and a
// Llama-3-style template with tools, a Mistral-style one that raises on non-alternating roles, and two exercising namespace, macros, loop variables,
// filters, tests and methods; deepseek_v2_chat.jinja is DeepSeek-V2(-Lite)-Chat's chat_template
// from its published tokenizer_config.json, as quoted in public copies; deepseek_v3.1.jinja and
// deepseek_v3.1_terminus.jinja are the chat_template of DeepSeek-V3.1's and V3.1-Terminus's
// tokenizer_config.json (hybrid thinking through the `thinking` variable), as logged by
// llama.cpp-based servers and embedded in public scripts; kimi_k2.jinja is Kimi-K2-Instruct's
// first published chat_template and kimi_k2_thinking.jinja Kimi-K2-Thinking's chat_template.jinja,
// both as copied into llama.cpp's models/templates/ (moonshotai-Kimi-K2.jinja,
// moonshotai-Kimi-K2-Thinking.jinja; the first there with CRLF line ends, here LF: every line
// break of it sits inside trimmed whitespace, so the output is the same). Contexts: random conversations (system,
// user, assistant, tool turns, tool calls, unicode text), random tool lists, both values of
// add_generation_prompt; the seed is printed (TANDEM_TEST_SEED=... replays it).
// Where both renderers fail, both are counted as agreeing (raise_exception must raise the same
// message); where only one fails, that is a
// failure unless the reference's failure is a known gap of the JavaScript port (jsGaps: Python's
// Jinja2 applies trim to None as to the string 'None').
//
// usage: node jinja_diff.mjs JINJA_BATCH TMPL_BATCH [N_RANDOM]
// Exit 77 when node_modules is absent.
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const nm = path.join(here, "..", "node_modules");
const v3config = path.join(nm, "@lenml", "tokenizer-deepseek_v3", "models", "tokenizer_config.json");
if (!fs.existsSync(path.join(nm, "@huggingface", "jinja")) || !fs.existsSync(v3config)) {
  console.error("SKIP: tests/node_modules absent (run npm ci in tests/)");
  process.exit(77);
}
const { Template } = await import("@huggingface/jinja");
const { makeRng, makeCorpus, seedFromEnv } = await import("./corpus.mjs");
const ref = await import("./ref_templates.mjs");

const [jinjaBatch, tmplBatch] = process.argv.slice(2, 4);
const nRandom = Number(process.argv[4] || 200);
const seed = seedFromEnv();
console.error(`TANDEM_TEST_SEED=${seed}`);

const v3 = JSON.parse(fs.readFileSync(v3config, "utf8")).chat_template;
const templates = {
  "deepseek-v3": v3,
  "deepseek-r1": ref.r1FromV3(v3),
  "deepseek-r1-0528": ref.R1_0528,
};
for (const k of ["deepseek-v3", "deepseek-r1", "deepseek-r1-0528"])
  templates[`builtin ${k}`] = execFileSync(tmplBatch, ["builtin", k]).toString();
for (const f of fs.readdirSync(path.join(here, "templates")).sort())
  templates[f] = fs.readFileSync(path.join(here, "templates", f), "utf8");

const rng = makeRng(seed);
// JavaScript's trim() also strips U+FEFF, Python's strip() also U+001C..U+001F and U+0085: text
// leaves these out (Python's behaviour is tandem's, and is checked in test_jinja.c). Letters
// whose upper or lower case is several letters in Python and JavaScript (sharp s, ligatures,
// dotted capital I) map to at most one letter in tandem (the C library's tables): text leaves
// them out as well.
const oneToOne = (c) => [...c.toUpperCase()].length === 1 && [...c.toLowerCase()].length === 1;
const corpus = makeCorpus(rng, 300, {}).map((s) =>
  [...s.replace(/[\ufeff\u001c-\u001f\u0085]/g, "")].filter(oneToOne).join(""));
const text = () => (rng.chance(0.1) ? "" : [...rng.pick(corpus)].slice(0, 200).join(""));
const cut = (s, n) => [...s].slice(0, n).join(""); // whole code points
const think = () => (rng.chance(0.3) ? `<think>\n${text()}\n</think>\n\n${text()}` : text());
let callId = 0;
const call = () => {
  const name = rng.pick(["get_weather", "search", "f", "lookup_user"]);
  return { id: rng.chance(0.3) ? `functions.${name}:${callId++}` : `call_${callId++}`, type: "function", // Kimi's ids too
    function: { name, arguments: JSON.stringify({ q: cut(text(), 40), n: rng.int(100) }) } };
};
// Kimi-K2-Thinking's template keeps reasoning_content after the last plain assistant turn and
// names roles by `name`; the other templates ignore both
const extra = () => ({ ...(rng.chance(0.3) ? { reasoning_content: text() } : {}), ...(rng.chance(0.1) ? { name: rng.pick(["alice", "bob"]) } : {}) });
const tool = () => ({ type: "function", function: { name: rng.pick(["get_weather", "search", "calc"]),
  ...(rng.chance(0.7) ? { description: cut(text(), 60) } : {}),
  parameters: { type: "object", properties: { q: { type: "string", description: cut(text(), 30) },
    n: { type: "integer", enum: [1, 2, 3] }, flag: { type: "boolean" } }, required: ["q"] } } });

function randomConv() {
  const msgs = [];
  const n = rng.range(1, 8);
  if (rng.chance(0.5)) msgs.push({ role: "system", content: text() });
  for (let i = 0; i < n; i++) {
    const k = rng.int(12);
    if (k < 1) msgs.push({ role: "system", content: text() });
    else if (k < 5) msgs.push({ role: "user", content: rng.chance(0.1) ? "!run  this now " : rng.chance(0.1) ? "Why?" : text() });
    else if (k < 7) msgs.push({ role: "assistant", content: think(), ...(rng.chance(0.1) ? { prefix: true } : {}), ...extra() });
    else if (k < 9) msgs.push({ role: "assistant", content: null, tool_calls: Array.from({ length: rng.range(1, 3) }, call), ...extra() });
    else if (k < 10) msgs.push({ role: "assistant", content: think(), tool_calls: [call()], ...extra() });
    else msgs.push({ role: "tool", tool_call_id: "x", content: text() });
  }
  return msgs;
}

// user/assistant turns alternating after an optional system message (what stricter templates
// accept instead of raising an exception)
function alternatingConv() {
  const msgs = rng.chance(0.5) ? [{ role: "system", content: text() }] : [];
  const n = rng.range(1, 6);
  for (let i = 0; i < n; i++) msgs.push({ role: i % 2 ? "assistant" : "user", content: text() });
  return msgs;
}

const contexts = [];
for (let i = 0; i < nRandom; i++) {
  const c = { messages: rng.chance(0.25) ? alternatingConv() : randomConv(), add_generation_prompt: rng.chance(0.5),
    bos_token: "<s>", eos_token: "</s>" };
  if (rng.chance(0.4)) c.tools = Array.from({ length: rng.range(1, 3) }, tool);
  if (rng.chance(0.6)) c.thinking = rng.chance(0.5); // chat_template_kwargs of V3.1's hybrid thinking
  contexts.push(c);
}
for (const thinking of [undefined, false, true])
  contexts.push({ messages: [{ role: "user", content: "Hello" }], add_generation_prompt: true, bos_token: "<s>", eos_token: "</s>",
    ...(thinking === undefined ? {} : { thinking }) });

const jsGaps = [/Cannot apply filter "trim" to type: NullValue/];
let failures = 0, compared = 0, bothFailed = 0;
const fail = (msg) => { if (failures++ < 15) console.error(msg); };
const dir = fs.mkdtempSync(path.join(os.tmpdir(), "tandem-jinja-"));
for (const [name, src] of Object.entries(templates)) {
  const file = path.join(dir, "t.jinja");
  fs.writeFileSync(file, src);
  const out = JSON.parse(execFileSync(jinjaBatch, [file], { input: JSON.stringify(contexts), maxBuffer: 1 << 28 }).toString());
  if (out.parse_error) { fail(`${name}: tandem cannot parse it: ${out.parse_error}`); continue; }
  let tmpl;
  try { tmpl = new Template(src); } catch (e) { fail(`${name}: the reference cannot parse it: ${e.message}`); continue; }
  contexts.forEach((ctx, i) => {
    let want;
    try { want = tmpl.render(structuredClone(ctx)); } catch (e) { want = { error: e.message }; }
    const got = out[i];
    if (typeof want !== "string" && typeof got !== "string") {
      // raise_exception: the same message
      const raised = got.error.split("chat template error: ")[1];
      if (raised !== undefined && raised !== want.error && !jsGaps.some((re) => re.test(want.error))) fail(`${name} context ${i}: raised "${raised}", the reference "${want.error}"`);
      bothFailed++;
      return;
    }
    if (typeof want !== "string") {
      if (jsGaps.some((re) => re.test(want.error))) { bothFailed++; return; }
      fail(`${name} context ${i}: the reference failed (${want.error}), tandem rendered\n  ${JSON.stringify(ctx).slice(0, 300)}`);
      return;
    }
    compared++;
    if (want !== got) {
      let k = 0;
      while (typeof got === "string" && k < want.length && want[k] === got[k]) k++;
      fail(`${name} context ${i}: differs at ${k}\n  ctx: ${JSON.stringify(ctx).slice(0, 300)}\n  ref:    ${JSON.stringify(want.slice(Math.max(0, k - 80), k + 120))}\n  tandem: ${JSON.stringify(typeof got === "string" ? got.slice(Math.max(0, k - 80), k + 120) : got)}`);
    }
  });
}
fs.rmSync(dir, { recursive: true, force: true });
console.error(`${Object.keys(templates).length} templates x ${contexts.length} contexts: ${compared} compared, ${bothFailed} failed in both; ${failures} failures`);
process.exit(failures ? 1 : 0);
