package listen

import (
	"net"
	"os"
	"path/filepath"
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
