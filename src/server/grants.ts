// Grants: byte and operation budgets handed to nodes, paced by token buckets under the limits (pure, no I/O).
import { performance } from 'node:perf_hooks';

/** A node's own limits and a volume's cap, in bytes (operations) per second; 0 means unlimited. */
export interface LimitSource {
  node(name: string): { rate: number; iops: number };
  volumeCap(name: string): number;
}

export interface GrantOptions {
  /** Monotonic milliseconds (performance.now by default); tests pass a fake clock. */
  now?: () => number;
  /** A node that asked for a grant within this counts as active on the volume (and in LIMITS). */
  activeWindowMs?: number;
  /** A bucket holds at most this much of its rate, so one grant never covers more, and a limit changed now
   *  reaches a running client with its next grant. */
  burstMs?: number;
  /** The smallest byte budget worth a grant, whatever the rate (one I/O's worth). */
  minGrantBytes?: number;
}

export interface GrantAnswer {
  bytes: number;
  ops: number;
  /** Milliseconds until asking again would get a non-empty grant; 0: ask any time. */
  nextMs: number;
  /** Whether any limit (the node's rate or iops, the volume's cap) bound this grant. */
  limited: boolean;
}

export interface NodeStats {
  node: string;
  rate: number;
  iops: number;
  /** Bytes granted over the last active window (per second when the window is 1 s). */
  current: number;
  /** Operations granted likewise. */
  currentOps: number;
  total: number;
  totalOps: number;
  grants: number;
  active: boolean;
  /** Volumes the node asked grants for within the active window. */
  volumes: string[];
}

export interface VolumeStats {
  volume: string;
  rate: number;
  current: number;
  total: number;
  /** Nodes active on the volume now. */
  activeNodes: number;
}

const sat = (n: number) => Math.min(n, Number.MAX_SAFE_INTEGER);

/** Grants are cut to whole pages when they fall short of what was asked (direct I/O is page aligned). */
const PAGE = 4096;

/** Tokens that refill at a rate up to a burst (a quarter second of it): a grant takes tokens, never more than
 *  there are, so a node never draws more than its rate plus one burst. */
class Bucket {
  tokens: number;
  private at: number;

  constructor(now: number, initial: number) {
    this.tokens = initial;
    this.at = now;
  }

  refill(rate: number, burst: number, now: number): void {
    const dt = Math.max(0, now - this.at);
    this.at = now;
    // Clamped to the burst of the rate in force now: a lowered limit leaves no large credit behind.
    this.tokens = Math.min(burst, this.tokens + (rate * dt) / 1000);
  }

  has(need: number): boolean {
    return this.tokens >= need - 1e-6;
  }

  /** Milliseconds until the bucket holds `need` at this rate. */
  waitMs(rate: number, need: number): number {
    return this.has(need) ? 0 : Math.ceil(((need - this.tokens) * 1000) / rate);
  }
}

interface History {
  at: number;
  bytes: number;
  ops: number;
}

class NodeState {
  readonly bytes: Bucket;
  readonly ops: Bucket;
  /** Per volume: the node's fair-share bucket there, and when it last asked. */
  readonly shares = new Map<string, Bucket>();
  readonly lastAsked = new Map<string, number>();
  recent: History[] = [];
  total = 0;
  totalOps = 0;
  grants = 0;

  constructor(now: number) {
    this.bytes = new Bucket(now, Infinity);
    this.ops = new Bucket(now, Infinity);
  }
}

/** Per-node token buckets under per-node limits and per-volume caps divided max-min fairly among active nodes. */
export class GrantTable {
  private readonly nodes = new Map<string, NodeState>();
  private readonly volumeTotals = new Map<string, { total: number; recent: History[] }>();
  /** The clock (ms), injectable for tests. */
  readonly now: () => number;
  readonly activeWindowMs: number;
  readonly burstMs: number;
  readonly minGrantBytes: number;

