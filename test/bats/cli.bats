#!/usr/bin/env bats
# Command-line behaviour shared by every command: help, misuse, exit codes, pipes, progress only on a terminal.

load helpers

setup_file() {
	bed_setup_file ext4-4k 1G
	head -c $((64 << 20)) /dev/urandom >"$BED_SRV_DIR/clip.bin"
	sync
	fuse_client >/dev/null
}

teardown_file() { bed_teardown_file; }

# cat_to FILE ARGS...: fusedcat in the client node, its output into FILE (binary-safe, unlike $output).
cat_to() {
	local out=$1
	shift
	bed_in_client "$FUSED_BIN/fusedcat" "$@" >"$out"
}

@test "--help prints usage on stdout and exits 0, for every command" {
	local c
	for c in fusedctl fusedmap fusedcat fusedcp; do
		run -0 --separate-stderr "$FUSED_BIN/$c" --help
		assert_line --index 0 --regexp "^Usage: $c "
		assert_equal "$stderr" ''
		assert_output --partial 'Exit status'
	done
	run -0 --separate-stderr "$FUSED_BIN/fusedctl" help fuse
	assert_line --index 0 --regexp '^Usage: fusedctl fuse '
}

@test "misuse is one line naming the problem plus a hint, exit 2, nothing on stdout" {
	run -2 --separate-stderr "$FUSED_BIN/fusedmap" --bogus x
	assert_equal "$output" ''
	assert_equal "${#stderr_lines[@]}" 2
	assert_equal "${stderr_lines[0]}" "fusedmap: unknown option '--bogus' (Did you mean --blocks?)"
	assert_equal "${stderr_lines[1]}" "Try 'fusedmap --help' for more information."
	run -2 --separate-stderr "$FUSED_BIN/fusedmap" -o nosuchcolumn "$BED_CLI_DIR/clip.bin"
	assert_equal "${stderr_lines[0]}" 'fusedmap: nosuchcolumn: unknown column (known: index, logical, physical, length, state, flags, rawFlags)'
	run -2 --separate-stderr "$FUSED_BIN/fusedcp" /etc/hostname /etc/passwd "$BED_DIR/not-a-dir"
	assert_equal "${stderr_lines[0]}" "fusedcp: target '$BED_DIR/not-a-dir': no such directory"
	run -2 --separate-stderr "$FUSED_BIN/fusedcp" /etc/hostname /etc/passwd /etc/hostname
	assert_equal "${stderr_lines[0]}" "fusedcp: target '/etc/hostname': is not a directory"
	run -2 --separate-stderr "$FUSED_BIN/fusedcp" -n -f /etc/hostname "$BED_DIR/x"
	run -2 --separate-stderr "$FUSED_BIN/fusedcat" --offset 12Q "$BED_CLI_DIR/clip.bin"
	assert_equal "${stderr_lines[0]}" "fusedcat: --offset: expected a size like 4096, 64K, 4M or 1G, got '12Q'"
	run -2 --separate-stderr "$FUSED_BIN/fusedctl" serve --volume 'bad name=/tmp'
}

@test "a copy that cannot be created is reported about its destination, as cp does: exit 1, nothing left behind" {
	run -1 --separate-stderr "$FUSED_BIN/fusedcp" /etc/hostname "$BED_DIR/no-such-dir/x"
	assert_equal "$stderr" "fusedcp: $BED_DIR/no-such-dir/x: cannot create the copy: no such file or directory"
	# A name ending in a slash that is no directory: refused before the copy, not at its rename.
	run -1 --separate-stderr "$FUSED_BIN/fusedcp" "$BED_CLI_DIR/clip.bin" "$BED_DIR/not-a-dir/"
	assert_equal "$stderr" "fusedcp: $BED_DIR/not-a-dir/: cannot create the copy: not a directory"
	run -1 --separate-stderr "$FUSED_BIN/fusedcp" --json /etc/hostname /proc/x
	run -0 jq -r '.[0] | [.status, .error] | @tsv' <<<"$output"
	assert_output "$(printf 'failed\t/proc/x: cannot create the copy: no such file or directory')"
	assert [ ! -e "$BED_DIR/no-such-dir" ]
	assert [ ! -e "$BED_DIR/not-a-dir" ]
	run -0 find "$BED_DIR" -maxdepth 1 -name '.*.fused-*'
	assert_output ''
}

