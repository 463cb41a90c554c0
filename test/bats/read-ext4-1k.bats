#!/usr/bin/env bats
# fusedcat and fusedcp on ext4-1k: every shape of file reads back byte for byte (sha256), over the path it says.

FSTYPE=ext4-1k
load read-suite
