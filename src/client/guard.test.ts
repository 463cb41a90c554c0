// Unit tests for the mount guard: the udev rule writer and reader, and the fstab / mount-unit parsers.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FusedError } from '../errors.js';
import { findMountThreats, guardOf, guardRule, identityMatch, mountThreats, parseFstab, parseGuardRule, parseMountUnit, ruleFileName, rulesDir, type Guard } from './guard.js';

const UUID = '492b1d44-8fd1-4e96-9dcb-f8ccf6b367da';
const guard = (devices: Guard['devices']): Guard => ({ uuid: UUID, label: 'fused', fstype: 'ext4', devices });
const ruleLines = (text: string) => text.split('\n').filter((l) => l && !l.startsWith('#'));

test('the rule matches the volume UUID and sets UDISKS_IGNORE, UDISKS_AUTO and SYSTEMD_READY', () => {
  const text = guardRule(guard([{ path: '/dev/loop3' }]));
  assert.deepEqual(ruleLines(text), [
    `SUBSYSTEM=="block", ENV{ID_FS_UUID}=="${UUID}", ENV{UDISKS_IGNORE}="1", ENV{UDISKS_AUTO}="0", ENV{SYSTEMD_READY}="0"`,
  ]);
  assert.match(text, /# \/dev\/loop3: no stable identity; guarded by its UUID only/);
  assert.equal(ruleFileName(UUID), `61-fused-guard-${UUID}.rules`);
});

test('each device with a stable identity gets a line of its own', () => {
  const text = guardRule(guard([{ path: '/dev/loop3', identity: 'loop:/srv/vol.img' }, { path: '/dev/sdb', identity: 'wwid:naa.600a0b80' }]));
  const lines = ruleLines(text);
  assert.equal(lines.length, 3);
  assert.match(lines[1]!, /^SUBSYSTEM=="block", ATTR\{loop\/backing_file\}=="\/srv\/vol.img", ENV\{UDISKS_IGNORE\}="1"/);
  assert.match(lines[2]!, /^SUBSYSTEM=="block", ATTRS\{wwid\}=="naa.600a0b80", /);
});

test('identities become exact udev matches, or none', () => {
  assert.equal(identityMatch('dm-uuid:mpath-3600a0b8'), 'ENV{DM_UUID}=="mpath-3600a0b8"');
  assert.equal(identityMatch('dm-name:vg-lv'), 'ENV{DM_NAME}=="vg-lv"');
  assert.equal(identityMatch('wwid:naa.6001-part2'), 'ATTR{partition}=="2", ATTRS{wwid}=="naa.6001"');
  assert.equal(identityMatch('by-id:scsi-36001405abc-part1'), 'SYMLINK=="disk/by-id/scsi-36001405abc-part1"');
  // Glob characters, quotes and backslashes would widen or break the match: no line (the UUID line still guards).
  for (const bad of ['loop:/srv/vol*.img', 'loop:/srv/a"b', 'by-id:x?y', 'loop:/srv/[a]', 'dm-name:a\\b', 'loop:']) {
    assert.equal(identityMatch(bad), undefined, bad);
  }
  assert.equal(identityMatch('loop:/srv/vol.img-part1'), undefined);
  assert.equal(identityMatch('nonsense'), undefined);
  assert.equal(identityMatch('other:x'), undefined);
  assert.match(guardRule(guard([{ path: '/dev/loop1', identity: 'loop:/a*b' }])), /cannot be matched exactly by udev; guarded by its UUID only/);
});

test('a UUID udev cannot match exactly is refused', () => {
  assert.throws(() => guardRule({ ...guard([]), uuid: 'x*' }), FusedError);
  assert.throws(() => guardRule({ ...guard([]), uuid: '' }), FusedError);
});

test('the rule records what it guards, and reads back', () => {
  const g = guard([{ path: '/dev/loop3', identity: 'loop:/srv/vol.img' }]);
  assert.deepEqual(parseGuardRule(guardRule(g)), g);
  assert.equal(parseGuardRule('SUBSYSTEM=="block", ENV{UDISKS_IGNORE}="1"\n'), undefined);
  assert.equal(parseGuardRule('# fused-guard {not json\n'), undefined);
});

test('guardOf finds the rule of a volume in the rules directory, and only a fused one', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'fused-guard-'));
  try {
    assert.equal(await guardOf(UUID, dir), undefined);
    await writeFile(join(dir, ruleFileName(UUID)), 'ENV{UDISKS_IGNORE}="1"\n');
    assert.equal(await guardOf(UUID, dir), undefined);
    await writeFile(join(dir, ruleFileName(UUID)), guardRule(guard([])));
    assert.equal((await guardOf(UUID, dir))?.guard.uuid, UUID);
    assert.equal(await guardOf('', dir), undefined);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
  assert.equal(rulesDir(undefined, {}), '/etc/udev/rules.d');
  assert.equal(rulesDir(undefined, { FUSED_UDEV_RULES_DIR: '/tmp/r' }), '/tmp/r');
  assert.equal(rulesDir('/x', { FUSED_UDEV_RULES_DIR: '/tmp/r' }), '/x');
});

