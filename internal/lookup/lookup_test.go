package lookup_test

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/miekg/dns"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/mxdetour/mxdetour/internal/lookup"
	"github.com/mxdetour/mxdetour/internal/lookup/dnstest"
)

// clock is a settable time for cache expiry tests.
type clock struct{ t atomic.Int64 }

func (c *clock) now() time.Time      { return time.Unix(0, c.t.Load()) }
func (c *clock) add(d time.Duration) { c.t.Add(int64(d)) }
func newClock() *clock               { c := &clock{}; c.t.Store(time.Now().UnixNano()); return c }

// testOptions are the cache rules the tests assume; a test changes the one
// it is about.
func testOptions(servers ...string) lookup.Options {
	return lookup.Options{
		Servers: servers, Timeout: 300 * time.Millisecond, Attempts: 1, CacheSize: 1000,
		MinTTL: 30 * time.Second, MaxTTL: 24 * time.Hour, NegativeMaxTTL: time.Hour,
		ErrorTTL: 5 * time.Second, StaleTTL: time.Hour,
	}
}

func newClient(t testing.TB, srv *dnstest.Server, mutate func(*lookup.Options)) (*lookup.Client, *clock) {
	t.Helper()
	cfg := testOptions(srv.Addr())
	if mutate != nil {
		mutate(&cfg)
	}
	c, err := lookup.New(cfg, zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel)))
	if err != nil {
		t.Fatal(err)
	}
	clk := newClock()
	lookup.SetClock(c, clk.now)
	return c, clk
}

var ctx = context.Background()

func TestStatuses(t *testing.T) {
	srv := dnstest.New(t, dnstest.Zone{
		"mx.mxd":                 {MX: []lookup.MX{{Host: "b.mxd", Pref: 20}, {Host: "A.mxd.", Pref: 10}, {Host: "c.mxd", Pref: 10}}},
		"null.mxd":               {MX: []lookup.MX{{Host: ".", Pref: 0}}},
		"host.mxd":               {A: []string{"192.0.2.1"}, AAAA: []string{"2001:db8::1"}},
		"alias.mxd":              {CNAME: "host.mxd"},
		"txt.mxd":                {TXT: [][]string{{"v=DKIM1; k=rsa; ", "p=abc"}}},
		"1.2.0.192.in-addr.arpa": {PTR: []string{"Host.MXD."}},
		"fail.mxd":               {A: []string{"192.0.2.9"}},
		"refused.mxd":            {A: []string{"192.0.2.9"}},
	})
	srv.SetFault("fail.mxd", dnstest.ServFail)
	srv.SetFault("refused.mxd", dnstest.Refused)
	c, _ := newClient(t, srv, nil)
	type got struct {
		Status lookup.Status
		MX     []lookup.MX
		Addrs  []netip.Addr
		TXT    []string
		Names  []string
	}
	g := func(r lookup.Result) got { return got{r.Status, r.MX, r.Addrs, r.TXT, r.Names} }
	a := netip.MustParseAddr
	for name, tc := range map[string]struct {
		res  lookup.Result
		want got
	}{
		"mx sorted":  {c.MX(ctx, "MX.mxd."), got{Status: lookup.Answer, MX: []lookup.MX{{Host: "a.mxd", Pref: 10}, {Host: "c.mxd", Pref: 10}, {Host: "b.mxd", Pref: 20}}}},
		"null mx":    {c.MX(ctx, "null.mxd"), got{Status: lookup.Answer, MX: []lookup.MX{{Host: "", Pref: 0}}}},
		"a":          {c.A(ctx, "host.mxd"), got{Status: lookup.Answer, Addrs: []netip.Addr{a("192.0.2.1")}}},
		"aaaa":       {c.AAAA(ctx, "host.mxd"), got{Status: lookup.Answer, Addrs: []netip.Addr{a("2001:db8::1")}}},
		"cname":      {c.A(ctx, "alias.mxd"), got{Status: lookup.Answer, Addrs: []netip.Addr{a("192.0.2.1")}}},
		"txt joined": {c.TXT(ctx, "txt.mxd"), got{Status: lookup.Answer, TXT: []string{"v=DKIM1; k=rsa; p=abc"}}},
		"ptr":        {c.PTR(ctx, a("192.0.2.1")), got{Status: lookup.Answer, Names: []string{"host.mxd"}}},
		"nxdomain":   {c.MX(ctx, "nowhere.mxd"), got{Status: lookup.NXDomain}},
		"nodata":     {c.MX(ctx, "host.mxd"), got{Status: lookup.NoData}},
		"servfail":   {c.A(ctx, "fail.mxd"), got{Status: lookup.TempFail}},
		"refused":    {c.A(ctx, "refused.mxd"), got{Status: lookup.TempFail}},
	} {
		if diff := cmp.Diff(tc.want, g(tc.res), cmp.Comparer(func(x, y netip.Addr) bool { return x == y })); diff != "" {
			t.Errorf("%s (-want +got):\n%s", name, diff)
		}
	}
}

