#!/usr/bin/env bats
# The map server's hard limits: connections, idle time, a huge map in one request, clean shutdown.

load helpers

setup_file() {
	bed_setup_file ext4-4k 1G
	# A second server on the same volume with small limits, so the tests can reach them.
	LIMITED=$BED_SRV_ADDR:7448
	# A small shell around the server records its exit status; the server itself is that shell's child.
	RC_FILE=$BATS_FILE_TMPDIR/limited.rc nsenter --net="/run/netns/$BED_SRV_NS" sh -c '"$@"; echo $? >"$RC_FILE"' sh \
		"$FUSED_BIN/fusedctl" serve --listen "$LIMITED" --volume "vol=$BED_SRV_DIR" \
		--secret-file "$BED_SECRET" --node limited --max-connections 2 --idle-timeout 2 \
		</dev/null >>"$BED_DIR/limited.log" 2>&1 3>&- &
	bed_record_pid $!
	bed_wait_port "$BED_CLI_NS" "$BED_SRV_ADDR" 7448
	echo "$LIMITED" >"$BATS_FILE_TMPDIR/limited"
	pgrep -P "$!" >"$BATS_FILE_TMPDIR/limited.pid"
}

teardown_file() { bed_teardown_file; }

setup() { LIMITED=$(cat "$BATS_FILE_TMPDIR/limited"); }

# py SCRIPT: python3 in the client's namespace, with HOST and PORT of the limited server in its globals,
# conn() for a raw connection and auth(s, r) to read its greeting and authenticate as node cli (protocol 2;
# the key derived from the bed's master secret), returning the greeting's first word and the AUTH reply.
py() {
	bed_in_client python3 -c "import hashlib, hmac, os, socket, sys, time
HOST, PORT = '${LIMITED%:*}', ${LIMITED#*:}
MASTER = open('$BED_SECRET', 'rb').read().rstrip()
def conn():
    s = socket.create_connection((HOST, PORT), timeout=10)
    return s, s.makefile('rb')
def auth(s, r, node='cli'):
    g = r.readline().decode().split()
    ch = dict(f.split('=', 1) for f in g[2:])['challenge']
    key = hmac.new(MASTER, b'fused-node-key-v1\\n' + node.encode(), hashlib.sha256).hexdigest().encode()
    mine = os.urandom(32).hex()
    s.sendall(f'HELLO {node} 2 {mine}\\n'.encode()); r.readline()
    s.sendall(('AUTH ' + hmac.new(key, f'fused-auth-v2\\n{ch}\\n{mine}\\n{node}'.encode(), hashlib.sha256).hexdigest() + '\\n').encode())
    return g[0], r.readline().decode().strip()
$1"
}

@test "connections past --max-connections get ERR BUSY and are closed; a freed slot is usable again" {
	run -0 py "
a, ra = conn(); print(auth(a, ra)[0])
b, rb = conn(); print(auth(b, rb)[0])
c, rc = conn(); print(rc.readline().decode().split(' ')[:2]); print('eof' if rc.readline() == b'' else 'open')
ra.close(); a.close(); time.sleep(0.5)
d, rd = conn(); print(auth(d, rd)[0])"
	assert_line --index 0 'FUSED'
	assert_line --index 1 'FUSED'
	assert_line --index 2 "['ERR', 'BUSY']"
	assert_line --index 3 'eof'
	assert_line --index 4 'FUSED'
}

@test "--max-connections counts authenticated connections: one that authenticates past it gets ERR BUSY at AUTH" {
	run -0 py "
held = [conn() for _ in range(3)]
print([auth(s, r)[1].split(' ')[:2] for (s, r) in held])
s, r = held[2]; print(r.readline().decode().strip()); print('eof' if r.readline() == b'' else 'open')"
	assert_line --index 0 "[['OK', 'AUTH'], ['OK', 'AUTH'], ['ERR', 'BUSY']]"
	assert_line --index 1 '! BYE reason=busy'
	assert_line --index 2 'eof'
}

@test "peers that reset at once past --max-connections cannot take the server down" {
	run -0 py "
import struct
held = [conn() for _ in range(2)]
for (s, r) in held: auth(s, r)
for i in range(200):
    s = socket.create_connection((HOST, PORT), timeout=10)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
    s.close()
for (s, r) in held: r.close(); s.close()
time.sleep(0.5)
a, ra = conn(); print(ra.readline().decode().split()[0])"
	assert_output 'FUSED'
	run bed_alive "$(cat "$BATS_FILE_TMPDIR/limited.pid")"
	assert_success
}

@test "a connection idle for --idle-timeout gets '! BYE reason=idle' and is closed" {
	run -0 py "
a, ra = conn(); ra.readline(); t0 = time.time()
line = ra.readline().decode().strip(); print(line); print('eof' if ra.readline() == b'' else 'open')
print('waited', round(time.time() - t0))"
	assert_line --index 0 '! BYE reason=idle'
	assert_line --index 1 'eof'
	assert_line --index 2 --regexp '^waited [23]$'
}

@test "a file of 40,000 extents maps in one request, every extent streamed" {
	local f=$BED_SRV_DIR/fragmented-40k
	# 20,000 separate 4 KiB blocks with holes between them: no two extents can merge.
	python3 -c "
import os
fd = os.open('$f', os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
blk = os.urandom(4096)
for i in range(20000): os.pwrite(fd, blk, i * 8192)
os.fsync(fd); os.close(fd)"
	run -0 --separate-stderr bed_in_client python3 "$FUSED_LIB/fusedproto.py" "$BED_SERVER" --secret-file "$BED_SECRET" --timeout 60 "MAP vol fragmented-40k"
	assert_line --index 0 --regexp '^OK MAP .* extents=39999( |$)'
	assert_equal "$(grep -c '^X .* DATA ' <<<"$output")" 20000
	assert_equal "$(grep -c '^X .* HOLE ' <<<"$output")" 19999
	assert_equal "${lines[-1]}" 'END'
	# The device offsets are filefrag's, block for block.
	local want got
	want=$(filefrag -v -b4096 "$f" | awk '$1 ~ /^[0-9]+:$/ { sub(/\.\..*/, "", $4); print $4 * 4096 }' | sort -n | md5sum)
	got=$(awk '$1 == "X" && $5 == "DATA" { print $3 }' <<<"$output" | sort -n | md5sum)
	assert_equal "$got" "$want"
}

@test "SIGTERM: the server tells its clients goodbye, releases everything and exits 0" {
	local pid
	pid=$(cat "$BATS_FILE_TMPDIR/limited.pid")
	run -0 py "
a, ra = conn(); ra.readline()
import os, signal; os.kill($pid, signal.SIGTERM)
print(ra.readline().decode().strip()); print('eof' if ra.readline() == b'' else 'open')"
	assert_line --index 0 '! BYE reason=shutdown'
	assert_line --index 1 'eof'
	local i
	for ((i = 0; i < 50; i++)); do bed_alive "$pid" || break; sleep 0.1; done
	run ! bed_alive "$pid"
	for ((i = 0; i < 20; i++)); do [[ -s $BATS_FILE_TMPDIR/limited.rc ]] && break; sleep 0.1; done
	assert_equal "$(cat "$BATS_FILE_TMPDIR/limited.rc")" 0
	run -0 grep -c 'SIGTERM: shutting down' "$BED_DIR/limited.log"
}
