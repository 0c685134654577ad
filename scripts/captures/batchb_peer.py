#!/usr/bin/env python3
"""Scripted peers for the batch-B DPI test captures (scripts/captures/batch-b.sh).

Where Debian has no real peer, both sides speak the protocol's wire format from the spec over
real loopback sockets, so the captures have real TCP/UDP framing but synthetic payloads (each
such capture is marked in internal/inspect/testdata/README.md). Where a real client exists
(sipsak, ldapsearch, logger), this script only plays the missing server. Loopback only.
"""
import os
import socket
import struct
import sys
import threading
import time

HOST = "127.0.0.1"


def recv_until(s, marker, limit=65536):
    buf = b""
    while marker not in buf and len(buf) < limit:
        chunk = s.recv(4096)
        if not chunk:
            break
        buf += chunk
    return buf


def tcp_server(port, handler, once=True):
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((HOST, port))
    ls.listen(4)

    def run():
        while True:
            c, _ = ls.accept()
            try:
                handler(c)
            except OSError:
                pass
            finally:
                c.close()
            if once:
                break
        ls.close()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


# --- NATS client against a real nats-server ---------------------------------------------
def nats_client(port):
    s = socket.create_connection((HOST, port), timeout=5)
    recv_until(s, b"\r\n")  # INFO
    s.sendall(b'CONNECT {"verbose":false,"pedantic":false,"name":"mg-test","lang":"python",'
              b'"version":"1.0.0","protocol":1}\r\n')
    s.sendall(b"SUB greet.* 1\r\n")
    s.sendall(b"PUB greet.joe 5\r\nhello\r\n")
    s.sendall(b"PING\r\n")
    recv_until(s, b"PONG\r\n")
    s.sendall(b"UNSUB 1\r\n")
    s.close()


# --- syslog: a listener that drains UDP and TCP --------------------------------------------
def syslog_listen(port, seconds):
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.bind((HOST, port))
    t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    t.bind((HOST, port))
    t.listen(8)
    u.settimeout(0.2)
    t.settimeout(0.2)
    end = time.time() + seconds
    while time.time() < end:
        try:
            u.recvfrom(65536)
        except socket.timeout:
            pass
        try:
            c, _ = t.accept()
            c.settimeout(1)
            try:
                while c.recv(65536):
                    pass
            except socket.timeout:
                pass
            c.close()
        except socket.timeout:
            pass


# --- SIP: a responder for sipsak ---------------------------------------------------------
def sip_reply(req):
    lines = req.split(b"\r\n")
    keep = [l for l in lines[1:] if l.split(b":", 1)[0].strip().lower() in
            (b"via", b"v", b"from", b"f", b"call-id", b"i", b"cseq")]
    to = [l for l in lines[1:] if l.split(b":", 1)[0].strip().lower() in (b"to", b"t")]
    out = [b"SIP/2.0 200 OK"] + keep + [t + b";tag=mg1" for t in to]
    out += [b"Server: mg-sip-responder", b"Content-Length: 0", b"", b""]
    return b"\r\n".join(out)


def sip_responder(port, seconds):
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.bind((HOST, port))
    u.settimeout(0.2)

    def tcp(c):
        req = recv_until(c, b"\r\n\r\n")
        c.sendall(sip_reply(req))
        time.sleep(0.2)

    tcp_server(port, tcp)
    end = time.time() + seconds
    while time.time() < end:
        try:
            req, addr = u.recvfrom(65536)
            u.sendto(sip_reply(req), addr)
        except socket.timeout:
            pass


# --- BER for LDAP -------------------------------------------------------------------------
def ber(tag, content):
    n = len(content)
    if n < 0x80:
        return bytes([tag, n]) + content
    lb = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(lb)]) + lb + content


def ber_read(b):
    tag, l = b[0], b[1]
    off = 2
    if l & 0x80:
        k = l & 0x7F
        l = int.from_bytes(b[2:2 + k], "big")
        off += k
    return tag, b[off:off + l], b[off + l:]


def ldap_result(msgid, app, code=0):
    res = ber(0x0A, bytes([code])) + ber(0x04, b"") + ber(0x04, b"")
    return ber(0x30, ber(0x02, bytes([msgid])) + ber(app, res))


def ldap_responder(port):
    def handle(c):
        buf = b""
        while True:
            chunk = c.recv(65536)
            if not chunk:
                return
            buf += chunk
            while len(buf) >= 2:
                try:
                    _, body, rest = ber_read(buf)
                except IndexError:
                    break
                if len(buf) - len(rest) > len(buf):
                    break
                buf = rest
                _, mid, ops = ber_read(body)
                msgid = mid[-1]
                op = ops[0]
                if op == 0x60:
                    c.sendall(ldap_result(msgid, 0x61))
                elif op == 0x63:
                    _, sreq, _ = ber_read(ops)
                    _, base, _ = ber_read(sreq)
                    entry = ber(0x04, base) + ber(0x30, ber(0x30, ber(0x04, b"objectClass") +
                                                            ber(0x31, ber(0x04, b"top"))))
                    c.sendall(ber(0x30, ber(0x02, bytes([msgid])) + ber(0x64, entry)))
                    c.sendall(ldap_result(msgid, 0x65))
                elif op == 0x42:
                    return

    tcp_server(port, handle).join(10)


