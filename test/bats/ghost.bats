#!/usr/bin/env bats
# The ghost-file transport (ext4-4k): map requests travel as files on the volume, through the client's sshfs
# mount, with the map server's TCP port blocked; reads, writes, recalls, cleanup, per-node permissions, no server.

load helpers

# The short lease and cleanup keep the recall and the cleanup tests quick.
GHOST_LEASE=2
GHOST_CLEANUP=3

setup_file() {
	requires_root
	bed_init || return 1
	echo "$BED_DIR" >"$BATS_FILE_TMPDIR/bed_dir"
	bed_make_nodes &&
		bed_make_volume ext4-4k 1G &&
		bed_start_sshd &&
		bed_mount_client &&
		bed_start_server --lease-time "$GHOST_LEASE" --role cli=rw --ghost cli=0 --ghost other=65534 --ghost-cleanup "$GHOST_CLEANUP" || return 1
	bed_block_port "$BED_SRV_NS" "$BED_PORT" || return 1
	bed_in_client "$FUSED_BIN/fusedctl" fuse "$BED_CLI_DIR" --transport ghost --key-file "$BED_KEY" --node cli --json >"$BED_DIR/fuse.json"
}

teardown_file() { bed_teardown_file; }

ghost_nodedir() { echo "$BED_SRV_DIR/.fused/ghost/$1"; }

@test "the TCP port is blocked and the fuse is recorded with the ghost transport" {
	run ! bed_in_client nc -z -w 1 "$BED_SRV_ADDR" "$BED_PORT"
	run jq -r '.transport + " " + .server' "$BED_DIR/fuse.json"
	assert_output "ghost ghost:$BED_CLI_DIR"
}

@test "a read and a write round trip over ghost files move the bytes on the device" {
	head -c 48M /dev/urandom >"$BED_SRV_DIR/src.bin"
	sync
	local want before
	want=$(sha256sum <"$BED_SRV_DIR/src.bin" | cut -d' ' -f1)
	before=$(bed_sectors_read "$BED_DEV_B")
	run -0 bed_in_client "$FUSED_BIN/fusedcp" --json "$BED_CLI_DIR/src.bin" "$BATS_TEST_TMPDIR/got.bin"
	assert_equal "$(sha256sum <"$BATS_TEST_TMPDIR/got.bin" | cut -d' ' -f1)" "$want"
	# At least the file's 48 MiB came off the client's own device.
	(($(bed_sectors_read "$BED_DEV_B") - before >= 48 * 2048)) || fail "the client device read $(($(bed_sectors_read "$BED_DEV_B") - before)) sectors"
	before=$(bed_sectors_written "$BED_DEV_B")
	run -0 bed_in_client "$FUSED_BIN/fusedcp" --json "$BATS_TEST_TMPDIR/got.bin" "$BED_CLI_DIR/back.bin"
	(($(bed_sectors_written "$BED_DEV_B") - before >= 48 * 2048)) || fail "the client device wrote $(($(bed_sectors_written "$BED_DEV_B") - before)) sectors"
	assert_equal "$(sha256sum <"$BED_SRV_DIR/back.bin" | cut -d' ' -f1)" "$want"
}
