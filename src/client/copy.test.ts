// Unit tests for the copier: temporary files discarded on demand mid-copy (a signal), never left after a copy;
// -j: at most N files at once (at most LARGE_AT_ONCE large ones), results in walk order, one failing file stops no
// other; modes of new copies; a trailing hole counts in the size.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { chmod, mkdir, mkdtemp, open, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Copier, DestinationError, InOrder, LARGE_AT_ONCE, LARGE_FILE, Slots, type FileResult } from './copy.js';
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

test('InOrder delivers results in the order places were taken, whatever order they are filled in', () => {
  const got: string[] = [];
  const order = new InOrder<string>((s) => got.push(s));
  const [a, b, c, d] = [order.place(), order.place(), order.place(), order.place()];
  c('c');
  assert.deepEqual(got, []);
  b(); // a place with no results (a directory that went well)
  d('d1', 'd2');
  assert.deepEqual(got, []);
  a('a');
  assert.deepEqual(got, ['a', 'c', 'd1', 'd2']);
  assert.throws(() => a('again'), /filled twice/);
});

test('Slots runs at most N tasks at once; with one slot, start() returns when the task is done', async () => {
  for (const size of [1, 3]) {
    const slots = new Slots(size);
    let running = 0;
    let most = 0;
    const log: number[] = [];
    const done: Promise<void>[] = [];
    for (let i = 0; i < 10; i++) {
      const started = await slots.start(async () => {
        most = Math.max(most, ++running);
        await new Promise((r) => setTimeout(r, (i * 7) % 5));
        running--;
        log.push(i);
      });
      if (size === 1) assert.equal(log.length, i + 1, 'one slot: the task is done before the walk goes on');
      done.push(started.done);
    }
    await Promise.all(done);
    assert.equal(most, size);
    assert.equal(log.length, 10);
  }
});

/** A reader that copies through the file system, slower for names in `slow`, failing for names in `bad`. */
function treeReader(slow: Set<string>, bad: Set<string>) {
  let running = 0;
  let most = 0;
  const reader = {
    async read(file: Buffer, sink: Sink): Promise<ReadReport> {
      most = Math.max(most, ++running);
      try {
        const name = file.toString().split('/').at(-1)!;
        await new Promise((r) => setTimeout(r, slow.has(name) ? 40 : 1));
        if (bad.has(name)) throw new Error('unreadable');
        const data = await readFile(file.toString());
        await sink.write({ offset: 0, data, kind: 'network' });
        return { size: data.length, path: 'network', reason: null, fallback: false, bytesDirect: 0, bytesZero: 0, bytesNetwork: data.length, interrupted: false, changed: false };
      } finally {
        running--;
      }
    },
  } as unknown as FileReader;
  return { reader, most: () => most };
}

test('-j 4 copies a tree several files at once, reports every file once in walk order, and one failure stops no other', () =>
  withDir(async (dir) => {
    const src = join(dir, 'src');
    const walk: string[] = [];
    for (const sub of ['', 'a/', 'a/b/', 'c/']) {
      await mkdir(join(src, sub), { recursive: true });
      for (let i = 0; i < 6; i++) await writeFile(join(src, sub, `f${i}`), `${sub}${i}`);
    }
    // Walk order: names sorted bytewise, depth first: a/ (its b/ before its files, 'b' < 'f'), c/, then the top's files.
    for (const sub of ['a/b/', 'a/', 'c/', '']) for (let i = 0; i < 6; i++) walk.push(`${sub}f${i}`);
    const { reader, most } = treeReader(new Set(['f0', 'f3']), new Set(['f4']));
    const results: FileResult[] = [];
    const copier = new Copier(reader, { ...OPTS, recursive: true, jobs: 4 }, { file: (r) => results.push(r) });
    await copier.run([Buffer.from(src)], Buffer.from(join(dir, 'dst')));
    assert.deepEqual(results.map((r) => r.source.toString().slice(src.length + 1)), walk);
    assert.ok(most() > 1 && most() <= 4, `copies at once: ${most()}`);
    for (const r of results) {
      const rel = r.source.toString().slice(src.length + 1);
      if (rel.endsWith('f4')) {
        assert.equal(r.status, 'failed');
        await assert.rejects(readFile(join(dir, 'dst', rel)), { code: 'ENOENT' });
      } else {
        assert.equal(r.status, 'copied', rel);
        assert.equal(await readFile(join(dir, 'dst', rel), 'utf8'), rel.replace(/f(\d)$/, '$1'));
      }
    }
    // No temporary left anywhere.
    const left = (await readdir(join(dir, 'dst'), { recursive: true })).filter((n) => n.includes('.fused-'));
    assert.deepEqual(left, []);
  }));

