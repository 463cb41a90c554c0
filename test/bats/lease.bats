#!/usr/bin/env bats
# The lease contract (ext4-4k, lease time 3 s): a client that is stopped or cut off never delivers device bytes
# read after its lease ran out, and a writer on the server waits for it no longer than T plus the margin.

load helpers
source "$FUSED_LIB/readcases.bash"

LEASE=3   # seconds: the server's --lease-time
MARGIN=1  # seconds: the protocol's lease margin

setup_file() {
	requires_root
	bed_init || return 1
	echo "$BED_DIR" >"$BATS_FILE_TMPDIR/bed_dir"
	# A small volume, so that a file written after a truncation must reuse the freed blocks.
	bed_make_nodes && bed_make_volume ext4-4k 1G && bed_start_sshd && bed_mount_client &&
		bed_start_server --lease-time "$LEASE" && fuse_client >"$BED_DIR/fuse.out"
}

setup() { rc_refresh_env; }

# The volume is small: each test leaves it empty.
teardown() { rm -f "$BED_SRV_DIR/other.bin" "$BED_SRV_DIR/victim.bin"; }

teardown_file() { bed_teardown_file; }

# make_victim: 256 MiB of random bytes on the server; $f (server path), $cf (client path), $old (a copy).
make_victim() {
	f=$BED_SRV_DIR/victim.bin
	cf=$BED_CLI_DIR/victim.bin
	old=$BATS_TEST_TMPDIR/old.bin
	rm -f "$BED_SRV_DIR/other.bin"
	dd if=/dev/urandom of="$f" bs=1M count=256 conv=fsync status=none
	cp "$f" "$old"
}

# cat_to_slow_reader: fusedcat of $cf into a reader that takes about 10 MiB/s, through a FIFO so that $catpid is
# fusedcat itself. Output in $out, fusedcat's stderr in $out.err.
cat_to_slow_reader() {
	out=$BATS_TEST_TMPDIR/out
	mkfifo "$out.fifo"
	python3 -c 'import sys, time
src, dst = sys.stdin.buffer, sys.stdout.buffer
while True:
    b = src.read(1 << 20)
    if not b: break
    dst.write(b); time.sleep(0.1)' <"$out.fifo" >"$out" &
	readerpid=$!
	# A simple command, not bed_in_client (a function would run in a subshell): nsenter and the wrapper exec, so
	# $! is fusedcat's own process.
	FUSED_STATE_DIR=$BED_DIR/client-state nsenter --net="/run/netns/$BED_CLI_NS" "$FUSED_BIN/fusedcat" "$cf" >"$out.fifo" 2>"$out.err" &
	catpid=$!
}

# overwrite_freed_blocks: truncate the victim on the server (timed: $ms), then fill the volume with a file whose every
# block carries a marker, so the victim's old blocks now hold another file's bytes.
overwrite_freed_blocks() {
	# Not truncate(1): it opens with O_NONBLOCK, which a lease makes fail at once.
	rc_timed ms bed_in_server timeout 30 sh -c ': >"$1"' sh "$f"
	yes 'FUSED-OTHER-FILE-MARKER' >"$BED_SRV_DIR/other.bin" 2>/dev/null || true
	sync
}

# assert_no_foreign_bytes: the output holds no byte of the other file, and is the start of the old content.
assert_no_foreign_bytes() {
	! LC_ALL=C grep -a -q 'FUSED-OTHER-FILE-MARKER' "$out" || fail "fusedcat delivered bytes of another file"
	local n
	n=$(stat -c %s "$out")
	((n > 0)) || fail "fusedcat delivered nothing"
	cmp -n "$n" "$out" "$old" || fail "fusedcat's output is not the start of the old content"
}

# assert_opener_bounded: the opener on the server waited for the lease, but no longer than T + margin (+ 1.5 s of
# scheduling on this busy machine).
assert_opener_bounded() {
	((ms <= (LEASE + MARGIN) * 1000 + 1500)) || fail "the opener waited ${ms} ms, more than T + margin"
	((ms >= LEASE * 1000)) || fail "the opener got in after ${ms} ms: before the stopped client's lease could have run out"
}

# assert_cat_outcome: fusedcat finished with the old content, or said the file changed (it did: it was truncated).
assert_cat_outcome() {
	local rc=$1
	if ((rc == 1)); then
		assert_regex "$(cat "$out.err")" 'changed while being read'
	else
		assert_equal "$rc" 0
	fi
}

