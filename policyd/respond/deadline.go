package respond

import (
	"context"
	"sync"
	"time"
)

// deadline is a context that ends at a point in time, with its timer made
// only when someone waits on Done: a decision answered from the cache
// never waits, so it costs no timer. context.WithTimeout would arm one for
// every request.
type deadline struct {
	from  time.Time // when the decision started; zero before
	at    time.Time
	mu    sync.Mutex
	done  chan struct{}
	timer *time.Timer
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
		if wait := time.Until(d.at); wait <= 0 {
			close(d.done)
		} else {
			ch := d.done
			d.timer = time.AfterFunc(wait, func() { close(ch) })
		}
	}
	return d.done
}

func (d *deadline) Err() error {
	if time.Now().Before(d.at) {
		return nil
	}
	return context.DeadlineExceeded
}

func (d *deadline) Value(any) any { return nil }

// stop releases the timer, if one was made.
func (d *deadline) stop() {
	d.mu.Lock()
	if d.timer != nil {
		d.timer.Stop()
	}
	d.mu.Unlock()
}
