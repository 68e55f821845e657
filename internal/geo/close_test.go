package geo

import (
	"context"
	"errors"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// tracked is a source that records its Close and any use after it.
type tracked struct {
	closes, lateUses atomic.Int64
	gate             chan struct{} // when set, Country waits for it
}

func (s *tracked) Country(context.Context, netip.Addr) (string, error) {
	if s.gate != nil {
		<-s.gate
	}
	if s.closes.Load() > 0 {
		s.lateUses.Add(1)
	}
	return "RU", nil
}

func (s *tracked) Close() error { s.closes.Add(1); return nil }

var ru = netip.MustParseAddr("192.0.2.1")

// TestBlockerClose: the source is closed exactly once, never under a
// Check in flight, and a Check after Close does not touch it.
func TestBlockerClose(t *testing.T) {
	ctx := context.Background()
	t.Run("idle", func(t *testing.T) {
		src := &tracked{}
		b := NewBlocker(src, blockRU)
		if blocked, _, _ := check(b, ctx, ru); !blocked {
			t.Error("not blocked before Close")
		}
		b.Close()
		b.Close()
		if n := src.closes.Load(); n != 1 {
			t.Errorf("%d Closes, want 1", n)
		}
		if _, _, err := check(b, ctx, ru); !errors.Is(err, ErrClosed) {
			t.Errorf("Check after Close: %v, want ErrClosed", err)
		}
		if src.lateUses.Load() != 0 {
			t.Error("the source was used after Close")
		}
	})
	t.Run("check in flight", func(t *testing.T) {
		src := &tracked{gate: make(chan struct{})}
		b := NewBlocker(src, blockRU)
		done := make(chan bool)
		go func() { blocked, _, _ := check(b, ctx, ru); done <- blocked }()
		for b.sh.refs.Load() != 2 { // the Check holds the source
			runtime.Gosched()
			select {
			case <-done:
				t.Fatal("Check returned without its source")
			default:
			}
		}
		b.Close()
		if src.closes.Load() != 0 {
			t.Fatal("closed under a Check in flight")
		}
		close(src.gate)
		if !<-done {
			t.Error("the Check in flight did not get its answer")
		}
		if src.closes.Load() != 1 || src.lateUses.Load() != 0 {
			t.Errorf("after the last Check: %d Closes, %d late uses", src.closes.Load(), src.lateUses.Load())
		}
	})
	t.Run("reuse", func(t *testing.T) {
		src := &tracked{}
		old := NewBlocker(src, blockRU)
		next := old.Reuse(Policy{Rules: []Rule{{Countries: []string{"CN"}}}})
		old.Close()
		if src.closes.Load() != 0 {
			t.Fatal("a source still in use by the new Blocker was closed")
		}
		if blocked, cc, err := check(next, ctx, ru); blocked || cc != "RU" || err != nil {
			t.Errorf("new rules: %v %q %v, want RU not blocked", blocked, cc, err)
		}
		next.Close()
		if src.closes.Load() != 1 {
			t.Error("not closed with its last Blocker")
		}
		if old.Reuse(Policy{}).HasSource() {
			t.Error("a closed Blocker's source reused")
		}
	})
	t.Run("no source", func(t *testing.T) {
		b := NewBlocker(nil, blockRU)
		b.Close()
		if b.Reuse(Policy{}).HasSource() || b.HasSource() {
			t.Error("a source from nowhere")
		}
	})
}

// TestBlockerCloseRace: Checks racing a Close never use a closed source
// (go test -race also checks the counting).
func TestBlockerCloseRace(t *testing.T) {
	for range 200 {
		src := &tracked{}
		b := NewBlocker(src, blockRU)
		var wg sync.WaitGroup
		for range 4 {
			wg.Go(func() {
				for range 20 {
					if _, _, err := check(b, context.Background(), ru); errors.Is(err, ErrClosed) {
						return
					}
				}
			})
		}
		b.Close()
		wg.Wait()
		if src.closes.Load() != 1 || src.lateUses.Load() != 0 {
			t.Fatalf("%d Closes, %d uses after Close", src.closes.Load(), src.lateUses.Load())
		}
	}
}

// TestMMDBClosedByBlocker: a real database behind a Blocker is unmapped
// when the Blocker closes.
func TestMMDBClosedByBlocker(t *testing.T) {
	m, err := OpenMMDB(writeMMDB(t))
	if err != nil {
		t.Fatal(err)
	}
	b := NewBlocker(m, blockRU)
	if blocked, _, err := check(b, context.Background(), ru); !blocked || err != nil {
		t.Fatalf("RU address: %v %v", blocked, err)
	}
	b.Close()
	if _, err := m.Country(context.Background(), ru); err == nil || !strings.Contains(err.Error(), "closed database") {
		t.Errorf("the database is still open after the Blocker closed: %v", err)
	}
}

var blockRU = Policy{Rules: []Rule{{Name: "block_countries", Countries: []string{"RU"}}}}

// check is Check as the tests of the country block before rules read it.
func check(b *Blocker, ctx context.Context, ip netip.Addr) (blocked bool, cc string, err error) {
	v, err := b.Check(ctx, ip)
	return v.Refuse(), v.Country, err
}

// TestGuardedClose: a Guarded source is closed exactly once, not under a
// lookup in flight, and a lookup after Close answers ErrClosed without
// touching it.
func TestGuardedClose(t *testing.T) {
	src := &tracked{gate: make(chan struct{})}
	in := make(chan struct{})
	g := Guard(entering{src, in})
	done := make(chan struct{})
	go func() {
		defer close(done)
		if cc, err := g.Country(context.Background(), ru); cc != "RU" || err != nil {
			t.Errorf("in flight: %q, %v", cc, err)
		}
	}()
	<-in // the lookup is in the source
	g.Close()
	g.Close()
	if n := src.closes.Load(); n != 0 {
		t.Errorf("closed %d times under a lookup in flight", n)
	}
	close(src.gate)
	<-done
	if n := src.closes.Load(); n != 1 {
		t.Errorf("closed %d times, want once", n)
	}
	if _, err := g.Country(context.Background(), ru); !errors.Is(err, ErrClosed) {
		t.Errorf("after Close: %v, want ErrClosed", err)
	}
	if n := src.lateUses.Load(); n != 0 {
		t.Errorf("%d lookups after Close", n)
	}
}

// entering is a source that says when a lookup has entered it.
type entering struct {
	*tracked
	in chan struct{}
}

func (e entering) Country(ctx context.Context, ip netip.Addr) (string, error) {
	e.in <- struct{}{}
	return e.tracked.Country(ctx, ip)
}
