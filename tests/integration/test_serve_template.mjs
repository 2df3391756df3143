// test_serve_template.mjs - the daemon (fake engine) on a model whose tokenizer_config.json has a
// chat template no built-in renderer recognizes: it is interpreted as Jinja. The rendered
// prompt (/tokenize + /detokenize) equals @huggingface/jinja's rendering byte for byte;
// chat_template_kwargs reach the template; raise_exception is a 400 naming the message; a
// forced tool call is refused for a template without DeepSeek's markers; model.chat_template_file
// replaces the model's template; a template with a syntax error stops start-up with its line.
// DeepSeek-V3.1's published template: the prompt with thinking off, on and absent, the reasoning
// split, V3.1 tool calls; a template with Kimi-K2's markers: Kimi tool calls (ids the model's
// functions.NAME:IDX), a forced call;
// Kimi-K2-Thinking's published template: the prompt, the reasoning split, Kimi tool calls.
// Usage: node test_serve_template.mjs  (env TANDEM_FAKE_BIN, TANDEM_SRC). Exits 77 without
// tests/node_modules.
import { spawnSync } from 'node:child_process';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { parseSSE, postJSON, startDaemon, tmpDir } from './daemon.mjs';

let Template;
try {
  ({ Template } = await import('@huggingface/jinja'));
} catch {
  console.error('SKIP: @huggingface/jinja is not installed (cd tests && npm ci)');
  process.exit(77);
}
const BIN = process.env.TANDEM_FAKE_BIN;
const SRC = process.env.TANDEM_SRC;
assert.ok(BIN && SRC, 'TANDEM_FAKE_BIN and TANDEM_SRC must be set');

const BOS = '<｜begin▁of▁sentence｜>', EOS = '<｜end▁of▁sentence｜>';
const TEMPLATE = `{{- bos_token }}
{%- for m in messages %}
  {%- if m.role == 'user' and m.content == 'boom' %}{{ raise_exception('boom is not allowed') }}{% endif %}
<|im_start|>{{ m.role }}{% if greeting is defined %} ({{ greeting }}){% endif %}
{{ m.content | trim }}<|im_end|>
{%- endfor %}
{%- if tools %}
<|tools|>{{ tools | map(attribute='function') | map(attribute='name') | join(',') }}
{%- endif %}
{%- if add_generation_prompt %}
<|im_start|>assistant
{% endif %}`;
const FILE_TEMPLATE = "{% for m in messages %}[{{ m.role | upper }}] {{ m.content }}\n{% endfor %}{% if add_generation_prompt %}[ASSISTANT] {% endif %}";

const work = tmpDir();
const model = path.join(work, 'jinja-model');
{
  const r = spawnSync('node', [path.join(SRC, 'tests/server/make_tokenizer.mjs'), model]);
  assert.equal(r.status, 0, String(r.stderr));
  const cfgPath = path.join(model, 'tokenizer_config.json');
  const cfg = JSON.parse(fs.readFileSync(cfgPath, 'utf8'));
  cfg.chat_template = TEMPLATE;
  fs.writeFileSync(cfgPath, JSON.stringify(cfg));
}
const common = ['--model.name=jinja-model', '--log.level=warn'];

async function renderedPrompt(base, body) {
  const t = await postJSON(base, '/tokenize', body);
  assert.equal(t.status, 200, t.text);
  const d = await postJSON(base, '/detokenize', { tokens: t.json.tokens });
  assert.equal(d.status, 200, d.text);
  return d.json.prompt;
}

