// The map policies: what a client may learn of a file and under which lease (read maps now; write maps, allocation
// and commit build on the same table).
import { randomBytes } from 'node:crypto';
import { fstat as fstatCb, fstatSync, close as closeCb, type BigIntStats } from 'node:fs';
import { open as openFile, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { INODE_FLAGS, fiemap, inodeFlags, openBeneath } from '../native/index.js';
import type { WireExtent } from '../protocol/index.js';
import { buildMap } from '../volume/extents.js';
import { splitDev } from '../sys/blockdev.js';
import type { LeaseHolder, LeaseTable } from './leases.js';
import { Reply } from './reply.js';
import type { Volume } from './volumes.js';

/** Size of a probe file: one 4 KiB block at least, never inline data. */
const PROBE_FILE_BYTES = 4096;

const fstat = promisify(fstatCb) as unknown as (fd: number, opts: { bigint: true }) => Promise<BigIntStats>;
const closeFd = promisify(closeCb);

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
  /** Why the whole file is NETWORK, if it is. */
  networkReason?: string;
}

export interface MapPolicyOptions {
  maxExtents: number;
  log: (line: string) => void;
}

export class MapPolicy {
  constructor(
    private readonly leases: LeaseTable,
    private readonly opts: MapPolicyOptions,
  ) {}

  /** Map a file for a client: open beneath the volume root, lease, then fstat, FIEMAP with sync, fstat again. */
  async map(volume: Volume, rel: Buffer, holder: LeaseHolder): Promise<MapAnswer & { leaseId: string }> {
    let fd: number;
    try {
      fd = await openBeneath(volume.dir, rel);
    } catch (err) {
      throw openError(err);
    }
    let st: BigIntStats;
    try {
      st = await fstat(fd, { bigint: true });
    } catch (err) {
      await closeFd(fd).catch(() => {});
      throw new Reply('INTERNAL', `fstat: ${(err as Error).message}`);
    }
    const blockSize = volume.identity.blockSize;
    const networkOnly = volume.networkOnly ?? this.fileNetworkReason(volume, fd, st);
    if (networkOnly) {
      await closeFd(fd).catch(() => {});
      return { ...wholeNetwork(st, blockSize, networkOnly), leaseId: this.leases.grant(holder, undefined).id };
    }
    // The lease comes before anything is read of the file: a writer that opens it after this point breaks it. The
    // map lease is granted at once too, so the shared kernel lease (and its fd) stays while FIEMAP runs.
    const kernel = this.leases.acquireFile(`${st.dev}:${st.ino}`, fd);
    if (!kernel.ok) return { ...wholeNetwork(st, blockSize, kernel.reason), leaseId: this.leases.grant(holder, undefined).id };
    const lease = this.leases.grant(holder, kernel.file);
    const leasedFd = kernel.file.fd;
    const stale = 'the file was opened for writing while it was mapped';
    try {
      for (let attempt = 1; ; attempt++) {
        // Size and mtime are read under the lease, before and after FIEMAP: the map describes one version of the
        // file. (fstatSync right after the check: the shared descriptor cannot be closed in between.)
        if (!this.leases.isCurrent(lease)) return { ...wholeNetwork(st, blockSize, stale), leaseId: lease.id };
        const before = fstatSync(leasedFd, { bigint: true });
        const raw = await fiemap(leasedFd, { sync: true, maxExtents: this.opts.maxExtents });
        if (!this.leases.isCurrent(lease)) return { ...wholeNetwork(before, blockSize, stale), leaseId: lease.id };
        const after = fstatSync(leasedFd, { bigint: true });
        if (before.size === after.size && before.mtimeNs === after.mtimeNs) {
          const extents = buildMap(raw, Number(after.size), 'read');
          if (extents.length > this.opts.maxExtents) throw Object.assign(new Error('too many'), { code: 'E2BIG' });
          return { ...describeFile(after, blockSize), extents, leaseId: lease.id };
        }
        if (attempt === MAP_ATTEMPTS) {
          return { ...wholeNetwork(after, blockSize, `the file kept changing while it was mapped (${MAP_ATTEMPTS} tries)`), leaseId: lease.id };
        }
        st = after;
      }
    } catch (err) {
      this.leases.release(holder, lease.id);
      const code = (err as { code?: string }).code;
      if (code === 'E2BIG') throw new Reply('TOOBIG', `more than the limit of ${this.opts.maxExtents} extents`);
      if (code === 'EOPNOTSUPP' || code === 'ENOTTY' || code === 'EBADR') {
        throw new Reply('NOMAP', `FIEMAP not supported: ${(err as Error).message}`);
      }
      throw new Reply('INTERNAL', `FIEMAP failed: ${(err as Error).message}`);
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
      flags = inodeFlags(fd);
    } catch {
      return undefined; // no attribute flags on this file system: nothing more to learn
    }
    if (flags & INODE_FLAGS.ENCRYPT) return 'the file is encrypted (fscrypt): its blocks hold ciphertext';
    if (flags & INODE_FLAGS.JOURNAL_DATA) return 'the file journals its data (chattr +j): its blocks may be older than the journal';
    if (flags & INODE_FLAGS.COMPR) return 'the file is compressed';
    return undefined;
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
        await fh.writeFile(token.padEnd(PROBE_FILE_BYTES - 1, ' ') + '\n');
        await fh.sync();
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

/** How often a file that changes between the two fstats around FIEMAP is mapped again before it is NETWORK. */
const MAP_ATTEMPTS = 3;

/** The file facts a map reply carries, from one fstat. */
function describeFile(st: BigIntStats, blockSize: number): Omit<MapAnswer, 'extents'> {
  return {
    size: Number(st.size),
    blockSize,
    ino: String(st.ino),
    change: `${st.ino}-${st.ctimeNs}`,
    mtime: `${st.mtimeNs / 1_000_000_000n}.${String(st.mtimeNs % 1_000_000_000n).padStart(9, '0')}`,
  };
}

/** A map that sends the whole file through the network, saying why. */
function wholeNetwork(st: BigIntStats, blockSize: number, reason: string): MapAnswer {
  const size = Number(st.size);
  return {
    ...describeFile(st, blockSize),
    networkReason: reason,
    extents: size > 0 ? [{ logical: 0, physical: 0, length: size, state: 'NETWORK', flags: 0 }] : [],
  };
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
