// Starts command NAME from its one-file bundle (dist/bundle, made by `npm run build`) when that is at least as new
// as the compiled modules, else from the modules themselves (a bare `tsc` build leaves the bundle stale).
const { statSync } = require("node:fs");
const { join } = require("node:path");

module.exports = function start(name) {
  const dist = join(__dirname, "..", "dist");
  const bundle = join(dist, "bundle", `${name}.cjs`);
  let fresh = false;
  try {
    fresh = statSync(bundle).mtimeMs >= statSync(join(dist, "cli", "run.js")).mtimeMs;
  } catch {} // no bundle: the modules
  if (fresh) return require(bundle).start();
  return import("../dist/cli/commands.js").then((m) => m.start(name));
};
