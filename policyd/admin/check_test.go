package admin

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mxdetour/mxdetour/internal/daemon"
	"github.com/mxdetour/mxdetour/internal/lookup/dnstest"
)

// TestCheckAddressLiteral runs `check` on address literals: they are
// delivered, not bounced, and never looked up in DNS.
func TestCheckAddressLiteral(t *testing.T) {
	srv := dnstest.New(t, dnstest.Zone{})
	cfg := filepath.Join(t.TempDir(), "mxdetour.toml")
	// No blocklist self-check either: every DNS query would be the literal's.
	toml := fmt.Sprintf("[dns]\nservers = [%q]\ntimeout = \"1s\"\nattempts = 1\n[learn]\nenabled = false\n"+
		"[providers.default]\nzones = []\n[providers.google]\nzones = []\n[providers.microsoft]\nzones = []\n", srv.Addr())
	if err := os.WriteFile(cfg, []byte(toml), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		arg  string
		code int
		want []string
	}{
		{"user@[192.0.2.1]", 0, []string{
			"domain:    [192.0.2.1]", "route:     direct", "reason:    address-literal",
			"policy:    action=DUNNO", "socketmap: NOTFOUND",
			"why:       address literal: Postfix delivers straight to 192.0.2.1, with no DNS lookup"}},
		{"[IPv6:2001:DB8::1]", 0, []string{
			"domain:    [ipv6:2001:db8::1]", "route:     direct", "reason:    address-literal",
			"why:       address literal: Postfix delivers straight to 2001:db8::1"}},
		{"192.0.2.1", 0, []string{"route:     direct", "reason:    numeric-domain", "write it as [192.0.2.1]"}},
		{"user@[192.0.2.256]", daemon.ExitFailure, []string{"reason:    no-domain", `address literal "[192.0.2.256]"`}},
	} {
		var stdout, stderr bytes.Buffer
		code := Check([]string{"-config", cfg, tc.arg}, &stdout, &stderr)
		out := stdout.String()
		if code != tc.code {
			t.Errorf("check %s: exit %d, want %d\n%s%s", tc.arg, code, tc.code, out, stderr.String())
		}
		for _, w := range tc.want {
			if !strings.Contains(out, w) {
				t.Errorf("check %s: output lacks %q:\n%s", tc.arg, w, out)
			}
		}
		if strings.Contains(out, "NXDOMAIN") || strings.Contains(out, "bounce") {
			t.Errorf("check %s: says the mail bounces:\n%s", tc.arg, out)
		}
	}
	if n := srv.Total(); n != 0 {
		t.Errorf("%d DNS queries, want none", n)
	}
}
