// Unit tests for checksums: xxh64 test vectors, streamed pieces equal one-shot hashes, reset, whole files.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import xxhash from 'xxhash-wasm';
import { FusedError } from '../errors.js';
import { StreamHash, hashFile, parseHashType } from './hash.js';

test('xxh64 matches the reference test vectors (seed 0)', async () => {
  const vectors: [string, string][] = [
    ['', 'ef46db3751d8e999'],
    ['a', 'd24ec4f1a98c6e5b'],
    ['abc', '44bc2cf5ad770999'],
  ];
  for (const [input, hex] of vectors) {
    const h = new StreamHash('xxh64');
    await h.update(Buffer.from(input));
    assert.deepEqual(await h.digest(), { type: 'xxh64', value: hex }, JSON.stringify(input));
  }
});

test('pieces larger and smaller than a slot hash as the whole; reset starts again', async () => {
  const data = randomBytes(9 * 1024 * 1024 + 123);
  const reference = async (type: 'xxh64' | 'md5' | 'sha256') =>
    type === 'xxh64' ? (await xxhash()).h64Raw(data).toString(16).padStart(16, '0') : createHash(type).update(data).digest('hex');
  for (const type of ['xxh64', 'md5', 'sha256'] as const) {
    const h = new StreamHash(type);
    await h.update(randomBytes(1000)); // thrown away by the reset
    h.reset();
    await h.update(data.subarray(0, 5 * 1024 * 1024 + 7)); // more than one slot
    await h.update(data.subarray(5 * 1024 * 1024 + 7, 5 * 1024 * 1024 + 8));
    await h.update(data.subarray(5 * 1024 * 1024 + 8));
    assert.equal((await h.digest()).value, await reference(type), type);
  }
});

test('streams at once keep their bytes apart; the caller may reuse its buffer at once', async () => {
  const a = new StreamHash('sha256');
  const b = new StreamHash('sha256');
  const buf = Buffer.alloc(64 * 1024);
  const ha = createHash('sha256');
  const hb = createHash('sha256');
  for (let i = 0; i < 50; i++) {
    buf.fill(i);
    ha.update(buf);
    await a.update(buf);
    buf.fill(255 - i);
    hb.update(buf);
    await b.update(buf);
  }
  const [da, db] = await Promise.all([a.digest(), b.digest()]);
  assert.equal(da.value, ha.digest('hex'));
  assert.equal(db.value, hb.digest('hex'));
});

test('hashFile gives the same checksum as the stream, for each type', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'fused-hash-'));
  try {
    const data = randomBytes(5 * 1024 * 1024 + 3);
    const file = join(dir, 'f');
    await writeFile(file, data);
    for (const type of ['xxh64', 'md5', 'sha256'] as const) {
      const s = new StreamHash(type);
      await s.update(data);
      const whole = await hashFile(file, type);
      assert.equal(whole.bytes, data.length);
      assert.equal(whole.hex, (await s.digest()).value, type);
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('checksum types are parsed strictly', () => {
  assert.equal(parseHashType('XXH64', '--checksum'), 'xxh64');
  assert.throws(() => parseHashType('crc32', '--checksum'), (e: unknown) => e instanceof FusedError && e.kind === 'usage' && /known: xxh64, md5, sha256/.test(e.message));
});
