// fusedcat: a file's bytes to stdout over the direct path, for pipes (`fusedcat clip.mov | ffmpeg -i - ...`).
import { Command } from 'commander';
import { EXIT_CODES, FusedError, errnoCode, reasonOf } from '../errors.js';
import { argBytes, displayName } from '../ui/argv.js';
import type { CommandContext } from './context.js';
import { FuseClient } from '../client/client.js';
import { FileReader, type Chunk } from '../client/reader.js';
import { describeDepth } from '../client/depth.js';
import { tempName } from '../client/copy.js';
import { DirectWriter, WriteRestart, type WriteTarget } from '../client/writer.js';
import { fstatSync, unlinkSync } from 'node:fs';
import { chmod, open, rename, stat, unlink } from 'node:fs/promises';
import { formatError } from '../ui/messages.js';
import { BulkOutput } from '../ui/output.js';
import { parseSize } from '../ui/options.js';
import { RATE_HELP, parseRate } from '../ui/rates.js';
import { Throttle } from '../client/pacer.js';

interface Opts { offset?: string; length?: string; networkOnly?: boolean; quiet?: boolean; verbose?: boolean; write?: string; limit?: string; fallback?: boolean }

export function build(ctx: CommandContext): Command {
  return new Command('fusedcat')
    .description('Write files to standard output, reading their bytes straight from the shared device when they are on a fused mount;\nwith --write, write standard input into a file, straight to the device when it is on a fused mount.')
    .argument('[FILE...]', 'files (on fused mounts for the direct path; any file works through the normal path)')
    .option('-w, --write <FILE>', 'write standard input into FILE (created or replaced when complete) instead of reading files')
    .option('--offset <BYTES>', 'start at this byte of each file (suffixes K, M, G)')
    .option('--length <BYTES>', 'at most this many bytes of each file (suffixes K, M, G)')
    .option('--network-only', 'read through the mount only (never the device)')
    .option('--limit <RATE>', `move at most RATE bytes per second, whichever path; ${RATE_HELP}`)
    .option('--fallback', 'over the map server\'s throttle limit, send the excess through the network mount instead of waiting')
    .option('-q, --quiet', 'do not say on stderr why a file was read through the network')
    .option('-v, --verbose', 'say on stderr which path each file took, and the read depth a large read settled on')
    .addHelpText('after', '\nExit status: 0 ok, 1 failure, 2 usage, 4 some files failed (a closed pipe stops quietly;\nfiles that failed before it still count).\nSee fusedcat(1).')
    .action(async (files: string[], opts: Opts) => {
      // --limit 0 means no limit, as with rsync --bwlimit=0.
      const limit = opts.limit === undefined ? undefined : parseRate(opts.limit, '--limit') || undefined;
      const throttle = new Throttle({ ...(limit !== undefined ? { limit } : {}), fallback: !!opts.fallback });
      if (opts.write !== undefined) {
        if (files.length > 0) throw new FusedError('usage', 'FILE arguments cannot be given with --write');
        if (opts.offset !== undefined || opts.length !== undefined) throw new FusedError('usage', '--offset and --length do not go with --write');
        return writeStdin(opts.write, opts, throttle);
      }
      if (files.length === 0) throw new FusedError('usage', 'missing FILE (or --write FILE)');
      const offset = opts.offset === undefined ? undefined : parseSize(opts.offset, '--offset');
      const length = opts.length === undefined ? undefined : parseSize(opts.length, '--length');
      const client = opts.networkOnly ? null : await FuseClient.load();
      // A large read tries a deeper depth, except into a file: the destination's disk is the slower side, and more
      // reads in flight only compete with it (ReaderOptions.tune in reader.ts).
      const intoFile = (() => { try { return fstatSync(1).isFile(); } catch { return false; } })();
      const reader = new FileReader(client, { networkOnly: !!opts.networkOnly, throttle, tune: !intoFile });
      const out = new BulkOutput();
      // Wait for each write: the chunk's buffer is reused as soon as we return.
      const sink = { write: (chunk: Chunk) => out.write(chunk.data) };
      let failed = 0;
      let lastError: unknown;
      // A closed pipe is ours to handle (status below), not the entry's (which would exit at once with 0).
      const inherited = process.stdout.listeners('error') as ((err: Error) => void)[];
      process.stdout.removeAllListeners('error');
      process.stdout.on('error', (err: Error) => {
        if (errnoCode(err) !== 'EPIPE') for (const l of inherited) l(err);
      });
      try {
        for (const arg of files) {
          const file = argBytes(arg);
          try {
            const r = await reader.read(file, sink, { ...(offset !== undefined ? { offset } : {}), ...(length !== undefined ? { length } : {}) });
            const name = displayName(file);
            if (r.changed) {
              // Bytes already written to the pipe cannot be taken back: say so, and fail, like tar does.
              failed++;
              lastError = new FusedError('failure', 'changed while being read');
              process.stderr.write(`fusedcat: ${name}: changed while being read (${r.reason}); the output mixes old and new content\n`);
            } else if (r.interrupted && !opts.quiet) process.stderr.write(`fusedcat: ${name}: ${r.reason}; the rest was read through the mount\n`);
            else if (opts.verbose) process.stderr.write(`fusedcat: ${name}: ${r.path}${r.reason ? ` (${r.reason})` : ''}${r.depth ? `; ${describeDepth(r.depth)}` : ''}${paced(throttle)}\n`);
            else if (r.fallback && r.reason && !opts.quiet && r.size > 0) {
              process.stderr.write(`fusedcat: ${name}: ${r.path === 'mixed' ? 'partly ' : ''}through the network: ${r.reason}\n`);
            }
          } catch (err) {
            // The reader of the pipe is gone: stop quietly; files that failed before still count.
            if (errnoCode(err) === 'EPIPE') break;
            failed++;
            lastError = err;
            process.stderr.write(formatError('fusedcat', new FusedError('failure', reasonOf(err), displayName(file))) + '\n');
          }
        }
      } finally {
        await client?.close();
      }
      process.stdout.removeAllListeners('error');
      for (const l of inherited) process.stdout.on('error', l);
      if (failed === files.length) ctx.exit(lastError instanceof FusedError ? EXIT_CODES[lastError.kind] : EXIT_CODES.failure);
      else if (failed) ctx.exit(EXIT_CODES.partial);
    });
}

