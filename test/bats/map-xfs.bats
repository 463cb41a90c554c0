#!/usr/bin/env bats
# fusedmap on xfs: the map the server hands out equals filefrag/xfs_io fiemap, and --verify holds.

FSTYPE=xfs
load map-suite
