package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestPermissionAdviceBinary: a key file the daemon's user cannot read
// is named with the chown advice. Run as root, it runs -check-config
// as nobody on a key only root may read.
func TestPermissionAdviceBinary(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run the milter as another user")
	}
	dir, err := os.MkdirTemp("", "milter-perm-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	exe := filepath.Join(dir, "mxdetour-milter")
	data, _ := os.ReadFile(bin)
	os.WriteFile(exe, data, 0o755)
	key, _ := keygenTXT(t, dir, "example.org", "ed", "ed25519") // root's, mode 0600
	cfg := filepath.Join(dir, "mxdetour.toml")
	os.WriteFile(cfg, []byte("[[milter.dkim.keys]]\ndomain = \"example.org\"\nselector = \"ed\"\nkey_file = \""+key+"\"\n"), 0o644)
	cmd := exec.Command(exe, "-check-config", "-config", cfg)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if code := exitCode(err); code != 78 || !strings.Contains(string(out), "permission denied: the milter runs as user mxdetour; chown mxdetour "+key) {
		t.Errorf("exit %d, want 78 with the chown advice:\n%s", code, out)
	}
}
