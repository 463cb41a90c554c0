// Request lines: parse (server side, strict) and format (client side), per fused-protocol(7) REQUESTS.

import { HEX64_RE, isLeaseId, isNodeName, isVolumeName, ProtocolError, VERBS, type Verb } from './constants.js';
import { checkPath, decodeBytes, decodePath, encodeBytes, encodePath, excerpt, formatNumber, parseNumber } from './encoding.js';

export type MapMode = 'read' | 'write';
export const MAP_MODES: readonly MapMode[] = ['read', 'write'];

/** What LIMIT SET and LIMIT CLEAR name: a node, a volume, or (CLEAR only) every limit. */
export type LimitTarget = { node: string } | { volume: string } | { all: true };

export type Request =
  /** The challenge is optional in the grammar only so an older client gets ERR VERSION, not BADARG. */
  | { verb: 'HELLO'; node: string; version: number; challenge?: string }
  | { verb: 'AUTH'; proof: string }
  | { verb: 'VOLUMES' }
  | { verb: 'VOLUME'; volume: string }
  | { verb: 'PROBE'; volume: string }
  | { verb: 'UNPROBE'; volume: string; name: string }
  | { verb: 'MAP'; volume: string; path: Buffer; mode: MapMode }
  | { verb: 'ALLOC'; lease: string; offset: number; length: number }
  | { verb: 'COMMIT'; lease: string; size: number }
  | { verb: 'RELEASE'; lease: string }
  | { verb: 'RETURN'; lease: string }
  | { verb: 'GRANT'; volume: string; bytes: number; ops: number }
  | { verb: 'LIMITS' }
  /** SET: rate (bytes/s) and/or iops for a node, rate for a volume; 0 means unlimited. */
  | { verb: 'LIMIT'; op: 'SET'; target: { node: string } | { volume: string }; rate?: number; iops?: number }
  | { verb: 'LIMIT'; op: 'CLEAR'; target: LimitTarget }
  | { verb: 'PING' }
  | { verb: 'QUIT' };

const USAGE: Readonly<Record<Verb, string>> = {
  HELLO: 'HELLO <node> <version> <challenge>',
  AUTH: 'AUTH <proof>',
  VOLUMES: 'VOLUMES',
  VOLUME: 'VOLUME <volume>',
  PROBE: 'PROBE <volume>',
  UNPROBE: 'UNPROBE <volume> <name>',
  MAP: 'MAP <volume> <path> [read|write]',
  ALLOC: 'ALLOC <lease> <offset> <length>',
  COMMIT: 'COMMIT <lease> <size>',
  RELEASE: 'RELEASE <lease>',
  RETURN: 'RETURN <lease>',
  GRANT: 'GRANT <volume> <bytes> <ops>',
  LIMITS: 'LIMITS',
  LIMIT: 'LIMIT SET node=<name>|volume=<name> [rate=<bytes/s>] [iops=<n>] | LIMIT CLEAR node=<name>|volume=<name>|all',
  PING: 'PING',
  QUIT: 'QUIT',
};

const isVerb = (s: string): s is Verb => (VERBS as readonly string[]).includes(s);

function arity(verb: Verb, args: string[], min: number, max = min): void {
  if (args.length < min || args.length > max) throw new ProtocolError('BADARG', `usage: ${USAGE[verb]}`);
}

function parseVolume(s: string): string {
  const name = decodeBytes(s).toString('latin1');
  if (!isVolumeName(name)) throw new ProtocolError('BADARG', `bad volume name ${excerpt(s)}: 1-64 of [A-Za-z0-9._-]`);
  return name;
}

function parseLease(s: string): string {
  if (!isLeaseId(s)) throw new ProtocolError('BADARG', `bad lease id ${excerpt(s)}: 1-32 of [A-Za-z0-9]`);
  return s;
}

/** A probe file name: one path component, so UNPROBE can never reach outside the volume root. */
function checkFileName(raw: Buffer): Buffer {
  if (raw.length === 0 || raw.includes(0x2f) || raw.includes(0)) {
    throw new ProtocolError('BADPATH', 'probe name must be a single file name');
  }
  const s = raw.toString('latin1');
  if (s === '.' || s === '..') throw new ProtocolError('BADPATH', 'probe name must be a single file name');
  return raw;
}

function parseNode(s: string): string {
  if (!isNodeName(s)) throw new ProtocolError('BADARG', `bad node name ${excerpt(s)}: 1-64 of [A-Za-z0-9._-]`);
  return s;
}

