// Path encoding (percent-encoding of every byte but a safe set), path rules, and strict numbers.

import { LIMITS, ProtocolError } from './constants.js';

const SAFE = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~/!$&'()*+,;:@";

// Byte -> its wire form, built once: encoding is on the path of every MAP and every field.
const ENCODED: string[] = [];
const IS_SAFE = new Uint8Array(256);
for (let b = 0; b < 256; b++) {
  const c = String.fromCharCode(b);
  IS_SAFE[b] = SAFE.includes(c) ? 1 : 0;
  ENCODED.push(IS_SAFE[b] ? c : '%' + b.toString(16).toUpperCase().padStart(2, '0'));
}

/** Every character of `s` is in SAFE (so each is one byte in UTF-8, and encodes as itself). */
function allSafe(s: string): boolean {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c > 0x7f || IS_SAFE[c] === 0) return false;
  }
  return true;
}

function hexValue(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  if (c >= 0x41 && c <= 0x46) return c - 0x41 + 10;
  if (c >= 0x61 && c <= 0x66) return c - 0x61 + 10;
  return -1;
}

/** A short printable excerpt of untrusted input, for error texts. */
export function excerpt(s: string, max = 40): string {
  const clean = s.replace(/[^\x20-\x7e]/g, '?');
  return clean.length > max ? clean.slice(0, max) + '...' : clean;
}

/** Encodes bytes (a string is taken as UTF-8) in the canonical wire form; never contains a space. */
export function encodeBytes(b: Buffer | string): string {
  // A string of safe characters only (a lease id, a number, a plain name) is its own wire form: no conversion to
  // UTF-8 bytes and back (most reply fields are such strings; this was most of a MAP head's formatting).
  if (typeof b === 'string' && allSafe(b)) return b;
  const buf = typeof b === 'string' ? Buffer.from(b, 'utf8') : b;
  let out = '';
  for (let i = 0; i < buf.length; i++) out += ENCODED[buf[i]!];
  return out;
}

/** Decodes the wire form; a bad `%` escape or a byte that should have been escaped is BADARG. */
export function decodeBytes(s: string): Buffer {
  const out = Buffer.allocUnsafe(s.length);
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c === 0x25) {
      const hi = i + 2 < s.length ? hexValue(s.charCodeAt(i + 1)) : -1;
      const lo = i + 2 < s.length ? hexValue(s.charCodeAt(i + 2)) : -1;
      if (hi < 0 || lo < 0) {
        throw new ProtocolError('BADARG', `bad percent-encoding at offset ${i} in ${excerpt(s)}`);
      }
      out[n++] = hi * 16 + lo;
      i += 2;
    } else if (c < 256 && IS_SAFE[c]) {
      out[n++] = c;
    } else {
      throw new ProtocolError('BADARG', `byte that must be %-encoded at offset ${i} in ${excerpt(s)}`);
    }
  }
  return out.subarray(0, n);
}

/** Same as encodeBytes: a path is just bytes on the wire. */
export function encodePath(p: Buffer | string): string {
  return encodeBytes(p);
}

/**
 * Checks a decoded path against the path rules and returns it normalised (no empty or `.` components).
 * BADPATH when empty, absolute, with NUL or a `..` component, longer than LIMITS.maxPathBytes, or naming the root.
 */
export function checkPath(raw: Buffer): Buffer {
  if (raw.length === 0) throw new ProtocolError('BADPATH', 'empty path');
  if (raw.length > LIMITS.maxPathBytes) {
    throw new ProtocolError('BADPATH', `path longer than ${LIMITS.maxPathBytes} bytes`);
  }
  if (raw.includes(0)) throw new ProtocolError('BADPATH', 'path contains a NUL byte');
  if (raw[0] === 0x2f) throw new ProtocolError('BADPATH', 'path is absolute');
  // latin1 maps bytes 1:1 to code units, so splitting on '/' is a byte split.
  const parts = raw.toString('latin1').split('/').filter((c) => c !== '' && c !== '.');
  if (parts.includes('..')) throw new ProtocolError('BADPATH', 'path has a .. component');
  if (parts.length === 0) throw new ProtocolError('BADPATH', 'path names the volume root');
  return Buffer.from(parts.join('/'), 'latin1');
}

/** Decodes and checks a path: BADARG for bad encoding, BADPATH for the path rules; returns it normalised. */
export function decodePath(s: string): Buffer {
  return checkPath(decodeBytes(s));
}

const NUMBER_RE = /^(0|[1-9][0-9]{0,15})$/;

/** Strict decimal: digits only, no sign or leading zeros, at most 2^53-1; else BADARG. */
export function parseNumber(s: string): number {
  if (!NUMBER_RE.test(s)) throw new ProtocolError('BADARG', `not a number: ${excerpt(s)}`);
  const n = Number(s);
  if (n > Number.MAX_SAFE_INTEGER) throw new ProtocolError('BADARG', `number out of range: ${excerpt(s)}`);
  return n;
}

/** Formats a number for the wire; a negative, fractional or unsafe number is a programming error. */
export function formatNumber(n: number): string {
  if (!Number.isSafeInteger(n) || n < 0) throw new RangeError(`not a wire number: ${n}`);
  return String(n);
}
