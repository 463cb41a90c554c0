// What the entry (cli/run.ts) gives each command module, and what a command module gives back.
import type { Command } from 'commander';

/** What a command module gives the entry: its commander program. */
export interface CommandModule {
  build(ctx: CommandContext): Command;
}

export interface CommandContext {
  name: string;
  /** Record the exit code the process ends with (the highest-priority one wins if called twice). */
  exit(code: number): void;
}
