import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseRate } from './rate.js';

test('decimal and binary units, like pv', () => {
  assert.equal(parseRate('4096', '--limit'), 4096);
  assert.equal(parseRate('25M', '--limit'), 25_000_000);
  assert.equal(parseRate('25MB', '--limit'), 25_000_000);
  assert.equal(parseRate('1.5G', '--limit'), 1_500_000_000);
  assert.equal(parseRate('800K', '--limit'), 800_000);
  assert.equal(parseRate('800MiB/s', '--limit'), 800 * 2 ** 20);
  assert.equal(parseRate('50mib', '--limit'), 50 * 2 ** 20);
  assert.equal(parseRate('2GiB', '--limit'), 2 * 2 ** 30);
  assert.equal(parseRate('64KiB/s', '--limit'), 65536);
  assert.equal(parseRate('100/s', '--limit'), 100);
});

test('nonsense, zero and units that do not exist are usage errors naming the option', () => {
  for (const bad of ['', 'M', '25X', '-1M', '1..5M', '25 M/h', '0', '0.1', '25Mi/s/s', '1e9']) {
    assert.throws(() => parseRate(bad, '--limit'), (err: Error & { kind?: string; subject?: string }) => err.kind === 'usage' && err.subject === '--limit', bad);
  }
});
