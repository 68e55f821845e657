package limits

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"go.uber.org/zap"

	"github.com/mxdetour/mxdetour/internal/statefile"
)

// The state file, limits.json next to learn's state file, keeps the
// counters, the alert marks and the held records across restarts. Only
// the daemon writes it, each time whole (a temporary file, fsynced,
// renamed over it). Others ask the daemon for a reset by dropping a
// request file beside it, PATH.release-*, itself written whole and then
// renamed into place; the daemon applies and removes these within a
// second (pollEvery), or at its next start when it is not running. No
// process ever rewrites a file another writes, so no lock is needed.

// StatePath is the limiter's state file for learn's state file path.
func StatePath(learnStateFile string) string {
	return filepath.Join(filepath.Dir(learnStateFile), "limits.json")
}

const stateVersion = 1

type stateFile struct {
	Version  int        `json:"version"`
	Saved    time.Time  `json:"saved"`
	Counters *Snapshot  `json:"counters,omitempty"`
	Held     []Held     `json:"held,omitempty"`
	Txns     []savedTxn `json:"transactions,omitempty"`
}

// savedTxn is a transaction open when the state was saved: a restart
// between a message's RCPTs and its END-OF-MESSAGE (Postfix's smtpd
// reconnects and asks on with the same instance) must neither count its
// recipients again nor let a held message go.
type savedTxn struct {
	Instance  string        `json:"instance"`
	Seen      time.Time     `json:"seen"`
	Counted   int           `json:"counted"`
	LastRcpt  string        `json:"last_rcpt,omitempty"`
	LoginSeen bool          `json:"login_seen,omitempty"`
	QueueID   string        `json:"queue_id,omitempty"`
	Taken     []savedTaken  `json:"taken,omitempty"`
	Held      *savedVerdict `json:"held,omitempty"`
}

type savedTaken struct {
	Key    string        `json:"key"`
	N      int           `json:"n"`
	Window time.Duration `json:"window"`
	At     time.Time     `json:"at"`
}

type savedVerdict struct {
	Action  Action        `json:"action"`
	Name    string        `json:"name"`
	Count   int           `json:"count"`
	Max     int           `json:"max"`
	Window  time.Duration `json:"window"`
	Subject string        `json:"subject"`
	Key     string        `json:"key"`
}

// releaseRequest is one PATH.release-* file.
type releaseRequest struct {
	Key string    `json:"key"`
	At  time.Time `json:"at"`
}

// snapshotter is a store whose counters live here and are saved (Memory);
// a shared store keeps its own.
type snapshotter interface {
	Snapshot(now time.Time) Snapshot
	Restore(s Snapshot, now time.Time)
	Prune(now time.Time)
}

const (
	pollEvery = time.Second
	saveEvery = 10 * time.Second
)

// Open loads the state file at path and applies waiting release requests;
// from then on Run saves there. A missing file is an empty state; one that
// cannot be read is set aside (PATH.corrupt-TIME) and counting starts
// afresh — limits must never stop mail from flowing.
func (l *Limiter) Open(path string) error {
	l.path = path
	st, err := readState(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		aside := path + ".corrupt-" + l.now().UTC().Format("20060102T150405")
		if rerr := os.Rename(path, aside); rerr != nil {
			return fmt.Errorf("limits state %s: %w (and it could not be set aside: %v)", path, err, rerr)
		}
		l.log.Error("limits state file unreadable; set aside, counting starts afresh", zap.String("file", aside), zap.Error(err))
	default:
		now := l.now()
		if s, ok := l.store.(snapshotter); ok && st.Counters != nil {
			s.Restore(*st.Counters, now)
		}
		for _, h := range st.Held {
			if now.Sub(h.At) < heldKeep {
				l.held.add(h)
			}
		}
		l.txns.restore(st.Txns, now)
	}
	l.applyReleases()
	return nil
}

func readState(path string) (*stateFile, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var st stateFile
	if err := json.Unmarshal(data, &st); err != nil {
		return nil, fmt.Errorf("not a limits state file: %w", err)
	}
	if st.Version != stateVersion {
		return nil, fmt.Errorf("limits state file version %d, want %d", st.Version, stateVersion)
	}
	return &st, nil
}

// ReadHeld returns the held records of the state file at path (for the
// holds command); none when there is no file.
func ReadHeld(path string) ([]Held, error) {
	st, err := readState(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return st.Held, nil
}

// Run applies release requests and saves the state until Stop. Call Open
// first.
func (l *Limiter) Run() {
	l.stop, l.done = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(l.done)
		poll, save := time.NewTicker(pollEvery), time.NewTicker(saveEvery)
		defer poll.Stop()
		defer save.Stop()
		for {
			select {
			case <-l.stop:
				if l.dirty.Load() || l.Active() { // nothing to keep without limits or counts
					l.saveLogged()
				}
				return
			case <-poll.C:
				l.applyReleases()
				l.applySaves()
			case <-save.C:
				l.prune()
				if l.dirty.Swap(false) {
					l.saveLogged()
				}
			case <-l.saveNow:
				l.dirty.Store(false)
				l.saveLogged()
			}
		}
	}()
}

// Stop ends Run and saves.
func (l *Limiter) Stop() {
	if l.stop == nil {
		return
	}
	close(l.stop)
	<-l.done
	l.stop = nil
}

func (l *Limiter) prune() {
	now := l.now()
	if s, ok := l.store.(snapshotter); ok {
		s.Prune(now)
	}
	l.txns.pruneIdle(now)
	l.held.prune(now)
	l.failures.prune(l.o.Load().Failures, now)
	keep := time.Hour
	o := l.o.Load()
	for _, lim := range o.Limits {
		keep = max(keep, lim.Window)
	}
	l.profiles.pruneIdle(now, max(keep, o.Compromise.Window))
}

