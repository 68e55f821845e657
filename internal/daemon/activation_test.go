package daemon

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
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
	if path := os.Getenv("DAEMON_TEST_DIAL"); path != "" {
		// A local client: its connection must be closed unanswered.
		c, err := net.Dial("unix", path)
		if err != nil {
			fmt.Fprintln(os.Stderr, "dial:", err)
			os.Exit(2)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if l, err := bufio.NewReader(c).ReadString('\n'); !errors.Is(err, io.EOF) {
			fmt.Fprintf(os.Stderr, "answered %q (%v), want the connection closed\n", l, err)
			os.Exit(3)
		}
		os.Exit(0)
	}
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
// A unix socket passed under "policy" too is served to our own user and
// (as root) refused to another one, nobody, though its mode lets anyone
// connect; the TCP listeners are said to be open to any local user.
func TestActivation(t *testing.T) {
	tool, err := exec.LookPath("systemd-socket-activate")
	if err != nil {
		t.Skip("systemd-socket-activate is not installed (Debian: systemd)")
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "activation")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755) // for nobody
	unixPolicy := filepath.Join(dir, "policy.sock")
	activated, unknown := addr(freePort(t)), addr(freePort(t))
	configured, socketmap := addr(freePort(t)), addr(freePort(t))
	cmd := exec.Command(tool, "-l", activated, "-l", unknown, "-l", unixPolicy, "--fdname=policy:bogus:policy",
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
	testutil.Eventually(t, "the tool listening", func() bool { return strings.Contains(out.String(), "Listening on") })
	if got := ask(t, activated); got != "policy" {
		t.Errorf("activated socket answered %q", got)
	}
	testutil.Eventually(t, "socketmap on its configured address", func() bool {
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
	if got := askUnix(t, unixPolicy); got != "policy" {
		t.Errorf("activated unix socket answered %q to our own user", got)
	}
	wants := []string{
		`"socket": "policy", "addr": "` + activated + `", "from": "systemd"`,
		`"socket": "policy", "addr": "unix:` + unixPolicy + `", "from": "systemd", "allowed_uids": [0`,
		`"socket": "socketmap", "addr": "` + socketmap + `", "from": "config"`,
		"the socket unit's address is served, not the configured one",
		`systemd passed a socket this daemon has no use for; set FileDescriptorName=	{"name": "bogus"`,
		"TCP listeners are open to any local user",
	}
	if os.Geteuid() == 0 {
		os.Chmod(unixPolicy, 0o666) // the mode lets nobody in; the credentials do not
		bin := filepath.Join(dir, "client")
		data, err := os.ReadFile(self)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(bin, data, 0o755); err != nil {
			t.Fatal(err)
		}
		client := exec.Command(bin)
		client.Env = []string{"DAEMON_TEST_DIAL=" + unixPolicy}
		client.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		if out, err := client.CombinedOutput(); err != nil {
			t.Errorf("a client as nobody: %v\n%s", err, out)
		}
		testutil.Eventually(t, "the refusal logged", func() bool { return strings.Contains(out.String(), "refused a connection from a local user") })
		wants = append(wants, `"socket": "policy", "addr": "unix:`+unixPolicy+`", "uid": 65534, "user": "nobody"`)
		if got := askUnix(t, unixPolicy); got != "policy" {
			t.Errorf("after a refusal, the unix socket answered %q to our own user", got)
		}
	}
	for _, want := range wants {
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

// askUnix is ask over a unix socket.
func askUnix(t *testing.T, path string) string {
	t.Helper()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	l, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(l)
}

// TestConfiguredUnix: a unix socket the daemon opens itself is guarded by
// peer credentials as one systemd passes is, and no TCP warning is given
// when nothing listens on TCP.
func TestConfiguredUnix(t *testing.T) {
	log, logs := logger(t)
	path := filepath.Join(t.TempDir(), "s.sock")
	start(t, Options{Sockets: []Socket{{Name: "policy", Addr: "unix:" + path, Mode: 0o660, Server: &echoServer{name: "policy"}}}, Log: log})
	testutil.Eventually(t, "serving", func() bool { return logs.FilterMessage("listening").Len() == 1 })
	if got := askUnix(t, path); got != "policy" {
		t.Errorf("answered %q", got)
	}
	f := logs.FilterMessage("listening").All()[0].ContextMap()
	if f["addr"] != "unix:"+path || f["allowed_uids"] == nil {
		t.Errorf("listening %v: want the unix address and the uids let in", f)
	}
	if n := logs.FilterMessageSnippet("TCP listeners").Len(); n != 0 {
		t.Errorf("%d TCP warnings with no TCP listener", n)
	}
}
