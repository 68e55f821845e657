// Package connserver runs the persistent-connection servers of
// mxdetour-policyd (Postfix policy delegation, SMTPD_POLICY_README, and
// socketmap_table(5)): many clients, one request at a time per connection,
// idle timeouts, a connection limit, and a shutdown that answers the
// requests in flight before closing.
//
// Hostile or broken clients must never lock Postfix out, for on the
// socketmap wiring a refused connection is a 451 for all incoming mail.
// So when the limit is reached, the connection that has waited longest
// for its next request is closed to make room (Postfix's policy and
// socketmap clients reconnect on their next request), a failing Accept
// (EMFILE and the like) is retried with a backoff, and the warnings for
// both are rate-limited.
package connserver

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.uber.org/zap"
)

// Options bound what clients may do.
type Options struct {
	IdleTimeout time.Duration // close a connection idle this long (at the earliest half of it)
	// MaxConnections caps open connections; beyond it the longest-idle one
	// is closed to make room, or, when every one has a request in flight,
	// the new one.
	MaxConnections int
	MaxRequestSize int // bytes; the protocol closes the connection beyond this
}

// Session serves one connection until it returns. It calls c.Await before
// reading each request and c.Done after answering it.
type Session func(c *Conn)

// Stats counts since start.
type Stats struct {
	Accepted, Refused, Evicted, AcceptErrors, Open, Requests, Malformed, Panics atomic.Int64
}

const (
	// warnEvery is the rate limit of each kind of warning.
	warnEvery = 10 * time.Second
	// stallGrace is how long a client may take to finish sending a request,
	// or to take its answer, before its connection may be closed to make
	// room. Postfix sends a request in one write and reads its answer at
	// once, so only a stalled or hostile client ever takes this long.
	stallGrace = time.Second
	// Accept errors are retried after a pause that doubles from
	// minBackoff to maxBackoff, as net/http does.
	minBackoff, maxBackoff = 5 * time.Millisecond, time.Second
)

// Server accepts connections and runs a Session on each.
type Server struct {
	opts       Options
	session    Session
	log        *zap.Logger
	stats      Stats
	epoch      time.Time     // Conn.since counts from here (monotonic)
	stallGrace time.Duration // stallGrace; shorter in tests

	evictions, refusals, acceptErrs *limitedWarning

	mu      sync.Mutex
	ln      net.Listener
	conns   []*Conn // open connections; Conn.idx is the position
	closing atomic.Bool
	done    chan struct{} // closed by Shutdown
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
	limit := zap.Int("max_connections", opts.MaxConnections)
	return &Server{
		opts: opts, session: session, log: log, epoch: time.Now(), stallGrace: stallGrace,
		done: make(chan struct{}),
		evictions: newLimitedWarning(log, warnEvery,
			"connection limit reached: closed the longest-idle connections to make room; their clients reconnect", limit),
		refusals: newLimitedWarning(log, warnEvery,
			"connection limit reached with a request in flight on every connection: closed new connections", limit),
		acceptErrs: newLimitedWarning(log, warnEvery, "accepting connections failed; retrying"),
	}
}

// Stats returns the counters.
func (s *Server) Stats() *Stats { return &s.stats }

// Options returns the options in effect, defaults filled in.
func (s *Server) Options() Options { return s.opts }

// Serve accepts on ln until Shutdown, and returns nil after Shutdown. A
// failing Accept is retried after a backoff, whatever the error, unless ln
// was closed by someone else: then Serve returns that error.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	s.ln = ln
	s.mu.Unlock()
	if s.closing.Load() {
		ln.Close()
		return nil
	}
	var delay time.Duration
	for {
		nc, err := ln.Accept()
		if err == nil {
			delay = 0
			s.admit(nc)
			continue
		}
		if s.closing.Load() {
			return nil
		}
		if errors.Is(err, net.ErrClosed) {
			return err
		}
		delay = backoff(delay)
		s.stats.AcceptErrors.Add(1)
		s.acceptErrs.add(zap.Error(err), zap.Duration("retry_in", delay))
		if errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) {
			// Out of descriptors: an idle client gives one back.
			s.evictOne()
		}
		if !s.sleep(delay) {
			return nil
		}
	}
}

// backoff is the pause after an accept error that followed a pause of d.
func backoff(d time.Duration) time.Duration {
	return min(max(2*d, minBackoff), maxBackoff)
}

// sleep waits d; false when Shutdown came first.
func (s *Server) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-s.done:
		return false
	}
}

