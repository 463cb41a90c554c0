// The direct writer: a file's bytes, in order, onto the client's own device inside the file's write map (ALLOC,
// O_DIRECT, COMMIT); the network mount whenever the direct path is not available or stops being safe.
import { open, type FileHandle } from 'node:fs/promises';
import { performance } from 'node:perf_hooks';
import { FusedError, errorMessage, reasonOf } from '../errors.js';
import { LIMITS } from '../protocol/index.js';
import type { MapExtent } from '../volume/extents.js';
import type { FuseClient } from './client.js';
import { ALIGN, Device, alignDown, alignUp } from './device.js';
import { DEFAULT_SMALL_FILE } from './reader.js';
import { OVER_LIMIT, type Pacer, type Throttle } from './pacer.js';
import { CHUNK, giveBuffer, takeBuffer } from './buffers.js';
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
}

/** Device writes in flight (fio's depth for the device's limit); each holds a libuv pool thread. */
export const WRITE_DEPTH = 8;

/** The most one ALLOC asks for: zeroing it (where the server must) stays well within a lease time. */
export const ALLOC_SLICE = 256 * 1024 * 1024;

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
export type DeviceWriter = Pick<Device, 'path' | 'writeAt' | 'outside' | 'close'>;

/** Chooses, per destination file, the direct path or the mount. */
export class DirectWriter {

  constructor(
    private readonly client: Pick<FuseClient, 'resolve' | 'map'> | null,
    private readonly opts: WriterOptions = {},
  ) {}

  /** A target for `path`, a file created through the network mount; `opened` is its descriptor there, kept for
   *  writing through the mount and closed only to try the direct path (so that the server can take the write
   *  lease). `sizeHint` is how many bytes are coming, if known (-1 when not). */
  async open(path: Buffer, sizeHint: number, opened?: FileHandle): Promise<WriteTarget> {
    let fh = opened;
    const network = async (reason: string, fallback: boolean) =>
      fh ? MountTarget.over(fh, { reason, fallback }) : MountTarget.open(path, { reason, fallback });
    if (this.opts.networkOnly) return network('network path requested (--network-only)', false);
    if (!this.client) return network('no fuses on this node', false);
    let fused;
    try {
      fused = await this.client.resolve(path);
    } catch (err) {
      return network(errorMessage(err), true);
    }
    if (!fused) return network('not on a fused mount', false);
    // A read-only node writes through the mount as a matter of course, not as a fallback.
    if (fused.fuse.access === 'ro') return network('this node is read-only on the map server (role ro)', false);
    const small = this.opts.smallFile ?? DEFAULT_SMALL_FILE;
    if (sizeHint >= 0 && sizeHint < small) return network(`small file (${sizeHint} bytes < ${small}): the network is cheaper than a map round trip`, false);
    if (fh) {
      await fh.close();
      fh = undefined;
    }
    let got;
    try {
      got = await this.client.map(fused, 'write');
    } catch (err) {
      return network(reasonOf(err), true);
    }
    const { map, session } = got;
    const release = () => session.release(map.lease).catch(() => {});
    if (map.networkReason || map.extents.some((e) => e.state === 'NETWORK')) {
      await release();
      return network(map.networkReason ?? 'parts of the file cannot be written directly (shared or not aligned)', true);
    }
    if ('reason' in got.device) {
      await release();
      return network(got.device.reason, true);
    }
    let device: DeviceWriter;
    try {
      device = await (this.opts.openDevice ?? ((p, u) => Device.open(p, u, { write: true })))(got.device.path, fused.fuse.uuid);
    } catch (err) {
      await release();
      return network(reasonOf(err), true);
    }
    const outside = device.outside(map.extents);
    if (outside) {
      await device.close();
      await release();
      return network(outside, true);
    }
    const throttle = this.opts.throttle;
    const target = new DirectTarget(path, session, device, map, throttle && { pacer: throttle.pacer(session, fused.fuse.volume), fallback: throttle.fallback });
    try {
      if (sizeHint > 0) await target.allocate(Math.min(sizeHint, ALLOC_SLICE), sizeHint);
    } catch (err) {
      await target.abort();
      // No room is no room through the mount either: say so instead of trying there.
      if (err instanceof FusedError) throw err;
      return network(`allocation: ${reasonOf(err)}`, true);
    }
    return target;
  }
}

