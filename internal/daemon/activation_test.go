package daemon

import (
	"context"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/mxdetour/mxdetour/internal/testutil"
)

// TestMain lets the test binary play a daemon under
// systemd-socket-activate (see TestActivation).
func TestMain(m *testing.M) {
	if os.Getenv("DAEMON_TEST_HELPER") == "" {
		os.Exit(m.Run())
	}
	log, _ := zap.NewDevelopment()
	err := Run(context.Background(), Options{Sockets: []Socket{
		{Name: "policy", Addr: os.Getenv("POLICY_ADDR"), Server: &echoServer{name: "policy"}},
		{Name: "socketmap", Addr: os.Getenv("SOCKETMAP_ADDR"), Server: &echoServer{name: "socketmap"}},
	}, Log: log})
	if err != nil {
		log.Error("exiting", zap.Error(err))
		os.Exit(ExitFailure)
	}
}

// TestActivation runs a daemon under systemd's own socket activation
// tool: the socket named "policy" is served from systemd's socket (not
// the configured address), "socketmap", which systemd did not pass, from
// its configured address, and a socket of an unknown name is reported.
func TestActivation(t *testing.T) {
	tool, err := exec.LookPath("systemd-socket-activate")
	if err != nil {
		t.Skip("systemd-socket-activate is not installed (Debian: systemd)")
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	activated, unknown := addr(freePort(t)), addr(freePort(t))
	configured, socketmap := addr(freePort(t)), addr(freePort(t))
	cmd := exec.Command(tool, "-l", activated, "-l", unknown, "--fdname=policy:bogus",
		"-E", "DAEMON_TEST_HELPER=1", "-E", "POLICY_ADDR="+configured, "-E", "SOCKETMAP_ADDR="+socketmap, self)
	out := &testutil.LockedBuffer{}
	cmd.Stderr = out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if t.Failed() {
			t.Logf("daemon output:\n%s", out)
		}
	}()
	// The tool runs the daemon at the first connection.
	eventually(t, "the tool listening", func() bool { return strings.Contains(out.String(), "Listening on") })
	if got := ask(t, activated); got != "policy" {
		t.Errorf("activated socket answered %q", got)
	}
	eventually(t, "socketmap on its configured address", func() bool {
		c, err := net.Dial("tcp", socketmap)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	if got := ask(t, socketmap); got != "socketmap" {
		t.Errorf("configured socket answered %q", got)
	}
	if c, err := net.Dial("tcp", configured); err == nil {
		c.Close()
		t.Error("the configured policy address is served though systemd passed a policy socket")
	}
	for _, want := range []string{
		`"socket": "policy", "addr": "` + activated + `", "from": "systemd"`,
		`"socket": "socketmap", "addr": "` + socketmap + `", "from": "config"`,
		"the socket unit's address is served, not the configured one",
		`systemd passed a socket this daemon has no use for; set FileDescriptorName=	{"name": "bogus"`,
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("log lacks %q", want)
		}
	}
	cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("exit after SIGTERM: %v", err)
		}
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		t.Fatal("no exit after SIGTERM")
	}
}
