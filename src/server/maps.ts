// The map policies: what a client may learn of a file and under which lease (read maps now; write maps, allocation
// and commit build on the same table).
import { randomBytes } from 'node:crypto';
import { closeSync, fstatSync, close as closeCb, ftruncate as ftruncateCb, ftruncateSync, futimes as futimesCb, statSync, type BigIntStats } from 'node:fs';
import { open as openFile, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';
import { INODE_FLAGS, fadvise, fiemap, fsync, inodeFlags, openBeneathSync, openDirBeneath, statBeneath } from '../native/index.js';
import { RESERVE_DIR, RESERVE_FILE, createAllocator, type Allocator } from './allocate.js';
import { swapEligible } from './pool.js';
import { MAX_X_LINE, encodeExtents, type WireExtent } from '../protocol/index.js';
import { buildMap } from '../volume/extents.js';
import { splitDev } from '../sys/blockdev.js';
import type { CachedMap, FileLease, KernelLeaseResult, Lease, LeaseHolder, LeaseTable } from './leases.js';
import { Reply } from './reply.js';
import type { Volume } from './volumes.js';

/** The server's own uid: the owner of its reserve files. */
const SERVER_UID = BigInt(process.getuid?.() ?? 0);

/** Size of a probe file: one 4 KiB block at least, never inline data. */
const PROBE_FILE_BYTES = 4096;

const closeFd = promisify(closeCb);
const ftruncate = promisify(ftruncateCb);
const futimes = promisify(futimesCb);


/** How long a write map waits for other descriptors of the file to close (a network file system's server may close
 *  its descriptor a moment after its client did). */
const WRITE_LEASE_WAIT_MS = 1000;

/** What a write lease needs to remember: its volume, and the size to go back to if it is not committed. */
interface WriteState {
  volume: Volume;
  sizeAtMap: number;
  /** Says the allocator this writer is done (idempotent). */
  writing: () => void;
  /** The file's path as mapped, and whether its first ALLOC may swap a pre-zeroed pool file into place (empty). */
  rel: Buffer;
  swappable: boolean;
}

/** A map reply's body, ready to send. */
export interface MapAnswer {
  size: number;
  /** The file's mtime as seconds.nanoseconds, so a client can tell the map is of the file it opened. */
  mtime: string;
  blockSize: number;
  /** The server's inode number: where the network file system passes it through, the client compares it. */
  ino: string;
  change: string;
  extents: WireExtent[];
  /** The extent lines already encoded (a read map, kept with its lease): `extents` is then empty. */
  encoded?: { extents: number; body: Buffer };
  /** Why the whole file is NETWORK, if it is. */
  networkReason?: string;
  /** ALLOC: bytes the server can allocate next without writing zeros (its XFS reserve), if any. */
  ready?: number;
}

export interface MapPolicyOptions {
  maxExtents: number;
  /** Bytes of pre-zeroed reserve per volume for allocation (where the file system can clone from it). */
  reserveBytes: number;
  log: (line: string) => void;
  /** FIEMAP (default the native call); tests pass one that changes the file while it runs. */
  fiemap?: typeof fiemap;
  /** FS_IOC_GETFLAGS (default the native call); tests count the calls or report other flags. */
  inodeFlags?: typeof inodeFlags;
}

export class MapPolicy {
  private readonly writes = new WeakMap<FileLease, WriteState>();
  /** Per read lease: the FIEMAP in flight whose map will be cached. Maps of the file that come meanwhile wait for it
   *  rather than run their own (under load, connections that map the same files bunch up behind a slow FIEMAP). */
  private readonly mapping = new WeakMap<FileLease, Promise<void>>();
  /** Per volume: its allocator, or why direct writes are off there (say, a hostile `.fused` in the volume). */
  private readonly allocators = new Map<string, Promise<Allocator | Error>>();
  /** Per volume, once its allocator is made: the reserve it clones from (dev/ino), or null when it keeps none. The
   *  allocator opens its reserve once, when it is made, and keeps that descriptor: this is the file it clones
   *  from even if the path is changed later. */
  private readonly reserves = new Map<string, { dev: bigint; ino: bigint } | null>();
  /** Per volume, once made: its allocator (which knows its own pool files). */
  private readonly ready = new Map<string, Allocator>();
  /** Per volume: its root directory, opened once (O_PATH). Each map's lookup beneath the root starts from it instead
   *  of looking the root up by its path again (two system calls of the five in a cached map's lookup). Kept, like
   *  the allocators, for volumes a reload takes out (whose reserve holds their file system open anyway): a volume's
   *  name is never served from another directory without a restart. */
  private readonly roots = new Map<string, { dir: string; fd: number }>();

  constructor(
    private readonly leases: LeaseTable,
    private readonly opts: MapPolicyOptions,
  ) {}

  /** The volume's allocator (or why there is none), made on first use; start() makes them all at once. */
  private allocator(volume: Volume): Promise<Allocator | Error> {
    let a = this.allocators.get(volume.name);
    if (!a) {
      const log = (l: string) => this.opts.log(`volume ${volume.name}: ${l}`);
      a = createAllocator(volume, { reserveBytes: this.opts.reserveBytes, log }).then(
        (allocator) => {
          try {
            this.ready.set(volume.name, allocator);
            this.reserves.set(volume.name, this.reserveNow(volume));
          } catch {
            // not cached: reservedReason looks the path up
          }
          return allocator;
        },
        (err: unknown) => {
          log(`direct writes are off: ${(err as Error).message}`);
          return err instanceof Error ? err : new Error(String(err));
        },
      );
      this.allocators.set(volume.name, a);
    }
    return a;
  }

  /** Make every volume's allocator now (its reserve starts filling), rather than on the first write, and open its
   *  root (so the server's descriptors are all there before the first map). */
  async start(volumes: Volume[]): Promise<void> {
    for (const v of volumes) this.root(v);
    await Promise.all(volumes.map((v) => this.allocator(v)));
  }

  /** How direct writes get their blocks on a volume, and the reserve of zeros it holds now (for VOLUME). */
  async allocation(volume: Volume): Promise<{ method: string; reserveBytes: number }> {
    const a = await this.allocator(volume);
    if (a instanceof Error) return { method: 'none', reserveBytes: 0 };
    const st = a.stats();
    return { method: st.method, reserveBytes: st.reserveBytes };
  }

  /** Where lookups beneath the volume's root start: its directory's descriptor, opened on first use; the path if
   *  it cannot be opened (the lookup by path then reports why). */
  private root(volume: Volume): number | string {
    const kept = this.roots.get(volume.name);
    if (kept && kept.dir === volume.dir) return kept.fd;
    let fd: number;
    try {
      fd = openDirBeneath(volume.dir, '.');
    } catch {
      return volume.dir;
    }
    if (kept) closeQuietly(kept.fd);
    this.roots.set(volume.name, { dir: volume.dir, fd });
    return fd;
  }

  async close(): Promise<void> {
    for (const r of this.roots.values()) closeQuietly(r.fd);
    this.roots.clear();
    for (const a of this.allocators.values()) {
      const allocator = await a;
      if (!(allocator instanceof Error)) await allocator.close();
    }
  }

  /** The server's own files (the reserve) are no client's business, whatever path leads to them. */
  private reservedReason(volume: Volume, st: BigIntStats): string | undefined {
    const reason = 'the file belongs to the map server';
    const kept = this.reserves.get(volume.name);
    if (kept && kept.dev === st.dev && kept.ino === st.ino) return reason;
    // The reserve is made, and kept, owned by the server and private to it (0600, see allocate.ts): only a file
    // like that can be one, and only then is the reserve's path looked up (a stat per map otherwise).
    if (st.uid !== SERVER_UID || (st.mode & 0o077n) !== 0n) return undefined;
    if (this.ready.get(volume.name)?.owns(st.dev, st.ino)) return reason;
    const f = this.reserveNow(volume);
    return f && f.dev === st.dev && f.ino === st.ino ? reason : undefined;
  }

  /** The file at the reserve's path now (null: none there). */
  private reserveNow(volume: Volume): { dev: bigint; ino: bigint } | null {
    const f = statSync(join(volume.dir, RESERVE_DIR, RESERVE_FILE), { bigint: true, throwIfNoEntry: false });
    return f ? { dev: f.dev, ino: f.ino } : null;
  }

  /** The kernel lease the server holds on the file this path names now, if any: looked up without opening the
   *  file, since any open (even ours, even O_NONBLOCK) starts breaking a lease. */
  private leasedNow(volume: Volume, rel: Buffer): FileLease | undefined {
    let id: { dev: bigint; ino: bigint };
    try {
      // Found beneath the volume root as openBeneath finds it, through an O_PATH descriptor (which opens nothing).
      id = statBeneath(this.root(volume), rel);
    } catch (err) {
      throw openError(err);
    }
    return this.leases.fileOf(`${id.dev}:${id.ino}`);
  }

  /** Open a file of the volume for a map (beneath its root, never the server's own files) and fstat it.
   *  Synchronous, like the lookup in leasedNow just before it: a few system calls on a local file system whose
   *  dentries that lookup has warmed cost less than a trip through the thread pool (measured with mapload). The
   *  open is O_NONBLOCK, so a lease held elsewhere cannot make it wait. */
  private openFile(volume: Volume, rel: Buffer, write: boolean): { fd: number; st: BigIntStats } {
    let fd: number;
    try {
      fd = openBeneathSync(this.root(volume), rel, { write });
    } catch (err) {
      throw openError(err);
    }
    let st: BigIntStats;
    try {
      st = fstatSync(fd, { bigint: true });
    } catch (err) {
      closeQuietly(fd);
      throw new Reply('INTERNAL', `fstat: ${(err as Error).message}`);
    }
    const reserved = this.reservedReason(volume, st);
    if (reserved) {
      closeQuietly(fd);
      throw new Reply('BADPATH', reserved);
    }
    return { fd, st };
  }

  /** Map a file for a client: open beneath the volume root, lease, then fstat, FIEMAP with sync, fstat again; or,
   *  for a file whose read lease the server holds already, the map cached with that lease if fstat shows the same
   *  version. */
  async map(volume: Volume, rel: Buffer, holder: LeaseHolder): Promise<MapAnswer & { leaseId: string }> {
    const blockSize = volume.identity.blockSize;
    const held = this.leasedNow(volume, rel);
    // Being written directly, like open for writing: the whole file through the network, not an error.
    if (held?.mode === 'write') {
      return wholeNetwork(fstatSync(held.fd, { bigint: true }), blockSize, 'the file is being written directly by another node (write map)', this.leases.grant(holder, undefined).id);
    }
    // A file under our read lease already (other maps of it, or lingering) is shared as it is: no open of our own.
    const opened = held ? { fd: held.fd, st: fstatSync(held.fd, { bigint: true }) } : this.openFile(volume, rel, false);
    let st = opened.st;
    if (held) {
      const reserved = this.reservedReason(volume, st);
      if (reserved) throw new Reply('BADPATH', reserved);
    }
    // A file whose map is cached with our read lease, and is still the version that map describes, passed the checks
    // of fileNetworkReason when it was mapped: its descriptor is the same (so is its device), and its attribute flags
    // change (chattr) only with its ctime, which that version includes. Their ioctl is not made again.
    const checked = held !== undefined && this.leases.cachedMap(held, st) !== undefined;
    const networkOnly = volume.networkOnly ?? (checked ? undefined : this.fileNetworkReason(volume, opened.fd, st));
    if (networkOnly) {
      if (!held) closeQuietly(opened.fd);
      return wholeNetwork(st, blockSize, networkOnly, this.leases.grant(holder, undefined).id);
    }
    // The lease comes before anything is read of the file: a writer that opens it after this point breaks it. The
    // map lease is granted at once too, so the shared kernel lease (and its fd) stays while FIEMAP runs.
    const kernel: KernelLeaseResult = held ? { ok: true, file: held } : this.leases.acquireFile(`${st.dev}:${st.ino}`, opened.fd);
    if (!kernel.ok) return wholeNetwork(st, blockSize, kernel.reason, this.leases.grant(holder, undefined).id);
    const lease = this.leases.grant(holder, kernel.file);
    const file = kernel.file;
    const cacheable = mapsCacheable(volume);
    try {
      // The map made under this same kernel lease, if the file is still the version it describes. The lease has been
      // held since that FIEMAP, so nobody has opened the file for writing or truncated it, and each other way to
      // change a file's extents needs a writable descriptor too: fallocate (EBADF without FMODE_WRITE), ext4's
      // EXT4_IOC_MOVE_EXT (e4defrag: both files open for writing), XFS_IOC_SWAPEXT and XFS_IOC_EXCHANGE_RANGE (xfs_fsr:
      // the same), FICLONE/FICLONERANGE into the file (the destination must be writable). Not FIDEDUPERANGE: the
      // file's owner or root may dedupe into a file open read-only, which moves its blocks without a break and
      // without touching its ctime; so maps are cached only on file systems without it (mapsCacheable). The fstat
      // still compares size, mtime and ctime, which catches what needs no open (utimes; a change we did not think of
      // that touches the inode), and then the file is mapped afresh.
      const flight = cacheable ? this.mapping.get(file) : undefined;
      if (flight) await flight;
      if (cacheable && file.cache && this.leases.isCurrent(lease)) {
        // The fstat made above, with nothing awaited since, is of the file as it is now.
        const now = flight ? fstatSync(file.fd, { bigint: true }) : st;
        const cached = this.leases.cachedMap(file, now);
        if (cached) return answerOf(now, blockSize, lease.id, [], cached);
      }
      let mapped = (): void => {};
      if (cacheable && !this.mapping.has(file)) {
        this.mapping.set(file, new Promise<void>((resolve) => (mapped = resolve)).finally(() => this.mapping.delete(file)));
      }
      try {
        return await this.mapAfresh(lease, file, st, blockSize, cacheable);
      } finally {
        mapped();
      }
    } catch (err) {
      this.leases.release(holder, lease.id);
      throw mapError(err, this.opts.maxExtents);
    }
  }

  /** FIEMAP under the lease, between two fstats that must agree (a few tries); the map is cached if it may be. */
  private async mapAfresh(lease: Lease, file: FileLease, st: BigIntStats, blockSize: number, cacheable: boolean): Promise<MapAnswer & { leaseId: string }> {
    const leasedFd = file.fd;
    const stale = 'the file was opened for writing while it was mapped';
    for (let attempt = 1; ; attempt++) {
      // Size, mtime and ctime are read under the lease, before and after FIEMAP: the map describes one version of
      // the file (ctime too: a chmod or touch does not break a read lease). (fstatSync right after the check: the
      // shared descriptor cannot be closed in between.)
      if (!this.leases.isCurrent(lease)) return wholeNetwork(st, blockSize, stale, lease.id);
      const before = fstatSync(leasedFd, { bigint: true });
      const raw = await (this.opts.fiemap ?? fiemap)(leasedFd, { sync: true, maxExtents: this.opts.maxExtents });
      if (!this.leases.isCurrent(lease)) return wholeNetwork(before, blockSize, stale, lease.id);
      const after = fstatSync(leasedFd, { bigint: true });
      if (before.size === after.size && before.mtimeNs === after.mtimeNs && before.ctimeNs === after.ctimeNs) {
        const extents = buildMap(raw, Number(after.size), 'read');
        if (extents.length > this.opts.maxExtents) throw Object.assign(new Error('too many'), { code: 'E2BIG' });
        if (!cacheable) return answerOf(after, blockSize, lease.id, extents);
        // Encoded once, kept with the lease (if the cache has room), and sent as it is.
        const map: CachedMap = { size: after.size, mtimeNs: after.mtimeNs, ctimeNs: after.ctimeNs, extents: extents.length, body: encodeLines(extents) };
        this.leases.cacheMap(file, map);
        return answerOf(after, blockSize, lease.id, [], map);
      }
      if (attempt === MAP_ATTEMPTS) {
        return wholeNetwork(after, blockSize, `the file kept changing while it was mapped (${MAP_ATTEMPTS} tries)`, lease.id);
      }
      st = after;
    }
  }

  /** Why one file must go through the network although its volume is fine, if it must. */
  private fileNetworkReason(volume: Volume, fd: number, st: BigIntStats): string | undefined {
    const { major, minor } = splitDev(st.dev);
    if (major !== volume.major || minor !== volume.minor) {
      // openat2 RESOLVE_NO_XDEV already refuses other mounts; this is the belt to those braces.
      return 'the file is not on the volume\'s file system';
    }
    let flags = 0;
    try {
      flags = (this.opts.inodeFlags ?? inodeFlags)(fd);
    } catch {
      return undefined; // no attribute flags on this file system: nothing more to learn
    }
    if (flags & INODE_FLAGS.ENCRYPT) return 'the file is encrypted (fscrypt): its blocks hold ciphertext';
    if (flags & INODE_FLAGS.JOURNAL_DATA) return 'the file journals its data (chattr +j): its blocks may be older than the journal';
    if (flags & INODE_FLAGS.COMPR) return 'the file is compressed';
    return undefined;
  }

  /** MAP ... write: the write lease of a file nobody else maps or has open, and its map classified for writing. */
  async mapForWrite(volume: Volume, rel: Buffer, holder: LeaseHolder): Promise<MapAnswer & { leaseId: string }> {
    const blockSize = volume.identity.blockSize;
    const started = Date.now();
    for (;;) {
      let held = this.leasedNow(volume, rel);
      // A read lease kept only for its cached map goes first: our own open for writing would break it (and, being
      // O_NONBLOCK, fail at once).
      if (held && this.leases.letGoLingering(held)) held = undefined;
      if (held) throw new Reply('CONFLICT', held.mode === 'write' ? 'the file is being written directly by another node (write map)' : 'the file is being read directly by other nodes (read maps)');
      const { fd, st } = this.openFile(volume, rel, true);
      const allocator = await this.allocator(volume);
      const networkOnly =
        volume.networkOnly ?? this.fileNetworkReason(volume, fd, st) ?? (allocator instanceof Error ? `direct writes are off on this volume: ${allocator.message}` : undefined);
      if (networkOnly) {
        await closeFd(fd).catch(() => {});
        return wholeNetwork(st, blockSize, networkOnly, this.leases.grant(holder, undefined).id);
      }
      const kernel = this.leases.acquireFile(`${st.dev}:${st.ino}`, fd, 'write');
      if (!kernel.ok) {
        // Only a descriptor still open elsewhere is worth waiting for; another map is a conflict at once.
        if (kernel.reason === 'the file is open elsewhere' && Date.now() - started < WRITE_LEASE_WAIT_MS) {
          await sleep(50);
          continue;
        }
        throw new Reply('CONFLICT', kernel.reason);
      }
      const file = kernel.file;
      const lease = this.leases.grant(holder, file);
      // The reserve's refill keeps off the device while a client writes it directly (see Allocator.writing).
      const writing = (allocator as Allocator).writing();
      const state: WriteState = { volume, sizeAtMap: Number(st.size), writing, rel: Buffer.from(rel), swappable: swapEligible(st) };
      this.writes.set(file, state);
      // Not committed (RELEASE, RETURN, expiry): back to the size it had, giving back what was allocated for it.
      file.onLastDrop = () => {
        try {
          ftruncateSync(file.fd, state.sizeAtMap);
        } finally {
          writing();
        }
      };
      try {
        const answer = await this.writeMap(file.fd, blockSize, lease.id);
        // An existing file (overwritten in place) may have pages cached here, clean since FIEMAP synced them: drop
        // them now, so that nothing the server reads or writes back while the client writes the device (a size
        // set when the lease is dropped uncommitted, say) is older than the disk. The write lease keeps every
        // other opener out until the commit.
        await fadvise(file.fd, 0, 0, 'dontneed');
        return answer;
      } catch (err) {
        this.leases.release(holder, lease.id);
        throw mapError(err, this.opts.maxExtents);
      }
    }
  }

  /** ALLOC: written, zeroed blocks for [offset, offset+length) of a file under this holder's write lease. */
  async alloc(holder: LeaseHolder, leaseId: string, offset: number, length: number): Promise<MapAnswer> {
    const { file, state } = this.writeLease(holder, leaseId);
    const bs = state.volume.identity.blockSize;
    if (offset % bs !== 0 || length % bs !== 0) throw new Reply('BADARG', `offset and length must be multiples of the block size ${bs}`);
    if (offset + length > state.volume.identity.sizeBytes) throw new Reply('BADARG', `past the volume's size (${state.volume.identity.sizeBytes} bytes)`);
    const allocator = await this.allocator(state.volume);
    if (allocator instanceof Error) throw new Reply('INTERNAL', `direct writes are off on this volume: ${allocator.message}`);
    try {
      await this.leases.withFile(file, async () => {
        // The first ALLOC of an empty file: a pre-zeroed pool file in its place, if there is one (ext4).
        if (state.swappable) {
          state.swappable = false;
          const install = (fd: number, dev: bigint, ino: bigint) => this.leases.rekey(file, `${dev}:${ino}`, fd);
          await allocator.swapIn({ root: state.volume.dir, rel: state.rel, fd: file.fd, install }, offset + length);
        }
        await allocator.allocate(file.fd, offset, length);
      });
    } catch (err) {
      const code = (err as { code?: string }).code;
      if (code === 'ENOSPC' || code === 'EDQUOT') throw new Reply('NOSPACE', `no room for ${length} bytes at ${offset} on volume ${state.volume.name}`);
      throw new Reply('INTERNAL', `allocation failed: ${(err as Error).message}`);
    }
    if (!this.leases.isCurrent(this.leases.leaseOf(holder, leaseId)!)) throw new Reply('CONFLICT', 'the write map was recalled');
    let map: MapAnswer;
    try {
      map = await this.writeMap(file.fd, bs, leaseId);
    } catch (err) {
      throw mapError(err, this.opts.maxExtents);
    }
    const ready = allocator.readyBytes();
    return ready > 0 ? { ...map, ready } : map;
  }

  /** COMMIT: set the size (never below the size at map time), sync, drop the server's cached pages, touch the
   *  mtime, release the write lease. */
  async commit(holder: LeaseHolder, leaseId: string, size: number): Promise<{ size: number; mtime: string }> {
    const { file, state } = this.writeLease(holder, leaseId, true);
    const newSize = Math.max(size, state.sizeAtMap);
    // First drop what the server has cached of the file: an existing file (overwritten in place) may have old pages
    // here, and the truncate zeroes the last block's tail through the page cache, so a stale page would be dirtied
    // and written back over the client's bytes.
    await fadvise(file.fd, 0, 0, 'dontneed');
    await ftruncate(file.fd, newSize);
    await fsync(file.fd);
    await fadvise(file.fd, 0, 0, 'dontneed');
    const now = new Date();
    await futimes(file.fd, now, now);
    const st = fstatSync(file.fd, { bigint: true });
    file.onLastDrop = undefined;
    this.leases.release(holder, leaseId);
    state.writing();
    return { size: newSize, mtime: mtimeOf(st) };
  }

  /** The holder's write lease of that id, and its state. A recalled lease may still commit, not allocate. */
  private writeLease(holder: LeaseHolder, leaseId: string, recalledOk = false): { file: FileLease; state: WriteState } {
    const lease = this.leases.leaseOf(holder, leaseId, 'write');
    const file = lease?.file;
    const state = file && this.writes.get(file);
    if (!lease || !file || !state) throw new Reply('NOLEASE', `no write lease ${leaseId} on this connection`);
    if (!recalledOk && lease.recalled) throw new Reply('CONFLICT', 'the write map was recalled');
    return { file, state };
  }

  /** The whole file's map for writing, read through its leased descriptor. */
  private async writeMap(fd: number, blockSize: number, leaseId: string): Promise<MapAnswer & { leaseId: string }> {
    const st = fstatSync(fd, { bigint: true });
    const raw = await fiemap(fd, { sync: true, maxExtents: this.opts.maxExtents });
    const extents = buildMap(raw, Number(st.size), 'write');
    if (extents.length > this.opts.maxExtents) throw Object.assign(new Error('too many'), { code: 'E2BIG' });
    return answerOf(st, blockSize, leaseId, extents);
  }

  /** A probe file in the volume root holding a fresh token (PROBE): its path and token. */
  async makeProbe(volume: Volume): Promise<{ name: string; token: string; path: string }> {
    const name = `.fused-probe-${randomBytes(8).toString('hex')}`;
    const token = randomBytes(16).toString('hex');
    const path = join(volume.dir, name);
    try {
      const fh = await openFile(path, 'wx', 0o644);
      try {
        // A whole block (padded with spaces) so that no file system keeps it inline in the inode: a client
        // proves its device by reading the token from the probe's data block.
        // No fsync: the client finds the token through a MAP of the probe, whose FIEMAP (FIEMAP_FLAG_SYNC) writes the
        // block to the device and allocates it first; the journal commit an fsync adds (3-13 ms at each command's
        // start) proves nothing more. A probe left by a crash is a stray file either way.
        await fh.writeFile(token.padEnd(PROBE_FILE_BYTES - 1, ' ') + '\n');
      } finally {
        await fh.close();
      }
    } catch (err) {
      await unlink(path).catch(() => {});
      const code = (err as { code?: string }).code;
      if (code === 'EACCES' || code === 'EPERM' || code === 'EROFS' || code === 'ENOSPC' || code === 'EDQUOT') {
        throw new Reply('ACCESS', `cannot create a probe file in the volume: ${(err as Error).message}`);
      }
      throw err;
    }
    return { name, token, path };
  }
}

/** Whether read maps of the volume may be cached with their kernel lease: not where a file's blocks can be remapped
 *  through a read-only descriptor (FIDEDUPERANGE, which XFS has and ext4 has not; see MapPolicy.map). */
function mapsCacheable(volume: Volume): boolean {
  const fstype: string = volume.identity.fstype;
  return fstype === 'ext4' || fstype === 'ext3' || fstype === 'ext2';
}

/** A map's X lines in a buffer of their own, exactly their size (it is kept with the lease). */
function encodeLines(extents: readonly WireExtent[]): Buffer {
  const room = Buffer.allocUnsafeSlow(Math.max(1, extents.length * MAX_X_LINE));
  const length = encodeExtents(extents, 0, extents.length, room, 0);
  if (length === room.length) return room;
  const body = Buffer.allocUnsafeSlow(length);
  room.copy(body, 0, 0, length);
  return body;
}

function closeQuietly(fd: number): void {
  try {
    closeSync(fd);
  } catch {
    // EBADF/EIO: the descriptor is gone either way
  }
}

/** A FIEMAP failure as the reply the client gets. */
function mapError(err: unknown, maxExtents: number): Reply {
  if (err instanceof Reply) return err;
  const code = (err as { code?: string }).code;
  if (code === 'E2BIG') return new Reply('TOOBIG', `more than the limit of ${maxExtents} extents`);
  if (code === 'EOPNOTSUPP' || code === 'ENOTTY' || code === 'EBADR') return new Reply('NOMAP', `FIEMAP not supported: ${(err as Error).message}`);
  return new Reply('INTERNAL', `FIEMAP failed: ${(err as Error).message}`);
}

/** How often a file that changes between the two fstats around FIEMAP is mapped again before it is NETWORK. */
const MAP_ATTEMPTS = 3;

/** A map reply under a lease, with the file facts it carries from one fstat: one object literal with the same
 *  fields in the same order every time, so that every reply has the same hidden class. (Built with an object spread,
 *  V8 made new hidden classes for each reply: about six a map at 10,000 maps/s, all of them garbage in the old
 *  space, which brought a mark-compact every 0.85 s.) */
function answerOf(st: BigIntStats, blockSize: number, leaseId: string, extents: WireExtent[], encoded?: MapAnswer['encoded'], networkReason?: string): MapAnswer & { leaseId: string } {
  return {
    size: Number(st.size),
    blockSize,
    ino: String(st.ino),
    change: `${st.ino}-${st.ctimeNs}`,
    mtime: mtimeOf(st),
    extents,
    encoded,
    networkReason,
    leaseId,
  };
}

/** The file's mtime as seconds.nanoseconds. */
function mtimeOf(st: BigIntStats): string {
  return `${st.mtimeNs / 1_000_000_000n}.${String(st.mtimeNs % 1_000_000_000n).padStart(9, '0')}`;
}

/** A map that sends the whole file through the network, saying why. */
function wholeNetwork(st: BigIntStats, blockSize: number, reason: string, leaseId: string): MapAnswer & { leaseId: string } {
  const size = Number(st.size);
  const extents: WireExtent[] = size > 0 ? [{ logical: 0, physical: 0, length: size, state: 'NETWORK', flags: 0 }] : [];
  return answerOf(st, blockSize, leaseId, extents, undefined, reason);
}

function openError(err: unknown): Reply {
  const code = (err as { code?: string }).code;
  const msg = (err as Error).message ?? String(err);
  switch (code) {
    case 'ENOENT':
    case 'ENOTDIR':
      return new Reply('NOENT', 'no such file');
    case 'EXDEV':
    case 'ELOOP':
      return new Reply('BADPATH', 'path leads out of the volume');
    case 'EAGAIN':
    case 'EWOULDBLOCK':
      // Opened (non-blocking) while someone else holds a lease on it: that open has started a break.
      return new Reply('CONFLICT', 'the file is under a lease (being opened or written elsewhere)');
    case 'ENAMETOOLONG':
      return new Reply('BADPATH', 'path too long');
    case 'ENOTREG':
    case 'EISDIR':
      return new Reply('NOTREG', 'not a regular file');
    case 'EACCES':
    case 'EPERM':
      return new Reply('ACCESS', 'permission denied');
    default:
      return new Reply('INTERNAL', msg);
  }
}
