package policy

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"go.uber.org/zap/zaptest"

	"github.com/mxdetour/mxdetour/internal/testutil"
)

const rcptRequest = "request=smtpd_access_policy\nprotocol_state=RCPT\nprotocol_name=ESMTP\nqueue_id=\n" +
	"sender=a@b.example\nrecipient=alice@gmail.com\nclient_address=192.0.2.1\ninstance=1.2.3\n" +
	"sasl_username=\nccert_subject=\nunknown_future_attr=x=y\n\n"

func TestReadRequest(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     Request
		err      bool
	}{
		{"rcpt", rcptRequest, Request{Request: "smtpd_access_policy", ProtocolState: "RCPT", Sender: "a@b.example",
			Recipient: "alice@gmail.com", ClientAddress: "192.0.2.1", Instance: "1.2.3"}, false},
		{"end of message", "request=smtpd_access_policy\nprotocol_state=END-OF-MESSAGE\nrecipient_count=12\n" +
			"sasl_username=alice\npolicy_context=limits\n\n", Request{Request: "smtpd_access_policy",
			ProtocolState: "END-OF-MESSAGE", RecipientCount: 12, SASLUsername: "alice", PolicyContext: "limits"}, false},
		{"milter's pickup count", "request=smtpd_access_policy\nprotocol_state=END-OF-MESSAGE\nqueue_id=4Xy\nrecipient_count=2\n" +
			"sender=alice@example.org\nlocal_user=alice\nrecipient_domains=gmail.com example.org\npolicy_context=limits\n\n",
			Request{Request: "smtpd_access_policy", ProtocolState: "END-OF-MESSAGE", QueueID: "4Xy", RecipientCount: 2,
				Sender: "alice@example.org", LocalUser: "alice", RecipientDomains: "gmail.com example.org", PolicyContext: "limits"}, false},
		{"bad recipient_count", "request=smtpd_access_policy\nrecipient_count=-3\n\n", Request{Request: "smtpd_access_policy"}, false},
		{"no name=value", "request=smtpd_access_policy\ngarbage\n\n", Request{}, true},
		{"empty name", "=x\n\n", Request{}, true},
		{"wrong request", "request=other\n\n", Request{}, true},
		{"empty request", "\n", Request{}, true},
		{"NUL", "request=smtpd_access_policy\nsender=a\x00b\n\n", Request{}, true},
		{"cut short", "request=smtpd_access_policy\nsender=a", Request{}, true},
		{"oversize", "request=smtpd_access_policy\nx=" + strings.Repeat("y", 5000) + "\n\n", Request{}, true},
	} {
		var got Request
		err := ReadRequest(bufio.NewReader(strings.NewReader(tc.in)), &got, 4096)
		if (err != nil) != tc.err {
			t.Errorf("%s: error %v, want error %v", tc.name, err, tc.err)
			continue
		}
		if !tc.err {
			if diff := cmp.Diff(tc.want, got, cmpopts.IgnoreUnexported(Request{})); diff != "" {
				t.Errorf("%s (-want +got):\n%s", tc.name, diff)
			}
		}
	}
	var r Request
	if err := ReadRequest(bufio.NewReader(strings.NewReader("")), &r, 100); err != io.EOF {
		t.Errorf("clean close: %v, want io.EOF", err)
	}
}

type echo struct{ panicOn string }

func (e echo) Policy(_ context.Context, r *Request) string {
	if r.Recipient == e.panicOn {
		panic("boom")
	}
	return "FILTER relay:[" + r.Recipient + "]"
}

func start(t *testing.T, o Options) (string, *Server) {
	t.Helper()
	s := NewServer(echo{panicOn: "panic@x"}, o, zaptest.NewLogger(t))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(ln)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		s.Shutdown(ctx)
	})
	return ln.Addr().String(), s
}

func ask(t *testing.T, c net.Conn, r *bufio.Reader, rcpt string) string {
	t.Helper()
	fmt.Fprintf(c, "request=smtpd_access_policy\nprotocol_state=RCPT\nrecipient=%s\n\n", rcpt)
	line, err := r.ReadString('\n')
	if err != nil {
		return "ERR " + err.Error()
	}
	blank, _ := r.ReadString('\n')
	if blank != "\n" {
		t.Errorf("reply not ended by an empty line: %q", blank)
	}
	return strings.TrimSuffix(line, "\n")
}

func TestServerPersistentAndConcurrent(t *testing.T) {
	addr, s := start(t, Options{})
	before := runtime.NumGoroutine()
	var wg sync.WaitGroup
	for i := range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Error(err)
				return
			}
			defer c.Close()
			r := bufio.NewReader(c)
			for j := range 20 {
				rcpt := fmt.Sprintf("u%d-%d@x", i, j)
				if got := ask(t, c, r, rcpt); got != "action=FILTER relay:["+rcpt+"]" {
					t.Errorf("got %q", got)
					return
				}
			}
		}()
	}
	wg.Wait()
	if n := s.Stats().Requests.Load(); n != 4000 {
		t.Errorf("%d requests counted, want 4000", n)
	}
	testutil.Eventually(t, "connection goroutines to end", func() bool { return runtime.NumGoroutine() <= before+2 })
}

