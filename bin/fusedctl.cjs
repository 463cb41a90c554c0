#!/usr/bin/env -S node --max-semi-space-size=2
process.env.UV_THREADPOOL_SIZE ??= "16"; require("./start.cjs")("fusedctl"); // CommonJS: set before the pool starts. The shebang's 2 MiB semi-space keeps the map server's RSS down (docs/BENCHMARKS.md)