describe('interpreted chat template', () => {
  let d;
  before(async () => { d = await startDaemon({ bin: BIN, model, args: common }); });
  after(async () => {
    const r = await d.stop();
    assert.equal(r.code, 0, d.log());
  });

  test('the rendered prompt equals the reference rendering', async () => {
    const messages = [{ role: 'system', content: 'Be brief. ' }, { role: 'user', content: ' Héllo 👋 ' },
      { role: 'assistant', content: 'Hi.' }, { role: 'user', content: 'And now?' }];
    const tools = [{ type: 'function', function: { name: 'get_weather', parameters: { type: 'object' } } }];
    for (const extra of [{}, { chat_template_kwargs: { greeting: 'bonjour' } }, { tools }]) {
      const got = await renderedPrompt(d.base, { messages, ...extra });
      const want = new Template(TEMPLATE).render({ messages, add_generation_prompt: true,
        bos_token: BOS, eos_token: EOS, ...(extra.chat_template_kwargs || {}), ...(extra.tools ? { tools } : {}) });
      assert.equal(got, want);
    }
  });

  test('a chat completion is rendered by it', async () => {
    const r = await postJSON(d.base, '/v1/chat/completions', {
      messages: [{ role: 'user', content: 'ECHO:rendered by the interpreter|OHCE' }] });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.choices[0].message.content, 'rendered by the interpreter');
    const s = await postJSON(d.base, '/v1/chat/completions', { stream: true,
      messages: [{ role: 'user', content: 'ECHO:streamed|OHCE' }], chat_template_kwargs: { greeting: 'hi' } });
    assert.equal(s.status, 200, s.text);
    const { events, done } = parseSSE(s.text);
    assert.ok(done, s.text);
    assert.equal(events.map((e) => e.choices[0]?.delta?.content || '').join(''), 'streamed');
  });

  test('raise_exception and bad kwargs are 400s', async () => {
    const boom = await postJSON(d.base, '/v1/chat/completions', { messages: [{ role: 'user', content: 'boom' }] });
    assert.equal(boom.status, 400, boom.text);
    assert.ok(boom.json.error.message.includes('boom is not allowed'), boom.text);
    assert.equal(boom.json.error.param, 'messages');
    for (const kw of [[1], 'x', { messages: [] }, { big: 'x'.repeat(70000) }]) {
      const r = await postJSON(d.base, '/v1/chat/completions', { messages: [{ role: 'user', content: 'hi' }],
        chat_template_kwargs: kw });
      assert.equal(r.status, 400, r.text);
      assert.equal(r.json.error.param, 'chat_template_kwargs', r.text);
    }
    const forced = await postJSON(d.base, '/v1/chat/completions', { messages: [{ role: 'user', content: 'hi' }],
      tools: [{ type: 'function', function: { name: 'f' } }], tool_choice: 'required' });
    assert.equal(forced.status, 400, forced.text);
    assert.equal(forced.json.error.param, 'tool_choice');
  });
});

test('model.chat_template_file replaces the model template', async () => {
  const file = path.join(work, 'override.jinja');
  fs.writeFileSync(file, FILE_TEMPLATE);
  const d = await startDaemon({ bin: BIN, model, args: [...common, `--model.chat_template_file=${file}`] });
  try {
    const messages = [{ role: 'user', content: 'hi' }];
    assert.equal(await renderedPrompt(d.base, { messages }), '[USER] hi\n[ASSISTANT] ');
  } finally {
    assert.equal((await d.stop()).code, 0, d.log());
  }
});

test('a template with a syntax error stops start-up', async () => {
  const file = path.join(work, 'bad.jinja');
  fs.writeFileSync(file, 'ok\n{% for m in messages %}{{ m.role }');
  await assert.rejects(startDaemon({ bin: BIN, model, args: [...common, `--model.chat_template_file=${file}`] }),
    /line 2 column/);
});

