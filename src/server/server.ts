// The map server: a line-protocol TCP server answering map requests for the volumes it serves.
import { randomBytes } from 'node:crypto';
import { fstat as fstatCb, fstatSync, close as closeCb, type BigIntStats } from 'node:fs';
import { open as openFile, unlink } from 'node:fs/promises';
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { INODE_FLAGS, fiemap, inodeFlags, openBeneath } from '../native/index.js';
import {
  LIMITS,
  LineFramer,
  PROTOCOL_VERSION,
  ProtocolError,
  clientProof,
  formatErr,
  formatExtent,
  formatGreeting,
  formatOk,
  formatPush,
  newChallenge,
  nodeKey,
  parseRequest,
  proofMatches,
  serverProof,
  type Access,
  type ErrorCode,
  type Request,
  type WireExtent,
} from '../protocol/index.js';
import { buildMap } from '../volume/extents.js';
import { splitDev } from '../sys/blockdev.js';
import { LeaseTable, type LeaseHolder } from './leases.js';
import type { Volume } from './volumes.js';

/** Size of a probe file: one 4 KiB block at least, never inline data. */
const PROBE_FILE_BYTES = 4096;

const fstat = promisify(fstatCb) as unknown as (fd: number, opts: { bigint: true }) => Promise<BigIntStats>;
const closeFd = promisify(closeCb);

export interface ServerOptions {
  node: string;
  /** The master secret; each node's key is derived from it (nodeKey). */
  secret: Buffer;
  volumes: Volume[];
  /** Each named node's role (--role NODE=ro|rw|admin); admin implies rw. */
  roles?: ReadonlyMap<string, Access>;
  /** The role of a node not named in roles. */
  defaultRole?: Access;
  /** Authenticated connections at once; past it ERR BUSY, at accept and at AUTH. */
  maxConnections?: number;
  /** Connections not yet authenticated; past it the oldest is dropped (`! BYE reason=crowded`). */
  maxUnauthenticated?: number;
  idleTimeoutMs?: number;
  authTimeoutMs?: number;
  maxExtents?: number;
  maxLeasesPerConnection?: number;
  /** T: how long a client may use a map after sending its last request that got a reply (announced in HELLO). */
  leaseTimeMs?: number;
  /** Added to T before the server lets a recalled or orphaned map go without RETURN. */
  leaseMarginMs?: number;
  /** A recall must be queued on its connection within this, or the connection is ended. */
  recallQueueMs?: number;
  /** Files under a kernel lease at once, over all connections (each holds a descriptor). */
  maxFiles?: number;
  /** Probe files one connection may have at once. */
  maxProbes?: number;
  log?: (line: string) => void;
}

/** A map reply's body, ready to send. */
interface MapAnswer {
  size: number;
  /** The file's mtime as seconds.nanoseconds, so a client can tell the map is of the file it opened. */
  mtime: string;
  blockSize: number;
  /** The server's inode number: where the network file system passes it through, the client compares it. */
  ino: string;
  change: string;
  extents: WireExtent[];
  /** Why the whole file is NETWORK, if it is. */
  networkReason?: string;
}

class Reply extends Error {
  constructor(readonly code: ErrorCode, message: string) {
    super(message);
  }
}

export class MapServer {
  private readonly server: net.Server;
  private readonly connections = new Set<Connection>();
  /** Connections before AUTH, oldest first (a Set keeps insertion order); they have a limit of their own. */
  private readonly unauthenticated = new Set<Connection>();
  private readonly authenticated = new Set<Connection>();
  readonly leases: LeaseTable;
  readonly opts: Required<ServerOptions>;
  private readonly volumes = new Map<string, Volume>();

  constructor(options: ServerOptions) {
    this.opts = {
      roles: new Map(),
      defaultRole: 'ro',
      maxConnections: LIMITS.maxConnections,
      maxUnauthenticated: LIMITS.maxUnauthenticated,
      idleTimeoutMs: LIMITS.idleTimeoutMs,
      authTimeoutMs: LIMITS.authTimeoutMs,
      maxExtents: LIMITS.maxExtentsPerMap,
      maxLeasesPerConnection: LIMITS.maxLeasesPerConnection,
      leaseTimeMs: LIMITS.leaseTimeMs,
      leaseMarginMs: LIMITS.leaseMarginMs,
      recallQueueMs: LIMITS.recallQueueMs,
      maxFiles: 8192,
      maxProbes: 4,
      log: () => {},
      ...options,
    };
    for (const v of options.volumes) this.volumes.set(v.name, v);
    this.leases = new LeaseTable({
      leaseTimeMs: this.opts.leaseTimeMs,
      marginMs: this.opts.leaseMarginMs,
      recallQueueMs: this.opts.recallQueueMs,
      maxFiles: this.opts.maxFiles,
      log: this.opts.log,
    });
    this.server = net.createServer((socket) => this.accept(socket));
  }

