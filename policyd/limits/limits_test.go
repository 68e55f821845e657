package limits

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/mxdetour/mxdetour/internal/alert"
)

// notes collects alerts.
type notes struct {
	mu sync.Mutex
	ev []alert.Event
}

func (n *notes) Notify(e alert.Event) {
	n.mu.Lock()
	n.ev = append(n.ev, e)
	n.mu.Unlock()
}

func (n *notes) events() []alert.Event {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]alert.Event(nil), n.ev...)
}

// clock is a test's time.
type clock struct{ t time.Time }

func (c *clock) now() time.Time          { return c.t }
func (c *clock) advance(d time.Duration) { c.t = c.t.Add(d) }
func newClock() *clock                   { return &clock{t: t0} }
func limit(k KeyType, max int) Limit     { return Limit{Key: k, Max: max, Window: time.Hour, Action: Hold} }
func trusted() []netip.Prefix            { return []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")} }
func newLimiter(t *testing.T, o Options, c *clock, n Notifier) *Limiter {
	t.Helper()
	l := New(o, NewMemory(), n, zaptest.NewLogger(t))
	l.now = c.now
	return l
}

// msg is one mail transaction as Postfix asks about it: a request per
// RCPT, and one at END-OF-MESSAGE with recipient_count. It returns the
// answers, "" for none.
type msg struct {
	login, sender, client string
	rcpts                 []string
	provider              string
	stages                string // "rcpt", "eom" or "rcpt+eom" (default), "rcpt+data+eom"
}

var instances int

func (l *Limiter) send(m msg) []string {
	instances++
	inst := "4711.6b056c58.f2a9b." + strconv.Itoa(instances)
	if m.client == "" {
		m.client = "192.0.2.10"
	}
	if m.stages == "" {
		m.stages = "rcpt+eom"
	}
	base := Request{Instance: inst, Sender: m.sender, SASLUsername: m.login, ClientAddress: m.client, Provider: m.provider}
	var out []string
	ask := func(r Request) {
		a, _ := l.Check(context.Background(), &r)
		out = append(out, a)
	}
	accepted := len(m.rcpts) // as Postfix's recipient_count: those not refused at RCPT
	if strings.Contains(m.stages, "rcpt") {
		for i, rc := range m.rcpts {
			r := base
			r.Stage, r.Recipient = "RCPT", rc
			if i > 0 {
				r.QueueID = "Q" + inst
			}
			ask(r)
			if a := out[len(out)-1]; strings.HasPrefix(a, "4") || strings.HasPrefix(a, "5") {
				accepted--
			}
		}
	}
	for _, st := range []string{"data", "eom"} {
		if strings.Contains(m.stages, st) {
			r := base
			r.Stage, r.RecipientCount, r.QueueID = map[string]string{"data": "DATA", "eom": "END-OF-MESSAGE"}[st], accepted, "Q"+inst
			if len(m.rcpts) == 1 {
				r.Recipient = m.rcpts[0]
			}
			ask(r)
		}
	}
	return out
}

func held(answers []string) bool {
	for _, a := range answers {
		if strings.HasPrefix(a, "HOLD ") {
			return true
		}
	}
	return false
}

func count(l *Limiter, lim Limit, subject string) int {
	return l.store.Count(lim.ID()+"|"+subject, lim.Window, l.now())
}

// Each recipient counts once whichever stages Postfix asks at.
func TestRecipientCounting(t *testing.T) {
	lim := limit(KeySASL, 100)
	for _, stages := range []string{"rcpt", "eom", "rcpt+eom", "rcpt+data+eom"} {
		t.Run(stages, func(t *testing.T) {
			l := newLimiter(t, Options{Limits: []Limit{lim}}, newClock(), nil)
			l.send(msg{login: "alice", sender: "alice@ours.test", rcpts: []string{"a@x.test", "b@y.test", "c@z.test"}, stages: stages})
			l.send(msg{login: "alice", sender: "alice@ours.test", rcpts: []string{"d@x.test"}, stages: stages})
			if got := count(l, lim, "sasl_username:alice"); got != 4 {
				t.Errorf("counted %d recipients, want 4", got)
			}
		})
	}
}

// A policy service wired twice at RCPT (routing and limits) asks twice
// for one recipient: counted once.
// A transaction's later requests reuse its subjects and counter keys only
// while they name the same sender, login and client: one that names
// another is counted for that one.
func TestSubjectsKeptPerTransaction(t *testing.T) {
	sender, login := limit(KeySender, 100), limit(KeySASL, 100)
	l := newLimiter(t, Options{Trusted: trusted(), Limits: []Limit{sender, login}}, newClock(), nil)
	ask := func(from, user, rcpt string) {
		r := Request{Stage: "RCPT", Instance: "4711.1", Sender: from, SASLUsername: user, ClientAddress: "127.0.0.1", Recipient: rcpt}
		l.Check(context.Background(), &r)
	}
	ask("a@ours.test", "", "x1@x.test")
	ask("a@ours.test", "", "x2@x.test")
	ask("B@ours.test", "", "x3@x.test") // trusted, no login: keyed by the sender
	ask("b@ours.test", "carol", "x4@x.test")
	for _, c := range []struct {
		lim     Limit
		subject string
		want    int
	}{
		{sender, "sender:a@ours.test", 2}, {login, "sender:a@ours.test", 2},
		{sender, "sender:b@ours.test", 2}, {login, "sender:b@ours.test", 1},
		{login, "sasl_username:carol", 1},
	} {
		if got := count(l, c.lim, c.subject); got != c.want {
			t.Errorf("%s %s: counted %d, want %d", c.lim.ID(), c.subject, got, c.want)
		}
	}
}

func TestSameRcptAskedTwice(t *testing.T) {
	lim := limit(KeySASL, 100)
	l := newLimiter(t, Options{Limits: []Limit{lim}}, newClock(), nil)
	for range 2 {
		l.Check(context.Background(), &Request{Stage: "RCPT", Instance: "1.2.3", SASLUsername: "alice", ClientAddress: "192.0.2.1", Recipient: "a@x.test"})
	}
	l.Check(context.Background(), &Request{Stage: "END-OF-MESSAGE", Instance: "1.2.3", SASLUsername: "alice", ClientAddress: "192.0.2.1", RecipientCount: 1, QueueID: "Q1"})
	if got := count(l, lim, "sasl_username:alice"); got != 1 {
		t.Errorf("counted %d, want 1", got)
	}
}

// Past the limit the message that crosses it and the following ones are
// held, with the documented text, until the window drops under the limit;
// other senders and mail from the world are not affected.
func TestHoldUntilTheWindowDrops(t *testing.T) {
	c := newClock()
	n := &notes{}
	lim := limit(KeySASL, 3)
	l := newLimiter(t, Options{Limits: []Limit{lim}, Trusted: trusted()}, c, n)
	alice := msg{login: "alice", sender: "alice@ours.test", rcpts: []string{"a@gmail.test", "b@gmail.test"}}
	if a := l.send(alice); held(a) {
		t.Fatalf("first message held: %q", a)
	}
	c.advance(time.Minute)
	a := l.send(alice) // 3rd and 4th recipient: crosses the limit at the 4th
	if diff := cmp.Diff([]string{"", "HOLD mxdetour: sasl_username limit exceeded (4/3 in 1h)",
		"HOLD mxdetour: sasl_username limit exceeded (4/3 in 1h)"}, a); diff != "" {
		t.Fatalf("answers (-want +got):\n%s", diff)
	}
	// The held message gave back what it counted: 2 remain.
	if got := count(l, lim, "sasl_username:alice"); got != 2 {
		t.Errorf("after the hold: %d counted, want 2", got)
	}
	c.advance(time.Minute)
	if a := l.send(msg{login: "alice", sender: "alice@ours.test", rcpts: []string{"c@gmail.test", "d@gmail.test"}}); !held(a) {
		t.Errorf("the next message is not held: %q", a)
	}
	if a := l.send(msg{login: "bob", sender: "bob@ours.test", rcpts: []string{"x@gmail.test", "y@gmail.test", "z@gmail.test"}}); held(a) {
		t.Errorf("another account was held: %q", a)
	}
	if a := l.send(msg{sender: "alice@ours.test", client: "198.51.100.7", rcpts: []string{"a@ours.test", "b@ours.test", "c@ours.test", "d@ours.test"}}); held(a) {
		t.Errorf("mail from the world was held: %q", a)
	}
	// An hour after the first message its two recipients have left the window.
	c.advance(time.Hour)
	if a := l.send(alice); held(a) {
		t.Errorf("still held after the window dropped under the limit: %q", a)
	}
	ev := n.events()
	if len(ev) != 1 {
		t.Fatalf("%d alerts, want one per key and window: %+v", len(ev), ev)
	}
	f := ev[0].Fields
	if ev[0].Kind != "limit" || f["key"] != "sasl_username:alice" || f["count"] != "4" || f["max"] != "3" ||
		!strings.Contains(f["destinations"], "gmail.test (") || !strings.Contains(f["clients"], "192.0.2.10") {
		t.Errorf("alert: %+v", ev[0])
	}
	// The held messages are known by queue id for `holds`.
	hs := l.Held()
	if len(hs) != 2 || hs[0].Key != "sasl_username:alice" || !strings.HasPrefix(hs[0].QueueID, "Q") {
		t.Errorf("held records: %+v", hs)
	}
}

func TestActions(t *testing.T) {
	for _, tc := range []struct {
		action Action
		want   string
	}{
		{Defer, "450 4.7.1 mxdetour: sender limit exceeded (2/1 in 30m)"},
		{Reject, "550 5.7.1 mxdetour: sender limit exceeded (2/1 in 30m)"},
	} {
		lim := Limit{Key: KeySender, Max: 1, Window: 30 * time.Minute, Action: tc.action}
		l := newLimiter(t, Options{Limits: []Limit{lim}}, newClock(), nil)
		a := l.send(msg{login: "alice", sender: "Alice@Ours.test", rcpts: []string{"a@x.test", "b@x.test"}})
		// The refused recipient is refused alone; the accepted one goes, and
		// END-OF-MESSAGE (recipient_count 1) adds nothing.
		if diff := cmp.Diff([]string{"", tc.want, ""}, a); diff != "" {
			t.Errorf("%s (-want +got):\n%s", tc.action, diff)
		}
		if got := count(l, lim, "sender:alice@ours.test"); got != 1 {
			t.Errorf("%s: %d counted, want 1", tc.action, got)
		}
		if len(l.Held()) != 0 {
			t.Errorf("%s: recorded as held", tc.action)
		}
	}
}

// A provider limit counts only recipients the route engine put at that
// provider; trusted clients without a login are keyed by sender.
func TestProviderAndTrusted(t *testing.T) {
	google := Limit{Key: KeySASL, Max: 2, Window: time.Hour, Provider: "google", Action: Hold}
	all := limit(KeySASL, 100)
	l := newLimiter(t, Options{Limits: []Limit{all, google}, Trusted: trusted()}, newClock(), nil)
	l.send(msg{client: "127.0.0.1", sender: "www-data@ours.test", rcpts: []string{"a@plain.test", "b@plain.test"}, provider: "default"})
	l.send(msg{client: "127.0.0.1", sender: "www-data@ours.test", rcpts: []string{"c@gmail.test"}, provider: "google"})
	if got := count(l, all, "sender:www-data@ours.test"); got != 3 {
		t.Errorf("all destinations: %d, want 3", got)
	}
	if got := count(l, google, "sender:www-data@ours.test"); got != 1 {
		t.Errorf("google only: %d, want 1", got)
	}
	a := l.send(msg{client: "127.0.0.1", sender: "www-data@ours.test", rcpts: []string{"d@gmail.test", "e@gmail.test"}, provider: "google"})
	if a[1] != "HOLD mxdetour: sasl_username limit for google exceeded (3/2 in 1h)" {
		t.Errorf("answers %q", a)
	}
}

type geoMap map[string]string

func (g geoMap) Country(_ context.Context, ip netip.Addr) (string, error) {
	return g[Network(ip).String()], nil
}

func TestCompromise(t *testing.T) {
	c := newClock()
	n := &notes{}
	g := geoMap{"192.0.2.0/24": "DE", "198.51.100.0/24": "FR", "203.0.113.0/24": "BR", "100.64.0.0/24": "VN", "100.64.1.0/24": "DE"}
	l := newLimiter(t, Options{Compromise: Compromise{MaxCountries: 3, MaxClients: 4, Window: time.Hour}, Geo: g}, c, n)
	one := func(client string) []string {
		c.advance(time.Minute)
		return l.send(msg{login: "carol", sender: "carol@ours.test", client: client, rcpts: []string{"x@y.test"}})
	}
	for _, cl := range []string{"192.0.2.1", "192.0.2.200", "198.51.100.1", "203.0.113.9"} { // 3 networks, 3 countries
		if a := one(cl); held(a) {
			t.Fatalf("%s held: %q", cl, a)
		}
	}
	if a := one("100.64.0.1"); a[0] != "HOLD mxdetour: countries per login exceeded (4/3 in 1h)" {
		t.Fatalf("a 4th country: %q", a)
	}
	if a := one("192.0.2.1"); !held(a) {
		t.Errorf("home again within the window: not held: %q", a)
	}
	if ev := n.events(); len(ev) != 1 || ev[0].Kind != "compromise" {
		t.Errorf("alerts: %+v", ev)
	}
	l.Reset("sasl_username:carol")
	if a := one("100.64.1.1"); held(a) {
		t.Errorf("held after a reset: %q", a)
	}
	// Networks alone: without a country source.
	l2 := newLimiter(t, Options{Compromise: Compromise{MaxCountries: 3, MaxClients: 2, Window: time.Hour}}, c, nil)
	var last []string
	for _, cl := range []string{"192.0.2.1", "2001:db8:1::1", "2001:db8:1:ffff::1", "2001:db8:2::1"} {
		last = l2.send(msg{login: "dave", sender: "d@ours.test", client: cl, rcpts: []string{"x@y.test"}})
	}
	if last[0] != "HOLD mxdetour: client networks per login exceeded (3/2 in 1h)" {
		t.Errorf("a third network: %q", last)
	}
}

// Counters, alert marks and held records survive a restart; a release
// request resets a key whether the daemon runs or starts later.
func TestRestartPersistence(t *testing.T) {
	dir := t.TempDir()
	path := StatePath(filepath.Join(dir, "state.json"))
	c := newClock()
	n := &notes{}
	lim := limit(KeySASL, 3)
	o := Options{Limits: []Limit{lim}}
	l := newLimiter(t, o, c, n)
	if err := l.Open(path); err != nil {
		t.Fatal(err)
	}
	l.send(msg{login: "alice", sender: "a@ours.test", rcpts: []string{"1@x.test", "2@x.test", "3@x.test"}})
	l.send(msg{login: "alice", sender: "a@ours.test", rcpts: []string{"4@x.test"}})
	l.send(msg{login: "bob", sender: "b@ours.test", rcpts: []string{"1@x.test", "2@x.test"}})
	if err := l.Save(); err != nil {
		t.Fatal(err)
	}

	c.advance(5 * time.Minute)
	l2 := newLimiter(t, o, c, n)
	if err := l2.Open(path); err != nil {
		t.Fatal(err)
	}
	if got := count(l2, lim, "sasl_username:alice"); got != 3 {
		t.Errorf("alice after restart: %d, want 3", got)
	}
	if got := count(l2, lim, "sasl_username:bob"); got != 2 {
		t.Errorf("bob after restart: %d, want 2", got)
	}
	if hs := l2.Held(); len(hs) != 1 || hs[0].Key != "sasl_username:alice" {
		t.Errorf("held after restart: %+v", hs)
	}
	if a := l2.send(msg{login: "alice", sender: "a@ours.test", rcpts: []string{"5@x.test"}}); !held(a) {
		t.Errorf("alice not held after restart: %q", a)
	}
	if len(n.events()) != 1 {
		t.Errorf("alerted again after a restart: %+v", n.events())
	}

	// Release while stopped: applied at the next start.
	if err := RequestRelease(path, "sasl_username:alice"); err != nil {
		t.Fatal(err)
	}
	l3 := newLimiter(t, o, c, n)
	if err := l3.Open(path); err != nil {
		t.Fatal(err)
	}
	if got := count(l3, lim, "sasl_username:alice"); got != 0 {
		t.Errorf("alice after release: %d, want 0", got)
	}
	if len(l3.Held()) != 0 {
		t.Errorf("held records after release: %+v", l3.Held())
	}
	if got := count(l3, lim, "sasl_username:bob"); got != 2 {
		t.Errorf("bob after alice's release: %d, want 2", got)
	}
	if m, _ := filepath.Glob(path + ".release-*"); len(m) != 0 {
		t.Errorf("release request files left: %v", m)
	}

	// A corrupt file is set aside; counting starts afresh.
	if err := os.WriteFile(path, []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	l4 := newLimiter(t, o, c, n)
	if err := l4.Open(path); err != nil {
		t.Fatal(err)
	}
	if m, _ := filepath.Glob(path + ".corrupt-*"); len(m) != 1 {
		t.Errorf("corrupt file not set aside: %v", m)
	}
}

// A running limiter applies a release request within a poll.
func TestReleaseWhileRunning(t *testing.T) {
	path := filepath.Join(t.TempDir(), "limits.json")
	lim := limit(KeySASL, 1)
	l := New(Options{Limits: []Limit{lim}}, NewMemory(), nil, zaptest.NewLogger(t))
	if err := l.Open(path); err != nil {
		t.Fatal(err)
	}
	l.Run()
	defer l.Stop()
	l.Check(context.Background(), &Request{Stage: "RCPT", Instance: "i1", SASLUsername: "alice", ClientAddress: "192.0.2.1", Recipient: "a@x.test"})
	if got := count(l, lim, "sasl_username:alice"); got != 1 {
		t.Fatalf("count %d", got)
	}
	if err := RequestRelease(path, "sasl_username:alice"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for count(l, lim, "sasl_username:alice") != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the release request was not applied")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestFormatWindow(t *testing.T) {
	for in, want := range map[time.Duration]string{
		time.Hour: "1h", 90 * time.Minute: "1h30m", 30 * time.Second: "30s", 24 * time.Hour: "24h",
		time.Hour + 30*time.Second: "1h0m30s", 10 * time.Minute: "10m",
	} {
		if got := FormatWindow(in); got != want {
			t.Errorf("FormatWindow(%v) = %q, want %q", in, got, want)
		}
	}
}

// BenchmarkCheck is one RCPT counted by two limits, from parallel
// connections of one sender (the worst case: one key, one lock).
func BenchmarkCheck(b *testing.B) {
	l := New(Options{Trusted: trusted(), Limits: []Limit{
		{Key: KeySASL, Max: 1 << 30, Window: time.Hour, Action: Hold},
		{Key: KeyClient, Max: 1 << 30, Window: time.Hour, Provider: "google", Action: Hold},
	}}, NewMemory(), nil, zap.NewNop())
	var conn atomic.Int64
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		inst := strconv.FormatInt(conn.Add(1), 10) + ".1"
		r := Request{Stage: "RCPT", Instance: inst, Sender: "s@sender.bench", ClientAddress: "127.0.0.1", Provider: "google"}
		for i := 0; pb.Next(); i++ {
			r.Recipient = "user" + strconv.Itoa(i&1023) + "@d1.bench"
			l.Check(context.Background(), &r)
		}
	})
}

// The profile's top lists keep the frequent items of a stream of many
// distinct ones, in a fixed space, most frequent first.
func TestTopN(t *testing.T) {
	var top topN
	for i := range 1000 {
		top.add(newItem("d" + strconv.Itoa(i) + ".example"))
		if i%4 == 0 {
			top.add(newItem("gmail.test"))
		}
		if i%10 == 0 {
			top.add(newItem("outlook.test"))
		}
	}
	if top.size != topSize {
		t.Fatalf("%d entries, want %d", top.size, topSize)
	}
	got := strings.Split(top.String(), ", ")
	if len(got) != 5 || got[0] != "gmail.test (250)" || !strings.HasPrefix(got[1], "outlook.test (") {
		t.Errorf("top = %q, want gmail.test (250) first, then outlook.test", got)
	}
	var small topN
	small.add(newItem("b"))
	small.add(newItem("a"))
	small.add(newItem("a"))
	small.add(newItem(""))
	if s := small.String(); s != "a (2), b (1)" {
		t.Errorf("top = %q, want %q", s, "a (2), b (1)")
	}
}

// A restart between a message's RCPTs and its END-OF-MESSAGE (Postfix's
// smtpd reconnects and asks on with the same instance) counts its
// recipients once, and a message held before the restart stays held.
func TestRestartMidTransaction(t *testing.T) {
	path := StatePath(filepath.Join(t.TempDir(), "state.json"))
	c := newClock()
	lim := limit(KeySASL, 4)
	o := Options{Limits: []Limit{lim}}
	ask := func(l *Limiter, stage, inst, rcpt string, n int) string {
		a, _ := l.Check(context.Background(), &Request{Stage: stage, Instance: inst, SASLUsername: "alice",
			Sender: "a@ours.test", ClientAddress: "192.0.2.10", Recipient: rcpt, RecipientCount: n, QueueID: "Q" + inst})
		return a
	}
	l := newLimiter(t, o, c, nil)
	if err := l.Open(path); err != nil {
		t.Fatal(err)
	}
	ask(l, "RCPT", "i1", "1@x.test", 0)
	ask(l, "RCPT", "i1", "2@x.test", 0)
	ask(l, "RCPT", "i1", "3@x.test", 0)
	// A second message goes over the limit at its second recipient: held.
	ask(l, "RCPT", "i2", "4@x.test", 0)
	if a := ask(l, "RCPT", "i2", "5@x.test", 0); !strings.HasPrefix(a, "HOLD ") {
		t.Fatalf("fifth recipient: %q, want HOLD", a)
	}
	if err := l.Save(); err != nil { // as Stop does
		t.Fatal(err)
	}

	c.advance(30 * time.Second)
	l2 := newLimiter(t, o, c, nil)
	if err := l2.Open(path); err != nil {
		t.Fatal(err)
	}
	if a := ask(l2, "END-OF-MESSAGE", "i1", "", 3); a != "" {
		t.Errorf("first message's end after the restart: %q, want no action", a)
	}
	if got := count(l2, lim, "sasl_username:alice"); got != 3 {
		t.Errorf("counted %d after the restart, want 3 (the first message's recipients, once)", got)
	}
	if a := ask(l2, "END-OF-MESSAGE", "i2", "", 2); !strings.HasPrefix(a, "HOLD ") {
		t.Errorf("held message's end after the restart: %q, want HOLD", a)
	}
	// A transaction saved longer ago than a session can idle is not
	// reopened.
	if err := l2.Save(); err != nil {
		t.Fatal(err)
	}
	ask(l2, "RCPT", "i3", "6@x.test", 0)
	if err := l2.Save(); err != nil {
		t.Fatal(err)
	}
	c.advance(txnIdle + time.Minute)
	l3 := newLimiter(t, o, c, nil)
	if err := l3.Open(path); err != nil {
		t.Fatal(err)
	}
	if n := len(l3.txns.save()); n != 0 {
		t.Errorf("%d transactions reopened after %s, want none", n, txnIdle+time.Minute)
	}
}
