package listen

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// TestMain lets the test binary play a local client (see TestOnlyPeers):
// with LISTEN_TEST_DIAL set it connects that many times to the socket in
// LISTEN_TEST_SOCKET and exits 0 if each connection was closed before a
// byte was answered.
func TestMain(m *testing.M) {
	n := os.Getenv("LISTEN_TEST_DIAL")
	if n == "" {
		os.Exit(m.Run())
	}
	count, _ := strconv.Atoi(n)
	for range count {
		c, err := net.Dial("unix", os.Getenv("LISTEN_TEST_SOCKET"))
		if err != nil {
			fmt.Fprintln(os.Stderr, "dial:", err)
			os.Exit(2)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		c.Write([]byte("request=smtpd_access_policy\nsasl_username=alice\n\n"))
		b := make([]byte, 1)
		if _, err := c.Read(b); !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET) {
			fmt.Fprintln(os.Stderr, "read: want the connection closed, got", err)
			os.Exit(3)
		}
		c.Close()
	}
	os.Exit(0)
}

// TestOnlyPeers: over a real unix socket anyone may open (0666), a
// connection from the test's own uid is handed out; connections from
// another uid (a child run as nobody; root needed) are closed unanswered,
// counted, and logged once per uid and minute.
func TestOnlyPeers(t *testing.T) {
	dir, err := os.MkdirTemp("", "peercred")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755) // nobody must reach the socket and run the binary
	path := filepath.Join(dir, "s.sock")
	ln, err := Listen("unix:"+path, 0o666)
	if err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zap.InfoLevel)
	pl, ok := OnlyPeers(ln, zap.New(core)).(*PeerListener)
	if !ok {
		t.Fatal("a unix listener was not wrapped")
	}
	defer pl.Close()
	var clock atomic.Int64
	clock.Store(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	pl.now = func() time.Time { return time.Unix(0, clock.Load()) }
	if a := pl.Allowed(); !slices.Contains(a, 0) || !slices.Contains(a, uint32(os.Geteuid())) {
		t.Errorf("allowed uids %v lack root or our own", a)
	}
	if uid, ok := postfixUID(); ok && !slices.Contains(pl.Allowed(), uid) {
		t.Errorf("allowed uids %v lack postfix's %d", pl.Allowed(), uid)
	}

	accepted := make(chan net.Conn, 16)
	go func() {
		for {
			c, err := pl.Accept()
			if err != nil {
				close(accepted)
				return
			}
			accepted <- c
		}
	}()
	own := func() {
		t.Helper()
		c, err := net.Dial("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		select {
		case s := <-accepted:
			if uid, _, err := peer(s); err != nil || uid != uint32(os.Geteuid()) {
				t.Errorf("accepted a connection of uid %d (%v), want ours", uid, err)
			}
			s.Close()
		case <-time.After(10 * time.Second):
			t.Fatal("our own connection was not accepted")
		}
	}
	own()
	if pl.Refused() != 0 {
		t.Errorf("refused %d", pl.Refused())
	}

	if os.Geteuid() != 0 {
		t.Skip("a client of another uid needs root")
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "client")
	data, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	const nobody = 65534
	asNobody := func(n int) {
		t.Helper()
		cmd := exec.Command(bin, "-test.run=^$")
		cmd.Env = []string{"LISTEN_TEST_DIAL=" + strconv.Itoa(n), "LISTEN_TEST_SOCKET=" + path}
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("client as nobody: %v\n%s", err, out)
		}
	}
	warnings := func() []observer.LoggedEntry {
		return logs.FilterMessageSnippet("refused a connection").AllUntimed()
	}

	asNobody(5)
	if got := pl.Refused(); got != 5 {
		t.Errorf("refused %d connections of nobody, want 5", got)
	}
	select {
	case c := <-accepted:
		t.Fatalf("a connection of nobody was handed out: %v", c)
	default:
	}
	w := warnings()
	if len(w) != 1 {
		t.Fatalf("%d warnings for 5 refused connections, want 1: %v", len(w), w)
	}
	if f := w[0].ContextMap(); f["uid"] != uint32(nobody) || f["refused_since_last_warning"] != uint64(1) || f["user"] != "nobody" {
		t.Errorf("warning fields %v", f)
	}

	// Within the minute: counted, not logged; after it, one more line that
	// says how many were refused meanwhile.
	clock.Add(int64(30 * time.Second))
	asNobody(1)
	if len(warnings()) != 1 || pl.Refused() != 6 {
		t.Errorf("within a minute: %d warnings, %d refused; want 1, 6", len(warnings()), pl.Refused())
	}
	clock.Add(int64(31 * time.Second))
	asNobody(1)
	w = warnings()
	if len(w) != 2 || pl.Refused() != 7 {
		t.Fatalf("after a minute: %d warnings, %d refused; want 2, 7", len(w), pl.Refused())
	}
	if f := w[1].ContextMap(); f["refused_since_last_warning"] != uint64(6) {
		t.Errorf("second warning's count: %v, want 6", f["refused_since_last_warning"])
	}
	// The listener still serves the ones it should.
	own()
}

// TestOnlyPeersOwner: the socket file's owner is let in (the user
// SocketUser= names), and a TCP listener is left alone.
func TestOnlyPeersOwner(t *testing.T) {
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer tcp.Close()
	if OnlyPeers(tcp, nil) != tcp {
		t.Error("a TCP listener was wrapped")
	}
	if os.Geteuid() != 0 {
		t.Skip("chown needs root")
	}
	path := filepath.Join(t.TempDir(), "s.sock")
	ln, err := Listen("unix:"+path, 0o660)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if err := os.Chown(path, 4242, 4242); err != nil {
		t.Fatal(err)
	}
	if a := OnlyPeers(ln, nil).(*PeerListener).Allowed(); !slices.Contains(a, 4242) {
		t.Errorf("allowed uids %v lack the socket's owner 4242", a)
	}
}
