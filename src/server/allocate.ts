// Makes ranges of a file written, zeroed blocks the file owns alone before clients write them on the device
// (DESIGN.md safety rule 2): FALLOC_FL_WRITE_ZEROES where the device has it, on XFS clones from a reserve file of
// written zeros, on ext4 swaps an empty file for a pre-zeroed pool file (pool.ts) and zero-fills the rest, elsewhere
// fallocate and O_DIRECT zeros.
import * as fs from 'node:fs';
import { promisify } from 'node:util';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { errnoCode, errorMessage } from '../errors.js';
import { alignedBuffer, cloneRange, fallocate, fiemap, fsync, openDirBeneath, pwrite, setDirect, type FiemapExtent } from '../native/index.js';
import { FIEMAP_FLAGS } from '../volume/extents.js';
import { POOL_PREFIX, pickPoolFile, poolSizes, swapIntoPlace, type PoolFile, type SwapTarget } from './pool.js';

export interface AllocatorStats { method: 'write-zeroes' | 'reflink' | 'pool' | 'zero-fill'; reserveBytes: number;
  reserveTarget: number; allocatedBytes: number; zeroFillBytes: number; zeroFillMs: number; cloneMs: number;
  /** Pool files swapped into place (ext4). */
  swaps: number }
export interface Allocator {
  /** Make [offset, offset+length) of the open file `fd` (O_RDWR, block-aligned range) written, zeroed blocks the
   *  file owns alone. Ranges already written (DATA) may be left as they are. Throws an Error with code 'ENOSPC'
   *  after giving back what this call allocated. Never opens the file again, so a kernel lease on fd holds; while
   *  it writes zeros, fd's open file description has O_DIRECT set (restored after). */
  allocate(fd: number, offset: number, length: number): Promise<void>;
  /** Before the first allocation of an empty file: put a pre-zeroed pool file at least `need` bytes long in its
   *  place (pool.ts swapIntoPlace), if the pool has one. True when swapped: the target's install() has moved its
   *  lease to the new descriptor, which holds written zeros up to the pool file's size. */
  swapIn(target: SwapTarget, need: number): Promise<boolean>;
  /** Whether (dev, ino) is one of the server's own files (the pool). */
  owns(dev: bigint, ino: bigint): boolean;
  stats(): AllocatorStats;
  /** Bytes the next allocations can have without zeros written for them (cloned from the reserve): 0 where each
   *  allocation writes its zeros (or the device does), which is worth asking in slices that overlap the writes. */
  readyBytes(): number;
  /** A client is writing the volume's device directly (a write map is out): background work (the reserve's
   *  refill) keeps off the device until every returned function has been called (each is idempotent). */
  writing(): () => void;
  /** Stop background refills; resolves when idle. */
  close(): Promise<void>;
}

/** The hidden directory in the volume that holds the reserve; the server refuses client paths under it. */
export const RESERVE_DIR = '.fused';
export const RESERVE_FILE = 'reserve';

/** Zero writes through the file system: large requests, a few in flight (DESIGN.md: 4 MiB x 2-4 match dd). */
const FILL_CHUNK = 8 * 1024 * 1024;
const FILL_DEPTH = 3;
/** Reserve refills: small requests, one at a time, so a running copy keeps the device. */
const REFILL_CHUNK = 4 * 1024 * 1024;
/** After a refill write, rest at least as long as it took (at most half the device's time) and this long. */
const REFILL_REST_MS = 5;
/** While an allocation runs, the refill waits in steps of this long. */
const REFILL_YIELD_MS = 50;
/** While clients write the device directly, the refill writes one chunk this often at the most (a write map held
 *  for hours, by a slow stream, still sees the reserve refilled, at REFILL_CHUNK per this many ms). */
const REFILL_WRITERS_GAP_MS = 1000;

const openAsync = promisify(fs.open);
const closeAsync = promisify(fs.close);
const fstatAsync = promisify(fs.fstat);
const ftruncateAsync = promisify(fs.ftruncate);
const statfsAsync = promisify(fs.statfs);

