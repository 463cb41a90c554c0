// Unit tests for rate parsing: decimal and binary units, optional B and /s, clear refusals.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FusedError } from '../errors.js';
import { formatRate, parseRate } from './rates.js';

test('rates with decimal and binary units', () => {
  const cases: [string, number][] = [
    ['123', 123], ['0', 0], ['100k', 100_000], ['100K', 100_000], ['200M', 200_000_000], ['1.5G', 1_500_000_000],
    ['800MiB/s', 800 * 2 ** 20], ['800MiB', 800 * 2 ** 20], ['800Mi', 800 * 2 ** 20], ['1KiB', 1024], ['2T', 2e12],
    ['10MB/s', 10_000_000], ['10MB', 10_000_000], ['64/s', 64], ['5B/s', 5], ['0.5M', 500_000], ['1.5GiB/s', 1.5 * 2 ** 30],
    [' 50M ', 50_000_000], ['1.0000001K', 1000],
  ];
  for (const [s, n] of cases) assert.equal(parseRate(s, 'RATE'), n, s);
});

test('junk rates are usage errors that say what is wrong', () => {
  const cases: [string, RegExp][] = [
    ['12X', /^'12X': unknown unit 'X' \(bytes per second/],
    ['', /not a rate/],
    ['fast', /not a rate/],
    ['-5M', /not a rate/],
    ['1e6', /unknown unit 'e6'/],
    ['5 M', /unknown unit ' M'/],
    ['100Mb', /lower-case b means bits/],
    ['100mb/s', /lower-case b means bits/],
    ['1.5', /fraction needs a unit/],
    ['3iB', /unknown unit 'iB'/],
    ['5M/h', /unknown unit 'M\/h'/],
    ['99999999999999T', /too large/],
    ['1,5M', /unknown unit ',5M'/],
  ];
  for (const [s, re] of cases) {
    assert.throws(() => parseRate(s, 'RATE'), (e: unknown) => e instanceof FusedError && e.kind === 'usage' && e.subject === 'RATE' && re.test(e.message), s);
  }
});

test('rates read back', () => {
  assert.equal(formatRate(0), 'unlimited');
  assert.equal(formatRate(50 * 2 ** 20), '50 MiB/s');
  assert.equal(formatRate(1536), '1.5 KiB/s');
  assert.equal(formatRate(100), '100 B/s');
});
