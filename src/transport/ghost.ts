// Ghost files: the protocol's byte stream carried as numbered chunk files in a directory on the volume itself.
import { closeSync, constants as fsConstants } from 'node:fs';
import { open, rename, rm, unlink, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Duplex } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { errnoCode } from '../errors.js';

/** Under the volume's hidden directory (.fused): one directory per node, one per session inside it. */
export const GHOST_DIR = 'ghost';
/** The server's heartbeat beside the node directories: `fused-ghost 1 NODE EPOCH_MS INTERVAL_MS`. */
export const ALIVE_FILE = 'ALIVE';
/** A session's own heartbeat file: the client touches it while idle, so the server can tell it from a dead one. */
export const HEARTBEAT_FILE = 'hb';
/** Client-to-server chunks are c.SEQ, server-to-client chunks (replies and pushes: the mailbox) s.SEQ. */
export const CLIENT_PREFIX = 'c';
export const SERVER_PREFIX = 's';
/** The largest chunk a reader accepts from the other side (a request line is at most 16 KiB; chunks hold a batch). */
export const MAX_CLIENT_CHUNK = 1 << 20;
/** Server replies are split into chunks of at most this (a map of a million extents is ~70 MB). */
export const MAX_SERVER_CHUNK = 4 << 20;
/** How often the server rewrites ALIVE; a client refuses an ALIVE older than ALIVE_STALE_FACTOR intervals. */
export const ALIVE_INTERVAL_MS = 1000;
export const ALIVE_STALE_FACTOR = 5;
/** Session directory names: what the client makes (random hex), nothing else is taken for a session. */
export const SESSION_NAME = /^[0-9a-f]{16,64}$/;

export interface ChunkStreamOptions {
  /** The session directory. */
  dir: string;
  /** Prefix of the chunks this side reads, and of those it writes. */
  inPrefix: string;
  outPrefix: string;
  /** The largest chunk accepted from the other side; a bigger one ends the stream with an error. */
  maxInBytes: number;
  /** The largest chunk written; longer writes are split. */
  maxOutBytes: number;
  /** Owner given to every chunk written (the server writes as root into a node's directory). */
  owner?: { uid: number; gid: number };
  /** The other side may be hostile (the server reading a node's chunks): check each chunk's type and size first. */
  untrusted?: boolean;
  /** When the next file is not there yet: ms until looking again, or undefined to wait for notify(). */
  pollMs?: () => number | undefined;
  /** Called on every poll that found nothing (a heartbeat, a liveness check); an error it throws ends the stream. */
  onIdle?: () => Promise<void>;
  /** Looks at the first line the other side sends, before it is passed on: a line returned is sent back instead,
   *  and the stream ends (the server holds a node's session to that node's name). */
  firstLine?: (line: string) => string | undefined;
  /** Label used in error messages. */
  peer: string;
}

/**
 * A Duplex over chunk files: each write becomes the file OUT.SEQ (written as a temp file, then renamed, so the
 * reader sees all of it or nothing); the reader takes IN.SEQ in order by exact name and deletes it. An empty chunk
 * is the end of the stream. It stands in for a TCP socket (setNoDelay and setKeepAlive are accepted and ignored).
 */
export class ChunkStream extends Duplex {
  private inSeq = 0;
  private outSeq = 0;
  private reading = false;
  private wanted = false;
  private timer: NodeJS.Timeout | undefined;
  private ended = false;
  /** The start of the other side's first line while it is checked (firstLine); undefined once it has been. */
  private head: Buffer | undefined = Buffer.alloc(0);
  /** Chunk files open now (at most one read and one write). */
  private readonly openFds = new Set<number>();
  /** Monotonic-ish wall times (ms) of the last chunk read and written: the server's stale check reads them. */
  lastIn = Date.now();
  lastOut = Date.now();
  readonly remoteAddress: string;
  readonly remotePort = 0;

  constructor(private readonly o: ChunkStreamOptions) {
    super({ allowHalfOpen: true });
    this.remoteAddress = o.peer;
  }

  setNoDelay(): this {
    return this;
  }

  setKeepAlive(): this {
    return this;
  }

