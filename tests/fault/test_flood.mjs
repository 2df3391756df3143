// test_flood.mjs - idle-connection flood against the daemon with the fake engine, on loopback.
//
// 2,000 connections that never send a byte, from 127.0.0.1 itself and then spread over
// 127.0.0.2-9, must not delay /health or /metrics from 127.0.0.1 by more than a second: beyond
// server.max_connections_per_ip from one address, and near server.max_connections, each new
// connection closes the oldest silent one; all are closed after server.first_byte_timeout_s.
// Connections that have sent bytes are not replaced: beyond the per-address cap new ones are
// refused.
// Needs about 2,200 file descriptors (node raises its soft limit to the hard limit on start):
// exits 77 when the limit is lower. Env: TANDEM_FAKE_BIN, TANDEM_SRC.
import { spawnSync } from 'node:child_process';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { startDaemon, tmpDir } from '../integration/daemon.mjs';
import { sleep, waitFor } from './fault_util.mjs';

const BIN = process.env.TANDEM_FAKE_BIN;
const SRC = process.env.TANDEM_SRC;
assert.ok(BIN && SRC, 'TANDEM_FAKE_BIN and TANDEM_SRC must be set');

const FLOOD = 2000;
const NEED_FDS = FLOOD + 400;
const soft = Number(fs.readFileSync('/proc/self/limits', 'utf8')
  .match(/^Max open files\s+(\d+|unlimited)/m)?.[1].replace('unlimited', '1e9'));
if (!(soft >= NEED_FDS)) {
  console.error(`SKIP: the idle-connection flood needs ${NEED_FDS} file descriptors; the soft ` +
    `limit is ${soft} and the hard limit does not allow more (raise it with ulimit -Hn)`);
  process.exit(77);
}

const work = tmpDir('tandem-flood-');
const model = path.join(work, 'fake-model');
{
  const r = spawnSync('node', [path.join(SRC, 'tests/server/make_tokenizer.mjs'), model]);
  assert.equal(r.status, 0, String(r.stderr));
}

let d;
before(async () => {
  d = await startDaemon({ bin: BIN, model,
    args: ['--model.template=deepseek-v3', '--model.name=fake-model', '--log.level=warn'] });
});
after(async () => {
  if (d) assert.equal((await d.stop()).code, 0, d.log());
  fs.rmSync(work, { recursive: true, force: true });
});

// A connection from localAddress that sends nothing; resolves once connected (or failed).
// s.dropped is set when the connection is closed.
function idle(port, localAddress) {
  return new Promise((resolve) => {
    const s = net.connect({ port, host: '127.0.0.1', localAddress });
    s.dropped = false;
    s.on('error', () => {});
    s.on('close', () => { s.dropped = true; });
    s.on('connect', () => resolve(s));
    s.on('close', () => resolve(s));
  });
}

async function openMany(port, n, addr) {
  const socks = [];
  for (let i = 0; i < n; i += 100) {
    const batch = [];
    for (let j = i; j < Math.min(n, i + 100); j++) batch.push(idle(port, addr(j)));
    socks.push(...await Promise.all(batch));
  }
  return socks;
}

// GET path over a fresh connection from 127.0.0.1: { status, ms }.
function timedGet(port, p) {
  return new Promise((resolve) => {
    const t0 = performance.now();
    const req = http.get({ host: '127.0.0.1', port, path: p, agent: false,
      headers: { Connection: 'close' } }, (res) => {
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode, ms: performance.now() - t0 }));
    });
    req.on('error', (e) => resolve({ error: e.code, ms: performance.now() - t0 }));
    req.setTimeout(30000, () => req.destroy(new Error('timeout')));
  });
}

// /health and /metrics five times from 127.0.0.1, each under a second.
async function probe(what) {
  const times = [];
  for (let i = 0; i < 5; i++) {
    const h = await timedGet(d.port, i % 2 ? '/metrics' : '/health');
    assert.equal(h.status, 200, `${what}: request ${i}: ${JSON.stringify(h)}`);
    times.push(Math.round(h.ms));
  }
  for (const ms of times) assert.ok(ms < 1000, `${what}: /health or /metrics took ${ms} ms: ${times}`);
  return times;
}

// The flood in two steps: as many connections as server.max_connections (1,024: the slots), then
// the rest; probe() after each.
async function flood(addr, what) {
  const socks = await openMany(d.port, 1024, addr);
  const ms1 = await probe(`${what}, 1,024 connections`);
  socks.push(...await openMany(d.port, FLOOD - 1024, (j) => addr(j + 1024)));
  const ms2 = await probe(`${what}, ${FLOOD} connections`);
  const open = socks.filter((s) => !s.dropped).length;
  console.error(`flood-figures: ${JSON.stringify({ what, flood: FLOOD, still_open: open, ms1, ms2 })}`);
  return { socks, open };
}

test('2,000 idle connections from one address do not delay /health by more than a second', async () => {
  const { socks, open } = await flood(() => '127.0.0.1', 'one address');
  assert.ok(open <= 256, `${open} idle connections held (server.max_connections_per_ip = 256)`);
  for (const s of socks) s.destroy();
});

test('2,000 idle connections from 8 addresses: the same, and all closed after the first-byte deadline', async () => {
  const { socks, open } = await flood((j) => `127.0.0.${2 + (j % 8)}`, 'eight addresses');
  assert.ok(open <= 1024, `${open} idle connections held (server.max_connections = 1024)`);
  // server.first_byte_timeout_s (5 s): every silent connection is closed by the daemon
  await waitFor(() => socks.every((s) => s.dropped), 'silent connections closed', 15000);
  assert.equal((await timedGet(d.port, '/health')).status, 200);
});

test('connections that have spoken are capped per address (server.max_connections_per_ip)', async () => {
  const socks = await openMany(d.port, 300, () => '127.0.0.10');
  for (const s of socks) if (!s.dropped) s.write('GET /he');
  await sleep(500);
  // the next ones find no silent connection of their address to replace: refused
  const more = await openMany(d.port, 20, () => '127.0.0.10');
  await sleep(500);
  const open = [...socks, ...more].filter((s) => !s.dropped).length;
  try {
    assert.ok(open <= 256 && open >= 200, `${open} of 320 connections from one address open`);
    assert.ok(more.every((s) => s.dropped), 'connections over the cap are closed');
    const h = await timedGet(d.port, '/health');
    assert.equal(h.status, 200);
  } finally {
    for (const s of [...socks, ...more]) s.destroy();
  }
});