  constructor(private readonly limits: LimitSource, opts: GrantOptions = {}) {
    this.now = opts.now ?? (() => performance.now());
    this.activeWindowMs = opts.activeWindowMs ?? 1000;
    this.burstMs = opts.burstMs ?? 250;
    this.minGrantBytes = opts.minGrantBytes ?? 64 * 1024;
  }

  /** The most one grant gives at this byte rate: burstMs of it in whole pages, at least minGrantBytes. */
  burstBytes(rate: number): number {
    return Math.max(this.minGrantBytes, Math.floor((rate * this.burstMs) / 1000 / PAGE) * PAGE);
  }

  burstOps(iops: number): number {
    return Math.max(1, Math.floor((iops * this.burstMs) / 1000));
  }

  private state(node: string, now: number): NodeState {
    let s = this.nodes.get(node);
    if (!s) {
      s = new NodeState(now);
      this.nodes.set(node, s);
    }
    return s;
  }

  private isActive(s: NodeState, volume: string, now: number): boolean {
    const at = s.lastAsked.get(volume);
    return at !== undefined && now - at <= this.activeWindowMs;
  }

  /** Nodes active on the volume now (asked for a grant there within the window). */
  activeNodes(volume: string, now = this.now()): string[] {
    return [...this.nodes].filter(([, s]) => this.isActive(s, volume, now)).map(([n]) => n);
  }

  /**
   * The node's share of the volume's cap (Infinity when the volume has none): max-min fair among the nodes active
   * there now, each wanting up to its own limit (an unlimited node wants all it can get).
   */
  fairShare(node: string, volume: string, now = this.now()): number {
    const cap = this.limits.volumeCap(volume);
    if (cap <= 0) return Infinity;
    const active = new Set(this.activeNodes(volume, now));
    active.add(node);
    const wants = [...active]
      .map((n) => ({ n, want: this.limits.node(n).rate || Infinity }))
      .sort((a, b) => a.want - b.want);
    let left = cap;
    for (const [i, { n, want }] of wants.entries()) {
      const equal = left / (wants.length - i);
      if (want >= equal) return equal;
      if (n === node) return want;
      left -= want;
    }
    return cap;
  }

  /** The byte rate the node gets on the volume now: its own limit or its fair share, whichever is lower. */
  effectiveRate(node: string, volume: string, now = this.now()): number {
    const own = this.limits.node(node).rate || Infinity;
    return Math.min(own, this.fairShare(node, volume, now));
  }

  /**
   * Answer GRANT at once: all that was asked, or the most one grant may cover (the smallest burst of the buckets that
   * bind the node), when the buckets hold that much now; else nothing. `nextMs`: when they will hold it (again).
   */
  grant(node: string, volume: string, askBytes: number, askOps: number): GrantAnswer {
    const now = this.now();
    const s = this.state(node, now);
    const own = this.limits.node(node);
    const share = this.fairShare(node, volume, now);
    s.lastAsked.set(volume, now);
    let shareBucket = s.shares.get(volume);
    if (!shareBucket) {
      shareBucket = new Bucket(now, Infinity);
      s.shares.set(volume, shareBucket);
    }
    // The buckets that bind this grant, each with its rate and burst.
    const byteBuckets: { b: Bucket; rate: number; burst: number }[] = [];
    if (askBytes > 0 && own.rate > 0) byteBuckets.push({ b: s.bytes, rate: own.rate, burst: this.burstBytes(own.rate) });
    if (askBytes > 0 && Number.isFinite(share)) byteBuckets.push({ b: shareBucket, rate: share, burst: this.burstBytes(share) });
    const opsBucket = askOps > 0 && own.iops > 0 ? { b: s.ops, rate: own.iops, burst: this.burstOps(own.iops) } : undefined;
    for (const x of opsBucket ? [...byteBuckets, opsBucket] : byteBuckets) x.b.refill(x.rate, x.burst, now);

    // What this request can get at most: what was asked, cut to the bursts.
    let bytes = askBytes;
    let ops = askOps;
    for (const x of byteBuckets) bytes = Math.min(bytes, x.burst);
    if (opsBucket && ops > opsBucket.burst) {
      ops = opsBucket.burst;
      // Fewer operations than asked carry proportionally fewer bytes.
      bytes = Math.min(bytes, Math.floor((askBytes * ops) / askOps));
    }
    if (bytes < askBytes) bytes = Math.max(Math.floor(bytes / PAGE) * PAGE, Math.min(askBytes, PAGE));
    const covered = byteBuckets.every((x) => x.b.has(bytes)) && (!opsBucket || opsBucket.b.has(ops));
    const want = { bytes, ops };
    if (covered) {
      for (const x of byteBuckets) x.b.tokens -= bytes;
      if (opsBucket) opsBucket.b.tokens -= ops;
    } else {
      bytes = 0;
      ops = 0;
    }
    const nextMs = Math.max(
      0,
      ...byteBuckets.map((x) => x.b.waitMs(x.rate, want.bytes)),
      ...(opsBucket ? [opsBucket.b.waitMs(opsBucket.rate, want.ops)] : []),
    );
    this.count(s, volume, bytes, ops, now);
    return { bytes, ops, nextMs, limited: own.rate > 0 || own.iops > 0 || Number.isFinite(share) };
  }

