#!/usr/bin/env bash
# Allocation benchmark (not a test): what ALLOC costs the server for SIZE of a new file, all in one run on loop
# devices: XFS reflink from a warm reserve, zero-fill (fallocate + O_DIRECT zeros) on XFS and ext4-4k, against the
# raw write rate of a device of the same kind (fio at depth 8, or dd with one request in flight without fio).
# Usage (root): test/bench/zeroing.sh [SIZE_MIB] [ROUNDS]      defaults: 1024 MiB, 3 rounds (median reported)
set -euo pipefail
cd "$(dirname "$0")/../.."
size_mib=${1:-1024}
rounds=${2:-3}
[[ $(id -u) == 0 ]] || { echo "zeroing.sh: must run as root (loop devices, mounts)" >&2; exit 2; }
npx tsc -p tsconfig.json
source test/lib/bed.bash
bed_init "zbench$$"
trap bed_teardown EXIT
bytes=$((size_mib * 1024 * 1024))
# The reserve, the file and some room, with the image's blocks in the backing file already written once, so that
# every method writes over allocated backing storage (a sparse image makes first writes slower).
img_mib=$((size_mib * 3 + 512))

volume() {
	local fs=$1 img=$BED_DIR/$1.img dev
	dd if=/dev/zero of="$img" bs=4M count=$((img_mib / 4)) oflag=direct status=none
	bed_make_image "$img" "$fs" "${img_mib}M"
	dev=$(bed_attach "$img")
	bed_mount "$dev" "$BED_DIR/$fs"
}
volume xfs
volume ext4-4k
raw_img=$BED_DIR/raw.img
dd if=/dev/zero of="$raw_img" bs=4M count=$((size_mib / 4)) oflag=direct status=none
raw_dev=$(bed_attach "$raw_img")
echo "size: $size_mib MiB, $rounds rounds (median); $(nproc) cores; $(uname -r)" >&2

median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

# alloc_ms FSTYPE RESERVE METHOD [alloc.mjs options]: one allocation of the whole size in a new file, which must
# take METHOD; prints its milliseconds (FIEMAP before and after and the fsync included: what ALLOC costs).
alloc_ms() {
	local dir=$BED_DIR/$1 out
	rm -f "$dir/bench.bin"
	sync
	out=$(node test/lib/alloc.mjs allocate "$dir" "$dir/bench.bin" 0 "$bytes" --reserve "$2" "${@:4}" 2>/dev/null)
	rm -f "$dir/bench.bin"
	jq -e --arg want "$3" '.after.method == $want' <<<"$out" >/dev/null ||
		{ echo "zeroing.sh: expected method $3: $out" >&2; exit 1; }
	jq '.ms' <<<"$out"
}

# raw_ms: milliseconds to write SIZE on a device of its own; fio's own time (without its start-up), else dd's.
raw_ms() {
	if command -v fio >/dev/null; then
		fio --name=raw --filename="$raw_dev" --direct=1 --rw=write --bs=4M --iodepth=8 --ioengine=libaio \
			--size="$bytes" --output-format=json | jq '.jobs[0].write.runtime'
	else
		local t0 t1
		t0=$(date +%s.%N)
		dd if=/dev/zero of="$raw_dev" bs=4M count=$((size_mib / 4)) oflag=direct status=none
		t1=$(date +%s.%N)
		awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f\n", (b - a) * 1000 }'
	fi
}

# Fill the XFS reserve once (and time it): the first reflink run waits for it.
t0=$(date +%s.%N)
node test/lib/alloc.mjs allocate "$BED_DIR/xfs" "$BED_DIR/xfs/warmup" 0 4096 --reserve "$bytes" --warm --refilled >/dev/null 2>&1
t1=$(date +%s.%N)
rm -f "$BED_DIR/xfs/warmup"
refill_s=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')