/** `node=<name>` or `volume=<name>`: whose limit a LIMIT request changes. */
function parseLimitTarget(tok: string): { node: string } | { volume: string } {
  if (tok.startsWith('node=')) return { node: parseNode(tok.slice(5)) };
  if (tok.startsWith('volume=')) return { volume: parseVolume(tok.slice(7)) };
  throw new ProtocolError('BADARG', `expected node=<name> or volume=<name>, got ${excerpt(tok)}`);
}

function parseLimit(args: string[]): Request {
  const usage = () => new ProtocolError('BADARG', `usage: ${USAGE.LIMIT}`);
  const op = args[0];
  if (op === 'CLEAR') {
    if (args.length !== 2) throw usage();
    return { verb: 'LIMIT', op, target: args[1] === 'all' ? { all: true } : parseLimitTarget(args[1]!) };
  }
  if (op !== 'SET' || args.length < 3 || args.length > 4) throw usage();
  const target = parseLimitTarget(args[1]!);
  const out: { rate?: number; iops?: number } = {};
  for (const tok of args.slice(2)) {
    const eq = tok.indexOf('=');
    const key = tok.slice(0, Math.max(eq, 0));
    if (key !== 'rate' && key !== 'iops') throw new ProtocolError('BADARG', `expected rate=<bytes/s> or iops=<n>, got ${excerpt(tok)}`);
    if (out[key] !== undefined) throw new ProtocolError('BADARG', `${key} given twice`);
    out[key] = parseNumber(tok.slice(eq + 1));
  }
  if ('volume' in target && out.iops !== undefined) throw new ProtocolError('BADARG', 'a volume has a rate cap only, no iops limit');
  return { verb: 'LIMIT', op, target, ...out };
}

/** Parses one request line (already framed: printable ASCII, no LF). Throws UNKNOWN, BADARG or BADPATH. */
export function parseRequest(line: string): Request {
  const sp = line.indexOf(' ');
  const verb = sp < 0 ? line : line.slice(0, sp);
  if (!isVerb(verb)) {
    throw new ProtocolError('UNKNOWN', verb === '' ? 'empty request' : `unknown verb ${excerpt(verb)}`);
  }
  const args = sp < 0 ? [] : line.slice(sp + 1).split(' ');
  if (args.includes('')) throw new ProtocolError('BADARG', 'empty token: tokens are separated by exactly one space');
  switch (verb) {
    case 'HELLO': {
      arity(verb, args, 2, 3);
      if (!isNodeName(args[0]!)) throw new ProtocolError('BADARG', `bad node name ${excerpt(args[0]!)}: 1-64 of [A-Za-z0-9._-]`);
      const version = parseNumber(args[1]!);
      if (args.length === 2) return { verb, node: args[0]!, version };
      if (!HEX64_RE.test(args[2]!)) throw new ProtocolError('BADARG', 'challenge must be 64 lower-case hex digits');
      return { verb, node: args[0]!, version, challenge: args[2]! };
    }
    case 'AUTH':
      arity(verb, args, 1);
      if (!HEX64_RE.test(args[0]!)) throw new ProtocolError('BADARG', 'proof must be 64 lower-case hex digits');
      return { verb, proof: args[0]! };
    case 'VOLUMES':
    case 'LIMITS':
    case 'PING':
    case 'QUIT':
      arity(verb, args, 0);
      return { verb };
    case 'GRANT':
      arity(verb, args, 3);
      return { verb, volume: parseVolume(args[0]!), bytes: parseNumber(args[1]!), ops: parseNumber(args[2]!) };
    case 'LIMIT':
      return parseLimit(args);
    case 'VOLUME':
    case 'PROBE':
      arity(verb, args, 1);
      return { verb, volume: parseVolume(args[0]!) };
    case 'UNPROBE': {
      arity(verb, args, 2);
      const volume = parseVolume(args[0]!);
      return { verb, volume, name: checkFileName(decodeBytes(args[1]!)).toString('utf8') };
    }
    case 'MAP': {
      arity(verb, args, 2, 3);
      const volume = parseVolume(args[0]!);
      const path = decodePath(args[1]!);
      const mode = args[2] ?? 'read';
      if (!(MAP_MODES as readonly string[]).includes(mode)) {
        throw new ProtocolError('BADARG', `unknown MAP mode ${excerpt(mode)} (read or write)`);
      }
      return { verb, volume, path, mode: mode as MapMode };
    }
    case 'ALLOC': {
      arity(verb, args, 3);
      const length = parseNumber(args[2]!);
      if (length < 1) throw new ProtocolError('BADARG', 'length must be at least 1');
      return { verb, lease: parseLease(args[0]!), offset: parseNumber(args[1]!), length };
    }
    case 'COMMIT':
      arity(verb, args, 2);
      return { verb, lease: parseLease(args[0]!), size: parseNumber(args[1]!) };
    case 'RELEASE':
    case 'RETURN':
      arity(verb, args, 1);
      return { verb, lease: parseLease(args[0]!) };
  }
}