@test "some files failing and others working exits 4; all failing exits 1" {
	run -4 --separate-stderr bed_in_client "$FUSED_BIN/fusedmap" "$BED_CLI_DIR/clip.bin" "$BED_CLI_DIR/missing"
	assert_equal "${stderr_lines[0]}" "fusedmap: $BED_CLI_DIR/missing: no such file or directory"
	run -1 --separate-stderr bed_in_client "$FUSED_BIN/fusedmap" "$BED_CLI_DIR/missing"
	run -4 cat_to "$BED_DIR/cat.out" -q "$BED_CLI_DIR/missing" "$BED_CLI_DIR/clip.bin"
	assert_equal "$(sha256sum <"$BED_DIR/cat.out" | cut -d' ' -f1)" "$(sha256sum <"$BED_SRV_DIR/clip.bin" | cut -d' ' -f1)"
	run -4 --separate-stderr bed_in_client "$FUSED_BIN/fusedcp" -q "$BED_CLI_DIR/missing" "$BED_CLI_DIR/clip.bin" "$BED_DIR/"
	assert [ -f "$BED_DIR/clip.bin" ]
	assert_equal "$(sha256sum <"$BED_DIR/clip.bin" | cut -d' ' -f1)" "$(sha256sum <"$BED_SRV_DIR/clip.bin" | cut -d' ' -f1)"
}

@test "fusedcat into a pipe closed early ends quietly with status 0" {
	run -0 --separate-stderr bash -c 'set -o pipefail; "$0" "$1" | head -c 100 | wc -c' "$FUSED_BIN/fusedcat" "$BED_CLI_DIR/clip.bin"
	assert_output 100
	assert_equal "$stderr" ''
}

@test "fusedcat into a pipe closed early keeps the status of a file that failed before" {
	# The missing file fails, then the reader goes away mid clip.bin: still some files failed (4), not 0.
	run -4 --separate-stderr bed_in_client bash -c '"$0" "$1" "$2" | head -c 1 >/dev/null; exit "${PIPESTATUS[0]}"' \
		"$FUSED_BIN/fusedcat" "$BED_CLI_DIR/missing" "$BED_CLI_DIR/clip.bin"
	assert_equal "$stderr" "fusedcat: $BED_CLI_DIR/missing: no such file or directory"
	run -1 --separate-stderr bed_in_client bash -c '"$0" "$1" "$2" | head -c 1 >/dev/null; exit "${PIPESTATUS[0]}"' \
		"$FUSED_BIN/fusedcat" "$BED_CLI_DIR/missing" "$BED_CLI_DIR/missing2"
}

@test "fusedcp shows progress on a terminal, and nothing in a pipe" {
	local out=$BED_DIR/progress
	rm -f "$BED_DIR/p1" "$BED_DIR/p2"
	# script(1) gives the command a terminal; stty gives it a width.
	run -0 bed_in_client script -qec "stty cols 120 rows 40; $FUSED_BIN/fusedcp $BED_CLI_DIR/clip.bin $BED_DIR/p1" "$out" </dev/null
	run -0 grep -c 'MiB / 64 MiB' "$out"
	run -0 --separate-stderr bed_in_client "$FUSED_BIN/fusedcp" "$BED_CLI_DIR/clip.bin" "$BED_DIR/p2"
	assert_equal "$stderr" ''
	assert_equal "$(sha256sum <"$BED_DIR/p1" | cut -d' ' -f1)" "$(sha256sum <"$BED_SRV_DIR/clip.bin" | cut -d' ' -f1)"
	assert_equal "$(sha256sum <"$BED_DIR/p2" | cut -d' ' -f1)" "$(sha256sum <"$BED_SRV_DIR/clip.bin" | cut -d' ' -f1)"
}

@test "fusedmap --json is valid JSON with the documented fields" {
	run -0 --separate-stderr bed_in_client "$FUSED_BIN/fusedmap" --json "$BED_CLI_DIR/clip.bin"
	run -0 jq -r '.[0] | [.size, .blockSize, (.extents | length > 0), (.extents[0] | keys | sort | join(","))] | @tsv' <<<"$output"
	assert_output "$(printf '%s\t%s\t%s\t%s' $((64 << 20)) 4096 true 'flags,index,length,logical,physical,rawFlags,state')"
}

