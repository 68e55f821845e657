package learn

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"

	"github.com/mxdetour/mxdetour/internal/testutil"
)

func blk(dom string, learned time.Time) Block {
	return Block{Domain: dom, MXHost: "mx." + dom, Kind: "k", Learned: learned, Expires: learned.Add(time.Hour)}
}

func domains(bs []Block) []string {
	var out []string
	for _, b := range bs {
		out = append(out, b.Domain)
	}
	return out
}

// fileDomains reads the state file as another program would.
func fileDomains(t *testing.T, path string) []string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var st stateFile
	if err := json.Unmarshal(data, &st); err != nil {
		t.Fatal(err)
	}
	return domains(st.Blocks)
}

// The README's recipe: the daemon learned c.example but has not saved it
// yet when a person runs `blocks forget a.example` and then reloads. The
// reload drops a.example only; c.example stays, in memory and in the file.
func TestReloadMergesForgetAndUnsaved(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	now := time.Now()
	daemon := newStore(t, path)
	daemon.Add(blk("a.example", now.Add(-2*time.Minute)))
	daemon.Add(blk("b.example", now.Add(-2*time.Minute)))
	if err := daemon.Save(); err != nil {
		t.Fatal(err)
	}
	daemon.Add(blk("c.example", now.Add(-time.Minute))) // learned before the forget, not saved

	cli := newStore(t, path)
	if !cli.Forget("a.example") || cli.Save() != nil {
		t.Fatal("forget")
	}
	if err := daemon.Reload(); err != nil {
		t.Fatal(err)
	}
	want := []string{"b.example", "c.example"}
	if diff := cmp.Diff(want, domains(daemon.List(time.Now()))); diff != "" {
		t.Errorf("in memory after reload (-want +got):\n%s", diff)
	}
	if _, ok := daemon.Lookup("x.example", []string{"mx.a.example"}, time.Now()); ok {
		t.Error("the forgotten block still matches by its MX host")
	}
	if err := daemon.Save(); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, fileDomains(t, path)); diff != "" {
		t.Errorf("in the file (-want +got):\n%s", diff)
	}

	// An old line read again does not bring a.example back; a refusal
	// seen after the forget does.
	if daemon.Add(blk("a.example", now.Add(-time.Minute))) {
		t.Error("a refusal from before the forget was learned again")
	}
	if !daemon.Add(blk("a.example", time.Now().Add(time.Millisecond))) {
		t.Error("a refusal after the forget was not learned")
	}
	// A reload of the unchanged file (tombstone still in it) keeps it.
	daemon.Reload()
	if _, ok := daemon.Lookup("a.example", nil, time.Now()); !ok {
		t.Error("a block learned after the forget was dropped by a reload")
	}
}

// Without a reload the daemon picks up `blocks forget` at its next save
// or periodic refresh, and a forget of a block the CLI never saw saved
// does not come back from the daemon's memory.
func TestRefreshAppliesForget(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	now := time.Now()
	daemon := newStore(t, path)
	daemon.Add(blk("a.example", now.Add(-time.Minute)))
	daemon.Save()
	cli := newStore(t, path)
	cli.Forget("a.example")
	cli.Save()
	if err := daemon.Refresh(); err != nil {
		t.Fatal(err)
	}
	if got := domains(daemon.List(time.Now())); len(got) != 0 {
		t.Errorf("after refresh: %v", got)
	}
}

// observed returns a logger that records entries, and the records.
func observed(t *testing.T) (*zap.Logger, *observer.ObservedLogs) {
	core, logs := observer.New(zapcore.InfoLevel)
	return zap.New(zapcore.NewTee(core, zaptest.NewLogger(t).Core())), logs
}

func errorLogs(logs *observer.ObservedLogs) int {
	return logs.FilterLevelExact(zapcore.ErrorLevel).Len()
}

