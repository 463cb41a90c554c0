#!/usr/bin/env bats
# The device proven by its content (safety rule 7) and found by its stable identity (ext4-4k): a clone or a
# snapshot with the volume's UUID is refused at fuse, and a device that stops holding the volume's current
# content, or a device path that comes to name another disk, sends every file through the network, naming it.

load helpers

setup_file() {
	# The client may write (--role cli=rw), so that a write's proof is tried too.
	bed_setup_file ext4-4k 1G --no-server && bed_start_server --role cli=rw
	head -c 8388608 /dev/urandom >"$BED_SRV_DIR/data.bin"
	sync
}

teardown_file() { bed_teardown_file; }

sha() { sha256sum <"$1" | cut -d' ' -f1; }

fuse_count() { fused_status_json | jq length; }

# rewrite_data: new bytes over data.bin on the server, in place (ext4 keeps its blocks): a clone made before now
# holds the old bytes there, so a copy read from the clone would show by its sha256.
rewrite_data() {
	dd if=/dev/urandom of="$BED_SRV_DIR/data.bin" bs=1M count=8 conv=notrunc,fsync status=none
}

# assert_barely_read DEV BEFORE: DEV read at most 1 MiB since its counter said BEFORE (a superblock and a probe
# block, never the 8 MiB file).
assert_barely_read() {
	local read=$(($(bed_sectors_read "$1") - $2))
	((read <= 2048)) || fail "$1 read $read sectors: the file's data came from it"
}

# copy_json SRC DST: fusedcp --json of one file; sets $json to its record.
copy_json() {
	run -0 --separate-stderr bed_in_client "$FUSED_BIN/fusedcp" --json "$1" "$2"
	json=$(jq -c '.[0]' <<<"$output")
}

@test "fuse refuses a clone with the volume's UUID (exit 5), naming it, and records nothing" {
	clone_volume snap "$BED_DIR/client-snap"
	[[ $(blkid -p -s UUID -o value "$CLONE_DEV") == "$BED_UUID" ]] || fail "the clone does not carry the volume's UUID"
	run -5 --separate-stderr fuse_client "$BED_DIR/client-snap" --device "$CLONE_DEV"
	assert_equal "${#stderr_lines[@]}" 1
	assert_regex "$stderr" "^fusedctl: $CLONE_DEV: does not hold the volume's current content"
	assert_regex "$stderr" 'probe token'
	run -0 fuse_count
	assert_output 0
	# The client's own path to the disk holds the token: the same mount fuses.
	run -0 --separate-stderr fuse_client "$BED_DIR/client-snap" --device "$BED_DEV_B"
	run -0 bed_in_client "$FUSED_BIN/fusedctl" unfuse "$BED_DIR/client-snap"
}

@test "fuse records the device's identity; status shows it matching; a copy goes direct" {
	run -0 --separate-stderr fuse_client "$BED_CLI_DIR" --device "$BED_DEV_B"
	run -0 --separate-stderr fused_status_json
	run -0 jq -c '.[0] | [.device, .deviceId, .deviceIdMatches, .uuidMatches, .problem]' <<<"$output"
	assert_output "[\"$BED_DEV_B\",\"loop:$BED_IMG\",true,true,null]"
	run -0 --separate-stderr bed_in_client "$FUSED_BIN/fusedctl" status -o device,deviceId,deviceIdMatches
	assert_line --regexp "^$BED_DEV_B +loop:$BED_IMG +yes$"
	copy_json "$BED_CLI_DIR/data.bin" "$BATS_TEST_TMPDIR/direct.bin"
	run -0 jq -r '[.path, .bytesDirect] | @tsv' <<<"$json"
	assert_output $'direct\t8388608'
	assert_equal "$(sha "$BATS_TEST_TMPDIR/direct.bin")" "$(sha "$BED_SRV_DIR/data.bin")"
}

