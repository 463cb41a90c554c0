// Unit tests for reply, push, data, extent and greeting lines: exact bytes both ways.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  formatDataFields, formatErr, formatExtent, formatExtents, formatGreeting, formatOk, formatPush, parseDataFields, parseExtent, parseGreeting,
  parseReplyLine,
} from './reply.js';
import { decodeBytes } from './encoding.js';
import { ProtocolError, type WireExtent } from './constants.js';

const code = (c: string) => (e: unknown) => e instanceof ProtocolError && e.code === c;
const CH = '0f1e2d3c4b5a69788796a5b4c3d2e1f000112233445566778899aabbccddeeff';

test('formatOk encodes strings as UTF-8, Buffers as bytes, numbers as decimals', () => {
  assert.equal(formatOk('PONG'), 'OK PONG');
  assert.equal(formatOk('HELLO', { node: 'srv1', version: 2 }), 'OK HELLO node=srv1 version=2');
  assert.equal(formatOk('VOLUME', { name: 'media', label: 'Media Vol', empty: '', size: 107374182400 }),
    'OK VOLUME name=media label=Media%20Vol empty= size=107374182400');
  assert.equal(formatOk('X', { p: Buffer.from([0xff, 0x3d]) }), 'OK X p=%FF%3D');
  assert.throws(() => formatOk('ok'), RangeError);
  assert.throws(() => formatOk('MAP', { Bad: 1 }), RangeError);
  assert.throws(() => formatOk('MAP', { size: -1 }), RangeError);
  assert.throws(() => formatOk('MAP', { size: 1.5 }), RangeError);
  assert.throws(() => formatOk('MAP', { x: 'a'.repeat(20000) }), code('INTERNAL'));
});

test('formatErr keeps the line printable, single and within the limit', () => {
  assert.equal(formatErr('NOENT', 'no such file clips/a%20b'), 'ERR NOENT no such file clips/a%20b');
  assert.equal(formatErr('INTERNAL', 'line1\nline2\r\n\tcafé\0'), 'ERR INTERNAL line1 line2 caf??');
  assert.equal(formatErr('NOLEASE', ''), 'ERR NOLEASE no such lease');
  assert.equal(formatErr('BUSY', ' \n '), 'ERR BUSY too many connections');
  const long = formatErr('BADARG', 'x'.repeat(50000));
  assert.equal(long.length, 16383);
  assert.ok(long.endsWith('...'));
  assert.throws(() => formatErr('NOPE' as never, 'x'), RangeError);
});

test('formatPush and formatGreeting', () => {
  assert.equal(formatPush('RECALL', { lease: 'k3J9q2', reason: 'break' }), '! RECALL lease=k3J9q2 reason=break');
  assert.equal(formatPush('BYE', { reason: 'auth-timeout' }), '! BYE reason=auth-timeout');
  assert.equal(formatGreeting('srv1', CH), `FUSED 2 node=srv1 challenge=${CH}`);
  assert.equal(formatGreeting('my host', CH), `FUSED 2 node=my%20host challenge=${CH}`);
  assert.throws(() => formatGreeting('srv1', CH.toUpperCase()), RangeError);
});

test('extents format and parse exactly, and round-trip', () => {
  const cases: [WireExtent, string][] = [
    [{ logical: 0, physical: 4096, length: 8192, state: 'DATA', flags: 1 }, 'X 0 4096 8192 DATA 0x1'],
    [{ logical: 8192, physical: 0, length: 4096, state: 'HOLE', flags: 0 }, 'X 8192 0 4096 HOLE 0x0'],
    [{ logical: 12288, physical: 2097152, length: 4096, state: 'ZERO', flags: 0x800 }, 'X 12288 2097152 4096 ZERO 0x800'],
    [{ logical: 0, physical: 1234567, length: 50, state: 'NETWORK', flags: 0x301 }, 'X 0 1234567 50 NETWORK 0x301'],
    [{ logical: 2 ** 52, physical: 2 ** 40, length: 2 ** 52 - 1, state: 'DATA', flags: 0xffffffff },
      `X ${2 ** 52} ${2 ** 40} ${2 ** 52 - 1} DATA 0xffffffff`],
  ];
  for (const [e, wire] of cases) {
    assert.equal(formatExtent(e), wire);
    const r = parseReplyLine(wire);
    assert.equal(r.kind, 'data');
    assert.deepEqual(r.kind === 'data' && parseExtent(r.rest), e);
  }
});

