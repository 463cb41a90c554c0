#!/usr/bin/env bats
# fusedctl fuse/unfuse/status/serve on the two-node bed: refusals, health, and fusedmap --verify catching
# a device that holds other bytes than the volume.

load helpers

setup_file() {
	bed_setup_file ext4-4k 1G
	mkdir "$BED_SRV_DIR/sub"
	head -c 1048576 /dev/urandom >"$BED_SRV_DIR/data.bin"
	sync
}

teardown_file() { bed_teardown_file; }

assert_no_fuses() {
	run -0 --separate-stderr fused_status_json
	run -0 jq length <<<"$output"
	assert_output 0
}

@test "fusedctl fuse without a mount point is a usage error (exit 2)" {
	run -2 --separate-stderr bed_in_client "$FUSED_BIN/fusedctl" fuse
	assert_equal "${#stderr_lines[@]}" 2
	assert_regex "${stderr_lines[0]}" '^fusedctl: '
	assert_regex "${stderr_lines[1]}" "^Try 'fusedctl --help'"
}

@test "fuse refuses a --device whose file-system UUID differs (exit 5)" {
	local img dev
	img=$BED_DIR/other.img
	bed_make_image "$img" ext4-4k 64M
	dev=$(bed_attach "$img")
	run -5 --separate-stderr fuse_client "$BED_CLI_DIR" --device "$dev"
	assert_equal "${#stderr_lines[@]}" 1
	assert_regex "$stderr" '^fusedctl: .*UUID.*differs'
	assert_no_fuses
}

@test "fuse refuses a device that is mounted on this node (exit 5)" {
	run -5 --separate-stderr fuse_client "$BED_CLI_DIR" --device "$BED_DEV_A"
	assert_regex "$stderr" '^fusedctl: .*is mounted on this node'
	assert_no_fuses
}

@test "fuse refuses a mount that does not show the volume (exit 5)" {
	bed_mount_client "$BED_SRV_DIR/sub" "$BED_DIR/wrong-mount"
	run -5 --separate-stderr fuse_client "$BED_DIR/wrong-mount"
	assert_regex "$stderr" '^fusedctl: .*does not show volume'
	assert_no_fuses
}

@test "fuse with a wrong key fails authentication (exit 6)" {
	(umask 077 && echo "not-the-secret-0123456789abcdef" >"$BED_DIR/wrong-secret")
	"$FUSED_BIN/fusedctl" key cli --secret-file "$BED_DIR/wrong-secret" -o "$BED_DIR/wrong.key"
	run -6 --separate-stderr bed_in_client "$FUSED_BIN/fusedctl" fuse "$BED_CLI_DIR" --server "$BED_SERVER" \
		--key-file "$BED_DIR/wrong.key" --node cli
	assert_regex "$stderr" '^fusedctl: .*authentication failed'
	assert_no_fuses
}

@test "fuse records the fuse and status shows it healthy" {
	run -0 --separate-stderr fuse_client "$BED_CLI_DIR"
	assert_equal "${#lines[@]}" 1
	assert_output --partial "$BED_CLI_DIR"
	assert_output --partial "vol"
	assert_output --partial "$BED_DEV_B"
	assert_output --partial "$BED_SERVER"
	run -0 --separate-stderr fused_status_json
	run -0 jq -c --arg m "$BED_CLI_DIR" '[length, (.[0] | .mountpoint == $m, .server, .volume, .uuid, .device,
		.serverReachable, .devicePresent, .uuidMatches, .allocation, (.reserveBytes | type))]' <<<"$output"
	# ext4: the server swaps pre-zeroed pool files into place for direct writes (filled in the background: its size
	# is whatever it has reached).
	assert_output "[1,true,\"$BED_SERVER\",\"vol\",\"$BED_UUID\",\"$BED_DEV_B\",true,true,true,\"pool\",\"number\"]"
	run -0 --separate-stderr bed_in_client "$FUSED_BIN/fusedctl" status
	assert_output --partial "$BED_CLI_DIR"
}

@test "fusedmap --verify exits 3 when the client's device holds other bytes than the volume" {
	# A copy of the image has the volume's UUID; changing a data block of the copy changes only what the
	# client reads from its device, never the mounted file system.
	local dev phys
	clone_volume copy "$BED_DIR/client-volume2"
	dev=$CLONE_DEV
	# fuse refuses a copy (it lacks the server's probe token): fuse the real device, then point the record at
	# the copy, as if the disk behind the recorded path had been swapped (no identity recorded).
	run -0 --separate-stderr fuse_client "$BED_DIR/client-volume2" --device "$BED_DEV_B"
	jq --arg m "$BED_DIR/client-volume2" --arg d "$dev" '.fuses |= map(if .mountpoint == $m then .device = $d | del(.deviceId) else . end)' \
		"$BED_DIR/client-state/fuses.json" >"$BED_DIR/fuses.json.new" && mv "$BED_DIR/fuses.json.new" "$BED_DIR/client-state/fuses.json"
	run -0 --separate-stderr bed_in_client "$FUSED_BIN/fusedmap" --verify --json "$BED_DIR/client-volume2/data.bin"
	run -0 jq -c '.[0].verify | [.ok, .mismatches]' <<<"$output"
	assert_output '[true,0]'
	phys=$(jq '.[0].extents[0].physical' <<<"$(bed_in_client "$FUSED_BIN/fusedmap" --json "$BED_DIR/client-volume2/data.bin")")
	head -c 4096 /dev/urandom | dd of="$dev" bs=4096 seek=$((phys / 4096)) oflag=direct conv=notrunc status=none
	run -3 --separate-stderr bed_in_client "$FUSED_BIN/fusedmap" --verify --json "$BED_DIR/client-volume2/data.bin"
	assert [ "${#stderr_lines[@]}" -ge 1 ]
	run -0 jq -c '.[0].verify | [.ok, .mismatches >= 1]' <<<"$output"
	assert_output '[false,true]'
	run -3 --separate-stderr bed_in_client "$FUSED_BIN/fusedmap" --verify "$BED_DIR/client-volume2/data.bin"
	run -0 bed_in_client "$FUSED_BIN/fusedctl" unfuse "$BED_DIR/client-volume2"
}

