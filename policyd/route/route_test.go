package route

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/mxdetour/mxdetour/internal/dnsbl"
	"github.com/mxdetour/mxdetour/internal/lookup"
	"github.com/mxdetour/mxdetour/internal/lookup/dnstest"
	"github.com/mxdetour/mxdetour/internal/provider"
	"github.com/mxdetour/mxdetour/policyd/block"
	"github.com/mxdetour/mxdetour/policyd/learn"
)

const relay = "relay:[mx03.example.net]:587"

func mx(hosts ...string) dnstest.Records {
	r := dnstest.Records{}
	for i, h := range hosts {
		r.MX = append(r.MX, lookup.MX{Host: h, Pref: uint16(10 * (i + 1))})
	}
	return r
}

// testZone holds the domains of the decision table. Names under .test are
// reserved and would be rejected, so the made-up TLD .mxd is used.
func testZone() dnstest.Zone {
	return dnstest.Zone{
		"gmail.mxd":                    mx("gmail-smtp-in.l.google.com", "alt1.gmail-smtp-in.l.google.com", "alt2.gmail-smtp-in.l.google.com"),
		"workspace.mxd":                mx("aspmx.l.google.com", "alt1.aspmx.l.google.com"),
		"workspace2.mxd":               mx("smtp.google.com"),
		"m365.mxd":                     mx("m365-mxd.mail.protection.outlook.com"),
		"m365dane.mxd":                 mx("m365dane-mxd.p-v1.mx.microsoft"),
		"hotmail.mxd":                  mx("hotmail-com.olc.protection.outlook.com"),
		"vanity.mxd":                   mx("mx.vanity.mxd"),
		"mx.vanity.mxd":                {A: []string{"192.0.2.10"}},
		"10.2.0.192.origin.asn.mxd":    {TXT: [][]string{{"15169 | 192.0.2.0/24 | US | arin | 2000-03-30"}}},
		"plain.mxd":                    mx("mx1.plain.mxd"),
		"mx1.plain.mxd":                {A: []string{"198.51.100.20"}},
		"20.100.51.198.origin.asn.mxd": {TXT: [][]string{{"64500 | 198.51.100.0/24 | ZZ | test | 2000-01-01"}}},
		"implicit.mxd":                 {A: []string{"198.51.100.21"}},
		"nullmx.mxd":                   {MX: []lookup.MX{{Host: ".", Pref: 0}}},
		"servfail.mxd":                 mx("mx.servfail.mxd"),
		"hang.mxd":                     mx("gmail-smtp-in.l.google.com"),
		"xn--bcher-kva.mxd":            mx("aspmx.l.google.com"),
		"fakegoogle.mxd":               mx("mx.fakegoogle.com"),
		"evil.mxd":                     mx("google.com.evil.example"),
		"rule.mxd":                     mx("mx1.plain.mxd"),
		"sub.ruled.mxd":                mx("mx1.plain.mxd"),
		"local.mxd":                    mx("gmail-smtp-in.l.google.com"),
		"learned.mxd":                  mx("mx1.plain.mxd"),
		"sharedmx.mxd":                 mx("mx.shared-host.mxd"),
	}
}

// testOptions are the options of the tests' engine: the providers of the
// embedded defaults, our relay, two local domains and three rules.
func testOptions() Options {
	zen := []string{"zen.spamhaus.org"}
	return Options{
		Local: []string{"local.mxd", "h2.example.net"},
		Rules: []Rule{
			{Address: "vip@gmail.mxd", Route: Direct},
			{Domain: "rule.mxd", Route: Relay},
			{Domain: "ruled.mxd", Route: Relay},
		},
		Providers: provider.Options{ASNZone: "origin.asn.mxd", ASN6Zone: "origin6.asn.mxd", Providers: []provider.Provider{
			{Name: "default", Zones: zen, Route: provider.IPv4WhenListed},
			{Name: "google", MXSuffixes: []string{"google.com", "googlemail.com"}, ASNs: []uint32{15169}, Zones: zen, Route: provider.Always},
			{Name: "microsoft", MXSuffixes: []string{"outlook.com", "protection.outlook.com", "hotmail.com", "mx.microsoft",
				"protection.office365.us", "protection.partner.outlook.cn"}, ASNs: []uint32{8075}, Zones: zen, Route: provider.Always},
		}},
		Relay:            relay,
		TempOnDNSFailure: true,
	}
}