test('parseExtent rejects malformed extents with BADLINE', () => {
  const bad = ['0 0 4096 DATA', '0 0 4096 DATA 0x0 x', '0 0 0 DATA 0x0', '01 0 1 DATA 0x0', '0 0 1 data 0x0',
    '0 0 1 DATA 0X0', '0 0 1 DATA 0x01', '0 0 1 DATA 0xA', '0 0 1 DATA 1', '0 0 1 DATA 0x100000000',
    '0 4096 1 HOLE 0x0', '0  0 1 DATA 0x0', '9007199254740991 0 1 DATA 0x0', '-1 0 1 DATA 0x0'];
  for (const l of bad) assert.throws(() => parseExtent(l), code('BADLINE'), l);
  assert.throws(() => formatExtent({ logical: 0, physical: 0, length: 0, state: 'DATA', flags: 0 }), RangeError);
  assert.throws(() => formatExtent({ logical: 0, physical: 0, length: 1, state: 'BOGUS' as never, flags: 0 }), RangeError);
});

test('parseReplyLine: ok, err, push, data, end', () => {
  assert.deepEqual(parseReplyLine('OK PONG'), { kind: 'ok', verb: 'PONG', fields: {}, fieldsRaw: {} });
  assert.deepEqual(parseReplyLine('OK VOLUME name=media label=Media%20Vol%ff future_key=1 label2='), {
    kind: 'ok', verb: 'VOLUME',
    fields: { name: 'media', label: 'Media Vol\ufffd', future_key: '1', label2: '' },
    fieldsRaw: { name: 'media', label: 'Media%20Vol%ff', future_key: '1', label2: '' },
  });
  assert.deepEqual(parseReplyLine('ERR NOENT no such file a%20b'), { kind: 'err', code: 'NOENT', text: 'no such file a%20b' });
  assert.deepEqual(parseReplyLine('ERR NOLEASE'), { kind: 'err', code: 'NOLEASE', text: '' });
  assert.deepEqual(parseReplyLine('ERR FUTURE something new'), { kind: 'err', code: 'FUTURE', text: 'something new' });
  assert.deepEqual(parseReplyLine('! RECALL lease=k3J9q2 reason=break'), {
    kind: 'push', event: 'RECALL', fields: { lease: 'k3J9q2', reason: 'break' },
    fieldsRaw: { lease: 'k3J9q2', reason: 'break' },
  });
  assert.deepEqual(parseReplyLine('V media'), { kind: 'data', tag: 'V', rest: 'media' });
  assert.deepEqual(parseReplyLine('END'), { kind: 'end' });
  // fieldsRaw keeps the exact bytes of a non-UTF-8 name.
  const r = parseReplyLine('OK PROBE name=p%FF');
  assert.deepEqual(r.kind === 'ok' && decodeBytes(r.fieldsRaw.name!), Buffer.from([0x70, 0xff]));
});

test('parseReplyLine: garbage is BADLINE', () => {
  const bad = ['', 'OK', 'OK ', 'OK pong', 'OK PONG x', 'OK PONG =1', 'OK PONG A=1', 'OK PONG a=1 a=2',
    'OK PONG a=b=c', 'OK PONG a=%zz', 'OK PONG  a=1', 'ERR', 'ERR ', 'ERR lower x', '!', '! ', '!RECALL',
    'END ', 'end', 'x y', 'XY z', 'FUSED 1 node=a', ' OK PONG'];
  for (const l of bad) assert.throws(() => parseReplyLine(l), code('BADLINE'), JSON.stringify(l));
});

test('parseGreeting reads the greeting and turns ERR BUSY into a ProtocolError', () => {
  assert.deepEqual(parseGreeting(`FUSED 2 node=srv1 challenge=${CH}`), { version: 2, node: 'srv1', challenge: CH });
  assert.deepEqual(parseGreeting(`FUSED 2 challenge=${CH} extra=x node=my%20host`),
    { version: 2, node: 'my host', challenge: CH });
  assert.throws(() => parseGreeting('ERR BUSY too many connections'),
    (e: unknown) => e instanceof ProtocolError && e.code === 'BUSY' && e.message === 'too many connections');
  for (const bad of ['', 'FUSED', 'FUSED 1', `FUSED 01 node=a challenge=${CH}`, `FUSED 1 challenge=${CH}`,
    'FUSED 1 node=a', `FUSED 1 node=a challenge=${CH.toUpperCase()}`, `HELLO 1 node=a challenge=${CH}`,
    `FUSED 1 node= challenge=${CH}`, 'OK PONG']) {
    assert.throws(() => parseGreeting(bad), code('BADLINE'), bad);
  }
});

