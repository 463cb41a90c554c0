// Unit tests for the client session against a fake map server on the loopback: the lease deadline (renewal by
// replies, frozen at a recall, kept after a lost connection) and the server's proof.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { LIMITS } from '../protocol/index.js';
import { fakeServer, openFake } from './fake-server.js';

const open = openFake;

test('a reply renews every lease to the request\'s send time + T - margin', async () => {
  const fake = await fakeServer({ lease: 2 });
  const s = await open(fake);
  try {
    assert.equal(s.leaseMs, 2000);
    const map = await s.map('vol', Buffer.from('f'));
    const sent = performance.now();
    await s.ping();
    const d = s.deadline(map.lease);
    assert.ok(d >= sent + 2000 - LIMITS.leaseMarginMs - 50 && d <= performance.now() + 2000 - LIMITS.leaseMarginMs, `deadline ${d - sent} ms after the PING`);
    assert.equal(s.leaseValid(map.lease), true);
    assert.equal(s.leaseValid(map.lease, d + 1), false);
  } finally {
    s.close();
    await fake.close();
  }
});

test('the deadline counts from when the request was sent, not from when its reply came', async () => {
  const fake = await fakeServer({ lease: 2 });
  const s = await open(fake);
  try {
    const map = await s.map('vol', Buffer.from('f'));
    fake.pingDelay = 400;
    const sent = performance.now();
    await s.ping();
    assert.ok(s.deadline(map.lease) < sent + 2000 - LIMITS.leaseMarginMs + 50, 'a slow reply must not stretch the lease');
  } finally {
    s.close();
    await fake.close();
  }
});

test('a recalled lease is never renewed; other leases still are', async () => {
  const fake = await fakeServer({ lease: 2 });
  const s = await open(fake);
  try {
    const a = await s.map('vol', Buffer.from('a'));
    const b = await s.map('vol', Buffer.from('b'));
    const before = s.deadline(a.lease);
    fake.push(`! RECALL lease=${a.lease} reason=write-open`);
    await sleep(50);
    assert.equal(s.isRecalled(a.lease), true);
    await s.ping();
    assert.equal(s.deadline(a.lease), before, 'the recalled lease kept its deadline');
    assert.ok(s.deadline(b.lease) > before, 'the other lease was renewed');
  } finally {
    s.close();
    await fake.close();
  }
});

test('a lost connection renews nothing: the deadline stands and passes', async () => {
  const fake = await fakeServer({ lease: 2 });
  const s = await open(fake);
  try {
    const map = await s.map('vol', Buffer.from('f'));
    const d = s.deadline(map.lease);
    fake.dropClients();
    await sleep(50);
    assert.equal(s.isClosed, true);
    await assert.rejects(s.ping());
    assert.equal(s.deadline(map.lease), d);
    assert.equal(s.leaseValid(map.lease, d + 1), false);
  } finally {
    s.close();
    await fake.close();
  }
});

test('a server that cannot prove it knows the node key is refused before AUTH', async () => {
  const fake = await fakeServer({ wrongProof: true });
  try {
    await assert.rejects(open(fake), (err: Error & { kind?: string }) => err.kind === 'unreachable' && /does not know this node's key/.test(err.message));
    await sleep(20);
    assert.equal(fake.got.some((l) => l.startsWith('AUTH')), false, 'no proof was sent to an impostor');
  } finally {
    await fake.close();
  }
});

test('a server that announces no lease time is refused', async () => {
  const fake = await fakeServer({ lease: null });
  try {
    await assert.rejects(open(fake), /no usable lease time/);
  } finally {
    await fake.close();
  }
});

test('every file in flight may listen for recalls (fusedcp -j 16, reads and writes): no listener-leak warning on stderr', async () => {
  const fake = await fakeServer({ lease: 2 });
  const s = await open(fake);
  const warnings: string[] = [];
  const onWarning = (w: Error) => warnings.push(w.name);
  process.on('warning', onWarning);
  try {
    const listeners = Array.from({ length: 40 }, () => () => {});
    for (const l of listeners) s.on('recall', l);
    await sleep(10); // process warnings are emitted on the next tick
    assert.deepEqual(warnings, []);
    for (const l of listeners) s.off('recall', l);
  } finally {
    process.off('warning', onWarning);
    s.close();
    await fake.close();
  }
});
