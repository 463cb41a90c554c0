// Reply, push, data and greeting lines: format (server side) and parse (client side), per fused-protocol(7).

import {
  ERROR_TEXT, EXTENT_STATES, HEX64_RE, isErrorCode, LIMITS, PROTOCOL_VERSION, ProtocolError,
  type ErrorCode, type ExtentState, type WireExtent,
} from './constants.js';
import { decodeBytes, encodeBytes, excerpt, formatNumber, parseNumber } from './encoding.js';

export type Fields = Record<string, string>;

export type ReplyLine =
  | { kind: 'ok'; verb: string; fields: Fields; fieldsRaw: Fields }
  | { kind: 'err'; code: ErrorCode | string; text: string }
  | { kind: 'push'; event: string; fields: Fields; fieldsRaw: Fields }
  | { kind: 'data'; tag: string; rest: string }
  | { kind: 'end' };

const WORD_RE = /^[A-Z]+$/;
const KEY_RE = /^[a-z][a-z0-9_]*$/;
const FLAGS_RE = /^0x(0|[1-9a-f][0-9a-f]{0,7})$/;
// The longest line content: the limit counts the LF.
const MAX_CONTENT = LIMITS.maxLineBytes - 1;

function badLine(what: string, line: string): ProtocolError {
  return new ProtocolError('BADLINE', `${what}: ${excerpt(line, 60)}`);
}

function formatValue(v: string | number | Buffer): string {
  return typeof v === 'number' ? formatNumber(v) : encodeBytes(v);
}

function formatFields(fields: Record<string, string | number | Buffer> | undefined): string {
  let out = '';
  for (const [k, v] of Object.entries(fields ?? {})) {
    if (!KEY_RE.test(k)) throw new RangeError(`bad field key: ${excerpt(k)}`);
    out += ` ${k}=${formatValue(v)}`;
  }
  return out;
}

function fitLine(line: string): string {
  // A reply that cannot be framed must not go out; the server turns this into ERR INTERNAL.
  if (line.length > MAX_CONTENT) throw new ProtocolError('INTERNAL', `reply longer than ${LIMITS.maxLineBytes} bytes`);
  return line;
}

/** `OK VERB key=value ...` without LF; strings are UTF-8, Buffers raw bytes, both path-encoded. */
export function formatOk(verb: string, fields?: Record<string, string | number | Buffer>): string {
  if (!WORD_RE.test(verb)) throw new RangeError(`bad reply word: ${excerpt(verb)}`);
  return fitLine(`OK ${verb}${formatFields(fields)}`);
}

/** `ERR CODE text` without LF; text made printable ASCII on one line, cut to fit, defaulted if empty. */
export function formatErr(code: ErrorCode, text: string): string {
  if (!isErrorCode(code)) throw new RangeError(`not an error code: ${excerpt(String(code))}`);
  let clean = text.replace(/[\t\r\n]+/g, ' ').replace(/[^\x20-\x7e]/g, '?').trim();
  if (clean === '') clean = ERROR_TEXT[code];
  const head = `ERR ${code} `;
  if (head.length + clean.length > MAX_CONTENT) clean = clean.slice(0, MAX_CONTENT - head.length - 3) + '...';
  return head + clean;
}

/** `! EVENT key=value ...` without LF. */
export function formatPush(event: string, fields?: Record<string, string | number>): string {
  if (!WORD_RE.test(event)) throw new RangeError(`bad push event: ${excerpt(event)}`);
  return fitLine(`! ${event}${formatFields(fields)}`);
}

/** `X logical physical length STATE 0xflags` without LF. */
export function formatExtent(e: WireExtent): string {
  if (!(EXTENT_STATES as readonly string[]).includes(e.state)) throw new RangeError(`bad extent state: ${e.state}`);
  if (!Number.isInteger(e.flags) || e.flags < 0 || e.flags > 0xffffffff) throw new RangeError(`bad extent flags: ${e.flags}`);
  if (e.length < 1) throw new RangeError(`empty extent at ${e.logical}`);
  return `X ${formatNumber(e.logical)} ${formatNumber(e.physical)} ${formatNumber(e.length)} ${e.state} 0x${e.flags.toString(16)}`;
}

