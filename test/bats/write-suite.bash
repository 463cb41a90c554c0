# The direct write suite (fusedcp onto a fused mount), shared by write-<fs>.bats: each sets FSTYPE (ext4-1k,
# ext4-4k, xfs) and loads this file. The map server lets the client node write (--role cli=rw). Nothing here
# depends on timing, so the lease time is the default (write-safety.bats runs with a short one).
# Tests are registered with bats_test_function rather than @test, since bats preprocesses @test only in a .bats file.

: "${FSTYPE:?write-suite: set FSTYPE before loading}"

load helpers
source "$FUSED_LIB/writecases.bash"

setup_file() { wc_setup_file "$FSTYPE"; }

teardown_file() { bed_teardown_file; }

# assert_device_wrote_at_least SECTORS BEFORE: the client's device ($BED_DEV_B) wrote at least SECTORS sectors
# since its counter said BEFORE.
assert_device_wrote_at_least() {
	local wrote=$(($(bed_sectors_written "$BED_DEV_B") - $2))
	((wrote >= $1)) || fail "the client's device wrote $wrote sectors, expected at least $1"
}

# assert_copied_direct JSON SIZE: one file's fusedcp --json object says copied, written direct, every byte.
assert_copied_direct() {
	assert_equal "$(jq -r .status <<<"$1")" copied
	assert_equal "$(wc_json_write "$1")" "[\"direct\",false,false,$2,0]"
}

# assert_same_everywhere NAME SHA SIZE: the file NAME on the volume has sha256 SHA and size SIZE read on the server
# through its own mount (right away: no sync, no cache drop) and read through the client's mount.
assert_same_everywhere() {
	assert_equal "$(rc_sha "$BED_SRV_DIR/$1")" "$2"
	assert_equal "$(stat -c %s "$BED_SRV_DIR/$1")" "$3"
	assert_equal "$(rc_sha "$BED_CLI_DIR/$1")" "$2"
	assert_equal "$(stat -c %s "$BED_CLI_DIR/$1")" "$3"
}

bats_test_function --description "local -> fused -> local round trip of 0, 1, 511, 4095, 4097 and 1 MiB + 1 bytes, all direct, exact on the server ($FSTYPE)" -- test_write_small_sizes
test_write_small_sizes() {
	local dir=rt-$BATS_TEST_NUMBER sizes=(0 1 511 4095 4097 1048577) srcs=() i size json back
	mkdir "$BED_SRV_DIR/$dir"
	for size in "${sizes[@]}"; do
		wc_src "$size"
		srcs+=("$WC_SRC")
	done
	run -0 --separate-stderr bed_in_client "$FUSED_BIN/fusedcp" --small-file 0 --json "${srcs[@]}" "$BED_CLI_DIR/$dir/"
	assert_equal "$(jq length <<<"$output")" "${#sizes[@]}"
	for i in "${!sizes[@]}"; do
		json=$(jq -c ".[$i]" <<<"$output")
		assert_copied_direct "$json" "${sizes[i]}"
		assert_same_everywhere "$dir/$(basename "${srcs[i]}")" "$(rc_sha "${srcs[i]}")" "${sizes[i]}"
	done
	rc_no_temps "$BED_SRV_DIR/$dir"
	# And back: fused -> local.
	back=$BATS_TEST_TMPDIR/back
	mkdir "$back"
	run -0 --separate-stderr bed_in_client "$FUSED_BIN/fusedcp" --json -r "$BED_CLI_DIR/$dir/." "$back"
	for i in "${!sizes[@]}"; do
		assert_equal "$(rc_sha "$back/$(basename "${srcs[i]}")")" "$(rc_sha "${srcs[i]}")"
	done
	rm -r "$BED_SRV_DIR/$dir"
}

