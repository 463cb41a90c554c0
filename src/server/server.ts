// The map server: a line-protocol TCP server answering map requests for the volumes it serves.
import { randomBytes } from 'node:crypto';
import { fstat as fstatCb, close as closeCb, type BigIntStats } from 'node:fs';
import { open as openFile, unlink } from 'node:fs/promises';
import net from 'node:net';
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
  recallWaitMs?: number;
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
      recallWaitMs: LIMITS.recallWaitMs,
      maxFiles: 8192,
      maxProbes: 4,
      log: () => {},
      ...options,
    };
    for (const v of options.volumes) this.volumes.set(v.name, v);
    this.leases = new LeaseTable(this.opts.recallWaitMs, this.opts.maxFiles, this.opts.log);
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

  /** Stop accepting, tell every client, release every lease. */
  async close(reason = 'shutdown'): Promise<void> {
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    for (const c of [...this.connections]) c.bye(reason);
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

  /** Map a file for a client: open beneath the volume root, lease, FIEMAP with sync, classify. */
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
    const size = Number(st.size);
    const blockSize = volume.identity.blockSize;
    const change = `${st.ino}-${st.ctimeNs}`;
    const mtime = `${st.mtimeNs / 1_000_000_000n}.${String(st.mtimeNs % 1_000_000_000n).padStart(9, '0')}`;
    const whole = (reason: string): MapAnswer => ({
      size,
      blockSize,
      change,
      mtime,
      networkReason: reason,
      extents: size > 0 ? [{ logical: 0, physical: 0, length: size, state: 'NETWORK', flags: 0 }] : [],
    });
    const networkOnly = volume.networkOnly ?? this.fileNetworkReason(volume, fd, st);
    if (networkOnly) {
      await closeFd(fd).catch(() => {});
      return { ...whole(networkOnly), leaseId: this.leases.grant(holder, undefined).id };
    }
    // The lease comes before FIEMAP: a writer that opens the file after this point breaks it. The map lease is
    // granted at once too, so the shared kernel lease (and its fd) stays while FIEMAP runs.
    const kernel = this.leases.acquireFile(`${st.dev}:${st.ino}`, fd);
    if (!kernel.ok) return { ...whole(kernel.reason), leaseId: this.leases.grant(holder, undefined).id };
    const lease = this.leases.grant(holder, kernel.file);
    let extents: WireExtent[];
    try {
      const raw = await fiemap(kernel.file.fd, { sync: true, maxExtents: this.opts.maxExtents });
      extents = buildMap(raw, size, 'read');
      if (extents.length > this.opts.maxExtents) throw Object.assign(new Error('too many'), { code: 'E2BIG' });
    } catch (err) {
      this.leases.release(holder, lease.id);
      const code = (err as { code?: string }).code;
      if (code === 'E2BIG') throw new Reply('TOOBIG', `more than the limit of ${this.opts.maxExtents} extents`);
      if (code === 'EOPNOTSUPP' || code === 'ENOTTY' || code === 'EBADR') {
        throw new Reply('NOMAP', `FIEMAP not supported: ${(err as Error).message}`);
      }
      throw new Reply('INTERNAL', `FIEMAP failed: ${(err as Error).message}`);
    }
    // Opened for writing (or truncated) while FIEMAP ran: the extents may already be stale.
    if (!this.leases.isCurrent(lease)) return { ...whole('the file was opened for writing while it was mapped'), leaseId: lease.id };
    return { size, blockSize, change, mtime, extents, leaseId: lease.id };
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
  private pendingPushes: string[] = [];
  private readonly probes = new Map<string, string>();

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

  bye(reason: string): void {
    if (this.closing) return;
    this.closing = true;
    this.log(`${this.peer}: closing (${reason})`);
    this.socket.end(formatPush('BYE', { reason }) + '\n');
    setTimeout(() => this.socket.destroy(), 2000).unref();
  }

  cleanup(): void {
    clearTimeout(this.idleTimer);
    clearTimeout(this.authTimer);
    this.server.leases.releaseAll(this);
    for (const path of this.probes.values()) void unlink(path).catch(() => {});
    this.probes.clear();
    this.log(`${this.peer}: disconnected`);
  }

  recall(leaseId: string, reason: string): void {
    this.push(formatPush('RECALL', { lease: leaseId, reason }));
  }

  private push(line: string): void {
    if (this.closing) return;
    if (this.replying) this.pendingPushes.push(line);
    else this.socket.write(line + '\n');
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
      for (const p of pushes) this.push(p);
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
        const head: Record<string, string | number> = {
          lease: answer.leaseId,
          size: answer.size,
          blocksize: answer.blockSize,
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
      proof: serverProof(this.key!, this.challenge, this.clientChallenge, this.node!, opts.node),
    };
  }

  private access(): Access {
    return this.node !== undefined ? this.server.roleOf(this.node) : 'ro';
  }
}
