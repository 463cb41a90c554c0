// fusedctl doctor: check the kernel features fused relies on and every fuse (device, key, server, proof by
// content, clock, mount guard, fstab); a table or JSON, and an exit code scripts can act on.
import type { Command } from 'commander';
import { readFileSync } from 'node:fs';
import { canonicalMountpoint, loadFuses, stateDir } from '../client/registry.js';
import { DEFAULT_FSTAB } from '../client/guard.js';
import { doctorExit, fuseChecks, kernelChecks, row, type CheckRow } from '../client/doctor.js';
import { LIMITS } from '../protocol/index.js';
import { LEASE_BREAK_TIME_FILE, leaseTimeProblem } from '../server/leases.js';
import { renderTable, rowsToJson, selectColumns, type Column } from '../ui/columns.js';
import { jsonOut } from '../ui/messages.js';
import { parseCount } from '../ui/options.js';
import type { CommandContext } from './context.js';

const DOCTOR_COLUMNS: Column<CheckRow>[] = [
  { id: 'check', header: 'CHECK', help: 'what was checked', align: 'left', text: (r) => r.check, json: (r) => r.check },
  { id: 'subject', header: 'SUBJECT', help: "'kernel', or the fuse's mount point", align: 'left', text: (r) => r.subject, json: (r) => r.subject },
  { id: 'status', header: 'STATUS', help: 'ok, warn, fail, or skip (could not be checked because an earlier check failed)', align: 'left', text: (r) => r.status, json: (r) => r.status },
  { id: 'detail', header: 'DETAIL', help: 'what was found', align: 'left', text: (r) => r.detail, json: (r) => r.detail },
];

export function registerDoctor(program: Command, ctx: CommandContext): void {
  program
    .command('doctor')
    .description('check kernel features and each fuse: device, O_DIRECT, key, server, proof by content, clock, guard, fstab')
    .argument('[MOUNTPOINT...]', 'check only these fuses (default: all)')
    .option('--json', 'JSON array of {check, subject, status, detail}')
    .option('-o, --output <COLS>', `columns to show (${DOCTOR_COLUMNS.map((c) => c.id).join(',')})`)
    .option('-n, --noheadings', 'no header line')
    .option('--timeout <SECONDS>', 'how long to wait for each server', '2')
    .option('--lease-time <SECONDS>', 'the lease time to check fs.lease-break-time against', String(LIMITS.leaseTimeMs / 1000))
    .option('--fstab <FILE>', 'the fstab to check', DEFAULT_FSTAB)
    .action(async (mountpoints: string[], opts: { json?: boolean; output?: string; noheadings?: boolean; timeout: string; leaseTime: string; fstab: string }) => {
      const cols = selectColumns(DOCTOR_COLUMNS, opts.output);
      const timeoutMs = parseCount(opts.timeout, '--timeout', 1, 600) * 1000;
      const leaseTimeMs = parseCount(opts.leaseTime, '--lease-time', 3, 3600) * 1000;
      const rows: CheckRow[] = await kernelChecks(stateDir());
      const problem = leaseTimeProblem(leaseTimeMs, () => readFileSync(LEASE_BREAK_TIME_FILE, 'utf8'));
      rows.push(problem
        ? row('lease-break-time', 'kernel', 'warn', `${problem}; a map server with this lease time refuses to start`)
        : row('lease-break-time', 'kernel', 'ok', `${readFileSync(LEASE_BREAK_TIME_FILE, 'utf8').trim()} s covers a lease time of ${leaseTimeMs / 1000} s`));
      let fuses = await loadFuses();
      if (mountpoints.length) {
        const wanted: string[] = [];
        for (const m of mountpoints) {
          const canon = await canonicalMountpoint(m).catch(() => m);
          if (fuses.some((f) => f.mountpoint === canon || f.mountpoint === m)) wanted.push(canon);
          else rows.push(row('fuse', m, 'fail', 'not fused'));
        }
        fuses = fuses.filter((f) => wanted.includes(f.mountpoint) || mountpoints.includes(f.mountpoint));
      } else if (fuses.length === 0) {
        rows.push(row('fuse', '-', 'skip', 'no fuses on this node'));
      }
      for (const f of fuses) rows.push(...(await fuseChecks(f, { timeoutMs, fstab: opts.fstab })));
      if (opts.json) process.stdout.write(jsonOut(rowsToJson(cols, rows)));
      else process.stdout.write(renderTable(cols, rows, { headings: !opts.noheadings }) + '\n');
      ctx.exit(doctorExit(rows));
    });
}
