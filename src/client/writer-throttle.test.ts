// Unit tests for the writer's throttle hooks with fakes (no devices): a fake session that grants write maps,
// allocates one DATA extent and answers GRANT as told; a device over memory; the mount a temporary local file.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { Device } from './device.js';
import { OVER_LIMIT, Throttle, type Grant } from './pacer.js';
import type { FileMap, Session } from './session.js';
import type { FusedFile, FuseRecord } from './registry.js';
import { DirectWriter, type DeviceWriter } from './writer.js';

const MiB = 1024 * 1024;
const P = 8 * MiB;

class FakeSession extends EventEmitter {
  leaseMs = 10_000;
  isClosed = false;
  commits: number[] = [];
  grants = 0;
  constructor(private readonly answer: (bytes: number, ops: number, i: number) => Grant) {
    super();
  }
  isRecalled = () => false;
  leaseValid = () => true;
  deadline = () => performance.now() + this.leaseMs;
  keepAlive = () => () => {};
  async grant(_volume: string, bytes: number, ops: number): Promise<Grant> {
    return this.answer(bytes, ops, this.grants++);
  }
  async alloc(lease: string, offset: number, length: number): Promise<FileMap> {
    const end = offset + length;
    return { lease, size: end, blockSize: 4096, change: 'c', extents: [{ logical: 0, physical: P, length: end, state: 'DATA', flags: 0 }] };
  }
  async commit(_lease: string, size: number): Promise<{ size: number }> {
    this.commits.push(size);
    return { size };
  }
  async release(): Promise<void> {}
}

function setup(t: { after: (fn: () => void) => void }, answer: (bytes: number, ops: number, i: number) => Grant, fallback: boolean) {
  const dir = mkdtempSync(join(tmpdir(), 'fused-writer-throttle-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, '.dst.fused-0000');
  writeFileSync(path, '');
  const session = new FakeSession(answer);
  const image = Buffer.alloc(64 * MiB, 0xa5);
  const device: DeviceWriter = {
    path: '/dev/fake',
    writeAt: async (buf, bufOffset, length, position) => void buf.copy(image, position, bufOffset, bufOffset + length),
    outside: (extents) => Device.prototype.outside.call({ fsSize: 64 * MiB, info: { size: 64 * MiB } } as unknown as Device, extents),
    close: async () => {},
  };
  const fuse = { mountpoint: dir, uuid: 'u', volume: 'vol', device: '/dev/fake', access: 'rw' } as FuseRecord;
  const map: FileMap = { lease: 'W1', size: 0, blockSize: 4096, change: 'c', extents: [] };
  const client = {
    resolve: async (file: Buffer) => ({ fuse, rel: Buffer.from('.dst'), abs: file }) as FusedFile,
    map: async () => ({ map, session: session as unknown as Session, device: Promise.resolve({ path: '/dev/fake' }) }),
  };
  const throttle = new Throttle({ fallback });
  const writer = new DirectWriter(client, { smallFile: 0, openDevice: async () => device, throttle });
  return { path, session, image, writer, throttle };
}

/** Write `data` through `writer` in 4 MiB pieces and finish; the target's report. */
async function writeAll(writer: DirectWriter, path: string, data: Buffer) {
  const target = await writer.open(Buffer.from(path), data.length);
  for (let at = 0; at < data.length; at += 4 * MiB) await target.write(at, data.subarray(at, at + 4 * MiB), false);
  await target.finish(data.length);
  return target.report;
}

test('under a server limit every device write waits for its grant, and all of the file goes direct', async (t) => {
  const s = setup(t, (b, o, i) => (i % 2 === 0 ? { bytes: Math.min(b, 2 * MiB), ops: o, nextMs: 20 } : { bytes: 0, ops: 0, nextMs: 20 }), false);
  const data = randomBytes(10 * MiB);
  const r = await writeAll(s.writer, s.path, data);
  assert.equal(r.path, 'direct');
  assert.equal(r.bytesDirect, data.length);
  assert.ok(s.image.subarray(P, P + data.length).equals(data));
  assert.deepEqual(s.session.commits, [data.length]);
  assert.ok(s.throttle.totals().grants >= 5, `${s.throttle.totals().grants} grants`);
});

test('--fallback: over the limit, what is written is committed and the rest goes through the mount', async (t) => {
  const s = setup(t, (b, o, i) => (i === 0 ? { bytes: Math.min(b, 4 * MiB), ops: o, nextMs: 5000 } : { bytes: 0, ops: 0, nextMs: 5000 }), true);
  const data = randomBytes(10 * MiB);
  const r = await writeAll(s.writer, s.path, data);
  assert.equal(r.path, 'mixed');
  assert.equal(r.reason, OVER_LIMIT);
  assert.equal(r.bytesDirect, 4 * MiB);
  assert.equal(r.bytesNetwork, 6 * MiB);
  assert.equal(r.bytesOverLimit, 6 * MiB);
  assert.deepEqual(s.session.commits, [4 * MiB]);
  // The device holds the committed part; the mount file (the fake server's view) the rest after it.
  assert.ok(s.image.subarray(P, P + 4 * MiB).equals(data.subarray(0, 4 * MiB)));
  assert.ok(readFileSync(s.path).subarray(4 * MiB).equals(data.subarray(4 * MiB)));
});

test('--fallback: a file whose last (only) stage is over the limit is committed once and finished through the mount', async (t) => {
  const s = setup(t, () => ({ bytes: 0, ops: 0, nextMs: 5000 }), true);
  const data = randomBytes(3 * MiB + 5);
  const r = await writeAll(s.writer, s.path, data);
  assert.deepEqual(s.session.commits, [0]);
  assert.equal(r.path, 'mixed');
  assert.equal(r.bytesOverLimit, data.length);
  assert.ok(readFileSync(s.path).equals(data));
});