/** A pool file and its identity (a client may not map it). */
interface PoolSlot extends PoolFile { dev: bigint; ino: bigint }

export interface Range { offset: number; length: number }
/** A range that needs blocks; `hole` when it had none (given back on failure), else it was unwritten. */
export interface NeedRange extends Range { hole: boolean }

function append(out: NeedRange[], r: NeedRange): void {
  const prev = out[out.length - 1];
  if (prev && prev.hole === r.hole && prev.offset + prev.length === r.offset) prev.length += r.length;
  else if (r.length > 0) out.push({ ...r });
}

/** The parts of [offset, offset+length) that must be allocated, from FIEMAP extents of the file (any order):
 *  gaps (holes), UNWRITTEN extents, and delalloc reservations past EOF (XFS speculative preallocation, no
 *  blocks yet). Written extents are the file's own data and are left alone, shared or not. */
export function rangesToAllocate(extents: readonly FiemapExtent[], fileSize: number, offset: number,
  length: number): NeedRange[] {
  const end = offset + length;
  const sorted = [...extents].filter((e) => e.length > 0).sort((a, b) => a.logical - b.logical);
  const out: NeedRange[] = [];
  let at = offset;
  for (const e of sorted) {
    const from = Math.max(e.logical, at);
    const to = Math.min(e.logical + e.length, end);
    if (to <= from) continue;
    if (from > at) append(out, { offset: at, length: from - at, hole: true });
    const placeholder = (e.flags & (FIEMAP_FLAGS.DELALLOC | FIEMAP_FLAGS.UNKNOWN)) !== 0 && e.logical >= fileSize;
    if (placeholder) append(out, { offset: from, length: to - from, hole: true });
    else if ((e.flags & FIEMAP_FLAGS.UNWRITTEN) !== 0) append(out, { offset: from, length: to - from, hole: false });
    at = to;
    if (at >= end) break;
  }
  if (at < end) append(out, { offset: at, length: end - at, hole: true });
  return out;
}

/** Split needed ranges in file order: the first `available` bytes come from the reserve, the rest is zero-filled. */
export function splitByReserve(needs: readonly NeedRange[], available: number): { clone: NeedRange[]; fill: NeedRange[] } {
  const clone: NeedRange[] = [];
  const fill: NeedRange[] = [];
  let left = Math.max(0, available);
  for (const r of needs) {
    const take = Math.min(left, r.length);
    if (take > 0) clone.push({ offset: r.offset, length: take, hole: r.hole });
    if (take < r.length) fill.push({ offset: r.offset + take, length: r.length - take, hole: r.hole });
    left -= take;
  }
  return { clone, fill };
}

/** Why [offset, offset+length) is not covered by written blocks the file owns alone, or null when it is. */
export function notOwnedWritten(extents: readonly FiemapExtent[], offset: number, length: number): string | null {
  const end = offset + length;
  const sorted = [...extents].filter((e) => e.length > 0).sort((a, b) => a.logical - b.logical);
  let at = offset;
  for (const e of sorted) {
    if (e.logical + e.length <= at) continue;
    if (e.logical >= end) break;
    if (e.logical > at) return `no blocks at ${at}`;
    const bad = [['UNWRITTEN', FIEMAP_FLAGS.UNWRITTEN], ['SHARED', FIEMAP_FLAGS.SHARED],
      ['DELALLOC', FIEMAP_FLAGS.DELALLOC], ['UNKNOWN', FIEMAP_FLAGS.UNKNOWN]] as const;
    for (const [name, flag] of bad) if ((e.flags & flag) !== 0) return `${name} extent at ${e.logical}`;
    at = e.logical + e.length;
    if (at >= end) return null;
  }
  return at >= end ? null : `no blocks at ${at}`;
}

