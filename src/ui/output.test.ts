// Unit tests for BulkOutput: a stalled reader does not stop the event loop; order and bytes are kept; EPIPE.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, open, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Writable } from 'node:stream';
import { BulkOutput } from './output.js';

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const CHUNK = 4 << 20;

/** Write `data` in CHUNK pieces, reusing one buffer (as the reader does); count timer ticks meanwhile. */
async function pour(out: BulkOutput, data: Buffer): Promise<number> {
  let ticks = 0;
  const timer = setInterval(() => ticks++, 20);
  const buf = Buffer.alloc(CHUNK);
  try {
    for (let off = 0; off < data.length; off += CHUNK) {
      const n = data.copy(buf, 0, off, off + CHUNK);
      await out.write(buf.subarray(0, n));
      buf.fill(0xee); // reused at once: the write must be complete
    }
  } finally {
    clearInterval(timer);
  }
  return ticks;
}

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'fused-output-'));
  try {
    await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

test('a blocking fd whose reader stalls: the event loop keeps running, bytes arrive in order', () =>
  withDir(async (dir) => {
    const fifo = join(dir, 'fifo');
    const copy = join(dir, 'copy');
    assert.equal(spawnSync('mkfifo', [fifo]).status, 0);
    // The reader opens the FIFO at once but passes bytes on only after a second: until then, once the pipes
    // between are full, every write blocks in the kernel.
    const reader = spawn('sh', ['-c', 'cat "$0" | { sleep 1; cat >"$1"; }', fifo, copy]);
    const done = new Promise<number | null>((resolve) => reader.on('exit', resolve));
    const t0 = Date.now();
    const fh = await open(fifo, 'w'); // a blocking descriptor, as a file or a terminal is
    const data = randomBytes(16 << 20);
    const ticks = await pour(new BulkOutput(fh.fd), data);
    await fh.close();
    assert.equal(await done, 0);
    assert.ok(Date.now() - t0 >= 900, 'the reader was not stalled');
    // ~50 ticks a second if the loop is free; none while a synchronous write blocks it.
    assert.ok(ticks >= 20, `only ${ticks} timer ticks while the reader stalled`);
    assert.equal(sha(await readFile(copy)), sha(data));
  }));

test('a non-blocking pipe that fills up: the rest goes through the stream, bytes in order', () =>
  withDir(async (dir) => {
    const copy = join(dir, 'copy');
    const reader = spawn('sh', ['-c', 'sleep 1; cat >"$0"', copy], { stdio: ['pipe', 'ignore', 'inherit'] });
    const done = new Promise<number | null>((resolve) => reader.on('exit', resolve));
    const stdin = reader.stdin as Writable & { _handle: { fd: number } };
    const data = randomBytes(16 << 20);
    const ticks = await pour(new BulkOutput(stdin._handle.fd, stdin), data);
    stdin.end();
    assert.equal(await done, 0);
    assert.ok(ticks >= 20, `only ${ticks} timer ticks while the reader stalled`);
    assert.equal(sha(await readFile(copy)), sha(data));
  }));

test('a pipe whose reader goes away: write rejects with EPIPE', () =>
  withDir(async (dir) => {
    const fifo = join(dir, 'fifo');
    assert.equal(spawnSync('mkfifo', [fifo]).status, 0);
    const reader = spawn('head', ['-c', '1', fifo], { stdio: ['ignore', 'ignore', 'inherit'] });
    const fh = await open(fifo, 'w');
    try {
      await assert.rejects(new BulkOutput(fh.fd).write(randomBytes(4 << 20)), { code: 'EPIPE' });
    } finally {
      await fh.close();
      reader.kill();
    }
  }));
