// Package alert tells the postmaster what mxdetour noticed — a block
// learned, one of our addresses listed or clean again, a destination that
// changed route because of either — without flooding them: events are
// grouped into at most one alert per interval. An alert goes out as a mail
// through the local sendmail command (so it queues and retries like any
// mail, RFC 3834 Auto-Submitted), as a JSON POST to a webhook, or both.
//
// Notify never blocks the caller: the decision path may call it.
package alert

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// Options say where alerts go. With neither MailTo nor WebhookURL, events
// are only logged.
type Options struct {
	MailTo     string        // recipient of alert mail; "" = no mail
	From       string        // envelope and header sender; "" = sendmail's default (the running user)
	Sendmail   string        // path of Postfix's sendmail command
	WebhookURL string        // receives a JSON POST; "" = none
	Interval   time.Duration // at most one alert per interval; later events wait and are grouped
	Daemon     string        // who speaks: "mxdetour-policyd"
	Hostname   string        // this host, for the subject; "" = os.Hostname
	MaxEvents  int           // events kept per alert; more are counted, not listed (default 100)
}

// Event is one thing the postmaster should know.
type Event struct {
	Time    time.Time         `json:"time"`
	Kind    string            `json:"kind"`    // "block-learned", "listed", "delisted", "route-changed", "limit" ...
	Summary string            `json:"summary"` // one line for a person
	Fields  map[string]string `json:"fields,omitempty"`
}

// Alerter groups events and sends them. The zero interval sends each event
// at once.
type Alerter struct {
	o   Options
	log *zap.Logger

	mu       sync.Mutex
	pending  []Event
	sending  []Event // taken from pending by the send under way
	dropped  int
	lastSent time.Time
	wake     chan struct{}
	quit     chan struct{} // closed by Stop
	quitOnce sync.Once
	done     chan struct{} // closed when Run has sent its last
	running  atomic.Bool
	client   *http.Client
	now      func() time.Time
	once     map[string]time.Time // NotifyOnce: when each key was last let through
}

// New returns an Alerter; call Run to send.
func New(o Options, log *zap.Logger) *Alerter {
	if o.MaxEvents <= 0 {
		o.MaxEvents = 100
	}
	if o.Hostname == "" {
		o.Hostname, _ = os.Hostname()
	}
	return &Alerter{o: o, log: log, wake: make(chan struct{}, 1), quit: make(chan struct{}), done: make(chan struct{}),
		client: &http.Client{Timeout: 10 * time.Second}, now: time.Now}
}

// Configure replaces the destinations and the interval (SIGHUP); events
// already waiting go to the new destinations.
func (a *Alerter) Configure(o Options) {
	if o.MaxEvents <= 0 {
		o.MaxEvents = 100
	}
	if o.Hostname == "" {
		o.Hostname = a.opts().Hostname
	}
	a.mu.Lock()
	a.o = o
	a.mu.Unlock()
	select {
	case a.wake <- struct{}{}:
	default:
	}
}

func (a *Alerter) opts() Options {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.o
}

// Enabled reports whether alerts go anywhere but the log.
func (a *Alerter) Enabled() bool {
	if a == nil {
		return false
	}
	o := a.opts()
	return o.MailTo != "" || o.WebhookURL != ""
}

// Notify records e for the next alert; it never blocks. A nil Alerter
// ignores it.
func (a *Alerter) Notify(e Event) {
	if a == nil {
		return
	}
	if e.Time.IsZero() {
		e.Time = a.now()
	}
	a.log.Warn("alert: "+e.Summary, zap.String("kind", e.Kind), zap.Any("fields", e.Fields))
	if !a.Enabled() {
		return
	}
	a.mu.Lock()
	if len(a.pending) < a.o.MaxEvents {
		a.pending = append(a.pending, e)
	} else {
		a.dropped++
	}
	a.mu.Unlock()
	select {
	case a.wake <- struct{}{}:
	default:
	}
}

// onceMinimum is how long NotifyOnce keeps a key quiet when the interval
// is zero (every alert at once): a fault that repeats with every message
// must not become one alert per message.
const onceMinimum = time.Hour

// maxOnceKeys bounds the keys NotifyOnce remembers.
const maxOnceKeys = 10000

// NotifyOnce is Notify for a condition that repeats until someone fixes
// it (the same sender domain failing authentication at every receiver):
// the event of one key is let through at most once per interval (an hour
// when the interval is zero), counted from its first time; the others are
// dropped without a word, for the caller logs them. It reports whether e
// was let through. A nil Alerter ignores e.
func (a *Alerter) NotifyOnce(key string, e Event) bool {
	if a == nil {
		return false
	}
	now := a.now()
	a.mu.Lock()
	quiet := a.o.Interval
	if quiet <= 0 {
		quiet = onceMinimum
	}
	if a.once == nil {
		a.once = map[string]time.Time{}
	}
	if len(a.once) >= maxOnceKeys {
		for k, t := range a.once {
			if now.Sub(t) >= quiet {
				delete(a.once, k)
			}
		}
	}
	last, seen := a.once[key]
	ok := seen && now.Sub(last) >= quiet || !seen && len(a.once) < maxOnceKeys
	if ok {
		a.once[key] = now
	}
	a.mu.Unlock()
	if ok {
		a.Notify(e)
	}
	return ok
}

