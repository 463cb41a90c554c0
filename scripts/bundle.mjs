// Build step after tsc: one CommonJS file per command (dist/bundle/NAME.cjs) holding that command, the core it
// uses and its npm dependencies, so a start reads and compiles one file instead of resolving ~50 ES modules
// (Node 20's ES module loader is most of a short command's start-up), plus V8's code cache for it
// (NAME.cjs.cache, made by a `NAME --help` run; with every function compiled for the commands that move data),
// which spares the compiling. bin/start.cjs runs them.
import { build } from 'esbuild';
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { setFlagsFromString } from 'node:v8';

const root = new URL('../', import.meta.url);
/** Commands whose start is on a data path (see --code-cache below). */
const DATA_COMMANDS = ['fusedcat', 'fusedcp', 'fusedmap'];
const bundleOf = (name) => fileURLToPath(new URL(`dist/bundle/${name}.cjs`, root));

if (process.argv[2] === '--code-cache') {
  // A child of the build: run NAME --help from its bundle and keep what V8 compiled for it.
  const name = process.argv[3];
  process.argv.splice(2, 2); // the command sees [node, script, '--help']
  const { load } = createRequire(import.meta.url)('../bin/start.cjs');
  // The commands that move data get every function compiled now, not only those the --help run calls: their real
  // work (the session, the proof, the reader, the writer) then starts without compiling its functions on first call:
  // fusedcat's first device read 3.5 ms sooner (medians of 10 interleaved runs, twice, on a tmpfs-backed bed; the
  // same as a cache made from a real read). Its cache grows from 161 to 416 KB and loads about 1 ms slower, so
  // fusedctl and fusedthrottle (whose work is a few requests; fusedctl's cache would be 1.5 MB) keep the smaller
  // one. The flag goes back before the cache is made: V8 refuses a cache made under other flags.
  const eager = DATA_COMMANDS.includes(name);
  if (eager) setFlagsFromString('--no-lazy');
  const { exports, script } = load(bundleOf(name));
  if (eager) setFlagsFromString('--lazy');
  process.once('exit', () => writeFileSync(`${bundleOf(name)}.cache`, script.createCachedData()));
  exports.start();
} else {
  const pkg = JSON.parse(readFileSync(new URL('package.json', root), 'utf8'));
  const names = Object.keys(pkg.bin);
  await Promise.all(names.map((name) => build({
    stdin: {
      // The command's module is passed in, so no other command is in the bundle.
      contents: `import { main } from './cli/run.js';\n` +
        `import * as command from './commands/${name}.js';\n` +
        `export const start = () => main(${JSON.stringify(name)}, async () => command);\n`,
      resolveDir: fileURLToPath(new URL('dist/', root)),
      sourcefile: `${name}-entry.js`,
    },
    bundle: true,
    platform: 'node',
    format: 'cjs',
    target: 'node20',
    outfile: bundleOf(name),
    // The addon is loaded relative to import.meta.url (native/addon.ts); dist/bundle/ is as deep as dist/native/.
    // The version is the package's, fixed at build time: an installed bundle has no package.json to read.
    define: { 'import.meta.url': '__fused_module_url', __FUSED_VERSION__: JSON.stringify(pkg.version) },
    banner: { js: `const __fused_module_url = require('node:url').pathToFileURL(__filename).href;` },
    external: ['*.node'],
    sourcemap: true,
    logLevel: 'warning',
  })));
  for (const name of names) {
    execFileSync(process.execPath, [fileURLToPath(import.meta.url), '--code-cache', name, '--help'], { stdio: 'ignore' });
  }
}