func TestCorruptFallsBackToPrevious(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state.json")
	now := time.Now()
	s := newStore(t, path)
	s.Add(blk("a.example", now))
	s.Save()
	s.Add(blk("b.example", now))
	s.Save() // state.json.1 now holds a.example
	if diff := cmp.Diff([]string{"a.example"}, fileDomains(t, path+".1")); diff != "" {
		t.Errorf("previous copy (-want +got):\n%s", diff)
	}
	os.WriteFile(path, []byte(`{"version":1,"blocks":[{"domain":`), 0o640) // a torn write

	log, logs := observed(t)
	s2, err := OpenStore(path, log)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"a.example"}, domains(s2.List(time.Now()))); diff != "" {
		t.Errorf("blocks after falling back (-want +got):\n%s", diff)
	}
	if m, _ := filepath.Glob(path + ".corrupt-*"); len(m) != 1 {
		t.Errorf("corrupt file not set aside: %v", m)
	}
	if errorLogs(logs) == 0 {
		t.Error("no error logged")
	}
	// The next save writes a new file and keeps the good previous copy.
	s2.Add(blk("c.example", now))
	if err := s2.Save(); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"a.example", "c.example"}, fileDomains(t, path)); diff != "" {
		t.Errorf("file after save (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"a.example"}, fileDomains(t, path+".1")); diff != "" {
		t.Errorf("previous copy after save (-want +got):\n%s", diff)
	}
}

func TestBothCorruptStartsEmpty(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state.json")
	os.WriteFile(path, []byte("{not json"), 0o640)
	os.WriteFile(path+".1", []byte(`{"version":99}`), 0o640)
	log, logs := observed(t)
	s, err := OpenStore(path, log)
	if err != nil {
		t.Fatal(err)
	}
	if got := s.List(time.Now()); len(got) != 0 {
		t.Errorf("blocks from corrupt files: %v", got)
	}
	for _, p := range []string{path, path + ".1"} {
		if m, _ := filepath.Glob(p + ".corrupt-*"); len(m) != 1 {
			t.Errorf("%s not set aside: %v", p, m)
		}
	}
	if errorLogs(logs) < 2 {
		t.Errorf("%d error logs, want one per bad file", errorLogs(logs))
	}
	s.Add(blk("a.example", time.Now()))
	if err := s.Save(); err != nil {
		t.Fatal(err)
	}
}

// A state file the daemon cannot read (here: not a file at all) does not
// stop it: it is set aside and the previous copy used.
func TestUnreadableStateDoesNotStop(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state.json")
	s := newStore(t, path)
	s.Add(blk("a.example", time.Now()))
	s.Save()
	os.Rename(path, path+".1")
	os.Mkdir(path, 0o700)
	log, logs := observed(t)
	s2, err := OpenStore(path, log)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	if diff := cmp.Diff([]string{"a.example"}, domains(s2.List(time.Now()))); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	if errorLogs(logs) == 0 {
		t.Error("no error logged")
	}
	if err := s2.Save(); err != nil {
		t.Fatal(err)
	}
}

// Run as root (`blocks forget` by an administrator), the state files get
// the owner of their directory, the daemon's user, so that the daemon can
// still replace them. Here the directory belongs to nobody (65534).
func TestSaveAsRootKeepsDirectoryOwner(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to chown")
	}
	const uid, gid = 65534, 65534
	dir := filepath.Join(t.TempDir(), "mxdetour")
	os.Mkdir(dir, 0o750)
	if err := os.Chown(dir, uid, gid); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "state.json")
	os.WriteFile(path, []byte(`{"version":1,"blocks":[]}`), 0o600) // left by an older root run
	s := newStore(t, path)
	s.Add(blk("a.example", time.Now()))
	if err := s.Save(); err != nil {
		t.Fatal(err)
	}
	s.Forget("a.example")
	if err := s.Save(); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{path, path + ".1"} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		if st.Uid != uid || st.Gid != gid || fi.Mode().Perm() != 0o640 {
			t.Errorf("%s: owner %d:%d mode %v, want %d:%d 0640", p, st.Uid, st.Gid, fi.Mode().Perm(), uid, gid)
		}
	}
	left, _ := filepath.Glob(filepath.Join(dir, ".state-*"))
	if len(left) != 0 {
		t.Errorf("temporary files left: %v", left)
	}
}

