# The fusedcat/fusedcp suite, shared by read-<fs>.bats: each sets FSTYPE (ext4-1k, ext4-4k, xfs) and loads this file.
# Tests are registered with bats_test_function rather than @test, since bats preprocesses @test only in a .bats file.

: "${FSTYPE:?read-suite: set FSTYPE before loading}"

load helpers
source "$FUSED_LIB/readcases.bash"

setup_file() {
	bed_setup_file "$FSTYPE"
	fuse_client >"$BED_DIR/fuse.out"
}

teardown_file() { bed_teardown_file; }

# cat_case CASE: fusedcat of the case's file through the fused mount equals the source.
cat_case() {
	rc_make "$1"
	run -0 --separate-stderr rc_cat_sha "$BED_CLI_DIR/$RC_FILE"
	assert_equal "$output" "$(rc_src_sha "$1")"
	assert_equal "$stderr" ''
}

# cp_case CASE: fusedcp --json of the case's file into a fresh directory equals the source; the file's
# JSON object is left in $json.
cp_case() {
	rc_make "$1"
	dst=$BATS_TEST_TMPDIR/out
	mkdir -p "$dst"
	run -0 --separate-stderr bed_in_client "$FUSED_BIN/fusedcp" --json "$BED_CLI_DIR/$RC_FILE" "$dst"
	json=$(jq -c '.[0]' <<<"$output")
	run -0 jq -r '[length, .[0].status] | @tsv' <<<"$output"
	assert_output $'1\tcopied'
	assert_equal "$(rc_sha_direct "$dst/$RC_FILE")" "$(rc_src_sha "$1")"
	assert_equal "$(jq .size <<<"$json")" "$(stat -c %s "$BED_SRV_DIR/$RC_FILE")"
	rc_no_temps "$dst"
}

# assert_device_read_at_least SECTORS BEFORE: the client's device ($BED_DEV_B) read at least SECTORS sectors
# since its counter said BEFORE.
assert_device_read_at_least() {
	local read=$(($(bed_sectors_read "$BED_DEV_B") - $2))
	((read >= $1)) || fail "the client's device read $read sectors, expected at least $1"
}

# assert_device_read_at_most SECTORS BEFORE: the client's device read at most SECTORS sectors since BEFORE.
assert_device_read_at_most() {
	local read=$(($(bed_sectors_read "$BED_DEV_B") - $2))
	((read <= $1)) || fail "the client's device read $read sectors, expected at most $1"
}

bats_test_function --description "fusedcat of a contiguous 64 MiB file equals the source ($FSTYPE)" -- test_read_cat_big
test_read_cat_big() { cat_case big; }

bats_test_function --description "fusedcp of a contiguous 64 MiB file equals the source, all bytes direct ($FSTYPE)" -- test_read_cp_big
test_read_cp_big() {
	local before
	before=$(bed_sectors_read "$BED_DEV_B")
	cp_case big
	run -0 jq -c '[.path, .reason, .bytesDirect == .size, .bytesZero, .bytesNetwork, .interrupted]' <<<"$json"
	assert_output '["direct",null,true,0,0,false]'
	# The client's own device says so too, not only fusedcp's counters.
	assert_device_read_at_least $(($(jq .bytesDirect <<<"$json") / 512)) "$before"
}

bats_test_function --description "fusedcat of a fragmented file equals the source ($FSTYPE)" -- test_read_cat_fragmented
test_read_cat_fragmented() { cat_case fragmented; }

bats_test_function --description "fusedcp of a fragmented file equals the source, direct ($FSTYPE)" -- test_read_cp_fragmented
test_read_cp_fragmented() {
	cp_case fragmented
	run -0 jq -c '[.path, .bytesDirect == .size, .bytesNetwork]' <<<"$json"
	assert_output '["direct",true,0]'
}

bats_test_function --description "fusedcat of a sparse file equals the source ($FSTYPE)" -- test_read_cat_sparse
test_read_cat_sparse() { cat_case sparse; }

