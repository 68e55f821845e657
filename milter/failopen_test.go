package main

import (
	"os"
	"strings"
	"syscall"
	"testing"

	"github.com/d--j/go-milter"

	"github.com/mxdetour/mxdetour/internal/daemon/daemontest"
)

// TestBrokenConfigFailsOpen: started by systemd with a file it cannot
// parse, the milter does not exit (a start loop under socket activation,
// Postfix waiting on a socket nobody accepts) but accepts every message
// untouched, says why in STATUS=, and signs again once a reload finds the
// file fixed, in the same process on the same socket.
func TestBrokenConfigFailsOpen(t *testing.T) {
	cfg, _, _, _ := newMilterConfig(t)
	good, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(cfg, append(append([]byte{}, good...), "[milter.typo]\n"...), 0o644)
	sock := daemontest.Listen(t, "milter")
	n := daemontest.ListenNotify(t)
	cmd := daemontest.Command(t, bin, []string{"-config", cfg}, sock)
	cmd.Env = append(cmd.Env, "NOTIFY_SOCKET="+n.Path)
	p := daemontest.Start(t, cmd)
	if m := n.Next(t, "READY=1"); !strings.Contains(m, "STATUS=configuration unusable") || !strings.Contains(m, "milter.typo") {
		t.Errorf("READY in fail-open: %q", m)
	}
	s, err := milter.NewClient("tcp", sock.Addr()).Session(milter.NewMacroBag())
	if err != nil {
		t.Fatal(err)
	}
	act, err := s.Conn("localhost", milter.FamilyInet, 1, "127.0.0.1")
	if err != nil || act.Type != milter.ActionAccept {
		t.Errorf("connect in fail-open: %+v, %v", act, err)
	}
	s.Close()

	os.WriteFile(cfg, good, 0o644)
	p.Cmd.Process.Signal(syscall.SIGHUP)
	if m := n.Next(t, "READY=1"); !strings.Contains(m, "STATUS=serving milter") {
		t.Errorf("after the fix: %q", m)
	}
	if got := signatures(t, sock.Addr()); got != 1 {
		t.Errorf("after the fix: %d signatures, want 1", got)
	}
	p.Stop(t)
}
