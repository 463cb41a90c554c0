// The direct writer: a file's bytes, in order, onto the client's own device inside the file's write map (ALLOC,
// O_DIRECT, COMMIT); the network mount whenever the direct path is not available or stops being safe.
import { open, type FileHandle } from 'node:fs/promises';
import { performance } from 'node:perf_hooks';
import { FusedError, errnoCode, errorMessage, reasonOf } from '../errors.js';
import { fallocate } from '../native/index.js';
import { LIMITS } from '../protocol/index.js';
import type { MapExtent } from '../volume/extents.js';
import type { FuseClient } from './client.js';
import { ALIGN, Device, SourceShrank, alignDown, alignUp } from './device.js';
import { DEFAULT_SMALL_FILE } from './reader.js';
import { OVER_LIMIT, type Pacer, type Throttle } from './pacer.js';
import { CHUNK, giveBuffer, takeBuffer } from './buffers.js';
import { coveredEnd, networkSpans, routeAt, wholeLastBlock, type Span } from './inplace.js';
import type { FusedFile } from './registry.js';
import type { FileMap, Session } from './session.js';

export interface WriteReport {
  path: 'direct' | 'network' | 'mixed';
  /** Why (some) bytes were written through the network mount, or null. */
  reason: string | null;
  /** The direct path was wanted but could not be used (a small file is a choice, not this). */
  fallback: boolean;
  bytesDirect: number;
  bytesNetwork: number;
  /** The write map was recalled or lost mid-file; the rest went through the mount. */
  interrupted: boolean;
  /** Bytes written through the mount because the direct path was over the throttle limit (--fallback); part of
   *  bytesNetwork. */
  bytesOverLimit?: number;
}

/** What a copy writes its destination through: the device (DirectTarget) or the mount (MountTarget). */
export interface WriteTarget {
  readonly report: WriteReport;
  /** Bytes at `offset`, in increasing order. `zero` bytes may be skipped where the blocks are zeros already.
   *  `buf`, the shared buffer `data` lies in, may be kept (resolves true): then the target gives it back. */
  write(offset: number, data: Buffer, zero: boolean, buf?: Buffer): Promise<boolean>;
  /** Everything is written: set the size and make the bytes durable (fsync, or COMMIT). */
  finish(size: number): Promise<void>;
  /** Throw away what was written (empty file) and go on through the mount. */
  restart(): Promise<void>;
  /** Give up: let go of leases and descriptors (the caller removes the file). */
  abort(): Promise<void>;
  /** The file `fd`'s bytes [offset, offset+length), in order like write, taken from the file itself (spliced on the
   *  device, never read into this process); resolves false, having written nothing, when this target cannot take
   *  them so (the caller reads them and writes them). */
  splice?(fd: number, offset: number, length: number): Promise<boolean>;
}

/** Device writes in flight (fio's depth for the device's limit); each holds a libuv pool thread. */
export const WRITE_DEPTH = 8;

/** The most one ALLOC asks for: zeroing it (where the server must) stays well within a lease time. */
export const ALLOC_SLICE = 256 * 1024 * 1024;
/** The first ALLOC's size: small, so that the first write waits little where the server zeroes blocks (ext4);
 *  each next slice is twice the last, up to ALLOC_SLICE, asked for while the last is written. */
export const FIRST_SLICE = 32 * 1024 * 1024;

/** Direct writes could not be kept (the lease ran out, or the device failed): the file must be written again
 *  from the start through the mount. */
export class WriteRestart extends Error {}

export interface WriterOptions {
  networkOnly?: boolean;
  /** Files smaller than this are written through the mount: a map round trip costs more than it saves. */
  smallFile?: number;
  /** Opens a proven device path for writing, checking its UUID (default Device.open). */
  openDevice?: (path: string, uuid: string) => Promise<DeviceWriter>;
  /** Paces device writes by the server's grants; with fallback, the rest of a file over the limit goes through
   *  the mount. */
  throttle?: Throttle;
}

/** What the writer needs of a device (Device; tests pass fakes). */
export type DeviceWriter = Pick<Device, 'path' | 'writeAt' | 'outside' | 'close'> & Partial<Pick<Device, 'spliceAt' | 'info'>>;

/** Chooses, per destination file, the direct path or the mount. */
export class DirectWriter {

  constructor(
    private readonly client: (Pick<FuseClient, 'resolve' | 'map'> & Partial<Pick<FuseClient, 'warmFor' | 'writableDevice'>>) | null,
    private readonly opts: WriterOptions = {},
  ) {}

  /** A file of `sizeHint` bytes is about to be created as `path`: if it may go direct, the session and the device's
   *  proof start now, beside the create through the mount (open() then finds them ready). */
  warmFor(path: Buffer, sizeHint: number): void {
    if (this.opts.networkOnly || this.smallFile(sizeHint) !== undefined) return;
    this.client?.warmFor?.(path);
  }

