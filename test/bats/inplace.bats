#!/usr/bin/env bats
# fusedcp --inplace on XFS where it matters most: a file whose blocks are partly shared with a sibling (reflink) is
# overwritten in place without a byte of the sibling changing; and a read-only node overwrites through the mount.
# (The plain in-place cases run on every file system in write-suite.bash.)

load helpers
source "$FUSED_LIB/writecases.bash"

# Short, for the test of a client killed mid-file (its write lease must run out).
LEASE_TIME=3

setup_file() { wc_setup_file xfs --lease-time "$LEASE_TIME"; }

teardown_file() { bed_teardown_file; }

# sib_disk_state FILE: FILE's physical blocks (filefrag's extents, physically contiguous ones merged: the shared
# flag splits them) and the sha256 of its bytes read with O_DIRECT from the disk: what a direct write into its
# blocks would change.
sib_disk_state() {
	filefrag -v "$1" | awk '/^ *[0-9]+:/ {
		s = $4; e = $5; sub(/\.\./, "", s); sub(/:/, "", e)
		if (n && s == last + 1) { last = e; next }
		if (n) print first "-" last
		first = s; last = e; n++
	} END { if (n) print first "-" last }'
	wc_disk_sha "$1"
}

@test "a reflinked file on XFS overwritten in place: its own blocks direct, the shared ones through the mount, its sibling unchanged on the disk" {
	local size=$((8 * 1048576)) mib=1048576 sib_sha sib_before new sha
	WC_INO=$(wc_server_file shared.bin "$size")
	cp --reflink=always "$BED_SRV_DIR/shared.bin" "$BED_SRV_DIR/sibling.bin"
	sib_sha=$(rc_sha "$BED_SRV_DIR/sibling.bin")
	# The first and last 2 MiB of shared.bin made its own again (copy on write on the server): own, shared, own.
	dd if=/dev/urandom of="$BED_SRV_DIR/shared.bin" bs=1M count=2 conv=notrunc,fsync status=none
	dd if=/dev/urandom of="$BED_SRV_DIR/shared.bin" bs=1M seek=6 count=2 conv=notrunc,fsync status=none
	run -0 filefrag -v "$BED_SRV_DIR/shared.bin"
	assert_output --partial shared
	sib_before=$(sib_disk_state "$BED_SRV_DIR/sibling.bin")
	wc_src "$size" NEW
	new=$WC_SRC
	sha=$(rc_sha "$new")
	wc_inplace "$new" shared.bin
	# The shared 4 MiB through the mount (between two write maps), the rest on the device.
	assert_equal "$(wc_json_write "$(jq -c '.[0]' <<<"$output")")" "[\"mixed\",true,false,$((4 * mib)),$((4 * mib))]"
	assert_regex "$(jq -r '.[0].write.reason' <<<"$output")" 'shared'
	assert_equal "$(rc_sha "$BED_SRV_DIR/shared.bin")" "$sha"
	assert_equal "$(rc_sha "$BED_CLI_DIR/shared.bin")" "$sha"
	assert_equal "$(wc_disk_sha "$BED_SRV_DIR/shared.bin")" "$sha"
	# Not a byte of the sibling changed, on the disk either (no direct write into the blocks they shared).
	assert_equal "$(rc_sha "$BED_SRV_DIR/sibling.bin")" "$sib_sha"
	assert_equal "$(sib_disk_state "$BED_SRV_DIR/sibling.bin")" "$sib_before"
	rc_no_temps "$BED_SRV_DIR"
	rm "$BED_SRV_DIR"/{shared,sibling}.bin
}

@test "a file wholly shared with its sibling is overwritten in place through the mount; the sibling is unchanged" {
	local size=$((4 * 1048576 + 9)) sib_sha sib_before sha
	WC_INO=$(wc_server_file whole.bin "$size")
	cp --reflink=always "$BED_SRV_DIR/whole.bin" "$BED_SRV_DIR/whole-sibling.bin"
	sync
	sib_sha=$(rc_sha "$BED_SRV_DIR/whole-sibling.bin")
	sib_before=$(sib_disk_state "$BED_SRV_DIR/whole-sibling.bin")
	wc_src "$size" WHOLE
	sha=$(rc_sha "$WC_SRC")
	wc_inplace "$WC_SRC" whole.bin
	assert_equal "$(jq -c '.[0].write | [.path, .bytesDirect, .bytesNetwork]' <<<"$output")" "[\"network\",0,$size]"
	assert_equal "$(rc_sha "$BED_SRV_DIR/whole.bin")" "$sha"
	assert_equal "$(rc_sha "$BED_CLI_DIR/whole.bin")" "$sha"
	assert_equal "$(rc_sha "$BED_SRV_DIR/whole-sibling.bin")" "$sib_sha"
	assert_equal "$(sib_disk_state "$BED_SRV_DIR/whole-sibling.bin")" "$sib_before"
	rm "$BED_SRV_DIR"/whole{,-sibling}.bin
}

