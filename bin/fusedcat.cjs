#!/usr/bin/env node
process.env.UV_THREADPOOL_SIZE ??= "40"; require("./start.cjs")("fusedcat"); // CommonJS: set before the pool starts (up to 32 device reads in flight, and the sink)
