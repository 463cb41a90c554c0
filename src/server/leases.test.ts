// Unit tests for the lease table with a fake kernel and fake holders: recall timing, orphaned maps, shutdown.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { LeaseTable, leaseTimeProblem, type KernelLeases, type LeaseHolder } from './leases.js';
import type { LeaseType } from '../native/index.js';

/** A kernel that records what the table does and lets the test break a lease. */
class FakeKernel implements KernelLeases {
  readonly leases = new Map<number, LeaseType>();
  readonly closed: number[] = [];
  refuse = false;
  private cb: ((fd: number) => void) | undefined;
  setLease(fd: number, type: LeaseType): void {
    if (this.refuse && type === 'read') throw Object.assign(new Error('busy'), { code: 'EAGAIN' });
    this.leases.set(fd, type);
  }
  getLease(fd: number): LeaseType {
    return this.leases.get(fd) ?? 'none';
  }
  onLeaseBreak(cb: (fd: number) => void): void {
    this.cb = cb;
  }
  close(fd: number): void {
    this.closed.push(fd);
    this.leases.delete(fd);
  }
  /** Someone opens the file for writing; resolves when the table lets go (closes the descriptor). */
  async breakLease(fd: number, limitMs = 5000): Promise<number> {
    const t0 = performance.now();
    this.cb?.(fd);
    while (!this.closed.includes(fd)) {
      if (performance.now() - t0 > limitMs) throw new Error('the table never let go');
      await sleep(5);
    }
    return performance.now() - t0;
  }
}

/** A client connection: recalls are queued at once (or after `queueDelayMs`, or never). */
class FakeHolder implements LeaseHolder {
  readonly recalls: string[] = [];
  aborted = false;
  constructor(readonly name: string, private readonly queueDelayMs: number | 'never' = 0) {}
  recall(id: string): Promise<number> {
    this.recalls.push(id);
    if (this.queueDelayMs === 'never') return new Promise(() => {});
    return sleep(this.queueDelayMs).then(() => performance.now());
  }
  abort(): void {
    this.aborted = true;
  }
}

const T = 200;
const MARGIN = 50;

function table(kernel: FakeKernel, log: string[] = []) {
  return new LeaseTable({ leaseTimeMs: T, marginMs: MARGIN, recallQueueMs: 100, maxFiles: 4, log: (l) => log.push(l), kernel });
}

test('a break waits for RETURN, then lets the opener in at once', async () => {
  const k = new FakeKernel();
  const t = table(k);
  const a = new FakeHolder('a');
  const f = t.acquireFile('1:1', 10);
  assert.ok(f.ok);
  const lease = t.grant(a, f.file);
  const opened = k.breakLease(10);
  await sleep(20);
  assert.deepEqual(a.recalls, [lease.id]);
  assert.equal(t.isCurrent(lease), false);
  assert.equal(t.release(a, lease.id), true);
  const waited = await opened;
  assert.ok(waited < T, `waited ${waited} ms after the RETURN`);
  assert.equal(t.size, 0);
  assert.equal(k.leases.size, 0);
});

// The map cache kept with a read lease, and the lingering lease that keeps it for repeat maps.

/** A table that caches maps and keeps a read lease LINGER ms after its last map. */
const LINGER = 150;
function cachingTable(kernel: FakeKernel, opts: { cacheBytes?: number; maxLingering?: number; log?: string[] } = {}) {
  const log = opts.log ?? [];
  return new LeaseTable({
    leaseTimeMs: T, marginMs: MARGIN, recallQueueMs: 100, maxFiles: 4, log: (l) => log.push(l), kernel,
    lingerMs: LINGER, maxLingering: opts.maxLingering ?? 4, cacheBytes: opts.cacheBytes ?? 1024,
  });
}

const V1 = { size: 4096n, mtimeNs: 1_000n, ctimeNs: 2_000n };
const mapOf = (version: typeof V1, body = 'X 0 8192 4096 DATA 1\n') => ({ ...version, extents: 1, body: Buffer.from(body) });

/** One read map of file `key` on fd, held by a new holder, its map cached (if the cache takes it). */
function mapOne(t: LeaseTable, key: string, fd: number) {
  const holder = new FakeHolder('a');
  const f = t.acquireFile(key, fd);
  assert.ok(f.ok, f.ok ? '' : f.reason);
  const lease = t.grant(holder, f.file);
  const cached = t.cacheMap(f.file, mapOf(V1));
  return { file: f.file, lease, holder, cached };
}

