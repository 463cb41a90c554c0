#!/usr/bin/env bash
# Small-files benchmark (not a test): `fusedcp -r` of a tree of many small files off the fused mount against
# `cp -r` of the same tree through the (sshfs) mount, interleaved in one run on the two-node bed; every copy is
# checked file by file (sha256) so a fast wrong copy cannot win. Prints median seconds and the ratio to cp.
# Usage (root): test/bench/smallfiles.sh [FILES] [SIZE_KIB] [ROUNDS] [VARIANT...]
#   defaults: 1000 files of 64 KiB, 3 rounds; a VARIANT is a quoted set of extra fusedcp options, e.g. '-j 1'
#   (default variants: '-j 1', '-j 8', '--small-file 0')
set -euo pipefail
cd "$(dirname "$0")/../.."
files=${1:-1000}
size_kib=${2:-64}
rounds=${3:-3}
shift $(($# < 3 ? $# : 3))
variants=("$@")
((${#variants[@]})) || variants=('-j 1' '-j 8' '--small-file 0')
[[ $(id -u) == 0 ]] || { echo "smallfiles.sh: must run as root (loop devices, namespaces)" >&2; exit 2; }
npm run --silent build # tsc and the one-file bundles the commands start from
source test/lib/bed.bash
bed_init "bsf$$"
trap bed_teardown EXIT
bed_make_volume ext4-4k 2G
bed_make_nodes 1gbit
bed_start_sshd
bed_mount_client
bed_start_server
bed_in_client "$FUSED_BIN/fusedctl" fuse "$BED_CLI_DIR" --server "$BED_SERVER" --key-file "$BED_KEY" --node cli >/dev/null

# The tree: 10 directories of files/10 files each, random bytes, written on the server.
src=$BED_SRV_DIR/tree
bed_make_tree "$src" "$files" "$size_kib"
bed_tree_sums "$src" >"$BED_DIR/want.sums"
echo "tree: $files files of $size_kib KiB; $(nproc) cores" >&2

now() { date +%s.%N; }
drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }
# timed NAME CMD...: run CMD into a fresh $BED_DIR/out/tree from cold caches, check the copy, print seconds.
timed() {
	local name=$1 t0 t1
	shift
	rm -rf "$BED_DIR/out" && mkdir "$BED_DIR/out"
	drop_caches
	t0=$(now)
	bed_in_client "$@" "$BED_CLI_DIR/tree" "$BED_DIR/out/" >"$BED_DIR/last.out" 2>&1 || { echo "$name failed: $(tail -5 "$BED_DIR/last.out")" >&2; exit 1; }
	t1=$(now)
	bed_tree_sums "$BED_DIR/out/tree" | cmp -s - "$BED_DIR/want.sums" || { echo "$name: the copy differs from the source" >&2; exit 1; }
	awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }'
}
median() { sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

names=('cp -r (sshfs)' 'fusedcp -r')
cmds=('cp -r' "$FUSED_BIN/fusedcp -r -q")
for v in "${variants[@]}"; do
	names+=("fusedcp -r $v")
	cmds+=("$FUSED_BIN/fusedcp -r -q $v")
done
declare -A times
for ((r = 1; r <= rounds; r++)); do
	# Interleaved, so drift in the machine's load hits every contender alike.
	for i in "${!cmds[@]}"; do
		# shellcheck disable=SC2086 # the command and its options are words
		times[$i]+="$(timed "${names[$i]}" ${cmds[$i]}) "
	done
	echo "round $r done" >&2
done
cp_s=$(tr ' ' '\n' <<<"${times[0]}" | grep . | median)
for i in "${!cmds[@]}"; do
	m=$(tr ' ' '\n' <<<"${times[$i]}" | grep . | median)
	awk -v n="${names[$i]}" -v m="$m" -v c="$cp_s" 'BEGIN { printf "%-34s %6.2f s   %.2f x cp\n", n, m, m / c }'
done
