// The direct reader: a file's bytes in order, DATA from the device, zeros without I/O, the rest through the mount.
import { open, stat, type FileHandle } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import type { BigIntStats } from 'node:fs';
import { describeError, errorMessage, FusedError } from '../errors.js';
import { CHUNK, giveBuffer, takeBuffer } from './buffers.js';
import { networkReason, sliceMap, type MapExtent } from '../volume/extents.js';
import type { FuseClient } from './client.js';
import { ALIGN, Device } from './device.js';
import type { FileMap, Session } from './session.js';
import { mapMismatch } from './mapcheck.js';
import { OVER_LIMIT, type Pacer, type Throttle } from './pacer.js';
import { deepDepth, DepthTuner, parseCpuTimes, type DepthDecision, type TunerSettings } from './depth.js';
import { readQueueFacts } from '../sys/blockdev.js';

export { CHUNK };
/** Device requests in flight at first; each holds a libuv pool thread (fusedcat raises UV_THREADPOOL_SIZE to 40 at
 *  start-up, the other commands to 16, which leaves room for the sink's writes). Measured on a disk-backed loop device:
 *  4 reads of 4 MiB in flight reach about 0.75 of what fio reads at depth 8, 8 about as much. A large read may go
 *  deeper (DEEP_MAX), once it has measured that the device gives more for it (depth.ts): on that device fusedcat's
 *  read phase (first GRANT to RELEASE, medians of 6-8 interleaved runs of 1 GiB) took 7-23 % less time at 32 than at
 *  8, and no less at 16, or at 32 reads of 1 or 2 MiB. */
export const DEPTH = 8;
/** The deepest a read goes (32 reads of 4 MiB: 128 MiB in flight), fewer where the device's queue holds less. */
export const DEEP_MAX = 32;
/** Reads of at least this many device bytes try a deeper depth (a smaller one ends before the trial can tell). */
export const TUNE_AT_LEAST = 256 * 1024 * 1024;
/** Large direct reads with a depth trial under way in this process (a caller may read several files at once). */
let largeReads = 0;
export const DEFAULT_SMALL_FILE = 256 * 1024;
/** Chunks read ahead through the mount while the sink takes the current one. */
const READ_AHEAD = 3;

export type ChunkKind = 'direct' | 'zero' | 'network';
/** Bytes at `offset` of the file. `data` is only valid until the sink's promise resolves (buffers are reused),
 *  unless the sink keeps `buf`, the shared buffer `data` lies in (see Sink.write). */
export interface Chunk { offset: number; data: Buffer; kind: ChunkKind; buf?: Buffer }

export interface Sink {
  /** Resolves true when the sink kept `chunk.buf` (it gives it back to the shared pool when done with it). */
  write(chunk: Chunk): Promise<void | boolean>;
  /** Throw away everything written so far (for a consistent restart through the mount); absent for pipes. */
  restart?(): Promise<void>;
  /** Take the bytes [offset, offset+length) of the open file `fd` straight from it (spliced), in order like write;
   *  false: not so, nothing taken (they are read and written as usual). */
  splice?(fd: number, offset: number, length: number): Promise<boolean>;
}

export interface ReadReport {
  size: number;
  path: 'direct' | 'network' | 'mixed';
  /** Why (some) bytes went through the network mount, or null. */
  reason: string | null;
  /** The direct path was wanted but could not be used (a small read or --network-only is a choice, not this). */
  fallback: boolean;
  bytesDirect: number;
  bytesZero: number;
  bytesNetwork: number;
  /** Bytes read through the mount because the direct path was over the throttle limit (--fallback); part of
   *  bytesNetwork. */
  bytesOverLimit?: number;
  /** The map was recalled or lost mid-read. */
  interrupted: boolean;
  /** The device reads kept in flight, when the read was large enough to try a deeper depth and got that far. */
  depth?: DepthDecision;
  /** The file's size or mtime through the mount moved while it was read (after an interruption, or through the
   *  mount when the direct path was refused): the bytes delivered may mix old and new content (unless the sink
   *  could restart). */
  changed: boolean;
}