@test "a dm device reloaded onto an older clone: same identity and UUID, the content proof fails, the copy goes through the network" {
	dmsetup targets 2>/dev/null | grep -q '^linear' || skip "device-mapper is not available in this kernel (dmsetup targets)"
	local name=fused-$BED_ID-lin uuid=FUSED-TEST-$BED_ID sectors mnt=$BED_DIR/client-dm
	sectors=$(blockdev --getsz "$BED_DEV_B")
	dmsetup create "$name" -u "$uuid" --table "0 $sectors linear $BED_DEV_B 0"
	bed_record dm "$name"
	[[ -b /dev/mapper/$name ]] || dmsetup mknodes "$name"
	bed_mount_client "$BED_SRV_DIR" "$mnt"
	run -0 --separate-stderr fuse_client "$mnt" --device "/dev/mapper/$name"
	run -0 jq -r --arg m "$mnt" '.[] | select(.mountpoint == $m) | .deviceId' <<<"$(fused_status_json)"
	assert_output "dm-uuid:$uuid"
	copy_json "$mnt/data.bin" "$BATS_TEST_TMPDIR/dm-direct.bin"
	run -0 jq -r '[.path, .bytesDirect] | @tsv' <<<"$json"
	assert_output $'direct\t8388608'
	assert_equal "$(sha "$BATS_TEST_TMPDIR/dm-direct.bin")" "$(sha "$BED_SRV_DIR/data.bin")"
	# The same dm device, now over a copy of the disk (content older than any probe to come).
	clone_volume dm-old "$BED_DIR/client-dm-old"
	dmsetup suspend "$name"
	dmsetup load "$name" --table "0 $sectors linear $CLONE_DEV 0"
	dmsetup resume "$name"
	rewrite_data
	local before
	before=$(bed_sectors_read "/dev/mapper/$name")
	run -0 jq -c --arg m "$mnt" '.[] | select(.mountpoint == $m) | [.deviceIdMatches, .uuidMatches]' <<<"$(fused_status_json)"
	assert_output '[true,true]'
	run -0 --separate-stderr bed_in_client "$FUSED_BIN/fusedcp" "$mnt/data.bin" "$BATS_TEST_TMPDIR/dm-net.bin"
	assert_regex "$stderr" "^fusedcp: .*data.bin: through the network: /dev/mapper/$name: does not hold the volume's current content"
	assert_equal "$(sha "$BATS_TEST_TMPDIR/dm-net.bin")" "$(sha "$BED_SRV_DIR/data.bin")"
	copy_json "$mnt/data.bin" "$BATS_TEST_TMPDIR/dm-net2.bin"
	run -0 jq -r '[.path, .bytesDirect, (.reason | contains("/dev/mapper/'"$name"'"))] | @tsv' <<<"$json"
	assert_output $'network\t0\ttrue'
	assert_equal "$(sha "$BATS_TEST_TMPDIR/dm-net2.bin")" "$(sha "$BED_SRV_DIR/data.bin")"
	assert_barely_read "/dev/mapper/$name" "$before"
	run -0 bed_in_client "$FUSED_BIN/fusedctl" unfuse "$mnt"
	bed_dm_remove "$name"
}

@test "the fused loop device's backing file replaced by an older copy: same identity and UUID, the proof fails, network" {
	# What the dm test does with a table reload, done with loop devices: device B is re-attached to a copy of the
	# image under the image's own name (the server's device A follows the original to its new name).
	run -0 --separate-stderr fuse_client "$BED_CLI_DIR" --device "$BED_DEV_B"
	sync
	losetup -d "$BED_DEV_B"
	mv "$BED_IMG" "$BED_IMG.orig"
	cp --sparse=always "$BED_IMG.orig" "$BED_IMG"
	losetup --direct-io=on "$BED_DEV_B" "$BED_IMG" || fail "$BED_DEV_B was taken meanwhile"
	rewrite_data
	local before
	before=$(bed_sectors_read "$BED_DEV_B")
	run -0 jq -c '.[0] | [.deviceIdMatches, .uuidMatches]' <<<"$(fused_status_json)"
	assert_output '[true,true]'
	run -0 --separate-stderr bed_in_client "$FUSED_BIN/fusedcp" "$BED_CLI_DIR/data.bin" "$BATS_TEST_TMPDIR/net.bin"
	assert_regex "$stderr" "^fusedcp: .*data.bin: through the network: $BED_DEV_B: does not hold the volume's current content"
	assert_equal "$(sha "$BATS_TEST_TMPDIR/net.bin")" "$(sha "$BED_SRV_DIR/data.bin")"
	copy_json "$BED_CLI_DIR/data.bin" "$BATS_TEST_TMPDIR/net2.bin"
	run -0 jq -r '[.path, .bytesDirect] | @tsv' <<<"$json"
	assert_output $'network\t0'
	assert_equal "$(sha "$BATS_TEST_TMPDIR/net2.bin")" "$(sha "$BED_SRV_DIR/data.bin")"
	assert_barely_read "$BED_DEV_B" "$before"
	# A write: its map is asked for while the device is proven; the proof fails, so the map goes back unused and
	# the file is written through the mount, nothing on the device.
	head -c 3145728 /dev/urandom >"$BATS_TEST_TMPDIR/up.bin"
	local written
	written=$(bed_sectors_written "$BED_DEV_B")
	run -0 --separate-stderr bed_in_client "$FUSED_BIN/fusedcp" --json "$BATS_TEST_TMPDIR/up.bin" "$BED_CLI_DIR/up.bin"
	run -0 jq -r '.[0].write | [.path, .bytesDirect, (.reason | contains("does not hold the volume'"'"'s current content"))] | @tsv' <<<"$output"
	assert_output $'network\t0\ttrue'
	assert_equal "$(sha "$BED_SRV_DIR/up.bin")" "$(sha "$BATS_TEST_TMPDIR/up.bin")"
	assert_equal "$(bed_sectors_written "$BED_DEV_B")" "$written"
	# Back to the real disk.
	losetup -d "$BED_DEV_B"
	rm "$BED_IMG"
	mv "$BED_IMG.orig" "$BED_IMG"
	losetup --direct-io=on "$BED_DEV_B" "$BED_IMG" || fail "$BED_DEV_B was taken meanwhile"
	copy_json "$BED_CLI_DIR/data.bin" "$BATS_TEST_TMPDIR/back.bin"
	run -0 jq -r '[.path, .bytesDirect] | @tsv' <<<"$json"
	assert_output $'direct\t8388608'
	assert_equal "$(sha "$BATS_TEST_TMPDIR/back.bin")" "$(sha "$BED_SRV_DIR/data.bin")"
	# The write map given back is no longer held: the same name is written again, direct now.
	run -0 --separate-stderr bed_in_client "$FUSED_BIN/fusedcp" --json "$BATS_TEST_TMPDIR/up.bin" "$BED_CLI_DIR/up.bin"
	run -0 jq -r '.[0].write | [.path, .bytesDirect] | @tsv' <<<"$output"
	assert_output $'direct\t3145728'
	assert_equal "$(sha "$BED_SRV_DIR/up.bin")" "$(sha "$BATS_TEST_TMPDIR/up.bin")"
}

