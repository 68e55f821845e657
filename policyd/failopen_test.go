package main

import (
	"bufio"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mxdetour/mxdetour/internal/daemon/daemontest"
	"github.com/mxdetour/mxdetour/internal/lookup/dnstest"
	"github.com/mxdetour/mxdetour/policyd/policydtest"
)

// TestBrokenConfigFailsOpen: started by systemd (its sockets passed) with
// a file it cannot use, policyd does not exit, which under socket
// activation became a start loop with Postfix's lookups stuck in the
// backlog; it answers the fail-open default at once on both sockets,
// says why in STATUS=, and a reload after the fix brings full service in
// the same process (same pid, same sockets), while a reload of a file
// still broken keeps it answering.
func TestBrokenConfigFailsOpen(t *testing.T) {
	srv := dnstest.New(t, policydtest.Zone())
	cfg, _, _ := policydtest.WriteConfig(t, srv.Addr(), "")
	good, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	broken := append(append([]byte{}, good...), "[policyd.typo]\n"...)
	os.WriteFile(cfg, broken, 0o644)

	// Two sockets of one name, as the packaged policy unit passes (the
	// spool's and the abstract one the milter uses).
	smap, pol, pol2 := daemontest.Listen(t, "socketmap"), daemontest.Listen(t, "policy"), daemontest.Listen(t, "policy")
	n := daemontest.ListenNotify(t)
	cmd := daemontest.Command(t, bin, []string{"-config", cfg}, smap, pol, pol2)
	cmd.Env = append(cmd.Env, "NOTIFY_SOCKET="+n.Path, "WATCHDOG_USEC=2000000")
	p := daemontest.Start(t, cmd)
	if m := n.Next(t, "READY=1"); !strings.Contains(m, "STATUS=configuration unusable") || !strings.Contains(m, "policyd.typo") {
		t.Errorf("READY in fail-open: %q", m)
	}
	n.Next(t, "WATCHDOG=1")
	// The reserved domain tells the two apart: full service answers it
	// error:5.1.2, the fail-open default NOTFOUND.
	if got := dialAsk(t, smap.Addr(), "someone@example.com"); got != "NOTFOUND " {
		t.Errorf("socketmap in fail-open: %q", got)
	}
	if got := dialPolicy(t, pol.Addr(), "alice@gmail.mxd"); got != "action=DUNNO" {
		t.Errorf("policy in fail-open: %q", got)
	}
	if !strings.Contains(p.Output(), "the configuration cannot be used") {
		t.Errorf("the log does not say why")
	}

	// Still broken: it keeps answering, and says so again.
	p.Cmd.Process.Signal(syscall.SIGHUP)
	n.Next(t, "RELOADING=1")
	if m := n.Next(t, "READY=1"); !strings.Contains(m, "STATUS=configuration unusable") {
		t.Errorf("after a reload of a broken file: %q", m)
	}
	if got := dialAsk(t, smap.Addr(), "someone@example.com"); got != "NOTFOUND " {
		t.Errorf("socketmap after a failed reload: %q", got)
	}

	// Fixed: the same process serves in full.
	os.WriteFile(cfg, good, 0o644)
	pid := p.Cmd.Process.Pid
	p.Cmd.Process.Signal(syscall.SIGHUP)
	if m := n.Next(t, "READY=1"); !strings.Contains(m, "STATUS=serving") {
		t.Errorf("after the fix: %q", m)
	}
	if got := dialAsk(t, smap.Addr(), "alice@gmail.mxd"); got != "OK relay:[mx03.example.net]:587" {
		t.Errorf("socketmap after the fix: %q", got)
	}
	if got := dialAsk(t, smap.Addr(), "someone@example.com"); !strings.HasPrefix(got, "OK error:5.1.2 ") {
		t.Errorf("reserved domain after the fix: %q", got)
	}
	for _, l := range []daemontest.Socket{pol, pol2} {
		if got := dialPolicy(t, l.Addr(), "alice@gmail.mxd"); got != "action=FILTER relay:[mx03.example.net]:587" {
			t.Errorf("policy on %s after the fix: %q", l.Addr(), got)
		}
	}
	if p.Cmd.Process.Pid != pid || p.Cmd.ProcessState != nil {
		t.Errorf("not the same process")
	}
	p.Stop(t)
}

// TestBrokenConfigByHandExits: run by hand (no sockets from systemd), a
// file it cannot use still stops the daemon with 78 at once.
func TestBrokenConfigByHandExits(t *testing.T) {
	srv := dnstest.New(t, policydtest.Zone())
	cfg, _, _ := policydtest.WriteConfig(t, srv.Addr(), "[policyd.typo]\n")
	done := make(chan error, 1)
	cmd := exec.Command(bin, "-config", cfg)
	go func() { done <- cmd.Run() }()
	select {
	case err := <-done:
		if exitCode(err) != 78 {
			t.Errorf("exit: %v", err)
		}
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		t.Fatal("still running")
	}
}

func dialPolicy(t *testing.T, addr, rcpt string) string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return askPolicy(t, bufio.NewReader(c), c, rcpt)
}

// TestCheckConfigAsStart: -check-config refuses what a start refuses,
// here the compromise signal's country data that does not exist (it said
// OK, and the start exited 78).
func TestCheckConfigAsStart(t *testing.T) {
	srv := dnstest.New(t, policydtest.Zone())
	cfg, _, _ := policydtest.WriteConfig(t, srv.Addr(), "[compromise]\nenabled = true\n[milter.geo]\nsource = \"mmdb\"\nmmdb_file = \"/nonexistent/country.mmdb\"\n")
	out, err := exec.Command(bin, "-check-config", "-self-only", "-config", cfg).CombinedOutput()
	if exitCode(err) != 78 || !strings.Contains(string(out), "/nonexistent/country.mmdb") {
		t.Errorf("-check-config -self-only: %v\n%s", err, out)
	}
}