  private count(s: NodeState, volume: string, bytes: number, ops: number, now: number): void {
    // Counters saturate: a node asking for absurd amounts must not push them past what the wire can carry.
    s.total = sat(s.total + bytes);
    s.totalOps = sat(s.totalOps + ops);
    s.grants++;
    if (bytes > 0 || ops > 0) s.recent.push({ at: now, bytes, ops });
    s.recent = this.prune(s.recent, now);
    let v = this.volumeTotals.get(volume);
    if (!v) {
      v = { total: 0, recent: [] };
      this.volumeTotals.set(volume, v);
    }
    v.total = sat(v.total + bytes);
    if (bytes > 0) v.recent.push({ at: now, bytes, ops });
    v.recent = this.prune(v.recent, now);
  }

  private perSecond(h: History[], what: 'bytes' | 'ops'): number {
    return sat(Math.round((h.reduce((a, e) => a + e[what], 0) * 1000) / this.activeWindowMs));
  }

  private prune(h: History[], now: number): History[] {
    const from = h.findIndex((e) => now - e.at <= this.activeWindowMs);
    return from < 0 ? [] : from === 0 ? h : h.slice(from);
  }

  /** Per-node counters, for every node that asked for a grant or is named in `extra` (limited or connected). */
  nodeStats(extra: Iterable<string> = []): NodeStats[] {
    const now = this.now();
    const names = new Set([...this.nodes.keys(), ...extra]);
    return [...names].sort().map((node) => {
      const s = this.nodes.get(node);
      const { rate, iops } = this.limits.node(node);
      const recent = s ? this.prune(s.recent, now) : [];
      const volumes = s ? [...s.lastAsked.keys()].filter((v) => this.isActive(s, v, now)).sort() : [];
      return {
        node,
        rate,
        iops,
        current: this.perSecond(recent, 'bytes'),
        currentOps: this.perSecond(recent, 'ops'),
        total: s?.total ?? 0,
        totalOps: s?.totalOps ?? 0,
        grants: s?.grants ?? 0,
        active: volumes.length > 0,
        volumes,
      };
    });
  }

  /** Per-volume counters for the given volumes (served, or with a cap). */
  volumeStats(volumes: Iterable<string>): VolumeStats[] {
    const now = this.now();
    return [...new Set(volumes)].sort().map((volume) => {
      const v = this.volumeTotals.get(volume);
      const recent = v ? this.prune(v.recent, now) : [];
      return {
        volume,
        rate: this.limits.volumeCap(volume),
        current: this.perSecond(recent, 'bytes'),
        total: v?.total ?? 0,
        activeNodes: this.activeNodes(volume, now).length,
      };
    });
  }
}