@test "a client stopped past its lease delivers no byte read after it; the opener waits T + margin at most" {
	make_victim
	cat_to_slow_reader
	rc_wait_lease "$f"
	sleep 1
	[[ $(cat "/proc/$catpid/comm") == node ]] || fail "not fusedcat's process: $(cat "/proc/$catpid/comm")"
	kill -STOP "$catpid"
	local t0=$SECONDS rc=0
	overwrite_freed_blocks
	# Stopped for T + 5 s in all.
	while ((SECONDS - t0 < LEASE + 5)); do sleep 0.2; done
	kill -CONT "$catpid"
	wait "$catpid" || rc=$?
	wait "$readerpid"
	assert_opener_bounded
	assert_no_foreign_bytes
	assert_cat_outcome "$rc"
	# The server says whose lease it revoked.
	grep -q 'node cli .*did not return lease' "$BED_DIR/server.log" || fail "the server did not log the node that kept its lease"
}

@test "a client cut off from the server for longer than its lease stops reading the device at its deadline" {
	make_victim
	cat_to_slow_reader
	rc_wait_lease "$f"
	sleep 1
	bed_in_server ip link set "vs-$BED_ID" down
	local t0=$SECONDS rc=0
	overwrite_freed_blocks
	while ((SECONDS - t0 < LEASE + 5)); do sleep 0.2; done
	bed_in_server ip link set "vs-$BED_ID" up
	wait "$catpid" || rc=$?
	wait "$readerpid"
	assert_opener_bounded
	assert_no_foreign_bytes
	assert_cat_outcome "$rc"
	assert_regex "$(cat "$out.err")" 'lease expired'
}

@test "the server announces its lease time in HELLO" {
	run -0 --separate-stderr bed_in_client python3 "$FUSED_LIB/fusedproto.py" "$BED_SERVER" --secret-file "$BED_SECRET" PING
	assert_regex "$stderr" "OK HELLO .*lease=$LEASE([^0-9]|\$)"
}

@test "serve refuses a lease time the kernel's lease-break-time cannot cover" {
	local bt
	bt=$(cat /proc/sys/fs/lease-break-time)
	run -1 --separate-stderr bed_in_server "$FUSED_BIN/fusedctl" serve --listen "$BED_SRV_ADDR:7449" --volume "vol=$BED_SRV_DIR" \
		--secret-file "$BED_SECRET" --lease-time "$bt"
	assert_regex "$stderr" "^fusedctl: --lease-time: /proc/sys/fs/lease-break-time is $bt s, too short .*sysctl fs.lease-break-time="
}

@test "maps of connections that close without RELEASE expire after T + margin: no leases or descriptors pile up" {
	local file=$BED_SRV_DIR/mapclose.bin fds0 fds1 i
	dd if=/dev/urandom of="$file" bs=1M count=4 conv=fsync status=none
	fds0=$(ls "/proc/$BED_SERVER_PID/fd" | wc -l)
	for ((i = 0; i < 40; i++)); do
		bed_in_client python3 "$FUSED_LIB/fusedproto.py" "$BED_SERVER" --secret-file "$BED_SECRET" "MAP vol mapclose.bin" >/dev/null 2>&1 ||
			fail "MAP $i failed"
	done
	# Closed without RELEASE: the maps stay leased until the clients' lease time has surely run out ...
	rc_lease_held "$file" || fail "the maps of closed connections were let go at once"
	# (A read lease whose map is cached stays 2 s more with no map: a lingering lease, see fused-protocol(7).)
	sleep $((LEASE + MARGIN + 1 + 2))
	# ... and then expire, leaving neither leases nor descriptors.
	! rc_lease_held "$file" || fail "the lease outlived T + margin"
	fds1=$(ls "/proc/$BED_SERVER_PID/fd" | wc -l)
	((fds1 <= fds0)) || fail "the server has $fds1 descriptors, $fds0 before"
	rm -f "$file"
}

@test "a verification longer than the lease time keeps its lease by pinging (fusedmap --verify)" {
	local file=$BED_SRV_DIR/verify.bin
	# 384 MiB through the 1 Gbit sshfs mount: several seconds, more than T.
	dd if=/dev/urandom of="$file" bs=1M count=384 conv=fsync status=none
	run -0 --separate-stderr rc_timed ms bed_in_client "$FUSED_BIN/fusedmap" --verify --json "$BED_CLI_DIR/verify.bin"
	run -0 jq -c '.[0].verify | [.ok, .mismatches]' <<<"$output"
	assert_output '[true,0]'
	rm -f "$file"
}
