package alert

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"

	"github.com/mxdetour/mxdetour/internal/testutil"
)

// hook is a loopback webhook that records what it was sent.
type hook struct {
	mu   sync.Mutex
	got  []Payload
	code int
}

func (h *hook) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var p Payload
	if r.Header.Get("Content-Type") != "application/json" || json.NewDecoder(r.Body).Decode(&p) != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.got = append(h.got, p)
	if h.code != 0 {
		w.WriteHeader(h.code)
	}
}

func (h *hook) payloads() []Payload {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]Payload(nil), h.got...)
}

// fakeSendmail writes a sendmail that records its arguments and its input,
// one file pair per call.
func fakeSendmail(t *testing.T) (path, dir string) {
	dir = t.TempDir()
	path = filepath.Join(dir, "sendmail")
	script := "#!/bin/sh\nn=$(date +%s%N)\necho \"$@\" > " + dir + "/args.$n\ncat > " + dir + "/msg.$n\n"
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return path, dir
}

func calls(t *testing.T, dir string) (args, msgs []string) {
	files, _ := filepath.Glob(filepath.Join(dir, "msg.*"))
	for _, f := range files {
		m, _ := os.ReadFile(f)
		a, _ := os.ReadFile(strings.Replace(f, "msg.", "args.", 1))
		msgs = append(msgs, string(m))
		args = append(args, strings.TrimSpace(string(a)))
	}
	return args, msgs
}

func TestGroupedAlertsByMailAndWebhook(t *testing.T) {
	h := &hook{}
	srv := httptest.NewServer(h)
	defer srv.Close()
	sendmail, dir := fakeSendmail(t)
	a := New(Options{MailTo: "postmaster@example.net", From: "mxdetour@mx1.example.net", Sendmail: sendmail,
		WebhookURL: srv.URL, Interval: 500 * time.Millisecond, Daemon: "mxdetour-policyd", Hostname: "mx1"}, zaptest.NewLogger(t))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { a.Run(ctx); close(done) }()

	a.Notify(Event{Kind: "block-learned", Summary: "gmail.com blocks us", Fields: map[string]string{"mx": "gmail-smtp-in.l.google.com", "reply": "550-5.7.1 ...\nmore"}})
	testutil.Eventually(t, "the first alert, sent at once", func() bool { return len(h.payloads()) == 1 })
	a.Notify(Event{Kind: "listed", Summary: "2001:db8::25 is listed on zen.spamhaus.org"})
	a.Notify(Event{Kind: "route-changed", Summary: "outlook.com now goes by ipv4"})
	testutil.Eventually(t, "the grouped second alert", func() bool { return len(h.payloads()) == 2 })

	p := h.payloads()
	if len(p[0].Events) != 1 || p[0].Events[0].Kind != "block-learned" || p[0].Host != "mx1" || p[0].Daemon != "mxdetour-policyd" {
		t.Errorf("first alert: %+v", p[0])
	}
	if len(p[1].Events) != 2 || p[1].Subject != "[mxdetour-policyd mx1] 2001:db8::25 is listed on zen.spamhaus.org (+1 more)" {
		t.Errorf("second alert: %+v", p[1])
	}
	testutil.Eventually(t, "two mails", func() bool { _, m := calls(t, dir); return len(m) == 2 })
	args, msgs := calls(t, dir)
	if args[0] != "-i -f mxdetour@mx1.example.net -- postmaster@example.net" {
		t.Errorf("sendmail args %q", args[0])
	}
	for _, want := range []string{"To: postmaster@example.net\n", "Auto-Submitted: auto-generated\n",
		"Subject: [mxdetour-policyd mx1] gmail.com blocks us\n", "    reply: 550-5.7.1 ... more\n", "    mx: gmail-smtp-in.l.google.com\n"} {
		if !strings.Contains(msgs[0], want) {
			t.Errorf("first mail lacks %q:\n%s", want, msgs[0])
		}
	}
	cancel()
	<-done
}

// TestShutdownSendsPending: what waits for the interval is sent at exit.
func TestShutdownSendsPending(t *testing.T) {
	h := &hook{}
	srv := httptest.NewServer(h)
	defer srv.Close()
	a := New(Options{WebhookURL: srv.URL, Interval: time.Hour, Daemon: "d", Hostname: "h"}, zaptest.NewLogger(t))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { a.Run(ctx); close(done) }()
	a.Notify(Event{Kind: "listed", Summary: "one"})
	testutil.Eventually(t, "the first alert", func() bool { return len(h.payloads()) == 1 })
	a.Notify(Event{Kind: "delisted", Summary: "two"})
	time.Sleep(50 * time.Millisecond) // give Run the chance to (wrongly) send before the interval
	if n := len(h.payloads()); n != 1 {
		t.Fatalf("%d alerts within the interval, want 1", n)
	}
	cancel()
	<-done
	if p := h.payloads(); len(p) != 2 || p[1].Events[0].Summary != "two" {
		t.Errorf("pending event not sent at exit: %+v", p)
	}
}

