// The commands by name, each module imported only when that command runs (bin/start.cjs without a bundle).
import { main, type CommandModule } from './run.js';

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
