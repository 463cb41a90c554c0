// How many device reads a large read keeps in flight: the base depth, or a deeper one where trying it showed the
// device does not mind. Pure logic; the reader feeds it each completed device read.
//
// Measured on the 2-core VM (fio, 4 MiB reads of one 1 GiB region, interleaved rounds, medians of 6): on a loop device
// backed by the virtual disk, 32 reads in flight read 1.26x what 8 did (1,392 against 1,102 MB/s: the disk is far
// away, its rate grows with what is asked of it at once); on one backed by tmpfs, where the device is the machine's own
// CPU copying memory, 32 read 0.78x what 8 did. Both devices look the same in sysfs. So it is found by trying, in
// one read: settle at the base depth (the first buffers are fresh memory), measure the base rate, the machine's CPU
// time and how long the bytes' consumer waited for the device over an interval; if the CPUs were mostly idle (the
// device was waited for, not computed) and the consumer mostly waited for the device (it, not the destination, was the
// slower side), go deep, let it settle, measure again, and go back only if the deep depth was measurably slower.
// (fusedcp to a file on the same disk as the image: the destination was the slower side, and 32 reads in flight took
// its disk time: 313-424 MB/s against 551-764 at 8.) The rate check within a read is
// noisy (on the disk-backed bed it measured the deep depth at 1.09x to 1.51x the base in eight reads), so it only
// catches harm; the CPU check is what keeps a device that is the CPU at the base depth, before any deep buffer is
// made (each is fresh memory: 32 more reads in flight cost about 100 ms of page faults).

/** What the machine's CPUs did since boot (the "cpu" line of /proc/stat), in jiffies. */
export interface CpuTimes { busy: number; total: number }

export interface TunerSettings {
  /** Reads in flight until the tuner decides. */
  base: number;
  /** The deeper depth it tries (no trying when it is not deeper than base). */
  deep: number;
  /** Bytes completed before the base interval starts. */
  settleBytes: number;
  /** The base interval covers at least this many bytes and `intervalMs`; the deep interval as many bytes. */
  intervalBytes: number;
  /** At least this long, so the CPU times (counted in 10 ms ticks) mean something. */
  intervalMs: number;
  /** The deep depth is left when it read slower than (1 - loss) times the base rate. */
  loss: number;
  /** The deep depth is not tried when the machine's CPUs were busier than this (0..1) during the base interval. */
  maxBusy: number;
  /** Nor when the bytes' consumer waited for the device less than this share (0..1) of the base interval: then the
   *  consumer (a destination disk, a pipe) is the slower side, and more reads would only compete with it. */
  minWaited: number;
  now: () => number;
  /** The machine's CPU times now; undefined when unknown (then only the rate decides). */
  cpu: () => CpuTimes | undefined;
  /** Whether this read is the only one of the process reading a device now (several at once fill the device's queue
   *  already, and deep windows would multiply the memory). */
  alone: () => boolean;
}

/** What the tuner settled on, for -v and --json. */
export interface DepthDecision {
  /** Device reads kept in flight for the rest of the read. */
  depth: number;
  /** Why, in words. */
  why: string;
  /** Bytes per second measured at the base depth and at the deep one (when each was). */
  baseRate?: number;
  deepRate?: number;
  /** The share of the machine's CPU time that was busy during the base interval (when known). */
  busy?: number;
  /** The share of the base interval the consumer spent waiting for the device. */
  waited?: number;
}

type State = 'settle' | 'base' | 'deepen' | 'deep' | 'done';

export class DepthTuner {
  /** Reads to keep in flight now. */
  depth: number;
  decision: DepthDecision | undefined;
  private state: State = 'settle';
  private completed = 0;
  private markBytes = 0;
  private markTime = 0;
  private markCpu: CpuTimes | undefined;
  private baseRate = 0;
  private busy: number | undefined;
  private waitedMs = 0;
  private waitedShare: number | undefined;

  constructor(private readonly s: TunerSettings) {
    this.depth = s.base;
    if (s.deep <= s.base) this.decide(s.base, 'no deeper depth to try');
  }

  /** The bytes' consumer waited `ms` for the next device read to complete. */
  waited(ms: number): void {
    this.waitedMs += ms;
  }

