#!/usr/bin/env node
import("../dist/cli/run.js").then((m) => m.main("fusedcat"));