# --- RTSP: client and server ----------------------------------------------------------------
def rtsp(port):
    sdp = (b"v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=mg\r\nt=0 0\r\nm=video 0 RTP/AVP 96\r\n"
           b"a=rtpmap:96 H264/90000\r\na=control:track1\r\n")

    def serve(c):
        buf = b""
        while True:
            while b"\r\n\r\n" not in buf:
                chunk = c.recv(4096)
                if not chunk:
                    return
                buf += chunk
            req, buf = buf.split(b"\r\n\r\n", 1)
            method = req.split(b" ", 1)[0]
            cseq = [l for l in req.split(b"\r\n") if l.lower().startswith(b"cseq")][0]
            hdr = b"RTSP/1.0 200 OK\r\n" + cseq + b"\r\nServer: mg-rtsp/1.0\r\n"
            body = b""
            if method == b"OPTIONS":
                hdr += b"Public: OPTIONS, DESCRIBE, SETUP, PLAY, TEARDOWN\r\n"
            elif method == b"DESCRIBE":
                hdr += b"Content-Type: application/sdp\r\n"
                body = sdp
            elif method == b"SETUP":
                hdr += b"Session: 12345678\r\nTransport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n"
            c.sendall(hdr + b"Content-Length: %d\r\n\r\n" % len(body) + body)
            if method == b"PLAY":
                rtp = b"\x80\x60\x00\x01" + b"\x00" * 8 + b"\x65" * 100
                for _ in range(2):
                    c.sendall(b"$\x00" + struct.pack(">H", len(rtp)) + rtp)
            if method == b"TEARDOWN":
                return

    t = tcp_server(port, serve)
    s = socket.create_connection((HOST, port), timeout=5)
    url = b"rtsp://127.0.0.1:%d/live/cam1" % port
    ua = b"User-Agent: mg-rtsp-client/1.0\r\n"
    seq = 1
    for method, extra, u in ((b"OPTIONS", b"", url), (b"DESCRIBE", b"Accept: application/sdp\r\n", url),
                             (b"SETUP", b"Transport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n", url + b"/track1"),
                             (b"PLAY", b"Session: 12345678\r\n", url),
                             (b"TEARDOWN", b"Session: 12345678\r\n", url)):
        s.sendall(method + b" " + u + b" RTSP/1.0\r\nCSeq: %d\r\n" % seq + ua + extra + b"\r\n")
        seq += 1
        time.sleep(0.1)
        s.recv(65536)
    s.close()
    t.join(5)


# --- Cassandra CQL v4: client and server ------------------------------------------------------
def cql_frame(resp, stream, op, body):
    return struct.pack(">BBhBI", 0x84 if resp else 0x04, 0, stream, op, len(body)) + body


def cql_string(s):
    return struct.pack(">H", len(s)) + s


def cql_long_string(s):
    return struct.pack(">I", len(s)) + s


def cassandra(port):
    def serve(c):
        while True:
            hdr = b""
            while len(hdr) < 9:
                chunk = c.recv(9 - len(hdr))
                if not chunk:
                    return
                hdr += chunk
            _, _, stream, op, n = struct.unpack(">BBhBI", hdr)
            body = b""
            while len(body) < n:
                body += c.recv(n - len(body))
            if op == 0x05:  # OPTIONS -> SUPPORTED
                m = struct.pack(">H", 1) + cql_string(b"CQL_VERSION") + struct.pack(">H", 1) + cql_string(b"3.4.5")
                c.sendall(cql_frame(True, stream, 0x06, m))
            elif op == 0x01:  # STARTUP -> READY
                c.sendall(cql_frame(True, stream, 0x02, b""))
            elif op == 0x07:
                q = body[4:4 + struct.unpack(">I", body[:4])[0]]
                if q.upper().startswith(b"USE"):
                    res = struct.pack(">I", 3) + cql_string(b"shop")
                elif q.upper().startswith(b"SELECT"):
                    res = struct.pack(">I", 2) + struct.pack(">III", 0, 0, 0)
                else:
                    res = struct.pack(">I", 1)
                c.sendall(cql_frame(True, stream, 0x08, res))

    t = tcp_server(port, serve)
    s = socket.create_connection((HOST, port), timeout=5)
    s.sendall(cql_frame(False, 0, 0x05, b""))
    s.recv(65536)
    startup = struct.pack(">H", 2) + cql_string(b"CQL_VERSION") + cql_string(b"3.0.0") + \
        cql_string(b"DRIVER_NAME") + cql_string(b"mg-cql-driver")
    s.sendall(cql_frame(False, 1, 0x01, startup))
    s.recv(65536)
    for i, q in enumerate((b"USE shop", b"SELECT id, total FROM orders WHERE id = 42",
                           b"INSERT INTO orders (id, total) VALUES (43, 9.5)")):
        s.sendall(cql_frame(False, 2 + i, 0x07, cql_long_string(q) + struct.pack(">HB", 1, 0)))
        s.recv(65536)
    s.close()
    t.join(5)