// withProvider changes the provider named in o.
func withProvider(o *Options, name string, f func(*provider.Provider)) {
	for i := range o.Providers.Providers {
		if o.Providers.Providers[i].Name == name {
			f(&o.Providers.Providers[i])
		}
	}
}

// testLookup are the resolver options of the tests: srv, one attempt.
func testLookup(srv string) lookup.Options {
	return lookup.Options{Servers: []string{srv}, Timeout: time.Second, Attempts: 1, CacheSize: 1000,
		MinTTL: 30 * time.Second, MaxTTL: 24 * time.Hour, NegativeMaxTTL: time.Hour, ErrorTTL: 5 * time.Second, StaleTTL: time.Hour}
}

func newEngine(t testing.TB, mutate func(*Options), listings Listings, blocks Blocks) (*Engine, *dnstest.Server) {
	t.Helper()
	srv := dnstest.New(t, testZone())
	srv.SetFault("servfail.mxd", dnstest.ServFail)
	srv.SetFault("hang.mxd", dnstest.Timeout)
	o := testOptions()
	if mutate != nil {
		mutate(&o)
	}
	r, err := lookup.New(testLookup(srv.Addr()), zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel)))
	if err != nil {
		t.Fatal(err)
	}
	return New(o, r, listings, blocks), srv
}

// short is what a decision test compares.
type short struct {
	Domain, Transport, Provider, Method string
	Route                               Route
	Reason                              Reason
}

func shorten(d Decision) short {
	return short{Domain: d.Domain, Route: d.Route, Transport: d.Transport, Reason: d.Reason, Provider: d.Provider, Method: d.Method}
}