func TestTTLExpiryAndClamp(t *testing.T) {
	srv := dnstest.New(t, dnstest.Zone{
		"short.mxd": {A: []string{"192.0.2.1"}, TTL: 5},
		"long.mxd":  {A: []string{"192.0.2.2"}, TTL: 86400 * 7},
		"mid.mxd":   {A: []string{"192.0.2.3"}, TTL: 120},
	})
	c, clk := newClient(t, srv, func(d *lookup.Options) {
		d.MinTTL = 30 * time.Second
		d.MaxTTL = time.Hour
	})
	for _, tc := range []struct {
		name string
		ttl  time.Duration
	}{{"short.mxd", 30 * time.Second}, {"long.mxd", time.Hour}, {"mid.mxd", 120 * time.Second}} {
		if r := c.A(ctx, tc.name); r.TTL != tc.ttl || r.Cached {
			t.Errorf("%s: ttl %v cached %v, want %v uncached", tc.name, r.TTL, r.Cached, tc.ttl)
		}
		if r := c.A(ctx, tc.name); !r.Cached {
			t.Errorf("%s: second lookup not cached", tc.name)
		}
	}
	clk.add(121 * time.Second)
	c.A(ctx, "mid.mxd")
	if n := srv.Queries("mid.mxd", dns.TypeA); n != 2 {
		t.Errorf("mid.mxd asked %d times after expiry, want 2", n)
	}
	c.A(ctx, "long.mxd")
	if n := srv.Queries("long.mxd", dns.TypeA); n != 1 {
		t.Errorf("long.mxd asked %d times before its clamped expiry, want 1", n)
	}
}

func TestNegativeCaching(t *testing.T) {
	srv := dnstest.New(t, dnstest.Zone{"host.mxd": {A: []string{"192.0.2.1"}}})
	srv.SetNegativeTTL(120)
	c, clk := newClient(t, srv, func(d *lookup.Options) { d.NegativeMaxTTL = 60 * time.Second })
	if r := c.MX(ctx, "gone.mxd"); r.Status != lookup.NXDomain || r.TTL != 60*time.Second {
		t.Errorf("NXDOMAIN: %v ttl %v, want capped at 60s", r.Status, r.TTL)
	}
	if r := c.MX(ctx, "host.mxd"); r.Status != lookup.NoData || r.TTL != 60*time.Second {
		t.Errorf("NODATA: %v ttl %v", r.Status, r.TTL)
	}
	srv.SetNegativeTTL(10)
	if r := c.MX(ctx, "gone2.mxd"); r.TTL != 10*time.Second {
		t.Errorf("NXDOMAIN with SOA minimum 10: ttl %v", r.TTL)
	}
	clk.add(30 * time.Second)
	c.MX(ctx, "gone.mxd")
	c.MX(ctx, "gone2.mxd")
	if a, b := srv.Queries("gone.mxd", dns.TypeMX), srv.Queries("gone2.mxd", dns.TypeMX); a != 1 || b != 2 {
		t.Errorf("queries gone=%d gone2=%d, want 1 and 2", a, b)
	}
}

