// Map leases: what each connection holds, the kernel read lease that guards each mapped file, and the lease-time
// contract (NFSv4 style): a recalled or orphaned map is let go only after RETURN or after the lease time has surely
// run out on the client.
import { randomBytes } from 'node:crypto';
import { closeSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { getLease, onLeaseBreak, setLease, type LeaseType } from '../native/index.js';
import { LIMITS } from '../protocol/index.js';

/** The connection side of a lease holder: how the table reaches a client. */
export interface LeaseHolder {
  /** Who, for the log: node name and peer address. */
  readonly name: string;
  /** Send `! RECALL lease=ID reason=...`. Resolves with the monotonic time (ms) from which no reply can reach the
   *  client ahead of the recall: when the line was queued on the socket, or when the connection ended if first. */
  recall(leaseId: string, reason: string): Promise<number>;
  /** End the connection at once (a recall that could not be queued in time). */
  abort(reason: string): void;
}

export interface Lease {
  id: string;
  holder: LeaseHolder;
  file: FileLease | undefined;
  recalled: boolean;
  /** When the holder's connection ended with this lease still held (monotonic ms). */
  orphanedAt?: number;
  /** Called once when the lease leaves the table (returned, released, revoked, expired). */
  onDrop?: () => void;
}

/** One open descriptor per mapped file carrying the kernel lease: a read lease shared by every read map of the
 *  file, or the write lease of its one writer. */
export interface FileLease {
  key: string;
  fd: number;
  mode: 'read' | 'write';
  leases: Set<Lease>;
  breaking: boolean;
  /** Called (synchronously) when the last map goes while the kernel lease is still held, before it is let go:
   *  a write map not committed is undone here. */
  onLastDrop?: () => void;
  /** Work in progress on the descriptor (an allocation): the undo and the close wait for it. */
  busy: number;
  /** The last map went while busy: undo and close when the work ends. */
  letGoWhenIdle: boolean;
  /** The read map last made under this kernel lease (see MapPolicy.map); dropped with the lease and at its break. */
  cache?: CachedMap;
  /** A read lease whose last map went: kept (and its cache with it) until then (performance.now() ms). */
  lingerUntil?: number;
}

/**
 * A read map kept with the kernel read lease it was made under: the file's version it describes (size, mtime, ctime
 * at FIEMAP time) and its extent lines, encoded. The kernel lease has been held since, so nobody has opened the
 * file for writing or truncated it (that breaks the lease, which drops this); the version is still checked by fstat.
 */
export interface CachedMap {
  size: bigint;
  mtimeNs: bigint;
  ctimeNs: bigint;
  /** How many X lines `body` holds. */
  extents: number;
  body: Buffer;
}

export type KernelLeaseResult = { ok: true; file: FileLease } | { ok: false; reason: string };

/** The kernel calls the table needs; tests pass fakes. */
export interface KernelLeases {
  setLease(fd: number, type: LeaseType): void;
  getLease(fd: number): LeaseType;
  onLeaseBreak(cb: (fd: number) => void): void;
  close(fd: number): void;
}

const NATIVE_KERNEL: KernelLeases = {
  setLease,
  getLease,
  onLeaseBreak,
  // Synchronous: closing a descriptor of a local file is one quick system call, and a trip through the thread
  // pool (fs.close) costs the event loop more than the call itself, on every map.
  close: (fd) => {
    try {
      closeSync(fd);
    } catch {
      // EBADF/EIO: the descriptor is gone either way
    }
  },
};

export interface LeaseTableOptions {
  /** T: how long a client may use a map after sending the last request that got a reply. */
  leaseTimeMs: number;
  /** Added to T on the server's side (the client subtracts its own): clock-rate differences, scheduling. */
  marginMs: number;
  /** A recall must be queued on the socket within this; else the connection is ended (its cutoff is then). */
  recallQueueMs: number;
  /** Files under a kernel lease at once (each holds a descriptor). */
  maxFiles: number;
  /** How long a read lease with a cached map and no map holder left is kept, so a repeat map of the file finds
   *  its cache (default MAP_LINGER_MS; 0: not at all). */
  lingerMs?: number;
  /** Read leases kept so at once; past it the oldest goes (default MAX_LINGERING). */
  maxLingering?: number;
  /** Bytes of cached maps (CachedMap.body) over all files (default MAP_CACHE_BYTES; 0: no cache). */
  cacheBytes?: number;
  log: (line: string) => void;
  /** A lease let go without RETURN, after its recall or the end of its connection (for the log and the metrics). */
  onRevoke?: (holder: LeaseHolder, leaseId: string, after: 'recall' | 'disconnect') => void;
  kernel?: KernelLeases;
  now?: () => number;
}

/** A read lease with a cached map lingers this long after its last map went. Short: while it lingers, an opener for
 *  writing that does not wait (O_NONBLOCK: coreutils truncate, knfsd) gets EAGAIN although the break is immediate. */
export const MAP_LINGER_MS = 2000;
/** Lingering read leases at once (each keeps a descriptor). */
export const MAX_LINGERING = 256;
/** Bytes of encoded maps kept with their leases, over all files (a map of 10,000 extents and their holes is ~0.5 MB). */
export const MAP_CACHE_BYTES = 8 << 20;

export class LeaseTable {
  private readonly byId = new Map<string, Lease>();
  private readonly byHolder = new Map<LeaseHolder, Set<Lease>>();
  private readonly files = new Map<string, FileLease>();
  private readonly filesByFd = new Map<number, FileLease>();
  private readonly kernel: KernelLeases;
  private readonly now: () => number;
  private readonly idle = new Set<() => void>();
  /** Read leases with no map, oldest first (a Set keeps insertion order). */
  private readonly lingering = new Set<FileLease>();
  /** One timer lets every lingering lease go in turn: they all linger equally long, so the oldest goes first. (A
   *  timer per release was one more object a map, set and cleared, at 10,000 maps/s.) */
  private lingerSweep: NodeJS.Timeout | undefined;
  private cachedBytes = 0;

  constructor(private readonly opts: LeaseTableOptions) {
    this.kernel = opts.kernel ?? NATIVE_KERNEL;
    this.now = opts.now ?? (() => performance.now());
    this.kernel.onLeaseBreak((fd) => {
      if (fd >= 0) return void this.onBreak(fd);
      // The kernel's signal queue overflowed: find the breaking leases by asking each descriptor.
      for (const held of [...this.filesByFd.keys()]) {
        if (this.kernel.getLease(held) !== 'read') void this.onBreak(held);
      }
    });
  }

  /** How long after a recall (or an orphaning) the server waits for RETURN: T plus the margin. */
  get expiryMs(): number {
    return this.opts.leaseTimeMs + this.opts.marginMs;
  }

  /** Leases a holder has (for the per-connection limit). */
  countFor(holder: LeaseHolder): number {
    return this.byHolder.get(holder)?.size ?? 0;
  }

  /** Leases in the table, held or orphaned. */
  get size(): number {
    return this.byId.size;
  }

  /** Files under a kernel lease. */
  get fileCount(): number {
    return this.filesByFd.size;
  }

  /** The kernel lease held on a file (by dev:ino key), if any. */
  fileOf(key: string): FileLease | undefined {
    return this.files.get(key);
  }

  /** Take (or share) the kernel read lease on an open file, or take the write lease of a file nobody else has a
   *  map of. The fd is consumed: kept or closed. A write lease that meets another map is refused; one that meets a
   *  lingering read lease lets that go first. */
  acquireFile(key: string, fd: number, mode: 'read' | 'write' = 'read'): KernelLeaseResult {
    let existing = this.files.get(key);
    if (existing && mode === 'write' && this.letGoLingering(existing)) existing = undefined;
    if (existing) {
      if (mode === 'read' && existing.mode === 'read') {
        this.kernel.close(fd);
        return { ok: true, file: existing };
      }
      this.kernel.close(fd);
      return { ok: false, reason: existing.mode === 'write' ? 'the file is being written directly by another map' : 'the file has read maps' };
    }
    if (this.filesByFd.size >= this.opts.maxFiles) {
      // A lingering lease is only a cache: it makes room.
      const oldest = this.lingering.values().next().value;
      if (oldest) this.closeFile(oldest);
    }
    if (this.filesByFd.size >= this.opts.maxFiles) {
      this.kernel.close(fd);
      return { ok: false, reason: `the server holds leases on ${this.opts.maxFiles} files already` };
    }
    try {
      this.kernel.setLease(fd, mode);
    } catch (err) {
      this.kernel.close(fd);
      const code = (err as { code?: string }).code;
      if (code === 'EAGAIN') return { ok: false, reason: mode === 'read' ? 'the file is open for writing' : 'the file is open elsewhere' };
      return { ok: false, reason: `kernel lease refused: ${(err as Error).message}` };
    }
    const file: FileLease = { key, fd, mode, leases: new Set(), breaking: false, busy: 0, letGoWhenIdle: false };
    this.files.set(key, file);
    this.filesByFd.set(fd, file);
    return { ok: true, file };
  }

  /** The leased file's name now holds another inode (a pool file swapped into place, already under its own kernel
   *  lease on `fd`): the table follows it to `key` and `fd`, lets the old lease go and closes the old descriptor.
   *  False, and nothing changed, when the file's lease is breaking, its last map is gone, or it is no longer the
   *  table's. */
  rekey(file: FileLease, key: string, fd: number): boolean {
    if (file.breaking || file.leases.size === 0 || this.files.get(file.key) !== file || this.filesByFd.get(file.fd) !== file ||
        this.files.has(key)) return false;
    const old = file.fd;
    this.uncache(file); // a cached map describes the old inode (write leases have none; this keeps it so)
    this.files.delete(file.key);
    this.filesByFd.delete(old);
    file.key = key;
    file.fd = fd;
    this.files.set(key, file);
    this.filesByFd.set(fd, file);
    try {
      this.kernel.setLease(old, 'none');
    } catch {
      // closing the descriptor releases the lease anyway
    }
    this.kernel.close(old);
    return true;
  }

  /** A map lease. Granted before the file is mapped, so its kernel lease cannot go away underneath FIEMAP. */
  grant(holder: LeaseHolder, file: FileLease | undefined): Lease {
    const lease: Lease = { id: newLeaseId(), holder, file, recalled: false };
    this.byId.set(lease.id, lease);
    let mine = this.byHolder.get(holder);
    if (!mine) this.byHolder.set(holder, (mine = new Set()));
    mine.add(lease);
    if (file) {
      file.leases.add(lease);
      this.unlinger(file);
    }
    return lease;
  }

  /** Whether the file's kernel lease is only lingering (no map holds it). */
  isLingering(file: FileLease): boolean {
    return this.lingering.has(file);
  }

  /** Let a lingering read lease go now (a write map of the file is coming, and our own open for writing would break
   *  it); false if the file's lease is not lingering. */
  letGoLingering(file: FileLease): boolean {
    if (!this.lingering.has(file)) return false;
    this.closeFile(file);
    return true;
  }

  /** The map cached with the file's kernel lease, if it describes the file as it is now (`now`: a fresh fstat); one
   *  of another version is dropped. */
  cachedMap(file: FileLease, now: { size: bigint; mtimeNs: bigint; ctimeNs: bigint }): CachedMap | undefined {
    const map = file.cache;
    if (!map) return undefined;
    if (map.size === now.size && map.mtimeNs === now.mtimeNs && map.ctimeNs === now.ctimeNs) return map;
    this.uncache(file);
    return undefined;
  }

  /** Keep a read map with the file's kernel lease (replacing one kept before), if the cache has room for it and the
   *  lease is current; returns whether it was kept. */
  cacheMap(file: FileLease, map: CachedMap): boolean {
    if (file.mode !== 'read' || file.breaking || this.files.get(file.key) !== file) return false;
    const room = (this.opts.cacheBytes ?? MAP_CACHE_BYTES) - this.cachedBytes + (file.cache?.body.length ?? 0);
    if (map.body.length > room) return false;
    this.uncache(file);
    file.cache = map;
    this.cachedBytes += map.body.length;
    return true;
  }

  /** Bytes of maps cached now. */
  get cacheSize(): number {
    return this.cachedBytes;
  }

  private uncache(file: FileLease): void {
    if (!file.cache) return;
    this.cachedBytes -= file.cache.body.length;
    file.cache = undefined;
  }

  /** Keep a read lease whose last map went for a while (bounded in number), so that a repeat map finds its cache;
   *  one without a cached map goes at once. */
  private linger(file: FileLease): boolean {
    const ms = this.opts.lingerMs ?? MAP_LINGER_MS;
    if (ms <= 0 || !file.cache || file.mode !== 'read' || file.breaking || this.files.get(file.key) !== file) return false;
    if (this.lingering.size >= (this.opts.maxLingering ?? MAX_LINGERING)) {
      const oldest = this.lingering.values().next().value;
      if (!oldest) return false;
      this.closeFile(oldest);
    }
    this.lingering.add(file);
    file.lingerUntil = performance.now() + ms;
    this.armLingerSweep(ms);
    return true;
  }

  /** The sweep, in `ms` unless it is armed already (then for an older lease, which goes no later than this one). */
  private armLingerSweep(ms: number): void {
    if (this.lingerSweep) return;
    this.lingerSweep = setTimeout(() => this.sweepLingering(), ms);
    this.lingerSweep.unref();
  }

  /** Let go of the lingering leases whose time is up, oldest first; armed again for the next one. */
  private sweepLingering(): void {
    this.lingerSweep = undefined;
    const now = performance.now();
    for (const file of this.lingering) {
      if (file.lingerUntil === undefined) continue; // its time was up while it was busy: it goes when idle
      if (file.lingerUntil > now) return this.armLingerSweep(file.lingerUntil - now);
      file.lingerUntil = undefined;
      this.closeFile(file);
    }
  }

  private unlinger(file: FileLease): void {
    if (!this.lingering.delete(file)) return;
    file.lingerUntil = undefined;
  }

  /** Whether the map behind this lease can still be trusted (no recall, file lease still current). */
  isCurrent(lease: Lease): boolean {
    const file = lease.file;
    return !lease.recalled && file !== undefined && !file.breaking && this.files.get(file.key) === file;
  }

  /** RELEASE or RETURN: the holder stops using the map. */
  release(holder: LeaseHolder, id: string): boolean {
    const lease = this.byId.get(id);
    if (!lease || lease.holder !== holder) return false;
    this.drop(lease);
    return true;
  }

  /** The holder's lease of that id, if it has one (and, with `mode`, if its file lease is of that mode). */
  leaseOf(holder: LeaseHolder, id: string, mode?: 'read' | 'write'): Lease | undefined {
    const lease = this.byId.get(id);
    if (!lease || lease.holder !== holder) return undefined;
    if (mode && lease.file?.mode !== mode) return undefined;
    return lease;
  }

  /**
   * The holder's connection ended at `at` (monotonic ms). Its client may still use its maps until its own lease
   * time runs out, so they stay (and guard their files) until at + T + margin, then expire.
   */
  orphan(holder: LeaseHolder, at: number): void {
    const mine = this.byHolder.get(holder);
    if (!mine) return;
    this.byHolder.delete(holder);
    const until = at + this.expiryMs;
    for (const lease of mine) lease.orphanedAt = at;
    void sleep(Math.max(0, until - this.now())).then(() => {
      for (const lease of mine) {
        if (this.byId.get(lease.id) !== lease) continue;
        this.drop(lease);
        this.opts.onRevoke?.(holder, lease.id, 'disconnect');
      }
    });
  }

  /** Resolves when no lease is held or orphaned any more (graceful shutdown waits for it). */
  drained(): Promise<void> {
    if (this.byId.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.idle.add(resolve));
  }

  /** Close every file lease at once (the process is going away regardless). */
  closeAll(): void {
    for (const lease of [...this.byId.values()]) this.drop(lease);
    for (const file of [...this.filesByFd.values()]) this.closeFile(file);
  }

  private drop(lease: Lease): void {
    if (this.byId.get(lease.id) !== lease) return;
    this.byId.delete(lease.id);
    const mine = this.byHolder.get(lease.holder);
    mine?.delete(lease);
    if (mine?.size === 0) this.byHolder.delete(lease.holder);
    const file = lease.file;
    lease.file = undefined;
    if (file) {
      file.leases.delete(lease);
      if (file.leases.size === 0) {
        if (file.busy > 0) file.letGoWhenIdle = true;
        else this.letGo(file);
      }
    }
    lease.onDrop?.();
    if (this.byId.size === 0) {
      for (const wake of this.idle) wake();
      this.idle.clear();
    }
  }

  /**
   * Run `work` on a leased file's descriptor: if the file's last map goes meanwhile (RELEASE, expiry, a break), the
   * undo and the close wait until the work is done, so it never writes through a closed (or reused) descriptor,
   * and the undo sees everything it did.
   */
  async withFile<T>(file: FileLease, work: () => Promise<T>): Promise<T> {
    file.busy++;
    try {
      return await work();
    } finally {
      if (--file.busy === 0 && file.letGoWhenIdle) {
        file.letGoWhenIdle = false;
        this.letGo(file);
        // A break that ended meanwhile left the close to us.
        if (file.breaking) this.closeFile(file);
      }
    }
  }

  /** The last map of the file is gone: undo what needs undoing, and let the kernel lease go (a breaking file is
   *  closed by its break, once every recall is settled). */
  private letGo(file: FileLease): void {
    const last = file.onLastDrop;
    file.onLastDrop = undefined;
    try {
      last?.();
    } catch (err) {
      this.opts.log(`${file.key}: ${(err as Error).message}`);
    }
    if (!file.breaking && !this.linger(file)) this.closeFile(file);
  }

  private closeFile(file: FileLease): void {
    if (file.busy > 0) {
      file.letGoWhenIdle = true;
      return;
    }
    this.unlinger(file);
    this.uncache(file);
    if (this.files.get(file.key) === file) this.files.delete(file.key);
    if (this.filesByFd.get(file.fd) !== file) return;
    this.filesByFd.delete(file.fd);
    try {
      this.kernel.setLease(file.fd, 'none');
    } catch {
      // closing the descriptor releases the lease anyway
    }
    this.kernel.close(file.fd);
  }

  /** The kernel is breaking the lease on fd: recall every map of the file, wait for each RETURN or its expiry,
   *  then let go so the opener proceeds. */
  private async onBreak(fd: number): Promise<void> {
    const file = this.filesByFd.get(fd);
    if (!file || file.breaking) return;
    file.breaking = true;
    // New maps of this file must not share a lease that is going away, nor its map.
    if (this.files.get(file.key) === file) this.files.delete(file.key);
    this.uncache(file);
    const leases = [...file.leases];
    if (leases.length === 0) {
      // A lingering lease: nobody to recall, the opener goes on at once.
      this.opts.log(`lease break on ${file.key}: no maps held, released`);
      this.closeFile(file);
      return;
    }
    this.opts.log(`lease break on ${file.key}: recalling ${leases.length} map(s)`);
    const started = this.now();
    const unreturned = await Promise.all(leases.map((lease) => this.recallOne(lease)));
    for (const lease of unreturned) {
      if (!lease) continue;
      this.opts.log(
        `lease break on ${file.key}: ${lease.holder.name} did not return lease ${lease.id} within ${this.expiryMs} ms` +
          ` of the ${lease.orphanedAt !== undefined ? 'end of its connection' : 'recall'}; revoked`,
      );
      this.drop(lease);
      this.opts.onRevoke?.(lease.holder, lease.id, lease.orphanedAt !== undefined ? 'disconnect' : 'recall');
    }
    this.opts.log(`lease break on ${file.key}: released after ${Math.round(this.now() - started)} ms`);
    this.closeFile(file);
  }

  /** Recall every map whose file key `which` picks (a volume taken out of service): each goes at its RETURN or
   *  when its lease time has surely run out, and its file is let go with its last map. */
  async recallWhere(which: (fileKey: string) => boolean, reason: string): Promise<number> {
    const leases = [...this.byId.values()].filter((l) => l.file !== undefined && which(l.file.key));
    const unreturned = await Promise.all(leases.map((lease) => this.recallOne(lease, reason)));
    for (const lease of unreturned) {
      if (!lease) continue;
      this.opts.log(`${lease.holder.name} did not return lease ${lease.id} (${reason}); revoked`);
      this.drop(lease);
      this.opts.onRevoke?.(lease.holder, lease.id, lease.orphanedAt !== undefined ? 'disconnect' : 'recall');
    }
    return leases.length;
  }

  /** Recall one map; resolves with the lease if it was not returned before it expired, else undefined. */
  private async recallOne(lease: Lease, reason = 'write-open'): Promise<Lease | undefined> {
    if (this.byId.get(lease.id) !== lease) return undefined;
    lease.recalled = true;
    const returned = new Promise<void>((resolve) => (lease.onDrop = resolve));
    let cutoff: number;
    if (lease.orphanedAt !== undefined) {
      cutoff = lease.orphanedAt;
    } else {
      // No reply can reach the client ahead of the recall once it is queued; a connection that cannot take it
      // in time (a reply stuck behind a full socket) is ended, and then nothing more reaches the client at all.
      const queued = lease.holder.recall(lease.id, reason);
      const first = await raceTimer(Promise.race([queued, returned.then(() => 'returned' as const)]), this.opts.recallQueueMs, 'late' as const);
      if (first === 'returned') return undefined;
      if (first === 'late') {
        lease.holder.abort('recall-unsent');
        cutoff = this.now();
      } else {
        cutoff = first;
      }
    }
    const left = cutoff + this.expiryMs - this.now();
    if (left > 0) await raceTimer(returned, left, undefined);
    return this.byId.get(lease.id) === lease ? lease : undefined;
  }
}

/** Random bytes for lease ids, drawn in bulk: one call to the generator per LEASE_ID_BATCH maps. */
const LEASE_ID_BYTES = 8;
const LEASE_ID_BATCH = 512;
let idPool = Buffer.alloc(0);
let idAt = 0;

/** A fresh lease id: 16 hex digits, random. */
function newLeaseId(): string {
  if (idAt + LEASE_ID_BYTES > idPool.length) {
    idPool = randomBytes(LEASE_ID_BYTES * LEASE_ID_BATCH);
    idAt = 0;
  }
  idAt += LEASE_ID_BYTES;
  return idPool.toString('hex', idAt - LEASE_ID_BYTES, idAt);
}

/** `p`, or `value` after ms if p has not settled by then; the timer never outlives the race. */
function raceTimer<T, V>(p: Promise<T>, ms: number, value: V): Promise<T | V> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<V>((resolve) => {
    timer = setTimeout(() => resolve(value), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

export const LEASE_BREAK_TIME_FILE = '/proc/sys/fs/lease-break-time';

/**
 * The kernel lets an opener in after lease-break-time whatever the server does: it must be comfortably longer
 * than the longest the server may wait after a break (queueing the recall, then T plus the margin), or a client
 * could still be reading while the opener writes. Returns why the lease time cannot be used, or undefined.
 */
export function leaseTimeProblem(
  leaseTimeMs: number,
  read: () => string,
  marginMs = LIMITS.leaseMarginMs,
  recallQueueMs = LIMITS.recallQueueMs,
): string | undefined {
  let text: string;
  try {
    text = read();
  } catch (err) {
    return `cannot read ${LEASE_BREAK_TIME_FILE}: ${(err as Error).message}`;
  }
  const breakTime = Number(text.trim());
  if (!/^\d+$/.test(text.trim())) return `${LEASE_BREAK_TIME_FILE} holds '${text.trim()}', not a number of seconds`;
  const needed = Math.ceil((leaseTimeMs + marginMs + recallQueueMs) / 1000) + LEASE_BREAK_SLACK_S;
  if (breakTime < needed) {
    return `${LEASE_BREAK_TIME_FILE} is ${breakTime} s, too short for a lease time of ${leaseTimeMs / 1000} s` +
      ` (it must be at least ${needed} s: raise it with 'sysctl fs.lease-break-time=${needed}' or lower --lease-time)`;
  }
  return undefined;
}

/** Seconds of lease-break-time beyond the server's longest wait after a break. */
const LEASE_BREAK_SLACK_S = 2;