test('--checksum: the checksum is of the bytes as copied; a restart starts it again; --verify reads the copy back', () =>
  withDir(async (dir) => {
    const reader = {
      async read(_file: Buffer, sink: Sink): Promise<ReadReport> {
        await sink.write({ offset: 0, data: Buffer.from('stale bytes '), kind: 'direct' });
        await sink.restart!(); // recalled: everything again, through the mount
        await sink.write({ offset: 0, data: Buffer.from('fresh '), kind: 'network' });
        await sink.write({ offset: 6, data: Buffer.alloc(10), kind: 'zero' });
        return { size: 16, path: 'network', reason: 'recalled', fallback: true, bytesDirect: 0, bytesZero: 10, bytesNetwork: 6, interrupted: true, changed: false };
      },
    } as unknown as FileReader;
    const src = join(dir, 'src');
    await writeFile(src, 'whatever');
    const results: FileResult[] = [];
    const copier = new Copier(reader, { ...OPTS, verify: true, checksum: 'md5' }, { file: (r) => results.push(r) });
    await copier.run([Buffer.from(src)], Buffer.from(join(dir, 'dst')));
    const expected = createHash('md5').update(Buffer.concat([Buffer.from('fresh '), Buffer.alloc(10)])).digest('hex');
    assert.equal(results[0]?.status, 'copied', String(results[0]?.error));
    assert.deepEqual(results[0]?.checksum, { type: 'md5', value: expected });
    assert.equal(results[0]?.verified, true);
  }));

test('-j 16: at most LARGE_AT_ONCE files over LARGE_FILE bytes are copied at once, small ones beside them', () =>
  withDir(async (dir) => {
    const src = join(dir, 'src');
    await mkdir(src);
    for (let i = 0; i < 8; i++) await writeFile(join(src, `big${i}`), Buffer.alloc(LARGE_FILE + 1, i));
    for (let i = 0; i < 8; i++) await writeFile(join(src, `small${i}`), `s${i}`);
    let large = 0;
    let mostLarge = 0;
    let running = 0;
    let most = 0;
    const reader = {
      async read(file: Buffer, sink: Sink): Promise<ReadReport> {
        const big = file.toString().includes('big');
        most = Math.max(most, ++running);
        if (big) mostLarge = Math.max(mostLarge, ++large);
        try {
          await new Promise((r) => setTimeout(r, big ? 30 : 10));
          const data = await readFile(file.toString());
          await sink.write({ offset: 0, data, kind: 'network' });
          return { size: data.length, path: 'network', reason: null, fallback: false, bytesDirect: 0, bytesZero: 0, bytesNetwork: data.length, interrupted: false, changed: false };
        } finally {
          running--;
          if (big) large--;
        }
      },
    } as unknown as FileReader;
    const results: FileResult[] = [];
    await new Copier(reader, { ...OPTS, recursive: true, jobs: 16 }, { file: (r) => results.push(r) }).run([Buffer.from(src)], Buffer.from(join(dir, 'dst')));
    assert.equal(results.filter((r) => r.status === 'copied').length, 16);
    assert.equal(mostLarge, LARGE_AT_ONCE, `large files at once: ${mostLarge}`);
    assert.ok(most > LARGE_AT_ONCE, `files at once: ${most}`);
    for (let i = 0; i < 8; i++) assert.ok((await readFile(join(dir, 'dst', `big${i}`))).equals(Buffer.alloc(LARGE_FILE + 1, i)));
  }));