func TestServerMalformedAndPanic(t *testing.T) {
	addr, s := start(t, Options{MaxRequestSize: 1024})
	for _, bad := range []string{"garbage\n\n", "request=smtpd_access_policy\nx=" + strings.Repeat("y", 2000) + "\n\n", "\x00\x01\x02\n\n"} {
		c, _ := net.Dial("tcp", addr)
		fmt.Fprint(c, bad)
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		if b, err := io.ReadAll(c); err != nil || len(b) != 0 {
			t.Errorf("malformed %q: got reply %q, %v; want the connection closed without one", bad[:8], b, err)
		}
		c.Close()
	}
	if s.Stats().Malformed.Load() != 3 {
		t.Errorf("malformed counted %d", s.Stats().Malformed.Load())
	}
	c, _ := net.Dial("tcp", addr)
	defer c.Close()
	r := bufio.NewReader(c)
	if got := ask(t, c, r, "panic@x"); got != "action=DUNNO" {
		t.Errorf("panicking handler: %q, want action=DUNNO", got)
	}
	if got := ask(t, c, r, "after@x"); got != "action=FILTER relay:[after@x]" {
		t.Errorf("after a panic the connection is still served: %q", got)
	}
}

func TestServerIdleAndLimit(t *testing.T) {
	addr, s := start(t, Options{IdleTimeout: 100 * time.Millisecond, MaxConnections: 2})
	c1, _ := net.Dial("tcp", addr)
	defer c1.Close()
	c2, _ := net.Dial("tcp", addr)
	defer c2.Close()
	testutil.Eventually(t, "two connections open", func() bool { return s.Stats().Open.Load() == 2 })
	c3, _ := net.Dial("tcp", addr)
	c3.SetReadDeadline(time.Now().Add(time.Second))
	if _, err := c3.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("third connection over the limit: %v, want closed", err)
	}
	c1.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := c1.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("idle connection: %v, want closed by the server", err)
	}
}

func TestShutdownDrains(t *testing.T) {
	block, asked := make(chan struct{}), make(chan struct{})
	s := NewServer(handlerFunc(func(r *Request) string { close(asked); <-block; return "DUNNO" }), Options{}, zaptest.NewLogger(t))
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	go s.Serve(ln)
	idle, _ := net.Dial("tcp", ln.Addr().String())
	defer idle.Close()
	c, _ := net.Dial("tcp", ln.Addr().String())
	defer c.Close()
	fmt.Fprint(c, "request=smtpd_access_policy\nrecipient=x@y\n\n")
	<-asked
	done := make(chan error)
	go func() { done <- s.Shutdown(context.Background()) }()
	// Shutdown closes the idle connection at once: then it has begun,
	// and the request in flight is answered still.
	idle.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := idle.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("idle connection after shutdown: %v", err)
	}
	close(block)
	r := bufio.NewReader(c)
	if line, _ := r.ReadString('\n'); line != "action=DUNNO\n" {
		t.Errorf("in-flight request got %q, want its answer", line)
	}
	if err := <-done; err != nil {
		t.Error(err)
	}
}

type handlerFunc func(*Request) string

func (f handlerFunc) Policy(_ context.Context, r *Request) string { return f(r) }

func FuzzReadRequest(f *testing.F) {
	f.Add([]byte(rcptRequest))
	f.Add([]byte("request=smtpd_access_policy\n\n"))
	f.Add([]byte("=\n\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		r := bufio.NewReaderSize(strings.NewReader(string(b)), 16)
		var req Request
		for range 4 {
			if err := ReadRequest(r, &req, 1024); err != nil {
				return
			}
			if req.Request != "smtpd_access_policy" {
				t.Fatalf("accepted request=%q", req.Request)
			}
		}
	})
}

// TestReadRequestsInTurn: a connection's requests are read into one
// Request; what an earlier one said stays as it was (the limits keep it),
// and a repeated attribute is its last value.
func TestReadRequestsInTurn(t *testing.T) {
	in := "request=smtpd_access_policy\nprotocol_state=RCPT\nsender=a@b.example\nrecipient=x@y.example\ninstance=1.1\n\n" +
		"request=smtpd_access_policy\nprotocol_state=DATA\nsender=c@d.example\nsender=e@f.example\nqueue_id=4QxY1\nclient_address=192.0.2.1\n\n"
	r := bufio.NewReader(strings.NewReader(in))
	var req Request
	if err := ReadRequest(r, &req, 4096); err != nil {
		t.Fatal(err)
	}
	sender, rcpt, inst := req.Sender, req.Recipient, req.Instance
	if err := ReadRequest(r, &req, 4096); err != nil {
		t.Fatal(err)
	}
	if sender != "a@b.example" || rcpt != "x@y.example" || inst != "1.1" {
		t.Errorf("the first request's values changed: %q %q %q", sender, rcpt, inst)
	}
	want := Request{Request: "smtpd_access_policy", ProtocolState: "DATA", Sender: "e@f.example", QueueID: "4QxY1", ClientAddress: "192.0.2.1"}
	if diff := cmp.Diff(want, req, cmpopts.IgnoreUnexported(Request{})); diff != "" {
		t.Errorf("second request (-want +got):\n%s", diff)
	}
}
