// Fusing a network mount to a volume: identify the volume, find its local device, prove the mount shows it.
import { readFile, stat } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { FusedError, errorMessage } from '../errors.js';
import { readKeyFile, readSecretFile } from '../protocol/index.js';
import { readIdentity, readMounts } from '../sys/blockdev.js';
import { findMount } from '../volume/mountinfo.js';
import { Device } from './device.js';
import { findVolumeDevice, isBlockDevice } from './devices.js';
import { deviceIdentity } from './identity.js';
import { guardOf } from './guard.js';
import { checkProbeOnDevice, type Probe } from './proof.js';
import { DEFAULT_KEY_FILE, canonicalMountpoint, updateFuses, type FuseRecord } from './registry.js';
import type { MountFidelity } from './mapcheck.js';
import { Session, formatServerAddress, parseServerAddress, type FileMap, type ServerAddress } from './session.js';

export const DEFAULT_SECRET_FILE = '/etc/fused/secret';
export { DEFAULT_KEY_FILE };

export function defaultNode(): string {
  return hostname().replace(/[^A-Za-z0-9._-]/g, '-').slice(0, 64) || 'node';
}

/** The map server's master secret (serve, key). */
export function loadSecret(file: string): Buffer {
  try {
    return readSecretFile(file);
  } catch (err) {
    const why = errorMessage(err).replace(/^secret file .*?: (?=[a-z])/, '');
    const hint = /missing/.test(why) ? ` (make one with: (umask 077; openssl rand -hex 32 > ${file}); it stays on the map server)` : '';
    throw new FusedError('failure', why + hint, `secret file ${file}`);
  }
}

/** A node's own key (fuse, and every client command after it). */
export function loadKey(file: string): Buffer {
  try {
    return readKeyFile(file);
  } catch (err) {
    const why = errorMessage(err).replace(/^key file .*?: (?=[a-z])/, '');
    const hint = /missing/.test(why) ? ` (make one on the map server with: (umask 077; fusedctl key NODE > ${file}), and copy it here)` : '';
    throw new FusedError('failure', why + hint, `key file ${file}`);
  }
}

export async function openSession(server: string | ServerAddress, keyFile: string, node: string, timeoutMs?: number): Promise<Session> {
  const address = typeof server === 'string' ? parseServerAddress(server) : server;
  return Session.open(address, { node, key: loadKey(keyFile), ...(timeoutMs ? { timeoutMs } : {}) });
}

export interface FuseOptions {
  server: string;
  keyFile: string;
  node: string;
  volume?: string;
  device?: string;
  /** How long to wait for the probe file to appear through the mount (network caches). */
  probeWaitMs?: number;
}

/** Fuse MOUNTPOINT; on success the record is saved and returned. */
export async function fuse(mountpointArg: string, opts: FuseOptions): Promise<FuseRecord> {
  const mountpoint = await canonicalMountpoint(mountpointArg);
  if (!(await stat(mountpoint)).isDirectory()) throw new FusedError('failure', 'not a directory', mountpointArg);
  const session = await openSession(opts.server, opts.keyFile, opts.node);
  try {
    let volume = opts.volume;
    if (!volume) {
      const names = await session.volumes();
      if (names.length !== 1) {
        throw new FusedError('usage', `server has ${names.length} volumes (${names.join(', ')}); name one with --volume`, mountpointArg);
      }
      volume = names[0]!;
    }
    const info = await session.volume(volume).catch((err: Error) => {
      throw new FusedError('failure', err.message, `volume ${volume}`);
    });
    const device = await findVolumeDevice(info.uuid, opts.device);
    // One probe serves both proofs: the device holds the token (rule 7) and the mount shows it.
    const probe = await session.probe(volume);
    let fidelity: MountFidelity;
    try {
      const opened = await Device.open(device.path, info.uuid);
      let probeMap: FileMap;
      try {
        probeMap = await checkProbeOnDevice(session, volume, opened, probe);
      } finally {
        await opened.close();
      }
      await proveMount(session, volume, mountpoint, probe, opts.probeWaitMs ?? 5000);
      fidelity = await mountFidelity(join(mountpoint, probe.name), probeMap);
    } finally {
      await session.unprobe(volume, probe.name).catch(() => {});
    }
    const deviceId = await deviceIdentity(device.path);
    const mount = findMount(await readMounts(), mountpoint);
    const record: FuseRecord = {
      mountpoint,
      server: formatServerAddress(session.address),
      transport: session.address.ghost === undefined ? 'tcp' : 'ghost',
      volume,
      uuid: info.uuid,
      fstype: info.fstype,
      blockSize: info.blockSize,
      device: device.path,
      ...(deviceId ? { deviceId } : {}),
      node: opts.node,
      keyFile: opts.keyFile,
      access: session.access,
      fusedAt: new Date().toISOString(),
      ...(mount ? { mountFstype: mount.fstype, mountSource: mount.source } : {}),
      ...fidelity,
    };
    await updateFuses((records) => [...records.filter((r) => r.mountpoint !== mountpoint), record]);
    return record;
  } finally {
    session.close();
  }
}

