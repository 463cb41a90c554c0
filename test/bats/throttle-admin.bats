#!/usr/bin/env bats
# fusedthrottle and the throttle verbs on the two-node bed: set/show/clear, the admin role, limits kept across a
# server restart, bad rates, and GRANT's answers. (Pacing real copies is throttle.bats.)

load helpers

setup_file() {
	requires_root
	bed_init || return 1
	echo "$BED_DIR" >"$BATS_FILE_TMPDIR/bed_dir"
	bed_make_nodes && bed_make_volume ext4-4k 1G && bed_start_sshd && bed_mount_client &&
		bed_start_server --role adm=admin || return 1
	fuse_client >/dev/null || return 1
	BED_ADM_KEY=$(bed_node_key adm) || return 1
	export BED_ADM_KEY
}

teardown_file() { bed_teardown_file; }

setup() {
	# Each test starts with no limits (and the server the file started, or the one a test restarted).
	admin clear --all >/dev/null
}

# admin ARGS...: fusedthrottle as the admin node "adm", from the client's namespace.
admin() { bed_in_client "$FUSED_BIN/fusedthrottle" "$@" --server "$BED_SERVER" --key-file "$BED_ADM_KEY" --as adm; }

# as_cli ARGS...: fusedthrottle as the fused client node "cli" (role ro), server and key from its fuse.
as_cli() { bed_in_client "$FUSED_BIN/fusedthrottle" "$@"; }

# proto NODE REQUEST...: raw protocol as NODE.
proto() {
	local node=$1
	shift
	bed_in_client python3 "$FUSED_LIB/fusedproto.py" "$BED_SERVER" --secret-file "$BED_SECRET" --node "$node" "$@"
}

# row JSON NODE|VOLUME KIND: the show --json row of that node or volume.
row() { jq -c --arg n "$2" --arg k "$3" '.[] | select(.kind == $k and (if $k == "node" then .node else .volume end) == $n)' <<<"$1"; }

@test "fusedthrottle set, show --json and clear round trip on an admin node" {
	run -0 --separate-stderr admin set 50MiB/s --node cli
	assert_output 'node cli: rate 50 MiB/s'
	run -0 --separate-stderr admin set --iops 200 --node cli
	assert_output 'node cli: iops 200'
	run -0 --separate-stderr admin set 1.5G --volume vol
	assert_output 'volume vol: rate 1.4 GiB/s'
	run -0 --separate-stderr admin set 2M --node other
	run -0 --separate-stderr admin show --json
	json=$output
	assert_equal "$(row "$json" cli node | jq -c '[.limit, .iops]')" '[52428800,200]'
	assert_equal "$(row "$json" other node | jq -c '[.limit, .iops, .active]')" '[2000000,null,0]'
	assert_equal "$(row "$json" vol volume | jq -c '[.limit, .iops, .node]')" '[1500000000,null,null]'
	# The admin node itself is connected, so it is listed, unlimited.
	assert_equal "$(row "$json" adm node | jq -c '[.limit, .iops]')" '[null,null]'
	run -0 --separate-stderr admin show
	assert_line --index 0 --regexp '^NODE +VOLUME +LIMIT +IOPS +CURRENT +TOTAL +COPIES +ACTIVE$'
	assert_line --regexp '^cli +- +50 MiB/s +200 +0 B/s +0 B +0 +no$'
	assert_line --regexp '^- +vol +1\.4 GiB/s +- +0 B/s +0 B +- +0$'

	# A rate of 0 removes the rate and keeps the iops limit; clear removes the rest.
	run -0 --separate-stderr admin set 0 --node cli
	run -0 --separate-stderr admin show --json
	assert_equal "$(row "$output" cli node | jq -c '[.limit, .iops]')" '[null,200]'
	run -0 --separate-stderr admin clear --node other
	assert_output 'cleared node other'
	run -0 --separate-stderr admin show --json
	assert_equal "$(row "$output" other node)" ''
	run -0 --separate-stderr admin clear --volume vol
	run -0 --separate-stderr admin show --json
	assert_equal "$(row "$output" vol volume | jq -c .limit)" 'null'
	run -0 --separate-stderr admin clear --all
	run -0 --separate-stderr admin show --json
	assert_equal "$(jq -c '[.[] | select(.limit != null or .iops != null)] | length' <<<"$output")" '0'
	assert_equal "$(jq -c '.[] | keys' <<<"$output" | sort -u)" '["active","copies","current","currentOps","grants","iops","kind","limit","node","ops","total","volume"]'
}

