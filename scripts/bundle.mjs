// Build step after tsc: one CommonJS file per command (dist/bundle/NAME.cjs) holding that command, the core it
// uses and its npm dependencies, so a start reads and compiles one file instead of resolving ~50 ES modules
// (Node 20's ES module loader is most of a short command's start-up). bin/start.cjs runs it.
import { build } from 'esbuild';
import { readFileSync } from 'node:fs';

const root = new URL('../', import.meta.url);
const pkg = JSON.parse(readFileSync(new URL('package.json', root), 'utf8'));

await Promise.all(Object.keys(pkg.bin).map((name) => build({
  stdin: {
    // The command's module is passed in, so no other command is in the bundle.
    contents: `import { main } from './cli/run.js';\n` +
      `import * as command from './commands/${name}.js';\n` +
      `export const start = () => main(${JSON.stringify(name)}, async () => command);\n`,
    resolveDir: new URL('dist/', root).pathname,
    sourcefile: `${name}-entry.js`,
  },
  bundle: true,
  platform: 'node',
  format: 'cjs',
  target: 'node20',
  outfile: new URL(`dist/bundle/${name}.cjs`, root).pathname,
  // The addon is loaded relative to import.meta.url (native/addon.ts); dist/bundle/ is as deep as dist/native/.
  define: { 'import.meta.url': '__fused_module_url' },
  banner: { js: `const __fused_module_url = require('node:url').pathToFileURL(__filename).href;` },
  external: ['*.node'],
  sourcemap: true,
  logLevel: 'warning',
})));
