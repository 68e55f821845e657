package main

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mxdetour/mxdetour/internal/daemon/daemontest"
	"github.com/mxdetour/mxdetour/internal/lookup/dnstest"
	"github.com/mxdetour/mxdetour/internal/testutil"
	"github.com/mxdetour/mxdetour/policyd/policydtest"
	"github.com/mxdetour/mxdetour/policyd/socketmap"
)

// TestExitCodes: a broken configuration and arguments the command does not
// know end with 78 (EX_CONFIG; the unit does not restart) and the usage,
// never with a running daemon; -h is no error.
func TestExitCodes(t *testing.T) {
	cfg, _, _ := policydtest.WriteConfig(t, "127.0.0.1:9", "")
	bad, _, _ := policydtest.WriteConfig(t, "127.0.0.1:9", "[policyd.extra]\n")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-config", bad}, "policyd.extra: unknown key"},
		{[]string{"help"}, `unknown argument "help"`},
		{[]string{"-check-config", "typo.toml"}, `unknown argument "typo.toml"`},
		{[]string{"-config", cfg, "extra"}, `unknown argument "extra"`},
		{[]string{"-version", "x"}, `unknown argument "x"`},
		{[]string{"-bogus"}, "flag provided but not defined: -bogus"},
		{[]string{"-config"}, "flag needs an argument: -config"},
		{[]string{"check"}, "usage: mxdetour-policyd check"},
		{[]string{"check", "-bogus", "a@b.mxd"}, "flag provided but not defined: -bogus"},
		{[]string{"blocks", "-config", cfg, "extra"}, "usage: mxdetour-policyd blocks"},
	} {
		cmd := exec.Command(bin, tc.args...)
		cmd.WaitDelay = 10 * time.Second
		out, err := cmd.CombinedOutput()
		if code := exitCode(err); code != 78 {
			t.Errorf("%q: exit %d (%v), want 78\n%s", tc.args, code, err, out)
		}
		if !strings.Contains(string(out), tc.want) || !strings.Contains(strings.ToLower(string(out)), "usage") && !strings.Contains(tc.want, "unknown key") {
			t.Errorf("%q: output lacks %q or the usage:\n%s", tc.args, tc.want, out)
		}
	}
	out, err := exec.Command(bin, "-h").CombinedOutput()
	if exitCode(err) != 0 || !strings.Contains(string(out), "mxdetour-policyd check [-config FILE]") {
		t.Errorf("-h: %v\n%s", err, out)
	}
}

func dialAsk(t *testing.T, addr, key string) string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return askSocketmap(t, bufio.NewReader(c), c, key)
}

// TestSocketActivation: under systemd's own activation tool, the socketmap
// is served on the socket the tool passes as "socketmap", not on the
// configured address, and the policy service, which it did not pass, on
// its configured address.
func TestSocketActivation(t *testing.T) {
	tool, err := exec.LookPath("systemd-socket-activate")
	if err != nil {
		t.Skip("systemd-socket-activate is not installed (Debian: systemd)")
	}
	srv := dnstest.New(t, policydtest.Zone())
	cfg, policyPort, smapPort := policydtest.WriteConfig(t, srv.Addr(), "")
	activated := fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t))
	p := daemontest.Start(t, exec.Command(tool, "-l", activated, "--fdname=socketmap", bin, "-config", cfg))
	testutil.Eventually(t, "the tool listening", func() bool { return strings.Contains(p.Output(), "Listening on") })
	// The tool starts the daemon at this first connection.
	if got := dialAsk(t, activated, "alice@gmail.mxd"); got != "OK relay:[mx03.example.net]:587" {
		t.Errorf("activated socketmap: %q", got)
	}
	testutil.Eventually(t, "the policy service on its configured address", func() bool { return canDial(fmt.Sprintf("127.0.0.1:%d", policyPort)) })
	if canDial(fmt.Sprintf("127.0.0.1:%d", smapPort)) {
		t.Error("the configured socketmap address is served too")
	}
	if !strings.Contains(p.Output(), `"socket": "socketmap", "addr": "`+activated+`", "from": "systemd"`) {
		t.Errorf("the log does not say the socketmap came from systemd")
	}
	p.Stop(t)
}