  listen(host: string, port: number): Promise<net.AddressInfo> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen({ host, port, exclusive: true }, () => {
        this.server.off('error', reject);
        resolve(this.server.address() as net.AddressInfo);
      });
    });
  }

  /** Stop accepting and tell every client; the kernel leases stay until every map is returned or its lease
   *  time has run out on the client (a client that missed the BYE may still be reading). */
  async close(reason = 'shutdown'): Promise<void> {
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    for (const c of [...this.connections]) c.bye(reason);
    if (this.leases.size > 0) this.opts.log(`waiting up to ${this.leases.expiryMs} ms for ${this.leases.size} lease(s) to be returned or expire`);
    await this.leases.drained();
    this.leases.closeAll();
    await closed;
  }

  volume(name: string): Volume {
    const v = this.volumes.get(name);
    if (!v) throw new Reply('NOVOLUME', `no volume named ${name}`);
    return v;
  }

  volumeNames(): string[] {
    return [...this.volumes.keys()];
  }

  private accept(socket: net.Socket): void {
    const peer = `${socket.remoteAddress}:${socket.remotePort}`;
    if (this.authenticated.size >= this.opts.maxConnections) {
      this.opts.log(`${peer}: refused, ${this.authenticated.size} authenticated connections already`);
      // A peer that resets at once must not take the server down with an unhandled 'error'.
      socket.on('error', () => {});
      socket.end(formatErr('BUSY', `too many connections (limit ${this.opts.maxConnections})`) + '\n');
      return;
    }
    // Strangers never lock nodes out: the oldest connection still without AUTH makes room for the newest.
    if (this.unauthenticated.size >= this.opts.maxUnauthenticated) {
      const oldest = this.unauthenticated.values().next().value!;
      this.unauthenticated.delete(oldest);
      oldest.bye('crowded');
    }
    const conn = new Connection(this, socket, peer);
    this.connections.add(conn);
    this.unauthenticated.add(conn);
    socket.once('close', () => {
      this.connections.delete(conn);
      this.unauthenticated.delete(conn);
      this.authenticated.delete(conn);
      conn.cleanup();
    });
  }

  /** A connection passed AUTH: it now counts against --max-connections; false when that is full. */
  admit(conn: Connection): boolean {
    this.unauthenticated.delete(conn);
    if (this.authenticated.size >= this.opts.maxConnections) return false;
    this.authenticated.add(conn);
    return true;
  }

  /** A node's role: its own --role, else the default. */
  roleOf(node: string): Access {
    return this.opts.roles.get(node) ?? this.opts.defaultRole;
  }

  /** Map a file for a client: open beneath the volume root, lease, then fstat, FIEMAP with sync, fstat again. */
  async map(volume: Volume, rel: Buffer, holder: LeaseHolder): Promise<MapAnswer & { leaseId: string }> {
    let fd: number;
    try {
      fd = await openBeneath(volume.dir, rel);
    } catch (err) {
      throw openError(err);
    }
    let st: BigIntStats;
    try {
      st = await fstat(fd, { bigint: true });
    } catch (err) {
      await closeFd(fd).catch(() => {});
      throw new Reply('INTERNAL', `fstat: ${(err as Error).message}`);
    }
    const blockSize = volume.identity.blockSize;
    const networkOnly = volume.networkOnly ?? this.fileNetworkReason(volume, fd, st);
    if (networkOnly) {
      await closeFd(fd).catch(() => {});
      return { ...wholeNetwork(st, blockSize, networkOnly), leaseId: this.leases.grant(holder, undefined).id };
    }
    // The lease comes before anything is read of the file: a writer that opens it after this point breaks it. The
    // map lease is granted at once too, so the shared kernel lease (and its fd) stays while FIEMAP runs.
    const kernel = this.leases.acquireFile(`${st.dev}:${st.ino}`, fd);
    if (!kernel.ok) return { ...wholeNetwork(st, blockSize, kernel.reason), leaseId: this.leases.grant(holder, undefined).id };
    const lease = this.leases.grant(holder, kernel.file);
    const leasedFd = kernel.file.fd;
    const stale = 'the file was opened for writing while it was mapped';
    try {
      for (let attempt = 1; ; attempt++) {
        // Size and mtime are read under the lease, before and after FIEMAP: the map describes one version of the
        // file. (fstatSync right after the check: the shared descriptor cannot be closed in between.)
        if (!this.leases.isCurrent(lease)) return { ...wholeNetwork(st, blockSize, stale), leaseId: lease.id };
        const before = fstatSync(leasedFd, { bigint: true });
        const raw = await fiemap(leasedFd, { sync: true, maxExtents: this.opts.maxExtents });
        if (!this.leases.isCurrent(lease)) return { ...wholeNetwork(before, blockSize, stale), leaseId: lease.id };
        const after = fstatSync(leasedFd, { bigint: true });
        if (before.size === after.size && before.mtimeNs === after.mtimeNs) {
          const extents = buildMap(raw, Number(after.size), 'read');
          if (extents.length > this.opts.maxExtents) throw Object.assign(new Error('too many'), { code: 'E2BIG' });
          return { ...describeFile(after, blockSize), extents, leaseId: lease.id };
        }
        if (attempt === MAP_ATTEMPTS) {
          return { ...wholeNetwork(after, blockSize, `the file kept changing while it was mapped (${MAP_ATTEMPTS} tries)`), leaseId: lease.id };
        }
        st = after;
      }
    } catch (err) {
      this.leases.release(holder, lease.id);
      const code = (err as { code?: string }).code;
      if (code === 'E2BIG') throw new Reply('TOOBIG', `more than the limit of ${this.opts.maxExtents} extents`);
      if (code === 'EOPNOTSUPP' || code === 'ENOTTY' || code === 'EBADR') {
        throw new Reply('NOMAP', `FIEMAP not supported: ${(err as Error).message}`);
      }
      throw new Reply('INTERNAL', `FIEMAP failed: ${(err as Error).message}`);
    }
  }

  /** Why one file must go through the network although its volume is fine, if it must. */
  private fileNetworkReason(volume: Volume, fd: number, st: BigIntStats): string | undefined {
    const { major, minor } = splitDev(st.dev);
    if (major !== volume.major || minor !== volume.minor) {
      // openat2 RESOLVE_NO_XDEV already refuses other mounts; this is the belt to those braces.
      return 'the file is not on the volume\'s file system';
    }
    let flags = 0;
    try {
      flags = inodeFlags(fd);
    } catch {
      return undefined; // no attribute flags on this file system: nothing more to learn
    }
    if (flags & INODE_FLAGS.ENCRYPT) return 'the file is encrypted (fscrypt): its blocks hold ciphertext';
    if (flags & INODE_FLAGS.JOURNAL_DATA) return 'the file journals its data (chattr +j): its blocks may be older than the journal';
    if (flags & INODE_FLAGS.COMPR) return 'the file is compressed';
    return undefined;
  }
}

