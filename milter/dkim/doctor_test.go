package dkim

import (
	"context"
	"crypto/x509"
	"encoding/base64"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/zap/zaptest"

	"github.com/mxdetour/mxdetour/internal/lookup"
	"github.com/mxdetour/mxdetour/internal/lookup/dnstest"
)

func tableOf(keys ...*Key) *Table {
	t := &Table{byDomain: map[string][]*Key{}}
	for _, k := range keys {
		t.byDomain[k.Domain] = append(t.byDomain[k.Domain], k)
		t.n++
	}
	return t
}

func client(t *testing.T, srv *dnstest.Server) lookup.Resolver {
	c, err := lookup.New(srv.Options(), zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// chunks splits a record as zone files and keygen do: strings of at most
// 250 bytes, one TXT record.
func chunks(s string) []string {
	var out []string
	for len(s) > 250 {
		out = append(out, s[:250])
		s = s[250:]
	}
	return append(out, s)
}

// goodZone publishes everything right for example.org, sending from
// 192.0.2.10 and 2001:db8::10 as mail.example.org.
func goodZone(rk, ek *Key) dnstest.Zone {
	return dnstest.Zone{
		"rsa._domainkey.example.org": {TXT: [][]string{chunks(TXTRecord(rk.Signer.Public()))}},
		// tags in another order, without v=, folded: the key material counts
		"ed._domainkey.example.org": {TXT: [][]string{{"k=ed25519; p=" + strings.TrimPrefix(TXTRecord(ek.Signer.Public()), "v=DKIM1; k=ed25519; p=")}}},
		"example.org":               {TXT: [][]string{{"v=spf1 mx include:_spf.example.org -all"}}, MX: []lookup.MX{{Host: "mx.example.org", Pref: 10}}},
		"_spf.example.org":          {TXT: [][]string{{"v=spf1 ip4:192.0.2.0/28 ip6:2001:db8::/64 -all"}}},
		"mx.example.org":            {A: []string{"192.0.2.1"}},
		"_dmarc.example.org":        {TXT: [][]string{{"v=DMARC1; p=reject; rua=mailto:dmarc@example.org"}}},
		"10.2.0.192.in-addr.arpa":   {PTR: []string{"mail.example.org"}},
		lookup.ReverseName(netip.MustParseAddr("2001:db8::10")) + ".ip6.arpa": {PTR: []string{"mail.example.org"}},
		"mail.example.org": {A: []string{"192.0.2.10"}, AAAA: []string{"2001:db8::10"}},
	}
}

var ourAddrs = []netip.Addr{netip.MustParseAddr("192.0.2.10"), netip.MustParseAddr("2001:db8::10")}

func statuses(fs []Finding) map[string]string {
	m := map[string]string{}
	for _, f := range fs {
		m[f.Check+" "+f.Subject] = f.Status.String()
	}
	return m
}

func TestDoctorAllPublished(t *testing.T) {
	rk, ek := testKeys(t)
	srv := dnstest.New(t, goodZone(rk, ek))
	fs := Doctor{Keys: tableOf(rk, ek), Addrs: ourAddrs, Helo: "mail.example.org"}.Run(context.Background(), client(t, srv))
	want := map[string]string{
		"dkim rsa._domainkey.example.org":    "ok",
		"dkim ed._domainkey.example.org":     "ok",
		"spf example.org 192.0.2.10":         "ok",
		"spf example.org 2001:db8::10":       "ok",
		"dmarc example.org":                  "ok",
		"ptr 192.0.2.10":                     "ok",
		"ptr 2001:db8::10":                   "ok",
		"helo mail.example.org 192.0.2.10":   "ok",
		"helo mail.example.org 2001:db8::10": "ok",
	}
	if diff := cmp.Diff(want, statuses(fs)); diff != "" {
		t.Errorf("(-want +got):\n%s\n%v", diff, fs)
	}
	if Worst(fs) != OK {
		t.Errorf("worst %v", Worst(fs))
	}
}

func TestDoctorFindsFaults(t *testing.T) {
	rk, ek := testKeys(t)
	other, _ := GenerateKey("ed25519", 0)
	z := goodZone(rk, ek)
	rsaTXT := TXTRecord(rk.Signer.Public())
	for _, tc := range []struct {
		name    string
		change  func(z dnstest.Zone)
		subject string
		status  string
		says    string
	}{
		{"missing key", func(z dnstest.Zone) { delete(z, "rsa._domainkey.example.org") },
			"dkim rsa._domainkey.example.org", "critical", "no TXT record"},
		{"truncated: the second string not pasted", func(z dnstest.Zone) {
			z["rsa._domainkey.example.org"] = dnstest.Records{TXT: [][]string{chunks(rsaTXT)[:1]}}
		}, "dkim rsa._domainkey.example.org", "critical", "truncated"},
		{"another key", func(z dnstest.Zone) {
			z["ed._domainkey.example.org"] = dnstest.Records{TXT: [][]string{{TXTRecord(other.Public())}}}
		}, "dkim ed._domainkey.example.org", "critical", "another key"},
		{"an RSA record for an Ed25519 key", func(z dnstest.Zone) {
			z["ed._domainkey.example.org"] = dnstest.Records{TXT: [][]string{chunks(rsaTXT)}}
		}, "dkim ed._domainkey.example.org", "critical", "k=rsa"},
		{"testing mode", func(z dnstest.Zone) {
			z["rsa._domainkey.example.org"] = dnstest.Records{TXT: [][]string{chunks("v=DKIM1; t=y; " + strings.TrimPrefix(rsaTXT, "v=DKIM1; "))}}
		}, "dkim rsa._domainkey.example.org", "warning", "t=y"},
		{"h=sha1", func(z dnstest.Zone) {
			z["rsa._domainkey.example.org"] = dnstest.Records{TXT: [][]string{chunks("v=DKIM1; h=sha1; " + strings.TrimPrefix(rsaTXT, "v=DKIM1; "))}}
		}, "dkim rsa._domainkey.example.org", "critical", "sha256"},
		{"two key records", func(z dnstest.Zone) {
			z["ed._domainkey.example.org"] = dnstest.Records{TXT: [][]string{{TXTRecord(ek.Signer.Public())}, {TXTRecord(other.Public())}}}
		}, "dkim ed._domainkey.example.org", "critical", "2 key records"},
		{"SPF without our address", func(z dnstest.Zone) {
			z["_spf.example.org"] = dnstest.Records{TXT: [][]string{{"v=spf1 ip4:198.51.100.0/24 ip6:2001:db8::/64 -all"}}}
		}, "spf example.org 192.0.2.10", "warning", "does not cover"},
		{"no SPF", func(z dnstest.Zone) { z["example.org"] = dnstest.Records{MX: z["example.org"].MX} },
			"spf example.org 192.0.2.10", "warning", "no SPF record"},
		{"SPF over the lookup limit", func(z dnstest.Zone) {
			z["example.org"] = dnstest.Records{TXT: [][]string{{"v=spf1 a mx a:a1.example.org a:a2.example.org a:a3.example.org a:a4.example.org a:a5.example.org a:a6.example.org a:a7.example.org a:a8.example.org include:_spf.example.org -all"}}}
		}, "spf example.org 192.0.2.10", "critical", "broken"},
		{"no DMARC", func(z dnstest.Zone) { delete(z, "_dmarc.example.org") }, "dmarc example.org", "warning", "no DMARC record"},
		{"no PTR", func(z dnstest.Zone) { delete(z, "10.2.0.192.in-addr.arpa") }, "ptr 192.0.2.10", "critical", "no PTR"},
		{"PTR not forward-confirmed", func(z dnstest.Zone) {
			z["10.2.0.192.in-addr.arpa"] = dnstest.Records{PTR: []string{"host-10.isp.example"}}
		}, "ptr 192.0.2.10", "critical", "does not resolve back"},
		{"HELO elsewhere", func(z dnstest.Zone) {
			z["mail.example.org"] = dnstest.Records{A: []string{"192.0.2.11"}, AAAA: []string{"2001:db8::10"}}
			z["10.2.0.192.in-addr.arpa"] = dnstest.Records{PTR: []string{"out.example.org"}}
			z["out.example.org"] = dnstest.Records{A: []string{"192.0.2.10"}}
		},
			"helo mail.example.org 192.0.2.10", "warning", "does not resolve to"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			zz := dnstest.Zone{}
			for k, v := range z {
				zz[k] = v
			}
			tc.change(zz)
			fs := Doctor{Keys: tableOf(rk, ek), Addrs: ourAddrs, Helo: "mail.example.org"}.Run(context.Background(), client(t, dnstest.New(t, zz)))
			var got *Finding
			for i, f := range fs {
				if f.Check+" "+f.Subject == tc.subject {
					got = &fs[i]
				} else if f.Status == Critical && tc.status != "critical" {
					t.Errorf("unrelated %v", f)
				}
			}
			if got == nil {
				t.Fatalf("no finding %q in %v", tc.subject, fs)
			}
			if got.Status.String() != tc.status || !strings.Contains(got.Message, tc.says) || (got.Status != OK && got.Fix == "") {
				t.Errorf("got %+v, want %s saying %q, with a fix", *got, tc.status, tc.says)
			}
			if Worst(fs).String() != tc.status {
				t.Errorf("worst %v, want %s", Worst(fs), tc.status)
			}
		})
	}
	// The fix for a missing key is the record itself, in the zone-file form.
	delete(z, "rsa._domainkey.example.org")
	f := CheckKey(context.Background(), client(t, dnstest.New(t, z)), rk)
	der, _ := x509.MarshalPKIXPublicKey(rk.Signer.Public())
	p := base64.StdEncoding.EncodeToString(der)
	if !strings.Contains(f.Fix, "rsa._domainkey.example.org. IN TXT (") || !strings.Contains(strings.NewReplacer(`" "`, "").Replace(f.Fix), p) {
		t.Errorf("fix %q does not hold the record", f.Fix)
	}
}
