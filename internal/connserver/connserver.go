// Package connserver runs the persistent-connection servers of
// mxdetour-policyd (policy delegation and socketmap): many clients, one
// request at a time per connection, idle timeouts, a connection limit, and
// a shutdown that answers the requests in flight before closing.
package connserver

import (
	"bufio"
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// Options bound what clients may do.
type Options struct {
	IdleTimeout    time.Duration // close a connection idle this long (at the earliest half of it)
	MaxConnections int           // refuse (close at once) connections beyond this
	MaxRequestSize int           // bytes; the protocol closes the connection beyond this
}

// Session serves one connection until it returns. It calls c.Await before
// reading each request and c.Done after answering it.
type Session func(c *Conn)

// Stats counts since start.
type Stats struct {
	Accepted, Refused, Open, Requests, Malformed, Panics atomic.Int64
}

// Server accepts connections and runs a Session on each.
type Server struct {
	opts    Options
	session Session
	log     *zap.Logger
	stats   Stats

	mu      sync.Mutex
	ln      net.Listener
	conns   map[*Conn]struct{}
	closing atomic.Bool
	wg      sync.WaitGroup
}

// New returns a server running session on every connection.
func New(opts Options, session Session, log *zap.Logger) *Server {
	if opts.IdleTimeout <= 0 {
		opts.IdleTimeout = 5 * time.Minute
	}
	if opts.MaxConnections <= 0 {
		opts.MaxConnections = 1000
	}
	if opts.MaxRequestSize <= 0 {
		opts.MaxRequestSize = 64 << 10
	}
	return &Server{opts: opts, session: session, log: log, conns: map[*Conn]struct{}{}}
}

// Stats returns the counters.
func (s *Server) Stats() *Stats { return &s.stats }

// Options returns the options in effect, defaults filled in.
func (s *Server) Options() Options { return s.opts }

// Serve accepts on ln until Shutdown. It returns nil after Shutdown.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	s.ln = ln
	s.mu.Unlock()
	var delay time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if s.closing.Load() {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				time.Sleep(delay)
				continue
			}
			return err
		}
		delay = 0
		s.stats.Accepted.Add(1)
		if s.stats.Open.Load() >= int64(s.opts.MaxConnections) {
			s.stats.Refused.Add(1)
			s.log.Warn("too many connections; closing a new one", zap.Int("max_connections", s.opts.MaxConnections))
			nc.Close()
			continue
		}
		c := &Conn{Conn: nc, R: bufio.NewReaderSize(nc, 4096), W: bufio.NewWriterSize(nc, 4096), srv: s}
		s.mu.Lock()
		s.conns[c] = struct{}{}
		s.mu.Unlock()
		s.stats.Open.Add(1)
		s.wg.Add(1)
		go s.run(c)
	}
}

func (s *Server) run(c *Conn) {
	defer func() {
		if p := recover(); p != nil {
			s.stats.Panics.Add(1)
			s.log.Error("connection handler panicked; connection closed", zap.Any("panic", p), zap.Stack("stack"))
		}
		c.Close()
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		s.stats.Open.Add(-1)
		s.wg.Done()
	}()
	s.session(c)
}

// Shutdown stops accepting, wakes idle connections so they close, lets
// requests in flight be answered, and waits for all connections to end or
// ctx to expire (then closes the rest).
func (s *Server) Shutdown(ctx context.Context) error {
	s.closing.Store(true)
	s.mu.Lock()
	if s.ln != nil {
		s.ln.Close()
	}
	for c := range s.conns {
		c.wake()
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		s.mu.Lock()
		for c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
		<-done
		return ctx.Err()
	}
}

// Conn is one client connection.
type Conn struct {
	net.Conn
	R   *bufio.Reader
	W   *bufio.Writer
	srv *Server

	mu       sync.Mutex
	busy     bool
	deadline time.Time // the read deadline in force
}

// Await waits for the first byte of the next request, up to the idle
// timeout. It returns false when the connection should end: the client
// closed it or was idle too long, or the server is shutting down.
func (c *Conn) Await() bool {
	if c.srv.closing.Load() {
		return false
	}
	// Moving a deadline costs a runtime timer update; at tens of thousands
	// of requests a second, move it only when a good part of it is used.
	now := time.Now()
	if c.deadline.Sub(now) < c.srv.opts.IdleTimeout/2 {
		c.deadline = now.Add(c.srv.opts.IdleTimeout)
		_ = c.SetReadDeadline(c.deadline)
	}
	if _, err := c.R.Peek(1); err != nil {
		return false
	}
	c.mu.Lock()
	c.busy = true
	c.mu.Unlock()
	c.srv.stats.Requests.Add(1)
	return true
}

// Done marks the request answered.
func (c *Conn) Done() {
	c.mu.Lock()
	c.busy = false
	c.mu.Unlock()
}

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

// wake interrupts an idle wait so the connection ends (shutdown).
func (c *Conn) wake() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.busy {
		_ = c.SetReadDeadline(time.Now())
	}
}