// The daemon learns, saves, reloads and looks up while `blocks forget`
// runs in parallel (go test -race); at the end the file and memory agree
// on a block learned after every forget.
func TestStoreConcurrent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	daemon := newStore(t, path)
	var wg sync.WaitGroup
	const n = 50
	wg.Go(func() {
		for i := range n {
			daemon.Add(blk(fmt.Sprintf("d%d.example", i%10), time.Now()))
			daemon.SetOffset(Offset{Path: "/var/log/mail.log", Pos: int64(i)})
		}
	})
	wg.Go(func() {
		for range n / 5 {
			if err := daemon.Save(); err != nil {
				t.Error(err)
			}
		}
	})
	wg.Go(func() {
		for range n / 5 {
			daemon.Reload()
			daemon.Refresh()
		}
	})
	wg.Go(func() {
		for range n {
			daemon.Lookup("d1.example", []string{"mx.d2.example"}, time.Now())
			daemon.List(time.Now())
		}
	})
	wg.Go(func() {
		for i := range n / 5 {
			cli := newStore(t, path)
			cli.Forget(fmt.Sprintf("d%d.example", i%10))
			if err := cli.Save(); err != nil {
				t.Error(err)
			}
		}
	})
	wg.Wait()
	daemon.Add(blk("last.example", time.Now().Add(time.Millisecond)))
	if err := daemon.Save(); err != nil {
		t.Fatal(err)
	}
	again := newStore(t, path)
	if diff := cmp.Diff(domains(daemon.List(time.Now())), domains(again.List(time.Now()))); diff != "" {
		t.Errorf("file and memory differ (-memory +file):\n%s", diff)
	}
	if _, ok := again.Lookup("last.example", nil, time.Now()); !ok {
		t.Error("last block not saved")
	}
}

