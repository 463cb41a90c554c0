// Unit tests for the line framer: chunking, CRLF, over-long and bad lines, exact bytes.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { LineFramer, type FrameEvent } from './framing.js';

const b = (s: string) => Buffer.from(s, 'latin1');
const summary = (evs: FrameEvent[]) => evs.map((e) => ('line' in e ? `line:${e.line}` : `err:${e.error.code}`));

test('a line split across chunks comes out once, complete', () => {
  const f = new LineFramer();
  assert.deepEqual(f.push(b('HEL')), []);
  assert.deepEqual(f.push(b('LO client1')), []);
  assert.equal(f.buffered, 13);
  assert.deepEqual(summary(f.push(b(' 1\nPI'))), ['line:HELLO client1 1']);
  assert.deepEqual(summary(f.push(b('NG\n'))), ['line:PING']);
  assert.equal(f.buffered, 0);
});

test('byte-at-a-time feeding gives the same lines', () => {
  const f = new LineFramer();
  const out: FrameEvent[] = [];
  for (const c of b('VOLUMES\r\nMAP v a%20b read\n')) out.push(...f.push(Buffer.from([c])));
  assert.deepEqual(summary(out), ['line:VOLUMES', 'line:MAP v a%20b read']);
});

test('CRLF is stripped; a CR elsewhere is BADLINE', () => {
  const f = new LineFramer();
  assert.deepEqual(summary(f.push(b('PING\r\n\r\nA\rB\nX\r\r\nPING\n'))),
    ['line:PING', 'line:', 'err:BADLINE', 'err:BADLINE', 'line:PING']);
});

test('many lines in one chunk', () => {
  const f = new LineFramer();
  const lines = Array.from({ length: 1000 }, (_, i) => `X ${i * 4096} ${i * 8192} 4096 DATA 0x0`);
  assert.deepEqual(summary(f.push(b(lines.join('\n') + '\n'))), lines.map((l) => `line:${l}`));
});

test('a 100 KB line gives one TOOLONG, then the next line is fine', () => {
  const f = new LineFramer();
  const out: FrameEvent[] = [];
  const big = b('MAP v ' + 'a'.repeat(100 * 1024));
  for (let i = 0; i < big.length; i += 4000) out.push(...f.push(big.subarray(i, i + 4000)));
  assert.ok(f.buffered === 0, 'an over-long line is not buffered');
  assert.equal(out.length, 0, 'TOOLONG waits for the LF');
  out.push(...f.push(b('\nPING\n')));
  assert.deepEqual(summary(out), ['err:TOOLONG', 'line:PING']);
  const e = out[0] as { error: Error };
  assert.equal(e.error.message, 'line longer than 16384 bytes');
});

test('the limit counts the LF (and a CR): 16384 bytes is the longest line', () => {
  const f = new LineFramer();
  const fit = 'P'.repeat(16383);
  assert.deepEqual(summary(f.push(b(fit + '\n'))), [`line:${fit}`]);
  assert.deepEqual(summary(f.push(b(fit + 'P\n'))), ['err:TOOLONG']);
  assert.deepEqual(summary(f.push(b(fit + '\r\n'))), ['err:TOOLONG']);
  assert.deepEqual(summary(f.push(b(fit.slice(1) + '\r\n'))), [`line:${fit.slice(1)}`]);
  // Over-long in one chunk with the LF in it, then more.
  assert.deepEqual(summary(f.push(b('x'.repeat(20000) + '\nPING\n'))), ['err:TOOLONG', 'line:PING']);
});

test('a small limit for the framer works the same way', () => {
  const f = new LineFramer(8);
  assert.deepEqual(summary(f.push(b('1234567\n12345678\nabc'))), ['line:1234567', 'err:TOOLONG']);
  assert.deepEqual(summary(f.push(b('defgh\nok\n'))), ['err:TOOLONG', 'line:ok']);
});

test('NUL and bytes outside 0x20-0x7E give BADLINE and the stream goes on', () => {
  const f = new LineFramer();
  const out = f.push(Buffer.concat([b('PI'), Buffer.from([0]), b('NG\nPING\n'), Buffer.from([0xc3, 0xa9, 0x0a]),
    b('\tX\n'), Buffer.from([0x7f, 0x0a]), b('QUIT\n')]));
  assert.deepEqual(summary(out), ['err:BADLINE', 'line:PING', 'err:BADLINE', 'err:BADLINE', 'err:BADLINE', 'line:QUIT']);
  assert.equal((out[0] as { error: Error }).error.message, 'byte 0x00 at offset 2 is not printable ASCII');
});

test('the framer copies what it holds, so a reused chunk cannot corrupt a line', () => {
  const f = new LineFramer();
  const chunk = b('PIN');
  f.push(chunk);
  chunk.fill(0x41);
  assert.deepEqual(summary(f.push(b('G\n'))), ['line:PING']);
});