// DeepSeek-V3.1's published template (tests/text/templates/deepseek_v3.1.jinja): hybrid thinking
// through chat_template_kwargs, its tool-call syntax NAME<sep>ARGS, arguments rendered as text.
describe('DeepSeek-V3.1 template', () => {
  const V31 = fs.readFileSync(path.join(SRC, 'tests/text/templates/deepseek_v3.1.jinja'), 'utf8');
  const CB = '<｜tool▁calls▁begin｜>', CE = '<｜tool▁calls▁end｜>', B = '<｜tool▁call▁begin｜>';
  const E = '<｜tool▁call▁end｜>', SEP = '<｜tool▁sep｜>';
  const tools = [{ type: 'function', function: { name: 'get_weather', parameters: { type: 'object' } } },
    { type: 'function', function: { name: 'get_time' } }];
  let d;
  before(async () => {
    const file = path.join(work, 'v31.jinja');
    fs.writeFileSync(file, V31);
    // as in DeepSeek's tokenizer.json, the tool-call markers are added tokens that are not
    // "special" (so the fake engine's echo keeps them)
    const m31 = path.join(work, 'v31-model');
    fs.cpSync(model, m31, { recursive: true });
    const tj = JSON.parse(fs.readFileSync(path.join(m31, 'tokenizer.json'), 'utf8'));
    for (const t of tj.added_tokens) if (t.content.includes('tool')) t.special = false;
    fs.writeFileSync(path.join(m31, 'tokenizer.json'), JSON.stringify(tj));
    d = await startDaemon({ bin: BIN, model: m31, args: [...common, `--model.chat_template_file=${file}`] });
  });
  after(async () => {
    const r = await d.stop();
    assert.equal(r.code, 0, d.log());
  });

  test('the prompt equals the reference rendering, thinking off, on and absent', async () => {
    const messages = [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'Weather?' },
      { role: 'assistant', content: null, tool_calls: [{ id: 'call_1', type: 'function',
        function: { name: 'get_weather', arguments: '{"city": "Paris"}' } }] },
      { role: 'tool', tool_call_id: 'call_1', content: '22C' },
      { role: 'assistant', content: 'It is 22C.' }, { role: 'user', content: 'Thanks' }];
    for (const kw of [undefined, { thinking: false }, { thinking: true }]) {
      const got = await renderedPrompt(d.base, { messages, ...(kw ? { chat_template_kwargs: kw } : {}) });
      const want = new Template(V31).render({ messages, add_generation_prompt: true, bos_token: BOS,
        eos_token: EOS, ...(kw || {}) });
      assert.equal(got, want);
      assert.ok(want.endsWith(kw?.thinking ? '<｜Assistant｜><think>' : '<｜Assistant｜></think>'), want);
    }
  });

  test('thinking on: reasoning_content is split off; off: all is content', async () => {
    const on = await postJSON(d.base, '/v1/chat/completions', { chat_template_kwargs: { thinking: true },
      messages: [{ role: 'user', content: 'ECHO:Let me think. 2+2.</think>The answer is 4.|OHCE' }] });
    assert.equal(on.status, 200, on.text);
    assert.equal(on.json.choices[0].message.reasoning_content, 'Let me think. 2+2.');
    assert.equal(on.json.choices[0].message.content, 'The answer is 4.');
    const off = await postJSON(d.base, '/v1/chat/completions', { chat_template_kwargs: { thinking: false },
      messages: [{ role: 'user', content: 'ECHO:The answer is 4.|OHCE' }] });
    assert.equal(off.status, 200, off.text);
    assert.equal(off.json.choices[0].message.content, 'The answer is 4.');
    assert.ok(!off.json.choices[0].message.reasoning_content, off.text);
  });

  test('tool calls in V3.1 syntax: message and stream', async () => {
    const out = `Looking it up.${CB}${B}get_weather${SEP}{"city": "Paris"}${E}${B}get_time${SEP}{}${E}${CE}`;
    const body = { messages: [{ role: 'user', content: `ECHO:${out}|OHCE` }], tools, seed: 5 };
    const a = await postJSON(d.base, '/v1/chat/completions', body);
    assert.equal(a.status, 200, a.text);
    const m = a.json.choices[0].message;
    assert.equal(a.json.choices[0].finish_reason, 'tool_calls', a.text);
    assert.equal(m.content, 'Looking it up.');
    assert.deepEqual(m.tool_calls.map((t) => [t.type, t.function.name, t.function.arguments]),
      [['function', 'get_weather', '{"city": "Paris"}'], ['function', 'get_time', '{}']]);
    const s = await postJSON(d.base, '/v1/chat/completions', { ...body, stream: true });
    const { events, done } = parseSSE(s.text);
    assert.ok(done, s.text);
    const calls = [];
    let content = '';
    for (const e of events) {
      const dl = e.choices[0]?.delta ?? {};
      content += dl.content ?? '';
      for (const tc of dl.tool_calls ?? []) {
        calls[tc.index] ??= { name: '', arguments: '' };
        calls[tc.index].name += tc.function?.name ?? '';
        calls[tc.index].arguments += tc.function?.arguments ?? '';
      }
    }
    assert.equal(content, 'Looking it up.');
    assert.deepEqual(calls, [{ name: 'get_weather', arguments: '{"city": "Paris"}' },
      { name: 'get_time', arguments: '{}' }]);
    // the V3 form is not this model's: its markers are dropped, no call is made
    const v3 = `${CB}${B}function${SEP}get_time\n\`\`\`json\n{}\n\`\`\`${E}${CE}`;
    const c = await postJSON(d.base, '/v1/chat/completions', { ...body,
      messages: [{ role: 'user', content: `ECHO:${v3}|OHCE` }] });
    assert.equal(c.status, 200, c.text);
    assert.ok(!c.json.choices[0].message.tool_calls, c.text);
    // a forced call is accepted (its grammar is V3.1's)
    const f = await postJSON(d.base, '/v1/chat/completions', { ...body, tool_choice: 'required' });
    assert.equal(f.status, 200, f.text);
  });
});

