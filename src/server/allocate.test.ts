// Unit tests of the allocator's range logic (no devices): what needs blocks, what the reserve covers, the check;
// and its ext4 pool on a real file system.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fiemap, setLease } from '../native/index.js';
import { chunksOf, createAllocator, notOwnedWritten, rangesToAllocate, splitByReserve } from './allocate.js';

/** ext2/3/4 share a magic number: statfs cannot tell them apart, /proc/mounts can. */
function isExt4(p: string): boolean {
  const mounts = fs.readFileSync('/proc/self/mounts', 'utf8').split('\n').map((l) => l.split(' '));
  const real = fs.realpathSync(p);
  let best: string[] | undefined;
  for (const m of mounts) {
    const at = m[1];
    if (at && (real === at || real.startsWith(at.endsWith('/') ? at : `${at}/`)) && (!best || at.length > best[1]!.length)) best = m;
  }
  return best?.[2] === 'ext4';
}

const K = 1024;
const LAST = 0x1;
const DELALLOC = 0x4;
const UNWRITTEN = 0x800;
const SHARED = 0x2000;

const ext = (logical: number, length: number, flags = 0, physical = 1000 * K + logical) =>
  ({ logical, physical, length, flags });

describe('rangesToAllocate', () => {
  test('an empty file needs the whole range, as a hole', () => {
    assert.deepEqual(rangesToAllocate([], 0, 8 * K, 16 * K), [{ offset: 8 * K, length: 16 * K, hole: true }]);
  });

  test('written extents are left alone; gaps are holes, unwritten extents are not', () => {
    const extents = [ext(0, 4 * K), ext(8 * K, 4 * K, UNWRITTEN), ext(16 * K, 4 * K, LAST)];
    assert.deepEqual(rangesToAllocate(extents, 20 * K, 0, 32 * K), [
      { offset: 4 * K, length: 4 * K, hole: true },
      { offset: 8 * K, length: 4 * K, hole: false },
      { offset: 12 * K, length: 4 * K, hole: true },
      { offset: 20 * K, length: 12 * K, hole: true },
    ]);
  });

  test('shared extents hold data: never overwritten', () => {
    assert.deepEqual(rangesToAllocate([ext(0, 8 * K, SHARED | LAST)], 8 * K, 0, 8 * K), []);
  });

  test('extents are clipped to the range, in any order', () => {
    const extents = [ext(12 * K, 8 * K, UNWRITTEN), ext(0, 6 * K)];
    assert.deepEqual(rangesToAllocate(extents, 20 * K, 4 * K, 12 * K), [
      { offset: 6 * K, length: 6 * K, hole: true },
      { offset: 12 * K, length: 4 * K, hole: false },
    ]);
  });

  test('delalloc past EOF (XFS speculative preallocation) has no blocks: a hole; inside EOF it is data', () => {
    const extents = [ext(0, 4 * K, DELALLOC), ext(4 * K, 60 * K, DELALLOC | LAST)];
    assert.deepEqual(rangesToAllocate(extents, 4 * K, 0, 16 * K), [{ offset: 4 * K, length: 12 * K, hole: true }]);
  });

  test('neighbours of the same kind merge', () => {
    const extents = [ext(0, 4 * K, UNWRITTEN), ext(4 * K, 4 * K, UNWRITTEN, 0)];
    assert.deepEqual(rangesToAllocate(extents, 0, 0, 8 * K), [{ offset: 0, length: 8 * K, hole: false }]);
  });
});

describe('splitByReserve', () => {
  const needs = [{ offset: 0, length: 8 * K, hole: true }, { offset: 16 * K, length: 8 * K, hole: false }];

  test('the reserve covers the first bytes in file order, the rest is zero-filled', () => {
    assert.deepEqual(splitByReserve(needs, 12 * K), {
      clone: [{ offset: 0, length: 8 * K, hole: true }, { offset: 16 * K, length: 4 * K, hole: false }],
      fill: [{ offset: 20 * K, length: 4 * K, hole: false }],
    });
  });

  test('an empty reserve zero-fills everything; a big one clones everything', () => {
    assert.deepEqual(splitByReserve(needs, 0), { clone: [], fill: needs });
    assert.deepEqual(splitByReserve(needs, 1 << 30), { clone: needs, fill: [] });
  });
});