bats_test_function --description "fusedcp of a sparse file equals the source, holes as zeros without I/O ($FSTYPE)" -- test_read_cp_sparse
test_read_cp_sparse() {
	cp_case sparse
	run -0 jq -c '[.path, .bytesDirect, .bytesZero > 0, .bytesDirect + .bytesZero == .size, .bytesNetwork]' <<<"$json"
	assert_output '["direct",2097152,true,true,0]'
	# Zeros are left as holes in the copy.
	(($(stat -c '%b*%B' "$dst/$RC_FILE") < 10 * 1048576)) || fail "the copy of the sparse file is not sparse"
}

bats_test_function --description "fusedcat of a file with a preallocated range equals the source ($FSTYPE)" -- test_read_cat_prealloc
test_read_cat_prealloc() { cat_case prealloc; }

bats_test_function --description "fusedcp of a file with a preallocated range equals the source, the range as zeros ($FSTYPE)" -- test_read_cp_prealloc
test_read_cp_prealloc() {
	cp_case prealloc
	run -0 jq -c '[.path, .bytesDirect, .bytesZero, .bytesNetwork]' <<<"$json"
	assert_output '["direct",2097152,2097152,0]'
}

bats_test_function --description "ZERO and HOLE ranges read as zeros, although the device holds other bytes there ($FSTYPE)" -- test_read_zero_not_device
test_read_zero_not_device() {
	local c map n phys len
	for c in prealloc sparse; do
		rc_make "$c"
		map=$(rc_map_json "$BED_CLI_DIR/$RC_FILE")
		# What makes this test able to fail: the device holds the bed's pattern, not zeros, under every ZERO
		# range, and a HOLE read from the device (at address 0) would give the superblock.
		n=0
		while read -r phys len; do
			rc_device_nonzero "$BED_DEV_B" "$phys" $((len < 1048576 ? len : 1048576)) ||
				fail "$c: the device holds only zeros at $phys+$len: reading it by mistake would go unseen"
			n=$((n + 1))
		done < <(jq -r '.extents[] | select(.state == "ZERO" or .state == "HOLE") | "\(.physical // 0) \(.length)"' <<<"$map")
		((n > 0)) || fail "$c: no ZERO or HOLE extent in $map"
		run -0 --separate-stderr rc_cat_sha "$BED_CLI_DIR/$RC_FILE"
		assert_equal "$output" "$(rc_src_sha "$c")"
		cp_case "$c"
		run -0 jq -c '[.path, .bytesNetwork]' <<<"$json"
		assert_output '["direct",0]'
	done
}

bats_test_function --description "data written on the server and not yet synced (delayed allocation) is mapped DATA and read directly ($FSTYPE)" -- test_read_unsynced_delalloc
test_read_unsynced_delalloc() {
	local name=delalloc-$BATS_TEST_NUMBER before
	# One fresh file per client command: the first FIEMAP (with its sync) places the data for good.
	rc_unsynced_delalloc "$name-map.bin"
	run -0 --separate-stderr rc_map_json "$BED_CLI_DIR/$name-map.bin"
	assert_equal "$(jq -c '[.network, ([.extents[].state] | unique), .size]' <<<"$output")" '[null,["DATA"],8388608]'
	rc_unsynced_delalloc "$name-cp.bin"
	dst=$BATS_TEST_TMPDIR/out
	mkdir -p "$dst"
	before=$(bed_sectors_read "$BED_DEV_B")
	run -0 --separate-stderr bed_in_client "$FUSED_BIN/fusedcp" --json "$BED_CLI_DIR/$name-cp.bin" "$dst"
	run -0 jq -c '.[0] | [.status, .path, .bytesDirect, .bytesNetwork]' <<<"$output"
	assert_output '["copied","direct",8388608,0]'
	assert_device_read_at_least 16384 "$before"
	assert_equal "$(rc_sha "$dst/$name-cp.bin")" "$(rc_sha "$BED_SRV_DIR/$name-cp.bin")"
	rc_unsynced_delalloc "$name-cat.bin"
	run -0 --separate-stderr rc_cat_sha "$BED_CLI_DIR/$name-cat.bin"
	assert_equal "$output" "$(rc_sha "$BED_SRV_DIR/$name-cat.bin")"
	assert_equal "$stderr" ''
	rm -f "$BED_SRV_DIR/$name"-*.bin
}

