// Turns raw FIEMAP extents into the extent map handed to clients, and checks and cuts such maps.

export const FIEMAP_FLAGS = {
  LAST: 0x1,
  UNKNOWN: 0x2,
  DELALLOC: 0x4,
  ENCODED: 0x8,
  DATA_ENCRYPTED: 0x80,
  NOT_ALIGNED: 0x100,
  DATA_INLINE: 0x200,
  DATA_TAIL: 0x400,
  UNWRITTEN: 0x800,
  MERGED: 0x1000,
  SHARED: 0x2000,
} as const;

export type ExtentState = 'DATA' | 'ZERO' | 'HOLE' | 'NETWORK';
export interface RawExtent { logical: number; physical: number; length: number; flags: number }
export interface MapExtent { logical: number; physical: number; length: number; state: ExtentState; flags: number }
export type Purpose = 'read' | 'write';

const STATES: readonly ExtentState[] = ['DATA', 'ZERO', 'HOLE', 'NETWORK'];
/** Device I/O is done in whole sectors; a DATA piece must start on one, in the file and on the device. */
const SECTOR = 512;

// Extents whose bytes are not plainly at `physical` on the device, or whose address is not known yet.
const NOT_ON_DEVICE =
  FIEMAP_FLAGS.UNKNOWN |
  FIEMAP_FLAGS.DELALLOC |
  FIEMAP_FLAGS.ENCODED |
  FIEMAP_FLAGS.DATA_ENCRYPTED |
  FIEMAP_FLAGS.NOT_ALIGNED |
  FIEMAP_FLAGS.DATA_INLINE |
  FIEMAP_FLAGS.DATA_TAIL;

/** Every flag this code knows the meaning of. A kernel newer than this code may report others. */
const KNOWN_FLAGS = Object.values(FIEMAP_FLAGS).reduce((all: number, bit) => (all | bit) >>> 0, 0);

/** Flag bits outside the known set (0 if none). */
function unknownFlags(flags: number): number {
  return (flags & ~KNOWN_FLAGS) >>> 0;
}

/** State of one FIEMAP extent: UNKNOWN, DELALLOC, ENCODED, DATA_ENCRYPTED, NOT_ALIGNED, DATA_INLINE, DATA_TAIL
 *  -> NETWORK; a flag bit outside the known set -> NETWORK (a new flag may mean the bytes are not plainly on
 *  the device); SHARED -> NETWORK for 'write', fine for 'read'; UNWRITTEN -> ZERO; else DATA. */
export function classifyExtent(flags: number, purpose: Purpose): ExtentState {
  if (flags & NOT_ON_DEVICE) return 'NETWORK';
  if (unknownFlags(flags) !== 0) return 'NETWORK';
  // Writing into a shared (reflinked) block would change the other file too; only the file system can CoW.
  if (purpose === 'write' && flags & FIEMAP_FLAGS.SHARED) return 'NETWORK';
  if (flags & FIEMAP_FLAGS.UNWRITTEN) return 'ZERO';
  return 'DATA';
}

/** Why an extent with these flags must be read through the network mount, in words for people. */
export function networkReason(flags: number): string {
  if (flags & FIEMAP_FLAGS.DATA_INLINE) return 'data is inline in the inode, not in data blocks';
  if (flags & FIEMAP_FLAGS.DATA_TAIL) return 'data is packed in a shared tail block';
  if (flags & FIEMAP_FLAGS.DATA_ENCRYPTED) return 'data is encrypted';
  if (flags & FIEMAP_FLAGS.ENCODED) return 'data is encoded (compressed)';
  if (flags & (FIEMAP_FLAGS.DELALLOC | FIEMAP_FLAGS.UNKNOWN)) return 'blocks not allocated yet (delayed allocation)';
  if (flags & FIEMAP_FLAGS.NOT_ALIGNED) return 'data is not block-aligned on the device';
  const unknown = unknownFlags(flags);
  if (unknown !== 0) return `extent flags unknown to fused (0x${unknown.toString(16)})`;
  if (flags & FIEMAP_FLAGS.SHARED) return 'blocks are shared with another file';
  return 'extent not directly usable';
}

/** One raw extent clipped to the file and classified, ready for the sweep in buildMap. */
interface Piece { start: number; end: number; physical: number; state: ExtentState; flags: number }

