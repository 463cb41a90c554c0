// Unit tests for the direct reader with fakes (no devices): a fake map server on the loopback, a fake device
// backed by memory, the file "through the mount" a temporary local file. Checks what the reader delivers when device
// reads come late, when the map is recalled, and that ZERO ranges never touch the device.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { fakeServer, openFake, type Fake } from './fake-server.js';
import { FileReader, type Chunk, type DeviceReader, type MapSource } from './reader.js';
import type { FusedFile, FuseRecord } from './registry.js';
import type { Session } from './session.js';
import { Device } from './device.js';
import type { Throttle } from './pacer.js';

const MiB = 1024 * 1024;
const P0 = 4 * MiB;
const P1 = 40 * MiB;

/** A file of 8 MiB data, 4 MiB of zeros (a ZERO extent whose blocks hold garbage), then `tail` MiB of data. */
function makeFile(dir: string, tail = 8): { path: string; bytes: Buffer; image: Buffer } {
  const bytes = randomBytes((12 + tail) * MiB);
  bytes.fill(0, 8 * MiB, 12 * MiB);
  const path = join(dir, 'clip.bin');
  writeFileSync(path, bytes);
  const image = Buffer.alloc(64 * MiB, 0xa5);
  bytes.copy(image, P0, 0, 8 * MiB);
  bytes.copy(image, P1, 12 * MiB);
  return { path, bytes, image };
}

function mapOf(path: string) {
  const st = statSync(path, { bigint: true });
  const mtime = `${st.mtimeNs / 1_000_000_000n}.${String(st.mtimeNs % 1_000_000_000n).padStart(9, '0')}`;
  return () => ({
    head: `size=${st.size} blocksize=4096 ino=${st.ino} change=${st.ino}-1 mtime=${mtime}`,
    extents: [`0 ${P0} ${8 * MiB} DATA 0x0`, `${8 * MiB} ${20 * MiB} ${4 * MiB} ZERO 0x800`, `${12 * MiB} ${P1} ${Number(st.size) - 12 * MiB} DATA 0x1`],
  });
}

/** A device over `image`: records each read's start time and position; `slow(i)` delays read i, after which it
 *  returns another file's bytes (the blocks were reused meanwhile). */
class FakeDevice implements DeviceReader {
  readonly path = '/dev/fake';
  readonly info = { isBlockDevice: true, size: 64 * MiB, logicalSectorSize: 512, physicalSectorSize: 4096, rdevMajor: 7, rdevMinor: 9 };
  fsSize = 64 * MiB;
  readonly reads: { at: number; position: number }[] = [];
  /** With `serial`, reads are served one at a time (a slow disk with one head), each after its delay. */
  private queue: Promise<unknown> = Promise.resolve();
  constructor(private readonly image: Buffer, private readonly slow: (i: number) => number = () => 0, private readonly serial = false) {}
  async readInto(scratch: Buffer, position: number, length: number): Promise<Buffer> {
    const i = this.reads.length;
    this.reads.push({ at: performance.now(), position });
    if (this.serial) {
      const turn = this.queue.then(() => sleep(this.slow(i)));
      this.queue = turn;
      await turn;
      this.image.copy(scratch, 0, position, position + length);
      return scratch.subarray(0, length);
    }
    const delay = this.slow(i);
    if (delay) {
      await sleep(delay);
      return scratch.fill(0x42, 0, length).subarray(0, length);
    }
    this.image.copy(scratch, 0, position, position + length);
    return scratch.subarray(0, length);
  }
  async close(): Promise<void> {}
  outside(extents: readonly { physical: number; length: number; state: string }[]): string | undefined {
    return Device.prototype.outside.call(this as unknown as Device, extents);
  }
}

/** The fuse client, faked: every file is under one fuse; maps come from the fake server through a real Session. */
function source(session: Session, dir: string): MapSource {
  const fuse = { mountpoint: dir, uuid: 'u', volume: 'vol', device: '/dev/fake' } as FuseRecord;
  return {
    resolve: async (file: Buffer) => ({ fuse, rel: Buffer.from('clip.bin'), abs: file }) as FusedFile,
    map: async () => ({ map: await session.map('vol', Buffer.from('clip.bin')), session, device: Promise.resolve({ path: '/dev/fake' }) }),
  };
}

