// Unit tests for device identities on a fake sysfs and /dev tree (no root, no devices).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { identityOfName, namesWithIdentity, type SysRoots } from './identity.js';

function fakeTree(files: Record<string, string>, links: Record<string, string> = {}): SysRoots & { top: string } {
  const top = mkdtempSync(join(tmpdir(), 'fused-identity-'));
  for (const [path, text] of Object.entries(files)) {
    mkdirSync(dirname(join(top, path)), { recursive: true });
    writeFileSync(join(top, path), text + '\n');
  }
  for (const [path, target] of Object.entries(links)) {
    mkdirSync(dirname(join(top, path)), { recursive: true });
    symlinkSync(target, join(top, path));
  }
  return { top, sys: join(top, 'sys'), dev: join(top, 'dev') };
}

test('device-mapper: the dm UUID, else the dm name', async () => {
  const t = fakeTree({
    'sys/class/block/dm-0/dm/uuid': 'LVM-abc123',
    'sys/class/block/dm-0/dm/name': 'vg-lv',
    'sys/class/block/dm-1/dm/uuid': '',
    'sys/class/block/dm-1/dm/name': 'fused-test',
  });
  try {
    assert.equal(await identityOfName('dm-0', t), 'dm-uuid:LVM-abc123');
    assert.equal(await identityOfName('dm-1', t), 'dm-name:fused-test');
  } finally {
    rmSync(t.top, { recursive: true });
  }
});

test('loop: the backing file; an unattached loop device has none', async () => {
  const t = fakeTree({ 'sys/class/block/loop3/loop/backing_file': '/srv/images/vol.img', 'sys/class/block/loop4/size': '0' });
  try {
    assert.equal(await identityOfName('loop3', t), 'loop:/srv/images/vol.img');
    assert.equal(await identityOfName('loop4', t), undefined);
  } finally {
    rmSync(t.top, { recursive: true });
  }
});

test('WWID from device/wwid or from wwid (NVMe); a partition is its disk plus its number', async () => {
  const t = fakeTree(
    {
      'sys/devices/pci0/host0/block/sda/device/wwid': 'naa.600a0b80001234',
      'sys/devices/pci0/host0/block/sda/sda2/partition': '2',
      'sys/devices/pci0/nvme/block/nvme0n1/wwid': 'eui.0025388b71b2c3d4',
      'sys/devices/pci0/nvme/block/nvme0n1/nvme0n1p1/partition': '1',
      'sys/devices/virtual/block/vda/vda1/partition': '1',
    },
    {
      'sys/class/block/sda': '../../devices/pci0/host0/block/sda',
      'sys/class/block/sda2': '../../devices/pci0/host0/block/sda/sda2',
      'sys/class/block/nvme0n1': '../../devices/pci0/nvme/block/nvme0n1',
      'sys/class/block/nvme0n1p1': '../../devices/pci0/nvme/block/nvme0n1/nvme0n1p1',
      'sys/class/block/vda': '../../devices/virtual/block/vda',
      'sys/class/block/vda1': '../../devices/virtual/block/vda/vda1',
    },
  );
  try {
    assert.equal(await identityOfName('sda', t), 'wwid:naa.600a0b80001234');
    assert.equal(await identityOfName('sda2', t), 'wwid:naa.600a0b80001234-part2');
    assert.equal(await identityOfName('nvme0n1', t), 'wwid:eui.0025388b71b2c3d4');
    assert.equal(await identityOfName('nvme0n1p1', t), 'wwid:eui.0025388b71b2c3d4-part1');
    // A disk with no identity gives its partitions none either (partition numbers alone identify nothing).
    assert.equal(await identityOfName('vda', t), undefined);
    assert.equal(await identityOfName('vda1', t), undefined);
  } finally {
    rmSync(t.top, { recursive: true });
  }
});

test('/dev/disk/by-id where udev made it: the first link (sorted) to the device', async () => {
  const t = fakeTree(
    { 'sys/class/block/vdb/size': '100', 'dev/vdb': '' },
    { 'dev/disk/by-id/virtio-serial42': '../../vdb', 'dev/disk/by-id/ata-DISK_7': '../../vdb', 'dev/disk/by-id/other': '../../vdc' },
  );
  try {
    assert.equal(await identityOfName('vdb', t), 'by-id:ata-DISK_7');
    assert.equal(await identityOfName('vdd', t), undefined);
  } finally {
    rmSync(t.top, { recursive: true });
  }
});

test('namesWithIdentity finds the recorded disk under a new name', async () => {
  const t = fakeTree({
    'sys/class/block/loop0/loop/backing_file': '/img/a.img',
    'sys/class/block/loop1/loop/backing_file': '/img/clone.img',
    'sys/class/block/loop7/loop/backing_file': '/img/a.img',
    'sys/class/block/dm-2/dm/name': 'x',
  });
  try {
    assert.deepEqual(await namesWithIdentity('loop:/img/a.img', ['dm-2', 'loop0', 'loop1', 'loop7'], t), ['loop0', 'loop7']);
    assert.deepEqual(await namesWithIdentity('loop:/img/gone.img', ['loop0', 'loop1'], t), []);
  } finally {
    rmSync(t.top, { recursive: true });
  }
});
