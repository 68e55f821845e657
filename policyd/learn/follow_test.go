package learn

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nxadm/tail/watch"
	"go.uber.org/zap/zaptest"
)

// following starts a learner on a fresh log until the test ends.
func following(t *testing.T) (*Learner, *Store, string) {
	return followingRetry(t, 0)
}

// followingRetry is following with Options.InotifyRetry (0: the default).
func followingRetry(t *testing.T, retry time.Duration) (*Learner, *Store, string) {
	t.Helper()
	dir := t.TempDir()
	logFile := filepath.Join(dir, "mail.log")
	appendLog(t, logFile)
	s := newStore(t, filepath.Join(dir, "state.json"))
	c, _ := NewClassifier(nil, nil)
	// Ticks of a second: a follower is called stuck after two ticks without
	// a line while the log grew, and a loaded test machine must not make a
	// slow wake-up look like a lost watch.
	l := NewLearner(Options{Source: SourceFile, LogFile: logFile, BlockTTL: time.Hour, SaveEvery: time.Second, InotifyRetry: retry}, c, s, zaptest.NewLogger(t))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { l.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return l, s, logFile
}

// settled waits until the learner follows the end of logFile through its
// watch: a line appended while a follower starts (between reading to the
// end and setting its watch) is only found by the stuck check, which then
// polls for good — fine for Postfix, which writes again soon, but not what
// a test of the inotify path is about. Harmless lines are appended until
// two in a row, written after the learner reached the end, were read.
func settled(t *testing.T, s *Store, logFile string) {
	t.Helper()
	read := 0
	for i := 0; read < 2; i++ {
		if i == 100 {
			t.Fatal("the learner does not follow the log")
		}
		appendLog(t, logFile, fmt.Sprintf("Nov 29 10:00:00 mx1 postfix/qmgr[1]: W%04d: removed\n", i))
		time.Sleep(50 * time.Millisecond)
		fi, err := os.Stat(logFile)
		if err != nil {
			t.Fatal(err)
		}
		if s.Offset().Pos == fi.Size() {
			read++
		} else {
			read = 0
		}
	}
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

// A line Postfix appends is learned at once (typically a few
// milliseconds: inotify wakes the learner), by a learner that follows the
// log with inotify, not by polling. The bound the test asserts is looser
// than the one-second promise, for a loaded test machine running -race;
// the time taken is logged.
func TestLearnsWithinASecond(t *testing.T) {
	l, s, logFile := following(t)
	settled(t, s, logFile)
	learnedWithin(t, s, logFile, "first.example", 3*time.Second)
	took := learnedWithin(t, s, logFile, "fast.example", 3*time.Second)
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

// Polling after a lost watch is not for good: InotifyRetry later the
// learner follows the log with inotify again, and learns as before.
func TestBackToInotifyAfterFallBack(t *testing.T) {
	l, s, logFile := followingRetry(t, 2*time.Second)
	learnedWithin(t, s, logFile, "first.example", time.Second)
	if err := watch.RemoveWatch(logFile); err != nil {
		t.Fatal(err)
	}
	learnedWithin(t, s, logFile, "after-loss.example", 5*time.Second)
	deadline := time.Now().Add(10 * time.Second)
	for l.polling.Load() {
		if time.Now().After(deadline) {
			t.Fatal("still polling 10 s after the watch was lost (InotifyRetry 2 s)")
		}
		time.Sleep(50 * time.Millisecond)
	}
	learnedWithin(t, s, logFile, "back.example", 3*time.Second)
}