test('data lines of fields (LIMITS) round trip, empty values included', () => {
  const line = formatDataFields('N', { node: 'cli', rate: 52428800, active: 1, volume: '' });
  assert.equal(line, 'N node=cli rate=52428800 active=1 volume=');
  assert.deepEqual(parseReplyLine(line), { kind: 'data', tag: 'N', rest: 'node=cli rate=52428800 active=1 volume=' });
  assert.deepEqual(parseDataFields(line.slice(2)), { node: 'cli', rate: '52428800', active: '1', volume: '' });
  assert.deepEqual(parseDataFields('volume=a,b'), { volume: 'a,b' });
  assert.deepEqual(parseDataFields(''), {});
  assert.throws(() => parseDataFields('node=a node=b'), code('BADLINE'));
  assert.throws(() => parseDataFields('Node=a'), code('BADLINE'));
  assert.throws(() => formatDataFields('NV', {}), RangeError);
});

test('formatExtents writes the same lines as formatExtent, each with its LF, for any slice', () => {
  const extents: WireExtent[] = [
    { logical: 0, physical: 1048576, length: 4096, state: 'DATA', flags: 0 },
    { logical: 4096, physical: 0, length: 4096, state: 'HOLE', flags: 0 },
    { logical: 8192, physical: 2 ** 40, length: 8192, state: 'ZERO', flags: 0x800 },
    { logical: 16384, physical: 0, length: 100, state: 'NETWORK', flags: 0xffffffff },
  ];
  assert.equal(formatExtents(extents), extents.map((e) => formatExtent(e) + '\n').join(''));
  assert.equal(formatExtents(extents, 1, 3), formatExtent(extents[1]!) + '\n' + formatExtent(extents[2]!) + '\n');
  assert.equal(formatExtents(extents, 2, 2), '');
  assert.equal(formatExtents([]), '');
});

test('formatExtents refuses what formatExtent refuses', () => {
  const bad: WireExtent[] = [
    { logical: 0, physical: 0, length: 0, state: 'DATA', flags: 0 },
    { logical: 0, physical: 0, length: 1, state: 'BOGUS' as never, flags: 0 },
    { logical: 0, physical: 0, length: 1, state: 'DATA', flags: -1 },
    { logical: 0, physical: 0, length: 1, state: 'DATA', flags: 2 ** 32 },
    { logical: 0, physical: 0, length: 1, state: 'DATA', flags: 0.5 },
    { logical: -512, physical: 0, length: 1, state: 'DATA', flags: 0 },
    { logical: 0, physical: 2 ** 53, length: 1, state: 'DATA', flags: 0 },
    { logical: 0, physical: 0, length: 1.5, state: 'DATA', flags: 0 },
  ];
  for (const e of bad) {
    assert.throws(() => formatExtent(e), RangeError, JSON.stringify(e));
    assert.throws(() => formatExtents([e]), RangeError, JSON.stringify(e));
  }
});

test('formatExtents agrees with formatExtent on 3000 extents, past the 1024-extent scratch and up to 2^53-1', () => {
  const states = ['DATA', 'ZERO', 'HOLE', 'NETWORK'] as const;
  const extents: WireExtent[] = Array.from({ length: 3000 }, (_, i) => ({
    logical: i === 2999 ? Number.MAX_SAFE_INTEGER : i * 4096 + (i % 7) * 1e9,
    physical: i % 2 ? 0 : Math.floor(Number.MAX_SAFE_INTEGER / (i + 1)),
    length: 1 + ((i * 2654435761) % 1e12),
    state: states[i % 4]!,
    flags: (i * 0x9e3779b1) >>> 0,
  }));
  assert.equal(formatExtents(extents), extents.map((e) => formatExtent(e) + '\n').join(''));
  assert.equal(formatExtents(extents, 1000, 2100), extents.slice(1000, 2100).map((e) => formatExtent(e) + '\n').join(''));
});
