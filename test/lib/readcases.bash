# Checks for the direct read path (fusedcat, fusedcp) on the two-node bed: the read suites' shared test bodies.
# Sourced by test/bats/read-*.bats and recall.bats after helpers (which brings bed.bash and mapcases.bash).

# rc_make CASE: make a read case's file on the server's mount and set RC_FILE to its name in the volume.
# Cases: the map cases (contiguous fragmented sparse prealloc beyond4g empty oddname) plus big (64 MiB).
rc_make() {
	case $1 in
	big) RC_FILE=big.bin
		[[ -e $BED_SRV_DIR/$RC_FILE ]] || dd if=/dev/urandom of="$BED_SRV_DIR/$RC_FILE" bs=1M count=64 conv=fsync status=none ;;
	*) mapcase_make "$1" || return 1
		RC_FILE=$MAPCASE_FILE ;;
	esac
}

# make_file NAME: 256 MiB of random bytes on the server; sets $f (server path), $cf (client path), $old (sha256).
make_file() {
	f=$BED_SRV_DIR/$1
	cf=$BED_CLI_DIR/$1
	dd if=/dev/urandom of="$f" bs=1M count=256 conv=fsync status=none
	old=$(rc_sha "$f")
}

# rc_sha [FILE]: sha256 of a file or of stdin (hex only). openssl is 4x faster than sha256sum here (SHA-NI),
# which matters for the 4.5 GiB sparse case.
# Always from stdin: openssl marks a hash whose file name needs escaping with a leading backslash.
rc_sha() {
	if (($#)); then openssl dgst -sha256 -r <"$1"; else openssl dgst -sha256 -r; fi | cut -d' ' -f1
}

# rc_sha_direct FILE: sha256 of a file read with O_DIRECT where its file system allows (else as rc_sha does). For a
# file whose every byte went through this node's page cache (never for one written on the device behind it): the
# hole of the 4.5 GiB sparse case costs 8-10 s of zeroed page-cache pages when read through the cache, about 1 s
# this way.
rc_sha_direct() {
	if dd if="$1" iflag=direct bs=4M count=0 status=none 2>/dev/null; then
		dd if="$1" iflag=direct bs=4M status=none | rc_sha
	else
		rc_sha "$1"
	fi
}

# rc_src_sha CASE: sha256 of the case's file on the server's mount; cached per bed (the case files never change, and
# are written through the server's mount).
rc_src_sha() {
	local cache=$BED_DIR/sha.$1
	[[ -s $cache ]] || rc_sha_direct "$BED_SRV_DIR/$RC_FILE" >"$cache"
	cat "$cache"
}

# rc_cat_sha [fusedcat args...]: sha256 of fusedcat's stdout; fails with fusedcat's status.
rc_cat_sha() {
	local -a st
	bed_in_client "$FUSED_BIN/fusedcat" "$@" | rc_sha
	st=("${PIPESTATUS[@]}")
	return "${st[0]}"
}

# rc_no_temps DIR: no fusedcp temporary file (.NAME.fused-XXXXXXXX) anywhere under DIR.
rc_no_temps() {
	local left
	left=$(find "$1" -name '.*.fused-*' -printf '%P\n')
	[[ -z $left ]] || { printf 'leftover temporary files under %s:\n%s\n' "$1" "$left"; return 1; }
}

# rc_tree_sums DIR: the sha256 of every regular file under DIR (relative names, NUL-sorted), then the symlinks.
rc_tree_sums() {
	(cd "$1" && find . -type f -print0 | sort -z | xargs -0 -r sha256sum && find . -type l -printf '%P -> %l\n' | sort)
}

# rc_tree_meta DIR: mode and mtime (whole seconds: sshfs shows no more) of everything but symlinks under DIR.
rc_tree_meta() {
	(cd "$1" && find . ! -type l -printf '%P|%m|%T@\0' | sed -z 's/\.[0-9]*$//' | sort -z | tr '\0' '\n')
}

# rc_make_tree DIR: a tree of 200 regular files (sizes 0 .. 3 MiB, some sparse) in nested directories, a
# symlink, odd names (space, newline, non-UTF-8, leading dash and dot), varied modes. Deterministic per bed.
rc_make_tree() {
	local top=$1 i dir name size mode
	local sizes=(0 1 100 4095 4096 4097 65536 262143 262144 300000 1048583 3145728)
	local modes=(644 600 640 755 444)
	local names=('plain' 'with space' $'new\nline' $'latin\xe9' '-dash' '.dot' 'x%y' 'q"uote')
	RANDOM=42
	mkdir -p "$top"
	for ((i = 0; i < 200; i++)); do
		dir=$top/d$((i % 5))
		((i % 3 == 0)) && dir=$dir/sub$((i % 4))
		((i % 7 == 0)) && dir=$dir/$'deep \xff'
		mkdir -p "$dir"
		name=${names[i % ${#names[@]}]}-$i
		size=${sizes[RANDOM % ${#sizes[@]}]}
		if ((i % 6 == 5)); then
			# Sparse: a hole, 1 MiB of data, a trailing hole ending off a block boundary.
			truncate -s $((3 * 1048576 + i)) "$dir/$name"
			dd if=/dev/urandom of="$dir/$name" bs=1M count=1 seek=1 conv=notrunc status=none
		else
			head -c "$size" /dev/urandom >"$dir/$name"
		fi
		mode=${modes[i % ${#modes[@]}]}
		chmod "$mode" "$dir/$name"
		touch -d "@$((1600000000 + i * 3600))" "$dir/$name"
	done
	ln -s 'd1/plain-1' "$top/link to plain"
	chmod 750 "$top/d2"
	touch -d '@1500000000' "$top/d3" "$top/d0/sub0"
	sync
}

# rc_tree: make (once per bed) the 200-file tree on the server; sets RC_TREE to its name in the volume.
rc_tree() {
	RC_TREE=tree
	# The marker lies beside the tree, not in it, so it is never copied.
	[[ -e $BED_SRV_DIR/$RC_TREE.done ]] && return 0
	rc_make_tree "$BED_SRV_DIR/$RC_TREE" && : >"$BED_SRV_DIR/$RC_TREE.done"
}

# rc_small_tmpfs DIR [SIZE]: a small tmpfs (recorded for teardown) to make copies fail with ENOSPC.
rc_small_tmpfs() {
	mkdir -p "$1"
	mount -t tmpfs -o "size=${2:-1m}" fused-full "$1" || return 1
	bed_record mount "$1"
}

# rc_lease_held FILE: the server holds a kernel lease on FILE (seen in /proc/locks by device and inode).
rc_lease_held() {
	local id
	id=$(printf '%02x:%02x:%d' "$(stat -c '%Hd' "$1")" "$(stat -c '%Ld' "$1")" "$(stat -c '%i' "$1")")
	grep -q " LEASE .* $id " /proc/locks
}

# rc_wait_lease FILE [TRIES]: wait (bounded, 0.05 s steps) until the server holds a lease on FILE.
rc_wait_lease() {
	local tries=${2:-400}
	until rc_lease_held "$1"; do
		((tries-- > 0)) || { echo "no lease on $1 after waiting" >&2; return 1; }
		sleep 0.05
	done
}

# rc_timed OUTVAR CMD...: run CMD, store its wall time in milliseconds in OUTVAR; returns CMD's status.
rc_timed() {
	local -n _ms=$1
	shift
	local t0 rc=0
	t0=$(date +%s%N)
	"$@" || rc=$?
	_ms=$((($(date +%s%N) - t0) / 1000000))
	return "$rc"
}

# rc_refresh_env: the bed's variables as last saved (a test that restarted the server changed its PID).
rc_refresh_env() { source "$BED_DIR/env"; }

# rc_device_nonzero DEV OFFSET LENGTH: DEV holds at least one non-zero byte in [OFFSET, OFFSET+LENGTH).
rc_device_nonzero() {
	[[ $(dd if="$1" iflag=direct,skip_bytes,count_bytes skip="$2" count="$3" bs=1M status=none | tr -d '\0' | head -c 1 | wc -c) == 1 ]]
}

# rc_map_json FILE: fusedmap --json of FILE (a path on the client's fused mount), the first file's object.
rc_map_json() { bed_in_client "$FUSED_BIN/fusedmap" --json "$1" | jq -c '.[0]'; }

# rc_unsynced_delalloc NAME: 8 MiB of random bytes written on the server's mount without any sync, so the file
# system has not placed them yet (delayed allocation); fails unless FIEMAP, without a sync, says so. Writeback
# started by someone else's dirty pages may place them first: then it tries again with fresh bytes, twice.
rc_unsynced_delalloc() {
	local f=$BED_SRV_DIR/$1 try
	for try in 1 2 3; do
		rm -f "$f"
		dd if=/dev/urandom of="$f" bs=1M count=8 status=none || return 1
		filefrag -v "$f" | grep -q delalloc && return 0
	done
	echo "$1: not delayed-allocated after the write:" >&2
	filefrag -v "$f" >&2
	return 1
}

# rc_unsynced_prealloc NAME: a 4 MiB preallocated file, then 1 MiB of random bytes at 1 MiB written without any
# sync; fails unless FIEMAP, without a sync, still shows the written range unwritten (tries three times, as above).
rc_unsynced_prealloc() {
	local f=$BED_SRV_DIR/$1 try lines
	for try in 1 2 3; do
		rm -f "$f"
		fallocate -l 4M "$f" && sync "$f" || return 1
		dd if=/dev/urandom of="$f" bs=1M count=1 seek=1 conv=notrunc status=none || return 1
		# Every extent line of filefrag -v (which does not sync) still says unwritten.
		lines=$(filefrag -v "$f" | awk '$1 ~ /^[0-9]+:$/')
		[[ -n $lines ]] && ! grep -qv unwritten <<<"$lines" && return 0
	done
	echo "$1: the written range is no longer unwritten:" >&2
	filefrag -v "$f" >&2
	return 1
}
