#!/usr/bin/env bats
# Throttling, client side, on the two-node bed (ext4-4k): direct reads and writes paced by the map server's grants
# under node limits and volume caps, --limit on top, --fallback through the mount, limits changed mid-copy. Rates
# are measured from the copies' own --json timings or from the growth of their temporary files; bounds are the
# issue's (15 %, or 10 MiB/s of 50), never tighter.

load helpers
source "$FUSED_LIB/writecases.bash"

MiB=1048576

setup_file() {
	requires_root
	bed_init || return 1
	echo "$BED_DIR" >"$BATS_FILE_TMPDIR/bed_dir"
	bed_make_nodes &&
		bed_make_volume ext4-4k 3G &&
		bed_start_sshd &&
		bed_mount_client &&
		bed_start_server --role cli=rw --role cli2=rw --role adm=admin &&
		fuse_client >"$BED_DIR/fuse.out" || return 1
	grep -q 'access rw' "$BED_DIR/fuse.out" || { cat "$BED_DIR/fuse.out"; echo "the client's fuse is not rw" >&2; return 1; }
	# A second client node: its own key, registry and sshfs mount of the same volume, fused as cli2.
	TB_KEY2=$(bed_node_key cli2) || return 1
	TB_MNT2=$BED_DIR/client2-volume
	TB_STATE2=$BED_DIR/client2-state
	mkdir -p "$TB_STATE2" "$BED_DIR/src"
	export TB_KEY2 TB_MNT2 TB_STATE2
	bed_mount_client "$BED_SRV_DIR" "$TB_MNT2" &&
		in_client2 "$FUSED_BIN/fusedctl" fuse "$TB_MNT2" --server "$BED_SERVER" --key-file "$TB_KEY2" --node cli2 >/dev/null
}

teardown_file() { bed_teardown_file; }

# Every test starts without limits and without leftovers.
teardown() {
	[[ -z ${BED_SRV_DIR:-} ]] || {
		tb_limit CLEAR all >/dev/null || true
		rm -f "$BED_SRV_DIR"/tb-* "$BED_SRV_DIR"/.tb-*
	}
}

# in_client2 CMD...: run CMD as the second client node (its registry, the client namespace).
in_client2() { FUSED_STATE_DIR=$TB_STATE2 nsenter --net="/run/netns/$BED_CLI_NS" "$@"; }

# tb_limit ARGS...: LIMIT ARGS as the admin node; fails unless the server says OK.
tb_limit() {
	local out
	out=$(bed_in_client python3 "$FUSED_LIB/fusedproto.py" "$BED_SERVER" --secret-file "$BED_SECRET" --node adm "LIMIT $*" 2>/dev/null)
	[[ $out == OK* ]] || { echo "LIMIT $*: $out" >&2; return 1; }
}

# tb_file NAME MIB: a file of MIB MiB of random data written on the server (synced).
tb_file() {
	dd if=/dev/urandom of="$BED_SRV_DIR/$1" bs=1M count="$2" conv=fsync status=none
}

# tb_within VALUE LO HI: LO <= VALUE <= HI (decimals), else fail saying so.
tb_within() {
	awk -v v="$1" -v lo="$2" -v hi="$3" 'BEGIN { exit !(v >= lo && v <= hi) }' || fail "$1 is not within [$2, $3]${4:+ ($4)}"
}

# tb_sample DIR PID OUT: every 0.1 s while PID runs, "epoch-seconds bytes" of the temporary copy in DIR.
tb_sample() {
	local dir=$1 pid=$2 out=$3 size
	: >"$out"
	while kill -0 "$pid" 2>/dev/null; do
		size=$(find "$dir" -maxdepth 1 -name '.*.fused-*' -printf '%s\n' 2>/dev/null | sort -n | tail -1)
		[[ -z $size ]] || printf '%s %s\n' "$(date +%s.%N)" "$size" >>"$out"
		sleep 0.1
	done
}