bats_test_function --description "local -> fused -> local round trip of 300 MiB: direct, the client's device wrote it, exact on the server at once ($FSTYPE)" -- test_write_big
test_write_big() {
	local size=$((300 * 1048576)) before sha json
	wc_src "$size"
	sha=$(rc_sha "$WC_SRC")
	before=$(bed_sectors_written "$BED_DEV_B")
	# rchar: the bytes fusedcp read with read(2) and the like (a shell's /proc/PID/io counts its reaped children).
	run -0 --separate-stderr bed_in_client bash -c '"$@"; grep ^rchar: /proc/$$/io >&2' - "$FUSED_BIN/fusedcp" --json "$WC_SRC" "$BED_CLI_DIR/big-write.bin"
	json=$(jq -c '.[0]' <<<"$output")
	assert_copied_direct "$json" "$size"
	# The client's own device says so too, not only fusedcp's counters.
	assert_device_wrote_at_least $((size / 512)) "$before"
	assert_same_everywhere big-write.bin "$sha" "$size"
	# The source went from its page cache to the device (splice), not through fusedcp's memory: it read a few MiB
	# (its own code, the tail), not the file.
	local rchar
	rchar=$(awk '/^rchar:/ { print $2 }' <<<"$stderr")
	((rchar < size / 8)) || fail "fusedcp read $rchar bytes with read(2) for a $size-byte copy: the source was not spliced"
	# The same measure sees every byte of a copy that must hash them (--checksum reads them into the process).
	head -c $((16 * 1048576)) "$WC_SRC" >"$BATS_TEST_TMPDIR/hashed.bin"
	run -0 --separate-stderr bed_in_client bash -c '"$@"; grep ^rchar: /proc/$$/io >&2' - "$FUSED_BIN/fusedcp" --checksum xxh64 --json "$BATS_TEST_TMPDIR/hashed.bin" "$BED_CLI_DIR/hashed.bin"
	assert_copied_direct "$(jq -c '.[0]' <<<"$output")" $((16 * 1048576))
	rchar=$(awk '/^rchar:/ { print $2 }' <<<"$stderr")
	((rchar >= 16 * 1048576)) || fail "a --checksum copy of 16 MiB read only $rchar bytes with read(2)"
	assert_equal "$(rc_sha "$BED_SRV_DIR/hashed.bin")" "$(rc_sha "$BATS_TEST_TMPDIR/hashed.bin")"
	rm "$BED_SRV_DIR/hashed.bin"
	rc_no_temps "$BED_SRV_DIR"
	run -0 --separate-stderr bed_in_client "$FUSED_BIN/fusedcp" --json "$BED_CLI_DIR/big-write.bin" "$BATS_TEST_TMPDIR/back.bin"
	assert_equal "$(jq -c '.[0] | [.status, .path]' <<<"$output")" '["copied","direct"]'
	assert_equal "$(rc_sha "$BATS_TEST_TMPDIR/back.bin")" "$sha"
	rm "$BED_SRV_DIR/big-write.bin"
}

bats_test_function --description "fused -> fused: a file on the mount copied to another name on it reads and writes direct ($FSTYPE)" -- test_write_fused_to_fused
test_write_fused_to_fused() {
	local size=$((3 * 1048576 + 5)) sha before
	head -c "$size" /dev/urandom >"$BED_SRV_DIR/ff-src.bin"
	sync
	sha=$(rc_sha "$BED_SRV_DIR/ff-src.bin")
	before=$(bed_sectors_written "$BED_DEV_B")
	run -0 --separate-stderr bed_in_client "$FUSED_BIN/fusedcp" --json "$BED_CLI_DIR/ff-src.bin" "$BED_CLI_DIR/ff-dst.bin"
	json=$(jq -c '.[0]' <<<"$output")
	assert_equal "$(jq -c '[.path, .bytesDirect, .bytesNetwork]' <<<"$json")" "[\"direct\",$size,0]"
	assert_copied_direct "$json" "$size"
	assert_device_wrote_at_least $((size / 512)) "$before"
	assert_same_everywhere ff-dst.bin "$sha" "$size"
	assert_equal "$stderr" ''
	rc_no_temps "$BED_SRV_DIR"
	rm "$BED_SRV_DIR"/ff-{src,dst}.bin
}

bats_test_function --description "a file the server and the client had cached reads fresh after a direct copy over it ($FSTYPE)" -- test_write_cache_fresh
test_write_cache_fresh() {
	local size=$((8 * 1048576)) a b shb
	wc_src "$size" A; a=$WC_SRC
	wc_src "$size" B; b=$WC_SRC
	shb=$(rc_sha "$b")
	run -0 --separate-stderr bed_in_client "$FUSED_BIN/fusedcp" --json "$a" "$BED_CLI_DIR/cached.bin"
	assert_copied_direct "$(jq -c '.[0]' <<<"$output")" "$size"
	# Read it on the server and through the client's mount: both caches now hold A.
	assert_equal "$(rc_sha "$BED_SRV_DIR/cached.bin")" "$(rc_sha "$a")"
	assert_equal "$(rc_sha "$BED_CLI_DIR/cached.bin")" "$(rc_sha "$a")"
	# Same size, so no size check can tell the versions apart.
	run -0 --separate-stderr bed_in_client "$FUSED_BIN/fusedcp" --json "$b" "$BED_CLI_DIR/cached.bin"
	assert_copied_direct "$(jq -c '.[0]' <<<"$output")" "$size"
	assert_equal "$(rc_sha "$BED_SRV_DIR/cached.bin")" "$shb"
	assert_equal "$(rc_sha "$BED_CLI_DIR/cached.bin")" "$shb"
	run -0 --separate-stderr rc_cat_sha "$BED_CLI_DIR/cached.bin"
	assert_equal "$output" "$shb"
	rm "$BED_SRV_DIR/cached.bin"
}

