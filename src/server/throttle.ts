// The throttle policy: GRANT, LIMITS and LIMIT answered from the limits and the grant table (the connection is
// only the transport).
import { formatDataFields, formatOk, type Access, type LimitTarget } from '../protocol/index.js';
import { GrantTable, type GrantAnswer, type GrantOptions } from './grants.js';
import { LimitStore, type LimitChange } from './limits.js';
import { Reply } from './reply.js';

/** A copy drawing grants: one connection (each command has one session per server). */
export type Drawer = object;

export class ThrottlePolicy {
  readonly grants: GrantTable;
  /** Per node, its connections and when each last asked for a grant: the node's active copies. */
  private readonly drawers = new Map<string, Map<Drawer, number>>();

  constructor(
    readonly limits: LimitStore,
    private readonly log: (line: string) => void,
    opts: GrantOptions = {},
  ) {
    this.grants = new GrantTable(limits, opts);
  }

  /** GRANT: answered at once, never waits (a waiting grant would hold up the replies behind it). */
  grant(node: string, volume: string, bytes: number, ops: number, drawer?: Drawer): GrantAnswer {
    if (drawer) {
      let m = this.drawers.get(node);
      if (!m) this.drawers.set(node, (m = new Map()));
      m.set(drawer, this.grants.now());
    }
    return this.grants.grant(node, volume, bytes, ops);
  }

  /** The node's copies drawing grants now: its connections that asked within the active window. */
  copies(node: string): number {
    const m = this.drawers.get(node);
    if (!m) return 0;
    const now = this.grants.now();
    for (const [d, at] of m) if (now - at > this.grants.activeWindowMs) m.delete(d);
    if (m.size === 0) this.drawers.delete(node);
    return m.size;
  }

  /** The LIMITS reply: one N line per node known, one V line per volume (served or capped), END. */
  list(connectedNodes: Iterable<string>, servedVolumes: Iterable<string>): string[] {
    const nodes = this.grants.nodeStats([...connectedNodes, ...this.limits.limitedNodes()]);
    const volumes = this.grants.volumeStats([...servedVolumes, ...this.limits.cappedVolumes()]);
    return [
      formatOk('LIMITS', { count: nodes.length + volumes.length, nodes: nodes.length, volumes: volumes.length }),
      ...nodes.map((n) =>
        formatDataFields('N', {
          node: n.node, rate: n.rate, iops: n.iops, current: n.current, total: n.total, current_ops: n.currentOps, ops: n.totalOps, grants: n.grants,
          active: n.active ? 1 : 0, copies: this.copies(n.node), volume: n.volumes.join(','),
        }),
      ),
      ...volumes.map((v) =>
        formatDataFields('V', { volume: v.volume, rate: v.rate, current: v.current, total: v.total, active: v.activeNodes }),
      ),
      'END',
    ];
  }

  /** LIMIT SET / CLEAR, for admin nodes only; persisted before it is answered. */
  async change(
    who: { node: string; access: Access },
    req: { op: 'SET'; target: { node: string } | { volume: string }; rate?: number; iops?: number } | { op: 'CLEAR'; target: LimitTarget },
    isServed: (volume: string) => boolean,
  ): Promise<void> {
    if (who.access !== 'admin') {
      throw new Reply('ACCESS', `node ${who.node} may not change limits (its role is ${who.access}; admin needed)`);
    }
    if (req.op === 'SET' && 'volume' in req.target && !isServed(req.target.volume)) {
      throw new Reply('NOVOLUME', `no volume named ${req.target.volume}`);
    }
    const change: LimitChange =
      req.op === 'SET'
        ? { op: 'set', target: req.target, ...(req.rate !== undefined ? { rate: req.rate } : {}), ...(req.iops !== undefined ? { iops: req.iops } : {}) }
        : { op: 'clear', target: req.target };
    try {
      await this.limits.change(change);
    } catch (err) {
      throw new Reply('INTERNAL', `cannot save the limits in ${this.limits.file}: ${(err as Error).message}`);
    }
    this.log(`node ${who.node}: limits: ${describe(change)}`);
  }
}

function describe(c: LimitChange): string {
  const t = c.target;
  const what = 'all' in t ? 'all' : 'node' in t ? `node ${t.node}` : `volume ${t.volume}`;
  if (c.op === 'clear') return `cleared ${what}`;
  const parts = [c.rate !== undefined ? `rate ${c.rate || 'unlimited'} B/s` : '', c.iops !== undefined ? `iops ${c.iops || 'unlimited'}` : ''];
  return `${what}: ${parts.filter(Boolean).join(', ')}`;
}