/** [offset, offset+length) cut into pieces of at most `chunk` bytes. */
export function chunksOf(ranges: readonly Range[], chunk: number): Range[] {
  const out: Range[] = [];
  for (const r of ranges) {
    for (let at = r.offset; at < r.offset + r.length; at += chunk) {
      out.push({ offset: at, length: Math.min(chunk, r.offset + r.length - at) });
    }
  }
  return out;
}

function total(ranges: readonly Range[]): number {
  return ranges.reduce((n, r) => n + r.length, 0);
}

function codedError(code: string, message: string): Error {
  return Object.assign(new Error(`${code}: ${message}`), { code });
}

/** Serialises the operations that touch the reserve's end (refill appends, allocations take). */
class Mutex {
  private tail: Promise<void> = Promise.resolve();
  run<T>(fn: () => Promise<T>): Promise<T> {
    const result = this.tail.then(fn);
    this.tail = result.then(() => {}, () => {});
    return result;
  }
}

/** Write zeros over ranges of an O_DIRECT fd, up to `depth` requests in flight, from one shared zero buffer. */
async function writeZeros(fd: number, ranges: readonly Range[], zeros: Buffer, depth: number): Promise<void> {
  const pieces = chunksOf(ranges, zeros.length);
  let next = 0;
  let failed: unknown;
  const worker = async (): Promise<void> => {
    while (failed === undefined && next < pieces.length) {
      const p = pieces[next++]!;
      try {
        let done = 0;
        while (done < p.length) {
          const n = await pwrite(fd, zeros, 0, p.length - done, p.offset + done);
          if (n <= 0) throw codedError('EIO', `short write of zeros at ${p.offset + done}`);
          done += n;
        }
      } catch (err) {
        failed ??= err;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(depth, pieces.length) }, worker));
  if (failed !== undefined) throw failed;
}

const SECTOR_ALIGN = 4096;

class VolumeAllocator implements Allocator {
  private readonly reserveLock = new Mutex();
  private reserveFd = -1;
  private reserveSize = 0;
  private refilling: Promise<void> | null = null;
  /** The refill hit ENOSPC or the volume is nearly full: it waits for the next allocation to try again. */
  private refillStalled = false;
  private closed = false;
  private busy = 0;
  /** Write maps out on the volume (clients writing its device directly). */
  private writers = 0;
  private zeroBuffer: Buffer | undefined;
  private readonly counters = { allocatedBytes: 0, zeroFillBytes: 0, zeroFillMs: 0, cloneMs: 0, swaps: 0 };
  /** ext4: the pool of pre-zeroed files, in the hidden directory (path, and an O_PATH descriptor of it). */
  private readonly pool: PoolSlot[] = [];
  private hidden = { path: '', fd: -1, dev: 0 };

  constructor(
    private readonly method: AllocatorStats['method'],
    private readonly dir: string,
    private readonly blockSize: number,
    private readonly reserveTarget: number,
    private readonly log: (line: string) => void,
  ) {}

  /** Open (creating) the reserve, keep its prefix of written blocks it owns alone (a crash may leave a tail that
   *  is not) up to the target, and start filling it. */
  async openReserve(path: string, dev: number): Promise<void> {
    const { fd, size } = await this.openKept(path, dev, this.reserveTarget);
    this.reserveFd = fd;
    this.reserveSize = size;
    this.kickRefill();
  }

