#!/usr/bin/env -S MALLOC_ARENA_MAX=2 node --max-semi-space-size=2
process.env.UV_THREADPOOL_SIZE ??= "16"; require("./start.cjs")("fusedctl"); // CommonJS: set before the pool starts. The shebang's 2 MiB semi-space and two malloc arenas keep the map server's RSS down (docs/BENCHMARKS.md)
