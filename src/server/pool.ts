// The pool of pre-zeroed files on ext4: an empty file a client is about to write directly trades places
// (renameat2 RENAME_EXCHANGE) with a file of written, fsynced zeros the server filled in the background, so its
// first slice costs no zeroing on the copy's clock (ext4 cannot lend blocks from one file to another as XFS can).
import * as fs from 'node:fs';
import { spawnSync } from 'node:child_process';
import { copyAccessAcl, exchangeAt, openDirBeneath, setDirect, setLease, statAt } from '../native/index.js';

/** Pool files are `.fused/pool.N`. */
export const POOL_PREFIX = 'pool.';
/** A reserve of more than this is cut into files of about this size (at least one file, however large). */
export const POOL_FILE = 1024 * 1024 * 1024;
/** Pool file sizes are multiples of this (whole 4 KiB sectors and blocks, and large, contiguous writes). */
const POOL_UNIT = 1024 * 1024;

/**
 * The sizes of the pool's files for a reserve of `target` bytes: equal files of about POOL_FILE (1 GiB), one file
 * for a reserve up to twice that. A copy takes one whole file, the largest (the server learns only its first slice
 * at the first ALLOC, not its size), and only the part a file covers is spared the zero-fill: the fewer, larger
 * files, the more of a large copy, where zeroing costs the most (measured, docs/BENCHMARKS.md: two halves of
 * 1 GiB left a 1 GiB copy at 0.45x fio, one file at 0.6-0.7x). Files of more than about 1 GiB would each take
 * long to fill at the refill's low priority, and a file is swapped only once full; a large reserve serves several
 * copies in a row. What a small copy leaves of its file is trimmed at COMMIT (the zeros were written off its clock).
 */
export function poolSizes(target: number): number[] {
  const unit = (n: number) => n - (n % POOL_UNIT);
  if (unit(target) < POOL_UNIT) return [];
  const files = Math.max(1, Math.floor(target / POOL_FILE));
  return Array.from({ length: files }, () => unit(target / files));
}

/** A file of the pool as the allocator keeps it. */
export interface PoolFile {
  name: string;
  /** Its planned size (bytes). */
  size: number;
  /** Written, zeroed bytes from 0 (ready once filled === size and fsynced). */
  filled: number;
  /** Filled to its size and fsynced: may be swapped into place. */
  ready: boolean;
  /** O_RDWR (O_DIRECT while filling); -1 when it has none (swapped away, or not made yet). */
  fd: number;
}

/** The pool file to swap in for a first ALLOC reaching `need` bytes: the largest ready one at least that large (the
 *  copy's size is not known yet, and the larger the file the more of a large copy it covers), or undefined. */
export function pickPoolFile<T extends Pick<PoolFile, 'size' | 'ready' | 'fd'>>(files: readonly T[], need: number): T | undefined {
  let best: T | undefined;
  for (const f of files) {
    if (!f.ready || f.fd < 0 || f.size < need) continue;
    if (!best || f.size > best.size) best = f;
  }
  return best;
}

/** Whether a file may be swapped for a pool file: an empty regular file with one name and no blocks (a file just
 *  created through the mount). Anything else keeps its inode (hard links, blocks, bytes would be lost). */
export function swapEligible(st: { size: bigint; nlink: bigint; blocks: bigint; isFile(): boolean }): boolean {
  return st.isFile() && st.size === 0n && st.nlink === 1n && st.blocks === 0n;
}

/** A path relative to the volume root split into its directory ('.' for the root) and its last component; null
 *  when the last component is not a plain name. */
export function splitRel(rel: Buffer): { dir: Buffer; base: Buffer } | null {
  let end = rel.length;
  while (end > 0 && rel[end - 1] === SLASH) end--;
  const trimmed = rel.subarray(0, end);
  const cut = trimmed.lastIndexOf(SLASH);
  const base = trimmed.subarray(cut + 1);
  if (base.length === 0 || base.equals(DOT) || base.equals(DOTDOT) || base.includes(0)) return null;
  const dir = cut <= 0 ? (cut === 0 ? null : DOT) : trimmed.subarray(0, cut);
  return dir === null ? null : { dir, base };
}
const SLASH = 0x2f;
const DOT = Buffer.from('.');
const DOTDOT = Buffer.from('..');

/** The file a client is writing, as the swap needs it. */
export interface SwapTarget {
  /** The volume root and the file's path beneath it, as the client named it. */
  root: string;
  rel: Buffer;
  /** The server's descriptor of the file, under its kernel write lease. */
  fd: number;
  /** The table follows the file to its new inode (under the kernel lease on `fd`, the old lease let go); false
   *  when it cannot any more (the lease is breaking): the swap is undone. Called synchronously, right after the
   *  swap is verified. */
  install(fd: number, dev: bigint, ino: bigint): boolean;
}

export type SwapOutcome =
  | { swapped: true }
  /** Nothing changed: the pool file stays as it was (owned by the server, in the pool). */
  | { swapped: false; reason: string }
  /** The swap was undone, but the pool file may have been seen: the caller drops it from the pool. */
  | { swapped: false; reason: string; discard: true };