  /** Why a file of `sizeHint` bytes goes through the mount by choice (small), or undefined (-1: size unknown). */
  private smallFile(sizeHint: number): string | undefined {
    const small = this.opts.smallFile ?? DEFAULT_SMALL_FILE;
    return sizeHint >= 0 && sizeHint < small ? `small file (${sizeHint} bytes < ${small}): the network is cheaper than a map round trip` : undefined;
  }

  /** A target for `path`, a file created through the network mount; `opened` is its descriptor there, kept for
   *  writing through the mount and closed only to try the direct path (so that the server can take the write
   *  lease). `sizeHint` is how many bytes are coming, if known (-1 when not). With `inplace`, `path` is an existing
   *  file overwritten where it stands (fusedcp --inplace; `opened` without O_TRUNC): its own, unshared blocks are
   *  written on the device, every other range through the mount (InPlaceTarget). */
  async open(path: Buffer, sizeHint: number, opened?: FileHandle, inplace = false): Promise<WriteTarget> {
    let fh = opened;
    const kind: MountKind = inplace ? 'overwrite' : 'file';
    const network = async (reason: string, fallback: boolean) =>
      fh ? MountTarget.over(fh, { reason, fallback }, kind) : MountTarget.open(path, { reason, fallback }, undefined, kind);
    if (this.opts.networkOnly) return network('network path requested (--network-only)', false);
    if (!this.client) return network('no fuses on this node', false);
    // A small file goes through the mount wherever it is: no path resolution for it (many small files).
    const small = this.smallFile(sizeHint);
    if (small !== undefined) return network(small, false);
    let fused;
    try {
      fused = await this.client.resolve(path);
    } catch (err) {
      return network(errorMessage(err), true);
    }
    if (!fused) return network('not on a fused mount', false);
    // A read-only node writes through the mount as a matter of course, not as a fallback.
    if (fused.fuse.access === 'ro') return network('this node is read-only on the map server (role ro)', false);
    // The server may put a pre-zeroed file in place of an empty one at its first ALLOC (ext4's pool): a new inode,
    // which an overwrite in place must not get.
    if (inplace && fh && (await fh.stat()).size === 0) return network('an empty file overwritten in place keeps its inode: written through the mount', false);
    if (fh) {
      await fh.close();
      fh = undefined;
    }
    const got = await this.direct(fused, path, sizeHint, inplace ? { from: 0 } : undefined);
    if (!(got instanceof DirectTarget)) return network(got.reason, true);
    if (!inplace) return got;
    return new InPlaceTarget(path, got, (from, report) => this.direct(fused, path, sizeHint, { from, report }));
  }

  /** The write map of the file and a DirectTarget over it, or why the file must go through the mount. In place
   *  (`overwrite`), the map may have NETWORK ranges (the caller writes them through the mount), and the writing
   *  goes on at `from`. */
  private async direct(fused: FusedFile, path: Buffer, sizeHint: number, overwrite?: { from: number; report?: WriteReport }): Promise<DirectTarget | { reason: string }> {
    let got;
    try {
      got = await this.client!.map(fused, 'write');
    } catch (err) {
      return { reason: reasonOf(err) };
    }
    const { map, session } = got;
    const release = () => session.release(map.lease).catch(() => {});
    if (map.networkReason || (!overwrite && map.extents.some((e) => e.state === 'NETWORK'))) {
      await release();
      return { reason: map.networkReason ?? 'parts of the file cannot be written directly (shared or not aligned)' };
    }
    // The proof ran beside the MAP; nothing is allocated or written before it has passed.
    const proven = await got.device;
    if ('reason' in proven) {
      await release();
      return { reason: proven.reason };
    }
    let device: DeviceWriter;
    try {
      // Opened for writing once per command (the client keeps it), not once per file.
      const writable = this.client?.writableDevice?.bind(this.client);
      const open = this.opts.openDevice ?? (writable ? (p: string) => writable(fused.fuse, p) : (p: string, u: string) => Device.open(p, u, { write: true }));
      device = await open(proven.path, fused.fuse.uuid);
    } catch (err) {
      await release();
      return { reason: reasonOf(err) };
    }
    const outside = device.outside(map.extents);
    if (outside) {
      await device.close();
      await release();
      return { reason: outside };
    }
    const throttle = this.opts.throttle;
    const pace = throttle && { pacer: throttle.pacer(session, fused.fuse.volume), fallback: throttle.fallback };
    const target = new DirectTarget(path, session, device, map, overwrite !== undefined, overwrite?.report, pace);
    try {
      const from = overwrite?.from ?? 0;
      // In place, not past the next range that goes through the mount: the COMMIT before it would give that back.
      const until = overwrite ? routeAt(networkSpans(target.extents, ALIGN), from) : { network: false, end: Infinity };
      const upTo = until.network ? from : Math.min(sizeHint, from + FIRST_SLICE, until.end);
      if (upTo > from) await target.allocate(upTo, sizeHint);
    } catch (err) {
      await target.abort();
      // No room is no room through the mount either: say so instead of trying there.
      if (err instanceof FusedError) throw err;
      return { reason: `allocation: ${reasonOf(err)}` };
    }
    return target;
  }
}

