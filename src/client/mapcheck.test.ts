// Unit tests for the check that a map is of the file opened through the mount.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { BigIntStats } from 'node:fs';
import { mapMismatch, parseMtimeNs } from './mapcheck.js';

const opened = { size: 4096n, ino: 77n, mtimeNs: 1_700_000_000_123_456_789n } as BigIntStats;
const map = { size: 4096, ino: '77', mtimeNs: 1_700_000_000_123_456_789n };

test('parseMtimeNs reads seconds and nanoseconds', () => {
  assert.equal(parseMtimeNs('1700000000.123456789'), 1_700_000_000_123_456_789n);
  assert.equal(parseMtimeNs('5.5'), 5_500_000_000n);
  assert.equal(parseMtimeNs('7'), 7_000_000_000n);
  assert.equal(parseMtimeNs('x'), undefined);
  assert.equal(parseMtimeNs(undefined), undefined);
  assert.equal(parseMtimeNs('1.1234567890'), undefined);
});

test('the same file matches at every fidelity', () => {
  assert.equal(mapMismatch(map, opened, {}), undefined);
  assert.equal(mapMismatch(map, opened, { mountInodes: true, mountMtimeNs: true }), undefined);
});

test('size differs', () => {
  assert.match(mapMismatch({ ...map, size: 1 }, opened, {}) ?? '', /size through the mount \(4096\) differs from the map \(1\)/);
});

test('inode numbers are compared only where the mount shows the server\'s', () => {
  const other = { ...map, ino: '78' };
  assert.equal(mapMismatch(other, opened, {}), undefined);
  assert.match(mapMismatch(other, opened, { mountInodes: true }) ?? '', /inode 78.*inode 77/);
});

test('nanoseconds are compared only where the mount shows them; seconds always', () => {
  const ns = { ...map, mtimeNs: map.mtimeNs + 1n };
  assert.equal(mapMismatch(ns, opened, {}), undefined);
  assert.match(mapMismatch(ns, opened, { mountMtimeNs: true }) ?? '', /mtime .* ns\)/);
  const s = { ...map, mtimeNs: map.mtimeNs + 1_000_000_000n };
  assert.match(mapMismatch(s, opened, {}) ?? '', /mtime 1700000001 s\) is not the one opened .*1700000000 s/);
});
