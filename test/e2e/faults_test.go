package e2e

import (
	"os/exec"
	"testing"
	"time"

	"github.com/mxdetour/mxdetour/internal/lookup/dnstest"
	"github.com/mxdetour/mxdetour/internal/testutil"
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
	testutil.EventuallyWithin(t, 30*time.Second, "both delivered direct", func() bool {
		return w.direct.has("p1@gmail.e2e") && w.direct.has("p2@plain.e2e")
	})
}

// With contrib/postfix's wiring smtpd resolves through a trivial-rewrite
// without the socketmap: policyd down costs no 451 at SMTP. The queue
// manager, which does ask policyd, defers the mail ("address resolver
// failure") and routes it on a queue run after policyd is back.
func TestFaultPolicydDownSocketmapWiring(t *testing.T) {
	needPostfix(t)
	t.Parallel()
	w := newWorld(t, worldOptions{Wiring: "socketmap"})

	// A message accepted while policyd runs...
	res := send(t, w.pf.addr(), submission{From: "s@sender.e2e", To: []string{"queued@gmail.e2e"}})
	if !res.accepted() {
		t.Fatalf("not accepted: %+v", res)
	}
	w.policyd.stop()
	// ...and one while it is down: accepted all the same, and queued.
	res = send(t, w.pf.addr(), submission{From: "s@sender.e2e", To: []string{"new@gmail.e2e"}})
	if !res.accepted() {
		t.Fatalf("RCPT with policyd down: got %+v, want accepted", res)
	}
	w.pf.waitLog(`to=<new@gmail\.e2e>.*status=deferred.*address resolver failure`, 30*time.Second)
	if w.relay.has("new@gmail.e2e") || w.direct.has("new@gmail.e2e") {
		t.Fatal("delivered while policyd was down: routed without asking it")
	}
	// As systemd would, start it again; the next queue run routes the mail.
	w.policyd.start()
	testutil.EventuallyWithin(t, 60*time.Second, "both at the relay", func() bool {
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
	testutil.EventuallyWithin(t, 30*time.Second, "delivered unsigned", func() bool { return w.direct.has("m1@plain.e2e") })
	if sigs := dkimTags(w.direct.Messages()[0].Data); len(sigs) != 0 {
		t.Errorf("message signed although the milter was down: %v", sigs)
	}
}

// A domain whose DNS hangs: the message is accepted at once either way.
// The socketmap answers TEMP (on_dns_failure = "temp", the default), so the
// queue keeps the message until DNS answers and then routes it right (the
// relay: hang.e2e is Google-hosted); the policy service, which cannot
// answer TEMP, lets it go direct.
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
			w.policyd.waitOutput("deadline", 5*time.Second)
			if wiring == "policy" {
				testutil.EventuallyWithin(t, 30*time.Second, "delivered direct", func() bool { return w.direct.has("h1@hang.e2e") })
				return
			}
			w.pf.waitLog(`to=<h1@hang\.e2e>.*status=deferred.*address resolver failure`, 30*time.Second)
			w.policyd.waitOutput(`"route": "TEMP"`, 5*time.Second)
			w.dns.SetFault("hang.e2e", dnstest.NoFault)
			testutil.EventuallyWithin(t, 60*time.Second, "delivered to the relay once DNS answers", func() bool { return w.relay.has("h1@hang.e2e") })
			if w.direct.has("h1@hang.e2e") {
				t.Error("delivered direct while DNS hung")
			}
		})
	}
}
