#!/usr/bin/env bats
# ext4's pool of pre-zeroed files (src/server/pool.ts): an empty file being written directly trades places with a
# pool file at its first ALLOC. The copy is direct and exact, keeps what its create gave it (group, access ACL),
# the pool refills; beyond the pool file, and with no pool, blocks are zero-filled; a name changed under the swap
# is left as it is.

load helpers
source "$FUSED_LIB/writecases.bash"

MiB=1048576
# One pool file of 64 MiB (pool.ts: one file up to 2 GiB).
RESERVE=$((64 * MiB))

setup_file() {
	requires_root
	bed_init || return 1
	echo "$BED_DIR" >"$BATS_FILE_TMPDIR/bed_dir"
	bed_make_nodes &&
		bed_make_volume ext4-4k 1G &&
		bed_start_sshd &&
		bed_mount_client &&
		bed_start_server --role cli=rw --reserve "$RESERVE" &&
		fuse_client >"$BED_DIR/fuse.out" || return 1
	mkdir -p "$BED_DIR/src"
}

teardown_file() { bed_teardown_file; }

# restart_server [serve args...]: the map server started again (the one the last test left running: its PID is in
# the bed's env file, as each test runs in a shell of its own).
restart_server() {
	source "$BED_DIR/env"
	bed_stop_server
	bed_start_server --role cli=rw "$@"
}

# pool_ready: wait (bounded) until the server's pool is full, by its own account (fusedctl status, the VOLUME reply).
pool_ready() {
	local tries=300 got
	while ((tries-- > 0)); do
		got=$(fused_status_json | jq -r '.[0] | "\(.allocation) \(.reserveBytes)"')
		[[ $got == "pool $RESERVE" ]] && return 0
		sleep 0.1
	done
	echo "the pool did not fill: status says '$got'" >&2
	return 1
}

# pool_inodes: the inode numbers of the pool files now.
pool_inodes() { stat -c %i "$BED_SRV_DIR"/.fused/pool.* | sort -n | tr '\n' ' '; }

# acl_user_ids FILE: the named users (ACL_USER entries) of FILE's access ACL, from the raw xattr.
acl_user_ids() {
	python3 - "$1" <<-'PY'
		import os, struct, sys
		try:
		    raw = os.getxattr(sys.argv[1], "system.posix_acl_access")
		except OSError:
		    raw = b"\x02\0\0\0"
		ids = [i for t, p, i in struct.iter_unpack("<HHI", raw[4:]) if t == 0x02]
		print(" ".join(map(str, ids)))
	PY
}

# default_acl DIR UID: give DIR a default ACL granting UID rw (setfacl -d -m u:UID:rw, written as the raw xattr).
default_acl() {
	python3 - "$1" "$2" <<-'PY'
		import os, struct, sys
		entries = [(0x01, 6, 0xFFFFFFFF), (0x02, 6, int(sys.argv[2])), (0x04, 4, 0xFFFFFFFF), (0x10, 6, 0xFFFFFFFF), (0x20, 4, 0xFFFFFFFF)]
		raw = struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *e) for e in entries)
		os.setxattr(sys.argv[1], "system.posix_acl_default", raw)
	PY
}

@test "a copy served from the pool is direct and exact, keeps the group and ACL its create gave it, and the pool refills" {
	local size=$((48 * MiB)) before pool dir=$BED_SRV_DIR/shared ino
	wc_src "$size"
	mkdir -p "$dir"
	# What the create through the mount gives a file here: the directory's group (setgid) and a default ACL.
	chgrp 4242 "$dir"
	chmod 2775 "$dir"
	default_acl "$dir" 4243
	pool_ready
	pool=$(pool_inodes)
	before=$(bed_sectors_written "$BED_DEV_B")
	run -0 --separate-stderr bed_in_client "$FUSED_BIN/fusedcp" --json "$WC_SRC" "$BED_CLI_DIR/shared/pooled.bin"
	assert_equal "$(jq -c '.[0] | [.status, .write.path, .write.reason, .write.bytesDirect]' <<<"$output")" "[\"copied\",\"direct\",null,$size]"
	(($(bed_sectors_written "$BED_DEV_B") - before >= size / 512)) || fail "the client's device did not write the file"
	# The file is one of the pool's files, swapped into place (its inode), and holds the source.
	ino=$(stat -c %i "$dir/pooled.bin")
	[[ " $pool " == *" $ino "* ]] || fail "inode $ino is not one of the pool's ($pool)"
	assert_equal "$(rc_sha "$dir/pooled.bin")" "$(rc_sha "$WC_SRC")"
	assert_equal "$(wc_disk_sha "$dir/pooled.bin")" "$(rc_sha "$WC_SRC")"
	assert_equal "$(bed_in_client cat "$BED_CLI_DIR/shared/pooled.bin" | rc_sha)" "$(rc_sha "$WC_SRC")"
	assert_equal "$(stat -c '%s %g' "$dir/pooled.bin")" "$size 4242"
	assert_equal "$(acl_user_ids "$dir/pooled.bin")" 4243
	rc_no_temps "$dir"
	# The pool is made whole again, with a new file where the one swapped away was.
	pool_ready
	[[ $(pool_inodes) != "$pool" ]] || fail "the pool files are the same as before the copy"
	[[ " $(pool_inodes) " != *" $ino "* ]] || fail "the copy's inode is still in the pool"
	assert_equal "$(rc_sha "$dir/pooled.bin")" "$(rc_sha "$WC_SRC")"
}

