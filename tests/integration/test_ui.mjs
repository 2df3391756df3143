// test_ui.mjs - the chat page (GET /, server/ui/) in a real browser: Debian's chromium, headless,
// driven by puppeteer-core, against the daemon:
//   - `tandem serve` on the embedded model (models/default): the page's headers (CSP, gzip,
//     ETag/304); the model list; "What is 12 + 30?" answered "12 + 30 = 42." through a streamed
//     POST (application/json, same origin) with per-answer stats from `usage`; after a reload the
//     conversation is listed and opens again; rename and delete persist;
//   - the same with an API key file: the page asks for the key, works once it is entered, sends
//     it as a Bearer token, and the key never appears in the daemon's debug log;
//   - `tandem-fake serve` (the real server/ with a scripted engine: "ECHO:" prompts choose the
//     exact output, TANDEM_FAKE_STEP_MS slows it down): Stop mid-generation leaves /metrics
//     with no running request; an answer with Markdown, a code block and HTML/script injection
//     attempts renders the Markdown and runs none of the scripts (and the system prompt and
//     top_p go into the request); R1 reasoning lands in a collapsed block apart from the
//     answer; server.ui = false answers 404.
// Screenshots go to $TANDEM_BUILD/ui-screenshots/. Exits 77 when chromium
// (TANDEM_CHROMIUM, default /usr/bin/chromium) or puppeteer-core (cd tests && npm ci) is missing.
import { spawnSync } from 'node:child_process';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { metrics, startDaemon, tmpDir, waitFor } from './daemon.mjs';

const CHROME = process.env.TANDEM_CHROMIUM || '/usr/bin/chromium';
if (!fs.existsSync(CHROME)) {
  console.error(`SKIP: no chromium at ${CHROME} (apt-get install chromium; scripts/setup.sh does)`);
  process.exit(77);
}
let puppeteer;
try {
  puppeteer = (await import('puppeteer-core')).default;
} catch (e) {
  console.error(`SKIP: the puppeteer-core npm package is not installed (cd tests && npm ci): ${e}`);
  process.exit(77);
}
const BIN = process.env.TANDEM_BIN;
const FAKE = process.env.TANDEM_FAKE_BIN;
const SRC = process.env.TANDEM_SRC;
assert.ok(BIN && FAKE && SRC, 'TANDEM_BIN, TANDEM_FAKE_BIN and TANDEM_SRC must be set');
const dm = spawnSync(path.join(SRC, 'scripts/default-model.sh'), { encoding: 'utf8' });
if (dm.status !== 0) {
  console.error(`SKIP: no default model: ${dm.stderr}`);
  process.exit(77);
}
const MODEL_DIR = dm.stdout.trim();
const SHOTS = path.join(process.env.TANDEM_BUILD || tmpDir(), 'ui-screenshots');
fs.mkdirSync(SHOTS, { recursive: true });

