#!/usr/bin/env bash
# The whole job on an embedded demo: install, make a shared volume on loop devices, a server node and a client
# node (network namespaces, sshfs as the network file system), serve, fuse, map, copy and write over the direct path.
# Usage (root, Debian 12): bash demo/run.sh [--keep]     --keep leaves the bed up and prints how to use it
set -euo pipefail
cd "$(dirname "$0")/.."
[[ $(id -u) == 0 ]] || { echo "demo: run as root (loop devices, mounts, namespaces): sudo bash demo/run.sh" >&2; exit 2; }
keep=${1:-}
step() { if [[ -t 1 && -z ${NO_COLOR:-} ]]; then printf '\n\033[1m== %s\033[0m\n' "$*"; else printf '\n== %s\n' "$*"; fi; }

step "installing Debian packages and npm dependencies (builds the native addon and the TypeScript)"
bash .ci/deps >/dev/null
npm ci --no-audit --no-fund
npm run --silent build # tsc and the one-file bundles the commands start from

source test/lib/bed.bash
bed_init "demo$$"
[[ $keep == --keep ]] || trap bed_teardown EXIT

step "a shared volume: one image, two loop devices (A mounted by the server, B the client's raw path)"
bed_make_volume ext4-4k 2G
echo "image $BED_IMG  A=$BED_DEV_A (mounted at $BED_SRV_DIR)  B=$BED_DEV_B  UUID $BED_UUID"
step "two nodes joined by a 1 Gbit veth; sshfs from client to server is the network file system"
bed_make_nodes 1gbit
bed_start_sshd
bed_mount_client
echo "client sees the volume at $BED_CLI_DIR"

step "files on the server: a 512 MiB clip and a sparse file"
dd if=/dev/urandom of="$BED_SRV_DIR/clip.mov" bs=4M count=128 status=none
truncate -s 64M "$BED_SRV_DIR/sparse.img"
printf 'header' | dd of="$BED_SRV_DIR/sparse.img" conv=notrunc status=none
dd if=/dev/urandom of="$BED_SRV_DIR/sparse.img" bs=1M count=4 seek=32 conv=notrunc status=none
sync

step "server: fusedctl serve (node 'client' may write: role rw)"
bed_start_server --role client=rw
tail -2 "$BED_DIR/server.log"

step "client: fusedctl guard (a udev rule so the client OS never mounts the shared volume itself; the demo's rules go to its own directory, not /etc/udev)"
export FUSED_UDEV_RULES_DIR=$BED_DIR/udev-rules
mkdir -p "$FUSED_UDEV_RULES_DIR"
bed_in_client "$FUSED_BIN/fusedctl" guard "$BED_DEV_B"

step "client: fusedctl fuse (finds device B by UUID, proves the mount shows the volume)"
bed_in_client "$FUSED_BIN/fusedctl" fuse "$BED_CLI_DIR" --server "$BED_SERVER" --key-file "$(bed_node_key client)" --node client
bed_in_client "$FUSED_BIN/fusedctl" status
bed_in_client "$FUSED_BIN/fusedctl" doctor || echo "(doctor exit status $?: see fusedctl(1))"

step "client: fusedmap (the maps the server hands out) and --verify"
bed_in_client "$FUSED_BIN/fusedmap" "$BED_CLI_DIR/clip.mov" "$BED_CLI_DIR/sparse.img"
bed_in_client "$FUSED_BIN/fusedmap" --verify --noheadings -o index "$BED_CLI_DIR/clip.mov" | tail -1

step "client: fusedcp over the direct path vs plain cp through the network mount"
out=$BED_DIR/copies
mkdir -p "$out/direct" "$out/network"
bed_in_client "$FUSED_BIN/fusedcp" -v "$BED_CLI_DIR/clip.mov" "$BED_CLI_DIR/sparse.img" "$out/direct/"
t0=$(date +%s.%N)
bed_in_client cp "$BED_CLI_DIR/clip.mov" "$out/network/"
t1=$(date +%s.%N)
awk -v a="$t0" -v b="$t1" 'BEGIN { printf "cp through sshfs: 512 MiB in %.2f s (%.0f MB/s)\n", b - a, 536870912 / (b - a) / 1e6 }'

step "client: fusedcp writing into the fused volume over the direct path (server allocates, client writes, commit)"
bed_in_client "$FUSED_BIN/fusedcp" -v "$out/direct/clip.mov" "$BED_CLI_DIR/clip-copy.mov"
head -c 100M /dev/urandom >"$out/stream.bin"
bed_in_client "$FUSED_BIN/fusedcat" -v -w "$BED_CLI_DIR/stream.bin" <"$out/stream.bin"

step "checking every copy with sha256"
for f in clip.mov sparse.img; do
	src=$(sha256sum <"$BED_SRV_DIR/$f" | cut -d' ' -f1)
	dst=$(sha256sum <"$out/direct/$f" | cut -d' ' -f1)
	cat=$(bed_in_client "$FUSED_BIN/fusedcat" "$BED_CLI_DIR/$f" | sha256sum | cut -d' ' -f1)
	[[ $src == "$dst" && $src == "$cat" ]] || { echo "MISMATCH on $f" >&2; exit 1; }
	echo "$f: source = fusedcp copy = fusedcat output ($src)"
done
[[ $(sha256sum <"$BED_SRV_DIR/clip-copy.mov") == $(sha256sum <"$BED_SRV_DIR/clip.mov") ]] || { echo "MISMATCH on the written copy" >&2; exit 1; }
[[ $(sha256sum <"$BED_SRV_DIR/stream.bin") == $(sha256sum <"$out/stream.bin") ]] || { echo "MISMATCH on the written stream" >&2; exit 1; }
echo "clip-copy.mov and stream.bin, written directly, read right on the server's own mount"

if [[ $keep == --keep ]]; then
	step "left running; to use it: source $BED_DIR/env, then e.g. bed_in_client \$FUSED_BIN/fusedmap \$BED_CLI_DIR/clip.mov"
	echo "tear down with: (source test/lib/bed.bash; source $BED_DIR/env; bed_teardown)"
else
	step "tearing down (loop devices, mounts, namespaces, processes)"
fi
