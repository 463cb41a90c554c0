#!/usr/bin/env bats
# fusedctl guard/unguard (a udev rule udevadm applies, the fstab check), the fuse warning and status column, and
# fusedctl doctor on the two-node bed: all ok when healthy, the failing check named when not.

load helpers

setup_file() {
	bed_setup_file ext4-4k 256M
	mkdir -p "$BED_DIR/rules"
	: >"$BED_DIR/fstab"
}

teardown_file() { bed_teardown_file; }

# Every command here reads and writes guard rules in the bed, never in /etc/udev/rules.d.
setup() { export FUSED_UDEV_RULES_DIR=$BED_DIR/rules; }

rule_file() { echo "$BED_DIR/rules/61-fused-guard-$BED_UUID.rules"; }

# udev_test DEV [RULES_DIR]: `udevadm test` of an add event for DEV with RULES_DIR (the bed's) in place of
# /etc/udev/rules.d. It runs in a mount namespace of its own, with /run and /dev overlaid, because udevadm test
# writes its database and the device's /dev/disk links: none of that may reach the machine.
udev_test() {
	local name scratch
	name=$(basename "$(readlink -f "$1")")
	scratch=$(mktemp -d "$BED_DIR/udev.XXXXXX")
	unshare -m sh -ec '
		mount -t tmpfs tmpfs "$2" && mkdir "$2/up" "$2/work"
		mount -t overlay overlay -o "lowerdir=/dev,upperdir=$2/up,workdir=$2/work" /dev
		mount -t tmpfs tmpfs /run
		mount --bind "$1" /etc/udev/rules.d
		udevadm test --action=add "/sys/class/block/$3" 2>&1' sh "${2:-$BED_DIR/rules}" "$scratch" "$name"
}

@test "guard writes a udev rule that udevadm test applies to the device (UDISKS_IGNORE, UDISKS_AUTO, SYSTEMD_READY)" {
	command -v udevadm >/dev/null || skip "no udevadm"
	# Without the rule the device has none of the keys: the assertions below can fail.
	run -0 udev_test "$BED_DEV_B"
	assert_output --partial "ID_FS_UUID=$BED_UUID"
	refute_output --partial 'UDISKS_IGNORE=1'
	run -0 --separate-stderr "$FUSED_BIN/fusedctl" guard "$BED_DEV_B" --rules-dir "$BED_DIR/rules" --fstab "$BED_DIR/fstab"
	assert_equal "$stderr" ''
	assert_output --partial "guarded volume $BED_UUID (ext4) on $BED_DEV_B: $(rule_file)"
	run -0 udev_test "$BED_DEV_B"
	assert_output --partial "Reading rules file: /etc/udev/rules.d/$(basename "$(rule_file)")"
	refute_output --regexp "61-fused-guard.*(Invalid|invalid|error|Error)"
	assert_line 'UDISKS_IGNORE=1'
	assert_line 'UDISKS_AUTO=0'
	assert_line 'SYSTEMD_READY=0'
	# The device's own line matches it too (the loop device's backing file), without the volume UUID's line.
	mkdir -p "$BED_DIR/rules-id"
	grep -v 'ID_FS_UUID' "$(rule_file)" >"$BED_DIR/rules-id/61-id.rules"
	run -0 grep -c '^SUBSYSTEM' "$BED_DIR/rules-id/61-id.rules"
	assert_output 1
	run -0 udev_test "$BED_DEV_B" "$BED_DIR/rules-id"
	assert_line 'UDISKS_IGNORE=1'
	run -0 jq -r --arg d "$BED_DEV_B" '.devices[] | select(.path == $d) | .identity' <<<"$(sed -n 's/^# fused-guard //p' "$(rule_file)")"
	assert_output "loop:$BED_IMG"
}

@test "guard warns about an fstab line that mounts the volume, and --strict refuses it (exit 5)" {
	printf '# fstab\nUUID=%s /srv/media ext4 defaults 0 2\nUUID=0000-1111 / ext4 defaults 0 1\n' "${BED_UUID^^}" >"$BED_DIR/fstab.bad"
	run -0 --separate-stderr "$FUSED_BIN/fusedctl" guard "$BED_DEV_B" --fstab "$BED_DIR/fstab.bad"
	assert_equal "${#stderr_lines[@]}" 1
	assert_regex "$stderr" "^fusedctl: $BED_DIR/fstab.bad:2: UUID=${BED_UUID^^} would mount the volume at /srv/media"
	run -5 --separate-stderr "$FUSED_BIN/fusedctl" guard "$BED_DEV_B" --fstab "$BED_DIR/fstab.bad" --strict --json
	assert_regex "$stderr" "fstab.bad:2: "
	run -0 jq -c '[.threats[] | [.where, .mountpoint, .noauto]]' <<<"$output"
	assert_output "[[\"$BED_DIR/fstab.bad:2\",\"/srv/media\",false]]"
	# The rule stays: refusing is about the node's setup, the rule can only help.
	assert [ -f "$(rule_file)" ]
}

