#!/usr/bin/env bash
# Runs the test suites: unit tests (no root, no devices) and the bats suites (root, loop devices).
# Usage: test/run.sh [unit|bats|all] [bats-file...]
set -euo pipefail
cd "$(dirname "$0")/.."
what=${1:-all}; shift || true
# tsc, then one bundle per command (scripts/bundle.mjs), which bin/ starts; make check has just built what was out
# of date and says so with FUSED_BUILT=1.
[[ ${FUSED_BUILT:-} == 1 ]] || npm run --silent build
if [[ $what == unit || $what == all ]]; then
  mapfile -t units < <(find dist -name '*.test.js' | sort)
  # Four files at a time: most unit tests wait on timers (lease deadlines), and node's default on 2 cores is one
  # at a time (56 s against 21 s here).
  node --test --test-concurrency=4 --test-reporter=spec "${units[@]}"
fi
if [[ $what == bats || $what == all ]]; then
  if [[ $# -gt 0 ]]; then files=("$@"); else mapfile -t files < <(ls test/bats/*.bats | sort); fi
  [[ $(id -u) == 0 ]] || { echo "test/run.sh: the bats suites need root (loop devices, mounts, namespaces)" >&2; exit 1; }
  # A private mount namespace: our mounts cannot be pinned by namespaces others create meanwhile, and vanish
  # with the run even if a teardown is cut short.
  unshare -m --propagation private node_modules/bats/bin/bats --timing --print-output-on-failure "${files[@]}"
fi
