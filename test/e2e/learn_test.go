package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/mxdetour/mxdetour/internal/testutil"
)

// flushUntil retries deferred mail until cond holds: Postfix's own retry
// timers are minutes long, and qmgr keeps one resolved answer for 30 s.
func (w *world) flushUntil(within time.Duration, what string, cond func() bool) {
	w.t.Helper()
	last := time.Now()
	testutil.EventuallyWithin(w.t, within, what, func() bool {
		if cond() {
			return true
		}
		if time.Since(last) > 3*time.Second {
			w.pf.flush()
			last = time.Now()
		}
		return false
	})
}

// Scenario 5: the learning loop. The direct destination refuses us as a
// Spamhaus-listed client; Postfix logs the deferral; policyd learns the block
// from the log and requeues the message; its next attempt, asked again
// through the socketmap, goes to the relay.
func TestLearningLoop(t *testing.T) {
	needPostfix(t)
	t.Parallel()
	w := newWorld(t, worldOptions{Wiring: "socketmap", Postfix: postfixOptions{SoftBounce5x: true}})
	w.direct.Refuse("blocked.e2e", "554 5.7.1 Service unavailable; Client host [127.0.0.1] blocked using zen.spamhaus.org")

	res := send(t, w.pf.addr(), submission{From: "sender@sender.e2e", To: []string{"victim@blocked.e2e"}})
	if !res.accepted() {
		t.Fatalf("not accepted: %+v", res)
	}
	// soft_bounce logs the 554 as status=SOFTBOUNCE and keeps the message.
	w.pf.waitLog(`to=<victim@blocked.e2e>.*status=SOFTBOUNCE.*blocked using zen\.spamhaus\.org`, 30*time.Second)
	w.policyd.waitOutput("blocked.e2e", 30*time.Second)
	// Postfix's queue manager keeps its last answer for 30 s; after that the
	// requeued (or retried) message is resolved again and takes the relay.
	w.flushUntil(90*time.Second, "the deferred message at the relay", func() bool { return w.relay.has("victim@blocked.e2e") })
	if w.direct.has("victim@blocked.e2e") {
		t.Error("the refusing destination accepted the message after all")
	}
	out, err := runCmd(binPolicyd, "blocks", "-config", w.cfgPath)
	if err != nil || !strings.Contains(out, "blocked.e2e") {
		t.Errorf("`blocks` does not list blocked.e2e (%v):\n%s", err, out)
	}
	out, err = runCmd(binPolicyd, "check", "-config", w.cfgPath, "someone@blocked.e2e")
	if err != nil || !strings.Contains(out, "learned") {
		t.Errorf("`check` does not show the learned block (%v):\n%s", err, out)
	}
}

// Scenario 7: the socketmap path re-decides on retry. A message deferred
// while its domain went direct takes the relay on its next attempt once the
// domain's route changed (here by a rule and a reload).
func TestRetryRedecides(t *testing.T) {
	needPostfix(t)
	t.Parallel()
	w := newWorld(t, worldOptions{Wiring: "socketmap"})
	w.direct.Refuse("retry.e2e", "450 4.2.0 Mailbox busy, try again later")
	res := send(t, w.pf.addr(), submission{From: "sender@sender.e2e", To: []string{"later@retry.e2e"}})
	if !res.accepted() {
		t.Fatalf("not accepted: %+v", res)
	}
	w.pf.waitLog(`to=<later@retry.e2e>.*status=deferred`, 30*time.Second)
	w.rewriteConfig(`
[[rules]]
domain = "retry.e2e"
route = "relay"
`)
	w.policyd.waitOutput("reloaded", 10*time.Second)
	w.flushUntil(90*time.Second, "the deferred message at the relay", func() bool { return w.relay.has("later@retry.e2e") })
}

// [learn] requeue: a message deferred by a block is delivered through the
// relay about 35 s after the block was learned (postqueue -i once the
// queue manager's 30 s route cache has passed), though Postfix would not
// retry it for ten minutes on its own.
func TestRequeueAfterBlock(t *testing.T) {
	needPostfix(t)
	t.Parallel()
	w := newWorld(t, worldOptions{Wiring: "socketmap", Postfix: postfixOptions{SoftBounce5x: true,
		Extra: []string{"minimal_backoff_time = 600s", "maximal_backoff_time = 600s", "queue_run_delay = 600s"}}})
	w.direct.Refuse("blocked.e2e", "554 5.7.1 Service unavailable; Client host [127.0.0.1] blocked using zen.spamhaus.org")
	res := send(t, w.pf.addr(), submission{From: "sender@sender.e2e", To: []string{"later@blocked.e2e"}})
	if !res.accepted() {
		t.Fatalf("not accepted: %+v", res)
	}
	w.pf.waitLog(`to=<later@blocked.e2e>.*status=SOFTBOUNCE`, 30*time.Second)
	learned := time.Now()
	w.policyd.waitOutput("asked Postfix to deliver a deferred message now", 60*time.Second)
	testutil.EventuallyWithin(t, 20*time.Second, "the deferred message at the relay, without a flush", func() bool { return w.relay.has("later@blocked.e2e") })
	t.Logf("at the relay %s after the block was learned", time.Since(learned).Round(time.Second))
	if w.direct.has("later@blocked.e2e") {
		t.Error("the refusing destination accepted the message after all")
	}
}
