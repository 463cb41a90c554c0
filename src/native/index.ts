// Typed, promise-returning wrappers over the native addon: validation and defaults live here, syscalls in C++.
import { constants as bufferConstants } from 'node:buffer';
import { addon, type NativeConstants } from './addon.js';

export interface FiemapExtent { logical: number; physical: number; length: number; flags: number }
export interface DeviceInfo { isBlockDevice: boolean; size: number; logicalSectorSize: number;
  physicalSectorSize: number; rdevMajor: number; rdevMinor: number }
export type Advice = 'normal'|'sequential'|'random'|'willneed'|'dontneed'|'noreuse';
export interface FallocateMode { keepSize?: boolean; punchHole?: boolean; zeroRange?: boolean; writeZeroes?: boolean }
export type LeaseType = 'read' | 'write' | 'none';

// Argument errors look like Node's own (TypeError/RangeError with an ERR_* code).
function argError(Kind: typeof TypeError | typeof RangeError, code: string, message: string): Error {
  const err = new Kind(message);
  (err as NodeJS.ErrnoException).code = code;
  return err;
}

function checkFd(fd: unknown): asserts fd is number {
  if (!Number.isInteger(fd) || (fd as number) < 0 || (fd as number) > 0x7fffffff) {
    throw argError(TypeError, 'ERR_INVALID_ARG_TYPE', `fd must be a non-negative 32-bit integer, got ${String(fd)}`);
  }
}

function checkOffset(name: string, value: unknown): asserts value is number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0) {
    throw argError(RangeError, 'ERR_OUT_OF_RANGE', `${name} must be a non-negative safe integer, got ${String(value)}`);
  }
}

function checkPath(name: string, value: unknown): asserts value is string {
  if (typeof value !== 'string' || value.length === 0) {
    throw argError(TypeError, 'ERR_INVALID_ARG_TYPE', `${name} must be a non-empty string`);
  }
  if (value.includes('\0')) throw argError(TypeError, 'ERR_INVALID_ARG_VALUE', `${name} must not contain NUL`);
}

/** FS_IOC_FIEMAP on an open fd. sync (default true) sets FIEMAP_FLAG_SYNC. Every extent as the kernel gave it,
 *  batch after batch until FIEMAP_EXTENT_LAST (no merging: callers do that). The addon works on its own dup of
 *  fd. More than maxExtents (default: no limit) fails with code 'E2BIG' before more memory is spent. */
export async function fiemap(fd: number, opts: { sync?: boolean; maxExtents?: number } = {}): Promise<FiemapExtent[]> {
  checkFd(fd);
  const packed = await addon().fiemap(fd, opts.sync ?? true, opts.maxExtents ?? Number.MAX_SAFE_INTEGER);
  const extents: FiemapExtent[] = new Array(packed.length / 4);
  for (let i = 0, j = 0; j < packed.length; i++, j += 4) {
    extents[i] = { logical: packed[j]!, physical: packed[j + 1]!, length: packed[j + 2]!, flags: packed[j + 3]! };
  }
  return extents;
}

/** Inode attribute flags (FS_IOC_GETFLAGS), e.g. INODE_FLAGS.ENCRYPT. Synchronous: one quick ioctl. */
export function inodeFlags(fd: number): number {
  checkFd(fd);
  return addon().inodeFlags(fd);
}

/** Turn O_DIRECT on or off on fd's open file description (fcntl F_SETFL: every dup of fd sees it); returns
 *  whether it was on before. Unlike a second open of the file, this never breaks a kernel lease held on it.
 *  Synchronous: two quick fcntl calls. 'EINVAL' where the file system has no direct I/O. */
export function setDirect(fd: number, on: boolean): boolean {
  checkFd(fd);
  if (typeof on !== 'boolean') throw argError(TypeError, 'ERR_INVALID_ARG_TYPE', 'on must be a boolean');
  return addon().setDirect(fd, on);
}

