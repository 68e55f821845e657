package e2e

import (
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mxdetour/mxdetour/internal/lookup"
	"github.com/mxdetour/mxdetour/internal/lookup/dnstest"
	"github.com/mxdetour/mxdetour/internal/testutil"
)

// The steady load of the fault matrix: one message every interval, each to
// one new recipient in a domain of its own, submitted by a client that
// retries a 4xx (or a refused connection) after a short delay, as an MTA
// does. Each message is a goroutine of its own, so a slow session does not
// slow the rate.
const (
	loadInterval = 200 * time.Millisecond // 5 messages a second
	loadRetry    = 2 * time.Second        // a client's delay before it tries again
	loadGiveUp   = 60 * time.Second       // a client's patience (real ones keep days)
)

// Routes a load message must take.
const (
	wantRelay  = "relay"
	wantDirect = "direct"
	wantReject = "reject" // reserved domain: 550 at RCPT, or bounced
)

// blockedReply is what the direct sink answers for a blocked domain.
const blockedReply = "554 5.7.1 Service unavailable; Client host [127.0.0.1] blocked using zen.spamhaus.org"

type loadMsg struct {
	n        int
	rcpt     string
	want     string
	blocked  bool // its domain's direct destination refuses us as blocklisted
	start    time.Time
	accepted bool
	refused  string // a 5xx at SMTP
	gaveUp   bool
}

// attempt is one SMTP session's outcome: ok (250 after DATA), temp (4xx or
// no connection) or perm (5xx).
type attempt struct {
	at, end time.Time
	class   string
	reply   string
}

type load struct {
	t       *testing.T
	w       *world
	blocked bool // every fifth message to a new blocked domain

	mu       sync.Mutex
	msgs     []*loadMsg
	attempts []attempt
	names    []string // DNS names the load added
	fault    func(name string)

	stopc chan struct{}
	done  chan struct{}
	wg    sync.WaitGroup
}

func startLoad(t *testing.T, w *world, blocked bool) *load {
	l := &load{t: t, w: w, blocked: blocked, stopc: make(chan struct{}), done: make(chan struct{})}
	go l.run()
	return l
}

func (l *load) run() {
	defer close(l.done)
	tick := time.NewTicker(loadInterval)
	defer tick.Stop()
	for n := 0; ; n++ {
		m := l.next(n)
		l.wg.Add(1)
		go l.submit(m)
		select {
		case <-l.stopc:
			return
		case <-tick.C:
		}
	}
}

// next makes message n: its recipient domain goes into the test DNS first.
func (l *load) next(n int) *loadMsg {
	m := &loadMsg{n: n, start: time.Now()}
	var dom string
	var rec dnstest.Records
	switch {
	case n%10 == 9:
		m.rcpt, m.want = fmt.Sprintf("r%d@example.com", n), wantReject
	case l.blocked && n%5 == 2:
		dom = fmt.Sprintf("b%d.load.e2e", n)
		mx := "mx." + dom
		l.addName(mx, dnstest.Records{TTL: 60, A: []string{"192.0.2.26"}})
		rec = dnstest.Records{TTL: 60, MX: []lookup.MX{{Host: mx, Pref: 10}}}
		m.want, m.blocked = wantRelay, true
		l.w.direct.Refuse(dom, blockedReply)
	case n%2 == 0:
		dom = fmt.Sprintf("g%d.load.e2e", n)
		rec = dnstest.Records{TTL: 60, MX: []lookup.MX{{Host: "gmail-smtp-in.l.google.com", Pref: 5}}}
		m.want = wantRelay
	default:
		dom = fmt.Sprintf("p%d.load.e2e", n)
		rec = dnstest.Records{TTL: 60, MX: []lookup.MX{{Host: "mx.plain.e2e", Pref: 10}}}
		m.want = wantDirect
	}
	if dom != "" {
		l.addName(dom, rec)
		m.rcpt = fmt.Sprintf("m%d@%s", n, dom)
	}
	l.mu.Lock()
	l.msgs = append(l.msgs, m)
	l.mu.Unlock()
	return m
}

