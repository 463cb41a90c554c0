#!/usr/bin/env bats
# fusedcat and fusedcp on xfs: every shape of file reads back byte for byte (sha256), over the path it says.

FSTYPE=xfs
load read-suite