/** Legs through the mount at most, in one in-place overwrite (each costs a COMMIT and a MAP): a file shared with
 *  others in more pieces than this goes through the mount from there on. */
export const MAX_MOUNT_LEGS = 64;

/**
 * An existing file overwritten in place (fusedcp --inplace): the same inode, its bytes replaced where they stand.
 * Ranges in the file's own DATA extents (and blocks ALLOC makes for holes, unwritten ranges and growth) go to the
 * device under the write lease; a range the write map says NETWORK (shared with another file by a reflink, inline,
 * not aligned) goes through the mount, where the file system un-shares the blocks (copy on write). The write lease
 * cannot be held while the file is written through the mount (that open breaks it): before such a range the direct
 * leg is committed, after it the file is mapped again. A recall, a restart or a map refused sends the rest of the
 * file through the mount. The size is set at the end (COMMIT never shrinks a file: a truncate through the mount
 * after it does).
 */
class InPlaceTarget implements WriteTarget {
  readonly report: WriteReport;
  private leg: DirectTarget | MountTarget;
  /** The ranges of the direct leg's map that go through the mount. */
  private spans: Span[];
  /** The mount leg ends here (the end of its NETWORK range); Infinity: the rest of the file goes through the mount. */
  private mountUntil = 0;
  private mountLegs = 0;

  constructor(
    private readonly path: Buffer,
    first: DirectTarget,
    /** Map the file again and write on from `from` on the device, or why not. */
    private readonly remap: (from: number, report: WriteReport) => Promise<DirectTarget | { reason: string }>,
  ) {
    this.leg = first;
    this.report = first.report;
    this.spans = networkSpans(first.extents, ALIGN);
  }

  async write(offset: number, data: Buffer, zero: boolean, buf?: Buffer): Promise<boolean> {
    let at = 0;
    while (at < data.length) {
      const pos = offset + at;
      const end = await this.route(pos);
      const n = Math.min(data.length - at, end - pos);
      // The shared buffer may be kept only when the whole chunk goes to one place.
      const kept = await this.leg.write(pos, data.subarray(at, at + n), zero, n === data.length ? buf : undefined);
      if (kept) return true;
      at += n;
    }
    return false;
  }

  /** Put the right leg in place for the bytes at `pos`; returns where that leg's range ends. */
  private async route(pos: number): Promise<number> {
    const leg = this.leg;
    if (leg instanceof DirectTarget) {
      // Recalled (or restarted): it goes on through the mount by itself, to the end.
      if (!leg.direct) return Infinity;
      const r = routeAt(this.spans, pos);
      if (!r.network) return r.end;
      const committed = await leg.pause(pos);
      if (committed === null) return Infinity;
      if (++this.mountLegs > MAX_MOUNT_LEGS) {
        this.toMount(`more than ${MAX_MOUNT_LEGS} ranges shared with other files or not aligned: the rest through the mount`, false);
      } else {
        this.mountUntil = r.end;
        this.note('ranges shared with another file (reflink) or not aligned: written through the mount');
      }
      this.leg = await MountTarget.open(this.path, { reason: this.report.reason, fallback: true }, this.report, 'overwrite');
      return this.mountUntil;
    }
    if (pos < this.mountUntil) return this.mountUntil;
    // Past the range the mount had to write: map the file again (the mount's descriptor closed first, so that the
    // server can take the write lease) and go on on the device.
    await leg.close();
    const next = await this.remap(pos, this.report);
    if (next instanceof DirectTarget) {
      this.leg = next;
      this.spans = networkSpans(next.extents, ALIGN);
      return this.route(pos);
    }
    this.toMount(next.reason, true);
    this.leg = await MountTarget.open(this.path, { reason: next.reason, fallback: true }, this.report, 'overwrite');
    return Infinity;
  }

  /** The rest of the file goes through the mount; `interrupted` when the direct path was lost (not a choice). */
  private toMount(reason: string, interrupted: boolean): void {
    this.mountUntil = Infinity;
    if (interrupted) this.report.interrupted = true;
    this.note(reason);
  }

  private note(reason: string): void {
    this.report.fallback = true;
    this.report.reason ??= reason;
  }

  async finish(size: number): Promise<void> {
    const leg = this.leg;
    try {
      if (leg instanceof MountTarget) return await leg.finish(size);
      const committed = await leg.pause(size);
      if (committed === null) return await leg.finish(size);
      // COMMIT never makes a file smaller than it was: a shorter source is cut to size through the mount.
      if (committed !== size) {
        const fh = await open(this.path, 'r+');
        try {
          await fh.truncate(size);
          await fh.sync();
        } finally {
          await fh.close();
        }
      }
    } finally {
      const r = this.report;
      r.path = r.bytesNetwork === 0 ? 'direct' : r.bytesDirect === 0 ? 'network' : 'mixed';
    }
  }

