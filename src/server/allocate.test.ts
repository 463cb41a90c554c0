// Unit tests of the allocator's range logic (no devices): what needs blocks, what the reserve covers, the check.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { chunksOf, notOwnedWritten, rangesToAllocate, splitByReserve } from './allocate.js';

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
