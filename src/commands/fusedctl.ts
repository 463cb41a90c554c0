// fusedctl: run the map server (serve), make node keys (key), fuse and unfuse network mounts, show fuses (status).
import { Command, Option } from 'commander';
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { open } from 'node:fs/promises';
import { EXIT_CODES, FusedError, errnoCode, errorMessage, reasonOf } from '../errors.js';
import { DEFAULT_KEY_FILE, DEFAULT_SECRET_FILE, defaultNode, fuse, fuseStatus, loadSecret, unfuse, type FuseStatus } from '../client/fuse.js';
import { canonicalMountpoint, loadFuses } from '../client/registry.js';
import { formatServerAddress, parseServerAddress, type ServerAddress } from '../client/session.js';
import { isNodeName, nodeKey } from '../protocol/index.js';
import { GLOBAL_KEYS, readConfig, type GlobalKey } from '../server/config.js';
import { LEASE_BREAK_TIME_FILE, leaseTimeProblem } from '../server/leases.js';
import { LimitStore } from '../server/limits.js';
import { ServerLog } from '../server/log.js';
import { ServerMetrics, serveMetrics } from '../server/metrics.js';
import { MapServer, type ServerEvent } from '../server/server.js';
import { openVolume, type Volume } from '../server/volumes.js';
import { RESERVE_DIR } from '../server/allocate.js';
import { GhostListener, parseGhostNodes, type GhostNode } from '../transport/ghost-server.js';
import type { CommandContext } from './context.js';
import { registerGuard } from './guard.js';
import { registerDoctor } from './doctor.js';
import { unguardedWarning } from '../client/guard.js';
import { completionCommand } from './completion.js';
import { ROLE_HELP, SERVE_DEFAULTS, resolveServe, type ServeArgs, type ServeConfig } from './serve-config.js';
import { renderTable, rowsToJson, selectColumns, type Column } from '../ui/columns.js';
import { formatError, humanBytes, jsonOut } from '../ui/messages.js';
import { parseCount } from '../ui/options.js';

const collect = (v: string, prev: string[]) => [...prev, v];

const DEFAULT_GHOST_CLEANUP_S = 60;
/** Ghost sessions one node may have at once on a volume. */
const GHOST_SESSIONS_PER_NODE = 16;

/** Open a volume to serve; a problem with one from the configuration file names its FILE:LINE. */
async function openServedVolume(v: ServeConfig['volumes'][number]): Promise<Volume> {
  try {
    return await openVolume(v.name, v.dir);
  } catch (err) {
    if (err instanceof FusedError && !v.where.startsWith('--')) throw new FusedError(err.kind, `volume ${v.name}: ${reasonOf(err)}`, v.where);
    throw err;
  }
}

/** Under systemd (Type=notify): say the server is ready. systemd-notify, run by root, sends it as this process, so
 *  the message is ours even after it exits (NotifyAccess=all covers it if it cannot). */
function notifyReady(status: string): void {
  if (!process.env.NOTIFY_SOCKET) return;
  const child = spawn('systemd-notify', ['--ready', `--pid=${process.pid}`, `--status=${status}`], { stdio: 'ignore' });
  child.on('error', () => {});
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
  { id: 'allocation', header: 'ALLOC', help: "how the server allocates for direct writes (reflink, pool, zero-fill, write-zeroes)", align: 'left', text: (r) => r.allocation ?? '-', json: (r) => r.allocation },
  { id: 'reserveBytes', header: 'RESERVE', help: "the server's reserve of zeros for direct writes on the volume", align: 'right', text: (r) => (r.reserveBytes === null ? '-' : humanBytes(r.reserveBytes)), json: (r) => r.reserveBytes },
  { id: 'guarded', header: 'GUARD', help: "a udev rule keeps this node's OS from mounting the volume (fusedctl guard)", align: 'left', text: (r) => yesNo(r.guarded), json: (r) => r.guarded },
  { id: 'problem', header: 'PROBLEM', help: 'what is wrong, if anything', align: 'left', text: (r) => r.problem ?? '-', json: (r) => r.problem },
];
const yesNo = (b: boolean) => (b ? 'yes' : 'no');

