// Copying files and trees off fused mounts: temporary name, rename when complete, path taken per file.
import { randomFillSync } from 'node:crypto';
import { chmod, chown, lstat, mkdir, open, readdir, readlink, realpath, rename, stat, symlink, unlink, utimes, type FileHandle } from 'node:fs/promises';
import { unlinkSync, type Dirent, type Stats } from 'node:fs';
import { FusedError, describeError, errnoCode } from '../errors.js';
import { StreamHash, hashFile, sha256File, type Checksum, type HashType } from './hash.js';
import { FileReader, type Chunk, type ReadReport, type Sink } from './reader.js';
import { totalsSince, type Throttle, type ThrottleTotals } from './pacer.js';
import { MountTarget, WriteRestart, type DirectWriter, type WriteReport, type WriteTarget } from './writer.js';
import { fadvise } from '../native/index.js';
import { baseBytes, dirBytes, joinBytes } from './paths.js';

const SLASH = 0x2f;

export interface CopyOptions {
  recursive: boolean;
  preserve: boolean;
  noClobber: boolean;
  force: boolean;
  verify: boolean;
  /** Overwrite an existing destination file where it stands (same inode, no temporary, no rename). */
  inplace?: boolean;
  /** Files of a tree copied at once (default 1: one after another). Results are reported in walk order anyway. */
  jobs?: number;
  /** Checksum the bytes as they are copied (--checksum); with verify, the copy is read back and compared to it. */
  checksum?: HashType;
}

/** Files copied at once by default (-j): enough to overlap the network mount's round trips and the local disk's
 *  fsyncs of small files (measured: 1,000 files of 64 KiB over sshfs, 8 -> 16 took 1.2 s -> 1.1 s). */
export const DEFAULT_JOBS = 16;
/** Large files (over LARGE_FILE bytes) copied at once, at most, whatever -j says: each keeps the device's queue
 *  full on its own and holds up to 16 buffers of 4 MiB; more at once only adds memory. */
export const LARGE_AT_ONCE = 4;
export const LARGE_FILE = 8 * 1024 * 1024;

export type CopyStatus = 'copied' | 'skipped' | 'failed';

export interface FileResult {
  source: Buffer;
  destination: Buffer;
  status: CopyStatus;
  report?: ReadReport;
  /** How the destination was written (direct or through the mount). */
  write?: WriteReport;
  seconds: number;
  verified?: boolean;
  /** Of the bytes as they were copied (CopyOptions.checksum). */
  checksum?: Checksum;
  /** Pacing of this file: time waited for budget (grants, --limit) and grants drawn while it was copied. */
  throttle?: ThrottleTotals;
  error?: unknown;
  note?: string;
}

/** The copy is complete under its name, but its mode, ownership or timestamps could not be kept (-p). Like cp,
 *  the file stays; the error is about the destination. */
export class PreserveError extends FusedError {
  constructor(what: 'ownership' | 'permissions' | 'timestamps', cause: unknown, destination: string) {
    super('failure', `cannot preserve ${what}: ${describeError(cause)}`, destination);
  }
}

/** The copy could not be created where it goes (its directory missing or not a directory, not writable, a
 *  read-only file system): about the destination, as cp reports it, not about the source. */
export class DestinationError extends FusedError {
  constructor(cause: unknown, destination: string) {
    super('failure', `cannot create the copy: ${describeError(cause)}`, destination);
  }
}

export interface CopyEvents {
  /** Called after each file (copied, skipped or failed). */
  file(result: FileResult): void;
  /** Bytes moved so far in the current file. */
  progress?(source: Buffer, bytes: number, size: number): void;
}

export class Copier {
  private readonly umask = process.umask();
  /** Temporary files that exist now (or are being created): removed by discardTemporaries() on a signal. */
  private readonly temporaries = new Set<Buffer>();
  /** Files being copied now, at most `jobs` (-j). */
  private readonly slots: Slots;
  /** Of those, large files (LARGE_AT_ONCE). */
  private readonly largeSlots: Slots;

