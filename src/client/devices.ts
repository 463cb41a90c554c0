// Finding and checking the local block device that carries a volume.
import { stat } from 'node:fs/promises';
import { FusedError, errorMessage } from '../errors.js';
import { deviceNumbers, listBlockDevices, readIdentity, readMounts } from '../sys/blockdev.js';
import { mountsOfDevice } from '../volume/mountinfo.js';
import type { VolumeIdentity } from '../volume/superblock.js';

export interface DeviceCheck {
  path: string;
  identity: VolumeIdentity | null;
  mountedAt: string[];
}

export async function checkDevice(path: string): Promise<DeviceCheck> {
  let nums;
  try {
    nums = await deviceNumbers(path);
  } catch (err) {
    throw new FusedError('failure', errorMessage(err), path);
  }
  if (!nums) throw new FusedError('failure', 'not a block device', path);
  const mountedAt = mountsOfDevice(await readMounts(), nums.major, nums.minor).map((m) => m.mountPoint);
  let identity: VolumeIdentity | null;
  try {
    identity = await readIdentity(path);
  } catch (err) {
    throw new FusedError('failure', `cannot read superblock: ${errorMessage(err)}`, path);
  }
  return { path, identity, mountedAt };
}

/**
 * The unmounted local device whose superblock has this UUID. With `given`, check only that device.
 * Refusals (kind 'refused') name the device and why: other UUID, mounted here, none found.
 */
export async function findVolumeDevice(uuid: string, given?: string): Promise<DeviceCheck> {
  // An all-zero UUID is reported as '': it identifies nothing, so no device can be proven to carry the volume.
  if (!uuid) throw new FusedError('refused', 'the volume has no file-system UUID, so no device can be verified to carry it');
  if (given) {
    const d = await checkDevice(given);
    if (!d.identity) throw new FusedError('refused', `no ext2/3/4 or XFS superblock (volume UUID is ${uuid})`, given);
    if (d.identity.uuid !== uuid) {
      throw new FusedError('refused', `device UUID ${d.identity.uuid} differs from the volume's UUID ${uuid}`, given);
    }
    if (d.mountedAt.length) {
      throw new FusedError('refused', `device is mounted on this node (at ${d.mountedAt.join(', ')}); fused needs an unmounted path to the disk`, given);
    }
    return d;
  }
  const matches: DeviceCheck[] = [];
  const mounts = await readMounts();
  for (const dev of await listBlockDevices()) {
    let identity: VolumeIdentity | null;
    try {
      identity = await readIdentity(dev.path);
    } catch {
      continue; // unreadable (no medium, permission): not ours to use
    }
    if (identity?.uuid !== uuid) continue;
    matches.push({ path: dev.path, identity, mountedAt: mountsOfDevice(mounts, dev.major, dev.minor).map((m) => m.mountPoint) });
  }
  const free = matches.filter((m) => m.mountedAt.length === 0);
  if (free[0]) return free[0];
  if (matches[0]) {
    throw new FusedError('refused', `device with UUID ${uuid} is mounted on this node (at ${matches[0].mountedAt.join(', ')}); fused needs an unmounted path to the disk`, matches[0].path);
  }
  throw new FusedError('refused', `no local block device has the volume's UUID ${uuid}`);
}

export async function isBlockDevice(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isBlockDevice();
  } catch {
    return false;
  }
}
