#!/usr/bin/env bash
# Write benchmark (not a test): a fusedcp direct write onto the fused mount vs fio's direct sequential write on a
# raw device of the same kind vs cp through the network mount, all in one run on the two-node bed, per file
# system (ext4-4k, xfs), printing MB/s and ratios.
# fio writes into a scratch loop device (an image of the same kind, in a region no file uses), never over the
# live volume.
# Usage (root): test/bench/write.sh [SIZE_MIB] [ROUNDS] [FSTYPE...]   defaults: 1024 MiB, 3 rounds (median), ext4-4k xfs
# RESERVE_BYTES=N sets the server's --reserve (default 1 GiB, as fusedctl serve; 0: zero-fill only, for comparison).
set -euo pipefail
cd "$(dirname "$0")/../.."
# Without NODE_EXTRA_CA_CERTS and NODE_OPTIONS, as read.sh and bench.sh (node reads the CA file at every start here).
unset NODE_EXTRA_CA_CERTS NODE_OPTIONS
size_mib=${1:-1024}
rounds=${2:-3}
shift 2 || shift $#
fstypes=("$@")
((${#fstypes[@]})) || fstypes=(ext4-4k xfs)
[[ $(id -u) == 0 ]] || { echo "write.sh: must run as root (loop devices, namespaces)" >&2; exit 2; }
command -v fio >/dev/null || apt-get install -y -q fio >/dev/null
command -v fio >/dev/null || { echo "write.sh: fio is missing and could not be installed" >&2; exit 2; }
npm run --silent build # tsc and the one-file bundles the commands start from
source test/lib/bed.bash

bytes=$((size_mib * 1024 * 1024))
reserve=${RESERVE_BYTES:-$((1024 ** 3))}
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { print b - a }'; }
# mbps SECONDS -> MB/s for $bytes
mbps() { awk -v b="$bytes" -v s="$1" 'BEGIN { printf "%.0f", b / s / 1e6 }'; }
median() { sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
sha() { openssl dgst -sha256 -r <"$1" | cut -d' ' -f1; }

# fio_write DEV OFFSET [sync]: seconds fio takes to write $bytes at OFFSET of DEV, O_DIRECT, 4 MiB, 8 in flight;
# with "sync", durably: fio's end_fsync, counted in its time, as fusedcp's COMMIT makes its copy durable (the map
# server fsyncs the file). On loop devices over an image file the flush writes the image's dirty pages out.
fio_write() {
	local out=$BED_DIR/fio.json sync=0
	[[ ${3:-} == sync ]] && sync=1
	fio --name=raw --filename="$1" --offset="$2" --size="$bytes" --direct=1 --rw=write --bs=4M --iodepth=8 \
		--ioengine=libaio --end_fsync="$sync" --output-format=json >"$out"
	# fio's own clock (ms): the write (and its flush) without fio's start-up.
	if ((sync)); then jq '.jobs[0].job_runtime / 1000' "$out"; else jq '.jobs[0].write.runtime / 1000' "$out"; fi
}

# fusedcp_write N: seconds (whole command) of a fusedcp of the source to a fresh name on the fused mount; checks
# that it went direct and is exact on the server. The copy's own seconds (--json) go to $BED_DIR/inner-times.
fusedcp_write() {
	local t0 out=$BED_DIR/copy.json name=bench-$1.bin t
	t0=$(now)
	bed_in_client "$FUSED_BIN/fusedcp" --json "$src" "$BED_CLI_DIR/$name" >"$out"
	t=$(elapsed "$t0")
	[[ $(jq -r '.[0].write.path' "$out") == direct ]] || { echo "fusedcp did not write direct: $(jq -c '.[0].write' "$out")" >&2; exit 1; }
	[[ $(sha "$BED_SRV_DIR/$name") == "$want" ]] || { echo "the direct copy differs from the source" >&2; exit 1; }
	jq -r '.[0].seconds' "$out" >>"$BED_DIR/inner-times"
	rm "$BED_SRV_DIR/$name"
	sync
	echo "$t"
}

# warm_reserve: wait (at most 120 s) until the server's reserve of zeros (XFS) or pool of zeroed files (ext4) is
# full by its own account (fusedctl status), so each fusedcp round starts as the first one ("a warm reserve").
# Prints the seconds waited.
warm_reserve() {
	local t0 got tries=1200
	t0=$(now)
	while ((tries-- > 0)); do
		got=$(bed_in_client "$FUSED_BIN/fusedctl" status --json | jq -r '.[0].reserveBytes')
		((got >= reserve)) && break
		sleep 0.1
	done
	elapsed "$t0"
}

# cp_write: seconds of cp through the sshfs mount, closed (sshfs writes through at close), and checked.
cp_write() {
	local t0 t
	t0=$(now)
	bed_in_client cp "$src" "$BED_CLI_DIR/bench-cp.bin"
	t=$(elapsed "$t0")
	[[ $(sha "$BED_SRV_DIR/bench-cp.bin") == "$want" ]] || { echo "the cp copy differs from the source" >&2; exit 1; }
	rm "$BED_SRV_DIR/bench-cp.bin"
	echo "$t"
}

bench_one() {
	local fstype=$1 scratch dev_bytes offset r k m
	bed_init "wbench$$"
	trap bed_teardown EXIT
	bed_make_volume "$fstype" "$((size_mib * 3 + 1024))M"
	bed_make_nodes 1gbit
	bed_start_sshd
	bed_mount_client
	bed_start_server --role cli=rw --reserve "$reserve"
	bed_in_client "$FUSED_BIN/fusedctl" fuse "$BED_CLI_DIR" --server "$BED_SERVER" --key-file "$BED_KEY" --node cli >/dev/null
	# The scratch device fio writes on: the same kind of image, never mounted; fio writes its upper half, which a
	# fresh file system leaves unused (and nothing reads it anyway).
	bed_make_image "$BED_DIR/scratch.img" "$fstype" "$((size_mib * 3 + 1024))M"
	scratch=$(bed_attach "$BED_DIR/scratch.img")
	dev_bytes=$(blockdev --getsize64 "$scratch")
	offset=$(((dev_bytes - bytes) / 4194304 * 4194304))
	((offset >= dev_bytes / 2)) || offset=$((dev_bytes / 2 / 4194304 * 4194304))
	# The source lives outside the volume and is read once first, so the page cache serves it to every contender.
	src=$BED_DIR/source.bin
	head -c "$bytes" /dev/urandom >"$src"
	want=$(sha "$src")
	echo "$fstype: reserve warm after $(warm_reserve) s" >&2
	echo "$fstype: $size_mib MiB, $rounds round(s), reserve $reserve bytes; volume $BED_DEV_B, scratch $scratch at $offset; $(nproc) cores" >&2
	: >"$BED_DIR/inner-times"
	: >"$BED_DIR/pairs"
	declare -A times=()
	for ((r = 1; r <= rounds; r++)); do
		# Interleaved, so drift in the machine's load hits every contender alike.
		times[fio]+="$(fio_write "$scratch" "$offset") "
		times[fiosync]+="$(fio_write "$scratch" "$offset" sync) "
		echo "$fstype: reserve warm again after $(warm_reserve) s" >&2
		times[fusedcp]+="$(fusedcp_write "$r") "
		# This round's pairs, run back to back: fio (plain, durable) against the whole command and the copy itself.
		read -r -a f <<<"${times[fio]}"
		read -r -a fs <<<"${times[fiosync]}"
		read -r -a w <<<"${times[fusedcp]}"
		echo "${f[-1]} ${fs[-1]} ${w[-1]} $(tail -1 "$BED_DIR/inner-times")" >>"$BED_DIR/pairs"
		[[ $r == 1 ]] && times[cp]+="$(cp_write) " # through a 1 Gbit link: one round is plenty
		echo "$fstype: round $r done" >&2
	done
	declare -A rate=()
	for k in fio fiosync fusedcp cp; do
		m=$(tr ' ' '\n' <<<"${times[$k]}" | grep . | median)
		rate[$k]=$(mbps "$m")
	done
	rate[inner]=$(mbps "$(median <"$BED_DIR/inner-times")")
	printf '%s\n' "== $fstype"
	printf '%-50s %8s MB/s\n' "fio direct write bs=4M iodepth=8 (scratch device)" "${rate[fio]}" \
		"  the same, durable (end_fsync=1, flush counted)" "${rate[fiosync]}" \
		"fusedcp direct write (whole command)" "${rate[fusedcp]}" \
		"  the same, copy only (--json seconds)" "${rate[inner]}" \
		"cp through the sshfs mount (1 Gbit veth)" "${rate[cp]}"
	awk -v f="${rate[fusedcp]}" -v d="${rate[fio]}" -v c="${rate[cp]}" -v i="${rate[inner]}" -v s="${rate[fiosync]}" 'BEGIN {
		printf "ratio fusedcp/fio:            %.2f\n", f / d
		printf "ratio fusedcp(copy only)/fio: %.2f\n", i / d
		printf "ratio fusedcp(copy only)/fio durable: %.2f\n", i / s
		printf "ratio fusedcp/cp(network):    %.1f\n", f / c
	}'
	# Per round the contenders ran back to back: the median of their ratios is the least disturbed by the device's
	# drift between rounds (a virtual disk over a shared host: single runs wander by up to 2x).
	pair_median() { awk "{ print $1 }" "$BED_DIR/pairs" | sort -g | awk -v what="$2" '{ a[NR] = $1 } END {
		printf "%s, median of the %d rounds'"'"' pairs: %.2f (%.2f to %.2f)\n", what, NR, a[int((NR + 1) / 2)], a[1], a[NR] }'; }
	pair_median '$1 / $3' "ratio fusedcp/fio"
	pair_median '$1 / $4' "ratio fusedcp(copy only)/fio"
	pair_median '$2 / $4' "ratio fusedcp(copy only)/fio durable"
	bed_teardown
	trap - EXIT
}

for fs in "${fstypes[@]}"; do bench_one "$fs"; done
