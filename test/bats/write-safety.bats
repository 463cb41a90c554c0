#!/usr/bin/env bats
# The direct write path when things go wrong (ext4-4k, lease time 3 s): a writer killed or stopped mid-file, two
# writers of one file, a volume without room, a read-only node. Nothing but the file's own blocks may ever change.

load helpers
source "$FUSED_LIB/writecases.bash"

# Short, as timing matters here; WRITE_LEASE_TIME overrides it (to tell a timing defect from another).
LEASE_TIME=${WRITE_LEASE_TIME:-3}

# A pool (ext4) of one 128 MiB file: the copy bigger than the free space is bigger than the pool file and the free
# space together, so it runs out of room.
setup_file() { wc_setup_file ext4-4k --lease-time "$LEASE_TIME" --reserve 128M; }

teardown_file() { bed_teardown_file; }

# Temporaries a failed test left (a passing test has checked there are none), so the next test starts clean.
teardown() { [[ -z ${BED_SRV_DIR:-} ]] || find "$BED_SRV_DIR" -maxdepth 1 -name '.*.fused-*' -delete; }

# neighbours: three files on the volume written on the server (synced), so "no other file changed" has something
# to check.
neighbours() {
	local i
	for i in 1 2 3; do
		[[ -e $BED_SRV_DIR/neighbour-$i.bin ]] || dd if=/dev/urandom of="$BED_SRV_DIR/neighbour-$i.bin" bs=1M count=16 conv=fsync status=none
	done
}

# wait_no_lease FILE: wait (bounded: well past T + M) until the server holds no kernel lease on FILE.
wait_no_lease() {
	local tries=$(((LEASE_TIME + 1) * 20 + 300))
	while rc_lease_held "$1"; do
		((tries-- > 0)) || fail "the lease on $1 is still held"
		sleep 0.05
	done
}

@test "a 1 GiB copy goes direct all the way although allocating it takes longer than a short lease" {
	local size=$((1024 * 1048576)) before
	wc_src "$size"
	before=$(bed_sectors_written "$BED_DEV_B")
	run -0 --separate-stderr bed_in_client "$FUSED_BIN/fusedcp" --json "$WC_SRC" "$BED_CLI_DIR/long-alloc.bin"
	assert_equal "$(jq -c '.[0] | [.status, .write.path, .write.reason, .write.bytesDirect]' <<<"$output")" "[\"copied\",\"direct\",null,$size]"
	(($(bed_sectors_written "$BED_DEV_B") - before >= size / 512)) || fail "the client's device did not write the file"
	assert_equal "$(rc_sha "$BED_SRV_DIR/long-alloc.bin")" "$(rc_sha "$WC_SRC")"
	rm "$BED_SRV_DIR/long-alloc.bin"
}

@test "a client killed mid-write leaves nothing under the final name, zeros or its own bytes in the temporary, and no other file changed" {
	local size=$((1024 * 1048576)) sums before temp rc=0 d=$BATS_TEST_TMPDIR
	neighbours
	wc_src "$size"
	sums=$(wc_volume_sums)
	before=$(bed_sectors_written "$BED_DEV_B")
	wc_spawn_client "$d/out" "$d/err" "$FUSED_BIN/fusedcp" --json "$WC_SRC" "$BED_CLI_DIR/killed.bin"
	wc_wait_temp_lease killed.bin || fail "$(cat "$d/err")"
	temp=$WC_TEMP
	# Killed once the lease is there and 32 MiB went to the device (so the temporary holds some of the source).
	wc_wait_written "$BED_DEV_B" 65536 "$before" || fail "no direct write: $(cat "$d/err")"
	kill -KILL "$WC_PID"
	wc_wait_exit "$WC_PID" || rc=$?
	assert_equal "$rc" 137
	assert [ ! -e "$BED_SRV_DIR/killed.bin" ]
	assert [ -e "$BED_SRV_DIR/$temp" ]
	# The lease expires (nobody answers for the dead client); the aborted file is back to its size at map time (0),
	# and whatever it holds is the source's bytes or zeros.
	wait_no_lease "$BED_SRV_DIR/$temp"
	run -0 wc_blocks_from "$WC_SRC" "$BED_SRV_DIR/$temp"
	assert_equal "$(stat -c %s "$BED_SRV_DIR/$temp")" 0
	rm "$BED_SRV_DIR/$temp"
	assert_equal "$(wc_volume_sums)" "$sums"
	# A new copy to the same name goes direct.
	run -0 --separate-stderr bed_in_client "$FUSED_BIN/fusedcp" --json "$WC_SRC" "$BED_CLI_DIR/killed.bin"
	assert_equal "$(jq -c '.[0] | [.status, .write.path, .write.bytesDirect]' <<<"$output")" "[\"copied\",\"direct\",$size]"
	assert_equal "$(rc_sha "$BED_SRV_DIR/killed.bin")" "$(rc_sha "$WC_SRC")"
	assert_equal "$(wc_volume_sums killed.bin)" "$sums"
	rc_no_temps "$BED_SRV_DIR"
	rm "$BED_SRV_DIR/killed.bin"
}

