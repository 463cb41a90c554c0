// Throttle limits held by the map server (per node: bytes/s and operations/s; per volume: a bytes/s cap),
// persisted as JSON in its state directory, written atomically so a crash leaves the old or the new file.
import { mkdir, open, readFile, rename, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { isNodeName, isVolumeName } from '../protocol/index.js';
import type { LimitSource } from './grants.js';

export const LIMITS_FILE = 'limits.json';
export const DEFAULT_STATE_DIR = '/var/lib/fused';

export interface NodeLimit {
  /** Bytes per second; 0: unlimited. */
  rate: number;
  /** Operations per second; 0: unlimited. */
  iops: number;
}

export type LimitChange =
  | { op: 'set'; target: { node: string } | { volume: string }; rate?: number; iops?: number }
  | { op: 'clear'; target: { node: string } | { volume: string } | { all: true } };

interface LimitsData {
  nodes: Map<string, NodeLimit>;
  volumes: Map<string, number>;
}

const isRate = (n: unknown): n is number => typeof n === 'number' && Number.isSafeInteger(n) && n >= 0;

/** Parses limits.json; throws an Error saying what is wrong (the server refuses to start on it). */
export function parseLimits(text: string): LimitsData {
  const data: LimitsData = { nodes: new Map(), volumes: new Map() };
  const doc = JSON.parse(text) as unknown;
  if (!doc || typeof doc !== 'object') throw new Error('not a JSON object');
  const { version, nodes, volumes } = doc as { version?: unknown; nodes?: unknown; volumes?: unknown };
  if (version !== 1) throw new Error(`unknown version ${JSON.stringify(version)} (this server reads 1)`);
  for (const [name, v] of Object.entries((nodes ?? {}) as Record<string, { rate?: unknown; iops?: unknown }>)) {
    const rate = v?.rate ?? 0;
    const iops = v?.iops ?? 0;
    if (!isNodeName(name) || !isRate(rate) || !isRate(iops)) throw new Error(`bad node limit ${JSON.stringify(name)}`);
    if (rate || iops) data.nodes.set(name, { rate, iops });
  }
  for (const [name, v] of Object.entries((volumes ?? {}) as Record<string, { rate?: unknown }>)) {
    const rate = v?.rate ?? 0;
    if (!isVolumeName(name) || !isRate(rate)) throw new Error(`bad volume cap ${JSON.stringify(name)}`);
    if (rate) data.volumes.set(name, rate);
  }
  return data;
}

export function formatLimits(data: LimitsData): string {
  const sorted = <V>(m: Map<string, V>) => [...m].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return JSON.stringify(
    {
      version: 1,
      nodes: Object.fromEntries(sorted(data.nodes).map(([n, l]) => [n, { rate: l.rate, iops: l.iops }])),
      volumes: Object.fromEntries(sorted(data.volumes).map(([v, rate]) => [v, { rate }])),
    },
    null,
    2,
  ) + '\n';
}

/** Applies a change to a copy of the limits; rate or iops 0 removes that limit. */
export function applyChange(data: LimitsData, c: LimitChange): LimitsData {
  const next: LimitsData = { nodes: new Map(data.nodes), volumes: new Map(data.volumes) };
  const t = c.target;
  if (c.op === 'clear') {
    if ('all' in t) return { nodes: new Map(), volumes: new Map() };
    if ('node' in t) next.nodes.delete(t.node);
    else next.volumes.delete(t.volume);
    return next;
  }
  if ('node' in t) {
    const old = next.nodes.get(t.node) ?? { rate: 0, iops: 0 };
    const l = { rate: c.rate ?? old.rate, iops: c.iops ?? old.iops };
    if (l.rate || l.iops) next.nodes.set(t.node, l);
    else next.nodes.delete(t.node);
  } else if ('volume' in t) {
    if (c.rate) next.volumes.set(t.volume, c.rate);
    else next.volumes.delete(t.volume);
  }
  return next;
}

/** Writes FILE atomically: a temporary file in the same directory, synced, renamed over it, the directory synced. */
export async function writeFileAtomic(file: string, text: string): Promise<void> {
  const tmp = `${file}.${process.pid}.tmp`;
  const fh = await open(tmp, 'w', 0o644);
  try {
    await fh.writeFile(text);
    await fh.sync();
  } catch (err) {
    await fh.close().catch(() => {});
    await unlink(tmp).catch(() => {});
    throw err;
  }
  await fh.close();
  try {
    await rename(tmp, file);
  } catch (err) {
    await unlink(tmp).catch(() => {});
    throw err;
  }
  const dir = await open(join(file, '..'), 'r');
  try {
    await dir.sync();
  } finally {
    await dir.close();
  }
}

/** The server's limits: read by the grants on every request, changed by LIMIT SET/CLEAR, kept in DIR/limits.json
 *  (without a directory, in memory only: tests). */
export class LimitStore implements LimitSource {
  private data: LimitsData = { nodes: new Map(), volumes: new Map() };
  /** Changes are written one at a time, in order. */
  private writing: Promise<void> = Promise.resolve();

  private constructor(readonly dir: string | undefined) {}

  get file(): string | undefined {
    return this.dir === undefined ? undefined : join(this.dir, LIMITS_FILE);
  }

  /** Limits that live in memory only (tests, embedded servers). */
  static inMemory(): LimitStore {
    return new LimitStore(undefined);
  }

  /** Loads DIR/limits.json (none yet, or no DIR yet: no limits; DIR is made with the first change). */
  static async load(dir?: string): Promise<LimitStore> {
    const store = new LimitStore(dir);
    if (dir === undefined) return store;
    let text: string;
    try {
      text = await readFile(join(dir, LIMITS_FILE), 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return store;
      throw err;
    }
    try {
      store.data = parseLimits(text);
    } catch (err) {
      throw new Error(`${join(dir, LIMITS_FILE)}: ${(err as Error).message}`);
    }
    return store;
  }

  node(name: string): NodeLimit {
    return this.data.nodes.get(name) ?? { rate: 0, iops: 0 };
  }

  volumeCap(name: string): number {
    return this.data.volumes.get(name) ?? 0;
  }

  limitedNodes(): string[] {
    return [...this.data.nodes.keys()];
  }

  cappedVolumes(): string[] {
    return [...this.data.volumes.keys()];
  }

  /** Applies and persists a change; it takes effect only once it is on disk (a failed write changes nothing). */
  change(c: LimitChange): Promise<void> {
    const run = this.writing.then(async () => {
      const next = applyChange(this.data, c);
      if (this.dir !== undefined && this.file !== undefined) {
        await mkdir(this.dir, { recursive: true, mode: 0o755 });
        await writeFileAtomic(this.file, formatLimits(next));
      }
      this.data = next;
    });
    this.writing = run.catch(() => {});
    return run;
  }
}
