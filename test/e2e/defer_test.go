package e2e

import (
	"fmt"
	"net"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/mxdetour/mxdetour/internal/testutil"
)

// The delivery status filter (DESIGN, third round: block-class permanent
// replies are deferred, not bounced), on Postfix as users run it: no
// soft_bounce, smtp_delivery_status_filter = socketmap:...:status. The
// direct destination is 127.0.0.2, so that its replies ("host
// 127.0.0.2[127.0.0.2] said: ...") are not taken for our relay's
// (127.0.0.1): the filter leaves the relay's refusals alone, and a
// reply names no port.

const (
	blockReply   = "554 5.7.1 Service unavailable; Client host [127.0.0.1] blocked using zen.spamhaus.org"
	unknownReply = "550 5.1.1 <nobody@plain.e2e>: Recipient address rejected: User unknown"
)

var queuedAsRE = regexp.MustCompile(`queued as ([0-9A-Za-z]+)`)

// submitOne hands Postfix one message and returns its queue id.
func submitOne(t *testing.T, pf *postfix, from, to string) string {
	t.Helper()
	res := send(t, pf.addr(), submission{From: from, To: []string{to}})
	m := queuedAsRE.FindStringSubmatch(res.Data)
	if !res.accepted() || m == nil {
		t.Fatalf("message to %s not accepted: %+v", to, res)
	}
	return m[1]
}

// queueLines are the maillog lines of queue id qid.
func queueLines(log, qid string) []string {
	var out []string
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, " "+qid+": ") {
			out = append(out, l)
		}
	}
	return out
}

// sentTo reports whether a sink received a message for rcpt.
func sentTo(rcpt string, sinks ...*sink) bool {
	for _, s := range sinks {
		if s.has(rcpt) {
			return true
		}
	}
	return false
}

// A 554 block of our address, with no soft_bounce: the first message is
// deferred (4.7.1, the same text), the block is learned from that
// deferral, [learn] requeue sends the message again and it leaves by the
// relay; its sender never hears of it. A 550 user unknown still bounces.
func TestBlockDeferredNotBounced(t *testing.T) {
	needPostfix(t)
	t.Parallel()
	start := time.Now()
	// Postfix would not retry for ten minutes: only the requeue delivers.
	w := newWorld(t, worldOptions{Wiring: "socketmap", DirectHost: "127.0.0.2", StatusFilter: true,
		Postfix: postfixOptions{Extra: []string{"minimal_backoff_time = 600s", "maximal_backoff_time = 600s", "queue_run_delay = 600s"}}})
	if strings.Contains(w.pf.cmd("postconf", "-h", "soft_bounce"), "yes") {
		t.Fatal("soft_bounce is on")
	}
	w.direct.Refuse("blocked.e2e", blockReply)
	w.direct.Refuse("plain.e2e", unknownReply)
	dport := w.direct.port()

	// 2. A permanent refusal that is no block bounces at once, as before.
	unknown := submitOne(t, w.pf, "unknown-sender@sender.e2e", "nobody@plain.e2e")
	w.pf.waitLog(fmt.Sprintf(`%s: to=<nobody@plain\.e2e>, relay=127\.0\.0\.2\[127\.0\.0\.2\]:%d, .*dsn=5\.1\.1, status=bounced \(host 127\.0\.0\.2\[127\.0\.0\.2\] said: 550 5\.1\.1 `, unknown, dport), 20*time.Second)
	w.pf.waitLog(unknown+`: sender non-delivery notification: `, 10*time.Second)
	testutil.EventuallyWithin(t, 20*time.Second, "the bounce at unknown-sender@sender.e2e", func() bool { return sentTo("unknown-sender@sender.e2e", w.direct, w.relay) })
	t.Logf("550 user unknown: bounced, bounce delivered, %s after start", time.Since(start).Round(100*time.Millisecond))

	// 1. The block: deferred, learned, requeued, at the relay.
	sent := time.Now()
	blocked := submitOne(t, w.pf, "blocked-sender@sender.e2e", "victim@blocked.e2e")
	deferred := w.pf.waitLog(fmt.Sprintf(`%s: to=<victim@blocked\.e2e>, relay=127\.0\.0\.2\[127\.0\.0\.2\]:%d, .*dsn=4\.7\.1, status=deferred \(host 127\.0\.0\.2\[127\.0\.0\.2\] said: 554 5\.7\.1 Service unavailable; Client host \[127\.0\.0\.1\] blocked using zen\.spamhaus\.org`, blocked, dport), 20*time.Second)
	t.Logf("first attempt (%s after submission): %s", time.Since(sent).Round(100*time.Millisecond), deferred)
	w.policyd.waitOutput("deferred, not bounced", 5*time.Second)
	w.policyd.waitOutput("asked Postfix to deliver a deferred message now", 60*time.Second)
	testutil.EventuallyWithin(t, 60*time.Second-time.Since(sent), "victim@blocked.e2e at the relay within 60 s of submission", func() bool { return w.relay.has("victim@blocked.e2e") })
	t.Logf("at the relay %s after submission", time.Since(sent).Round(100*time.Millisecond))
	w.pf.waitLog(fmt.Sprintf(`%s: to=<victim@blocked\.e2e>, relay=127\.0\.0\.1\[127\.0\.0\.1\]:%d, .*status=sent`, blocked, w.relay.port()), 10*time.Second)
	testutil.EventuallyWithin(t, 10*time.Second, "an empty queue", func() bool {
		return strings.Contains(w.pf.cmd("postqueue", "-p"), "Mail queue is empty")
	})

	log := w.pf.log()
	for _, l := range queueLines(log, blocked) {
		if strings.Contains(l, "status=bounced") || strings.Contains(l, "non-delivery notification") || strings.Contains(l, "status=SOFTBOUNCE") {
			t.Errorf("the blocked message bounced: %s", l)
		}
	}
	if sentTo("blocked-sender@sender.e2e", w.direct, w.relay) {
		t.Error("blocked-sender@sender.e2e received a bounce")
	}
	if w.direct.has("victim@blocked.e2e") {
		t.Error("the refusing destination accepted the message after all")
	}
	t.Logf("maillog of %s:\n%s", blocked, strings.Join(queueLines(log, blocked), "\n"))
}

