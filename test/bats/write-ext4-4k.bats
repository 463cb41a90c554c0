#!/usr/bin/env bats
# fusedcp onto a fused mount on ext4-4k: every size round-trips byte for byte (sha256), direct, fresh on the server.

FSTYPE=ext4-4k
load write-suite
