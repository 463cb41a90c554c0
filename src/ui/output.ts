// Bulk data to standard output without ever blocking the event loop (recalls and lease deadlines need it).
import { write as fsWrite } from 'node:fs';
import { errnoCode } from '../errors.js';

/** Node writes files and terminals on stdout synchronously: a stalled reader would stop the event loop. This
 *  writer hands each write to the libuv thread pool instead (fs.write on the fd, at its current offset), one at
 *  a time, so order is kept and the caller's buffer is free again when write() resolves. Should the fd be
 *  non-blocking (Node makes a pipe's fd so when it sets up process.stdout), a full pipe gives EAGAIN: from then
 *  on the stream itself writes, which waits for the pipe in the event loop rather than blocking it. */
export class BulkOutput {
  private viaStream = false;

  constructor(
    private readonly fd = 1,
    private readonly stream: NodeJS.WritableStream = process.stdout,
  ) {}

  /** Write all of `data`; rejects with the system error (EPIPE when the reader went away). */
  async write(data: Buffer): Promise<void> {
    let off = 0;
    while (off < data.length && !this.viaStream) {
      try {
        off += await writeSome(this.fd, data, off);
      } catch (err) {
        if (errnoCode(err) !== 'EAGAIN') throw err;
        this.viaStream = true;
      }
    }
    if (off < data.length) await this.streamWrite(data.subarray(off));
  }

  private streamWrite(data: Buffer): Promise<void> {
    return new Promise((resolve, reject) => {
      this.stream.write(data, (err?: Error | null) => (err ? reject(err) : resolve()));
    });
  }
}

function writeSome(fd: number, data: Buffer, off: number): Promise<number> {
  return new Promise((resolve, reject) => {
    fsWrite(fd, data, off, data.length - off, null, (err, n) => (err ? reject(err) : resolve(n)));
  });
}
