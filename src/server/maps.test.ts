// Unit tests for the map policy's "lease, fstat, FIEMAP, fstat" rule (safety rule 3; issue 6 §2): a file that
// changes while FIEMAP runs — in size, mtime, or only ctime (a chmod or touch does not break a read lease) — is mapped
// again, and one that keeps changing is NETWORK. Real files in a temporary directory; FIEMAP and the kernel's leases
// are fakes (tmpfs has no FIEMAP), so the changes land exactly while the map is being made.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { appendFileSync, chmodSync, closeSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { INODE_FLAGS, type FiemapExtent, type LeaseType } from '../native/index.js';
import { splitDev } from '../sys/blockdev.js';
import { LeaseTable, type KernelLeases, type LeaseHolder } from './leases.js';
import { MapPolicy } from './maps.js';
import type { Volume } from './volumes.js';

/** Leases that always succeed; closing a descriptor closes it. */
class Kernel implements KernelLeases {
  setLease(_fd: number, _type: LeaseType): void {}
  getLease(): LeaseType {
    return 'read';
  }
  onLeaseBreak(): void {}
  close(fd: number): void {
    closeSync(fd);
  }
}

const holder: LeaseHolder = { name: 'node test', recall: async () => performance.now(), abort: () => {} };

function setup(t: { after: (fn: () => void) => void }, fstype: 'ext4' | 'xfs', change: (path: string, call: number) => void, inodeFlags?: (fd: number) => number) {
  const dir = mkdtempSync(join(tmpdir(), 'fused-maps-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, 'clip.bin');
  writeFileSync(path, Buffer.alloc(8192, 7), { mode: 0o644 });
  const { major, minor } = splitDev(statSync(dir, { bigint: true }).dev);
  const volume: Volume = {
    name: 'vol', dir, mountPoint: dir, device: '/dev/fake', major, minor,
    identity: { fstype, uuid: '00000000-0000-4000-8000-000000000001', label: '', blockSize: 4096, sizeBytes: 1 << 30, xfsRealtime: false },
  };
  let calls = 0;
  const fiemap = async (): Promise<FiemapExtent[]> => {
    change(path, ++calls);
    const size = statSync(path).size;
    return [{ logical: 0, physical: 1 << 20, length: Math.ceil(size / 4096) * 4096, flags: 1 /* LAST */ }];
  };
  const leases = new LeaseTable({ leaseTimeMs: 1000, marginMs: 100, recallQueueMs: 100, maxFiles: 16, log: () => {}, kernel: new Kernel(), lingerMs: 0 });
  const policy = new MapPolicy(leases, { maxExtents: 1000, reserveBytes: 0, log: () => {}, fiemap, ...(inodeFlags ? { inodeFlags } : {}) });
  return { volume, policy, leases, calls: () => calls };
}

for (const fstype of ['ext4', 'xfs'] as const) {
  test(`a file whose ctime alone changes during FIEMAP is mapped again; the map is of the version after (${fstype})`, async (t) => {
    const { volume, policy, leases, calls } = setup(t, fstype, (path, call) => {
      if (call === 1) chmodSync(path, 0o640); // ctime moves, size and mtime do not
    });
    const m = await policy.map(volume, Buffer.from('clip.bin'), holder);
    assert.equal(calls(), 2, 'not mapped again after the ctime moved');
    assert.equal(m.networkReason, undefined);
    assert.equal(m.size, 8192);
    assert.equal(m.change, `${statSync(join(volume.dir, 'clip.bin'), { bigint: true }).ino}-${statSync(join(volume.dir, 'clip.bin'), { bigint: true }).ctimeNs}`);
    leases.release(holder, m.leaseId);
  });

  test(`a file that grows during FIEMAP is mapped again with its new size (${fstype})`, async (t) => {
    const { volume, policy, leases, calls } = setup(t, fstype, (path, call) => {
      if (call === 1) appendFileSync(path, Buffer.alloc(4096, 9));
    });
    const m = await policy.map(volume, Buffer.from('clip.bin'), holder);
    assert.equal(calls(), 2);
    assert.equal(m.size, 12288);
    const covered = m.extents.length > 0 ? m.extents.reduce((n, e) => n + e.length, 0) : m.size;
    assert.equal(covered, 12288);
    leases.release(holder, m.leaseId);
  });

  test(`a file that keeps changing while it is mapped is NETWORK after three tries, saying so (${fstype})`, async (t) => {
    const { volume, policy, leases, calls } = setup(t, fstype, (path, call) => chmodSync(path, call % 2 ? 0o600 : 0o644));
    const m = await policy.map(volume, Buffer.from('clip.bin'), holder);
    assert.equal(calls(), 3);
    assert.match(m.networkReason ?? '', /kept changing while it was mapped \(3 tries\)/);
    assert.deepEqual(m.extents.map((e) => e.state), ['NETWORK']);
    leases.release(holder, m.leaseId);
  });
}

test('a map served from the cache of the file\'s read lease skips the flags check; a ctime change (chattr +j) brings it back', async (t) => {
  let flagCalls = 0;
  let flags = 0;
  const { volume, policy, leases, calls } = setup(t, 'ext4', () => {}, () => (flagCalls++, flags));
  const first = await policy.map(volume, Buffer.from('clip.bin'), holder);
  assert.equal(first.networkReason, undefined);
  assert.deepEqual([calls(), flagCalls], [1, 1]);
  // The first map's lease is held: the file's kernel read lease and the map cached with it stay.
  const second = await policy.map(volume, Buffer.from('clip.bin'), holder);
  assert.equal(second.networkReason, undefined);
  assert.deepEqual([calls(), flagCalls], [1, 1], 'a cache hit made FIEMAP or the flags ioctl again');
  // chattr +j: new flags, and the ctime moves with them.
  flags = INODE_FLAGS.JOURNAL_DATA;
  chmodSync(join(volume.dir, 'clip.bin'), 0o640);
  const third = await policy.map(volume, Buffer.from('clip.bin'), holder);
  assert.equal(flagCalls, 2, 'the flags were not read again after the ctime moved');
  assert.match(third.networkReason ?? '', /journals its data/);
  for (const m of [first, second, third]) leases.release(holder, m.leaseId);
});
