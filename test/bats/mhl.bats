#!/usr/bin/env bats
# Media-grade verification (ext4-4k, two-node bed, the client rw): fusedcp --checksum from the bytes as copied,
# --mhl manifests checked against the ASC MHL v2.0 XSDs and by independent hashes (python3), generations and the
# chain, --mhl-verify finding a changed and a deleted file; fusedmap --summary against the map, --svg well formed.

load helpers
source "$FUSED_LIB/readcases.bash"

XSD=$BATS_TEST_DIRNAME/../fixtures/ascmhl

setup_file() {
	requires_root
	bed_init || return 1
	echo "$BED_DIR" >"$BATS_FILE_TMPDIR/bed_dir"
	bed_make_nodes && bed_make_volume ext4-4k 1G && bed_start_sshd && bed_mount_client && bed_start_server --role cli=rw || return 1
	fuse_client >"$BED_DIR/fuse.out" || return 1
	# A card with odd names: XML's special characters, quotes, spaces, a tab, non-ASCII; sizes that go direct
	# (over 256 KiB) and through the mount, an empty file, nested folders.
	local src=$BED_DIR/A001
	mkdir -p "$src/CLIPS/sub dir" "$src/ünïcödé 日本"
	head -c 3145739 /dev/urandom >"$src/CLIPS/A001C001 & <x>.mov"
	head -c 1048576 /dev/urandom >"$src/CLIPS/sub dir/it's \"quoted\".mxf"
	head -c 4095 /dev/urandom >"$src/ünïcödé 日本/tab	here.txt"
	printf abc >"$src/abc"
	: >"$src/empty"
	mkdir -p "$BED_DIR/A002"
	head -c 600000 /dev/urandom >"$BED_DIR/A002/second.mov"
}

teardown_file() { bed_teardown_file; }

# py SCRIPT ARGS...: python3 with an xxh64 of its own (the XXH64 algorithm, written from its specification, not
# fusedcp's xxhash-wasm), md5 and a C4 ID from hashlib, and the manifest read with ElementTree.
py() {
	python3 - "${@:2}" <<PY
import sys, hashlib, os, xml.etree.ElementTree as ET
P1, P2, P3, P4, P5, M = 11400714785074694791, 14029467366897019727, 1609587929392839161, 9650029242287828579, 2870177450012600261, 2**64 - 1
rotl = lambda x, r: ((x << r) | (x >> (64 - r))) & M
def rnd(acc, v): return (rotl((acc + v * P2) & M, 31) * P1) & M
def merge(h, v): return ((h ^ rnd(0, v)) * P1 + P4) & M
def xxh64(d):
    n, i, u64 = len(d), 0, lambda j: int.from_bytes(d[j:j + 8], 'little')
    if n >= 32:
        v = [(P1 + P2) & M, P2, 0, (-P1) & M]
        while i + 32 <= n:
            v = [rnd(v[k], u64(i + 8 * k)) for k in range(4)]; i += 32
        h = (rotl(v[0], 1) + rotl(v[1], 7) + rotl(v[2], 12) + rotl(v[3], 18)) & M
        for x in v: h = merge(h, x)
    else: h = P5
    h = (h + n) & M
    while i + 8 <= n: h = (rotl(h ^ rnd(0, u64(i)), 27) * P1 + P4) & M; i += 8
    if i + 4 <= n: h = (rotl(h ^ ((int.from_bytes(d[i:i + 4], 'little') * P1) & M), 23) * P2 + P3) & M; i += 4
    while i < n: h = (rotl(h ^ ((d[i] * P5) & M), 11) * P1) & M; i += 1
    h ^= h >> 33; h = (h * P2) & M; h ^= h >> 29; h = (h * P3) & M; h ^= h >> 32
    return '%016x' % h
def digest(kind, data): return xxh64(data) if kind == 'xxh64' else hashlib.new(kind, data).hexdigest()
def c4(data):
    n, s = int.from_bytes(hashlib.sha512(data).digest(), 'big'), ''
    while n: n, r = divmod(n, 58); s = '123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz'[r] + s
    return 'c4' + s.rjust(88, '1')
NS = {'m': 'urn:ASC:MHL:v2.0', 'd': 'urn:ASC:MHL:DIRECTORY:v2.0'}
$1
PY
}