/** How often a file that changes between the two fstats around FIEMAP is mapped again before it is NETWORK. */
const MAP_ATTEMPTS = 3;

/** The file facts a map reply carries, from one fstat. */
function describeFile(st: BigIntStats, blockSize: number): Omit<MapAnswer, 'extents'> {
  return {
    size: Number(st.size),
    blockSize,
    ino: String(st.ino),
    change: `${st.ino}-${st.ctimeNs}`,
    mtime: `${st.mtimeNs / 1_000_000_000n}.${String(st.mtimeNs % 1_000_000_000n).padStart(9, '0')}`,
  };
}

/** A map that sends the whole file through the network, saying why. */
function wholeNetwork(st: BigIntStats, blockSize: number, reason: string): MapAnswer {
  const size = Number(st.size);
  return {
    ...describeFile(st, blockSize),
    networkReason: reason,
    extents: size > 0 ? [{ logical: 0, physical: 0, length: size, state: 'NETWORK', flags: 0 }] : [],
  };
}

function openError(err: unknown): Reply {
  const code = (err as { code?: string }).code;
  const msg = (err as Error).message ?? String(err);
  switch (code) {
    case 'ENOENT':
    case 'ENOTDIR':
      return new Reply('NOENT', 'no such file');
    case 'EXDEV':
    case 'ELOOP':
      return new Reply('BADPATH', 'path leads out of the volume');
    case 'ENAMETOOLONG':
      return new Reply('BADPATH', 'path too long');
    case 'ENOTREG':
    case 'EISDIR':
      return new Reply('NOTREG', 'not a regular file');
    case 'EACCES':
    case 'EPERM':
      return new Reply('ACCESS', 'permission denied');
    default:
      return new Reply('INTERNAL', msg);
  }
}

