// Unit tests for mountinfo parsing, mount lookup and the servable file-system types.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { findMount, mountsOfDevice, parseMountinfo, servableFsType, type MountEntry } from './mountinfo.js';

// Lines as this machine's kernel wrote them, plus crafted ones with escapes, optional fields and odd sources.
const REAL = [
  '22 27 0:21 / /proc rw,relatime - proc proc rw',
  '24 27 0:6 / /dev rw,relatime - devtmpfs devtmpfs rw,size=12334432k,nr_inodes=3083608,mode=755',
  '27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard,resv_strict,resuid=65534,resgid=65534',
  '41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw',
].join('\n');
const CRAFTED = [
  // a mount point with a space, a newline, a tab and a backslash in it, and a non-ASCII name left raw
  '90 27 7:3 / /mnt/my\\040vol\\012two\\011tab\\134x\u00e9 rw,noatime shared:12 master:3 - xfs /dev/loop3 rw,attr2',
  // a bind mount of a subdirectory, with a source that has an escaped space
  '91 27 7:3 /sub\\040dir /srv/bind rw - xfs /dev/disk\\040one rw',
  // an empty source (mount -t tmpfs "" /x) leaves two spaces in a row
  '92 27 0:50 / /x rw - tmpfs  rw,size=4k',
  '93 27 0:51 / /mnt/net rw,relatime - fuse.sshfs user@host:/export rw,user_id=0,group_id=0',
].join('\n');

test('parseMountinfo reads real lines field by field', () => {
  const entries = parseMountinfo(REAL + '\n');
  assert.equal(entries.length, 4);
  assert.deepEqual(entries[2], {
    mountId: 27, parentId: 1, major: 254, minor: 0, root: '/', mountPoint: '/', options: 'rw,relatime',
    fstype: 'ext4', source: '/dev/vda', superOptions: 'rw,discard,resv_strict,resuid=65534,resgid=65534',
  });
  assert.equal(entries[3]!.mountPoint, '/sys/fs/cgroup/unified');
});

test('parseMountinfo decodes octal escapes and skips optional fields up to the separator', () => {
  const [vol, bind, empty, net] = parseMountinfo(CRAFTED);
  assert.equal(vol!.mountPoint, '/mnt/my vol\ntwo\ttab\\x\u00e9');
  assert.equal(vol!.fstype, 'xfs');
  assert.equal(vol!.source, '/dev/loop3');
  assert.equal(vol!.options, 'rw,noatime');
  assert.equal(vol!.superOptions, 'rw,attr2');
  assert.deepEqual([vol!.major, vol!.minor], [7, 3]);
  assert.equal(bind!.root, '/sub dir');
  assert.equal(bind!.source, '/dev/disk one');
  assert.equal(empty!.source, '');
  assert.equal(empty!.fstype, 'tmpfs');
  assert.equal(net!.fstype, 'fuse.sshfs');
});

test('parseMountinfo leaves a backslash that is not an octal escape alone', () => {
  const [e] = parseMountinfo('95 27 0:60 / /a\\9b\\400 rw - tmpfs tmpfs rw');
  assert.equal(e!.mountPoint, '/a\\9b\\400');
});

test('parseMountinfo skips blank and malformed lines', () => {
  const text = ['', 'garbage', '1 2 3:4 / /a rw tmpfs tmpfs rw', 'x 27 0:1 / /b rw - tmpfs tmpfs rw',
    '5 27 0:1 / /c rw - tmpfs tmpfs', '6 27 0:1 / /d rw - tmpfs tmpfs rw', '   '].join('\n');
  assert.deepEqual(parseMountinfo(text).map((e) => e.mountPoint), ['/d']);
});

test('parseMountinfo parses this process\'s own /proc/self/mountinfo', (t) => {
  let text: string;
  try {
    text = readFileSync('/proc/self/mountinfo', 'utf8');
  } catch {
    t.skip('no /proc/self/mountinfo');
    return;
  }
  const lines = text.split('\n').filter((l) => l.length > 0);
  const entries = parseMountinfo(text);
  assert.equal(entries.length, lines.length);
  assert.ok(findMount(entries, '/'), 'something is mounted on /');
});

const all = parseMountinfo(REAL + '\n' + CRAFTED);

