// The mount guard: a udev rule that keeps this node's OS from mounting a shared volume (two mounters destroy it),
// and the fstab / systemd mount-unit entries that would mount it anyway.
import { execFile } from 'node:child_process';
import { access, mkdir, readFile, readdir, realpath, rename, stat, unlink, writeFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { promisify } from 'node:util';
import { FusedError, errnoCode, errorMessage } from '../errors.js';
import { checkDevice } from './devices.js';
import { deviceIdentity } from './identity.js';

export const DEFAULT_RULES_DIR = '/etc/udev/rules.d';
export const DEFAULT_FSTAB = '/etc/fstab';
export const MOUNT_UNIT_DIRS = ['/etc/systemd/system', '/run/systemd/system'];
/** After 60-persistent-storage.rules (which sets ID_FS_UUID), before udisks2's 80- and systemd's 99- rules. */
const RULE_PREFIX = '61-fused-guard-';
const HEADER = '# fused-guard ';
const UDEV_CONTROL = '/run/udev/control';

/** Where guard rules live: --rules-dir, else FUSED_UDEV_RULES_DIR (tests), else udev's own directory. */
export function rulesDir(given?: string, env = process.env): string {
  return given ?? env.FUSED_UDEV_RULES_DIR ?? DEFAULT_RULES_DIR;
}

export interface GuardedDevice { path: string; identity?: string }
/** What a rule file guards, as its header records it. */
export interface Guard { uuid: string; label: string; fstype: string; devices: GuardedDevice[] }

export const ruleFileName = (uuid: string) => `${RULE_PREFIX}${uuid}.rules`;

const UUID_RE = /^[0-9a-f][0-9a-f-]*$/;
/** Characters udev reads as glob patterns, quoting or escapes in a match value: such a value would match more
 *  than the one device, or break the rule, so it is left out (the UUID line still guards). */
const UNSAFE_VALUE = /["\\*?[\]|\n\r]/;

/** The udev keys that say "not mine to mount". Why each: see GUARD in fusedctl(1). */
const ASSIGN = 'ENV{UDISKS_IGNORE}="1", ENV{UDISKS_AUTO}="0", ENV{SYSTEMD_READY}="0"';

/** The udev match for a stable device identity (identity.ts), or undefined when udev cannot match it exactly. */
export function identityMatch(identity: string): string | undefined {
  const colon = identity.indexOf(':');
  if (colon < 0) return undefined;
  const kind = identity.slice(0, colon);
  let value = identity.slice(colon + 1);
  let part: string | undefined;
  const m = /^(.*)-part(\d+)$/.exec(value);
  // A by-id link names the partition itself; the others are the disk's identity plus the partition number.
  if (m && kind !== 'by-id') {
    value = m[1]!;
    part = m[2]!;
  }
  if (!value || UNSAFE_VALUE.test(value)) return undefined;
  const onPart = part ? `ATTR{partition}=="${part}", ` : '';
  switch (kind) {
    case 'dm-uuid': return part ? undefined : `ENV{DM_UUID}=="${value}"`;
    case 'dm-name': return part ? undefined : `ENV{DM_NAME}=="${value}"`;
    case 'loop': return part ? undefined : `ATTR{loop/backing_file}=="${value}"`;
    // ATTRS walks up the parents: the disk's (or its SCSI device's) wwid, for the disk and its partitions.
    case 'wwid': return `${onPart}ATTRS{wwid}=="${value}"`;
    case 'by-id': return `SYMLINK=="disk/by-id/${value}"`;
    default: return undefined;
  }
}

/** The rule file's text for GUARD. */
export function guardRule(guard: Guard): string {
  if (!UUID_RE.test(guard.uuid)) throw new FusedError('failure', `not a file-system UUID udev can match: '${guard.uuid}'`);
  const lines = [
    `# fused mount guard for volume UUID ${guard.uuid}: this node reaches the volume through fused only and must`,
    '# never mount it (two nodes mounting one ext4/XFS file system destroy it). Written by fusedctl guard;',
    '# removed by fusedctl unguard. The next line records what is guarded.',
    HEADER + JSON.stringify(guard),
    `SUBSYSTEM=="block", ENV{ID_FS_UUID}=="${guard.uuid}", ${ASSIGN}`,
  ];
  for (const d of guard.devices) {
    const match = d.identity ? identityMatch(d.identity) : undefined;
    if (match) lines.push(`SUBSYSTEM=="block", ${match}, ${ASSIGN}`);
    else lines.push(`# ${d.path}: ${d.identity ? `identity ${JSON.stringify(d.identity)} cannot be matched exactly by udev` : 'no stable identity'}; guarded by its UUID only`);
  }
  return lines.join('\n') + '\n';
}

/** The guard a rule file records, or undefined if it is not a fused guard rule. */
export function parseGuardRule(text: string): Guard | undefined {
  const line = text.split('\n').find((l) => l.startsWith(HEADER));
  if (!line) return undefined;
  try {
    const g = JSON.parse(line.slice(HEADER.length)) as Partial<Guard>;
    if (typeof g.uuid !== 'string' || !Array.isArray(g.devices)) return undefined;
    return { uuid: g.uuid, label: g.label ?? '', fstype: g.fstype ?? '', devices: g.devices.filter((d) => typeof d?.path === 'string') };
  } catch {
    return undefined;
  }
}

// --- fstab and systemd mount units -------------------------------------------------------------------------

export interface MountEntry {
  /** Where it was found: "FILE:LINE" for fstab, the unit file for systemd. */
  where: string;
  spec: string;
  mountpoint: string;
  options: string[];
}

/** fstab's octal escapes (\040 for a space). */
const unescape = (s: string) => s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));