@test "every bundle's code cache is accepted by V8; the commands that move data have every function in theirs" {
	# Loaded by bin/start.cjs's own load(): a cache V8 refuses (made under other flags, say) would silently cost every
	# start its compiling. cachedDataRejected is false only for a cache that was offered and taken.
	for c in fusedcat fusedcp fusedmap fusedctl fusedthrottle; do
		run -0 node -e '
			const fs = require("node:fs");
			const file = process.argv[2];
			const { script } = require(process.argv[1]).load(file);
			console.log(script.cachedDataRejected === false ? "accepted" : "refused", fs.statSync(file + ".cache").size, fs.statSync(file).size);
		' "$BED_ROOT/bin/start.cjs" "$BED_ROOT/dist/bundle/$c.cjs"
		read -r verdict cache bundle <<<"$output"
		assert_equal "$c $verdict" "$c accepted"
		# Every function compiled (scripts/bundle.mjs) makes the cache larger than the bundle's source; the functions a
		# --help run compiles alone make it about half the source.
		case $c in
		fusedcat | fusedcp | fusedmap) ((cache > bundle)) || fail "$c: cache $cache bytes, bundle $bundle: not every function" ;;
		esac
	done
}

@test "a command starts from its bundle (with its code cache only if newer), or from the modules when a bare tsc left the bundle older; an unknown name exits 2" {
	# A copy of the built tree, so the test can plant a bundle that only says where it ran from.
	local tree=$BATS_TEST_TMPDIR/tree
	mkdir -p "$tree"
	cp -r "$BED_ROOT/bin" "$BED_ROOT/dist" "$BED_ROOT/package.json" "$tree/"
	ln -s "$BED_ROOT/node_modules" "$tree/node_modules"
	echo 'exports.start = () => console.log("started from the bundle");' >"$tree/dist/bundle/fusedcat.cjs"
	touch -d '2000-01-01' "$tree/dist/cli/run.js"
	run -0 --separate-stderr node "$tree/bin/fusedcat.cjs" --help
	assert_output 'started from the bundle'
	touch -d '1999-01-01' "$tree/dist/bundle/fusedcat.cjs"
	run -0 --separate-stderr node "$tree/bin/fusedcat.cjs" --help
	assert_line --index 0 --regexp '^Usage: fusedcat '
	rm "$tree/dist/bundle/fusedcat.cjs"
	run -0 --separate-stderr node "$tree/bin/fusedcat.cjs" --help
	assert_line --index 0 --regexp '^Usage: fusedcat '
	# V8's code cache is read only when it was made after the bundle (V8 checks no more than the source's length).
	cp "$BED_ROOT/dist/bundle/fusedcp.cjs" "$BED_ROOT/dist/bundle/fusedcp.cjs.cache" "$tree/dist/bundle/"
	touch -d '2001-01-01' "$tree/dist/bundle/fusedcp.cjs.cache"
	run -0 strace -f -qq -e trace=openat -o "$BATS_TEST_TMPDIR/old-cache" node "$tree/bin/fusedcp.cjs" --help
	assert_line --index 0 --regexp '^Usage: fusedcp '
	run -1 grep -F 'fusedcp.cjs.cache' "$BATS_TEST_TMPDIR/old-cache"
	touch "$tree/dist/bundle/fusedcp.cjs.cache"
	run -0 strace -f -qq -e trace=openat -o "$BATS_TEST_TMPDIR/new-cache" node "$tree/bin/fusedcp.cjs" --help
	assert_line --index 0 --regexp '^Usage: fusedcp '
	run -0 grep -F 'fusedcp.cjs.cache' "$BATS_TEST_TMPDIR/new-cache"
	# These suites run the real bundles (test/run.sh builds them after tsc), and a misuse reads as before.
	for c in fusedctl fusedmap fusedcat fusedcp fusedthrottle; do
		[[ $BED_ROOT/dist/bundle/$c.cjs -nt $BED_ROOT/dist/cli/run.js ]]
	done
	run -2 --separate-stderr node "$BED_ROOT/bin/fusedcp.cjs" --bogus
	assert_equal "$stderr" "fusedcp: unknown option '--bogus'"$'\n'"Try 'fusedcp --help' for more information."
	run -2 --separate-stderr node -e 'require(process.argv[1])("nosuch")' "$BED_ROOT/bin/start.cjs"
	assert_equal "$output" ''
	assert_equal "$stderr" "nosuch: nosuch: unknown command"$'\n'"Try 'nosuch --help' for more information."
}