const FSTAB = `# /etc/fstab
UUID=1111-2222 / ext4 errors=remount-ro 0 1

  UUID=${UUID.toUpperCase()}	/srv/media	ext4	defaults,noatime	0	2
LABEL=fused /mnt/label\\040dir xfs noauto 0 0
UUID="${UUID}" /mnt/quoted ext4 defaults
/dev/disk/by-uuid/${UUID} /mnt/byuuid ext4 defaults
/dev/loop3 /mnt/loop ext4
/dev/mapper/vol /mnt/mapper ext4
tmpfs /tmp tmpfs defaults 0 0
server:/export /mnt/nfs nfs defaults 0 0
`;

test('parseFstab reads fields, octal escapes and options, skipping comments and blank lines', () => {
  const e = parseFstab(FSTAB, '/etc/fstab');
  assert.equal(e.length, 9);
  assert.deepEqual(e[0], { where: '/etc/fstab:2', spec: 'UUID=1111-2222', mountpoint: '/', options: ['errors=remount-ro'] });
  assert.equal(e[1]!.where, '/etc/fstab:4');
  assert.equal(e[2]!.mountpoint, '/mnt/label dir');
  assert.deepEqual(e[2]!.options, ['noauto']);
  assert.deepEqual(e[5]!.options, ['defaults']);
});

test('mountThreats finds every line that names the volume: UUID (any case, quoted), LABEL, by-uuid, its device', () => {
  const entries = parseFstab(FSTAB, 'fstab');
  const threats = mountThreats(entries, { uuid: UUID, label: 'fused', devices: ['/dev/loop3', '/dev/dm-2'] }, (s) => (s === '/dev/mapper/vol' ? '/dev/dm-2' : undefined));
  assert.deepEqual(threats.map((t) => [t.mountpoint, t.noauto]), [
    ['/srv/media', false], ['/mnt/label dir', true], ['/mnt/quoted', false], ['/mnt/byuuid', false], ['/mnt/loop', false], ['/mnt/mapper', false],
  ]);
  assert.match(threats[5]!.how, /\/dev\/mapper\/vol \(\/dev\/dm-2\)/);
  // Without a label, LABEL= lines name something else; other UUIDs never match.
  assert.equal(mountThreats(entries, { uuid: UUID, label: '', devices: [] }).length, 3);
  assert.equal(mountThreats(entries, { uuid: 'aaaa', label: '', devices: [] }).length, 0);
});

test('parseMountUnit reads [Mount] What=, Where= and Options=', () => {
  const unit = `[Unit]\nDescription=media\n# What=/dev/sdz\n[Mount]\nWhat=UUID=${UUID}\nWhere=/srv/media\nOptions=noauto,ro\n[Install]\nWantedBy=multi-user.target\n`;
  assert.deepEqual(parseMountUnit(unit, 'srv-media.mount'), { where: 'srv-media.mount', spec: `UUID=${UUID}`, mountpoint: '/srv/media', options: ['noauto', 'ro'] });
  assert.equal(parseMountUnit('[Unit]\nWhat=/dev/sda\n', 'x.mount'), undefined);
});

test('findMountThreats reads the fstab and the mount units; a missing fstab is none', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'fused-fstab-'));
  try {
    await mkdir(join(dir, 'units'));
    await writeFile(join(dir, 'fstab'), FSTAB);
    await writeFile(join(dir, 'units', 'srv-x.mount'), `[Mount]\nWhat=/dev/disk/by-uuid/${UUID}\nWhere=/srv/x\n`);
    await writeFile(join(dir, 'units', 'other.service'), `[Mount]\nWhat=UUID=${UUID}\n`);
    const t = await findMountThreats({ uuid: UUID, label: '', devices: [] }, join(dir, 'fstab'), [join(dir, 'units'), join(dir, 'none')]);
    assert.deepEqual(t.map((x) => x.mountpoint), ['/srv/media', '/mnt/quoted', '/mnt/byuuid', '/srv/x']);
    assert.deepEqual(await findMountThreats({ uuid: UUID, label: '', devices: [] }, join(dir, 'missing'), []), []);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
