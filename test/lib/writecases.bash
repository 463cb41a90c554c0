# Checks for the direct write path (fusedcp onto a fused mount) on the two-node bed: sources, a bed whose map
# server lets the client node write, and the probes the write suites use. Sourced by test/bats/write-suite.bash
# and write-safety.bats after helpers (which brings bed.bash and mapcases.bash); brings readcases.bash.

source "$FUSED_LIB/readcases.bash"

# wc_setup_file FSTYPE [extra serve args...]: the bed of bed_setup_file, but the map server grants the client
# node "cli" writes (--role cli=rw) and takes the extra args (say --lease-time 3); the client's mount is fused.
wc_setup_file() {
	local fstype=$1
	shift
	requires_root
	bed_init || return 1
	echo "$BED_DIR" >"$BATS_FILE_TMPDIR/bed_dir"
	bed_make_nodes &&
		bed_make_volume "$fstype" &&
		bed_start_sshd &&
		bed_mount_client &&
		bed_start_server --role cli=rw "$@" &&
		fuse_client >"$BED_DIR/fuse.out" || return 1
	grep -q 'access rw' "$BED_DIR/fuse.out" || { cat "$BED_DIR/fuse.out"; echo "the client's fuse is not rw" >&2; return 1; }
	mkdir -p "$BED_DIR/src"
}

# wc_src SIZE [TAG]: a local source file (on the host, not on the volume) of SIZE bytes of random data, made once
# per bed and TAG; sets WC_SRC to its path.
wc_src() {
	WC_SRC=$BED_DIR/src/src-$1${2:+-$2}.bin
	[[ -e $WC_SRC ]] || head -c "$1" /dev/urandom >"$WC_SRC"
}

# wc_json_write JSON: the file's write object as [path, fallback, interrupted, bytesDirect, bytesNetwork].
wc_json_write() { jq -c '.write | [.path, .fallback, .interrupted, .bytesDirect, .bytesNetwork]' <<<"$1"; }

# wc_temp NAME: the name (in the server's volume root) of fusedcp's temporary file for destination NAME, if any.
wc_temp() { find "$BED_SRV_DIR" -maxdepth 1 -name ".$1.fused-*" -printf '%f\n' | head -1; }

# wc_wait_temp_lease NAME [TRIES]: wait (bounded, 0.05 s steps) until fusedcp's temporary file for NAME exists and
# the server holds its kernel write lease; sets WC_TEMP to its name.
wc_wait_temp_lease() {
	local tries=${2:-600}
	WC_TEMP=
	while ((tries-- > 0)); do
		WC_TEMP=$(wc_temp "$1")
		[[ -n $WC_TEMP ]] && rc_lease_held "$BED_SRV_DIR/$WC_TEMP" && return 0
		sleep 0.05
	done
	echo "no write lease on a temporary file for $1 (temporary: '${WC_TEMP}')" >&2
	return 1
}

# wc_wait_written DEV SECTORS BEFORE [TRIES]: wait (bounded, 0.05 s steps) until DEV has written SECTORS sectors
# since its counter said BEFORE.
wc_wait_written() {
	local tries=${4:-600}
	while ((tries-- > 0)); do
		(($(bed_sectors_written "$1") - $3 >= $2)) && return 0
		sleep 0.05
	done
	echo "$1 wrote only $(($(bed_sectors_written "$1") - $3)) sectors, waited for $2" >&2
	return 1
}

# wc_spawn_client OUT ERR CMD...: start CMD in the client's namespace in the background as the process itself
# ($! is CMD, not a shell around it: the bed's command wrappers and nsenter exec), record it for teardown, and
# set WC_PID. OUT and ERR are files for its stdout and stderr.
wc_spawn_client() {
	local out=$1 err=$2
	shift 2
	FUSED_STATE_DIR=$BED_DIR/client-state exec nsenter --net="/run/netns/$BED_CLI_NS" "$@" </dev/null >"$out" 2>"$err" 3>&- &
	WC_PID=$!
	# The record needs /proc/PID/stat; a command that is over already is no harm.
	bed_record_pid "$WC_PID" || true
}

# wc_wait_exit PID [TRIES]: wait (bounded, 0.1 s steps) for a process we started to end; returns its status
# (by wait, so it must be our child).
wc_wait_exit() {
	local pid=$1 tries=${2:-600}
	while ((tries-- > 0)) && bed_alive "$pid"; do sleep 0.1; done
	bed_alive "$pid" && { echo "process $pid still running" >&2; return 124; }
	wait "$pid"
}

