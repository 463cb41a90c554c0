// The client's half of the ghost-file transport: a session directory in this node's directory on the network
// mount, requests written as chunk files, replies and recalls (the mailbox) polled for by exact name.
import { randomBytes } from 'node:crypto';
import { rmSync } from 'node:fs';
import { mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { FusedError, describeError, errnoCode } from '../errors.js';
import {
  ALIVE_FILE,
  CLIENT_PREFIX,
  ChunkStream,
  GHOST_DIR,
  MAX_CLIENT_CHUNK,
  MAX_SERVER_CHUNK,
  SERVER_PREFIX,
  aliveProblem,
  removeSessionDir,
  touchHeartbeat,
} from './ghost.js';

/** The volume's hidden directory, as the server names it (src/server/allocate.ts RESERVE_DIR). */
const HIDDEN_DIR = '.fused';
/** While a reply is awaited the next chunk is looked for every FAST ms at first, backing off to SLOW. */
const FAST_POLL_MS = 1;
const SLOW_POLL_MS = 20;
/** Heartbeat and liveness checks at most this often. */
const CHECK_EVERY_MS = 1000;
/** After the client ends its side, how long it waits for the server's end before it removes its directory. */
const CLOSE_GRACE_MS = 2000;

export interface GhostClientOptions {
  /** Whether a reply is awaited (the session's pending requests): then the mailbox is polled fast. */
  busy: () => boolean;
  /** Poll interval while idle (a quarter of the lease time once HELLO told it). */
  idleMs: () => number;
}

/** Where a node's ghost directory is, seen through the network mount of the volume at `mountpoint`. */
export function ghostNodeDir(mountpoint: string, node: string): string {
  return join(mountpoint, HIDDEN_DIR, GHOST_DIR, node);
}

/**
 * Open a ghost session through the mount: check the server's heartbeat (a clear error at once when no server runs),
 * make the session directory, and return the stream the Session speaks the protocol over.
 * Errors: FusedError kind 'unreachable'.
 */
export async function connectGhost(mountpoint: string, node: string, o: GhostClientOptions): Promise<ChunkStream> {
  const subject = `map server ghost:${mountpoint}`;
  const fail = (why: string) => new FusedError('unreachable', why, subject);
  const aliveFile = join(mountpoint, HIDDEN_DIR, GHOST_DIR, ALIVE_FILE);
  const readAlive = () => readFile(aliveFile, 'utf8').catch((err: unknown) => {
    if (errnoCode(err) === 'ENOENT' || errnoCode(err) === 'EACCES') return undefined;
    throw err;
  });
  const problem = aliveProblem(await readAlive(), Date.now());
  if (problem) throw fail(problem);
  const nodeDir = ghostNodeDir(mountpoint, node);
  const dir = join(nodeDir, randomBytes(16).toString('hex'));
  try {
    await mkdir(dir, { mode: 0o700 });
    await touchHeartbeat(dir);
  } catch (err) {
    const code = errnoCode(err);
    if (code === 'ENOENT') throw fail(`no ghost directory for node ${node} (the server needs --ghost ${node}=UID)`);
    if (code === 'EACCES' || code === 'EPERM') throw fail(`node ${node}'s ghost directory is not writable here (the server's --ghost ${node}=UID must be the user this mount writes as)`);
    throw fail(describeError(err));
  }
  let checkedAt = Date.now();
  let closing = false;
  const stream: ChunkStream = new ChunkStream({
    dir,
    inPrefix: SERVER_PREFIX,
    outPrefix: CLIENT_PREFIX,
    maxInBytes: MAX_SERVER_CHUNK,
    maxOutBytes: MAX_CLIENT_CHUNK,
    peer: subject,
    pollMs: () => {
      if (!closing && !o.busy()) return o.idleMs();
      const waited = Date.now() - Math.max(stream.lastOut, stream.lastIn);
      return Math.min(SLOW_POLL_MS, FAST_POLL_MS + Math.floor(waited / 50));
    },
    onIdle: async () => {
      const now = Date.now();
      if (now - checkedAt < CHECK_EVERY_MS && o.busy()) return;
      checkedAt = now;
      try {
        await touchHeartbeat(dir);
      } catch (err) {
        if (errnoCode(err) === 'ENOENT') throw new Error('the map server ended the session (its directory is gone)');
        throw err;
      }
      const p = aliveProblem(await readAlive(), now);
      if (p) throw new Error(p);
    },
  });
  stream.on('finish', () => {
    closing = true;
    stream.notify();
    setTimeout(() => stream.destroy(), CLOSE_GRACE_MS);
  });
  stream.on('end', () => stream.destroy());
  // A command that exits with the session open (its close is not awaited) leaves no directory for the sweep: the
  // server sees it gone and ends the session at once.
  const onExit = () => {
    stream.closeOpenFilesSync();
    // The server may add a reply between the removal of the files and of the directory, and the mount may take a
    // moment to drop a hidden file of a chunk that was open: try again, briefly.
    for (let i = 0; i < 20; i++) {
      try {
        rmSync(dir, { recursive: true, force: true });
        return;
      } catch {
        Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 10);
      }
    }
  };
  process.once('exit', onExit);
  stream.on('close', () => {
    // Until the removal is done, an exit still does it.
    void removeSessionDir(dir).then(() => process.off('exit', onExit));
  });
  return stream;
}