/** A sink collecting bytes by offset; with `restartable`, it can throw everything away (like fusedcp's). */
function collector(restartable: boolean) {
  let parts = new Map<number, Buffer>();
  const sink = {
    write: async (c: Chunk) => void parts.set(c.offset, Buffer.from(c.data)),
    ...(restartable ? { restart: async () => void (parts = new Map()) } : {}),
  };
  const result = () => Buffer.concat([...parts.entries()].sort((a, b) => a[0] - b[0]).map((e) => e[1]));
  return { sink, result };
}

async function setup(t: { after: (fn: () => void | Promise<void>) => void }, tail?: number) {
  const dir = mkdtempSync(join(tmpdir(), 'fused-reader-'));
  const file = makeFile(dir, tail);
  const fake: Fake = await fakeServer({ lease: 2, map: mapOf(file.path) });
  const session = await openFake(fake);
  t.after(async () => {
    session.close();
    await fake.close();
    rmSync(dir, { recursive: true, force: true });
  });
  return { dir, file, fake, session };
}

test('DATA comes from the device, ZERO never touches it, the result is the file', async (t) => {
  const { dir, file, session } = await setup(t);
  const device = new FakeDevice(file.image);
  const reader = new FileReader(source(session, dir), { openDevice: async () => device });
  const { sink, result } = collector(true);
  const r = await reader.read(Buffer.from(file.path), sink);
  assert.equal(r.path, 'direct');
  assert.equal(r.bytesDirect, 16 * MiB);
  assert.equal(r.bytesZero, 4 * MiB);
  assert.ok(result().equals(file.bytes));
  assert.ok(device.reads.every((x) => x.position < 20 * MiB || x.position >= P1), 'a ZERO range was read from the device');
});

test('a device read that completes past the lease deadline is thrown away; fusedcp-like sinks restart', async (t) => {
  const { dir, file, fake, session } = await setup(t);
  fake.pingDelay = 3_000; // the server stops answering: nothing renews the lease any more
  const device = new FakeDevice(file.image, (i) => (i === 1 ? 1500 : 0));
  const reader = new FileReader(source(session, dir), { openDevice: async () => device });
  const { sink, result } = collector(true);
  const r = await reader.read(Buffer.from(file.path), sink);
  assert.equal(r.interrupted, true);
  assert.match(r.reason ?? '', /lease expired/);
  assert.ok(result().equals(file.bytes), 'late (foreign) bytes were delivered');
  assert.ok(!result().includes(Buffer.alloc(4096, 0x42)));
});

test('without a restartable sink the rest comes through the mount, still no late byte', async (t) => {
  const { dir, file, fake, session } = await setup(t);
  fake.pingDelay = 3_000;
  const device = new FakeDevice(file.image, (i) => (i === 1 ? 1500 : 0));
  const reader = new FileReader(source(session, dir), { openDevice: async () => device });
  const { sink, result } = collector(false);
  const r = await reader.read(Buffer.from(file.path), sink);
  assert.equal(r.interrupted, true);
  assert.equal(r.changed, false);
  assert.ok(result().equals(file.bytes));
});

test('no device read starts after the deadline', async (t) => {
  const { dir, file, fake, session } = await setup(t, 24);
  fake.pingDelay = 3_000;
  let deadline = Infinity;
  // 8 reads served one at a time, 300 ms each, 4 in flight: the deadline (about 1 s after the map) passes part-way.
  const device = new FakeDevice(file.image, () => 300, true);
  const reader = new FileReader(
    { ...source(session, dir), map: async (f) => { const got = await source(session, dir).map(f); deadline = session.deadline(got.map.lease); return got; } },
    { openDevice: async () => device, depth: 4 },
  );
  const { sink, result } = collector(true);
  const r = await reader.read(Buffer.from(file.path), sink);
  assert.equal(r.interrupted, true);
  assert.ok(device.reads.length > 4 && device.reads.length < 8, `${device.reads.length} reads started`);
  assert.ok(device.reads.every((x) => x.at < deadline), 'a read started past the deadline');
  assert.ok(result().equals(file.bytes));
});

test('a recall mid-read: RETURN once the reads in flight are done, the copy restarts through the mount', async (t) => {
  const { dir, file, fake, session } = await setup(t);
  const device = new FakeDevice(file.image, (i) => (i === 0 ? 200 : 0));
  // One read in flight (two read ahead): reads are still to be issued when the recall comes.
  const reader = new FileReader(source(session, dir), { openDevice: async () => device, depth: 1 });
  const { sink, result } = collector(true);
  const reading = reader.read(Buffer.from(file.path), sink);
  await sleep(100);
  const lease = fake.got.find((l) => l.startsWith('MAP')) ? `L${fake.got.findIndex((l) => l.startsWith('MAP')) + 1}` : '';
  fake.push(`! RECALL lease=${lease} reason=write-open`);
  const r = await reading;
  assert.equal(r.interrupted, true);
  assert.match(r.reason ?? '', /recalled/);
  assert.ok(fake.got.includes(`RETURN ${lease}`), fake.got.join('\n'));
  assert.ok(result().equals(file.bytes));
});

