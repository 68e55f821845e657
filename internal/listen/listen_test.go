package listen

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestListen(t *testing.T) {
	ln, err := Listen("127.0.0.1:0", 0)
	if err != nil {
		t.Fatal(err)
	}
	ln.Close()

	path := filepath.Join(t.TempDir(), "s.sock")
	ln, err = Listen("unix:"+path, 0o660)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o660 {
		t.Fatalf("socket mode %v, %v", fi.Mode(), err)
	}
	if _, err := Listen("unix:"+path, 0o660); err == nil {
		t.Error("a live socket was taken over")
	}
	ln.Close()
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Error("socket not unlinked on Close")
	}
	// A stale socket left by a crash is replaced.
	stale, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	stale.(*net.UnixListener).SetUnlinkOnClose(false)
	stale.Close()
	ln, err = Listen("unix:"+path, 0o600)
	if err != nil {
		t.Fatalf("stale socket: %v", err)
	}
	ln.Close()
	// A regular file is never removed.
	file := filepath.Join(t.TempDir(), "f")
	os.WriteFile(file, nil, 0o600)
	if _, err := Listen("unix:"+file, 0o600); err == nil {
		t.Error("a regular file was replaced")
	}
}

// TestSystemdNotOurs: sockets passed to another process (LISTEN_PID) are
// not taken, and the variables are cleared for the programs we run.
// Taking sockets that are ours is tested with systemd-socket-activate in
// internal/daemon and in both daemons' binary tests.
func TestSystemdNotOurs(t *testing.T) {
	if lns, err := Systemd(); lns != nil || err != nil {
		t.Fatalf("without LISTEN_FDS: %v, %v", lns, err)
	}
	t.Setenv("LISTEN_FDS", "1")
	t.Setenv("LISTEN_PID", "1")
	t.Setenv("LISTEN_FDNAMES", "policy")
	lns, err := Systemd()
	if lns != nil || err == nil || !strings.Contains(err.Error(), `LISTEN_FDS is set for process "1"`) {
		t.Errorf("another process's sockets: %v, %v", lns, err)
	}
	for _, v := range []string{"LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"} {
		if _, ok := os.LookupEnv(v); ok {
			t.Errorf("%s left in the environment", v)
		}
	}
}

func TestAddr(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.sock")
	for _, addr := range []string{"127.0.0.1:0", "unix:" + path} {
		ln, err := Listen(addr, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		got := Addr(ln)
		ln.Close()
		if addr == "127.0.0.1:0" {
			if !strings.HasPrefix(got, "127.0.0.1:") || got == addr {
				t.Errorf("Addr = %q", got)
			}
			continue
		}
		if got != addr {
			t.Errorf("Addr = %q, want %q", got, addr)
		}
	}
}