/** The FS_IOC_GETFLAGS bits fused cares about (linux/fs.h). */
export const INODE_FLAGS = { COMPR: 0x4, ENCRYPT: 0x800, JOURNAL_DATA: 0x4000, NOCOW: 0x800000, DAX: 0x2000000, INLINE_DATA: 0x10000000 } as const;

/** Open `rel` beneath directory `root` with openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS); regular files
 *  only ('ENOTREG' otherwise), dev/ino checked between the O_PATH probe and the real open ('ESTALE').
 *  Escapes fail with 'EXDEV'. A string `rel` is taken as UTF-8; a Buffer carries any bytes but NUL. */
export async function openBeneath(root: string, rel: Buffer | string, opts: { write?: boolean } = {}): Promise<number> {
  return addon().openBeneath(root, beneathArgs(root, rel), opts.write ?? false);
}

/** openBeneath on the calling thread (the same checks and errors, thrown): a few quick system calls on a local file
 *  system cost less than the trip through the thread pool. `root` may also be the root directory already open (an
 *  O_PATH descriptor, see openDirBeneath), which saves looking it up by its path. */
export function openBeneathSync(root: string | number, rel: Buffer | string, opts: { write?: boolean } = {}): number {
  return addon().openBeneathSync(root, beneathArgs(root, rel), opts.write ?? false);
}

/** The st_dev and st_ino of `rel` beneath `root` (a path, or the directory's open descriptor), found as openBeneath
 *  finds it (the same errors) but through an O_PATH descriptor only: nothing is opened, so no kernel lease on the
 *  file breaks. Synchronous. */
export function statBeneath(root: string | number, rel: Buffer | string): { dev: bigint; ino: bigint } {
  const [dev, ino] = addon().statBeneath(root, beneathArgs(root, rel));
  return { dev, ino };
}

/** openBeneath's arguments checked; rel as bytes. */
function beneathArgs(root: string | number, rel: Buffer | string): Buffer {
  if (typeof root === 'number') checkFd(root);
  else checkPath('root', root);
  const bytes = typeof rel === 'string' ? Buffer.from(rel, 'utf8') : rel;
  if (!Buffer.isBuffer(bytes)) throw argError(TypeError, 'ERR_INVALID_ARG_TYPE', 'rel must be a Buffer or a string');
  if (bytes.length === 0) throw argError(TypeError, 'ERR_INVALID_ARG_VALUE', 'rel must not be empty');
  if (bytes.includes(0)) throw argError(TypeError, 'ERR_INVALID_ARG_VALUE', 'rel must not contain NUL');
  return bytes;
}

/** open(path, O_DIRECT|O_CLOEXEC|(write ? O_RDWR : O_RDONLY)|(exclusive ? O_EXCL : 0)). */
export async function openDirect(path: string, opts: { write?: boolean; exclusive?: boolean } = {}): Promise<number> {
  checkPath('path', path);
  return addon().openDirect(path, opts.write ?? false, opts.exclusive ?? false);
}

/** Size and sector sizes of a block device; for a regular file (an image) st_size, 512 and 4096. */
export async function deviceInfo(fd: number): Promise<DeviceInfo> {
  checkFd(fd);
  return addon().deviceInfo(fd);
}

/** A zeroed Buffer of `size` bytes whose memory is aligned to `align` (default 4096), for O_DIRECT.
 *  Freed by the GC: reuse a fixed set rather than allocating per request. */
export function alignedBuffer(size: number, align = 4096): Buffer {
  if (!Number.isInteger(align) || align < 8 || (align & (align - 1)) !== 0 || align > 1 << 30) {
    throw argError(RangeError, 'ERR_OUT_OF_RANGE', `align must be a power of two from 8 to 2^30, got ${align}`);
  }
  if (!Number.isSafeInteger(size) || size <= 0 || size % align !== 0 || size > bufferConstants.MAX_LENGTH) {
    throw argError(RangeError, 'ERR_OUT_OF_RANGE',
      `size must be a positive multiple of ${align} up to ${bufferConstants.MAX_LENGTH}, got ${size}`);
  }
  return addon().alignedBuffer(size, align);
}

