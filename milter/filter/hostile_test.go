package filter

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/d--j/go-milter"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// Issue #10: hostile input never stops the milter. These tests run a real
// go-milter server with this filter's ServerOptions and talk the milter
// protocol to it byte by byte, as a broken or hostile MTA would.

// pkt frames one milter packet.
func pkt(code byte, data string) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(len(data)+1))
	return append(append(b, code), data...)
}

// optneg is the option negotiation of an MTA offering everything but the
// SMFIP_NR_* flags (protocol version 6, all actions): it gets an answer to
// every packet, which paces these tests. (Postfix offers the NR flags too:
// TestRoundTrips.)
var optneg = pkt('O', "\x00\x00\x00\x06\x00\x00\x01\xff\x00\x10\x0f\x7f")

// envelope is a message from a trusted client up to its header: CONNECT
// from 127.0.0.1, MAIL, RCPT, DATA and a From field. Each gets an answer.
var envelope = [][]byte{
	pkt('C', "client.example\x004\x00\x19127.0.0.1\x00"),
	pkt('M', "<a@example.org>\x00"),
	pkt('R', "<b@partner.mxd>\x00"),
	pkt('T', ""),
	pkt('L', "From\x00 a@example.org\x00"),
}

// panicWatch counts the panics a server and its filter recover from: the
// library's "panic serving ..." warning and the filter's own.
type panicWatch struct {
	n    atomic.Int64
	mu   sync.Mutex
	last string
}

func (w *panicWatch) logger() *zap.Logger {
	core := zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), zapcore.AddSync(io.Discard), zap.WarnLevel)
	return zap.New(core, zap.Hooks(func(e zapcore.Entry) error {
		if strings.HasPrefix(e.Message, "panic serving ") || e.Message == "panic in milter stage" {
			w.n.Add(1)
			w.mu.Lock()
			w.last = e.Message
			w.mu.Unlock()
		}
		return nil
	}))
}

func (w *panicWatch) check(t *testing.T, f *Filter) {
	t.Helper()
	if n := w.n.Load(); n > 0 || f.Stats().Panics.Load() > 0 {
		w.mu.Lock()
		defer w.mu.Unlock()
		t.Fatalf("%d panics recovered (filter counted %d); last: %s", n, f.Stats().Panics.Load(), w.last)
	}
}

