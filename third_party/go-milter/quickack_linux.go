package milter

import (
	"net"
	"sync/atomic"
	"syscall"
)

// ackConn is a server session's TCP connection on Linux. It acknowledges
// at once what the MTA sent when the session does not answer it.
//
// Why: the MTA writes several small packets in a row that get no reply
// (macros; with the no-reply protocol options CONNECT, HELO, headers and
// the end of headers). Postfix (3.7) does not set TCP_NODELAY on its milter
// connections, so Nagle's algorithm holds each small write until the one
// before is acknowledged, and Linux delays that acknowledgement by 40 ms
// once the connection looks interactive (the milter has answered before).
// Through Postfix every message waited 40 ms between its DATA macros and
// its headers; over TCP loopback a do-nothing milter ran at 0.75 of its
// rate over a unix socket.
//
// TCP_QUICKACK sends a pending acknowledgement now and leaves the
// interactive mode, which the kernel enters again whenever the milter
// replies; so it is set before each read that follows a read with no write
// in between (also in the middle of a packet whose rest is held). After a
// reply nothing is done: the reply carried the acknowledgement.
type ackConn struct {
	net.Conn
	raw syscall.RawConn
	// unacked: the last read returned data and nothing was written since.
	unacked atomic.Bool
}

// withQuickAck returns c as an ackConn when it is a TCP connection, and c
// itself otherwise (unix sockets have no acknowledgements).
func withQuickAck(c net.Conn) net.Conn {
	sc, ok := c.(syscall.Conn)
	if !ok || c.LocalAddr() == nil || c.LocalAddr().Network() != "tcp" {
		return c
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return c
	}
	return &ackConn{Conn: c, raw: raw}
}

func (c *ackConn) Read(b []byte) (int, error) {
	if c.unacked.Swap(false) {
		_ = c.raw.Control(func(fd uintptr) {
			_ = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_QUICKACK, 1)
		})
	}
	n, err := c.Conn.Read(b)
	if n > 0 {
		c.unacked.Store(true)
	}
	return n, err
}

func (c *ackConn) Write(b []byte) (int, error) {
	c.unacked.Store(false)
	return c.Conn.Write(b)
}
