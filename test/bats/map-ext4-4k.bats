#!/usr/bin/env bats
# fusedmap on ext4-4k: the map the server hands out equals filefrag/xfs_io fiemap, and --verify holds.

FSTYPE=ext4-4k
load map-suite