/** What the reader needs of a device (Device; tests pass fakes). */
export type DeviceReader = Pick<Device, 'path' | 'info' | 'fsSize' | 'readInto' | 'close' | 'outside'>;

/** What the reader needs of the fuse client (FuseClient; tests pass fakes). */
export type MapSource = Pick<FuseClient, 'resolve' | 'map'> & Partial<Pick<FuseClient, 'warm' | 'warmPath'>>;

export interface ReaderOptions {
  networkOnly?: boolean;
  /** Opens a proven device path, checking its UUID (default Device.open). */
  openDevice?: (path: string, uuid: string) => Promise<DeviceReader>;
  /** Files smaller than this go through the mount: a map round trip costs more than it saves. */
  smallFile?: number;
  /** Paces device reads by the server's grants (and, with fallback, sends what is over the limit through the
   *  mount); its --limit paces every byte delivered. */
  throttle?: Throttle;
  /** Device reads in flight, fixed (default: DEPTH, deeper for a large read where the device gives more for it).
   *  Half as many chunks again may be read and waiting for delivery. */
  depth?: number;
  /** The deeper depth's trial (depth.ts): true for it, settings in place of its defaults, or none (the default).
   *  fusedcat asks for it unless the bytes go into a file, and fusedcp never does. On the bed, where the destination file shares the disk the
   *  image is on, fusedcp with the trial was 18-20 % slower (A/B, 9 and 11 rounds: 577 against 706-710 MB/s): while
   *  the page cache takes the first writes the consumer waits for the device, so the trial goes deep, and then 32
   *  reads in flight take the disk time the destination's writeback needs. */
  tune?: (Partial<TunerSettings> & { atLeast?: number }) | boolean;
  /** Opens the file through the mount (default fs/promises open, read-only); tests watch the handle with it. */
  openMount?: (file: Buffer) => Promise<FileHandle>;
}

/** How one read is paced: its session's budget on the volume, and the signal a recall or lost connection aborts. */
interface Pace { pacer: Pacer; fallback: boolean; signal: AbortSignal }

/** A read from the device failed: a reason to fall back to the mount, not to fail the file. */
class DeviceReadError extends Error {}

/** A device read completed after the lease deadline: its bytes are thrown away. */
class LateReadError extends Error {}

/** One shared zero chunk: ZERO and HOLE ranges never touch the device. */
const ZEROS = Buffer.alloc(CHUNK);

export class FileReader {

  constructor(
    private readonly client: MapSource | null,
    private readonly opts: ReaderOptions = {},
  ) {}