// admit registers nc and starts its session, closing the longest-idle
// connection when the limit is reached, or nc itself when none is idle.
func (s *Server) admit(nc net.Conn) {
	s.stats.Accepted.Add(1)
	c := newConn(nc, s)
	s.mu.Lock()
	if s.closing.Load() {
		s.mu.Unlock()
		nc.Close()
		return
	}
	var victim *Conn
	if len(s.conns) >= s.opts.MaxConnections {
		if victim = s.claimVictimLocked(); victim == nil {
			s.mu.Unlock()
			s.stats.Refused.Add(1)
			s.refusals.add()
			nc.Close()
			return
		}
	}
	c.idx = len(s.conns)
	s.conns = append(s.conns, c)
	s.stats.Open.Add(1)
	s.wg.Add(1)
	s.mu.Unlock()
	if victim != nil {
		s.evicted(victim)
	}
	go s.run(c)
}

// evictOne closes the longest-idle connection, if there is one.
func (s *Server) evictOne() {
	s.mu.Lock()
	victim := s.claimVictimLocked()
	s.mu.Unlock()
	if victim != nil {
		s.evicted(victim)
	}
}

func (s *Server) evicted(c *Conn) {
	s.stats.Evicted.Add(1)
	c.Conn.Close()
	s.evictions.add()
}

// claimVictimLocked picks the connection that has waited longest for its
// next request (or, stallGrace after the server first saw it stalled, for
// the rest of a request or for the client to take its answer), marks it
// closed and forgets it. It never picks one with a request being
// answered. It returns nil when there is none.
//
// The scan is O(n), but it runs only at the limit; the request path pays
// a store and a compare-and-swap on its own connection's state word, and
// takes no shared lock (Await).
func (s *Server) claimVictimLocked() *Conn {
	now := int64(time.Since(s.epoch))
	grace := int64(s.stallGrace)
	// A candidate may start a request between the scan and the claim;
	// then scan again. Each retry means a request was served meanwhile.
	for range 4 {
		var best *Conn
		var bestV, bestSince int64
		for _, c := range s.conns {
			v := c.state.Load()
			st, since := unpack(v)
			switch {
			case st == stIdle:
			case st == stStalled && since == 0:
				// First seen stalled: its grace starts now.
				c.state.CompareAndSwap(v, pack(stStalled, now))
				continue
			case st == stStalled && now-since >= grace:
			default:
				continue
			}
			if best == nil || since < bestSince {
				best, bestV, bestSince = c, v, since
			}
		}
		if best == nil {
			return nil
		}
		// The CAS also fails if the connection stalled anew, so the grace
		// is never counted from an earlier stall.
		if best.state.CompareAndSwap(bestV, stClosed) {
			s.forgetLocked(best)
			return best
		}
	}
	return nil
}

// forgetLocked removes c from the open connections, once.
func (s *Server) forgetLocked(c *Conn) {
	if c.idx < 0 {
		return
	}
	last := s.conns[len(s.conns)-1]
	s.conns[c.idx], last.idx = last, c.idx
	s.conns[len(s.conns)-1] = nil
	s.conns = s.conns[:len(s.conns)-1]
	c.idx = -1
	s.stats.Open.Add(-1)
}

func (s *Server) run(c *Conn) {
	defer func() {
		if p := recover(); p != nil {
			s.stats.Panics.Add(1)
			s.log.Error("connection handler panicked; connection closed", zap.Any("panic", p), zap.Stack("stack"))
		}
		c.Conn.Close()
		s.mu.Lock()
		s.forgetLocked(c)
		s.mu.Unlock()
		s.wg.Done()
	}()
	s.session(c)
}

// Shutdown stops accepting, closes idle connections, lets requests in
// flight be answered, and waits for all connections to end or ctx to
// expire (then closes the rest).
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	if s.closing.Swap(true) {
		s.mu.Unlock()
	} else {
		close(s.done)
		if s.ln != nil {
			s.ln.Close()
		}
		for _, c := range s.conns {
			if v := c.state.Load(); v&stateMask == stIdle && c.state.CompareAndSwap(v, stClosed) {
				c.Conn.Close()
			}
		}
		s.mu.Unlock()
	}
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		s.mu.Lock()
		for _, c := range s.conns {
			c.Conn.Close()
		}
		s.mu.Unlock()
		<-done
		err = ctx.Err()
	}
	s.evictions.stop()
	s.refusals.stop()
	s.acceptErrs.stop()
	return err
}