  constructor(
    private readonly reader: FileReader,
    private readonly opts: CopyOptions,
    private readonly events: CopyEvents,
    /** Writes destinations on fused mounts straight to the device; null: always through the mount. */
    private readonly writer: DirectWriter | null = null,
    /** The pacing shared by the reader and the writer, for each file's share of it. */
    private readonly throttle?: Throttle,
  ) {
    this.slots = new Slots(Math.max(1, opts.jobs ?? 1));
    this.largeSlots = new Slots(Math.min(this.slots.size, LARGE_AT_ONCE));
  }

  /** cp semantics for SRC... DST. Throws for whole-command errors (usage, target not a directory). */
  async run(sources: Buffer[], target: Buffer): Promise<void> {
    const targetStat = await stat(target).catch(() => undefined);
    const intoDir = targetStat?.isDirectory() ?? false;
    if (sources.length > 1 && !intoDir) {
      throw new FusedError('usage', targetStat ? 'is not a directory' : 'no such directory', `target '${target}'`);
    }
    // Results are reported in the order of the walk, whichever copy finishes first.
    const order = new InOrder<FileResult>((r) => this.events.file(r));
    for (const src of sources) {
      const dst = intoDir ? joinBytes(target, baseBytes(src)) : target;
      await this.copyTop(src, dst, order);
    }
  }

  private async copyTop(src: Buffer, dst: Buffer, order: InOrder<FileResult>): Promise<void> {
    const emit = order.place();
    let st: Stats;
    try {
      st = await stat(src); // command-line symlinks are followed, like cp
    } catch (err) {
      return this.fail(src, dst, err, emit);
    }
    if (st.isDirectory()) {
      if (!this.opts.recursive) return this.fail(src, dst, new FusedError('failure', 'is a directory (use -r to copy it)'), emit);
      if (await isInside(dirBytes(dst), src).catch(() => false)) return this.fail(src, dst, new FusedError('failure', 'cannot copy a directory into itself'), emit);
      emit(); // a directory's own results (if any) come after its entries'
      return this.copyDir(src, dst, st, order);
    }
    return this.copyEntry(src, dst, st, emit);
  }

  /** Copy a tree. Files are handed to the job slots as the walk finds them; the directory's own mode and times
   *  are set once every entry under it is done. */
  private async copyDir(src: Buffer, dst: Buffer, st: Stats, order: InOrder<FileResult>): Promise<void> {
    /** Made by this copy (owner-only until it is done): nothing is in it that the walk did not put there. */
    let fresh = false;
    const pending: Promise<void>[] = [];
    let ownResults: Emit | undefined;
    try {
      const existing = await lstat(dst).catch(() => undefined);
      if (existing && !existing.isDirectory()) throw new FusedError('failure', 'cannot overwrite non-directory with directory');
      // Owner-writable while we fill it; the final mode is set afterwards.
      if (!existing) {
        await mkdir(dst, { mode: 0o700 });
        fresh = true;
      }
      // The entry types come with the listing: no stat through the mount to tell a directory from a file.
      const entries = (await readdir(src, { encoding: 'buffer', withFileTypes: true })) as unknown as Dirent<Buffer>[];
      entries.sort((a, b) => Buffer.compare(a.name, b.name));
      for (const entry of entries) {
        const s = joinBytes(src, entry.name);
        const d = joinBytes(dst, entry.name);
        const emit = order.place();
        // A file system that does not give entry types (DT_UNKNOWN) gets an lstat first, as before.
        if (entry.isDirectory() || !knownType(entry)) {
          let est: Stats;
          try {
            est = await lstat(s);
          } catch (err) {
            this.fail(s, d, err, emit);
            continue;
          }
          // It may have been replaced since the listing: what lstat says now is what is copied.
          if (est.isDirectory()) {
            emit();
            await this.copyDir(s, d, est, order);
            continue;
          }
          pending.push((await this.slots.start(() => this.copyEntry(s, d, est, emit, fresh))).done);
          continue;
        }
        const { done } = await this.slots.start(async () => {
          let est: Stats;
          try {
            est = await lstat(s);
          } catch (err) {
            return this.fail(s, d, err, emit);
          }
          // A directory that replaced the file since the listing is not walked: it was not there to walk.
          if (est.isDirectory()) return this.fail(s, d, new FusedError('failure', 'became a directory while being copied (skipped)'), emit);
          return this.copyEntry(s, d, est, emit, fresh);
        });
        pending.push(done);
      }
      ownResults = order.place();
      await Promise.all(pending.splice(0));
      if (!existing) await chmod(dst, this.opts.preserve ? st.mode & 0o7777 : st.mode & 0o777 & ~this.umask);
      if (this.opts.preserve) {
        const kept = await this.preserve(dst, st, dst);
        if (kept) return this.fail(src, dst, kept, ownResults);
      }
      ownResults();
    } catch (err) {
      await Promise.all(pending);
      this.fail(src, dst, err, ownResults ?? order.place());
    }
  }

