package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/d--j/go-milter"

	"github.com/mxdetour/mxdetour/internal/daemon/daemontest"
	"github.com/mxdetour/mxdetour/internal/testutil"
)

// These tests run mxdetour-milter as a postmaster does: the binary, a
// config file, real sockets.

var bin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "milter-bin-")
	if err != nil {
		panic(err)
	}
	bin = filepath.Join(dir, "mxdetour-milter")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// setup makes a key with keygen and writes a config using it; write
// rewrites the config with another key file.
func newMilterConfig(t *testing.T) (cfg string, lport, mport int, write func(keyFile string)) {
	dir := t.TempDir()
	if out, err := exec.Command(bin, "keygen", "-domain", "example.org", "-selector", "ed", "-algorithm", "ed25519", "-dir", dir).CombinedOutput(); err != nil || !strings.Contains(string(out), `ed._domainkey.example.org. IN TXT ( "v=DKIM1; k=ed25519; p=`) {
		t.Fatalf("keygen: %v\n%s", err, out)
	}
	key := filepath.Join(dir, "example.org.ed.key")
	if fi, _ := os.Stat(key); fi.Mode().Perm() != 0o600 {
		t.Errorf("key mode %v", fi.Mode())
	}
	mport, lport = testutil.FreePort(t), testutil.FreePort(t)
	cfg = filepath.Join(dir, "mxdetour.toml")
	write = func(keyFile string) {
		os.WriteFile(cfg, []byte(fmt.Sprintf("[milter]\nlisten = \"127.0.0.1:%d\"\n[metrics]\nmilter_listen = \"127.0.0.1:%d\"\n[[milter.dkim.keys]]\ndomain = \"example.org\"\nselector = \"ed\"\nkey_file = %q\n", lport, mport, keyFile)), 0o644)
	}
	write(key)
	return cfg, lport, mport, write
}

// signatures sends one message through the milter at addr and returns
// how many DKIM-Signature headers it added.
func signatures(t *testing.T, addr string) int {
	t.Helper()
	n, err := sign(milter.NewClient("tcp", addr))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func sign(c *milter.Client) (int, error) {
	macros := milter.NewMacroBag()
	macros.Set(milter.MacroDaemonAddr, "127.0.0.1")
	s, err := c.Session(macros)
	if err != nil {
		return 0, err
	}
	defer s.Close()
	s.Conn("localhost", milter.FamilyInet, 1, "127.0.0.1")
	s.Helo("localhost")
	s.Mail("<a@example.org>", "")
	s.Rcpt("<b@partner.mxd>", "")
	s.DataStart()
	s.HeaderField("From", " a@example.org", nil)
	s.HeaderEnd()
	mods, _, err := s.BodyReadFrom(strings.NewReader("hi\r\n"))
	if err != nil {
		return 0, err
	}
	n := 0
	for _, m := range mods {
		if m.Type == milter.ActionInsertHeader {
			n++
		}
	}
	return n, nil
}

// dialed is a milter.Dialer handing out a connection made earlier.
type dialed struct{ c net.Conn }

func (d dialed) Dial(string, string) (net.Conn, error) { return d.c, nil }

func canDial(addr string) bool {
	c, err := net.Dial("tcp", addr)
	if err == nil {
		c.Close()
	}
	return err == nil
}

// TestBinary: keygen, a config with the key, a message through the milter
// protocol, metrics, and a reload with a broken key file that keeps
// signing with the key loaded before.
func TestBinary(t *testing.T) {
	cfg, lport, mport, write := newMilterConfig(t)
	if out, err := exec.Command(bin, "-check-config", "-config", cfg).CombinedOutput(); err != nil || !strings.Contains(string(out), "OK (1 DKIM keys; ") {
		t.Fatalf("-check-config: %v %s", err, out)
	}
	p := daemontest.Start(t, exec.Command(bin, "-config", cfg))
	addr := fmt.Sprintf("127.0.0.1:%d", lport)
	testutil.Eventually(t, "the milter listening", func() bool { return canDial(addr) })
	if n := signatures(t, addr); n != 1 {
		t.Errorf("%d signatures, want 1", n)
	}
	// A broken key at reload: the old key stays in use.
	broken := filepath.Join(filepath.Dir(cfg), "broken.key")
	os.WriteFile(broken, []byte("not a key"), 0o600)
	write(broken)
	p.Cmd.Process.Signal(syscall.SIGHUP)
	testutil.Eventually(t, "the broken key logged", func() bool {
		return strings.Contains(p.Output(), "still signing with the key loaded before") && strings.Contains(p.Output(), "broken.key")
	})
	if n := signatures(t, addr); n != 1 {
		t.Errorf("after a failed reload: %d signatures, want 1", n)
	}
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", mport))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{"mxdetour_milter_signed_total 2", "mxdetour_milter_message_seconds_count 2", "\nmxdetour_milter_sessions_total 2\n"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	p.Stop(t)
}

// exitCode is a finished command's exit code, -1 when it did not exit.
func exitCode(err error) int {
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		return ee.ExitCode()
	}
	return -1
}

