package connserver

import (
	"sync"
	"time"

	"go.uber.org/zap"
)

// limitedWarning logs a recurring event at most once a period: the first
// at once, those that follow within the period as one line at its end,
// with their count. A flood of hostile connections thus costs a few lines,
// and no event goes uncounted.
type limitedWarning struct {
	log    *zap.Logger
	msg    string
	period time.Duration
	fixed  []zap.Field

	mu      sync.Mutex
	n       int         // events not yet logged
	last    []zap.Field // fields of the latest of them
	timer   *time.Timer // running while a period is open
	stopped bool
}

func newLimitedWarning(log *zap.Logger, period time.Duration, msg string, fixed ...zap.Field) *limitedWarning {
	return &limitedWarning{log: log, msg: msg, period: period, fixed: fixed}
}

// add counts one event; fields describe it (the latest ones are logged).
func (w *limitedWarning) add(fields ...zap.Field) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.n++
	w.last = fields
	if w.timer != nil {
		return
	}
	w.flushLocked()
	if !w.stopped {
		w.timer = time.AfterFunc(w.period, w.tick)
	}
}

func (w *limitedWarning) tick() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopped {
		return
	}
	if w.n == 0 {
		w.timer = nil
		return
	}
	w.flushLocked()
	w.timer.Reset(w.period)
}

func (w *limitedWarning) flushLocked() {
	if w.n == 0 {
		return
	}
	fields := make([]zap.Field, 0, 2+len(w.fixed)+len(w.last))
	fields = append(fields, zap.Int("count", w.n), zap.Duration("rate_limit", w.period))
	fields = append(fields, w.fixed...)
	fields = append(fields, w.last...)
	w.log.Warn(w.msg, fields...)
	w.n, w.last = 0, nil
}

// stop logs what is pending; later events are logged at once.
func (w *limitedWarning) stop() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.stopped = true
	if w.timer != nil {
		w.timer.Stop()
		w.timer = nil
	}
	w.flushLocked()
}