@test "a client killed while its allocation is being zeroed: the aborted file ends empty, other files and copies unharmed" {
	local before sums d=$BATS_TEST_TMPDIR rc=0 temp settle last now tries
	neighbours
	# 3 GiB asked at once: zeroing that takes the server longer than T + M, so the lease of the dead client ends
	# (and the server closes the file) while the zeros are still being written.
	truncate -s 3G "$BED_DIR/src/sparse-3g.bin"
	wc_src $((64 * 1048576)) other
	sums=$(wc_volume_sums)
	wc_spawn_client "$d/out" "$d/err" "$FUSED_BIN/fusedcp" --json "$BED_DIR/src/sparse-3g.bin" "$BED_CLI_DIR/alloc-killed.bin"
	wc_wait_temp_lease alloc-killed.bin || fail "$(cat "$d/err")"
	temp=$WC_TEMP
	kill -KILL "$WC_PID"
	wc_wait_exit "$WC_PID" || rc=$?
	assert_equal "$rc" 137
	wait_no_lease "$BED_SRV_DIR/$temp"
	# Right away, another client's work opens descriptors on the server (a connection, a file under a write map).
	run -0 --separate-stderr bed_in_client "$FUSED_BIN/fusedcp" --json "$WC_SRC" "$BED_CLI_DIR/after-kill.bin"
	assert_equal "$(jq -c '.[0] | [.status, .write.path, .write.reason]' <<<"$output")" '["copied","direct",null]'
	# Wait (bounded) until the server's device has been quiet for 2 s: the zeroing is over, one way or another.
	settle=0 tries=1200 last=$(bed_sectors_written "$BED_DEV_A")
	while ((settle < 20 && tries-- > 0)); do
		sleep 0.1
		now=$(bed_sectors_written "$BED_DEV_A")
		if ((now == last)); then settle=$((settle + 1)); else settle=0 last=$now; fi
	done
	assert_equal "$(rc_sha "$BED_SRV_DIR/after-kill.bin")" "$(rc_sha "$WC_SRC")"
	assert_equal "$(wc_disk_sha "$BED_SRV_DIR/after-kill.bin")" "$(rc_sha "$WC_SRC")"
	assert_equal "$(stat -c %s "$BED_SRV_DIR/after-kill.bin")" $((64 * 1048576))
	assert [ ! -e "$BED_SRV_DIR/alloc-killed.bin" ]
	# Aborted: back to its size at map time, nothing allocated for it kept.
	assert_equal "$(stat -c '%s %b' "$BED_SRV_DIR/$temp")" '0 0'
	rm "$BED_SRV_DIR/$temp"
	assert_equal "$(wc_volume_sums after-kill.bin)" "$sums"
	rm "$BED_SRV_DIR/after-kill.bin"
}

