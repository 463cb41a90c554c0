// The fuse registry: which network mounts are fused to which volume, server and local device.
import { mkdir, readFile, realpath, rename, writeFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { FusedError, errnoCode, errorMessage } from '../errors.js';
import type { Access } from '../protocol/index.js';

/** Where a node's key lives unless --key-file says otherwise. */
export const DEFAULT_KEY_FILE = '/etc/fused/node.key';

export interface FuseRecord {
  mountpoint: string;
  server: string;
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

export interface FusedFile {
  fuse: FuseRecord;
  /** Path relative to the volume root, as raw bytes. */
  rel: Buffer;
  /** Resolved absolute path on this node, as raw bytes. */
  abs: Buffer;
}

/** The fuse a file lives under (longest mount point that is a prefix of its resolved path), if any. */
export async function findFuseFor(file: Buffer, records: FuseRecord[]): Promise<FusedFile | undefined> {
  const abs = (await realpath(file, { encoding: 'buffer' })) as Buffer;
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