@test "fuse warns (one line) when the volume has no guard and not when it has one; status shows GUARD" {
	run -0 "$FUSED_BIN/fusedctl" unguard "$BED_UUID"
	run -0 --separate-stderr fuse_client
	assert_equal "${#stderr_lines[@]}" 1
	assert_regex "$stderr" "^fusedctl: $BED_DEV_B: no mount guard: .*fusedctl guard $BED_DEV_B"
	run -0 --separate-stderr fused_status_json
	run -0 jq -c '[.[].guarded]' <<<"$output"
	assert_output '[false]'
	run -0 "$FUSED_BIN/fusedctl" guard "$BED_DEV_B" --fstab "$BED_DIR/fstab"
	run -0 --separate-stderr fuse_client
	assert_equal "$stderr" ''
	run -0 --separate-stderr fused_status_json
	run -0 jq -c '[.[].guarded]' <<<"$output"
	assert_output '[true]'
	run -0 --separate-stderr bed_in_client "$FUSED_BIN/fusedctl" status -o mountpoint,guarded
	assert_line --index 0 --regexp '^MOUNTPOINT +GUARD$'
	assert_line --index 1 --regexp "^$BED_CLI_DIR +yes$"
}

@test "doctor --json: every check is ok on a healthy, guarded fuse (exit 0)" {
	run -0 --separate-stderr bed_in_client "$FUSED_BIN/fusedctl" doctor --json --fstab "$BED_DIR/fstab"
	run -0 jq -r '.[] | select(.status != "ok") | "\(.check) \(.status) \(.detail)"' <<<"$output"
	assert_output ''
	run -0 jq -c --arg m "$BED_CLI_DIR" '[.[] | select(.subject == $m) | .check]' <<<"$(bed_in_client "$FUSED_BIN/fusedctl" doctor --json --fstab "$BED_DIR/fstab")"
	assert_output '["device","o-direct","key","server","proof","clock","guard","fstab"]'
	run -0 jq -c '[.[] | select(.subject == "kernel") | .check]' <<<"$(bed_in_client "$FUSED_BIN/fusedctl" doctor --json --fstab "$BED_DIR/fstab")"
	assert_output '["fiemap","lease","openat2","lease-break-time"]'
	run -0 --separate-stderr bed_in_client "$FUSED_BIN/fusedctl" doctor --fstab "$BED_DIR/fstab"
	assert_line --index 0 --regexp '^CHECK +SUBJECT +STATUS +DETAIL$'
	assert_line --regexp "^proof +$BED_CLI_DIR +ok +"
}

@test "doctor: no guard and an fstab line only warn (exit 4); an fstab line that mounts at boot fails (exit 1)" {
	run -0 "$FUSED_BIN/fusedctl" unguard "$BED_DEV_B"
	assert [ ! -e "$(rule_file)" ]
	run -1 --separate-stderr "$FUSED_BIN/fusedctl" unguard "$BED_DEV_B"
	assert_regex "$stderr" "^fusedctl: $BED_DEV_B: not guarded"
	run -4 --separate-stderr bed_in_client "$FUSED_BIN/fusedctl" doctor --json --fstab "$BED_DIR/fstab"
	run -0 jq -r '.[] | select(.status != "ok") | "\(.check) \(.status)"' <<<"$output"
	assert_output 'guard warn'
	run -1 --separate-stderr bed_in_client "$FUSED_BIN/fusedctl" doctor --json --fstab "$BED_DIR/fstab.bad"
	run -0 jq -r '.[] | select(.check == "fstab") | "\(.status) \(.detail)"' <<<"$output"
	assert_output --regexp "^fail $BED_DIR/fstab.bad:2: UUID="
	run -0 "$FUSED_BIN/fusedctl" guard "$BED_DEV_B" --fstab "$BED_DIR/fstab"
}

@test "doctor: a key file readable by others fails the key check (exit 1)" {
	chmod 0644 "$BED_KEY"
	run -1 --separate-stderr bed_in_client "$FUSED_BIN/fusedctl" doctor --json --fstab "$BED_DIR/fstab"
	chmod 0600 "$BED_KEY"
	run -0 jq -r '.[] | select(.status != "ok") | "\(.check) \(.status) \(.detail)"' <<<"$output"
	assert_line --index 0 --regexp '^key fail .*mode 0644 lets group or others at it'
	assert_line --index 1 'server skip no usable key'
	assert_equal "${#lines[@]}" 4 # and proof, clock: skipped
}

@test "doctor: with the map server stopped the server check fails (exit 1), the device checks still pass" {
	bed_stop_server
	run -1 --separate-stderr bed_in_client "$FUSED_BIN/fusedctl" doctor --json --fstab "$BED_DIR/fstab" --timeout 2
	run -0 jq -r --arg m "$BED_CLI_DIR" '.[] | select(.subject == $m) | "\(.check) \(.status)"' <<<"$output"
	assert_output "$(printf '%s\n' 'device ok' 'o-direct ok' 'key ok' 'server fail' 'proof skip' 'clock skip' 'guard ok' 'fstab ok')"
	run -0 jq -r '.[] | select(.check == "server") | .detail' <<<"$(bed_in_client "$FUSED_BIN/fusedctl" doctor --json --fstab "$BED_DIR/fstab")"
	assert_output --partial "$BED_SERVER"
}
