// Unit tests for the deeper-depth trial: a fake clock and fake CPU times stand for the device and the machine.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { deepDepth, DepthTuner, parseCpuTimes, type CpuTimes, type TunerSettings } from './depth.js';

const MiB = 1024 * 1024;
const CHUNK = 4 * MiB;

/** A device read by a tuner: each chunk at depth d takes `perChunkMs(d)` of the clock, the CPUs are `busy(d)` busy,
 *  and the consumer spends `waits` of that time waiting for the device (all of it by default: /dev/null). */
function run(perChunkMs: (depth: number) => number, busy: (depth: number) => number | undefined, over: Partial<TunerSettings> = {}, chunks = 200, waits = 1) {
  let now = 0;
  let jiffies = { busy: 0, total: 0 };
  const depths: number[] = [];
  const t = new DepthTuner({
    base: 8, deep: 32, settleBytes: 48 * MiB, intervalBytes: 128 * MiB, intervalMs: 100, loss: 0.1, maxBusy: 0.4, minWaited: 0.5,
    now: () => now,
    cpu: (): CpuTimes | undefined => (busy(t.depth) === undefined ? undefined : { ...jiffies }),
    alone: () => true,
    ...over,
  });
  for (let i = 0; i < chunks; i++) {
    const ms = perChunkMs(t.depth);
    now += ms;
    const b = busy(t.depth) ?? 0;
    // 2 CPUs, 100 ticks a second each.
    jiffies = { busy: jiffies.busy + b * ms * 0.2, total: jiffies.total + ms * 0.2 };
    depths.push(t.depth);
    t.waited(ms * waits);
    t.done(CHUNK);
  }
  return { t, depths };
}

test('a device that gives more for more reads in flight, with the CPUs idle: the read goes deep and stays', () => {
  // 1.1 GB/s at depth 8, 1.4 GB/s at 32 (the disk-backed bed's figures).
  const { t, depths } = run((d) => (d === 32 ? 3.0 : 3.8), () => 0.1);
  assert.equal(t.decision?.depth, 32);
  assert.match(t.decision!.why, /depth 32 read 1\.27x depth 8/);
  assert.equal(t.decision!.busy, 0.1);
  assert.equal(depths[0], 8);
  assert.equal(depths.at(-1), 32);
  // Deep from right after the base interval: 48 MiB settling, then at least 128 MiB and 100 ms.
  assert.equal(depths.indexOf(32), 12 + 32);
});

test('busy CPUs during the base interval: the device is the CPU, the deep depth is never tried', () => {
  const { t, depths } = run(() => 1.5, () => 0.7);
  assert.equal(t.decision?.depth, 8);
  assert.match(t.decision!.why, /CPUs were 70 % busy at depth 8/);
  assert.ok(depths.every((d) => d === 8), 'never deeper than 8');
});

test('a consumer that hardly waited for the device (a slow destination): the deep depth is never tried', () => {
  // fusedcp to a file on the disk the image is on: more reads would only take the destination's disk time.
  const { t, depths } = run(() => 3.8, () => 0.1, {}, 200, 0.2);
  assert.equal(t.decision?.depth, 8);
  assert.match(t.decision!.why, /destination was the slower side: it waited for the device 20 % of the time/);
  assert.equal(t.decision!.waited, 0.2);
  assert.ok(depths.every((d) => d === 8));
});

test('a deep depth that reads slower than the base is left again', () => {
  const { t, depths } = run((d) => (d === 32 ? 5 : 3.8), () => 0.1);
  assert.equal(t.decision?.depth, 8);
  assert.match(t.decision!.why, /depth 32 read 0\.76x depth 8: slower, back to 8/);
  assert.ok(depths.includes(32), 'it was tried');
  assert.equal(depths.at(-1), 8);
});

test('no slower, no faster: the deep depth stays (the trial only looks for harm; its own rate is noisy)', () => {
  const { t } = run(() => 3.8, () => 0.1);
  assert.equal(t.decision?.depth, 32);
});

test('CPU times unknown: the rate alone decides', () => {
  assert.equal(run((d) => (d === 32 ? 3.0 : 3.8), () => undefined).t.decision?.depth, 32);
  assert.equal(run((d) => (d === 32 ? 6 : 3.8), () => undefined).t.decision?.depth, 8);
});

test('another large read at the same time: the deep depth is not tried', () => {
  const { t, depths } = run(() => 3.8, () => 0.1, { alone: () => false });
  assert.equal(t.decision?.depth, 8);
  assert.match(t.decision!.why, /other files are being read/);
  assert.ok(depths.every((d) => d === 8));
});

test('the base interval lasts at least intervalMs, so the CPU ticks (10 ms) mean something', () => {
  // A fast device: 128 MiB in 32 ms. The base interval waits for 100 ms.
  const { depths } = run((d) => (d === 32 ? 0.8 : 1), () => 0.1);
  assert.equal(depths.indexOf(32), 12 + 100);
});

test('a deep depth no deeper than the base: nothing to try', () => {
  const { t, depths } = run(() => 3, () => 0.1, { deep: 8 });
  assert.equal(t.decision?.depth, 8);
  assert.ok(depths.every((d) => d === 8));
});

test('a read that ends before the trial does: no decision, and it ends at the depth it was at', () => {
  const { t } = run(() => 3.8, () => 0.1, {}, 20);
  assert.equal(t.decision, undefined);
  assert.equal(t.depth, 8);
});

test('/proc/stat: busy is all but idle and iowait; anything else is unknown', () => {
  const stat = 'cpu  100 5 50 1000 200 3 7 11 0 0\ncpu0 50 2 25 500 100 1 3 5 0 0\nintr 1 2 3\n';
  assert.deepEqual(parseCpuTimes(stat), { busy: 176, total: 1376 });
  assert.equal(parseCpuTimes(''), undefined);
  assert.equal(parseCpuTimes('intr 1 2 3\n'), undefined);
  assert.equal(parseCpuTimes('cpu  1 2 x 4 5\n'), undefined);
  assert.equal(parseCpuTimes('cpu  1 2\n'), undefined);
});

test('the deep depth fills the device\'s queue: requests it holds over requests a 4 MiB read is split into', () => {
  // A loop device: 128 requests of at most 1,280 KiB; a 4 MiB read is 4 of them.
  assert.equal(deepDepth({ requests: 128, maxRequestBytes: 1280 * 1024 }, CHUNK, 8, 32), 32);
  // A disk with mq-deadline and 512 KiB requests: 256 / 8.
  assert.equal(deepDepth({ requests: 256, maxRequestBytes: 512 * 1024 }, CHUNK, 8, 32), 32);
  // A shallow queue: 64 requests of 128 KiB hold two 4 MiB reads; never below the base.
  assert.equal(deepDepth({ requests: 64, maxRequestBytes: 128 * 1024 }, CHUNK, 8, 32), 8);
  assert.equal(deepDepth({ requests: 96, maxRequestBytes: 256 * 1024 }, CHUNK, 8, 32), 8);
  assert.equal(deepDepth({ requests: 256, maxRequestBytes: 256 * 1024 }, CHUNK, 8, 32), 16);
  // Not known (an image file): the most.
  assert.equal(deepDepth(undefined, CHUNK, 8, 32), 32);
  assert.equal(deepDepth({ requests: 0, maxRequestBytes: 0 }, CHUNK, 8, 32), 32);
});