/** One read map of file `key` on fd, its map cached, then released: the lease now lingers. */
function mapAndRelease(t: LeaseTable, key: string, fd: number) {
  const { file, lease, holder, cached } = mapOne(t, key, fd);
  assert.equal(cached, true);
  assert.equal(t.release(holder, lease.id), true);
  return file;
}

test('a map cached with its read lease is found by the next map of the same version, after the last map went', async () => {
  const k = new FakeKernel();
  const t = cachingTable(k);
  const file = mapAndRelease(t, '2:1', 20);
  assert.equal(k.closed.includes(20), false, 'the lease lingers');
  assert.equal(t.isLingering(file), true);
  const again = t.acquireFile('2:1', 21);
  assert.ok(again.ok);
  assert.equal(again.file, file, 'the lingering lease is shared');
  assert.deepEqual(k.closed, [21]);
  t.grant(new FakeHolder('b'), again.file);
  assert.equal(t.isLingering(file), false, 'a new map takes it back from lingering');
  assert.equal(t.cachedMap(file, { ...V1 })?.body.toString(), 'X 0 8192 4096 DATA 1\n');
  await sleep(LINGER + 50);
  assert.equal(k.closed.includes(20), false, 'a lease with a map does not expire by lingering');
});

test('a cached map of another version of the file (size, mtime or ctime) is dropped, not used', () => {
  const k = new FakeKernel();
  const t = cachingTable(k);
  for (const now of [{ ...V1, size: 8192n }, { ...V1, mtimeNs: 1_001n }, { ...V1, ctimeNs: 2_001n }]) {
    const f = t.acquireFile('2:2', 22);
    assert.ok(f.ok);
    t.grant(new FakeHolder('a'), f.file);
    assert.equal(t.cacheMap(f.file, mapOf(V1)), true);
    assert.ok(t.cacheSize > 0);
    assert.equal(t.cachedMap(f.file, now), undefined, JSON.stringify(now, (_, v) => (typeof v === 'bigint' ? String(v) : v)));
    assert.equal(t.cacheSize, 0);
    t.closeAll();
  }
});

test('a break of a lingering lease drops its map and lets the opener in at once', async () => {
  const k = new FakeKernel();
  const log: string[] = [];
  const t = cachingTable(k, { log });
  const file = mapAndRelease(t, '2:3', 23);
  const waited = await k.breakLease(23);
  assert.ok(waited < 50, `the opener waited ${waited} ms for a lease nobody held`);
  assert.equal(t.cacheSize, 0);
  assert.equal(file.cache, undefined);
  assert.equal(t.fileOf('2:3'), undefined);
  assert.equal(t.isLingering(file), false);
});

test('a break of a held lease drops its map at once, before any RETURN', async () => {
  const k = new FakeKernel();
  const t = cachingTable(k);
  const { file, lease, holder } = mapOne(t, '2:4', 24);
  const opened = k.breakLease(24);
  await sleep(10);
  assert.equal(t.cacheSize, 0, 'the map is gone while the recall is out');
  assert.equal(t.cacheMap(file, mapOf(V1)), false, 'nothing is cached on a breaking lease');
  t.release(holder, lease.id);
  await opened;
});

test('a lingering lease expires after the linger time, and its map with it', async () => {
  const k = new FakeKernel();
  const t = cachingTable(k);
  mapAndRelease(t, '2:5', 25);
  await sleep(LINGER / 2);
  assert.equal(k.closed.includes(25), false);
  await sleep(LINGER);
  assert.deepEqual(k.closed, [25]);
  assert.equal(k.leases.size, 0);
  assert.equal(t.cacheSize, 0);
  assert.equal(t.fileCount, 0);
});

test('a lease without a cached map does not linger; a map larger than the cache is not kept', () => {
  const k = new FakeKernel();
  const t = cachingTable(k, { cacheBytes: 16 });
  const { lease, holder, cached } = mapOne(t, '2:6', 26);
  assert.equal(cached, false);
  t.release(holder, lease.id);
  assert.deepEqual(k.closed, [26]);
});

test('a write lease lets a lingering read lease of the file go first; one with maps is still refused', () => {
  const k = new FakeKernel();
  const t = cachingTable(k);
  const file = mapAndRelease(t, '2:7', 27);
  const w = t.acquireFile('2:7', 28, 'write');
  assert.ok(w.ok, w.ok ? '' : w.reason);
  assert.equal(k.leases.get(28), 'write');
  assert.equal(k.closed.includes(27), true);
  assert.equal(file.cache, undefined);
  const r = mapOne(t, '2:8', 29);
  assert.equal(t.letGoLingering(r.file), false);
  assert.equal(t.acquireFile('2:8', 30, 'write').ok, false);
});

