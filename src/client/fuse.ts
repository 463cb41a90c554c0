// Fusing a network mount to a volume: identify the volume, find its local device, prove the mount shows it.
import { readFile, stat } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { FusedError, errorMessage } from '../errors.js';
import { readSecretFile } from '../protocol/index.js';
import { readIdentity, readMounts } from '../sys/blockdev.js';
import { findMount } from '../volume/mountinfo.js';
import { findVolumeDevice, isBlockDevice } from './devices.js';
import { canonicalMountpoint, updateFuses, type FuseRecord } from './registry.js';
import { Session, formatServerAddress, parseServerAddress, type ServerAddress } from './session.js';

export const DEFAULT_SECRET_FILE = '/etc/fused/secret';

export function defaultNode(): string {
  return hostname().replace(/[^A-Za-z0-9._-]/g, '-').slice(0, 64) || 'node';
}

export function loadSecret(file: string): Buffer {
  try {
    return readSecretFile(file);
  } catch (err) {
    const why = errorMessage(err).replace(/^secret file .*?: (?=[a-z])/, '');
    const hint = /missing/.test(why) ? ` (make one with: openssl rand -hex 32 > ${file}; the same file on every node)` : '';
    throw new FusedError('failure', why + hint, `secret file ${file}`);
  }
}

export async function openSession(server: string | ServerAddress, secretFile: string, node: string, timeoutMs?: number): Promise<Session> {
  const address = typeof server === 'string' ? parseServerAddress(server) : server;
  return Session.open(address, { node, secret: loadSecret(secretFile), ...(timeoutMs ? { timeoutMs } : {}) });
}

export interface FuseOptions {
  server: string;
  secretFile: string;
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
  const session = await openSession(opts.server, opts.secretFile, opts.node);
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
    await proveMount(session, volume, mountpoint, opts.probeWaitMs ?? 5000);
    const mount = findMount(await readMounts(), mountpoint);
    const record: FuseRecord = {
      mountpoint,
      server: formatServerAddress(session.address),
      volume,
      uuid: info.uuid,
      fstype: info.fstype,
      blockSize: info.blockSize,
      device: device.path,
      node: opts.node,
      secretFile: opts.secretFile,
      fusedAt: new Date().toISOString(),
      ...(mount ? { mountFstype: mount.fstype, mountSource: mount.source } : {}),
    };
    await updateFuses((records) => [...records.filter((r) => r.mountpoint !== mountpoint), record]);
    return record;
  } finally {
    session.close();
  }
}

/** The server makes a uniquely named file in the volume root; MOUNTPOINT must show it, with its token. */
async function proveMount(session: Session, volume: string, mountpoint: string, waitMs: number): Promise<void> {
  const probe = await session.probe(volume);
  try {
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
  } finally {
    await session.unprobe(volume, probe.name).catch(() => {});
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

export interface FuseStatus extends FuseRecord {
  serverReachable: boolean;
  devicePresent: boolean;
  uuidMatches: boolean;
  problem: string | null;
}

export async function fuseStatus(record: FuseRecord, timeoutMs = 2000): Promise<FuseStatus> {
  const problems: string[] = [];
  let serverReachable = false;
  try {
    const s = await openSession(record.server, record.secretFile, record.node, timeoutMs);
    try {
      await s.ping();
      serverReachable = true;
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
  return { ...record, serverReachable, devicePresent, uuidMatches, problem: problems.length ? problems.join('; ') : null };
}
