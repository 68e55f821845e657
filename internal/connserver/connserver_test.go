package connserver

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"

	"github.com/mxdetour/mxdetour/internal/testutil"
)

// lines is a session answering each line "ok LINE"; handle runs first (it
// may block, to hold a request in flight).
func lines(handle func(line string)) Session {
	return func(c *Conn) {
		for c.Await() {
			line, err := c.R.ReadString('\n')
			if err != nil {
				return
			}
			if handle != nil {
				handle(line)
			}
			c.W.WriteString("ok " + line)
			err = c.W.Flush()
			c.Done()
			if err != nil {
				return
			}
		}
	}
}

// start serves session on a loopback port until the test ends; warnings
// go to the returned observer as well as to the test log.
func start(t testing.TB, opts Options, session Session) (*Server, string, *observer.ObservedLogs) {
	t.Helper()
	core, logs := observer.New(zapcore.WarnLevel)
	log := zap.New(zapcore.NewTee(zaptest.NewLogger(t).Core(), core))
	s := New(opts, session, log)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return s, ln.Addr().String(), logs
}

// client is one test connection.
type client struct {
	net.Conn
	r *bufio.Reader
}

func dial(t testing.TB, addr string) *client {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &client{c, bufio.NewReader(c)}
}

// ask sends line and returns the answer, waiting at most a second.
func (c *client) ask(line string) (string, error) {
	c.SetDeadline(time.Now().Add(time.Second))
	if _, err := fmt.Fprintf(c, "%s\n", line); err != nil {
		return "", err
	}
	a, err := c.r.ReadString('\n')
	return strings.TrimSuffix(a, "\n"), err
}

// closedByServer reports whether the server closed c (EOF or reset
// within a second).
func (c *client) closedByServer() bool {
	c.SetReadDeadline(time.Now().Add(time.Second))
	_, err := c.r.ReadByte()
	var ne net.Error
	return err != nil && !(errors.As(err, &ne) && ne.Timeout())
}

// idleCount is the number of connections waiting in Await.
func idleCount(s *Server) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, c := range s.conns {
		if st, _ := unpack(c.state.Load()); st == stIdle {
			n++
		}
	}
	return n
}

func messages(logs *observer.ObservedLogs, msg string) []int64 {
	var counts []int64
	for _, e := range logs.FilterMessage(msg).All() {
		counts = append(counts, e.ContextMap()["count"].(int64))
	}
	return counts
}

func TestLongestIdleMakesRoom(t *testing.T) {
	s, addr, _ := start(t, Options{MaxConnections: 3}, lines(nil))
	var cs []*client
	for i := range 3 {
		c := dial(t, addr)
		if a, err := c.ask(fmt.Sprint(i)); err != nil || a != fmt.Sprintf("ok %d", i) {
			t.Fatalf("client %d: %q, %v", i, a, err)
		}
		cs = append(cs, c)
		testutil.Eventually(t, "the client's connection idle", func() bool { return idleCount(s) == i+1 })
	}
	// cs[0] has waited longest, but a request makes cs[1] the oldest.
	if _, err := cs[0].ask("again"); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, "three idle connections", func() bool { return idleCount(s) == 3 })
	late := dial(t, addr)
	if a, err := late.ask("late"); err != nil || a != "ok late" {
		t.Fatalf("a client over the limit: %q, %v; want its answer", a, err)
	}
	if !cs[1].closedByServer() {
		t.Error("the longest-idle connection is still open")
	}
	for _, i := range []int{0, 2} {
		if a, err := cs[i].ask("still"); err != nil || a != "ok still" {
			t.Errorf("client %d lost its connection: %q, %v", i, a, err)
		}
	}
	if got := s.Stats().Evicted.Load(); got != 1 {
		t.Errorf("Evicted = %d, want 1", got)
	}
}

func TestRequestInFlightIsNeverClosed(t *testing.T) {
	release := make(chan struct{})
	s, addr, logs := start(t, Options{MaxConnections: 2}, lines(func(line string) {
		if line == "hold\n" {
			<-release
		}
	}))
	held := dial(t, addr)
	fmt.Fprintf(held, "hold\n")
	idle := dial(t, addr)
	if _, err := idle.ask("x"); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, "one request in flight, one idle", func() bool {
		return s.Stats().Requests.Load() == 2 && idleCount(s) == 1
	})
	// held has been open longer, but its request is in flight: idle goes.
	second := dial(t, addr)
	fmt.Fprintf(second, "hold\n")
	if !idle.closedByServer() {
		t.Fatal("the idle connection was not closed to make room")
	}
	testutil.Eventually(t, "two requests in flight", func() bool { return s.Stats().Requests.Load() == 3 })
	// Now every connection has a request in flight: the newcomer is refused.
	refused := dial(t, addr)
	if !refused.closedByServer() {
		t.Error("a connection over the limit was kept with every request in flight")
	}
	close(release)
	for i, c := range []*client{held, second} {
		c.SetReadDeadline(time.Now().Add(time.Second))
		if a, err := c.r.ReadString('\n'); err != nil || a != "ok hold\n" {
			t.Errorf("request in flight %d: %q, %v; want its answer", i, a, err)
		}
	}
	if got, want := []int64{s.Stats().Evicted.Load(), s.Stats().Refused.Load()}, []int64{1, 1}; !cmp.Equal(got, want) {
		t.Errorf("evicted, refused = %v, want %v", got, want)
	}
	testutil.Eventually(t, "a refusal warning", func() bool { return logs.FilterMessage(s.refusals.msg).Len() > 0 })
	if got := messages(logs, s.refusals.msg); !cmp.Equal(got, []int64{1}) {
		t.Errorf("refusal warnings %v, want one of count 1", got)
	}
}

