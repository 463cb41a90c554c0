// The fuse registry: which network mounts are fused to which volume, server and local device.
import { link, mkdir, open, readFile, realpath, rename, stat, unlink, writeFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { FusedError, describeError, errnoCode, errorMessage } from '../errors.js';
import type { Access } from '../protocol/index.js';

/** Where a node's key lives unless --key-file says otherwise. */
export const DEFAULT_KEY_FILE = '/etc/fused/node.key';

export interface FuseRecord {
  mountpoint: string;
  /** HOST:PORT, or ghost:MOUNTPOINT for the ghost-file transport. */
  server: string;
  /** How the map server is reached: TCP (the default, also for records from before the field), or ghost files. */
  transport?: 'tcp' | 'ghost';
  volume: string;
  uuid: string;
  fstype: string;
  blockSize: number;
  device: string;
  /** The device's stable identity at fuse time (dm UUID or name, loop backing file, WWID, by-id), where the kernel
   *  offers one: a session checks the device path still has it, else finds the device that does. */
  deviceId?: string;
  node: string;
  /** The node key file (`fusedctl key NODE` on the map server), used by every later command. */
  keyFile: string;
  /** What the server let this node do when it was fused (its role there). */
  access?: Access;
  fusedAt: string;
  /** The network mount seen at fuse time (file-system type and source), re-checked before each direct read. */
  mountFstype?: string;
  mountSource?: string;
  /** What the mount passes through from the server (learned at fuse time from the probe file). */
  mountInodes?: boolean;
  mountMtimeNs?: boolean;
}

export function stateDir(env = process.env): string {
  if (env.FUSED_STATE_DIR) return env.FUSED_STATE_DIR;
  return process.getuid?.() === 0 ? '/var/lib/fused' : join(homedir(), '.local', 'state', 'fused');
}

const FILE = 'fuses.json';

export async function loadFuses(dir = stateDir()): Promise<FuseRecord[]> {
  let text: string;
  try {
    text = await readFile(join(dir, FILE), 'utf8');
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return [];
    throw new FusedError('failure', errorMessage(err), join(dir, FILE));
  }
  try {
    const parsed = JSON.parse(text) as { fuses?: (FuseRecord & { secretFile?: string })[] };
    // Records from before per-node keys named a shared secret file instead; they use the default key.
    return Array.isArray(parsed.fuses) ? parsed.fuses.map(({ secretFile: _old, ...r }) => ({ ...r, keyFile: r.keyFile ?? DEFAULT_KEY_FILE })) : [];
  } catch (err) {
    throw new FusedError('failure', `corrupt state file: ${errorMessage(err)}`, join(dir, FILE));
  }
}

/** Write the registry atomically: a reader sees the old file or the new one, never half of one. */
export async function saveFuses(records: FuseRecord[], dir = stateDir()): Promise<void> {
  await mkdir(dir, { recursive: true, mode: 0o755 });
  const tmp = join(dir, `.${FILE}.${process.pid}.tmp`);
  await writeFile(tmp, JSON.stringify({ version: 1, fuses: records }, null, 2) + '\n', { mode: 0o644 });
  await rename(tmp, join(dir, FILE));
}

const LOCK = 'fuses.json.lock';
export const DEFAULT_LOCK_WAIT_MS = 10_000;
const EMPTY_LOCK_MS = 2_000;

/** Read, change and write the registry under an exclusive lock, so concurrent fuse/unfuse never lose a record.
 *  `change` gets the current records and returns the new ones; if it throws, nothing is written. */
export async function updateFuses(
  change: (records: FuseRecord[]) => FuseRecord[] | Promise<FuseRecord[]>,
  dir = stateDir(),
  waitMs = DEFAULT_LOCK_WAIT_MS,
): Promise<FuseRecord[]> {
  await mkdir(dir, { recursive: true, mode: 0o755 });
  const release = await lockRegistry(dir, waitMs);
  try {
    const records = await change(await loadFuses(dir));
    await saveFuses(records, dir);
    return records;
  } finally {
    await release();
  }
}

/** The lock is a file created with O_EXCL holding the holder's PID; a lock whose PID is dead is taken over. */
async function lockRegistry(dir: string, waitMs: number): Promise<() => Promise<void>> {
  const path = join(dir, LOCK);
  const token = `${process.pid}\n`;
  const deadline = Date.now() + waitMs;
  for (let pause = 5; ; pause = Math.min(pause * 2, 100)) {
    try {
      const fh = await open(path, 'wx', 0o644);
      try {
        await fh.writeFile(token);
      } finally {
        await fh.close();
      }
      return () => unlink(path).catch(() => {});
    } catch (err) {
      if (errnoCode(err) !== 'EEXIST') throw new FusedError('failure', `cannot lock the fuse registry: ${describeError(err)}`, path);
    }
    const holder = await readFile(path, 'utf8').catch(() => undefined);
    if (holder === undefined) continue; // released meanwhile
    // A PID that is gone is a holder that died. An empty lock is one being written just now, unless it has
    // been empty for seconds (its maker died between creating and writing it).
    const dead = /^\d+$/.test(holder.trim())
      ? !alive(Number(holder.trim()))
      : holder === '' && Date.now() - ((await stat(path).catch(() => undefined))?.mtimeMs ?? Date.now()) > EMPTY_LOCK_MS;
    if (dead) {
      await takeOver(path, holder);
      continue;
    }
    if (Date.now() >= deadline) {
      throw new FusedError('failure', `locked by process ${holder.trim() || '(unknown)'} for over ${Math.round(waitMs / 1000)} s (if no fusedctl is running, remove the lock file)`, path);
    }
    await sleep(pause);
  }
}

/** Move a dead holder's lock out of the way. Renaming is atomic: if what we moved is not the lock we judged
 *  stale (someone took it over first), put it back. */
async function takeOver(path: string, stale: string): Promise<void> {
  const aside = `${path}.stale.${process.pid}.${Math.random().toString(36).slice(2)}`;
  try {
    await rename(path, aside);
  } catch {
    return; // gone already: someone else took it over or released it
  }
  const moved = await readFile(aside, 'utf8').catch(() => stale);
  if (moved !== stale) await link(aside, path).catch(() => {});
  await unlink(aside).catch(() => {});
}

function alive(pid: number): boolean {
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return errnoCode(err) === 'EPERM';
  }
}

