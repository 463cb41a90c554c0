// Drives src/server/allocate.ts (from dist/) for allocate.bats and the zeroing bench; prints one JSON line.
// Usage:
//   node alloc.mjs allocate DIR FILE OFFSET LENGTH [--reserve BYTES] [--warm] [--refilled]
//     DIR: the volume directory (the reserve goes to DIR/.fused); FILE is opened O_RDWR|O_CREAT.
//     --warm: wait until the reserve is full before allocating; --refilled: wait until it is full again after;
//     --settle MS: let the background refill run MS milliseconds after the allocation before closing.
//     --writing MS: hold allocator.writing() (a client writing the device directly) from before the allocation, as
//     the map server does from the write map on, until MS milliseconds after it; "writing" has the stats then.
//     The file is held under a kernel write lease, as the map server holds it; leaseKept says whether allocate()
//     left it alone. Prints {"before":stats,"after":stats,"refilled":stats?,"ms":n,"leaseKept":bool} or
//     {"error":CODE,"message":...} (status 1).
//   node alloc.mjs dontneed FILE     POSIX_FADV_DONTNEED on FILE (drop its page cache, nothing else)
import * as fs from 'node:fs';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';

const root = new URL('../../dist/', import.meta.url);
const { createAllocator } = await import(new URL('server/allocate.js', root));
const { fadvise, getLease, onLeaseBreak, setLease } = await import(new URL('native/index.js', root));

const FS_TYPES = { 0x58465342: 'xfs', 0xef53: 'ext4' };

async function waitFull(allocator, what) {
  const deadline = Date.now() + 300_000;
  while (allocator.stats().reserveBytes < allocator.stats().reserveTarget) {
    if (Date.now() > deadline) throw new Error(`reserve not ${what} after 300 s: ${JSON.stringify(allocator.stats())}`);
    await sleep(20);
  }
}

const [cmd, ...args] = process.argv.slice(2);
if (cmd === 'dontneed') {
  const fd = fs.openSync(args[0], 'r');
  await fadvise(fd, 0, 0, 'dontneed');
  fs.closeSync(fd);
} else if (cmd === 'allocate') {
  const [dir, file, offset, length] = args;
  const opt = (name) => args.includes(name);
  const reserveAt = args.indexOf('--reserve');
  const reserveBytes = reserveAt >= 0 ? Number(args[reserveAt + 1]) : 64 * 1024 * 1024;
  const sfs = fs.statfsSync(dir);
  const volume = { dir, identity: { fstype: FS_TYPES[sfs.type] ?? 'other', blockSize: sfs.bsize } };
  const log = (line) => process.stderr.write(`${line}\n`);
  let allocator;
  try {
    allocator = await createAllocator(volume, { reserveBytes, log });
  } catch (err) {
    console.log(JSON.stringify({ error: err.code ?? 'unknown', message: err.message }));
    process.exit(1);
  }
  let status = 0;
  try {
    if (opt('--warm')) await waitFull(allocator, 'filled');
    const before = allocator.stats();
    const { O_RDWR, O_CREAT, O_NONBLOCK } = fs.constants;
    const fd = fs.openSync(file, O_RDWR | O_CREAT | O_NONBLOCK, 0o644);
    let breaks = 0;
    onLeaseBreak(() => { breaks++; });
    setLease(fd, 'write');
    const writingAt = args.indexOf('--writing');
    const writingDone = writingAt >= 0 ? allocator.writing() : () => {};
    const t0 = performance.now();
    try {
      await allocator.allocate(fd, Number(offset), Number(length));
    } catch (err) {
      console.log(JSON.stringify({ error: err.code ?? 'unknown', message: err.message, stats: allocator.stats() }));
      status = 1;
    }
    const ms = performance.now() - t0;
    // Before the refill adds to the reserve; with what the server's ALLOC reply says it has ready (ready=).
    const after = { ...allocator.stats(), readyBytes: allocator.readyBytes() };
    await sleep(10);  // a break signal is delivered within a millisecond
    const leaseKept = breaks === 0 && getLease(fd) === 'write';
    setLease(fd, 'none');
    fs.closeSync(fd);
    if (status === 0) {
      const out = { before, after, ms, leaseKept };
      if (writingAt >= 0) {
        await sleep(Number(args[writingAt + 1]));
        out.writing = allocator.stats();
        writingDone();
      }
      if (opt('--refilled')) {
        await waitFull(allocator, 'refilled');
        out.refilled = allocator.stats();
      }
      const settleAt = args.indexOf('--settle');
      if (settleAt >= 0) {
        await sleep(Number(args[settleAt + 1]));
        out.settled = allocator.stats();
      }
      console.log(JSON.stringify(out));
    }
  } finally {
    await allocator.close();
  }
  process.exitCode = status;
} else {
  console.error('usage: alloc.mjs allocate DIR FILE OFFSET LENGTH [--reserve BYTES] [--warm] [--refilled] | dontneed FILE');
  process.exitCode = 2;
}
