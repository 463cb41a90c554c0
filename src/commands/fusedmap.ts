// fusedmap: a file's extent map as the map server hands it out, like `filefrag -v`, for people and scripts.
import { Command } from 'commander';
import { EXIT_CODES, FusedError, reasonOf } from '../errors.js';
import { argBytes, displayName } from '../ui/argv.js';
import type { CommandContext } from './context.js';
import { FuseClient } from '../client/client.js';
import { Device } from '../client/device.js';
import type { FileMap } from '../client/session.js';
import { verifyMap, type VerifyResult } from '../client/verify.js';
import { flagNames, type MapExtent } from '../volume/extents.js';
import { columnsHelp, renderTable, rowsToJson, selectColumns, type Column } from '../ui/columns.js';
import { formatError, jsonOut } from '../ui/messages.js';

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

interface Opts { blocks?: boolean; json?: boolean; verify?: boolean; noheadings?: boolean; output?: string }

export function build(ctx: CommandContext): Command {
  return new Command('fusedmap')
    .description("Show files' extent maps as the map server hands them out (like filefrag -v).")
    .argument('<FILE...>', 'files on fused mounts')
    .option('-b, --blocks', 'offsets and lengths in file-system blocks instead of bytes')
    .option('--json', 'JSON for scripts (always in bytes)')
    .option('--verify', "read every DATA extent from the local device and compare it with the file's bytes through the mount")
    .option('-n, --noheadings', 'no header lines')
    .option('-o, --output <COLS>', 'columns to show, comma-separated (see below)')
    .addHelpText('after', `\nColumns:\n${columnsHelp(COLUMNS)}\n\nExit status: 0 ok, 1 failure, 2 usage, 3 verification mismatch, 4 some files failed, 6 server unreachable.\nSee fusedmap(1).`)
    .action(async (files: string[], opts: Opts) => {
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

interface MapResult { map: FileMap; volume: string; verify?: VerifyResult }

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
    return { map, volume: fused.fuse.volume, ...(verify ? { verify } : {}) };
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
