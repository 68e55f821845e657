package learn

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/zap"
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
		l := NewLearner(Options{LogFile: logFile, BlockTTL: time.Hour, SaveEvery: 50 * time.Millisecond}, c, s, zap.NewNop())
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { l.Run(ctx); close(done) }()
		return l, func() { cancel(); <-done }
	}
	for i := range 30 {
		l, stop := start()
		learnedWithin(t, s, logFile, fmt.Sprintf("r%d.example", i), time.Second)
		learnedWithin(t, s, logFile, fmt.Sprintf("r%d-at-end.example", i), time.Second) // waiting at the end
		if l.polling.Load() {
			t.Fatalf("round %d: polling", i)
		}
		stop()
	}
}
