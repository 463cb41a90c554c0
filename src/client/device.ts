// Reading a volume's bytes straight from the client's own path to the disk, with O_DIRECT.
import { FusedError, errorMessage } from '../errors.js';
import { alignedBuffer, close, deviceInfo, openDirect, pread, pwrite, spliceWrite, type DeviceInfo } from '../native/index.js';
import { PROBE_BYTES, probeSuperblock } from '../volume/superblock.js';
import { readMounts } from '../sys/blockdev.js';
import { mountsOfDevice } from '../volume/mountinfo.js';

export const ALIGN = 4096;
export const alignDown = (n: number): number => Math.floor(n / ALIGN) * ALIGN;
export const alignUp = (n: number): number => Math.ceil(n / ALIGN) * ALIGN;

/** A spliced source ended before the bytes it was to give (it shrank while it was copied): no fault of the device. */
export class SourceShrank extends FusedError {
  constructor(at: number) {
    super('failure', `the source file shrank while it was copied (it ended at byte ${at})`);
  }
}

/** An open device whose superblock UUID was checked when it was opened. */
export class Device {
  private constructor(
    readonly path: string,
    readonly fd: number,
    readonly info: DeviceInfo,
    /** Size of the file system from the superblock (blocks × block size): no extent may lie past it. */
    readonly fsSize: number,
  ) {}

  /** Open with O_DIRECT (read-only unless `write`) and check the superblock UUID before any other byte is
   *  trusted. */
  static async open(path: string, expectUuid: string, opts: { write?: boolean } = {}): Promise<Device> {
    let fd: number;
    try {
      fd = await openDirect(path, { write: opts.write ?? false });
    } catch (err) {
      throw new FusedError('failure', `cannot open device: ${errorMessage(err)}`, path);
    }
    try {
      const info = await deviceInfo(fd);
      if (info.isBlockDevice) {
        const mounted = mountsOfDevice(await readMounts(), info.rdevMajor, info.rdevMinor);
        // Mounted here, the page cache of that mount would disagree with what we read beside it.
        if (mounted.length) throw new FusedError('refused', `device is mounted on this node (at ${mounted.map((m) => m.mountPoint).join(', ')})`, path);
      }
      const head = alignedBuffer(PROBE_BYTES);
      const n = await pread(fd, head, 0, PROBE_BYTES, 0);
      const id = probeSuperblock(Buffer.from(head.subarray(0, n)));
      if (!id || !expectUuid || id.uuid !== expectUuid) {
        throw new FusedError('refused', `device UUID ${id?.uuid ?? 'unknown'} differs from the volume's UUID ${expectUuid}`, path);
      }
      return new Device(path, fd, info, id.sizeBytes);
    } catch (err) {
      await close(fd).catch(() => {});
      if (err instanceof FusedError) throw err;
      throw new FusedError('failure', `cannot read device: ${errorMessage(err)}`, path);
    }
  }

  /** Read [position, position+length) into `scratch` (aligned, large enough for the aligned span); returns the
   *  view of exactly the requested bytes inside scratch. Short reads past the device end are an error. */
  async readInto(scratch: Buffer, position: number, length: number): Promise<Buffer> {
    const start = alignDown(position);
    const span = alignUp(position + length) - start;
    if (span > scratch.length) throw new RangeError(`read of ${span} bytes does not fit a ${scratch.length}-byte buffer`);
    let done = 0;
    while (done < span) {
      const n = await pread(this.fd, scratch, done, span - done, start + done);
      if (n === 0) break;
      done += n;
    }
    if (done < position + length - start) {
      throw new FusedError('failure', `short read at byte ${start + done} (device is ${this.info.size} bytes)`, this.path);
    }
    return scratch.subarray(position - start, position - start + length);
  }

  /** Why a map cannot be used on this device: a DATA extent reaching past the device or its file system (it would
   *  touch another volume's bytes), or undefined. */
  outside(extents: readonly { physical: number; length: number; state: string }[]): string | undefined {
    const limit = Math.min(this.info.size, this.fsSize);
    const e = extents.find((x) => x.state === 'DATA' && x.physical + x.length > limit);
    return e ? `the map points outside the volume (extent at ${e.physical}+${e.length}, volume ${limit} bytes): refused` : undefined;
  }

  /** Write `length` bytes of `buf` (aligned memory) at `position`: offset and length in whole logical sectors.
   *  Past `notAfter` (performance.now() clock) no part of it is issued: it rejects with code ETIME. */
  async writeAt(buf: Buffer, bufOffset: number, length: number, position: number, notAfter?: number): Promise<void> {
    this.checkSectors(position, length);
    let done = 0;
    while (done < length) {
      const n = await pwrite(this.fd, buf, bufOffset + done, length - done, position + done, notAfter);
      if (n <= 0) throw new FusedError('failure', `short write at byte ${position + done}`, this.path);
      done += n;
    }
  }

  /** Write `length` bytes of the file `srcFd` from `srcOffset` at `position`, spliced from the file's page cache
   *  (no copy through this process): in whole logical sectors, like writeAt, and past `notAfter` nothing more is
   *  issued (ETIME). A source that ends before `length` bytes is an error (the file shrank while being copied). */
  async spliceAt(srcFd: number, srcOffset: number, length: number, position: number, notAfter?: number): Promise<void> {
    this.checkSectors(position, length);
    const n = await spliceWrite(srcFd, srcOffset, this.fd, position, length, notAfter);
    if (n < length) throw new SourceShrank(srcOffset + n);
  }

  private checkSectors(position: number, length: number): void {
    const sector = this.info.logicalSectorSize || 512;
    if (position % sector !== 0 || length % sector !== 0) {
      throw new RangeError(`device write of ${length} bytes at ${position} is not in whole ${sector}-byte sectors`);
    }
  }

  async close(): Promise<void> {
    await close(this.fd).catch(() => {});
  }

  /** This device for one of its owner's readers: the same descriptor (positioned reads share it safely), which
   *  the owner closes, not the borrower. */
  borrow(): Device {
    const view = Object.create(this) as Device;
    view.close = async () => {};
    return view;
  }
}
