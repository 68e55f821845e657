package learn

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/zap/zaptest"
)

// The hooks a fleet uses: OnLearn hears of what our own log taught
// (with our address the refusal quoted), never of what Merge brought from
// another host; a block our log shows too becomes ours (Host "").
func TestOnLearnAndMerge(t *testing.T) {
	logFile := filepath.Join(t.TempDir(), "mail.log")
	appendLog(t, logFile)
	var mu sync.Mutex
	var heard []string
	s := newStore(t, filepath.Join(t.TempDir(), "state.json"))
	s.OnLearn(func(b Block) {
		mu.Lock()
		heard = append(heard, b.Domain+" host="+b.Host+" client="+b.Client.String())
		mu.Unlock()
	})
	c, _ := NewClassifier(nil, nil)
	l := NewLearner(Options{Source: SourceFile, LogFile: logFile, BlockTTL: time.Hour}, c, s, zaptest.NewLogger(t))
	now := time.Now()
	line := func(id, dom string) string { return strings.TrimSuffix(ipv4Refusal(now, id, dom), "\n") }

	if !s.Merge(Block{Domain: "remote.example", MXHost: "mx.remote.example", Kind: "k", Host: "mx02", Learned: now, Expires: now.Add(time.Hour)}) {
		t.Fatal("Merge of a new block reports no change")
	}
	if !s.unsaved.Load() {
		t.Error("Merge left nothing to save")
	}
	l.Handle(line("AAAAA1", "own.example"), now)
	l.Handle(line("AAAAA2", "own.example"), now) // seen again, same expiry: not heard
	l.Handle(line("AAAAA3", "remote.example"), now)
	mu.Lock()
	got := heard
	mu.Unlock()
	want := []string{"own.example host= client=192.0.2.5", "remote.example host= client=192.0.2.5"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("OnLearn calls (-want +got):\n%s", diff)
	}
	if b, _ := s.Lookup("remote.example", nil, now); b.Host != "" {
		t.Errorf("a block our own log shows too has host %q, want ours", b.Host)
	}
}

// A forget from elsewhere drops the block last seen before it, keeps one
// seen after, is saved with the state file, and a copy of the forgotten
// block arriving later is ignored.
func TestForgetAt(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	s := newStore(t, path)
	now := time.Now()
	blk := func(d string, seen time.Time) Block {
		return Block{Domain: d, MXHost: "mx." + d, Kind: "k", Host: "mx02", Learned: seen, Expires: seen.Add(time.Hour),
			Client: netip.MustParseAddr("192.0.2.5")}
	}
	s.Merge(blk("old.example", now.Add(-time.Minute)))
	s.Merge(blk("new.example", now.Add(time.Minute)))
	s.unsaved.Store(false)
	if !s.ForgetAt(Forgotten{Domain: "old.example", At: now, Until: now.Add(time.Hour)}) {
		t.Error("a block seen before the forget was not dropped")
	}
	if s.ForgetAt(Forgotten{Domain: "new.example", At: now, Until: now.Add(time.Hour)}) {
		t.Error("a block seen after the forget was dropped")
	}
	if !s.unsaved.Load() {
		t.Error("ForgetAt left nothing to save")
	}
	if s.Merge(blk("old.example", now.Add(-time.Minute))) {
		t.Error("a copy of the forgotten block came back")
	}
	if f, ok := s.Tombstone("old.example"); !ok || !f.At.Equal(now) {
		t.Errorf("tombstone %+v %v", f, ok)
	}
	if err := s.Save(); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(path)
	if !strings.Contains(string(data), `"host": "mx02"`) || !strings.Contains(string(data), `"client": "192.0.2.5"`) ||
		!strings.Contains(string(data), `"domain": "old.example",`) {
		t.Errorf("state file lacks the host, client or tombstone:\n%s", data)
	}
	s2 := newStore(t, path)
	if got := s2.List(now); len(got) != 1 || got[0].Domain != "new.example" || got[0].Host != "mx02" {
		t.Errorf("reopened store: %+v", got)
	}
}