/** Reads issued before the first one (made 500 ms slow, the others instant) completed, at this depth. */
async function readsBehindSlowHead(t: Parameters<typeof setup>[0], depth: number): Promise<number> {
  const { dir, file, session } = await setup(t, 24);
  let headDone = Infinity;
  const device = new FakeDevice(file.image, (i) => (i === 0 ? 500 : 0));
  const slowHead = device.readInto.bind(device);
  device.readInto = async (scratch, position, length) => {
    const data = await slowHead(scratch, position, length);
    if (position === P0) headDone = performance.now();
    return data;
  };
  const reader = new FileReader(source(session, dir), { openDevice: async () => device, depth });
  const { sink } = collector(true);
  await reader.read(Buffer.from(file.path), sink);
  return device.reads.filter((x) => x.at < headDone).length;
}

test('a slow read does not hold up the reads behind it: the device stays busy while the head is awaited', async (t) => {
  // Reads past the first `depth` are issued while the head is awaited. The window of 4 chunks: the slow head, the
  // second data chunk, the zeros, the first chunk of the tail.
  const beforeHead = await readsBehindSlowHead(t, 2);
  assert.equal(beforeHead, 3, `${beforeHead} reads started before the first one completed (depth 2, window 4)`);
});

test('the window behind a slow head is half the depth again, not twice it: fewer fresh buffers at the start', async (t) => {
  // Depth 4, window 6 chunks: the slow head, the second data chunk, the zeros, three chunks of the tail; five of
  // them device reads (a window of 8 would have issued seven).
  const beforeHead = await readsBehindSlowHead(t, 4);
  assert.equal(beforeHead, 5, `${beforeHead} reads started before the first one completed (depth 4, window 6)`);
});

test('a map whose DATA reaches past the file system is refused: nothing is read from the device', async (t) => {
  const { dir, file, session } = await setup(t);
  const device = new FakeDevice(file.image);
  device.fsSize = 44 * MiB; // the second DATA extent (40 MiB + 8 MiB) reaches past it
  const reader = new FileReader(source(session, dir), { openDevice: async () => device });
  const { sink, result } = collector(true);
  const r = await reader.read(Buffer.from(file.path), sink);
  assert.equal(r.path, 'network');
  assert.match(r.reason ?? '', /outside the volume/);
  assert.equal(device.reads.length, 0);
  assert.ok(result().equals(file.bytes));
});

/** Opens the file read-only like the reader does, with datasync replaced by `flush` (events recorded in order). */
function watchedOpen(events: string[], flush: () => Promise<void>) {
  return async (f: Buffer) => {
    const fh = await open(f, 'r');
    fh.datasync = async () => {
      events.push('flush');
      await flush();
    };
    return fh;
  };
}

test('this node\'s writes are flushed through the mount before the map is asked for', async (t) => {
  const { dir, file, session } = await setup(t);
  const events: string[] = [];
  const src = source(session, dir);
  const map = src.map;
  src.map = async (f) => (events.push('map'), map(f));
  const device = new FakeDevice(file.image);
  const reader = new FileReader(src, { openDevice: async () => device, openMount: watchedOpen(events, async () => {}) });
  const { sink, result } = collector(true);
  const r = await reader.read(Buffer.from(file.path), sink);
  assert.equal(r.path, 'direct');
  assert.deepEqual(events, ['flush', 'map']);
  assert.ok(result().equals(file.bytes));
});

