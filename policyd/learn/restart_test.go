package learn

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
)

// A learner replaced by another on the same log (a reload) keeps
// learning within a second, on inotify: the one stopped leaves no stale
// watch removal behind that would take the next one's watch away.
func TestReplacedLearnerKeepsInotify(t *testing.T) {
	dir := t.TempDir()
	logFile := filepath.Join(dir, "mail.log")
	appendLog(t, logFile)
	s := newStore(t, filepath.Join(dir, "state.json"))
	c, _ := NewClassifier(nil, nil)
	start := func() (*Learner, func()) {
		l := NewLearner(Options{Source: SourceFile, LogFile: logFile, BlockTTL: time.Hour, SaveEvery: time.Second}, c, s, zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))) // see following()
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { l.Run(ctx); close(done) }()
		return l, func() { cancel(); <-done }
	}
	for i := range 30 {
		l, stop := start()
		settled(t, s, logFile)
		learnedWithin(t, s, logFile, fmt.Sprintf("r%d.example", i), 3*time.Second)        // loose: see TestLearnsWithinASecond
		learnedWithin(t, s, logFile, fmt.Sprintf("r%d-at-end.example", i), 3*time.Second) // waiting at the end
		if l.polling.Load() {
			t.Fatalf("round %d: polling", i)
		}
		stop()
	}
}