# tb_rate OUT T0 T1: MiB/s the sampled copy grew between epoch seconds T0 and T1 (the last samples at or before
# each); fails when there are not two distinct samples.
tb_rate() {
	awk -v a="$2" -v b="$3" '
		$1 <= a { ta = $1; sa = $2 }
		$1 <= b { tb = $1; sb = $2 }
		END { if (ta == "" || tb <= ta) exit 1; printf "%.1f\n", (sb - sa) / (tb - ta) / 1048576 }' "$1"
}

# tb_plus T S: epoch second T plus S seconds (awk's print would round it to 6 digits).
tb_plus() { awk -v t="$1" -v s="$2" 'BEGIN { printf "%.3f\n", t + s }'; }

# tb_when OUT BYTES: the epoch second at which the sampled copy first reached BYTES.
tb_when() { awk -v n="$2" '$2 >= n { print $1; exit }' "$1"; }

@test "a node limit of 50 MiB/s paces a direct read: 300 MiB take 6 s ± 15 %, and --limit 25MiB on top halves the rate" {
	local d=$BATS_TEST_TMPDIR
	tb_file tb-300.bin 300
	tb_file tb-150.bin 150
	tb_limit SET node=cli rate=$((50 * MiB))
	run -0 --separate-stderr bed_in_client "$FUSED_BIN/fusedcp" --json "$BED_CLI_DIR/tb-300.bin" "$d/"
	assert_equal "$(jq -c '.[0] | [.status, .path, .bytesDirect, .throttle.bytesReadOverLimit]' <<<"$output")" "[\"copied\",\"direct\",$((300 * MiB)),0]"
	tb_within "$(jq '.[0].seconds' <<<"$output")" 5.1 6.9 "seconds for 300 MiB at 50 MiB/s"
	# Grant traffic stays tiny: a few grants a second.
	tb_within "$(jq '.[0].throttle.grants' <<<"$output")" 6 60 "grants"
	echo "# 300 MiB at a 50 MiB/s node limit: $(jq -c '.[0] | {seconds, mbPerSec, throttle}' <<<"$output")" >&3
	assert_equal "$(rc_sha "$d/tb-300.bin")" "$(rc_sha "$BED_SRV_DIR/tb-300.bin")"
	run -0 --separate-stderr bed_in_client "$FUSED_BIN/fusedcp" --json --limit 25MiB "$BED_CLI_DIR/tb-150.bin" "$d/"
	assert_equal "$(jq -c '.[0] | [.status, .path, .bytesDirect]' <<<"$output")" "[\"copied\",\"direct\",$((150 * MiB))]"
	tb_within "$(jq '.[0].seconds' <<<"$output")" 5.1 6.9 "seconds for 150 MiB at --limit 25MiB"
	echo "# 150 MiB at --limit 25MiB under 50 MiB/s: $(jq -c '.[0] | {seconds, mbPerSec, throttle}' <<<"$output")" >&3
	assert_equal "$(rc_sha "$d/tb-150.bin")" "$(rc_sha "$BED_SRV_DIR/tb-150.bin")"
}

@test "fusedcat --limit paces a pipe like pv -L, with or without a server limit" {
	local t0 t1
	tb_file tb-cat.bin 50
	t0=$(date +%s.%N)
	run -0 rc_cat_sha --limit 25M "$BED_CLI_DIR/tb-cat.bin"
	t1=$(date +%s.%N)
	assert_equal "$output" "$(rc_sha "$BED_SRV_DIR/tb-cat.bin")"
	# 52.4 MB at 25 MB/s: 2.1 s, plus up to 0.5 s for the command's start.
	tb_within "$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')" 1.78 2.9 "seconds for 50 MiB at 25M"
}

