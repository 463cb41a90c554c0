#!/usr/bin/env python3
"""Reference extent map from filefrag -v (ext4) or xfs_io fiemap -v (XFS), compared with fusedmap --json.

Usage: extents.py reference FILE            print the normalised reference map (JSON)
       extents.py compare FUSEDMAP.json FILE  exit 0 when fusedmap's map equals the reference, else a diff
Normalised like the fusedmap contract: bytes, clipped to the file size, holes as HOLE (physical null),
unwritten as ZERO, inline/unaligned/unknown/delalloc as NETWORK, physically contiguous neighbours merged.
"""
import json, os, re, subprocess, sys

EXT4_NET = {"inline", "not_aligned", "unknown_loc", "delalloc", "encoded", "data_encrypted"}
XFS_UNWRITTEN, XFS_NET = 0x800, 0x1 << 1 | 0x4 | 0x8 | 0x100 | 0x200  # UNKNOWN DELALLOC ENCODED NOT_ALIGNED INLINE


def raw_filefrag(path):
    out = subprocess.run(["filefrag", "-v", "-s", path], check=True, capture_output=True).stdout.decode("latin-1")
    bs = int(re.search(r"blocks of (\d+) bytes\)", out).group(1))
    rx = re.compile(r"^\s*\d+:\s*(\d+)\.\.\s*(\d+):\s*(\d+)\.\.\s*(\d+):\s*(\d+):\s*(?:\d+:)?\s*(\S*)\s*$")
    res = []
    for line in out.splitlines():
        m = rx.match(line)
        if not m:
            continue
        lstart, _, pstart, _, length, flags = m.groups()
        flags = set(flags.split(",")) if flags else set()
        state = "ZERO" if "unwritten" in flags else "NETWORK" if flags & EXT4_NET else "DATA"
        res.append((int(lstart) * bs, int(pstart) * bs, int(length) * bs, state))
    return res


def raw_xfs(path):
    out = subprocess.run(["xfs_io", "-r", "-c", "fsync", "-c", "fiemap -v", path], check=True,
                         capture_output=True).stdout.decode("latin-1")
    rx = re.compile(r"^\s*\d+: \[(\d+)\.\.(\d+)\]:\s+(?:(\d+)\.\.(\d+)|hole)\s+(\d+)(?:\s+(0x[0-9a-f]+))?\s*$")
    res = []
    for line in out.splitlines():
        m = rx.match(line)
        if not m:
            continue
        lstart, _, pstart, _, total, flags = m.groups()
        if pstart is None:
            continue  # holes are re-derived from the gaps
        flags = int(flags or "0x0", 16)
        state = "ZERO" if flags & XFS_UNWRITTEN else "NETWORK" if flags & XFS_NET else "DATA"
        res.append((int(lstart) * 512, int(pstart) * 512, int(total) * 512, state))
    return res


def reference(path):
    size = os.stat(path).st_size
    fstype = subprocess.run(["stat", "-f", "-c", "%T", path], check=True, capture_output=True).stdout.strip()
    raw = raw_xfs(path) if fstype == b"xfs" else raw_filefrag(path)
    out, pos = [], 0

    def add(logical, physical, length, state):
        if out:
            p = out[-1]
            if p["state"] == state and p["logical"] + p["length"] == logical and (
                    state == "HOLE" or p["physical"] + p["length"] == physical):
                p["length"] += length
                return
        out.append({"logical": logical, "physical": physical, "length": length, "state": state})

    for logical, physical, length, state in sorted(raw):
        if logical >= size:
            break
        length = min(length, size - logical)
        if logical > pos:
            add(pos, None, logical - pos, "HOLE")
        add(logical, physical, length, state)
        pos = logical + length
    if pos < size:
        add(pos, None, size - pos, "HOLE")
    return {"size": size, "blockSize": os.statvfs(path).f_bsize, "extents": out}


def compare(jsonfile, path):
    got = json.load(open(jsonfile))
    assert isinstance(got, list) and len(got) == 1, f"expected a JSON array with one file, got {got!r:.200}"
    got = got[0]
    ref = reference(path)
    mine = [{k: e.get(k) for k in ("logical", "physical", "length", "state")} for e in got["extents"]]
    problems = []
    if got.get("size") != ref["size"]:
        problems.append(f"size {got.get('size')} != {ref['size']}")
    if got.get("blockSize") != ref["blockSize"]:
        problems.append(f"blockSize {got.get('blockSize')} != {ref['blockSize']}")
    if [e.get("index") for e in got["extents"]] != list(range(len(mine))):
        problems.append("extent indexes are not 0..n-1")
    if mine != ref["extents"]:
        problems.append("extents differ")
    if problems:
        print("fusedmap vs reference: " + "; ".join(problems))
        print("fusedmap:  " + json.dumps(mine))
        print("reference: " + json.dumps(ref["extents"]))
        sys.exit(1)


if __name__ == "__main__":
    if sys.argv[1] == "reference":
        print(json.dumps(reference(sys.argv[2])))
    elif sys.argv[1] == "compare":
        compare(sys.argv[2], sys.argv[3])
    else:
        sys.exit("usage: extents.py reference FILE | compare FUSEDMAP.json FILE")