/** --write: standard input into a file, through a temporary name, renamed when complete (like fusedcp). */
async function writeStdin(destArg: string, opts: Opts, throttle: Throttle): Promise<void> {
  const dest = argBytes(destArg);
  const name = displayName(dest);
  if ((await stat(dest).catch(() => undefined))?.isDirectory()) throw new FusedError('failure', 'is a directory', name);
  const tmp = tempName(dest);
  const client = opts.networkOnly ? null : await FuseClient.load();
  // Interrupted: no temporary file stays behind, then die of the signal.
  const onSignal = (signal: NodeJS.Signals) => {
    try {
      unlinkSync(tmp);
    } catch {
      // not there yet, or renamed already
    }
    process.kill(process.pid, signal);
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  let target: WriteTarget | undefined;
  try {
    const fh = await open(tmp, 'wx', 0o600);
    // The length of standard input is not known: always worth the direct path; allocation grows in steps.
    target = await new DirectWriter(client, { networkOnly: !!opts.networkOnly, smallFile: 0, throttle }).open(tmp, -1, fh);
    let offset = 0;
    for await (const chunk of process.stdin as AsyncIterable<Buffer>) {
      await throttle.limit(chunk.length);
      await target.write(offset, chunk, false);
      offset += chunk.length;
    }
    await target.finish(offset);
    const umask = process.umask();
    await chmod(tmp, 0o666 & ~umask);
    await rename(tmp, dest);
    const r = target.report;
    if (opts.verbose) process.stderr.write(`fusedcat: ${name}: ${offset} bytes written ${r.path}${r.reason ? ` (${r.reason})` : ''}${paced(throttle)}\n`);
    else if (r.fallback && r.reason && !opts.quiet) process.stderr.write(`fusedcat: ${name}: ${r.path === 'mixed' ? 'partly ' : ''}written through the network: ${r.reason}\n`);
  } catch (err) {
    await target?.abort();
    await unlink(tmp).catch(() => {});
    if (err instanceof WriteRestart) {
      throw new FusedError('failure', `the direct write could not be kept (${err.message}) and standard input cannot be read again; nothing was written`, name);
    }
    throw err instanceof FusedError && err.subject ? err : new FusedError('failure', reasonOf(err), name);
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await client?.close();
  }
}

/** `; throttle: ...` for -v when anything was paced (totals so far over the command). */
function paced(throttle: Throttle): string {
  const t = throttle.totals();
  return t.waitedMs >= 10 ? `; throttle so far: waited ${(t.waitedMs / 1000).toFixed(2)} s, ${t.grants} grant(s)` : '';
}