describe('notOwnedWritten', () => {
  test('written extents covering the range: null', () => {
    assert.equal(notOwnedWritten([ext(0, 8 * K), ext(8 * K, 8 * K, LAST)], 4 * K, 8 * K), null);
  });

  test('unwritten, shared, delalloc and gaps are named', () => {
    assert.match(notOwnedWritten([ext(0, 8 * K, UNWRITTEN)], 0, 8 * K)!, /UNWRITTEN extent at 0/);
    assert.match(notOwnedWritten([ext(0, 8 * K, SHARED)], 0, 8 * K)!, /SHARED/);
    assert.match(notOwnedWritten([ext(0, 8 * K, DELALLOC)], 0, 8 * K)!, /DELALLOC/);
    assert.match(notOwnedWritten([ext(0, 4 * K), ext(8 * K, 4 * K)], 0, 12 * K)!, /no blocks at 4096/);
    assert.match(notOwnedWritten([ext(0, 4 * K)], 0, 8 * K)!, /no blocks at 4096/);
    assert.match(notOwnedWritten([], 0, 4 * K)!, /no blocks at 0/);
  });

  test('flags outside the range do not matter', () => {
    assert.equal(notOwnedWritten([ext(0, 4 * K, SHARED), ext(4 * K, 4 * K), ext(8 * K, 4 * K, UNWRITTEN)], 4 * K, 4 * K), null);
  });
});

describe('chunksOf', () => {
  test('cuts ranges into pieces of at most the chunk size', () => {
    assert.deepEqual(chunksOf([{ offset: 4 * K, length: 10 * K }, { offset: 64 * K, length: 2 * K }], 4 * K), [
      { offset: 4 * K, length: 4 * K }, { offset: 8 * K, length: 4 * K }, { offset: 12 * K, length: 2 * K },
      { offset: 64 * K, length: 2 * K },
    ]);
  });
});

describe('the ext4 pool (a real file system: /var/tmp)', { skip: !isExt4('/var/tmp') && '/var/tmp is not ext4' }, () => {
  let dir = '';
  before(() => {
    dir = fs.mkdtempSync('/var/tmp/fused-alloc-pool-');
  });
  after(() => {
    fs.rmSync(dir, { recursive: true, force: true });
  });

  test('fills its pool, swaps a file into place (zeros, written, the mode kept), refills; a leftover is removed', async () => {
    const MiB = 1024 * 1024;
    // An empty file of another owner under the pool's name: what a crash right after a swap leaves.
    fs.mkdirSync(path.join(dir, '.fused'), { mode: 0o700 });
    fs.writeFileSync(path.join(dir, '.fused/pool.0'), '');
    if (process.getuid?.() === 0) fs.chownSync(path.join(dir, '.fused/pool.0'), 4321, 4321);
    else fs.chmodSync(path.join(dir, '.fused/pool.0'), 0o644); // not the pool's 0600: kept prefix 0 either way
    const log: string[] = [];
    const a = await createAllocator({ dir, identity: { fstype: 'ext4', blockSize: 4096 } }, { reserveBytes: 2 * MiB, log: (l) => log.push(l) });
    try {
      assert.equal(a.stats().method, 'pool');
      const full = async () => {
        for (let i = 0; i < 200 && a.stats().reserveBytes < 2 * MiB; i++) await sleep(20);
        assert.equal(a.stats().reserveBytes, 2 * MiB, 'the pool filled');
      };
      await full();
      const before = fs.statSync(path.join(dir, '.fused/pool.0'), { bigint: true });
      assert.equal(a.owns(before.dev, before.ino), true);
      fs.writeFileSync(path.join(dir, 'target'), '', { mode: 0o640 });
      fs.chmodSync(path.join(dir, 'target'), 0o640);
      const fd = fs.openSync(path.join(dir, 'target'), 'r+');
      setLease(fd, 'write');
      let leased = -1;
      const swapped = await a.swapIn({ root: dir, rel: Buffer.from('target'), fd, install: (nfd) => ((leased = nfd), true) }, MiB);
      assert.equal(swapped, true);
      fs.closeSync(fd); // the table would have: the old inode is gone
      const now = fs.statSync(path.join(dir, 'target'), { bigint: true });
      assert.equal(now.ino, before.ino);
      assert.equal(now.size, BigInt(2 * MiB));
      assert.equal(Number(now.mode & 0o7777n), 0o640);
      assert.equal(a.owns(now.dev, now.ino), false, 'no longer the pool\'s');
      assert.equal(notOwnedWritten(await fiemap(leased), 0, 2 * MiB), null, 'written blocks it owns alone');
      await a.allocate(leased, 0, MiB); // nothing left to do there
      assert.equal(a.stats().zeroFillBytes, 0);
      setLease(leased, 'none');
      fs.closeSync(leased);
      assert.deepEqual(fs.readFileSync(path.join(dir, 'target')), Buffer.alloc(2 * MiB));
      await full();
      assert.notEqual(fs.statSync(path.join(dir, '.fused/pool.0'), { bigint: true }).ino, before.ino);
      assert.equal(a.stats().swaps, 1);
    } finally {
      await a.close();
    }
  });
});
