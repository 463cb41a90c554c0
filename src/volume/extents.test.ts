// Unit tests for extent classification, map building, validation and slicing.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  networkReason,
  FIEMAP_FLAGS as F, buildMap, classifyExtent, flagNames, mapTotals, sliceMap, validateMap,
  type ExtentState, type MapExtent, type RawExtent,
} from './extents.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;

function raw(logical: number, physical: number, length: number, flags = 0): RawExtent {
  return { logical, physical, length, flags };
}
function ext(logical: number, physical: number, length: number, state: ExtentState, flags = 0): MapExtent {
  return { logical, physical, length, state, flags };
}

test('classifyExtent sends every not-on-device flag to the network, for reads and writes', () => {
  for (const flag of [F.UNKNOWN, F.DELALLOC, F.ENCODED, F.DATA_ENCRYPTED, F.NOT_ALIGNED, F.DATA_INLINE, F.DATA_TAIL]) {
    assert.equal(classifyExtent(flag, 'read'), 'NETWORK', flagNames(flag).join());
    assert.equal(classifyExtent(flag | F.LAST, 'write'), 'NETWORK', flagNames(flag).join());
    assert.equal(classifyExtent(flag | F.UNWRITTEN, 'read'), 'NETWORK', 'network wins over unwritten');
  }
});

test('classifyExtent reads shared blocks directly but never writes them', () => {
  assert.equal(classifyExtent(F.SHARED, 'read'), 'DATA');
  assert.equal(classifyExtent(F.SHARED | F.LAST, 'write'), 'NETWORK');
  assert.equal(classifyExtent(F.SHARED | F.UNWRITTEN, 'read'), 'ZERO');
  assert.equal(classifyExtent(F.SHARED | F.UNWRITTEN, 'write'), 'NETWORK');
});

test('classifyExtent sends an extent with any flag bit it does not know to the network, for reads and writes', () => {
  const known = Object.values(F).reduce((all: number, bit) => all | bit, 0);
  let unknown = 0;
  for (let bit = 0; bit < 32; bit++) {
    const flag = 2 ** bit;
    if (known & flag) continue;
    unknown++;
    const hex = `0x${flag.toString(16)}`;
    assert.equal(classifyExtent(flag, 'read'), 'NETWORK', hex);
    assert.equal(classifyExtent((flag | F.LAST) >>> 0, 'write'), 'NETWORK', hex);
    assert.equal(classifyExtent((flag | F.UNWRITTEN) >>> 0, 'read'), 'NETWORK', `${hex}: not ZERO either`);
    assert.equal(classifyExtent((flag | F.SHARED | F.MERGED) >>> 0, 'read'), 'NETWORK', hex);
  }
  // 0x10, 0x20, 0x40, 0x4000 and up: 21 bits.
  assert.equal(unknown, 21);
});

test('classifyExtent: unwritten is ZERO, plain, last and merged are DATA', () => {
  assert.equal(classifyExtent(F.UNWRITTEN, 'read'), 'ZERO');
  assert.equal(classifyExtent(F.UNWRITTEN | F.LAST, 'write'), 'ZERO');
  assert.equal(classifyExtent(0, 'read'), 'DATA');
  assert.equal(classifyExtent(F.LAST | F.MERGED, 'write'), 'DATA');
});

test('buildMap of an empty file is empty, whatever FIEMAP said', () => {
  assert.deepEqual(buildMap([], 0, 'read'), []);
  assert.deepEqual(buildMap([raw(0, 4096, 4096, F.LAST)], 0, 'read'), []);
});

test('buildMap of a file with no extents is one hole (sparse file)', () => {
  assert.deepEqual(buildMap([], 10 * MiB, 'read'), [ext(0, 0, 10 * MiB, 'HOLE')]);
});

test('buildMap sorts fragmented extents reported out of order', () => {
  const map = buildMap([raw(8192, 900 * 4096, 4096, F.LAST), raw(0, 100 * 4096, 4096), raw(4096, 500 * 4096, 4096)],
    12288, 'read');
  assert.deepEqual(map,
    [ext(0, 409600, 4096, 'DATA'), ext(4096, 2048000, 4096, 'DATA'), ext(8192, 3686400, 4096, 'DATA')]);
});

