# Two-node test bed: loop-device volumes, server/client network namespaces, sshd + sshfs, map server.
# Usable from bats (setup_file/teardown_file) and from demo scripts: source it, call bed_init, ..., bed_teardown.
# Everything made is recorded in $BED_DIR/undo.log (one "KIND VALUE..." per line) and undone in reverse
# order by bed_teardown, so a failure half-way leaves nothing behind and nothing of anyone else is touched.

BED_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BED_PORT=${BED_PORT:-7447}

bed_log() { printf 'bed: %s\n' "$*" >&2; }
bed_die() { bed_log "$*"; return 1; }

# bed_init [ID]: state dir, wrapper binaries, names. ID defaults to the caller's PID so beds never collide.
bed_init() {
	BED_ID=${1:-$$}
	BED_DIR=$(mktemp -d "${TMPDIR:-/tmp}/fused-bed.$BED_ID.XXXXXX") || return 1
	: >"$BED_DIR/undo.log"
	echo "dir $BED_DIR" >>"$BED_DIR/undo.log"
	BED_SRV_NS=fsrv-$BED_ID
	BED_CLI_NS=fcli-$BED_ID
	BED_SRV_ADDR=10.213.0.1
	BED_CLI_ADDR=10.213.0.2
	# The commands live in one place; tests call "$FUSED_BIN/fusedctl" etc. (also usable under nsenter).
	FUSED_BIN=$BED_DIR/bin
	mkdir -p "$FUSED_BIN" "$BED_DIR/client-state"
	local cmd
	for cmd in fusedctl fusedmap fusedcp fusedcat fusedthrottle; do
		printf '#!/bin/sh\nexec node %q "$@"\n' "$BED_ROOT/bin/$cmd.cjs" >"$FUSED_BIN/$cmd"
		chmod +x "$FUSED_BIN/$cmd"
	done
	export BED_ID BED_DIR BED_SRV_NS BED_CLI_NS BED_SRV_ADDR BED_CLI_ADDR FUSED_BIN BED_ROOT BED_PORT
	bed_save_env
}

# Record one thing to undo. Kinds: dir, pid, mount, fuse, loop, netns, dm (a device-mapper device, by name).
# Record a dm device after the loop devices under it: teardown goes newest first, so it is removed before them.
bed_record() { echo "$*" >>"$BED_DIR/undo.log"; }

# Write the exported bed variables so another shell (a demo step, a debugging session) can source them.
bed_save_env() {
	local v
	for v in ${!BED_@} FUSED_BIN; do printf 'export %s=%q\n' "$v" "${!v}"; done >"$BED_DIR/env"
}

# bed_make_image PATH FSTYPE [SIZE]: an image filled with the byte 0xa5, then a file system; prints nothing.
# FSTYPE: ext4-1k, ext4-4k, xfs, ext4-inline. Discards are off or mkfs would punch holes in the image.
# The pattern is why: a range a client wrongly reads from the device instead of as zeros (an unwritten extent,
# a hole) then shows 0xa5 bytes, not the zeros a sparse image would give by luck. O_DIRECT keeps the 6 GiB out
# of the page cache (3.5 s on disk here, against 10-20 s buffered or on tmpfs); buffered where refused.
bed_make_image() {
	local img=$1 fstype=$2 size=${3:-6G} bytes
	truncate -s "$size" "$img" && bytes=$(stat -c %s "$img") || return 1
	xfs_io -d -c "pwrite -q -S 0xa5 -b 8m 0 $bytes" "$img" 2>/dev/null ||
		xfs_io -c "pwrite -q -S 0xa5 -b 8m 0 $bytes" -c fsync "$img" || return 1
	case $fstype in
	ext4-1k) mkfs.ext4 -q -F -b 1024 -E nodiscard -L fused "$img" ;;
	ext4-4k) mkfs.ext4 -q -F -b 4096 -E nodiscard -L fused "$img" ;;
	ext4-inline) mkfs.ext4 -q -F -b 4096 -O inline_data -E nodiscard -L fused "$img" ;;
	xfs) mkfs.xfs -q -f -K -L fused "$img" ;;
	*) bed_die "unknown file system type '$fstype'" ;;
	esac
}

