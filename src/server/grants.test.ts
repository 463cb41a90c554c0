// Unit tests for the grant table with a fake clock: node limits, volume caps shared max-min fairly, iops, changes.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { GrantTable, type LimitSource } from './grants.js';

const MiB = 1024 * 1024;

class FakeLimits implements LimitSource {
  nodes = new Map<string, { rate: number; iops: number }>();
  volumes = new Map<string, number>();
  node(name: string) {
    return this.nodes.get(name) ?? { rate: 0, iops: 0 };
  }
  volumeCap(name: string) {
    return this.volumes.get(name) ?? 0;
  }
}

function setup() {
  let t = 1000;
  const limits = new FakeLimits();
  const clock = { now: () => t, set: (v: number) => (t = v) };
  return { limits, clock, table: new GrantTable(limits, { now: clock.now }) };
}

interface Client {
  node: string;
  volume: string;
  ask: number;
  ops: number;
  until: number;
  at: number;
  bytes: number;
  log: { at: number; bytes: number }[];
}

/**
 * Runs greedy clients against the table in simulated time: each asks for `ask` bytes, uses what it got at 1 GiB/s,
 * and asks again when done, but not before `next`; stops at its `until`.
 */
function simulate(s: ReturnType<typeof setup>, clients: Client[], hook?: (t: number) => void): void {
  for (;;) {
    const live = clients.filter((c) => c.at < c.until);
    if (live.length === 0) return;
    const c = live.reduce((a, b) => (b.at < a.at ? b : a));
    s.clock.set(c.at);
    hook?.(c.at);
    const g = s.table.grant(c.node, c.volume, c.ask, c.ops);
    assert.ok(g.bytes <= c.ask && g.ops <= c.ops && g.nextMs >= 0);
    c.bytes += g.bytes;
    c.log.push({ at: c.at, bytes: g.bytes });
    const use = (g.bytes / (1024 * MiB)) * 1000;
    c.at += Math.max(use, g.nextMs, 0.01);
  }
}

const client = (node: string, from: number, until: number, ask = 4 * MiB, volume = 'vol', ops = 1): Client => ({
  node, volume, ask, ops, until, at: from, bytes: 0, log: [],
});

/** Bytes a client got in [from, to) of simulated time, per second. */
function rate(c: Client, from: number, to: number): number {
  return (c.log.filter((e) => e.at >= from && e.at < to).reduce((a, e) => a + e.bytes, 0) * 1000) / (to - from);
}

test('an unlimited node gets what it asks at once, and is counted', () => {
  const s = setup();
  assert.deepEqual(s.table.grant('cli', 'vol', 64 * MiB, 16), { bytes: 64 * MiB, ops: 16, nextMs: 0, limited: false });
  assert.deepEqual(s.table.grant('cli', 'vol', 0, 0), { bytes: 0, ops: 0, nextMs: 0, limited: false });
  const [n] = s.table.nodeStats();
  assert.equal(n!.node, 'cli');
  assert.equal(n!.total, 64 * MiB);
  assert.equal(n!.totalOps, 16);
  assert.equal(n!.current, 64 * MiB);
  assert.equal(n!.currentOps, 16);
  assert.equal(n!.active, true);
  assert.deepEqual(n!.volumes, ['vol']);
  assert.equal(n!.grants, 2);
});

test('a node limit paces a greedy client to the limit, no grant over a quarter second of it', () => {
  const s = setup();
  s.limits.nodes.set('cli', { rate: 50 * MiB, iops: 0 });
  const c = client('cli', 1000, 11_000);
  simulate(s, [c]);
  const got = rate(c, 2000, 11_000);
  assert.ok(Math.abs(got - 50 * MiB) < 0.03 * 50 * MiB, `got ${got / MiB} MiB/s`);
  // Over the whole run: the rate, plus at most the first full bucket.
  const all = c.bytes / MiB;
  assert.ok(all >= 495 && all <= 500 + 12.5, `${all} MiB in 10 s`);
  assert.ok(c.log.every((e) => e.bytes <= s.table.burstBytes(50 * MiB)));
  // A client asking for a quarter second at a time asks about four times a second.
  const q = client('cli', 20_000, 30_000, s.table.burstBytes(50 * MiB));
  simulate(s, [q]);
  const asks = q.log.length / 10;
  assert.ok(asks >= 3 && asks <= 6, `${asks} grants per second`);
});

