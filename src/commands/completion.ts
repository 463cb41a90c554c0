// fusedctl completion bash|zsh: the shell completion script for every fused command, from their own definitions.
import { Argument, Command } from 'commander';
import { definitions } from '../cli/commands.js';
import { bashScript, commandSpec, zshScript } from '../cli/completion.js';

const SHELLS = { bash: bashScript, zsh: zshScript } as const;

/** The `completion` subcommand; fusedctl adds it to its program. */
export function completionCommand(): Command {
  return new Command('completion')
    .description('print the bash or zsh completion script for every fused command')
    .addArgument(new Argument('<SHELL>', 'bash or zsh').choices(Object.keys(SHELLS)))
    .addHelpText('after', `
bash: source <(fusedctl completion bash), or save it as
      /usr/local/share/bash-completion/completions/NAME for each command NAME (make install does).
zsh:  source <(fusedctl completion zsh), or save it as _fused in a directory of $fpath
      (make install: /usr/local/share/zsh/site-functions).`)
    .action(async (shell: keyof typeof SHELLS) => {
      process.stdout.write(SHELLS[shell]((await definitions()).map((p) => commandSpec(p))));
    });
}
