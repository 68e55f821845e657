package limits

import (
	"testing"
	"time"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// An event is counted for at least the window and leaves it at most one
// slot (window/Slots) later — whatever its place inside its slot.
func TestWindowEdges(t *testing.T) {
	const w = time.Hour
	slot := w / Slots
	for _, at := range []time.Duration{0, time.Nanosecond, slot / 2, slot - time.Nanosecond, 17*slot + 3*time.Second} {
		ev := t0.Add(at)
		for _, tc := range []struct {
			after time.Duration
			want  int
		}{
			{0, 1},
			{w / 2, 1},
			{w - time.Nanosecond, 1}, // the last instant inside the window
			{w + slot, 0},            // one slot late at most
			{2 * w, 0},
			{100 * w, 0},
		} {
			m := NewMemory()
			if _, ok := m.Take("k", 1, 10, w, ev); !ok {
				t.Fatal("refused under the limit")
			}
			if got := m.Count("k", w, ev.Add(tc.after)); got != tc.want {
				t.Errorf("event at +%v, counted %v later: got %d, want %d", at, tc.after, got, tc.want)
			}
		}
	}
}

// The window slides: counts leave it one by one as they age, not all at
// once at a bucket boundary.
func TestWindowSlides(t *testing.T) {
	const w = time.Hour
	m := NewMemory()
	for i := range 6 { // one every 10 minutes
		if _, ok := m.Take("k", 1, 6, w, t0.Add(time.Duration(i)*10*time.Minute)); !ok {
			t.Fatalf("event %d refused", i)
		}
	}
	if c, ok := m.Take("k", 1, 6, w, t0.Add(55*time.Minute)); ok || c != 7 {
		t.Fatalf("7th within the hour: got (%d, %v), want (7, false)", c, ok)
	}
	// At 1h01m the first event (at 0) has left; the others have not.
	if got := m.Count("k", w, t0.Add(61*time.Minute+time.Second)); got != 5 {
		t.Errorf("at 1h01m: got %d, want 5", got)
	}
	if c, ok := m.Take("k", 1, 6, w, t0.Add(61*time.Minute+time.Second)); !ok || c != 6 {
		t.Errorf("after the first aged out: got (%d, %v), want (6, true)", c, ok)
	}
	if got := m.Count("k", w, t0.Add(3*time.Hour)); got != 0 {
		t.Errorf("hours later: got %d, want 0", got)
	}
}

// Take counts all n or none; Give returns what was taken.
func TestTakeAndGive(t *testing.T) {
	m := NewMemory()
	w := time.Hour
	if c, ok := m.Take("k", 8, 10, w, t0); !ok || c != 8 {
		t.Fatalf("got (%d, %v)", c, ok)
	}
	if c, ok := m.Take("k", 3, 10, w, t0); ok || c != 11 {
		t.Fatalf("over: got (%d, %v), want (11, false)", c, ok)
	}
	if got := m.Count("k", w, t0); got != 8 {
		t.Fatalf("a refused take counted: %d", got)
	}
	m.Give("k", 5, w, t0)
	if got := m.Count("k", w, t0.Add(time.Minute)); got != 3 {
		t.Fatalf("after giving back 5: %d, want 3", got)
	}
	m.Give("k", 50, w, t0) // more than there is: counts stay whole
	if got := m.Count("k", w, t0.Add(time.Minute)); got != 0 {
		t.Fatalf("after giving back too much: %d, want 0", got)
	}
	m.Give("gone", 1, w, t0) // nothing there: no window made
	if got := m.Count("gone", w, t0); got != 0 {
		t.Fatalf("give on an unknown key: %d", got)
	}
}

func TestSetSlides(t *testing.T) {
	m := NewMemory()
	w := time.Hour
	for i, member := range []string{"a", "b", "a", "c"} {
		n, isNew := m.See("k", member, w, t0.Add(time.Duration(i)*time.Minute))
		if want := map[int]int{0: 1, 1: 2, 2: 2, 3: 3}[i]; n != want {
			t.Errorf("See %d (%s): %d distinct, want %d", i, member, n, want)
		}
		if wantNew := i != 2; isNew != wantNew {
			t.Errorf("See %d (%s): new=%v", i, member, isNew)
		}
	}
	// b was last seen at 1m: gone at 1h01m; a (2m) and c (3m) remain.
	if n, _ := m.See("k", "c", w, t0.Add(61*time.Minute)); n != 2 {
		t.Errorf("after b aged out: %d distinct, want 2", n)
	}
	for i := range MaxMembers + 10 {
		m.See("big", string(rune('A'+i)), w, t0)
	}
	if n, _ := m.See("big", "x", w, t0); n > MaxMembers {
		t.Errorf("a set grew to %d members, bound is %d", n, MaxMembers)
	}
}

func TestOnce(t *testing.T) {
	m := NewMemory()
	if !m.Once("k", time.Hour, t0) || m.Once("k", time.Hour, t0.Add(59*time.Minute)) {
		t.Fatal("Once should be true once per window")
	}
	if !m.Once("k", time.Hour, t0.Add(61*time.Minute)) {
		t.Fatal("Once should be true again in the next window")
	}
	m.Reset("k")
	if !m.Once("k", time.Hour, t0.Add(62*time.Minute)) {
		t.Fatal("Reset should clear the mark")
	}
}

// Memory stays bounded per key: a flood of events in one window does not
// grow it.
func BenchmarkTake(b *testing.B) {
	m := NewMemory()
	now := t0
	for i := 0; b.Loop(); i++ {
		m.Take("sasl_username/*/1h0m0s|sasl_username:alice", 1, 1<<30, time.Hour, now.Add(time.Duration(i)*time.Millisecond))
	}
}