// The longest X line: "X " + 3 numbers of at most 16 digits + spaces + "NETWORK" + " 0x" + 8 hex digits + LF.
export const MAX_X_LINE = 2 + 3 * 17 + 7 + 3 + 8 + 1;
// ' STATE 0x' per state, as bytes (copied byte by byte: Buffer#copy costs more than a few stores).
const STATE_TEXT: Record<string, Uint8Array> = {
  DATA: Buffer.from(' DATA 0x', 'latin1'),
  ZERO: Buffer.from(' ZERO 0x', 'latin1'),
  HOLE: Buffer.from(' HOLE 0x', 'latin1'),
  NETWORK: Buffer.from(' NETWORK 0x', 'latin1'),
};
const HEX = Buffer.from('0123456789abcdef', 'latin1');
// "00".."99": two digits per division.
const PAIRS = Buffer.from(Array.from({ length: 100 }, (_, i) => String(i).padStart(2, '0')).join(''), 'latin1');
let scratch = Buffer.alloc(1024 * MAX_X_LINE);

/** Extent lines `extents[from..to)` as formatExtent makes them, each with its LF, in one string (see
 *  encodeExtents). */
export function formatExtents(extents: readonly WireExtent[], from = 0, to = extents.length): string {
  if (to - from > 1024) {
    let out = '';
    for (let i = from; i < to; i += 1024) out += formatExtents(extents, i, Math.min(i + 1024, to));
    return out;
  }
  if (scratch.length < (to - from) * MAX_X_LINE) scratch = Buffer.alloc((to - from) * MAX_X_LINE);
  return scratch.toString('latin1', 0, encodeExtents(extents, from, to, scratch, 0));
}

/** Extent lines `extents[from..to)` as formatExtent makes them, each with its LF, written into `buf` at `at`
 *  (room for MAX_X_LINE bytes per extent is the caller's to make); returns the position after them. A map of many
 *  thousand extents is encoded byte by byte, without a string per field (the same checks as formatExtent,
 *  inlined). */
export function encodeExtents(extents: readonly WireExtent[], from: number, to: number, buf: Buffer, at: number): number {
  if (buf.length - at < (to - from) * MAX_X_LINE) throw new RangeError('no room for the extent lines');
  for (let i = from; i < to; i++) {
    const { logical, physical, length, state, flags } = extents[i]!;
    const text = STATE_TEXT[state];
    if (text === undefined || !Object.hasOwn(STATE_TEXT, state)) throw new RangeError(`bad extent state: ${state}`);
    if (!(flags >= 0 && flags <= 0xffffffff && Number.isInteger(flags))) throw new RangeError(`bad extent flags: ${flags}`);
    if (!(length >= 1)) throw new RangeError(`empty extent at ${logical}`);
    if (!isWireNumber(logical) || !isWireNumber(physical) || !isWireNumber(length)) {
      throw new RangeError(`not a wire number in the extent at ${logical}`);
    }
    buf[at++] = 0x58; // X
    buf[at++] = 0x20;
    at = putDecimal(buf, at, logical);
    buf[at++] = 0x20;
    at = putDecimal(buf, at, physical);
    buf[at++] = 0x20;
    at = putDecimal(buf, at, length);
    for (let k = 0; k < text.length; k++) buf[at++] = text[k]!;
    let shift = 28;
    while (shift > 0 && (flags >>> shift) === 0) shift -= 4;
    for (; shift >= 0; shift -= 4) buf[at++] = HEX[(flags >>> shift) & 0xf]!;
    buf[at++] = 0x0a;
  }
  return at;
}

/** Write a non-negative safe integer in decimal at `at`; returns the position after it. */
function putDecimal(buf: Buffer, at: number, n: number): number {
  let digits = 1;
  for (let p = 10; n >= p; p *= 10) digits++; // (p stays exact: a safe integer has at most 16 digits)
  let v = n;
  let k = at + digits;
  while (v >= 100) {
    const q = Math.floor(v / 100);
    const r = (v - q * 100) * 2;
    buf[--k] = PAIRS[r + 1]!;
    buf[--k] = PAIRS[r]!;
    v = q;
  }
  if (v >= 10) {
    buf[--k] = PAIRS[v * 2 + 1]!;
    buf[--k] = PAIRS[v * 2]!;
  } else {
    buf[--k] = 0x30 + v;
  }
  return at + digits;
}

function isWireNumber(n: number): boolean {
  return Number.isSafeInteger(n) && n >= 0;
}

/** `FUSED 2 node=<node> challenge=<64 hex>` without LF. */
export function formatGreeting(node: string, challenge: string): string {
  if (!HEX64_RE.test(challenge)) throw new RangeError('challenge must be 64 lower-case hex digits');
  return `FUSED ${PROTOCOL_VERSION} node=${encodeBytes(node)} challenge=${challenge}`;
}

