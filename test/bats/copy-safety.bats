#!/usr/bin/env bats
# What fusedcp and fusedcat promise beyond the bytes (ext4-4k, two-node bed): a copy reaches the disk before it
# gets its name, an interrupted copy leaves nothing, -p reports what it could not keep, and a stalled reader of
# fusedcat's output never holds up a writer on the server.

load helpers
source "$FUSED_LIB/readcases.bash"

setup_file() {
	bed_setup_file ext4-4k 2G
	fuse_client >"$BED_DIR/fuse.out"
	rc_make big
}

teardown_file() { bed_teardown_file; }

@test "fusedcp fsyncs each copy before renaming it into place" {
	local log=$BATS_TEST_TMPDIR/strace dst=$BATS_TEST_TMPDIR/out
	mkdir "$dst"
	# -y names each fd's file, so the temporary file's fsync can be told from any other.
	run -0 bed_in_client strace -f -qq -y -o "$log" -e trace=fsync,fdatasync,rename,renameat,renameat2 \
		"$FUSED_BIN/fusedcp" "$BED_CLI_DIR/big.bin" "$dst/"
	assert_equal "$(rc_sha "$dst/big.bin")" "$(rc_sha "$BED_SRV_DIR/big.bin")"
	local synced renamed
	synced=$(grep -n -E 'f(data)?sync\([0-9]+<[^>]*/\.big\.bin\.fused-[0-9a-f]{8}>' "$log" | head -1 | cut -d: -f1)
	renamed=$(grep -n -E 'rename(at2?)?\(.*\.big\.bin\.fused-[0-9a-f]{8}".*big\.bin"' "$log" | head -1 | cut -d: -f1)
	[[ -n $renamed ]] || fail "no rename of the temporary file in the trace: $(cat "$log")"
	[[ -n $synced ]] || fail "the temporary file was never fsynced: $(cat "$log")"
	((synced < renamed)) || fail "fsync (line $synced) came after the rename (line $renamed): $(cat "$log")"
	rc_no_temps "$dst"
}

# interrupt_copy SIGNAL STATUS: a 256 MiB copy onto the client's network mount (seconds over the 1 Gbit/s link),
# SIGNAL sent once its temporary file holds bytes; fusedcp must exit STATUS and leave no temporary and no
# final file.
interrupt_copy() {
	local sig=$1 want=$2 name=sig-$1.bin pid rc=0 tries=400
	make_file "$name"
	local srvdst=$BED_SRV_DIR/dst-$sig
	mkdir -p "$srvdst"
	# exec chain (nsenter, the sh wrapper, node): $! is fusedcp itself.
	FUSED_STATE_DIR=$BED_DIR/client-state nsenter --net="/run/netns/$BED_CLI_NS" \
		"$FUSED_BIN/fusedcp" "$cf" "$BED_CLI_DIR/dst-$sig/" 2>"$BATS_TEST_TMPDIR/err" &
	pid=$!
	until [[ -n $(find "$srvdst" -name ".$name.fused-*" -size +1M 2>/dev/null) ]]; do
		((tries-- > 0)) && kill -0 "$pid" 2>/dev/null || break
		sleep 0.05
	done
	[[ -n $(find "$srvdst" -name ".$name.fused-*" -size +1M) ]] || { kill -KILL "$pid" 2>/dev/null; fail "the copy never got under way (or finished too soon)"; }
	kill -"$sig" "$pid"
	wait "$pid" || rc=$?
	assert_equal "$rc" "$want"
	rc_no_temps "$srvdst"
	assert [ ! -e "$srvdst/$name" ]
	rm -r "$f" "$srvdst"
}

@test "SIGINT mid-copy: fusedcp removes its temporary file, leaves no destination, exits 130" {
	interrupt_copy INT 130
}

@test "SIGTERM mid-copy: fusedcp removes its temporary file, leaves no destination, exits 143" {
	interrupt_copy TERM 143
}

