package daemon

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/mxdetour/mxdetour/internal/daemon/daemontest"
)

// TestUnits checks contrib/systemd against what the runner does: each
// socket unit passes its sockets under the name the daemon asks for, to
// a service that lists it; services are Type=notify with a watchdog, do
// not restart after ExitConfig, and check the configuration before a
// reload signal. systemd-analyze verify, where installed, has nothing to
// say about them.
func TestUnits(t *testing.T) {
	dir := filepath.Join("..", "..", "contrib", "systemd")
	for sock, want := range map[string]struct{ name, service string }{
		"mxdetour-policyd.socket":           {"policy", "mxdetour-policyd.service"},
		"mxdetour-policyd-socketmap.socket": {"socketmap", "mxdetour-policyd.service"},
		"mxdetour-milter.socket":            {"milter", "mxdetour-milter.service"},
	} {
		u := daemontest.Unit(t, filepath.Join(dir, sock))
		if got := u["FileDescriptorName"]; !slices.Equal(got, []string{want.name}) {
			t.Errorf("%s: FileDescriptorName=%q, want %q", sock, got, want.name)
		}
		if got := u["Service"]; !slices.Equal(got, []string{want.service}) {
			t.Errorf("%s: Service=%q, want %q", sock, got, want.service)
		}
		if len(u["ListenStream"]) == 0 {
			t.Errorf("%s: no ListenStream=", sock)
		}
		svc := daemontest.Unit(t, filepath.Join(dir, want.service))
		if !slices.Contains(strings.Fields(strings.Join(svc["Sockets"], " ")), sock) {
			t.Errorf("%s: Sockets= lacks %s", want.service, sock)
		}
	}
	for _, name := range []string{"mxdetour-policyd", "mxdetour-milter"} {
		u := daemontest.Unit(t, filepath.Join(dir, name+".service"))
		for key, want := range map[string]string{
			"Type": "notify", "Restart": "always", "RestartPreventExitStatus": fmt.Sprint(ExitConfig),
			"ExecStart": "/usr/sbin/" + name,
		} {
			if got := u[key]; !slices.Equal(got, []string{want}) {
				t.Errorf("%s.service: %s=%q, want %q", name, key, got, want)
			}
		}
		if len(u["WatchdogSec"]) != 1 || len(u["ExecStartPre"]) != 0 {
			t.Errorf("%s.service: WatchdogSec=%q ExecStartPre=%q", name, u["WatchdogSec"], u["ExecStartPre"])
		}
		// A reload checks the daemon's own part of the file first; policyd's
		// plain -check-config would also check the milter's keys.
		check := "/usr/sbin/" + name + " -check-config"
		if name == "mxdetour-policyd" {
			check += " -self-only"
		}
		if want := []string{check, "/bin/kill -HUP $MAINPID"}; !slices.Equal(u["ExecReload"], want) {
			t.Errorf("%s.service: ExecReload=%q, want %q", name, u["ExecReload"], want)
		}
	}
	verify(t, dir)
}

// verify runs systemd-analyze verify on the units in a root of their own
// that holds the targets they refer to and stand-ins for the binaries.
func verify(t *testing.T, dir string) {
	tool, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Log("systemd-analyze is not installed: units not verified")
		return
	}
	root := t.TempDir()
	units := filepath.Join(root, "etc", "systemd", "system")
	for _, d := range []string{units, filepath.Join(root, "usr", "sbin"), filepath.Join(root, "usr", "lib", "systemd", "system")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, pat := range []string{"*.target", "*.slice"} {
		m, _ := filepath.Glob(filepath.Join("/usr/lib/systemd/system", pat))
		for _, f := range m {
			copyFile(t, f, filepath.Join(root, "usr", "lib", "systemd", "system", filepath.Base(f)))
		}
	}
	for _, b := range []string{"mxdetour-policyd", "mxdetour-milter"} {
		os.WriteFile(filepath.Join(root, "usr", "sbin", b), []byte("#!/bin/sh\n"), 0o755)
	}
	ours, _ := filepath.Glob(filepath.Join(dir, "mxdetour-*")) // the units; tcp/ holds drop-ins (packaging checks them)
	args := []string{"verify", "--man=no", "--root=" + root}
	for _, f := range ours {
		copyFile(t, f, filepath.Join(units, filepath.Base(f)))
		args = append(args, filepath.Base(f))
	}
	cmd := exec.Command(tool, args...)
	cmd.Dir = units
	out, err := cmd.CombinedOutput()
	if err != nil || len(out) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}

func copyFile(t *testing.T, from, to string) {
	data, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, data, 0o644); err != nil {
		t.Fatal(err)
	}
}