@test "a client stopped past its lease while the server opens its file writes nothing more to the device after SIGCONT" {
	local size=$((1024 * 1048576)) before stopped temp opener nsha rc=0 d=$BATS_TEST_TMPDIR
	wc_src "$size"
	before=$(bed_sectors_written "$BED_DEV_B")
	wc_spawn_client "$d/out" "$d/err" "$FUSED_BIN/fusedcp" --json "$WC_SRC" "$BED_CLI_DIR/stopped.bin"
	wc_wait_temp_lease stopped.bin || fail "$(cat "$d/err")"
	temp=$WC_TEMP
	wc_wait_written "$BED_DEV_B" 65536 "$before" || fail "no direct write: $(cat "$d/err")"
	kill -STOP "$WC_PID"
	# Writes the kernel had already been given complete; then the count must not move.
	sleep 1
	stopped=$(bed_sectors_written "$BED_DEV_B")
	# Someone opens the file on the server: the lease breaks, the stopped client cannot answer the recall, the server
	# lets the opener in once T + M have passed.
	cat "$BED_SRV_DIR/$temp" >/dev/null &
	opener=$!
	bed_record_pid "$opener" || true
	wc_wait_exit "$opener" $(((LEASE_TIME + 1) * 10 + 300)) || fail "the opener on the server was never let in"
	# A neighbour allocated meanwhile (likely in blocks the aborted file gave back).
	dd if=/dev/urandom of="$BED_SRV_DIR/late-neighbour.bin" bs=1M count=256 conv=fsync status=none
	nsha=$(wc_disk_sha "$BED_SRV_DIR/late-neighbour.bin")
	kill -CONT "$WC_PID"
	wc_wait_exit "$WC_PID" 1800 || rc=$?
	assert_equal "$(bed_sectors_written "$BED_DEV_B")" "$stopped"
	assert_equal "$(wc_disk_sha "$BED_SRV_DIR/late-neighbour.bin")" "$nsha"
	# fusedcp either finished through the mount (a whole, correct file) or failed leaving nothing under the name.
	if ((rc == 0)); then
		assert_equal "$(rc_sha "$BED_SRV_DIR/stopped.bin")" "$(rc_sha "$WC_SRC")"
		assert_equal "$(jq -c '.[0] | [.status, .write.path != "direct"]' "$d/out")" '["copied",true]'
	else
		assert [ ! -e "$BED_SRV_DIR/stopped.bin" ]
	fi
	rc_no_temps "$BED_SRV_DIR"
	rm -f "$BED_SRV_DIR/stopped.bin" "$BED_SRV_DIR/late-neighbour.bin"
}

@test "one writer per file: a second write map of a file under a write map gets CONFLICT until the lease ends" {
	local proto=(bed_in_client python3 "$FUSED_LIB/fusedproto.py" "$BED_SERVER" --secret-file "$BED_SECRET")
	head -c 100000 /dev/urandom >"$BED_SRV_DIR/conflict.bin"
	local sha
	sha=$(rc_sha "$BED_SRV_DIR/conflict.bin")
	run -0 --separate-stderr "${proto[@]}" 'MAP vol conflict.bin write'
	assert_regex "${lines[0]}" '^OK MAP lease=[^ ]+ mode=write '
	# That connection is closed, its lease is not released: it holds until T + M have passed.
	run -0 --separate-stderr "${proto[@]}" 'MAP vol conflict.bin write'
	assert_regex "${lines[0]}" '^ERR CONFLICT '
	# Asking is no reason to recall the writer: its kernel lease is not being broken.
	wc_lease_breaking "$BED_SRV_DIR/conflict.bin" && fail "the second MAP ... write started breaking the first writer's lease: $(grep LEASE /proc/locks)"
	# A reader is told to use the network (the file is being written), without recalling the writer either.
	run -0 --separate-stderr "${proto[@]}" 'MAP vol conflict.bin'
	assert_regex "${lines[0]}" '^OK MAP .* network='
	wc_lease_breaking "$BED_SRV_DIR/conflict.bin" && fail "a read MAP started breaking the writer's lease: $(grep LEASE /proc/locks)"
	sleep $((LEASE_TIME + 2))
	wait_no_lease "$BED_SRV_DIR/conflict.bin"
	run -0 --separate-stderr "${proto[@]}" 'MAP vol conflict.bin write' 'RELEASE'
	assert_regex "${lines[0]}" '^OK MAP lease=[^ ]+ mode=write '
	# Nothing was written: the file is as it was.
	assert_equal "$(rc_sha "$BED_SRV_DIR/conflict.bin")" "$sha"
	assert_equal "$(stat -c %s "$BED_SRV_DIR/conflict.bin")" 100000
	rm "$BED_SRV_DIR/conflict.bin"
}

