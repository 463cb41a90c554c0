// Command-line arguments as the raw bytes the kernel passed: file names need not be UTF-8.
import { readFileSync } from 'node:fs';

let raw: Buffer[] | undefined;

function rawArgs(): Buffer[] {
  if (raw) return raw;
  const userArgs = process.argv.length - 2;
  try {
    const parts = readFileSync('/proc/self/cmdline');
    const all: Buffer[] = [];
    let start = 0;
    for (let i = 0; i < parts.length; i++) {
      if (parts[i] === 0) {
        all.push(parts.subarray(start, i));
        start = i + 1;
      }
    }
    raw = all.slice(all.length - userArgs);
  } catch {
    raw = process.argv.slice(2).map((a) => Buffer.from(a));
  }
  return raw;
}

/** The raw bytes of an argument Node decoded (lossily, if it was not UTF-8) into `s`. */
export function argBytes(s: string): Buffer {
  const plain = Buffer.from(s);
  if (!s.includes('\uFFFD')) return plain;
  return rawArgs().find((b) => b.toString() === s) ?? plain;
}

/** A file name for messages: printable, with control characters escaped like `ls -b`. */
export function displayName(name: Buffer | string): string {
  const s = typeof name === 'string' ? name : name.toString();
  return s.replace(/[\x00-\x1f\x7f]/g, (c) => `\\${c.charCodeAt(0).toString(8).padStart(3, '0')}`);
}
