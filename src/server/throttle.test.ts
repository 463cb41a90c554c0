// Unit tests for the throttle policy: the admin role, served volumes, the LIMITS lines, and limits applied at once.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseDataFields, parseReplyLine } from '../protocol/index.js';
import { LimitStore } from './limits.js';
import { Reply } from './reply.js';
import { ThrottlePolicy } from './throttle.js';

const MiB = 1024 * 1024;
const served = (v: string) => v === 'vol';

function policy() {
  let t = 0;
  const log: string[] = [];
  const p = new ThrottlePolicy(LimitStore.inMemory(), (l) => log.push(l), { now: () => t });
  return { p, log, tick: (ms: number) => (t += ms) };
}

test('only an admin node may change limits; others get ACCESS and nothing changes', async () => {
  const { p, log } = policy();
  for (const access of ['ro', 'rw'] as const) {
    await assert.rejects(
      p.change({ node: 'cli', access }, { op: 'SET', target: { node: 'cli' }, rate: 1 }, served),
      (e: unknown) => e instanceof Reply && e.code === 'ACCESS' && e.message === `node cli may not change limits (its role is ${access}; admin needed)`,
    );
    await assert.rejects(p.change({ node: 'cli', access }, { op: 'CLEAR', target: { all: true } }, served), { code: 'ACCESS' });
  }
  assert.equal(p.limits.limitedNodes().length, 0);
  await p.change({ node: 'adm', access: 'admin' }, { op: 'SET', target: { node: 'cli' }, rate: 10 * MiB }, served);
  assert.equal(p.limits.node('cli').rate, 10 * MiB);
  assert.deepEqual(log, ['node adm: limits: node cli: rate 10485760 B/s']);
});

test('a cap on a volume not served is NOVOLUME; clearing one is allowed', async () => {
  const { p } = policy();
  const adm = { node: 'adm', access: 'admin' as const };
  await assert.rejects(p.change(adm, { op: 'SET', target: { volume: 'other' }, rate: 5 }, served), { code: 'NOVOLUME' });
  await p.change(adm, { op: 'CLEAR', target: { volume: 'other' } }, served);
  await p.change(adm, { op: 'SET', target: { volume: 'vol' }, rate: 5 }, served);
  assert.equal(p.limits.volumeCap('vol'), 5);
});

test('a limit set applies to the next grant', async () => {
  const { p, tick } = policy();
  assert.deepEqual(p.grant('cli', 'vol', 64 * MiB, 1), { bytes: 64 * MiB, ops: 1, nextMs: 0, limited: false });
  await p.change({ node: 'adm', access: 'admin' }, { op: 'SET', target: { node: 'cli' }, rate: 4 * MiB }, served);
  tick(1);
  assert.deepEqual(p.grant('cli', 'vol', 64 * MiB, 1), { bytes: MiB, ops: 1, nextMs: 250, limited: true });
});

test('LIMITS: counted head, N lines for nodes known, V lines for volumes, END', async () => {
  const { p } = policy();
  await p.change({ node: 'adm', access: 'admin' }, { op: 'SET', target: { node: 'slow' }, rate: 1000, iops: 5 }, served);
  await p.change({ node: 'adm', access: 'admin' }, { op: 'SET', target: { volume: 'vol' }, rate: 100 * MiB }, served);
  p.grant('cli', 'vol', 4096, 1);
  const lines = p.list(['adm', 'cli'], ['vol', 'scratch']);
  assert.deepEqual(lines, [
    'OK LIMITS count=5 nodes=3 volumes=2',
    'N node=adm rate=0 iops=0 current=0 total=0 current_ops=0 ops=0 grants=0 active=0 copies=0 volume=',
    'N node=cli rate=0 iops=0 current=4096 total=4096 current_ops=1 ops=1 grants=1 active=1 copies=0 volume=vol',
    'N node=slow rate=1000 iops=5 current=0 total=0 current_ops=0 ops=0 grants=0 active=0 copies=0 volume=',
    'V volume=scratch rate=0 current=0 total=0 active=0',
    'V volume=vol rate=104857600 current=4096 total=4096 active=1',
    'END',
  ]);
  const head = parseReplyLine(lines[0]!);
  assert.equal(head.kind, 'ok');
  assert.equal(parseDataFields(lines[2]!.slice(2)).volume, 'vol');
});

test('copies: the connections of a node that drew grants within the last second', () => {
  const { p, tick } = policy();
  const a = {}, b = {}, c = {};
  p.grant('cli', 'vol', 4096, 1, a);
  p.grant('cli', 'vol', 4096, 1, b);
  p.grant('cli', 'vol', 4096, 1, a);
  p.grant('other', 'vol', 4096, 1, c);
  assert.equal(p.copies('cli'), 2);
  assert.equal(p.copies('other'), 1);
  tick(600);
  p.grant('cli', 'vol', 4096, 1, b);
  tick(600);
  assert.equal(p.copies('cli'), 1, 'a went idle more than a second ago');
  assert.equal(p.copies('other'), 0);
  assert.match(p.list(['cli'], ['vol'])[1]!, / copies=1 /);
  tick(1001);
  assert.equal(p.copies('cli'), 0);
});