bats_test_function --description "data written into a preallocated range and not yet synced is mapped DATA and read back, not as zeros ($FSTYPE)" -- test_read_unsynced_prealloc
test_read_unsynced_prealloc() {
	local name=prealloc-$BATS_TEST_NUMBER
	rc_unsynced_prealloc "$name-map.bin"
	run -0 --separate-stderr rc_map_json "$BED_CLI_DIR/$name-map.bin"
	# The written MiB is DATA; the rest stays ZERO.
	run -0 jq -c '[.network, ([.extents[] | select(.logical < 2097152 and .logical + .length > 1048576) | .state]
		| unique), ([.extents[] | select(.state == "ZERO") | .length] | add > 0)]' <<<"$output"
	assert_output '[null,["DATA"],true]'
	rc_unsynced_prealloc "$name-cp.bin"
	dst=$BATS_TEST_TMPDIR/out
	mkdir -p "$dst"
	run -0 --separate-stderr bed_in_client "$FUSED_BIN/fusedcp" --json "$BED_CLI_DIR/$name-cp.bin" "$dst"
	run -0 jq -c '.[0] | [.status, .path, .bytesDirect >= 1048576, .bytesZero > 0, .bytesNetwork]' <<<"$output"
	assert_output '["copied","direct",true,true,0]'
	assert_equal "$(rc_sha "$dst/$name-cp.bin")" "$(rc_sha "$BED_SRV_DIR/$name-cp.bin")"
	rc_unsynced_prealloc "$name-cat.bin"
	run -0 --separate-stderr rc_cat_sha "$BED_CLI_DIR/$name-cat.bin"
	assert_equal "$output" "$(rc_sha "$BED_SRV_DIR/$name-cat.bin")"
	assert_equal "$stderr" ''
	rm -f "$BED_SRV_DIR/$name"-*.bin
}

bats_test_function --description "fusedcat of a file with data past 4 GiB equals the source ($FSTYPE)" -- test_read_cat_beyond4g
test_read_cat_beyond4g() { cat_case beyond4g; }

bats_test_function --description "fusedcp of a file with data past 4 GiB equals the source ($FSTYPE)" -- test_read_cp_beyond4g
test_read_cp_beyond4g() {
	cp_case beyond4g
	run -0 jq -c '[.path, .bytesDirect, .bytesZero > 0, .bytesDirect + .bytesZero == .size, .bytesNetwork]' <<<"$json"
	assert_output '["direct",1049353,true,true,0]'
	# Sparse like cp's copy: the 4.5 GiB hole takes no room (sshfs shows the source as dense, so the copy was
	# preallocated; the blocks under the hole were given back).
	local used=$(($(stat -c '%b * %B' "$dst/$RC_FILE")))
	((used <= 8 * 1048576)) || fail "the copy of a file with 1 MiB of data uses $used bytes"
}

bats_test_function --description "fusedcat of an empty file outputs nothing ($FSTYPE)" -- test_read_cat_empty
test_read_cat_empty() {
	cat_case empty
	assert_equal "$output" "$(rc_sha </dev/null)"
}

bats_test_function --description "fusedcp of an empty file makes an empty file ($FSTYPE)" -- test_read_cp_empty
test_read_cp_empty() {
	cp_case empty
	run -0 jq -c '[.size, .bytesDirect, .bytesZero, .bytesNetwork]' <<<"$json"
	assert_output '[0,0,0,0]'
	assert [ -f "$dst/$RC_FILE" ] && assert [ ! -s "$dst/$RC_FILE" ]
}

bats_test_function --description "fusedcat of a file named with a space, a newline and a non-UTF-8 byte equals the source ($FSTYPE)" -- test_read_cat_oddname
test_read_cat_oddname() { cat_case oddname; }

