// Allocation for direct writes: make a file's range written, zeroed blocks it owns alone, through the file system.
import { fstat as fstatCb, ftruncate as ftruncateCb, write as writeCb } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { promisify } from 'node:util';
import { fadvise, fallocate, fsync } from '../native/index.js';

const fstat = promisify(fstatCb);
const ftruncate = promisify(ftruncateCb);
const write = promisify(writeCb);

export interface AllocatorStats {
  method: 'write-zeroes' | 'reflink' | 'zero-fill';
  reserveBytes: number;
  reserveTarget: number;
  allocatedBytes: number;
  zeroFillBytes: number;
  zeroFillMs: number;
  cloneMs: number;
}

export interface Allocator {
  /** Make [offset, offset+length) of the open file `fd` (O_RDWR, block-aligned range) written, zeroed blocks the
   *  file owns alone. Ranges already written (DATA) may be left as they are. Throws an Error with code 'ENOSPC'
   *  after giving back what this call allocated. */
  allocate(fd: number, offset: number, length: number): Promise<void>;
  stats(): AllocatorStats;
  /** Stop background refills; resolves when idle. */
  close(): Promise<void>;
}

const ZERO_CHUNK = 8 * 1024 * 1024;
const ZEROS = Buffer.alloc(ZERO_CHUNK);

/** Zero-fill: allocate, then write zeros through the file system (the file's own descriptor: a second open would
 *  break the server's write lease), sync, and drop the pages written. */
class ZeroFill implements Allocator {
  private readonly totals = { allocatedBytes: 0, zeroFillBytes: 0, zeroFillMs: 0 };

  async allocate(fd: number, offset: number, length: number): Promise<void> {
    const t0 = performance.now();
    const sizeBefore = (await fstat(fd)).size;
    try {
      await fallocate(fd, {}, offset, length);
      for (let pos = offset; pos < offset + length; ) {
        const n = Math.min(ZERO_CHUNK, offset + length - pos);
        const { bytesWritten } = await write(fd, ZEROS, 0, n, pos);
        pos += bytesWritten;
      }
      await fsync(fd);
      await fadvise(fd, offset, length, 'dontneed');
    } catch (err) {
      // Give back what this call added past the old end (blocks inside it were the file's already).
      if ((await fstat(fd)).size > sizeBefore) await ftruncate(fd, sizeBefore).catch(() => {});
      throw err;
    }
    this.totals.allocatedBytes += length;
    this.totals.zeroFillBytes += length;
    this.totals.zeroFillMs += performance.now() - t0;
  }

  stats(): AllocatorStats {
    return { method: 'zero-fill', reserveBytes: 0, reserveTarget: 0, cloneMs: 0, ...this.totals };
  }

  async close(): Promise<void> {}
}

export async function createAllocator(
  _volume: { dir: string; identity: { fstype: string; blockSize: number } },
  _opts: { reserveBytes: number; log: (line: string) => void },
): Promise<Allocator> {
  return new ZeroFill();
}
