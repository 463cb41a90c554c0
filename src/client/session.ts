// A client session with a map server: connect, authenticate, ask, and hear recalls.
import { EventEmitter } from 'node:events';
import net from 'node:net';
import type { Duplex } from 'node:stream';
import { performance } from 'node:perf_hooks';
import { FusedError } from '../errors.js';
import {
  DEFAULT_PORT,
  LIMITS,
  LineFramer,
  PROTOCOL_VERSION,
  clientProof,
  decodeBytes,
  formatRequest,
  parseExtent,
  parseGreeting,
  parseDataFields,
  parseNumber,
  parseReplyLine,
  newChallenge,
  proofMatches,
  serverProof,
  isAccess,
  type Access,
  type Fields,
  type LimitTarget,
  type MapMode,
  type Request,
  type WireExtent,
} from '../protocol/index.js';
import { connectGhost } from '../transport/ghost-client.js';
import type { VolumeIdentity } from '../volume/superblock.js';
import { parseMtimeNs } from './mapcheck.js';

export interface ServerAddress {
  host: string;
  port: number;
  /** The ghost-file transport instead of TCP: the network mount of the volume the server is reached through. */
  ghost?: string;
}

/** What a session speaks over: a TCP socket, or a ghost-file stream that stands in for one. */
type Transport = Duplex & { setNoDelay(noDelay?: boolean): unknown; destroySoon?: () => void };

const GHOST_SCHEME = 'ghost:';

/** Parse HOST:PORT, [V6]:PORT, HOST (default port), or ghost:MOUNTPOINT (the ghost-file transport). */
export function parseServerAddress(s: string): ServerAddress {
  if (s.startsWith(GHOST_SCHEME)) {
    const mount = s.slice(GHOST_SCHEME.length);
    if (!mount.startsWith('/')) throw new FusedError('usage', 'expected ghost:/MOUNTPOINT', s);
    return { host: 'ghost', port: 0, ghost: mount };
  }
  const m = /^\[([^\]]+)\](?::(\d+))?$/.exec(s) ?? /^([^:]+)(?::(\d+))?$/.exec(s);
  const port = m?.[2] === undefined ? DEFAULT_PORT : Number(m[2]);
  if (!m || !m[1] || !Number.isInteger(port) || port < 1 || port > 65535) {
    throw new FusedError('usage', 'expected HOST:PORT', s);
  }
  return { host: m[1], port };
}

