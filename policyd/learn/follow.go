package learn

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/nxadm/tail"
	"github.com/nxadm/tail/watch"
	"go.uber.org/zap"
)

// Following the delivery log. A line is learned as soon as Postfix writes
// it: nxadm/tail waits on inotify(7) for the file to change. Where inotify
// is not available (no instances left, a file system without it) the log
// is polled every 250 ms instead, which still learns a line within a
// second. The learner falls back to polling when
//   - inotify cannot watch the log's directory at start (probed first:
//     nxadm/tail exits the process when it cannot create its watcher);
//   - the inotify follower stops with an error;
//   - the log has grown for two save ticks (SaveEvery) without a line
//     reaching us: a lost watch (an overflowed event queue, a watch
//     removed under us) would otherwise stop learning silently.

// probeInotify reports why inotify cannot watch dir; nil when it can.
// A variable so that tests can make inotify fail.
var probeInotify = func(dir string) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return err
	}
	err = w.Add(dir)
	w.Close()
	if err != nil {
		return err
	}
	return startTracker(dir)
}

// follower is the tail of the log in use and how it follows.
type follower struct {
	t    *tail.Tail
	poll bool
	// behind is the log size seen at the last tick while the file was
	// longer than what was read and no line came since; -1 when not.
	behind int64
	lines  bool // a line came since the last tick
	// retry is when a polling follower that replaced a failed inotify
	// one tries inotify again; zero when it never does (inotify was
	// unavailable at start).
	retry time.Time
}

// follow opens the log at the stored position, with inotify unless poll.
func (l *Learner) follow(poll bool) (*follower, error) {
	t, err := tail.TailFile(l.o.LogFile, tail.Config{
		Location: l.startAt(), ReOpen: true, Follow: true, Poll: poll, CompleteLines: true,
		MustExist: false, Logger: tail.DiscardingLogger,
	})
	if err != nil {
		return nil, err
	}
	l.polling.Store(poll)
	return &follower{t: t, poll: poll, behind: -1}, nil
}

// stop stops the follower. nxadm/tail keeps one inotify watcher per
// process, its watches counted per file name; a follower's watch is
// removed by the follower's own goroutine once it sees the tail stop.
// Tail.Cleanup would remove it a second time, and the count going below
// zero leaves the next follower of the same file without a watch; so
// stop never calls it, and waits for that goroutine to have removed the
// watch, lest its removal come after the next follower's watch (a
// reload) and take that one away.
func (f *follower) stop() {
	_ = f.t.Stop()
	if f.poll {
		return
	}
	name := filepath.Clean(f.t.Filename)
	for deadline := time.Now().Add(time.Second); watch.Events(name) != nil && time.Now().Before(deadline); {
		time.Sleep(2 * time.Millisecond)
	}
}

// startTracker starts nxadm/tail's shared inotify watcher, which
// watch.Events needs, with a balanced pair of calls on a name in dir
// that no follower uses.
func startTracker(dir string) error {
	probe := filepath.Join(dir, ".mxdetour-inotify-probe")
	if err := watch.WatchCreate(probe); err != nil {
		return err
	}
	return watch.RemoveWatchCreate(probe)
}

// Run learns from the source Options.Source names until ctx ends: the
// journal (journal.go) or the log file. It saves a learned block within
// SaveDelay, the position read every SaveEvery, everything at the end, and
// merges changes other processes made to the state file.
func (l *Learner) Run(ctx context.Context) error {
	js, journal, maillog, err := l.chooseSource(ctx)
	if err != nil {
		return err
	}
	if journal {
		return l.followJournal(ctx, js)
	}
	l.warnForgeable(maillog)
	return l.followFile(ctx)
}

// followFile follows the log file from the stored position until ctx
// ends, across rotation (rename and create, copytruncate).
func (l *Learner) followFile(ctx context.Context) error {
	poll := false
	if err := probeInotify(filepath.Dir(l.o.LogFile)); err != nil {
		l.log.Warn("inotify unavailable: polling the delivery log instead", zap.String("file", l.o.LogFile), zap.Error(err))
		poll = true
	}
	f, err := l.follow(poll)
	if err != nil {
		return err
	}
	if _, err := os.Stat(l.o.LogFile); err != nil {
		l.log.Warn("delivery log not found yet; waiting for it", zap.String("file", l.o.LogFile), zap.Error(err))
	}
	sv := l.startSaving()
	defer sv.finish()
	defer func() { f.stop() }() // before the last save: f changes on a fall-back
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-sv.every.C:
			sv.tick()
			if l.stuck(f) {
				if f, err = l.fallBack(f, errors.New("the log grew but no line came for two ticks")); err != nil {
					return err
				}
			} else if f.poll && !f.retry.IsZero() && !l.now().Before(f.retry) {
				if f, err = l.backToInotify(f); err != nil {
					return err
				}
			}
		case <-sv.soon.C:
			sv.soonDue()
		case line, ok := <-f.t.Lines:
			if !ok {
				err := f.t.Err()
				if err == nil || errors.Is(err, io.EOF) {
					return nil
				}
				if f.poll {
					return err
				}
				if f, err = l.fallBack(f, err); err != nil {
					return err
				}
				continue
			}
			if line.Err != nil {
				l.log.Warn("reading the delivery log", zap.Error(line.Err))
				continue
			}
			f.lines = true
			l.Handle(line.Text, l.now())
			l.s.SetOffset(Offset{Path: l.o.LogFile, Inode: inode(l.o.LogFile), Pos: line.SeekInfo.Offset})
			sv.changed()
		}
	}
}