test('a flush that fails sends the file through the mount, saying why; a mount without fsync is no reason', async (t) => {
  const { dir, file, session } = await setup(t);
  const failing = (code: string) => async () => {
    throw Object.assign(new Error(`${code}: flush failed`), { code });
  };
  const device = new FakeDevice(file.image);
  const reader = new FileReader(source(session, dir), { openDevice: async () => device, openMount: watchedOpen([], failing('EIO')) });
  const eio = collector(true);
  const r = await reader.read(Buffer.from(file.path), eio.sink);
  assert.equal(r.path, 'network');
  assert.match(r.reason ?? '', /flushing this node's writes .* failed/);
  assert.equal(device.reads.length, 0);
  assert.ok(eio.result().equals(file.bytes));
  const nosys = new FileReader(source(session, dir), { openDevice: async () => device, openMount: watchedOpen([], failing('ENOSYS')) });
  const ok = collector(true);
  assert.equal((await nosys.read(Buffer.from(file.path), ok.sink)).path, 'direct');
  assert.ok(ok.result().equals(file.bytes));
});

test('a map of another file (another inode, or other nanoseconds, where the mount shows them) is refused: nothing is read', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'fused-reader-'));
  const file = makeFile(dir);
  const st = statSync(file.path, { bigint: true });
  const mtime = `${st.mtimeNs / 1_000_000_000n}.${String(st.mtimeNs % 1_000_000_000n).padStart(9, '0')}`;
  const other = { ino: `${st.ino + 1n}`, mtime };
  const ns = (st.mtimeNs % 1_000_000_000n + 1n) % 1_000_000_000n;
  const cases: { name: string; head: { ino: string; mtime: string }; fidelity: Partial<FuseRecord>; reason: RegExp }[] = [
    { name: 'inode', head: other, fidelity: { mountInodes: true }, reason: /inode/ },
    { name: 'nanoseconds', head: { ino: `${st.ino}`, mtime: `${st.mtimeNs / 1_000_000_000n}.${String(ns).padStart(9, '0')}` }, fidelity: { mountMtimeNs: true }, reason: /modification time|mtime/ },
  ];
  let current = cases[0];
  const fake: Fake = await fakeServer({
    lease: 2,
    map: () => ({
      head: `size=${st.size} blocksize=4096 ino=${current.head.ino} change=${st.ino}-1 mtime=${current.head.mtime}`,
      extents: [`0 ${P0} ${8 * MiB} DATA 0x0`, `${8 * MiB} ${20 * MiB} ${4 * MiB} ZERO 0x800`, `${12 * MiB} ${P1} ${Number(st.size) - 12 * MiB} DATA 0x1`],
    }),
  });
  const session = await openFake(fake);
  t.after(async () => {
    session.close();
    await fake.close();
    rmSync(dir, { recursive: true, force: true });
  });
  for (const c of cases) {
    current = c;
    const fuse = { mountpoint: dir, uuid: 'u', volume: 'vol', device: '/dev/fake', ...c.fidelity } as FuseRecord;
    const src: MapSource = {
      resolve: async (f: Buffer) => ({ fuse, rel: Buffer.from('clip.bin'), abs: f }) as FusedFile,
      map: async () => ({ map: await session.map('vol', Buffer.from('clip.bin')), session, device: Promise.resolve({ path: '/dev/fake' }) }),
    };
    const device = new FakeDevice(file.image);
    const { sink, result } = collector(true);
    const r = await new FileReader(src, { openDevice: async () => device }).read(Buffer.from(file.path), sink);
    assert.equal(r.path, 'network', c.name);
    assert.match(r.reason ?? '', c.reason, c.name);
    assert.equal(device.reads.length, 0, c.name);
    assert.ok(result().equals(file.bytes), c.name);
    // The same map on a mount that does not show that fact is not refused for it.
    const blind = { ...fuse, mountInodes: false, mountMtimeNs: false } as FuseRecord;
    const r2 = await new FileReader({ ...src, resolve: async (f: Buffer) => ({ fuse: blind, rel: Buffer.from('clip.bin'), abs: f }) as FusedFile }, { openDevice: async () => new FakeDevice(file.image) }).read(Buffer.from(file.path), collector(true).sink);
    assert.equal(r2.path, 'direct', `${c.name} on a mount that does not show it`);
  }
});

test('a file that is not fused goes to a sink that splices: whole chunks spliced until one is refused, the rest read; --limit paid once', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'fused-reader-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const bytes = randomBytes(13 * MiB + 7);
  writeFileSync(join(dir, 'local.bin'), bytes);
  const spliced: [number, number][] = [];
  const { sink: plain, result } = collector(true);
  // Takes the first two chunks straight from the file (as a direct write does), refuses the third.
  const sink = {
    ...plain,
    splice: async (fd: number, offset: number, length: number) => {
      if (spliced.length === 2) return false;
      spliced.push([offset, length]);
      const b = Buffer.alloc(length);
      assert.equal(readSync(fd, b, 0, length, offset), length);
      await plain.write({ offset, data: b, kind: 'network' });
      return true;
    },
  };
  const paid: number[] = [];
  const throttle = { limit: async (n: number) => void paid.push(n) } as unknown as Throttle;
  const r = await new FileReader(null, { throttle }).read(Buffer.from(join(dir, 'local.bin')), sink);
  assert.deepEqual(spliced, [[0, 4 * MiB], [4 * MiB, 4 * MiB]]);
  assert.ok(result().equals(bytes), 'the whole file, spliced and read');
  assert.equal(r.bytesNetwork, bytes.length);
  assert.equal(paid.reduce((a, b) => a + b, 0), bytes.length, 'every byte paid for once under --limit');
});

