// fusedmap: a file's extent map as the map server hands it out, like `filefrag -v`, for people and scripts.
import { Command, Option } from 'commander';
import { lstat, readdir, writeFile } from 'node:fs/promises';
import type { Dirent } from 'node:fs';
import { EXIT_CODES, FusedError, reasonOf } from '../errors.js';
import { argBytes, displayName } from '../ui/argv.js';
import type { CommandContext } from './context.js';
import { FuseClient } from '../client/client.js';
import { Device } from '../client/device.js';
import type { FileMap } from '../client/session.js';
import type { FuseRecord } from '../client/registry.js';
import { verifyMap, type VerifyResult } from '../client/verify.js';
import { flagNames, type MapExtent } from '../volume/extents.js';
import { columnsHelp, renderTable, rowsToJson, selectColumns, type Column } from '../ui/columns.js';
import { formatError, humanBytes, jsonOut } from '../ui/messages.js';
import { extentSvg } from '../ui/svg.js';
import { summarize, totalOf, type MapSummary } from '../volume/summary.js';
import { joinBytes } from '../client/paths.js';

interface Row { index: number; e: MapExtent; blockSize: number; blocks: boolean }

const unit = (r: Row, bytes: number) => (r.blocks ? Math.floor(bytes / r.blockSize) : bytes);
const lengthIn = (r: Row) => (r.blocks ? Math.ceil(r.e.length / r.blockSize) : r.e.length);
const hasPhysical = (e: MapExtent) => e.state === 'DATA' || e.state === 'ZERO' || (e.state === 'NETWORK' && e.physical > 0);

const COLUMNS: Column<Row>[] = [
  { id: 'index', header: 'EXT', help: 'extent number, from 0', align: 'right', text: (r) => String(r.index), json: (r) => r.index },
  { id: 'logical', header: 'LOGICAL', help: 'offset in the file (bytes, or blocks with -b)', align: 'right', text: (r) => String(unit(r, r.e.logical)), json: (r) => r.e.logical },
  { id: 'physical', header: 'PHYSICAL', help: 'offset on the device (bytes, or blocks with -b); - for holes', align: 'right', text: (r) => (hasPhysical(r.e) ? String(unit(r, r.e.physical)) : '-'), json: (r) => (hasPhysical(r.e) ? r.e.physical : null) },
  { id: 'length', header: 'LENGTH', help: 'length (bytes, or blocks with -b, a partial last block counting as one)', align: 'right', text: (r) => String(lengthIn(r)), json: (r) => r.e.length },
  { id: 'state', header: 'STATE', help: 'DATA, ZERO (unwritten), HOLE or NETWORK (read through the mount)', align: 'left', text: (r) => r.e.state, json: (r) => r.e.state },
  { id: 'flags', header: 'FLAGS', help: 'FIEMAP flags of the extent', align: 'left', text: (r) => flagNames(r.e.flags).join(',') || '-', json: (r) => flagNames(r.e.flags) },
  { id: 'rawFlags', header: 'RAWFLAGS', help: 'FIEMAP flags as a number', align: 'right', text: (r) => `0x${r.e.flags.toString(16)}`, json: (r) => r.e.flags },
];
const DEFAULT_COLUMNS = 'index,logical,physical,length,state,flags';

interface SummaryRow { name: string; s: MapSummary; human: boolean }
const amount = (r: SummaryRow, n: number) => (r.human ? humanBytes(n) : String(n));

