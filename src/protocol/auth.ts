// Mutual challenge-response authentication with per-node keys: HMAC-SHA256 proofs both ways; keys stay home.

import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { HEX64_RE } from './constants.js';

/** Shortest secret accepted, in bytes after trimming. */
export const MIN_SECRET_BYTES = 16;

const hmacHex = (key: Buffer, text: string): string => createHmac('sha256', key).update(text, 'utf8').digest('hex');

/**
 * A node's key: the 64 lower-case hex digits of HMAC-SHA256(master, "fused-node-key-v1\n" + node), as the
 * ASCII bytes both sides use as the HMAC key. Bound to the name, so one node's key cannot speak as another.
 */
export function nodeKey(master: Buffer, node: string): Buffer {
  return Buffer.from(hmacHex(master, `fused-node-key-v1\n${node}`), 'ascii');
}

/** The server's proof in the HELLO reply: it knows this node's key (so it knows the master secret). */
export function serverProof(key: Buffer, serverChallenge: string, clientChallenge: string, node: string, serverNode: string): string {
  return hmacHex(key, `fused-server-v2\n${serverChallenge}\n${clientChallenge}\n${node}\n${serverNode}`);
}

/** The node's proof in AUTH. */
export function clientProof(key: Buffer, serverChallenge: string, clientChallenge: string, node: string): string {
  return hmacHex(key, `fused-auth-v2\n${serverChallenge}\n${clientChallenge}\n${node}`);
}

/** Constant-time compare of a received proof with the expected one; false (never a throw) when malformed. */
export function proofMatches(expected: string, received: string): boolean {
  if (!HEX64_RE.test(received) || !HEX64_RE.test(expected)) return false;
  return timingSafeEqual(Buffer.from(expected, 'hex'), Buffer.from(received, 'hex'));
}

/** 32 random bytes as 64 lower-case hex digits, one per connection and side. */
export function newChallenge(): string {
  return randomBytes(32).toString('hex');
}

export interface SecretError extends Error {
  code: 'ENOSECRET';
  path: string;
}

/** What a secret-bearing file is called in messages. */
export type SecretKind = 'secret file' | 'key file';

function secretError(kind: SecretKind, path: string, reason: string): SecretError {
  return Object.assign(new Error(`${kind} ${path}: ${reason}`), { code: 'ENOSECRET' as const, path });
}

const TRAILING_WS = new Set([0x20, 0x09, 0x0a, 0x0d, 0x0b, 0x0c]);

export interface SecretIo {
  read: (p: string) => Buffer;
  /** Permission bits of the file (the low 12 bits of st_mode). */
  mode: (p: string) => number;
}

const realIo: SecretIo = { read: readFileSync, mode: (p) => statSync(p).mode & 0o7777 };

/**
 * Reads a master secret or a node key (sync, at start-up), trimming trailing white space. Like ssh, a file
 * that group or others may read or write is refused. Throws an Error with code 'ENOSECRET' naming the file
 * and why: missing, unreadable, too open, empty, or shorter than 16 bytes.
 */
export function readSecretFile(path: string, io: Partial<SecretIo> = {}, kind: SecretKind = 'secret file'): Buffer {
  const { read, mode } = { ...realIo, ...io };
  let data: Buffer;
  let bits: number;
  try {
    data = read(path);
    bits = mode(path);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw secretError(kind, path, 'missing');
    throw secretError(kind, path, `unreadable (${code ?? (e as Error).message})`);
  }
  if (bits & 0o077) {
    throw secretError(kind, path, `mode ${bits.toString(8).padStart(4, '0')} lets group or others at it; chmod 600 ${path}`);
  }
  let end = data.length;
  while (end > 0 && TRAILING_WS.has(data[end - 1]!)) end--;
  if (end === 0) throw secretError(kind, path, 'empty');
  if (end < MIN_SECRET_BYTES) throw secretError(kind, path, `too short (${end} bytes, need at least ${MIN_SECRET_BYTES})`);
  return Buffer.from(data.subarray(0, end));
}

/** Reads a node key file: the 64 lower-case hex digits `fusedctl key` prints, mode 0600 or stricter. */
export function readKeyFile(path: string, io: Partial<SecretIo> = {}): Buffer {
  const key = readSecretFile(path, io, 'key file');
  if (!HEX64_RE.test(key.toString('latin1'))) {
    throw secretError('key file', path, 'not a node key (expected the 64 lower-case hex digits fusedctl key prints)');
  }
  return key;
}
