#!/usr/bin/python3
"""Peers for the batch-A DPI test captures (scripts/captures/batch-a.sh).

Real Debian client libraries (poplib, imaplib, smtplib, ftplib, pymongo, pika, kafka-python)
talk to real servers where Debian has one (aiosmtpd, pyftpdlib) and otherwise to the small
scripted servers below, which answer just enough of the protocol for the client to proceed.
Loopback only; every socket has a timeout.
"""
import socket
import socketserver
import struct
import sys
import time

HOST = "127.0.0.1"
TIMEOUT = 10


# ---------------------------------------------------------------- pop3 / imap servers

class POP3Handler(socketserver.StreamRequestHandler):
    MSG = b"From: bob@example.com\r\nSubject: hi\r\n\r\nhello\r\n..dot-stuffed\r\n"

    def handle(self):
        self.request.settimeout(TIMEOUT)
        w = self.wfile.write
        w(b"+OK POP3 server ready <1896.697170952@dbc.mtview.ca.us>\r\n")
        for line in self.rfile:
            cmd = line.split(b" ", 1)[0].strip().upper()
            if cmd == b"CAPA":
                w(b"+OK Capability list follows\r\nUSER\r\nUIDL\r\nTOP\r\n.\r\n")
            elif cmd in (b"USER", b"PASS", b"NOOP", b"DELE", b"RSET"):
                w(b"+OK\r\n")
            elif cmd == b"STAT":
                w(b"+OK 1 %d\r\n" % len(self.MSG))
            elif cmd == b"LIST":
                w(b"+OK 1 messages\r\n1 %d\r\n.\r\n" % len(self.MSG))
            elif cmd == b"UIDL":
                w(b"+OK\r\n1 whqtswO00WBw418f9t5JxYwZ\r\n.\r\n")
            elif cmd == b"RETR":
                w(b"+OK %d octets\r\n" % len(self.MSG) + self.MSG + b".\r\n")
            elif cmd == b"QUIT":
                w(b"+OK bye\r\n")
                return
            else:
                w(b"-ERR unknown command\r\n")


class IMAPHandler(socketserver.StreamRequestHandler):
    MSG = b"From: bob@example.com\r\nSubject: hi\r\n\r\nhello\r\na9 OK not a reply\r\n"

    def handle(self):
        self.request.settimeout(TIMEOUT)
        w = self.wfile.write
        w(b"* OK [CAPABILITY IMAP4rev1 LITERAL+ AUTH=PLAIN] scripted IMAP ready\r\n")
        for line in self.rfile:
            parts = line.rstrip(b"\r\n").split(b" ")
            if len(parts) < 2:
                continue
            tag, cmd = parts[0], parts[1].upper()
            if cmd == b"CAPABILITY":
                w(b"* CAPABILITY IMAP4rev1 LITERAL+ AUTH=PLAIN\r\n" + tag + b" OK done\r\n")
            elif cmd == b"LOGIN":
                w(tag + b" OK [CAPABILITY IMAP4rev1] Logged in\r\n")
            elif cmd in (b"SELECT", b"EXAMINE"):
                w(b"* FLAGS (\\Seen)\r\n* 1 EXISTS\r\n* 0 RECENT\r\n* OK [UIDVALIDITY 1] ok\r\n"
                  + tag + b" OK [READ-WRITE] Select completed\r\n")
            elif cmd == b"FETCH" or (cmd == b"UID" and parts[2].upper() == b"FETCH"):
                w(b"* 1 FETCH (UID 7 RFC822 {%d}\r\n" % len(self.MSG) + self.MSG + b")\r\n"
                  + tag + b" OK Fetch completed\r\n")
            elif cmd == b"LOGOUT":
                w(b"* BYE bye\r\n" + tag + b" OK Logout completed\r\n")
                return
            elif cmd == b"NOOP":
                w(tag + b" OK\r\n")
            else:
                w(tag + b" NO [NONEXISTENT] unknown mailbox\r\n")


# ---------------------------------------------------------------- mongodb server