// TestBounded: a flood of events keeps MaxEvents and counts the rest.
func TestBounded(t *testing.T) {
	h := &hook{code: http.StatusInternalServerError}
	srv := httptest.NewServer(h)
	defer srv.Close()
	a := New(Options{WebhookURL: srv.URL, Interval: time.Hour, MaxEvents: 3}, zaptest.NewLogger(t))
	for range 10 {
		a.Notify(Event{Kind: "k", Summary: "s"})
	}
	a.flush(context.Background()) // a failing webhook is logged, not retried forever
	if p := h.payloads(); len(p) != 1 || len(p[0].Events) != 3 || p[0].Dropped != 7 {
		t.Errorf("got %+v", p)
	}
	var nilA *Alerter
	nilA.Notify(Event{}) // a daemon without alerts passes nil
	if nilA.Enabled() || New(Options{}, zaptest.NewLogger(t)).Enabled() {
		t.Error("an alerter without destinations is enabled")
	}
}

// TestStopSendsPendingBeforeReturning: an event that waits for the
// interval is sent by the time Stop returns, as the daemon exits after.
func TestStopSendsPendingBeforeReturning(t *testing.T) {
	h := &hook{}
	srv := httptest.NewServer(h)
	defer srv.Close()
	a := New(Options{WebhookURL: srv.URL, Interval: time.Hour, Daemon: "d", Hostname: "h"}, zaptest.NewLogger(t))
	go a.Run(context.Background())
	a.Notify(Event{Kind: "listed", Summary: "one"})
	testutil.Eventually(t, "the first alert", func() bool { return len(h.payloads()) == 1 })
	a.Notify(Event{Kind: "own-fault", Summary: "two"})
	a.Stop(context.Background())
	if p := h.payloads(); len(p) != 2 || p[1].Events[0].Summary != "two" {
		t.Errorf("pending event not sent before Stop returned: %+v", p)
	}
}

// TestStopLogsUnsent: when the send outlasts the grace period, Stop
// returns and names every event that was not sent in the log.
func TestStopLogsUnsent(t *testing.T) {
	arrived, release := make(chan struct{}, 1), make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		<-release
	}))
	defer srv.Close()
	defer close(release)
	core, logs := observer.New(zap.InfoLevel)
	a := New(Options{WebhookURL: srv.URL, Interval: time.Hour, Daemon: "d", Hostname: "h"}, zap.New(core))
	a.Notify(Event{Kind: "listed", Summary: "stuck"})
	go a.Run(context.Background())
	<-arrived // being sent
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // the grace period is over before the webhook answers
	a.Stop(ctx)
	got := logs.FilterMessage("alert not sent before exit").All()
	if len(got) != 1 || got[0].ContextMap()["summary"] != "stuck" {
		t.Errorf("unsent alerts logged: %v", got)
	}
}

// NotifyOnce lets an event of one key through at most once per interval,
// counted from the first, and each key on its own; with the interval zero,
// once an hour. The clock is the test's: no sleeping.
func TestNotifyOnce(t *testing.T) {
	for _, tc := range []struct {
		name     string
		interval time.Duration
		quiet    time.Duration // how long a key stays quiet
	}{
		{"interval 15m", 15 * time.Minute, 15 * time.Minute},
		{"interval 0: an hour", 0, time.Hour},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := New(Options{Interval: tc.interval, Daemon: "test"}, zaptest.NewLogger(t))
			start := time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC)
			now := start
			a.now = func() time.Time { return now }
			e := Event{Kind: "own-fault", Summary: "fix it"}
			steps := []struct {
				at   time.Duration
				key  string
				want bool
			}{
				{0, "authentication a.example", true},
				{time.Second, "authentication a.example", false},
				{time.Second, "authentication b.example", true}, // another sender domain
				{time.Second, "ptr 192.0.2.1", true},            // another kind
				{tc.quiet - time.Nanosecond, "authentication a.example", false},
				{tc.quiet, "authentication a.example", true},
				{tc.quiet + time.Minute, "authentication a.example", false}, // counted from the last one let through
				{tc.quiet + time.Second, "authentication b.example", true},
				{2*tc.quiet - time.Nanosecond, "authentication a.example", false},
				{2 * tc.quiet, "authentication a.example", true},
			}
			for i, s := range steps {
				now = start.Add(s.at)
				if got := a.NotifyOnce(s.key, e); got != s.want {
					t.Errorf("step %d (%s at +%s): let through %v, want %v", i, s.key, s.at, got, s.want)
				}
			}
		})
	}
}

// NotifyOnce remembers at most maxOnceKeys keys: a key beyond them is
// dropped until the oldest have been quiet for an interval.
func TestNotifyOnceBounded(t *testing.T) {
	a := New(Options{Interval: time.Minute}, zap.NewNop())
	now := time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC)
	a.now = func() time.Time { return now }
	for i := range maxOnceKeys {
		if !a.NotifyOnce(fmt.Sprint("k", i), Event{}) {
			t.Fatalf("key %d dropped", i)
		}
	}
	if a.NotifyOnce("one too many", Event{}) {
		t.Error("a key beyond the bound was let through")
	}
	now = now.Add(time.Minute)
	if !a.NotifyOnce("one too many", Event{}) {
		t.Error("a key was dropped after the others had been quiet for an interval")
	}
}
