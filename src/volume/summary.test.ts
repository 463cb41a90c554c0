// Unit tests for extent-map summaries: fragments, extent sizes, bytes per state, totals.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { MapExtent } from './extents.js';
import { GIB, summarize, totalOf } from './summary.js';

const M = 2 ** 20;
const ext = (logical: number, physical: number, length: number, state: MapExtent['state'] = 'DATA'): MapExtent => ({ logical, physical, length, state, flags: 0 });

test('contiguous extents are one fragment; a jump starts another; holes have no place', () => {
  const s = summarize(10 * M, [
    ext(0, 100 * M, 2 * M),
    ext(2 * M, 102 * M, 1 * M, 'ZERO'), // follows on the device: same fragment
    ext(3 * M, 0, 3 * M, 'HOLE'),
    ext(6 * M, 500 * M, 4 * M),
  ]);
  assert.equal(s.extents, 4);
  assert.equal(s.fragments, 2);
  assert.equal(s.placed, 3);
  assert.equal(s.allocated, 7 * M);
  assert.equal(s.largest, 4 * M);
  assert.equal(s.average, Math.round((7 * M) / 3));
  assert.deepEqual(s.bytes, { DATA: 6 * M, ZERO: 1 * M, HOLE: 3 * M, NETWORK: 0 });
  assert.equal(s.fragmentsPerGiB, Math.round((2 / ((7 * M) / GIB)) * 100) / 100);
});

test('NETWORK pieces count where they carry an address; an empty file has nothing', () => {
  const s = summarize(8192, [ext(0, 0, 4096, 'NETWORK'), ext(4096, 40960, 4096, 'NETWORK')]);
  assert.equal(s.fragments, 1);
  assert.equal(s.allocated, 4096);
  assert.deepEqual(s.bytes, { DATA: 0, ZERO: 0, HOLE: 0, NETWORK: 8192 });
  const empty = summarize(0, []);
  assert.deepEqual([empty.extents, empty.fragments, empty.largest, empty.average, empty.fragmentsPerGiB], [0, 0, 0, 0, 0]);
});

test('totals add up; largest is the largest; the average is over all placed extents', () => {
  const a = summarize(GIB, [ext(0, 0, GIB)]);
  const b = summarize(3 * M, [ext(0, 10 * GIB, M), ext(M, 20 * GIB, M), ext(2 * M, 30 * GIB, M)]);
  const t = totalOf([a, b]);
  assert.equal(a.fragmentsPerGiB, 1);
  assert.equal(t.files, 2);
  assert.equal(t.extents, 4);
  assert.equal(t.fragments, 4);
  assert.equal(t.size, GIB + 3 * M);
  assert.equal(t.largest, GIB);
  assert.equal(t.average, Math.round((GIB + 3 * M) / 4));
  assert.equal(t.bytes.DATA, GIB + 3 * M);
  assert.deepEqual(totalOf([]).files, 0);
});