export function parseFstab(text: string, file: string): MountEntry[] {
  const out: MountEntry[] = [];
  text.split('\n').forEach((raw, i) => {
    const line = raw.trim();
    if (!line || line.startsWith('#')) return;
    const [spec, mountpoint, , opts] = line.split(/\s+/);
    if (!spec || !mountpoint) return;
    out.push({ where: `${file}:${i + 1}`, spec: unescape(spec), mountpoint: unescape(mountpoint), options: (opts ?? 'defaults').split(',') });
  });
  return out;
}

/** A systemd .mount unit's What=, Where= and Options= (the last of each wins, as systemd reads them). */
export function parseMountUnit(text: string, file: string): MountEntry | undefined {
  let section = '';
  const keys: Record<string, string> = {};
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (!line || line.startsWith('#') || line.startsWith(';')) continue;
    const sec = /^\[(.+)\]$/.exec(line);
    if (sec) {
      section = sec[1]!;
      continue;
    }
    const kv = /^(\w+)\s*=\s*(.*)$/.exec(line);
    if (section === 'Mount' && kv) keys[kv[1]!] = kv[2]!;
  }
  if (!keys.What) return undefined;
  return { where: file, spec: keys.What, mountpoint: keys.Where ?? '', options: (keys.Options ?? '').split(',').filter(Boolean) };
}

/** What identifies the volume's file system in an fstab spec. */
export interface MountTarget { uuid: string; label: string; devices: string[] }

/** How SPEC names the volume (UUID=, LABEL=, a /dev/disk/by-uuid or by-label link, one of its device paths), or
 *  undefined when it names something else. A spec already resolved to its device node comes in `resolved`. */
export function specNames(spec: string, target: MountTarget, resolved?: string): string | undefined {
  const unquote = (v: string) => v.replace(/^"(.*)"$/, '$1');
  const kv = /^(UUID|LABEL)=(.*)$/i.exec(spec);
  if (kv) {
    const value = unquote(kv[2]!);
    if (kv[1]!.toUpperCase() === 'UUID') return value.toLowerCase() === target.uuid ? `UUID=${value}` : undefined;
    return target.label && value === target.label ? `LABEL=${value} (the volume's label)` : undefined;
  }
  if (spec === `/dev/disk/by-uuid/${target.uuid}`) return spec;
  if (target.label && spec === `/dev/disk/by-label/${target.label}`) return `${spec} (the volume's label)`;
  if (target.devices.includes(spec)) return spec;
  if (resolved && target.devices.includes(resolved)) return `${spec} (${resolved})`;
  return undefined;
}

