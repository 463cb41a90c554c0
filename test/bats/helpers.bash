# Shared bats helpers: root check, a logging run wrapper, the bed and the map cases.

bats_require_minimum_version 1.5.0
load '../../node_modules/bats-support/load'
load '../../node_modules/bats-assert/load'
source "$BATS_TEST_DIRNAME/../lib/bed.bash"
source "$BATS_TEST_DIRNAME/../lib/mapcases.bash"

FUSED_LIB=$BATS_TEST_DIRNAME/../lib

requires_root() {
	[[ $EUID -eq 0 ]] || skip "needs root (loop devices, namespaces, mounts)"
}

# bats' own run, kept under another name so ours can log around it.
eval "bats_run_orig() $(declare -f run | tail -n +2)"

# run [bats run options] CMD...: like bats' run; on a non-zero status the command, status and output are
# printed, which bats shows only when the test fails.
run() {
	local rc=0
	bats_run_orig "$@" || rc=$?
	if [[ $status -ne 0 || $rc -ne 0 ]]; then
		printf '# run: %s\n# status: %s\n' "$BATS_RUN_COMMAND" "$status"
		[[ -z ${output:-} ]] || printf '# output: %s\n' "${output:0:2000}"
		[[ -z ${stderr:-} ]] || printf '# stderr: %s\n' "${stderr:0:2000}"
	fi
	return "$rc"
}

# bed_setup_file FSTYPE [SIZE] [--no-server]: a bed for one .bats file: nodes, a volume of FSTYPE (6G unless SIZE:
# the images are filled with a pattern, so smaller is faster), sshd, the client's sshfs mount, the map server
# (unless --no-server: the file starts its own).
bed_setup_file() {
	requires_root
	bed_init || return 1
	echo "$BED_DIR" >"$BATS_FILE_TMPDIR/bed_dir"
	bed_make_nodes &&
		bed_make_volume "$1" "${2:-6G}" &&
		bed_start_sshd &&
		bed_mount_client || return 1
	[[ ${3:-} == --no-server ]] || bed_start_server
}

bed_teardown_file() {
	[[ -z ${BED_DIR:-} && -f $BATS_FILE_TMPDIR/bed_dir ]] && BED_DIR=$(cat "$BATS_FILE_TMPDIR/bed_dir")
	bed_teardown
}

# fuse_client [MOUNTPOINT] [extra fuse args]: fuse the client's mount of the volume to the map server.
fuse_client() {
	local mnt=${1:-$BED_CLI_DIR}
	shift || true
	bed_in_client "$FUSED_BIN/fusedctl" fuse "$mnt" --server "$BED_SERVER" --key-file "$BED_KEY" --node cli "$@"
}

# fused_status_json: the client's fuses, as JSON.
fused_status_json() { bed_in_client "$FUSED_BIN/fusedctl" status --json; }

# clone_volume NAME MOUNTPOINT: a copy of the volume's image attached as another device (same UUID, bytes of
# its own, so changing them never touches the mounted volume), and another client mount of the server's
# volume at MOUNTPOINT. Sets CLONE_DEV.
clone_volume() {
	local copy=$BED_DIR/$1.img
	sync
	cp --sparse=always "$BED_IMG" "$copy"
	CLONE_DEV=$(bed_attach "$copy")
	bed_mount_client "$BED_SRV_DIR" "$2"
}
