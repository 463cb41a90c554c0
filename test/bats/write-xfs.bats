#!/usr/bin/env bats
# fusedcp onto a fused mount on xfs: every size round-trips byte for byte (sha256), direct, fresh on the server.

FSTYPE=xfs
load write-suite