function checkTransfer(fd: number, buf: Buffer, bufOffset: number, length: number, position: number): void {
  checkFd(fd);
  if (!Buffer.isBuffer(buf)) throw argError(TypeError, 'ERR_INVALID_ARG_TYPE', 'buf must be a Buffer');
  checkOffset('bufOffset', bufOffset);
  checkOffset('length', length);
  checkOffset('position', position);
  if (bufOffset + length > buf.length) {
    throw argError(RangeError, 'ERR_OUT_OF_RANGE',
      `bufOffset + length (${bufOffset + length}) exceeds the buffer (${buf.length})`);
  }
}

/** pread on the pool into buf[bufOffset, bufOffset+length); resolves to the bytes read (short at the end). */
export async function pread(fd: number, buf: Buffer, bufOffset: number, length: number, position: number): Promise<number> {
  checkTransfer(fd, buf, bufOffset, length, position);
  return addon().pread(fd, buf, bufOffset, length, position);
}

/** pwrite on the pool from buf[bufOffset, bufOffset+length); resolves to the bytes written. With `notAfter` (a
 *  time on the performance.now() clock), the pool thread checks it right before the system call and rejects with
 *  code ETIME, writing nothing, when it has passed: a write queued in the pool, or held up by a stopped process,
 *  cannot land past a lease deadline. */
export async function pwrite(fd: number, buf: Buffer, bufOffset: number, length: number, position: number, notAfter?: number): Promise<number> {
  checkTransfer(fd, buf, bufOffset, length, position);
  if (notAfter === undefined) return addon().pwrite(fd, buf, bufOffset, length, position);
  return addon().pwrite(fd, buf, bufOffset, length, position, monotonicDeadline(notAfter));
}

/** Copy `length` bytes of the file `srcFd` from `srcOffset` to the device `devFd` (opened with O_DIRECT) at
 *  `devOffset` with splice, on the pool: the bytes go from the file's page cache to the device through a pipe of the
 *  pool thread, never through user space. Offsets and length in whole sectors of the device. The addon reads the
 *  source through its own duplicate of `srcFd`. With `notAfter` (performance.now() clock), each splice into the
 *  device is checked against it first, as pwrite's one call is: past it, nothing more is written (ETIME). Resolves
 *  to the bytes written, fewer than `length` only where the source ended. */
export async function spliceWrite(srcFd: number, srcOffset: number, devFd: number, devOffset: number, length: number, notAfter?: number): Promise<number> {
  checkFd(srcFd);
  checkFd(devFd);
  checkOffset('srcOffset', srcOffset);
  checkOffset('devOffset', devOffset);
  checkOffset('length', length);
  if (notAfter === undefined) return addon().spliceWrite(srcFd, srcOffset, devFd, devOffset, length);
  return addon().spliceWrite(srcFd, srcOffset, devFd, devOffset, length, monotonicDeadline(notAfter));
}

/** A deadline on the performance.now() clock as CLOCK_MONOTONIC milliseconds, which the addon compares with. */
function monotonicDeadline(notAfter: number): number {
  if (!Number.isFinite(notAfter)) throw argError(RangeError, 'ERR_OUT_OF_RANGE', 'notAfter must be a finite time');
  // performance.now() and process.hrtime share libuv's monotonic clock; the addon reads CLOCK_MONOTONIC.
  const monotonicNow = Number(process.hrtime.bigint()) / 1e6;
  return Math.max(1e-3, monotonicNow + (notAfter - performance.now()));
}

export async function fsync(fd: number): Promise<void> {
  checkFd(fd);
  return addon().fsync(fd);
}

export async function close(fd: number): Promise<void> {
  checkFd(fd);
  return addon().close(fd);
}

