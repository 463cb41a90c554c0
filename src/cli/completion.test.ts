// Unit tests for the completion generator: specs from commander definitions, and the bash script run in bash.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Argument, Command, Option } from 'commander';
import { definitions } from './commands.js';
import { bashScript, commandSpec, valueKind, zshScript, type CommandSpec } from './completion.js';

function fixture(): Command {
  const p = new Command('tool').version('1').helpCommand(true);
  p.command('get')
    .description('get things')
    .argument('<MOUNTPOINT>')
    .argument('[FILE...]')
    .option('--key-file <FILE>', 'a key')
    .option('--volume <NAME=DIR>', 'repeatable', (v: string, prev: string[]) => [...prev, v], [])
    .addOption(new Option('--mode <M>', 'a mode').choices(['fast', 'safe', 'bad word']));
  p.command('put').addArgument(new Argument('<HOW>').choices(['a', 'b']));
  return p;
}

/** What bash completes for WORDS (the last one is the word under the cursor), in a directory DIR. */
function complete(script: string, words: string[], dir = tmpdir()): string[] {
  const r = spawnSync('bash', ['-c', `source /dev/stdin <<'EOS'\n${script}\nEOS\nCOMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); _fused; printf '%s\\n' "\${COMPREPLY[@]}"`, 'bash', ...words], { cwd: dir, encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stderr, '');
  return r.stdout.split('\n').filter(Boolean).sort();
}

test('placeholders name what a value is completed with', () => {
  assert.deepEqual(valueKind('<FILE...>'), { kind: 'file' });
  assert.deepEqual(valueKind('[DEV]'), { kind: 'file' });
  assert.deepEqual(valueKind('MOUNTPOINT'), { kind: 'dir' });
  assert.deepEqual(valueKind('<DIR>'), { kind: 'dir' });
  assert.deepEqual(valueKind('<NAME=DIR>'), { kind: 'none' });
  assert.deepEqual(valueKind('<HOST:PORT>'), { kind: 'none' });
  assert.deepEqual(valueKind('<M>', ['x', 'y z', "q'"]), { kind: 'choices', choices: ['x'] });
});

test('a spec has every visible subcommand, option, argument and the help command', () => {
  const spec = commandSpec(fixture());
  assert.deepEqual(spec.subcommands.map((s) => s.path.join(' ')), ['tool get', 'tool put', 'tool help']);
  assert.deepEqual(spec.options.map((o) => o.names), [['-V', '--version'], ['-h', '--help']]);
  const get = spec.subcommands[0]!;
  assert.deepEqual(get.args.map((a) => [a.name, a.value.kind, a.required]), [['MOUNTPOINT', 'dir', true], ['FILE', 'file', false]]);
  assert.equal(get.variadic, true);
  const byName = (n: string) => get.options.find((o) => o.names.includes(n))!;
  assert.deepEqual(byName('--key-file').value, { kind: 'file' });
  assert.equal(byName('--volume').repeatable, true);
  assert.equal(byName('--key-file').repeatable, false);
  assert.deepEqual(byName('--mode').value, { kind: 'choices', choices: ['fast', 'safe'] });
  assert.equal(byName('--help').value, undefined);
  assert.deepEqual(spec.subcommands[2]!.args[0]!.value, { kind: 'choices', choices: ['get', 'put'] });
});

test('the bash script completes subcommands, options, option values and paths', () => {
  const dir = mkdtempSync(join(tmpdir(), 'fused-completion-'));
  try {
    mkdirSync(join(dir, 'media dir'));
    writeFileSync(join(dir, 'mkey'), '');
    const script = bashScript([commandSpec(fixture())]);
    assert.deepEqual(complete(script, ['tool', '']), ['get', 'help', 'put']);
    assert.deepEqual(complete(script, ['tool', 'g']), ['get']);
    assert.deepEqual(complete(script, ['tool', '--v']), ['--version']);
    assert.deepEqual(complete(script, ['tool', 'get', '--k']), ['--key-file']);
    assert.deepEqual(complete(script, ['tool', 'get', '--mode', '']), ['fast', 'safe']);
    assert.deepEqual(complete(script, ['tool', 'get', '--mode', '=', 's']), ['safe']);
    assert.deepEqual(complete(script, ['tool', 'put', '']), ['a', 'b']);
    assert.deepEqual(complete(script, ['tool', 'help', '']), ['get', 'put']);
    // Paths: a directory for MOUNTPOINT (names with spaces intact), then files; the option's value is skipped.
    assert.deepEqual(complete(script, ['tool', 'get', ''], dir), ['media dir']);
    assert.deepEqual(complete(script, ['tool', 'get', '--key-file', 'mk', ''], dir), ['media dir']);
    assert.deepEqual(complete(script, ['tool', 'get', 'media dir', 'mk'], dir), ['mkey']);
    assert.deepEqual(complete(script, ['tool', 'get', '--key-file', 'mk'], dir), ['mkey']);
    assert.deepEqual(complete(script, ['tool', 'get', '--volume', ''], dir), []);
    // After --, words are arguments even when they look like options.
    assert.deepEqual(complete(script, ['tool', 'get', '--', '--k']), []);
  } finally {
    rmSync(dir, { recursive: true });
  }
});

async function realSpecs(): Promise<CommandSpec[]> {
  return (await definitions()).map((p) => commandSpec(p));
}

test('the bash script for the fused commands completes each of their subcommands and options', async () => {
  const specs = await realSpecs();
  const script = bashScript(specs);
  assert.match(script, /^complete -F _fused fusedctl fusedmap fusedcat fusedcp fusedthrottle$/m);
  assert.deepEqual(complete(script, ['fusedctl', 'st']), ['status']);
  assert.deepEqual(complete(script, ['fusedctl', 'completion', '']), ['bash', 'zsh']);
  assert.deepEqual(complete(script, ['fusedcp', '--vers']), ['--version']); // added to every command by cli/run.ts
  let checked = 0;
  const visit = (s: CommandSpec) => {
    for (const sub of s.subcommands) {
      assert.ok(complete(script, [...s.path, sub.path.at(-1)!]).includes(sub.path.at(-1)!), sub.path.join(' '));
      visit(sub);
    }
    for (const o of s.options.flatMap((x) => x.names).filter((n) => n.startsWith('--'))) {
      assert.ok(complete(script, [...s.path, o]).includes(o), `${s.path.join(' ')} ${o}`);
      checked++;
    }
  };
  for (const s of specs) visit(s);
  assert.ok(checked > 40, `${checked} options checked`);
});

test('the zsh script names every command and option, with descriptions escaped', async () => {
  const specs = await realSpecs();
  const script = zshScript(specs);
  assert.match(script, /^#compdef fusedctl fusedmap fusedcat fusedcp fusedthrottle\n/);
  assert.match(script, /^_fused_fusedctl_serve\(\) \{$/m);
  assert.match(script, /'--secret-file=\[[^']*\]:FILE:_files'/);
  assert.match(script, /'\*--volume=\[/); // repeatable
  assert.match(script, /'\(-o --output\)-o\+\[/);
  const fixed = zshScript([commandSpec(new Command('t').option('--x <N>', "it's [a]: b"))]);
  assert.match(fixed, /'--x=\[it'\\''s \\\[a\\\]\\: b\]:N: '/);
  const zsh = spawnSync('zsh', ['-n'], { input: script, encoding: 'utf8' });
  if (!zsh.error) assert.equal(zsh.status, 0, zsh.stderr); // a syntax check where zsh is installed
});