def mongo_server(port):
    import bson

    def reply_msg(req_id, doc):
        body = struct.pack("<IB", 0, 0) + bson.BSON.encode(doc)
        return struct.pack("<iiii", 16 + len(body), 1000 + req_id, req_id, 2013) + body

    def reply_op(req_id, doc):
        body = struct.pack("<iqii", 8, 0, 0, 1) + bson.BSON.encode(doc)
        return struct.pack("<iiii", 16 + len(body), 1000 + req_id, req_id, 1) + body

    hello = {"ismaster": True, "maxBsonObjectSize": 16777216, "maxMessageSizeBytes": 48000000,
             "maxWriteBatchSize": 100000, "localTime": None, "logicalSessionTimeoutMinutes": 30,
             "minWireVersion": 0, "maxWireVersion": 8, "readOnly": False, "ok": 1.0}

    class H(socketserver.BaseRequestHandler):
        def handle(self):
            s = self.request
            s.settimeout(TIMEOUT)
            buf = b""
            while True:
                while len(buf) < 4 or len(buf) < struct.unpack("<i", buf[:4])[0]:
                    chunk = s.recv(65536)
                    if not chunk:
                        return
                    buf += chunk
                n, req_id, _, op = struct.unpack("<iiii", buf[:16])
                msg, buf = buf[:n], buf[n:]
                if op == 2004:  # OP_QUERY: the legacy handshake
                    s.sendall(reply_op(req_id, hello))
                    continue
                dl = struct.unpack("<i", msg[21:25])[0]
                doc = bson.BSON(msg[21:21 + dl]).decode()
                cmd = next(iter(doc))
                if cmd in ("isMaster", "ismaster", "hello"):
                    out = hello
                elif cmd == "find":
                    out = {"cursor": {"firstBatch": [{"name": "x"}], "id": bson.int64.Int64(0),
                                      "ns": doc["$db"] + "." + doc["find"]}, "ok": 1.0}
                elif cmd == "insert":
                    out = {"n": 1, "ok": 1.0}
                elif cmd == "drop":
                    out = {"ok": 0.0, "errmsg": "not authorized on shop to execute command",
                           "code": 13, "codeName": "Unauthorized"}
                else:
                    out = {"ok": 1.0}
                s.sendall(reply_msg(req_id, out))
    serve(H, port)


def mongo_client(port):
    import pymongo
    c = pymongo.MongoClient(HOST, port, directConnection=True, serverSelectionTimeoutMS=5000,
                            heartbeatFrequencyMS=60000, appname="capture")
    db = c.shop
    db.users.insert_one({"name": "x", "age": 3})
    print(db.users.find_one({"name": "x"}))
    try:
        db.users.drop()
    except pymongo.errors.OperationFailure as e:
        print("drop:", e)
    c.close()


# ---------------------------------------------------------------- amqp server

def amqp_server(port):
    from pika import spec, frame

    class H(socketserver.BaseRequestHandler):
        def handle(self):
            s = self.request
            s.settimeout(TIMEOUT)
            send = lambda ch, m: s.sendall(frame.Method(ch, m).marshal())
            buf = b""
            while len(buf) < 8:
                buf += s.recv(8 - len(buf))
            send(0, spec.Connection.Start(server_properties={
                "product": "RabbitMQ", "version": "3.12.1", "platform": "Erlang/OTP 25",
                "capabilities": {"publisher_confirms": True, "basic.nack": True}},
                mechanisms="PLAIN AMQPLAIN", locales="en_US"))
            buf = b""
            while True:
                while len(buf) < 7 or len(buf) < 8 + struct.unpack(">I", buf[3:7])[0]:
                    chunk = s.recv(65536)
                    if not chunk:
                        return
                    buf += chunk
                typ, ch, size = struct.unpack(">BHI", buf[:7])
                payload, buf = buf[7:7 + size], buf[8 + size:]
                if typ != 1:
                    continue
                idx = struct.unpack(">I", payload[:4])[0]
                m = spec.methods[idx]()
                m.decode(payload, 4)
                name = m.NAME
                if name == "Connection.StartOk":
                    send(0, spec.Connection.Tune(channel_max=2047, frame_max=131072, heartbeat=60))
                elif name == "Connection.Open":
                    send(0, spec.Connection.OpenOk())
                elif name == "Channel.Open":
                    send(ch, spec.Channel.OpenOk())
                elif name == "Exchange.Declare":
                    send(ch, spec.Exchange.DeclareOk())
                elif name == "Queue.Declare":
                    send(ch, spec.Queue.DeclareOk(queue=m.queue, message_count=0, consumer_count=0))
                elif name == "Queue.Bind":
                    send(ch, spec.Queue.BindOk())
                elif name == "Channel.Close":
                    send(ch, spec.Channel.CloseOk())
                elif name == "Connection.Close":
                    send(0, spec.Connection.CloseOk())
                    return
    serve(H, port)