/** Writes through the network mount: positioned writes, zeros left as holes, the size set at the end. */
export class MountTarget implements WriteTarget {
  readonly report: WriteReport;

  private constructor(
    private readonly fh: FileHandle,
    why: { reason: string | null; fallback: boolean },
    report?: WriteReport,
    /** A device or a pipe: written in order where it stands, zeros too, nothing to truncate or sync. */
    private readonly inPlace = false,
  ) {
    this.report = report ?? { path: 'network', reason: why.reason, fallback: why.fallback, bytesDirect: 0, bytesNetwork: 0, interrupted: false };
  }

  static async open(path: Buffer, why: { reason: string | null; fallback: boolean }, report?: WriteReport): Promise<MountTarget> {
    return new MountTarget(await open(path, 'r+'), why, report);
  }

  /** Over a descriptor the caller opened already; `inPlace` for a device or a pipe. */
  static over(fh: FileHandle, why: { reason: string | null; fallback: boolean } = { reason: null, fallback: false }, inPlace = false): MountTarget {
    return new MountTarget(fh, why, undefined, inPlace);
  }

  async write(offset: number, data: Buffer, zero: boolean): Promise<boolean> {
    // Zeros are left as holes (cp --sparse=auto); finish sets the size.
    if (this.inPlace) await writeAll(this.fh, data, null);
    else if (!zero) await writeAll(this.fh, data, offset);
    this.report.bytesNetwork += data.length;
    return false;
  }

  async finish(size: number): Promise<void> {
    if (this.inPlace) return this.fh.close();
    await this.fh.truncate(size);
    // The name must only ever show a complete file: the bytes reach the disk before the rename does.
    await this.fh.sync();
    await this.fh.close();
  }

