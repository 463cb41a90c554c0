// Byte rates as people type them (200M, 1.5G, 800MiB/s) and as they read them: SI (decimal) and IEC (binary) units.
import { FusedError } from '../errors.js';
import { humanBytes } from './messages.js';

const PREFIX: Record<string, number> = { '': 0, K: 1, M: 2, G: 3, T: 4 };
const RATE_RE = /^(\d+(?:\.\d+)?)([KMGT]?)(i?)(B?)(\/s)?$/i;

export const RATE_HELP = 'bytes per second: 123, 100k, 200M, 1.5G (K, M, G, T = 10^3, 10^6, 10^9, 10^12), 800MiB/s (KiB, MiB, GiB, TiB = 2^10, 2^20, 2^30, 2^40); B and /s optional; 0 = unlimited';

/**
 * Parses a byte rate: a number (fraction allowed with a unit), an optional unit K M G T (powers of 1000, as rsync's
 * KB, MB; pv and a bare rsync K take 1024) or KiB MiB GiB TiB (powers of 1024), an optional B, an optional /s.
 * Rounds to whole bytes per second. A lower-case b (bits) is refused rather than guessed.
 */
export function parseRate(value: string, option: string): number {
  const bad = (why: string) => new FusedError('usage', `'${value}': ${why}`, option);
  const m = RATE_RE.exec(value.trim());
  if (!m) {
    if (/^\d+(\.\d+)?[KMGT]?i?b(\/s)?$/i.test(value.trim())) throw bad("a lower-case b means bits; write B for bytes (or no unit)");
    const unit = /^\d+(?:\.\d+)?(.*)$/.exec(value.trim())?.[1];
    throw bad(unit !== undefined && unit !== '' ? `unknown unit '${unit}' (${RATE_HELP})` : `not a rate (${RATE_HELP})`);
  }
  const [, num, prefix, binary, byte] = m;
  if (byte === 'b') throw bad("a lower-case b means bits; write B for bytes (or no unit)");
  if (binary && !prefix) throw bad(`unknown unit 'i${byte}' (${RATE_HELP})`);
  if (num!.includes('.') && !prefix) throw bad('a fraction needs a unit (1.5M), rates are whole bytes per second');
  const base = binary ? 1024 : 1000;
  const n = Math.round(Number(num) * base ** PREFIX[prefix!.toUpperCase()]!);
  if (!Number.isSafeInteger(n)) throw bad('too large');
  return n;
}

/** 52428800 -> "50 MiB/s"; 0 -> "unlimited". */
export function formatRate(bytesPerSecond: number): string {
  return bytesPerSecond === 0 ? 'unlimited' : `${humanBytes(bytesPerSecond)}/s`;
}