/** fusedmap --summary: one row per file and a total. */
const SUMMARY_COLUMNS: Column<SummaryRow>[] = [
  { id: 'file', header: 'FILE', help: 'the file (or "total")', align: 'left', text: (r) => displayName(r.name), json: (r) => r.name },
  { id: 'size', header: 'SIZE', help: 'file size', align: 'right', text: (r) => amount(r, r.s.size), json: (r) => r.s.size },
  { id: 'extents', header: 'EXTENTS', help: 'pieces of the map as the server hands it out (every state)', align: 'right', text: (r) => String(r.s.extents), json: (r) => r.s.extents },
  { id: 'fragments', header: 'FRAGS', help: 'runs of blocks on the device (contiguous extents counted once, as filefrag does)', align: 'right', text: (r) => String(r.s.fragments), json: (r) => r.s.fragments },
  { id: 'perGiB', header: 'FRAGS/GiB', help: 'fragments per GiB with a device address (fragmentation; 1 or less is one piece)', align: 'right', text: (r) => r.s.fragmentsPerGiB.toFixed(2), json: (r) => r.s.fragmentsPerGiB },
  { id: 'largest', header: 'LARGEST', help: 'largest extent with a device address', align: 'right', text: (r) => amount(r, r.s.largest), json: (r) => r.s.largest },
  { id: 'average', header: 'AVERAGE', help: 'average extent with a device address', align: 'right', text: (r) => amount(r, r.s.average), json: (r) => r.s.average },
  { id: 'data', header: 'DATA', help: 'bytes read from the device', align: 'right', text: (r) => amount(r, r.s.bytes.DATA), json: (r) => r.s.bytes.DATA },
  { id: 'zero', header: 'ZERO', help: 'bytes allocated but unwritten (zeros, never read)', align: 'right', text: (r) => amount(r, r.s.bytes.ZERO), json: (r) => r.s.bytes.ZERO },
  { id: 'hole', header: 'HOLE', help: 'bytes without blocks', align: 'right', text: (r) => amount(r, r.s.bytes.HOLE), json: (r) => r.s.bytes.HOLE },
  { id: 'network', header: 'NETWORK', help: 'bytes read through the mount', align: 'right', text: (r) => amount(r, r.s.bytes.NETWORK), json: (r) => r.s.bytes.NETWORK },
];

interface Opts { blocks?: boolean; json?: boolean; verify?: boolean; noheadings?: boolean; output?: string; summary?: boolean; svg?: string; bytes?: boolean }

export function build(ctx: CommandContext): Command {
  return new Command('fusedmap')
    .description("Show files' extent maps as the map server hands them out (like filefrag -v).")
    .argument('<FILE...>', 'files on fused mounts (and, with --summary, directories: every file under them)')
    .option('-b, --blocks', 'offsets and lengths in file-system blocks instead of bytes')
    .option('--json', 'JSON for scripts (always in bytes)')
    .option('--verify', "read every DATA extent from the local device and compare it with the file's bytes through the mount")
    .option('-n, --noheadings', 'no header lines')
    .option('-o, --output <COLS>', 'columns to show, comma-separated (see below)')
    .addOption(new Option('--summary', 'per file and in total: extents, fragments, extent sizes, bytes per state (no extent list)').conflicts(['verify', 'svg', 'blocks']))
    .option('--bytes', 'with --summary: sizes in bytes rather than KiB, MiB, GiB')
    .addOption(new Option('--svg <OUT>', "draw where the file's extents lie on the device into OUT, an SVG file (- for standard output); one FILE").conflicts(['verify', 'json']))
    .addHelpText('after', `\nColumns:\n${columnsHelp(COLUMNS)}\n\nColumns of --summary:\n${columnsHelp(SUMMARY_COLUMNS)}\n\nExit status: 0 ok, 1 failure, 2 usage, 3 verification mismatch, 4 some files failed, 6 server unreachable.\nSee fusedmap(1).`)
    .action(async (files: string[], opts: Opts) => {
      if (opts.summary) return summary(ctx, files, opts);
      if (opts.svg !== undefined) return drawing(files, opts.svg);
      const cols = selectColumns(COLUMNS, opts.output ?? DEFAULT_COLUMNS);
      const client = await FuseClient.load();
      const results: Record<string, unknown>[] = [];
      let failed = 0;
      let mismatched = 0;
      let lastError: unknown;
      try {
        for (const [i, arg] of files.entries()) {
          const file = argBytes(arg);
          try {
            const r = await mapOne(client, file, opts);
            if (r.verify && !r.verify.ok) mismatched++;
            if (opts.json) {
              results.push(jsonFor(file, r, cols, opts));
            } else {
              process.stdout.write((i > 0 ? '\n' : '') + textFor(file, r, cols, opts));
            }
          } catch (err) {
            failed++;
            lastError = err;
            const kind = err instanceof FusedError ? err.kind : 'failure';
            process.stderr.write(formatError('fusedmap', new FusedError(kind, reasonOf(err), displayName(file))) + '\n');
          }
        }
      } finally {
        await client.close();
      }
      if (opts.json) process.stdout.write(jsonOut(results));
      if (failed === files.length) {
        ctx.exit(lastError instanceof FusedError ? EXIT_CODES[lastError.kind] : EXIT_CODES.failure);
      } else if (mismatched) ctx.exit(EXIT_CODES.mismatch);
      else if (failed) ctx.exit(EXIT_CODES.partial);
    });
}