  /** Read [offset, offset+length) of `file` (a path through the network mount) into `sink`, in order. */
  async read(file: Buffer, sink: Sink, range: { offset?: number; length?: number } = {}): Promise<ReadReport> {
    // Open through the mount first: the network file system's own permission checks apply (safety rule 5).
    const openMount = this.opts.openMount ?? ((f: Buffer) => open(f, 'r'));
    const fh = await openMount(file);
    try {
      const initial = await fh.stat({ bigint: true });
      const size = Number(initial.size);
      const start = Math.min(range.offset ?? 0, size);
      const end = range.length === undefined ? size : Math.min(size, start + range.length);
      const report: ReadReport = { size, path: 'network', reason: null, fallback: false, bytesDirect: 0, bytesZero: 0, bytesNetwork: 0, interrupted: false, changed: false };
      const direct = await this.prepare(file, fh, initial, end - start);
      if ('reason' in direct) {
        report.reason = direct.reason;
        report.fallback = !direct.choice;
        await this.viaMount(fh, start, end, sink, report);
        // Wanted direct but refused (often: a writer has the file open on the server): was it one version?
        if (report.fallback) {
          report.changed = (await changedSince(file, initial)) || (direct.version !== undefined && (await direct.version()) === undefined);
        }
        return report;
      }
      const { map, session, device, volume } = direct;
      let reached: number;
      let lost: string | null = null;
      try {
        ({ reached, lost } = await this.pipeline(fh, map, session, device, volume, start, end, sink, report));
      } finally {
        await device.close();
      }
      report.path = report.bytesNetwork > 0 ? 'mixed' : 'direct';
      report.fallback = report.bytesNetwork > 0;
      if (report.bytesNetwork > 0) report.reason = [networkReasons(map.extents), report.bytesOverLimit ? OVER_LIMIT : ''].filter(Boolean).join('; ');
      if (lost === null) return report;
      // Recalled or cut off: the map may no longer describe the file. Finish through the mount, from a fresh open
      // (an fd opened before the change may keep stale data), restarting when the sink can.
      report.interrupted = true;
      report.fallback = true;
      report.reason = lost;
      report.path = 'mixed';
      const again = await openMount(file);
      try {
        const now = await again.stat({ bigint: true });
        if (sink.restart) {
          // A restarted read is one version of the file, unless it changes again while it is read.
          await sink.restart();
          report.bytesDirect = report.bytesZero = report.bytesNetwork = 0;
          report.path = 'network';
          const nowSize = Number(now.size);
          report.size = nowSize;
          await this.viaMount(again, start, range.length === undefined ? nowSize : Math.min(nowSize, start + range.length), sink, report);
          report.changed = await changedSince(file, now);
        } else {
          // The bytes already delivered are of the version first opened.
          await this.viaMount(again, reached, end, sink, report);
          report.changed = now.size !== initial.size || now.mtimeNs !== initial.mtimeNs || (await changedSince(file, now));
        }
      } finally {
        await again.close();
      }
      return report;
    } finally {
      await fh.close();
    }
  }