# bed_sectors_read DEV: sectors read from block device DEV since boot (field 3 of /sys/block/NAME/stat).
bed_sectors_read() {
	local name
	name=$(basename "$(readlink -f "$1")")
	awk '{print $3}' "/sys/block/$name/stat"
}

# bed_sectors_written DEV: sectors written to block device DEV since boot (field 7 of /sys/block/NAME/stat).
bed_sectors_written() {
	local name
	name=$(basename "$(readlink -f "$1")")
	awk '{print $7}' "/sys/block/$name/stat"
}

# bed_attach IMAGE: attach a loop device with direct I/O, record it, print its name.
bed_attach() {
	local img=$1 dev
	dev=$(losetup -f --show --direct-io=on "$img") || return 1
	bed_record loop "$dev" "$img"
	echo "$dev"
}

# bed_mount DEV DIR [mount args...]: mount and record.
bed_mount() {
	local dev=$1 dir=$2
	shift 2
	mkdir -p "$dir"
	mount "$@" "$dev" "$dir" || return 1
	bed_record mount "$dir"
}

# bed_make_volume FSTYPE [SIZE]: the shared volume. Device A is mounted for the server at $BED_SRV_DIR,
# device B ($BED_DEV_B) stays unmounted: it is the client's own path to the same disk.
bed_make_volume() {
	BED_FSTYPE=$1
	BED_IMG=$BED_DIR/volume-$BED_FSTYPE.img
	bed_make_image "$BED_IMG" "$BED_FSTYPE" "${2:-6G}" || return 1
	BED_DEV_A=$(bed_attach "$BED_IMG") || return 1
	BED_DEV_B=$(bed_attach "$BED_IMG") || return 1
	BED_SRV_DIR=$BED_DIR/server-volume
	bed_mount "$BED_DEV_A" "$BED_SRV_DIR" || return 1
	BED_UUID=$(blkid -p -s UUID -o value "$BED_DEV_B")
	BED_BLOCK_SIZE=$(stat -f -c %S "$BED_SRV_DIR")
	export BED_FSTYPE BED_IMG BED_DEV_A BED_DEV_B BED_SRV_DIR BED_UUID BED_BLOCK_SIZE
	bed_save_env
}

# bed_make_nodes [RATE]: server and client network namespaces joined by a veth pair, shaped with tbf like
# Ethernet (RATE defaults to 1gbit; "none" for no shaping). The veth ends are created inside the
# namespaces, so nothing appears in the host's namespace.
bed_make_nodes() {
	local rate=${1:-1gbit} ns
	for ns in "$BED_SRV_NS" "$BED_CLI_NS"; do
		ip netns add "$ns" || return 1
		bed_record netns "$ns"
		ip -n "$ns" link set lo up || return 1
	done
	ip link add "vs-$BED_ID" netns "$BED_SRV_NS" type veth peer name "vc-$BED_ID" netns "$BED_CLI_NS" || return 1
	ip -n "$BED_SRV_NS" addr add "$BED_SRV_ADDR/30" dev "vs-$BED_ID" &&
		ip -n "$BED_CLI_NS" addr add "$BED_CLI_ADDR/30" dev "vc-$BED_ID" &&
		ip -n "$BED_SRV_NS" link set "vs-$BED_ID" up &&
		ip -n "$BED_CLI_NS" link set "vc-$BED_ID" up || return 1
	if [[ $rate != none ]]; then
		bed_in_server tc qdisc add dev "vs-$BED_ID" root tbf rate "$rate" burst 256kb latency 20ms &&
			nsenter --net="/run/netns/$BED_CLI_NS" tc qdisc add dev "vc-$BED_ID" root tbf rate "$rate" burst 256kb latency 20ms || return 1
	fi
}

# bed_in_server CMD...: run CMD in the server's network namespace (host mount namespace, so mounts are shared).
bed_in_server() { nsenter --net="/run/netns/$BED_SRV_NS" "$@"; }

# bed_in_client CMD...: run CMD in the client's network namespace with the bed's fuse registry.
bed_in_client() { FUSED_STATE_DIR=$BED_DIR/client-state nsenter --net="/run/netns/$BED_CLI_NS" "$@"; }