def amqp_client(port):
    import pika
    params = pika.ConnectionParameters(HOST, port, virtual_host="/prod", socket_timeout=5,
                                       credentials=pika.PlainCredentials("guest", "s3cret"))
    conn = pika.BlockingConnection(params)
    ch = conn.channel()
    ch.exchange_declare("events", "topic")
    ch.queue_declare("tasks")
    ch.queue_bind("tasks", "events", "task.*")
    ch.basic_publish("", "tasks", b"hello")
    ch.basic_publish("events", "task.new", b"world")
    conn.close()


# ---------------------------------------------------------------- kafka server

def enc(obj):
    # kafka-python binds encode through a weak reference: keep the object alive while encoding.
    return obj.encode()


def kafka_server(port):
    from kafka.protocol.admin import ApiVersionResponse
    from kafka.protocol.metadata import MetadataResponse
    from kafka.protocol.produce import ProduceResponse

    class H(socketserver.BaseRequestHandler):
        def handle(self):
            s = self.request
            s.settimeout(TIMEOUT)
            buf = b""
            while True:
                while len(buf) < 4 or len(buf) < 4 + struct.unpack(">i", buf[:4])[0]:
                    chunk = s.recv(65536)
                    if not chunk:
                        return
                    buf += chunk
                n = struct.unpack(">i", buf[:4])[0]
                req, buf = buf[4:4 + n], buf[4 + n:]
                key, ver, corr, idlen = struct.unpack(">hhih", req[:10])
                topics = [b"orders"]
                if key == 18:
                    body = enc(ApiVersionResponse[0](error_code=0, api_versions=[
                        (0, 0, 2), (1, 0, 3), (3, 0, 1), (18, 0, 0)]))
                elif key == 3:
                    if ver == 0:
                        body = enc(MetadataResponse[0](brokers=[(0, HOST, port)], topics=[
                            (0, "orders", [(0, 0, 0, [0], [0])])]))
                    else:
                        body = enc(MetadataResponse[1](brokers=[(0, HOST, port, None)], controller_id=0,
                                                   topics=[(0, "orders", False, [(0, 0, 0, [0], [0])])]))
                elif key == 0:
                    body = enc(ProduceResponse[2](topics=[("orders", [(0, 0, 41, -1)])],
                                              throttle_time_ms=0))
                else:
                    continue
                out = struct.pack(">i", corr) + body
                s.sendall(struct.pack(">i", len(out)) + out)
    serve(H, port)


def kafka_client(port):
    from kafka import KafkaProducer
    from kafka.protocol.admin import ApiVersionRequest
    # The version probe many clients start with, then a producer pinned to 0.10.1 wire formats.
    s = socket.create_connection((HOST, port), timeout=5)
    body = enc(ApiVersionRequest[0]())
    hdr = struct.pack(">hhih", 18, 0, 1, 7) + b"rdkafka"
    s.sendall(struct.pack(">i", len(hdr) + len(body)) + hdr + body)
    s.recv(4096)
    s.close()
    p = KafkaProducer(bootstrap_servers=f"{HOST}:{port}", api_version=(0, 10, 1),
                      client_id="capture-producer", request_timeout_ms=5000)
    p.send("orders", b'{"id": 1}').get(timeout=5)
    p.flush()
    p.close(timeout=2)


