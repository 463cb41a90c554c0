#!/usr/bin/env bash
# Start-up benchmark (not a test): wall and CPU time of one short command of each binary against `node -e 0`
# (the floor), median of N runs, printed in ms with the excess over the floor.
# Usage: test/bench/startup.sh [--runs N] [--bed]
#   --runs N  runs per command (default 21; interleaved, so drift in the machine's load hits every row alike)
#   --bed     also `fusedcat` of a 1-byte file on a fused mount of the two-node bed (root; builds the bed)
# Runs the commands without NODE_EXTRA_CA_CERTS and NODE_OPTIONS: Node 20 reads the extra CA file at every start
# (tens of ms here), a cost of the environment, not of fused; the note at the end says what it costs.
set -euo pipefail
cd "$(dirname "$0")/../.."
runs=21 bed=0
while [[ $# -gt 0 ]]; do
	case $1 in
	--runs) runs=$2; shift 2 ;;
	--bed) bed=1; shift ;;
	*) echo "startup.sh: unknown argument '$1'" >&2; exit 2 ;;
	esac
done
extra_ca=${NODE_EXTRA_CA_CERTS:-}
unset NODE_EXTRA_CA_CERTS NODE_OPTIONS
npm run --silent build # tsc and the one-file bundles (scripts/bundle.mjs) the commands start from

work=$(mktemp -d "${TMPDIR:-/tmp}/fused-startup.XXXXXX")
cleanup() { if [[ $bed == 1 ]]; then bed_teardown; fi; rm -rf "$work"; }
trap cleanup EXIT
printf x >"$work/one-byte" # a local file: fusedcat takes the plain path (no fuse covers it)

names=() cmds=()
add() { names+=("$1"); cmds+=("$2"); }
add 'node -e 0' 'node -e 0'
add 'fusedcat --help' 'node bin/fusedcat.cjs --help'
add 'fusedcp --help' 'node bin/fusedcp.cjs --help'
add 'fusedmap --help' 'node bin/fusedmap.cjs --help'
add 'fusedctl --help' 'node bin/fusedctl.cjs --help'
add 'fusedctl --version' 'node bin/fusedctl.cjs --version'
add 'fusedthrottle --version' 'node bin/fusedthrottle.cjs --version'
add 'fusedcat 1 B local' "node bin/fusedcat.cjs $work/one-byte"

if [[ $bed == 1 ]]; then
	[[ $(id -u) == 0 ]] || { echo "startup.sh: --bed needs root (loop devices, namespaces)" >&2; exit 2; }
	source test/lib/bed.bash
	bed_init "start$$"
	bed_make_volume ext4-4k 256M
	bed_make_nodes 1gbit
	bed_start_sshd
	bed_mount_client
	bed_start_server
	bed_in_client "$FUSED_BIN/fusedctl" fuse "$BED_CLI_DIR" --server "$BED_SERVER" --key-file "$BED_KEY" --node cli >/dev/null
	printf x >"$BED_SRV_DIR/one-byte"
	sync
	add 'fusedcat 1 B fused' "bed_in_client node bin/fusedcat.cjs $BED_CLI_DIR/one-byte"
	[[ $(bed_in_client node bin/fusedcat.cjs "$BED_CLI_DIR/one-byte") == x ]] || { echo "startup.sh: fusedcat read the wrong byte" >&2; exit 1; }
fi

# Every command must do what it is timed doing (a broken build would start fast and fail).
for i in "${!cmds[@]}"; do
	[[ ${names[i]} == 'node -e 0' ]] && continue
	eval "${cmds[i]}" >/dev/null 2>"$work/err" || { echo "startup.sh: '${names[i]}' failed (exit $?): $(cat "$work/err")" >&2; exit 1; }
done

TIMEFORMAT='%3R %3U %3S'
for ((r = 0; r < runs; r++)); do
	for i in "${!cmds[@]}"; do
		{ time eval "${cmds[i]}" >/dev/null 2>&1; } 2>>"$work/t.$i"
	done
done

median() { sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
col() { awk -v c="$1" '{ printf "%.1f\n", $c * 1000 }' "$2" | median; }
cores=$(nproc)
echo "node $(node --version), $cores cores, load $(cut -d' ' -f1-3 /proc/loadavg), median of $runs runs"
printf '%-24s %9s %9s %9s %11s\n' command 'wall ms' 'cpu ms' 'excess ms' 'excess cpu'
floor_wall=$(col 1 "$work/t.0")
cpu() { awk '{ printf "%.1f\n", ($2 + $3) * 1000 }' "$1" | median; }
floor_cpu=$(cpu "$work/t.0")
for i in "${!cmds[@]}"; do
	wall=$(col 1 "$work/t.$i")
	cpu=$(cpu "$work/t.$i")
	printf '%-24s %9s %9s %9s %11s\n' "${names[i]}" "$wall" "$cpu" \
		"$(awk -v a="$wall" -v b="$floor_wall" 'BEGIN { printf "%+.1f", a - b }')" \
		"$(awk -v a="$cpu" -v b="$floor_cpu" 'BEGIN { printf "%+.1f", a - b }')"
done
if [[ -n $extra_ca ]]; then
	for ((r = 0; r < runs; r++)); do
		{ time NODE_EXTRA_CA_CERTS=$extra_ca node -e 0; } 2>>"$work/t.ca"
	done
	echo "note: NODE_EXTRA_CA_CERTS is set in this environment; with it, node -e 0 takes $(col 1 "$work/t.ca") ms wall" \
		"(the rows above ran without it)"
fi