// Run sends grouped alerts until ctx ends or Stop is called, then sends
// what is pending, whatever the interval.
func (a *Alerter) Run(ctx context.Context) {
	a.running.Store(true)
	defer close(a.done)
	var timer <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			a.flush(context.Background())
			return
		case <-a.quit:
			a.flush(context.Background()) // the sends have their own time limits
			return
		case <-a.wake:
		case <-timer:
			timer = nil
		}
		if wait := a.lastSentAt().Add(a.opts().Interval).Sub(a.now()); wait > 0 {
			if timer == nil {
				timer = time.After(wait)
			}
			continue
		}
		a.flush(ctx)
	}
}

// Stop ends Run and waits until what was pending has been sent, or until
// ctx ends (the daemon's grace period): then every event not sent is
// written to the log as unsent, so that none disappears at exit. Without
// a Run, Stop sends what is pending itself, within ctx.
func (a *Alerter) Stop(ctx context.Context) {
	if a == nil {
		return
	}
	a.quitOnce.Do(func() { close(a.quit) })
	if !a.running.Load() {
		a.flush(ctx)
		return
	}
	select {
	case <-a.done:
	case <-ctx.Done():
		a.mu.Lock()
		unsent := append(slices.Clone(a.sending), a.pending...)
		a.mu.Unlock()
		for _, e := range unsent {
			a.log.Error("alert not sent before exit", zap.String("kind", e.Kind), zap.String("summary", e.Summary), zap.Any("fields", e.Fields))
		}
	}
}

func (a *Alerter) lastSentAt() time.Time {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.lastSent
}

// flush sends the pending events as one alert.
func (a *Alerter) flush(ctx context.Context) {
	a.mu.Lock()
	events, dropped, o := a.pending, a.dropped, a.o
	a.pending, a.dropped, a.sending = nil, 0, events
	if len(events) > 0 {
		a.lastSent = a.now()
	}
	a.mu.Unlock()
	if len(events) == 0 {
		return
	}
	defer func() {
		a.mu.Lock()
		a.sending = nil
		a.mu.Unlock()
	}()
	if o.MailTo != "" {
		if err := mail(ctx, o, events, dropped); err != nil {
			a.log.Error("alert mail not sent", zap.String("to", o.MailTo), zap.Error(err))
		}
	}
	if o.WebhookURL != "" {
		if err := post(ctx, a.client, o, events, dropped); err != nil {
			a.log.Error("alert webhook not called", zap.Error(err))
		}
	}
}

// Subject is the one line an alert is known by.
func subject(o Options, events []Event) string {
	s := fmt.Sprintf("[%s %s] %s", o.Daemon, o.Hostname, events[0].Summary)
	if len(events) > 1 {
		s += fmt.Sprintf(" (+%d more)", len(events)-1)
	}
	return s
}

// Message renders the alert mail (RFC 5322, Auto-Submitted per RFC 3834).
func message(o Options, events []Event, dropped int) []byte {
	var b bytes.Buffer
	if o.From != "" {
		fmt.Fprintf(&b, "From: %s\n", o.From)
	}
	fmt.Fprintf(&b, "To: %s\nSubject: %s\nAuto-Submitted: auto-generated\nContent-Type: text/plain; charset=utf-8\n\n",
		o.MailTo, oneLine(subject(o, events)))
	for _, e := range events {
		fmt.Fprintf(&b, "%s  %s\n", e.Time.UTC().Format(time.RFC3339), e.Summary)
		for _, k := range sortedKeys(e.Fields) {
			fmt.Fprintf(&b, "    %s: %s\n", k, oneLine(e.Fields[k]))
		}
	}
	if dropped > 0 {
		fmt.Fprintf(&b, "\n%d more events were not listed; see the log.\n", dropped)
	}
	fmt.Fprintf(&b, "\n-- \n%s on %s\n", o.Daemon, o.Hostname)
	return b.Bytes()
}

func mail(ctx context.Context, o Options, events []Event, dropped int) error {
	args := []string{"-i"}
	if o.From != "" {
		args = append(args, "-f", o.From)
	}
	args = append(args, "--", o.MailTo)
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, o.Sendmail, args...)
	cmd.Stdin = bytes.NewReader(message(o, events, dropped))
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s: %w: %s", o.Sendmail, err, bytes.TrimSpace(out))
	}
	return nil
}

// Payload is the webhook's JSON body.
type Payload struct {
	Daemon  string  `json:"daemon"`
	Host    string  `json:"host"`
	Subject string  `json:"subject"`
	Events  []Event `json:"events"`
	Dropped int     `json:"dropped,omitempty"`
}

func post(ctx context.Context, client *http.Client, o Options, events []Event, dropped int) error {
	body, err := json.Marshal(Payload{Daemon: o.Daemon, Host: o.Hostname, Subject: subject(o, events), Events: events, Dropped: dropped})
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, o.WebhookURL, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("webhook answered %s", resp.Status)
	}
	return nil
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