@test "a copy larger than a pool file takes its head from the pool and zero-fills the rest, exactly" {
	local size=$((100 * MiB + 12345)) pool ino
	wc_src "$size"
	pool_ready
	pool=$(pool_inodes)
	run -0 --separate-stderr bed_in_client "$FUSED_BIN/fusedcp" --json "$WC_SRC" "$BED_CLI_DIR/grown.bin"
	assert_equal "$(jq -c '.[0] | [.status, .write.path, .write.bytesDirect]' <<<"$output")" "[\"copied\",\"direct\",$size]"
	ino=$(stat -c %i "$BED_SRV_DIR/grown.bin")
	[[ " $pool " == *" $ino "* ]] || fail "inode $ino is not one of the pool's ($pool)"
	assert_equal "$(stat -c %s "$BED_SRV_DIR/grown.bin")" "$size"
	assert_equal "$(wc_disk_sha "$BED_SRV_DIR/grown.bin")" "$(rc_sha "$WC_SRC")"
	assert_equal "$(bed_in_client cat "$BED_CLI_DIR/grown.bin" | rc_sha)" "$(rc_sha "$WC_SRC")"
	rm "$BED_SRV_DIR/grown.bin"
}

@test "a name changed while the server swaps is left as it is: the other file is intact, no pool zeros in it" {
	local size=$((40 * MiB)) decoy_sha hook=$BED_DIR/race-hook.sh
	wc_src "$size"
	mkdir -p "$BED_SRV_DIR/race"
	head -c $((3 * MiB)) /dev/urandom >"$BED_SRV_DIR/race/decoy"
	sync
	decoy_sha=$(rc_sha "$BED_SRV_DIR/race/decoy")
	# Between the server's check of the name and its exchange, another file is renamed over the temporary file.
	cat >"$hook" <<-EOF
		f=\$(find '$BED_SRV_DIR/race' -maxdepth 1 -name '.*.fused-*' | head -1)
		[ -n "\$f" ] && [ -e '$BED_SRV_DIR/race/decoy' ] && mv '$BED_SRV_DIR/race/decoy' "\$f"
	EOF
	FUSED_TEST_SWAP_HOOK="sh $hook" restart_server --reserve "$RESERVE"
	pool_ready
	run --separate-stderr bed_in_client "$FUSED_BIN/fusedcp" --json "$WC_SRC" "$BED_CLI_DIR/race/copy.bin"
	grep -q 'no swap from pool.*the name changed during the swap' "$BED_DIR/server.log" || fail "the swap was not raced: $(tail -5 "$BED_DIR/server.log")"
	# The decoy took the temporary name, and fusedcp's rename moved it to the final name: its bytes, whole.
	assert [ ! -e "$BED_SRV_DIR/race/decoy" ]
	assert_equal "$(rc_sha "$BED_SRV_DIR/race/copy.bin")" "$decoy_sha"
	assert_equal "$(wc_disk_sha "$BED_SRV_DIR/race/copy.bin")" "$decoy_sha"
	# The pool gave up the file that was seen, and is whole again.
	pool_ready
}

@test "with no pool (--reserve 0) an ext4 copy is zero-filled, direct and exact, and the pool files are given back" {
	local size=$((40 * MiB))
	wc_src "$size"
	restart_server --reserve 0
	run -0 --separate-stderr bed_in_client "$FUSED_BIN/fusedcp" --json "$WC_SRC" "$BED_CLI_DIR/filled.bin"
	assert_equal "$(jq -c '.[0] | [.status, .write.path, .write.bytesDirect]' <<<"$output")" "[\"copied\",\"direct\",$size]"
	assert_equal "$(fused_status_json | jq -r '.[0] | "\(.allocation) \(.reserveBytes)"')" "zero-fill 0"
	run -0 find "$BED_SRV_DIR/.fused" -name 'pool.*'
	assert_output ''
	assert_equal "$(wc_disk_sha "$BED_SRV_DIR/filled.bin")" "$(rc_sha "$WC_SRC")"
	rm "$BED_SRV_DIR/filled.bin"
}
