package dnsbl

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/mxdetour/mxdetour/internal/lookup"
	"github.com/mxdetour/mxdetour/internal/lookup/dnstest"
)

var (
	listedV4 = netip.MustParseAddr("192.0.2.2")
	cleanV4  = netip.MustParseAddr("192.0.2.3")
	errorV4  = netip.MustParseAddr("192.0.2.4")
	zoneErr  = netip.MustParseAddr("192.0.2.5")
	listedV6 = netip.MustParseAddr("2001:db8::2")
	spamhaus = []netip.Prefix{netip.MustParsePrefix("127.255.255.0/24")}
)

func entry(ip netip.Addr, zone string) string { return lookup.ReverseName(ip) + "." + zone }

// testPoint is a zone's RFC 5782 section 5 entry for "listed".
func testPoint(zone string) string { return entry(testListed, zone) }

// healthyZone is a zone as a list publishes it: its own name, its test
// entry for "listed", and the top-level domain above it.
func healthyZone() dnstest.Zone {
	return dnstest.Zone{
		"mxd":                     {},
		"bl.mxd":                  {},
		testPoint("bl.mxd"):       {A: []string{"127.0.0.2"}},
		entry(listedV4, "bl.mxd"): {A: []string{"127.0.0.2"}, TXT: [][]string{{"listed: see https://bl.mxd/"}}},
		entry(errorV4, "bl.mxd"):  {A: []string{"127.255.255.254"}},
		entry(zoneErr, "bl.mxd"):  {A: []string{"127.0.0.255"}},
		entry(listedV6, "bl.mxd"): {A: []string{"127.0.0.2"}},
		// A zone that lapsed and answers "listed" to everything.
		testPoint("broken.mxd"):                               {A: []string{"127.0.0.2"}},
		entry(netip.MustParseAddr("127.0.0.1"), "broken.mxd"): {A: []string{"127.0.0.2"}},
		entry(cleanV4, "broken.mxd"):                          {A: []string{"127.0.0.2"}},
		// An IPv6-only list: its test entries are IPv4-mapped, in nibbles.
		lookup.ReverseNibbles(testListed6) + ".v6.mxd": {A: []string{"127.0.0.2"}},
		// Spamhaus refusing a public resolver: an error code for every name.
		testPoint("refused.mxd"): {A: []string{"127.255.255.254"}},
		// A zone that exists but no longer publishes anything.
		"dead.mxd": {},
	}
}

