// fusedcp: cp that moves bytes over the direct path when the source is on a fused mount, and says which path each file took.
import { Command, Option } from 'commander';
import { lstat, readdir, realpath, stat } from 'node:fs/promises';
import { constants as osConstants } from 'node:os';
import { EXIT_CODES, FusedError, reasonOf } from '../errors.js';
import { argBytes, displayName } from '../ui/argv.js';
import type { CommandContext } from './context.js';
import { FuseClient } from '../client/client.js';
import { Copier, DEFAULT_JOBS, DestinationError, PreserveError, type FileResult } from '../client/copy.js';
import { baseBytes, joinBytes } from '../client/paths.js';
import { HASH_TYPES, type HashType } from '../client/hash.js';
import { MHL_FOLDER, addGeneration, checkTree, creatorNow, readHistory, unrecordable, type CheckResult, type ManifestEntry } from '../client/mhl.js';
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
  checksum?: HashType; mhl?: boolean; mhlVerify?: boolean;
}

/** Hash formats of ASC MHL v2.0 that --checksum offers (sha256 is not one of them). */
const MHL_TYPES: readonly HashType[] = ['xxh64', 'md5'];

export function build(ctx: CommandContext): Command {
  return new Command('fusedcp')
    .description('Copy files, reading their bytes straight from the shared device when they are on a fused mount.')
    .usage('[options] SOURCE... DEST\n       fusedcp --mhl-verify [options] DIR')
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
    .addOption(new Option('--checksum <TYPE>', 'checksum every file from its bytes as they are copied (no second read); shown with -v and in --json; with --verify the copy is read back and compared with it').choices(HASH_TYPES))
    .option('--mhl', `write an ASC MHL v2.0 manifest generation of the copied files into DEST/${MHL_FOLDER}/ (DEST, a directory, is the manifest's root; xxh64 unless --checksum md5)`)
    .addOption(new Option('--mhl-verify', 'check the tree DIR (the only operand) against its ASC MHL manifest: read every recorded file (direct where fused), report mismatches, missing and new files').conflicts(['mhl', 'checksum', 'preserve', 'inplace', 'verify', 'recursive', 'force']))
    .option('--limit <RATE>', `copy at most RATE bytes per second, whichever path; ${RATE_HELP}`)
    .option('--fallback', 'over the map server\'s throttle limit, send the excess through the network mount instead of waiting')
    .option('--small-file <SIZE>', 'files smaller than this go through the mount', String(DEFAULT_SMALL_FILE))
    .option('-j, --jobs <N>', 'copy up to N files of a tree at once (1: one after another); output stays in walk order', String(DEFAULT_JOBS))
    .option('--no-progress', 'no progress display (it is shown only on a terminal anyway)')
    .addHelpText('after', '\nExit status: 0 ok, 1 failure, 2 usage, 3 verification mismatch, 4 some files failed;\n130 or 143 when interrupted by SIGINT or SIGTERM (no temporary file is left).\nWith --mhl-verify: 3 when a file differs from the manifest or is missing, or a generation\nwas changed; 4 when some files could not be read.\nSee fusedcp(1).')
    .action(async (args: string[], opts: Opts) => {
      if (opts.mhlVerify) return mhlVerify(ctx, args, opts);
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
      if (opts.mhl && opts.checksum && !MHL_TYPES.includes(opts.checksum)) throw new FusedError('usage', `${opts.checksum} is not an ASC MHL v2.0 hash format (use ${MHL_TYPES.join(' or ')})`, '--mhl');
      const checksum = opts.checksum ?? (opts.mhl ? 'xxh64' : undefined);
      const mhlRoot = opts.mhl ? await manifestRoot(sources, dest, !!(opts.recursive || opts.R)) : undefined;
      /** When each file's copy (and so its checksum) was done, for the manifest. */
      const hashedAt = new Map<FileResult, Date>();
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
        inplace: !!opts.inplace, jobs, ...(checksum ? { checksum } : {}),
      }, {
        progress: (src, bytes) => {
          moving.set(src, bytes);
          progress.update(doneBytes + movingBytes(), displayName(src));
        },
        file: (r) => {
          moving.delete(r.source);
          results.push(r);
          if (r.checksum) hashedAt.set(r, new Date());
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
      const unrecorded = mhlRoot ? await writeManifest(mhlRoot, results, hashedAt, opts) : 0;
      if (opts.json) process.stdout.write(jsonOut(results.map(toJson)));
      else if (opts.verbose) process.stderr.write(summary(results, (performance.now() - t0) / 1000, throttle));
      const failed = results.filter((r) => r.status === 'failed');
      if (failed.length === 0) {
        if (unrecorded) ctx.exit(EXIT_CODES.partial);
        return;
      }
      const mismatch = failed.some((r) => r.error instanceof FusedError && r.error.kind === 'mismatch');
      ctx.exit(mismatch ? EXIT_CODES.mismatch : failed.length === results.length ? EXIT_CODES.failure : EXIT_CODES.partial);
    });
}

/** The manifest's root for --mhl: DEST, which must be (or, copying one directory with -r, become) a directory. */
async function manifestRoot(sources: Buffer[], dest: Buffer, recursive: boolean): Promise<Buffer> {
  const there = await stat(dest).catch(() => undefined);
  if (there?.isDirectory()) return dest;
  const source = sources.length === 1 && !there && recursive ? await stat(sources[0]!).catch(() => undefined) : undefined;
  if (source?.isDirectory()) return dest;
  throw new FusedError('usage', 'the destination must be a directory: it is the root of the ASC MHL manifest', '--mhl');
}

/** Add a generation of the files just copied to the manifest under `root`. Returns how many copied files it could
 *  not record (names XML cannot carry); says so on stderr. */
async function writeManifest(root: Buffer, results: FileResult[], hashedAt: Map<FileResult, Date>, opts: Opts): Promise<number> {
  const entries: ManifestEntry[] = [];
  let unrecorded = 0;
  let trimmed = root.length;
  while (trimmed > 1 && root[trimmed - 1] === 0x2f) trimmed--;
  const prefix = root.subarray(0, trimmed);
  for (const r of results) {
    if (!r.checksum) continue;
    const d = r.destination;
    // Destinations are the root joined with names, so the root's bytes lead them.
    if (!d.subarray(0, prefix.length).equals(prefix) || d[prefix.length] !== 0x2f) continue;
    let at = prefix.length;
    while (d[at] === 0x2f) at++;
    const rel = d.subarray(at);
    const why = unrecordable(rel);
    if (why) {
      unrecorded++;
      process.stderr.write(`fusedcp: ${displayName(d)}: not in the ASC MHL manifest: ${why}\n`);
      continue;
    }
    const st = await stat(d);
    entries.push({ path: rel.toString('utf8'), size: st.size, modified: st.mtime, checksum: r.checksum, hashed: hashedAt.get(r) ?? new Date() });
  }
  if (entries.length === 0) return unrecorded;
  const name = baseBytes((await realpath(root, { encoding: 'buffer' })) as Buffer).toString('utf8');
  const g = await addGeneration(root, name, creatorNow('fusedcp'), entries);
  if (opts.verbose) process.stderr.write(`fusedcp: ${displayName(joinBytes(root, Buffer.from(`${MHL_FOLDER}/${g.file}`)))}: ASC MHL generation ${g.sequence}, ${entries.length} file(s)\n`);
  return unrecorded;
}

/** fusedcp --mhl-verify DIR: the tree against its manifest. */
async function mhlVerify(ctx: CommandContext, args: string[], opts: Opts): Promise<void> {
  if (args.length !== 1) throw new FusedError('usage', 'takes exactly one operand, the directory holding the manifest', '--mhl-verify');
  const root = argBytes(args[0]!);
  const jobs = parseCount(opts.jobs, '--jobs', 1, MAX_JOBS);
  const smallFile = parseSize(opts.smallFile, '--small-file');
  const limit = opts.limit === undefined ? undefined : parseRate(opts.limit, '--limit') || undefined;
  const throttle = new Throttle({ ...(limit !== undefined ? { limit } : {}), fallback: !!opts.fallback });
  const history = await readHistory(root);
  const client = opts.networkOnly ? null : await FuseClient.load();
  let results: CheckResult[];
  try {
    results = await checkTree(root, new FileReader(client, { networkOnly: !!opts.networkOnly, smallFile, throttle }), history, jobs);
  } finally {
    await client?.close();
  }
  const where = (path: string) => displayName(joinBytes(root, Buffer.from(path)));
  for (const b of history.broken) process.stderr.write(`fusedcp: ${where(b.file)}: manifest generation ${b.reason}\n`);
  for (const r of results) {
    const how = r.read ? ` [${r.read.path}${r.read.reason ? `: ${r.read.reason}` : ''}]` : '';
    if (r.status === 'mismatch') process.stderr.write(`fusedcp: ${where(r.path)}: MISMATCH: ${r.type} ${r.actual}, the manifest has ${r.expected}\n`);
    else if (r.status === 'missing') process.stderr.write(`fusedcp: ${where(r.path)}: missing (in the manifest, not in the tree)\n`);
    else if (r.status === 'failed') process.stderr.write(`fusedcp: ${where(r.path)}: ${reasonOf(r.error)}\n`);
    else if (r.status === 'new' && !opts.quiet) process.stderr.write(`fusedcp: ${where(r.path)}: not in the manifest (new)\n`);
    else if (r.status === 'ok' && opts.verbose) process.stderr.write(`ok '${where(r.path)}'${how}  ${r.type}:${r.actual}\n`);
  }
  if (opts.json) {
    process.stdout.write(jsonOut({
      root: root.toString(),
      generations: history.generations.length,
      brokenGenerations: history.broken,
      files: results.map((r) => ({
        path: r.path, status: r.status,
        ...(r.type ? { type: r.type, expected: r.expected } : {}),
        ...(r.actual ? { actual: r.actual } : {}),
        ...(r.read ? { read: r.read.path } : {}),
        ...(r.error !== undefined ? { error: reasonOf(r.error) } : {}),
      })),
    }));
  }
  const count = (s: CheckResult['status']) => results.filter((r) => r.status === s).length;
  if (opts.verbose && !opts.json) {
    process.stderr.write(`fusedcp: ${displayName(root)}: ${history.generations.length} generation(s); ${count('ok')} ok, ${count('mismatch')} mismatched, ${count('missing')} missing, ${count('new')} new, ${count('failed')} unreadable\n`);
  }
  if (history.broken.length || count('mismatch') || count('missing')) ctx.exit(EXIT_CODES.mismatch);
  else if (count('failed')) ctx.exit(count('ok') ? EXIT_CODES.partial : EXIT_CODES.failure);
}

/** -j beyond this buys nothing: the network mount's own requests in flight are the limit. */
const MAX_JOBS = 256;

/** One line per file on stderr: errors always, fallbacks unless -q, everything with -v. */
function tell(r: FileResult, opts: Opts): void {
  const src = displayName(r.source);
  if (r.status === 'failed') {
    // A copy kept without its attributes, or one that could not be created, is reported as cp does: about the
    // destination.
    if (r.error instanceof PreserveError || r.error instanceof DestinationError) process.stderr.write(`fusedcp: ${displayName(r.destination)}: ${r.error.message}\n`);
    else process.stderr.write(`fusedcp: ${src}: ${reasonOf(r.error)}\n`);
    return;
  }
  const rep = r.report;
  if (opts.verbose) {
    const w = r.write;
    const wrote = w && w.path !== 'network' ? `; written ${w.path}${w.reason ? `: ${w.reason}` : ''}` : '';
    const how = rep ? ` [${rep.path}${rep.reason ? `: ${rep.reason}` : ''}${wrote}]` : r.note ? ` [${r.note}]` : '';
    const sum = r.checksum ? `  ${r.checksum.type}:${r.checksum.value}` : '';
    process.stderr.write(`'${src}' -> '${displayName(r.destination)}'${how}${sum}\n`);
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
    ...(r.checksum ? { checksum: { type: r.checksum.type, value: r.checksum.value } } : {}),
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
