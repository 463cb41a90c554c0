// Unit tests for the progress display and colour: NO_COLOR leaves the spinner uncoloured (run on a pseudo-terminal).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { colorWanted } from './color.js';

test('NO_COLOR set to anything but the empty string, or TERM=dumb, turns colour off', () => {
  assert.equal(colorWanted({ TERM: 'xterm' }), true);
  assert.equal(colorWanted({ TERM: 'xterm', NO_COLOR: '' }), true);
  assert.equal(colorWanted({ TERM: 'xterm', NO_COLOR: '1' }), false);
  assert.equal(colorWanted({ TERM: 'xterm', NO_COLOR: '0' }), false);
  assert.equal(colorWanted({ TERM: 'dumb' }), false);
});

/** What a progress display writes to a 100-column pseudo-terminal (script(1)) under environment ENV. */
function onTerminal(env: Record<string, string>): string {
  const dir = mkdtempSync(join(tmpdir(), 'fused-progress-'));
  try {
    const mod = fileURLToPath(new URL('./progress.js', import.meta.url));
    const prog = join(dir, 'p.mjs');
    writeFileSync(prog, `const { Progress } = await import(${JSON.stringify(mod)});
const p = await Progress.create(true, 1000);
await new Promise((r) => setTimeout(r, 250)); // update() draws at most every 200 ms, counted from the start
p.update(500, 'clip.mov');
p.stop();\n`);
    const r = spawnSync('script', ['-qec', `stty cols 100; ${JSON.stringify(process.execPath)} ${prog}`, '/dev/null'], {
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', TERM: 'xterm-256color', ...env }, encoding: 'utf8',
    });
    if (r.error) throw r.error;
    assert.equal(r.status, 0, r.stdout);
    return r.stdout;
  } finally {
    rmSync(dir, { recursive: true });
  }
}

test('the spinner is coloured on a terminal, and not under NO_COLOR', { skip: spawnSync('script', ['-V']).error ? 'no script(1)' : false }, () => {
  const sgr = /\x1b\[[0-9;]*m/; // a colour (Select Graphic Rendition) sequence
  const coloured = onTerminal({});
  assert.match(coloured, /clip\.mov/);
  assert.match(coloured, sgr);
  const plain = onTerminal({ NO_COLOR: '1' });
  assert.match(plain, /clip\.mov\s+500 B \/ 1000 B/);
  assert.doesNotMatch(plain, sgr);
});
