#!/usr/bin/env bats
# The allocator for direct writes (src/server/allocate.ts) on real loop devices: allocated ranges are written,
# zeroed blocks the file owns alone (FIEMAP, the file system and the device agree), a device write into them reads
# back through the file system, XFS clones from a reserve that is refilled, a full volume gives ENOSPC cleanly.

load helpers

MiB=$((1024 * 1024))

setup_file() {
	requires_root
	bed_init || return 1
	echo "$BED_DIR" >"$BATS_FILE_TMPDIR/bed_dir"
	local fs
	for fs in ext4-4k ext4-1k xfs; do make_volume "$fs" || return 1; done
}

teardown_file() { bed_teardown_file; }

# A failed ENOSPC test must not leave its volume full for the next ones.
teardown() {
	local fs
	for fs in ext4-4k ext4-1k xfs; do rm -f "$BED_DIR/$fs/filler"; done
}

# make_volume FSTYPE: a 512 MiB volume mounted at $BED_DIR/FSTYPE, its device in $BED_DIR/FSTYPE.dev. The image
# holds old bytes everywhere before mkfs (which does not discard), so "reads zeros" proves the allocator's work.
make_volume() {
	local fs=$1 img=$BED_DIR/$1.img dev
	bed_make_image "$img" "$fs" 512M || return 1
	dev=$(bed_attach "$img") || return 1
	bed_mount "$dev" "$BED_DIR/$fs" || return 1
	echo "$dev" >"$BED_DIR/$fs.dev"
}

vol_dev() { cat "$BED_DIR/$1.dev"; }

alloc() { node "$FUSED_LIB/alloc.mjs" allocate "$@"; }
dontneed() { node "$FUSED_LIB/alloc.mjs" dontneed "$1"; }

