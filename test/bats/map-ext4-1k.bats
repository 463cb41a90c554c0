#!/usr/bin/env bats
# fusedmap on ext4-1k: the map the server hands out equals filefrag/xfs_io fiemap, and --verify holds.

FSTYPE=ext4-1k
load map-suite
