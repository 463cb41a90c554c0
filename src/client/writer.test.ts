// Unit tests for the direct writer with fakes (no devices): a fake session granting a write map and allocating
// one DATA extent, a fake device over memory, the file "through the mount" a temporary local file.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import type { FileMap, Session } from './session.js';
import type { FusedFile, FuseRecord } from './registry.js';
import type { ProvenDevice } from './client.js';
import { DirectWriter, WriteRestart } from './writer.js';
import { FakeDevice } from './fake-device.js';
import type { Device } from './device.js';

const MiB = 1024 * 1024;
const P = 8 * MiB; // where the server puts the file's one extent on the device

/** A session that grants a write map of an empty file and allocates [0, end) as one DATA extent at P. */
class FakeSession extends EventEmitter {
  leaseMs = 10_000;
  idleMs = 300_000;
  isClosed = false;
  valid = true;
  commits: number[] = [];
  allocs: [number, number][] = [];
  released: string[] = [];
  isRecalled(): boolean {
    return false;
  }
  leaseValid(): boolean {
    return this.valid;
  }
  deadline(): number {
    return this.valid ? performance.now() + this.leaseMs : performance.now() - 1;
  }
  async ping(): Promise<void> {}
  keepAlive(): () => void {
    return () => {};
  }
  /** The device whose blocks ALLOC hands out: they read as zeros afterwards, as the server makes them. */
  image: Buffer | undefined;
  async alloc(lease: string, offset: number, length: number): Promise<FileMap> {
    this.allocs.push([offset, length]);
    this.image?.fill(0, P + offset, P + offset + length);
    const end = offset + length;
    return { lease, size: end, blockSize: 4096, change: 'c', extents: [{ logical: 0, physical: P, length: end, state: 'DATA', flags: 0 }] };
  }
  async commit(_lease: string, size: number): Promise<{ size: number }> {
    this.commits.push(size);
    return { size };
  }
  async release(lease: string): Promise<void> {
    this.released.push(lease);
  }
}

