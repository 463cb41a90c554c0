// fusedctl serve's settings: its command-line options over its configuration file (fused.conf(5)) over the
// defaults, each value checked strictly and, when wrong, named by option or by FILE:LINE.
import { defaultNode, DEFAULT_SECRET_FILE } from '../client/fuse.js';
import { parseServerAddress, type ServerAddress } from '../client/session.js';
import { FusedError } from '../errors.js';
import { ACCESS_LEVELS, DEFAULT_PORT, LIMITS, isAccess, isNodeName, type Access } from '../protocol/index.js';
import { where, type ConfigFile, type GlobalKey } from '../server/config.js';
import { DEFAULT_STATE_DIR } from '../server/limits.js';
import { isLogFormat, type LogFormat } from '../server/log.js';
import { parseVolumeSpec } from '../server/volumes.js';
import { parseCount, parseSize } from '../ui/options.js';

export const ROLE_HELP = ACCESS_LEVELS.join('|');

/** Each setting's default, as its option would be written (the metrics endpoint is off unless asked for). */
export const SERVE_DEFAULTS: Record<GlobalKey, string | undefined> = {
  listen: `0.0.0.0:${DEFAULT_PORT}`,
  node: defaultNode(),
  'secret-file': DEFAULT_SECRET_FILE,
  'default-role': 'ro',
  'max-connections': String(LIMITS.maxConnections),
  'max-unauthenticated': String(LIMITS.maxUnauthenticated),
  'idle-timeout': String(LIMITS.idleTimeoutMs / 1000),
  'max-extents': String(LIMITS.maxExtentsPerMap),
  'max-leases': String(LIMITS.maxLeasesPerConnection),
  'lease-time': String(LIMITS.leaseTimeMs / 1000),
  reserve: '1G',
  'state-dir': DEFAULT_STATE_DIR,
  metrics: undefined,
  'log-format': 'text',
};

export interface ServeConfig {
  listen: ServerAddress;
  node: string;
  secretFile: string;
  roles: Map<string, Access>;
  defaultRole: Access;
  maxConnections: number;
  maxUnauthenticated: number;
  idleTimeoutMs: number;
  maxExtents: number;
  maxLeasesPerConnection: number;
  leaseTimeMs: number;
  reserveBytes: number;
  stateDir: string;
  metrics: ServerAddress | undefined;
  logFormat: LogFormat;
  /** In order: the file's, then the command line's (a name on both: the command line's DIR). */
  volumes: { name: string; dir: string; where: string }[];
}

/** What was given on the command line: options by their long name, and the repeatable ones. */
export interface ServeArgs {
  given: Partial<Record<GlobalKey, string>>;
  volumes: string[];
  roles: string[];
}

export function parseAccess(value: string, option: string): Access {
  if (!isAccess(value)) throw new FusedError('usage', `expected ${ROLE_HELP}, got '${value}'`, option);
  return value;
}

/** --role NODE=ro|rw|admin, repeatable; a node named twice is a mistake, not a last-one-wins. */
export function parseRoles(specs: string[]): Map<string, Access> {
  const roles = new Map<string, Access>();
  for (const spec of specs) {
    const eq = spec.lastIndexOf('=');
    const node = spec.slice(0, Math.max(eq, 0));
    if (eq < 0 || !isNodeName(node)) throw new FusedError('usage', `expected NODE=${ROLE_HELP}, got '${spec}'`, '--role');
    if (roles.has(node)) throw new FusedError('usage', `node ${node} given twice`, '--role');
    roles.set(node, parseAccess(spec.slice(eq + 1), '--role'));
  }
  return roles;
}

/** Settings from the command line over the file over the defaults; the first bad value throws a usage error. */
export function resolveServe(args: ServeArgs, file?: ConfigFile): ServeConfig {
  /** The value of KEY and a checker that names where it came from when it is wrong. */
  const get = <T>(key: GlobalKey, parse: (value: string, name: string) => T): T => {
    const cli = args.given[key];
    if (cli !== undefined) return parse(cli, `--${key}`);
    const fromFile = file?.global.get(key);
    if (fromFile) return inFile(file!.file, fromFile.line, key, () => parse(fromFile.value, key));
    return parse(SERVE_DEFAULTS[key]!, `--${key}`);
  };
  const count = (min: number, max: number) => (v: string, name: string) => parseCount(v, name, min, max);
  const text = (v: string) => v;
  const cfg: ServeConfig = {
    listen: get('listen', parseServerAddress),
    node: get('node', (v, name) => {
      if (!isNodeName(v)) throw new FusedError('usage', 'node names are 1-64 of [A-Za-z0-9._-]', name);
      return v;
    }),
    secretFile: get('secret-file', text),
    roles: new Map(),
    defaultRole: get('default-role', parseAccess),
    maxConnections: get('max-connections', count(1, 100000)),
    maxUnauthenticated: get('max-unauthenticated', count(1, 100000)),
    idleTimeoutMs: get('idle-timeout', count(1, 86400)) * 1000,
    maxExtents: get('max-extents', count(1, LIMITS.maxExtentsPerMap)),
    maxLeasesPerConnection: get('max-leases', count(1, LIMITS.maxLeasesPerConnection)),
    leaseTimeMs: get('lease-time', count(3, 3600)) * 1000,
    reserveBytes: get('reserve', parseSize),
    stateDir: get('state-dir', text),
    metrics: args.given.metrics !== undefined || file?.global.has('metrics') ? get('metrics', parseServerAddress) : undefined,
    logFormat: get('log-format', (v, name) => {
      if (!isLogFormat(v)) throw new FusedError('usage', `expected text or json, got '${v}'`, name);
      return v;
    }),
    volumes: [],
  };
  // Sections come after the settings in the file, and are checked after them.
  const roles = cfg.roles;
  for (const [node, v] of file?.nodes ?? []) roles.set(node, inFile(file!.file, v.line, 'role', () => parseAccess(v.value, 'role')));
  for (const [node, role] of parseRoles(args.roles)) roles.set(node, role);
  const volumes = new Map<string, { name: string; dir: string; where: string }>();
  for (const [name, v] of file?.volumes ?? []) volumes.set(name, { name, dir: v.value, where: where(file!.file, v.line) });
  for (const spec of args.volumes) {
    const s = parseVolumeSpec(spec);
    if (args.volumes.filter((o) => o.startsWith(`${s.name}=`)).length > 1) throw new FusedError('usage', 'volume name given twice', s.name);
    volumes.set(s.name, { ...s, where: `--volume ${spec}` });
  }
  cfg.volumes = [...volumes.values()];
  if (cfg.volumes.length === 0) {
    throw new FusedError('usage', `no volume to serve (--volume NAME=DIR${file ? `, or a [volume NAME] section in ${file.file}` : ''})`);
  }
  return cfg;
}

/** Run a check of a value from the file; its usage error then names FILE:LINE and the key. */
function inFile<T>(file: string, line: number, key: string, check: () => T): T {
  try {
    return check();
  } catch (err) {
    if (err instanceof FusedError && err.kind === 'usage') throw new FusedError('usage', `${key}: ${err.message}`, where(file, line));
    throw err;
  }
}
