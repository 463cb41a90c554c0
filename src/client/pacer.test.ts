// Unit tests for pacing with a virtual clock and a fake grant source that enforces a node limit the way the map
// server does (a budget refilled at the limit, at most a quarter second of it per grant): no sockets, no sleeping.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { GrantError, Pacer, Throttle, TokenBucket, type Clock, type Grant, type GrantSource } from './pacer.js';

const MiB = 1024 * 1024;

/** Virtual time: sleeps are timers fired in order by settle(), which runs a promise to its end. */
class FakeClock implements Clock {
  t = 0;
  private timers: { at: number; fire: () => void }[] = [];
  now(): number {
    return this.t;
  }
  sleep(ms: number, signal?: AbortSignal): Promise<void> {
    return new Promise((resolve, reject) => {
      if (signal?.aborted) return reject(signal.reason);
      const timer = { at: this.t + Math.max(0, ms), fire: resolve };
      this.timers.push(timer);
      signal?.addEventListener('abort', () => {
        this.timers = this.timers.filter((x) => x !== timer);
        reject(signal.reason);
      });
    });
  }
  /** Let everything run; when all waits are on timers, jump to the earliest. */
  async settle<T>(p: Promise<T>): Promise<T> {
    let done = false;
    p.then(() => (done = true), () => (done = true));
    for (;;) {
      await new Promise((r) => setImmediate(r));
      if (done) return p;
      this.timers.sort((a, b) => a.at - b.at);
      const next = this.timers.shift();
      if (!next) throw new Error('stuck: nothing to wait for');
      this.t = Math.max(this.t, next.at);
      next.fire();
    }
  }
}

/** A map server's view of one node: `rate` bytes/s (Infinity: unlimited), grants of at most a quarter second (a
 *  burst). `partial`: what the bucket holds, up to what was asked; else all that was asked, or one burst when the
 *  bucket holds it, or nothing (what fused-protocol(7) says of GRANT). */
class FakeServer implements GrantSource {
  asked: { at: number; bytes: number; granted: number }[] = [];
  private tokens = 0;
  private at = 0;
  constructor(private readonly clock: FakeClock, public rate: number, private readonly partial = true) {}
  async grant(_volume: string, bytes: number, ops: number): Promise<Grant> {
    await Promise.resolve();
    const now = this.clock.now();
    if (this.rate === Infinity) {
      this.asked.push({ at: now, bytes, granted: bytes });
      return { bytes, ops, nextMs: 0, limited: false };
    }
    const cap = this.rate * 0.25;
    this.tokens = Math.min(cap, this.tokens + ((now - this.at) * this.rate) / 1000);
    this.at = now;
    const whole = Math.min(bytes, cap);
    const give = this.partial ? Math.floor(Math.min(bytes, this.tokens)) : this.tokens >= whole ? Math.floor(whole) : 0;
    this.tokens -= give;
    this.asked.push({ at: now, bytes, granted: give });
    const nextMs = give < bytes ? Math.ceil((Math.max(0, (this.partial ? Math.min(bytes - give, cap) : whole) - this.tokens) * 1000) / this.rate) : 0;
    return { bytes: give, ops, nextMs };
  }
}

/** Take `total` bytes in `chunk` pieces, one after another; returns the virtual seconds it took. */
async function stream(clock: FakeClock, pacer: Pacer, total: number, chunk = 4 * MiB): Promise<number> {
  const t0 = clock.now();
  for (let done = 0; done < total; done += chunk) await clock.settle(pacer.take(Math.min(chunk, total - done), 1));
  return (clock.now() - t0) / 1000;
}

for (const partial of [true, false]) {
  test(`a node limit of 50 MiB/s: 300 MiB take 6 s, asking a few grants a second (${partial ? 'partial grants' : 'all or a burst or nothing'})`, async () => {
    const clock = new FakeClock();
    const server = new FakeServer(clock, 50 * MiB, partial);
    const pacer = new Pacer(server, 'media', clock);
    const seconds = await stream(clock, pacer, 300 * MiB);
    assert.ok(seconds > 5.6 && seconds < 6.4, `took ${seconds} s`);
    assert.ok(pacer.stats.grants / seconds < 12, `${pacer.stats.grants} grants in ${seconds} s`);
    assert.ok(pacer.stats.bytesGranted >= 300 * MiB);
    assert.ok(pacer.stats.waitedMs > 5000, `waited ${pacer.stats.waitedMs} ms`);
  });

  test(`a limit of 4 MiB/s (a burst smaller than a 4 MiB read) still paces 4 MiB reads (${partial ? 'partial grants' : 'all or a burst or nothing'})`, async () => {
    const clock = new FakeClock();
    const pacer = new Pacer(new FakeServer(clock, 4 * MiB, partial), 'media', clock);
    const seconds = await stream(clock, pacer, 40 * MiB);
    assert.ok(seconds > 9 && seconds < 11, `took ${seconds} s`);
  });
}

