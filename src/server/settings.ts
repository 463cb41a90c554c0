// The map server's settings, with the protocol's defaults.
import type { Access } from '../protocol/index.js';
import type { LimitStore } from './limits.js';
import type { Volume } from './volumes.js';

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
  /** Bytes of pre-zeroed reserve per volume that allocation clones from, where the file system can (XFS). */
  reserveBytes?: number;
  /** The throttle limits (fusedctl serve loads them from --state-dir); in memory only if not given. */
  limits?: LimitStore;
  log?: (line: string) => void;
  /** Events that matter to an operator (the log and the metrics observe them; the server only reports). */
  events?: (e: ServerEvent) => void;
}

/** What the server reports as it works: one value per event, for the log (fusedctl(1) LOGGING) and the metrics. */
export type ServerEvent =
  | { event: 'connect'; peer: string }
  | { event: 'disconnect'; peer: string; node?: string }
  | { event: 'auth'; peer: string; node: string; access: Access }
  | { event: 'authfail'; peer: string; node: string }
  /** A request answered with an error (or a connection refused at accept, verb undefined). */
  | { event: 'refused'; peer: string; node?: string; volume?: string; verb?: string; code: string; reason: string }
  | { event: 'map'; peer: string; node: string; volume: string; mode: 'read' | 'write'; direct: boolean; seconds: number }
  | { event: 'grant'; node: string; volume: string; bytes: number }
  | { event: 'recall'; peer: string; node?: string; lease: string; reason: string }
  /** A lease let go without RETURN: its recall, or the end of its connection, was T + margin ago. */
  | { event: 'revoke'; node?: string; lease: string; after: 'recall' | 'disconnect' }
  /** SIGHUP: the new configuration applied, refused (the old one stays), or a setting that cannot change live. */
  | { event: 'reload'; result: 'ok' | 'refused' | 'ignored'; reason: string };

export type ServerSettings = Required<ServerOptions>;