bats_test_function --description "fusedcp keeps a name with a space, a newline and a non-UTF-8 byte, direct ($FSTYPE)" -- test_read_cp_oddname
test_read_cp_oddname() {
	cp_case oddname
	run -0 jq -c '[.path, .bytesDirect]' <<<"$json"
	assert_output '["direct",300000]'
	assert_equal "$(cd "$dst" && printf '%s' *)" "$MAPCASE_ODD_NAME"
}

bats_test_function --description "fusedcat --offset/--length equals tail -c +N | head -c L of the source ($FSTYPE)" -- test_read_cat_range
test_read_cat_range() {
	rc_make big
	local f=$BED_CLI_DIR/$RC_FILE s=$BED_SRV_DIR/$RC_FILE off len
	for off_len in '12345677 33554433' '0 1' '4096 4194304' '67108863 10' '67108864 5' '100 0'; do
		read -r off len <<<"$off_len"
		run -0 --separate-stderr rc_cat_sha --offset "$off" --length "$len" "$f"
		assert_equal "$output" "$(tail -c +$((off + 1)) "$s" | head -c "$len" | rc_sha)"
	done
	# --offset alone: to the end of the file.
	run -0 --separate-stderr rc_cat_sha --offset 50000001 "$f"
	assert_equal "$output" "$(tail -c +50000002 "$s" | rc_sha)"
}

bats_test_function --description "fusedcat of several files concatenates them ($FSTYPE)" -- test_read_cat_several
test_read_cat_several() {
	rc_make sparse; local a=$RC_FILE
	rc_make big; local b=$RC_FILE
	run -0 --separate-stderr rc_cat_sha "$BED_CLI_DIR/$a" "$BED_CLI_DIR/$b" "$BED_CLI_DIR/$a"
	assert_equal "$output" "$(cat "$BED_SRV_DIR/$a" "$BED_SRV_DIR/$b" "$BED_SRV_DIR/$a" | rc_sha)"
}

bats_test_function --description "fusedcp -r of a 200-file tree: every file and the symlink equal the source, no temporaries ($FSTYPE)" -- test_read_cp_tree
test_read_cp_tree() {
	rc_tree
	dst=$BATS_TEST_TMPDIR/copy
	run -0 --separate-stderr bed_in_client "$FUSED_BIN/fusedcp" -r --json "$BED_CLI_DIR/$RC_TREE" "$dst"
	run -0 jq -c '[length, ([.[] | select(.status == "copied")] | length), ([.[] | select(.path == "direct")] | length) > 10]' <<<"$output"
	assert_output '[201,201,true]'
	assert_equal "$(rc_tree_sums "$dst")" "$(rc_tree_sums "$BED_SRV_DIR/$RC_TREE")"
	assert_equal "$(find "$dst" -type f -printf . | wc -c)" 200
	rc_no_temps "$dst"
}

bats_test_function --description "fusedcp -r -p keeps every file's and directory's mode and mtime ($FSTYPE)" -- test_read_cp_tree_preserve
test_read_cp_tree_preserve() {
	rc_tree
	dst=$BATS_TEST_TMPDIR/copy
	run -0 --separate-stderr bed_in_client "$FUSED_BIN/fusedcp" -r -p -q "$BED_CLI_DIR/$RC_TREE" "$dst"
	assert_equal "$(rc_tree_meta "$dst")" "$(rc_tree_meta "$BED_SRV_DIR/$RC_TREE")"
	assert_equal "$(rc_tree_sums "$dst")" "$(rc_tree_sums "$BED_SRV_DIR/$RC_TREE")"
	rc_no_temps "$dst"
}