test('a grant that falls short says when to ask again, and that time is right', () => {
  const s = setup();
  s.limits.nodes.set('cli', { rate: 10 * MiB, iops: 0 });
  const burst = s.table.burstBytes(10 * MiB);
  assert.equal(burst, 2.5 * MiB);
  assert.deepEqual(s.table.grant('cli', 'vol', 100 * MiB, 1), { bytes: burst, ops: 1, nextMs: 250, limited: true });
  assert.deepEqual(s.table.grant('cli', 'vol', 100 * MiB, 1), { bytes: 0, ops: 0, nextMs: 250, limited: true });
  s.clock.set(1000 + 240);
  const early = s.table.grant('cli', 'vol', 100 * MiB, 1);
  assert.deepEqual([early.bytes, early.ops], [0, 0], 'too early');
  assert.ok(early.nextMs >= 10 && early.nextMs <= 11, `next ${early.nextMs}`);
  s.clock.set(1000 + 250);
  assert.equal(s.table.grant('cli', 'vol', 100 * MiB, 1).bytes, burst);
  // A small request is served from what the bucket holds, and the next one of that size needs no wait.
  s.clock.set(1000 + 350);
  assert.deepEqual(s.table.grant('cli', 'vol', 512 * 1024, 1), { bytes: 512 * 1024, ops: 1, nextMs: 0, limited: true });
});

test('a volume cap is split evenly between two active nodes, and an idle node gives its share back within a second', () => {
  const s = setup();
  s.limits.volumes.set('vol', 100 * MiB);
  const a = client('a', 1000, 16_000);
  const b = client('b', 1000, 8000);
  simulate(s, [a, b]);
  for (const c of [a, b]) {
    const got = rate(c, 2000, 8000);
    assert.ok(Math.abs(got - 50 * MiB) < 0.1 * 50 * MiB, `${c.node} got ${got / MiB} MiB/s`);
  }
  // b stopped at 8 s: a has the whole cap from 9 s on.
  const after = rate(a, 9000, 16_000);
  assert.ok(Math.abs(after - 100 * MiB) < 0.05 * 100 * MiB, `a alone got ${after / MiB} MiB/s`);
  // The total over any second stays near the cap.
  const total = (rate(a, 3000, 7000) + rate(b, 3000, 7000)) / MiB;
  assert.ok(total <= 105 && total >= 90, `together ${total} MiB/s`);
});

test('the cap is divided max-min: a node limited below its share leaves the rest to the other', () => {
  const s = setup();
  s.limits.volumes.set('vol', 100 * MiB);
  s.limits.nodes.set('slow', { rate: 20 * MiB, iops: 0 });
  const slow = client('slow', 1000, 11_000);
  const fast = client('fast', 1000, 11_000);
  simulate(s, [slow, fast]);
  const sg = rate(slow, 2000, 11_000) / MiB;
  const fg = rate(fast, 2000, 11_000) / MiB;
  assert.ok(Math.abs(sg - 20) < 2, `slow got ${sg}`);
  assert.ok(Math.abs(fg - 80) < 6, `fast got ${fg}`);
  s.clock.set(20_000);
  assert.equal(s.table.fairShare('x', 'vol'), 100 * MiB, 'idle nodes no longer count');
  assert.equal(s.table.fairShare('x', 'other'), Infinity, 'no cap');
});