test('unlimited: no waiting, and grants grow so there are few of them', async () => {
  const clock = new FakeClock();
  const server = new FakeServer(clock, Infinity);
  const pacer = new Pacer(server, 'media', clock);
  assert.equal(await stream(clock, pacer, 4096 * MiB), 0);
  assert.ok(pacer.stats.grants <= 12, `${pacer.stats.grants} grants for 4 GiB`);
  assert.ok(server.asked.every((a, i) => i === 0 || a.bytes >= server.asked[i - 1]!.bytes));
});

test('unlimited behind slow replies (a GRANT queued after a slow ALLOC): only the first grant is waited for', async () => {
  const clock = new FakeClock();
  const server = new FakeServer(clock, Infinity);
  const slow: GrantSource = { grant: async (v, b, o) => { await clock.sleep(100); return server.grant(v, b, o); } };
  const pacer = new Pacer(slow, 'media', clock);
  // 4 MiB pieces, 10 ms of device time each (400 MiB/s): the budget runs out while the next GRANT is on its way.
  const waitedAt: number[] = [];
  for (let done = 0; done < 1024 * MiB; done += 4 * MiB) {
    const t = clock.now();
    await clock.settle(pacer.take(4 * MiB, 1));
    if (clock.now() > t) waitedAt.push(done);
    await clock.settle(clock.sleep(10));
  }
  assert.ok(pacer.stats.grants >= 3, `${pacer.stats.grants} grants`);
  // Waits only while the grants are still small (the first ask is 16 MiB); none once they have grown.
  assert.ok(waitedAt.every((at) => at < 64 * MiB), `waited for budget at ${waitedAt.map((a) => a / MiB)} MiB`);
  assert.ok(pacer.stats.waitedMs <= 150, `waited ${pacer.stats.waitedMs} ms`);
  // Every byte spent was granted, in the end: the credit is repaid.
  assert.ok(pacer.stats.bytesGranted >= 1024 * MiB - server.asked.at(-1)!.granted);
});

test('a server from before GRANT (ERR UNKNOWN): one ask, then no more', async () => {
  const clock = new FakeClock();
  let asked = 0;
  const old: GrantSource = {
    grant: async () => {
      asked++;
      throw Object.assign(new Error('unknown verb GRANT (UNKNOWN)'), { code: 'UNKNOWN' });
    },
  };
  const pacer = new Pacer(old, 'media', clock);
  await stream(clock, pacer, 100 * MiB);
  assert.equal(await pacer.tryTake(4 * MiB, 1), true);
  assert.equal(asked, 1);
  assert.ok(pacer.isUnlimited);
});

test('any other grant failure is a GrantError (the caller falls back to the mount)', async () => {
  const clock = new FakeClock();
  const broken: GrantSource = { grant: async () => { throw new Error('connection closed'); } };
  await assert.rejects(clock.settle(new Pacer(broken, 'media', clock).take(MiB, 1)), GrantError);
});

for (const partial of [true, false]) test(`a limit lowered or raised on the server reaches a running stream within a second (${partial ? 'partial grants' : 'all or a burst or nothing'})`, async () => {
  const clock = new FakeClock();
  const server = new FakeServer(clock, 100 * MiB, partial);
  const pacer = new Pacer(server, 'media', clock);
  const rateOver = async (seconds: number) => {
    const t0 = clock.now();
    let bytes = 0;
    while (clock.now() - t0 < seconds * 1000) {
      await clock.settle(pacer.take(MiB, 1));
      bytes += MiB;
    }
    return bytes / ((clock.now() - t0) / 1000) / MiB;
  };
  await rateOver(2);
  server.rate = 20 * MiB;
  await rateOver(1); // the change settles in
  const low = await rateOver(2);
  assert.ok(low > 17 && low < 23, `${low} MiB/s at a 20 MiB/s limit`);
  server.rate = 200 * MiB;
  await rateOver(1);
  const high = await rateOver(2);
  assert.ok(high > 170 && high < 230, `${high} MiB/s at a 200 MiB/s limit`);
});

