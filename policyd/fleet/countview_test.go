package fleet

import (
	"testing"
	"time"

	"github.com/mxdetour/mxdetour/policyd/fleet/fleettest"
	"github.com/mxdetour/mxdetour/policyd/limits"
)

// CountView reads what the hosts counted, as Counters would count it,
// and leaves no mark of its own: a host whose mark is gone still writes
// its counts back.
func TestCountView(t *testing.T) {
	r := fleettest.Start(t)
	a, _ := newCounters(t, r, "mx01")
	now := time.Unix(1_800_000_000, 0)
	const key, w = "limit0|local_user:alice", time.Hour
	a.Take(key, 3, 100, w, now)
	a.Take(key, 2, 100, w, now.Add(30*time.Minute))
	conn, err := Open(r.URL(), "", "mx01")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	v := NewCountView(conn)
	for _, tc := range []struct {
		at   time.Time
		w    time.Duration
		want int
	}{
		{now.Add(31 * time.Minute), w, 5},
		{now.Add(w + w/limits.Slots), w, 2},   // the first 3 left the window
		{now.Add(31 * time.Minute), 2 * w, 0}, // another window: another counter
	} {
		if got, want := v.Count(key, tc.w, tc.at), a.Count(key, tc.w, tc.at); got != tc.want || got != want {
			t.Errorf("Count at %s (window %s) = %d; Counters say %d, want %d", tc.at.Sub(now), tc.w, got, want, tc.want)
		}
	}
	if v.Err() != nil {
		t.Fatal(v.Err())
	}
	r.Do("DEL", "mxdetour:limit:host:mx01")
	v.Count(key, w, now)
	if got := r.Do("EXISTS", "mxdetour:limit:host:mx01"); got != "0" {
		t.Errorf("the view set mx01's mark: EXISTS = %s", got)
	}
	r.Stop()
	if v.Count(key, w, now); v.Err() == nil {
		t.Error("no error with Redis stopped")
	}
}
