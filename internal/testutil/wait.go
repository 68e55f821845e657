package testutil

import (
	"sync"
	"testing"
	"time"
)

// Within is how long Eventually waits: generous, for a loaded CI machine
// running -race; a condition that holds returns at once.
const Within = 10 * time.Second

// Eventually polls cond until it holds, failing the test when it has not
// within Within. Tests wait on what they need to have happened, not on a
// sleep that guesses how long it takes.
func Eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	EventuallyWithin(t, Within, what, cond)
}

// EventuallyWithin is Eventually with a bound of its own, for a test that
// asserts how soon something happens, or one that waits on a real Postfix.
// It asks again after 5 ms, then less and less often, up to every 100 ms:
// a condition that runs a command (postqueue) is not run in a busy loop.
func EventuallyWithin(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for pause := 5 * time.Millisecond; !cond(); pause = min(2*pause, 100*time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %s", within, what)
		}
		time.Sleep(pause)
	}
}

// Clock is a time a test sets and moves, for code that takes its time
// from a now func() time.Time: pass c.Now. Safe for concurrent use.
type Clock struct {
	mu sync.Mutex
	t  time.Time
}

// NewClock returns a Clock stopped at t.
func NewClock(t time.Time) *Clock { return &Clock{t: t} }

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Advance moves the clock d forward.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// Set puts the clock at t.
func (c *Clock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}