/** A far device: every read takes `ms` however many are in flight (its rate grows with them, like the disk-backed
 *  bed's); counts the most reads in flight at once. */
class FarDevice extends FakeDevice {
  inFlight = 0;
  most = 0;
  constructor(image: Buffer, private readonly ms: number) {
    super(image);
  }
  override async readInto(scratch: Buffer, position: number, length: number): Promise<Buffer> {
    this.most = Math.max(this.most, ++this.inFlight);
    try {
      await sleep(this.ms);
      return await super.readInto(scratch, position, length);
    } finally {
      this.inFlight--;
    }
  }
}

/** CPU times that grow by 100 ticks a call, `busy` of them busy. */
function cpuAt(busy: number) {
  let n = 0;
  return () => (n++, { busy: n * 100 * busy, total: n * 100 });
}

/** The trial scaled down to the test file's 8 chunks of data: base 2, deep 4, one chunk to settle, two per interval. */
const smallTrial = { base: 2, deep: 4, settleBytes: 4 * MiB, intervalBytes: 8 * MiB, intervalMs: 0, atLeast: 0 };

/** The test file (8 chunks of data) read from a far device whose reads take `ms`, with these reader options and, if
 *  given, a sink that takes `sinkMs` for each chunk; the result must be the file. */
async function farRead(t: Parameters<typeof setup>[0], ms: number, opts: Partial<ConstructorParameters<typeof FileReader>[1]>, sinkMs = 0) {
  const { dir, file, session } = await setup(t, 24);
  const device = new FarDevice(file.image, ms);
  const reader = new FileReader(source(session, dir), { openDevice: async () => device, ...opts });
  const { sink, result } = collector(true);
  const slow = sinkMs ? { ...sink, write: async (c: Chunk) => (await sleep(sinkMs), sink.write(c)) } : sink;
  const r = await reader.read(Buffer.from(file.path), slow);
  assert.equal(r.path, 'direct');
  assert.ok(result().equals(file.bytes));
  return { r, most: device.most };
}

test('a large read on a far device with idle CPUs goes deeper, says so, and delivers the file', async (t) => {
  const { r, most } = await farRead(t, 30, { tune: { ...smallTrial, cpu: cpuAt(0.1) } });
  assert.equal(most, 4, `${most} reads in flight at most`);
  assert.equal(r.depth?.depth, 4);
  assert.match(r.depth!.why, /^depth 4 read \d\.\d\dx depth 2$/);
  assert.equal(r.depth!.busy, 0.1);
});

test('a large read whose CPUs are busy stays at the base depth', async (t) => {
  const { r, most } = await farRead(t, 30, { tune: { ...smallTrial, cpu: cpuAt(0.9) } });
  assert.equal(most, 2);
  assert.equal(r.depth?.depth, 2);
  assert.match(r.depth!.why, /CPUs were 90 % busy/);
});

test('a fixed depth, or a read smaller than the trial needs, is not tuned', async (t) => {
  const fixed = await farRead(t, 10, { depth: 2, tune: { ...smallTrial, cpu: cpuAt(0) } });
  assert.equal(fixed.r.depth, undefined);
  assert.equal(fixed.most, 2);
  const small = await farRead(t, 10, { tune: { ...smallTrial, atLeast: 33 * MiB, cpu: cpuAt(0) } });
  assert.equal(small.r.depth, undefined);
  assert.ok(small.most <= 8, `${small.most} in flight`);
});

test('a large read whose consumer is the slower side stays at the base depth: more reads would only compete with it', async (t) => {
  // The base interval lasts 50 ms: its first reads complete at once, before the consumer has asked for them.
  const { r, most } = await farRead(t, 5, { tune: { ...smallTrial, intervalMs: 50, cpu: cpuAt(0) } }, 40);
  assert.equal(most, 2);
  assert.equal(r.depth?.depth, 2);
  assert.match(r.depth!.why, /the destination was the slower side: it waited for the device \d+ % of the time/);
});