// A template writing Kimi-K2's tool-call markers (a stand-in written for this test, in the
// shape of Kimi's: <|tool_calls_section_begin|>, functions.NAME:IDX, <|tool_call_argument_begin|>)
describe('Kimi-K2 tool-call markers', () => {
  const KIMI = "{%- if tools -%}<|im_system|>tool_declare<|im_middle|>{{ tools | tojson }}<|im_end|>{%- endif -%}" +
    "{%- for m in messages -%}<|im_{{ m.role }}|>{{ m.role }}<|im_middle|>" +
    "{%- if m.tool_calls -%}<|tool_calls_section_begin|>{%- for c in m.tool_calls -%}<|tool_call_begin|>{{ c.id }}" +
    "<|tool_call_argument_begin|>{{ c.function.arguments | tojson }}<|tool_call_end|>{%- endfor -%}" +
    "<|tool_calls_section_end|>{%- else -%}{{ m.content }}{%- endif -%}<|im_end|>{%- endfor -%}" +
    "{%- if add_generation_prompt -%}<|im_assistant|>assistant<|im_middle|>{%- endif -%}";
  const tools = [{ type: 'function', function: { name: 'get_weather', parameters: { type: 'object' } } },
    { type: 'function', function: { name: 'get_time' } }];
  let d;
  before(async () => {
    const file = path.join(work, 'kimi.jinja');
    fs.writeFileSync(file, KIMI);
    d = await startDaemon({ bin: BIN, model, args: [...common, `--model.chat_template_file=${file}`] });
  });
  after(async () => {
    const r = await d.stop();
    assert.equal(r.code, 0, d.log());
  });

  test('calls parsed in a message and a stream; a forced call is accepted', async () => {
    const out = 'Let me look.<|tool_calls_section_begin|><|tool_call_begin|>functions.get_weather:0' +
      '<|tool_call_argument_begin|>{"city": "Paris"}<|tool_call_end|><|tool_call_begin|>functions.get_time:1' +
      '<|tool_call_argument_begin|>{}<|tool_call_end|><|tool_calls_section_end|>';
    const body = { messages: [{ role: 'user', content: `ECHO:${out}|OHCE` }], tools, seed: 3 };
    const a = await postJSON(d.base, '/v1/chat/completions', body);
    assert.equal(a.status, 200, a.text);
    assert.equal(a.json.choices[0].finish_reason, 'tool_calls', a.text);
    assert.equal(a.json.choices[0].message.content, 'Let me look.');
    assert.deepEqual(a.json.choices[0].message.tool_calls.map((t) => [t.id, t.function.name, t.function.arguments]),
      [['functions.get_weather:0', 'get_weather', '{"city": "Paris"}'], ['functions.get_time:1', 'get_time', '{}']]);
    const s = await postJSON(d.base, '/v1/chat/completions', { ...body, stream: true });
    const { events, done } = parseSSE(s.text);
    assert.ok(done, s.text);
    const names = events.flatMap((e) => (e.choices[0]?.delta?.tool_calls ?? []).map((t) => t.function?.name).filter(Boolean));
    assert.deepEqual(names, ['get_weather', 'get_time']);
    // the ids are the model's functions.NAME:IDX, in the stream as in the message
    const ids = events.flatMap((e) => (e.choices[0]?.delta?.tool_calls ?? []).map((t) => t.id).filter(Boolean));
    assert.deepEqual(ids, ['functions.get_weather:0', 'functions.get_time:1']);
    const f = await postJSON(d.base, '/v1/chat/completions', { ...body, tool_choice: 'required' });
    assert.equal(f.status, 200, f.text);
  });
});

