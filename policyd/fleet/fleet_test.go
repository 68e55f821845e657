package fleet

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"

	"github.com/mxdetour/mxdetour/internal/testutil"
	"github.com/mxdetour/mxdetour/policyd/block"
	"github.com/mxdetour/mxdetour/policyd/fleet/fleettest"
	"github.com/mxdetour/mxdetour/policyd/learn"
	"github.com/mxdetour/mxdetour/policyd/limits"
)

// host is one MX host of a test fleet: its store, the learner that feeds
// it from "its log" (lines handed to Handle) and its fleet.
type host struct {
	name  string
	store *learn.Store
	l     *learn.Learner
	f     *Fleet
	logs  *observer.ObservedLogs
}

func newHost(t *testing.T, r *fleettest.Redis, name string, mutate func(*Options)) *host {
	t.Helper()
	s, err := learn.OpenStore(filepath.Join(t.TempDir(), "state.json"), zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	c, _ := learn.NewClassifier(nil, nil)
	core, logs := observer.New(zapcore.DebugLevel)
	log := zap.New(zapcore.NewTee(core, zaptest.NewLogger(t).Core())).Named(name)
	o := Options{URL: r.URL(), Name: name, MinBackoff: 50 * time.Millisecond, MaxBackoff: 500 * time.Millisecond, Ping: 200 * time.Millisecond}
	if mutate != nil {
		mutate(&o)
	}
	f, err := New(o, s, log)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { f.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	h := &host{name: name, store: s, f: f, logs: logs,
		l: learn.NewLearner(learn.Options{LogFile: "/nonexistent", BlockTTL: time.Hour}, c, s, log)}
	testutil.EventuallyWithin(t, 5*time.Second, name+" connected", f.Connected)
	return h
}

// refuse hands the host's learner a refusal of our address client by the
// MX of dom, as Postfix logs it.
func (h *host) refuse(dom, client string) {
	h.l.Handle(fmt.Sprintf("%s %s postfix/smtp[1]: 4ABCD%d: to=<u@%s>, relay=mx.%s[192.0.2.1]:25, delay=1, delays=0/0/0/1, dsn=5.7.1, status=bounced (host mx.%s[192.0.2.1] said: 554 5.7.1 Service unavailable; Client host [%s] blocked using zen.spamhaus.org (in reply to RCPT TO command))",
		time.Now().Format(time.RFC3339), h.name, len(dom), dom, dom, dom, client), time.Now())
}

func (h *host) has(dom string) bool {
	_, ok := h.store.Lookup(dom, nil, time.Now())
	return ok
}

// A block learned on one host is applied on the other within a second,
// naming the host that learned it; in Redis it expires with the block.
func TestBlockShared(t *testing.T) {
	r := fleettest.Start(t)
	a, b := newHost(t, r, "mx01", nil), newHost(t, r, "mx02", nil)
	start := time.Now()
	a.refuse("shared.example", "192.0.2.5")
	testutil.EventuallyWithin(t, time.Second, "mx02 applies mx01's block", func() bool { return b.has("shared.example") })
	t.Logf("applied on mx02 %s after mx01 learned it", time.Since(start))
	got, _ := b.store.Lookup("shared.example", nil, time.Now())
	if got.Host != "mx01" || got.Client != netip.MustParseAddr("192.0.2.5") || got.MXHost != "mx.shared.example" {
		t.Errorf("mx02 holds %+v, want host mx01, client 192.0.2.5, MX mx.shared.example", got)
	}
	if n := b.f.Received(); n != 1 {
		t.Errorf("mx02 received %d blocks, want 1", n)
	}
	pttl, _ := strconv.Atoi(r.Do("PTTL", blockKey("shared.example", "mx01")))
	if left := time.Duration(pttl) * time.Millisecond; left < 59*time.Minute || left > time.Hour {
		t.Errorf("the key expires in %s, want the block's hour", left)
	}
	// mx01's own block is not echoed back as another host's.
	if own, _ := a.store.Lookup("shared.example", nil, time.Now()); own.Host != "" || a.f.Received() != 0 {
		t.Errorf("mx01's own block came back as %q's (received %d)", own.Host, a.f.Received())
	}
	list, err := b.f.Blocks(context.Background(), time.Now())
	if err != nil || len(list) != 1 || list[0].Host != "mx01" || list[0].Domain != "shared.example" {
		t.Errorf("fleet blocks %+v, %v", list, err)
	}
}

// `blocks forget` on one host forgets on every host: the keys go, a
// forget is recorded and published, and a copy written back later by a
// host that missed it is ignored.
func TestForgetFleetWide(t *testing.T) {
	r := fleettest.Start(t)
	a, b := newHost(t, r, "mx01", nil), newHost(t, r, "mx02", nil)
	a.refuse("gone.example", "192.0.2.5")
	b.refuse("gone.example", "192.0.2.6")
	testutil.EventuallyWithin(t, time.Second, "both hosts know both blocks", func() bool {
		l, _ := a.f.Blocks(context.Background(), time.Now())
		return len(l) == 2 && a.has("gone.example") && b.has("gone.example")
	})
	// What the command does on mx02: forget locally, then in the fleet.
	b.store.Forget("gone.example")
	tomb, _ := b.store.Tombstone("gone.example")
	n, err := b.f.Forget(context.Background(), tomb)
	if err != nil || n != 2 {
		t.Fatalf("Forget: %d keys, %v; want 2", n, err)
	}
	testutil.EventuallyWithin(t, time.Second, "mx01 forgets", func() bool { return !a.has("gone.example") })
	if l, _ := a.f.Blocks(context.Background(), time.Now()); len(l) != 0 {
		t.Errorf("blocks left in the fleet: %+v", l)
	}
	// A stale copy from before the forget changes nothing.
	stale := block.Block{Domain: "gone.example", MXHost: "mx.gone.example", Kind: "k", Host: "mx03",
		Learned: tomb.At.Add(-time.Minute), Expires: tomb.At.Add(time.Hour)}
	if a.f.apply(stale, false) {
		t.Error("a copy of the forgotten block was applied")
	}
}

// Redis down: both hosts keep what they know, say so once, count the
// block they could not share; when Redis comes back (empty) what each
// learned meanwhile reaches the other within 5 seconds.
func TestOutage(t *testing.T) {
	r := fleettest.Start(t)
	a, b := newHost(t, r, "mx01", nil), newHost(t, r, "mx02", nil)
	a.refuse("before.example", "192.0.2.5")
	testutil.EventuallyWithin(t, time.Second, "mx02 knows the block", func() bool { return b.has("before.example") })

	r.Stop()
	testutil.EventuallyWithin(t, 5*time.Second, "both notice", func() bool { return !a.f.Connected() && !b.f.Connected() })
	a.refuse("during.example", "192.0.2.5")
	b.refuse("other.example", "192.0.2.6")
	// (>= 1: a block in flight when Redis stopped may be counted too)
	testutil.EventuallyWithin(t, 5*time.Second, "the unshared block is counted", func() bool { return a.f.PublishFailures() >= 1 })
	testutil.Eventually(t, "several reconnection attempts fail", func() bool {
		return a.logs.FilterMessageSnippet("still unreachable").Len() >= 3 && b.logs.FilterMessageSnippet("still unreachable").Len() >= 3
	})
	if !b.has("before.example") || !a.has("before.example") {
		t.Error("a block was lost while Redis was down")
	}

	r.Restart()
	back := time.Now()
	testutil.EventuallyWithin(t, 5*time.Second, "mx02 gets what mx01 learned during the outage", func() bool { return b.has("during.example") })
	testutil.EventuallyWithin(t, 5*time.Second, "mx01 gets what mx02 learned during the outage", func() bool { return a.has("other.example") })
	t.Logf("in step %s after Redis came back", time.Since(back))
	testutil.EventuallyWithin(t, 5*time.Second, "Redis holds the blocks again", func() bool {
		l, _ := a.f.Blocks(context.Background(), time.Now())
		return len(l) == 3
	})
	for _, h := range []*host{a, b} {
		if n := h.logs.FilterMessageSnippet("Redis unreachable").Len(); n != 1 {
			t.Errorf("%s logged the outage %d times, want once", h.name, n)
		}
		if n := h.logs.FilterMessageSnippet("answers again").Len(); n != 1 {
			t.Errorf("%s logged the recovery %d times, want once", h.name, n)
		}
	}
}

// share = "own": a host applies another host's block only when the
// refusal quoted one of its own addresses.
func TestShareOwn(t *testing.T) {
	r := fleettest.Start(t)
	a := newHost(t, r, "mx01", nil)
	b := newHost(t, r, "mx02", func(o *Options) {
		o.OwnOnly, o.Own = true, []netip.Addr{netip.MustParseAddr("192.0.2.6")}
	})
	a.refuse("theirs.example", "192.0.2.5")
	a.refuse("ours.example", "192.0.2.6")
	testutil.EventuallyWithin(t, time.Second, "mx02 applies the block of its address", func() bool { return b.has("ours.example") })
	if b.has("theirs.example") {
		t.Error("mx02 applied a block of mx01's address")
	}
}

// The URL says which client: single server, Sentinel, Cluster; a bad URL
// is refused without quoting its password.
func TestOpen(t *testing.T) {
	for _, tc := range []struct {
		url, want string
	}{
		{"redis://u:secret@10.0.0.5:6379/2", "*redis.Client"},
		{"rediss://10.0.0.5/0", "*redis.Client"},
		{"redis://10.0.0.5:26379/0?master_name=mymaster&addr=10.0.0.6:26379", "*redis.Client"},
		{"redis://10.0.0.5:7000?addr=10.0.0.6:7000", "*redis.ClusterClient"},
		{"redis://10.0.0.5:7000?cluster=true", "*redis.ClusterClient"},
		{"http://u:secret@10.0.0.5/", "error"},
		{"redis://u:secret@10.0.0.5/?bogus=1", "error"},
		{"redis://u:secret@10.0.0.5/x y", "error"},
	} {
		c, err := Open(tc.url, "", "mx01")
		got := "error"
		if err == nil {
			got = fmt.Sprintf("%T", c.client)
			if tc.url[len(tc.url)-1] == '2' && !strings.HasSuffix(c.channel, ":2") {
				t.Errorf("%s: channel %s, want one of database 2", tc.url, c.channel)
			}
			c.Close()
		} else if strings.Contains(err.Error(), "secret") {
			t.Errorf("%s: the error quotes the password: %v", tc.url, err)
		}
		if got != tc.want {
			t.Errorf("%s: %s (%v), want %s", tc.url, got, err, tc.want)
		}
	}
}

// Through a real Sentinel (redis_url with master_name), as through a
// single server: a block is shared and the limits count together.
func TestSentinel(t *testing.T) {
	r := fleettest.Start(t)
	s := fleettest.StartSentinel(t, r)
	viaSentinel := func(o *Options) { o.URL = s.URL() }
	a, b := newHost(t, r, "mx01", viaSentinel), newHost(t, r, "mx02", viaSentinel)
	a.refuse("sentinel.example", "192.0.2.5")
	testutil.EventuallyWithin(t, 2*time.Second, "mx02 applies mx01's block through the Sentinel's master", func() bool { return b.has("sentinel.example") })
	if got := r.Do("EXISTS", blockKey("sentinel.example", "mx01")); got != "1" {
		t.Errorf("the block is not on the master the Sentinel names: EXISTS = %q", got)
	}
	now := time.Unix(1_800_000_000, 0)
	ca, cb := NewCounters(a.f.Conn, limits.NewMemory(), zaptest.NewLogger(t)), NewCounters(b.f.Conn, limits.NewMemory(), zaptest.NewLogger(t))
	if _, ok := ca.Take("limit0|dave", 2, 3, time.Hour, now); !ok {
		t.Fatal("mx01 Take 2 of 3 refused")
	}
	if c, ok := cb.Take("limit0|dave", 2, 3, time.Hour, now); ok || c != 4 {
		t.Errorf("mx02 Take 2 after mx01's 2 = %d, %v; want 4, false", c, ok)
	}
}

// TestMain gives go-redis's process-wide logger (set once, by the first
// Fleet or Counters) a logger that outlives every test: go-redis logs
// from its pool's goroutines, which may run after a test has ended, and a
// test's logger panics then.
func TestMain(m *testing.M) {
	quietRedis(zap.NewNop())
	os.Exit(m.Run())
}

// Through a real three-master Cluster: blocks (keys spread over the
// masters, found by the scan of every master, events by PUBLISH) and the
// limits' counters, whose scripts touch one key each.
func TestCluster(t *testing.T) {
	c := fleettest.StartCluster(t)
	r := fleettest.Start(t) // newHost's signature; the hosts use the cluster
	viaCluster := func(o *Options) { o.URL = c.URL() }
	a, b := newHost(t, r, "mx01", viaCluster), newHost(t, r, "mx02", viaCluster)
	doms := []string{"c1.example", "c2.example", "c3.example", "c4.example", "c5.example", "c6.example"}
	for _, d := range doms {
		a.refuse(d, "192.0.2.5")
	}
	testutil.EventuallyWithin(t, 3*time.Second, "mx02 applies mx01's blocks through the cluster", func() bool {
		for _, d := range doms {
			if !b.has(d) {
				return false
			}
		}
		return true
	})
	list, err := b.f.Blocks(context.Background(), time.Now())
	if err != nil || len(list) != len(doms) {
		t.Errorf("fleet blocks over the cluster: %d of %d, %v", len(list), len(doms), err)
	}
	now := time.Unix(1_800_000_000, 0)
	ca, cb := NewCounters(a.f.Conn, limits.NewMemory(), zaptest.NewLogger(t)), NewCounters(b.f.Conn, limits.NewMemory(), zaptest.NewLogger(t))
	for _, user := range []string{"erin", "frank", "grace"} {
		key := "limit0|" + user
		if _, ok := ca.Take(key, 2, 3, time.Hour, now); !ok {
			t.Fatalf("mx01 Take 2 of 3 for %s refused", user)
		}
		if cnt, ok := cb.Take(key, 2, 3, time.Hour, now); ok || cnt != 4 {
			t.Errorf("mx02 Take 2 for %s after mx01's 2 = %d, %v; want 4, false", user, cnt, ok)
		}
		cb.Reset(key)
		if cnt := ca.Count(key, time.Hour, now); cnt != 0 {
			t.Errorf("%s: Count after mx02's Reset = %d, want 0", user, cnt)
		}
	}
	if ca.Alone() || cb.Alone() {
		t.Error("the counters fell back to counting alone")
	}
}