/** The map handed to clients: sort by logical; drop parts at/after fileSize (clip: XFS reports prealloc past
 *  EOF; the last extent is rounded up to the block size — clip it to fileSize); classify; a DATA extent whose
 *  logical or physical offset is not a multiple of 512 becomes NETWORK; merge neighbours that are logically AND
 *  physically contiguous with the same state (flags: OR, without LAST); overlapping extents (should not happen)
 *  -> the overlapped range becomes NETWORK; fill gaps (and a trailing gap up to fileSize) with HOLE extents
 *  (physical 0, flags 0). Result tiles [0, fileSize) exactly, in order; [] for fileSize 0. Adjacent HOLE/ZERO/
 *  NETWORK pieces merge only when the state is equal and (for ZERO/NETWORK with physical) physically contiguous;
 *  HOLE neighbours always merge. LAST is dropped from every piece: the map itself says where the file ends. */
export function buildMap(raw: RawExtent[], fileSize: number, purpose: Purpose): MapExtent[] {
  if (!isCount(fileSize)) throw new RangeError(`file size ${fileSize} is not a non-negative safe integer`);
  // What FIEMAP gives: extents in order, none overlapping; then the map is built in one walk, without a piece per
  // extent. Anything else takes the general way below.
  const walked = walkRaw(raw, fileSize, purpose);
  if (walked) return walked;
  const pieces: Piece[] = [];
  for (let i = 0; i < raw.length; i++) {
    const e = raw[i]!;
    checkRaw(e, i);
    if (e.length === 0 || e.logical >= fileSize) continue;
    const end = Math.min(e.logical + e.length, fileSize);
    let state = classifyExtent(e.flags, purpose);
    if (state === 'DATA' && (e.logical % SECTOR !== 0 || e.physical % SECTOR !== 0)) state = 'NETWORK';
    pieces.push({ start: e.logical, end, physical: e.physical, state, flags: (e.flags & ~FIEMAP_FLAGS.LAST) >>> 0 });
  }
  // FIEMAP reports extents in logical order: sort only when they are not (the check costs less than the sort).
  if (!inOrder(pieces)) pieces.sort((a, b) => a.start - b.start || a.end - b.end);
  // What FIEMAP gives: pieces in order, none overlapping. Then each piece is one range of the map (the gaps are
  // holes), so one linear walk builds it; the sweep below is for the overlaps no file system should report.
  if (disjoint(pieces)) return walkMap(pieces, fileSize);

  // Sweep over every boundary: each elementary range is covered by no piece (HOLE), by one (that piece,
  // cut), or by several (an overlap, which no file system should report: trust none of them -> NETWORK).
  const bounds = new Set<number>([0, fileSize]);
  for (const p of pieces) bounds.add(p.start).add(p.end);
  const points = [...bounds].sort((a, b) => a - b);
  const out: MapExtent[] = [];
  let active: Piece[] = [];
  let next = 0;
  for (let k = 0; k + 1 < points.length; k++) {
    const from = points[k]!;
    const to = points[k + 1]!;
    active = active.filter((p) => p.end > from);
    while (next < pieces.length && pieces[next]!.start <= from) {
      const p = pieces[next++]!;
      if (p.end > from) active.push(p);
    }
    let piece: MapExtent;
    if (active.length === 0) {
      piece = { logical: from, physical: 0, length: to - from, state: 'HOLE', flags: 0 };
    } else if (active.length === 1) {
      const p = active[0]!;
      piece = { logical: from, physical: shiftPhysical(p.state, p.physical, from - p.start), length: to - from,
        state: p.state, flags: p.flags };
    } else {
      const flags = active.reduce((f, p) => (f | p.flags) >>> 0, 0);
      piece = { logical: from, physical: 0, length: to - from, state: 'NETWORK', flags };
    }
    appendMerged(out, piece);
  }
  return out;
}

/** Check one raw extent's fields (RangeError naming extent i). */
function checkRaw(e: RawExtent, i: number): void {
  if (!isCount(e.logical) || !isCount(e.physical) || !isCount(e.length) || !isFlags(e.flags)) {
    throw new RangeError(`raw extent ${i} has a field that is not a non-negative safe integer`);
  }
}

/** buildMap for raw extents that are in order and disjoint (each starts at or after the end of the one before):
 *  the map, or undefined when they are not. */