func TestDecide(t *testing.T) {
	e, _ := newEngine(t, nil, nil, nil)
	for _, tc := range []struct {
		rcpt string
		want short
	}{
		{"alice@gmail.mxd", short{"gmail.mxd", relay, "google", "mx-host", Relay, ReasonProvider}},
		{"bob@workspace.mxd", short{"workspace.mxd", relay, "google", "mx-host", Relay, ReasonProvider}},
		{"bob@workspace2.mxd", short{"workspace2.mxd", relay, "google", "mx-host", Relay, ReasonProvider}},
		{"carol@m365.mxd", short{"m365.mxd", relay, "microsoft", "mx-host", Relay, ReasonProvider}},
		{"carol@m365dane.mxd", short{"m365dane.mxd", relay, "microsoft", "mx-host", Relay, ReasonProvider}},
		{"dave@hotmail.mxd", short{"hotmail.mxd", relay, "microsoft", "mx-host", Relay, ReasonProvider}},
		{"erin@vanity.mxd", short{"vanity.mxd", relay, "google", "asn", Relay, ReasonProvider}},
		{"frank@plain.mxd", short{"plain.mxd", "", "default", "default", Direct, ReasonNotListed}},
		{"grace@implicit.mxd", short{"implicit.mxd", "", "default", "default", Direct, ReasonNotListed}},
		{"heidi@nullmx.mxd", short{"nullmx.mxd", "", "", "", Direct, ReasonNullMX}},
		{"ivan@nxdomain.mxd", short{"nxdomain.mxd", "", "", "", Direct, ReasonNXDomain}},
		{"judy@servfail.mxd", short{"servfail.mxd", "", "", "", Direct, ReasonDNSFailure}},
		{"mallory@hang.mxd", short{"hang.mxd", "", "", "", Direct, ReasonDeadline}},
		{"niaj@bücher.mxd", short{"xn--bcher-kva.mxd", relay, "google", "mx-host", Relay, ReasonProvider}},
		{"Olivia@GMAIL.MXD.", short{"gmail.mxd", relay, "google", "mx-host", Relay, ReasonProvider}},
		{"<peggy@Gmail.Mxd>", short{"gmail.mxd", relay, "google", "mx-host", Relay, ReasonProvider}},
		{"rupert@fakegoogle.mxd", short{"fakegoogle.mxd", "", "default", "default", Direct, ReasonNotListed}},
		{"sybil@evil.mxd", short{"evil.mxd", "", "default", "default", Direct, ReasonNotListed}},
		{"vip@gmail.mxd", short{"gmail.mxd", "", "", "", Direct, ReasonRule}},
		{"trent@rule.mxd", short{"rule.mxd", relay, "", "", Relay, ReasonRule}},
		{"trent@sub.ruled.mxd", short{"sub.ruled.mxd", relay, "", "", Relay, ReasonRule}},
		{"victor@local.mxd", short{"local.mxd", "", "", "", Direct, ReasonLocal}},
		{"root@h2.example.net", short{"h2.example.net", "", "", "", Direct, ReasonLocal}}, // ours, though reserved
		{"walter@Example.COM", short{"example.com", "error:5.1.2 example.com is a reserved domain (RFC 2606) and does not receive mail", "", "", Reject, ReasonReserved}},
		{"walter@mail.example.org", short{"mail.example.org", "error:5.1.2 mail.example.org is a reserved domain (RFC 2606) and does not receive mail", "", "", Reject, ReasonReserved}},
		{"nodomain", short{"", "", "", "", Direct, ReasonNoDomain}},
		{"xavier@[192.0.2.1]", short{"[192.0.2.1]", "", "", "", Direct, ReasonLiteral}},
		{"xavier@[IPv6:2001:DB8::1]", short{"[ipv6:2001:db8::1]", "", "", "", Direct, ReasonLiteral}},
		{"xavier@192.0.2.1", short{"192.0.2.1", "", "", "", Direct, ReasonNumeric}},
		{"xavier@[192.0.2.256]", short{"", "", "", "", Direct, ReasonNoDomain}},
	} {
		// A generous deadline (a loaded test machine), but shorter than the
		// resolver's own timeout for the name that never answers.
		deadline := 2 * time.Second
		if tc.want.Reason == ReasonDeadline {
			deadline = 300 * time.Millisecond
		}
		ctx, cancel := context.WithTimeout(context.Background(), deadline)
		got := shorten(e.Explain(ctx, tc.rcpt))
		cancel()
		if diff := cmp.Diff(tc.want, got); diff != "" {
			t.Errorf("Decide(%q) (-want +got):\n%s", tc.rcpt, diff)
		}
	}
}

// TestDecideLiteral checks that address literals never reach DNS, go
// direct, and follow a static rule that names them in any spelling.
func TestDecideLiteral(t *testing.T) {
	e, srv := newEngine(t, func(o *Options) {
		o.Rules = append(o.Rules, Rule{Domain: "[IPv6:2001:DB8:0::2]", Route: Relay}, Rule{Domain: "0.2.1]", Route: Relay})
	}, nil, nil)
	for _, tc := range []struct {
		rcpt string
		want short
		why  string
	}{
		{"u@[192.0.2.1]", short{"[192.0.2.1]", "", "", "", Direct, ReasonLiteral},
			"address literal: Postfix delivers straight to 192.0.2.1, with no DNS lookup; only a static rule naming [192.0.2.1] routes it"},
		{"u@[ipv6:2001:db8::2]", short{"[ipv6:2001:db8::2]", relay, "", "", Relay, ReasonRule},
			"rule: domain [ipv6:2001:db8::2] → relay"},
		{"u@10.0.0.1", short{"10.0.0.1", "", "", "", Direct, ReasonNumeric},
			"a bare IP address is not a domain (write it as [10.0.0.1]): Postfix rejects it, unless resolve_numeric_domain = yes delivers to that address"},
	} {
		d := e.Explain(context.Background(), tc.rcpt)
		if diff := cmp.Diff(tc.want, shorten(d)); diff != "" {
			t.Errorf("Decide(%q) (-want +got):\n%s", tc.rcpt, diff)
		}
		if diff := cmp.Diff([]string{tc.why}, d.Detail); diff != "" {
			t.Errorf("Explain(%q) (-want +got):\n%s", tc.rcpt, diff)
		}
	}
	if n := srv.Total(); n != 0 {
		t.Errorf("%d DNS queries for address literals, want none", n)
	}
}

