// Unit tests for request parsing and formatting: every verb, arity, bad arguments, round trips.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { formatRequest, parseRequest, type Request } from './request.js';
import { ProtocolError } from './constants.js';

const code = (c: string) => (e: unknown) => e instanceof ProtocolError && e.code === c;
const P = '473d6a8379fee023027ae9f91bdefec17a930131db331fb4bbe936e9692bbad0';

test('every verb parses', () => {
  assert.deepEqual(parseRequest(`HELLO client1 2 ${P}`), { verb: 'HELLO', node: 'client1', version: 2, challenge: P });
  assert.deepEqual(parseRequest(`HELLO n.o_d-E9 3 ${P}`), { verb: 'HELLO', node: 'n.o_d-E9', version: 3, challenge: P });
  // Without a challenge only so that an old client's HELLO can be answered with ERR VERSION.
  assert.deepEqual(parseRequest('HELLO client1 1'), { verb: 'HELLO', node: 'client1', version: 1 });
  assert.deepEqual(parseRequest(`AUTH ${P}`), { verb: 'AUTH', proof: P });
  assert.deepEqual(parseRequest('VOLUMES'), { verb: 'VOLUMES' });
  assert.deepEqual(parseRequest('VOLUME media'), { verb: 'VOLUME', volume: 'media' });
  assert.deepEqual(parseRequest('VOLUME %6Dedia'), { verb: 'VOLUME', volume: 'media' });
  assert.deepEqual(parseRequest('PROBE media'), { verb: 'PROBE', volume: 'media' });
  assert.deepEqual(parseRequest('UNPROBE media .fused-probe-1a2b'),
    { verb: 'UNPROBE', volume: 'media', name: '.fused-probe-1a2b' });
  assert.deepEqual(parseRequest('MAP media clips/take%201.mov'),
    { verb: 'MAP', volume: 'media', path: Buffer.from('clips/take 1.mov'), mode: 'read' });
  assert.deepEqual(parseRequest('MAP media a//./b read'),
    { verb: 'MAP', volume: 'media', path: Buffer.from('a/b'), mode: 'read' });
  assert.deepEqual(parseRequest('MAP media new.mov write'), { verb: 'MAP', volume: 'media', path: Buffer.from('new.mov'), mode: 'write' });
  assert.deepEqual(parseRequest('ALLOC k3J9q2 0 1048576'), { verb: 'ALLOC', lease: 'k3J9q2', offset: 0, length: 1048576 });
  assert.deepEqual(parseRequest('COMMIT k3J9q2 511'), { verb: 'COMMIT', lease: 'k3J9q2', size: 511 });
  assert.deepEqual(parseRequest('RELEASE k3J9q2'), { verb: 'RELEASE', lease: 'k3J9q2' });
  assert.deepEqual(parseRequest('RETURN k3J9q2'), { verb: 'RETURN', lease: 'k3J9q2' });
  assert.deepEqual(parseRequest('PING'), { verb: 'PING' });
  assert.deepEqual(parseRequest('QUIT'), { verb: 'QUIT' });
});

test('unknown verbs, lower case and empty lines are UNKNOWN', () => {
  for (const l of ['', 'ping', 'FOO', 'FOO bar', ' PING', 'OK PONG', 'Map media x']) {
    assert.throws(() => parseRequest(l), code('UNKNOWN'), JSON.stringify(l));
  }
  assert.throws(() => parseRequest('map media x'), { message: 'unknown verb map' });
});

test('wrong arity is BADARG for every verb', () => {
  const bad = ['HELLO', 'HELLO a', `HELLO a 2 ${P} x`, 'AUTH', `AUTH ${P} x`, 'VOLUMES x', 'VOLUME', 'VOLUME a b',
    'PROBE', 'PROBE a b', 'UNPROBE a', 'UNPROBE a b c', 'MAP', 'MAP v', 'MAP v p read x', 'RELEASE',
    'RELEASE a b', 'RETURN', 'RETURN a b', 'PING x', 'QUIT now', 'ALLOC', 'ALLOC k 0', 'ALLOC k 0 1 2', 'COMMIT k',
    'COMMIT k 1 2'];
  for (const l of bad) assert.throws(() => parseRequest(l), code('BADARG'), l);
  assert.throws(() => parseRequest('MAP v'), { message: 'usage: MAP <volume> <path> [read|write]' });
  assert.throws(() => parseRequest('ALLOC k 0'), { message: 'usage: ALLOC <lease> <offset> <length>' });
});