bats_test_function --description "fusedcp -n leaves an existing destination untouched ($FSTYPE)" -- test_read_cp_no_clobber
test_read_cp_no_clobber() {
	rc_make big
	dst=$BATS_TEST_TMPDIR/existing
	echo 'keep me' >"$dst"
	touch -d '@1500000000' "$dst"
	run -0 --separate-stderr bed_in_client "$FUSED_BIN/fusedcp" -n --json "$BED_CLI_DIR/$RC_FILE" "$dst"
	run -0 jq -r '.[0].status' <<<"$output"
	assert_output skipped
	assert_equal "$(cat "$dst")" 'keep me'
	assert_equal "$(stat -c %Y "$dst")" 1500000000
	rc_no_temps "$BATS_TEST_TMPDIR"
}

bats_test_function --description "fusedcp replaces an existing destination without -n ($FSTYPE)" -- test_read_cp_replace
test_read_cp_replace() {
	rc_make big
	dst=$BATS_TEST_TMPDIR/existing
	echo 'replace me' >"$dst"
	run -0 --separate-stderr bed_in_client "$FUSED_BIN/fusedcp" "$BED_CLI_DIR/$RC_FILE" "$dst"
	assert_equal "$(rc_sha "$dst")" "$(rc_src_sha big)"
	rc_no_temps "$BATS_TEST_TMPDIR"
}

bats_test_function --description "fusedcp failing for lack of space leaves no temporary and no destination file ($FSTYPE)" -- test_read_cp_no_space
test_read_cp_no_space() {
	rc_make big; local big=$RC_FILE
	rc_make fragmented; local small=$RC_FILE
	local full=$BED_DIR/full-$BATS_TEST_NUMBER
	rc_small_tmpfs "$full" 1m
	run -1 --separate-stderr bed_in_client "$FUSED_BIN/fusedcp" "$BED_CLI_DIR/$big" "$full/"
	assert_regex "$stderr" "fusedcp: .*$big: .*(space|ENOSPC)"
	assert [ ! -e "$full/$big" ]
	rc_no_temps "$full"
	# One file fits, one does not: exit 4, the one that fits is complete.
	run -4 --separate-stderr bed_in_client "$FUSED_BIN/fusedcp" --json "$BED_CLI_DIR/$small" "$BED_CLI_DIR/$big" "$full/"
	run -0 jq -c '[.[] | .status]' <<<"$output"
	assert_output '["copied","failed"]'
	assert_equal "$(rc_sha "$full/$small")" "$(rc_sha "$BED_SRV_DIR/$small")"
	assert [ ! -e "$full/$big" ]
	rc_no_temps "$full"
	umount "$full"
}

bats_test_function --description "fusedcp --verify passes on every shape of file (exit 0, verified true) ($FSTYPE)" -- test_read_cp_verify
test_read_cp_verify() {
	# Not beyond4g: --verify reads the source through the mount, 4.5 GiB of zeros over sshfs (40 s).
	local c files=()
	for c in big fragmented sparse prealloc empty oddname; do
		rc_make "$c"
		files+=("$BED_CLI_DIR/$RC_FILE")
	done
	dst=$BATS_TEST_TMPDIR/out
	mkdir "$dst"
	run -0 --separate-stderr bed_in_client "$FUSED_BIN/fusedcp" --verify --json "${files[@]}" "$dst"
	run -0 jq -c '[length, ([.[] | .verified] | all), ([.[] | .status] | unique)]' <<<"$output"
	assert_output '[6,true,["copied"]]'
	rc_no_temps "$dst"
}

bats_test_function --description "fusedcp and fusedcat --network-only read nothing from the device ($FSTYPE)" -- test_read_network_only
test_read_network_only() {
	local before
	rc_make big
	dst=$BATS_TEST_TMPDIR/out
	mkdir "$dst"
	before=$(bed_sectors_read "$BED_DEV_B")
	run -0 --separate-stderr bed_in_client "$FUSED_BIN/fusedcp" --network-only --json "$BED_CLI_DIR/$RC_FILE" "$dst"
	run -0 jq -c '.[0] | [.path, .bytesDirect, .bytesNetwork == .size]' <<<"$output"
	assert_output '["network",0,true]'
	assert_equal "$(rc_sha "$dst/$RC_FILE")" "$(rc_src_sha big)"
	run -0 --separate-stderr rc_cat_sha --network-only "$BED_CLI_DIR/$RC_FILE"
	assert_equal "$output" "$(rc_src_sha big)"
	assert_equal "$stderr" ''
	# Of 128 MiB read, the client's device gave (almost) nothing. Not 0: any fusedctl fuse on this machine that
	# looks for its volume's device reads 64 KiB of every block device's superblock area, ours included.
	assert_device_read_at_most 2048 "$before"
}