  async restart(): Promise<void> {
    await this.fh.truncate(0);
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
  readonly report: WriteReport = { path: 'direct', reason: null, fallback: false, bytesDirect: 0, bytesNetwork: 0, interrupted: false };
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

  constructor(
    private readonly path: Buffer,
    private readonly session: Session,
    private readonly device: DeviceWriter,
    private map: FileMap,
    private readonly pace?: { pacer: Pacer; fallback: boolean },
  ) {
    session.on('recall', this.onRecall);
    if (session.isRecalled(map.lease)) this.recalled = true;
    this.allocatedEnd = dataEnd(map.extents);
    // The reply to each PING renews the lease.
    this.stopPings = session.keepAlive();
  }

  /** The file's size when it is known (a copy): allocation stops there. */
  private knownSize = -1;
  /** The ALLOC under way, if any (one at a time: replies come in order anyway). */
  private allocating: Promise<void> | undefined;

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

  /** Ask for the next slice while the current one is being written, so writing never waits for zeroing. */
  private prefetch(written: number): void {
    const more = this.knownSize < 0 || this.allocatedEnd < this.knownSize || written > this.knownSize;
    if (more && !this.allocating && this.allocatedEnd - written < ALLOC_SLICE / 2) {
      this.allocating = this.allocateNext().finally(() => (this.allocating = undefined));
      this.allocating.catch(() => {}); // its failure surfaces at the next allocate()
    }
  }

  private async allocateNext(): Promise<void> {
    const bs = this.map.blockSize;
    const from = Math.floor(this.allocatedEnd / bs) * bs;
    // Past the known size (the source grew) it is a stream again.
    const want = this.knownSize > from ? this.knownSize - from : Math.max(64 * 1024 * 1024, Math.floor(from / 8));
    const to = Math.ceil((from + Math.max(bs, Math.min(want, ALLOC_SLICE))) / bs) * bs;
    try {
      this.map = { ...(await this.session.alloc(this.map.lease, from, to - from)), lease: this.map.lease };
    } catch (err) {
      if ((err as { code?: string }).code === 'NOSPACE') {
        throw new FusedError('failure', `no space left on the volume for ${to - from} bytes (${errorMessage(err)})`);
      }
      throw err;
    }
    const outside = this.device.outside(this.map.extents);
    if (outside) throw new WriteRestart(outside);
    const now = dataEnd(this.map.extents);
    if (now < to) throw new Error(`the server allocated up to ${now}, not ${to}`);
    this.allocatedEnd = now;
  }

  async write(offset: number, data: Buffer, zero: boolean, buf?: Buffer): Promise<boolean> {
    if (this.mode === 'direct' && this.recalled) await this.toMount('recalled: the file was opened on the server');
    if (this.mode === 'mount') return this.mount!.write(offset, data, zero);
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
    for (const p of pieces) {
      while (this.inflight.size >= WRITE_DEPTH) await Promise.race(this.inflight);
      if (this.failure) throw new WriteRestart(this.failure.message);
      if (this.recalled || this.mode !== 'direct') {
        // Recalled mid-stage: what was issued of it is overwritten through the mount after the commit.
        await this.toMount('recalled: the file was opened on the server', stage);
        return;
      }
      // Nothing starts later than one margin before the deadline: a write slow to land still lands in time.
      if (!this.session.leaseValid(this.map.lease, performance.now() + LIMITS.leaseMarginMs)) {
        throw new WriteRestart(`write lease expired: no answer from the map server within the lease time (${this.session.leaseMs / 1000} s)`);
      }
      // The pool thread checks the deadline again right before its pwrite: a write that waited in the pool's queue
      // (or in a process stopped meanwhile) past it is never issued.
      const w = this.device.writeAt(stage.buf, p.bufOffset, p.length, p.physical, this.session.deadline(this.map.lease)).then(
        () => {
          if (!this.session.leaseValid(this.map.lease)) this.failure ??= new Error('a direct write completed after the lease deadline');
        },
        (err: unknown) => {
          this.failure ??= new Error(`device write failed: ${reasonOf(err)}`);
        },
      );
      this.inflight.add(w);
      void w.finally(() => {
        this.inflight.delete(w);
        done();
      });
    }
    this.durableEnd = end;
    this.report.bytesDirect += stage.length;
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
    this.mount = await MountTarget.open(this.path, { reason, fallback: true }, this.report);
    if (stage) {
      await this.mount.write(stage.start, stage.buf.subarray(0, stage.length), false);
      giveBuffer(stage.buf);
    }
  }

  async finish(size: number): Promise<void> {
    if (this.mode === 'direct' && this.recalled) await this.toMount('recalled: the file was opened on the server');
    if (this.mode === 'direct') await this.flush();
    // The last stage may have taken the file to the mount (over the limit, or a recall): it is committed there.
    if (this.overLimit) this.report.bytesOverLimit = this.report.bytesNetwork;
    if ((this.mode as string) === 'mount') return this.mount!.finish(size);
    await this.drain();
    try {
      await this.session.commit(this.map.lease, size);
    } catch (err) {
      throw new WriteRestart(`commit failed: ${reasonOf(err)}`);
    } finally {
      this.stop();
    }
    this.mode = 'closed';
  }

  async restart(): Promise<void> {
    if (this.mode === 'mount') return this.mount!.restart();
    // Back through the mount from the start: the write map is given up (the server trims the file back).
    await this.abort();
    this.mode = 'mount';
    this.mount = await MountTarget.open(this.path, { reason: 'restarted through the mount', fallback: true }, this.report);
    await this.mount.restart();
    this.report.bytesDirect = 0;
    this.report.path = 'network';
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
function piecesOf(extents: readonly MapExtent[], start: number, end: number, dataEndAt: number): { bufOffset: number; length: number; physical: number }[] {
  const out: { bufOffset: number; length: number; physical: number }[] = [];
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