export interface MountThreat { where: string; spec: string; mountpoint: string; how: string; noauto: boolean }

/** The entries that would mount the volume; RESOLVE maps a /dev path to its device node where it can. */
export function mountThreats(entries: readonly MountEntry[], target: MountTarget, resolve: (spec: string) => string | undefined = () => undefined): MountThreat[] {
  const out: MountThreat[] = [];
  for (const e of entries) {
    const how = specNames(e.spec, target, e.spec.startsWith('/') ? resolve(e.spec) : undefined);
    if (how) out.push({ where: e.where, spec: e.spec, mountpoint: e.mountpoint, how, noauto: e.options.includes('noauto') });
  }
  return out;
}

export function describeThreat(t: MountThreat): string {
  return `${t.where}: ${t.how} would mount the volume at ${t.mountpoint || '?'}${t.noauto ? ' (noauto: only by hand)' : ''}; remove it: two nodes mounting one volume destroy it`;
}

/** fstab (FSTAB) and the systemd mount units in UNIT_DIRS that would mount the volume. A missing file is none. */
export async function findMountThreats(target: MountTarget, fstab = DEFAULT_FSTAB, unitDirs = MOUNT_UNIT_DIRS): Promise<MountThreat[]> {
  const entries: MountEntry[] = [];
  const text = await readFile(fstab, 'utf8').catch((err) => {
    if (errnoCode(err) === 'ENOENT') return '';
    throw new FusedError('failure', errorMessage(err), fstab);
  });
  entries.push(...parseFstab(text, fstab));
  for (const dir of unitDirs) {
    const names = await readdir(dir).catch(() => [] as string[]);
    for (const name of names.filter((n) => n.endsWith('.mount')).sort()) {
      const unit = await readFile(join(dir, name), 'utf8').catch(() => undefined);
      const e = unit === undefined ? undefined : parseMountUnit(unit, join(dir, name));
      if (e) entries.push(e);
    }
  }
  const resolved = new Map<string, string | undefined>();
  for (const e of entries) {
    if (e.spec.startsWith('/dev/')) resolved.set(e.spec, await realpath(e.spec).catch(() => undefined));
  }
  return mountThreats(entries, target, (s) => resolved.get(s));
}

// --- guard state, writing and removing ---------------------------------------------------------------------

/** The guard rule for volume UUID in DIR, if any. */
export async function guardOf(uuid: string, dir = rulesDir()): Promise<{ file: string; guard: Guard } | undefined> {
  if (!uuid) return undefined;
  const file = join(dir, ruleFileName(uuid));
  const text = await readFile(file, 'utf8').catch(() => undefined);
  const guard = text === undefined ? undefined : parseGuardRule(text);
  return guard?.uuid === uuid ? { file, guard } : undefined;
}

/** One line for `fusedctl fuse` when the fused volume has no guard on this node; undefined when it has one. */
export async function unguardedWarning(uuid: string, device: string, dir = rulesDir()): Promise<string | undefined> {
  if (await guardOf(uuid, dir)) return undefined;
  return `no mount guard: this node's OS may mount the shared volume itself (fusedctl guard ${device})`;
}

export async function udevRunning(): Promise<boolean> {
  return access(UDEV_CONTROL).then(() => true, () => false);
}

const run = promisify(execFile);

/** Whether udev's database shows the guard's keys on DEVICE; undefined when udevd does not run (no database to ask). */
export async function udevApplied(device: string): Promise<boolean | undefined> {
  if (!(await udevRunning())) return undefined;
  try {
    const { stdout } = await run('udevadm', ['info', '--query=property', `--name=${device}`], { timeout: 10_000 });
    return /^UDISKS_IGNORE=1$/m.test(stdout);
  } catch {
    return undefined;
  }
}