test('lingering leases are bounded: the oldest goes, and one makes room for a new file at the file limit', () => {
  const k = new FakeKernel();
  const t = cachingTable(k, { maxLingering: 2 });
  mapAndRelease(t, '3:1', 31);
  mapAndRelease(t, '3:2', 32);
  mapAndRelease(t, '3:3', 33);
  assert.deepEqual(k.closed, [31], 'the oldest lingering lease went');
  mapOne(t, '3:4', 34);
  mapOne(t, '3:5', 35);
  const next = t.acquireFile('3:6', 36); // maxFiles is 4: 32 and 33 lingering, 34 and 35 held
  assert.ok(next.ok, next.ok ? '' : next.reason);
  assert.deepEqual(k.closed, [31, 32]);
  t.closeAll();
  assert.equal(t.cacheSize, 0);
});

test('a holder that never returns is waited for T + margin after the recall, never less, then revoked by name', async () => {
  const k = new FakeKernel();
  const log: string[] = [];
  const t = table(k, log);
  const a = new FakeHolder('node stopped at 10.0.0.2:9');
  const f = t.acquireFile('1:2', 11);
  assert.ok(f.ok);
  const lease = t.grant(a, f.file);
  const waited = await k.breakLease(11);
  assert.ok(waited >= T + MARGIN - 5, `let go after ${waited} ms, before T + margin`);
  assert.ok(waited < T + MARGIN + 150, `let go after ${waited} ms`);
  assert.equal(t.release(a, lease.id), false, 'a late RETURN finds no lease');
  assert.ok(log.some((l) => l.includes('node stopped at 10.0.0.2:9') && l.includes('revoked')), log.join('\n'));
});

test('T + margin counts from when the recall was queued, not from the break', async () => {
  const k = new FakeKernel();
  const t = table(k);
  const a = new FakeHolder('slow', 80); // a reply was being written: the recall went out 80 ms late
  const f = t.acquireFile('1:3', 12);
  assert.ok(f.ok);
  t.grant(a, f.file);
  const waited = await k.breakLease(12);
  assert.ok(waited >= 80 + T + MARGIN - 5, `let go after ${waited} ms`);
});

test('a recall that cannot be queued ends the connection and counts from then', async () => {
  const k = new FakeKernel();
  const t = table(k);
  const a = new FakeHolder('stuck', 'never');
  const f = t.acquireFile('1:4', 13);
  assert.ok(f.ok);
  t.grant(a, f.file);
  const waited = await k.breakLease(13);
  assert.equal(a.aborted, true);
  assert.ok(waited >= 100 + T + MARGIN - 5, `let go after ${waited} ms`);
});

test('maps of a closed connection stay leased until T + margin after it ended, then expire', async () => {
  const k = new FakeKernel();
  const t = table(k);
  const a = new FakeHolder('gone');
  const f = t.acquireFile('1:5', 14);
  assert.ok(f.ok);
  t.grant(a, f.file);
  t.grant(a, f.file);
  t.orphan(a, performance.now());
  assert.equal(t.countFor(a), 0);
  assert.equal(t.size, 2);
  await sleep(T + MARGIN - 60);
  assert.equal(k.closed.includes(14), false, 'let go before the client lease could have run out');
  await sleep(120);
  assert.equal(k.closed.includes(14), true);
  assert.equal(t.size, 0);
});

test('a break of an orphaned map waits for its expiry, not a recall', async () => {
  const k = new FakeKernel();
  const t = table(k);
  const a = new FakeHolder('gone');
  const f = t.acquireFile('1:6', 15);
  assert.ok(f.ok);
  t.grant(a, f.file);
  const ended = performance.now();
  t.orphan(a, ended);
  await sleep(50);
  const waited = await k.breakLease(15);
  assert.deepEqual(a.recalls, []);
  assert.ok(performance.now() - ended >= T + MARGIN - 5);
  assert.ok(waited < T + MARGIN, `waited ${waited} ms`);
});