function setup(t: { after: (fn: () => void) => void }, proof: Promise<ProvenDevice> = Promise.resolve({ path: '/dev/fake' })) {
  const dir = mkdtempSync(join(tmpdir(), 'fused-writer-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, '.dst.fused-0000');
  writeFileSync(path, '');
  const session = new FakeSession();
  const device = new FakeDevice(Buffer.alloc(512 * MiB, 0xa5));
  session.image = device.image;
  const fuse = { mountpoint: dir, uuid: 'u', volume: 'vol', device: '/dev/fake', access: 'rw' } as FuseRecord;
  const map: FileMap = { lease: 'W1', size: 0, blockSize: 4096, change: 'c', extents: [] };
  const client = {
    resolve: async (file: Buffer) => ({ fuse, rel: Buffer.from('.dst'), abs: file }) as FusedFile,
    map: async () => ({ map, session: session as unknown as Session, device: proof }),
  };
  const writer = new DirectWriter(client, { smallFile: 0, openDevice: async () => device });
  return { path, session, device, writer };
}

test('data lands at the extent\'s place on the device, whole aligned zero blocks are not written, COMMIT has the size', async (t) => {
  const { path, session, device, writer } = setup(t);
  const a = randomBytes(5 * MiB + 3);
  const z = Buffer.alloc(3 * MiB);
  const b = randomBytes(MiB + 1);
  const size = a.length + z.length + b.length;
  const target = await writer.open(Buffer.from(path), size);
  assert.deepEqual(session.allocs, [[0, Math.ceil(size / 4096) * 4096]]);
  await target.write(0, a, false);
  await target.write(a.length, z, true);
  await target.write(a.length + z.length, b, false);
  await target.finish(size);
  assert.deepEqual(session.commits, [size]);
  assert.ok(device.image.subarray(P, P + size).equals(Buffer.concat([a, z, b])), 'the device holds the file');
  const firstWholeZero = Math.ceil(a.length / 4096) * 4096;
  const lastWholeZero = Math.floor((a.length + z.length) / 4096) * 4096;
  assert.ok(device.writes.every((w) => w.position + w.length <= P + firstWholeZero || w.position >= P + lastWholeZero), 'zero blocks were written');
  assert.ok(device.writes.every((w) => w.position >= P && w.position + w.length <= P + Math.ceil(size / 4096) * 4096), 'a write outside the extent');
  // The padding of the last block is zeros, not the device's old bytes.
  assert.ok(device.image.subarray(P + size, P + Math.ceil(size / 4096) * 4096).every((x) => x === 0));
  assert.equal(target.report.path, 'direct');
  assert.equal(target.report.bytesDirect, size);
});

test('a local source\'s whole aligned chunks are spliced onto the device; an unaligned tail is refused and written from the buffer', async (t) => {
  const { path, session, device, writer } = setup(t);
  const src = randomBytes(9 * MiB + 5);
  const srcPath = `${path}.src`;
  writeFileSync(srcPath, src);
  const fd = openSync(srcPath, 'r');
  t.after(() => closeSync(fd));
  const target = await writer.open(Buffer.from(path), src.length);
  assert.equal(await target.splice!(fd, 0, 4 * MiB), true);
  assert.equal(await target.splice!(fd, 4 * MiB, 4 * MiB), true);
  assert.equal(await target.splice!(fd, 8 * MiB, MiB + 5), false, 'not whole blocks');
  await target.write(8 * MiB, src.subarray(8 * MiB), false);
  await target.finish(src.length);
  assert.deepEqual(session.commits, [src.length]);
  assert.ok(device.image.subarray(P, P + src.length).equals(src), 'the device holds the file');
  assert.deepEqual(device.writes.filter((w) => w.spliced).map((w) => [w.position, w.length]), [[P, 4 * MiB], [P + 4 * MiB, 4 * MiB]]);
  assert.ok(device.notAfter.every((d) => d !== undefined), 'every write under the lease deadline');
  assert.equal(target.report.bytesDirect, src.length);
  // Nothing staged may be skipped over: with bytes waiting in the stage, a splice is refused.
  const again = await writer.open(Buffer.from(path), 8 * MiB);
  await again.write(0, src.subarray(0, 100), false);
  assert.equal(await again.splice!(fd, 4096, 4 * MiB), false);
  await again.abort();
});

test('a source that shrank under a splice, or a splice past the lease deadline: the file starts again through the mount (WriteRestart)', async (t) => {
  const { path, session, device, writer } = setup(t);
  const srcPath = `${path}.src`;
  writeFileSync(srcPath, randomBytes(6 * MiB));
  const fd = openSync(srcPath, 'r');
  t.after(() => closeSync(fd));
  const target = await writer.open(Buffer.from(path), 8 * MiB);
  assert.equal(await target.splice!(fd, 0, 4 * MiB), true);
  assert.equal(await target.splice!(fd, 4 * MiB, 4 * MiB), true); // issued; it finds 2 MiB
  await assert.rejects(target.finish(8 * MiB), (err: unknown) => err instanceof WriteRestart && /^the source file shrank while it was copied \(it ended at byte 6291456\)$/.test((err as Error).message));
  assert.deepEqual(session.commits, [], 'nothing committed');
  await target.abort();
  const late = await writer.open(Buffer.from(path), 8 * MiB);
  session.valid = false;
  const before = device.writes.length;
  await assert.rejects(late.splice!(fd, 0, 4 * MiB), WriteRestart);
  assert.equal(device.writes.length, before, 'nothing spliced past the deadline');
  await late.abort();
});

test('a recall commits what is on the device and the rest goes through the mount', async (t) => {
  const { path, session, device, writer } = setup(t);
  const a = randomBytes(4 * MiB);
  const b = randomBytes(2 * MiB + 5);
  const target = await writer.open(Buffer.from(path), a.length + b.length);
  await target.write(0, a, false); // a full stage: on the device
  session.emit('recall', 'W1', 'write-open');
  await target.write(a.length, b, false);
  await target.finish(a.length + b.length);
  assert.deepEqual(session.commits, [a.length], 'committed what was written directly, once');
  assert.ok(device.image.subarray(P, P + a.length).equals(a));
  const through = readFileSync(path);
  assert.ok(through.subarray(a.length).equals(b), 'the rest went through the mount');
  assert.equal(through.length, a.length + b.length);
  assert.equal(target.report.interrupted, true);
  assert.equal(target.report.path, 'mixed');
});

test('a restart (the source read again) gives the write map back and writes the whole file through the mount, saying why', async (t) => {
  const { path, session, writer } = setup(t);
  const a = randomBytes(4 * MiB);
  const target = await writer.open(Buffer.from(path), a.length);
  await target.write(0, randomBytes(4 * MiB), false); // a first try, on the device
  await target.restart();
  await target.write(0, a, false);
  await target.finish(a.length);
  assert.deepEqual(session.released, ['W1'], 'the write map was given back');
  assert.deepEqual(session.commits, [], 'nothing committed');
  assert.ok(readFileSync(path).equals(a), 'the whole file through the mount');
  assert.deepEqual(
    [target.report.path, target.report.fallback, target.report.reason, target.report.bytesDirect, target.report.bytesNetwork],
    ['network', true, 'restarted through the mount', 0, a.length],
  );
});

test('past the lease deadline nothing more is written: WriteRestart', async (t) => {
  const { path, session, device, writer } = setup(t);
  const target = await writer.open(Buffer.from(path), 16 * MiB);
  await target.write(0, randomBytes(4 * MiB), false);
  const before = device.writes.length;
  session.valid = false;
  await assert.rejects(target.write(4 * MiB, randomBytes(4 * MiB), false), WriteRestart);
  assert.equal(device.writes.length, before);
  await target.abort();
  assert.deepEqual(session.released, ['W1'], 'the write map is given up (the server trims the file back)');
  assert.deepEqual(session.commits, []);
});

test('ALLOC slices double from 32 MiB up to 256 MiB, each asked for while the one before is being written', async (t) => {
  const { path, session, device, writer } = setup(t);
  const size = 480 * MiB; // 32 + 64 + 128 + 256
  const writtenWhenAsked: number[] = [];
  const alloc = session.alloc.bind(session);
  session.alloc = async (lease, offset, length) => {
    writtenWhenAsked.push(device.writes.reduce((m, w) => Math.max(m, w.position + w.length - P), 0));
    return alloc(lease, offset, length);
  };
  const target = await writer.open(Buffer.from(path), size);
  const chunk = Buffer.alloc(4 * MiB, 0x5a);
  for (let at = 0; at < size; at += chunk.length) await target.write(at, chunk, false);
  await target.finish(size);
  assert.deepEqual(session.allocs, [[0, 32 * MiB], [32 * MiB, 64 * MiB], [96 * MiB, 128 * MiB], [224 * MiB, 256 * MiB]]);
  // Each later slice was asked for before the writes reached it: the server zeroes it while the client writes.
  for (let i = 1; i < session.allocs.length; i++) {
    assert.ok(writtenWhenAsked[i]! < session.allocs[i]![0], `slice ${i} asked for only when ${writtenWhenAsked[i]} bytes were written`);
  }
  assert.deepEqual(session.commits, [size]);
  assert.equal(target.report.bytesDirect, size);
});

test('a server that can clone from its reserve (ready=) gets the rest of the file in the second ALLOC, at most what it has ready', async (t) => {
  const { path, session, writer } = setup(t);
  const size = 480 * MiB;
  const alloc = session.alloc.bind(session);
  // The reserve holds 400 MiB before the first ALLOC; each ALLOC takes what it gives from it.
  let reserve = 400 * MiB;
  session.alloc = async (lease, offset, length) => {
    const map = await alloc(lease, offset, length);
    reserve = Math.max(0, reserve - length);
    return reserve > 0 ? { ...map, ready: reserve } : map;
  };
  const target = await writer.open(Buffer.from(path), size);
  const chunk = Buffer.alloc(4 * MiB, 0x5a);
  for (let at = 0; at < size; at += chunk.length) await target.write(at, chunk, false);
  await target.finish(size);
  // 32 MiB first (nothing known of the server yet), then all 368 MiB it said it had ready, then slices again (the
  // third ALLOC's slice is 128 MiB: the doubling went on behind the larger asks), never past the size.
  assert.deepEqual(session.allocs, [[0, 32 * MiB], [32 * MiB, 368 * MiB], [400 * MiB, 80 * MiB]]);
  assert.deepEqual(session.commits, [size]);
  assert.equal(target.report.bytesDirect, size);
});

test('every device write carries the lease deadline down to the pool thread', async (t) => {
  const { path, session, device, writer } = setup(t);
  const target = await writer.open(Buffer.from(path), 9 * MiB);
  const before = performance.now();
  await target.write(0, randomBytes(9 * MiB), false);
  await target.finish(9 * MiB);
  assert.ok(device.notAfter.length > 0);
  for (const d of device.notAfter) {
    assert.ok(d !== undefined && d > before && d <= performance.now() + session.leaseMs, `deadline ${d}`);
  }
});

test('the write map comes while the device is still being proven: nothing is allocated or written before the proof has passed', async (t) => {
  let pass!: (p: ProvenDevice) => void;
  const { path, session, device, writer } = setup(t, new Promise<ProvenDevice>((r) => (pass = r)));
  const opening = writer.open(Buffer.from(path), 4 * MiB);
  await new Promise((r) => setTimeout(r, 20));
  assert.deepEqual(session.allocs, [], 'an ALLOC before the proof');
  assert.equal(device.writes.length, 0);
  pass({ path: '/dev/fake' });
  const target = await opening;
  assert.deepEqual(session.allocs, [[0, 4 * MiB]]);
  const data = randomBytes(4 * MiB);
  await target.write(0, data, false);
  await target.finish(data.length);
  assert.equal(target.report.path, 'direct');
  assert.ok(device.image.subarray(P, P + data.length).equals(data));
});

test('a proof that fails after the write map came: the map is given back unused and the file goes through the mount, saying why', async (t) => {
  const { path, session, device, writer } = setup(t, new Promise<ProvenDevice>((r) => setTimeout(() => r({ reason: '/dev/fake: not the volume (probe token not found)' }), 10)));
  const target = await writer.open(Buffer.from(path), 4 * MiB);
  assert.equal(target.report.path, 'network');
  assert.match(target.report.reason ?? '', /probe token not found/);
  assert.deepEqual(session.released, ['W1']);
  assert.deepEqual(session.allocs, []);
  assert.equal(device.writes.length, 0);
});

test('a map reaching past the volume is refused before any write: the file goes through the mount', async (t) => {
  const { path, session, writer } = setup(t);
  session.alloc = async (lease: string, offset: number, length: number) => ({
    lease, size: offset + length, blockSize: 4096, change: 'c', extents: [{ logical: 0, physical: 511 * MiB, length: offset + length, state: 'DATA', flags: 0 }],
  });
  const target = await writer.open(Buffer.from(path), 4 * MiB);
  assert.equal(target.report.path, 'network');
  assert.match(target.report.reason ?? '', /outside the volume/);
  assert.deepEqual(session.released, ['W1']);
});

test('an aligned chunk in its own shared buffer is written from that buffer, without a copy', async (t) => {
  const { path, session, device, writer } = setup(t);
  const { takeBuffer } = await import('./buffers.js');
  const target = await writer.open(Buffer.from(path), 4 * MiB + 100);
  const first = takeBuffer();
  const data = randomBytes(4 * MiB);
  data.copy(first);
  const tail = randomBytes(100);
  assert.equal(await target.write(0, first.subarray(0, 4 * MiB), false, first), true, 'kept');
  assert.equal(await target.write(4 * MiB, tail, false), false);
  await target.finish(4 * MiB + 100);
  // (The buffer went back to the pool once written, and served as the tail's stage since.)
  assert.ok(device.image.subarray(P, P + 4 * MiB).equals(data));
  assert.ok(device.image.subarray(P + 4 * MiB, P + 4 * MiB + 100).equals(tail));
  assert.deepEqual(session.commits, [4 * MiB + 100]);
});

test('without an openDevice hook the writer borrows the client\'s device opened for writing (once per command), for every file', async (t) => {
  const { path, session, device } = setup(t);
  const fuse = { mountpoint: join(path, '..'), uuid: 'u', volume: 'vol', device: '/dev/fake', access: 'rw' } as FuseRecord;
  const asked: string[] = [];
  const client = {
    resolve: async (file: Buffer) => ({ fuse, rel: Buffer.from('.dst'), abs: file }) as FusedFile,
    map: async () => ({ map: { lease: 'W1', size: 0, blockSize: 4096, change: 'c', extents: [] } as FileMap, session: session as unknown as Session, device: Promise.resolve({ path: '/dev/fake' }) }),
    writableDevice: async (f: FuseRecord, p: string) => {
      asked.push(`${f.mountpoint} ${p}`);
      return device as unknown as Device;
    },
  };
  const writer = new DirectWriter(client, { smallFile: 0 });
  const data = randomBytes(4 * MiB);
  for (let i = 0; i < 2; i++) {
    const target = await writer.open(Buffer.from(path), data.length);
    await target.write(0, data, false);
    await target.finish(data.length);
    assert.equal(target.report.path, 'direct');
  }
  assert.deepEqual(asked, [`${fuse.mountpoint} /dev/fake`, `${fuse.mountpoint} /dev/fake`]);
  assert.ok(device.image.subarray(P, P + data.length).equals(data));
});
