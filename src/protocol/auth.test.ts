// Unit tests for auth: known-answer node key and proofs (computed once with openssl), checks, secret files.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { clientProof, newChallenge, nodeKey, proofMatches, readKeyFile, readSecretFile, serverProof } from './auth.js';

const MASTER = Buffer.from('fused-test-secret-0123456789');
const SC = '0f1e2d3c4b5a69788796a5b4c3d2e1f000112233445566778899aabbccddeeff';
const CC = 'ffeeddccbbaa99887766554433221100f0e1d2c3b4a5968778695a4b3c2d1e0f';
// K=$(printf 'fused-node-key-v1\n%s' client1 | openssl dgst -sha256 -hmac fused-test-secret-0123456789 -r | cut -d' ' -f1)
const KEY1 = '0ec4d23d1088e23182a776c717efe99cd8f77592bfd4db6107c9a7722ce1198e';
const KEY2 = 'f2f29f3e276433b33f439d61cf0b810333fa6cd4d4b41ebc2f4edd7305ede6eb';
// printf 'fused-server-v2\n%s\n%s\n%s\n%s' $SC $CC client1 srv1 | openssl dgst -sha256 -hmac "$K"
const SERVER_PROOF = 'cb9ed7c2b6b74aa78e8ca53dd56e32a1761ce0477f9b57766c27726306b6a378';
// printf 'fused-auth-v2\n%s\n%s\n%s' $SC $CC client1 | openssl dgst -sha256 -hmac "$K"
const CLIENT_PROOF = '825570fc84d71bbd9d7b422a6af4655ebfc8d53564d63056c3e4891348a19c4c';

test('nodeKey matches the openssl known answer and is bound to the node name', () => {
  assert.equal(nodeKey(MASTER, 'client1').toString('ascii'), KEY1);
  assert.equal(nodeKey(MASTER, 'client2').toString('ascii'), KEY2);
  assert.notEqual(nodeKey(Buffer.from('fused-test-secret-0123456788'), 'client1').toString('ascii'), KEY1);
});

test('serverProof and clientProof match the openssl known answers', () => {
  const key = Buffer.from(KEY1, 'ascii');
  assert.equal(serverProof(key, SC, CC, 'client1', 'srv1'), SERVER_PROOF);
  assert.equal(clientProof(key, SC, CC, 'client1'), CLIENT_PROOF);
});

test('every input changes the proofs; the two directions never coincide', () => {
  const key = Buffer.from(KEY1, 'ascii');
  const other = Buffer.from(KEY2, 'ascii');
  assert.notEqual(serverProof(other, SC, CC, 'client1', 'srv1'), SERVER_PROOF);
  assert.notEqual(serverProof(key, CC, SC, 'client1', 'srv1'), SERVER_PROOF);
  assert.notEqual(serverProof(key, SC, CC, 'client2', 'srv1'), SERVER_PROOF);
  assert.notEqual(serverProof(key, SC, CC, 'client1', 'srv2'), SERVER_PROOF);
  assert.notEqual(clientProof(other, SC, CC, 'client1'), CLIENT_PROOF);
  assert.notEqual(clientProof(key, CC, SC, 'client1'), CLIENT_PROOF);
  assert.notEqual(clientProof(key, SC, CC, 'client2'), CLIENT_PROOF);
  // A node using its own key under another's name proves nothing the server accepts for that name.
  assert.notEqual(clientProof(key, SC, CC, 'client2'), clientProof(other, SC, CC, 'client2'));
});

test('proofMatches accepts the right proof only, and never throws on malformed input', () => {
  assert.equal(proofMatches(CLIENT_PROOF, CLIENT_PROOF), true);
  assert.equal(proofMatches(CLIENT_PROOF, SERVER_PROOF), false);
  assert.equal(proofMatches(CLIENT_PROOF, CLIENT_PROOF.toUpperCase()), false);
  assert.equal(proofMatches(CLIENT_PROOF, CLIENT_PROOF.slice(2)), false);
  assert.equal(proofMatches(CLIENT_PROOF, `${CLIENT_PROOF}00`), false);
  assert.equal(proofMatches(CLIENT_PROOF, ''), false);
  assert.equal(proofMatches('', ''), false);
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
    writeFileSync(f, ' fused-test-secret-0123456789 \n\r\t\n', { mode: 0o600 });
    assert.deepEqual(readSecretFile(f), Buffer.from(' fused-test-secret-0123456789'));
    const fails: [string, string | null, RegExp][] = [
      [join(dir, 'none'), null, /: missing$/],
      [join(dir, 'empty'), '', /: empty$/],
      [join(dir, 'blank'), ' \n\n', /: empty$/],
      [join(dir, 'short'), '0123456789abcde\n', /: too short \(15 bytes, need at least 16\)$/],
    ];
    for (const [path, content, why] of fails) {
      if (content !== null) writeFileSync(path, content, { mode: 0o600 });
      assert.throws(() => readSecretFile(path), (e: unknown) => {
        const err = e as Error & { code?: string; path?: string };
        return err.code === 'ENOSECRET' && err.path === path && err.message.startsWith(`secret file ${path}: `) &&
          why.test(err.message);
      }, path);
    }
    assert.throws(() => readSecretFile(dir), { message: `secret file ${dir}: unreadable (EISDIR)` });
    assert.equal(readSecretFile(join(dir, 'x'), { read: () => Buffer.from('0123456789abcdef'), mode: () => 0o600 }).length, 16);
    assert.throws(() => readSecretFile('/s', { read: () => { throw Object.assign(new Error('denied'), { code: 'EACCES' }); } }),
      { message: 'secret file /s: unreadable (EACCES)' });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('secret and key files that group or others may read or write are refused with chmod 600', () => {
  const dir = mkdtempSync(join(tmpdir(), 'fused-secret-'));
  try {
    const f = join(dir, 'secret');
    writeFileSync(f, 'fused-test-secret-0123456789\n');
    for (const mode of [0o644, 0o640, 0o604, 0o620, 0o602, 0o660]) {
      chmodSync(f, mode);
      const m = mode.toString(8).padStart(4, '0');
      assert.throws(() => readSecretFile(f), { message: `secret file ${f}: mode ${m} lets group or others at it; chmod 600 ${f}` });
      assert.throws(() => readKeyFile(f), { message: `key file ${f}: mode ${m} lets group or others at it; chmod 600 ${f}` });
    }
    for (const mode of [0o600, 0o400, 0o700]) {
      chmodSync(f, mode);
      assert.equal(readSecretFile(f).toString(), 'fused-test-secret-0123456789');
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('readKeyFile takes exactly a node key', () => {
  const io = (text: string) => ({ read: () => Buffer.from(text), mode: () => 0o600 });
  assert.equal(readKeyFile('/k', io(`${KEY1}\n`)).toString('ascii'), KEY1);
  assert.throws(() => readKeyFile('/k', io('fused-test-secret-0123456789\n')), /^Error: key file \/k: not a node key/);
  assert.throws(() => readKeyFile('/k', io(`${KEY1.toUpperCase()}\n`)), /not a node key/);
  assert.throws(() => readKeyFile('/k', io(`${KEY1}0\n`)), /not a node key/);
});
