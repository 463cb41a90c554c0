#!/usr/bin/env bash
# Read benchmark (not a test): fusedcp over the direct path vs `dd iflag=direct` on the same device and vs
# `cp` through the network mount, all in one run on the two-node bed, printing MB/s and ratios.
# Usage (root): test/bench/read.sh [SIZE_MIB] [ROUNDS]      defaults: 1024 MiB, 3 rounds (median reported)
set -euo pipefail
cd "$(dirname "$0")/../.."
size_mib=${1:-1024}
rounds=${2:-3}
[[ $(id -u) == 0 ]] || { echo "read.sh: must run as root (loop devices, namespaces)" >&2; exit 2; }
npx tsc -p tsconfig.json
source test/lib/bed.bash
bed_init "bench$$"
trap bed_teardown EXIT
bed_make_volume ext4-4k "$((size_mib * 2 + 512))M"
bed_make_nodes 1gbit
bed_start_sshd
bed_mount_client
bed_start_server
bed_in_client "$FUSED_BIN/fusedctl" fuse "$BED_CLI_DIR" --server "$BED_SERVER" --key-file "$BED_KEY" --node cli >/dev/null

file=bench.bin
dd if=/dev/urandom of="$BED_SRV_DIR/$file" bs=4M count=$((size_mib / 4)) status=none
sync
bytes=$((size_mib * 1024 * 1024))
map=$(bed_in_client "$FUSED_BIN/fusedmap" --json "$BED_CLI_DIR/$file")
phys=$(jq '.[0].extents[0].physical' <<<"$map")
extents=$(jq '.[0].extents | length' <<<"$map")
want=$(sha256sum <"$BED_SRV_DIR/$file" | cut -d' ' -f1)
echo "file: $size_mib MiB in $extents extent(s); device $BED_DEV_B; $(nproc) cores" >&2

now() { date +%s.%N; }
# mbps SECONDS -> MB/s for $bytes
mbps() { awk -v b="$bytes" -v s="$1" 'BEGIN { printf "%.0f", b / s / 1e6 }'; }
drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }

run_dd() {
	local t0 t1
	t0=$(now)
	# The same bytes the direct path reads: the file's first extent onward (the file is near-contiguous).
	dd if="$BED_DEV_B" iflag=direct,skip_bytes skip="$phys" bs=4M count=$((size_mib / 4)) of=/dev/null status=none
	t1=$(now)
	awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }'
}
run_fusedcp() {
	local t0 t1 out
	out=$BED_DIR/copy-direct.json
	t0=$(now)
	bed_in_client "$FUSED_BIN/fusedcp" --json "$BED_CLI_DIR/$file" /dev/null >"$out"
	t1=$(now)
	[[ $(jq -r '.[0].path' "$out") == direct ]] || { echo "fusedcp did not take the direct path: $(cat "$out")" >&2; exit 1; }
	# The copy's own time, without process start-up, session and map: fusedcp's --json seconds.
	jq -r '.[0].seconds' "$out" >>"$BED_DIR/inner-times"
	awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }'
}
run_fusedcp_file() {
	local t0 t1
	rm -f "$BED_DIR/copy.out"
	t0=$(now)
	bed_in_client "$FUSED_BIN/fusedcp" -q "$BED_CLI_DIR/$file" "$BED_DIR/copy.out"
	t1=$(now)
	[[ $(sha256sum <"$BED_DIR/copy.out" | cut -d' ' -f1) == "$want" ]] || { echo "fusedcp copy differs from the source" >&2; exit 1; }
	awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }'
}
run_cp() {
	local t0 t1
	drop_caches
	t0=$(now)
	bed_in_client cp "$BED_CLI_DIR/$file" /dev/null
	t1=$(now)
	awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }'
}
median() { sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

declare -A times
for ((r = 1; r <= rounds; r++)); do
	# Interleaved, so drift in the machine's load hits every contender alike.
	times[dd]+="$(run_dd) "
	times[fusedcp]+="$(run_fusedcp) "
	times[fusedcp_file]+="$(run_fusedcp_file) "
	[[ $r == 1 ]] && times[cp]+="$(run_cp) " # through a 1 Gbit link: one round is plenty
	echo "round $r done" >&2
done
declare -A rate
for k in dd fusedcp fusedcp_file cp; do
	m=$(tr ' ' '\n' <<<"${times[$k]}" | grep . | median)
	rate[$k]=$(mbps "$m")
done
rate[inner]=$(mbps "$(median <"$BED_DIR/inner-times")")
printf '%-42s %8s MB/s\n' "dd iflag=direct bs=4M (device)" "${rate[dd]}" \
	"fusedcp direct -> /dev/null (whole command)" "${rate[fusedcp]}" \
	"  the same, copy only (--json seconds)" "${rate[inner]}" \
	"fusedcp direct -> file (page cache)" "${rate[fusedcp_file]}" \
	"cp through the sshfs mount (1 Gbit veth)" "${rate[cp]}"
awk -v f="${rate[fusedcp]}" -v d="${rate[dd]}" -v ff="${rate[fusedcp_file]}" -v c="${rate[cp]}" -v i="${rate[inner]}" 'BEGIN {
	printf "ratio fusedcp/dd:            %.2f\n", f / d
	printf "ratio fusedcp(copy only)/dd: %.2f\n", i / d
	printf "ratio fusedcp(file)/dd:      %.2f\n", ff / d
	printf "ratio fusedcp/cp(network):   %.1f\n", f / c
}'