  /** Open (creating) a file of zeros of the server's, O_DIRECT, keeping its prefix of written blocks it owns alone
   *  up to `max` bytes. */
  private async openKept(path: string, dev: number, max: number): Promise<{ fd: number; size: number; ino: bigint }> {
    const { O_RDWR, O_CREAT, O_NOFOLLOW, O_DIRECT } = fs.constants;
    const fd = await openAsync(path, O_RDWR | O_CREAT | O_NOFOLLOW | O_DIRECT, 0o600);
    try {
      const st = await fstatAsync(fd);
      if (!st.isFile() || st.dev !== dev || st.nlink !== 1 || st.uid !== process.getuid?.()) {
        throw codedError('EPERM', `${path} is not a regular file of this volume owned by the server alone`);
      }
      if ((st.mode & 0o777) !== 0o600) fs.fchmodSync(fd, 0o600);
      let good = 0;
      for (const e of (await fiemap(fd)).sort((a, b) => a.logical - b.logical)) {
        if (e.logical !== good || notOwnedWritten([e], e.logical, e.length) !== null) break;
        good = e.logical + e.length;
      }
      good = Math.min(good, st.size);
      good -= good % this.blockSize;
      good = Math.min(good, max);  // a smaller --reserve than last time gives the rest back
      if (good !== st.size) {
        this.log(`allocator: reserve ${path}: keeping ${good} of ${st.size} bytes`);
        await ftruncateAsync(fd, good);
      }
      return { fd, size: good, ino: BigInt(st.ino) };
    } catch (err) {
      await closeAsync(fd).catch(() => {});
      throw err;
    }
  }

  /** ext4: open the pool's files (keeping what an earlier run filled), remove pool files no longer planned, and
   *  start filling. */
  async openPool(hidden: { path: string; dev: number }, sizes: readonly number[]): Promise<void> {
    this.hidden = { ...hidden, fd: openDirBeneath(hidden.path, '.') };
    for (const name of await fs.promises.readdir(hidden.path)) {
      const n = name.startsWith(POOL_PREFIX) ? Number(name.slice(POOL_PREFIX.length)) : NaN;
      if (Number.isInteger(n) && n >= sizes.length) await fs.promises.rm(join(hidden.path, name), { force: true });
    }
    for (const [i, size] of sizes.entries()) {
      const name = `${POOL_PREFIX}${i}`;
      const path = join(hidden.path, name);
      const st = await fs.promises.lstat(path).catch(() => undefined);
      if (st && (st.uid !== process.getuid?.() || !st.isFile() || st.nlink !== 1)) {
        // A file swapped out of a client's name just before a crash (empty, the client's) is removed; anything
        // else left by a swap that went wrong is not the server's to remove: that pool file is done without.
        if (st.isFile() && st.size === 0) await fs.promises.rm(path, { force: true });
        else {
          this.log(`allocator: ${path} is not the server's: the pool goes on without it`);
          continue;
        }
      }
      const kept = await this.openKept(path, hidden.dev, size);
      if (kept.size === size) await fsync(kept.fd);
      this.pool.push({ name, size, filled: kept.size, ready: kept.size === size, fd: kept.fd, dev: BigInt(hidden.dev), ino: kept.ino });
    }
    this.kickRefill();
  }

  /** The pool file slot to fill next (made anew where a swap took its file), or undefined when all are full. */
  private async poolToFill(): Promise<PoolSlot | undefined> {
    for (const slot of this.pool) {
      if (slot.ready || slot.size === 0) continue;
      if (slot.fd < 0) {
        const { O_RDWR, O_CREAT, O_EXCL, O_NOFOLLOW, O_DIRECT } = fs.constants;
        try {
          slot.fd = await openAsync(join(this.hidden.path, slot.name), O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_DIRECT, 0o600);
        } catch (err) {
          // Only an undone swap that lost a race leaves something else under the name: that slot stays empty.
          this.log(`allocator: pool file ${slot.name} cannot be made (${errorMessage(err)}): the pool goes on without it`);
          slot.size = 0;
          continue;
        }
        const st = await fstatAsync(slot.fd, { bigint: true });
        slot.dev = st.dev;
        slot.ino = st.ino;
        slot.filled = 0;
      }
      return slot;
    }
    return undefined;
  }

  /** Bytes of zeros held ready for allocations (reserve or pool), and the target. */
  private held(): { bytes: number; target: number } {
    if (this.method !== 'pool') return { bytes: this.reserveSize, target: this.reserveTarget };
    return { bytes: this.pool.reduce((n, f) => n + (f.fd >= 0 ? f.filled : 0), 0), target: this.pool.reduce((n, f) => n + f.size, 0) };
  }

