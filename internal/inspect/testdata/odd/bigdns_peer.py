#!/usr/bin/env python3
"""Scripted authoritative DNS responder for the fragmented-EDNS capture: answers every query
with 16 TXT records of 250 bytes (~4 KB), the size DNSSEC answers reach, so over UDP on a
1500-byte MTU link the answer leaves in IP fragments. Bound to the address given (the netns
end of a veth pair that make.sh creates); exits after a fixed number of queries."""
import socket, struct, sys

addr, count = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_INET6 if ":" in addr else socket.AF_INET, socket.SOCK_DGRAM)
s.bind((addr, 53))
for _ in range(count):
    q, peer = s.recvfrom(4096)
    qend = 12
    while q[qend] != 0:
        qend += 1 + q[qend]
    qend += 5
    hdr = q[:2] + struct.pack(">HHHHH", 0x8400, 1, 16, 0, 0)
    rr = b"".join(b"\xc0\x0c" + struct.pack(">HHIH", 16, 1, 60, 251) + bytes([250]) + bytes([ord("a") + i]) * 250 for i in range(16))
    s.sendto(hdr + q[12:qend] + rr, peer)
