// Byte rates on the command line (--limit RATE), like pv -L: 800K, 25M, 1.5G, 800MiB/s.
import { FusedError } from '../errors.js';

const UNITS: Readonly<Record<string, number>> = {
  '': 1, B: 1,
  K: 1e3, KB: 1e3, M: 1e6, MB: 1e6, G: 1e9, GB: 1e9, T: 1e12, TB: 1e12,
  KIB: 2 ** 10, MIB: 2 ** 20, GIB: 2 ** 30, TIB: 2 ** 40,
};

/** Bytes per second from `25M`, `1.5G`, `800MiB/s`, `4096`: K/M/G/T are powers of 10, KiB/MiB/GiB/TiB of 2,
 *  an optional trailing `/s`. At least 1 byte per second; anything else is a usage error naming the option. */
export function parseRate(value: string, option: string): number {
  const m = /^(\d+(?:\.\d+)?|\.\d+)\s*([kmgt]i?b?|b)?(\/s)?$/i.exec(value.trim());
  const mult = m ? UNITS[(m[2] ?? '').toUpperCase()] : undefined;
  if (!m || mult === undefined) {
    throw new FusedError('usage', `expected a rate like 25M, 1.5G or 800MiB/s (K, M, G = 10^3, 10^6, 10^9; KiB, MiB, GiB = 2^10, 2^20, 2^30), got '${value}'`, option);
  }
  const n = Math.floor(Number(m[1]) * mult);
  if (n < 1) throw new FusedError('usage', 'must be at least 1 byte per second', option);
  if (!Number.isSafeInteger(n)) throw new FusedError('usage', 'too large', option);
  return n;
}