# bed_wait_port NS HOST PORT [TRIES]: wait (bounded, 0.1 s steps) until a TCP port answers from namespace NS.
bed_wait_port() {
	local ns=$1 host=$2 port=$3 tries=${4:-100}
	while ((tries-- > 0)); do
		nsenter --net="/run/netns/$ns" nc -z -w 1 "$host" "$port" 2>/dev/null && return 0
		sleep 0.1
	done
	bed_die "nothing answers on $host:$port in $ns"
}

# Record a process with its start time, so teardown never kills a recycled PID.
bed_record_pid() {
	local start
	start=$(awk '{print $22}' "/proc/$1/stat" 2>/dev/null) || return 1
	bed_record pid "$1" "$start"
}

# bed_sshd_config FILE LISTEN HOST_KEY PID_FILE AUTHORIZED_KEYS: an sshd configuration for the bed: key logins
# only (root by key), no PAM, sftp served in-process.
bed_sshd_config() {
	cat >"$1" <<-CONF
		ListenAddress $2
		HostKey $3
		PidFile $4
		AuthorizedKeysFile $5
		PermitRootLogin prohibit-password
		PasswordAuthentication no
		KbdInteractiveAuthentication no
		UsePAM no
		StrictModes no
		Subsystem sftp internal-sftp
	CONF
}

# bed_start_sshd: an sshd in the server namespace with its own host key and a client key in the state dir.
bed_start_sshd() {
	local d=$BED_DIR/ssh
	mkdir -p "$d" && chmod 700 "$d"
	ssh-keygen -q -t ed25519 -N '' -f "$d/host_key" && ssh-keygen -q -t ed25519 -N '' -f "$d/client_key" || return 1
	cp "$d/client_key.pub" "$d/authorized_keys"
	bed_sshd_config "$d/sshd_config" "$BED_SRV_ADDR:22" "$d/host_key" "$d/sshd.pid" "$d/authorized_keys"
	# sshd needs its privilege-separation directory; it is a system path, created if absent and left.
	mkdir -p /run/sshd
	# nsenter execs the program (no subshell in between), so $! is sshd itself.
	nsenter --net="/run/netns/$BED_SRV_NS" /usr/sbin/sshd -D -e -f "$d/sshd_config" </dev/null >"$d/sshd.log" 2>&1 3>&- &
	BED_SSHD_PID=$!
	bed_record_pid "$BED_SSHD_PID" || bed_die "sshd exited at once: $(cat "$d/sshd.log")" || return 1
	export BED_SSHD_PID
	bed_wait_port "$BED_CLI_NS" "$BED_SRV_ADDR" 22
}

# bed_mount_client [REMOTE_DIR] [MOUNTPOINT]: sshfs (from the client namespace) of the server's directory.
# nsenter keeps the host mount namespace, so the FUSE mount is visible to every process on the machine.
# No attribute or directory caching: every open sees the server's attributes, as NFS's close-to-open does
# (with the kernel's default 1 s attr_timeout a file changed on the server keeps its old mtime through the mount
# for up to a second, and fused rightly refuses a map that does not match what the mount shows).
bed_mount_client() {
	local remote=${1:-$BED_SRV_DIR} mnt=${2:-$BED_DIR/client-volume}
	mkdir -p "$mnt"
	bed_in_client sshfs -o "IdentityFile=$BED_DIR/ssh/client_key,StrictHostKeyChecking=no,UserKnownHostsFile=/dev/null,LogLevel=ERROR" \
		-o dir_cache=no -o dcache_timeout=1 -o attr_timeout=0 "root@$BED_SRV_ADDR:$remote" "$mnt" || return 1
	bed_record fuse "$mnt"
	[[ -n ${2:-} ]] || { BED_CLI_DIR=$mnt; export BED_CLI_DIR; bed_save_env; }
}

# bed_node_key NODE [SECRET]: write NODE's key (derived from the master SECRET, default the bed's) to
# $BED_DIR/NODE.key, mode 0600, as the README tells people to; prints the file's path.
bed_node_key() {
	local node=$1 secret=${2:-$BED_DIR/secret} file=$BED_DIR/$1.key
	"$FUSED_BIN/fusedctl" key "$node" --secret-file "$secret" -o "$file" --force || return 1
	echo "$file"
}

