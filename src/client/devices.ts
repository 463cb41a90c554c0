// Finding and checking the local block device that carries a volume.
import { readdir, stat } from 'node:fs/promises';
import { FusedError, errorMessage } from '../errors.js';
import { deviceNumbers, listBlockDevices, readIdentity, readMounts } from '../sys/blockdev.js';
import { mountsOfDevice } from '../volume/mountinfo.js';
import { namesWithIdentity } from './identity.js';
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
  // A device that is part of another (a multipath or LVM member) is reached through its holder instead.
  const free = (await Promise.all(matches.map(async (m) => ((await hasHolders(m.path)) ? undefined : m)))).filter(
    (m): m is DeviceCheck => m !== undefined && m.mountedAt.length === 0,
  );
  if (free.length > 1) {
    // A snapshot or a clone carries the same UUID with other bytes: never guess which one is the volume.
    throw new FusedError('refused', `several local devices carry the volume's UUID ${uuid} (${free.map((m) => m.path).join(', ')}); name the right one with --device`);
  }
  if (free[0]) return free[0];
  const mounted = matches.find((m) => m.mountedAt.length > 0);
  if (mounted) {
    throw new FusedError('refused', `device with UUID ${uuid} is mounted on this node (at ${mounted.mountedAt.join(', ')}); fused needs an unmounted path to the disk`, mounted.path);
  }
  throw new FusedError('refused', `no local block device has the volume's UUID ${uuid}`);
}

/**
 * An unmounted local device with no holders whose stable identity is ID (see identity.ts), other than EXCEPT (the
 * recorded path, which no longer has it); undefined if none. Its content is still to be proven.
 */
export async function findDeviceByIdentity(id: string, except?: string): Promise<string | undefined> {
  const devices = (await listBlockDevices()).filter((d) => d.path !== except);
  const names = new Set(await namesWithIdentity(id, devices.map((d) => d.path.slice('/dev/'.length))));
  const mounts = await readMounts();
  for (const d of devices) {
    if (!names.has(d.path.slice('/dev/'.length))) continue;
    if (mountsOfDevice(mounts, d.major, d.minor).length || (await hasHolders(d.path))) continue;
    return d.path;
  }
  return undefined;
}

export async function isBlockDevice(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isBlockDevice();
  } catch {
    return false;
  }
}

/** Whether other block devices are built on this one (/sys/class/block/NAME/holders is not empty). */
async function hasHolders(path: string): Promise<boolean> {
  const name = path.replace(/^\/dev\//, '');
  try {
    return (await readdir(`/sys/class/block/${name}/holders`)).length > 0;
  } catch {
    return false;
  }
}
