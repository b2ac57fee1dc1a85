#!/usr/bin/python3
"""tests/node/rawscu.py — a minimal DICOM upper-layer SCU on a raw socket, for what the DCMTK
tools will not send: a C-STORE whose command UIDs come from the file's meta header whatever the
dataset says, a presentation context the node must refuse, and a P-DATA cut off mid-dataset.
Explicit VR Little Endian datasets only. Not a general DICOM library.

  rawscu.py store HOST PORT CALLING CALLED FILE...
      one association; per file a C-STORE with Affected SOP Class/Instance UID taken from the
      meta header and the dataset bytes as stored after it. Prints per file:
      "FILE status=0xXXXX comment=TEXT" ("refused" when its context was not accepted)
  rawscu.py propose HOST PORT CALLING CALLED SOP_CLASS_UID...
      prints "SOP_CLASS result=N" per proposed context (0 accepted, 3 abstract syntax not
      supported, ...), then releases
  rawscu.py hold HOST PORT CALLING CALLED SECONDS
      opens a Verification association, prints "held", keeps it open SECONDS (or until stdin
      closes), then releases: to fill the node's association slots
  rawscu.py partial HOST PORT CALLING CALLED FILE abort|close
      sends the C-STORE command and half the dataset in non-last fragments, then sends
      A-ABORT (abort) or just closes the socket (close)
Exit 0 when the association was accepted (per-file failures are in the output), 2 if rejected.
"""
import socket
import struct
import sys

EXPLICIT_LE = "1.2.840.10008.1.2.1"
APP_CTX = "1.2.840.10008.3.1.1.1"


def pad_uid(s):
    b = s.encode()
    return b + b"\0" if len(b) % 2 else b


def item(t, payload):
    return struct.pack(">BBH", t, 0, len(payload)) + payload