let browser;
before(async () => {
  browser = await puppeteer.launch({ executablePath: CHROME, headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'] });
});
after(async () => {
  await browser?.close();
});

// A fresh browser profile (own localStorage) on the page at base; collects page errors and
// console errors (other than failed loads), CSP/Trusted Types violations apart (`blocked`: the
// page itself has none; DOMPurify parsing an attack makes chromium report the handlers and
// styles it refused), and the chat requests the page sends.
async function openPage(base) {
  const ctx = await browser.createBrowserContext();
  const page = await ctx.newPage();
  await page.setViewport({ width: 1100, height: 720 });
  const errors = [];
  const chats = [];
  page.on('pageerror', (e) => errors.push(`pageerror: ${e.message}`));
  const blocked = [];
  page.on('console', (m) => {
    if (m.type() !== 'error' || m.text().startsWith('Failed to load resource')) return;
    if (/Content Security Policy|requires 'TrustedHTML'/.test(m.text())) blocked.push(m.text());
    else errors.push(`console: ${m.text()}`);
  });
  page.on('dialog', (d) => d.accept());
  page.on('request', (r) => {
    if (r.url().endsWith('/v1/chat/completions'))
      chats.push({ url: r.url(), headers: r.headers(), body: JSON.parse(r.postData()) });
  });
  await page.goto(base + '/', { waitUntil: 'load' });
  return { ctx, page, errors, blocked, chats };
}

const text = (page, sel) => page.$eval(sel, (e) => e.textContent);
const allText = (page, sel) => page.$$eval(sel, (es) => es.map((e) => e.textContent));
const lastAnswer = '#messages .msg.assistant:last-of-type';

async function setField(page, sel, value) {
  await page.$eval(sel, (e, v) => {
    e.value = v;
    e.dispatchEvent(new Event('change'));
  }, value);
}
async function ask(page, prompt) {
  await page.$eval('#prompt', (e, v) => { e.value = v; }, prompt);
  await page.click('#send');
}
async function waitIdle(page) { // the answer is complete (Send is back)
  await page.waitForFunction(() => !document.getElementById('send').hidden &&
    document.getElementById('stop').hidden, { timeout: 60000 });
}
async function shot(page, name) {
  await page.screenshot({ path: path.join(SHOTS, `${name}.png`) });
}

describe('chat page on the embedded model', () => {
  let d, p;
  before(async () => {
    d = await startDaemon({ bin: BIN, model: MODEL_DIR, args: ['--log.level=warn'] });
  });
  after(async () => {
    await p?.ctx.close();
    const r = await d.stop();
    assert.equal(r.code, 0, d.log());
  });

  test('headers: CSP without inline script, gzip, ETag revalidation', async () => {
    const r = await fetch(d.base + '/');
    assert.equal(r.status, 200);
    assert.match(r.headers.get('content-type'), /^text\/html; charset=utf-8$/);
    const csp = r.headers.get('content-security-policy');
    assert.match(csp, /default-src 'none'/);
    assert.match(csp, /script-src 'self'(;|$)/);
    assert.match(csp, /connect-src 'self'/);
    assert.match(csp, /frame-ancestors 'none'/);
    assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval/);
    assert.equal(r.headers.get('x-content-type-options'), 'nosniff');
    const html = await r.text();
    assert.doesNotMatch(html, /<script>|<script [^>]*>[^<]/, 'no inline script in the page');
    const js = await fetch(d.base + '/ui/app.js', { headers: { 'Accept-Encoding': 'gzip' } });
    assert.equal(js.status, 200);
    assert.equal(js.headers.get('content-encoding'), 'gzip');
    assert.match(js.headers.get('content-type'), /^text\/javascript/);
    const body = await js.text();
    assert.match(body, /DOMPurify/);
    assert.match(body, /marked/);
    const etag = js.headers.get('etag');
    const again = await fetch(d.base + '/ui/app.js', { headers: { 'If-None-Match': etag } });
    assert.equal(again.status, 304);
    const css = await fetch(d.base + '/ui/app.css');
    assert.match(css.headers.get('content-type'), /^text\/css/);
  });

  test('ask "What is 12 + 30?": a streamed answer with 42 and its stats', async () => {
    p = await openPage(d.base);
    const { page } = p;
    await page.waitForFunction(() => document.getElementById('status').textContent === 'Ready: default');
    assert.deepEqual(await page.$$eval('#model option', (os) => os.map((o) => o.value)), ['default']);
    await page.click('#settings summary');
    await setField(page, '#temperature', '0');
    await setField(page, '#max_tokens', '64');
    await ask(page, 'What is 12 + 30?');
    await waitIdle(page);
    assert.equal(await text(page, `${lastAnswer} .body`), '12 + 30 = 42.\n');
    const stats = await text(page, `${lastAnswer} .stats`);
    assert.match(stats, /first token \d+ ms/);
    assert.match(stats, /[\d.]+ tokens\/s/);
    assert.match(stats, /\d+ prompt \+ 12 completion tokens/);
    assert.equal(p.chats.length, 1);
    const req = p.chats[0];
    assert.equal(req.url, d.base + '/v1/chat/completions', 'same origin');
    assert.equal(req.headers['content-type'], 'application/json');
    assert.equal(req.headers.authorization, undefined);
    assert.equal(req.body.stream, true);
    assert.deepEqual(req.body.stream_options, { include_usage: true });
    assert.equal(req.body.temperature, 0);
    assert.equal(req.body.max_tokens, 64);
    assert.deepEqual(req.body.messages, [{ role: 'user', content: 'What is 12 + 30?' }]);
    assert.deepEqual(await allText(page, '#conv-list .open'), ['What is 12 + 30?']);
    await shot(page, 'answer-42');
    assert.deepEqual([p.errors, p.blocked], [[], []]);
  });

  test('reload: the conversation is listed and opens again; rename and delete persist', async () => {
    const { page } = p;
    await page.click('#new-chat');
    await page.reload({ waitUntil: 'load' });
    assert.deepEqual(await allText(page, '#conv-list .open'), ['New chat', 'What is 12 + 30?']);
    assert.equal(await page.$$eval('#messages .msg', (ms) => ms.length), 0);
    await page.click('#conv-list li:nth-child(2) .open');
    assert.deepEqual(await allText(page, '#messages .msg .body'), ['What is 12 + 30?', '12 + 30 = 42.\n']);
    assert.match(await text(page, `${lastAnswer} .stats`), /12 completion tokens/);
    // the settings came back too
    assert.equal(await page.$eval('#temperature', (e) => e.value), '0');
    // rename the second entry, delete the first
    await page.click('#conv-list li:nth-child(2) .rename');
    await page.$eval('#conv-list .rename-input', (e) => { e.value = 'Arithmetic'; });
    await page.focus('#conv-list .rename-input');
    await page.keyboard.press('Enter');
    await page.click('#conv-list li:nth-child(1) .delete');
    await page.reload({ waitUntil: 'load' });
    assert.deepEqual(await allText(page, '#conv-list .open'), ['Arithmetic']);
    assert.deepEqual(await allText(page, '#messages .msg .body'), ['What is 12 + 30?', '12 + 30 = 42.\n']);
    await shot(page, 'reloaded');
    assert.deepEqual([p.errors, p.blocked], [[], []]);
  });
});

describe('chat page with an API key', () => {
  const KEY = 'sk-ui-test-5f1c0b7e';
  let d, p;
  before(async () => {
    const keyFile = path.join(tmpDir(), 'keys');
    fs.writeFileSync(keyFile, `${KEY}\n`, { mode: 0o600 });
    d = await startDaemon({ bin: BIN, model: MODEL_DIR,
      args: ['--log.level=debug', `--server.api_key_file=${keyFile}`] });
  });
  after(async () => {
    await p?.ctx.close();
    await d.stop();
  });

  test('the page asks for the key, then works with it; the key is not logged', async () => {
    const page0 = await fetch(d.base + '/');
    assert.equal(page0.status, 200, 'the page itself needs no key');
    assert.equal((await fetch(d.base + '/v1/models')).status, 401);
    p = await openPage(d.base);
    const { page } = p;
    await page.waitForFunction(() => /requires an API key/.test(document.getElementById('status').textContent));
    assert.equal(await page.$eval('#settings', (e) => e.open), true);
    await shot(page, 'api-key-needed');
    await setField(page, '#api-key', KEY);
    await page.waitForFunction(() => document.getElementById('status').textContent === 'Ready: default');
    await setField(page, '#temperature', '0');
    await ask(page, 'What is 12 + 30?');
    await waitIdle(page);
    assert.equal(await text(page, `${lastAnswer} .body`), '12 + 30 = 42.\n');
    assert.equal(p.chats.at(-1).headers.authorization, `Bearer ${KEY}`);
    assert.equal(await page.evaluate(() => JSON.parse(localStorage.getItem('tandem.apiKey'))), KEY);
    await shot(page, 'api-key');
    assert.deepEqual([p.errors, p.blocked], [[], []]);
    assert.match(d.log(), /POST \/v1\/chat\/completions/, 'the debug log has the requests');
    assert.ok(!d.log().includes(KEY), 'the API key is in the daemon log');
  });
});

describe('chat page on the scripted engine', () => {
  let d, p;
  before(async () => {
    d = await startDaemon({ bin: FAKE, model: MODEL_DIR, env: { TANDEM_FAKE_STEP_MS: '10' },
      args: ['--log.level=warn', '--model.template=deepseek-v3'] });
    p = await openPage(d.base);
    await p.page.waitForFunction(() => document.getElementById('status').textContent === 'Ready: default');
  });
  after(async () => {
    await p?.ctx.close();
    const r = await d.stop();
    assert.equal(r.code, 0, d.log());
  });

  test('Stop mid-generation: the partial answer stays, /metrics shows no running request', async () => {
    const { page } = p;
    const words = Array.from({ length: 80 }, (_, i) => `word${i}`).join(' ');
    await ask(page, `ECHO:${words}|OHCE`);
    // tokens stream in while the request runs
    await page.waitForFunction((sel) => {
      const b = document.querySelector(`${sel} .body`);
      return b && b.textContent.includes('word5') && !document.getElementById('stop').hidden;
    }, {}, lastAnswer);
    assert.equal((await metrics(d.base)).get('num_requests_running'), 1);
    await shot(page, 'streaming');
    await page.click('#stop');
    await waitIdle(page);
    await waitFor(async () => (await metrics(d.base)).get('num_requests_running') === 0,
      'no running request after Stop');
    const partial = await text(page, `${lastAnswer} .body`);
    assert.match(partial, /^word0 word1 word2/);
    assert.ok(!partial.includes('word79'), 'stopped before the end');
    assert.equal(await text(page, `${lastAnswer} .note`), 'stopped');
    await shot(page, 'stopped');
    assert.deepEqual([p.errors, p.blocked], [[], []]);
  });

  test('Markdown and code render; HTML/script injection in the answer does not run', async () => {
    const { page } = p;
    await page.click('#new-chat');
    const attack = [
      '# Result\n\nSome **bold** text and `inline code`.',
      '```js\nconsole.log("<b>not bold</b>");\n```',
      '<script>window.__pwned = "script";</script>',
      '<img src="x" onerror="window.__pwned = \'img\'">',
      '<iframe srcdoc="<script>parent.__pwned = \'iframe\'</script>"></iframe>',
      '<a id="evil" href="javascript:window.__pwned = \'href\'">click me</a>',
      '[md link](javascript:window.__pwned=\'mdlink\')',
      '<svg><animate onbegin="window.__pwned = \'svg\'" attributeName="x" dur="1s"/></svg>',
      '<form action="/"><button id="evil-button">go</button></form>',
      '<div style="position:fixed;inset:0" onmouseover="window.__pwned = \'hover\'">cover</div>',
      '[safe](https://example.invalid/page)',
    ].join('\n\n');
    await page.click('#settings summary');
    await setField(page, '#system', 'Answer in Markdown.');
    await setField(page, '#top_p', '0.9');
    await ask(page, `ECHO:${attack}|OHCE`);
    await waitIdle(page);
    const req = p.chats.at(-1).body;
    assert.deepEqual(req.messages, [{ role: 'system', content: 'Answer in Markdown.' },
      { role: 'user', content: `ECHO:${attack}|OHCE` }]);
    assert.equal(req.top_p, 0.9);
    assert.equal(req.temperature, undefined, 'an empty field leaves the server default');
    const sel = `${lastAnswer} .body`;
    assert.equal(await text(page, `${sel} h1`), 'Result');
    assert.equal(await text(page, `${sel} strong`), 'bold');
    assert.equal(await text(page, `${sel} pre code`), 'console.log("<b>not bold</b>");\n');
    assert.equal(await page.$$eval(`${sel} pre b`, (es) => es.length), 0);
    const found = await page.$eval(sel, (b) => ({
      scripts: b.querySelectorAll('script, iframe, form, button, style, animate').length,
      handlers: [...b.querySelectorAll('*')].flatMap((e) => [...e.attributes])
        .filter((a) => a.name.startsWith('on') || a.name === 'style' || /javascript:/i.test(a.value))
        .map((a) => a.name),
      safe: [...b.querySelectorAll('a')].filter((a) => a.href === 'https://example.invalid/page')
        .map((a) => `${a.target} ${a.rel}`),
    }));
    assert.deepEqual(found, { scripts: 0, handlers: [], safe: ['_blank noopener noreferrer'] });
    // click and hover what is left of the attacks
    await page.$$eval(`${sel} a:not([href^="https:"])`, (as) => as.forEach((a) => a.click()));
    await page.hover(sel);
    // every image has finished loading (or failing), so an onerror that survived has run
    await page.waitForFunction((s) => [...document.querySelectorAll(`${s} img`)].every((i) => i.complete), {}, sel);
    assert.equal(await page.evaluate(() => window.__pwned), undefined);
    // the CSP's Trusted Types: HTML from a plain string is refused, so only DOMPurify's output
    // reaches the DOM
    assert.equal(await page.evaluate(() => {
      try {
        document.createElement('div').innerHTML = '<b>x</b>';
        return 'assigned';
      } catch (e) {
        return e.name;
      }
    }), 'TypeError');
    await shot(page, 'markdown');
    assert.deepEqual(p.errors, []);
  });
});

describe('R1 reasoning and server.ui = false', () => {
  test('reasoning_content shows in a collapsed block apart from the answer', async () => {
    const d = await startDaemon({ bin: FAKE, model: MODEL_DIR,
      args: ['--log.level=warn', '--model.template=deepseek-r1'] });
    const p = await openPage(d.base);
    try {
      const { page } = p;
      await page.waitForFunction(() => document.getElementById('status').textContent === 'Ready: default');
      // R1's prompt ends inside <think>: everything the fake engine echoes is reasoning
      await ask(page, 'ECHO:First add the tens, then the ones.|OHCE');
      await waitIdle(page);
      const r = await page.$eval(lastAnswer, (m) => ({
        open: m.querySelector('details.reasoning').open,
        summary: m.querySelector('details.reasoning summary').textContent,
        reasoning: m.querySelector('details.reasoning .reasoning-body').textContent,
        body: m.querySelector('.body').textContent,
      }));
      assert.deepEqual(r, { open: false, summary: 'Reasoning',
        reasoning: 'First add the tens, then the ones.', body: '' });
      await page.click(`${lastAnswer} details.reasoning summary`);
      await shot(page, 'reasoning');
      assert.deepEqual([p.errors, p.blocked], [[], []]);
    } finally {
      await p.ctx.close();
      await d.stop();
    }
  });

  test('server.ui = false: GET / and the assets answer 404', async () => {
    const d = await startDaemon({ bin: FAKE, model: MODEL_DIR, args: ['--server.ui=false'] });
    try {
      for (const u of ['/', '/ui/app.js', '/ui/app.css']) {
        const r = await fetch(d.base + u);
        assert.equal(r.status, 404, u);
        assert.match((await r.json()).error.message, /server\.ui = false/);
      }
      assert.equal((await fetch(d.base + '/v1/models')).status, 200);
    } finally {
      await d.stop();
    }
  });
});
