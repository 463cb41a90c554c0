// Map leases: what each connection holds, and the kernel read lease that guards each mapped file.
import { randomBytes } from 'node:crypto';
import { close as closeFd } from 'node:fs';
import { getLease, onLeaseBreak, setLease } from '../native/index.js';

/** The connection side of a lease holder: how the table reaches a client. */
export interface LeaseHolder {
  /** Send `! RECALL lease=ID reason=...`; the holder answers with RETURN. */
  recall(leaseId: string, reason: string): void;
}

export interface Lease {
  id: string;
  holder: LeaseHolder;
  file: FileLease | undefined;
  recalled: boolean;
}

/** One open descriptor per mapped file carrying the kernel read lease; shared by every map of that file. */
interface FileLease {
  key: string;
  fd: number;
  leases: Set<Lease>;
  breaking: boolean;
}

export type KernelLeaseResult = { ok: true; file: FileLease } | { ok: false; reason: string };

export class LeaseTable {
  private readonly byId = new Map<string, Lease>();
  private readonly files = new Map<string, FileLease>();
  private readonly filesByFd = new Map<number, FileLease>();
  private waiters = new Map<FileLease, () => void>();

  constructor(
    private readonly recallWaitMs: number,
    private readonly log: (line: string) => void,
  ) {
    onLeaseBreak((fd) => {
      if (fd >= 0) return void this.onBreak(fd);
      // The kernel's signal queue overflowed: find the breaking leases by asking each descriptor.
      for (const held of [...this.filesByFd.keys()]) {
        if (getLease(held) !== 'read') void this.onBreak(held);
      }
    });
  }

  get size(): number {
    return this.byId.size;
  }

  /** Take (or share) the kernel read lease on an open file. The fd is consumed: kept or closed. */
  acquireFile(key: string, fd: number): KernelLeaseResult {
    const existing = this.files.get(key);
    if (existing && !existing.breaking) {
      closeFd(fd, () => {});
      return { ok: true, file: existing };
    }
    if (existing?.breaking) {
      closeFd(fd, () => {});
      return { ok: false, reason: 'the file is being opened for writing (lease recall in progress)' };
    }
    try {
      setLease(fd, 'read');
    } catch (err) {
      closeFd(fd, () => {});
      const code = (err as { code?: string }).code;
      if (code === 'EAGAIN') return { ok: false, reason: 'the file is open for writing' };
      return { ok: false, reason: `kernel lease refused: ${(err as Error).message}` };
    }
    const file: FileLease = { key, fd, leases: new Set(), breaking: false };
    this.files.set(key, file);
    this.filesByFd.set(fd, file);
    return { ok: true, file };
  }

  /** Give back a file lease nobody was granted a map of (the map failed after the kernel lease was taken). */
  abandonFile(file: FileLease): void {
    if (file.leases.size === 0 && !file.breaking && this.files.get(file.key) === file) this.closeFile(file);
  }

  grant(holder: LeaseHolder, file: FileLease | undefined): Lease {
    const lease: Lease = { id: randomBytes(8).toString('hex'), holder, file, recalled: false };
    this.byId.set(lease.id, lease);
    file?.leases.add(lease);
    return lease;
  }

  get(id: string): Lease | undefined {
    return this.byId.get(id);
  }

  /** RELEASE or RETURN: the holder stops using the map. */
  release(holder: LeaseHolder, id: string): boolean {
    const lease = this.byId.get(id);
    if (!lease || lease.holder !== holder) return false;
    this.drop(lease);
    return true;
  }

  releaseAll(holder: LeaseHolder): void {
    for (const lease of [...this.byId.values()]) if (lease.holder === holder) this.drop(lease);
  }

  /** Close every file lease (server shutdown). */
  closeAll(): void {
    for (const lease of [...this.byId.values()]) this.drop(lease);
  }

  private drop(lease: Lease): void {
    this.byId.delete(lease.id);
    const file = lease.file;
    if (!file) return;
    file.leases.delete(lease);
    if (file.leases.size === 0) {
      const wake = this.waiters.get(file);
      if (wake) wake();
      else this.closeFile(file);
    }
  }

  private closeFile(file: FileLease): void {
    this.files.delete(file.key);
    this.filesByFd.delete(file.fd);
    try {
      setLease(file.fd, 'none');
    } catch {
      // closing the descriptor releases the lease anyway
    }
    closeFd(file.fd, () => {});
  }

  /** The kernel is breaking the lease on fd: recall every map of the file, wait (bounded), then let go. */
  private async onBreak(fd: number): Promise<void> {
    const file = this.filesByFd.get(fd);
    if (!file || file.breaking) return;
    file.breaking = true;
    // New maps of this file must not share a lease that is going away.
    this.files.delete(file.key);
    const leases = [...file.leases];
    this.log(`lease break on ${file.key}: recalling ${leases.length} map(s)`);
    for (const lease of leases) {
      lease.recalled = true;
      lease.holder.recall(lease.id, 'write-open');
    }
    if (file.leases.size > 0) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, this.recallWaitMs);
        this.waiters.set(file, () => {
          clearTimeout(timer);
          resolve();
        });
      });
      this.waiters.delete(file);
      if (file.leases.size > 0) {
        this.log(`lease break on ${file.key}: ${file.leases.size} map(s) not returned within ${this.recallWaitMs} ms; revoking`);
        for (const lease of [...file.leases]) lease.file = undefined;
        file.leases.clear();
      }
    }
    this.filesByFd.delete(file.fd);
    try {
      setLease(file.fd, 'none');
    } catch {
      // closing releases it too
    }
    closeFd(file.fd, () => {});
  }
}
