// Unit tests for auth: known-answer proof (computed once with openssl), verification, secret files.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { authProof, newChallenge, readSecretFile, verifyProof } from './auth.js';

const SECRET = Buffer.from('fused-test-secret-0123456789');
const CH = '0f1e2d3c4b5a69788796a5b4c3d2e1f000112233445566778899aabbccddeeff';
// printf 'fused-auth-v1\n%s\n%s' $CH client1 | openssl dgst -sha256 -hmac fused-test-secret-0123456789
const KNOWN = '473d6a8379fee023027ae9f91bdefec17a930131db331fb4bbe936e9692bbad0';

test('authProof matches the openssl known answer', () => {
  assert.equal(authProof(SECRET, CH, 'client1'), KNOWN);
});

test('verifyProof accepts the right proof only', () => {
  assert.equal(verifyProof(SECRET, CH, 'client1', KNOWN), true);
  assert.equal(verifyProof(Buffer.from('fused-test-secret-0123456788'), CH, 'client1', KNOWN), false);
  assert.equal(verifyProof(SECRET, CH, 'client2', KNOWN), false);
  assert.equal(verifyProof(SECRET, CH.replace('0f', '0e'), 'client1', KNOWN), false);
  assert.equal(verifyProof(SECRET, CH, 'client1', KNOWN.toUpperCase()), false);
  assert.equal(verifyProof(SECRET, CH, 'client1', KNOWN.slice(2)), false);
  assert.equal(verifyProof(SECRET, CH, 'client1', ''), false);
});

test('newChallenge gives 64 lower-case hex digits, fresh each time', () => {
  const a = newChallenge();
  assert.match(a, /^[0-9a-f]{64}$/);
  assert.notEqual(a, newChallenge());
});

test('readSecretFile trims trailing white space and names the file in every error', () => {
  const dir = mkdtempSync(join(tmpdir(), 'fused-secret-'));
  try {
    const f = join(dir, 'secret');
    writeFileSync(f, ' fused-test-secret-0123456789 \n\r\t\n');
    assert.deepEqual(readSecretFile(f), Buffer.from(' fused-test-secret-0123456789'));
    const fails: [string, string | null, RegExp][] = [
      [join(dir, 'none'), null, /: missing$/],
      [dir, null, /: unreadable \(EISDIR\)$/],
      [join(dir, 'empty'), '', /: empty$/],
      [join(dir, 'blank'), ' \n\n', /: empty$/],
      [join(dir, 'short'), '0123456789abcde\n', /: too short \(15 bytes, need at least 16\)$/],
    ];
    for (const [path, content, why] of fails) {
      if (content !== null) writeFileSync(path, content);
      assert.throws(() => readSecretFile(path), (e: unknown) => {
        const err = e as Error & { code?: string; path?: string };
        return err.code === 'ENOSECRET' && err.path === path && err.message.startsWith(`secret file ${path}: `) &&
          why.test(err.message);
      }, path);
    }
    assert.equal(readSecretFile(join(dir, 'x'), () => Buffer.from('0123456789abcdef')).length, 16);
    assert.throws(() => readSecretFile('/s', () => { throw Object.assign(new Error('denied'), { code: 'EACCES' }); }),
      { message: 'secret file /s: unreadable (EACCES)' });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
