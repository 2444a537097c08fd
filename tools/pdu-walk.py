#!/usr/bin/env python3
"""Walk raw iSCSI byte streams PDU by PDU (python3 stdlib only).

Usage:
  pdu-walk.py [-v] [--digests auto|none|header|data|both] STREAM.bin [...]

Each STREAM is one direction of one or more TCP connections, concatenated in
connection order (as written by tools/capture-testdata): NAME.i2t.bin holds
initiator->target bytes, NAME.t2i.bin target->initiator bytes.

PDU layout walked (RFC 7143 section 11):
  48-byte BHS; byte 4 = TotalAHSLength (4-byte words); bytes 5..7 =
  DataSegmentLength (24-bit big endian); then AHS; then a 4-byte header
  digest (when HeaderDigest=CRC32C is in effect); then the data segment
  padded to a multiple of 4; then a 4-byte data digest (when
  DataDigest=CRC32C is in effect and DataSegmentLength > 0).

Digests never cover Login PDUs: they are switched on for the PDUs that follow
the login phase of a connection.  A Login PDU seen in full-feature phase means
a new connection began (streams of several connections are concatenated), so
the walker then switches digests off again until that login completes.

--digests auto (default): the negotiated HeaderDigest/DataDigest of every
connection is read from the Login PDUs' text of the stream and of its sibling
(NAME.t2i.bin for NAME.i2t.bin and vice versa, when it exists).  Every digest
found is checked (CRC32C); a mismatch is an error.

Exit status 0 when every stream walks to exactly its end with no leftover
bytes and every digest is correct; 1 otherwise.
"""

import argparse
import collections
import os
import signal
import sys

OPCODES = {
    0x00: "NOP-Out",
    0x01: "SCSI Command",
    0x02: "Task Management Request",
    0x03: "Login Request",
    0x04: "Text Request",
    0x05: "SCSI Data-Out",
    0x06: "Logout Request",
    0x10: "SNACK Request",
    0x1C: "Vendor 0x1c",
    0x1D: "Vendor 0x1d",
    0x1E: "Vendor 0x1e",
    0x20: "NOP-In",
    0x21: "SCSI Response",
    0x22: "Task Management Response",
    0x23: "Login Response",
    0x24: "Text Response",
    0x25: "SCSI Data-In",
    0x26: "Logout Response",
    0x31: "R2T",
    0x32: "Asynchronous Message",
    0x3C: "Vendor 0x3c",
    0x3D: "Vendor 0x3d",
    0x3E: "Vendor 0x3e",
    0x3F: "Reject",
}

LOGIN_OPS = (0x03, 0x23)


def _crc32c_table():
    poly = 0x82F63B78
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ poly if c & 1 else c >> 1
        table.append(c)
    return table


_CRC_TABLE = _crc32c_table()


