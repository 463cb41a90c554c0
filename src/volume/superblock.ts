// Identifies an ext2/3/4 or XFS volume from the head of its block device, the way libblkid does.

export type FsType = 'ext2' | 'ext3' | 'ext4' | 'xfs';

export interface VolumeIdentity {
  fstype: FsType;
  /** Lower-case 8-4-4-4-12; '' when the superblock's UUID is all zeros (blkid shows none then). */
  uuid: string;
  label: string;
  blockSize: number;
  /** blocks * blockSize */
  sizeBytes: number;
  /** sb_rblocks > 0 or sb_rextents > 0 (a realtime device is configured) */
  xfsRealtime: boolean;
}

/** How much of the device head the caller reads (O_DIRECT, aligned). */
export const PROBE_BYTES = 65536;

/** Identify an ext2/3/4 or XFS superblock in the first PROBE_BYTES of a device; null if neither. */
export function probeSuperblock(head: Buffer): VolumeIdentity | null {
  const ext = probeExt(head);
  const xfs = probeXfs(head);
  // Two valid signatures (a file system made over another without wiping) is ambivalent, as blkid says;
  // fused must not guess which one the device holds.
  if (ext && xfs) return null;
  return ext ?? xfs;
}

// ---- ext2/3/4 ----------------------------------------------------------------------------------------------

const EXT_SB = 1024;
const EXT_MAGIC = 0xef53;
const EXT_COMPAT_HAS_JOURNAL = 0x4;
const EXT_INCOMPAT_FILETYPE = 0x2;
const EXT_INCOMPAT_RECOVER = 0x4;
const EXT_INCOMPAT_JOURNAL_DEV = 0x8;
const EXT_INCOMPAT_META_BG = 0x10;
const EXT_INCOMPAT_64BIT = 0x80;
const EXT_RO_COMPAT_SPARSE_SUPER = 0x1;
const EXT_RO_COMPAT_LARGE_FILE = 0x2;
const EXT_RO_COMPAT_BTREE_DIR = 0x4;
const EXT_RO_COMPAT_METADATA_CSUM = 0x400;
// What ext2 and ext3 understand; any other feature bit makes it ext4 (libblkid's rule, which is what
// blkid, mount and udev report, so fused names volumes the same way).
const EXT2_INCOMPAT_SUPP = EXT_INCOMPAT_FILETYPE | EXT_INCOMPAT_META_BG;
const EXT3_INCOMPAT_SUPP = EXT2_INCOMPAT_SUPP | EXT_INCOMPAT_RECOVER;
const EXT23_RO_COMPAT_SUPP = EXT_RO_COMPAT_SPARSE_SUPER | EXT_RO_COMPAT_LARGE_FILE | EXT_RO_COMPAT_BTREE_DIR;

function probeExt(head: Buffer): VolumeIdentity | null {
  if (head.length < EXT_SB + 1024) return null;
  const sb = head.subarray(EXT_SB, EXT_SB + 1024);
  if (sb.readUInt16LE(0x38) !== EXT_MAGIC) return null;

  const inodes = sb.readUInt32LE(0x00);
  const blocksLo = sb.readUInt32LE(0x04);
  const firstDataBlock = sb.readUInt32LE(0x14);
  const logBlockSize = sb.readUInt32LE(0x18);
  const blocksPerGroup = sb.readUInt32LE(0x20);
  const inodesPerGroup = sb.readUInt32LE(0x28);
  const revLevel = sb.readUInt32LE(0x4c);
  const compat = sb.readUInt32LE(0x5c);
  const incompat = sb.readUInt32LE(0x60);
  const roCompat = sb.readUInt32LE(0x64);

  if (logBlockSize > 6) return null; // 1 KiB .. 64 KiB
  const blockSize = 1024 << logBlockSize;
  const blocksHi = incompat & EXT_INCOMPAT_64BIT ? sb.readUInt32LE(0x150) : 0;
  const blocks = blocksHi * 2 ** 32 + blocksLo;
  const sizeBytes = blocks * blockSize;
  if (blocks === 0 || !Number.isSafeInteger(sizeBytes)) return null;
  if (inodes === 0 || blocksPerGroup === 0 || inodesPerGroup === 0 || revLevel > 1) return null;
  if (firstDataBlock >= blocks) return null;
  // metadata_csum covers the superblock: a mismatch means a torn or stale superblock, which blkid rejects too.
  if (roCompat & EXT_RO_COMPAT_METADATA_CSUM && crc32cRaw(sb.subarray(0, 0x3fc)) !== sb.readUInt32LE(0x3fc)) {
    return null;
  }

  // An external journal device carries an ext superblock but holds no files (blkid calls it jbd).
  if (incompat & EXT_INCOMPAT_JOURNAL_DEV) return null;
  let fstype: FsType;
  const hasJournal = (compat & EXT_COMPAT_HAS_JOURNAL) !== 0;
  const beyondExt3 = (roCompat & ~EXT23_RO_COMPAT_SUPP) !== 0 || (incompat & ~EXT3_INCOMPAT_SUPP) !== 0;
  const beyondExt2 = (roCompat & ~EXT23_RO_COMPAT_SUPP) !== 0 || (incompat & ~EXT2_INCOMPAT_SUPP) !== 0;
  if (beyondExt3) fstype = 'ext4';
  else if (hasJournal) fstype = 'ext3';
  else if (!beyondExt2) fstype = 'ext2';
  else return null; // needs_recovery without a journal: nothing libblkid recognises

  return {
    fstype,
    uuid: formatUuid(sb.subarray(0x68, 0x78)),
    label: blkidLabel(sb.subarray(0x78, 0x88)),
    blockSize,
    sizeBytes,
    xfsRealtime: false,
  };
}