func TestStalledRequestMakesRoomAfterGrace(t *testing.T) {
	s, addr, _ := start(t, Options{MaxConnections: 1}, lines(nil))
	s.mu.Lock()
	s.stallGrace = time.Hour
	s.mu.Unlock()
	stalled := dial(t, addr)
	fmt.Fprint(stalled, "half a req") // and never the newline
	testutil.Eventually(t, "a stalled request", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		if len(s.conns) != 1 {
			return false
		}
		st, _ := unpack(s.conns[0].state.Load())
		return st == stStalled
	})
	if early := dial(t, addr); !early.closedByServer() {
		t.Error("a stalled request lost its connection before its grace")
	}
	s.mu.Lock()
	s.stallGrace = 0
	s.mu.Unlock()
	late := dial(t, addr)
	if a, err := late.ask("late"); err != nil || a != "ok late" {
		t.Errorf("after the grace: %q, %v; want an answer", a, err)
	}
	if !stalled.closedByServer() {
		t.Error("the stalled connection is still open")
	}
}

// raiseFileLimit lifts the soft limit on open files to the hard one and
// skips the test when that is below need.
func raiseFileLimit(t *testing.T, need uint64) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Skipf("getrlimit: %v", err)
	}
	if lim.Cur < lim.Max {
		lim.Cur = lim.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			t.Skipf("setrlimit: %v", err)
		}
	}
	if lim.Cur < need {
		t.Skipf("%d open files allowed, the test needs %d", lim.Cur, need)
	}
}

// TestFloodOfIdleConnections holds connections open without a word, as a
// hostile local process may, and checks that a new client (Postfix) is
// still answered within a second.
func TestFloodOfIdleConnections(t *testing.T) {
	for _, tc := range []struct {
		name  string
		max   int
		flood int
	}{
		{"limit", 1000, 1000},
		{"5000", 1000, 5000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			raiseFileLimit(t, uint64(tc.flood+tc.max+200))
			s, addr, logs := start(t, Options{MaxConnections: tc.max}, lines(nil))
			floodStart := time.Now()
			for i := range tc.flood {
				c, err := net.Dial("tcp", addr)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				// Keep within the listen backlog: past it the kernel
				// drops handshakes and the client retries seconds later.
				if i%500 == 499 {
					testutil.Eventually(t, "the server to catch up", func() bool { return s.Stats().Accepted.Load() > int64(i-500) })
				}
			}
			testutil.Eventually(t, "the flood accepted", func() bool { return s.Stats().Accepted.Load() == int64(tc.flood) })
			testutil.Eventually(t, "the flood waiting", func() bool { return idleCount(s) == tc.max })

			begin := time.Now()
			c := dial(t, addr)
			a, err := c.ask("postfix")
			if took := time.Since(begin); err != nil || a != "ok postfix" || took > time.Second {
				t.Fatalf("new client: %q, %v after %v; want an answer within a second", a, err, took)
			} else {
				t.Logf("answered in %v with %d connections held open", took, tc.flood)
			}
			wantEvicted := int64(tc.flood - tc.max + 1)
			if got := s.Stats().Evicted.Load(); got != wantEvicted || s.Stats().Open.Load() != int64(tc.max) {
				t.Errorf("evicted %d, open %d; want %d, %d", got, s.Stats().Open.Load(), wantEvicted, tc.max)
			}
			// A line at the first eviction, then one every warnEvery at most.
			s.evictions.stop()
			maxLines := 2 + int(time.Since(floodStart)/warnEvery)
			if n := len(messages(logs, s.evictions.msg)); n > maxLines {
				t.Errorf("%d eviction warnings for %d evictions, want at most %d", n, wantEvicted, maxLines)
			}
			var sum int64
			for _, n := range messages(logs, s.evictions.msg) {
				sum += n
			}
			if sum != wantEvicted {
				t.Errorf("warnings count %d evictions, want %d", sum, wantEvicted)
			}
		})
	}
}