  readyBytes(): number {
    return this.method === 'reflink' && this.reserveFd >= 0 ? this.reserveSize : 0;
  }

  owns(dev: bigint, ino: bigint): boolean {
    return this.pool.some((f) => f.fd >= 0 && f.dev === dev && f.ino === ino);
  }

  async swapIn(target: SwapTarget, need: number): Promise<boolean> {
    if (this.method !== 'pool' || this.closed) return false;
    this.busy++;
    try {
      return await this.reserveLock.run(async () => {
        const slot = pickPoolFile(this.pool, need);
        if (!slot) return false;
        const fd = slot.fd;
        const out = swapIntoPlace(target, { dir: this.hidden.path, dirFd: this.hidden.fd, name: slot.name, fd }, this.log);
        if (out.swapped) {
          // The descriptor is the lease table's now; the slot is made anew and filled again.
          this.counters.swaps++;
          this.counters.allocatedBytes += slot.size;
          slot.fd = -1;
          // The exchange on disk before any client writes into those blocks: after a crash, a pool name must never
          // hold a file a client has written (it would be handed out again as zeros).
          await fsync(fd);
        } else {
          this.log(`allocator: no swap from ${slot.name}: ${out.reason}`);
          if (!('discard' in out)) return false;
          // It may have been seen under the client's name: never handed out again.
          await closeAsync(slot.fd).catch(() => {});
        }
        slot.fd = -1;
        slot.filled = 0;
        slot.ready = false;
        return out.swapped;
      });
    } finally {
      this.busy--;
      this.kickRefill();
    }
  }

  private zeros(): Buffer {
    this.zeroBuffer ??= alignedBuffer(FILL_CHUNK, SECTOR_ALIGN);
    return this.zeroBuffer;
  }

  stats(): AllocatorStats {
    const { bytes, target } = this.held();
    return { method: this.method, reserveBytes: bytes, reserveTarget: target, ...this.counters };
  }

  writing(): () => void {
    this.writers++;
    let done = false;
    return () => {
      if (done) return;
      done = true;
      this.writers--;
      this.kickRefill();
    };
  }

