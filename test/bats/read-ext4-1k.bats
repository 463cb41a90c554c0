#!/usr/bin/env bats
# fusedcat and fusedcp on ext4-1k: every shape of file reads back byte for byte (sha256), over the path it says.

load helpers
source "$FUSED_LIB/readcases.bash"

setup_file() {
	bed_setup_file ext4-1k
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
	assert_equal "$(rc_sha "$dst/$RC_FILE")" "$(rc_src_sha "$1")"
	assert_equal "$(jq .size <<<"$json")" "$(stat -c %s "$BED_SRV_DIR/$RC_FILE")"
	rc_no_temps "$dst"
}

@test "fusedcat of a contiguous 64 MiB file equals the source (ext4-1k)" { cat_case big; }

@test "fusedcp of a contiguous 64 MiB file equals the source, all bytes direct (ext4-1k)" {
	cp_case big
	run -0 jq -c '[.path, .reason, .bytesDirect == .size, .bytesZero, .bytesNetwork, .interrupted]' <<<"$json"
	assert_output '["direct",null,true,0,0,false]'
}

@test "fusedcat of a fragmented file equals the source (ext4-1k)" { cat_case fragmented; }

@test "fusedcp of a fragmented file equals the source, direct (ext4-1k)" {
	cp_case fragmented
	run -0 jq -c '[.path, .bytesDirect == .size, .bytesNetwork]' <<<"$json"
	assert_output '["direct",true,0]'
}

@test "fusedcat of a sparse file equals the source (ext4-1k)" { cat_case sparse; }

@test "fusedcp of a sparse file equals the source, holes as zeros without I/O (ext4-1k)" {
	cp_case sparse
	run -0 jq -c '[.path, .bytesDirect, .bytesZero > 0, .bytesDirect + .bytesZero == .size, .bytesNetwork]' <<<"$json"
	assert_output '["direct",2097152,true,true,0]'
	# Zeros are left as holes in the copy.
	(($(stat -c '%b*%B' "$dst/$RC_FILE") < 10 * 1048576)) || fail "the copy of the sparse file is not sparse"
}

@test "fusedcat of a file with a preallocated range equals the source (ext4-1k)" { cat_case prealloc; }

@test "fusedcp of a file with a preallocated range equals the source, the range as zeros (ext4-1k)" {
	cp_case prealloc
	run -0 jq -c '[.path, .bytesDirect, .bytesZero, .bytesNetwork]' <<<"$json"
	assert_output '["direct",2097152,2097152,0]'
}

@test "fusedcat of a file with data past 4 GiB equals the source (ext4-1k)" { cat_case beyond4g; }

@test "fusedcp of a file with data past 4 GiB equals the source (ext4-1k)" {
	cp_case beyond4g
	run -0 jq -c '[.path, .bytesDirect, .bytesZero > 0, .bytesDirect + .bytesZero == .size, .bytesNetwork]' <<<"$json"
	assert_output '["direct",1049353,true,true,0]'
}

@test "fusedcat of an empty file outputs nothing (ext4-1k)" {
	cat_case empty
	assert_equal "$output" "$(rc_sha </dev/null)"
}

@test "fusedcp of an empty file makes an empty file (ext4-1k)" {
	cp_case empty
	run -0 jq -c '[.size, .bytesDirect, .bytesZero, .bytesNetwork]' <<<"$json"
	assert_output '[0,0,0,0]'
	assert [ -f "$dst/$RC_FILE" ] && assert [ ! -s "$dst/$RC_FILE" ]
}

@test "fusedcat of a file named with a space, a newline and a non-UTF-8 byte equals the source (ext4-1k)" { cat_case oddname; }

@test "fusedcp keeps a name with a space, a newline and a non-UTF-8 byte, direct (ext4-1k)" {
	cp_case oddname
	run -0 jq -c '[.path, .bytesDirect]' <<<"$json"
	assert_output '["direct",300000]'
	assert_equal "$(cd "$dst" && printf '%s' *)" "$MAPCASE_ODD_NAME"
}