/** One client connection: handshake, then requests answered strictly in order. */
class Connection implements LeaseHolder {
  private readonly framer = new LineFramer(LIMITS.maxLineBytes);
  private readonly challenge = newChallenge();
  private node: string | undefined;
  /** From HELLO: the node's own challenge, and its key (derived from the master secret). */
  private clientChallenge = '';
  private key: Buffer | undefined;
  private authed = false;
  private closing = false;
  private queue: Promise<void> = Promise.resolve();
  private idleTimer: NodeJS.Timeout | undefined;
  private authTimer: NodeJS.Timeout | undefined;
  /** Pushes wait while a multi-line reply is being written. */
  private replying = false;
  private pendingPushes: { line: string; queued?: (at: number) => void }[] = [];
  private readonly probes = new Map<string, string>();
  /** When the connection stopped carrying lines to the client (monotonic ms): after it, nothing reaches it. */
  private endedAt: number | undefined;

  constructor(
    private readonly server: MapServer,
    private readonly socket: net.Socket,
    private readonly peer: string,
  ) {
    const log = server.opts.log;
    log(`${peer}: connected`);
    socket.setNoDelay(true);
    socket.setKeepAlive(true, 10_000);
    socket.on('error', (err) => log(`${peer}: ${err.message}`));
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    this.authTimer = setTimeout(() => this.bye('auth-timeout'), server.opts.authTimeoutMs);
    this.touch();
    socket.write(formatGreeting(server.opts.node, this.challenge) + '\n');
  }

  private get log() {
    return this.server.opts.log;
  }

  private touch(): void {
    clearTimeout(this.idleTimer);
    this.idleTimer = setTimeout(() => this.bye('idle'), this.server.opts.idleTimeoutMs);
  }

  /** For the log: the node's name (once it said HELLO) and the peer address. */
  get name(): string {
    return `node ${this.node ?? '(no HELLO)'} at ${this.peer}`;
  }

  bye(reason: string): void {
    if (this.closing) return;
    this.closing = true;
    this.log(`${this.peer}: closing (${reason})`);
    this.socket.end(formatPush('BYE', { reason }) + '\n');
    this.markEnded();
    setTimeout(() => this.socket.destroy(), 2000).unref();
  }

  abort(reason: string): void {
    this.log(`${this.peer}: ending the connection (${reason})`);
    this.closing = true;
    this.markEnded();
    this.socket.destroy();
  }

  /** No more lines go to the client from now on; pushes still waiting are settled with this time. */
  private markEnded(): number {
    this.endedAt ??= performance.now();
    const waiting = this.pendingPushes;
    this.pendingPushes = [];
    for (const p of waiting) p.queued?.(this.endedAt);
    return this.endedAt;
  }

  cleanup(): void {
    clearTimeout(this.idleTimer);
    clearTimeout(this.authTimer);
    // The client may not know the connection is gone (a partition): its maps stay leased until its lease time
    // has surely run out.
    this.server.leases.orphan(this, this.markEnded());
    for (const path of this.probes.values()) void unlink(path).catch(() => {});
    this.probes.clear();
    this.log(`${this.peer}: disconnected`);
  }

  recall(leaseId: string, reason: string): Promise<number> {
    return new Promise((resolve) => this.push(formatPush('RECALL', { lease: leaseId, reason }), resolve));
  }

  /** A server push: now, or after the reply being written; `queued` learns when it went on the socket. */
  private push(line: string, queued?: (at: number) => void): void {
    if (this.closing || this.endedAt !== undefined) {
      queued?.(this.endedAt ?? performance.now());
      return;
    }
    if (this.replying) {
      this.pendingPushes.push({ line, ...(queued ? { queued } : {}) });
      return;
    }
    this.socket.write(line + '\n');
    queued?.(performance.now());
  }