// TestExitCodes: a broken configuration or key and arguments a command
// does not know end with 78 (EX_CONFIG; the unit does not restart), never
// with a running milter.
func TestExitCodes(t *testing.T) {
	cfg, _, _, write := newMilterConfig(t)
	bad := filepath.Join(t.TempDir(), "bad.toml")
	os.WriteFile(bad, []byte("[milter]\nlisten = 5\n"), 0o644)
	unknown := filepath.Join(t.TempDir(), "unknown.toml")
	os.WriteFile(unknown, []byte("[milter]\nlisten_adress = \"127.0.0.1:1\"\n"), 0o644)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-config", bad}, "bad.toml:2"},
		{[]string{"-check-config", "-config", bad}, "bad.toml:2"},
		{[]string{"-config", unknown}, "unknown.toml:2"},
		{[]string{"-check-config", "-config", unknown}, "listen_adress"},
		{[]string{"help"}, `unknown argument "help"`},
		{[]string{"-check-config", "typo.toml"}, `unknown argument "typo.toml"`},
		{[]string{"-config", cfg, "extra"}, `unknown argument "extra"`},
		{[]string{"-bogus"}, "flag provided but not defined: -bogus"},
		{[]string{"keygen", "-domain", "example.org", "-selector", "s", "extra"}, "usage: mxdetour-milter keygen"},
		{[]string{"keygen", "-bogus"}, "flag provided but not defined: -bogus"},
	} {
		cmd := exec.Command(bin, tc.args...)
		cmd.Dir = t.TempDir()
		cmd.WaitDelay = 10 * time.Second
		out, err := cmd.CombinedOutput()
		if code := exitCode(err); code != 78 {
			t.Errorf("%q: exit %d (%v), want 78\n%s", tc.args, code, err, out)
		}
		if !strings.Contains(string(out), tc.want) {
			t.Errorf("%q: output lacks %q:\n%s", tc.args, tc.want, out)
		}
	}
	// A bad key fails the check, naming it; the daemon starts without it
	// (TestDegradedStart).
	write(filepath.Join(t.TempDir(), "missing.key"))
	out, err := exec.Command(bin, "-check-config", "-config", cfg).CombinedOutput()
	if code := exitCode(err); code != 78 || !strings.Contains(string(out), "missing.key: no such file or directory") {
		t.Errorf("-check-config, a missing key file: exit %d (%v), want 78\n%s", code, err, out)
	}
}

// TestSocketActivation: under systemd's own activation tool the milter
// serves the socket passed as "milter", not its configured address, and
// tells systemd: READY=1, WATCHDOG=1 pings, RELOADING=1 and READY=1 at
// SIGHUP, STOPPING=1 at SIGTERM.
func TestSocketActivation(t *testing.T) {
	tool, err := exec.LookPath("systemd-socket-activate")
	if err != nil {
		t.Skip("systemd-socket-activate is not installed (Debian: systemd)")
	}
	cfg, lport, _, _ := newMilterConfig(t)
	n := daemontest.ListenNotify(t)
	activated := fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t))
	p := daemontest.Start(t, exec.Command(tool, "-l", activated, "--fdname=milter",
		"-E", "NOTIFY_SOCKET="+n.Path, "-E", "WATCHDOG_USEC=1000000", bin, "-config", cfg))
	testutil.Eventually(t, "the tool listening", func() bool { return strings.Contains(p.Output(), "Listening on") })
	// The tool starts the milter at this first connection.
	if got := signatures(t, activated); got != 1 {
		t.Errorf("through the activated socket: %d signatures, want 1", got)
	}
	if m := n.Next(t, "READY=1"); m != "READY=1\nSTATUS=serving milter on "+activated {
		t.Errorf("READY: %q", m)
	}
	if canDial(fmt.Sprintf("127.0.0.1:%d", lport)) {
		t.Error("the configured address is served too")
	}
	n.Next(t, "WATCHDOG=1")
	n.Next(t, "WATCHDOG=1")
	p.Cmd.Process.Signal(syscall.SIGHUP)
	n.Next(t, "RELOADING=1")
	n.Next(t, "READY=1")
	p.Stop(t)
	n.Next(t, "STOPPING=1")
}

// TestRestartQueues: milter sessions Postfix opens while the milter
// restarts under a socket its parent holds wait in the kernel's queue and
// are served by the new process.
func TestRestartQueues(t *testing.T) {
	cfg, _, _, _ := newMilterConfig(t)
	sock := daemontest.Listen(t, "milter")
	first := daemontest.Start(t, daemontest.Command(t, bin, []string{"-config", cfg}, sock))
	if got := signatures(t, sock.Addr()); got != 1 {
		t.Fatalf("first process: %d signatures", got)
	}
	first.Stop(t)
	// Postfix connects while nobody accepts, and starts its session.
	got := make(chan error, 5)
	for i := range cap(got) {
		c, err := net.Dial("tcp", sock.Addr())
		if err != nil {
			t.Fatalf("connection %d while the milter is down: %v", i, err)
		}
		go func() {
			n, err := sign(milter.NewClient("tcp", sock.Addr(), milter.WithDialer(dialed{c})))
			if err == nil && n != 1 {
				err = fmt.Errorf("%d signatures, want 1", n)
			}
			got <- err
		}()
	}
	daemontest.Start(t, daemontest.Command(t, bin, []string{"-config", cfg}, sock))
	for range cap(got) {
		if err := <-got; err != nil {
			t.Errorf("a session opened during the restart: %v", err)
		}
	}
}
