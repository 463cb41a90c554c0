// The volumes a map server serves: where each is mounted, its block device and its superblock identity.
import { realpath, stat } from 'node:fs/promises';
import { FusedError, errorMessage } from '../errors.js';
import { devicePathOf, readIdentity, readMounts } from '../sys/blockdev.js';
import { findMount, servableFsType } from '../volume/mountinfo.js';
import type { VolumeIdentity } from '../volume/superblock.js';

export interface Volume {
  name: string;
  /** Resolved directory served (the volume root for clients); may be a subdirectory of the mount. */
  dir: string;
  mountPoint: string;
  device: string;
  /** Device numbers of the mounted file system: every mapped file must be on it (st_dev). */
  major: number;
  minor: number;
  identity: VolumeIdentity;
  /** Why the direct path is refused for every file of this volume, if it is. */
  networkOnly?: string;
}

const VOLUME_NAME = /^[A-Za-z0-9._-]{1,64}$/;

/** Parse a `NAME=DIR` option value. */
export function parseVolumeSpec(spec: string): { name: string; dir: string } {
  const eq = spec.indexOf('=');
  const name = eq > 0 ? spec.slice(0, eq) : '';
  const dir = eq > 0 ? spec.slice(eq + 1) : '';
  if (!VOLUME_NAME.test(name) || !dir) {
    throw new FusedError('usage', `expected NAME=DIR with NAME of 1-64 characters [A-Za-z0-9._-]`, spec);
  }
  return { name, dir };
}

/** Find the mount, device and identity behind DIR; refuse what fused cannot serve, with the reason. */
export async function openVolume(name: string, dirArg: string): Promise<Volume> {
  let dir: string;
  try {
    dir = await realpath(dirArg);
    if (!(await stat(dir)).isDirectory()) throw new Error('not a directory');
  } catch (err) {
    throw new FusedError('failure', errorMessage(err), dirArg);
  }
  const mount = findMount(await readMounts(), dir);
  if (!mount) throw new FusedError('failure', 'no mount holds this directory', dirArg);
  const servable = servableFsType(mount.fstype);
  if (!servable.ok) throw new FusedError('failure', `cannot serve: ${servable.reason}`, dirArg);
  const device = await devicePathOf(mount.major, mount.minor);
  if (!device) {
    throw new FusedError('failure', `file system ${mount.fstype} on ${mount.source} has no block device`, dirArg);
  }
  let identity: VolumeIdentity | null;
  try {
    identity = await readIdentity(device);
  } catch (err) {
    throw new FusedError('failure', `cannot read the superblock of ${device}: ${errorMessage(err)}`, dirArg);
  }
  if (!identity) throw new FusedError('failure', `no ext2/3/4 or XFS superblock on ${device}`, dirArg);
  const volume: Volume = { name, dir, mountPoint: mount.mountPoint, device, major: mount.major, minor: mount.minor, identity };
  if (identity.fstype === 'xfs' && identity.xfsRealtime) {
    volume.networkOnly = 'XFS realtime section: physical offsets may be on the realtime device';
  } else if (/(^|,)data=journal(,|$)/.test(mount.superOptions)) {
    // FIEMAP_FLAG_SYNC only commits data to the journal: the blocks in place may still hold older bytes.
    volume.networkOnly = 'ext4 data=journal: data reaches its blocks only at journal checkpoints';
  }
  return volume;
}
