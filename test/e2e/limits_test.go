package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mxdetour/mxdetour/internal/alert"
	"github.com/mxdetour/mxdetour/internal/testutil"
)

// hook is a webhook on loopback that keeps the alerts it is sent.
type hook struct {
	mu     sync.Mutex
	events []alert.Event
	srv    *httptest.Server
}

func newHook(t *testing.T) *hook {
	h := &hook{}
	h.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var p alert.Payload
		if err := json.Unmarshal(body, &p); err != nil {
			t.Errorf("webhook body: %v: %s", err, body)
		}
		h.mu.Lock()
		h.events = append(h.events, p.Events...)
		h.mu.Unlock()
	}))
	t.Cleanup(h.srv.Close)
	return h
}

func (h *hook) kind(kind string) []alert.Event {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []alert.Event
	for _, e := range h.events {
		if e.Kind == kind {
			out = append(out, e)
		}
	}
	return out
}

// heldQueue returns the recipients of the messages in Postfix's hold queue.
func (p *postfix) heldQueue() []string {
	var rcpts []string
	for _, line := range strings.Split(strings.TrimSpace(p.cmd("postqueue", "-j")), "\n") {
		var m struct {
			Queue      string `json:"queue_name"`
			Recipients []struct {
				Address string `json:"address"`
			} `json:"recipients"`
		}
		if json.Unmarshal([]byte(line), &m) != nil || m.Queue != "hold" {
			continue
		}
		for _, r := range m.Recipients {
			rcpts = append(rcpts, r.Address)
		}
	}
	return rcpts
}