test('several holders: the opener waits for the slowest, each recalled once', async () => {
  const k = new FakeKernel();
  const t = table(k);
  const a = new FakeHolder('a');
  const b = new FakeHolder('b');
  const f = t.acquireFile('1:7', 16);
  assert.ok(f.ok);
  const la = t.grant(a, f.file);
  t.grant(b, f.file);
  const opened = k.breakLease(16);
  await sleep(10);
  t.release(a, la.id);
  const waited = await opened;
  assert.equal(a.recalls.length + b.recalls.length, 2);
  assert.ok(waited >= T + MARGIN - 5, `b never returned, yet the opener got in after ${waited} ms`);
});

test('sharing, limits and refusals', () => {
  const k = new FakeKernel();
  const t = table(k);
  const a = new FakeHolder('a');
  const f1 = t.acquireFile('1:8', 20);
  const f2 = t.acquireFile('1:8', 21);
  assert.ok(f1.ok && f2.ok);
  assert.equal(f1.file, f2.file, 'one kernel lease per file');
  assert.deepEqual(k.closed, [21], 'the second descriptor is closed');
  for (let i = 0; i < 3; i++) assert.ok(t.acquireFile(`2:${i}`, 30 + i).ok);
  const full = t.acquireFile('3:0', 40);
  assert.equal(full.ok, false);
  const k2 = new FakeKernel();
  k2.refuse = true;
  assert.deepEqual(table(k2).acquireFile('1:9', 41), { ok: false, reason: 'the file is open for writing' });
  assert.deepEqual(k2.closed, [41]);
  const lease = t.grant(a, f1.file);
  assert.equal(t.countFor(a), 1);
  assert.equal(t.release(new FakeHolder('b'), lease.id), false, 'only the holder releases');
  assert.equal(t.release(a, lease.id), true);
  assert.equal(t.release(a, lease.id), false);
});

test('drained resolves when the last lease goes', async () => {
  const k = new FakeKernel();
  const t = table(k);
  await t.drained();
  const a = new FakeHolder('a');
  const f = t.acquireFile('1:10', 50);
  assert.ok(f.ok);
  const lease = t.grant(a, f.file);
  let done = false;
  const d = t.drained().then(() => (done = true));
  await sleep(10);
  assert.equal(done, false);
  t.release(a, lease.id);
  await d;
  assert.equal(done, true);
});

test('leaseTimeProblem: lease-break-time must outlast T + margin + recall queueing', () => {
  assert.equal(leaseTimeProblem(10_000, () => '45\n'), undefined);
  assert.match(leaseTimeProblem(43_000, () => '45\n') ?? '', /lease-break-time is 45 s, too short .* at least 47 s/);
  assert.match(leaseTimeProblem(10_000, () => 'x') ?? '', /not a number/);
  assert.match(leaseTimeProblem(10_000, () => { throw new Error('gone'); }) ?? '', /cannot read/);
});

test('work on a file defers the undo and the close of its last map until the work is done', async () => {
  const k = new FakeKernel();
  const t = table(k);
  const a = new FakeHolder('a');
  const f = t.acquireFile('1:11', 60, 'write');
  assert.ok(f.ok);
  const lease = t.grant(a, f.file);
  const order: string[] = [];
  f.file.onLastDrop = () => order.push('undo');
  let finish!: () => void;
  const work = t.withFile(f.file, () => new Promise<void>((resolve) => (finish = resolve)).then(() => void order.push('work done')));
  t.release(a, lease.id); // the map goes while the allocation still writes
  await sleep(10);
  assert.deepEqual(order, []);
  assert.equal(k.closed.includes(60), false, 'closed under the work');
  finish();
  await work;
  assert.deepEqual(order, ['work done', 'undo']);
  assert.equal(k.closed.includes(60), true);
});

test('a write lease is refused while the file has read maps, and the other way round', () => {
  const k = new FakeKernel();
  const t = table(k);
  assert.ok(t.acquireFile('1:12', 70).ok);
  assert.deepEqual(t.acquireFile('1:12', 71, 'write'), { ok: false, reason: 'the file has read maps' });
  assert.ok(t.acquireFile('1:13', 72, 'write').ok);
  assert.deepEqual(t.acquireFile('1:13', 73), { ok: false, reason: 'the file is being written directly by another map' });
  assert.deepEqual(k.closed, [71, 73]);
});