test('a lowered limit reaches a running client within a second', () => {
  const s = setup();
  s.limits.nodes.set('cli', { rate: 200 * MiB, iops: 0 });
  const c = client('cli', 1000, 9000);
  simulate(s, [c], (t) => {
    if (t >= 5000) s.limits.nodes.set('cli', { rate: 10 * MiB, iops: 0 });
  });
  const before = rate(c, 2000, 5000) / MiB;
  assert.ok(Math.abs(before - 200) < 10, `before ${before}`);
  // Whatever was granted before the change covers at most a quarter second of the old rate; from 1 s on, the new.
  const granted = c.log.filter((e) => e.at >= 5000 && e.at < 6000).reduce((a, e) => a + e.bytes, 0) / MiB;
  assert.ok(granted <= 10 + 2.5 + 0.1, `first second after the change: ${granted} MiB`);
  const after = rate(c, 6000, 9000) / MiB;
  assert.ok(Math.abs(after - 10) < 1, `after ${after}`);
});

test('an iops limit paces operations, and fewer operations carry proportionally fewer bytes', () => {
  const s = setup();
  s.limits.nodes.set('cli', { rate: 0, iops: 40 });
  const c = client('cli', 1000, 11_000, MiB, 'vol', 1);
  simulate(s, [c]);
  const ops = c.log.filter((e) => e.bytes > 0).length / 10;
  assert.ok(Math.abs(ops - 40) <= 2, `${ops} ops/s`);
  s.clock.set(50_000);
  // A burst is a quarter second: 10 operations.
  const g = s.table.grant('cli', 'vol', 16 * MiB, 16);
  assert.equal(g.ops, 10);
  assert.equal(g.bytes, 10 * MiB);
  assert.ok(g.nextMs > 0);
});

test('a very low rate still grants at least the minimum grant, and says to wait long', () => {
  const s = setup();
  s.limits.nodes.set('cli', { rate: 1000, iops: 0 });
  const g = s.table.grant('cli', 'vol', 4 * MiB, 1);
  assert.equal(g.bytes, 64 * 1024);
  assert.ok(g.nextMs > 60_000, `next ${g.nextMs}`);
  const small = s.table.grant('cli', 'vol', 100, 1);
  assert.equal(small.bytes, 0);
  s.limits.nodes.set('cli', { rate: 0, iops: 0 });
  assert.deepEqual(s.table.grant('cli', 'vol', 100, 1), { bytes: 100, ops: 1, nextMs: 0, limited: false }, 'cleared: unlimited at once');
});

test('stats: current rate over the last second, totals since start, active only within the window', () => {
  const s = setup();
  s.limits.volumes.set('vol', 100 * MiB);
  s.table.grant('a', 'vol', MiB, 1);
  s.clock.set(1500);
  s.table.grant('a', 'vol', MiB, 1);
  s.table.grant('b', 'vol', 2 * MiB, 1);
  let [a, b] = s.table.nodeStats(['c']);
  assert.deepEqual([a!.current, a!.total, a!.active], [2 * MiB, 2 * MiB, true]);
  assert.equal(b!.total, 2 * MiB);
  let [v] = s.table.volumeStats(['vol']);
  assert.deepEqual(v, { volume: 'vol', rate: 100 * MiB, current: 4 * MiB, total: 4 * MiB, activeNodes: 2 });
  s.clock.set(2200);
  [a] = s.table.nodeStats();
  assert.deepEqual([a!.current, a!.total, a!.active], [MiB, 2 * MiB, true]);
  s.clock.set(3000);
  const all = s.table.nodeStats(['c']);
  assert.deepEqual(all.map((n) => [n.node, n.current, n.active]), [['a', 0, false], ['b', 0, false], ['c', 0, false]]);
  [v] = s.table.volumeStats(['vol']);
  assert.equal(v!.activeNodes, 0);
  assert.equal(v!.total, 4 * MiB);
});

test('counters saturate at the largest wire number instead of breaking LIMITS', () => {
  const s = setup();
  const max = Number.MAX_SAFE_INTEGER;
  s.table.grant('greedy', 'vol', max, max);
  s.table.grant('greedy', 'vol', max, max);
  const [n] = s.table.nodeStats();
  assert.deepEqual([n!.total, n!.totalOps, n!.current, n!.currentOps], [max, max, max, max]);
  assert.equal(s.table.volumeStats(['vol'])[0]!.total, max);
});