declare -A ms
for ((r = 0; r < rounds; r++)); do
	echo "reflink $(alloc_ms xfs "$bytes" reflink --warm)" >>"$BED_DIR/times"
	# reserve 0: the same volume without the reserve (what XFS costs when the reserve is empty)
	echo "xfs-zero $(alloc_ms xfs 0 zero-fill)" >>"$BED_DIR/times"
	echo "ext4-zero $(alloc_ms ext4-4k 0 zero-fill)" >>"$BED_DIR/times"
	echo "raw $(raw_ms)" >>"$BED_DIR/times"
done
for k in reflink xfs-zero ext4-zero raw; do ms[$k]=$(awk -v k="$k" '$1 == k { print $2 }' "$BED_DIR/times" | median); done

# A running copy's write rate (fio, O_DIRECT over a written file of the XFS volume, 3 s) alone, then while the
# reserve refills from empty in the background: what the refill's pacing leaves to the copy.
copy_bw() {
	fio --name=copy --filename="$BED_DIR/xfs/copy.bin" --direct=1 --rw=write --bs=4M --iodepth=8 --ioengine=libaio \
		--size="$bytes" --time_based --runtime=3 --output-format=json | jq '.jobs[0].write.bw_bytes / 1e6 | floor'
}
if command -v fio >/dev/null; then
	dd if=/dev/zero of="$BED_DIR/xfs/copy.bin" bs=4M count=$((size_mib / 4)) oflag=direct status=none
	copy_alone=$(copy_bw)
	node test/lib/alloc.mjs allocate "$BED_DIR/xfs" "$BED_DIR/xfs/tiny" 0 4096 --reserve 0 >/dev/null 2>&1
	node test/lib/alloc.mjs allocate "$BED_DIR/xfs" "$BED_DIR/xfs/tiny" 0 4096 --reserve "$bytes" --settle 4000 \
		>"$BED_DIR/settle.json" 2>/dev/null &
	refill_pid=$!
	sleep 0.5  # node's start-up: the refill is running when the copy starts
	copy_during=$(copy_bw)
	wait "$refill_pid"
	grown=$(jq '.settled.reserveBytes / 1048576 | floor' "$BED_DIR/settle.json")
	rm -f "$BED_DIR/xfs/copy.bin" "$BED_DIR/xfs/tiny"
fi

rate() { awk -v b="$bytes" -v ms="$1" 'BEGIN { printf "%6.0f MB/s", b / (ms / 1000) / 1e6 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a / b }'; }
raw_tool=$(command -v fio >/dev/null && echo "fio 4M x8 libaio" || echo "dd 4M direct")
printf '%-42s %9s  %s  %s\n' "allocate $size_mib MiB" "ms" "rate" "time / raw write"
printf '%-42s %9.1f  %s  %s\n' "xfs reflink from a warm reserve" "${ms[reflink]}" "$(rate "${ms[reflink]}")" "$(ratio "${ms[reflink]}" "${ms[raw]}")"
printf '%-42s %9.1f  %s  %s\n' "xfs zero-fill (no reserve)" "${ms[xfs-zero]}" "$(rate "${ms[xfs-zero]}")" "$(ratio "${ms[xfs-zero]}" "${ms[raw]}")"
printf '%-42s %9.1f  %s  %s\n' "ext4-4k zero-fill" "${ms[ext4-zero]}" "$(rate "${ms[ext4-zero]}")" "$(ratio "${ms[ext4-zero]}" "${ms[raw]}")"
printf '%-42s %9.1f  %s  %s\n' "raw device write ($raw_tool)" "${ms[raw]}" "$(rate "${ms[raw]}")" "1.000"
echo "reserve of $size_mib MiB filled from empty in the background in ${refill_s} s, node start-up included (paced: at most half the device's time)"
if [[ -n ${copy_alone:-} ]]; then
	echo "a running copy (fio 4M x8 direct on XFS) writes $copy_alone MB/s alone, $copy_during MB/s while the reserve refills" \
		"(ratio $(ratio "$copy_during" "$copy_alone")); the reserve grew to $grown MiB in the 4 s"
fi