test('buildMap clips the last extent, rounded up to the block size, to the file size', () => {
  assert.deepEqual(buildMap([raw(0, 1 * MiB, 8192, F.LAST)], 5000, 'read'), [ext(0, 1 * MiB, 5000, 'DATA')]);
});

test('buildMap drops XFS preallocation past EOF and clips the extent that crosses it', () => {
  const map = buildMap([raw(0, 64 * MiB, 4096), raw(4096, 80 * MiB, 16 * MiB, F.UNWRITTEN | F.LAST),
    raw(20 * MiB, 99 * MiB, 4096, F.LAST)], 8192, 'read');
  assert.deepEqual(map, [ext(0, 64 * MiB, 4096, 'DATA'), ext(4096, 80 * MiB, 4096, 'ZERO', F.UNWRITTEN)]);
});

test('buildMap: unwritten extents (fallocate) are ZERO with their address kept', () => {
  const map = buildMap([raw(0, 1 * MiB, 1 * MiB, F.UNWRITTEN | F.LAST)], 1 * MiB, 'write');
  assert.deepEqual(map, [ext(0, 1 * MiB, 1 * MiB, 'ZERO', F.UNWRITTEN)]);
});

test('buildMap: an inline file (ext4 inline_data) goes over the network', () => {
  const flags = F.NOT_ALIGNED | F.DATA_INLINE | F.LAST;
  assert.deepEqual(buildMap([raw(0, 1_052_812, 60, flags)], 30, 'read'),
    [ext(0, 1_052_812, 30, 'NETWORK', F.NOT_ALIGNED | F.DATA_INLINE)]);
});

test('buildMap: delalloc data not yet placed (physical 0) goes over the network', () => {
  const map = buildMap([raw(0, 0, 4096, F.UNKNOWN | F.DELALLOC | F.LAST)], 3, 'read');
  assert.deepEqual(map, [ext(0, 0, 3, 'NETWORK', F.UNKNOWN | F.DELALLOC)]);
});

test('buildMap: shared (reflinked) extents are DATA for reads and NETWORK for writes', () => {
  const r = [raw(0, 8 * MiB, 1 * MiB, F.SHARED), raw(1 * MiB, 20 * MiB, 1 * MiB, F.LAST)];
  assert.deepEqual(buildMap(r, 2 * MiB, 'read'),
    [ext(0, 8 * MiB, 1 * MiB, 'DATA', F.SHARED), ext(1 * MiB, 20 * MiB, 1 * MiB, 'DATA')]);
  assert.deepEqual(buildMap(r, 2 * MiB, 'write'),
    [ext(0, 8 * MiB, 1 * MiB, 'NETWORK', F.SHARED), ext(1 * MiB, 20 * MiB, 1 * MiB, 'DATA')]);
});

test('buildMap: an extent with an unknown flag bit goes over the network, its flags and address kept', () => {
  const map = buildMap([raw(0, 1 * MiB, 4096), raw(4096, 1 * MiB + 4096, 4096, 0x4000),
    raw(8192, 1 * MiB + 8192, 4096, F.LAST)], 12288, 'read');
  assert.deepEqual(map, [
    ext(0, 1 * MiB, 4096, 'DATA'),
    ext(4096, 1 * MiB + 4096, 4096, 'NETWORK', 0x4000),
    ext(8192, 1 * MiB + 8192, 4096, 'DATA'),
  ]);
});

test('buildMap fills holes at the start, in the middle and at the end', () => {
  const map = buildMap([raw(4096, 1 * MiB, 4096), raw(16384, 2 * MiB, 4096, F.LAST)], 32768, 'read');
  assert.deepEqual(map, [
    ext(0, 0, 4096, 'HOLE'),
    ext(4096, 1 * MiB, 4096, 'DATA'),
    ext(8192, 0, 8192, 'HOLE'),
    ext(16384, 2 * MiB, 4096, 'DATA'),
    ext(20480, 0, 12288, 'HOLE'),
  ]);
});

test('buildMap merges extents split at ext4\'s 128 MiB limit when physically contiguous', () => {
  const r = [raw(0, 1 * GiB, 128 * MiB, F.MERGED), raw(128 * MiB, 1 * GiB + 128 * MiB, 128 * MiB),
    raw(256 * MiB, 1 * GiB + 256 * MiB, 10 * MiB, F.LAST)];
  assert.deepEqual(buildMap(r, 266 * MiB, 'read'), [ext(0, 1 * GiB, 266 * MiB, 'DATA', F.MERGED)]);
});