test('findMount picks the longest mount point at a component boundary', () => {
  assert.equal(findMount(all, '/sys/fs/cgroup/unified/x')?.mountId, 41);
  assert.equal(findMount(all, '/sys/fs/cgroup/unified')?.mountId, 41);
  assert.equal(findMount(all, '/sys/fs/cgroup/unifiedx')?.mountId, 27, 'a prefix that is not a whole component');
  assert.equal(findMount(all, '/proc/self')?.mountId, 22);
  assert.equal(findMount(all, '/home/user/file')?.mountId, 27);
  assert.equal(findMount(all, '/')?.mountId, 27);
  assert.equal(findMount(all, '/mnt/my vol\ntwo\ttab\\x\u00e9/clip.mov')?.mountId, 90);
  assert.equal(findMount(all, '/mnt/my vol')?.mountId, 27);
});

test('findMount takes the mount listed last among equal mount points (it is on top)', () => {
  const stacked = parseMountinfo([
    '27 1 254:0 / / rw - ext4 /dev/vda rw',
    '50 27 7:0 / /mnt/v rw - ext4 /dev/loop0 rw',
    '51 50 7:1 / /mnt/v rw - xfs /dev/loop1 rw',
  ].join('\n'));
  assert.equal(findMount(stacked, '/mnt/v/f')?.source, '/dev/loop1');
});

test('findMount passes over a mount hidden because its parent was mounted over', () => {
  const hidden = parseMountinfo([
    '27 1 254:0 / / rw - ext4 /dev/vda rw',
    '50 27 7:0 / /mnt/v rw - ext4 /dev/loop0 rw',
    '52 50 7:2 / /mnt/v/deep rw - ext4 /dev/loop2 rw',
    '51 50 7:1 / /mnt/v rw - xfs /dev/loop1 rw',
  ].join('\n'));
  assert.equal(findMount(hidden, '/mnt/v/deep/f')?.source, '/dev/loop1');
  assert.equal(findMount(hidden, '/mnt/other')?.source, '/dev/vda');
  // a third mount stacked on the same point: only the top one is visible
  const triple = parseMountinfo(['27 1 254:0 / / rw - ext4 /dev/vda rw', '50 27 7:0 / /mnt/v rw - ext4 /dev/loop0 rw',
    '51 50 7:1 / /mnt/v rw - xfs /dev/loop1 rw', '53 51 7:3 / /mnt/v rw - xfs /dev/loop3 rw'].join('\n'));
  assert.equal(findMount(triple, '/mnt/v/f')?.source, '/dev/loop3');
  assert.equal(findMount(triple, '/mnt/v')?.mountId, 53);
});

test('findMount returns undefined for a relative path or an empty table', () => {
  assert.equal(findMount(all, 'mnt/x'), undefined);
  assert.equal(findMount([], '/x'), undefined);
  const noRoot: MountEntry[] = parseMountinfo('50 27 7:0 / /mnt/v rw - ext4 /dev/loop0 rw');
  assert.equal(findMount(noRoot, '/etc'), undefined);
});

test('mountsOfDevice lists every mount of one block device, bind mounts included', () => {
  assert.deepEqual(mountsOfDevice(all, 7, 3).map((e) => e.mountId), [90, 91]);
  assert.deepEqual(mountsOfDevice(all, 254, 0).map((e) => e.mountPoint), ['/']);
  assert.deepEqual(mountsOfDevice(all, 7, 4), []);
});

test('servableFsType accepts ext2, ext3, ext4 and XFS', () => {
  for (const t of ['ext2', 'ext3', 'ext4', 'xfs']) assert.deepEqual(servableFsType(t), { ok: true });
});

test('servableFsType refuses the rest with a reason', () => {
  const reason = (t: string) => {
    const r = servableFsType(t);
    assert.equal(r.ok, false, t);
    return r.ok ? '' : r.reason;
  };
  assert.equal(reason('btrfs'), 'physical addresses are not device offsets (btrfs)');
  assert.equal(reason('zfs'), 'physical addresses are not device offsets (zfs)');
  for (const t of ['tmpfs', 'overlay', 'nfs', 'nfs4', 'fuse.sshfs', 'fuse', 'cifs', 'proc']) {
    assert.equal(reason(t), `${t} is not a block-device file system`);
  }
  assert.match(reason('squashfs'), /compressed/);
  assert.match(reason('vfat'), /only ext2, ext3, ext4 and XFS.*vfat/);
  assert.match(reason(''), /unknown/);
});