/** Make udev read the rules again and re-run them for DEVICE, when udevd runs; what happened, in words. */
async function reloadUdev(device: string): Promise<string> {
  if (!(await udevRunning())) return 'udev is not running: it reads the rules when it starts';
  try {
    await run('udevadm', ['control', '--reload'], { timeout: 30_000 });
    const name = basename(await realpath(device));
    await run('udevadm', ['trigger', '--action=change', '--settle', `/sys/class/block/${name}`], { timeout: 30_000 });
    return 'udev reloaded and the device re-triggered';
  } catch (err) {
    return `udev reload failed: ${errorMessage(err).split('\n')[0]}`;
  }
}

export interface GuardResult {
  file: string;
  guard: Guard;
  /** Entries in fstab or systemd mount units that would mount the volume. */
  threats: MountThreat[];
  /** Where the device is mounted on this node right now (it never should be). */
  mountedAt: string[];
  udev: string;
}

/** Write (or extend) the guard rule for the volume on DEVICE. */
export async function guardDevice(device: string, opts: { rulesDir?: string; fstab?: string; unitDirs?: string[] } = {}): Promise<GuardResult> {
  const dir = rulesDir(opts.rulesDir);
  const d = await checkDevice(device);
  if (!d.identity) throw new FusedError('failure', 'no ext2/3/4 or XFS superblock: nothing to guard', device);
  if (!d.identity.uuid) throw new FusedError('failure', 'the file system has no UUID, so udev cannot recognise it', device);
  const path = await realpath(device);
  const identity = await deviceIdentity(path);
  const old = await guardOf(d.identity.uuid, dir);
  const devices = [...(old?.guard.devices ?? []).filter((x) => x.path !== path), { path, ...(identity ? { identity } : {}) }];
  const guard: Guard = { uuid: d.identity.uuid, label: d.identity.label, fstype: d.identity.fstype, devices };
  const file = join(dir, ruleFileName(guard.uuid));
  try {
    await mkdir(dir, { recursive: true, mode: 0o755 });
    const tmp = join(dir, `.${ruleFileName(guard.uuid)}.${process.pid}.tmp`);
    await writeFile(tmp, guardRule(guard), { mode: 0o644 });
    await rename(tmp, file);
  } catch (err) {
    throw new FusedError('failure', errorMessage(err), file);
  }
  const threats = await findMountThreats({ uuid: guard.uuid, label: guard.label, devices: devices.map((x) => x.path).concat(device) }, opts.fstab, opts.unitDirs);
  return { file, guard, threats, mountedAt: d.mountedAt, udev: await reloadUdev(path) };
}

/** Remove the guard of the volume on DEVICE, or of volume UUID given as the argument. */
export async function unguardDevice(deviceOrUuid: string, opts: { rulesDir?: string } = {}): Promise<{ file: string; guard: Guard; udev: string }> {
  const dir = rulesDir(opts.rulesDir);
  let uuid: string;
  const isDevice = await stat(deviceOrUuid).then((s) => s.isBlockDevice(), () => false);
  if (isDevice) {
    const d = await checkDevice(deviceOrUuid);
    if (!d.identity?.uuid) throw new FusedError('failure', 'no ext2/3/4 or XFS superblock with a UUID (give the volume UUID instead)', deviceOrUuid);
    uuid = d.identity.uuid;
  } else if (UUID_RE.test(deviceOrUuid)) {
    uuid = deviceOrUuid;
  } else {
    throw new FusedError('failure', 'neither a block device nor a volume UUID', deviceOrUuid);
  }
  const found = await guardOf(uuid, dir);
  if (!found) throw new FusedError('failure', `not guarded (no ${ruleFileName(uuid)} in ${dir})`, deviceOrUuid);
  try {
    await unlink(found.file);
  } catch (err) {
    throw new FusedError('failure', errorMessage(err), found.file);
  }
  return { ...found, udev: isDevice ? await reloadUdev(deviceOrUuid) : await reloadRulesOnly() };
}

async function reloadRulesOnly(): Promise<string> {
  if (!(await udevRunning())) return 'udev is not running';
  return run('udevadm', ['control', '--reload'], { timeout: 30_000 }).then(() => 'udev reloaded', (err) => `udev reload failed: ${errorMessage(err).split('\n')[0]}`);
}