test('buildMap keeps logically adjacent extents apart when they are not physically contiguous', () => {
  const r = [raw(0, 1 * MiB, 4096), raw(4096, 1 * MiB + 8192, 4096)];
  assert.equal(buildMap(r, 8192, 'read').length, 2);
});

test('buildMap merges ZERO neighbours only when physically contiguous, and never ZERO with DATA', () => {
  const z = F.UNWRITTEN;
  assert.deepEqual(buildMap([raw(0, 1 * MiB, 4096, z), raw(4096, 1 * MiB + 4096, 4096, z)], 8192, 'read'),
    [ext(0, 1 * MiB, 8192, 'ZERO', z)]);
  assert.equal(buildMap([raw(0, 1 * MiB, 4096, z), raw(4096, 3 * MiB, 4096, z)], 8192, 'read').length, 2);
  assert.equal(buildMap([raw(0, 1 * MiB, 4096), raw(4096, 1 * MiB + 4096, 4096, z)], 8192, 'read').length, 2);
});

test('buildMap: a DATA extent not on a 512-byte boundary, in the file or on the device, is NETWORK', () => {
  assert.deepEqual(buildMap([raw(0, 1 * MiB + 100, 4096)], 4096, 'read'), [ext(0, 1 * MiB + 100, 4096, 'NETWORK')]);
  assert.deepEqual(buildMap([raw(100, 1 * MiB, 3996)], 4096, 'read'),
    [ext(0, 0, 100, 'HOLE'), ext(100, 1 * MiB, 3996, 'NETWORK')]);
  // ZERO is never read from the device, so its alignment does not matter.
  assert.deepEqual(buildMap([raw(0, 1 * MiB + 100, 4096, F.UNWRITTEN)], 4096, 'read'),
    [ext(0, 1 * MiB + 100, 4096, 'ZERO', F.UNWRITTEN)]);
});

test('buildMap turns an overlapped range into NETWORK and keeps the rest of each extent', () => {
  const map = buildMap([raw(0, 1 * MiB, 8192), raw(4096, 5 * MiB, 8192)], 12288, 'read');
  assert.deepEqual(map, [
    ext(0, 1 * MiB, 4096, 'DATA'),
    ext(4096, 0, 4096, 'NETWORK'),
    ext(8192, 5 * MiB + 4096, 4096, 'DATA'),
  ]);
  // An extent reported twice is entirely suspect.
  assert.deepEqual(buildMap([raw(0, 1 * MiB, 4096), raw(0, 1 * MiB, 4096)], 4096, 'read'),
    [ext(0, 0, 4096, 'NETWORK')]);
  // One extent inside another: the three-way split merges the overlapped middle into one NETWORK piece.
  const nested = buildMap([raw(0, 1 * MiB, 16384), raw(4096, 7 * MiB, 4096, F.UNWRITTEN), raw(8192, 9 * MiB, 4096)],
    16384, 'read');
  assert.deepEqual(nested, [
    ext(0, 1 * MiB, 4096, 'DATA'),
    ext(4096, 0, 8192, 'NETWORK', F.UNWRITTEN),
    ext(12288, 1 * MiB + 12288, 4096, 'DATA'),
  ]);
});

test('buildMap handles offsets and addresses past 4 GiB exactly', () => {
  const r = [raw(5 * GiB, 300 * GiB, 128 * MiB), raw(5 * GiB + 128 * MiB, 300 * GiB + 128 * MiB, 4096, F.LAST)];
  const size = 5 * GiB + 128 * MiB + 1000;
  assert.deepEqual(buildMap(r, size, 'read'),
    [ext(0, 0, 5 * GiB, 'HOLE'), ext(5 * GiB, 300 * GiB, 128 * MiB + 1000, 'DATA')]);
});

test('buildMap drops LAST from every piece and ORs the flags of merged pieces', () => {
  const map = buildMap([raw(0, 1 * MiB, 4096, F.MERGED), raw(4096, 1 * MiB + 4096, 4096, F.SHARED | F.LAST)],
    8192, 'read');
  assert.deepEqual(map, [ext(0, 1 * MiB, 8192, 'DATA', F.MERGED | F.SHARED)]);
});

