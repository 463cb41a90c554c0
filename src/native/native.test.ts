// Tests of the native addon against the real kernel on a disk-backed file system (/var/tmp); needs the build.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import {
  INODE_FLAGS, alignedBuffer, cloneRange, close, copyAccessAcl, exchangeAt, openDirBeneath, setDirect, statAt, deviceInfo, fadvise, fallocate, fiemap, fsync, getLease, inodeFlags, onLeaseBreak, openBeneath, openBeneathSync, statBeneath,
  openDirect, pread, pwrite, readHead, spliceWrite, setLease, type FiemapExtent,
} from './index.js';

const LAST = 0x1;
const UNWRITTEN = 0x800;
const KiB = 1024;
const MiB = 1024 * KiB;

let dir = '';

before(() => {
  dir = fs.mkdtempSync('/var/tmp/fused-native-test-');
});

after(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

function file(name: string): string {
  return path.join(dir, name);
}

async function extentsOf(p: string): Promise<FiemapExtent[]> {
  const fd = fs.openSync(p, 'r');
  try {
    return await fiemap(fd);
  } finally {
    fs.closeSync(fd);
  }
}

// filefrag -v lines: "   0:        0..     255:   61375232..  61375487:    256:             last,eof"
function filefrag(p: string): { logical: number; physical: number; length: number; flags: string }[] {
  const out = execFileSync('filefrag', ['-v', p], { encoding: 'utf8' });
  const bs = Number(/blocks of (\d+) bytes/.exec(out)?.[1] ?? 'NaN');
  assert.ok(bs > 0, `filefrag block size in: ${out}`);
  const rows = [];
  for (const line of out.split('\n')) {
    const m = /^\s*\d+:\s+(\d+)\.\.\s*\d+:\s+(\d+)\.\.\s*\d+:\s+(\d+):\s*(?:\d+:)?\s*(\S*)\s*$/.exec(line);
    if (m) rows.push({ logical: Number(m[1]) * bs, physical: Number(m[2]) * bs, length: Number(m[3]) * bs, flags: m[4] });
  }
  return rows;
}

function sameAsFilefrag(ours: FiemapExtent[], p: string): void {
  const theirs = filefrag(p);
  assert.equal(ours.length, theirs.length, 'extent count as filefrag -v');
  ours.forEach((e, i) => {
    assert.equal(e.logical, theirs[i].logical, `extent ${i} logical`);
    assert.equal(e.physical, theirs[i].physical, `extent ${i} physical`);
    assert.equal(e.length, theirs[i].length, `extent ${i} length`);
  });
}

describe('fiemap', () => {
  test('an empty file has no extents', async () => {
    fs.writeFileSync(file('empty'), '');
    assert.deepEqual(await extentsOf(file('empty')), []);
  });

  test('a written 1 MiB file is covered by extents, the last marked LAST, physical offsets real', async () => {
    fs.writeFileSync(file('mib'), Buffer.alloc(MiB, 0x5a));
    const ext = await extentsOf(file('mib'));
    assert.ok(ext.length >= 1);
    let next = 0;
    for (const e of ext) {
      assert.equal(e.logical, next, 'no gap');
      assert.ok(e.physical > 0, 'physical offset non-zero (FIEMAP_FLAG_SYNC resolved delalloc)');
      next = e.logical + e.length;
    }
    assert.ok(next >= MiB);
    assert.equal(ext.at(-1)!.flags & LAST, LAST);
    sameAsFilefrag(ext, file('mib'));
  });

  test('a sparse file shows the hole as a gap between extents', async () => {
    const fd = fs.openSync(file('sparse'), 'w');
    fs.writeSync(fd, Buffer.alloc(4 * KiB, 1), 0, 4 * KiB, 0);
    fs.writeSync(fd, Buffer.alloc(4 * KiB, 2), 0, 4 * KiB, MiB);
    fs.closeSync(fd);
    const ext = await extentsOf(file('sparse'));
    assert.equal(ext.length, 2);
    assert.equal(ext[0].logical, 0);
    assert.equal(ext[0].length, 4 * KiB);
    assert.equal(ext[1].logical, MiB);
    assert.equal(ext[1].flags & LAST, LAST);
    sameAsFilefrag(ext, file('sparse'));
  });

  test('a fallocated file is UNWRITTEN', async () => {
    const fd = fs.openSync(file('falloc'), 'w+');
    try {
      await fallocate(fd, {}, 0, MiB);
      assert.equal(fs.fstatSync(fd).size, MiB);
      const ext = await fiemap(fd);
      assert.ok(ext.length >= 1);
      for (const e of ext) assert.equal(e.flags & UNWRITTEN, UNWRITTEN);
      sameAsFilefrag(ext, file('falloc'));
    } finally {
      fs.closeSync(fd);
    }
  });

  test('more than one batch of 512: every other 4 KiB block of a 10 MiB sparse file', async () => {
    const fd = fs.openSync(file('many'), 'w');
    const block = Buffer.alloc(4 * KiB, 7);
    for (let off = 0; off < 10 * MiB; off += 8 * KiB) fs.writeSync(fd, block, 0, block.length, off);
    fs.closeSync(fd);
    const ext = await extentsOf(file('many'));
    assert.equal(ext.length, 1280);
    ext.forEach((e, i) => {
      assert.equal(e.logical, i * 8 * KiB);
      assert.equal(e.length, 4 * KiB);
      assert.equal(e.flags & LAST, i === ext.length - 1 ? LAST : 0);
    });
    sameAsFilefrag(ext, file('many'));
  });

  test('maxExtents: more extents than the limit fail with E2BIG; exactly the limit is fine', async () => {
    const fd = fs.openSync(file('many'), 'r');
    try {
      await assert.rejects(fiemap(fd, { maxExtents: 1000 }), (err: NodeJS.ErrnoException) => err.code === 'E2BIG');
      assert.equal((await fiemap(fd, { maxExtents: 1280 })).length, 1280);
    } finally {
      fs.closeSync(fd);
    }
  });

  test('works on its own duplicate of the descriptor: closing ours mid-call does not matter', async () => {
    const fd = fs.openSync(file('many'), 'r');
    const pending = fiemap(fd);
    fs.closeSync(fd);
    // Reuse the number for another file at once: FIEMAP must still describe the first one.
    const other = fs.openSync(file('falloc'), 'r');
    try {
      const ext = await pending;
      assert.equal(ext.length, 1280);
    } finally {
      fs.closeSync(other);
    }
  });

  test('FIEMAP on a pipe fails with an errno-shaped error', async () => {
    const [r, w] = pipeFds();
    try {
      await assert.rejects(fiemap(r), (err: NodeJS.ErrnoException) => {
        assert.equal(err.syscall, 'ioctl(FS_IOC_FIEMAP)');
        assert.ok(typeof err.code === 'string' && err.code.startsWith('E'));
        assert.ok(typeof err.errno === 'number' && err.errno > 0);
        return true;
      });
    } finally {
      fs.closeSync(r);
      fs.closeSync(w);
    }
  });

  test('a file system without FIEMAP gets its own message', { skip: !isTmpfs('/dev/shm') && 'no tmpfs at /dev/shm' }, async () => {
    const p = `/dev/shm/fused-native-test-${process.pid}`;
    fs.writeFileSync(p, 'x');
    try {
      await assert.rejects(extentsOf(p), {
        code: 'EOPNOTSUPP', message: 'EOPNOTSUPP: FIEMAP not supported by this file system, ioctl(FS_IOC_FIEMAP)',
      });
    } finally {
      fs.rmSync(p);
    }
  });
});

function isTmpfs(p: string): boolean {
  try {
    return execFileSync('stat', ['-f', '-c', '%T', p], { encoding: 'utf8' }).trim() === 'tmpfs';
  } catch {
    return false;
  }
}

// Node has no pipe(2); a FIFO opened at both ends gives the same kind of descriptors.
function pipeFds(): [number, number] {
  const fifo = file(`fifo-${process.hrtime.bigint()}`);
  execFileSync('mkfifo', [fifo]);
  const r = fs.openSync(fifo, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
  const w = fs.openSync(fifo, fs.constants.O_WRONLY | fs.constants.O_NONBLOCK);
  return [r, w];
}

describe('inodeFlags', () => {
  test('reads FS_IOC_GETFLAGS: a plain file has no encrypt or journal-data flag, chattr +j sets JOURNAL_DATA', () => {
    const p = file('flags');
    fs.writeFileSync(p, 'x');
    const fd = fs.openSync(p, 'r');
    try {
      const flags = inodeFlags(fd);
      assert.equal(flags & INODE_FLAGS.ENCRYPT, 0);
      assert.equal(flags & INODE_FLAGS.JOURNAL_DATA, 0);
      try {
        execFileSync('chattr', ['+j', p], { stdio: 'ignore' });
      } catch {
        return; // not ext4, or no chattr: the plain case above is what can be checked
      }
      assert.equal(inodeFlags(fd) & INODE_FLAGS.JOURNAL_DATA, INODE_FLAGS.JOURNAL_DATA);
    } finally {
      fs.closeSync(fd);
    }
  });
});

describe('openBeneath', () => {
  let root = '';
  before(() => {
    root = file('root');
    fs.mkdirSync(path.join(root, 'sub'), { recursive: true });
    fs.writeFileSync(path.join(root, 'sub', 'file'), 'inside');
    fs.writeFileSync(file('outside'), 'outside');
    fs.symlinkSync('sub/file', path.join(root, 'link-in'));
    fs.symlinkSync('../outside', path.join(root, 'link-out'));
    fs.symlinkSync('/etc/passwd', path.join(root, 'link-abs'));
    fs.symlinkSync('../../outside', path.join(root, 'sub', 'link-up'));
    execFileSync('mkfifo', [path.join(root, 'fifo')]);
  });

  async function readAll(fd: number): Promise<string> {
    try {
      return fs.readFileSync(fd, 'utf8');
    } finally {
      await close(fd);
    }
  }

  async function rejectsWith(rel: Buffer | string, code: string): Promise<NodeJS.ErrnoException> {
    let caught: NodeJS.ErrnoException | undefined;
    await assert.rejects(openBeneath(root, rel), (err: NodeJS.ErrnoException) => {
      caught = err;
      return err.code === code;
    });
    return caught!;
  }

  test('opens a regular file beneath the root', async () => {
    assert.equal(await readAll(await openBeneath(root, 'sub/file')), 'inside');
  });

  test('follows a symlink that stays inside', async () => {
    assert.equal(await readAll(await openBeneath(root, 'link-in')), 'inside');
  });

  test("refuses '..' with EXDEV, shaped like a Node error", async () => {
    const err = await rejectsWith('../outside', 'EXDEV');
    assert.equal(err.errno, 18);
    assert.equal(err.syscall, 'openat2');
    assert.equal(err.path, '../outside');
    assert.equal(err.message, "EXDEV: Invalid cross-device link, openat2 '../outside'");
    assert.ok(err instanceof Error);
  });

  test('refuses an absolute path and symlinks leading out (absolute or relative)', async () => {
    await rejectsWith('/etc/passwd', 'EXDEV');
    await rejectsWith('link-abs', 'EXDEV');
    await rejectsWith('link-out', 'EXDEV');
    await rejectsWith('sub/link-up', 'EXDEV');
    await rejectsWith('sub/../../outside', 'EXDEV');
  });

  test('a missing file is ENOENT with the path', async () => {
    const err = await rejectsWith('sub/nope', 'ENOENT');
    assert.equal(err.message, "ENOENT: No such file or directory, openat2 'sub/nope'");
  });

  test('a directory is ENOTREG', async () => {
    const err = await rejectsWith('sub', 'ENOTREG');
    assert.equal(err.message, "ENOTREG: not a regular file, openat2 'sub'");
    assert.equal(err.errno, undefined);
  });

  test('a FIFO is ENOTREG and does not hang', async () => {
    const t0 = Date.now();
    await rejectsWith('fifo', 'ENOTREG');
    assert.ok(Date.now() - t0 < 1000);
  });

  test('a name with a newline and non-UTF-8 bytes, given as a Buffer', async () => {
    const name = Buffer.concat([Buffer.from('odd\nname-'), Buffer.from([0xff, 0xfe, 0x80])]);
    // node:fs takes Buffer paths verbatim; join the bytes by hand.
    fs.writeFileSync(Buffer.concat([Buffer.from(root + '/'), name]), 'bytes');
    assert.equal(await readAll(await openBeneath(root, name)), 'bytes');
  });

  test('write opens read-write; the root must exist', async () => {
    const fd = await openBeneath(root, 'sub/file', { write: true });
    try {
      fs.writeSync(fd, 'INSIDE', 0);
    } finally {
      await close(fd);
    }
    assert.equal(fs.readFileSync(path.join(root, 'sub', 'file'), 'utf8'), 'INSIDE');
    await assert.rejects(openBeneath(path.join(root, 'nope'), 'x'), { code: 'ENOENT', syscall: 'open' });
  });

  test('arguments are validated in TypeScript', async () => {
    await assert.rejects(openBeneath(root, 'a\0b'), { code: 'ERR_INVALID_ARG_VALUE' });
    await assert.rejects(openBeneath(root, ''), { code: 'ERR_INVALID_ARG_VALUE' });
  });

  test('openBeneathSync and statBeneath find the same file, with the same refusals, on the calling thread', async () => {
    const st = fs.statSync(path.join(root, 'link-in'), { bigint: true });
    assert.deepEqual(statBeneath(root, 'link-in'), { dev: st.dev, ino: st.ino });
    assert.equal(await readAll(openBeneathSync(root, 'sub/file')), fs.readFileSync(path.join(root, 'sub', 'file'), 'utf8'));
    for (const call of [(rel: string) => statBeneath(root, rel), (rel: string) => openBeneathSync(root, rel)]) {
      assert.throws(() => call('link-out'), { code: 'EXDEV', syscall: 'openat2', path: 'link-out' });
      assert.throws(() => call('sub'), { code: 'ENOTREG' });
      assert.throws(() => call('fifo'), { code: 'ENOTREG' });
      assert.throws(() => call('sub/nope'), { code: 'ENOENT' });
      assert.throws(() => call(''), { code: 'ERR_INVALID_ARG_VALUE' });
    }
    assert.throws(() => statBeneath(path.join(root, 'nope'), 'x'), { code: 'ENOENT', syscall: 'open' });
  });

  test('the same from the root directory already open (its O_PATH descriptor): same files, same refusals', async () => {
    const dir = openDirBeneath(root, '.');
    try {
      const st = fs.statSync(path.join(root, 'link-in'), { bigint: true });
      assert.deepEqual(statBeneath(dir, 'link-in'), { dev: st.dev, ino: st.ino });
      assert.equal(await readAll(openBeneathSync(dir, 'sub/file')), fs.readFileSync(path.join(root, 'sub', 'file'), 'utf8'));
      const w = openBeneathSync(dir, 'sub/file', { write: true });
      await close(w);
      for (const call of [(rel: string) => statBeneath(dir, rel), (rel: string) => openBeneathSync(dir, rel)]) {
        for (const out of ['link-out', '../outside', '/etc/passwd', 'sub/link-up']) {
          assert.throws(() => call(out), { code: 'EXDEV', syscall: 'openat2', path: out });
        }
        assert.throws(() => call('sub'), { code: 'ENOTREG' });
        assert.throws(() => call('fifo'), { code: 'ENOTREG' });
        assert.throws(() => call('sub/nope'), { code: 'ENOENT' });
      }
      assert.throws(() => statBeneath(-1, 'x'), { code: 'ERR_INVALID_ARG_TYPE' });
      assert.throws(() => openBeneathSync(1.5, 'x'), { code: 'ERR_INVALID_ARG_TYPE' });
    } finally {
      await close(dir);
    }
  });
});

describe('direct I/O', () => {
  test('alignedBuffer is zeroed and validated, small (heap) and large (an anonymous mapping) alike', async () => {
    const buf = alignedBuffer(8192);
    assert.equal(buf.length, 8192);
    assert.ok(buf.every((b) => b === 0));
    // Many large ones (each freed by the GC with its own finalizer, munmap): every one zero, and aligned for
    // O_DIRECT at any 4 KiB offset into it.
    const data = Buffer.alloc(4 * MiB + 8 * KiB);
    for (let i = 0; i < data.length; i++) data[i] = (i * 7) % 253;
    fs.writeFileSync(file('big-direct'), data);
    const fd = await openDirect(file('big-direct'));
    try {
      for (let i = 0; i < 24; i++) {
        const big = alignedBuffer(4 * MiB + 8 * KiB);
        assert.ok(big.every((b) => b === 0), `buffer ${i} is zero`);
        assert.equal(await pread(fd, big, 4 * KiB, 4 * MiB, 4 * KiB), 4 * MiB);
        assert.ok(big.subarray(4 * KiB, 4 * KiB + 4 * MiB).equals(data.subarray(4 * KiB, 4 * KiB + 4 * MiB)));
      }
    } finally {
      await close(fd);
    }
    assert.throws(() => alignedBuffer(1000), { code: 'ERR_OUT_OF_RANGE' });
    assert.throws(() => alignedBuffer(0), { code: 'ERR_OUT_OF_RANGE' });
    assert.throws(() => alignedBuffer(4096, 3000), { code: 'ERR_OUT_OF_RANGE' });
  });

  test('O_DIRECT pread works into alignedBuffer and fails with EINVAL when misaligned', async () => {
    const data = Buffer.alloc(64 * KiB);
    for (let i = 0; i < data.length; i++) data[i] = i % 251;
    fs.writeFileSync(file('direct'), data);
    const fd = await openDirect(file('direct'));
    try {
      const buf = alignedBuffer(16 * KiB);
      assert.equal(await pread(fd, buf, 0, 16 * KiB, 16 * KiB), 16 * KiB);
      assert.deepEqual(buf, data.subarray(16 * KiB, 32 * KiB));
      // Start the transfer 16 bytes into an aligned block: certainly not sector aligned.
      await assert.rejects(pread(fd, buf, 16, 4 * KiB, 0), { code: 'EINVAL', syscall: 'pread' });
      // Plain Buffers are malloc'ed (16-byte aligned): expect EINVAL, but one may land aligned by chance.
      let einval = 0;
      for (let i = 0; i < 8; i++) {
        try {
          await pread(fd, Buffer.alloc(4 * KiB), 0, 4 * KiB, 0);
        } catch (err) {
          assert.equal((err as NodeJS.ErrnoException).code, 'EINVAL');
          einval++;
        }
      }
      if (einval < 8) console.log(`# note: ${8 - einval} of 8 plain Buffer.alloc O_DIRECT reads happened to be aligned`);
      assert.ok(einval > 0, 'a plain Buffer.alloc is refused by O_DIRECT');
      // Reading past the end is a short count, not an error.
      assert.equal(await pread(fd, buf, 0, 16 * KiB, 56 * KiB), 8 * KiB);
      assert.equal(await pread(fd, buf, 0, 4 * KiB, 1 * MiB), 0);
    } finally {
      await close(fd);
    }
  });

  test('pwrite then pread round trip, O_DIRECT and buffered', async () => {
    const fd = await openDirect(file('rt'), { write: true }).catch(async (err) => {
      if (err.code !== 'ENOENT') throw err;
      fs.writeFileSync(file('rt'), '');
      return openDirect(file('rt'), { write: true });
    });
    try {
      const out = alignedBuffer(8 * KiB);
      out.fill(0xab, 0, 4 * KiB).fill(0xcd, 4 * KiB);
      assert.equal(await pwrite(fd, out, 0, 8 * KiB, 4 * KiB), 8 * KiB);
      await fsync(fd);
      const back = alignedBuffer(8 * KiB);
      assert.equal(await pread(fd, back, 0, 8 * KiB, 4 * KiB), 8 * KiB);
      assert.deepEqual(back, out);
      assert.equal(fs.statSync(file('rt')).size, 12 * KiB);
    } finally {
      await close(fd);
    }
    const bfd = fs.openSync(file('rt'), 'r+');
    try {
      const plain = Buffer.from('hello, extent');
      assert.equal(await pwrite(bfd, plain, 7, 6, 100), 6);
      const got = Buffer.alloc(20);
      assert.equal(await pread(bfd, got, 2, 6, 100), 6);
      assert.equal(got.subarray(2, 8).toString(), 'extent');
    } finally {
      fs.closeSync(bfd);
    }
  });

  test('spliceWrite: a file\'s bytes onto an O_DIRECT file at another offset; short where the source ends; a passed deadline writes nothing', async () => {
    const src = Buffer.alloc(3 * MiB);
    for (let i = 0; i < src.length; i += 4) src.writeUInt32LE(i, i);
    fs.writeFileSync(file('splice-src'), src);
    fs.writeFileSync(file('splice-dst'), Buffer.alloc(4 * MiB, 0x5a));
    const dst = await openDirect(file('splice-dst'), { write: true });
    const sfd = fs.openSync(file('splice-src'), 'r');
    try {
      // 2 MiB from 512 KiB of the source to 1 MiB of the destination: more than one pipe's worth.
      assert.equal(await spliceWrite(sfd, 512 * KiB, dst, 1 * MiB, 2 * MiB, performance.now() + 60_000), 2 * MiB);
      await fsync(dst);
      const got = fs.readFileSync(file('splice-dst'));
      assert.ok(got.subarray(1 * MiB, 3 * MiB).equals(src.subarray(512 * KiB, 2560 * KiB)), 'the spliced bytes');
      assert.ok(got.subarray(0, 1 * MiB).every((b) => b === 0x5a) && got.subarray(3 * MiB).every((b) => b === 0x5a), 'nothing else changed');
      // The source ends 1 MiB in: the count says how much was written.
      assert.equal(await spliceWrite(sfd, 2 * MiB, dst, 0, 2 * MiB), 1 * MiB);
      assert.ok(fs.readFileSync(file('splice-dst')).subarray(0, 1 * MiB).equals(src.subarray(2 * MiB)));
      // Past the deadline nothing reaches the destination.
      await assert.rejects(spliceWrite(sfd, 0, dst, 3 * MiB, 1 * MiB, performance.now() - 1), { code: 'ETIME', syscall: 'splice' });
      assert.ok(fs.readFileSync(file('splice-dst')).subarray(3 * MiB).every((b) => b === 0x5a), 'a late splice wrote nothing');
      // The addon reads through its own duplicate: the caller's descriptor closed at once does not matter.
      const early = fs.openSync(file('splice-src'), 'r');
      const pending = spliceWrite(early, 0, dst, 3 * MiB, 1 * MiB);
      fs.closeSync(early);
      assert.equal(await pending, 1 * MiB);
      assert.ok(fs.readFileSync(file('splice-dst')).subarray(3 * MiB).equals(src.subarray(0, 1 * MiB)));
      // Not in whole sectors, O_DIRECT refuses it; the next splice of the same pool threads is whole again.
      await assert.rejects(spliceWrite(sfd, 0, dst, 100, 4 * KiB), { syscall: 'splice' });
      assert.equal(await spliceWrite(sfd, 0, dst, 0, 1 * MiB), 1 * MiB);
      assert.ok(fs.readFileSync(file('splice-dst')).subarray(0, 1 * MiB).equals(src.subarray(0, 1 * MiB)));
      await assert.rejects(spliceWrite(sfd, -1, dst, 0, 1), { code: 'ERR_OUT_OF_RANGE' });
    } finally {
      fs.closeSync(sfd);
      await close(dst);
    }
  });

  test('pwrite with a passed deadline writes nothing (ETIME, checked on the pool thread); a future one writes', async () => {
    fs.writeFileSync(file('late'), Buffer.alloc(8, 0x11));
    const fd = fs.openSync(file('late'), 'r+');
    try {
      const data = Buffer.alloc(8, 0x22);
      await assert.rejects(pwrite(fd, data, 0, 8, 0, performance.now() - 1), { code: 'ETIME', syscall: 'pwrite' });
      // Queued behind busy pool threads until the deadline passed: still nothing written.
      const busy = Array.from({ length: 8 }, () => pwrite(fd, data, 0, 0, 0));
      // Its rejection is watched from the start (it may come before the busy ones are done).
      const late = assert.rejects(pwrite(fd, data, 0, 8, 0, performance.now()), { code: 'ETIME' });
      await Promise.all(busy);
      await late;
      assert.deepEqual(fs.readFileSync(file('late')), Buffer.alloc(8, 0x11));
      assert.equal(await pwrite(fd, data, 0, 8, 0, performance.now() + 60_000), 8);
      assert.deepEqual(fs.readFileSync(file('late')), data);
      await assert.rejects(pwrite(fd, data, 0, 8, 0, Number.NaN), { code: 'ERR_OUT_OF_RANGE' });
    } finally {
      fs.closeSync(fd);
    }
  });

  test('range checks happen before the pool', async () => {
    const buf = Buffer.alloc(10);
    await assert.rejects(pread(0, buf, 5, 6, 0), { code: 'ERR_OUT_OF_RANGE' });
    await assert.rejects(pread(-1, buf, 0, 1, 0), { code: 'ERR_INVALID_ARG_TYPE' });
    await assert.rejects(pwrite(0, buf, 0, 1, -1), { code: 'ERR_OUT_OF_RANGE' });
    await assert.rejects(pread(987654, buf, 0, 1, 0), { code: 'EBADF', errno: 9, syscall: 'pread' });
  });

  test('deviceInfo of a regular file (an image)', async () => {
    fs.writeFileSync(file('image'), Buffer.alloc(3 * MiB));
    const fd = fs.openSync(file('image'), 'r');
    try {
      assert.deepEqual(await deviceInfo(fd), {
        isBlockDevice: false, size: 3 * MiB, logicalSectorSize: 512, physicalSectorSize: 4096, rdevMajor: 0, rdevMinor: 0,
      });
    } finally {
      fs.closeSync(fd);
    }
  });

  test('readHead returns the first bytes, short when the file is', async () => {
    const data = Buffer.alloc(12 * KiB);
    for (let i = 0; i < data.length; i++) data[i] = (i * 7) % 256;
    fs.writeFileSync(file('head'), data);
    assert.deepEqual(await readHead(file('head'), 8 * KiB), data.subarray(0, 8 * KiB));
    assert.deepEqual(await readHead(file('head'), 16 * KiB), data);
    await assert.rejects(readHead(file('head'), 100), { code: 'ERR_OUT_OF_RANGE' });
    await assert.rejects(readHead(file('nope'), 4096), { code: 'ENOENT', syscall: 'open', path: file('nope') });
  });

  test('fallocate punches holes and zeroes ranges; fadvise accepts every advice', async () => {
    fs.writeFileSync(file('punch'), Buffer.alloc(MiB, 1));
    const fd = fs.openSync(file('punch'), 'r+');
    try {
      await fallocate(fd, { punchHole: true }, 256 * KiB, 256 * KiB);
      const ext = await fiemap(fd);
      assert.equal(ext.length, 2);
      assert.equal(ext[1].logical, 512 * KiB);
      assert.equal(fs.fstatSync(fd).size, MiB);
      await fallocate(fd, { zeroRange: true }, 0, 4 * KiB);
      const got = Buffer.alloc(8);
      fs.readSync(fd, got, 0, 8, 0);
      assert.ok(got.every((b) => b === 0));
      await assert.rejects(fallocate(fd, { punchHole: true, zeroRange: true }, 0, 4096), { code: 'ERR_INVALID_ARG_VALUE' });
      for (const advice of ['normal', 'sequential', 'random', 'willneed', 'dontneed', 'noreuse'] as const) {
        await fadvise(fd, 0, 0, advice);
      }
    } finally {
      fs.closeSync(fd);
    }
  });
});

describe('setDirect', () => {
  test('turns O_DIRECT on and off on the open file description and says what it was', async () => {
    fs.writeFileSync(file('direct'), Buffer.alloc(8 * KiB, 1));
    const fd = fs.openSync(file('direct'), 'r+');
    try {
      const odd = Buffer.alloc(100);
      assert.equal(setDirect(fd, true), false);
      // An unaligned buffered-style write now fails as O_DIRECT does; an aligned one works.
      assert.throws(() => fs.writeSync(fd, odd, 0, 100, 1), { code: 'EINVAL' });
      assert.equal(await pwrite(fd, alignedBuffer(4096), 0, 4096, 4096), 4096);
      assert.equal(setDirect(fd, false), true);
      assert.equal(fs.writeSync(fd, odd, 0, 100, 1), 100);
      assert.throws(() => setDirect(fd, 'yes' as unknown as boolean), { code: 'ERR_INVALID_ARG_TYPE' });
    } finally {
      fs.closeSync(fd);
    }
  });
});

describe('cloneRange', () => {
  test('validates in TypeScript; on a file system without reflink it is EOPNOTSUPP, else the blocks are shared', async () => {
    fs.writeFileSync(file('clone-src'), Buffer.alloc(64 * KiB, 7));
    fs.writeFileSync(file('clone-dst'), '');
    const src = fs.openSync(file('clone-src'), 'r');
    const dst = fs.openSync(file('clone-dst'), 'r+');
    try {
      await assert.rejects(cloneRange(src, 0, 0, dst, 0), { code: 'ERR_OUT_OF_RANGE' });
      await assert.rejects(cloneRange(src, -4096, 4096, dst, 0), { code: 'ERR_OUT_OF_RANGE' });
      await assert.rejects(cloneRange(src, 0, 4096, -1, 0), { code: 'ERR_INVALID_ARG_TYPE' });
      try {
        await cloneRange(src, 0, 64 * KiB, dst, 64 * KiB);
      } catch (err) {
        // ext4 (the usual /var/tmp) has no reflink: the error is the kernel's, shaped like Node's.
        assert.equal((err as NodeJS.ErrnoException).code, 'EOPNOTSUPP');
        assert.equal((err as NodeJS.ErrnoException).syscall, 'ioctl(FICLONERANGE)');
        return;
      }
      assert.equal(fs.fstatSync(dst).size, 128 * KiB, 'a clone past EOF extends the file');
      assert.ok((await fiemap(dst)).some((e) => (e.flags & 0x2000) !== 0), 'SHARED');
    } finally {
      fs.closeSync(src);
      fs.closeSync(dst);
    }
  });
});

describe('leases', () => {
  test('a read lease on a read-only fd; getLease reports it; none drops it (twice is fine)', () => {
    fs.writeFileSync(file('lease-a'), 'a');
    const fd = fs.openSync(file('lease-a'), 'r');
    try {
      assert.equal(getLease(fd), 'none');
      setLease(fd, 'read');
      assert.equal(getLease(fd), 'read');
      setLease(fd, 'none');
      assert.equal(getLease(fd), 'none');
      setLease(fd, 'none');
      setLease(fd, 'write'); // nobody else has it open
      assert.equal(getLease(fd), 'write');
      setLease(fd, 'none');
    } finally {
      fs.closeSync(fd);
    }
  });

  test('a lease on a file open for writing elsewhere is EAGAIN', () => {
    fs.writeFileSync(file('lease-b'), 'b');
    const writer = fs.openSync(file('lease-b'), 'r+');
    const fd = fs.openSync(file('lease-b'), 'r');
    try {
      assert.throws(() => setLease(fd, 'read'), (err: NodeJS.ErrnoException) =>
        err.code === 'EAGAIN' && err.errno === 11 && err.syscall === 'fcntl(F_SETLEASE)');
    } finally {
      fs.closeSync(fd);
      fs.closeSync(writer);
    }
  });

  test('a break is reported with the fd; releasing lets the opener proceed', async () => {
    const target = file('lease-c');
    fs.writeFileSync(target, 'c');
    const fd = fs.openSync(target, 'r');
    const broken: number[] = [];
    let releasedAt = 0;
    let brokeAt = 0;
    let typeWhileBreaking = '';
    onLeaseBreak((brokenFd) => {
      broken.push(brokenFd);
      brokeAt = Date.now();
      typeWhileBreaking = getLease(brokenFd);
      releasedAt = Date.now();
      setLease(brokenFd, 'none');
    });
    try {
      setLease(fd, 'read');
      const t0 = Date.now();
      // The shell blocks in open(O_WRONLY|O_APPEND) until the lease is released.
      const opener = spawn('sh', ['-c', 'exec 3>>"$1"; echo opened', 'sh', target], { stdio: ['ignore', 'pipe', 'inherit'] });
      let said = '';
      opener.stdout.on('data', (d) => { said += d; });
      const code = await new Promise<number | null>((resolve) => opener.on('exit', resolve));
      const t1 = Date.now();
      assert.equal(code, 0);
      assert.equal(said.trim(), 'opened');
      assert.deepEqual(broken, [fd]);
      assert.equal(typeWhileBreaking, 'none', 'a breaking read lease reports its target type');
      assert.ok(releasedAt >= t0 && t1 - t0 < 10_000, `opener finished in ${t1 - t0} ms, not the 45 s break time`);
      console.log(`# lease break delivered ${brokeAt - t0} ms after spawn; opener done ${t1 - t0} ms after spawn`);
    } finally {
      fs.closeSync(fd);
    }
  });

  test('a non-blocking writer gets EAGAIN at once while the lease holds', async () => {
    const target = file('lease-d');
    fs.writeFileSync(target, 'd');
    const fd = fs.openSync(target, 'r');
    let breaks = 0;
    onLeaseBreak(() => { breaks++; }); // replaces the earlier callback; does not release
    try {
      setLease(fd, 'read');
      const script = `try { require('fs').openSync(${JSON.stringify(target)}, require('fs').constants.O_WRONLY | require('fs').constants.O_NONBLOCK); console.log('opened') } catch (e) { console.log(e.code) }`;
      const out = execFileSync(process.execPath, ['-e', script], { encoding: 'utf8' });
      assert.equal(out.trim(), 'EAGAIN');
      await new Promise((r) => setTimeout(r, 100));
      assert.equal(breaks, 1, 'the break still starts');
      setLease(fd, 'none');
    } finally {
      fs.closeSync(fd);
    }
  });
});

describe('names: openDirBeneath, exchangeAt, statAt, copyAccessAcl', () => {
  test('two names swap inodes atomically; statAt sees it; a directory outside the root is EXDEV', () => {
    fs.mkdirSync(file('names/sub'), { recursive: true });
    fs.writeFileSync(file('names/sub/a'), 'a');
    fs.writeFileSync(file('names/b'), 'b');
    const root = openDirBeneath(file('names'), '.');
    const sub = openDirBeneath(file('names'), 'sub');
    try {
      const a = statAt(sub, Buffer.from('a'));
      assert.equal(a.ino, fs.statSync(file('names/sub/a'), { bigint: true }).ino);
      exchangeAt(sub, Buffer.from('a'), root, Buffer.from('b'));
      assert.equal(fs.readFileSync(file('names/sub/a'), 'utf8'), 'b');
      assert.equal(fs.readFileSync(file('names/b'), 'utf8'), 'a');
      assert.equal(statAt(root, Buffer.from('b')).ino, a.ino);
      assert.throws(() => exchangeAt(sub, Buffer.from('missing'), root, Buffer.from('b')), { code: 'ENOENT' });
      assert.throws(() => statAt(sub, Buffer.from('..')), { code: 'ERR_INVALID_ARG_VALUE' });
      assert.throws(() => exchangeAt(sub, Buffer.from('x/y'), root, Buffer.from('b')), { code: 'ERR_INVALID_ARG_VALUE' });
      assert.throws(() => openDirBeneath(file('names/sub'), '..'), { code: 'EXDEV' });
    } finally {
      fs.closeSync(root);
      fs.closeSync(sub);
    }
  });

  test('copyAccessAcl: false when the source has no ACL', () => {
    fs.writeFileSync(file('acl-a'), '');
    fs.writeFileSync(file('acl-b'), '');
    const a = fs.openSync(file('acl-a'), 'r');
    const b = fs.openSync(file('acl-b'), 'r');
    try {
      assert.equal(copyAccessAcl(a, b), false);
    } finally {
      fs.closeSync(a);
      fs.closeSync(b);
    }
  });
});