  /** Copy one non-directory; exactly one result goes to `emit`. `fresh`: `dst` is in a directory this copy made,
   *  so nothing is there yet (no lookup of it). */
  private async copyEntry(src: Buffer, dst: Buffer, st: Stats, emit: Emit, fresh = false): Promise<void> {
    const t0 = performance.now();
    if (st.isSymbolicLink()) {
      try {
        if (await this.skipExisting(dst)) return emit({ source: src, destination: dst, status: 'skipped', seconds: 0, note: 'destination exists (-n)' });
        const target = await readlink(src, { encoding: 'buffer' });
        const tmp = tempName(dst);
        this.temporaries.add(tmp);
        try {
          await symlink(target, tmp);
          await rename(tmp, dst).catch(async (err) => {
            await unlink(tmp).catch(() => {});
            throw err;
          });
        } finally {
          this.temporaries.delete(tmp);
        }
        emit({ source: src, destination: dst, status: 'copied', seconds: (performance.now() - t0) / 1000, note: 'symbolic link' });
      } catch (err) {
        this.fail(src, dst, err, emit);
      }
      return;
    }
    if (!st.isFile()) return this.fail(src, dst, new FusedError('failure', 'not a regular file, directory or symbolic link (skipped)'), emit);
    try {
      const there = fresh ? undefined : await this.existing(dst);
      if (there === 'skip') return emit({ source: src, destination: dst, status: 'skipped', seconds: 0, note: 'destination exists (-n)' });
      // With copies running at once, the pacing totals of this file's span include the others' (shared budget).
      const before = this.throttle?.totals();
      const copy = () => this.copyFile(src, dst, st, there);
      const result = st.size > LARGE_FILE && this.slots.size > 1 ? await this.largeSlots.run(copy) : await copy();
      const throttle = before && totalsSince(before, this.throttle!.totals());
      emit({ ...result, seconds: (performance.now() - t0) / 1000, ...(throttle ? { throttle } : {}) });
    } catch (err) {
      this.fail(src, dst, err, emit);
    }
  }

  /** -n: keep an existing destination. Also refuses to replace a directory with a file. */
  private async skipExisting(dst: Buffer): Promise<boolean> {
    return (await this.existing(dst)) === 'skip';
  }

  /** The destination as it is (lstat), or 'skip' to keep it (-n); a directory there is an error. */
  private async existing(dst: Buffer): Promise<Stats | undefined | 'skip'> {
    const d = await lstat(dst).catch(() => undefined);
    if (!d) return undefined;
    if (d.isDirectory()) throw new FusedError('failure', 'cannot overwrite directory with non-directory');
    return this.opts.noClobber ? 'skip' : d;
  }

