#!/usr/bin/env bats
# Raw protocol refusals: each bad request gets the documented ERR code and the connection stays usable.

load helpers

setup_file() {
	bed_setup_file ext4-4k 1G
	local d=$BED_SRV_DIR
	head -c 8192 /dev/urandom >"$d/good.bin"
	mkdir "$d/dir"
	mknod "$d/nullnode" c 1 3
	ln -s /etc/passwd "$d/escape"
	ln -s /etc "$d/escapedir"
	sync
}

teardown_file() { bed_teardown_file; }

# proto REQUEST...: authenticated session from the client node; prints the replies.
proto() { bed_in_client python3 "$FUSED_LIB/fusedproto.py" "$BED_SERVER" --secret-file "$BED_SECRET" "$@"; }

# The valid request sent after each refusal, and its exact reply shape.
assert_map_good_follows() {
	assert_line --index 1 --regexp '^OK MAP( [a-z][a-z0-9_]*=[^ ]*)+$'
	assert_line --index 1 --partial ' size=8192'
	assert_line --index 1 --partial ' extents=1'
	assert_line --index 2 --regexp '^X 0 [1-9][0-9]* 8192 DATA 0x[0-9a-f]+$'
	assert_line --index 3 'END'
	assert_line --index 4 'OK PONG'
}

@test "a wrong secret gets ERR AUTHFAIL and the connection is closed; the right one works" {
	run -0 --separate-stderr bed_in_client python3 "$FUSED_LIB/fusedproto.py" "$BED_SERVER" --secret wrong-secret-0123456789 PING
	assert_line --index 0 --regexp '^ERR AUTHFAIL '
	# The server may push "! BYE ..." before it closes; nothing else may come, least of all the PING reply.
	assert_equal "${lines[-1]}" 'CLOSED'
	refute_line 'OK PONG'
	run -1 grep -v -e '^! ' -e '^ERR AUTHFAIL ' -e '^CLOSED$' <<<"$output"
	run -0 --separate-stderr proto PING
	assert_output 'OK PONG'
}

@test "MAP with a .. component gets ERR BADPATH and the connection stays usable" {
	run -0 --separate-stderr proto 'MAP vol ../good.bin' 'MAP vol good.bin' PING
	assert_line --index 0 --regexp '^ERR BADPATH '
	assert_map_good_follows
}

@test "MAP with an absolute path gets ERR BADPATH and the connection stays usable" {
	run -0 --separate-stderr proto 'MAP vol /etc/passwd' 'MAP vol good.bin' PING
	assert_line --index 0 --regexp '^ERR BADPATH '
	assert_map_good_follows
}

@test "MAP through a symlink out of the volume gets ERR BADPATH or ACCESS" {
	run -0 --separate-stderr proto 'MAP vol escape' 'MAP vol good.bin' PING
	assert_line --index 0 --regexp '^ERR (BADPATH|ACCESS) '
	assert_map_good_follows
	run -0 --separate-stderr proto 'MAP vol escapedir/passwd' 'MAP vol good.bin' PING
	assert_line --index 0 --regexp '^ERR (BADPATH|ACCESS) '
	assert_map_good_follows
}

@test "MAP of a directory gets ERR NOTREG" {
	run -0 --separate-stderr proto 'MAP vol dir' 'MAP vol good.bin' PING
	assert_line --index 0 --regexp '^ERR NOTREG '
	assert_map_good_follows
}

@test "MAP of a device node gets ERR NOTREG" {
	run -0 --separate-stderr proto 'MAP vol nullnode' 'MAP vol good.bin' PING
	assert_line --index 0 --regexp '^ERR NOTREG '
	assert_map_good_follows
}

@test "a 100 KB line gets ERR TOOLONG and the next line is read normally" {
	local long
	long="MAP vol $(head -c 102400 /dev/zero | tr '\0' a)"
	run -0 --separate-stderr proto "$long" 'MAP vol good.bin' PING
	assert_line --index 0 --regexp '^ERR TOOLONG '
	assert_map_good_follows
}

@test "a line with a NUL byte gets ERR BADLINE and the connection stays usable" {
	run -0 --separate-stderr proto 'MAP vol good\x00.bin' 'MAP vol good.bin' PING
	assert_line --index 0 --regexp '^ERR BADLINE '
	assert_map_good_follows
}

@test "MAP of a missing file gets ERR NOENT and an unknown volume ERR NOVOLUME" {
	run -0 --separate-stderr proto 'MAP vol missing.bin' 'MAP nosuchvol good.bin' 'MAP vol good.bin' PING
	assert_line --index 0 --regexp '^ERR NOENT '
	assert_line --index 1 --regexp '^ERR NOVOLUME '
	assert_line --index 2 --regexp '^OK MAP '
	assert_line --index 5 'OK PONG'
}

@test "MAP of a file on another file system mounted inside the volume gets ERR BADPATH" {
	mkdir -p "$BED_SRV_DIR/nested"
	mount -t tmpfs -o size=1m fused-nested "$BED_SRV_DIR/nested"
	bed_record mount "$BED_SRV_DIR/nested"
	echo data >"$BED_SRV_DIR/nested/f"
	run -0 --separate-stderr proto "MAP vol nested/f" "MAP vol good.bin" PING
	assert_line --index 0 --regexp '^ERR BADPATH '
	assert_map_good_follows
	umount "$BED_SRV_DIR/nested"
}

@test "PROBE is limited per connection (ERR LIMIT) and the probe files go with the connection" {
	run -0 --separate-stderr proto "PROBE vol" "PROBE vol" "PROBE vol" "PROBE vol" "PROBE vol" PING
	local i
	for i in 0 1 2 3; do assert_line --index "$i" --regexp '^OK PROBE name=\.fused-probe-[0-9a-f]{16} token=[0-9a-f]{32}$'; done
	assert_line --index 4 --regexp '^ERR LIMIT '
	assert_line --index 5 'OK PONG'
	sleep 0.5
	run -0 bash -c 'ls -A "$0" | grep -c "^\.fused-probe-" || true' "$BED_SRV_DIR"
	assert_output 0
}
