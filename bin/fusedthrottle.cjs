#!/usr/bin/env node
process.env.UV_THREADPOOL_SIZE ??= "16"; import("../dist/cli/run.js").then((m) => m.main("fusedthrottle")); // CommonJS: set before the pool starts