test('bad tokens and values are BADARG', () => {
  const bad = ['PING ', 'VOLUME  media', 'VOLUME media ', 'HELLO client1 01', 'HELLO client1 -1',
    'HELLO client1 1e3', 'HELLO cli%31 1', `HELLO ${'n'.repeat(65)} 1`, 'HELLO a/b 1',
    'HELLO a 2 x', `HELLO a 2 ${P.toUpperCase()}`, `HELLO a 2 ${P.slice(1)}`,
    `AUTH ${P.toUpperCase()}`, `AUTH ${P.slice(1)}`, `AUTH ${P}0`, 'VOLUME a%20b', `VOLUME ${'v'.repeat(65)}`,
    'VOLUME %', 'MAP media x append', 'MAP media x READ', 'MAP media x WRITE', 'ALLOC k 0 0', 'ALLOC k -1 4096',
    'ALLOC k 0 1e3', 'ALLOC k-1 0 4096', 'COMMIT k 01', 'COMMIT k x', 'MAP media a%2', 'MAP media a=b', 'RELEASE k-3',
    `RETURN ${'k'.repeat(33)}`, 'PROBE bad/name'];
  for (const l of bad) assert.throws(() => parseRequest(l), code('BADARG'), l);
});

test('path and probe-name violations are BADPATH', () => {
  const bad = ['MAP media /etc/passwd', 'MAP media ../x', 'MAP media a/../b', 'MAP media ..', 'MAP media .',
    'MAP media a%00', 'MAP media %2Fetc', `MAP media ${'a'.repeat(4097)}`, 'UNPROBE media a/b', 'UNPROBE media ..',
    'UNPROBE media .', 'UNPROBE media %2F', 'UNPROBE media %00'];
  for (const l of bad) assert.throws(() => parseRequest(l), code('BADPATH'), l.slice(0, 40));
});

test('formatRequest round-trips with parseRequest for every verb', () => {
  const reqs: Request[] = [
    { verb: 'HELLO', node: 'client1', version: 2, challenge: P },
    { verb: 'AUTH', proof: P },
    { verb: 'VOLUMES' },
    { verb: 'VOLUME', volume: 'media' },
    { verb: 'PROBE', volume: 'v.1_x-Y' },
    { verb: 'UNPROBE', volume: 'media', name: '.fused-probe-0123' },
    { verb: 'MAP', volume: 'media', path: Buffer.from('clips/take 1.mov'), mode: 'read' },
    { verb: 'MAP', volume: 'media', path: Buffer.from([0x64, 0x2f, 0xff, 0x0a, 0x25, 0x3d, 0x20]), mode: 'read' },
    { verb: 'MAP', volume: 'media', path: Buffer.from('new.mov'), mode: 'write' },
    { verb: 'ALLOC', lease: 'k3J9q2', offset: 4096, length: 67108864 },
    { verb: 'COMMIT', lease: 'k3J9q2', size: 0 },
    { verb: 'RELEASE', lease: 'k3J9q2' },
    { verb: 'RETURN', lease: 'Z' },
    { verb: 'PING' },
    { verb: 'QUIT' },
  ];
  for (const r of reqs) assert.deepEqual(parseRequest(formatRequest(r)), r);
  assert.equal(formatRequest(reqs[6]!), 'MAP media clips/take%201.mov read');
  assert.equal(formatRequest(reqs[7]!), 'MAP media d/%FF%0A%25%3D%20 read');
  assert.equal(formatRequest({ verb: 'HELLO', node: 'c', version: 2, challenge: P }), `HELLO c 2 ${P}`);
});

test('a maximal MAP request fits the line limit', () => {
  const line = formatRequest({ verb: 'MAP', volume: 'v'.repeat(64), path: Buffer.alloc(4096, 0x20), mode: 'read' });
  assert.equal(line.length + 1, 12363);
  assert.equal(parseRequest(line).verb, 'MAP');
});