test('recallWhere (a volume taken out of service): only the picked files, each map let go at RETURN or revoked after T', async () => {
  const k = new FakeKernel();
  const revoked: [string, string][] = [];
  const t = new LeaseTable({
    leaseTimeMs: T, marginMs: MARGIN, recallQueueMs: 100, maxFiles: 4, log: () => {}, kernel: k,
    onRevoke: (holder, id, after) => revoked.push([holder.name, `${id}:${after}`]),
  });
  const a = new FakeHolder('a');
  const b = new FakeHolder('b');
  const gone1 = t.acquireFile('7:1', 10);
  const gone2 = t.acquireFile('7:2', 11);
  const kept = t.acquireFile('8:1', 12);
  assert.ok(gone1.ok && gone2.ok && kept.ok);
  const la = t.grant(a, gone1.file);
  const lb = t.grant(b, gone2.file);
  const lk = t.grant(a, kept.file);
  const t0 = performance.now();
  const done = t.recallWhere((key) => key.startsWith('7:'), 'volume-removed');
  await sleep(20);
  assert.deepEqual([a.recalls, b.recalls], [[la.id], [lb.id]]);
  assert.equal(t.isCurrent(lk), true);
  assert.equal(t.release(a, la.id), true);
  assert.equal(await done, 2);
  assert.ok(performance.now() - t0 >= T + MARGIN - 5, 'b was revoked before its lease time ran out');
  assert.deepEqual(revoked, [['b', `${lb.id}:recall`]]);
  assert.deepEqual(k.closed.sort(), [10, 11]);
  assert.equal(t.size, 1);
});

/** A table with one file under a write map held by 'a'. */
function writeMapped(key: string, fd: number) {
  const k = new FakeKernel();
  const t = table(k);
  const a = new FakeHolder('a');
  const f = t.acquireFile(key, fd, 'write');
  assert.ok(f.ok);
  return { k, t, a, f, lease: t.grant(a, f.file) };
}

test('rekey: a write lease follows its file to a swapped-in inode; a break of the new descriptor recalls the map', async () => {
  const { k, t, a, f, lease } = writeMapped('1:20', 20);
  k.setLease(21, 'write'); // the pool file's own lease, taken before it became visible
  assert.equal(t.rekey(f.file, '1:21', 21), true);
  assert.deepEqual(k.closed, [20]);
  assert.equal(t.fileOf('1:20'), undefined);
  assert.equal(t.fileOf('1:21'), f.file);
  assert.equal(f.file.fd, 21);
  assert.equal(t.isCurrent(lease), true);
  const opened = k.breakLease(21);
  await sleep(20);
  assert.deepEqual(a.recalls, [lease.id]);
  t.release(a, lease.id);
  await opened;
  assert.equal(t.fileCount, 0);
});

test('rekey refuses, and changes nothing, while the lease is breaking', async () => {
  const { k, t, a, f, lease } = writeMapped('1:30', 30);
  const opened = k.breakLease(30);
  await sleep(10);
  assert.equal(t.rekey(f.file, '1:31', 31), false);
  assert.equal(f.file.fd, 30);
  assert.equal(f.file.key, '1:30');
  t.release(a, lease.id);
  await opened;
});

test('rekey refuses once the last map is gone (its work still running)', async () => {
  const { t, a, f, lease } = writeMapped('1:40', 40);
  await t.withFile(f.file, async () => {
    t.release(a, lease.id);
    assert.equal(t.rekey(f.file, '1:41', 41), false);
  });
  assert.equal(t.fileCount, 0);
});

test('each lingering lease goes its own linger time after its last map: not with an older one, nor later', async () => {
  const k = new FakeKernel();
  const linger = 400;
  const t = new LeaseTable({
    leaseTimeMs: T, marginMs: MARGIN, recallQueueMs: 100, maxFiles: 4, log: () => {}, kernel: k, lingerMs: linger, maxLingering: 4, cacheBytes: 1024,
  });
  const a = mapAndRelease(t, '2:7', 27); // lingers until 400
  await sleep(linger / 4);
  mapAndRelease(t, '2:8', 28); // until 500
  await sleep(linger / 4);
  // A is mapped and released again at 200: its linger starts over, behind B's (until 600).
  const again = t.acquireFile('2:7', 37);
  assert.ok(again.ok && again.file === a);
  const holder = new FakeHolder('c');
  const lease = t.grant(holder, a);
  assert.equal(t.release(holder, lease.id), true);
  assert.equal(t.isLingering(a), true);
  await sleep(linger * 0.875); // 550
  assert.deepEqual(k.closed, [37, 28], 'B went at its time; A, mapped again since, did not go at its first');
  await sleep(linger / 4 + 50); // 700
  assert.deepEqual(k.closed, [37, 28, 27], 'A went at the end of its second linger');
  assert.equal(t.fileCount, 0);
});
