package respond

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// deadline is a context that ends at a point in time, with its timer made
// only when someone waits on Done: a decision answered from the cache
// never waits, so it costs no timer. context.WithTimeout would arm one for
// every request. stop ends it for good, as a CancelFunc does: one that
// is kept past its decision reads as cancelled.
type deadline struct {
	from    time.Time // when the decision started; zero before
	at      time.Time
	mu      sync.Mutex
	done    chan struct{}
	timer   *time.Timer
	stopped atomic.Bool
}

// start makes a zero deadline end timeout from now, and returns now.
func (d *deadline) start(timeout time.Duration) time.Time {
	now := time.Now()
	d.from, d.at = now, now.Add(timeout)
	return now
}

func (d *deadline) Deadline() (time.Time, bool) { return d.at, true }

func (d *deadline) Done() <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.done == nil {
		d.done = make(chan struct{})
		if wait := time.Until(d.at); wait <= 0 || d.stopped.Load() {
			close(d.done)
		} else {
			ch := d.done
			d.timer = time.AfterFunc(wait, func() { close(ch) })
		}
	}
	return d.done
}

func (d *deadline) Err() error {
	switch {
	case d.stopped.Load():
		return context.Canceled
	case time.Now().Before(d.at):
		return nil
	}
	return context.DeadlineExceeded
}

func (d *deadline) Value(any) any { return nil }

// stop ends d: the timer, if one was made, is released and Done closed.
func (d *deadline) stop() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.stopped.CompareAndSwap(false, true) {
		return
	}
	if d.timer != nil && d.timer.Stop() {
		close(d.done) // the timer would have; it will not now
	} else if d.done == nil {
		d.done = closed
	}
}

// closed is the Done of a deadline that ended before anyone waited.
var closed = func() chan struct{} { c := make(chan struct{}); close(c); return c }()