const adviceNames: Record<Advice, keyof NativeConstants> = {
  normal: 'POSIX_FADV_NORMAL', sequential: 'POSIX_FADV_SEQUENTIAL', random: 'POSIX_FADV_RANDOM',
  willneed: 'POSIX_FADV_WILLNEED', dontneed: 'POSIX_FADV_DONTNEED', noreuse: 'POSIX_FADV_NOREUSE',
};

/** posix_fadvise; length 0 means "to the end of the file". */
export async function fadvise(fd: number, offset: number, length: number, advice: Advice): Promise<void> {
  checkFd(fd);
  checkOffset('offset', offset);
  checkOffset('length', length);
  if (!Object.hasOwn(adviceNames, advice)) {
    throw argError(TypeError, 'ERR_INVALID_ARG_VALUE', `advice must be one of ${Object.keys(adviceNames).join(', ')}`);
  }
  const c = addon().constants;
  return addon().fadvise(fd, offset, length, c[adviceNames[advice]]);
}

/** fallocate. Plain allocation when no mode is set; punchHole implies keepSize (the kernel insists);
 *  punchHole, zeroRange and writeZeroes exclude each other. */
export async function fallocate(fd: number, mode: FallocateMode, offset: number, length: number): Promise<void> {
  checkFd(fd);
  checkOffset('offset', offset);
  checkOffset('length', length);
  if (length === 0) throw argError(RangeError, 'ERR_OUT_OF_RANGE', 'length must be positive');
  const exclusive = [mode.punchHole, mode.zeroRange, mode.writeZeroes].filter(Boolean).length;
  if (exclusive > 1) {
    throw argError(TypeError, 'ERR_INVALID_ARG_VALUE', 'punchHole, zeroRange and writeZeroes exclude each other');
  }
  const c = addon().constants;
  let flags = 0;
  if (mode.keepSize || mode.punchHole) flags |= c.FALLOC_FL_KEEP_SIZE;
  if (mode.punchHole) flags |= c.FALLOC_FL_PUNCH_HOLE;
  if (mode.zeroRange) flags |= c.FALLOC_FL_ZERO_RANGE;
  if (mode.writeZeroes) flags |= c.FALLOC_FL_WRITE_ZEROES;
  return addon().fallocate(fd, flags, offset, length);
}

/** FICLONERANGE: make destFd's [destOffset, +length) share srcFd's blocks [srcOffset, +length) (XFS with reflink,
 *  btrfs). Offsets and length must be multiples of the file system's block size (the source's EOF may end the
 *  range); a destination range past its EOF extends it. 'EOPNOTSUPP' without reflink, 'EXDEV' across file
 *  systems, 'EINVAL' when unaligned. */
export async function cloneRange(srcFd: number, srcOffset: number, length: number, destFd: number,
  destOffset: number): Promise<void> {
  checkFd(srcFd);
  checkFd(destFd);
  checkOffset('srcOffset', srcOffset);
  checkOffset('length', length);
  checkOffset('destOffset', destOffset);
  // The kernel reads length 0 as "to the source's EOF": never what a caller computing a length means.
  if (length === 0) throw argError(RangeError, 'ERR_OUT_OF_RANGE', 'length must be positive');
  return addon().cloneRange(srcFd, srcOffset, length, destFd, destOffset);
}

/** The first `length` bytes (a multiple of 4096) of a device or image, read with O_DIRECT (plain reads on a
 *  file system that refuses O_DIRECT); shorter if the device is. For superblock probes. */
export async function readHead(path: string, length: number): Promise<Buffer> {
  checkPath('path', path);
  if (!Number.isSafeInteger(length) || length <= 0 || length % 4096 !== 0 || length > 1 << 30) {
    throw argError(RangeError, 'ERR_OUT_OF_RANGE', `length must be a positive multiple of 4096 up to 1 GiB, got ${length}`);
  }
  return addon().readHead(path, length);
}

