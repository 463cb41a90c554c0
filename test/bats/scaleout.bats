#!/usr/bin/env bats
# Peer-to-peer scale-out: node A serves volume A (ext4) and is a client of volume B; node B serves volume B (XFS)
# and is a client of volume A; node C is a client of both. Copies go direct on both ends, each on the copying
# node's own device, and the two map servers' leases are independent.

load helpers
source "$FUSED_LIB/readcases.bash"

MiB=1048576

setup_file() {
	requires_root
	bed_init || return 1
	echo "$BED_DIR" >"$BATS_FILE_TMPDIR/bed_dir"
	bed_make_scaleout ext4-4k xfs 2G --reserve 256M || return 1
	local y x
	for y in A B C; do
		for x in A B; do
			[[ $y == "$x" ]] && continue
			bed_fuse_peer "$y" "$x" >"$BED_DIR/fuse-$y-$x.out" || return 1
			grep -q 'access rw' "$BED_DIR/fuse-$y-$x.out" || { echo "node $y's fuse of $x is not rw" >&2; return 1; }
		done
	done
}

teardown_file() { bed_teardown_file; }

# on_volume X NAME MIB: NAME on volume X (written on node X's own mount), MIB MiB of random bytes, on the disk.
on_volume() {
	local dir=BED_VOL_${1}_DIR
	head -c $(($3 * MiB)) /dev/urandom >"${!dir}/$2" && sync -f "${!dir}/$2"
}

# assert_wrote DEV SECTORS BEFORE / assert_read DEV SECTORS BEFORE: DEV wrote (read) at least SECTORS sectors
# since its counter said BEFORE.
assert_wrote() { (($(bed_sectors_written "$1") - $3 >= $2)) || fail "$1 wrote $(($(bed_sectors_written "$1") - $3)) sectors, expected at least $2"; }
assert_read() { (($(bed_sectors_read "$1") - $3 >= $2)) || fail "$1 read $(($(bed_sectors_read "$1") - $3)) sectors, expected at least $2"; }

# assert_written_direct JSON SIZE: fusedcp's object for one file says copied, written direct, every byte.
assert_written_direct() {
	assert_equal "$(jq -c '[.status, .write.path, .write.fallback, .write.interrupted, .write.bytesDirect, .write.bytesNetwork]' <<<"$1")" \
		"[\"copied\",\"direct\",false,false,$2,0]"
}

@test "node A copies from its own volume onto volume B, node B from its own onto A: each written direct on the copying node's device" {
	local size=$((48 * MiB)) wab wba wca wcb
	on_volume A own-a.bin 48
	on_volume B own-b.bin 48
	wab=$(bed_sectors_written "$BED_DEV_A_B") wba=$(bed_sectors_written "$BED_DEV_B_A")
	wca=$(bed_sectors_written "$BED_DEV_C_A") wcb=$(bed_sectors_written "$BED_DEV_C_B")
	run -0 --separate-stderr bed_in_peer A "$FUSED_BIN/fusedcp" --json "$BED_VOL_A_DIR/own-a.bin" "$BED_MNT_A_B/from-a.bin"
	assert_written_direct "$(jq -c '.[0]' <<<"$output")" "$size"
	run -0 --separate-stderr bed_in_peer B "$FUSED_BIN/fusedcp" --json "$BED_VOL_B_DIR/own-b.bin" "$BED_MNT_B_A/from-b.bin"
	assert_written_direct "$(jq -c '.[0]' <<<"$output")" "$size"
	# Exact on each server's own mount, at once.
	assert_equal "$(rc_sha "$BED_VOL_B_DIR/from-a.bin")" "$(rc_sha "$BED_VOL_A_DIR/own-a.bin")"
	assert_equal "$(rc_sha "$BED_VOL_A_DIR/from-b.bin")" "$(rc_sha "$BED_VOL_B_DIR/own-b.bin")"
	# Node A's own path to B's disk carried A's copy and node B's path to A's disk carried B's; the client's
	# devices of both volumes wrote nothing.
	assert_wrote "$BED_DEV_A_B" $((size / 512)) "$wab"
	assert_wrote "$BED_DEV_B_A" $((size / 512)) "$wba"
	assert_equal "$(bed_sectors_written "$BED_DEV_C_A") $(bed_sectors_written "$BED_DEV_C_B")" "$wca $wcb"
	rc_no_temps "$BED_VOL_A_DIR"
	rc_no_temps "$BED_VOL_B_DIR"
}

@test "a client fuses both volumes and copies A to B: read direct from its device of A, written direct on its device of B" {
	local size=$((64 * MiB)) ra wb json
	on_volume A c.bin 64
	ra=$(bed_sectors_read "$BED_DEV_C_A") wb=$(bed_sectors_written "$BED_DEV_C_B")
	run -0 --separate-stderr bed_in_peer C "$FUSED_BIN/fusedcp" --json "$BED_MNT_C_A/c.bin" "$BED_MNT_C_B/c.bin"
	json=$(jq -c '.[0]' <<<"$output")
	assert_equal "$(jq -c '[.path, .bytesDirect, .bytesNetwork]' <<<"$json")" "[\"direct\",$size,0]"
	assert_written_direct "$json" "$size"
	assert_read "$BED_DEV_C_A" $((size / 512)) "$ra"
	assert_wrote "$BED_DEV_C_B" $((size / 512)) "$wb"
	assert_equal "$(rc_sha "$BED_VOL_B_DIR/c.bin")" "$(rc_sha "$BED_VOL_A_DIR/c.bin")"
	rc_no_temps "$BED_VOL_B_DIR"
}

