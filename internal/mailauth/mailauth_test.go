package mailauth

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"net/netip"
	"testing"

	"go.uber.org/zap/zaptest"

	"github.com/mxdetour/mxdetour/internal/lookup"
	"github.com/mxdetour/mxdetour/internal/lookup/dnstest"
)

func TestParseKeyRecord(t *testing.T) {
	rk, _ := rsa.GenerateKey(rand.Reader, 1024)
	der, _ := x509.MarshalPKIXPublicKey(&rk.PublicKey)
	p := base64.StdEncoding.EncodeToString(der)
	edPub, _, _ := ed25519.GenerateKey(rand.Reader)
	ep := base64.StdEncoding.EncodeToString(edPub)
	for _, tc := range []struct {
		name, txt string
		err       error // nil: parses
		errText   bool  // some other error
		testing   bool
		sha256    bool
	}{
		{name: "plain", txt: "v=DKIM1; k=rsa; p=" + p, sha256: true},
		{name: "no v, no k", txt: "p=" + p, sha256: true},
		{name: "folded base64", txt: "v=DKIM1; p=" + p[:40] + " " + p[40:], sha256: true},
		{name: "testing", txt: "v=DKIM1; t=y; p=" + p, testing: true, sha256: true},
		{name: "h=sha1 only", txt: "v=DKIM1; h=sha1; p=" + p},
		{name: "h=sha1:sha256", txt: "v=DKIM1; h=sha1:sha256; p=" + p, sha256: true},
		{name: "ed25519", txt: "v=DKIM1; k=ed25519; p=" + ep, sha256: true},
		{name: "truncated rsa", txt: "v=DKIM1; k=rsa; p=" + p[:len(p)-60], err: ErrTruncated},
		{name: "truncated ed25519", txt: "v=DKIM1; k=ed25519; p=" + ep[:20], err: ErrTruncated},
		{name: "revoked", txt: "v=DKIM1; p=", err: ErrRevoked},
		{name: "no p", txt: "v=DKIM1; k=rsa", errText: true},
		{name: "wrong version", txt: "v=DKIM2; p=" + p, errText: true},
		{name: "unknown k", txt: "k=dsa; p=" + p, errText: true},
		{name: "not for email", txt: "s=tlsrpt; p=" + p, errText: true},
	} {
		r, err := ParseKeyRecord(tc.txt)
		switch {
		case tc.err != nil || tc.errText:
			if err == nil || (tc.err != nil && !errors.Is(err, tc.err)) {
				t.Errorf("%s: err %v, want %v", tc.name, err, tc.err)
			}
			continue
		case err != nil:
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if r.Testing() != tc.testing || r.AllowsHash("sha256") != tc.sha256 {
			t.Errorf("%s: testing %v sha256 %v", tc.name, r.Testing(), r.AllowsHash("sha256"))
		}
	}
	r, _ := ParseKeyRecord("p=" + p)
	other, _ := rsa.GenerateKey(rand.Reader, 1024)
	if !SameKey(r.Key, &rk.PublicKey) || SameKey(r.Key, &other.PublicKey) {
		t.Error("SameKey does not tell the published key from another")
	}
}

func testResolver(t *testing.T, z dnstest.Zone) lookup.Resolver {
	srv := dnstest.New(t, z)
	c, err := lookup.New(srv.Options(), zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestSPF(t *testing.T) {
	z := dnstest.Zone{
		"direct.example":        {TXT: [][]string{{"v=spf1 ip4:192.0.2.0/24 ip6:2001:db8::/32 -all"}}},
		"include.example":       {TXT: [][]string{{"v=spf1 include:_spf.provider.example ~all"}}},
		"_spf.provider.example": {TXT: [][]string{{"v=spf1 ip4:198.51.100.0/24 -all"}}},
		"redirect.example":      {TXT: [][]string{{"v=spf1 redirect=include.example"}}},
		"a.example":             {TXT: [][]string{{"v=spf1 a:mail.a.example mx -all"}}, MX: []lookup.MX{{Host: "mx.a.example", Pref: 10}}},
		"mail.a.example":        {A: []string{"203.0.113.5"}},
		"mx.a.example":          {A: []string{"203.0.113.6"}},
		"split.example":         {TXT: [][]string{{"v=spf1 ip4:203.0.113.7 ", "-all"}}},
		"nospf.example":         {TXT: [][]string{{"google-site-verification=x"}}},
	}
	// From l0, an include chain of 11 DNS-querying terms passes the limit of
	// 10 (RFC 7208 section 4.6.4); from l1 it has 10.
	for i := range 12 {
		next := fmt.Sprintf("include:l%d.deep.example", i+1)
		if i == 11 {
			next = "ip4:192.0.2.1"
		}
		z[fmt.Sprintf("l%d.deep.example", i)] = dnstest.Records{TXT: [][]string{{"v=spf1 " + next + " -all"}}}
	}
	res := testResolver(t, z)
	for _, tc := range []struct{ domain, ip, want string }{
		{"direct.example", "192.0.2.9", "pass"},
		{"direct.example", "2001:db8::25", "pass"},
		{"direct.example", "203.0.113.9", "fail"},
		{"include.example", "198.51.100.3", "pass"},
		{"include.example", "203.0.113.9", "softfail"},
		{"redirect.example", "198.51.100.3", "pass"},
		{"a.example", "203.0.113.5", "pass"},
		{"a.example", "203.0.113.6", "pass"},
		{"a.example", "203.0.113.8", "fail"},
		{"split.example", "203.0.113.7", "pass"},
		{"nospf.example", "203.0.113.7", "none"},
		{"missing.example", "203.0.113.7", "none"},
		{"l0.deep.example", "192.0.2.1", "permerror"},
		{"l1.deep.example", "192.0.2.1", "pass"}, // 10 terms: within the limit
	} {
		got, err := SPF(context.Background(), res, netip.MustParseAddr(tc.ip), tc.domain, "mail.example")
		if string(got) != tc.want {
			t.Errorf("%s from %s: %s (%v), want %s", tc.domain, tc.ip, got, err, tc.want)
		}
	}
}

func TestDMARC(t *testing.T) {
	res := testResolver(t, dnstest.Zone{
		"_dmarc.example.org":     {TXT: [][]string{{"v=DMARC1; p=reject; adkim=s"}}},
		"_dmarc.example.net":     {TXT: [][]string{{"v=DMARC1; p=none"}, {"v=DMARC1; p=reject"}}},
		"_dmarc.example.com":     {TXT: [][]string{{"v=DMARC1; p=quarantine"}}},
		"_dmarc.bad.example.com": {TXT: [][]string{{"v=DMARC1; p=maybe"}}},
	})
	ctx := context.Background()
	d, err := LookupDMARC(ctx, res, "example.org")
	if err != nil || d.Policy != "reject" || d.ADKIM != "s" || d.Name != "_dmarc.example.org" {
		t.Errorf("example.org: %+v %v", d, err)
	}
	// A subdomain without its own record falls back to the organizational domain's.
	d, err = LookupDMARC(ctx, res, "mail.example.com")
	if err != nil || d.Policy != "quarantine" || d.ADKIM != "r" || d.Name != "_dmarc.example.com" {
		t.Errorf("mail.example.com: %+v %v", d, err)
	}
	if _, err := LookupDMARC(ctx, res, "example.net"); err == nil || errors.Is(err, ErrNoDMARC) {
		t.Errorf("two records: %v", err)
	}
	if _, err := LookupDMARC(ctx, res, "bad.example.com"); err == nil || errors.Is(err, ErrNoDMARC) {
		t.Errorf("bad policy: %v", err)
	}
	if _, err := LookupDMARC(ctx, res, "nothing.example"); !errors.Is(err, ErrNoDMARC) {
		t.Errorf("no record: %v", err)
	}
	for _, tc := range []struct {
		d, from, adkim string
		want           bool
	}{
		{"example.org", "example.org", "s", true},
		{"example.org", "sub.example.org", "s", false},
		{"example.org", "sub.example.org", "r", true},
		{"example.org", "example.net", "r", false},
	} {
		if got := Aligned(tc.d, tc.from, tc.adkim); got != tc.want {
			t.Errorf("Aligned(%s, %s, %s) = %v", tc.d, tc.from, tc.adkim, got)
		}
	}
}
