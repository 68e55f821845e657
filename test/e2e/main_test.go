// Package e2e proves mxdetour the way a postmaster runs it: a real Postfix
// (Debian's package) in a private config and queue directory on loopback,
// both daemons built from this tree and run as binaries, an in-process DNS
// server, and SMTP sinks standing for the relay and for direct delivery.
//
// It needs root (Postfix's master runs as root and drops to the postfix
// user) and the postfix package; .ci/run installs it. Without them the
// tests are skipped, saying why.
package e2e

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

var binPolicyd, binMilter string

// skipReason is why this machine cannot run the suite ("" = it can).
var skipReason string

func TestMain(m *testing.M) {
	switch {
	case os.Geteuid() != 0:
		skipReason = "needs root to run a throwaway Postfix instance"
	default:
		if _, err := exec.LookPath("postfix"); err != nil {
			if _, err := os.Stat("/usr/sbin/postfix"); err != nil {
				skipReason = "Postfix is not installed (apt-get install postfix; .ci/run does)"
			}
		}
	}
	os.Setenv("PATH", os.Getenv("PATH")+":/usr/sbin:/usr/bin")
	// These tests mostly wait on Postfix's queue and timers, not on the
	// CPU: unless -parallel was given, run more of them at once than
	// GOMAXPROCS (go test's default) would.
	flag.Parse()
	explicit := false
	flag.Visit(func(f *flag.Flag) { explicit = explicit || f.Name == "test.parallel" })
	if !explicit {
		_ = flag.Set("test.parallel", "16")
	}
	if skipReason != "" {
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "mxdetour-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binPolicyd = filepath.Join(dir, "mxdetour-policyd")
	binMilter = filepath.Join(dir, "mxdetour-milter")
	for bin, pkg := range map[string]string{binPolicyd: "../../policyd", binMilter: "../../milter"} {
		out, err := exec.Command("go", "build", "-o", bin, pkg).CombinedOutput()
		if err != nil {
			fmt.Fprintf(os.Stderr, "building %s: %v\n%s", pkg, err, out)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// needPostfix skips the test when this machine cannot run Postfix.
func needPostfix(t *testing.T) {
	t.Helper()
	if skipReason != "" {
		t.Skip(skipReason)
	}
}
