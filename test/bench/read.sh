#!/usr/bin/env bash
# Read benchmark (not a test): the direct read path against the device's limit, all in one run on the two-node bed.
# The limit is fio reading the file's own region of the client's device (offset = the file's first physical byte,
# size = the file; O_DIRECT, libaio, 4 MiB requests, 8 in flight; and, for reference, the same with 32 in flight, the
# deep depth a large fusedcat read may keep: `man fusedcat`, READ DEPTH). Against it: `fusedcat FILE >/dev/null` (the
# whole command, wall time), `fusedcp FILE` to a local file on the machine's disk (whole command, fsync included:
# fusedcp makes its copy durable before the rename) and `cp` through the sshfs mount. Rounds are interleaved, so
# drift in the machine's load hits every contender alike; medians are reported, with ratios to fio.
# Content: a `fusedcat | sha256sum` (untimed) and every fusedcp copy are compared with the source's sha256.
# Usage (root): test/bench/read.sh [SIZE_MIB] [ROUNDS]      defaults: 1024 MiB, 3 rounds (median reported)
# With BASELINE=DIR (another built checkout of fused, e.g. an older commit), its fusedcat and fusedcp are timed in
# the same rounds too, for a before/after comparison in one run.
# The commands run without NODE_EXTRA_CA_CERTS and NODE_OPTIONS (Node reads the extra CA file at every start: a cost
# of this environment, tens of ms, not of fused).
set -euo pipefail
cd "$(dirname "$0")/../.."
size_mib=${1:-1024}
rounds=${2:-3}
[[ $(id -u) == 0 ]] || { echo "read.sh: must run as root (loop devices, namespaces)" >&2; exit 2; }
command -v fio >/dev/null || apt-get install -y -q fio >/dev/null
command -v fio >/dev/null || { echo "read.sh: fio is missing and could not be installed" >&2; exit 2; }
unset NODE_EXTRA_CA_CERTS NODE_OPTIONS
npm run --silent build # tsc and the one-file bundles the commands start from
source test/lib/bed.bash
bed_init "bench$$"
trap bed_teardown EXIT
bed_make_volume ext4-4k "$((size_mib * 2 + 512))M"
bed_make_nodes 1gbit
bed_start_sshd
bed_mount_client
bed_start_server
if [[ -n ${BASELINE:-} ]]; then
	[[ -f $BASELINE/bin/fusedcat.cjs ]] || { echo "read.sh: BASELINE=$BASELINE is not a fused checkout" >&2; exit 2; }
	mkdir -p "$BED_DIR/base-bin"
	for cmd in fusedcat fusedcp; do
		printf '#!/bin/sh\nexec node %q "$@"\n' "$BASELINE/bin/$cmd.cjs" >"$BED_DIR/base-bin/$cmd"
		chmod +x "$BED_DIR/base-bin/$cmd"
	done
fi
bed_in_client "$FUSED_BIN/fusedctl" fuse "$BED_CLI_DIR" --server "$BED_SERVER" --key-file "$BED_KEY" --node cli >/dev/null

