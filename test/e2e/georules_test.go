package e2e

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mxdetour/mxdetour/internal/lookup/dnstest"
	"github.com/mxdetour/mxdetour/internal/testutil"
)

// Issue 29: the [[milter.geo.rules]] table on a real Postfix, clients
// placed by XCLIENT. First a week of log-only: nothing is refused, and the
// milter logs which rule would have refused whom. Then allow-only (JP and
// DE) with an AS rule first: a country not listed is refused with the
// configured reply, a listed one admitted, and an address of the refused
// AS is refused although its country is allowed.
func TestCountryRules(t *testing.T) {
	needPostfix(t)
	t.Parallel()
	w := newWorld(t, worldOptions{Wiring: "socketmap"})
	db := filepath.Join(w.dir, "country.mmdb")
	writeCountryDB(t, db, map[string]string{"203.0.113.0/25": "RU", "203.0.113.128/25": "DE", "198.51.100.0/24": "JP"})
	w.dns.Set("66.100.51.198.origin.asn.e2e", dnstest.Records{TXT: [][]string{{"64496 | 198.51.100.64/26 | JP | apnic | 2020-01-01"}}})
	reloads := 0
	reload := func(rules string) {
		t.Helper()
		w.rewriteConfig(fmt.Sprintf(`
[milter.geo]
source = "mmdb"
mmdb_file = %q
dns_zone = "origin.asn.e2e"
%s`, db, rules))
		reloads++
		testutil.EventuallyWithin(t, 10*time.Second, "the milter reloaded", func() bool {
			return strings.Count(w.milter.output(), "new keys and country data in use") == reloads
		})
	}

	reload(`[[milter.geo.rules]]
countries = ["JP", "DE"]
allow = true
[[milter.geo.rules]]
countries = ["*"]
action = "log"
`)
	res := send(t, w.pf.addr(), submission{ClientAddr: "203.0.113.9", From: "x@outside.e2e", To: []string{"l1@plain.e2e"}})
	if !res.accepted() {
		t.Errorf("log-only: a client from RU refused: %+v", res)
	}
	testutil.EventuallyWithin(t, 30*time.Second, "the log-only message delivered", func() bool { return w.direct.has("l1@plain.e2e") })
	if line := lineWith(w.milter.output(), "would refuse"); !strings.Contains(line, "milter.geo.rules[1]") || !strings.Contains(line, "country RU") ||
		!strings.Contains(line, "203.0.113.9") {
		t.Errorf("log-only line %q, want the rule (milter.geo.rules[1]), what matched (country RU) and the client", line)
	}

	const reply = "550 5.7.1 Mail from your network is not accepted here; write to postmaster@example.net"
	reload(`reply = "` + reply + `"
[[milter.geo.rules]]
asns = [64496]
reply = "554 5.7.1 AS64496 is not accepted here; write to postmaster@example.net"
[[milter.geo.rules]]
countries = ["JP", "DE"]
allow = true
[[milter.geo.rules]]
countries = ["*"]
`)
	for _, c := range []struct{ client, to, want string }{
		{"203.0.113.9", "a1@plain.e2e", reply}, // RU: not listed
		{"203.0.113.200", "a2@plain.e2e", ""},  // DE: listed
		{"198.51.100.7", "a3@plain.e2e", ""},   // JP: listed
		{"198.51.100.66", "a4@plain.e2e", "554 5.7.1 AS64496 is not accepted here; write to postmaster@example.net"}, // JP, refused AS
	} {
		res := send(t, w.pf.addr(), submission{ClientAddr: c.client, From: "x@outside.e2e", To: []string{c.to}})
		switch {
		case c.want == "" && !res.accepted():
			t.Errorf("%s refused: %+v", c.client, res)
		case c.want != "" && !strings.HasPrefix(res.Mail, c.want):
			t.Errorf("%s: MAIL FROM got %q, want %q", c.client, res.Mail, c.want)
		}
	}
	testutil.EventuallyWithin(t, 30*time.Second, "the two admitted messages delivered", func() bool {
		return w.direct.has("a2@plain.e2e") && w.direct.has("a3@plain.e2e")
	})
	if w.direct.has("a1@plain.e2e") || w.direct.has("a4@plain.e2e") {
		t.Error("refused mail was delivered")
	}
	// The milter's output reaches the test through a pipe: wait for it.
	testutil.EventuallyWithin(t, 10*time.Second, "the refusal logged with its rule", func() bool {
		line := lineWith(w.milter.output(), "AS 64496")
		return strings.Contains(line, "rejected by a country rule") && strings.Contains(line, "milter.geo.rules[0]")
	})
}

// lineWith is the last line of out containing s.
func lineWith(out, s string) string {
	lines := strings.Split(out, "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if strings.Contains(lines[i], s) {
			return lines[i]
		}
	}
	return ""
}
