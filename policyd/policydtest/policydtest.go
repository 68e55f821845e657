// Package policydtest holds what mxdetour-policyd's tests share: the
// DNS world they ask and a configuration that asks it.
package policydtest

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/mxdetour/mxdetour/internal/lookup"
	"github.com/mxdetour/mxdetour/internal/lookup/dnstest"
	"github.com/mxdetour/mxdetour/internal/testutil"
)

// Zone is the tests' DNS: a Google-hosted domain, a plain one with its MX
// address, and the default blocklist's RFC 5782 test point.
func Zone() dnstest.Zone {
	return dnstest.Zone{
		"gmail.mxd":    {MX: []lookup.MX{{Host: "gmail-smtp-in.l.google.com", Pref: 5}}},
		"m365.mxd":     {MX: []lookup.MX{{Host: "m365-mxd.mail.protection.outlook.com", Pref: 0}}},
		"plain.mxd":    {MX: []lookup.MX{{Host: "mx.plain.mxd", Pref: 10}}},
		"mx.plain.mxd": {A: []string{"192.0.2.20"}},
		"hang.mxd":     {MX: []lookup.MX{{Host: "gmail-smtp-in.l.google.com", Pref: 5}}},
		"nullmx.mxd":   {MX: []lookup.MX{{Host: ".", Pref: 0}}},
		// The default providers' zone passes its RFC 5782 test point:
		// our addresses' "not listed" on it is believed.
		"2.0.0.127.zen.spamhaus.org": {A: []string{"127.0.0.2"}},
	}
}

// WriteConfig writes a configuration asking dns, with a relay, learning
// from the log file beside it, and extra at the end; it returns its path
// and the policy and socketmap ports it listens on.
func WriteConfig(t *testing.T, dns string, extra string) (path string, policy, smap int) {
	policy, smap = testutil.FreePort(t), testutil.FreePort(t)
	dir := t.TempDir()
	path = filepath.Join(dir, "mxdetour.toml")
	cfg := fmt.Sprintf(`[log]
level = "info"
[dns]
servers = [%q]
timeout = "2s"
attempts = 1
asn_zone = "origin.asn.mxd"
[policyd]
policy_listen = "127.0.0.1:%d"
socketmap_listen = "127.0.0.1:%d"
decision_timeout = "200ms"
[transports]
relay = "relay:[mx03.example.net]:587"
ipv4 = "smtp-ipv4:"
[learn]
state_file = %q
log_file = %q
%s`, dns, policy, smap, filepath.Join(dir, "state.json"), filepath.Join(dir, "mail.log"), extra)
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return path, policy, smap
}