@test "two nodes under a 100 MiB/s volume cap get 50 ± 10 MiB/s each; when one finishes the other rises to the cap within 2 s" {
	local d=$BATS_TEST_TMPDIR pa pb sa sb ra rb tb_end rate
	tb_file tb-a.bin 600
	tb_file tb-b.bin 200
	mkdir -p "$d/a" "$d/b"
	tb_limit SET volume=vol rate=$((100 * MiB))
	bed_in_client "$FUSED_BIN/fusedcp" --json "$BED_CLI_DIR/tb-a.bin" "$d/a/" >"$d/a.json" 2>"$d/a.err" &
	pa=$!
	in_client2 "$FUSED_BIN/fusedcp" --json "$TB_MNT2/tb-b.bin" "$d/b/" >"$d/b.json" 2>"$d/b.err" &
	pb=$!
	tb_sample "$d/a" "$pa" "$d/a.samples" &
	sa=$!
	tb_sample "$d/b" "$pb" "$d/b.samples" &
	sb=$!
	wait "$pb" || fail "node cli2's copy failed: $(cat "$d/b.err")"
	wait "$pa" || fail "node cli's copy failed: $(cat "$d/a.err")"
	wait "$sa" "$sb"
	assert_equal "$(jq -c '.[0] | [.status, .path]' "$d/a.json")" '["copied","direct"]'
	assert_equal "$(jq -c '.[0] | [.status, .path]' "$d/b.json")" '["copied","direct"]'
	assert_equal "$(rc_sha "$d/a/tb-a.bin")" "$(rc_sha "$BED_SRV_DIR/tb-a.bin")"
	assert_equal "$(rc_sha "$d/b/tb-b.bin")" "$(rc_sha "$BED_SRV_DIR/tb-b.bin")"
	# Both at once, once the start's bursts (a quarter second of budget on each side) are spent: from when both
	# have 48 MiB until the smaller is at 184 of its 200 MiB.
	local from to
	from=$(printf '%s\n%s\n' "$(tb_when "$d/a.samples" $((48 * MiB)))" "$(tb_when "$d/b.samples" $((48 * MiB)))" | sort -n | tail -1)
	to=$(tb_when "$d/b.samples" $((184 * MiB)))
	[[ -n $from && -n $to ]] || fail "no samples: $(cat "$d/a.err" "$d/b.err")"
	ra=$(tb_rate "$d/a.samples" "$from" "$to")
	rb=$(tb_rate "$d/b.samples" "$from" "$to")
	echo "# sharing a 100 MiB/s cap: cli $ra MiB/s, cli2 $rb MiB/s" >&3
	tb_within "$ra" 40 60 "node cli's MiB/s while both copy"
	tb_within "$rb" 40 60 "node cli2's MiB/s while both copy"
	# cli2 is done (its last sample); from 2 s later node cli draws the whole cap (over 2 s: a one-second window of
	# destination growth caught a writeback stall of the VM's disk once).
	tb_end=$(tail -1 "$d/b.samples" | cut -d' ' -f1)
	rate=$(tb_rate "$d/a.samples" "$(tb_plus "$tb_end" 2)" "$(tb_plus "$tb_end" 4)")
	echo "# alone under the cap, 2 to 4 s after the other finished: cli $rate MiB/s" >&3
	tb_within "$rate" 85 115 "node cli's MiB/s alone under a 100 MiB/s cap"
}

@test "a limit changed while a copy runs takes effect within 1 s, down and up" {
	local d=$BATS_TEST_TMPDIR pid sampler t_low t_high rate
	tb_file tb-change.bin 600
	tb_limit SET node=cli rate=$((100 * MiB))
	bed_in_client "$FUSED_BIN/fusedcp" --json "$BED_CLI_DIR/tb-change.bin" "$d/" >"$d/out.json" 2>"$d/err" &
	pid=$!
	tb_sample "$d" "$pid" "$d/samples" &
	sampler=$!
	sleep 1.5
	tb_limit SET node=cli rate=$((20 * MiB))
	t_low=$(date +%s.%N)
	sleep 3
	tb_limit SET node=cli rate=$((100 * MiB))
	t_high=$(date +%s.%N)
	wait "$pid" || fail "the copy failed: $(cat "$d/err")"
	wait "$sampler"
	assert_equal "$(jq -c '.[0] | [.status, .path]' "$d/out.json")" '["copied","direct"]'
	assert_equal "$(rc_sha "$d/tb-change.bin")" "$(rc_sha "$BED_SRV_DIR/tb-change.bin")"
	rate=$(tb_rate "$d/samples" "$(tb_plus "$t_low" 1)" "$(tb_plus "$t_low" 3)")
	echo "# lowered to 20 MiB/s: $rate MiB/s from 1 s after" >&3
	tb_within "$rate" 17 23 "MiB/s from 1 s after the limit went down to 20"
	rate=$(tb_rate "$d/samples" "$(tb_plus "$t_high" 1)" "$(tb_plus "$t_high" 2.5)")
	echo "# raised to 100 MiB/s: $rate MiB/s from 1 s after" >&3
	tb_within "$rate" 85 115 "MiB/s from 1 s after the limit went up to 100"
}