  /** `linked`: the destination's lstat, if it exists (followed here when it is a symbolic link, as cp does). */
  private async copyFile(src: Buffer, dst: Buffer, st: Stats, linked: Stats | undefined): Promise<Omit<FileResult, 'seconds'>> {
    const existing = linked?.isSymbolicLink() ? await stat(dst).catch(() => undefined) : linked;
    if (existing && existing.dev === st.dev && existing.ino === st.ino) throw new FusedError('failure', 'source and destination are the same file');
    // A name ending in a slash that is not a directory (it would be one, were it there): refused before any byte is
    // copied, rather than at the rename.
    if (dst[dst.length - 1] === SLASH) throw new DestinationError(Object.assign(new Error('ENOTDIR: not a directory'), { code: 'ENOTDIR' }), dst.toString());
    // Devices and pipes (/dev/null, a FIFO) are written in order where they stand: there is nothing to rename.
    const stream = existing !== undefined && !existing.isFile();
    // --inplace: an existing file keeps its inode (hard links, owner, ACLs, xattrs); its bytes are replaced.
    let overwrite = existing !== undefined && existing.isFile() && this.opts.inplace === true;
    let path = stream || overwrite ? dst : tempName(dst);
    /** Written under a temporary name (not the destination itself). */
    const temporary = (p: Buffer): boolean => p !== dst;
    const forget = (p: Buffer) => {
      if (temporary(p)) this.temporaries.delete(p);
    };
    if (temporary(path)) this.temporaries.add(path);
    if (!stream) this.writer?.warmFor(dst, st.size);
    let fh: FileHandle;
    try {
      // In place: no O_TRUNC, no O_CREAT.
      fh = await open(path, stream ? 'w' : overwrite ? 'r+' : 'wx', this.createMode(st));
    } catch (err) {
      if (!this.opts.force || stream) {
        forget(path);
        throw new DestinationError(err, dst.toString());
      }
      // -f: a destination directory we cannot write into cannot be helped; anything else, remove and retry (a
      // file that could not be overwritten in place is then written anew, under a temporary name).
      await unlink(dst).catch(() => {});
      if (overwrite) {
        overwrite = false;
        path = tempName(dst);
        this.temporaries.add(path);
      }
      const retry = path;
      fh = await open(path, 'wx', this.createMode(st)).catch((e: unknown) => {
        forget(retry);
        throw new DestinationError(e, dst.toString());
      });
    }
    const kind = stream ? 'stream' : overwrite ? 'overwrite' : 'file';
    let target: WriteTarget;
    try {
      target = stream || !this.writer ? MountTarget.over(fh, undefined, kind) : await this.writer.open(path, st.size, fh, overwrite);
      if (kind === 'file' && target instanceof MountTarget && st.size >= WRITE_BEHIND) {
        // Not for a source that says it is sparse (fewer blocks than its size): its holes stay holes, as cp keeps
        // them, and a sparse image fits where its data fits.
        if (st.blocks * 512 >= st.size) await target.preallocate(st.size);
        target = new WriteBehind(target, target.fd);
      }
    } catch (err) {
      await fh.close().catch(() => {});
      if (temporary(path)) {
        await unlink(path).catch(() => {});
        forget(path);
      }
      throw err;
    }
    let done = false;
    const hash = this.opts.checksum ? new StreamHash(this.opts.checksum) : undefined;
    try {
      let written = 0;
      let end = 0;
      const sink = {
        write: async (chunk: Chunk) => {
          // Chunks come in file order; the hash takes its copy of the bytes while the write goes on. A failed
          // write still waits for the hash to take them, so a reset after it cannot come before them.
          const hashing = hash?.update(chunk.data);
          const kept = await target.write(chunk.offset, chunk.data, chunk.kind === 'zero', chunk.buf).finally(() => hashing?.catch(() => {}));
          await hashing;
          written += chunk.data.length;
          end = Math.max(end, chunk.offset + chunk.data.length);
          this.events.progress?.(src, written, st.size);
          return kept;
        },
        // Straight from the source onto the device where the target can (a direct write), unless the bytes must be
        // hashed as they go.
        ...(hash
          ? {}
          : {
              splice: async (fd: number, offset: number, length: number) => {
                if (!target.splice || !(await target.splice(fd, offset, length))) return false;
                written += length;
                end = Math.max(end, offset + length);
                this.events.progress?.(src, written, st.size);
                return true;
              },
            }),
        ...(stream
          ? {}
          : {
              restart: async () => {
                await target.restart();
                hash?.reset();
                written = 0;
                end = 0;
              },
            }),
      };
      let report: ReadReport;
      try {
        report = await this.copyOnce(src, sink);
      } catch (err) {
        if (!(err instanceof WriteRestart)) throw err;
        // What went to the device cannot be kept: the whole file again, through the mount.
        await target.abort();
        target = await MountTarget.open(path, { reason: err.message, fallback: true }, undefined, kind);
        hash?.reset();
        written = 0;
        end = 0;
        report = await this.copyOnce(src, sink);
      }
      if (stream) await target.finish(0);
      else {
        await target.finish(end);
        // A file overwritten in place keeps its mode, as cp keeps an existing destination's (unless -p).
        if (!overwrite && (this.opts.preserve || this.createMode(st) !== (st.mode & 0o777))) {
          await chmod(path, this.opts.preserve ? st.mode & 0o7777 : st.mode & 0o777 & ~this.umask);
        }
      }
      done = true;
      const checksum = await hash?.digest();
      let verified: boolean | undefined;
      // In place, the file is compared after it has been overwritten (there is no temporary to keep it from).
      if (this.opts.verify && !stream && checksum) {
        // The source's bytes were hashed as they were copied: only the copy is read again.
        const back = await hashFile(path, checksum.type);
        verified = back.hex === checksum.value;
        if (!verified) throw new FusedError('mismatch', `verification failed: ${checksum.type} of the copy ${back.hex} differs from the bytes copied ${checksum.value}`);
      } else if (this.opts.verify && !stream) {
        const [a, b] = await Promise.all([sha256File(path), sha256File(src)]);
        verified = a.hex === b.hex;
        if (!verified) throw new FusedError('mismatch', `verification failed: sha256 of the copy ${a.hex} differs from the source through the mount ${b.hex}`);
      }
      // Like cp, a copy whose attributes could not be kept still gets its name; the failure is reported.
      let kept: PreserveError | undefined;
      if (!stream && this.opts.preserve) kept = await this.preserve(path, st, dst);
      if (temporary(path)) {
        await rename(path, dst);
        forget(path);
      }
      return {
        source: src, destination: dst, status: kept ? 'failed' : 'copied', report, write: target.report,
        ...(verified !== undefined ? { verified } : {}), ...(checksum ? { checksum } : {}), ...(kept ? { error: kept } : {}),
      };
    } catch (err) {
      hash?.close();
      if (!done) await target.abort();
      // A file overwritten in place stays, old and new bytes mixed: that is what in place means.
      if (temporary(path)) {
        await unlink(path).catch(() => {});
        forget(path);
      }
      throw err;
    }
  }

