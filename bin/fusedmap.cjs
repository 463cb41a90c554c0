#!/usr/bin/env node
process.env.UV_THREADPOOL_SIZE ??= "16"; require("./start.cjs")("fusedmap"); // CommonJS: set before the pool starts
