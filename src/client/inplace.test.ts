// Unit tests for the in-place routing: which ranges of an existing file go to the device, which through the mount.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FIEMAP_FLAGS as F, buildMap, type ExtentState, type MapExtent } from '../volume/extents.js';
import { EventEmitter } from 'node:events';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import type { FileMap, Session } from './session.js';
import type { FusedFile, FuseRecord } from './registry.js';
import { DirectWriter } from './writer.js';
import { coveredEnd, networkSpans, routeAt, spanAfter, wholeLastBlock } from './inplace.js';
import { FakeDevice } from './fake-device.js';

const KiB = 1024;

function ext(logical: number, physical: number, length: number, state: ExtentState): MapExtent {
  return { logical, physical, length, state, flags: 0 };
}

test('a reflinked range is NETWORK in the write map and routed through the mount; the rest goes to the device', () => {
  // 0-64K own, 64K-128K shared with a sibling, 128K-200K own.
  const map = buildMap([
    { logical: 0, physical: 1 << 20, length: 64 * KiB, flags: 0 },
    { logical: 64 * KiB, physical: 2 << 20, length: 64 * KiB, flags: F.SHARED },
    { logical: 128 * KiB, physical: 3 << 20, length: 72 * KiB, flags: F.LAST },
  ], 200 * KiB, 'write');
  const spans = networkSpans(map, 4096);
  assert.deepEqual(spans, [{ start: 64 * KiB, end: 128 * KiB }]);
  assert.deepEqual(routeAt(spans, 0), { network: false, end: 64 * KiB });
  assert.deepEqual(routeAt(spans, 64 * KiB), { network: true, end: 128 * KiB });
  assert.deepEqual(routeAt(spans, 100 * KiB), { network: true, end: 128 * KiB });
  assert.deepEqual(routeAt(spans, 128 * KiB), { network: false, end: Infinity });
});

test('a NETWORK extent not on aligned blocks takes the whole aligned blocks it touches, and neighbours merge', () => {
  // 1 KiB blocks (ext4-1k): NETWORK 5K-6K and 7K-9K touch the blocks 4K-8K and 4K-12K.
  const map = [ext(0, 8192, 5 * KiB, 'DATA'), ext(5 * KiB, 0, KiB, 'NETWORK'), ext(6 * KiB, 9000 * KiB, KiB, 'DATA'),
    ext(7 * KiB, 0, 2 * KiB, 'NETWORK'), ext(9 * KiB, 9100 * KiB, 15 * KiB, 'DATA')];
  assert.deepEqual(networkSpans(map, 4096), [{ start: 4 * KiB, end: 12 * KiB }]);
  // Never a device block with a NETWORK byte in it.
  for (let b = 0; b < 24 * KiB; b += 4096) {
    const r = routeAt(networkSpans(map, 4096), b);
    const touches = map.some((e) => e.state === 'NETWORK' && e.logical < b + 4096 && e.logical + e.length > b);
    assert.equal(r.network, touches, `block at ${b}`);
  }
});

test('no NETWORK extent: everything goes to the device, also past the old end (growth)', () => {
  const spans = networkSpans([ext(0, 4096, 8192, 'DATA'), ext(8192, 0, 4096, 'HOLE'), ext(12288, 0, 4096, 'ZERO')], 4096);
  assert.deepEqual(spans, []);
  assert.deepEqual(routeAt(spans, 0), { network: false, end: Infinity });
  assert.deepEqual(routeAt(spans, 1 << 30), { network: false, end: Infinity });
});

test('spanAfter finds the first span ending after an offset', () => {
  const spans = [{ start: 0, end: 10 }, { start: 20, end: 30 }, { start: 40, end: 50 }];
  assert.deepEqual(spanAfter(spans, 0), spans[0]);
  assert.deepEqual(spanAfter(spans, 10), spans[1]);
  assert.deepEqual(spanAfter(spans, 35), spans[2]);
  assert.equal(spanAfter(spans, 50), undefined);
  assert.equal(spanAfter([], 0), undefined);
});