  /** Close the chunk files open now, at once (a process exiting: a network mount keeps a file removed while open
   *  as a hidden file, and the session directory then cannot be removed). */
  closeOpenFilesSync(): void {
    for (const fd of this.openFds) {
      try {
        closeSync(fd);
      } catch {
        // Closed meanwhile.
      }
    }
    this.openFds.clear();
  }

  /** Look for the next chunk now (the server's watcher and its periodic scan call this). */
  notify(): void {
    if (this.wanted) void this.pump();
  }

  override _read(): void {
    this.wanted = true;
    void this.pump();
  }

  private async pump(): Promise<void> {
    if (this.reading || this.destroyed || this.ended) return;
    this.reading = true;
    clearTimeout(this.timer);
    try {
      while (this.wanted && !this.destroyed) {
        const file = join(this.o.dir, `${this.o.inPrefix}.${this.inSeq}`);
        let data: Buffer;
        try {
          data = await readChunk(file, this.o.maxInBytes, this.o.untrusted === true, this.openFds);
        } catch (err) {
          if (errnoCode(err) !== 'ENOENT') throw err;
          await this.o.onIdle?.();
          this.schedule();
          return;
        }
        await unlink(file).catch(() => {});
        this.inSeq++;
        this.lastIn = Date.now();
        if (data.length === 0) {
          this.ended = true;
          this.push(null);
          return;
        }
        if (this.o.firstLine && this.head !== undefined) {
          const passed = this.checkFirstLine(data);
          if (passed === undefined) continue;
          data = passed;
        }
        if (this.ended) return;
        this.wanted = this.push(data);
      }
    } catch (err) {
      this.destroy(new Error(`${this.o.peer}: ${(err as Error).message}`));
    } finally {
      this.reading = false;
    }
  }

  /** Held back until the first line is complete; then what to pass on, or undefined (still held, or refused). */
  private checkFirstLine(data: Buffer): Buffer | undefined {
    const held = Buffer.concat([this.head!, data]);
    const lf = held.indexOf(0x0a);
    if (lf < 0 && held.length <= FIRST_LINE_MAX) {
      this.head = held;
      return undefined;
    }
    this.head = undefined;
    const answer = this.o.firstLine!(held.subarray(0, lf < 0 ? FIRST_LINE_MAX : lf).toString('latin1'));
    if (answer === undefined) return held;
    this.ended = true;
    this.end(answer + '\n');
    this.push(null);
    return undefined;
  }

  private schedule(): void {
    const ms = this.o.pollMs?.();
    if (ms === undefined || this.destroyed) return;
    this.timer = setTimeout(() => void this.pump(), ms);
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    this.writeChunks([chunk]).then(() => cb(), cb);
  }

  override _writev(chunks: { chunk: Buffer }[], cb: (err?: Error | null) => void): void {
    this.writeChunks(chunks.map((c) => c.chunk)).then(() => cb(), cb);
  }

  override _final(cb: (err?: Error | null) => void): void {
    this.writeFile(Buffer.alloc(0)).then(() => cb(), cb);
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    clearTimeout(this.timer);
    cb(err);
  }

  /** Batch what was written together into as few chunks as the size limit allows. */
  private async writeChunks(bufs: Buffer[]): Promise<void> {
    const all = bufs.length === 1 ? bufs[0]! : Buffer.concat(bufs);
    for (let at = 0; at < all.length; at += this.o.maxOutBytes) {
      await this.writeFile(all.subarray(at, at + this.o.maxOutBytes));
    }
  }

  private async writeFile(data: Buffer): Promise<void> {
    const name = `${this.o.outPrefix}.${this.outSeq++}`;
    const tmp = join(this.o.dir, `.${name}.tmp`);
    // O_EXCL never follows a symlink: whatever the other side left at the temp name is removed, never written through.
    let fh;
    try {
      fh = await open(tmp, CREATE_NEW, 0o600);
    } catch (err) {
      if (errnoCode(err) !== 'EEXIST') throw err;
      await unlink(tmp);
      fh = await open(tmp, CREATE_NEW, 0o600);
    }
    this.openFds.add(fh.fd);
    try {
      await fh.writeFile(data);
      if (this.o.owner) await fh.chown(this.o.owner.uid, this.o.owner.gid);
    } finally {
      this.openFds.delete(fh.fd);
      await fh.close();
    }
    await rename(tmp, join(this.o.dir, name));
    this.lastOut = Date.now();
    // What was written asks for an answer: a reader asleep for an idle interval looks again now (and then fast).
    if (this.o.pollMs) this.notify();
  }
}