# bed_start_server [extra serve args...]: the map server in the server namespace for volume "vol", with a
# master secret ($BED_SECRET), the client node "cli"'s key ($BED_KEY) and its state directory (throttle limits)
# under the bed ($BED_SRV_STATE; a restarted server finds them there).
bed_start_server() {
	[[ -f $BED_DIR/secret ]] || { (umask 077 && openssl rand -hex 32 >"$BED_DIR/secret") || return 1; }
	BED_SECRET=$BED_DIR/secret
	BED_KEY=$(bed_node_key cli) || return 1
	BED_SERVER=$BED_SRV_ADDR:$BED_PORT
	BED_SRV_STATE=$BED_DIR/server-state
	nsenter --net="/run/netns/$BED_SRV_NS" "$FUSED_BIN/fusedctl" serve --listen "$BED_SERVER" --volume "vol=$BED_SRV_DIR" \
		--secret-file "$BED_SECRET" --node srv --state-dir "$BED_SRV_STATE" "$@" </dev/null >>"$BED_DIR/server.log" 2>&1 3>&- &
	BED_SERVER_PID=$!
	bed_record_pid "$BED_SERVER_PID" || bed_die "map server exited at once: $(tail -3 "$BED_DIR/server.log")" || return 1
	export BED_SECRET BED_KEY BED_SERVER BED_SERVER_PID BED_SRV_STATE
	bed_save_env
	local tries=200
	# Bounded, and stops at once if the server exits (say, refusing its volume).
	until bed_in_client nc -z -w 1 "$BED_SRV_ADDR" "$BED_PORT" 2>/dev/null; do
		((tries-- > 0)) && bed_alive "$BED_SERVER_PID" ||
			bed_die "map server not answering: $(tail -3 "$BED_DIR/server.log")" || return 1
		sleep 0.1
	done
}

# bed_alive PID: the process exists and is not a zombie.
bed_alive() { [[ $(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) == [^Z] ]]; }

# bed_stop_server: SIGTERM the map server and wait (bounded) for it to exit.
bed_stop_server() { bed_kill_pid "$BED_SERVER_PID"; }

# bed_kill_pid PID [START]: TERM, wait up to 5 s, then KILL; only if the PID is still the process we started.
bed_kill_pid() {
	local pid=$1 start=${2:-} i
	[[ -n $start ]] || start=$(awk -v p="$pid" '$1 == "pid" && $2 == p {print $3}' "$BED_DIR/undo.log" | tail -1)
	[[ -r /proc/$pid/stat && $(awk '{print $22}' "/proc/$pid/stat" 2>/dev/null) == "$start" ]] || return 0
	kill -TERM "$pid" 2>/dev/null
	for ((i = 0; i < 50; i++)); do
		[[ -e /proc/$pid ]] && [[ $(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) != Z ]] || return 0
		sleep 0.1
	done
	kill -KILL "$pid" 2>/dev/null
	wait "$pid" 2>/dev/null || true
}

bed_unmount() {
	local dir=$1 kind=$2 i
	for ((i = 0; i < 20; i++)); do
		mountpoint -q "$dir" || return 0
		if [[ $kind == fuse ]]; then fusermount3 -u "$dir" 2>/dev/null || umount "$dir" 2>/dev/null; else umount "$dir" 2>/dev/null; fi
		mountpoint -q "$dir" || return 0
		sleep 0.25
	done
	bed_log "unmounting $dir lazily"
	umount -l "$dir"
}

# bed_dm_remove NAME: remove a device-mapper device of ours (retrying while it is busy), if it still exists.
bed_dm_remove() {
	local name=$1 i
	for ((i = 0; i < 20; i++)); do
		dmsetup info "$name" >/dev/null 2>&1 || return 0
		dmsetup remove "$name" 2>/dev/null && return 0
		sleep 0.25
	done
	bed_log "device-mapper device $name still busy"
	return 1
}

bed_detach() {
	local dev=$1 img=$2 i
	for ((i = 0; i < 20; i++)); do
		# Only the device still backed by our image: loop numbers get reused by others.
		[[ $(losetup -n -O BACK-FILE "$dev" 2>/dev/null) == "$img"* ]] || return 0
		losetup -d "$dev" 2>/dev/null && return 0
		sleep 0.25
	done
	bed_log "loop device $dev still busy; detaching lazily (autoclear)"
	losetup -d "$dev"
}