func (l *load) addName(name string, r dnstest.Records) {
	l.w.dns.Set(name, r)
	l.mu.Lock()
	l.names = append(l.names, name)
	f := l.fault
	l.mu.Unlock()
	if f != nil {
		f(name)
	}
}

// setDNS applies f to every name of the test zone and of the load, now and
// to names added later; nil stops applying it to new names.
func (l *load) setDNS(f func(name string)) {
	l.mu.Lock()
	l.fault = f
	names := append([]string(nil), l.names...)
	l.mu.Unlock()
	if f == nil {
		return
	}
	for name := range zone() {
		f(name)
	}
	for _, name := range names {
		f(name)
	}
}

func (l *load) submit(m *loadMsg) {
	defer l.wg.Done()
	for {
		start := time.Now()
		res := send(l.t, l.w.pf.addr(), submission{From: "load@sender.e2e", To: []string{m.rcpt}})
		class, reply := classify(res, m.rcpt)
		l.mu.Lock()
		l.attempts = append(l.attempts, attempt{at: start, end: time.Now(), class: class, reply: reply})
		switch class {
		case "ok":
			m.accepted = true
		case "perm":
			m.refused = reply
		}
		l.mu.Unlock()
		if class != "temp" {
			return
		}
		if time.Since(m.start) > loadGiveUp {
			l.mu.Lock()
			m.gaveUp = true
			l.mu.Unlock()
			return
		}
		time.Sleep(loadRetry)
	}
}

// classify sorts one session's outcome as a client does.
func classify(res result, rcpt string) (class, reply string) {
	for _, r := range []string{res.Mail, res.Rcpt[rcpt], res.Data} {
		switch {
		case r == "" || strings.HasPrefix(r, "2") || strings.HasPrefix(r, "3"):
			continue
		case strings.HasPrefix(r, "5"):
			return "perm", r
		default: // 4xx, or the connection dropped ("EOF ...")
			return "temp", r
		}
	}
	switch {
	case res.Error != nil:
		return "temp", res.Error.Error()
	case res.accepted():
		return "ok", res.Data
	}
	return "temp", fmt.Sprintf("no final reply: %+v", res)
}

// submitted returns how many messages were started.
func (l *load) submitted() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.msgs)
}

// waitMore waits until n more messages have been submitted: the load, not
// a clock, measures a fault's window.
func (l *load) waitMore(n int) {
	l.t.Helper()
	target := l.submitted() + n
	testutil.EventuallyWithin(l.t, time.Duration(n)*loadInterval*3+10*time.Second, fmt.Sprintf("%d messages submitted", target), func() bool {
		return l.submitted() >= target
	})
}

// stop ends the load and waits for every client to finish (accepted,
// refused or given up).
func (l *load) stop() {
	close(l.stopc)
	<-l.done
	l.wg.Wait()
}

// tally is the count of one case, in recipients (one per message).
type tally struct {
	Submitted, Accepted, Refused5xx, WrongRefusals, GaveUp int
	Relay, Direct                                          int // delivered, per sink
	Queued, Bounced, ExpectedBounces                       int
	Lost, Misrouted, Duplicates                            int
	Temp4xx                                                int
	Window4xx                                              time.Duration // longest span of 4xx answers
	LongestSession                                         time.Duration
}

func (c tally) String() string {
	return fmt.Sprintf("submitted %d accepted %d refused-5xx %d (wrongly %d) gave-up %d | delivered relay %d direct %d | queued %d bounced %d (expected %d) | lost %d misrouted %d duplicates %d | 4xx answers %d, longest 4xx window %v, longest session %v",
		c.Submitted, c.Accepted, c.Refused5xx, c.WrongRefusals, c.GaveUp, c.Relay, c.Direct,
		c.Queued, c.Bounced, c.ExpectedBounces, c.Lost, c.Misrouted, c.Duplicates,
		c.Temp4xx, c.Window4xx.Round(time.Millisecond), c.LongestSession.Round(time.Millisecond))
}

