package route

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mxdetour/mxdetour/internal/lookup"
	"github.com/mxdetour/mxdetour/internal/provider"
)

// countingResolver counts the lookups that reach the resolver.
type countingResolver struct {
	lookup.Resolver
	mx, addr atomic.Int64
}

func (c *countingResolver) MX(ctx context.Context, d string) lookup.Result {
	c.mx.Add(1)
	return c.Resolver.MX(ctx, d)
}

func (c *countingResolver) A(ctx context.Context, n string) lookup.Result {
	c.addr.Add(1)
	return c.Resolver.A(ctx, n)
}

// TestFactsKept: a domain's MX answer and provider are asked once a second
// at most, whatever the requests; the decision is the same from them; a
// reload asks afresh; explaining always asks.
func TestFactsKept(t *testing.T) {
	e, _ := newEngine(t, nil, nil, nil)
	count := &countingResolver{Resolver: e.r}
	e.r = count
	e.Swap(e.st.Load().o) // a classifier asking through count
	now := time.Now()
	e.now = func() time.Time { return now }
	ctx := context.Background()

	first := e.Decide(ctx, "a@vanity.mxd") // by the MX address's network
	for i := range 5 {
		if d := e.Decide(ctx, fmt.Sprintf("b%d@vanity.mxd", i)); shorten(d) != shorten(first) || !d.Cached {
			t.Errorf("from kept facts: %+v, want %+v (cached)", shorten(d), shorten(first))
		}
	}
	if mx, a := count.mx.Load(), count.addr.Load(); mx != 1 || a != 1 {
		t.Errorf("within a second: %d MX and %d A lookups, want 1 and 1", mx, a)
	}
	now = now.Add(factsFor)
	e.Decide(ctx, "c@vanity.mxd")
	if mx := count.mx.Load(); mx != 2 {
		t.Errorf("a second later: %d MX lookups, want 2", mx)
	}
	e.Explain(ctx, "d@vanity.mxd")
	e.Swap(e.st.Load().o)
	e.Decide(ctx, "e@vanity.mxd")
	if mx := count.mx.Load(); mx != 4 {
		t.Errorf("after explain and reload: %d MX lookups, want 4", mx)
	}
}

// TestFactsMemo: only complete answers are kept, never past the MX TTL;
// two domains sharing a slot are both kept; a full table takes new
// domains in place of those that expire first.
func TestFactsMemo(t *testing.T) {
	now := time.Now()
	ok := lookup.Result{Status: lookup.Answer, MX: []lookup.MX{{Host: "mx.a.mxd"}}, TTL: time.Minute}
	for _, tc := range []struct {
		name  string
		mx    lookup.Result
		match provider.Match
		at    time.Duration // asked this long after
		kept  bool
	}{
		{"answer", ok, provider.Match{}, 999 * time.Millisecond, true},
		{"answer, a second later", ok, provider.Match{}, time.Second, false},
		{"no MX records", lookup.Result{Status: lookup.NoData, TTL: time.Minute}, provider.Match{}, 0, true},
		{"short TTL", lookup.Result{Status: lookup.Answer, TTL: 100 * time.Millisecond}, provider.Match{}, 100 * time.Millisecond, false},
		{"stale answer", lookup.Result{Status: lookup.Answer, Stale: true, TTL: 0}, provider.Match{}, 0, false},
		{"lookup failed", lookup.Result{Status: lookup.TempFail, TTL: time.Minute}, provider.Match{}, 0, false},
		{"network unknown", ok, provider.Match{Err: errors.New("timeout")}, 0, false},
	} {
		m := newFactsMemo()
		m.put("a.mxd", tc.mx, tc.match, now)
		if kept := m.get("a.mxd", now.Add(tc.at)) != nil; kept != tc.kept {
			t.Errorf("%s: kept %v, want %v", tc.name, kept, tc.kept)
		}
	}
	m := newFactsMemo()
	m.put("a.mxd", ok, provider.Match{}, now)
	a, _ := m.slots2("a.mxd")
	for i := 0; ; i++ { // find a domain sharing a.mxd's first slot
		other := fmt.Sprintf("d%d.mxd", i)
		if first, second := m.slots2(other); first != a || second == a {
			continue
		}
		m.put(other, ok, provider.Match{}, now)
		kept, got := m.get("a.mxd", now) != nil, m.get(other, now) != nil
		if !kept || !got {
			t.Errorf("%s shares a slot with a.mxd: a.mxd kept %v, %s kept %v", other, kept, other, got)
		}
		break
	}
	// Many more domains than slots: the newest is always kept, and the
	// table keeps as many as it has slots.
	for i := range 3000 {
		d := fmt.Sprintf("n%d.mxd", i)
		m.put(d, ok, provider.Match{}, now.Add(time.Duration(i)*time.Microsecond))
		if m.get(d, now) == nil {
			t.Fatalf("%s not kept right after it was put", d)
		}
	}
	n := 0
	for i := range 3000 {
		if m.get(fmt.Sprintf("n%d.mxd", i), now) != nil {
			n++
		}
	}
	if n > len(m.slots) || n < len(m.slots)*9/10 {
		t.Errorf("%d domains kept in %d slots", n, len(m.slots))
	}
}
