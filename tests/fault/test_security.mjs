// test_security.mjs - the security defaults, each checked against a running daemon.
// Already covered elsewhere (not repeated): a world-readable API key file is refused, 401 on a
// wrong or missing key, SIGHUP reload, keys absent from the info log, CORS on when configured
// (tests/integration/test_serve_fake.mjs); the constant-time key comparison (server/auth.c:
// every key compared over its full fixed-size buffer, no early exit) in tests/server/test_auth.c;
// body and header limits under load (tests/fault/test_fault.mjs).
// Here: the default bind address is 127.0.0.1; keys never reach the log even at debug level, nor
// --print-config; CORS is off by default (no header, no preflight); the request deadline and the
// body limit have their documented defaults; model files are mapped read-only and private.
// Env: TANDEM_FAKE_BIN, TANDEM_SRC.
import { spawn, spawnSync } from 'node:child_process';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { freePort, startDaemon, tmpDir, waitFor } from '../integration/daemon.mjs';
import { request } from './fault_util.mjs';

const BIN = process.env.TANDEM_FAKE_BIN;
const SRC = process.env.TANDEM_SRC;
assert.ok(BIN && SRC, 'TANDEM_FAKE_BIN and TANDEM_SRC must be set');
const work = tmpDir('tandem-sec-');
const model = path.join(work, 'fake-model');
assert.equal(spawnSync('node', [path.join(SRC, 'tests/server/make_tokenizer.mjs'), model]).status, 0);
const common = ['--model.template=deepseek-v3', '--model.name=fake-model'];

// The listening sockets of pid as "addr:port" (IPv4, from /proc/<pid>/net/tcp, state 0A).
function listening(pid) {
  const inodes = new Set();
  for (const fd of fs.readdirSync(`/proc/${pid}/fd`)) {
    try {
      const m = fs.readlinkSync(`/proc/${pid}/fd/${fd}`).match(/^socket:\[(\d+)\]$/);
      if (m) inodes.add(m[1]);
    } catch { /* closed meanwhile */ }
  }
  const out = [];
  for (const line of fs.readFileSync(`/proc/${pid}/net/tcp`, 'utf8').split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length < 10 || f[3] !== '0A' || !inodes.has(f[9])) continue;
    const [hex, port] = f[1].split(':');
    const ip = hex.match(/../g).reverse().map((h) => parseInt(h, 16)).join('.');
    out.push(`${ip}:${parseInt(port, 16)}`);
  }
  return out;
}

test('defaults: bind 127.0.0.1, CORS off, limits, keys kept out of logs and config output', async () => {
  const pc = spawnSync(BIN, ['serve', '--model', model, '--print-config'], { encoding: 'utf8' });
  assert.equal(pc.status, 0, pc.stderr);
  assert.match(pc.stdout, /^host = 127\.0\.0\.1$/m);
  assert.match(pc.stdout, /^cors = (false|0)$/m);
  assert.match(pc.stdout, /^max_body_bytes = 4194304$/m);
  assert.match(pc.stdout, /^request_timeout_s = 60$/m);
  assert.match(pc.stdout, /^cors_origins = $/m);
  assert.match(pc.stdout, /^first_byte_timeout_s = 5$/m);
  assert.match(pc.stdout, /^max_connections_per_ip = 256$/m);
  assert.match(pc.stdout, /^tokenize_max_bytes = 1048576$/m);

  // started without --server.host: listens on 127.0.0.1 only
  const keys = path.join(work, 'keys');
  fs.writeFileSync(keys, 'sk-secret-one\nsk-secret-two\n', { mode: 0o600 });
  const port = await freePort();
  const p = spawn(BIN, ['serve', '--model', model, ...common, `--server.port=${port}`,
    `--server.api_key_file=${keys}`, '--log.level=debug'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  p.stdout.on('data', (x) => { log += x; });
  p.stderr.on('data', (x) => { log += x; });
  const exited = new Promise((res) => p.on('exit', (code) => res(code)));
  try {
    await waitFor(async () => {
      try { return (await fetch(`http://127.0.0.1:${port}/health`)).status === 200; } catch { return false; }
    }, 'daemon', 20000);
    assert.deepEqual(listening(p.pid), [`127.0.0.1:${port}`]);
    // keys at debug level: wrong, right, in a malformed header
    const body = { messages: [{ role: 'user', content: 'ECHO:ok' }] };
    const bad = await request(port, 'POST', '/v1/chat/completions', body,
      { headers: { Authorization: 'Bearer sk-secret-wrong' } });
    assert.equal(bad.status, 401);
    const ok = await request(port, 'POST', '/v1/chat/completions', body,
      { headers: { Authorization: 'Bearer sk-secret-one' } });
    assert.equal(ok.status, 200);
    const odd = await request(port, 'GET', '/v1/models', undefined,
      { headers: { Authorization: 'sk-secret-two' } });
    assert.equal(odd.status, 401);
    // CORS off: no header on replies, OPTIONS is not a preflight
    assert.equal(ok.headers['access-control-allow-origin'], undefined);
    const pre = await request(port, 'OPTIONS', '/v1/chat/completions', undefined,
      { headers: { Origin: 'http://evil.example', 'Access-Control-Request-Method': 'POST',
        Authorization: 'Bearer sk-secret-one' } });
    assert.equal(pre.status, 405);
    assert.equal(pre.headers['access-control-allow-origin'], undefined);
  } finally {
    p.kill('SIGTERM');
    assert.equal(await exited, 0, log);
  }
  assert.ok(!/sk-secret/.test(log), 'no key (right or wrong) in the debug log');
  const pk = spawnSync(BIN, ['serve', '--model', model, `--server.api_key_file=${keys}`, '--print-config'],
    { encoding: 'utf8' });
  assert.ok(!/sk-secret/.test(pk.stdout + pk.stderr), '--print-config shows the path, not keys');
});

test('model files are mapped read-only and private (real engine, models/default)', async (t) => {
  const real = path.join(SRC, 'models/default');
  if (!process.env.TANDEM_BIN || !fs.existsSync(path.join(real, 'config.json'))) {
    t.skip('models/default or TANDEM_BIN missing');
    return;
  }
  const d = await startDaemon({ bin: process.env.TANDEM_BIN, model: real, args: ['--log.level=warn'],
    timeoutMs: 120000 });
  try {
    const maps = fs.readFileSync(`/proc/${d.proc.pid}/maps`, 'utf8').split('\n')
      .filter((l) => l.includes(fs.realpathSync(real)));
    assert.ok(maps.length > 0, 'the weights are mapped');
    for (const l of maps) assert.match(l.split(/\s+/)[1], /^r--p$/, l);
    // any descriptor still open on a model file is O_RDONLY
    for (const fd of fs.readdirSync(`/proc/${d.proc.pid}/fd`)) {
      let target;
      try { target = fs.readlinkSync(`/proc/${d.proc.pid}/fd/${fd}`); } catch { continue; }
      if (!target.startsWith(fs.realpathSync(real))) continue;
      const flags = parseInt(fs.readFileSync(`/proc/${d.proc.pid}/fdinfo/${fd}`, 'utf8')
        .match(/^flags:\s+(\d+)$/m)[1], 8);
      assert.equal(flags & 3, 0, `${target} open with flags ${flags.toString(8)}`);
    }
  } finally {
    assert.equal((await d.stop()).code, 0);
  }
});
