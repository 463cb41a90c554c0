// The man pages keep up with the commands: every subcommand and option is in its command's page, and a page
// whose command prints --json documents the output in a JSON OUTPUT section.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { definitions } from './commands.js';
import { commandSpec, type CommandSpec } from './completion.js';

const MAN = new URL('../../man/', import.meta.url);
// What commander gives every command and the page need not list.
const IMPLICIT = new Set(['-h', '--help', '-V', '--version', 'help']);

/** A page as plain text: roff's escaped hyphens as hyphens. */
const page = (name: string) => readFileSync(new URL(`${name}.1`, MAN), 'utf8').replace(/\\-/g, '-');

test('every subcommand and option of every command is in its man page', async () => {
  for (const spec of (await definitions()).map((p) => commandSpec(p))) {
    const name = spec.path[0]!;
    const text = page(name);
    const missing: string[] = [];
    const visit = (s: CommandSpec) => {
      for (const n of s.options.flatMap((o) => o.names)) {
        if (!IMPLICIT.has(n) && !new RegExp(`(^|[^-\\w])${n}(?![-\\w])`).test(text)) missing.push(`${s.path.join(' ')} ${n}`);
      }
      for (const c of s.subcommands) {
        const sub = c.path.at(-1)!;
        if (!IMPLICIT.has(sub) && !new RegExp(`\\b${name} ${sub}\\b`).test(text.replace(/\n\.B[RI]? /g, ' '))) missing.push(c.path.join(' '));
        visit(c);
      }
    };
    visit(spec);
    assert.deepEqual(missing, [], `${name}(1) does not mention these`);
  }
});

test('the man page of every command with --json has a JSON OUTPUT section', async () => {
  for (const spec of (await definitions()).map((p) => commandSpec(p))) {
    const json: string[] = [];
    const visit = (s: CommandSpec) => {
      if (s.options.some((o) => o.names.includes('--json'))) json.push(s.path.join(' '));
      s.subcommands.forEach(visit);
    };
    visit(spec);
    if (json.length) assert.match(page(spec.path[0]!), /^\.SH JSON OUTPUT$/m, `${json.join(', ')} print JSON`);
  }
});