// A learned block reaches the file within SaveDelay, long before the
// periodic save; a forget by another process reaches the daemon at its
// periodic refresh, without a reload.
func TestLearnerSavesPromptly(t *testing.T) {
	dir := t.TempDir()
	logFile, path := filepath.Join(dir, "mail.log"), filepath.Join(dir, "state.json")
	os.WriteFile(logFile, nil, 0o640)
	s := newStore(t, path)
	c, _ := NewClassifier(nil, nil)
	l := NewLearner(Options{Source: SourceFile, LogFile: logFile, BlockTTL: time.Hour, SaveDelay: 20 * time.Millisecond,
		SaveEvery: 200 * time.Millisecond}, c, s, zaptest.NewLogger(t))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { l.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	f, _ := os.OpenFile(logFile, os.O_APPEND|os.O_WRONLY, 0)
	fmt.Fprintf(f, "%s mx1 postfix/smtp[1]: ABCDE1: to=<u@new.example>, relay=mx.new.example[192.0.2.1]:25, delay=1, delays=0/0/0/1, dsn=5.7.1, status=bounced (host mx.new.example[192.0.2.1] said: 554 5.7.1 blocked using zen.spamhaus.org (in reply to RCPT TO command))\n",
		time.Now().Format(time.RFC3339))
	f.Close()
	testutil.Eventually(t, "the learned block is in the state file", func() bool {
		st, _, err := readState(path)
		return err == nil && len(st.Blocks) == 1 && st.Blocks[0].Domain == "new.example"
	})

	cli := newStore(t, path)
	if !cli.Forget("new.example") || cli.Save() != nil {
		t.Fatal("forget")
	}
	testutil.Eventually(t, "the daemon drops the forgotten block", func() bool {
		_, ok := s.Lookup("new.example", nil, time.Now())
		return !ok
	})
}

func TestRequeueSetExpires(t *testing.T) {
	s := newStore(t, filepath.Join(t.TempDir(), "s.json"))
	c, _ := NewClassifier(nil, nil)
	l := NewLearner(Options{BlockTTL: time.Hour, RequeueDelay: time.Millisecond}, c, s, zaptest.NewLogger(t))
	t0 := time.Now()
	for i := range 100 {
		l.requeueLater(fmt.Sprintf("ID%d", i), t0)
	}
	l.requeueLater("ID1", t0.Add(time.Minute)) // once per block lifetime
	l.Wait()
	if len(l.done) != 100 {
		t.Fatalf("%d remembered, want 100", len(l.done))
	}
	l.requeueLater("LATER", t0.Add(2*time.Hour))
	l.Wait()
	if len(l.done) != 1 {
		t.Errorf("%d remembered after the block lifetime, want 1", len(l.done))
	}
	for i := range maxRequeues {
		l.done[fmt.Sprint("F", i)] = t0.Add(10 * time.Hour)
	}
	before := len(l.done)
	l.requeueLater("OVER", t0.Add(2*time.Hour))
	if _, ok := l.done["OVER"]; ok || len(l.done) != before {
		t.Errorf("%d remembered (%d before), the cap is %d", len(l.done), before, maxRequeues)
	}
}

// Expired blocks leave memory at the next save, not only the file.
func TestSaveDropsExpired(t *testing.T) {
	s := newStore(t, filepath.Join(t.TempDir(), "s.json"))
	s.Add(blk("old.example", time.Now().Add(-2*time.Hour)))
	s.Add(blk("new.example", time.Now()))
	if err := s.Save(); err != nil {
		t.Fatal(err)
	}
	s.mu.RLock()
	n, h := len(s.byDomain), len(s.byHost)
	s.mu.RUnlock()
	if n != 1 || h != 1 {
		t.Errorf("%d domains, %d hosts in memory after save, want 1 and 1", n, h)
	}
}

// How refusals of our IPv6 address and of our IP combine: per domain, a
// relay refusal makes the block relay and nothing makes it IPv4 again;
// across a domain and the MX hosts it shares, a relay block wins.
func TestStoreRoutes(t *testing.T) {
	now := time.Now()
	v6 := func(dom, host string) Block {
		return Block{Domain: dom, MXHost: host, Kind: "gmail-ipv6-auth", Route: "ipv4", Learned: now, Expires: now.Add(time.Hour)}
	}
	v4 := func(dom, host string) Block {
		return Block{Domain: dom, MXHost: host, Kind: "dnsbl:zen.spamhaus.org", Route: "relay", Learned: now, Expires: now.Add(time.Hour)}
	}
	for _, tc := range []struct {
		name      string
		add       []Block
		changes   []change
		dom       string
		hosts     []string
		wantRoute string
		wantFrom  string // the domain whose block decided
	}{
		{"IPv6 only", []Block{v6("a.example", "mx.a")}, []change{added}, "a.example", nil, "ipv4", "a.example"},
		{"IPv6 then IPv4: relay", []Block{v6("a.example", "mx.a"), v4("a.example", "mx.a")}, []change{added, rerouted}, "a.example", nil, "relay", "a.example"},
		{"IPv4 then IPv6: still relay", []Block{v4("a.example", "mx.a"), v6("a.example", "mx.a")}, []change{added, unchanged}, "a.example", nil, "relay", "a.example"},
		{"IPv6 for the domain, IPv4 for its MX host: relay", []Block{v6("a.example", "mx.a"), v4("b.example", "mx.shared")}, []change{added, added}, "a.example", []string{"mx.shared"}, "relay", "b.example"},
		{"two domains on one host, IPv4 first", []Block{v4("b.example", "mx.shared"), v6("c.example", "mx.shared")}, []change{added, added}, "d.example", []string{"mx.shared"}, "relay", "b.example"},
		{"two domains on one host, IPv6 first", []Block{v6("c.example", "mx.shared"), v4("b.example", "mx.shared")}, []change{added, added}, "d.example", []string{"mx.shared"}, "relay", "b.example"},
		{"a route-less block (old file) is relay", []Block{{Domain: "a.example", MXHost: "mx.a", Kind: "k", Learned: now, Expires: now.Add(time.Hour)}}, []change{added}, "a.example", nil, "relay", "a.example"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newStore(t, filepath.Join(t.TempDir(), "s.json"))
			var changes []change
			for _, b := range tc.add {
				_, c := s.learn(b)
				changes = append(changes, c)
			}
			if diff := cmp.Diff(tc.changes, changes); diff != "" {
				t.Errorf("changes (-want +got):\n%s", diff)
			}
			b, ok := s.Lookup(tc.dom, tc.hosts, now)
			if !ok || b.Route != tc.wantRoute || b.Domain != tc.wantFrom {
				t.Errorf("Lookup: ok %v, route %q from %s; want %s from %s", ok, b.Route, b.Domain, tc.wantRoute, tc.wantFrom)
			}
		})
	}
}

