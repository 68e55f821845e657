package milter

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/d--j/go-milter/internal/wire"
)

// warnings collects what the library logs while a test runs.
type warnings struct {
	mu sync.Mutex
	b  strings.Builder
}

func (w *warnings) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

func captureWarnings(t *testing.T) *warnings {
	w := &warnings{}
	old := LogWarning
	LogWarning = func(format string, v ...interface{}) {
		w.mu.Lock()
		defer w.mu.Unlock()
		fmt.Fprintf(&w.b, format+"\n", v...)
	}
	t.Cleanup(func() { LogWarning = old })
	return w
}

// panicky panics in Helo when the HELO name is "panic".
type panicky struct{ NoOpMilter }

func (panicky) Helo(name string, m Modifier) (*Response, error) {
	if name == "panic" {
		panic("helo handler blew up")
	}
	return RespContinue, nil
}

func startServer(t *testing.T, opts ...Option) (*Server, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := NewServer(append([]Option{WithMilter(func() Milter { return panicky{} })}, opts...)...)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-done; err != nil && !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve: %v", err)
		}
	})
	return srv, ln.Addr().String()
}

// negotiated returns a raw connection that has done the option
// negotiation, as an MTA would.
func negotiated(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	optneg := []byte{0, 0, 0, 13, 'O', 0, 0, 0, 6, 0, 0, 0x01, 0xff, 0, 0, 0, 0}
	if _, err := c.Write(optneg); err != nil {
		t.Fatal(err)
	}
	msg, err := wire.ReadPacket(c, 5*time.Second)
	if err != nil || msg.Code != wire.CodeOptNeg {
		t.Fatalf("negotiation: %+v %v", msg, err)
	}
	return c
}

// closedByServer reports whether the server closed c within wait.
func closedByServer(c net.Conn, wait time.Duration) bool {
	_ = c.SetReadDeadline(time.Now().Add(wait))
	_, err := io.ReadAll(c)
	return !errors.Is(err, os.ErrDeadlineExceeded)
}

// validSession runs one whole message through the server.
func validSession(t *testing.T, addr string) {
	t.Helper()
	s, err := NewClient("tcp", addr).Session(NewMacroBag())
	if err != nil {
		t.Fatalf("a valid session after the hostile one: %v", err)
	}
	defer s.Close()
	steps := []func() (*Action, error){
		func() (*Action, error) { return s.Conn("client.example", FamilyInet, 25, "192.0.2.1") },
		func() (*Action, error) { return s.Helo("client.example") },
		func() (*Action, error) { return s.Mail("<a@example.org>", "") },
		func() (*Action, error) { return s.Rcpt("<b@example.net>", "") },
		func() (*Action, error) { return s.DataStart() },
		func() (*Action, error) { return s.HeaderField("From", "a@example.org", nil) },
		func() (*Action, error) { return s.HeaderEnd() },
	}
	for i, step := range steps {
		if _, err := step(); err != nil {
			t.Fatalf("a valid session after the hostile one, step %d: %v", i, err)
		}
	}
	if _, act, err := s.BodyReadFrom(strings.NewReader("hi\r\n")); err != nil || act.Type != ActionAccept {
		t.Fatalf("a valid session after the hostile one: end %+v %v", act, err)
	}
}

func packet(code byte, data string) []byte {
	n := len(data) + 1
	return append([]byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n), code}, data...)
}

// TestHostilePacketsCloseOnlyTheirSession sends each malformed packet that
// used to panic the whole process (issue: a zero length packet, CONNECT,
// HELO, MAIL or RCPT without NUL terminator), and checks that the server
// closes that connection without a panic and then serves a valid session.
func TestHostilePacketsCloseOnlyTheirSession(t *testing.T) {
	logged := captureWarnings(t)
	_, addr := startServer(t)
	for name, p := range map[string][]byte{
		"zero length":                   {0, 0, 0, 0},
		"connect, host without NUL":     packet('C', "host"),
		"connect, no family":            packet('C', "host\x00"),
		"connect, short port":           packet('C', "host\x004\x00"),
		"connect, address without NUL":  packet('C', "host\x004\x00\x19192.0.2.1"),
		"helo without NUL":              packet('H', "client.example"),
		"mail without NUL":              packet('M', "<a@example.org>"),
		"rcpt without NUL":              packet('R', "<b@example.net>"),
		"header, one string":            packet('L', "From\x00"),
		"macro, empty":                  packet('D', ""),
		"optneg again":                  packet('O', ""),
		"unknown command code":          packet('z', ""),
		"length beyond the limit":       {0, 0x10, 0, 1, 'B'},
		"length of the old 512MB limit": {0x20, 0, 0, 0, 'B'},
	} {
		t.Run(name, func(t *testing.T) {
			c := negotiated(t, addr)
			if _, err := c.Write(p); err != nil {
				t.Fatal(err)
			}
			if !closedByServer(c, 5*time.Second) {
				t.Error("connection still open")
			}
			validSession(t, addr)
		})
	}
	if strings.Contains(logged.String(), "panic") {
		t.Errorf("a hostile packet caused a panic:\n%s", logged)
	}
}

