# Verify every DKIM-Signature of a message with dkimpy (Debian's
# python3-dkim), independently of go-msgauth. Usage:
#   verify.py MESSAGE NAME=TXT ...   (NAME = selector._domainkey.domain)
import sys, dkim
keys = {}
for a in sys.argv[2:]:
    n, v = a.split("=", 1)
    keys[n.lower()] = v.encode()
def dnsfunc(name, timeout=5):
    n = name.decode() if isinstance(name, bytes) else name
    return keys.get(n.rstrip(".").lower())
msg = open(sys.argv[1], "rb").read()
hdr = msg.replace(b"\r\n", b"\n").split(b"\n\n")[0].split(b"\n")
n = sum(1 for l in hdr if l.lower().startswith(b"dkim-signature:"))
ok_all = n > 0
for i in range(n):
    try:
        ok = dkim.DKIM(msg).verify(idx=i, dnsfunc=dnsfunc)
        why = ""
    except Exception as e:
        ok, why = False, " (%s)" % e
    print("signature #%d: %s%s" % (i, "PASS" if ok else "FAIL", why))
    ok_all = ok_all and ok
sys.exit(0 if ok_all else 1)