  async allocate(fd: number, offset: number, length: number): Promise<void> {
    const bs = this.blockSize;
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length <= 0 ||
        offset % bs !== 0 || length % bs !== 0 || !Number.isSafeInteger(offset + length)) {
      throw Object.assign(new RangeError(`allocate: offset ${offset} and length ${length} must be multiples of ` +
        `the block size ${bs}, length positive`), { code: 'ERR_OUT_OF_RANGE' });
    }
    if (this.closed) throw codedError('ECANCELED', 'the allocator is closed');
    this.busy++;
    try {
      await this.allocateBusy(fd, offset, length);
    } finally {
      this.busy--;
      this.kickRefill();
    }
  }

  private async allocateBusy(fd: number, offset: number, length: number): Promise<void> {
    const before = await fstatAsync(fd);
    const needs = rangesToAllocate(await fiemap(fd), before.size, offset, length);
    if (needs.length === 0) return;
    try {
      if (this.method === 'write-zeroes') {
        await this.checkRoom(total(needs.filter((r) => r.hole)));
        for (const r of needs) await fallocate(fd, { writeZeroes: true }, r.offset, r.length);
      } else {
        await this.cloneAndFill(fd, needs);
      }
      await fsync(fd);  // the new mapping must be on disk before anyone writes into those blocks
      const wrong = this.checkOwned(await fiemap(fd), needs);
      if (wrong) throw codedError('EIO', `allocated range is not written blocks owned by the file: ${wrong}`);
    } catch (err) {
      await this.giveBack(fd, needs, before.size);
      throw err;
    }
    this.counters.allocatedBytes += total(needs);
  }

  private checkOwned(extents: readonly FiemapExtent[], needs: readonly NeedRange[]): string | null {
    for (const r of needs) {
      const wrong = notOwnedWritten(extents, r.offset, r.length);
      if (wrong) return wrong;
    }
    return null;
  }

  /** Reserve first (in file order), zero-fill the rest. The zero-filled part is fallocated before the reserve is
   *  touched, so running out of space leaves the reserve as it was. */
  private async cloneAndFill(fd: number, needs: readonly NeedRange[]): Promise<void> {
    let clone: NeedRange[] = [];
    let fill: NeedRange[] = [...needs];
    // Contiguous blocks for what is zero-filled; ENOSPC here costs nothing but the give-back.
    const reserveBlocks = async (): Promise<void> => {
      await this.checkRoom(total(fill.filter((r) => r.hole)));
      for (const r of fill) if (r.hole) await fallocate(fd, {}, r.offset, r.length);
    };
    if (this.method !== 'reflink') await reserveBlocks();
    else await this.reserveLock.run(async () => {
      ({ clone, fill } = splitByReserve(needs, this.reserveSize));
      await reserveBlocks();
      if (clone.length === 0) return;
      const t0 = performance.now();
      for (const r of clone) {
        // Take from the reserve's end, then cut the end off: the target then owns those blocks alone.
        const from = this.reserveSize - r.length;
        await cloneRange(this.reserveFd, from, r.length, fd, r.offset);
        await ftruncateAsync(this.reserveFd, from);
        this.reserveSize = from;
      }
      // The cut on disk too (the caller's fsync of the target need not force it): after a crash the reserve
      // must not still hold blocks a client has written. Should it anyway, the extents show SHARED and
      // openReserve cuts them off.
      await fsync(this.reserveFd);
      this.counters.cloneMs += performance.now() - t0;
    });
    if (fill.length === 0) return;
    const t0 = performance.now();
    // O_DIRECT on the caller's own descriptor for the while: opening the file again (even read-only) would
    // break the kernel write lease the server holds on it.
    const wasDirect = setDirect(fd, true);
    try {
      await writeZeros(fd, fill, this.zeros(), FILL_DEPTH);
    } finally {
      if (!wasDirect) setDirect(fd, false);
    }
    this.counters.zeroFillMs += performance.now() - t0;
    this.counters.zeroFillBytes += total(fill);
  }

  /** ENOSPC at once when the volume has less room than `bytes` for an unprivileged user: the server allocates as
   *  root, but a client must not get the blocks the file system keeps for root (it could not through its mount),
   *  and a file system that fails half-way (ext4 allocates up to the last block first) leaves extent-tree blocks
   *  behind even after the give-back. */
  private async checkRoom(bytes: number): Promise<void> {
    if (bytes === 0) return;
    const room = await statfsAsync(this.dir);
    if (room.bavail * room.bsize < bytes) {
      throw codedError('ENOSPC', `${bytes} bytes asked, ${room.bavail * room.bsize} available on the volume`);
    }
  }

  /** Undo an allocation that failed: holes become holes again, the size goes back. What was unwritten may
   *  stay written zeros (it was allocated before this call). Best effort: the first error is the one reported. */
  private async giveBack(fd: number, needs: readonly NeedRange[], size: number): Promise<void> {
    for (const r of needs) {
      if (!r.hole) continue;
      await fallocate(fd, { punchHole: true }, r.offset, r.length).catch((err: unknown) => {
        this.log(`allocator: cannot give back [${r.offset}, +${r.length}): ${errorMessage(err)}`);
      });
    }
    try {
      if ((await fstatAsync(fd)).size !== size) await ftruncateAsync(fd, size);
    } catch (err) {
      this.log(`allocator: cannot restore the size ${size}: ${errorMessage(err)}`);
    }
  }

  /** Whether the reserve (or the pool) has room for more zeros. */
  private wantsRefill(): boolean {
    if (this.method === 'pool') return this.pool.some((f) => !f.ready && f.size > 0);
    return this.method === 'reflink' && this.reserveFd >= 0 && this.reserveSize < this.reserveTarget;
  }

  private kickRefill(): void {
    if (this.closed || this.refilling || !this.wantsRefill()) return;
    this.refillStalled = false;
    this.refilling = this.refill()
      .catch((err: unknown) => this.log(`allocator: reserve refill stopped: ${errorMessage(err)}`))
      .finally(() => { this.refilling = null; });
  }

  /** Append written zeros to the reserve (or the pool's files, one after the other) up to its target, a small
   *  chunk at a time, out of the way of allocations and resting between writes so that a running copy keeps most
   *  of the device; never into the last reserveTarget bytes of free space. A pool file is fsynced when full, and
   *  only then swapped into place. */
  private async refill(): Promise<void> {
    const zeros = this.zeros();
    const chunk = Math.min(REFILL_CHUNK, zeros.length);
    let lastWrite = 0;
    while (!this.closed && !this.refillStalled && this.wantsRefill()) {
      // Out of the way of allocations, and of clients writing the device directly (but for one chunk a second).
      if (this.busy > 0 || (this.writers > 0 && performance.now() - lastWrite < REFILL_WRITERS_GAP_MS)) {
        await sleep(REFILL_YIELD_MS);
        continue;
      }
      lastWrite = performance.now();
      const t0 = performance.now();
      await this.reserveLock.run(async () => {
        const slot = this.method === 'pool' ? await this.poolToFill() : undefined;
        if (this.method === 'pool' && !slot) return;
        const fd = slot ? slot.fd : this.reserveFd;
        const at = slot ? slot.filled : this.reserveSize;
        const n = Math.min(chunk, (slot ? slot.size : this.reserveTarget) - at);
        const room = await statfsAsync(this.dir);
        if (room.bavail * room.bsize - n < this.held().target) {
          // The reserve never takes the last reserveTarget bytes of the volume from everyone else.
          this.log(`allocator: reserve stays at ${this.held().bytes} bytes: less than ${this.held().target} bytes free besides`);
          this.refillStalled = true;
          return;
        }
        try {
          const done = await pwrite(fd, zeros, 0, n, at);
          if (done !== n) throw codedError('EIO', `short write of ${done} of ${n} bytes`);
          if (!slot) this.reserveSize = at + n;
          else {
            slot.filled = at + n;
            if (slot.filled === slot.size) {
              await fsync(fd);
              slot.ready = true;
            }
          }
        } catch (err) {
          await ftruncateAsync(fd, at).catch(() => {});
          if (errnoCode(err) !== 'ENOSPC' && errnoCode(err) !== 'EDQUOT') throw err;
          this.log(`allocator: reserve stays at ${this.held().bytes} bytes: the volume is full`);
          this.refillStalled = true;
        }
      });
      await sleep(Math.max(REFILL_REST_MS, performance.now() - t0));
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    await this.refilling;
    await this.reserveLock.run(async () => {
      if (this.reserveFd >= 0) await closeAsync(this.reserveFd).catch(() => {});
      this.reserveFd = -1;
      for (const slot of this.pool) {
        if (slot.fd >= 0) await closeAsync(slot.fd).catch(() => {});
        slot.fd = -1;
      }
      if (this.hidden.fd >= 0) await closeAsync(this.hidden.fd).catch(() => {});
      this.hidden.fd = -1;
    });
  }
}

