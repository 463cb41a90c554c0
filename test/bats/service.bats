#!/usr/bin/env bats
# The map server as a service (ext4-4k bed, one server for the file): fusedctl serve --config, SIGHUP reloads that
# keep sessions (and a running copy) alive, refused reloads that keep the old configuration, JSON logs, the
# Prometheus endpoint, and the systemd unit of the package.

load helpers

SVC_METRICS_PORT=9447
MiB=1048576

setup_file() {
	bed_setup_file ext4-4k 256M --no-server || return 1
	SVC_CONF=$BED_DIR/fused.conf
	export SVC_CONF
	mkdir -p "$BED_SRV_DIR/sub2"
	svc_conf >"$SVC_CONF"
	svc_start &&
		fuse_client >/dev/null
}

teardown_file() { bed_teardown_file; }

# svc_conf [LINES...]: the bed's configuration: the server's settings (LINES go among them), volume vol, node cli rw.
svc_conf() {
	cat <<-CONF
		# fused.conf for the service tests
		listen = $BED_SRV_ADDR:$BED_PORT
		node = srv
		secret-file = $BED_DIR/secret
		state-dir = $BED_DIR/server-state
		log-format = json
		metrics = $BED_SRV_ADDR:$SVC_METRICS_PORT
	CONF
	local l
	for l in "$@"; do echo "$l"; done
	cat <<-CONF

		[volume vol]
		path = $BED_SRV_DIR

		[node cli]
		role = rw
	CONF
}

# svc_start: fusedctl serve --config alone (no other option) in the server namespace, like the unit starts it.
svc_start() {
	(umask 077 && openssl rand -hex 32 >"$BED_DIR/secret") || return 1
	BED_SECRET=$BED_DIR/secret
	BED_KEY=$(bed_node_key cli) || return 1
	BED_SERVER=$BED_SRV_ADDR:$BED_PORT
	nsenter --net="/run/netns/$BED_SRV_NS" "$FUSED_BIN/fusedctl" serve --config "$SVC_CONF" \
		</dev/null >>"$BED_DIR/server.log" 2>&1 3>&- &
	BED_SERVER_PID=$!
	bed_record_pid "$BED_SERVER_PID" || bed_die "map server exited at once: $(tail -3 "$BED_DIR/server.log")" || return 1
	export BED_SECRET BED_KEY BED_SERVER BED_SERVER_PID
	bed_save_env
	bed_wait_port "$BED_CLI_NS" "$BED_SRV_ADDR" "$BED_PORT" && bed_wait_port "$BED_CLI_NS" "$BED_SRV_ADDR" "$SVC_METRICS_PORT"
}

# svc_events FILTER: the server log's JSON lines (every line must be one), as compact objects, that jq FILTER selects.
svc_events() { jq -cR "fromjson | select($1)" "$BED_DIR/server.log"; }

# svc_reload: SIGHUP the server and wait (bounded) for the reload line that is not 'ignored'; prints its object.
svc_reload() {
	local before tries=100
	before=$(svc_events '.event == "reload" and .result != "ignored"' | wc -l)
	kill -HUP "$BED_SERVER_PID"
	while (($(svc_events '.event == "reload" and .result != "ignored"' | wc -l) == before)); do
		((tries-- > 0)) || { echo "no reload line after SIGHUP" >&2; return 1; }
		sleep 0.1
	done
	svc_events '.event == "reload" and .result != "ignored"' | tail -1
}

# scrape: the metrics endpoint, from the client's namespace (with Node's fetch, as a Prometheus would).
scrape() {
	bed_in_client node -e 'fetch(process.argv[1]).then(async (r) => { if (!r.ok) process.exit(1); process.stdout.write(await r.text()); }, () => process.exit(1))' \
		"http://$BED_SRV_ADDR:$SVC_METRICS_PORT/metrics"
}

# metric_sum TEXT NAME: the sum of NAME's samples (all labels) in Prometheus TEXT.
metric_sum() { awk -v n="$2" '$1 == n || index($1, n "{") == 1 { s += $NF } END { print s + 0 }' <<<"$1"; }