for (const partial of [true, false]) test(`tryTake: over the limit it says no at once, and what it allows keeps to the limit (${partial ? 'partial grants' : 'all or a burst or nothing'})`, async () => {
  const clock = new FakeClock();
  const server = new FakeServer(clock, 40 * MiB, partial);
  const pacer = new Pacer(server, 'media', clock);
  let direct = 0;
  let network = 0;
  // 10 s of a reader that could go at 100 MiB/s: 1 MiB every 10 ms, whichever path.
  for (let t = 0; t < 10_000; t += 10) {
    if (await clock.settle(pacer.tryTake(MiB, 1))) direct += MiB;
    else network += MiB;
    await clock.settle(clock.sleep(10));
  }
  const rate = direct / 10 / MiB;
  assert.ok(rate > 32 && rate <= 41, `direct ${rate} MiB/s at a 40 MiB/s limit`);
  assert.ok(network > 500 * MiB, `network ${network / MiB} MiB`);
});

test('a waiter is let go when its signal aborts (a recall never waits for budget)', async () => {
  const clock = new FakeClock();
  const server = new FakeServer(clock, MiB);
  const pacer = new Pacer(server, 'media', clock);
  const ac = new AbortController();
  const waiting = pacer.take(64 * MiB, 1, ac.signal);
  setImmediate(() => ac.abort(new Error('recalled')));
  await assert.rejects(clock.settle(waiting), /recalled/);
  assert.ok(clock.now() < 2000, `aborted after ${clock.now()} ms`);
});

test('--limit: a local bucket; 150 MiB at 25 MiB/s take 6 s in any piece size', async () => {
  for (const piece of [64 * 1024, 4 * MiB, 32 * MiB]) {
    const clock = new FakeClock();
    const bucket = new TokenBucket(25 * MiB, 25 * MiB * 0.25, clock);
    for (let done = 0; done < 150 * MiB; done += piece) await clock.settle(bucket.take(piece));
    assert.ok(Math.abs(clock.now() - 6000) < 6000 * 0.05 + 1300, `${clock.now()} ms with ${piece}-byte pieces`);
  }
});

test('Throttle: one pacer per session and volume, totals over all, --limit on top of the server limit', async () => {
  const clock = new FakeClock();
  const server = new FakeServer(clock, 50 * MiB);
  const throttle = new Throttle({ limit: 25 * MiB }, clock);
  const a = throttle.pacer(server, 'media');
  assert.equal(throttle.pacer(server, 'media'), a);
  assert.notEqual(throttle.pacer(server, 'other'), a);
  const t0 = clock.now();
  for (let done = 0; done < 150 * MiB; done += 4 * MiB) {
    await clock.settle(throttle.limit(4 * MiB));
    await clock.settle(a.take(4 * MiB, 1));
  }
  const seconds = (clock.now() - t0) / 1000;
  assert.ok(seconds > 5.5 && seconds < 6.5, `took ${seconds} s`);
  const totals = throttle.totals();
  assert.equal(totals.grants, a.stats.grants);
  assert.ok(totals.waitedMs >= a.stats.waitedMs);
});

test('Session.grant over a socket: the reply parsed; a server from before GRANT leaves the pacer unlimited', async () => {
  const { fakeServer, openFake } = await import('./fake-server.js');
  const limited = await fakeServer({
    grant: (volume, bytes, ops) => `OK GRANT bytes=${Math.min(bytes, 1000)} ops=${ops} next=${volume === 'media' ? 250 : 0}${volume === 'open' ? ' limited=0' : ''}`,
  });
  const old = await fakeServer();
  try {
    const s = await openFake(limited);
    // No limited= field (a server from before it): limited.
    assert.deepEqual(await s.grant('media', 5000, 3), { bytes: 1000, ops: 3, nextMs: 250, limited: true });
    assert.deepEqual(await s.grant('open', 500, 1), { bytes: 500, ops: 1, nextMs: 0, limited: false });
    assert.ok(limited.got.includes('GRANT media 5000 3'));
    s.close();
    const o = await openFake(old);
    const pacer = new Pacer(o, 'media');
    await pacer.take(4 * MiB, 1);
    await pacer.take(4 * MiB, 1);
    assert.ok(pacer.isUnlimited);
    assert.equal(old.got.filter((l) => l.startsWith('GRANT ')).length, 1);
    o.close();
  } finally {
    await limited.close();
    await old.close();
  }
});