  /** The mode a new destination is created with: like cp, the source's permission bits (the umask applies), so no
   *  chmod follows; owner read and write are kept while it is written (and with -p, which sets the mode last). */
  private createMode(st: Stats): number {
    return this.opts.preserve ? 0o600 : (st.mode & 0o777) | 0o600;
  }

  /** One read of the source into the sink; a file that changed while its restarted copy was read is copied
   *  again, a few times, so the result is one version of it; a pipe or device cannot be rewound at all. */
  private async copyOnce(src: Buffer, sink: Sink): Promise<ReadReport> {
    let report = await this.reader.read(src, sink);
    const first = report;
    for (let attempt = 1; report.changed && sink.restart && attempt < CHANGED_RETRIES; attempt++) {
      await sink.restart();
      report = await this.reader.read(src, sink);
    }
    if (report.changed) throw new FusedError('failure', `changed while being read (${report.reason})`);
    // Copied again: the copy is of one version, but say what happened to the first try.
    if (report !== first) return { ...report, interrupted: true, fallback: true, reason: `${first.reason}; changed while being read, copied again` };
    return report;
  }

  /** -p: ownership, mode and times, in that order (chown clears set-id bits). Every step is tried; the first
   *  failure is returned. As cp does, a non-root user's EPERM/EINVAL from chown is not an error (it can only
   *  ever give files away). */
  private async preserve(path: Buffer, st: Stats, dst: Buffer): Promise<PreserveError | undefined> {
    const name = dst.toString();
    let first: PreserveError | undefined;
    await chown(path, st.uid, st.gid).catch((err: unknown) => {
      const code = errnoCode(err);
      if (process.getuid?.() !== 0 && (code === 'EPERM' || code === 'EINVAL')) return;
      first ??= new PreserveError('ownership', err, name);
    });
    await chmod(path, st.mode & 0o7777).catch((err: unknown) => {
      first ??= new PreserveError('permissions', err, name);
    });
    await utimes(path, st.atime, st.mtime).catch((err: unknown) => {
      first ??= new PreserveError('timestamps', err, name);
    });
    return first;
  }

