package limits

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// pickup is mxdetour-milter's one request for a message a local account
// submitted with the sendmail command: END-OF-MESSAGE, the account, the
// recipient count and domains, no client (cleanup's is made up).
func (l *Limiter) pickup(user, sender string, rcpts int, domains string) string {
	instances++
	id := "P" + strconv.Itoa(instances)
	a, _ := l.Check(context.Background(), &Request{Stage: "END-OF-MESSAGE", Instance: "milter:" + id, QueueID: id,
		Sender: sender, RecipientCount: rcpts, LocalUser: user, Destinations: domains})
	return a
}

// A local account's sendmail mail counts under local_user:NAME: past the
// limit its messages are held, recorded under that key for `holds`, and
// alerted once with the destinations the milter named; another account,
// and smtpd's mail of the same sender, keep their own counts.
func TestLocalUserHeld(t *testing.T) {
	c := newClock()
	n := &notes{}
	lim := limit(KeyLocalUser, 10)
	l := newLimiter(t, Options{Limits: []Limit{lim, limit(KeySASL, 10)}, Trusted: trusted()}, c, n)
	var answers []string
	for range 30 {
		answers = append(answers, l.pickup("alice", "alice@ours.test", 1, "gmail.test"))
		c.advance(time.Second)
	}
	want := make([]string, 30)
	for i := 10; i < 30; i++ {
		want[i] = "HOLD mxdetour: local_user limit exceeded (11/10 in 1h)"
	}
	if diff := cmp.Diff(want, answers); diff != "" {
		t.Fatalf("answers (-want +got):\n%s", diff)
	}
	if got := count(l, lim, "local_user:alice"); got != 10 {
		t.Errorf("local_user:alice counted %d, want 10", got)
	}
	hs := l.Held()
	if len(hs) != 20 || hs[0].Key != "local_user:alice" || hs[0].Limit != "local_user limit" || !strings.HasPrefix(hs[0].QueueID, "P") {
		t.Errorf("held records (%d): %+v", len(hs), hs[:min(len(hs), 2)])
	}
	ev := n.events()
	if len(ev) != 1 || ev[0].Fields["key"] != "local_user:alice" || ev[0].Fields["count"] != "11" ||
		ev[0].Fields["destinations"] != "gmail.test (11)" || ev[0].Fields["release"] != "mxdetour-policyd holds release local_user:alice" {
		t.Errorf("alerts: %+v", ev)
	}
	// bob is another account; alice's SMTP login is another key too.
	if a := l.pickup("bob", "bob@ours.test", 3, "x.test"); a != "" {
		t.Errorf("bob held: %q", a)
	}
	if a := l.send(msg{login: "alice", sender: "alice@ours.test", rcpts: []string{"a@x.test", "b@x.test"}}); held(a) {
		t.Errorf("alice's authenticated mail held: %q", a)
	}
	// The release resets the key.
	l.Reset("local_user:alice")
	if a := l.pickup("alice", "alice@ours.test", 1, "gmail.test"); a != "" {
		t.Errorf("after the release: %q", a)
	}
}

// Which limits count a local account's mail: local_user and, as the
// account is its login, sasl_username (by the account, not the sender);
// sender and sender_domain by its envelope sender; client_address never
// (cleanup's client is 127.0.0.1 for every account). A limit's DEFER or
// REJECT is a HOLD for it: Postfix can neither defer nor reject mail
// the sendmail command submitted.
func TestLocalUserKeys(t *testing.T) {
	local, login, sender, client := limit(KeyLocalUser, 5), limit(KeySASL, 5), limit(KeySender, 5), limit(KeyClient, 1)
	login.Action, sender.Action = Defer, Reject
	l := newLimiter(t, Options{Limits: []Limit{local, login, sender, client}, Trusted: trusted()}, newClock(), nil)
	if a := l.pickup("www-data", "wp@ours.test", 4, ""); a != "" {
		t.Fatalf("within the limits: %q", a)
	}
	for _, c := range []struct {
		lim     Limit
		subject string
		want    int
	}{
		{local, "local_user:www-data", 4}, {login, "local_user:www-data", 4}, {sender, "sender:wp@ours.test", 4},
		{client, "client_address:127.0.0.1", 0},
	} {
		if got := count(l, c.lim, c.subject); got != c.want {
			t.Errorf("%s %s: %d, want %d", c.lim.Key, c.subject, got, c.want)
		}
	}
	if a := l.pickup("www-data", "wp@ours.test", 2, ""); a != "HOLD mxdetour: sender limit exceeded (6/5 in 1h)" {
		t.Errorf("over: %q, want the strongest refusal as a HOLD", a)
	}
	if hs := l.Held(); len(hs) != 1 || hs[0].Key != "sender:wp@ours.test" {
		t.Errorf("held: %+v", hs)
	}
	// smtpd's requests name no local account: a local_user limit does not
	// count them.
	l.send(msg{login: "www-data", sender: "x@ours.test", rcpts: []string{"a@x.test"}})
	if got := count(l, local, "local_user:www-data"); got != 4 {
		t.Errorf("smtpd mail counted under local_user: %d", got)
	}
}

// exempt and raise: per-key exceptions of one limit.
func TestExemptAndRaise(t *testing.T) {
	lim := limit(KeyLocalUser, 2)
	lim.Exempt = []string{"local_user:newsletter"}
	lim.Raise = map[string]int{"local_user:shop": 5}
	l := newLimiter(t, Options{Limits: []Limit{lim}}, newClock(), nil)
	for _, c := range []struct {
		user string
		rcpt int
		want string
	}{
		{"newsletter", 1000, ""},
		{"shop", 5, ""},
		{"shop", 1, "HOLD mxdetour: local_user limit exceeded (6/5 in 1h)"},
		{"alice", 2, ""},
		{"alice", 1, "HOLD mxdetour: local_user limit exceeded (3/2 in 1h)"},
	} {
		if a := l.pickup(c.user, c.user+"@ours.test", c.rcpt, ""); a != c.want {
			t.Errorf("%s, %d recipients: %q, want %q", c.user, c.rcpt, a, c.want)
		}
	}
	if got := count(l, lim, "local_user:newsletter"); got != 0 {
		t.Errorf("exempt key counted %d", got)
	}
	// A reload that drops the exception applies it at once.
	l.Configure(Options{Limits: []Limit{limit(KeyLocalUser, 2)}})
	if a := l.pickup("newsletter", "n@ours.test", 3, ""); a == "" {
		t.Error("no longer exempt, but not held")
	}
}

func TestIsSubject(t *testing.T) {
	for s, want := range map[string]bool{
		"local_user:www-data": true, "sasl_username:a": true, "sender:a@b.test": true,
		"local_user:": false, "www-data": false, "login:x": false, "": false,
	} {
		if IsSubject(s) != want {
			t.Errorf("IsSubject(%q) = %v", s, !want)
		}
	}
}
