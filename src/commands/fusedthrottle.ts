// fusedthrottle: show and set the per-node and per-volume bandwidth limits a map server enforces through grants.
import { Command, Option } from 'commander';
import { setTimeout as sleep } from 'node:timers/promises';
import { EXIT_CODES, FusedError } from '../errors.js';
import { DEFAULT_KEY_FILE, defaultNode, openSession } from '../client/fuse.js';
import { loadFuses } from '../client/registry.js';
import { ServerRefusal, formatServerAddress, parseServerAddress, type NodeLimits, type Session, type VolumeLimits } from '../client/session.js';
import { isNodeName, isVolumeName, type LimitTarget } from '../protocol/index.js';
import { columnsHelp, renderTable, rowsToJson, selectColumns, type Column } from '../ui/columns.js';
import { humanBytes, jsonOut } from '../ui/messages.js';
import { parseCount } from '../ui/options.js';
import { RATE_HELP, formatRate, parseRate } from '../ui/rates.js';
import type { CommandContext } from './context.js';

/** One line of the table: a node (its own limits) or a volume (its cap, shared by the nodes on it). */
interface Row {
  kind: 'node' | 'volume';
  node: string | null;
  volume: string | null;
  limit: number;
  iops: number | null;
  current: number;
  total: number;
  currentOps: number | null;
  ops: number | null;
  grants: number | null;
  active: number;
  copies: number | null;
}

const nodeRow = (n: NodeLimits): Row => ({
  kind: 'node', node: n.node, volume: n.volumes.length ? n.volumes.join(',') : null, limit: n.rate, iops: n.iops,
  current: n.current, total: n.total, currentOps: n.currentOps, ops: n.ops, grants: n.grants, active: n.active ? 1 : 0,
  copies: n.copies,
});
const volumeRow = (v: VolumeLimits): Row => ({
  kind: 'volume', node: null, volume: v.volume, limit: v.rate, iops: null, current: v.current, total: v.total, currentOps: null, ops: null,
  grants: null, active: v.active, copies: null,
});
const orNull = (n: number | null) => (n === null || n === 0 ? null : n);

const COLUMNS: Column<Row>[] = [
  { id: 'kind', header: 'KIND', help: 'node (its own limits) or volume (a cap shared by the nodes active on it)', align: 'left', text: (r) => r.kind, json: (r) => r.kind },
  { id: 'node', header: 'NODE', help: 'node name (- on a volume line)', align: 'left', text: (r) => r.node ?? '-', json: (r) => r.node },
  { id: 'volume', header: 'VOLUME', help: "a node's volumes in the last second; a volume line's volume", align: 'left', text: (r) => r.volume ?? '-', json: (r) => r.volume },
  { id: 'limit', header: 'LIMIT', help: "a node's rate limit, a volume's cap (bytes/s; JSON null: unlimited)", align: 'right', text: (r) => formatRate(r.limit), json: (r) => orNull(r.limit) },
  { id: 'iops', header: 'IOPS', help: "a node's operations per second limit (JSON null: unlimited)", align: 'right', text: (r) => (r.iops === null ? '-' : r.iops === 0 ? 'unlimited' : String(r.iops)), json: (r) => orNull(r.iops) },
  { id: 'current', header: 'CURRENT', help: 'bytes granted over the last second (bytes/s)', align: 'right', text: (r) => `${humanBytes(r.current)}/s`, json: (r) => r.current },
  { id: 'total', header: 'TOTAL', help: 'bytes granted since the server started', align: 'right', text: (r) => humanBytes(r.total), json: (r) => r.total },
  { id: 'currentOps', header: 'CUR-OPS', help: 'operations granted over the last second (nodes; ops/s)', align: 'right', text: (r) => (r.currentOps === null ? '-' : String(r.currentOps)), json: (r) => r.currentOps },
  { id: 'ops', header: 'OPS', help: 'operations granted since the server started (nodes)', align: 'right', text: (r) => (r.ops === null ? '-' : String(r.ops)), json: (r) => r.ops },
  { id: 'grants', header: 'GRANTS', help: 'grant requests since the server started (nodes)', align: 'right', text: (r) => (r.grants === null ? '-' : String(r.grants)), json: (r) => r.grants },
  { id: 'copies', header: 'COPIES', help: 'a node: its copies (commands, one connection each) that drew grants in the last second', align: 'right', text: (r) => (r.copies === null ? '-' : String(r.copies)), json: (r) => r.copies },
  { id: 'active', header: 'ACTIVE', help: 'a node: drew grants in the last second (JSON 0/1); a volume: nodes drawing on it now', align: 'right', text: (r) => (r.kind === 'node' ? (r.active ? 'yes' : 'no') : String(r.active)), json: (r) => r.active },
];
const DEFAULT_COLUMNS = 'node,volume,limit,iops,current,total,copies,active';

