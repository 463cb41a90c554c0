#!/usr/bin/env bats
# Recalls and lost direct paths mid-read (ext4-4k): writers on the server get through at once, and what
# fusedcat/fusedcp deliver is the old or the new content (or fusedcat says it changed), never a silent mix.

load helpers
source "$FUSED_LIB/readcases.bash"

setup_file() {
	bed_setup_file ext4-4k 2G
	fuse_client >"$BED_DIR/fuse.out"
	rc_make big
}

# A test may have restarted the map server: use its current PID.
setup() { rc_refresh_env; }

# A test that failed while the map server was down must not take the later tests with it.
teardown() {
	rc_refresh_env
	bed_alive "$BED_SERVER_PID" || bed_start_server
}

teardown_file() { bed_teardown_file; }

# cat_slowly: fusedcat of $cf into a consumer that waits 3 s before reading (so fusedcat blocks mid-file);
# in the background. Leaves the output's sha256 in $out.sha, fusedcat's stderr in $out.err, its status in $out.rc.
cat_slowly() {
	out=$BATS_TEST_TMPDIR/cat
	(
		bed_in_client "$FUSED_BIN/fusedcat" "$cf" 2>"$out.err" | (sleep 3 && rc_sha >"$out.sha")
		echo "${PIPESTATUS[0]}" >"$out.rc"
	) &
	bg=$!
}

# cp_slowly [OPTION...]: fusedcp --json [OPTION...] of $cf into a directory on the client's network mount (the
# 1 Gbit/s link makes a 256 MiB copy through it take seconds), in the background. The copy lands at $dstsrv/NAME
# on the server's side.
cp_slowly() {
	out=$BATS_TEST_TMPDIR/cp
	dstsrv=$BED_SRV_DIR/dst-$BATS_TEST_NUMBER
	mkdir -p "$dstsrv"
	(
		bed_in_client "$FUSED_BIN/fusedcp" --json "$@" "$cf" "$BED_CLI_DIR/dst-$BATS_TEST_NUMBER/" >"$out.json" 2>"$out.err"
		echo $? >"$out.rc"
	) &
	bg=$!
}

# on_server_timed CMD...: run CMD in the server's namespace, bounded by 20 s; its wall time in ms goes to $ms.
on_server_timed() { rc_timed ms bed_in_server timeout 20 "$@"; }

# new_content: 256 MiB of other random bytes in $new_src, to replace every byte of a make_file file (so that any
# mix of old and new shows in the sha256); made before the reader starts, so it costs nothing in the race.
new_content() {
	new_src=$BATS_TEST_TMPDIR/new.bin
	dd if=/dev/urandom of="$new_src" bs=1M count=256 status=none
}