test('buildMap rejects raw extents that are not non-negative safe integers', () => {
  assert.throws(() => buildMap([raw(-4096, 0, 4096)], 8192, 'read'), RangeError);
  assert.throws(() => buildMap([raw(0, 0.5, 4096)], 8192, 'read'), RangeError);
  assert.throws(() => buildMap([raw(0, 0, 2 ** 60)], 8192, 'read'), RangeError);
  assert.throws(() => buildMap([], -1, 'read'), RangeError);
  assert.throws(() => buildMap([raw(0, 0, 4096, 2 ** 33)], 8192, 'read'), RangeError);
});

test('buildMap keeps the high flag bit unsigned', () => {
  const map = buildMap([raw(0, 4096, 4096, (0x8000_0000 | F.LAST) >>> 0)], 4096, 'read');
  assert.equal(map[0]!.flags, 0x8000_0000);
  assert.equal(map[0]!.state, 'NETWORK', 'an unknown flag');
  assert.equal(validateMap(map, 4096), null);
});

/** A seeded generator so a failing case can be replayed. */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** The state and device address of byte x worked out directly from the raw extents (the specification). */
function reference(rawList: RawExtent[], size: number, purpose: 'read' | 'write', x: number) {
  const covering = rawList.filter((e) => e.length > 0 && e.logical <= x && x < Math.min(e.logical + e.length, size));
  if (covering.length === 0) return { state: 'HOLE' as ExtentState, physical: 0 };
  if (covering.length > 1) return { state: 'NETWORK' as ExtentState, physical: undefined };
  const e = covering[0]!;
  let state = classifyExtent(e.flags, purpose);
  if (state === 'DATA' && (e.logical % 512 || e.physical % 512)) state = 'NETWORK';
  return { state, physical: state === 'NETWORK' && e.physical === 0 ? 0 : e.physical + (x - e.logical) };
}

test('buildMap agrees byte by byte with the raw extents on 2000 random fragmented files', () => {
  const next = rng(1);
  const flagChoices = [0, 0, 0, F.UNWRITTEN, F.SHARED, F.DELALLOC | F.UNKNOWN, F.MERGED, F.DATA_INLINE | F.NOT_ALIGNED,
    0x10, F.UNWRITTEN | 0x4000];
  for (let round = 0; round < 2000; round++) {
    const unit = next() < 0.8 ? 4096 : 512;
    const rawList: RawExtent[] = [];
    let at = Math.floor(next() * 3) * unit;
    const count = Math.floor(next() * 8);
    for (let i = 0; i < count; i++) {
      const length = (1 + Math.floor(next() * 4)) * unit;
      const contiguous = next() < 0.4 && rawList.length > 0;
      const prev = rawList[rawList.length - 1];
      const physical = contiguous && prev ? prev.physical + prev.length : Math.floor(next() * 1000) * unit
        + (next() < 0.05 ? 100 : 0);
      rawList.push(raw(at, physical, length, flagChoices[Math.floor(next() * flagChoices.length)]!));
      at += length + (next() < 0.3 ? Math.floor(next() * 3) * unit : 0) - (next() < 0.05 ? unit : 0);
    }
    const size = Math.max(0, at + Math.floor((next() - 0.5) * 3 * unit));
    for (let i = rawList.length - 1; i > 0; i--) { // shuffle: FIEMAP order must not matter
      const j = Math.floor(next() * (i + 1));
      [rawList[i], rawList[j]] = [rawList[j]!, rawList[i]!];
    }
    const purpose = next() < 0.5 ? 'read' : 'write';
    const map = buildMap(rawList, size, purpose);
    const ctx = `round ${round}: ${JSON.stringify({ rawList, size, purpose, map })}`;
    assert.equal(validateMap(map, size), null, ctx);
    // In FIEMAP's order the map is built in one walk; shuffled, it is sorted and swept: the same map either way.
    const inOrder = [...rawList].sort((a, b) => a.logical - b.logical || a.length - b.length);
    assert.deepEqual(buildMap(inOrder, size, purpose), map, `${ctx}: built from the extents in logical order`);
    for (let k = 1; k < map.length; k++) {
      const a = map[k - 1]!;
      const b = map[k]!;
      const mergeable = a.state === b.state && (a.state === 'HOLE' || a.physical + a.length === b.physical
        || (a.state === 'NETWORK' && a.physical === 0 && b.physical === 0));
      assert.ok(!mergeable, `${ctx}: pieces ${k - 1} and ${k} should have been merged`);
    }
    const probes = new Set<number>();
    for (const e of rawList) {
      for (const p of [e.logical, e.logical + e.length]) for (const d of [-1, 0, 1]) probes.add(p + d);
    }
    for (let i = 0; i < 20; i++) probes.add(Math.floor(next() * size));
    for (const x of probes) {
      if (x < 0 || x >= size) continue;
      const want = reference(rawList, size, purpose, x);
      const [piece] = sliceMap(map, x, 1);
      assert.ok(piece, `${ctx}: byte ${x} not mapped`);
      assert.equal(piece.state, want.state, `${ctx}: state of byte ${x}`);
      if (want.physical !== undefined && want.state !== 'NETWORK') {
        assert.equal(piece.physical, want.physical, `${ctx}: byte ${x}`);
      }
    }
  }
});