interface MapResult { map: FileMap; volume: string; fuse: FuseRecord; verify?: VerifyResult }

async function mapOne(client: FuseClient, file: Buffer, opts: Opts): Promise<MapResult> {
  const fused = await client.resolve(file);
  if (!fused) throw new FusedError('failure', 'not on a fused mount (see fusedctl status)');
  const { map, session } = await client.map(fused);
  let lost: string | null = null;
  const onRecall = (lease: string) => {
    if (lease === map.lease) lost = 'the map was recalled: the file was opened for writing on the server';
  };
  const onClose = () => {
    lost ??= 'the map server connection was lost';
  };
  session.on('recall', onRecall);
  session.on('close', onClose);
  const stopPings = session.keepAlive();
  try {
    let verify: VerifyResult | undefined;
    if (opts.verify) {
      if (session.isRecalled(map.lease)) onRecall(map.lease);
      const device = await Device.open(fused.fuse.device, fused.fuse.uuid);
      try {
        // A diagnostic of the recorded device (it compares, never hands device bytes out as the file's), still
        // bounded by the lease: it stops at a recall, a lost server or the lease deadline.
        verify = await verifyMap(device, fused.abs, map, () => lost ?? (session.leaseValid(map.lease) ? null : 'the lease expired (no answer from the map server)'));
      } finally {
        await device.close();
      }
      for (const m of verify.mismatches) {
        process.stderr.write(`fusedmap: ${displayName(file)}: extent ${m.extent}: device and mount differ at file offset ${m.offset}\n`);
      }
    }
    return { map, volume: fused.fuse.volume, fuse: fused.fuse, ...(verify ? { verify } : {}) };
  } finally {
    stopPings();
    session.off('recall', onRecall);
    session.off('close', onClose);
    await session.release(map.lease, lost ? 'RETURN' : 'RELEASE').catch(() => {});
  }
}

function rowsOf(r: MapResult, opts: Opts): Row[] {
  return r.map.extents.map((e, index) => ({ index, e, blockSize: r.map.blockSize, blocks: !!opts.blocks }));
}

function textFor(file: Buffer, r: MapResult, cols: Column<Row>[], opts: Opts): string {
  const m = r.map;
  let out = '';
  if (!opts.noheadings) {
    out += `${displayName(file)}: ${m.size} bytes, ${m.extents.length} extent${m.extents.length === 1 ? '' : 's'}, volume ${r.volume}, block size ${m.blockSize}\n`;
    if (m.networkReason) out += `all through the network: ${m.networkReason}\n`;
  }
  const table = renderTable(cols, rowsOf(r, opts), { headings: !opts.noheadings });
  if (table) out += table + '\n';
  if (r.verify) out += r.verify.ok ? `verify: ok, ${r.verify.checkedBytes} bytes of DATA extents match the mount\n` : `verify: MISMATCH in ${r.verify.mismatches.length} extent(s)\n`;
  return out;
}

function jsonFor(file: Buffer, r: MapResult, cols: Column<Row>[], opts: Opts): Record<string, unknown> {
  const m = r.map;
  return {
    file: file.toString(),
    volume: r.volume,
    size: m.size,
    blockSize: m.blockSize,
    change: m.change,
    network: m.networkReason ?? null,
    extents: rowsToJson(opts.output ? cols : COLUMNS, rowsOf({ ...r }, { ...opts, blocks: false })),
    ...(r.verify ? { verify: { ok: r.verify.ok, checkedBytes: r.verify.checkedBytes, mismatches: r.verify.mismatches.length } } : {}),
  };
}