@test "xxh64 of the test's own python matches the reference vectors" {
	run py 'print(xxh64(b""), xxh64(b"abc"), xxh64(bytes(range(256)) * 3))'
	assert_success
	# The first two are XXH64's published values; the third (more than 32 bytes) must agree with fusedcp's.
	[[ ${output%% *} == ef46db3751d8e999 ]]
	[[ $output == "ef46db3751d8e999 44bc2cf5ad770999 "* ]]
	python3 -c 'import sys; sys.stdout.buffer.write(bytes(range(256)) * 3)' >"$BED_DIR/vec"
	run --separate-stderr bed_in_client "$FUSED_BIN/fusedcp" --checksum xxh64 --json "$BED_DIR/vec" "$BED_DIR/vec.copy"
	assert_success
	[[ $(jq -r '.[0].checksum.value' <<<"$output") == "$(py 'print(xxh64(bytes(range(256)) * 3))')" ]]
	[[ $(rc_sha "$BED_DIR/vec") == "$(rc_sha "$BED_DIR/vec.copy")" ]]
}

@test "fusedcp -r --mhl onto the fused mount: the tree, an ASC MHL generation valid against the XSDs, xxh64 of every file" {
	run --separate-stderr bed_in_client "$FUSED_BIN/fusedcp" -r --mhl --json "$BED_DIR/A001" "$BED_CLI_DIR/A001"
	assert_success
	echo "$output" >"$BED_DIR/gen1.json"
	diff <(bed_tree_sums "$BED_DIR/A001") <(cd "$BED_SRV_DIR/A001" && find . -path ./ascmhl -prune -o -type f -print0 | sort -z | xargs -0 sha256sum)
	# The large clip was written to the device, and hashed as it went.
	[[ $(jq -r '.[] | select(.source | endswith(".mov")) | .write.path' "$BED_DIR/gen1.json") == direct ]]
	local mhl=("$BED_SRV_DIR"/A001/ascmhl/0001_A001_*Z.mhl)
	[[ ${#mhl[@]} -eq 1 && -f ${mhl[0]} ]]
	xmllint --noout --schema "$XSD/ASCMHL.xsd" "${mhl[0]}"
	xmllint --noout --schema "$XSD/ASCMHLDirectory.xsd" "$BED_SRV_DIR/A001/ascmhl/ascmhl_chain.xml"
	# Every file of the tree is in it, with the xxh64 python computes from the source, its size and "transfer".
	run py '
root, mhl = sys.argv[1], ET.parse(sys.argv[2]).getroot()
assert mhl.find("m:processinfo/m:process", NS).text == "transfer"
assert mhl.find("m:creatorinfo/m:tool", NS).text == "fusedcp"
seen = {}
for h in mhl.iterfind("m:hashes/m:hash", NS):
    p = h.find("m:path", NS)
    data = open(os.path.join(root, p.text), "rb").read()
    assert int(p.get("size")) == len(data), p.text
    assert h.find("m:xxh64", NS).text == xxh64(data), p.text
    assert h.find("m:xxh64", NS).get("action") == "original"
    seen[p.text] = 1
files = sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs)
assert sorted(seen) == files, (sorted(seen), files)
print(len(files))' "$BED_DIR/A001" "${mhl[0]}"
	assert_success
	assert_output 5
	# --json carries the same checksums.
	[[ $(jq -r '.[] | select(.source | endswith("/abc")) | .checksum.value' "$BED_DIR/gen1.json") == 44bc2cf5ad770999 ]]
}

@test "a second copy into the same destination adds generation 0002 (md5) and chains both by their C4 IDs" {
	run --separate-stderr bed_in_client "$FUSED_BIN/fusedcp" -r -v --mhl --checksum md5 "$BED_DIR/A002" "$BED_CLI_DIR/A001/"
	assert_success
	[[ $stderr == *"ASC MHL generation 2, 1 file(s)"* ]]
	local dir=$BED_SRV_DIR/A001/ascmhl gen2=("$BED_SRV_DIR"/A001/ascmhl/0002_A001_*Z.mhl)
	[[ -f ${gen2[0]} ]]
	xmllint --noout --schema "$XSD/ASCMHL.xsd" "${gen2[0]}"
	xmllint --noout --schema "$XSD/ASCMHLDirectory.xsd" "$dir/ascmhl_chain.xml"
	[[ $(grep -o '<md5 action="original"[^>]*>[0-9a-f]*' "${gen2[0]}" | sed 's/.*>//') == "$(md5sum <"$BED_DIR/A002/second.mov" | cut -d' ' -f1)" ]]
	grep -q '<path size="600000" [^>]*>A002/second.mov</path>' "${gen2[0]}"
	[[ $(rc_sha "$BED_DIR/A002/second.mov") == "$(rc_sha "$BED_SRV_DIR/A001/A002/second.mov")" ]]
	run py '
chain, folder = ET.parse(sys.argv[1]).getroot(), os.path.dirname(sys.argv[1])
for g in chain.iterfind("d:hashlist", NS):
    f = g.find("d:path", NS).text
    assert g.find("d:c4", NS).text == c4(open(os.path.join(folder, f), "rb").read()), f
    print(g.get("sequencenr"), f[:9])' "$dir/ascmhl_chain.xml"
	assert_success
	assert_output $'1 0001_A001\n2 0002_A001'
}

@test "--checksum md5 and sha256 equal md5sum's and openssl's, read direct off the fused mount; --verify reads the copy back" {
	local clip=$BED_CLI_DIR/A001/CLIPS/"A001C001 & <x>.mov"
	run --separate-stderr bed_in_client "$FUSED_BIN/fusedcp" --checksum sha256 --verify --json "$clip" "$BED_DIR/clip.sha"
	assert_success
	[[ $(jq -r '.[0].path' <<<"$output") == direct ]]
	[[ $(jq -r '.[0].verified' <<<"$output") == true ]]
	[[ $(jq -r '.[0].checksum | "\(.type) \(.value)"' <<<"$output") == "sha256 $(rc_sha "$BED_DIR/A001/CLIPS/A001C001 & <x>.mov")" ]]
	[[ $(rc_sha "$BED_DIR/clip.sha") == "$(rc_sha "$BED_DIR/A001/CLIPS/A001C001 & <x>.mov")" ]]
	run --separate-stderr bed_in_client "$FUSED_BIN/fusedcp" -v --checksum md5 "$clip" "$BED_DIR/clip.md5"
	assert_success
	[[ $stderr == *"md5:$(md5sum <"$BED_DIR/A001/CLIPS/A001C001 & <x>.mov" | cut -d' ' -f1)"* ]]
	[[ $(rc_sha "$BED_DIR/clip.md5") == "$(rc_sha "$BED_DIR/A001/CLIPS/A001C001 & <x>.mov")" ]]
	run --separate-stderr bed_in_client "$FUSED_BIN/fusedcp" --mhl --checksum sha256 "$clip" "$BED_DIR/"
	assert_failure 2
	[[ $stderr == *"sha256 is not an ASC MHL v2.0 hash format"* ]]
}

@test "--mhl-verify: the intact tree passes (read direct); a changed byte is a mismatch naming the file, a deleted file is missing (exit 3)" {
	run --separate-stderr bed_in_client "$FUSED_BIN/fusedcp" --mhl-verify --json "$BED_CLI_DIR/A001"
	assert_success
	[[ $(jq -r '.generations' <<<"$output") == 2 ]]
	[[ $(jq -r '[.files[] | select(.status == "ok")] | length' <<<"$output") == 6 ]]
	[[ $(jq -r '.files[] | select(.path == "CLIPS/A001C001 & <x>.mov") | .read' <<<"$output") == direct ]]
	# One byte changed in place on the server (same blocks: the direct read must see it), one file deleted.
	printf 'Z' | dd of="$BED_SRV_DIR/A001/CLIPS/A001C001 & <x>.mov" bs=1 seek=2000000 conv=notrunc status=none
	rm "$BED_SRV_DIR/A001/abc"
	sync
	run --separate-stderr bed_in_client "$FUSED_BIN/fusedcp" --mhl-verify "$BED_CLI_DIR/A001"
	assert_failure 3
	[[ $stderr == *"A001/CLIPS/A001C001 & <x>.mov: MISMATCH: xxh64 "* ]]
	[[ $stderr == *"A001/abc: missing"* ]]
	[[ $(grep -c MISMATCH <<<"$stderr") -eq 1 ]]
	# A generation edited after the fact breaks its C4 ID in the chain.
	sed -i 's/44bc2cf5ad770999/44bc2cf5ad770998/' "$BED_SRV_DIR"/A001/ascmhl/0001_*.mhl
	run --separate-stderr bed_in_client "$FUSED_BIN/fusedcp" --mhl-verify "$BED_CLI_DIR/A001"
	assert_failure 3
	[[ $stderr == *"0001_A001_"*".mhl: manifest generation changed"* ]]
}

@test "fusedmap --summary --json agrees with the map; a directory sums its files; --svg draws valid XML" {
	local clip=$BED_CLI_DIR/A001/CLIPS/sub\ dir/it\'s\ \"quoted\".mxf
	run --separate-stderr bed_in_client "$FUSED_BIN/fusedmap" --json "$clip"
	assert_success
	echo "$output" >"$BED_DIR/map.json"
	run --separate-stderr bed_in_client "$FUSED_BIN/fusedmap" --summary --json "$clip"
	assert_success
	echo "$output" >"$BED_DIR/summary.json"
	jq -e --slurpfile m "$BED_DIR/map.json" '
		($m[0][0].extents) as $e | .files[0] as $s |
		$s.extents == ($e | length) and $s.size == $m[0][0].size and
		$s.data == ([$e[] | select(.state == "DATA") | .length] | add) and
		$s.largest == ([$e[] | select(.state == "DATA" or .state == "ZERO") | .length] | max) and
		$s.hole == 0 and .total.files == 1' "$BED_DIR/summary.json"
	# A tree: every file once, the total the sum of its rows.
	run --separate-stderr bed_in_client "$FUSED_BIN/fusedmap" --summary --json "$BED_CLI_DIR/A001/CLIPS"
	assert_success
	jq -e '(.files | length) == 2 and .total.size == 4194315 and .total.extents == ([.files[].extents] | add)' <<<"$output"
	run --separate-stderr bed_in_client "$FUSED_BIN/fusedmap" --summary "$BED_CLI_DIR/A001/CLIPS"
	assert_success
	assert_line --regexp '^total +4\.0 MiB '
	run --separate-stderr bed_in_client "$FUSED_BIN/fusedmap" --svg "$BED_DIR/map.svg" "$clip"
	assert_success
	xmllint --noout "$BED_DIR/map.svg"
	# One rectangle per extent on the file bar, one per placed extent on the device bar.
	[[ $(xmllint --xpath 'count(//*[local-name()="g"][@id="file"]/*[local-name()="rect"])' "$BED_DIR/map.svg") -eq $(jq '.[0].extents | length' "$BED_DIR/map.json") ]]
	[[ $(xmllint --xpath 'count(//*[local-name()="g"][@id="device"]/*[local-name()="rect"])' "$BED_DIR/map.svg") -eq $(jq '[.[0].extents[] | select(.state != "HOLE")] | length' "$BED_DIR/map.json") ]]
}
