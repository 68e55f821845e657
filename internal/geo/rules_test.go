package geo

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// table is a Source from a map; "fail" answers an error.
type table map[string]string

func (t table) Country(_ context.Context, ip netip.Addr) (string, error) {
	if t[ip.String()] == "fail" {
		return "", errors.New("SERVFAIL")
	}
	return t[ip.String()], nil
}

func TestRules(t *testing.T) {
	src := table{"192.0.2.1": "RU", "192.0.2.2": "JP", "192.0.2.3": "US", "192.0.2.4": "DE", "192.0.2.9": "fail",
		"198.51.100.7": "JP", "203.0.113.5": "US"}
	asns := map[string][]uint32{"203.0.113.5": {64496}, "192.0.2.2": {64500}}
	asnFn := func(_ context.Context, ip netip.Addr) ([]uint32, error) {
		if ip.String() == "192.0.2.3" {
			return nil, errors.New("AS lookup: timeout")
		}
		return asns[ip.String()], nil
	}
	pfx := netip.MustParsePrefix
	allowOnly := []Rule{
		{Name: "r0", ASNs: []uint32{64496}, Reply: "550 5.7.1 bad AS"},
		{Name: "r1", Countries: []string{"JP", "US"}, Allow: true},
		{Name: "r2", Countries: []string{"*"}},
	}
	type want struct {
		Refuse        bool
		Rule          int
		Matched, Note string
	}
	for _, tc := range []struct {
		name  string
		rules []Rule
		ip    string
		want  want
	}{
		{"first match: allow before block", []Rule{{Name: "a", Networks: []netip.Prefix{pfx("192.0.2.0/30")}, Allow: true}, {Name: "b", Countries: []string{"RU"}}},
			"192.0.2.1", want{false, 0, "network 192.0.2.0/30", ""}},
		{"order: block before allow", []Rule{{Name: "b", Countries: []string{"RU"}}, {Name: "a", Networks: []netip.Prefix{pfx("192.0.2.0/30")}, Allow: true}},
			"192.0.2.1", want{true, 0, "country RU", ""}},
		{"no match admits", []Rule{{Countries: []string{"CN"}}}, "192.0.2.1", want{false, -1, "", ""}},
		{"allow-only admits a listed country", allowOnly, "192.0.2.2", want{false, 1, "country JP", ""}},
		{"allow-only refuses another country", allowOnly, "192.0.2.4", want{true, 2, "country DE", ""}},
		{"allow-only: unknown country admitted (fail open)", allowOnly, "192.0.2.77", want{false, -1, "", ""}},
		{"AS rule refuses in an allowed country", allowOnly, "203.0.113.5", want{true, 0, "AS 64496", ""}},
		{"AS lookup failure admits", allowOnly, "192.0.2.3", want{false, -1, "", "AS lookup: timeout"}},
		{"country lookup failure admits", allowOnly[1:], "192.0.2.9", want{false, -1, "", "country lookup: SERVFAIL"}},
		{"network needs no lookup", []Rule{{Networks: []netip.Prefix{pfx("192.0.2.9/32")}}, {Countries: []string{"*"}}},
			"192.0.2.9", want{true, 0, "network 192.0.2.9/32", ""}},
		{"log-only refuses nothing", []Rule{{Countries: []string{"RU"}, LogOnly: true}}, "192.0.2.1", want{false, 0, "country RU", ""}},
		{"any field matches", []Rule{{Countries: []string{"CN"}, ASNs: []uint32{64500}}}, "192.0.2.2", want{true, 0, "AS 64500", ""}},
		{"exempt network", []Rule{{Countries: []string{"*"}}}, "198.51.100.7", want{false, -1, "", ""}},
		{"IPv4-mapped", []Rule{{Countries: []string{"RU"}}}, "::ffff:192.0.2.1", want{true, 0, "country RU", ""}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := NewBlocker(src, Policy{Rules: tc.rules, Exempt: []netip.Prefix{pfx("198.51.100.0/24")}, ASN: asnFn})
			v, err := b.Check(context.Background(), netip.MustParseAddr(tc.ip))
			got := want{v.Refuse(), v.Rule, v.Matched, ""}
			if err != nil {
				got.Note = err.Error()
			}
			if d := cmp.Diff(tc.want, got); d != "" {
				t.Errorf("(-want +got)\n%s", d)
			}
			if v.Rule >= 0 && v.Name != tc.rules[v.Rule].Name {
				t.Errorf("name %q, want %q", v.Name, tc.rules[v.Rule].Name)
			}
		})
	}
	v, _ := NewBlocker(src, Policy{Rules: allowOnly, ASN: asnFn}).Check(context.Background(), netip.MustParseAddr("203.0.113.5"))
	if v.Reply != "550 5.7.1 bad AS" {
		t.Errorf("reply %q", v.Reply)
	}
	// Without a source, network and AS rules still apply.
	v, _ = NewBlocker(nil, Policy{Rules: allowOnly, ASN: asnFn}).Check(context.Background(), netip.MustParseAddr("203.0.113.5"))
	if !v.Refuse() {
		t.Error("AS rule without a country source did not refuse")
	}
}

func TestBuilt(t *testing.T) {
	m, err := OpenMMDB(writeMMDB(t))
	if err != nil {
		t.Fatal(err)
	}
	b := NewBlocker(m, blockRU)
	defer b.Close()
	now := time.Now()
	if age, stale := b.Stale(time.Hour, now); stale || age < 0 || age > time.Minute {
		t.Errorf("fresh mmdb: age %v stale %v", age, stale)
	}
	if _, stale := b.Stale(time.Hour, now.Add(2*time.Hour)); !stale {
		t.Error("mmdb 2h old not stale past 1h")
	}
	if _, stale := b.Stale(0, now.Add(1000*time.Hour)); stale {
		t.Error("stale with max_age 0")
	}

	dir := t.TempDir()
	p1, p2 := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	os.WriteFile(p1, []byte(delegated), 0o644) // header end date 20241231
	os.WriteFile(p2, []byte("apnic|RU|ipv4|192.0.2.0|256|20100101|allocated\n"), 0o644)
	old := time.Date(2020, 5, 1, 0, 0, 0, 0, time.UTC)
	os.Chtimes(p2, old, old)
	d, err := LoadDelegated(p1)
	if err != nil {
		t.Fatal(err)
	}
	if want := time.Date(2024, 12, 31, 0, 0, 0, 0, time.UTC); !d.Built().Equal(want) {
		t.Errorf("delegated built %v, want the header's %v", d.Built(), want)
	}
	if d, _ = LoadDelegated(p1, p2); !d.Built().Equal(old) {
		t.Errorf("two files built %v, want the oldest (mtime) %v", d.Built(), old)
	}
	if !NewBlocker(NewDNS(nil, "", ""), blockRU).Built().IsZero() {
		t.Error("a DNS source has a date")
	}
}