  async restart(): Promise<void> {
    await this.leg.restart();
    // From the start, through the mount, to the end.
    this.mountUntil = Infinity;
    this.report.bytesDirect = 0;
    this.report.bytesNetwork = 0;
  }

  async abort(): Promise<void> {
    await this.leg.abort();
  }
}

/** How a MountTarget writes: a new file (zeros left as holes, the size set at the end), a device or a pipe (written
 *  in order where it stands, zeros too, nothing to truncate or sync), or an existing file overwritten in place
 *  (positioned, zeros written over the old bytes, the size set at the end). */
export type MountKind = 'file' | 'stream' | 'overwrite';

/** Writes through the network mount: positioned writes, zeros left as holes, the size set at the end. */
export class MountTarget implements WriteTarget {
  readonly report: WriteReport;

  private constructor(
    private readonly fh: FileHandle,
    why: { reason: string | null; fallback: boolean },
    report?: WriteReport,
    private readonly kind: MountKind = 'file',
  ) {
    this.report = report ?? { path: 'network', reason: why.reason, fallback: why.fallback, bytesDirect: 0, bytesNetwork: 0, interrupted: false };
  }

  /** A new file ('file' over a descriptor the caller just created) holds nothing past what this target wrote. */
  private empty = false;
  /** The end of the bytes written so far (zeros skipped as holes are not written). */
  private writtenEnd = 0;
  /** Blocks allocated ahead (preallocate), past the size until written. */
  private preallocated = 0;

  static async open(path: Buffer, why: { reason: string | null; fallback: boolean }, report?: WriteReport, kind: MountKind = 'file'): Promise<MountTarget> {
    return new MountTarget(await open(path, 'r+'), why, report, kind);
  }

  /** Its descriptor on the mount (for advice such as write-behind): always the file this target writes, never one
   *  opened before a direct attempt (a first ALLOC may swap a pre-zeroed file in under the name on the server). */
  get fd(): number {
    return this.fh.fd;
  }

  /** Over a descriptor the caller opened already; for kind 'file', of a file it has just created (empty). */
  static over(fh: FileHandle, why: { reason: string | null; fallback: boolean } = { reason: null, fallback: false }, kind: MountKind = 'file'): MountTarget {
    const target = new MountTarget(fh, why, undefined, kind);
    target.empty = kind === 'file';
    return target;
  }

  /**
   * A new file of `size` bytes gets its blocks now (fallocate, size kept): in few extents, and a destination
   * without the room fails at once rather than after most of the copy. A file system that cannot (EOPNOTSUPP:
   * sshfs, tmpfs before 3.5, ...) is written as before. Only ever for a file this target created.
   */
  async preallocate(size: number): Promise<void> {
    if (!this.empty || size <= 0) return;
    try {
      await fallocate(this.fh.fd, { keepSize: true }, 0, size);
      this.preallocated = size;
    } catch (err) {
      const code = errnoCode(err);
      if (code === 'ENOSPC' || code === 'EDQUOT') throw new FusedError('failure', `no room for ${size} bytes on the destination's file system (${code})`);
      // Anything else: no preallocation; the writes meet any real problem themselves.
    }
  }

  async write(offset: number, data: Buffer, zero: boolean): Promise<boolean> {
    // Zeros are left as holes (cp --sparse=auto) in a new file; finish sets the size. Where the file was preallocated
    // (a source that did not look sparse: a network file system may not say), the blocks under them are given back.
    if (this.kind === 'stream') await writeAll(this.fh, data, null);
    else if (zero && this.kind === 'file') {
      const end = Math.min(offset + data.length, this.preallocated);
      if (end > offset) {
        // ext4 punches no hole past the file's end: the size follows the copy to the end of these zeros first
        // (fallocate over blocks it has: it only ever grows the size, whatever else is being written).
        await fallocate(this.fh.fd, {}, offset, end - offset)
          .then(() => fallocate(this.fh.fd, { punchHole: true }, offset, end - offset))
          .catch(() => {});
      }
    } else {
      await writeAll(this.fh, data, offset);
      this.writtenEnd = Math.max(this.writtenEnd, offset + data.length);
    }
    this.report.bytesNetwork += data.length;
    return false;
  }

  async finish(size: number): Promise<void> {
    if (this.kind === 'stream') return this.fh.close();
    // A new file written up to its end has its size already (no trailing hole, nothing past it; blocks preallocated
    // past the end are given back by the truncate).
    if (!(this.empty && this.writtenEnd === size && this.preallocated <= size)) await this.fh.truncate(size);
    // The name must only ever show a complete file: the bytes reach the disk before the rename does.
    await this.fh.sync();
    await this.fh.close();
  }

  /** In place, at the end of a range written through the mount: the bytes reach the server's file (and the
   *  descriptor is closed there) before the server maps the file again. */
  async close(): Promise<void> {
    await this.fh.sync();
    await this.fh.close();
  }