/** The hidden directory, made if missing; refused when it is anything but a directory of ours (a client could
 *  have made one through the network mount). */
async function ensureReserveDir(dir: string): Promise<{ path: string; dev: number }> {
  const path = join(dir, RESERVE_DIR);
  try {
    await fs.promises.mkdir(path, { mode: 0o700 });
  } catch (err) {
    if (errnoCode(err) !== 'EEXIST') throw err;
  }
  const st = await fs.promises.lstat(path);
  if (!st.isDirectory() || st.uid !== process.getuid?.()) {
    throw codedError('EPERM', `${path} is not a directory owned by the server`);
  }
  // 0711 is ours too: the ghost-file transport lets nodes search (never list) it to reach their own directories.
  if ((st.mode & 0o777) !== 0o700 && (st.mode & 0o777) !== 0o711) await fs.promises.chmod(path, 0o700);
  return { path, dev: st.dev };
}

/** Give back the pool files an earlier run kept (the pool is off, or the volume is not ext4). */
async function removePool(hiddenPath: string): Promise<void> {
  for (const name of await fs.promises.readdir(hiddenPath)) {
    if (name.startsWith(POOL_PREFIX)) await fs.promises.rm(join(hiddenPath, name), { force: true });
  }
}

/** Try one mode on a scratch file in the hidden directory; the error code, or null when it works. */
async function probe(dir: string, blockSize: number, op: (fd: number, scratch: number) => Promise<void>): Promise<string | null> {
  const { O_RDWR, O_CREAT, O_EXCL, O_NOFOLLOW } = fs.constants;
  const name = join(dir, `probe.${process.pid}`);
  await fs.promises.rm(name, { force: true });
  const fd = await openAsync(name, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW, 0o600);
  try {
    fs.writeSync(fd, Buffer.alloc(blockSize), 0, blockSize, 0);
    await op(fd, blockSize);
    return null;
  } catch (err) {
    return errnoCode(err) ?? errorMessage(err);
  } finally {
    fs.closeSync(fd);
    await fs.promises.rm(name, { force: true });
  }
}