// faultyListener returns the errors sent on faults, and real connections
// of a loopback listener otherwise; it notes the time of each Accept.
type faultyListener struct {
	net.Listener
	faults chan error
	real   chan acceptResult
	done   chan struct{}
	once   sync.Once

	mu    sync.Mutex
	calls []time.Time
}

type acceptResult struct {
	c   net.Conn
	err error
}

func newFaultyListener(t *testing.T) *faultyListener {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := &faultyListener{Listener: ln, faults: make(chan error, 16), real: make(chan acceptResult), done: make(chan struct{})}
	go func() {
		for {
			c, err := ln.Accept()
			select {
			case l.real <- acceptResult{c, err}:
			case <-l.done:
				if c != nil {
					c.Close()
				}
				return
			}
		}
	}()
	return l
}

func (l *faultyListener) Accept() (net.Conn, error) {
	l.mu.Lock()
	l.calls = append(l.calls, time.Now())
	l.mu.Unlock()
	select {
	case err := <-l.faults:
		return nil, err
	default:
	}
	select {
	case err := <-l.faults:
		return nil, err
	case r := <-l.real:
		return r.c, r.err
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *faultyListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return l.Listener.Close()
}

func emfile() error {
	return &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", syscall.EMFILE)}
}

func TestAcceptErrorsBackOff(t *testing.T) {
	core, logs := observer.New(zapcore.WarnLevel)
	s := New(Options{}, lines(nil), zap.New(zapcore.NewTee(zaptest.NewLogger(t).Core(), core)))
	l := newFaultyListener(t)
	for range 4 {
		l.faults <- emfile()
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(l) }()
	testutil.Eventually(t, "four accept errors", func() bool { return s.Stats().AcceptErrors.Load() == 4 })
	c := dial(t, l.Addr().String())
	if a, err := c.ask("after"); err != nil || a != "ok after" {
		t.Fatalf("after EMFILE: %q, %v; want an answer", a, err)
	}
	l.mu.Lock()
	calls := append([]time.Time(nil), l.calls...)
	l.mu.Unlock()
	for i, want := range []time.Duration{5, 10, 20, 40} {
		if gap := calls[i+1].Sub(calls[i]); gap < want*time.Millisecond {
			t.Errorf("pause after accept error %d: %v, want at least %v", i+1, gap, want*time.Millisecond)
		}
	}
	// A pause is cut short by Shutdown.
	l.faults <- emfile()
	testutil.Eventually(t, "a fifth accept error", func() bool { return s.Stats().AcceptErrors.Load() == 5 })
	if err := s.Shutdown(context.Background()); err != nil {
		t.Error(err)
	}
	if err := <-served; err != nil {
		t.Errorf("Serve after Shutdown: %v, want nil", err)
	}
	// The first error at once, the other four in one line (at shutdown).
	if got := messages(logs, s.acceptErrs.msg); !cmp.Equal(got, []int64{1, 4}) {
		t.Errorf("accept error warnings with counts %v, want [1 4]", got)
	}
}

func TestOutOfFilesClosesAnIdleConnection(t *testing.T) {
	s := New(Options{}, lines(nil), zaptest.NewLogger(t))
	l := newFaultyListener(t)
	go s.Serve(l)
	t.Cleanup(func() { s.Shutdown(context.Background()) })
	idle := dial(t, l.Addr().String())
	testutil.Eventually(t, "an idle connection", func() bool { return idleCount(s) == 1 })
	l.faults <- emfile()
	if !idle.closedByServer() {
		t.Error("out of files, the idle connection was kept")
	}
	if a, err := dial(t, l.Addr().String()).ask("next"); err != nil || a != "ok next" {
		t.Errorf("next client: %q, %v", a, err)
	}
}

func TestServeReturnsWhenListenerClosedElsewhere(t *testing.T) {
	s := New(Options{}, lines(nil), zaptest.NewLogger(t))
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	served := make(chan error, 1)
	go func() { served <- s.Serve(ln) }()
	ln.Close()
	if err := <-served; !errors.Is(err, net.ErrClosed) {
		t.Errorf("Serve: %v, want net.ErrClosed", err)
	}
	s.Shutdown(context.Background())
}

func TestShutdown(t *testing.T) {
	release := make(chan struct{})
	s, addr, _ := start(t, Options{}, lines(func(line string) {
		if line == "hold\n" {
			<-release
		}
	}))
	idle := dial(t, addr)
	held := dial(t, addr)
	fmt.Fprint(held, "hold\n")
	testutil.Eventually(t, "one idle, one in flight", func() bool { return idleCount(s) == 1 && s.Stats().Requests.Load() == 1 })
	done := make(chan error)
	go func() { done <- s.Shutdown(context.Background()) }()
	if !idle.closedByServer() {
		t.Error("idle connection open after Shutdown")
	}
	close(release)
	held.SetReadDeadline(time.Now().Add(time.Second))
	if a, err := held.r.ReadString('\n'); err != nil || a != "ok hold\n" {
		t.Errorf("request in flight at Shutdown: %q, %v; want its answer", a, err)
	}
	if err := <-done; err != nil {
		t.Error(err)
	}
	if !held.closedByServer() {
		t.Error("connection open after its answer at Shutdown")
	}
}

func TestLimitedWarning(t *testing.T) {
	core, logs := observer.New(zapcore.WarnLevel)
	w := newLimitedWarning(zap.New(core), time.Hour, "event", zap.String("fixed", "f"))
	for i := range 6 {
		w.add(zap.Int("i", i))
	}
	w.stop()
	w.add(zap.Int("i", 6))
	var got []map[string]any
	for _, e := range logs.All() {
		got = append(got, e.ContextMap())
	}
	want := []map[string]any{
		{"count": int64(1), "rate_limit": time.Hour, "fixed": "f", "i": int64(0)},
		{"count": int64(5), "rate_limit": time.Hour, "fixed": "f", "i": int64(5)},
		{"count": int64(1), "rate_limit": time.Hour, "fixed": "f", "i": int64(6)},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("lines (-want +got):\n%s", diff)
	}

	// At the end of a period the count is logged without waiting for the next event.
	core, logs = observer.New(zapcore.WarnLevel)
	w = newLimitedWarning(zap.New(core), 10*time.Millisecond, "event")
	w.add()
	w.add()
	w.add()
	testutil.Eventually(t, "the second line", func() bool { return logs.Len() == 2 })
	testutil.Eventually(t, "the period to close", func() bool {
		w.mu.Lock()
		defer w.mu.Unlock()
		return w.timer == nil
	})
	w.add()
	if got := messages(logs, "event"); !cmp.Equal(got, []int64{1, 2, 1}) {
		t.Errorf("counts %v, want [1 2 1]", got)
	}
	w.stop()
}

func TestBackoff(t *testing.T) {
	d := time.Duration(0)
	var got []time.Duration
	for range 10 {
		d = backoff(d)
		got = append(got, d)
	}
	ms := time.Millisecond
	want := []time.Duration{5 * ms, 10 * ms, 20 * ms, 40 * ms, 80 * ms, 160 * ms, 320 * ms, 640 * ms, time.Second, time.Second}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("backoff (-want +got):\n%s", diff)
	}
}

