// Option values that recur across commands, parsed strictly.
import { FusedError } from '../errors.js';

/** A whole number in [min, max]; anything else is a usage error naming the option. */
export function parseCount(value: string, option: string, min: number, max: number): number {
  if (!/^\d+$/.test(value)) throw new FusedError('usage', `expected a whole number, got '${value}'`, option);
  const n = Number(value);
  if (n < min || n > max) throw new FusedError('usage', `must be between ${min} and ${max}`, option);
  return n;
}

/** A byte count with an optional binary suffix: 4096, 64K, 4M, 1G, 1T. */
export function parseSize(value: string, option: string): number {
  const m = /^(\d+)([KMGT]i?B?)?$/i.exec(value.trim());
  if (!m) throw new FusedError('usage', `expected a size like 4096, 64K, 4M or 1G, got '${value}'`, option);
  const mult = { '': 1, K: 2 ** 10, M: 2 ** 20, G: 2 ** 30, T: 2 ** 40 }[(m[2] ?? '').charAt(0).toUpperCase()] ?? 1;
  const n = Number(m[1]) * mult;
  if (!Number.isSafeInteger(n)) throw new FusedError('usage', 'too large', option);
  return n;
}
