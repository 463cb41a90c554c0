// Unit tests for the reader's throttle hooks with fakes (no devices): a fake map server that answers GRANT as told,
// a device backed by memory, the file "through the mount" a temporary local file.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { fakeServer, openFake } from './fake-server.js';
import { FileReader, type Chunk, type DeviceReader, type MapSource } from './reader.js';
import { OVER_LIMIT, Throttle } from './pacer.js';
import type { FusedFile, FuseRecord } from './registry.js';
import { Device } from './device.js';

const MiB = 1024 * 1024;
const AT = 4 * MiB;

/** 16 MiB of data in one DATA extent at AT on a 32 MiB device image. */
async function setup(t: { after: (fn: () => void | Promise<void>) => void }, grant: (bytes: number, ops: number) => string) {
  const dir = mkdtempSync(join(tmpdir(), 'fused-throttle-'));
  const bytes = randomBytes(16 * MiB);
  const path = join(dir, 'clip.bin');
  writeFileSync(path, bytes);
  const image = Buffer.alloc(32 * MiB, 0xa5);
  bytes.copy(image, AT);
  const st = statSync(path, { bigint: true });
  const mtime = `${st.mtimeNs / 1_000_000_000n}.${String(st.mtimeNs % 1_000_000_000n).padStart(9, '0')}`;
  const fake = await fakeServer({
    lease: 5,
    map: () => ({ head: `size=${st.size} blocksize=4096 ino=${st.ino} change=${st.ino}-1 mtime=${mtime}`, extents: [`0 ${AT} ${16 * MiB} DATA 0x1`] }),
    grant: (_volume, b, o) => grant(b, o),
  });
  const session = await openFake(fake);
  const reads: number[] = [];
  const device: DeviceReader = {
    path: '/dev/fake',
    info: { isBlockDevice: true, size: 32 * MiB, logicalSectorSize: 512, physicalSectorSize: 4096, rdevMajor: 7, rdevMinor: 9 },
    fsSize: 32 * MiB,
    readInto: async (scratch, position, length) => {
      reads.push(position);
      image.copy(scratch, 0, position, position + length);
      return scratch.subarray(0, length);
    },
    close: async () => {},
    outside: (extents) => Device.prototype.outside.call({ fsSize: 32 * MiB, info: { size: 32 * MiB } } as unknown as Device, extents),
  };
  const fuse = { mountpoint: dir, uuid: 'u', volume: 'vol', device: '/dev/fake' } as FuseRecord;
  const client: MapSource = {
    resolve: async (file: Buffer) => ({ fuse, rel: Buffer.from('clip.bin'), abs: file }) as FusedFile,
    map: async () => ({ map: await session.map('vol', Buffer.from('clip.bin')), session, device: Promise.resolve({ path: '/dev/fake' }) }),
  };
  const parts = new Map<number, Buffer>();
  const sink = {
    write: async (c: Chunk) => void parts.set(c.offset, Buffer.from(c.data)),
    restart: async () => parts.clear(),
  };
  const result = () => Buffer.concat([...parts.entries()].sort((a, b) => a[0] - b[0]).map((e) => e[1]));
  t.after(async () => {
    session.close();
    await fake.close();
    rmSync(dir, { recursive: true, force: true });
  });
  return { path, bytes, fake, reads, device, client, sink, result };
}

test('under a server limit the reader waits for grants and reads everything direct', async (t) => {
  // 4 MiB per grant, then "ask again in 50 ms".
  let n = 0;
  const s = await setup(t, (b, o) => (n++ % 2 === 0 ? `OK GRANT bytes=${Math.min(b, 4 * MiB)} ops=${o} next=50` : `OK GRANT bytes=0 ops=0 next=50`));
  const throttle = new Throttle();
  const r = await new FileReader(s.client, { openDevice: async () => s.device, throttle }).read(Buffer.from(s.path), s.sink);
  assert.equal(r.path, 'direct');
  assert.equal(r.bytesDirect, 16 * MiB);
  assert.ok(s.result().equals(s.bytes));
  assert.ok(throttle.totals().grants >= 4, `${throttle.totals().grants} grants`);
  assert.ok(throttle.totals().waitedMs >= 100, `waited ${throttle.totals().waitedMs} ms`);
});

test('--fallback: pieces over the limit come through the mount; direct + network = size; the reason says so', async (t) => {
  // One 4 MiB grant, then nothing for a long while.
  let n = 0;
  const s = await setup(t, (b, o) => (n++ === 0 ? `OK GRANT bytes=${Math.min(b, 4 * MiB)} ops=${o} next=5000` : `OK GRANT bytes=0 ops=0 next=5000`));
  const throttle = new Throttle({ fallback: true });
  const t0 = performance.now();
  const r = await new FileReader(s.client, { openDevice: async () => s.device, throttle }).read(Buffer.from(s.path), s.sink);
  assert.ok(performance.now() - t0 < 2000, 'the excess waited');
  assert.equal(r.path, 'mixed');
  assert.equal(r.reason, OVER_LIMIT);
  assert.equal(r.bytesDirect, 4 * MiB);
  assert.equal(r.bytesOverLimit, 12 * MiB);
  assert.equal(r.bytesDirect + r.bytesNetwork + r.bytesZero, 16 * MiB);
  assert.equal(s.reads.length, 1);
  assert.ok(s.result().equals(s.bytes));
});

test('a recall while reads wait for budget lets them go at once: RETURN, the rest through the mount', async (t) => {
  const s = await setup(t, () => 'OK GRANT bytes=0 ops=0 next=1000');
  const t0 = performance.now();
  const reading = new FileReader(s.client, { openDevice: async () => s.device, throttle: new Throttle() }).read(Buffer.from(s.path), s.sink);
  await sleep(200);
  const i = s.fake.got.findIndex((l) => l.startsWith('MAP'));
  const lease = `L${i + 1}`;
  s.fake.push(`! RECALL lease=${lease} reason=write-open`);
  const r = await reading;
  assert.ok(performance.now() - t0 < 1500, `took ${performance.now() - t0} ms`);
  assert.ok(s.fake.got.includes(`RETURN ${lease}`), s.fake.got.join('\n'));
  assert.equal(r.interrupted, true);
  assert.equal(s.reads.length, 0);
  assert.ok(s.result().equals(s.bytes));
});
