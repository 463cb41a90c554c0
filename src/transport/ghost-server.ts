// The map server's half of the ghost-file transport: node directories, the ALIVE heartbeat, session discovery
// (inotify and a periodic scan), one ChunkStream per session handed to the server as if it were a TCP socket,
// and the cleanup of sessions whose client went away.
import fs from 'node:fs';
import { chmod, chown, lstat, mkdir, open, readdir, rename, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { errnoCode, errorMessage } from '../errors.js';
import { formatErr } from '../protocol/index.js';
import {
  ALIVE_FILE,
  ALIVE_INTERVAL_MS,
  CLIENT_PREFIX,
  ChunkStream,
  GHOST_DIR,
  HEARTBEAT_FILE,
  MAX_CLIENT_CHUNK,
  MAX_SERVER_CHUNK,
  SERVER_PREFIX,
  SESSION_NAME,
  formatAlive,
} from './ghost.js';

/** A node allowed to use ghost files, and the owner its network mount writes as. */
export interface GhostNode {
  node: string;
  uid: number;
  gid: number;
}

export interface GhostOptions {
  nodes: GhostNode[];
  /** A session whose client shows no sign of life this long is ended and its directory removed. */
  cleanupMs: number;
  /** Sessions one node may have at once (per volume); more are refused with ERR BUSY. */
  maxSessionsPerNode: number;
  /** The periodic scan (belt and braces beside inotify), also the ALIVE rewrite. */
  scanMs?: number;
  log: (line: string) => void;
}

/** What the listener needs of the map server. */
export interface GhostHost {
  readonly opts: { node: string };
  /** Serve one stream as a connection; `peer` names it in the log. */
  acceptStream(stream: ChunkStream, peer: string): void;
}

interface GhostSession {
  name: string;
  node: GhostNode;
  /** An open descriptor of the session directory: every path goes through /proc/self/fd/N, so a client that swaps
   *  its directory for a symlink cannot lead the server anywhere else. */
  fd: number;
  dir: string;
  stream: ChunkStream;
  watcher?: fs.FSWatcher;
  /** The heartbeat file's mtime last seen, and when (server clock) anything from the client was last seen. */
  hbMtime: number;
  seenAt: number;
  closed: boolean;
}

/** The per-volume root of ghost files: VOLUME/.fused/ghost. */
export function ghostRoot(volumeDir: string, reserveDir: string): string {
  return join(volumeDir, reserveDir, GHOST_DIR);
}

export class GhostListener {
  /** Per node directory (volume root + node): its live sessions by name, and names already finished. */
  private readonly sessions = new Map<string, Map<string, GhostSession>>();
  private readonly finished = new Map<string, number>();
  private readonly watchers: fs.FSWatcher[] = [];
  private timer: NodeJS.Timeout | undefined;
  private readonly roots: string[] = [];
  private closing = false;
  /** Shutting down (retire): ALIVE is gone and not written again; the open sessions go on until close. */
  private retiring = false;
  /** The periodic scan under way, if any (retire waits for its ALIVE write). */
  private ticking: Promise<void> = Promise.resolve();

  constructor(
    private readonly host: GhostHost,
    private readonly o: GhostOptions,
  ) {}

  /** Make (or fix) the ghost directories of each volume's hidden directory, write ALIVE, start watching. */
  async start(reserveDirs: string[]): Promise<void> {
    for (const reserve of reserveDirs) {
      // Nodes that are not root must pass through the hidden directory to reach their own: search only, no listing.
      await mkdir(reserve, { mode: 0o700 }).catch((err: unknown) => {
        if (errnoCode(err) !== 'EEXIST') throw err;
      });
      const st = await lstat(reserve);
      if (!st.isDirectory() || st.uid !== process.getuid?.()) throw new Error(`${reserve} is not a directory owned by the server`);
      await chmod(reserve, 0o711);
      const root = join(reserve, GHOST_DIR);
      await ensureDir(root, 0o711, 0, 0);
      this.roots.push(root);
      for (const n of this.o.nodes) {
        const dir = join(root, n.node);
        await ensureDir(dir, 0o700, n.uid, n.gid);
        this.sessions.set(dir, new Map());
        try {
          const w = fs.watch(dir, () => void this.scanNode(dir, n));
          w.on('error', () => {});
          this.watchers.push(w);
        } catch (err) {
          this.o.log(`ghost: cannot watch ${dir} (${errorMessage(err)}); scanning every ${this.scanMs} ms`);
        }
        // Sessions of a previous server are of no use: their clients' handshakes went to a process that is gone.
        for (const name of await readdir(dir).catch(() => [] as string[])) removeSession(join(dir, name));
      }
      await this.writeAlive(root);
    }
    this.timer = setInterval(() => {
      this.ticking = this.tick();
    }, this.scanMs);
    this.o.log(`ghost files: ${this.roots.join(', ')} for node(s) ${this.o.nodes.map((n) => `${n.node} (uid ${n.uid})`).join(', ')}; cleanup after ${this.o.cleanupMs / 1000} s`);
  }

  private get scanMs(): number {
    return this.o.scanMs ?? ALIVE_INTERVAL_MS;
  }

  /** The server begins to shut down: ALIVE goes at once and is not written again, so a new client is refused at
   *  once ("no map server serves this volume") rather than waiting for an answer that will not come, while the
   *  sessions already open get their BYE and their maps drain (which may take the lease time). */
  async retire(): Promise<void> {
    this.retiring = true;
    await this.ticking.catch(() => {}); // a failed scan has surfaced already, where it happened
    for (const root of this.roots) await unlink(join(root, ALIVE_FILE)).catch(() => {});
  }

  async close(): Promise<void> {
    this.closing = true;
    clearInterval(this.timer);
    for (const w of this.watchers) w.close();
    for (const root of this.roots) await unlink(join(root, ALIVE_FILE)).catch(() => {});
    for (const [nodeDir, live] of this.sessions) {
      for (const s of live.values()) this.end(s, 'server shutdown');
      for (const name of await readdir(nodeDir).catch(() => [] as string[])) removeSession(join(nodeDir, name));
    }
  }

  private async tick(): Promise<void> {
    if (this.closing) return;
    if (!this.retiring) for (const root of this.roots) await this.writeAlive(root).catch((err: unknown) => this.o.log(`ghost: ${root}: ${errorMessage(err)}`));
    for (const root of this.roots) {
      for (const n of this.o.nodes) await this.scanNode(join(root, n.node), n);
    }
  }

  private async writeAlive(root: string): Promise<void> {
    const tmp = join(root, `.${ALIVE_FILE}.tmp`);
    const fh = await open(tmp, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_TRUNC | fs.constants.O_NOFOLLOW, 0o644);
    try {
      await fh.writeFile(formatAlive(this.host.opts.node, Date.now(), this.scanMs));
      await fh.chmod(0o644);
    } finally {
      await fh.close();
    }
    await rename(tmp, join(root, ALIVE_FILE));
  }

  /** New session directories become connections; live ones are checked for life; dead ones are removed. */
  private async scanNode(nodeDir: string, node: GhostNode): Promise<void> {
    const live = this.sessions.get(nodeDir);
    if (!live || this.closing) return;
    const names = await readdir(nodeDir).catch(() => [] as string[]);
    const now = Date.now();
    for (const name of names) {
      const key = join(nodeDir, name);
      const s = live.get(name);
      if (s) continue;
      const doneAt = this.finished.get(key);
      if (doneAt !== undefined) {
        if (now - doneAt > this.o.cleanupMs) {
          removeSession(key);
          this.finished.delete(key);
        }
        continue;
      }
      if (!SESSION_NAME.test(name)) continue;
      await this.admit(nodeDir, node, name);
    }
    for (const s of live.values()) {
      // Not in the listing: gone, or made (and admitted by the watcher) after the listing was read.
      if (!names.includes(s.name) && !fs.existsSync(s.dir)) {
        this.end(s, 'session directory removed');
        continue;
      }
      s.stream.notify();
      const hb = statAt(s.dir, HEARTBEAT_FILE);
      if (hb !== undefined && hb !== s.hbMtime) {
        s.hbMtime = hb;
        s.seenAt = now;
      }
      const last = Math.max(s.seenAt, s.stream.lastIn);
      if (now - last > this.o.cleanupMs) {
        this.o.log(`ghost ${node.node}/${s.name}: no sign of the client for ${Math.round((now - last) / 1000)} s; removing the session`);
        this.end(s, 'stale');
        removeSession(join(nodeDir, s.name));
        this.finished.delete(join(nodeDir, s.name));
      }
    }
    // Names finished whose directory the client removed itself.
    for (const key of this.finished.keys()) {
      if (key.startsWith(nodeDir + '/') && !names.includes(key.slice(nodeDir.length + 1))) this.finished.delete(key);
    }
  }

  private async admit(nodeDir: string, node: GhostNode, name: string): Promise<void> {
    const live = this.sessions.get(nodeDir)!;
    const path = join(nodeDir, name);
    let fd: number;
    try {
      const st = await lstat(path);
      // Only a real directory made by the node's own user is a session.
      if (!st.isDirectory() || (st.uid !== node.uid && st.uid !== 0)) return;
      fd = fs.openSync(path, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY | fs.constants.O_NOFOLLOW);
    } catch (err) {
      if (errnoCode(err) !== 'ENOENT') this.o.log(`ghost ${node.node}/${name}: ${errorMessage(err)}`);
      return;
    }
    if (live.has(name)) {
      fs.closeSync(fd);
      return;
    }
    const dir = `/proc/self/fd/${fd}`;
    const stream = new ChunkStream({
      dir,
      inPrefix: CLIENT_PREFIX,
      outPrefix: SERVER_PREFIX,
      maxInBytes: MAX_CLIENT_CHUNK,
      maxOutBytes: MAX_SERVER_CHUNK,
      owner: { uid: node.uid, gid: node.gid },
      untrusted: true,
      // The key already binds a node to its name; a node's directory is held to that name too, so a session found
      // in it cannot speak as another node.
      firstLine: (line) => {
        const m = /^HELLO (\S+)/.exec(line);
        return m && m[1] !== node.node ? formatErr('AUTHFAIL', `a session in node ${node.node}'s ghost directory must say HELLO ${node.node}`) : undefined;
      },
      peer: `ghost:${node.node}/${name.slice(0, 8)}`,
    });
    const s: GhostSession = { name, node, fd, dir, stream, hbMtime: statAt(dir, HEARTBEAT_FILE) ?? 0, seenAt: Date.now(), closed: false };
    live.set(name, s);
    stream.on('close', () => this.closed(nodeDir, s));
    stream.on('error', () => {});
    try {
      s.watcher = fs.watch(dir, (_ev, file) => {
        if (typeof file === 'string' && file.startsWith(`${CLIENT_PREFIX}.`)) stream.notify();
      });
      s.watcher.on('error', () => {});
    } catch {
      // The periodic scan still finds every chunk.
    }
    if (live.size > this.o.maxSessionsPerNode) {
      this.o.log(`ghost ${node.node}/${name.slice(0, 8)}: refused, ${live.size - 1} sessions already`);
      stream.end(`ERR BUSY too many ghost sessions for node ${node.node} (limit ${this.o.maxSessionsPerNode})\n`);
      setTimeout(() => stream.destroy(), this.o.cleanupMs).unref();
      return;
    }
    this.host.acceptStream(stream, stream.remoteAddress);
  }

  private end(s: GhostSession, why: string): void {
    if (s.closed) return;
    this.o.log(`${s.stream.remoteAddress}: ending (${why})`);
    s.stream.destroy();
  }

  /** The connection is over: its name is never served again; the client removes the directory, or the sweep does. */
  private closed(nodeDir: string, s: GhostSession): void {
    if (s.closed) return;
    s.closed = true;
    s.watcher?.close();
    this.sessions.get(nodeDir)?.delete(s.name);
    // Not removed now: the client may not have read our last chunks yet (an ERR before its HELLO was through, the
    // answer to its QUIT). It removes its directory itself when it is done; if it does not, the scan does after the
    // cleanup interval.
    this.finished.set(join(nodeDir, s.name), Date.now());
    fs.closeSync(s.fd);
  }
}

/**
 * Remove what a node left in its directory, as root, without ever following a link the node made: the session
 * directory is opened with O_NOFOLLOW and its entries unlinked through that descriptor (unlink never follows the
 * last component; a subdirectory, which no session makes, is left to its owner), then the directory itself.
 * A path-walking recursive remove could be raced into deleting elsewhere by a node swapping a subdirectory for a
 * symlink. Best effort.
 */
export function removeSession(path: string): void {
  let fd: number;
  try {
    fd = fs.openSync(path, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY | fs.constants.O_NOFOLLOW);
  } catch (err) {
    // A symlink or a file where a session directory should be: the entry itself goes.
    if (errnoCode(err) === 'ELOOP' || errnoCode(err) === 'ENOTDIR') fs.rmSync(path, { force: true });
    return;
  }
  try {
    const at = `/proc/self/fd/${fd}`;
    for (const name of fs.readdirSync(at)) {
      try {
        fs.unlinkSync(join(at, name));
      } catch {
        // A directory: not ours to descend into.
      }
    }
  } catch {
    // Gone meanwhile.
  } finally {
    fs.closeSync(fd);
  }
  try {
    fs.rmdirSync(path);
  } catch {
    // Not empty (a subdirectory the node made), or gone.
  }
}

/** A directory of ours with this mode and owner, made if missing; refused if it is a symlink or not a directory. */
async function ensureDir(path: string, mode: number, uid: number, gid: number): Promise<void> {
  try {
    await mkdir(path, { mode });
  } catch (err) {
    if (errnoCode(err) !== 'EEXIST') throw err;
  }
  const st = await lstat(path);
  if (!st.isDirectory()) throw new Error(`${path} is not a directory`);
  if (st.uid !== uid || st.gid !== gid) await chown(path, uid, gid);
  if ((st.mode & 0o7777) !== mode) await chmod(path, mode);
}

/** A file's mtime (ms) in a directory, or undefined. */
function statAt(dir: string, name: string): number | undefined {
  try {
    return fs.lstatSync(join(dir, name)).mtimeMs;
  } catch {
    return undefined;
  }
}

/** --ghost NODE=UID[:GID], repeatable (the GID defaults to the UID). */
export function parseGhostNodes(specs: string[], isNodeName: (n: string) => boolean): GhostNode[] {
  const nodes: GhostNode[] = [];
  for (const spec of specs) {
    const m = /^([^=]+)=(\d{1,10})(?::(\d{1,10}))?$/.exec(spec);
    if (!m || !isNodeName(m[1]!)) throw new Error(`expected NODE=UID[:GID], got '${spec}'`);
    if (nodes.some((n) => n.node === m[1])) throw new Error(`node ${m[1]} given twice`);
    const uid = Number(m[2]);
    nodes.push({ node: m[1]!, uid, gid: m[3] === undefined ? uid : Number(m[3]) });
  }
  return nodes;
}