// saving times the saves of a running learner, and makes its OnBlock
// calls from a goroutine of its own.
type saving struct {
	l          *Learner
	every      *time.Ticker // SaveEvery: the position, and other processes' changes
	soon       *time.Timer  // SaveDelay after a block was learned
	armed      bool         // soon is running
	stop, told chan struct{}
}

func (l *Learner) startSaving() *saving {
	sv := &saving{l: l, every: time.NewTicker(l.o.SaveEvery), soon: time.NewTimer(l.o.SaveDelay),
		stop: make(chan struct{}), told: make(chan struct{})}
	sv.soon.Stop()
	go l.notify(sv.stop, sv.told)
	return sv
}

// changed records that a line or record was read: the position is saved
// at the next tick, a block learned within SaveDelay.
func (sv *saving) changed() {
	l := sv.l
	l.mu.Lock()
	l.dirty = true
	if l.blocksDirty && !sv.armed {
		sv.armed = true
		sv.soon.Reset(l.o.SaveDelay)
	}
	l.mu.Unlock()
}

// tick is SaveEvery's: save what changed, report old refusals skipped.
func (sv *saving) tick() {
	sv.l.saveIfDirty()
	sv.l.reportOld(false)
}

// soonDue saves a learned block, SaveDelay after it was learned.
func (sv *saving) soonDue() {
	sv.armed = false
	sv.l.saveIfDirty()
}

// finish saves everything and makes the OnBlock calls still queued.
func (sv *saving) finish() {
	sv.every.Stop()
	sv.soon.Stop()
	sv.l.saveIfDirty()
	sv.l.reportOld(true)
	close(sv.stop)
	<-sv.told
}

// fallBack replaces an inotify follower that failed by a polling one,
// resuming at the stored position.
func (l *Learner) fallBack(f *follower, why error) (*follower, error) {
	l.log.Warn("following the delivery log with inotify failed: polling it instead",
		zap.String("file", l.o.LogFile), zap.Error(why))
	f.stop()
	nf, err := l.follow(true)
	if err != nil {
		return f, fmt.Errorf("following %s: %w", l.o.LogFile, err)
	}
	nf.retry = l.now().Add(l.o.InotifyRetry)
	return nf, nil
}

// backToInotify replaces a polling follower, set up when inotify failed
// under a running one (a watch lost to a start-up race or an overflowed
// queue), by an inotify follower again, at the stored position. Should
// inotify fail now, the log is polled as it was, and tried again later.
func (l *Learner) backToInotify(f *follower) (*follower, error) {
	f.retry = l.now().Add(l.o.InotifyRetry)
	if err := probeInotify(filepath.Dir(l.o.LogFile)); err != nil {
		l.log.Warn("inotify still unavailable: polling the delivery log", zap.String("file", l.o.LogFile), zap.Error(err))
		return f, nil
	}
	f.stop()
	nf, err := l.follow(false)
	if err != nil {
		return l.fallBack(f, err)
	}
	l.log.Info("following the delivery log with inotify again", zap.String("file", l.o.LogFile))
	return nf, nil
}

// stuck reports, at a tick, whether an inotify follower has missed the
// log growing: the file is longer than what was read at two ticks in a
// row, with no line in between. A last line
// still being written (no newline yet) looks the same, but Postfix writes
// whole lines.
func (l *Learner) stuck(f *follower) bool {
	lines := f.lines
	f.lines = false
	if f.poll {
		return false
	}
	fi, err := os.Stat(l.o.LogFile)
	if err != nil {
		f.behind = -1
		return false
	}
	read := int64(0)
	if o := l.s.Offset(); o.Path == l.o.LogFile && o.Inode == inode(l.o.LogFile) {
		read = o.Pos
	}
	if lines || fi.Size() <= read {
		f.behind = -1
		return false
	}
	if f.behind >= 0 {
		return true
	}
	f.behind = fi.Size()
	return false
}
