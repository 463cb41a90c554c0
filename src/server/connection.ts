// The transport: one client connection, its handshake, requests answered strictly in order, pushes between replies.
import { unlink } from 'node:fs/promises';
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import {
  LIMITS,
  LineFramer,
  PROTOCOL_VERSION,
  ProtocolError,
  MAX_X_LINE,
  clientProof,
  encodeExtents,
  formatErr,
  formatGreeting,
  formatOk,
  formatPush,
  newChallenge,
  nodeKey,
  parseRequest,
  proofMatches,
  serverProof,
  type Access,
  type Request,
} from '../protocol/index.js';
import type { LeaseTable, LeaseHolder } from './leases.js';
import type { MapAnswer, MapPolicy } from './maps.js';
import { Reply } from './reply.js';
import type { ServerSettings } from './settings.js';
import type { ThrottlePolicy } from './throttle.js';
import type { Volume } from './volumes.js';

/** What a connection needs of the server that accepted it. */
export interface ConnectionHost {
  readonly opts: ServerSettings;
  readonly leases: LeaseTable;
  readonly maps: MapPolicy;
  readonly throttle: ThrottlePolicy;
  volume(name: string): Volume;
  volumeNames(): string[];
  nodeNames(): string[];
  /** The connection passed AUTH: false when the authenticated connections are full. */
  admit(conn: Connection): boolean;
  roleOf(node: string): Access;
}

/** Map replies are encoded into a few large buffers, each written at once; buffers the socket is done with are kept
 *  for the next replies (a map of 10,000 extents is ~700 KB: new buffers each time keep the GC busy). */
const REPLY_BUFFERS_KEPT = 2;
const freeBuffers: Buffer[] = [];
/** The most extent lines encoded into one buffer (under 2 MiB): what is kept stays small, and a map of a million
 *  extents does not take one buffer of 70 MB. */
const MAP_PIECE_EXTENTS = 1 << 14;
/** A reply this small takes a slice of Node's shared buffer pool instead. */
const SMALL_REPLY_BYTES = 4096;

/** A buffer of at least `bytes` for a map reply: a kept one if one is big enough, else a new one. */
function replyBuffer(bytes: number): Buffer {
  for (let i = freeBuffers.length - 1; i >= 0; i--) {
    if (freeBuffers[i]!.length >= bytes) return freeBuffers.splice(i, 1)[0]!;
  }
  // Rounded up to a power of two, so that one buffer serves maps of about that size.
  return Buffer.allocUnsafeSlow(2 ** Math.ceil(Math.log2(bytes)));
}

function keepReplyBuffer(buf: Buffer): void {
  if (freeBuffers.length < REPLY_BUFFERS_KEPT) freeBuffers.push(buf);
  else {
    // Keep the larger ones.
    let smallest = 0;
    for (let i = 1; i < freeBuffers.length; i++) if (freeBuffers[i]!.length < freeBuffers[smallest]!.length) smallest = i;
    if (freeBuffers[smallest]!.length < buf.length) freeBuffers[smallest] = buf;
  }
}

/** One client connection: handshake, then requests answered strictly in order. */
export class Connection implements LeaseHolder {
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
  /** The client said QUIT. */
  private quit = false;
  /** Replies to a batch of requests are being held in the socket (see onData). */
  private corked = false;

  constructor(
    private readonly server: ConnectionHost,
    private readonly socket: net.Socket,
    private readonly peer: string,
  ) {
    const log = server.opts.log;
    server.opts.events({ event: 'connect', peer });
    socket.setNoDelay(true);
    socket.setKeepAlive(true, 10_000);
    socket.on('error', (err) => {
      // A client that said QUIT may be gone before BYE reaches it: its reset is the normal end, not news.
      const code = (err as NodeJS.ErrnoException).code;
      if (this.quit && (code === 'ECONNRESET' || code === 'EPIPE')) return;
      log(`${peer}: ${err.message}`);
    });
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    this.authTimer = setTimeout(() => this.bye('auth-timeout'), server.opts.authTimeoutMs);
    this.touch();
    socket.write(formatGreeting(server.opts.node, this.challenge) + '\n');
  }

  private get log() {
    return this.server.opts.log;
  }

  /** The idle time starts again: the one timer is moved, not replaced (a new timer for each request is garbage). */
  private touch(): void {
    if (this.idleTimer) this.idleTimer.refresh();
    else this.idleTimer = setTimeout(() => this.bye('idle'), this.server.opts.idleTimeoutMs);
  }

  /** The node's name once it has authenticated. */
  get nodeName(): string | undefined {
    return this.authed ? this.node : undefined;
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
    this.server.opts.events({ event: 'disconnect', peer: this.peer, ...(this.nodeName ? { node: this.nodeName } : {}) });
  }

  recall(leaseId: string, reason: string): Promise<number> {
    this.server.opts.events({ event: 'recall', peer: this.peer, lease: leaseId, reason, ...(this.nodeName ? { node: this.nodeName } : {}) });
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
    // A push does not wait for the batch being answered: out now, behind the replies already written.
    if (this.corked) {
      this.socket.uncork();
      this.socket.cork();
    }
    queued?.(performance.now());
  }