/** fusedmap --summary FILE|DIR...: each file's map summed up, then the total. */
async function summary(ctx: CommandContext, args: string[], opts: Opts): Promise<void> {
  const cols = selectColumns(SUMMARY_COLUMNS, opts.output);
  const client = await FuseClient.load();
  const rows: SummaryRow[] = [];
  let failed = 0;
  let tried = 0;
  let lastError: unknown;
  const fail = (file: Buffer, err: unknown) => {
    failed++;
    lastError = err;
    const kind = err instanceof FusedError ? err.kind : 'failure';
    process.stderr.write(formatError('fusedmap', new FusedError(kind, reasonOf(err), displayName(file))) + '\n');
  };
  try {
    for (const arg of args) {
      for await (const file of filesOf(argBytes(arg), fail)) {
        tried++;
        try {
          const r = await mapOne(client, file, {});
          rows.push({ name: file.toString(), s: summarize(r.map.size, r.map.extents), human: !opts.bytes });
        } catch (err) {
          fail(file, err);
        }
      }
    }
  } finally {
    await client.close();
  }
  const total: SummaryRow = { name: 'total', s: totalOf(rows.map((r) => r.s)), human: !opts.bytes };
  if (opts.json) process.stdout.write(jsonOut({ files: rowsToJson(cols, rows), total: { ...rowsToJson(cols, [total])[0], files: total.s.files } }));
  else {
    const table = renderTable(cols, [...rows, total], { headings: !opts.noheadings });
    if (table) process.stdout.write(table + '\n');
  }
  if (failed && failed >= tried) ctx.exit(lastError instanceof FusedError ? EXIT_CODES[lastError.kind] : EXIT_CODES.failure);
  else if (failed) ctx.exit(EXIT_CODES.partial);
}

/** A file argument as it is, a directory's regular files (recursively, in name order); others are reported. */
async function* filesOf(path: Buffer, fail: (file: Buffer, err: unknown) => void): AsyncGenerator<Buffer> {
  const st = await lstat(path).catch((err: unknown) => fail(path, err));
  if (!st) return;
  if (st.isFile()) {
    yield path;
    return;
  }
  if (!st.isDirectory()) return fail(path, new FusedError('failure', 'not a regular file or directory'));
  let entries: Dirent<Buffer>[];
  try {
    entries = (await readdir(path, { encoding: 'buffer', withFileTypes: true })) as unknown as Dirent<Buffer>[];
  } catch (err) {
    return fail(path, err);
  }
  entries.sort((a, b) => Buffer.compare(a.name, b.name));
  for (const e of entries) {
    if (e.isDirectory() || e.isFile()) yield* filesOf(joinBytes(path, e.name), fail);
  }
}

/** fusedmap --svg OUT FILE: the drawing of one file's extents on its device. */
async function drawing(files: string[], out: string): Promise<void> {
  if (files.length !== 1) throw new FusedError('usage', 'draws one FILE', '--svg');
  const file = argBytes(files[0]!);
  const client = await FuseClient.load();
  let svg: string;
  try {
    const r = await mapOne(client, file, {}).catch((err: unknown) => {
      throw err instanceof FusedError && !err.subject ? new FusedError(err.kind, err.message, displayName(file)) : err;
    });
    // The bar is the device's size; without access to the device, the volume's extent as far as this map shows.
    let deviceSize: number;
    let deviceLabel: string;
    try {
      const device = await Device.open(r.fuse.device, r.fuse.uuid);
      deviceSize = device.info.size;
      deviceLabel = r.fuse.device;
      await device.close();
    } catch (err) {
      deviceSize = Math.max(1, ...r.map.extents.map((e) => e.physical + e.length));
      deviceLabel = `device not readable here (${reasonOf(err)}): bar ends at the last extent`;
    }
    svg = extentSvg({ name: displayName(file), size: r.map.size, deviceSize, deviceLabel, extents: r.map.extents });
  } finally {
    await client.close();
  }
  if (out === '-') process.stdout.write(svg);
  else await writeFile(out, svg);
}