bats_test_function --description "a file on a path that is not fused is copied through the network, and it is said ($FSTYPE)" -- test_read_not_fused
test_read_not_fused() {
	local src=$BATS_TEST_TMPDIR/local.bin
	head -c 1048577 /dev/urandom >"$src"
	dst=$BATS_TEST_TMPDIR/out
	mkdir "$dst"
	run -0 --separate-stderr bed_in_client "$FUSED_BIN/fusedcp" "$src" "$dst"
	assert_regex "$stderr" "^fusedcp: .*local.bin: through the network: not on a fused mount"
	assert_equal "$(rc_sha "$dst/local.bin")" "$(rc_sha "$src")"
	run -0 --separate-stderr bed_in_client "$FUSED_BIN/fusedcp" -f --json "$src" "$dst"
	run -0 jq -c '.[0] | [.status, .path, .reason, .bytesDirect]' <<<"$output"
	assert_output '["copied","network","not on a fused mount",0]'
	run -0 --separate-stderr rc_cat_sha "$src"
	assert_equal "$output" "$(rc_sha "$src")"
	assert_regex "$stderr" "^fusedcat: .*local.bin: through the network: not on a fused mount"
	rc_no_temps "$dst"
}

# Only XFS (of these) shares blocks between files.
if [[ $FSTYPE == xfs ]]; then
	bats_test_function --description "a reflinked copy reads back correctly, and both files after the copy is modified ($FSTYPE)" -- test_read_reflink
fi
test_read_reflink() {
	rc_make big
	local orig=$RC_FILE copy=reflink-$BATS_TEST_NUMBER.bin old new
	cp --reflink=always "$BED_SRV_DIR/$orig" "$BED_SRV_DIR/$copy"
	sync
	old=$(rc_src_sha big)
	dst=$BATS_TEST_TMPDIR/out
	mkdir "$dst"
	run -0 --separate-stderr rc_cat_sha "$BED_CLI_DIR/$copy"
	assert_equal "$output" "$old"
	run -0 --separate-stderr bed_in_client "$FUSED_BIN/fusedcp" --json "$BED_CLI_DIR/$copy" "$dst"
	run -0 jq -c '.[0] | [.path, .bytesDirect == .size]' <<<"$output"
	assert_output '["direct",true]'
	assert_equal "$(rc_sha "$dst/$copy")" "$old"
	# CoW: 1 MiB in the middle of the copy gets new blocks; the original keeps the shared ones.
	dd if=/dev/urandom of="$BED_SRV_DIR/$copy" bs=1M count=1 seek=20 conv=notrunc,fsync status=none
	new=$(rc_sha "$BED_SRV_DIR/$copy")
	[[ $new != "$old" ]] || fail "the copy did not change"
	run -0 --separate-stderr rc_cat_sha "$BED_CLI_DIR/$copy"
	assert_equal "$output" "$new"
	run -0 --separate-stderr rc_cat_sha "$BED_CLI_DIR/$orig"
	assert_equal "$output" "$old"
	rm "$dst/$copy"
	run -0 --separate-stderr bed_in_client "$FUSED_BIN/fusedcp" --json "$BED_CLI_DIR/$copy" "$BED_CLI_DIR/$orig" "$dst"
	run -0 jq -c '[.[] | [.status, .path]]' <<<"$output"
	assert_output '[["copied","direct"],["copied","direct"]]'
	assert_equal "$(rc_sha "$dst/$copy")" "$new"
	assert_equal "$(rc_sha "$dst/$orig")" "$old"
	rm "$BED_SRV_DIR/$copy"
}