@test "a copy bigger than the free space fails with a clear message, leaves nothing, and gives the space back" {
	local size=$((300 * 1048576)) free
	wc_src "$size"
	wc_fill_volume filler.bin $((64 * 1048576))
	free=$(wc_free)
	((free < size)) || fail "the volume still has $free bytes free"
	run -1 --separate-stderr bed_in_client "$FUSED_BIN/fusedcp" "$WC_SRC" "$BED_CLI_DIR/full.bin"
	assert_regex "$stderr" 'fusedcp: [^ ]*: .*(no space|No space|ENOSPC)'
	assert [ ! -e "$BED_SRV_DIR/full.bin" ]
	rc_no_temps "$BED_SRV_DIR"
	sync
	# The same free space as before, give or take a directory block.
	local now
	now=$(wc_free)
	((now >= free - 65536)) || fail "free space was $free bytes, now $now"
	rm "$BED_SRV_DIR/filler.bin"
}

@test "a read-only node writes onto the fused mount through the mount, quietly, and nothing to the device" {
	local mnt=$BED_DIR/ro-volume key before size=$((4 * 1048576))
	bed_mount_client "$BED_SRV_DIR" "$mnt"
	key=$(bed_node_key ro1)
	run -0 bed_in_client "$FUSED_BIN/fusedctl" fuse "$mnt" --server "$BED_SERVER" --key-file "$key" --node ro1
	assert_output --partial 'access ro'
	wc_src "$size"
	head -c "$size" /dev/urandom >"$BED_SRV_DIR/ro-src.bin"
	sync
	before=$(bed_sectors_written "$BED_DEV_B")
	# Local -> fused.
	run -0 --separate-stderr bed_in_client "$FUSED_BIN/fusedcp" --json "$WC_SRC" "$mnt/ro-local.bin"
	assert_equal "$(jq -c ".[0] | [.status, $(printf '%s' '.write.path, .write.fallback, .write.bytesDirect, .write.bytesNetwork')]" <<<"$output")" "[\"copied\",\"network\",false,0,$size]"
	assert_regex "$(jq -r '.[0].write.reason' <<<"$output")" 'read-only'
	# Whatever is said about reading the local source, nothing about writing the destination.
	refute_regex "$stderr" 'ro-local|read-only|role'
	assert_equal "$(rc_sha "$BED_SRV_DIR/ro-local.bin")" "$(rc_sha "$WC_SRC")"
	# Fused -> fused: read direct, written through the mount, not a word on stderr.
	run -0 --separate-stderr bed_in_client "$FUSED_BIN/fusedcp" --json "$mnt/ro-src.bin" "$mnt/ro-copy.bin"
	assert_equal "$(jq -c '.[0] | [.status, .path, .write.path, .write.fallback]' <<<"$output")" '["copied","direct","network",false]'
	assert_equal "$stderr" ''
	assert_equal "$(rc_sha "$BED_SRV_DIR/ro-copy.bin")" "$(rc_sha "$BED_SRV_DIR/ro-src.bin")"
	# Not a sector written through the client's device.
	assert_equal "$(bed_sectors_written "$BED_DEV_B")" "$before"
	rc_no_temps "$BED_SRV_DIR"
	rm "$BED_SRV_DIR"/ro-{local,src,copy}.bin
}
