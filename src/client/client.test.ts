// Unit tests for FuseClient's devices opened for writing: once per command, borrowed by each file, closed at the end.
// Against a real ext4 image file made by mkfs (no root, no loop device).
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { closeSync, existsSync, fstatSync, mkdtempSync, openSync, readSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FuseClient } from './client.js';
import type { FuseRecord } from './registry.js';
import { FusedError } from '../errors.js';
import { PROBE_BYTES, probeSuperblock } from '../volume/superblock.js';

const SBIN = ['/usr/local/sbin', '/usr/sbin', '/sbin'];
const PATH = [process.env.PATH ?? '', ...SBIN].join(':');
const mkfs = PATH.split(':').filter((dir) => dir.startsWith('/')).map((dir) => join(dir, 'mkfs.ext4')).find((p) => existsSync(p));

const work = mkdtempSync(join(tmpdir(), 'fused-client-test-'));
after(() => rmSync(work, { recursive: true, force: true }));

/** FuseClient's constructor is private (FuseClient.load reads the fuse registry): a client of no recorded fuses. */
const bareClient = () => new (FuseClient as unknown as new (fuses: FuseRecord[]) => FuseClient)([]);

test('a device opened for writing once per command: every file borrows the same descriptor, close() closes it; a failed open is tried again', { skip: mkfs ? false : 'mkfs.ext4 is not installed' }, async () => {
  const img = join(work, 'vol.img');
  writeFileSync(img, '');
  truncateSync(img, 64 * 1024 * 1024);
  const r = spawnSync(mkfs!, ['-q', '-F', img], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  const head = Buffer.alloc(PROBE_BYTES);
  const fd = openSync(img, 'r');
  readSync(fd, head, 0, PROBE_BYTES, 0);
  closeSync(fd);
  const uuid = probeSuperblock(head)!.uuid;
  const fuse = { mountpoint: '/mnt/vol', uuid, volume: 'vol', device: img } as FuseRecord;
  const client = bareClient();
  const [a, b] = await Promise.all([client.writableDevice(fuse, img), client.writableDevice(fuse, img)]);
  const c = await client.writableDevice(fuse, img);
  assert.equal(a.fd, b.fd, 'one descriptor for concurrent files');
  assert.equal(a.fd, c.fd, 'and for the next file');
  // A file's target closes its device when it is done: a borrowed one stays open for the others.
  await a.close();
  assert.ok(fstatSync(b.fd).isFile());
  // Another UUID on the same path is refused, and not kept: each try opens again.
  const other = { ...fuse, mountpoint: '/mnt/other', uuid: '00000000-0000-0000-0000-000000000000' };
  for (let i = 0; i < 2; i++) {
    await assert.rejects(client.writableDevice(other, img), (err) => err instanceof FusedError && err.kind === 'refused');
  }
  await client.close();
  assert.throws(() => fstatSync(b.fd), { code: 'EBADF' }, 'closed with the client');
});
