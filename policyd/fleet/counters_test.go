package fleet

import (
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"

	"github.com/mxdetour/mxdetour/internal/testutil"
	"github.com/mxdetour/mxdetour/policyd/fleet/fleettest"
	"github.com/mxdetour/mxdetour/policyd/limits"
)

func newCounters(t *testing.T, r *fleettest.Redis, name string) (*Counters, *observer.ObservedLogs) {
	t.Helper()
	conn, err := Open(r.URL(), "", name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	core, logs := observer.New(zapcore.InfoLevel)
	log := zap.New(zapcore.NewTee(core, zaptest.NewLogger(t).Core())).Named(name)
	return NewCounters(conn, limits.NewMemory(), log), logs
}

// Two hosts on one Redis meet one limit: what mx01 takes counts on mx02,
// a give-back and a reset on one are seen by the other, a set of client
// networks and an alert mark are shared.
func TestCountersShared(t *testing.T) {
	r := fleettest.Start(t)
	a, _ := newCounters(t, r, "mx01")
	b, _ := newCounters(t, r, "mx02")
	now := time.Unix(1_800_000_000, 0)
	const key, w = "limit0|alice", time.Hour

	if c, ok := a.Take(key, 3, 5, w, now); !ok || c != 3 {
		t.Fatalf("mx01 Take 3 = %d, %v; want 3, true", c, ok)
	}
	if c, ok := b.Take(key, 3, 5, w, now.Add(time.Minute)); ok || c != 6 {
		t.Fatalf("mx02 Take 3 after mx01's 3 = %d, %v; want 6, false (one limit for the fleet)", c, ok)
	}
	if c, ok := b.Take(key, 2, 5, w, now.Add(time.Minute)); !ok || c != 5 {
		t.Fatalf("mx02 Take 2 = %d, %v; want 5, true", c, ok)
	}
	a.Give(key, 1, w, now)
	if c := b.Count(key, w, now.Add(2*time.Minute)); c != 4 {
		t.Errorf("mx02 Count after mx01 gave 1 back = %d, want 4", c)
	}
	// mx01's 2 leave the window an hour (and at most a slot) later; mx02's
	// 2, taken a minute later, stay.
	if c := a.Count(key, w, now.Add(w+w/limits.Slots)); c != 2 {
		t.Errorf("Count once mx01's recipients left the window = %d, want 2", c)
	}

	const set = "compromise|networks|alice"
	for i, tc := range []struct {
		h      *Counters
		member string
		n      int
		isNew  bool
	}{{a, "192.0.2.0/24", 1, true}, {b, "198.51.100.0/24", 2, true}, {a, "198.51.100.0/24", 2, false}} {
		if n, isNew := tc.h.See(set, tc.member, w, now.Add(time.Duration(i)*time.Second)); n != tc.n || isNew != tc.isNew {
			t.Errorf("See #%d %s = %d, %v; want %d, %v", i, tc.member, n, isNew, tc.n, tc.isNew)
		}
	}
	if !a.Once(key, w, now) || b.Once(key, w, now) {
		t.Error("Once: want true on the first host only (one alert per key and window for the fleet)")
	}

	b.Reset(key)
	if c := a.Count(key, w, now.Add(2*time.Minute)); c != 0 {
		t.Errorf("mx01 Count after mx02's Reset = %d, want 0", c)
	}
	if !a.Once(key, w, now) {
		t.Error("Once after Reset: want true")
	}
}

// The Redis windows are limits.Memory's: the same random run of takes and
// give-backs over two hours, against both, gives the same answers, at
// the edges of the window included.
func TestCountersAgreeWithMemory(t *testing.T) {
	r := fleettest.Start(t)
	c, _ := newCounters(t, r, "mx01")
	m := limits.NewMemory()
	rng := rand.New(rand.NewPCG(1, 2))
	now := time.Unix(1_800_000_000, 0)
	const key, w, most = "limit1|bob", 10 * time.Minute, 20
	for i := range 600 {
		now = now.Add(time.Duration(rng.IntN(int(25 * time.Second))))
		n := 1 + rng.IntN(4)
		cr, okr := c.Take(key, n, most, w, now)
		cm, okm := m.Take(key, n, most, w, now)
		if cr != cm || okr != okm {
			t.Fatalf("step %d at +%s: Redis Take = %d, %v; Memory Take = %d, %v", i, now.Sub(time.Unix(1_800_000_000, 0)), cr, okr, cm, okm)
		}
		if okr && rng.IntN(5) == 0 {
			c.Give(key, n, w, now)
			m.Give(key, n, w, now)
		}
	}
	if c.Alone() {
		t.Fatal("counted alone although Redis answered")
	}
}

// With Redis gone the host counts alone, from what it counted while Redis
// answered, within the call timeout and with one log line; when Redis
// comes back (empty) what the host counted alone is written to it and the
// fleet counts together again.
func TestCountersRedisDown(t *testing.T) {
	r := fleettest.Start(t)
	a, logs := newCounters(t, r, "mx01")
	a.Retry = 200 * time.Millisecond
	now := time.Unix(1_800_000_000, 0)
	const key, w = "limit0|carol", time.Hour
	if _, ok := a.Take(key, 3, 5, w, now); !ok {
		t.Fatal("Take 3 of 5 refused")
	}
	r.Stop()
	start := time.Now()
	if c, ok := a.Take(key, 2, 5, w, now); !ok || c != 5 {
		t.Errorf("Take 2 with Redis down = %d, %v; want 5, true (this host's 3 kept)", c, ok)
	}
	if c, ok := a.Take(key, 1, 5, w, now); ok || c != 6 {
		t.Errorf("Take 1 more with Redis down = %d, %v; want 6, false", c, ok)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("two takes with Redis down took %s", d)
	}
	if !a.Alone() {
		t.Error("Alone() = false with Redis down")
	}
	if n := logs.FilterMessageSnippet("counts alone").Len(); n != 1 {
		t.Errorf("%d 'counts alone' lines, want 1", n)
	}

	r.Restart()
	testutil.EventuallyWithin(t, 5*time.Second, "counting together again after Redis came back", func() bool {
		a.Count(key, w, now)
		return !a.Alone()
	})
	// The Redis that came back is empty: mx01 writes back all it counted,
	// the 3 before the outage and the 2 during it.
	b, _ := newCounters(t, r, "mx02")
	testutil.EventuallyWithin(t, 5*time.Second, "mx02 counting carol's 5 (all mx01 counted)", func() bool { return b.Count(key, w, now) == 5 })
	if _, ok := b.Take(key, 1, 6, w, now); !ok {
		t.Error("mx02 Take 1 of 6 after mx01's 5 refused")
	}
	if c, ok := a.Take(key, 1, 6, w, now); ok || c != 7 {
		t.Errorf("mx01 Take 1 after 6 = %d, %v; want 7, false (counted together again)", c, ok)
	}
	if logs.FilterMessageSnippet("answers again").Len() != 1 {
		t.Error("no 'answers again' line")
	}
	// The write-back logs when done (and must before the test ends).
	testutil.EventuallyWithin(t, 5*time.Second, "a line for what was written back", func() bool {
		return logs.FilterMessageSnippet("Redis had lost it) to Redis").Len() == 1
	})
}

// A Redis that restarts empty between two calls (none fails) has lost
// every count: each host finds its mark gone at its next look and writes
// back all it counted itself, so the fleet's counts are whole again.
// Redis with its data kept is left alone.
func TestCountersRedisLostData(t *testing.T) {
	r := fleettest.Start(t)
	a, logs := newCounters(t, r, "mx01")
	b, _ := newCounters(t, r, "mx02")
	now := time.Unix(1_800_000_000, 0)
	clock := testutil.NewClock(now)
	a.now, b.now = clock.Now, clock.Now
	const key, w = "limit0|dave", time.Hour
	a.Take(key, 3, 100, w, now)
	b.Take(key, 2, 100, w, now)
	if c := a.Count(key, w, now); c != 5 {
		t.Fatalf("count %d, want 5", c)
	}
	clock.Advance(a.Check)
	a.Count(key, w, now) // looks: its mark is there
	b.Count(key, w, now)
	repaid(t, a)
	repaid(t, b)
	if c := a.Count(key, w, now); c != 5 {
		t.Fatalf("count %d with Redis intact, want 5 (nothing written twice)", c)
	}
	r.Stop()
	r.Restart()
	testutil.EventuallyWithin(t, 5*time.Second, "both hosts' counts back in Redis", func() bool {
		clock.Advance(a.Check) // each host looks for its mark again (and past Retry, asks a Redis it lost)
		a.Count(key, w, now)
		b.Count(key, w, now)
		return a.Count(key, w, now) == 5
	})
	repaid(t, a)
	repaid(t, b)
	if c := b.Count(key, w, now); c != 5 {
		t.Errorf("count %d after both wrote back, want 5", c)
	}
	testutil.EventuallyWithin(t, 5*time.Second, "a line for what was written back", func() bool {
		return logs.FilterMessageSnippet("Redis had lost it) to Redis").Len() == 1
	})
}

// A Redis that accepts and never answers (hung, or a black-holed route)
// costs one call Timeout per Retry, not every request: while one call
// asks whether Redis is back, the others count alone at once.
func TestCountersRedisHangs(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var accepted atomic.Int32
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			defer c.Close() // held open, never answered
		}
	}()
	conn, err := Open("redis://"+ln.Addr().String()+"/0", "", "mx01")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := NewCounters(conn, limits.NewMemory(), zaptest.NewLogger(t))
	c.Timeout, c.Retry = 100*time.Millisecond, 300*time.Millisecond
	now := time.Unix(1_800_000_000, 0)
	first := time.Now()
	_, ok := c.Take("limit0|hal", 1, 1000, time.Hour, now)
	// The call's deadline bounds it, not go-redis's 2 s read timeout
	// (ContextTimeoutEnabled).
	if took := time.Since(first); took > time.Second {
		t.Errorf("the first Take against a hung Redis took %s, want about Timeout (100 ms)", took)
	}
	if !ok || !c.Alone() {
		t.Fatalf("first Take against a hung Redis: taken %v, alone %v; want counted alone", ok, c.Alone())
	}
	before := accepted.Load()
	var wg sync.WaitGroup
	end := time.Now().Add(time.Second)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(end) {
				c.Take("limit0|hal", 1, 1<<30, time.Hour, now)
			}
		}()
	}
	wg.Wait()
	// About one probe per Retry (1 s / 300 ms), each on a new connection
	// (go-redis drops one that timed out): 4. Probes without the pause
	// would make 10, one Timeout after another. Counted at the server, not
	// by timing calls, which a loaded machine stretches.
	if n := accepted.Load() - before; n > 5 {
		t.Errorf("%d connections to the hung Redis within a second, want about one per retry (<= 5)", n)
	}
	if cnt := c.Memory.Count("limit0|hal", time.Hour, now); cnt < 100 {
		t.Errorf("counted alone: %d, want every Take counted", cnt)
	}
}

// repaid waits until c's write-back, if one runs, is done.
func repaid(t *testing.T, c *Counters) {
	t.Helper()
	testutil.Eventually(t, "the write-back done", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return !c.repaying
	})
}
