// test_serve_template.mjs - the daemon (fake engine) on a model whose tokenizer_config.json has a
// chat template no built-in renderer recognizes: it is interpreted as Jinja. The rendered
// prompt (/tokenize + /detokenize) equals @huggingface/jinja's rendering byte for byte;
// chat_template_kwargs reach the template; raise_exception is a 400 naming the message; a
// forced tool call is refused for a template without DeepSeek's markers; model.chat_template_file
// replaces the model's template; a template with a syntax error stops start-up with its line.
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
