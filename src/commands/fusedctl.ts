// fusedctl: run the map server (serve), make node keys (key), fuse and unfuse network mounts, show fuses (status).
import { Command, Option } from 'commander';
import { open } from 'node:fs/promises';
import { EXIT_CODES, FusedError, errnoCode, errorMessage } from '../errors.js';
import { DEFAULT_KEY_FILE, DEFAULT_SECRET_FILE, defaultNode, fuse, fuseStatus, loadSecret, unfuse, type FuseStatus } from '../client/fuse.js';
import { canonicalMountpoint, loadFuses } from '../client/registry.js';
import { formatServerAddress, parseServerAddress } from '../client/session.js';
import { ACCESS_LEVELS, DEFAULT_PORT, LIMITS, isAccess, isNodeName, nodeKey, type Access } from '../protocol/index.js';
import { MapServer } from '../server/server.js';
import { LEASE_BREAK_TIME_FILE, leaseTimeProblem } from '../server/leases.js';
import { DEFAULT_STATE_DIR, LimitStore } from '../server/limits.js';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { RESERVE_DIR } from '../server/allocate.js';
import { GhostListener, parseGhostNodes, type GhostNode } from '../transport/ghost-server.js';
import { openVolume, parseVolumeSpec, type Volume } from '../server/volumes.js';
import type { CommandContext } from './context.js';
import { renderTable, rowsToJson, selectColumns, type Column } from '../ui/columns.js';
import { humanBytes, jsonOut } from '../ui/messages.js';
import { parseCount, parseSize } from '../ui/options.js';

const collect = (v: string, prev: string[]) => [...prev, v];

const DEFAULT_GHOST_CLEANUP_S = 60;
/** Ghost sessions one node may have at once on a volume. */
const GHOST_SESSIONS_PER_NODE = 16;

const ROLE_HELP = ACCESS_LEVELS.join('|');

function parseAccess(value: string, option: string): Access {
  if (!isAccess(value)) throw new FusedError('usage', `expected ${ROLE_HELP}, got '${value}'`, option);
  return value;
}

/** --role NODE=ro|rw|admin, repeatable; a node named twice is a mistake, not a last-one-wins. */
function parseRoles(specs: string[]): Map<string, Access> {
  const roles = new Map<string, Access>();
  for (const spec of specs) {
    const eq = spec.lastIndexOf('=');
    const node = spec.slice(0, Math.max(eq, 0));
    if (eq < 0 || !isNodeName(node)) throw new FusedError('usage', `expected NODE=${ROLE_HELP}, got '${spec}'`, '--role');
    if (roles.has(node)) throw new FusedError('usage', `node ${node} given twice`, '--role');
    roles.set(node, parseAccess(spec.slice(eq + 1), '--role'));
  }
  return roles;
}

/** Write a node key to FILE, mode 0600 before any byte is in it; an existing file only with --force. */
async function writeKeyFile(file: string, key: Buffer, force: boolean): Promise<void> {
  let fh;
  try {
    fh = await open(file, force ? 'w' : 'wx', 0o600);
  } catch (err) {
    if (errnoCode(err) === 'EEXIST') throw new FusedError('failure', 'exists (use --force to overwrite it)', file);
    throw new FusedError('failure', errorMessage(err), file);
  }
  try {
    await fh.chmod(0o600);
    await fh.writeFile(Buffer.concat([key, Buffer.from('\n')]));
  } finally {
    await fh.close();
  }
}