/** The longest first line held back for the check (the protocol's line limit). */
const FIRST_LINE_MAX = 16384;

const CREATE_NEW = fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_EXCL | fsConstants.O_NOFOLLOW;

/** A chunk file's bytes: a regular file (never through a symlink) of at most `max` bytes. Read in pieces until
 *  end of file, with one fstat only where the other side is not trusted (each is a round trip through a mount). */
async function readChunk(file: string, max: number, checkType: boolean, open_: Set<number>): Promise<Buffer> {
  const fh = await open(file, fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW | fsConstants.O_NONBLOCK);
  open_.add(fh.fd);
  try {
    if (checkType) {
      const st = await fh.stat();
      if (!st.isFile()) throw new Error(`${file}: not a regular file`);
      if (st.size > max) throw new Error(`chunk of ${st.size} bytes (limit ${max})`);
    }
    const pieces: Buffer[] = [];
    let total = 0;
    for (;;) {
      const piece = Buffer.allocUnsafe(Math.min(READ_PIECE, max + 1 - total));
      const { bytesRead } = await fh.read(piece, 0, piece.length, null);
      if (bytesRead === 0) break;
      total += bytesRead;
      if (total > max) throw new Error(`chunk of more than ${max} bytes (limit ${max})`);
      pieces.push(piece.subarray(0, bytesRead));
    }
    return pieces.length === 1 ? pieces[0]! : Buffer.concat(pieces, total);
  } finally {
    open_.delete(fh.fd);
    await fh.close();
  }
}

const READ_PIECE = 256 * 1024;

/** The ALIVE line the server writes. */
export function formatAlive(node: string, now: number, intervalMs: number): string {
  return `fused-ghost 1 ${node} ${now} ${intervalMs}\n`;
}

/** How old (ms, by this node's clock) an ALIVE text is, and whose; undefined if it is not one. */
export function parseAlive(text: string, now: number): { node: string; ageMs: number; intervalMs: number } | undefined {
  const m = /^fused-ghost 1 (\S+) (\d+) (\d+)\n?$/.exec(text);
  if (!m) return undefined;
  return { node: m[1]!, ageMs: now - Number(m[2]), intervalMs: Number(m[3]) };
}

/** Why ALIVE says no server is there (missing, unreadable, stale), or undefined when it is fresh. */
export function aliveProblem(text: string | undefined, now: number): string | undefined {
  if (text === undefined) return 'no map server serves this volume over ghost files (no .fused/ghost/ALIVE)';
  const a = parseAlive(text, now);
  if (!a) return 'unreadable .fused/ghost/ALIVE';
  const limit = Math.max(a.intervalMs * ALIVE_STALE_FACTOR, 3000);
  if (a.ageMs > limit) return `the map server (${a.node}) has not been alive for ${Math.round(a.ageMs / 1000)} s (its .fused/ghost/ALIVE is stale)`;
  return undefined;
}

/** Touch a session's heartbeat file (made if missing). */
export async function touchHeartbeat(dir: string): Promise<void> {
  const file = join(dir, HEARTBEAT_FILE);
  const now = new Date();
  try {
    await utimes(file, now, now);
  } catch (err) {
    if (errnoCode(err) !== 'ENOENT') throw err;
    await writeFile(file, '', { flag: 'wx', mode: 0o600 }).catch((e: unknown) => {
      if (errnoCode(e) !== 'EEXIST') throw e;
    });
  }
}

/** Remove a session directory and everything in it (best effort; the other side may add a chunk meanwhile, and a
 *  network mount may take a moment to drop the hidden file of a chunk just closed). */
export async function removeSessionDir(dir: string): Promise<void> {
  for (let i = 0; i < 10; i++) {
    try {
      await rm(dir, { recursive: true, force: true });
      return;
    } catch {
      await sleep(20);
    }
  }
}