func TestErrorsCachedBriefly(t *testing.T) {
	srv := dnstest.New(t, dnstest.Zone{"fail.mxd": {A: []string{"192.0.2.1"}}, "slow.mxd": {A: []string{"192.0.2.2"}}})
	srv.SetFault("fail.mxd", dnstest.ServFail)
	srv.SetFault("slow.mxd", dnstest.Timeout)
	c, clk := newClient(t, srv, func(d *lookup.Options) { d.ErrorTTL = 5 * time.Second })
	for _, name := range []string{"fail.mxd", "slow.mxd"} {
		if r := c.A(ctx, name); r.Status != lookup.TempFail || r.Err == nil {
			t.Errorf("%s: %v %v, want TempFail with a reason", name, r.Status, r.Err)
		}
		if r := c.A(ctx, name); !r.Cached || r.Status != lookup.TempFail {
			t.Errorf("%s: failure not cached", name)
		}
	}
	clk.add(6 * time.Second)
	srv.SetFault("fail.mxd", dnstest.NoFault)
	if r := c.A(ctx, "fail.mxd"); r.Status != lookup.Answer {
		t.Errorf("after the error TTL: %v", r.Status)
	}
	if st := c.Stats(); st.Errors < 2 || st.Upstream < 3 {
		t.Errorf("stats %+v", st)
	}
	// Each query sent upstream ended one way: one answer (fail.mxd once
	// healed), the SERVFAILs and timeouts before it errors.
	if st := c.Stats(); st.Answered != 1 || st.UpstreamErrors != st.Upstream-1 {
		t.Errorf("upstream: %d answered, %d errors of %d sent; want 1 and the rest", st.Answered, st.UpstreamErrors, st.Upstream)
	}
}

func TestStaleServing(t *testing.T) {
	srv := dnstest.New(t, dnstest.Zone{"mx.mxd": {MX: []lookup.MX{{Host: "mx1.mxd", Pref: 10}}, TTL: 60}})
	c, clk := newClient(t, srv, func(d *lookup.Options) {
		d.MinTTL = time.Second
		d.StaleTTL = 10 * time.Minute
		d.ErrorTTL = 5 * time.Second
	})
	c.MX(ctx, "mx.mxd")
	srv.SetFault("mx.mxd", dnstest.ServFail)
	clk.add(2 * time.Minute)
	r := c.MX(ctx, "mx.mxd")
	if r.Status != lookup.Answer || !r.Stale || len(r.MX) != 1 {
		t.Fatalf("while upstream fails: %+v, want the stale answer", r)
	}
	for range 20 { // repeated failures must not stretch the bound
		clk.add(time.Minute)
		r = c.MX(ctx, "mx.mxd")
	}
	if r.Status != lookup.TempFail {
		t.Errorf("past the stale bound: %v, want TempFail", r.Status)
	}
	if c.Stats().Stale == 0 {
		t.Error("stale answers not counted")
	}
}

func TestTruncationFallsBackToTCP(t *testing.T) {
	srv := dnstest.New(t, dnstest.Zone{"big.mxd": {TXT: [][]string{{"v=DKIM1; k=rsa; p=long"}}}})
	srv.SetFault("big.mxd", dnstest.Truncate)
	c, _ := newClient(t, srv, nil)
	if r := c.TXT(ctx, "big.mxd"); r.Status != lookup.Answer || r.TXT[0] != "v=DKIM1; k=rsa; p=long" {
		t.Errorf("truncated answer: %+v", r)
	}
	if n := srv.Queries("big.mxd", dns.TypeTXT); n != 2 {
		t.Errorf("%d queries, want 2 (UDP then TCP)", n)
	}
}

