package asn

import (
	"context"
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/zap"

	"github.com/mxdetour/mxdetour/internal/lookup"
	"github.com/mxdetour/mxdetour/internal/lookup/dnstest"
)

var prefixCmp = cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })

func TestParseTXT(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Origin
		err  bool
	}{
		{"15169 | 8.8.8.0/24 | US | arin | 1992-12-01", Origin{[]uint32{15169}, netip.MustParsePrefix("8.8.8.0/24"), "US", "arin"}, false},
		{"8075 64500 | 2a01:111::/32 | us | arin", Origin{[]uint32{8075, 64500}, netip.MustParsePrefix("2a01:111::/32"), "US", "arin"}, false},
		{"23028", Origin{ASNs: []uint32{23028}}, false},
		{" | 1.2.3.0/24 | US", Origin{}, true},
		{"abc | 1.2.3.0/24", Origin{}, true},
		{"1 | not-a-prefix", Origin{}, true},
	} {
		got, err := ParseTXT(tc.in)
		if (err != nil) != tc.err {
			t.Errorf("ParseTXT(%q) error %v", tc.in, err)
			continue
		}
		if diff := cmp.Diff(tc.want, got, prefixCmp); diff != "" {
			t.Errorf("ParseTXT(%q) (-want +got):\n%s", tc.in, diff)
		}
	}
}

func TestLookup(t *testing.T) {
	srv := dnstest.New(t, dnstest.Zone{
		"10.2.0.192.origin.asn.mxd": {TXT: [][]string{{"64500 | 192.0.0.0/16 | ZZ | test"}, {"15169 | 192.0.2.0/24 | US | arin"}}},
		lookup.ReverseName(netip.MustParseAddr("2001:db8::25")) + ".origin6.asn.mxd": {TXT: [][]string{{"8075 | 2001:db8::/32 | US | arin"}}},
	})
	srv.SetFault("11.2.0.192.origin.asn.mxd", dnstest.ServFail)
	r, err := lookup.New(srv.Options(), zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	o, st, err := Lookup(ctx, r, "origin.asn.mxd", "origin6.asn.mxd", netip.MustParseAddr("192.0.2.10"))
	if err != nil || st != lookup.Answer || o.ASNs[0] != 15169 || o.Country != "US" {
		t.Errorf("IPv4: %+v %v %v, want the most specific AS15169", o, st, err)
	}
	o, st, err = Lookup(ctx, r, "origin.asn.mxd", "origin6.asn.mxd", netip.MustParseAddr("2001:db8::25"))
	if err != nil || st != lookup.Answer || o.ASNs[0] != 8075 {
		t.Errorf("IPv6: %+v %v %v", o, st, err)
	}
	if _, st, _ := Lookup(ctx, r, "origin.asn.mxd", "origin6.asn.mxd", netip.MustParseAddr("192.0.2.99")); st != lookup.NXDomain {
		t.Errorf("unknown address: %v, want NXDomain", st)
	}
	if _, st, err := Lookup(ctx, r, "origin.asn.mxd", "origin6.asn.mxd", netip.MustParseAddr("192.0.2.11")); st != lookup.TempFail || err == nil {
		t.Errorf("SERVFAIL: %v %v, want TempFail", st, err)
	}
}

func FuzzParseTXT(f *testing.F) {
	f.Add("15169 | 8.8.8.0/24 | US | arin | 1992-12-01")
	f.Add("1 2 3 | ::/0")
	f.Fuzz(func(t *testing.T, s string) {
		o, err := ParseTXT(s)
		if err == nil && len(o.ASNs) == 0 {
			t.Fatal("no error and no ASN")
		}
	})
}