const STATUS_COLUMNS: Column<FuseStatus>[] = [
  { id: 'mountpoint', header: 'MOUNTPOINT', help: 'the fused network mount', align: 'left', text: (r) => r.mountpoint, json: (r) => r.mountpoint },
  { id: 'volume', header: 'VOLUME', help: 'volume name on the server', align: 'left', text: (r) => r.volume, json: (r) => r.volume },
  { id: 'server', header: 'SERVER', help: 'map server HOST:PORT', align: 'left', text: (r) => r.server, json: (r) => r.server },
  { id: 'device', header: 'DEVICE', help: 'local block device', align: 'left', text: (r) => r.device, json: (r) => r.device },
  { id: 'deviceId', header: 'DEVICE-ID', help: "the device's stable identity recorded at fuse (dm UUID or name, loop backing file, WWID, by-id)", align: 'left', text: (r) => r.deviceId ?? '-', json: (r) => r.deviceId ?? null },
  { id: 'uuid', header: 'UUID', help: 'file-system UUID', align: 'left', text: (r) => r.uuid, json: (r) => r.uuid },
  { id: 'fstype', header: 'TYPE', help: 'file-system type', align: 'left', text: (r) => r.fstype, json: (r) => r.fstype },
  { id: 'access', header: 'ACCESS', help: `what the server lets this node do (${ROLE_HELP})`, align: 'left', text: (r) => r.access ?? '-', json: (r) => r.access ?? null },
  { id: 'serverReachable', header: 'SERVER-OK', help: 'map server answers, proves it knows our key and accepts it', align: 'left', text: (r) => yesNo(r.serverReachable), json: (r) => r.serverReachable },
  { id: 'devicePresent', header: 'DEVICE-OK', help: 'device node present', align: 'left', text: (r) => yesNo(r.devicePresent), json: (r) => r.devicePresent },
  { id: 'uuidMatches', header: 'UUID-OK', help: "device superblock still has the volume's UUID", align: 'left', text: (r) => yesNo(r.uuidMatches), json: (r) => r.uuidMatches },
  { id: 'deviceIdMatches', header: 'ID-OK', help: 'device at the recorded path still has the recorded identity (- when none was recorded)', align: 'left', text: (r) => (r.deviceIdMatches === null ? '-' : yesNo(r.deviceIdMatches)), json: (r) => r.deviceIdMatches },
  { id: 'allocation', header: 'ALLOC', help: "how the server allocates for direct writes (reflink, zero-fill, write-zeroes)", align: 'left', text: (r) => r.allocation ?? '-', json: (r) => r.allocation },
  { id: 'reserveBytes', header: 'RESERVE', help: "the server's reserve of zeros for direct writes on the volume", align: 'right', text: (r) => (r.reserveBytes === null ? '-' : humanBytes(r.reserveBytes)), json: (r) => r.reserveBytes },
  { id: 'problem', header: 'PROBLEM', help: 'what is wrong, if anything', align: 'left', text: (r) => r.problem ?? '-', json: (r) => r.problem },
];
const yesNo = (b: boolean) => (b ? 'yes' : 'no');