func TestCoalescing(t *testing.T) {
	srv := dnstest.New(t, dnstest.Zone{"gmail.mxd": {MX: []lookup.MX{{Host: "gmail-smtp-in.l.google.com", Pref: 5}}}})
	srv.SetDelay("gmail.mxd", 200*time.Millisecond)
	// A timeout well past the delay: on a loaded machine 1,000 goroutines
	// and the server's 200 ms may take longer than the usual 300 ms, and
	// then every caller gets TempFail (it flaked so).
	c, _ := newClient(t, srv, func(o *lookup.Options) { o.Timeout = 5 * time.Second })
	var wg sync.WaitGroup
	var bad atomic.Int32
	for range 1000 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if r := c.MX(ctx, "gmail.mxd"); r.Status != lookup.Answer {
				bad.Add(1)
			}
		}()
	}
	wg.Wait()
	if n := srv.Queries("gmail.mxd", dns.TypeMX); n != 1 {
		t.Errorf("1,000 concurrent misses sent %d upstream queries, want 1", n)
	}
	if bad.Load() != 0 {
		t.Errorf("%d callers got no answer", bad.Load())
	}
}

func TestDeadlineLeavesQueryRunning(t *testing.T) {
	srv := dnstest.New(t, dnstest.Zone{"slow.mxd": {A: []string{"192.0.2.7"}}})
	srv.SetDelay("slow.mxd", 150*time.Millisecond)
	c, _ := newClient(t, srv, nil)
	short, cancel := context.WithTimeout(ctx, 10*time.Millisecond)
	defer cancel()
	if r := c.A(short, "slow.mxd"); r.Status != lookup.TempFail {
		t.Fatalf("past the caller's deadline: %v, want TempFail", r.Status)
	}
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if r := c.A(ctx, "slow.mxd"); r.Cached && r.Status == lookup.Answer {
			if n := srv.Queries("slow.mxd", dns.TypeA); n != 1 {
				t.Errorf("%d upstream queries, want 1", n)
			}
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Error("the background query never filled the cache")
}

func TestCacheBound(t *testing.T) {
	srv := dnstest.New(t, dnstest.Zone{})
	c, _ := newClient(t, srv, func(d *lookup.Options) { d.CacheSize = 50 })
	for i := range 200 {
		c.MX(ctx, "n"+string(rune('a'+i%26))+string(rune('a'+i/26))+".mxd")
	}
	if n := c.Stats().Entries; n != 50 {
		t.Errorf("%d entries, want the bound 50", n)
	}
}

func TestResolvConf(t *testing.T) {
	p := filepath.Join(t.TempDir(), "resolv.conf")
	if err := os.WriteFile(p, []byte("# test\nnameserver 127.0.0.53\nnameserver ::1\noptions edns0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := lookup.ResolvConf(p)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"127.0.0.53:53", "[::1]:53"}, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

func TestReverseName(t *testing.T) {
	for in, want := range map[string]string{
		"192.0.2.1":        "1.2.0.192",
		"::ffff:127.0.0.2": "2.0.0.127",
		"2001:db8::1":      "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2",
	} {
		if got := lookup.ReverseName(netip.MustParseAddr(in)); got != want {
			t.Errorf("ReverseName(%s) = %s, want %s", in, got, want)
		}
	}
}

func BenchmarkCacheHit(b *testing.B) {
	srv := dnstest.New(b, dnstest.Zone{"gmail.mxd": {MX: []lookup.MX{{Host: "gmail-smtp-in.l.google.com", Pref: 5}}}})
	c, _ := newClient(b, srv, nil)
	c.MX(ctx, "gmail.mxd")
	b.ReportAllocs()
	for b.Loop() {
		if r := c.MX(ctx, "gmail.mxd"); !r.Cached {
			b.Fatal("miss")
		}
	}
}

// BenchmarkMemoryBound fills a 10^5-entry cache with 10^6 distinct names
// (inserted through the cache, not over the network) and reports the live
// heap afterwards.
func BenchmarkMemoryBound(b *testing.B) {
	for b.Loop() {
		cfg := testOptions("127.0.0.1:9")
		cfg.CacheSize = 100000
		c, err := lookup.New(cfg, zap.NewNop())
		if err != nil {
			b.Fatal(err)
		}
		for i := range 1000000 {
			lookup.Insert(c, i)
		}
		if n := c.Stats().Entries; n != 100000 {
			b.Fatalf("%d entries", n)
		}
		b.ReportMetric(float64(lookup.HeapInUse())/(1<<20), "heapMiB")
		runtime.KeepAlive(c)
	}
}
