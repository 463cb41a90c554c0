// Error and status lines as people read them: `CMD: THING: reason`.
import { FusedError, errorMessage } from '../errors.js';

export function formatError(command: string, err: unknown): string {
  if (err instanceof FusedError) {
    return err.subject ? `${command}: ${err.subject}: ${err.message}` : `${command}: ${err.message}`;
  }
  return `${command}: ${errorMessage(err)}`;
}

/** 1536 -> "1.5 KiB" (binary units, like ls -h). */
export function humanBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${Math.round(n)} B` : `${v < 10 ? v.toFixed(1) : Math.round(v)} ${units[i]}`;
}

/** Print JSON for scripts: one document, newline-terminated. */
export function jsonOut(value: unknown): string {
  return JSON.stringify(value, null, 2) + '\n';
}
