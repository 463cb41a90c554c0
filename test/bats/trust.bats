#!/usr/bin/env bats
# Trust between nodes (protocol 2): both sides prove they know the node's key, keys are bound to node names,
# key and secret files must be private, roles, and idle strangers cannot crowd out authenticated nodes.

load helpers

setup_file() {
	bed_setup_file ext4-4k 1G
	head -c 4194304 /dev/urandom >"$BED_SRV_DIR/clip.bin"
	sync
}

teardown_file() { bed_teardown_file; }

# Every test starts with no fuses.
setup() { rm -f "$BED_DIR/client-state/fuses.json"; }

# extra_server PORT SECRET [serve args...]: another map server for the same volume, in the server namespace.
extra_server() {
	local port=$1 secret=$2
	shift 2
	nsenter --net="/run/netns/$BED_SRV_NS" "$FUSED_BIN/fusedctl" serve --listen "$BED_SRV_ADDR:$port" \
		--volume "vol=$BED_SRV_DIR" --secret-file "$secret" --node srv "$@" \
		</dev/null >>"$BED_DIR/server-$port.log" 2>&1 3>&- &
	bed_record_pid $!
	echo $! >"$BATS_FILE_TMPDIR/server-$port.pid"
	bed_wait_port "$BED_CLI_NS" "$BED_SRV_ADDR" "$port"
}

# proto SERVER [fusedproto args...]: the raw protocol client in the client's namespace.
proto() { bed_in_client python3 "$FUSED_LIB/fusedproto.py" "$@"; }

# status_access: fusedctl status's ACCESS column alone.
status_access() {
	run -0 --separate-stderr bed_in_client "$FUSED_BIN/fusedctl" status -o access --noheadings
}

@test "fusedctl key output works as a key file; -o writes mode 0600 and never overwrites without --force" {
	(umask 077 && "$FUSED_BIN/fusedctl" key cli --secret-file "$BED_SECRET" >"$BED_DIR/stdout.key")
	run -0 cat "$BED_DIR/stdout.key"
	assert_output --regexp '^[0-9a-f]{64}$'
	# The same key, whether printed or written; the bed's key was written with -o.
	assert_equal "$(cat "$BED_DIR/stdout.key")" "$(cat "$BED_KEY")"
	assert_equal "$(stat -c %a "$BED_KEY")" 600
	run -0 --separate-stderr fuse_client "$BED_CLI_DIR" --key-file "$BED_DIR/stdout.key"
	assert_output --partial 'access ro'
	run -0 --separate-stderr fused_status_json
	run -0 jq -c '[.[0].keyFile, .[0].serverReachable, .[0].access]' <<<"$output"
	assert_output "[\"$BED_DIR/stdout.key\",true,\"ro\"]"
	# The fuse's key file is what later commands use: a copy through the fuse goes direct.
	run -0 --separate-stderr bed_in_client "$FUSED_BIN/fusedcp" -v "$BED_CLI_DIR/clip.bin" "$BED_DIR/copy1.bin"
	assert_regex "$stderr" '\[direct\]'
	assert_equal "$(sha256sum <"$BED_DIR/copy1.bin")" "$(sha256sum <"$BED_SRV_DIR/clip.bin")"
	run -1 --separate-stderr "$FUSED_BIN/fusedctl" key cli --secret-file "$BED_SECRET" -o "$BED_KEY"
	assert_equal "$stderr" "fusedctl: $BED_KEY: exists (use --force to overwrite it)"
	chmod 644 "$BED_DIR/stdout.key"
	run -0 --separate-stderr "$FUSED_BIN/fusedctl" key cli --secret-file "$BED_SECRET" -o "$BED_DIR/stdout.key" --force
	assert_equal "$(stat -c %a "$BED_DIR/stdout.key")" 600
	assert_equal "$(cat "$BED_DIR/stdout.key")" "$(cat "$BED_KEY")"
	run -2 --separate-stderr "$FUSED_BIN/fusedctl" key 'bad/name' --secret-file "$BED_SECRET"
}