  /** Everything the direct path needs, or the reason it cannot be used. */
  private async prepare(file: Buffer, fh: FileHandle, opened: BigIntStats, wanted: number): Promise<{ map: FileMap; session: Session; device: DeviceReader; volume: string } | { reason: string; choice?: true; version?: () => Promise<string | undefined> }> {
    const size = Number(opened.size);
    if (this.opts.networkOnly) return { reason: 'network path requested (--network-only)', choice: true };
    if (!this.client) return { reason: 'no fuses on this node' };
    // A small read goes through the mount wherever the file is: no path resolution for it (many small files).
    const small = this.opts.smallFile ?? DEFAULT_SMALL_FILE;
    if (wanted < small) return { reason: `small read (${wanted} bytes < ${small}): the network is cheaper than a map round trip`, choice: true };
    // The session and the proof start now for the fuse the path names as written, while the path is resolved.
    this.client.warmPath?.(file);
    let fused;
    try {
      fused = await this.client.resolve(file);
    } catch (err) {
      return { reason: errorMessage(err) };
    }
    if (!fused) return { reason: 'not on a fused mount' };
    // The session and the device's proof go on while our pages are flushed (the map itself must wait for that).
    this.client.warm?.(fused.fuse);
    // Our own dirty pages of the file reach the server before it maps the file (safety rule 4). A mount that
    // cannot flush at all (no fsync in the protocol) has nothing of ours to flush: writes went straight out.
    try {
      await fh.datasync();
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== 'ENOSYS' && code !== 'EINVAL' && code !== 'EOPNOTSUPP' && code !== 'ENOTSUP') {
        return { reason: `flushing this node's writes to the file through the mount failed (${errorMessage(err)}): the device may not hold them yet` };
      }
    }
    let got;
    try {
      got = await this.client.map(fused);
    } catch (err) {
      return { reason: `map server: ${errorMessage(err)}` };
    }
    const { map, session } = got;
    const release = () => session.release(map.lease).catch(() => {});
    // The map must be of the file we opened: the path may have been renamed over meanwhile, and the map must
    // describe that file as the mount shows it (inode and nanoseconds where the mount passes them through). The
    // device's proof goes on meanwhile.
    const now = await stat(file, { bigint: true }).catch(() => undefined);
    if (!now || now.dev !== opened.dev || now.ino !== opened.ino || now.size !== opened.size || now.mtimeNs !== opened.mtimeNs) {
      await release();
      return { reason: 'the file was replaced or changed while it was being mapped' };
    }
    const mismatch = mapMismatch(map, now, fused.fuse);
    if (mismatch) {
      await release();
      return { reason: mismatch };
    }
    if (map.extents.length > 0 && map.extents.every((e) => e.state === 'NETWORK')) {
      await release();
      // The server's change token (inode and ctime to the nanosecond) tells, after the read through the mount,
      // whether the file changed meanwhile, finer than any network file system's attributes.
      const client = this.client;
      const version = async () => {
        const again = await client.map(fused).catch(() => undefined);
        if (!again) return undefined;
        await again.session.release(again.map.lease).catch(() => {});
        return again.map.change;
      };
      return { reason: map.networkReason ?? networkReasons(map.extents), version: async () => (await version()) === map.change ? map.change : undefined };
    }
    // The device proven by its content for this session (rule 7), found by its identity: never just the recorded
    // path. Its proof's own descriptor is shared by the session's readers.
    const proven = await got.device;
    if (!('path' in proven)) {
      await release();
      return { reason: proven.reason };
    }
    let device: DeviceReader;
    if (proven.device && !this.opts.openDevice) {
      device = proven.device.borrow();
    } else {
      try {
        device = await (this.opts.openDevice ?? Device.open)(proven.path, fused.fuse.uuid);
      } catch (err) {
        await release();
        return { reason: err instanceof FusedError && err.subject ? `${err.subject}: ${err.message}` : `device: ${errorMessage(err)}` };
      }
    }
    // Every DATA extent must lie inside the device and its file system (never another volume's bytes).
    const outside = device.outside(map.extents);
    if (outside) {
      await device.close();
      await release();
      return { reason: outside };
    }
    return { map, session, device, volume: fused.fuse.volume };
  }

  /** Up to `depth` reads in flight, delivered strictly in file order. Stops starting reads at a recall. */
  private async pipeline(
    fh: FileHandle, map: FileMap, session: Session, device: DeviceReader, volume: string,
    start: number, end: number, sink: Sink, report: ReadReport,
  ): Promise<{ reached: number; lost: string | null }> {
    let lost: string | null = null;
    /** Device reads not yet finished; a recall is answered as soon as they are (not when the sink drains). */
    const reading = new Set<Promise<unknown>>();
    let answered: Promise<void> | undefined;
    const answer = (verb: 'RELEASE' | 'RETURN') => {
      answered ??= Promise.allSettled([...reading]).then(async () => {
        if (!session.isClosed) await session.release(map.lease, verb).catch(() => {});
      });
      return answered;
    };
    // A recall or a lost connection lets go of reads waiting for budget: they must not hold up the RETURN.
    const stopWaiting = new AbortController();
    const throttle = this.opts.throttle;
    const pace: Pace | undefined = throttle && { pacer: throttle.pacer(session, volume), fallback: throttle.fallback, signal: stopWaiting.signal };
    const onRecall = (lease: string) => {
      if (lease !== map.lease) return;
      lost ??= 'recalled: the file was opened for writing or truncated on the server';
      stopWaiting.abort(new Error(lost));
      // Reads already issued return old, consistent bytes: the writer waits for our RETURN, so send it promptly.
      void answer('RETURN');
    };
    /** The server's lease went with the connection: reads not yet delivered are no longer covered by it. */
    let unguarded = false;
    const onClose = (why: string) => {
      lost ??= `map server connection lost (${why})`;
      unguarded = true;
      stopWaiting.abort(new Error(lost));
    };
    session.on('recall', onRecall);
    session.on('close', onClose);
    // A recall or a lost connection may have come while the map was being fetched or the device opened.
    if (session.isRecalled(map.lease)) onRecall(map.lease);
    if (session.isClosed) onClose('closed before the first read');
    const expired = () => `lease expired: no answer from the map server within the lease time (${session.leaseMs / 1000} s)`;
    const sliced = sliceMap(map.extents, start, end - start);
    const segments = segmentsOf(sliced);
    const depth = Math.max(1, this.opts.depth ?? DEPTH);
    /** Chunks read and not yet delivered, beyond the reads in flight (each holds a shared buffer): room for reads
     *  behind a slow head. Half the base depth (at least 2), not the depth again: each buffer of the window is fresh
     *  memory the first time, and faulting in 16 of them (64 MiB) cost 26 ms of CPU at the read's start; on a
     *  tmpfs-backed bed, where the device is the CPU, a 1 GiB read took 217 ms with a window of 16 and 188-191 with
     *  10 or 12 (medians of 12). */
    const spare = Math.max(2, Math.ceil(depth / 2));
    const tuner = await this.tuner(sliced, device, depth, (depth + spare) * CHUNK);
    if (tuner) largeReads++;
    /** Reads issued and not yet delivered, in file order (each holds a buffer). */
    const queue: Promise<Chunk & { buf?: Buffer; overLimit?: boolean }>[] = [];
    /** Reads not yet completed: at most the depth in force. */
    let active = 0;
    /** Set once delivery has ended: no more reads are issued. */
    let stopped = false;
    // A read is issued whenever one completes (not only when the head is delivered): a slow head does not leave
    // the device idle while the reads behind it wait for their turn.
    const pump = (): void => {
      const inFlight = tuner?.depth ?? depth;
      while (!stopped && lost === null && active < inFlight && queue.length < inFlight + spare) {
        // No device read starts past the lease deadline (the server may have let a writer in).
        if (!session.leaseValid(map.lease)) {
          lost = expired();
          break;
        }
        const next = segments.next();
        if (next.done) break;
        const p = this.fetch(fh, device, next.value, () => session.leaseValid(map.lease), pace);
        active++;
        reading.add(p);
        const settled = () => {
          active--;
          reading.delete(p);
          pump();
        };
        p.then((c) => {
          if (c.kind === 'direct') tuner?.done(c.data.length);
          settled();
        }, settled);
        queue.push(p);
      }
    };
    let reached = start;
    const stopPings = session.keepAlive();
    try {
      for (;;) {
        pump();
        // The head stays in the queue (holding its place in the window) until it is delivered.
        const head = queue[0];
        if (!head) break;
        let chunk: Chunk & { buf?: Buffer; overLimit?: boolean };
        try {
          const asked = tuner && performance.now();
          chunk = await head;
          if (asked) tuner.waited(performance.now() - asked);
          queue.shift();
        } catch (err) {
          if (err instanceof LateReadError) {
            // Completed past the deadline: its bytes may already be another file's. Never delivered.
            lost ??= expired();
            break;
          }
          if (!(err instanceof DeviceReadError)) throw err;
          // Fall back, don't fail: the rest of the file comes through the mount.
          lost ??= `device read failed: ${err.message}`;
          break;
        }
        if (unguarded) {
          if (chunk.buf) giveBuffer(chunk.buf);
          break;
        }
        await throttle?.limit(chunk.data.length);
        const kept = await sink.write(chunk);
        if (chunk.buf && kept !== true) giveBuffer(chunk.buf);
        reached = chunk.offset + chunk.data.length;
        if (chunk.overLimit) report.bytesOverLimit = (report.bytesOverLimit ?? 0) + chunk.data.length;
        if (chunk.kind === 'direct') report.bytesDirect += chunk.data.length;
        else if (chunk.kind === 'zero') report.bytesZero += chunk.data.length;
        else report.bytesNetwork += chunk.data.length;
      }
    } finally {
      stopped = true;
      stopPings();
      if (tuner) {
        largeReads--;
        if (tuner.decision) report.depth = tuner.decision;
      }
      // Drain reads still in flight after an error so their buffers are not written into later.
      for (const p of queue) {
        const c = await p.catch(() => undefined);
        if (c?.buf) giveBuffer(c.buf);
      }
      session.off('recall', onRecall);
      session.off('close', onClose);
      await answer(lost ? 'RETURN' : 'RELEASE');
    }
    return { reached, lost: reached < end ? lost : null };
  }

  /** The deeper depth's trial for a read of these extents, if it is large enough and its depth not fixed. */
  private async tuner(extents: readonly MapExtent[], device: DeviceReader, base: number, settleBytes: number): Promise<DepthTuner | undefined> {
    const t = this.opts.tune === true ? {} : this.opts.tune;
    if (!t || this.opts.depth !== undefined) return undefined;
    const bytes = extents.reduce((n, e) => n + (e.state === 'DATA' ? e.length : 0), 0);
    if (bytes < (t.atLeast ?? TUNE_AT_LEAST)) return undefined;
    const queue = device.info.isBlockDevice ? await readQueueFacts(device.info.rdevMajor, device.info.rdevMinor) : undefined;
    const settings: TunerSettings = {
      base,
      deep: deepDepth(queue, CHUNK, base, DEEP_MAX),
      settleBytes,
      intervalBytes: 128 * 1024 * 1024,
      intervalMs: 100,
      loss: 0.1,
      maxBusy: 0.4,
      minWaited: 0.5,
      now: () => performance.now(),
      cpu: () => {
        try {
          return parseCpuTimes(readFileSync('/proc/stat', 'latin1'));
        } catch {
          return undefined;
        }
      },
      alone: () => largeReads === 1,
      ...t,
    };
    return new DepthTuner(settings);
  }

  /** One piece: zeros, device bytes (checked against the lease deadline when the read completes), or the mount's
   *  (and, over the throttle limit with --fallback, a DATA piece too). */
  private async fetch(fh: FileHandle, device: DeviceReader, e: MapExtent, leaseValid: () => boolean, pace?: Pace): Promise<Chunk & { buf?: Buffer; overLimit?: boolean }> {
    if (e.state === 'ZERO' || e.state === 'HOLE') return { offset: e.logical, data: ZEROS.subarray(0, e.length), kind: 'zero' };
    let overLimit = false;
    if (e.state === 'DATA' && pace) {
      try {
        if (pace.fallback) overLimit = !(await pace.pacer.tryTake(e.length, 1));
        else await pace.pacer.take(e.length, 1, pace.signal);
      } catch (err) {
        throw new DeviceReadError(pace.signal.aborted ? errorMessage(pace.signal.reason) : `grant: ${errorMessage(err)}`);
      }
      // Waiting for budget counts as time: no device read starts past the lease deadline.
      if (!overLimit && !leaseValid()) throw new LateReadError();
    }
    const buf = takeBuffer();
    if (e.state === 'DATA' && !overLimit) {
      let data: Buffer;
      try {
        data = await device.readInto(buf, e.physical, e.length);
      } catch (err) {
        giveBuffer(buf);
        throw new DeviceReadError(err instanceof FusedError ? err.message : describeError(err));
      }
      if (!leaseValid()) {
        giveBuffer(buf);
        throw new LateReadError();
      }
      return { offset: e.logical, data, kind: 'direct', buf };
    }
    const data = await readFully(fh, buf, e.logical, e.length);
    if (data.length < e.length) throw new FusedError('failure', `file shrank while reading (at byte ${e.logical + data.length})`);
    return { offset: e.logical, data, kind: 'network', buf, ...(overLimit ? { overLimit } : {}) };
  }

  /** The plain path: read through the network mount. */
  private async viaMount(fh: FileHandle, start: number, end: number, sink: Sink, report: ReadReport): Promise<void> {
    // Reads run ahead of the sink (READ_AHEAD chunks, each in its own shared buffer), so the source and the
    // destination work at the same time.
    const ahead: { buf: Buffer; data: Promise<Buffer>; at: number }[] = [];
    let { next, paid } = await this.spliced(fh, start, end, sink, report);
    const fill = () => {
      while (ahead.length < READ_AHEAD && next < end) {
        const buf = takeBuffer();
        const at = next;
        ahead.push({ buf, at, data: readFully(fh, buf, at, Math.min(CHUNK, end - at)) });
        next = Math.min(end, at + CHUNK);
      }
    };
    try {
      fill();
      while (ahead.length > 0) {
        const { buf, data: reading, at } = ahead[0]!;
        const data = await reading;
        ahead.shift();
        if (data.length === 0) {
          giveBuffer(buf);
          break; // the file shrank: copy what is there, like cp
        }
        if (data.length < Math.min(CHUNK, end - at)) {
          // Short: the file shrank under us. What was read ahead past here is not used.
          next = at + data.length;
          for (const r of ahead.splice(0)) void r.data.catch(() => {}).then(() => giveBuffer(r.buf));
        }
        fill();
        // --limit: the chunk the sink would not take spliced was paid for already.
        await this.opts.throttle?.limit(Math.max(0, data.length - paid));
        paid = 0;
        const kept = await sink.write({ offset: at, data, kind: 'network', buf });
        if (kept !== true) giveBuffer(buf);
        report.bytesNetwork += data.length;
      }
    } finally {
      // A failed sink: let the reads ahead finish before their buffers go back.
      for (const r of ahead.splice(0)) {
        await r.data.catch(() => {});
        giveBuffer(r.buf);
      }
    }
  }

  /** The chunks from `start` on that the sink takes straight from the file (a direct write splices them onto the
   *  device: the bytes never pass through this process), until one it will not take so; returns where that one
   *  starts (`end` when it took all), and the bytes of it already paid for under --limit. */
  private async spliced(fh: FileHandle, start: number, end: number, sink: Sink, report: ReadReport): Promise<{ next: number; paid: number }> {
    let at = start;
    while (sink.splice && at < end) {
      const n = Math.min(CHUNK, end - at);
      await this.opts.throttle?.limit(n);
      if (!(await sink.splice(fh.fd, at, n))) return { next: at, paid: n };
      report.bytesNetwork += n;
      at += n;
    }
    return { next: at, paid: 0 };
  }
}