# bed_teardown: undo everything recorded, newest first, even after failures; safe to call twice.
bed_teardown() {
	[[ -n ${BED_DIR:-} && -f $BED_DIR/undo.log ]] || return 0
	local kind a b pid
	while read -r kind a b; do
		case $kind in
		pid) bed_kill_pid "$a" "$b" ;;
		fuse | mount) bed_unmount "$a" "$kind" ;;
		loop) bed_detach "$a" "$b" ;;
		dm) bed_dm_remove "$a" ;;
		netns)
			# Stragglers (sshfs's ssh, say) live only in our own namespace.
			for pid in $(ip netns pids "$a" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null; done
			ip netns del "$a" ;;
		dir) [[ $a == */fused-bed.* || $a == /dev/shm/fused-* ]] && rm -rf "$a" ;;
		esac
	done < <(tac "$BED_DIR/undo.log")
	unset BED_DIR
}

# --- Peer-to-peer scale-out bed: two volumes, two map servers, each node the server of one volume and a client
# of the other, and a third node that is a client of both. Node X is namespace fX-ID with its own registry
# ($BED_DIR/state-X); volume X lives on node X: X's loop device mounted at $BED_VOL_X_DIR, X's sshd and X's map
# server. Every other node Y gets its own unmounted loop device of X's image ($BED_DEV_Y_X, its direct path), an
# sshfs mount of X's volume ($BED_MNT_Y_X) and a key from X's master secret ($BED_KEY_Y_X). Nodes: A, B (peers)
# and C (client only). Links: A-B 10.214.1.0/30, A-C 10.214.2.0/30, B-C 10.214.3.0/30, each shaped like the
# two-node bed's. Uses bed_init's BED_DIR, wrappers and undo log; the two-node functions are not involved.

BED_PEERS=(A B C)

# bed_peer_ns X: node X's network namespace.
bed_peer_ns() { echo "f${1,,}-$BED_ID"; }

# bed_peer_addr X Y: node X's address on its link to node Y.
bed_peer_addr() {
	local net
	case $1$2 in AB | BA) net=1 ;; AC | CA) net=2 ;; BC | CB) net=3 ;; *) bed_die "no link between $1 and $2" || return 1 ;; esac
	# The end nearer the front of A, B, C is .1.
	if [[ $1 < $2 ]]; then echo "10.214.$net.1"; else echo "10.214.$net.2"; fi
}

# bed_peer_other X: the first node that is not X.
bed_peer_other() {
	local y
	for y in "${BED_PEERS[@]}"; do [[ $y == "$1" ]] || { echo "$y"; return; }; done
}

# bed_in_peer X CMD...: run CMD in node X's network namespace (host mount namespace) with X's fuse registry.
bed_in_peer() {
	local x=$1 ns
	ns=$(bed_peer_ns "$x")
	shift
	FUSED_STATE_DIR=$BED_DIR/state-$x nsenter --net="/run/netns/$ns" "$@"
}

# bed_make_peers [RATE]: the three nodes' namespaces and a veth pair between each two, shaped with tbf
# (RATE as bed_make_nodes: default 1gbit, "none" for none).
bed_make_peers() {
	local rate=${1:-1gbit} x y ns link
	for x in "${BED_PEERS[@]}"; do
		ns=$(bed_peer_ns "$x")
		ip netns add "$ns" || return 1
		bed_record netns "$ns"
		ip -n "$ns" link set lo up || return 1
		mkdir -p "$BED_DIR/state-$x"
	done
	for link in AB AC BC; do
		x=${link:0:1} y=${link:1:1}
		ip link add "v$x$y-$BED_ID" netns "$(bed_peer_ns "$x")" type veth peer name "v$y$x-$BED_ID" netns "$(bed_peer_ns "$y")" || return 1
		for ns in "$x$y" "$y$x"; do
			ip -n "$(bed_peer_ns "${ns:0:1}")" addr add "$(bed_peer_addr "${ns:0:1}" "${ns:1:1}")/30" dev "v$ns-$BED_ID" &&
				ip -n "$(bed_peer_ns "${ns:0:1}")" link set "v$ns-$BED_ID" up || return 1
			if [[ $rate != none ]]; then
				nsenter --net="/run/netns/$(bed_peer_ns "${ns:0:1}")" tc qdisc add dev "v$ns-$BED_ID" root tbf rate "$rate" burst 256kb latency 20ms || return 1
			fi
		done
	done
}

