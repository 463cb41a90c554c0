// fusedcp: cp that moves bytes over the direct path when the source is on a fused mount, and says which path each file took.
import { Command, Option } from 'commander';
import { lstat, readdir } from 'node:fs/promises';
import { constants as osConstants } from 'node:os';
import { EXIT_CODES, FusedError, reasonOf } from '../errors.js';
import { argBytes, displayName } from '../ui/argv.js';
import type { CommandContext } from './context.js';
import { FuseClient } from '../client/client.js';
import { Copier, DEFAULT_JOBS, PreserveError, joinBytes, type FileResult } from '../client/copy.js';
import { DEFAULT_SMALL_FILE, FileReader } from '../client/reader.js';
import { DirectWriter } from '../client/writer.js';
import { humanBytes, jsonOut } from '../ui/messages.js';
import { parseCount, parseSize } from '../ui/options.js';
import { Progress } from '../ui/progress.js';
import { RATE_HELP, parseRate } from '../ui/rates.js';
import { Throttle } from '../client/pacer.js';

interface Opts {
  recursive?: boolean; R?: boolean; preserve?: boolean; clobber?: boolean; force?: boolean; verbose?: boolean; quiet?: boolean;
  networkOnly?: boolean; json?: boolean; verify?: boolean; inplace?: boolean; smallFile: string; jobs: string; progress: boolean; limit?: string; fallback?: boolean;
}