function parseFields(tokens: string[], line: string): { fields: Fields; fieldsRaw: Fields } {
  const fields: Fields = {};
  const fieldsRaw: Fields = {};
  for (const tok of tokens) {
    const eq = tok.indexOf('=');
    const key = eq < 0 ? tok : tok.slice(0, eq);
    if (eq < 0 || !KEY_RE.test(key)) throw badLine('bad field', line);
    if (Object.hasOwn(fieldsRaw, key)) throw badLine(`duplicate field ${key}`, line);
    const raw = tok.slice(eq + 1);
    let value: string;
    try {
      value = decodeBytes(raw).toString('utf8');
    } catch {
      throw badLine(`bad encoding in field ${key}`, line);
    }
    fields[key] = value;
    fieldsRaw[key] = raw;
  }
  return { fields, fieldsRaw };
}

/** The `key=value` fields of a data line's rest (LIMITS: `N node=... rate=...`); BADLINE if malformed. */
export function parseDataFields(rest: string): Fields {
  return rest === '' ? {} : parseFields(rest.split(' '), rest).fields;
}

/** A data line of `key=value` fields: `N node=cli rate=0 ...` (LIMITS). */
export function formatDataFields(tag: string, fields: Record<string, string | number | Buffer>): string {
  if (!/^[A-Z]$/.test(tag)) throw new RangeError(`bad data tag: ${excerpt(tag)}`);
  return fitLine(`${tag}${formatFields(fields)}`);
}

/** Classifies and parses one line from the server (framed, without LF); BADLINE when it fits no kind. */
export function parseReplyLine(line: string): ReplyLine {
  if (line === 'END') return { kind: 'end' };
  if (line.startsWith('OK ') || line.startsWith('! ')) {
    const tokens = line.slice(line.indexOf(' ') + 1).split(' ');
    const word = tokens[0]!;
    if (!WORD_RE.test(word)) throw badLine('bad reply word', line);
    const { fields, fieldsRaw } = parseFields(tokens.slice(1), line);
    return line[0] === 'O'
      ? { kind: 'ok', verb: word, fields, fieldsRaw }
      : { kind: 'push', event: word, fields, fieldsRaw };
  }
  if (line.startsWith('ERR ')) {
    const rest = line.slice(4);
    const sp = rest.indexOf(' ');
    const code = sp < 0 ? rest : rest.slice(0, sp);
    if (!WORD_RE.test(code)) throw badLine('bad error code', line);
    return { kind: 'err', code, text: sp < 0 ? '' : rest.slice(sp + 1) };
  }
  if (/^[A-Z] /.test(line)) return { kind: 'data', tag: line[0]!, rest: line.slice(2) };
  throw badLine('not a reply line', line);
}

function wireNumber(s: string, line: string, where = 'extent'): number {
  try {
    return parseNumber(s);
  } catch {
    throw badLine(`bad number in ${where}`, line);
  }
}

/** Parses the text after `X `; BADLINE if malformed. */
export function parseExtent(rest: string): WireExtent {
  const t = rest.split(' ');
  if (t.length !== 5) throw badLine('extent needs 5 fields', rest);
  const logical = wireNumber(t[0]!, rest);
  const physical = wireNumber(t[1]!, rest);
  const length = wireNumber(t[2]!, rest);
  const state = t[3]!;
  if (!(EXTENT_STATES as readonly string[]).includes(state)) throw badLine('bad extent state', rest);
  if (!FLAGS_RE.test(t[4]!)) throw badLine('bad extent flags', rest);
  if (length < 1) throw badLine('empty extent', rest);
  if (logical + length > Number.MAX_SAFE_INTEGER) throw badLine('extent end out of range', rest);
  if (state === 'HOLE' && physical !== 0) throw badLine('HOLE extent with a physical offset', rest);
  return { logical, physical, length, state: state as ExtentState, flags: parseInt(t[4]!.slice(2), 16) };
}

/**
 * Parses the first line from the server. An `ERR` line (BUSY) is thrown as a ProtocolError with its code;
 * anything else that is not a greeting is BADLINE. Unknown greeting fields are ignored.
 */
export function parseGreeting(line: string): { version: number; node: string; challenge: string } {
  if (line.startsWith('ERR ')) {
    const r = parseReplyLine(line);
    if (r.kind === 'err') throw new ProtocolError(isErrorCode(r.code) ? r.code : 'BADLINE', r.text || `server said ${r.code}`);
  }
  const tokens = line.split(' ');
  if (tokens[0] !== 'FUSED' || tokens.length < 2) throw badLine('not a fused greeting', line);
  const version = wireNumber(tokens[1]!, line, 'greeting');
  const { fields } = parseFields(tokens.slice(2), line);
  if (fields.node === undefined || fields.node === '') throw badLine('greeting without node', line);
  if (fields.challenge === undefined || !HEX64_RE.test(fields.challenge)) throw badLine('greeting without a valid challenge', line);
  return { version, node: fields.node, challenge: fields.challenge };
}
