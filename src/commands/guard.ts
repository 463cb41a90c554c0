// fusedctl guard / unguard: keep this node's OS from mounting a shared volume (a udev rule), and find the fstab
// lines and mount units that would mount it anyway.
import type { Command } from 'commander';
import { FusedError } from '../errors.js';
import { DEFAULT_FSTAB, DEFAULT_RULES_DIR, describeThreat, guardDevice, unguardDevice } from '../client/guard.js';
import { jsonOut } from '../ui/messages.js';
import type { CommandContext } from './context.js';

export function registerGuard(program: Command, _ctx: CommandContext): void {
  program
    .command('guard')
    .description("install a udev rule so this node's OS never mounts the volume on DEVICE itself; check fstab and mount units")
    .argument('<DEVICE>', "this node's block device of the shared volume")
    .option('--rules-dir <DIR>', `where the rule goes (default: $FUSED_UDEV_RULES_DIR, else ${DEFAULT_RULES_DIR})`)
    .option('--fstab <FILE>', 'the fstab to check', DEFAULT_FSTAB)
    .option('--strict', 'exit 5 when fstab or a mount unit would mount the volume (the rule is written all the same)')
    .option('--json', 'print what was done as JSON')
    .action(async (device: string, opts: { rulesDir?: string; fstab: string; strict?: boolean; json?: boolean }) => {
      const r = await guardDevice(device, { ...(opts.rulesDir ? { rulesDir: opts.rulesDir } : {}), fstab: opts.fstab });
      const warnings = [
        ...r.mountedAt.map((m) => `${device}: mounted on this node at ${m}: unmount it now; the volume is mounted by its server`),
        ...r.threats.map(describeThreat),
      ];
      if (opts.json) {
        process.stdout.write(jsonOut({ file: r.file, uuid: r.guard.uuid, label: r.guard.label, fstype: r.guard.fstype, devices: r.guard.devices, mountedAt: r.mountedAt, threats: r.threats, udev: r.udev }));
      } else {
        process.stdout.write(`guarded volume ${r.guard.uuid} (${r.guard.fstype}) on ${device}: ${r.file}; ${r.udev}\n`);
      }
      if (opts.strict && warnings.length) {
        for (const w of warnings.slice(0, -1)) process.stderr.write(`fusedctl: ${w}\n`);
        throw new FusedError('refused', warnings.at(-1)!);
      }
      for (const w of warnings) process.stderr.write(`fusedctl: ${w}\n`);
    });

  program
    .command('unguard')
    .description('remove the mount guard of the volume on DEVICE (or of the volume UUID given)')
    .argument('<DEVICE|UUID>')
    .option('--rules-dir <DIR>', `where the rule is (default: $FUSED_UDEV_RULES_DIR, else ${DEFAULT_RULES_DIR})`)
    .action(async (target: string, opts: { rulesDir?: string }) => {
      const r = await unguardDevice(target, opts.rulesDir ? { rulesDir: opts.rulesDir } : {});
      process.stdout.write(`unguarded volume ${r.guard.uuid}: removed ${r.file}; ${r.udev}\n`);
    });
}