func TestDecideOptions(t *testing.T) {
	t.Run("dry run", func(t *testing.T) {
		e, _ := newEngine(t, func(o *Options) { o.Relay = "" }, nil, nil)
		d := e.Decide(context.Background(), "a@gmail.mxd")
		if d.Route != Relay || !d.DryRun || d.Transport != "" || !e.DryRun() {
			t.Errorf("dry run: got route %s dry %v transport %q", d.Route, d.DryRun, d.Transport)
		}
	})
	t.Run("null MX rejected", func(t *testing.T) {
		e, _ := newEngine(t, func(o *Options) { o.RejectNullMX = true }, nil, nil)
		d := e.Decide(context.Background(), "a@nullmx.mxd")
		want := short{"nullmx.mxd", "error:5.1.10 nullmx.mxd does not accept mail (null MX, RFC 7505)", "", "", Reject, ReasonNullMX}
		if diff := cmp.Diff(want, shorten(d)); diff != "" {
			t.Errorf("(-want +got):\n%s", diff)
		}
	})
	t.Run("DNS failure as TEMP", func(t *testing.T) {
		e, _ := newEngine(t, func(o *Options) { o.TempOnDNSFailure = true }, nil, nil)
		if d := e.Decide(context.Background(), "a@servfail.mxd"); !d.Temporary || d.Route != Direct {
			t.Errorf("got temporary %v route %s", d.Temporary, d.Route)
		}
	})
	t.Run("provider route never", func(t *testing.T) {
		e, _ := newEngine(t, func(o *Options) {
			withProvider(o, "google", func(p *provider.Provider) { p.Route = "never" })
		}, nil, nil)
		if d := e.Decide(context.Background(), "a@gmail.mxd"); d.Route != Direct || d.Provider != "google" {
			t.Errorf("got route %s provider %q", d.Route, d.Provider)
		}
	})
	t.Run("deadline fills the cache for the next request", func(t *testing.T) {
		e, srv := newEngine(t, nil, nil, nil)
		srv.SetDelay("gmail.mxd", 150*time.Millisecond)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		d := e.Decide(ctx, "a@gmail.mxd")
		cancel()
		if d.Reason != ReasonDeadline || d.Route != Direct {
			t.Fatalf("first decision: reason %s route %s, want deadline/direct", d.Reason, d.Route)
		}
		deadline := time.Now().Add(5 * time.Second)
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
			d = e.Decide(ctx, "a@gmail.mxd")
			cancel()
			if (d.Route == Relay && d.Cached) || time.Now().After(deadline) {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if d.Route != Relay || !d.Cached {
			t.Errorf("later decision: route %s cached %v, want relay from the cache", d.Route, d.Cached)
		}
		if n := srv.Queries("gmail.mxd", 15); n != 1 {
			t.Errorf("%d upstream MX queries, want 1", n)
		}
	})
}

func TestDecideLearned(t *testing.T) {
	store, err := learn.OpenStore(filepath.Join(t.TempDir(), "state.json"), zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	store.Add(block.Block{Domain: "learned.mxd", MXHost: "mx.learned.mxd", Kind: "dnsbl:zen.spamhaus.org", Reply: "554 5.7.1 blocked using zen.spamhaus.org", Learned: now, Expires: now.Add(time.Hour)})
	store.Add(block.Block{Domain: "other.mxd", MXHost: "mx.shared-host.mxd", Kind: "generic-blocklist", Learned: now, Expires: now.Add(time.Hour)})
	e, _ := newEngine(t, nil, nil, store)
	for rcpt, want := range map[string]Reason{
		"a@learned.mxd":  ReasonLearned, // the domain itself
		"b@sharedmx.mxd": ReasonLearned, // another domain on the blocked MX host
		"c@plain.mxd":    ReasonNotListed,
	} {
		d := e.Decide(context.Background(), rcpt)
		if d.Reason != want {
			t.Errorf("%s: reason %s, want %s", rcpt, d.Reason, want)
		}
		if want == ReasonLearned && (d.Transport != relay || d.Block == nil) {
			t.Errorf("%s: transport %q block %v", rcpt, d.Transport, d.Block)
		}
	}
}

// TestDecideWhenListed runs a real dnsbl.Monitor over blocklist zones in
// dnstest: 127.0.0.2 listed, anything else not.
func TestDecideWhenListed(t *testing.T) {
	v4, v6 := netip.MustParseAddr("192.0.2.99"), netip.MustParseAddr("2001:db8::99")
	for _, tc := range []struct {
		name           string
		provider       string // whose zones are the test zone: google (when-listed) or default (ipv4-when-listed)
		listV4, listV6 bool
		ipv4Transport  string
		wantRoute      Route
		wantTransport  string
		wantReason     Reason
	}{
		{"clean", "google", false, false, "smtp-ipv4:", Direct, "", ReasonNotListed},
		{"IPv4 listed", "google", true, false, "smtp-ipv4:", Relay, relay, ReasonListed},
		{"both listed", "google", true, true, "smtp-ipv4:", Relay, relay, ReasonListed},
		{"only IPv6 listed", "google", false, true, "smtp-ipv4:", IPv4, "smtp-ipv4:", ReasonListedIPv6},
		{"only IPv6 listed, no ipv4 transport", "google", false, true, "", Relay, relay, ReasonListedIPv6},
		{"default: clean", "default", false, false, "smtp-ipv4:", Direct, "", ReasonNotListed},
		{"default: only IPv6 listed", "default", false, true, "smtp-ipv4:", IPv4, "smtp-ipv4:", ReasonListedIPv6},
		{"default: only IPv6 listed, no ipv4 transport: never the relay", "default", false, true, "", Direct, "", ReasonListedNoRoute},
		{"default: IPv4 listed: forcing IPv4 would not help", "default", true, false, "smtp-ipv4:", Direct, "", ReasonListedNoRoute},
		{"default: both listed", "default", true, true, "smtp-ipv4:", Direct, "", ReasonListedNoRoute},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var srvAddr string
			e, srv := newEngine(t, func(o *Options) {
				withProvider(o, "google", func(p *provider.Provider) { p.Route = provider.WhenListed })
				withProvider(o, tc.provider, func(p *provider.Provider) { p.Zones = []string{"bl.mxd"} })
				o.IPv4 = tc.ipv4Transport
			}, nil, nil)
			srvAddr = srv.Addr()
			srv.Set("2.0.0.127.bl.mxd", dnstest.Records{A: []string{"127.0.0.2"}}) // its RFC 5782 test point
			if tc.listV4 {
				srv.Set(lookup.ReverseName(v4)+".bl.mxd", dnstest.Records{A: []string{"127.0.0.2"}, TXT: [][]string{{"listed for testing"}}})
			}
			if tc.listV6 {
				srv.Set(lookup.ReverseName(v6)+".bl.mxd", dnstest.Records{A: []string{"127.0.0.2"}})
			}
			r, err := lookup.New(testLookup(srvAddr), zaptest.NewLogger(t))
			if err != nil {
				t.Fatal(err)
			}
			mon := dnsbl.NewMonitor(r, dnsbl.MonitorConfig{IPv4: []netip.Addr{v4}, IPv6: []netip.Addr{v6}, Zones: []string{"bl.mxd"},
				ErrorCodes: []netip.Prefix{netip.MustParsePrefix("127.255.255.0/24")}, Interval: time.Hour}, zaptest.NewLogger(t))
			mon.CheckNow(context.Background())
			e.listings = mon
			rcpt := map[string]string{"google": "a@gmail.mxd", "default": "c@plain.mxd"}[tc.provider]
			d := e.Decide(context.Background(), rcpt)
			if d.Provider != tc.provider {
				t.Errorf("provider %q, want %q", d.Provider, tc.provider)
			}
			got := []any{d.Route, d.Transport, d.Reason}
			if diff := cmp.Diff([]any{tc.wantRoute, tc.wantTransport, tc.wantReason}, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func BenchmarkDecideCached(b *testing.B) {
	e, _ := newEngine(b, nil, nil, nil)
	ctx := context.Background()
	e.Decide(ctx, "warm@gmail.mxd")
	b.ReportAllocs()
	for b.Loop() {
		if d := e.Decide(ctx, "someone@gmail.mxd"); d.Route != Relay {
			b.Fatal(d.Route)
		}
	}
}

// A block of our IPv6 address only sends the destination over IPv4; the
// relay wins wherever the destination goes through it anyway.
func TestDecideLearnedIPv6(t *testing.T) {
	now := time.Now()
	const ipv4 = "smtp-ipv4:"
	v6 := func(dom, host string) block.Block {
		return block.Block{Domain: dom, MXHost: host, Kind: "gmail-ipv6-auth", Route: block.RouteIPv4, Learned: now, Expires: now.Add(time.Hour)}
	}
	v4 := func(dom, host string) block.Block {
		return block.Block{Domain: dom, MXHost: host, Kind: "dnsbl:zen.spamhaus.org", Route: block.RouteRelay, Learned: now, Expires: now.Add(time.Hour)}
	}
	// An old state file's block has no route.
	old := `{"version": 1, "offset": {}, "blocks": [{"domain": "learned.mxd", "mx_host": "mx.learned.mxd", "kind": "dnsbl:zen.spamhaus.org",
	  "reply": "554 5.7.1 blocked using zen.spamhaus.org", "learned": "` + now.UTC().Format(time.RFC3339) + `", "expires": "` + now.Add(time.Hour).UTC().Format(time.RFC3339) + `"}]}`
	for _, tc := range []struct {
		name       string
		blocks     []block.Block
		stateFile  string // instead of blocks
		relay      string
		ipv4       string
		rcpt       string
		want       short
		wantBlockK string // the kind of Decision.Block
	}{
		{"IPv6 block: the ipv4 transport", []block.Block{v6("learned.mxd", "mx.learned.mxd")}, "", relay, ipv4, "a@learned.mxd",
			short{"learned.mxd", ipv4, "default", "default", IPv4, ReasonLearnedIPv6}, "gmail-ipv6-auth"},
		{"IPv6 block of a shared MX host: the ipv4 transport", []block.Block{v6("other.mxd", "mx.shared-host.mxd")}, "", relay, ipv4, "a@sharedmx.mxd",
			short{"sharedmx.mxd", ipv4, "default", "default", IPv4, ReasonLearnedIPv6}, "gmail-ipv6-auth"},
		{"IPv6 block, provider always: the relay", []block.Block{v6("gmail.mxd", "gmail-smtp-in.l.google.com")}, "", relay, ipv4, "a@gmail.mxd",
			short{"gmail.mxd", relay, "google", "mx-host", Relay, ReasonProvider}, "gmail-ipv6-auth"},
		{"IPv6 block, provider always, dry run: the ipv4 transport", []block.Block{v6("gmail.mxd", "gmail-smtp-in.l.google.com")}, "", "", ipv4, "a@gmail.mxd",
			short{"gmail.mxd", ipv4, "google", "mx-host", IPv4, ReasonLearnedIPv6}, "gmail-ipv6-auth"},
		{"IPv6 block, no ipv4 transport: the relay", []block.Block{v6("learned.mxd", "mx.learned.mxd")}, "", relay, "", "a@learned.mxd",
			short{"learned.mxd", relay, "default", "default", Relay, ReasonLearnedIPv6}, "gmail-ipv6-auth"},
		{"IPv6 and IPv4 blocks of one domain: the relay", []block.Block{v6("learned.mxd", "mx.learned.mxd"), v4("learned.mxd", "mx.learned.mxd")}, "", relay, ipv4, "a@learned.mxd",
			short{"learned.mxd", relay, "", "", Relay, ReasonLearned}, "dnsbl:zen.spamhaus.org"},
		{"IPv6 block of the domain, IP block of its MX host: the relay", []block.Block{v6("learned.mxd", "mx.learned.mxd"), v4("other.mxd", "mx1.plain.mxd")}, "", relay, ipv4, "a@learned.mxd",
			short{"learned.mxd", relay, "", "", Relay, ReasonLearned}, "dnsbl:zen.spamhaus.org"},
		{"old state file without routes: the relay", nil, old, relay, ipv4, "a@learned.mxd",
			short{"learned.mxd", relay, "", "", Relay, ReasonLearned}, "dnsbl:zen.spamhaus.org"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "state.json")
			if tc.stateFile != "" {
				if err := os.WriteFile(path, []byte(tc.stateFile), 0o640); err != nil {
					t.Fatal(err)
				}
			}
			store, err := learn.OpenStore(path, zaptest.NewLogger(t))
			if err != nil {
				t.Fatal(err)
			}
			for _, b := range tc.blocks {
				store.Add(b)
			}
			e, _ := newEngine(t, func(o *Options) {
				o.Relay, o.IPv4 = tc.relay, tc.ipv4
			}, nil, store)
			d := e.Explain(context.Background(), tc.rcpt)
			if diff := cmp.Diff(tc.want, shorten(d)); diff != "" {
				t.Errorf("(-want +got):\n%s\n%s", diff, strings.Join(d.Detail, "\n"))
			}
			if d.Block == nil || d.Block.Kind != tc.wantBlockK {
				t.Errorf("Decision.Block %+v, want kind %s", d.Block, tc.wantBlockK)
			}
		})
	}
}

// A provider-wide block (Microsoft's S3150 from one tenant) sends every
// destination of that provider, recognised by MX name or MX network, to
// the relay on its first try, though the provider's route (when-listed,
// nothing listed) would go direct; a block of one destination does not;
// a provider-wide block of our IPv6 address only takes IPv4; no block
// applies to the default provider's destinations.
func TestDecideProviderWide(t *testing.T) {
	now := time.Now()
	wide := func(dom, host, p, route string) block.Block {
		return block.Block{Domain: dom, MXHost: host, Provider: p, Scope: block.ScopeProvider, Kind: "microsoft-S3150",
			Route: route, Reply: "550 5.7.1 ... (S3150)", Learned: now, Expires: now.Add(time.Hour)}
	}
	whenListed := func(o *Options) {
		for _, n := range []string{"google", "microsoft"} {
			withProvider(o, n, func(p *provider.Provider) { p.Route = provider.WhenListed })
		}
	}
	const ipv4 = "smtp-ipv4:"
	for _, tc := range []struct {
		name   string
		blocks []block.Block
		rcpt   string
		want   short
	}{
		{"no block: direct", nil, "b@m365.mxd",
			short{"m365.mxd", "", "microsoft", "mx-host", Direct, ReasonNotListed}},
		{"tenant A's S3150: tenant B to the relay", []block.Block{wide("tenant-a.mxd", "tenant-a-mxd.mail.protection.outlook.com", "microsoft", block.RouteRelay)}, "b@m365.mxd",
			short{"m365.mxd", relay, "microsoft", "mx-host", Relay, ReasonLearned}},
		{"a block of tenant A only: tenant B direct", []block.Block{{Domain: "tenant-a.mxd", MXHost: "tenant-a-mxd.mail.protection.outlook.com", Provider: "microsoft",
			Kind: "dnsbl:zen.spamhaus.org", Route: block.RouteRelay, Learned: now, Expires: now.Add(time.Hour)}}, "b@m365.mxd",
			short{"m365.mxd", "", "microsoft", "mx-host", Direct, ReasonNotListed}},
		{"provider by MX network", []block.Block{wide("gmail.mxd", "gmail-smtp-in.l.google.com", "google", block.RouteRelay)}, "v@vanity.mxd",
			short{"vanity.mxd", relay, "google", "asn", Relay, ReasonLearned}},
		{"another provider's block: direct", []block.Block{wide("gmail.mxd", "gmail-smtp-in.l.google.com", "google", block.RouteRelay)}, "b@m365.mxd",
			short{"m365.mxd", "", "microsoft", "mx-host", Direct, ReasonNotListed}},
		{"IPv6 only: the ipv4 transport", []block.Block{wide("tenant-a.mxd", "tenant-a-mxd.mail.protection.outlook.com", "microsoft", block.RouteIPv4)}, "b@m365.mxd",
			short{"m365.mxd", ipv4, "microsoft", "mx-host", IPv4, ReasonLearnedIPv6}},
		{"never the default provider", []block.Block{wide("x.mxd", "mx.x.mxd", "default", block.RouteRelay)}, "c@plain.mxd",
			short{"plain.mxd", "", "default", "default", Direct, ReasonNotListed}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			store, err := learn.OpenStore(filepath.Join(t.TempDir(), "state.json"), zaptest.NewLogger(t))
			if err != nil {
				t.Fatal(err)
			}
			for _, b := range tc.blocks {
				store.Add(b)
			}
			e, _ := newEngine(t, func(o *Options) { whenListed(o); o.IPv4 = ipv4 }, nil, store)
			d := e.Explain(context.Background(), tc.rcpt)
			if diff := cmp.Diff(tc.want, shorten(d)); diff != "" {
				t.Errorf("(-want +got):\n%s\n%s", diff, strings.Join(d.Detail, "\n"))
			}
			if tc.want.Reason == ReasonLearned && (d.Block == nil || !d.Block.ProviderWide() ||
				!strings.Contains(strings.Join(d.Detail, "\n"), "every destination of "+d.Provider)) {
				t.Errorf("block %+v, detail:\n%s", d.Block, strings.Join(d.Detail, "\n"))
			}
			if fast := e.Decide(context.Background(), tc.rcpt); shorten(fast) != shorten(d) {
				t.Errorf("Decide %+v, Explain %+v", shorten(fast), shorten(d))
			}
		})
	}
}

// fixedListing is a self-check that answers one Listing for any zones.
type fixedListing dnsbl.Listing

func (f fixedListing) Listing([]string) dnsbl.Listing { return dnsbl.Listing(f) }

// TestExplainUnknownZone: with the self-check unable to learn anything
// about a zone, `check` says so, and never "none of our addresses is
// listed"; the route is the one nothing-known gives (direct).
func TestExplainUnknownZone(t *testing.T) {
	addr := netip.MustParseAddr("192.0.2.25")
	unknown := fixedListing{Unknown: []dnsbl.Result{{Zone: "bl.mxd", Addr: addr, State: dnsbl.Unknown,
		Cause: dnsbl.CauseLookupFailed, Known: dnsbl.Unknown}}}
	e, _ := newEngine(t, func(o *Options) {
		withProvider(o, "google", func(p *provider.Provider) { p.Route = provider.WhenListed; p.Zones = []string{"bl.mxd"} })
	}, unknown, nil)
	d := e.Explain(context.Background(), "a@gmail.mxd")
	why := strings.Join(d.Detail, "\n")
	if d.Route != Direct || d.Reason != ReasonNotListed {
		t.Errorf("route %s reason %s, want direct, %s", d.Route, d.Reason, ReasonNotListed)
	}
	if !strings.Contains(why, "whether our address 192.0.2.25 is listed on bl.mxd is unknown") || strings.Contains(why, "none of our addresses is listed") {
		t.Errorf("explanation:\n%s", why)
	}
}