  async restart(): Promise<void> {
    // Overwritten in place, the old bytes are overwritten again from the start: nothing to throw away.
    if (this.kind !== 'overwrite') {
      await this.fh.truncate(0);
      this.empty = this.kind === 'file';
      this.preallocated = 0;
    }
    this.writtenEnd = 0;
    this.report.bytesNetwork = 0;
  }

  async abort(): Promise<void> {
    await this.fh.close().catch(() => {});
  }
}

/** One run of bytes gathered for the device: [start, start + length) of the file, in an aligned buffer. */
interface Stage { buf: Buffer; start: number; length: number }

/**
 * Writes into the file's DATA extents on the client's own device with O_DIRECT, WRITE_DEPTH writes in flight, under the
 * write lease: nothing is issued later than one margin before the lease deadline, and a write that completes past
 * the deadline makes the whole file start again through the mount (WriteRestart). A recall commits what is
 * written and the rest goes through the mount.
 */
class DirectTarget implements WriteTarget {
  readonly report: WriteReport;
  private mode: 'direct' | 'mount' | 'closed' = 'direct';
  private mount: MountTarget | undefined;
  private stage: Stage | undefined;
  private readonly inflight = new Set<Promise<void>>();
  /** Every byte below this went to the device (issued in order, and completed once inflight is empty). */
  private durableEnd = 0;
  /** The file's blocks are allocated (DATA) up to here. */
  private allocatedEnd = 0;
  private failure: Error | undefined;
  private recalled = false;
  private readonly stopPings: () => void;
  /** Bytes after this went through the mount because of the throttle (--fallback). */
  private overLimit = false;
  /** A recall lets go of a write waiting for budget (the COMMIT must not wait for it). */
  private readonly stopWaiting = new AbortController();
  private readonly onRecall = (lease: string) => {
    if (lease !== this.map.lease) return;
    this.recalled = true;
    this.stopWaiting.abort(new Error('recalled'));
  };

  /** In place: zeros below this replace old bytes and are written; above it ALLOC made the blocks zeros. */
  private readonly zerosBelow: number = 0;

  constructor(
    private readonly path: Buffer,
    private readonly session: Session,
    private readonly device: DeviceWriter,
    private map: FileMap,
    /** An existing file overwritten in place (InPlaceTarget): its DATA extents hold old bytes. */
    private readonly overwrite = false,
    report?: WriteReport,
    private readonly pace?: { pacer: Pacer; fallback: boolean },
  ) {
    this.report = report ?? { path: 'direct', reason: null, fallback: false, bytesDirect: 0, bytesNetwork: 0, interrupted: false };
    session.on('recall', this.onRecall);
    if (session.isRecalled(map.lease)) this.recalled = true;
    this.map = this.shaped(map);
    this.allocatedEnd = this.writableEnd();
    if (overwrite) this.zerosBelow = alignUp(Math.ceil(map.size / map.blockSize) * map.blockSize);
    // The reply to each PING renews the lease.
    this.stopPings = session.keepAlive();
  }

  /** In place, the old file's partial last block is whole in the map (it is the file's own), so it can be written. */
  private shaped(map: FileMap): FileMap {
    return this.overwrite ? { ...map, extents: wholeLastBlock(map.extents, map.size, map.blockSize) } : map;
  }

  /** How far the map lets the file be written without ALLOC: DATA from 0; in place, NETWORK ranges too (they go
   *  through the mount). */
  private writableEnd(): number {
    return this.overwrite ? coveredEnd(this.map.extents) : dataEnd(this.map.extents);
  }

  /** Still writing on the device: not recalled, not gone on through the mount, not committed. */
  get direct(): boolean {
    return this.mode === 'direct' && !this.recalled;
  }

  /** The write map as it stands. */
  get extents(): readonly MapExtent[] {
    return this.map.extents;
  }

  /** The file's size when it is known (a copy): allocation stops there. */
  private knownSize = -1;
  /** The ALLOC under way, if any (one at a time: replies come in order anyway). */
  private allocating: Promise<void> | undefined;
  /** The size of the last ALLOC's slice (0 before the first). */
  private slice = 0;

  /**
   * ALLOC until `end` bytes are allocated, in slices of at most ALLOC_SLICE: a slice is quick to zero where the
   * server must zero it, so its reply (which renews the lease) never comes too late to write under; the next slice
   * is asked for while the last one is written (prefetch). With `known`, the file's size: nothing is allocated past
   * it. Otherwise (a stream, or a source that grew) steps of at least 64 MiB or an eighth of what is there.
   */
  async allocate(end: number, known?: number): Promise<void> {
    if (known !== undefined) this.knownSize = known;
    while (this.allocatedEnd < end) {
      if (!this.allocating) this.allocating = this.allocateNext().finally(() => (this.allocating = undefined));
      await this.allocating;
    }
  }

