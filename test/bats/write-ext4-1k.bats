#!/usr/bin/env bats
# fusedcp onto a fused mount on ext4-1k: every size round-trips byte for byte (sha256), direct, fresh on the server.

FSTYPE=ext4-1k
load write-suite
