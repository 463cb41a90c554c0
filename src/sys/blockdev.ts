// Block device facts from sysfs and /proc: names, device numbers, mounts, superblock identity.
import { readFile, readdir, stat } from 'node:fs/promises';
import { readHead } from '../native/index.js';
import { parseMountinfo, type MountEntry } from '../volume/mountinfo.js';
import { PROBE_BYTES, probeSuperblock, type VolumeIdentity } from '../volume/superblock.js';

export async function readMounts(file = '/proc/self/mountinfo'): Promise<MountEntry[]> {
  return parseMountinfo(await readFile(file, 'utf8'));
}

/** /dev path of block device major:minor, from sysfs (DEVNAME in uevent). */
export async function devicePathOf(major: number, minor: number): Promise<string | undefined> {
  try {
    const uevent = await readFile(`/sys/dev/block/${major}:${minor}/uevent`, 'utf8');
    const m = /^DEVNAME=(.+)$/m.exec(uevent);
    return m ? `/dev/${m[1]}` : undefined;
  } catch {
    return undefined;
  }
}

export interface BlockDevice { path: string; major: number; minor: number }

/** Every block device the kernel knows (partitions included), from /sys/class/block. */
export async function listBlockDevices(): Promise<BlockDevice[]> {
  const out: BlockDevice[] = [];
  for (const name of await readdir('/sys/class/block').catch(() => [] as string[])) {
    try {
      const dev = (await readFile(`/sys/class/block/${name}/dev`, 'utf8')).trim();
      const [major, minor] = dev.split(':').map(Number);
      // A loop device with no backing file has size 0: nothing to probe.
      const size = Number((await readFile(`/sys/class/block/${name}/size`, 'utf8')).trim());
      if (!size) continue;
      out.push({ path: `/dev/${name}`, major: major!, minor: minor! });
    } catch {
      // a device that vanished while we looked
    }
  }
  return out;
}

/** Major and minor of a block device node, or undefined if path is not a block device. */
export async function deviceNumbers(path: string): Promise<{ major: number; minor: number } | undefined> {
  const st = await stat(path);
  if (!st.isBlockDevice()) return undefined;
  return splitDev(st.rdev);
}

/** Major and minor of a dev_t (glibc's gnu_dev_major/minor layout). */
export function splitDev(dev: number | bigint): { major: number; minor: number } {
  const d = BigInt(dev);
  return {
    major: Number(((d >> 8n) & 0xfffn) | ((d >> 32n) & ~0xfffn)),
    minor: Number((d & 0xffn) | ((d >> 12n) & ~0xffn)),
  };
}

/** The superblock identity of a device or image, read with O_DIRECT (never a stale page cache). */
export async function readIdentity(path: string): Promise<VolumeIdentity | null> {
  return probeSuperblock(await readHead(path, PROBE_BYTES));
}

/** The request queue of block device major:minor (a partition's is its disk's): how many requests it holds and the
 *  largest one in bytes; undefined when sysfs does not say (an image file, no sysfs). */
export async function readQueueFacts(major: number, minor: number, sys = '/sys/dev/block'): Promise<{ requests: number; maxRequestBytes: number } | undefined> {
  for (const dir of [`${sys}/${major}:${minor}/queue`, `${sys}/${major}:${minor}/../queue`]) {
    try {
      const requests = Number((await readFile(`${dir}/nr_requests`, 'latin1')).trim());
      const maxKb = Number((await readFile(`${dir}/max_sectors_kb`, 'latin1')).trim());
      if (Number.isSafeInteger(requests) && Number.isSafeInteger(maxKb) && requests > 0 && maxKb > 0) return { requests, maxRequestBytes: maxKb * 1024 };
    } catch {
      // not here: a partition's queue is its disk's
    }
  }
  return undefined;
}
