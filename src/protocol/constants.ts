// Protocol constants shared by server and client: version, port, limits, verbs, error codes, extent states.

export const PROTOCOL_VERSION = 2;
export const DEFAULT_PORT = 7447;

/** Defaults from fused-protocol(7); line and path length are fixed, the rest are server settings. */
export const LIMITS = {
  maxLineBytes: 16384,
  maxExtentsPerMap: 1_000_000,
  maxConnections: 64,
  /** Connections not yet past AUTH; when full the oldest is dropped, so they never crowd out nodes. */
  maxUnauthenticated: 16,
  idleTimeoutMs: 300_000,
  authTimeoutMs: 10_000,
  maxLeasesPerConnection: 4096,
  /** T, the lease time announced in HELLO (fusedctl serve --lease-time). */
  leaseTimeMs: 10_000,
  /** The server waits T + this after a recall before it lets a file go without RETURN; clients stop at T - this. */
  leaseMarginMs: 1_000,
  /** A recall must be queued on its connection within this, or the connection is ended. */
  recallQueueMs: 1_000,
  maxPathBytes: 4096,
} as const;

/** Request verbs, in the order of the man page. */
export const VERBS = [
  'HELLO', 'AUTH', 'VOLUMES', 'VOLUME', 'PROBE', 'UNPROBE', 'MAP', 'ALLOC', 'COMMIT', 'RELEASE', 'RETURN',
  'GRANT', 'LIMITS', 'LIMIT', 'PING', 'QUIT',
] as const;
export type Verb = typeof VERBS[number];

/** The complete list of error codes (fused-protocol(7), ERRORS). */
export const ERROR_CODES = [
  'BADLINE', 'TOOLONG', 'UNKNOWN', 'BADARG', 'ORDER', 'VERSION', 'NOAUTH', 'AUTHFAIL', 'BUSY', 'LIMIT',
  'NOVOLUME', 'BADPATH', 'NOENT', 'NOTREG', 'ACCESS', 'NOMAP', 'TOOBIG', 'CONFLICT', 'NOLEASE', 'NOSPACE', 'INTERNAL',
] as const;
export type ErrorCode = typeof ERROR_CODES[number];

/** Default reply text per code, used when a caller has nothing more specific to say. */
export const ERROR_TEXT: Readonly<Record<ErrorCode, string>> = {
  BADLINE: 'line has a byte outside 0x20-0x7E',
  TOOLONG: `line longer than ${LIMITS.maxLineBytes} bytes`,
  UNKNOWN: 'unknown verb',
  BADARG: 'bad arguments',
  ORDER: 'request out of session order',
  VERSION: `unsupported protocol version (this server speaks ${PROTOCOL_VERSION})`,
  NOAUTH: 'authenticate first (HELLO, AUTH)',
  AUTHFAIL: 'authentication failed',
  BUSY: 'too many connections',
  LIMIT: 'too many leases on this connection',
  NOVOLUME: 'no such volume',
  BADPATH: 'bad path',
  NOENT: 'no such file',
  NOTREG: 'not a regular file',
  ACCESS: 'access denied',
  NOMAP: 'extent map unavailable',
  TOOBIG: 'too many extents',
  CONFLICT: 'lease conflict',
  NOLEASE: 'no such lease',
  NOSPACE: 'no space left on the volume',
  INTERNAL: 'internal error',
};

export function isErrorCode(s: string): s is ErrorCode {
  return (ERROR_CODES as readonly string[]).includes(s);
}

/** A protocol-level failure; `code` goes on the wire, `message` is the reply text. */
export class ProtocolError extends Error {
  constructor(public code: ErrorCode, message: string) {
    super(message);
    this.name = 'ProtocolError';
  }
}

export const EXTENT_STATES = ['DATA', 'ZERO', 'HOLE', 'NETWORK'] as const;
export type ExtentState = typeof EXTENT_STATES[number];

/** One extent as it crosses the wire: byte offsets and length, state, raw FIEMAP flags. */
export interface WireExtent {
  logical: number;
  physical: number;
  length: number;
  state: ExtentState;
  flags: number;
}

/** Name syntaxes from fused-protocol(7), NAMES. */
export const NODE_NAME_RE = /^[A-Za-z0-9._-]{1,64}$/;
export const VOLUME_NAME_RE = /^[A-Za-z0-9._-]{1,64}$/;
export const LEASE_ID_RE = /^[A-Za-z0-9]{1,32}$/;
export const HEX64_RE = /^[0-9a-f]{64}$/;

/** What a node may do, from its role on the server: admin implies rw, rw implies ro. */
export const ACCESS_LEVELS = ['ro', 'rw', 'admin'] as const;
export type Access = typeof ACCESS_LEVELS[number];
export const isAccess = (s: string): s is Access => (ACCESS_LEVELS as readonly string[]).includes(s);

export const isNodeName = (s: string): boolean => NODE_NAME_RE.test(s);
export const isVolumeName = (s: string): boolean => VOLUME_NAME_RE.test(s);
export const isLeaseId = (s: string): boolean => LEASE_ID_RE.test(s);