def crc32c(data):
    crc = 0xFFFFFFFF
    t = _CRC_TABLE
    for b in data:
        crc = t[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def digest_bytes(data):
    # iSCSI sends the CRC32C value least significant byte first.
    return crc32c(data).to_bytes(4, "little")


class WalkError(Exception):
    pass


def login_phase_ends(bhs):
    """True for a Login PDU with T=1 and NSG=FullFeaturePhase (3)."""
    return (bhs[1] & 0x80) != 0 and (bhs[1] & 0x03) == 3


def walk(buf, per_conn_digests, collect_login_text=False):
    """Yield dicts describing each PDU.

    per_conn_digests: callable(conn_index) -> (header_digest, data_digest).
    """
    off = 0
    conn = -1
    full_feature = False
    hd = dd = False
    n = len(buf)
    while off < n:
        if n - off < 48:
            raise WalkError("offset %d: %d leftover bytes, less than a BHS" % (off, n - off))
        bhs = buf[off:off + 48]
        op = bhs[0] & 0x3F
        if op in LOGIN_OPS and (conn < 0 or full_feature):
            conn += 1
            full_feature = False
            hd = dd = False
        elif conn < 0:
            # stream does not start with a login (should not happen here)
            conn = 0
        ahs_len = bhs[4] * 4
        dlen = int.from_bytes(bhs[5:8], "big")
        pos = off + 48 + ahs_len
        hdig_ok = None
        if hd:
            if pos + 4 > n:
                raise WalkError("offset %d: truncated header digest" % off)
            want = digest_bytes(buf[off:pos])
            hdig_ok = buf[pos:pos + 4] == want
            pos += 4
        padded = (dlen + 3) & ~3
        if pos + padded > n:
            raise WalkError("offset %d (%s): data segment of %d bytes runs past end (%d)"
                            % (off, OPCODES.get(op, hex(op)), dlen, n))
        data = buf[pos:pos + dlen]
        ddig_ok = None
        if dd and dlen > 0:
            if pos + padded + 4 > n:
                raise WalkError("offset %d: truncated data digest" % off)
            want = digest_bytes(buf[pos:pos + padded])
            ddig_ok = buf[pos + padded:pos + padded + 4] == want
            end = pos + padded + 4
        else:
            end = pos + padded
        yield {
            "offset": off,
            "length": end - off,
            "conn": conn,
            "opcode": op,
            "immediate": bool(bhs[0] & 0x40),
            "flags": bhs[1],
            "ahs_len": ahs_len,
            "dlen": dlen,
            "itt": int.from_bytes(bhs[16:20], "big"),
            "bhs": bhs,
            "data": data,
            "hdigest_ok": hdig_ok,
            "ddigest_ok": ddig_ok,
        }
        if op in LOGIN_OPS and login_phase_ends(bhs):
            full_feature = True
            hd, dd = per_conn_digests(conn)
        off = end


def login_keys(buf):
    """Per connection: list of (key, value) in Login PDU text, in order.

    Walks only as far as the login phases need: digests are irrelevant
    to Login PDUs, so the (possibly unknown) digest setting is guessed by
    trying the four combinations until the stream walks.
    """
    best = None  # (bytes walked, texts) of the attempt that got farthest
    for combo in ((False, False), (True, False), (True, True), (False, True)):
        texts = collections.defaultdict(bytes)
        reached = 0
        try:
            for p in walk(buf, lambda c, combo=combo: combo):
                if p["opcode"] in LOGIN_OPS:
                    texts[p["conn"]] += p["data"]
                reached = p["offset"] + p["length"]
        except WalkError:
            if best is None or reached > best[0]:
                best = (reached, texts)
            continue
        best = (reached, texts)
        break
    # If no combination walks the whole stream, the main walk reports why.
    conns = collections.defaultdict(list)
    for c, t in best[1].items():
        for kv in t.split(b"\0"):
            if b"=" in kv:
                k, v = kv.split(b"=", 1)
                conns[c].append((k.decode("ascii", "replace"), v.decode("ascii", "replace")))
    return conns


def negotiated(mine, sibling, key, i_am_t2i):
    """Negotiated result for key on one connection.

    The responder's single value is the result; a list (with a comma) is an
    offer, whose answer is on the other side.
    """
    t2i = mine if i_am_t2i else sibling
    i2t = sibling if i_am_t2i else mine
    for side in (t2i, i2t):
        vals = [v for k, v in side if k == key]
        if vals and "," not in vals[-1]:
            return vals[-1]
    return None


def sibling_path(path):
    if path.endswith(".i2t.bin"):
        return path[: -len(".i2t.bin")] + ".t2i.bin", False
    if path.endswith(".t2i.bin"):
        return path[: -len(".t2i.bin")] + ".i2t.bin", True
    return None, None


def describe(p):
    op = p["opcode"]
    name = OPCODES.get(op, "opcode 0x%02x" % op)
    extra = ""
    if op in (0x03, 0x23, 0x04, 0x24) and p["data"]:
        kv = [x.decode("ascii", "replace") for x in p["data"].split(b"\0") if x]
        extra = " " + " ".join(kv)
    b = p["bhs"]
    u32 = lambda i: int.from_bytes(b[i:i + 4], "big")  # noqa: E731
    if op == 0x01:
        extra = " cmdsn=%08x edtl=%d cdb=%s" % (u32(24), u32(20), b[32:48].hex())
    elif op == 0x23:
        extra = " status=%02x%02x" % (b[36], b[37]) + extra
    elif op == 0x21:
        extra = " response=%02x status=%02x statsn=%08x resid=%d" % (b[2], b[3], u32(24), u32(44))
    elif op == 0x02:
        extra = " function=%d rtt=%08x" % (b[1] & 0x7F, u32(20))
    elif op == 0x22:
        extra = " response=%d" % b[2]
    elif op in (0x00, 0x20):
        extra = " ttt=%08x" % u32(20)
    elif op == 0x31:
        extra = " ttt=%08x r2tsn=%d offset=%d length=%d" % (u32(20), u32(36), u32(40), u32(44))
    elif op == 0x25:
        extra = " datasn=%d offset=%d" % (u32(36), u32(40))
        if b[1] & 0x01:
            extra += " status=%02x resid=%d" % (b[3], u32(44))
    elif op == 0x05:
        extra = " ttt=%08x datasn=%d offset=%d" % (u32(20), u32(36), u32(40))
    elif op == 0x26:
        extra = " response=%d" % b[2]
    dig = ""
    if p["hdigest_ok"] is not None:
        dig += " HD=%s" % ("ok" if p["hdigest_ok"] else "BAD")
    if p["ddigest_ok"] is not None:
        dig += " DD=%s" % ("ok" if p["ddigest_ok"] else "BAD")
    return "  @%-6d conn%d 0x%02x %-24s %s flags=%02x itt=%08x dlen=%-5d%s%s" % (
        p["offset"], p["conn"], op, name, "I" if p["immediate"] else "-", p["flags"], p["itt"],
        p["dlen"], dig, extra)


def main():
    if hasattr(signal, "SIGPIPE"):
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("streams", nargs="+")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every PDU")
    ap.add_argument("--digests", default="auto", choices=["auto", "none", "header", "data", "both"])
    args = ap.parse_args()

    failed = False
    for path in args.streams:
        with open(path, "rb") as f:
            buf = f.read()
        try:
            if args.digests == "auto":
                mine = login_keys(buf)
                sib_path, i_am_t2i = sibling_path(path)
                if sib_path and os.path.exists(sib_path):
                    with open(sib_path, "rb") as f:
                        sib = login_keys(f.read())
                else:
                    sib, i_am_t2i = {}, path.endswith(".t2i.bin")

                def per_conn(c, mine=mine, sib=sib, t2i=i_am_t2i):
                    hd = negotiated(mine.get(c, []), sib.get(c, []), "HeaderDigest", t2i)
                    dd = negotiated(mine.get(c, []), sib.get(c, []), "DataDigest", t2i)
                    return hd == "CRC32C", dd == "CRC32C"
            else:
                fixed = (args.digests in ("header", "both"), args.digests in ("data", "both"))

                def per_conn(c, fixed=fixed):
                    return fixed

            counts = collections.Counter()
            npdu = 0
            conns = set()
            bad_digests = 0
            digests_checked = 0
            lines = []
            for p in walk(buf, per_conn):
                npdu += 1
                conns.add(p["conn"])
                counts[p["opcode"]] += 1
                for k in ("hdigest_ok", "ddigest_ok"):
                    if p[k] is not None:
                        digests_checked += 1
                        if not p[k]:
                            bad_digests += 1
                if args.verbose:
                    lines.append(describe(p))
            print("%s: %d bytes, %d PDUs, %d connection(s), walked to exact end"
                  % (path, len(buf), npdu, len(conns)))
            for line in lines:
                print(line)
            for op in sorted(counts):
                print("  0x%02x %-26s %d" % (op, OPCODES.get(op, "?"), counts[op]))
            if digests_checked:
                print("  digests checked: %d, bad: %d" % (digests_checked, bad_digests))
            if bad_digests:
                failed = True
        except WalkError as e:
            print("%s: ERROR %s" % (path, e))
            failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