proto() { bed_in_client python3 "$FUSED_LIB/fusedproto.py" "$@"; }

@test "a bad configuration names FILE:LINE and the reason, exits 2, and starts nothing" {
	local bad=$BATS_TEST_TMPDIR/bad.conf
	svc_conf 'lease-time = soon' | sed "s/:$BED_PORT/:7999/" >"$bad"
	run -2 --separate-stderr bed_in_server "$FUSED_BIN/fusedctl" serve --config "$bad"
	assert_equal "$stderr" "fusedctl: $bad:8: lease-time: expected a whole number, got 'soon'"
	assert_equal "$output" ""
	run -1 bed_in_client nc -z -w 1 "$BED_SRV_ADDR" 7999
	printf 'listen = 127.0.0.1:7999\nlisten_addr = x\n' >"$bad"
	run -2 --separate-stderr bed_in_server "$FUSED_BIN/fusedctl" serve --config "$bad"
	assert_equal "$stderr" "fusedctl: $bad:2: expected 'key = value', got 'listen_addr = x'"
	# A volume that cannot be served is named by its line too.
	svc_conf | sed "s/:$BED_PORT/:7999/; s|^path = .*|path = /proc|" >"$bad"
	run -1 --separate-stderr bed_in_server "$FUSED_BIN/fusedctl" serve --config "$bad"
	assert_regex "${stderr_lines[0]}" "^fusedctl: $bad:10: volume vol: /proc: cannot serve"
}

