package main

import (
	"context"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/zap/zaptest"

	"github.com/mxdetour/mxdetour/internal/config"
)

// TestCountrySourceDegraded: a country database that does not open
// leaves the milter running without the country block at start, and
// keeps the database in use at a reload.
func TestCountrySourceDegraded(t *testing.T) {
	dir := t.TempDir()
	cfg := config.Default()
	cfg.Milter.Geo = config.Geo{Source: "mmdb", MMDBFile: filepath.Join(dir, "missing.mmdb"), BlockCountries: []string{"RU"}}
	log := zaptest.NewLogger(t)
	b := newState(cfg, log, nil)
	if b.geo != geoFailed || b.st.Geo.Active() || len(b.problems()) != 1 || !strings.Contains(b.problems()[0].Error(), "missing.mmdb") {
		t.Errorf("at start: %s, active %v, problems %v; want failed, inactive, naming the file", b.geo, b.st.Geo.Active(), b.problems())
	}
	if _, err := buildState(cfg, log); err == nil || !strings.Contains(err.Error(), "1 problem(s)") || !strings.Contains(err.Error(), "missing.mmdb") {
		t.Errorf("the check's build: %v, want the missing database named", err)
	}
	good := *cfg
	good.Milter.Geo.MMDBFile = countryDB(t, dir)
	running := newState(&good, log, nil)
	if running.geo != geoLoaded || len(running.problems()) != 0 {
		t.Fatalf("a good database: %s %v", running.geo, running.problems())
	}
	next := newState(cfg, log, running)
	running.st.Geo.Close() // as reload does after the swap
	defer next.st.Geo.Close()
	v, err := next.st.Geo.Check(context.Background(), netip.MustParseAddr("203.0.113.9"))
	blocked, cc := v.Refuse(), v.Country
	if next.geo != geoKept || !blocked || cc != "RU" || err != nil {
		t.Errorf("a reload whose database fails: %s, %v %q %v; want the database in use kept", next.geo, blocked, cc, err)
	}
}

func TestRestartOnly(t *testing.T) {
	a, b := config.Default(), config.Default()
	b.Milter.Listen, b.Log.Format, b.Milter.RejectReserved = "unix:/run/mxdetour/milter.sock", "json", false
	if d := cmp.Diff([]string{"milter.listen", "log.format"}, restartOnly(a, b)); d != "" {
		t.Errorf("restart-only settings changed (-want +got):\n%s", d)
	}
}

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