function leaseNumber(type: LeaseType): number {
  const c = addon().constants;
  switch (type) {
    case 'read': return c.F_RDLCK;
    case 'write': return c.F_WRLCK;
    case 'none': return c.F_UNLCK;
    default: throw argError(TypeError, 'ERR_INVALID_ARG_VALUE', `lease type must be read, write or none, got ${String(type)}`);
  }
}

/** Take, change or drop (idempotently) a kernel lease. Throws code 'EAGAIN' when it conflicts with an open
 *  for writing. Installs the break-signal handler before the first lease. Synchronous. */
export function setLease(fd: number, type: LeaseType): void {
  checkFd(fd);
  addon().setLease(fd, leaseNumber(type));
}

/** F_GETLEASE; a lease being broken reports the type it is being downgraded to. */
export function getLease(fd: number): LeaseType {
  checkFd(fd);
  const c = addon().constants;
  const type = addon().getLease(fd);
  return type === c.F_RDLCK ? 'read' : type === c.F_WRLCK ? 'write' : 'none';
}

/** The single callback, called on the main thread with the fd whose lease is being broken; replaces any
 *  earlier one. fd -1 means the kernel's signal queue overflowed: check every held lease with getLease.
 *  Never keeps the process alive. */
export function onLeaseBreak(cb: (fd: number) => void): void {
  if (typeof cb !== 'function') throw argError(TypeError, 'ERR_INVALID_ARG_TYPE', 'callback must be a function');
  addon().onLeaseBreak(cb);
}

/** A name inside a directory: one path component, no NUL, not '.' or '..'. */
function checkName(what: string, name: Buffer): void {
  if (!Buffer.isBuffer(name)) throw argError(TypeError, 'ERR_INVALID_ARG_TYPE', `${what} must be a Buffer`);
  const bad = name.length === 0 || name.includes(0) || name.includes(0x2f) || name.equals(DOT) || name.equals(DOTDOT);
  if (bad) throw argError(TypeError, 'ERR_INVALID_ARG_VALUE', `${what} must be one path component`);
}
const DOT = Buffer.from('.');
const DOTDOT = Buffer.from('..');

/** The directory `rel` beneath `root` (openat2 RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV), as an
 *  O_PATH descriptor for exchangeAt and statAt ('.' is the root). Escapes fail with 'EXDEV'. Synchronous. */
export function openDirBeneath(root: string, rel: Buffer | string): number {
  checkPath('root', root);
  const bytes = typeof rel === 'string' ? Buffer.from(rel, 'utf8') : rel;
  if (!Buffer.isBuffer(bytes) || bytes.length === 0 || bytes.includes(0)) {
    throw argError(TypeError, 'ERR_INVALID_ARG_VALUE', 'rel must be a non-empty path without NUL');
  }
  return addon().openDirBeneath(root, bytes);
}

/** renameat2(RENAME_EXCHANGE): `nameA` in directory `dirA` and `nameB` in `dirB` swap inodes, atomically. Both must
 *  exist ('ENOENT'); 'EINVAL' where the file system cannot. Synchronous. */
export function exchangeAt(dirA: number, nameA: Buffer, dirB: number, nameB: Buffer): void {
  checkFd(dirA);
  checkFd(dirB);
  checkName('nameA', nameA);
  checkName('nameB', nameB);
  addon().exchangeAt(dirA, nameA, dirB, nameB);
}

/** fstatat(AT_SYMLINK_NOFOLLOW): the (dev, ino) the name holds now. Synchronous. */
export function statAt(dir: number, name: Buffer): { dev: bigint; ino: bigint } {
  checkFd(dir);
  checkName('name', name);
  return addon().statAt(dir, name);
}

/** Copy the POSIX access ACL (system.posix_acl_access) of one open file onto another; false when the first has
 *  none (or the file system keeps none). Synchronous. */
export function copyAccessAcl(fromFd: number, toFd: number): boolean {
  checkFd(fromFd);
  checkFd(toFd);
  return addon().copyAccessAcl(fromFd, toFd);
}
