// Extent-map figures for fusedmap --summary: extents, fragments, extent sizes and bytes per state, per file and total.
import type { ExtentState, MapExtent } from './extents.js';

export const GIB = 2 ** 30;

export interface MapSummary {
  files: number;
  size: number;
  /** Pieces of the map as handed out (every state). */
  extents: number;
  /** Runs of blocks on the device: extents with a device address, physically contiguous ones counted once (as
   *  filefrag counts). */
  fragments: number;
  /** Bytes with a device address (DATA, ZERO, and NETWORK pieces that carry one). */
  allocated: number;
  /** Of the extents with a device address. */
  largest: number;
  average: number;
  /** Fragments per GiB allocated: 1 for a file in one piece of a GiB or less is as good as it gets. */
  fragmentsPerGiB: number;
  bytes: Record<ExtentState, number>;
  /** Extents with a device address, for the average (not shown). */
  placed: number;
}

const placedOn = (e: MapExtent) => e.state === 'DATA' || e.state === 'ZERO' || (e.state === 'NETWORK' && e.physical > 0);

export function summarize(size: number, extents: readonly MapExtent[]): MapSummary {
  const bytes: Record<ExtentState, number> = { DATA: 0, ZERO: 0, HOLE: 0, NETWORK: 0 };
  let fragments = 0;
  let allocated = 0;
  let largest = 0;
  let placed = 0;
  let end = -1;
  for (const e of extents) {
    bytes[e.state] += e.length;
    if (!placedOn(e)) continue;
    placed++;
    allocated += e.length;
    largest = Math.max(largest, e.length);
    if (e.physical !== end) fragments++;
    end = e.physical + e.length;
  }
  return finish({ files: 1, size, extents: extents.length, fragments, allocated, largest, placed, bytes });
}

export function totalOf(list: readonly MapSummary[]): MapSummary {
  const bytes: Record<ExtentState, number> = { DATA: 0, ZERO: 0, HOLE: 0, NETWORK: 0 };
  const sum = (f: (s: MapSummary) => number) => list.reduce((a, s) => a + f(s), 0);
  for (const s of list) for (const k of Object.keys(bytes) as ExtentState[]) bytes[k] += s.bytes[k];
  return finish({
    files: sum((s) => s.files), size: sum((s) => s.size), extents: sum((s) => s.extents), fragments: sum((s) => s.fragments),
    allocated: sum((s) => s.allocated), largest: Math.max(0, ...list.map((s) => s.largest)), placed: sum((s) => s.placed), bytes,
  });
}

function finish(s: Omit<MapSummary, 'average' | 'fragmentsPerGiB'>): MapSummary {
  return {
    ...s,
    average: s.placed ? Math.round(s.allocated / s.placed) : 0,
    fragmentsPerGiB: s.allocated ? Math.round((s.fragments / (s.allocated / GIB)) * 100) / 100 : 0,
  };
}