  /** Ask for the next slice as soon as less than one is allocated ahead of what is written, so the server zeroes
   *  (or clones) the next slice while the client writes this one, and writing never waits for it. */
  private prefetch(written: number): void {
    const more = this.knownSize < 0 || this.allocatedEnd < this.knownSize || written > this.knownSize;
    if (more && !this.allocating && this.allocatedEnd - written < this.slice) {
      this.allocating = this.allocateNext().finally(() => (this.allocating = undefined));
      this.allocating.catch(() => {}); // its failure surfaces at the next allocate()
    }
  }

  private async allocateNext(): Promise<void> {
    const bs = this.map.blockSize;
    const from = Math.floor(this.allocatedEnd / bs) * bs;
    // Past the known size (the source grew) it is a stream again.
    const want = this.knownSize > from ? this.knownSize - from : Math.max(64 * 1024 * 1024, Math.floor(from / 8));
    // Twice the last slice (the first ALLOC asked FIRST_SLICE), at most ALLOC_SLICE: slices whose zeros the server
    // writes overlap the writes of the slice before. What the server can clone from its reserve (no zeros written)
    // comes in one ALLOC instead: each ALLOC ends with an fsync, which would flush the client's writes so far to the
    // disk while the writes past the slice wait for its reply (XFS, 1 GiB: seven ALLOCs, the last ones 60-115 ms).
    this.slice = Math.min(ALLOC_SLICE, Math.max(FIRST_SLICE, this.slice * 2));
    // The last ALLOC reply's ready= (the map a MAP reply made has none).
    const step = Math.max(Math.min(want, this.slice), Math.min(want, this.map.ready ?? 0));
    const to = Math.ceil((from + Math.max(bs, step)) / bs) * bs;
    try {
      this.map = this.shaped({ ...(await this.session.alloc(this.map.lease, from, to - from)), lease: this.map.lease });
    } catch (err) {
      if ((err as { code?: string }).code === 'NOSPACE') {
        throw new FusedError('failure', `no space left on the volume for ${to - from} bytes (${errorMessage(err)})`);
      }
      throw err;
    }
    const outside = this.device.outside(this.map.extents);
    if (outside) throw new WriteRestart(outside);
    const now = this.writableEnd();
    if (now < to) throw new Error(`the server allocated up to ${now}, not ${to}`);
    this.allocatedEnd = now;
  }

  async write(offset: number, data: Buffer, zero: boolean, buf?: Buffer): Promise<boolean> {
    if (this.mode === 'direct' && this.recalled) await this.toMount('recalled: the file was opened on the server');
    if (this.mode === 'mount') return this.mount!.write(offset, data, zero);
    if (zero && offset < this.zerosBelow) {
      // In place, zeros replace old bytes: written, up to where ALLOC made the blocks zeros.
      const n = Math.min(data.length, this.zerosBelow - offset);
      await this.put(offset, data.subarray(0, n));
      if (n < data.length) await this.write(offset + n, data.subarray(n), true);
      return false;
    }
    // An aligned chunk at the start of its own buffer becomes the stage as it is: no copy.
    if (!zero && buf && !this.stage && offset % ALIGN === 0 && data.byteOffset === buf.byteOffset && data.length <= CHUNK) {
      this.stage = { buf, start: offset, length: data.length };
      if (data.length === CHUNK) await this.flush();
      return true;
    }
    if (zero) {
      // Whole aligned blocks of zeros need no writing (ALLOC made them zeros); the edges go with their neighbours.
      const a = Math.min(alignUp(offset), offset + data.length);
      const b = Math.max(alignDown(offset + data.length), a);
      await this.put(offset, data.subarray(0, a - offset));
      if (b > a) {
        await this.flush();
        // The flush may have moved the file to the mount (a recall, the throttle): count the zeros there.
        if ((this.mode as string) === 'mount') await this.mount!.write(a, data.subarray(a - offset, b - offset), true);
        else this.report.bytesDirect += b - a;
      }
      await this.put(b, data.subarray(b - offset));
      return false;
    }
    await this.put(offset, data);
    return false;
  }

  /** Gather bytes into the stage; a full stage (or a gap) goes to the device. */
  private async put(offset: number, bytes: Buffer): Promise<void> {
    while (bytes.length > 0) {
      if (this.stage && offset !== this.stage.start + this.stage.length) await this.flush();
      if (this.mode !== 'direct') {
        await this.mount!.write(offset, bytes, false);
        return;
      }
      if (!this.stage) {
        const start = alignDown(offset);
        const buf = takeBuffer();
        buf.fill(0, 0, offset - start);
        this.stage = { buf, start, length: offset - start };
      }
      const n = Math.min(bytes.length, CHUNK - this.stage.length);
      bytes.copy(this.stage.buf, this.stage.length, 0, n);
      this.stage.length += n;
      offset += n;
      bytes = bytes.subarray(n);
      if (this.stage.length === CHUNK) await this.flush();
    }
  }