// resolver asks srv afresh on every lookup: nothing stays cached between
// checks.
func resolver(t *testing.T, srv *dnstest.Server) lookup.Resolver {
	cfg := srv.Options()
	cfg.Timeout = 200 * time.Millisecond
	cfg.ErrorTTL = time.Nanosecond
	cfg.MinTTL = time.Nanosecond
	cfg.MaxTTL = time.Nanosecond
	cfg.NegativeMaxTTL = time.Nanosecond
	cfg.StaleTTL = 0
	r, err := lookup.New(cfg, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func setup(t *testing.T) (*dnstest.Server, lookup.Resolver) {
	srv := dnstest.New(t, healthyZone())
	return srv, resolver(t, srv)
}

func TestQuery(t *testing.T) {
	srv, r := setup(t)
	srv.SetFault(entry(cleanV4, "slow.mxd"), dnstest.Timeout)
	ctx := context.Background()
	codes := append(spamhaus, netip.MustParsePrefix("127.0.0.255/32"))
	for _, tc := range []struct {
		name  string
		ip    netip.Addr
		zone  string
		want  State
		cause Cause
	}{
		{"listed", listedV4, "bl.mxd", Listed, ""},
		{"not listed", cleanV4, "bl.mxd", Clean, ""},
		{"spamhaus error code", errorV4, "bl.mxd", Unknown, CauseErrorCode},
		{"per-zone error code", zoneErr, "bl.mxd", Unknown, CauseErrorCode},
		{"ipv6 nibbles", listedV6, "bl.mxd", Listed, ""},
		{"timeout", cleanV4, "slow.mxd", Unknown, CauseLookupFailed},
	} {
		res := Query(ctx, r, tc.zone, tc.ip, codes)
		if res.State != tc.want || res.Cause != tc.cause {
			t.Errorf("%s: %v %q (%v), want %v %q", tc.name, res.State, res.Cause, res.Err, tc.want, tc.cause)
		}
		if tc.want == Unknown && res.Err == nil {
			t.Errorf("%s: unknown without a reason", tc.name)
		}
		if tc.name == "listed" && res.Reason != "listed: see https://bl.mxd/" {
			t.Errorf("reason %q", res.Reason)
		}
	}
	if res := Query(ctx, r, "bl.mxd", errorV4, codes); !strings.Contains(res.Err.Error(), "public or open resolver") {
		t.Errorf("error code without its meaning: %v", res.Err)
	}
}

// TestCheckZone: a zone is trusted only when it lists 127.0.0.2 and not
// 127.0.0.1 (RFC 5782 section 5); otherwise the likely cause is named.
func TestCheckZone(t *testing.T) {
	srv, r := setup(t)
	srv.SetFault(testPoint("slow.mxd"), dnstest.Timeout)
	nx := dnstest.New(t, dnstest.Zone{}) // a resolver answering NXDOMAIN to every name
	ctx := context.Background()
	for _, tc := range []struct {
		zone  string
		r     lookup.Resolver
		cause Cause
		why   string
	}{
		{"bl.mxd", r, "", "passes"},
		{"v6.mxd", r, "", "passes"},
		{"broken.mxd", r, CauseListsEverything, "lists everything"},
		{"refused.mxd", r, CauseErrorCode, "127.255.255.254 (Spamhaus: query through a public or open resolver: refused)"},
		{"dead.mxd", r, CauseNoTestEntry, "does not list its test entry"},
		{"gone.mxd", r, CauseZoneMissing, "does not exist"},
		{"slow.mxd", r, CauseLookupFailed, "lookups fail"},
		{"zen.spamhaus.org", resolver(t, nx), CauseNXDomainForAll, "NXDOMAIN for everything"},
	} {
		h := CheckZone(ctx, tc.r, tc.zone, spamhaus)
		if h.Cause != tc.cause || !strings.Contains(h.Why(), tc.why) {
			t.Errorf("%s: cause %q (%s; %v), want %q (%s)", tc.zone, h.Cause, h.Why(), h.Err, tc.cause, tc.why)
		}
		if h.OK() != (tc.cause == "") || !h.OK() && h.Err == nil {
			t.Errorf("%s: OK %v, err %v", tc.zone, h.OK(), h.Err)
		}
	}
}

// monitorLog is a monitor on zone bl.mxd of srv's, its log, and the
// changes it reports.
type monitorLog struct {
	m       *Monitor
	logs    *observer.ObservedLogs
	changes []Result
	zones   []ZoneHealth
}

func newMonitor(t *testing.T, r lookup.Resolver, zone string, addrs ...netip.Addr) *monitorLog {
	core, logs := observer.New(zapcore.InfoLevel)
	ml := &monitorLog{logs: logs}
	c := MonitorConfig{Zones: []string{zone}, ErrorCodes: spamhaus, Interval: time.Hour,
		OnChange:     func(cur Result) { ml.changes = append(ml.changes, cur) },
		OnZoneChange: func(cur ZoneHealth) { ml.zones = append(ml.zones, cur) }}
	for _, a := range addrs {
		if a.Is4() {
			c.IPv4 = append(c.IPv4, a)
		} else {
			c.IPv6 = append(c.IPv6, a)
		}
	}
	ml.m = NewMonitor(r, c, zap.New(core))
	return ml
}

func (ml *monitorLog) checks(n int) {
	for range n {
		ml.m.CheckNow(context.Background())
	}
}

func (ml *monitorLog) states() map[netip.Addr]State {
	out := map[netip.Addr]State{}
	for _, r := range ml.m.Results() {
		out[r.Addr] = r.State
	}
	return out
}

// TestMonitorStates: on a healthy zone, a listed address is listed, a clean
// one clean, one answered with an error code unknown; each is logged once
// however often checked, and only the listing is reported.
func TestMonitorStates(t *testing.T) {
	_, r := setup(t)
	ml := newMonitor(t, r, "bl.mxd", listedV4, cleanV4, errorV4, listedV6)
	ml.checks(3)
	want := map[netip.Addr]State{listedV4: Listed, cleanV4: Clean, errorV4: Unknown, listedV6: Listed}
	for a, s := range ml.states() {
		if want[a] != s {
			t.Errorf("%s: %v, want %v", a, s, want[a])
		}
	}
	if l := ml.m.Listing([]string{"bl.mxd"}); !l.V4Listed || !l.V6Listed || len(l.Hits) != 2 {
		t.Errorf("listing %+v, want both families listed, two hits", l)
	}
	if len(ml.changes) != 2 || len(ml.zones) != 0 {
		t.Errorf("reported %+v and zones %+v, want the two listings alone", ml.changes, ml.zones)
	}
	for msg, n := range map[string]int{"our address is listed": 2, "our address is not listed": 1,
		"our address's blocklist state is unknown; its route stays as last known": 1} {
		if got := ml.logs.FilterMessage(msg).Len(); got != n {
			t.Errorf("%q logged %d times, want %d", msg, got, n)
		}
	}
	if z := ml.m.Zones(); len(z) != 1 || !z[0].OK() {
		t.Errorf("zones %+v, want bl.mxd passing", z)
	}
	if l := ml.m.Listing([]string{"other.mxd"}); l.V4Listed || l.V6Listed {
		t.Errorf("listed on a zone not asked for: %+v", l)
	}
}

// TestMonitorNXDomainResolver: with a resolver that answers NXDOMAIN to
// every name our addresses are unknown, never clean, and the zone is
// reported once, however often checked.
func TestMonitorNXDomainResolver(t *testing.T) {
	nx := dnstest.New(t, dnstest.Zone{})
	ml := newMonitor(t, resolver(t, nx), "zen.spamhaus.org", cleanV4, listedV6)
	ml.checks(3)
	for _, r := range ml.m.Results() {
		if r.State != Unknown || r.Known != Unknown || r.Cause != CauseNXDomainForAll || r.Err == nil {
			t.Errorf("%s: %v (known %v, cause %q, %v), want unknown for NXDOMAIN for everything", r.Addr, r.State, r.Known, r.Cause, r.Err)
		}
	}
	if len(ml.m.Results()) != 2 {
		t.Errorf("results %+v, want two", ml.m.Results())
	}
	if l := ml.m.Listing([]string{"zen.spamhaus.org"}); l.V4Listed || l.V6Listed || len(l.Unknown) != 2 {
		t.Errorf("nothing known routes as not listed, both unknown; got %+v", l)
	}
	if len(ml.zones) != 1 || ml.zones[0].Cause != CauseNXDomainForAll || len(ml.changes) != 0 {
		t.Errorf("zone changes %+v, address changes %+v; want one zone change", ml.zones, ml.changes)
	}
	if n := ml.logs.FilterMessage("our address is not listed").Len(); n != 0 {
		t.Errorf("said %d times that our address is not listed", n)
	}
	if n := ml.logs.FilterMessageSnippet("fails its test points").FilterField(zap.String("cause", string(CauseNXDomainForAll))).Len(); n != 1 {
		t.Errorf("the zone's failure logged %d times, want once", n)
	}
	if z := ml.m.Zones(); len(z) != 1 || z[0].OK() {
		t.Errorf("zones %+v, want zen.spamhaus.org unknown", z)
	}
}

// TestMonitorUnknownKeepsRoutes: a zone that starts failing its test points
// changes no route, listed or clean, and is reported once when it fails
// and once when it passes again.
func TestMonitorUnknownKeepsRoutes(t *testing.T) {
	srv, r := setup(t)
	ml := newMonitor(t, r, "bl.mxd", listedV4, cleanV4)
	ml.checks(1)
	for _, fault := range []struct {
		name      string
		cause     Cause
		fail, fix func()
	}{
		{"test entry gone", CauseNoTestEntry,
			func() { srv.Delete(testPoint("bl.mxd")) },
			func() { srv.Set(testPoint("bl.mxd"), dnstest.Records{A: []string{"127.0.0.2"}}) }},
		{"resolver refused", CauseErrorCode,
			func() { srv.Set(testPoint("bl.mxd"), dnstest.Records{A: []string{"127.255.255.254"}}) },
			func() { srv.Set(testPoint("bl.mxd"), dnstest.Records{A: []string{"127.0.0.2"}}) }},
		{"timeouts", CauseLookupFailed,
			func() { srv.SetFault(testPoint("bl.mxd"), dnstest.Timeout) },
			func() { srv.SetFault(testPoint("bl.mxd"), dnstest.NoFault) }},
	} {
		ml.changes, ml.zones = nil, nil
		fault.fail()
		ml.checks(3)
		if l := ml.m.Listing([]string{"bl.mxd"}); !l.V4Listed || len(l.Hits) != 1 || l.Hits[0].Addr != listedV4 {
			t.Errorf("%s: listing %+v, want the listed address still listed", fault.name, l)
		}
		for a, s := range ml.states() {
			if s != Unknown {
				t.Errorf("%s: %s reads %v, want unknown", fault.name, a, s)
			}
		}
		if len(ml.zones) != 1 || ml.zones[0].Cause != fault.cause {
			t.Errorf("%s: zone changes %+v, want one, %q", fault.name, ml.zones, fault.cause)
		}
		fault.fix()
		ml.checks(2)
		if len(ml.zones) != 2 || !ml.zones[1].OK() {
			t.Errorf("%s: zone changes %+v, want the failure and the recovery", fault.name, ml.zones)
		}
		if len(ml.changes) != 0 {
			t.Errorf("%s: address changes %+v, want none", fault.name, ml.changes)
		}
		if st := ml.states(); st[listedV4] != Listed || st[cleanV4] != Clean {
			t.Errorf("%s: after the recovery %v", fault.name, st)
		}
	}
	// A delisting seen after an unknown spell is one change.
	srv.Delete(entry(listedV4, "bl.mxd"))
	ml.checks(2)
	if len(ml.changes) != 1 || ml.changes[0].State != Clean || ml.changes[0].Addr != listedV4 {
		t.Errorf("changes %+v, want the delisting", ml.changes)
	}
}

// TestMonitorCarry: a monitor built by a reload routes by what the old one
// knew and reports only news.
func TestMonitorCarry(t *testing.T) {
	srv, r := setup(t)
	old := newMonitor(t, r, "bl.mxd", listedV4)
	old.checks(1)
	srv.Delete(testPoint("bl.mxd"))
	old.checks(1)
	next := newMonitor(t, r, "bl.mxd", listedV4, cleanV4)
	next.m.Carry(old.m)
	next.checks(1)
	if l := next.m.Listing([]string{"bl.mxd"}); !l.V4Listed {
		t.Errorf("listing %+v: the reload forgot the listing", l)
	}
	if len(next.zones) != 0 || len(next.changes) != 0 {
		t.Errorf("reported again: zones %+v, changes %+v", next.zones, next.changes)
	}
}
