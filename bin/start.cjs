// Starts command NAME from its one-file bundle (dist/bundle, made by `npm run build`) when that is at least as new
// as the compiled modules, else from the modules themselves (a bare `tsc` build leaves the bundle stale).
const { readFileSync, statSync } = require("node:fs");
const { createRequire } = require("node:module");
const { dirname, join } = require("node:path");
const vm = require("node:vm");

const dist = join(__dirname, "..", "dist");

function mtime(file) {
  try {
    return statSync(file).mtimeMs;
  } catch {
    return -1; // missing
  }
}

/**
 * Run FILE (a CommonJS bundle) as a module, compiled with V8's code cache FILE.cache when that was made after FILE
 * (scripts/bundle.mjs makes it; V8 itself checks only the source's length, so an older cache is never offered).
 * Returns the module's exports and its script (for createCachedData).
 */
function load(file) {
  let cachedData;
  try {
    if (mtime(`${file}.cache`) >= mtime(file)) cachedData = readFileSync(`${file}.cache`);
  } catch {} // unreadable: compile without it, as V8 does with a cache it rejects
  const wrapped = `(function (exports, require, module, __filename, __dirname) {${readFileSync(file, "utf8")}\n})`;
  const script = new vm.Script(wrapped, {
    filename: file,
    cachedData,
    importModuleDynamically: vm.constants?.USE_MAIN_CONTEXT_DEFAULT_LOADER,
  });
  const module = { exports: {} };
  script.runInThisContext()(module.exports, createRequire(file), module, file, dirname(file));
  return { exports: module.exports, script };
}

function start(name) {
  const bundle = join(dist, "bundle", `${name}.cjs`);
  if (mtime(bundle) >= Math.max(0, mtime(join(dist, "cli", "run.js")))) return load(bundle).exports.start();
  return import("../dist/cli/commands.js").then((m) => m.start(name));
}

module.exports = start;
module.exports.load = load;