export function build(ctx: CommandContext): Command {
  return new Command('fusedcp')
    .description('Copy files, reading their bytes straight from the shared device when they are on a fused mount.')
    .usage('[options] SOURCE... DEST')
    .argument('<PATHS...>', 'SOURCE files or (with -r) directories, then the DEST file or directory')
    .option('-r, --recursive', 'copy directories recursively (also -R)')
    .addOption(new Option('-R', 'same as -r').hideHelp())
    .option('-p, --preserve', 'keep mode, ownership and timestamps; a copy that cannot keep them is reported as failed')
    .option('-n, --no-clobber', 'never replace an existing file')
    .option('-f, --force', 'replace a destination that cannot be opened')
    .option('--inplace', 'overwrite an existing destination file where it stands (same inode, no temporary file): an interrupted copy leaves old and new bytes mixed')
    .option('-v, --verbose', "print 'SOURCE' -> 'DEST' and the path each file took")
    .option('-q, --quiet', 'do not say on stderr why a file went through the network')
    .option('--network-only', 'copy through the mount only (never the device)')
    .option('--json', 'a JSON summary per file on stdout')
    .option('--verify', 'compare sha256 of each copy with the source read through the mount, before it gets its name')
    .option('--limit <RATE>', `copy at most RATE bytes per second, whichever path; ${RATE_HELP}`)
    .option('--fallback', 'over the map server\'s throttle limit, send the excess through the network mount instead of waiting')
    .option('--small-file <SIZE>', 'files smaller than this go through the mount', String(DEFAULT_SMALL_FILE))
    .option('-j, --jobs <N>', 'copy up to N files of a tree at once (1: one after another); output stays in walk order', String(DEFAULT_JOBS))
    .option('--no-progress', 'no progress display (it is shown only on a terminal anyway)')
    .addHelpText('after', '\nExit status: 0 ok, 1 failure, 2 usage, 3 verification mismatch, 4 some files failed;\n130 or 143 when interrupted by SIGINT or SIGTERM (no temporary file is left).\nSee fusedcp(1).')
    .action(async (args: string[], opts: Opts) => {
      if (args.length < 2) throw new FusedError('usage', `missing destination file operand after '${args[0]}'`);
      const sourceArgs = args.slice(0, -1);
      const destArg = args.at(-1)!;
      // commander reads --no-clobber as the negation of --clobber.
      const noClobber = opts.clobber === false;
      if (noClobber && opts.force) throw new FusedError('usage', 'options -n and -f cannot be used together');
      if (noClobber && opts.inplace) throw new FusedError('usage', 'options -n and --inplace cannot be used together');
      const smallFile = parseSize(opts.smallFile, '--small-file');
      const jobs = parseCount(opts.jobs, '--jobs', 1, MAX_JOBS);
      // --limit 0 means no limit, as with rsync --bwlimit=0.
      const limit = opts.limit === undefined ? undefined : parseRate(opts.limit, '--limit') || undefined;
      const throttle = new Throttle({ ...(limit !== undefined ? { limit } : {}), fallback: !!opts.fallback });
      const sources = sourceArgs.map(argBytes);
      const dest = argBytes(destArg);
      const client = opts.networkOnly ? null : await FuseClient.load();
      const reader = new FileReader(client, { networkOnly: !!opts.networkOnly, smallFile, throttle });
      const writer = new DirectWriter(client, { networkOnly: !!opts.networkOnly, smallFile, throttle });
      const showProgress = opts.progress && !opts.json && !opts.quiet && process.stderr.isTTY === true;
      const progress = await Progress.create(showProgress, showProgress ? await totalBytes(sources) : 0);
      const results: FileResult[] = [];
      let doneBytes = 0;
      /** Bytes so far of each file being copied now (several with -j). */
      const moving = new Map<Buffer, number>();
      const movingBytes = () => [...moving.values()].reduce((a, b) => a + b, 0);
      const t0 = performance.now();
      const copier = new Copier(reader, {
        recursive: !!(opts.recursive || opts.R), preserve: !!opts.preserve, noClobber, force: !!opts.force, verify: !!opts.verify,
        inplace: !!opts.inplace, jobs,
      }, {
        progress: (src, bytes) => {
          moving.set(src, bytes);
          progress.update(doneBytes + movingBytes(), displayName(src));
        },
        file: (r) => {
          moving.delete(r.source);
          results.push(r);
          if (r.report) doneBytes += r.report.size;
          progress.around(() => tell(r, opts));
        },
      }, writer, throttle);
      // Interrupted (^C, kill): no temporary file stays behind, then die of the signal as cp would (128+N).
      const onSignal = (signal: NodeJS.Signals) => {
        copier.discardTemporaries();
        progress.stop();
        process.off('SIGINT', onSignal);
        process.off('SIGTERM', onSignal);
        process.kill(process.pid, signal);
        // Should the signal be blocked or ignored anyway, exit with the status a shell would show.
        setTimeout(() => process.exit(128 + (osConstants.signals[signal] ?? 0)), 1000);
      };
      process.on('SIGINT', onSignal);
      process.on('SIGTERM', onSignal);
      try {
        await copier.run(sources, dest);
      } finally {
        process.off('SIGINT', onSignal);
        process.off('SIGTERM', onSignal);
        progress.stop();
        await client?.close();
      }
      if (opts.json) process.stdout.write(jsonOut(results.map(toJson)));
      else if (opts.verbose) process.stderr.write(summary(results, (performance.now() - t0) / 1000, throttle));
      const failed = results.filter((r) => r.status === 'failed');
      if (failed.length === 0) return;
      const mismatch = failed.some((r) => r.error instanceof FusedError && r.error.kind === 'mismatch');
      ctx.exit(mismatch ? EXIT_CODES.mismatch : failed.length === results.length ? EXIT_CODES.failure : EXIT_CODES.partial);
    });
}

/** -j beyond this buys nothing: the network mount's own requests in flight are the limit. */
const MAX_JOBS = 256;

/** One line per file on stderr: errors always, fallbacks unless -q, everything with -v. */
function tell(r: FileResult, opts: Opts): void {
  const src = displayName(r.source);
  if (r.status === 'failed') {
    // A copy kept without its attributes is reported as cp does: about the destination.
    if (r.error instanceof PreserveError) process.stderr.write(`fusedcp: ${displayName(r.destination)}: ${r.error.message}\n`);
    else process.stderr.write(`fusedcp: ${src}: ${reasonOf(r.error)}\n`);
    return;
  }
  const rep = r.report;
  if (opts.verbose) {
    const w = r.write;
    const wrote = w && w.path !== 'network' ? `; written ${w.path}${w.reason ? `: ${w.reason}` : ''}` : '';
    const how = rep ? ` [${rep.path}${rep.reason ? `: ${rep.reason}` : ''}${wrote}]` : r.note ? ` [${r.note}]` : '';
    process.stderr.write(`'${src}' -> '${displayName(r.destination)}'${how}\n`);
  } else if (rep && !opts.quiet && !opts.json && rep.size > 0) {
    if (rep.fallback) process.stderr.write(`fusedcp: ${src}: ${rep.path === 'mixed' ? 'partly ' : ''}through the network: ${rep.reason}\n`);
    const w = r.write;
    if (w?.fallback) process.stderr.write(`fusedcp: ${displayName(r.destination)}: ${w.path === 'mixed' ? 'partly ' : ''}written through the network: ${w.reason}\n`);
  }
}