# --- ZooKeeper: client and server -----------------------------------------------------------
def zk_rec(b):
    return struct.pack(">I", len(b)) + b


def zk_str(s):
    return struct.pack(">i", len(s)) + s


def zookeeper(port):
    def serve(c):
        first = True
        while True:
            hdr = c.recv(4)
            if len(hdr) < 4:
                return
            n = struct.unpack(">I", hdr)[0]
            body = b""
            while len(body) < n:
                body += c.recv(n - len(body))
            if first:
                first = False
                c.sendall(zk_rec(struct.pack(">iiq", 0, 30000, 0x1000abcd) + zk_str(b"\x00" * 16)))
                continue
            xid, op = struct.unpack(">ii", body[:8])
            if op == 4:  # getData -> data + stat (zeroed)
                c.sendall(zk_rec(struct.pack(">iqi", xid, 7, 0) + zk_str(b"v=1") + b"\x00" * 68))
            elif op == 1:
                c.sendall(zk_rec(struct.pack(">iqi", xid, 8, 0) + zk_str(b"/app/lock")))
            elif op == 3:
                c.sendall(zk_rec(struct.pack(">iqi", xid, 8, -101)))
            elif op == -11:
                c.sendall(zk_rec(struct.pack(">iqi", xid, 9, 0)))
                return
            else:
                c.sendall(zk_rec(struct.pack(">iqi", xid, 8, 0)))

    t = tcp_server(port, serve)
    s = socket.create_connection((HOST, port), timeout=5)
    s.sendall(zk_rec(struct.pack(">iqiq", 0, 0, 30000, 0) + zk_str(b"\x00" * 16) + b"\x00"))
    s.recv(4096)
    reqs = [(1, 4, zk_str(b"/app/config") + b"\x00"),
            (2, 1, zk_str(b"/app/lock") + zk_str(b"") + struct.pack(">i", 0) + struct.pack(">i", 1)),
            (3, 3, zk_str(b"/app/missing") + b"\x01"),
            (-2, 11, b""),
            (4, -11, b"")]
    for xid, op, body in reqs:
        s.sendall(zk_rec(struct.pack(">ii", xid, op) + body))
        s.recv(4096)
    s.close()
    t.join(5)


# --- UDP request/response helper ---------------------------------------------------------------
def udp_exchange(port, requests, reply):
    srv = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    srv.bind((HOST, port))
    srv.settimeout(2)
    cli = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for req in requests:
        cli.sendto(req, (HOST, port))
        data, addr = srv.recvfrom(65536)
        r = reply(data)
        if r:
            srv.sendto(r, addr)
            cli.settimeout(2)
            cli.recvfrom(65536)
    cli.close()
    srv.close()


def stun(port):
    txid = os.urandom(12)
    sw = b"mg-stun-client 1.0"
    attr = struct.pack(">HH", 0x8022, len(sw)) + sw + b"\x00" * (-len(sw) % 4)
    req = struct.pack(">HHI", 0x0001, len(attr), 0x2112A442) + txid + attr

    def reply(d):
        xport = 40000 ^ 0x2112
        xip = struct.unpack(">I", socket.inet_aton(HOST))[0] ^ 0x2112A442
        mapped = struct.pack(">HHBBHI", 0x0020, 8, 0, 1, xport, xip)
        ssw = b"mg-stun-server"
        a = mapped + struct.pack(">HH", 0x8022, len(ssw)) + ssw + b"\x00" * (-len(ssw) % 4)
        return struct.pack(">HHI", 0x0101, len(a), 0x2112A442) + d[8:20] + a

    udp_exchange(port, [req], reply)


