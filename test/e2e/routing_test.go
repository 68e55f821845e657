package e2e

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mxdetour/mxdetour/internal/testutil"
)

// Scenario 1: Google- and Microsoft-hosted recipients go to the relay, the
// rest direct; with the socketmap one message is split per recipient.
func TestRoutingSocketmapSplitsPerRecipient(t *testing.T) {
	needPostfix(t)
	t.Parallel()
	w := newWorld(t, worldOptions{Wiring: "socketmap"})
	rcpts := []string{"alice@gmail.e2e", "bob@m365.e2e", "dave@Workspace.E2E", "carol@plain.e2e"}
	res := send(t, w.pf.addr(), submission{From: "sender@sender.e2e", To: rcpts})
	if !res.accepted() {
		t.Fatalf("message not accepted: %+v", res)
	}
	testutil.EventuallyWithin(t, 30*time.Second, "all four recipients delivered", func() bool {
		return len(w.relay.Received())+len(w.direct.Received()) == 4
	})
	relayed := w.relay.Received()
	slices.Sort(relayed)
	if want := []string{"alice@gmail.e2e", "bob@m365.e2e", "dave@Workspace.E2E"}; !slices.Equal(relayed, want) {
		t.Errorf("relay sink got %v, want %v", relayed, want)
	}
	if got := w.direct.Received(); !slices.Equal(got, []string{"carol@plain.e2e"}) {
		t.Errorf("direct sink got %v, want [carol@plain.e2e]", got)
	}
}

// Scenario 1 with check_policy_service: FILTER moves whole messages.
func TestRoutingPolicyFilter(t *testing.T) {
	needPostfix(t)
	t.Parallel()
	w := newWorld(t, worldOptions{Wiring: "policy"})
	for _, rc := range []string{"alice@gmail.e2e", "bob@m365.e2e", "carol@plain.e2e"} {
		if res := send(t, w.pf.addr(), submission{From: "sender@sender.e2e", To: []string{rc}}); !res.accepted() {
			t.Fatalf("message to %s not accepted: %+v", rc, res)
		}
	}
	testutil.EventuallyWithin(t, 30*time.Second, "three messages delivered", func() bool {
		return len(w.relay.Received())+len(w.direct.Received()) == 3
	})
	relayed := w.relay.Received()
	slices.Sort(relayed)
	if want := []string{"alice@gmail.e2e", "bob@m365.e2e"}; !slices.Equal(relayed, want) {
		t.Errorf("relay sink got %v, want %v", relayed, want)
	}
	if got := w.direct.Received(); !slices.Equal(got, []string{"carol@plain.e2e"}) {
		t.Errorf("direct sink got %v, want [carol@plain.e2e]", got)
	}
	// The documented caveat: a FILTER for one recipient moves the whole message.
	res := send(t, w.pf.addr(), submission{From: "sender@sender.e2e", To: []string{"erin@plain.e2e", "frank@gmail.e2e"}})
	if !res.accepted() {
		t.Fatalf("mixed message not accepted: %+v", res)
	}
	testutil.EventuallyWithin(t, 30*time.Second, "mixed message at the relay", func() bool {
		return w.relay.has("erin@plain.e2e") && w.relay.has("frank@gmail.e2e")
	})
}

// Scenario 2: a recipient in example.com is refused at RCPT with 550 5.1.2;
// the other recipient of the message arrives.
func TestReservedRecipientRejected(t *testing.T) {
	needPostfix(t)
	for _, wiring := range []string{"socketmap", "policy"} {
		t.Run(wiring, func(t *testing.T) {
			t.Parallel()
			w := newWorld(t, worldOptions{Wiring: wiring})
			res := send(t, w.pf.addr(), submission{From: "sender@sender.e2e", To: []string{"nobody@Example.COM", "carol@plain.e2e"}})
			if rep := res.Rcpt["nobody@Example.COM"]; !strings.HasPrefix(rep, "550 5.1.2") {
				t.Errorf("RCPT nobody@Example.COM: got %q, want 550 5.1.2", rep)
			}
			if !res.accepted() {
				t.Fatalf("message not accepted for the other recipient: %+v", res)
			}
			testutil.EventuallyWithin(t, 30*time.Second, "carol delivered", func() bool { return w.direct.has("carol@plain.e2e") })
			for _, s := range []*sink{w.direct, w.relay} {
				if s.has("nobody@Example.COM") {
					t.Errorf("%s sink received the reserved recipient", s.name)
				}
			}
		})
	}
}
