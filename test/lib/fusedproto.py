#!/usr/bin/env python3
"""Raw fused-protocol client for tests: handshake, then send each request and print each reply.

Usage: fusedproto.py HOST:PORT [--secret-file MASTER | --secret MASTER | --key-file KEY | --no-auth] [--node N] REQUEST...
--secret-file and --secret give the map server's master secret (the node key is derived from it, as
fusedctl key does); --key-file a node key as fusedctl key prints it, used as it is.
A REQUEST is a line without its LF; backslash escapes are decoded (\\x00 sends a NUL byte).
Greeting and handshake replies go to stderr, then "server proof: ok" or "server proof: MISMATCH" (the
handshake goes on either way: this is a test client, it lets the server have its say); replies to the
requests go to stdout, one line each.
When the server closes the connection, prints CLOSED and stops. Exit 0, or 1 on a reply timeout.
--no-wait sends the requests and closes the connection without reading their replies (a client that leaves
while its requests are being answered); --repeat N does the whole connection N times, one after another.
"""
import argparse, codecs, hashlib, hmac, os, socket, sys, urllib.parse

VERSION = 2

MULTI = {"MAP", "VOLUMES", "ALLOC", "LIMITS"}  # replies with data lines closed by END


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("server")
    ap.add_argument("--secret-file")
    ap.add_argument("--secret")
    ap.add_argument("--key-file")
    ap.add_argument("--no-auth", action="store_true")
    ap.add_argument("--node", default="cli")
    ap.add_argument("--timeout", type=float, default=10)
    ap.add_argument("--no-wait", action="store_true")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("requests", nargs="*")
    a = ap.parse_intermixed_args()
    for _ in range(a.repeat):
        connection(a)


def connection(a):
    host, port = a.server.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=a.timeout)
    rf = sock.makefile("rb")

    def readline():
        try:
            line = rf.readline()
        except socket.timeout:
            print("TIMEOUT")
            sys.exit(1)
        if not line:
            return None
        return line.rstrip(b"\n").decode("latin-1")

    def reply(out):
        """Read one reply (skipping nothing: pushes are printed as they come)."""
        while True:
            first = readline()
            if first is None:
                print("CLOSED", file=out)
                return None
            print(first, file=out)
            if first.startswith("! "):
                continue
            parts = first.split(" ")
            if parts[0] == "OK" and len(parts) > 1 and parts[1] in MULTI:
                while True:
                    line = readline()
                    if line is None:
                        print("CLOSED", file=out)
                        return None
                    print(line, file=out)
                    if line == "END":
                        break
            return first

    def send(line: bytes):
        sock.sendall(line + b"\n")

    greeting = readline()
    print(greeting, file=sys.stderr)
    if greeting is None or not greeting.startswith("FUSED "):
        print("NO GREETING", file=sys.stderr)
        sys.exit(1)
    if not a.no_auth:
        fields = dict(f.split("=", 1) for f in greeting.split(" ")[2:] if "=" in f)
        challenge, server_node = fields["challenge"], urllib.parse.unquote(fields["node"])
        if a.key_file is not None:
            key = open(a.key_file, "rb").read().rstrip()
        else:
            master = a.secret.encode() if a.secret is not None else open(a.secret_file, "rb").read().rstrip()
            key = hmac.new(master, b"fused-node-key-v1\n" + a.node.encode(), hashlib.sha256).hexdigest().encode()
        mine = os.urandom(32).hex()
        send(f"HELLO {a.node} {VERSION} {mine}".encode())
        r = reply(sys.stderr)
        if r is None:
            print("CLOSED")
            return
        got = dict(f.split("=", 1) for f in r.split(" ")[2:] if "=" in f).get("proof", "")
        want = hmac.new(key, f"fused-server-v2\n{challenge}\n{mine}\n{a.node}\n{server_node}".encode(), hashlib.sha256).hexdigest()
        print("server proof: " + ("ok" if hmac.compare_digest(got, want) else "MISMATCH"), file=sys.stderr)
        msg = f"fused-auth-v2\n{challenge}\n{mine}\n{a.node}".encode()
        send(b"AUTH " + hmac.new(key, msg, hashlib.sha256).hexdigest().encode())
        r = reply(sys.stderr)
        if r is None:
            print("CLOSED")
            return
        if not r.startswith("OK AUTH"):
            print(r)  # ERR AUTHFAIL: the server closes the connection next
            while (line := readline()) is not None:
                print(line)
            print("CLOSED")
            return
    for req in a.requests:
        send(codecs.decode(req, "unicode_escape").encode("latin-1"))
        if not a.no_wait and reply(sys.stdout) is None:
            return
    sock.close()


if __name__ == "__main__":
    main()
