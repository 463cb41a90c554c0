#!/usr/bin/env bats
# fusedcp -r -j N (ext4-4k, two-node bed, the client node rw): a tree copied several files at once, off the fused
# mount or onto it, is the same tree, with its modes (-p), no temporaries, one --json entry per file in the order of
# the walk, and one failing file stops no other.

load helpers

setup_file() {
	requires_root
	bed_init || return 1
	echo "$BED_DIR" >"$BATS_FILE_TMPDIR/bed_dir"
	bed_make_nodes && bed_make_volume ext4-4k 2G && bed_start_sshd && bed_mount_client && bed_start_server --role cli=rw || return 1
	fuse_client >"$BED_DIR/fuse.out"
	# A few hundred files of mixed sizes (empty, tiny, just under a block, 64 KiB, just over 1 MiB: those go
	# direct, the rest through the mount) in nested directories, modes of their own, and a symbolic link.
	local src=$BED_SRV_DIR/jobs sizes=(0 1 4095 65536 1048577) modes=(644 600 755 640) dirs=(. a a/b a/b/c d) i
	for d in "${dirs[@]}"; do mkdir -p "$src/$d"; done
	for ((i = 0; i < 250; i++)); do
		head -c "${sizes[i % 5]}" /dev/urandom >"$src/${dirs[i % 5]}/f$i"
		chmod "${modes[i % 4]}" "$src/${dirs[i % 5]}/f$i"
	done
	chmod 750 "$src/a/b"
	ln -s a/f1 "$src/link"
	sync
}

teardown_file() { bed_teardown_file; }

# walk DIR: the files fusedcp's walk reaches, in its order (names sorted bytewise, depth first), relative.
walk() {
	local dir=$1 prefix=${2:-} name
	while IFS= read -r name; do
		if [[ -d $dir/$name && ! -L $dir/$name ]]; then walk "$dir/$name" "$prefix$name/"; else echo "$prefix$name"; fi
	done < <(LC_ALL=C ls -A "$dir" | LC_ALL=C sort)
}

# sums DIR: sha256 of every file under DIR, by relative path.
sums() { (cd "$1" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum); }

@test "fusedcp -r -p -j 8 copies a tree of mixed sizes: same bytes and modes, no temporaries, --json once per file in walk order" {
	local out=$BED_DIR/jobs-out
	rm -rf "$out" && mkdir "$out"
	run --separate-stderr bed_in_client "$FUSED_BIN/fusedcp" -r -p -j 8 --json "$BED_CLI_DIR/jobs" "$out/"
	assert_success
	echo "$output" >"$BED_DIR/jobs.json"
	diff <(sums "$BED_SRV_DIR/jobs") <(sums "$out/jobs")
	diff <(cd "$BED_SRV_DIR/jobs" && find . -printf '%M %p\n' | LC_ALL=C sort) <(cd "$out/jobs" && find . -printf '%M %p\n' | LC_ALL=C sort)
	[[ $(readlink "$out/jobs/link") == a/f1 ]]
	[[ -z $(find "$out" -name '*.fused-*') ]]
	# Every file once, in the walk's order, though the 1 MiB files finish after the small ones started with them.
	diff <(walk "$BED_SRV_DIR/jobs") <(jq -r --arg p "$BED_CLI_DIR/jobs/" '.[].source | ltrimstr($p)' "$BED_DIR/jobs.json")
	[[ $(jq '[.[] | select(.status == "copied")] | length' "$BED_DIR/jobs.json") -eq 251 ]]
	# The large files went direct, several at once with the small ones through the mount.
	[[ $(jq '[.[] | select(.size == 1048577 and .path == "direct")] | length' "$BED_DIR/jobs.json") -eq 50 ]]
}

@test "fusedcp -r -j 8: a file that cannot be copied fails alone (exit 4); -n keeps an existing file" {
	local src=$BED_SRV_DIR/jobs-fail out=$BED_DIR/jobs-fail-out i
	mkdir -p "$src/sub"
	for ((i = 0; i < 40; i++)); do head -c $((i * 3001)) /dev/urandom >"$src/sub/f$i"; done
	mkfifo "$src/sub/f20-fifo"
	rm -rf "$out" && mkdir -p "$out/jobs-fail/sub"
	echo keep >"$out/jobs-fail/sub/f7"
	run --separate-stderr bed_in_client "$FUSED_BIN/fusedcp" -r -n -j 8 --json "$BED_CLI_DIR/jobs-fail" "$out/"
	[[ $status -eq 4 ]]
	[[ $stderr == *"f20-fifo: not a regular file"* ]]
	[[ $(jq -r '.[] | select(.status == "failed") | .source' <<<"$output") == "$BED_CLI_DIR/jobs-fail/sub/f20-fifo" ]]
	[[ $(jq -r '.[] | select(.status == "skipped") | .source' <<<"$output") == "$BED_CLI_DIR/jobs-fail/sub/f7" ]]
	[[ $(cat "$out/jobs-fail/sub/f7") == keep ]]
	rm "$out/jobs-fail/sub/f7" "$src/sub/f7" "$src/sub/f20-fifo"
	diff <(sums "$src") <(sums "$out/jobs-fail")
	[[ -z $(find "$out" -name '*.fused-*') ]]
}

@test "fusedcp -r -p -j 8 onto the fused mount: the tree arrives whole on the server, large files written direct" {
	local out=$BED_DIR/jobs-up
	rm -rf "$out" && mkdir "$out"
	cp -a "$BED_SRV_DIR/jobs" "$out/jobs"
	run --separate-stderr bed_in_client "$FUSED_BIN/fusedcp" -r -p -j 8 --json "$out/jobs" "$BED_CLI_DIR/jobs-up"
	assert_success
	echo "$output" >"$BED_DIR/jobs-up.json"
	diff <(sums "$out/jobs") <(sums "$BED_SRV_DIR/jobs-up")
	diff <(cd "$out/jobs" && find . -printf '%M %p\n' | LC_ALL=C sort) <(cd "$BED_SRV_DIR/jobs-up" && find . -printf '%M %p\n' | LC_ALL=C sort)
	[[ -z $(find "$BED_SRV_DIR/jobs-up" -name '*.fused-*') ]]
	diff <(walk "$out/jobs") <(jq -r --arg p "$out/jobs/" '.[].source | ltrimstr($p)' "$BED_DIR/jobs-up.json")
	[[ $(jq '[.[] | select(.size == 1048577 and .write.path == "direct")] | length' "$BED_DIR/jobs-up.json") -eq 50 ]]
}
