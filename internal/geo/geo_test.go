package geo

import (
	"context"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/maxmind/mmdbwriter"
	"github.com/maxmind/mmdbwriter/mmdbtype"
	"go.uber.org/zap"

	"github.com/mxdetour/mxdetour/internal/lookup"
	"github.com/mxdetour/mxdetour/internal/lookup/dnstest"
)

func writeMMDB(t *testing.T) string {
	t.Helper()
	tree, err := mmdbwriter.New(mmdbwriter.Options{DatabaseType: "GeoLite2-Country", RecordSize: 24, IncludeReservedNetworks: true})
	if err != nil {
		t.Fatal(err)
	}
	for cidr, rec := range map[string]mmdbtype.Map{
		"192.0.2.0/24":    {"country": mmdbtype.Map{"iso_code": mmdbtype.String("RU")}},
		"198.51.100.0/24": {"country": mmdbtype.Map{"iso_code": mmdbtype.String("DE")}},
		"2001:db8::/32":   {"country": mmdbtype.Map{"iso_code": mmdbtype.String("CN")}},
		"203.0.113.0/25":  {"registered_country": mmdbtype.Map{"iso_code": mmdbtype.String("KR")}},
	} {
		_, n, _ := net.ParseCIDR(cidr)
		if err := tree.Insert(n, rec); err != nil {
			t.Fatal(err)
		}
	}
	p := filepath.Join(t.TempDir(), "country.mmdb")
	f, _ := os.Create(p)
	defer f.Close()
	if _, err := tree.WriteTo(f); err != nil {
		t.Fatal(err)
	}
	return p
}

const delegated = `2|apnic|20250101|5|19830613|20241231|+1000
apnic|*|ipv4|*|3|summary
# comment
apnic|RU|ipv4|192.0.2.0|256|20100101|allocated|A1
ripencc|DE|ipv4|198.51.100.0|768|20100101|allocated|A2
apnic|CN|ipv6|2001:db8::|32|20100101|assigned|A3
apnic|KR|asn|64500|2|20100101|allocated|A4
apnic|ZZ|ipv4|203.0.113.0|256|00000000|available
`

func countries(t *testing.T, src Source) map[string]string {
	got := map[string]string{}
	for _, ip := range []string{"192.0.2.55", "198.51.100.1", "198.51.102.255", "2001:db8::1", "203.0.113.9", "::ffff:192.0.2.55", "8.8.8.8"} {
		cc, err := src.Country(context.Background(), netip.MustParseAddr(ip))
		if err != nil {
			t.Fatal(err)
		}
		got[ip] = cc
	}
	return got
}

func TestMMDB(t *testing.T) {
	m, err := OpenMMDB(writeMMDB(t))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	want := map[string]string{"192.0.2.55": "RU", "198.51.100.1": "DE", "198.51.102.255": "", "2001:db8::1": "CN",
		"203.0.113.9": "KR", "::ffff:192.0.2.55": "RU", "8.8.8.8": ""}
	got := countries(t, m)
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: %q, want %q", k, got[k], v)
		}
	}
	if _, err := OpenMMDB(filepath.Join(t.TempDir(), "missing.mmdb")); err == nil {
		t.Error("missing database opened")
	}
}

func TestDelegated(t *testing.T) {
	p := filepath.Join(t.TempDir(), "delegated-test")
	os.WriteFile(p, []byte(delegated), 0o644)
	d, err := LoadDelegated(p)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"192.0.2.55": "RU", "198.51.100.1": "DE", "198.51.102.255": "DE", "2001:db8::1": "CN",
		"203.0.113.9": "", "::ffff:192.0.2.55": "RU", "8.8.8.8": ""}
	got := countries(t, d)
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: %q, want %q (768 addresses = a /23 and a /24)", k, got[k], v)
		}
	}
	os.WriteFile(p, []byte("apnic|RU|ipv4|300.0.0.0|256|2010|allocated\n"), 0o644)
	if _, err := LoadDelegated(p); err == nil {
		t.Error("bad line accepted")
	}
}

func TestBlockerAndDNS(t *testing.T) {
	srv := dnstest.New(t, dnstest.Zone{"9.113.0.203.origin.asn.mxd": {TXT: [][]string{{"64500 | 203.0.113.0/24 | RU | ripencc"}}}})
	r, _ := lookup.New(srv.Options(), zap.NewNop())
	src, err := Open(Options{Source: "dns", DNSZone: "origin.asn.mxd"}, r)
	if err != nil {
		t.Fatal(err)
	}
	b := NewBlocker(src, Policy{Rules: blockRU.Rules, Exempt: []netip.Prefix{netip.MustParsePrefix("203.0.113.128/25")}})
	ctx := context.Background()
	if blocked, cc, err := check(b, ctx, netip.MustParseAddr("203.0.113.9")); !blocked || cc != "RU" || err != nil {
		t.Errorf("RU address: %v %q %v", blocked, cc, err)
	}
	if blocked, _, _ := check(b, ctx, netip.MustParseAddr("203.0.113.200")); blocked {
		t.Error("allow list ignored")
	}
	if blocked, cc, _ := check(b, ctx, netip.MustParseAddr("192.0.2.1")); blocked || cc != "" {
		t.Error("unknown address blocked")
	}
	if NewBlocker(src, Policy{}).Active() {
		t.Error("a blocker without rules is active")
	}
}

func FuzzParseDelegatedLine(f *testing.F) {
	for _, l := range []string{"apnic|RU|ipv4|192.0.2.0|256|20100101|allocated", "ripencc|DE|ipv6|2001:db8::|129|x|assigned", "a|b|ipv4|0.0.0.0|4294967296|x|allocated"} {
		f.Add(l)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, ok, err := ParseDelegatedLine(s)
		if ok && (err != nil || r.end.Less(r.start)) {
			t.Fatalf("bad range %v-%v %v", r.start, r.end, err)
		}
	})
}