function toJson(r: FileResult): Record<string, unknown> {
  const rep = r.report;
  const mbps = rep && r.seconds > 0 ? Math.round((rep.size / r.seconds / 1e6) * 10) / 10 : null;
  return {
    source: r.source.toString(),
    destination: r.destination.toString(),
    status: r.status,
    ...(r.note ? { note: r.note } : {}),
    ...(rep
      ? {
          size: rep.size,
          path: rep.path,
          reason: rep.reason,
          fallback: rep.fallback,
          interrupted: rep.interrupted,
          bytesDirect: rep.bytesDirect,
          bytesZero: rep.bytesZero,
          bytesNetwork: rep.bytesNetwork,
        }
      : {}),
    ...(r.write
      ? {
          write: {
            path: r.write.path,
            reason: r.write.reason,
            fallback: r.write.fallback,
            interrupted: r.write.interrupted,
            bytesDirect: r.write.bytesDirect,
            bytesNetwork: r.write.bytesNetwork,
          },
        }
      : {}),
    ...(r.throttle
      ? {
          throttle: {
            waitedMs: r.throttle.waitedMs,
            grants: r.throttle.grants,
            bytesGranted: r.throttle.bytesGranted,
            bytesReadOverLimit: rep?.bytesOverLimit ?? 0,
            bytesWrittenOverLimit: r.write?.bytesOverLimit ?? 0,
          },
        }
      : {}),
    seconds: Math.round(r.seconds * 1000) / 1000,
    mbPerSec: mbps,
    ...(r.verified !== undefined ? { verified: r.verified } : {}),
    ...(r.status === 'failed' ? { error: reasonOf(r.error) } : {}),
  };
}

function summary(results: FileResult[], seconds: number, throttle: Throttle): string {
  const t = throttle.totals();
  const copied = results.filter((r) => r.report);
  const sum = (f: (r: FileResult) => number) => copied.reduce((a, r) => a + f(r), 0);
  const total = sum((r) => r.report!.size);
  const direct = sum((r) => r.report!.bytesDirect);
  const network = sum((r) => r.report!.bytesNetwork);
  const zero = sum((r) => r.report!.bytesZero);
  const writtenDirect = copied.reduce((a, r) => a + (r.write?.bytesDirect ?? 0), 0);
  const small = copied.filter((r) => r.report!.reason?.startsWith('small read')).length;
  const failed = results.filter((r) => r.status === 'failed').length;
  return (
    `fusedcp: ${copied.length} file(s), ${humanBytes(total)} in ${seconds.toFixed(2)} s (${humanBytes(seconds > 0 ? total / seconds : 0)}/s): ` +
    `read ${humanBytes(direct)} direct, ${humanBytes(zero)} zeros (holes, unwritten), ${humanBytes(network)} through the network; ` +
    `wrote ${humanBytes(writtenDirect)} direct` +
    (small ? `, ${small} small file(s) through the network by choice` : '') +
    (t.waitedMs >= 10 ? `; throttle: waited ${(t.waitedMs / 1000).toFixed(2)} s, ${t.grants} grant(s) of ${humanBytes(t.bytesGranted)}` : '') +
    (failed ? `; ${failed} failed` : '') +
    '\n'
  );
}

async function totalBytes(paths: Buffer[]): Promise<number> {
  let total = 0;
  for (const p of paths) {
    const st = await lstat(p).catch(() => undefined);
    if (!st) continue;
    if (st.isFile()) total += st.size;
    else if (st.isDirectory()) {
      const names = await readdir(p, { encoding: 'buffer' }).catch(() => [] as Buffer[]);
      total += await totalBytes(names.map((n) => joinBytes(p, n)));
    }
  }
  return total;
}