# bed_make_peer_volume X FSTYPE [SIZE]: volume X (an image of FSTYPE, default 2G) mounted on node X at
# $BED_VOL_X_DIR from $BED_VOL_X_DEV, and an unmounted loop device of the same image for each other node Y
# ($BED_DEV_Y_X). Sets BED_VOL_X_IMG, BED_VOL_X_UUID too.
bed_make_peer_volume() {
	local x=$1 fstype=$2 img dev y
	img=$BED_DIR/volume-$x-$fstype.img
	bed_make_image "$img" "$fstype" "${3:-2G}" || return 1
	dev=$(bed_attach "$img") || return 1
	printf -v "BED_VOL_${x}_IMG" %s "$img"
	printf -v "BED_VOL_${x}_DEV" %s "$dev"
	printf -v "BED_VOL_${x}_DIR" %s "$BED_DIR/vol-$x"
	printf -v "BED_VOL_${x}_UUID" %s "$(blkid -p -s UUID -o value "$dev")"
	bed_mount "$dev" "$BED_DIR/vol-$x" || return 1
	for y in "${BED_PEERS[@]}"; do
		[[ $y != "$x" ]] || continue
		dev=$(bed_attach "$img") || return 1
		printf -v "BED_DEV_${y}_${x}" %s "$dev"
		export "BED_DEV_${y}_${x}"
	done
	export "BED_VOL_${x}_IMG" "BED_VOL_${x}_DEV" "BED_VOL_${x}_DIR" "BED_VOL_${x}_UUID"
	bed_save_env
}

# bed_start_peer_sshd X: an sshd in node X's namespace (all its addresses), host key of its own; the bed's one
# client key ($BED_DIR/ssh/client_key, made once) may log in.
bed_start_peer_sshd() {
	local x=$1 d=$BED_DIR/ssh y pid
	mkdir -p "$d" && chmod 700 "$d"
	[[ -f $d/client_key ]] || { ssh-keygen -q -t ed25519 -N '' -f "$d/client_key" && cp "$d/client_key.pub" "$d/authorized_keys"; } || return 1
	ssh-keygen -q -t ed25519 -N '' -f "$d/host_key_$x" || return 1
	bed_sshd_config "$d/sshd_config_$x" 0.0.0.0:22 "$d/host_key_$x" "$d/sshd_$x.pid" "$d/authorized_keys"
	mkdir -p /run/sshd
	nsenter --net="/run/netns/$(bed_peer_ns "$x")" /usr/sbin/sshd -D -e -f "$d/sshd_config_$x" </dev/null >"$d/sshd_$x.log" 2>&1 3>&- &
	pid=$!
	bed_record_pid "$pid" || bed_die "sshd on node $x exited at once: $(cat "$d/sshd_$x.log")" || return 1
	y=$(bed_peer_other "$x")
	bed_wait_port "$(bed_peer_ns "$y")" "$(bed_peer_addr "$x" "$y")" 22
}

# bed_mount_peer Y X: node Y's sshfs mount of volume X (from node X's sshd) at $BED_MNT_Y_X, caching as
# bed_mount_client does.
bed_mount_peer() {
	local y=$1 x=$2 mnt=$BED_DIR/node-$1/$2 dir=BED_VOL_${2}_DIR
	mkdir -p "$mnt"
	bed_in_peer "$y" sshfs -o "IdentityFile=$BED_DIR/ssh/client_key,StrictHostKeyChecking=no,UserKnownHostsFile=/dev/null,LogLevel=ERROR" \
		-o dir_cache=no -o dcache_timeout=1 -o attr_timeout=0 "root@$(bed_peer_addr "$x" "$y"):${!dir}" "$mnt" || return 1
	bed_record fuse "$mnt"
	printf -v "BED_MNT_${y}_${x}" %s "$mnt"
	export "BED_MNT_${y}_${x}"
	bed_save_env
}

