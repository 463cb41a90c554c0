// Pacing direct I/O: byte budgets (grants) drawn from the map server per session and volume, and a command's own
// --limit on top (a local token bucket, like rsync --bwlimit or pv -L).
import { performance } from 'node:perf_hooks';
import { setTimeout as sleepTimer } from 'node:timers/promises';

/** Monotonic milliseconds and sleeping; tests pass a fake. */
export interface Clock {
  now(): number;
  /** Rejects when `signal` aborts. `ref: false` does not keep the process alive (background asks). */
  sleep(ms: number, signal?: AbortSignal, ref?: boolean): Promise<void>;
}

export const realClock: Clock = {
  now: () => performance.now(),
  sleep: (ms, signal, ref = true) => sleepTimer(ms, undefined, { ref, ...(signal ? { signal } : {}) }),
};

/** A GRANT reply: what the server gives now (at most what was asked) and, when it fell short, when to ask again. */
/** `limited`: a limit bound the grant (a server that does not say counts as limited). */
export interface Grant { bytes: number; ops: number; nextMs: number; limited?: boolean }

/** What the pacer needs of a session (Session; tests pass fakes). Throws a refusal with code UNKNOWN when the server
 *  predates GRANT. */
export interface GrantSource {
  grant(volume: string, bytes: number, ops: number): Promise<Grant>;
}

/** A grant covers about this much of the rate the client achieves (the server gives at most ~0.25 s of the node's
 *  rate), so limits changed on the server reach a running copy within a second. */
export const GRANT_SECONDS = 0.25;
/** The first ask, before any rate is known. */
const FIRST_ASK = 16 * 1024 * 1024;
const MAX_ASK = 1024 * 1024 * 1024;
/** `next` is taken within these bounds: never a busy loop, never deaf to a raised limit for more than a second. */
const MIN_NEXT_MS = 5;
const MAX_NEXT_MS = 1000;
/** The achieved rate is measured over this window. */
const RATE_WINDOW_MS = 1000;

export interface PacerStats {
  /** GRANT requests answered. */
  grants: number;
  bytesGranted: number;
  /** Time spent waiting for budget (not counting waits queued behind another waiter). */
  waitedMs: number;
}

/** Why bytes went through the mount with --fallback. */
export const OVER_LIMIT = 'over the throttle limit (--fallback)';

/** A grant request failed (other than "the server has no GRANT"): the caller falls back to the mount. */
export class GrantError extends Error {}

/** The budget of one session on one volume. At most one GRANT is in flight. */
export class Pacer {
  readonly stats: PacerStats = { grants: 0, bytesGranted: 0, waitedMs: 0 };
  private budgetBytes = 0;
  private budgetOps = 0;
  /** The server has no limits for us (no GRANT verb): ask no more. */
  private unlimited = false;
  private asking: Promise<void> | undefined;
  /** The server said to ask again no earlier than this (monotonic ms). */
  private nextAt = 0;
  private lastAsk = 0;
  private lastFull = false;
  /** The last grant was all that was asked, no limit bound it (limited=0) and nothing is to wait for: the next
   *  take need not wait for the round trip of the GRANT under way; it may spend up to this much ahead of it (the
   *  last grant's size), repaid from that grant. 0: no credit (any limit keeps pacing strict). */
  private creditBytes = 0;
  /** Bytes and ops spent, for the achieved rate. */
  private readonly spent: { at: number; bytes: number; ops: number }[] = [];
  private queue: Promise<void> = Promise.resolve();
  private background = false;

  constructor(
    private readonly source: GrantSource,
    private readonly volume: string,
    private readonly clock: Clock = realClock,
  ) {}

  /** Whether the server turned out to set no limits at all (no GRANT verb). */
  get isUnlimited(): boolean {
    return this.unlimited;
  }

  /** Resolves when the budget covers `bytes` and `ops` (and spends them). Waiters are served in order. Rejects
   *  when `signal` aborts (a recall must not wait for budget) or with GrantError. */
  take(bytes: number, ops: number, signal?: AbortSignal): Promise<void> {
    const run = this.queue.then(() => this.takeNow(bytes, ops, signal));
    this.queue = run.catch(() => {});
    return run;
  }