export interface FusedFile {
  fuse: FuseRecord;
  /** Path relative to the volume root, as raw bytes. */
  rel: Buffer;
  /** Resolved absolute path on this node, as raw bytes. */
  abs: Buffer;
}

/** The fuse a file lives under (longest mount point that is a prefix of its resolved path), if any. */
export async function findFuseFor(file: Buffer, records: FuseRecord[]): Promise<FusedFile | undefined> {
  return fuseOfPath((await realpath(file, { encoding: 'buffer' })) as Buffer, records);
}

/** The fuse a resolved absolute path is under (longest mount point that is a prefix of it), if any. */
export function fuseOfPath(abs: Buffer, records: FuseRecord[]): FusedFile | undefined {
  let best: FusedFile | undefined;
  for (const fuse of records) {
    const mp = Buffer.from(fuse.mountpoint);
    const prefix = mp.at(-1) === 0x2f ? mp : Buffer.concat([mp, Buffer.from('/')]);
    if (abs.length > prefix.length && abs.subarray(0, prefix.length).equals(prefix)) {
      if (!best || fuse.mountpoint.length > best.fuse.mountpoint.length) {
        best = { fuse, rel: abs.subarray(prefix.length), abs };
      }
    }
  }
  return best;
}

export async function canonicalMountpoint(p: string): Promise<string> {
  try {
    return await realpath(p);
  } catch (err) {
    throw new FusedError('failure', errorMessage(err), p);
  }
}