@test "fusedctl status --json on the client lists both fuses with their servers, devices and access; each node has its own registry" {
	run -0 --separate-stderr bed_in_peer C "$FUSED_BIN/fusedctl" status --json
	assert_equal "$(jq -c 'sort_by(.volume) | map([.mountpoint, .volume, .server, .device, .uuid, .fstype, .access, .serverReachable, .devicePresent, .uuidMatches, .problem])' <<<"$output")" \
		"$(jq -nc --arg ma "$BED_MNT_C_A" --arg mb "$BED_MNT_C_B" --arg sa "$BED_SERVER_C_A" --arg sb "$BED_SERVER_C_B" \
			--arg da "$BED_DEV_C_A" --arg db "$BED_DEV_C_B" --arg ua "$BED_VOL_A_UUID" --arg ub "$BED_VOL_B_UUID" \
			'[[$ma, "A", $sa, $da, $ua, "ext4", "rw", true, true, true, null], [$mb, "B", $sb, $db, $ub, "xfs", "rw", true, true, true, null]]')"
	# Two servers, one per volume, each reached on its own link.
	assert_equal "$BED_SERVER_C_A $BED_SERVER_C_B" "10.214.2.1:$BED_PORT 10.214.3.1:$BED_PORT"
	run -0 --separate-stderr bed_in_peer A "$FUSED_BIN/fusedctl" status --json
	assert_equal "$(jq -c 'map([.volume, .server, .device, .serverReachable])' <<<"$output")" "[[\"B\",\"$BED_SERVER_A_B\",\"$BED_DEV_A_B\",true]]"
	run -0 --separate-stderr bed_in_peer B "$FUSED_BIN/fusedctl" status --json
	assert_equal "$(jq -c 'map([.volume, .server, .device, .serverReachable])' <<<"$output")" "[[\"A\",\"$BED_SERVER_B_A\",\"$BED_DEV_B_A\",true]]"
}

# wait_write_lease DIR NAME: wait (bounded, 0.05 s steps) until the server of DIR holds the write lease on fusedcp's
# temporary file for NAME there; sets TEMP to its path.
wait_write_lease() {
	local tries=400
	until TEMP=$(find "$1" -maxdepth 1 -name ".$2.fused-*" -print -quit 2>/dev/null) && [[ -n $TEMP ]] && rc_lease_held "$TEMP"; do
		((tries-- > 0)) || { echo "no write lease in $1 for $2's temporary file" >&2; return 1; }
		sleep 0.05
	done
}

# A copy whose source is recalled starts again through the mount, destination too (fusedcp(1): the result is one
# consistent read). What must not move is everything else: the other file copied at once by the same fusedcp, over
# the same two sessions, keeps its read lease on A and its write lease on B and finishes direct on both ends.
@test "the servers' leases are independent: a recall on A mid-copy leaves the write on B of the copy beside it direct and whole" {
	local size=$((128 * MiB)) out=$BATS_TEST_TMPDIR/cp pid ms x y
	mkdir "$BED_VOL_A_DIR/tree"
	on_volume A tree/x.bin 128
	on_volume A tree/y.bin 128
	# Both at once (-j 2), each paced at 24 MiB/s or less: over 5 s, and the opener comes within a second or two.
	bed_in_peer C "$FUSED_BIN/fusedcp" -r -j 2 --limit 24MiB --json "$BED_MNT_C_A/tree" "$BED_MNT_C_B/" >"$out.json" 2>"$out.err" &
	pid=$!
	wait_write_lease "$BED_VOL_B_DIR/tree" x.bin
	wait_write_lease "$BED_VOL_B_DIR/tree" y.bin
	rc_wait_lease "$BED_VOL_A_DIR/tree/x.bin"
	rc_wait_lease "$BED_VOL_A_DIR/tree/y.bin"
	# An opener for writing on server A (not changing a byte): A recalls x.bin's read lease.
	rc_timed ms bed_in_peer A timeout 20 sh -c 'exec 3>>"$1"' sh "$BED_VOL_A_DIR/tree/x.bin"
	# y.bin was still being copied when A's recall was over: both its leases held.
	rc_lease_held "$TEMP" && rc_lease_held "$BED_VOL_A_DIR/tree/y.bin" || fail "y.bin's leases were gone by the time A's recall was over"
	wait "$pid" || fail "fusedcp failed: $(cat "$out.err")"
	((ms < 20000)) || fail "the opener on A waited ${ms} ms"
	x=$(jq -c '.[] | select(.source | endswith("/x.bin"))' "$out.json")
	y=$(jq -c '.[] | select(.source | endswith("/y.bin"))' "$out.json")
	# x.bin: recalled mid-read, copied again through the mount, and its write says so.
	assert_equal "$(jq -c '[.status, .interrupted, (.reason | test("recalled")), .path]' <<<"$x")" '["copied",true,true,"network"]'
	assert_equal "$(jq -c '[.write.path, .write.fallback, .write.reason, .write.bytesDirect, .write.bytesNetwork]' <<<"$x")" \
		"[\"network\",true,\"restarted through the mount\",0,$size]"
	# y.bin: read direct from A, written direct on B, every byte, not interrupted.
	assert_equal "$(jq -c '[.path, .interrupted, .bytesDirect]' <<<"$y")" "[\"direct\",false,$size]"
	assert_written_direct "$y" "$size"
	assert_equal "$(rc_sha "$BED_VOL_B_DIR/tree/x.bin")" "$(rc_sha "$BED_VOL_A_DIR/tree/x.bin")"
	assert_equal "$(rc_sha "$BED_VOL_B_DIR/tree/y.bin")" "$(rc_sha "$BED_VOL_A_DIR/tree/y.bin")"
	rc_no_temps "$BED_VOL_B_DIR"
}