function formatTarget(t: LimitTarget): string {
  if ('all' in t) return 'all';
  if ('node' in t) {
    if (!isNodeName(t.node)) throw new ProtocolError('BADARG', `bad node name ${excerpt(t.node)}`);
    return `node=${t.node}`;
  }
  return `volume=${checkVolume(t.volume)}`;
}

function formatLimit(r: Extract<Request, { verb: 'LIMIT' }>): string {
  if (r.op === 'CLEAR') return `LIMIT CLEAR ${formatTarget(r.target)}`;
  if ('all' in r.target) throw new ProtocolError('BADARG', 'LIMIT SET needs a node or a volume');
  if (r.rate === undefined && r.iops === undefined) throw new ProtocolError('BADARG', 'LIMIT SET needs rate= or iops=');
  if ('volume' in r.target && r.iops !== undefined) throw new ProtocolError('BADARG', 'a volume has a rate cap only, no iops limit');
  let line = `LIMIT SET ${formatTarget(r.target)}`;
  if (r.rate !== undefined) line += ` rate=${formatNumber(r.rate)}`;
  if (r.iops !== undefined) line += ` iops=${formatNumber(r.iops)}`;
  return line;
}

function checkVolume(v: string): string {
  if (!isVolumeName(v)) throw new ProtocolError('BADARG', `bad volume name ${excerpt(v)}`);
  return v;
}

/** Formats a request line without LF; validates like parseRequest, so a bad request never leaves the client. */
export function formatRequest(r: Request): string {
  switch (r.verb) {
    case 'HELLO':
      if (!isNodeName(r.node)) throw new ProtocolError('BADARG', `bad node name ${excerpt(r.node)}`);
      if (r.challenge === undefined) return `HELLO ${r.node} ${formatNumber(r.version)}`;
      if (!HEX64_RE.test(r.challenge)) throw new ProtocolError('BADARG', 'challenge must be 64 lower-case hex digits');
      return `HELLO ${r.node} ${formatNumber(r.version)} ${r.challenge}`;
    case 'AUTH':
      if (!HEX64_RE.test(r.proof)) throw new ProtocolError('BADARG', 'proof must be 64 lower-case hex digits');
      return `AUTH ${r.proof}`;
    case 'VOLUMES':
    case 'LIMITS':
    case 'PING':
    case 'QUIT':
      return r.verb;
    case 'GRANT':
      return `GRANT ${checkVolume(r.volume)} ${formatNumber(r.bytes)} ${formatNumber(r.ops)}`;
    case 'LIMIT':
      return formatLimit(r);
    case 'VOLUME':
    case 'PROBE':
      return `${r.verb} ${checkVolume(r.volume)}`;
    case 'UNPROBE':
      return `UNPROBE ${checkVolume(r.volume)} ${encodeBytes(checkFileName(Buffer.from(r.name, 'utf8')))}`;
    case 'MAP':
      if (!MAP_MODES.includes(r.mode)) throw new ProtocolError('BADARG', `unknown MAP mode ${excerpt(String(r.mode))}`);
      return `MAP ${checkVolume(r.volume)} ${encodePath(checkPath(r.path))} ${r.mode}`;
    case 'ALLOC':
      if (!isLeaseId(r.lease)) throw new ProtocolError('BADARG', `bad lease id ${excerpt(r.lease)}`);
      if (r.length < 1) throw new ProtocolError('BADARG', 'length must be at least 1');
      return `ALLOC ${r.lease} ${formatNumber(r.offset)} ${formatNumber(r.length)}`;
    case 'COMMIT':
      if (!isLeaseId(r.lease)) throw new ProtocolError('BADARG', `bad lease id ${excerpt(r.lease)}`);
      return `COMMIT ${r.lease} ${formatNumber(r.size)}`;
    case 'RELEASE':
    case 'RETURN':
      if (!isLeaseId(r.lease)) throw new ProtocolError('BADARG', `bad lease id ${excerpt(r.lease)}`);
      return `${r.verb} ${r.lease}`;
  }
}
