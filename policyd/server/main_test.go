package server_test

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/mxdetour/mxdetour/internal/lookup"
	"github.com/mxdetour/mxdetour/internal/lookup/dnstest"
	"github.com/mxdetour/mxdetour/internal/testutil"
)

func zone() dnstest.Zone {
	return dnstest.Zone{
		"gmail.mxd":    {MX: []lookup.MX{{Host: "gmail-smtp-in.l.google.com", Pref: 5}}},
		"plain.mxd":    {MX: []lookup.MX{{Host: "mx.plain.mxd", Pref: 10}}},
		"mx.plain.mxd": {A: []string{"192.0.2.20"}},
		// The default providers' zone passes its RFC 5782 test point:
		// our addresses' "not listed" on it is believed.
		"2.0.0.127.zen.spamhaus.org": {A: []string{"127.0.0.2"}},
	}
}

// writeConfig writes a configuration asking dns, with a relay, learning
// from dir/mail.log, and extra at the end.
func writeConfig(t *testing.T, dns string, extra string) (path string) {
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
%s`, dns, testutil.FreePort(t), testutil.FreePort(t), filepath.Join(dir, "state.json"), filepath.Join(dir, "mail.log"), extra)
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}