@test "serve --config logs JSON lines with the fixed fields; a wrong key's authentication failure is one of them" {
	local wrong=$BATS_TEST_TMPDIR/other-secret
	(umask 077 && openssl rand -hex 32 >"$wrong")
	run -0 --separate-stderr proto "$BED_SERVER" --secret-file "$wrong" --node intruder PING
	local tries=50
	until [[ -n $(svc_events '.event == "authfail"') ]]; do ((tries-- > 0)) || fail "no authfail line"; sleep 0.1; done
	# Every line is one JSON object with the fixed fields.
	local lines objects
	lines=$(wc -l <"$BED_DIR/server.log")
	objects=$(svc_events '(.time | test("^\\d{4}-\\d\\d-\\d\\dT")) and (.level | IN("info", "warn", "error")) and (.event | type == "string")
		and has("node") and has("volume") and has("peer") and (.msg | type == "string")' | wc -l)
	assert_equal "$objects" "$lines"
	run -0 svc_events '.event == "authfail"'
	assert_equal "$(jq -c '[.level, .node, (.peer | startswith("'"$BED_CLI_ADDR"':"))]' <<<"$output")" '["warn","intruder",true]'
	# The server's start: each volume, and the address it listens on.
	run -0 svc_events '.event == "listening"'
	assert_equal "$(jq -r .address <<<"$output")" "$BED_SERVER"
	run -0 svc_events '.event == "volume"'
	assert_equal "$(jq -r .volume <<<"$output")" vol
}

@test "the metrics endpoint: fused_maps_total rises after a fusedmap, the map latency histogram has its buckets" {
	local before after
	head -c $((4 * MiB)) /dev/urandom >"$BED_SRV_DIR/m.bin"
	sync
	before=$(scrape) || fail "no metrics"
	run -0 bed_in_client "$FUSED_BIN/fusedmap" "$BED_CLI_DIR/m.bin"
	(umask 077 && openssl rand -hex 32 >"$BATS_TEST_TMPDIR/other-secret")
	run -0 --separate-stderr proto "$BED_SERVER" --secret-file "$BATS_TEST_TMPDIR/other-secret" --node intruder PING
	after=$(scrape)
	(($(metric_sum "$after" fused_maps_total) > $(metric_sum "$before" fused_maps_total))) || fail "fused_maps_total did not rise"
	grep -q '^fused_maps_total{volume="vol",mode="read",path="direct"} [1-9]' <<<"$after" || fail "no direct read map counted"
	# Buckets (cumulative, +Inf last) with the count and sum.
	run -0 grep -c '^fused_map_duration_seconds_bucket{le="[0-9.e+-]*",mode="read"} ' <<<"$after"
	((output >= 10)) || fail "only $output buckets"
	grep -q '^fused_map_duration_seconds_bucket{le="+Inf",mode="read"} [1-9]' <<<"$after" || fail "no +Inf bucket"
	grep -q '^fused_map_duration_seconds_count{mode="read"} [1-9]' <<<"$after" || fail "no count"
	for m in fused_leases_held fused_connections fused_connections_total fused_recalls_total fused_revocations_total fused_grants_total fused_granted_bytes_total; do
		grep -q "^# TYPE $m " <<<"$after" || fail "no $m"
	done
	assert_equal "$(metric_sum "$after" fused_auth_failures_total)" "$(($(metric_sum "$before" fused_auth_failures_total) + 1))"
	rm -f "$BED_SRV_DIR/m.bin"
}

@test "a throttled direct copy runs across a SIGHUP that changes limits, roles and volumes: same sha256, one session" {
	local d=$BATS_TEST_TMPDIR from pid reload
	head -c $((48 * MiB)) /dev/urandom >"$BED_SRV_DIR/big.bin"
	sync
	from=$(($(wc -l <"$BED_DIR/server.log") + 1))
	# 48 MiB at 16 MiB/s: 3 s; the reload comes a second in.
	bed_in_client "$FUSED_BIN/fusedcp" --json --limit 16MiB "$BED_CLI_DIR/big.bin" "$d/" >"$d/cp.json" 2>"$d/cp.err" &
	pid=$!
	sleep 1
	svc_conf 'max-leases = 64' 'idle-timeout = 120' 'max-connections = 32' >"$SVC_CONF"
	sed -i "s/^role = rw/role = ro/; s/^listen = .*/listen = $BED_SRV_ADDR:7999/" "$SVC_CONF"
	printf '\n[volume vol2]\npath = %s/sub2\n' "$BED_SRV_DIR" >>"$SVC_CONF"
	reload=$(svc_reload) || fail "no reload"
	kill -0 "$pid" 2>/dev/null || fail "the copy was over before the reload: not a test of a reload"
	wait "$pid" || fail "fusedcp failed: $(cat "$d/cp.err")"
	assert_equal "$(jq -c '.[0] | [.status, .path, .bytesDirect]' "$d/cp.json")" "[\"copied\",\"direct\",$((48 * MiB))]"
	assert_equal "$(sha256sum <"$d/big.bin")" "$(sha256sum <"$BED_SRV_DIR/big.bin")"
	# One session for the whole copy: authenticated once, never refused, and no other connection of node cli.
	run -0 bash -c "tail -n +$from '$BED_DIR/server.log' | jq -cR 'fromjson | select(.node == \"cli\" and (.event == \"auth\" or .event == \"refused\"))' | jq -r .event"
	assert_output auth
	assert_equal "$(jq -r .result <<<"$reload")" ok
	assert_regex "$(jq -r .reason <<<"$reload")" 'volumes vol,vol2 \(\+vol2\); roles: cli=ro; any other node ro; log format json'
	run -0 svc_events '.event == "reload" and .result == "ignored"'
	assert_regex "$output" "listen stays $BED_SERVER"
	# The new role is what the server tells the node now; the new volume is served.
	run -0 --separate-stderr bed_in_client "$FUSED_BIN/fusedctl" status -o access --noheadings
	assert_output ro
	run -0 --separate-stderr proto "$BED_SERVER" --secret-file "$BED_SECRET" --node cli VOLUMES
	assert_equal "$(tr '\n' ' ' <<<"$output")" "OK VOLUMES count=2 V vol V vol2 END "
	rm -f "$BED_SRV_DIR/big.bin"
}

@test "an invalid configuration on SIGHUP is refused with FILE:LINE; the server keeps serving with the old one" {
	local reload served
	cp "$SVC_CONF" "$BATS_TEST_TMPDIR/good.conf"
	served=$(proto "$BED_SERVER" --secret-file "$BED_SECRET" --node cli VOLUMES 2>/dev/null)
	[[ $served == "OK VOLUMES"* ]] || fail "VOLUMES: $served"
	printf '[volume broken]\n' >>"$SVC_CONF"
	reload=$(svc_reload) || fail "no reload"
	assert_equal "$(jq -c '[.level, .result]' <<<"$reload")" '["error","refused"]'
	assert_regex "$(jq -r .reason <<<"$reload")" "^$SVC_CONF:[0-9]+: \[volume broken\] has no 'path =' line; the running configuration stays$"
	bed_alive "$BED_SERVER_PID" || fail "the server died"
	run -0 --separate-stderr proto "$BED_SERVER" --secret-file "$BED_SECRET" --node cli VOLUMES
	assert_output "$served"
	run -0 scrape
	grep -q '^fused_reloads_total{result="refused"} 1' <<<"$output" || fail "refused reload not counted"
	cp "$BATS_TEST_TMPDIR/good.conf" "$SVC_CONF"
}

@test "a volume removed on SIGHUP: a read in flight is recalled, returns its map (no revocation) and ends with the right bytes; new requests get NOVOLUME" {
	local d=$BATS_TEST_TMPDIR mnt=$BED_DIR/client-vol2 pid from
	# vol2 served (a reload adds it, or keeps it if an earlier test added it).
	svc_conf >"$SVC_CONF"
	printf '\n[volume vol2]\npath = %s/sub2\n' "$BED_SRV_DIR" >>"$SVC_CONF"
	run -0 svc_reload
	assert_equal "$(jq -r .result <<<"$output")" ok
	head -c $((12 * MiB)) /dev/urandom >"$BED_SRV_DIR/sub2/r.bin"
	sync
	bed_mount_client "$BED_SRV_DIR/sub2" "$mnt"
	run -0 --separate-stderr fuse_client "$mnt" --volume vol2
	from=$(($(wc -l <"$BED_DIR/server.log") + 1))
	# 12 MiB at 4 MiB/s: 3 s; the volume goes a second in.
	bed_in_client "$FUSED_BIN/fusedcat" -v --limit 4MiB "$mnt/r.bin" >"$d/r.out" 2>"$d/r.err" &
	pid=$!
	sleep 1
	svc_conf >"$SVC_CONF"
	run -0 svc_reload
	assert_regex "$(jq -r .reason <<<"$output")" 'volumes vol \(-vol2\); roles: cli=rw'
	kill -0 "$pid" 2>/dev/null || fail "the read was over before the reload: not a test of a recall"
	wait "$pid" || fail "fusedcat failed: $(cat "$d/r.err")"
	assert_equal "$(sha256sum <"$d/r.out")" "$(sha256sum <"$BED_SRV_DIR/sub2/r.bin")"
	run -0 bash -c "tail -n +$from '$BED_DIR/server.log' | jq -cR 'fromjson | select(.event == \"recall\" or .event == \"revoke\") | [.event, .node, .reason]'"
	assert_output '["recall","cli","volume-removed"]'
	run -0 svc_events '.event == "volume" and (.msg | test("vol2 out of service"))'
	assert_output --partial 'their maps are returned or revoked'
	run -0 --separate-stderr bed_in_client "$FUSED_BIN/fusedctl" unfuse "$mnt"
	run -0 --separate-stderr proto "$BED_SERVER" --secret-file "$BED_SECRET" --node cli VOLUMES "MAP vol2 x"
	assert_equal "${lines[0]}" "OK VOLUMES count=1"
	assert_regex "${lines[3]}" "^ERR NOVOLUME "
	run -0 --separate-stderr bed_in_client "$FUSED_BIN/fusedctl" status -o access --noheadings
	assert_output rw
}

@test "without --config, the options alone serve as before, with text log lines" {
	local log=$BATS_TEST_TMPDIR/serve.log pid
	nsenter --net="/run/netns/$BED_SRV_NS" "$FUSED_BIN/fusedctl" serve --volume "vol=$BED_SRV_DIR" --listen "$BED_SRV_ADDR:7998" --secret-file "$BED_SECRET" \
		--node srv2 --role cli=admin </dev/null >"$log" 2>&1 3>&- &
	pid=$!
	bed_record_pid "$pid"
	bed_wait_port "$BED_CLI_NS" "$BED_SRV_ADDR" 7998 || fail "$(cat "$log")"
	run -0 --separate-stderr proto "$BED_SRV_ADDR:7998" --secret-file "$BED_SECRET" --node cli VOLUMES
	assert_equal "${lines[0]}" "OK VOLUMES count=1"
	# SIGHUP with no file to read changes nothing and says so.
	kill -HUP "$pid"
	local tries=50
	until grep -q 'reload: refused' "$log"; do ((tries-- > 0)) || fail "no reload line"; sleep 0.1; done
	bed_alive "$pid" || fail "SIGHUP ended the server"
	bed_kill_pid "$pid"
	grep -qx "fusedctl: reload: refused: no --config file to read; the running configuration stays" "$log" || fail "$(cat "$log")"
	grep -qx "fusedctl: roles: cli=admin; any other node ro" "$log" || fail "$(cat "$log")"
	grep -qx "fusedctl: listening on $BED_SRV_ADDR:7998; lease time 10 s" "$log" || fail "$(cat "$log")"
	grep -q "^fusedctl: $BED_CLI_ADDR:[0-9]*: node cli authenticated (admin)$" "$log" || fail "$(cat "$log")"
	! grep -q '^{' "$log" || fail "JSON lines in a text log"
}

@test "the packaged systemd unit passes systemd-analyze verify and runs serve --config with a small semi-space and two malloc arenas" {
	command -v systemd-analyze >/dev/null || fail "no systemd-analyze (.ci/deps installs the systemd package)"
	local unit=$BED_ROOT/packaging/fused-server.service m=$BATS_TEST_TMPDIR/man
	# Its Documentation= pages, where man finds them.
	mkdir -p "$m/man1" "$m/man5"
	cp "$BED_ROOT/man/fusedctl.1" "$m/man1/" && cp "$BED_ROOT/man/fused.conf.5" "$m/man5/"
	run -0 env MANPATH="$m" systemd-analyze verify "$unit"
	assert_output ""
	grep -q '^Type=notify$' "$unit" && grep -q '^ExecReload=/bin/kill -HUP \$MAINPID$' "$unit" || fail "not Type=notify with a HUP reload"
	# The same small semi-space as the fusedctl shim's #! line gives the server.
	local flag
	flag=$(head -1 "$BED_ROOT/bin/fusedctl.cjs" | grep -o -- '--max-semi-space-size=[0-9]*') || fail "the fusedctl shim has no small semi-space"
	grep -q "^ExecStart=/usr/bin/node $flag /usr/lib/fused/bin/fusedctl.cjs serve --config /etc/fused/fused.conf\$" "$unit" || fail "ExecStart"
	# And the same malloc arenas (a few, not 8 per core: the pool threads' arenas are RSS that stays).
	flag=$(head -1 "$BED_ROOT/bin/fusedctl.cjs" | grep -o -- 'MALLOC_ARENA_MAX=[0-9]*') || fail "the fusedctl shim sets no MALLOC_ARENA_MAX"
	grep -q "^Environment=$flag\$" "$unit" || fail "the unit's MALLOC_ARENA_MAX differs from the shim's"
	# The sample configuration parses: a server started on it fails only for want of a volume.
	run -2 --separate-stderr "$FUSED_BIN/fusedctl" serve --config "$BED_ROOT/packaging/fused.conf"
	assert_equal "${stderr_lines[0]}" "fusedctl: no volume to serve (--volume NAME=DIR, or a [volume NAME] section in $BED_ROOT/packaging/fused.conf)"
}
