// Map latency through one session: N times MAP (read) of one file then RELEASE, each awaited; prints one JSON line
// with p50/p99 of the MAP round trip in ms. SERVER is HOST:PORT or ghost:MOUNTPOINT (the ghost-file transport).
// Usage: node ghostlat.mjs SERVER KEYFILE NODE VOLUME PATH COUNT
import { readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';

const [server, keyFile, node, volume, path, countArg] = process.argv.slice(2);
if (!server || !keyFile || !node || !volume || !path || !countArg) {
  console.error('usage: node ghostlat.mjs SERVER KEYFILE NODE VOLUME PATH COUNT');
  process.exit(2);
}
const root = new URL('../../dist/', import.meta.url);
const { Session, parseServerAddress } = await import(new URL('client/session.js', root).href);
const { readKeyFile } = await import(new URL('protocol/index.js', root).href);
const t0 = performance.now();
const session = await Session.open(parseServerAddress(server), { node, key: readKeyFile(keyFile) });
const openMs = performance.now() - t0;
const lat = [];
for (let i = 0; i < Number(countArg); i++) {
  const t = performance.now();
  const map = await session.map(volume, Buffer.from(path));
  lat.push(performance.now() - t);
  await session.release(map.lease);
}
session.close();
lat.sort((a, b) => a - b);
const q = (p) => lat[Math.min(lat.length - 1, Math.floor(p * lat.length))].toFixed(2);
console.log(JSON.stringify({ server: server.startsWith("ghost:") ? `ghost (${process.env.GHOSTLAT_LABEL ?? server.slice(6)})` : "tcp", count: lat.length, openMs: openMs.toFixed(1), p50: q(0.5), p99: q(0.99), max: lat.at(-1).toFixed(2) }));
setTimeout(() => process.exit(0), 100).unref();