// BenchmarkRequest measures the server's part of a request on one
// loopback connection: Await, tracked read and write, Done.
func BenchmarkRequest(b *testing.B) {
	_, addr, _ := start(b, Options{}, lines(nil))
	c := dial(b, addr)
	b.ReportAllocs()
	for b.Loop() {
		fmt.Fprint(c, "x\n")
		if _, err := c.r.ReadString('\n'); err != nil {
			b.Fatal(err)
		}
	}
}

// memConn always has the next request, "x\n", ready and discards answers:
// what is left to measure is the server's own work per request.
type memConn struct{ net.Conn }

func (memConn) Read(p []byte) (int, error)       { return copy(p, "x\n"), nil }
func (memConn) Write(p []byte) (int, error)      { return len(p), nil }
func (memConn) Close() error                     { return nil }
func (memConn) SetDeadline(time.Time) error      { return nil }
func (memConn) SetReadDeadline(time.Time) error  { return nil }
func (memConn) SetWriteDeadline(time.Time) error { return nil }
func (memConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }

type oneConnListener struct {
	c    chan net.Conn
	done chan struct{}
	once sync.Once
}

func (l *oneConnListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.c:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}
func (l *oneConnListener) Close() error   { l.once.Do(func() { close(l.done) }); return nil }
func (l *oneConnListener) Addr() net.Addr { return &net.TCPAddr{} }

// BenchmarkHotPath measures the server's own work per request (Await,
// the tracked read and write, Done) with no socket in the way.
func BenchmarkHotPath(b *testing.B) {
	finished := make(chan struct{})
	n := 0
	s := New(Options{}, func(c *Conn) {
		for c.Await() {
			line, _ := c.R.ReadSlice('\n')
			c.W.Write(line)
			c.W.Flush()
			c.Done()
			if n++; n == b.N {
				close(finished)
				return
			}
		}
	}, zap.NewNop())
	l := &oneConnListener{c: make(chan net.Conn, 1), done: make(chan struct{})}
	l.c <- memConn{}
	b.ReportAllocs()
	b.ResetTimer()
	go s.Serve(l)
	<-finished
	b.StopTimer()
	s.Shutdown(context.Background())
}