@test "fusedthrottle show on a fused node finds the map server from its fuse, and shows the grants drawn" {
	run -0 --separate-stderr proto cli 'GRANT vol 1048576 1' 'GRANT vol 1048576 1'
	assert_line --index 0 'OK GRANT bytes=1048576 ops=1 next=0 limited=0'
	run -0 --separate-stderr as_cli show --json
	json=$output
	row "$json" cli node
	assert_equal "$(row "$json" cli node | jq -c '[.limit, .iops]')" '[null,null]'
	# Totals since the server started: at least these two grants (other tests of this file draw more).
	[[ $(row "$json" cli node | jq .total) -ge 2097152 ]]
	[[ $(row "$json" cli node | jq .grants) -ge 2 ]]
	[[ $(row "$json" vol volume | jq .total) -ge 2097152 ]]
	run -0 --separate-stderr as_cli show -o node,total -n
	assert_line --regexp '^cli +[0-9.]+ [KMG]?i?B$'
	# --watch: a JSON array a line, once a second, until interrupted (exit 0).
	run -0 --separate-stderr bed_in_client timeout --preserve-status -s INT 3.5 "$FUSED_BIN/fusedthrottle" show --watch --json
	((${#lines[@]} >= 2 && ${#lines[@]} <= 5))
	for line in "${lines[@]}"; do jq -e 'type == "array" and any(.[]; .volume == "vol")' <<<"$line" >/dev/null; done
}

@test "a node without the admin role is refused with exit 5 and a clear message, and nothing changes" {
	run -5 --separate-stderr as_cli set 10M --node cli
	assert_output ''
	assert_equal "$stderr" "fusedthrottle: map server $BED_SERVER: node cli may not change limits (its role is ro; admin needed)"
	run -5 --separate-stderr as_cli clear --all
	run -0 --separate-stderr proto cli 'LIMIT SET node=cli rate=1' 'LIMIT CLEAR all' PING
	assert_line --index 0 --regexp '^ERR ACCESS node cli may not change limits'
	assert_line --index 1 --regexp '^ERR ACCESS '
	assert_line --index 2 'OK PONG'
	run -0 --separate-stderr as_cli show --json
	assert_equal "$(jq -c '[.[] | select(.limit != null or .iops != null)] | length' <<<"$output")" '0'
	# And the admin's changes do go through (the refusal was the role, not the request).
	run -0 --separate-stderr proto adm 'LIMIT SET node=cli rate=1000000'
	assert_output 'OK LIMIT'
}

@test "--help prints usage on stdout and exits 0" {
	run -0 --separate-stderr "$FUSED_BIN/fusedthrottle" --help
	assert_line --index 0 --regexp '^Usage: fusedthrottle '
	assert_output --partial 'Exit status: 0 ok, 1 failure, 2 usage, 5 refused'
	assert_equal "$stderr" ''
	run -0 --separate-stderr "$FUSED_BIN/fusedthrottle" set --help
	assert_output --partial 'RATE: bytes per second:'
	run -0 --separate-stderr "$FUSED_BIN/fusedctl" serve --help
	assert_output --partial '--state-dir <DIR>'
}

@test "bad rates and targets are refused with exit 2 before anything reaches the server" {
	local before
	before=$(cat "$BED_SRV_STATE/limits.json")
	run -2 --separate-stderr admin set 12X --node cli
	[[ ${stderr_lines[0]} == "fusedthrottle: RATE: '12X': unknown unit 'X' (bytes per second: "* ]]
	assert_equal "${stderr_lines[1]}" "Try 'fusedthrottle --help' for more information."
	run -2 --separate-stderr admin set 100Mb --node cli
	assert_equal "${stderr_lines[0]}" "fusedthrottle: RATE: '100Mb': a lower-case b means bits; write B for bytes (or no unit)"
	run -2 --separate-stderr admin set fast --volume vol
	[[ ${stderr_lines[0]} == "fusedthrottle: RATE: 'fast': not a rate "* ]]
	run -2 --separate-stderr admin set 10M
	assert_equal "${stderr_lines[0]}" 'fusedthrottle: name exactly one of --node or --volume'
	run -2 --separate-stderr admin set 10M --node cli --volume vol
	run -2 --separate-stderr admin set --iops 10 --volume vol
	run -2 --separate-stderr admin set --node cli
	run -2 --separate-stderr admin clear
	run -2 --separate-stderr admin set 10M --node 'bad name'
	assert_equal "$(cat "$BED_SRV_STATE/limits.json")" "$before"
	# A volume the server does not serve: the server says so (exit 1).
	run -1 --separate-stderr admin set 10M --volume nosuch
	assert_equal "$stderr" "fusedthrottle: map server $BED_SERVER: no volume named nosuch (NOVOLUME)"
	# The raw verbs refuse junk with BADARG and the connection stays usable.
	run -0 --separate-stderr proto adm 'LIMIT SET node=cli rate=10M' 'LIMIT SET volume=vol iops=5' 'GRANT vol -1 1' 'GRANT nosuch 1 1' PING
	assert_line --index 0 --regexp '^ERR BADARG '
	assert_line --index 1 --regexp '^ERR BADARG '
	assert_line --index 2 --regexp '^ERR BADARG '
	assert_line --index 3 --regexp '^ERR NOVOLUME '
	assert_line --index 4 'OK PONG'
}

@test "GRANT answers at once: all that was asked when unlimited, a quarter second of the rate under a limit, then when to ask again" {
	run -0 --separate-stderr proto cli 'GRANT vol 104857600 25'
	assert_output 'OK GRANT bytes=104857600 ops=25 next=0 limited=0'
	run -0 --separate-stderr admin set 40MiB --node cli
	# 40 MiB/s: a burst is 10 MiB; the second request finds the bucket empty and is told to wait about 250 ms.
	run -0 --separate-stderr proto cli 'GRANT vol 104857600 25' 'GRANT vol 104857600 25' 'GRANT vol 0 0'
	assert_line --index 0 'OK GRANT bytes=10485760 ops=25 next=250 limited=1'
	assert_line --index 1 --regexp '^OK GRANT bytes=0 ops=0 next=(2[0-4][0-9]|250) limited=1$'
	assert_line --index 2 'OK GRANT bytes=0 ops=0 next=0 limited=1'
	# An iops limit: 40/s is 10 operations a burst, and the bytes are cut in proportion.
	run -0 --separate-stderr admin set --iops 40 --node cli
	run -0 --separate-stderr admin set 0 --node cli
	run -0 --separate-stderr proto cli 'GRANT vol 20971520 20'
	assert_output 'OK GRANT bytes=10485760 ops=10 next=250 limited=1'
	# A volume cap with one node active: it gets the whole cap (a burst of 100 MiB/s is 25 MiB).
	run -0 --separate-stderr admin clear --node cli
	run -0 --separate-stderr admin set 100MiB --volume vol
	run -0 --separate-stderr proto cli 'GRANT vol 104857600 1'
	assert_output 'OK GRANT bytes=26214400 ops=1 next=250 limited=1'
}

@test "LIMITS lists nodes and volumes in the documented shape" {
	run -0 --separate-stderr admin set 50MiB --node cli
	run -0 --separate-stderr admin set 100MiB --volume vol
	run -0 --separate-stderr proto cli 'GRANT vol 4096 1' LIMITS
	assert_line --index 0 'OK GRANT bytes=4096 ops=1 next=0 limited=1'
	assert_line --index 1 --regexp '^OK LIMITS count=[0-9]+ nodes=[0-9]+ volumes=1$'
	assert_line --regexp '^N node=cli rate=52428800 iops=0 current=[0-9]+ total=[0-9]+ current_ops=[0-9]+ ops=[0-9]+ grants=[0-9]+ active=1 copies=[1-9][0-9]* volume=vol$'
	assert_line --regexp '^V volume=vol rate=104857600 current=[0-9]+ total=[0-9]+ active=1$'
	assert_equal "${lines[-1]}" 'END'
	local count
	count=$(sed -n 's/^OK LIMITS count=\([0-9]*\) .*/\1/p' <<<"$output")
	assert_equal "$(grep -c '^[NV] ' <<<"$output")" "$count"
}

@test "limits survive a server restart" {
	run -0 --separate-stderr admin set 50MiB --node cli
	run -0 --separate-stderr admin set --iops 300 --node cli
	run -0 --separate-stderr admin set 100MiB --volume vol
	run -0 jq -c . "$BED_SRV_STATE/limits.json"
	assert_output '{"version":1,"nodes":{"cli":{"rate":52428800,"iops":300}},"volumes":{"vol":{"rate":104857600}}}'
	bed_stop_server
	if bed_alive "$BED_SERVER_PID"; then fail 'the map server did not stop'; fi
	bed_start_server --role adm=admin
	grep -q 'limits: .*/limits.json (1 node limit(s), 1 volume cap(s))' "$BED_DIR/server.log"
	run -0 --separate-stderr as_cli show --json
	assert_equal "$(row "$output" cli node | jq -c '[.limit, .iops, .total]')" '[52428800,300,0]'
	assert_equal "$(row "$output" vol volume | jq -c '.limit')" '104857600'
	# And they are enforced: the first grant is a quarter second of 50 MiB/s.
	run -0 --separate-stderr proto cli 'GRANT vol 104857600 1'
	assert_output 'OK GRANT bytes=13107200 ops=1 next=250 limited=1'
}

@test "a server whose limits file is corrupt refuses to start, naming the file" {
	local dir=$BED_DIR/corrupt-state
	mkdir -p "$dir"
	printf '{"version":1,"nodes":{"cli":{"rate":-5}}}\n' >"$dir/limits.json"
	run -1 --separate-stderr timeout 20 "$FUSED_BIN/fusedctl" serve --listen 127.0.0.1:7 --volume "vol=$BED_SRV_DIR" \
		--secret-file "$BED_SECRET" --node srv2 --state-dir "$dir"
	assert_equal "$stderr" "fusedctl: --state-dir $dir: $dir/limits.json: bad node limit \"cli\""
}
