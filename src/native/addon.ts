// The only loader of the C++ addon (build/Release/fused_native.node): raw bindings, loaded on first use.
import { createRequire } from 'node:module';

export interface RawExtent { logical: number; physical: number; length: number; flags: number }
export interface RawDeviceInfo {
  isBlockDevice: boolean; size: number; logicalSectorSize: number;
  physicalSectorSize: number; rdevMajor: number; rdevMinor: number;
}

/** Constants the addon takes from the system headers, so TS never hard-codes them. */
export interface NativeConstants {
  POSIX_FADV_NORMAL: number; POSIX_FADV_SEQUENTIAL: number; POSIX_FADV_RANDOM: number;
  POSIX_FADV_WILLNEED: number; POSIX_FADV_DONTNEED: number; POSIX_FADV_NOREUSE: number;
  FALLOC_FL_KEEP_SIZE: number; FALLOC_FL_PUNCH_HOLE: number; FALLOC_FL_ZERO_RANGE: number;
  FALLOC_FL_WRITE_ZEROES: number;
  F_RDLCK: number; F_WRLCK: number; F_UNLCK: number;
  FIEMAP_EXTENT_LAST: number; FIEMAP_EXTENT_UNKNOWN: number; FIEMAP_EXTENT_DELALLOC: number;
  FIEMAP_EXTENT_ENCODED: number; FIEMAP_EXTENT_DATA_ENCRYPTED: number; FIEMAP_EXTENT_NOT_ALIGNED: number;
  FIEMAP_EXTENT_DATA_INLINE: number; FIEMAP_EXTENT_DATA_TAIL: number; FIEMAP_EXTENT_UNWRITTEN: number;
  FIEMAP_EXTENT_MERGED: number; FIEMAP_EXTENT_SHARED: number;
}

/** The addon's exports as C++ defines them; arguments are already validated by index.ts. */
export interface NativeAddon {
  /** Four numbers per extent: logical, physical, length, flags. */
  fiemap(fd: number, sync: boolean, maxExtents: number): Promise<Float64Array>;
  inodeFlags(fd: number): number;
  setDirect(fd: number, on: boolean): boolean;
  openBeneath(root: string, rel: Buffer, write: boolean): Promise<number>;
  openBeneathSync(root: string | number, rel: Buffer, write: boolean): number;
  statBeneath(root: string | number, rel: Buffer): [bigint, bigint];
  openDirect(path: string, write: boolean, exclusive: boolean): Promise<number>;
  deviceInfo(fd: number): Promise<RawDeviceInfo>;
  alignedBuffer(size: number, align: number): Buffer;
  pread(fd: number, buf: Buffer, bufOffset: number, length: number, position: number): Promise<number>;
  pwrite(fd: number, buf: Buffer, bufOffset: number, length: number, position: number, notAfterMs?: number): Promise<number>;
  spliceWrite(srcFd: number, srcOffset: number, devFd: number, devOffset: number, length: number, notAfterMs?: number): Promise<number>;
  fsync(fd: number): Promise<void>;
  close(fd: number): Promise<void>;
  fadvise(fd: number, offset: number, length: number, advice: number): Promise<void>;
  fallocate(fd: number, mode: number, offset: number, length: number): Promise<void>;
  cloneRange(srcFd: number, srcOffset: number, length: number, destFd: number, destOffset: number): Promise<void>;
  readHead(path: string, length: number): Promise<Buffer>;
  setLease(fd: number, type: number): void;
  getLease(fd: number): number;
  onLeaseBreak(cb: (fd: number) => void): void;
  openDirBeneath(root: string, rel: Buffer): number;
  exchangeAt(dirA: number, nameA: Buffer, dirB: number, nameB: Buffer): void;
  statAt(dir: number, name: Buffer): { dev: bigint; ino: bigint };
  copyAccessAcl(fromFd: number, toFd: number): boolean;
  constants: NativeConstants;
}

let loaded: NativeAddon | undefined;

/** The addon, loaded once. Lazy, so modules that merely import this one work where it is not built. */
export function addon(): NativeAddon {
  if (loaded === undefined) {
    try {
      loaded = createRequire(import.meta.url)('../../build/Release/fused_native.node') as NativeAddon;
    } catch (cause) {
      const err = new Error(
        `native addon fused_native is not built (run 'npm install' or 'npm run install'): ${(cause as Error).message}`,
        { cause });
      (err as NodeJS.ErrnoException).code = 'ERR_FUSED_NATIVE';
      throw err;
    }
  }
  return loaded;
}