export function formatServerAddress(a: ServerAddress): string {
  if (a.ghost !== undefined) return `${GHOST_SCHEME}${a.ghost}`;
  return a.host.includes(':') ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`;
}

export interface VolumeInfo extends Pick<VolumeIdentity, 'uuid' | 'label' | 'blockSize' | 'sizeBytes'> {
  name: string;
  fstype: string;
  access: Access;
  /** How the server allocates for direct writes (reflink, pool, zero-fill, write-zeroes, none) and its reserve now. */
  allocation: string;
  reserveBytes: number;
}

export interface FileMap {
  lease: string;
  size: number;
  /** The server's inode number of the mapped file, if it said. */
  ino?: string;
  blockSize: number;
  change: string;
  /** The mapped file's mtime in nanoseconds, if the server said. */
  mtimeNs?: bigint;
  extents: WireExtent[];
  /** Why the server marked the whole file NETWORK, if it did. */
  networkReason?: string;
  /** ALLOC: bytes the server said it can allocate next without writing zeros (0 if it did not say). */
  ready?: number;
}

interface Pending {
  /** When the request was sent (monotonic ms): its reply renews every lease not recalled until then + T - margin. */
  sentAt: number;
  resolve: (r: { head: Fields; data: string[] }) => void;
  reject: (e: Error) => void;
  multi: boolean;
  head?: Fields;
  data: string[];
}

/** Requests whose OK reply is followed by data lines and END. */
const MULTI_LINE = new Set(['VOLUMES', 'MAP', 'ALLOC', 'LIMITS']);

/** One node in a LIMITS reply; rates in bytes/s, 0: unlimited. */
export interface NodeLimits {
  node: string;
  rate: number;
  iops: number;
  current: number;
  total: number;
  /** Operations granted over the last second, and since the server started. */
  currentOps: number;
  ops: number;
  grants: number;
  active: boolean;
  /** Its copies (connections) that drew grants within the last second (0 from a server that does not say). */
  copies: number;
  /** Volumes it drew grants on within the last second. */
  volumes: string[];
}

/** One volume in a LIMITS reply: its cap (0: none) and what was granted on it. */
export interface VolumeLimits {
  volume: string;
  rate: number;
  current: number;
  total: number;
  /** Nodes active on it now. */
  active: number;
}

export interface SessionEvents {
  recall: [lease: string, reason: string];
  close: [reason: string];
}

export class Session extends EventEmitter<SessionEvents> {
  private readonly framer = new LineFramer(LIMITS.maxLineBytes);
  private readonly pending: Pending[] = [];
  /** Waiting for the server's first line; failures reject it like any pending reply. */
  private greeting: { resolve: (line: string) => void; reject: (e: Error) => void } | undefined;
  private closed = false;
  /** Leases the server recalled, with the deadline each had then (a recalled lease is never renewed); kept, so a
   *  recall that arrives before anyone listens is not lost. */
  private readonly recalled = new Map<string, number>();
  /** T, the server's lease time (from HELLO). */
  leaseMs = 0;
  /** Every lease not recalled may be used until this monotonic time: the send time of the last request that got
   *  a reply + T - margin (the server waits T + margin after a recall before it lets the file go). */
  private validUntil = -Infinity;
  serverNode = '';
  access: Access = 'ro';
  /** The server's idle timeout (from HELLO); a long direct read pings well within it. */
  idleMs = 300_000;

  private constructor(private readonly socket: Transport, readonly address: ServerAddress) {
    super();
    // Each file read or written directly listens for recalls while it is in flight (fusedcp -j 16 copies 16 at
    // once, each a reader and a writer) and stops when it ends: many listeners are the design, not a leak.
    this.setMaxListeners(0);
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => {
      for (const ev of this.framer.push(chunk)) {
        if ('error' in ev) this.fail(new FusedError('failure', `bad line from server: ${ev.error.message}`));
        else this.onLine(ev.line);
      }
    });
    socket.on('error', (err) => this.fail(unreachable(address, err.message)));
    socket.on('close', () => this.fail(unreachable(address, 'connection closed')));
  }

  /**
   * Connect, check the greeting, HELLO (the server proves it knows this node's key) and AUTH (we prove it).
   * Errors: kind 'unreachable'.
   */
  static async open(
    address: ServerAddress,
    opts: { node: string; key: Buffer; timeoutMs?: number },
  ): Promise<Session> {
    const timeoutMs = opts.timeoutMs ?? 5000;
    let session: Session | undefined;
    const socket: Transport = address.ghost !== undefined
      ? await connectGhost(address.ghost, opts.node, {
          busy: () => session === undefined || session.awaiting,
          // Recalls wait in the mailbox at most a quarter of the lease time (the server waits T + margin).
          idleMs: () => (session && session.leaseMs > 0 ? session.leaseMs / 4 : 250),
        })
      : await new Promise<net.Socket>((resolve, reject) => {
      const s = net.connect({ host: address.host, port: address.port });
      const timer = setTimeout(() => {
        s.destroy();
        reject(unreachable(address, `no answer within ${timeoutMs} ms`));
      }, timeoutMs);
      s.once('connect', () => {
        clearTimeout(timer);
        resolve(s);
      });
      s.once('error', (err) => {
        clearTimeout(timer);
        reject(unreachable(address, err.message));
      });
    });
    session = new Session(socket, address);
    try {
      const line = await session.withTimeout(
        new Promise<string>((resolve, reject) => {
          session.greeting = { resolve, reject };
        }),
        timeoutMs,
      );
      if (line.startsWith('ERR ')) throw unreachable(address, line.slice(4));
      const g = parseGreeting(line);
      if (g.version !== PROTOCOL_VERSION) throw unreachable(address, `server speaks protocol ${g.version}, not ${PROTOCOL_VERSION}`);
      session.serverNode = g.node;
      const challenge = newChallenge();
      let hello: Fields;
      try {
        hello = (await session.withTimeout(session.request({ verb: 'HELLO', node: opts.node, version: PROTOCOL_VERSION, challenge }), timeoutMs)).head;
      } catch (err) {
        if (err instanceof ServerRefusal) throw unreachable(address, `HELLO refused: ${err.message}`);
        throw err;
      }
      // Before AUTH: a server that cannot prove it knows our key learns nothing from us, not even a proof.
      const want = serverProof(opts.key, g.challenge, challenge, opts.node, g.node);
      if (hello.proof === undefined || !proofMatches(want, hello.proof)) {
        throw unreachable(address, 'authentication failed: the server does not know this node\'s key (wrong key file, or not the real map server)');
      }
      const idle = Number(hello.idle);
      if (Number.isSafeInteger(idle) && idle > 0) session.idleMs = idle * 1000;
      const lease = Number(hello.lease);
      if (!Number.isSafeInteger(lease) || lease < 1) throw unreachable(address, `the server announced no usable lease time (lease=${hello.lease ?? ''})`);
      session.leaseMs = lease * 1000;
      let auth: Fields;
      try {
        auth = (await session.withTimeout(session.request({ verb: 'AUTH', proof: clientProof(opts.key, g.challenge, challenge, opts.node) }), timeoutMs)).head;
      } catch (err) {
        if (err instanceof ServerRefusal && err.code === 'AUTHFAIL') {
          throw unreachable(address, `authentication failed: the server refused node ${opts.node}'s key (check the key file and --node)`);
        }
        if (err instanceof ServerRefusal) throw unreachable(address, err.message);
        throw err;
      }
      session.access = isAccess(auth.access ?? '') ? auth.access as Access : 'ro';
      return session;
    } catch (err) {
      session.close();
      throw err;
    }
  }

  private withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
    let timer: NodeJS.Timeout;
    return Promise.race([
      p.finally(() => clearTimeout(timer)),
      new Promise<T>((_, reject) => {
        timer = setTimeout(() => reject(unreachable(this.address, `no answer within ${ms} ms`)), ms);
      }),
    ]);
  }

  private onLine(line: string): void {
    if (this.greeting) {
      const g = this.greeting;
      this.greeting = undefined;
      g.resolve(line);
      return;
    }
    let reply;
    try {
      reply = parseReplyLine(line);
    } catch {
      this.fail(new FusedError('failure', `unparsable line from server: ${line.slice(0, 80)}`));
      return;
    }
    if (reply.kind === 'push') {
      if (reply.event === 'RECALL' && reply.fields.lease) {
        if (!this.recalled.has(reply.fields.lease)) this.recalled.set(reply.fields.lease, this.validUntil);
        this.emit('recall', reply.fields.lease, reply.fields.reason ?? '');
      }
      else if (reply.event === 'BYE') this.fail(unreachable(this.address, `server said goodbye (${reply.fields.reason ?? ''})`));
      return;
    }
    const p = this.pending[0];
    if (!p) {
      this.fail(new FusedError('failure', `unexpected line from server: ${line.slice(0, 80)}`));
      return;
    }
    if (p.head === undefined) {
      if (reply.kind === 'err') {
        this.pending.shift();
        this.renew(p.sentAt);
        p.reject(new ServerRefusal(reply.code, reply.text));
        return;
      }
      if (reply.kind !== 'ok') {
        this.fail(new FusedError('failure', `expected a reply, got: ${line.slice(0, 80)}`));
        return;
      }
      p.head = reply.fields;
      if (!p.multi) {
        this.pending.shift();
        this.renew(p.sentAt);
        p.resolve({ head: p.head, data: [] });
      }
      return;
    }
    if (reply.kind === 'end') {
      this.pending.shift();
      this.renew(p.sentAt);
      p.resolve({ head: p.head, data: p.data });
    } else if (reply.kind === 'data') {
      p.data.push(line);
    } else {
      this.fail(new FusedError('failure', `unexpected line inside a reply: ${line.slice(0, 80)}`));
    }
  }

  private fail(err: Error): void {
    if (this.closed) return;
    this.closed = true;
    this.greeting?.reject(err);
    this.greeting = undefined;
    for (const p of this.pending.splice(0)) p.reject(err);
    this.socket.destroy();
    this.emit('close', err.message);
  }

  /** A reply (or the greeting) is awaited. */
  get awaiting(): boolean {
    return this.pending.length > 0 || this.greeting !== undefined;
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** Send one request; resolves with the OK line's fields and any data lines. Server ERR rejects. */
  request(req: Request): Promise<{ head: Fields; data: string[] }> {
    if (this.closed) return Promise.reject(unreachable(this.address, 'session closed'));
    return new Promise((resolve, reject) => {
      this.pending.push({ sentAt: performance.now(), resolve, reject, multi: MULTI_LINE.has(req.verb), data: [] });
      this.socket.write(formatRequest(req) + '\n');
    });
  }

  /** GRANT: a byte and operation budget for direct I/O on a volume, answered at once: at most what was asked
   *  (maybe nothing) and, when short, in how many ms asking again makes sense. A server without GRANT refuses
   *  with code UNKNOWN (ServerRefusal): it sets no limits. */
  async grant(volume: string, bytes: number, ops: number): Promise<{ bytes: number; ops: number; nextMs: number; limited: boolean }> {
    const { head } = await this.request({ verb: 'GRANT', volume, bytes, ops });
    const g = { bytes: parseNumber(head.bytes ?? ''), ops: parseNumber(head.ops ?? ''), nextMs: parseNumber(head.next ?? ''), limited: head.limited !== '0' };
    if (g.bytes > bytes || g.ops > ops) throw new FusedError('failure', `the map server granted more than was asked (bytes=${g.bytes} ops=${g.ops})`);
    return g;
  }

  async volumes(): Promise<string[]> {
    const r = await this.request({ verb: 'VOLUMES' });
    return r.data.map((l) => decodeBytes(l.slice(2)).toString());
  }

  async volume(name: string): Promise<VolumeInfo> {
    const { head } = await this.request({ verb: 'VOLUME', volume: name });
    return {
      name: head.name ?? name,
      fstype: head.fstype ?? '',
      uuid: head.uuid ?? '',
      label: head.label ?? '',
      blockSize: parseNumber(head.blocksize ?? ''),
      sizeBytes: parseNumber(head.size ?? ''),
      access: isAccess(head.access ?? '') ? head.access as Access : 'ro',
      allocation: head.allocation ?? '',
      reserveBytes: /^\d+$/.test(head.reserve ?? '') ? Number(head.reserve) : 0,
    };
  }

  /** A read map (the default) or, with mode 'write', the file's write map under a write lease. */
  async map(volume: string, path: Buffer, mode: MapMode = 'read'): Promise<FileMap> {
    const { head, data } = await this.request({ verb: 'MAP', volume, path, mode });
    try {
      return parseMap(head, data);
    } catch (err) {
      // A map we cannot use must not keep its lease (and the server's descriptor) until the session ends.
      if (head.lease) await this.release(head.lease).catch(() => {});
      throw err;
    }
  }

  /** ALLOC: written, zeroed blocks for [offset, offset+length); the file's whole write map after it. */
  async alloc(lease: string, offset: number, length: number): Promise<FileMap> {
    const { head, data } = await this.request({ verb: 'ALLOC', lease, offset, length });
    return parseMap(head, data);
  }

  /** COMMIT: the server sets the size, syncs, drops its cache, touches the mtime and releases the write lease. */
  async commit(lease: string, size: number): Promise<{ size: number }> {
    try {
      const { head } = await this.request({ verb: 'COMMIT', lease, size });
      return { size: parseNumber(head.size ?? '') };
    } finally {
      this.recalled.delete(lease);
    }
  }

  /** Whether the server has recalled this lease (it may no longer describe the file). */
  isRecalled(lease: string): boolean {
    return this.recalled.has(lease);
  }

  /** A reply arrived, with no recall ahead of it, to a request sent at `sentAt`: the server held every lease not
   *  recalled at least until it read that request. */
  private renew(sentAt: number): void {
    if (this.leaseMs <= 0) return;
    this.validUntil = Math.max(this.validUntil, sentAt + this.leaseMs - LIMITS.leaseMarginMs);
  }

  /** Until when (monotonic ms, performance.now()) this lease may be used for device I/O: past it, the server may
   *  have let a writer in. A lost connection renews nothing more. */
  deadline(lease: string): number {
    return this.recalled.get(lease) ?? this.validUntil;
  }

  /** Whether device I/O under this lease may still start or be used now. */
  leaseValid(lease: string, now = performance.now()): boolean {
    return now < this.deadline(lease);
  }

  async release(lease: string, verb: 'RELEASE' | 'RETURN' = 'RELEASE'): Promise<void> {
    try {
      await this.request({ verb, lease });
    } finally {
      this.recalled.delete(lease);
    }
  }

  async probe(volume: string): Promise<{ name: string; token: string }> {
    const { head } = await this.request({ verb: 'PROBE', volume });
    return { name: head.name ?? '', token: head.token ?? '' };
  }

  async unprobe(volume: string, name: string): Promise<void> {
    await this.request({ verb: 'UNPROBE', volume, name });
  }

  /** LIMITS: every node's and volume's limits and what they draw now. */
  async limits(): Promise<{ nodes: NodeLimits[]; volumes: VolumeLimits[] }> {
    const { head, data } = await this.request({ verb: 'LIMITS' });
    const count = parseNumber(head.count ?? '');
    if (count !== data.length) throw new FusedError('failure', `LIMITS announced ${count} lines but carried ${data.length}`);
    const nodes: NodeLimits[] = [];
    const volumes: VolumeLimits[] = [];
    const num = (f: Fields, k: string) => (/^\d+$/.test(f[k] ?? '') ? Number(f[k]) : 0);
    for (const line of data) {
      const f = parseDataFields(line.slice(2));
      if (line.startsWith('N ') && f.node) {
        nodes.push({
          node: f.node, rate: num(f, 'rate'), iops: num(f, 'iops'), current: num(f, 'current'), total: num(f, 'total'),
          currentOps: num(f, 'current_ops'), ops: num(f, 'ops'), grants: num(f, 'grants'), active: f.active === '1', copies: f.copies ? num(f, 'copies') : 0, volumes: f.volume ? f.volume.split(',') : [],
        });
      } else if (line.startsWith('V ') && f.volume) {
        volumes.push({ volume: f.volume, rate: num(f, 'rate'), current: num(f, 'current'), total: num(f, 'total'), active: num(f, 'active') });
      }
    }
    return { nodes, volumes };
  }

  /** LIMIT SET (admin only): a node's rate and/or iops, or a volume's cap; 0 removes that limit. */
  async setLimit(target: { node: string } | { volume: string }, limits: { rate?: number; iops?: number }): Promise<void> {
    await this.request({ verb: 'LIMIT', op: 'SET', target, ...limits });
  }

  /** LIMIT CLEAR (admin only). */
  async clearLimit(target: LimitTarget): Promise<void> {
    await this.request({ verb: 'LIMIT', op: 'CLEAR', target });
  }

  async ping(): Promise<void> {
    await this.request({ verb: 'PING' });
  }

  /** While long I/O sends nothing else: PING every third of the lease time (and of the idle timeout), each reply
   *  renewing the leases. Returns the function that stops it. */
  keepAlive(): () => void {
    const timer = setInterval(() => void this.ping().catch(() => {}), Math.max(250, Math.min(this.idleMs, this.leaseMs) / 3));
    timer.unref();
    return () => clearInterval(timer);
  }

  /** Say QUIT (best effort) and close. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const p of this.pending.splice(0)) p.reject(unreachable(this.address, 'session closed'));
    // Over ghost files removing the session directory is the goodbye (the server ends a session whose directory
    // is gone): a QUIT chunk still being written when the process exits would only leave a half-written file.
    if (this.address.ghost !== undefined) {
      this.socket.destroy();
      return;
    }
    this.socket.end(formatRequest({ verb: 'QUIT' }) + '\n');
    this.socket.destroySoon?.();
  }
}

/** An ERR reply: the server's code and text. */
export class ServerRefusal extends FusedError {
  constructor(readonly code: string, text: string) {
    super('failure', `${text} (${code})`);
  }
}

function unreachable(a: ServerAddress, why: string): FusedError {
  return new FusedError('unreachable', why, `map server ${formatServerAddress(a)}`);
}

/** A MAP or ALLOC reply as a FileMap. */
function parseMap(head: Fields, data: string[]): FileMap {
  const extents = data.map((l) => {
    if (!l.startsWith('X ')) throw new FusedError('failure', `unexpected data line in a map: ${l.slice(0, 80)}`);
    return parseExtent(l.slice(2));
  });
  const count = parseNumber(head.extents ?? '');
  if (count !== extents.length) {
    throw new FusedError('failure', `map announced ${count} extents but carried ${extents.length}`);
  }
  const mtimeNs = parseMtimeNs(head.mtime);
  return {
    lease: head.lease ?? '',
    size: parseNumber(head.size ?? ''),
    ...(head.ino !== undefined && /^\d+$/.test(head.ino) ? { ino: head.ino } : {}),
    blockSize: parseNumber(head.blocksize ?? ''),
    change: head.change ?? '',
    ...(mtimeNs !== undefined ? { mtimeNs } : {}),
    extents,
    ...(head.network ? { networkReason: head.network } : {}),
    ...(head.ready !== undefined && /^\d+$/.test(head.ready) ? { ready: Number(head.ready) } : {}),
  };
}
