// Map-server load generator for test/bench/mapload: CONNS authenticated connections, each sending MAP (read) of
// its files in turn, then RELEASE of the lease it got (sent with the next MAP, in one write, unless
// MAPLOAD_PIPELINE=0), for SECONDS; prints one JSON line of figures.
// Usage: node mapload.mjs HOST:PORT KEYFILE NODE VOLUME SECONDS CONNS PATH...
// Connection i maps PATH[i % n], PATH[(i + 1) % n], ...; latency is that of MAP (request sent to END read).
// MAPLOAD_RATE=R (maps/s, all connections together): an open loop instead of as fast as they can. Connection i
// sends its k-th MAP at start + (i / CONNS + k) * CONNS / R s, or at once if the previous reply came later than
// that; its latency counts from that scheduled time, not from the send (a late reply delays the requests behind it
// and they count the wait: no coordinated omission), so timer lateness in this process counts against the server.
import { createHmac, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { connect } from 'node:net';

const [server, keyFile, node, volume, secondsArg, connsArg, ...paths] = process.argv.slice(2);
if (!server || !keyFile || !node || !volume || !secondsArg || !connsArg || paths.length === 0) {
  console.error('usage: node mapload.mjs HOST:PORT KEYFILE NODE VOLUME SECONDS CONNS PATH...');
  process.exit(2);
}
const [host, port] = [server.slice(0, server.lastIndexOf(':')), Number(server.slice(server.lastIndexOf(':') + 1))];
const key = readFileSync(keyFile, 'latin1').trimEnd();
const seconds = Number(secondsArg);
const conns = Number(connsArg);
// MAPLOAD_PIPELINE=0: each RELEASE in a write of its own, its reply awaited before the next MAP.
const pipeline = process.env.MAPLOAD_PIPELINE !== '0';
const rate = Number(process.env.MAPLOAD_RATE ?? 0);
if (!(rate >= 0)) {
  console.error('mapload.mjs: MAPLOAD_RATE must be a number of maps per second');
  process.exit(2);
}
/** An open loop's gap between one connection's requests (ms); 0: a closed loop. */
const interval = rate > 0 ? (conns * 1000) / rate : 0;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
// MAPLOAD_WARMUP=S (default 1): seconds of the same load before the measured SECONDS, counted nowhere (the server's
// first maps of each file and its JIT compiling the map path are not its steady state).
const warmup = Number(process.env.MAPLOAD_WARMUP ?? 1);
if (!(warmup >= 0)) {
  console.error('mapload.mjs: MAPLOAD_WARMUP must be a number of seconds');
  process.exit(2);
}
const hmac = (msg) => createHmac('sha256', key).update(msg).digest('hex');
// Paths as the protocol encodes them (percent-encoding for anything but plain bytes).
const wirePath = (p) => Buffer.from(p).toString('latin1').replace(/[^A-Za-z0-9._\/-]/g, (c) => '%' + c.charCodeAt(0).toString(16).padStart(2, '0'));

/** One connection: a line reader over the socket, and a request/reply loop. */
function run(index, go, lat, authed) {
  return new Promise((resolve, reject) => {
    const sock = connect({ host, port });
    sock.setNoDelay(true);
    // Received text not yet consumed; `need` is what the reader waits for (a line, or a map reply's END).
    let buf = '';
    let waiter = null;
    sock.setEncoding('latin1');
    sock.on('data', (d) => {
      buf += d;
      if (waiter) waiter();
    });
    sock.on('error', reject);
    sock.on('close', () => waiter && reject(new Error(`connection ${index} closed`)));
    const more = () => new Promise((r) => (waiter = () => ((waiter = null), r())));
    const line = async () => {
      for (;;) {
        const nl = buf.indexOf('\n');
        if (nl < 0) {
          await more();
          continue;
        }
        const l = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        if (!l.startsWith('! ')) return l; // a push (a recall) is not a reply
      }
    };
    /** The data lines of a multi-line reply up to END, counted (not split: a map of many thousand lines must not
     *  cost the load generator more than the server). */
    const dataLines = async () => {
      let from = 0;
      for (;;) {
        const end = buf.startsWith('END\n') ? 0 : buf.indexOf('\nEND\n', Math.max(0, from - 4));
        if (end < 0) {
          from = buf.length;
          await more();
          continue;
        }
        let n = 0;
        for (let k = buf.indexOf('\n'); k >= 0 && k < end; k = buf.indexOf('\n', k + 1)) n++;
        if (end > 0) n++; // the line that ends at `end`
        buf = buf.slice(end === 0 ? 4 : end + 5);
        return n;
      }
    };
    const send = (l) => sock.write(l + '\n');
    const fieldsOf = (l) => Object.fromEntries(l.split(' ').slice(2).filter((f) => f.includes('=')).map((f) => [f.slice(0, f.indexOf('=')), f.slice(f.indexOf('=') + 1)]));
    (async () => {
      const greeting = await line();
      const challenge = fieldsOf(greeting).challenge;
      const mine = randomBytes(32).toString('hex');
      send(`HELLO ${node} 2 ${mine}`);
      const hello = await line();
      if (!hello.startsWith('OK HELLO')) throw new Error(hello);
      send(`AUTH ${hmac(`fused-auth-v2\n${challenge}\n${mine}\n${node}`)}`);
      const auth = await line();
      if (!auth.startsWith('OK AUTH')) throw new Error(auth);
      authed();
      const { from: measureFrom, deadline } = await go;
      let maps = 0;
      let all = 0; // with the warm-up's
      let extents = 0;
      let errors = 0;
      let k = index;
      const wire = paths.map(wirePath);
      // The lease of the last map, released in the same write as the next MAP (pipelined: one packet each way).
      let held = null;
      const release = async () => {
        const rel = await line();
        if (!rel.startsWith('OK RELEASE')) throw new Error(rel);
      };
      // The open loop's schedule: this connection's first request a fraction of the interval after the start.
      let due = measureFrom - warmup * 1000 + (interval * index) / conns;
      while (performance.now() < deadline) {
        let t0 = performance.now();
        if (interval > 0) {
          if (due > t0) await sleep(due - t0);
          if (due >= deadline) break;
          t0 = due;
          due += interval;
        }
        const map = `MAP ${volume} ${wire[k++ % wire.length]} read`;
        if (held !== null && pipeline) {
          send(`RELEASE ${held}\n${map}`);
          held = null;
          await release();
        } else {
          send(map);
        }
        const head = await line();
        if (!head.startsWith('OK MAP')) {
          errors++;
          if (errors > 10) throw new Error(head);
          continue;
        }
        const n = await dataLines();
        const measured = t0 >= measureFrom;
        if (measured) lat.push(performance.now() - t0);
        const f = fieldsOf(head);
        if (f.network !== undefined) throw new Error(`NETWORK map: ${head}`);
        if (Number(f.extents) !== n) throw new Error(`extents=${f.extents} but ${n} X lines`);
        extents = n;
        held = f.lease;
        if (!pipeline) {
          send(`RELEASE ${held}`);
          held = null;
          await release();
        }
        if (measured) maps++;
        all++;
      }
      if (held !== null) {
        send(`RELEASE ${held}`);
        await release();
      }
      send('QUIT');
      await line();
      sock.destroy();
      return { maps, all, extents, errors };
    })().then(resolve, reject);
  });
}

const lat = [];
const cpu0 = process.cpuUsage();
// Connections authenticate one after the other (the server admits only a few unauthenticated ones at once),
// then all start together.
let start = 0;
let startAll;
const go = new Promise((r) => (startAll = r));
const running = [];
for (let i = 0; i < conns; i++) {
  await new Promise((authed, failed) => running.push(run(i, go, lat, authed).catch((e) => { failed(e); throw e; })));
}
start = performance.now() + warmup * 1000;
startAll({ from: start, deadline: start + seconds * 1000 });
const results = await Promise.all(running);
const elapsed = (performance.now() - start) / 1000;
lat.sort((a, b) => a - b);
const pct = (p) => (lat.length ? lat[Math.min(lat.length - 1, Math.floor((p / 100) * lat.length))] : NaN);
const maps = results.reduce((s, r) => s + r.maps, 0);
console.log(JSON.stringify({
  conns,
  seconds: Number(elapsed.toFixed(2)),
  maps,
  mapsWithWarmup: results.reduce((s, r) => s + r.all, 0),
  warmupSeconds: warmup,
  mapsPerSecond: Math.round(maps / elapsed),
  extentsPerMap: results[0].extents,
  p50ms: Number(pct(50).toFixed(2)),
  p99ms: Number(pct(99).toFixed(2)),
  maxms: Number(lat[lat.length - 1].toFixed(2)),
  errors: results.reduce((s, r) => s + r.errors, 0),
  pipelined: pipeline,
  // This process's own CPU (user + system) per map, warm-up included: what the load generator took of the machine.
  loadCpuUsPerMap: (() => {
    const c = process.cpuUsage(cpu0);
    const all = results.reduce((s, r) => s + r.all, 0);
    return all > 0 ? Math.round((c.user + c.system) / all) : null;
  })(),
  ...(rate > 0 ? { offeredPerSecond: rate } : {}),
}));