test('validateMap accepts maps that tile the file exactly', () => {
  assert.equal(validateMap([], 0), null);
  assert.equal(validateMap([ext(0, 0, 100, 'HOLE'), ext(100, 4096, 50, 'DATA')], 150), null);
});

test('validateMap names the first problem', () => {
  const ok = [ext(0, 4096, 4096, 'DATA'), ext(4096, 0, 4096, 'HOLE')];
  const cases: Array<[unknown, number, RegExp]> = [
    [ok, 9000, /covers 8192 of 9000/],
    [ok, 4096, /extent 1: ends at 8192, past the file size 4096/],
    [[], 10, /covers 0 of 10/],
    [[ext(4096, 0, 4096, 'HOLE')], 8192, /extent 0: starts at 4096, leaving a gap after 0/],
    [[ext(0, 0, 4096, 'HOLE'), ext(2048, 0, 4096, 'HOLE')], 6144, /extent 1: .*overlapping/],
    [[ext(0, 4096, 0, 'DATA'), ext(0, 4096, 10, 'DATA')], 10, /extent 0: zero length/],
    [[{ logical: 0, physical: 0, length: 10, state: 'SPARSE', flags: 0 }], 10, /unknown state "SPARSE"/],
    [[ext(0, -512, 10, 'DATA')], 10, /physical -512/],
    [[ext(0, 0, 1.5, 'DATA')], 1.5, /size 1.5/],
    [[ext(0, 0, 1.5, 'DATA')], 2, /length 1.5/],
    [[ext(0, 2 ** 53, 10, 'DATA')], 10, /physical/],
    [[ext(0, 2 ** 53 - 5, 10, 'DATA')], 10, /end is not a safe integer/],
    [[ext(0, 512, 10, 'HOLE')], 10, /HOLE with physical 512/],
    [[{ logical: 0, physical: 0, length: 10, state: 'DATA', flags: -1 }], 10, /flags -1/],
    [[{ logical: '0', physical: 0, length: 10, state: 'DATA', flags: 0 }], 10, /logical 0 is not/],
    [[null], 10, /extent 0 is not an object/],
    ['nope', 10, /not a list/],
  ];
  for (const [map, size, re] of cases) {
    const problem = validateMap(map as MapExtent[], size);
    assert.match(problem ?? 'null', re, JSON.stringify(map));
  }
});

const sample: MapExtent[] = [
  ext(0, 0, 4096, 'HOLE'),
  ext(4096, 1 * MiB, 8192, 'DATA'),
  ext(12288, 2 * MiB, 4096, 'ZERO', F.UNWRITTEN),
  ext(16384, 9 * MiB + 100, 4096, 'NETWORK', F.NOT_ALIGNED),
  ext(20480, 0, 1000, 'NETWORK', F.DELALLOC),
];

test('sliceMap cuts the pieces at the edges and moves physical with the cut', () => {
  assert.deepEqual(sliceMap(sample, 1000, 5000), [ext(1000, 0, 3096, 'HOLE'), ext(4096, 1 * MiB, 1904, 'DATA')]);
  assert.deepEqual(sliceMap(sample, 8192, 6000), [ext(8192, 1 * MiB + 4096, 4096, 'DATA'),
    ext(12288, 2 * MiB, 1904, 'ZERO', F.UNWRITTEN)]);
  assert.deepEqual(sliceMap(sample, 13000, 8000), [ext(13000, 2 * MiB + 712, 3384, 'ZERO', F.UNWRITTEN),
    ext(16384, 9 * MiB + 100, 4096, 'NETWORK', F.NOT_ALIGNED), ext(20480, 0, 520, 'NETWORK', F.DELALLOC)]);
  assert.deepEqual(sliceMap(sample, 17000, 10), [ext(17000, 9 * MiB + 100 + 616, 10, 'NETWORK', F.NOT_ALIGNED)]);
  assert.deepEqual(sliceMap(sample, 21000, 100), [ext(21000, 0, 100, 'NETWORK', F.DELALLOC)]);
});