  /** The stage to the device: padded with zeros to whole blocks, cut along the DATA extents. */
  private async flush(): Promise<void> {
    const stage = this.stage;
    if (!stage || stage.length === 0) return;
    this.stage = undefined;
    const end = stage.start + stage.length;
    await this.allocate(end);
    this.prefetch(end);
    const padded = alignUp(stage.length);
    stage.buf.fill(0, stage.length, padded);
    const pieces = piecesOf(this.map.extents, stage.start, stage.start + padded, end);
    // Budget for the whole stage before any of it is issued; over the limit with --fallback, or a grant that
    // fails, the rest of the file goes through the mount (after a COMMIT of what is written, like a recall).
    const unpaced = await this.paced(padded, pieces.length);
    if (unpaced) {
      this.overLimit = unpaced === OVER_LIMIT;
      await this.toMount(unpaced, stage);
      return;
    }
    let pending = pieces.length;
    const done = () => {
      if (--pending === 0) giveBuffer(stage.buf);
    };
    const all = await this.issue(pieces, (p, notAfter) => this.device.writeAt(stage.buf, p.bufOffset, p.length, p.physical, notAfter), done);
    // Recalled mid-stage: what was issued of it is overwritten through the mount after the commit.
    if (!all) return this.toMount('recalled: the file was opened on the server', stage);
    this.durableEnd = end;
    this.report.bytesDirect += stage.length;
  }

  /** The file `fd`'s bytes [offset, offset+length) spliced onto the device (see WriteTarget.splice): only whole
   *  aligned blocks into aligned extents, with nothing staged before them; else false and nothing written. */
  async splice(fd: number, offset: number, length: number): Promise<boolean> {
    const spliceAt = this.device.spliceAt?.bind(this.device);
    if (!spliceAt || !this.direct || this.stage || length === 0 || offset % ALIGN !== 0 || length % ALIGN !== 0) return false;
    const end = offset + length;
    await this.allocate(end);
    this.prefetch(end);
    const pieces = piecesOf(this.map.extents, offset, end, end);
    // Extents in whole sectors of the device, as O_DIRECT needs (1 KiB blocks of ext4-1k are: the pipe's pages then
    // start at 1 KiB offsets, which the device's DMA alignment allows).
    const sector = this.device.info?.logicalSectorSize || 512;
    if (pieces.some((p) => p.physical % sector !== 0 || p.length % sector !== 0)) return false;
    // As flush: budget first; over the limit (or recalled meanwhile) the caller writes these bytes through the mount.
    const unpaced = await this.paced(length, pieces.length);
    if (unpaced) {
      this.overLimit = unpaced === OVER_LIMIT;
      await this.toMount(unpaced);
      return false;
    }
    if (!(await this.issue(pieces, (p, notAfter) => spliceAt(fd, offset + p.bufOffset, p.length, p.physical, notAfter)))) {
      await this.toMount('recalled: the file was opened on the server');
      return false;
    }
    this.durableEnd = end;
    this.report.bytesDirect += length;
    return true;
  }

  /** Issue one device write per piece, WRITE_DEPTH in flight, each under the write lease; `settled` after each
   *  completes. False when a recall (or the mount) stopped it before every piece was issued. */
  private async issue(pieces: readonly Piece[], start: (p: Piece, notAfter: number) => Promise<void>, settled: () => void = () => {}): Promise<boolean> {
    for (const p of pieces) {
      while (this.inflight.size >= WRITE_DEPTH) await Promise.race(this.inflight);
      if (this.failure) throw new WriteRestart(this.failure.message);
      if (this.recalled || this.mode !== 'direct') return false;
      // Nothing starts later than one margin before the deadline: a write slow to land still lands in time.
      if (!this.session.leaseValid(this.map.lease, performance.now() + LIMITS.leaseMarginMs)) {
        throw new WriteRestart(`write lease expired: no answer from the map server within the lease time (${this.session.leaseMs / 1000} s)`);
      }
      // The pool thread checks the deadline again right before its system call: a write that waited in the pool's
      // queue (or in a process stopped meanwhile) past it is never issued.
      const w = start(p, this.session.deadline(this.map.lease)).then(
        () => {
          if (!this.session.leaseValid(this.map.lease)) this.failure ??= new Error('a direct write completed after the lease deadline');
        },
        (err: unknown) => {
          this.failure ??= new Error(err instanceof SourceShrank ? err.message : `device write failed: ${reasonOf(err)}`);
        },
      );
      this.inflight.add(w);
      void w.finally(() => {
        this.inflight.delete(w);
        settled();
      });
    }
    return true;
  }

  /** Waits for budget for `bytes` in `ops` writes; the reason to go on through the mount instead, if any. */
  private async paced(bytes: number, ops: number): Promise<string | undefined> {
    if (!this.pace) return undefined;
    try {
      if (!this.pace.fallback) await this.pace.pacer.take(bytes, ops, this.stopWaiting.signal);
      else if (!(await this.pace.pacer.tryTake(bytes, ops))) return OVER_LIMIT;
      return undefined;
    } catch (err) {
      return this.recalled ? 'recalled: the file was opened on the server' : `grant: ${reasonOf(err)}`;
    }
  }