/** `--as`, not `--node`, names this node: set and clear take `--node NAME` for the node whose limits change. */
interface ConnOpts { server?: string; keyFile?: string; as?: string; timeout: string }

/** The options every subcommand has: which map server, as which node. */
function withConnection(cmd: Command): Command {
  return cmd
    .option('--server <HOST:PORT>', 'the map server (default: the server of the first fuse on this node, see fusedctl status)')
    .option('--key-file <FILE>', `this node's key (default: the fuse's, else ${DEFAULT_KEY_FILE})`)
    .option('--as <NODE>', "this node's name, which its key is bound to (default: the fuse's, else the host name)")
    .addOption(new Option('--timeout <SECONDS>', 'how long to wait for the server').default('5'));
}

/** Connects as this node: to --server, else to the server of the first fuse in this node's registry. */
async function connect(opts: ConnOpts): Promise<Session> {
  const timeoutMs = parseCount(opts.timeout, '--timeout', 1, 600) * 1000;
  const fuse = opts.server !== undefined ? undefined : (await loadFuses())[0];
  const server = opts.server ?? fuse?.server;
  if (server === undefined) throw new FusedError('usage', 'no fuse on this node to take the map server from (see fusedctl status)', '--server');
  parseServerAddress(server);
  return openSession(server, opts.keyFile ?? fuse?.keyFile ?? DEFAULT_KEY_FILE, opts.as ?? fuse?.node ?? defaultNode(), timeoutMs);
}

/** Runs FN on a session, closing it after; the server's refusals name it, and one for lack of the admin role is
 *  exit 5 (refused). */
async function withSession<T>(opts: ConnOpts, fn: (s: Session) => Promise<T>): Promise<T> {
  const session = await connect(opts);
  try {
    return await fn(session);
  } catch (err) {
    const subject = `map server ${formatServerAddress(session.address)}`;
    if (err instanceof ServerRefusal && err.code === 'ACCESS') throw new FusedError('refused', err.message.replace(/ \(ACCESS\)$/, ''), subject);
    if (err instanceof ServerRefusal) throw new FusedError('failure', err.message, subject);
    throw err;
  } finally {
    session.close();
  }
}

function target(opts: { node?: string; volume?: string; all?: boolean }, allowed: string): LimitTarget {
  const given = [opts.node !== undefined, opts.volume !== undefined, !!opts.all].filter(Boolean).length;
  if (given !== 1) throw new FusedError('usage', `name exactly one of ${allowed}`);
  if (opts.node !== undefined) {
    if (!isNodeName(opts.node)) throw new FusedError('usage', `'${opts.node}': node names are 1-64 of [A-Za-z0-9._-]`, '--node');
    return { node: opts.node };
  }
  if (opts.volume !== undefined) {
    if (!isVolumeName(opts.volume)) throw new FusedError('usage', `'${opts.volume}': volume names are 1-64 of [A-Za-z0-9._-]`, '--volume');
    return { volume: opts.volume };
  }
  return { all: true };
}

const describeTarget = (t: LimitTarget) => ('all' in t ? 'all limits' : 'node' in t ? `node ${t.node}` : `volume ${t.volume}`);

async function rows(session: Session): Promise<Row[]> {
  const l = await session.limits();
  return [...l.nodes.map(nodeRow), ...l.volumes.map(volumeRow)];
}

