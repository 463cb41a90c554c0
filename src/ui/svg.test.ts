// Unit tests for the extent drawing: well-formed XML, extents where they lie, odd names escaped.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { extentSvg } from './svg.js';

const M = 2 ** 20;

test('extents are drawn at their device offsets, holes only on the file bar; the name is escaped', (t) => {
  const svg = extentSvg({
    name: 'a <b> & "c"\x01', size: 4 * M, deviceSize: 1000 * M, deviceLabel: '/dev/loop7',
    extents: [
      { logical: 0, physical: 500 * M, length: M, state: 'DATA', flags: 0 },
      { logical: M, physical: 0, length: 2 * M, state: 'HOLE', flags: 0 },
      { logical: 3 * M, physical: 100 * M, length: M, state: 'ZERO', flags: 0 },
    ],
  });
  const device = /<g id="device">(.*?)<\/g>/.exec(svg)![1]!;
  const file = /<g id="file">(.*?)<\/g>/.exec(svg)![1]!;
  assert.equal(device.match(/<rect /g)?.length, 2);
  assert.equal(file.match(/<rect /g)?.length, 3);
  assert.match(device, /<rect x="520" y="60" width="1" /); // 500 MiB of 1000 MiB: half way along 1000 px
  assert.match(device, /<rect x="120" y="60"/);
  assert.match(file, /<rect x="270" y="150" width="500" height="40" fill="#d9d9d9"/);
  assert.match(svg, /a &lt;b&gt; &amp; &quot;c&quot;\ufffd/);
  assert.match(svg, /DATA 1.0 MiB/);
  const lint = spawnSync('xmllint', ['--noout', '-'], { input: svg, encoding: 'utf8' });
  if (lint.error) t.diagnostic('xmllint missing: well-formedness not checked');
  else assert.equal(lint.status, 0, lint.stderr);
});