/** What the mount passes through from the server, seen on the probe file: the server's inode number, and its
 *  mtime to the nanosecond (only provable when the server's mtime has a fraction of a second). */
async function mountFidelity(path: string, probeMap: FileMap): Promise<MountFidelity> {
  const st = await stat(path, { bigint: true });
  const mtimeNs = probeMap.mtimeNs;
  return {
    mountInodes: probeMap.ino !== undefined && BigInt(probeMap.ino) === st.ino,
    mountMtimeNs: mtimeNs !== undefined && mtimeNs % 1_000_000_000n !== 0n && mtimeNs === st.mtimeNs,
  };
}

/** The server made a uniquely named file in the volume root; MOUNTPOINT must show it, with its token. */
async function proveMount(session: Session, volume: string, mountpoint: string, probe: Probe, waitMs: number): Promise<void> {
  const path = join(mountpoint, probe.name);
  const deadline = Date.now() + waitMs;
  for (;;) {
    const seen = await readFile(path, 'utf8').catch(() => undefined);
    if (seen?.trim() === probe.token) return;
    if (Date.now() >= deadline) {
      throw new FusedError('refused', `does not show volume ${volume} of ${formatServerAddress(session.address)} (probe file ${probe.name} not seen through the mount)`, mountpoint);
    }
    await sleep(100);
  }
}

export async function unfuse(mountpointArg: string): Promise<FuseRecord> {
  let mountpoint = mountpointArg;
  try {
    mountpoint = await canonicalMountpoint(mountpointArg);
  } catch {
    // a mount point that is gone can still be unfused by the name it was recorded under
  }
  let found: FuseRecord | undefined;
  await updateFuses((records) => {
    found = records.find((r) => r.mountpoint === mountpoint || r.mountpoint === mountpointArg);
    if (!found) throw new FusedError('failure', 'not fused', mountpointArg);
    return records.filter((r) => r !== found);
  });
  return found!;
}

/** A fuse and its health; access is as the server says now, or as it said at fuse time when unreachable. */
export interface FuseStatus extends FuseRecord {
  serverReachable: boolean;
  devicePresent: boolean;
  uuidMatches: boolean;
  /** Whether the device at the recorded path still has the recorded identity; null when none was recorded. */
  deviceIdMatches: boolean | null;
  /** How the server allocates blocks for direct writes on the volume, and its reserve of zeros now (null when
   *  the server was not reached). */
  allocation: string | null;
  reserveBytes: number | null;
  /** Whether a mount guard (fusedctl guard) keeps this node's OS from mounting the volume. */
  guarded: boolean;
  problem: string | null;
}

export async function fuseStatus(record: FuseRecord, timeoutMs = 2000): Promise<FuseStatus> {
  const problems: string[] = [];
  let serverReachable = false;
  let access = record.access;
  let allocation: string | null = null;
  let reserveBytes: number | null = null;
  try {
    const s = await openSession(record.server, record.keyFile, record.node, timeoutMs);
    try {
      await s.ping();
      serverReachable = true;
      access = s.access;
      try {
        const vol = await s.volume(record.volume);
        allocation = vol.allocation;
        reserveBytes = vol.reserveBytes;
      } catch (err) {
        problems.push(`volume ${record.volume}: ${errorMessage(err)}`);
      }
    } finally {
      s.close();
    }
  } catch (err) {
    problems.push(`server: ${errorMessage(err)}`);
  }
  const devicePresent = await isBlockDevice(record.device);
  let uuidMatches = false;
  if (devicePresent) {
    try {
      const id = await readIdentity(record.device);
      uuidMatches = id?.uuid === record.uuid;
      if (!uuidMatches) problems.push(`device UUID is now ${id?.uuid ?? 'unknown'}`);
    } catch (err) {
      problems.push(`device: ${errorMessage(err)}`);
    }
  } else {
    problems.push('device missing');
  }
  let deviceIdMatches: boolean | null = null;
  if (record.deviceId) {
    const now = devicePresent ? await deviceIdentity(record.device) : undefined;
    deviceIdMatches = now === record.deviceId;
    if (devicePresent && !deviceIdMatches) problems.push(`device identity is now ${now ?? 'none'} (fused as ${record.deviceId})`);
  }
  const guarded = (await guardOf(record.uuid)) !== undefined;
  return {
    ...record, ...(access ? { access } : {}), serverReachable, devicePresent, uuidMatches, deviceIdMatches, allocation, reserveBytes, guarded,
    problem: problems.length ? problems.join('; ') : null,
  };
}
