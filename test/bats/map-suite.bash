# The fusedmap suite, shared by map-<fs>.bats: each sets FSTYPE (ext4-1k, ext4-4k, xfs) and loads this file.
# Tests are registered with bats_test_function rather than @test, since bats preprocesses @test only in a .bats file.

: "${FSTYPE:?map-suite: set FSTYPE before loading}"

load helpers

# The server keeps no reserve or pool here (--reserve 0): filled in the background while the cases' files are
# written, it would interleave with them (a "contiguous" file came out in two extents on ext4-1k), and these tests
# are about mapping what is there, not about allocation.
setup_file() {
	bed_setup_file "$FSTYPE" 6G --no-server && bed_start_server --reserve 0 || return 1
	fuse_client >"$BED_DIR/fuse.out"
}

teardown_file() { bed_teardown_file; }

# map_json CASE: make the case's file, map it through the client's fused mount into $map (a JSON file),
# and check the map against the reference from the server's side.
map_json() {
	mapcase_make "$1"
	map=$BATS_TEST_TMPDIR/map.json
	run -0 --separate-stderr bed_in_client "$FUSED_BIN/fusedmap" --json "$BED_CLI_DIR/$MAPCASE_FILE"
	printf '%s\n' "$output" >"$map"
	run -0 python3 "$FUSED_LIB/extents.py" compare "$map" "$BED_SRV_DIR/$MAPCASE_FILE"
}

states() { jq -c '[.[0].extents[].state]' "$map"; }

# device_sha INDEX: sha256 of extent INDEX's bytes read from the client's own device.
device_sha() {
	local phys len
	read -r phys len < <(jq -r ".[0].extents[$1] | \"\\(.physical) \\(.length)\"" "$map")
	blockdev --flushbufs "$BED_DEV_B"
	dd if="$BED_DEV_B" iflag=skip_bytes,count_bytes skip="$phys" count="$len" bs=1M status=none | sha256sum | cut -d' ' -f1
}

# file_sha OFFSET LENGTH: sha256 of the file's bytes as the server's mount shows them.
file_sha() {
	dd if="$BED_SRV_DIR/$MAPCASE_FILE" iflag=skip_bytes,count_bytes skip="$1" count="$2" bs=1M status=none | sha256sum | cut -d' ' -f1
}

bats_test_function --description "fusedmap equals the reference map of a contiguous 8 MiB file ($FSTYPE)" -- test_map_contiguous
test_map_contiguous() {
	map_json contiguous
	assert_equal "$(states)" '["DATA"]'
	assert_equal "$(device_sha 0)" "$(file_sha 0 8388608)"
}

bats_test_function --description "fusedmap equals the reference map of a fragmented file ($FSTYPE)" -- test_map_fragmented
test_map_fragmented() {
	map_json fragmented
	run -0 jq '[.[0].extents[] | select(.state == "DATA")] | length' "$map"
	((output >= 2)) || fail "expected at least 2 DATA extents, got $output"
	local i n
	n=$(jq '.[0].extents | length' "$map")
	for ((i = 0; i < n; i++)); do
		assert_equal "$(device_sha "$i")" "$(file_sha "$(jq ".[0].extents[$i].logical" "$map")" "$(jq ".[0].extents[$i].length" "$map")")"
	done
}

bats_test_function --description "fusedmap shows the holes of a sparse file as HOLE extents ($FSTYPE)" -- test_map_sparse
test_map_sparse() {
	map_json sparse
	assert_equal "$(states)" '["HOLE","DATA","HOLE","DATA","HOLE"]'
	run -0 jq -c '[.[0].extents[] | select(.state == "HOLE") | .physical]' "$map"
	assert_output '[null,null,null]'
	run -0 jq -c '[.[0].size, .[0].extents[-1].logical + .[0].extents[-1].length]' "$map"
	assert_output '[10485860,10485860]'
}

bats_test_function --description "fusedmap shows a preallocated range as ZERO ($FSTYPE)" -- test_map_prealloc
test_map_prealloc() {
	map_json prealloc
	assert_equal "$(states)" '["DATA","ZERO","DATA"]'
	run -0 jq -c '[.[0].extents[1].logical, .[0].extents[1].length]' "$map"
	assert_output '[1048576,2097152]'
}

bats_test_function --description "fusedmap maps data past 4 GiB in the file and on the device ($FSTYPE)" -- test_map_beyond4g
test_map_beyond4g() {
	map_json beyond4g
	assert_equal "$(states)" '["HOLE","DATA"]'
	run -0 jq -c '.[0].extents[1] | [.logical, .length, .physical > 4294967296]' "$map"
	assert_output '[4831838208,1049353,true]'
	assert_equal "$(device_sha 1)" "$(file_sha 4831838208 1049353)"
}

bats_test_function --description "fusedmap maps an empty file as no extents ($FSTYPE)" -- test_map_empty
test_map_empty() {
	map_json empty
	run -0 jq -c '[.[0].size, .[0].extents]' "$map"
	assert_output '[0,[]]'
}

bats_test_function --description "fusedmap maps a file named with a space, a newline and a non-UTF-8 byte ($FSTYPE)" -- test_map_oddname
test_map_oddname() {
	map_json oddname
	assert_equal "$(states)" '["DATA"]'
	assert_equal "$(device_sha 0)" "$(file_sha 0 300000)"
}

bats_test_function --description "fusedmap --verify passes on every mapped file ($FSTYPE)" -- test_map_verify
test_map_verify() {
	local c files=()
	for c in contiguous fragmented sparse prealloc beyond4g empty oddname; do
		mapcase_make "$c"
		files+=("$BED_CLI_DIR/$MAPCASE_FILE")
	done
	run -0 --separate-stderr bed_in_client "$FUSED_BIN/fusedmap" --verify --json "${files[@]}"
	run -0 jq -c '[length, ([.[] | .verify.ok] | all), ([.[] | .verify.mismatches] | add)]' <<<"$output"
	assert_output '[7,true,0]'
}

bats_test_function --description "fusedmap prints the extent table in bytes, and in blocks with -b ($FSTYPE)" -- test_map_table
test_map_table() {
	map_json sparse
	local bs
	bs=$(jq '.[0].blockSize' "$map")
	assert_equal "$bs" "$BED_BLOCK_SIZE"
	run -0 --separate-stderr bed_in_client "$FUSED_BIN/fusedmap" --noheadings "$BED_CLI_DIR/$MAPCASE_FILE"
	assert_equal "$(awk '{print $1, $2, ($5 == "HOLE" ? "-" : $3), $4, $5}' <<<"$output")" \
		"$(jq -r '.[0].extents[] | "\(.index) \(.logical) \(if .state == "HOLE" then "-" else .physical end) \(.length) \(.state)"' "$map")"
	run -0 --separate-stderr bed_in_client "$FUSED_BIN/fusedmap" -b --noheadings "$BED_CLI_DIR/$MAPCASE_FILE"
	# Blocks: the last, partial block counts as one.
	assert_equal "$(awk '{print $1, $2, ($5 == "HOLE" ? "-" : $3), $4, $5}' <<<"$output")" \
		"$(jq -r --argjson bs "$bs" '.[0].extents[] | "\(.index) \(.logical / $bs) \(if .state == "HOLE" then "-" else .physical / $bs end) \((.length + $bs - 1) / $bs | floor) \(.state)"' "$map")"
}
