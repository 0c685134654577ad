#!/usr/bin/env python3
"""Scripted WebSocket peer on loopback (Debian 12 ships no websocket client/server):
a real HTTP/1.1 Upgrade handshake (RFC 6455 accept key) then masked binary and text frames
from the client and unmasked frames from the server, over a real TCP socket."""
import base64, hashlib, os, socket, struct, sys, threading

HOST, PORT = sys.argv[1], int(sys.argv[2])
assert HOST.startswith("127."), "loopback only"
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

def frame(op, payload, mask):
    hdr = bytes([0x80 | op])
    n = len(payload)
    mbit = 0x80 if mask else 0
    hdr += bytes([mbit | n]) if n < 126 else bytes([mbit | 126]) + struct.pack(">H", n)
    if not mask:
        return hdr + payload
    k = os.urandom(4)
    return hdr + k + bytes(b ^ k[i % 4] for i, b in enumerate(payload))

def server(ls):
    c, _ = ls.accept()
    req = b""
    while b"\r\n\r\n" not in req:
        req += c.recv(4096)
    key = [l.split(b":", 1)[1].strip() for l in req.split(b"\r\n") if l.lower().startswith(b"sec-websocket-key")][0]
    acc = base64.b64encode(hashlib.sha1(key + GUID).digest())
    c.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " + acc + b"\r\n\r\n")
    for _ in range(3):
        c.recv(65536)
        c.sendall(frame(2, bytes(range(256)) * 2, False))
    c.recv(65536)
    c.close()

ls = socket.socket(); ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); ls.bind((HOST, PORT)); ls.listen(1)
t = threading.Thread(target=server, args=(ls,)); t.start()
s = socket.create_connection((HOST, PORT))
key = base64.b64encode(os.urandom(16))
s.sendall(b"GET /chat HTTP/1.1\r\nHost: " + HOST.encode() + b"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n\r\n")
resp = b""
while b"\r\n\r\n" not in resp:
    resp += s.recv(4096)
for i in range(3):
    s.sendall(frame(2 if i % 2 == 0 else 1, (b"\x00\x01binary-%d" % i) * 20, True))
    s.recv(65536)
s.sendall(frame(8, b"\x03\xe8", True))
t.join()
s.close()
