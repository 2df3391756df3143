#!/usr/bin/env node
// ui_load.mjs - size and load time of the chat page (GET /, server/ui/) in headless chromium.
//
// Size: the bytes of each asset as served, plain and gzip (what a browser that accepts gzip
// transfers). Load time: --runs navigations, each in a fresh browser context (empty cache, new
// connection), reporting from the page's own Performance API: first paint, first contentful
// paint, DOMContentLoaded, the load event, and "ready" (the model list has arrived from
// /v1/models: app.js's performance mark tandem:ready); median, min and max in ms.
//
// Usage: node tests/bench/ui_load.mjs [--base-url http://127.0.0.1:8080] [--runs 20]
//          [--chromium /usr/bin/chromium]
// Without --base-url it starts build/tandem serve on the embedded model (models/default).
// Needs puppeteer-core (cd tests && npm ci) and chromium.
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import puppeteer from 'puppeteer-core';
import { startDaemon } from '../integration/daemon.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const arg = (name, def) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : def;
};
const runs = Number(arg('runs', '20'));
const chromium = arg('chromium', '/usr/bin/chromium');
let base = arg('base-url', '');
let daemon = null;
if (!base) {
  const model = spawnSync(path.join(root, 'scripts/default-model.sh'), { encoding: 'utf8' }).stdout.trim();
  daemon = await startDaemon({ bin: path.join(root, 'build/tandem'), model, args: ['--log.level=warn'] });
  base = daemon.base;
}

const kb = (n) => `${(n / 1024).toFixed(1)} KiB`;
console.log(`chat page at ${base}`);
let plain = 0;
let gz = 0;
for (const u of ['/', '/ui/app.js', '/ui/app.css']) {
  const a = await fetch(base + u, { headers: { 'Accept-Encoding': 'identity' } });
  const n = (await a.arrayBuffer()).byteLength;
  const b = await fetch(base + u, { headers: { 'Accept-Encoding': 'gzip' } });
  const z = Number(b.headers.get('content-length'));
  await b.arrayBuffer();
  plain += n;
  gz += z;
  console.log(`  ${u.padEnd(12)} ${kb(n).padStart(10)} plain ${kb(z).padStart(10)} gzip`);
}
console.log(`  ${'total'.padEnd(12)} ${kb(plain).padStart(10)} plain ${kb(gz).padStart(10)} gzip`);

const browser = await puppeteer.launch({ executablePath: chromium, headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'] });
const keys = ['first-paint', 'first-contentful-paint', 'domcontentloaded', 'load', 'ready'];
const samples = Object.fromEntries(keys.map((k) => [k, []]));
for (let i = 0; i < runs; i++) {
  const ctx = await browser.createBrowserContext();
  const page = await ctx.newPage();
  await page.goto(base + '/', { waitUntil: 'load' });
  await page.waitForFunction(() => document.getElementById('status').textContent.startsWith('Ready'));
  const t = await page.evaluate(() => {
    const nav = performance.getEntriesByType('navigation')[0];
    const paint = Object.fromEntries(performance.getEntriesByType('paint').map((p) => [p.name, p.startTime]));
    return { 'first-paint': paint['first-paint'], 'first-contentful-paint': paint['first-contentful-paint'],
      domcontentloaded: nav.domContentLoadedEventEnd, load: nav.loadEventEnd,
      ready: performance.getEntriesByName('tandem:ready')[0].startTime };
  });
  for (const k of keys) samples[k].push(t[k]);
  await ctx.close();
}
await browser.close();
if (daemon) await daemon.stop();

const version = spawnSync(chromium, ['--version'], { encoding: 'utf8' }).stdout.trim();
console.log(`${runs} loads, fresh context each (${version}); ms from navigation start:`);
console.log(`  ${'metric'.padEnd(24)} ${'median'.padStart(8)} ${'min'.padStart(8)} ${'max'.padStart(8)}`);
for (const k of keys) {
  const v = samples[k].filter((x) => x !== undefined).sort((a, b) => a - b);
  if (!v.length) continue;
  const med = v[Math.floor(v.length / 2)];
  const f = (x) => x.toFixed(1).padStart(8);
  console.log(`  ${k.padEnd(24)} ${f(med)} ${f(v[0])} ${f(v[v.length - 1])}`);
}