  /** A device read of `bytes` completed. */
  done(bytes: number): void {
    this.completed += bytes;
    const s = this.s;
    switch (this.state) {
      case 'settle':
        if (this.completed >= s.settleBytes) this.mark('base');
        return;
      case 'base': {
        if (this.completed - this.markBytes < s.intervalBytes || s.now() - this.markTime < s.intervalMs) return;
        this.baseRate = this.rate();
        this.waitedShare = this.waitedMs / Math.max(1e-6, s.now() - this.markTime);
        const cpu = s.cpu();
        const before = this.markCpu;
        if (cpu && before && cpu.total > before.total) this.busy = (cpu.busy - before.busy) / (cpu.total - before.total);
        if (this.busy !== undefined && this.busy > s.maxBusy) {
          this.decide(s.base, `the CPUs were ${pct(this.busy)} busy at depth ${s.base}: more reads in flight would only add work`);
        } else if (this.waitedShare < s.minWaited) {
          this.decide(s.base, `the destination was the slower side: it waited for the device ${pct(this.waitedShare)} of the time`);
        } else if (!s.alone()) {
          this.decide(s.base, 'other files are being read from a device at the same time');
        } else {
          this.depth = s.deep;
          this.markBytes = this.completed;
          this.state = 'deepen';
        }
        return;
      }
      case 'deepen':
        // The deeper reads complete a device latency after they start: half an interval before measuring them.
        if (this.completed - this.markBytes >= s.intervalBytes / 2) this.mark('deep');
        return;
      case 'deep': {
        if (this.completed - this.markBytes < s.intervalBytes) return;
        const deepRate = this.rate();
        const x = (deepRate / this.baseRate).toFixed(2);
        if (deepRate < this.baseRate * (1 - s.loss)) this.decide(s.base, `depth ${s.deep} read ${x}x depth ${s.base}: slower, back to ${s.base}`, deepRate);
        else this.decide(s.deep, `depth ${s.deep} read ${x}x depth ${s.base}`, deepRate);
        return;
      }
      case 'done':
        return;
    }
  }

  private mark(state: State): void {
    this.markBytes = this.completed;
    this.markTime = this.s.now();
    this.waitedMs = 0;
    if (state === 'base') this.markCpu = this.s.cpu();
    this.state = state;
  }

  private rate(): number {
    return (this.completed - this.markBytes) / Math.max(1e-6, (this.s.now() - this.markTime) / 1000);
  }

  private decide(depth: number, why: string, deepRate?: number): void {
    this.depth = depth;
    this.state = 'done';
    this.decision = {
      depth, why,
      ...(this.baseRate ? { baseRate: Math.round(this.baseRate) } : {}),
      ...(deepRate !== undefined ? { deepRate: Math.round(deepRate) } : {}),
      ...(this.busy !== undefined ? { busy: Math.round(this.busy * 100) / 100 } : {}),
      ...(this.waitedShare !== undefined ? { waited: Math.round(this.waitedShare * 100) / 100 } : {}),
    };
  }
}

const pct = (x: number) => `${Math.round(x * 100)} %`;

/** The aggregate "cpu" line of /proc/stat: busy is everything but idle and iowait (guest time is inside user). */
export function parseCpuTimes(stat: string): CpuTimes | undefined {
  const f = (stat.split('\n', 1)[0] ?? '').trim().split(/\s+/);
  if (f[0] !== 'cpu' || f.length < 6) return undefined;
  const n = f.slice(1, 9).map(Number);
  if (n.some((x) => !Number.isSafeInteger(x) || x < 0)) return undefined;
  const total = n.reduce((a, b) => a + b, 0);
  return { busy: total - n[3]! - n[4]!, total };
}

/** The deep depth for a device whose request queue holds `requests` requests of at most `maxRequestBytes` each: as
 *  many reads of `chunk` bytes as fill the queue, between `base` and `max`; `max` when the queue is not known. */
export function deepDepth(queue: { requests: number; maxRequestBytes: number } | undefined, chunk: number, base: number, max: number): number {
  if (!queue || queue.requests <= 0 || queue.maxRequestBytes <= 0) return max;
  const perRead = Math.ceil(chunk / queue.maxRequestBytes);
  return Math.max(base, Math.min(max, Math.floor(queue.requests / perRead)));
}

/** For -v: "depth 32 (depth 32 read 1.31x depth 8)". */
export function describeDepth(d: DepthDecision): string {
  return `depth ${d.depth} (${d.why})`;
}
