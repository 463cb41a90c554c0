// Unit tests for the copier's temporary files: discarded on demand mid-copy (a signal), never left after a copy.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Copier, type FileResult } from './copy.js';
import type { FileReader, ReadReport, Sink } from './reader.js';

const OPTS = { recursive: false, preserve: false, noClobber: false, force: false, verify: false };

/** A reader that delivers one chunk, then waits until `go()` before finishing the file. */
function stalledReader() {
  let go!: () => void;
  const gate = new Promise<void>((resolve) => (go = resolve));
  let started!: () => void;
  const midway = new Promise<void>((resolve) => (started = resolve));
  const reader = {
    async read(_file: Buffer, sink: Sink): Promise<ReadReport> {
      await sink.write({ offset: 0, data: Buffer.from('first half '), kind: 'network' });
      started();
      await gate;
      await sink.write({ offset: 11, data: Buffer.from('second half'), kind: 'network' });
      return { size: 22, path: 'network', reason: null, fallback: false, bytesDirect: 0, bytesZero: 0, bytesNetwork: 22, interrupted: false, changed: false };
    },
  } as unknown as FileReader;
  return { reader, midway, go };
}

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'fused-copy-'));
  try {
    await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

test('discardTemporaries removes the temporary file of a copy in progress; nothing gets the final name', () =>
  withDir(async (dir) => {
    const src = join(dir, 'src.bin');
    await writeFile(src, 'x'.repeat(22));
    const { reader, midway, go } = stalledReader();
    const results: FileResult[] = [];
    const copier = new Copier(reader, OPTS, { file: (r) => results.push(r) });
    const running = copier.run([Buffer.from(src)], Buffer.from(join(dir, 'dst.bin')));
    await midway;
    const temps = (await readdir(dir)).filter((n) => /^\.dst\.bin\.fused-[0-9a-f]{8}$/.test(n));
    assert.equal(temps.length, 1, 'a temporary file while copying');
    assert.equal(copier.discardTemporaries(), 1);
    go();
    await running;
    // The copy could not be renamed into place: it failed, and left neither name behind.
    assert.equal(results.length, 1);
    assert.equal(results[0]!.status, 'failed');
    assert.deepEqual(await readdir(dir), ['src.bin']);
    assert.equal(copier.discardTemporaries(), 0);
  }));

test('after a finished copy there is no temporary file left to discard', () =>
  withDir(async (dir) => {
    const src = join(dir, 'src.bin');
    await writeFile(src, 'x'.repeat(22));
    const { reader, midway, go } = stalledReader();
    const results: FileResult[] = [];
    const copier = new Copier(reader, OPTS, { file: (r) => results.push(r) });
    const running = copier.run([Buffer.from(src)], Buffer.from(join(dir, 'dst.bin')));
    await midway;
    go();
    await running;
    assert.equal(results[0]!.status, 'copied');
    assert.equal(copier.discardTemporaries(), 0);
    assert.deepEqual((await readdir(dir)).sort(), ['dst.bin', 'src.bin']);
  }));
