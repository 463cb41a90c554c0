// Unit tests for superblock probing, against real images made by mkfs and what blkid says about them.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, openSync, readSync, closeSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PROBE_BYTES, probeSuperblock, type VolumeIdentity } from './superblock.js';

const MiB = 1024 * 1024;
const SBIN = ['/usr/local/sbin', '/usr/sbin', '/sbin'];
const env = { ...process.env, PATH: [process.env.PATH ?? '', ...SBIN].join(':') };

/** Why a tool cannot be used here, or undefined if it can. */
function missing(...tools: string[]): string | undefined {
  for (const tool of tools) {
    const found = env.PATH.split(':').some((dir) => dir && existsSync(join(dir, tool)));
    if (!found) return `${tool} is not installed`;
  }
  return undefined;
}

const work = mkdtempSync(join(tmpdir(), 'fused-volume-test-'));
after(() => rmSync(work, { recursive: true, force: true }));
let serial = 0;

function run(cmd: string, args: string[]): string {
  const r = spawnSync(cmd, args, { env, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')}: exit ${r.status}: ${r.stderr}`);
  return r.stdout;
}

/** Make a sparse image file of the given size with mkfs; return its path. */
function makeImage(mkfs: string, args: string[], sizeMiB: number): string {
  const file = join(work, `img${serial++}`);
  writeFileSync(file, '');
  truncateSync(file, sizeMiB * MiB);
  run(mkfs, [...args, file]);
  return file;
}

/** The first PROBE_BYTES of an image, as the server reads them from a device. */
function head(file: string): Buffer {
  const buf = Buffer.alloc(PROBE_BYTES);
  const fd = openSync(file, 'r');
  try {
    readSync(fd, buf, 0, PROBE_BYTES, 0);
  } finally {
    closeSync(fd);
  }
  return buf;
}

/** `blkid -p -o export` as a map, with its shell backslash-escaping undone. */
function blkid(file: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of run('blkid', ['-p', '-o', 'export', file]).split('\n')) {
    const eq = line.indexOf('=');
    if (eq > 0) out[line.slice(0, eq)] = line.slice(eq + 1).replace(/\\(.)/g, '$1');
  }
  return out;
}

function assertMatchesBlkid(id: VolumeIdentity | null, file: string): VolumeIdentity {
  const b = blkid(file);
  assert.ok(id, `probe found nothing where blkid found ${JSON.stringify(b)}`);
  assert.equal(id.fstype, b.TYPE);
  assert.equal(id.uuid, b.UUID ?? '');
  assert.equal(id.label, b.LABEL ?? '');
  // blkid's BLOCK_SIZE is the file-system block for ext but the sector size for XFS.
  if (id.fstype !== 'xfs') assert.equal(id.blockSize, Number(b.BLOCK_SIZE));
  return id;
}

const extCases: Array<{ name: string; mkfs: string; args: string[]; type: string; bs: number; label: string }> = [
  { name: 'ext2, 1 KiB blocks, label with a space', mkfs: 'mkfs.ext2', args: ['-b', '1024', '-L', 'my vol'],
    type: 'ext2', bs: 1024, label: 'my vol' },
  { name: 'ext2, 4 KiB blocks', mkfs: 'mkfs.ext2', args: ['-b', '4096'], type: 'ext2', bs: 4096, label: '' },
  { name: 'ext3, 1 KiB blocks', mkfs: 'mkfs.ext3', args: ['-b', '1024'], type: 'ext3', bs: 1024, label: '' },
  { name: 'ext3, 4 KiB blocks, label with a space', mkfs: 'mkfs.ext3', args: ['-b', '4096', '-L', 'clips 2024'],
    type: 'ext3', bs: 4096, label: 'clips 2024' },
  { name: 'ext4, 1 KiB blocks, 64bit', mkfs: 'mkfs.ext4', args: ['-b', '1024', '-O', '64bit', '-L', 'a b'],
    type: 'ext4', bs: 1024, label: 'a b' },
  { name: 'ext4, 1 KiB blocks, not 64bit', mkfs: 'mkfs.ext4', args: ['-b', '1024', '-O', '^64bit'],
    type: 'ext4', bs: 1024, label: '' },
  { name: 'ext4, 4 KiB blocks, 64bit, a full 16-byte label', mkfs: 'mkfs.ext4',
    args: ['-b', '4096', '-O', '64bit', '-L', 'sixteen chars ab'], type: 'ext4', bs: 4096, label: 'sixteen chars ab' },
  { name: 'ext4, 4 KiB blocks, not 64bit, no metadata_csum', mkfs: 'mkfs.ext4',
    args: ['-b', '4096', '-O', '^64bit,^metadata_csum'], type: 'ext4', bs: 4096, label: '' },
  { name: 'ext4, label with trailing spaces (blkid trims them)', mkfs: 'mkfs.ext4', args: ['-L', 'tail  '],
    type: 'ext4', bs: 1024, label: 'tail' },
  { name: 'ext4 with inline_data', mkfs: 'mkfs.ext4', args: ['-O', 'inline_data'], type: 'ext4', bs: 1024, label: '' },
];

for (const c of extCases) {
  test(`probeSuperblock identifies ${c.name} as blkid does`, { skip: missing(c.mkfs, 'blkid') }, () => {
    const file = makeImage(c.mkfs, ['-F', '-q', '-E', 'nodiscard', ...c.args], 32);
    const id = assertMatchesBlkid(probeSuperblock(head(file)), file);
    assert.deepEqual(id, { fstype: c.type, uuid: id.uuid, label: c.label, blockSize: c.bs, sizeBytes: 32 * MiB,
      xfsRealtime: false });
    assert.match(id.uuid, /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
  });
}

test('probeSuperblock identifies XFS (v5, with label) as blkid does', { skip: missing('mkfs.xfs', 'blkid') }, () => {
  const file = makeImage('mkfs.xfs', ['-q', '-K', '-L', 'xv lab'], 300);
  const id = assertMatchesBlkid(probeSuperblock(head(file)), file);
  assert.deepEqual(id, { fstype: 'xfs', uuid: id.uuid, label: 'xv lab', blockSize: 4096, sizeBytes: 300 * MiB,
    xfsRealtime: false });
});

test('probeSuperblock identifies XFS v4 (crc=0), 1 KiB blocks, 12-byte label', { skip: missing('mkfs.xfs', 'blkid') },
  () => {
    const file = makeImage('mkfs.xfs', ['-q', '-K', '-m', 'crc=0', '-b', 'size=1024', '-L', 'twelve_chars'], 300);
    const id = assertMatchesBlkid(probeSuperblock(head(file)), file);
    assert.equal(id.blockSize, 1024);
    assert.equal(id.label, 'twelve_chars');
    assert.equal(id.sizeBytes, 300 * MiB);
  });

test('probeSuperblock reports an XFS realtime section', { skip: missing('mkfs.xfs', 'blkid') }, () => {
  const rt = join(work, `rt${serial++}`);
  writeFileSync(rt, '');
  truncateSync(rt, 64 * MiB);
  const file = makeImage('mkfs.xfs', ['-q', '-K', '-r', `rtdev=${rt}`], 300);
  const id = assertMatchesBlkid(probeSuperblock(head(file)), file);
  assert.equal(id.xfsRealtime, true);
  assert.equal(id.sizeBytes, 300 * MiB, 'the data section only');
});

// ---- damaged and foreign superblocks -------------------------------------------------------------------------

const EXT = 1024;

test('probeSuperblock reads the high half of the block count only on 64bit ext4', { skip: missing('mkfs.ext4') },
  () => {
    const file = makeImage('mkfs.ext4', ['-F', '-q', '-E', 'nodiscard', '-O', '64bit,^metadata_csum'], 32);
    const h = head(file);
    h.writeUInt32LE(1, EXT + 0x150);
    assert.equal(probeSuperblock(h)?.sizeBytes, (2 ** 32 + 32 * 1024) * 1024);
    h.writeUInt32LE(h.readUInt32LE(EXT + 0x60) & ~0x80, EXT + 0x60); // drop INCOMPAT_64BIT
    assert.equal(probeSuperblock(h)?.sizeBytes, 32 * MiB);
  });

test('probeSuperblock rejects ext superblocks that are damaged or not a file system',
  { skip: missing('mkfs.ext4') }, () => {
    const plain = head(makeImage('mkfs.ext4', ['-F', '-q', '-E', 'nodiscard', '-O', '^metadata_csum'], 32));
    const csum = head(makeImage('mkfs.ext4', ['-F', '-q', '-E', 'nodiscard'], 32));
    assert.ok(probeSuperblock(plain));
    assert.ok(probeSuperblock(csum));
    const mutate = (base: Buffer, f: (b: Buffer) => void) => {
      const b = Buffer.from(base);
      f(b);
      return probeSuperblock(b);
    };
    assert.equal(mutate(plain, (b) => b.writeUInt16LE(0xef54, EXT + 0x38)), null, 'bad magic');
    assert.equal(mutate(plain, (b) => b.writeUInt32LE(7, EXT + 0x18)), null, '128 KiB blocks');
    assert.equal(mutate(plain, (b) => b.writeUInt32LE(0, EXT + 0x04)), null, 'no blocks');
    assert.equal(mutate(plain, (b) => b.writeUInt32LE(0, EXT + 0x20)), null, 'no blocks per group');
    assert.equal(mutate(plain, (b) => b.writeUInt32LE(b.readUInt32LE(EXT + 0x60) | 0x8, EXT + 0x60)), null,
      'an external journal device');
    // Without a checksum a changed label is just a label; with one it is a torn superblock.
    assert.equal(mutate(plain, (b) => b.write('x', EXT + 0x78))?.label, 'x');
    assert.equal(mutate(csum, (b) => b.write('x', EXT + 0x78)), null, 'metadata_csum mismatch');
    assert.equal(probeSuperblock(plain.subarray(0, 2047)), null, 'head too short for the superblock');
    assert.ok(probeSuperblock(plain.subarray(0, 2048)), 'two sectors are enough for ext');
  });

test('probeSuperblock rejects XFS superblocks that are damaged', { skip: missing('mkfs.xfs') }, () => {
  const v5 = head(makeImage('mkfs.xfs', ['-q', '-K'], 300));
  const v4 = head(makeImage('mkfs.xfs', ['-q', '-K', '-m', 'crc=0'], 300));
  assert.ok(probeSuperblock(v5));
  assert.ok(probeSuperblock(v4));
  const mutate = (base: Buffer, f: (b: Buffer) => void) => {
    const b = Buffer.from(base);
    f(b);
    return probeSuperblock(b);
  };
  assert.equal(mutate(v5, (b) => b.write('y', 108)), null, 'v5 CRC mismatch');
  assert.equal(mutate(v4, (b) => b.write('y', 108))?.label, 'y', 'v4 has no CRC');
  assert.equal(mutate(v4, (b) => b.writeUInt32BE(3000, 4)), null, 'block size not a power of two');
  assert.equal(mutate(v4, (b) => b.writeUInt32BE(0, 88)), null, 'no allocation groups');
  assert.equal(mutate(v4, (b) => b.writeUInt8(1, 126)), null, 'mkfs still in progress');
  assert.equal(mutate(v4, (b) => b.writeBigUInt64BE(2n ** 62n, 8)), null, 'more blocks than the AGs hold');
  assert.equal(probeSuperblock(v5.subarray(0, 511)), null, 'head shorter than a sector');
});

test('probeSuperblock refuses a device carrying both an ext and an XFS superblock (ambivalent)',
  { skip: missing('mkfs.ext4', 'mkfs.xfs') }, () => {
    const ext = head(makeImage('mkfs.ext4', ['-F', '-q', '-E', 'nodiscard'], 32));
    const xfs = head(makeImage('mkfs.xfs', ['-q', '-K'], 300));
    const both = Buffer.from(ext);
    xfs.copy(both, 0, 0, 512);
    assert.equal(probeSuperblock(both), null);
  });

test('probeSuperblock of a zeroed buffer, an empty buffer and random garbage is null', () => {
  assert.equal(probeSuperblock(Buffer.alloc(PROBE_BYTES)), null);
  assert.equal(probeSuperblock(Buffer.alloc(0)), null);
  let s = 12345;
  const byte = () => {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0;
    return s >>> 24;
  };
  for (let round = 0; round < 200; round++) {
    const b = Buffer.alloc(4096);
    for (let i = 0; i < b.length; i++) b[i] = byte();
    if (round % 2) b.write('XFSB', 0, 'latin1'); // garbage behind a right magic must still fail
    else b.writeUInt16LE(0xef53, EXT + 0x38);
    assert.equal(probeSuperblock(b), null, `round ${round}`);
  }
});