export async function createAllocator(volume: { dir: string; identity: { fstype: string; blockSize: number } },
  opts: { reserveBytes: number; log: (line: string) => void }): Promise<Allocator> {
  const bs = volume.identity.blockSize;
  if (!Number.isSafeInteger(opts.reserveBytes) || opts.reserveBytes < 0) {
    throw Object.assign(new RangeError(`reserveBytes must be a non-negative integer, got ${opts.reserveBytes}`),
      { code: 'ERR_OUT_OF_RANGE' });
  }
  const target = opts.reserveBytes - (opts.reserveBytes % Math.max(bs, SECTOR_ALIGN));
  const hidden = await ensureReserveDir(volume.dir);
  const reserve = join(hidden.path, RESERVE_FILE);
  const wz = await probe(hidden.path, bs, (fd, at) => fallocate(fd, { writeZeroes: true }, at, bs));
  let allocator: VolumeAllocator | undefined;
  if (wz === null) {
    opts.log(`allocator: ${volume.dir}: FALLOC_FL_WRITE_ZEROES`);
    allocator = new VolumeAllocator('write-zeroes', volume.dir, bs, 0, opts.log);
  } else if (volume.identity.fstype === 'xfs' && target > 0) {
    const rl = await probe(hidden.path, bs, (fd, at) => cloneRange(fd, 0, bs, fd, at));
    if (rl === null) {
      allocator = new VolumeAllocator('reflink', volume.dir, bs, target, opts.log);
      await allocator.openReserve(reserve, hidden.dev);
      opts.log(`allocator: ${volume.dir}: reflink from a reserve of ${target} bytes (write zeroes: ${wz})`);
      return allocator;
    }
    opts.log(`allocator: ${volume.dir}: no reflink (${rl}): zero-fill`);
  }
  // No reserve in use (disabled, or not needed): give back the blocks of one kept from an earlier run.
  await fs.promises.rm(reserve, { force: true });
  const sizes = allocator ? [] : volume.identity.fstype === 'ext4' ? poolSizes(target) : [];
  if (sizes.length > 0) {
    const pooled = new VolumeAllocator('pool', volume.dir, bs, 0, opts.log);
    await pooled.openPool(hidden, sizes);
    opts.log(`allocator: ${volume.dir}: pool of pre-zeroed files (${sizes.join(' + ')} bytes) swapped into place, ` +
      `zero-fill beyond (write zeroes: ${wz})`);
    return pooled;
  }
  await removePool(hidden.path);
  if (allocator) return allocator;
  opts.log(`allocator: ${volume.dir}: zero-fill (write zeroes: ${wz})`);
  return new VolumeAllocator('zero-fill', volume.dir, bs, 0, opts.log);
}
