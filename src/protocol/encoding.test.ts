// Unit tests for the path encoding, path rules and strict numbers.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { decodeBytes, decodePath, encodeBytes, encodePath, parseNumber } from './encoding.js';
import { ProtocolError } from './constants.js';

const code = (c: string) => (e: unknown) => e instanceof ProtocolError && e.code === c;

test('every byte 0..255 round-trips and only the safe set stays literal', () => {
  const safe = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~/!$&'()*+,;:@";
  for (let b = 0; b < 256; b++) {
    const enc = encodeBytes(Buffer.from([b]));
    const ch = String.fromCharCode(b);
    assert.equal(enc, safe.includes(ch) ? ch : '%' + b.toString(16).toUpperCase().padStart(2, '0'));
    assert.deepEqual(decodeBytes(enc), Buffer.from([b]));
  }
  const all = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
  const enc = encodeBytes(all);
  assert.ok(/^[\x21-\x7e]+$/.test(enc), 'encoded form is printable without spaces');
  assert.equal(enc.length, safe.length + 3 * (256 - safe.length));
  assert.deepEqual(decodeBytes(enc), all);
});

test('a string encodes as its UTF-8 bytes do: every character alone, and safe ones with an unsafe one at either end', () => {
  const chars: string[] = [];
  for (let c = 0; c < 0x800; c++) chars.push(String.fromCharCode(c));
  chars.push('\ud800', '\udfff', '\u{1f600}', '\uffff');
  for (const ch of chars) {
    for (const s of [ch, `abc${ch}`, `${ch}xyz`, `a-1.b_${ch}~c/`]) {
      assert.equal(encodeBytes(s), encodeBytes(Buffer.from(s, 'utf8')), `encoding of ${JSON.stringify(s)}`);
    }
  }
  const plain = "a1b2c3d4e5f60718 1795918147.903348000 dir/clip-01_(v2)~final.mov";
  assert.equal(encodeBytes(plain), encodeBytes(Buffer.from(plain)));
});

test('awkward names survive: spaces, newlines, %, =, non-UTF-8', () => {
  const cases: [Buffer | string, string][] = [
    ['my clip.mov', 'my%20clip.mov'],
    ['a\nb', 'a%0Ab'],
    ['100%', '100%25'],
    ['k=v', 'k%3Dv'],
    [Buffer.from([0x66, 0xff, 0xfe, 0x80]), 'f%FF%FE%80'],
    ['café', 'caf%C3%A9'],
    ["dir/(1)+[x]#?", "dir/(1)+%5Bx%5D%23%3F"],
    ['', ''],
  ];
  for (const [raw, wire] of cases) {
    assert.equal(encodeBytes(raw), wire);
    assert.equal(encodePath(raw), wire);
    assert.deepEqual(decodeBytes(wire), Buffer.isBuffer(raw) ? raw : Buffer.from(raw, 'utf8'));
  }
});

test('decoders accept lower-case hex and reject bad escapes and literal unsafe bytes', () => {
  assert.deepEqual(decodeBytes('%c3%a9'), Buffer.from('é'));
  assert.deepEqual(decodeBytes('%C3%a9'), Buffer.from('é'));
  for (const bad of ['%', '%4', 'a%4', '%G0', '%0g', 'a b', 'a=b', 'a#b', 'a"b', 'é', 'a\tb']) {
    assert.throws(() => decodeBytes(bad), code('BADARG'), JSON.stringify(bad));
  }
});

test('decodePath rejects the path rules with BADPATH', () => {
  const bad = ['', '/abs', '//x', 'a/../b', '..', 'a/..', '../a', '.', './', './/.', 'a%00b', '%2Fetc'];
  for (const p of bad) assert.throws(() => decodePath(p), code('BADPATH'), JSON.stringify(p));
  assert.throws(() => decodePath('a'.repeat(4097)), code('BADPATH'));
  assert.throws(() => decodePath('%41'.repeat(4097)), code('BADPATH'));
  assert.equal(decodePath('a'.repeat(4096)).length, 4096);
  assert.throws(() => decodePath('a%zz'), code('BADARG'));
});

test('decodePath normalises . components and duplicate slashes', () => {
  assert.equal(decodePath('a//b/./c').toString(), 'a/b/c');
  assert.equal(decodePath('./a/').toString(), 'a');
  assert.equal(decodePath('a/.../b').toString(), 'a/.../b', '... is a name, not ..');
  assert.equal(decodePath('..a/b..').toString(), '..a/b..');
  assert.deepEqual(decodePath('d/%FF%20x'), Buffer.from([0x64, 0x2f, 0xff, 0x20, 0x78]));
});

test('parseNumber is strict', () => {
  assert.equal(parseNumber('0'), 0);
  assert.equal(parseNumber('7447'), 7447);
  assert.equal(parseNumber('9007199254740991'), Number.MAX_SAFE_INTEGER);
  for (const bad of ['', '00', '01', '-1', '+1', '1e3', '1.0', ' 1', '1 ', '0x10', '9007199254740992',
    '99999999999999999', 'NaN', 'Infinity', '١']) {
    assert.throws(() => parseNumber(bad), code('BADARG'), JSON.stringify(bad));
  }
});
