#!/usr/bin/python3
"""tests/outbox/statusscp.py — a Storage SCP on a raw socket that answers each C-STORE with a
status chosen by the test, for what storescp cannot do: Warning statuses (0107, 0116, 0001,
Bxxx) and failures such as 0110. It accepts Verification and any storage SOP class in Explicit
VR Little Endian (else Implicit), reads and drops the data set, and serves one association at
a time until killed. Not a general DICOM library; no TLS.

  statusscp.py PORT AE STATUS[@SECONDS][,STATUS[@SECONDS]...]
      the n-th C-STORE gets the n-th STATUS (hex), the last one repeating, SECONDS after the
      data set arrived (default 0). Prints per C-STORE "C-STORE SOP_INSTANCE_UID -> 0xXXXX"
      (flushed) when the data set has arrived, and "listening" once it accepts.
"""
import os
import socket
import struct
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "node"))
from rawscu import item, recv_pdu  # noqa: E402  (the PDU framing of the raw SCU beside the node tests)

EXPLICIT_LE = "1.2.840.10008.1.2.1"
IMPLICIT_LE = "1.2.840.10008.1.2"
APP_CTX = "1.2.840.10008.3.1.1.1"
IMPL_UID = "1.2.826.0.1.3680043.10.1138.0.3"


def send_pdu(sock, t, body):
    sock.sendall(struct.pack(">BBI", t, 0, len(body)) + body)


def elem(el, value):
    if len(value) % 2:
        value += b"\0" if el in (0x0002, 0x1000) else b" "
    return struct.pack("<HHI", 0, el, len(value)) + value


def parse_command(cmd):
    out, off = {}, 0
    while off + 8 <= len(cmd):
        _, e, n = struct.unpack("<HHI", cmd[off:off + 8])
        out[e] = cmd[off + 8:off + 8 + n]
        off += 8 + n
    return out


def accept(sock, rq):
    """A-ASSOCIATE-AC for rq: each context accepted in explicit (else implicit) little endian."""
    called, calling = rq[4:20], rq[20:36]
    body = rq[0:4] + called + calling + b"\0" * 32 + item(0x10, APP_CTX.encode())
    off = 68
    while off + 4 <= len(rq):
        it, _, n = struct.unpack(">BBH", rq[off:off + 4])
        v = rq[off + 4:off + 4 + n]
        if it == 0x20:
            syntaxes, o = [], 4
            while o + 4 <= len(v):
                st, _, sn = struct.unpack(">BBH", v[o:o + 4])
                if st == 0x40:
                    syntaxes.append(v[o + 4:o + 4 + sn].rstrip(b"\0 ").decode())
                o += 4 + sn
            ts = EXPLICIT_LE if EXPLICIT_LE in syntaxes else IMPLICIT_LE if IMPLICIT_LE in syntaxes else None
            result = 0 if ts else 4   # 4: transfer syntaxes not supported
            body += item(0x21, struct.pack(">BBBB", v[0], 0, result, 0) +
                         item(0x40, (ts or EXPLICIT_LE).encode()))
        off += 4 + n
    body += item(0x50, item(0x51, struct.pack(">I", 65536)) + item(0x52, IMPL_UID.encode()))
    send_pdu(sock, 2, body)


def serve(conn, statuses, count):
    t, rq = recv_pdu(conn)
    if t != 1:
        return count
    accept(conn, rq)
    cmd, data = b"", b""
    while True:
        t, body = recv_pdu(conn)
        if t == 5:                      # A-RELEASE-RQ
            send_pdu(conn, 6, b"\0" * 4)
            return count
        if t != 4:                      # abort or anything else: drop the connection
            return count
        off = 0
        while off + 6 <= len(body):
            n, ctx, ctl = struct.unpack(">IBB", body[off:off + 6])
            frag = body[off + 6:off + 4 + n]
            off += 4 + n
            if ctl & 1:
                cmd += frag
            else:
                data += frag
            if not (ctl & 2):
                continue
            c = parse_command(cmd)
            field = struct.unpack("<H", c[0x0100])[0]
            has_data = struct.unpack("<H", c.get(0x0800, b"\x01\x01"))[0] != 0x0101
            if ctl & 1 and has_data:
                continue                # the data set follows
            msg_id = c[0x0110]
            if field == 0x0030:         # C-ECHO-RQ
                rsp = elem(0x0002, c[0x0002]) + elem(0x0100, struct.pack("<H", 0x8030)) + \
                    elem(0x0120, msg_id) + elem(0x0800, struct.pack("<H", 0x0101)) + \
                    elem(0x0900, struct.pack("<H", 0))
            else:                       # C-STORE-RQ: the test's status
                status, delay = statuses[min(count, len(statuses) - 1)]
                count += 1
                inst = c[0x1000].rstrip(b"\0 ").decode()
                print("C-STORE %s -> 0x%04x" % (inst, status), flush=True)
                time.sleep(delay)
                rsp = elem(0x0002, c[0x0002]) + elem(0x0100, struct.pack("<H", 0x8001)) + \
                    elem(0x0120, msg_id) + elem(0x0800, struct.pack("<H", 0x0101)) + \
                    elem(0x0900, struct.pack("<H", status))
                if status:
                    rsp += elem(0x0902, b"statusscp answers 0x%04x" % status)
                rsp += elem(0x1000, c[0x1000])
            rsp = elem(0x0000, struct.pack("<I", len(rsp))) + rsp
            pdv = struct.pack(">IBB", len(rsp) + 2, ctx, 3) + rsp
            send_pdu(conn, 4, pdv)
            cmd, data = b"", b""


def main():
    port = int(sys.argv[1])   # argv[2], the AE title, is not checked: any called AE is served
    statuses = [(int(s.partition("@")[0], 16), float(s.partition("@")[2] or 0)) for s in sys.argv[3].split(",")]
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", port))
    srv.listen(8)
    print("listening", flush=True)
    count = 0
    while True:
        conn, _ = srv.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn.settimeout(30)
        try:
            count = serve(conn, statuses, count)
        except (ConnectionError, socket.timeout, struct.error, KeyError):
            pass
        finally:
            conn.close()


if __name__ == "__main__":
    sys.exit(main())