test('a new copy gets the source\'s mode as cp gives it (umask applied), read-only sources too; a trailing run of zeros left as a hole still counts in the size', () =>
  withDir(async (dir) => {
    const umask = process.umask();
    const cases: [string, number][] = [['rw', 0o640], ['exec', 0o755], ['ro', 0o444], ['wo', 0o200]];
    for (const [name, mode] of cases) {
      await writeFile(join(dir, name), 'x'.repeat(10));
      await chmod(join(dir, name), mode);
    }
    await writeFile(join(dir, 'tail0'), Buffer.concat([Buffer.from('head'), Buffer.alloc(8192)]));
    // The reader hands the zero tail as a zero chunk (as the direct path does for ZERO/HOLE ranges): not written.
    const reader = {
      async read(file: Buffer, sink: Sink): Promise<ReadReport> {
        const data = await readFile(file.toString());
        const head = data.subarray(0, data.length > 4096 ? 4 : data.length);
        await sink.write({ offset: 0, data: head, kind: 'network' });
        if (data.length > head.length) await sink.write({ offset: head.length, data: data.subarray(head.length), kind: 'zero' });
        return { size: data.length, path: 'network', reason: null, fallback: false, bytesDirect: 0, bytesZero: data.length - head.length, bytesNetwork: head.length, interrupted: false, changed: false };
      },
    } as unknown as FileReader;
    const out = join(dir, 'out');
    await mkdir(out);
    const results: FileResult[] = [];
    const copier = new Copier(reader, OPTS, { file: (r) => results.push(r) });
    await copier.run([...cases.map(([n]) => Buffer.from(join(dir, n))), Buffer.from(join(dir, 'tail0'))], Buffer.from(out));
    assert.deepEqual(results.map((r) => r.status), ['copied', 'copied', 'copied', 'copied', 'copied']);
    for (const [name, mode] of cases) {
      assert.equal((await stat(join(out, name))).mode & 0o7777, mode & ~umask, name);
      if (mode & 0o400) assert.equal(await readFile(join(out, name), 'utf8'), 'x'.repeat(10));
    }
    const tail = await readFile(join(out, 'tail0'));
    assert.equal(tail.length, 4 + 8192);
    assert.ok(tail.equals(Buffer.concat([Buffer.from('head'), Buffer.alloc(8192)])));
  }));

test('a large new local copy gets its blocks before the first write (fallocate); blocks past a shorter end are given back', () =>
  withDir(async (dir) => {
    const size = LARGE_FILE * 5; // 40 MiB: over the write-behind size, where preallocation starts
    const src = join(dir, 'big.bin');
    await writeFile(src, randomBytes(size));
    const seen: number[] = [];
    // Delivers the file in 4 MiB chunks; for 'short' it stops at half (the file shrank while it was read).
    const reader = (short: boolean) => ({
      async read(file: Buffer, sink: Sink): Promise<ReadReport> {
        const data = await readFile(file.toString());
        const end = short ? size / 2 : size;
        for (let at = 0; at < end; at += 4 * 1024 * 1024) {
          await sink.write({ offset: at, data: data.subarray(at, at + 4 * 1024 * 1024), kind: 'network' });
          if (at === 0) {
            const temp = (await readdir(join(dir, 'out'))).find((n) => n.includes('.fused-'))!;
            seen.push((await stat(join(dir, 'out', temp))).blocks * 512);
          }
        }
        return { size: end, path: 'network', reason: null, fallback: false, bytesDirect: 0, bytesZero: 0, bytesNetwork: end, interrupted: false, changed: false };
      },
    }) as unknown as FileReader;
    await mkdir(join(dir, 'out'));
    for (const short of [false, true]) {
      const results: FileResult[] = [];
      const dst = join(dir, 'out', short ? 'short.bin' : 'whole.bin');
      await new Copier(reader(short), OPTS, { file: (r) => results.push(r) }).run([Buffer.from(src)], Buffer.from(dst));
      assert.equal(results[0]!.status, 'copied');
      const st = await stat(dst);
      const want = short ? size / 2 : size;
      assert.equal(st.size, want);
      assert.ok((await readFile(dst)).equals((await readFile(src)).subarray(0, want)));
      // Every block allocated after the first 4 MiB were written: preallocated, not grown write by write.
      assert.ok(seen.at(-1)! >= size, `allocated after the first write: ${seen.at(-1)} of ${size}`);
      // None left past the end (the file system's own metadata blocks aside: at most 1 MiB).
      assert.ok(st.blocks * 512 <= want + 1024 * 1024, `${st.blocks * 512} bytes allocated for ${want}`);
    }
  }));

