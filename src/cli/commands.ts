// The commands by name, each module imported only when that command runs (bin/start.cjs without a bundle).
import type { Command } from 'commander';
import { main, withDefaults, type CommandModule } from './run.js';

/** Every command: what `fusedctl completion` describes, and the dispatch without a bundle. */
export const COMMANDS: Record<string, () => Promise<CommandModule>> = {
  fusedctl: () => import('../commands/fusedctl.js'),
  fusedmap: () => import('../commands/fusedmap.js'),
  fusedcat: () => import('../commands/fusedcat.js'),
  fusedcp: () => import('../commands/fusedcp.js'),
  fusedthrottle: () => import('../commands/fusedthrottle.js'),
};

export function start(name: string): Promise<void> {
  return main(name, Object.hasOwn(COMMANDS, name) ? COMMANDS[name] : undefined);
}

/** Every command's program as its binary defines it, to describe (completion, tests), never to run. */
export function definitions(): Promise<Command[]> {
  const ctx = { name: 'definitions', exit: () => {} };
  return Promise.all(Object.values(COMMANDS).map(async (load) => withDefaults((await load()).build(ctx))));
}