# fiemap_rows FILE: "LOGICAL PHYSICAL LENGTH FLAGS" in bytes for each extent (holes left out), from xfs_io,
# which prints the kernel's flags in hex for any file system.
fiemap_rows() {
	local idx lrange prange count flags
	while read -r idx lrange prange count flags; do
		[[ $idx =~ ^[0-9]+:$ && $prange != hole ]] || continue
		lrange=${lrange#[}
		echo "$((${lrange%%..*} * 512)) $((${prange%%..*} * 512)) $((count * 512)) $flags"
	done < <(xfs_io -r -c 'fiemap -v' "$1")
}

# check_written_zeros FILE DEV OFFSET LENGTH: FIEMAP covers the range with extents that are neither unwritten,
# shared, delalloc nor unknown; their bytes on the device are zeros; the file reads zeros through the file system.
check_written_zeros() {
	local file=$1 dev=$2 off=$3 len=$4 end=$(($3 + $4)) at=$3 l p n f from to
	sync
	while read -r l p n f; do
		((l + n > at && l < end)) || continue
		((l <= at)) || { echo "no blocks at $at of $file"; return 1; }
		((f & 0x2806)) && { echo "extent at $l of $file has flags $f (unwritten 0x800, shared 0x2000, delalloc, unknown)"; return 1; }
		from=$((at > l ? at : l))
		to=$((l + n < end ? l + n : end))
		cmp -n $((to - from)) <(dd if="$dev" iflag=direct,skip_bytes,count_bytes skip=$((p + from - l)) count=$((to - from)) bs=1M status=none) /dev/zero ||
			{ echo "device bytes of $file at $from (device $((p + from - l))) are not zeros"; return 1; }
		at=$to
	done < <(fiemap_rows "$file")
	((at >= end)) || { echo "no blocks at $at of $file"; return 1; }
	dontneed "$file"
	cmp -i "$off:0" -n "$len" "$file" /dev/zero || { echo "$file does not read zeros"; return 1; }
}

# device_write_shows FILE DEV OFFSET: write a block of random bytes on the device where FILE's OFFSET lives; after
# dropping the file's cached pages, the file system shows those bytes (the extent really is written).
device_write_shows() {
	local file=$1 dev=$2 off=$3 bs l p n f phys=
	bs=$(stat -c %o "$file")
	while read -r l p n f; do ((off >= l && off < l + n)) && phys=$((p + off - l)); done < <(fiemap_rows "$file")
	[[ -n $phys ]] || { echo "no extent at $off of $file"; return 1; }
	head -c "$bs" /dev/urandom >"$BATS_TEST_TMPDIR/pattern"
	dd if="$BATS_TEST_TMPDIR/pattern" of="$dev" bs="$bs" oflag=direct,seek_bytes seek="$phys" conv=notrunc status=none
	dontneed "$file"
	cmp -i "$off:0" -n "$bs" "$file" "$BATS_TEST_TMPDIR/pattern" || { echo "device write at $phys not seen at $off of $file"; return 1; }
}

# hole_case FSTYPE OFFSET LENGTH [alloc options]: allocate a range of a new file and check it all ways.
hole_case() {
	local fs=$1 off=$2 len=$3 dir=$BED_DIR/$1 dev
	dev=$(vol_dev "$fs")
	shift 3
	rm -f "$dir/hole"
	run -0 --separate-stderr alloc "$dir" "$dir/hole" "$off" "$len" "$@"
	# The server's kernel write lease on the file survives the allocation (no second open of the file).
	[[ $(jq '.leaseKept' <<<"$output") == true ]]
	[[ $(stat -c %s "$dir/hole") -eq $((off + len)) ]]
	run -0 check_written_zeros "$dir/hole" "$dev" "$off" "$len"
	run -0 device_write_shows "$dir/hole" "$dev" "$off"
	run -0 device_write_shows "$dir/hole" "$dev" $((off + len - $(stat -c %o "$dir/hole")))
	rm -f "$dir/hole"
}

@test "the checks can fail: a plain fallocate leaves unwritten blocks that still hold old bytes on the device" {
	local dir=$BED_DIR/ext4-4k dev l p n f
	dev=$(vol_dev ext4-4k)
	fallocate -l $((4 * MiB)) "$dir/plain"
	run -1 check_written_zeros "$dir/plain" "$dev" 0 $((4 * MiB))
	assert_output --regexp 'flags 0x8[0-9a-f]{2} '
	read -r l p n f < <(fiemap_rows "$dir/plain")
	# The block still holds the image's old fill (0xa5, bed_make_image): every byte of it.
	local other
	other=$(dd if="$dev" iflag=direct,skip_bytes skip="$p" bs=4096 count=1 status=none | LC_ALL=C tr -d '\245' | wc -c)
	assert_equal "$other" 0
	run -1 device_write_shows "$dir/plain" "$dev" 0
	rm -f "$dir/plain"
}

@test "ext4-4k: a hole becomes written zeros the file owns; a device write reads back through the file system" {
	hole_case ext4-4k 0 $((64 * MiB))
	# Without a pool (--reserve 0) ext4 zero-fills (the pool is write-pool.bats's).
	run -0 --separate-stderr alloc "$BED_DIR/ext4-4k" "$BED_DIR/ext4-4k/stats" 0 4096 --reserve 0
	assert_output --partial '"method":"zero-fill"'
	# Zeros written on the ALLOC's clock: nothing is ready (no ready= in ALLOC replies; the client asks in slices).
	[[ $(jq '.after.readyBytes' <<<"$output") -eq 0 ]]
	rm -f "$BED_DIR/ext4-4k/stats"
}

@test "ext4-1k: an allocation at an offset that is not 4 KiB aligned" {
	hole_case ext4-1k $((3 * 1024)) $((40 * MiB + 5 * 1024))
}

@test "xfs: a hole is cloned from the reserve; nothing is shared afterwards and a device write reads back" {
	hole_case xfs 0 $((32 * MiB)) --reserve $((64 * MiB)) --warm
	run -0 --separate-stderr alloc "$BED_DIR/xfs" "$BED_DIR/xfs/stats" 0 4096 --reserve $((64 * MiB)) --warm
	assert_output --partial '"method":"reflink"'
	[[ $(jq '.after.zeroFillBytes' <<<"$output") -eq 0 ]]
	# The reserve's own blocks are not shared with anyone either.
	run -0 bash -c "xfs_io -r -c 'fiemap -v' '$BED_DIR/xfs/.fused/reserve' | awk 'NR > 2 && \$5 != \"\" { print \$5 }'"
	refute_output --partial '0x2'
	rm -f "$BED_DIR/xfs/stats"
}

@test "xfs: allocate takes from the reserve, which shrinks by as much and is refilled in the background" {
	local dir=$BED_DIR/xfs
	rm -f "$dir/refill"
	run -0 --separate-stderr alloc "$dir" "$dir/refill" 0 $((16 * MiB)) --reserve $((64 * MiB)) --warm --refilled
	local out=$output
	[[ $(jq '.before.reserveBytes' <<<"$out") -eq $((64 * MiB)) ]]
	[[ $(jq '.after.reserveBytes' <<<"$out") -eq $((48 * MiB)) ]]
	# What an ALLOC reply then says is ready (ready=): what the reserve holds, for the client's next ALLOC.
	[[ $(jq '.after.readyBytes' <<<"$out") -eq $((48 * MiB)) ]]
	[[ $(jq '.after.allocatedBytes' <<<"$out") -eq $((16 * MiB)) ]]
	[[ $(jq '.refilled.reserveBytes' <<<"$out") -eq $((64 * MiB)) ]]
	[[ $(stat -c %s "$dir/.fused/reserve") -eq $((64 * MiB)) ]]
	run -0 check_written_zeros "$dir/.fused/reserve" "$(vol_dev xfs)" 0 $((64 * MiB))
	run -0 check_written_zeros "$dir/refill" "$(vol_dev xfs)" 0 $((16 * MiB))
	rm -f "$dir/refill"
}

@test "xfs: while a client writes the device directly the refill keeps off it (a chunk a second), then fills up" {
	local dir=$BED_DIR/xfs
	rm -f "$dir/writing"
	run -0 --separate-stderr alloc "$dir" "$dir/writing" 0 $((32 * MiB)) --reserve $((64 * MiB)) --warm --writing 2500 --refilled
	local out=$output
	[[ $(jq '.after.reserveBytes' <<<"$out") -eq $((32 * MiB)) ]]
	# 2.5 s of writing: at most three 4 MiB chunks (one at the start, then one a second), not the 32 MiB missing.
	local during
	during=$(jq '.writing.reserveBytes' <<<"$out")
	((during <= 44 * MiB)) || fail "the refill wrote $((during / MiB - 32)) MiB while a client was writing"
	[[ $(jq '.refilled.reserveBytes' <<<"$out") -eq $((64 * MiB)) ]]
	run -0 check_written_zeros "$dir/.fused/reserve" "$(vol_dev xfs)" 0 $((64 * MiB))
	rm -f "$dir/writing"
}

@test "xfs: what the reserve cannot cover is zero-filled" {
	local dir=$BED_DIR/xfs dev
	dev=$(vol_dev xfs)
	rm -f "$dir/big"
	run -0 --separate-stderr alloc "$dir" "$dir/big" 0 $((48 * MiB)) --reserve $((16 * MiB)) --warm
	[[ $(jq '.after.zeroFillBytes' <<<"$output") -eq $((32 * MiB)) ]]
	[[ $(jq '.after.allocatedBytes' <<<"$output") -eq $((48 * MiB)) ]]
	run -0 check_written_zeros "$dir/big" "$dev" 0 $((48 * MiB))
	run -0 device_write_shows "$dir/big" "$dev" 0
	run -0 device_write_shows "$dir/big" "$dev" $((40 * MiB))
	rm -f "$dir/big"
}

# mixed_case FSTYPE [alloc options]: written data, a hole and unwritten blocks in one range.
mixed_case() {
	local fs=$1 dir=$BED_DIR/$1 dev
	dev=$(vol_dev "$fs")
	shift
	head -c "$MiB" /dev/urandom >"$BATS_TEST_TMPDIR/data"
	rm -f "$dir/mixed"
	cp "$BATS_TEST_TMPDIR/data" "$dir/mixed"
	fallocate -n -o $((2 * MiB)) -l "$MiB" "$dir/mixed"
	sync
	run -0 --separate-stderr alloc "$dir" "$dir/mixed" 0 $((4 * MiB)) "$@"
	[[ $(jq '.leaseKept' <<<"$output") == true ]]
	[[ $(jq '.after.allocatedBytes' <<<"$output") -eq $((3 * MiB)) ]]
	[[ $(stat -c %s "$dir/mixed") -eq $((4 * MiB)) ]]
	dontneed "$dir/mixed"
	cmp -n "$MiB" "$dir/mixed" "$BATS_TEST_TMPDIR/data"
	run -0 check_written_zeros "$dir/mixed" "$dev" "$MiB" $((3 * MiB))
	rm -f "$dir/mixed"
}

@test "written data in the range stays; the hole and the unwritten part become written zeros (ext4-4k)" {
	mixed_case ext4-4k
}

@test "written data in the range stays; the hole and the unwritten part become written zeros (xfs, reflink)" {
	mixed_case xfs --reserve $((16 * MiB)) --warm
}

# enospc_case FSTYPE [alloc options]: leave about 8 MiB free, ask for 64 MiB: ENOSPC, and the target's size, its
# data and the volume's free space are as before.
enospc_case() {
	local fs=$1 dir=$BED_DIR/$1 free_before avail
	shift
	# The first allocation on a volume makes .fused: not part of what is measured.
	run -0 --separate-stderr alloc "$dir" "$dir/target" 0 4096 "$@"
	printf 'first block' | dd of="$dir/target" bs=4096 conv=sync status=none
	sync
	avail=$(stat -f -c '%a * %S' "$dir")
	fallocate -l $((avail - 8 * MiB)) "$dir/filler"
	sync
	free_before=$(stat -f -c %f "$dir")
	run -1 --separate-stderr alloc "$dir" "$dir/target" 4096 $((64 * MiB)) "$@"
	assert_output --partial '"error":"ENOSPC"'
	local out=$output
	sync
	[[ $(stat -c %s "$dir/target") -eq 4096 ]]
	[[ $(stat -f -c %f "$dir") -eq $free_before ]]
	[[ $(head -c 11 "$dir/target") == 'first block' ]]
	rm -f "$dir/filler" "$dir/target"
	echo "$out"
}

@test "a nearly full volume gives ENOSPC and leaves the file's size and the free space as before (ext4-4k)" {
	enospc_case ext4-4k
}

@test "a nearly full volume gives ENOSPC and leaves the file's size and the free space as before (ext4-1k)" {
	enospc_case ext4-1k
}

@test "a nearly full volume gives ENOSPC and leaves the size, the free space and the reserve as before (xfs)" {
	local dir=$BED_DIR/xfs
	run -0 --separate-stderr alloc "$dir" "$dir/warm" 0 4096 --reserve $((16 * MiB)) --warm --refilled
	rm -f "$dir/warm"
	enospc_case xfs --reserve $((16 * MiB)) >"$BATS_TEST_TMPDIR/enospc.json"
	[[ $(grep '^{"error"' "$BATS_TEST_TMPDIR/enospc.json" | jq '.stats.reserveBytes') -eq $((16 * MiB)) ]]
	[[ $(stat -c %s "$dir/.fused/reserve") -eq $((16 * MiB)) ]]
}

@test "the reserve is hidden in .fused (0700) as a 0600 file; a .fused that is a symlink is refused" {
	local dir=$BED_DIR/xfs
	run -0 --separate-stderr alloc "$dir" "$dir/small" 0 4096 --reserve $((8 * MiB)) --warm
	[[ $(stat -c '%a %U %F' "$dir/.fused") == '700 root directory' ]]
	[[ $(stat -c '%a %U' "$dir/.fused/reserve") == '600 root' ]]
	mkdir -p "$dir/sub"
	ln -sfn "$BATS_TEST_TMPDIR" "$dir/sub/.fused"
	run -1 --separate-stderr alloc "$dir/sub" "$dir/sub/f" 0 4096
	assert_output --partial 'not a directory owned by the server'
	[[ ! -e $BATS_TEST_TMPDIR/reserve ]]
	rm -rf "$dir/sub" "$dir/small"
}

@test "xfs: the reserve never fills the volume's last free space, and --reserve 0 gives it back" {
	local dir=$BED_DIR/xfs avail
	run -0 --separate-stderr alloc "$dir" "$dir/small" 0 4096 --reserve $((16 * MiB)) --warm
	[[ -f $dir/.fused/reserve ]]
	run -0 --separate-stderr alloc "$dir" "$dir/small" 0 4096 --reserve 0
	[[ $(jq -r '.after.method' <<<"$output") == zero-fill ]]
	[[ ! -e $dir/.fused/reserve ]]
	# About 24 MiB left: a 16 MiB reserve may take only what leaves 16 MiB to everyone else.
	avail=$(stat -f -c '%a * %S' "$dir")
	fallocate -l $((avail - 24 * MiB)) "$dir/filler"
	run -0 --separate-stderr alloc "$dir" "$dir/small" 0 4096 --reserve $((16 * MiB)) --settle 1500
	[[ $(jq '.settled.reserveBytes' <<<"$output") -lt $((16 * MiB)) ]]
	[[ $(jq '.settled.reserveBytes' <<<"$output") -gt 0 ]]
	[[ $(stat -f -c '%a * %S' "$dir") -ge $((16 * MiB)) ]]
	rm -f "$dir/filler" "$dir/small"
}


@test "xfs: a reserve whose blocks are shared (a crash between clone and cut) is cut off before use" {
	local dir=$BED_DIR/xfs
	run -0 --separate-stderr alloc "$dir" "$dir/small" 0 4096 --reserve $((16 * MiB)) --warm --refilled
	cp --reflink=always "$dir/.fused/reserve" "$dir/sharer"
	rm -f "$dir/small"
	run -0 --separate-stderr alloc "$dir" "$dir/small" 0 $((8 * MiB)) --reserve $((16 * MiB))
	[[ $stderr == *"keeping 0 of $((16 * MiB)) bytes"* ]]
	run -0 check_written_zeros "$dir/small" "$(vol_dev xfs)" 0 $((8 * MiB))
	rm -f "$dir/small" "$dir/sharer"
}