def recv_exact(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("connection closed by the node")
        buf += chunk
    return buf


def recv_pdu(sock):
    hdr = recv_exact(sock, 6)
    t, _, n = struct.unpack(">BBI", hdr)
    return t, recv_exact(sock, n)


def associate(host, port, calling, called, abstracts):
    sock = socket.create_connection((host, port), timeout=20)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    body = struct.pack(">HH", 1, 0) + called.ljust(16).encode() + calling.ljust(16).encode() + b"\0" * 32
    body += item(0x10, APP_CTX.encode())
    for i, a in enumerate(abstracts):
        pc = struct.pack(">BBBB", 2 * i + 1, 0, 0, 0) + item(0x30, a.encode()) + item(0x40, EXPLICIT_LE.encode())
        body += item(0x20, pc)
    ui = item(0x51, struct.pack(">I", 65536)) + item(0x52, b"1.2.826.0.1.3680043.10.1138.0.2")
    body += item(0x50, ui)
    sock.sendall(struct.pack(">BBI", 1, 0, len(body)) + body)
    t, data = recv_pdu(sock)
    if t == 3:
        _, result, source, reason = struct.unpack(">BBBB", data[:4])
        print("rejected result=%d source=%d reason=%d" % (result, source, reason))
        sys.exit(2)
    if t != 2:
        raise RuntimeError("unexpected PDU type %d" % t)
    results, max_pdu = {}, 16384
    off = 68
    while off < len(data):
        it, _, n = struct.unpack(">BBH", data[off:off + 4])
        v = data[off + 4:off + 4 + n]
        if it == 0x21:
            results[v[0]] = v[2]
        elif it == 0x50:
            o = 0
            while o < len(v):
                st, _, sn = struct.unpack(">BBH", v[o:o + 4])
                if st == 0x51:
                    max_pdu = struct.unpack(">I", v[o + 4:o + 8])[0] or 65536
                o += 4 + sn
        off += 4 + n
    return sock, {a: results.get(2 * i + 1, 99) for i, a in enumerate(abstracts)}, \
        {a: 2 * i + 1 for i, a in enumerate(abstracts)}, max_pdu


def elem(group, el, value):
    return struct.pack("<HHI", group, el, len(value)) + value


def store_command(sop_class, sop_inst, msg_id):
    body = elem(0, 0x0002, pad_uid(sop_class)) + elem(0, 0x0100, struct.pack("<H", 1)) + \
        elem(0, 0x0110, struct.pack("<H", msg_id)) + elem(0, 0x0700, struct.pack("<H", 0)) + \
        elem(0, 0x0800, struct.pack("<H", 0)) + elem(0, 0x1000, pad_uid(sop_inst))
    return elem(0, 0x0000, struct.pack("<I", len(body))) + body


def pdata(sock, ctx, data, command, last):
    ctl = (1 if command else 0) | (2 if last else 0)
    pdv = struct.pack(">IBB", len(data) + 2, ctx, ctl) + data
    sock.sendall(struct.pack(">BBI", 4, 0, len(pdv)) + pdv)


def send_fragments(sock, ctx, data, command, max_pdu, last=True):
    step = max(max_pdu - 12, 1024)
    chunks = [data[i:i + step] for i in range(0, len(data), step)] or [b""]
    for i, c in enumerate(chunks):
        pdata(sock, ctx, c, command, last and i == len(chunks) - 1)


def read_file(path):
    """(sop class, sop instance from the META header, dataset bytes after the meta header)."""
    raw = open(path, "rb").read()
    assert raw[128:132] == b"DICM", path
    off, meta = 132, {}
    while off < len(raw):
        g, e = struct.unpack("<HH", raw[off:off + 4])
        if g != 2:
            break
        vr = raw[off + 4:off + 6]
        if vr in (b"OB", b"OW", b"UN", b"SQ", b"UT"):
            n = struct.unpack("<I", raw[off + 8:off + 12])[0]
            v, off = raw[off + 12:off + 12 + n], off + 12 + n
        else:
            n = struct.unpack("<H", raw[off + 6:off + 8])[0]
            v, off = raw[off + 8:off + 8 + n], off + 8 + n
        meta[e] = v.rstrip(b"\0 ").decode(errors="replace")
    assert meta.get(0x10) == EXPLICIT_LE, "%s: not Explicit VR Little Endian" % path
    return meta[2], meta[3], raw[off:]


def read_response(sock):
    cmd = b""
    while True:
        t, data = recv_pdu(sock)
        if t != 4:
            raise RuntimeError("expected P-DATA, got PDU type %d" % t)
        off, done = 0, False
        while off < len(data):
            n, _, ctl = struct.unpack(">IBB", data[off:off + 6])
            cmd += data[off + 6:off + 4 + n]
            off += 4 + n
            done = done or (ctl & 3) == 3
        if done:
            break
    status, comment, off = None, "", 0
    while off < len(cmd):
        g, e, n = struct.unpack("<HHI", cmd[off:off + 8])
        v = cmd[off + 8:off + 8 + n]
        if (g, e) == (0, 0x0900):
            status = struct.unpack("<H", v)[0]
        elif (g, e) == (0, 0x0902):
            comment = v.rstrip(b"\0 ").decode(errors="replace")
        off += 8 + n
    return status, comment


def release(sock):
    sock.sendall(struct.pack(">BBI", 5, 0, 4) + b"\0" * 4)
    try:
        recv_pdu(sock)
    finally:
        sock.close()


def main():
    mode, host, port, calling, called = sys.argv[1:6]
    port, rest = int(port), sys.argv[6:]
    if mode == "propose":
        sock, res, _, _ = associate(host, port, calling, called, rest)
        for a in rest:
            print("%s result=%d" % (a, res[a]))
        release(sock)
        return 0
    if mode == "hold":
        sock, res, _, _ = associate(host, port, calling, called, ["1.2.840.10008.1.1"])
        print("held", flush=True)
        import select
        select.select([sys.stdin], [], [], float(rest[0]))
        release(sock)
        return 0
    files = [(f,) + read_file(f) for f in (rest if mode == "store" else rest[:1])]
    classes = sorted({f[1] for f in files})
    sock, res, ids, max_pdu = associate(host, port, calling, called, classes)
    if mode == "partial":
        f, cls, inst, data = files[0]
        pdata(sock, ids[cls], store_command(cls, inst, 1), True, True)
        half = data[:len(data) // 4 * 2]   # even: DICOM fragments have even length
        send_fragments(sock, ids[cls], half, False, max_pdu, last=False)
        if rest[1] == "abort":
            sock.sendall(struct.pack(">BBI", 7, 0, 4) + b"\0\0\0\0")
        sock.close()
        print("sent %d of %d dataset bytes, then %s" % (len(half), len(data), rest[1]))
        return 0
    for n, (f, cls, inst, data) in enumerate(files, 1):
        if res[cls] != 0:
            print("%s refused result=%d" % (f, res[cls]))
            continue
        pdata(sock, ids[cls], store_command(cls, inst, n), True, True)
        send_fragments(sock, ids[cls], data, False, max_pdu)
        status, comment = read_response(sock)
        print("%s status=0x%04x comment=%s" % (f, status, comment))
    release(sock)
    return 0


if __name__ == "__main__":
    sys.exit(main())
