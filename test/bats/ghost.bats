#!/usr/bin/env bats
# The ghost-file transport (ext4-4k): map requests travel as files on the volume, through the client's sshfs
# mount, with the map server's TCP port blocked; reads, writes, recalls, cleanup, per-node permissions, no server.

load helpers

# A short lease and cleanup keep the recall and the cleanup tests quick (a writer needs T > 2 s: it starts device
# writes only while its lease has more than the 1 s margin left, and T - margin is all a fresh reply gives).
GHOST_LEASE=4
GHOST_CLEANUP=3

setup_file() {
	requires_root
	bed_init || return 1
	echo "$BED_DIR" >"$BATS_FILE_TMPDIR/bed_dir"
	bed_make_nodes &&
		bed_make_volume ext4-4k 512M &&
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
	# status reaches the server the same way, and proves the key both ways.
	run -0 --separate-stderr bed_in_client "$FUSED_BIN/fusedctl" status --json
	run jq -r '.[0] | "\(.server) \(.serverReachable) \(.access)"' <<<"$output"
	assert_output "ghost:$BED_CLI_DIR true rw"
	# Each command removed its session directory as it exited.
	run ls -A "$(ghost_nodedir cli)"
	assert_output ''
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

@test "a recall reaches the ghost client through its mailbox: a writer on the server gets in within the lease time" {
	# Much larger than what fusedcat buffers, so it still holds its map while the consumer waits.
	head -c 200M /dev/urandom >"$BED_SRV_DIR/recall.bin"
	sync
	local want out=$BATS_TEST_TMPDIR/cat ms
	want=$(sha256sum <"$BED_SRV_DIR/recall.bin" | cut -d' ' -f1)
	# fusedcat into a consumer that waits before reading: fusedcat holds its read lease, blocked mid-file.
	(
		bed_in_client "$FUSED_BIN/fusedcat" "$BED_CLI_DIR/recall.bin" 2>"$out.err" | (sleep 3 && sha256sum | cut -d' ' -f1 >"$out.sha")
		echo "${PIPESTATUS[0]}" >"$out.rc"
	) &
	# Wait until the server holds the kernel lease of fusedcat's map (the server's read lease on the file).
	local ino i
	ino=$(stat -c %i "$BED_SRV_DIR/recall.bin")
	for ((i = 0; i < 100; i++)); do
		awk -v ino="$ino" '$2 == "LEASE" && $6 ~ (":" ino "$") { found = 1 } END { exit !found }' /proc/locks && break
		sleep 0.1
	done
	((i < 100)) || fail "fusedcat never got a map of the file"
	# A blocking open for writing waits for the recall (or, unanswered, for T + margin).
	ms=$(bed_in_server timeout 30 python3 -c '
import os, sys, time
t0 = time.monotonic()
fd = os.open(sys.argv[1], os.O_WRONLY)
print(round((time.monotonic() - t0) * 1000))
os.close(fd)' "$BED_SRV_DIR/recall.bin")
	wait
	echo "# writer waited $ms ms" >&3
	((ms < GHOST_LEASE * 1000)) || fail "the writer waited $ms ms (lease time ${GHOST_LEASE} s)"
	# The map was recalled and returned, not left to expire.
	grep -q "lease break on [0-9]*:$ino: recalling" "$BED_DIR/server.log"
	run ! grep "lease break on [0-9]*:$ino: .* did not return" "$BED_DIR/server.log"
	# The file did not change: fusedcat delivered it whole (finishing over the network after the recall).
	assert_equal "$(cat "$out.rc")" 0
	assert_equal "$(cat "$out.sha")" "$want"
}

@test "a ghost client killed mid-request leaves nothing behind after the cleanup interval" {
	local pid i
	head -c 1M /dev/urandom >"$BED_SRV_DIR/kill.bin"
	# nsenter execs node: $! is the client itself.
	nsenter --net="/run/netns/$BED_CLI_NS" node "$BED_ROOT/test/bench/ghostlat.mjs" "ghost:$BED_CLI_DIR" "$BED_KEY" cli vol kill.bin 1000000 >/dev/null 2>&1 &
	pid=$!
	for ((i = 0; i < 50; i++)); do
		[[ -n $(ls -A "$(ghost_nodedir cli)") ]] && break
		sleep 0.1
	done
	[[ -n $(ls -A "$(ghost_nodedir cli)") ]] || fail "no ghost session appeared"
	sleep 0.5
	kill -KILL "$pid"
	wait "$pid" 2>/dev/null || true
	# The cleanup interval, the scan that notices, and slack for a busy machine.
	for ((i = 0; i < (GHOST_CLEANUP + 6) * 10; i++)); do
		[[ -z $(ls -A "$(ghost_nodedir cli)") ]] && break
		sleep 0.1
	done
	run ls -A "$(ghost_nodedir cli)"
	[[ -z $output ]] || tail -20 "$BED_DIR/server.log"
	assert_output ''
}

@test "a node cannot read or write another node's ghost files" {
	# The bed's directory is private to root; let the other node's user pass through it, as a mount would.
	chmod 711 "$BED_DIR"
	local cli other
	cli=$(ghost_nodedir cli) other=$(ghost_nodedir other)
	run stat -c '%u %a' "$cli" "$other" "$BED_SRV_DIR/.fused/ghost"
	assert_output $'0 700\n65534 700\n0 711'
	as_other() { setpriv --reuid 65534 --regid 65534 --clear-groups "$@"; }
	# Its own directory works (so the refusals below are about permissions, not paths). The directory's name is not
	# a session's (SESSION_NAME): the server would take one for a client and write its reply into it, racing the rm
	# (CI once: "Directory not empty")...
	run -0 as_other sh -c "mkdir '$other/scratch' && echo x >'$other/scratch/c.x' && rm -r '$other/scratch'"
	# ...another node's does not, nor does listing which nodes there are.
	run ! as_other ls "$cli"
	run ! as_other touch "$cli/x"
	run ! as_other mkdir "$cli/0123456789abcdef0123"
	run ! as_other ls "$BED_SRV_DIR/.fused/ghost"
}

@test "no running map server: a clear error at once, exit 6" {
	bed_stop_server
	local t0=$SECONDS
	run -6 --separate-stderr bed_in_client "$FUSED_BIN/fusedmap" "$BED_CLI_DIR/src.bin"
	assert [ $((SECONDS - t0)) -le 5 ]
	assert_regex "$stderr" 'no map server serves this volume'
	# A server that died without cleaning up leaves a stale heartbeat: refused as well.
	echo "fused-ghost 1 srv $(($(date +%s%3N) - 60000)) 1000" >"$BED_SRV_DIR/.fused/ghost/ALIVE"
	t0=$SECONDS
	run -6 --separate-stderr bed_in_client "$FUSED_BIN/fusedmap" "$BED_CLI_DIR/src.bin"
	assert [ $((SECONDS - t0)) -le 5 ]
	assert_regex "$stderr" 'has not been alive for [0-9]+ s'
}
