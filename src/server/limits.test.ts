// Unit tests for the limit store: changes, persistence across a reload, atomic writes, corrupt files refused.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmod, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LIMITS_FILE, LimitStore, applyChange, formatLimits, parseLimits } from './limits.js';

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'fused-limits-'));
  try {
    await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

test('set, merge and clear limits; 0 means unlimited', () => {
  let d = parseLimits('{"version":1}');
  d = applyChange(d, { op: 'set', target: { node: 'cli' }, rate: 100 });
  d = applyChange(d, { op: 'set', target: { node: 'cli' }, iops: 7 });
  assert.deepEqual(d.nodes.get('cli'), { rate: 100, iops: 7 });
  d = applyChange(d, { op: 'set', target: { node: 'cli' }, rate: 0 });
  assert.deepEqual(d.nodes.get('cli'), { rate: 0, iops: 7 });
  d = applyChange(d, { op: 'set', target: { node: 'cli' }, iops: 0 });
  assert.equal(d.nodes.has('cli'), false);
  d = applyChange(d, { op: 'set', target: { volume: 'vol' }, rate: 5 });
  d = applyChange(d, { op: 'set', target: { node: 'b' }, rate: 9 });
  assert.equal(formatLimits(d), '{\n  "version": 1,\n  "nodes": {\n    "b": {\n      "rate": 9,\n      "iops": 0\n    }\n  },\n  "volumes": {\n    "vol": {\n      "rate": 5\n    }\n  }\n}\n');
  assert.deepEqual(parseLimits(formatLimits(d)), d);
  const cleared = applyChange(d, { op: 'clear', target: { volume: 'vol' } });
  assert.equal(cleared.volumes.size, 0);
  assert.equal(d.volumes.size, 1, 'changes never touch the old copy');
  const none = applyChange(d, { op: 'clear', target: { all: true } });
  assert.equal(none.nodes.size + none.volumes.size, 0);
});

test('a corrupt or foreign limits file is refused with the reason', () => {
  for (const [text, why] of [
    ['', /JSON/],
    ['[]', /version/],
    ['{"version":2}', /version 2/],
    ['{"version":1,"nodes":{"a b":{"rate":1}}}', /bad node limit/],
    ['{"version":1,"nodes":{"a":{"rate":-1}}}', /bad node limit/],
    ['{"version":1,"nodes":{"a":{"rate":1.5}}}', /bad node limit/],
    ['{"version":1,"volumes":{"v":{"rate":"10M"}}}', /bad volume cap/],
  ] as const) {
    assert.throws(() => parseLimits(text), why, text);
  }
});

test('limits survive a reload; the file is replaced atomically, no temporary file left', async () => {
  await withDir(async (base) => {
    const dir = join(base, 'state', 'fused');
    const store = await LimitStore.load(dir);
    assert.deepEqual(store.node('cli'), { rate: 0, iops: 0 });
    await store.change({ op: 'set', target: { node: 'cli' }, rate: 52428800 });
    await store.change({ op: 'set', target: { volume: 'vol' }, rate: 104857600 });
    await store.change({ op: 'set', target: { node: 'cli' }, iops: 100 });
    assert.deepEqual(await readdir(dir), [LIMITS_FILE]);
    const again = await LimitStore.load(dir);
    assert.deepEqual(again.node('cli'), { rate: 52428800, iops: 100 });
    assert.equal(again.volumeCap('vol'), 104857600);
    assert.deepEqual(again.limitedNodes(), ['cli']);
    assert.deepEqual(again.cappedVolumes(), ['vol']);
    await again.change({ op: 'clear', target: { all: true } });
    assert.equal((await LimitStore.load(dir)).limitedNodes().length, 0);
  });
});

test('concurrent changes are all kept, in order', async () => {
  await withDir(async (dir) => {
    const store = await LimitStore.load(dir);
    await Promise.all(Array.from({ length: 20 }, (_, i) => store.change({ op: 'set', target: { node: `n${i}` }, rate: i + 1 })));
    const again = await LimitStore.load(dir);
    assert.equal(again.limitedNodes().length, 20);
    assert.equal(again.node('n19').rate, 20);
  });
});

test('a change that cannot be saved changes nothing', { skip: process.getuid?.() === 0 ? 'root writes anyway' : false }, async () => {
  await withDir(async (dir) => {
    const store = await LimitStore.load(dir);
    await store.change({ op: 'set', target: { node: 'a' }, rate: 1 });
    await chmod(dir, 0o500);
    try {
      await assert.rejects(store.change({ op: 'set', target: { node: 'a' }, rate: 2 }));
      assert.equal(store.node('a').rate, 1);
    } finally {
      await chmod(dir, 0o700);
    }
    assert.match(await readFile(join(dir, LIMITS_FILE), 'utf8'), /"rate": 1,/);
  });
});

test('a corrupt file stops the load, naming the file', async () => {
  await withDir(async (dir) => {
    await writeFile(join(dir, LIMITS_FILE), '{"version":1,"nodes":');
    await assert.rejects(LimitStore.load(dir), new RegExp(`${LIMITS_FILE}: `));
  });
});

test('in memory: no file', async () => {
  const store = LimitStore.inMemory();
  await store.change({ op: 'set', target: { node: 'a' }, rate: 3 });
  assert.equal(store.node('a').rate, 3);
  assert.equal(store.file, undefined);
});