  private onData(chunk: Buffer): void {
    if (this.closing) return;
    this.touch();
    for (const ev of this.framer.push(chunk)) {
      this.queue = this.queue.then(() => this.handleEvent(ev));
    }
    // Do not read more while requests wait: a flood of lines cannot grow the queue without bound.
    this.socket.pause();
    void this.queue.then(() => {
      if (!this.closing) this.socket.resume();
    });
  }

  private async handleEvent(ev: { line: string } | { error: ProtocolError }): Promise<void> {
    if (this.closing) return;
    if ('error' in ev) {
      this.log(`${this.peer}: ${ev.error.code} ${ev.error.message}`);
      await this.send([formatErr(ev.error.code, ev.error.message)]);
      return;
    }
    let req: Request;
    try {
      req = parseRequest(ev.line);
    } catch (err) {
      const e = err instanceof ProtocolError ? err : new ProtocolError('BADLINE', String(err));
      this.log(`${this.peer}: ${e.code} ${e.message}`);
      await this.send([formatErr(e.code, e.message)]);
      return;
    }
    try {
      await this.handle(req);
    } catch (err) {
      const reply = err instanceof Reply ? err : err instanceof ProtocolError ? new Reply(err.code, err.message) : null;
      if (reply) {
        this.log(`${this.peer}: ${req.verb}: ${reply.code} ${reply.message}`);
        await this.send([formatErr(reply.code, reply.message)]);
      } else {
        this.log(`${this.peer}: ${req.verb}: internal error: ${(err as Error)?.stack ?? String(err)}`);
        await this.send([formatErr('INTERNAL', (err as Error)?.message ?? 'internal error')]);
      }
    }
  }

  /** Write reply lines, waiting for the socket to drain so a huge map never buffers without bound. */
  private async send(lines: string[] | AsyncIterable<string> | Iterable<string>): Promise<void> {
    this.replying = true;
    try {
      let batch = '';
      for await (const line of lines as AsyncIterable<string>) {
        batch += line + '\n';
        if (batch.length >= 65536) {
          await this.write(batch);
          batch = '';
        }
      }
      if (batch) await this.write(batch);
    } finally {
      this.replying = false;
      const pushes = this.pendingPushes;
      this.pendingPushes = [];
      for (const p of pushes) this.push(p.line, p.queued);
    }
  }