function walkRaw(raw: readonly RawExtent[], fileSize: number, purpose: Purpose): MapExtent[] | undefined {
  const out: MapExtent[] = [];
  let at = 0;
  for (let i = 0; i < raw.length; i++) {
    const e = raw[i]!;
    checkRaw(e, i);
    if (e.length === 0 || e.logical >= fileSize) continue;
    if (e.logical < at) return undefined;
    const end = Math.min(e.logical + e.length, fileSize);
    let state = classifyExtent(e.flags, purpose);
    if (state === 'DATA' && (e.logical % SECTOR !== 0 || e.physical % SECTOR !== 0)) state = 'NETWORK';
    if (e.logical > at) appendMerged(out, { logical: at, physical: 0, length: e.logical - at, state: 'HOLE', flags: 0 });
    appendMerged(out, { logical: e.logical, physical: e.physical, length: end - e.logical, state, flags: (e.flags & ~FIEMAP_FLAGS.LAST) >>> 0 });
    at = end;
  }
  if (fileSize > at) appendMerged(out, { logical: at, physical: 0, length: fileSize - at, state: 'HOLE', flags: 0 });
  return out;
}

function inOrder(pieces: readonly Piece[]): boolean {
  for (let i = 1; i < pieces.length; i++) {
    const a = pieces[i - 1]!;
    const b = pieces[i]!;
    if (a.start > b.start || (a.start === b.start && a.end > b.end)) return false;
  }
  return true;
}

function disjoint(pieces: readonly Piece[]): boolean {
  for (let i = 1; i < pieces.length; i++) if (pieces[i]!.start < pieces[i - 1]!.end) return false;
  return true;
}

/** buildMap for sorted, disjoint pieces: each piece as it is, HOLE in every gap, merged as the sweep merges. */
function walkMap(pieces: readonly Piece[], fileSize: number): MapExtent[] {
  const out: MapExtent[] = [];
  let at = 0;
  for (const p of pieces) {
    if (p.start > at) appendMerged(out, { logical: at, physical: 0, length: p.start - at, state: 'HOLE', flags: 0 });
    appendMerged(out, { logical: p.start, physical: p.physical, length: p.end - p.start, state: p.state, flags: p.flags });
    at = p.end;
  }
  if (fileSize > at) appendMerged(out, { logical: at, physical: 0, length: fileSize - at, state: 'HOLE', flags: 0 });
  return out;
}

/** Append to a map under construction, merging with the previous piece where the rules allow. */
function appendMerged(out: MapExtent[], piece: MapExtent): void {
  const prev = out[out.length - 1];
  if (prev && prev.state === piece.state && prev.logical + prev.length === piece.logical && contiguous(prev, piece)) {
    prev.length += piece.length;
    prev.flags = (prev.flags | piece.flags) >>> 0;
    return;
  }
  out.push(piece);
}

function contiguous(a: MapExtent, b: MapExtent): boolean {
  if (a.state === 'HOLE') return true;
  // NETWORK pieces with no address (overlaps) have nothing to keep apart.
  if (a.state === 'NETWORK' && a.physical === 0 && b.physical === 0) return true;
  return a.physical + a.length === b.physical;
}

/** The device address `delta` bytes into a piece; HOLE and address-less NETWORK pieces stay at 0. */
function shiftPhysical(state: ExtentState, physical: number, delta: number): number {
  if (state === 'HOLE' || (state === 'NETWORK' && physical === 0)) return physical;
  return physical + delta;
}

/** Check that a map received from the wire tiles [0,size) exactly, in order, no overlap, no zero-length piece,
 *  only known states, non-negative safe integers; return a string describing the first problem or null. */