@test "a fake map server (another master secret, same volume) is refused by fuse (exit 6) and by fusedcp (network)" {
	(umask 077 && openssl rand -hex 32 >"$BED_DIR/fake-secret")
	extra_server 7449 "$BED_DIR/fake-secret"
	run -6 --separate-stderr bed_in_client "$FUSED_BIN/fusedctl" fuse "$BED_CLI_DIR" --server "$BED_SRV_ADDR:7449" \
		--key-file "$BED_KEY" --node cli
	assert_equal "$stderr" "fusedctl: map server $BED_SRV_ADDR:7449: authentication failed: the server does not know this node's key (wrong key file, or not the real map server)"
	run -0 --separate-stderr fused_status_json
	assert_output '[]'
	# A fuse made with the real server, then the server's address answered by the fake one.
	run -0 --separate-stderr fuse_client
	local reg=$BED_DIR/client-state/fuses.json
	jq --arg s "$BED_SRV_ADDR:7449" '.fuses[0].server = $s' "$reg" >"$reg.new" && mv "$reg.new" "$reg"
	run -0 --separate-stderr bed_in_client "$FUSED_BIN/fusedcp" "$BED_CLI_DIR/clip.bin" "$BED_DIR/copy2.bin"
	assert_regex "$stderr" "through the network: map server: authentication failed: the server does not know this node's key"
	assert_equal "$(sha256sum <"$BED_DIR/copy2.bin")" "$(sha256sum <"$BED_SRV_DIR/clip.bin")"
	# The fake server never saw an AUTH: the client stopped at its missing proof.
	run -1 grep -c 'authenticat' "$BED_DIR/server-7449.log"
	bed_kill_pid "$(cat "$BATS_FILE_TMPDIR/server-7449.pid")"
}

@test "a node using its own key under another node's name gets ERR AUTHFAIL; fuse exits 6" {
	run -0 --separate-stderr proto "$BED_SERVER" --key-file "$BED_KEY" --node other PING
	assert_line --index 0 --regexp '^ERR AUTHFAIL '
	refute_line 'OK PONG'
	assert_equal "${lines[-1]}" 'CLOSED'
	assert_regex "$stderr" 'server proof: MISMATCH'
	run -0 --separate-stderr proto "$BED_SERVER" --key-file "$BED_KEY" --node cli PING
	assert_output 'OK PONG'
	assert_regex "$stderr" 'server proof: ok'
	run -6 --separate-stderr bed_in_client "$FUSED_BIN/fusedctl" fuse "$BED_CLI_DIR" --server "$BED_SERVER" \
		--key-file "$BED_KEY" --node other
	assert_regex "$stderr" "^fusedctl: map server $BED_SERVER: authentication failed"
	run -0 --separate-stderr fused_status_json
	assert_output '[]'
}

@test "an older client's HELLO gets ERR VERSION, a HELLO without a challenge ERR BADARG" {
	run -0 --separate-stderr proto "$BED_SERVER" --no-auth 'HELLO cli 1' VOLUMES
	assert_line --index 0 --regexp '^ERR VERSION .*speaks 2'
	assert_line --index 1 --regexp '^ERR NOAUTH '
	run -0 --separate-stderr proto "$BED_SERVER" --no-auth 'HELLO cli 2'
	assert_line --index 0 --regexp '^ERR BADARG usage: HELLO <node> <version> <challenge>'
	run -0 --separate-stderr proto "$BED_SERVER" --no-auth PING
	assert_stderr --regexp "^FUSED 2 node=srv challenge=[0-9a-f]{64}"
}

@test "serve refuses a secret file group or others can read (chmod 600); fuse and status refuse such a key file" {
	(umask 022 && openssl rand -hex 32 >"$BED_DIR/open-secret")
	run -1 --separate-stderr timeout 20 nsenter --net="/run/netns/$BED_SRV_NS" "$FUSED_BIN/fusedctl" serve \
		--listen "$BED_SRV_ADDR:7450" --volume "vol=$BED_SRV_DIR" --secret-file "$BED_DIR/open-secret"
	assert_equal "$stderr" "fusedctl: secret file $BED_DIR/open-secret: mode 0644 lets group or others at it; chmod 600 $BED_DIR/open-secret"
	cp "$BED_KEY" "$BED_DIR/open.key"
	chmod 640 "$BED_DIR/open.key"
	run -1 --separate-stderr fuse_client "$BED_CLI_DIR" --key-file "$BED_DIR/open.key"
	assert_equal "$stderr" "fusedctl: key file $BED_DIR/open.key: mode 0640 lets group or others at it; chmod 600 $BED_DIR/open.key"
	run -0 --separate-stderr fused_status_json
	assert_output '[]'
	# A key file opened up after the fuse is refused by later commands too.
	chmod 600 "$BED_DIR/open.key"
	run -0 --separate-stderr fuse_client "$BED_CLI_DIR" --key-file "$BED_DIR/open.key"
	chmod 604 "$BED_DIR/open.key"
	run -0 --separate-stderr fused_status_json
	run -0 jq -r '.[0].serverReachable, .[0].problem' <<<"$output"
	assert_line --index 0 false
	assert_line --index 1 --partial "mode 0604 lets group or others at it; chmod 600 $BED_DIR/open.key"
	run -0 --separate-stderr bed_in_client "$FUSED_BIN/fusedcp" "$BED_CLI_DIR/clip.bin" "$BED_DIR/copy3.bin"
	assert_regex "$stderr" "through the network: .*chmod 600 $BED_DIR/open.key"
	assert_equal "$(sha256sum <"$BED_DIR/copy3.bin")" "$(sha256sum <"$BED_SRV_DIR/clip.bin")"
}

