package connserver

import (
	"bufio"
	"net"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// A connection's state word packs what it is doing (the low bits) with
// since when (the high bits, ns since srv.epoch), so that one atomic
// operation reads or claims both. Its session goroutine moves it between
// active, idle and stalled; the server moves an idle (or long-stalled) one
// to closed, to make room or to shut down; nothing moves an active one.
const (
	stActive  int64 = iota // a request is being read, decided or answered
	stIdle                 // waiting for the next request (in Await); since: when the wait began
	stStalled              // waiting for the rest of a request, or for the client to take the answer; since: when the server first saw it so, 0 before
	stClosed               // claimed by the server: eviction or shutdown

	stateBits = 2
	stateMask = 1<<stateBits - 1
)

func pack(st, since int64) int64       { return since<<stateBits | st }
func unpack(v int64) (st, since int64) { return v & stateMask, v >> stateBits }

// Conn is one client connection.
type Conn struct {
	net.Conn
	R   *bufio.Reader
	W   *bufio.Writer
	srv *Server

	idx      int       // position in srv.conns, -1 once forgotten; under srv.mu
	deadline time.Time // the read deadline in force; session goroutine only

	// state is what the server reads to choose a connection to close. The
	// request path stores to it, and to no state shared between
	// connections, and calls no clock beyond Await's.
	state atomic.Int64
}

func newConn(nc net.Conn, s *Server) *Conn {
	c := &Conn{Conn: nc, srv: s, idx: -1}
	c.R = bufio.NewReaderSize(tracked{c}, 4096)
	c.W = bufio.NewWriterSize(tracked{c}, 4096)
	return c
}

// Await waits for the first byte of the next request, up to the idle
// timeout. It returns false when the connection should end: the client
// closed it or was idle too long, or the server closed it to make room or
// to shut down.
func (c *Conn) Await() bool {
	s := c.srv
	if s.closing.Load() {
		return false
	}
	// Moving a deadline costs a runtime timer update; at tens of thousands
	// of requests a second, move it only when a good part of it is used.
	// Writes get half an idle timeout more, so that a request that came
	// just before the read deadline still gets its answer.
	now := time.Now()
	if c.deadline.Sub(now) < s.opts.IdleTimeout/2 {
		c.deadline = now.Add(s.opts.IdleTimeout)
		_ = c.Conn.SetReadDeadline(c.deadline)
		_ = c.Conn.SetWriteDeadline(c.deadline.Add(s.opts.IdleTimeout / 2))
	}
	if c.R.Buffered() == 0 {
		idle := pack(stIdle, int64(now.Sub(s.epoch)))
		c.state.Store(idle)
		// Shutdown closes the idle connections after setting closing: if
		// it looked before the Store above, see it here.
		if s.closing.Load() {
			return false
		}
		_, err := c.R.Peek(1)
		// The server may have claimed this connection just as the
		// request came: then it is closed, and the client's retry goes
		// to a new connection.
		if !c.state.CompareAndSwap(idle, stActive) || err != nil {
			return false
		}
	}
	s.stats.Requests.Add(1)
	return true
}

// Done marks the request answered. The connection's state moves in Await
// and in its reads and writes, so Done has nothing left to do; sessions
// call it to mark where a request ends.
func (c *Conn) Done() {}

// Malformed counts a bad request; the session then closes the connection.
func (c *Conn) Malformed(why string, err error) {
	c.srv.stats.Malformed.Add(1)
	c.srv.log.Warn("malformed request; closing the connection", zap.String("why", why),
		zap.Stringer("client", c.RemoteAddr()), zap.Error(err))
}

// Recover turns a panic of a request handler into an error log; the
// session then answers with its safe default.
func (c *Conn) Recover(p any) {
	c.srv.stats.Panics.Add(1)
	c.srv.log.Error("request handler panicked; answering the default", zap.Any("panic", p), zap.Stack("stack"))
}

// tracked is the connection as R and W see it: a read for the rest of a
// request, or a write of an answer, marks the connection stalled while it
// blocks, so that a client that stops halfway cannot hold its place.
// Postfix sends each request in one write, so R's first fill, in Await,
// usually holds all of it and the rest is read from the buffer.
type tracked struct{ c *Conn }

func (t tracked) Read(p []byte) (int, error) {
	c := t.c
	if c.state.Load() != stActive {
		return c.Conn.Read(p) // in Await, or closed
	}
	c.stall()
	n, err := c.Conn.Read(p)
	return c.unstall(n, err)
}

func (t tracked) Write(p []byte) (int, error) {
	c := t.c
	if c.state.Load() != stActive {
		return c.Conn.Write(p)
	}
	c.stall()
	n, err := c.Conn.Write(p)
	return c.unstall(n, err)
}

// stall marks a blocking read or write. Its time is taken by the server
// when it first sees the stall, so that the request path reads no clock.
func (c *Conn) stall() { c.state.Store(stStalled) }

// unstall makes the connection active again, unless the server closed it
// meanwhile.
func (c *Conn) unstall(n int, err error) (int, error) {
	for {
		v := c.state.Load()
		if v&stateMask == stClosed {
			return n, net.ErrClosed
		}
		if c.state.CompareAndSwap(v, stActive) {
			return n, err
		}
	}
}
