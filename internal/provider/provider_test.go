package provider

import (
	"context"
	"net/netip"
	"testing"

	"github.com/miekg/dns"
	"go.uber.org/zap"

	"github.com/mxdetour/mxdetour/internal/lookup"
	"github.com/mxdetour/mxdetour/internal/lookup/dnstest"
)

// defaults builds the built-in providers as the embedded configuration
// names them (internal/setup's test checks that it does).
func defaults(r lookup.Resolver) *Classifier {
	return New(Options{Providers: []Provider{
		{Name: "google", MXSuffixes: []string{"google.com", "googlemail.com"}, ASNs: []uint32{15169}, Route: Always},
		{Name: "microsoft", MXSuffixes: []string{"outlook.com", "protection.outlook.com", "hotmail.com", "mx.microsoft",
			"protection.office365.us", "protection.partner.outlook.cn"}, ASNs: []uint32{8075}, Route: Always},
	}, ASNZone: "origin.asn.mxd", ASN6Zone: "origin6.asn.mxd"}, r)
}

func TestByHost(t *testing.T) {
	c := defaults(nil)
	for host, want := range map[string]string{
		"gmail-smtp-in.l.google.com":              "google",
		"alt4.gmail-smtp-in.l.google.com.":        "google",
		"aspmx.l.google.com":                      "google",
		"smtp.google.com":                         "google",
		"aspmx2.googlemail.com":                   "google",
		"google.com":                              "google",
		"contoso-com.mail.protection.outlook.com": "microsoft",
		"contoso-com.p-v1.mx.microsoft":           "microsoft",
		"hotmail-com.olc.protection.outlook.com":  "microsoft",
		"eur.olc.protection.outlook.com":          "microsoft",
		"fakegoogle.com":                          "",
		"google.com.evil.example":                 "",
		"mx.notoutlook.com":                       "",
		"mx.example.net":                          "",
		"":                                        "",
		"com":                                     "",
	} {
		got := ""
		if p := c.ByHost(host); p != nil {
			got = p.Name
		}
		if got != want {
			t.Errorf("ByHost(%q) = %q, want %q", host, got, want)
		}
	}
	if c.ByName("google") == nil || c.ByName("nope") != nil || len(c.Providers()) != 2 {
		t.Error("ByName/Providers")
	}
}

func TestClassify(t *testing.T) {
	v6 := netip.MustParseAddr("2001:db8::25")
	srv := dnstest.New(t, dnstest.Zone{
		"mx.vanity.mxd":                             {A: []string{"192.0.2.10"}},
		"10.2.0.192.origin.asn.mxd":                 {TXT: [][]string{{"15169 | 192.0.2.0/24 | US | arin"}}},
		"mx6.vanity.mxd":                            {AAAA: []string{v6.String()}},
		lookup.ReverseName(v6) + ".origin6.asn.mxd": {TXT: [][]string{{"8075 | 2001:db8::/32 | US | arin"}}},
		"mx.plain.mxd":                              {A: []string{"198.51.100.1"}},
		"1.100.51.198.origin.asn.mxd":               {TXT: [][]string{{"64500 | 198.51.100.0/24 | ZZ | test"}}},
		"mx.broken.mxd":                             {A: []string{"198.51.100.2"}},
	})
	srv.SetFault("2.100.51.198.origin.asn.mxd", dnstest.ServFail)
	r, err := lookup.New(srv.Options(), zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	c := defaults(r)
	ctx := context.Background()
	type want struct {
		provider string
		method   Method
		err      bool
	}
	for name, tc := range map[string]struct {
		mx   []lookup.MX
		want want
	}{
		"host":          {[]lookup.MX{{Host: "mx.other.mxd", Pref: 5}, {Host: "alt1.aspmx.l.google.com", Pref: 10}}, want{"google", ByHost, false}},
		"asn v4":        {[]lookup.MX{{Host: "mx.vanity.mxd", Pref: 10}}, want{"google", ByASN, false}},
		"asn v6 only":   {[]lookup.MX{{Host: "mx6.vanity.mxd", Pref: 10}}, want{"microsoft", ByASN, false}},
		"other network": {[]lookup.MX{{Host: "mx.plain.mxd", Pref: 10}}, want{"", "", false}},
		"asn servfail":  {[]lookup.MX{{Host: "mx.broken.mxd", Pref: 10}}, want{"", "", true}},
		"no address":    {[]lookup.MX{{Host: "mx.gone.mxd", Pref: 10}}, want{"", "", false}},
		"null mx":       {[]lookup.MX{{Host: "", Pref: 0}}, want{"", "", false}},
	} {
		m := c.Classify(ctx, tc.mx)
		got := want{method: m.Method, err: m.Err != nil}
		if m.Provider != nil {
			got.provider = m.Provider.Name
		}
		if got != tc.want {
			t.Errorf("%s: got %+v, want %+v (err %v)", name, got, tc.want, m.Err)
		}
	}
	// A host match needs no DNS at all.
	c.Classify(ctx, []lookup.MX{{Host: "gmail-smtp-in.l.google.com", Pref: 5}})
	if n := srv.Queries("gmail-smtp-in.l.google.com", dns.TypeA); n != 0 {
		t.Errorf("host match sent %d A queries, want 0", n)
	}
}

func BenchmarkByHost(b *testing.B) {
	c := defaults(nil)
	b.ReportAllocs()
	for b.Loop() {
		if c.ByHost("alt1.gmail-smtp-in.l.google.com") == nil || c.ByHost("mx1.customer-domain.example") != nil {
			b.Fatal("wrong")
		}
	}
}