test('a sparse source stays sparse in a local copy: a source that says so is not preallocated, and zeros delivered where blocks were preallocated become holes again', () =>
  withDir(async (dir) => {
    const size = LARGE_FILE * 5; // 40 MiB: over the write-behind size, where preallocation starts
    const MiB = 1024 * 1024;
    const head = randomBytes(4 * MiB);
    const tail = randomBytes(4 * MiB);
    // Two sources of the same bytes: one that says it is sparse (a hole in the middle), one written out in full
    // (as a network file system that does not report the blocks a file uses would show it).
    await writeFile(join(dir, 'dense.bin'), Buffer.concat([head, Buffer.alloc(size - 8 * MiB), tail]));
    const fh = await open(join(dir, 'sparse.bin'), 'w');
    await fh.write(head, 0, head.length, 0);
    await fh.write(tail, 0, tail.length, size - 4 * MiB);
    await fh.close();
    assert.ok((await stat(join(dir, 'sparse.bin'))).blocks * 512 < size / 2, 'the sparse source has a hole');
    const allocated: number[] = [];
    // Delivers the head, the middle as zero chunks (as the reader does for a hole in the map), then the tail.
    const reader = {
      async read(_file: Buffer, sink: Sink): Promise<ReadReport> {
        await sink.write({ offset: 0, data: head, kind: 'network' });
        const temp = (await readdir(join(dir, 'out'))).find((n) => n.includes('.fused-'))!;
        const st = await stat(join(dir, 'out', temp));
        allocated.push(st.blocks * 512);
        // The temporary's size is what has been written (a watcher sees the copy progress), preallocated or not.
        assert.equal(st.size, 4 * MiB);
        for (let at = 4 * MiB; at < size - 4 * MiB; at += 4 * MiB) await sink.write({ offset: at, data: Buffer.alloc(4 * MiB), kind: 'zero' });
        await sink.write({ offset: size - 4 * MiB, data: tail, kind: 'network' });
        return { size, path: 'network', reason: null, fallback: false, bytesDirect: 0, bytesZero: size - 8 * MiB, bytesNetwork: 8 * MiB, interrupted: false, changed: false };
      },
    } as unknown as FileReader;
    await mkdir(join(dir, 'out'));
    for (const name of ['dense.bin', 'sparse.bin']) {
      const results: FileResult[] = [];
      const dst = join(dir, 'out', name);
      await new Copier(reader, OPTS, { file: (r) => results.push(r) }).run([Buffer.from(join(dir, name))], Buffer.from(dst));
      assert.equal(results[0]!.status, 'copied', name);
      const got = await readFile(dst);
      assert.equal(createHash('sha256').update(got).digest('hex'), createHash('sha256').update(await readFile(join(dir, 'dense.bin'))).digest('hex'), name);
      const st = await stat(dst);
      // The 8 MiB of data, and no more than 1 MiB besides (the file system's own blocks).
      assert.ok(st.blocks * 512 <= 9 * MiB, `${name}: ${st.blocks * 512} bytes allocated for 8 MiB of data`);
    }
    // The dense-looking source was preallocated (blocks before the second write), the sparse one was not.
    assert.ok(allocated[0]! >= size, `dense.bin: ${allocated[0]} allocated after the first write`);
    assert.ok(allocated[1]! < size / 2, `sparse.bin: ${allocated[1]} allocated after the first write`);
  }));

test('a copy that cannot be created fails about its destination, before any byte is read: missing directory, a name ending in a slash', () =>
  withDir(async (dir) => {
    const src = join(dir, 'src.bin');
    await writeFile(src, 'x'.repeat(22));
    await writeFile(join(dir, 'file'), 'y');
    let reads = 0;
    const reader = {
      async read(): Promise<ReadReport> {
        reads++;
        throw new Error('not to be read');
      },
    } as unknown as FileReader;
    for (const [dst, reason] of [
      [join(dir, 'missing', 'dst.bin'), 'no such file or directory'],
      [join(dir, 'missing') + '/', 'not a directory'],
      [join(dir, 'file') + '/', 'not a directory'],
    ] as const) {
      const results: FileResult[] = [];
      await new Copier(reader, OPTS, { file: (r) => results.push(r) }).run([Buffer.from(src)], Buffer.from(dst));
      assert.equal(results.length, 1);
      assert.equal(results[0]!.status, 'failed');
      const err = results[0]!.error;
      assert.ok(err instanceof DestinationError, dst);
      assert.equal(err.subject, dst);
      assert.equal(err.message, `cannot create the copy: ${reason}`);
    }
    assert.equal(reads, 0);
    assert.deepEqual((await readdir(dir)).sort(), ['file', 'src.bin']);
  }));