func TestOversizedNegotiationRefusedBeforeAllocation(t *testing.T) {
	logged := captureWarnings(t)
	_, addr := startServer(t)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte{0x1f, 0xff, 0xff, 0xff})
	if !closedByServer(c, 5*time.Second) {
		t.Error("connection still open")
	}
	if !strings.Contains(logged.String(), "packet too big") {
		t.Errorf("not logged as too big:\n%s", logged)
	}
	validSession(t, addr)
}

func TestIdleAndCommandTimeouts(t *testing.T) {
	captureWarnings(t)
	_, addr := startServer(t, WithIdleTimeout(300*time.Millisecond), WithCommandTimeout(300*time.Millisecond))
	idle := negotiated(t, addr)
	if !closedByServer(idle, 5*time.Second) {
		t.Error("an idle session stays open beyond the idle timeout")
	}
	slow := negotiated(t, addr)
	slow.Write([]byte{0, 0})
	if !closedByServer(slow, 5*time.Second) {
		t.Error("a packet begun and never finished keeps its session open")
	}
	// Between commands the idle limit applies, not the command limit.
	_, addr = startServer(t, WithIdleTimeout(time.Hour), WithCommandTimeout(100*time.Millisecond))
	quiet := negotiated(t, addr)
	if closedByServer(quiet, 500*time.Millisecond) {
		t.Error("closed between commands after the command timeout")
	}
}

// TestMaxConnectionsClosesTheIdlest fills the server with idle sessions
// and checks that a new MTA connection is served, at the expense of the
// session idle longest.
func TestMaxConnectionsClosesTheIdlest(t *testing.T) {
	logged := captureWarnings(t)
	_, addr := startServer(t, WithMaxConnections(3))
	oldest := negotiated(t, addr)
	time.Sleep(10 * time.Millisecond) // distinct idle times
	others := []net.Conn{negotiated(t, addr), negotiated(t, addr)}
	start := time.Now()
	validSession(t, addr)
	if took := time.Since(start); took > time.Second {
		t.Errorf("a new session over the limit took %v", took)
	}
	if !closedByServer(oldest, 5*time.Second) {
		t.Error("the session idle longest is still open")
	}
	if closedByServer(others[1], 200*time.Millisecond) {
		t.Error("the newest idle session was closed")
	}
	if !strings.Contains(logged.String(), "closing the connection idle longest") {
		t.Errorf("eviction not logged:\n%s", logged)
	}
}

func TestPanicInHandlerClosesOnlyItsSession(t *testing.T) {
	logged := captureWarnings(t)
	_, addr := startServer(t)
	c := negotiated(t, addr)
	c.Write(packet('C', "h\x00U"))
	if msg, err := wire.ReadPacket(c, 5*time.Second); err != nil || msg.Code != 'c' {
		t.Fatalf("connect: %+v %v", msg, err)
	}
	c.Write(packet('H', "panic\x00"))
	if !closedByServer(c, 5*time.Second) {
		t.Error("the session that panicked is still open")
	}
	// The session's own deferred close runs while the panic unwinds,
	// before serveConn's recover logs it: the client may see the close
	// first, so wait for the warning rather than expect it already.
	for deadline := time.Now().Add(5 * time.Second); !strings.Contains(logged.String(), "helo handler blew up"); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the panic was not logged:\n%s", logged)
		}
	}
	validSession(t, addr)
}

// flakyListener fails its first Accept calls with EMFILE.
type flakyListener struct {
	net.Listener
	mu    sync.Mutex
	fails int
}

func (l *flakyListener) Accept() (net.Conn, error) {
	l.mu.Lock()
	fail := l.fails > 0
	l.fails--
	l.mu.Unlock()
	if fail {
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", syscall.EMFILE)}
	}
	return l.Listener.Accept()
}

func TestServeSurvivesOutOfFileDescriptors(t *testing.T) {
	logged := captureWarnings(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := NewServer(WithMilter(func() Milter { return panicky{} }))
	done := make(chan error, 1)
	go func() { done <- srv.Serve(&flakyListener{Listener: ln, fails: 4}) }()
	validSession(t, ln.Addr().String())
	srv.Close()
	if err := <-done; err != nil {
		t.Errorf("Serve: %v", err)
	}
	if n := strings.Count(logged.String(), "too many open files; retrying in"); n != 4 {
		t.Errorf("%d accept errors logged, want 4:\n%s", n, logged)
	}
}
