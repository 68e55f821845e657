#!/usr/bin/env python3
"""Real-server suite (test/realserver): a local client of mxdetour's
Postfix-facing unix sockets, run inside the container as some user
(runuser -u USER -- rs-peer ...), to see whether the socket lets that user
in and the daemon answers.

  rs-peer socketmap PATH [N]        N lookups "transport x@plain-b.zz"
  rs-peer policy PATH LOGIN N [TAG] N RCPT requests of sasl_username=LOGIN
                                    (policy_context=limits), each of its own
                                    transaction (instance TAG.i)
  rs-peer milter PATH [N]           N milter option negotiations (SMFIC_OPTNEG)

Each attempt is its own connection and prints one line:
  connect-failed ERRNO-NAME   the kernel refused the connect (file mode, ...)
  closed                      connected, then closed by the peer unanswered
  timeout                     connected, no answer and not closed in 2 s
  answer TEXT                 the daemon answered (TEXT: its first line)
The exit status is 0 whatever happened: the suite judges the lines.
"""
import errno
import socket
import struct
import sys


def attempt(path, payload, read_answer):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(2)
    try:
        s.connect(path)
    except OSError as e:
        return "connect-failed " + errno.errorcode.get(e.errno, str(e.errno))
    try:
        try:
            s.sendall(payload)
        except OSError:
            pass  # closed before we wrote: reading says so
        try:
            ans = read_answer(s)
        except socket.timeout:
            return "timeout"
        except OSError:
            return "closed"  # ECONNRESET
        return "closed" if ans is None else "answer " + ans
    finally:
        s.close()


def read_until(s, end):
    buf = b""
    while end not in buf:
        d = s.recv(4096)
        if not d:
            return None if not buf else buf
        buf += d
    return buf


def socketmap_answer(s):
    buf = read_until(s, b",")
    if buf is None:
        return None
    n, _, rest = buf.partition(b":")
    return rest[: int(n)].decode(errors="replace")


def policy_answer(s):
    buf = read_until(s, b"\n\n")
    if buf is None:
        return None
    return buf.decode(errors="replace").split("\n")[0]


def milter_answer(s):
    buf = b""
    while len(buf) < 5:
        d = s.recv(4096)
        if not d:
            return None
        buf += d
    (n,) = struct.unpack(">I", buf[:4])
    return "milter command %r, %d bytes" % (buf[4:5].decode(errors="replace"), n)


def main(argv):
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    mode, path = argv[1], argv[2]
    out = []
    if mode == "socketmap":
        n = int(argv[3]) if len(argv) > 3 else 1
        q = b"transport x@plain-b.zz"
        for _ in range(n):
            out.append(attempt(path, b"%d:%s," % (len(q), q), socketmap_answer))
    elif mode == "policy":
        login, n = argv[3], int(argv[4])
        tag = argv[5] if len(argv) > 5 else "rs-peer"
        for i in range(n):
            req = (
                "request=smtpd_access_policy\nprotocol_state=RCPT\nprotocol_name=ESMTP\n"
                "client_address=192.0.2.7\nclient_name=client.rs.zz\nsasl_method=PLAIN\n"
                "sasl_username=%s\nsender=%s@sender-c.zz\nrecipient=r%d@plain-b.zz\n"
                "recipient_count=0\ninstance=%s.%d\nqueue_id=\npolicy_context=limits\n\n"
                % (login, login, i, tag, i)
            )
            out.append(attempt(path, req.encode(), policy_answer))
    elif mode == "milter":
        n = int(argv[3]) if len(argv) > 3 else 1
        # SMFIC_OPTNEG as Postfix sends it: version 6, its actions and
        # protocol flags.
        body = b"O" + struct.pack(">III", 6, 0x1FF, 0x1FFFFF)
        pkt = struct.pack(">I", len(body)) + body
        for _ in range(n):
            out.append(attempt(path, pkt, milter_answer))
    else:
        print(__doc__, file=sys.stderr)
        return 2
    for line in out:
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