export function build(ctx: CommandContext): Command {
  const program = new Command('fusedctl')
    .description('Serve volumes to fused clients, and fuse network mounts to their local block devices.')
    .version(process.env.npm_package_version ?? '0.1.0')
    .helpCommand(true)
    .addHelpText('after', `\nExit status: 0 ok, 1 failure, 2 usage, 4 doctor found warnings only, 5 refused for safety, 6 server unreachable or authentication failed.\nSee fusedctl(1).`);
  program.addCommand(completionCommand());

  const serveOption = (key: GlobalKey, arg: string, help: string) => {
    const def = SERVE_DEFAULTS[key];
    return new Option(`--${key} <${arg}>`, `${help}${def === undefined ? '' : ` (default: ${def})`}`);
  };
  program
    .command('serve')
    .description('run the map server for one or more mounted volumes (on the node that mounts them)')
    .option('--config <FILE>', 'read the settings from FILE (fused.conf(5)); options given here override it; SIGHUP reloads it')
    .option('--volume <NAME=DIR>', 'serve DIR (on a mounted ext2/3/4 or XFS file system) as volume NAME; repeatable', collect, [])
    .addOption(serveOption('listen', 'HOST:PORT', 'address to listen on'))
    .addOption(serveOption('secret-file', 'FILE', 'master secret (mode 0600) every node key is derived from'))
    .addOption(serveOption('node', 'NAME', "this server's node name"))
    .addOption(new Option('--role <NODE=ROLE>', `what NODE may do: ${ROLE_HELP}; repeatable`).argParser(collect).default([], 'none'))
    .addOption(serveOption('default-role', 'ROLE', `role of nodes without --role: ${ROLE_HELP}`))
    .addOption(serveOption('max-connections', 'N', 'authenticated connections served at once'))
    .addOption(serveOption('max-unauthenticated', 'N', 'connections not yet authenticated; past it the oldest is dropped'))
    .addOption(serveOption('idle-timeout', 'SECONDS', 'close connections idle this long'))
    .addOption(serveOption('max-extents', 'N', 'extents one map may have; a file with more gets ERR TOOBIG'))
    .addOption(serveOption('max-leases', 'N', 'leases one connection may hold at once; more get ERR LIMIT'))
    .addOption(serveOption('lease-time', 'SECONDS', 'lease time T: a client uses a map at most T seconds after its last answered request'))
    .addOption(serveOption('reserve', 'SIZE', 'pre-zeroed reserve per volume that direct writes are allocated from (XFS: cloned; ext4: a pool of files swapped into place; 0: none)'))
    .addOption(serveOption('state-dir', 'DIR', 'where the server keeps its throttle limits (limits.json); made with the first limit set'))
    .addOption(serveOption('metrics', 'HOST:PORT', 'serve Prometheus metrics on http://HOST:PORT/metrics'))
    .addOption(serveOption('log-format', 'FORMAT', 'log lines on stderr as text or json (one object per line)'))
    .addOption(new Option('--ghost <NODE=UID[:GID]>', 'also serve NODE through ghost files on the volume (.fused/ghost/NODE, owned by the user its network mount writes as); repeatable').argParser(collect).default([], 'none'))
    .option('--ghost-cleanup <SECONDS>', 'remove a ghost session whose client shows no sign of life this long', String(DEFAULT_GHOST_CLEANUP_S))
    .action(async (opts: { config?: string; volume: string[]; role: string[]; ghost: string[]; ghostCleanup: string } & Record<string, string | string[] | undefined>) => {
      const given: ServeArgs['given'] = {};
      for (const key of GLOBAL_KEYS) {
        const v = opts[key.replace(/-(.)/g, (_, c: string) => c.toUpperCase())];
        if (typeof v === 'string') given[key] = v;
      }
      const args: ServeArgs = { given, volumes: opts.volume, roles: opts.role };
      const configFile = opts.config;
      let cfg: ServeConfig;
      try {
        cfg = resolveServe(args, configFile === undefined ? undefined : readConfig(configFile));
      } catch (err) {
        // A mistake in the file is not a misuse of the command line: one line naming FILE:LINE, no "Try --help".
        if (configFile === undefined || !(err instanceof FusedError) || !err.subject?.startsWith(configFile)) throw err;
        process.stderr.write(`${formatError(ctx.name, err)}\n`);
        return ctx.exit(EXIT_CODES.usage);
      }
      const leaseProblem = leaseTimeProblem(cfg.leaseTimeMs, () => readFileSync(LEASE_BREAK_TIME_FILE, 'utf8'));
      if (leaseProblem) throw new FusedError('failure', leaseProblem, '--lease-time');
      let ghostNodes: GhostNode[];
      try {
        ghostNodes = parseGhostNodes(opts.ghost, isNodeName);
      } catch (err) {
        throw new FusedError('usage', errorMessage(err), '--ghost');
      }
      // A live client touches its session at least every T/4: the cleanup must wait longer than that.
      const ghostCleanupMs = parseCount(opts.ghostCleanup, '--ghost-cleanup', Math.ceil(cfg.leaseTimeMs / 1000 / 2), 86400) * 1000;
      let secret = loadSecret(cfg.secretFile);
      let limits: LimitStore;
      try {
        limits = await LimitStore.load(cfg.stateDir);
      } catch (err) {
        throw new FusedError('failure', errorMessage(err), `--state-dir ${cfg.stateDir}`);
      }
      const volumes: Volume[] = [];
      for (const v of cfg.volumes) volumes.push(await openServedVolume(v));
      const logger = new ServerLog(cfg.logFormat);
      let server: MapServer | undefined;
      const metrics = cfg.metrics && new ServerMetrics({
        leasesHeld: () => server?.leases.size ?? 0,
        connections: () => server?.connectionCounts() ?? { authenticated: 0, unauthenticated: 0 },
      });
      const events = (e: ServerEvent) => {
        logger.event(e);
        metrics?.observe(e);
      };
      server = new MapServer({
        node: cfg.node, secret, volumes, roles: cfg.roles, defaultRole: cfg.defaultRole, maxConnections: cfg.maxConnections,
        maxUnauthenticated: cfg.maxUnauthenticated, idleTimeoutMs: cfg.idleTimeoutMs, maxExtents: cfg.maxExtents,
        maxLeasesPerConnection: cfg.maxLeasesPerConnection, leaseTimeMs: cfg.leaseTimeMs, reserveBytes: cfg.reserveBytes, limits,
        log: (line) => logger.line(line), events,
      });
      const running = server;
      let bound;
      let metricsEndpoint: Awaited<ReturnType<typeof serveMetrics>> | undefined;
      try {
        await running.maps.start(volumes);
        bound = await running.listen(cfg.listen.host, cfg.listen.port);
      } catch (err) {
        throw new FusedError('failure', (err as Error).message, `listen ${formatServerAddress(cfg.listen)}`);
      }
      const ghost = ghostNodes.length === 0 ? undefined : new GhostListener(running, { nodes: ghostNodes, cleanupMs: ghostCleanupMs, maxSessionsPerNode: GHOST_SESSIONS_PER_NODE, log: (line) => logger.line(line, 'ghost') });
      try {
        await ghost?.start(volumes.map((v) => join(v.dir, RESERVE_DIR)));
      } catch (err) {
        await running.close();
        throw new FusedError('failure', errorMessage(err), '--ghost');
      }
      if (metrics && cfg.metrics) {
        try {
          metricsEndpoint = await serveMetrics(metrics.registry, cfg.metrics.host, cfg.metrics.port);
        } catch (err) {
          await running.close();
          throw new FusedError('failure', (err as Error).message, `metrics ${formatServerAddress(cfg.metrics)}`);
        }
      }
      const describeVolume = (v: Volume) =>
        `volume ${v.name}: ${v.dir} (${v.identity.fstype} ${v.identity.uuid} on ${v.device}, block size ${v.identity.blockSize})${v.networkOnly ? `; network only: ${v.networkOnly}` : ''}`;
      for (const v of volumes) logger.line(describeVolume(v), 'volume', 'info', { volume: v.name });
      const describeRoles = (c: ServeConfig) => {
        const named = [...c.roles].map(([n, r]) => `${n}=${r}`).join(', ');
        return `roles: ${named ? `${named}; ` : ''}any other node ${c.defaultRole}`;
      };
      logger.line(describeRoles(cfg), 'roles');
      logger.line(`limits: ${limits.file} (${limits.limitedNodes().length} node limit(s), ${limits.cappedVolumes().length} volume cap(s))`, 'limits');
      if (metricsEndpoint) logger.line(`metrics on http://${formatServerAddress({ host: metricsEndpoint.address.address, port: metricsEndpoint.address.port })}/metrics`, 'metrics');
      const address = formatServerAddress({ host: bound.address, port: bound.port });
      logger.line(`listening on ${address}; lease time ${cfg.leaseTimeMs / 1000} s`, 'listening', 'info', { address });
      notifyReady(`serving ${volumes.length} volume(s) on ${address}`);

      /** SIGHUP: read the file again; apply it whole, or keep the running configuration whole. */
      const reload = async (): Promise<void> => {
        const refuse = (reason: string) => events({ event: 'reload', result: 'refused', reason: `${reason}; the running configuration stays` });
        if (configFile === undefined) return refuse('no --config file to read');
        let next: ServeConfig;
        let nextSecret: Buffer;
        const added: Volume[] = [];
        const current = new Set(running.volumeNames());
        try {
          next = resolveServe(args, readConfig(configFile));
          nextSecret = loadSecret(next.secretFile);
          for (const v of next.volumes) {
            if (current.has(v.name)) continue;
            const volume = await openServedVolume(v);
            const problem = running.addProblem(volume);
            if (problem) throw new FusedError('usage', problem, v.where);
            added.push(volume);
          }
        } catch (err) {
          return refuse(reasonOf(err));
        }
        const ignored: string[] = [];
        const fixed = (key: string, was: string, now: string) => {
          if (was !== now) ignored.push(`${key} stays ${was} (was given ${now}; it changes only with a restart)`);
        };
        const addr = (a: ServerAddress | undefined) => (a ? formatServerAddress(a) : 'off');
        fixed('listen', addr(cfg.listen), addr(next.listen));
        fixed('node', cfg.node, next.node);
        fixed('lease-time', String(cfg.leaseTimeMs / 1000), String(next.leaseTimeMs / 1000));
        fixed('reserve', String(cfg.reserveBytes), String(next.reserveBytes));
        fixed('state-dir', cfg.stateDir, next.stateDir);
        fixed('metrics', addr(cfg.metrics), addr(next.metrics));
        const dirs = new Map(cfg.volumes.map((v) => [v.name, v.dir]));
        for (const v of next.volumes) {
          const was = dirs.get(v.name);
          if (was !== undefined && was !== v.dir) ignored.push(`volume ${v.name} stays ${was} (a volume moves by removing it, reloading, then adding it)`);
        }
        const removed = [...current].filter((n) => !next.volumes.some((v) => v.name === n));
        secret = nextSecret;
        logger.format = next.logFormat;
        // What cannot change live keeps its running value (and the next reload compares with that).
        const keptVolumes = new Map(cfg.volumes.map((v) => [v.name, v]));
        cfg = {
          ...next,
          listen: cfg.listen, node: cfg.node, leaseTimeMs: cfg.leaseTimeMs, reserveBytes: cfg.reserveBytes, stateDir: cfg.stateDir, metrics: cfg.metrics,
          volumes: next.volumes.map((v) => keptVolumes.get(v.name) ?? v),
        };
        for (const reason of ignored) events({ event: 'reload', result: 'ignored', reason });
        const recalled = running.reconfigure(
          {
            secret, roles: cfg.roles, defaultRole: cfg.defaultRole, maxConnections: cfg.maxConnections, maxUnauthenticated: cfg.maxUnauthenticated,
            idleTimeoutMs: cfg.idleTimeoutMs, maxExtents: cfg.maxExtents, maxLeasesPerConnection: cfg.maxLeasesPerConnection,
          },
          added,
          removed,
        );
        for (const v of added) logger.line(describeVolume(v), 'volume', 'info', { volume: v.name });
        const change = [...added.map((v) => `+${v.name}`), ...removed.map((n) => `-${n}`)].join(' ');
        events({
          event: 'reload', result: 'ok',
          reason: `${configFile}: volumes ${running.volumeNames().join(',')}${change ? ` (${change})` : ''}; ${describeRoles(cfg)}; log format ${cfg.logFormat}`,
        });
        // The recalls take up to the lease time; the next reload need not wait for them.
        void recalled.then(() => {
          if (removed.length > 0) logger.line(`volume(s) ${removed.join(',')} out of service: their maps are returned or revoked`, 'volume');
        });
      };
      // One reload at a time, in the order the signals came.
      let reloading = Promise.resolve();
      const onHup = () => {
        reloading = reloading.then(reload).catch((err: unknown) => logger.line(`reload: ${reasonOf(err)}`, 'reload', 'error'));
      };
      process.on('SIGHUP', onHup);
      await new Promise<void>((resolve) => {
        const stop = (sig: string) => {
          logger.line(`${sig}: shutting down`, 'shutdown');
          process.off('SIGHUP', onHup);
          // Ghost clients are refused at once from now on (ALIVE goes); the sessions already open drain with the rest.
          void Promise.all([ghost?.retire(), running.close().then(() => ghost?.close()), metricsEndpoint?.close()]).then(() => resolve());
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
      const unguarded = await unguardedWarning(record.uuid, record.device);
      if (unguarded) process.stderr.write(`fusedctl: ${record.device}: ${unguarded}\n`);
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
      const cols = selectColumns(STATUS_COLUMNS, opts.output ?? (opts.json ? undefined : 'mountpoint,volume,server,device,deviceId,access,serverReachable,devicePresent,uuidMatches,deviceIdMatches,guarded'));
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

  registerGuard(program, ctx);
  registerDoctor(program, ctx);
  return program;
}