  private async takeNow(bytes: number, ops: number, signal?: AbortSignal): Promise<void> {
    const t0 = this.clock.now();
    try {
      for (;;) {
        if (this.unlimited) return;
        if (this.covers(bytes, ops)) return this.spend(bytes, ops);
        // Open-ended grants: spend ahead of the GRANT in flight (its reply may queue behind a slow ALLOC's) rather
        // than wait for it; the debt is bounded and the next grant repays it, so the long-run rate stays granted.
        if (this.creditBytes > 0 && this.budgetBytes - bytes >= -this.creditBytes) return this.spend(bytes, ops);
        signal?.throwIfAborted();
        const wait = this.nextAt - this.clock.now();
        if (wait > 0) await this.clock.sleep(wait, signal);
        else await this.ask(bytes, ops);
      }
    } finally {
      this.stats.waitedMs += this.clock.now() - t0;
    }
  }

  /**
   * For --fallback: true (and spent) when the budget covers the request now, or once the grant being asked answers
   * and covers it; false when the server said we are over the limit: the caller sends those bytes through the
   * mount, and the pacer keeps asking in the background so the direct path resumes when the budget allows.
   */
  async tryTake(bytes: number, ops: number): Promise<boolean> {
    if (this.unlimited) return true;
    if (this.covers(bytes, ops)) {
      this.spend(bytes, ops);
      return true;
    }
    if (this.clock.now() >= this.nextAt) {
      await this.ask(bytes, ops);
      if (this.unlimited) return true;
      if (this.covers(bytes, ops)) {
        this.spend(bytes, ops);
        return true;
      }
    }
    this.askLater(bytes, ops);
    return false;
  }

  private covers(bytes: number, ops: number): boolean {
    return this.budgetBytes >= bytes && this.budgetOps >= ops;
  }

  private spend(bytes: number, ops: number): void {
    this.budgetBytes -= bytes;
    this.budgetOps -= ops;
    this.spent.push({ at: this.clock.now(), bytes, ops });
    // Ask for the next grant before this one runs out, so a steady stream never stalls on a round trip.
    if (!this.asking && this.clock.now() >= this.nextAt && this.budgetBytes < this.lastAsk / 2) {
      void this.ask(0, 0).catch(() => {});
    }
  }

  /** Bytes and ops per second spent over the last second, or undefined before there is a measure. */
  private rate(): { bytes: number; ops: number } | undefined {
    const now = this.clock.now();
    while (this.spent.length > 0 && this.spent[0]!.at < now - RATE_WINDOW_MS) this.spent.shift();
    if (this.spent.length < 2) return undefined;
    const span = Math.max(50, now - this.spent[0]!.at);
    const sum = this.spent.reduce((a, s) => ({ bytes: a.bytes + s.bytes, ops: a.ops + s.ops }), { bytes: 0, ops: 0 });
    return { bytes: (sum.bytes * 1000) / span, ops: (sum.ops * 1000) / span };
  }

  /** One GRANT for what is missing of a request, and about GRANT_SECONDS of the achieved rate; joins the one in
   *  flight if there is one. */
  private ask(bytes: number, ops: number): Promise<void> {
    if (this.asking) return this.asking;
    const rate = this.rate();
    let want = rate ? rate.bytes * GRANT_SECONDS : FIRST_ASK;
    // Granted in full last time: the limit may have been raised (or there is none); grow quickly to find it.
    if (this.lastFull) want = Math.max(want, this.lastAsk * 2);
    want = Math.ceil(Math.min(MAX_ASK, Math.max(want, bytes - this.budgetBytes, 1)));
    const opsPerByte = rate && rate.bytes > 0 ? rate.ops / rate.bytes : 1 / (1024 * 1024);
    const wantOps = Math.max(1, ops - this.budgetOps, Math.ceil(want * opsPerByte));
    this.asking = (async () => {
      let g: Grant;
      try {
        g = await this.source.grant(this.volume, want, wantOps);
      } catch (err) {
        if ((err as { code?: unknown }).code === 'UNKNOWN') {
          this.unlimited = true;
          return;
        }
        throw new GrantError(err instanceof Error ? err.message : String(err));
      }
      this.stats.grants++;
      this.stats.bytesGranted += g.bytes;
      this.budgetBytes += g.bytes;
      this.budgetOps += g.ops;
      this.lastAsk = want;
      this.lastFull = g.bytes >= want && g.ops >= wantOps;
      this.creditBytes = this.lastFull && g.nextMs === 0 && g.limited === false ? g.bytes : 0;
      this.nextAt = this.lastFull ? 0 : this.clock.now() + Math.min(MAX_NEXT_MS, Math.max(MIN_NEXT_MS, g.nextMs));
    })().finally(() => (this.asking = undefined));
    return this.asking;
  }

