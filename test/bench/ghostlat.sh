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
# A second mount with sshfs's default caching (attributes and directory entries cached): what the ghost transport
# sees through a mount that was not set up for it.
plain=$BED_DIR/plain-mount
mkdir -p "$plain"
bed_in_client sshfs -o "IdentityFile=$BED_DIR/ssh/client_key,StrictHostKeyChecking=no,UserKnownHostsFile=/dev/null,LogLevel=ERROR" \
	"root@$BED_SRV_ADDR:$BED_SRV_DIR" "$plain"
bed_record fuse "$plain"
for server in "$BED_SERVER" "ghost:$BED_CLI_DIR" "ghost:$plain"; do
	GHOSTLAT_LABEL=$([[ $server == "ghost:$plain" ]] && echo "sshfs defaults" || echo "bed mount") bed_in_client node "$here/ghostlat.mjs" "$server" "$BED_KEY" cli vol lat.bin "$count" ||
		echo "{\"server\":\"$server\",\"failed\":true}"
done