// A state file written before blocks had a route: its blocks need the
// relay, and the next save writes the route out.
func TestOldStateFileIsRelay(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	until := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	old := `{"version": 1, "offset": {"path": "", "inode": 0, "pos": 0}, "blocks": [
	  {"domain": "old.example", "mx_host": "mx.old.example", "kind": "dnsbl:zen.spamhaus.org", "reply": "554 5.7.1 blocked",
	   "learned": "` + time.Now().UTC().Format(time.RFC3339) + `", "expires": "` + until + `"}]}`
	if err := os.WriteFile(path, []byte(old), 0o640); err != nil {
		t.Fatal(err)
	}
	s := newStore(t, path)
	if b, ok := s.Lookup("old.example", nil, time.Now()); !ok || b.Via() != "relay" || b.Route != "relay" {
		t.Fatalf("old block: %+v %v, want route relay", b, ok)
	}
	if err := s.Save(); err != nil {
		t.Fatal(err)
	}
	st, _, err := readState(path)
	if err != nil || len(st.Blocks) != 1 || st.Blocks[0].Route != "relay" {
		t.Errorf("saved: %+v %v", st, err)
	}
}

func TestCheckStateFile(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	os.WriteFile(file, nil, 0o640)
	for _, tc := range []struct {
		path, want string // want: part of the error; "" for none
	}{
		{filepath.Join(dir, "state.json"), ""},
		{filepath.Join(dir, "missing", "state.json"), "does not exist"},
		{filepath.Join(file, "state.json"), "is not a directory"},
		{dir, "is a directory, not a file"},
		{"state.json", "absolute path"},
	} {
		err := CheckStateFile(tc.path)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v", tc.path, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "learn.state_file")):
			t.Errorf("%s: error %v, want one naming learn.state_file and saying %q", tc.path, err, tc.want)
		}
	}
}

func TestAlertEvent(t *testing.T) {
	learned := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	b := Block{Domain: "gmail.com", MXHost: "gmail-smtp-in.l.google.com", Provider: "google", Kind: "gmail-ipv6-auth",
		Route: "ipv4", Reply: "421-4.7.0 ... IPv6 sending guidelines ...", QueueIDs: []string{"A1", "B2"},
		Learned: learned, Expires: learned.Add(24 * time.Hour)}
	e := AlertEvent(b, true)
	want := map[string]string{"domain": "gmail.com", "mx_host": "gmail-smtp-in.l.google.com", "provider": "google",
		"kind": "gmail-ipv6-auth", "route": "ipv4", "change": "new", "learned": "2026-03-01T10:00:00Z",
		"until": "2026-03-02T10:00:00Z", "reply": b.Reply, "queue_ids": "A1 B2"}
	if diff := cmp.Diff(want, e.Fields); diff != "" {
		t.Errorf("fields (-want +got):\n%s", diff)
	}
	if e.Kind != "block-learned" || !e.Time.Equal(learned) ||
		e.Summary != "gmail.com refuses our IPv6 address (gmail-ipv6-auth, MX gmail-smtp-in.l.google.com): its mail goes via IPv4 (the relay when no ipv4 transport is configured) until 2026-03-02T10:00:00Z" {
		t.Errorf("event %+v", e)
	}
	b.Route, b.Kind = "relay", "dnsbl:zen.spamhaus.org"
	if e := AlertEvent(b, false); e.Fields["change"] != "now-relay" || !strings.Contains(e.Summary, "refuses our IPv4 address too") ||
		!strings.Contains(e.Summary, "via the relay") {
		t.Errorf("rerouted: %+v", e)
	}
}