@test "300 idle unauthenticated connections do not lock out an authenticated node; the oldest are dropped as crowded" {
	local ready=$BED_DIR/crowd.ready stop=$BED_DIR/crowd.stop result=$BED_DIR/crowd.result
	rm -f "$ready" "$stop" "$result"
	bed_in_client python3 -c "
import os, socket, sys, time
host, port = '$BED_SRV_ADDR', $BED_PORT
held = [socket.create_connection((host, port), timeout=10) for _ in range(300)]
open('$ready', 'w').close()
deadline = time.time() + 60
while not os.path.exists('$stop') and time.time() < deadline: time.sleep(0.1)
crowded = 0
for s in held:
    s.settimeout(0.2)
    try:
        data = b''
        while chunk := s.recv(4096): data += chunk
    except OSError:
        pass
    crowded += b'! BYE reason=crowded' in data
    s.close()
open('$result', 'w').write(str(crowded))
" </dev/null 3>&- &
	local i
	for ((i = 0; i < 300; i++)); do [[ -e $ready ]] && break; sleep 0.1; done
	[[ -e $ready ]]
	# Served within a second, the whole exchange (connect, handshake, a map, a ping) counted; the held sockets stay
	# open meanwhile.
	local t0 ms
	t0=$(date +%s%N)
	run -0 --separate-stderr proto "$BED_SERVER" --secret-file "$BED_SECRET" --timeout 1 'MAP vol clip.bin' PING
	ms=$((($(date +%s%N) - t0) / 1000000))
	assert_line --index 0 --regexp '^OK MAP '
	assert_equal "${lines[-1]}" 'OK PONG'
	((ms < 1000)) || fail "the authenticated node was served in $ms ms, not within a second"
	t0=$(date +%s%N)
	run -0 --separate-stderr fuse_client
	ms=$((($(date +%s%N) - t0) / 1000000))
	((ms < 5000)) || fail "fusedctl fuse took $ms ms under the crowd"
	run -0 --separate-stderr bed_in_client "$FUSED_BIN/fusedctl" status --json --timeout 1
	run -0 jq -c '[.[0].serverReachable, .[0].problem]' <<<"$output"
	assert_output '[true,null]'
	touch "$stop"
	for ((i = 0; i < 200; i++)); do [[ -s $result ]] && break; sleep 0.1; done
	# All but the newest 16 (--max-unauthenticated) were dropped to make room, give or take our own handshakes.
	run -0 cat "$result"
	(($(cat "$result") >= 280))
	run -0 --separate-stderr proto "$BED_SERVER" --secret-file "$BED_SECRET" PING
	assert_output 'OK PONG'
	run bed_alive "$BED_SERVER_PID"
	assert_success
}

@test "roles: --role cli=rw gets access=rw, a node without a role the default ro, an admin admin" {
	run -2 --separate-stderr "$FUSED_BIN/fusedctl" serve --volume "vol=$BED_SRV_DIR" --role cli=root
	assert_equal "${stderr_lines[0]}" "fusedctl: --role: expected ro|rw|admin, got 'root'"
	run -2 --separate-stderr "$FUSED_BIN/fusedctl" serve --volume "vol=$BED_SRV_DIR" --default-role write
	extra_server 7451 "$BED_SECRET" --role cli=rw --role boss=admin
	run -0 --separate-stderr proto "$BED_SRV_ADDR:7451" --secret-file "$BED_SECRET" --node cli 'VOLUME vol'
	assert_stderr --partial 'OK AUTH node=cli access=rw'
	assert_output --partial ' access=rw'
	run -0 --separate-stderr proto "$BED_SRV_ADDR:7451" --secret-file "$BED_SECRET" --node other PING
	assert_stderr --partial 'OK AUTH node=other access=ro'
	run -0 --separate-stderr proto "$BED_SRV_ADDR:7451" --secret-file "$BED_SECRET" --node boss PING
	assert_stderr --partial 'OK AUTH node=boss access=admin'
	# fusedctl status shows the access each fuse got.
	run -0 --separate-stderr fuse_client "$BED_CLI_DIR" --server "$BED_SRV_ADDR:7451"
	assert_output --partial 'access rw'
	status_access
	assert_output 'rw'
	local boss
	boss=$(bed_node_key boss)
	run -0 --separate-stderr bed_in_client "$FUSED_BIN/fusedctl" fuse "$BED_CLI_DIR" --server "$BED_SRV_ADDR:7451" \
		--key-file "$boss" --node boss
	status_access
	assert_output 'admin'
	run -0 --separate-stderr fuse_client "$BED_CLI_DIR"
	status_access
	assert_output 'ro'
	bed_kill_pid "$(cat "$BATS_FILE_TMPDIR/server-7451.pid")"
}