/** Test hook (bats): a shell command run between the check of the name and the exchange, to race the swap. */
const RACE_HOOK = process.env.FUSED_TEST_SWAP_HOOK;

/**
 * Put the pool file (`pool.fd`, named `pool.name` in the pool directory `pool.dir`) in place of the empty file the
 * target names, in one synchronous run (no other server work in between): the name must hold the leased inode
 * (dev, ino) before; the pool file gets its owner, group, mode and access ACL and the kernel write lease before
 * the exchange makes it visible; after it, the name must hold the pool file and the pool name the leased inode,
 * else the exchange is undone. On success the old inode (empty, now under the pool name) is unlinked.
 */
export function swapIntoPlace(target: SwapTarget, pool: { dir: string; dirFd: number; name: string; fd: number },
  log: (line: string) => void): SwapOutcome {
  const parts = splitRel(target.rel);
  if (!parts) return { swapped: false, reason: 'the path does not end in a file name' };
  const old = fs.fstatSync(target.fd, { bigint: true });
  if (!swapEligible(old)) return { swapped: false, reason: 'the file is not empty, or not with one name' };
  const fresh = fs.fstatSync(pool.fd, { bigint: true });
  const poolName = Buffer.from(pool.name);
  let dirFd: number;
  try {
    dirFd = openDirBeneath(target.root, parts.dir);
  } catch (err) {
    return { swapped: false, reason: `its directory: ${(err as Error).message}` };
  }
  try {
    const same = (a: { dev: bigint; ino: bigint }, b: { dev: bigint; ino: bigint }) => a.dev === b.dev && a.ino === b.ino;
    const at = (dir: number, name: Buffer) => {
      try {
        return statAt(dir, name);
      } catch {
        return { dev: -1n, ino: -1n };
      }
    };
    if (!same(at(dirFd, parts.base), old)) return { swapped: false, reason: 'the name no longer holds the file' };
    // Dressed as the file the client created, and leased, while nobody can see it yet.
    try {
      fs.fchownSync(pool.fd, Number(old.uid), Number(old.gid));
      fs.fchmodSync(pool.fd, Number(old.mode & 0o7777n));
      copyAccessAcl(target.fd, pool.fd);
      setLease(pool.fd, 'write');
    } catch (err) {
      undress(pool.fd);
      return { swapped: false, reason: `the pool file: ${(err as Error).message}` };
    }
    if (RACE_HOOK) spawnSync('/bin/sh', ['-c', RACE_HOOK], { stdio: 'ignore', timeout: 10_000 });
    try {
      exchangeAt(dirFd, parts.base, pool.dirFd, poolName);
    } catch (err) {
      // Nothing moved: the pool file was never visible.
      undress(pool.fd);
      return { swapped: false, reason: `renameat2: ${(err as Error).message}` };
    }
    const placed = same(at(dirFd, parts.base), fresh) && same(at(pool.dirFd, poolName), old);
    if (!placed || !target.install(pool.fd, fresh.dev, fresh.ino)) {
      // Back as they were: whatever the name held at the exchange goes back under it.
      try {
        exchangeAt(dirFd, parts.base, pool.dirFd, poolName);
      } catch (err) {
        log(`pool: cannot undo the swap of ${pool.name}: ${(err as Error).message}`);
      }
      undress(pool.fd);
      // It was visible under the client's name for a moment (someone may have opened it): never handed out.
      if (same(at(pool.dirFd, poolName), fresh)) unlinkQuietly(`${pool.dir}/${pool.name}`, log);
      else {
        // Not ours (the undo lost a race too): moved off the pool's names, so that it is never taken for zeros.
        const aside = `${pool.dir}/lost.${Date.now()}.${pool.name}`;
        try {
          fs.renameSync(`${pool.dir}/${pool.name}`, aside);
          log(`pool: another file was under ${pool.name} after an undone swap: moved to ${aside}`);
        } catch (err) {
          log(`pool: another file is under ${pool.name} after an undone swap: ${(err as Error).message}`);
        }
      }
      return { swapped: false, reason: placed ? 'the lease is breaking' : 'the name changed during the swap', discard: true };
    }
    // The old inode, empty, now under the pool's name: nobody else has it open (the write lease was ours).
    unlinkQuietly(`${pool.dir}/${pool.name}`, log);
    // A plain descriptor from now on: the allocator turns O_DIRECT on while it zero-fills growth.
    setDirect(pool.fd, false);
    return { swapped: true };
  } finally {
    fs.closeSync(dirFd);
  }
}

function unlinkQuietly(path: string, log: (line: string) => void): void {
  try {
    fs.unlinkSync(path);
  } catch (err) {
    log(`pool: cannot remove ${path}: ${(err as Error).message}`);
  }
}

/** A pool file back to the server's: no lease, owner the server, 0600. */
function undress(fd: number): void {
  try {
    setLease(fd, 'none');
  } catch {
    // no lease taken
  }
  try {
    fs.fchownSync(fd, process.getuid?.() ?? 0, process.getgid?.() ?? 0);
    fs.fchmodSync(fd, 0o600);
  } catch {
    // the caller discards it anyway
  }
}
