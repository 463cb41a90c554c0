// Entry for every command: parse argv, run the command, one exit handler for all outcomes.
import { Command, CommanderError } from 'commander';
import { createRequire } from 'node:module';
import { EXIT_CODES, FusedError, describeError } from '../errors.js';
import { formatError } from '../ui/messages.js';
import type { CommandContext, CommandModule } from '../commands/context.js';

export type { CommandContext, CommandModule } from '../commands/context.js';

// The package's version: put into the bundle by scripts/bundle.mjs (an installed bundle has no package.json beside
// it), read from package.json when the command runs from dist/ without one.
declare const __FUSED_VERSION__: string | undefined;
export const VERSION: string = typeof __FUSED_VERSION__ === 'string'
  ? __FUSED_VERSION__
  : (createRequire(import.meta.url)('../../package.json') as { version: string }).version;

/**
 * Run command NAME, its module given by LOAD (undefined: no such command). The dispatch by name lives in
 * cli/commands.ts; a one-command bundle (scripts/bundle.mjs) passes its own module, so it holds no other command.
 */
export async function main(name: string, load: (() => Promise<CommandModule>) | undefined): Promise<void> {
  let exitCode = 0;
  const ctx: CommandContext = {
    name,
    exit(code) {
      if (exitCode === 0 || code === EXIT_CODES.usage) exitCode = code;
    },
  };
  // A closed pipe on stdout (`fusedmap f | head -1`) ends the command quietly.
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code === 'EPIPE') process.exit(exitCode);
    process.stderr.write(`${name}: standard output: ${describeError(err)}\n`);
    process.exit(EXIT_CODES.failure);
  });
  process.on('unhandledRejection', (err) => finish(name, err));
  try {
    if (!load) throw new FusedError('usage', 'unknown command', name);
    const program = withDefaults((await load()).build(ctx));
    configure(program, name);
    await program.parseAsync(process.argv);
  } catch (err) {
    return finish(name, err);
  }
  return flushAndExit(exitCode);
}

/** What every command has whether its module says so or not: --version. (Completion describes the same.) */
export function withDefaults(program: Command): Command {
  if (program.version() === undefined) program.version(VERSION);
  return program;
}

/** Commander: help on stdout, misuse as one line plus a hint, never its own process.exit. */
function configure(cmd: Command, name: string): void {
  cmd.exitOverride();
  cmd.configureOutput({
    writeOut: (s) => process.stdout.write(s),
    writeErr: (s) => process.stderr.write(s),
    outputError: () => {}, // the exit handler prints misuse in our format
  });
  cmd.showSuggestionAfterError(true);
  for (const sub of cmd.commands) configure(sub, name);
}

function finish(name: string, err: unknown): Promise<void> {
  if (err instanceof CommanderError) {
    if (err.code === 'commander.helpDisplayed' || err.code === 'commander.version' || err.exitCode === 0) {
      return flushAndExit(0);
    }
    if (err.code === 'commander.executeSubCommandAsync' || err.code === 'commander.help') return flushAndExit(err.exitCode);
    process.stderr.write(`${name}: ${err.message.replace(/^error: /, '').replace(/\s*\n\s*/g, ' ')}\nTry '${name} --help' for more information.\n`);
    return flushAndExit(EXIT_CODES.usage);
  }
  if (err instanceof FusedError && err.kind === 'usage') {
    process.stderr.write(`${formatError(name, err)}\nTry '${name} --help' for more information.\n`);
    return flushAndExit(EXIT_CODES.usage);
  }
  process.stderr.write(formatError(name, err) + '\n');
  if (!(err instanceof FusedError) && process.env.FUSED_DEBUG) process.stderr.write(String((err as Error)?.stack) + '\n');
  return flushAndExit(err instanceof FusedError ? EXIT_CODES[err.kind] : EXIT_CODES.failure);
}

/** Exit only after stdout and stderr are written out (a pipe may still hold our last lines). */
function flushAndExit(code: number): Promise<void> {
  return new Promise(() => {
    let pending = 2;
    const done = () => {
      if (--pending === 0) process.exit(code);
    };
    process.stdout.write('', done);
    process.stderr.write('', done);
  });
}
