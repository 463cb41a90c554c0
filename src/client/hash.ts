// sha256 of a file, off the main thread (JS hashing on the main thread caps the copy rate).
import { Worker } from 'node:worker_threads';

const WORKER = `
const { workerData, parentPort } = require('node:worker_threads');
const { createHash } = require('node:crypto');
const fs = require('node:fs');
const fd = fs.openSync(Buffer.from(workerData.path), 'r');
const buf = Buffer.allocUnsafe(4 << 20);
const h = createHash('sha256');
let pos = 0, n;
try {
  while ((n = fs.readSync(fd, buf, 0, buf.length, pos)) > 0) { h.update(buf.subarray(0, n)); pos += n; }
} finally { fs.closeSync(fd); }
parentPort.postMessage({ hex: h.digest('hex'), bytes: pos });
`;

export function sha256File(path: Buffer | string): Promise<{ hex: string; bytes: number }> {
  return new Promise((resolve, reject) => {
    const w = new Worker(WORKER, { eval: true, workerData: { path: Buffer.from(path) } });
    w.once('message', resolve);
    w.once('error', reject);
    w.once('exit', (code) => {
      if (code !== 0) reject(new Error(`hash worker exited with ${code}`));
    });
  });
}