# bed_start_peer_server X [extra serve args...]: node X's map server (node name nX) for volume X, on all of X's
# addresses at $BED_PORT, master secret $BED_DIR/secret-X, every other node Y (node name nY) let write
# (--role nY=rw), its key at $BED_KEY_Y_X; state in $BED_DIR/server-state-X, log in $BED_DIR/server-X.log.
# Sets BED_SERVER_X_PID, and BED_SERVER_Y_X: X's HOST:PORT as node Y reaches it.
bed_start_peer_server() {
	local x=$1 secret=$BED_DIR/secret-$1 y roles=() pid tries=200 dir=BED_VOL_${1}_DIR
	shift
	[[ -f $secret ]] || { (umask 077 && openssl rand -hex 32 >"$secret") || return 1; }
	mkdir -p "$BED_DIR/keys"
	for y in "${BED_PEERS[@]}"; do
		[[ $y != "$x" ]] || continue
		roles+=(--role "n${y,,}=rw")
		"$FUSED_BIN/fusedctl" key "n${y,,}" --secret-file "$secret" -o "$BED_DIR/keys/$y-for-$x.key" --force || return 1
		printf -v "BED_KEY_${y}_${x}" %s "$BED_DIR/keys/$y-for-$x.key"
		printf -v "BED_SERVER_${y}_${x}" %s "$(bed_peer_addr "$x" "$y"):$BED_PORT"
		export "BED_KEY_${y}_${x}" "BED_SERVER_${y}_${x}"
	done
	nsenter --net="/run/netns/$(bed_peer_ns "$x")" "$FUSED_BIN/fusedctl" serve --listen "0.0.0.0:$BED_PORT" --volume "$x=${!dir}" \
		--secret-file "$secret" --node "n${x,,}" --state-dir "$BED_DIR/server-state-$x" "${roles[@]}" "$@" \
		</dev/null >>"$BED_DIR/server-$x.log" 2>&1 3>&- &
	pid=$!
	bed_record_pid "$pid" || bed_die "map server $x exited at once: $(tail -3 "$BED_DIR/server-$x.log")" || return 1
	printf -v "BED_SERVER_${x}_PID" %s "$pid"
	export "BED_SERVER_${x}_PID"
	bed_save_env
	# Reachable from another node (every node's link is up by now); bounded, and stops if it exits.
	y=$(bed_peer_other "$x")
	until nsenter --net="/run/netns/$(bed_peer_ns "$y")" nc -z -w 1 "$(bed_peer_addr "$x" "$y")" "$BED_PORT" 2>/dev/null; do
		((tries-- > 0)) && bed_alive "$pid" || bed_die "map server $x not answering: $(tail -3 "$BED_DIR/server-$x.log")" || return 1
		sleep 0.1
	done
}

# bed_fuse_peer Y X [extra fuse args]: node Y fuses its mount of volume X to X's map server, on its own device
# of X's image (named: every node's device of the image carries the UUID).
bed_fuse_peer() {
	local y=$1 x=$2 mnt=BED_MNT_${1}_${2} server=BED_SERVER_${1}_${2} key=BED_KEY_${1}_${2} dev=BED_DEV_${1}_${2}
	shift 2
	bed_in_peer "$y" "$FUSED_BIN/fusedctl" fuse "${!mnt}" --server "${!server}" --key-file "${!key}" --node "n${y,,}" --device "${!dev}" "$@"
}

# bed_make_scaleout FSTYPE_A FSTYPE_B [SIZE] [extra serve args...]: the whole peer bed: nodes, volume A (FSTYPE_A)
# on node A and volume B (FSTYPE_B) on node B, both sshds, every other node's mounts of each volume, both map
# servers; nothing fused yet.
bed_make_scaleout() {
	local fa=$1 fb=$2 size=${3:-2G} x y
	shift 3 || shift $#
	bed_make_peers &&
		bed_make_peer_volume A "$fa" "$size" &&
		bed_make_peer_volume B "$fb" "$size" || return 1
	for x in A B; do
		bed_start_peer_sshd "$x" || return 1
		for y in "${BED_PEERS[@]}"; do
			[[ $y == "$x" ]] || bed_mount_peer "$y" "$x" || return 1
		done
	done
	bed_start_peer_server A "$@" && bed_start_peer_server B "$@"
}

# bed_make_tree DIR FILES KIB: a tree of FILES files of KIB KiB of random bytes in 10 directories under DIR (the
# small-files benchmarks' shape).
bed_make_tree() {
	local d f
	for ((d = 0; d < 10; d++)); do
		mkdir -p "$1/d$d"
		for ((f = d; f < $2; f += 10)); do head -c "$(($3 * 1024))" /dev/urandom >"$1/d$d/f$f"; done
	done
	sync
}

