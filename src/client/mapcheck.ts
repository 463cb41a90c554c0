// Is a map of the file the client opened through its network mount? Compared with what that mount can show.
import type { BigIntStats } from 'node:fs';
import type { FileMap } from './session.js';

/** What the fused network mount passes through from the server, learned at fuse time from the probe file. */
export interface MountFidelity {
  /** The mount shows the server's inode numbers (NFS fileid; not sshfs). */
  mountInodes?: boolean;
  /** The mount shows the server's mtime to the nanosecond (NFS; sshfs shows whole seconds). */
  mountMtimeNs?: boolean;
}

/** Parse a map's `mtime=<s.ns>` into nanoseconds; undefined when absent or malformed. */
export function parseMtimeNs(s: string | undefined): bigint | undefined {
  const m = s === undefined ? null : /^(\d+)(?:\.(\d{1,9}))?$/.exec(s);
  if (!m) return undefined;
  return BigInt(m[1]!) * 1_000_000_000n + BigInt((m[2] ?? '').padEnd(9, '0'));
}

/** Why the map cannot be of the file the client opened (stat through the mount), or undefined if it can be. */
export function mapMismatch(map: Pick<FileMap, 'size' | 'ino' | 'mtimeNs'>, opened: BigIntStats, fidelity: MountFidelity): string | undefined {
  if (BigInt(map.size) !== opened.size) {
    return `size through the mount (${opened.size}) differs from the map (${map.size}): file changing or cached`;
  }
  if (fidelity.mountInodes && map.ino !== undefined && BigInt(map.ino) !== opened.ino) {
    return `the mapped file (inode ${map.ino}) is not the one opened through the mount (inode ${opened.ino})`;
  }
  if (map.mtimeNs !== undefined) {
    const [mapped, seen] = fidelity.mountMtimeNs
      ? [map.mtimeNs, opened.mtimeNs]
      : [map.mtimeNs / 1_000_000_000n, opened.mtimeNs / 1_000_000_000n];
    if (mapped !== seen) {
      const unit = fidelity.mountMtimeNs ? 'ns' : 's';
      return `the mapped file (mtime ${mapped} ${unit}) is not the one opened through the mount (mtime ${seen} ${unit})`;
    }
  }
  return undefined;
}
