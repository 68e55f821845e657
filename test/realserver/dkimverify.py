#!/usr/bin/python3
"""Verify every DKIM-Signature of messages with dkimpy, an independent verifier.

Usage: dkimverify.py ZONEFILE MESSAGE...
The TXT records come from ZONEFILE (the lines keygen printed:
NAME. IN TXT ( "..." "..." )), never from DNS. Prints one line per
signature; exits 1 if a message has no signature or any signature fails.
"""
import re
import sys

import dkim


def records(path):
    txt = {}
    for line in open(path, encoding="utf-8"):
        m = re.match(r'^(\S+)\s+(?:\d+\s+)?IN\s+TXT\s+(.*)$', line.strip())
        if m:
            name = m.group(1).rstrip(".").lower()
            txt[name] = "".join(re.findall(r'"([^"]*)"', m.group(2))).encode()
    return txt


def main():
    txt = records(sys.argv[1])

    def dnsfunc(name, timeout=5):
        if isinstance(name, bytes):
            name = name.decode()
        return txt.get(name.rstrip(".").lower())

    bad = 0
    for path in sys.argv[2:]:
        msg = open(path, "rb").read()
        d = dkim.DKIM(msg)
        sigs = [v for (k, v) in d.headers if k.lower() == b"dkim-signature"]
        if not sigs:
            print("FAIL %s: no DKIM-Signature" % path)
            bad += 1
            continue
        for i, sig in enumerate(sigs):
            tags = dict(re.findall(rb'\b([a-z]+)=([^;]*)', re.sub(rb'\s+', b'', sig)))
            what = "d=%s s=%s a=%s" % (tags.get(b"d", b"?").decode(), tags.get(b"s", b"?").decode(), tags.get(b"a", b"?").decode())
            try:
                ok = d.verify(idx=i, dnsfunc=dnsfunc)
                err = ""
            except Exception as e:  # dkimpy raises for a broken signature or record
                ok, err = False, repr(e)
            print("%s %s: signature %d (%s) %s" % ("OK  " if ok else "FAIL", path, i, what, err))
            if not ok:
                bad += 1
    sys.exit(1 if bad else 0)


main()
