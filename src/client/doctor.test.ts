// Unit tests for doctor's verdicts: the exit code from the rows, and the clock-skew estimate.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { WARN_EXIT, clockRow, doctorExit, row } from './doctor.js';

test('doctor exits 1 on any failure, WARN_EXIT on warnings only, 0 otherwise (skips do not count)', () => {
  assert.equal(doctorExit([row('a', 'k', 'ok', ''), row('b', 'k', 'skip', '')]), 0);
  assert.equal(doctorExit([row('a', 'k', 'ok', ''), row('b', 'k', 'warn', '')]), WARN_EXIT);
  assert.equal(doctorExit([row('a', 'k', 'warn', ''), row('b', 'k', 'fail', '')]), 1);
  assert.equal(doctorExit([]), 0);
  assert.notEqual(WARN_EXIT, 1);
});

test('clock skew is the probe mtime against the midpoint of the round trip, within its uncertainty', () => {
  const ns = (ms: number, frac = 123_456n) => BigInt(ms) * 1_000_000n + frac;
  const ok = clockRow('/mnt', ns(1_000_050), 1_000_000, 1_000_100);
  assert.equal(ok.status, 'ok');
  assert.match(ok.detail, /^server clock ahead by 0\.000 s \(± 0\.060 s\)$/);
  const behind = clockRow('/mnt', ns(995_000), 1_000_000, 1_000_020);
  assert.equal(behind.status, 'warn');
  assert.match(behind.detail, /behind by 5\.010 s/);
  // Whole-second mtimes: a second of uncertainty more.
  const coarse = clockRow('/mnt', 1_002_000n * 1_000_000n, 1_000_000, 1_000_010);
  assert.equal(coarse.status, 'ok');
  assert.match(coarse.detail, /± 1\.005 s/);
  assert.equal(clockRow('/mnt', undefined, 0, 1).status, 'skip');
});
