// Unit tests of the ext4 pool: its sizes and choices (pure), and the swap itself on a real file system (/var/tmp):
// verified, undone when the name moves or the table refuses, never leaving the pool file where a client saw it.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { getLease, setLease } from '../native/index.js';
import { pickPoolFile, poolSizes, splitRel, swapEligible, swapIntoPlace } from './pool.js';

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;

describe('poolSizes', () => {
  test('one file up to twice 1 GiB, in whole MiB', () => {
    assert.deepEqual(poolSizes(GiB), [GiB]);
    assert.deepEqual(poolSizes(GiB + 3 * MiB + 5), [GiB + 3 * MiB]);
    assert.deepEqual(poolSizes(2 * GiB - MiB), [2 * GiB - MiB]);
    assert.deepEqual(poolSizes(64 * MiB), [64 * MiB]);
  });
  test('equal files of about 1 GiB for a larger reserve; none below a MiB', () => {
    assert.deepEqual(poolSizes(2 * GiB), [GiB, GiB]);
    assert.deepEqual(poolSizes(3.5 * GiB), [1194 * MiB, 1194 * MiB, 1194 * MiB]);
    assert.deepEqual(poolSizes(MiB), [MiB]);
    assert.deepEqual(poolSizes(MiB - 1), []);
    assert.deepEqual(poolSizes(0), []);
  });
});

describe('pickPoolFile', () => {
  const f = (size: number, ready = true, fd = 3) => ({ size, ready, fd });
  test('the largest ready file at least as large as asked', () => {
    const files = [f(64 * MiB), f(512 * MiB), f(256 * MiB)];
    assert.equal(pickPoolFile(files, 32 * MiB), files[1]);
    assert.equal(pickPoolFile(files, 512 * MiB), files[1]);
  });
  test('none when every file is smaller, not ready (filling) or gone (swapped away)', () => {
    assert.equal(pickPoolFile([f(64 * MiB)], 65 * MiB), undefined);
    assert.equal(pickPoolFile([f(512 * MiB, false), f(512 * MiB, true, -1)], MiB), undefined);
    assert.equal(pickPoolFile([], MiB), undefined);
  });
});

describe('swapEligible', () => {
  const st = (size: bigint, nlink: bigint, blocks: bigint, file = true) => ({ size, nlink, blocks, isFile: () => file });
  test('only an empty regular file with one name and no blocks', () => {
    assert.equal(swapEligible(st(0n, 1n, 0n)), true);
    assert.equal(swapEligible(st(1n, 1n, 8n)), false);
    assert.equal(swapEligible(st(0n, 2n, 0n)), false, 'a hard link would keep the old inode');
    assert.equal(swapEligible(st(0n, 1n, 8n)), false, 'preallocated blocks (KEEP_SIZE) are its own');
    assert.equal(swapEligible(st(0n, 1n, 0n, false)), false);
  });
});

describe('splitRel', () => {
  const s = (rel: string) => {
    const r = splitRel(Buffer.from(rel));
    return r && [r.dir.toString(), r.base.toString()];
  };
  test('directory and last component; the root is "."', () => {
    assert.deepEqual(s('a/b/.c.fused-1'), ['a/b', '.c.fused-1']);
    assert.deepEqual(s('file'), ['.', 'file']);
    assert.deepEqual(s('dir/file/'), ['dir', 'file']);
  });
  test('no plain last component: null', () => {
    assert.equal(s('a/..'), null);
    assert.equal(s('.'), null);
    assert.equal(s(''), null);
    assert.equal(s('/abs'), null);
  });
});