  /** Remove every temporary file now, synchronously (for a signal handler that exits right after). Returns
   *  how many were removed. A copy being renamed either lost its temporary name already (it is complete) or
   *  will fail to rename. */
  discardTemporaries(): number {
    let removed = 0;
    for (const path of this.temporaries) {
      try {
        unlinkSync(path);
        removed++;
      } catch {
        // not created yet, or renamed into place already
      }
    }
    this.temporaries.clear();
    return removed;
  }

  private fail(source: Buffer, destination: Buffer, error: unknown, emit: Emit): void {
    emit({ source, destination, status: 'failed', seconds: 0, error });
  }
}

/** Fills one place in the walk order with its results (none, for a directory that went well). Once. */
type Emit = (...results: FileResult[]) => void;

/** Hands results on in the order their places were taken, however the work behind them interleaves. */
export class InOrder<T> {
  private taken = 0;
  private next = 0;
  private readonly filled = new Map<number, T[]>();

  constructor(private readonly deliver: (item: T) => void) {}

  /** The next place in order; call what it returns once, with that place's results. */
  place(): (...items: T[]) => void {
    const at = this.taken++;
    let done = false;
    return (...items: T[]) => {
      if (done) throw new Error(`place ${at} filled twice`);
      done = true;
      this.filled.set(at, items);
      for (let ready = this.filled.get(this.next); ready; ready = this.filled.get(this.next)) {
        this.filled.delete(this.next++);
        for (const item of ready) this.deliver(item);
      }
    };
  }
}

/** At most `size` tasks at once. start() resolves once its task has begun (so a walk never runs far ahead of
 *  the copies), with the task's completion; with one slot it resolves when the task has finished (in order). */
export class Slots {
  private running = 0;
  private readonly waiting: (() => void)[] = [];

  constructor(readonly size: number) {}

  async start(task: () => Promise<void>): Promise<{ done: Promise<void> }> {
    if (this.running >= this.size) await new Promise<void>((resolve) => this.waiting.push(resolve));
    this.running++;
    const done = task().finally(() => {
      this.running--;
      this.waiting.shift()?.();
    });
    if (this.size === 1) await done;
    return { done };
  }

  /** Run `task` in a slot (waiting for one) and give its result. */
  async run<T>(task: () => Promise<T>): Promise<T> {
    let result!: T;
    const { done } = await this.start(async () => {
      result = await task();
    });
    await done;
    return result;
  }
}