@test "an --inplace copy killed mid-file: each block old or new, the server reads what the disk holds, a new copy completes" {
	local size=$((1024 * 1048576)) old new before rc=0 tries d=$BATS_TEST_TMPDIR
	wc_src "$size" OLD; old=$WC_SRC
	wc_src "$size" NEW; new=$WC_SRC
	cp "$old" "$BED_SRV_DIR/killed.bin"
	sync -f "$BED_SRV_DIR/killed.bin"
	WC_INO=$(stat -c %i "$BED_SRV_DIR/killed.bin")
	# The server has the old bytes in its page cache.
	assert_equal "$(rc_sha "$BED_SRV_DIR/killed.bin")" "$(rc_sha "$old")"
	before=$(bed_sectors_written "$BED_DEV_B")
	wc_spawn_client "$d/out" "$d/err" "$FUSED_BIN/fusedcp" --inplace --json "$new" "$BED_CLI_DIR/killed.bin"
	rc_wait_lease "$BED_SRV_DIR/killed.bin" || fail "no write lease: $(cat "$d/err")"
	wc_wait_written "$BED_DEV_B" 65536 "$before" || fail "no direct write: $(cat "$d/err")"
	kill -KILL "$WC_PID"
	wc_wait_exit "$WC_PID" || rc=$?
	assert_equal "$rc" 137
	# The lease runs out (nobody answers for the dead client).
	tries=$(((LEASE_TIME + 1) * 20 + 300))
	while rc_lease_held "$BED_SRV_DIR/killed.bin"; do
		((tries-- > 0)) || fail "the write lease is still held"
		sleep 0.05
	done
	assert_equal "$(stat -c '%i %s' "$BED_SRV_DIR/killed.bin")" "$WC_INO $size"
	# Old bytes and new ones, nothing else; some new.
	run -0 wc_blocks_either "$old" "$new" "$BED_SRV_DIR/killed.bin"
	[[ $output =~ b=([0-9]+) ]] && ((BASH_REMATCH[1] > 0)) || fail "no new block: $output"
	# The server's page cache holds nothing older than the disk.
	assert_equal "$(rc_sha "$BED_SRV_DIR/killed.bin")" "$(wc_disk_sha "$BED_SRV_DIR/killed.bin")"
	wc_inplace "$new" killed.bin
	assert_equal "$(jq -c '.[0].write | [.path, .bytesDirect]' <<<"$output")" "[\"direct\",$size]"
	assert_equal "$(rc_sha "$BED_SRV_DIR/killed.bin")" "$(rc_sha "$new")"
	rm "$BED_SRV_DIR/killed.bin"
}

@test "a read-only node's --inplace goes through the mount, same inode, nothing written to the device" {
	local mnt=$BED_DIR/ro-volume key before size=$((4 * 1048576 + 1))
	bed_mount_client "$BED_SRV_DIR" "$mnt"
	key=$(bed_node_key ro1)
	run -0 bed_in_client "$FUSED_BIN/fusedctl" fuse "$mnt" --server "$BED_SERVER" --key-file "$key" --node ro1
	assert_output --partial 'access ro'
	WC_INO=$(wc_server_file ro-inplace.bin $((6 * 1048576)))
	wc_src "$size" RO
	before=$(bed_sectors_written "$BED_DEV_B")
	run -0 --separate-stderr bed_in_client "$FUSED_BIN/fusedcp" --inplace --json "$WC_SRC" "$mnt/ro-inplace.bin"
	assert_equal "$(wc_json_write "$(jq -c '.[0]' <<<"$output")")" "[\"network\",false,false,0,$size]"
	assert_regex "$(jq -r '.[0].write.reason' <<<"$output")" 'read-only'
	assert_equal "$(bed_sectors_written "$BED_DEV_B")" "$before"
	assert_equal "$(stat -c %i "$BED_SRV_DIR/ro-inplace.bin")" "$WC_INO"
	assert_equal "$(stat -c %s "$BED_SRV_DIR/ro-inplace.bin")" "$size"
	assert_equal "$(rc_sha "$BED_SRV_DIR/ro-inplace.bin")" "$(rc_sha "$WC_SRC")"
	run -0 bed_in_client "$FUSED_BIN/fusedctl" unfuse "$mnt"
	rm "$BED_SRV_DIR/ro-inplace.bin"
}

@test "--inplace and -n together are a usage error (exit 2)" {
	run -2 --separate-stderr bed_in_client "$FUSED_BIN/fusedcp" --inplace -n /etc/hostname "$BED_CLI_DIR/x.bin"
	assert_equal "${stderr_lines[0]}" "fusedcp: options -n and --inplace cannot be used together"
	assert_equal "${stderr_lines[1]}" "Try 'fusedcp --help' for more information."
	[[ ! -e $BED_SRV_DIR/x.bin ]]
}
