#!/usr/bin/env bash
# Map latency (p50/p99) over the ghost-file transport against TCP, on the two-node bed (ext4-4k, sshfs mount as
# the bed makes it). Usage: sudo bash test/bench/ghostlat.sh [COUNT]   (as root: loop devices, namespaces)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/../lib/bed.bash"
count=${1:-300}
trap bed_teardown EXIT
bed_init
bed_make_nodes
bed_make_volume ext4-4k 1G
bed_start_sshd
bed_mount_client
bed_start_server --ghost cli=0
head -c 8M /dev/urandom >"$BED_SRV_DIR/lat.bin"
sync
for server in "$BED_SERVER" "ghost:$BED_CLI_DIR"; do
	bed_in_client node "$here/ghostlat.mjs" "$server" "$BED_KEY" cli vol lat.bin "$count"
done