@test "a clone attached at the fused device's path: the identity no longer matches, the copy goes through the network" {
	local copy=$BED_DIR/at-b.img other
	run -0 --separate-stderr fuse_client "$BED_CLI_DIR" --device "$BED_DEV_B"
	sync
	cp --sparse=always "$BED_IMG" "$copy"
	bed_record loop "$BED_DEV_B" "$copy"
	losetup -d "$BED_DEV_B"
	losetup --direct-io=on "$BED_DEV_B" "$copy" || fail "$BED_DEV_B was taken meanwhile"
	rewrite_data
	local before
	before=$(bed_sectors_read "$BED_DEV_B")
	run -0 jq -c '.[0] | [.deviceIdMatches, .uuidMatches, (.problem | test("identity is now loop:.*at-b.img"))]' <<<"$(fused_status_json)"
	assert_output '[false,true,true]'
	run -0 --separate-stderr bed_in_client "$FUSED_BIN/fusedcp" "$BED_CLI_DIR/data.bin" "$BATS_TEST_TMPDIR/net.bin"
	assert_regex "$stderr" "^fusedcp: .*data.bin: through the network: $BED_DEV_B: is no longer the fused device"
	assert_equal "$(sha "$BATS_TEST_TMPDIR/net.bin")" "$(sha "$BED_SRV_DIR/data.bin")"
	copy_json "$BED_CLI_DIR/data.bin" "$BATS_TEST_TMPDIR/net2.bin"
	run -0 jq -r '[.path, .bytesDirect] | @tsv' <<<"$json"
	assert_output $'network\t0'
	assert_equal "$(sha "$BATS_TEST_TMPDIR/net2.bin")" "$(sha "$BED_SRV_DIR/data.bin")"
	assert_barely_read "$BED_DEV_B" "$before"
	# The real disk attached under another name is found by its identity, proven, and used.
	losetup -d "$BED_DEV_B"
	other=$(bed_attach "$BED_IMG")
	copy_json "$BED_CLI_DIR/data.bin" "$BATS_TEST_TMPDIR/found.bin"
	run -0 jq -r '[.path, .bytesDirect] | @tsv' <<<"$json"
	assert_output $'direct\t8388608'
	assert_equal "$(sha "$BATS_TEST_TMPDIR/found.bin")" "$(sha "$BED_SRV_DIR/data.bin")"
	# Back as it was, for anything after this test.
	losetup -d "$other"
	losetup --direct-io=on "$BED_DEV_B" "$BED_IMG" || fail "$BED_DEV_B was taken meanwhile"
}
