#!/usr/bin/env bats
# fusedcat and fusedcp on ext4 with inline data: a file kept in its inode goes through the network, and says so.

load helpers
source "$FUSED_LIB/readcases.bash"

setup_file() {
	bed_setup_file ext4-inline 1G
	fuse_client >"$BED_DIR/fuse.out"
	head -c 60 /dev/urandom >"$BED_SRV_DIR/inline60.bin"
	sync
}

teardown_file() { bed_teardown_file; }

@test "the 60-byte file is inline on the server (precondition, ext4-inline)" {
	run -0 filefrag -v "$BED_SRV_DIR/inline60.bin"
	assert_output --partial inline
}

@test "fusedcp --small-file 0 of an inline file: equal, through the network with the reason (ext4-inline)" {
	dst=$BATS_TEST_TMPDIR/out
	mkdir "$dst"
	run -0 --separate-stderr bed_in_client "$FUSED_BIN/fusedcp" --small-file 0 --json "$BED_CLI_DIR/inline60.bin" "$dst"
	local json=$output
	run -0 jq -c '.[0] | [.status, .path, .size, .bytesDirect, .bytesNetwork]' <<<"$json"
	assert_output '["copied","network",60,0,60]'
	run -0 jq -r '.[0].reason' <<<"$json"
	assert_output 'data is inline in the inode, not in data blocks'
	assert_equal "$(rc_sha "$dst/inline60.bin")" "$(rc_sha "$BED_SRV_DIR/inline60.bin")"
	rc_no_temps "$dst"
	# Without --json the fallback is said on stderr.
	run -0 --separate-stderr bed_in_client "$FUSED_BIN/fusedcp" --small-file 0 "$BED_CLI_DIR/inline60.bin" "$dst/again.bin"
	assert_regex "$stderr" '^fusedcp: .*inline60.bin: through the network: .*(inline|(not|no extent is) directly readable)'
	assert_equal "$(rc_sha "$dst/again.bin")" "$(rc_sha "$BED_SRV_DIR/inline60.bin")"
}

@test "fusedcp of an inline file by default is a small read through the network, not announced (ext4-inline)" {
	dst=$BATS_TEST_TMPDIR/out.bin
	run -0 --separate-stderr bed_in_client "$FUSED_BIN/fusedcp" --json "$BED_CLI_DIR/inline60.bin" "$dst"
	run -0 jq -r '.[0] | [.path, .bytesDirect, (.reason | startswith("small read"))] | @tsv' <<<"$output"
	assert_output $'network\t0\ttrue'
	assert_equal "$(rc_sha "$dst")" "$(rc_sha "$BED_SRV_DIR/inline60.bin")"
}

@test "fusedcat of an inline file equals the source; the small read is said only with -v (ext4-inline)" {
	run -0 --separate-stderr rc_cat_sha "$BED_CLI_DIR/inline60.bin"
	assert_equal "$output" "$(rc_sha "$BED_SRV_DIR/inline60.bin")"
	# fusedcat(1): a small read goes through the network by choice, said only with -v.
	assert_equal "$stderr" ''
	run -0 --separate-stderr rc_cat_sha -v "$BED_CLI_DIR/inline60.bin"
	assert_regex "$stderr" '^fusedcat: .*inline60.bin: network \(small read'
}

@test "a large file on the inline-data volume still goes direct (ext4-inline)" {
	rc_make big
	dst=$BATS_TEST_TMPDIR/out
	mkdir "$dst"
	run -0 --separate-stderr bed_in_client "$FUSED_BIN/fusedcp" --verify --json "$BED_CLI_DIR/$RC_FILE" "$dst"
	run -0 jq -c '.[0] | [.path, .bytesDirect == .size, .verified]' <<<"$output"
	assert_output '["direct",true,true]'
	assert_equal "$(rc_sha "$dst/$RC_FILE")" "$(rc_src_sha big)"
	run -0 --separate-stderr rc_cat_sha "$BED_CLI_DIR/$RC_FILE"
	assert_equal "$output" "$(rc_src_sha big)"
}