@test "fusedcp -p reports ownership it cannot keep, like cp, and keeps the copy (exit 1)" {
	# A second sshfs mount of a server directory as the unprivileged user nobody: the server refuses a chown
	# to anyone else for real. sshd reads authorized_keys as the user, so nobody needs a path to it.
	local srv=$BED_SRV_DIR/nobody mnt=$BED_DIR/nobody-volume src=$BATS_TEST_TMPDIR/owned.bin
	mkdir -p "$srv" "$mnt"
	chown nobody: "$srv"
	chmod o+x "$BED_DIR" "$BED_DIR/ssh"
	chmod o+r "$BED_DIR/ssh/authorized_keys"
	bed_in_client sshfs -o "IdentityFile=$BED_DIR/ssh/client_key,StrictHostKeyChecking=no,UserKnownHostsFile=/dev/null,LogLevel=ERROR" \
		"nobody@$BED_SRV_ADDR:$srv" "$mnt"
	bed_record fuse "$mnt"
	head -c $((1 << 20)) /dev/urandom >"$src"
	chown 1234:1234 "$src"
	chmod 640 "$src"
	touch -d '@1600000000' "$src"
	run -1 --separate-stderr bed_in_client "$FUSED_BIN/fusedcp" -p "$src" "$mnt/"
	assert_equal "$stderr" "fusedcp: $mnt/owned.bin: cannot preserve ownership: permission denied"
	# The copy is kept, complete, with the mode and times that could be kept.
	assert_equal "$(rc_sha "$srv/owned.bin")" "$(rc_sha "$src")"
	assert_equal "$(stat -c '%U %a %Y' "$srv/owned.bin")" 'nobody 640 1600000000'
	rc_no_temps "$srv"
	run -1 --separate-stderr bed_in_client "$FUSED_BIN/fusedcp" -p --json "$src" "$mnt/again.bin"
	run -0 jq -r '.[0] | [.status, .error] | @tsv' <<<"$output"
	assert_output "$(printf 'failed\t%s' "$mnt/again.bin: cannot preserve ownership: permission denied")"
	assert_equal "$(rc_sha "$srv/again.bin")" "$(rc_sha "$src")"
}

# stalled_reader [tty]: fusedcat of a 256 MiB fused file into a reader that takes nothing for 12 s (straight into
# a pipe, or with "tty" through a terminal: script(1) in raw mode, so the bytes pass unchanged); meanwhile the
# file is opened for writing on the server. The opener must get through in well under T + margin (what the server
# waits for a client that does not RETURN), and fusedcat's output must be the old content, or fusedcat must say it changed.
stalled_reader() {
	local out=$BATS_TEST_TMPDIR/cat ms rc
	make_file "stall-${1:-pipe}.bin"
	local -a cmd=("$FUSED_BIN/fusedcat" "$cf")
	[[ ${1:-} == tty ]] && cmd=(script -qec "stty raw -echo; exec $FUSED_BIN/fusedcat $cf 2>$out.err" /dev/null)
	(
		bed_in_client "${cmd[@]}" 2>>"$out.err" </dev/null | (sleep 12 && rc_sha >"$out.sha")
		echo "${PIPESTATUS[0]}" >"$out.rc"
	) &
	local bg=$!
	rc_wait_lease "$f"
	# Let fusedcat fill what lies between it and the reader, so it is held up mid-file with the lease.
	sleep 2
	rc_timed ms bed_in_server timeout 20 sh -c 'exec 3>>"$1"' sh "$f"
	wait "$bg"
	((ms < 4000)) || fail "the opener on the server waited ${ms} ms while fusedcat's reader was stalled"
	rc=$(cat "$out.rc")
	if [[ $rc == 1 ]]; then
		assert_regex "$(cat "$out.err")" 'changed while being read'
	else
		assert_equal "$rc" 0
		assert_equal "$(cat "$out.sha")" "$old"
	fi
	rm "$f"
}

@test "fusedcat into a pipe whose reader stalls for 12 s: an opener for writing on the server gets through at once" {
	stalled_reader pipe
}

@test "fusedcat onto a terminal whose reader stalls for 12 s: an opener for writing on the server gets through at once" {
	stalled_reader tty
}