@test "--fallback: bytes over the limit go through the mount; direct + network bytes = the size; sha256 matches" {
	local d=$BATS_TEST_TMPDIR size=$((200 * MiB))
	tb_file tb-fb.bin 200
	tb_limit SET node=cli rate=$((20 * MiB))
	run -0 --separate-stderr bed_in_client "$FUSED_BIN/fusedcp" --json --fallback "$BED_CLI_DIR/tb-fb.bin" "$d/"
	echo "# --fallback at 20 MiB/s: $(jq -c '.[0] | {seconds, bytesDirect, bytesNetwork, throttle}' <<<"$output")" >&3
	assert_equal "$(jq -c '.[0] | [.status, .path, .reason]' <<<"$output")" '["copied","mixed","over the throttle limit (--fallback)"]'
	assert_equal "$(jq '.[0] | .bytesDirect + .bytesZero + .bytesNetwork' <<<"$output")" "$size"
	assert_equal "$(jq '.[0] | .throttle.bytesReadOverLimit == .bytesNetwork' <<<"$output")" true
	(($(jq '.[0].bytesDirect' <<<"$output") > 0)) || fail "nothing went direct"
	(($(jq '.[0].bytesNetwork' <<<"$output") > 0)) || fail "nothing went through the mount"
	# Faster than waiting would be (10 s at 20 MiB/s): the excess did not wait.
	tb_within "$(jq '.[0].seconds' <<<"$output")" 0 8.5 "seconds with --fallback"
	assert_equal "$(rc_sha "$d/tb-fb.bin")" "$(rc_sha "$BED_SRV_DIR/tb-fb.bin")"
}

@test "a direct write onto the fused mount is paced by the node limit" {
	local size=$((150 * MiB))
	wc_src "$size"
	tb_limit SET node=cli rate=$((50 * MiB))
	run -0 --separate-stderr bed_in_client "$FUSED_BIN/fusedcp" --json "$WC_SRC" "$BED_CLI_DIR/tb-write.bin"
	echo "# a 150 MiB direct write at 50 MiB/s: $(jq -c '.[0] | {seconds, write, throttle}' <<<"$output")" >&3
	assert_equal "$(jq -c '.[0] | [.status, .write.path, .write.bytesDirect]' <<<"$output")" "[\"copied\",\"direct\",$size]"
	# 3 s at the limit, and a little more for allocation and commit.
	tb_within "$(jq '.[0].seconds' <<<"$output")" 2.55 4.5 "seconds for a 150 MiB write at 50 MiB/s"
	assert_equal "$(rc_sha "$BED_SRV_DIR/tb-write.bin")" "$(rc_sha "$WC_SRC")"
}

@test "a direct write over the limit with --fallback commits what went direct and writes the rest through the mount" {
	local size=$((150 * MiB))
	wc_src "$size"
	tb_limit SET node=cli rate=$((20 * MiB))
	run -0 --separate-stderr bed_in_client "$FUSED_BIN/fusedcp" --json --fallback "$WC_SRC" "$BED_CLI_DIR/tb-write-fb.bin"
	echo "# a 150 MiB write at 20 MiB/s with --fallback: $(jq -c '.[0] | {seconds, write, throttle}' <<<"$output")" >&3
	assert_equal "$(jq -c '.[0] | [.status, .write.path, .write.reason]' <<<"$output")" '["copied","mixed","over the throttle limit (--fallback)"]'
	assert_equal "$(jq '.[0].write | .bytesDirect + .bytesNetwork' <<<"$output")" "$size"
	assert_equal "$(jq '.[0] | .throttle.bytesWrittenOverLimit == .write.bytesNetwork' <<<"$output")" true
	assert_equal "$(rc_sha "$BED_SRV_DIR/tb-write-fb.bin")" "$(rc_sha "$WC_SRC")"
}
