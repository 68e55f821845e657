package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	sd "github.com/coreos/go-systemd/v22/daemon"
	"go.uber.org/zap"
)

// maxProbeTime bounds a health probe however long WatchdogSec= is.
const maxProbeTime = 5 * time.Second

// watchdog pings systemd every half WatchdogSec= while the daemon is
// healthy (systemd.service(5) WatchdogSec=, sd_watchdog_enabled(3)). When
// it is not, the pings stop, and systemd kills and restarts the daemon
// once WatchdogSec= has passed since the last one.
func (r *runner) watchdog(ctx context.Context) {
	interval, err := sd.SdWatchdogEnabled(false)
	if err != nil {
		r.log.Warn("watchdog: WATCHDOG_USEC unusable; no pings", zap.Error(err))
		return
	}
	if interval <= 0 {
		return
	}
	every := interval / 2
	timeout := min(every/2, maxProbeTime)
	r.log.Info("watchdog", zap.Duration("interval", interval), zap.Duration("probe_timeout", timeout))
	t := time.NewTicker(every)
	defer t.Stop()
	failing := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := r.healthy(ctx, timeout); err != nil {
			if ctx.Err() != nil {
				return
			}
			r.log.Error("health probe failed: no watchdog ping; systemd restarts the daemon if this lasts", zap.Error(err))
			failing = true
			continue
		}
		if failing {
			r.log.Info("health probe passes again")
			failing = false
		}
		r.notify("WATCHDOG=1")
	}
}

// healthy checks that every accept loop came back to Accept within
// timeout of its last connection, then runs the daemon's probe with that
// deadline. A probe still running from an earlier check fails the check
// at once: probes stuck on a deadlock do not pile up.
func (r *runner) healthy(ctx context.Context, timeout time.Duration) error {
	for _, s := range r.served {
		if d := s.ln.stuck(timeout); d > 0 {
			return fmt.Errorf("the accept loop of %s on %s has not come back for %v", s.name, s.addr, d.Round(time.Millisecond))
		}
	}
	if r.o.Health == nil {
		return nil
	}
	if !r.probing.CompareAndSwap(false, true) {
		return errors.New("the previous health probe has not returned")
	}
	pctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		defer r.probing.Store(false)
		done <- r.call(func() error { return r.o.Health(pctx) })
	}()
	select {
	case err := <-done:
		return err
	case <-pctx.Done():
		return fmt.Errorf("the health probe did not answer within %v", timeout)
	}
}

// watched is a listener that knows whether its server's accept loop is
// waiting in Accept, and since when it is not.
type watched struct {
	net.Listener
	waiting   atomic.Int32 // goroutines in Accept
	left      atomic.Int64 // when Accept last returned (or the listener was taken), Unix ns
	closeOnce sync.Once
	closeErr  error
}

func watch(ln net.Listener) *watched {
	w := &watched{Listener: ln}
	w.left.Store(time.Now().UnixNano())
	return w
}

func (w *watched) Accept() (net.Conn, error) {
	w.waiting.Add(1)
	c, err := w.Listener.Accept()
	w.left.Store(time.Now().UnixNano())
	w.waiting.Add(-1)
	return c, err
}

// Close closes once: both the runner and the server close it at shutdown.
func (w *watched) Close() error {
	w.closeOnce.Do(func() { w.closeErr = w.Listener.Close() })
	return w.closeErr
}

// stuck returns how long no goroutine has been in Accept, when that is
// longer than limit; else 0.
func (w *watched) stuck(limit time.Duration) time.Duration {
	if w.waiting.Load() > 0 {
		return 0
	}
	if d := time.Since(time.Unix(0, w.left.Load())); d > limit {
		return d
	}
	return 0
}