// Issue #14: an authenticated client sending past its limit gets its next
// messages held — in Postfix's hold queue, nothing bounced, nothing
// delivered — the postmaster is alerted, `holds` lists them and
// `holds release` delivers them and resets the window; another account is
// not affected. Recipients are counted once though Postfix asks at RCPT
// and at end of data (contrib/postfix's wiring).
func TestLimitsHoldAndRelease(t *testing.T) {
	needPostfix(t)
	t.Parallel()
	h := newHook(t)
	w := newWorld(t, worldOptions{Wiring: "socketmap", ExtraCfg: fmt.Sprintf(`
[[limits]]
key = "sasl_username"
max = 3
window = "1h"

[alerts]
webhook_url = "%s/hook"
interval = "0s"
`, h.srv.URL)})
	// contrib/postfix/main.cf's limits wiring, on the port this world's
	// policyd listens on.
	w.pf.cmd("postconf", "-e",
		fmt.Sprintf("mxdetour_limits = check_policy_service { inet:127.0.0.1:%d, timeout=2s, try_limit=1, default_action=DUNNO, policy_context=limits }", w.ports.policy),
		"smtpd_recipient_restrictions = $mxdetour_limits, permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination",
		"smtpd_end_of_data_restrictions = $mxdetour_limits")
	w.pf.cmd("postfix", "reload")
	w.pf.waitLog(`reload -- version`, 20*time.Second)

	submit := func(login string, rcpts ...string) {
		t.Helper()
		res := send(t, w.pf.addr(), submission{Login: login, From: login + "@sender.e2e", To: rcpts})
		if !res.accepted() {
			t.Fatalf("%s's message to %v not accepted: %+v", login, rcpts, res)
		}
	}
	delivered := func(rcpts ...string) bool {
		for _, r := range rcpts {
			if !w.relay.has(r) && !w.direct.has(r) {
				return false
			}
		}
		return true
	}
	// alice: 2 + 1 recipients, within her 3 (each counted once).
	submit("alice", "a1@plain.e2e", "a2@gmail.e2e")
	submit("alice", "a3@plain.e2e")
	testutil.EventuallyWithin(t, 30*time.Second, "alice's first three recipients delivered", func() bool { return delivered("a1@plain.e2e", "a2@gmail.e2e", "a3@plain.e2e") })
	// Past the limit: held.
	submit("alice", "a4@plain.e2e")
	submit("alice", "a5@gmail.e2e", "a6@plain.e2e")
	// bob has a window of his own.
	submit("bob", "b1@plain.e2e", "b2@plain.e2e", "b3@gmail.e2e")
	testutil.EventuallyWithin(t, 30*time.Second, "bob's mail delivered", func() bool { return delivered("b1@plain.e2e", "b2@plain.e2e", "b3@gmail.e2e") })
	testutil.EventuallyWithin(t, 30*time.Second, "alice's next two messages in the hold queue", func() bool { return len(w.pf.heldQueue()) == 3 })
	// bob's later mail is through, and the hold queue is never delivered:
	// alice's are not at the sinks, nor ever will be until released.
	for _, r := range []string{"a4@plain.e2e", "a5@gmail.e2e", "a6@plain.e2e"} {
		if delivered(r) {
			t.Errorf("%s was delivered while held", r)
		}
	}
	if strings.Contains(w.pf.log(), "status=bounced") {
		t.Error("something bounced")
	}
	for _, s := range []*sink{w.relay, w.direct} {
		for _, m := range s.Messages() {
			if m.From == "" {
				t.Errorf("a bounce reached the %s sink: %v", s.name, m.Rcpts)
			}
		}
	}
	w.pf.waitLog(`hold: RCPT from .*<a4@plain\.e2e>: Recipient address mxdetour: sasl_username limit exceeded \(4/3 in 1h\)`, 10*time.Second)

	// One alert, naming the account, the count, destinations and clients.
	testutil.EventuallyWithin(t, 20*time.Second, "the limit alert at the webhook", func() bool { return len(h.kind("limit")) > 0 })
	ev := h.kind("limit")
	f := ev[0].Fields
	if len(ev) != 1 || f["key"] != "sasl_username:alice" || f["count"] != "4" || f["max"] != "3" ||
		!strings.Contains(f["destinations"], "plain.e2e") || !strings.Contains(f["clients"], "127.0.0.1") {
		t.Errorf("alerts: %+v", ev)
	}

	// holds lists them under alice's key.
	var listed struct {
		Keys []struct {
			Key      string `json:"key"`
			Messages []struct {
				ID string `json:"queue_id"`
			} `json:"messages"`
		} `json:"keys"`
	}
	testutil.EventuallyWithin(t, 20*time.Second, "holds -json listing alice's two messages", func() bool {
		out, err := runCmd(binPolicyd, "holds", "-config", w.cfgPath, "-json")
		if err != nil || json.Unmarshal([]byte(out), &listed) != nil {
			t.Logf("holds: %v\n%s", err, out)
			return false
		}
		return len(listed.Keys) == 1 && listed.Keys[0].Key == "sasl_username:alice" && len(listed.Keys[0].Messages) == 2
	})
	out, err := runCmd(binPolicyd, "holds", "-config", w.cfgPath)
	if err != nil || !strings.Contains(out, "sasl_username:alice: 2 held (mxdetour: sasl_username limit exceeded (4/3 in 1h))") {
		t.Errorf("holds (%v):\n%s", err, out)
	}

	// Release: delivered, and alice's window starts again.
	out, err = runCmd(binPolicyd, "holds", "-config", w.cfgPath, "release", "sasl_username:alice")
	if err != nil || !strings.Contains(out, "released 2 held messages of sasl_username:alice") {
		t.Fatalf("holds release (%v):\n%s", err, out)
	}
	w.flushUntil(60*time.Second, "the released messages delivered", func() bool {
		return delivered("a4@plain.e2e", "a5@gmail.e2e", "a6@plain.e2e")
	})
	w.policyd.waitOutput("limits reset", 10*time.Second)
	submit("alice", "a7@plain.e2e")
	testutil.EventuallyWithin(t, 30*time.Second, "alice's mail after the release delivered", func() bool { return delivered("a7@plain.e2e") })
	if held := w.pf.heldQueue(); len(held) != 0 {
		t.Errorf("still held: %v", held)
	}
	if out, err := runCmd(binPolicyd, "holds", "-config", w.cfgPath); err != nil || !strings.Contains(out, "no held messages") {
		t.Errorf("holds after the release (%v):\n%s", err, out)
	}
}