  private async drain(): Promise<void> {
    while (this.inflight.size > 0) await Promise.race(this.inflight);
    if (this.failure) throw new WriteRestart(this.failure.message);
  }

  /** Recalled: finish the writes in flight, COMMIT what is written, and go on through the mount (with the stage
   *  being flushed, if any, written there again whole). */
  private async toMount(reason: string, pending?: Stage): Promise<void> {
    if (this.mode !== 'direct') return;
    const stage = pending ?? this.stage;
    this.stage = undefined;
    await this.drain();
    const committed = pending ? pending.start : this.durableEnd;
    try {
      await this.session.commit(this.map.lease, committed);
    } catch (err) {
      throw new WriteRestart(`commit after a recall failed: ${reasonOf(err)}`);
    }
    this.stop();
    this.report.interrupted = true;
    this.report.fallback = true;
    this.report.reason = reason;
    this.report.path = 'mixed';
    this.mode = 'mount';
    this.mount = await MountTarget.open(this.path, { reason, fallback: true }, this.report, this.overwrite ? 'overwrite' : 'file');
    if (stage) {
      await this.mount.write(stage.start, stage.buf.subarray(0, stage.length), false);
      giveBuffer(stage.buf);
    }
  }

  async finish(size: number): Promise<void> {
    if ((await this.pause(size)) === null && this.mode === 'mount') await this.mount!.finish(size);
  }

  /** Everything below `size` is written: COMMIT (the server sets the size, never below the size at map time) and
   *  stop. Resolves to the size the server set, or null when the map was recalled first: the target then goes on
   *  through the mount. */
  async pause(size: number): Promise<number | null> {
    if (this.mode === 'direct' && this.recalled) await this.toMount('recalled: the file was opened on the server');
    if (this.mode === 'direct') await this.flush();
    // The last stage may have taken the file to the mount (over the limit, or a recall): it goes on there.
    if (this.overLimit) this.report.bytesOverLimit = this.report.bytesNetwork;
    if (this.mode !== 'direct') return null;
    await this.drain();
    let committed: number;
    try {
      ({ size: committed } = await this.session.commit(this.map.lease, size));
    } catch (err) {
      throw new WriteRestart(`commit failed: ${reasonOf(err)}`);
    } finally {
      this.stop();
    }
    this.mode = 'closed';
    return committed;
  }

  async restart(): Promise<void> {
    if (this.mode === 'mount') return this.mount!.restart();
    // Back through the mount from the start: the write map is given up (the server trims the file back).
    await this.abort();
    this.mode = 'mount';
    this.mount = await MountTarget.open(this.path, { reason: 'restarted through the mount', fallback: true }, this.report, this.overwrite ? 'overwrite' : 'file');
    await this.mount.restart();
    this.report.bytesDirect = 0;
    this.report.path = 'network';
    // The mount target keeps the report it is given, so the why is ours to set.
    this.report.fallback = true;
    this.report.reason = 'restarted through the mount';
  }

  async abort(): Promise<void> {
    if (this.mode === 'mount') return this.mount!.abort();
    if (this.mode === 'closed') return;
    this.mode = 'closed';
    await Promise.allSettled([...this.inflight]);
    if (this.stage) giveBuffer(this.stage.buf);
    this.stage = undefined;
    if (!this.session.isClosed) await this.session.release(this.map.lease).catch(() => {});
    this.stop();
  }

  /** No more device I/O: the device closed, no keep-alive, no recall listener. */
  private stop(): void {
    this.stopPings();
    this.session.off('recall', this.onRecall);
    void this.device.close();
  }
}

/** Where the file's DATA extents end (from 0, contiguously): what is allocated for writing. */
function dataEnd(extents: readonly MapExtent[]): number {
  let end = 0;
  for (const e of extents) {
    if (e.logical !== end || e.state !== 'DATA') break;
    end = e.logical + e.length;
  }
  return end;
}

/** The device writes for [start, end) of the file (start aligned), clipped to the DATA extents; bytes of data
 *  (below dataEnd) outside DATA extents are an error. */
interface Piece { bufOffset: number; length: number; physical: number }

function piecesOf(extents: readonly MapExtent[], start: number, end: number, dataEndAt: number): Piece[] {
  const out: Piece[] = [];
  let covered = start;
  for (const e of extents) {
    const s = Math.max(start, e.logical);
    const t = Math.min(end, e.logical + e.length);
    if (s >= t) continue;
    if (e.state !== 'DATA') break;
    if (s !== covered) break;
    out.push({ bufOffset: s - start, length: t - s, physical: e.physical + (s - e.logical) });
    covered = t;
  }
  if (covered < Math.min(end, dataEndAt)) throw new WriteRestart(`the write map has no DATA extent at byte ${covered}`);
  return out;
}

async function writeAll(fh: FileHandle, data: Buffer, position: number | null): Promise<void> {
  let off = 0;
  while (off < data.length) {
    const { bytesWritten } = await fh.write(data, off, data.length - off, position === null ? null : position + off);
    off += bytesWritten;
  }
}

export { ALIGN };
