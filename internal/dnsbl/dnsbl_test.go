package dnsbl

import (
	"context"
	"net/netip"
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

func setup(t *testing.T) (*dnstest.Server, lookup.Resolver) {
	srv := dnstest.New(t, dnstest.Zone{
		entry(netip.MustParseAddr("127.0.0.2"), "bl.mxd"):     {A: []string{"127.0.0.2"}},
		entry(listedV4, "bl.mxd"):                             {A: []string{"127.0.0.2"}, TXT: [][]string{{"listed: see https://bl.mxd/"}}},
		entry(errorV4, "bl.mxd"):                              {A: []string{"127.255.255.254"}},
		entry(zoneErr, "bl.mxd"):                              {A: []string{"127.0.0.255"}},
		entry(listedV6, "bl.mxd"):                             {A: []string{"127.0.0.2"}},
		entry(netip.MustParseAddr("127.0.0.1"), "broken.mxd"): {A: []string{"127.0.0.2"}},
		entry(cleanV4, "broken.mxd"):                          {A: []string{"127.0.0.2"}},
	})
	cfg := srv.Options()
	cfg.Timeout = 200 * time.Millisecond
	// Every check asks again: nothing stays cached.
	cfg.ErrorTTL = time.Nanosecond
	cfg.MinTTL = time.Nanosecond
	cfg.MaxTTL = time.Nanosecond
	cfg.NegativeMaxTTL = time.Nanosecond
	cfg.StaleTTL = 0
	r, err := lookup.New(cfg, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	return srv, r
}

func TestQuery(t *testing.T) {
	srv, r := setup(t)
	srv.SetFault(entry(cleanV4, "slow.mxd"), dnstest.Timeout)
	ctx := context.Background()
	codes := append(spamhaus, netip.MustParsePrefix("127.0.0.255/32"))
	for _, tc := range []struct {
		name string
		ip   netip.Addr
		zone string
		want State
	}{
		{"listed", listedV4, "bl.mxd", Listed},
		{"not listed", cleanV4, "bl.mxd", Clean},
		{"spamhaus error code", errorV4, "bl.mxd", Unknown},
		{"per-zone error code", zoneErr, "bl.mxd", Unknown},
		{"ipv6 nibbles", listedV6, "bl.mxd", Listed},
		{"timeout", cleanV4, "slow.mxd", Unknown},
	} {
		res := Query(ctx, r, tc.zone, tc.ip, codes)
		if res.State != tc.want {
			t.Errorf("%s: %v (%v), want %v", tc.name, res.State, res.Err, tc.want)
		}
		if tc.want == Unknown && res.Err == nil {
			t.Errorf("%s: unknown without a reason", tc.name)
		}
		if tc.name == "listed" && res.Reason != "listed: see https://bl.mxd/" {
			t.Errorf("reason %q", res.Reason)
		}
	}
	if ok, _ := ZoneHealthy(ctx, r, "bl.mxd", spamhaus); !ok {
		t.Error("bl.mxd not healthy")
	}
	if ok, err := ZoneHealthy(ctx, r, "broken.mxd", spamhaus); ok || err == nil {
		t.Error("a zone listing 127.0.0.1 is healthy")
	}
}

func TestMonitor(t *testing.T) {
	srv, r := setup(t)
	core, logs := observer.New(zapcore.InfoLevel)
	m := NewMonitor(r, MonitorConfig{
		IPv4: []netip.Addr{cleanV4}, IPv6: []netip.Addr{listedV6},
		Zones: []string{"bl.mxd", "broken.mxd"}, ErrorCodes: spamhaus, Interval: time.Hour,
	}, zap.New(core))
	ctx := context.Background()
	m.CheckNow(ctx)
	l := m.Listing([]string{"bl.mxd"})
	if l.V4Listed || !l.V6Listed || len(l.Hits) != 1 {
		t.Errorf("listing %+v, want only IPv6 listed", l)
	}
	if l := m.Listing([]string{"broken.mxd"}); l.V4Listed || l.V6Listed {
		t.Errorf("a broken zone counted as listing: %+v", l)
	}
	// Our IPv4 address gets listed: logged once, however often checked.
	var changes []Result
	m2 := NewMonitor(r, MonitorConfig{IPv4: []netip.Addr{listedV4}, Zones: []string{"bl.mxd"}, ErrorCodes: spamhaus, Interval: time.Hour,
		OnChange: func(cur Result) { changes = append(changes, cur) }}, zap.New(core))
	for range 3 {
		m2.CheckNow(ctx)
	}
	if n := logs.FilterMessage("our address is listed").FilterField(zap.Stringer("addr", listedV4)).Len(); n != 1 {
		t.Errorf("listing logged %d times, want once", n)
	}
	if len(changes) != 1 || changes[0].State != Listed || changes[0].Addr != listedV4 {
		t.Errorf("OnChange got %+v, want one listing", changes)
	}
	// A zone that starts timing out keeps the last known state.
	srv.SetFault(entry(listedV4, "bl.mxd"), dnstest.Timeout)
	srv.SetFault(entry(netip.MustParseAddr("127.0.0.1"), "bl.mxd"), dnstest.Timeout)
	m2.CheckNow(ctx)
	if l := m2.Listing([]string{"bl.mxd"}); !l.V4Listed {
		t.Error("a timeout flapped the listing to clean")
	}
	if rs := m2.Results(); len(rs) != 1 || rs[0].Err == nil {
		t.Errorf("results %+v, want the timeout reported", rs)
	}
}
