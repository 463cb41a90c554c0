// Challenge-response authentication: HMAC-SHA256 proofs over the greeting's challenge; the secret stays home.

import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { HEX64_RE } from './constants.js';

/** Shortest secret accepted, in bytes after trimming. */
export const MIN_SECRET_BYTES = 16;

/** Hex HMAC-SHA256(secret, "fused-auth-v1\n" + challenge + "\n" + node). */
export function authProof(secret: Buffer, challenge: string, node: string): string {
  return createHmac('sha256', secret).update(`fused-auth-v1\n${challenge}\n${node}`, 'utf8').digest('hex');
}

/** Constant-time check of a proof; false (never a throw) for anything malformed. */
export function verifyProof(secret: Buffer, challenge: string, node: string, proof: string): boolean {
  if (!HEX64_RE.test(proof)) return false;
  const want = Buffer.from(authProof(secret, challenge, node), 'hex');
  return timingSafeEqual(want, Buffer.from(proof, 'hex'));
}

/** 32 random bytes as 64 lower-case hex digits, one per connection. */
export function newChallenge(): string {
  return randomBytes(32).toString('hex');
}

export interface SecretError extends Error {
  code: 'ENOSECRET';
  path: string;
}

function secretError(path: string, reason: string): SecretError {
  return Object.assign(new Error(`secret file ${path}: ${reason}`), { code: 'ENOSECRET' as const, path });
}

const TRAILING_WS = new Set([0x20, 0x09, 0x0a, 0x0d, 0x0b, 0x0c]);

/**
 * Reads the shared secret (sync, at start-up), trimming trailing white space. Throws an Error with
 * code 'ENOSECRET' naming the file and why: missing, unreadable, empty, or shorter than 16 bytes.
 */
export function readSecretFile(path: string, read: (p: string) => Buffer = readFileSync): Buffer {
  let data: Buffer;
  try {
    data = read(path);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw secretError(path, 'missing');
    throw secretError(path, `unreadable (${code ?? (e as Error).message})`);
  }
  let end = data.length;
  while (end > 0 && TRAILING_WS.has(data[end - 1]!)) end--;
  if (end === 0) throw secretError(path, 'empty');
  if (end < MIN_SECRET_BYTES) throw secretError(path, `too short (${end} bytes, need at least ${MIN_SECRET_BYTES})`);
  return Buffer.from(data.subarray(0, end));
}
