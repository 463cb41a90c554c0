// The map server: listens, admits connections, and holds the volumes, the lease table and the map policies.
import net from 'node:net';
import { LIMITS, formatErr, type Access } from '../protocol/index.js';
import type { ChunkStream } from '../transport/ghost.js';
import { Connection, type ConnectionHost } from './connection.js';
import { LeaseTable } from './leases.js';
import { LimitStore } from './limits.js';
import { MapPolicy, type MapPolicyOptions } from './maps.js';
import { splitDev } from '../sys/blockdev.js';
import { Reply } from './reply.js';
import type { ServerEvent, ServerOptions, ServerSettings } from './settings.js';
import { ThrottlePolicy } from './throttle.js';
import type { Volume } from './volumes.js';

export type { ServerEvent, ServerOptions } from './settings.js';

/** The settings a running server takes from a reloaded configuration (SIGHUP); the rest are fixed at start. */
export type LiveSettings = Pick<
  ServerSettings,
  'secret' | 'roles' | 'defaultRole' | 'maxConnections' | 'maxUnauthenticated' | 'idleTimeoutMs' | 'maxExtents' | 'maxLeasesPerConnection'
>;

/** The allocation reserve per volume unless --reserve says otherwise. */
export const DEFAULT_RESERVE_BYTES = 1024 ** 3;

export class MapServer implements ConnectionHost {
  private readonly server: net.Server;
  private readonly connections = new Set<Connection>();
  /** Connections before AUTH, oldest first (a Set keeps insertion order); they have a limit of their own. */
  private readonly unauthenticated = new Set<Connection>();
  private readonly authenticated = new Set<Connection>();
  readonly leases: LeaseTable;
  readonly opts: ServerSettings;
  readonly maps: MapPolicy;
  readonly throttle: ThrottlePolicy;
  private readonly volumes = new Map<string, Volume>();
  private readonly mapOptions: MapPolicyOptions;
  /** Volumes taken out of service by a reload, and their directories: the map policy keeps their allocators. */
  private readonly retired = new Map<string, string>();

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
      reserveBytes: DEFAULT_RESERVE_BYTES,
      log: () => {},
      events: () => {},
      ...options,
      limits: options.limits ?? LimitStore.inMemory(),
    };
    for (const v of options.volumes) this.volumes.set(v.name, v);
    this.leases = new LeaseTable({
      leaseTimeMs: this.opts.leaseTimeMs,
      marginMs: this.opts.leaseMarginMs,
      recallQueueMs: this.opts.recallQueueMs,
      maxFiles: this.opts.maxFiles,
      log: this.opts.log,
      onRevoke: (holder, lease, after) => {
        const node = holder instanceof Connection ? holder.nodeName : undefined;
        this.opts.events({ event: 'revoke', lease, after, ...(node ? { node } : {}) });
      },
    });
    this.mapOptions = { maxExtents: this.opts.maxExtents, reserveBytes: this.opts.reserveBytes, log: this.opts.log };
    this.maps = new MapPolicy(this.leases, this.mapOptions);
    this.throttle = new ThrottlePolicy(this.opts.limits, this.opts.log);
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
    await this.maps.close();
    await closed;
  }

  volume(name: string): Volume {
    const v = this.volumes.get(name);
    if (!v) throw new Reply('NOVOLUME', `no volume named ${name}`);
    return v;
  }

  /** Why a volume cannot be added by a reload, if it cannot: a name served before from another directory (its
   *  allocator, made for that directory, lives as long as the server). */
  addProblem(v: Volume): string | undefined {
    const was = this.retired.get(v.name);
    return was !== undefined && was !== v.dir ? `volume ${v.name} was served from ${was}: serving it from ${v.dir} needs a restart` : undefined;
  }

  /** Take a reloaded configuration: new settings for what comes next (sessions stay), volumes added, and volumes
   *  taken out of service, whose maps are recalled (resolves once those are returned or revoked). */
  async reconfigure(live: LiveSettings, add: Volume[], remove: string[]): Promise<void> {
    Object.assign(this.opts, live);
    this.mapOptions.maxExtents = live.maxExtents;
    for (const v of add) this.volumes.set(v.name, v);
    const gone = remove.map((n) => this.volumes.get(n)).filter((v): v is Volume => v !== undefined);
    for (const v of gone) {
      this.volumes.delete(v.name);
      this.retired.set(v.name, v.dir);
    }
    await this.maps.start(add);
    // Leases know their file (dev:ino), not the volume it was mapped through: every map on the file system of a
    // removed volume is recalled, which may include another volume's on the same one (a recall is always safe).
    const devs = new Set(gone.map((v) => `${v.major}:${v.minor}`));
    if (devs.size === 0) return;
    await this.leases.recallWhere((key) => {
      const d = splitDev(BigInt(key.slice(0, key.indexOf(':'))));
      return devs.has(`${d.major}:${d.minor}`);
    }, 'volume-removed');
  }

  /** Connections now, before and after AUTH (for the metrics). */
  connectionCounts(): { authenticated: number; unauthenticated: number } {
    return { authenticated: this.authenticated.size, unauthenticated: this.unauthenticated.size };
  }

  volumeNames(): string[] {
    return [...this.volumes.keys()];
  }

  /** Nodes with an authenticated connection now (LIMITS lists them even before they draw a grant). */
  nodeNames(): string[] {
    return [...new Set([...this.authenticated].map((c) => c.nodeName).filter((n): n is string => n !== undefined))];
  }

  private accept(socket: net.Socket): void {
    this.acceptStream(socket, `${socket.remoteAddress}:${socket.remotePort}`);
  }

  /** Serve one connection: a TCP socket, or a ghost-file session's stream (src/transport/ghost-server.ts), which
   *  stands in for one: the handshake, limits, leases and recalls are the same. */
  acceptStream(socket: net.Socket | ChunkStream, peer: string): void {
    if (this.authenticated.size >= this.opts.maxConnections) {
      this.opts.events({ event: 'refused', peer, code: 'BUSY', reason: `${this.authenticated.size} authenticated connections already` });
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
    // The connection uses only what a Duplex has, besides setNoDelay and setKeepAlive (which a ChunkStream ignores).
    const conn = new Connection(this, socket as net.Socket, peer);
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

}