  private write(data: string): Promise<void> {
    if (this.socket.destroyed) return Promise.resolve();
    if (this.socket.write(data)) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        this.socket.off('drain', done);
        this.socket.off('close', done);
        resolve();
      };
      this.socket.on('drain', done);
      this.socket.on('close', done);
    });
  }

  private async handle(req: Request): Promise<void> {
    const { server } = this;
    switch (req.verb) {
      case 'PING':
        return this.send([formatOk('PONG')]);
      case 'QUIT':
        await this.send([formatOk('BYE')]);
        this.closing = true;
        this.socket.end();
        this.markEnded();
        return;
      case 'HELLO':
        if (this.node !== undefined) throw new Reply('ORDER', 'HELLO was already sent');
        if (req.version !== PROTOCOL_VERSION) {
          throw new Reply('VERSION', `protocol version ${req.version} not supported (this server speaks ${PROTOCOL_VERSION})`);
        }
        if (req.challenge === undefined) throw new Reply('BADARG', 'usage: HELLO <node> <version> <challenge>');
        this.node = req.node;
        this.clientChallenge = req.challenge;
        this.key = nodeKey(server.opts.secret, req.node);
        return this.send([formatOk('HELLO', this.helloFields())]);
      case 'AUTH': {
        if (this.node === undefined || this.key === undefined) throw new Reply('ORDER', 'send HELLO before AUTH');
        if (this.authed) throw new Reply('ORDER', 'already authenticated');
        if (!proofMatches(clientProof(this.key, this.challenge, this.clientChallenge, this.node), req.proof)) {
          this.log(`${this.peer}: node ${this.node}: authentication failed`);
          await this.send([formatErr('AUTHFAIL', 'authentication failed')]);
          this.bye('authfail');
          return;
        }
        clearTimeout(this.authTimer);
        if (!server.admit(this)) {
          this.log(`${this.peer}: node ${this.node}: refused, authenticated connections full`);
          await this.send([formatErr('BUSY', `too many connections (limit ${server.opts.maxConnections})`)]);
          this.bye('busy');
          return;
        }
        this.authed = true;
        this.log(`${this.peer}: node ${this.node} authenticated (${this.access()})`);
        return this.send([formatOk('AUTH', { node: this.node, access: this.access() })]);
      }
      default:
        break;
    }
    if (!this.authed) throw new Reply('NOAUTH', 'authenticate first (HELLO, then AUTH)');
    switch (req.verb) {
      case 'VOLUMES': {
        const names = server.volumeNames();
        return this.send([formatOk('VOLUMES', { count: names.length }), ...names.map((n) => `V ${n}`), 'END']);
      }
      case 'VOLUME': {
        const v = server.volume(req.volume);
        const id = v.identity;
        return this.send([
          formatOk('VOLUME', {
            name: v.name,
            fstype: id.fstype,
            uuid: id.uuid,
            label: id.label,
            blocksize: id.blockSize,
            size: id.sizeBytes,
            access: this.access(),
          }),
        ]);
      }
      case 'PROBE': {
        const v = server.volume(req.volume);
        if (this.probes.size >= server.opts.maxProbes) {
          throw new Reply('LIMIT', `too many probes on this connection (limit ${server.opts.maxProbes})`);
        }
        const name = `.fused-probe-${randomBytes(8).toString('hex')}`;
        const token = randomBytes(16).toString('hex');
        const path = join(v.dir, name);
        try {
          const fh = await openFile(path, 'wx', 0o644);
          try {
            // A whole block (padded with spaces) so that no file system keeps it inline in the inode: a client
            // proves its device by reading the token from the probe's data block.
            await fh.writeFile(token.padEnd(PROBE_FILE_BYTES - 1, ' ') + '\n');
            await fh.sync();
          } finally {
            await fh.close();
          }
        } catch (err) {
          await unlink(path).catch(() => {});
          const code = (err as { code?: string }).code;
          if (code === 'EACCES' || code === 'EPERM' || code === 'EROFS' || code === 'ENOSPC' || code === 'EDQUOT') {
            throw new Reply('ACCESS', `cannot create a probe file in the volume: ${(err as Error).message}`);
          }
          throw err;
        }
        this.probes.set(`${v.name}/${name}`, path);
        return this.send([formatOk('PROBE', { name, token })]);
      }
      case 'UNPROBE': {
        const key = `${req.volume}/${req.name}`;
        const path = this.probes.get(key);
        if (!path) throw new Reply('NOENT', 'no such probe on this connection');
        this.probes.delete(key);
        await unlink(path).catch(() => {});
        return this.send([formatOk('UNPROBE')]);
      }
      case 'MAP': {
        const v = server.volume(req.volume);
        if (server.leases.countFor(this) >= server.opts.maxLeasesPerConnection) {
          throw new Reply('LIMIT', `too many leases on this connection (limit ${server.opts.maxLeasesPerConnection})`);
        }
        const answer = await server.map(v, req.path, this);
        // The client is gone before it could see this map: nobody can use it.
        if (this.endedAt !== undefined) {
          server.leases.release(this, answer.leaseId);
          return;
        }
        const head: Record<string, string | number> = {
          lease: answer.leaseId,
          size: answer.size,
          blocksize: answer.blockSize,
          ino: answer.ino,
          change: answer.change,
          mtime: answer.mtime,
          extents: answer.extents.length,
        };
        if (answer.networkReason) head.network = answer.networkReason;
        const extents = answer.extents;
        return this.send(
          (function* () {
            yield formatOk('MAP', head);
            for (const e of extents) yield formatExtent(e);
            yield 'END';
          })(),
        );
      }
      case 'RELEASE':
      case 'RETURN': {
        if (!server.leases.release(this, req.lease)) throw new Reply('NOLEASE', `no lease ${req.lease} on this connection`);
        return this.send([formatOk(req.verb)]);
      }
      default:
        throw new Reply('UNKNOWN', 'unknown request');
    }
  }

  /** The OK HELLO fields: who we are, and our proof that we know this node's key. */
  private helloFields(): Record<string, string | number> {
    const { opts } = this.server;
    return {
      node: opts.node,
      version: PROTOCOL_VERSION,
      idle: opts.idleTimeoutMs / 1000,
      lease: opts.leaseTimeMs / 1000,
      proof: serverProof(this.key!, this.challenge, this.clientChallenge, this.node!, opts.node),
    };
  }

  private access(): Access {
    return this.node !== undefined ? this.server.roleOf(this.node) : 'ro';
  }
}