export function build(ctx: CommandContext): Command {
  const program = new Command('fusedthrottle')
    .description('Show and set the bandwidth limits a map server enforces on the nodes reading and writing its volumes directly.')
    .version(process.env.npm_package_version ?? '0.1.0')
    .helpCommand(true)
    .addHelpText('after', `\nRATE: ${RATE_HELP}.\n\nExit status: 0 ok, 1 failure, 2 usage, 5 refused (changing limits needs the admin role), 6 server unreachable or authentication failed.\nSee fusedthrottle(1).`);

  withConnection(
    program
      .command('show')
      .description('show every node\'s and volume\'s limits and the rates they draw now')
      .option('--json', 'JSON array for scripts (rates in bytes/s, null: unlimited)')
      .option('--watch', 'refresh once a second until interrupted (with --json: one JSON line each time)')
      .option('-o, --output <COLS>', 'columns to show, comma-separated (see below)')
      .option('-n, --noheadings', 'no header line')
      .addHelpText('after', `\nColumns:\n${columnsHelp(COLUMNS)}`),
  ).action(async (opts: ConnOpts & { json?: boolean; watch?: boolean; output?: string; noheadings?: boolean }) => {
    const cols = selectColumns(COLUMNS, opts.output ?? (opts.json ? undefined : DEFAULT_COLUMNS));
    const render = (r: Row[], compact: boolean) =>
      opts.json
        ? compact ? JSON.stringify(rowsToJson(cols, r)) + '\n' : jsonOut(rowsToJson(cols, r))
        : renderTable(cols, r, { headings: !opts.noheadings }) + '\n';
    await withSession(opts, async (session) => {
      if (!opts.watch) {
        process.stdout.write(render(await rows(session), false));
        return;
      }
      let stop = false;
      const wake = new AbortController();
      const onSignal = () => {
        stop = true;
        wake.abort();
      };
      process.once('SIGINT', onSignal);
      process.once('SIGTERM', onSignal);
      const clear = process.stdout.isTTY && !opts.json ? '\x1b[H\x1b[2J' : '';
      try {
        while (!stop) {
          const r = await rows(session);
          if (stop) break;
          process.stdout.write(clear + render(r, true) + (clear || opts.json ? '' : '\n'));
          await sleep(1000, undefined, { signal: wake.signal }).catch(() => {});
        }
      } finally {
        process.off('SIGINT', onSignal);
        process.off('SIGTERM', onSignal);
      }
      ctx.exit(EXIT_CODES.ok);
    });
  });

  withConnection(
    program
      .command('set')
      .description('set a node\'s rate (and/or operations per second) or a volume\'s cap; 0 removes it (admin role)')
      .argument('[RATE]', 'bytes per second (see below)')
      .addOption(new Option('--node <NAME>', 'the node to limit').conflicts('volume'))
      .addOption(new Option('--volume <NAME>', 'the volume to cap (shared max-min fairly by the nodes active on it)').conflicts('node'))
      .option('--iops <N>', 'also (or only) limit the node to N I/O operations per second; 0 removes it')
      .addHelpText('after', `\nRATE: ${RATE_HELP}.`),
  ).action(async (rateArg: string | undefined, opts: ConnOpts & { node?: string; volume?: string; iops?: string }) => {
    const t = target(opts, '--node or --volume') as { node: string } | { volume: string };
    const rate = rateArg === undefined ? undefined : parseRate(rateArg, 'RATE');
    const iops = opts.iops === undefined ? undefined : parseCount(opts.iops, '--iops', 0, Number.MAX_SAFE_INTEGER);
    if (rate === undefined && iops === undefined) throw new FusedError('usage', 'give a RATE, or --iops N with --node');
    if (iops !== undefined && 'volume' in t) throw new FusedError('usage', 'a volume has a rate cap only; --iops needs --node', '--iops');
    await withSession(opts, (s) => s.setLimit(t, { ...(rate !== undefined ? { rate } : {}), ...(iops !== undefined ? { iops } : {}) }));
    const parts = [rate !== undefined ? `rate ${formatRate(rate)}` : '', iops !== undefined ? `iops ${iops || 'unlimited'}` : ''];
    process.stdout.write(`${describeTarget(t)}: ${parts.filter(Boolean).join(', ')}\n`);
  });

  withConnection(
    program
      .command('clear')
      .description('remove a node\'s limits, a volume\'s cap, or every limit (admin role)')
      .addOption(new Option('--node <NAME>', 'the node whose limits go').conflicts(['volume', 'all']))
      .addOption(new Option('--volume <NAME>', 'the volume whose cap goes').conflicts(['node', 'all']))
      .addOption(new Option('--all', 'every limit and cap').conflicts(['node', 'volume'])),
  ).action(async (opts: ConnOpts & { node?: string; volume?: string; all?: boolean }) => {
    const t = target(opts, '--node, --volume or --all');
    await withSession(opts, (s) => s.clearLimit(t));
    process.stdout.write(`cleared ${describeTarget(t)}\n`);
  });

  return program;
}