bats_test_function --description "two copies to the same destination at once: both complete, the result is one whole source, never a mix ($FSTYPE)" -- test_write_two_at_once
test_write_two_at_once() {
	local size=$((64 * 1048576)) a b sha p1 p2 rc1=0 rc2=0 d=$BATS_TEST_TMPDIR
	wc_src "$size" A; a=$WC_SRC
	wc_src "$size" B; b=$WC_SRC
	wc_spawn_client "$d/1.out" "$d/1.err" "$FUSED_BIN/fusedcp" --json "$a" "$BED_CLI_DIR/both.bin"; p1=$WC_PID
	wc_spawn_client "$d/2.out" "$d/2.err" "$FUSED_BIN/fusedcp" --json "$b" "$BED_CLI_DIR/both.bin"; p2=$WC_PID
	wc_wait_exit "$p1" || rc1=$?
	wc_wait_exit "$p2" || rc2=$?
	assert_equal "$rc1 $rc2" '0 0'
	# Each wrote a complete file of its own (under its temporary name) and renamed it: both direct.
	assert_equal "$(jq -c '[.[0].status, .[0].write.path, .[0].write.bytesDirect + .[0].write.bytesNetwork]' "$d/1.out")" "[\"copied\",\"direct\",$size]"
	assert_equal "$(jq -c '[.[0].status, .[0].write.path, .[0].write.bytesDirect + .[0].write.bytesNetwork]' "$d/2.out")" "[\"copied\",\"direct\",$size]"
	sha=$(rc_sha "$BED_SRV_DIR/both.bin")
	[[ $sha == "$(rc_sha "$a")" || $sha == "$(rc_sha "$b")" ]] || fail "both.bin is neither source: a mix"
	assert_equal "$(rc_sha "$BED_CLI_DIR/both.bin")" "$sha"
	assert_equal "$(stat -c %s "$BED_SRV_DIR/both.bin")" "$size"
	rc_no_temps "$BED_SRV_DIR"
	rm "$BED_SRV_DIR/both.bin"
}

bats_test_function --description "--inplace over an existing file of the same size: same inode, its hard link and mode show it, written direct, exact everywhere ($FSTYPE)" -- test_inplace_same_size
test_inplace_same_size() {
	local size=$((8 * 1048576 + 5)) sha before
	WC_INO=$(wc_server_file ip-same.bin "$size")
	ln "$BED_SRV_DIR/ip-same.bin" "$BED_SRV_DIR/ip-same.link"
	chmod 640 "$BED_SRV_DIR/ip-same.bin"
	wc_src "$size" IP
	sha=$(rc_sha "$WC_SRC")
	before=$(bed_sectors_written "$BED_DEV_B")
	wc_inplace "$WC_SRC" ip-same.bin
	assert_copied_direct "$(jq -c '.[0]' <<<"$output")" "$size"
	assert_device_wrote_at_least $((size / 512)) "$before"
	assert_same_everywhere ip-same.bin "$sha" "$size"
	# The same inode: its other name shows the new bytes, and it keeps its mode (cp keeps an existing file's).
	assert_equal "$(rc_sha "$BED_SRV_DIR/ip-same.link")" "$sha"
	assert_equal "$(stat -c '%h %a' "$BED_SRV_DIR/ip-same.bin")" '2 640'
	assert_equal "$stderr" ''
	rc_no_temps "$BED_SRV_DIR"
	rm "$BED_SRV_DIR"/ip-same.{bin,link}
}

bats_test_function --description "--inplace with a smaller, then a bigger source: the same inode cut and grown to the exact size and sha256, direct ($FSTYPE)" -- test_inplace_resize
test_inplace_resize() {
	local small=$((1048576 + 7)) big=$((6 * 1048576 + 11))
	WC_INO=$(wc_server_file ip-resize.bin $((4 * 1048576 + 3)))
	wc_src "$small" IP
	wc_inplace "$WC_SRC" ip-resize.bin
	assert_copied_direct "$(jq -c '.[0]' <<<"$output")" "$small"
	assert_same_everywhere ip-resize.bin "$(rc_sha "$WC_SRC")" "$small"
	wc_src "$big" IP
	wc_inplace "$WC_SRC" ip-resize.bin
	assert_copied_direct "$(jq -c '.[0]' <<<"$output")" "$big"
	assert_same_everywhere ip-resize.bin "$(rc_sha "$WC_SRC")" "$big"
	rc_no_temps "$BED_SRV_DIR"
	rm "$BED_SRV_DIR/ip-resize.bin"
}
