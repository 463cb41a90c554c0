// Parses /proc/self/mountinfo and answers which mount holds a path and whether fused can serve its type.

export interface MountEntry {
  mountId: number;
  parentId: number;
  major: number;
  minor: number;
  root: string;
  mountPoint: string;
  options: string;
  fstype: string;
  source: string;
  superOptions: string;
}

/** Parse /proc/self/mountinfo text (octal escapes like \040 \011 \012 \134 decoded; optional fields up to '-').
 *  Lines that do not have the mountinfo shape are skipped. */
export function parseMountinfo(text: string): MountEntry[] {
  const entries: MountEntry[] = [];
  for (const line of text.split('\n')) {
    const entry = parseLine(line);
    if (entry) entries.push(entry);
  }
  return entries;
}

function parseLine(line: string): MountEntry | null {
  // Fields are separated by exactly one space; the kernel escapes spaces inside fields, and a field such
  // as the source may be empty, so splitting on runs of white space would misalign them.
  const f = line.split(' ');
  const sep = f.indexOf('-', 6);
  if (f.length < 10 || sep < 0 || f.length - sep !== 4) return null;
  const devMatch = /^(\d+):(\d+)$/.exec(f[2]!);
  const mountId = parseId(f[0]!);
  const parentId = parseId(f[1]!);
  if (!devMatch || mountId === null || parentId === null) return null;
  return {
    mountId,
    parentId,
    major: Number(devMatch[1]),
    minor: Number(devMatch[2]),
    root: unescapeOctal(f[3]!),
    mountPoint: unescapeOctal(f[4]!),
    options: f[5]!,
    fstype: unescapeOctal(f[sep + 1]!),
    source: unescapeOctal(f[sep + 2]!),
    superOptions: f[sep + 3]!,
  };
}

function parseId(s: string): number | null {
  return /^\d{1,15}$/.test(s) ? Number(s) : null;
}

/** The kernel writes space, tab, newline and backslash in paths as \ooo octal. */
function unescapeOctal(s: string): string {
  if (!s.includes('\\')) return s;
  // Decode to bytes first: a name in UTF-8 may have been escaped byte by byte.
  const bytes: number[] = [];
  const raw = Buffer.from(s, 'utf8');
  for (let i = 0; i < raw.length; i++) {
    if (raw[i] === 0x5c && isOctal(raw, i + 1)) {
      bytes.push(parseInt(raw.subarray(i + 1, i + 4).toString('latin1'), 8));
      i += 3;
    } else {
      bytes.push(raw[i]!);
    }
  }
  return Buffer.from(bytes).toString('utf8');
}

function isOctal(raw: Buffer, at: number): boolean {
  if (at + 3 > raw.length) return false;
  for (let k = at; k < at + 3; k++) if (raw[k]! < 0x30 || raw[k]! > 0x37) return false;
  return raw[at]! <= 0x33; // \000..\377: one byte
}

/** The mount that holds absolute, already-resolved path p: the entry whose mountPoint is the longest prefix of p
 *  at a path-component boundary; among equal mount points the one listed last (it is on top). A mount that
 *  is hidden because it or one of its ancestors was mounted over is passed over. */
export function findMount(entries: readonly MountEntry[], p: string): MountEntry | undefined {
  if (!p.startsWith('/')) return undefined;
  const candidates = entries
    .map((entry, index) => ({ entry, index }))
    .filter(({ entry }) => isUnder(p, entry.mountPoint))
    .sort((a, b) => b.entry.mountPoint.length - a.entry.mountPoint.length || b.index - a.index);
  if (candidates.length === 0) return undefined;
  const visible = candidates.find(({ entry }) => !isHidden(entries, entry));
  return (visible ?? candidates[0]!).entry;
}

function isUnder(p: string, mountPoint: string): boolean {
  if (mountPoint === '/') return true;
  const mp = mountPoint.endsWith('/') ? mountPoint.slice(0, -1) : mountPoint;
  return p === mp || p.startsWith(mp + '/');
}

/** Whether a mount, or any mount above it in the tree, has another mount stacked on its mount point. */
function isHidden(entries: readonly MountEntry[], entry: MountEntry): boolean {
  const byId = new Map(entries.map((e) => [e.mountId, e]));
  const seen = new Set<number>();
  let below: MountEntry | undefined;
  for (let e: MountEntry | undefined = entry; e && !seen.has(e.mountId); below = e, e = byId.get(e.parentId)) {
    seen.add(e.mountId);
    const cur = e;
    // The mount we came up from may itself be the one stacked on cur: that is the visible path, not a cover.
    const covered = entries.some((o) => o !== cur && o !== below && o.parentId === cur.mountId
      && o.mountPoint === cur.mountPoint);
    if (covered) return true;
  }
  return false;
}

/** Entries mounted from block device major:minor. */
export function mountsOfDevice(entries: readonly MountEntry[], major: number, minor: number): MountEntry[] {
  return entries.filter((e) => e.major === major && e.minor === minor);
}

const SERVABLE = new Set(['ext2', 'ext3', 'ext4', 'xfs']);
// Block-device file systems whose FIEMAP physical addresses are not offsets on one device.
const NOT_DEVICE_OFFSETS = new Set(['btrfs', 'zfs', 'bcachefs']);
// File systems with no block device of their own underneath: memory, network, stacked, pseudo.
const NOT_BLOCK_DEVICE = new Set([
  'tmpfs', 'ramfs', 'overlay', 'overlayfs', 'aufs', 'unionfs', 'nfs', 'nfs4', 'cifs', 'smb3', 'smbfs', '9p',
  'virtiofs', 'ceph', 'glusterfs', 'lustre', 'afs', 'fuse', 'fuseblk', 'proc', 'sysfs', 'devtmpfs', 'devpts',
  'cgroup', 'cgroup2', 'debugfs', 'tracefs', 'securityfs', 'configfs', 'mqueue', 'hugetlbfs', 'bpf', 'pstore',
  'autofs', 'binfmt_misc', 'efivarfs', 'fusectl', 'rpc_pipefs', 'nsfs',
]);
// Block-device file systems that keep data compressed or packed, so blocks never hold the plain bytes.
const NOT_PLAIN_BLOCKS = new Set(['squashfs', 'erofs', 'cramfs']);

/** Whether fused can serve this file-system type; if not, the reason. */
export function servableFsType(fstype: string): { ok: true } | { ok: false; reason: string } {
  if (SERVABLE.has(fstype)) return { ok: true };
  if (NOT_DEVICE_OFFSETS.has(fstype)) {
    return { ok: false, reason: `physical addresses are not device offsets (${fstype})` };
  }
  if (NOT_BLOCK_DEVICE.has(fstype) || fstype.startsWith('fuse.')) {
    return { ok: false, reason: `${fstype} is not a block-device file system` };
  }
  if (NOT_PLAIN_BLOCKS.has(fstype)) {
    return { ok: false, reason: `${fstype} stores file data compressed, not in plain blocks` };
  }
  if (fstype === '') return { ok: false, reason: 'unknown file-system type' };
  return { ok: false, reason: `fused serves only ext2, ext3, ext4 and XFS volumes, not ${fstype}` };
}