func (l *Limiter) saveLogged() {
	if err := l.Save(); err != nil {
		l.log.Error("saving the limits state", zap.String("file", l.path), zap.Error(err))
	}
}

// Save writes the state file now.
func (l *Limiter) Save() error {
	if l.path == "" {
		return nil
	}
	l.saveMu.Lock()
	defer l.saveMu.Unlock()
	now := l.now()
	st := stateFile{Version: stateVersion, Saved: now.UTC(), Held: l.held.list(), Txns: l.txns.save()}
	if s, ok := l.store.(snapshotter); ok {
		snap := s.Snapshot(now)
		st.Counters = &snap
	}
	data, err := json.Marshal(st)
	if err != nil {
		return err
	}
	return statefile.Write(l.path, data)
}

// Held lists the messages held so far, oldest first.
func (l *Limiter) Held() []Held { return l.held.list() }

// applyReleases resets the keys named by PATH.release-* files and removes
// them.
func (l *Limiter) applyReleases() {
	if l.path == "" {
		return
	}
	files, _ := filepath.Glob(l.path + ".release-*")
	for _, f := range files {
		data, err := os.ReadFile(f)
		var req releaseRequest
		if err == nil {
			err = json.Unmarshal(data, &req)
		}
		if err != nil || req.Key == "" {
			l.log.Error("ignoring a bad release request", zap.String("file", f), zap.Error(err))
		} else {
			l.Reset(req.Key)
		}
		if err := os.Remove(f); err != nil {
			l.log.Error("removing a release request", zap.String("file", f), zap.Error(err))
		}
	}
}

// applySaves saves the state at once when PATH.save-* files ask for it
// (`holds counts`), then removes them: a request gone means the file
// holds the counts of that moment.
func (l *Limiter) applySaves() {
	if l.path == "" {
		return
	}
	files, _ := filepath.Glob(l.path + ".save-*")
	if len(files) == 0 {
		return
	}
	l.saveLogged()
	for _, f := range files {
		if err := os.Remove(f); err != nil && !errors.Is(err, fs.ErrNotExist) {
			l.log.Error("removing a save request", zap.String("file", f), zap.Error(err))
		}
	}
}

// RequestSave asks the daemon keeping its state at path to save it now;
// it returns the request file, which the daemon removes once it saved
// (within pollEvery when it runs).
func RequestSave(path string) (string, error) {
	name := fmt.Sprintf("%s.save-%d-%d", path, time.Now().UnixNano(), os.Getpid())
	return name, statefile.Write(name, []byte("{}"))
}

// ReadCounters returns the counters of the state file at path and when
// it was saved; none when there is no file.
func ReadCounters(path string) (Snapshot, time.Time, error) {
	st, err := readState(path)
	if errors.Is(err, fs.ErrNotExist) {
		return Snapshot{}, time.Time{}, nil
	}
	if err != nil {
		return Snapshot{}, time.Time{}, err
	}
	if st.Counters == nil {
		return Snapshot{}, st.Saved, nil
	}
	return *st.Counters, st.Saved, nil
}

// RequestRelease asks the daemon keeping its state at path to reset key:
// at once when it runs, else at its next start.
func RequestRelease(path, key string) error {
	data, err := json.Marshal(releaseRequest{Key: key, At: time.Now().UTC()})
	if err != nil {
		return err
	}
	name := fmt.Sprintf("%s.release-%d-%d", path, time.Now().UnixNano(), os.Getpid())
	return statefile.Write(name, data)
}

// save lists the open transactions that counted or hold something.
func (tt *txnTable) save() []savedTxn {
	type open struct {
		t    *txn
		head savedTxn // instance and last request, read under the table's lock
	}
	var all []open
	for i := range tt.shards {
		sh := &tt.shards[i]
		sh.mu.Lock()
		for inst, t := range sh.m {
			all = append(all, open{t, savedTxn{Instance: inst, Seen: t.seen}})
		}
		sh.mu.Unlock()
	}
	var out []savedTxn
	for _, o := range all {
		// Not under the shard's lock: a request holds its transaction's
		// lock while it ends it in the table.
		t, st := o.t, o.head
		t.mu.Lock()
		if t.counted > 0 || t.held != nil {
			st.Counted, st.LastRcpt, st.LoginSeen, st.QueueID = t.counted, t.lastRcpt, t.loginSeen, t.queueID
			for _, k := range t.taken {
				st.Taken = append(st.Taken, savedTaken{k.key, k.n, k.w, k.at})
			}
			if v := t.held; v != nil {
				st.Held = &savedVerdict{v.action, v.name, v.count, v.max, v.window, v.subject, v.key}
			}
			out = append(out, st)
		}
		t.mu.Unlock()
	}
	return out
}

// restore reopens the saved transactions not idle too long at now.
func (tt *txnTable) restore(saved []savedTxn, now time.Time) {
	for _, st := range saved {
		if st.Instance == "" || now.Sub(st.Seen) > txnIdle {
			continue
		}
		t := &txn{seen: st.Seen, counted: st.Counted, lastRcpt: st.LastRcpt, loginSeen: st.LoginSeen, queueID: st.QueueID}
		for _, k := range st.Taken {
			t.taken = append(t.taken, taken{taking{k.Key, k.N, k.Window}, k.At})
		}
		if v := st.Held; v != nil {
			t.held = &verdict{v.Action, v.Name, v.Count, v.Max, v.Window, v.Subject, v.Key}
		}
		sh := tt.shard(st.Instance)
		sh.mu.Lock()
		if len(sh.m) < maxTxns/shards {
			sh.m[st.Instance] = t
		}
		sh.mu.Unlock()
	}
}
