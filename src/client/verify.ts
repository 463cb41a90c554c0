// fusedmap --verify: the bytes a map points at on the device must equal the file's bytes through the mount.
import { open } from 'node:fs/promises';
import { FusedError } from '../errors.js';
import { alignedBuffer } from '../native/index.js';
import { Device, ALIGN } from './device.js';
import type { FileMap } from './session.js';

export interface Mismatch { extent: number; offset: number; length: number }
export interface VerifyResult { ok: boolean; checkedBytes: number; mismatches: Mismatch[] }

const CHUNK = 4 * 1024 * 1024;

/** Compare every DATA extent; `lost()` is asked between chunks and a reason stops the comparison (a recall:
 *  the file is changing, so a difference would prove nothing). */
export async function verifyMap(device: Device, mountPath: Buffer, map: FileMap, lost: () => string | null = () => null): Promise<VerifyResult> {
  const scratch = alignedBuffer(CHUNK + 2 * ALIGN);
  const viaMount = Buffer.allocUnsafe(CHUNK);
  const fh = await open(mountPath, 'r');
  const mismatches: Mismatch[] = [];
  let checkedBytes = 0;
  try {
    for (const [index, e] of map.extents.entries()) {
      if (e.state !== 'DATA') continue;
      for (let off = 0; off < e.length; off += CHUNK) {
        const why = lost();
        if (why) throw new FusedError('failure', `changed while verifying (${why})`);
        const len = Math.min(CHUNK, e.length - off);
        const fromDevice = await device.readInto(scratch, e.physical + off, len);
        let got = 0;
        while (got < len) {
          const { bytesRead } = await fh.read(viaMount, got, len - got, e.logical + off + got);
          if (bytesRead === 0) break;
          got += bytesRead;
        }
        checkedBytes += len;
        if (got !== len || !fromDevice.equals(viaMount.subarray(0, len))) {
          let at = 0;
          while (at < got && fromDevice[at] === viaMount[at]) at++;
          mismatches.push({ extent: index, offset: e.logical + off + at, length: len - at });
          break; // one report per extent is enough
        }
      }
    }
  } finally {
    await fh.close();
  }
  return { ok: mismatches.length === 0, checkedBytes, mismatches };
}