test('the last DATA block of a file whose size is not a block multiple is made whole; anything else is left alone', () => {
  const map = [ext(0, 40960, 5000, 'DATA')];
  assert.deepEqual(wholeLastBlock(map, 5000, 4096), [ext(0, 40960, 8192, 'DATA')]);
  assert.deepEqual(wholeLastBlock(map, 5000, 1024), [ext(0, 40960, 5120, 'DATA')]);
  assert.deepEqual(wholeLastBlock([ext(0, 40960, 8192, 'DATA')], 8192, 4096), [ext(0, 40960, 8192, 'DATA')]);
  // A shared or hole tail stays as it is: the first through the mount, the second is allocated.
  assert.deepEqual(wholeLastBlock([ext(0, 40960, 5000, 'NETWORK')], 5000, 4096), [ext(0, 40960, 5000, 'NETWORK')]);
  assert.deepEqual(wholeLastBlock([ext(0, 0, 5000, 'HOLE')], 5000, 4096), [ext(0, 0, 5000, 'HOLE')]);
  assert.deepEqual(wholeLastBlock([], 0, 4096), []);
});

test('coveredEnd runs over DATA and NETWORK from 0 and stops at the first range needing blocks', () => {
  assert.equal(coveredEnd([ext(0, 4096, 8192, 'DATA'), ext(8192, 999, 4096, 'NETWORK'), ext(12288, 0, 4096, 'HOLE'),
    ext(16384, 4096 * 9, 4096, 'DATA')]), 12288);
  assert.equal(coveredEnd([ext(0, 0, 4096, 'ZERO')]), 0);
  assert.equal(coveredEnd([ext(0, 4096, 4096, 'NETWORK')]), 4096);
  assert.equal(coveredEnd([]), 0);
});

// --- InPlaceTarget through DirectWriter, with fakes: a device over memory, the file "through the mount" a local
// temporary file holding the old bytes, a session whose maps come from a list.

const MiB = 1024 * KiB;

class FakeSession extends EventEmitter {
  leaseMs = 10_000;
  idleMs = 300_000;
  isClosed = false;
  commits: [string, number][] = [];
  allocs: [number, number][] = [];
  released: string[] = [];
  /** The size of the file when each lease was mapped: COMMIT never goes below it. */
  sizeAtMap = new Map<string, number>();
  isRecalled(): boolean {
    return false;
  }
  leaseValid(): boolean {
    return true;
  }
  deadline(): number {
    return performance.now() + this.leaseMs;
  }
  keepAlive(): () => void {
    return () => {};
  }
  async alloc(): Promise<FileMap> {
    throw new Error('no ALLOC expected');
  }
  async commit(lease: string, size: number): Promise<{ size: number }> {
    this.commits.push([lease, size]);
    return { size: Math.max(size, this.sizeAtMap.get(lease) ?? 0) };
  }
  async release(lease: string): Promise<void> {
    this.released.push(lease);
  }
}

const P = 8 * MiB; // the file's own blocks
const Q = 16 * MiB; // blocks shared with a sibling (reflink)
const R = 24 * MiB; // where the shared range lives after the mount wrote it (copy on write)

/** An existing file of `size` bytes: [0,1M) and [2M,size) its own at P, [1M,2M) shared at Q; mapped again after the
 *  mount wrote the shared range, that range is its own at R. */