# bed_tree_sums DIR: "sha256  ./relative/path" for every file under DIR, sorted by path.
bed_tree_sums() { (cd "$1" && find . -type f -print0 | sort -z | xargs -0 -r sha256sum); }

# bed_start_nfs [DIR]: a real NFSv3 server (nfs-ganesha, VFS FSAL) in the server namespace exporting DIR (default
# the server's volume) read-write without root squash, with its rpcbind (libnfs 4.0's nfs-cp finds the ports
# only through the portmapper). Both run in a private mount namespace (slave: the host's unmounts still reach it)
# with a tmpfs on /run, so this rpcbind's socket and ganesha's /run/ganesha are the bed's own and clash with no
# rpcbind on the host. Sets BED_NFS_URL (nfs://ADDR/DIR, for nfs-cp and nfs-cat from the client namespace).
# Needs the Debian packages nfs-ganesha, nfs-ganesha-vfs, rpcbind (and libnfs-utils for the client tools).
bed_start_nfs() {
	local dir=${1:-$BED_SRV_DIR} d=$BED_DIR/nfs tries=100
	mkdir -p "$d"
	cat >"$d/ganesha.conf" <<-CONF
		NFS_CORE_PARAM {
			Protocols = 3;
			NFS_Port = 2049;
			MNT_Port = 20048;
			Bind_addr = $BED_SRV_ADDR;
			Enable_NLM = false;
			Enable_RQUOTA = false;
		}
		NFS_KRB5 { Active_krb5 = false; }
		EXPORT {
			Export_Id = 1;
			Path = $dir;
			Pseudo = /vol;
			Access_Type = RW;
			Squash = No_Root_Squash;
			Protocols = 3;
			Transports = TCP;
			SecType = sys;
			FSAL { Name = VFS; }
		}
		LOG { Default_Log_Level = EVENT; }
	CONF
	cat >"$d/run.sh" <<-SH
		mount -t tmpfs -o mode=755 fused-bed-run /run || exit 1
		mkdir -p /run/ganesha /run/rpcbind
		rpcbind -f -w & echo \$! >$d/rpcbind.pid
		for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do [ -S /run/rpcbind.sock ] && break; sleep 0.1; done
		exec ganesha.nfsd -F -f $d/ganesha.conf -L $d/ganesha.log -p $d/ganesha.pid
	SH
	# nsenter and unshare exec (no fork), and run.sh execs ganesha: $! is ganesha itself.
	nsenter --net="/run/netns/$BED_SRV_NS" unshare -m --propagation slave sh "$d/run.sh" </dev/null >"$d/run.log" 2>&1 3>&- &
	BED_NFS_PID=$!
	bed_record_pid "$BED_NFS_PID" || bed_die "ganesha exited at once: $(cat "$d/run.log")" || return 1
	until [[ -s $d/rpcbind.pid ]] && bed_in_client rpcinfo -T tcp "$BED_SRV_ADDR" 100005 3 >/dev/null 2>&1; do
		((tries-- > 0)) && bed_alive "$BED_NFS_PID" ||
			bed_die "NFS server not answering: $(cat "$d/run.log"; tail -3 "$d/ganesha.log" 2>/dev/null)" || return 1
		sleep 0.1
	done
	bed_record_pid "$(cat "$d/rpcbind.pid")"
	BED_NFS_URL=nfs://$BED_SRV_ADDR$dir
	export BED_NFS_PID BED_NFS_URL
	bed_save_env
}

# bed_link_bytes: bytes that crossed the veth link so far, both directions (the client end's rx + tx).
bed_link_bytes() {
	ip -n "$BED_CLI_NS" -s -j link show dev "vc-$BED_ID" | jq '.[0].stats64.rx.bytes + .[0].stats64.tx.bytes'
}

# bed_block_port NS PORT: drop TCP to PORT arriving in namespace NS (nft; the rules go with the namespace).
bed_block_port() {
	nsenter --net="/run/netns/$1" nft -f - <<-NFT
		table inet fused_block {
			chain input {
				type filter hook input priority 0; policy accept;
				tcp dport $2 drop
			}
		}
	NFT
}