@test "fusedcat --offset/--length equals tail -c +N | head -c L of the source (ext4-1k)" {
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

@test "fusedcat of several files concatenates them (ext4-1k)" {
	rc_make sparse; local a=$RC_FILE
	rc_make big; local b=$RC_FILE
	run -0 --separate-stderr rc_cat_sha "$BED_CLI_DIR/$a" "$BED_CLI_DIR/$b" "$BED_CLI_DIR/$a"
	assert_equal "$output" "$(cat "$BED_SRV_DIR/$a" "$BED_SRV_DIR/$b" "$BED_SRV_DIR/$a" | rc_sha)"
}

@test "fusedcp -r of a 200-file tree: every file and the symlink equal the source, no temporaries (ext4-1k)" {
	rc_tree
	dst=$BATS_TEST_TMPDIR/copy
	run -0 --separate-stderr bed_in_client "$FUSED_BIN/fusedcp" -r --json "$BED_CLI_DIR/$RC_TREE" "$dst"
	run -0 jq -c '[length, ([.[] | select(.status == "copied")] | length), ([.[] | select(.path == "direct")] | length) > 10]' <<<"$output"
	assert_output '[201,201,true]'
	assert_equal "$(rc_tree_sums "$dst")" "$(rc_tree_sums "$BED_SRV_DIR/$RC_TREE")"
	assert_equal "$(find "$dst" -type f -printf . | wc -c)" 200
	rc_no_temps "$dst"
}

@test "fusedcp -r -p keeps every file's and directory's mode and mtime (ext4-1k)" {
	rc_tree
	dst=$BATS_TEST_TMPDIR/copy
	run -0 --separate-stderr bed_in_client "$FUSED_BIN/fusedcp" -r -p -q "$BED_CLI_DIR/$RC_TREE" "$dst"
	assert_equal "$(rc_tree_meta "$dst")" "$(rc_tree_meta "$BED_SRV_DIR/$RC_TREE")"
	assert_equal "$(rc_tree_sums "$dst")" "$(rc_tree_sums "$BED_SRV_DIR/$RC_TREE")"
	rc_no_temps "$dst"
}

@test "fusedcp -n leaves an existing destination untouched (ext4-1k)" {
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

@test "fusedcp replaces an existing destination without -n (ext4-1k)" {
	rc_make big
	dst=$BATS_TEST_TMPDIR/existing
	echo 'replace me' >"$dst"
	run -0 --separate-stderr bed_in_client "$FUSED_BIN/fusedcp" "$BED_CLI_DIR/$RC_FILE" "$dst"
	assert_equal "$(rc_sha "$dst")" "$(rc_src_sha big)"
	rc_no_temps "$BATS_TEST_TMPDIR"
}

@test "fusedcp failing for lack of space leaves no temporary and no destination file (ext4-1k)" {
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

@test "fusedcp --verify passes on every shape of file (exit 0, verified true) (ext4-1k)" {
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

@test "fusedcp and fusedcat --network-only read nothing from the device (ext4-1k)" {
	rc_make big
	dst=$BATS_TEST_TMPDIR/out
	mkdir "$dst"
	run -0 --separate-stderr bed_in_client "$FUSED_BIN/fusedcp" --network-only --json "$BED_CLI_DIR/$RC_FILE" "$dst"
	run -0 jq -c '.[0] | [.path, .bytesDirect, .bytesNetwork == .size]' <<<"$output"
	assert_output '["network",0,true]'
	assert_equal "$(rc_sha "$dst/$RC_FILE")" "$(rc_src_sha big)"
	run -0 --separate-stderr rc_cat_sha --network-only "$BED_CLI_DIR/$RC_FILE"
	assert_equal "$output" "$(rc_src_sha big)"
	assert_equal "$stderr" ''
}

@test "a file on a path that is not fused is copied through the network, and it is said (ext4-1k)" {
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
