package setup

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/zap"

	"github.com/mxdetour/mxdetour/internal/config"
	"github.com/mxdetour/mxdetour/internal/lookup"
	"github.com/mxdetour/mxdetour/internal/lookup/dnstest"
	"github.com/mxdetour/mxdetour/internal/provider"
)

// TestDefaultProviders proves that the embedded configuration's providers
// reach the classifier: Google and Microsoft by MX host and by network.
func TestDefaultProviders(t *testing.T) {
	c := provider.New(Providers(config.Default()), nil)
	for host, want := range map[string]string{
		"gmail-smtp-in.l.google.com":              "google",
		"aspmx2.googlemail.com":                   "google",
		"contoso-com.mail.protection.outlook.com": "microsoft",
		"contoso-com.p-v1.mx.microsoft":           "microsoft",
		"mx.example.net":                          "",
	} {
		got := ""
		if p := c.ByHost(host); p != nil {
			got = p.Name
		}
		if got != want {
			t.Errorf("ByHost(%q) = %q, want %q", host, got, want)
		}
	}
	var names []string
	for _, p := range c.Providers() {
		names = append(names, p.Name)
	}
	if diff := cmp.Diff([]string{"default", "google", "microsoft"}, names); diff != "" {
		t.Errorf("providers (-want +got):\n%s", diff)
	}
	if p := c.ByName("google"); p == nil || p.Route != provider.Always || p.ASNs[0] != 15169 {
		t.Errorf("google: %+v", p)
	}
}

// TestDisabledProviderLeftOut: enabled = false removes a provider.
func TestDisabledProviderLeftOut(t *testing.T) {
	cfg := config.Default()
	p := cfg.Providers["microsoft"]
	p.Enabled = false
	cfg.Providers["microsoft"] = p
	if got := provider.New(Providers(cfg), nil).ByHost("x.mail.protection.outlook.com"); got != nil {
		t.Errorf("disabled provider matched: %+v", got)
	}
}

// TestLookupAndGeo: every key of [dns] and [milter.geo] reaches the options.
func TestLookupAndGeo(t *testing.T) {
	cfg := config.Default()
	o := Lookup(cfg.DNS)
	if o.Timeout != cfg.DNS.Timeout.Duration || o.StaleTTL != cfg.DNS.StaleTTL.Duration || o.CacheSize != cfg.DNS.CacheSize ||
		o.Attempts != cfg.DNS.Attempts || o.MinTTL != cfg.DNS.MinTTL.Duration || o.MaxTTL != cfg.DNS.MaxTTL.Duration ||
		o.NegativeMaxTTL != cfg.DNS.NegativeMaxTTL.Duration || o.ErrorTTL != cfg.DNS.ErrorTTL.Duration {
		t.Errorf("Lookup(%+v) = %+v", cfg.DNS, o)
	}
	g := Geo(config.Geo{Source: "dns", DNSZone: "a.mxd", DNS6Zone: "b.mxd", MMDBFile: "f", DelegatedFiles: []string{"d"}})
	if g.Source != "dns" || g.DNSZone != "a.mxd" || g.DNS6Zone != "b.mxd" || g.MMDBFile != "f" || g.DelegatedFiles[0] != "d" {
		t.Errorf("Geo: %+v", g)
	}
}

// TestDefaultProviderClaimsTheRest: a destination no provider claims gets
// the built-in "default" provider, and its route.
func TestDefaultProviderClaimsTheRest(t *testing.T) {
	srv := dnstest.New(t, dnstest.Zone{"mx.plain.mxd": {A: []string{"198.51.100.7"}}}) // its network: NXDOMAIN
	r, err := lookup.New(srv.Options(), zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	c := provider.New(Providers(config.Default()), r)
	m := c.Classify(t.Context(), []lookup.MX{{Host: "mx.plain.mxd", Pref: 10}})
	if m.Provider == nil || m.Provider.Name != "default" || m.Method != provider.ByDefault ||
		m.Provider.Route != provider.IPv4WhenListed || m.Provider.Zones[0] != "zen.spamhaus.org" {
		t.Errorf("Classify = %+v", m)
	}
	if m := c.Classify(t.Context(), []lookup.MX{{Host: "alt1.aspmx.l.google.com"}}); m.Provider.Name != "google" {
		t.Errorf("google claimed by %+v", m.Provider)
	}
	// The network service fails: nobody can tell whose MX it is, and the
	// catch-all still applies (with the error kept for check's why).
	srv.Set("mx.broken.mxd", dnstest.Records{A: []string{"198.51.100.9"}})
	srv.SetFault("9.100.51.198.origin.asn.cymru.com", dnstest.ServFail)
	if m := c.Classify(t.Context(), []lookup.MX{{Host: "mx.broken.mxd"}}); m.Provider == nil || m.Provider.Name != "default" || m.Err == nil {
		t.Errorf("with the network lookup failing: %+v", m)
	}
}
