#!/usr/bin/env bats
# The map server's refusals when mapping (ext4-4k): a file open for writing goes through the network and
# every client tool says why; --max-extents answers ERR TOOBIG; --max-leases answers ERR LIMIT until a RELEASE.
# Maps cached with a lingering read lease: a writer gets in at once and the next map is of the new file; a write
# map right after read maps is not refused.

load helpers
source "$FUSED_LIB/readcases.bash"

setup_file() {
	bed_setup_file ext4-4k 1G
	fuse_client >"$BED_DIR/fuse.out"
	# A second server on the same volume with small limits, so the tests can reach them.
	LIMITED=$BED_SRV_ADDR:7449
	nsenter --net="/run/netns/$BED_SRV_NS" "$FUSED_BIN/fusedctl" serve --listen "$LIMITED" --volume "vol=$BED_SRV_DIR" \
		--secret-file "$BED_SECRET" --node limited --max-extents 8 --max-leases 3 --role cli=rw \
		</dev/null >>"$BED_DIR/limited.log" 2>&1 3>&- &
	bed_record_pid $! || { cat "$BED_DIR/limited.log" >&2; return 1; }
	bed_wait_port "$BED_CLI_NS" "$BED_SRV_ADDR" 7449
	echo "$LIMITED" >"$BATS_FILE_TMPDIR/limited"
}

teardown_file() { bed_teardown_file; }

setup() { LIMITED=$(cat "$BATS_FILE_TMPDIR/limited"); }

