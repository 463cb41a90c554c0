// A block device's stable identity (device-mapper UUID or name, loop backing file, WWID, by-id link), so a
// device path that later names another disk is noticed, and the recorded disk found again under a new name.
import { readFileSync } from 'node:fs';
import { readdir, readlink, realpath, stat } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { splitDev } from '../sys/blockdev.js';

/** Where the kernel's views live; unit tests pass a fake tree. */
export interface SysRoots { sys: string; dev: string }
export const REAL_ROOTS: SysRoots = { sys: '/sys', dev: '/dev' };

/** A sysfs attribute, read synchronously: sysfs answers from memory, and an async readFile is five trips through
 *  the thread pool (open, fstat, read, read, close). The five or so a device's identity takes cost 6-7 ms of every
 *  direct command's start-up that way (measured), against well under 1 ms here. */
async function attr(path: string): Promise<string | undefined> {
  try {
    const v = readFileSync(path, 'utf8').trim();
    return v || undefined;
  } catch {
    return undefined;
  }
}

/**
 * The identity of the block device with kernel name NAME (dm-0, loop3, sda1), or undefined when the kernel
 * offers none. Kernel facts come first (they exist without udev); /dev/disk/by-id only where udev made it.
 */
export async function identityOfName(name: string, roots: SysRoots = REAL_ROOTS): Promise<string | undefined> {
  const dir = join(roots.sys, 'class', 'block', name);
  const dmUuid = await attr(join(dir, 'dm', 'uuid'));
  if (dmUuid) return `dm-uuid:${dmUuid}`;
  const dmName = await attr(join(dir, 'dm', 'name'));
  if (dmName) return `dm-name:${dmName}`;
  const backing = await attr(join(dir, 'loop', 'backing_file'));
  if (backing) return `loop:${backing}`;
  const wwid = (await attr(join(dir, 'device', 'wwid'))) ?? (await attr(join(dir, 'wwid')));
  if (wwid) return `wwid:${wwid}`;
  const part = await attr(join(dir, 'partition'));
  if (part) {
    // A partition's sysfs directory sits inside its disk's: the disk's identity plus the partition number.
    const parent = basename(dirname(await realpath(dir).catch(() => dir)));
    const whole = parent && parent !== 'block' ? await identityOfName(parent, roots) : undefined;
    if (whole) return `${whole}-part${part}`;
  }
  return byIdLink(name, roots);
}

/** The first /dev/disk/by-id link (sorted) that points at NAME; undefined without udev's directory. */
async function byIdLink(name: string, roots: SysRoots): Promise<string | undefined> {
  const byId = join(roots.dev, 'disk', 'by-id');
  let links: string[];
  try {
    links = (await readdir(byId)).sort();
  } catch {
    return undefined;
  }
  for (const link of links) {
    const target = await readlink(join(byId, link)).catch(() => undefined);
    if (target && basename(resolve(byId, target)) === name) return `by-id:${link}`;
  }
  return undefined;
}

/** The kernel name (dm-0, loop3) of the block device node at PATH (/dev/mapper/x is a node, not a link, without udev). */
export async function kernelName(path: string, roots: SysRoots = REAL_ROOTS): Promise<string | undefined> {
  const st = await stat(path).catch(() => undefined);
  if (!st?.isBlockDevice()) return undefined;
  const { major, minor } = splitDev(st.rdev);
  const link = join(roots.sys, 'dev', 'block', `${major}:${minor}`);
  const uevent = await attr(join(link, 'uevent'));
  const m = uevent ? /^DEVNAME=(.+)$/m.exec(uevent) : null;
  if (m) return basename(m[1]!);
  const real = await realpath(link).catch(() => undefined);
  return real ? basename(real) : undefined;
}

/** The identity of the block device at PATH, or undefined (not a block device, or no identity offered). */
export async function deviceIdentity(path: string, roots: SysRoots = REAL_ROOTS): Promise<string | undefined> {
  const name = await kernelName(path, roots);
  return name ? identityOfName(name, roots) : undefined;
}

/** Of the given kernel names, those whose identity is ID. */
export async function namesWithIdentity(id: string, names: readonly string[], roots: SysRoots = REAL_ROOTS): Promise<string[]> {
  const found: string[] = [];
  for (const name of names) {
    if ((await identityOfName(name, roots)) === id) found.push(name);
  }
  return found;
}