// mxdetour away: policyd stopped, its socketmap port closed. The status
// filter table fails and Postfix keeps its own behaviour: both refusals
// bounce. (Routing by check_policy_service with default_action=DUNNO, so
// that the dead policyd does not already defer everything through
// transport_maps.) The warnings Postfix logs for the dead table are
// logged by the test.
func TestStatusFilterAwayBounces(t *testing.T) {
	needPostfix(t)
	t.Parallel()
	w := newWorld(t, worldOptions{Wiring: "policy", NoMilter: true, DirectHost: "127.0.0.2", StatusFilter: true})
	w.direct.Refuse("blocked.e2e", blockReply)
	w.direct.Refuse("plain.e2e", unknownReply)
	w.policyd.stop()
	if c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", w.ports.socketmap), time.Second); err == nil {
		c.Close()
		t.Fatal("policyd's socketmap port still accepts")
	}
	dport := w.direct.port()
	start := time.Now()
	blocked := submitOne(t, w.pf, "blocked-sender@sender.e2e", "victim@blocked.e2e")
	unknown := submitOne(t, w.pf, "unknown-sender@sender.e2e", "nobody@plain.e2e")
	w.pf.waitLog(fmt.Sprintf(`%s: to=<victim@blocked\.e2e>, relay=127\.0\.0\.2\[127\.0\.0\.2\]:%d, .*dsn=5\.7\.1, status=(bounced|deferred)`, blocked, dport), 30*time.Second)
	w.pf.waitLog(fmt.Sprintf(`%s: to=<nobody@plain\.e2e>, relay=127\.0\.0\.2\[127\.0\.0\.2\]:%d, .*dsn=5\.1\.1, status=(bounced|deferred)`, unknown, dport), 30*time.Second)
	t.Logf("both settled %s after submission", time.Since(start).Round(100*time.Millisecond))

	log := w.pf.log()
	for _, qid := range []string{blocked, unknown} {
		ok := false
		for _, l := range queueLines(log, qid) {
			if strings.Contains(l, "status=deferred") {
				t.Errorf("Postfix DEFERRED when the status filter table failed: %s", l)
			}
			ok = ok || strings.Contains(l, "status=bounced")
		}
		if !ok {
			t.Errorf("%s did not bounce", qid)
		}
	}
	// What Postfix says of the dead table: every warning but the policy
	// service's (smtpd, the routing's default_action).
	var warnings []string
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, "warning:") && !strings.Contains(l, "postfix/smtpd[") {
			warnings = append(warnings, l)
		}
	}
	t.Logf("Postfix's warnings with the status filter table down:\n%s", strings.Join(warnings, "\n"))
	t.Logf("delivery lines:\n%s\n%s", strings.Join(queueLines(log, blocked), "\n"), strings.Join(queueLines(log, unknown), "\n"))
}