function setupShared(t: { after: (fn: () => void) => void }, size: number) {
  const dir = mkdtempSync(join(tmpdir(), 'fused-inplace-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, 'dst');
  const old = randomBytes(size);
  writeFileSync(path, old);
  const session = new FakeSession();
  const device = new FakeDevice(randomBytes(64 * MiB));
  const maps: FileMap[] = [
    { lease: 'W1', size, blockSize: 4096, change: 'c', extents: [ext(0, P, MiB, 'DATA'), ext(MiB, Q, MiB, 'NETWORK'), ext(2 * MiB, P + 2 * MiB, size - 2 * MiB, 'DATA')] },
    { lease: 'W2', size, blockSize: 4096, change: 'c', extents: [ext(0, P, MiB, 'DATA'), ext(MiB, R, MiB, 'DATA'), ext(2 * MiB, P + 2 * MiB, size - 2 * MiB, 'DATA')] },
  ];
  let mapped = 0;
  const fuse = { mountpoint: dir, uuid: 'u', volume: 'vol', device: '/dev/fake', access: 'rw' } as FuseRecord;
  const client = {
    resolve: async (file: Buffer) => ({ fuse, rel: Buffer.from('dst'), abs: file }) as FusedFile,
    map: async () => {
      const map = maps[Math.min(mapped++, maps.length - 1)]!;
      session.sizeAtMap.set(map.lease, map.size);
      return { map, session: session as unknown as Session, device: Promise.resolve({ path: '/dev/fake' }) };
    },
  };
  const writer = new DirectWriter(client, { smallFile: 0, openDevice: async () => device });
  return { path, old, session, device, writer, mapped: () => mapped };
}

test('in place: own blocks on the device, the shared range through the mount (never its blocks), then mapped again', async (t) => {
  const size = 3 * MiB + 100;
  const { path, session, device, writer, mapped } = setupShared(t, size);
  const sibling = Buffer.from(device.image.subarray(Q, Q + MiB));
  const data = randomBytes(size);
  const target = await writer.open(Buffer.from(path), size, undefined, true);
  for (let at = 0; at < size; at += 1536 * KiB) await target.write(at, data.subarray(at, Math.min(size, at + 1536 * KiB)), false);
  await target.finish(size);
  assert.ok(device.image.subarray(P, P + MiB).equals(data.subarray(0, MiB)), 'first own range on the device');
  assert.ok(device.image.subarray(P + 2 * MiB, P + size).equals(data.subarray(2 * MiB)), 'last own range on the device');
  assert.ok(device.image.subarray(Q, Q + MiB).equals(sibling), 'the shared blocks are untouched');
  assert.ok(device.writes.every((w) => w.position + w.length <= Q || w.position >= Q + MiB), 'no device write into the shared blocks');
  const through = readFileSync(path);
  assert.ok(through.subarray(MiB, 2 * MiB).equals(data.subarray(MiB, 2 * MiB)), 'the shared range went through the mount');
  assert.equal(through.length, size);
  assert.equal(mapped(), 2, 'mapped again after the mount');
  assert.deepEqual(session.commits, [['W1', MiB], ['W2', size]]);
  assert.deepEqual(target.report, {
    path: 'mixed', reason: 'ranges shared with another file (reflink) or not aligned: written through the mount', fallback: true,
    bytesDirect: size - MiB, bytesNetwork: MiB, interrupted: false,
  });
});

test('in place: a smaller source is cut to size after COMMIT (which never shrinks), zeros are written over old bytes', async (t) => {
  const size = 3 * MiB + 100;
  const { path, session, device, writer } = setupShared(t, size);
  const small = 512 * KiB + 5;
  const zeros = Buffer.alloc(small);
  const target = await writer.open(Buffer.from(path), small, undefined, true);
  await target.write(0, zeros, true);
  await target.finish(small);
  assert.ok(device.image.subarray(P, P + small).equals(zeros), 'zeros written over the old bytes, not skipped');
  assert.deepEqual(session.commits, [['W1', small]]);
  assert.equal(readFileSync(path).length, small, 'cut to size through the mount');
  assert.equal(target.report.path, 'direct');
});

test('in place: the old file\'s partial last block is written whole on the device, without ALLOC', async (t) => {
  const size = 3 * MiB + 100;
  const { session, device, writer, path } = setupShared(t, size);
  const data = randomBytes(size);
  const target = await writer.open(Buffer.from(path), size, undefined, true);
  await target.write(0, data.subarray(0, MiB), false);
  // (the shared range through the mount)
  await target.write(MiB, data.subarray(MiB), false);
  await target.finish(size);
  assert.deepEqual(session.allocs, []);
  assert.ok(device.image.subarray(P + 3 * MiB, P + 3 * MiB + 100).equals(data.subarray(3 * MiB)));
  assert.ok(device.image.subarray(P + 3 * MiB + 100, P + 3 * MiB + 4096).every((b) => b === 0), 'zeros past the end in the last block');
});

test('in place: a recall commits and sends the rest through the mount, zeros written over the old bytes, no new map', async (t) => {
  const size = 3 * MiB + 100;
  const { path, session, writer, mapped } = setupShared(t, size);
  const data = randomBytes(size);
  data.fill(0, 2 * MiB + 4096, 2 * MiB + 64 * KiB);
  const target = await writer.open(Buffer.from(path), size, undefined, true);
  await target.write(0, data.subarray(0, MiB), false);
  session.emit('recall', 'W1', 'read-open');
  await target.write(MiB, data.subarray(MiB, 2 * MiB + 4096), false);
  await target.write(2 * MiB + 4096, data.subarray(2 * MiB + 4096, 2 * MiB + 64 * KiB), true);
  await target.write(2 * MiB + 64 * KiB, data.subarray(2 * MiB + 64 * KiB), false);
  await target.finish(size);
  assert.deepEqual(session.commits, [['W1', 0]], 'what was on the device (nothing yet: the stage was not full) committed once');
  assert.equal(mapped(), 1, 'not mapped again after a recall');
  assert.ok(readFileSync(path).equals(data), 'the rest through the mount, zeros included');
  assert.equal(target.report.interrupted, true);
  assert.equal(target.report.path, 'network');
  assert.equal(target.report.bytesNetwork, size);
});