# rewrite_all [PAUSE]: a writer on the server opens $f for writing, without truncation (the open waits for the
# recall), and overwrites every byte with $new_src's, pausing PAUSE seconds (default 0) after each MiB, then
# fsyncs; bounded by 60 s. The open's wait in ms goes to $ms.
rewrite_all() {
	ms=$(bed_in_server timeout 60 python3 -c '
import os, sys, time
t0 = time.monotonic()
fd = os.open(sys.argv[1], os.O_WRONLY)
waited = time.monotonic() - t0
with open(sys.argv[2], "rb") as src:
    at = 0
    while chunk := src.read(1 << 20):
        os.pwrite(fd, chunk, at)
        at += len(chunk)
        time.sleep(float(sys.argv[3]))
os.fsync(fd)
os.close(fd)
print(round(waited * 1000))' "$f" "$new_src" "${1:-0}") || return 1
	[[ $ms =~ ^[0-9]+$ ]] || { echo "the writer said '$ms', not its wait" >&2; return 1; }
}

# assert_cat_outcome: fusedcat said the file changed (exit 1), or exited 0 with exactly the old ($old) or the new
# ($new) content.
assert_cat_outcome() {
	local rc
	rc=$(cat "$out.rc")
	if [[ $rc == 1 ]]; then
		assert_regex "$(cat "$out.err")" 'changed while being read'
	else
		assert_equal "$rc" 0
		[[ $(cat "$out.sha") == "$old" || $(cat "$out.sha") == "$new" ]] || fail "fusedcat exited 0, but its output is neither the old nor the new content (a silent mix)"
	fi
}

assert_fast_writer() { ((ms < 5000)) || fail "the opener on the server waited ${ms} ms (a recall should take well under 5 s)"; }

@test "an opener for writing on the server gets through at once; fusedcat's output is the unchanged content" {
	make_file open.bin
	cat_slowly
	rc_wait_lease "$f"
	on_server_timed sh -c 'exec 3>>"$1"' sh "$f"
	wait "$bg"
	assert_fast_writer
	assert_equal "$(cat "$out.rc")" 0
	assert_equal "$(cat "$out.sha")" "$old"
	# It was really mid-file: the rest went through the mount, and fusedcat says why.
	assert_regex "$(cat "$out.err")" 'fusedcat: .*open.bin: recalled.*the rest was read through the mount'
	rm "$f"
}

@test "a writer on the server gets through at once; fusedcat outputs old or new content or says it changed" {
	make_file write.bin
	new_content
	cat_slowly
	rc_wait_lease "$f"
	rewrite_all
	wait "$bg"
	assert_fast_writer
	local new
	new=$(rc_sha "$f")
	assert_equal "$new" "$(rc_sha "$new_src")"
	assert_cat_outcome
	rm "$f"
}

@test "a writer on the server gets through at once; fusedcp's copy is the old or the new content, interrupted" {
	make_file cpwrite.bin
	new_content
	cp_slowly
	rc_wait_lease "$f"
	rewrite_all
	wait "$bg"
	assert_fast_writer
	local new got
	new=$(rc_sha "$f")
	assert_equal "$new" "$(rc_sha "$new_src")"
	assert_equal "$(cat "$out.rc")" 0
	# Restarted through the mount; or, when the file changed again during that, copied again from the start.
	run -0 jq -c '.[0] | [.status, .interrupted, (.path == "network" or (.reason | test("copied again")))]' "$out.json"
	assert_output '["copied",true,true]'
	got=$(rc_sha "$dstsrv/cpwrite.bin")
	[[ $got == "$old" || $got == "$new" ]] || fail "the copy is neither the old nor the new content"
	rc_no_temps "$dstsrv"
	rm -r "$f" "$dstsrv"
}

@test "a slow writer on the server, still writing while fusedcat reads the rest: old or new content, or it says it changed" {
	make_file catslow.bin
	new_content
	cat_slowly
	rc_wait_lease "$f"
	# 256 MiB over 8 s or more: fusedcat's rest through the mount reads while the writer writes.
	rewrite_all 0.03
	wait "$bg"
	assert_fast_writer
	local new
	new=$(rc_sha "$f")
	assert_equal "$new" "$(rc_sha "$new_src")"
	assert_cat_outcome
	rm "$f"
}

@test "a slow writer on the server, still writing while fusedcp copies the rest: old or new content, or it says it changed" {
	make_file cpslow.bin
	new_content
	cp_slowly
	rc_wait_lease "$f"
	# 256 MiB over 8 s or more: the copy's restart through the mount reads while the writer writes.
	rewrite_all 0.03
	wait "$bg"
	assert_fast_writer
	local new got rc
	new=$(rc_sha "$f")
	assert_equal "$new" "$(rc_sha "$new_src")"
	rc=$(cat "$out.rc")
	if [[ $rc == 0 ]]; then
		run -0 jq -c '.[0] | [.status, .interrupted]' "$out.json"
		assert_output '["copied",true]'
		got=$(rc_sha "$dstsrv/cpslow.bin")
		[[ $got == "$old" || $got == "$new" ]] || fail "fusedcp exited 0, but the copy is neither the old nor the new content (a silent mix)"
	else
		assert_regex "$(cat "$out.err")" 'changed while being read'
		assert [ ! -e "$dstsrv/cpslow.bin" ]
	fi
	rc_no_temps "$dstsrv"
	rm -r "$f" "$dstsrv"
}

@test "truncating the file on the server mid-read: fusedcp's copy is the old or the new (empty) content" {
	make_file cptrunc.bin
	cp_slowly
	rc_wait_lease "$f"
	# Not truncate(1): it opens with O_NONBLOCK, which a lease makes fail with EAGAIN at once.
	on_server_timed sh -c ': >"$1"' sh "$f"
	wait "$bg"
	assert_fast_writer
	local got
	assert_equal "$(cat "$out.rc")" 0
	run -0 jq -c '.[0] | [.status, .interrupted]' "$out.json"
	assert_output '["copied",true]'
	got=$(rc_sha "$dstsrv/cptrunc.bin")
	[[ $got == "$old" || $got == "$(rc_sha </dev/null)" ]] || fail "the copy is neither the old nor the new (empty) content"
	rc_no_temps "$dstsrv"
	rm -r "$f" "$dstsrv"
}

@test "truncating the file on the server mid-read: fusedcat says it changed, or outputs old or new exactly" {
	make_file cattrunc.bin
	cat_slowly
	rc_wait_lease "$f"
	# Not truncate(1): it opens with O_NONBLOCK, which a lease makes fail with EAGAIN at once.
	on_server_timed sh -c ': >"$1"' sh "$f"
	wait "$bg"
	assert_fast_writer
	# The new content is the empty file.
	local new
	new=$(rc_sha </dev/null)
	assert_cat_outcome
	rm "$f"
}

@test "the map server killed mid-copy: fusedcp completes through the mount or leaves nothing" {
	make_file kill.bin
	# Paced at 64 MiB/s, the 256 MiB copy takes about 4 s. The kill waits for the copy's first bytes at the
	# destination, not only for the server's lease: a kill between the lease and the map's reply would send the
	# whole file through the mount from the start, with nothing to interrupt.
	cp_slowly --limit 64MiB/s
	rc_wait_lease "$f"
	local tries=200
	until [[ $(find "$dstsrv" -maxdepth 1 -name '.kill.bin.fused-*' -size +0 | wc -l) -gt 0 ]]; do
		((tries-- > 0)) || fail "the copy wrote nothing in 10 s"
		sleep 0.05
	done
	kill -KILL "$BED_SERVER_PID"
	wait "$bg"
	local rc
	rc=$(cat "$out.rc")
	if [[ $rc == 0 ]]; then
		assert_equal "$(rc_sha "$dstsrv/kill.bin")" "$old"
		# The kill hit the copy: its direct read, or (a read lease lingers 2 s after the read) its direct write onto
		# the fused mount, which then went through the mount.
		run -0 jq -c '.[0] | [.status, (.interrupted or .write.interrupted)]' "$out.json"
		assert_output '["copied",true]'
	else
		assert [ ! -e "$dstsrv/kill.bin" ]
	fi
	rc_no_temps "$dstsrv"
	bed_start_server
	rm -r "$f" "$dstsrv"
	# The restarted server serves the direct path again.
	dst=$BATS_TEST_TMPDIR/out
	mkdir "$dst"
	run -0 --separate-stderr bed_in_client "$FUSED_BIN/fusedcp" --json "$BED_CLI_DIR/big.bin" "$dst"
	run -0 jq -c '.[0] | [.status, .path]' <<<"$output"
	assert_output '["copied","direct"]'
	assert_equal "$(rc_sha "$dst/big.bin")" "$(rc_sha "$BED_SRV_DIR/big.bin")"
}

@test "a device whose UUID changed after the fuse: fusedcp goes through the network, naming the UUID" {
	local dev mnt=$BED_DIR/client-volume2
	clone_volume copy "$mnt"
	dev=$CLONE_DEV
	# fuse refuses a copy (it lacks the server's probe token): fuse the real device, then point the record at
	# the copy, as if the disk behind the recorded path had been swapped (no identity recorded).
	run -0 --separate-stderr fuse_client "$mnt" --device "$BED_DEV_B"
	jq --arg m "$mnt" --arg d "$dev" '.fuses |= map(if .mountpoint == $m then .device = $d | del(.deviceId) else . end)' \
		"$BED_DIR/client-state/fuses.json" >"$BED_DIR/fuses.json.new" && mv "$BED_DIR/fuses.json.new" "$BED_DIR/client-state/fuses.json"
	# Only the copy's device, never device A (mounted) or B (the client's path to the volume).
	[[ $dev != "$BED_DEV_A" && $dev != "$BED_DEV_B" ]] || fail "the copy got a bed device"
	run e2fsck -fy "$dev"
	((status <= 1)) || fail "e2fsck of the copy failed"
	run -0 tune2fs -U random "$dev"
	[[ $(blkid -p -s UUID -o value "$dev") != "$BED_UUID" ]] || fail "the copy's UUID did not change"
	dst=$BATS_TEST_TMPDIR/out
	mkdir "$dst"
	run -0 --separate-stderr bed_in_client "$FUSED_BIN/fusedcp" "$mnt/big.bin" "$dst"
	assert_regex "$stderr" '^fusedcp: .*big.bin: through the network: .*UUID'
	assert_equal "$(rc_sha "$dst/big.bin")" "$(rc_sha "$BED_SRV_DIR/big.bin")"
	run -0 --separate-stderr bed_in_client "$FUSED_BIN/fusedcp" --json "$mnt/big.bin" "$dst/again.bin"
	run -0 jq -c '.[0] | [.status, .path, .bytesDirect, (.reason | test("UUID"))]' <<<"$output"
	assert_output '["copied","network",0,true]'
	assert_equal "$(rc_sha "$dst/again.bin")" "$(rc_sha "$BED_SRV_DIR/big.bin")"
	run -0 bed_in_client "$FUSED_BIN/fusedctl" unfuse "$mnt"
}

@test "the map server unreachable: fusedcp completes through the mount, naming the server" {
	bed_stop_server
	dst=$BATS_TEST_TMPDIR/out
	mkdir "$dst"
	run -0 --separate-stderr bed_in_client "$FUSED_BIN/fusedcp" "$BED_CLI_DIR/big.bin" "$dst"
	assert_regex "$stderr" '^fusedcp: .*big.bin: through the network: .*server'
	assert_equal "$(rc_sha "$dst/big.bin")" "$(rc_sha "$BED_SRV_DIR/big.bin")"
	run -0 --separate-stderr bed_in_client "$FUSED_BIN/fusedcp" --json "$BED_CLI_DIR/big.bin" "$dst/again.bin"
	run -0 jq -c '.[0] | [.status, .path, .bytesDirect, (.reason | test("server"))]' <<<"$output"
	assert_output '["copied","network",0,true]'
	assert_equal "$(rc_sha "$dst/again.bin")" "$(rc_sha "$BED_SRV_DIR/big.bin")"
	run -0 --separate-stderr rc_cat_sha "$BED_CLI_DIR/big.bin"
	assert_equal "$output" "$(rc_sha "$BED_SRV_DIR/big.bin")"
	assert_regex "$stderr" '^fusedcat: .*big.bin: through the network: .*server'
	bed_start_server
}