  private onData(chunk: Buffer): void {
    if (this.closing) return;
    this.touch();
    const events = this.framer.push(chunk);
    // Requests that came together (a client pipelining RELEASE with its next MAP) are answered together: their
    // replies wait in the socket (corked) until the last is written, one system call for all of them.
    const batch = events.length > 1 && !this.corked;
    if (batch) {
      this.corked = true;
      this.socket.cork();
    }
    for (const ev of events) {
      this.queue = this.queue.then(() => this.handleEvent(ev));
    }
    // Do not read more while requests wait: a flood of lines cannot grow the queue without bound.
    this.socket.pause();
    void this.queue.then(() => {
      if (batch) this.uncork();
      if (!this.closing) this.socket.resume();
    });
  }

  private uncork(): void {
    if (!this.corked) return;
    this.corked = false;
    this.socket.uncork();
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
        const volume = 'volume' in req && typeof req.volume === 'string' ? req.volume : undefined;
        this.server.opts.events({
          event: 'refused', peer: this.peer, verb: req.verb, code: reply.code, reason: reply.message,
          ...(this.nodeName ? { node: this.nodeName } : {}), ...(volume ? { volume } : {}),
        });
        await this.send([formatErr(reply.code, reply.message)]);
      } else {
        this.log(`${this.peer}: ${req.verb}: internal error: ${(err as Error)?.stack ?? String(err)}`);
        await this.send([formatErr('INTERNAL', (err as Error)?.message ?? 'internal error')]);
      }
    }
  }

  /** Write a reply's lines in one socket write (replies other than maps are a few lines). */
  private async send(lines: readonly string[]): Promise<void> {
    this.replying = true;
    try {
      await this.write(lines.length === 1 ? lines[0] + '\n' : lines.join('\n') + '\n');
    } finally {
      this.replied();
    }
  }

  /** The reply is out: pushes that waited for it go now. */
  private replied(): void {
    this.replying = false;
    if (this.pendingPushes.length === 0) return;
    const pushes = this.pendingPushes;
    this.pendingPushes = [];
    for (const p of pushes) this.push(p.line, p.queued);
  }

  /** Write to the socket; resolves at once, or when a full socket buffer has drained. Reply text is ASCII by
   *  construction (every field is encoded), so latin1 (one byte per character) is exact and the cheapest. */
  private write(data: string): Promise<void> {
    if (this.socket.destroyed) return Promise.resolve();
    return this.written(this.socket.write(data, 'latin1'));
  }

  /** Write bytes; `done` is called once the socket no longer needs them (sent, or the socket is gone). */
  private writeBytes(data: Buffer, done?: () => void): Promise<void> {
    if (this.socket.destroyed) {
      done?.();
      return Promise.resolve();
    }
    return this.written(this.socket.write(data, done && (() => done())));
  }

  /** What a socket write returned, as a promise that resolves at once or when a full buffer has drained. */
  private written(ok: boolean): Promise<void> {
    if (ok) return Promise.resolve();
    // A full buffer drains only once it is handed to the kernel.
    this.uncork();
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
        this.quit = true;
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
          this.server.opts.events({ event: 'authfail', peer: this.peer, node: this.node });
          await this.send([formatErr('AUTHFAIL', 'authentication failed')]);
          this.bye('authfail');
          return;
        }
        clearTimeout(this.authTimer);
        if (!server.admit(this)) {
          this.server.opts.events({ event: 'refused', peer: this.peer, node: this.node, verb: 'AUTH', code: 'BUSY', reason: 'authenticated connections full' });
          await this.send([formatErr('BUSY', `too many connections (limit ${server.opts.maxConnections})`)]);
          this.bye('busy');
          return;
        }
        this.authed = true;
        server.opts.events({ event: 'auth', peer: this.peer, node: this.node, access: this.access() });
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
        const alloc = await server.maps.allocation(v);
        return this.send([
          formatOk('VOLUME', {
            name: v.name,
            fstype: id.fstype,
            uuid: id.uuid,
            label: id.label,
            blocksize: id.blockSize,
            size: id.sizeBytes,
            access: this.access(),
            allocation: alloc.method,
            reserve: alloc.reserveBytes,
          }),
        ]);
      }
      case 'PROBE': {
        const v = server.volume(req.volume);
        if (this.probes.size >= server.opts.maxProbes) {
          throw new Reply('LIMIT', `too many probes on this connection (limit ${server.opts.maxProbes})`);
        }
        const { name, token, path } = await server.maps.makeProbe(v);
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
        if (req.mode === 'write' && this.access() === 'ro') {
          throw new Reply('ACCESS', `node ${this.node} is read-only on this server (its role is ro)`);
        }
        const started = performance.now();
        const answer = req.mode === 'write' ? await server.maps.mapForWrite(v, req.path, this) : await server.maps.map(v, req.path, this);
        server.opts.events({
          event: 'map', peer: this.peer, node: this.node!, volume: v.name, mode: req.mode === 'write' ? 'write' : 'read',
          direct: answer.networkReason === undefined, seconds: (performance.now() - started) / 1000,
        });
        // The client is gone before it could see this map: nobody can use it.
        if (this.endedAt !== undefined) {
          server.leases.release(this, answer.leaseId);
          return;
        }
        return this.sendMap('MAP', answer, { lease: answer.leaseId, mode: req.mode === 'write' ? 'write' : undefined });
      }
      case 'ALLOC': {
        const answer = await server.maps.alloc(this, req.lease, req.offset, req.length);
        return this.sendMap('ALLOC', answer, { lease: req.lease, ready: answer.ready });
      }
      case 'COMMIT': {
        const done = await server.maps.commit(this, req.lease, req.size);
        return this.send([formatOk('COMMIT', { size: done.size, mtime: done.mtime })]);
      }
      case 'RELEASE':
      case 'RETURN': {
        if (!server.leases.release(this, req.lease)) throw new Reply('NOLEASE', `no lease ${req.lease} on this connection`);
        return this.send([formatOk(req.verb)]);
      }
      case 'GRANT': {
        const v = server.volume(req.volume);
        const g = server.throttle.grant(this.node!, v.name, req.bytes, req.ops, this);
        server.opts.events({ event: 'grant', node: this.node!, volume: v.name, bytes: g.bytes });
        return this.send([formatOk('GRANT', { bytes: g.bytes, ops: g.ops, next: g.nextMs, limited: g.limited ? 1 : 0 })]);
      }
      case 'LIMITS':
        return this.send(server.throttle.list(server.nodeNames(), server.volumeNames()));
      case 'LIMIT': {
        const served = new Set(server.volumeNames());
        await server.throttle.change({ node: this.node!, access: this.access() }, req, (v) => served.has(v));
        return this.send([formatOk('LIMIT')]);
      }
      default:
        throw new Reply('UNKNOWN', 'unknown request');
    }
  }

  /** A map reply (MAP or ALLOC): the head, one X line per extent, END; written at once (the socket buffers what the
   *  kernel does not take yet), then the next request waits for the buffer to drain. */
  private async sendMap(verb: 'MAP' | 'ALLOC', answer: MapAnswer, lead: { lease: string; mode?: 'write' | undefined; ready?: number | undefined }): Promise<void> {
    const extents = answer.extents;
    const encoded = answer.encoded;
    const n = encoded ? encoded.extents : extents.length;
    // Built field by field in the reply's order: an object spread here cost 5 µs of every map (mapload).
    const head: Record<string, string | number> = { lease: lead.lease };
    if (lead.mode) head.mode = lead.mode;
    if (lead.ready) head.ready = lead.ready;
    head.size = answer.size;
    head.blocksize = answer.blockSize;
    head.ino = answer.ino;
    head.change = answer.change;
    head.mtime = answer.mtime;
    head.extents = n;
    if (answer.networkReason) head.network = answer.networkReason;
    // The head line is ASCII (every field is encoded): latin1 writes it byte for byte.
    const headLine = formatOk(verb, head) + '\n';
    this.replying = true;
    try {
      if (encoded) return await this.writeEncoded(headLine, encoded.body);
      const bound = headLine.length + n * MAX_X_LINE + 4;
      if (bound <= SMALL_REPLY_BYTES) {
        const buf = Buffer.allocUnsafe(bound);
        let at = buf.write(headLine, 0, 'latin1');
        at = encodeExtents(extents, 0, n, buf, at);
        at += buf.write('END\n', at, 'latin1');
        await this.writeBytes(buf.subarray(0, at));
        return;
      }
      // Up to MAP_PIECE_EXTENTS lines per write.
      for (let i = 0; i === 0 || i < n; i += MAP_PIECE_EXTENTS) {
        const to = Math.min(i + MAP_PIECE_EXTENTS, n);
        const buf = replyBuffer((i === 0 ? headLine.length : 0) + (to - i) * MAX_X_LINE + 4);
        let at = i === 0 ? buf.write(headLine, 0, 'latin1') : 0;
        at = encodeExtents(extents, i, to, buf, at);
        if (to === n) at += buf.write('END\n', at, 'latin1');
        await this.writeBytes(buf.subarray(0, at), () => keepReplyBuffer(buf));
      }
    } finally {
      this.replied();
    }
  }

  /** A map reply whose extent lines are encoded already (a cached map, shared by every reply of it: never changed).
   *  A small one is copied into one buffer; a large one goes as head, body and END in one corked write. */
  private writeEncoded(headLine: string, body: Buffer): Promise<void> {
    const bytes = headLine.length + body.length + 4;
    if (bytes <= SMALL_REPLY_BYTES) {
      const buf = Buffer.allocUnsafe(bytes);
      let at = buf.write(headLine, 0, 'latin1');
      at += body.copy(buf, at);
      buf.write('END\n', at, 'latin1');
      return this.writeBytes(buf);
    }
    if (this.socket.destroyed) return Promise.resolve();
    this.socket.cork();
    this.socket.write(headLine, 'latin1');
    this.socket.write(body);
    const ok = this.socket.write('END\n', 'latin1');
    this.socket.uncork();
    return this.written(ok);
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
