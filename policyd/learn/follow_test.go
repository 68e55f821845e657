package learn

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/nxadm/tail/watch"
	"go.uber.org/zap/zaptest"
)

// following starts a learner on a fresh log until the test ends.
func following(t *testing.T) (*Learner, *Store, string) {
	t.Helper()
	dir := t.TempDir()
	logFile := filepath.Join(dir, "mail.log")
	appendLog(t, logFile)
	s := newStore(t, filepath.Join(dir, "state.json"))
	c, _ := NewClassifier(nil, nil)
	l := NewLearner(Options{LogFile: logFile, BlockTTL: time.Hour, SaveEvery: 50 * time.Millisecond}, c, s, zaptest.NewLogger(t))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { l.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return l, s, logFile
}

// learnedWithin appends a refusal for dom and reports how long the
// learner took to learn it; it fails the test beyond within.
func learnedWithin(t *testing.T, s *Store, logFile, dom string, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	appendLog(t, logFile, ipv4Refusal(start, "QQQQQ1", dom))
	for {
		if _, ok := s.Lookup(dom, nil, time.Now()); ok {
			return time.Since(start)
		}
		if time.Since(start) > within {
			t.Fatalf("%s not learned within %s of its log line", dom, within)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A line Postfix appends is learned within a second (a generous bound:
// inotify wakes the learner at once), by a learner that follows the log
// with inotify, not by polling.
func TestLearnsWithinASecond(t *testing.T) {
	l, s, logFile := following(t)
	learnedWithin(t, s, logFile, "first.example", time.Second) // the follower now waits at the end
	took := learnedWithin(t, s, logFile, "fast.example", time.Second)
	if l.polling.Load() {
		t.Error("the log is polled; want inotify")
	}
	t.Logf("learned %s after the line was written", took)
}

// Where inotify is not available the log is polled, still within a
// second.
func TestPollsWithoutInotify(t *testing.T) {
	probe := probeInotify
	probeInotify = func(string) error { return errors.New("no inotify here") }
	t.Cleanup(func() { probeInotify = probe })
	l, s, logFile := following(t)
	learnedWithin(t, s, logFile, "polled.example", time.Second)
	if !l.polling.Load() {
		t.Error("inotify in use although it failed; want polling")
	}
}

// A watch lost under the learner (an overflowed event queue, or another
// follower of the same file removing the shared watch) is noticed at the
// next ticks: the learner polls from then on and learns what was written.
func TestLostWatchFallsBackToPolling(t *testing.T) {
	l, s, logFile := following(t)
	learnedWithin(t, s, logFile, "first.example", time.Second)
	if err := watch.RemoveWatch(logFile); err != nil {
		t.Fatal(err)
	}
	learnedWithin(t, s, logFile, "after-loss.example", 5*time.Second)
	if !l.polling.Load() {
		t.Error("still on inotify after the watch was lost")
	}
}