// settled reports whether every accepted message has reached its end:
// delivered where it belongs, or (a reserved domain) bounced.
func (l *load) settled() bool {
	relay, direct := delivered(l.w.relay), delivered(l.w.direct)
	bounced := bouncedRcpts(fullLog(l.w.pf))
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, m := range l.msgs {
		if !m.accepted {
			continue
		}
		switch m.want {
		case wantRelay:
			if relay[m.rcpt] == 0 {
				return false
			}
		case wantDirect:
			if direct[m.rcpt] == 0 {
				return false
			}
		case wantReject:
			if !bounced[m.rcpt] {
				return false
			}
		}
	}
	return true
}

// count tallies the outcome: every message submitted is accounted for.
func (l *load) count() tally {
	relay, direct := delivered(l.w.relay), delivered(l.w.direct)
	bounced := bouncedRcpts(fullLog(l.w.pf))
	queued := queuedRcpts(l.w.pf)
	l.mu.Lock()
	defer l.mu.Unlock()
	var c tally
	c.Submitted = len(l.msgs)
	for _, m := range l.msgs {
		switch {
		case m.refused != "":
			c.Refused5xx++
			if m.want != wantReject {
				c.WrongRefusals++
			}
			continue
		case m.gaveUp:
			c.GaveUp++
			continue
		case !m.accepted:
			continue
		}
		c.Accepted++
		r, d := relay[m.rcpt], direct[m.rcpt]
		c.Relay += r
		c.Direct += d
		if r+d > 1 {
			c.Duplicates++
		}
		if bounced[m.rcpt] {
			c.Bounced++
			if m.want == wantReject {
				c.ExpectedBounces++
			}
		}
		switch {
		case m.want == wantRelay && d > 0, m.want == wantDirect && r > 0, m.want == wantReject && r+d > 0:
			c.Misrouted++
		case r+d > 0, bounced[m.rcpt]:
		case queued[m.rcpt]:
			c.Queued++
		default:
			c.Lost++
		}
	}
	c.Temp4xx, c.Window4xx = tempWindow(l.attempts)
	for _, a := range l.attempts {
		c.LongestSession = max(c.LongestSession, a.end.Sub(a.at))
	}
	return c
}

// tempWindow counts the 4xx answers and finds the longest span from a 4xx
// answer to the next session that got a final (2xx or 5xx) answer.
func tempWindow(as []attempt) (int, time.Duration) {
	sorted := append([]attempt(nil), as...)
	slices.SortFunc(sorted, func(a, b attempt) int { return a.at.Compare(b.at) })
	var n int
	var longest time.Duration
	var open time.Time
	for _, a := range sorted {
		if a.class == "temp" {
			n++
			if open.IsZero() {
				open = a.at
			}
			longest = max(longest, a.end.Sub(open))
			continue
		}
		if !open.IsZero() {
			longest = max(longest, a.end.Sub(open))
			open = time.Time{}
		}
	}
	return n, longest
}

// delivered counts the sink's deliveries per recipient, leaving out
// bounce notifications (null sender).
func delivered(s *sink) map[string]int {
	n := map[string]int{}
	for _, m := range s.Messages() {
		if m.From == "" {
			continue
		}
		for _, r := range m.Rcpts {
			n[r]++
		}
	}
	return n
}

var bouncedRE = regexp.MustCompile(`to=<([^>]*)>.*status=bounced`)

func bouncedRcpts(maillog string) map[string]bool {
	b := map[string]bool{}
	for _, m := range bouncedRE.FindAllStringSubmatch(maillog, -1) {
		b[m[1]] = true
	}
	return b
}

// queuedRcpts lists the recipients still in Postfix's queue (postqueue -j).
func queuedRcpts(p *postfix) map[string]bool {
	q := map[string]bool{}
	for _, line := range strings.Split(p.cmd("postqueue", "-j"), "\n") {
		var e struct {
			Recipients []struct {
				Address string `json:"address"`
			} `json:"recipients"`
		}
		if json.Unmarshal([]byte(line), &e) != nil {
			continue
		}
		for _, r := range e.Recipients {
			q[r.Address] = true
		}
	}
	return q
}
