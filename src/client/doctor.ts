// fusedctl doctor's checks: the kernel features fused relies on, and for each fuse its device, key, server,
// proof by content, clock and mount guard. Each check is a row; nothing here prints.
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FusedError, errnoCode, errorMessage } from '../errors.js';
import { close, fiemap, getLease, openBeneath, setLease } from '../native/index.js';
import { readIdentity } from '../sys/blockdev.js';
import { Device } from './device.js';
import { isBlockDevice } from './devices.js';
import { loadKey, openSession } from './fuse.js';
import { describeThreat, findMountThreats, guardOf, udevApplied } from './guard.js';
import { deviceIdentity } from './identity.js';
import { checkProbeOnDevice } from './proof.js';
import type { FuseRecord } from './registry.js';
import type { Session } from './session.js';

export type CheckStatus = 'ok' | 'warn' | 'fail' | 'skip';
export interface CheckRow {
  check: string;
  /** What was checked: the kernel (a temp directory), or a fuse's mount point. */
  subject: string;
  status: CheckStatus;
  detail: string;
}

/** 0 all ok (skips too), 1 when a check failed, WARN_EXIT when some only warned. */
export const WARN_EXIT = 4;
export function doctorExit(rows: readonly CheckRow[]): number {
  if (rows.some((r) => r.status === 'fail')) return 1;
  return rows.some((r) => r.status === 'warn') ? WARN_EXIT : 0;
}

export const row = (check: string, subject: string, status: CheckStatus, detail: string): CheckRow => ({ check, subject, status, detail });

/** Kernel features, tried on a temp file in DIR (on the file system fused keeps its state on). */
export async function kernelChecks(dir: string): Promise<CheckRow[]> {
  const rows: CheckRow[] = [];
  let work: string;
  try {
    work = await mkdtemp(join(dir, '.fused-doctor-'));
  } catch {
    work = await mkdtemp(join(tmpdir(), 'fused-doctor-'));
  }
  const file = join(work, 'probe');
  try {
    await writeFile(file, Buffer.alloc(8192, 0x5a), { flush: true });
    rows.push(await tryFiemap(work, file));
    rows.push(await tryLease(work, file));
    rows.push(await tryOpenat2(work));
  } finally {
    await rm(work, { recursive: true, force: true });
  }
  return rows;
}


async function tryFiemap(dir: string, file: string): Promise<CheckRow> {
  let fd: number | undefined;
  try {
    fd = await openBeneath(dir, 'probe');
    const extents = await fiemap(fd);
    if (extents.length === 0) return row('fiemap', 'kernel', 'warn', `no extents reported for a written file in ${dir}`);
    return row('fiemap', 'kernel', 'ok', `${extents.length} extent(s) for a test file in ${dir}`);
  } catch (err) {
    const code = errnoCode(err);
    if (code === 'EOPNOTSUPP' || code === 'ENOTTY') {
      return row('fiemap', 'kernel', 'warn', `not supported by the file system of ${dir}; a map server needs it on the volumes it serves`);
    }
    return row('fiemap', 'kernel', 'fail', `${file}: ${errorMessage(err)}`);
  } finally {
    if (fd !== undefined) await close(fd).catch(() => {});
  }
}

async function tryLease(dir: string, file: string): Promise<CheckRow> {
  const enabled = await readFile('/proc/sys/fs/leases-enable', 'utf8').catch(() => '1');
  if (enabled.trim() === '0') return row('lease', 'kernel', 'fail', 'kernel leases are off (fs.leases-enable=0): a map server cannot take its read leases');
  let fd: number | undefined;
  try {
    fd = await openBeneath(dir, 'probe');
    setLease(fd, 'read');
    const held = getLease(fd);
    setLease(fd, 'none');
    if (held !== 'read') return row('lease', 'kernel', 'fail', `F_SETLEASE F_RDLCK took, but F_GETLEASE reports '${held}'`);
    return row('lease', 'kernel', 'ok', `read lease taken and released on ${file}`);
  } catch (err) {
    return row('lease', 'kernel', 'fail', `cannot take a read lease on ${file}: ${errorMessage(err)}`);
  } finally {
    if (fd !== undefined) await close(fd).catch(() => {});
  }
}

