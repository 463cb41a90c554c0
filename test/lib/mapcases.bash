# Files with known shapes for the fusedmap suites, made on the server's mount of the bed's volume,
# and the checks that fusedmap's map equals filefrag / xfs_io fiemap for each of them.

MAPCASE_ODD_NAME=$'a b\nc\xe9.bin'

# mapcase_make CASE: create the case's file (once per bed) and set MAPCASE_FILE to its name in the volume.
mapcase_make() {
	local d=$BED_SRV_DIR i
	case $1 in
	contiguous) MAPCASE_FILE=contiguous.bin
		[[ -e $d/$MAPCASE_FILE ]] || dd if=/dev/urandom of="$d/$MAPCASE_FILE" bs=1M count=8 status=none ;;
	fragmented) MAPCASE_FILE=fragmented.bin
		# Interleave with a second file, each write synced, so the allocator cannot keep the file in one run.
		if [[ ! -e $d/$MAPCASE_FILE ]]; then
			for ((i = 0; i < 16; i++)); do
				dd if=/dev/urandom of="$d/$MAPCASE_FILE" bs=16k count=1 seek="$i" conv=notrunc,fsync status=none
				dd if=/dev/urandom of="$d/spacer.bin" bs=16k count=1 seek="$i" conv=notrunc,fsync status=none
			done
		fi ;;
	sparse) MAPCASE_FILE=sparse.bin
		# Leading hole, two data runs, a hole between, a trailing hole ending in a partial block.
		if [[ ! -e $d/$MAPCASE_FILE ]]; then
			truncate -s $((10 * 1048576 + 100)) "$d/$MAPCASE_FILE"
			dd if=/dev/urandom of="$d/$MAPCASE_FILE" bs=1M count=1 seek=2 conv=notrunc status=none
			dd if=/dev/urandom of="$d/$MAPCASE_FILE" bs=1M count=1 seek=6 conv=notrunc status=none
		fi ;;
	prealloc) MAPCASE_FILE=prealloc.bin
		if [[ ! -e $d/$MAPCASE_FILE ]]; then
			dd if=/dev/urandom of="$d/$MAPCASE_FILE" bs=1M count=1 conv=fsync status=none
			fallocate -o 1M -l 2M "$d/$MAPCASE_FILE"
			dd if=/dev/urandom of="$d/$MAPCASE_FILE" bs=1M count=1 seek=3 conv=notrunc,fsync status=none
		fi ;;
	beyond4g) MAPCASE_FILE=beyond4g.bin
		# Data past 4 GiB in the file, ending in a partial block, and placed past 4 GiB on the device:
		# fill the volume with preallocated fillers, punch 32 MiB out of them above 4.5 GiB on the device,
		# write the file into that gap, then drop the fillers.
		[[ ! -e $d/$MAPCASE_FILE ]] || return 0
		local free i hole
		fallocate -l $(($(stat -f -c '%f*%S' "$d") - 64 * 1048576)) "$d/filler0" || return 1
		for ((i = 1; i < 12; i++)); do
			free=$(($(stat -f -c '%f*%S' "$d") / 2))
			((free > 1048576)) && fallocate -l "$free" "$d/filler$i" 2>/dev/null || break
		done
		sync
		hole=$(python3 "$BED_ROOT/test/lib/extents.py" reference "$d/filler0" |
			jq '[.extents[] | select(.state == "ZERO" and .physical + .length >= 4831838208 + 33554432)
				| .logical + ([0, 4831838208 - .physical] | max)][0]')
		[[ $hole != null ]] || { rm -f "$d"/filler*; echo "no filler extent above 4.5 GiB" >&2; return 1; }
		fallocate -p -o "$hole" -l 32M "$d/filler0"
		dd if=/dev/urandom of="$d/$MAPCASE_FILE" bs=1M count=1 seek=4608 conv=fsync status=none
		head -c 777 /dev/urandom >>"$d/$MAPCASE_FILE"
		sync
		rm -f "$d"/filler* ;;
	empty) MAPCASE_FILE=empty.bin
		: >"$d/$MAPCASE_FILE" ;;
	oddname) MAPCASE_FILE=$MAPCASE_ODD_NAME
		[[ -e $d/$MAPCASE_FILE ]] || head -c 300000 /dev/urandom >"$d/$MAPCASE_FILE" ;;
	*) echo "unknown map case $1" >&2; return 1 ;;
	esac
	sync
}

# mapcase_ref CASE: print the reference map of the case's file (JSON).
mapcase_ref() { python3 "$BED_ROOT/test/lib/extents.py" reference "$BED_SRV_DIR/$MAPCASE_FILE"; }