// TestRestartQueues: while the daemon restarts under a socket its parent
// holds (as systemd holds a socket unit's), Postfix's connections wait in
// the kernel's queue and are answered by the new process; none is refused.
func TestRestartQueues(t *testing.T) {
	srv := dnstest.New(t, policydtest.Zone())
	cfg, _, _ := policydtest.WriteConfig(t, srv.Addr(), "")
	sock := daemontest.Listen(t, "socketmap")
	first := daemontest.Start(t, daemontest.Command(t, bin, []string{"-config", cfg}, sock))
	if got := dialAsk(t, sock.Addr(), "alice@gmail.mxd"); got != "OK relay:[mx03.example.net]:587" {
		t.Fatalf("first process: %q", got)
	}
	first.Stop(t)

	// Nobody accepts now; these connect all the same and send their request.
	var conns []net.Conn
	for i := range 20 {
		c, err := net.Dial("tcp", sock.Addr())
		if err != nil {
			t.Fatalf("connection %d while the daemon is down: %v", i, err)
		}
		defer c.Close()
		req := fmt.Sprintf("transport u%d@gmail.mxd", i)
		fmt.Fprintf(c, "%d:%s,", len(req), req)
		conns = append(conns, c)
	}
	second := daemontest.Start(t, daemontest.Command(t, bin, []string{"-config", cfg}, sock))
	for i, c := range conns {
		c.SetDeadline(time.Now().Add(10 * time.Second))
		got, err := socketmap.ReadNetstring(bufio.NewReader(c), 100000, nil)
		if err != nil || string(got) != "OK relay:[mx03.example.net]:587" {
			t.Errorf("connection %d made during the restart: %q, %v", i, got, err)
		}
	}
	second.Stop(t)
}

// TestNotifyAndWatchdog: READY=1 once serving, WATCHDOG=1 every half
// WATCHDOG_USEC, RELOADING=1 and READY=1 around SIGHUP (a failed reload
// says so in STATUS=), STOPPING=1 at SIGTERM.
func TestNotifyAndWatchdog(t *testing.T) {
	srv := dnstest.New(t, policydtest.Zone())
	cfg, _, _ := policydtest.WriteConfig(t, srv.Addr(), "")
	n := daemontest.ListenNotify(t)
	cmd := exec.Command(bin, "-config", cfg)
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+n.Path, "WATCHDOG_USEC=1000000")
	p := daemontest.Start(t, cmd)
	if m := n.Next(t, "READY=1"); !strings.Contains(m, "STATUS=serving policy on 127.0.0.1:") {
		t.Errorf("READY: %q", m)
	}
	for range 3 {
		n.Next(t, "WATCHDOG=1")
	}
	p.Cmd.Process.Signal(syscall.SIGHUP)
	n.Next(t, "RELOADING=1")
	if m := n.Next(t, "READY=1"); !strings.Contains(m, "STATUS=serving") {
		t.Errorf("after reload: %q", m)
	}
	data, _ := os.ReadFile(cfg)
	os.WriteFile(cfg, append(data, "[policyd.extra]\n"...), 0o644)
	p.Cmd.Process.Signal(syscall.SIGHUP)
	n.Next(t, "RELOADING=1")
	if m := n.Next(t, "READY=1"); !strings.Contains(m, "STATUS=reload failed, running the previous configuration: ") || !strings.Contains(m, "policyd.extra: unknown key") {
		t.Errorf("after a failed reload: %q", m)
	}
	n.Next(t, "WATCHDOG=1")
	p.Stop(t)
	n.Next(t, "STOPPING=1")
}

func canDial(addr string) bool {
	c, err := net.Dial("tcp", addr)
	if err == nil {
		c.Close()
	}
	return err == nil
}

// TestMissingStateDirectory: a state_file in a directory that does not
// exist fails -check-config, naming the key, but the daemon serves anyway
// (learned blocks in memory only, said at error level): routing must not
// stop for it.
func TestMissingStateDirectory(t *testing.T) {
	srv := dnstest.New(t, policydtest.Zone())
	cfg, _, smap := policydtest.WriteConfig(t, srv.Addr(), "")
	data, _ := os.ReadFile(cfg)
	missing := filepath.Join(t.TempDir(), "gone", "state.json")
	data = regexp.MustCompile(`(?m)^state_file = .*$`).ReplaceAll(data, []byte(fmt.Sprintf("state_file = %q", missing)))
	if err := os.WriteFile(cfg, data, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, "-check-config", "-config", cfg).CombinedOutput()
	if code := exitCode(err); code != 78 || !strings.Contains(string(out), "learn.state_file") || !strings.Contains(string(out), "does not exist") {
		t.Errorf("-check-config: exit %d\n%s", code, out)
	}
	startDaemon(t, cfg, smap)
	c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", smap))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got := askSocketmap(t, bufio.NewReader(c), c, "a@gmail.mxd"); got != "OK relay:[mx03.example.net]:587" {
		t.Errorf("socketmap: %q", got)
	}
}
