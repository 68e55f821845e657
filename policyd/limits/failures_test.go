package limits

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"
)

func failureOptions() Options {
	return Options{Failures: Failures{Ratio: 0.5, Min: 30, Window: time.Hour}, Trusted: trusted()}
}

// submit sends one message of user with the sendmail command (or, with
// login, over SMTP AUTH) and returns its queue id and answer.
func (l *Limiter) submit(user, login string) (string, string) {
	if login != "" {
		a := l.send(msg{login: login, sender: login + "@ours.test", rcpts: []string{"x@dest.test"}})
		return "Q4711.6b056c58.f2a9b." + strconv.Itoa(instances), strings.Join(a, "")
	}
	a := l.pickup(user, user+"@ours.test", 1, "dest.test")
	return "P" + strconv.Itoa(instances), a
}

func delivery(id, rcpt, status, dsn string) Result {
	return Result{QueueID: id, Recipient: rcpt, Status: status, DSN: dsn}
}

var notOurs = func() bool { return false }

// An account whose last 30 messages failed 80% with unknown users is held
// from its next message on and alerted once with the figures and the top
// failing destinations; another local account and an SMTP login are not.
// Before Min results nothing is judged.
func TestFailureRatioHoldsUnknownUsers(t *testing.T) {
	c := newClock()
	n := &notes{}
	l := newLimiter(t, failureOptions(), c, n)
	var ids []string
	for range 30 {
		id, a := l.submit("www-data", "")
		if a != "" {
			t.Fatalf("held before any result: %q", a)
		}
		ids = append(ids, id)
		c.advance(time.Second)
	}
	bobID, _ := l.submit("bob", "")
	for i, id := range ids {
		if i < 24 {
			dom := []string{"gmail.test", "gmail.test", "yahoo.test", "aol.test"}[i%4]
			l.Delivered(delivery(id, fmt.Sprintf("u%d@%s", i, dom), "bounced", "5.1.1"), notOurs)
		} else {
			l.Delivered(delivery(id, "friend@dest.test", "sent", "2.0.0"), notOurs)
		}
		if i == 28 {
			if _, a := l.submit("www-data", ""); a != "" {
				t.Fatalf("held after 29 results (below min 30): %q", a)
			}
		}
	}
	l.Delivered(delivery(bobID, "nobody@gmail.test", "bounced", "5.1.1"), notOurs)
	_, a := l.submit("www-data", "")
	if want := "HOLD mxdetour: failure ratio (%) exceeded (80/50 in 1h)"; a != want {
		t.Fatalf("after 24 of 30 failed: %q, want %q", a, want)
	}
	if _, a := l.submit("www-data", ""); a == "" {
		t.Error("the next message was not held")
	}
	for who, login := range map[string]string{"bob": "", "alice": "alice"} {
		if _, a := l.submit(who, login); a != "" {
			t.Errorf("%s held: %q", who, a)
		}
	}
	ev := n.events()
	if len(ev) != 1 {
		t.Fatalf("%d alerts, want 1: %+v", len(ev), ev)
	}
	f := ev[0].Fields
	if f["key"] != "local_user:www-data" || f["failed"] != "24" || f["count"] != "30" || f["ratio"] != "80%" ||
		f["destinations"] != "gmail.test (12), aol.test (6), yahoo.test (6)" || f["failures"] != "unknown recipient (24)" ||
		f["release"] != "mxdetour-policyd holds release local_user:www-data" || ev[0].Kind != "compromise" {
		t.Errorf("alert: %s %+v", ev[0].Summary, f)
	}
	if hs := l.Held(); len(hs) != 2 || hs[0].Key != "local_user:www-data" {
		t.Errorf("held records: %+v", hs)
	}
	// holds release forgets the figures: the account sends again.
	l.Reset("local_user:www-data")
	if _, a := l.submit("www-data", ""); a != "" {
		t.Errorf("after the release: %q", a)
	}
}

// Failures that are refusals of our address are ours, not the account's:
// an account whose every result is such a block is never held.
func TestFailureRatioIgnoresOurBlocks(t *testing.T) {
	c := newClock()
	n := &notes{}
	l := newLimiter(t, failureOptions(), c, n)
	ours := func() bool { return true }
	for i := range 60 {
		id, a := l.submit("alice", "alice")
		if a != "" {
			t.Fatalf("message %d held: %q", i, a)
		}
		status := []string{"deferred", "bounced"}[i%2]
		l.Delivered(delivery(id, "x@gmail.test", status, "5.7.1"), ours)
		c.advance(time.Second)
	}
	if len(n.events()) != 0 {
		t.Errorf("alerts: %+v", n.events())
	}
}

// A deferral counts as a failure until the recipient's next result
// replaces it: greylisted mail delivered on retry is no failure. Results
// leave the window, and the hold with them.
func TestFailureRatioDeferralsAndWindow(t *testing.T) {
	c := newClock()
	l := newLimiter(t, failureOptions(), c, &notes{})
	var ids []string
	for range 30 {
		id, _ := l.submit("web", "")
		ids = append(ids, id)
		l.Delivered(delivery(id, "a@grey.test", "deferred", "4.7.1"), notOurs)
	}
	if _, a := l.submit("web", ""); a == "" {
		t.Fatal("30 deferrals of 30: not held")
	}
	for _, id := range ids {
		l.Delivered(delivery(id, "a@grey.test", "sent", "2.0.0"), notOurs)
	}
	if _, a := l.submit("web", ""); a != "" {
		t.Fatalf("every deferral delivered since: %q", a)
	}
	for _, id := range ids {
		l.Delivered(delivery(id, "b@gone.test", "bounced", "5.1.1"), notOurs)
	}
	if _, a := l.submit("web", ""); a == "" {
		t.Fatal("30 of 60 failed (50%): not held")
	}
	c.advance(time.Hour)
	if _, a := l.submit("web", ""); a != "" {
		t.Errorf("an hour later, with no result since: %q", a)
	}
	// Results of messages no account is known for (mail from the world,
	// joins lost in a restart) count for no one.
	l.Delivered(delivery("UNKNOWN", "x@y.test", "bounced", "5.1.1"), func() bool { t.Error("classified"); return false })
}

// The queue-id join is bounded: the oldest joins go first.
func TestFailureJoinsBounded(t *testing.T) {
	var ft failureTable
	ft.init()
	now := t0
	for i := range maxJoins + 100 {
		ft.join(strconv.Itoa(i), "local_user:x", now)
	}
	if len(ft.joins) != maxJoins || len(ft.order) != maxJoins {
		t.Errorf("%d joins, %d in order; want %d", len(ft.joins), len(ft.order), maxJoins)
	}
	if _, ok := ft.joins["0"]; ok {
		t.Error("the oldest join kept")
	}
	ft.join("late", "local_user:x", now.Add(joinKeep))
	if len(ft.joins) != 1 {
		t.Errorf("a day later: %d joins, want 1", len(ft.joins))
	}
}