export function build(ctx: CommandContext): Command {
  const program = new Command('fusedctl')
    .description('Serve volumes to fused clients, and fuse network mounts to their local block devices.')
    .version(process.env.npm_package_version ?? '0.1.0')
    .helpCommand(true)
    .addHelpText('after', `\nExit status: 0 ok, 1 failure, 2 usage, 5 refused for safety, 6 server unreachable or authentication failed.\nSee fusedctl(1).`);

  program
    .command('serve')
    .description('run the map server for one or more mounted volumes (on the node that mounts them)')
    .requiredOption('--volume <NAME=DIR>', 'serve DIR (on a mounted ext2/3/4 or XFS file system) as volume NAME; repeatable', collect, [])
    .option('--listen <HOST:PORT>', 'address to listen on', `0.0.0.0:${DEFAULT_PORT}`)
    .option('--secret-file <FILE>', 'master secret (mode 0600) every node key is derived from', DEFAULT_SECRET_FILE)
    .option('--node <NAME>', 'this server\'s node name', defaultNode())
    .addOption(new Option('--role <NODE=ROLE>', `what NODE may do: ${ROLE_HELP}; repeatable`).argParser(collect).default([], 'none'))
    .option('--default-role <ROLE>', `role of nodes without --role: ${ROLE_HELP}`, 'ro')
    .option('--max-connections <N>', 'authenticated connections served at once', String(LIMITS.maxConnections))
    .option('--max-unauthenticated <N>', 'connections not yet authenticated; past it the oldest is dropped', String(LIMITS.maxUnauthenticated))
    .option('--idle-timeout <SECONDS>', 'close connections idle this long', String(LIMITS.idleTimeoutMs / 1000))
    .option('--max-extents <N>', 'extents one map may have; a file with more gets ERR TOOBIG', String(LIMITS.maxExtentsPerMap))
    .option('--max-leases <N>', 'leases one connection may hold at once; more get ERR LIMIT', String(LIMITS.maxLeasesPerConnection))
    .option('--lease-time <SECONDS>', 'lease time T: a client uses a map at most T seconds after its last answered request', String(LIMITS.leaseTimeMs / 1000))
    .option('--reserve <SIZE>', 'pre-zeroed reserve per volume that direct writes are allocated from (XFS; 0: none)', '1G')
    .option('--state-dir <DIR>', 'where the server keeps its throttle limits (limits.json); made with the first limit set', DEFAULT_STATE_DIR)
    .addOption(new Option('--ghost <NODE=UID[:GID]>', 'also serve NODE through ghost files on the volume (.fused/ghost/NODE, owned by the user its network mount writes as); repeatable').argParser(collect).default([], 'none'))
    .option('--ghost-cleanup <SECONDS>', 'remove a ghost session whose client shows no sign of life this long', String(DEFAULT_GHOST_CLEANUP_S))
    .action(async (opts: { volume: string[]; listen: string; secretFile: string; node: string; role: string[]; defaultRole: string; maxConnections: string; maxUnauthenticated: string; idleTimeout: string; maxExtents: string; maxLeases: string; leaseTime: string; reserve: string; stateDir: string; ghost: string[]; ghostCleanup: string }) => {
      const address = parseServerAddress(opts.listen);
      const roles = parseRoles(opts.role);
      const defaultRole = parseAccess(opts.defaultRole, '--default-role');
      const maxConnections = parseCount(opts.maxConnections, '--max-connections', 1, 100000);
      const maxUnauthenticated = parseCount(opts.maxUnauthenticated, '--max-unauthenticated', 1, 100000);
      const idleTimeoutMs = parseCount(opts.idleTimeout, '--idle-timeout', 1, 86400) * 1000;
      const maxExtents = parseCount(opts.maxExtents, '--max-extents', 1, LIMITS.maxExtentsPerMap);
      const maxLeasesPerConnection = parseCount(opts.maxLeases, '--max-leases', 1, LIMITS.maxLeasesPerConnection);
      const leaseTimeMs = parseCount(opts.leaseTime, '--lease-time', 2, 3600) * 1000;
      const leaseProblem = leaseTimeProblem(leaseTimeMs, () => readFileSync(LEASE_BREAK_TIME_FILE, 'utf8'));
      if (leaseProblem) throw new FusedError('failure', leaseProblem, '--lease-time');
      const reserveBytes = parseSize(opts.reserve, '--reserve');
      let ghostNodes: GhostNode[];
      try {
        ghostNodes = parseGhostNodes(opts.ghost, isNodeName);
      } catch (err) {
        throw new FusedError('usage', errorMessage(err), '--ghost');
      }
      // A live client touches its session at least every T/4: the cleanup must wait longer than that.
      const ghostCleanupMs = parseCount(opts.ghostCleanup, '--ghost-cleanup', Math.ceil(leaseTimeMs / 1000 / 2), 86400) * 1000;
      const specs = opts.volume.map(parseVolumeSpec);
      const names = new Set<string>();
      for (const s of specs) {
        if (names.has(s.name)) throw new FusedError('usage', 'volume name given twice', s.name);
        names.add(s.name);
      }
      const secret = loadSecret(opts.secretFile);
      let limits: LimitStore;
      try {
        limits = await LimitStore.load(opts.stateDir);
      } catch (err) {
        throw new FusedError('failure', errorMessage(err), `--state-dir ${opts.stateDir}`);
      }
      const volumes: Volume[] = [];
      for (const s of specs) volumes.push(await openVolume(s.name, s.dir));
      const log = (line: string) => process.stderr.write(`fusedctl: ${line}\n`);
      const server = new MapServer({
        node: opts.node, secret, volumes, roles, defaultRole, maxConnections, maxUnauthenticated, idleTimeoutMs, maxExtents, maxLeasesPerConnection, leaseTimeMs, reserveBytes, limits, log,
      });
      let bound;
      try {
        await server.maps.start(volumes);
        bound = await server.listen(address.host, address.port);
      } catch (err) {
        throw new FusedError('failure', (err as Error).message, `listen ${opts.listen}`);
      }
      const ghost = ghostNodes.length === 0 ? undefined : new GhostListener(server, { nodes: ghostNodes, cleanupMs: ghostCleanupMs, maxSessionsPerNode: GHOST_SESSIONS_PER_NODE, log });
      try {
        await ghost?.start(volumes.map((v) => join(v.dir, RESERVE_DIR)));
      } catch (err) {
        throw new FusedError('failure', errorMessage(err), '--ghost');
      }
      for (const v of volumes) {
        log(`volume ${v.name}: ${v.dir} (${v.identity.fstype} ${v.identity.uuid} on ${v.device}, block size ${v.identity.blockSize})${v.networkOnly ? `; network only: ${v.networkOnly}` : ''}`);
      }
      const named = [...roles].map(([n, r]) => `${n}=${r}`).join(', ');
      log(`roles: ${named ? `${named}; ` : ''}any other node ${defaultRole}`);
      log(`limits: ${limits.file} (${limits.limitedNodes().length} node limit(s), ${limits.cappedVolumes().length} volume cap(s))`);
      log(`listening on ${formatServerAddress({ host: bound.address, port: bound.port })}; lease time ${leaseTimeMs / 1000} s`);
      await new Promise<void>((resolve) => {
        const stop = (sig: string) => {
          log(`${sig}: shutting down`);
          void server.close().then(() => ghost?.close()).then(resolve);
        };
        process.once('SIGTERM', () => stop('SIGTERM'));
        process.once('SIGINT', () => stop('SIGINT'));
      });
      ctx.exit(EXIT_CODES.ok);
    });

  program
    .command('fuse')
    .description('fuse a network mount of a served volume to this node\'s own block device for that volume')
    .argument('<MOUNTPOINT>', 'where the volume is mounted over the network on this node')
    .option('--server <HOST:PORT>', 'the volume\'s map server (TCP transport)')
    .addOption(new Option('--transport <KIND>', 'how to reach the map server: tcp (--server), or ghost (files on the volume, through the mount)').choices(['tcp', 'ghost']).default('tcp'))
    .option('--volume <NAME>', 'volume name on the server (needed if it serves several)')
    .option('--device <DEV>', 'use this block device (default: search by file-system UUID)')
    .option('--key-file <FILE>', 'this node\'s key (fusedctl key NODE on the map server; mode 0600)', DEFAULT_KEY_FILE)
    .option('--node <NAME>', 'this node\'s name (its key is bound to it)', defaultNode())
    .option('--json', 'print the fuse record as JSON')
    .action(async (mountpoint: string, opts: { server?: string; transport: 'tcp' | 'ghost'; volume?: string; device?: string; keyFile: string; node: string; json?: boolean }) => {
      let server: string;
      if (opts.transport === 'ghost') {
        if (opts.server !== undefined) throw new FusedError('usage', 'the ghost transport finds the server through the mount', '--server');
        server = formatServerAddress({ host: 'ghost', port: 0, ghost: await canonicalMountpoint(mountpoint) });
      } else {
        if (opts.server === undefined) throw new FusedError('usage', 'required (or --transport ghost)', '--server');
        server = opts.server;
      }
      parseServerAddress(server);
      const record = await fuse(mountpoint, {
        server,
        keyFile: opts.keyFile,
        node: opts.node,
        ...(opts.volume ? { volume: opts.volume } : {}),
        ...(opts.device ? { device: opts.device } : {}),
      });
      process.stdout.write(
        opts.json
          ? jsonOut(record)
          : `fused ${record.mountpoint}: volume ${record.volume} (${record.fstype} ${record.uuid}) on ${record.device} via ${record.server}, access ${record.access ?? 'ro'}\n`,
      );
    });

  program
    .command('key')
    .description('print (or write) NODE\'s key, derived from the master secret; run it on the map server')
    .argument('<NODE>', 'the node name the key is for (its --node)')
    .option('--secret-file <FILE>', 'the map server\'s master secret', DEFAULT_SECRET_FILE)
    .option('-o, --output <FILE>', 'write the key to FILE (mode 0600) instead of stdout')
    .option('-f, --force', 'overwrite FILE if it exists')
    .action(async (node: string, opts: { secretFile: string; output?: string; force?: boolean }) => {
      if (!isNodeName(node)) throw new FusedError('usage', 'node names are 1-64 of [A-Za-z0-9._-]', node);
      if (opts.force && !opts.output) throw new FusedError('usage', 'needs -o FILE', '--force');
      const key = nodeKey(loadSecret(opts.secretFile), node);
      if (opts.output) await writeKeyFile(opts.output, key, !!opts.force);
      else process.stdout.write(`${key.toString('ascii')}\n`);
    });

  program
    .command('unfuse')
    .description('forget a fuse (the network mount itself is left alone)')
    .argument('<MOUNTPOINT>')
    .action(async (mountpoint: string) => {
      const r = await unfuse(mountpoint);
      process.stdout.write(`unfused ${r.mountpoint}\n`);
    });

  program
    .command('status')
    .description('show fuses, and check each: server reachable, device present, UUID and device identity still matching')
    .option('--json', 'JSON array for scripts')
    .option('-o, --output <COLS>', `columns to show (${STATUS_COLUMNS.map((c) => c.id).join(',')})`)
    .option('-n, --noheadings', 'no header line')
    .addOption(new Option('--timeout <SECONDS>', 'how long to wait for each server').default('2'))
    .action(async (opts: { json?: boolean; output?: string; noheadings?: boolean; timeout: string }) => {
      const cols = selectColumns(STATUS_COLUMNS, opts.output ?? (opts.json ? undefined : 'mountpoint,volume,server,device,deviceId,access,serverReachable,devicePresent,uuidMatches,deviceIdMatches'));
      const timeoutMs = parseCount(opts.timeout, '--timeout', 1, 600) * 1000;
      const rows = await Promise.all((await loadFuses()).map((r) => fuseStatus(r, timeoutMs)));
      if (opts.json) {
        process.stdout.write(jsonOut(opts.output ? rowsToJson(cols, rows) : rows));
      } else if (rows.length === 0) {
        if (!opts.noheadings) process.stdout.write('no fuses\n');
      } else {
        process.stdout.write(renderTable(cols, rows, { headings: !opts.noheadings }) + '\n');
      }
    });

  return program;
}