# wc_volume_sums [EXCLUDE_NAME...]: "sha256 name" of every regular file on the server's mount (O_DIRECT reads
# where possible, so the server's page cache cannot hide what is on the disk), except the given top-level names
# and fusedcp's temporaries.
wc_volume_sums() {
	local f rel skip x
	while IFS= read -r -d '' f; do
		rel=${f#"$BED_SRV_DIR"/}
		skip=
		for x in "$@"; do [[ $rel == "$x" ]] && skip=1; done
		[[ -n $skip || $rel == .*.fused-* ]] && continue
		printf '%s %q\n' "$(wc_disk_sha "$f")" "$rel"
	done < <(find "$BED_SRV_DIR" -type f -not -path "$BED_SRV_DIR/lost+found/*" -print0 | sort -z)
}

# wc_disk_sha FILE: sha256 of FILE read with O_DIRECT (what the disk holds, not the page cache); a plain read where
# O_DIRECT is refused.
wc_disk_sha() {
	{ dd if="$1" iflag=direct bs=1M status=none 2>/dev/null || cat "$1"; } | rc_sha
}

# wc_blocks_from SOURCE FILE [BLOCK]: every BLOCK-byte block (default 4096) of FILE is the same block of SOURCE or
# all zeros (FILE read with O_DIRECT, past the page cache); prints "source=N zero=M" block counts. Fails naming
# the first block that is neither.
wc_blocks_from() {
	python3 - "$1" "$2" "${3:-4096}" <<-'PY'
		import mmap, os, sys
		src, dst, bs = sys.argv[1], sys.argv[2], int(sys.argv[3])
		zero = bytes(bs)
		same = zeros = 0
		fd = os.open(dst, os.O_RDONLY | os.O_DIRECT)
		buf = mmap.mmap(-1, 1 << 20)
		with open(src, "rb") as s:
		    off = 0
		    while True:
		        n = os.readv(fd, [buf])
		        if n <= 0:
		            break
		        for i in range(0, n, bs):
		            got = buf[i:min(i + bs, n)]
		            s.seek(off + i)
		            want = s.read(len(got))
		            if got == want:
		                same += 1
		            elif got == zero[:len(got)]:
		                zeros += 1
		            else:
		                print(f"block at {off + i} is neither the source's nor zeros", file=sys.stderr)
		                sys.exit(1)
		        off += n
		print(f"source={same} zero={zeros}")
	PY
}

# wc_free: free bytes on the server's volume, root's reserve included (df's Available leaves that out, and the
# map server runs as root).
wc_free() { sync -f "$BED_SRV_DIR" && echo $(($(stat -f -c '%f*%S' "$BED_SRV_DIR"))); }

# wc_fill_volume NAME LEAVE: a preallocated file NAME on the volume that leaves about LEAVE bytes free.
wc_fill_volume() {
	local free
	free=$(wc_free)
	((free > $2)) || return 0
	fallocate -l $((free - $2)) "$BED_SRV_DIR/$1" && sync
}

# wc_lease_breaking FILE: a kernel lease on FILE is being broken (someone opened it; /proc/locks says BREAKING).
wc_lease_breaking() {
	local id
	id=$(printf '%02x:%02x:%d' "$(stat -c '%Hd' "$1")" "$(stat -c '%Ld' "$1")" "$(stat -c '%i' "$1")")
	grep -q " LEASE *BREAKING .* $id " /proc/locks
}

# wc_server_file NAME SIZE: NAME on the server's volume, SIZE random bytes, on the disk (synced); prints its inode.
wc_server_file() {
	head -c "$2" /dev/urandom >"$BED_SRV_DIR/$1" && sync -f "$BED_SRV_DIR/$1" && stat -c %i "$BED_SRV_DIR/$1"
}

# wc_inplace SOURCE NAME: fusedcp --inplace --json SOURCE onto NAME through the client's mount (bats run: the JSON in
# $output); then NAME on the server must still be inode WC_INO.
wc_inplace() {
	run -0 --separate-stderr bed_in_client "$FUSED_BIN/fusedcp" --inplace --json "$1" "$BED_CLI_DIR/$2"
	assert_equal "$(jq -r '.[0].status' <<<"$output")" copied
	assert_equal "$(stat -c %i "$BED_SRV_DIR/$2")" "$WC_INO"
}

# wc_blocks_either A B FILE [BLOCK]: every BLOCK-byte block (default 4096) of FILE, read with O_DIRECT (what the disk
# holds), is the same block of A or of B (an overwrite in place cut short); prints "a=N b=M" block counts (a block
# both files have alike counts as A's). Fails naming the first block that is neither. FILE no longer than A.
wc_blocks_either() {
	python3 - "$1" "$2" "$3" "${4:-4096}" <<-'PY'
		import mmap, os, sys
		a_path, b_path, dst, bs = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
		na = nb = 0
		fd = os.open(dst, os.O_RDONLY | os.O_DIRECT)
		buf = mmap.mmap(-1, 1 << 20)
		with open(a_path, "rb") as a, open(b_path, "rb") as b:
		    off = 0
		    while True:
		        n = os.readv(fd, [buf])
		        if n <= 0:
		            break
		        a.seek(off)
		        b.seek(off)
		        wa, wb = a.read(n), b.read(n)
		        for i in range(0, n, bs):
		            got = buf[i:min(i + bs, n)]
		            if got == wa[i:i + len(got)]:
		                na += 1
		            elif got == wb[i:i + len(got)]:
		                nb += 1
		            else:
		                print(f"block at {off + i} is neither file's", file=sys.stderr)
		                sys.exit(1)
		        off += n
		print(f"a={na} b={nb}")
	PY
}
