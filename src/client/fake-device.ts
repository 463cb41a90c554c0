// Test support: a block device over memory for the writer unit tests (what DirectTarget needs of a Device).
import assert from 'node:assert/strict';
import { readSync } from 'node:fs';
import { Device, SourceShrank } from './device.js';
import type { DeviceWriter } from './writer.js';

export class FakeDevice implements DeviceWriter {
  readonly path = '/dev/fake';
  readonly info;
  readonly fsSize: number;
  readonly writes: { position: number; length: number; spliced?: true }[] = [];
  /** The deadline each write was handed (the real device checks it on the pool thread, right before pwrite). */
  readonly notAfter: (number | undefined)[] = [];

  /** `image`: the device's bytes (its size is the device's). */
  constructor(readonly image: Buffer) {
    this.info = { isBlockDevice: true, size: image.length, logicalSectorSize: 512, physicalSectorSize: 4096, rdevMajor: 7, rdevMinor: 9 };
    this.fsSize = image.length;
  }

  async writeAt(buf: Buffer, bufOffset: number, length: number, position: number, notAfter?: number): Promise<void> {
    this.notAfter.push(notAfter);
    assert.equal(position % 512, 0);
    assert.equal(length % 512, 0);
    this.writes.push({ position, length });
    buf.copy(this.image, position, bufOffset, bufOffset + length);
  }

  /** As Device.spliceAt: the source file's bytes, read here (the real one splices them), at `position`. */
  async spliceAt(srcFd: number, srcOffset: number, length: number, position: number, notAfter?: number): Promise<void> {
    this.notAfter.push(notAfter);
    assert.equal(position % 512, 0);
    assert.equal(length % 512, 0);
    if (notAfter !== undefined && performance.now() >= notAfter) throw Object.assign(new Error('splice: deadline passed'), { code: 'ETIME' });
    const n = readSync(srcFd, this.image, position, length, srcOffset);
    this.writes.push({ position, length: n, spliced: true });
    if (n < length) throw new SourceShrank(srcOffset + n);
  }

  outside(extents: readonly { physical: number; length: number; state: string }[]): string | undefined {
    return Device.prototype.outside.call(this as unknown as Device, extents);
  }

  async close(): Promise<void> {}
}