// pipeListener serves net.Pipe connections; it is also the Dialer of
// the go-milter client that talks to it.
type pipeListener struct {
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func newPipeListener() *pipeListener {
	return &pipeListener{conns: make(chan net.Conn), done: make(chan struct{})}
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *pipeListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *pipeListener) Addr() net.Addr { return pipeAddr{} }

type pipeAddr struct{}

func (pipeAddr) Network() string { return "pipe" }
func (pipeAddr) String() string  { return "pipe" }

// Dial connects to the server; the channel is closed when the server has
// closed its end, that is when the session is over.
func (l *pipeListener) dial() (net.Conn, <-chan struct{}, error) {
	c, s := net.Pipe()
	n := &notifyConn{Conn: s, closed: make(chan struct{})}
	select {
	case l.conns <- n:
		return c, n.closed, nil
	case <-l.done:
		return nil, nil, net.ErrClosed
	}
}

func (l *pipeListener) Dial(string, string) (net.Conn, error) {
	c, _, err := l.dial()
	return c, err
}

type notifyConn struct {
	net.Conn
	once   sync.Once
	closed chan struct{}
}

func (n *notifyConn) Close() error {
	n.once.Do(func() { close(n.closed) })
	return n.Conn.Close()
}

// edOnly is the test state with just the Ed25519 key: signing is cheap.
func edOnly(t testing.TB) *State {
	return state(t, func(fx *fixture) { fx.keys = fx.keys[1:] })
}

// signOnce runs a whole message from a trusted client through a fresh
// session and fails unless it comes back signed once.
func signOnce(t testing.TB, c *milter.Client) {
	t.Helper()
	macros := milter.NewMacroBag()
	macros.Set(milter.MacroDaemonAddr, "127.0.0.1")
	s, err := c.Session(macros)
	if err != nil {
		t.Fatalf("a fresh session: %v", err)
	}
	defer s.Close()
	if _, err := s.Conn("localhost", milter.FamilyInet, 1, "127.0.0.1"); err != nil {
		t.Fatalf("a fresh session: connect: %v", err)
	}
	for i, step := range []func() (*milter.Action, error){
		func() (*milter.Action, error) { return s.Helo("localhost") },
		func() (*milter.Action, error) { return s.Mail("<a@example.org>", "") },
		func() (*milter.Action, error) { return s.Rcpt("<b@partner.mxd>", "") },
		s.DataStart,
		func() (*milter.Action, error) { return s.HeaderField("From", " a@example.org", nil) },
		s.HeaderEnd,
	} {
		if act, err := step(); err != nil || act.Type != milter.ActionContinue {
			t.Fatalf("a fresh session: step %d: %+v %v", i, act, err)
		}
	}
	mods, act, err := s.BodyReadFrom(strings.NewReader("hi\r\n"))
	if err != nil || act.Type != milter.ActionAccept || inserted(mods) != 1 {
		t.Fatalf("a fresh session: %d signatures, %+v, %v; want 1 signature and accept", inserted(mods), act, err)
	}
}

// FuzzMilterWire feeds arbitrary bytes to a real server with this filter,
// before or after a valid negotiation, and checks that no panic happened
// (none escaped, none was recovered) and that the server then signs a
// message in a fresh session. The seed corpus holds the reproductions of
// issue #10.
func FuzzMilterWire(f *testing.F) {
	var watch panicWatch
	flt := New(edOnly(f), watch.logger())
	ln := newPipeListener()
	srv := milter.NewServer(flt.ServerOptions()...)
	go srv.Serve(ln)
	f.Cleanup(func() { srv.Close() })
	client := milter.NewClient("pipe", "pipe", milter.WithDialer(ln))

	var valid []byte
	for _, p := range envelope {
		valid = append(valid, p...)
	}
	f.Add(append(valid, pkt('N', "")...), true)
	f.Fuzz(func(t *testing.T, data []byte, negotiate bool) {
		c, over, err := ln.dial()
		if err != nil {
			t.Fatal(err)
		}
		go io.Copy(io.Discard, c)
		if negotiate {
			c.Write(optneg)
		}
		c.Write(data)
		c.Close()
		select {
		case <-over:
		case <-time.After(10 * time.Second):
			t.Fatal("the session did not end when the MTA closed its connection")
		}
		watch.check(t, flt)
		signOnce(t, client)
	})
}

// mta is a raw milter connection over loopback TCP that reads answers.
type mta struct {
	t testing.TB
	net.Conn
}

func dialMTA(t testing.TB, addr string) *mta {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	m := &mta{t, c}
	m.send(optneg, 'O')
	return m
}

// send writes p and reads one answer, which must have code want.
func (m *mta) send(p []byte, want byte) {
	m.t.Helper()
	if _, err := m.Write(p); err != nil {
		m.t.Fatal(err)
	}
	m.expect(want)
}

func (m *mta) expect(want byte) {
	m.t.Helper()
	m.SetReadDeadline(time.Now().Add(10 * time.Second))
	var h [5]byte
	if _, err := io.ReadFull(m, h[:]); err != nil {
		m.t.Fatalf("reading an answer: %v", err)
	}
	if _, err := io.CopyN(io.Discard, m, int64(binary.BigEndian.Uint32(h[:4]))-1); err != nil {
		m.t.Fatal(err)
	}
	if h[4] != want {
		m.t.Fatalf("answer %q, want %q", h[4], want)
	}
}

func serveTCP(t *testing.T, f *Filter, extra ...milter.Option) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := milter.NewServer(append(f.ServerOptions(), extra...)...)
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// eohPackets is lowered under the race detector, which makes each
// signature start ten times slower.
var eohPackets = 20000

// TestRepeatedEndOfHeaders sends 20,000 end-of-header packets in one
// message, each of which starts a signature: the goroutines of the
// signatures given up must end, and the message is still signed.
func TestRepeatedEndOfHeaders(t *testing.T) {
	var watch panicWatch
	f := New(edOnly(t), watch.logger())
	m := dialMTA(t, serveTCP(t, f))
	for _, p := range envelope {
		m.send(p, 'c')
	}
	m.send(pkt('N', ""), 'c')
	base := runtime.NumGoroutine()
	n := eohPackets
	go func() {
		eoh := pkt('N', "")
		for range n {
			if _, err := m.Write(eoh); err != nil {
				return
			}
		}
	}()
	peak := 0
	for i := range n {
		m.expect('c')
		if i%500 == 0 {
			peak = max(peak, runtime.NumGoroutine())
		}
	}
	after := runtime.NumGoroutine()
	if after > base+5 || peak > base+20 {
		t.Errorf("goroutines: %d before, %d at most during, %d after %d end-of-header packets", base, peak, after, n)
	}
	m.send(pkt('B', "hi\r\n"), 'c')
	m.Write(pkt('E', ""))
	m.expect('i') // the DKIM-Signature header
	m.expect('a')
	watch.check(t, f)
	if f.Stats().Signed.Load() != 1 {
		t.Errorf("signed %d messages, want 1", f.Stats().Signed.Load())
	}
}

// TestConnectionCap opens idle sessions well beyond a small cap: a new
// session is still served at once, and the idle ones beyond the cap were
// closed, the oldest first.
func TestConnectionCap(t *testing.T) {
	const limit, idle = 4, 12
	f := New(edOnly(t), zap.NewNop())
	addr := serveTCP(t, f, milter.WithMaxConnections(limit))
	var conns []*mta
	for range idle {
		m := dialMTA(t, addr)
		m.send(envelope[0], 'c')
		conns = append(conns, m)
	}
	start := time.Now()
	signOnce(t, milter.NewClient("tcp", addr))
	if took := time.Since(start); took > time.Second {
		t.Errorf("a new session over the cap took %v", took)
	}
	// The signing session took a place too: limit-1 of the idle remain,
	// the last opened among them. (Which others went depends on when each
	// session's goroutine began waiting for its next command — a session
	// still between its reply and its next read is busy, not idle — which a
	// loaded machine can reorder; third_party/go-milter's own tests check
	// the order.)
	var open []int
	for i, m := range conns {
		m.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		_, err := m.Read(make([]byte, 1))
		if errors.Is(err, os.ErrDeadlineExceeded) {
			open = append(open, i)
		}
	}
	if len(open) != limit-1 || open[len(open)-1] != idle-1 {
		t.Errorf("idle sessions still open: %v, want %d of them with the newest (%d)", open, limit-1, idle-1)
	}
}