// ---- XFS ---------------------------------------------------------------------------------------------------

const XFS_MAGIC = 0x58465342; // 'XFSB'
const XFS_SB_VERSION_NUMBITS = 0x000f;
const XFS_SB_VERSION_MOREBITSBIT = 0x8000;
const XFS_SB_VERSION2_CRCBIT = 0x100;
const XFS_SB_CRC_OFFSET = 224;

function probeXfs(head: Buffer): VolumeIdentity | null {
  if (head.length < 512 || head.readUInt32BE(0) !== XFS_MAGIC) return null;
  const blockSize = head.readUInt32BE(4);
  const dblocks = readU64BE(head, 8);
  const rblocks = readU64BE(head, 16);
  const rextents = readU64BE(head, 24);
  const rextsize = head.readUInt32BE(80);
  const agblocks = head.readUInt32BE(84);
  const agcount = head.readUInt32BE(88);
  const versionnum = head.readUInt16BE(100);
  const sectsize = head.readUInt16BE(102);
  const inodesize = head.readUInt16BE(104);
  const blocklog = head.readUInt8(120);
  const sectlog = head.readUInt8(121);
  const inodelog = head.readUInt8(122);
  const inopblog = head.readUInt8(123);
  const inprogress = head.readUInt8(126);
  const imaxPct = head.readUInt8(127);
  const features2 = head.readUInt32BE(200);

  // The same sanity checks as the kernel's and libblkid's superblock verifier.
  if (agcount === 0 || agblocks === 0) return null;
  if (sectlog < 9 || sectlog > 15 || sectsize !== 1 << sectlog) return null;
  if (blocklog < 9 || blocklog > 16 || blockSize !== 2 ** blocklog) return null;
  if (inodelog < 8 || inodelog > 11 || inodesize !== 1 << inodelog) return null;
  if (blocklog - inodelog !== inopblog) return null;
  const rtextBytes = rextsize * blockSize;
  if (rtextBytes < 4096 || rtextBytes > 2 ** 30) return null;
  if (imaxPct > 100 || inprogress !== 0) return null;
  const version = versionnum & XFS_SB_VERSION_NUMBITS;
  if (version < 1 || version > 5) return null;
  if (dblocks === undefined || rblocks === undefined || rextents === undefined) return null;
  if (dblocks === 0 || dblocks > agcount * agblocks || dblocks < (agcount - 1) * agblocks + 64) return null;
  const sizeBytes = dblocks * blockSize;
  if (!Number.isSafeInteger(sizeBytes)) return null;
  if (version === 5) {
    if (!(versionnum & XFS_SB_VERSION_MOREBITSBIT) || !(features2 & XFS_SB_VERSION2_CRCBIT)) return null;
    if (head.length < sectsize) return null;
    // The v5 superblock CRC covers the whole sector with the CRC field itself taken as zero; it is stored
    // little-endian although every other field is big-endian.
    const sector = Buffer.from(head.subarray(0, sectsize));
    sector.writeUInt32LE(0, XFS_SB_CRC_OFFSET);
    if ((~crc32cRaw(sector)) >>> 0 !== head.readUInt32LE(XFS_SB_CRC_OFFSET)) return null;
  }

  return {
    fstype: 'xfs',
    uuid: formatUuid(head.subarray(32, 48)),
    label: blkidLabel(head.subarray(108, 120)),
    blockSize,
    sizeBytes,
    xfsRealtime: rblocks > 0 || rextents > 0,
  };
}

// ---- helpers -----------------------------------------------------------------------------------------------

/** A big-endian u64 as a number, or undefined when it does not fit a safe integer. */
function readU64BE(buf: Buffer, off: number): number | undefined {
  const v = buf.readBigUInt64BE(off);
  return v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : undefined;
}

function formatUuid(bytes: Buffer): string {
  if (bytes.every((b) => b === 0)) return '';
  const h = bytes.toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20, 32)}`;
}

/** A NUL-padded label as blkid shows it: up to the first NUL, trailing white space removed. */
function blkidLabel(field: Buffer): string {
  const nul = field.indexOf(0);
  const raw = nul < 0 ? field : field.subarray(0, nul);
  return raw.toString('utf8').replace(/[ \t\n\v\f\r]+$/, '');
}

const CRC32C_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0x82f63b78 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

/** CRC-32C seeded with ~0 and without the final inversion, as ext4 and XFS compute it on disk. */
function crc32cRaw(data: Uint8Array): number {
  let crc = 0xffffffff;
  for (let i = 0; i < data.length; i++) crc = CRC32C_TABLE[(crc ^ data[i]!) & 0xff]! ^ (crc >>> 8);
  return crc >>> 0;
}