# ---------------------------------------------------------------- mail / ftp / memcached / redis clients

def pop3_client(port):
    import poplib
    p = poplib.POP3(HOST, port, timeout=5)
    p.capa()
    p.user("bob")
    p.pass_("s3cret")
    p.stat()
    p.list()
    p.retr(1)
    p.dele(1)
    p.quit()


def imap_client(port):
    import imaplib
    m = imaplib.IMAP4(HOST, port, timeout=5)
    m.login("bob", "s3cret")
    m.select("INBOX")
    m.uid("FETCH", "1", "(RFC822)")
    m.fetch("1", "(RFC822)")
    m.select("Nope")
    m.logout()


def smtp_client(port):
    import smtplib
    s = smtplib.SMTP(HOST, port, timeout=5)
    s.ehlo("client.example")
    s.sendmail("bob@example.com", ["alice@example.org", "carol@example.org"],
               b"Subject: hi\r\n\r\nhello\r\n.starts with a dot\r\n")
    s.quit()


def ftp_client(port):
    import ftplib
    f = ftplib.FTP()
    f.connect(HOST, port, timeout=5)
    f.login("anonymous", "guest@example.com")
    f.pwd()
    f.retrlines("LIST")
    f.retrbinary("RETR hello.txt", lambda b: None)
    try:
        f.retrbinary("RETR missing.txt", lambda b: None)
    except ftplib.error_perm as e:
        print(e)
    f.quit()


def memcached_client(port):
    s = socket.create_connection((HOST, port), timeout=5)
    def talk(data, until):
        s.sendall(data)
        buf = b""
        while until not in buf:
            buf += s.recv(4096)
    talk(b"version\r\n", b"\r\n")
    talk(b"set user:1 0 60 5\r\nalice\r\n", b"\r\n")
    talk(b"get user:1 user:2\r\n", b"END\r\n")
    talk(b"incr counter 1\r\n", b"\r\n")
    talk(b"delete user:1\r\n", b"\r\n")
    talk(b"stats slabs\r\n", b"END\r\n")
    s.close()
    # The binary protocol on a second connection: SET then GET then a miss.
    s = socket.create_connection((HOST, port), timeout=5)
    def binreq(op, key, extras=b"", value=b""):
        hdr = struct.pack(">BBHBBHIIQ", 0x80, op, len(key), len(extras), 0, 0,
                          len(key) + len(extras) + len(value), 7, 0)
        s.sendall(hdr + extras + key + value)
        h = b""
        while len(h) < 24:
            h += s.recv(24 - len(h))
        n = struct.unpack(">I", h[8:12])[0]
        while n > 0:
            n -= len(s.recv(n))
    binreq(0x01, b"bin:1", struct.pack(">II", 0, 60), b"value")
    binreq(0x00, b"bin:1")
    binreq(0x00, b"bin:missing")
    binreq(0x0b, b"")
    s.close()


def redis_inline(port):
    s = socket.create_connection((HOST, port), timeout=5)
    for cmd in (b"PING\r\n", b"SET greeting hello\r\n", b"GET greeting\r\n", b"INCR greeting\r\n"):
        s.sendall(cmd)
        s.recv(4096)
    s.close()


def serve(handler, port):
    socketserver.ThreadingTCPServer.allow_reuse_address = True
    socketserver.ThreadingTCPServer.daemon_threads = True
    with socketserver.ThreadingTCPServer((HOST, port), handler) as srv:
        srv.serve_forever()


def main():
    what, port = sys.argv[1], int(sys.argv[2])
    if what == "pop3-server":
        serve(POP3Handler, port)
    elif what == "imap-server":
        serve(IMAPHandler, port)
    else:
        globals()[what.replace("-", "_")](port)


if __name__ == "__main__":
    main()
