#!/usr/bin/env python3
"""Raw fused-protocol client for tests: handshake, then send each request and print each reply.

Usage: fusedproto.py HOST:PORT [--secret-file F | --no-auth] [--node N] REQUEST...
A REQUEST is a line without its LF; backslash escapes are decoded (\\x00 sends a NUL byte).
Greeting and handshake replies go to stderr, replies to the requests to stdout, one line each.
When the server closes the connection, prints CLOSED and stops. Exit 0, or 1 on a reply timeout.
"""
import argparse, codecs, hashlib, hmac, socket, sys

MULTI = {"MAP", "VOLUMES"}  # replies with data lines closed by END


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("server")
    ap.add_argument("--secret-file")
    ap.add_argument("--secret")
    ap.add_argument("--no-auth", action="store_true")
    ap.add_argument("--node", default="cli")
    ap.add_argument("--timeout", type=float, default=10)
    ap.add_argument("requests", nargs="*")
    a = ap.parse_intermixed_args()
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
        challenge = dict(f.split("=", 1) for f in greeting.split(" ")[2:] if "=" in f)["challenge"]
        secret = a.secret.encode() if a.secret is not None else open(a.secret_file, "rb").read().rstrip()
        send(f"HELLO {a.node} 1".encode())
        r = reply(sys.stderr)
        msg = b"fused-auth-v1\n" + challenge.encode() + b"\n" + a.node.encode()
        send(b"AUTH " + hmac.new(secret, msg, hashlib.sha256).hexdigest().encode())
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
        if reply(sys.stdout) is None:
            return


if __name__ == "__main__":
    main()