# proto SCRIPT: python3 in the client's namespace with conn() (a connection to the limited server, past
# HELLO and AUTH) and req(f, line) (send one request, return its reply's lines: the first, then any data lines
# up to END).
proto() {
	bed_in_client python3 -c "import hashlib, hmac, socket
HOST, PORT = '${LIMITED%:*}', ${LIMITED#*:}
SECRET = open('$BED_SECRET', 'rb').read().rstrip()
def conn():
    s = socket.create_connection((HOST, PORT), timeout=20)
    f = s.makefile('rwb')
    greeting = f.readline().decode().split()
    challenge = dict(w.split('=', 1) for w in greeting[2:] if '=' in w)['challenge']
    # Protocol 2: the node key is derived from the master secret; the server proves it first (not checked here).
    key = hmac.new(SECRET, b'fused-node-key-v1\ncli', hashlib.sha256).hexdigest().encode()
    mine = '0' * 64
    assert req(f, 'HELLO cli 2 ' + mine)[0].startswith('OK HELLO')
    proof = hmac.new(key, b'fused-auth-v2\n' + challenge.encode() + b'\n' + mine.encode() + b'\ncli', hashlib.sha256).hexdigest()
    assert req(f, 'AUTH ' + proof)[0].startswith('OK AUTH')
    return f
def req(f, line):
    f.write(line.encode() + b'\n'); f.flush()
    lines = [f.readline().decode().rstrip('\n')]
    if lines[0].startswith('OK MAP'):
        while lines[-1] != 'END': lines.append(f.readline().decode().rstrip('\n'))
    return lines
def field(line, name):
    return dict(w.split('=', 1) for w in line.split(' ') if '=' in w)[name]
$1"
}

# blocks_file NAME COUNT: COUNT separate 4 KiB blocks of random bytes with a hole after each but the last (so
# no two extents merge: 2*COUNT-1 map extents), synced.
blocks_file() {
	python3 -c "
import os
fd = os.open('$BED_SRV_DIR/$1', os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
for i in range($2): os.pwrite(fd, os.urandom(4096), i * 8192)
os.fsync(fd); os.close(fd)"
}

@test "a file open for writing on the server is mapped all NETWORK, with the reason, and fusedcp and fusedcat say it" {
	local f=$BED_SRV_DIR/open-for-writing.bin cf=$BED_CLI_DIR/open-for-writing.bin writer i
	dd if=/dev/urandom of="$f" bs=1M count=4 conv=fsync status=none
	# A process in the server's namespace holds the file open for writing (no truncation) until killed; nsenter
	# and sh exec, so $! is the holder itself.
	nsenter --net="/run/netns/$BED_SRV_NS" sh -c 'exec 3>>"$1" && exec sleep 600' sh "$f" </dev/null >/dev/null 2>&1 3>&- &
	writer=$!
	bed_record_pid "$writer"
	for ((i = 0; i < 100; i++)); do [[ $(readlink "/proc/$writer/fd/3" 2>/dev/null) == "$f" ]] && break; sleep 0.05; done
	[[ $(readlink "/proc/$writer/fd/3") == "$f" ]] || fail "the writer did not open the file"
	run -0 --separate-stderr bed_in_client "$FUSED_BIN/fusedmap" --json "$cf"
	run -0 jq -c '.[0] | [.network, [.extents[] | [.logical, .length, .state]]]' <<<"$output"
	assert_output '["the file is open for writing",[[0,4194304,"NETWORK"]]]'
	dst=$BATS_TEST_TMPDIR/out
	mkdir "$dst"
	run -0 --separate-stderr bed_in_client "$FUSED_BIN/fusedcp" "$cf" "$dst"
	assert_regex "$stderr" '^fusedcp: .*open-for-writing.bin: through the network: the file is open for writing'
	assert_equal "$(rc_sha "$dst/open-for-writing.bin")" "$(rc_sha "$f")"
	run -0 --separate-stderr bed_in_client "$FUSED_BIN/fusedcp" -f --json "$cf" "$dst"
	run -0 jq -c '.[0] | [.status, .path, .reason, .bytesDirect, .bytesNetwork]' <<<"$output"
	assert_output '["copied","network","the file is open for writing",0,4194304]'
	assert_equal "$(rc_sha "$dst/open-for-writing.bin")" "$(rc_sha "$f")"
	run -0 --separate-stderr rc_cat_sha "$cf"
	assert_equal "$output" "$(rc_sha "$f")"
	assert_regex "$stderr" '^fusedcat: .*open-for-writing.bin: through the network: the file is open for writing'
	# The writer gone, the same file maps to the device again.
	bed_kill_pid "$writer"
	run -0 --separate-stderr bed_in_client "$FUSED_BIN/fusedmap" --json "$cf"
	run -0 jq -c '.[0] | [.network, ([.extents[].state] | unique)]' <<<"$output"
	assert_output '[null,["DATA"]]'
	rm "$f"
}

@test "a file of more extents than --max-extents gets ERR TOOBIG and fusedcp copies it through the network; one within the limit maps" {
	blocks_file toobig.bin 5
	blocks_file fits.bin 4
	run -0 proto "
f = conn()
print(req(f, 'MAP vol toobig.bin')[0])
r = req(f, 'MAP vol fits.bin')
print(r[0].split(' ')[:2], field(r[0], 'extents'), len(r) - 2, r[-1])"
	# 5 blocks and 4 holes between them: 9 extents, one more than the limit of 8; 4 blocks: 7.
	assert_line --index 0 --regexp '^ERR TOOBIG .*8'
	assert_line --index 1 "['OK', 'MAP'] 7 7 END"
	# The main server (no such limit) maps the big one, through the fused mount.
	run -0 --separate-stderr bed_in_client "$FUSED_BIN/fusedmap" --json "$BED_CLI_DIR/toobig.bin"
	run -0 jq -c '.[0] | [.network, (.extents | length)]' <<<"$output"
	assert_output '[null,9]'
	# A client fused to the limited server copies it through the network and says why.
	local mnt=$BED_DIR/client-limited
	bed_mount_client "$BED_SRV_DIR" "$mnt"
	run -0 --separate-stderr bed_in_client "$FUSED_BIN/fusedctl" fuse "$mnt" --server "$LIMITED" --key-file "$BED_KEY" --node cli
	dst=$BATS_TEST_TMPDIR/out
	mkdir "$dst"
	run -0 --separate-stderr bed_in_client "$FUSED_BIN/fusedcp" --small-file 0 --json "$mnt/toobig.bin" "$mnt/fits.bin" "$dst"
	local json=$output
	run -0 jq -c '[.[] | [.status, .path, .bytesDirect > 0]]' <<<"$json"
	assert_output '[["copied","network",false],["copied","direct",true]]'
	run -0 jq -r '.[0].reason' <<<"$json"
	assert_output --regexp 'more than the limit of 8 extents'
	assert_equal "$(rc_sha "$dst/toobig.bin")" "$(rc_sha "$BED_SRV_DIR/toobig.bin")"
	assert_equal "$(rc_sha "$dst/fits.bin")" "$(rc_sha "$BED_SRV_DIR/fits.bin")"
	run -0 bed_in_client "$FUSED_BIN/fusedctl" unfuse "$mnt"
	rm "$BED_SRV_DIR/toobig.bin" "$BED_SRV_DIR/fits.bin"
}

@test "a connection past --max-leases gets ERR LIMIT on MAP; after a RELEASE one more MAP works" {
	local i
	for i in 1 2 3 4 5; do blocks_file "lease$i.bin" 1; done
	run -0 proto "
f = conn()
leases = []
for i in range(1, 5):
    r = req(f, 'MAP vol lease%d.bin' % i)
    print(r[0].split(' ')[0:2] if r[0].startswith('OK') else ' '.join(r[0].split(' ')[0:2]))
    if r[0].startswith('OK'): leases.append(field(r[0], 'lease'))
print(req(f, 'RELEASE ' + leases[0])[0])
r = req(f, 'MAP vol lease5.bin'); print(r[0].split(' ')[0:2], r[-1])
print(' '.join(req(f, 'MAP vol lease4.bin')[0].split(' ')[0:2]))
g = conn()
r = req(g, 'MAP vol lease4.bin'); print('other connection', r[0].split(' ')[0:2])"
	assert_line --index 0 "['OK', 'MAP']"
	assert_line --index 1 "['OK', 'MAP']"
	assert_line --index 2 "['OK', 'MAP']"
	assert_line --index 3 'ERR LIMIT'
	assert_line --index 4 'OK RELEASE'
	assert_line --index 5 "['OK', 'MAP'] END"
	# Three held again: full once more; the limit is per connection.
	assert_line --index 6 'ERR LIMIT'
	assert_line --index 7 "other connection ['OK', 'MAP']"
	rm "$BED_SRV_DIR"/lease[1-5].bin
}

@test "commands that end their session with QUIT leave no connection error in the server's log" {
	head -c 1048576 /dev/urandom >"$BED_SRV_DIR/quit.bin"
	local before
	before=$(wc -l <"$BED_DIR/server.log")
	for _ in 1 2 3; do
		run -0 bed_in_client "$FUSED_BIN/fusedmap" "$BED_CLI_DIR/quit.bin"
		bed_in_client "$FUSED_BIN/fusedcat" "$BED_CLI_DIR/quit.bin" | cmp - "$BED_SRV_DIR/quit.bin"
	done
	sleep 0.5
	run -0 tail -n +"$((before + 1))" "$BED_DIR/server.log"
	assert_output --partial 'disconnected'
	refute_output --partial 'ECONNRESET'
	refute_output --partial 'EPIPE'
	rm "$BED_SRV_DIR/quit.bin"
}

# data_extents FILE: the file's data extents as filefrag -v sees them, in blocks: "logical physical length" a line.
data_extents() {
	filefrag -v "$1" | awk '/^ *[0-9]+:/ { gsub(/(\.\.|:)/, " "); print $2, $4, $6 }'
}

@test "a map cached with a lingering lease: a writer's open gets in at once, and the next map is of the new extents" {
	local f=$BED_SRV_DIR/cached.bin
	blocks_file cached.bin 3
	# MAP, RELEASE, MAP (from the cache kept with the read lease), RELEASE: the same map both times. Then, within the
	# 2 s the lease lingers, a blocking open for writing (which waits for the lease break) rewrites the file with
	# other blocks; then MAP again. Data extents are printed in blocks, as filefrag shows them.
	run -0 proto "
import os, subprocess, time
def data(r): return [' '.join(str(int(n) // 4096) for n in x.split(' ')[1:4]) for x in r[1:-1] if x.split(' ')[4] == 'DATA']
f = conn()
maps = []
for i in range(2):
    r = req(f, 'MAP vol cached.bin'); maps.append(data(r))
    assert req(f, 'RELEASE ' + field(r[0], 'lease'))[0] == 'OK RELEASE'
print('same', maps[0] == maps[1])
print('\\n'.join(maps[0]))
print('lingering', subprocess.run(['grep', '-c', 'READ .*:%d ' % os.stat('$f').st_ino, '/proc/locks'], capture_output=True, text=True).stdout.strip())
t0 = time.monotonic()
fd = os.open('$f', os.O_WRONLY | os.O_TRUNC)
print('opened in %.3f s' % (time.monotonic() - t0))
for i in range(4): os.pwrite(fd, os.urandom(4096), 4096 + i * 8192)
os.fsync(fd); os.close(fd)
print('after')
print('\\n'.join(data(req(f, 'MAP vol cached.bin'))))"
	# The file as it was, then as it is: each map as filefrag shows it.
	assert_line --index 0 'same True'
	assert_line --index 4 'lingering 1'
	[[ ${lines[5]} =~ ^opened\ in\ ([0-9.]+)\ s$ ]] || fail "no open time: ${lines[5]}"
	(($(bc <<<"${BASH_REMATCH[1]} < 1"))) || fail "the writer waited ${BASH_REMATCH[1]} s for a lease nobody held"
	assert_equal "$(printf '%s\n' "${lines[@]:7}")" "$(data_extents "$f")"
	assert_equal "${#lines[@]}" 11 # four blocks now
	rm "$f"
}

@test "a write map right after read maps of the file is not refused because their read lease lingers" {
	blocks_file rw.bin 2
	run -0 proto "
f = conn()
r = req(f, 'MAP vol rw.bin'); print(r[0].split(' ')[:2])
print(req(f, 'RELEASE ' + field(r[0], 'lease'))[0])
w = req(f, 'MAP vol rw.bin write'); print(w[0].split(' ')[:2], field(w[0], 'mode') if w[0].startswith('OK') else w[0])
print(req(f, 'RELEASE ' + field(w[0], 'lease'))[0])
r = req(f, 'MAP vol rw.bin'); print(r[0].split(' ')[:2], 'network' in r[0])"
	assert_line --index 0 "['OK', 'MAP']"
	assert_line --index 1 'OK RELEASE'
	assert_line --index 2 "['OK', 'MAP'] write"
	assert_line --index 3 'OK RELEASE'
	assert_line --index 4 "['OK', 'MAP'] False"
	rm "$BED_SRV_DIR/rw.bin"
}