test('sliceMap at exact piece boundaries, empty ranges and ranges past the end', () => {
  assert.deepEqual(sliceMap(sample, 4096, 8192), [sample[1]]);
  assert.deepEqual(sliceMap(sample, 0, 21480), sample);
  assert.deepEqual(sliceMap(sample, 0, 1 * GiB), sample);
  assert.deepEqual(sliceMap(sample, 4096, 0), []);
  assert.deepEqual(sliceMap(sample, 21480, 10), []);
  assert.deepEqual(sliceMap(sample, 30000, 10), []);
  assert.deepEqual(sliceMap([], 0, 10), []);
  assert.throws(() => sliceMap(sample, -1, 10), RangeError);
  assert.throws(() => sliceMap(sample, 0, 2 ** 53), RangeError);
});

test('sliceMap finds the first piece of a long map by binary search, above 4 GiB too', () => {
  const map: MapExtent[] = [];
  for (let i = 0; i < 10000; i++) map.push(ext(i * 1 * MiB, (2 * i + 1) * 1 * GiB, 1 * MiB, i % 2 ? 'DATA' : 'ZERO'));
  const got = sliceMap(map, 7777 * MiB + 5, 2 * MiB);
  assert.deepEqual(got, [
    ext(7777 * MiB + 5, (2 * 7777 + 1) * GiB + 5, 1 * MiB - 5, 'DATA'),
    ext(7778 * MiB, (2 * 7778 + 1) * GiB, 1 * MiB, 'ZERO'),
    ext(7779 * MiB, (2 * 7779 + 1) * GiB, 5, 'DATA'),
  ]);
});

test('mapTotals adds bytes per state', () => {
  assert.deepEqual(mapTotals(sample), { HOLE: 4096, DATA: 8192, ZERO: 4096, NETWORK: 5096 });
  assert.deepEqual(mapTotals([]), { DATA: 0, ZERO: 0, HOLE: 0, NETWORK: 0 });
});

test('flagNames uses filefrag -v names and order, unknown bits in hex', () => {
  assert.deepEqual(flagNames(0), []);
  assert.deepEqual(flagNames(F.UNWRITTEN | F.LAST), ['last', 'unwritten']);
  assert.deepEqual(flagNames(F.UNKNOWN | F.DELALLOC | F.LAST), ['last', 'unknown_loc', 'delalloc']);
  assert.deepEqual(flagNames(F.ENCODED | F.DATA_ENCRYPTED | F.NOT_ALIGNED | F.DATA_INLINE | F.DATA_TAIL),
    ['encoded', 'encrypted', 'not_aligned', 'inline', 'tail_packed']);
  assert.deepEqual(flagNames(F.MERGED | F.SHARED), ['merged', 'shared']);
  assert.deepEqual(flagNames(0x10 | 0x4000 | 0x8000_0000 | F.SHARED), ['shared', '0x10', '0x4000', '0x80000000']);
});

test('networkReason names why an extent must go through the network, most specific first', () => {
  assert.match(networkReason(F.DATA_INLINE | F.NOT_ALIGNED | F.LAST), /inline/);
  assert.match(networkReason(F.DELALLOC | F.UNKNOWN), /delayed allocation/);
  assert.match(networkReason(F.ENCODED), /encoded/);
  assert.match(networkReason(F.DATA_ENCRYPTED), /encrypted/);
  assert.match(networkReason(F.NOT_ALIGNED), /not block-aligned/);
  assert.match(networkReason(F.SHARED), /shared/);
  assert.equal(networkReason(0), 'extent not directly usable');
  assert.equal(networkReason(0x10 | F.LAST), 'extent flags unknown to fused (0x10)');
  assert.equal(networkReason((0x8000_0000 | 0x4000 | F.SHARED) >>> 0), 'extent flags unknown to fused (0x80004000)');
  assert.match(networkReason(0x20 | F.DATA_INLINE), /inline/, 'a known reason comes first');
});