async function tryOpenat2(dir: string): Promise<CheckRow> {
  let fd: number | undefined;
  try {
    fd = await openBeneath(dir, 'probe');
  } catch (err) {
    const why = errnoCode(err) === 'ENOSYS' ? 'the kernel has no openat2 (Linux 5.6 or later needed)' : errorMessage(err);
    return row('openat2', 'kernel', 'fail', `${why}: a map server cannot confine paths to its volumes`);
  } finally {
    if (fd !== undefined) await close(fd).catch(() => {});
  }
  // RESOLVE_BENEATH must refuse a way out, not just open.
  try {
    const escaped = await openBeneath(dir, '../' + dir.split('/').pop() + '/probe');
    await close(escaped).catch(() => {});
    return row('openat2', 'kernel', 'fail', 'RESOLVE_BENEATH let ".." out of the directory');
  } catch (err) {
    if (errnoCode(err) === 'EXDEV') return row('openat2', 'kernel', 'ok', 'RESOLVE_BENEATH opens inside a directory and refuses ".."');
    return row('openat2', 'kernel', 'fail', `unexpected answer to "..": ${errorMessage(err)}`);
  }
}

export interface FuseCheckOptions { timeoutMs: number; rulesDir?: string; fstab?: string; unitDirs?: string[] }

/** Every check of one fuse, in order: device, o-direct, key, server, proof, clock, guard, fstab. */
export async function fuseChecks(record: FuseRecord, opts: FuseCheckOptions): Promise<CheckRow[]> {
  const mp = record.mountpoint;
  const rows: CheckRow[] = [];
  const dev = record.device;

  // The device: present, the volume's UUID, the identity recorded at fuse.
  let deviceOk = false;
  let label = '';
  if (!(await isBlockDevice(dev))) {
    rows.push(row('device', mp, 'fail', `${dev}: missing or not a block device`));
  } else {
    try {
      const id = await readIdentity(dev);
      label = id?.label ?? '';
      const now = record.deviceId ? await deviceIdentity(dev) : undefined;
      if (id?.uuid !== record.uuid) rows.push(row('device', mp, 'fail', `${dev}: file-system UUID is ${id?.uuid || 'none'}, not the volume's ${record.uuid}`));
      else if (record.deviceId && now !== record.deviceId) rows.push(row('device', mp, 'fail', `${dev}: identity is now ${now ?? 'none'} (fused as ${record.deviceId})`));
      else {
        deviceOk = true;
        rows.push(row('device', mp, 'ok', `${dev}: ${record.fstype} ${record.uuid}${record.deviceId ? `, ${record.deviceId}` : ''}`));
      }
    } catch (err) {
      rows.push(row('device', mp, 'fail', `${dev}: unreadable: ${errorMessage(err)}`));
    }
  }

  // O_DIRECT: open the device as the data movers do and read its head.
  let device: Device | undefined;
  if (deviceOk) {
    try {
      device = await Device.open(dev, record.uuid);
      rows.push(row('o-direct', mp, 'ok', `${dev} opened with O_DIRECT, ${device.info.logicalSectorSize}-byte sectors`));
    } catch (err) {
      rows.push(row('o-direct', mp, 'fail', errorMessage(err)));
    }
  } else {
    rows.push(row('o-direct', mp, 'skip', 'device not usable'));
  }

  try {
    let key = false;
    try {
      loadKey(record.keyFile);
      key = true;
      rows.push(row('key', mp, 'ok', `${record.keyFile}: node ${record.node}, mode 0600 or stricter`));
    } catch (err) {
      rows.push(row('key', mp, 'fail', errorMessage(err)));
    }

    let session: Session | undefined;
    if (key) {
      try {
        session = await openSession(record.server, record.keyFile, record.node, opts.timeoutMs);
        await session.ping();
        rows.push(row('server', mp, 'ok', `${record.server}: authenticated both ways as ${record.node} (access ${session.access})`));
      } catch (err) {
        session?.close();
        session = undefined;
        rows.push(row('server', mp, 'fail', `${record.server}: ${errorMessage(err)}`));
      }
    } else {
      rows.push(row('server', mp, 'skip', 'no usable key'));
    }

    try {
      if (session && device) {
        rows.push(...(await proofAndClock(session, record, device, mp)));
      } else {
        const why = !session ? 'server not reached' : 'device not usable';
        rows.push(row('proof', mp, 'skip', why), row('clock', mp, 'skip', `unknown: ${why}`));
      }
    } finally {
      session?.close();
    }
  } finally {
    await device?.close();
  }

  const guard = await guardOf(record.uuid, opts.rulesDir);
  const applied = guard && deviceOk ? await udevApplied(dev) : undefined;
  rows.push(!guard
    ? row('guard', mp, 'warn', `no mount guard: this node's OS may mount the shared volume (fusedctl guard ${dev})`)
    : applied === false
      ? row('guard', mp, 'warn', `${guard.file} is in place, but udev has not applied it to ${dev} (udevadm trigger --action=change ${dev})`)
      : row('guard', mp, 'ok', `${guard.file}${applied ? ', applied by udev' : ''}`));

  try {
    const threats = await findMountThreats({ uuid: record.uuid, label, devices: [dev] }, opts.fstab, opts.unitDirs);
    const auto = threats.filter((t) => !t.noauto);
    rows.push(threats.length === 0
      ? row('fstab', mp, 'ok', 'no fstab line or mount unit mounts the volume')
      : row('fstab', mp, auto.length ? 'fail' : 'warn', threats.map(describeThreat).join('; ')));
  } catch (err) {
    rows.push(row('fstab', mp, 'warn', errorMessage(err)));
  }
  return rows;
}

