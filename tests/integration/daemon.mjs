// daemon.mjs - start/stop `tandem serve` (or `tandem-fake serve`) on 127.0.0.1 for tests.
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// TANDEM_BIN, TANDEM_SRC and the embedded model's directory (scripts/default-model.sh); exits 77
// when there is no default model.
export function defaultModelEnv() {
  const BIN = process.env.TANDEM_BIN;
  const SRC = process.env.TANDEM_SRC;
  if (!BIN || !SRC) throw new Error('TANDEM_BIN and TANDEM_SRC must be set');
  const dm = spawnSync(path.join(SRC, 'scripts/default-model.sh'), { encoding: 'utf8' });
  if (dm.status !== 0) {
    console.error(`SKIP: no default model: ${dm.stderr}`);
    process.exit(77);
  }
  return { BIN, SRC, MODEL_DIR: dm.stdout.trim() };
}

export function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

export function tmpDir(prefix = 'tandem-test-') {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

// Start the daemon and wait until /health answers 200 (or `waitReady: false`: until it listens).
export async function startDaemon({ bin, model, args = [], env = {}, waitReady = true,
  timeoutMs = 30000 }) {
  const port = await freePort();
  const argv = ['serve', '--model', model, '--server.host=127.0.0.1', `--server.port=${port}`,
    ...args];
  const proc = spawn(bin, argv, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  proc.stdout.on('data', (d) => { log += d; });
  proc.stderr.on('data', (d) => { log += d; });
  const exited = new Promise((res) => proc.on('exit', (code, signal) => res({ code, signal })));
  const base = `http://127.0.0.1:${port}`;
  const t0 = Date.now();
  for (;;) {
    if (proc.exitCode !== null || proc.signalCode !== null)
      throw new Error(`daemon exited early (${proc.exitCode}/${proc.signalCode}):\n${log}`);
    if (Date.now() - t0 > timeoutMs) {
      proc.kill('SIGKILL');
      throw new Error(`daemon not ready after ${timeoutMs} ms:\n${log}`);
    }
    try {
      const r = await fetch(base + '/health');
      await r.arrayBuffer();
      if (r.status === 200 || !waitReady) break;
    } catch { /* not listening yet */ }
    await sleep(30);
  }
  return {
    port, base, proc, exited,
    log: () => log,
    async stop(signal = 'SIGTERM') {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill(signal);
      const t = setTimeout(() => proc.kill('SIGKILL'), 20000);
      const r = await exited;
      clearTimeout(t);
      return r;
    },
  };
}

export async function postJSON(base, p, body, headers = {}) {
  const r = await fetch(base + p, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', ...headers },
    body: typeof body === 'string' || body instanceof Uint8Array ? body : JSON.stringify(body),
  });
  const text = await r.text();
  let json = null;
  try { json = JSON.parse(text); } catch { /* not JSON */ }
  return { status: r.status, headers: r.headers, text, json };
}

// Parse an SSE body into the JSON payloads; returns { events, done } (done: saw [DONE] last).
export function parseSSE(text) {
  const events = [];
  let done = false;
  for (const block of text.split('\n\n')) {
    if (!block.trim()) continue;
    if (!block.startsWith('data: ')) throw new Error(`bad SSE block: ${JSON.stringify(block)}`);
    if (done) throw new Error('data after [DONE]');
    const payload = block.slice(6);
    if (payload === '[DONE]') done = true;
    else events.push(JSON.parse(payload));
  }
  return { events, done };
}

export async function metrics(base) {
  const r = await fetch(base + '/metrics');
  const text = await r.text();
  const get = (name) => {
    const m = text.match(new RegExp(`^tandem:${name}\\{[^}]*\\} (\\S+)$`, 'm'));
    return m ? Number(m[1]) : NaN;
  };
  return { text, get };
}

// Wait until pred() is true (polling), or throw after timeoutMs.
export async function waitFor(pred, what, timeoutMs = 10000) {
  const t0 = Date.now();
  for (;;) {
    if (await pred()) return;
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

export function hasCurl() {
  return spawnSync('curl', ['--version']).status === 0;
}