test('formatRequest refuses what the server would refuse', () => {
  assert.throws(() => formatRequest({ verb: 'HELLO', node: 'a b', version: 1 }), code('BADARG'));
  assert.throws(() => formatRequest({ verb: 'HELLO', node: 'a', version: -1 }), RangeError);
  assert.throws(() => formatRequest({ verb: 'HELLO', node: 'a', version: 2, challenge: P.toUpperCase() }), code('BADARG'));
  assert.throws(() => formatRequest({ verb: 'AUTH', proof: 'xyz' }), code('BADARG'));
  assert.throws(() => formatRequest({ verb: 'VOLUME', volume: '' }), code('BADARG'));
  assert.throws(() => formatRequest({ verb: 'MAP', volume: 'v', path: Buffer.from('/abs'), mode: 'read' }), code('BADPATH'));
  assert.throws(() => formatRequest({ verb: 'UNPROBE', volume: 'v', name: 'a/b' }), code('BADPATH'));
  assert.throws(() => formatRequest({ verb: 'RELEASE', lease: 'a-b' }), code('BADARG'));
});

test('GRANT, LIMITS and LIMIT parse and format', () => {
  assert.deepEqual(parseRequest('GRANT media 4194304 1'), { verb: 'GRANT', volume: 'media', bytes: 4194304, ops: 1 });
  assert.deepEqual(parseRequest('GRANT media 0 0'), { verb: 'GRANT', volume: 'media', bytes: 0, ops: 0 });
  assert.deepEqual(parseRequest('LIMITS'), { verb: 'LIMITS' });
  assert.deepEqual(parseRequest('LIMIT SET node=cli rate=52428800'), { verb: 'LIMIT', op: 'SET', target: { node: 'cli' }, rate: 52428800 });
  assert.deepEqual(parseRequest('LIMIT SET node=cli iops=100 rate=0'), { verb: 'LIMIT', op: 'SET', target: { node: 'cli' }, rate: 0, iops: 100 });
  assert.deepEqual(parseRequest('LIMIT SET volume=media rate=1000'), { verb: 'LIMIT', op: 'SET', target: { volume: 'media' }, rate: 1000 });
  assert.deepEqual(parseRequest('LIMIT CLEAR node=cli'), { verb: 'LIMIT', op: 'CLEAR', target: { node: 'cli' } });
  assert.deepEqual(parseRequest('LIMIT CLEAR volume=media'), { verb: 'LIMIT', op: 'CLEAR', target: { volume: 'media' } });
  assert.deepEqual(parseRequest('LIMIT CLEAR all'), { verb: 'LIMIT', op: 'CLEAR', target: { all: true } });
  for (const l of ['GRANT media 1 1', 'LIMITS', 'LIMIT SET node=cli rate=5', 'LIMIT SET node=cli rate=5 iops=2',
    'LIMIT SET node=cli iops=2', 'LIMIT SET volume=media rate=7', 'LIMIT CLEAR node=cli', 'LIMIT CLEAR volume=v', 'LIMIT CLEAR all']) {
    assert.equal(formatRequest(parseRequest(l)), l);
  }
});

test('bad GRANT and LIMIT requests are BADARG', () => {
  const bad = ['GRANT', 'GRANT media', 'GRANT media 1', 'GRANT media 1 1 1', 'GRANT media -1 1', 'GRANT media 01 1',
    'GRANT bad/name 1 1', 'GRANT media 1 1.5', 'LIMITS all', 'LIMIT', 'LIMIT SET', 'LIMIT SET node=cli',
    'LIMIT SET node=cli rate=12X', 'LIMIT SET node=cli rate=1 rate=2', 'LIMIT SET node=cli speed=1',
    'LIMIT SET volume=media iops=3', 'LIMIT SET all rate=1', 'LIMIT SET host=cli rate=1', 'LIMIT SET node= rate=1',
    'LIMIT CLEAR', 'LIMIT CLEAR everything', 'LIMIT CLEAR node=cli x', 'LIMIT DROP node=cli', 'LIMIT set node=cli rate=1',
    'LIMIT SET node=cli rate=1 iops=1 rate=1'];
  for (const l of bad) assert.throws(() => parseRequest(l), code('BADARG'), l);
  assert.throws(() => formatRequest({ verb: 'LIMIT', op: 'SET', target: { node: 'cli' } }), code('BADARG'));
  assert.throws(() => formatRequest({ verb: 'LIMIT', op: 'SET', target: { volume: 'v' }, iops: 1 }), code('BADARG'));
});
