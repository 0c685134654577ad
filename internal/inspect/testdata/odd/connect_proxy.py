#!/usr/bin/env python3
"""Minimal HTTP CONNECT proxy for the tunnel capture (Debian 12's squid is not installed here):
answers CONNECT with 200 and relays bytes both ways; loopback targets only; serves N tunnels."""
import socket, sys, threading

host, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
assert host.startswith("127."), "loopback only"

def pipe(a, b):
    while True:
        d = a.recv(65536)
        if not d:
            b.shutdown(socket.SHUT_WR)
            return
        b.sendall(d)

ls = socket.socket(); ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); ls.bind((host, port)); ls.listen(4)
for _ in range(count):
    c, _ = ls.accept()
    req = b""
    while b"\r\n\r\n" not in req:
        req += c.recv(4096)
    target = req.split(b" ")[1].decode()
    th, tp = target.rsplit(":", 1)
    assert th.startswith("127."), "loopback targets only"
    u = socket.create_connection((th, int(tp)))
    c.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
    t = threading.Thread(target=pipe, args=(u, c)); t.start()
    pipe(c, u)
    t.join(); c.close(); u.close()
