// Aligned I/O buffers shared by the reader and the writer: allocated once and reused (external memory is freed only
// after a GC), and handed from one to the other without copying (a chunk read is written from the same buffer).
import { alignedBuffer } from '../native/index.js';

/** Bytes of file data one buffer carries (the largest request). */
export const CHUNK = 4 * 1024 * 1024;
/** Room for an unaligned device read of CHUNK bytes (aligned down at the start, up at the end). */
const BUFFER_BYTES = CHUNK + 2 * 4096;
/** Buffers kept for reuse at most; more are left to the GC. */
const KEEP = 64;

const pool: Buffer[] = [];

export function takeBuffer(): Buffer {
  return pool.pop() ?? alignedBuffer(BUFFER_BYTES);
}

export function giveBuffer(buf: Buffer): void {
  if (pool.length < KEEP) pool.push(buf);
}
