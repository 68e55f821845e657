package learn

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/mxdetour/mxdetour/internal/testutil"
	"github.com/mxdetour/mxdetour/policyd/block"
)

// Gmail's reply to a message sent over IPv6 from an address without PTR
// (github.com/mail-in-a-box/mailinabox/issues/1018, our address masked).
func ipv6Refusal(at time.Time, id, dom string) string {
	return fmt.Sprintf("%s mx1 postfix/smtp[1]: %s: to=<u@%s>, relay=gmail-smtp-in.l.google.com[2a00:1450:400c:c07::1a]:25, delay=1, delays=0/0/0/1, dsn=4.7.0, status=deferred (host gmail-smtp-in.l.google.com[2a00:1450:400c:c07::1a] said: 421-4.7.0 [2001:db8::25] Our system has detected that this message does 421-4.7.0 not meet IPv6 sending guidelines regarding PTR records and 421-4.7.0 authentication. Please review 421-4.7.0 https://support.google.com/mail/?p=IPv6AuthError for more information 421 4.7.0 . v5si749738wrb.38 - gsmtp (in reply to end of DATA command))\n",
		at.Format(time.RFC3339), id, dom)
}

// Postfix's default_rbl_reply from a receiver that checks Spamhaus ZEN.
func ipv4Refusal(at time.Time, id, dom string) string {
	return fmt.Sprintf("%s mx1 postfix/smtp[1]: %s: to=<u@%s>, relay=gmail-smtp-in.l.google.com[192.0.2.1]:25, delay=1, delays=0/0/0/1, dsn=5.7.1, status=bounced (host gmail-smtp-in.l.google.com[192.0.2.1] said: 554 5.7.1 Service unavailable; Client host [192.0.2.5] blocked using zen.spamhaus.org (in reply to RCPT TO command))\n",
		at.Format(time.RFC3339), id, dom)
}

func appendLog(t *testing.T, path string, lines ...string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o640)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(strings.Join(lines, "")); err != nil {
		t.Fatal(err)
	}
}

// running is a learner following a log file until the test ends.
func running(t *testing.T, o Options, log *zap.Logger) (*Store, func()) {
	t.Helper()
	s := newStore(t, filepath.Join(filepath.Dir(o.LogFile), "state.json"))
	c, _ := NewClassifier(nil, nil)
	if o.BlockTTL == 0 {
		o.BlockTTL = time.Hour
	}
	if o.Source == "" {
		o.Source = SourceFile
	}
	if o.SaveEvery == 0 {
		o.SaveEvery = 50 * time.Millisecond
	}
	l := NewLearner(o, c, s, log)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { l.Run(ctx); close(done) }()
	stop := func() { cancel(); <-done }
	t.Cleanup(stop)
	return s, stop
}

// waitQueueID waits until the block of dom names queue id, so that the line
// that carried it was handled.
func waitQueueID(t *testing.T, s *Store, dom, id string) Block {
	t.Helper()
	var b Block
	testutil.Eventually(t, dom+" has seen "+id, func() bool {
		var ok bool
		b, ok = s.Lookup(dom, nil, time.Now())
		return ok && slices.Contains(b.QueueIDs, id)
	})
	return b
}

type call struct {
	Domain, Route, Kind string
	Fresh               bool
}