function knownType(e: Dirent<Buffer>): boolean {
  return e.isFile() || e.isDirectory() || e.isSymbolicLink() || e.isFIFO() || e.isSocket() || e.isCharacterDevice() || e.isBlockDevice();
}

/** Bytes of a new file written through the page cache between two steps of WriteBehind (and the least size for it). */
const WRITE_BEHIND = 32 * 1024 * 1024;

/**
 * A large new file written through the page cache (a local disk, or a network mount where the direct path is not
 * taken), with the disk kept busy behind the writes: every WRITE_BEHIND bytes, the step just written is sent on its
 * way to the disk (POSIX_FADV_DONTNEED starts writeback of dirty pages) and the step before it, written back by
 * then, leaves the cache. Without it a 1 GiB copy only fills the page cache (well under the kernel's dirty limits)
 * and the closing fsync then writes all of it, after the reads instead of beside them; and the copy pushes other
 * pages out of the cache. Advice only: errors are ignored.
 */
class WriteBehind implements WriteTarget {
  /** Writeback was started below this. */
  private started = 0;
  /** Dropped from the cache below this. */
  private dropped = 0;
  /** The advice given last (one at a time, on the pool). */
  private advising: Promise<void> = Promise.resolve();

  constructor(private readonly inner: WriteTarget, private readonly fd: number) {}

  get report(): WriteReport {
    return this.inner.report;
  }

  async write(offset: number, data: Buffer, zero: boolean, buf?: Buffer): Promise<boolean> {
    const kept = await this.inner.write(offset, data, zero, buf);
    const end = offset + data.length;
    if (end - this.started >= WRITE_BEHIND) {
      const [dropFrom, dropTo, startFrom] = [this.dropped, this.started, this.started];
      this.dropped = this.started;
      this.started = end;
      this.advising = this.advising.then(async () => {
        if (dropTo > dropFrom) await fadvise(this.fd, dropFrom, dropTo - dropFrom, 'dontneed').catch(() => {});
        await fadvise(this.fd, startFrom, end - startFrom, 'dontneed').catch(() => {});
      });
    }
    return kept;
  }

  async finish(size: number): Promise<void> {
    await this.advising;
    await this.inner.finish(size);
  }

  async restart(): Promise<void> {
    await this.advising;
    this.started = this.dropped = 0;
    await this.inner.restart();
  }

  async abort(): Promise<void> {
    await this.advising;
    await this.inner.abort();
  }
}

/** Copies of a file that keeps changing while it is read, before fusedcp gives up on it. */
const CHANGED_RETRIES = 3;

/** `.NAME.fused-XXXXXXXX` beside `dst`: where a file is written before it is renamed into place. */
export function tempName(dst: Buffer): Buffer {
  return joinBytes(dirBytes(dst), Buffer.concat([Buffer.from('.'), baseBytes(dst).subarray(0, 200), Buffer.from(`.fused-${randomHex()}`)]));
}

/** 8 random hex digits, drawn from a pool filled 1 KiB at a time (one call per file of a tree is measurable). */
const randomPool = Buffer.alloc(1024);
let randomAt = randomPool.length;
function randomHex(): string {
  if (randomAt + 4 > randomPool.length) {
    randomFillSync(randomPool);
    randomAt = 0;
  }
  randomAt += 4;
  return randomPool.toString('hex', randomAt - 4, randomAt);
}

/** Whether `inner` is `outer` or below it (both resolved). */
async function isInside(inner: Buffer, outer: Buffer): Promise<boolean> {
  const a = (await realpath(inner, { encoding: 'buffer' })) as Buffer;
  const b = (await realpath(outer, { encoding: 'buffer' })) as Buffer;
  return a.equals(b) || (a.length > b.length && a.subarray(0, b.length).equals(b) && a[b.length] === SLASH);
}
