// Package daemontest lets a test play systemd for a daemon: it listens on
// a notify socket as sd_notify(3) describes, and passes listening sockets
// as sd_listen_fds(3) describes (LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES),
// holding them across the daemon's restarts as a socket unit does.
package daemontest

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mxdetour/mxdetour/internal/testutil"
)

// Notify is a NOTIFY_SOCKET the test reads, as systemd does.
type Notify struct {
	Path string
	ch   chan string
}

// ListenNotify opens a notify socket in a temporary directory; pass
// "NOTIFY_SOCKET="+n.Path to the daemon.
func ListenNotify(t testing.TB) *Notify {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	n := &Notify{Path: path, ch: make(chan string, 1000)}
	go func() {
		buf := make([]byte, 4096)
		for {
			k, err := c.Read(buf)
			if err != nil {
				return
			}
			n.ch <- string(buf[:k])
		}
	}()
	return n
}

// Next returns the next message that starts with prefix, skipping the
// others, and fails the test when none comes within 10 seconds.
func (n *Notify) Next(t testing.TB, prefix string) string {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case m := <-n.ch:
			if strings.HasPrefix(m, prefix) {
				return m
			}
		case <-deadline:
			t.Fatalf("no %q from the daemon within 10s", prefix)
		}
	}
}

// Mark sends a message of the test's own and returns every message that
// came before it: datagrams on one socket are read in the order they
// arrived, so "nothing before the mark" means nothing was sent.
func (n *Notify) Mark(t testing.TB) []string {
	t.Helper()
	c, err := net.Dial("unixgram", n.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("MARK")); err != nil {
		t.Fatal(err)
	}
	var seen []string
	for {
		select {
		case m := <-n.ch:
			if m == "MARK" {
				return seen
			}
			seen = append(seen, m)
		case <-time.After(10 * time.Second):
			t.Fatal("the test's own mark did not come back")
		}
	}
}

// Socket is a listening socket the test holds, with the name systemd
// would pass it under (FileDescriptorName=).
type Socket struct {
	Name string
	Ln   Listener
}

// Listener is a listening socket whose descriptor can be passed on:
// *net.TCPListener or *net.UnixListener.
type Listener interface {
	net.Listener
	File() (*os.File, error)
}

// Listen opens a socket on a free loopback port that the test holds, as
// a socket unit does, for as long as the test runs.
func Listen(t testing.TB, name string) Socket {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return Socket{Name: name, Ln: ln.(*net.TCPListener)}
}

// Addr is the socket's address.
func (s Socket) Addr() string { return s.Ln.Addr().String() }

// Command runs bin with args and the sockets passed as systemd passes
// them: from file descriptor 3 on, LISTEN_FDS, LISTEN_FDNAMES, and
// LISTEN_PID set to the daemon's own pid, which only the child knows: a
// shell sets it and execs the daemon, keeping its pid.
func Command(t testing.TB, bin string, args []string, socks ...Socket) *exec.Cmd {
	t.Helper()
	cmd := exec.Command("/bin/sh", append([]string{"-c", `LISTEN_PID=$$ exec "$0" "$@"`, bin}, args...)...)
	var names []string
	for _, s := range socks {
		f, err := s.Ln.File() // a duplicate: the test keeps its own
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		cmd.ExtraFiles = append(cmd.ExtraFiles, f)
		names = append(names, s.Name)
	}
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "LISTEN_") && !strings.HasPrefix(e, "NOTIFY_SOCKET=") && !strings.HasPrefix(e, "WATCHDOG_") {
			cmd.Env = append(cmd.Env, e)
		}
	}
	cmd.Env = append(cmd.Env, fmt.Sprintf("LISTEN_FDS=%d", len(socks)), "LISTEN_FDNAMES="+strings.Join(names, ":"))
	return cmd
}

// Proc is a daemon a test started: its output and its end.
type Proc struct {
	Cmd  *exec.Cmd
	out  *testutil.LockedBuffer
	done chan error
}

// Start starts cmd, collecting its output; at the end of the test it is
// killed if still running, and its output logged if the test failed.
func Start(t testing.TB, cmd *exec.Cmd) *Proc {
	t.Helper()
	p := &Proc{Cmd: cmd, out: &testutil.LockedBuffer{}, done: make(chan error, 1)}
	cmd.Stdout, cmd.Stderr = p.out, p.out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("%s output:\n%s", cmd.Path, p.out)
		}
	})
	return p
}

// Output is what the daemon wrote so far, stdout and stderr.
func (p *Proc) Output() string { return p.out.String() }

// Stop sends SIGTERM and checks that the daemon drains and exits 0.
func (p *Proc) Stop(t testing.TB) {
	t.Helper()
	p.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.done:
		p.done <- err // for the cleanup
		if err != nil {
			t.Errorf("exit after SIGTERM: %v, want 0", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("no exit within 15s of SIGTERM")
	}
}

// Unit reads a systemd unit file's Key=value lines, each key with its
// values in order (a list key such as ListenStream= may repeat; an empty
// value resets it). Comments and section headers are skipped.
func Unit(t testing.TB, path string) map[string][]string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	u := map[string][]string{}
	for _, l := range strings.Split(string(data), "\n") {
		l = strings.TrimSpace(l)
		if k, v, ok := strings.Cut(l, "="); ok && !strings.HasPrefix(l, "#") && !strings.HasPrefix(l, ";") {
			u[k] = append(u[k], v)
		}
	}
	return u
}
