package main

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/d--j/go-milter"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/mxdetour/mxdetour/internal/config"
	"github.com/mxdetour/mxdetour/milter/filter"
	"github.com/mxdetour/mxdetour/milter/server"
)

// Issue #28: "why was this message not signed?" answered before it is
// sent, in the words of the log line of the message once it is.

// explainSetup writes a configuration: example.org's Ed25519 key as a
// row, customer.zz's RSA key as a key_dir file, a country database
// placing 203.0.113.0/24 in RU with a rule refusing RU, and
// 192.0.2.0/24 trusted.
func explainSetup(t *testing.T, extra string) string {
	t.Helper()
	dir := t.TempDir()
	keys := filepath.Join(dir, "dkim")
	os.Mkdir(keys, 0o700)
	rowKey, _ := keygenTXT(t, dir, "example.org", "ed1", "ed25519")
	keygenTXT(t, keys, "customer.zz", "rsa1", "rsa")
	cfg := filepath.Join(dir, "mxdetour.toml")
	text := fmt.Sprintf(`[milter]
trusted_networks = ["127.0.0.0/8", "192.0.2.0/24"]
[milter.geo]
source = "mmdb"
mmdb_file = %q
[[milter.geo.rules]]
countries = ["RU"]
[milter.dkim]
key_dir = %q
rotation_state_file = ""
%s
[[milter.dkim.keys]]
domain = "example.org"
selector = "ed1"
key_file = %q
`, countryDB(t, dir), keys, extra, rowKey)
	if err := os.WriteFile(cfg, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return cfg
}

func runExplain(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(bin, append([]string{"explain"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("explain %v: %v\n%s", args, err, out)
	}
	return string(out)
}

func TestExplain(t *testing.T) {
	cfg := explainSetup(t, "")
	for _, tc := range []struct {
		name string
		args []string
		want []string // lines (or their beginnings) the answer holds
	}{
		{"authenticated user of a domain with keys", []string{"-from", "alice@example.org", "-auth", "alice", "-client", "203.0.113.9", "-to", "bob@partner.zz"}, []string{
			"MAIL FROM  accepted: country rules not asked: the client authenticated",
			"RCPT TO    bob@partner.zz accepted",
			"DKIM       signed d=example.org (From domain example.org), 1 signature(s):",
			"             s=ed1 ed25519-sha256: [[milter.dkim.keys]] row, key_file ",
		}},
		{"trusted network, key from key_dir", []string{"-from", "info@customer.zz", "-client", "192.0.2.7"}, []string{
			"client 192.0.2.7 (in trusted_networks), not authenticated",
			"MAIL FROM  accepted: country rules not asked: the client is in trusted_networks",
			"DKIM       signed d=customer.zz (From domain customer.zz), 1 signature(s):",
			"             s=rsa1 rsa-sha256 (2048 bits): key_dir file ",
		}},
		{"untrusted client", []string{"-from", "alice@example.org", "-client", "198.51.100.4"}, []string{
			"MAIL FROM  accepted: no country rule matches (country unknown)",
			"DKIM       not signed: " + filter.WhyNotEligible,
			`log line   "message" ... not_signed="` + filter.WhyNotEligible + `"`,
		}},
		{"From domain without a key, no default", []string{"-from", "x@nokey.zz", "-auth", "x"}, []string{
			"DKIM       not signed: no key for nokey.zz and no default_domain",
		}},
		{"blocked country", []string{"-from", "spam@example.org", "-client", "203.0.113.9", "-to", "bob@partner.zz,user@example.com"}, []string{
			"MAIL FROM  refused by milter.geo.rules[0] (country RU): 550 5.7.1 Client host rejected: mail from your country (RU) is not accepted here",
			"RCPT TO    user@example.com refused by the reserved-domain rule: 550 5.1.2 <user@example.com>: Recipient address rejected: example.com is a reserved domain and does not receive mail",
			"DATA       not reached: the client is refused at MAIL FROM",
			"DKIM       not signed: " + filter.WhyNotEligible,
		}},
		{"Postfix's own bounce", []string{"-from", "MAILER-DAEMON@customer.zz", "-client", "local"}, []string{
			"posted by Postfix itself",
			"DKIM       signed d=customer.zz",
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := runExplain(t, append([]string{"-config", cfg}, tc.args...)...)
			for _, w := range tc.want {
				if !hasLine(out, w) {
					t.Errorf("answer lacks a line starting %q:\n%s", w, out)
				}
			}
		})
	}

	// The default key: signs for the domain without one, and says so.
	cfg = explainSetup(t, `default_domain = "customer.zz"`)
	out := runExplain(t, "-config", cfg, "-from", "x@nokey.zz", "-auth", "x")
	for _, w := range []string{"DKIM       signed d=customer.zz (From domain nokey.zz), 1 signature(s):",
		"             s=rsa1 rsa-sha256 (2048 bits): default key (default_domain = customer.zz), key_dir file "} {
		if !hasLine(out, w) {
			t.Errorf("with default_domain, the answer lacks %q:\n%s", w, out)
		}
	}
}

// hasLine: a line of out starts with want, or (the first line) holds it.
func hasLine(out, want string) bool {
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, want) || strings.Contains(l, ", "+want) || strings.Contains(l, ": "+want) {
			return true
		}
	}
	return false
}

// TestExplainSameWordsAsLog: the reason explain gives is the one the
// milter logs for the message.
func TestExplainSameWordsAsLog(t *testing.T) {
	cfgPath := explainSetup(t, "")
	cfg, err := config.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zap.InfoLevel)
	st, err := server.Check(cfg, zap.New(core))
	if err != nil {
		t.Fatal(err)
	}
	f := filter.New(st, zap.New(core))
	addr := serveFilter(t, f)
	for _, tc := range []struct{ from, client string }{
		{"alice@example.org", "198.51.100.4"}, // untrusted
		{"x@nokey.zz", "192.0.2.7"},           // no key
	} {
		sendAs(t, addr, tc.client, tc.from)
		var logged string
		for _, e := range logs.FilterMessage("message").TakeAll() {
			logged = e.ContextMap()["not_signed"].(string)
		}
		out := runExplain(t, "-config", cfgPath, "-from", tc.from, "-client", tc.client)
		if logged == "" || !strings.Contains(out, fmt.Sprintf("not_signed=%q", logged)) {
			t.Errorf("%s from %s: logged not_signed=%q; explain says:\n%s", tc.from, tc.client, logged, out)
		}
	}
}

// serveFilter serves f on a loopback port and returns its address.
func serveFilter(t *testing.T, f *filter.Filter) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ms := milter.NewServer(f.ServerOptions()...)
	go ms.Serve(ln)
	t.Cleanup(func() { ms.Close() })
	return ln.Addr().String()
}

// sendAs passes a message from an address, from client, through the
// milter at addr.
func sendAs(t *testing.T, addr, client, from string) {
	t.Helper()
	macros := milter.NewMacroBag()
	macros.Set(milter.MacroDaemonAddr, "192.0.2.254")
	s, err := milter.NewClient("tcp", addr).Session(macros)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	must := func(_ *milter.Action, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(s.Conn("client.example", milter.FamilyInet, 40000, client))
	must(s.Helo("client.example"))
	must(s.Mail("<"+from+">", ""))
	must(s.Rcpt("<bob@partner.zz>", ""))
	must(s.DataStart())
	must(s.HeaderField("From", " <"+from+">", nil))
	must(s.HeaderEnd())
	if _, _, err := s.BodyReadFrom(strings.NewReader(testBody)); err != nil {
		t.Fatal(err)
	}
}
