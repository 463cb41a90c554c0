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

# The volume is small: each test leaves it empty. A test that failed midway may have left the link down or
# fusedcat stopped: both are undone first (a mount over a dead link would hang the teardown).
teardown() {
	bed_in_server ip link set "vs-$BED_ID" up 2>/dev/null || true
	[[ -z ${catpid:-} ]] || kill -CONT "$catpid" 2>/dev/null || true
	rm -f "$BED_SRV_DIR/other.bin" "$BED_SRV_DIR/victim.bin"
}

teardown_file() { bed_teardown_file; }

# make_victim: 256 MiB of random bytes on the server; $f (server path), $cf (client path), $old (a copy).
make_victim() {
	f=$BED_SRV_DIR/victim.bin
	cf=$BED_CLI_DIR/victim.bin
	old=$BATS_TEST_TMPDIR/old.bin
	rm -f "$BED_SRV_DIR/other.bin"
	dd if=/dev/urandom of="$f" bs=1M count=256 conv=fsync status=none
	cp "$f" "$old"
	# The device block that holds the middle of the victim (block 32768 of 4 KiB), which a reader stopped early
	# has not reached yet: filefrag's lines are "N: LSTART.. LEND: PSTART.. PEND: LEN:".
	mid=$(filefrag -v -b4096 "$f" | awk -v want=$((128 * 256)) '$1 ~ /^[0-9]+:$/ {
		l1 = $2; l2 = $3; p1 = $4; sub(/\.\..*/, "", l1); sub(/:.*/, "", l2); sub(/\.\..*/, "", p1)
		if (want >= l1 + 0 && want <= l2 + 0) print p1 + (want - l1) }')
	[[ -n $mid ]] || fail "no block found for the victim's middle: $(filefrag -v -b4096 "$f")"
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
# block carries a marker, so the victim's old blocks now hold another file's bytes (checked on the device at the
# block that held the middle of the victim, which the stopped reader had not reached).
overwrite_freed_blocks() {
	# Not truncate(1): it opens with O_NONBLOCK, which a lease makes fail at once.
	rc_timed ms bed_in_server timeout 30 sh -c ': >"$1"' sh "$f"
	yes 'FUSED-OTHER-FILE-MARKER' >"$BED_SRV_DIR/other.bin" 2>/dev/null || true
	sync
	dd if="$BED_DEV_A" bs=4096 skip="$mid" count=1 iflag=direct status=none | LC_ALL=C grep -a -q 'FUSED-OTHER-FILE-MARKER' ||
		fail "the victim's freed block $mid does not hold the other file: the test proves nothing"
}

# assert_no_foreign_bytes: the output holds no byte of the other file, and is the start of the old content.
assert_no_foreign_bytes() {
	! LC_ALL=C grep -a -q 'FUSED-OTHER-FILE-MARKER' "$out" || fail "fusedcat delivered bytes of another file"
	local n
	n=$(stat -c %s "$out")
	((n > 0)) || fail "fusedcat delivered nothing"
	cmp -n "$n" "$out" "$old" || fail "fusedcat's output is not the start of the old content"
}

# assert_opener_bounded: the opener on the server waited T + margin after the recall, never less (the stopped
# client's lease had surely run out), and no longer (+ 0.8 s for starting the opener and scheduling; a fixed 5 s
# wait, T + margin + 1 s, would fail).
assert_opener_bounded() {
	((ms <= (LEASE + MARGIN) * 1000 + 800)) || fail "the opener waited ${ms} ms, more than T + margin"
	((ms >= (LEASE + MARGIN) * 1000)) || fail "the opener got in after ${ms} ms: before the stopped client's lease had surely run out"
}

# assert_cat_outcome: fusedcat said the file changed (it did: it was truncated) and exited 1, or it delivered the whole
# old content and exited 0 — never a silently short output.
assert_cat_outcome() {
	local rc=$1
	if ((rc == 1)); then
		assert_regex "$(cat "$out.err")" 'changed while being read'
	else
		assert_equal "$rc" 0
		cmp "$out" "$old" || fail "fusedcat exited 0 with output that is not the whole old content"
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
	local file=$BED_SRV_DIR/mapclose.bin frag=$BED_SRV_DIR/mapgone.bin fds0 fds1 i
	dd if=/dev/urandom of="$file" bs=1M count=4 conv=fsync status=none
	# 2,000 separate blocks: FIEMAP takes long enough that a client closing right after its MAP line is gone
	# before the map is granted (the race a server must not leak a lease or a descriptor in).
	python3 -c "
import os
fd = os.open('$frag', os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
blk = os.urandom(4096)
for i in range(2000): os.pwrite(fd, blk, i * 8192)
os.fsync(fd); os.close(fd)"
	fds0=$(ls "/proc/$BED_SERVER_PID/fd" | wc -l)
	for ((i = 0; i < 40; i++)); do
		bed_in_client python3 "$FUSED_LIB/fusedproto.py" "$BED_SERVER" --secret-file "$BED_SECRET" "MAP vol mapclose.bin" >/dev/null 2>&1 ||
			fail "MAP $i failed"
	done
	# 200 connections that send MAP and close at once, without reading the reply.
	bed_in_client python3 "$FUSED_LIB/fusedproto.py" "$BED_SERVER" --secret-file "$BED_SECRET" --repeat 200 --no-wait "MAP vol mapgone.bin" >/dev/null 2>&1 ||
		fail "MAP-then-close failed"
	# Closed without RELEASE: the maps stay leased until the clients' lease time has surely run out ...
	rc_lease_held "$file" || fail "the maps of closed connections were let go at once"
	# (A read lease whose map is cached stays 2 s more with no map: a lingering lease, see fused-protocol(7).)
	sleep $((LEASE + MARGIN + 1 + 2))
	# ... and then expire, leaving neither leases nor descriptors, whether the map was answered or not.
	! rc_lease_held "$file" || fail "the lease outlived T + margin"
	! rc_lease_held "$frag" || fail "a map answered after its client left is still leased"
	fds1=$(ls "/proc/$BED_SERVER_PID/fd" | wc -l)
	((fds1 <= fds0)) || fail "the server has $fds1 descriptors, $fds0 before"
	# The server still answers.
	run -0 --separate-stderr bed_in_client python3 "$FUSED_LIB/fusedproto.py" "$BED_SERVER" --secret-file "$BED_SECRET" "MAP vol mapgone.bin"
	assert_line --index 0 --regexp '^OK MAP '
	rm -f "$file" "$frag"
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

@test "a direct read whose reader stalls longer than the lease time keeps its lease by pinging and stays direct" {
	local file=$BED_SRV_DIR/longread.bin out=$BATS_TEST_TMPDIR/out.sha err=$BATS_TEST_TMPDIR/cat.err before
	dd if=/dev/urandom of="$file" bs=1M count=96 conv=fsync status=none
	before=$(bed_sectors_read "$BED_DEV_B")
	# The reader takes nothing for 6 s (twice the lease time): fusedcat fills the pipe and its window, then only
	# its pings renew the lease; what it reads after the stall must still come from the device.
	bed_in_client "$FUSED_BIN/fusedcat" -v "$BED_CLI_DIR/longread.bin" 2>"$err" | { sleep $((2 * LEASE)); sha256sum; } >"$out"
	assert_equal "$(cat "$out")" "$(sha256sum <"$file")"
	run -0 cat "$err"
	# Direct all through (not mixed, not network); -v may add what the first grants' round trips cost
	# ("; throttle so far: ...", once they reach 10 ms).
	assert_output --regexp ': direct($|; throttle so far: )'
	local read=$(($(bed_sectors_read "$BED_DEV_B") - before))
	((read >= 96 * 2048)) || fail "the client's device read $read sectors, less than the file's $((96 * 2048))"
	rm -f "$file"
}