  /** Over the limit with --fallback: one ask when the server said it makes sense, in the background. */
  private askLater(bytes: number, ops: number): void {
    if (this.background) return;
    this.background = true;
    void (async () => {
      try {
        const wait = this.nextAt - this.clock.now();
        if (wait > 0) await this.clock.sleep(wait, undefined, false);
        if (!this.covers(bytes, ops)) await this.ask(bytes, ops);
      } catch {
        // the next take or tryTake asks again and sees the failure
      } finally {
        this.background = false;
      }
    })();
  }
}

/** A local token bucket in bytes per second. Spending runs into debt: a request waits until the debt is repaid at
 *  the rate, so any size of request works and the long-run rate is exact. */
export class TokenBucket {
  private tokens = 0;
  private at: number;

  constructor(readonly rate: number, private readonly burst: number, private readonly clock: Clock = realClock) {
    this.at = clock.now();
  }

  /** Reserve `bytes` and wait until they are covered. Returns the ms waited. */
  async take(bytes: number, signal?: AbortSignal): Promise<number> {
    const now = this.clock.now();
    this.tokens = Math.min(this.burst, this.tokens + ((now - this.at) * this.rate) / 1000);
    this.at = now;
    this.tokens -= bytes;
    if (this.tokens >= 0) return 0;
    const wait = (-this.tokens * 1000) / this.rate;
    await this.clock.sleep(wait, signal);
    return wait;
  }
}

export type ThrottleTotals = PacerStats;

/**
 * A command's pacing: one Pacer per session and volume (budgets are the server's, per node), the --limit bucket
 * (all bytes the command moves, whichever path), and whether bytes over the server's limit go through the mount
 * (--fallback) instead of waiting.
 */
export class Throttle {
  readonly fallback: boolean;
  private readonly bucket: TokenBucket | undefined;
  private readonly pacers = new WeakMap<GrantSource, Map<string, Pacer>>();
  private readonly all: Pacer[] = [];
  private localWaitedMs = 0;

  constructor(opts: { limit?: number; fallback?: boolean } = {}, private readonly clock: Clock = realClock) {
    this.fallback = opts.fallback ?? false;
    // A quarter second of burst, like a grant: short stalls are made up, long ones are not.
    if (opts.limit !== undefined) this.bucket = new TokenBucket(opts.limit, opts.limit * GRANT_SECONDS, clock);
  }

  /** The budget of `source` (a session) on `volume`. */
  pacer(source: GrantSource, volume: string): Pacer {
    let perVolume = this.pacers.get(source);
    if (!perVolume) this.pacers.set(source, (perVolume = new Map()));
    let p = perVolume.get(volume);
    if (!p) {
      p = new Pacer(source, volume, this.clock);
      perVolume.set(volume, p);
      this.all.push(p);
    }
    return p;
  }

  /** --limit: wait until `bytes` more are within the command's own rate. */
  async limit(bytes: number, signal?: AbortSignal): Promise<void> {
    if (this.bucket) this.localWaitedMs += await this.bucket.take(bytes, signal);
  }

  /** Counters so far over every session and volume (subtract two to get one file's share). */
  totals(): ThrottleTotals {
    const t = { grants: 0, bytesGranted: 0, waitedMs: this.localWaitedMs };
    for (const p of this.all) {
      t.grants += p.stats.grants;
      t.bytesGranted += p.stats.bytesGranted;
      t.waitedMs += p.stats.waitedMs;
    }
    return t;
  }
}

/** `after - before`, waits rounded to whole ms. */
export function totalsSince(before: ThrottleTotals, after: ThrottleTotals): ThrottleTotals {
  return { grants: after.grants - before.grants, bytesGranted: after.bytesGranted - before.bytesGranted, waitedMs: Math.round(after.waitedMs - before.waitedMs) };
}