describe('swapIntoPlace', () => {
  let root = '';
  let pool = '';
  let poolFd = -1;
  before(() => {
    root = fs.mkdtempSync('/var/tmp/fused-pool-test-');
    pool = path.join(root, '.fused');
    fs.mkdirSync(pool, { mode: 0o700 });
    fs.mkdirSync(path.join(root, 'dir'));
    poolFd = fs.openSync(pool, 'r');
  });
  after(() => {
    fs.closeSync(poolFd);
    fs.rmSync(root, { recursive: true, force: true });
  });

  /** An empty target (mode 0640) under a write lease, and a pool file of zeros. */
  function setup(name: string): { fd: number; pfd: number; ino: bigint; pino: bigint } {
    const p = path.join(root, 'dir', name);
    fs.writeFileSync(p, '', { mode: 0o640 });
    fs.chmodSync(p, 0o640);
    const fd = fs.openSync(p, 'r+');
    setLease(fd, 'write');
    fs.writeFileSync(path.join(pool, 'pool.0'), Buffer.alloc(MiB), { mode: 0o600 });
    const pfd = fs.openSync(path.join(pool, 'pool.0'), 'r+');
    return { fd, pfd, ino: fs.fstatSync(fd, { bigint: true }).ino, pino: fs.fstatSync(pfd, { bigint: true }).ino };
  }
  const ino = (p: string) => fs.statSync(p, { bigint: true, throwIfNoEntry: false })?.ino;

  test('swaps: the name holds the pool file (zeros, the owner and mode of the original, leased); the old inode is gone', () => {
    const { fd, pfd, pino } = setup('a');
    const root0 = process.getuid?.() === 0;
    if (root0) fs.fchownSync(fd, 4242, 4343); // as a create through the mount by another user
    let installed: bigint | undefined;
    const out = swapIntoPlace({ root, rel: Buffer.from('dir/a'), fd, install: (_fd, _dev, i) => ((installed = i), true) },
      { dir: pool, dirFd: poolFd, name: 'pool.0', fd: pfd }, () => {});
    assert.deepEqual(out, { swapped: true });
    assert.equal(installed, pino);
    assert.equal(ino(path.join(root, 'dir/a')), pino);
    assert.equal(ino(path.join(pool, 'pool.0')), undefined);
    const st = fs.statSync(path.join(root, 'dir/a'));
    assert.equal(st.mode & 0o7777, 0o640);
    if (root0) assert.deepEqual([st.uid, st.gid], [4242, 4343]);
    assert.equal(getLease(pfd), 'write');
    setLease(pfd, 'none'); // before anyone opens it (any open breaks a write lease)
    assert.deepEqual(fs.readFileSync(path.join(root, 'dir/a')), Buffer.alloc(MiB));
    fs.closeSync(pfd);
    fs.closeSync(fd);
  });

  test('refused by the table (a lease breaking): undone, the pool file removed (it was visible), the name as before', () => {
    const { fd, pfd, ino: old } = setup('b');
    const out = swapIntoPlace({ root, rel: Buffer.from('dir/b'), fd, install: () => false },
      { dir: pool, dirFd: poolFd, name: 'pool.0', fd: pfd }, () => {});
    assert.equal(out.swapped, false);
    assert.ok('discard' in out);
    assert.equal(ino(path.join(root, 'dir/b')), old);
    assert.equal(ino(path.join(pool, 'pool.0')), undefined);
    assert.equal(getLease(pfd), 'none');
    assert.equal(fs.fstatSync(pfd).mode & 0o777, 0o600);
    fs.closeSync(pfd);
    fs.closeSync(fd);
  });

  test('a name that holds another file already: nothing changes', () => {
    const { fd, pfd, pino } = setup('c');
    // The leased file renamed away (still one name, empty), another put in its place.
    fs.renameSync(path.join(root, 'dir/c'), path.join(root, 'dir/c-moved'));
    fs.writeFileSync(path.join(root, 'dir/c'), 'other');
    const out = swapIntoPlace({ root, rel: Buffer.from('dir/c'), fd, install: () => assert.fail('installed') },
      { dir: pool, dirFd: poolFd, name: 'pool.0', fd: pfd }, () => {});
    assert.deepEqual(out, { swapped: false, reason: 'the name no longer holds the file' });
    assert.equal(fs.readFileSync(path.join(root, 'dir/c'), 'utf8'), 'other');
    assert.equal(ino(path.join(pool, 'pool.0')), pino);
    fs.closeSync(pfd);
    fs.closeSync(fd);
  });

  test('a file that is not empty keeps its inode', () => {
    const { fd, pfd, ino: old } = setup('d');
    fs.writeSync(fd, 'x');
    const out = swapIntoPlace({ root, rel: Buffer.from('dir/d'), fd, install: () => true },
      { dir: pool, dirFd: poolFd, name: 'pool.0', fd: pfd }, () => {});
    assert.deepEqual(out, { swapped: false, reason: 'the file is not empty, or not with one name' });
    assert.equal(ino(path.join(root, 'dir/d')), old);
    fs.closeSync(pfd);
    fs.closeSync(fd);
  });

  test('a path leading out of the root is refused before anything moves', () => {
    const { fd, pfd, pino } = setup('e');
    const out = swapIntoPlace({ root: path.join(root, 'dir'), rel: Buffer.from('../dir/e'), fd, install: () => true },
      { dir: pool, dirFd: poolFd, name: 'pool.0', fd: pfd }, () => {});
    assert.equal(out.swapped, false);
    assert.match((out as { reason: string }).reason, /EXDEV/);
    assert.equal(ino(path.join(pool, 'pool.0')), pino);
    fs.closeSync(pfd);
    fs.closeSync(fd);
  });
});