// A block learned calls OnBlock once; the same refusal seen again does
// not; a refusal of our IPv4 address joining an IPv6-only block calls it
// again (the block now needs the relay), and seeing that again does not.
func TestOnBlock(t *testing.T) {
	logFile := filepath.Join(t.TempDir(), "mail.log")
	appendLog(t, logFile)
	var mu sync.Mutex
	var calls []call
	s, stop := running(t, Options{LogFile: logFile, OnBlock: func(b block.Block, fresh bool) {
		mu.Lock()
		calls = append(calls, call{b.Domain, b.Route, b.Kind, fresh})
		mu.Unlock()
	}}, zap.NewNop())

	now := time.Now()
	appendLog(t, logFile, ipv6Refusal(now, "AAAAA1", "gm.example"))
	if b := waitQueueID(t, s, "gm.example", "AAAAA1"); b.Route != block.RouteIPv4 {
		t.Errorf("IPv6 refusal learned with route %q, want ipv4", b.Route)
	}
	appendLog(t, logFile, ipv6Refusal(now, "AAAAA2", "gm.example"))
	waitQueueID(t, s, "gm.example", "AAAAA2")
	appendLog(t, logFile, ipv4Refusal(now, "AAAAA3", "gm.example"))
	if b := waitQueueID(t, s, "gm.example", "AAAAA3"); b.Route != block.RouteRelay {
		t.Errorf("IPv4 refusal joining an IPv6 block: route %q, want relay", b.Route)
	}
	appendLog(t, logFile, ipv4Refusal(now, "AAAAA4", "gm.example"), ipv6Refusal(now, "AAAAA5", "gm.example"))
	if b := waitQueueID(t, s, "gm.example", "AAAAA5"); b.Route != block.RouteRelay || b.Kind != "dnsbl:zen.spamhaus.org" {
		t.Errorf("an IPv6 refusal after an IPv4 one: route %q kind %q, want relay, dnsbl:zen.spamhaus.org", b.Route, b.Kind)
	}
	stop() // OnBlock calls still queued are made before Run returns

	want := []call{
		{"gm.example", "ipv4", "gmail-ipv6-auth", true},
		{"gm.example", "relay", "dnsbl:zen.spamhaus.org", false},
	}
	mu.Lock()
	defer mu.Unlock()
	if diff := cmp.Diff(want, calls); diff != "" {
		t.Errorf("OnBlock calls (-want +got):\n%s", diff)
	}
}

// A slow OnBlock never holds up learning: the learner goes on while the
// callback waits.
func TestOnBlockNeverBlocks(t *testing.T) {
	logFile := filepath.Join(t.TempDir(), "mail.log")
	appendLog(t, logFile)
	release := make(chan struct{})
	var once sync.Once
	var calls atomic.Int32
	s, stop := running(t, Options{LogFile: logFile, OnBlock: func(block.Block, bool) { <-release; calls.Add(1) }}, zap.NewNop())
	t.Cleanup(func() { once.Do(func() { close(release) }) }) // before stop, should the test fail
	now := time.Now()
	for i := range 5 {
		appendLog(t, logFile, ipv4Refusal(now, fmt.Sprintf("BBBBB%d", i), fmt.Sprintf("d%d.example", i)))
	}
	waitQueueID(t, s, "d4.example", "BBBBB4")
	once.Do(func() { close(release) })
	stop()
	if n := calls.Load(); n != 5 {
		t.Errorf("%d OnBlock calls, want 5", n)
	}
}

// Refusals older than block_ttl, read from the start of a log, are not
// learned; one info line counts them when reading reaches recent lines,
// and one more for a log that ends with old lines.
func TestOldRefusalsCounted(t *testing.T) {
	logFile := filepath.Join(t.TempDir(), "mail.log")
	now := time.Now()
	old := now.Add(-3 * time.Hour)
	appendLog(t, logFile,
		ipv4Refusal(old, "CCCCC1", "a.example"),
		ipv6Refusal(old.Add(time.Minute), "CCCCC2", "b.example"),
		ipv4Refusal(old.Add(2*time.Minute), "CCCCC3", "c.example"),
		ipv4Refusal(now, "CCCCC4", "new.example"))
	core, logs := observer.New(zapcore.InfoLevel)
	// Ticks far apart compared with reading four lines: a log is not
	// reported as ending between two of them.
	s, _ := running(t, Options{LogFile: logFile, SaveEvery: 200 * time.Millisecond}, zap.New(core))
	waitQueueID(t, s, "new.example", "CCCCC4")
	counted := func() []int {
		var n []int
		for _, e := range logs.FilterMessageSnippet("older than block_ttl").All() {
			n = append(n, int(e.ContextMap()["count"].(int64)))
		}
		return n
	}
	testutil.Eventually(t, "the old refusals are counted", func() bool { return len(counted()) == 1 })
	for _, d := range []string{"a.example", "b.example", "c.example"} {
		if _, ok := s.Lookup(d, nil, now); ok {
			t.Errorf("%s learned from a line older than block_ttl", d)
		}
	}
	// The log ends with old lines: reported once the ticks find no more.
	appendLog(t, logFile, ipv4Refusal(old, "CCCCC6", "d.example"), ipv4Refusal(old, "CCCCC7", "e.example"))
	testutil.Eventually(t, "a log ending with old lines is reported at a quiet tick", func() bool { return len(counted()) == 2 })
	if diff := cmp.Diff([]int{3, 2}, counted()); diff != "" {
		t.Errorf("counts logged (-want +got):\n%s", diff)
	}
}