export function validateMap(map: readonly MapExtent[], size: number): string | null {
  if (!isCount(size)) return `size ${String(size)} is not a non-negative safe integer`;
  if (!Array.isArray(map)) return 'map is not a list';
  let at = 0;
  for (let i = 0; i < map.length; i++) {
    const e = map[i];
    if (typeof e !== 'object' || e === null) return `extent ${i} is not an object`;
    for (const field of ['logical', 'physical', 'length'] as const) {
      if (!isCount(e[field])) return `extent ${i}: ${field} ${String(e[field])} is not a non-negative safe integer`;
    }
    if (!isFlags(e.flags)) return `extent ${i}: flags ${String(e.flags)} is not a 32-bit unsigned integer`;
    if (!STATES.includes(e.state)) return `extent ${i}: unknown state ${JSON.stringify(e.state)}`;
    if (e.length === 0) return `extent ${i}: zero length`;
    if (e.logical !== at) {
      return e.logical < at
        ? `extent ${i}: starts at ${e.logical}, overlapping the previous extent which ends at ${at}`
        : `extent ${i}: starts at ${e.logical}, leaving a gap after ${at}`;
    }
    if (!Number.isSafeInteger(e.logical + e.length) || !Number.isSafeInteger(e.physical + e.length)) {
      return `extent ${i}: end is not a safe integer`;
    }
    if (e.state === 'HOLE' && e.physical !== 0) return `extent ${i}: HOLE with physical ${e.physical}`;
    at = e.logical + e.length;
    if (at > size) return `extent ${i}: ends at ${at}, past the file size ${size}`;
  }
  if (at !== size) return `map covers ${at} of ${size} bytes`;
  return null;
}

/** The pieces of a map that cover [offset, offset+length), cut at the edges (physical adjusted for DATA/ZERO,
 *  and for NETWORK pieces that carry an address). Parts of the range the map does not cover are left out. */
export function sliceMap(map: readonly MapExtent[], offset: number, length: number): MapExtent[] {
  if (!isCount(offset) || !isCount(length) || !Number.isSafeInteger(offset + length)) {
    throw new RangeError(`range ${offset}+${length} is not a pair of non-negative safe integers`);
  }
  const end = offset + length;
  const out: MapExtent[] = [];
  if (length === 0) return out;
  // Maps of fragmented files run to many thousands of pieces: find the first one by binary search.
  let lo = 0;
  let hi = map.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    const e = map[mid]!;
    if (e.logical + e.length <= offset) lo = mid + 1;
    else hi = mid;
  }
  for (let i = lo; i < map.length; i++) {
    const e = map[i]!;
    if (e.logical >= end) break;
    const from = Math.max(e.logical, offset);
    const to = Math.min(e.logical + e.length, end);
    if (to <= from) continue;
    out.push({ logical: from, physical: shiftPhysical(e.state, e.physical, from - e.logical), length: to - from,
      state: e.state, flags: e.flags });
  }
  return out;
}

/** Bytes per state. */
export function mapTotals(map: readonly MapExtent[]): Record<ExtentState, number> {
  const totals: Record<ExtentState, number> = { DATA: 0, ZERO: 0, HOLE: 0, NETWORK: 0 };
  for (const e of map) totals[e.state] += e.length;
  return totals;
}

// filefrag -v's names and order (e2fsprogs misc/filefrag.c).
const FLAG_NAMES: ReadonlyArray<readonly [number, string]> = [
  [FIEMAP_FLAGS.LAST, 'last'],
  [FIEMAP_FLAGS.UNKNOWN, 'unknown_loc'],
  [FIEMAP_FLAGS.DELALLOC, 'delalloc'],
  [FIEMAP_FLAGS.ENCODED, 'encoded'],
  [FIEMAP_FLAGS.DATA_ENCRYPTED, 'encrypted'],
  [FIEMAP_FLAGS.NOT_ALIGNED, 'not_aligned'],
  [FIEMAP_FLAGS.DATA_INLINE, 'inline'],
  [FIEMAP_FLAGS.DATA_TAIL, 'tail_packed'],
  [FIEMAP_FLAGS.UNWRITTEN, 'unwritten'],
  [FIEMAP_FLAGS.MERGED, 'merged'],
  [FIEMAP_FLAGS.SHARED, 'shared'],
];

/** Flag names for display, lower case and in the order filefrag -v prints them (e.g. ['last','unwritten']);
 *  unknown bits as 0x.... */
export function flagNames(flags: number): string[] {
  const names: string[] = [];
  let rest = flags >>> 0;
  for (const [bit, name] of FLAG_NAMES) {
    if (rest & bit) {
      names.push(name);
      rest = (rest & ~bit) >>> 0;
    }
  }
  for (let bit = 0; bit < 32; bit++) {
    const mask = 2 ** bit;
    if (Math.floor(rest / mask) % 2 === 1) names.push(`0x${mask.toString(16)}`);
  }
  return names;
}

function isFlags(n: unknown): n is number {
  return isCount(n) && n <= 0xffffffff;
}

function isCount(n: unknown): n is number {
  return typeof n === 'number' && Number.isSafeInteger(n) && n >= 0;
}
