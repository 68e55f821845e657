package e2e

import (
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/mxdetour/mxdetour/internal/lookup/dnstest"
)

func runCmd(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).CombinedOutput()
	return string(out), err
}

// Scenario 6: our failures never lose mail. What was sent is counted
// against what arrived.
func TestFaultPolicydDownPolicyWiring(t *testing.T) {
	needPostfix(t)
	t.Parallel()
	w := newWorld(t, worldOptions{Wiring: "policy"})
	w.policyd.stop()
	// default_action=DUNNO: Postfix goes on as if asked, and delivers direct.
	for _, rc := range []string{"p1@gmail.e2e", "p2@plain.e2e"} {
		if res := send(t, w.pf.addr(), submission{From: "s@sender.e2e", To: []string{rc}}); !res.accepted() {
			t.Fatalf("%s not accepted with policyd down: %+v", rc, res)
		}
	}
	eventually(t, 30*time.Second, "both delivered direct", func() bool {
		return w.direct.has("p1@gmail.e2e") && w.direct.has("p2@plain.e2e")
	})
}

func TestFaultPolicydDownSocketmapWiring(t *testing.T) {
	needPostfix(t)
	t.Parallel()
	// Seen on 3.7.11: an smtpd process that got the lookup failure keeps
	// answering 451 for that address (over 90 s here) until the process is
	// replaced, after max_use sessions (100) or max_idle (100 s). A small
	// max_use brings that about within the test.
	w := newWorld(t, worldOptions{Wiring: "socketmap", Postfix: postfixOptions{Extra: []string{"max_use = 5"}}})

	// A message accepted while policyd runs (delivered at once, or deferred
	// and retried below)...
	res := send(t, w.pf.addr(), submission{From: "s@sender.e2e", To: []string{"queued@gmail.e2e"}})
	if !res.accepted() {
		t.Fatalf("not accepted: %+v", res)
	}
	w.policyd.stop()
	// ...a new one while it is down: Postfix has no fail-open for tables and
	// answers 451 4.3.0, so the client keeps the message and retries.
	res = send(t, w.pf.addr(), submission{From: "s@sender.e2e", To: []string{"new@gmail.e2e"}})
	if rep := res.Rcpt["new@gmail.e2e"]; !strings.HasPrefix(rep, "451 4.3.0") {
		t.Errorf("RCPT with policyd down: got %q, want 451 4.3.0", rep)
	}
	// As systemd would, start it again; the client's retry and the queue's
	// next run both get through.
	// Postfix's resolver clients remember the failed answer for up to 30 s;
	// a client retries as MTAs do, every few seconds here.
	w.policyd.start()
	eventually(t, 90*time.Second, "the client's retry accepted", func() bool {
		res = send(t, w.pf.addr(), submission{From: "s@sender.e2e", To: []string{"new@gmail.e2e"}})
		if !res.accepted() {
			time.Sleep(3 * time.Second)
		}
		return res.accepted()
	})
	w.flushUntil(90*time.Second, "both at the relay", func() bool {
		return w.relay.has("queued@gmail.e2e") && w.relay.has("new@gmail.e2e")
	})
	if n := len(w.relay.Received()) + len(w.direct.Received()); n != 2 {
		t.Errorf("%d deliveries, want 2 (sent 2)", n)
	}
}

func TestFaultMilterDown(t *testing.T) {
	needPostfix(t)
	t.Parallel()
	w := newWorld(t, worldOptions{Wiring: "socketmap"})
	w.milter.stop()
	res := send(t, w.pf.addr(), submission{ClientAddr: "203.0.113.60", Login: "alice", From: "alice@sender.e2e", To: []string{"m1@plain.e2e"}})
	if !res.accepted() {
		t.Fatalf("not accepted with the milter down: %+v", res)
	}
	eventually(t, 30*time.Second, "delivered unsigned", func() bool { return w.direct.has("m1@plain.e2e") })
	if sigs := dkimTags(w.direct.Messages()[0].Data); len(sigs) != 0 {
		t.Errorf("message signed although the milter was down: %v", sigs)
	}
}

func TestFaultDNSHangs(t *testing.T) {
	needPostfix(t)
	for _, wiring := range []string{"socketmap", "policy"} {
		t.Run(wiring, func(t *testing.T) {
			t.Parallel()
			w := newWorld(t, worldOptions{Wiring: wiring})
			w.dns.SetFault("hang.e2e", dnstest.Timeout)
			start := time.Now()
			res := send(t, w.pf.addr(), submission{From: "s@sender.e2e", To: []string{"h1@hang.e2e"}})
			if !res.accepted() {
				t.Fatalf("not accepted with DNS hung: %+v", res)
			}
			t.Logf("submission took %v with DNS hung", time.Since(start))
			eventually(t, 30*time.Second, "delivered direct", func() bool { return w.direct.has("h1@hang.e2e") })
			w.policyd.waitOutput("deadline", 5*time.Second)
		})
	}
}