file=bench.bin
dd if=/dev/urandom of="$BED_SRV_DIR/$file" bs=4M count=$((size_mib / 4)) status=none
sync
bytes=$((size_mib * 1024 * 1024))
map=$(bed_in_client "$FUSED_BIN/fusedmap" --json "$BED_CLI_DIR/$file")
phys=$(jq '.[0].extents[0].physical' <<<"$map")
extents=$(jq '.[0].extents | length' <<<"$map")
# The region fio reads is exactly the file's blocks when they are one run on the device; else say how far apart.
span=$(jq '.[0].extents | (.[-1].physical + .[-1].length) - .[0].physical' <<<"$map")
want=$(sha256sum <"$BED_SRV_DIR/$file" | cut -d' ' -f1)
dest=$BED_DIR/copy.out # a local file on the machine's disk (the bed lives under ${TMPDIR:-/tmp})
echo "file: $size_mib MiB in $extents extent(s) spanning $span bytes of $BED_DEV_B from $phys; $(nproc) cores;" \
	"destination of fusedcp: $(df --output=source,fstype "$BED_DIR" | tail -1)" >&2

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { print b - a }'; }
# mbps SECONDS -> MB/s for $bytes
mbps() { awk -v b="$bytes" -v s="$1" 'BEGIN { printf "%.0f", b / s / 1e6 }'; }
median() { sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

# run_fio [DEPTH]: fio over the file's region of the client's device at DEPTH (8) reads in flight: whole command
# (wall) on stdout, fio's own clock to fio-times (depth 8) or fio32-times (32, the deep depth fusedcat may keep).
run_fio() {
	local t0 t out=$BED_DIR/fio.json depth=${1:-8} times=$BED_DIR/fio-times
	((depth == 8)) || times=$BED_DIR/fio$depth-times
	t0=$(now)
	fio --name=read --filename="$BED_DEV_B" --offset="$phys" --size="$bytes" --direct=1 --rw=read --bs=4M \
		--iodepth="$depth" --ioengine=libaio --output-format=json >"$out"
	t=$(elapsed "$t0")
	[[ $(jq '.jobs[0].read.io_bytes' "$out") == "$bytes" ]] || { echo "fio read $(jq '.jobs[0].read.io_bytes' "$out") bytes" >&2; exit 1; }
	jq '.jobs[0].read.runtime / 1000' "$out" >>"$times"
	echo "$t"
}
# run_fusedcat [BIN_DIR], run_fusedcp [BIN_DIR]: the commands of BIN_DIR (default this checkout's).
run_fusedcat() {
	local t0 t bin=${1:-$FUSED_BIN}
	t0=$(now)
	bed_in_client "$bin/fusedcat" -v "$BED_CLI_DIR/$file" >/dev/null 2>"$BED_DIR/cat.err"
	t=$(elapsed "$t0")
	grep -Eq ": direct($|;)" "$BED_DIR/cat.err" || { echo "fusedcat did not read direct: $(cat "$BED_DIR/cat.err")" >&2; exit 1; }
	[[ $bin != "$FUSED_BIN" ]] || grep -Eo "depth [0-9]+ \(.*\)" "$BED_DIR/cat.err" >>"$BED_DIR/depths" || echo "no depth said" >>"$BED_DIR/depths"
	echo "$t"
}
run_fusedcp() {
	local t0 t out=$BED_DIR/copy.json bin=${1:-$FUSED_BIN}
	rm -f "$dest"
	t0=$(now)
	bed_in_client "$bin/fusedcp" --json "$BED_CLI_DIR/$file" "$dest" >"$out"
	t=$(elapsed "$t0")
	[[ $(jq -r '.[0].path' "$out") == direct ]] || { echo "fusedcp did not read direct: $(cat "$out")" >&2; exit 1; }
	[[ $(sha256sum <"$dest" | cut -d' ' -f1) == "$want" ]] || { echo "fusedcp copy differs from the source" >&2; exit 1; }
	rm -f "$dest"
	echo "$t"
}
run_cp() {
	local t0 t
	sync
	echo 3 >/proc/sys/vm/drop_caches
	t0=$(now)
	bed_in_client cp "$BED_CLI_DIR/$file" /dev/null
	elapsed "$t0"
}

# Content first (untimed): what fusedcat writes to a pipe is the file.
got=$(bed_in_client "$FUSED_BIN/fusedcat" "$BED_CLI_DIR/$file" | sha256sum | cut -d' ' -f1)
[[ $got == "$want" ]] || { echo "fusedcat output differs from the source" >&2; exit 1; }

: >"$BED_DIR/fio-times"
: >"$BED_DIR/fio32-times"
: >"$BED_DIR/depths"
: >"$BED_DIR/pairs"
declare -A times
for ((r = 1; r <= rounds; r++)); do
	declare -A t=()
	# fio and fusedcat swap places every round: neither always reads right after the other (the host's cache of the
	# image, which a read warms, then favours both alike).
	if ((r % 2 == 1)); then t[fio]=$(run_fio); fi
	if [[ -n ${BASELINE:-} ]] && ((r % 2 == 0)); then
		# Every other round the baseline goes first: neither build always follows the same contender.
		t[base_fusedcat]=$(run_fusedcat "$BED_DIR/base-bin")
		t[base_fusedcp]=$(run_fusedcp "$BED_DIR/base-bin")
	fi
	t[fusedcat]=$(run_fusedcat)
	if ((r % 2 == 0)); then t[fio]=$(run_fio); fi
	t[fio32]=$(run_fio 32)
	t[fusedcp]=$(run_fusedcp)
	if [[ -n ${BASELINE:-} ]] && ((r % 2 == 1)); then
		t[base_fusedcat]=$(run_fusedcat "$BED_DIR/base-bin")
		t[base_fusedcp]=$(run_fusedcp "$BED_DIR/base-bin")
	fi
	[[ $r == 1 ]] && t[cp]=$(run_cp) # through a 1 Gbit link: one round is plenty
	line="round $r (s):"
	for k in "${!t[@]}"; do
		times[$k]+="${t[$k]} "
		line+=" $k ${t[$k]}"
	done
	echo "$line; fio's own clock $(tail -1 "$BED_DIR/fio-times"), at depth 32 $(tail -1 "$BED_DIR/fio32-times"); fusedcat: $(tail -1 "$BED_DIR/depths")" >&2
	# The pair of this round, run back to back (in either order): fio's own clock and the whole fusedcat command.
	echo "$(tail -1 "$BED_DIR/fio-times") ${t[fusedcat]}" >>"$BED_DIR/pairs"
done
declare -A rate
keys=(fio fusedcat fusedcp cp)
[[ -z ${BASELINE:-} ]] || keys+=(base_fusedcat base_fusedcp)
for k in "${keys[@]}"; do
	m=$(tr ' ' '\n' <<<"${times[$k]}" | grep . | median)
	rate[$k]=$(mbps "$m")
done
rate[fio_own]=$(mbps "$(median <"$BED_DIR/fio-times")")
rate[fio32_own]=$(mbps "$(median <"$BED_DIR/fio32-times")")
printf '%-52s %8s MB/s\n' "fio read bs=4M iodepth=8 libaio (fio's own clock)" "${rate[fio_own]}" \
	"  the same at iodepth=32 (fio's own clock)" "${rate[fio32_own]}" \
	"  the same, whole fio command (wall)" "${rate[fio]}" \
	"fusedcat FILE >/dev/null (whole command)" "${rate[fusedcat]}" \
	"fusedcp FILE local-disk-file (whole command, fsync)" "${rate[fusedcp]}" \
	"cp through the sshfs mount (1 Gbit veth)" "${rate[cp]}"
if [[ -n ${BASELINE:-} ]]; then
	printf '%-52s %8s MB/s\n' "baseline fusedcat >/dev/null ($BASELINE)" "${rate[base_fusedcat]}" \
		"baseline fusedcp local-disk-file" "${rate[base_fusedcp]}"
	awk -v o="${rate[fio_own]}" -v f="${rate[base_fusedcat]}" -v p="${rate[base_fusedcp]}" 'BEGIN {
		printf "baseline ratio fusedcat/fio (own clock):  %.2f\n", f / o
		printf "baseline ratio fusedcp(file)/fio:         %.2f\n", p / o
	}'
fi
awk -v o="${rate[fio_own]}" -v o32="${rate[fio32_own]}" -v w="${rate[fio]}" -v f="${rate[fusedcat]}" -v p="${rate[fusedcp]}" -v c="${rate[cp]}" 'BEGIN {
	printf "ratio fusedcat/fio (own clock):  %.2f\n", f / o
	printf "ratio fusedcat/fio at depth 32:  %.2f\n", f / o32
	printf "ratio fusedcat/fio (whole fio):  %.2f\n", f / w
	printf "ratio fusedcp(file)/fio:         %.2f\n", p / o
	printf "ratio fusedcat/cp(network):      %.1f\n", f / c
}'
# Per round, fio and fusedcat ran back to back: the median of their ratios is the least disturbed by the
# device's drift between rounds (a virtual disk over a shared host: single runs wander by up to 2x).
awk '{ print $1 / $2 }' "$BED_DIR/pairs" | sort -g | awk '{ a[NR] = $1 } END {
	printf "ratio fusedcat/fio (own clock), median of the %d rounds'"'"' pairs: %.2f (%.2f to %.2f)\n", NR, a[int((NR + 1) / 2)], a[1], a[NR] }'
