#!/usr/bin/env bats
# fusedcat and fusedcp on ext4-4k: every shape of file reads back byte for byte (sha256), over the path it says.

FSTYPE=ext4-4k
load read-suite

@test "fusedcat of a 640 MiB file into a pipe tries a deeper read depth and says which it kept; into a file it does not (ext4-4k)" {
	dd if=/dev/urandom of="$BED_SRV_DIR/deep.bin" bs=4M count=160 conv=fsync status=none
	want=$(rc_sha <"$BED_SRV_DIR/deep.bin")
	# Into a pipe: the trial runs (depth.ts) and -v tells its outcome, whichever it is on this machine.
	got=$(rc_cat_sha -v "$BED_CLI_DIR/deep.bin" 2>"$BATS_TEST_TMPDIR/err")
	assert_equal "$got" "$want"
	run cat "$BATS_TEST_TMPDIR/err"
	assert_output --regexp "^fusedcat: .*deep\.bin: direct; depth [0-9]+ \((the CPUs were [0-9]+ % busy at depth 8|the destination was the slower side|depth [0-9]+ read [0-9]+\.[0-9]{2}x depth 8|no deeper depth to try)"
	# Into a file: no trial (the destination's disk would compete with the deeper reads).
	bed_in_client "$FUSED_BIN/fusedcat" -v "$BED_CLI_DIR/deep.bin" >"$BATS_TEST_TMPDIR/out" 2>"$BATS_TEST_TMPDIR/err"
	assert_equal "$(rc_sha <"$BATS_TEST_TMPDIR/out")" "$want"
	run cat "$BATS_TEST_TMPDIR/err"
	# (-v may add the pacing's totals when the first grant took 10 ms or more.)
	assert_output --regexp "^fusedcat: .*deep\.bin: direct($|; throttle)"
	refute_output --regexp "; depth [0-9]"
	rm -f "$BED_SRV_DIR/deep.bin" "$BATS_TEST_TMPDIR/out"
}