/** Clock skew larger than this (beyond what the measurement cannot tell) is worth a warning: mtimes that other
 *  network clients compare, and logs, disagree. Leases never depend on it (each side times them on its own clock). */
export const SKEW_WARN_MS = 2000;

/** The proof by content; and the server's clock, read from the probe file's mtime, which the server's kernel
 *  stamps while it answers PROBE: the skew lies within half the round trip (plus the time-stamp granularity) of
 *  mtime − the midpoint of our send and receive times. */
async function proofAndClock(session: Session, record: FuseRecord, device: Device, mp: string): Promise<CheckRow[]> {
  let probe;
  const sent = Date.now();
  try {
    probe = await session.probe(record.volume);
  } catch (err) {
    return [row('proof', mp, 'fail', `map server: ${errorMessage(err)}`), row('clock', mp, 'skip', 'unknown: no probe')];
  }
  const received = Date.now();
  try {
    const map = await checkProbeOnDevice(session, record.volume, device, probe);
    const proof = row('proof', mp, 'ok', `the server's probe token read from ${device.path}`);
    return [proof, clockRow(mp, map.mtimeNs, sent, received)];
  } catch (err) {
    return [row('proof', mp, 'fail', err instanceof FusedError && err.subject ? `${err.subject}: ${err.message}` : errorMessage(err)), row('clock', mp, 'skip', 'unknown: no proof')];
  } finally {
    await session.unprobe(record.volume, probe.name).catch(() => {});
  }
}

export function clockRow(mp: string, mtimeNs: bigint | undefined, sentMs: number, receivedMs: number): CheckRow {
  if (mtimeNs === undefined) return row('clock', mp, 'skip', 'unknown: the server sent no mtime');
  // A whole-second mtime is a file system that keeps seconds only (ext4 with small inodes).
  const grainMs = mtimeNs % 1_000_000_000n === 0n ? 1000 : 10;
  const serverMs = Number(mtimeNs / 1_000_000n);
  const skew = serverMs - (sentMs + receivedMs) / 2;
  const within = (receivedMs - sentMs) / 2 + grainMs;
  const words = `server clock ${skew >= 0 ? 'ahead' : 'behind'} by ${(Math.abs(skew) / 1000).toFixed(3)} s (± ${(within / 1000).toFixed(3)} s)`;
  return Math.abs(skew) - within > SKEW_WARN_MS
    ? row('clock', mp, 'warn', `${words}; keep both on NTP`)
    : row('clock', mp, 'ok', words);
}