/** Whether the file at `file` (a fresh stat through the mount) differs in size or mtime from `before`. With a
 *  network file system that shows whole seconds only (sshfs), a change within the same second goes unseen. */
async function changedSince(file: Buffer, before: BigIntStats): Promise<boolean> {
  const after = await stat(file, { bigint: true }).catch(() => undefined);
  return !after || after.ino !== before.ino || after.size !== before.size || after.mtimeNs !== before.mtimeNs;
}

/** The distinct reasons the NETWORK extents of a map give, joined. */
function networkReasons(extents: readonly MapExtent[]): string {
  return [...new Set(extents.filter((e) => e.state === 'NETWORK').map((e) => networkReason(e.flags)))].join('; ');
}

async function readFully(fh: FileHandle, buf: Buffer, position: number, length: number): Promise<Buffer> {
  let got = 0;
  while (got < length) {
    const { bytesRead } = await fh.read(buf, got, length - got, position + got);
    if (bytesRead === 0) break;
    got += bytesRead;
  }
  return buf.subarray(0, got);
}

/** Cut map pieces into reads of at most CHUNK bytes. */
function* segmentsOf(extents: readonly MapExtent[]): Generator<MapExtent> {
  for (const e of extents) {
    for (let off = 0; off < e.length; off += CHUNK) {
      const length = Math.min(CHUNK, e.length - off);
      yield { ...e, logical: e.logical + off, physical: e.state === 'HOLE' ? 0 : e.physical + off, length };
    }
  }
}
