package main

import (
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mxdetour/mxdetour/internal/lookup/dnstest"
	"github.com/mxdetour/mxdetour/policyd/policydtest"
	"github.com/mxdetour/mxdetour/policyd/wire/wiretest"
)

func runBin(t *testing.T, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.WaitDelay = 10 * time.Second
	out, err := cmd.CombinedOutput()
	t.Logf("mxdetour-policyd %s:\n%s", strings.Join(args, " "), out)
	return string(out), exitCode(err)
}

// wire and unwire as an administrator runs them: the binary and its TOML
// (relay, ipv4, limits), the daemon answering, Postfix from Debian's
// stock files.
func TestWireCommand(t *testing.T) {
	in := wiretest.New(t, "", "")
	dns := dnstest.New(t, policydtest.Zone())
	cfg, policy, smap := policydtest.WriteConfig(t, dns.Addr(), "[[limits]]\nkey = \"sasl_username\"\nmax = 100\nwindow = \"1h\"\n")
	startDaemon(t, cfg, smap)
	pristine := in.Snapshot()

	out, code := runBin(t, "wire", "-config", cfg, "-postfix-config", in.Conf)
	if code != 0 || !strings.Contains(out, "postfix check: OK") || !strings.Contains(out, "error:5.1.2") {
		t.Fatalf("wire: exit %d, want 0 with postfix check and the lookup", code)
	}
	if got := in.Param("mxdetour_limits"); !strings.Contains(got, "127.0.0.1:"+strconv.Itoa(policy)) {
		t.Errorf("mxdetour_limits = %q, not the policy port %d", got, policy)
	}
	if got := in.Options()["relay/unix/smtp_tls_security_level"]; got != "encrypt" {
		t.Errorf("relay's smtp_tls_security_level = %q", got)
	}
	wired := in.Snapshot()
	if out, code = runBin(t, "wire", "-config", cfg, "-postfix-config", in.Conf); code != 0 || !strings.Contains(out, "nothing to change") {
		t.Errorf("second wire: exit %d, want 0 and nothing to change", code)
	}
	in.SameBytes(wired, true)
	if out, code = runBin(t, "unwire", "-postfix-config", in.Conf); code != 0 {
		t.Errorf("unwire: exit %d\n%s", code, out)
	}
	in.SameBytes(pristine, false)
}

func TestWireCommandUsage(t *testing.T) {
	cfg, _, _ := policydtest.WriteConfig(t, "127.0.0.1:9", "")
	bad, _, _ := policydtest.WriteConfig(t, "127.0.0.1:9", "[transports.extra]\n")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"wire", "extra"}, `unknown argument "extra"`},
		{[]string{"unwire", "-bogus"}, "flag provided but not defined: -bogus"},
		{[]string{"wire", "-config", bad}, "transports.extra"},
		{[]string{"wire", "-config", cfg, "-postfix-config", t.TempDir()}, "main.cf"},
	} {
		if out, code := runBin(t, tc.args...); code != 78 || !strings.Contains(out, tc.want) {
			t.Errorf("%q: exit %d, want 78 saying %q", tc.args, code, tc.want)
		}
	}
	for _, args := range [][]string{{"wire", "-h"}, {"unwire", "-h"}} {
		if out, code := runBin(t, args...); code != 0 || !strings.Contains(out, "-postfix-config") {
			t.Errorf("%q: exit %d, want 0 and the flags", args, code)
		}
	}
	if out, _ := runBin(t, "-h"); !strings.Contains(out, "mxdetour-policyd wire [-config FILE] [-postfix-config DIR] [-dry-run]") {
		t.Error("-h does not show wire")
	}
}