def dhcp(port):
    mac = bytes.fromhex("020000aabbcc")
    xid = 0x3903F326

    def packet(op, msgtype, yiaddr=b"\x00" * 4, opts=b""):
        b = struct.pack(">BBBBIHH", op, 1, 6, 0, xid, 0, 0x8000)
        b += b"\x00" * 4 + yiaddr + b"\x00" * 8 + mac + b"\x00" * 10 + b"\x00" * 192
        b += b"\x63\x82\x53\x63" + bytes([53, 1, msgtype]) + opts + b"\xff"
        return b + b"\x00" * (300 - len(b)) if len(b) < 300 else b

    disc = packet(1, 1, opts=bytes([12, 7]) + b"mg-host" + bytes([60, 8]) + b"mg-dhcpc" +
                  bytes([55, 4, 1, 3, 6, 15]))

    def reply(d):
        return packet(2, 2, yiaddr=socket.inet_aton("10.0.0.42"),
                      opts=bytes([54, 4]) + socket.inet_aton("10.0.0.1") + bytes([51, 4, 0, 0, 14, 16]))

    udp_exchange(port, [disc], reply)


def wireguard(port):
    init = b"\x01\x00\x00\x00" + struct.pack("<I", 0x11223344) + os.urandom(140)
    data = b"\x04\x00\x00\x00" + struct.pack("<I", 0x55667788) + struct.pack("<Q", 0) + os.urandom(48)

    def reply(d):
        if d[0] == 1:
            return b"\x02\x00\x00\x00" + struct.pack("<II", 0x55667788, 0x11223344) + os.urandom(80)
        return None

    udp_exchange(port, [init, data], reply)


# --- QUIC v1 client Initial (RFC 9001 5.2 keys) ----------------------------------------------
def quic_initial(port, sni=b"quic.example.test"):
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand
    import hmac
    import hashlib

    def expand_label(secret, label, n):
        info = struct.pack(">HB", n, 6 + len(label)) + b"tls13 " + label + b"\x00"
        return HKDFExpand(hashes.SHA256(), n, info).derive(secret)

    salt = bytes.fromhex("38762cf7f55934b34d179ae6a4c80cadccbb7f0a")
    dcid = os.urandom(8)
    initial = hmac.new(salt, dcid, hashlib.sha256).digest()
    client = expand_label(initial, b"client in", 32)
    key, iv, hp = (expand_label(client, b"quic key", 16), expand_label(client, b"quic iv", 12),
                   expand_label(client, b"quic hp", 16))

    def ext(t, b):
        return struct.pack(">HH", t, len(b)) + b
    sni_ext = ext(0, struct.pack(">HBH", len(sni) + 3, 0, len(sni)) + sni)
    alpn = b"\x02h3"
    alpn_ext = ext(16, struct.pack(">H", len(alpn)) + alpn)
    exts = sni_ext + alpn_ext + ext(43, b"\x02\x03\x04") + ext(0x39, b"\x01\x04\x80\x00\x75\x30")
    body = b"\x03\x03" + os.urandom(32) + b"\x00" + b"\x00\x06\x13\x01\x13\x02\x13\x03" + b"\x01\x00"
    body += struct.pack(">H", len(exts)) + exts
    hello = b"\x01" + len(body).to_bytes(3, "big") + body
    crypto = b"\x06\x00" + struct.pack(">H", 0x4000 | len(hello)) + hello
    pn = 0
    fixed = 1 + 4 + 1 + len(dcid) + 1 + 1 + 2 + 1  # flags, version, cids, token, length, pn
    plain = crypto + b"\x00" * (1200 - fixed - 16 - len(crypto))  # datagram of 1200 bytes
    hdr = b"\xc0" + struct.pack(">I", 1) + bytes([len(dcid)]) + dcid + b"\x00" + b"\x00"
    hdr += struct.pack(">H", 0x4000 | (1 + len(plain) + 16))
    pn_off = len(hdr)
    hdr += bytes([pn])
    nonce = iv[:-1] + bytes([iv[-1] ^ pn])
    ct = AESGCM(key).encrypt(nonce, plain, hdr)
    pkt = bytearray(hdr + ct)
    sample = bytes(pkt[pn_off + 4:pn_off + 20])
    enc = Cipher(algorithms.AES(hp), modes.ECB()).encryptor()
    mask = enc.update(sample) + enc.finalize()
    pkt[0] ^= mask[0] & 0x0F
    pkt[pn_off] ^= mask[1]
    cli = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    cli.sendto(bytes(pkt), (HOST, port))
    cli.close()


if __name__ == "__main__":
    mode, port = sys.argv[1], int(sys.argv[2])
    arg = float(sys.argv[3]) if len(sys.argv) > 3 else 5
    {
        "nats-client": lambda: nats_client(port),
        "syslog-listen": lambda: syslog_listen(port, arg),
        "sip-responder": lambda: sip_responder(port, arg),
        "ldap-responder": lambda: ldap_responder(port),
        "rtsp": lambda: rtsp(port),
        "cassandra": lambda: cassandra(port),
        "zookeeper": lambda: zookeeper(port),
        "stun": lambda: stun(port),
        "dhcp": lambda: dhcp(port),
        "wireguard": lambda: wireguard(port),
        "quic": lambda: quic_initial(port),
    }[mode]()
