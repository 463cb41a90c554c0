// In-place overwrites (fusedcp --inplace): which ranges of an existing file's write map go to the device, and which
// through the network mount. Pure: no I/O.
import type { MapExtent } from '../volume/extents.js';

/** [start, end) of a file. */
export interface Span { start: number; end: number }

/** The ranges an in-place overwrite writes through the mount: the NETWORK extents of the write map (blocks shared
 *  with another file by a reflink, inline data, not aligned), widened to whole `align` blocks, since the device is
 *  written in whole aligned blocks and a block partly NETWORK must not be, and merged. Everything else (DATA, and
 *  ZERO or HOLE once allocated, and whatever lies past the map's end) may go to the device. */
export function networkSpans(extents: readonly MapExtent[], align: number): Span[] {
  const out: Span[] = [];
  for (const e of extents) {
    if (e.state !== 'NETWORK' || e.length === 0) continue;
    const start = Math.floor(e.logical / align) * align;
    const end = Math.ceil((e.logical + e.length) / align) * align;
    const prev = out[out.length - 1];
    if (prev && start <= prev.end) prev.end = Math.max(prev.end, end);
    else out.push({ start, end });
  }
  return out;
}

/** The first span that ends after `offset` (it may start after it), or undefined; spans sorted, disjoint. */
export function spanAfter(spans: readonly Span[], offset: number): Span | undefined {
  let lo = 0;
  let hi = spans.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (spans[mid]!.end <= offset) lo = mid + 1;
    else hi = mid;
  }
  return spans[lo];
}

/** Where [offset, ...) is routed: through the mount (`network`) or to the device, and up to where that holds. */
export function routeAt(spans: readonly Span[], offset: number): { network: boolean; end: number } {
  const s = spanAfter(spans, offset);
  if (!s) return { network: false, end: Infinity };
  return s.start <= offset ? { network: true, end: s.end } : { network: false, end: s.start };
}

/** The map with the file's last block whole: a DATA extent that ends at the file's size inside a block is extended
 *  to that block's end. The block is the file's own (FIEMAP reports it whole; the map is clipped at the size), and
 *  the device takes whole sectors, so the old file's partial last block can then be written directly (zeros past
 *  the end of the data, which the size hides). */
export function wholeLastBlock(extents: readonly MapExtent[], size: number, blockSize: number): MapExtent[] {
  const last = extents[extents.length - 1];
  const end = Math.ceil(size / blockSize) * blockSize;
  if (!last || last.state !== 'DATA' || last.logical + last.length !== size || end === size) return [...extents];
  return [...extents.slice(0, -1), { ...last, length: end - last.logical }];
}

/** How far from 0 the map is DATA or NETWORK without a break: the part of the file an in-place overwrite can write
 *  (on the device, or through the mount) without asking for blocks first. */
export function coveredEnd(extents: readonly MapExtent[]): number {
  let end = 0;
  for (const e of extents) {
    if (e.logical !== end || (e.state !== 'DATA' && e.state !== 'NETWORK')) break;
    end = e.logical + e.length;
  }
  return end;
}
