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
export interface FileLease {
  key: string;
  fd: number;
  leases: Set<Lease>;
  breaking: boolean;
}

export type KernelLeaseResult = { ok: true; file: FileLease } | { ok: false; reason: string };

export class LeaseTable {
  private readonly byId = new Map<string, Lease>();
  private readonly byHolder = new Map<LeaseHolder, Set<Lease>>();
  private readonly files = new Map<string, FileLease>();
  private readonly filesByFd = new Map<number, FileLease>();
  private readonly waiters = new Map<FileLease, () => void>();

  constructor(
    private readonly recallWaitMs: number,
    private readonly maxFiles: number,
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

  /** Leases a holder has (for the per-connection limit). */
  countFor(holder: LeaseHolder): number {
    return this.byHolder.get(holder)?.size ?? 0;
  }

  /** Take (or share) the kernel read lease on an open file. The fd is consumed: kept or closed. */
  acquireFile(key: string, fd: number): KernelLeaseResult {
    const existing = this.files.get(key);
    if (existing) {
      closeFd(fd, () => {});
      return { ok: true, file: existing };
    }
    if (this.filesByFd.size >= this.maxFiles) {
      closeFd(fd, () => {});
      return { ok: false, reason: `the server holds leases on ${this.maxFiles} files already` };
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

  /** A map lease. Granted before the file is mapped, so its kernel lease cannot go away underneath FIEMAP. */
  grant(holder: LeaseHolder, file: FileLease | undefined): Lease {
    const lease: Lease = { id: randomBytes(8).toString('hex'), holder, file, recalled: false };
    this.byId.set(lease.id, lease);
    let mine = this.byHolder.get(holder);
    if (!mine) this.byHolder.set(holder, (mine = new Set()));
    mine.add(lease);
    file?.leases.add(lease);
    return lease;
  }

  /** Whether the map behind this lease can still be trusted (no recall, file lease still current). */
  isCurrent(lease: Lease): boolean {
    const file = lease.file;
    return !lease.recalled && file !== undefined && !file.breaking && this.files.get(file.key) === file;
  }

  /** RELEASE or RETURN: the holder stops using the map. */
  release(holder: LeaseHolder, id: string): boolean {
    const lease = this.byId.get(id);
    if (!lease || lease.holder !== holder) return false;
    this.drop(lease);
    return true;
  }

  releaseAll(holder: LeaseHolder): void {
    for (const lease of [...(this.byHolder.get(holder) ?? [])]) this.drop(lease);
  }

  /** Close every file lease (server shutdown). */
  closeAll(): void {
    for (const lease of [...this.byId.values()]) this.drop(lease);
  }

  private drop(lease: Lease): void {
    this.byId.delete(lease.id);
    const mine = this.byHolder.get(lease.holder);
    mine?.delete(lease);
    if (mine?.size === 0) this.byHolder.delete(lease.holder);
    const file = lease.file;
    lease.file = undefined;
    if (!file) return;
    file.leases.delete(lease);
    if (file.leases.size > 0) return;
    const wake = this.waiters.get(file);
    if (wake) wake(); // a break is waiting for this return
    else if (!file.breaking) this.closeFile(file);
  }

  private closeFile(file: FileLease): void {
    if (this.files.get(file.key) === file) this.files.delete(file.key);
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
    if (this.files.get(file.key) === file) this.files.delete(file.key);
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
        this.log(`lease break on ${file.key}: ${file.leases.size} map(s) not returned within ${this.recallWaitMs} ms; revoked`);
        // Revoked: gone from the table, so a late RETURN gets NOLEASE.
        for (const lease of [...file.leases]) this.drop(lease);
      }
    }
    this.closeFile(file);
  }
}