@test "fuse refuses to guess when several unmounted devices carry the volume's UUID (exit 5)" {
	# A clone of the image (like a snapshot of the LUN) carries the same UUID with possibly other bytes.
	local dev
	clone_volume twin "$BED_DIR/client-volume3"
	dev=$CLONE_DEV
	run -5 --separate-stderr fuse_client "$BED_DIR/client-volume3"
	assert_regex "$stderr" "several local devices carry the volume's UUID"
	assert_regex "$stderr" "$BED_DEV_B"
	assert_regex "$stderr" "$dev"
	run -0 jq length <<<"$(fused_status_json)"
	local before=$output
	# Naming the device settles it.
	run -0 --separate-stderr fuse_client "$BED_DIR/client-volume3" --device "$BED_DEV_B"
	run -0 bed_in_client "$FUSED_BIN/fusedctl" unfuse "$BED_DIR/client-volume3"
	run -0 jq length <<<"$(fused_status_json)"
	assert_output "$before"
}

@test "a fused mount point that no longer shows the fused mount is never read from the device" {
	bed_mount_client "$BED_SRV_DIR" "$BED_DIR/client-volume4"
	run -0 --separate-stderr fuse_client "$BED_DIR/client-volume4" --device "$BED_DEV_B"
	fusermount3 -u "$BED_DIR/client-volume4"
	# A local file with the server file's name, size and mtime now sits where the mount was.
	head -c 1048576 /dev/urandom >"$BED_DIR/client-volume4/data.bin"
	touch -r "$BED_SRV_DIR/data.bin" "$BED_DIR/client-volume4/data.bin"
	run -0 --separate-stderr bed_in_client "$FUSED_BIN/fusedcp" --json --small-file 0 "$BED_DIR/client-volume4/data.bin" "$BED_DIR/impostor.out"
	run -0 jq -r '.[0] | [.path, .bytesDirect, .reason] | @tsv' <<<"$output"
	assert_regex "$output" $'^network\t0\t.*is not the mount that was fused'
	assert_equal "$(sha256sum <"$BED_DIR/impostor.out" | cut -d' ' -f1)" "$(sha256sum <"$BED_DIR/client-volume4/data.bin" | cut -d' ' -f1)"
	run -1 --separate-stderr bed_in_client "$FUSED_BIN/fusedmap" "$BED_DIR/client-volume4/data.bin"
	assert_regex "$stderr" 'is not the mount that was fused'
	rm "$BED_DIR/client-volume4/data.bin"
	run -0 bed_in_client "$FUSED_BIN/fusedctl" unfuse "$BED_DIR/client-volume4"
}

@test "status shows the server unreachable after it stops; unfuse removes the fuse" {
	bed_stop_server
	run -0 --separate-stderr fused_status_json
	run -0 jq -c --arg m "$BED_CLI_DIR" '[.[] | select(.mountpoint == $m) | .serverReachable]' <<<"$output"
	assert_output '[false]'
	run -0 --separate-stderr bed_in_client "$FUSED_BIN/fusedctl" unfuse "$BED_CLI_DIR"
	assert_no_fuses
	run -1 --separate-stderr bed_in_client "$FUSED_BIN/fusedctl" unfuse "$BED_CLI_DIR"
	assert_regex "$stderr" '^fusedctl: '
}

@test "serve refuses a directory on tmpfs (exit 1), naming the file system type" {
	local dir
	dir=$(mktemp -d /dev/shm/fused-XXXXXX)
	bed_record dir "$dir"
	(umask 077 && echo "0123456789abcdef0123456789abcdef" >"$BED_DIR/secret2")
	run -1 --separate-stderr timeout 20 nsenter --net="/run/netns/$BED_SRV_NS" "$FUSED_BIN/fusedctl" serve \
		--listen "$BED_SRV_ADDR:7448" --volume "tmp=$dir" --secret-file "$BED_DIR/secret2"
	assert_regex "$stderr" 'tmpfs'
	assert_regex "$stderr" 'not a block-device file system'
	refute_regex "$stderr" 'listening on'
}