// Kimi-K2-Thinking's published template (tests/text/templates/kimi_k2_thinking.jinja, see
// jinja_diff.mjs for its source): the prompt, the reasoning split, Kimi tool calls
describe('Kimi-K2-Thinking published template', () => {
  const file = path.join(SRC, 'tests/text/templates/kimi_k2_thinking.jinja');
  const K2T = fs.readFileSync(file, 'utf8');
  const tools = [{ type: 'function', function: { name: 'get_weather', parameters: { type: 'object' } } }];
  let d;
  before(async () => {
    d = await startDaemon({ bin: BIN, model, args: [...common, `--model.chat_template_file=${file}`] });
  });
  after(async () => {
    const r = await d.stop();
    assert.equal(r.code, 0, d.log());
  });

  test('the prompt equals the reference rendering', async () => {
    const messages = [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'Weather in Paris?' },
      { role: 'assistant', content: '', tool_calls: [{ id: 'functions.get_weather:0', type: 'function',
        function: { name: 'get_weather', arguments: '{"city": "Paris"}' } }] },
      { role: 'tool', tool_call_id: 'functions.get_weather:0', content: '22C' },
      { role: 'assistant', content: 'It is 22C.' }, { role: 'user', content: 'Thanks 👋' }];
    for (const extra of [{}, { tools }]) {
      const got = await renderedPrompt(d.base, { messages, ...extra });
      const want = new Template(K2T).render({ messages, add_generation_prompt: true, bos_token: BOS,
        eos_token: EOS, ...extra });
      assert.equal(got, want);
      assert.ok(want.endsWith('<|im_assistant|>assistant<|im_middle|>'), want);
      assert.ok(want.includes('## Return of functions.get_weather:0\n22C'), want);
    }
  });

  test('reasoning is split off; tool calls parsed in a message and a stream', async () => {
    const r = await postJSON(d.base, '/v1/chat/completions', {
      messages: [{ role: 'user', content: 'ECHO:<think>Let me think.</think>It is 4.|OHCE' }] });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.choices[0].message.reasoning_content, 'Let me think.');
    assert.equal(r.json.choices[0].message.content, 'It is 4.');
    const out = '<think>Need the weather.</think><|tool_calls_section_begin|><|tool_call_begin|>functions.get_weather:0' +
      '<|tool_call_argument_begin|>{"city": "Paris"}<|tool_call_end|><|tool_calls_section_end|>';
    const body = { messages: [{ role: 'user', content: `ECHO:${out}|OHCE` }], tools, seed: 7 };
    const a = await postJSON(d.base, '/v1/chat/completions', body);
    assert.equal(a.status, 200, a.text);
    assert.equal(a.json.choices[0].finish_reason, 'tool_calls', a.text);
    assert.equal(a.json.choices[0].message.reasoning_content, 'Need the weather.');
    assert.deepEqual(a.json.choices[0].message.tool_calls.map((t) => [t.id, t.function.name, t.function.arguments]),
      [['functions.get_weather:0', 'get_weather', '{"city": "Paris"}']]);
    const s = await postJSON(d.base, '/v1/chat/completions', { ...body, stream: true });
    const { events, done } = parseSSE(s.text);
    assert.ok(done, s.text);
    const names = events.flatMap((e) => (e.choices[0]?.delta?.tool_calls ?? []).map((t) => t.function?.name).filter(Boolean));
    assert.deepEqual(names, ['get_weather']);
  });
});
